package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandem-lb/tandem/cluster"
	"github.com/tandem-lb/tandem/node/api"
	"github.com/tandem-lb/tandem/node/api/apitest"
)

var update = flag.Bool("update", false, "rewrite ctl/testdata/*.golden from the current output")

// harness runs clusterctl in-process against a real API handler over a real
// cluster.Store, served on a unix socket in a temporary directory.
type harness struct {
	t      *testing.T
	store  *cluster.Store
	status *apitest.Status
	sock   string
	files  map[string]string
	envs   map[string]string
	stdin  string
	log    strings.Builder // the transcript for golden files
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	store := apitest.NewStore(t)
	status := apitest.NewStatus(store)
	sock := apitest.Serve(t, apitest.NewHandler(t, store, status))
	return &harness{t: t, store: store, status: status, sock: sock, files: map[string]string{}, envs: map[string]string{}}
}

func (h *harness) env(stdout, stderr *bytes.Buffer) Env {
	return Env{
		Stdout: stdout,
		Stderr: stderr,
		Stdin:  strings.NewReader(h.stdin),
		Getenv: func(k string) string {
			if k == "TANDEM_NODE" {
				if v, ok := h.envs[k]; ok {
					return v
				}
				return h.sock
			}
			return h.envs[k]
		},
		ReadFile: func(name string) ([]byte, error) {
			if s, ok := h.files[name]; ok {
				return []byte(s), nil
			}
			return nil, fmt.Errorf("open %s: %w", name, fs.ErrNotExist)
		},
	}
}

// run runs one command line (split as a batch line is) and records it.
func (h *harness) run(line string) (code int, stdout, stderr string) {
	h.t.Helper()
	args, err := splitLine(line)
	if err != nil {
		h.t.Fatalf("splitting %q: %v", line, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code = Run(ctx, h.env(&out, &errb), args)
	// The socket path is random: the transcript says $SOCK.
	redact := func(s string) string { return strings.ReplaceAll(s, h.sock, "$SOCK") }
	fmt.Fprintf(&h.log, "$ clusterctl %s\n%s", redact(line), redact(out.String()))
	if errb.Len() > 0 {
		fmt.Fprintf(&h.log, "[stderr]\n%s", redact(errb.String()))
	}
	fmt.Fprintf(&h.log, "[exit %d]\n\n", code)
	return code, out.String(), errb.String()
}

// ok runs a line that must succeed.
func (h *harness) ok(line string) string {
	h.t.Helper()
	code, out, errs := h.run(line)
	if code != 0 {
		h.t.Fatalf("clusterctl %s: exit %d\n%s%s", line, code, out, errs)
	}
	return out
}

// refused runs a verb that must be refused with rule, and checks that it
// changed nothing.
func (h *harness) refused(line, rule string) string {
	h.t.Helper()
	before := h.store.Digest()
	code, _, errs := h.run(line)
	if code != ExitFailed {
		h.t.Fatalf("clusterctl %s: exit %d, want %d (refused)\n%s", line, code, ExitFailed, errs)
	}
	if rule != "" && !strings.Contains(errs, "rule:   "+rule+"\n") {
		h.t.Fatalf("clusterctl %s: refusal does not name rule %s:\n%s", line, rule, errs)
	}
	if rule != "" && !strings.Contains(errs, "fix:    ") {
		h.t.Fatalf("clusterctl %s: refusal says no fix:\n%s", line, errs)
	}
	if h.store.Digest() != before {
		h.t.Fatalf("clusterctl %s: refused but the configuration changed", line)
	}
	return errs
}

// golden compares the transcript with testdata/NAME.golden.
func (h *harness) golden(name string) {
	h.t.Helper()
	path := filepath.Join("..", "..", "testdata", name+".golden")
	got := h.log.String()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			h.t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		h.t.Fatalf("%v (run go test ./ctl/... -update to create it)", err)
	}
	if got != string(want) {
		h.t.Errorf("output differs from %s (run go test ./ctl/... -update after checking):\n%s", path, lineDiff(string(want), got))
	}
}

func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n  want %q\n  got  %q\n", i+1, wl, gl)
			if b.Len() > 4000 {
				break
			}
		}
	}
	return b.String()
}

