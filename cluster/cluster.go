package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// The memberlist adapter: a thin layer that feeds the pure Machine and the
// Store from memberlist's delegates and performs the Machine's effects.
//
// Concurrency: memberlist calls the delegates from its own goroutines (some
// while holding its node lock), the API calls Store.Update from others. The
// Machine is guarded by Cluster.mu; every call into it appends its effects
// to a pending list, and one goroutine (loop) performs them in order
// without holding mu — so that memberlist.UpdateNode, which calls back into
// NodeMeta and NotifyUpdate, and the caller's Apply never run under mu.

// MirrorProtoVersion is the mirroring protocol version this build speaks.
const MirrorProtoVersion = 1

// ClusterConfig configures a Cluster. DefaultClusterConfig fills every
// default; NodeID and Keys have none.
type ClusterConfig struct {
	NodeID    string         // required; also the memberlist node name
	Pair      uint32         // configured pair id; 0 = pair from sorted node ids
	Backplane netip.AddrPort // mirroring/steering address, told to the others
	// ProtoVersion is the mirroring protocol version (default MirrorProtoVersion).
	ProtoVersion uint16

	BindAddr      string // default "0.0.0.0"
	BindPort      int    // default 7946; 0 picks a free port (tests)
	AdvertiseAddr string // default: memberlist picks from BindAddr
	AdvertisePort int    // default BindPort

	// Keys is the gossip keyring (AES-128/192/256: 16, 24 or 32 bytes each);
	// the first is the primary (used to encrypt), all decrypt. Required:
	// the cluster never gossips in clear text.
	Keys [][]byte

	// StateDir holds the replicated document (see Store); empty keeps it in
	// memory only (tests).
	StateDir string

	// TableSize is the Maglev table size (default hashing.DefaultTableSize).
	TableSize uint64
	// Tick is the state machine's tick (default 200ms).
	Tick time.Duration
	// GCEvery: tombstones are collected this often (default 1h).
	GCEvery time.Duration
	// ConfirmDead: a member declared dead by a partner (DeclareDead, MsgDead)
	// comes back as alive if memberlist has not confirmed its death within
	// this time (default 5s; memberlist's tightened detection takes ~1-2s).
	ConfirmDead time.Duration

	// Failure detection, tightened from memberlist's LAN defaults (about 5 s
	// with suspicion) to catch a frozen node in about a second:
	ProbeInterval    time.Duration // default 200ms (LAN default 1s)
	ProbeTimeout     time.Duration // default 100ms (LAN default 500ms): a rack RTT is well under 1ms
	SuspicionMult    int           // default 2 (LAN 4): suspicion lasts 2*max(1,log10(N))*ProbeInterval, 400ms for N<10
	SuspicionMaxMult int           // default 3 (LAN 6): at most 3x that before confirmation speeds it up
	GossipInterval   time.Duration // default 100ms (LAN 200ms): config deltas and health spread faster
	PushPullInterval time.Duration // default 5s (LAN 30s): anti-entropy repairs lost deltas sooner
	TCPTimeout       time.Duration // default 2s (LAN 10s)

	// Dialer is what the health checker dials with (default net.Dialer).
	Dialer Dialer
	// DisableHealthChecks: probe nothing; results come from ReportProbe only.
	DisableHealthChecks bool

	// Apply performs the data-plane and routing effects (ProgramTable,
	// RemoveTable, AnnounceVIP, WithdrawVIP, PairsChanged) in order, from one
	// goroutine. It must not block for long. Default: ignore them.
	Apply func(Effect)
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

// DefaultClusterConfig returns a configuration with every default filled.
func DefaultClusterConfig() ClusterConfig {
	return ClusterConfig{
		ProtoVersion:     MirrorProtoVersion,
		BindAddr:         "0.0.0.0",
		BindPort:         7946,
		Tick:             200 * time.Millisecond,
		GCEvery:          time.Hour,
		ConfirmDead:      5 * time.Second,
		ProbeInterval:    200 * time.Millisecond,
		ProbeTimeout:     100 * time.Millisecond,
		SuspicionMult:    2,
		SuspicionMaxMult: 3,
		GossipInterval:   100 * time.Millisecond,
		PushPullInterval: 5 * time.Second,
		TCPTimeout:       2 * time.Second,
	}
}

func (c *ClusterConfig) fillDefaults() {
	d := DefaultClusterConfig()
	if c.ProtoVersion == 0 {
		c.ProtoVersion = d.ProtoVersion
	}
	if c.BindAddr == "" {
		c.BindAddr = d.BindAddr
	}
	if c.Tick == 0 {
		c.Tick = d.Tick
	}
	if c.GCEvery == 0 {
		c.GCEvery = d.GCEvery
	}
	if c.ConfirmDead == 0 {
		c.ConfirmDead = d.ConfirmDead
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = d.ProbeInterval
	}
	if c.ProbeTimeout == 0 {
		c.ProbeTimeout = d.ProbeTimeout
	}
	if c.SuspicionMult == 0 {
		c.SuspicionMult = d.SuspicionMult
	}
	if c.SuspicionMaxMult == 0 {
		c.SuspicionMaxMult = d.SuspicionMaxMult
	}
	if c.GossipInterval == 0 {
		c.GossipInterval = d.GossipInterval
	}
	if c.PushPullInterval == 0 {
		c.PushPullInterval = d.PushPullInterval
	}
	if c.TCPTimeout == 0 {
		c.TCPTimeout = d.TCPTimeout
	}
	if c.Dialer == nil {
		c.Dialer = &net.Dialer{}
	}
	if c.Apply == nil {
		c.Apply = func(Effect) {}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func (c *ClusterConfig) validate() error {
	if !validName(c.NodeID) {
		return fmt.Errorf("cluster: node id %q must be 1-127 letters, digits, '_', '.', '-'", c.NodeID)
	}
	if len(c.Keys) == 0 {
		return errors.New("cluster: no gossip key; give at least one 16, 24 or 32 byte key (the cluster never gossips in clear text)")
	}
	for i, k := range c.Keys {
		switch len(k) {
		case 16, 24, 32:
		default:
			return fmt.Errorf("cluster: gossip key %d is %d bytes; want 16, 24 or 32", i, len(k))
		}
	}
	if c.BindPort < 0 || c.BindPort > 65535 || c.AdvertisePort < 0 || c.AdvertisePort > 65535 {
		return fmt.Errorf("cluster: ports must be 0-65535")
	}
	if c.ProbeTimeout >= c.ProbeInterval {
		return fmt.Errorf("cluster: probe timeout %s must be shorter than the probe interval %s", c.ProbeTimeout, c.ProbeInterval)
	}
	if c.Tick <= 0 || c.GossipInterval <= 0 || c.PushPullInterval <= 0 {
		return errors.New("cluster: tick, gossip and push/pull intervals must be positive")
	}
	return nil
}

// Cluster is one node's membership, replicated configuration and agreed
// state, over memberlist.
type Cluster struct {
	cfg   ClusterConfig
	log   *slog.Logger
	store *Store

	mu      sync.Mutex
	machine *Machine
	pending []Effect

	list      *memberlist.Memberlist
	listReady atomic.Pointer[memberlist.Memberlist] // list, for callbacks that may run before it is set
	addr      string
	queue     *memberlist.TransmitLimitedQueue
	checker   *Checker

	updateMu sync.Mutex // serializes memberlist.UpdateNode
	directMu sync.Mutex
	direct   [][]byte // encoded messages to send to every member
	// directHealth is this node's latest health report when it is too
	// large to gossip; reports replace each other.
	directHealth []byte
	senders      sync.WaitGroup // direct sends in flight

	wake      chan struct{}
	metaWake  chan struct{}
	stop      chan struct{}
	done      chan struct{}
	metaDone  chan struct{}
	closeOnce sync.Once
}

// NewCluster starts a node: it loads the document from StateDir, creates
// the memberlist (bound and gossiping, but alone until Join) and starts the
// loop and the health checker.
func NewCluster(cfg ClusterConfig) (*Cluster, error) {
	cfg.fillDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Cluster{
		cfg:      cfg,
		log:      cfg.Logger.With("node", cfg.NodeID),
		wake:     make(chan struct{}, 1),
		metaWake: make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		metaDone: make(chan struct{}),
	}
	store, err := NewStore(StoreConfig{Node: cfg.NodeID, Dir: cfg.StateDir, OnChange: c.storeChanged})
	if err != nil {
		return nil, err
	}
	c.store = store
	m, err := NewMachine(MachineConfig{
		Self:             MemberMeta{ID: cfg.NodeID, Pair: cfg.Pair, Backplane: cfg.Backplane, Proto: cfg.ProtoVersion},
		TableSize:        cfg.TableSize,
		ConfirmDeadTicks: uint64(max(1, cfg.ConfirmDead/cfg.Tick)),
		SettleTicks:      uint64(max(1, time.Second/cfg.Tick)),
		HealthSeqBase:    uint64(time.Now().UnixNano()),
	})
	if err != nil {
		return nil, err
	}
	c.machine = m
	c.withMachine(func(m *Machine) { m.SetConfig(store.Config()) })

	keyring, err := memberlist.NewKeyring(cfg.Keys, cfg.Keys[0])
	if err != nil {
		return nil, fmt.Errorf("cluster: keyring: %w", err)
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeID
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = cfg.BindPort
	mc.AdvertiseAddr = cfg.AdvertiseAddr
	mc.AdvertisePort = cfg.AdvertisePort
	if mc.AdvertisePort == 0 {
		mc.AdvertisePort = cfg.BindPort
	}
	mc.Keyring = keyring
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.SuspicionMult = cfg.SuspicionMult
	mc.SuspicionMaxTimeoutMult = cfg.SuspicionMaxMult
	mc.GossipInterval = cfg.GossipInterval
	mc.PushPullInterval = cfg.PushPullInterval
	mc.GossipToTheDeadTime = 5 * time.Second
	mc.TCPTimeout = cfg.TCPTimeout
	mc.Delegate = (*delegate)(c)
	mc.Events = (*events)(c)
	mc.Logger = nil
	mc.LogOutput = &logWriter{log: c.log}

	c.queue = &memberlist.TransmitLimitedQueue{RetransmitMult: mc.RetransmitMult, NumNodes: c.numNodes}
	list, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("cluster: starting memberlist: %w", err)
	}
	c.list = list
	c.listReady.Store(list)
	c.addr = list.LocalNode().Address() // before the loop can update the local node
	if !cfg.DisableHealthChecks {
		c.checker, err = NewChecker(CheckerConfig{Dialer: cfg.Dialer, Report: c.ReportProbe, Forget: func(s string) {
			c.withMachine(func(m *Machine) { m.ForgetProbe(s) })
		}})
		if err != nil {
			list.Shutdown()
			return nil, err
		}
		c.checker.Update(store.Config())
	}
	go c.loop()
	go c.metaLoop()
	c.kick()
	return c, nil
}

// numNodes sizes retransmissions. memberlist may gossip (and so call it)
// before Create has returned, hence the atomic.
func (c *Cluster) numNodes() int {
	if l := c.listReady.Load(); l != nil {
		return l.NumMembers()
	}
	return 1
}

// withMachine runs fn on the machine under mu and queues its effects.
func (c *Cluster) withMachine(fn func(*Machine)) {
	c.mu.Lock()
	fn(c.machine)
	c.pending = append(c.pending, c.machine.Ready()...)
	c.mu.Unlock()
	c.kick()
}

func (c *Cluster) kick() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *Cluster) loop() {
	defer close(c.done)
	tick := time.NewTicker(c.cfg.Tick)
	defer tick.Stop()
	gcEvery := max(1, int(c.cfg.GCEvery/c.cfg.Tick))
	n := 0
	configDigest := ""
	for {
		select {
		case <-c.stop:
			return
		case <-tick.C:
			n++
			if n%gcEvery == 0 {
				if k, err := c.store.GC(); err != nil {
					c.log.Warn("collecting tombstones", "err", err)
				} else if k > 0 {
					c.log.Info("collected tombstones", "count", k)
				}
			}
			c.withMachine((*Machine).Tick)
		case <-c.wake:
		}
		if d := c.store.Digest(); d != configDigest {
			configDigest = d
			cfg := c.store.Config()
			if c.checker != nil {
				c.checker.Update(cfg)
			}
			c.withMachine(func(m *Machine) { m.SetConfig(cfg) })
		}
		c.mu.Lock()
		effects := c.pending
		c.pending = nil
		c.mu.Unlock()
		for _, e := range effects {
			c.perform(e)
		}
		c.sendDirect()
	}
}

// updateNode publishes this node's metadata. memberlist's UpdateNode reads
// its local node without a lock, so calls must not overlap.
func (c *Cluster) updateNode(timeout time.Duration) error {
	c.updateMu.Lock()
	defer c.updateMu.Unlock()
	return c.list.UpdateNode(timeout)
}

// metaLoop publishes this node's metadata when it changed; several changes
// in a row are published once (NodeMeta reads the latest).
func (c *Cluster) metaLoop() {
	defer close(c.metaDone)
	for {
		select {
		case <-c.stop:
			return
		case <-c.metaWake:
			if err := c.updateNode(c.cfg.TCPTimeout); err != nil {
				c.log.Warn("publishing node metadata", "err", err)
			}
		}
	}
}

func (c *Cluster) perform(e Effect) {
	switch e := e.(type) {
	case Broadcast:
		c.broadcast(e.Msg)
	case UpdateMeta:
		// UpdateNode waits until the change is gossiped (a gossip
		// interval); metaLoop does it so tables and VIPs are not delayed.
		select {
		case c.metaWake <- struct{}{}:
		default:
		}
	default:
		c.cfg.Apply(e)
	}
}

// Join contacts seeds ("host:port"); it returns how many answered.
func (c *Cluster) Join(seeds []string) (int, error) {
	n, err := c.list.Join(seeds)
	if err != nil {
		return n, fmt.Errorf("joining %s: %w", strings.Join(seeds, ", "), err)
	}
	return n, nil
}

// Addr is the gossip address others join ("host:port").
func (c *Cluster) Addr() string { return c.addr }

// Store is the replicated configuration: the API reads it and edits it
// with Store.Update.
func (c *Cluster) Store() *Store { return c.store }

// ReportProbe records this node's verdict on a service (the health checker
// calls it; so can tests and external checkers).
func (c *Cluster) ReportProbe(service string, up bool) {
	c.withMachine(func(m *Machine) { m.LocalProbe(service, up) })
}

// Drain drains (true) or undrains this node.
func (c *Cluster) Drain(drained bool) {
	c.withMachine(func(m *Machine) { m.SetDrained(drained) })
}

// ErrNotMember is returned for a node id the cluster does not know as a
// live member.
var ErrNotMember = errors.New("no such live member")

// RequestDrain asks node id to drain (or undrain) itself; it arrives there
// as a DrainRequest effect. It returns once the request is delivered over
// memberlist's reliable channel, or an error when the node is not a live
// member or cannot be reached. The drain itself is not awaited: watch the
// node's Drained flag.
func (c *Cluster) RequestDrain(id string, drained bool) error {
	if id == c.cfg.NodeID {
		c.mu.Lock()
		c.pending = append(c.pending, DrainRequest{Drained: drained, From: id})
		c.mu.Unlock()
		c.kick()
		return nil
	}
	var to *memberlist.Node
	for _, mem := range c.Members() {
		if mem.ID == id && mem.State == StateAlive.String() && mem.Addr.IsValid() {
			to = &memberlist.Node{Name: mem.ID, Addr: mem.Addr.Addr().AsSlice(), Port: mem.Addr.Port()}
		}
	}
	if to == nil {
		return fmt.Errorf("drain %s: %w", id, ErrNotMember)
	}
	b, err := (&Message{Type: MsgDrain, From: c.cfg.NodeID, Target: id, Drained: drained}).Encode()
	if err != nil {
		return fmt.Errorf("encoding drain request: %w", err)
	}
	if err := c.list.SendReliable(to, b); err != nil {
		return fmt.Errorf("sending drain request to %s: %w", id, err)
	}
	return nil
}

// SetBGP publishes how many of this node's BGP sessions are established.
func (c *Cluster) SetBGP(up, peers int) {
	c.withMachine(func(m *Machine) { m.SetBGP(up, peers) })
}

// SetPairRole gossips this node's role in its pair and the epoch of the
// pair's ownership (see MemberMeta.PairRole).
func (c *Cluster) SetPairRole(role uint8, epoch uint64) {
	c.withMachine(func(m *Machine) { m.SetPairRole(role, epoch) })
}

// DeclareDead marks node id dead at once and tells the cluster: the partner
// calls it when the mirroring connection closed and a direct probe failed,
// without waiting for memberlist's suspicion.
func (c *Cluster) DeclareDead(id string) {
	if id == c.cfg.NodeID {
		return
	}
	c.withMachine(func(m *Machine) { m.DeclareDead(id) })
	msg := Message{Type: MsgDead, From: c.cfg.NodeID, Dead: id}
	c.broadcast(msg)
	// Also straight to every live member over TCP: every node must steer
	// the dead node's flows to its partner within about a second, and a
	// lost or late gossip packet must not delay that.
	b, err := msg.Encode()
	if err != nil {
		c.log.Error("encoding death declaration", "err", err)
		return
	}
	c.directMu.Lock()
	c.direct = append(c.direct, b)
	c.directMu.Unlock()
	c.kick()
}

// Members returns every member as this node sees it.
func (c *Cluster) Members() []MemberStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.machine.Members()
}

// Pairs returns the pairs.
func (c *Cluster) Pairs() []PairStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.machine.Pairs()
}

