package node

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/tandem-lb/tandem/cluster"
	"github.com/tandem-lb/tandem/cluster/mirror"
	"github.com/tandem-lb/tandem/flow"
	"github.com/tandem-lb/tandem/flow/standby"
	"github.com/tandem-lb/tandem/node/api"
	"github.com/tandem-lb/tandem/node/metrics"
)

// The stateful half of tandemd: the pairs map of the data plane, the
// mirroring link to the partner, and takeover.
//
//   - Every node programs the data plane's pairs from the cluster's pairs
//     (PairsFromCluster): a pair's active member's backplane address is
//     where the pair's owned flows are steered. For its own pair, the node's
//     PairMachine decides instead (it owns the pair's flows only once it
//     holds their state).
//   - The pair's owner runs a mirror.Sender to its partner: a bulk sync and
//     the periodic refresh read the BPF flow table (flow.Datapath.OwnedFlows),
//     increments come from the data plane's events ring. The partner runs a
//     mirror.Receiver into a standby store.
//   - When the partner dies (memberlist, or the mirroring link closing and
//     a direct probe failing), the standby installs the store's flows into
//     its flow table in batches, makes itself the pair's active member in
//     its pairs map, and declares the partner dead to the cluster
//     (cluster.DeclareDead, one memberlist broadcast), so every node's pairs
//     map steers the pair's flows to it within about a second.
//
// Mirrored entries carry the vserver's seed (hashing.VServerSeed of its
// name) as vserver id: data-plane ids are allocated per node.

// StatefulDataPlane is what the stateful wiring needs of the data plane;
// *flow.Datapath implements it.
type StatefulDataPlane interface {
	SetBackplane(self netip.Addr, members []netip.Addr) error
	SetPairs(pairs []flow.Pair) error
	Events() (*flow.EventReader, error)
	OwnedFlows(fn func(standby.Entry) bool) error
	flow.RecordInstaller
}

// StatefulCluster is what the stateful wiring needs of the membership;
// *cluster.Cluster implements it.
type StatefulCluster interface {
	Members() []cluster.MemberStatus
	Pairs() []cluster.PairStatus
	DeclareDead(id string)
	SetPairRole(role uint8, epoch uint64)
}

// MirrorIDSource maps data-plane vserver ids to the ids mirrored entries
// carry and back; *Programmer implements it (MirrorIDs).
type MirrorIDSource interface {
	MirrorIDs() (toMirror, toDataPlane map[uint32]uint32, mirrored map[uint32]bool)
}

func owns(r mirror.Role) bool { return r == mirror.RoleActive || r == mirror.RoleTakenOver }

// MirrorPSK derives the mirroring channel's pre-shared key from the
// cluster's gossip key, so that the two keys differ but one keyring file
// configures both.
func MirrorPSK(gossipKey []byte) []byte {
	m := hmac.New(sha256.New, gossipKey)
	m.Write([]byte("tandem mirroring pre-shared key v1"))
	return m.Sum(nil)
}

// PairsFromCluster is the data plane's pairs as the cluster sees them: a
// pair is live when it has an active member, steered to that member's
// backplane address, local when this node (self) is the active member.
func PairsFromCluster(self string, pairs []cluster.PairStatus, members []cluster.MemberStatus) []flow.Pair {
	bp := make(map[string]netip.Addr, len(members))
	for _, m := range members {
		bp[m.ID] = m.Backplane.Addr().Unmap()
	}
	out := make([]flow.Pair, 0, len(pairs))
	for _, p := range pairs {
		fp := flow.Pair{ID: p.ID}
		if a := bp[p.Active]; p.Active != "" && a.IsValid() {
			fp.Live, fp.Active, fp.Local = true, a, p.Active == self
		}
		out = append(out, fp)
		if len(out) == flow.MaxPairs {
			break
		}
	}
	return out
}

