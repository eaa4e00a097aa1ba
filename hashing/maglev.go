package hashing

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
)

// Maglev lookup tables (Eisenbud et al., "Maglev: A Fast and Reliable
// Software Network Load Balancer", NSDI'16, section 3.4), with weights.
//
// Specification (every node must build the same table from the same backend
// set, so this is exact):
//
//   - Backends are sorted by Key (byte-wise string order). Table entries are
//     indices into that sorted slice (see SortBackends), never into the
//     caller's order, so the input order does not matter.
//   - For backend i: offset_i = murmur3(MaglevOffsetSeed, Key_i) mod M and
//     skip_i = murmur3(MaglevSkipSeed, Key_i) mod (M-1) + 1, where murmur3 is
//     MurmurHash3 x86_32 over the bytes of the key. Its preference list is
//     offset_i, offset_i+skip_i, offset_i+2*skip_i, ... (mod M); M prime makes
//     it a permutation of all slots.
//   - The table is filled in rounds. In each round the backends with weight
//     > 0 are visited in sorted order; each adds its weight to a credit, and
//     when the credit reaches W (the largest weight) it pays W and takes a
//     turn: it claims the first free slot of its preference list. Backends of
//     weight W take a turn every round, the others in proportion to their
//     weight. Filling stops as soon as every slot is claimed, even mid-round.
//   - Weight 0 excludes a backend: it keeps its index but owns no slot.
//
// Memory is M*4 bytes for the table plus O(N) for the builder; building is
// O(M log M) expected for equal weights, as in the paper.

const (
	// DefaultTableSize is the default Maglev table size M: a prime about
	// 100 times the number of backends a vserver is expected to have at most
	// (the paper's rule for keeping the imbalance under ~1%).
	DefaultTableSize = 65537

	// MaxTableSize bounds M so that a table stays a reasonable BPF map value
	// (64 MiB at most) and the primality check stays cheap.
	MaxTableSize = 1 << 24

	// MaglevOffsetSeed and MaglevSkipSeed seed the two independent key hashes
	// that give each backend its offset and skip.
	MaglevOffsetSeed = 0x6d61676c // "magl"
	MaglevSkipSeed   = 0x736b6970 // "skip"
)

var (
	// ErrNoBackends means no backend has a weight above zero, so no table
	// can be built.
	ErrNoBackends = errors.New("no backend with a weight above zero")
	// ErrNotPrime means the table size M is not a prime in [2, MaxTableSize].
	ErrNotPrime = errors.New("maglev table size must be a prime")
	// ErrDuplicateKey means two backends share a key, so the order between
	// them (and hence the table) would not be well defined.
	ErrDuplicateKey = errors.New("duplicate backend key")
	// ErrEmptyKey means a backend has an empty key.
	ErrEmptyKey = errors.New("empty backend key")
)

// Backend is one entry of a Maglev table.
type Backend struct {
	// Key identifies the backend stably across nodes and restarts, e.g.
	// "10.0.2.11:8080" or a service name. It orders the backends and seeds
	// its preference list, so renaming a backend moves its slots.
	Key string
	// Weight is the backend's relative share of slots; 0 excludes it (for
	// example while it is DOWN) without changing the other indices.
	Weight uint32
}

// SortBackends returns a copy of backends sorted by Key: the order whose
// indices BuildMaglev's table holds.
func SortBackends(backends []Backend) []Backend {
	sorted := slices.Clone(backends)
	slices.SortFunc(sorted, func(a, b Backend) int { return cmp.Compare(a.Key, b.Key) })
	return sorted
}

// ValidateTableSize returns nil when m can be a Maglev table size, and an
// error wrapping ErrNotPrime that says why not otherwise.
func ValidateTableSize(m uint64) error {
	if m > MaxTableSize {
		return fmt.Errorf("table size %d is above the maximum %d: %w", m, MaxTableSize, ErrNotPrime)
	}
	if !isPrime(m) {
		return fmt.Errorf("table size %d is not prime (try %d): %w", m, NextPrime(m), ErrNotPrime)
	}
	return nil
}

// NextPrime returns the smallest prime >= n (2 for n < 2).
func NextPrime(n uint64) uint64 {
	if n <= 2 {
		return 2
	}
	if n%2 == 0 {
		n++
	}
	for !isPrime(n) {
		n += 2
	}
	return n
}

func isPrime(n uint64) bool {
	if n < 2 {
		return false
	}
	if n%2 == 0 {
		return n == 2
	}
	for d := uint64(3); d*d <= n; d += 2 {
		if n%d == 0 {
			return false
		}
	}
	return true
}

// BuildMaglev builds a Maglev table of size m for backends. Entry s of the
// returned table is the index, in SortBackends(backends), of the backend that
// owns slot s; it is never a backend of weight 0. The input slice is not
// modified and its order does not matter.
func BuildMaglev(backends []Backend, m uint64) ([]uint32, error) {
	if err := ValidateTableSize(m); err != nil {
		return nil, err
	}
	if uint64(len(backends)) > math.MaxUint32 {
		return nil, fmt.Errorf("%d backends do not fit 32-bit table entries", len(backends))
	}
	sorted := SortBackends(backends)

	// Builder state for the backends that take part, kept in sorted order.
	type turn struct {
		index  uint32 // index in sorted
		weight uint64
		credit uint64
		pos    uint64 // next slot of its preference list to try
		skip   uint64
	}
	turns := make([]turn, 0, len(sorted))
	var wmax uint64
	for i, b := range sorted {
		if b.Key == "" {
			return nil, fmt.Errorf("backend %d: %w", i, ErrEmptyKey)
		}
		if i > 0 && sorted[i-1].Key == b.Key {
			return nil, fmt.Errorf("backend %q: %w", b.Key, ErrDuplicateKey)
		}
		if b.Weight == 0 {
			continue
		}
		turns = append(turns, turn{
			index:  uint32(i),
			weight: uint64(b.Weight),
			pos:    uint64(murmur3String(MaglevOffsetSeed, b.Key)) % m,
			skip:   uint64(murmur3String(MaglevSkipSeed, b.Key))%(m-1) + 1,
		})
		wmax = max(wmax, uint64(b.Weight))
	}
	if len(turns) == 0 {
		return nil, ErrNoBackends
	}

	const free = math.MaxUint32
	table := make([]uint32, m)
	for s := range table {
		table[s] = free
	}
	for filled := uint64(0); filled < m; {
		for t := range turns {
			tb := &turns[t]
			tb.credit += tb.weight
			if tb.credit < wmax {
				continue
			}
			tb.credit -= wmax
			c := tb.pos
			for table[c] != free {
				c += tb.skip
				if c >= m {
					c -= m
				}
			}
			table[c] = tb.index
			c += tb.skip
			if c >= m {
				c -= m
			}
			tb.pos = c
			filled++
			if filled == m {
				break
			}
		}
	}
	return table, nil
}

// Slot is the Maglev slot of a packet hash in a table of size m (hash mod m),
// as the data plane computes it. m must be > 0.
func Slot(hash uint32, m uint64) uint32 {
	return uint32(uint64(hash) % m)
}

// Lookup returns the backend index that table holds for a packet hash, and
// false when the table is empty.
func Lookup(table []uint32, hash uint32) (uint32, bool) {
	if len(table) == 0 {
		return 0, false
	}
	return table[Slot(hash, uint64(len(table)))], true
}
