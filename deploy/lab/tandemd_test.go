package lab

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func buildBin(t *testing.T, pkg string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
		if _, err := os.Stat(goBin); err != nil {
			t.Skipf("needs the go tool to build %s: not in PATH nor at %s", pkg, goBin)
		}
	}
	out := filepath.Join(t.TempDir(), filepath.Base(pkg))
	if b, err := exec.Command(goBin, "build", "-o", out, "github.com/tandem-lb/tandem/"+pkg).CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", pkg, err, b)
	}
	return out
}

// established reports whether every node session of a router's BIRD is
// up.
func established(l *Lab, role string) (bool, string) {
	out, err := l.Birdc(context.Background(), role, "show", "protocols")
	if err != nil {
		return false, err.Error()
	}
	for i := 1; i <= l.cfg.Nodes; i++ {
		for _, fam := range []string{"_4", "_6"} {
			if !strings.Contains(findLine(out, NodeName(i)+fam+" "), "Established") {
				return false, out
			}
		}
	}
	return true, out
}

// TestLabRunsTandemd starts the real daemon on the lab's generated
// node.yaml: every node must join the cluster over the backplane with the
// shared keyring, bring up its four BGP sessions with the routers' BIRDs,
// and accept the lab's example cluster.yaml; a SIGKILLed node's sessions
// must drop at once. (It checks the lab's side of the integration, not the
// data path.)
func TestLabRunsTandemd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs tandemd")
	}
	tandemd := buildBin(t, "node/cmd/tandemd")
	clusterctl := buildBin(t, "ctl/cmd/clusterctl")
	l := testLab(t, func(c *Config) { c.Tandemd = tandemd })
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := l.Up(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for _, r := range []string{RoleFront, RoleBack} {
		for {
			ok, out := established(l, r)
			if ok {
				break
			}
			if time.Since(start) > 30*time.Second {
				t.Fatalf("%s: sessions not established after 30s:\n%s", r, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	t.Logf("all %d nodes' BGP sessions established on both routers %v after up", l.cfg.Nodes, time.Since(start))

	ctl := func(node int, args ...string) ([]byte, error) {
		return exec.CommandContext(ctx, clusterctl, append([]string{"--node", l.cfg.NodeSocket(node)}, args...)...).CombinedOutput()
	}
	if out, err := ctl(1, "apply", "-f", l.cfg.ClusterYAMLPath()); err != nil {
		t.Fatalf("clusterctl apply of the lab's cluster.yaml: %v\n%s", err, out)
	}
	var view struct {
		Members []struct {
			ID, State, Digest string
		}
	}
	for {
		out, err := ctl(l.cfg.Nodes, "show", "cluster", "-o", "json")
		if err == nil && json.Unmarshal(out, &view) == nil && len(view.Members) == l.cfg.Nodes {
			same := true
			for _, m := range view.Members {
				same = same && m.State == "alive" && m.Digest == view.Members[0].Digest
			}
			if same {
				break
			}
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("cluster not converged: %v %s", err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("cluster of %d converged on one config digest %v after up", l.cfg.Nodes, time.Since(start))

	if err := l.Signal(NodeName(l.cfg.Nodes), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for {
		out, _ := l.Birdc(ctx, RoleFront, "show", "protocols")
		if !strings.Contains(findLine(out, NodeName(l.cfg.Nodes)+"_4 "), "Established") {
			break
		}
		if time.Since(killed) > 5*time.Second {
			t.Fatalf("rfront still established with the killed node after 5s:\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("rfront dropped the SIGKILLed node's session %v after the kill", time.Since(killed))
}
