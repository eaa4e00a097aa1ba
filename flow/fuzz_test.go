package flow

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// refParse is an independent, strict reading of a frame, written for the
// fuzz oracle: the program may forward (TX/REDIRECT) a frame only if this
// finds it well formed and for a VIP, from a bound service, or an ICMP error
// about one of those.
func refForwardable(f []byte, vips, services map[netip.Addr]bool) bool {
	if len(f) < 14 {
		return false
	}
	off := 12
	et := binary.BigEndian.Uint16(f[off:])
	off += 2
	for tags := 0; et == tpid1Q || et == tpidAD; tags++ {
		if tags == 2 || len(f) < off+4 {
			return false
		}
		et = binary.BigEndian.Uint16(f[off+2:])
		off += 4
	}
	src, dst, proto, l4, end, frag, ok := refIP(f, off, et)
	if !ok {
		return false
	}
	later := frag && l4 < 0
	if later {
		return (proto == protoTCP || proto == protoUDP) && (vips[dst] || services[src])
	}
	switch proto {
	case protoTCP:
		if l4+20 > end {
			return false
		}
		doff := int(f[l4+12]>>4) * 4
		if doff < 20 || (!frag && l4+doff > end) {
			return false
		}
		return vips[dst] || services[src]
	case protoUDP:
		if l4+8 > end {
			return false
		}
		ulen := int(binary.BigEndian.Uint16(f[l4+4:]))
		if !frag && (ulen < 8 || l4+ulen > end) {
			return false
		}
		return vips[dst] || services[src]
	case protoICMP, protoICMPv6:
		if frag || l4+8 > end || (proto == protoICMP) != (et == ethIPv4) {
			return false
		}
		t := f[l4]
		if et == ethIPv4 && t != 3 || et == ethIPv6 && t != 1 && t != 2 {
			return false
		}
		in := l4 + 8
		var isrc, idst netip.Addr
		var iproto uint8
		var il4 int
		if et == ethIPv4 {
			if in+20 > end || f[in]>>4 != 4 || f[in]&0xf < 5 || binary.BigEndian.Uint16(f[in+6:])&0x1fff != 0 {
				return false
			}
			isrc, idst = netip.AddrFrom4([4]byte(f[in+12:in+16])), netip.AddrFrom4([4]byte(f[in+16:in+20]))
			iproto, il4 = f[in+9], in+int(f[in]&0xf)*4
		} else {
			if in+40 > end || f[in]>>4 != 6 {
				return false
			}
			isrc, idst = netip.AddrFrom16([16]byte(f[in+8:in+24])), netip.AddrFrom16([16]byte(f[in+24:in+40]))
			iproto, il4 = f[in+6], in+40
		}
		if iproto != protoTCP && iproto != protoUDP || il4+8 > end {
			return false
		}
		return vips[dst] && isrc == dst || !vips[dst] && services[idst] && isrc == dst
	}
	return false
}

// refIP reads an IP header: addresses, protocol, L4 offset (-1 for a
// non-first fragment), end of the IP packet, fragment, and validity.
func refIP(f []byte, off int, et uint16) (src, dst netip.Addr, proto uint8, l4, end int, frag, ok bool) {
	switch et {
	case ethIPv4:
		if len(f) < off+20 || f[off]>>4 != 4 || f[off]&0xf < 5 {
			return
		}
		hl := int(f[off]&0xf) * 4
		tot := int(binary.BigEndian.Uint16(f[off+2:]))
		if tot < hl || off+tot > len(f) {
			return
		}
		src, dst = netip.AddrFrom4([4]byte(f[off+12:off+16])), netip.AddrFrom4([4]byte(f[off+16:off+20]))
		fo := binary.BigEndian.Uint16(f[off+6:])
		frag = fo&0x3fff != 0
		l4 = off + hl
		if fo&0x1fff != 0 {
			l4 = -1
		}
		return src, dst, f[off+9], l4, off + tot, frag, true
	case ethIPv6:
		if len(f) < off+40 || f[off]>>4 != 6 {
			return
		}
		plen := int(binary.BigEndian.Uint16(f[off+4:]))
		if plen == 0 || off+40+plen > len(f) {
			return
		}
		src, dst = netip.AddrFrom16([16]byte(f[off+8:off+24])), netip.AddrFrom16([16]byte(f[off+24:off+40]))
		end = off + 40 + plen
		nh := f[off+6]
		p := off + 40
		later := false
		for i := 0; ; i++ {
			isExt := nh == 0 || nh == 43 || nh == 60 || nh == 44
			if !isExt {
				break
			}
			if i == 4 || p+8 > end {
				return
			}
			if nh == 44 {
				fo := binary.BigEndian.Uint16(f[p+2:])
				frag = frag || fo&0xfff9 != 0
				later = later || fo&0xfff8 != 0
				nh = f[p]
				p += 8
			} else {
				nh = f[p]
				p += (int(f[p+1]) + 1) * 8
			}
		}
		if p > end {
			return
		}
		l4 = p
		if later {
			l4 = -1
		}
		return src, dst, nh, l4, end, frag, true
	}
	return
}

