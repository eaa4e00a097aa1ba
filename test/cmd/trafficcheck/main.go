// Command trafficcheck keeps long-lived TCP flows and UDP sessions through
// one or more VIPs, verifies every byte both ways, and prints one summary
// line per vserver mode:
//
//	chaos scenario=kill9 mode=stateless flows=300 kept=300 broken=0 corrupt=0 moved=0 max_stall_ms=1200
//
// Run it inside the lab's client namespace, either with -netns or under
// "ip netns exec":
//
//	trafficcheck -netns tlab-client -lab-clients 16 -target stateless=198.19.0.10:80 -duration 30s
//
// Exit status: 0 when every flow was kept, 1 when some were not, 2 when the
// run could not start.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/tandem-lb/tandem/deploy/lab"
	"github.com/tandem-lb/tandem/test/traffic"
)

type targets []traffic.Target

func (t *targets) String() string { return fmt.Sprint(*t) }
func (t *targets) Set(s string) error {
	mode, addr, ok := strings.Cut(s, "=")
	if !ok || mode == "" {
		return fmt.Errorf("target %q: want MODE=ADDR:PORT, e.g. stateless=198.19.0.10:80", s)
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return fmt.Errorf("target %q: %w", s, err)
	}
	*t = append(*t, traffic.Target{Mode: mode, Addr: ap})
	return nil
}

type addrs []netip.Addr

func (a *addrs) String() string { return fmt.Sprint(*a) }
func (a *addrs) Set(s string) error {
	for _, f := range strings.Split(s, ",") {
		v, err := netip.ParseAddr(strings.TrimSpace(f))
		if err != nil {
			return err
		}
		*a = append(*a, v)
	}
	return nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("trafficcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var ts targets
	var srcs addrs
	fs.Var(&ts, "target", "MODE=VIP:PORT to keep flows through (repeatable, required)")
	fs.Var(&srcs, "src", "client source addresses, comma-separated (repeatable)")
	labClients := fs.Int("lab-clients", 0, "add the lab's first N client addresses of each family as sources")
	tcp := fs.Int("tcp", traffic.DefaultTCPFlows, "TCP flows per target")
	udp := fs.Int("udp", traffic.DefaultUDPFlows, "UDP sessions per target")
	ns := fs.String("netns", "", "namespace name or path to open sockets in (default: the current one)")
	duration := fs.Duration("duration", 10*time.Second, "how long flows run")
	interval := fs.Duration("interval", 100*time.Millisecond, "pause between a flow's round trips")
	stall := fs.Duration("stall-timeout", 10*time.Second, "break a flow without a round trip for this long")
	seed := fs.Uint64("seed", uint64(time.Now().UnixNano()), "payload seed")
	scenario := fs.String("scenario", "none", "scenario name for the summary lines")
	verbose := fs.Bool("v", false, "print every flow that was not kept")
	checkSource := fs.Bool("check-source", false, "fail flows whose backend saw another client address (USIP check)")
	jsonOut := fs.String("json", "", "also write every flow's result and the summaries to this file as JSON")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	for i := range ts {
		ts[i].TCPFlows, ts[i].UDPFlows = *tcp, *udp
	}
	if *labClients > 0 {
		c := lab.Default()
		c.Clients = *labClients
		srcs = append(srcs, c.ClientAddrs()...)
	}
	path := *ns
	if path != "" && !strings.Contains(path, "/") {
		path = "/run/netns/" + path
	}
	rep, err := traffic.Run(ctx, traffic.Config{
		Targets: ts, Sources: srcs, Netns: path,
		Duration: *duration, Interval: *interval, StallTimeout: *stall, Seed: *seed,
		CheckSource: *checkSource,
	})
	if err != nil {
		fmt.Fprintln(stderr, "trafficcheck:", err)
		return 2
	}
	code := 0
	if *jsonOut != "" {
		b, err := json.MarshalIndent(struct {
			Scenario  string
			Summaries []traffic.Summary
			Flows     []traffic.FlowResult
		}{*scenario, rep.Summaries(), rep.Results}, "", "  ")
		if err == nil {
			err = os.WriteFile(*jsonOut, append(b, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintln(stderr, "trafficcheck: writing results:", err)
			code = 2
		}
	}
	if *verbose {
		for _, f := range rep.Results {
			if f.Outcome != traffic.Kept {
				fmt.Fprintf(stdout, "flow id=%d mode=%s %v backend=%s outcome=%s reason=%s round_trips=%d err=%q\n",
					f.ID, f.Mode, f.FlowKey, f.Backend, f.Outcome, f.Reason, f.RoundTrips, f.Err)
			}
		}
	}
	for _, s := range rep.Summaries() {
		fmt.Fprintln(stdout, s.Line(*scenario))
		fmt.Fprintf(stdout, "detail scenario=%s mode=%s round_trips=%d bytes=%d reasons=%s backends=%s\n",
			*scenario, s.Mode, s.RoundTrips, s.Bytes, counts(s.Reasons), counts(s.Backends))
		if s.Kept != s.Flows && code == 0 {
			code = 1
		}
	}
	return code
}

func counts[K ~string](m map[K]int) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s:%d", k, v))
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ",")
}
