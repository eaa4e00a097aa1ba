package flow

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
)

const (
	xdpAborted  = 0
	xdpDrop     = 1
	xdpPass     = 2
	xdpTX       = 3
	xdpRedirect = 4
)

func verdictName(v uint32) string {
	return [...]string{"ABORTED", "DROP", "PASS", "TX", "REDIRECT", "?"}[min(v, 5)]
}

func diffFrames(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Errorf("%s: frame differs\n got: %s\nwant: %s", what, hex.EncodeToString(got), hex.EncodeToString(want))
		for i := 0; i < len(got) && i < len(want); i++ {
			if got[i] != want[i] {
				t.Errorf("first difference at byte %d: got %#02x want %#02x", i, got[i], want[i])
				break
			}
		}
	}
}

func backendAddrPort(t *testing.T, d *Datapath, id uint32, keepPort uint16) netip.AddrPort {
	t.Helper()
	d.mu.Lock()
	b, ok := d.backends[id]
	d.mu.Unlock()
	if !ok {
		t.Fatalf("backend %d not set", id)
	}
	port := b.Port
	if port == 0 {
		port = keepPort
	}
	return netip.AddrPortFrom(b.Addr, port)
}

// TestForward sends client -> VIP packets of every shape and checks the
// verdict, every byte of the rewritten frame (against a frame built from
// scratch with the backend as destination), the flow entry and the counters;
// then sends the packet again and checks it is forwarded the same way on a
// flow-table hit.
func TestForward(t *testing.T) {
	e := newEnv(t, Config{})
	e.standard()
	hbh := []byte{protoTCP, 0, 1, 4, 0, 0, 0, 0} // hop-by-hop, PadN, next TCP
	dst := []byte{protoUDP, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	cases := []struct {
		name string
		vs   uint32
		p    flowPacket
	}{
		{"ipv4 tcp", vsWeb4, flowPacket{src: ap("10.2.0.5:40000"), dst: ap("10.100.0.1:80"), proto: protoTCP, payload: []byte("hello")}},
		{"ipv4 tcp other client", vsWeb4, flowPacket{src: ap("198.51.100.77:1234"), dst: ap("10.100.0.1:80"), proto: protoTCP}},
		{"ipv4 tcp options", vsWeb4, flowPacket{src: ap("10.2.0.5:40001"), dst: ap("10.100.0.1:80"), proto: protoTCP,
			ip: ipOpts{options: []byte{0x94, 4, 0, 0, 1, 1, 1, 0}}}},
		{"ipv4 tcp vlan", vsWeb4, flowPacket{vlans: []uint16{100}, src: ap("10.2.0.5:40002"), dst: ap("10.100.0.1:80"), proto: protoTCP}},
		{"ipv4 tcp qinq", vsWeb4, flowPacket{vlans: []uint16{200, 100}, src: ap("10.2.0.5:40003"), dst: ap("10.100.0.1:80"), proto: protoTCP}},
		{"ipv4 udp", vsDNS4, flowPacket{src: ap("10.2.0.5:5000"), dst: ap("10.100.0.1:53"), proto: protoUDP, payload: []byte("query")}},
		{"ipv4 udp no checksum", vsDNS4, flowPacket{src: ap("10.2.0.6:5000"), dst: ap("10.100.0.1:53"), proto: protoUDP, payload: []byte("q"), udpNoCsum: true}},
		{"ipv4 wildcard port", vsAll4, flowPacket{src: ap("10.2.0.5:5555"), dst: ap("10.100.0.2:7777"), proto: protoUDP, payload: []byte("x")}},
		{"ipv4 wildcard port tcp", vsAll4, flowPacket{src: ap("10.2.0.5:5556"), dst: ap("10.100.0.2:22"), proto: protoTCP}},
		{"ipv6 tcp", vsWeb6, flowPacket{src: ap("[fd02::5]:40000"), dst: ap("[fd64::1]:443"), proto: protoTCP, payload: []byte("hi6")}},
		{"ipv6 udp", vsWeb6, flowPacket{src: ap("[2001:db8::77]:40001"), dst: ap("[fd64::1]:443"), proto: protoUDP, payload: []byte("quic")}},
		{"ipv6 tcp vlan hop-by-hop", vsWeb6, flowPacket{vlans: []uint16{7}, src: ap("[fd02::5]:40002"), dst: ap("[fd64::1]:443"), proto: protoTCP,
			ip: ipOpts{ext6: hbh, ext6Next: 0}}},
		{"ipv6 udp dest options", vsWeb6, flowPacket{src: ap("[fd02::5]:40003"), dst: ap("[fd64::1]:443"), proto: protoUDP,
			ip: ipOpts{ext6: dst, ext6Next: 60}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.p.dstMAC, c.p.srcMAC = e.macB, e.routerMAC
			in := c.p.frame()
			before := e.reasons()
			beID := e.expectBackend(c.vs, c.p.src)
			be := backendAddrPort(t, e.dp, beID, c.p.dst.Port())

			want := c.p
			want.dst = be
			want.dstMAC, want.srcMAC = neighMACFor(be.Addr()), e.macA
			wantFrame := want.frame()

			for i, reason := range []Reason{ReasonFwdNew, ReasonFwdHit} {
				v, out := e.run(in)
				if v != xdpRedirect {
					t.Fatalf("packet %d: verdict %s, want REDIRECT (reasons %v)", i, verdictName(v), e.reasons())
				}
				diffFrames(t, c.name, out, wantFrame)
				after := e.reasons()
				if after[reason] != before[reason]+1 {
					t.Errorf("packet %d: reason %s counted %d -> %d, want +1", i, reason, before[reason], after[reason])
				}
				before = after
			}
			proto := ProtoTCP
			if c.p.proto == protoUDP {
				proto = ProtoUDP
			}
			f, err := e.dp.LookupFlow(FlowKey{Src: c.p.src, Dst: c.p.dst, Protocol: proto})
			if err != nil {
				t.Fatalf("flow entry: %v", err)
			}
			_, epoch, _ := e.dp.Table(c.vs)
			if f.BackendID != beID || f.VServerID != c.vs || f.Epoch != epoch || f.Flags != FlowFlagStateless || f.Created == 0 {
				t.Errorf("flow entry %+v, want backend %d vserver %d epoch %d", f, beID, c.vs, epoch)
			}
		})
	}
	// Two packets per case, one new flow per case, per vserver and backend.
	c, err := e.dp.VServerCounters(vsWeb4)
	if err != nil {
		t.Fatal(err)
	}
	if c.Packets != 10 || c.NewFlows != 5 || c.Reasons[ReasonFwdNew] != 5 || c.Reasons[ReasonFwdHit] != 5 {
		t.Errorf("vserver %d counters %+v, want 10 packets, 5 new flows", vsWeb4, c)
	}
	var sum Counters
	var forwarded uint64 // by the backends' reasons
	for _, id := range []uint32{1, 2} {
		b, err := e.dp.BackendCounters(id)
		if err != nil {
			t.Fatal(err)
		}
		sum.Packets += b.Packets
		sum.NewFlows += b.NewFlows
		sum.Bytes += b.Bytes
		forwarded += b.Reasons[ReasonFwdNew] + b.Reasons[ReasonFwdHit]
	}
	if sum.Packets != 10 || sum.NewFlows != 5 || sum.Bytes != c.Bytes || forwarded != 10 {
		t.Errorf("backends 1+2 counters %+v (%d forwarded by reason), vserver bytes %d", sum, forwarded, c.Bytes)
	}
	flows, err := e.dp.Flows()
	if err != nil {
		t.Fatal(err)
	}
	if len(flows) != len(cases) {
		t.Errorf("Flows() = %d entries, want %d", len(flows), len(cases))
	}
}

// TestReverse sends backend -> client packets and checks that the source is
// rewritten back to VIP:vport with no flow state.
func TestReverse(t *testing.T) {
	e := newEnv(t, Config{})
	e.standard()
	cases := []struct {
		name string
		vs   uint32
		p    flowPacket
		vip  netip.AddrPort
		mac  byte
	}{
		{"ipv4 tcp", vsWeb4, flowPacket{src: ap("10.1.0.10:8080"), dst: ap("10.2.0.5:40000"), proto: protoTCP, payload: []byte("reply")}, ap("10.100.0.1:80"), 0x05},
		{"ipv4 tcp far client", vsWeb4, flowPacket{src: ap("10.1.0.11:8080"), dst: ap("198.51.100.7:40000"), proto: protoTCP}, ap("10.100.0.1:80"), 0x09},
		{"ipv4 udp", vsDNS4, flowPacket{src: ap("10.1.0.11:5353"), dst: ap("10.2.0.5:5000"), proto: protoUDP, payload: []byte("answer")}, ap("10.100.0.1:53"), 0x05},
		{"ipv4 wildcard service", vsAll4, flowPacket{src: ap("10.1.0.10:7777"), dst: ap("10.2.0.5:5555"), proto: protoUDP, payload: []byte("x")}, ap("10.100.0.2:7777"), 0x05},
		{"ipv4 vlan", vsWeb4, flowPacket{vlans: []uint16{5}, src: ap("10.1.0.10:8080"), dst: ap("10.2.0.5:40001"), proto: protoTCP}, ap("10.100.0.1:80"), 0x05},
		{"ipv6 tcp", vsWeb6, flowPacket{src: ap("[fd01::10]:8443"), dst: ap("[fd02::5]:40000"), proto: protoTCP, payload: []byte("r6")}, ap("[fd64::1]:443"), 0x05},
		{"ipv6 udp", vsWeb6, flowPacket{src: ap("[fd01::11]:8443"), dst: ap("[2001:db8::77]:40001"), proto: protoUDP, payload: []byte("r6")}, ap("[fd64::1]:443"), 0x09},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.p.dstMAC, c.p.srcMAC = e.macA, neighMAC(0x10)
			want := c.p
			want.src = c.vip
			want.dstMAC, want.srcMAC = neighMAC(c.mac), e.macB
			before := e.reasons()
			v, out := e.run(c.p.frame())
			if v != xdpRedirect {
				t.Fatalf("verdict %s, want REDIRECT (reasons %v)", verdictName(v), e.reasons())
			}
			diffFrames(t, c.name, out, want.frame())
			if after := e.reasons(); after[ReasonFwdReverse] != before[ReasonFwdReverse]+1 {
				t.Errorf("fwd_reverse not counted: %v", after)
			}
		})
	}
	flows, err := e.dp.Flows()
	if err != nil || len(flows) != 0 {
		t.Errorf("reverse path made flows: %v %v", flows, err)
	}
	c, err := e.dp.VServerCounters(vsWeb4)
	if err != nil || c.RevPackets != 3 || c.Packets != 0 {
		t.Errorf("vserver counters %+v %v, want 3 reverse packets", c, err)
	}
	b, err := e.dp.BackendCounters(1)
	if err != nil || b.RevPackets != 2 {
		t.Errorf("backend 1 counters %+v %v, want 2 reverse packets", b, err)
	}
}

