// Command chaos brings a Tandem lab up in network namespaces, keeps
// verified TCP flows and UDP sessions through its stateless and (unless
// -stateful=false) stateful vservers, and
// runs failure scenarios under that traffic, printing for each a table for
// people and one line per vserver mode for scripts:
//
//	chaos scenario=kill9 mode=stateless flows=300 kept=300 broken=0 corrupt=0 moved=37 max_stall_ms=1200
//
// It tears the lab down at the end, also on failure or Ctrl-C (unless
// -keep). With -demo it configures the stateless vservers with clusterctl
// commands it prints, then applies the lab's cluster.yaml for the stateful
// ones (unless -stateful=false), and runs kill9 only: this is "make demo".
//
//	chaos -bin bin [-scenarios kill9,freeze,linkdown,drain,rolling,pairloss,synack] [-each] [-demo] [-tcp 100 -udp 50] [-stateful=false]
//
// With -each, kill9, freeze and linkdown act on every node in turn (n1,
// n2, ...: active members and standbys alike) instead of on the node
// carrying (or whose pair owns) the most flows; their lines then end with
// victim=NODE.
//
// Exit status: 0 when every scenario showed what it must (chaos.Result.
// Failures: every flow kept and none corrupt, kill9 moved some; pairloss
// broke only the lost pair's stateful flows), 1 when not, 2 when the lab
// or a scenario could not run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tandem-lb/tandem/deploy/lab"
	"github.com/tandem-lb/tandem/test/chaos"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "tchaos", "lab name (namespaces NAME-client, NAME-n1, ...)")
	bin := fs.String("bin", "bin", "directory holding tandemd, clusterctl and labbackend")
	list := fs.String("scenarios", "", "comma-separated scenarios (default: all; with -demo: kill9)")
	demo := fs.Bool("demo", false, "configure the stateless vservers with printed clusterctl commands, the stateful ones from the lab's cluster.yaml, and run kill9")
	tcp := fs.Int("tcp", 100, "TCP flows per IP family")
	udp := fs.Int("udp", 50, "UDP sessions per IP family")
	stateful := fs.Bool("stateful", true, "also keep flows through the stateful vservers (ROUNDROBIN and LEASTCONNECTION, mode stateful; USIP OFF, mode stateful-usipoff) and add pairloss and synack to the default scenarios (not with -demo)")
	sfTCP := fs.Int("stateful-tcp", 20, "TCP flows per stateful vserver")
	sfUDP := fs.Int("stateful-udp", 10, "UDP sessions per stateful vserver")
	each := fs.Bool("each", false, "run kill9, freeze and linkdown once per node, each node in turn")
	keep := fs.Bool("keep", false, "leave the lab up at the end")
	verbose := fs.Bool("v", false, "log every step")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	var scenarios []chaos.Scenario
	switch {
	case *list != "":
		for _, s := range strings.Split(*list, ",") {
			sc, err := chaos.ParseScenario(strings.TrimSpace(s))
			if err != nil {
				fmt.Fprintln(stderr, "chaos:", err)
				return 2
			}
			scenarios = append(scenarios, sc)
		}
	case *demo:
		scenarios = []chaos.Scenario{chaos.Kill9}
	case *stateful:
		scenarios = append(chaos.AllScenarios(), chaos.PairLoss, chaos.SynAck)
	default:
		scenarios = chaos.AllScenarios()
	}
	abs := func(p string) string { a, _ := filepath.Abs(filepath.Join(*bin, p)); return a }
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	r, err := chaos.New(chaos.Config{
		Lab:        lab.Config{Name: *name, Tandemd: abs("tandemd"), Backend: abs("labbackend")},
		Clusterctl: abs("clusterctl"),
		TCPFlows:   *tcp, UDPFlows: *udp,
		Stateful:         *stateful,
		StatefulTCPFlows: *sfTCP, StatefulUDPFlows: *sfUDP,
	}, log)
	if err != nil {
		fmt.Fprintln(stderr, "chaos:", err)
		return 2
	}
	// Tear down on every way out; a fresh context, since ctx may be the
	// cancelled one (Ctrl-C).
	defer func() {
		if *keep {
			fmt.Fprintf(stdout, "lab %s left up (tandem-lab -name %s down removes it)\n", *name, *name)
			return
		}
		dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := r.Down(dctx); err != nil {
			fmt.Fprintln(stderr, "chaos: tearing the lab down:", err)
		} else {
			fmt.Fprintf(stdout, "lab %s torn down\n", *name)
		}
	}()
	// A lab of this name left by a crashed run goes first.
	if err := r.Down(ctx); err != nil {
		fmt.Fprintln(stderr, "chaos: removing an old lab:", err)
		return 2
	}
	cfg := r.Config()
	fmt.Fprintf(stdout, "bringing lab %s up: %d tandemd nodes, %d backends, BIRD routers front and back\n", *name, cfg.Lab.Nodes, cfg.Lab.Backends)
	start := time.Now()
	if err := r.Up(ctx); err != nil {
		fmt.Fprintln(stderr, "chaos:", err)
		return 2
	}
	if *demo {
		if err := configureDemo(ctx, r, stdout); err != nil {
			fmt.Fprintln(stderr, "chaos:", err)
			return 2
		}
	}
	if *demo && *stateful {
		// The same stateless vservers again (apply leaves them as they
		// are) and the stateful ones.
		fmt.Fprintf(stdout, "$ clusterctl apply -f %s   # adds the STATEFUL vservers sf, sl (USIP ON) and su (USIP OFF)\n", r.Config().Lab.ClusterYAMLPath())
	}
	if !*demo || *stateful {
		if err := r.Apply(ctx); err != nil {
			fmt.Fprintln(stderr, "chaos: applying the lab's cluster.yaml:", err)
			return 2
		}
	}
	if err := r.WaitReady(ctx); err != nil {
		fmt.Fprintln(stderr, "chaos: lab not ready:", err)
		return 2
	}
	fmt.Fprintf(stdout, "lab ready in %v: every node in both routers' ECMP sets, vservers UP\n", time.Since(start).Round(100*time.Millisecond))
	if *demo {
		out, _ := r.Ctl(ctx, "n1", "show", "lb", "vserver")
		fmt.Fprintf(stdout, "$ clusterctl show lb vserver\n%s", out)
	}

	code := 0
	var lines []string
	for _, run := range plan(scenarios, *each, cfg.Lab.Nodes) {
		sc := run.sc
		nflows := 0
		for _, t := range cfg.Targets {
			nflows += t.TCPFlows + t.UDPFlows
		}
		on := ""
		if run.node != "" {
			on = " on " + run.node
		}
		if sc == chaos.SynAck {
			// The owner dies between SYN-ACK and final ACK: with its
			// mirroring link running, then with it cut.
			for _, unmirrored := range []bool{false, true} {
				fmt.Fprintf(stdout, "running synack (mirroring link cut: %v): held handshakes, owner killed between SYN-ACK and final ACK...\n", unmirrored)
				res, err := r.RunSynAck(ctx, chaos.SynAckConfig{Unmirrored: unmirrored})
				if res != nil {
					fmt.Fprint(stdout, res.Table())
					fmt.Fprintln(stdout, res.Line())
					lines = append(lines, res.Line())
					for _, f := range res.Failures() {
						fmt.Fprintln(stdout, "FAIL:", f)
						code = 1
					}
				}
				if err != nil {
					fmt.Fprintln(stderr, "chaos:", err)
					return 2
				}
			}
			continue
		}
		fmt.Fprintf(stdout, "running %s%s under %d flows...\n", sc, on, nflows)
		res, err := r.RunOn(ctx, sc, run.node)
		if res != nil && res.Report != nil {
			fmt.Fprint(stdout, res.Table())
			for _, l := range res.Lines() {
				if run.node != "" {
					l += " victim=" + run.node
				}
				fmt.Fprintln(stdout, l)
				lines = append(lines, l)
			}
			for _, f := range res.Failures() {
				fmt.Fprintln(stdout, "FAIL:", f)
				code = 1
			}
		}
		if err != nil {
			fmt.Fprintln(stderr, "chaos:", err)
			return 2
		}
	}
	if len(scenarios) > 1 {
		fmt.Fprintln(stdout, "summary:")
		for _, l := range lines {
			fmt.Fprintln(stdout, l)
		}
	}
	if code != 0 {
		fmt.Fprintln(stdout, "FAIL: some scenario did not show what it must")
	} else {
		if slices.Contains(scenarios, chaos.PairLoss) {
			fmt.Fprintln(stdout, "PASS: every flow kept (pairloss: but the lost pair's stateful flows), none corrupt")
		} else {
			fmt.Fprintln(stdout, "PASS: every flow kept, none corrupt")
		}
	}
	return code
}

