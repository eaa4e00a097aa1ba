package flow

import (
	"net/netip"
	"testing"
	"time"
)

// BenchmarkOwnedHit: an established flow of an owned ROUNDROBIN vserver at
// its owner: owner choice (rendezvous over one pair), flow-table hit,
// rewrite, redirect.
func BenchmarkOwnedHit(b *testing.B) {
	e := statefulEnv(b)
	e.ownPairs()
	client, vip := ap("10.2.0.5:40000"), ap("10.100.0.7:80")
	if v, _ := e.run(tcpFrame(e.macB, e.routerMAC, client, vip, tcpSYN, nil)); v != xdpRedirect {
		b.Fatalf("SYN: verdict %s", verdictName(v))
	}
	f := tcpFrame(e.macB, e.routerMAC, client, vip, tcpACK, make([]byte, 64))
	runBench(b, e, benchCase{verdict: xdpRedirect, frame: func(int) []byte { return f }})
}

// BenchmarkSteer: a packet of an owned flow at a node that is not its owner
// among four live pairs: owner choice, encapsulation, fib, redirect.
func BenchmarkSteer(b *testing.B) {
	e := statefulEnv(b)
	e.must(e.dp.SetPairs([]Pair{
		{ID: 1, Live: true, Active: ip("10.1.0.20")},
		{ID: 2, Live: true, Active: ip("10.1.0.21")},
		{ID: 3, Live: true, Active: ip("10.1.0.22")},
		{ID: 4, Live: true, Active: ip("10.1.0.23")},
	}))
	f := tcpFrame(e.macB, e.routerMAC, ap("10.2.0.5:40000"), ap("10.100.0.7:80"), tcpACK, make([]byte, 64))
	runBench(b, e, benchCase{verdict: xdpRedirect, frame: func(int) []byte { return f }})
}

// BenchmarkOwnedNew: every packet is a new flow of an owned, mirrored
// ROUNDROBIN vserver at its owner: SYN, backend in turn, flow and reply
// entries, ring-buffer event (the ring is drained outside the measured
// time), rewrite, redirect.
func BenchmarkOwnedNew(b *testing.B) {
	e := statefulEnv(b)
	e.ownPairs()
	r, err := e.dp.Events()
	e.must(err)
	defer r.Close()
	vip := ap("10.100.0.7:80")
	runBench(b, e, benchCase{
		verdict: xdpRedirect,
		frame: func(i int) []byte {
			c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 2, byte(i >> 24), byte(i >> 16)}), uint16(i)|1)
			return tcpFrame(e.macB, e.routerMAC, c, vip, tcpSYN, nil)
		},
		after: func(i int) error {
			if i%1024 == 1023 {
				for {
					r.SetDeadline(timeNowPlus())
					if _, err := r.Read(); err != nil {
						return nil
					}
				}
			}
			return nil
		},
	})
}

func timeNowPlus() time.Time { return time.Now().Add(time.Millisecond) }
