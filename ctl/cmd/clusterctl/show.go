package main

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/tandem-lb/tandem/cluster"
	"github.com/tandem-lb/tandem/node/api"
)

type showCmd struct {
	LB      showLBCmd      `cmd:"" name:"lb" help:"Show lb vservers."`
	Service showServiceCmd `cmd:"" help:"Show services with health and bindings."`
	Cluster showClusterCmd `cmd:"" help:"Show members, pairs, BGP sessions and configuration agreement."`
	Node    showNodeCmd    `cmd:"" help:"Show one node in detail."`
	RPCNode showRPCNodeCmd `cmd:"" name:"rpcnode" help:"Show the pairs' mirroring channels."`
	Conn    showConnCmd    `cmd:"" help:"Show connections (flow entries)."`
	Config  showConfigCmd  `cmd:"" help:"Show the configuration in the form apply reads."`
}

type showLBCmd struct {
	VServer showVServerCmd `cmd:"" name:"vserver" help:"Show lb vservers: state, method, failover, table epoch, bound services, counters."`
}

type showVServerCmd struct {
	Name string `arg:"" optional:"" help:"Vserver name (default: all)."`
}

func (c *showVServerCmd) Help() string {
	return "Examples:\n\n    clusterctl show lb vserver\n    clusterctl show lb vserver vs1 -o json"
}

func (c *showVServerCmd) Run(s *session) error {
	a, err := s.api()
	if err != nil {
		return err
	}
	if c.Name != "" {
		v, err := a.VServer(s.ctx, c.Name)
		if err != nil {
			return err
		}
		return s.print(v, func(w io.Writer) error { return printVServer(w, v) })
	}
	vs, err := a.VServers(s.ctx)
	if err != nil {
		return err
	}
	return s.print(vs, func(w io.Writer) error { return printVServers(w, vs) })
}

func printVServers(w io.Writer, vs []api.VServerView) error {
	t := newTable(w, "NAME", "TYPE", "VIP", "PORT", "STATE", "METHOD", "PERSISTENCE", "FAILOVER", "FWD", "EPOCH", "SERVICES", "UP", "PACKETS", "BYTES", "NEWFLOWS", "DROPS")
	for _, v := range vs {
		up := 0
		for _, b := range v.Bindings {
			if b.Health == api.HealthUp {
				up++
			}
		}
		t.row(v.Name, v.Type, v.VIP, cluster.FormatPort(v.Port), v.State, v.LBMethod, v.Persistence, v.ConnFailover, v.FwdMode,
			v.Epoch, len(v.Bindings), up, v.Counters.Packets, v.Counters.Bytes, v.Counters.NewFlows, v.Counters.Drops)
	}
	return t.flush()
}

func printVServer(w io.Writer, v api.VServerView) error {
	kv := newTable(w)
	kv.row("Name:", v.Name)
	kv.row("Type:", v.Type)
	kv.row("VIP:", joinHostPort(v.VIP, v.Port))
	kv.row("State:", v.State)
	kv.row("LB method:", v.LBMethod)
	kv.row("Persistence:", v.Persistence)
	kv.row("Conn failover:", v.ConnFailover)
	kv.row("Fwd mode:", v.FwdMode)
	kv.row("Table epoch:", v.Epoch)
	kv.row("Counters:", fmt.Sprintf("packets %d, bytes %d, new flows %d, drops %d", v.Counters.Packets, v.Counters.Bytes, v.Counters.NewFlows, v.Counters.Drops))
	if err := kv.flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\n%d bound service(s):\n", len(v.Bindings))
	if len(v.Bindings) == 0 {
		return nil
	}
	t := newTable(w, "SERVICE", "IP", "PORT", "WEIGHT", "HEALTH", "PACKETS", "BYTES", "NEWFLOWS", "DROPS")
	for _, b := range v.Bindings {
		t.row(b.Service, b.IP, cluster.FormatPort(b.Port), b.Weight, b.Health, b.Counters.Packets, b.Counters.Bytes, b.Counters.NewFlows, b.Counters.Drops)
	}
	return t.flush()
}

type showServiceCmd struct {
	Name string `arg:"" optional:"" help:"Service name (default: all)."`
}

