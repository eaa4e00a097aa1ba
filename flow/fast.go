package flow

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
)

// The hit path (fast, in xdp_lb in flow/bpf/lb.c; xdp_full does the rest)
// rests on three maps, two of which the control plane keeps here:
//
//   - hot, a direct-mapped cache per CPU of stateless flows: the 5-tuple and
//     what a hit needs (backend address and port, checksum deltas, egress
//     interface and MACs, largest length the route accepted, vserver and
//     backend ids), written by the full path when it forwards a recorded
//     flow's second packet (an untracked flow's first), so that the next
//     packets cost no hash lookup and no function call. A colliding flow
//     takes the slot over; the flow table stays the record of every flow.
//   - cfg_gen, the cache generation: bumped after every change of a vserver,
//     a backend or the flow table made here, and every FIBCacheTTL. Hot
//     entries and FIB cache answers are used only under the generation they
//     were made in (read before the vserver and backend they come from), so
//     a configuration change reaches every flow at its next packet, and a
//     route or neighbour change within FIBCacheTTL, as without the cache.
//     Every active flow goes through the full path once per FIBCacheTTL,
//     which also refreshes its flow-table entry (seen time, LRU position):
//     a flow the LRU evicted meanwhile is recorded again then.
//   - addr_filter, one bit per hash of each VIP and bound service address:
//     a packet whose destination and source bits are both clear is neither
//     for a VIP nor from a service and passes without a hash lookup.

// addrFilterBits is ADDR_FILTER_BITS of flow/bpf/lb.h.
const addrFilterBits = 16

// filterBit is an address's bit in addr_filter: filter_bit4 in lb.c.
func filterBit(words [4]uint32, family uint8) uint32 {
	x := words[0] ^ words[1] ^ words[2] ^ words[3] ^ uint32(family)
	x ^= x >> 16
	x *= 0x85ebca6b
	x ^= x >> 13
	x *= 0xc2b2ae35
	x ^= x >> 16
	return x & (1<<addrFilterBits - 1)
}

// fastState is the Go side of cfg_gen and addr_filter. Guarded by
// Datapath.mu.
type fastState struct {
	gen      uint32
	filtered map[netip.Addr]bool // addresses whose bit is counted
	bits     map[uint32]int      // filtered addresses per bit
	stop     chan struct{}       // closed by Close: ends the generation ticker
}

func newFastState() fastState {
	return fastState{filtered: make(map[netip.Addr]bool), bits: make(map[uint32]int),
		stop: make(chan struct{})}
}

// hotSlots is the hot cache's slots per CPU for the BPF program: 0 when
// disabled (or without FIB cache, whose answers it copies).
func hotSlots(cfg Config) (uint32, error) {
	if cfg.HotCacheSize < 0 || cfg.FIBCacheTTL < 0 {
		return 0, nil
	}
	return uint32(cfg.HotCacheSize), nil
}

// startGenTicker bumps the cache generation every FIBCacheTTL, so that no
// hot entry outlives the route answer it copied.
func (d *Datapath) startGenTicker() {
	if d.cfg.FIBCacheTTL <= 0 {
		return
	}
	stop := d.fast.stop
	go func() {
		t := time.NewTicker(d.cfg.FIBCacheTTL)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			d.mu.Lock()
			if d.objs == nil {
				d.mu.Unlock()
				return
			}
			// A failed write leaves the old generation: the FIB cache's
			// own expiry still bounds route answers (not the hot cache's:
			// the next successful bump does).
			_ = d.bumpGen()
			d.mu.Unlock()
		}
	}()
}

// stopGenTicker ends the ticker (with d.mu held: it does not wait).
func (d *Datapath) stopGenTicker() { close(d.fast.stop) }

// checkFastSpec checks that the BPF object's filter has the size this file
// computes bits for.
func checkFastSpec(spec *ebpf.CollectionSpec) error {
	m, ok := spec.Maps["addr_filter"]
	if !ok {
		return fmt.Errorf("BPF object has no map %q", "addr_filter")
	}
	if want := uint32(1 << addrFilterBits / 64); m.MaxEntries != want {
		return fmt.Errorf("BPF object's addr_filter has %d words, Go computes bits for %d", m.MaxEntries, want)
	}
	return nil
}

// bumpGen invalidates every hot entry and FIB cache answer. Callers change
// the vservers, backends or flows maps first: a packet that reads the new
// generation then finds the new entries.
func (d *Datapath) bumpGen() error {
	d.fast.gen++
	if d.fast.gen == 0 { // 0 marks a flow without cache
		d.fast.gen = 1
	}
	key := uint32(0)
	if err := d.objs.CfgGen.Update(&key, &d.fast.gen, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("writing configuration generation: %w", err)
	}
	return nil
}

// filterAddr sets or clears an address's part of its addr_filter bit.
func (d *Datapath) filterAddr(a netip.Addr, on bool) error {
	if d.fast.filtered[a] == on {
		return nil
	}
	words, fam := addrWords(a)
	bit := filterBit(words, fam)
	if on {
		d.fast.filtered[a] = true
		d.fast.bits[bit]++
	} else {
		delete(d.fast.filtered, a)
		if d.fast.bits[bit]--; d.fast.bits[bit] <= 0 {
			delete(d.fast.bits, bit)
		}
	}
	idx := bit / 64
	var word uint64
	for b := idx * 64; b < idx*64+64; b++ {
		if d.fast.bits[b] > 0 {
			word |= 1 << (b % 64)
		}
	}
	if err := d.objs.AddrFilter.Update(&idx, &word, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("writing address filter for %s: %w", a, err)
	}
	return nil
}
