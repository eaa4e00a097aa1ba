package cluster

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func newTestStore(t *testing.T, node, dir string) *Store {
	t.Helper()
	s, err := NewStore(StoreConfig{Node: node, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStoreUpdate(t *testing.T) {
	var got []Entry
	s, err := NewStore(StoreConfig{Node: "n1", OnChange: func(c []Entry, local bool) {
		if !local {
			t.Error("local change reported as remote")
		}
		got = append(got, c...)
	}})
	if err != nil {
		t.Fatal(err)
	}
	empty := s.Digest()
	err = s.Update(func(c *Config) error {
		*c = goodConfig()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 11 {
		t.Errorf("OnChange got %d entries, want 11 (4 services, 3 vservers, 4 bindings)", len(got))
	}
	if s.Digest() == empty {
		t.Error("digest unchanged")
	}
	want := goodConfig()
	if s.Digest() != want.Digest() {
		t.Error("store digest differs from the config's")
	}

	// A refused change changes nothing.
	before := s.StateDigest()
	err = s.Update(func(c *Config) error {
		p, _ := c.Service("web1")
		p.USIP = false
		return nil
	})
	if re := RuleErrors(err); len(re) != 1 || re[0].Rule != RuleStatelessUSIP {
		t.Fatalf("want the stateless-usip refusal, got %v", err)
	}
	fnErr := errors.New("boom")
	if err := s.Update(func(c *Config) error { c.Services = nil; return fnErr }); err != fnErr {
		t.Errorf("fn error not returned as is: %v", err)
	}
	if s.StateDigest() != before {
		t.Error("refused update changed the store")
	}

	// A no-op update records nothing.
	got = nil
	clock := s.Clock()
	if err := s.Update(func(c *Config) error { return nil }); err != nil || len(got) != 0 || s.Clock() != clock {
		t.Errorf("no-op update: err=%v changed=%d clock %d→%d", err, len(got), clock, s.Clock())
	}

	// Removing a vserver tombstones it and its bindings.
	got = nil
	if err := s.Update(func(c *Config) error { return c.RemoveVServer("vs1") }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("want 3 tombstones, got %+v", got)
	}
	for _, e := range got {
		if !e.Deleted || e.DeletedAt == 0 || e.Version.Clock != s.Clock() {
			t.Errorf("bad tombstone %+v", e)
		}
	}
	cfg := s.Config()
	if _, ok := cfg.VServer("vs1"); ok {
		t.Error("vs1 still there")
	}
}

func TestStorePersistence(t *testing.T) {
	dir := t.TempDir()
	s := newTestStore(t, "n1", dir)
	if err := s.Update(func(c *Config) error { *c = goodConfig(); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(c *Config) error { return c.RemoveBinding("ftp", "ftp1") }); err != nil {
		t.Fatal(err)
	}
	s2 := newTestStore(t, "n1", dir)
	if s2.StateDigest() != s.StateDigest() || s2.Digest() != s.Digest() || s2.Clock() != s.Clock() {
		t.Error("reloaded store differs")
	}
	// No temp files left behind.
	files, _ := os.ReadDir(dir)
	if len(files) != 1 || files[0].Name() != StateFileName {
		t.Errorf("state dir holds %v", files)
	}

	for name, content := range map[string]string{
		"garbage":      "{not json",
		"format":       `{"format": 99, "entries": []}`,
		"bad entry":    `{"format": 1, "entries": [{"kind": "service", "key": "a", "version": {"clock": 1, "node": "n"}}]}`,
		"duplicate":    `{"format": 1, "entries": [{"kind":"vserver","key":"a","version":{"clock":1,"node":"n"},"deleted":true,"deletedAt":1},{"kind":"vserver","key":"a","version":{"clock":2,"node":"n"},"deleted":true,"deletedAt":1}]}`,
		"truncated":    `{"format": 1, "entries": [`,
		"unknown kind": `{"format": 1, "entries": [{"kind":"x","key":"a","version":{"clock":1,"node":"n"},"deleted":true}]}`,
	} {
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, StateFileName), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := NewStore(StoreConfig{Node: "n1", Dir: d})
		if !errors.Is(err, ErrCorruptState) {
			t.Errorf("%s: want ErrCorruptState, got %v", name, err)
		}
	}
}

func TestStoreGC(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	s, err := NewStore(StoreConfig{Node: "n1", TombstoneTTL: time.Hour, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Update(func(c *Config) error { c.PutMonitor(Monitor{Name: "m"}); return nil })
	_ = s.Update(func(c *Config) error { return c.RemoveMonitor("m") })
	if n, _ := s.GC(); n != 0 {
		t.Errorf("collected a fresh tombstone")
	}
	now = now.Add(2 * time.Hour)
	if n, _ := s.GC(); n != 1 || len(s.Entries()) != 0 {
		t.Errorf("collected %d, left %v", n, s.Entries())
	}
}

// TestMergeConflict: two nodes concurrently change the same object; both
// end with the higher (clock, node) version.
func TestMergeConflict(t *testing.T) {
	a, b := newTestStore(t, "a", ""), newTestStore(t, "b", "")
	put := func(s *Store, port uint16) {
		t.Helper()
		if err := s.Update(func(c *Config) error {
			c.PutService(svc("web1", "10.0.2.11", TypeANY, port, true))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	put(a, 1)
	put(b, 2)
	if _, err := a.Merge(b.Entries()); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Merge(a.Entries()); err != nil {
		t.Fatal(err)
	}
	if a.StateDigest() != b.StateDigest() {
		t.Fatal("diverged")
	}
	c := a.Config()
	if s, _ := c.Service("web1"); s.Port != 2 {
		t.Errorf("same clock: node b should win, got port %d", s.Port)
	}
	// The next change on a follows the clock it has seen, so it wins.
	put(a, 3)
	if _, err := b.Merge(a.Entries()); err != nil {
		t.Fatal(err)
	}
	c = b.Config()
	if s, _ := c.Service("web1"); s.Port != 3 {
		t.Errorf("later change lost, port %d", s.Port)
	}
}

func TestMergeRejectsMalformed(t *testing.T) {
	s := newTestStore(t, "a", "")
	bad := []Entry{{Kind: KindService, Key: "x", Version: Version{Clock: 1, Node: "b"}, VServer: &VServer{Name: "x"}}}
	if _, err := s.Merge(bad); err == nil {
		t.Error("malformed entry merged")
	}
	if len(s.Entries()) != 0 {
		t.Error("store changed")
	}
}

// TestConcurrentCreateConverges: two nodes create conflicting vservers; the
// merged document is the same everywhere, and the conflict is quarantined
// identically.
func TestConcurrentCreateConverges(t *testing.T) {
	a, b := newTestStore(t, "a", ""), newTestStore(t, "b", "")
	_ = a.Update(func(c *Config) error {
		c.PutVServer(vsrv("x", TypeTCP, "203.0.113.10", 80, MethodRoundRobin, PersistNone, FailoverDisabled))
		return nil
	})
	_ = b.Update(func(c *Config) error {
		c.PutVServer(vsrv("y", TypeTCP, "203.0.113.10", 80, MethodRoundRobin, PersistNone, FailoverDisabled))
		return nil
	})
	_, _ = a.Merge(b.Entries())
	_, _ = b.Merge(a.Entries())
	if a.Digest() != b.Digest() || len(a.Problems()) == 0 {
		t.Fatalf("digests %s %s, problems %v", a.Digest(), b.Digest(), a.Problems())
	}
	// Updates that do not add new problems still go through, and the fix
	// clears the conflict.
	if err := a.Update(func(c *Config) error {
		c.PutService(svc("s", "10.0.0.1", TypeTCP, 80, true))
		return nil
	}); err != nil {
		t.Errorf("unrelated update refused in a conflicted document: %v", err)
	}
	if err := a.Update(func(c *Config) error { return c.RemoveVServer("y") }); err != nil {
		t.Fatal(err)
	}
	if p := a.Problems(); len(p) != 0 {
		t.Errorf("still in conflict: %v", p)
	}
}

// TestMergeConvergesProperty: random edits on N replicas, delivered as
// deltas in random order with duplicates and as occasional full-state
// exchanges, converge to equal state digests once everything is delivered.
func TestMergeConvergesProperty(t *testing.T) {
	for seed := uint64(0); seed < 40; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { convergeOnce(t, seed) })
	}
}

func convergeOnce(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 42))
	const n = 4
	stores := make([]*Store, n)
	type msg struct {
		to      int
		entries []Entry
	}
	var inflight []msg
	for i := range stores {
		i := i
		var err error
		stores[i], err = NewStore(StoreConfig{Node: fmt.Sprintf("n%d", i), OnChange: func(c []Entry, local bool) {
			if !local {
				return
			}
			for j := 0; j < n; j++ {
				if j != i {
					inflight = append(inflight, msg{j, c})
				}
			}
		}})
		if err != nil {
			t.Fatal(err)
		}
	}
	names := []string{"a", "b", "c"}
	for step := 0; step < 200; step++ {
		switch r := rng.IntN(10); {
		case r < 5: // a local edit
			s := stores[rng.IntN(n)]
			name := names[rng.IntN(len(names))]
			_ = s.Update(func(c *Config) error {
				switch rng.IntN(5) {
				case 0:
					c.PutService(svc("s"+name, fmt.Sprintf("10.0.0.%d", 1+rng.IntN(3)), TypeANY, uint16(rng.IntN(3)), true))
				case 1:
					c.PutVServer(VServer{Name: "v" + name, Type: TypeANY, VIP: netip.MustParseAddr("203.0.113.1"),
						Port: uint16(1 + rng.IntN(4)), LBMethod: MethodSrcIPSrcPortHash, ConnFailover: FailoverStateless})
				case 2:
					c.PutBinding(Binding{VServer: "v" + name, Service: "s" + names[rng.IntN(len(names))], Weight: uint32(1 + rng.IntN(5))})
				case 3:
					_ = c.RemoveVServer("v" + name)
				case 4:
					for _, v := range c.VServersOf("s" + name) {
						_ = c.RemoveBinding(v, "s"+name)
					}
					_ = c.RemoveService("s" + name)
				}
				return nil
			})
		case r < 9 && len(inflight) > 0: // deliver a random message, maybe keep a duplicate
			k := rng.IntN(len(inflight))
			m := inflight[k]
			if rng.IntN(4) != 0 {
				inflight = append(inflight[:k], inflight[k+1:]...)
			}
			if _, err := stores[m.to].Merge(m.entries); err != nil {
				t.Fatal(err)
			}
		default: // push/pull between two replicas
			x, y := rng.IntN(n), rng.IntN(n)
			if _, err := stores[x].Merge(stores[y].Entries()); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Deliver everything left, in random order.
	rng.Shuffle(len(inflight), func(i, j int) { inflight[i], inflight[j] = inflight[j], inflight[i] })
	for _, m := range inflight {
		if _, err := stores[m.to].Merge(m.entries); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i < n; i++ {
		if stores[i].StateDigest() != stores[0].StateDigest() || stores[i].Digest() != stores[0].Digest() {
			t.Fatalf("replica %d diverged:\n%v\n%v", i, stores[0].Config(), stores[i].Config())
		}
	}
	if seed < 3 {
		t.Logf("final: %d entries, clock %d, problems %d", len(stores[0].Entries()), stores[0].Clock(), len(stores[0].Problems()))
	}
	// And the quarantined view is identical too.
	c0, c1 := stores[0].Config(), stores[n-1].Config()
	q0, p0 := c0.Quarantine()
	q1, p1 := c1.Quarantine()
	if q0.Digest() != q1.Digest() || ProblemStrings(p0) != ProblemStrings(p1) {
		t.Fatal("quarantine differs")
	}
}
