// Package chaos runs failure scenarios against a Tandem lab (deploy/lab)
// while the traffic checker (test/traffic) keeps long-lived TCP flows and
// UDP sessions through its vservers, and reports per scenario and vserver
// mode how many flows were kept, broken, corrupted and moved to another
// node, and the longest stall:
//
//	chaos scenario=kill9 mode=stateless flows=300 kept=300 broken=0 corrupt=0 moved=37 max_stall_ms=1200
//
// Scenarios: kill9 (SIGKILL a node), freeze (SIGSTOP a node past the BGP
// hold time, then SIGCONT), linkdown (cut a node's front link, then
// restore it), drain (clusterctl drain, then undrain) and rolling (restart
// every node in turn, each back before the next); for stateful vservers
// also pairloss (SIGKILL both members of a pair) and synack (RunSynAck: the
// owner dies between the SYN-ACK and the client's final ACK). Run picks
// the victim, RunOn takes it (each node in turn: chaos -each). Each
// scenario bounds its time and leaves the lab whole again (or fails saying
// what is missing), so that scenarios run in sequence on one lab. The
// runner is generic over vserver modes: a target's Mode labels its flows
// (stateless, stateful, stateful-usipoff).
//
// Which node carries a flow is read from the nodes' flow tables (see
// TableCarrier).
package chaos

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/tandem-lb/tandem/deploy/lab"
	"github.com/tandem-lb/tandem/test/traffic"
)

// Scenario names a failure the runner injects under traffic.
type Scenario string

// The scenarios.
const (
	Kill9    Scenario = "kill9"    // SIGKILL the busiest node; restart it after the run
	Freeze   Scenario = "freeze"   // SIGSTOP the busiest node past the BGP hold time, then SIGCONT
	LinkDown Scenario = "linkdown" // take the busiest node's front link down, then up again
	Drain    Scenario = "drain"    // clusterctl drain the busiest node, then undrain it
	Rolling  Scenario = "rolling"  // SIGTERM and restart every node in turn
	// PairLoss SIGKILLs both members of the pair owning the most stateful
	// flows: its stateful flows break (nobody holds their state), every
	// other flow is kept.
	PairLoss Scenario = "pairloss"
)

// AllScenarios lists the scenarios of stateless vservers in the order
// "make chaos" runs them.
func AllScenarios() []Scenario { return []Scenario{Kill9, Freeze, LinkDown, Drain, Rolling} }

// StatefulScenarios lists the scenarios whose expectations cover stateful
// vservers too, in the order they run.
func StatefulScenarios() []Scenario { return []Scenario{Kill9, Freeze, LinkDown, PairLoss} }

// ParseScenario returns the scenario named s.
func ParseScenario(s string) (Scenario, error) {
	all := append(AllScenarios(), PairLoss, SynAck)
	for _, sc := range all {
		if string(sc) == s {
			return sc, nil
		}
	}
	return "", fmt.Errorf("unknown scenario %q: want one of %v", s, all)
}

// The mode labels of the targets' flows.
const (
	ModeStateless = "stateless"
	ModeStateful  = "stateful"
	// ModeStatefulSNAT labels the flows of a stateful vserver whose
	// services have USIP OFF: the backends see the owner pair's SNIP.
	// Checked as ModeStateful.
	ModeStatefulSNAT = "stateful-usipoff"
)

// isStateful reports whether a mode label is a stateful vserver's.
func isStateful(mode string) bool { return mode == ModeStateful || mode == ModeStatefulSNAT }

