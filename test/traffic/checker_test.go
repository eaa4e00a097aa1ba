package traffic

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// serve starts a backend server named name on a free port of addr (TCP and
// UDP on the same port) inside the namespace at ns, and returns it with
// the port.
func serve(t *testing.T, ns, name string, addr netip.Addr, port uint16) (*Server, uint16) {
	t.Helper()
	s, err := NewServer(ServerConfig{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	var pc net.PacketConn
	err = InNetns(ns, func() error {
		var err error
		ln, err = net.Listen("tcp", netip.AddrPortFrom(addr, port).String())
		if err != nil {
			return err
		}
		port = uint16(ln.Addr().(*net.TCPAddr).Port)
		pc, err = net.ListenPacket("udp", netip.AddrPortFrom(addr, port).String())
		return err
	})
	if err != nil {
		t.Fatalf("listening in %q: %v", ns, err)
	}
	go s.ServeTCP(ln)
	go s.ServeUDP(pc)
	t.Cleanup(func() { s.Close() })
	return s, port
}

func TestCheckerLoopbackAllKept(t *testing.T) {
	srv, port := serve(t, "", "lo-backend", netip.MustParseAddr("127.0.0.1"), 0)
	cfg := Config{
		Targets: []Target{
			{Mode: "plain", Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port), TCPFlows: 20, UDPFlows: 10},
		},
		Sources:     []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")},
		Duration:    1500 * time.Millisecond,
		Interval:    20 * time.Millisecond,
		StartSpread: 200 * time.Millisecond,
		Seed:        42,
	}
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	sums := rep.Summaries()
	if len(sums) != 1 {
		t.Fatalf("%d summaries, want 1", len(sums))
	}
	s := sums[0]
	t.Log(s.Line("loopback"))
	if s.Flows != 30 || s.Kept != 30 || s.Broken != 0 || s.Corrupt != 0 {
		for _, f := range rep.Results {
			if f.Outcome != Kept {
				t.Logf("flow %d %v: %s %s %s", f.ID, f.FlowKey, f.Outcome, f.Reason, f.Err)
			}
		}
		t.Fatalf("summary %+v: want all 30 kept", s)
	}
	if s.Backends["lo-backend"] != 30 {
		t.Errorf("backends %v, want all on lo-backend", s.Backends)
	}
	srcs := map[netip.Addr]bool{}
	for _, f := range rep.Results {
		if f.RoundTrips < 10 {
			t.Errorf("flow %d made only %d round trips in 1.5s at 20ms", f.ID, f.RoundTrips)
		}
		if f.MaxStall <= 0 || f.MaxStall > time.Second {
			t.Errorf("flow %d max stall %v", f.ID, f.MaxStall)
		}
		srcs[f.Src.Addr()] = true
	}
	if len(srcs) != 2 {
		t.Errorf("flows used sources %v, want both", srcs)
	}
	if st := srv.Stats(); st.Requests < 300 || st.Corrupt != 0 || st.TCPAccepted != 20 {
		t.Errorf("server stats %+v", st)
	}
	if !strings.HasPrefix(s.Line("x"), "chaos scenario=x mode=plain flows=30 kept=30 broken=0 corrupt=0 moved=0 max_stall_ms=") {
		t.Errorf("line %q", s.Line("x"))
	}
}

func TestCheckerDetectsKilledBackend(t *testing.T) {
	srv, port := serve(t, "", "doomed", netip.MustParseAddr("127.0.0.1"), 0)
	time.AfterFunc(700*time.Millisecond, func() { srv.Close() })
	rep, err := Run(context.Background(), Config{
		Targets:      []Target{{Mode: "plain", Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port), TCPFlows: 10, UDPFlows: 5}},
		Duration:     2 * time.Second,
		Interval:     20 * time.Millisecond,
		StallTimeout: time.Second,
		StartSpread:  100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	s := rep.Summaries()[0]
	t.Log(s.Line("kill"), s.Reasons)
	if s.Kept != 0 || s.Broken != 15 || s.Corrupt != 0 {
		t.Fatalf("summary %+v: want all 15 broken", s)
	}
	for _, f := range rep.Results {
		switch f.Proto {
		case "tcp":
			if f.Reason != ReasonReset && f.Reason != ReasonClosed {
				t.Errorf("tcp flow %d: reason %q (%s), want reset or closed", f.ID, f.Reason, f.Err)
			}
		case "udp":
			if f.Reason != ReasonRefused && f.Reason != ReasonTimeout {
				t.Errorf("udp flow %d: reason %q (%s), want refused or timeout", f.ID, f.Reason, f.Err)
			}
		}
		if f.RoundTrips == 0 {
			t.Errorf("flow %d broke before any round trip", f.ID)
		}
	}
}

// corruptingProxy forwards TCP from its listener to backend and flips one
// byte of the backend→client stream after skip bytes.
func corruptingProxy(t *testing.T, backend string, skip int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", backend)
			if err != nil {
				c.Close()
				continue
			}
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(b, c); b.Close() }()
			go func() {
				defer wg.Done()
				defer c.Close()
				buf := make([]byte, 4096)
				seen := 0
				for {
					n, err := b.Read(buf)
					if n > 0 {
						if seen <= skip && skip < seen+n {
							buf[skip-seen] ^= 0x20
						}
						seen += n
						if _, err := c.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func TestCheckerDetectsCorruption(t *testing.T) {
	_, port := serve(t, "", "b", netip.MustParseAddr("127.0.0.1"), 0)
	proxy := corruptingProxy(t, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port).String(), 400)
	rep, err := Run(context.Background(), Config{
		Targets:  []Target{{Mode: "plain", Addr: netip.MustParseAddrPort(proxy), TCPFlows: 3}},
		Duration: time.Second,
		Interval: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	s := rep.Summaries()[0]
	if s.Corrupt != 3 {
		t.Fatalf("summary %+v: want 3 corrupt flows", s)
	}
	for _, f := range rep.Results {
		if f.Reason != ReasonCorrupt {
			t.Errorf("flow %d: reason %q", f.ID, f.Reason)
		}
	}
}

type fakeCarrier struct {
	mu    sync.Mutex
	calls map[FlowKey]int
}

// CarrierOf answers n1 the first time a flow is asked about and n2 after,
// for odd flow source ports; even ones stay on n1.
func (c *fakeCarrier) CarrierOf(_ context.Context, k FlowKey) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls[k]++
	if c.calls[k] > 1 && k.Src.Port()%2 == 1 {
		return "n2", nil
	}
	return "n1", nil
}

func TestCheckerCarrierHookCountsMoved(t *testing.T) {
	_, port := serve(t, "", "b", netip.MustParseAddr("::1"), 0)
	fc := &fakeCarrier{calls: map[FlowKey]int{}}
	rep, err := Run(context.Background(), Config{
		Targets:  []Target{{Mode: "stateless", Addr: netip.AddrPortFrom(netip.MustParseAddr("::1"), port), TCPFlows: 10, UDPFlows: 10}},
		Duration: 500 * time.Millisecond,
		Carrier:  fc,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, f := range rep.Results {
		if fc.calls[f.FlowKey] != 2 {
			t.Errorf("flow %v: carrier asked %d times, want 2", f.FlowKey, fc.calls[f.FlowKey])
		}
		if f.Src.Port()%2 == 1 {
			want++
		}
	}
	if s := rep.Summaries()[0]; s.Moved != want || s.Kept != 20 {
		t.Fatalf("summary %+v: want %d moved, 20 kept", s, want)
	}
}

func TestConfigValidate(t *testing.T) {
	vip := netip.MustParseAddrPort("198.19.0.10:80")
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no targets", Config{}, "no targets"},
		{"no mode", Config{Targets: []Target{{Addr: vip, TCPFlows: 1}}}, "no mode"},
		{"no flows", Config{Targets: []Target{{Mode: "m", Addr: vip}}}, "positive number"},
		{"family", Config{Targets: []Target{{Mode: "m", Addr: vip, TCPFlows: 1}}, Sources: []netip.Addr{netip.MustParseAddr("fd00::1")}}, "IPv4 but no source"},
		{"payload", Config{Targets: []Target{DefaultTarget("m", vip)}, MaxPayload: MaxPayload + 1}, "max payload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Run(context.Background(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestServerConfigValidate(t *testing.T) {
	if _, err := NewServer(ServerConfig{}); err == nil {
		t.Error("a server without a name was accepted")
	}
	if _, err := NewServer(ServerConfig{Name: strings.Repeat("x", MaxName+1)}); err == nil {
		t.Error("a too long name was accepted")
	}
	s, err := NewServer(ServerConfig{Name: "ok"})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	if err := s.ServeTCP(ln); !errors.Is(err, ErrServerClosed) {
		t.Errorf("serving after close: %v", err)
	}
}

func TestCheckerStopEndsRunEarly(t *testing.T) {
	_, port := serve(t, "", "lo-backend", netip.MustParseAddr("127.0.0.1"), 0)
	stop := make(chan struct{})
	cfg := Config{
		Targets:     []Target{{Mode: "plain", Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port), TCPFlows: 5, UDPFlows: 5}},
		Duration:    time.Minute,
		Interval:    20 * time.Millisecond,
		StartSpread: 100 * time.Millisecond,
		Stop:        stop,
	}
	time.AfterFunc(700*time.Millisecond, func() { close(stop) })
	start := time.Now()
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("run took %v after Stop at 700ms of a 1m duration", d)
	}
	s := rep.Summaries()[0]
	if s.Flows != 10 || s.Kept != 10 {
		t.Fatalf("summary %+v: a stopped run keeps its flows", s)
	}
}

// With CheckSource, flows whose backend sees the client's own address are
// kept, and flows through a proxy (the backend sees the proxy) fail with
// ReasonSource, unless the target names the proxy's address as its SNAT
// (USIP OFF).
func TestCheckerCheckSource(t *testing.T) {
	_, port := serve(t, "", "b", netip.MustParseAddr("127.0.0.1"), 0)
	direct := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
	proxy := corruptingProxy(t, direct.String(), 1<<30) // never corrupts
	rep, err := Run(context.Background(), Config{
		Targets: []Target{
			{Mode: "direct", Addr: direct, TCPFlows: 3, UDPFlows: 3},
			{Mode: "proxied", Addr: netip.MustParseAddrPort(proxy), TCPFlows: 3},
			{Mode: "snat", Addr: netip.MustParseAddrPort(proxy), TCPFlows: 3, SNAT: []netip.Addr{netip.MustParseAddr("127.0.0.1")}},
			{Mode: "other-snat", Addr: netip.MustParseAddrPort(proxy), TCPFlows: 3, SNAT: []netip.Addr{netip.MustParseAddr("127.0.0.9")}},
		},
		Sources:     []netip.Addr{netip.MustParseAddr("127.0.0.2")},
		Duration:    time.Second,
		Interval:    10 * time.Millisecond,
		CheckSource: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range rep.Summaries() {
		switch s.Mode {
		case "direct":
			if s.Kept != 6 {
				t.Errorf("direct: %+v, want all 6 kept", s)
			}
		case "proxied", "other-snat":
			if s.Broken != 3 || s.Reasons[ReasonSource] != 3 {
				t.Errorf("%s: %+v, want 3 broken by source", s.Mode, s)
			}
		case "snat":
			if s.Kept != 3 {
				t.Errorf("snat: %+v, want all 3 kept (the backend sees the SNAT address)", s)
			}
		default:
			t.Errorf("mode %q", s.Mode)
		}
	}
}
