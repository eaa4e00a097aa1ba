package hashing

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func backendsN(n int) []Backend {
	bs := make([]Backend, n)
	for i := range bs {
		bs[i] = Backend{Key: fmt.Sprintf("10.0.%d.%d:8080", i/250, i%250+1), Weight: 1}
	}
	return bs
}

// keysOf maps a table of indices to the keys they name, so tables built from
// different backend sets can be compared slot by slot.
func keysOf(t testing.TB, backends []Backend, m uint64) []string {
	t.Helper()
	table, err := BuildMaglev(backends, m)
	if err != nil {
		t.Fatalf("BuildMaglev: %v", err)
	}
	sorted := SortBackends(backends)
	keys := make([]string, len(table))
	for s, i := range table {
		keys[s] = sorted[i].Key
	}
	return keys
}

func TestValidateTableSize(t *testing.T) {
	for _, tc := range []struct {
		m  uint64
		ok bool
	}{
		{0, false}, {1, false}, {2, true}, {3, true}, {4, false}, {9, false},
		{251, true}, {65536, false}, {65537, true}, {16777213, true},
		{MaxTableSize, false}, {MaxTableSize + 43, false},
	} {
		err := ValidateTableSize(tc.m)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateTableSize(%d) = %v, want ok=%v", tc.m, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrNotPrime) {
			t.Errorf("ValidateTableSize(%d) = %v, want ErrNotPrime", tc.m, err)
		}
	}
}

func TestNextPrime(t *testing.T) {
	for _, tc := range []struct{ n, want uint64 }{
		{0, 2}, {2, 2}, {3, 3}, {4, 5}, {65536, 65537}, {65537, 65537}, {65538, 65539}, {1000, 1009},
	} {
		if got := NextPrime(tc.n); got != tc.want {
			t.Errorf("NextPrime(%d) = %d, want %d", tc.n, got, tc.want)
		}
	}
}

func TestBuildMaglevErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		backends []Backend
		m        uint64
		want     error
	}{
		{"none", nil, 251, ErrNoBackends},
		{"all weight 0", []Backend{{"a", 0}, {"b", 0}}, 251, ErrNoBackends},
		{"not prime", backendsN(3), 65536, ErrNotPrime},
		{"too small", backendsN(3), 1, ErrNotPrime},
		{"too big", backendsN(3), 16777259, ErrNotPrime},
		{"duplicate", []Backend{{"a", 1}, {"b", 1}, {"a", 2}}, 251, ErrDuplicateKey},
		{"empty key", []Backend{{"", 1}, {"b", 1}}, 251, ErrEmptyKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			table, err := BuildMaglev(tc.backends, tc.m)
			if !errors.Is(err, tc.want) {
				t.Fatalf("BuildMaglev = %v, %v; want %v", len(table), err, tc.want)
			}
		})
	}
}

func TestBuildMaglevOrderIndependent(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 3, 10, 100} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			bs := backendsN(n)
			for i := range bs {
				bs[i].Weight = uint32(rng.IntN(4))
			}
			bs[0].Weight = 1
			want, err := BuildMaglev(bs, 65537)
			if err != nil {
				t.Fatal(err)
			}
			for range 5 {
				shuffled := slices.Clone(bs)
				rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
				got, err := BuildMaglev(shuffled, 65537)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(got, want) {
					t.Fatal("table depends on the input order")
				}
			}
		})
	}
}

func TestBuildMaglevDoesNotModifyInput(t *testing.T) {
	bs := []Backend{{"c", 1}, {"a", 2}, {"b", 3}}
	orig := slices.Clone(bs)
	if _, err := BuildMaglev(bs, 251); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(bs, orig) {
		t.Fatalf("input changed: %v", bs)
	}
}

