package lab

import (
	"bytes"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/tandem-lb/tandem/cluster"
)

// The example cluster configuration must be what clusterctl apply reads
// (strict YAML into cluster.Config) and must break no rule.
func TestClusterYAMLValid(t *testing.T) {
	c := Default()
	b, err := c.ClusterYAML()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "cluster.yaml", b)
	var cc cluster.Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cc); err != nil {
		t.Fatalf("decoding: %v\n%s", err, b)
	}
	if err := cc.Validate(); err != nil {
		t.Fatalf("the lab's cluster.yaml breaks rules: %v", err)
	}
	if len(cc.VServers) != 8 || len(cc.Services) != 6*c.Backends || len(cc.Bindings) != 8*c.Backends {
		t.Fatalf("%d vservers, %d services, %d bindings", len(cc.VServers), len(cc.Services), len(cc.Bindings))
	}
	for _, vs := range cc.VServers {
		wantVIP := c.VIPs[map[string]int{"st4": 0, "st6": 1, "sf4": 2, "sf6": 3, "sl4": 2, "sl6": 3, "su4": 2, "su6": 3}[vs.Name]]
		wantPort := map[string]uint16{"sl": 81, "su": 82}[vs.Name[:2]]
		if wantPort == 0 {
			wantPort = 80
		}
		if vs.VIP != wantVIP || vs.Port != wantPort {
			t.Errorf("vserver %s on %v port %d, want %v port %d", vs.Name, vs.VIP, vs.Port, wantVIP, wantPort)
		}
		stateful := vs.Name[:2] != "st"
		if (vs.ConnFailover == cluster.ConnFailover("STATEFUL")) != stateful {
			t.Errorf("vserver %s: connFailover %s", vs.Name, vs.ConnFailover)
		}
	}
	// USIP OFF exactly on su4's and su6's services.
	for _, s := range cc.Services {
		if s.USIP == (strings.HasSuffix(s.Name, "-su4") || strings.HasSuffix(s.Name, "-su6")) {
			t.Errorf("service %s: usip %v", s.Name, s.USIP)
		}
	}
	// Only the IPv4 VIPs: only the IPv4 vservers.
	c.VIPs = c.VIPs[:1]
	b, _ = c.ClusterYAML()
	var one cluster.Config
	if err := yaml.Unmarshal(b, &one); err != nil || len(one.VServers) != 1 || one.Validate() != nil {
		t.Errorf("one VIP: %d vservers, %v, %v", len(one.VServers), err, one.Validate())
	}
}
