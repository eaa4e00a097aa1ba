package cluster

import (
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func svc(name, ip string, t ServiceType, port uint16, usip bool) Service {
	return Service{Name: name, IP: netip.MustParseAddr(ip), Type: t, Port: port, USIP: usip}
}

func vsrv(name string, t ServiceType, vip string, port uint16, m LBMethod, p Persistence, f ConnFailover) VServer {
	return VServer{Name: name, Type: t, VIP: netip.MustParseAddr(vip), Port: port, LBMethod: m, Persistence: p, ConnFailover: f}
}

// goodConfig is valid and exercises every mode.
func goodConfig() Config {
	c := Config{
		Services: []Service{
			svc("web1", "10.0.2.11", TypeANY, 8080, true),
			svc("web2", "10.0.2.12", TypeANY, 8080, true),
			svc("ftp1", "10.0.2.21", TypeFTP, 21, false),
			svc("v6a", "2001:db8::11", TypeTCP, 80, true),
		},
		VServers: []VServer{
			vsrv("vs1", TypeANY, "203.0.113.10", 80, MethodSrcIPSrcPortHash, PersistNone, FailoverStateless),
			vsrv("ftp", TypeFTP, "203.0.113.10", 21, MethodLeastConnection, PersistNone, FailoverStateful),
			vsrv("v6", TypeTCP, "2001:db8:1::10", 80, MethodRoundRobin, PersistSourceIP, FailoverStateful),
		},
		Bindings: []Binding{
			{VServer: "vs1", Service: "web1"},
			{VServer: "vs1", Service: "web2", Weight: 3},
			{VServer: "ftp", Service: "ftp1"},
			{VServer: "v6", Service: "v6a"},
		},
	}
	c.Normalize()
	return c
}

func TestValidateGood(t *testing.T) {
	c := goodConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("valid config refused:\n%v", err)
	}
}

func TestNormalizeDefaults(t *testing.T) {
	c := Config{
		VServers: []VServer{{Name: "b", VIP: netip.MustParseAddr("::ffff:10.0.0.1"), Port: 80}, {Name: "a", Type: TypeTCP}},
		Bindings: []Binding{{VServer: "b", Service: "x"}},
		Monitors: []Monitor{{Name: "m"}},
	}
	c.Normalize()
	if c.VServers[0].Name != "a" {
		t.Errorf("vservers not sorted: %v", c.VServers)
	}
	b := c.VServers[1]
	if b.Type != TypeANY || b.LBMethod != MethodLeastConnection || b.Persistence != PersistNone ||
		b.ConnFailover != FailoverDisabled || b.FwdMode != FwdNAT || !b.VIP.Is4() {
		t.Errorf("defaults not filled: %+v", b)
	}
	if c.Bindings[0].Weight != 1 {
		t.Errorf("weight default: %d", c.Bindings[0].Weight)
	}
	m := c.Monitors[0]
	if m.Type != MonitorTCP || m.Interval != DefaultMonitorInterval || m.Timeout != DefaultMonitorTimeout || m.Rise != 2 || m.Fall != 2 {
		t.Errorf("monitor defaults: %+v", m)
	}
	d1 := c.Digest()
	c.Normalize()
	if c.Digest() != d1 {
		t.Error("Normalize is not idempotent")
	}
}

func TestDigestOrderIndependent(t *testing.T) {
	a := goodConfig()
	b := a.Clone()
	slices.Reverse(b.Services)
	slices.Reverse(b.Bindings)
	if a.Digest() != b.Digest() {
		t.Error("digest depends on slice order")
	}
	b.Bindings[0].Weight = 7
	if a.Digest() == b.Digest() {
		t.Error("digest ignores a weight change")
	}
	if len(a.Digest()) != 64 {
		t.Errorf("digest %q is not hex sha256", a.Digest())
	}
}

