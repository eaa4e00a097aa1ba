package cluster

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Health checks: every node probes every service with its monitor (TCP
// connect for now) and reports verdicts that the Machine agrees on.
//
// A service's verdict follows ADC rise/fall: it becomes UP after Rise
// consecutive successes and DOWN after Fall consecutive failures; until the
// first verdict it has none (the node abstains in the agreement). Services
// a TCP connect cannot probe — port * and UDP — are reported UP without a
// probe until UDP and ICMP monitors exist.

// Dialer opens probe connections; net.Dialer satisfies it, tests use a fake.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// CheckerConfig configures a Checker.
type CheckerConfig struct {
	// Dialer (default net.Dialer).
	Dialer Dialer
	// Report receives verdict changes (and the first verdict) per service.
	// Called from the probe goroutines; must be safe for concurrent use.
	Report func(service string, up bool)
	// Forget is called when a service is no longer probed (optional).
	Forget func(service string)
}

func (c *CheckerConfig) validate() error {
	if c.Report == nil {
		return errors.New("health checker: Report is required")
	}
	return nil
}

// Checker runs one probe loop per service.
type Checker struct {
	cfg CheckerConfig

	mu     sync.Mutex
	probes map[string]*probeLoop // by service
	closed bool
}

type probeTarget struct {
	addr    string // "ip:port"; "" = not probed, always UP
	monitor Monitor
}

type probeLoop struct {
	target probeTarget
	cancel context.CancelFunc
	done   chan struct{}
}

// NewChecker makes a checker probing nothing until Update.
func NewChecker(cfg CheckerConfig) (*Checker, error) {
	if cfg.Dialer == nil {
		cfg.Dialer = &net.Dialer{}
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Checker{cfg: cfg, probes: map[string]*probeLoop{}}, nil
}

// defaultMonitor is used by services that name none.
func defaultMonitor() Monitor {
	return Monitor{Name: "tcp-default", Type: MonitorTCP, Interval: DefaultMonitorInterval,
		Timeout: DefaultMonitorTimeout, Rise: DefaultMonitorRise, Fall: DefaultMonitorFall}
}

func targetOf(c *Config, s Service) probeTarget {
	m := defaultMonitor()
	if s.Monitor != "" {
		if mm, ok := c.Monitor(s.Monitor); ok {
			m = *mm
		}
	}
	t := probeTarget{monitor: m}
	if s.Port != 0 && s.Type != TypeUDP && s.IP.IsValid() {
		t.addr = netip.AddrPortFrom(s.IP, s.Port).String()
	}
	return t
}

// Update starts probing new services, restarts those whose address or
// monitor changed, and stops probing removed ones.
func (c *Checker) Update(cfg Config) {
	cfg.Normalize()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	want := map[string]probeTarget{}
	for _, s := range cfg.Services {
		want[s.Name] = targetOf(&cfg, s)
	}
	for name, p := range c.probes {
		if t, ok := want[name]; !ok || t != p.target {
			p.cancel()
			<-p.done
			delete(c.probes, name)
			if !ok && c.cfg.Forget != nil {
				c.cfg.Forget(name)
			}
		}
	}
	for name, t := range want {
		if _, ok := c.probes[name]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		p := &probeLoop{target: t, cancel: cancel, done: make(chan struct{})}
		c.probes[name] = p
		go c.run(ctx, name, p)
	}
}

// Close stops every probe.
func (c *Checker) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for name, p := range c.probes {
		p.cancel()
		<-p.done
		delete(c.probes, name)
	}
}

func (c *Checker) run(ctx context.Context, service string, p *probeLoop) {
	defer close(p.done)
	if p.target.addr == "" {
		c.cfg.Report(service, true)
		return
	}
	m := p.target.monitor
	var st riseFall
	t := time.NewTicker(m.Interval)
	defer t.Stop()
	for {
		ok := c.probe(ctx, p.target.addr, m.Timeout)
		if ctx.Err() != nil {
			return
		}
		if changed, up := st.observe(ok, m.Rise, m.Fall); changed {
			c.cfg.Report(service, up)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *Checker) probe(ctx context.Context, addr string, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := c.cfg.Dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// riseFall is the ADC rise/fall counter of one service.
type riseFall struct {
	known  bool
	up     bool
	streak int // consecutive results that disagree with up (or, before known, agree with the last)
	last   bool
}

// observe records one probe result and reports whether the verdict changed
// (or was reached for the first time), and the verdict.
func (r *riseFall) observe(ok bool, rise, fall int) (bool, bool) {
	if !r.known {
		if r.streak > 0 && ok != r.last {
			r.streak = 0
		}
		r.last = ok
		r.streak++
		if ok && r.streak >= rise || !ok && r.streak >= fall {
			r.known, r.up, r.streak = true, ok, 0
			return true, ok
		}
		return false, false
	}
	if ok == r.up {
		r.streak = 0
		return false, r.up
	}
	r.streak++
	if ok && r.streak >= rise || !ok && r.streak >= fall {
		r.up, r.streak = ok, 0
		return true, r.up
	}
	return false, r.up
}
