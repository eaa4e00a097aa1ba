package cluster

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

func TestRiseFall(t *testing.T) {
	type step struct {
		ok      bool
		changed bool
		up      bool
	}
	var r riseFall
	// rise 2, fall 3: no verdict until 2 successes; then 3 failures for DOWN.
	steps := []step{
		{true, false, false}, {false, false, false}, {true, false, false}, {true, true, true},
		{false, false, true}, {false, false, true}, {true, false, true}, // the streak resets
		{false, false, true}, {false, false, true}, {false, true, false},
		{true, false, false}, {true, true, true},
	}
	for i, s := range steps {
		changed, up := r.observe(s.ok, 2, 3)
		if changed != s.changed || (changed && up != s.up) || (r.known && r.up != s.up) {
			t.Fatalf("step %d (ok=%v): changed=%v up=%v, want changed=%v up=%v", i, s.ok, changed, up, s.changed, s.up)
		}
	}
	// A first verdict can be DOWN.
	var d riseFall
	d.observe(false, 2, 2)
	if changed, up := d.observe(false, 2, 2); !changed || up {
		t.Error("two failures do not give a first DOWN verdict")
	}
}

type fakeDialer struct {
	up    atomic.Bool
	dials atomic.Int64
}

type nopConn struct{ net.Conn }

func (nopConn) Close() error { return nil }

func (f *fakeDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	f.dials.Add(1)
	if f.up.Load() {
		return nopConn{}, nil
	}
	return nil, errors.New("connection refused")
}

type reports struct {
	ch chan string
}

func newReports() *reports { return &reports{ch: make(chan string, 100)} }

func (r *reports) report(service string, up bool) {
	s := service + " down"
	if up {
		s = service + " up"
	}
	r.ch <- s
}

func (r *reports) expect(t *testing.T, want string, within time.Duration) {
	t.Helper()
	select {
	case got := <-r.ch:
		if got != want {
			t.Fatalf("got report %q, want %q", got, want)
		}
	case <-time.After(within):
		t.Fatalf("no report %q within %s", want, within)
	}
}

func monitoredConfig(addr netip.AddrPort) Config {
	return Config{
		Services: []Service{
			{Name: "web1", IP: addr.Addr(), Type: TypeTCP, Port: addr.Port(), Monitor: "fast"},
			{Name: "star", IP: addr.Addr(), Type: TypeANY, Port: 0},
		},
		Monitors: []Monitor{{Name: "fast", Type: MonitorTCP, Interval: 20 * time.Millisecond, Timeout: 10 * time.Millisecond, Rise: 2, Fall: 2}},
	}
}

func TestCheckerFakeDialer(t *testing.T) {
	d := &fakeDialer{}
	d.up.Store(true)
	r := newReports()
	var forgot atomic.Value
	c, err := NewChecker(CheckerConfig{Dialer: d, Report: r.report, Forget: func(s string) { forgot.Store(s) }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Update(monitoredConfig(netip.MustParseAddrPort("10.0.2.11:80")))
	got := map[string]bool{}
	for i := 0; i < 2; i++ {
		select {
		case s := <-r.ch:
			got[s] = true
		case <-time.After(2 * time.Second):
			t.Fatal("no first verdicts")
		}
	}
	if !got["web1 up"] || !got["star up"] {
		t.Fatalf("first verdicts %v", got)
	}
	d.up.Store(false)
	r.expect(t, "web1 down", 2*time.Second)
	d.up.Store(true)
	r.expect(t, "web1 up", 2*time.Second)
	// Removing the service stops its probe.
	c.Update(Config{})
	if forgot.Load() != "web1" && forgot.Load() != "star" {
		t.Error("Forget not called")
	}
	n := d.dials.Load()
	time.Sleep(100 * time.Millisecond)
	if d.dials.Load() != n {
		t.Error("still probing a removed service")
	}
}

func TestCheckerRealListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	addr := netip.MustParseAddrPort(ln.Addr().String())
	r := newReports()
	c, err := NewChecker(CheckerConfig{Report: r.report})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg := monitoredConfig(addr)
	cfg.Services = cfg.Services[:1]
	c.Update(cfg)
	r.expect(t, "web1 up", 2*time.Second)
	ln.Close()
	start := time.Now()
	r.expect(t, "web1 down", 2*time.Second)
	t.Logf("DOWN %s after the listener closed (fall 2, interval 20ms)", time.Since(start).Round(time.Millisecond))
}