func TestCloneIsDeep(t *testing.T) {
	a := goodConfig()
	b := a.Clone()
	b.Services[0].Port = 1
	if a.Services[0].Port == 1 {
		t.Error("Clone shares slices")
	}
}

// TestValidateRules breaks one rule at a time and checks that exactly that
// rule is reported, on the named object, with a fix.
func TestValidateRules(t *testing.T) {
	tests := []struct {
		name   string
		edit   func(c *Config)
		rule   string
		object string
		fix    string // substring
	}{
		{"empty name", func(c *Config) { c.PutService(svc("", "10.0.0.9", TypeANY, 1, true)) }, RuleName, "service ", "letters"},
		{"bad chars", func(c *Config) { c.PutService(svc("a b", "10.0.0.9", TypeANY, 1, true)) }, RuleName, "service a b", ""},
		{"bad service type", func(c *Config) { c.Services[0].Type = "QUIC" }, RuleEnum, "service ftp1", "ANY"},
		{"bad method", func(c *Config) { c.VServers[0].LBMethod = "RANDOM" }, RuleEnum, "lb vserver ftp", "ROUNDROBIN"},
		{"service ip", func(c *Config) { c.Services[3].IP = netip.Addr{} }, RuleAddress, "service web2", "unicast"},
		{"vip unspecified", func(c *Config) { c.VServers[2].VIP = netip.MustParseAddr("0.0.0.0") }, RuleAddress, "lb vserver vs1", ""},
		{"port star on TCP", func(c *Config) {
			c.PutService(svc("t", "10.0.0.9", TypeTCP, 0, true))
		}, RulePortAny, "service t", "type ANY"},
		{"port star on ANY ok, vserver TCP port star", func(c *Config) {
			c.PutVServer(vsrv("t", TypeTCP, "203.0.113.99", 0, MethodRoundRobin, PersistNone, FailoverDisabled))
		}, RulePortAny, "lb vserver t", ""},
		{"vserver clash", func(c *Config) {
			c.PutVServer(vsrv("dup", TypeTCP, "203.0.113.10", 80, MethodRoundRobin, PersistNone, FailoverDisabled))
		}, RuleVServerUnique, "lb vserver dup", "another VIP"},
		{"service clash", func(c *Config) { c.PutService(svc("web1b", "10.0.2.11", TypeANY, 8080, true)) }, RuleServiceUnique, "service web1b", "web1"},
		{"binding to missing service", func(c *Config) { c.PutBinding(Binding{VServer: "vs1", Service: "nope"}) }, RuleBindingRef, "binding vs1 nope", "add service nope"},
		{"binding to missing vserver", func(c *Config) { c.PutBinding(Binding{VServer: "nope", Service: "web1"}) }, RuleBindingRef, "binding nope web1", "add lb vserver nope"},
		{"binding type", func(c *Config) {
			c.PutService(svc("t1", "10.0.2.40", TypeTCP, 80, true))
			c.PutBinding(Binding{VServer: "ftp", Service: "t1"})
		}, RuleBindingType, "binding ftp t1", "type FTP"},
		{"ANY vserver takes ANY only", func(c *Config) {
			c.PutService(svc("t1", "10.0.2.40", TypeTCP, 80, true))
			c.PutBinding(Binding{VServer: "vs1", Service: "t1"})
		}, RuleBindingType, "binding vs1 t1", "type ANY"},
		{"weight", func(c *Config) { c.Bindings[0].Weight = 101 }, RuleWeight, "binding ftp ftp1", "1..100"},
		{"monitor ref", func(c *Config) { c.Services[0].Monitor = "m9" }, RuleMonitorRef, "service ftp1", "add lb monitor m9 TCP"},
		{"monitor timing", func(c *Config) {
			c.PutMonitor(Monitor{Name: "m", Type: MonitorTCP, Interval: 100, Timeout: 200, Rise: 1, Fall: 1})
		}, RuleMonitor, "monitor m", "timeout"},
		{"ip family", func(c *Config) {
			c.PutService(svc("v4", "10.0.2.50", TypeTCP, 80, true))
			c.PutBinding(Binding{VServer: "v6", Service: "v4"})
		}, RuleIPFamily, "binding v6 v4", "IPv6"},
		{"sslsession on TCP", func(c *Config) { v, _ := c.VServer("v6"); v.Persistence = PersistSSLSession }, RulePersistenceType, "lb vserver v6", "SOURCEIP"},
		{"http stateful", func(c *Config) {
			c.PutVServer(vsrv("h", TypeHTTP, "203.0.113.20", 80, MethodRoundRobin, PersistNone, FailoverStateful))
		}, RuleNoFailoverHTTP, "lb vserver h", "-connFailover DISABLED"},
		{"ssl stateless", func(c *Config) {
			c.PutVServer(vsrv("s", TypeSSL, "203.0.113.20", 443, MethodSrcIPSrcPortHash, PersistNone, FailoverStateless))
		}, RuleNoFailoverHTTP, "lb vserver s", "DISABLED"},
		{"stateless TCP", func(c *Config) {
			c.PutVServer(vsrv("s", TypeTCP, "203.0.113.20", 443, MethodSrcIPSrcPortHash, PersistNone, FailoverStateless))
		}, RuleStatelessType, "lb vserver s", "STATEFUL"},
		{"stateless method", func(c *Config) { c.VServers[2].LBMethod = MethodRoundRobin }, RuleStatelessMethod, "lb vserver vs1", "SRCIPSRCPORTHASH"},
		{"stateless usip", func(c *Config) { c.Services[2].USIP = false }, RuleStatelessUSIP, "binding vs1 web1", "set service web1 -usip YES"},
		{"stateless exclusive", func(c *Config) {
			c.PutVServer(vsrv("other", TypeANY, "203.0.113.11", 0, MethodRoundRobin, PersistNone, FailoverDisabled))
			c.PutBinding(Binding{VServer: "other", Service: "web1"})
		}, RuleStatelessBinding, "binding vs1 web1", "unbind lb vserver other web1"},
		{"dsr usip", func(c *Config) { c.VServers[0].FwdMode = FwdDSR }, RuleDSRUSIP, "binding ftp ftp1", "-usip YES"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := goodConfig()
			tt.edit(&c)
			err := c.Validate()
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not match ErrInvalid: %v", err)
			}
			var found bool
			for _, re := range RuleErrors(err) {
				if re.Rule == tt.rule && re.Object == tt.object {
					found = true
					if !strings.Contains(re.Fix, tt.fix) {
						t.Errorf("fix %q does not mention %q", re.Fix, tt.fix)
					}
					if !strings.Contains(re.Error(), "(rule "+tt.rule+"); fix: ") {
						t.Errorf("error text %q not in the contract's shape", re.Error())
					}
				}
			}
			if !found {
				t.Errorf("rule %s on %q not reported; got:\n%v", tt.rule, tt.object, err)
			}
		})
	}
}

