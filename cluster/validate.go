package cluster

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Rule ids, stable: scripts and tests match on them.
const (
	RuleName             = "name"                // names non-empty, [A-Za-z0-9_.-], ≤127 chars
	RuleDuplicate        = "duplicate"           // two objects of one kind with one name
	RuleEnum             = "enum"                // unknown type, method, persistence, ...
	RuleAddress          = "address"             // IPs valid and usable
	RulePortAny          = "port-any"            // port * only for type ANY
	RuleVServerUnique    = "vserver-unique"      // (VIP, port, protocol) used once
	RuleServiceUnique    = "service-unique"      // (IP, port, type) used once
	RuleBindingRef       = "binding-ref"         // binding names existing objects
	RuleBindingType      = "binding-type"        // ANY vserver: ANY services; else same type
	RuleWeight           = "weight"              // 1..100
	RuleMonitorRef       = "monitor-ref"         // service's monitor exists
	RuleMonitor          = "monitor"             // monitor timings
	RuleIPFamily         = "ip-family"           // services of the VIP's family
	RulePersistenceType  = "persistence-type"    // SSLSESSION only for SSL_BRIDGE
	RuleNoFailoverHTTP   = "no-failover-http"    // HTTP/SSL refuse connection failover
	RuleStatelessType    = "stateless-type"      // STATELESS: type ANY only
	RuleStatelessMethod  = "stateless-method"    // STATELESS without SOURCEIP: SRCIPSRCPORTHASH
	RuleStatelessUSIP    = "stateless-usip"      // STATELESS: USIP on every bound service
	RuleStatelessBinding = "stateless-exclusive" // STATELESS: service bound to that vserver only
	RuleStatefulType     = "stateful-type"       // STATEFUL: ANY, UDP, TCP, FTP, SSL_BRIDGE
	RuleDSRUSIP          = "dsr-usip"            // DSR: USIP on every bound service
	RuleUnbindFirst      = "unbind-first"        // removing a bound service
	RuleMonitorInUse     = "monitor-in-use"      // removing a used monitor
)

// protocols a vserver or service type carries, as a bit set.
const (
	protoTCP = 1 << iota
	protoUDP
	protoOther // ICMP, SCTP, ...: ANY only
)

func typeProtocols(t ServiceType) int {
	switch t {
	case TypeANY:
		return protoTCP | protoUDP | protoOther
	case TypeUDP:
		return protoUDP
	default:
		return protoTCP
	}
}

