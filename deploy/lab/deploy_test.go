package lab

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandem-lb/tandem/node/config"
)

// TestDeployNodeYAML checks that the example node.yaml for real racks
// (deploy/node.yaml) parses with node/config and that it shows every
// setting.
func TestDeployNodeYAML(t *testing.T) {
	b, err := os.ReadFile("../node.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(b)
	if err != nil {
		t.Fatalf("deploy/node.yaml: %v", err)
	}
	if c.NodeID != "n1" || c.Interfaces.Back == "" || c.Interfaces.Backplane == "" || c.Partner == "" ||
		len(c.BGP.Peers) != 3 || len(c.BGP.ReturnPrefixes) != 2 || len(c.BGP.Communities) != 1 ||
		c.API.TCP == nil || c.API.TCP.TokenFile == "" || c.Metrics.Listen == "" || c.XDPMode != config.XDPNative || len(c.SNIPs) != 2 {
		t.Errorf("deploy/node.yaml parsed as %+v: an example setting is missing", c)
	}
	// Every key node/config knows appears in the example (tls commented
	// out, as the TCP API takes a token or mutual TLS, not both).
	for _, key := range []string{"nodeId", "front:", "back:", "backplane:", "bindAddr", "bindPort", "seeds", "keyringFile",
		"partner:", "snip:", "localAs", "routerId", "listenPort", "communities", "returnPrefixes", "peers", "address:", "as:",
		"holdTime", "keepalive", "announce", "drainTime", "vipInterface", "socket:", "tcp:", "listen:", "tokenFile",
		"tls:", "cert:", "key:", "clientCa:", "metrics:", "stateDir", "format:", "level:", "xdpMode"} {
		if !strings.Contains(string(b), key) {
			t.Errorf("deploy/node.yaml does not show %q", key)
		}
	}
}

// TestDeployBIRDConf checks that BIRD accepts the example top-of-rack
// configuration (deploy/routers/bird.conf), logging to stderr instead of
// syslog so that the check needs no syslog.
func TestDeployBIRDConf(t *testing.T) {
	bird := Default().BIRD
	if _, err := os.Stat(bird); err != nil {
		t.Skipf("needs BIRD at %s (apt install bird2): %v", bird, err)
	}
	b, err := os.ReadFile("../routers/bird.conf")
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.ReplaceAll(string(b), "log syslog all;", "log stderr all;")
	path := filepath.Join(t.TempDir(), "bird.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bird, "-p", "-c", path).CombinedOutput(); err != nil {
		t.Errorf("bird -p refuses deploy/routers/bird.conf: %v: %s", err, out)
	}
}
