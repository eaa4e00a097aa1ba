package flow

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/tandem-lb/tandem/flow/standby"
)

// The stateful data path, driven from here (the C side is handle_owned,
// handle_owned_reply, steer and handle_decap in flow/bpf/lb.c):
//
//   - SetBackplane: this node's backplane address (outer source of steered
//     packets, where steered packets are accepted) and the cluster members'
//     (steered packets from any other source are dropped,
//     ReasonDropSteerPeer).
//   - SetPairs: the pairs, their liveness and active member, which one this
//     node is the active member of; the rendezvous owner of a flow is
//     hashing.Owner over the live ones.
//   - SetVServerBackends: the backend list of ROUNDROBIN and LEASTCONNECTION
//     vservers.
//   - Events / OwnedFlows: what the partner's mirror needs; InstallRecords
//     (install.go): a takeover of the partner's mirrored flows.
//
// Steering overhead: 36 bytes over an IPv4 backplane, 56 over IPv6 (outer
// IP, UDP, 8-byte Tandem header; the inner Ethernet header and VLAN tags are
// not carried). Give the backplane an MTU that much above the front's, or
// steered packets that do not fit are dropped (ReasonDropFragNeeded).

// DefaultSteerPort is the UDP port of the steering encapsulation when
// Config.SteerPort is 0.
const DefaultSteerPort = 6635

// MaxPairs is how many pairs SetPairs takes (MAX_PAIRS in lb.h).
const MaxPairs = 16

// MaxListBackends is how many backends a ROUNDROBIN or LEASTCONNECTION
// vserver's list holds (MAX_LIST in lb.h).
const MaxListBackends = 64

// Pair is a pair as the data plane steers to it.
type Pair struct {
	// ID is the pair id, a candidate of hashing.Owner.
	ID uint32
	// Live pairs are the candidates: a pair with no live member is not.
	Live bool
	// Active is the backplane address of the pair's active member, where
	// its flows are steered.
	Active netip.Addr
	// Local: this node is the pair's active member (it owns the pair's
	// flows; nothing is steered to itself).
	Local bool
	// SNIPs are the source addresses of the pair's USIP OFF flows, at most
	// one per family: a flow takes the SNIP of its own family (none of
	// that family: it is dropped, ReasonDropNoSNAT). SNATPorts is the
	// inclusive port range of each SNIP; the zero value means 1024-65535.
	SNIPs     []netip.Addr
	SNATPorts [2]uint16
}

// SetBackplane sets this node's backplane address and the backplane
// addresses of the cluster's members (this node's may be among them).
func (d *Datapath) SetBackplane(self netip.Addr, members []netip.Addr) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return ErrClosed
	}
	if !self.IsValid() {
		return fmt.Errorf("%w: no backplane address", ErrInvalidArgument)
	}
	want := make(map[netip.Addr]bool, len(members))
	for _, m := range members {
		if !m.IsValid() {
			return fmt.Errorf("%w: invalid member address", ErrInvalidArgument)
		}
		want[m.Unmap()] = true
	}
	old := d.members
	d.members = want
	if err := d.writeChanged(old, want); err != nil {
		return err
	}
	d.selfCfg.Addr, d.selfCfg.Family = addrWords(self)
	return d.writeSelf()
}

func (d *Datapath) writeSelf() error {
	zero := uint32(0)
	if err := d.objs.Self.Update(&zero, &d.selfCfg, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("writing steering config: %w", err)
	}
	return nil
}

