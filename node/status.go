package node

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tandem-lb/tandem/cluster"
	"github.com/tandem-lb/tandem/flow"
	"github.com/tandem-lb/tandem/node/api"
	"github.com/tandem-lb/tandem/node/metrics"
)

// ErrRemoteDrain is returned when draining another node is asked of this
// one: drain it through its own API. It matches api.ErrMisdirected (421).
var ErrRemoteDrain = fmt.Errorf("this node drains only itself: %w", api.ErrMisdirected)

// ErrStarting is returned while the node is starting. It matches
// api.ErrUnavailable (503).
var ErrStarting = fmt.Errorf("the node is starting: %w", api.ErrUnavailable)

// status answers the API's show commands and the metrics scrapes from the
// daemon's components. Its methods are safe for concurrent use.
type status struct{ d *Daemon }

var (
	_ api.StatusSource = status{}
	_ api.Drainer      = status{}
	_ metrics.Source   = status{}
)

func (s status) sessions(ctx context.Context) []api.BGPSession {
	sp := s.d.speaker()
	if sp == nil {
		return nil
	}
	peers, err := sp.Peers(ctx)
	if err != nil {
		return nil
	}
	n := len(sp.Announced())
	out := make([]api.BGPSession, 0, len(peers))
	for _, p := range peers {
		sess := api.BGPSession{Peer: p.Address.String(), PeerAS: p.AS, State: strings.ToUpper(p.State), Graceful: sp.Draining()}
		if p.Established {
			sess.Prefixes = n
		}
		out = append(out, sess)
	}
	return out
}

func memberOf(m cluster.MemberStatus) api.Member {
	return api.Member{
		ID: m.ID, Addr: m.Addr.String(), Pair: m.Pair, State: api.MemberState(m.State),
		Digest: m.Digest, ProtoVersion: int(m.ProtoVersion), Drained: m.Drained,
		BGPUp: m.BGPUp, BGPPeers: m.BGPPeers,
	}
}

// Cluster implements api.StatusSource.
func (s status) Cluster(ctx context.Context) (api.ClusterStatus, error) {
	cl := s.d.membership()
	if cl == nil {
		return api.ClusterStatus{}, fmt.Errorf("not in the cluster yet: %w", ErrStarting)
	}
	st := cl.Status()
	out := api.ClusterStatus{Self: st.Node}
	for _, m := range st.Members {
		am := memberOf(m)
		if m.Self || m.ID == st.Node {
			am.BGP = s.sessions(ctx)
		}
		out.Members = append(out.Members, am)
	}
	for _, p := range st.Pairs {
		out.Pairs = append(out.Pairs, api.Pair{ID: p.ID, Members: p.Members, Active: p.Active, Protected: p.Protected})
	}
	return out, nil
}

// Node implements api.StatusSource.
func (s status) Node(ctx context.Context, id string) (api.NodeStatus, error) {
	cs, err := s.Cluster(ctx)
	if err != nil {
		return api.NodeStatus{}, err
	}
	for _, m := range cs.Members {
		if m.ID != id {
			continue
		}
		ns := api.NodeStatus{Member: m}
		for _, p := range cs.Pairs {
			if p.ID == m.Pair {
				for _, o := range p.Members {
					if o != id {
						ns.Partner = o
					}
				}
			}
		}
		if id == cs.Self {
			ns.VIPs = s.d.announcedVIPs()
			cnt, err := s.Counters(ctx)
			if err == nil {
				for _, c := range cnt.VServers {
					ns.Counters = ns.Counters.Add(c)
				}
			}
		}
		return ns, nil
	}
	return api.NodeStatus{}, fmt.Errorf("node %q: %w", id, api.ErrNotFound)
}

// RPCNodes implements api.StatusSource: this node's mirroring link to its
// partner (none before the pair has one).
func (s status) RPCNodes(ctx context.Context) ([]api.RPCNode, error) {
	s.d.mu.Lock()
	st := s.d.stateful
	s.d.mu.Unlock()
	if st == nil {
		return []api.RPCNode{}, nil
	}
	return st.RPCNodes(), nil
}

// Tables implements api.StatusSource: the cluster's tables with the data
// plane's epochs.
func (s status) Tables(ctx context.Context) ([]api.Table, error) {
	cl := s.d.membership()
	if cl == nil {
		return nil, nil
	}
	epochs := s.d.programmer.Epochs()
	var out []api.Table
	for _, t := range cl.Tables() {
		out = append(out, api.Table{VServer: t.VServer, Epoch: epochs[t.VServer], Seed: t.Seed, WithPort: t.WithPort, Backends: t.Backends, Slots: t.Slots})
	}
	return out, nil
}

