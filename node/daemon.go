// Package node is the daemon tandemd: it wires the data plane (flow), the
// cluster (membership, replicated configuration, agreed health), the
// embedded BGP speaker, the kernel's addresses and sysctls, the HTTP API and
// the metrics endpoint.
//
// Start order: single-instance lock, sysctls, data plane loaded and
// attached, VIP address holder, BGP sessions (nothing announced), cluster
// joined; the cluster's state machine announces a VIP only once the node has
// converged on the configuration and the VIP has a healthy backend, and the
// daemon announces it only once the data plane holds its tables. Shutdown
// (SIGTERM) runs the other way round with the routes first: withdraw and
// close BGP, stop serving, leave the cluster, unload the data plane, remove
// the VIP addresses, restore the sysctls.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/tandem-lb/tandem/cluster"
	"github.com/tandem-lb/tandem/cluster/mirror"
	"github.com/tandem-lb/tandem/flow"
	"github.com/tandem-lb/tandem/node/bgp"
	"github.com/tandem-lb/tandem/node/config"
	"github.com/tandem-lb/tandem/node/instance"
	"github.com/tandem-lb/tandem/node/netlink"
)

// Speaker announces prefixes by BGP; *bgp.Speaker implements it.
type Speaker interface {
	Announce(ctx context.Context, p netip.Prefix, kind config.PrefixKind, communities ...uint32) error
	Withdraw(ctx context.Context, p netip.Prefix) error
	Drain(ctx context.Context) error
	Undrain(ctx context.Context) error
	Draining() bool
	Announced() []netip.Prefix
	Peers(ctx context.Context) ([]bgp.PeerState, error)
	Close() error
}

// Addresses holds the VIPs on a local interface; *netlink.VIPs implements
// it.
type Addresses interface {
	Add(a netip.Addr) error
	Remove(a netip.Addr) error
	RemoveAll() error
}

// DataPlane is the loaded data plane; *flow.Datapath implements it.
type DataPlane interface {
	FlowTables
	// Flows lists the flow table (a snapshot of no single instant).
	Flows() ([]flow.Flow, error)
	// BaseBackendID maps the id of an FTP data backend, which data
	// connections' flows name, to its backend's id (true); other ids to
	// themselves (false).
	BaseBackendID(id uint32) (uint32, bool)
	Attach(ifnames ...string) error
	// SetLocalAddrs tells the data plane the node's own addresses, so that
	// backends' replies to the node (health probes) are not rewritten.
	SetLocalAddrs(addrs []netip.Addr) error
	Close() error
}

// Membership is this node in the cluster; *cluster.Cluster implements it.
// Its effects (tables, VIPs) reach the daemon through the apply function
// given to Deps.Cluster, from one goroutine, in order.
type Membership interface {
	Join(seeds []string) (int, error)
	Store() *cluster.Store
	Drain(drained bool)
	Status() cluster.Status
	Tables() []cluster.VServerTable
	Leave(timeout time.Duration) error
	Close() error
}

// Journals in the state directory: what a run changed in the kernel, so
// that the next run after a crash undoes it.
const (
	SysctlJournal = "sysctls.json"
	VIPJournal    = "vips.json"
)

// Deps builds the daemon's components. New fills every nil field with the
// real one; tests replace them with in-memory fakes.
type Deps struct {
	// DataPlane loads the data plane and returns it with its Maglev table
	// size (the cluster must use the same).
	DataPlane func(cfg config.Config) (DataPlane, uint32, error)
	// Addresses returns the holder of the VIP addresses.
	Addresses func(cfg config.Config) (Addresses, error)
	// Speaker starts the BGP speaker.
	Speaker func(ctx context.Context, cfg config.Config, log *slog.Logger) (Speaker, error)
	// Cluster starts this node's membership; apply receives its effects.
	Cluster func(cfg config.Config, tableSize uint32, apply func(cluster.Effect), log *slog.Logger) (Membership, error)
	// Sysctls is where sysctls are read and written (default /proc/sys).
	Sysctls netlink.SysctlFS
	// Listen opens the TCP listeners (API, metrics); default net.Listen.
	Listen func(network, addr string) (net.Listener, error)
}

