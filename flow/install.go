package flow

import (
	"encoding/binary"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/tandem-lb/tandem/flow/standby"
)

// A takeover: the partner's mirrored flows become this node's owned flows.
//
// At a million flows the kernel's LRU inserts are most of the time (a
// million in random order took 0.71 s with one writer, 0.43 s with two, on
// this machine), so InstallRecords reads the standby store's records in
// place, with no decoding into Entries, and writes each batch with two
// writers in parallel: the flow table's hash buckets have their own locks,
// and the LRU hands each CPU its own free list.

// installScratch holds InstallRecords' buffers between batches (d.mu held).
type installScratch struct {
	keys  []lbFlowKey
	vals  []lbFlow
	rkeys []lbFlowKey
	rvals []lbRflow
}

// beKey is a backend as the maps hold its address (addrWords), with its
// port (0: any port).
type beKey struct {
	addr [4]uint32
	fam  uint8
	port uint16
}

// replyKey is what decides whether a flow needs its own reply entry.
type replyKey struct {
	be    uint32
	port  uint16
	proto uint8
	vs    uint32
}

// InstallFlows writes mirrored flows into the flow table as owned flows of
// pair owner: InstallRecords for Entries (each is encoded first; one that
// cannot be encoded is skipped). Entries' VServerID are data-plane ids.
func (d *Datapath) InstallFlows(entries []standby.Entry, owner uint32) (int, error) {
	recs := make([]standby.Record, 0, len(entries))
	for i := range entries {
		var r standby.Record
		if entries[i].Encode(&r) == nil {
			recs = append(recs, r)
		}
	}
	return d.InstallRecords(recs, owner, nil)
}

// InstallRecords writes mirrored flows, as the standby store holds them,
// into the flow table as owned flows of pair owner: a takeover. It also
// writes the reply entries of source-NATed flows and of flows whose
// service's reverse entry names another vserver, and installs the FTP
// expectations among the records as expectations. ids maps the records'
// vserver ids (the cluster's) to this data plane's; a record whose id it
// lacks is skipped (nil: the ids are data-plane ids already). A record that
// is invalid, or whose vserver is not an owned vserver here, or whose
// backend (address and port, or address on any port) is unknown here, is
// skipped. It returns how many flows it installed (expectations not
// counted).
func (d *Datapath) InstallRecords(recs []standby.Record, owner uint32, ids map[uint32]uint32) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return 0, ErrClosed
	}
	byAddr := make(map[beKey]uint32, len(d.backends))
	for id, b := range d.backends {
		w, fam := addrWords(b.Addr)
		byAddr[beKey{w, fam, b.Port}] = id
	}
	replies := make(map[replyKey]bool)
	sc := &d.install
	keys, vals := sc.keys[:0], sc.vals[:0]
	rkeys, rvals := sc.rkeys[:0], sc.rvals[:0]
	conns := make(map[uint32]int64)
	var expects []standby.Entry
	mono := uint64(monoNow())
	// what the records' vservers are here: owned (installable), mirrored
	type vsInstall struct{ owned, mirror bool }
	vss := make(map[uint32]vsInstall)
	for i := range recs {
		r := &recs[i]
		if r.Validate() != nil {
			continue
		}
		vsID := r.VServerID()
		if ids != nil {
			id, ok := ids[vsID]
			if !ok {
				continue
			}
			vsID = id
		}
		flags := r.Flags()
		if flags&FlowFlagFTPExpect != 0 {
			if e, err := r.Decode(); err == nil {
				e.VServerID = vsID
				expects = append(expects, e)
			}
			continue
		}
		vi, ok := vss[vsID]
		if !ok {
			vs, ok := d.vservers[vsID]
			vi = vsInstall{owned: ok && vs.Owned, mirror: vs.Mirror}
			vss[vsID] = vi
		}
		if !vi.owned {
			continue
		}
		client, vip, backend, snat := r.RawAddrs()
		cport, vport, bport, sport := r.Ports()
		fam, proto := r.Family(), r.Proto()
		bw := rawWords(&backend)
		beID, ok := byAddr[beKey{bw, fam, bport}]
		if !ok {
			if beID, ok = byAddr[beKey{bw, fam, 0}]; !ok {
				continue
			}
		}
		src, dst := rawWords(&client), rawWords(&vip)
		k := lbFlowKey{Src: src, Dst: dst, Sport: htons(cport), Dport: htons(vport), Proto: proto, Family: fam}
		v := lbFlow{
			BackendId: beID, VsId: vsID,
			Flags:     (flags | FlowFlagOwned | FlowFlagInstalled) &^ (FlowFlagClosing | FlowFlagStateless | FlowFlagSNAT),
			Owner:     owner,
			CreatedNs: mono, SeenNs: mono,
		}
		if vi.mirror {
			v.Flags |= FlowFlagMirror
		}
		hasSNAT := r.HasSNAT()
		if hasSNAT {
			v.Flags |= FlowFlagSNAT
			v.Snat = rawWords(&snat)
			v.SnatPort = htons(sport)
		}
		// Reply entries only for source-NATed flows, and for flows whose
		// service's reverse entry names another vserver (a stateful
		// service may be bound to several): a reply to the client's own
		// address finds its flow from the service's reverse entry (lb.c,
		// handle_owned_reply), which records the reply entry then. Half
		// the kernel's work of a takeover is saved.
		needReply := hasSNAT
		if !needReply {
			rk := replyKey{beID, bport, proto, vsID}
			names, ok := replies[rk]
			if !ok {
				names = d.reverseNames(wordsAddr(bw, fam), bport, proto, vsID)
				replies[rk] = names
			}
			needReply = !names
		}
		if needReply {
			rk := lbFlowKey{Src: bw, Sport: htons(bport), Dst: src, Dport: k.Sport, Proto: proto, Family: fam}
			rv := lbRflow{Client: src, Vip: dst, ClientPort: k.Sport, Vport: k.Dport, VsId: vsID, BackendId: beID}
			if hasSNAT {
				rk.Dst, rk.Dport = v.Snat, v.SnatPort
				rv.Flags = FlowFlagSNAT
			}
			rkeys = append(rkeys, rk)
			rvals = append(rvals, rv)
		}
		keys = append(keys, k)
		vals = append(vals, v)
		conns[beID]++
	}
	sc.keys, sc.vals, sc.rkeys, sc.rvals = keys, vals, rkeys, rvals
	if len(expects) > 0 {
		if _, err := d.installExpectations(expects); err != nil {
			return 0, err
		}
	}
	if len(keys) == 0 {
		return 0, nil
	}
	if err := d.writeInstalled(keys, vals, rkeys, rvals); err != nil {
		return 0, err
	}
	for id, n := range conns {
		var c int64
		if err := d.objs.BeConns.Lookup(&id, &c); err == nil {
			c += n
			_ = d.objs.BeConns.Update(&id, &c, ebpf.UpdateAny)
		}
	}
	// an installed flow replaces any hot entry of its 5-tuple
	if err := d.bumpGen(); err != nil {
		return 0, err
	}
	return len(keys), nil
}

