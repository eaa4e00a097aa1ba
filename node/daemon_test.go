package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-lb/tandem/cluster"
	"github.com/tandem-lb/tandem/flow"
	"github.com/tandem-lb/tandem/node/api"
	"github.com/tandem-lb/tandem/node/bgp"
	"github.com/tandem-lb/tandem/node/config"
	"github.com/tandem-lb/tandem/node/instance"
)

// events records what the fakes were asked to do, in order.
type events struct {
	mu  sync.Mutex
	log []string
}

func (e *events) add(format string, args ...any) {
	e.mu.Lock()
	e.log = append(e.log, fmt.Sprintf(format, args...))
	e.mu.Unlock()
}

func (e *events) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.log)
}

func (e *events) index(s string) int { return slices.Index(e.list(), s) }

type fakeDP struct {
	*fakeFlow
	ev *events
}

// fakeDataBackends is where the fake data plane's FTP data backend ids
// begin (flow.Datapath: its MaxBackends).
const fakeDataBackends = 1000

func (f *fakeDP) BaseBackendID(id uint32) (uint32, bool) {
	if id >= fakeDataBackends {
		return id - fakeDataBackends, true
	}
	return id, false
}

// Flows: a stateless flow, and a data connection's flow (as of an FTP
// vserver's: it names backend 2's data backend, the port kept).
func (f *fakeDP) Flows() ([]flow.Flow, error) {
	return []flow.Flow{
		{Key: flow.FlowKey{Src: netip.MustParseAddrPort("198.51.100.7:41234"), Dst: netip.MustParseAddrPort("203.0.113.10:80"), Protocol: flow.ProtoTCP},
			BackendID: 2, VServerID: 0, Epoch: 1, Flags: flow.FlowFlagStateless, Created: time.Second},
		{Key: flow.FlowKey{Src: netip.MustParseAddrPort("198.51.100.8:41000"), Dst: netip.MustParseAddrPort("203.0.113.10:30001"), Protocol: flow.ProtoTCP},
			BackendID: fakeDataBackends + 2, VServerID: 0, Flags: flow.FlowFlagOwned | flow.FlowFlagFTPData, Created: time.Second},
	}, nil
}

func (f *fakeDP) Attach(ifnames ...string) error {
	for _, i := range ifnames {
		f.ev.add("attach %s", i)
	}
	return nil
}

func (f *fakeDP) SetLocalAddrs([]netip.Addr) error { return nil }
func (f *fakeDP) Close() error                     { f.ev.add("dataplane close"); return nil }

type fakeAddrs struct {
	ev  *events
	mu  sync.Mutex
	set map[netip.Addr]bool
}

func (f *fakeAddrs) Add(a netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.set[a] = true
	f.ev.add("addr add %s", a)
	return nil
}
func (f *fakeAddrs) Remove(a netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.set, a)
	f.ev.add("addr remove %s", a)
	return nil
}
func (f *fakeAddrs) RemoveAll() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.set = map[netip.Addr]bool{}
	f.ev.add("addr removeall")
	return nil
}
func (f *fakeAddrs) has(a netip.Addr) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.set[a]
}

type fakeSpeaker struct {
	*noPeers
	ev *events
}

func (f *fakeSpeaker) Announce(ctx context.Context, p netip.Prefix, k config.PrefixKind, c ...uint32) error {
	err := f.noPeers.Announce(ctx, p, k, c...)
	if err == nil {
		f.ev.add("announce %s %s", p, k)
	}
	return err
}
func (f *fakeSpeaker) Withdraw(ctx context.Context, p netip.Prefix) error {
	err := f.noPeers.Withdraw(ctx, p)
	if err == nil {
		f.ev.add("withdraw %s", p)
	}
	return err
}
func (f *fakeSpeaker) Peers(ctx context.Context) ([]bgp.PeerState, error) {
	return []bgp.PeerState{{Address: netip.MustParseAddr("10.0.0.2"), AS: 65000, State: "established", Established: true}}, nil
}
func (f *fakeSpeaker) Close() error { f.ev.add("speaker close"); return f.noPeers.Close() }

// fakeCluster is a one-node cluster whose effects the test sends.
type fakeCluster struct {
	ev      *events
	store   *cluster.Store
	apply   func(cluster.Effect)
	mu      sync.Mutex
	drained bool
	vips    []netip.Addr
	others  []cluster.MemberStatus
	asked   []string // drains forwarded to other members
}

