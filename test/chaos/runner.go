package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tandem-lb/tandem/deploy/lab"
	"github.com/tandem-lb/tandem/node/api"
	"github.com/tandem-lb/tandem/test/traffic"
)

// Runner runs scenarios on one lab.
type Runner struct {
	cfg     Config
	lab     *lab.Lab
	clients map[string]*api.Client
	carrier *TableCarrier
	log     *slog.Logger
}

// New returns a runner for cfg; log nil discards. It does not touch the
// lab: call Up (or use a lab that is up).
func New(cfg Config, log *slog.Logger) (*Runner, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l, err := lab.New(cfg.Lab, nil, log)
	if err != nil {
		return nil, err
	}
	cfg.Lab = l.Config()
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("configuring chaos runner: %w", err)
	}
	r := &Runner{cfg: cfg, lab: l, clients: map[string]*api.Client{}, log: log}
	listers := map[string]ConnLister{}
	for i := 1; i <= cfg.Lab.Nodes; i++ {
		c, err := api.NewClient(api.ClientConfig{Node: cfg.Lab.NodeSocket(i), Timeout: 2 * time.Second})
		if err != nil {
			return nil, err
		}
		r.clients[lab.NodeName(i)] = c
		listers[lab.NodeName(i)] = c
	}
	r.carrier = NewTableCarrier(listers, 500*time.Millisecond)
	return r, nil
}

// Config returns the runner's configuration with its defaults.
func (r *Runner) Config() Config { return r.cfg }

// Lab returns the runner's lab.
func (r *Runner) Lab() *lab.Lab { return r.lab }

// Carrier returns the runner's carrier hook.
func (r *Runner) Carrier() *TableCarrier { return r.carrier }

// Up brings the lab up (idempotent) with tandemd on every node.
func (r *Runner) Up(ctx context.Context) error { return r.lab.Up(ctx) }

// Down tears the lab down.
func (r *Runner) Down(ctx context.Context) error { return r.lab.Down(ctx) }

