package traffic

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-lb/tandem/deploy/lab"
)

// buildBin builds a main package of the module into dir.
func buildBin(t *testing.T, dir, pkg string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
		if _, err := os.Stat(goBin); err != nil {
			t.Skipf("needs the go tool to build %s: not in PATH nor at %s", pkg, goBin)
		}
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command(goBin, "build", "-o", out, "github.com/tandem-lb/tandem/"+pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", pkg, err, b)
	}
	return out
}

// startIn starts argv in the lab namespace of role; cleanup kills it.
func startIn(t *testing.T, l *lab.Lab, role, logPath string, argv ...string) *exec.Cmd {
	t.Helper()
	cmd := l.Command(context.Background(), role, argv...)
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		f.Close()
	})
	return cmd
}

// nexthops returns the gateways of the kernel route to dst in role's
// namespace.
func nexthops(l *lab.Lab, role, dst string) []string {
	fam := "-4"
	if strings.Contains(dst, ":") {
		fam = "-6"
	}
	out, _ := l.Command(context.Background(), role, "ip", fam, "route", "show", dst).Output()
	var hops []string
	fields := strings.Fields(string(out))
	for i := 1; i < len(fields); i++ {
		if fields[i-1] == "via" {
			hops = append(hops, fields[i])
		}
	}
	return hops
}

