// Package lab builds a Tandem rack in network namespaces on one Linux host:
// a client, a front router, N tandemd nodes on a shared backplane, a back
// router and K backends. The routers run BIRD and peer by BGP with the
// nodes' embedded speakers; the front router spreads the VIPs over the
// nodes by ECMP, the back router spreads the return prefixes (the client
// prefixes) the same way. Everything lives in namespaces named
// "<Name>-<role>" (tlab-client, tlab-rfront, tlab-n1, ...): the host's own
// interfaces and routes are never touched.
//
// Up is idempotent; Down removes exactly the lab's namespaces and the
// processes recorded in its pid files, also after a half-built or crashed
// lab. The test/ packages drive a Lab in-process; cmd/tandem-lab is the
// command line.
package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"time"
)

// ErrNotRoot is returned by operations that need root.
var ErrNotRoot = errors.New("the lab needs root (network namespaces, veth, BIRD)")

// Config describes a lab. Addresses are fixed by the plan in addr.go; only
// the VIPs and the sizes are configurable.
type Config struct {
	// Name prefixes every namespace ("<Name>-client", ...). Default "tlab".
	// Tests use their own so that they never meet a running demo lab.
	Name string
	// Nodes is the number of tandemd nodes, paired (n1,n2) (n3,n4) ...
	// Default 4. At most MaxNodes.
	Nodes int
	// Backends is the number of backend servers. Default 3. At most
	// MaxBackends.
	Backends int
	// Clients is the number of client addresses per IP family on the client
	// namespace's loopback. Default 16. At most MaxClients.
	Clients int
	// VIPs are the lab's VIPs, inside VIPRange4/VIPRange6 (the ranges the
	// front router accepts). The example cluster configuration
	// (ClusterYAML) puts the stateless vservers on the first VIP of each
	// family and the stateful ones on the second. Default 198.19.0.10,
	// fd00:7a6d:ff::10, 198.19.0.11, fd00:7a6d:ff::11.
	VIPs []netip.Addr
	// ServicePort is the port the backend servers listen on, TCP and UDP,
	// for the stateless vservers; they listen on ServicePort+1 too, for the
	// stateful ones (a service bound to a stateless vserver is bound to no
	// other), and on ServicePort+2 for the stateful USIP OFF one (a
	// service's (address, port, type) is unique, and USIP is the
	// service's). Default 8080.
	ServicePort uint16
	// StateDir holds configs, pid files, sockets and logs. Default
	// /run/tandem-lab/<Name>.
	StateDir string
	// Tandemd is the tandemd binary. Empty: nodes are plumbed and
	// configured, but no tandemd is started.
	Tandemd string
	// Speaker is the labspeaker binary (test/cmd/labspeaker), started on
	// every node in tandemd's place when Tandemd is empty: it announces the
	// VIPs and the client prefixes by BGP from the node's node.yaml, so the
	// routers' sessions and ECMP routes can be seen before tandemd exists.
	// It does not forward anything. Empty: not started.
	Speaker string
	// Backend is the labbackend binary (test/cmd/labbackend). Empty: no
	// backend servers are started.
	Backend string
	// BIRD is the BIRD daemon. Default /usr/sbin/bird.
	BIRD string
	// Birdc is BIRD's client, used by Status. Default /usr/sbin/birdc.
	Birdc string
	// HoldTime is the BGP hold time, on the routers and in node.yaml; short
	// so that a frozen node is withdrawn quickly. Default 3s (BGP's
	// minimum).
	HoldTime time.Duration
	// Keepalive is the BGP keepalive interval. Default 1s.
	Keepalive time.Duration
	// FrontAS, NodeAS and BackAS are the AS numbers of the front router,
	// the nodes (all in one AS) and the back router. Default 65000, 65001,
	// 65002.
	FrontAS, NodeAS, BackAS uint32
}

// Limits of the address plan.
const (
	MaxNodes    = 15
	MaxBackends = 200
	MaxClients  = 250
)

// Default returns the default lab: tlab, 4 nodes, 3 backends.
func Default() Config {
	c := Config{}
	c.setDefaults()
	return c
}