// TestMaglevDisruption checks Maglev's minimal disruption: removing (or
// adding) one backend moves that backend's own slots, and at most 1% of the
// table besides.
func TestMaglevDisruption(t *testing.T) {
	const m = 65537
	for _, n := range []int{3, 10, 100} {
		for _, victim := range []int{0, n / 2, n - 1} {
			t.Run(fmt.Sprintf("n=%d/victim=%d", n, victim), func(t *testing.T) {
				all := backendsN(n)
				before := keysOf(t, all, m)
				removed := slices.Delete(slices.Clone(all), victim, victim+1)
				after := keysOf(t, removed, m)
				gone := all[victim].Key

				var own, extra int
				for s := range before {
					switch {
					case before[s] == gone:
						own++
					case before[s] != after[s]:
						extra++
					}
				}
				t.Logf("remove: own %d slots, %d others moved (%.3f%%)", own, extra, 100*float64(extra)/m)
				if extra > m/100 {
					t.Errorf("removing %s moved %d slots beyond its own %d: over 1%% of %d", gone, extra, own, m)
				}
				// Adding it back is the same comparison read the other way.
				var gained, extraAdd int
				for s := range after {
					switch {
					case before[s] == gone:
						gained++
					case before[s] != after[s]:
						extraAdd++
					}
				}
				if extraAdd > m/100 {
					t.Errorf("adding %s moved %d slots beyond the %d it took: over 1%% of %d", gone, extraAdd, gained, m)
				}
			})
		}
	}
}

// TestMaglevDisruptionAdd adds a backend whose key sorts anywhere among the
// others (first, middle, last), so the indices of the others shift.
func TestMaglevDisruptionAdd(t *testing.T) {
	const m = 65537
	for _, n := range []int{3, 10, 100} {
		for _, key := range []string{"0.0.0.0:1", "10.0.0.50:9090", "99.9.9.9:1"} {
			t.Run(fmt.Sprintf("n=%d/%s", n, key), func(t *testing.T) {
				base := backendsN(n)
				before := keysOf(t, base, m)
				after := keysOf(t, append(slices.Clone(base), Backend{Key: key, Weight: 1}), m)
				var taken, extra int
				for s := range after {
					switch {
					case after[s] == key:
						taken++
					case before[s] != after[s]:
						extra++
					}
				}
				t.Logf("add: took %d slots, %d others moved (%.3f%%)", taken, extra, 100*float64(extra)/m)
				if want := m / (n + 1); taken < want-want/50 || taken > want+want/50+1 {
					t.Errorf("new backend took %d slots, want about %d", taken, want)
				}
				if extra > m/100 {
					t.Errorf("adding %s moved %d slots beyond the %d it took: over 1%% of %d", key, extra, taken, m)
				}
			})
		}
	}
}

func TestMaglevWeights(t *testing.T) {
	const m = 65537
	for _, tc := range []struct {
		name    string
		weights []uint32
	}{
		{"1-2-3-4", []uint32{1, 2, 3, 4}},
		{"equal", []uint32{5, 5, 5}},
		{"with zero", []uint32{1, 0, 3, 0, 2}},
		{"skewed", []uint32{1, 100}},
		{"large", []uint32{1 << 31, 1 << 30, 3 << 30}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bs := make([]Backend, len(tc.weights))
			var sum float64
			for i, w := range tc.weights {
				bs[i] = Backend{Key: fmt.Sprintf("b%02d", i), Weight: w}
				sum += float64(w)
			}
			table, err := BuildMaglev(bs, m)
			if err != nil {
				t.Fatal(err)
			}
			counts := make([]int, len(bs))
			for _, i := range table {
				counts[i]++
			}
			// Keys b00.. are already sorted, so indices match bs.
			for i, w := range tc.weights {
				share := float64(m) * float64(w) / sum
				if w == 0 {
					if counts[i] != 0 {
						t.Errorf("backend %d of weight 0 owns %d slots", i, counts[i])
					}
					continue
				}
				if dev := (float64(counts[i]) - share) / share; dev > 0.02 || dev < -0.02 {
					t.Errorf("backend %d (weight %d) owns %d slots, want %.0f (off by %.2f%%)", i, w, counts[i], share, 100*dev)
				}
			}
		})
	}
}

// With equal weights every backend takes one turn per round, so slot counts
// differ by at most one.
func TestMaglevEqualWeightsBalanced(t *testing.T) {
	for _, n := range []int{3, 100, 1000} {
		table, err := BuildMaglev(backendsN(n), 65537)
		if err != nil {
			t.Fatal(err)
		}
		counts := make([]int, n)
		for _, i := range table {
			counts[i]++
		}
		if lo, hi := slices.Min(counts), slices.Max(counts); hi-lo > 1 {
			t.Errorf("n=%d: slot counts range %d..%d", n, lo, hi)
		}
	}
}