// StatefulConfig configures the stateful wiring.
type StatefulConfig struct {
	// Self is this node's id; Listen its backplane address and mirroring
	// port (the receiver listens there).
	Self   string
	Listen netip.AddrPort
	// Auth authenticates the mirroring channel (required).
	Auth mirror.Auth
	// SNIPs are the pair's source addresses for USIP OFF flows, at most
	// one per family (none: such flows are dropped), SNATPorts the port
	// range of each (zero: 1024-65535).
	SNIPs     []netip.Addr
	SNATPorts [2]uint16
	// Tick is the PairMachine's tick (default 100 ms).
	Tick time.Duration
	// CanOwn, when set, is asked before a rejoining node claims its pair
	// back (the bulk sync from the partner is complete): false defers the
	// claim, asked again every tick, and the partner keeps the flows. The
	// daemon sets it when the pair has a SNIP: the claiming member must
	// announce its SNIPs to the back routers at once, so its BGP sessions
	// with them must be up (after a freeze GoBGP takes seconds to reopen
	// them, and the partner withdraws the SNIP on the claim: the replies
	// of the pair's USIP OFF flows had no route for ~4 s in the lab).
	CanOwn func() bool
	// OnOwning, when set, is called (on a goroutine of its own) each time
	// this node starts or stops owning its pair's flows (OwnsPair): the
	// daemon then announces or withdraws the pair's SNIPs at once rather
	// than at its next reconcile tick.
	OnOwning func(owning bool)
	// Store sizes the standby store (defaults of standby.Config).
	Store standby.Config
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Stateful runs the pairs map, the mirroring link and takeovers of one
// node. Its methods are safe for concurrent use.
type Stateful struct {
	cfg   StatefulConfig
	dp    StatefulDataPlane
	cl    StatefulCluster
	prog  MirrorIDSource
	store *standby.Store
	log   *slog.Logger
	in    chan func()

	mu       sync.Mutex
	pm       *mirror.PairMachine // nil until the pair has a partner
	pair     uint32
	partner  string
	sender   *mirror.Sender
	receiver *mirror.Receiver
	stopLink context.CancelFunc
	mirrored map[uint32]bool // mirror ids of STATEFUL vservers
	// the partner as last seen: alive, its gossiped role and epoch
	alive        bool
	partnerRole  mirror.Role
	partnerEpoch uint64
	owning       bool // the pair machine's role owns the flows (OwnsPair)
	// deferred is a completed bulk sync whose claim CanOwn deferred (Run's
	// goroutine only).
	deferred *mirror.LinkEvent
	// takeovers done, the flows they installed, the last one's duration
	takeovers, takenFlows uint64
	lastTakeover          time.Duration
}

// NewStateful returns the wiring; Run starts it.
func NewStateful(cfg StatefulConfig, dp StatefulDataPlane, cl StatefulCluster, prog MirrorIDSource) (*Stateful, error) {
	if cfg.Tick == 0 {
		cfg.Tick = 100 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Self == "" || !cfg.Listen.IsValid() {
		return nil, fmt.Errorf("stateful wiring needs the node id and its backplane address (got %q, %v)", cfg.Self, cfg.Listen)
	}
	cfg.Store.Logger = cfg.Logger
	st, err := standby.New(cfg.Store)
	if err != nil {
		return nil, err
	}
	return &Stateful{cfg: cfg, dp: dp, cl: cl, prog: prog, store: st, log: cfg.Logger, in: make(chan func(), 256), mirrored: map[uint32]bool{}}, nil
}

// Run serves until ctx is done: the pair machine's ticks and inputs, the
// events ring, the membership's view.
func (s *Stateful) Run(ctx context.Context) error {
	defer s.store.Close()
	ev, err := s.dp.Events()
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		ev.Close()
	}()
	go s.pumpEvents(ev)
	tick := time.NewTicker(s.cfg.Tick)
	defer tick.Stop()
	defer s.stopMirror()
	n := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case f := <-s.in:
			f()
		case <-tick.C:
			n++
			s.observe(ctx)
			if pm := s.machine(); pm != nil && s.deferred != nil {
				ev := *s.deferred
				switch {
				case pm.Status().Role != mirror.RoleRejoining:
					s.deferred = nil
				case !deferClaim(ev, mirror.RoleRejoining, s.cfg.CanOwn):
					s.deferred = nil
					s.log.Info("claiming the pair back: this node can own it now")
					pm.Link(ev)
					s.perform(ctx, pm)
				}
			}
			if pm := s.machine(); pm != nil {
				pm.Tick()
				s.perform(ctx, pm)
			}
			if n%10 == 0 {
				s.dropDisabled()
			}
			if n%100 == 0 {
				// LEASTCONNECTION counts flows that ended without FIN or
				// RST (UDP, idle, evicted) until recounted.
				if rc, ok := s.dp.(interface{ ReconcileConns() error }); ok {
					if err := rc.ReconcileConns(); err != nil {
						s.log.Warn("recounting active flows", "err", err)
					}
				}
				// FTP expectations past their deadline or of closed
				// control connections free their LRU slots.
				if sw, ok := s.dp.(interface{ SweepExpectations() (int, error) }); ok {
					if _, err := sw.SweepExpectations(); err != nil {
						s.log.Warn("sweeping FTP expectations", "err", err)
					}
				}
			}
		}
	}
}