// SetPairs replaces the pairs. Entries are written first, then their
// count: a packet in between may see a mix of old and new entries and steer
// to a former owner, which handles the packet as steered (never steering it
// again, ReasonSteerLoop).
func (d *Datapath) SetPairs(pairs []Pair) error {
	if len(pairs) > MaxPairs {
		return fmt.Errorf("%w: %d pairs, at most %d", ErrInvalidArgument, len(pairs), MaxPairs)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return ErrClosed
	}
	ids := make(map[uint32]bool, len(pairs))
	snips := make(map[netip.Addr]bool)
	vals := make([]lbPair, len(pairs))
	for i, p := range pairs {
		if ids[p.ID] {
			return fmt.Errorf("%w: pair %d listed twice", ErrInvalidArgument, p.ID)
		}
		ids[p.ID] = true
		v := lbPair{Id: p.ID}
		if p.Live {
			v.Flags |= pairFlagLive
		}
		if p.Local {
			v.Flags |= pairFlagLocal
		}
		if p.Active.IsValid() {
			v.Addr, v.Family = addrWords(p.Active)
		} else if p.Live && !p.Local {
			return fmt.Errorf("%w: live pair %d has no active member address to steer to", ErrInvalidArgument, p.ID)
		}
		for _, a := range p.SNIPs {
			if !a.IsValid() {
				return fmt.Errorf("%w: pair %d: invalid SNIP", ErrInvalidArgument, p.ID)
			}
			w, fam := addrWords(a)
			flag := uint8(pairFlagSNIP4)
			if fam == familyV6 {
				flag = pairFlagSNIP6
			}
			if v.Flags&flag != 0 {
				return fmt.Errorf("%w: pair %d: two SNIPs of one family (%v), at most one per family", ErrInvalidArgument, p.ID, a)
			}
			v.Flags |= flag
			if fam == familyV6 {
				v.Snip6 = w
			} else {
				v.Snip4 = w
			}
			snips[a.Unmap()] = true
		}
		if len(p.SNIPs) > 0 {
			v.SnatLo, v.SnatHi = p.SNATPorts[0], p.SNATPorts[1]
			if v.SnatLo == 0 && v.SnatHi == 0 {
				v.SnatLo, v.SnatHi = 1024, 65535
			}
			if v.SnatLo == 0 || v.SnatHi < v.SnatLo {
				return fmt.Errorf("%w: pair %d: SNAT ports %d-%d", ErrInvalidArgument, p.ID, v.SnatLo, v.SnatHi)
			}
		}
		vals[i] = v
	}
	for i := range vals {
		idx := uint32(i)
		if err := d.objs.Pairs.Update(&idx, &vals[i], ebpf.UpdateAny); err != nil {
			return fmt.Errorf("writing pair %d: %w", vals[i].Id, err)
		}
	}
	d.selfCfg.Npairs = uint32(len(pairs))
	if err := d.writeSelf(); err != nil {
		return err
	}
	old := d.snips
	d.snips = snips
	if err := d.writeChanged(old, snips); err != nil {
		return err
	}
	d.pairs = make([]Pair, len(pairs))
	for i, p := range pairs {
		p.SNIPs = append([]netip.Addr(nil), p.SNIPs...)
		d.pairs[i] = p
	}
	return nil
}

// Pairs returns what SetPairs last set.
func (d *Datapath) Pairs() []Pair {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Pair, len(d.pairs))
	for i, p := range d.pairs {
		p.SNIPs = append([]netip.Addr(nil), p.SNIPs...)
		out[i] = p
	}
	return out
}

// SetVServerBackends sets the backend list of a ROUNDROBIN or
// LEASTCONNECTION vserver (at most MaxListBackends ids, each set before;
// the order is the round-robin order, so give every node the same).
func (d *Datapath) SetVServerBackends(vsID uint32, ids []uint32) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return ErrClosed
	}
	if _, ok := d.vservers[vsID]; !ok {
		return fmt.Errorf("setting backends of vserver %d: %w", vsID, ErrUnknownVServer)
	}
	if len(ids) > MaxListBackends {
		return fmt.Errorf("%w: vserver %d: %d backends, at most %d", ErrInvalidArgument, vsID, len(ids), MaxListBackends)
	}
	var l lbBeList
	for i, id := range ids {
		if _, ok := d.backends[id]; !ok {
			return fmt.Errorf("setting backends of vserver %d: backend %d: %w", vsID, id, ErrUnknownBackend)
		}
		l.Ids[i] = id
	}
	l.N = uint32(len(ids))
	if err := d.objs.VsLists.Update(&vsID, &l, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("writing backends of vserver %d: %w", vsID, err)
	}
	d.lists[vsID] = append([]uint32(nil), ids...)
	return nil
}

// ActiveFlows returns the LEASTCONNECTION counter of a backend: the owned
// flows created towards it on this node and not yet closed (by FIN or RST;
// an entry the LRU evicts or that expires stays counted until
// ReconcileConns).
func (d *Datapath) ActiveFlows(beID uint32) (int64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return 0, ErrClosed
	}
	var n int64
	if err := d.objs.BeConns.Lookup(&beID, &n); err != nil {
		return 0, fmt.Errorf("reading active flows of backend %d: %w", beID, err)
	}
	return n, nil
}

// Idle times after which ReconcileConns no longer counts an owned flow as
// active (the standby store's default TTLs).
const (
	TCPIdleActive = 360 * time.Second
	UDPIdleActive = 120 * time.Second
)

