/* The packet hash, bit for bit equal to hashing.PacketHash in Go
 * (hashing/hash.go): MurmurHash3 x86_32 over 32-bit words.
 *
 * Words are the client's source address read four bytes at a time in network
 * order as big-endian integers (1 word for IPv4 and for IPv4-mapped IPv6,
 * 4 words for IPv6), then, for SRCIPSRCPORTHASH only, the source port as a
 * host integer. The final length mixed in is 4 * words.
 */
#ifndef TANDEM_HASH_H
#define TANDEM_HASH_H

#include <linux/types.h>
#include <bpf/bpf_endian.h>

static __always_inline __u32 rotl32(__u32 x, int r)
{
	return (x << r) | (x >> (32 - r));
}

static __always_inline __u32 murmur_mix(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51;
	k = rotl32(k, 15);
	k *= 0x1b873593;
	h ^= k;
	h = rotl32(h, 13);
	return h * 5 + 0xe6546b64;
}

static __always_inline __u32 murmur_final(__u32 h, __u32 nbytes)
{
	h ^= nbytes;
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* packet_hash hashes a source address (network order words; IPv4 in addr[0])
 * and, if with_port, the source port given in host order. */
static __always_inline __u32 packet_hash(__u32 seed, const __u32 *addr, int is_v6,
					 __u16 port, int with_port)
{
	__u32 h = seed;
	__u32 n = 1;

	if (is_v6 && !(addr[0] == 0 && addr[1] == 0 && addr[2] == bpf_htonl(0xffff))) {
		h = murmur_mix(h, bpf_ntohl(addr[0]));
		h = murmur_mix(h, bpf_ntohl(addr[1]));
		h = murmur_mix(h, bpf_ntohl(addr[2]));
		h = murmur_mix(h, bpf_ntohl(addr[3]));
		n = 4;
	} else if (is_v6) {
		h = murmur_mix(h, bpf_ntohl(addr[3]));
	} else {
		h = murmur_mix(h, bpf_ntohl(addr[0]));
	}
	if (with_port) {
		h = murmur_mix(h, (__u32)port);
		n++;
	}
	return murmur_final(h, 4 * n);
}

#endif