func (s *Stateful) machine() *mirror.PairMachine {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pm
}

// observe reads the membership: the pair and partner, the partner's
// liveness, the pairs map and the members' backplane addresses.
func (s *Stateful) observe(ctx context.Context) {
	members := s.cl.Members()
	pairs := s.cl.Pairs()
	var mine *cluster.PairStatus
	for i := range pairs {
		if slices.Contains(pairs[i].Members, s.cfg.Self) {
			mine = &pairs[i]
		}
	}
	byID := map[string]cluster.MemberStatus{}
	var bps []netip.Addr
	for _, m := range members {
		byID[m.ID] = m
		if m.Backplane.IsValid() {
			bps = append(bps, m.Backplane.Addr().Unmap())
		}
	}
	if err := s.dp.SetBackplane(s.cfg.Listen.Addr(), bps); err != nil {
		s.log.Warn("programming backplane members", "err", err)
	}
	s.mu.Lock()
	if s.pm == nil && mine != nil && len(mine.Members) == 2 {
		partner := mine.Members[0]
		if partner == s.cfg.Self {
			partner = mine.Members[1]
		}
		pm, err := mirror.NewPairMachine(mirror.PairConfig{Self: s.cfg.Self, Partner: partner, Pair: mine.ID})
		if err != nil {
			s.log.Warn("pair machine", "err", err)
		} else {
			s.pm, s.pair, s.partner = pm, mine.ID, partner
			s.log.Info("pair formed", "pair", mine.ID, "partner", partner)
		}
	}
	pm, partner := s.pm, s.partner
	wasAlive, prevRole, prevEpoch := s.alive, s.partnerRole, s.partnerEpoch
	s.mu.Unlock()
	if pm != nil {
		pmem := byID[partner]
		alive := pmem.State == "alive" || pmem.State == "suspect"
		role, epoch := mirror.Role(pmem.PairRole), pmem.PairEpoch
		switch {
		case alive && !wasAlive:
			// Replay the last claim the partner knows: its own (it owns
			// the flows: this node rejoins), or this node's from before a
			// restart (the partner keeps its mirror), which this node's
			// next claim must outbid.
			if owns(role) {
				pm.Claimed(partner, epoch)
			} else if epoch > 0 {
				pm.Claimed(s.cfg.Self, epoch)
			}
			pm.PartnerAlive(role)
		case alive && (role != prevRole || epoch != prevEpoch):
			if owns(role) && (!owns(prevRole) || epoch != prevEpoch) {
				pm.Claimed(partner, epoch)
			}
			if owns(prevRole) && !owns(role) {
				pm.Released(partner, epoch)
			}
			if role == mirror.RoleJoining && prevRole != mirror.RoleJoining {
				pm.PartnerAlive(role) // it restarted between two looks
			}
		case !alive && wasAlive:
			pm.PartnerDead()
		}
		s.mu.Lock()
		s.alive, s.partnerRole, s.partnerEpoch = alive, role, epoch
		s.mu.Unlock()
		s.perform(ctx, pm)
		st := pm.Status()
		s.cl.SetPairRole(uint8(st.Role), st.Epoch)
	}
	s.programPairs(pairs, members)
}