func drops(c map[string]uint64) uint64 {
	var n uint64
	for r, v := range c {
		if strings.HasPrefix(r, "drop_") {
			n += v
		}
	}
	return n
}

// traffic reads the data plane's counters by vserver and backend name.
func (s status) traffic() (vservers, backends []metrics.Traffic, err error) {
	vsIDs, beIDs := s.d.programmer.IDs()
	var errs []error
	for name, id := range vsIDs {
		c, err := s.d.dp.VServerCounters(id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		t := metrics.Traffic{Name: name, Packets: c.Packets, Bytes: c.Bytes, NewFlows: c.NewFlows, ReplyPackets: c.RevPackets, ReplyBytes: c.RevBytes, Reasons: map[string]uint64{}}
		for r, n := range c.Reasons {
			t.Reasons[r.String()] = n
		}
		vservers = append(vservers, t)
	}
	for name, id := range beIDs {
		c, err := s.d.dp.BackendCounters(id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		backends = append(backends, metrics.Traffic{Name: name, Packets: c.Packets, Bytes: c.Bytes, NewFlows: c.NewFlows, ReplyPackets: c.RevPackets, ReplyBytes: c.RevBytes})
	}
	sort.Slice(vservers, func(i, j int) bool { return vservers[i].Name < vservers[j].Name })
	sort.Slice(backends, func(i, j int) bool { return backends[i].Name < backends[j].Name })
	return vservers, backends, errors.Join(errs...)
}

// Counters implements api.StatusSource. Backend counters are per service
// (the data plane counts a backend once, whatever vserver sent to it), so
// each bound service shows its total under every vserver it is bound to.
func (s status) Counters(ctx context.Context) (api.CounterSet, error) {
	vs, be, err := s.traffic()
	out := api.CounterSet{VServers: map[string]api.Counters{}, Backends: map[string]map[string]api.Counters{}}
	for _, v := range vs {
		out.VServers[v.Name] = api.Counters{Packets: v.Packets, Bytes: v.Bytes, NewFlows: v.NewFlows, Drops: drops(v.Reasons)}
	}
	byName := map[string]api.Counters{}
	for _, b := range be {
		byName[b.Name] = api.Counters{Packets: b.Packets, Bytes: b.Bytes, NewFlows: b.NewFlows}
	}
	if cl := s.d.membership(); cl != nil {
		cfg := cl.Store().Config()
		for _, b := range cfg.Bindings {
			c, ok := byName[b.Service]
			if !ok {
				continue
			}
			if out.Backends[b.VServer] == nil {
				out.Backends[b.VServer] = map[string]api.Counters{}
			}
			out.Backends[b.VServer][b.Service] = c
		}
	}
	return out, err
}

// Health implements api.StatusSource.
func (s status) Health(ctx context.Context) (map[string]api.Health, error) {
	out := map[string]api.Health{}
	cl := s.d.membership()
	if cl == nil {
		return out, nil
	}
	for _, h := range cl.Status().Health {
		if h.Voters == 0 {
			out[h.Service] = api.HealthUnknown
		} else if h.Up {
			out[h.Service] = api.HealthUp
		} else {
			out[h.Service] = api.HealthDown
		}
	}
	return out, nil
}

// Connections implements api.StatusSource: this node's flow table. Other
// nodes' flows are theirs to list (ask their API).
func (s status) Connections(ctx context.Context, f api.ConnFilter) ([]api.Conn, error) {
	out := []api.Conn{}
	if f.Node != "" && f.Node != s.d.cfg.NodeID {
		return out, nil
	}
	flows, err := s.d.dp.Flows()
	if err != nil {
		return nil, fmt.Errorf("reading the flow table: %w", err)
	}
	vsNames, backends := s.d.programmer.Names()
	now := monotonicNow()
	for _, fl := range flows {
		vs := vsNames[fl.VServerID]
		if f.VServer != "" && vs != f.VServer {
			continue
		}
		c := api.Conn{Node: s.d.cfg.NodeID, VServer: vs, Proto: fl.Key.Protocol.String(), Client: fl.Key.Src, VIP: fl.Key.Dst,
			Owner: fl.Owner, Mirrored: fl.Flags&flow.FlowFlagMirror != 0}
		// An FTP data connection names its backend's data backend (the
		// same address, the port kept: the flow's destination port).
		id, data := s.d.dp.BaseBackendID(fl.BackendID)
		if b, ok := backends[id]; ok {
			port := b.Port
			if port == 0 || data { // a service on "*" keeps the destination port
				port = fl.Key.Dst.Port()
			}
			c.Service, c.Backend = b.Service, netip.AddrPortFrom(b.Addr, port)
		}
		if now > fl.Created {
			c.Age = now - fl.Created
		}
		if now > fl.Seen {
			c.Idle = now - fl.Seen
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].VServer != out[j].VServer {
			return out[i].VServer < out[j].VServer
		}
		return out[i].Client.Compare(out[j].Client) < 0
	})
	return out, nil
}

// monotonicNow is CLOCK_MONOTONIC, the clock of the flow table's times.
func monotonicNow() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// Drain implements api.Drainer: this node drains at once; another live
// member is asked through the cluster and drains itself.
func (s status) Drain(ctx context.Context, node string) error {
	if err := s.self(node); err != nil {
		return s.remoteDrain(node, true, err)
	}
	return s.d.Drain(ctx)
}

// Undrain implements api.Drainer, like Drain.
func (s status) Undrain(ctx context.Context, node string) error {
	if err := s.self(node); err != nil {
		return s.remoteDrain(node, false, err)
	}
	return s.d.Undrain(ctx)
}

// remoteDrain forwards a drain to another member when the cluster can
// (cluster.Cluster.RequestDrain); otherwise it returns notSelf.
func (s status) remoteDrain(node string, drained bool, notSelf error) error {
	if !errors.Is(notSelf, ErrRemoteDrain) {
		return notSelf
	}
	rd, ok := s.d.membership().(drainRequester)
	if !ok {
		return notSelf
	}
	if err := rd.RequestDrain(node, drained); err != nil {
		// Dead, leaving or unreachable: nothing to drain there now.
		return fmt.Errorf("%w: %w", err, api.ErrUnavailable)
	}
	return nil
}

func (s status) self(node string) error {
	if node == s.d.cfg.NodeID {
		return nil
	}
	if cl := s.d.membership(); cl != nil {
		for _, m := range cl.Status().Members {
			if m.ID == node {
				return fmt.Errorf("drain %s: %w; ask %s's own API (clusterctl --node ITS-API drain node %s)", node, ErrRemoteDrain, node, node)
			}
		}
	}
	return fmt.Errorf("node %q: %w", node, api.ErrNotFound)
}

// Snapshot implements metrics.Source.
func (s status) Snapshot(ctx context.Context) (metrics.Snapshot, error) {
	var snap metrics.Snapshot
	var errs []error
	vs, be, err := s.traffic()
	snap.VServers, snap.Backends = vs, be
	if err != nil {
		errs = append(errs, err)
	}
	if sp := s.d.speaker(); sp != nil {
		peers, err := sp.Peers(ctx)
		if err != nil {
			errs = append(errs, err)
		}
		for _, p := range peers {
			snap.Peers = append(snap.Peers, metrics.Peer{Address: p.Address.String(), AS: p.AS, State: p.State, Established: p.Established})
		}
		snap.Announced = len(sp.Announced())
		snap.Draining = sp.Draining()
	}
	if cl := s.d.membership(); cl != nil {
		st := cl.Status()
		snap.Members = map[string]int{}
		for _, m := range st.Members {
			snap.Members[m.State]++
		}
		snap.ConfigDigest = st.ConfigDigest
		snap.ConfigProblems = len(st.Problems)
		snap.BackendUp = map[string]bool{}
		for _, h := range st.Health {
			if h.Voters > 0 {
				snap.BackendUp[h.Service] = h.Up
			}
		}
	}
	snap.TableEpochs = s.d.programmer.Epochs()
	s.d.mu.Lock()
	snap.DataPlaneLag = s.d.dirty
	st := s.d.stateful
	s.d.mu.Unlock()
	if st != nil {
		f := st.Failover()
		snap.Failover = &f
	}
	if a, ok := s.d.dp.(algCounterSource); ok {
		c, err := a.ALGCounters()
		if err != nil {
			errs = append(errs, err)
		} else {
			snap.ALG = algMetrics(c)
		}
	}
	return snap, errors.Join(errs...)
}

// algCounterSource is the FTP ALG's counters (*flow.Datapath).
type algCounterSource interface {
	ALGCounters() (flow.ALGCounters, error)
}

func algMetrics(c flow.ALGCounters) *metrics.ALG {
	a := &metrics.ALG{Events: map[string]uint64{
		"data_opened": c.DataOpened, "expired": c.Expired, "expect_failed": c.ExpectFailed,
		"data_refused": c.DataRefused, "not_syn": c.NotSYN,
	}}
	for k, byReason := range c.Lines {
		for r, n := range byReason {
			a.Lines = append(a.Lines, metrics.ALGLine{Kind: k.String(), Reason: r.String(), N: n})
		}
	}
	return a
}

// prefixOf is the host prefix of a VIP.
func prefixOf(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen())
}
