package standby

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// fakeInstaller is an in-memory flow table.
type fakeInstaller struct {
	flows   map[Key]Entry
	batches int
	maxLen  int
	failAt  int // fail the failAt-th batch (1-based); 0 never
}

var errInstall = errors.New("fake install failure")

func newFakeInstaller() *fakeInstaller { return &fakeInstaller{flows: make(map[Key]Entry)} }

func (f *fakeInstaller) InstallBatch(recs []Record) error {
	f.batches++
	if f.batches == f.failAt {
		return errInstall
	}
	f.maxLen = max(f.maxLen, len(recs))
	for i := range recs {
		e, err := recs[i].Decode()
		if err != nil {
			return err
		}
		f.flows[recs[i].Key()] = e
	}
	return nil
}

func newStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func records(t testing.TB, from, to int, mut func(*Entry)) []Record {
	t.Helper()
	out := make([]Record, 0, to-from)
	for i := from; i < to; i++ {
		e := testEntry(i)
		if mut != nil {
			mut(&e)
		}
		var r Record
		if err := e.Encode(&r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func upsert(t testing.TB, s *Store, owner string, recs []Record) {
	t.Helper()
	for len(recs) > 0 {
		n := min(len(recs), 4096)
		if _, err := s.Upsert(owner, recs[:n]); err != nil {
			t.Fatal(err)
		}
		recs = recs[n:]
	}
}

func TestConfigValidate(t *testing.T) {
	bad := []Config{
		{FlowLimit: -1},
		{Headroom: -0.5},
		{Headroom: 5},
		{TCPIdleTimeout: time.Millisecond},
		{TakeoverBatch: -3},
	}
	for _, c := range bad {
		if _, err := New(c); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("New(%+v) err = %v, want ErrInvalidConfig", c, err)
		}
	}
}

func TestUpsertLookupDelete(t *testing.T) {
	s := newStore(t, Config{FlowLimit: 10_000})
	recs := records(t, 0, 1000, nil)
	n, err := s.Upsert("n1", recs)
	if err != nil || n != 1000 {
		t.Fatalf("Upsert = %d, %v", n, err)
	}
	for i, r := range recs {
		e, ok := s.Lookup(r.Key())
		if !ok || e != testEntry(i) {
			t.Fatalf("Lookup(%d) = %+v, %v", i, e, ok)
		}
	}
	// An update replaces the entry, without a second index entry.
	upd := records(t, 5, 6, func(e *Entry) { e.LastSeen = 1_800_000_000 })
	if _, err := s.Upsert("n1", upd); err != nil {
		t.Fatal(err)
	}
	if e, _ := s.Lookup(upd[0].Key()); e.LastSeen != 1_800_000_000 {
		t.Errorf("update not applied: %+v", e)
	}
	keys := []Key{recs[0].Key(), recs[1].Key()}
	s.Delete("n1", keys)
	s.Delete("nobody", keys)
	for _, k := range keys {
		if _, ok := s.Lookup(k); ok {
			t.Errorf("%v still there after Delete", k)
		}
	}
	st := s.Stats()
	if st.Entries != 998 || st.Owners != 1 || st.Stored != 1001 || st.Freed != 2 || st.Dropped != 0 {
		t.Errorf("stats %+v", st)
	}
	if got := s.Owners(); got["n1"] != 998 {
		t.Errorf("Owners() = %v", got)
	}
}

func TestUpsertSkipsInvalid(t *testing.T) {
	s := newStore(t, Config{FlowLimit: 100})
	recs := records(t, 0, 3, nil)
	recs[1][0] = 9
	n, err := s.Upsert("n1", recs)
	if n != 2 || !errors.Is(err, ErrInvalidRecord) {
		t.Fatalf("Upsert = %d, %v; want 2 and ErrInvalidRecord", n, err)
	}
	if st := s.Stats(); st.Invalid != 1 || st.Entries != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestTakeoverInstallsAndFrees(t *testing.T) {
	s := newStore(t, Config{FlowLimit: 100_000, TakeoverBatch: 1000})
	upsert(t, s, "n1", records(t, 0, 10_500, nil))
	upsert(t, s, "n3", records(t, 20_000, 20_100, nil))
	inst := newFakeInstaller()
	n, err := s.Takeover("n1", inst)
	if err != nil || n != 10_500 {
		t.Fatalf("Takeover = %d, %v", n, err)
	}
	if len(inst.flows) != 10_500 || inst.batches != 11 || inst.maxLen != 1000 {
		t.Errorf("installer got %d flows in %d batches (max %d)", len(inst.flows), inst.batches, inst.maxLen)
	}
	for i := range 10_500 {
		e := testEntry(i)
		k, _ := e.Key()
		if inst.flows[k] != e {
			t.Fatalf("flow %d installed as %+v", i, inst.flows[k])
		}
		if _, ok := s.Lookup(k); ok {
			t.Fatalf("flow %d not freed", i)
		}
	}
	// The other owner's flows stay; a second takeover of n1 finds nothing.
	if got := s.Owners(); len(got) != 1 || got["n3"] != 100 {
		t.Errorf("owners after takeover: %v", got)
	}
	if n, err := s.Takeover("n1", inst); n != 0 || err != nil {
		t.Errorf("second Takeover = %d, %v", n, err)
	}
}

func TestTakeoverResumesAfterInstallError(t *testing.T) {
	s := newStore(t, Config{FlowLimit: 10_000, TakeoverBatch: 100})
	upsert(t, s, "n1", records(t, 0, 1000, nil))
	inst := newFakeInstaller()
	inst.failAt = 4
	n, err := s.Takeover("n1", inst)
	if !errors.Is(err, errInstall) || n != 300 {
		t.Fatalf("Takeover = %d, %v; want 300 and the installer's error", n, err)
	}
	if got := s.Owners()["n1"]; got != 700 {
		t.Fatalf("%d entries left, want 700", got)
	}
	n, err = s.Takeover("n1", inst)
	if err != nil || n != 700 || len(inst.flows) != 1000 {
		t.Fatalf("resumed Takeover = %d, %v; installed %d", n, err, len(inst.flows))
	}
}

func TestBulkSyncFreesStale(t *testing.T) {
	s := newStore(t, Config{FlowLimit: 10_000})
	s.BeginSync("n1", 1)
	upsert(t, s, "n1", records(t, 0, 100, nil))
	if freed := s.EndSync("n1", 1); freed != 0 {
		t.Fatalf("first sync freed %d", freed)
	}
	// The owner reconnects: flows 0..49 closed while the link was down.
	s.BeginSync("n1", 2)
	upsert(t, s, "n1", records(t, 50, 150, nil))
	if freed := s.EndSync("n1", 1); freed != 0 {
		t.Errorf("stale EndSync freed %d", freed)
	}
	if freed := s.EndSync("n1", 2); freed != 50 {
		t.Errorf("EndSync freed %d, want 50", freed)
	}
	for i := range 150 {
		e := testEntry(i)
		k, _ := e.Key()
		if _, ok := s.Lookup(k); ok != (i >= 50) {
			t.Errorf("flow %d present = %v", i, ok)
		}
	}
	// Increments after the sync belong to it.
	upsert(t, s, "n1", records(t, 150, 160, nil))
	if freed := s.EndSync("n1", 2); freed != 0 {
		t.Errorf("repeated EndSync freed %d", freed)
	}
}

func TestDropVServer(t *testing.T) {
	s := newStore(t, Config{FlowLimit: 10_000})
	upsert(t, s, "n1", records(t, 0, 400, nil))
	upsert(t, s, "n3", records(t, 1000, 1400, nil))
	// testEntry spreads flows over vservers 1..4.
	if n := s.DropVServer(2); n != 200 {
		t.Fatalf("DropVServer freed %d, want 200", n)
	}
	inst := newFakeInstaller()
	if n, err := s.Takeover("n1", inst); err != nil || n != 300 {
		t.Fatalf("Takeover = %d, %v", n, err)
	}
	for _, e := range inst.flows {
		if e.VServerID == 2 {
			t.Fatalf("dropped vserver's flow installed: %+v", e)
		}
	}
}

func TestEntriesExpire(t *testing.T) {
	s := newStore(t, Config{FlowLimit: 1000})
	short := records(t, 0, 10, func(e *Entry) { e.IdleTimeout = time.Second })
	long := records(t, 10, 20, nil)
	upsert(t, s, "n1", short)
	upsert(t, s, "n1", long)
	time.Sleep(1100 * time.Millisecond)
	if _, ok := s.Lookup(short[0].Key()); ok {
		t.Error("entry outlived its idle timeout")
	}
	inst := newFakeInstaller()
	n, err := s.Takeover("n1", inst)
	if err != nil || n != 10 {
		t.Fatalf("Takeover = %d, %v; want only the 10 live flows", n, err)
	}
	if st := s.Stats(); st.Pruned+st.Evicted < 10 {
		t.Errorf("expired entries neither pruned nor evicted: %+v", st)
	}
}

// A store sized below what it is sent stays bounded: ristretto evicts or
// rejects, and the index follows it.
func TestBoundedByFlowLimit(t *testing.T) {
	s := newStore(t, Config{FlowLimit: 1000, Headroom: 0.1})
	upsert(t, s, "n1", records(t, 0, 5000, nil))
	st := s.Stats()
	if st.Evicted+st.Rejected+st.Dropped < 3900 {
		t.Errorf("5000 flows into a 1100-cost store: %+v", st)
	}
	if st.Entries > 1100 {
		t.Errorf("index holds %d entries, more than the store's 1100", st.Entries)
	}
	inst := newFakeInstaller()
	n, err := s.Takeover("n1", inst)
	if err != nil || n > 1100 || n == 0 {
		t.Fatalf("Takeover = %d, %v", n, err)
	}
}

func TestClosed(t *testing.T) {
	s, err := New(Config{FlowLimit: 10})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s.Close()
	if _, err := s.Upsert("n1", records(t, 0, 1, nil)); !errors.Is(err, ErrClosed) {
		t.Errorf("Upsert after Close: %v", err)
	}
	if _, err := s.Takeover("n1", newFakeInstaller()); !errors.Is(err, ErrClosed) {
		t.Errorf("Takeover after Close: %v", err)
	}
}

// nopInstaller measures the store's side of a takeover.
type nopInstaller struct{ n int }

func (n *nopInstaller) InstallBatch(r []Record) error { n.n += len(r); return nil }

func BenchmarkTakeover(b *testing.B) {
	for _, flows := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("flows=%d", flows), func(b *testing.B) {
			recs := records(b, 0, flows, nil)
			var total time.Duration
			for b.Loop() {
				b.StopTimer()
				s, err := New(Config{FlowLimit: int64(flows)})
				if err != nil {
					b.Fatal(err)
				}
				upsert(b, s, "n1", recs)
				if got := s.Owners()["n1"]; got != flows {
					b.Fatalf("stored %d of %d", got, flows)
				}
				inst := &nopInstaller{}
				b.StartTimer()
				start := time.Now()
				n, err := s.Takeover("n1", inst)
				total += time.Since(start)
				b.StopTimer()
				if err != nil || n != flows || inst.n != flows {
					b.Fatalf("Takeover = %d, %v", n, err)
				}
				s.Close()
				b.StartTimer()
			}
			b.ReportMetric(total.Seconds()/float64(b.N), "s/takeover")
			b.ReportMetric(float64(flows)*float64(b.N)/total.Seconds(), "flows/s")
		})
	}
}

func BenchmarkUpsert(b *testing.B) {
	s := newStore(b, Config{FlowLimit: 1_000_000})
	recs := records(b, 0, 1024, nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Upsert("n1", recs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(recs))/b.Elapsed().Seconds(), "flows/s")
}

// BenchmarkUpsertNew stores a million new flows in batches of 1024, as a
// bulk sync does.
func BenchmarkUpsertNew(b *testing.B) {
	const flows = 1_000_000
	recs := records(b, 0, flows, nil)
	var total time.Duration
	for b.Loop() {
		b.StopTimer()
		s, err := New(Config{FlowLimit: flows})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		for i := 0; i < flows; i += 1024 {
			if _, err := s.Upsert("n1", recs[i:min(i+1024, flows)]); err != nil {
				b.Fatal(err)
			}
		}
		total += time.Since(start)
		b.StopTimer()
		if st := s.Stats(); st.Entries != flows {
			b.Fatalf("stored %d of %d (%+v)", st.Entries, flows, st)
		}
		s.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(flows)*float64(b.N)/total.Seconds(), "flows/s")
}

// A delete frees the flow's entry even when another owner's index holds it
// (the flow changed owner) or none does.
func TestDeleteUnindexed(t *testing.T) {
	s := newStore(t, Config{FlowLimit: 1000})
	recs := records(t, 0, 2, nil)
	upsert(t, s, "n3", recs)
	s.Delete("n1", []Key{recs[0].Key()})
	if _, ok := s.Lookup(recs[0].Key()); ok {
		t.Error("entry survived a delete from its new owner")
	}
	if _, ok := s.Lookup(recs[1].Key()); !ok {
		t.Error("other entry gone")
	}
	if st := s.Stats(); st.Freed != 0 {
		t.Errorf("freed %d: nothing indexed was freed", st.Freed)
	}
	// n3's index still names the deleted flow: a takeover skips it.
	inst := newFakeInstaller()
	if n, err := s.Takeover("n3", inst); err != nil || n != 1 {
		t.Errorf("Takeover = %d, %v", n, err)
	}
}