type scenarioRun struct {
	sc   chaos.Scenario
	node string // "" lets the runner pick the victim
}

// plan lists the runs of scenarios: with each, kill9, freeze and linkdown
// once per node of a lab of nodes nodes, in node order.
func plan(scenarios []chaos.Scenario, each bool, nodes int) []scenarioRun {
	var out []scenarioRun
	for _, sc := range scenarios {
		if !each || (sc != chaos.Kill9 && sc != chaos.Freeze && sc != chaos.LinkDown) {
			out = append(out, scenarioRun{sc: sc})
			continue
		}
		for i := 1; i <= nodes; i++ {
			out = append(out, scenarioRun{sc: sc, node: lab.NodeName(i)})
		}
	}
	return out
}

// configureDemo configures one IPv4 and one IPv6 stateless vserver over
// the lab's backends with clusterctl, printing each command.
func configureDemo(ctx context.Context, r *chaos.Runner, stdout io.Writer) error {
	cfg := r.Config()
	var cmds [][]string
	for _, t := range cfg.Targets {
		if t.Mode != chaos.ModeStateless {
			continue
		}
		vs := "st4"
		if t.Addr.Addr().Is6() {
			vs = "st6"
		}
		var svcs []string
		for j := 1; j <= cfg.Lab.Backends; j++ {
			ip := lab.Backend(j).V4
			if t.Addr.Addr().Is6() {
				ip = lab.Backend(j).V6
			}
			svc := fmt.Sprintf("%s-%s", lab.BackendName(j), vs)
			svcs = append(svcs, svc)
			cmds = append(cmds, []string{"add", "service", svc, ip.String(), "ANY", fmt.Sprint(cfg.Lab.ServicePort), "-usip", "YES"})
		}
		cmds = append(cmds, []string{"add", "lb", "vserver", vs, "ANY", t.Addr.Addr().String(), fmt.Sprint(t.Addr.Port()),
			"-lbMethod", "SRCIPSRCPORTHASH", "-connFailover", "STATELESS"})
		for _, s := range svcs {
			cmds = append(cmds, []string{"bind", "lb", "vserver", vs, s})
		}
	}
	node := "n1"
	fmt.Fprintf(stdout, "configuring through %s's API (%s):\n", node, cfg.Lab.NodeSocket(1))
	for i, c := range cmds {
		fmt.Fprintf(stdout, "$ clusterctl %s\n", strings.Join(c, " "))
		var err error
		if i == 0 {
			// The node's API may still be starting.
			err = retryCtl(ctx, r, node, c)
		} else {
			_, err = r.Ctl(ctx, node, c...)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func retryCtl(ctx context.Context, r *chaos.Runner, node string, c []string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := r.Ctl(ctx, node, c...)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(250 * time.Millisecond)
	}
}
