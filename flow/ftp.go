package flow

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"

	"github.com/tandem-lb/tandem/flow/alg"
	"github.com/tandem-lb/tandem/flow/standby"
)

// The FTP ALG in the data plane (the C side is ftp_alg, handle_ftp_data and
// handle_ftp_data_reply in flow/bpf/lb.c, the parser flow/bpf/ftp.h):
//
//   - a VServer with FTP set marks its VIP, and SetReverse marks the
//     addresses of its bound services, so that TCP to the VIP on a port
//     without vserver, and from such a backend on a port without reverse
//     entry, is looked at as a possible data connection;
//   - every backend bound to an FTP vserver gets a data backend: the same
//     address on any port, id DataBackendID(id). Data connections translate
//     addresses only (the backend listens on the port it advertised, and
//     connects from the port it chose), so their flows and mirror entries
//     name the data backend, and a partner's InstallFlows finds it by
//     address on any port like any backend of a service on "*";
//   - expectations live in an LRU hash (Config.FTPExpectations) for
//     Config.FTPExpectTTL; ALGCounters and Expectations observe them.

// DataBackendID is the id of the data backend of backend id: the same
// address on any port, for FTP data connections. It lies above
// MaxBackends, outside the ids callers allocate.
func (d *Datapath) DataBackendID(id uint32) uint32 { return id + d.cfg.MaxBackends }

// BaseBackendID is the inverse of DataBackendID: for the id of a data
// backend, the id of its backend and true; for any other id, id and false.
func (d *Datapath) BaseBackendID(id uint32) (uint32, bool) {
	if id >= d.cfg.MaxBackends {
		return id - d.cfg.MaxBackends, true
	}
	return id, false
}

// setDataBackend writes the data backend of b; d.mu is held.
func (d *Datapath) setDataBackend(b Backend) error {
	if !b.Addr.IsValid() {
		return fmt.Errorf("%w: data backend of unknown backend %d", ErrUnknownBackend, b.ID)
	}
	id := d.DataBackendID(b.ID)
	addr, fam := addrWords(b.Addr)
	val := lbBackend{Addr: addr, Family: fam, Flags: beFlagValid}
	if err := d.objs.Backends.Update(&id, &val, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("writing data backend of backend %d: %w", b.ID, err)
	}
	d.backends[id] = Backend{ID: id, Addr: b.Addr}
	return nil
}

// deleteDataBackend removes the data backend of backend id, if any; d.mu
// is held.
func (d *Datapath) deleteDataBackend(id uint32) error {
	did := d.DataBackendID(id)
	if _, ok := d.backends[did]; !ok {
		return nil
	}
	var zero lbBackend
	if err := d.objs.Backends.Update(&did, &zero, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("deleting data backend of backend %d: %w", id, err)
	}
	delete(d.backends, did)
	return nil
}

// algFTPReasons is ALG_FTP_REASONS of lb.h: alg_stats holds the lines of
// kind k and reason r at k*algFTPReasons + r.
const algFTPReasons = 8

var _ = [1]struct{}{}[lbAlgCounterALG_FTP_DATA_OPEN-5*algFTPReasons]
var _ = [1]struct{}{}[algFTPReasons-alg.ReasonMax-1]

// MaxFTPVIPs is how many FTP VIPs one backend address may serve
// (FTP_MAX_VIPS in lb.h): the data plane tries each to find the flow of a
// data connection whose reply entry a takeover did not install.
const MaxFTPVIPs = 4

// writeFTPVIPs writes the VIPs of the FTP vservers that backend address a
// is bound to; d.mu is held.
func (d *Datapath) writeFTPVIPs(a netip.Addr) error {
	words, fam := addrWords(a)
	k := lbAddrKey{Addr: words, Family: fam}
	var val lbFtpVipList
	seen := make(map[netip.Addr]bool)
	for rid, r := range d.reverses {
		if rid.addr != a || !d.ftpRev[rid] {
			continue
		}
		v, ok := d.vservers[r.VServerID]
		if !ok || seen[v.VIP] {
			continue
		}
		if val.N == MaxFTPVIPs {
			return fmt.Errorf("%w: backend %s serves more than %d FTP VIPs", ErrInvalidArgument, a, MaxFTPVIPs)
		}
		seen[v.VIP] = true
		val.Vip[val.N], _ = addrWords(v.VIP)
		val.N++
	}
	if val.N == 0 {
		if err := d.objs.FtpVips.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("forgetting the FTP VIPs of %s: %w", a, err)
		}
		return nil
	}
	if err := d.objs.FtpVips.Update(&k, &val, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("writing the FTP VIPs of %s: %w", a, err)
	}
	return nil
}