// programPairs writes the pairs map: the cluster's view, except the own
// pair, whose owner the pair machine knows.
func (s *Stateful) programPairs(pairs []cluster.PairStatus, members []cluster.MemberStatus) {
	fps := PairsFromCluster(s.cfg.Self, pairs, members)
	s.mu.Lock()
	pm, pair, partner, alive := s.pm, s.pair, s.partner, s.alive
	s.mu.Unlock()
	if pm != nil {
		st := pm.Status()
		var partnerBP netip.Addr
		for _, m := range members {
			if m.ID == partner {
				partnerBP = m.Backplane.Addr().Unmap()
			}
		}
		for i := range fps {
			if fps[i].ID != pair {
				continue
			}
			fps[i].SNIPs, fps[i].SNATPorts = s.cfg.SNIPs, s.cfg.SNATPorts
			switch st.Role {
			case mirror.RoleActive, mirror.RoleTakenOver:
				fps[i].Live, fps[i].Local, fps[i].Active = true, true, s.cfg.Listen.Addr()
			case mirror.RoleStandby, mirror.RoleRejoining:
				if partnerBP.IsValid() {
					fps[i].Live, fps[i].Local, fps[i].Active = true, false, partnerBP
				}
			case mirror.RoleJoining:
				// never owns flows before knowing who holds them
				if alive && partnerBP.IsValid() {
					fps[i].Live, fps[i].Local, fps[i].Active = true, false, partnerBP
				}
			}
		}
	}
	if err := s.dp.SetPairs(fps); err != nil {
		s.log.Warn("programming pairs", "err", err)
	}
}

// perform carries out the pair machine's effects (on Run's goroutine).
func (s *Stateful) perform(ctx context.Context, pm *mirror.PairMachine) {
	for _, e := range pm.Ready() {
		s.log.Info("pair effect", "effect", e.String())
		switch e := e.(type) {
		case mirror.MirrorTo:
			s.startSender(ctx, e.Partner)
		case mirror.MirrorFrom:
			s.startReceiver(ctx, e.Partner)
		case mirror.StopMirror:
			s.mu.Lock()
			hadReceiver, partner := s.receiver != nil, s.partner
			s.mu.Unlock()
			s.stopMirror()
			if hadReceiver && owns(pm.Status().Role) {
				// A handback ends: install what the partner mirrored
				// since the takeover installed its snapshot.
				s.takeOver(mirror.TakeOver{Owner: partner})
			}
		case mirror.Probe:
			go s.probe(e.Partner)
		case mirror.TakeOver:
			s.takeOver(e)
		case mirror.Release:
			// the pairs map follows the machine's role on the next observe
		case mirror.Announce:
			// Claims and releases reach the cluster as the gossiped pair
			// role and epoch (observe publishes them); a takeover from a
			// dead partner also declares it dead (takeOver), the one
			// immediate broadcast the cluster has.
		}
	}
	s.noteOwning(pm)
}

// noteOwning records whether the pair machine's role owns the pair's flows
// and, when that changed, tells OnOwning at once: after a takeover the
// pair's SNIPs moved at the daemon's next reconcile tick, up to a second
// later (0.64 s in one lab run), and the replies of USIP OFF flows waited.
func (s *Stateful) noteOwning(pm *mirror.PairMachine) {
	o := owns(pm.Status().Role)
	s.mu.Lock()
	changed := o != s.owning
	s.owning = o
	s.mu.Unlock()
	if changed && s.cfg.OnOwning != nil {
		go s.cfg.OnOwning(o)
	}
}

func (s *Stateful) partnerAddr(partner string) (netip.AddrPort, bool) {
	for _, m := range s.cl.Members() {
		if m.ID == partner && m.Backplane.IsValid() {
			return m.Backplane, true
		}
	}
	return netip.AddrPort{}, false
}

func (s *Stateful) linkEvent(ev mirror.LinkEvent) {
	select {
	case s.in <- func() {
		if pm := s.machine(); pm != nil {
			s.deferred = nil // a newer link event supersedes a deferred claim
			if deferClaim(ev, pm.Status().Role, s.cfg.CanOwn) {
				s.deferred = &ev
				s.log.Info("bulk sync complete: claim deferred until this node can own the pair (BGP sessions to the back peers)")
				return
			}
			pm.Link(ev)
			s.perform(context.Background(), pm)
		}
	}:
	default:
		s.log.Warn("stateful inputs full: link event dropped", "event", ev.Kind.String())
	}
}

