package flow

import (
	"encoding/binary"
	"testing"
)

// TestMalformed: malformed and truncated frames are never forwarded and never
// altered; for a VIP they are dropped, otherwise passed, counted by reason.
func TestMalformed(t *testing.T) {
	e := newEnv(t, Config{})
	e.standard()
	good4 := flowPacket{dstMAC: e.macB, srcMAC: e.routerMAC, src: ap("10.2.0.5:40000"), dst: ap("10.100.0.1:80"), proto: protoTCP, payload: []byte("data")}.frame()
	other4 := flowPacket{dstMAC: e.macB, srcMAC: e.routerMAC, src: ap("10.2.0.5:40000"), dst: ap("10.2.0.1:80"), proto: protoTCP, payload: []byte("data")}.frame()
	good6 := flowPacket{dstMAC: e.macB, srcMAC: e.routerMAC, src: ap("[fd02::5]:40000"), dst: ap("[fd64::1]:443"), proto: protoUDP, payload: []byte("data")}.frame()
	other6 := flowPacket{dstMAC: e.macB, srcMAC: e.routerMAC, src: ap("[fd02::5]:40000"), dst: ap("[fd02::1]:443"), proto: protoUDP, payload: []byte("data")}.frame()
	mod := func(f []byte, fn func([]byte) []byte) []byte { return fn(append([]byte(nil), f...)) }
	const l3 = 14
	cases := []struct {
		name    string
		frame   []byte
		verdict uint32
		reason  Reason
	}{
		{"eth only, ipv4 type", good4[:14], xdpPass, ReasonPassBadL3},
		{"truncated ipv4 header", good4[:14+12], xdpPass, ReasonPassBadL3},
		{"truncated vlan tag", ethFrame(e.macB, e.routerMAC, nil, tpid1Q, []byte{0}), xdpPass, ReasonPassBadL2},
		{"three vlan tags", ethFrame(e.macB, e.routerMAC, []uint16{1, 2, 3}, ethIPv4, good4[14:]), xdpPass, ReasonPassBadL2},
		{"vip ipv4 ihl 4", mod(good4, func(f []byte) []byte { f[l3] = 0x44; return f }), xdpDrop, ReasonDropBadL3},
		{"vip ipv4 version 5", mod(good4, func(f []byte) []byte { f[l3] = 0x55; return f }), xdpDrop, ReasonDropBadL3},
		{"vip ipv4 total length beyond frame", mod(good4, func(f []byte) []byte { binary.BigEndian.PutUint16(f[l3+2:], 200); return f }), xdpDrop, ReasonDropBadL3},
		{"vip ipv4 total length below header", mod(good4, func(f []byte) []byte { binary.BigEndian.PutUint16(f[l3+2:], 16); return f }), xdpDrop, ReasonDropBadL3},
		{"vip ipv4 ihl beyond total length", mod(good4, func(f []byte) []byte { f[l3] = 0x4f; return f }), xdpDrop, ReasonDropBadL3},
		{"vip truncated frame", good4[:len(good4)-3], xdpDrop, ReasonDropBadL3},
		{"vip tcp header cut", mod(good4, func(f []byte) []byte {
			binary.BigEndian.PutUint16(f[l3+2:], 20+10)
			return f[:l3+30]
		}), xdpDrop, ReasonDropBadL4},
		{"vip tcp doff 4", mod(good4, func(f []byte) []byte { f[l3+20+12] = 4 << 4; return f }), xdpDrop, ReasonDropBadL4},
		{"vip tcp doff beyond packet", mod(good4, func(f []byte) []byte { f[l3+20+12] = 15 << 4; return f }), xdpDrop, ReasonDropBadL4},
		{"other tcp doff 4", mod(other4, func(f []byte) []byte { f[l3+20+12] = 4 << 4; return f }), xdpPass, ReasonPassBadL4},
		{"other ipv4 ihl 4", mod(other4, func(f []byte) []byte { f[l3] = 0x44; return f }), xdpPass, ReasonPassBadL3},
		{"vip ipv6 payload length beyond frame", mod(good6, func(f []byte) []byte { binary.BigEndian.PutUint16(f[l3+4:], 500); return f }), xdpDrop, ReasonDropBadL3},
		{"vip ipv6 jumbo", mod(good6, func(f []byte) []byte { binary.BigEndian.PutUint16(f[l3+4:], 0); return f }), xdpDrop, ReasonDropBadL3},
		{"vip ipv6 version 4", mod(good6, func(f []byte) []byte { f[l3] = 0x40 | f[l3]&0x0f; return f }), xdpDrop, ReasonDropBadL3},
		{"vip udp length 7", mod(good6, func(f []byte) []byte { binary.BigEndian.PutUint16(f[l3+40+4:], 7); return f }), xdpDrop, ReasonDropBadL4},
		{"vip udp length beyond packet", mod(good6, func(f []byte) []byte { binary.BigEndian.PutUint16(f[l3+40+4:], 100); return f }), xdpDrop, ReasonDropBadL4},
		{"other udp length beyond packet", mod(other6, func(f []byte) []byte { binary.BigEndian.PutUint16(f[l3+40+4:], 100); return f }), xdpPass, ReasonPassBadL4},
		{"vip ipv6 five extension headers", ethFrame(e.macB, e.routerMAC, nil, ethIPv6, ipPacket(ip("fd02::5"), ip("fd64::1"), protoUDP,
			l4Segment(protoUDP, ip("fd02::5"), ip("fd64::1"), 1, 443, nil, false),
			ipOpts{ext6Next: 0, ext6: []byte{60, 0, 1, 4, 0, 0, 0, 0, 60, 0, 1, 4, 0, 0, 0, 0, 60, 0, 1, 4, 0, 0, 0, 0, 60, 0, 1, 4, 0, 0, 0, 0, protoUDP, 0, 1, 4, 0, 0, 0, 0}})),
			xdpDrop, ReasonDropBadL3},
		{"vip ipv6 extension header beyond packet", ethFrame(e.macB, e.routerMAC, nil, ethIPv6, ipPacket(ip("fd02::5"), ip("fd64::1"), protoUDP,
			nil, ipOpts{ext6Next: 60, ext6: []byte{protoUDP, 9, 1, 4, 0, 0, 0, 0}})),
			xdpDrop, ReasonDropBadL3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := e.reasons()
			v, out := e.run(c.frame)
			if v != c.verdict {
				t.Fatalf("verdict %s, want %s (reasons %v)", verdictName(v), verdictName(c.verdict), e.reasons())
			}
			diffFrames(t, c.name, out, c.frame)
			if after := e.reasons(); after[c.reason] != before[c.reason]+1 {
				t.Errorf("reason %s not counted: before %v after %v", c.reason, before, after)
			}
		})
	}
	if flows, _ := e.dp.Flows(); len(flows) != 0 {
		t.Errorf("malformed frames made flows: %v", flows)
	}
}