func validName(s string) bool {
	if s == "" || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case (c == '_' || c == '.' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

// Validate checks every rule of DESIGN.md on a normalized copy of c. It
// returns nil, or errors.Join of *RuleError values (in a stable order) that
// match ErrInvalid; RuleErrors unpacks them.
func (c *Config) Validate() error {
	probs := c.Problems()
	if len(probs) == 0 {
		return nil
	}
	errs := make([]error, len(probs))
	for i, p := range probs {
		errs[i] = p
	}
	return errors.Join(errs...)
}

// Problems returns the broken rules of c, sorted by object, then rule, then
// message, each naming the vservers it keeps out of the data plane.
func (c *Config) Problems() []*RuleError {
	n := c.Clone()
	n.Normalize()
	v := validator{c: &n}
	v.run()
	slices.SortStableFunc(v.out, func(a, b *RuleError) int {
		if x := cmp.Compare(a.Object, b.Object); x != 0 {
			return x
		}
		if x := cmp.Compare(a.Rule, b.Rule); x != 0 {
			return x
		}
		return cmp.Compare(a.Message, b.Message)
	})
	return v.out
}

type validator struct {
	c   *Config
	out []*RuleError
}

func (v *validator) add(rule, object, fix string, vservers []string, format string, args ...any) {
	vs := slices.Clone(vservers)
	slices.Sort(vs)
	vs = slices.Compact(vs)
	v.out = append(v.out, &RuleError{Rule: rule, Object: object, Message: fmt.Sprintf(format, args...), Fix: fix, VServers: vs})
}

func (v *validator) run() {
	c := v.c
	services := map[string]*Service{}
	vservers := map[string]*VServer{}
	monitors := map[string]*Monitor{}

	for i := range c.Monitors {
		m := &c.Monitors[i]
		obj := "monitor " + m.Name
		if !validName(m.Name) {
			v.add(RuleName, obj, "use 1-127 letters, digits, '_', '.', '-', starting with a letter or digit", nil, "invalid monitor name %q", m.Name)
		}
		if monitors[m.Name] != nil {
			v.add(RuleDuplicate, obj, "remove one of them", nil, "two monitors are named %s", m.Name)
		}
		monitors[m.Name] = m
		if m.Type != MonitorTCP {
			v.add(RuleEnum, obj, "use -type TCP", nil, "monitor %s has unknown type %q", m.Name, m.Type)
		}
		if m.Interval <= 0 || m.Timeout <= 0 || m.Timeout >= m.Interval {
			v.add(RuleMonitor, obj, fmt.Sprintf("set lb monitor %s -interval 1s -timeout 500ms (timeout below interval)", m.Name), nil,
				"monitor %s has interval %s and timeout %s; both must be positive and the timeout shorter than the interval", m.Name, m.Interval, m.Timeout)
		}
		if m.Rise < 1 || m.Rise > 100 || m.Fall < 1 || m.Fall > 100 {
			v.add(RuleMonitor, obj, fmt.Sprintf("set lb monitor %s -rise 2 -fall 2", m.Name), nil,
				"monitor %s has rise %d and fall %d; both must be 1..100", m.Name, m.Rise, m.Fall)
		}
	}

	type svcKey struct {
		ip   string
		port uint16
		t    ServiceType
	}
	svcAddrs := map[svcKey]string{}
	boundTo := map[string][]string{} // service → vservers, sorted
	for _, b := range c.Bindings {
		boundTo[b.Service] = append(boundTo[b.Service], b.VServer)
	}
	for _, vs := range boundTo {
		slices.Sort(vs)
	}
	for i := range c.Services {
		s := &c.Services[i]
		obj := "service " + s.Name
		bound := boundTo[s.Name]
		if !validName(s.Name) {
			v.add(RuleName, obj, "use 1-127 letters, digits, '_', '.', '-', starting with a letter or digit", bound, "invalid service name %q", s.Name)
		}
		if services[s.Name] != nil {
			v.add(RuleDuplicate, obj, "remove one of them", bound, "two services are named %s", s.Name)
		}
		services[s.Name] = s
		if !slices.Contains(ServiceTypes, s.Type) {
			v.add(RuleEnum, obj, "use one of ANY, TCP, UDP, FTP, SSL_BRIDGE, HTTP, SSL", bound, "service %s has unknown type %q", s.Name, s.Type)
		}
		if !s.IP.IsValid() || s.IP.IsUnspecified() || s.IP.IsMulticast() || s.IP.Zone() != "" {
			v.add(RuleAddress, obj, fmt.Sprintf("rm service %s and add it again with a unicast IP address", s.Name), bound,
				"service %s has unusable IP address %q", s.Name, s.IP)
		}
		if s.Port == 0 && s.Type != TypeANY {
			v.add(RulePortAny, obj, fmt.Sprintf("give service %s a port (1-65535), or make it type ANY", s.Name), bound,
				"port * is allowed for type ANY only, service %s is %s", s.Name, s.Type)
		}
		if s.Monitor != "" {
			if _, ok := monitors[s.Monitor]; !ok {
				v.add(RuleMonitorRef, obj, fmt.Sprintf("add lb monitor %s TCP, or set service %s -monitor with an existing one", s.Monitor, s.Name), bound,
					"service %s uses monitor %s, which does not exist", s.Name, s.Monitor)
			}
		}
		k := svcKey{s.IP.String(), s.Port, s.Type}
		if other, ok := svcAddrs[k]; ok {
			v.add(RuleServiceUnique, obj, fmt.Sprintf("bind service %s instead of a copy, or remove service %s", other, s.Name), bound,
				"services %s and %s are both %s %s:%s", other, s.Name, s.Type, s.IP, FormatPort(s.Port))
		} else {
			svcAddrs[k] = s.Name
		}
	}

	for i := range c.VServers {
		vs := &c.VServers[i]
		obj := "lb vserver " + vs.Name
		self := []string{vs.Name}
		if !validName(vs.Name) {
			v.add(RuleName, obj, "use 1-127 letters, digits, '_', '.', '-', starting with a letter or digit", self, "invalid lb vserver name %q", vs.Name)
		}
		if vservers[vs.Name] != nil {
			v.add(RuleDuplicate, obj, "remove one of them", self, "two lb vservers are named %s", vs.Name)
		}
		vservers[vs.Name] = vs
		enumOK := true
		check := func(ok bool, what string, val any, opts string) {
			if !ok {
				enumOK = false
				v.add(RuleEnum, obj, "use one of "+opts, self, "lb vserver %s has unknown %s %q", vs.Name, what, val)
			}
		}
		check(slices.Contains(ServiceTypes, vs.Type), "type", vs.Type, "ANY, TCP, UDP, FTP, SSL_BRIDGE, HTTP, SSL")
		check(slices.Contains(LBMethods, vs.LBMethod), "lbMethod", vs.LBMethod, "ROUNDROBIN, LEASTCONNECTION, SOURCEIPHASH, SRCIPSRCPORTHASH")
		check(slices.Contains(Persistences, vs.Persistence), "persistenceType", vs.Persistence, "NONE, SOURCEIP, SSLSESSION")
		check(slices.Contains(ConnFailovers, vs.ConnFailover), "connFailover", vs.ConnFailover, "DISABLED, STATELESS, STATEFUL")
		check(slices.Contains(FwdModes, vs.FwdMode), "fwdMode", vs.FwdMode, "NAT, DSR")
		if !vs.VIP.IsValid() || vs.VIP.IsUnspecified() || vs.VIP.IsMulticast() || vs.VIP.Zone() != "" {
			v.add(RuleAddress, obj, fmt.Sprintf("rm lb vserver %s and add it again with a unicast VIP", vs.Name), self,
				"lb vserver %s has unusable VIP %q", vs.Name, vs.VIP)
		}
		if vs.Port == 0 && vs.Type != TypeANY {
			v.add(RulePortAny, obj, fmt.Sprintf("give lb vserver %s a port (1-65535), or make it type ANY", vs.Name), self,
				"port * is allowed for type ANY only, lb vserver %s is %s", vs.Name, vs.Type)
		}
		if enumOK {
			v.vserverModes(vs)
		}
	}

	// (VIP, port, protocol) unique. A port-* vserver coexists with
	// specific-port vservers on the same VIP: the more specific one wins, as
	// on ADCs.
	type listen struct {
		vip  string
		port uint16
	}
	byListen := map[listen][]*VServer{}
	for i := range c.VServers {
		k := listen{c.VServers[i].VIP.String(), c.VServers[i].Port}
		byListen[k] = append(byListen[k], &c.VServers[i])
	}
	for _, group := range byListen {
		for i := range group {
			for j := i + 1; j < len(group); j++ {
				a, b := group[i], group[j]
				if typeProtocols(a.Type)&typeProtocols(b.Type) == 0 {
					continue
				}
				for _, p := range [][2]*VServer{{a, b}, {b, a}} {
					v.add(RuleVServerUnique, "lb vserver "+p[0].Name, fmt.Sprintf("use another VIP or port for one of them, e.g. rm lb vserver %s", p[1].Name),
						[]string{a.Name, b.Name}, "lb vservers %s (%s) and %s (%s) both listen on %s port %s",
						a.Name, a.Type, b.Name, b.Type, a.VIP, FormatPort(a.Port))
				}
			}
		}
	}

	seenBinding := map[[2]string]bool{}
	for _, b := range c.Bindings {
		obj := fmt.Sprintf("binding %s %s", b.VServer, b.Service)
		vs, svc := vservers[b.VServer], services[b.Service]
		self := []string{b.VServer}
		if seenBinding[[2]string{b.VServer, b.Service}] {
			v.add(RuleDuplicate, obj, "remove one of them", self, "service %s is bound twice to lb vserver %s", b.Service, b.VServer)
		}
		seenBinding[[2]string{b.VServer, b.Service}] = true
		if vs == nil {
			v.add(RuleBindingRef, obj, fmt.Sprintf("add lb vserver %s, or unbind lb vserver %s %s", b.VServer, b.VServer, b.Service), self,
				"service %s is bound to lb vserver %s, which does not exist", b.Service, b.VServer)
		}
		if svc == nil {
			v.add(RuleBindingRef, obj, fmt.Sprintf("add service %s, or unbind lb vserver %s %s", b.Service, b.VServer, b.Service), self,
				"lb vserver %s binds service %s, which does not exist", b.VServer, b.Service)
		}
		if b.Weight < 1 || b.Weight > MaxWeight {
			v.add(RuleWeight, obj, fmt.Sprintf("bind lb vserver %s %s -weight N with N in 1..%d", b.VServer, b.Service, MaxWeight), self,
				"weight %d of service %s on lb vserver %s is out of range; ADCs accept 1..%d", b.Weight, b.Service, b.VServer, MaxWeight)
		}
		if vs == nil || svc == nil {
			continue
		}
		if vs.Type == TypeANY && svc.Type != TypeANY || vs.Type != TypeANY && svc.Type != vs.Type {
			want := vs.Type
			v.add(RuleBindingType, obj, fmt.Sprintf("bind a service of type %s to lb vserver %s", want, vs.Name), self,
				"lb vserver %s is %s and cannot take service %s of type %s", vs.Name, vs.Type, svc.Name, svc.Type)
		}
		if vs.VIP.IsValid() && svc.IP.IsValid() && vs.VIP.Is4() != svc.IP.Is4() {
			v.add(RuleIPFamily, obj, fmt.Sprintf("bind a service of the VIP's address family (%s) to lb vserver %s", family(vs.VIP.Is4()), vs.Name), self,
				"lb vserver %s has an %s VIP but service %s is %s; Tandem does not translate between IPv4 and IPv6",
				vs.Name, family(vs.VIP.Is4()), svc.Name, family(svc.IP.Is4()))
		}
		if vs.ConnFailover == FailoverStateless && !svc.USIP {
			v.add(RuleStatelessUSIP, obj, fmt.Sprintf("set service %s -usip YES", svc.Name), self,
				"STATELESS connection failover needs USIP ON on service %s (lb vserver %s)", svc.Name, vs.Name)
		}
		if vs.FwdMode == FwdDSR && !svc.USIP {
			v.add(RuleDSRUSIP, obj, fmt.Sprintf("set service %s -usip YES, or set lb vserver %s -fwdMode NAT", svc.Name, vs.Name), self,
				"DSR forwarding needs USIP ON on service %s (lb vserver %s): the backend answers the client directly", svc.Name, vs.Name)
		}
		if vs.ConnFailover == FailoverStateless {
			all := boundTo[svc.Name]
			if len(all) > 1 {
				others := slices.DeleteFunc(slices.Clone(all), func(n string) bool { return n == vs.Name })
				v.add(RuleStatelessBinding, obj, fmt.Sprintf("unbind lb vserver %s %s", others[0], svc.Name), all,
					"service %s is bound to STATELESS lb vserver %s and also to %s; a stateless vserver's services are bound to it only, so return traffic maps back to one vserver",
					svc.Name, vs.Name, joinNames(others))
			}
		}
	}
}

func family(is4 bool) string {
	if is4 {
		return "IPv4"
	}
	return "IPv6"
}

// vserverModes checks the connection-failover table for one vserver.
func (v *validator) vserverModes(vs *VServer) {
	obj := "lb vserver " + vs.Name
	self := []string{vs.Name}
	if vs.Persistence == PersistSSLSession && vs.Type != TypeSSLBridge {
		v.add(RulePersistenceType, obj, fmt.Sprintf("set lb vserver %s -persistenceType SOURCEIP (or NONE)", vs.Name), self,
			"persistence SSLSESSION is for SSL_BRIDGE vservers only, lb vserver %s is %s", vs.Name, vs.Type)
	}
	if vs.ConnFailover == FailoverDisabled {
		return
	}
	if vs.Type == TypeHTTP || vs.Type == TypeSSL {
		v.add(RuleNoFailoverHTTP, obj, fmt.Sprintf("set lb vserver %s -connFailover DISABLED", vs.Name), self,
			"%s vservers refuse connection failover (request switching and terminated SSL keep per-request state); lb vserver %s is %s with connFailover %s",
			vs.Type, vs.Name, vs.Type, vs.ConnFailover)
		return
	}
	switch vs.ConnFailover {
	case FailoverStateless:
		if vs.Type != TypeANY {
			v.add(RuleStatelessType, obj, fmt.Sprintf("set lb vserver %s -connFailover STATEFUL, or use an ANY vserver", vs.Name), self,
				"STATELESS connection failover needs type ANY, lb vserver %s is %s", vs.Name, vs.Type)
		}
		if vs.Persistence != PersistSourceIP && vs.LBMethod != MethodSrcIPSrcPortHash {
			v.add(RuleStatelessMethod, obj, fmt.Sprintf("set lb vserver %s -lbMethod SRCIPSRCPORTHASH, or -persistenceType SOURCEIP", vs.Name), self,
				"STATELESS connection failover without SOURCEIP persistence needs lbMethod SRCIPSRCPORTHASH (a pure function of the packet); lb vserver %s has %s with persistence %s",
				vs.Name, vs.LBMethod, vs.Persistence)
		}
	case FailoverStateful:
		switch vs.Type {
		case TypeANY, TypeUDP, TypeTCP, TypeFTP, TypeSSLBridge:
		default:
			v.add(RuleStatefulType, obj, fmt.Sprintf("set lb vserver %s -connFailover DISABLED", vs.Name), self,
				"STATEFUL connection failover needs type ANY, UDP, TCP, FTP or SSL_BRIDGE, lb vserver %s is %s", vs.Name, vs.Type)
		}
	}
}

// Quarantine splits a (possibly merged, invalid) configuration into the part
// the data plane may program and the problems that keep the rest out. Every
// vserver named by a problem is left out with its bindings, so two nodes that
// concurrently created conflicting objects converge to the same document and
// to the same programmed subset: the conflicting vservers are shown in error
// and programmed nowhere until an operator fixes them.
func (c *Config) Quarantine() (Config, []*RuleError) {
	probs := c.Problems()
	out := c.Clone()
	out.Normalize()
	if len(probs) == 0 {
		return out, nil
	}
	bad := map[string]bool{}
	for _, p := range probs {
		for _, n := range p.VServers {
			bad[n] = true
		}
	}
	out.VServers = slices.DeleteFunc(out.VServers, func(v VServer) bool { return bad[v.Name] })
	out.Bindings = slices.DeleteFunc(out.Bindings, func(b Binding) bool { return bad[b.VServer] })
	return out, probs
}

// ProblemStrings formats problems one per line, for tests and logs.
func ProblemStrings(probs []*RuleError) string {
	var sb strings.Builder
	for _, p := range probs {
		fmt.Fprintf(&sb, "%s: %s\n", p.Object, p.Error())
	}
	return sb.String()
}