// Daemon is one tandemd.
type Daemon struct {
	cfg  config.Config
	deps Deps
	log  *slog.Logger

	// Set during start, before any effect can arrive; read-only after.
	dp         DataPlane
	programmer *Programmer
	addrs      Addresses

	mu       sync.Mutex
	sp       Speaker
	cl       Membership
	tables   map[string]cluster.VServerTable
	dirty    bool                  // the data plane lags the cluster's tables
	wantVIPs map[netip.Addr]bool   // VIPs the cluster wants announced
	vips     map[netip.Addr]bool   // VIPs announced (address up, route out)
	returns  map[netip.Prefix]bool // return prefixes announced
	drainT   *time.Timer
	stateful *Stateful // nil: the data plane or membership has no stateful side (fakes)

	reconcileMu sync.Mutex // one reconcile at a time
}

// New returns a daemon for cfg; nothing starts until Run.
func New(cfg config.Config, deps Deps, log *slog.Logger) *Daemon {
	if log == nil {
		log = slog.Default()
	}
	fillDeps(&deps)
	return &Daemon{
		cfg: cfg, deps: deps, log: log,
		tables:   map[string]cluster.VServerTable{},
		wantVIPs: map[netip.Addr]bool{},
		vips:     map[netip.Addr]bool{},
		returns:  map[netip.Prefix]bool{},
	}
}

func fillDeps(d *Deps) {
	if d.DataPlane == nil {
		d.DataPlane = realDataPlane
	}
	if d.Addresses == nil {
		d.Addresses = realAddresses
	}
	if d.Speaker == nil {
		d.Speaker = realSpeaker
	}
	if d.Cluster == nil {
		d.Cluster = realCluster
	}
	if d.Sysctls == nil {
		d.Sysctls = netlink.ProcSys{}
	}
	if d.Listen == nil {
		d.Listen = net.Listen
	}
}

func (d *Daemon) speaker() Speaker {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sp
}

func (d *Daemon) membership() Membership {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cl
}

