package flow

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/tandem-lb/tandem/hashing"
	"github.com/tandem-lb/tandem/test/netns"
)

// testEnv runs the program through BPF_PROG_TEST_RUN inside a namespace
// whose routes and neighbours make bpf_fib_lookup succeed:
//
//	tfa (backend side) 10.1.0.1/24 fd01::1/64, permanent neighbours for the
//	    backends 10.1.0.10, 10.1.0.11, fd01::10, fd01::11 (not 10.1.0.99)
//	tfb (client side)  10.2.0.1/24 fd02::1/64, permanent neighbours for the
//	    client 10.2.0.5 and fd02::5; every other client routes via 10.2.0.9
//	    (fd02::9), also a permanent neighbour
//
// Under test run the packet arrives on the namespace's loopback, so every
// successful lookup redirects (XDP_REDIRECT) to tfa or tfb.
type testEnv struct {
	tb        testing.TB
	ns        *netns.NetNS
	dp        *Datapath
	macA      net.HardwareAddr // our MAC towards backends
	macB      net.HardwareAddr // our MAC towards clients
	routerMAC net.HardwareAddr // the MAC frames arrive from
}

// MACs of the namespace's neighbours.
func neighMAC(last byte) net.HardwareAddr { return net.HardwareAddr{0x02, 0, 0, 0, 0xee, last} }