func (c *Config) setDefaults() {
	if c.Name == "" {
		c.Name = "tlab"
	}
	if c.Nodes == 0 {
		c.Nodes = 4
	}
	if c.Backends == 0 {
		c.Backends = 3
	}
	if c.Clients == 0 {
		c.Clients = 16
	}
	if len(c.VIPs) == 0 {
		c.VIPs = []netip.Addr{
			netip.MustParseAddr("198.19.0.10"), netip.MustParseAddr("fd00:7a6d:ff::10"),
			netip.MustParseAddr("198.19.0.11"), netip.MustParseAddr("fd00:7a6d:ff::11"),
		}
	}
	if c.ServicePort == 0 {
		c.ServicePort = 8080
	}
	if c.StateDir == "" {
		c.StateDir = "/run/tandem-lab/" + c.Name
	}
	if c.BIRD == "" {
		c.BIRD = "/usr/sbin/bird"
	}
	if c.Birdc == "" {
		c.Birdc = "/usr/sbin/birdc"
	}
	if c.HoldTime == 0 {
		c.HoldTime = 3 * time.Second
	}
	if c.Keepalive == 0 {
		c.Keepalive = time.Second
	}
	if c.FrontAS == 0 {
		c.FrontAS = 65000
	}
	if c.NodeAS == 0 {
		c.NodeAS = 65001
	}
	if c.BackAS == 0 {
		c.BackAS = 65002
	}
}

// validName keeps namespace names short and shell-safe.
var validName = regexp.MustCompile(`^[a-z][a-z0-9]{0,7}$`)

func (c *Config) validate() error {
	if !validName.MatchString(c.Name) {
		return fmt.Errorf("lab name %q: use 1-8 lowercase letters and digits, starting with a letter", c.Name)
	}
	if c.Nodes < 1 || c.Nodes > MaxNodes {
		return fmt.Errorf("%d nodes: the address plan has room for 1..%d", c.Nodes, MaxNodes)
	}
	if c.Backends < 1 || c.Backends > MaxBackends {
		return fmt.Errorf("%d backends: the address plan has room for 1..%d", c.Backends, MaxBackends)
	}
	if c.Clients < 1 || c.Clients > MaxClients {
		return fmt.Errorf("%d client addresses: the address plan has room for 1..%d", c.Clients, MaxClients)
	}
	for _, v := range c.VIPs {
		if !VIPRange4.Contains(v) && !VIPRange6.Contains(v) {
			return fmt.Errorf("VIP %v is outside the lab's VIP ranges %v and %v, which the front router accepts", v, VIPRange4, VIPRange6)
		}
	}
	if c.ServicePort > 65533 {
		return fmt.Errorf("service port %d leaves no room for the stateful services' two ports above it", c.ServicePort)
	}
	if c.HoldTime < 3*time.Second || c.Keepalive <= 0 || c.Keepalive >= c.HoldTime {
		return fmt.Errorf("hold time %v / keepalive %v: BGP needs a hold time of at least 3s above a positive keepalive", c.HoldTime, c.Keepalive)
	}
	if c.HoldTime%time.Second != 0 || c.Keepalive%time.Second != 0 {
		return fmt.Errorf("hold time %v / keepalive %v: BGP timers are whole seconds", c.HoldTime, c.Keepalive)
	}
	if c.FrontAS == c.NodeAS || c.BackAS == c.NodeAS {
		return fmt.Errorf("router AS %d/%d equals the nodes' AS %d: the sessions are eBGP", c.FrontAS, c.BackAS, c.NodeAS)
	}
	if c.StateDir == "" || c.StateDir[0] != '/' {
		return fmt.Errorf("state dir %q must be an absolute path", c.StateDir)
	}
	if len(c.StateDir) > 90 {
		return fmt.Errorf("state dir %q is %d bytes: BIRD's control socket path in it must stay under the 108-byte limit of unix sockets; use a shorter one", c.StateDir, len(c.StateDir))
	}
	return nil
}
