package flow

import (
	"encoding/binary"
	"net"
	"net/netip"
)

// A small packet builder for tests. Every checksum it writes is computed from
// scratch over the whole header and payload (never incrementally), so tests
// compare the program's output against frames built here.

const (
	ethIPv4 = 0x0800
	ethIPv6 = 0x86dd
	ethARP  = 0x0806
	tpid1Q  = 0x8100
	tpidAD  = 0x88a8

	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
)

// csum is the Internet checksum of the concatenated byte slices.
func csum(parts ...[]byte) uint16 {
	var sum uint32
	var odd bool
	var last byte
	for _, p := range parts {
		for _, b := range p {
			if odd {
				sum += uint32(last)<<8 | uint32(b)
			} else {
				last = b
			}
			odd = !odd
		}
	}
	if odd {
		sum += uint32(last) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func pseudoHeader(src, dst netip.Addr, proto uint8, l4len int) []byte {
	if src.Is4() {
		s, d := src.As4(), dst.As4()
		b := append(append([]byte{}, s[:]...), d[:]...)
		return append(b, 0, proto, byte(l4len>>8), byte(l4len))
	}
	s, d := src.As16(), dst.As16()
	b := append(append([]byte{}, s[:]...), d[:]...)
	return append(b, byte(l4len>>24), byte(l4len>>16), byte(l4len>>8), byte(l4len), 0, 0, 0, proto)
}

// l4Segment builds a TCP or UDP header plus payload with a from-scratch
// checksum for the given addresses. udpNoCsum leaves an IPv4 UDP checksum 0.
func l4Segment(proto uint8, src, dst netip.Addr, sport, dport uint16, payload []byte, udpNoCsum bool) []byte {
	var h []byte
	switch proto {
	case protoTCP:
		h = make([]byte, 20)
		binary.BigEndian.PutUint16(h[0:], sport)
		binary.BigEndian.PutUint16(h[2:], dport)
		binary.BigEndian.PutUint32(h[4:], 0x01020304) // seq
		binary.BigEndian.PutUint32(h[8:], 0)
		h[12] = 5 << 4
		h[13] = 0x02 // SYN
		binary.BigEndian.PutUint16(h[14:], 64240)
	case protoUDP:
		h = make([]byte, 8)
		binary.BigEndian.PutUint16(h[0:], sport)
		binary.BigEndian.PutUint16(h[2:], dport)
		binary.BigEndian.PutUint16(h[4:], uint16(8+len(payload)))
	default:
		panic("l4Segment: TCP or UDP")
	}
	seg := append(h, payload...)
	if proto == protoUDP && udpNoCsum && src.Is4() {
		return seg
	}
	c := csum(pseudoHeader(src, dst, proto, len(seg)), seg)
	if proto == protoUDP && c == 0 {
		c = 0xffff
	}
	off := 16
	if proto == protoUDP {
		off = 6
	}
	binary.BigEndian.PutUint16(seg[off:], c)
	return seg
}

// ipOpts are the less common IP header settings.
type ipOpts struct {
	options  []byte // IPv4 options (multiple of 4 bytes)
	fragOff  uint16 // fragment offset in 8-byte units
	mf       bool   // more fragments
	frag6    bool   // IPv6: add a fragment header
	ext6     []byte // IPv6: raw extension headers, first nexthdr given by ext6Next
	ext6Next uint8
}

// ipPacket wraps an L4 payload in an IPv4 or IPv6 header (from-scratch header
// checksum).
func ipPacket(src, dst netip.Addr, proto uint8, l4 []byte, o ipOpts) []byte {
	if src.Is4() {
		hl := 20 + len(o.options)
		h := make([]byte, hl)
		h[0] = 0x40 | byte(hl/4)
		binary.BigEndian.PutUint16(h[2:], uint16(hl+len(l4)))
		binary.BigEndian.PutUint16(h[4:], 0x1234)
		fo := o.fragOff
		if o.mf {
			fo |= 0x2000
		}
		binary.BigEndian.PutUint16(h[6:], fo)
		h[8] = 64
		h[9] = proto
		s, d := src.As4(), dst.As4()
		copy(h[12:], s[:])
		copy(h[16:], d[:])
		copy(h[20:], o.options)
		binary.BigEndian.PutUint16(h[10:], csum(h))
		return append(h, l4...)
	}
	var ext []byte
	next := proto
	if o.frag6 {
		f := make([]byte, 8)
		f[0] = next
		fo := o.fragOff << 3
		if o.mf {
			fo |= 1
		}
		binary.BigEndian.PutUint16(f[2:], fo)
		binary.BigEndian.PutUint32(f[4:], 0xabcdef)
		ext = f
		next = 44
	}
	if len(o.ext6) > 0 {
		// caller's headers go first; the last one must point at next
		e := append([]byte{}, o.ext6...)
		ext = append(e, ext...)
		next = o.ext6Next
	}
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(ext)+len(l4)))
	h[6] = next
	h[7] = 64
	s, d := src.As16(), dst.As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return append(append(h, ext...), l4...)
}