// Tables returns the current tables.
func (c *Cluster) Tables() []VServerTable {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.machine.Tables()
}

// Owner returns the owner pair and node of a client flow.
func (c *Cluster) Owner(addr netip.Addr, port uint16) (uint32, string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.machine.Owner(addr, port)
}

// Status is this node's view, for `show cluster` and `show node`.
type Status struct {
	Node         string          `json:"node"`
	ConfigDigest string          `json:"configDigest"`
	TablesDigest string          `json:"tablesDigest"`
	Synced       bool            `json:"synced"` // start-up convergence gate open
	Drained      bool            `json:"drained"`
	Announced    []netip.Addr    `json:"announced"`
	Members      []MemberStatus  `json:"members"`
	Pairs        []PairStatus    `json:"pairs"`
	Health       []ServiceHealth `json:"health"`
	// Problems are broken rules of the merged document; the vservers they
	// name are programmed nowhere until fixed.
	Problems []*RuleError `json:"problems,omitempty"`
}

// Status returns a snapshot of this node's view.
func (c *Cluster) Status() Status {
	probs := c.store.Problems()
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.machine
	return Status{
		Node: m.ID(), ConfigDigest: m.Meta().Digest, TablesDigest: m.TablesDigest(), Synced: m.Synced(),
		Drained: m.Meta().Drained, Announced: m.Announced(), Members: m.Members(), Pairs: m.Pairs(),
		Health: m.ServiceHealth(), Problems: probs,
	}
}