// populate gives the status source a four-node cluster in two pairs.
func populate(h *harness) {
	d := h.store.Digest()
	bgp := func(state string, pfx int) []api.BGPSession {
		return []api.BGPSession{
			{Peer: "10.0.0.1", PeerAS: 65000, State: state, Prefixes: pfx},
			{Peer: "10.0.1.1", PeerAS: 65000, State: state, Prefixes: pfx},
		}
	}
	h.status.SetCluster(api.ClusterStatus{Self: "n1",
		Members: []api.Member{
			{ID: "n1", Addr: "10.0.9.1:7946", Pair: 1, State: api.MemberAlive, Digest: d, ProtoVersion: 1, BGP: bgp("ESTABLISHED", 1)},
			{ID: "n2", Addr: "10.0.9.2:7946", Pair: 1, State: api.MemberAlive, Digest: d, ProtoVersion: 1, BGP: bgp("ESTABLISHED", 1)},
			{ID: "n3", Addr: "10.0.9.3:7946", Pair: 2, State: api.MemberAlive, Digest: d, ProtoVersion: 1, BGP: bgp("ESTABLISHED", 1)},
			{ID: "n4", Addr: "10.0.9.4:7946", Pair: 2, State: api.MemberDead, Digest: "0ld0ld0ld0ld0ld0", ProtoVersion: 1, BGP: bgp("ACTIVE", 0)},
		},
		Pairs: []api.Pair{
			{ID: 1, Members: []string{"n1", "n2"}, Active: "n1", Protected: true},
			{ID: 2, Members: []string{"n3", "n4"}, Active: "n3", Protected: false},
		},
	})
	h.status.SetNode(api.NodeStatus{Member: api.Member{ID: "n2"}, Partner: "n1",
		VIPs: []netip.Addr{netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("2001:db8::10")}, Flows: 2,
		Counters: api.Counters{Packets: 1200, Bytes: 960000, NewFlows: 40, Drops: 1}})
	h.status.SetRPCNodes([]api.RPCNode{
		{Pair: 1, Node: "n1", Peer: "n2", Role: "sender", State: "streaming", Authenticated: true, ProtoVersion: 1, PeerProtoVersion: 1, Mirrored: 1234, Bytes: 113528, Lag: 3 * time.Millisecond,
			LastBulkSync: time.Date(2026, 11, 26, 9, 30, 0, 0, time.UTC)},
		{Pair: 1, Node: "n2", Peer: "n1", Role: "receiver", State: "streaming", Authenticated: true, ProtoVersion: 1, PeerProtoVersion: 1, Mirrored: 987, Bytes: 90804, Lag: 2 * time.Millisecond,
			LastBulkSync: time.Date(2026, 11, 26, 9, 30, 0, 0, time.UTC)},
		{Pair: 2, Node: "n3", Peer: "n4", Role: "sender", State: "refused", ProtoVersion: 1, PeerProtoVersion: 2,
			Reason: "peer n4 speaks mirroring protocol version 2, this node 1"},
	})
	h.status.SetConnections([]api.Conn{
		{Node: "n2", VServer: "vs1", Proto: "TCP", Client: netip.MustParseAddrPort("198.51.100.7:41234"), VIP: netip.MustParseAddrPort("203.0.113.10:80"),
			Service: "web2", Backend: netip.MustParseAddrPort("10.0.2.12:8080"), Age: 12 * time.Second},
		{Node: "n1", VServer: "ftp1", Proto: "TCP", Client: netip.MustParseAddrPort("[2001:db8:1::7]:50000"), VIP: netip.MustParseAddrPort("[2001:db8::10]:21"),
			Service: "ftp-a", Backend: netip.MustParseAddrPort("[2001:db8:2::11]:21"), Owner: 1, Mirrored: true, Age: 3 * time.Minute},
		{Node: "n2", VServer: "ftp1", Proto: "TCP", Client: netip.MustParseAddrPort("[2001:db8:1::8]:50001"), VIP: netip.MustParseAddrPort("[2001:db8::10]:21"),
			Service: "ftp-b", Backend: netip.MustParseAddrPort("[2001:db8:2::12]:21"), Owner: 1, Mirrored: true, Age: 90 * time.Second},
	})
	h.status.SetCounters(api.CounterSet{
		VServers: map[string]api.Counters{"vs1": {Packets: 5000, Bytes: 4000000, NewFlows: 120, Drops: 2}},
		Backends: map[string]map[string]api.Counters{"vs1": {
			"web1": {Packets: 2000, Bytes: 1600000, NewFlows: 50},
			"web2": {Packets: 3000, Bytes: 2400000, NewFlows: 70, Drops: 2},
		}},
	})
}

