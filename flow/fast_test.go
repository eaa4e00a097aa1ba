package flow

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// hotEntries returns the hot cache's entries valid under the current
// generation.
func (e *testEnv) hotEntries() []lbHotEntry {
	e.tb.Helper()
	e.dp.mu.Lock()
	gen := e.dp.fast.gen
	e.dp.mu.Unlock()
	var (
		k   uint32
		v   lbHotEntry
		out []lbHotEntry
	)
	it := e.dp.objs.Hot.Iterate()
	for it.Next(&k, &v) {
		if v.Gen == gen {
			out = append(out, v)
		}
	}
	if err := it.Err(); err != nil {
		e.tb.Fatal(err)
	}
	return out
}

// isHot reports whether the flow of p has a valid hot entry.
func (e *testEnv) isHot(p flowPacket) bool {
	e.tb.Helper()
	src, fam := addrWords(p.src.Addr())
	dst, _ := addrWords(p.dst.Addr())
	ports := uint32(htons(p.src.Port())) | uint32(htons(p.dst.Port()))<<16
	for _, h := range e.hotEntries() {
		if h.Src == src && h.Dst == dst && h.Ports == ports && h.Proto == p.proto && h.Family == fam {
			return true
		}
	}
	return false
}

// TestHotCache: a stateless flow enters the hot cache at its second packet,
// and the packets the cache forwards (third on) are the full path's, byte
// for byte and counter for counter, over IPv4 and IPv6, TCP and UDP (with
// and without checksum).
func TestHotCache(t *testing.T) {
	// no generation tick during the test: it would empty the cache
	e := newEnv(t, Config{FIBCacheTTL: time.Hour, HotCacheSize: 1024})
	e.standard()
	cases := []struct {
		name string
		vs   uint32
		p    flowPacket
	}{
		{"ipv4 tcp", vsWeb4, flowPacket{src: ap("10.2.0.5:40000"), dst: ap("10.100.0.1:80"), proto: protoTCP, payload: []byte("hello"), tcpFlags: tcpACK}},
		{"ipv4 udp", vsDNS4, flowPacket{src: ap("10.2.0.5:5000"), dst: ap("10.100.0.1:53"), proto: protoUDP, payload: []byte("query")}},
		{"ipv4 udp no checksum", vsDNS4, flowPacket{src: ap("10.2.0.6:5000"), dst: ap("10.100.0.1:53"), proto: protoUDP, payload: []byte("q"), udpNoCsum: true}},
		{"ipv4 wildcard port", vsAll4, flowPacket{src: ap("10.2.0.5:5555"), dst: ap("10.100.0.2:7777"), proto: protoUDP, payload: []byte("x")}},
		{"ipv6 tcp", vsWeb6, flowPacket{src: ap("[fd02::5]:40000"), dst: ap("[fd64::1]:443"), proto: protoTCP, payload: []byte("hi6"), tcpFlags: tcpACK}},
		{"ipv6 udp", vsWeb6, flowPacket{src: ap("[2001:db8::77]:40001"), dst: ap("[fd64::1]:443"), proto: protoUDP, payload: []byte("quic")}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.p.dstMAC, c.p.srcMAC = e.macB, e.routerMAC
			in := c.p.frame()
			beID := e.expectBackend(c.vs, c.p.src)
			be := backendAddrPort(t, e.dp, beID, c.p.dst.Port())
			want := c.p
			want.dst = be
			want.dstMAC, want.srcMAC = neighMACFor(be.Addr()), e.macA
			wantFrame := want.frame()
			before := e.reasons()
			vsBefore, err := e.dp.VServerCounters(c.vs)
			e.must(err)
			for i, reason := range []Reason{ReasonFwdNew, ReasonFwdHit, ReasonFwdHit, ReasonFwdHit} {
				v, out := e.runOnCPU0(in)
				if v != xdpRedirect {
					t.Fatalf("packet %d: verdict %s, want REDIRECT", i, verdictName(v))
				}
				diffFrames(t, c.name, out, wantFrame)
				after := e.reasons()
				if after[reason] != before[reason]+1 {
					t.Errorf("packet %d: reason %s counted %d -> %d, want +1", i, reason, before[reason], after[reason])
				}
				before = after
				if hot := e.isHot(c.p); hot != (i > 0) {
					t.Errorf("after packet %d: hot entry %v, want %v", i, hot, i > 0)
				}
			}
			vsAfter, err := e.dp.VServerCounters(c.vs)
			e.must(err)
			if d := vsAfter.Packets - vsBefore.Packets; d != 4 {
				t.Errorf("vserver packets +%d, want +4", d)
			}
			if d := vsAfter.Bytes - vsBefore.Bytes; d != 4*uint64(len(in)) {
				t.Errorf("vserver bytes +%d, want +%d", d, 4*len(in))
			}
			if d := vsAfter.Reasons[ReasonFwdHit] - vsBefore.Reasons[ReasonFwdHit]; d != 3 {
				t.Errorf("vserver fwd_hit +%d, want +3", d)
			}
		})
	}
}