// Leave tells the cluster this node leaves (graceful), waiting up to
// timeout: it withdraws its VIPs (Apply gets the WithdrawVIP effects),
// publishes that it is leaving, then leaves memberlist, so the others
// forget it at once instead of keeping it as a dead member.
func (c *Cluster) Leave(timeout time.Duration) error {
	c.withMachine((*Machine).SetLeaving)
	if err := c.updateNode(timeout); err != nil {
		c.log.Warn("publishing the leave", "err", err)
	}
	// Our own leave notice, gossiped until fully retransmitted: it turns a
	// member the others already marked dead into one that left.
	b, err := (&Message{Type: MsgLeave, From: c.cfg.NodeID}).Encode()
	if err != nil {
		return fmt.Errorf("leaving: %w", err)
	}
	sent := make(chan struct{})
	c.queue.QueueBroadcast(&gossip{msg: b, done: sent})
	select {
	case <-sent:
	case <-time.After(timeout):
	}
	if err := c.list.Leave(timeout); err != nil {
		return fmt.Errorf("leaving: %w", err)
	}
	return nil
}

// Close stops the health checker, the loop and memberlist (without a
// graceful leave: call Leave first for that).
func (c *Cluster) Close() error {
	var err error
	c.closeOnce.Do(func() {
		if c.checker != nil {
			c.checker.Close()
		}
		close(c.stop)
		<-c.done
		<-c.metaDone
		c.senders.Wait()
		err = c.list.Shutdown()
	})
	return err
}