func TestStatelessRulesFromTheTable(t *testing.T) {
	base := func(m LBMethod, p Persistence) Config {
		c := Config{
			Services: []Service{svc("web1", "10.0.2.11", TypeANY, 0, true)},
			VServers: []VServer{vsrv("vs1", TypeANY, "203.0.113.10", 0, m, p, FailoverStateless)},
			Bindings: []Binding{{VServer: "vs1", Service: "web1"}},
		}
		return c
	}
	// With SOURCEIP persistence every method is accepted.
	for _, m := range LBMethods {
		c := base(m, PersistSourceIP)
		if err := c.Validate(); err != nil {
			t.Errorf("%s + SOURCEIP refused: %v", m, err)
		}
	}
	// Without it, only SRCIPSRCPORTHASH.
	for _, m := range LBMethods {
		c := base(m, PersistNone)
		err := c.Validate()
		if (err == nil) != (m == MethodSrcIPSrcPortHash) {
			t.Errorf("%s + NONE: err=%v", m, err)
		}
	}
	// DISABLED: anything goes, even USIP off and HTTP.
	c := base(MethodRoundRobin, PersistNone)
	c.VServers[0].ConnFailover = FailoverDisabled
	c.Services[0].USIP = false
	if err := c.Validate(); err != nil {
		t.Errorf("DISABLED refused: %v", err)
	}
	// The example from the brief.
	c = base(MethodSrcIPSrcPortHash, PersistNone)
	c.Services[0].USIP = false
	err := c.Validate()
	want := "STATELESS connection failover needs USIP ON on service web1 (lb vserver vs1) (rule stateless-usip); fix: set service web1 -usip YES"
	if err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}
}

