package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-lb/tandem/cluster"
	"github.com/tandem-lb/tandem/node/api"
	"github.com/tandem-lb/tandem/node/internal/nstest"
)

// The test binary doubles as tandemd: run as a child with this variable set,
// it is the daemon (so the test needs no separate build).
const mainEnv = "TN_TANDEMD_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) != "" {
		os.Exit(run(os.Args[1:], os.Stderr))
	}
	os.Exit(m.Run())
}

func TestCheckConfig(t *testing.T) {
	var out bytes.Buffer
	dir := t.TempDir()
	keyring := filepath.Join(dir, "keyring")
	os.WriteFile(keyring, []byte(base64.StdEncoding.EncodeToString(make([]byte, 32))+"\n"), 0o600)
	good := filepath.Join(dir, "node.yaml")
	os.WriteFile(good, []byte("nodeId: n1\ninterfaces: {front: eth0}\nmemberlist: {bindAddr: 10.0.0.1, keyringFile: "+keyring+"}\n"), 0o600)
	if code := run([]string{"--config", good, "--check"}, &out); code != 0 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	out.Reset()
	// The example names files this machine does not have: --check says so.
	if code := run([]string{"--config", "../../config/testdata/node.yaml", "--check"}, &out); code != 2 || !strings.Contains(out.String(), "/etc/tandem/keyring") {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	out.Reset()
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("nodeId: n1\nbogus: 1\n"), 0o600)
	if code := run([]string{"--config", bad}, &out); code != 2 || !strings.Contains(out.String(), "line 2: unknown key \"bogus\"") {
		t.Fatalf("exit %d: %s", code, out.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startTandemd(t *testing.T, ns, conf string) (*exec.Cmd, *syncBuffer, chan error) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, exe, "--config", conf)
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
		if t.Failed() {
			t.Logf("tandemd output:\n%s", out.String())
		}
	})
	return cmd, out, done
}