// TestPassUntouched: traffic neither for a VIP nor from a bound service
// passes, byte for byte unchanged, and is counted.
func TestPassUntouched(t *testing.T) {
	e := newEnv(t, Config{})
	e.standard()
	arp := ethFrame(e.macB, e.routerMAC, nil, ethARP, make([]byte, 28))
	cases := []struct {
		name   string
		frame  []byte
		reason Reason
	}{
		{"arp", arp, ReasonPassNotIP},
		{"ipv4 other host", flowPacket{src: ap("10.2.0.5:1000"), dst: ap("10.2.0.1:22"), proto: protoTCP}.frame(), ReasonPassNotOurs},
		{"ipv4 vip other port", flowPacket{src: ap("10.2.0.5:1000"), dst: ap("10.100.0.1:22"), proto: protoTCP}.frame(), ReasonPassVIPNoVServer},
		{"ipv4 vip other proto", flowPacket{src: ap("10.2.0.5:1000"), dst: ap("10.100.0.1:80"), proto: protoUDP}.frame(), ReasonPassVIPNoVServer},
		{"ipv4 backend other port", flowPacket{src: ap("10.1.0.11:22"), dst: ap("10.2.0.5:1000"), proto: protoTCP}.frame(), ReasonPassNotOurs},
		{"ipv6 other host", flowPacket{src: ap("[fd02::5]:1000"), dst: ap("[fd02::1]:22"), proto: protoUDP}.frame(), ReasonPassNotOurs},
		{"ipv4 icmp echo to vip", ethFrame(e.macB, e.routerMAC, nil, ethIPv4, ipPacket(ip("10.2.0.5"), ip("10.100.0.1"), protoICMP, []byte{8, 0, 0xf7, 0xff, 0, 0, 0, 0}, ipOpts{})), ReasonPassVIPNoVServer},
		{"ipv4 gre", ethFrame(e.macB, e.routerMAC, nil, ethIPv4, ipPacket(ip("10.2.0.5"), ip("10.2.0.1"), 47, make([]byte, 8), ipOpts{})), ReasonPassNotOurs},
		{"not stateless", flowPacket{src: ap("10.2.0.5:1000"), dst: ap("10.100.0.4:80"), proto: protoTCP}.frame(), ReasonPassNotStateless},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := e.reasons()
			v, out := e.run(c.frame)
			if v != xdpPass {
				t.Fatalf("verdict %s, want PASS", verdictName(v))
			}
			diffFrames(t, c.name, out, c.frame)
			if after := e.reasons(); after[c.reason] != before[c.reason]+1 {
				t.Errorf("reason %s not counted: %v", c.reason, after)
			}
		})
	}
}

