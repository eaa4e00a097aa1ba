// Package nstest builds network namespaces, veths and a BIRD router for
// tandemd's privileged tests. Everything it creates carries the "tn" prefix
// plus the test process id and a random suffix, and is removed by t.Cleanup
// even when the test fails.
package nstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// RequireRoot skips the test unless it runs as root with the tools it needs,
// and under -short (`make test-unit` runs what needs neither root nor BPF).
func RequireRoot(t testing.TB, tools ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs root (network namespaces, veths, BIRD): skipped under -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, veths, BIRD)")
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s in PATH: %v", tool, err)
		}
	}
}

// Name returns a unique name of at most 15 characters: "tn", tag (keep it
// to 1-3 characters), the pid and a random suffix.
func Name(t testing.TB, tag string) string {
	t.Helper()
	var b [2]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	n := fmt.Sprintf("tn%s%d%s", tag, os.Getpid()%1000000, hex.EncodeToString(b[:])[:3])
	if len(n) > 15 {
		t.Fatalf("name %q is longer than 15 characters: shorten tag %q", n, tag)
	}
	return n
}

// Run runs a command, failing the test with its output on error.
func Run(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// InNS runs a command in namespace ns.
func InNS(t testing.TB, ns string, args ...string) string {
	t.Helper()
	return Run(t, append([]string{"ip", "netns", "exec", ns}, args...)...)
}

// NewNS creates a network namespace with loopback up, removed on cleanup.
func NewNS(t testing.TB, tag string) string {
	t.Helper()
	ns := Name(t, tag)
	Run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "del", ns).Run()
	})
	InNS(t, ns, "ip", "link", "set", "lo", "up")
	return ns
}

// Link is one end of a veth.
type Link struct {
	NS   string
	Name string
}

// Veth connects namespaces nsA and nsB with a veth, gives each end the
// addresses (CIDR, IPv4 or IPv6; IPv6 without duplicate address detection)
// and sets both up. Deleting the namespaces removes the veth.
func Veth(t testing.TB, nsA string, addrsA []string, nsB string, addrsB []string) (Link, Link) {
	t.Helper()
	a, b := Link{nsA, Name(t, "va")}, Link{nsB, Name(t, "vb")}
	Run(t, "ip", "link", "add", "name", a.Name, "netns", nsA, "type", "veth", "peer", "name", b.Name, "netns", nsB)
	for _, e := range []struct {
		l     Link
		addrs []string
	}{{a, addrsA}, {b, addrsB}} {
		for _, ad := range e.addrs {
			args := []string{"ip", "addr", "add", ad, "dev", e.l.Name}
			if strings.Contains(ad, ":") {
				args = append(args, "nodad")
			}
			InNS(t, e.l.NS, args...)
		}
		InNS(t, e.l.NS, "ip", "link", "set", e.l.Name, "up")
	}
	return a, b
}

// ReExec reports whether this process is the re-executed child of test
// t (see Child), and the value its parent passed.
func ReExec(t testing.TB) (string, bool) {
	v, ok := os.LookupEnv(childEnv(t))
	return v, ok
}

func childEnv(t testing.TB) string {
	r := strings.NewReplacer("/", "_", "-", "_", ".", "_")
	return "TN_CHILD_" + r.Replace(t.Name())
}

// Child runs this test binary again inside namespace ns, running only test
// t with value visible to ReExec, and returns its combined output. The child
// is how code that opens sockets from many goroutines (GoBGP, memberlist)
// runs inside a namespace: a whole process in it.
func Child(t testing.TB, ns, value string, timeout time.Duration) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, exe, "-test.run", "^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv(t)+"="+value)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return string(out), fmt.Errorf("child timed out after %v", timeout)
	}
	return string(out), err
}