// parallelInstall is the batch size from which writeInstalled splits the
// kernel's work between two writers.
const parallelInstall = 256

// writeInstalled writes flows and reply entries, one batch update per map
// and writer; with enough of them, two writers each write half of each map.
func (d *Datapath) writeInstalled(keys []lbFlowKey, vals []lbFlow, rkeys []lbFlowKey, rvals []lbRflow) error {
	if len(keys)+len(rkeys) < parallelInstall {
		return d.writeFlows(keys, vals, rkeys, rvals)
	}
	h, rh := len(keys)/2, len(rkeys)/2
	errc := make(chan error, 1)
	go func() { errc <- d.writeFlows(keys[h:], vals[h:], rkeys[rh:], rvals[rh:]) }()
	err := d.writeFlows(keys[:h], vals[:h], rkeys[:rh], rvals[:rh])
	if err2 := <-errc; err == nil {
		err = err2
	}
	return err
}

func (d *Datapath) writeFlows(keys []lbFlowKey, vals []lbFlow, rkeys []lbFlowKey, rvals []lbRflow) error {
	if len(keys) > 0 {
		if _, err := d.objs.Flows.BatchUpdate(keys, vals, nil); err != nil {
			return fmt.Errorf("installing %d flows: %w", len(keys), err)
		}
	}
	if len(rkeys) > 0 {
		if _, err := d.objs.Rflows.BatchUpdate(rkeys, rvals, nil); err != nil {
			return fmt.Errorf("installing %d reply entries: %w", len(rkeys), err)
		}
	}
	return nil
}

// rawWords is addrWords for an address as a record stores it.
func rawWords(b *[16]byte) (w [4]uint32) {
	for i := range w {
		w[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return w
}

// RecordInstaller is what Installer needs of a data plane: *Datapath, or a
// node's view of it.
type RecordInstaller interface {
	InstallRecords(recs []standby.Record, owner uint32, ids map[uint32]uint32) (int, error)
}

// Installer adapts InstallRecords to standby.FlowInstaller for a takeover
// of pair Owner's flows.
type Installer struct {
	D     RecordInstaller
	Owner uint32
	// IDs maps the records' vserver ids (the cluster's) to the data
	// plane's; nil: they are data-plane ids already.
	IDs map[uint32]uint32
	// Installed counts the flows installed so far.
	Installed int
}

// InstallBatch implements standby.FlowInstaller.
func (in *Installer) InstallBatch(recs []standby.Record) error {
	n, err := in.D.InstallRecords(recs, in.Owner, in.IDs)
	in.Installed += n
	return err
}
