package hashing

import (
	"errors"
	"net/netip"
	"slices"
)

// Rendezvous (highest random weight) choice of the pair that owns a flow.
//
// Specification (the data plane may implement it; keep it bit for bit):
//
//   - Candidates are pair ids (uint32), as carried in membership metadata.
//   - The flow key is the client's (address, port). Its key hash is
//     k = PacketHash(OwnerSeed, addr, port, true): the packet hash words with
//     the port always included, seeded with OwnerSeed.
//   - The score of pair p is Murmur3Words(k, p), i.e.
//     MurmurFinal(MurmurMix(k, p), 4): one more word, seeded with k.
//   - The owner is the pair with the highest score; on equal scores the lower
//     pair id wins. (For a fixed k the score is a bijection of p, so distinct
//     pair ids never tie; the rule only makes the order total.)
//
// Removing a pair moves only the flows it owned (each to its second choice),
// and adding one takes only the flows it now wins, whatever the other pairs.
// The key hash is computed once per flow, then one mix per candidate, which
// keeps it cheap in BPF for the few pairs a rack has.

// OwnerSeed seeds the flow key hash of the rendezvous choice, so that owner
// choice is independent of every vserver's Maglev slot.
const OwnerSeed = 0x6f776e72 // "ownr"

// ErrNoPairs means the rendezvous choice was given no candidate pair.
var ErrNoPairs = errors.New("no candidate pair")

// OwnerKey is the part of a flow that decides its owner pair.
type OwnerKey struct {
	// Addr is the client's address; an IPv4-mapped IPv6 address counts as
	// IPv4, as in PacketHash.
	Addr netip.Addr
	// Port is the client's source port.
	Port uint16
}

// Hash is the key hash k of the specification.
func (k OwnerKey) Hash() uint32 {
	return PacketHash(OwnerSeed, k.Addr, k.Port, true)
}

// OwnerScore is the rendezvous score of pair for a flow with key hash k.
func OwnerScore(k uint32, pair uint32) uint32 {
	return MurmurFinal(MurmurMix(k, pair), 4)
}

// Owner returns the pair among pairs that owns key, or ErrNoPairs when pairs
// is empty. pairs is not modified; its order does not matter.
func Owner(key OwnerKey, pairs []uint32) (uint32, error) {
	if len(pairs) == 0 {
		return 0, ErrNoPairs
	}
	k := key.Hash()
	best, bestScore := pairs[0], OwnerScore(k, pairs[0])
	for _, p := range pairs[1:] {
		s := OwnerScore(k, p)
		if s > bestScore || (s == bestScore && p < best) {
			best, bestScore = p, s
		}
	}
	return best, nil
}

// Rank returns the distinct pairs of pairs in order of preference for key:
// Rank(...)[0] is the Owner, [1] the pair that takes the flow over if the
// owner's pair is removed, and so on. It returns nil for no pairs.
func Rank(key OwnerKey, pairs []uint32) []uint32 {
	if len(pairs) == 0 {
		return nil
	}
	k := key.Hash()
	type scored struct{ pair, score uint32 }
	ss := make([]scored, 0, len(pairs))
	for _, p := range pairs {
		ss = append(ss, scored{p, OwnerScore(k, p)})
	}
	slices.SortFunc(ss, func(a, b scored) int {
		switch {
		case a.score != b.score:
			if a.score > b.score {
				return -1
			}
			return 1
		case a.pair < b.pair:
			return -1
		case a.pair > b.pair:
			return 1
		}
		return 0
	})
	out := make([]uint32, 0, len(ss))
	for i, s := range ss {
		if i > 0 && ss[i-1].pair == s.pair {
			continue
		}
		out = append(out, s.pair)
	}
	return out
}
