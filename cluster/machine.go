package cluster

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/tandem-lb/tandem/hashing"
)

// The cluster state machine.
//
// Machine is deterministic and single-threaded, in the style of etcd-raft:
// time comes in as Tick, membership, configuration and health come in as
// method calls, and what the node must do comes out as a batch of Effects
// (Ready) that the caller performs — program a table, announce a VIP,
// broadcast a message. There are no goroutines, no clocks and no I/O inside,
// so a scenario (joins, failures, health flaps, concurrent edits) replays
// identically in a test without a network (testdata/*.txt).
//
// Health agreement: every node probes every backend and gossips its results
// (HealthReport: all of a node's verdicts, with a sequence number so that
// late copies, even from a previous run, are ignored). A service is UP in the tables when a strict majority of the live
// members (alive or suspect) that have a verdict on it report it UP. A
// member without a verdict (it just joined or restarted and has not probed
// yet) abstains, so a joining node does not take backends out of every
// table; a tie is DOWN. Every node applies the same rule to the same
// reports, so all compute the same tables.
//
// Readiness of a VIP (announce it by BGP): the node has once seen every live
// member hold its configuration digest, SettleTicks after its start (the
// start-up "converged" gate; later edits do not withdraw the whole cluster
// while they spread), at least one vserver on the VIP has an UP backend,
// and the node is not drained.
//
// Pairs: members with a configured pair id (MemberMeta.Pair) pair by that
// id; the others are sorted by node id and paired in that order, the k-th
// such pair getting id AutoPairBase+k. Dead members keep their place (their
// pair shows unprotected) until ForgetDeadTicks have passed, so one failure
// does not re-pair the cluster. A pair's active member (the owner of its
// flows) is its first live, undrained member in node-id order.

// AutoPairBase is the first pair id given to pairs formed from sorted node
// ids; configured pair ids must be below it.
const AutoPairBase uint32 = 1 << 31

// MemberState is a member's liveness as memberlist sees it.
type MemberState uint8

const (
	StateAlive MemberState = iota
	StateSuspect
	StateDead
	StateLeft
)

func (s MemberState) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateSuspect:
		return "suspect"
	case StateDead:
		return "dead"
	case StateLeft:
		return "left"
	}
	return fmt.Sprintf("state-%d", uint8(s))
}

func (s MemberState) live() bool { return s == StateAlive || s == StateSuspect }

// MachineConfig configures a Machine.
type MachineConfig struct {
	// Self is this node's metadata; Digest and Drained are kept by the
	// machine. Self.ID is required.
	Self MemberMeta
	// TableSize is the Maglev table size M, a prime (default
	// hashing.DefaultTableSize, 65537).
	TableSize uint64
	// HealthResendTicks: own health is re-gossiped this often even without
	// change, repairing lost broadcasts (default 25: 5 s at a 200 ms tick).
	HealthResendTicks uint64
	// ForgetDeadTicks: a dead member is forgotten (and pairs re-form) after
	// this many ticks (default 9000: 30 min at a 200 ms tick).
	ForgetDeadTicks uint64
	// SettleTicks: the start-up gate stays closed for this many ticks,
	// leaving time to join the cluster and receive its state before the
	// node announces anything from a persisted, possibly stale document
	// (default 0; the memberlist adapter uses one second).
	SettleTicks uint64
	// ConfirmDeadTicks: a member declared dead by a partner (DeclareDead)
	// is taken back as alive if memberlist has not confirmed it dead within
	// this many ticks (default 25: 5 s at a 200 ms tick, well above
	// memberlist's tightened detection time).
	ConfirmDeadTicks uint64
	// HealthSeqBase is where this node's probe sequence numbers start. A
	// restarted node must start above its previous run so that its new
	// results win over old copies still gossiped; the adapter passes the
	// wall clock in nanoseconds (default 0, for tests).
	HealthSeqBase uint64
}

