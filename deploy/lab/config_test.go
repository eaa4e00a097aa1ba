package lab

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandem-lb/tandem/node/config"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it); got:\n%s", path, got)
	}
}

func TestGoldenConfigs(t *testing.T) {
	c := Default()
	front, err := c.FrontBIRD()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "rfront.bird.conf", front)
	back, err := c.BackBIRD()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "rback.bird.conf", back)
	for _, i := range []int{1, 4} {
		y, err := c.NodeYAML(i)
		if err != nil {
			t.Fatal(err)
		}
		golden(t, fmt.Sprintf("n%d.yaml", i), y)
	}
	golden(t, "plan.golden", []byte(FormatPlan(c.Plan())))
}

// The generated node.yaml must be what tandemd reads: parse it with
// node/config and check what the lab meant.
func TestNodeYAMLParsesAsNodeConfig(t *testing.T) {
	c := Default()
	c.Nodes = 5
	for i := 1; i <= c.Nodes; i++ {
		y, err := c.NodeYAML(i)
		if err != nil {
			t.Fatal(err)
		}
		nc, err := config.Parse(y)
		if err != nil {
			t.Fatalf("node %d: node/config refuses the generated node.yaml: %v\n%s", i, err, y)
		}
		if nc.NodeID != NodeName(i) || nc.Memberlist.BindAddr != NodeBackplane(i).V4 || nc.BGP.RouterID != NodeBackplane(i).V4 {
			t.Errorf("node %d: id %q bind %v router id %v", i, nc.NodeID, nc.Memberlist.BindAddr, nc.BGP.RouterID)
		}
		if len(nc.Memberlist.Seeds) != c.Nodes-1 || slices.Contains(nc.Memberlist.Seeds, fmt.Sprintf("%v:%d", NodeBackplane(i).V4, GossipPort)) {
			t.Errorf("node %d: seeds %v", i, nc.Memberlist.Seeds)
		}
		wantPartner := map[int]string{1: "n2", 2: "n1", 3: "n4", 4: "n3", 5: ""}[i]
		if nc.Partner != wantPartner {
			t.Errorf("node %d: partner %q, want %q", i, nc.Partner, wantPartner)
		}
		if want := []netip.Addr{SNIP(i).V4, SNIP(i).V6}; !slices.Equal(nc.SNIPs, want) {
			t.Errorf("node %d: snip %v, want %v", i, nc.SNIPs, want)
		}
		if nc.Interfaces != (config.Interfaces{Front: NodeIfFront, Back: NodeIfBack, Backplane: NodeIfBackplane}) {
			t.Errorf("node %d: interfaces %+v", i, nc.Interfaces)
		}
		if len(nc.BGP.Peers) != 4 {
			t.Fatalf("node %d: %d BGP peers, want 4", i, len(nc.BGP.Peers))
		}
		for k, p := range nc.BGP.Peers {
			want := []struct {
				addr netip.Addr
				as   uint32
				kind config.PrefixKind
			}{
				{RouterFront(i).V4, c.FrontAS, config.PrefixVIPs},
				{RouterFront(i).V6, c.FrontAS, config.PrefixVIPs},
				{RouterBack(i).V4, c.BackAS, config.PrefixReturn},
				{RouterBack(i).V6, c.BackAS, config.PrefixReturn},
			}[k]
			if p.Address != want.addr || p.AS != want.as || !p.Announces(want.kind) || len(p.Announce) != 1 {
				t.Errorf("node %d peer %d: %+v, want %v AS %d announcing %s", i, k, p, want.addr, want.as, want.kind)
			}
			if p.HoldTime != 3*time.Second || p.Keepalive != time.Second {
				t.Errorf("node %d peer %d: hold %v keepalive %v", i, k, p.HoldTime, p.Keepalive)
			}
		}
		if !strings.HasPrefix(nc.API.Socket, c.StateDir+"/") || !strings.HasPrefix(nc.StateDir, c.StateDir+"/") {
			t.Errorf("node %d: socket %q state %q outside the lab's state dir", i, nc.API.Socket, nc.StateDir)
		}
	}
}

// BIRD itself must accept the generated configurations (bird -p only
// parses).
func TestBIRDParsesConfigs(t *testing.T) {
	c := Default()
	if _, err := os.Stat(c.BIRD); err != nil {
		t.Skipf("needs BIRD at %s (apt install bird2): %v", c.BIRD, err)
	}
	c.Nodes = MaxNodes
	for role, render := range map[string]func() ([]byte, error){"front": c.FrontBIRD, "back": c.BackBIRD} {
		b, err := render()
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), role+".conf")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(c.BIRD, "-p", "-c", path).CombinedOutput(); err != nil {
			t.Errorf("bird -p refuses the %s config: %v: %s", role, err, out)
		}
	}
}