func webTier(h *harness) {
	h.t.Helper()
	h.ok("add service web1 10.0.2.11 ANY 8080 -usip YES")
	h.ok("add service web2 10.0.2.12 any 8080 -USIP yes")
	h.ok("add service web3 10.0.2.13 ANY 8080 -usip=YES")
	h.ok("add lb vserver vs1 ANY 203.0.113.10 80 -lbMethod SRCIPSRCPORTHASH -connFailover STATELESS")
	h.ok("bind lb vserver vs1 web1")
	h.ok("bind lb vserver vs1 web2 -weight 2")
	h.ok("BIND LB VSERVER vs1 web3")
	for _, s := range []string{"web1", "web2"} {
		h.status.SetHealth(s, api.HealthUp)
	}
	h.status.SetHealth("web3", api.HealthDown)
}

func TestStatelessVServer(t *testing.T) {
	h := newHarness(t)
	webTier(h)
	populate(h)
	h.ok("show lb vserver")
	h.ok("show lb vserver vs1")
	h.ok("show service")
	h.ok("show service web2")
	out := h.ok("explain flow 198.51.100.7:41234 203.0.113.10:80 TCP")
	if !strings.Contains(out, "Maglev table") || !strings.Contains(out, "any node rebuilds") {
		t.Errorf("explain of a stateless flow:\n%s", out)
	}
	h.ok("explain flow 198.51.100.7:41235 203.0.113.10:80 udp")
	h.ok("show lb vserver vs1 -o json")
	h.ok("set lb vserver vs1 -connFailover STATEFUL")
	h.ok("set lb vserver vs1 -connfailover stateful") // no change
	h.ok("explain flow 198.51.100.7:41234 203.0.113.10:80 TCP")
	h.ok("unbind lb vserver vs1 web3")
	h.ok("rm service web3")
	h.ok("rm lb vserver vs1")
	h.ok("show lb vserver")
	if c := h.store.Config(); len(c.VServers) != 0 || len(c.Services) != 2 {
		t.Errorf("store after rm: %d vservers, %d services", len(c.VServers), len(c.Services))
	}
	h.golden("stateless")
}

func TestStatefulIPv6(t *testing.T) {
	h := newHarness(t)
	populate(h)
	h.ok("add lb monitor tcp-fast TCP -interval 2s -timeout 300ms -rise 3 -fall 1")
	h.ok("add service ftp-a 2001:db8:2::11 FTP 21 -monitor tcp-fast")
	h.ok("add service ftp-b 2001:db8:2::12 FTP 21")
	h.ok("add lb vserver ftp1 FTP 2001:db8::10 21 -lbMethod LEASTCONNECTION -connFailover STATEFUL")
	h.ok("bind lb vserver ftp1 ftp-a")
	h.ok("bind lb vserver ftp1 ftp-b")
	h.status.SetHealth("ftp-a", api.HealthUp)
	out := h.ok("explain flow [2001:db8:1::7]:50000 [2001:db8::10]:21 TCP")
	if !strings.Contains(out, "Owner pair:") {
		t.Errorf("explain of a stateful flow names no owner pair:\n%s", out)
	}
	h.ok("explain flow [2001:db8:1::7]:50000 [2001:db8::10]:21 TCP -o json")
	h.ok("show lb vserver ftp1")
	h.refused("rm lb monitor tcp-fast", cluster.RuleMonitorInUse)
	h.ok("set service ftp-a -monitor ''")
	h.ok("set lb monitor tcp-fast -interval 3s -fall 2")
	h.ok("rm lb monitor tcp-fast")
	h.ok("set lb vserver ftp1 -connFailover DISABLED")
	h.ok("show config -o yaml")
	h.golden("stateful")
}

