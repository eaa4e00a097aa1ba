package flow

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/tandem-lb/tandem/flow/standby"
)

// EventKind is what happened to an owned flow of a mirrored vserver.
type EventKind uint8

const (
	// EventNew: the owner created the flow (first packet; SYN for TCP).
	EventNew = EventKind(lbEventTypeEVENT_NEW)
	// EventClose: the first FIN or RST of the flow was seen.
	EventClose = EventKind(lbEventTypeEVENT_CLOSE)
	// EventExpect: the FTP ALG created an expectation (ftp.go); Entry
	// carries it as a mirror entry (ExpectationEntry).
	EventExpect = EventKind(lbEventTypeEVENT_EXPECT)
)

func (k EventKind) String() string {
	switch k {
	case EventNew:
		return "new"
	case EventClose:
		return "close"
	case EventExpect:
		return "expect"
	}
	return fmt.Sprintf("event(%d)", uint8(k))
}

// FlowEvent is one record of the events ring.
type FlowEvent struct {
	Kind EventKind
	// Owner is the pair that owns the flow (0: no pairs were set).
	Owner uint32
	// Entry is the flow as the mirror carries it. Its Backend is known
	// only while the backend is set (else the event is reported with an
	// invalid Backend and ErrUnknownBackend).
	Entry standby.Entry
	// At is when the program saw the packet (CLOCK_MONOTONIC).
	At time.Duration
}

// ErrBadEvent: a ring-buffer record of the wrong size or kind.
var ErrBadEvent = errors.New("malformed flow event")

// EventReader reads the events ring. Read blocks; Close unblocks it. One
// goroutine reads; Close may be called from another.
type EventReader struct {
	d *Datapath
	r *ringbuf.Reader
}

// Events opens a reader of the events ring (there is one ring; open one
// reader).
func (d *Datapath) Events() (*EventReader, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return nil, ErrClosed
	}
	r, err := ringbuf.NewReader(d.objs.Events)
	if err != nil {
		return nil, fmt.Errorf("opening events ring: %w", err)
	}
	return &EventReader{d: d, r: r}, nil
}

// Close stops the reader; a blocked Read returns ringbuf.ErrClosed
// (errors.Is(err, os.ErrClosed)).
func (er *EventReader) Close() error { return er.r.Close() }

// SetDeadline makes Read return os.ErrDeadlineExceeded after t (zero: no
// deadline).
func (er *EventReader) SetDeadline(t time.Time) { er.r.SetDeadline(t) }

// Read waits for the next event. Events of vservers no longer set with
// Mirror are skipped (connFailover DISABLED frees the mirror at once, even
// for events already in the ring).
func (er *EventReader) Read() (FlowEvent, error) {
	for {
		rec, err := er.r.Read()
		if err != nil {
			return FlowEvent{}, err
		}
		ev, keep, err := er.decode(rec.RawSample)
		if err != nil || keep {
			return ev, err
		}
	}
}

// decodeEvent decodes one raw ring-buffer record (as the program writes it).
func decodeEvent(b []byte) (raw lbFlowEvent, err error) {
	if len(b) < int(unsafe.Sizeof(raw)) {
		return raw, fmt.Errorf("%w: %d bytes, want %d", ErrBadEvent, len(b), unsafe.Sizeof(raw))
	}
	raw = *(*lbFlowEvent)(unsafe.Pointer(&b[0]))
	if k := EventKind(raw.Type); k != EventNew && k != EventClose && k != EventExpect {
		return raw, fmt.Errorf("%w: kind %d", ErrBadEvent, raw.Type)
	}
	if raw.Family != familyV4 && raw.Family != familyV6 {
		return raw, fmt.Errorf("%w: family %d", ErrBadEvent, raw.Family)
	}
	return raw, nil
}

func (er *EventReader) decode(b []byte) (FlowEvent, bool, error) {
	raw, err := decodeEvent(b)
	if err != nil {
		return FlowEvent{}, true, err
	}
	k := lbFlowKey{Src: raw.Src, Dst: raw.Dst, Sport: raw.Sport, Dport: raw.Dport, Proto: raw.Proto, Family: raw.Family}
	v := lbFlow{BackendId: raw.BackendId, VsId: raw.VsId, Flags: raw.Flags, Snat: raw.Snat, SnatPort: raw.SnatPort}
	ev := FlowEvent{Kind: EventKind(raw.Type), Owner: raw.Owner, At: time.Duration(raw.TsNs)}
	d := er.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if vs, ok := d.vservers[raw.VsId]; !ok || !vs.Mirror {
		return ev, false, nil
	}
	now, mono := time.Now(), monoNow()
	if ev.Kind == EventExpect {
		ek := lbExpectKey{Src: raw.Src, Dst: raw.Dst, Dport: raw.Dport, Family: raw.Family}
		ex := lbExpect{To: raw.Snat, DeadlineNs: raw.TsNs, VsId: raw.VsId, BackendId: raw.BackendId, Kind: uint8(raw.Flags)}
		e, err := expectationOf(&ek, &ex).Entry(now, mono)
		ev.Entry = e
		return ev, true, err
	}
	v.CreatedNs, v.SeenNs = raw.TsNs, raw.TsNs
	e, ok := d.toEntry(&k, &v, now, mono)
	if !ok {
		e = standby.Entry{
			Proto:     raw.Proto,
			Client:    netip.AddrPortFrom(wordsAddr(raw.Src, raw.Family), ntohs(raw.Sport)),
			VIP:       netip.AddrPortFrom(wordsAddr(raw.Dst, raw.Family), ntohs(raw.Dport)),
			VServerID: raw.VsId,
		}
		ev.Entry = e
		return ev, true, fmt.Errorf("event for backend %d: %w", raw.BackendId, ErrUnknownBackend)
	}
	ev.Entry = e
	return ev, true, nil
}
