package api_test

import (
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/tandem-lb/tandem/cluster"
	"github.com/tandem-lb/tandem/hashing"
	"github.com/tandem-lb/tandem/node/api"
)

func explainConfig() *cluster.Config {
	c := &cluster.Config{
		Services: []cluster.Service{
			{Name: "a", IP: mustAddr("10.0.2.1"), Type: cluster.TypeANY, Port: 0, USIP: true},
			{Name: "b", IP: mustAddr("10.0.2.2"), Type: cluster.TypeANY, Port: 0, USIP: true},
			{Name: "d", IP: mustAddr("10.0.2.4"), Type: cluster.TypeUDP, Port: 53, USIP: true},
		},
		VServers: []cluster.VServer{
			{Name: "wild", Type: cluster.TypeANY, VIP: mustAddr("203.0.113.1"), Port: 0, LBMethod: cluster.MethodRoundRobin, Persistence: cluster.PersistSourceIP, ConnFailover: cluster.FailoverStateless},
			{Name: "web", Type: cluster.TypeTCP, VIP: mustAddr("203.0.113.1"), Port: 80, LBMethod: cluster.MethodRoundRobin},
			{Name: "dns", Type: cluster.TypeUDP, VIP: mustAddr("203.0.113.1"), Port: 53, LBMethod: cluster.MethodSourceIPHash},
		},
		Bindings: []cluster.Binding{{VServer: "wild", Service: "a", Weight: 1}, {VServer: "wild", Service: "b", Weight: 1}, {VServer: "dns", Service: "d", Weight: 1}},
	}
	c.Normalize()
	return c
}

func TestExplainMatching(t *testing.T) {
	c := explainConfig()
	tables := []api.Table{
		{VServer: "wild", Epoch: 7, Seed: hashing.VServerSeed("wild"), WithPort: false, Backends: []string{"a", "b"}, Slots: []uint32{0, 1, 1, 0, 1, 0, 0}},
		{VServer: "dns", Epoch: 2, Seed: hashing.VServerSeed("dns"), Backends: []string{"d"}},
	}
	src := netip.MustParseAddrPort("198.51.100.7:40000")
	for _, tc := range []struct {
		dst, proto, vserver, mode string
	}{
		{"203.0.113.1:80", "TCP", "web", "owner"},    // exact port before *
		{"203.0.113.1:80", "UDP", "wild", "table"},   // web is TCP only: ANY * takes UDP
		{"203.0.113.1:53", "UDP", "dns", "table"},    // exact UDP
		{"203.0.113.1:53", "TCP", "wild", "table"},   // dns is UDP only
		{"203.0.113.1:9999", "TCP", "wild", "table"}, // any port
		{"[::ffff:203.0.113.1]:9999", "TCP", "wild", "table"},
	} {
		ex, err := api.Explain(c, tables, api.ClusterStatus{}, api.ExplainRequest{Src: src, Dst: netip.MustParseAddrPort(tc.dst), Proto: tc.proto})
		if err != nil {
			t.Fatalf("%s %s: %v", tc.dst, tc.proto, err)
		}
		if ex.VServer != tc.vserver || ex.Mode != tc.mode {
			t.Errorf("%s %s: vserver %s mode %s, want %s %s", tc.dst, tc.proto, ex.VServer, ex.Mode, tc.vserver, tc.mode)
		}
	}
	// SOURCEIP persistence: a source-IP table, the port does not count, and
	// a "*" service keeps the client's destination port.
	ex1, _ := api.Explain(c, tables, api.ClusterStatus{}, api.ExplainRequest{Src: src, Dst: netip.MustParseAddrPort("203.0.113.1:9999"), Proto: "TCP"})
	ex2, _ := api.Explain(c, tables, api.ClusterStatus{}, api.ExplainRequest{Src: netip.MustParseAddrPort("198.51.100.7:1"), Dst: netip.MustParseAddrPort("203.0.113.1:9999"), Proto: "TCP"})
	h := hashing.PacketHash(hashing.VServerSeed("wild"), src.Addr(), 0, false)
	want := []string{"a", "b"}[tables[0].Slots[h%7]]
	if ex1.WithPort || ex1.Hash != h || ex1.Service != want || ex2.Service != want || ex1.Epoch != 7 {
		t.Errorf("SOURCEIP explain: %+v; want hash %x service %s epoch 7", ex1, h, want)
	}
	if ex1.Backend.Port() != 9999 {
		t.Errorf("a * service's backend port is %d, want the destination port 9999", ex1.Backend.Port())
	}
	// An empty table: no backend, and a note saying why.
	ex, _ := api.Explain(c, tables, api.ClusterStatus{}, api.ExplainRequest{Src: src, Dst: netip.MustParseAddrPort("203.0.113.1:53"), Proto: "UDP"})
	if ex.Service != "" || !strings.Contains(strings.Join(ex.Notes, ";"), "no UP backend") {
		t.Errorf("empty table: %+v", ex)
	}
	// Owner mode without pairs: nobody owns the flow, and it says so.
	ex, _ = api.Explain(c, tables, api.ClusterStatus{}, api.ExplainRequest{Src: src, Dst: netip.MustParseAddrPort("203.0.113.1:80"), Proto: "TCP"})
	if ex.OwnerNode != "" || !strings.Contains(strings.Join(ex.Notes, ";"), "nobody owns") {
		t.Errorf("owner mode without pairs: %+v", ex)
	}
}

