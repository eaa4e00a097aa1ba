package mirror

import (
	"errors"
	"fmt"
	"strings"
)

// The pair's takeover and rejoin logic.
//
// PairMachine is deterministic and single-threaded, in the style of
// etcd-raft: membership, link and probe events come in as method calls,
// time as Tick, and what the node must do comes out of Ready as a batch of
// effects the caller performs (run a sender or a receiver, probe the
// partner, install the partner's flows, broadcast an ownership claim). No
// goroutines, clocks or I/O inside, so a scenario replays identically in a
// test (testdata/pair/*.txt).
//
// Roles of this node in its pair:
//
//   - joining: just started; waiting to learn its partner's role.
//   - active: owns the pair's flows and mirrors them to the partner.
//   - standby: the partner owns them; this node keeps their mirror.
//   - taken-over: the partner died; this node installed the flows it had
//     mirrored and owns them.
//   - rejoining: this node came back while its partner owned the flows; it
//     receives the partner's state.
//
// Ownership is announced cluster-wide as a claim (pair, node, epoch); a
// claim with a higher epoch wins, and on equal epochs the preferred member
// (the lower node id, the pair's active member in cluster.Machine) wins.
//
// Failure: a standby whose mirroring link closes (a strong signal: a killed
// process's socket closes at once) probes the partner directly; if the
// probe fails or times out, or memberlist declares the partner dead, it
// takes over and claims the pair at once.
//
// Rejoin: a node that comes back never owns flows before it holds the
// current state. It rejoins: its partner bulk-syncs to it, including every
// flow created while it was away, and streams increments. Once the bulk
// sync is complete a preferred node installs the mirrored flows and claims
// the pair back (TakeOver with Handback: the caller keeps installing what
// the partner still streams until it stops mirroring); the partner, seeing
// the claim, releases ownership, stops mirroring and announces the release,
// upon which the rejoined node starts mirroring back. A node that is not
// preferred stays standby. No flow breaks on the way back: the flows exist
// on the new owner before the claim moves the traffic.
//
// A partner running another protocol version gets no state: the pair is
// unprotected (Status says why), and a takeover then installs nothing.

// Role is this node's role in its pair.
type Role uint8

const (
	RoleJoining Role = iota
	RoleActive
	RoleStandby
	RoleTakenOver
	RoleRejoining
)