// deferClaim reports whether link event ev must wait: it completes the
// bulk sync of a rejoining node (whose pair machine then claims the pair
// back) and canOwn says the node cannot own the pair yet.
func deferClaim(ev mirror.LinkEvent, role mirror.Role, canOwn func() bool) bool {
	return ev.Kind == mirror.LinkEventSynced && ev.Receiver && role == mirror.RoleRejoining && canOwn != nil && !canOwn()
}

func (s *Stateful) stopMirror() {
	s.mu.Lock()
	stop := s.stopLink
	s.stopLink, s.sender, s.receiver = nil, nil, nil
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
}

func (s *Stateful) startSender(ctx context.Context, partner string) {
	s.stopMirror()
	addr, ok := s.partnerAddr(partner)
	if !ok {
		s.log.Warn("mirroring: partner has no backplane address", "partner", partner)
		return
	}
	s.mu.Lock()
	pair := s.pair
	s.mu.Unlock()
	snd, err := mirror.NewSender(mirror.SenderConfig{
		Self: s.cfg.Self, Pair: pair, Partner: partner, Addr: addr.String(),
		Auth: s.cfg.Auth, Source: mirrorSource{s}, OnEvent: s.linkEvent, Logger: s.log.With("component", "mirror"),
	})
	if err != nil {
		s.log.Warn("mirroring sender", "err", err)
		return
	}
	lctx, cancel := context.WithCancel(ctx)
	s.mu.Lock()
	s.sender, s.stopLink = snd, cancel
	s.mu.Unlock()
	go func() {
		if err := snd.Run(lctx); err != nil && !errors.Is(err, context.Canceled) {
			s.log.Warn("mirroring sender stopped", "err", err)
		}
	}()
}

func (s *Stateful) startReceiver(ctx context.Context, partner string) {
	s.stopMirror()
	s.mu.Lock()
	pair := s.pair
	s.mu.Unlock()
	rcv, err := mirror.NewReceiver(mirror.ReceiverConfig{
		Self: s.cfg.Self, Pair: pair, Partner: partner, Auth: s.cfg.Auth, Sink: s.store,
		OnEvent: s.linkEvent, Logger: s.log.With("component", "mirror"),
	})
	if err != nil {
		s.log.Warn("mirroring receiver", "err", err)
		return
	}
	ln, err := net.Listen("tcp", s.cfg.Listen.String())
	if err != nil {
		s.log.Warn("mirroring receiver: listening", "addr", s.cfg.Listen, "err", err)
		return
	}
	lctx, cancel := context.WithCancel(ctx)
	s.mu.Lock()
	s.receiver, s.stopLink = rcv, func() { cancel(); ln.Close() }
	s.mu.Unlock()
	go func() {
		if err := rcv.Serve(lctx, ln); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, net.ErrClosed) {
			s.log.Warn("mirroring receiver stopped", "err", err)
		}
	}()
}

// probeRecheck is how long probe waits before it looks again at a partner
// that answered.
const probeRecheck = 100 * time.Millisecond

// probe checks the partner directly: its memberlist or mirroring port
// answering a TCP connect within 300 ms, twice, probeRecheck apart. The
// second look is for a SIGKILLed partner: the kernel closes a dead
// process's sockets one after another, and the mirroring link (whose end
// started the probe) may close before the listeners do. Seen in the lab
// (make demo): the link closed, the memberlist port still accepted a
// connection 1 ms later, and the takeover waited 0.6 s more for
// memberlist's suspicion.
func (s *Stateful) probe(partner string) {
	start := time.Now()
	alive := s.partnerAnswers(partner)
	s.log.Info("probed partner", "partner", partner, "alive", alive, "took", time.Since(start))
	select {
	case s.in <- func() {
		if pm := s.machine(); pm != nil {
			pm.ProbeResult(alive)
			s.perform(context.Background(), pm)
		}
	}:
	default:
	}
}

// partnerAnswers is probe's check: the partner answers, and again
// probeRecheck later.
func (s *Stateful) partnerAnswers(partner string) bool {
	if !s.dialPartner(partner) {
		return false
	}
	time.Sleep(probeRecheck)
	return s.dialPartner(partner)
}