// neighMACFor is the MAC of a neighbour the namespace knows.
func neighMACFor(a netip.Addr) net.HardwareAddr {
	switch a.String() {
	case "10.1.0.10", "fd01::10":
		return neighMAC(0x10)
	case "10.1.0.11", "fd01::11":
		return neighMAC(0x11)
	case "10.2.0.5", "fd02::5":
		return neighMAC(0x05)
	}
	return neighMAC(0x09) // the default route towards clients
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
func ip(s string) netip.Addr     { return netip.MustParseAddr(s) }

func newEnv(tb testing.TB, cfg Config) *testEnv {
	tb.Helper()
	netns.RequireRoot(tb)
	ns := netns.New(tb)
	netns.Veth(tb, ns, "tfa", ns, "tfap")
	netns.Veth(tb, ns, "tfb", ns, "tfbp")
	ns.Sysctl("net.ipv4.ip_forward", "1")
	ns.Sysctl("net.ipv6.conf.all.forwarding", "1")
	cmds := [][]string{
		{"ip", "addr", "add", "10.1.0.1/24", "dev", "tfa"},
		{"ip", "-6", "addr", "add", "fd01::1/64", "dev", "tfa", "nodad"},
		{"ip", "addr", "add", "10.2.0.1/24", "dev", "tfb"},
		{"ip", "-6", "addr", "add", "fd02::1/64", "dev", "tfb", "nodad"},
		{"ip", "route", "add", "default", "via", "10.2.0.9", "dev", "tfb"},
		{"ip", "-6", "route", "add", "default", "via", "fd02::9", "dev", "tfb"},
		{"ip", "neigh", "add", "10.1.0.10", "lladdr", neighMAC(0x10).String(), "dev", "tfa", "nud", "permanent"},
		{"ip", "neigh", "add", "10.1.0.11", "lladdr", neighMAC(0x11).String(), "dev", "tfa", "nud", "permanent"},
		{"ip", "neigh", "add", "fd01::10", "lladdr", neighMAC(0x10).String(), "dev", "tfa", "nud", "permanent"},
		{"ip", "neigh", "add", "fd01::11", "lladdr", neighMAC(0x11).String(), "dev", "tfa", "nud", "permanent"},
		{"ip", "neigh", "add", "10.2.0.5", "lladdr", neighMAC(0x05).String(), "dev", "tfb", "nud", "permanent"},
		{"ip", "neigh", "add", "fd02::5", "lladdr", neighMAC(0x05).String(), "dev", "tfb", "nud", "permanent"},
		{"ip", "neigh", "add", "10.2.0.9", "lladdr", neighMAC(0x09).String(), "dev", "tfb", "nud", "permanent"},
		{"ip", "neigh", "add", "fd02::9", "lladdr", neighMAC(0x09).String(), "dev", "tfb", "nud", "permanent"},
	}
	for _, c := range cmds {
		if out, err := ns.Run(c[0], c[1:]...); err != nil {
			tb.Fatalf("%v: %v: %s", c, err, out)
		}
	}
	if cfg.TableSize == 0 {
		cfg.TableSize = 251
	}
	if cfg.MaxVServers == 0 {
		cfg.MaxVServers = 8
	}
	if cfg.FlowTableSize == 0 {
		cfg.FlowTableSize = 1 << 16
	}
	return &testEnv{
		tb:        tb,
		ns:        ns,
		dp:        newDatapath(tb, cfg),
		macA:      ns.Link("tfa").Attrs().HardwareAddr,
		macB:      ns.Link("tfb").Attrs().HardwareAddr,
		routerMAC: net.HardwareAddr{0x02, 0, 0, 0, 0xaa, 0x01},
	}
}

// run runs prog on frame inside the namespace and returns verdict and output.
func (e *testEnv) runProg(prog *ebpf.Program, frame []byte) (uint32, []byte) {
	e.tb.Helper()
	v, out, err := e.tryRun(prog, frame)
	if err != nil {
		e.tb.Fatalf("running program: %v", err)
	}
	return v, out
}

// tryRun is runProg returning the error, for fuzz functions.
func (e *testEnv) tryRun(prog *ebpf.Program, frame []byte) (uint32, []byte, error) {
	in := append([]byte(nil), frame...)
	out := make([]byte, len(frame)+256)
	var ret uint32
	err := e.ns.Do(func() error {
		opts := ebpf.RunOptions{Data: in, DataOut: out}
		r, err := prog.Run(&opts)
		ret, out = r, opts.DataOut
		return err
	})
	return ret, out, err
}

func (e *testEnv) run(frame []byte) (uint32, []byte) {
	e.tb.Helper()
	return e.runProg(e.dp.Program(), frame)
}

func (e *testEnv) must(err error) {
	e.tb.Helper()
	if err != nil {
		e.tb.Fatal(err)
	}
}

// Standard configuration of the forwarding tests.
const (
	vsWeb4  = 0 // 10.100.0.1:80 TCP, SRCIPSRCPORTHASH, backends 1, 2
	vsDNS4  = 1 // 10.100.0.1:53 UDP, SOURCEIPHASH, backend 7
	vsWeb6  = 2 // [fd64::1]:443 ANY, SRCIPSRCPORTHASH, backends 3, 4
	vsAll4  = 3 // 10.100.0.2:* ANY, SOURCEIPHASH, backend 5
	vsNoNb  = 4 // 10.100.0.3:80 TCP, backend 6 (no neighbour entry)
	vsFull  = 5 // 10.100.0.4:80 TCP, not stateless
	vsDSR   = 6 // 10.100.0.5:80 TCP, DSR
	vsEmpty = 7 // 10.100.0.6:80 TCP, no table
)

func (e *testEnv) standard() {
	e.tb.Helper()
	d := e.dp
	for _, b := range []Backend{
		{ID: 1, Addr: ip("10.1.0.10"), Port: 8080},
		{ID: 2, Addr: ip("10.1.0.11"), Port: 8080},
		{ID: 3, Addr: ip("fd01::10"), Port: 8443},
		{ID: 4, Addr: ip("fd01::11"), Port: 8443},
		{ID: 5, Addr: ip("10.1.0.10"), Port: 0},
		{ID: 6, Addr: ip("10.1.0.99"), Port: 8080},
		{ID: 7, Addr: ip("10.1.0.11"), Port: 5353},
	} {
		e.must(d.SetBackend(b))
	}
	vs := []VServer{
		{ID: vsWeb4, VIP: ip("10.100.0.1"), Port: 80, Protocol: ProtoTCP, Method: MethodSourceIPSourcePort, Seed: hashing.VServerSeed("web4"), Stateless: true},
		{ID: vsDNS4, VIP: ip("10.100.0.1"), Port: 53, Protocol: ProtoUDP, Method: MethodSourceIP, Seed: hashing.VServerSeed("dns4"), Stateless: true},
		{ID: vsWeb6, VIP: ip("fd64::1"), Port: 443, Protocol: ProtoAny, Method: MethodSourceIPSourcePort, Seed: hashing.VServerSeed("web6"), Stateless: true},
		{ID: vsAll4, VIP: ip("10.100.0.2"), Port: 0, Protocol: ProtoAny, Method: MethodSourceIP, Seed: hashing.VServerSeed("all4"), Stateless: true},
		{ID: vsNoNb, VIP: ip("10.100.0.3"), Port: 80, Protocol: ProtoTCP, Method: MethodSourceIP, Seed: 1, Stateless: true},
		{ID: vsFull, VIP: ip("10.100.0.4"), Port: 80, Protocol: ProtoTCP, Method: MethodSourceIP, Seed: 2},
		{ID: vsDSR, VIP: ip("10.100.0.5"), Port: 80, Protocol: ProtoTCP, Method: MethodSourceIP, Seed: 3, Mode: ModeDSR, Stateless: true},
		{ID: vsEmpty, VIP: ip("10.100.0.6"), Port: 80, Protocol: ProtoTCP, Method: MethodSourceIP, Seed: 4, Stateless: true},
	}
	for _, v := range vs {
		e.must(d.SetVServer(v))
	}
	e.setMaglev(vsWeb4, 1, 2)
	e.setMaglev(vsDNS4, 7)
	e.setMaglev(vsWeb6, 3, 4)
	e.setMaglev(vsAll4, 5)
	e.setMaglev(vsNoNb, 6)
	e.setMaglev(vsFull, 1)
	e.setMaglev(vsDSR, 1)
	for _, r := range []Reverse{
		{Addr: ip("10.1.0.10"), Port: 8080, Protocol: ProtoTCP, VServerID: vsWeb4, BackendID: 1},
		{Addr: ip("10.1.0.11"), Port: 8080, Protocol: ProtoTCP, VServerID: vsWeb4, BackendID: 2},
		{Addr: ip("10.1.0.11"), Port: 5353, Protocol: ProtoUDP, VServerID: vsDNS4, BackendID: 7},
		{Addr: ip("fd01::10"), Port: 8443, Protocol: ProtoAny, VServerID: vsWeb6, BackendID: 3},
		{Addr: ip("fd01::11"), Port: 8443, Protocol: ProtoAny, VServerID: vsWeb6, BackendID: 4},
		{Addr: ip("10.1.0.10"), Port: 0, Protocol: ProtoAny, VServerID: vsAll4, BackendID: 5},
	} {
		e.must(d.SetReverse(r))
	}
}

// setMaglev builds the vserver's table with hashing.BuildMaglev over the
// given backend ids (keyed by id) and writes it.
func (e *testEnv) setMaglev(vsID uint32, ids ...uint32) []uint32 {
	e.tb.Helper()
	var bs []hashing.Backend
	for _, id := range ids {
		bs = append(bs, hashing.Backend{Key: fmt.Sprintf("backend-%d", id), Weight: 1})
	}
	idx, err := hashing.BuildMaglev(bs, uint64(e.dp.Config().TableSize))
	if err != nil {
		e.tb.Fatal(err)
	}
	sorted := hashing.SortBackends(bs)
	byKey := make(map[string]uint32)
	for _, id := range ids {
		byKey[fmt.Sprintf("backend-%d", id)] = id
	}
	slots := make([]uint32, len(idx))
	for i, j := range idx {
		slots[i] = byKey[sorted[j].Key]
	}
	if _, err := e.dp.SetTable(vsID, slots); err != nil {
		e.tb.Fatal(err)
	}
	return slots
}

// expectBackend is the backend id the Go side predicts for a client.
func (e *testEnv) expectBackend(vsID uint32, client netip.AddrPort) uint32 {
	e.tb.Helper()
	e.dp.mu.Lock()
	v := e.dp.vservers[vsID]
	e.dp.mu.Unlock()
	slots, _, err := e.dp.Table(vsID)
	if err != nil {
		e.tb.Fatal(err)
	}
	h := hashing.PacketHash(v.Seed, client.Addr(), client.Port(), v.Method.WithPort())
	return slots[hashing.Slot(h, uint64(len(slots)))]
}

func (e *testEnv) reasons() map[Reason]uint64 {
	e.tb.Helper()
	r, err := e.dp.Reasons()
	if err != nil {
		e.tb.Fatal(err)
	}
	return r
}
