package main

import (
	"strings"
	"testing"

	"github.com/tandem-lb/tandem/cluster"
)

// TestRuleRefusals checks, for every rule of DESIGN.md's "Rules" table and
// the configuration rules around it, that clusterctl's refusal names the
// rule and a fix, exits 1, and changes nothing.
func TestRuleRefusals(t *testing.T) {
	h := newHarness(t)
	webTier(h) // vs1: ANY, SRCIPSRCPORTHASH, STATELESS; web1..3 USIP YES
	h.ok("add service plain 10.0.3.1 ANY 8080 -usip NO")
	h.ok("add service tcp1 10.0.3.2 TCP 443 -usip NO")
	h.ok("add service v6 2001:db8:2::1 ANY 8080 -usip YES")
	h.ok("add lb vserver sf1 ANY 203.0.113.11 80 -lbMethod ROUNDROBIN -connFailover STATEFUL")
	h.ok("add lb monitor m1 TCP")
	h.ok("add service mon1 10.0.3.3 ANY 8080 -monitor m1")
	h.files["enum.yaml"] = "vservers:\n  - name: e1\n    type: ANY\n    vip: 203.0.113.99\n    port: 80\n    lbMethod: FASTEST\n"

	cases := []struct {
		line string
		rule string
	}{
		// The failover table.
		{"add lb vserver t1 TCP 203.0.113.20 80 -lbMethod SRCIPSRCPORTHASH -connFailover STATELESS", cluster.RuleStatelessType},
		{"add lb vserver t2 ANY 203.0.113.21 80 -lbMethod ROUNDROBIN -connFailover STATELESS", cluster.RuleStatelessMethod},
		{"set lb vserver vs1 -lbMethod LEASTCONNECTION", cluster.RuleStatelessMethod},
		{"add lb vserver t3 ANY 203.0.113.22 80 -persistenceType SSLSESSION", cluster.RulePersistenceType},
		{"set service web1 -usip NO", cluster.RuleStatelessUSIP},
		{"bind lb vserver vs1 plain", cluster.RuleStatelessUSIP},
		{"bind lb vserver sf1 web1", cluster.RuleStatelessBinding},
		{"set lb vserver sf1 -connFailover STATELESS -lbMethod SRCIPSRCPORTHASH", ""}, // no binding yet: allowed, checked below
		{"add lb vserver h1 HTTP 203.0.113.23 80 -connFailover STATEFUL", cluster.RuleNoFailoverHTTP},
		{"add lb vserver s1 SSL 203.0.113.24 443 -connFailover STATELESS", cluster.RuleNoFailoverHTTP},
		{"add lb vserver d1 ANY 203.0.113.25 80 -fwdMode DSR", ""},
		{"bind lb vserver d1 plain", cluster.RuleDSRUSIP},
		{"bind lb vserver vs1 v6", cluster.RuleIPFamily},
		// Configuration rules.
		{"bind lb vserver sf1 tcp1", cluster.RuleBindingType},
		{"add service p1 10.0.3.9 TCP *", cluster.RulePortAny},
		{"add lb vserver dup ANY 203.0.113.10 80", cluster.RuleVServerUnique},
		{"add service copy 10.0.2.11 ANY 8080 -usip YES", cluster.RuleServiceUnique},
		{"bind lb vserver sf1 plain -weight 101", cluster.RuleWeight},
		{"add service m2 10.0.3.4 ANY 8080 -monitor nosuch", cluster.RuleMonitorRef},
		{"add lb monitor slow TCP -interval 1s -timeout 2s", cluster.RuleMonitor},
		{"rm service web1", cluster.RuleUnbindFirst},
		{"rm lb monitor m1", cluster.RuleMonitorInUse},
		{"add service bad/name 10.0.3.5 ANY 80", cluster.RuleName},
		{"add service zero 0.0.0.0 ANY 80", cluster.RuleAddress},
		{"apply -f enum.yaml", cluster.RuleEnum},
	}
	for _, c := range cases {
		if c.rule == "" {
			h.ok(c.line)
			continue
		}
		errs := h.refused(c.line, c.rule)
		if !strings.HasPrefix(errs, "clusterctl: refused: ") {
			t.Errorf("%s: refusal does not start with 'clusterctl: refused:':\n%s", c.line, errs)
		}
	}
	// sf1 became STATELESS above; binding web1 (bound to vs1) is refused
	// for exclusivity, and plain for USIP.
	h.refused("bind lb vserver sf1 web1", cluster.RuleStatelessBinding)
	h.refused("bind lb vserver sf1 plain", cluster.RuleStatelessUSIP)
	h.golden("rules")
}
