package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

var testKey = bytes.Repeat([]byte{7}, 32)

type effectLog struct {
	mu      sync.Mutex
	vips    map[netip.Addr]bool
	program int
	drains  []DrainRequest
}

func (l *effectLog) apply(e Effect) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch e := e.(type) {
	case AnnounceVIP:
		l.vips[e.VIP] = true
	case WithdrawVIP:
		delete(l.vips, e.VIP)
	case ProgramTable:
		l.program++
	case DrainRequest:
		l.drains = append(l.drains, e)
	}
}

func (l *effectLog) drainRequests() []DrainRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]DrainRequest(nil), l.drains...)
}

func (l *effectLog) announced(vip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.vips[vip]
}

func startNode(t *testing.T, id, dir string, key []byte, seeds ...string) (*Cluster, *effectLog) {
	t.Helper()
	return startNodeWith(t, id, dir, key, nil, seeds...)
}

func startNodeWith(t *testing.T, id, dir string, key []byte, edit func(*ClusterConfig), seeds ...string) (*Cluster, *effectLog) {
	t.Helper()
	l := &effectLog{vips: map[netip.Addr]bool{}}
	cfg := DefaultClusterConfig()
	cfg.NodeID = id
	cfg.BindAddr = "127.0.0.1"
	cfg.BindPort = 0
	cfg.Keys = [][]byte{key}
	cfg.StateDir = dir
	cfg.TableSize = 251
	cfg.Tick = 50 * time.Millisecond
	cfg.PushPullInterval = time.Second
	cfg.ConfirmDead = 3 * time.Second
	cfg.DisableHealthChecks = true
	cfg.Apply = l.apply
	cfg.Logger = slog.New(slog.NewTextHandler(newTestWriter(t), &slog.HandlerOptions{Level: slog.LevelWarn}))
	if edit != nil {
		edit(&cfg)
	}
	c, err := NewCluster(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if len(seeds) > 0 {
		if _, err := c.Join(seeds); err != nil {
			t.Fatalf("%s joining: %v", id, err)
		}
	}
	return c, l
}

// testWriter logs through t until the test ends; memberlist goroutines
// that outlive Shutdown by a moment are then silenced (t.Log would panic).
type testWriter struct {
	t    *testing.T
	mu   *sync.Mutex
	done *bool
}

func newTestWriter(t *testing.T) testWriter {
	w := testWriter{t: t, mu: &sync.Mutex{}, done: new(bool)}
	t.Cleanup(func() {
		w.mu.Lock()
		*w.done = true
		w.mu.Unlock()
	})
	return w
}

func (w testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !*w.done {
		w.t.Log(string(bytes.TrimSpace(p)))
	}
	return len(p), nil
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s", what, within)
	return 0
}

func TestClusterFiveNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts five memberlist nodes")
	}
	var nodes []*Cluster
	var logs []*effectLog
	for i := 1; i <= 5; i++ {
		var seeds []string
		if i > 1 {
			seeds = []string{nodes[0].Addr()}
		}
		c, l := startNode(t, fmt.Sprintf("n%d", i), t.TempDir(), testKey, seeds...)
		nodes = append(nodes, c)
		logs = append(logs, l)
	}
	waitFor(t, 3*time.Second, "five members everywhere", func() bool {
		for _, c := range nodes {
			if len(c.Members()) != 5 {
				return false
			}
		}
		return true
	})

	// A change on n3 reaches all five within 2 s.
	start := time.Now()
	err := nodes[2].Store().Update(func(c *Config) error {
		c.PutService(svc("web1", "10.0.2.11", TypeANY, 8080, true))
		c.PutService(svc("web2", "10.0.2.12", TypeANY, 8080, true))
		c.PutVServer(vsrv("vs1", TypeANY, "203.0.113.10", 80, MethodSrcIPSrcPortHash, PersistNone, FailoverStateless))
		c.PutBinding(Binding{VServer: "vs1", Service: "web1"})
		c.PutBinding(Binding{VServer: "vs1", Service: "web2", Weight: 2})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := nodes[2].Store().Digest()
	took := waitFor(t, 2*time.Second, "config on all five", func() bool {
		for _, c := range nodes {
			if c.Store().Digest() != want {
				return false
			}
		}
		return true
	})
	t.Logf("configuration on all five nodes %s after the change", took.Round(time.Millisecond))
	_ = start

	// Every node reports both services UP; all five compute identical tables.
	for _, c := range nodes {
		c.ReportProbe("web1", true)
		c.ReportProbe("web2", true)
	}
	vip := netip.MustParseAddr("203.0.113.10")
	var digest string
	took = waitFor(t, 2*time.Second, "identical tables with both backends", func() bool {
		digest = ""
		for i, c := range nodes {
			ts := c.Tables()
			if len(ts) != 1 || ts[0].Weights[0] == 0 || ts[0].Weights[1] == 0 || !logs[i].announced(vip) {
				return false
			}
			if d := TablesDigest(ts); digest == "" {
				digest = d
			} else if d != digest {
				return false
			}
		}
		return true
	})
	t.Logf("identical table digests %s… and VIP announced on all five after %s", digest[:12], took.Round(time.Millisecond))

	// Health agreement: web2 DOWN on three of five nodes takes it out everywhere.
	for _, c := range nodes[:3] {
		c.ReportProbe("web2", false)
	}
	waitFor(t, 2*time.Second, "web2 out of every table", func() bool {
		for _, c := range nodes {
			ts := c.Tables()
			if len(ts) != 1 || ts[0].Weights[1] != 0 {
				return false
			}
		}
		return true
	})

	// Status shows every node with the same digest.
	st := nodes[0].Status()
	for _, m := range st.Members {
		if m.Digest != want || m.State != "alive" || !m.Addr.IsValid() {
			t.Errorf("member %+v", m)
		}
	}
	if len(st.Pairs) != 3 || !st.Pairs[0].Protected {
		t.Errorf("pairs %+v", st.Pairs)
	}

	// n4 declares n5 dead (as if their mirroring connection closed): the
	// others see it at once; memberlist never confirms (n5 is fine), so
	// after ConfirmDead (3s here: room for a loaded machine) n5 is back
	// everywhere.
	stateOf := func(c *Cluster, id string) string {
		for _, m := range c.Members() {
			if m.ID == id {
				return m.State
			}
		}
		return ""
	}
	nodes[3].DeclareDead("n5")
	took = waitFor(t, 2*time.Second, "n5 declared dead everywhere", func() bool {
		for _, c := range nodes[:4] {
			if stateOf(c, "n5") != "dead" {
				return false
			}
		}
		return true
	})
	t.Logf("n5 declared dead on the four others %s after the declaration", took.Round(time.Millisecond))
	waitFor(t, 6*time.Second, "n5 back after the unconfirmed declaration", func() bool {
		for _, c := range nodes[:4] {
			if stateOf(c, "n5") != "alive" {
				return false
			}
		}
		return true
	})

	// A killed node (no leave) is dead for the others, its pair unprotected.
	nodes[4].Close()
	took = waitFor(t, 3*time.Second, "n5 dead", func() bool { return stateOf(nodes[0], "n5") == "dead" })
	t.Logf("n5 seen dead %s after it stopped", took.Round(time.Millisecond))
}

func TestClusterWrongKey(t *testing.T) {
	if testing.Short() {
		t.Skip("starts memberlist nodes")
	}
	a, _ := startNode(t, "a", "", testKey)
	if err := a.Store().Update(func(c *Config) error {
		c.PutService(svc("secret", "10.0.2.11", TypeANY, 80, true))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	b, _ := startNode(t, "b", "", testKey, a.Addr())
	intruder, _ := startNode(t, "x", "", bytes.Repeat([]byte{9}, 32))
	if _, err := intruder.Join([]string{a.Addr(), b.Addr()}); err == nil {
		t.Fatal("node with a wrong key joined")
	}
	time.Sleep(500 * time.Millisecond)
	if n := len(intruder.Members()); n != 1 {
		t.Errorf("intruder sees %d members", n)
	}
	if cfg := intruder.Store().Config(); len(cfg.Services) != 0 {
		t.Errorf("intruder learned the configuration: %+v", cfg.Services)
	}
	for _, c := range []*Cluster{a, b} {
		for _, m := range c.Members() {
			if m.ID == "x" {
				t.Errorf("%s lists the intruder", c.cfg.NodeID)
			}
		}
	}
}

func TestClusterRestartKeepsConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("starts memberlist nodes")
	}
	dir := t.TempDir()
	a, _ := startNode(t, "a", dir, testKey)
	if err := a.Store().Update(func(c *Config) error {
		c.PutService(svc("web1", "10.0.2.11", TypeANY, 80, true))
		c.PutVServer(vsrv("vs1", TypeANY, "203.0.113.10", 80, MethodSrcIPSrcPortHash, PersistNone, FailoverStateless))
		c.PutBinding(Binding{VServer: "vs1", Service: "web1"})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := a.Store().Digest()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b, _ := startNode(t, "a", dir, testKey)
	if got := b.Store().Digest(); got != want {
		t.Fatalf("restarted node has digest %s, want %s", got, want)
	}
	waitFor(t, time.Second, "table from the reloaded config", func() bool { return len(b.Tables()) == 1 })

	// A corrupt state file stops the start with a clear error.
	bad := t.TempDir()
	if err := writeFile(bad, StateFileName, "{"); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultClusterConfig()
	cfg.NodeID, cfg.Keys, cfg.StateDir, cfg.BindAddr, cfg.BindPort = "c", [][]byte{testKey}, bad, "127.0.0.1", 0
	if _, err := NewCluster(cfg); !errors.Is(err, ErrCorruptState) {
		t.Errorf("want ErrCorruptState, got %v", err)
	}
}

func TestClusterConfigValidate(t *testing.T) {
	for name, edit := range map[string]func(*ClusterConfig){
		"no id":      func(c *ClusterConfig) { c.NodeID = "" },
		"no key":     func(c *ClusterConfig) { c.Keys = nil },
		"short key":  func(c *ClusterConfig) { c.Keys = [][]byte{[]byte("short")} },
		"slow probe": func(c *ClusterConfig) { c.ProbeTimeout = time.Second },
	} {
		cfg := DefaultClusterConfig()
		cfg.NodeID, cfg.Keys = "n1", [][]byte{testKey}
		edit(&cfg)
		cfg.fillDefaults()
		if err := cfg.validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestSplitDelta(t *testing.T) {
	var es []Entry
	for i := 0; i < 50; i++ {
		s := svc(fmt.Sprintf("svc%02d", i), "10.0.0.1", TypeANY, uint16(i+1), true)
		es = append(es, Entry{Kind: KindService, Key: s.Name, Version: Version{Clock: 1, Node: "n1"}, Service: &s})
	}
	parts := splitDelta(Message{Type: MsgDelta, From: "n1", Entries: es}, maxGossip)
	n := 0
	for _, p := range parts {
		b, err := p.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > maxGossip+100 {
			t.Errorf("part of %d bytes", len(b))
		}
		n += len(p.Entries)
	}
	if n != 50 || len(parts) < 2 {
		t.Errorf("%d entries in %d parts", n, len(parts))
	}
}

func writeFile(dir, name, content string) error {
	return os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600)
}

// TestClusterHealthChecks: a node with its health checker probing a real
// listener announces the VIP once the backend is UP and withdraws it when
// the listener closes.
func TestClusterHealthChecks(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a memberlist node")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
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

	l := &effectLog{vips: map[netip.Addr]bool{}}
	cfg := DefaultClusterConfig()
	cfg.NodeID, cfg.Keys, cfg.BindAddr, cfg.BindPort = "h1", [][]byte{testKey}, "127.0.0.1", 0
	cfg.TableSize, cfg.Tick, cfg.Apply = 251, 50*time.Millisecond, l.apply
	cfg.Logger = slog.New(slog.NewTextHandler(newTestWriter(t), &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := NewCluster(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	err = c.Store().Update(func(x *Config) error {
		x.PutMonitor(Monitor{Name: "fast", Interval: 50 * time.Millisecond, Timeout: 20 * time.Millisecond, Rise: 2, Fall: 2})
		x.PutService(Service{Name: "web1", IP: addr.Addr(), Type: TypeTCP, Port: addr.Port(), USIP: true, Monitor: "fast"})
		x.PutVServer(vsrv("vs1", TypeTCP, "203.0.113.10", 80, MethodRoundRobin, PersistNone, FailoverStateful))
		x.PutBinding(Binding{VServer: "vs1", Service: "web1"})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	vip := netip.MustParseAddr("203.0.113.10")
	took := waitFor(t, 3*time.Second, "VIP announced with web1 UP", func() bool { return l.announced(vip) })
	t.Logf("announced %s after the configuration (settle 1s, rise 2 x 50ms)", took.Round(time.Millisecond))
	ln.Close()
	took = waitFor(t, 2*time.Second, "VIP withdrawn with web1 DOWN", func() bool { return !l.announced(vip) })
	t.Logf("withdrawn %s after the listener closed", took.Round(time.Millisecond))
	if ts := c.Tables(); len(ts) != 1 || ts[0].HasBackend() {
		t.Errorf("tables %+v", ts)
	}
}

// TestClusterLeave: a graceful leave removes the member at once (no dead
// entry), and its auto pair re-forms.
func TestClusterLeave(t *testing.T) {
	if testing.Short() {
		t.Skip("starts memberlist nodes")
	}
	a, _ := startNode(t, "a", "", testKey)
	b, _ := startNode(t, "b", "", testKey, a.Addr())
	c, _ := startNode(t, "c", "", testKey, a.Addr())
	waitFor(t, 3*time.Second, "three members", func() bool { return len(a.Members()) == 3 && len(c.Members()) == 3 })
	if ps := a.Pairs(); len(ps) != 2 || !ps[0].Protected || ps[0].Members[1] != "b" {
		t.Fatalf("pairs before: %+v", ps)
	}
	if err := b.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "b gone", func() bool { return len(a.Members()) == 2 && len(c.Members()) == 2 })
	if ps := a.Pairs(); len(ps) != 1 || !ps[0].Protected || ps[0].Members[1] != "c" {
		t.Errorf("pairs after: %+v", ps)
	}
}

// TestClusterLargeHealthReport: a report of 200 services does not fit a
// gossip packet; it reaches the other node directly, long before push/pull
// (set to 30s here) would carry it.
func TestClusterLargeHealthReport(t *testing.T) {
	if testing.Short() {
		t.Skip("starts memberlist nodes")
	}
	slow := func(c *ClusterConfig) { c.PushPullInterval = 30 * time.Second }
	a, _ := startNodeWith(t, "a", "", testKey, slow)
	b, _ := startNodeWith(t, "b", "", testKey, slow, a.Addr())
	waitFor(t, 3*time.Second, "two members", func() bool { return len(a.Members()) == 2 && len(b.Members()) == 2 })
	const n = 200
	if err := a.Store().Update(func(c *Config) error {
		for i := 0; i < n; i++ {
			c.PutService(svc(fmt.Sprintf("svc%03d", i), fmt.Sprintf("10.0.%d.%d", i/250, 1+i%250), TypeANY, 80, true))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "config on b", func() bool { return b.Store().Digest() == a.Store().Digest() })
	for i := 0; i < n; i++ {
		a.ReportProbe(fmt.Sprintf("svc%03d", i), true)
	}
	took := waitFor(t, 3*time.Second, "a's 200 verdicts on b", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.machine.reports["a"]) == n
	})
	t.Logf("200-service report on b after %s", took.Round(time.Millisecond))
}

// TestClusterGossipsBGP: a node's BGP session summary reaches the others'
// member views, so `show cluster` on any node shows every node's sessions.
func TestClusterGossipsBGP(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two memberlist nodes")
	}
	a, _ := startNode(t, "n1", t.TempDir(), testKey)
	b, _ := startNode(t, "n2", t.TempDir(), testKey, a.Addr())
	waitFor(t, 3*time.Second, "two members", func() bool { return len(a.Members()) == 2 && len(b.Members()) == 2 })
	b.SetBGP(3, 4)
	waitFor(t, 3*time.Second, "n2's BGP summary on n1", func() bool {
		for _, m := range a.Members() {
			if m.ID == "n2" {
				return m.BGPUp == 3 && m.BGPPeers == 4
			}
		}
		return false
	})
}

// TestClusterRequestDrain: a drain asked of one node for another reaches the
// other as a DrainRequest effect; an unknown node is refused.
func TestClusterRequestDrain(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two memberlist nodes")
	}
	a, la := startNode(t, "n1", t.TempDir(), testKey)
	b, lb := startNode(t, "n2", t.TempDir(), testKey, a.Addr())
	waitFor(t, 3*time.Second, "two members", func() bool { return len(a.Members()) == 2 && len(b.Members()) == 2 })
	if err := a.RequestDrain("n2", true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "drain request on n2", func() bool {
		d := lb.drainRequests()
		return len(d) == 1 && d[0].Drained && d[0].From == "n1"
	})
	if err := a.RequestDrain("n2", false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "undrain request on n2", func() bool {
		d := lb.drainRequests()
		return len(d) == 2 && !d[1].Drained
	})
	if err := a.RequestDrain("n1", true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "local drain request on n1", func() bool { return len(la.drainRequests()) == 1 })
	if err := a.RequestDrain("n9", true); !errors.Is(err, ErrNotMember) {
		t.Errorf("drain of an unknown node: %v, want ErrNotMember", err)
	}
}