// Run starts the node, serves until ctx is done (SIGTERM), then shuts down
// in order. It returns nil after a clean shutdown. ready, if not nil, is
// closed once the node is serving (joined, listening).
func (d *Daemon) Run(ctx context.Context, ready chan<- struct{}) (err error) {
	var undo []func() error // shutdown steps, run in order
	shutdown := func() error {
		var errs []error
		for _, f := range undo {
			if e := f(); e != nil {
				errs = append(errs, e)
				d.log.Warn("shutdown step failed", "err", e)
			}
		}
		return errors.Join(errs...)
	}
	// prepend: a later component shuts down before an earlier one.
	prepend := func(f func() error) { undo = append([]func() error{f}, undo...) }
	defer func() {
		if e := shutdown(); err == nil {
			err = e
		}
	}()

	d.log.Info("tandemd starting", "stateDir", d.cfg.StateDir)
	lock, err := instance.Acquire(d.cfg.StateDir)
	if err != nil {
		return err
	}
	prepend(lock.Release)

	sc := netlink.NewSysctls(d.deps.Sysctls)
	if err := sc.WithJournal(filepath.Join(d.cfg.StateDir, SysctlJournal)); err != nil {
		return fmt.Errorf("sysctl journal: %w", err)
	}
	prepend(func() error {
		if err := sc.Restore(); err != nil {
			return fmt.Errorf("restoring sysctls: %w", err)
		}
		d.log.Info("sysctls restored")
		return nil
	})
	ifaces := uniq(d.cfg.Interfaces.Front, d.cfg.Interfaces.Back, d.cfg.Interfaces.Backplane)
	if err := sc.Apply(netlink.DataPathSysctls(ifaces...)); err != nil {
		return fmt.Errorf("setting sysctls: %w", err)
	}

	addrs, err := d.deps.Addresses(d.cfg)
	if err != nil {
		return fmt.Errorf("vip addresses: %w", err)
	}
	d.addrs = addrs
	prepend(func() error {
		if err := addrs.RemoveAll(); err != nil {
			return fmt.Errorf("removing vip addresses: %w", err)
		}
		d.log.Info("vip addresses removed")
		return nil
	})

	d.log.Info("loading the data plane")
	dp, tableSize, err := d.deps.DataPlane(d.cfg)
	if err != nil {
		return fmt.Errorf("loading the data plane: %w", err)
	}
	d.dp = dp
	d.programmer = NewProgrammer(dp, tableSize)
	prepend(func() error {
		if err := dp.Close(); err != nil {
			return fmt.Errorf("unloading the data plane: %w", err)
		}
		d.log.Info("data plane unloaded")
		return nil
	})
	for _, i := range ifaces {
		if err := dp.Attach(i); err != nil {
			return fmt.Errorf("attaching the data plane to %s: %w", i, err)
		}
	}
	locals, err := interfaceAddrs(ifaces)
	if err != nil {
		return err
	}
	if err := dp.SetLocalAddrs(locals); err != nil {
		return fmt.Errorf("telling the data plane the node's addresses: %w", err)
	}
	d.log.Info("data plane loaded", "interfaces", ifaces, "tableSize", tableSize)

	sp, err := d.deps.Speaker(ctx, d.cfg, d.log)
	if err != nil {
		return fmt.Errorf("starting bgp: %w", err)
	}
	d.mu.Lock()
	d.sp = sp
	d.mu.Unlock()
	// Routes go first on the way out.
	speakerClose := func() error {
		start := time.Now()
		if err := sp.Close(); err != nil {
			return fmt.Errorf("closing bgp: %w", err)
		}
		d.log.Info("bgp routes withdrawn and sessions closed", "took", time.Since(start))
		return nil
	}

	cl, err := d.deps.Cluster(d.cfg, tableSize, d.apply, d.log)
	if err != nil {
		_ = speakerClose()
		return fmt.Errorf("starting the cluster: %w", err)
	}
	d.mu.Lock()
	d.cl = cl
	d.dirty = true // effects may have arrived before cl was known
	d.mu.Unlock()
	prepend(func() error {
		errs := []error{}
		if err := cl.Leave(time.Second); err != nil {
			errs = append(errs, err)
		}
		if err := cl.Close(); err != nil {
			errs = append(errs, err)
		}
		d.log.Info("left the cluster")
		return errors.Join(errs...)
	})
	if err := d.startStateful(ctx, cl, &prepend); err != nil {
		_ = speakerClose()
		return err
	}
	if len(d.cfg.Memberlist.Seeds) > 0 {
		n, err := cl.Join(d.cfg.Memberlist.Seeds)
		if err != nil {
			// Not fatal: the seeds may start later and join us.
			d.log.Warn("joining the cluster", "seeds", d.cfg.Memberlist.Seeds, "err", err)
		} else {
			d.log.Info("joined the cluster", "contacted", n)
		}
	}
	d.reconcile()

	stopHTTP, err := d.serve()
	if err != nil {
		_ = speakerClose()
		return err
	}
	prepend(stopHTTP)
	prepend(speakerClose)

	if ready != nil {
		close(ready)
	}
	d.log.Info("tandemd running")
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			d.log.Info("shutting down: withdrawing routes first")
			d.mu.Lock()
			if d.drainT != nil {
				d.drainT.Stop()
			}
			d.mu.Unlock()
			return nil
		case <-tick.C:
			d.reconcile() // retries a data-plane sync that failed
			d.publishBGP(ctx)
		}
	}
}