func TestClusterViews(t *testing.T) {
	h := newHarness(t)
	webTier(h)
	populate(h)
	h.ok("show cluster")
	h.ok("show node n2")
	h.ok("show rpcnode")
	h.ok("show conn")
	out := h.ok("show conn -vserver vs1")
	if strings.Contains(out, "ftp1") {
		t.Errorf("show conn -vserver vs1 lists ftp1 connections:\n%s", out)
	}
	out = h.ok("show conn -node n2")
	if strings.Contains(out, "\nn1 ") {
		t.Errorf("show conn -node n2 lists n1's connections:\n%s", out)
	}
	h.ok("show conn -node n2 -vserver vs1 --node " + h.sock)
	h.ok("drain node n3")
	out = h.ok("show cluster -o yaml")
	if !strings.Contains(out, "drained: true") {
		t.Errorf("n3 not drained in show cluster:\n%s", out)
	}
	h.ok("undrain node n3")
	if code, _, _ := h.run("drain node n9"); code != ExitFailed {
		t.Errorf("drain of an unknown node: exit %d", code)
	}
	if code, _, _ := h.run("show node n9"); code != ExitFailed {
		t.Errorf("show node n9: exit %d", code)
	}
	h.ok("show rpcnode -o json")
	h.golden("cluster")
}