// TestTandemdWithBIRD runs tandemd as a process in a namespace, peering
// with BIRD in another: the VIP route appears once the node is ready (a
// vserver with a healthy backend), and is gone within 1s of SIGTERM.
func TestTandemdWithBIRD(t *testing.T) {
	nstest.RequireRoot(t, "bird", "birdc")
	nsR, nsN, nsB := nstest.NewNS(t, "ir"), nstest.NewNS(t, "in"), nstest.NewNS(t, "ib")
	front, _ := nstest.Veth(t, nsN, []string{"10.0.0.1/30"}, nsR, []string{"10.0.0.2/30"})
	back, _ := nstest.Veth(t, nsN, []string{"10.0.2.1/24"}, nsB, []string{"10.0.2.11/24"})
	nstest.Veth(t, nsN, []string{"10.0.1.1/30"}, nsR, []string{"10.0.1.2/30"}) // to the back router
	bird := nstest.StartBIRD(t, nsR, `
router id 10.0.0.2;
ipv4 table back4;
protocol device { scan time 1; }
protocol bgp tnback {
	local 10.0.1.2 as 65002; neighbor 10.0.1.1 as 65001; passive on; hold time 9;
	ipv4 { table back4; import all; export none; };
}
protocol bgp tn4 {
	local 10.0.0.2 as 65000; neighbor 10.0.0.1 as 65001; passive on; hold time 9;
	ipv4 { import all; export none; };
}
`)
	dir := t.TempDir()
	key := make([]byte, 32)
	rand.Read(key)
	keyring := filepath.Join(dir, "keyring")
	os.WriteFile(keyring, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600)
	sock := filepath.Join(dir, "api.sock")
	conf := filepath.Join(dir, "node.yaml")
	os.WriteFile(conf, []byte(fmt.Sprintf(`nodeId: n1
interfaces: {front: %s, back: %s}
memberlist: {bindAddr: 10.0.0.1, keyringFile: %s}
bgp:
  localAs: 65001
  peers:
    - {address: 10.0.0.2, as: 65000, announce: [vips]}
    - {address: 10.0.1.2, as: 65002, announce: [return]}
  returnPrefixes: [198.51.100.0/24]
api: {socket: %s}
metrics: {listen: "127.0.0.1:9410"}
stateDir: %s
xdpMode: native
drainTime: 1s
log: {level: debug}
`, front.Name, back.Name, keyring, sock, filepath.Join(dir, "state"))), 0o600)

	cmd, out, done := startTandemd(t, nsN, conf)
	// Loading the BPF program can take long on a loaded machine (the
	// verifier), hence the generous bound.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("tandemd exited at start: %v\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no api socket within 60s:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A second tandemd on the same state directory is refused.
	second := exec.Command("ip", "netns", "exec", nsN, os.Args[0], "--config", conf)
	second.Env = append(os.Environ(), mainEnv+"=1")
	so, err := second.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 || !strings.Contains(string(so), "another tandemd is already running") {
		t.Errorf("second tandemd: %v\n%s", err, so)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := api.NewClient(api.ClientConfig{Node: sock})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Port "*" services are UP without a probe; this test is about the
	// node's lifecycle, not the health checker.
	if _, err := c.AddService(ctx, cluster.Service{Name: "web1", IP: netip.MustParseAddr("10.0.2.11"), Type: cluster.TypeANY, Port: 0, USIP: true}); err != nil {
		t.Fatal(err)
	}
	configured := time.Now()
	if _, err := c.AddVServer(ctx, cluster.VServer{Name: "vs1", Type: cluster.TypeANY, VIP: netip.MustParseAddr("203.0.113.10"), Port: 80,
		LBMethod: cluster.MethodSrcIPSrcPortHash, Persistence: cluster.PersistNone, ConnFailover: cluster.FailoverStateless, FwdMode: cluster.FwdNAT}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Bind(ctx, "vs1", "web1", 1); err != nil {
		t.Fatal(err)
	}
	vip := netip.MustParsePrefix("203.0.113.10/32")
	d := bird.WaitRoute(t, "", 20*time.Second, "the VIP in BIRD once the node is ready", func(r map[netip.Prefix]nstest.Route) bool {
		_, ok := r[vip]
		return ok
	})
	t.Logf("VIP route in BIRD %v after the bind (%v after configuring)", d, time.Since(configured))
	ret := netip.MustParsePrefix("198.51.100.0/24")
	bird.WaitRoute(t, "back4", 10*time.Second, "the return prefix at the back router", func(r map[netip.Prefix]nstest.Route) bool {
		_, ok := r[ret]
		_, leak := r[vip]
		return ok && !leak
	})
	if r, err := bird.Routes(""); err != nil || r[ret].Protocol != "" {
		t.Errorf("return prefix leaked to the front router: %v %v", r, err)
	}
	if lo := nstest.InNS(t, nsN, "ip", "-o", "addr", "show", "dev", "lo"); !strings.Contains(lo, "203.0.113.10/32") {
		t.Errorf("VIP not on lo while announced:\n%s", lo)
	}
	if v := strings.TrimSpace(nstest.InNS(t, nsN, "cat", "/proc/sys/net/ipv4/ip_forward")); v != "1" {
		t.Errorf("ip_forward = %s while running", v)
	}
	cv, err := c.Cluster(ctx)
	if err != nil || len(cv.Members) != 1 || len(cv.Members[0].BGP) != 2 || cv.Members[0].BGP[0].State != "ESTABLISHED" {
		t.Errorf("show cluster: %+v %v", cv, err)
	}

	// SIGKILL: BIRD drops the route as soon as the session's TCP connection
	// closes; the VIP address and the sysctls stay behind.
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	d = bird.WaitRoute(t, "", 1500*time.Millisecond, "the VIP gone after SIGKILL", func(r map[netip.Prefix]nstest.Route) bool {
		_, ok := r[vip]
		return !ok
	})
	t.Logf("VIP route gone from BIRD %v after SIGKILL", d)
	select {
	case err := <-done:
		done <- err // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("tandemd survived SIGKILL for 5s")
	}
	if lo := nstest.InNS(t, nsN, "ip", "-o", "addr", "show", "dev", "lo"); !strings.Contains(lo, "203.0.113.10/32") {
		t.Errorf("expected the killed run's VIP address on lo:\n%s", lo)
	}

	// Restart: the configuration persisted in the state directory, so the
	// VIP comes back with no API call; the next run adopts what the killed
	// one left (VIP address, original sysctls) and undoes it on exit.
	cmd, out, done = startTandemd(t, nsN, conf)
	d = bird.WaitRoute(t, "", 20*time.Second, "the VIP back after a restart", func(r map[netip.Prefix]nstest.Route) bool {
		_, ok := r[vip]
		return ok
	})
	t.Logf("VIP route back %v after the restart (%v after the kill)", d, time.Since(killed))
	bird.WaitRoute(t, "back4", 10*time.Second, "the return prefix back after a restart", func(r map[netip.Prefix]nstest.Route) bool {
		_, ok := r[ret]
		return ok
	})

	// Drain: GRACEFUL_SHUTDOWN first, the route withdrawn after drainTime;
	// undrain brings it back without the community.
	if _, err := c.Drain(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	drained := time.Now()
	bird.WaitRoute(t, "", 2*time.Second, "GRACEFUL_SHUTDOWN on the VIP after drain", func(r map[netip.Prefix]nstest.Route) bool {
		return r[vip].HasCommunity(65535, 0)
	})
	bird.WaitRoute(t, "", 5*time.Second, "the VIP withdrawn after the drain time", func(r map[netip.Prefix]nstest.Route) bool {
		_, ok := r[vip]
		return !ok
	})
	if d := time.Since(drained); d < time.Second {
		t.Errorf("VIP withdrawn %v after the drain, before the 1s drain time", d)
	}
	if _, err := c.Undrain(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	bird.WaitRoute(t, "", 5*time.Second, "the VIP back, without GRACEFUL_SHUTDOWN, after undrain", func(r map[netip.Prefix]nstest.Route) bool {
		rt, ok := r[vip]
		return ok && !rt.HasCommunity(65535, 0)
	})

	// SIGTERM: the route goes first, within 1s; the process exits 0.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	d = bird.WaitRoute(t, "", time.Second, "the VIP gone after SIGTERM", func(r map[netip.Prefix]nstest.Route) bool {
		_, ok := r[vip]
		return !ok
	})
	t.Logf("VIP route gone from BIRD %v after SIGTERM", d)
	bird.WaitRoute(t, "back4", time.Second, "the return prefix gone after SIGTERM", func(r map[netip.Prefix]nstest.Route) bool {
		_, ok := r[ret]
		return !ok
	})
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("tandemd exit: %v\n%s", err, out.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("tandemd did not exit within 15s of SIGTERM:\n%s", out.String())
	}
	if lo := nstest.InNS(t, nsN, "ip", "-o", "addr", "show", "dev", "lo"); strings.Contains(lo, "203.0.113.10") {
		t.Errorf("VIP left on lo after exit:\n%s", lo)
	}
	if v := strings.TrimSpace(nstest.InNS(t, nsN, "cat", "/proc/sys/net/ipv4/ip_forward")); v != "0" {
		t.Errorf("ip_forward = %s after exit, want restored 0", v)
	}
	if xdp := nstest.InNS(t, nsN, "ip", "-o", "link", "show", "dev", front.Name); strings.Contains(xdp, "xdp") {
		t.Errorf("XDP still attached after exit:\n%s", xdp)
	}
	for _, want := range []string{"bgp routes withdrawn", "left the cluster", "data plane unloaded", "vip addresses removed", "sysctls restored", "stopped cleanly"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("log lacks %q", want)
		}
	}
	log := out.String()
	if os.Getenv("TN_SHOW_LOG") != "" {
		t.Logf("tandemd output:\n%s", log)
	}
	if strings.Index(log, "bgp routes withdrawn") > strings.Index(log, "data plane unloaded") {
		t.Error("data plane unloaded before the routes were withdrawn")
	}
}