func uniq(names ...string) []string {
	var out []string
	for _, n := range names {
		if n != "" && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// apply performs one cluster effect (from the cluster's goroutine).
func (d *Daemon) apply(e cluster.Effect) {
	d.mu.Lock()
	switch e := e.(type) {
	case cluster.ProgramTable:
		d.tables[e.Table.VServer] = e.Table
		d.dirty = true
	case cluster.RemoveTable:
		delete(d.tables, e.VServer)
		d.dirty = true
	case cluster.AnnounceVIP:
		d.wantVIPs[e.VIP.Unmap()] = true
	case cluster.WithdrawVIP:
		delete(d.wantVIPs, e.VIP.Unmap())
	case cluster.DrainRequest:
		go d.drainRequested(e)
	case cluster.PairsChanged:
		d.log.Info("pairs changed", "pairs", e.Pairs)
	}
	d.mu.Unlock()
	d.reconcile()
}

// reconcile brings the data plane, then the announced VIPs, to what the
// cluster wants. A VIP is announced only while the data plane is in sync,
// so a route never draws traffic to a node without its tables.
func (d *Daemon) reconcile() {
	d.reconcileMu.Lock()
	defer d.reconcileMu.Unlock()
	d.mu.Lock()
	cl, sp, dirty := d.cl, d.sp, d.dirty
	tables := make([]cluster.VServerTable, 0, len(d.tables))
	for _, t := range d.tables {
		tables = append(tables, t)
	}
	want := make(map[netip.Addr]bool, len(d.wantVIPs))
	for a := range d.wantVIPs {
		want[a] = true
	}
	d.mu.Unlock()
	if cl == nil || sp == nil || d.programmer == nil {
		return
	}
	if dirty {
		if err := d.programmer.Sync(cl.Store().Config(), tables); err != nil {
			d.log.Warn("programming the data plane (retrying)", "err", err)
			want = nil // withdraw nothing new, announce nothing new
		} else {
			d.mu.Lock()
			d.dirty = false
			d.mu.Unlock()
			d.log.Info("data plane programmed", "vservers", len(tables), "epochs", d.programmer.Epochs())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d.mu.Lock()
	announced := make([]netip.Addr, 0, len(d.vips))
	for a := range d.vips {
		announced = append(announced, a)
	}
	d.mu.Unlock()
	if want == nil { // sync failed: keep what is announced
		return
	}
	for _, a := range announced {
		if want[a] {
			continue
		}
		if err := sp.Withdraw(ctx, prefixOf(a)); err != nil && !errors.Is(err, bgp.ErrClosed) {
			d.log.Warn("withdrawing vip", "vip", a, "err", err)
			continue
		}
		if err := d.addrs.Remove(a); err != nil {
			d.log.Warn("removing vip address", "vip", a, "err", err)
		}
		d.mu.Lock()
		delete(d.vips, a)
		d.mu.Unlock()
		d.log.Info("vip withdrawn", "vip", a)
	}
	for a := range want {
		d.mu.Lock()
		done := d.vips[a]
		d.mu.Unlock()
		if done {
			continue
		}
		if err := d.addrs.Add(a); err != nil {
			d.log.Warn("adding vip address", "vip", a, "err", err)
			continue
		}
		if err := sp.Announce(ctx, prefixOf(a), config.PrefixVIPs); err != nil {
			if !errors.Is(err, bgp.ErrClosed) {
				d.log.Warn("announcing vip", "vip", a, "err", err)
			}
			continue
		}
		d.mu.Lock()
		d.vips[a] = true
		d.mu.Unlock()
		d.log.Info("vip announced", "vip", a)
	}
	d.reconcileReturns(ctx, sp)
}

// reconcileReturns announces the return prefixes while the node serves at
// least one VIP, and withdraws them when it serves none (drained, no
// healthy backend): the back routers must send replies only to nodes that
// take traffic.
func (d *Daemon) reconcileReturns(ctx context.Context, sp Speaker) {
	d.mu.Lock()
	serving := len(d.vips) > 0
	st := d.stateful
	d.mu.Unlock()
	prefixes := d.cfg.BGP.ReturnPrefixes
	// The pair's SNIPs (one per family) follow the member that owns the
	// pair's flows.
	owning := st != nil && st.OwnsPair()
	for _, a := range d.cfg.SNIPs {
		snip := prefixOf(a)
		d.mu.Lock()
		out := d.returns[snip]
		d.mu.Unlock()
		switch {
		case owning && !out:
			if err := sp.Announce(ctx, snip, config.PrefixReturn); err != nil {
				if !errors.Is(err, bgp.ErrClosed) {
					d.log.Warn("announcing the pair's SNIP", "snip", snip, "err", err)
				}
			} else {
				d.log.Info("snip announced", "snip", snip)
				d.mu.Lock()
				d.returns[snip] = true
				d.mu.Unlock()
			}
		case !owning && out:
			if err := sp.Withdraw(ctx, snip); err != nil && !errors.Is(err, bgp.ErrClosed) {
				d.log.Warn("withdrawing the pair's SNIP", "snip", snip, "err", err)
			} else {
				d.log.Info("snip withdrawn", "snip", snip)
				d.mu.Lock()
				d.returns[snip] = false
				d.mu.Unlock()
			}
		}
	}
	for _, p := range prefixes {
		d.mu.Lock()
		out := d.returns[p]
		d.mu.Unlock()
		switch {
		case serving && !out:
			if err := sp.Announce(ctx, p, config.PrefixReturn); err != nil {
				if !errors.Is(err, bgp.ErrClosed) {
					d.log.Warn("announcing return prefix", "prefix", p, "err", err)
				}
				continue
			}
			d.log.Info("return prefix announced", "prefix", p)
		case !serving && out:
			if err := sp.Withdraw(ctx, p); err != nil && !errors.Is(err, bgp.ErrClosed) {
				d.log.Warn("withdrawing return prefix", "prefix", p, "err", err)
				continue
			}
			d.log.Info("return prefix withdrawn", "prefix", p)
		default:
			continue
		}
		d.mu.Lock()
		d.returns[p] = serving
		d.mu.Unlock()
	}
}

// announcedVIPs returns the VIPs this node announces (address up, route
// out), sorted.
func (d *Daemon) announcedVIPs() []netip.Addr {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]netip.Addr, 0, len(d.vips))
	for a := range d.vips {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// Drain announces every prefix with GRACEFUL_SHUTDOWN so that routers move
// traffic away, and after DrainTime tells the cluster this node is drained:
// its VIPs are then withdrawn.
func (d *Daemon) Drain(ctx context.Context) error {
	sp, cl := d.speaker(), d.membership()
	if sp == nil || cl == nil {
		return fmt.Errorf("drain it once it runs: %w", ErrStarting)
	}
	if err := sp.Drain(ctx); err != nil {
		return fmt.Errorf("announcing graceful shutdown: %w", err)
	}
	d.log.Info("draining", "withdrawIn", d.cfg.DrainTime)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.drainT != nil {
		d.drainT.Stop()
	}
	d.drainT = time.AfterFunc(d.cfg.DrainTime, func() {
		d.log.Info("drain time over: withdrawing")
		cl.Drain(true)
	})
	return nil
}

// Undrain cancels a drain: the node takes traffic again.
func (d *Daemon) Undrain(ctx context.Context) error {
	sp, cl := d.speaker(), d.membership()
	if sp == nil || cl == nil {
		return ErrStarting
	}
	d.mu.Lock()
	if d.drainT != nil {
		d.drainT.Stop()
		d.drainT = nil
	}
	d.mu.Unlock()
	cl.Drain(false)
	if err := sp.Undrain(ctx); err != nil {
		return fmt.Errorf("removing graceful shutdown: %w", err)
	}
	d.log.Info("undrained")
	return nil
}

// The real components.

func realDataPlane(cfg config.Config) (DataPlane, uint32, error) {
	mode := flow.XDPNative
	if cfg.XDPMode == config.XDPGeneric {
		mode = flow.XDPGeneric
	} else if cfg.XDPMode == config.XDPOffload {
		return nil, 0, errors.New("xdpMode offload is not supported by the data plane: use native or generic")
	}
	dp, err := flow.New(flow.Config{XDPMode: mode})
	if err != nil {
		return nil, 0, err
	}
	return dp, dp.Config().TableSize, nil
}

func realAddresses(cfg config.Config) (Addresses, error) {
	h, err := netlinkHandle()
	if err != nil {
		return nil, err
	}
	v, err := netlink.NewVIPs(h, cfg.VIPInterface)
	if err != nil {
		return nil, err
	}
	if err := v.WithJournal(filepath.Join(cfg.StateDir, VIPJournal)); err != nil {
		return nil, fmt.Errorf("vip journal: %w", err)
	}
	return v, nil
}

func realSpeaker(ctx context.Context, cfg config.Config, log *slog.Logger) (Speaker, error) {
	if len(cfg.BGP.Peers) == 0 {
		log.Warn("no bgp peers configured: nothing will draw traffic to this node")
	}
	bc, err := bgp.FromNodeConfig(cfg.BGP, log)
	if err != nil {
		return nil, err
	}
	if len(bc.Peers) == 0 && bc.LocalAS == 0 {
		return newNoPeers(), nil
	}
	return bgp.New(ctx, bc)
}

// http servers

func (d *Daemon) serve() (stop func() error, err error) {
	var servers []*http.Server
	stop = func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var errs []error
		for _, s := range servers {
			if err := s.Shutdown(ctx); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	defer func() {
		if err != nil {
			_ = stop()
		}
	}()
	start := func(ln net.Listener, h http.Handler, what string) {
		s := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(d.log.With("listener", what).Handler(), slog.LevelDebug)}
		servers = append(servers, s)
		go func() {
			if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				d.log.Error("http server stopped", "listener", what, "err", err)
			}
		}()
		d.log.Info("serving", "what", what, "addr", ln.Addr().String())
	}
	handlers, err := d.handlers()
	if err != nil {
		return stop, err
	}
	for _, h := range handlers {
		ln, err := h.listen(d)
		if err != nil {
			return stop, err
		}
		start(ln, h.handler, h.what)
	}
	return stop, nil
}

// interfaceAddrs lists the addresses of the data interfaces: the node's own,
// whose replies from backends the data plane must leave alone.
func interfaceAddrs(ifnames []string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, name := range ifnames {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			// Attach has already refused a real interface that is missing;
			// only an in-memory data plane gets here without one.
			continue
		}
		addrs, err := ifi.Addrs()
		if err != nil {
			return nil, fmt.Errorf("addresses of %s: %w", name, err)
		}
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				out = append(out, p.Addr().Unmap())
			}
		}
	}
	return out, nil
}