// Config configures a Runner.
type Config struct {
	// Lab is the lab to run on. Its Tandemd and Backend binaries are
	// required; its Name must not be that of another running lab.
	Lab lab.Config
	// Clusterctl is the clusterctl binary, used to apply the configuration
	// and to drain. Required.
	Clusterctl string
	// Targets are the vservers to keep flows through. Default: the lab's
	// stateless vservers (its first IPv4 and first IPv6 VIP, port 80),
	// mode "stateless", with TCPFlows and UDPFlows each.
	Targets []traffic.Target
	// TCPFlows and UDPFlows are the flow counts of the default targets
	// (per IP family). Default 100 and 50.
	TCPFlows, UDPFlows int
	// Stateful adds to the default targets the lab's stateful vservers
	// (deploy/lab's cluster.yaml), mode "stateful": on the second VIP of
	// each family, port 80 (ROUNDROBIN) and port 81 (LEASTCONNECTION),
	// and mode "stateful-usipoff" on port 82 of both (ROUNDROBIN, USIP
	// OFF: the backends must see a pair's SNIP of the flow's family, the
	// same all along),
	// with StatefulTCPFlows and StatefulUDPFlows each. It also makes the
	// victim of kill9, freeze, linkdown and pairloss the active member of
	// the pair owning the most stateful flows. Default false.
	Stateful bool
	// StatefulTCPFlows and StatefulUDPFlows are the flow counts of each
	// stateful target. Default 20 and 10.
	StatefulTCPFlows, StatefulUDPFlows int
	// Warmup is how long traffic runs before the fault. Default 3s.
	Warmup time.Duration
	// Settle is how long traffic runs after a scenario's last step.
	// Default 3s.
	Settle time.Duration
	// Interval is the pause between a flow's round trips. Default 100ms.
	Interval time.Duration
	// StallTimeout breaks a flow without a round trip for this long.
	// Default 10s (above the BGP hold time, below what a person calls
	// broken).
	StallTimeout time.Duration
	// ReadyTimeout bounds each wait for the lab to be whole: every node
	// running, in every router's ECMP set, its vservers UP. Default 60s.
	ReadyTimeout time.Duration
	// Victim is the node that kill9, freeze, linkdown and drain act on.
	// Default: the node carrying the most flows when the fault starts.
	Victim string
	// Seed makes payloads reproducible. Default: the time.
	Seed uint64
}

func (c *Config) setDefaults() {
	if c.TCPFlows == 0 {
		c.TCPFlows = 100
	}
	if c.UDPFlows == 0 {
		c.UDPFlows = 50
	}
	if c.StatefulTCPFlows == 0 {
		c.StatefulTCPFlows = 20
	}
	if c.StatefulUDPFlows == 0 {
		c.StatefulUDPFlows = 10
	}
	if len(c.Targets) == 0 {
		var v4, v6 []netip.Addr
		for _, v := range c.Lab.VIPs {
			if v.Is4() {
				v4 = append(v4, v)
			} else {
				v6 = append(v6, v)
			}
		}
		for _, fam := range [][]netip.Addr{v4, v6} {
			if len(fam) > 0 {
				c.Targets = append(c.Targets, traffic.Target{Mode: ModeStateless,
					Addr: netip.AddrPortFrom(fam[0], 80), TCPFlows: c.TCPFlows, UDPFlows: c.UDPFlows})
			}
		}
		for _, fam := range [][]netip.Addr{v4, v6} {
			if c.Stateful && len(fam) > 1 {
				for _, port := range []uint16{80, 81} {
					c.Targets = append(c.Targets, traffic.Target{Mode: ModeStateful,
						Addr: netip.AddrPortFrom(fam[1], port), TCPFlows: c.StatefulTCPFlows, UDPFlows: c.StatefulUDPFlows})
				}
				var snips []netip.Addr
				for i := 1; i <= c.Lab.Nodes; i += 2 {
					s := lab.SNIP(i).V4
					if fam[1].Is6() {
						s = lab.SNIP(i).V6
					}
					snips = append(snips, s)
				}
				c.Targets = append(c.Targets, traffic.Target{Mode: ModeStatefulSNAT,
					Addr: netip.AddrPortFrom(fam[1], 82), TCPFlows: c.StatefulTCPFlows, UDPFlows: c.StatefulUDPFlows, SNAT: snips})
			}
		}
	}
	if c.Warmup == 0 {
		c.Warmup = 3 * time.Second
	}
	if c.Settle == 0 {
		c.Settle = 3 * time.Second
	}
	if c.Interval == 0 {
		c.Interval = 100 * time.Millisecond
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = 10 * time.Second
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 60 * time.Second
	}
	if c.Seed == 0 {
		c.Seed = uint64(time.Now().UnixNano())
	}
}

func (c *Config) validate() error {
	if c.Lab.Tandemd == "" || c.Lab.Backend == "" {
		return errors.New("the lab needs its tandemd and labbackend binaries (Lab.Tandemd, Lab.Backend)")
	}
	if c.Clusterctl == "" {
		return errors.New("no clusterctl binary: build ./ctl/cmd/clusterctl and give its path")
	}
	if len(c.Targets) == 0 {
		return errors.New("no targets: the lab has no VIP and none was given")
	}
	if c.Warmup < time.Second {
		return fmt.Errorf("warmup %v: give flows at least 1s to start before the fault", c.Warmup)
	}
	if c.Settle < 0 || c.ReadyTimeout <= 0 || c.StallTimeout <= 0 || c.Interval <= 0 {
		return fmt.Errorf("settle %v, ready timeout %v, stall timeout %v, interval %v: durations must be positive",
			c.Settle, c.ReadyTimeout, c.StallTimeout, c.Interval)
	}
	return nil
}