// TestHotCacheInvalidation: a hot entry never outlives what it copied — a
// backend's new address, a deleted flow, a route that no longer accepts
// the packet's length, a neighbour that moved (within FIBCacheTTL).
func TestHotCacheInvalidation(t *testing.T) {
	e := newEnv(t, Config{FIBCacheTTL: 200 * time.Millisecond, HotCacheSize: 1024})
	e.standard()
	slots := make([]uint32, e.dp.Config().TableSize)
	for i := range slots {
		slots[i] = 1 // 10.1.0.10:8080
	}
	_, err := e.dp.SetTable(vsWeb4, slots)
	e.must(err)
	p := flowPacket{dstMAC: e.macB, srcMAC: e.routerMAC, src: ap("10.2.0.5:40000"), dst: ap("10.100.0.1:80"), proto: protoTCP, payload: make([]byte, 60), tcpFlags: tcpACK}
	send := func(what string, p flowPacket, wantV uint32, wantDst netip.Addr, wantMAC []byte) {
		t.Helper()
		v, out := e.runOnCPU0(p.frame())
		if v != wantV {
			t.Fatalf("%s: verdict %s, want %s", what, verdictName(v), verdictName(wantV))
		}
		if wantV != xdpRedirect {
			return
		}
		if got := netip.AddrFrom4([4]byte(out[14+16 : 14+20])); got != wantDst {
			t.Errorf("%s: sent to %s, want %s", what, got, wantDst)
		}
		if !bytes.Equal(out[:6], wantMAC) {
			t.Errorf("%s: to MAC %x, want %x", what, out[:6], wantMAC)
		}
	}
	warm := func(what string, dst netip.Addr, mac []byte) {
		t.Helper()
		for i := 0; i < 3; i++ {
			send(what, p, xdpRedirect, dst, mac)
		}
		// a generation tick may come between the last two packets
		if !e.isHot(p) {
			send(what, p, xdpRedirect, dst, mac)
			if !e.isHot(p) {
				t.Fatalf("%s: no hot entry", what)
			}
		}
	}
	warm("first", ip("10.1.0.10"), neighMAC(0x10))

	// Backend 1 moves to another address: the flow follows at once.
	e.must(e.dp.SetBackend(Backend{ID: 1, Addr: ip("10.1.0.11"), Port: 8080}))
	send("after SetBackend", p, xdpRedirect, ip("10.1.0.11"), neighMAC(0x11))
	warm("moved", ip("10.1.0.11"), neighMAC(0x11))

	// A deleted flow is new again at its next packet.
	e.must(e.dp.DeleteFlow(FlowKey{Src: p.src, Dst: p.dst, Protocol: ProtoTCP}))
	before := e.reasons()
	send("after DeleteFlow", p, xdpRedirect, ip("10.1.0.11"), neighMAC(0x11))
	if r := e.reasons(); r[ReasonFwdNew] != before[ReasonFwdNew]+1 {
		t.Errorf("after DeleteFlow: fwd_new %d -> %d, want +1", before[ReasonFwdNew], r[ReasonFwdNew])
	}
	warm("recreated", ip("10.1.0.11"), neighMAC(0x11))

	// The neighbour moves: the cached MAC stays within the TTL, the new one
	// is used after it.
	moved := neighMAC(0x77)
	if out, err := e.ns.Run("ip", "neigh", "replace", "10.1.0.11", "lladdr", moved.String(), "dev", "tfa", "nud", "permanent"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	time.Sleep(500 * time.Millisecond)
	send("after the neighbour moved", p, xdpRedirect, ip("10.1.0.11"), moved)
	warm("moved neighbour", ip("10.1.0.11"), moved)

	// A route with a smaller MTU (locked): a packet longer than the cached
	// route accepted goes to the full path, which refuses it.
	if out, err := e.ns.Run("ip", "route", "add", "10.1.0.11/32", "dev", "tfa", "mtu", "lock", "200"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	big := p
	big.payload = make([]byte, 260)
	send("300-byte packet over an MTU 200 route", big, xdpDrop, netip.Addr{}, nil)
	if r := e.reasons(); r[ReasonDropFragNeeded] != 1 {
		t.Errorf("drop_frag_needed = %d, want 1", r[ReasonDropFragNeeded])
	}
}

// TestAddrFilter: every VIP's and service's bit is set in the address
// filter as the BPF program computes it (a VIP packet is never passed as
// not ours), over random IPv4 and IPv6 addresses, and a removed address
// stops counting.
func TestAddrFilter(t *testing.T) {
	e := newEnv(t, Config{})
	e.standard()
	rnd := rand.New(rand.NewPCG(2, 7))
	for i := 0; i < 300; i++ {
		var vip netip.Addr
		if i%2 == 0 {
			vip = netip.AddrFrom4([4]byte{byte(rnd.IntN(223) + 1), byte(rnd.Uint32()), byte(rnd.Uint32()), byte(rnd.Uint32())})
		} else {
			var b [16]byte
			for j := range b {
				b[j] = byte(rnd.Uint32())
			}
			b[0] = 0xfd
			vip = netip.AddrFrom16(b)
		}
		e.must(e.dp.SetVServer(VServer{ID: vsEmpty, VIP: vip, Port: 80, Protocol: ProtoTCP, Method: MethodSourceIP, Seed: 4, Stateless: true}))
		client := ap("10.2.0.5:40000")
		if vip.Is6() {
			client = ap("[fd02::5]:40000")
		}
		before := e.reasons()
		p := flowPacket{dstMAC: e.macB, srcMAC: e.routerMAC, src: client, dst: netip.AddrPortFrom(vip, 80), proto: protoTCP}
		if v, _ := e.run(p.frame()); v != xdpDrop {
			t.Fatalf("VIP %s (bit %d): verdict %s, want DROP (no backend)", vip, filterBit(addrWords(vip)), verdictName(v))
		}
		if r := e.reasons(); r[ReasonDropNoBackend] != before[ReasonDropNoBackend]+1 {
			t.Fatalf("VIP %s: drop_no_backend %d -> %d", vip, before[ReasonDropNoBackend], r[ReasonDropNoBackend])
		}
	}
	e.dp.mu.Lock()
	n := len(e.dp.fast.filtered)
	e.dp.mu.Unlock()
	// the standard VIPs and services, and the last VIP of the loop
	if want := len(e.dp.vipRefs) + len(e.dp.serviceRefs); n != want {
		t.Errorf("%d filtered addresses, want %d", n, want)
	}
}

// TestUntracked: an Untracked vserver records no flow, forwards every packet
// to its active table's backend (through the hot cache from the second
// packet on), and follows a table change at once where a recorded flow
// keeps its backend.
func TestUntracked(t *testing.T) {
	e := newEnv(t, Config{FIBCacheTTL: time.Hour, HotCacheSize: 1024})
	e.standard()
	if err := e.dp.SetVServer(VServer{ID: vsFull, VIP: ip("10.100.0.4"), Port: 80, Protocol: ProtoTCP, Method: MethodSourceIP, Seed: 2, Owned: true, Untracked: true}); err == nil {
		t.Error("an owned Untracked vserver was accepted")
	}
	tracked := flowPacket{dstMAC: e.macB, srcMAC: e.routerMAC, src: ap("10.2.0.5:40000"), dst: ap("10.100.0.1:80"), proto: protoTCP, tcpFlags: tcpACK}
	untracked := flowPacket{dstMAC: e.macB, srcMAC: e.routerMAC, src: ap("10.2.0.5:40000"), dst: ap("10.100.0.6:80"), proto: protoTCP, tcpFlags: tcpACK}
	e.must(e.dp.SetVServer(VServer{ID: vsEmpty, VIP: ip("10.100.0.6"), Port: 80, Protocol: ProtoTCP, Method: MethodSourceIPSourcePort, Seed: 8, Stateless: true, Untracked: true}))
	all := func(vs, be uint32) {
		slots := make([]uint32, e.dp.Config().TableSize)
		for i := range slots {
			slots[i] = be
		}
		_, err := e.dp.SetTable(vs, slots)
		e.must(err)
	}
	all(vsWeb4, 1)
	all(vsEmpty, 1)
	send := func(what string, p flowPacket, want netip.Addr) {
		t.Helper()
		v, out := e.runOnCPU0(p.frame())
		if v != xdpRedirect {
			t.Fatalf("%s: verdict %s", what, verdictName(v))
		}
		if got := netip.AddrFrom4([4]byte(out[14+16 : 14+20])); got != want {
			t.Errorf("%s: sent to %s, want %s", what, got, want)
		}
	}
	for i := 0; i < 3; i++ {
		send("tracked", tracked, ip("10.1.0.10"))
		send("untracked", untracked, ip("10.1.0.10"))
		if !e.isHot(untracked) {
			t.Errorf("packet %d: the untracked flow is not in the hot cache", i)
		}
	}
	if _, err := e.dp.LookupFlow(FlowKey{Src: untracked.src, Dst: untracked.dst, Protocol: ProtoTCP}); !errors.Is(err, ErrFlowNotFound) {
		t.Errorf("untracked flow: LookupFlow error %v, want ErrFlowNotFound", err)
	}
	if _, err := e.dp.LookupFlow(FlowKey{Src: tracked.src, Dst: tracked.dst, Protocol: ProtoTCP}); err != nil {
		t.Errorf("tracked flow: %v", err)
	}
	all(vsWeb4, 2)
	all(vsEmpty, 2)
	send("tracked after the table changed", tracked, ip("10.1.0.10"))
	send("untracked after the table changed", untracked, ip("10.1.0.11"))
	c, err := e.dp.VServerCounters(vsEmpty)
	e.must(err)
	// packets 1 and 4 missed the hot cache (first packet; table changed)
	if c.Packets != 4 || c.Reasons[ReasonFwdNew] != 2 || c.Reasons[ReasonFwdHit] != 2 {
		t.Errorf("untracked vserver counters %+v, want 4 packets: 2 fwd_new, 2 fwd_hit", c)
	}
}

// runIngressOnCPU0 is runIngress on CPU 0, where the hot entries it makes
// are found again.
func (e *testEnv) runIngressOnCPU0(frame []byte, ifname string) (uint32, []byte) {
	e.tb.Helper()
	out := make([]byte, len(frame)+256)
	var ret uint32
	err := e.ns.Do(func() error {
		var old, one unix.CPUSet
		if err := unix.SchedGetaffinity(0, &old); err != nil {
			return err
		}
		one.Set(0)
		if err := unix.SchedSetaffinity(0, &one); err != nil {
			return err
		}
		defer unix.SchedSetaffinity(0, &old)
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		ctx := xdpMD{DataEnd: uint32(len(frame)), IngressIfindex: uint32(ifi.Index)}
		opts := ebpf.RunOptions{Data: frame, DataOut: out, Context: ctx}
		r, err := e.dp.Program().Run(&opts)
		ret, out = r, opts.DataOut
		return err
	})
	if err != nil {
		e.tb.Fatal(err)
	}
	return ret, out
}

// TestHotCacheIngress: a hot entry answers XDP_TX when the egress is the
// ingress interface, as the full path does, and serves only packets from
// the interface it was made for.
func TestHotCacheIngress(t *testing.T) {
	e := newEnv(t, Config{FIBCacheTTL: time.Hour, HotCacheSize: 1024})
	e.standard()
	p := flowPacket{dstMAC: e.macA, srcMAC: e.routerMAC, src: ap("10.2.0.5:40000"), dst: ap("10.100.0.1:80"), proto: protoTCP, payload: []byte("tx"), tcpFlags: tcpACK}
	be := backendAddrPort(t, e.dp, e.expectBackend(vsWeb4, p.src), 80)
	want := p
	want.dst = be
	want.dstMAC, want.srcMAC = neighMACFor(be.Addr()), e.macA
	for i := 0; i < 4; i++ {
		v, out := e.runIngressOnCPU0(p.frame(), "tfa")
		if v != xdpTX {
			t.Fatalf("packet %d from the backend side: verdict %s, want TX", i, verdictName(v))
		}
		diffFrames(t, "client to VIP on the backend side", out, want.frame())
	}
	if !e.isHot(p) {
		t.Fatal("no hot entry")
	}
	// from the client side: not the entry's interface, redirected
	for i := 0; i < 3; i++ {
		if v, _ := e.runIngressOnCPU0(p.frame(), "tfb"); v != xdpRedirect {
			t.Errorf("packet %d from the client side: verdict %s, want REDIRECT", i, verdictName(v))
		}
	}
	if r := e.reasons(); r[ReasonFwdHit] != 6 || r[ReasonFwdNew] != 1 {
		t.Errorf("fwd_hit %d fwd_new %d, want 6 and 1", r[ReasonFwdHit], r[ReasonFwdNew])
	}
}

// TestHotCacheReply: a stateless reply (backend -> client) enters the hot
// cache at its first packet, and the replies the cache rewrites are the
// full path's, byte for byte and counter for counter, over IPv4 and IPv6,
// TCP and UDP (with and without checksum). A reply is not rewritten from
// an entry that outlived its service's reverse entry or its client's
// becoming a local address.
func TestHotCacheReply(t *testing.T) {
	e := newEnv(t, Config{FIBCacheTTL: time.Hour, HotCacheSize: 1024})
	e.standard()
	cases := []struct {
		name string
		vs   uint32
		be   uint32
		p    flowPacket
		vip  netip.AddrPort
		mac  byte
	}{
		{"ipv4 tcp", vsWeb4, 1, flowPacket{src: ap("10.1.0.10:8080"), dst: ap("10.2.0.5:40000"), proto: protoTCP, payload: []byte("reply"), tcpFlags: tcpACK}, ap("10.100.0.1:80"), 0x05},
		{"ipv4 tcp far client", vsWeb4, 2, flowPacket{src: ap("10.1.0.11:8080"), dst: ap("198.51.100.7:40000"), proto: protoTCP, tcpFlags: tcpACK}, ap("10.100.0.1:80"), 0x09},
		{"ipv4 udp", vsDNS4, 0, flowPacket{src: ap("10.1.0.11:5353"), dst: ap("10.2.0.5:5000"), proto: protoUDP, payload: []byte("answer")}, ap("10.100.0.1:53"), 0x05},
		{"ipv4 udp no checksum", vsDNS4, 0, flowPacket{src: ap("10.1.0.11:5353"), dst: ap("10.2.0.5:5001"), proto: protoUDP, payload: []byte("a"), udpNoCsum: true}, ap("10.100.0.1:53"), 0x05},
		{"ipv4 wildcard service", vsAll4, 0, flowPacket{src: ap("10.1.0.10:7777"), dst: ap("10.2.0.5:5555"), proto: protoUDP, payload: []byte("x")}, ap("10.100.0.2:7777"), 0x05},
		{"ipv6 tcp", vsWeb6, 0, flowPacket{src: ap("[fd01::10]:8443"), dst: ap("[fd02::5]:40000"), proto: protoTCP, payload: []byte("r6"), tcpFlags: tcpACK}, ap("[fd64::1]:443"), 0x05},
		{"ipv6 udp", vsWeb6, 0, flowPacket{src: ap("[fd01::11]:8443"), dst: ap("[2001:db8::77]:40001"), proto: protoUDP, payload: []byte("r6")}, ap("[fd64::1]:443"), 0x09},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.p.dstMAC, c.p.srcMAC = e.macA, neighMAC(0x10)
			in := c.p.frame()
			want := c.p
			want.src = c.vip
			want.dstMAC, want.srcMAC = neighMAC(c.mac), e.macB
			wantFrame := want.frame()
			before := e.reasons()
			vsBefore, err := e.dp.VServerCounters(c.vs)
			e.must(err)
			for i := range 4 {
				v, out := e.runOnCPU0(in)
				if v != xdpRedirect {
					t.Fatalf("reply %d: verdict %s, want REDIRECT (reasons %v)", i, verdictName(v), e.reasons())
				}
				diffFrames(t, c.name, out, wantFrame)
				after := e.reasons()
				if after[ReasonFwdReverse] != before[ReasonFwdReverse]+1 {
					t.Errorf("reply %d: fwd_reverse counted %d -> %d, want +1", i, before[ReasonFwdReverse], after[ReasonFwdReverse])
				}
				before = after
				if !e.isHot(c.p) {
					t.Errorf("after reply %d: no hot entry", i)
				}
			}
			vsAfter, err := e.dp.VServerCounters(c.vs)
			e.must(err)
			if d := vsAfter.RevPackets - vsBefore.RevPackets; d != 4 {
				t.Errorf("vserver reply packets +%d, want +4", d)
			}
			if d := vsAfter.RevBytes - vsBefore.RevBytes; d != 4*uint64(len(in)) {
				t.Errorf("vserver reply bytes +%d, want +%d", d, 4*len(in))
			}
			if d := vsAfter.Reasons[ReasonFwdReverse] - vsBefore.Reasons[ReasonFwdReverse]; d != 4 {
				t.Errorf("vserver fwd_reverse +%d, want +4", d)
			}
			if vsAfter.Packets != vsBefore.Packets {
				t.Errorf("replies counted as client packets: %d -> %d", vsBefore.Packets, vsAfter.Packets)
			}
		})
	}

	// The cache, not the full path, rewrote the later replies: with the
	// reverse entry gone from the map behind the Datapath's back (no new
	// generation), the full path would pass the reply, the cache still
	// rewrites it.
	c := cases[1] // 10.1.0.11:8080, which has no wildcard-port reverse entry
	c.p.dstMAC, c.p.srcMAC = e.macA, neighMAC(0x10)
	in := c.p.frame()
	rk := lbRevKey{Port: htons(8080), Proto: protoTCP}
	rk.Addr, rk.Family = addrWords(c.p.src.Addr())
	var rv lbRev
	e.must(e.dp.objs.Reverse.Lookup(&rk, &rv))
	e.must(e.dp.objs.Reverse.Delete(&rk))
	if v, _ := e.runOnCPU0(in); v != xdpRedirect {
		t.Errorf("reply from the hot cache: verdict %s, want REDIRECT", verdictName(v))
	}
	e.must(e.dp.objs.Reverse.Put(&rk, &rv))

	// A reverse entry deleted through the Datapath invalidates the cache:
	// the reply is no longer rewritten.
	e.must(e.dp.DeleteReverse(c.p.src.Addr(), 8080, ProtoTCP))
	if v, out := e.runOnCPU0(in); v != xdpPass {
		t.Errorf("reply after DeleteReverse: verdict %s, want PASS", verdictName(v))
	} else {
		diffFrames(t, "after DeleteReverse", out, in)
	}
	e.must(e.dp.SetReverse(Reverse{Addr: c.p.src.Addr(), Port: 8080, Protocol: ProtoTCP, VServerID: c.vs, BackendID: c.be}))
	for range 2 {
		if v, _ := e.runOnCPU0(in); v != xdpRedirect {
			t.Fatalf("reply after SetReverse: verdict %s, want REDIRECT", verdictName(v))
		}
	}
	if !e.isHot(c.p) {
		t.Fatal("no hot entry after SetReverse")
	}
	// The client becomes a local address: its replies pass.
	e.must(e.dp.SetLocalAddrs([]netip.Addr{c.p.dst.Addr()}))
	before := e.reasons()
	if v, out := e.runOnCPU0(in); v != xdpPass {
		t.Errorf("reply to a local address: verdict %s, want PASS", verdictName(v))
	} else {
		diffFrames(t, "to a local address", out, in)
	}
	if r := e.reasons(); r[ReasonPassLocal] != before[ReasonPassLocal]+1 {
		t.Errorf("pass_local %d -> %d, want +1", before[ReasonPassLocal], r[ReasonPassLocal])
	}
}