func (c *showServiceCmd) Help() string {
	return "Examples:\n\n    clusterctl show service\n    clusterctl show service web1"
}

func (c *showServiceCmd) Run(s *session) error {
	a, err := s.api()
	if err != nil {
		return err
	}
	if c.Name != "" {
		v, err := a.Service(s.ctx, c.Name)
		if err != nil {
			return err
		}
		return s.print(v, func(w io.Writer) error {
			kv := newTable(w)
			kv.row("Name:", v.Name)
			kv.row("IP:", v.IP)
			kv.row("Type:", v.Type)
			kv.row("Port:", cluster.FormatPort(v.Port))
			kv.row("USIP:", yesNo(v.USIP))
			kv.row("Monitor:", orDash(v.Monitor))
			kv.row("Health:", v.Health)
			kv.row("Bound to:", orDash(strings.Join(v.VServers, ", ")))
			return kv.flush()
		})
	}
	vs, err := a.Services(s.ctx)
	if err != nil {
		return err
	}
	return s.print(vs, func(w io.Writer) error {
		t := newTable(w, "NAME", "IP", "TYPE", "PORT", "USIP", "MONITOR", "HEALTH", "VSERVERS")
		for _, v := range vs {
			t.row(v.Name, v.IP, v.Type, cluster.FormatPort(v.Port), yesNo(v.USIP), orDash(v.Monitor), v.Health, orDash(strings.Join(v.VServers, ",")))
		}
		return t.flush()
	})
}

type showClusterCmd struct{}

func (c *showClusterCmd) Help() string { return "Example:\n\n    clusterctl show cluster" }

func (c *showClusterCmd) Run(s *session) error {
	a, err := s.api()
	if err != nil {
		return err
	}
	v, err := a.Cluster(s.ctx)
	if err != nil {
		return err
	}
	return s.print(v, func(w io.Writer) error { return printCluster(w, v) })
}

