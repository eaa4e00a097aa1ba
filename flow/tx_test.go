package flow

import (
	"net"
	"testing"

	"github.com/cilium/ebpf"
)

// xdpMD mirrors struct xdp_md, the context BPF_PROG_TEST_RUN accepts.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// runIngress runs the program as if the frame arrived on ifname.
func (e *testEnv) runIngress(frame []byte, ifname string) (uint32, []byte) {
	e.tb.Helper()
	out := make([]byte, len(frame)+256)
	var ret uint32
	err := e.ns.Do(func() error {
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

// TestXDPTX: when the egress interface is the one the frame came in on, the
// program answers XDP_TX (with the fib's MACs) instead of redirecting.
func TestXDPTX(t *testing.T) {
	e := newEnv(t, Config{})
	e.standard()
	// Client -> VIP arriving on the backend-side interface.
	p := flowPacket{dstMAC: e.macA, srcMAC: e.routerMAC, src: ap("10.2.0.5:40000"), dst: ap("10.100.0.1:80"), proto: protoTCP, payload: []byte("tx")}
	be := backendAddrPort(t, e.dp, e.expectBackend(vsWeb4, p.src), 80)
	want := p
	want.dst = be
	want.dstMAC, want.srcMAC = neighMACFor(be.Addr()), e.macA
	v, out := e.runIngress(p.frame(), "tfa")
	if v != xdpTX {
		t.Fatalf("verdict %s, want TX", verdictName(v))
	}
	diffFrames(t, "client to VIP on the backend side", out, want.frame())
	// The same packet arriving on the client side is redirected.
	if v, _ := e.runIngress(p.frame(), "tfb"); v != xdpRedirect {
		t.Errorf("from the client side: verdict %s, want REDIRECT", verdictName(v))
	}
	// Backend -> client arriving on the client-side interface.
	r := flowPacket{dstMAC: e.macB, srcMAC: neighMAC(0x10), src: ap("[fd01::10]:8443"), dst: ap("[fd02::5]:40000"), proto: protoUDP, payload: []byte("tx6")}
	wantR := r
	wantR.src = ap("[fd64::1]:443")
	wantR.dstMAC, wantR.srcMAC = neighMAC(0x05), e.macB
	v, out = e.runIngress(r.frame(), "tfb")
	if v != xdpTX {
		t.Fatalf("reverse: verdict %s, want TX", verdictName(v))
	}
	diffFrames(t, "backend to client on the client side", out, wantR.frame())
}