// ALGCounters are the FTP ALG's counters summed over CPUs.
type ALGCounters struct {
	// Lines counts the control lines the ALG acted on, by kind (PASV,
	// EPSV, PORT, EPRT) and reason: alg.ReasonOK made an expectation, any
	// other reason made none.
	Lines map[alg.Kind]map[alg.Reason]uint64
	// DataOpened: data connections opened by an expectation.
	DataOpened uint64
	// Expired: first packets that found their expectation past its TTL.
	Expired uint64
	// ExpectFailed: expectations that could not be stored.
	ExpectFailed uint64
	// DataRefused: expectations met whose backend was gone or for which no
	// SNAT port was free (the packet is dropped).
	DataRefused uint64
	// NotSYN: non-SYN TCP packets to an FTP VIP's port without vserver or
	// data connection (passed to the kernel).
	NotSYN uint64
}

// Refused sums the lines that made no expectation.
func (c ALGCounters) Refused() uint64 {
	var n uint64
	for _, byReason := range c.Lines {
		for r, v := range byReason {
			if r != alg.ReasonOK {
				n += v
			}
		}
	}
	return n
}

// ALGCounters reads the FTP ALG's counters.
func (d *Datapath) ALGCounters() (ALGCounters, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return ALGCounters{}, ErrClosed
	}
	read := func(i uint32) (uint64, error) {
		var per []uint64
		if err := d.objs.AlgStats.Lookup(&i, &per); err != nil {
			return 0, fmt.Errorf("reading ALG counter %d: %w", i, err)
		}
		var n uint64
		for _, v := range per {
			n += v
		}
		return n, nil
	}
	c := ALGCounters{Lines: make(map[alg.Kind]map[alg.Reason]uint64)}
	for k := alg.KindPASV; k <= alg.KindEPRT; k++ {
		for r := alg.ReasonOK; r < alg.ReasonMax; r++ {
			n, err := read(uint32(k)*algFTPReasons + uint32(r))
			if err != nil {
				return ALGCounters{}, err
			}
			if n == 0 {
				continue
			}
			if c.Lines[k] == nil {
				c.Lines[k] = make(map[alg.Reason]uint64)
			}
			c.Lines[k][r] = n
		}
	}
	for _, f := range []struct {
		i   lbAlgCounter
		dst *uint64
	}{
		{lbAlgCounterALG_FTP_DATA_OPEN, &c.DataOpened},
		{lbAlgCounterALG_FTP_EXPIRED, &c.Expired},
		{lbAlgCounterALG_FTP_EXPECT_FAIL, &c.ExpectFailed},
		{lbAlgCounterALG_FTP_DATA_REFUSED, &c.DataRefused},
		{lbAlgCounterALG_FTP_NOT_SYN, &c.NotSYN},
	} {
		n, err := read(uint32(f.i))
		if err != nil {
			return ALGCounters{}, err
		}
		*f.dst = n
	}
	return c, nil
}

// Expectation is an FTP data connection the data plane waits for, with the
// vserver it belongs to.
type Expectation struct {
	alg.Expectation
	VServerID uint32
	// BackendID is the data backend the connection goes to (passive) or
	// comes from (active).
	BackendID uint32
}

// Expectations lists the pending expectations. Their To port is 0 for
// active ones: the backend's source port is kept.
func (d *Datapath) Expectations() ([]Expectation, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return nil, ErrClosed
	}
	var out []Expectation
	var k lbExpectKey
	var v lbExpect
	it := d.objs.Expects.Iterate()
	for it.Next(&k, &v) {
		out = append(out, expectationOf(&k, &v))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading expectations: %w", err)
	}
	return out, nil
}

