package cluster

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Sentinel errors. RuleError values match ErrInvalid with errors.Is, and the
// "unbind-first" refusal also matches ErrInUse.
var (
	// ErrNotFound: the named object does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: an object of that name already exists (Add* only; Put*
	// replaces).
	ErrExists = errors.New("already exists")
	// ErrInvalid: the configuration breaks a rule; the error is (or joins)
	// *RuleError values that say which rule and how to fix it.
	ErrInvalid = errors.New("invalid configuration")
	// ErrInUse: the object is still referenced (bound service, monitor used
	// by a service).
	ErrInUse = errors.New("in use")
)

// Defaults that Normalize fills in. They follow what ADCs do when an
// operator omits the option.
const (
	DefaultLBMethod        = MethodLeastConnection
	DefaultPersistence     = PersistNone
	DefaultConnFailover    = FailoverDisabled
	DefaultFwdMode         = FwdNAT
	DefaultWeight          = 1
	MaxWeight              = 100 // ADCs accept service weights 1..100
	DefaultMonitorType     = MonitorTCP
	DefaultMonitorInterval = time.Second
	DefaultMonitorTimeout  = 500 * time.Millisecond
	DefaultMonitorRise     = 2
	DefaultMonitorFall     = 2
	// MaxNameLen is the longest object name ADCs accept.
	MaxNameLen = 127
)

// RuleError is one broken rule: which rule, on which object, what is wrong
// and what command fixes it. Validate returns one or several of them
// (errors.Join); RuleErrors unpacks them.
type RuleError struct {
	Rule    string `json:"rule"`    // short stable id, e.g. "stateless-usip"
	Object  string `json:"object"`  // e.g. "lb vserver vs1" or "service web1"
	Message string `json:"message"` // what is wrong
	Fix     string `json:"fix"`     // what to do, e.g. "set service web1 -usip YES"
	// VServers lists the vservers this problem keeps out of the data plane
	// when it is found in a merged (replicated) document; see Quarantine.
	VServers []string `json:"vservers,omitempty"`
}

// Error formats "<Message> (rule <Rule>); fix: <Fix>".
func (e *RuleError) Error() string {
	return fmt.Sprintf("%s (rule %s); fix: %s", e.Message, e.Rule, e.Fix)
}

// Is makes every RuleError match ErrInvalid, and unbind-first refusals ErrInUse.
func (e *RuleError) Is(target error) bool {
	switch target {
	case ErrInvalid:
		return true
	case ErrInUse:
		return e.Rule == RuleUnbindFirst || e.Rule == RuleMonitorInUse
	}
	return false
}

