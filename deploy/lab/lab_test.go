package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var labCounter atomic.Int32

// testLab returns a small lab with a name of its own (so it never meets a
// demo lab or another test's) and a state dir in the test's temp dir;
// cleanup takes it down and checks that nothing of it is left.
func testLab(t *testing.T, mod func(*Config)) *Lab {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a lab in namespaces; skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, veth, BIRD")
	}
	for _, tool := range []string{"ip", "ethtool", "/usr/sbin/bird", "/usr/sbin/birdc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (make deps): %v", tool, err)
		}
	}
	c := Config{
		Name:     fmt.Sprintf("tl%s%c", strconv.FormatInt(int64(os.Getpid()), 36), 'a'+labCounter.Add(1)%26),
		Nodes:    2,
		Backends: 2,
		Clients:  4,
		StateDir: t.TempDir(),
	}
	if mod != nil {
		mod(&c)
	}
	l, err := New(c, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := l.Down(ctx); err != nil {
			t.Errorf("down: %v", err)
		}
		if left, _ := l.namespaces(); len(left) > 0 {
			t.Errorf("namespaces left after down: %v", left)
		}
	})
	return l
}

func TestUpIdempotentDownClean(t *testing.T) {
	l := testLab(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	if err := l.Up(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("up in %v", time.Since(start))
	st, err := l.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Ready() {
		t.Fatalf("not ready after up:\n%s", st.Format())
	}
	if len(st.Namespaces) != len(l.Config().Namespaces()) {
		t.Errorf("namespaces %v, want %v", st.Namespaces, l.Config().Namespaces())
	}
	// The routers wait for the nodes: every session passive, none up.
	for _, r := range []string{RoleFront, RoleBack} {
		out := st.BIRD[r]
		for i := 1; i <= l.cfg.Nodes; i++ {
			for _, fam := range []string{"_4", "_6"} {
				line := findLine(out, NodeName(i)+fam+" ")
				if !strings.Contains(line, "Passive") {
					t.Errorf("%s: session %s%s not waiting passively: %q", r, NodeName(i), fam, line)
				}
			}
		}
	}
	pids := st.Processes

	// Up again: nothing rebuilt, nothing restarted.
	if err := l.Up(ctx); err != nil {
		t.Fatalf("second up: %v", err)
	}
	st2, err := l.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name, pid := range pids {
		if st2.Processes[name] != pid {
			t.Errorf("second up restarted %s: pid %d -> %d", name, pid, st2.Processes[name])
		}
	}

	// Reachability of the plumbing: every node's front and back link, the
	// backplane, and the backend LAN answer (TCP to a closed port is
	// refused at once, which proves the path without a server).
	probes := []struct{ from, to string }{
		{RoleClient, ClientGateway().V4.String()},
		{RoleClient, "[" + ClientGateway().V6.String() + "]"},
		{NodeName(1), RouterFront(1).V4.String()},
		{NodeName(1), "[" + RouterBack(1).V6.String() + "]"},
		{NodeName(1), NodeBackplane(2).V4.String()},
		{NodeName(2), "[" + NodeBackplane(1).V6.String() + "]"},
		{NodeName(2), Backend(1).V4.String()},
		{BackendName(2), "[" + BackendGateway().V6.String() + "]"},
	}
	for _, p := range probes {
		out, err := l.Command(ctx, p.from, "bash", "-c", "exec 3<>/dev/tcp/"+strings.Trim(p.to, "[]")+"/9 2>&1; true").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "refused") {
			t.Errorf("%s -> %s: want connection refused, got %v: %s", p.from, p.to, err, out)
		}
	}

	// Checksum offload off where XDP would rewrite; GRO on at node links.
	out, err := l.Command(ctx, RoleClient, "ethtool", "-k", clientIf).Output()
	if err != nil || !strings.Contains(string(out), "tx-checksumming: off") {
		t.Errorf("client tx checksumming not off: %v\n%s", err, out)
	}
	out, err = l.Command(ctx, RoleFront, "ethtool", "-k", NodeName(1)).Output()
	if err != nil || !strings.Contains(string(out), "generic-receive-offload: on") {
		t.Errorf("GRO not on at rfront:n1: %v\n%s", err, out)
	}
}

func findLine(s, prefix string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// Down must clean a half-built lab whose BIRD was SIGKILLed, leaving its
// pid file behind.
func TestDownAfterCrash(t *testing.T) {
	l := testLab(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	steps := l.cfg.Plan()
	half := &Lab{cfg: l.cfg, run: l.run, log: l.log}
	for _, s := range steps[:len(steps)/2] {
		if s.Check != nil {
			if _, err := half.run.Run(ctx, s.Check); err == nil {
				continue
			}
		}
		for _, cmd := range s.Do {
			if _, err := half.run.Run(ctx, cmd); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := l.WriteConfigs(); err != nil {
		t.Fatal(err)
	}
	pid, _, err := l.cfg.start(l.cfg.procs()[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := l.waitBIRD(ctx, RoleFront, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// A second, unrelated process whose pid a stale pid file names: Down
	// must not touch it.
	bystander := exec.Command("sleep", "30")
	if err := bystander.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { bystander.Process.Kill(); bystander.Wait() }()
	os.WriteFile(filepath.Join(l.cfg.StateDir, "b9.pid"), []byte(strconv.Itoa(bystander.Process.Pid)), 0o644)

	syscall.Kill(pid, syscall.SIGKILL)
	time.Sleep(100 * time.Millisecond)
	if err := l.Down(ctx); err != nil {
		t.Fatal(err)
	}
	if left, _ := l.namespaces(); len(left) > 0 {
		t.Fatalf("namespaces left: %v", left)
	}
	if err := bystander.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("down signalled a process that is not the lab's: %v", err)
	}
	if names := l.cfg.pidNames(); len(names) > 0 {
		t.Errorf("pid files left: %v", names)
	}
}

func TestUpReportsBadBinaries(t *testing.T) {
	l := testLab(t, func(c *Config) { c.Backend = "/nonexistent/labbackend" })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.Up(ctx); err == nil || !strings.Contains(err.Error(), "not an executable") {
		t.Fatalf("up with a missing backend binary: %v", err)
	}
	// A backend that exits at once (false ignores its arguments and fails).
	l2, err := New(Config{Name: l.cfg.Name, Nodes: l.cfg.Nodes, Backends: 1, Clients: 1, StateDir: l.cfg.StateDir, Backend: "/bin/false"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l2.Up(ctx); err == nil || !strings.Contains(err.Error(), "b1 exited after start") {
		t.Fatalf("up with a backend that dies: %v", err)
	}
}