func (c *MachineConfig) validate() error {
	if err := c.Self.validate(); err != nil {
		return fmt.Errorf("machine: %w", err)
	}
	if c.Self.Pair >= AutoPairBase {
		return fmt.Errorf("machine: pair id %d must be below %d (higher ids are for automatic pairs)", c.Self.Pair, AutoPairBase)
	}
	if err := hashing.ValidateTableSize(c.TableSize); err != nil {
		return fmt.Errorf("machine: %w", err)
	}
	return nil
}

// Effect is something the caller must do. The concrete types are below.
type Effect interface{ isEffect() }

// ProgramTable: write the table into the data plane (idle half, then flip).
// The table's slices are shared with the machine: read-only.
type ProgramTable struct{ Table VServerTable }

// RemoveTable: the vserver is gone or in error; remove it from the data plane.
type RemoveTable struct{ VServer string }

// AnnounceVIP: announce the VIP by BGP.
type AnnounceVIP struct{ VIP netip.Addr }

// WithdrawVIP: withdraw the VIP.
type WithdrawVIP struct{ VIP netip.Addr }

// Broadcast: gossip the message to the cluster.
type Broadcast struct{ Msg Message }

// UpdateMeta: this node's metadata changed; publish it (memberlist UpdateNode).
type UpdateMeta struct{ Meta MemberMeta }

// DrainRequest: an operator asked, through another node's API, that this
// node drain (Drained true) or undrain itself. The daemon runs its drain
// (graceful-shutdown announcement, then withdrawal) as for a local request.
type DrainRequest struct {
	Drained bool
	From    string // the node whose API took the request
}

// PairsChanged: pairs, their members or their protection changed (the
// mirroring channel reconnects to the new partner, takeovers happen).
type PairsChanged struct{ Pairs []PairStatus }

func (ProgramTable) isEffect() {}
func (RemoveTable) isEffect()  {}
func (AnnounceVIP) isEffect()  {}
func (WithdrawVIP) isEffect()  {}
func (Broadcast) isEffect()    {}
func (UpdateMeta) isEffect()   {}
func (PairsChanged) isEffect() {}
func (DrainRequest) isEffect() {}

// MemberStatus is one member as `show cluster` prints it.
type MemberStatus struct {
	ID           string         `json:"id"`
	Addr         netip.AddrPort `json:"addr"` // gossip address
	Backplane    netip.AddrPort `json:"backplane"`
	Pair         uint32         `json:"pair"` // effective pair id
	State        string         `json:"state"`
	Digest       string         `json:"digest"`
	ProtoVersion uint16         `json:"protoVersion"`
	Drained      bool           `json:"drained"`
	Self         bool           `json:"self,omitempty"`
	// BGPUp of BGPPeers sessions established, as the member last gossiped.
	BGPUp    int `json:"bgpUp"`
	BGPPeers int `json:"bgpPeers"`
	// PairRole and PairEpoch as the member last gossiped (MemberMeta).
	PairRole  uint8  `json:"pairRole"`
	PairEpoch uint64 `json:"pairEpoch"`
}

// PairStatus is one pair.
type PairStatus struct {
	ID         uint32   `json:"id"`
	Configured bool     `json:"configured"` // from MemberMeta.Pair, not automatic
	Members    []string `json:"members"`    // sorted
	Active     string   `json:"active"`     // first live member; "" when none
	Protected  bool     `json:"protected"`  // two live members with the same mirroring protocol
	Reason     string   `json:"reason,omitempty"`
}

// ServiceHealth is the agreed health of one service.
type ServiceHealth struct {
	Service string   `json:"service"`
	Up      bool     `json:"up"`
	UpVotes []string `json:"upVotes"` // live members that see it UP
	Voters  int      `json:"voters"`  // live members with a verdict
	Live    int      `json:"live"`
}

type member struct {
	meta  MemberMeta
	addr  netip.AddrPort
	state MemberState
	since uint64 // tick of the last state change
	// declared: dead on a partner's word (DeclareDead), not yet confirmed
	// by memberlist.
	declared bool
}