// dialPartner reports whether the partner's memberlist or mirroring port
// accepts a TCP connection within 300 ms.
func (s *Stateful) dialPartner(partner string) bool {
	for _, m := range s.cl.Members() {
		if m.ID != partner {
			continue
		}
		for _, a := range []netip.AddrPort{m.Addr, m.Backplane} {
			if !a.IsValid() {
				continue
			}
			if c, err := net.DialTimeout("tcp", a.String(), 300*time.Millisecond); err == nil {
				c.Close()
				return true
			}
		}
	}
	return false
}

// takeOver installs the partner's mirrored flows into the data plane, then
// (next observe) the pairs map makes this node the pair's active member.
func (s *Stateful) takeOver(e mirror.TakeOver) {
	s.mu.Lock()
	pair := s.pair
	s.mu.Unlock()
	start := time.Now()
	_, toDP, _ := s.prog.MirrorIDs()
	if toDP == nil {
		toDP = map[uint32]uint32{} // no vserver here (nil would install the cluster's ids as they are)
	}
	inst := &flow.Installer{D: s.dp, Owner: pair, IDs: toDP}
	n, err := s.store.Takeover(e.Owner, inst)
	if err != nil {
		s.log.Error("takeover", "owner", e.Owner, "installed", n, "err", err)
	}
	took := time.Since(start)
	s.log.Info("took over the pair's flows", "pair", pair, "from", e.Owner, "installed", inst.Installed, "took", took)
	s.mu.Lock()
	s.takeovers++
	s.takenFlows += uint64(inst.Installed)
	s.lastTakeover = took
	s.mu.Unlock()
	dead := false
	if pm := s.machine(); pm != nil {
		dead = !pm.PartnerUp()
	}
	if !e.Handback && e.Epoch != 0 && dead {
		// The partner is dead (its link closed and the probe failed, or
		// memberlist said so): tell the cluster at once, so every node
		// steers the pair's flows here within a gossip round instead of
		// after memberlist's suspicion. (A partner that restarted is alive:
		// it is not declared.)
		s.cl.DeclareDead(e.Owner)
	}
	s.programPairs(s.cl.Pairs(), s.cl.Members())
}

// dropDisabled frees the mirrored flows of vservers no longer STATEFUL
// (connFailover DISABLED or STATELESS, or deleted). The data plane stops
// their events itself.
func (s *Stateful) dropDisabled() {
	_, _, mirrored := s.prog.MirrorIDs()
	s.mu.Lock()
	old := s.mirrored
	s.mirrored = mirrored
	s.mu.Unlock()
	for id := range old {
		if !mirrored[id] {
			n := s.store.DropVServer(id)
			s.log.Info("vserver no longer mirrored: standby entries freed", "vserver", id, "freed", n)
		}
	}
}

// pumpEvents turns the data plane's events into the sender's increments.
func (s *Stateful) pumpEvents(r *flow.EventReader) {
	for {
		ev, err := r.Read()
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			if errors.Is(err, flow.ErrUnknownBackend) || errors.Is(err, flow.ErrBadEvent) {
				continue
			}
			s.log.Warn("reading flow events", "err", err)
			return
		}
		s.mu.Lock()
		snd := s.sender
		s.mu.Unlock()
		if snd == nil {
			continue // not mirroring: the next bulk sync carries the table
		}
		toMirror, _, _ := s.prog.MirrorIDs()
		id, ok := toMirror[ev.Entry.VServerID]
		if !ok {
			continue
		}
		ev.Entry.VServerID = id
		switch ev.Kind {
		case flow.EventNew, flow.EventExpect:
			snd.Upsert(ev.Entry)
		case flow.EventClose:
			if k, err := ev.Entry.Key(); err == nil {
				snd.Delete(k)
			}
		}
	}
}

// mirrorSource is the Sender's Source: the owned flows of the BPF table,
// vserver ids translated to mirror ids.
type mirrorSource struct{ s *Stateful }

