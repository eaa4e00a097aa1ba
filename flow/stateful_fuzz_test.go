package flow

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"unsafe"
)

// FuzzSteered runs frames at a node that decapsulates (its backplane address
// is the outer destination): the program never aborts, and a frame to the
// steering port from an address that is not a member is never forwarded.
// Seeds are well-formed steered frames (a SYN, a reply) and broken ones.
func FuzzSteered(f *testing.F) {
	e := statefulEnv(f)
	// This node is peerBP; selfBP is the only other member.
	e.must(e.dp.SetBackplane(ip(peerBP), []netip.Addr{ip(selfBP), ip(peerBP)}))
	e.must(e.dp.SetPairs([]Pair{{ID: 1, Live: true, Local: true, Active: ip(peerBP)}}))
	steered := func(src netip.Addr, inner []byte, reply bool) []byte {
		h := steerHeader(e, ip(peerBP), ap("10.2.0.5:40000"), 1, reply, len(inner))
		copy(h[14+12:], src.AsSlice())
		binary.BigEndian.PutUint16(h[14+10:], 0)
		binary.BigEndian.PutUint16(h[14+10:], csum(h[14:34]))
		return append(h, inner...)
	}
	client, vip, be := ap("10.2.0.5:40000"), ap("10.100.0.7:80"), ap("10.1.0.10:9090")
	f.Add(steered(ip(selfBP), tcpIP(client, vip, tcpSYN, []byte("x")), false))
	f.Add(steered(ip(selfBP), tcpIP(be, client, tcpACK, nil), true))
	f.Add(steered(ip(selfBP), tcpIP(ap("[fd02::5]:1"), ap("[fd64::2]:80"), tcpSYN, nil), false))
	f.Add(steered(ip("10.1.0.99"), tcpIP(client, vip, tcpSYN, nil), false))
	f.Add(steered(ip(selfBP), []byte{0x45, 0, 0, 20}, false))
	f.Add(steered(ip(selfBP), nil, false))
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) < 14 || len(frame) > 4000 {
			t.Skip("the kernel runs XDP on 14 to ~4000 bytes")
		}
		v, _, err := e.tryRun(e.dp.Program(), frame)
		if err != nil {
			t.Fatal(err)
		}
		if v == xdpAborted || v > xdpRedirect {
			t.Fatalf("verdict %s on %x", verdictName(v), frame)
		}
		// IPv4 without options or VLAN, UDP to the steering port at this
		// node, from a non-member: never forwarded.
		if len(frame) >= 14+28 && binary.BigEndian.Uint16(frame[12:]) == ethIPv4 && frame[14] == 0x45 &&
			frame[14+9] == protoUDP && netip.AddrFrom4([4]byte(frame[30:34])) == ip(peerBP) &&
			binary.BigEndian.Uint16(frame[36:]) == DefaultSteerPort {
			src := netip.AddrFrom4([4]byte(frame[26:30]))
			if src != ip(selfBP) && src != ip(peerBP) && (v == xdpTX || v == xdpRedirect) {
				t.Fatalf("forwarded a steered frame from non-member %v: %x", src, frame)
			}
		}
	})
}

// FuzzDecodeEvent: the ring-buffer record decoder never panics and accepts
// only records of a known kind and family.
func FuzzDecodeEvent(f *testing.F) {
	var ev lbFlowEvent
	ev.Type, ev.Family, ev.Proto = uint8(EventNew), familyV4, 6
	good := unsafe.Slice((*byte)(unsafe.Pointer(&ev)), unsafe.Sizeof(ev))
	f.Add(append([]byte(nil), good...))
	f.Add(good[:10])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		raw, err := decodeEvent(b)
		if err != nil {
			return
		}
		if k := EventKind(raw.Type); k != EventNew && k != EventClose && k != EventExpect || raw.Family != familyV4 && raw.Family != familyV6 {
			t.Fatalf("accepted %+v", raw)
		}
	})
}