// canOwnPair reports whether this node may claim its pair's flows back
// after a rejoin: without a SNIP always; with one or two, only while its
// BGP sessions with every peer it announces return prefixes to are
// established, so that it can announce the SNIPs it takes over.
func (d *Daemon) canOwnPair() bool {
	if len(d.cfg.SNIPs) == 0 {
		return true
	}
	sp := d.speaker()
	if sp == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	peers, err := sp.Peers(ctx)
	if err != nil {
		return false
	}
	back := map[netip.Addr]bool{}
	for _, p := range d.cfg.BGP.Peers {
		if p.Announces(config.PrefixReturn) {
			back[p.Address] = true
		}
	}
	up := map[netip.Addr]bool{}
	for _, p := range peers {
		if back[p.Address] && p.Established {
			up[p.Address] = true
		}
	}
	return len(up) == len(back)
}

// startStateful starts the pairs map, mirroring and takeover when the data
// plane and the membership are the real ones (tests' fakes have no stateful
// side). The mirroring key derives from the gossip keyring's first key.
func (d *Daemon) startStateful(ctx context.Context, cl Membership, prepend *func(func() error)) error {
	sdp, ok1 := d.dp.(StatefulDataPlane)
	scl, ok2 := cl.(StatefulCluster)
	if !ok1 || !ok2 || !d.cfg.Memberlist.BindAddr.IsValid() {
		return nil
	}
	keys, err := config.LoadKeyring(d.cfg.Memberlist.KeyringFile)
	if err != nil {
		return fmt.Errorf("mirroring key: %w", err)
	}
	s, err := NewStateful(StatefulConfig{
		Self:   d.cfg.NodeID,
		Listen: netip.AddrPortFrom(d.cfg.Memberlist.BindAddr, BackplanePort),
		Auth:   mirror.Auth{PSK: MirrorPSK(keys[0])},
		SNIPs:  d.cfg.SNIPs,
		CanOwn: d.canOwnPair,
		// the SNIPs follow ownership at once (reconcileReturns)
		OnOwning: func(bool) { d.reconcile() },
		Logger:   d.log.With("component", "stateful"),
	}, sdp, scl, d.programmer)
	if err != nil {
		return fmt.Errorf("starting the stateful data path: %w", err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.Run(sctx); err != nil {
			d.log.Error("stateful data path stopped", "err", err)
		}
	}()
	d.mu.Lock()
	d.stateful = s
	d.mu.Unlock()
	(*prepend)(func() error {
		cancel()
		<-done
		return nil
	})
	return nil
}