// ethFrame adds an Ethernet header (and VLAN tags, outermost first; with two
// tags the outer one uses the 802.1ad TPID).
func ethFrame(dst, src net.HardwareAddr, vlans []uint16, etherType uint16, l3 []byte) []byte {
	if dst == nil {
		dst = make(net.HardwareAddr, 6)
	}
	if src == nil {
		src = make(net.HardwareAddr, 6)
	}
	b := append(append([]byte{}, dst...), src...)
	for i, v := range vlans {
		tpid := uint16(tpid1Q)
		if len(vlans) > 1 && i == 0 {
			tpid = tpidAD
		}
		b = binary.BigEndian.AppendUint16(b, tpid)
		b = binary.BigEndian.AppendUint16(b, v)
	}
	b = binary.BigEndian.AppendUint16(b, etherType)
	return append(b, l3...)
}

func etherTypeOf(a netip.Addr) uint16 {
	if a.Is4() {
		return ethIPv4
	}
	return ethIPv6
}

// icmpError builds an ICMP (or ICMPv6) error message carrying quoted (an IP
// packet, truncated by the caller), with a from-scratch checksum.
func icmpError(src, dst netip.Addr, typ, code uint8, mtu uint32, quoted []byte) []byte {
	m := make([]byte, 8)
	m[0], m[1] = typ, code
	if src.Is4() {
		binary.BigEndian.PutUint16(m[6:], uint16(mtu))
	} else {
		binary.BigEndian.PutUint32(m[4:], mtu)
	}
	m = append(m, quoted...)
	if src.Is4() {
		binary.BigEndian.PutUint16(m[2:], csum(m))
	} else {
		binary.BigEndian.PutUint16(m[2:], csum(pseudoHeader(src, dst, protoICMPv6, len(m)), m))
	}
	return m
}

// flowPacket is a TCP/UDP frame description the tests rewrite and rebuild.
type flowPacket struct {
	dstMAC, srcMAC net.HardwareAddr
	vlans          []uint16
	src, dst       netip.AddrPort
	proto          uint8
	payload        []byte
	udpNoCsum      bool
	ip             ipOpts
	tcpFlags       uint8 // 0: SYN
}

func (p flowPacket) frame() []byte {
	l4 := l4Segment(p.proto, p.src.Addr(), p.dst.Addr(), p.src.Port(), p.dst.Port(), p.payload, p.udpNoCsum)
	if p.proto == protoTCP && p.tcpFlags != 0 {
		l4[13] = p.tcpFlags
		l4[16], l4[17] = 0, 0
		binary.BigEndian.PutUint16(l4[16:], csum(pseudoHeader(p.src.Addr(), p.dst.Addr(), protoTCP, len(l4)), l4))
	}
	l3 := ipPacket(p.src.Addr(), p.dst.Addr(), p.proto, l4, p.ip)
	return ethFrame(p.dstMAC, p.srcMAC, p.vlans, etherTypeOf(p.src.Addr()), l3)
}

// ipBytes is the packet's IP datagram, for quoting in ICMP errors.
func (p flowPacket) ipBytes() []byte {
	l4 := l4Segment(p.proto, p.src.Addr(), p.dst.Addr(), p.src.Port(), p.dst.Port(), p.payload, p.udpNoCsum)
	return ipPacket(p.src.Addr(), p.dst.Addr(), p.proto, l4, p.ip)
}