// Ctl runs clusterctl against node's API and returns its output.
func (r *Runner) Ctl(ctx context.Context, node string, args ...string) ([]byte, error) {
	i := nodeIndex(node)
	if i < 1 || i > r.cfg.Lab.Nodes {
		return nil, fmt.Errorf("clusterctl on %q: the lab has nodes n1..n%d", node, r.cfg.Lab.Nodes)
	}
	argv := append([]string{"--node", r.cfg.Lab.NodeSocket(i)}, args...)
	out, err := exec.CommandContext(ctx, r.cfg.Clusterctl, argv...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("clusterctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

func nodeIndex(name string) int {
	var i int
	if _, err := fmt.Sscanf(name, "n%d", &i); err != nil {
		return 0
	}
	return i
}

// Apply applies the lab's example cluster configuration (cluster.yaml:
// stateless and stateful vservers of both families) through n1, retrying
// while n1's API is not up yet.
func (r *Runner) Apply(ctx context.Context) error {
	return retry(ctx, r.cfg.ReadyTimeout, func() error {
		_, err := r.Ctl(ctx, "n1", "apply", "-f", r.cfg.Lab.ClusterYAMLPath())
		return err
	})
}

// retry calls fn every 250ms until it succeeds or timeout passes.
func retry(ctx context.Context, timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// WaitReady waits until the lab is whole: every node runs and answers,
// every live member agrees on the configuration, every target's vserver is
// UP on every node with every binding UP in the agreed health, both
// routers route the targets' VIPs and the client prefixes over every
// node, and all that has held for a second with no node's table epoch
// changing (so every node's data plane holds the same tables).
//
// Why the last two: a stateless flow whose first packet meets a node whose
// table is not yet the final one keeps, in that node's flow table, a
// backend the other nodes' tables do not give it, and is reset by the
// other backend when ECMP moves it. TestChaosStateful's kill9 reset 1 or
// 2 of 80 stateless TCP flows that way in about one fresh lab in four:
// traffic had started 46 and 54 ms before a node programmed its final
// table for the stateless IPv4 vserver, and the RSTs came from a backend
// other than the flows' own (captured in the backends' namespaces).
func (r *Runner) WaitReady(ctx context.Context) error {
	var last map[string]uint64
	var since time.Time
	return retry(ctx, r.cfg.ReadyTimeout, func() error {
		epochs, err := r.readyEpochs(ctx)
		if err != nil {
			last = nil
			return err
		}
		if !maps.Equal(epochs, last) {
			last, since = epochs, time.Now()
		}
		if d := time.Since(since); d < time.Second {
			return fmt.Errorf("tables settled for %v, want 1s", d.Round(time.Millisecond))
		}
		return nil
	})
}

func (r *Runner) ready(ctx context.Context) error {
	_, err := r.readyEpochs(ctx)
	return err
}

// readyEpochs checks that the lab is whole now (see WaitReady) and returns
// every node's table epoch of each target's vserver ("n1/st4" -> epoch).
func (r *Runner) readyEpochs(ctx context.Context) (map[string]uint64, error) {
	n := r.cfg.Lab.Nodes
	epochs := map[string]uint64{}
	var notConverged []string
	for i := 1; i <= n; i++ {
		name := lab.NodeName(i)
		if r.lab.Pid(name) == 0 {
			return nil, fmt.Errorf("%s is not running", name)
		}
		c := r.clients[name]
		view, err := c.Cluster(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		alive := 0
		for _, m := range view.Members {
			if m.State == api.MemberAlive {
				alive++
			}
		}
		if alive != n || !view.DigestAgree {
			return nil, fmt.Errorf("%s sees %d of %d members alive, configuration agreed: %v", name, alive, n, view.DigestAgree)
		}
		vss, err := c.VServers(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		for _, t := range r.cfg.Targets {
			found := false
			for _, v := range vss {
				if v.VIP == t.Addr.Addr() && v.Port == t.Addr.Port() {
					found = true
					epochs[name+"/"+v.Name] = v.Epoch
					if v.State != api.HealthUp {
						return nil, fmt.Errorf("%s: vserver %s is %s", name, v.Name, v.State)
					}
					// Every binding UP in every node's agreed health:
					// then all nodes build the same tables (a vserver
					// is UP with one backend UP).
					for _, b := range v.Bindings {
						if b.Health != api.HealthUp {
							notConverged = append(notConverged, fmt.Sprintf("%s sees %s of %s %s", name, b.Service, v.Name, b.Health))
						}
					}
				}
			}
			if !found {
				return nil, fmt.Errorf("%s: no vserver on %s", name, t.Addr)
			}
		}
	}
	for _, dst := range r.routedPrefixes() {
		if hops := r.Nexthops(ctx, dst.role, dst.prefix); len(hops) != n {
			return nil, fmt.Errorf("%s routes %s over %d nodes (%v), want %d", dst.role, dst.prefix, len(hops), hops, n)
		}
	}
	if len(notConverged) > 0 {
		// Logged: how often the lab looked ready before its tables agreed.
		r.log.Info("lab routed and UP, tables not yet agreed", "bindings", notConverged)
		return nil, fmt.Errorf("tables not agreed: %s", strings.Join(notConverged, "; "))
	}
	return epochs, nil
}

type routed struct {
	role   string
	prefix netip.Prefix
}

// routedPrefixes are what the routers learn by BGP for the targets: the
// VIPs on the front, the client prefixes of the targets' families on the
// back.
func (r *Runner) routedPrefixes() []routed {
	var out []routed
	seen := map[netip.Addr]bool{}
	fam := map[bool]bool{}
	for _, t := range r.cfg.Targets {
		a := t.Addr.Addr()
		if !seen[a] {
			seen[a] = true
			out = append(out, routed{lab.RoleFront, netip.PrefixFrom(a, a.BitLen())})
		}
		fam[a.Is4()] = true
	}
	c4, c6 := lab.ClientPrefixes()
	if fam[true] {
		out = append(out, routed{lab.RoleBack, c4})
	}
	if fam[false] {
		out = append(out, routed{lab.RoleBack, c6})
	}
	return out
}

// Nexthops returns the live next hops of a router's kernel route to dst
// (those not marked dead or linkdown).
func (r *Runner) Nexthops(ctx context.Context, role string, dst netip.Prefix) []string {
	fam := "-4"
	if dst.Addr().Is6() {
		fam = "-6"
	}
	d := dst.String()
	if dst.IsSingleIP() {
		d = dst.Addr().String()
	}
	out, _ := r.lab.Command(ctx, role, "ip", fam, "route", "show", d).Output()
	return parseNexthops(string(out))
}

func parseNexthops(out string) []string {
	var hops []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		dead := false
		for _, w := range f {
			dead = dead || w == "dead" || w == "linkdown"
		}
		for i := 1; i < len(f); i++ {
			if f[i-1] == "via" && !dead {
				hops = append(hops, f[i])
			}
		}
	}
	return hops
}

// waitHops waits until the front router routes every target VIP over n
// next hops, and reports how long that took.
func (r *Runner) waitHops(ctx context.Context, n int, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	for {
		ok := true
		var last string
		for _, d := range r.routedPrefixes() {
			if d.role != lab.RoleFront {
				continue
			}
			if hops := r.Nexthops(ctx, d.role, d.prefix); len(hops) != n {
				ok, last = false, fmt.Sprintf("%s over %d next hops %v", d.prefix, len(hops), hops)
				break
			}
		}
		if ok {
			return time.Since(start), nil
		}
		if time.Since(start) > timeout {
			return time.Since(start), fmt.Errorf("rfront routes %s after %v, want %d next hops", last, timeout, n)
		}
		select {
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Result is one scenario's outcome.
type Result struct {
	Scenario Scenario
	// Victim is the node the scenario acted on ("all" for rolling).
	Victim string
	// Events is the timeline, from the start of traffic.
	Events []Event
	// Report is the traffic checker's.
	Report *traffic.Report
	// Took is the scenario's wall time, restoring the lab included.
	Took time.Duration
	// Owners is the pair owning each stateful flow when the fault came,
	// read from the nodes' flow tables (nil without stateful targets; a
	// flow no table named an owner for is missing).
	Owners map[traffic.FlowKey]uint32
	// LostPair is the pair whose two members pairloss killed (0 in the
	// other scenarios).
	LostPair uint32
}

// Event is one step of a scenario.
type Event struct {
	At   time.Duration // since traffic started
	What string
}

// timeline records events relative to a start time.
type timeline struct {
	start  time.Time
	events []Event
	log    *slog.Logger
}

func (t *timeline) add(format string, args ...any) {
	e := Event{At: time.Since(t.start), What: fmt.Sprintf(format, args...)}
	t.events = append(t.events, e)
	t.log.Info(e.What, "at", e.At.Round(time.Millisecond))
}

// ErrLabBroken is returned when a scenario could not leave the lab whole
// again: later scenarios would measure the previous one's damage.
var ErrLabBroken = errors.New("the lab is not whole after the scenario")

// Run runs scenario sc under traffic through the targets and returns what
// the traffic checker saw. The lab must be ready (WaitReady). Run returns
// an error when the scenario could not be carried out or the lab could
// not be made whole after it (wrapping ErrLabBroken); the flows' fate is
// in the Result, for the caller to judge.
func (r *Runner) Run(ctx context.Context, sc Scenario) (*Result, error) {
	return r.RunOn(ctx, sc, r.cfg.Victim)
}

// RunOn is Run with the scenario acting on node (kill9, freeze, linkdown,
// drain; pairloss kills node and its partner) whatever flows it carries or
// owns; node "" picks the victim as Run does. Each node in turn, active
// member or standby, is what "make chaos -each" runs.
func (r *Runner) RunOn(ctx context.Context, sc Scenario, node string) (*Result, error) {
	if node != "" && (nodeIndex(node) < 1 || nodeIndex(node) > r.cfg.Lab.Nodes) {
		return nil, fmt.Errorf("%s on %q: the lab has nodes n1..n%d", sc, node, r.cfg.Lab.Nodes)
	}
	began := time.Now()
	if err := r.ready(ctx); err != nil {
		return nil, fmt.Errorf("%s: the lab is not ready: %w", sc, err)
	}
	stop := make(chan struct{})
	rec := &recordingCarrier{inner: r.carrier}
	tcfg := traffic.Config{
		Targets:      r.cfg.Targets,
		Sources:      r.cfg.Lab.ClientAddrs(),
		Netns:        r.lab.NetnsPath(lab.RoleClient),
		Duration:     10 * time.Minute, // Stop ends it
		Interval:     r.cfg.Interval,
		StallTimeout: r.cfg.StallTimeout,
		Seed:         r.cfg.Seed,
		Carrier:      rec,
		Stop:         stop,
		// Every backend must see each flow from the client's own address
		// (USIP), or from its pair's SNIP for a USIP OFF target.
		CheckSource: true,
	}
	type done struct {
		rep *traffic.Report
		err error
	}
	res := make(chan done, 1)
	tl := &timeline{start: time.Now(), log: r.log.With("scenario", sc)}
	go func() {
		rep, err := traffic.Run(ctx, tcfg)
		res <- done{rep, err}
	}()
	stopped := false
	finish := func() (*traffic.Report, error) {
		if !stopped {
			close(stop)
			stopped = true
		}
		d := <-res
		return d.rep, d.err
	}

	out := &Result{Scenario: sc}
	sleep(ctx, r.cfg.Warmup)
	tl.add("traffic running: %d flows", countFlows(r.cfg.Targets))
	victim := node
	if sc != Rolling {
		var pairs []api.Pair
		if r.hasStateful() {
			out.Owners = r.owners(ctx, rec.flows())
			pairs = r.pairs(ctx)
			if victim == "" {
				victim = statefulVictim(out.Owners, pairs)
			}
		}
		if victim == "" {
			victim = busiest(r.carrier.Counts(ctx, rec.flows()))
		}
		if victim == "" {
			victim = "n1"
		}
		if sc == PairLoss {
			for _, p := range pairs {
				if slices.Contains(p.Members, victim) {
					out.LostPair = p.ID
				}
			}
		}
		if len(out.Owners) > 0 {
			tl.add("stateful flows by owning pair: %s (victim %s)", ownerCounts(out.Owners, pairs), victim)
		}
	}
	out.Victim = victim
	actErr := r.act(ctx, sc, victim, tl, rec)
	if sc == PairLoss {
		out.Victim = victim + "+" + r.partnerOf(victim)
	}
	if actErr == nil {
		sleep(ctx, r.cfg.Settle)
	}
	rep, err := finish()
	tl.add("traffic stopped")
	out.Report = rep
	if err != nil {
		return out, fmt.Errorf("%s: traffic: %w", sc, err)
	}
	restoreErr := r.restore(ctx, sc, victim, tl)
	if restoreErr == nil {
		restoreErr = r.WaitReady(ctx)
	}
	if restoreErr == nil {
		tl.add("lab whole again")
	}
	out.Events, out.Took = tl.events, time.Since(began)
	if actErr != nil {
		return out, fmt.Errorf("%s on %s: %w", sc, victim, actErr)
	}
	if restoreErr != nil {
		return out, fmt.Errorf("%s on %s: %w: %w", sc, victim, ErrLabBroken, restoreErr)
	}
	return out, nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func countFlows(ts []traffic.Target) int {
	n := 0
	for _, t := range ts {
		n += t.TCPFlows + t.UDPFlows
	}
	return n
}

// act injects the fault of sc, under traffic, and brings back what must
// come back during the run (freeze, linkdown, drain, rolling).
func (r *Runner) act(ctx context.Context, sc Scenario, victim string, tl *timeline, rec *recordingCarrier) error {
	// elsewhere notes how many flows have left the node that carried them
	// at their start (they come back when the node does, so the end
	// carriers alone do not show it).
	elsewhere := func() {
		if a, k := rec.away(ctx, r.carrier); k > 0 {
			tl.add("%d of %d flows carried by another node than at their start", a, k)
		}
	}
	n := r.cfg.Lab.Nodes
	hold := r.cfg.Lab.HoldTime
	switch sc {
	case Kill9:
		if err := r.lab.Signal(victim, syscall.SIGKILL); err != nil {
			return err
		}
		tl.add("SIGKILL %s", victim)
		if _, err := r.waitHops(ctx, n-1, hold+2*time.Second); err != nil {
			return err
		}
		tl.add("rfront: %s out of the ECMP set", victim)
		sleep(ctx, time.Second)
		elsewhere()
	case Freeze:
		if err := r.lab.Signal(victim, syscall.SIGSTOP); err != nil {
			return err
		}
		tl.add("SIGSTOP %s (BGP hold time %v)", victim, hold)
		_, err := r.waitHops(ctx, n-1, hold+3*time.Second)
		if err == nil {
			tl.add("rfront: %s out of the ECMP set (hold time expired)", victim)
			sleep(ctx, time.Second)
			elsewhere()
		}
		if cerr := r.lab.Signal(victim, syscall.SIGCONT); cerr != nil {
			return errors.Join(err, cerr)
		}
		tl.add("SIGCONT %s", victim)
		if err != nil {
			return err
		}
		if _, err := r.waitHops(ctx, n, r.cfg.ReadyTimeout); err != nil {
			return err
		}
		tl.add("rfront: %s back in the ECMP set", victim)
	case LinkDown:
		ns := r.cfg.Lab.NS(victim)
		// IPv6 addresses go with the link unless told to stay; a real
		// cable cut keeps them too.
		if err := r.ip(ctx, "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf."+lab.NodeIfFront+".keep_addr_on_down=1"); err != nil {
			return err
		}
		if err := r.ip(ctx, "-n", ns, "link", "set", lab.NodeIfFront, "down"); err != nil {
			return err
		}
		tl.add("%s: front link down", victim)
		_, err := r.waitHops(ctx, n-1, hold+3*time.Second)
		if err == nil {
			tl.add("rfront: %s out of the ECMP set", victim)
			sleep(ctx, time.Second)
			elsewhere()
		}
		if uerr := r.linkUp(ctx, victim); uerr != nil {
			return errors.Join(err, uerr)
		}
		tl.add("%s: front link up", victim)
		if err != nil {
			return err
		}
		if _, err := r.waitHops(ctx, n, r.cfg.ReadyTimeout); err != nil {
			return err
		}
		tl.add("rfront: %s back in the ECMP set", victim)
	case Drain:
		if _, err := r.Ctl(ctx, victim, "drain", "node", victim); err != nil {
			return err
		}
		tl.add("clusterctl drain node %s", victim)
		if _, err := r.waitHops(ctx, n-1, 30*time.Second); err != nil {
			return err
		}
		tl.add("rfront: %s out of the ECMP set (GRACEFUL_SHUTDOWN)", victim)
		if err := r.waitWithdrawn(ctx, victim, 15*time.Second); err != nil {
			return err
		}
		tl.add("rfront: %s withdrew its routes (drain time over)", victim)
		sleep(ctx, time.Second)
		elsewhere()
		if _, err := r.Ctl(ctx, victim, "undrain", "node", victim); err != nil {
			return err
		}
		tl.add("clusterctl undrain node %s", victim)
		if _, err := r.waitHops(ctx, n, r.cfg.ReadyTimeout); err != nil {
			return err
		}
		tl.add("rfront: %s back in the ECMP set", victim)
	case PairLoss:
		partner := r.partnerOf(victim)
		if partner == "" {
			return fmt.Errorf("pairloss: %s has no partner in a lab of %d nodes", victim, n)
		}
		for _, v := range []string{victim, partner} {
			if err := r.lab.Signal(v, syscall.SIGKILL); err != nil {
				return err
			}
		}
		tl.add("SIGKILL %s and %s (a whole pair)", victim, partner)
		if _, err := r.waitHops(ctx, n-2, hold+2*time.Second); err != nil {
			return err
		}
		tl.add("rfront: %s and %s out of the ECMP set", victim, partner)
		sleep(ctx, time.Second)
		elsewhere()
	case Rolling:
		for i := 1; i <= n; i++ {
			name := lab.NodeName(i)
			if err := r.restartNode(ctx, name, tl, elsewhere); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("unknown scenario %q", sc)
	}
	return nil
}

// waitWithdrawn waits until the front router holds no route from node
// for a target VIP (its BGP routes, best or not).
func (r *Runner) waitWithdrawn(ctx context.Context, node string, timeout time.Duration) error {
	return retry(ctx, timeout, func() error {
		for _, fam := range []string{"_4", "_6"} {
			out, err := r.lab.Birdc(ctx, lab.RoleFront, "show", "route", "protocol", node+fam)
			if err != nil {
				return err
			}
			for _, t := range r.cfg.Targets {
				if strings.Contains(out, t.Addr.Addr().String()+"/") {
					return fmt.Errorf("rfront still has %s from %s", t.Addr.Addr(), node)
				}
			}
		}
		return nil
	})
}

// restartNode stops a node with SIGTERM (it withdraws, then unloads),
// starts it again and waits until it is back in the routers' ECMP sets
// with the cluster whole.
func (r *Runner) restartNode(ctx context.Context, name string, tl *timeline, elsewhere func()) error {
	pid := r.lab.Pid(name)
	if err := r.lab.Signal(name, syscall.SIGTERM); err != nil {
		return err
	}
	tl.add("SIGTERM %s", name)
	if err := retry(ctx, 15*time.Second, func() error {
		if r.lab.Pid(name) == pid {
			return fmt.Errorf("%s (pid %d) still running", name, pid)
		}
		return nil
	}); err != nil {
		return err
	}
	tl.add("%s exited", name)
	elsewhere()
	if err := r.lab.Start(ctx); err != nil {
		return err
	}
	tl.add("%s started", name)
	if err := r.WaitReady(ctx); err != nil {
		return err
	}
	tl.add("%s back: in both routers' ECMP sets, cluster whole", name)
	return nil
}

// restore brings back, after the traffic, what the scenario left down.
func (r *Runner) restore(ctx context.Context, sc Scenario, victim string, tl *timeline) error {
	var errs []error
	switch sc {
	case Kill9:
		if r.lab.Pid(victim) == 0 {
			if err := r.lab.Start(ctx); err != nil {
				return err
			}
			tl.add("%s restarted", victim)
		}
	case Freeze:
		// SIGCONT even if the scenario stopped half-way.
		if victim != "" {
			r.lab.Signal(victim, syscall.SIGCONT)
		}
	case LinkDown:
		if victim != "" {
			errs = append(errs, r.linkUp(ctx, victim))
		}
	case Drain:
		if victim != "" {
			if _, err := r.Ctl(ctx, victim, "undrain", "node", victim); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// Any node that died on the way (rolling) is started again.
	errs = append(errs, r.lab.Start(ctx))
	return errors.Join(errs...)
}

// linkUp brings a node's front link up with its addresses and routes (a
// link going down takes the routes through it along).
func (r *Runner) linkUp(ctx context.Context, node string) error {
	ns := r.cfg.Lab.NS(node)
	i := nodeIndex(node)
	a, gw := lab.NodeFront(i), lab.RouterFront(i)
	cmds := [][]string{
		{"-n", ns, "link", "set", lab.NodeIfFront, "up"},
		{"-n", ns, "addr", "replace", netip.PrefixFrom(a.V4, 24).String(), "dev", lab.NodeIfFront},
		{"-n", ns, "addr", "replace", netip.PrefixFrom(a.V6, 64).String(), "dev", lab.NodeIfFront, "nodad"},
		{"-n", ns, "route", "replace", "default", "via", gw.V4.String()},
		{"-n", ns, "-6", "route", "replace", "default", "via", gw.V6.String()},
	}
	for _, c := range cmds {
		if err := r.ip(ctx, c...); err != nil {
			return err
		}
	}
	return nil
}

func (r *Runner) ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// recordingCarrier remembers the flows it was asked about and the first
// answer for each (the node carrying it after its first round trip), so
// that the runner can pick the busiest node and count, mid-scenario, the
// flows carried elsewhere.
type recordingCarrier struct {
	inner traffic.Carrier
	mu    sync.Mutex
	start map[traffic.FlowKey]string
}

func (r *recordingCarrier) CarrierOf(ctx context.Context, f traffic.FlowKey) (string, error) {
	n, err := r.inner.CarrierOf(ctx, f)
	r.mu.Lock()
	if r.start == nil {
		r.start = map[traffic.FlowKey]string{}
	}
	if _, ok := r.start[f]; !ok {
		r.start[f] = n
	}
	r.mu.Unlock()
	return n, err
}

func (r *recordingCarrier) flows() []traffic.FlowKey {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]traffic.FlowKey, 0, len(r.start))
	for f := range r.start {
		out = append(out, f)
	}
	return out
}

// away counts the flows that a fresh snapshot finds on another node than
// the one that carried them at their start.
func (r *recordingCarrier) away(ctx context.Context, c *TableCarrier) (away, known int) {
	snap := c.snapshot(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	for f, start := range r.start {
		now := snap[keyOf(f.Proto, f.Src, f.Dst)]
		if start == "" || now == "" {
			continue
		}
		known++
		if now != start {
			away++
		}
	}
	return away, known
}

// hasStateful reports whether some target is a stateful vserver.
func (r *Runner) hasStateful() bool {
	for _, t := range r.cfg.Targets {
		if isStateful(t.Mode) {
			return true
		}
	}
	return false
}

// partnerOf names node's partner in the lab ("" when it has none).
func (r *Runner) partnerOf(node string) string {
	if p := r.cfg.Lab.Partner(nodeIndex(node)); p != 0 {
		return lab.NodeName(p)
	}
	return ""
}

// owners returns the owning pair of each of flows that goes to a stateful
// target, as the nodes' flow tables name it (api.Conn.Owner).
func (r *Runner) owners(ctx context.Context, flows []traffic.FlowKey) map[traffic.FlowKey]uint32 {
	stateful := map[netip.AddrPort]bool{}
	for _, t := range r.cfg.Targets {
		if isStateful(t.Mode) {
			stateful[netip.AddrPortFrom(t.Addr.Addr().Unmap(), t.Addr.Port())] = true
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	byKey := map[connKey]uint32{}
	for _, c := range r.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			conns, err := c.Connections(rctx, api.ConnFilter{})
			if err != nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, cn := range conns {
				if cn.Owner != 0 {
					byKey[keyOf(cn.Proto, cn.Client, cn.VIP)] = cn.Owner
				}
			}
		}()
	}
	wg.Wait()
	out := map[traffic.FlowKey]uint32{}
	for _, f := range flows {
		k := keyOf(f.Proto, f.Src, f.Dst)
		if !stateful[k.dst] {
			continue
		}
		if o, ok := byKey[k]; ok {
			out[f] = o
		}
	}
	return out
}

// pairs returns the cluster's pairs as the first answering node sees them.
func (r *Runner) pairs(ctx context.Context) []api.Pair {
	for i := 1; i <= r.cfg.Lab.Nodes; i++ {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		view, err := r.clients[lab.NodeName(i)].Cluster(rctx)
		cancel()
		if err == nil {
			return view.Pairs
		}
	}
	return nil
}

// statefulVictim returns the active member of the pair owning the most
// flows in owners (ties: the lowest pair id), or "".
func statefulVictim(owners map[traffic.FlowKey]uint32, pairs []api.Pair) string {
	count := map[uint32]int{}
	for _, o := range owners {
		count[o]++
	}
	var best uint32
	for id, c := range count {
		if best == 0 || c > count[best] || (c == count[best] && id < best) {
			best = id
		}
	}
	for _, p := range pairs {
		if p.ID == best && best != 0 {
			if p.Active != "" {
				return p.Active
			}
			if len(p.Members) > 0 {
				return p.Members[0]
			}
		}
	}
	return ""
}

// ownerCounts renders how many flows each pair owns: "pair 1 (n1 n2): 40".
func ownerCounts(owners map[traffic.FlowKey]uint32, pairs []api.Pair) string {
	count := map[uint32]int{}
	for _, o := range owners {
		count[o]++
	}
	ids := make([]uint32, 0, len(count))
	for id := range count {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var parts []string
	for _, id := range ids {
		members := ""
		for _, p := range pairs {
			if p.ID == id {
				members = " (" + strings.Join(p.Members, " ") + ", active " + p.Active + ")"
			}
		}
		parts = append(parts, fmt.Sprintf("pair %d%s: %d", id, members, count[id]))
	}
	return strings.Join(parts, ", ")
}