func FuzzExplain(f *testing.F) {
	f.Add([]byte{198, 51, 100, 7}, uint16(40000), []byte{203, 0, 113, 1}, uint16(80), "TCP", uint8(3))
	f.Add([]byte{32, 1, 13, 184, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7}, uint16(1), []byte{203, 0, 113, 1}, uint16(53), "udp", uint8(0))
	f.Add([]byte{}, uint16(0), []byte{203, 0, 113, 1}, uint16(0), "SCTP", uint8(9))
	c := explainConfig()
	f.Fuzz(func(t *testing.T, src []byte, sport uint16, dst []byte, dport uint16, proto string, slotIndex uint8) {
		s, _ := netip.AddrFromSlice(src)
		d, _ := netip.AddrFromSlice(dst)
		// Slots may hold an index beyond the backends (a corrupt table):
		// Explain must say so, never panic.
		tables := []api.Table{{VServer: "wild", Seed: 1, Backends: []string{"a", "b"}, Slots: []uint32{0, uint32(slotIndex), 1}}}
		st := api.ClusterStatus{Members: []api.Member{{ID: "n1", State: api.MemberAlive}}, Pairs: []api.Pair{{ID: 1, Members: []string{"n1"}, Active: "n1"}}}
		ex, err := api.Explain(c, tables, st, api.ExplainRequest{Src: netip.AddrPortFrom(s, sport), Dst: netip.AddrPortFrom(d, dport), Proto: proto})
		if err != nil {
			return
		}
		if ex.Service != "" && ex.Service != "a" && ex.Service != "b" && ex.Service != "d" {
			t.Fatalf("explain chose unknown service %q", ex.Service)
		}
		if ex.Mode == "table" && ex.TableLen > 0 && ex.Slot >= uint32(ex.TableLen) {
			t.Fatalf("slot %d beyond table length %d", ex.Slot, ex.TableLen)
		}
	})
}

func BenchmarkExplain(b *testing.B) {
	c := explainConfig()
	slots, _ := hashing.BuildMaglev([]hashing.Backend{{Key: "a", Weight: 1}, {Key: "b", Weight: 1}}, hashing.DefaultTableSize)
	tables := []api.Table{{VServer: "wild", Seed: hashing.VServerSeed("wild"), Backends: []string{"a", "b"}, Slots: slots}}
	req := api.ExplainRequest{Src: netip.MustParseAddrPort("198.51.100.7:40000"), Dst: netip.MustParseAddrPort("203.0.113.1:9999"), Proto: "TCP"}
	for b.Loop() {
		if _, err := api.Explain(c, tables, api.ClusterStatus{}, req); err != nil {
			b.Fatal(err)
		}
	}
}

// TestConcurrentVerbs: the store serialises updates, so of many clients
// adding the same name exactly one wins and the rest get 409, while adds of
// distinct names all land.
func TestConcurrentVerbs(t *testing.T) {
	f := newFixture(t)
	c := ctx(t)
	const n = 16
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, errs[i] = f.client.AddService(c, cluster.Service{Name: "same", IP: mustAddr("10.0.5.1"), Type: cluster.TypeANY, Port: uint16(1000 + i)})
		}()
		go func() {
			defer wg.Done()
			ip := netip.AddrFrom4([4]byte{10, 0, 6, byte(i + 1)})
			if _, err := f.client.AddService(c, cluster.Service{Name: "svc" + ip.String(), IP: ip, Type: cluster.TypeANY, Port: 80}); err != nil {
				t.Errorf("add distinct service: %v", err)
			}
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !strings.Contains(err.Error(), "already exists"):
			t.Errorf("losing add: %v, want already exists", err)
		}
	}
	if won != 1 {
		t.Errorf("%d adds of the same name succeeded, want 1", won)
	}
	if got := len(f.store.Config().Services); got != n+1 {
		t.Errorf("store holds %d services, want %d", got, n+1)
	}
}
