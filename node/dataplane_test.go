package node

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/tandem-lb/tandem/cluster"
	"github.com/tandem-lb/tandem/flow"
)

// fakeFlow is an in-memory data plane enforcing flow.Datapath's
// preconditions (tables name known backends, reverse entries known
// vservers and backends).
type fakeFlow struct {
	vservers map[uint32]flow.VServer
	backends map[uint32]flow.Backend
	reverses map[reverseKey]flow.Reverse
	tables   map[uint32][]uint32
	epochs   map[uint32]uint32
	calls    int
}

func newFakeFlow() *fakeFlow {
	return &fakeFlow{vservers: map[uint32]flow.VServer{}, backends: map[uint32]flow.Backend{}, reverses: map[reverseKey]flow.Reverse{}, tables: map[uint32][]uint32{}, epochs: map[uint32]uint32{}}
}

func (f *fakeFlow) SetVServer(v flow.VServer) error { f.calls++; f.vservers[v.ID] = v; return nil }
func (f *fakeFlow) DeleteVServer(id uint32) error {
	f.calls++
	if _, ok := f.vservers[id]; !ok {
		return flow.ErrUnknownVServer
	}
	delete(f.vservers, id)
	delete(f.tables, id)
	for k, r := range f.reverses {
		if r.VServerID == id {
			delete(f.reverses, k)
		}
	}
	return nil
}
func (f *fakeFlow) SetBackend(b flow.Backend) error {
	f.calls++
	if b.ID == 0 {
		return flow.ErrInvalidArgument
	}
	f.backends[b.ID] = b
	return nil
}
func (f *fakeFlow) DeleteBackend(id uint32) error {
	f.calls++
	for vs, t := range f.tables {
		for _, s := range t {
			if s == id {
				return fmt.Errorf("backend %d deleted while vserver %d's table names it", id, vs)
			}
		}
	}
	delete(f.backends, id)
	return nil
}
func (f *fakeFlow) SetReverse(r flow.Reverse) error {
	f.calls++
	if _, ok := f.vservers[r.VServerID]; !ok {
		return flow.ErrUnknownVServer
	}
	if _, ok := f.backends[r.BackendID]; !ok {
		return flow.ErrUnknownBackend
	}
	f.reverses[reverseKey{r.Addr, r.Port, r.Protocol}] = r
	return nil
}
func (f *fakeFlow) DeleteReverse(a netip.Addr, port uint16, p flow.Protocol) error {
	f.calls++
	delete(f.reverses, reverseKey{a, port, p})
	return nil
}
func (f *fakeFlow) SetTable(id uint32, slots []uint32) (uint32, error) {
	f.calls++
	if _, ok := f.vservers[id]; !ok {
		return 0, flow.ErrUnknownVServer
	}
	for _, s := range slots {
		if _, ok := f.backends[s]; s != 0 && !ok {
			return 0, fmt.Errorf("slot names backend %d: %w", s, flow.ErrUnknownBackend)
		}
	}
	f.tables[id] = append([]uint32(nil), slots...)
	f.epochs[id]++
	return f.epochs[id], nil
}
func (f *fakeFlow) VServerCounters(id uint32) (flow.Counters, error) {
	return flow.Counters{Packets: uint64(id) + 10, Reasons: map[flow.Reason]uint64{flow.ReasonDropNoBackend: 1}}, nil
}
func (f *fakeFlow) BackendCounters(id uint32) (flow.Counters, error) {
	return flow.Counters{Packets: uint64(id) + 100}, nil
}

const testM = 7

func testConfig() cluster.Config {
	c := cluster.Config{
		Services: []cluster.Service{
			{Name: "web1", IP: netip.MustParseAddr("10.0.2.11"), Type: cluster.TypeANY, Port: 8080, USIP: true},
			{Name: "web2", IP: netip.MustParseAddr("10.0.2.12"), Type: cluster.TypeANY, Port: 8080, USIP: true},
		},
		VServers: []cluster.VServer{{Name: "vs1", Type: cluster.TypeANY, VIP: netip.MustParseAddr("203.0.113.10"), Port: 80,
			LBMethod: cluster.MethodSrcIPSrcPortHash, Persistence: cluster.PersistNone, ConnFailover: cluster.FailoverStateless, FwdMode: cluster.FwdNAT}},
		Bindings: []cluster.Binding{{VServer: "vs1", Service: "web1", Weight: 1}, {VServer: "vs1", Service: "web2", Weight: 1}},
	}
	return c
}