func TestAddressPlan(t *testing.T) {
	c := Default()
	c.Nodes, c.Backends, c.Clients = MaxNodes, MaxBackends, MaxClients
	seen := map[netip.Addr]string{}
	add := func(what string, a netip.Addr) {
		t.Helper()
		if !netip.MustParsePrefix("198.18.0.0/15").Contains(a) && !netip.MustParsePrefix("fd00:7a6d::/48").Contains(a) {
			t.Errorf("%s %v outside the lab's prefixes", what, a)
		}
		if prev, dup := seen[a]; dup {
			t.Errorf("%v is both %s and %s", a, prev, what)
		}
		seen[a] = what
	}
	for _, a := range c.ClientAddrs() {
		add("client", a)
	}
	for i := 1; i <= c.Nodes; i++ {
		for what, p := range map[string]Pair{"node front": NodeFront(i), "router front": RouterFront(i), "node back": NodeBack(i), "router back": RouterBack(i), "backplane": NodeBackplane(i)} {
			add(fmt.Sprintf("%s %d", what, i), p.V4)
			add(fmt.Sprintf("%s %d", what, i), p.V6)
		}
	}
	for j := 1; j <= c.Backends; j++ {
		add(fmt.Sprintf("backend %d", j), Backend(j).V4)
		add(fmt.Sprintf("backend %d", j), Backend(j).V6)
	}
	for _, p := range []Pair{ClientGateway(), ClientLink(), BackendGateway()} {
		add("gateway", p.V4)
		add("gateway", p.V6)
	}
	for a, what := range seen {
		if SNIPRange4.Contains(a) || SNIPRange6.Contains(a) {
			t.Errorf("%s %v inside the SNIP ranges %v %v", what, a, SNIPRange4, SNIPRange6)
		}
	}
	for i := 1; i <= c.Nodes; i++ {
		s := SNIP(i)
		if !SNIPRange4.Contains(s.V4) || !SNIPRange6.Contains(s.V6) || s != SNIP(c.Partner(i)) && c.Partner(i) != 0 || i > 2 && (s.V4 == SNIP(1).V4 || s.V6 == SNIP(1).V6) {
			t.Errorf("node %d: SNIP %v (partner's %v): one per family per pair, in %v and %v", i, s, SNIP(c.Partner(i)), SNIPRange4, SNIPRange6)
		}
	}
	if s := SNIP(3); s.V4.String() != "198.18.80.2" || s.V6.String() != "fd00:7a6d:0:80::2" {
		t.Errorf("pair 2's SNIPs %v %v", s.V4, s.V6)
	}
	if got := NodeFront(1); got.V4.String() != "198.18.17.2" || got.V6.String() != "fd00:7a6d:0:17::2" {
		t.Errorf("node 1 front %v %v: the families must read alike", got.V4, got.V6)
	}
	for _, v := range Default().VIPs {
		if _, dup := seen[v]; dup || (!VIPRange4.Contains(v) && !VIPRange6.Contains(v)) {
			t.Errorf("VIP %v collides or is outside the VIP ranges", v)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"name", func(c *Config) { c.Name = "Bad-Name" }, "lab name"},
		{"nodes", func(c *Config) { c.Nodes = MaxNodes + 1 }, "nodes"},
		{"backends", func(c *Config) { c.Backends = -1 }, "backends"},
		{"vip", func(c *Config) { c.VIPs = []netip.Addr{netip.MustParseAddr("203.0.113.1")} }, "outside the lab's VIP ranges"},
		{"hold", func(c *Config) { c.HoldTime = 2 * time.Second }, "hold time"},
		{"as", func(c *Config) { c.FrontAS = 65001 }, "eBGP"},
		{"state", func(c *Config) { c.StateDir = "relative" }, "absolute"},
		{"long state", func(c *Config) { c.StateDir = "/" + strings.Repeat("x", 100) }, "108-byte"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{}
			tc.mod(&c)
			_, err := New(c, nil, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
	if _, err := New(Config{}, nil, nil); err != nil {
		t.Fatalf("the default config is refused: %v", err)
	}
}

// fakeRunner records commands; checks succeed when done says so.
type fakeRunner struct {
	done bool
	cmds []string
}

func (f *fakeRunner) Run(_ context.Context, argv []string) ([]byte, error) {
	cmd := strings.Join(argv, " ")
	f.cmds = append(f.cmds, cmd)
	if !f.done && strings.Contains(cmd, " link show ") {
		return nil, fmt.Errorf("%s: does not exist", cmd)
	}
	return nil, nil
}

func TestBuildSkipsWhatExists(t *testing.T) {
	c := Default()
	steps := c.Plan()
	checks, creates := 0, 0
	for _, s := range steps {
		if s.Check != nil {
			checks++
			creates += len(s.Do)
		}
	}
	total := 0
	for _, s := range steps {
		total += len(s.Do)
	}
	fresh := &fakeRunner{}
	l, err := New(c, fresh, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Build(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(fresh.cmds) != checks+total {
		t.Errorf("empty host: %d commands, want %d checks + %d steps", len(fresh.cmds), checks, total)
	}
	built := &fakeRunner{done: true}
	l, _ = New(c, built, nil)
	if err := l.Build(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(built.cmds) != checks+total-creates {
		t.Errorf("complete lab: %d commands, want %d (no creations)", len(built.cmds), checks+total-creates)
	}
	for _, cmd := range built.cmds {
		if strings.Contains(cmd, "netns add") || strings.Contains(cmd, "link add") {
			t.Errorf("rebuilding a complete lab ran %q", cmd)
		}
	}
}

func TestNamespacesStayInLab(t *testing.T) {
	c := Default()
	for _, s := range c.Plan() {
		for _, cmd := range append([][]string{s.Check}, s.Do...) {
			if cmd == nil {
				continue
			}
			// Every command names one of the lab's namespaces: nothing runs
			// in the host's.
			j := strings.Join(cmd, " ")
			if !strings.Contains(j, " "+c.Name+"-") {
				t.Errorf("command outside the lab's namespaces: %s", j)
			}
		}
	}
}