func printCluster(w io.Writer, v api.ClusterView) error {
	agree := "agreed by every live member"
	if !v.DigestAgree {
		agree = "NOT agreed: some live members hold another configuration (still converging, or partitioned)"
	}
	fmt.Fprintf(w, "Answering node: %s\nConfig digest:  %s (%s)\n\n", orDash(v.Self), short(v.Digest), agree)
	t := newTable(w, "NODE", "ADDR", "PAIR", "STATE", "DRAINED", "DIGEST", "PROTO", "BGP")
	for _, m := range v.Members {
		digest := short(m.Digest)
		if m.Digest != v.Digest {
			digest += " (differs)"
		}
		t.row(m.ID, m.Addr, m.Pair, m.State, yesNo(m.Drained), digest, m.ProtoVersion, bgpSummary(m))
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	t = newTable(w, "PAIR", "MEMBERS", "ACTIVE", "PROTECTED")
	for _, p := range v.Pairs {
		prot := "YES"
		if !p.Protected {
			prot = "NO (no live partner)"
		}
		t.row(p.ID, strings.Join(p.Members, ","), orDash(p.Active), prot)
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	t = newTable(w, "NODE", "BGP PEER", "PEER AS", "STATE", "PREFIXES", "GRACEFUL")
	for _, m := range v.Members {
		for _, b := range m.BGP {
			t.row(m.ID, b.Peer, b.PeerAS, b.State, b.Prefixes, yesNo(b.Graceful))
		}
	}
	return t.flush()
}

type showNodeCmd struct {
	Name string `arg:"" help:"Node id."`
}

func (c *showNodeCmd) Help() string { return "Example:\n\n    clusterctl show node n3" }

func (c *showNodeCmd) Run(s *session) error {
	a, err := s.api()
	if err != nil {
		return err
	}
	n, err := a.Node(s.ctx, c.Name)
	if err != nil {
		return err
	}
	return s.print(n, func(w io.Writer) error {
		kv := newTable(w)
		kv.row("Node:", n.ID)
		kv.row("Address:", orDash(n.Addr))
		kv.row("Pair:", n.Pair)
		kv.row("Partner:", orDash(n.Partner))
		kv.row("State:", n.State)
		kv.row("Drained:", yesNo(n.Drained))
		kv.row("Config digest:", short(n.Digest))
		kv.row("Mirroring protocol:", n.ProtoVersion)
		vips := make([]string, len(n.VIPs))
		for i, v := range n.VIPs {
			vips[i] = v.String()
		}
		kv.row("Announced VIPs:", orDash(strings.Join(vips, ", ")))
		kv.row("Flow entries:", n.Flows)
		kv.row("Counters:", fmt.Sprintf("packets %d, bytes %d, new flows %d, drops %d", n.Counters.Packets, n.Counters.Bytes, n.Counters.NewFlows, n.Counters.Drops))
		kv.row("BGP sessions:", bgpSummary(n.Member))
		if err := kv.flush(); err != nil {
			return err
		}
		if len(n.BGP) == 0 && n.BGPPeers > 0 {
			fmt.Fprintf(w, "(per-session detail, VIPs, flows and counters are kept by %s itself: ask it with --node)\n", n.ID)
			return nil
		}
		fmt.Fprintln(w)
		t := newTable(w, "BGP PEER", "PEER AS", "STATE", "PREFIXES", "GRACEFUL")
		for _, b := range n.BGP {
			t.row(b.Peer, b.PeerAS, b.State, b.Prefixes, yesNo(b.Graceful))
		}
		return t.flush()
	})
}

type showRPCNodeCmd struct{}

func (c *showRPCNodeCmd) Help() string { return "Example:\n\n    clusterctl show rpcnode" }

func (c *showRPCNodeCmd) Run(s *session) error {
	a, err := s.api()
	if err != nil {
		return err
	}
	rows, err := a.RPCNodes(s.ctx)
	if err != nil {
		return err
	}
	return s.print(rows, func(w io.Writer) error {
		t := newTable(w, "PAIR", "NODE", "PEER", "ROLE", "STATE", "AUTHENTICATED", "PROTO", "PEER PROTO", "MIRRORED", "BYTES", "LAG", "LAST BULK SYNC", "REASON")
		for _, r := range rows {
			last := "never"
			if !r.LastBulkSync.IsZero() {
				last = r.LastBulkSync.UTC().Format(time.RFC3339)
			}
			t.row(r.Pair, r.Node, orDash(r.Peer), orDash(r.Role), r.State, yesNo(r.Authenticated), r.ProtoVersion, r.PeerProtoVersion,
				r.Mirrored, r.Bytes, r.Lag, last, orDash(r.Reason))
		}
		return t.flush()
	})
}

type showConnCmd struct {
	VServer string `name:"vserver" help:"Only connections of this lb vserver." placeholder:"NAME"`
	Node    string `name:"conn-node" help:"Only connections held by this node (typed -node NAME)." placeholder:"NAME"`
}

func (c *showConnCmd) Help() string {
	return "Examples:\n\n    clusterctl show conn -vserver vs1\n    clusterctl show conn -node n2"
}

func (c *showConnCmd) Run(s *session) error {
	a, err := s.api()
	if err != nil {
		return err
	}
	conns, err := a.Connections(s.ctx, api.ConnFilter{VServer: c.VServer, Node: c.Node})
	if err != nil {
		return err
	}
	return s.print(conns, func(w io.Writer) error {
		t := newTable(w, "NODE", "VSERVER", "PROTO", "CLIENT", "VIP", "SERVICE", "BACKEND", "OWNER", "MIRRORED", "AGE")
		for _, c := range conns {
			owner := "-"
			if c.Owner != 0 {
				owner = fmt.Sprintf("pair %d", c.Owner)
			}
			t.row(c.Node, c.VServer, c.Proto, c.Client, c.VIP, c.Service, c.Backend, owner, yesNo(c.Mirrored), c.Age)
		}
		if err := t.flush(); err != nil {
			return err
		}
		_, err := fmt.Fprintf(w, "%d connection(s)\n", len(conns))
		return err
	})
}

type showConfigCmd struct{}

func (c *showConfigCmd) Help() string {
	return "Prints the configuration as YAML (also with -o table), the form apply -f reads,\n" +
		"so exporting and applying it again changes nothing.\n\nExample:\n\n    clusterctl show config -o yaml > cluster.yaml"
}

func (c *showConfigCmd) Run(s *session) error {
	a, err := s.api()
	if err != nil {
		return err
	}
	doc, err := a.Config(s.ctx)
	if err != nil {
		return err
	}
	if s.format == "json" {
		return writeJSON(s.out, doc)
	}
	b, err := MarshalConfig(doc.Config)
	if err != nil {
		return err
	}
	_, err = s.out.Write(b)
	return err
}

// ---- explain ----

type explainCmd struct {
	Flow explainFlowCmd `cmd:"" help:"Which vserver, backend and owner pair a flow gets."`
}

type explainFlowCmd struct {
	Src   string `arg:"" help:"Client address and port, e.g. 198.51.100.7:41234 or [2001:db8::7]:41234."`
	Dst   string `arg:"" help:"VIP and port."`
	Proto string `arg:"" help:"TCP or UDP."`
}

func (c *explainFlowCmd) Help() string {
	return "Computes, from the configuration, the data plane's tables and the hashing the\n" +
		"kernel uses, where a new flow goes.\n\nExamples:\n\n" +
		"    clusterctl explain flow 198.51.100.7:41234 203.0.113.10:80 TCP\n" +
		"    clusterctl explain flow [2001:db8::7]:41234 [2001:db8::10]:21 TCP"
}

func (c *explainFlowCmd) Run(s *session) error {
	src, err := netip.ParseAddrPort(c.Src)
	if err != nil {
		return usagef("source %q: want ADDR:PORT (IPv6 as [ADDR]:PORT)", c.Src)
	}
	dst, err := netip.ParseAddrPort(c.Dst)
	if err != nil {
		return usagef("destination %q: want ADDR:PORT (IPv6 as [ADDR]:PORT)", c.Dst)
	}
	proto := strings.ToUpper(c.Proto)
	if proto != "TCP" && proto != "UDP" {
		return usagef("protocol %q: want TCP or UDP", c.Proto)
	}
	a, err := s.api()
	if err != nil {
		return err
	}
	ex, err := a.Explain(s.ctx, api.ExplainRequest{Src: src, Dst: dst, Proto: proto})
	if err != nil {
		return err
	}
	return s.print(ex, func(w io.Writer) error {
		kv := newTable(w)
		kv.row("Flow:", fmt.Sprintf("%s -> %s %s", ex.Src, ex.Dst, ex.Proto))
		kv.row("VServer:", ex.VServer)
		kv.row("LB method:", fmt.Sprintf("%s (persistence %s)", ex.LBMethod, ex.Persistence))
		kv.row("Conn failover:", ex.ConnFailover)
		if ex.Mode == "table" {
			hashed := "source IP"
			if ex.WithPort {
				hashed = "source IP and port"
			}
			kv.row("Choice:", "Maglev table, hash of "+hashed)
			kv.row("Table epoch:", ex.Epoch)
			kv.row("Hash:", fmt.Sprintf("0x%08x (seed 0x%08x)", ex.Hash, ex.Seed))
			kv.row("Slot:", fmt.Sprintf("%d of %d", ex.Slot, ex.TableLen))
			kv.row("Service:", orDash(ex.Service))
			backend := "-"
			if ex.Backend.IsValid() {
				backend = ex.Backend.String()
			}
			kv.row("Backend:", backend)
		} else {
			kv.row("Choice:", "by the owner pair on the first packet")
		}
		if ex.OwnerNode != "" {
			kv.row("Owner pair:", fmt.Sprintf("%d (active node %s)", ex.OwnerPair, ex.OwnerNode))
			kv.row("Mirrored:", yesNo(ex.Mirrored))
		}
		for _, n := range ex.Notes {
			kv.row("Note:", n)
		}
		return kv.flush()
	})
}

// bgpSummary is "established/peers up": from the answering node's own
// sessions for itself, from what the member gossips for the others.
func bgpSummary(m api.Member) string {
	if len(m.BGP) > 0 {
		est := 0
		for _, b := range m.BGP {
			if strings.EqualFold(b.State, "ESTABLISHED") {
				est++
			}
		}
		return fmt.Sprintf("%d/%d up", est, len(m.BGP))
	}
	return fmt.Sprintf("%d/%d up", m.BGPUp, m.BGPPeers)
}