// TestFragments: fragments for a VIP are forwarded only by a wildcard-port
// SOURCEIPHASH vserver, every fragment to the same backend; others pass.
func TestFragments(t *testing.T) {
	e := newEnv(t, Config{})
	e.standard()
	payload := make([]byte, 24)
	for i := range payload {
		payload[i] = byte(i)
	}
	// A UDP datagram to 10.100.0.2:7777 cut in two: 16 bytes (header + 8)
	// then the other 16 bytes at offset 2 (x 8 bytes).
	full := l4Segment(protoUDP, ip("10.2.0.5"), ip("10.100.0.2"), 5000, 7777, payload, false)
	mk := func(dst string, part []byte, off uint16, mf bool) []byte {
		return ethFrame(e.macB, e.routerMAC, nil, ethIPv4, ipPacket(ip("10.2.0.5"), ip(dst), protoUDP, part, ipOpts{fragOff: off, mf: mf}))
	}
	// Expected: backend 5 is 10.1.0.10 on any port; the UDP checksum covers
	// the whole datagram, so the first fragment's checksum is the one of the
	// datagram rebuilt for the backend.
	fullBe := l4Segment(protoUDP, ip("10.2.0.5"), ip("10.1.0.10"), 5000, 7777, payload, false)
	for i, c := range []struct {
		in, want []byte
	}{
		{mk("10.100.0.2", full[:16], 0, true), mk("10.1.0.10", fullBe[:16], 0, true)},
		{mk("10.100.0.2", full[16:], 2, false), mk("10.1.0.10", fullBe[16:], 2, false)},
	} {
		copy(c.want[0:6], neighMAC(0x10))
		copy(c.want[6:12], e.macA)
		v, out := e.run(c.in)
		if v != xdpRedirect {
			t.Fatalf("fragment %d: verdict %s, want REDIRECT (%v)", i, verdictName(v), e.reasons())
		}
		diffFrames(t, "fragment", out, c.want)
	}
	if r := e.reasons(); r[ReasonFwdFragment] != 2 {
		t.Errorf("fwd_fragment = %d, want 2", r[ReasonFwdFragment])
	}
	// To a port-hashed vserver: pass, unchanged.
	fullWeb := l4Segment(protoTCP, ip("10.2.0.5"), ip("10.100.0.1"), 5000, 80, payload, false)
	for _, f := range [][]byte{
		ethFrame(e.macB, e.routerMAC, nil, ethIPv4, ipPacket(ip("10.2.0.5"), ip("10.100.0.1"), protoTCP, fullWeb[:24], ipOpts{mf: true})),
		ethFrame(e.macB, e.routerMAC, nil, ethIPv4, ipPacket(ip("10.2.0.5"), ip("10.100.0.1"), protoTCP, fullWeb[24:], ipOpts{fragOff: 3})),
		ethFrame(e.macB, e.routerMAC, nil, ethIPv6, ipPacket(ip("fd02::5"), ip("fd64::1"), protoUDP,
			l4Segment(protoUDP, ip("fd02::5"), ip("fd64::1"), 1, 443, payload, false), ipOpts{frag6: true, mf: true})),
	} {
		v, out := e.run(f)
		if v != xdpPass {
			t.Errorf("fragment for a port vserver: verdict %s, want PASS", verdictName(v))
		}
		diffFrames(t, "fragment pass", out, f)
	}
	if r := e.reasons(); r[ReasonPassFragment] != 3 {
		t.Errorf("pass_fragment = %d, want 3", r[ReasonPassFragment])
	}

	// From a service on any port of a "*" vserver: the source goes back to
	// the VIP in every fragment. From a service on one port: pass.
	back := l4Segment(protoUDP, ip("10.1.0.10"), ip("10.2.0.5"), 7777, 5000, payload, false)
	backVIP := l4Segment(protoUDP, ip("10.100.0.2"), ip("10.2.0.5"), 7777, 5000, payload, false)
	mkb := func(src string, part []byte, off uint16, mf bool) []byte {
		return ethFrame(e.macA, neighMAC(0x10), nil, ethIPv4, ipPacket(ip(src), ip("10.2.0.5"), protoUDP, part, ipOpts{fragOff: off, mf: mf}))
	}
	for i, c := range []struct {
		in, want []byte
	}{
		{mkb("10.1.0.10", back[:16], 0, true), mkb("10.100.0.2", backVIP[:16], 0, true)},
		{mkb("10.1.0.10", back[16:], 2, false), mkb("10.100.0.2", backVIP[16:], 2, false)},
	} {
		copy(c.want[0:6], neighMAC(0x05))
		copy(c.want[6:12], e.macB)
		v, out := e.run(c.in)
		if v != xdpRedirect {
			t.Fatalf("reverse fragment %d: verdict %s, want REDIRECT (%v)", i, verdictName(v), e.reasons())
		}
		diffFrames(t, "reverse fragment", out, c.want)
	}
	portBound := ethFrame(e.macA, neighMAC(0x11), nil, ethIPv4, ipPacket(ip("10.1.0.11"), ip("10.2.0.5"), protoUDP,
		l4Segment(protoUDP, ip("10.1.0.11"), ip("10.2.0.5"), 5353, 5000, payload, false)[:16], ipOpts{mf: true}))
	if v, out := e.run(portBound); v != xdpPass {
		t.Errorf("fragment from a one-port service: verdict %s, want PASS", verdictName(v))
	} else {
		diffFrames(t, "reverse fragment pass", out, portBound)
	}
	if r := e.reasons(); r[ReasonFwdFragment] != 4 || r[ReasonPassFragment] != 4 {
		t.Errorf("fwd_fragment = %d, pass_fragment = %d, want 4 and 4", r[ReasonFwdFragment], r[ReasonPassFragment])
	}
}