func TestStatefulTypes(t *testing.T) {
	for _, typ := range ServiceTypes {
		c := Config{
			Services: []Service{svc("s", "10.0.2.11", typ, 443, false)},
			VServers: []VServer{vsrv("v", typ, "203.0.113.10", 443, MethodLeastConnection, PersistNone, FailoverStateful)},
			Bindings: []Binding{{VServer: "v", Service: "s"}},
		}
		err := c.Validate()
		ok := typ != TypeHTTP && typ != TypeSSL
		if (err == nil) != ok {
			t.Errorf("STATEFUL %s: err=%v", typ, err)
		}
	}
	// A service may be bound to several STATEFUL vservers.
	c := Config{
		Services: []Service{svc("s", "10.0.2.11", TypeTCP, 443, false)},
		VServers: []VServer{
			vsrv("a", TypeTCP, "203.0.113.10", 443, MethodLeastConnection, PersistNone, FailoverStateful),
			vsrv("b", TypeTCP, "203.0.113.11", 443, MethodLeastConnection, PersistNone, FailoverStateful),
		},
		Bindings: []Binding{{VServer: "a", Service: "s"}, {VServer: "b", Service: "s"}},
	}
	if err := c.Validate(); err != nil {
		t.Errorf("service on two stateful vservers refused: %v", err)
	}
	// SSLSESSION on SSL_BRIDGE is fine.
	c = Config{VServers: []VServer{vsrv("b", TypeSSLBridge, "203.0.113.11", 443, MethodLeastConnection, PersistSSLSession, FailoverStateful)}}
	if err := c.Validate(); err != nil {
		t.Errorf("SSL_BRIDGE SSLSESSION refused: %v", err)
	}
}

func TestWildcardPortCoexists(t *testing.T) {
	c := Config{VServers: []VServer{
		vsrv("any", TypeANY, "203.0.113.10", 0, MethodRoundRobin, PersistNone, FailoverDisabled),
		vsrv("web", TypeTCP, "203.0.113.10", 80, MethodRoundRobin, PersistNone, FailoverDisabled),
		vsrv("dns", TypeUDP, "203.0.113.10", 53, MethodRoundRobin, PersistNone, FailoverDisabled),
		vsrv("dnst", TypeTCP, "203.0.113.10", 53, MethodRoundRobin, PersistNone, FailoverDisabled),
	}}
	if err := c.Validate(); err != nil {
		t.Errorf("refused: %v", err)
	}
}