// Machine is the per-node cluster state machine. Not safe for concurrent
// use: the adapter serializes calls.
type Machine struct {
	cfg  MachineConfig
	tick uint64

	members  map[string]*member // self included
	config   Config
	runnable Config // config.Quarantine(): what the data plane may program
	digest   string
	reports  map[string]map[string]ProbeResult // node → service → result
	// reportSeq is the sequence number of the report held per node; it is
	// kept when a member dies, so a stale copy of its old report arriving
	// after it restarted cannot replace the newer incarnation's.
	reportSeq map[string]uint64
	ownSeq    uint64

	synced    bool
	tables    map[string]VServerTable
	announced map[netip.Addr]bool
	pairs     []PairStatus
	lastMeta  MemberMeta
	lastSent  uint64 // tick of the last own health broadcast

	effects []Effect
}

// NewMachine makes a machine holding only itself, with an empty configuration.
func NewMachine(cfg MachineConfig) (*Machine, error) {
	if cfg.TableSize == 0 {
		cfg.TableSize = hashing.DefaultTableSize
	}
	if cfg.HealthResendTicks == 0 {
		cfg.HealthResendTicks = 25
	}
	if cfg.ForgetDeadTicks == 0 {
		cfg.ForgetDeadTicks = 9000
	}
	if cfg.ConfirmDeadTicks == 0 {
		cfg.ConfirmDeadTicks = 25
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m := &Machine{
		cfg:       cfg,
		members:   map[string]*member{},
		reports:   map[string]map[string]ProbeResult{},
		reportSeq: map[string]uint64{},
		tables:    map[string]VServerTable{},
		announced: map[netip.Addr]bool{},
		ownSeq:    cfg.HealthSeqBase,
	}
	empty := Config{}
	m.config = empty.Clone()
	m.config.Normalize()
	m.runnable = m.config.Clone()
	m.digest = m.config.Digest()
	self := cfg.Self
	self.Digest = m.digest
	m.members[self.ID] = &member{meta: self, state: StateAlive}
	m.lastMeta = self
	m.reportSeq[self.ID] = m.ownSeq
	// An empty first report replaces whatever a previous run of this node
	// left in the others' view.
	m.broadcastHealth()
	m.recompute()
	return m, nil
}

// ID is this node's id.
func (m *Machine) ID() string { return m.cfg.Self.ID }

// Ready returns the effects produced since the last call, in order.
func (m *Machine) Ready() []Effect {
	e := m.effects
	m.effects = nil
	return e
}

// Tick advances time by one tick.
func (m *Machine) Tick() {
	m.tick++
	for _, mem := range m.members {
		if mem.declared && m.tick-mem.since >= m.cfg.ConfirmDeadTicks {
			mem.declared = false
			mem.state = StateAlive
			mem.since = m.tick
		}
	}
	for id, mem := range m.members {
		if mem.state == StateDead && m.tick-mem.since >= m.cfg.ForgetDeadTicks {
			delete(m.members, id)
			delete(m.reports, id)
			delete(m.reportSeq, id)
		}
	}
	if m.tick-m.lastSent >= m.cfg.HealthResendTicks {
		m.broadcastHealth()
	}
	m.recompute()
}

// Member records what memberlist says about another node: its metadata,
// gossip address and state. StateLeft (a graceful leave) forgets it at once;
// StateDead keeps it, shown dead, for ForgetDeadTicks.
func (m *Machine) Member(meta MemberMeta, addr netip.AddrPort, state MemberState) {
	if meta.ID == m.cfg.Self.ID {
		if addr.IsValid() {
			m.members[meta.ID].addr = addr
		}
		return // this node's own metadata is the machine's
	}
	if state == StateDead && meta.Leaving {
		state = StateLeft // it said it was leaving: a leave, not a failure
	}
	if state == StateLeft {
		m.MemberLeft(meta.ID)
		return
	}
	mem, ok := m.members[meta.ID]
	if !ok && !state.live() {
		return // not known (or it already left): nothing to mark dead
	}
	if !ok {
		mem = &member{since: m.tick}
		m.members[meta.ID] = mem
	}
	mem.declared = false // memberlist's word replaces a partner's
	if mem.state != state {
		mem.since = m.tick
		if !state.live() {
			// Its votes stop counting; a restarted node reports afresh.
			delete(m.reports, meta.ID)
		}
	}
	mem.meta, mem.state = meta, state
	if addr.IsValid() {
		mem.addr = addr
	}
	m.recompute()
}

// MemberLeft forgets a member that left gracefully (its MsgLeave, or its
// Leaving metadata when memberlist reports it gone).
func (m *Machine) MemberLeft(id string) {
	if _, ok := m.members[id]; !ok || id == m.cfg.Self.ID {
		return
	}
	delete(m.members, id)
	delete(m.reports, id)
	m.recompute()
}

// MemberState changes only the state of a known member, as memberlist
// reports it; unknown ids are ignored.
func (m *Machine) MemberState(id string, state MemberState) {
	mem, ok := m.members[id]
	if !ok || id == m.cfg.Self.ID {
		return
	}
	m.Member(mem.meta, mem.addr, state)
}

// DeclareDead marks a live member dead on a partner's word (its mirroring
// connection closed and a direct probe failed: MsgDead), ahead of
// memberlist's suspicion. If memberlist has not confirmed the death within
// ConfirmDeadTicks (it keeps reporting the member alive or never reports
// it dead), the member is taken back as alive: a false declaration costs a
// few seconds, not a member lost forever.
func (m *Machine) DeclareDead(id string) {
	mem, ok := m.members[id]
	if !ok || id == m.cfg.Self.ID || !mem.state.live() {
		return
	}
	m.Member(mem.meta, mem.addr, StateDead)
	mem.declared = true
}

// SetConfig installs the current configuration (the Store's merged document).
func (m *Machine) SetConfig(c Config) {
	c = c.Clone()
	c.Normalize()
	m.config = c
	m.runnable, _ = c.Quarantine()
	m.digest = c.Digest()
	m.recompute()
}

// SetDrained drains (true) or undrains the node.
func (m *Machine) SetDrained(d bool) {
	m.members[m.cfg.Self.ID].meta.Drained = d
	m.recompute()
}

// SetBGP records how many of this node's BGP sessions are established, for
// the other members' status views; a change updates the node's metadata.
func (m *Machine) SetBGP(up, peers int) {
	meta := &m.members[m.cfg.Self.ID].meta
	meta.BGPUp, meta.BGPPeers = clampU16(up), clampU16(peers)
	m.recompute()
}

// SetPairRole sets the pair role and epoch this node gossips.
func (m *Machine) SetPairRole(role uint8, epoch uint64) {
	meta := &m.members[m.cfg.Self.ID].meta
	if meta.PairRole == role && meta.PairEpoch == epoch {
		return
	}
	meta.PairRole, meta.PairEpoch = role, epoch
	m.recompute()
}

func clampU16(n int) uint16 {
	return uint16(min(max(n, 0), 0xffff))
}

// SetLeaving marks this node as leaving the cluster gracefully: it
// withdraws its VIPs and its metadata tells the others, so that its
// disappearance is taken as a leave.
func (m *Machine) SetLeaving() {
	m.members[m.cfg.Self.ID].meta.Leaving = true
	m.recompute()
}

// LocalProbe records this node's probe verdict on a service; a change is
// broadcast at once.
func (m *Machine) LocalProbe(service string, up bool) {
	own := m.reports[m.cfg.Self.ID]
	if own == nil {
		own = map[string]ProbeResult{}
		m.reports[m.cfg.Self.ID] = own
	}
	if r, ok := own[service]; ok && r.Up == up {
		return
	}
	m.ownSeq++
	m.reportSeq[m.cfg.Self.ID] = m.ownSeq
	own[service] = ProbeResult{Service: service, Up: up, Seq: m.ownSeq}
	m.broadcastHealth()
	m.recompute()
}

// ForgetProbe drops this node's verdict on a service that it no longer
// probes (the service was removed).
func (m *Machine) ForgetProbe(service string) {
	if _, ok := m.reports[m.cfg.Self.ID][service]; ok {
		delete(m.reports[m.cfg.Self.ID], service)
		m.ownSeq++
		m.reportSeq[m.cfg.Self.ID] = m.ownSeq
		m.broadcastHealth()
		m.recompute()
	}
}

// Health takes another node's report: a report is the node's whole set of
// verdicts, and one with a higher sequence number replaces the one held
// (so a verdict the node dropped disappears too). Reports about this node
// itself and from dead members are ignored. It returns whether anything was new (the adapter then
// re-gossips the report, so it spreads epidemically).
func (m *Machine) Health(r HealthReport) bool {
	if r.Node == m.cfg.Self.ID {
		return false
	}
	// Reports of members not known yet are kept (push/pull on join can
	// bring them before memberlist announces the members); they count once
	// the member is live. Reports of dead members are dropped.
	if mem, ok := m.members[r.Node]; ok && !mem.state.live() {
		return false
	}
	// An equal sequence number is taken again only when the results were
	// dropped (the member was thought dead but is back, unchanged).
	_, held := m.reports[r.Node]
	if seq, ok := m.reportSeq[r.Node]; ok && (r.Seq < seq || r.Seq == seq && held) {
		return false
	}
	cur := make(map[string]ProbeResult, len(r.Results))
	for _, p := range r.Results {
		cur[p.Service] = p
	}
	m.reports[r.Node] = cur
	m.reportSeq[r.Node] = r.Seq
	m.recompute()
	return true
}

// HealthReports returns every report held, sorted (the MsgState payload).
func (m *Machine) HealthReports() []HealthReport {
	ids := make([]string, 0, len(m.reports))
	for id := range m.reportSeq {
		if _, ok := m.reports[id]; !ok && id != m.cfg.Self.ID {
			continue
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	out := make([]HealthReport, 0, len(ids))
	for _, id := range ids {
		out = append(out, m.reportOf(id))
	}
	return out
}

func (m *Machine) reportOf(id string) HealthReport {
	r := HealthReport{Node: id, Seq: m.reportSeq[id]}
	for _, p := range m.reports[id] {
		r.Results = append(r.Results, p)
	}
	sortResults(r.Results)
	return r
}

func (m *Machine) broadcastHealth() {
	m.lastSent = m.tick
	m.effects = append(m.effects, Broadcast{Msg: Message{Type: MsgHealth, From: m.cfg.Self.ID, Health: []HealthReport{m.reportOf(m.cfg.Self.ID)}}})
}

func (m *Machine) liveIDs() []string {
	var ids []string
	for id, mem := range m.members {
		if mem.state.live() {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// agreedUp is the majority rule over live members.
func (m *Machine) agreedUp() map[string]bool {
	votes, voters := map[string]int{}, map[string]int{}
	for _, id := range m.liveIDs() {
		for svc, r := range m.reports[id] {
			voters[svc]++
			if r.Up {
				votes[svc]++
			}
		}
	}
	up := map[string]bool{}
	for svc, n := range votes {
		if 2*n > voters[svc] {
			up[svc] = true
		}
	}
	return up
}

func (m *Machine) recompute() {
	self := m.members[m.cfg.Self.ID]
	self.meta.Digest = m.digest

	// The start-up gate: settled, and every live member holds our digest.
	if !m.synced && m.tick >= m.cfg.SettleTicks {
		m.synced = true
		for _, id := range m.liveIDs() {
			if m.members[id].meta.Digest != m.digest {
				m.synced = false
			}
		}
	}

	tables, err := computeTables(&m.runnable, m.agreedUp(), m.tables, m.cfg.TableSize)
	if err != nil {
		// Only an invalid table size fails, and validate refused it.
		panic(err)
	}
	next := make(map[string]VServerTable, len(tables))
	for _, t := range tables {
		next[t.VServer] = t
		if p, ok := m.tables[t.VServer]; !ok || p.Epoch != t.Epoch {
			m.effects = append(m.effects, ProgramTable{Table: t})
		}
	}
	var removed []string
	for name := range m.tables {
		if _, ok := next[name]; !ok {
			removed = append(removed, name)
		}
	}
	slices.Sort(removed)
	for _, name := range removed {
		m.effects = append(m.effects, RemoveTable{VServer: name})
	}
	m.tables = next

	// VIPs.
	ready := map[netip.Addr]bool{}
	vips := map[netip.Addr]bool{}
	for _, vs := range m.config.VServers {
		vips[vs.VIP] = true
		if t, ok := next[vs.Name]; ok && t.HasBackend() && m.synced && !self.meta.Drained && !self.meta.Leaving {
			ready[vs.VIP] = true
		}
	}
	var changes []netip.Addr
	for vip := range vips {
		if ready[vip] != m.announced[vip] {
			changes = append(changes, vip)
		}
	}
	for vip := range m.announced {
		if !vips[vip] {
			changes = append(changes, vip)
		}
	}
	slices.SortFunc(changes, netip.Addr.Compare)
	for _, vip := range changes {
		if ready[vip] {
			m.announced[vip] = true
			m.effects = append(m.effects, AnnounceVIP{VIP: vip})
		} else {
			delete(m.announced, vip)
			m.effects = append(m.effects, WithdrawVIP{VIP: vip})
		}
	}

	pairs := m.computePairs()
	if !slices.EqualFunc(pairs, m.pairs, samePair) {
		m.pairs = pairs
		m.effects = append(m.effects, PairsChanged{Pairs: clonePairs(pairs)})
	}

	if self.meta != m.lastMeta {
		m.lastMeta = self.meta
		m.effects = append(m.effects, UpdateMeta{Meta: self.meta})
	}
}

func samePair(a, b PairStatus) bool {
	return a.ID == b.ID && a.Configured == b.Configured && slices.Equal(a.Members, b.Members) &&
		a.Active == b.Active && a.Protected == b.Protected && a.Reason == b.Reason
}

func clonePairs(ps []PairStatus) []PairStatus {
	out := slices.Clone(ps)
	for i := range out {
		out[i].Members = slices.Clone(out[i].Members)
	}
	return out
}

func (m *Machine) computePairs() []PairStatus {
	configured := map[uint32][]string{}
	var auto []string
	for id, mem := range m.members {
		if mem.meta.Pair != 0 {
			configured[mem.meta.Pair] = append(configured[mem.meta.Pair], id)
		} else {
			auto = append(auto, id)
		}
	}
	var out []PairStatus
	for pid, ids := range configured {
		slices.Sort(ids)
		out = append(out, m.pairStatus(pid, true, ids))
	}
	slices.Sort(auto)
	for k := 0; k < len(auto); k += 2 {
		ids := auto[k:min(k+2, len(auto))]
		out = append(out, m.pairStatus(AutoPairBase+uint32(k/2), false, slices.Clone(ids)))
	}
	slices.SortFunc(out, func(a, b PairStatus) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

func (m *Machine) pairStatus(id uint32, configured bool, ids []string) PairStatus {
	p := PairStatus{ID: id, Configured: configured, Members: ids}
	var live []string
	for _, n := range ids {
		if m.members[n].state.live() {
			live = append(live, n)
		}
	}
	// The active member is the live one that claims the pair's flows (the
	// highest epoch; the partner takes them over or hands them back only
	// once it holds their state); with no claim, the first live one that
	// is not drained (a drained node takes no new flows), else the first
	// live one.
	var claimEpoch uint64
	for _, n := range live {
		if meta := m.members[n].meta; pairRoleOwns(meta.PairRole) && (p.Active == "" || meta.PairEpoch > claimEpoch) {
			p.Active, claimEpoch = n, meta.PairEpoch
		}
	}
	for _, n := range live {
		if p.Active != "" {
			break
		}
		if meta := m.members[n].meta; !meta.Drained && !meta.Leaving {
			p.Active = n
			break
		}
	}
	if p.Active == "" && len(live) > 0 {
		p.Active = live[0]
	}
	switch {
	case len(ids) > 2:
		p.Reason = fmt.Sprintf("pair %d has %d members, a pair has two; fix the partner settings", id, len(ids))
	case len(ids) == 1:
		p.Reason = "no partner"
	case len(live) < 2:
		for _, n := range ids {
			if !m.members[n].state.live() {
				p.Reason = fmt.Sprintf("partner %s is %s", n, m.members[n].state)
			}
		}
	case m.members[ids[0]].meta.Proto != m.members[ids[1]].meta.Proto:
		p.Reason = fmt.Sprintf("mirroring protocol versions differ: %s speaks %d, %s speaks %d",
			ids[0], m.members[ids[0]].meta.Proto, ids[1], m.members[ids[1]].meta.Proto)
	default:
		p.Protected = true
	}
	return p
}

// Members returns every known member, sorted by id.
func (m *Machine) Members() []MemberStatus {
	pairOf := map[string]uint32{}
	for _, p := range m.pairs {
		for _, n := range p.Members {
			pairOf[n] = p.ID
		}
	}
	out := make([]MemberStatus, 0, len(m.members))
	for id, mem := range m.members {
		out = append(out, MemberStatus{
			ID: id, Addr: mem.addr, Backplane: mem.meta.Backplane, Pair: pairOf[id], State: mem.state.String(),
			Digest: mem.meta.Digest, ProtoVersion: mem.meta.Proto, Drained: mem.meta.Drained, Self: id == m.cfg.Self.ID,
			BGPUp: int(mem.meta.BGPUp), BGPPeers: int(mem.meta.BGPPeers),
			PairRole: mem.meta.PairRole, PairEpoch: mem.meta.PairEpoch,
		})
	}
	slices.SortFunc(out, func(a, b MemberStatus) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// Pairs returns the pairs, sorted by id.
func (m *Machine) Pairs() []PairStatus { return clonePairs(m.pairs) }

// Tables returns a copy of the current tables, sorted by vserver. (The
// tables in ProgramTable effects share memory with the machine: read them,
// do not modify them.)
func (m *Machine) Tables() []VServerTable {
	out := make([]VServerTable, 0, len(m.tables))
	for _, t := range m.tables {
		t.Backends = slices.Clone(t.Backends)
		t.Weights = slices.Clone(t.Weights)
		t.Slots = slices.Clone(t.Slots)
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b VServerTable) int { return cmp.Compare(a.VServer, b.VServer) })
	return out
}

// TablesDigest is TablesDigest(m.Tables()).
func (m *Machine) TablesDigest() string { return TablesDigest(m.Tables()) }

// Announced returns the VIPs this node announces, sorted.
func (m *Machine) Announced() []netip.Addr {
	out := make([]netip.Addr, 0, len(m.announced))
	for v := range m.announced {
		out = append(out, v)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// Synced reports whether the start-up convergence gate has opened.
func (m *Machine) Synced() bool { return m.synced }

// Meta is this node's current metadata.
func (m *Machine) Meta() MemberMeta { return m.members[m.cfg.Self.ID].meta }

// ServiceHealth returns the agreed health of every bound or reported
// service, sorted.
func (m *Machine) ServiceHealth() []ServiceHealth {
	live := m.liveIDs()
	names := map[string]bool{}
	for _, s := range m.config.Services {
		names[s.Name] = true
	}
	up := m.agreedUp()
	out := make([]ServiceHealth, 0, len(names))
	for name := range names {
		h := ServiceHealth{Service: name, Up: up[name], Live: len(live)}
		for _, id := range live {
			if r, ok := m.reports[id][name]; ok {
				h.Voters++
				if r.Up {
					h.UpVotes = append(h.UpVotes, id)
				}
			}
		}
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b ServiceHealth) int { return cmp.Compare(a.Service, b.Service) })
	return out
}

// ErrNoLivePair: no pair has a live member, so no node can own a flow.
var ErrNoLivePair = errors.New("no live pair")

// Owner returns the pair that owns a flow from client (addr, port) by the
// rendezvous choice over pairs with a live member, and that pair's active
// member: the node that creates the flow's entry.
func (m *Machine) Owner(addr netip.Addr, port uint16) (uint32, string, error) {
	var ids []uint32
	active := map[uint32]string{}
	for _, p := range m.pairs {
		if p.Active != "" {
			ids = append(ids, p.ID)
			active[p.ID] = p.Active
		}
	}
	pid, err := hashing.Owner(hashing.OwnerKey{Addr: addr, Port: port}, ids)
	if err != nil {
		return 0, "", fmt.Errorf("choosing owner: %w", ErrNoLivePair)
	}
	return pid, active[pid], nil
}