func TestProgrammerSync(t *testing.T) {
	ff := newFakeFlow()
	p := NewProgrammer(ff, testM)
	cfg := testConfig()
	tables := []cluster.VServerTable{{VServer: "vs1", Seed: 42, WithPort: true, Backends: []string{"web1", "web2"}, Weights: []uint32{1, 1}, Slots: []uint32{0, 1, 0, 1, 0, 1, 1}}}
	if err := p.Sync(cfg, tables); err != nil {
		t.Fatal(err)
	}
	vs := ff.vservers[0]
	if vs.VIP != netip.MustParseAddr("203.0.113.10") || vs.Port != 80 || vs.Protocol != flow.ProtoAny || vs.Method != flow.MethodSourceIPSourcePort || vs.Seed != 42 || !vs.Stateless {
		t.Errorf("vserver = %+v", vs)
	}
	if ff.backends[1].Addr != netip.MustParseAddr("10.0.2.11") || ff.backends[2].Port != 8080 {
		t.Errorf("backends = %+v", ff.backends)
	}
	if got, want := fmt.Sprint(ff.tables[0]), "[1 2 1 2 1 2 2]"; got != want {
		t.Errorf("table = %s, want %s", got, want)
	}
	if len(ff.reverses) != 2 || ff.reverses[reverseKey{netip.MustParseAddr("10.0.2.12"), 8080, flow.ProtoAny}].BackendID != 2 {
		t.Errorf("reverses = %+v", ff.reverses)
	}
	if e := p.Epochs()["vs1"]; e != 1 {
		t.Errorf("epoch = %d", e)
	}

	// The same state again: nothing is written.
	calls := ff.calls
	if err := p.Sync(cfg, tables); err != nil {
		t.Fatal(err)
	}
	if ff.calls != calls {
		t.Errorf("an unchanged Sync made %d data-plane calls", ff.calls-calls)
	}

	// web2 goes DOWN: the table changes, the epoch moves, web2 stays a
	// backend (it keeps its index) and its reverse entry stays.
	tables[0].Weights = []uint32{1, 0}
	tables[0].Slots = []uint32{0, 0, 0, 0, 0, 0, 0}
	if err := p.Sync(cfg, tables); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(ff.tables[0]); got != "[1 1 1 1 1 1 1]" || p.Epochs()["vs1"] != 2 {
		t.Errorf("after web2 down: table %s epoch %d", got, p.Epochs()["vs1"])
	}

	// Unbind web2: its backend and reverse entry go, after the table.
	cfg.Bindings = cfg.Bindings[:1]
	tables[0].Backends, tables[0].Weights = []string{"web1"}, []uint32{1}
	if err := p.Sync(cfg, tables); err != nil {
		t.Fatal(err)
	}
	if _, ok := ff.backends[2]; ok || len(ff.reverses) != 1 {
		t.Errorf("after unbind: backends %+v reverses %+v", ff.backends, ff.reverses)
	}

	// No backend UP: an all-zero table.
	tables[0].Slots = nil
	if err := p.Sync(cfg, tables); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(ff.tables[0]); got != "[0 0 0 0 0 0 0]" {
		t.Errorf("empty table = %s", got)
	}

	// The vserver goes: everything goes.
	if err := p.Sync(cluster.Config{Services: cfg.Services}, nil); err != nil {
		t.Fatal(err)
	}
	if len(ff.vservers)+len(ff.backends)+len(ff.reverses) != 0 {
		t.Errorf("left behind: %+v %+v %+v", ff.vservers, ff.backends, ff.reverses)
	}
	if v, b := p.IDs(); len(v)+len(b) != 0 {
		t.Errorf("ids left: %v %v", v, b)
	}
}

func TestProgrammerRefusesWrongM(t *testing.T) {
	p := NewProgrammer(newFakeFlow(), testM)
	tables := []cluster.VServerTable{{VServer: "vs1", Backends: []string{"web1"}, Weights: []uint32{1}, Slots: []uint32{0, 0, 0}}}
	if err := p.Sync(testConfig(), tables); err == nil {
		t.Fatal("a 3-slot table was accepted by a 7-slot data plane")
	}
}

// BenchmarkProgrammerTableChange measures what one health flap costs the
// control plane: a changed 65537-slot table translated to backend ids and
// written (to an in-memory data plane, so the kernel's map writes are not
// counted; flow's own benchmarks time those).
func BenchmarkProgrammerTableChange(b *testing.B) {
	const m = 65537
	ff := newFakeFlow()
	p := NewProgrammer(ff, m)
	cfg := testConfig()
	t := cluster.VServerTable{VServer: "vs1", Seed: 1, Backends: []string{"web1", "web2"}, Weights: []uint32{1, 1}, Slots: make([]uint32, m)}
	for i := range t.Slots {
		t.Slots[i] = uint32(i % 2)
	}
	if err := p.Sync(cfg, []cluster.VServerTable{t}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t.Weights[1] = uint32(i % 2) // a new digest every round
		if err := p.Sync(cfg, []cluster.VServerTable{t}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkProgrammerUnchanged measures the reconcile of an unchanged state
// (what every effect batch and the 1s resync cost when nothing moved).
func BenchmarkProgrammerUnchanged(b *testing.B) {
	const m = 65537
	p := NewProgrammer(newFakeFlow(), m)
	cfg := testConfig()
	t := cluster.VServerTable{VServer: "vs1", Seed: 1, Backends: []string{"web1", "web2"}, Weights: []uint32{1, 1}, Slots: make([]uint32, m)}
	if err := p.Sync(cfg, []cluster.VServerTable{t}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := p.Sync(cfg, []cluster.VServerTable{t}); err != nil {
			b.Fatal(err)
		}
	}
}
