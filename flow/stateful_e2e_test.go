package flow

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tandem-lb/tandem/flow/standby"
	"github.com/tandem-lb/tandem/test/netns"
)

// TestStatefulEndToEnd carries real TCP connections of an owned,
// mirrored ROUNDROBIN vserver through two nodes of one pair, A active and
// B its partner, each with its own Datapath (two programs, two sets of
// maps), joined by a backplane:
//
//	client tsc0 --- tsr0 router tsr1 --- tsa0 A tsa1 ---+
//	                        tsr2 --- tsb0 B tsb1 ---+ (backplane)
//	                        tsr3 --- tsk0 backend
//
// The router sends the VIP and the backend's replies to B, the non-owner:
// B steers both directions to A over the backplane (Tandem's own
// encapsulation, decapsulated by A's program), A picks the backend, keeps
// the flow and reports it on its events ring. Then A dies (its programs
// detached, its links down): B installs the flows A reported (what the
// mirror would have given it) and becomes the pair's active member, and the
// same TCP connections go on through B, byte for byte.
func TestStatefulEndToEnd(t *testing.T) {
	netns.RequireRoot(t)
	client, router, backend := netns.New(t), netns.New(t), netns.New(t)
	nodeA, nodeB := netns.New(t), netns.New(t)
	all := []*netns.NetNS{client, router, backend, nodeA, nodeB}
	for _, ns := range all {
		ns.Sysctl("net.ipv4.conf.all.rp_filter", "0")
		ns.Sysctl("net.ipv4.conf.default.rp_filter", "0")
	}
	for _, ns := range []*netns.NetNS{router, nodeA, nodeB} {
		ns.Sysctl("net.ipv4.ip_forward", "1")
	}
	netns.Veth(t, client, "tsc0", router, "tsr0")
	netns.Veth(t, router, "tsr1", nodeA, "tsa0")
	netns.Veth(t, router, "tsr2", nodeB, "tsb0")
	netns.Veth(t, router, "tsr3", backend, "tsk0")
	netns.Veth(t, nodeA, "tsa1", nodeB, "tsb1")
	for _, c := range []struct {
		ns   *netns.NetNS
		args string
	}{
		{client, "addr add 10.97.1.2/24 dev tsc0"},
		{client, "route add default via 10.97.1.1"},
		{router, "addr add 10.97.1.1/24 dev tsr0"},
		{router, "addr add 10.97.2.1/24 dev tsr1"},
		{router, "addr add 10.97.3.1/24 dev tsr2"},
		{router, "addr add 10.97.4.1/24 dev tsr3"},
		{router, "route add 10.97.100.1/32 via 10.97.3.2"},
		// replies from the backend go to a node, not straight to the client
		{router, "rule add iif tsr3 lookup 100"},
		{router, "route add default via 10.97.3.2 table 100"},
		{backend, "addr add 10.97.4.2/24 dev tsk0"},
		{backend, "route add default via 10.97.4.1"},
		{nodeA, "addr add 10.97.2.2/24 dev tsa0"},
		{nodeA, "route add default via 10.97.2.1"},
		{nodeA, "addr add 10.97.9.1/24 dev tsa1"},
		{nodeB, "addr add 10.97.3.2/24 dev tsb0"},
		{nodeB, "route add default via 10.97.3.1"},
		{nodeB, "addr add 10.97.9.2/24 dev tsb1"},
	} {
		nsRun(t, c.ns, append([]string{"ip"}, strings.Fields(c.args)...)...)
	}
	// The backplane neighbours: steering needs them (the mirroring
	// connection keeps them resolved in a real cluster).
	nsRun(t, nodeA, "ip", "neigh", "replace", "10.97.9.2", "lladdr", nodeB.Link("tsb1").Attrs().HardwareAddr.String(), "dev", "tsa1", "nud", "permanent")
	nsRun(t, nodeB, "ip", "neigh", "replace", "10.97.9.1", "lladdr", nodeA.Link("tsa1").Attrs().HardwareAddr.String(), "dev", "tsb1", "nud", "permanent")
	client.DisableTxChecksum("tsc0")
	backend.DisableTxChecksum("tsk0")

	bpA, bpB := ip("10.97.9.1"), ip("10.97.9.2")
	vip := ap("10.97.100.1:80")
	beAddr := ap("10.97.4.2:8080")
	setup := func(ns *netns.NetNS, self netip.Addr, ifs ...string) *Datapath {
		d := newDatapath(t, Config{TableSize: 251, MaxVServers: 4})
		e := &testEnv{tb: t, dp: d}
		e.must(d.SetBackend(Backend{ID: 1, Addr: beAddr.Addr(), Port: beAddr.Port()}))
		e.must(d.SetVServer(VServer{ID: 0, VIP: vip.Addr(), Port: vip.Port(), Protocol: ProtoTCP, Method: MethodRoundRobin, Owned: true, Mirror: true}))
		e.must(d.SetVServerBackends(0, []uint32{1}))
		e.must(d.SetReverse(Reverse{Addr: beAddr.Addr(), Port: beAddr.Port(), Protocol: ProtoTCP, VServerID: 0, BackendID: 1, Stateful: true}))
		e.must(d.SetBackplane(self, []netip.Addr{bpA, bpB}))
		e.must(d.SetPairs([]Pair{{ID: 1, Live: true, Active: bpA, Local: self == bpA}}))
		for _, nif := range ifs {
			if err := ns.Do(func() error { return d.Attach(nif) }); err != nil {
				t.Fatalf("attaching to %s: %v", nif, err)
			}
		}
		return d
	}
	dA := setup(nodeA, bpA, "tsa0", "tsa1")
	dB := setup(nodeB, bpB, "tsb0", "tsb1")
	for _, nif := range []string{"tsr1", "tsr2"} {
		attachIn(t, router, dA.PassProgram(), nif)
	}
	events, err := dA.Events()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { events.Close() })

	// The backend answers every line with "<remote address> <line>".
	ln := backend.Listen("tcp", ":8080")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					fmt.Fprintf(c, "%s %s", c.RemoteAddr(), line)
				}
			}()
		}
	}()

	type conn struct {
		c   net.Conn
		r   *bufio.Reader
		src netip.AddrPort
	}
	exchange := func(cn *conn, msg string) {
		t.Helper()
		cn.c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := fmt.Fprintf(cn.c, "%s\n", msg); err != nil {
			t.Fatalf("%v: writing: %v", cn.src, err)
		}
		got, err := cn.r.ReadString('\n')
		if err != nil {
			t.Fatalf("%v: reading: %v (A %v, B %v)", cn.src, err, mustReasons(dA), mustReasons(dB))
		}
		if want := fmt.Sprintf("%s %s\n", cn.src, msg); got != want {
			t.Fatalf("%v: got %q, want %q", cn.src, got, want)
		}
	}
	dial := func(port uint16) *conn {
		t.Helper()
		src := netip.AddrPortFrom(ip("10.97.1.2"), port)
		var c net.Conn
		err := client.Do(func() error {
			dl := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(src), Timeout: 5 * time.Second}
			var err error
			c, err = dl.Dial("tcp", vip.String())
			return err
		})
		if err != nil {
			t.Fatalf("%v -> %v: %v (A %v, B %v)", src, vip, err, mustReasons(dA), mustReasons(dB))
		}
		t.Cleanup(func() { c.Close() })
		return &conn{c: c, r: bufio.NewReader(c), src: src}
	}

	const n = 8
	var conns []*conn
	for i := 0; i < n; i++ {
		cn := dial(uint16(31000 + i))
		exchange(cn, fmt.Sprintf("hello %d", i))
		conns = append(conns, cn)
	}
	rA, rB := mustReasons(dA), mustReasons(dB)
	t.Logf("before the takeover: A %v", rA)
	t.Logf("before the takeover: B %v", rB)
	// (the first packet A sends may go by the kernel while it resolves the
	// router's address: pass_no_neigh, not fwd_new; the vserver counters
	// count new flows either way)
	cA, err := dA.VServerCounters(0)
	if err != nil {
		t.Fatal(err)
	}
	cB, err := dB.VServerCounters(0)
	if err != nil {
		t.Fatal(err)
	}
	if rB[ReasonFwdSteer] == 0 || cA.NewFlows != n || cB.NewFlows != 0 {
		t.Errorf("B steered %d packets, A made %d flows, B %d: want B to steer and A to own all %d", rB[ReasonFwdSteer], cA.NewFlows, cB.NewFlows, n)
	}
	if rA[ReasonFwdReverse] == 0 {
		t.Errorf("A rewrote no reply")
	}

	// What A reported: one new flow per connection.
	var mirrored []standby.Entry
	for len(mirrored) < n {
		events.SetDeadline(time.Now().Add(2 * time.Second))
		ev, err := events.Read()
		if err != nil {
			t.Fatalf("after %d events: %v", len(mirrored), err)
		}
		if ev.Kind == EventNew {
			mirrored = append(mirrored, ev.Entry)
		}
	}

	// A dies: its programs detached, its links down.
	if err := dA.Close(); err != nil {
		t.Fatal(err)
	}
	nodeA.Down("tsa0")
	nodeA.Down("tsa1")
	start := time.Now()
	installed, err := dB.InstallFlows(mirrored, 1)
	if err != nil || installed != n {
		t.Fatalf("takeover installed %d of %d: %v", installed, n, err)
	}
	if err := dB.SetPairs([]Pair{{ID: 1, Live: true, Local: true, Active: bpB}}); err != nil {
		t.Fatal(err)
	}
	t.Logf("takeover of %d flows: %v", n, time.Since(start))

	for i, cn := range conns {
		exchange(cn, fmt.Sprintf("after takeover %d", i))
	}
	rB = mustReasons(dB)
	t.Logf("after the takeover: B %v", rB)
	if rB[ReasonFwdHit] == 0 || rB[ReasonFwdReverse] == 0 {
		t.Errorf("B forwarded no installed flow: %v", rB)
	}
	if c, _ := dB.VServerCounters(0); c.NewFlows != 0 {
		t.Errorf("B made %d new flows for the established connections", c.NewFlows)
	}
	// and a new connection through B alone
	exchange(dial(32000), "new after takeover")
}
