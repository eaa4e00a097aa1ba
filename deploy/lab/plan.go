package lab

import (
	"fmt"
	"net/netip"
	"strings"
)

// Step is one idempotent piece of the lab's plumbing: when Check is set
// and succeeds the step is already done; otherwise its commands run in
// order. Commands are argv vectors for the Runner (ip, ethtool, sysctl
// through "ip netns exec").
type Step struct {
	What  string
	Check []string
	Do    [][]string
}

// Interface names. Router and bridge ports are named after the neighbour
// they lead to (n1, b2, client); a node's are front, back and bp.
const (
	clientIf   = "rfront" // the client's link to the front router
	backendIf  = "rback"  // a backend's link to the back router
	backendLAN = "lan"    // the bridge of backends in the back router
	bridgeName = "bp0"    // the backplane bridge
)

type planner struct {
	c     Config
	steps []Step
}

func (p *planner) add(what string, check []string, do ...[]string) {
	p.steps = append(p.steps, Step{What: what, Check: check, Do: do})
}

func ipn(ns string, args ...string) []string {
	return append([]string{"ip", "-n", ns}, args...)
}

func nsExec(ns string, args ...string) []string {
	return append([]string{"ip", "netns", "exec", ns}, args...)
}

func cidr(a netip.Addr, bits int) string { return netip.PrefixFrom(a, bits).String() }