// RuleErrors returns every *RuleError inside err (which may be a join).
func RuleErrors(err error) []*RuleError {
	var out []*RuleError
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if re, ok := e.(*RuleError); ok {
			out = append(out, re)
			return
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, x := range u.Unwrap() {
				walk(x)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	return out
}

// Normalize fills defaults, canonicalises addresses (IPv4-mapped IPv6 is
// stored as IPv4) and sorts every slice, so equal configurations encode
// identically. It is idempotent.
func (c *Config) Normalize() {
	for i := range c.Services {
		s := &c.Services[i]
		s.IP = s.IP.Unmap()
		if s.Type == "" {
			s.Type = TypeANY
		}
	}
	for i := range c.VServers {
		v := &c.VServers[i]
		v.VIP = v.VIP.Unmap()
		if v.Type == "" {
			v.Type = TypeANY
		}
		if v.LBMethod == "" {
			v.LBMethod = DefaultLBMethod
		}
		if v.Persistence == "" {
			v.Persistence = DefaultPersistence
		}
		if v.ConnFailover == "" {
			v.ConnFailover = DefaultConnFailover
		}
		if v.FwdMode == "" {
			v.FwdMode = DefaultFwdMode
		}
	}
	for i := range c.Bindings {
		if c.Bindings[i].Weight == 0 {
			c.Bindings[i].Weight = DefaultWeight
		}
	}
	for i := range c.Monitors {
		m := &c.Monitors[i]
		if m.Type == "" {
			m.Type = DefaultMonitorType
		}
		if m.Interval == 0 {
			m.Interval = DefaultMonitorInterval
		}
		if m.Timeout == 0 {
			m.Timeout = DefaultMonitorTimeout
		}
		if m.Rise == 0 {
			m.Rise = DefaultMonitorRise
		}
		if m.Fall == 0 {
			m.Fall = DefaultMonitorFall
		}
	}
	slices.SortStableFunc(c.Services, func(a, b Service) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortStableFunc(c.VServers, func(a, b VServer) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortStableFunc(c.Bindings, compareBinding)
	slices.SortStableFunc(c.Monitors, func(a, b Monitor) int { return cmp.Compare(a.Name, b.Name) })
	// nil and empty encode differently; make them equal.
	if c.Services == nil {
		c.Services = []Service{}
	}
	if c.VServers == nil {
		c.VServers = []VServer{}
	}
	if c.Bindings == nil {
		c.Bindings = []Binding{}
	}
	if len(c.Monitors) == 0 {
		c.Monitors = nil
	}
}

func compareBinding(a, b Binding) int {
	if n := cmp.Compare(a.VServer, b.VServer); n != 0 {
		return n
	}
	return cmp.Compare(a.Service, b.Service)
}

// Clone returns a deep copy.
func (c Config) Clone() Config {
	return Config{
		Services: slices.Clone(c.Services),
		VServers: slices.Clone(c.VServers),
		Bindings: slices.Clone(c.Bindings),
		Monitors: slices.Clone(c.Monitors),
	}
}

// Canonical returns the canonical encoding: the JSON of a normalized copy.
func (c *Config) Canonical() []byte {
	n := c.Clone()
	n.Normalize()
	b, err := json.Marshal(n)
	if err != nil {
		// Only plain data is marshalled; this cannot fail.
		panic(fmt.Sprintf("encoding config: %v", err))
	}
	return b
}

// Digest is the hex SHA-256 of the canonical encoding. Nodes with equal
// digests hold equal configurations.
func (c *Config) Digest() string {
	sum := sha256.Sum256(c.Canonical())
	return hex.EncodeToString(sum[:])
}

// Service returns the named service. The pointer aliases c's slice: it is
// valid, and edits through it take effect, until c's slices change.
func (c *Config) Service(name string) (*Service, bool) {
	for i := range c.Services {
		if c.Services[i].Name == name {
			return &c.Services[i], true
		}
	}
	return nil, false
}

// VServer returns the named vserver (aliasing, like Service).
func (c *Config) VServer(name string) (*VServer, bool) {
	for i := range c.VServers {
		if c.VServers[i].Name == name {
			return &c.VServers[i], true
		}
	}
	return nil, false
}

// Monitor returns the named monitor (aliasing, like Service).
func (c *Config) Monitor(name string) (*Monitor, bool) {
	for i := range c.Monitors {
		if c.Monitors[i].Name == name {
			return &c.Monitors[i], true
		}
	}
	return nil, false
}

// Binding returns the binding of service svc to vserver vs (aliasing).
func (c *Config) Binding(vs, svc string) (*Binding, bool) {
	for i := range c.Bindings {
		if c.Bindings[i].VServer == vs && c.Bindings[i].Service == svc {
			return &c.Bindings[i], true
		}
	}
	return nil, false
}

// BindingsOf returns the bindings of vserver vs, sorted by service.
func (c *Config) BindingsOf(vs string) []Binding {
	var out []Binding
	for _, b := range c.Bindings {
		if b.VServer == vs {
			out = append(out, b)
		}
	}
	slices.SortFunc(out, compareBinding)
	return out
}

// VServersOf returns the names of the vservers service svc is bound to, sorted.
func (c *Config) VServersOf(svc string) []string {
	var out []string
	for _, b := range c.Bindings {
		if b.Service == svc {
			out = append(out, b.VServer)
		}
	}
	slices.Sort(out)
	return out
}

// PutService adds s or replaces the service of the same name.
func (c *Config) PutService(s Service) {
	if p, ok := c.Service(s.Name); ok {
		*p = s
		return
	}
	c.Services = append(c.Services, s)
}

// PutVServer adds v or replaces the vserver of the same name.
func (c *Config) PutVServer(v VServer) {
	if p, ok := c.VServer(v.Name); ok {
		*p = v
		return
	}
	c.VServers = append(c.VServers, v)
}

// PutMonitor adds m or replaces the monitor of the same name.
func (c *Config) PutMonitor(m Monitor) {
	if p, ok := c.Monitor(m.Name); ok {
		*p = m
		return
	}
	c.Monitors = append(c.Monitors, m)
}

// PutBinding adds b or replaces the binding of the same (vserver, service).
func (c *Config) PutBinding(b Binding) {
	if p, ok := c.Binding(b.VServer, b.Service); ok {
		*p = b
		return
	}
	c.Bindings = append(c.Bindings, b)
}

// AddService adds s; ErrExists if the name is taken.
func (c *Config) AddService(s Service) error {
	if _, ok := c.Service(s.Name); ok {
		return fmt.Errorf("service %s: %w", s.Name, ErrExists)
	}
	c.Services = append(c.Services, s)
	return nil
}

// AddVServer adds v; ErrExists if the name is taken.
func (c *Config) AddVServer(v VServer) error {
	if _, ok := c.VServer(v.Name); ok {
		return fmt.Errorf("lb vserver %s: %w", v.Name, ErrExists)
	}
	c.VServers = append(c.VServers, v)
	return nil
}

// AddMonitor adds m; ErrExists if the name is taken.
func (c *Config) AddMonitor(m Monitor) error {
	if _, ok := c.Monitor(m.Name); ok {
		return fmt.Errorf("monitor %s: %w", m.Name, ErrExists)
	}
	c.Monitors = append(c.Monitors, m)
	return nil
}

// AddBinding binds; ErrExists if the service is already bound to the vserver.
func (c *Config) AddBinding(b Binding) error {
	if _, ok := c.Binding(b.VServer, b.Service); ok {
		return fmt.Errorf("binding of service %s to lb vserver %s: %w", b.Service, b.VServer, ErrExists)
	}
	c.Bindings = append(c.Bindings, b)
	return nil
}

// RemoveService removes the named service: ErrNotFound if absent, a
// RuleError (unbind-first, matching ErrInUse) while it is bound.
func (c *Config) RemoveService(name string) error {
	if _, ok := c.Service(name); !ok {
		return fmt.Errorf("service %s: %w", name, ErrNotFound)
	}
	if vs := c.VServersOf(name); len(vs) > 0 {
		return &RuleError{
			Rule:    RuleUnbindFirst,
			Object:  "service " + name,
			Message: fmt.Sprintf("service %s is bound to lb vserver %s", name, joinNames(vs)),
			Fix:     fmt.Sprintf("unbind first: unbind lb vserver %s %s", vs[0], name),
		}
	}
	c.Services = slices.DeleteFunc(c.Services, func(s Service) bool { return s.Name == name })
	return nil
}

// RemoveVServer removes the named vserver and its bindings; ErrNotFound if absent.
func (c *Config) RemoveVServer(name string) error {
	if _, ok := c.VServer(name); !ok {
		return fmt.Errorf("lb vserver %s: %w", name, ErrNotFound)
	}
	c.VServers = slices.DeleteFunc(c.VServers, func(v VServer) bool { return v.Name == name })
	c.Bindings = slices.DeleteFunc(c.Bindings, func(b Binding) bool { return b.VServer == name })
	return nil
}

// RemoveBinding unbinds service svc from vserver vs; ErrNotFound if not bound.
func (c *Config) RemoveBinding(vs, svc string) error {
	if _, ok := c.Binding(vs, svc); !ok {
		return fmt.Errorf("binding of service %s to lb vserver %s: %w", svc, vs, ErrNotFound)
	}
	c.Bindings = slices.DeleteFunc(c.Bindings, func(b Binding) bool { return b.VServer == vs && b.Service == svc })
	return nil
}

// RemoveMonitor removes the named monitor: ErrNotFound if absent, a
// RuleError (monitor-in-use, matching ErrInUse) while a service uses it.
func (c *Config) RemoveMonitor(name string) error {
	if _, ok := c.Monitor(name); !ok {
		return fmt.Errorf("monitor %s: %w", name, ErrNotFound)
	}
	var users []string
	for _, s := range c.Services {
		if s.Monitor == name {
			users = append(users, s.Name)
		}
	}
	if len(users) > 0 {
		slices.Sort(users)
		return &RuleError{
			Rule:    RuleMonitorInUse,
			Object:  "monitor " + name,
			Message: fmt.Sprintf("monitor %s is used by service %s", name, joinNames(users)),
			Fix:     fmt.Sprintf("point the services at another monitor first: set service %s -monitor <name>", users[0]),
		}
	}
	c.Monitors = slices.DeleteFunc(c.Monitors, func(m Monitor) bool { return m.Name == name })
	return nil
}

func joinNames(names []string) string {
	switch len(names) {
	case 0:
		return ""
	case 1:
		return names[0]
	}
	s := names[0]
	for _, n := range names[1:] {
		s += ", " + n
	}
	return s
}