func TestPutRemove(t *testing.T) {
	c := goodConfig()
	if err := c.RemoveService("web1"); !errors.Is(err, ErrInUse) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("removing a bound service: %v", err)
	} else if re := RuleErrors(err); len(re) != 1 || re[0].Rule != RuleUnbindFirst || !strings.Contains(re[0].Fix, "unbind lb vserver vs1 web1") {
		t.Errorf("refusal: %v", err)
	}
	if err := c.RemoveService("zzz"); !errors.Is(err, ErrNotFound) {
		t.Errorf("removing missing service: %v", err)
	}
	if err := c.AddService(svc("web1", "10.9.9.9", TypeANY, 1, true)); !errors.Is(err, ErrExists) {
		t.Errorf("adding a duplicate: %v", err)
	}
	s := svc("web1", "10.0.2.99", TypeANY, 8080, true)
	c.PutService(s)
	if got, _ := c.Service("web1"); got.IP != s.IP || len(c.Services) != 4 {
		t.Errorf("PutService did not replace: %+v", c.Services)
	}
	if err := c.RemoveVServer("vs1"); err != nil {
		t.Fatal(err)
	}
	if len(c.BindingsOf("vs1")) != 0 {
		t.Error("RemoveVServer left bindings")
	}
	if err := c.RemoveService("web1"); err != nil {
		t.Errorf("removing an unbound service: %v", err)
	}
	if err := c.RemoveBinding("ftp", "ftp1"); err != nil {
		t.Error(err)
	}
	if err := c.RemoveBinding("ftp", "ftp1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second unbind: %v", err)
	}
	c.PutMonitor(Monitor{Name: "m"})
	c.Services[0].Monitor = "m"
	if err := c.RemoveMonitor("m"); !errors.Is(err, ErrInUse) {
		t.Errorf("removing a used monitor: %v", err)
	}
	c.Services[0].Monitor = ""
	if err := c.RemoveMonitor("m"); err != nil {
		t.Error(err)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("after removals: %v", err)
	}
}

func TestQuarantine(t *testing.T) {
	c := goodConfig()
	// Two nodes concurrently created vservers on the same VIP and port.
	c.PutVServer(vsrv("dup", TypeANY, "203.0.113.10", 80, MethodSrcIPSrcPortHash, PersistNone, FailoverStateless))
	ok, probs := c.Quarantine()
	if len(probs) == 0 {
		t.Fatal("no problems found")
	}
	if _, found := ok.VServer("vs1"); found {
		t.Error("conflicting vserver vs1 still programmed")
	}
	if _, found := ok.VServer("dup"); found {
		t.Error("conflicting vserver dup still programmed")
	}
	if _, found := ok.VServer("ftp"); !found {
		t.Error("unrelated vserver ftp quarantined")
	}
	if len(ok.BindingsOf("vs1")) != 0 {
		t.Error("bindings of a quarantined vserver kept")
	}
	if err := ok.Validate(); err != nil {
		t.Errorf("quarantined config still invalid: %v", err)
	}
}

// FuzzConfig: any configuration decoded from JSON normalizes, validates,
// quarantines and yields tables without panicking; what Quarantine keeps
// breaks no rule that involves a vserver, and Normalize is idempotent.
func FuzzConfig(f *testing.F) {
	good := goodConfig()
	f.Add(good.Canonical())
	bad := goodConfig()
	bad.PutVServer(vsrv("dup", TypeANY, "203.0.113.10", 80, MethodSrcIPSrcPortHash, PersistNone, FailoverStateless))
	bad.PutBinding(Binding{VServer: "dup", Service: "web1", Weight: 1000})
	bad.PutBinding(Binding{VServer: "nope", Service: "ghost"})
	f.Add(bad.Canonical())
	f.Add([]byte(`{"services":[{"name":"a","ip":"::1","type":"UDP","port":0}],"vservers":[{"name":"a","type":"SSL","vip":"10.0.0.1","connFailover":"STATELESS"}],"bindings":[{"vserver":"a","service":"a"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var c Config
		if err := json.Unmarshal(b, &c); err != nil {
			return
		}
		c.Normalize()
		d := c.Digest()
		c.Normalize()
		if c.Digest() != d {
			t.Fatal("Normalize is not idempotent")
		}
		_ = c.Validate()
		q, _ := c.Quarantine()
		for _, p := range q.Problems() {
			if len(p.VServers) > 0 {
				t.Fatalf("quarantined config still has a vserver problem: %v", p)
			}
		}
		if _, err := ComputeTables(c, map[string]bool{"web1": true, "a": true}, nil, 7); err != nil {
			t.Fatal(err)
		}
	})
}
