package flow

import (
	"bytes"
	"net"
	"testing"
)

// TestExactBeforeWildcard: a vserver on the exact port wins over one on "*"
// of the same VIP; other ports go to the wildcard one. Changing a vserver's
// port moves its entry.
func TestExactBeforeWildcard(t *testing.T) {
	e := newEnv(t, Config{})
	e.standard()
	// 10.100.0.1:* ANY -> backend 7 (10.1.0.11:5353); :80 TCP stays vsWeb4.
	e.must(e.dp.SetVServer(VServer{ID: vsEmpty, VIP: ip("10.100.0.1"), Port: 0, Protocol: ProtoAny, Method: MethodSourceIP, Seed: 9, Stateless: true}))
	e.setMaglev(vsEmpty, 7)
	web := flowPacket{dstMAC: e.macB, srcMAC: e.routerMAC, src: ap("10.2.0.5:40000"), dst: ap("10.100.0.1:80"), proto: protoTCP}
	// vsWeb4's backends listen on 8080, the wildcard's on 5353.
	if v, out := e.run(web.frame()); v != xdpRedirect || int(out[36])<<8|int(out[37]) != 8080 {
		t.Errorf("port 80: verdict %s to %v:%d, want vserver %d's backends on 8080", verdictName(v), net.IP(out[30:34]), int(out[36])<<8|int(out[37]), vsWeb4)
	}
	other := web
	other.dst = ap("10.100.0.1:22")
	v, out := e.run(other.frame())
	if v != xdpRedirect || !bytes.Equal(out[30:34], []byte{10, 1, 0, 11}) || int(out[36])<<8|int(out[37]) != 5353 {
		t.Errorf("port 22: verdict %s to %v:%d, want 10.1.0.11:5353", verdictName(v), net.IP(out[30:34]), int(out[36])<<8|int(out[37]))
	}
	f, err := e.dp.LookupFlow(FlowKey{Src: web.src, Dst: web.dst, Protocol: ProtoTCP})
	if err != nil || f.VServerID != vsWeb4 {
		t.Errorf("port 80 flow: %+v %v", f, err)
	}

	// vsWeb4 moves to port 8080: port 80 now falls to the wildcard, and the
	// old flow entry (of another vserver id) no longer applies.
	e.must(e.dp.SetVServer(VServer{ID: vsWeb4, VIP: ip("10.100.0.1"), Port: 8080, Protocol: ProtoTCP, Method: MethodSourceIPSourcePort, Seed: 1, Stateless: true}))
	if v, out := e.run(web.frame()); v != xdpRedirect || int(out[36])<<8|int(out[37]) != 5353 {
		t.Errorf("port 80 after the move: verdict %s to port %d, want the wildcard's 5353", verdictName(v), int(out[36])<<8|int(out[37]))
	}
	f, err = e.dp.LookupFlow(FlowKey{Src: web.src, Dst: web.dst, Protocol: ProtoTCP})
	if err != nil || f.VServerID != vsEmpty || f.BackendID != 7 {
		t.Errorf("port 80 flow after the move: %+v %v, want vserver %d backend 7", f, err, vsEmpty)
	}
}
