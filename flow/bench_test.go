package flow

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"
)

// The data-plane benchmarks run the program with BPF_PROG_TEST_RUN, one
// packet per run (repeat = 1: with repeat > 1 the kernel would rerun the
// program on its own rewritten output), b.N runs. The time per packet is the
// kernel's own measurement of each run (Program.Benchmark's duration), so the
// syscall around it is not counted; an XDP_PASS program is measured on the
// same frame in the same loop, and ns/pkt-net is the difference: the cost of
// Tandem's program itself. Forwarded packets go through bpf_fib_lookup and
// bpf_redirect (the namespace of the forwarding tests has the neighbours).
// xdp_lb tail-calls xdp_full from the same run, so the figure of a packet
// that takes the full path includes both. Hits are served by the hot cache
// from the flow's third packet on (the second fills it; the benchmarks run
// one packet before measuring, so all but the first measured packet); a
// generation tick (every FIBCacheTTL) sends one packet per flow and CPU
// through the full path again. The flows of the Miss benchmarks are all
// new (TCP SYNs). doc.go ("Performance") lists figures measured here.

type benchCase struct {
	verdict uint32
	frame   func(i int) []byte
	after   func(i int) error // runs outside the measured time
}

func runBench(b *testing.B, e *testEnv, c benchCase) {
	prog, base := e.dp.Program(), e.dp.PassProgram()
	var progT, baseT time.Duration
	b.ResetTimer()
	err := e.ns.Do(func() error {
		for i := 0; i < b.N; i++ {
			f := c.frame(i)
			_, d, err := base.Benchmark(f, 1, nil)
			if err != nil {
				return err
			}
			baseT += d
			v, d, err := prog.Benchmark(f, 1, nil)
			if err != nil {
				return err
			}
			if v != c.verdict {
				return fmt.Errorf("packet %d: verdict %s, want %s", i, verdictName(v), verdictName(c.verdict))
			}
			progT += d
			if c.after != nil {
				if err := c.after(i); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	n := float64(b.N)
	b.ReportMetric(float64(progT)/n, "ns/pkt")
	b.ReportMetric(float64(baseT)/n, "ns/pkt-base")
	b.ReportMetric(float64(progT-baseT)/n, "ns/pkt-net")
}

func benchEnv(b *testing.B) *testEnv {
	e := newEnv(b, Config{TableSize: 65537, MaxVServers: 8, FlowTableSize: 1 << 20})
	e.standard()
	return e
}

// BenchmarkFlowHit: an established IPv4 TCP flow (the entry exists; ACK
// segments, which the hot cache serves).
func BenchmarkFlowHit(b *testing.B) {
	e := benchEnv(b)
	f := flowPacket{dstMAC: e.macB, srcMAC: e.routerMAC, src: ap("10.2.0.5:40000"), dst: ap("10.100.0.1:80"), proto: protoTCP, payload: make([]byte, 64), tcpFlags: tcpACK}.frame()
	if v, _ := e.run(f); v != xdpRedirect { // creates the flow
		b.Fatalf("verdict %s", verdictName(v))
	}
	runBench(b, e, benchCase{verdict: xdpRedirect, frame: func(int) []byte { return f }})
}

// BenchmarkFlowMiss: every packet is a new flow: vserver lookup, flow-table
// miss, Maglev slot of the packet hash, flow insert, rewrite, fib, redirect.
// Each packet has a new source port (and address every 65535 packets), and
// its entry is deleted after the run, outside the measured time, so that
// the LRU stays small and every run really misses.
func BenchmarkFlowMiss(b *testing.B) {
	e := benchEnv(b)
	f := flowPacket{dstMAC: e.macB, srcMAC: e.routerMAC, src: ap("10.2.0.5:1"), dst: ap("10.100.0.1:80"), proto: protoTCP, payload: make([]byte, 64)}.frame()
	key, err := FlowKey{Src: ap("10.2.0.5:1"), Dst: ap("10.100.0.1:80"), Protocol: ProtoTCP}.encode()
	if err != nil {
		b.Fatal(err)
	}
	const ipSrc, tcpSport = 14 + 12, 14 + 20
	runBench(b, e, benchCase{
		verdict: xdpRedirect,
		frame: func(i int) []byte {
			binary.BigEndian.PutUint16(f[tcpSport:], uint16(1+i%65535))
			f[ipSrc+2] = byte(i / 65535)
			return f
		},
		after: func(i int) error {
			key.Src[0] = binary.LittleEndian.Uint32(f[ipSrc:])
			key.Sport = htons(uint16(1 + i%65535))
			return e.dp.objs.Flows.Delete(&key)
		},
	})
}

// missFrames gives each packet a new source port (and address every 65535
// packets): every packet is a new flow.
func missFrames(e *testEnv, dst string) (frame func(int) []byte, key func(int, []byte) lbFlowKey) {
	f := flowPacket{dstMAC: e.macB, srcMAC: e.routerMAC, src: ap("10.2.0.5:1"), dst: ap(dst), proto: protoTCP, payload: make([]byte, 64)}.frame()
	k, err := FlowKey{Src: ap("10.2.0.5:1"), Dst: ap(dst), Protocol: ProtoTCP}.encode()
	if err != nil {
		e.tb.Fatal(err)
	}
	const ipSrc, tcpSport = 14 + 12, 14 + 20
	frame = func(i int) []byte {
		binary.BigEndian.PutUint16(f[tcpSport:], uint16(1+i%65535))
		f[ipSrc+2] = byte(i / 65535)
		return f
	}
	key = func(i int, f []byte) lbFlowKey {
		k.Src[0] = binary.LittleEndian.Uint32(f[ipSrc:])
		k.Sport = htons(uint16(1 + i%65535))
		return k
	}
	return frame, key
}

// BenchmarkFlowMissUntracked: BenchmarkFlowMiss on a vserver that records
// no flow (VServer.Untracked): vserver lookup, Maglev slot of the packet
// hash, hot-cache write, rewrite, fib, redirect; no flow-table lookup nor
// insert. The difference with BenchmarkFlowMiss is what recording costs.
func BenchmarkFlowMissUntracked(b *testing.B) {
	e := benchEnv(b)
	e.dp.mu.Lock()
	v := e.dp.vservers[vsWeb4]
	e.dp.mu.Unlock()
	v.Untracked = true
	e.must(e.dp.SetVServer(v))
	frame, key := missFrames(e, "10.100.0.1:80")
	runBench(b, e, benchCase{
		verdict: xdpRedirect,
		frame:   frame,
		after: func(i int) error {
			k := key(i, frame(i))
			if err := e.dp.objs.Flows.Lookup(&k, new(lbFlow)); err == nil {
				return fmt.Errorf("packet %d: an untracked vserver recorded a flow", i)
			}
			return nil
		},
	})
}

// BenchmarkReverse: backend -> client, source rewritten back to the VIP.
// ack: the replies of an established flow (ACK segments), which the hot
// cache serves from the second on; syn-ack: a flow's first reply, which
// always takes the full path (reverse entry, FIB cache).
func BenchmarkReverse(b *testing.B) {
	for _, c := range []struct {
		name  string
		flags byte
	}{{"ack", tcpACK}, {"syn-ack", tcpSYN | tcpACK}} {
		b.Run(c.name, func(b *testing.B) {
			e := benchEnv(b)
			f := flowPacket{dstMAC: e.macA, srcMAC: neighMAC(0x10), src: ap("10.1.0.10:8080"), dst: ap("10.2.0.5:40000"), proto: protoTCP, payload: make([]byte, 64), tcpFlags: c.flags}.frame()
			if v, _ := e.run(f); v != xdpRedirect {
				b.Fatalf("verdict %s", verdictName(v))
			}
			runBench(b, e, benchCase{verdict: xdpRedirect, frame: func(int) []byte { return f }})
		})
	}
}

// BenchmarkNonVIPPass: IPv4 TCP neither for a VIP nor from a service.
//
// The program leaves this frame unchanged, so here (only) the kernel may
// also rerun it on the same frame: ns/pkt-net-warm is the net cost with
// repeat = 10000, caches warm, next to the cold one-run-per-syscall figure.
func BenchmarkNonVIPPass(b *testing.B) {
	e := benchEnv(b)
	f := flowPacket{dstMAC: e.macB, srcMAC: e.routerMAC, src: ap("10.2.0.5:40000"), dst: ap("10.2.0.1:22"), proto: protoTCP, payload: make([]byte, 64)}.frame()
	runBench(b, e, benchCase{verdict: xdpPass, frame: func(int) []byte { return f }})
	var warm, warmBase time.Duration
	err := e.ns.Do(func() error {
		for i := 0; i < 20; i++ {
			_, d, err := e.dp.PassProgram().Benchmark(f, 10000, nil)
			if err != nil {
				return err
			}
			warmBase += d
			_, d, err = e.dp.Program().Benchmark(f, 10000, nil)
			if err != nil {
				return err
			}
			warm += d
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(warm-warmBase)/20, "ns/pkt-net-warm")
}

// BenchmarkFlowHitIPv6: an established IPv6 TCP flow.
func BenchmarkFlowHitIPv6(b *testing.B) {
	e := benchEnv(b)
	f := flowPacket{dstMAC: e.macB, srcMAC: e.routerMAC, src: ap("[fd02::5]:40000"), dst: ap("[fd64::1]:443"), proto: protoTCP, payload: make([]byte, 64), tcpFlags: tcpACK}.frame()
	if v, _ := e.run(f); v != xdpRedirect {
		b.Fatalf("verdict %s", verdictName(v))
	}
	runBench(b, e, benchCase{verdict: xdpRedirect, frame: func(int) []byte { return f }})
}
