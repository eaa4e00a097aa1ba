package node

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/tandem-lb/tandem/cluster"
	"github.com/tandem-lb/tandem/cluster/mirror"
	"github.com/tandem-lb/tandem/flow"
	"github.com/tandem-lb/tandem/flow/alg"
	"github.com/tandem-lb/tandem/test/netns"
)

// tcpFrameV4 is an Ethernet/IPv4/TCP frame with a payload (checksums are
// not checked by the program).
func tcpFrameV4(src, dst netip.AddrPort, flags byte, payload []byte) []byte {
	b := make([]byte, 14+20+20+len(payload))
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(40+len(payload)))
	ip[8], ip[9] = 64, 6
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	tcp := ip[20:]
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	tcp[12], tcp[13] = 5<<4, flags
	copy(tcp[20:], payload)
	return b
}

// TestStatefulWiringFTP: the FTP ALG's expectations go through the node's
// stateful wiring like flows. a owns the pair; its program reads a 227
// reply on an FTP control connection and makes an expectation; the events
// ring and the mirroring link carry it, with the control flow, to b's
// standby store; a dies; b's takeover installs the control flow into its
// flow table and the expectation into its expectations table, so that the
// client's data connection, opened after a died, would find its backend
// at b.
func TestStatefulWiringFTP(t *testing.T) {
	netns.RequireRoot(t)
	// The programs run in a namespace with a route to the backend and the
	// client (no neighbours: packets pass to the kernel after rewriting,
	// which lets the ALG read them).
	ns := netns.New(t)
	netns.Veth(t, ns, "tfw0", ns, "tfw1")
	ns.Sysctl("net.ipv4.ip_forward", "1")
	for _, c := range [][]string{
		{"ip", "addr", "add", "10.78.0.1/24", "dev", "tfw0"},
		{"ip", "route", "add", "10.79.0.0/16", "via", "10.78.0.2"},
	} {
		if out, err := ns.Run(c[0], c[1:]...); err != nil {
			t.Fatalf("%v: %v: %s", c, err, out)
		}
	}
	pa, pb := freePort(t), freePort(t)
	fc := &pairCluster{members: map[string]*cluster.MemberStatus{
		"a": {ID: "a", State: "alive", Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), freePort(t)), Backplane: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), pa)},
		"b": {ID: "b", State: "alive", Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), freePort(t)), Backplane: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), pb)},
	}}
	vip := netip.MustParseAddrPort("10.77.0.1:21")
	be := netip.MustParseAddrPort("10.78.0.10:21")
	newDP := func() *flow.Datapath {
		d, err := flow.New(flow.Config{TableSize: 251, MaxVServers: 4, FlowTableSize: 4096, EventRingSize: 1 << 16})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		for _, err := range []error{
			d.SetBackend(flow.Backend{ID: 1, Addr: be.Addr(), Port: be.Port()}),
			d.SetVServer(flow.VServer{ID: 0, VIP: vip.Addr(), Port: vip.Port(), Protocol: flow.ProtoTCP, Method: flow.MethodRoundRobin, Owned: true, Mirror: true, FTP: true}),
			d.SetVServerBackends(0, []uint32{1}),
			d.SetReverse(flow.Reverse{Addr: be.Addr(), Port: be.Port(), Protocol: flow.ProtoTCP, VServerID: 0, BackendID: 1, Stateful: true}),
		} {
			if err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	dpA, dpB := newDP(), newDP()
	psk := MirrorPSK(make([]byte, 32))
	start := func(self string, d *flow.Datapath, port uint16) (*Stateful, context.CancelFunc, chan struct{}) {
		s, err := NewStateful(StatefulConfig{
			Self: self, Listen: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port),
			Auth: mirror.Auth{PSK: psk}, Tick: 20 * time.Millisecond,
			Logger: slog.Default().With("node", self),
		}, d, view{fc, self}, fixedIDs{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := s.Run(ctx); err != nil {
				t.Errorf("%s: %v", self, err)
			}
		}()
		t.Cleanup(func() { cancel(); <-done })
		return s, cancel, done
	}
	sa, cancelA, doneA := start("a", dpA, pa)
	sb, _, _ := start("b", dpB, pb)
	streaming := func(s *Stateful) bool {
		r := s.RPCNodes()
		return len(r) == 1 && r[0].Authenticated && r[0].State == "streaming"
	}
	waitWithin(t, 5*time.Second, "a mirrors to b", func() bool { return streaming(sa) && streaming(sb) })

	run := func(frame []byte) uint32 {
		var v uint32
		if err := ns.Do(func() error {
			var err error
			v, err = dpA.Program().Run(&ebpf.RunOptions{Data: frame})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return v
	}
	client := netip.MustParseAddrPort("10.79.0.5:40000")
	v1 := run(tcpFrameV4(client, vip, 0x02, nil)) // SYN: the control flow
	v2 := run(tcpFrameV4(be, client, 0x10, []byte("227 Entering Passive Mode (10,77,0,1,117,49).\r\n")))
	xs, err := dpA.Expectations()
	if err != nil || len(xs) != 1 || xs[0].Kind != alg.KindPASV || xs[0].DstPort != 30001 {
		r, _ := dpA.Reasons()
		ac, _ := dpA.ALGCounters()
		t.Fatalf("a's expectations %+v (%v), want the 227's (verdicts %d %d, reasons %v, ALG %+v)", xs, err, v1, v2, r, ac)
	}
	waitWithin(t, 5*time.Second, "b holds the control flow and the expectation", func() bool {
		r := sb.RPCNodes()
		return len(r) == 1 && r[0].Mirrored >= 2
	})

	cancelA() // a dies
	<-doneA
	waitWithin(t, 5*time.Second, "b installs a's flow and expectation", func() bool {
		f, err := dpB.LookupFlow(flow.FlowKey{Src: client, Dst: vip, Protocol: flow.ProtoTCP})
		if err != nil || f.Flags&flow.FlowFlagInstalled == 0 {
			return false
		}
		xs, err := dpB.Expectations()
		return err == nil && len(xs) == 1
	})
	xs, _ = dpB.Expectations()
	x := xs[0]
	if x.Kind != alg.KindPASV || x.Src != client.Addr() || x.Dst != vip.Addr() || x.DstPort != 30001 ||
		x.To != netip.AddrPortFrom(be.Addr(), 30001) || x.VServerID != 0 || x.BackendID != dpB.DataBackendID(1) {
		t.Errorf("b's expectation %+v", x)
	}
	if rem := x.Remaining(); rem <= 0 || rem > 30*time.Second {
		t.Errorf("b's expectation expires in %v", rem)
	}
}
