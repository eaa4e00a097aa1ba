package nstest

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BIRD is a BIRD 2 daemon the test started in a namespace, with its own
// config, control socket and pid file in a temporary directory.
type BIRD struct {
	Socket string
	cmd    *exec.Cmd
}

// StartBIRD starts `bird -f` in namespace ns with the given configuration
// and waits until its control socket answers. It is killed on cleanup.
func StartBIRD(t testing.TB, ns, conf string) *BIRD {
	t.Helper()
	RequireRoot(t, "bird", "birdc")
	dir := t.TempDir()
	confPath := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	b := &BIRD{Socket: filepath.Join(dir, "bird.ctl")}
	logf, err := os.Create(filepath.Join(dir, "bird.log"))
	if err != nil {
		t.Fatal(err)
	}
	b.cmd = exec.Command("ip", "netns", "exec", ns, "bird", "-f", "-c", confPath, "-s", b.Socket, "-P", filepath.Join(dir, "bird.pid"))
	b.cmd.Stdout, b.cmd.Stderr = logf, logf
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("starting bird: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = b.cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = b.cmd.Process.Signal(syscall.SIGKILL)
		<-done
		logf.Close()
		if t.Failed() {
			if log, err := os.ReadFile(logf.Name()); err == nil {
				t.Logf("bird log:\n%s", log)
			}
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := b.birdc("show status"); err == nil {
			return b
		}
		select {
		case <-done:
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("bird exited at start:\n%s", log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("bird's control socket did not answer within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (b *BIRD) birdc(cmd string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "birdc", append([]string{"-s", b.Socket}, strings.Fields(cmd)...)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("birdc %s: %v: %s", cmd, err, out)
	}
	return string(out), nil
}

// Route is one route in BIRD's table.
type Route struct {
	Prefix      netip.Prefix
	Protocol    string
	NextHop     string
	Communities [][2]uint16
}

// HasCommunity reports whether the route carries (a, b).
func (r Route) HasCommunity(a, b uint16) bool {
	for _, c := range r.Communities {
		if c == [2]uint16{a, b} {
			return true
		}
	}
	return false
}

// AttachBIRD returns a BIRD for reading the tables of a daemon another
// process started, through its control socket.
func AttachBIRD(socket string) *BIRD { return &BIRD{Socket: socket} }

// Routes reads BIRD's tables (`show route all [table T]`; table "" means the
// master tables), keyed by prefix (the first, best path of each prefix).
func (b *BIRD) Routes(table string) (map[netip.Prefix]Route, error) {
	cmd := "show route all"
	if table != "" {
		cmd += " table " + table
	}
	out, err := b.birdc(cmd)
	if err != nil {
		return nil, err
	}
	return ParseShowRouteAll(out)
}

// ParseShowRouteAll parses the output of BIRD 2's `show route all`.
func ParseShowRouteAll(out string) (map[netip.Prefix]Route, error) {
	routes := map[netip.Prefix]Route{}
	var cur *Route
	flush := func() {
		if cur != nil {
			if _, dup := routes[cur.Prefix]; !dup {
				routes[cur.Prefix] = *cur
			}
			cur = nil
		}
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "BIRD ") || strings.HasPrefix(line, "Table ") {
			flush()
			continue
		}
		if line[0] != ' ' && line[0] != '\t' {
			flush()
			f := strings.Fields(line)
			if len(f) == 0 {
				continue
			}
			p, err := netip.ParsePrefix(f[0])
			if err != nil {
				return nil, fmt.Errorf("route line %q: %w", line, err)
			}
			cur = &Route{Prefix: p}
			if i := strings.Index(line, "["); i >= 0 {
				if rest := strings.Fields(line[i+1:]); len(rest) > 0 {
					cur.Protocol = rest[0]
				}
			}
			continue
		}
		if cur == nil {
			continue
		}
		s := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(s, "unicast ["):
			// A second path of the same prefix: keep the first.
			flush()
		case strings.HasPrefix(s, "BGP.next_hop:"):
			cur.NextHop = strings.TrimSpace(strings.TrimPrefix(s, "BGP.next_hop:"))
		case strings.HasPrefix(s, "BGP.community:"):
			for _, c := range strings.Fields(strings.TrimPrefix(s, "BGP.community:")) {
				c = strings.Trim(c, "()")
				a, bb, ok := strings.Cut(c, ",")
				x, err1 := strconv.ParseUint(a, 10, 16)
				y, err2 := strconv.ParseUint(bb, 10, 16)
				if !ok || err1 != nil || err2 != nil {
					return nil, fmt.Errorf("community %q in %q", c, s)
				}
				cur.Communities = append(cur.Communities, [2]uint16{uint16(x), uint16(y)})
			}
		}
	}
	flush()
	return routes, sc.Err()
}

// WaitRoute polls until cond holds for BIRD's table or timeout passes, and
// returns how long it took.
func (b *BIRD) WaitRoute(t testing.TB, table string, timeout time.Duration, what string, cond func(map[netip.Prefix]Route) bool) time.Duration {
	t.Helper()
	start := time.Now()
	var last map[netip.Prefix]Route
	for {
		routes, err := b.Routes(table)
		if err != nil {
			t.Fatal(err)
		}
		last = routes
		if cond(routes) {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			out, _ := b.birdc("show protocols all")
			t.Fatalf("%s: not within %v; BIRD's routes: %v\n%s", what, timeout, last, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
