// Package hashing holds the pure functions every Tandem node must compute
// identically: the packet hash shared bit for bit with the BPF data plane,
// Maglev lookup tables, and rendezvous choice of flow owners.
//
// Nothing here does I/O or keeps package-level state.
package hashing

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// The packet hash.
//
// Specification (the BPF C in flow/bpf/hash.h implements exactly this):
//
//   - The hash is MurmurHash3 x86_32 over a sequence of 32-bit words, seeded
//     with the vserver's hash seed.
//   - The words are the client's source address, read four bytes at a time in
//     network byte order as big-endian integers (1 word for IPv4, 4 words for
//     IPv6; an IPv4-mapped IPv6 address is hashed as IPv4), followed, for
//     SRCIPSRCPORTHASH only, by one word holding the client's source port as a
//     host integer (0..65535).
//   - The final length mixed in is the number of words times 4, as in
//     MurmurHash3 over a byte string of that length.
//
// The Maglev slot of a packet is PacketHash(...) % M.
//
// MurmurHash3 is chosen because it is cheap in BPF (no loops beyond four
// words, no tables), mixes well enough that Maglev slots are spread evenly,
// and is well known, so operators can reproduce it with any implementation.

const (
	murmurC1 = 0xcc9e2d51
	murmurC2 = 0x1b873593
)

// MurmurMix mixes one 32-bit word into the running hash h.
func MurmurMix(h, k uint32) uint32 {
	k *= murmurC1
	k = bits.RotateLeft32(k, 15)
	k *= murmurC2
	h ^= k
	h = bits.RotateLeft32(h, 13)
	return h*5 + 0xe6546b64
}

// MurmurFinal finishes a hash over nbytes bytes of input.
func MurmurFinal(h uint32, nbytes uint32) uint32 {
	h ^= nbytes
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}

// Murmur3Words is MurmurHash3 x86_32 over words, each taken as the 4
// little-endian bytes of the word (so it equals the reference byte-string
// implementation applied to those bytes).
func Murmur3Words(seed uint32, words ...uint32) uint32 {
	h := seed
	for _, w := range words {
		h = MurmurMix(h, w)
	}
	return MurmurFinal(h, uint32(4*len(words)))
}

// PacketHash is the hash of a client (address, port) for a vserver with the
// given seed. withPort selects SRCIPSRCPORTHASH (true) or SOURCEIPHASH (false).
// An invalid address hashes as the zero IPv4 address.
func PacketHash(seed uint32, src netip.Addr, port uint16, withPort bool) uint32 {
	var words [5]uint32
	n := 0
	src = src.Unmap()
	if src.Is4() {
		a := src.As4()
		words[0] = binary.BigEndian.Uint32(a[:])
		n = 1
	} else if src.Is6() {
		a := src.As16()
		for i := 0; i < 4; i++ {
			words[i] = binary.BigEndian.Uint32(a[4*i:])
		}
		n = 4
	} else {
		n = 1
	}
	if withPort {
		words[n] = uint32(port)
		n++
	}
	return Murmur3Words(seed, words[:n]...)
}

// VServerSeed is the packet-hash seed of a vserver: FNV-1a (32 bit) of its
// name. Every node derives the same seed from the replicated configuration,
// and the control plane writes it into the data plane's vserver entry.
func VServerSeed(name string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(name); i++ {
		h ^= uint32(name[i])
		h *= 16777619
	}
	return h
}