// RequestDrain forwards a drain to another member, as cluster.Cluster does.
func (f *fakeCluster) RequestDrain(id string, drained bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, o := range f.others {
		if o.ID == id {
			f.asked = append(f.asked, fmt.Sprintf("%s drained=%v", id, drained))
			return nil
		}
	}
	return cluster.ErrNotMember
}

func (f *fakeCluster) forwarded() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.asked)
}

func (f *fakeCluster) Join(seeds []string) (int, error) { return 0, nil }
func (f *fakeCluster) Store() *cluster.Store            { return f.store }
func (f *fakeCluster) Drain(d bool) {
	f.mu.Lock()
	f.drained = d
	vips := slices.Clone(f.vips)
	f.mu.Unlock()
	f.ev.add("cluster drained=%v", d)
	for _, v := range vips { // as the machine does: a drained node is not ready
		if d {
			f.apply(cluster.WithdrawVIP{VIP: v})
		} else {
			f.apply(cluster.AnnounceVIP{VIP: v})
		}
	}
}
func (f *fakeCluster) Status() cluster.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return cluster.Status{Node: "n1", ConfigDigest: f.store.Digest(), Drained: f.drained,
		Members: append([]cluster.MemberStatus{{ID: "n1", State: "alive", Self: true, Digest: f.store.Digest()}}, f.others...),
		Health:  []cluster.ServiceHealth{{Service: "web1", Up: true, Voters: 1, Live: 1}}}
}
func (f *fakeCluster) Tables() []cluster.VServerTable { return nil }
func (f *fakeCluster) Leave(time.Duration) error      { f.ev.add("cluster leave"); return nil }
func (f *fakeCluster) Close() error                   { f.ev.add("cluster close"); return nil }

type mapSysctls struct {
	mu   sync.Mutex
	vals map[string]string
}

func (m *mapSysctls) ReadSysctl(name string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.vals[name]
	if !ok {
		return "0", nil
	}
	return v, nil
}
func (m *mapSysctls) WriteSysctl(name, value string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.vals[name] = value
	return nil
}

type harness struct {
	ev       *events
	ff       *fakeFlow
	addrs    *fakeAddrs
	sp       *fakeSpeaker
	cl       *fakeCluster
	sysctls  *mapSysctls
	listened chan string // actual addresses of the TCP listeners, in the order opened
	deps     Deps
	cfg      config.Config
	stateDir string
}