func waitHops(t *testing.T, l *lab.Lab, role, dst string, n int, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < timeout {
		if len(nexthops(l, role, dst)) == n {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: route to %s has next hops %v after %v, want %d", role, dst, nexthops(l, role, dst), timeout, n)
	return 0
}

// TestLabECMP brings the lab up with BGP speakers (node/bgp, as tandemd
// will embed it) standing in for tandemd on the nodes: the routers' BIRDs
// must install the VIPs and the client prefixes as ECMP routes over all
// nodes. Each node then answers on the VIP itself (a backend server bound
// to the VIP on its loopback), so the checker's flows through the VIP show
// the front router spreading them over every node; and flows to the
// backends' own addresses cross client → rfront → node → rback → backend
// and back through the back router's ECMP, with plain kernel forwarding on
// the nodes. Then a backend is SIGKILLed and a speaker too: the checker
// reports exactly the dead backend's flows broken, and BIRD withdraws the
// dead node at once.
func TestLabECMP(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a lab in namespaces; skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, veth, BIRD")
	}
	if _, err := os.Stat("/usr/sbin/bird"); err != nil {
		t.Skip("needs BIRD (make deps)")
	}
	bin := t.TempDir()
	backendBin := buildBin(t, bin, "test/cmd/labbackend")
	speakerBin := buildBin(t, bin, "test/cmd/labspeaker")
	state := t.TempDir()
	l, err := lab.New(lab.Config{
		Name:     "tl" + strconv.FormatInt(int64(os.Getpid()), 36) + "e",
		StateDir: state,
		Backend:  backendBin,
	}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := l.Config()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t.Cleanup(func() {
		if err := l.Down(context.Background()); err != nil {
			t.Errorf("down: %v", err)
		}
		out, _ := exec.Command("ip", "netns", "list").Output()
		if strings.Contains(string(out), cfg.Name+"-") {
			t.Errorf("namespaces left after down:\n%s", out)
		}
	})
	if err := l.Up(ctx); err != nil {
		t.Fatal(err)
	}

	vip4, vip6 := cfg.VIPs[0], cfg.VIPs[1]
	c4, c6 := lab.ClientPrefixes()
	for i := 1; i <= cfg.Nodes; i++ {
		n := lab.NodeName(i)
		for _, v := range []netip.Addr{vip4, vip6} {
			if out, err := l.Command(ctx, n, "ip", "addr", "add", netip.PrefixFrom(v, v.BitLen()).String(), "dev", "lo").CombinedOutput(); err != nil {
				t.Fatalf("VIP on %s: %v: %s", n, err, out)
			}
		}
		startIn(t, l, n, filepath.Join(state, "test-"+n+"-backend.log"), backendBin, "-name", n,
			"-listen", netip.AddrPortFrom(vip4, cfg.ServicePort).String(),
			"-listen", netip.AddrPortFrom(vip6, cfg.ServicePort).String())
		startIn(t, l, n, filepath.Join(state, "test-"+n+"-speaker.log"), speakerBin, "-config", cfg.NodeConfigPath(i),
			"-vip", netip.PrefixFrom(vip4, 32).String(), "-vip", netip.PrefixFrom(vip6, 128).String(),
			"-return", c4.String(), "-return", c6.String())
	}
	// The routers learn the VIPs and the client prefixes from every node.
	d := waitHops(t, l, lab.RoleFront, vip4.String(), cfg.Nodes, 15*time.Second)
	t.Logf("rfront: %s over %d nodes %v after the speakers started", vip4, cfg.Nodes, d)
	waitHops(t, l, lab.RoleFront, vip6.String(), cfg.Nodes, 10*time.Second)
	waitHops(t, l, lab.RoleBack, c4.String(), cfg.Nodes, 10*time.Second)
	waitHops(t, l, lab.RoleBack, c6.String(), cfg.Nodes, 10*time.Second)

	// The backend LAN is not announced by anyone: route it from the front
	// router over the nodes by hand.
	for _, fam := range []struct {
		dst string
		gw  func(int) netip.Addr
	}{
		{"198.18.64.0/24", func(i int) netip.Addr { return lab.NodeFront(i).V4 }},
		{"fd00:7a6d:0:64::/64", func(i int) netip.Addr { return lab.NodeFront(i).V6 }},
	} {
		args := []string{"ip", "route", "replace", fam.dst}
		for i := 1; i <= cfg.Nodes; i++ {
			args = append(args, "nexthop", "via", fam.gw(i).String())
		}
		if out, err := l.Command(ctx, lab.RoleFront, args...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
	}

	targets := []Target{
		{Mode: "vip4", Addr: netip.AddrPortFrom(vip4, cfg.ServicePort), TCPFlows: 50, UDPFlows: 20},
		{Mode: "vip6", Addr: netip.AddrPortFrom(vip6, cfg.ServicePort), TCPFlows: 50, UDPFlows: 20},
	}
	for j := 1; j <= cfg.Backends; j++ {
		for _, a := range []netip.Addr{lab.Backend(j).V4, lab.Backend(j).V6} {
			targets = append(targets, Target{Mode: "routed", Addr: netip.AddrPortFrom(a, cfg.ServicePort), TCPFlows: 8, UDPFlows: 4})
		}
	}
	ccfg := Config{
		Targets:  targets,
		Sources:  cfg.ClientAddrs(),
		Netns:    l.NetnsPath(lab.RoleClient),
		Duration: 4 * time.Second,
		Seed:     uint64(time.Now().UnixNano()),
	}
	rep, err := Run(ctx, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range rep.Summaries() {
		t.Log(s.Line("lab-ecmp"), "backends:", s.Backends)
		if s.Kept != s.Flows || s.Corrupt != 0 {
			for _, f := range rep.Results {
				if f.Mode == s.Mode && f.Outcome != Kept {
					t.Logf("flow %d %v: %s %s %s", f.ID, f.FlowKey, f.Outcome, f.Reason, f.Err)
				}
			}
			t.Errorf("%s: %d of %d flows kept, %d corrupt", s.Mode, s.Kept, s.Flows, s.Corrupt)
		}
		want := cfg.Nodes
		if s.Mode == "routed" {
			want = cfg.Backends
		}
		if len(s.Backends) != want {
			t.Errorf("%s: flows served by %v, want %d distinct servers", s.Mode, s.Backends, want)
		}
	}

	// SIGKILL backend b1 a second into a run: its flows, and only its,
	// break.
	time.AfterFunc(1500*time.Millisecond, func() {
		if err := l.Signal(lab.BackendName(1), syscall.SIGKILL); err != nil {
			t.Errorf("killing b1: %v", err)
		}
	})
	ccfg.Targets = targets[2:]
	ccfg.StallTimeout = 2 * time.Second
	rep, err = Run(ctx, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	s := rep.Summaries()[0]
	t.Log(s.Line("kill9-b1"), s.Reasons)
	for _, f := range rep.Results {
		dead := f.Dst.Addr() == lab.Backend(1).V4 || f.Dst.Addr() == lab.Backend(1).V6
		if dead && f.Outcome != Broken {
			t.Errorf("flow %d to the killed backend: %s", f.ID, f.Outcome)
		}
		if !dead && f.Outcome != Kept {
			t.Errorf("flow %d to %v: %s %s %s", f.ID, f.Dst, f.Outcome, f.Reason, f.Err)
		}
	}
	if s.Broken != 2*12 {
		t.Errorf("%d broken flows, want the killed backend's %d", s.Broken, 2*12)
	}

	// SIGKILL one node's speaker: BIRD drops it from the ECMP set as soon
	// as the session closes.
	out, _ := exec.Command("pgrep", "-f", "-n", "labspeaker -config "+cfg.NodeConfigPath(cfg.Nodes)).Output()
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("finding node %d's speaker: %v (%q)", cfg.Nodes, err, out)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	d = waitHops(t, l, lab.RoleFront, vip4.String(), cfg.Nodes-1, 5*time.Second)
	t.Logf("rfront: %s over %d nodes %v after SIGKILL of a speaker", vip4, cfg.Nodes-1, d)
	waitHops(t, l, lab.RoleBack, c4.String(), cfg.Nodes-1, 5*time.Second)
	st, err := l.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("status:\n%s", st.Format())
}
