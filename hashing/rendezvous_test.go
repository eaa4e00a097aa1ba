package hashing

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

func randomKeys(n int) []OwnerKey {
	rng := rand.New(rand.NewPCG(3, 4))
	keys := make([]OwnerKey, n)
	for i := range keys {
		var a netip.Addr
		if i%4 == 0 {
			var b [16]byte
			b[0], b[1] = 0x20, 0x01
			for j := 2; j < 16; j++ {
				b[j] = byte(rng.Uint32())
			}
			a = netip.AddrFrom16(b)
		} else {
			a = netip.AddrFrom4([4]byte{198, 51, byte(rng.Uint32()), byte(rng.Uint32())})
		}
		keys[i] = OwnerKey{Addr: a, Port: uint16(1024 + rng.IntN(64511))}
	}
	return keys
}

func pairIDs(n int) []uint32 {
	ps := make([]uint32, n)
	for i := range ps {
		ps[i] = uint32(i + 1)
	}
	return ps
}

func TestOwnerNoPairs(t *testing.T) {
	if _, err := Owner(OwnerKey{}, nil); !errors.Is(err, ErrNoPairs) {
		t.Fatalf("Owner(no pairs) error = %v, want ErrNoPairs", err)
	}
	if r := Rank(OwnerKey{}, nil); r != nil {
		t.Fatalf("Rank(no pairs) = %v, want nil", r)
	}
}

func TestOwnerMatchesSpec(t *testing.T) {
	key := OwnerKey{netip.MustParseAddr("198.51.100.7"), 41234}
	k := Murmur3Words(OwnerSeed, 0xc6336407, 41234)
	if key.Hash() != k {
		t.Fatalf("key hash %#x, want %#x", key.Hash(), k)
	}
	pairs := []uint32{1, 2, 3, 4}
	var best uint32
	var bestScore uint32
	for _, p := range pairs {
		if s := Murmur3Words(k, p); s > bestScore {
			best, bestScore = p, s
		}
	}
	if got, _ := Owner(key, pairs); got != best {
		t.Fatalf("Owner = %d, want %d by the specification", got, best)
	}
}

func TestOwnerIsFirstOfRankAndOrderFree(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	pairs := pairIDs(16)
	for _, key := range randomKeys(2000) {
		rank := Rank(key, pairs)
		if len(rank) != len(pairs) {
			t.Fatalf("Rank returned %d pairs, want %d", len(rank), len(pairs))
		}
		owner, err := Owner(key, pairs)
		if err != nil || owner != rank[0] {
			t.Fatalf("Owner = %d, %v; Rank[0] = %d", owner, err, rank[0])
		}
		shuffled := slices.Clone(pairs)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if again := Rank(key, shuffled); !slices.Equal(again, rank) {
			t.Fatalf("Rank depends on the candidate order: %v vs %v", again, rank)
		}
	}
}

func TestRankDeduplicates(t *testing.T) {
	key := OwnerKey{netip.MustParseAddr("10.0.0.1"), 1}
	r := Rank(key, []uint32{3, 1, 3, 2, 1})
	sorted := slices.Clone(r)
	slices.Sort(sorted)
	if !slices.Equal(sorted, []uint32{1, 2, 3}) {
		t.Fatalf("Rank = %v, want each of 1, 2, 3 once", r)
	}
}

// Removing a pair moves exactly the flows it owned, each to its second
// choice; adding one takes flows only for itself.
func TestOwnerMinimalDisruption(t *testing.T) {
	keys := randomKeys(20000)
	for _, n := range []int{2, 4, 16} {
		pairs := pairIDs(n)
		for _, gone := range []uint32{1, uint32(n)} {
			t.Run(fmt.Sprintf("pairs=%d/remove=%d", n, gone), func(t *testing.T) {
				rest := slices.DeleteFunc(slices.Clone(pairs), func(p uint32) bool { return p == gone })
				moved := 0
				for _, key := range keys {
					before, _ := Owner(key, pairs)
					after, _ := Owner(key, rest)
					if before != gone {
						if after != before {
							t.Fatalf("key %v moved from %d to %d when %d left", key, before, after, gone)
						}
						continue
					}
					moved++
					if second := Rank(key, pairs)[1]; after != second {
						t.Fatalf("key %v went to %d, its second choice is %d", key, after, second)
					}
				}
				if moved == 0 {
					t.Fatalf("pair %d owned no key of %d", gone, len(keys))
				}
			})
		}
	}
}

// Every pair's share of flows is within 10% of even.
func TestOwnerDistribution(t *testing.T) {
	keys := randomKeys(64000)
	for _, n := range []int{2, 3, 8, 16} {
		counts := map[uint32]int{}
		for _, key := range keys {
			o, _ := Owner(key, pairIDs(n))
			counts[o]++
		}
		want := float64(len(keys)) / float64(n)
		for p, c := range counts {
			if dev := (float64(c) - want) / want; dev > 0.1 || dev < -0.1 {
				t.Errorf("pairs=%d: pair %d owns %d keys, want about %.0f", n, p, c, want)
			}
		}
		if len(counts) != n {
			t.Errorf("pairs=%d: only %d pairs own keys", n, len(counts))
		}
	}
}

// The same source port on many addresses, and many ports on one address,
// still spread: neither half of the key dominates.
func TestOwnerSpreadsEachKeyPart(t *testing.T) {
	pairs := pairIDs(8)
	one := netip.MustParseAddr("198.51.100.7")
	byPort, byAddr := map[uint32]int{}, map[uint32]int{}
	for i := range 8000 {
		o, _ := Owner(OwnerKey{one, uint16(1024 + i)}, pairs)
		byPort[o]++
		o, _ = Owner(OwnerKey{netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 443}, pairs)
		byAddr[o]++
	}
	for name, counts := range map[string]map[uint32]int{"ports": byPort, "addresses": byAddr} {
		for p, c := range counts {
			if c < 800 || c > 1200 {
				t.Errorf("varying %s: pair %d owns %d of 8000", name, p, c)
			}
		}
	}
}

func BenchmarkOwner(b *testing.B) {
	pairs := pairIDs(16)
	keys := randomKeys(1024)
	b.Run("pairs=16", func(b *testing.B) {
		var sink uint32
		i := 0
		for b.Loop() {
			o, _ := Owner(keys[i%len(keys)], pairs)
			sink += o
			i++
		}
		_ = sink
	})
}
