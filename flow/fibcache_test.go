package flow

import (
	"bytes"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// runOnCPU0 runs the program with the thread pinned to CPU 0, so that runs
// meet the same per-CPU fib cache.
func (e *testEnv) runOnCPU0(frame []byte) (uint32, []byte) {
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
		opts := ebpf.RunOptions{Data: frame, DataOut: out}
		r, err := e.dp.Program().Run(&opts)
		ret, out = r, opts.DataOut
		return err
	})
	if err != nil {
		e.tb.Fatal(err)
	}
	return ret, out
}

// TestFIBCache: a route/neighbour answer is reused for the TTL (a changed
// neighbour shows up only after it), never with the cache disabled, and
// never for a packet longer than one the route accepted (MTU check).
func TestFIBCache(t *testing.T) {
	for _, c := range []struct {
		name   string
		ttl    Config
		cached bool
	}{
		{"default ttl", Config{}, true},
		{"disabled", Config{FIBCacheTTL: -1}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, c.ttl)
			e.standard()
			slots := make([]uint32, e.dp.Config().TableSize)
			for i := range slots {
				slots[i] = 1 // 10.1.0.10:8080
			}
			_, err := e.dp.SetTable(vsWeb4, slots)
			e.must(err)
			p := flowPacket{dstMAC: e.macB, srcMAC: e.routerMAC, src: ap("10.2.0.5:40000"), dst: ap("10.100.0.1:80"), proto: protoTCP}
			v, out := e.runOnCPU0(p.frame())
			if v != xdpRedirect || !bytes.Equal(out[:6], neighMAC(0x10)) {
				t.Fatalf("first packet: %s to %x", verdictName(v), out[:6])
			}
			moved := neighMAC(0x77)
			if out, err := e.ns.Run("ip", "neigh", "replace", "10.1.0.10", "lladdr", moved.String(), "dev", "tfa", "nud", "permanent"); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			want := moved
			if c.cached {
				want = neighMAC(0x10)
			}
			if v, out := e.runOnCPU0(p.frame()); v != xdpRedirect || !bytes.Equal(out[:6], want) {
				t.Errorf("after the neighbour moved: %s to %x, want %x", verdictName(v), out[:6], want)
			}

			// A route with MTU 200 (locked: forwarding uses a route MTU only
			// then): a 100-byte packet goes, a 300-byte
			// one is refused although a smaller one was cached.
			if out, err := e.ns.Run("ip", "route", "add", "10.1.0.10/32", "dev", "tfa", "mtu", "lock", "200"); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			small := p
			small.src = ap("10.2.0.5:40001")
			small.payload = make([]byte, 60)
			if v, _ := e.runOnCPU0(small.frame()); v != xdpRedirect {
				t.Errorf("100-byte packet: %s", verdictName(v))
			}
			big := small
			big.payload = make([]byte, 260)
			if v, _ := e.runOnCPU0(big.frame()); v != xdpDrop {
				t.Errorf("300-byte packet over an MTU 200 route: %s, want DROP", verdictName(v))
			}
			if r := e.reasons(); r[ReasonDropFragNeeded] != 1 {
				t.Errorf("drop_frag_needed = %d, want 1", r[ReasonDropFragNeeded])
			}
		})
	}
}