func expectationOf(k *lbExpectKey, v *lbExpect) Expectation {
	x := Expectation{
		Expectation: alg.Expectation{
			Kind:        alg.Kind(v.Kind),
			Src:         wordsAddr(k.Src, k.Family),
			Dst:         wordsAddr(k.Dst, k.Family),
			DstPort:     ntohs(k.Dport),
			ControlPort: ntohs(v.CtlPort),
			Deadline:    v.DeadlineNs,
		},
		VServerID: v.VsId,
		BackendID: v.BackendId,
	}
	to := wordsAddr(v.To, k.Family)
	if x.Kind.Passive() {
		x.To = netip.AddrPortFrom(to, x.DstPort)
	} else {
		x.To = netip.AddrPortFrom(to, 0)
	}
	return x
}

// Remaining is how long x still waits, by the data plane's clock.
func (x Expectation) Remaining() time.Duration {
	return time.Duration(int64(x.Deadline) - int64(monoNow()))
}

// Mirroring expectations. An expectation travels to the partner as a
// mirror entry (standby.Entry) with FlowFlagFTPExpect set and its kind in
// bits 8..10 of Flags, so that the mirroring protocol, the standby store and
// its TTL carry it unchanged:
//
//	passive: Client = client:0,    VIP = VIP:port, Backend = backend:port
//	active:  Client = client:port, VIP = VIP:0,    Backend = backend:0
//
// Port 0 never appears in a flow's key, so the entry never collides with a
// flow's. Created is when it was mirrored (Unix seconds) and IdleTimeout
// what was left of its TTL then (at least a second): the store forgets it
// when it would have expired, and InstallExpectations gives it only the
// time left.

// FlowFlagFTPExpect marks a mirror entry that carries an FTP expectation,
// not a flow. It is never set in the flow table.
const FlowFlagFTPExpect = 1 << 7

const expectKindShift = 8

// ErrNotExpectation: an entry that does not carry an expectation.
var ErrNotExpectation = errors.New("mirror entry is not an FTP expectation")

// IsExpectation reports whether a mirror entry carries an FTP expectation.
func IsExpectation(e *standby.Entry) bool { return e.Flags&FlowFlagFTPExpect != 0 }

// Entry encodes x as a mirror entry at wall-clock now and monotonic mono
// (the data plane's clock).
func (x Expectation) Entry(now time.Time, mono time.Duration) (standby.Entry, error) {
	if x.Kind == alg.KindNone || x.Kind > alg.KindEPRT {
		return standby.Entry{}, fmt.Errorf("%w: kind %v", ErrNotExpectation, x.Kind)
	}
	left := time.Duration(int64(x.Deadline) - int64(mono))
	secs := (left + time.Second - 1) / time.Second
	e := standby.Entry{
		Proto:       standby.ProtoTCP,
		VServerID:   x.VServerID,
		Flags:       FlowFlagFTPExpect | uint16(x.Kind)<<expectKindShift,
		Created:     uint32(now.Unix()),
		LastSeen:    uint32(now.Unix()),
		IdleTimeout: max(secs, 1) * time.Second,
	}
	if x.Kind.Passive() {
		e.Client = netip.AddrPortFrom(x.Src, 0)
		e.VIP = netip.AddrPortFrom(x.Dst, x.DstPort)
		e.Backend = netip.AddrPortFrom(x.To.Addr(), x.DstPort)
	} else {
		e.Client = netip.AddrPortFrom(x.Dst, x.DstPort)
		e.VIP = netip.AddrPortFrom(x.To.Addr(), 0)
		e.Backend = netip.AddrPortFrom(x.Src, 0)
	}
	return e, nil
}

// InstallExpectations writes the FTP expectations among mirrored entries
// into the expectations table, each with the time it had left; the others
// are ignored. An expectation whose vserver is not an FTP vserver here,
// whose backend has no data backend here, or whose time is up, is skipped.
// It returns how many were written. Entries' VServerID are data-plane ids.
func (d *Datapath) InstallExpectations(entries []standby.Entry) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return 0, ErrClosed
	}
	return d.installExpectations(entries)
}