func (m mirrorSource) Snapshot(fn func(standby.Entry) bool) {
	toMirror, _, _ := m.s.prog.MirrorIDs()
	err := m.s.dp.OwnedFlows(func(e standby.Entry) bool {
		id, ok := toMirror[e.VServerID]
		if !ok {
			return true
		}
		e.VServerID = id
		return fn(e)
	})
	if err != nil {
		m.s.log.Warn("reading owned flows for the mirror", "err", err)
	}
	if x, ok := m.s.dp.(expectationDataPlane); ok {
		err := x.ExpectationEntries(func(e standby.Entry) bool {
			id, ok := toMirror[e.VServerID]
			if !ok {
				return true
			}
			e.VServerID = id
			return fn(e)
		})
		if err != nil {
			m.s.log.Warn("reading FTP expectations for the mirror", "err", err)
		}
	}
}

// expectationDataPlane is the FTP ALG's part of the data plane
// (*flow.Datapath): expectations travel with the mirrored flows
// (InstallRecords installs them at a takeover), so that a data connection
// opened after the owner died still finds its backend.
type expectationDataPlane interface {
	ExpectationEntries(fn func(standby.Entry) bool) error
}

// OwnsPair reports whether this node owns its pair's flows (active or
// taken over): it then source-NATs to the SNIP and announces it.
func (s *Stateful) OwnsPair() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.owning
}

// RPCNodes is `show rpcnode`: this node's mirroring link.
func (s *Stateful) RPCNodes() []api.RPCNode {
	s.mu.Lock()
	snd, rcv, pair, partner := s.sender, s.receiver, s.pair, s.partner
	s.mu.Unlock()
	var st mirror.Status
	switch {
	case snd != nil:
		st = snd.Status()
	case rcv != nil:
		st = rcv.Status()
	case partner == "":
		return []api.RPCNode{}
	default:
		// No link: the pair machine says why (a partner of another
		// protocol version, a partner that is dead or not yet known).
		row := api.RPCNode{Pair: pair, Node: s.cfg.Self, Peer: partner, State: mirror.LinkDown.String(), ProtoVersion: int(mirror.Version)}
		if ps, ok := s.PairStatus(); ok && !ps.Protected {
			row.Reason = ps.Reason
		}
		return []api.RPCNode{row}
	}
	return []api.RPCNode{{
		Pair: pair, Node: s.cfg.Self, Peer: partner, Role: st.Role, State: st.State.String(),
		Authenticated: st.Authenticated, ProtoVersion: int(mirror.Version), PeerProtoVersion: int(st.PeerVersion),
		Mirrored: st.Entries, Bytes: st.Bytes, Lag: st.Lag, LastBulkSync: st.LastBulkSync, Reason: st.Reason,
	}}
}

// Failover is the node's connection-failover state, for metrics: its
// mirroring link, the standby store, the takeovers done.
func (s *Stateful) Failover() metrics.Failover {
	s.mu.Lock()
	snd, rcv := s.sender, s.receiver
	f := metrics.Failover{Takeovers: s.takeovers, TakeoverFlows: s.takenFlows, LastTakeover: s.lastTakeover}
	s.mu.Unlock()
	var links []mirror.Status
	if snd != nil {
		links = append(links, snd.Status())
	}
	if rcv != nil {
		links = append(links, rcv.Status())
	}
	for _, st := range links {
		f.Links = append(f.Links, metrics.MirrorLink{Peer: st.Peer, Role: st.Role, Up: st.State == mirror.LinkStreaming,
			Entries: st.Entries, Bytes: st.Bytes, Lag: st.Lag, LastBulkSync: st.LastBulkSync})
	}
	ss := s.store.Stats()
	f.StandbyEntries, f.StandbyDropped, f.StandbyEvicted = ss.Entries, ss.Dropped, ss.Evicted
	return f
}

// PairStatus is the pair machine's view, for `show node`; ok is false
// before the pair has a partner.
func (s *Stateful) PairStatus() (mirror.PairStatus, bool) {
	pm := s.machine()
	if pm == nil {
		return mirror.PairStatus{}, false
	}
	st := make(chan mirror.PairStatus, 1)
	select {
	case s.in <- func() { st <- pm.Status() }:
	case <-time.After(time.Second):
		return mirror.PairStatus{}, false
	}
	select {
	case v := <-st:
		return v, true
	case <-time.After(time.Second):
		return mirror.PairStatus{}, false
	}
}