func TestMaglevZeroWeightKeepsIndices(t *testing.T) {
	bs := []Backend{{"a", 1}, {"b", 0}, {"c", 1}}
	table, err := BuildMaglev(bs, 251)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint32]int{}
	for _, i := range table {
		seen[i]++
	}
	if seen[1] != 0 || seen[0] == 0 || seen[2] == 0 || len(seen) != 2 {
		t.Fatalf("slot owners %v, want indices 0 and 2 only", seen)
	}
}

func TestSlotAndLookup(t *testing.T) {
	if got := Slot(65537+5, 65537); got != 5 {
		t.Errorf("Slot = %d, want 5", got)
	}
	if got := Slot(0xffffffff, 65537); got != 0xffffffff%65537 {
		t.Errorf("Slot = %d", got)
	}
	table := []uint32{7, 8, 9}
	for h, want := range map[uint32]uint32{0: 7, 4: 8, 0xffffffff: table[0xffffffff%3]} {
		if got, ok := Lookup(table, h); !ok || got != want {
			t.Errorf("Lookup(%d) = %d, %v; want %d", h, got, ok, want)
		}
	}
	if _, ok := Lookup(nil, 1); ok {
		t.Error("Lookup on an empty table reported ok")
	}
}

var smallPrimes = []uint64{2, 3, 5, 7, 11, 13, 31, 101, 251, 257, 1009, 4099}

// FuzzBuildMaglev builds tables from arbitrary backend sets: it must never
// panic, every slot must name a backend of weight > 0, and the table must not
// depend on the input order.
func FuzzBuildMaglev(f *testing.F) {
	f.Add([]byte("\x01a\x00\x02b\x00\x03c"), uint8(6))
	f.Add([]byte("\x00a\x00\x00b"), uint8(0))
	f.Add([]byte("\x01a\x00\x01a"), uint8(3))
	f.Add([]byte("\x05only"), uint8(0))
	f.Add([]byte("\x01\x00\x01"), uint8(1))
	f.Add([]byte("\xff10.0.0.1:80\x00\x0110.0.0.2:80\x00\x8010.0.0.3:80\x00\x0010.0.0.4:80"), uint8(11))
	f.Fuzz(func(t *testing.T, data []byte, msel uint8) {
		m := smallPrimes[int(msel)%len(smallPrimes)]
		if msel >= 128 {
			m++ // mostly not prime
		}
		var bs []Backend
		for _, chunk := range splitZero(data) {
			if len(chunk) == 0 {
				continue
			}
			bs = append(bs, Backend{Key: string(chunk[1:]), Weight: uint32(chunk[0])})
		}
		table, err := BuildMaglev(bs, m)
		if err != nil {
			for _, want := range []error{ErrNotPrime, ErrNoBackends, ErrDuplicateKey, ErrEmptyKey} {
				if errors.Is(err, want) {
					return
				}
			}
			t.Fatalf("unexpected error %v", err)
		}
		if uint64(len(table)) != m {
			t.Fatalf("table has %d slots, want %d", len(table), m)
		}
		sorted := SortBackends(bs)
		for s, i := range table {
			if int(i) >= len(sorted) || sorted[i].Weight == 0 {
				t.Fatalf("slot %d names backend %d of %v", s, i, sorted)
			}
		}
		slices.Reverse(bs)
		again, err := BuildMaglev(bs, m)
		if err != nil || !slices.Equal(again, table) {
			t.Fatalf("rebuild from reversed input differs (err %v)", err)
		}
	})
}

func splitZero(b []byte) [][]byte {
	var out [][]byte
	for {
		i := slices.Index(b, 0)
		if i < 0 {
			return append(out, b)
		}
		out = append(out, b[:i])
		b = b[i+1:]
	}
}

func BenchmarkBuildMaglev(b *testing.B) {
	for _, n := range []int{3, 100, 1000} {
		bs := backendsN(n)
		b.Run(fmt.Sprintf("n=%d/m=65537", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := BuildMaglev(bs, 65537); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