// TestDropsAndNoNeigh: the vserver cases that do not forward.
func TestDropsAndNoNeigh(t *testing.T) {
	e := newEnv(t, Config{})
	e.standard()

	t.Run("no neighbour", func(t *testing.T) {
		p := flowPacket{dstMAC: e.macB, srcMAC: e.routerMAC, src: ap("10.2.0.5:40000"), dst: ap("10.100.0.3:80"), proto: protoTCP}
		want := p
		want.dst = ap("10.1.0.99:8080")
		v, out := e.run(p.frame())
		if v != xdpPass {
			t.Fatalf("verdict %s, want PASS", verdictName(v))
		}
		// The kernel gets the rewritten packet to forward it and resolve
		// the neighbour; the MACs are left as they came.
		diffFrames(t, "no neighbour", out, want.frame())
		c, _ := e.dp.VServerCounters(vsNoNb)
		if c.Reasons[ReasonPassNoNeigh] != 1 {
			t.Errorf("pass_no_neigh not counted: %+v", c)
		}
		if b, _ := e.dp.BackendCounters(6); b.Reasons[ReasonPassNoNeigh] != 1 {
			t.Errorf("pass_no_neigh not counted for backend 6: %+v", b)
		}
	})
	for _, c := range []struct {
		name   string
		vs     uint32
		p      flowPacket
		reason Reason
	}{
		{"dsr reserved", vsDSR, flowPacket{src: ap("10.2.0.5:1"), dst: ap("10.100.0.5:80"), proto: protoTCP}, ReasonDropUnsupported},
		{"empty table", vsEmpty, flowPacket{src: ap("10.2.0.5:1"), dst: ap("10.100.0.6:80"), proto: protoTCP}, ReasonDropNoBackend},
	} {
		t.Run(c.name, func(t *testing.T) {
			v, _ := e.run(c.p.frame())
			if v != xdpDrop {
				t.Fatalf("verdict %s, want DROP", verdictName(v))
			}
			cs, _ := e.dp.VServerCounters(c.vs)
			if cs.Reasons[c.reason] != 1 {
				t.Errorf("%s not counted: %+v", c.reason, cs)
			}
		})
	}
	t.Run("no route", func(t *testing.T) {
		e.must(e.dp.SetBackend(Backend{ID: 8, Addr: ip("192.0.2.1"), Port: 80}))
		slots := make([]uint32, e.dp.Config().TableSize)
		for i := range slots {
			slots[i] = 8
		}
		// 192.0.2.1 routes via the default route towards clients: make it
		// unreachable instead.
		if out, err := e.ns.Run("ip", "route", "add", "unreachable", "192.0.2.0/24"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		_, err := e.dp.SetTable(vsEmpty, slots)
		e.must(err)
		v, _ := e.run(flowPacket{src: ap("10.2.0.5:2"), dst: ap("10.100.0.6:80"), proto: protoTCP}.frame())
		if v != xdpDrop {
			t.Fatalf("verdict %s, want DROP", verdictName(v))
		}
		if r := e.reasons(); r[ReasonDropFIB] != 1 {
			t.Errorf("drop_fib not counted: %v", r)
		}
	})
}

// TestTableFlip checks double buffering: epochs, the active table read back,
// established flows staying on their backend and new flows using the new
// table.
func TestTableFlip(t *testing.T) {
	e := newEnv(t, Config{})
	e.standard()
	m := e.dp.Config().TableSize
	all := func(id uint32) []uint32 {
		s := make([]uint32, m)
		for i := range s {
			s[i] = id
		}
		return s
	}
	_, epoch0, err := e.dp.Table(vsWeb4)
	e.must(err)
	ep, err := e.dp.SetTable(vsWeb4, all(1))
	e.must(err)
	if ep != epoch0+1 {
		t.Errorf("epoch %d after %d", ep, epoch0)
	}
	old := flowPacket{dstMAC: e.macB, srcMAC: e.routerMAC, src: ap("10.2.0.5:1111"), dst: ap("10.100.0.1:80"), proto: protoTCP}
	if v, out := e.run(old.frame()); v != xdpRedirect || !bytes.Equal(out[30:34], []byte{10, 1, 0, 10}) {
		t.Fatalf("first flow: verdict %s dst %v", verdictName(v), net.IP(out[30:34]))
	}
	ep2, err := e.dp.SetTable(vsWeb4, all(2))
	e.must(err)
	slots, got, err := e.dp.Table(vsWeb4)
	e.must(err)
	if got != ep2 || ep2 != ep+1 || slots[0] != 2 || slots[m-1] != 2 {
		t.Errorf("Table() = epoch %d slot0 %d, want epoch %d all 2", got, slots[0], ep2)
	}
	if v, out := e.run(old.frame()); v != xdpRedirect || !bytes.Equal(out[30:34], []byte{10, 1, 0, 10}) {
		t.Errorf("established flow moved: verdict %s dst %v", verdictName(v), net.IP(out[30:34]))
	}
	nw := old
	nw.src = ap("10.2.0.5:2222")
	if v, out := e.run(nw.frame()); v != xdpRedirect || !bytes.Equal(out[30:34], []byte{10, 1, 0, 11}) {
		t.Errorf("new flow: verdict %s dst %v, want 10.1.0.11", verdictName(v), net.IP(out[30:34]))
	}
	f, err := e.dp.LookupFlow(FlowKey{Src: nw.src, Dst: nw.dst, Protocol: ProtoTCP})
	e.must(err)
	if f.Epoch != ep2 || f.BackendID != 2 {
		t.Errorf("new flow entry %+v, want epoch %d backend 2", f, ep2)
	}
	// A deleted backend: flows re-pick from the table.
	e.must(e.dp.DeleteFlow(FlowKey{Src: nw.src, Dst: nw.dst, Protocol: ProtoTCP}))
	if _, err := e.dp.LookupFlow(FlowKey{Src: nw.src, Dst: nw.dst, Protocol: ProtoTCP}); !errors.Is(err, ErrFlowNotFound) {
		t.Errorf("after DeleteFlow: %v", err)
	}
}

// TestAPIErrors checks the refusals of the control-plane API.
func TestAPIErrors(t *testing.T) {
	d := newDatapath(t, Config{TableSize: 13, MaxVServers: 2, MaxBackends: 4})
	if err := d.SetVServer(VServer{ID: 2, VIP: ip("10.0.0.1"), Method: MethodSourceIP}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("vserver id out of range: %v", err)
	}
	if err := d.SetVServer(VServer{ID: 0, Method: MethodSourceIP}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("vserver without VIP: %v", err)
	}
	if err := d.SetBackend(Backend{ID: 0, Addr: ip("10.0.0.2")}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("backend id 0: %v", err)
	}
	if _, err := d.SetTable(1, make([]uint32, 13)); !errors.Is(err, ErrUnknownVServer) {
		t.Errorf("table of unknown vserver: %v", err)
	}
	if err := d.SetVServer(VServer{ID: 1, VIP: ip("10.0.0.1"), Port: 80, Protocol: ProtoTCP, Method: MethodSourceIP, Stateless: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.SetTable(1, make([]uint32, 12)); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("short table: %v", err)
	}
	bad := make([]uint32, 13)
	bad[3] = 3
	if _, err := d.SetTable(1, bad); !errors.Is(err, ErrUnknownBackend) {
		t.Errorf("table naming an unknown backend: %v", err)
	}
	if err := d.SetReverse(Reverse{Addr: ip("10.0.0.2"), Port: 80, Protocol: ProtoTCP, VServerID: 0, BackendID: 1}); !errors.Is(err, ErrUnknownVServer) {
		t.Errorf("reverse to unknown vserver: %v", err)
	}
	if err := d.SetBackend(Backend{ID: 1, Addr: ip("fd00::2"), Port: 80}); err != nil {
		t.Fatal(err)
	}
	if err := d.SetReverse(Reverse{Addr: ip("fd00::2"), Port: 80, Protocol: ProtoTCP, VServerID: 1, BackendID: 1}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("reverse across IP versions: %v", err)
	}
	if err := d.DeleteVServer(0); !errors.Is(err, ErrUnknownVServer) {
		t.Errorf("delete unknown vserver: %v", err)
	}
	if _, err := d.LookupFlow(FlowKey{Src: ap("1.2.3.4:5"), Dst: ap("10.0.0.1:80"), Protocol: ProtoTCP}); !errors.Is(err, ErrFlowNotFound) {
		t.Errorf("lookup of a missing flow: %v", err)
	}
	if err := d.Detach("lo"); !errors.Is(err, ErrNotAttached) {
		t.Errorf("detach of unattached interface: %v", err)
	}
	// Deleting a vserver empties its table and its address entries.
	if _, err := d.SetTable(1, []uint32{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}); err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteVServer(1); err != nil {
		t.Fatal(err)
	}
	slots, _, err := d.Table(1)
	if err != nil || slots[5] != 0 {
		t.Errorf("table after delete: %v %v", slots, err)
	}
	var flags uint32
	k, _ := addrWords(ip("10.0.0.1"))
	if err := d.objs.Addrs.Lookup(&lbAddrKey{Addr: k, Family: familyV4}, &flags); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("VIP still known after its last vserver went: flags %d err %v", flags, err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.SetBackend(Backend{ID: 1, Addr: ip("10.0.0.2")}); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
}

// TestReverseToLocal: a bound service's reply to one of the node's own
// addresses (a health probe's SYN-ACK) is the node's: it passes untouched,
// while the same reply to a client is rewritten to the VIP.
func TestReverseToLocal(t *testing.T) {
	e := newEnv(t, Config{})
	e.standard()
	local := ap("10.2.0.5:40000")
	if err := e.dp.SetLocalAddrs([]netip.Addr{local.Addr()}); err != nil {
		t.Fatal(err)
	}
	p := flowPacket{src: ap("10.1.0.10:8080"), dst: local, proto: protoTCP, payload: []byte("probe reply")}
	p.dstMAC, p.srcMAC = e.macA, neighMAC(0x10)
	in := p.frame()
	before := e.reasons()
	v, out := e.run(in)
	if v != xdpPass {
		t.Fatalf("verdict %s, want PASS (reasons %v)", verdictName(v), e.reasons())
	}
	diffFrames(t, "to local", out, in)
	if after := e.reasons(); after[ReasonPassLocal] != before[ReasonPassLocal]+1 {
		t.Errorf("pass_local not counted: %v", after)
	}

	// Forgetting the address makes it a client again.
	if err := e.dp.SetLocalAddrs(nil); err != nil {
		t.Fatal(err)
	}
	if v, _ := e.run(in); v != xdpRedirect {
		t.Fatalf("after SetLocalAddrs(nil): verdict %s, want REDIRECT", verdictName(v))
	}
	if err := e.dp.SetLocalAddrs(make([]netip.Addr, MaxLocalAddrs+1)); err == nil {
		t.Error("SetLocalAddrs took more than MaxLocalAddrs addresses")
	}
}
