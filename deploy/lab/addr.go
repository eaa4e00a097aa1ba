package lab

import (
	"fmt"
	"net/netip"
)

// The address plan. IPv4 comes from 198.18.0.0/15 (RFC 2544 benchmarking
// space), IPv6 from fd00:7a6d::/48; subnet X of 198.18.X.0/24 is
// fd00:7a6d:0:X::/64 with X written in decimal digits, and host H of a
// subnet is .H and ::H (decimal digits again), so that addresses read the
// same in both families: 198.18.17.2 is fd00:7a6d:0:17::2. VIPs come from
// 198.19.0.0/24 and fd00:7a6d:ff::/64.
//
//	198.18.0.0/24     client link: rfront .1, client .2
//	198.18.1.0/24     client addresses on the client's loopback, .1 .. .Clients
//	198.18.3.0/24     backplane bridge: node i is .i
//	198.18.(16+i).0/24 front link of node i: rfront .1, node .2
//	198.18.(32+i).0/24 back link of node i: rback .1, node .2
//	198.18.64.0/24    backend LAN (a bridge in rback): rback .1, backend j .(10+j)
//	198.18.80.0/24    SNIPs: pair k (nodes 2k-1, 2k) is .k and fd00:7a6d:0:80::k
var (
	// VIPRange4 and VIPRange6 hold the VIPs the front router accepts.
	VIPRange4 = netip.MustParsePrefix("198.19.0.0/24")
	VIPRange6 = netip.MustParsePrefix("fd00:7a6d:ff::/64")
	// SNIPRange4 and SNIPRange6 hold the pairs' SNIPs, which the back
	// router accepts.
	SNIPRange4 = prefix4(subnetSNIPs)
	SNIPRange6 = prefix6(subnetSNIPs)
)

const (
	subnetClientLink = 0
	subnetClients    = 1
	subnetBackplane  = 3
	subnetFrontBase  = 16
	subnetBackBase   = 32
	subnetBackends   = 64
	subnetSNIPs      = 80
)

// addr4 is 198.18.subnet.host.
func addr4(subnet, host int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 18, byte(subnet), byte(host)})
}

// addr6 is fd00:7a6d:0:<subnet>::<host>, the numbers written in decimal.
func addr6(subnet, host int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("fd00:7a6d:0:%d::%d", subnet, host))
}

func prefix4(subnet int) netip.Prefix { return netip.PrefixFrom(addr4(subnet, 0), 24) }
func prefix6(subnet int) netip.Prefix {
	return netip.PrefixFrom(addr6(subnet, 0), 64)
}

// Pair is an IPv4 and an IPv6 address.
type Pair struct{ V4, V6 netip.Addr }

func pair(subnet, host int) Pair { return Pair{addr4(subnet, host), addr6(subnet, host)} }

// ClientPrefixes are the client addresses' prefixes: the return prefixes
// the nodes announce to the back router.
func ClientPrefixes() (netip.Prefix, netip.Prefix) {
	return prefix4(subnetClients), prefix6(subnetClients)
}

// ClientAddrs returns the client addresses of both families.
func (c Config) ClientAddrs() []netip.Addr {
	var out []netip.Addr
	for i := 1; i <= c.Clients; i++ {
		out = append(out, addr4(subnetClients, i), addr6(subnetClients, i))
	}
	return out
}

// NodeFront is node i's address on its front link; the router's is
// RouterFront(i).
func NodeFront(i int) Pair   { return pair(subnetFrontBase+i, 2) }
func RouterFront(i int) Pair { return pair(subnetFrontBase+i, 1) }

// NodeBack is node i's address on its back link; the router's is
// RouterBack(i).
func NodeBack(i int) Pair   { return pair(subnetBackBase+i, 2) }
func RouterBack(i int) Pair { return pair(subnetBackBase+i, 1) }

// NodeBackplane is node i's backplane address (memberlist, mirroring).
func NodeBackplane(i int) Pair { return pair(subnetBackplane, i) }

// Backend is backend j's address on the backend LAN.
func Backend(j int) Pair { return pair(subnetBackends, 10+j) }

// BackendGateway is the back router's address on the backend LAN.
func BackendGateway() Pair { return pair(subnetBackends, 1) }

// ClientGateway is the front router's address on the client link;
// ClientLink is the client's.
func ClientGateway() Pair { return pair(subnetClientLink, 1) }
func ClientLink() Pair    { return pair(subnetClientLink, 2) }

// Backends returns the backend addresses of both families.
func (c Config) BackendAddrs() []netip.Addr {
	var out []netip.Addr
	for j := 1; j <= c.Backends; j++ {
		out = append(out, Backend(j).V4, Backend(j).V6)
	}
	return out
}

// SNIP is the source address of the USIP OFF flows of node i's pair, one
// per family (pair k = nodes 2k-1 and 2k, a lone last node its own): both
// members configure them (node.yaml snip), the member owning the pair's
// flows announces both to the back router.
func SNIP(i int) Pair { return pair(subnetSNIPs, (i+1)/2) }

// NodeName is node i's id: n1, n2, ...
func NodeName(i int) string { return fmt.Sprintf("n%d", i) }

// BackendName is backend j's name: b1, b2, ...
func BackendName(j int) string { return fmt.Sprintf("b%d", j) }

// Partner returns the node paired with node i (1-2, 3-4, ...), or 0 when
// i is the odd one out.
func (c Config) Partner(i int) int {
	p := i + 1
	if i%2 == 0 {
		p = i - 1
	}
	if p > c.Nodes {
		return 0
	}
	return p
}

// Namespace roles.
const (
	RoleClient    = "client"
	RoleFront     = "rfront"
	RoleBack      = "rback"
	RoleBackplane = "bp"
)

// NS returns the namespace name of a role ("client", "rfront", "n3",
// "b1", ...): "<Name>-<role>".
func (c Config) NS(role string) string { return c.Name + "-" + role }

// Namespaces lists every namespace of the lab, in build order.
func (c Config) Namespaces() []string {
	out := []string{c.NS(RoleClient), c.NS(RoleFront), c.NS(RoleBack), c.NS(RoleBackplane)}
	for i := 1; i <= c.Nodes; i++ {
		out = append(out, c.NS(NodeName(i)))
	}
	for j := 1; j <= c.Backends; j++ {
		out = append(out, c.NS(BackendName(j)))
	}
	return out
}