// installExpectations is InstallExpectations with d.mu held.
func (d *Datapath) installExpectations(entries []standby.Entry) (int, error) {
	now, mono := time.Now(), monoNow()
	dataBE := make(map[netip.Addr]uint32)
	for id, b := range d.backends {
		if id >= d.cfg.MaxBackends {
			dataBE[b.Addr] = id
		}
	}
	n := 0
	for i := range entries {
		e := &entries[i]
		if !IsExpectation(e) {
			continue
		}
		kind := alg.Kind(e.Flags >> expectKindShift & 7)
		if v, ok := d.vservers[e.VServerID]; !ok || !v.FTP || kind == alg.KindNone || kind > alg.KindEPRT {
			continue
		}
		left := time.Unix(int64(e.Created), 0).Add(e.IdleTimeout).Sub(now)
		if left <= 0 {
			continue
		}
		beID, ok := dataBE[e.Backend.Addr().Unmap()]
		if !ok {
			continue
		}
		var k lbExpectKey
		v := lbExpect{DeadlineNs: uint64(mono + left), VsId: e.VServerID, BackendId: beID, Kind: uint8(kind)}
		if kind.Passive() {
			k.Src, k.Family = addrWords(e.Client.Addr())
			k.Dst, _ = addrWords(e.VIP.Addr())
			k.Dport = htons(e.VIP.Port())
			v.To, _ = addrWords(e.Backend.Addr())
		} else {
			k.Src, k.Family = addrWords(e.Backend.Addr())
			k.Dst, _ = addrWords(e.Client.Addr())
			k.Dport = htons(e.Client.Port())
			v.To, _ = addrWords(e.VIP.Addr())
		}
		if err := d.objs.Expects.Update(&k, &v, ebpf.UpdateAny); err != nil {
			return n, fmt.Errorf("installing an FTP expectation: %w", err)
		}
		n++
	}
	return n, nil
}

// ExpectationEntries calls fn with every pending expectation of a mirrored
// FTP vserver as a mirror entry, until fn returns false: the mirror's bulk
// sync and refresh carry them with the flows. The Datapath's lock is held:
// fn must not call the Datapath.
func (d *Datapath) ExpectationEntries(fn func(standby.Entry) bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return ErrClosed
	}
	now, mono := time.Now(), monoNow()
	var k lbExpectKey
	var v lbExpect
	it := d.objs.Expects.Iterate()
	for it.Next(&k, &v) {
		if vs, ok := d.vservers[v.VsId]; !ok || !vs.Mirror || !vs.FTP || v.DeadlineNs <= uint64(mono) {
			continue
		}
		e, err := expectationOf(&k, &v).Entry(now, mono)
		if err != nil {
			continue
		}
		if !fn(e) {
			return nil
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("reading expectations: %w", err)
	}
	return nil
}

// SweepExpectations deletes the expectations that can no longer be used:
// those past their deadline (the data plane ignores them, but they hold LRU
// slots), and those whose control connection is gone or closing (a data
// connection is opened while its control connection lives). Expectations
// installed by a takeover do not know their control connection's port and
// are left to their deadline. It returns how many were deleted. The
// control plane calls it periodically.
func (d *Datapath) SweepExpectations() (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return 0, ErrClosed
	}
	mono := uint64(monoNow())
	var dead []lbExpectKey
	var k lbExpectKey
	var v lbExpect
	it := d.objs.Expects.Iterate()
	for it.Next(&k, &v) {
		if v.DeadlineNs <= mono {
			dead = append(dead, k)
			continue
		}
		if v.CtlPort == 0 {
			continue
		}
		ck := lbFlowKey{Sport: v.CtlPort, Dport: v.CtlVport, Proto: uint8(ProtoTCP), Family: k.Family}
		if alg.Kind(v.Kind).Passive() {
			ck.Src, ck.Dst = k.Src, k.Dst // client -> VIP
		} else {
			ck.Src, ck.Dst = k.Dst, v.To // the client, the VIP
		}
		var f lbFlow
		if err := d.objs.Flows.Lookup(&ck, &f); err != nil || f.Flags&FlowFlagClosing != 0 {
			dead = append(dead, k)
		}
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("reading expectations: %w", err)
	}
	n := 0
	for i := range dead {
		if err := d.objs.Expects.Delete(&dead[i]); err == nil {
			n++
		} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
			return n, fmt.Errorf("deleting an expectation: %w", err)
		}
	}
	return n, nil
}