func (p *planner) namespace(ns string, router bool) {
	p.add("namespace "+ns, ipn(ns, "link", "show", "lo"), []string{"ip", "netns", "add", ns})
	sys := []string{"sysctl", "-q", "-w",
		// Addresses usable at once: DAD would hold IPv6 for a second or two.
		"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
		// Asymmetric paths are the point of the lab (ECMP both ways).
		"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
	}
	if router {
		sys = append(sys, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	}
	p.add("sysctls of "+ns, nil, nsExec(ns, sys...), ipn(ns, "link", "set", "lo", "up"))
}

// veth links nsA/ifA with nsB/ifB and gives them addresses.
func (p *planner) veth(nsA, ifA string, addrsA []string, nsB, ifB string, addrsB []string) {
	p.add(fmt.Sprintf("veth %s:%s <-> %s:%s", nsA, ifA, nsB, ifB), ipn(nsA, "link", "show", ifA),
		ipn(nsA, "link", "add", ifA, "type", "veth", "peer", "name", ifB, "netns", nsB))
	p.addrs(nsA, ifA, addrsA)
	p.addrs(nsB, ifB, addrsB)
}

func (p *planner) addrs(ns, ifname string, addrs []string) {
	var do [][]string
	for _, a := range addrs {
		cmd := ipn(ns, "addr", "replace", a, "dev", ifname)
		if strings.Contains(a, ":") {
			cmd = append(cmd, "nodad")
		}
		do = append(do, cmd)
	}
	do = append(do, ipn(ns, "link", "set", ifname, "up"))
	p.add(fmt.Sprintf("addresses of %s:%s", ns, ifname), nil, do...)
}

func (p *planner) bridge(ns, name string, addrs []string) {
	p.add("bridge "+ns+":"+name, ipn(ns, "link", "show", name), ipn(ns, "link", "add", name, "type", "bridge"))
	p.addrs(ns, name, addrs)
}

func (p *planner) ethtool(ns, ifname string, settings ...string) {
	p.add(fmt.Sprintf("offloads of %s:%s: %s", ns, ifname, strings.Join(settings, " ")), nil,
		nsExec(ns, append([]string{"ethtool", "-K", ifname}, settings...)...))
}

// route replaces the route to dst in ns with one via gw.
func (p *planner) route(ns string, dst string, gw netip.Addr) {
	cmd := ipn(ns)
	if gw.Is6() {
		cmd = append(cmd, "-6")
	}
	cmd = append(cmd, "route", "replace", dst, "via", gw.String())
	p.add(fmt.Sprintf("route %s: %s via %s", ns, dst, gw), nil, cmd)
}

// BackplaneMTU is the backplane's MTU: steering encapsulates a client's
// packet in 36 (IPv4) or 56 (IPv6) bytes (flow/bpf/lb.c), so a full-sized
// 1500-byte packet from the front needs 1556 on the backplane, else the
// data plane drops it (drop_frag_needed). A TLS 1.3 ClientHello of Go's
// crypto/tls (X25519MLKEM768 key share) fills a segment: with the default
// 1500 every steered TLS handshake hung.
const BackplaneMTU = 1600

// FallbackMetric is the metric of a node's fallback default route via its
// partner's backplane address.
const FallbackMetric = 2048

// fallback adds a node's default route via its partner's backplane
// address, used only when its own default route (front link) is gone.
func (p *planner) fallback(ns string, gw netip.Addr) {
	cmd := ipn(ns)
	if gw.Is6() {
		cmd = append(cmd, "-6")
	}
	cmd = append(cmd, "route", "replace", "default", "via", gw.String(), "metric", fmt.Sprint(FallbackMetric))
	p.add(fmt.Sprintf("route %s: fallback default via %s metric %d", ns, gw, FallbackMetric), nil, cmd)
}

// guardTable is the nftables table of a node's guard.
const guardTable = "tandem_guard"

// guard keeps a node's own stack out of the data path when tandemd runs
// there: TCP and UDP to a VIP that reach the stack (tandemd's XDP program
// is gone: the daemon was SIGKILLed or is restarting, and the routers have
// not withdrawn it yet) are dropped rather than answered with a reset or a
// port unreachable that would end the client's flow; and backends' replies
// to the clients are never forwarded un-rewritten. Dropped packets are
// retransmitted, and reach a live node once the routers have withdrawn
// this one. Replies to a SNIP that reach a node whose data plane has no
// entry for them (the back router's route still points at the member
// that just handed the pair over) are dropped too: the stack would route
// them out of the front link.
func (p *planner) guard(ns string, c4, c6 netip.Prefix) {
	rules := fmt.Sprintf(`table inet %s {
  chain input {
    type filter hook input priority 0; policy accept;
    ip daddr %s meta l4proto { tcp, udp } drop
    ip6 daddr %s meta l4proto { tcp, udp } drop
  }
  chain forward {
    type filter hook forward priority 0; policy accept;
    iifname %q ip daddr %s drop
    iifname %q ip6 daddr %s drop
    iifname %q ip daddr %s drop
    iifname %q ip6 daddr %s drop
  }
}`, guardTable, VIPRange4, VIPRange6, NodeIfBack, c4, NodeIfBack, c6, NodeIfBack, SNIPRange4, NodeIfBack, SNIPRange6)
	p.add("guard of "+ns+": its stack never answers for a VIP", nsExec(ns, "nft", "list", "table", "inet", guardTable),
		nsExec(ns, "nft", rules))
}

// Plan lists the steps that build the lab's namespaces, links, addresses
// and routes (processes are started separately).
func (c Config) Plan() []Step {
	p := &planner{c: c}
	client, front, back, bp := c.NS(RoleClient), c.NS(RoleFront), c.NS(RoleBack), c.NS(RoleBackplane)

	p.namespace(client, false)
	p.namespace(front, true)
	p.namespace(back, true)
	p.namespace(bp, false)
	for i := 1; i <= c.Nodes; i++ {
		p.namespace(c.NS(NodeName(i)), true)
	}
	for j := 1; j <= c.Backends; j++ {
		p.namespace(c.NS(BackendName(j)), false)
	}
	// Both routers hash on L4 so that the flows of one client address
	// spread over the nodes.
	for _, r := range []string{front, back} {
		p.add("L4 multipath hashing in "+r, nil, nsExec(r, "sysctl", "-q", "-w",
			"net.ipv4.fib_multipath_hash_policy=1", "net.ipv6.fib_multipath_hash_policy=1"))
	}

	// Client.
	gw := ClientGateway()
	cl := ClientLink()
	p.veth(client, clientIf, []string{cidr(cl.V4, 24), cidr(cl.V6, 64)}, front, "client", []string{cidr(gw.V4, 24), cidr(gw.V6, 64)})
	// XDP rewrites must not meet partial checksums from the client's stack.
	p.ethtool(client, clientIf, "tx", "off")
	var lo [][]string
	for _, a := range c.ClientAddrs() {
		cmd := ipn(client, "addr", "replace", cidr(a, a.BitLen()), "dev", "lo")
		if a.Is6() {
			cmd = append(cmd, "nodad")
		}
		lo = append(lo, cmd)
	}
	p.add(fmt.Sprintf("%d client addresses per family on %s:lo", c.Clients, client), nil, lo...)
	p.route(client, "default", gw.V4)
	p.route(client, "default", gw.V6)
	c4, c6 := ClientPrefixes()
	p.route(front, c4.String(), cl.V4)
	p.route(front, c6.String(), cl.V6)

	// Backplane bridge, in its own namespace.
	p.bridge(bp, bridgeName, nil)
	// Backend LAN: a bridge in the back router.
	bgw := BackendGateway()
	p.bridge(back, backendLAN, []string{cidr(bgw.V4, 24), cidr(bgw.V6, 64)})

	for i := 1; i <= c.Nodes; i++ {
		n, name := c.NS(NodeName(i)), NodeName(i)
		nf, rf := NodeFront(i), RouterFront(i)
		nb, rb := NodeBack(i), RouterBack(i)
		bpa := NodeBackplane(i)
		p.veth(n, NodeIfFront, []string{cidr(nf.V4, 24), cidr(nf.V6, 64)}, front, name, []string{cidr(rf.V4, 24), cidr(rf.V6, 64)})
		p.veth(n, NodeIfBack, []string{cidr(nb.V4, 24), cidr(nb.V6, 64)}, back, name, []string{cidr(rb.V4, 24), cidr(rb.V6, 64)})
		p.veth(n, NodeIfBackplane, []string{cidr(bpa.V4, 24), cidr(bpa.V6, 64)}, bp, name, nil)
		p.add(fmt.Sprintf("%s:%s into bridge %s", bp, name, bridgeName), nil, ipn(bp, "link", "set", name, "master", bridgeName))
		p.add(fmt.Sprintf("backplane MTU %d at %s:%s", BackplaneMTU, n, NodeIfBackplane), nil,
			ipn(n, "link", "set", NodeIfBackplane, "mtu", fmt.Sprint(BackplaneMTU)),
			ipn(bp, "link", "set", name, "mtu", fmt.Sprint(BackplaneMTU)),
			ipn(bp, "link", "set", bridgeName, "mtu", fmt.Sprint(BackplaneMTU)))
		// XDP_REDIRECT into a veth needs NAPI on its peer: GRO on at both
		// ends of every node link.
		for _, e := range []struct{ ns, ifname string }{
			{n, NodeIfFront}, {n, NodeIfBack}, {n, NodeIfBackplane}, {front, name}, {back, name}, {bp, name},
		} {
			p.ethtool(e.ns, e.ifname, "gro", "on")
		}
		p.route(n, "default", rf.V4)
		p.route(n, "default", rf.V6)
		p.route(n, prefix4(subnetBackends).String(), rb.V4)
		p.route(n, prefix6(subnetBackends).String(), rb.V6)
		// A node whose front link is cut still owns its pair's stateful
		// flows until the pair's state moves: their replies leave through
		// the partner's backplane address (a metric above the kernel's
		// defaults, 0 for IPv4 and 1024 for IPv6, so only then).
		if q := c.Partner(i); q != 0 {
			pb := NodeBackplane(q)
			p.fallback(n, pb.V4)
			p.fallback(n, pb.V6)
		}
		if c.Tandemd != "" {
			p.guard(n, c4, c6)
		}
	}

	for j := 1; j <= c.Backends; j++ {
		b, name := c.NS(BackendName(j)), BackendName(j)
		a := Backend(j)
		p.veth(b, backendIf, []string{cidr(a.V4, 24), cidr(a.V6, 64)}, back, name, nil)
		p.add(fmt.Sprintf("%s:%s into bridge %s", back, name, backendLAN), nil, ipn(back, "link", "set", name, "master", backendLAN))
		p.ethtool(b, backendIf, "tx", "off")
		p.route(b, "default", bgw.V4)
		p.route(b, "default", bgw.V6)
	}
	return p.steps
}

// FormatPlan renders steps one command a line, for people and golden files.
func FormatPlan(steps []Step) string {
	var b strings.Builder
	for _, s := range steps {
		fmt.Fprintf(&b, "# %s\n", s.What)
		if s.Check != nil {
			fmt.Fprintf(&b, "unless %s\n", strings.Join(s.Check, " "))
		}
		for _, d := range s.Do {
			fmt.Fprintf(&b, "  %s\n", strings.Join(d, " "))
		}
	}
	return b.String()
}