func newHarness(t *testing.T) *harness {
	dir := t.TempDir()
	h := &harness{ev: &events{}, ff: newFakeFlow(), listened: make(chan string, 4), stateDir: dir}
	h.addrs = &fakeAddrs{ev: h.ev, set: map[netip.Addr]bool{}}
	h.sp = &fakeSpeaker{noPeers: newNoPeers(), ev: h.ev}
	h.sysctls = &mapSysctls{vals: map[string]string{"net.ipv4.ip_forward": "0", "net.ipv4.conf.all.rp_filter": "1"}}
	store, err := cluster.NewStore(cluster.StoreConfig{Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	h.cl = &fakeCluster{ev: h.ev, store: store}
	h.cfg = config.Default()
	h.cfg.NodeID = "n1"
	h.cfg.Interfaces = config.Interfaces{Front: "f0", Back: "b0", Backplane: "f0"}
	h.cfg.StateDir = filepath.Join(dir, "state")
	h.cfg.API.Socket = filepath.Join(dir, "api.sock")
	h.cfg.Metrics.Listen = "127.0.0.1:0"
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.cfg.API.TCP = &config.TCPListener{Listen: "127.0.0.1:0", TokenFile: token}
	h.cfg.DrainTime = 50 * time.Millisecond
	h.cfg.BGP.ReturnPrefixes = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
	h.deps = Deps{
		DataPlane: func(config.Config) (DataPlane, uint32, error) {
			h.ev.add("dataplane load")
			return &fakeDP{fakeFlow: h.ff, ev: h.ev}, testM, nil
		},
		Addresses: func(config.Config) (Addresses, error) { return h.addrs, nil },
		Speaker: func(context.Context, config.Config, *slog.Logger) (Speaker, error) {
			h.ev.add("speaker start")
			return h.sp, nil
		},
		Cluster: func(cfg config.Config, m uint32, apply func(cluster.Effect), log *slog.Logger) (Membership, error) {
			h.ev.add("cluster start")
			h.cl.apply = apply
			return h.cl, nil
		},
		Sysctls: h.sysctls,
		Listen: func(network, addr string) (net.Listener, error) {
			ln, err := net.Listen(network, addr)
			if err == nil {
				h.listened <- ln.Addr().String()
			}
			return ln, err
		},
	}
	return h
}

const testToken = "0123456789abcdef0123456789abcdef"

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDaemonLifecycle(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- New(h.cfg, h.deps, quietLog()).Run(ctx, ready) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("not ready within 5s")
	}
	if v, _ := h.sysctls.ReadSysctl("net.ipv4.ip_forward"); v != "1" {
		t.Errorf("ip_forward = %s while running", v)
	}
	if fi, err := os.Stat(h.cfg.API.Socket); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("api socket: %v %v, want mode 0600", fi.Mode(), err)
	}

	// A second tandemd on the same state directory is refused.
	h2 := newHarness(t)
	h2.cfg.StateDir = h.cfg.StateDir
	if err := New(h2.cfg, h2.deps, quietLog()).Run(context.Background(), nil); !errors.Is(err, instance.ErrAlreadyRunning) {
		t.Errorf("second daemon: %v, want ErrAlreadyRunning", err)
	}

	cfg := testConfig()
	if err := h.cl.store.Update(func(c *cluster.Config) error { *c = cfg; return nil }); err != nil {
		t.Fatal(err)
	}
	vip := netip.MustParseAddr("203.0.113.10")
	vipPrefix := netip.MustParsePrefix("203.0.113.10/32")

	// A table the data plane cannot take (wrong M): the VIP is not announced.
	bad := cluster.VServerTable{VServer: "vs1", Seed: 1, Backends: []string{"web1"}, Weights: []uint32{1}, Slots: []uint32{0, 0}}
	h.cl.apply(cluster.ProgramTable{Table: bad})
	h.cl.mu.Lock()
	h.cl.vips = []netip.Addr{vip}
	h.cl.mu.Unlock()
	h.cl.apply(cluster.AnnounceVIP{VIP: vip})
	if got := h.sp.Announced(); len(got) != 0 {
		t.Fatalf("announced %v while the data plane lacks the tables", got)
	}
	tcpAddr, maddr := <-h.listened, <-h.listened
	scrape := func() string {
		resp, err := http.Get("http://" + maddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	if m := scrape(); !strings.Contains(m, "tandem_dataplane_lagging 1") {
		t.Error("metrics do not show the data plane lagging")
	}
	good := cluster.VServerTable{VServer: "vs1", Seed: 1, Backends: []string{"web1", "web2"}, Weights: []uint32{1, 1}, Slots: []uint32{0, 1, 0, 1, 0, 1, 0}}
	h.cl.apply(cluster.ProgramTable{Table: good})
	retPrefix := netip.MustParsePrefix("198.51.100.0/24")
	if got := h.sp.Announced(); !slices.Equal(got, []netip.Prefix{retPrefix, vipPrefix}) || !h.addrs.has(vip) {
		t.Fatalf("announced %v, address %v; want the VIP and the return prefix once the table is in", got, h.addrs.has(vip))
	}
	if h.ev.index("announce 198.51.100.0/24 return") < h.ev.index("announce 203.0.113.10/32 vips") {
		t.Errorf("return prefix announced before any VIP: %v", h.ev.list())
	}
	if h.ev.index("addr add 203.0.113.10") > h.ev.index("announce 203.0.113.10/32 vips") {
		t.Errorf("route announced before the address was up: %v", h.ev.list())
	}

	// The TCP API (opened before the metrics listener) wants the token.
	for _, tc := range []struct {
		token string
		want  int
	}{{"", http.StatusUnauthorized}, {"wrong-token-wrong-token", http.StatusUnauthorized}, {testToken, http.StatusOK}} {
		req, _ := http.NewRequest("GET", "http://"+tcpAddr+"/v1/config", nil)
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("TCP API with token %q: %d, want %d", tc.token, resp.StatusCode, tc.want)
		}
	}

	// Metrics.
	body := scrape()
	for _, want := range []string{`tandem_vserver_packets_total{vserver="vs1"} 10`, `tandem_table_epoch{vserver="vs1"} 1`,
		`tandem_bgp_session_up{peer="10.0.0.2",peer_as="65000"} 1`, `tandem_backend_up{service="web1"} 1`, `tandem_bgp_announced_prefixes 2`, `tandem_dataplane_lagging 0`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// The API on the unix socket; drain through it.
	c, err := api.NewClient(api.ClientConfig{Node: h.cfg.API.Socket})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	doc, err := c.Config(ctx)
	if err != nil || doc.Digest != h.cl.store.Digest() || len(doc.Config.VServers) != 1 {
		t.Fatalf("GET config: %+v %v", doc, err)
	}
	cv, err := c.Cluster(ctx)
	if err != nil || len(cv.Members) != 1 || len(cv.Members[0].BGP) != 1 || cv.Members[0].BGP[0].State != "ESTABLISHED" {
		t.Fatalf("show cluster: %+v %v", cv, err)
	}
	if ns, err := c.Node(ctx, "n1"); err != nil || !slices.Equal(ns.VIPs, []netip.Addr{vip}) || ns.Counters.Packets != 10 {
		t.Errorf("show node n1: %+v %v", ns, err)
	}
	conns, err := c.Connections(ctx, api.ConnFilter{VServer: "vs1"})
	if err != nil || len(conns) != 2 || conns[0].VServer != "vs1" || conns[0].Service != "web2" ||
		conns[0].Backend != netip.MustParseAddrPort("10.0.2.12:8080") || conns[0].Client != netip.MustParseAddrPort("198.51.100.7:41234") || conns[0].Age <= 0 {
		t.Errorf("show conn: %+v %v", conns, err)
	}
	// The data connection shows its backend's service and address, on the
	// port it kept.
	if len(conns) == 2 && (conns[1].Service != "web2" || conns[1].Backend != netip.MustParseAddrPort("10.0.2.12:30001")) {
		t.Errorf("show conn, FTP data connection: %+v", conns[1])
	}
	if _, err := c.Drain(ctx, "n9"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("draining an unknown node: %v, want ErrNotFound", err)
	}
	h.cl.mu.Lock()
	h.cl.others = []cluster.MemberStatus{{ID: "n2", State: "alive"}}
	h.cl.mu.Unlock()
	// Another node's drain is forwarded to it through the cluster...
	if _, err := c.Drain(ctx, "n2"); err != nil {
		t.Errorf("draining another node: %v", err)
	}
	if _, err := c.Undrain(ctx, "n2"); err != nil {
		t.Errorf("undraining another node: %v", err)
	}
	if got := h.cl.forwarded(); !slices.Equal(got, []string{"n2 drained=true", "n2 drained=false"}) {
		t.Errorf("forwarded drains %v", got)
	}
	// ... and one asked of this node through another arrives as an effect.
	h.cl.apply(cluster.DrainRequest{Drained: true, From: "n2"})
	waitFor(t, "drained at n2's request", func() bool { return h.sp.Draining() && len(h.sp.Announced()) == 0 })
	h.cl.apply(cluster.DrainRequest{Drained: false, From: "n2"})
	waitFor(t, "undrained at n2's request", func() bool { return !h.sp.Draining() && len(h.sp.Announced()) == 2 })
	if _, err := c.Drain(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	if !h.sp.Draining() {
		t.Error("not announcing GRACEFUL_SHUTDOWN after drain")
	}
	waitFor(t, "the VIP withdrawn after the drain time", func() bool { return len(h.sp.Announced()) == 0 && !h.addrs.has(vip) })
	if _, err := c.Undrain(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the VIP and return prefix announced again after undrain", func() bool { return len(h.sp.Announced()) == 2 })

	// SIGTERM: routes first, then the cluster, the data plane, the
	// addresses, the sysctls.
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no shutdown within 10s")
	}
	order := []string{"speaker close", "cluster leave", "cluster close", "dataplane close", "addr removeall"}
	last := -1
	for _, s := range order {
		i := h.ev.index(s)
		if i <= last {
			t.Fatalf("shutdown order: %q at %d, after %d; events %v", s, i, last, h.ev.list())
		}
		last = i
	}
	start := []string{"dataplane load", "attach f0", "attach b0", "speaker start", "cluster start"}
	last = -1
	for _, s := range start {
		i := h.ev.index(s)
		if i <= last {
			t.Fatalf("start order: %q at %d; events %v", s, i, h.ev.list())
		}
		last = i
	}
	if v, _ := h.sysctls.ReadSysctl("net.ipv4.ip_forward"); v != "0" {
		t.Errorf("ip_forward = %s after exit, want restored 0", v)
	}
	if v, _ := h.sysctls.ReadSysctl("net.ipv4.conf.all.rp_filter"); v != "1" {
		t.Errorf("rp_filter = %s after exit, want restored 1", v)
	}
	if _, err := instance.Acquire(h.cfg.StateDir); err != nil {
		t.Errorf("lock still held after exit: %v", err)
	}
}

func TestPairIDSymmetric(t *testing.T) {
	if PairID("n1", "n2") != PairID("n2", "n1") || PairID("n1", "n2") == PairID("n3", "n4") {
		t.Error("pair ids must be symmetric and differ between pairs")
	}
	if id := PairID("a", "b"); id == 0 || id >= cluster.AutoPairBase {
		t.Errorf("pair id %d out of range", id)
	}
}
