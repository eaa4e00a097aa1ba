package flow

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
)

// Counters are a vserver's or a backend's per-CPU counters summed over CPUs.
type Counters struct {
	// Packets and Bytes went client -> backend; NewFlows of them made a flow.
	Packets, Bytes, NewFlows uint64
	// RevPackets and RevBytes went backend -> client (source rewritten).
	RevPackets, RevBytes uint64
	// Reasons counts packets by verdict reason: a vserver's packets, or, for
	// a backend, the packets once it was chosen (forwarded, no neighbour,
	// fib failures).
	Reasons map[Reason]uint64
}

// VServerCounters reads a vserver's counters.
func (d *Datapath) VServerCounters(id uint32) (Counters, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return Counters{}, ErrClosed
	}
	if id >= d.cfg.MaxVServers {
		return Counters{}, fmt.Errorf("%w: vserver id %d", ErrInvalidArgument, id)
	}
	var per []lbVsStats
	if err := d.objs.VserverStats.Lookup(&id, &per); err != nil {
		return Counters{}, fmt.Errorf("reading counters of vserver %d: %w", id, err)
	}
	return sumStats(per), nil
}

// BackendCounters reads a backend's counters.
func (d *Datapath) BackendCounters(id uint32) (Counters, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return Counters{}, ErrClosed
	}
	if id >= d.cfg.MaxBackends {
		return Counters{}, fmt.Errorf("%w: backend id %d", ErrInvalidArgument, id)
	}
	var per []lbBeStats
	if err := d.objs.BackendStats.Lookup(&id, &per); err != nil {
		return Counters{}, fmt.Errorf("reading counters of backend %d: %w", id, err)
	}
	// an FTP backend's data connections count under its data backend
	// (ftp.go): they are the backend's traffic too
	if did := d.DataBackendID(id); d.backends[did].ID == did {
		var data []lbBeStats
		if err := d.objs.BackendStats.Lookup(&did, &data); err != nil {
			return Counters{}, fmt.Errorf("reading counters of backend %d's data connections: %w", id, err)
		}
		per = append(per, data...)
	}
	vs := make([]lbVsStats, len(per))
	for i, s := range per {
		vs[i] = lbVsStats(s) // struct be_stats has vs_stats' layout
	}
	return sumStats(vs), nil
}

// sumStats adds up one object's per-CPU counters.
func sumStats(per []lbVsStats) Counters {
	c := Counters{Reasons: make(map[Reason]uint64)}
	for _, s := range per {
		c.Packets += s.Packets
		c.Bytes += s.Bytes
		c.NewFlows += s.NewFlows
		c.RevPackets += s.RevPackets
		c.RevBytes += s.RevBytes
		for r, n := range s.Reasons {
			if n != 0 {
				c.Reasons[Reason(r)] += n
			}
		}
	}
	return c
}

// Reasons reads the global packet counts by reason (zero counts omitted).
func (d *Datapath) Reasons() (map[Reason]uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return nil, ErrClosed
	}
	out := make(map[Reason]uint64)
	for r := uint32(0); r < uint32(numReasons); r++ {
		var per []uint64
		if err := d.objs.Reasons.Lookup(&r, &per); err != nil {
			return nil, fmt.Errorf("reading reason %s: %w", Reason(r), err)
		}
		var sum uint64
		for _, n := range per {
			sum += n
		}
		if sum != 0 {
			out[Reason(r)] = sum
		}
	}
	return out, nil
}

// FlowKey is the 5-tuple of a client -> VIP flow.
type FlowKey struct {
	Src, Dst netip.AddrPort // client, VIP:port
	Protocol Protocol       // TCP or UDP
}

// Flow is a flow-table entry.
type Flow struct {
	Key       FlowKey
	BackendID uint32
	VServerID uint32
	// Epoch is the epoch of the table the backend was taken from.
	Epoch uint32
	Flags uint16 // FlowFlag*
	Owner uint32 // owning pair of an owned flow (0: no pairs were set)
	// Created and Seen are CLOCK_MONOTONIC (coarse) times since boot; Seen is
	// refreshed at most once a second.
	Created, Seen time.Duration
}

func (k FlowKey) encode() (lbFlowKey, error) {
	if !k.Src.IsValid() || !k.Dst.IsValid() {
		return lbFlowKey{}, fmt.Errorf("%w: flow key %v", ErrInvalidArgument, k)
	}
	src, fs := addrWords(k.Src.Addr())
	dst, fd := addrWords(k.Dst.Addr())
	if fs != fd {
		return lbFlowKey{}, fmt.Errorf("%w: flow key mixes IP versions", ErrInvalidArgument)
	}
	return lbFlowKey{Src: src, Dst: dst, Sport: htons(k.Src.Port()), Dport: htons(k.Dst.Port()),
		Proto: uint8(k.Protocol), Family: fs}, nil
}

func decodeFlow(k lbFlowKey, v lbFlow) Flow {
	return Flow{
		Key: FlowKey{
			Src:      netip.AddrPortFrom(wordsAddr(k.Src, k.Family), ntohs(k.Sport)),
			Dst:      netip.AddrPortFrom(wordsAddr(k.Dst, k.Family), ntohs(k.Dport)),
			Protocol: Protocol(k.Proto),
		},
		BackendID: v.BackendId,
		VServerID: v.VsId,
		Epoch:     v.Epoch,
		Flags:     v.Flags,
		Owner:     v.Owner,
		Created:   time.Duration(v.CreatedNs),
		Seen:      time.Duration(v.SeenNs),
	}
}

// LookupFlow returns one flow-table entry, or ErrFlowNotFound.
func (d *Datapath) LookupFlow(k FlowKey) (Flow, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return Flow{}, ErrClosed
	}
	key, err := k.encode()
	if err != nil {
		return Flow{}, err
	}
	var v lbFlow
	if err := d.objs.Flows.Lookup(&key, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return Flow{}, fmt.Errorf("%v: %w", k, ErrFlowNotFound)
		}
		return Flow{}, fmt.Errorf("looking up flow %v: %w", k, err)
	}
	return decodeFlow(key, v), nil
}

// DeleteFlow removes a flow-table entry; its next packet is a miss.
func (d *Datapath) DeleteFlow(k FlowKey) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return ErrClosed
	}
	key, err := k.encode()
	if err != nil {
		return err
	}
	if err := d.objs.Flows.Delete(&key); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("%v: %w", k, ErrFlowNotFound)
		}
		return fmt.Errorf("deleting flow %v: %w", k, err)
	}
	// the flow's hot entries go with it
	return d.bumpGen()
}

// Flows returns every flow-table entry. The table changes while it is read:
// the result is a snapshot of no single instant.
func (d *Datapath) Flows() ([]Flow, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return nil, ErrClosed
	}
	var (
		out []Flow
		k   lbFlowKey
		v   lbFlow
	)
	it := d.objs.Flows.Iterate()
	for it.Next(&k, &v) {
		out = append(out, decodeFlow(k, v))
	}
	if err := it.Err(); err != nil {
		return out, fmt.Errorf("iterating flows: %w", err)
	}
	return out, nil
}