// ReconcileConns recounts the LEASTCONNECTION counters from the flow table
// (owned flows not closing, seen within TCPIdleActive or UDPIdleActive)
// and writes them. The program keeps them by +1 on creation and -1 on the
// first FIN or RST; flows that end otherwise (UDP, idle TCP, LRU eviction)
// are only removed by a recount, which the control plane runs
// periodically. A flow created during the recount may be counted once
// less until the next one.
func (d *Datapath) ReconcileConns() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return ErrClosed
	}
	now := uint64(monoNow())
	counts := make(map[uint32]int64)
	err := d.iterateFlows(func(k *lbFlowKey, v *lbFlow) bool {
		idle := uint64(TCPIdleActive)
		if k.Proto == uint8(ProtoUDP) {
			idle = uint64(UDPIdleActive)
		}
		if v.Flags&FlowFlagOwned != 0 && v.Flags&FlowFlagClosing == 0 && now-v.SeenNs < idle {
			counts[v.BackendId]++
		}
		return true
	})
	if err != nil {
		return err
	}
	for id := range d.backends {
		n := counts[id]
		if err := d.objs.BeConns.Update(&id, &n, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("writing active flows of backend %d: %w", id, err)
		}
	}
	return nil
}

// iterateFlows calls fn for every flow-table entry, read in batches. d.mu
// is held by the caller.
func (d *Datapath) iterateFlows(fn func(k *lbFlowKey, v *lbFlow) bool) error {
	const batch = 4096
	keys := make([]lbFlowKey, batch)
	vals := make([]lbFlow, batch)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := d.objs.Flows.BatchLookup(&cursor, keys, vals, nil)
		for i := 0; i < n; i++ {
			if !fn(&keys[i], &vals[i]) {
				return nil
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading flows: %w", err)
		}
	}
}

// monoNow is CLOCK_MONOTONIC, the clock of bpf_ktime_get_coarse_ns.
func monoNow() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// toEntry makes a mirror entry of an owned flow; d.mu is held.
func (d *Datapath) toEntry(k *lbFlowKey, v *lbFlow, now time.Time, mono time.Duration) (standby.Entry, bool) {
	be, ok := d.backends[v.BackendId]
	if !ok {
		return standby.Entry{}, false
	}
	dport := ntohs(k.Dport)
	bport := be.Port
	if bport == 0 {
		bport = dport
	}
	unixAt := func(ns uint64) uint32 {
		return uint32(now.Add(time.Duration(ns) - mono).Unix())
	}
	e := standby.Entry{
		Proto:     k.Proto,
		Client:    netip.AddrPortFrom(wordsAddr(k.Src, k.Family), ntohs(k.Sport)),
		VIP:       netip.AddrPortFrom(wordsAddr(k.Dst, k.Family), dport),
		Backend:   netip.AddrPortFrom(be.Addr, bport),
		VServerID: v.VsId,
		Flags:     v.Flags &^ (FlowFlagInstalled | FlowFlagClosing),
		Created:   unixAt(v.CreatedNs),
		LastSeen:  unixAt(v.SeenNs),
	}
	if v.Flags&FlowFlagSNAT != 0 {
		e.SNAT = netip.AddrPortFrom(wordsAddr(v.Snat, k.Family), ntohs(v.SnatPort))
	}
	return e, true
}

// OwnedFlows calls fn with every live mirrored flow this node owns (owned,
// of a vserver still set with Mirror, not closing), reading the flow table
// in batches, until fn returns false. It is the mirror Sender's Source. The
// Datapath's lock is held meanwhile: fn must not call the Datapath.
func (d *Datapath) OwnedFlows(fn func(standby.Entry) bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return ErrClosed
	}
	now, mono := time.Now(), monoNow()
	return d.iterateFlows(func(k *lbFlowKey, v *lbFlow) bool {
		const want = FlowFlagOwned | FlowFlagMirror
		if v.Flags&want != want || v.Flags&FlowFlagClosing != 0 {
			return true
		}
		if vs, ok := d.vservers[v.VsId]; !ok || !vs.Mirror {
			return true
		}
		e, ok := d.toEntry(k, v, now, mono)
		if !ok {
			return true
		}
		return fn(e)
	})
}

// FlowSource adapts OwnedFlows to the mirror Sender's Source interface
// (Snapshot(fn func(standby.Entry) bool)).
type FlowSource struct{ D *Datapath }

// Snapshot implements cluster/mirror.Source.
func (s FlowSource) Snapshot(fn func(standby.Entry) bool) { _ = s.D.OwnedFlows(fn) }

// reverseNames reports whether the reverse entry of the service at
// (addr, port, proto) names vserver vs, so that a reply finds the flow
// from it (d.mu held).
func (d *Datapath) reverseNames(addr netip.Addr, port uint16, proto uint8, vs uint32) bool {
	for _, p := range []Protocol{Protocol(proto), ProtoAny} {
		if r, ok := d.reverses[reverseID{addr, port, p}]; ok {
			return r.VServerID == vs
		}
	}
	return false
}
