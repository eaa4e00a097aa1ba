package flow

import (
	"net/netip"
	"testing"
)

// quote is the first n bytes of the IP packet p (what an ICMP error carries).
func quote(p flowPacket, n int) []byte {
	b := p.ipBytes()
	if n < len(b) {
		b = b[:n]
	}
	return b
}

func icmpFrame(dstMAC, srcMAC []byte, src, dst netip.Addr, typ, code uint8, mtu uint32, quoted []byte) []byte {
	proto := uint8(protoICMP)
	if !src.Is4() {
		proto = protoICMPv6
	}
	msg := icmpError(src, dst, typ, code, mtu, quoted)
	return ethFrame(dstMAC, srcMAC, nil, etherTypeOf(src), ipPacket(src, dst, proto, msg, ipOpts{}))
}

// TestICMPErrors checks the translation of ICMP errors about VIP flows in
// both directions, IPv4 and IPv6, TCP and UDP, against frames built from
// scratch (outer, quoted IP and L4 and ICMP checksums all recomputed).
func TestICMPErrors(t *testing.T) {
	e := newEnv(t, Config{})
	e.standard()
	payload := make([]byte, 100)
	for i := range payload {
		payload[i] = byte(i * 7)
	}

	// Client-side errors: a router between the cluster and the client
	// reports a VIP -> client packet; it must reach the backend of the
	// flow. The first case has a flow entry whose backend differs from
	// what the table now says.
	flowed := flowPacket{dstMAC: e.macB, srcMAC: e.routerMAC, src: ap("10.2.0.5:40000"), dst: ap("10.100.0.1:80"), proto: protoTCP}
	if v, _ := e.run(flowed.frame()); v != xdpRedirect {
		t.Fatalf("setting up the flow: verdict %s", verdictName(v))
	}
	f, err := e.dp.LookupFlow(FlowKey{Src: flowed.src, Dst: flowed.dst, Protocol: ProtoTCP})
	e.must(err)
	other := uint32(1)
	if f.BackendID == 1 {
		other = 2
	}
	slots := make([]uint32, e.dp.Config().TableSize)
	for i := range slots {
		slots[i] = other
	}
	_, err = e.dp.SetTable(vsWeb4, slots)
	e.must(err)

	toBackend := []struct {
		name     string
		router   netip.Addr
		sent     flowPacket // the packet the error is about, as the client side saw it
		backend  netip.AddrPort
		typ      uint8
		code     uint8
		quoteLen int
	}{
		{"ipv4 tcp frag needed, flow entry", ip("10.2.0.254"), flowPacket{src: ap("10.100.0.1:80"), dst: ap("10.2.0.5:40000"), proto: protoTCP, payload: payload},
			backendAddrPort(t, e.dp, f.BackendID, 0), 3, 4, 20 + 28},
		{"ipv4 tcp no flow, 8 bytes quoted", ip("10.2.0.254"), flowPacket{src: ap("10.100.0.1:80"), dst: ap("10.2.0.5:41000"), proto: protoTCP, payload: payload},
			backendAddrPort(t, e.dp, other, 0), 3, 4, 20 + 8},
		{"ipv4 udp port unreachable", ip("10.2.0.5"), flowPacket{src: ap("10.100.0.1:53"), dst: ap("10.2.0.5:5000"), proto: protoUDP, payload: payload},
			ap("10.1.0.11:5353"), 3, 3, 576 - 20 - 8},
		{"ipv6 udp packet too big", ip("fd02::fe"), flowPacket{src: ap("[fd64::1]:443"), dst: ap("[fd02::5]:40000"), proto: protoUDP, payload: payload},
			netip.AddrPort{}, 2, 0, 40 + 60},
		{"ipv6 tcp unreachable", ip("fd02::fe"), flowPacket{src: ap("[fd64::1]:443"), dst: ap("[fd02::5]:40001"), proto: protoTCP, payload: payload},
			netip.AddrPort{}, 1, 0, 40 + 20},
	}
	for _, c := range toBackend {
		t.Run("to backend "+c.name, func(t *testing.T) {
			be := c.backend
			if !be.IsValid() {
				// no flow: the table decides, hashed on the client
				id := e.expectBackend(vsWeb6, c.sent.dst)
				be = backendAddrPort(t, e.dp, id, c.sent.src.Port())
			}
			mtu := uint32(1400)
			in := icmpFrame(e.macB, e.routerMAC, c.router, c.sent.src.Addr(), c.typ, c.code, mtu, quote(c.sent, c.quoteLen))
			translated := c.sent
			translated.src = be
			want := icmpFrame(neighMACFor(be.Addr()), e.macA, c.router, be.Addr(), c.typ, c.code, mtu, quote(translated, c.quoteLen))
			before := e.reasons()
			v, out := e.run(in)
			if v != xdpRedirect {
				t.Fatalf("verdict %s, want REDIRECT (%v)", verdictName(v), e.reasons())
			}
			diffFrames(t, c.name, out, want)
			if r := e.reasons(); r[ReasonFwdICMPBackend] != before[ReasonFwdICMPBackend]+1 {
				t.Errorf("fwd_icmp_backend not counted: %v", r)
			}
		})
	}

	// Backend-side errors: a router between the cluster and a backend
	// reports a client -> backend packet to the client; the client must see
	// it about client -> VIP:vport, from the VIP.
	toClient := []struct {
		name     string
		router   netip.Addr
		sent     flowPacket // client -> backend, as forwarded
		vip      netip.AddrPort
		typ      uint8
		code     uint8
		quoteLen int
	}{
		{"ipv4 tcp frag needed", ip("10.1.0.254"), flowPacket{src: ap("10.2.0.5:40000"), dst: ap("10.1.0.10:8080"), proto: protoTCP, payload: payload}, ap("10.100.0.1:80"), 3, 4, 20 + 28},
		{"ipv4 udp wildcard service", ip("10.1.0.10"), flowPacket{src: ap("10.2.0.5:5000"), dst: ap("10.1.0.10:7777"), proto: protoUDP, payload: payload}, ap("10.100.0.2:7777"), 3, 3, 20 + 8 + 50},
		{"ipv6 tcp packet too big", ip("fd01::fe"), flowPacket{src: ap("[fd02::5]:40000"), dst: ap("[fd01::10]:8443"), proto: protoTCP, payload: payload}, ap("[fd64::1]:443"), 2, 0, 40 + 40},
		{"ipv6 udp far client", ip("fd01::fe"), flowPacket{src: ap("[2001:db8::9]:40000"), dst: ap("[fd01::11]:8443"), proto: protoUDP, payload: payload}, ap("[fd64::1]:443"), 2, 0, 40 + 8},
	}
	for _, c := range toClient {
		t.Run("to client "+c.name, func(t *testing.T) {
			mtu := uint32(1280)
			client := c.sent.src.Addr()
			in := icmpFrame(e.macA, neighMAC(0x10), c.router, client, c.typ, c.code, mtu, quote(c.sent, c.quoteLen))
			translated := c.sent
			translated.dst = c.vip
			want := icmpFrame(neighMACFor(client), e.macB, c.vip.Addr(), client, c.typ, c.code, mtu, quote(translated, c.quoteLen))
			before := e.reasons()
			v, out := e.run(in)
			if v != xdpRedirect {
				t.Fatalf("verdict %s, want REDIRECT (%v)", verdictName(v), e.reasons())
			}
			diffFrames(t, c.name, out, want)
			if r := e.reasons(); r[ReasonFwdICMPClient] != before[ReasonFwdICMPClient]+1 {
				t.Errorf("fwd_icmp_client not counted: %v", r)
			}
		})
	}

	// What is not translated.
	sent := flowPacket{src: ap("10.100.0.1:80"), dst: ap("10.2.0.5:40000"), proto: protoTCP, payload: payload}
	unknown := flowPacket{src: ap("10.100.0.1:9999"), dst: ap("10.2.0.5:40000"), proto: protoTCP}
	notBackend := flowPacket{src: ap("10.2.0.5:40000"), dst: ap("10.1.0.77:8080"), proto: protoTCP}
	wrongClient := flowPacket{src: ap("10.2.0.6:40000"), dst: ap("10.1.0.10:8080"), proto: protoTCP}
	for _, c := range []struct {
		name    string
		frame   []byte
		verdict uint32
		reason  Reason
	}{
		{"to vip, quoted header cut", icmpFrame(e.macB, e.routerMAC, ip("10.2.0.254"), ip("10.100.0.1"), 3, 4, 1400, quote(sent, 12)), xdpDrop, ReasonDropBadICMP},
		{"to vip, ports not quoted", icmpFrame(e.macB, e.routerMAC, ip("10.2.0.254"), ip("10.100.0.1"), 3, 4, 1400, quote(sent, 24)), xdpDrop, ReasonDropBadICMP},
		{"to vip, quoting another vip", icmpFrame(e.macB, e.routerMAC, ip("10.2.0.254"), ip("10.100.0.2"), 3, 4, 1400, quote(sent, 48)), xdpPass, ReasonPassICMPUnknown},
		{"to vip, no such vserver", icmpFrame(e.macB, e.routerMAC, ip("10.2.0.254"), ip("10.100.0.1"), 3, 4, 1400, quote(unknown, 48)), xdpPass, ReasonPassICMPUnknown},
		{"to client, not a service", icmpFrame(e.macA, e.routerMAC, ip("10.1.0.254"), ip("10.2.0.5"), 3, 4, 1400, quote(notBackend, 48)), xdpPass, ReasonPassNotOurs},
		{"to client, quoted source is someone else", icmpFrame(e.macA, e.routerMAC, ip("10.1.0.254"), ip("10.2.0.5"), 3, 4, 1400, quote(wrongClient, 48)), xdpPass, ReasonPassICMPUnknown},
		{"time exceeded to vip", icmpFrame(e.macB, e.routerMAC, ip("10.2.0.254"), ip("10.100.0.1"), 11, 0, 0, quote(sent, 48)), xdpPass, ReasonPassVIPNoVServer},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := e.reasons()
			v, out := e.run(c.frame)
			if v != c.verdict {
				t.Fatalf("verdict %s, want %s", verdictName(v), verdictName(c.verdict))
			}
			diffFrames(t, c.name, out, c.frame)
			if r := e.reasons(); r[c.reason] != before[c.reason]+1 {
				t.Errorf("%s not counted: %v", c.reason, r)
			}
		})
	}
}