func (r Role) String() string {
	switch r {
	case RoleJoining:
		return "joining"
	case RoleActive:
		return "active"
	case RoleStandby:
		return "standby"
	case RoleTakenOver:
		return "taken-over"
	case RoleRejoining:
		return "rejoining"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// owns reports whether the role owns the pair's flows.
func (r Role) owns() bool { return r == RoleActive || r == RoleTakenOver }

// PairEffect is something the caller must do; the concrete types follow.
type PairEffect interface {
	isPairEffect()
	String() string
}

// MirrorTo: run a Sender to the partner (it bulk-syncs, then streams),
// replacing any receiver.
type MirrorTo struct{ Partner string }

// MirrorFrom: run a Receiver for the partner, replacing any sender.
type MirrorFrom struct{ Partner string }

// StopMirror: stop the sender (after flushing what is queued) and the
// receiver.
type StopMirror struct{}

// Probe: check directly whether the partner is alive (connect to its
// memberlist or mirroring port); report with ProbeResult.
type Probe struct{ Partner string }

// TakeOver: install the flows mirrored by Owner into the data plane
// (standby.Store.Takeover) and serve the pair's flows. With Handback the
// partner is alive and still streaming: keep installing what it sends
// until the mirror stops.
type TakeOver struct {
	Owner    string
	Epoch    uint64
	Handback bool
}

// Release: stop owning the pair's flows; the partner owns them from Epoch.
type Release struct {
	Owner string
	Epoch uint64
}

// Announce: broadcast to the cluster at once (memberlist) that Node claims
// (Claim) or released the pair at Epoch, so every node steers the pair's
// flows to the right member.
type Announce struct {
	Claim bool
	Node  string
	Pair  uint32
	Epoch uint64
}

func (MirrorTo) isPairEffect()   {}
func (MirrorFrom) isPairEffect() {}
func (StopMirror) isPairEffect() {}
func (Probe) isPairEffect()      {}
func (TakeOver) isPairEffect()   {}
func (Release) isPairEffect()    {}
func (Announce) isPairEffect()   {}

func (e MirrorTo) String() string   { return "mirror-to " + e.Partner }
func (e MirrorFrom) String() string { return "mirror-from " + e.Partner }
func (StopMirror) String() string   { return "stop-mirror" }
func (e Probe) String() string      { return "probe " + e.Partner }
func (e TakeOver) String() string {
	s := fmt.Sprintf("take-over %s epoch=%d", e.Owner, e.Epoch)
	if e.Handback {
		s += " handback"
	}
	return s
}
func (e Release) String() string { return fmt.Sprintf("release to %s epoch=%d", e.Owner, e.Epoch) }
func (e Announce) String() string {
	verb := "release"
	if e.Claim {
		verb = "claim"
	}
	return fmt.Sprintf("announce %s %s pair=%d epoch=%d", verb, e.Node, e.Pair, e.Epoch)
}

// PairConfig configures a PairMachine.
type PairConfig struct {
	// Self and Partner are node ids, Pair the pair id. Required. The
	// member with the lower node id is preferred: it owns the pair when
	// both are up.
	Self    string
	Partner string
	Pair    uint32
	// ProbeTicks: a probe unanswered for this many ticks counts as failed
	// (default 3: 300 ms at a 100 ms tick).
	ProbeTicks int
	// JoinTicks: a joining node that hears nothing of its partner for this
	// many ticks owns the pair alone (default 50: 5 s).
	JoinTicks int
	// ReleaseTicks: after claiming the pair back, a node waits this long
	// for its partner's release before mirroring to it anyway (default 20).
	ReleaseTicks int
}

func (c *PairConfig) setDefaults() {
	if c.ProbeTicks == 0 {
		c.ProbeTicks = 3
	}
	if c.JoinTicks == 0 {
		c.JoinTicks = 50
	}
	if c.ReleaseTicks == 0 {
		c.ReleaseTicks = 20
	}
}

func (c *PairConfig) validate() error {
	switch {
	case c.Self == "" || c.Partner == "":
		return fmt.Errorf("%w: pair machine needs Self and Partner", ErrInvalidConfig)
	case c.Self == c.Partner:
		return fmt.Errorf("%w: node %q cannot be its own partner", ErrInvalidConfig, c.Self)
	case c.ProbeTicks < 1 || c.JoinTicks < 1 || c.ReleaseTicks < 1:
		return fmt.Errorf("%w: ProbeTicks, JoinTicks and ReleaseTicks must be positive", ErrInvalidConfig)
	}
	return nil
}

// PairStatus is what `show node` shows of the pair.
type PairStatus struct {
	Role    Role
	Partner string
	// Owner holds the pair's flows at Epoch, as this node knows.
	Owner string
	Epoch uint64
	// Protected: the partner holds a complete, current mirror of the flows
	// this node owns (owner), or this node holds its partner's (standby).
	Protected bool
	// Reason says why the pair is not protected.
	Reason string
	// Probing: the link closed and a probe is out.
	Probing bool
	// Takeover describes this node's last takeover: "complete", or
	// "partial: ..." or "empty: ..." with the reason.
	Takeover string
}

func (s PairStatus) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "role=%v owner=%s epoch=%d protected=%v", s.Role, orDash(s.Owner), s.Epoch, s.Protected)
	if s.Probing {
		b.WriteString(" probing")
	}
	if s.Reason != "" {
		fmt.Fprintf(&b, " reason=%q", s.Reason)
	}
	if s.Takeover != "" {
		fmt.Fprintf(&b, " takeover=%q", s.Takeover)
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// PairMachine decides this node's role in its pair. It is not safe for
// concurrent use: one goroutine feeds it events and performs its effects.
type PairMachine struct {
	cfg       PairConfig
	preferred bool
	st        PairStatus
	effects   []PairEffect

	partnerAlive bool
	synced       bool // holds (standby) or gave (owner) a complete sync
	mismatch     uint16
	probeLeft    int
	joinLeft     int
	releaseLeft  int // >0: claimed back, waiting for the partner's release
}

// NewPairMachine returns a machine in the joining role.
func NewPairMachine(cfg PairConfig) (*PairMachine, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m := &PairMachine{cfg: cfg, preferred: cfg.Self < cfg.Partner, joinLeft: cfg.JoinTicks}
	m.st = PairStatus{Role: RoleJoining, Partner: cfg.Partner, Reason: "joining"}
	return m, nil
}

// Ready returns the effects to perform, in order, and forgets them.
func (m *PairMachine) Ready() []PairEffect {
	e := m.effects
	m.effects = nil
	return e
}

// Status returns the machine's view of the pair.
func (m *PairMachine) Status() PairStatus {
	s := m.st
	s.Probing = m.probeLeft > 0
	s.Protected, s.Reason = m.protection()
	return s
}

// PartnerUp reports whether the machine believes its partner alive: false
// after memberlist declared it dead or a probe failed or timed out.
func (m *PairMachine) PartnerUp() bool { return m.partnerAlive }

func (m *PairMachine) protection() (bool, string) {
	switch {
	case m.st.Role == RoleJoining:
		return false, "joining"
	case m.mismatch != 0:
		return false, fmt.Sprintf("partner %s speaks mirroring protocol version %d, this node %d: it gets no state", m.cfg.Partner, m.mismatch, Version)
	case !m.partnerAlive:
		return false, fmt.Sprintf("partner %s is down", m.cfg.Partner)
	case !m.synced:
		return false, "bulk sync in progress"
	}
	return true, ""
}

func (m *PairMachine) emit(e ...PairEffect) { m.effects = append(m.effects, e...) }

// claim makes this node the pair's owner at a new epoch. The caller emits
// announce() after whatever must precede the traffic moving (installing
// the flows).
func (m *PairMachine) claim() uint64 {
	m.st.Epoch++
	m.st.Owner = m.cfg.Self
	return m.st.Epoch
}

func (m *PairMachine) announce() {
	m.emit(Announce{Claim: true, Node: m.cfg.Self, Pair: m.cfg.Pair, Epoch: m.st.Epoch})
}

func (m *PairMachine) become(r Role) {
	m.st.Role = r
	m.probeLeft = 0
	m.releaseLeft = 0
	m.synced = false
}

// takeOver installs the partner's flows and owns the pair.
func (m *PairMachine) takeOver() {
	switch {
	case m.mismatch != 0:
		m.st.Takeover = fmt.Sprintf("empty: partner %s spoke protocol version %d and mirrored nothing", m.cfg.Partner, m.mismatch)
	case !m.synced:
		m.st.Takeover = fmt.Sprintf("partial: %s failed before a bulk sync completed; flows it had not mirrored are lost", m.cfg.Partner)
	default:
		m.st.Takeover = "complete"
	}
	m.become(RoleTakenOver)
	epoch := m.claim()
	m.emit(StopMirror{}, TakeOver{Owner: m.cfg.Partner, Epoch: epoch})
	m.announce()
	if m.partnerAlive && m.mismatch == 0 {
		// The partner restarted: it rejoins from this node's state.
		m.emit(MirrorTo{Partner: m.cfg.Partner})
	}
}

// ownAlone makes a joining node the owner (no partner, or both fresh).
func (m *PairMachine) ownAlone() {
	m.become(RoleActive)
	m.claim()
	m.announce()
	if m.partnerAlive && m.mismatch == 0 {
		m.emit(MirrorTo{Partner: m.cfg.Partner})
	}
}

// PartnerAlive: memberlist sees the partner alive, in the role it gossips.
// A partner seen joining has restarted: whatever it owned is lost on its
// side, so a standby holding its mirror takes the flows over.
func (m *PairMachine) PartnerAlive(partnerRole Role) {
	was := m.partnerAlive
	m.partnerAlive = true
	if partnerRole == RoleJoining || !was {
		// A restarted partner may have been upgraded: try again.
		m.mismatch = 0
	}
	switch m.st.Role {
	case RoleJoining:
		switch {
		case partnerRole.owns(),
			m.st.Owner == m.cfg.Self && (partnerRole == RoleStandby || partnerRole == RoleRejoining):
			// The partner holds the flows, or the mirror of the flows this
			// node owned before it restarted (the partner takes them over
			// when it sees this node joining).
			m.become(RoleRejoining)
			m.emit(MirrorFrom{Partner: m.cfg.Partner})
		case m.preferred:
			m.ownAlone()
		default:
			m.become(RoleStandby)
			m.emit(MirrorFrom{Partner: m.cfg.Partner})
		}
	case RoleStandby, RoleRejoining:
		if partnerRole == RoleJoining && m.st.Owner == m.cfg.Partner {
			m.takeOver()
		}
	case RoleActive, RoleTakenOver:
		if (!was || partnerRole == RoleJoining) && m.mismatch == 0 && m.releaseLeft == 0 {
			m.synced = false
			m.emit(MirrorTo{Partner: m.cfg.Partner})
		}
	}
}

// PartnerDead: memberlist declares the partner dead.
func (m *PairMachine) PartnerDead() {
	was := m.partnerAlive
	m.partnerAlive = false
	switch m.st.Role {
	case RoleJoining:
		m.ownAlone()
	case RoleStandby, RoleRejoining:
		m.takeOver()
	case RoleActive, RoleTakenOver:
		m.releaseLeft = 0
		m.synced = false
		if was {
			m.emit(StopMirror{})
		}
	}
}

// LinkUp: the mirroring link to or from the partner is authenticated.
func (m *PairMachine) LinkUp() {
	m.partnerAlive = true
	m.mismatch = 0
	m.probeLeft = 0
}

// LinkClosed: the mirroring link closed. For a node keeping its partner's
// flows this is the strong signal of a dead partner: probe it.
func (m *PairMachine) LinkClosed() {
	switch m.st.Role {
	case RoleStandby, RoleRejoining:
		if m.probeLeft == 0 && m.partnerAlive {
			m.probeLeft = m.cfg.ProbeTicks
			m.emit(Probe{Partner: m.cfg.Partner})
		}
	case RoleActive, RoleTakenOver:
		// The sender reconnects and bulk-syncs again by itself.
		m.synced = false
	}
}

// ProbeResult reports the direct probe's outcome.
func (m *PairMachine) ProbeResult(alive bool) {
	if m.probeLeft == 0 {
		return
	}
	m.probeLeft = 0
	if !alive {
		m.partnerAlive = false
		m.takeOver()
	}
}

// VersionMismatch: the partner speaks another protocol version (it refused
// this node or this node refused it). It gets no state.
func (m *PairMachine) VersionMismatch(peerVersion uint16) {
	if peerVersion == Version {
		return
	}
	m.mismatch = peerVersion
	m.synced = false
	m.probeLeft = 0
	m.emit(StopMirror{})
	if m.st.Role == RoleRejoining {
		// Nothing will come from the partner: wait as standby (a takeover
		// then installs nothing) rather than claim without state.
		m.st.Role = RoleStandby
	}
}

// BulkSynced: as receiver, bulk sync gen from the partner is applied: this
// node holds the partner's complete, current state.
func (m *PairMachine) BulkSynced(gen uint64) {
	switch m.st.Role {
	case RoleStandby:
		m.synced = true
	case RoleRejoining:
		if !m.preferred {
			m.become(RoleStandby)
			m.synced = true
			return
		}
		m.become(RoleActive)
		epoch := m.claim()
		m.releaseLeft = m.cfg.ReleaseTicks
		m.emit(TakeOver{Owner: m.cfg.Partner, Epoch: epoch, Handback: true})
		m.announce()
	}
}

// SyncAcked: as sender, the partner acknowledged bulk sync gen.
func (m *PairMachine) SyncAcked(gen uint64) {
	if m.st.Role.owns() && m.releaseLeft == 0 {
		m.synced = true
		if m.st.Role == RoleTakenOver && m.preferred {
			// The partner will not claim back: this node stays the owner.
			m.st.Role = RoleActive
		}
	}
}

// Claimed: the partner announced it owns the pair at epoch. On start the
// caller replays the last claim the cluster knows for the pair (whoever
// made it, this node's own before a restart included), so that this
// node's next claim outbids it.
func (m *PairMachine) Claimed(node string, epoch uint64) {
	if node == m.cfg.Self {
		if epoch >= m.st.Epoch {
			m.st.Epoch, m.st.Owner = epoch, node
		}
		return
	}
	if node != m.cfg.Partner {
		return
	}
	switch {
	case epoch < m.st.Epoch:
		return
	case epoch == m.st.Epoch && m.st.Owner == m.cfg.Self && m.preferred:
		// A tie this node wins: the partner yields when it sees our claim.
		return
	}
	m.st.Epoch, m.st.Owner = epoch, node
	switch m.st.Role {
	case RoleJoining:
		m.become(RoleRejoining)
		m.emit(MirrorFrom{Partner: m.cfg.Partner})
	case RoleActive, RoleTakenOver:
		// The partner owns the flows now (it claimed them back after a
		// sync, or took over believing this node dead): yield.
		m.emit(StopMirror{}, Release{Owner: node, Epoch: epoch}, MirrorFrom{Partner: node},
			Announce{Node: m.cfg.Self, Pair: m.cfg.Pair, Epoch: epoch})
		if m.preferred && m.st.Role == RoleActive {
			m.become(RoleRejoining)
		} else {
			m.become(RoleStandby)
		}
	}
}

// Released: the partner announced it released the pair at epoch (after
// this node claimed it back).
func (m *PairMachine) Released(node string, epoch uint64) {
	if node != m.cfg.Partner || m.releaseLeft == 0 || epoch != m.st.Epoch {
		return
	}
	m.startMirroringBack()
}

func (m *PairMachine) startMirroringBack() {
	m.releaseLeft = 0
	m.emit(StopMirror{})
	if m.partnerAlive && m.mismatch == 0 {
		m.emit(MirrorTo{Partner: m.cfg.Partner})
	}
}

// Tick advances time by one tick.
func (m *PairMachine) Tick() {
	if m.probeLeft > 0 {
		m.probeLeft--
		if m.probeLeft == 0 {
			m.partnerAlive = false
			m.takeOver()
		}
	}
	if m.releaseLeft > 0 {
		m.releaseLeft--
		if m.releaseLeft == 0 {
			m.startMirroringBack()
		}
	}
	if m.st.Role == RoleJoining {
		m.joinLeft--
		if m.joinLeft <= 0 {
			m.ownAlone()
		}
	}
}

// Link feeds the machine a Sender's or Receiver's event about the link to
// the partner: the adapter forwards OnEvent here (on the machine's
// goroutine). Events about another peer are ignored.
func (m *PairMachine) Link(ev LinkEvent) {
	if ev.Peer != m.cfg.Partner {
		return
	}
	switch ev.Kind {
	case LinkEventUp:
		m.LinkUp()
	case LinkEventClosed:
		m.LinkClosed()
	case LinkEventRefused:
		if errors.Is(ev.Err, ErrVersionMismatch) {
			m.VersionMismatch(ev.PeerVersion)
		}
	case LinkEventSynced:
		if ev.Receiver {
			m.BulkSynced(ev.Gen)
		} else {
			m.SyncAcked(ev.Gen)
		}
	}
}