// TestNounsChangeNothing runs every noun command and checks the
// configuration digest and the drain state.
func TestNounsChangeNothing(t *testing.T) {
	h := newHarness(t)
	webTier(h)
	populate(h)
	before := h.store.Digest()
	for _, line := range []string{"show lb vserver", "show lb vserver vs1", "show service", "show service web1", "show cluster",
		"show node n2", "show rpcnode", "show conn", "show config", "explain flow 198.51.100.7:1 203.0.113.10:80 TCP"} {
		for _, o := range []string{"table", "json", "yaml"} {
			h.ok(line + " -o " + o)
		}
	}
	if h.store.Digest() != before {
		t.Error("a noun command changed the configuration")
	}
	cs, _ := h.status.Cluster(context.Background())
	for _, m := range cs.Members {
		if m.Drained {
			t.Errorf("a noun command drained %s", m.ID)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	h := newHarness(t)
	for _, line := range []string{
		"add service web1 10.0.2.11 ANY",                           // missing port
		"add service web1 10.0.2.300 ANY 80",                       // bad IP
		"add service web1 10.0.2.11 TCPX 80",                       // bad type
		"add service web1 10.0.2.11 ANY 80 -usip MAYBE",            // bad YES/NO
		"add service web1 10.0.2.11 ANY 80 -colour blue",           // unknown flag
		"add lb vserver vs1 ANY 203.0.113.10 80 -lbMethod FASTEST", // bad enum
		"set lb vserver vs1",                                       // nothing to set
		"explain flow 198.51.100.7 203.0.113.10:80 TCP",            // no port
		"explain flow 198.51.100.7:1 203.0.113.10:80 SCTP",         // bad proto
		"show lb vserver -o xml",                                   // bad format
		"frobnicate",                                               // unknown command
	} {
		code, _, errs := h.run(line)
		if code != ExitUsage {
			t.Errorf("clusterctl %s: exit %d, want %d (usage)\n%s", line, code, ExitUsage, errs)
		}
		if !strings.Contains(errs, "--help") {
			t.Errorf("clusterctl %s: error does not point at --help:\n%s", line, errs)
		}
	}
	if c := h.store.Config(); len(c.Services)+len(c.VServers) != 0 {
		t.Error("a usage error changed the configuration")
	}
	h.golden("usage")
}

func TestUnreachableNode(t *testing.T) {
	h := newHarness(t)
	h.envs["TANDEM_NODE"] = filepath.Join(t.TempDir(), "nothing.sock")
	code, _, errs := h.run("show cluster")
	if code != ExitFailed || !strings.Contains(errs, "nothing.sock") {
		t.Errorf("unreachable node: exit %d\n%s", code, errs)
	}
}

func TestHelpEverywhere(t *testing.T) {
	h := newHarness(t)
	_, out, _ := h.run("--help")
	for _, cmd := range []string{"add service", "add lb vserver", "add lb monitor", "set service", "set lb vserver", "set lb monitor", "rm service",
		"rm lb vserver", "rm lb monitor", "bind lb vserver", "unbind lb vserver", "show lb vserver", "show service",
		"show cluster", "show node", "show rpcnode", "show conn", "show config", "explain flow", "drain node",
		"undrain node", "apply", "batch", "completion"} {
		if !strings.Contains(out, "  "+cmd+" ") {
			t.Errorf("--help does not list %q", cmd)
		}
		code, help, errs := h.run(cmd + " --help")
		if code != 0 || !strings.Contains(help, "Example") {
			t.Errorf("%s --help: exit %d, no example:\n%s%s", cmd, code, help, errs)
		}
	}
}

func TestTCPWithToken(t *testing.T) {
	h := newHarness(t)
	srvURL, tlsConf := serveTLS(t, h)
	h.envs["TANDEM_NODE"] = srvURL
	run := func(line string, token string) (int, string) {
		h.envs["TANDEM_TOKEN"] = token
		args, _ := splitLine(line)
		var out, errb bytes.Buffer
		env := h.env(&out, &errb)
		env.TLS = tlsConf
		code := Run(context.Background(), env, args)
		return code, out.String() + errb.String()
	}
	code, out := run("add service web1 10.0.2.11 ANY 8080 -usip YES", "not-the-token-at-all")
	if code != ExitFailed || !strings.Contains(out, "unauthenticated") {
		t.Errorf("wrong token: exit %d\n%s", code, out)
	}
	if len(h.store.Config().Services) != 0 {
		t.Fatal("an unauthenticated request changed the configuration")
	}
	if code, out := run("add service web1 10.0.2.11 ANY 8080 -usip YES", testToken); code != 0 {
		t.Errorf("with the token from TANDEM_TOKEN: exit %d\n%s", code, out)
	}
	if code, out := run("show service --token "+testToken, ""); code != 0 || !strings.Contains(out, "web1") {
		t.Errorf("with --token: exit %d\n%s", code, out)
	}
}

func TestBatchFile(t *testing.T) {
	h := newHarness(t)
	h.files["setup.txt"] = `# web tier
add service web1 10.0.2.11 ANY 8080 -usip YES
add service web2 10.0.2.12 ANY 8080 -usip YES   # second backend

add lb vserver vs1 ANY 203.0.113.10 80 -lbMethod SRCIPSRCPORTHASH -connFailover STATELESS
bind lb vserver vs1 web1
bind lb vserver vs1 web2
`
	h.ok("batch -f setup.txt")
	if c := h.store.Config(); len(c.Bindings) != 2 {
		t.Fatalf("batch made %d bindings, want 2", len(c.Bindings))
	}
	h.files["bad.txt"] = `add service web3 10.0.2.13 ANY 8080
# the next line breaks stateless-usip
bind lb vserver vs1 web3
add service web4 10.0.2.14 ANY 8080 -usip YES
`
	code, _, errs := h.run("batch -f bad.txt")
	if code != ExitFailed || !strings.Contains(errs, "batch line 3") || !strings.Contains(errs, "rule:   "+cluster.RuleStatelessUSIP) {
		t.Errorf("failing batch: exit %d\n%s", code, errs)
	}
	c := h.store.Config()
	if _, ok := c.Service("web3"); !ok {
		t.Error("line 1 of the failing batch was not applied")
	}
	if _, ok := c.Service("web4"); ok {
		t.Error("the batch went on after its failing line")
	}
	h.files["syntax.txt"] = "show service\nadd service 'web5 10.0.2.15 ANY 80\n"
	code, _, errs = h.run("batch -f syntax.txt")
	if code != ExitFailed || !strings.Contains(errs, "line 2") {
		t.Errorf("batch with a syntax error: exit %d\n%s", code, errs)
	}
	h.files["usage.txt"] = "show service\nadd service web6 10.0.2.16 ANY\n"
	code, _, errs = h.run("batch -f usage.txt")
	if code != ExitUsage || !strings.Contains(errs, "batch line 2") {
		t.Errorf("batch with a usage error: exit %d\n%s", code, errs)
	}
	h.files["nested.txt"] = "batch -f nested.txt\n"
	if code, _, _ := h.run("batch -f nested.txt"); code == 0 {
		t.Error("a batch ran a batch")
	}
	if code, _, _ := h.run("batch -f missing.txt"); code != ExitFailed {
		t.Error("a missing batch file did not fail")
	}
	h.golden("batch")
}

func TestApply(t *testing.T) {
	h := newHarness(t)
	h.files["cluster.yaml"] = `monitors:
  - name: fast
    type: TCP
    interval: 2s
    timeout: 300ms
    rise: 3
    fall: 1
services:
  - name: web1
    ip: 10.0.2.11
    type: ANY
    port: 8080
    usip: true
    monitor: fast
  - name: web2
    ip: 10.0.2.12
    type: ANY
    port: 8080
    usip: true
vservers:
  - name: vs1
    type: ANY
    vip: 203.0.113.10
    port: 80
    lbMethod: SRCIPSRCPORTHASH
    connFailover: STATELESS
bindings:
  - vserver: vs1
    service: web1
  - vserver: vs1
    service: web2
    weight: 3
`
	h.ok("apply -f cluster.yaml --dry-run")
	if len(h.store.Config().Services) != 0 {
		t.Fatal("a dry run changed the configuration")
	}
	out := h.ok("apply -f cluster.yaml")
	if strings.Count(out, "added") != 6 {
		t.Errorf("apply of a new file:\n%s", out)
	}
	if out := h.ok("apply -f cluster.yaml"); out != "no changes\n" {
		t.Errorf("second apply: %q, want no changes", out)
	}
	// Export and re-apply: a no-op.
	h.files["export.yaml"] = h.ok("show config -o yaml")
	if out := h.ok("apply -f export.yaml --prune"); out != "no changes\n" {
		t.Errorf("applying the export: %q, want no changes", out)
	}
	// Out-of-band object, kept without --prune, removed with it.
	h.ok("add service extra 10.0.2.99 ANY 9000")
	if out := h.ok("apply -f cluster.yaml"); out != "no changes\n" {
		t.Errorf("apply without prune touched an undeclared object: %q", out)
	}
	if out := h.ok("apply -f cluster.yaml -prune"); out != "removed service extra\n" {
		t.Errorf("apply --prune: %q", out)
	}
	// A file that breaks a rule is refused as a whole.
	h.files["broken.yaml"] = strings.Replace(h.files["cluster.yaml"], "    usip: true\n    monitor: fast", "    usip: false\n    monitor: fast", 1) +
		"  - vserver: vs2\n    service: web1\n"
	errs := h.refused("apply -f broken.yaml", cluster.RuleStatelessUSIP)
	if !strings.Contains(errs, cluster.RuleBindingRef) {
		t.Errorf("refusal lists only the first broken rule:\n%s", errs)
	}
	h.files["twice.yaml"] = h.files["cluster.yaml"] + "  - vserver: vs1\n    service: web2\n    weight: 1\n"
	h.refused("apply -f twice.yaml", cluster.RuleDuplicate)
	h.files["typo.yaml"] = "services:\n  - name: web1\n    ip: 10.0.2.11\n    typ: ANY\n"
	if code, _, errs := h.run("apply -f typo.yaml"); code != ExitFailed || !strings.Contains(errs, "typ") {
		t.Errorf("apply of a misspelt field: exit %d\n%s", code, errs)
	}
	h.stdin = h.files["cluster.yaml"]
	if out := h.ok("apply -f -"); out != "no changes\n" {
		t.Errorf("apply from stdin: %q", out)
	}
	h.golden("apply")
}

func TestCompletion(t *testing.T) {
	h := newHarness(t)
	_, script, _ := h.run("completion bash")
	_, zsh, _ := h.run("completion zsh")
	if !strings.HasPrefix(zsh, "#compdef clusterctl") || !strings.Contains(zsh, "bashcompinit") {
		t.Errorf("zsh script:\n%.200s", zsh)
	}
	bash, err := lookBash()
	if err != nil {
		t.Skipf("bash not found: %v", err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "c.bash")
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	for words, want := range map[string][]string{
		"clusterctl ":        {"add", "show", "explain", "apply", "--node"},
		"clusterctl add lb ": {"vserver", "monitor"},
		"clusterctl add lb vserver vs1 ANY 1.2.3.4 80 -":              {"-lbMethod", "-connFailover", "-fwdMode"},
		"clusterctl add lb vserver vs1 ANY 1.2.3.4 80 -connFailover ": {"DISABLED", "STATELESS", "STATEFUL"},
		"clusterctl show ":       {"lb", "cluster", "rpcnode", "conn", "config"},
		"clusterctl show conn -": {"-vserver", "-node"},
		"clusterctl -o ":         {"table", "json", "yaml"},
		"clusterctl completion ": {"bash", "zsh"},
	} {
		got := completeWith(t, bash, path, words)
		for _, w := range want {
			if !strings.Contains(" "+got+" ", " "+w+" ") {
				t.Errorf("completing %q: got %q, missing %s", words, got, w)
			}
		}
	}
}

func TestRewriteArgs(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"add lb vserver vs1 ANY 1.2.3.4 80 -lbMethod SRCIPSRCPORTHASH", "add lb vserver vs1 ANY 1.2.3.4 80 --lbMethod SRCIPSRCPORTHASH"},
		{"ADD LB VSERVER VS1 any 1.2.3.4 80 -LBMETHOD x", "add lb vserver VS1 any 1.2.3.4 80 --lbMethod x"},
		{"add service Show 1.2.3.4 ANY 80 -usip=yes", "add service Show 1.2.3.4 ANY 80 --usip=yes"},
		{"show conn -node n2 --node /s.sock", "show conn --conn-node n2 --node /s.sock"},
		{"-node /s.sock show conn -vserver vs1", "--node /s.sock show conn --vserver vs1"},
		{"-o json SHOW cluster", "-o json show cluster"},
		{"apply -f x.yaml -prune -dry-run", "apply -f x.yaml --prune --dry-run"},
		{"add service web1 1.2.3.4 ANY 80 -monitor -usip", "add service web1 1.2.3.4 ANY 80 --monitor -usip"},
		{"add service web1 1.2.3.4 ANY 80 -- -usip", "add service web1 1.2.3.4 ANY 80 -- -usip"},
		{"bind lb vserver vs1 web1 -weight -1 -colour red", "bind lb vserver vs1 web1 --weight -1 --colour red"},
		{"SET LB MONITOR M1 -INTERVAL 2s", "set lb monitor M1 --interval 2s"},
	} {
		got := strings.Join(RewriteArgs(strings.Fields(c.in)), " ")
		if got != c.want {
			t.Errorf("RewriteArgs(%s)\n got %s\nwant %s", c.in, got, c.want)
		}
	}
}

func TestReadBatch(t *testing.T) {
	lines, err := ReadBatch([]byte("# c\n\nadd service 'a b' \"c \\\"d\\\"\" e\\ f # tail\n  show cluster\t-o json\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []BatchLine{{3, []string{"add", "service", "a b", `c "d"`, "e f"}}, {4, []string{"show", "cluster", "-o", "json"}}}
	if fmt.Sprint(lines) != fmt.Sprint(want) {
		t.Errorf("ReadBatch = %v, want %v", lines, want)
	}
	if _, err := ReadBatch([]byte("show cluster\nadd service \"x\n")); !errors.Is(err, ErrBatchSyntax) || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("unterminated quote: %v", err)
	}
}