// FuzzXDP feeds arbitrary frames to the program (in the namespace of the
// forwarding tests, standard configuration). It must never forward a frame
// the reference parser does not accept as for a VIP or from a bound service,
// never abort, and never alter a frame it passes, unless it counted the pass
// as "no neighbour" (a rewritten packet left to the kernel) for a frame the
// reference accepts.
func FuzzXDP(f *testing.F) {
	e := newEnv(f, Config{})
	e.standard()
	vips := map[netip.Addr]bool{}
	services := map[netip.Addr]bool{}
	for _, v := range e.dp.vservers {
		vips[v.VIP] = true
	}
	for id := range e.dp.reverses {
		services[id.addr] = true
	}
	mac := func(p flowPacket) flowPacket { p.dstMAC, p.srcMAC = e.macB, e.routerMAC; return p }
	payload := []byte("0123456789abcdef0123456789abcdef")
	seeds := [][]byte{
		mac(flowPacket{src: ap("10.2.0.5:40000"), dst: ap("10.100.0.1:80"), proto: protoTCP, payload: payload}).frame(),
		mac(flowPacket{vlans: []uint16{1, 2}, src: ap("10.2.0.5:40000"), dst: ap("10.100.0.1:80"), proto: protoTCP}).frame(),
		mac(flowPacket{src: ap("10.2.0.5:5000"), dst: ap("10.100.0.1:53"), proto: protoUDP, payload: payload}).frame(),
		mac(flowPacket{src: ap("[fd02::5]:40000"), dst: ap("[fd64::1]:443"), proto: protoTCP, payload: payload}).frame(),
		mac(flowPacket{src: ap("[fd02::5]:40000"), dst: ap("[fd64::1]:443"), proto: protoUDP, ip: ipOpts{ext6Next: 0, ext6: []byte{protoUDP, 0, 1, 4, 0, 0, 0, 0}}}).frame(),
		mac(flowPacket{src: ap("10.1.0.10:8080"), dst: ap("10.2.0.5:40000"), proto: protoTCP, payload: payload}).frame(),
		mac(flowPacket{src: ap("[fd01::10]:8443"), dst: ap("[fd02::5]:40000"), proto: protoUDP}).frame(),
		mac(flowPacket{src: ap("10.2.0.5:5000"), dst: ap("10.100.0.2:7777"), proto: protoUDP, payload: payload, ip: ipOpts{mf: true}}).frame(),
		mac(flowPacket{src: ap("10.2.0.5:5000"), dst: ap("10.100.0.2:7777"), proto: protoUDP, payload: payload, ip: ipOpts{fragOff: 4}}).frame(),
		mac(flowPacket{src: ap("10.2.0.5:1000"), dst: ap("10.2.0.1:22"), proto: protoTCP}).frame(),
		// ACK segments: what the hot cache serves (xdp_lb's fast path)
		mac(flowPacket{src: ap("10.2.0.5:40000"), dst: ap("10.100.0.1:80"), proto: protoTCP, payload: payload, tcpFlags: tcpACK}).frame(),
		mac(flowPacket{src: ap("[fd02::5]:40000"), dst: ap("[fd64::1]:443"), proto: protoTCP, payload: payload, tcpFlags: tcpACK}).frame(),
		// and replies (the hot cache serves them after the first)
		mac(flowPacket{src: ap("10.1.0.10:8080"), dst: ap("10.2.0.5:40000"), proto: protoTCP, payload: payload, tcpFlags: tcpACK}).frame(),
		mac(flowPacket{src: ap("[fd01::10]:8443"), dst: ap("[fd02::5]:40000"), proto: protoTCP, payload: payload, tcpFlags: tcpACK}).frame(),
		icmpFrame(e.macB, e.routerMAC, ip("10.2.0.254"), ip("10.100.0.1"), 3, 4, 1400,
			quote(flowPacket{src: ap("10.100.0.1:80"), dst: ap("10.2.0.5:40000"), proto: protoTCP, payload: payload}, 48)),
		icmpFrame(e.macA, e.routerMAC, ip("fd01::fe"), ip("fd02::5"), 2, 0, 1280,
			quote(flowPacket{src: ap("[fd02::5]:40000"), dst: ap("[fd01::10]:8443"), proto: protoTCP, payload: payload}, 80)),
		ethFrame(e.macB, e.routerMAC, nil, ethARP, make([]byte, 28)),
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) < 14 || len(frame) > 4000 {
			t.Skip("the kernel runs XDP on 14 to ~4000 bytes")
		}
		noNeigh := func() uint64 {
			var per []uint64
			k := uint32(ReasonPassNoNeigh)
			if err := e.dp.objs.Reasons.Lookup(&k, &per); err != nil {
				t.Fatal(err)
			}
			var s uint64
			for _, n := range per {
				s += n
			}
			return s
		}
		before := noNeigh()
		v, out, err := e.tryRun(e.dp.Program(), frame)
		if err != nil {
			t.Fatal(err)
		}
		ok := refForwardable(frame, vips, services)
		switch v {
		case xdpTX, xdpRedirect:
			if !ok {
				t.Fatalf("forwarded (%s) a frame that is not for a VIP or from a service: %x", verdictName(v), frame)
			}
		case xdpPass:
			if !bytes.Equal(out, frame) && !(ok && noNeigh() == before+1) {
				t.Fatalf("passed an altered frame\n in: %x\nout: %x", frame, out)
			}
		case xdpDrop:
		default:
			t.Fatalf("verdict %d on %x", v, frame)
		}
	})
}
