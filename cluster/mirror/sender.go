package mirror

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/tandem-lb/tandem/flow/standby"
)

// Source gives the sender the flows this node owns and mirrors.
type Source interface {
	// Snapshot calls fn with every live STATEFUL flow this node owns, until
	// fn returns false. It is called from the sender's goroutine, for each
	// bulk sync and each refresh, while the data plane keeps changing; a
	// flow created or closed meanwhile must also be reported through
	// Sender.Upsert or Sender.Delete. It must not stall between entries
	// for longer than the heartbeat timeout, or the receiver drops the
	// link.
	Snapshot(fn func(standby.Entry) bool)
}

// Dialer opens the TCP connection to the partner (net.Dialer does).
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// LinkEventKind is what happened to a mirroring link.
type LinkEventKind uint8

const (
	// LinkEventUp: a connection was authenticated.
	LinkEventUp LinkEventKind = 1 + iota
	// LinkEventClosed: an authenticated connection closed or failed; for
	// the receiver this is the strong signal that its partner may be dead.
	LinkEventClosed
	// LinkEventRefused: the handshake failed (version, key, pair): the
	// peer gets no state. Err says why.
	LinkEventRefused
	// LinkEventSynced: bulk sync Gen completed (receiver: applied; sender:
	// acknowledged by the receiver).
	LinkEventSynced
)

func (k LinkEventKind) String() string {
	switch k {
	case LinkEventUp:
		return "up"
	case LinkEventClosed:
		return "closed"
	case LinkEventRefused:
		return "refused"
	case LinkEventSynced:
		return "synced"
	}
	return fmt.Sprintf("event(%d)", uint8(k))
}

// LinkEvent reports a link's change to whoever drives the PairMachine
// (PairMachine.Link takes it as is).
type LinkEvent struct {
	Kind LinkEventKind
	Peer string
	// Receiver: the event comes from this node's Receiver (it keeps the
	// peer's flows), else from its Sender.
	Receiver bool
	Gen      uint64
	// PeerVersion is the protocol version the peer announced, if known.
	PeerVersion uint16
	Err         error
}

// SenderConfig configures a Sender. Zero durations and sizes select the
// defaults in their comments.
type SenderConfig struct {
	// Self, Pair: this node's id and pair id. Partner: the node mirrored
	// to, at Addr (host:port). All required.
	Self    string
	Pair    uint32
	Partner string
	Addr    string
	// Auth is required: the channel is never open.
	Auth Auth
	// Source is required.
	Source Source
	// Dialer defaults to a net.Dialer.
	Dialer Dialer
	// BatchSize is the most records per frame (default 1024, at most
	// MaxBatch). Increments are sent when a batch fills or FlushInterval
	// after the first one was queued (default 1 ms).
	BatchSize     int
	FlushInterval time.Duration
	// RefreshPeriod: every live flow is re-sent this often, so entries the
	// partner's store dropped come back and idle ones stay (default 60 s).
	RefreshPeriod time.Duration
	// QueueLimit bounds queued changes (default 1<<20); beyond it they are
	// dropped and the link bulk-syncs again, which covers them.
	QueueLimit int
	// HeartbeatInterval: a heartbeat is sent after this long without
	// writing (default 200 ms); a link silent for HeartbeatTimeout is
	// dropped (default 1 s).
	HeartbeatInterval time.Duration
	HeartbeatTimeout  time.Duration
	// HandshakeTimeout bounds dialing and the handshake (default 2 s).
	HandshakeTimeout time.Duration
	// BackoffMin and BackoffMax bound the reconnection delay, doubled after
	// each failure, with jitter (defaults 50 ms, 2 s).
	BackoffMin time.Duration
	BackoffMax time.Duration
	// OnEvent, if set, is called with link events, from the sender's
	// goroutines; it must not block.
	OnEvent func(LinkEvent)
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (c *SenderConfig) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.BatchSize == 0 {
		c.BatchSize = 1024
	}
	if c.QueueLimit == 0 {
		c.QueueLimit = 1 << 20
	}
	def(&c.FlushInterval, time.Millisecond)
	def(&c.RefreshPeriod, 60*time.Second)
	def(&c.HeartbeatInterval, 200*time.Millisecond)
	def(&c.HeartbeatTimeout, time.Second)
	def(&c.HandshakeTimeout, 2*time.Second)
	def(&c.BackoffMin, 50*time.Millisecond)
	def(&c.BackoffMax, 2*time.Second)
	if c.Dialer == nil {
		c.Dialer = &net.Dialer{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func (c *SenderConfig) validate() error {
	if err := c.Auth.validate(); err != nil {
		return err
	}
	switch {
	case c.Self == "" || c.Partner == "" || c.Addr == "":
		return fmt.Errorf("%w: sender needs Self, Partner and Addr (got %q, %q, %q)", ErrInvalidConfig, c.Self, c.Partner, c.Addr)
	case len(c.Self) > MaxNodeID:
		return fmt.Errorf("%w: node id %q longer than %d bytes", ErrInvalidConfig, c.Self, MaxNodeID)
	case c.Source == nil:
		return fmt.Errorf("%w: sender needs a Source of flows", ErrInvalidConfig)
	case c.BatchSize < 1 || c.BatchSize > MaxBatch:
		return fmt.Errorf("%w: BatchSize %d must be between 1 and %d", ErrInvalidConfig, c.BatchSize, MaxBatch)
	case c.HeartbeatTimeout <= c.HeartbeatInterval:
		return fmt.Errorf("%w: HeartbeatTimeout %v must exceed HeartbeatInterval %v", ErrInvalidConfig, c.HeartbeatTimeout, c.HeartbeatInterval)
	case c.BackoffMin <= 0 || c.BackoffMax < c.BackoffMin:
		return fmt.Errorf("%w: backoff %v..%v must be positive and increasing", ErrInvalidConfig, c.BackoffMin, c.BackoffMax)
	case c.QueueLimit < c.BatchSize:
		return fmt.Errorf("%w: QueueLimit %d below BatchSize %d", ErrInvalidConfig, c.QueueLimit, c.BatchSize)
	}
	return nil
}

// change is a queued increment.
type change struct {
	del bool
	rec standby.Record
}

// Sender mirrors this node's flows to its partner: on every (re)connection
// a bulk sync of everything, then increments in batches, and a periodic
// refresh. Upsert and Delete may be called from any goroutine.
type Sender struct {
	cfg    SenderConfig
	status statusBox
	notify chan struct{}

	mu       sync.Mutex
	queue    []change
	spare    []change
	firstEnq time.Time // when the oldest queued change was queued
	overflow bool      // changes were dropped: bulk-sync again
	invalid  uint64
}

// NewSender returns a sender; Run starts it.
func NewSender(cfg SenderConfig) (*Sender, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Sender{cfg: cfg, notify: make(chan struct{}, 1)}
	s.status.st = Status{Role: "sender", Self: cfg.Self, Peer: cfg.Partner, PeerAddr: cfg.Addr, Pair: cfg.Pair, Auth: cfg.Auth.mode()}
	return s, nil
}

// Status returns a snapshot of the link.
func (s *Sender) Status() Status {
	st := s.status.get()
	s.mu.Lock()
	st.Invalid = s.invalid
	s.mu.Unlock()
	return st
}

// Upsert queues a new or changed flow. Entries that do not encode are
// counted and dropped.
func (s *Sender) Upsert(e standby.Entry) {
	s.mu.Lock()
	s.queue = append(s.queue, change{})
	if err := e.Encode(&s.queue[len(s.queue)-1].rec); err != nil {
		s.queue = s.queue[:len(s.queue)-1]
		s.invalid++
		s.mu.Unlock()
		return
	}
	s.queued()
}

// Delete queues a closed flow.
func (s *Sender) Delete(k standby.Key) {
	s.mu.Lock()
	s.queue = append(s.queue, change{del: true})
	copy(s.queue[len(s.queue)-1].rec[:], k[:])
	s.queued()
}

// queued finishes an enqueue; s.mu is held and released.
func (s *Sender) queued() {
	n := len(s.queue)
	if n == 1 {
		s.firstEnq = time.Now()
	}
	if n > s.cfg.QueueLimit {
		s.queue = s.queue[:0]
		s.overflow = true
		n = 1
	}
	s.mu.Unlock()
	// Wake the sender for the first change (it arms the flush timer) and
	// for every full batch.
	if n == 1 || n%s.cfg.BatchSize == 0 {
		select {
		case s.notify <- struct{}{}:
		default:
		}
	}
}

// take swaps the queue out.
func (s *Sender) take() ([]change, time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, t, o := s.queue, s.firstEnq, s.overflow
	s.queue, s.spare = s.spare[:0], nil
	s.overflow = false
	return q, t, o
}

func (s *Sender) giveBack(q []change) {
	s.mu.Lock()
	if s.spare == nil {
		s.spare = q[:0]
	}
	s.mu.Unlock()
}

func (s *Sender) event(ev LinkEvent) {
	if s.cfg.OnEvent != nil {
		s.cfg.OnEvent(ev)
	}
}

// Run connects, syncs and streams until ctx is done, reconnecting with
// backoff. It returns ctx's error.
func (s *Sender) Run(ctx context.Context) error {
	backoff := s.cfg.BackoffMin
	var gen uint64
	lastRefusal := "" // logged once per distinct reason, not per retry
	for {
		s.status.update(func(st *Status) { st.State = LinkConnecting })
		c, err := s.connect(ctx)
		if err == nil {
			backoff = s.cfg.BackoffMin
			lastRefusal = ""
			err = s.stream(ctx, c, &gen)
			c.nc.Close()
			s.status.update(func(st *Status) {
				st.Authenticated = false
				st.State = LinkDown
				st.Reason = errString(err, ctx)
			})
			s.event(LinkEvent{Kind: LinkEventClosed, Peer: s.cfg.Partner, Err: err})
			if ctx.Err() == nil {
				s.cfg.Logger.Warn("mirroring link closed", "peer", s.cfg.Partner, "err", err)
			}
		} else if ctx.Err() == nil {
			refused := errors.Is(err, ErrVersionMismatch) || errors.Is(err, ErrAuthFailed) || errors.Is(err, ErrNotPartner) || errors.Is(err, ErrRefused)
			s.status.update(func(st *Status) {
				st.Reason = err.Error()
				st.State = LinkDown
				if refused {
					st.State = LinkRefused
				}
			})
			if refused {
				if err.Error() != lastRefusal {
					s.cfg.Logger.Warn("mirroring peer refused", "peer", s.cfg.Partner, "addr", s.cfg.Addr, "err", err)
					lastRefusal = err.Error()
				}
				s.event(LinkEvent{Kind: LinkEventRefused, Peer: s.cfg.Partner, PeerVersion: s.Status().PeerVersion, Err: err})
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		delay := backoff/2 + rand.N(backoff/2+1)
		backoff = min(2*backoff, s.cfg.BackoffMax)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
}

func errString(err error, ctx context.Context) string {
	if ctx.Err() != nil {
		return "stopped"
	}
	if err == nil {
		return ""
	}
	return err.Error()
}

func (s *Sender) connect(ctx context.Context) (*conn, error) {
	dctx, cancel := context.WithTimeout(ctx, s.cfg.HandshakeTimeout)
	defer cancel()
	nc, err := s.cfg.Dialer.DialContext(dctx, "tcp", s.cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", s.cfg.Addr, err)
	}
	if s.cfg.Auth.TLS != nil {
		nc = tls.Client(nc, clientTLS(s.cfg.Auth.TLS, s.cfg.Partner))
	}
	p := handshakeParams{self: s.cfg.Self, pair: s.cfg.Pair, partner: s.cfg.Partner, auth: &s.cfg.Auth, timeout: s.cfg.HandshakeTimeout}
	c, err := dialHandshake(dctx, nc, &p)
	if c != nil {
		s.status.update(func(st *Status) { st.PeerVersion = c.peer.hello.Version })
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("handshake with %s at %s: %w", s.cfg.Partner, s.cfg.Addr, err)
	}
	s.status.update(func(st *Status) {
		st.Authenticated = true
		st.Connections++
		st.Reason = ""
		st.PeerAddr = nc.RemoteAddr().String()
	})
	s.event(LinkEvent{Kind: LinkEventUp, Peer: s.cfg.Partner})
	return c, nil
}

// inflight remembers when the oldest change of a sent frame was queued, to
// measure lag when its ack comes back.
type inflight struct {
	seq uint64
	enq time.Time
}

// writer is the sender's side of one connection.
type writer struct {
	s     *Sender
	c     *conn
	buf   []byte
	bw    BatchWriter
	op    FrameType // type of the open batch, 0 if none
	seq   uint64
	sent  uint64
	bytes uint64
	enq   time.Time // oldest change in the open batch

	mu       sync.Mutex
	inflight []inflight
	last     time.Time // last write
}

func (w *writer) open(t FrameType) {
	if w.op == t && w.bw.Len() < w.s.cfg.BatchSize {
		return
	}
	w.close()
	w.seq++
	w.buf = w.bw.Begin(w.buf[:0], t, w.seq)
	w.op = t
}

func (w *writer) close() error {
	if w.op == 0 {
		return nil
	}
	w.buf = w.bw.Finish(w.buf)
	w.op = 0
	w.sent += uint64(w.bw.Len())
	w.bytes += uint64(len(w.buf))
	if !w.enq.IsZero() {
		w.mu.Lock()
		w.inflight = append(w.inflight, inflight{w.seq, w.enq})
		w.mu.Unlock()
	}
	return w.c.writeFrame(w.buf)
}

func (w *writer) upsert(r *standby.Record) error {
	w.open(FrameUpserts)
	w.buf = w.bw.AddRecord(w.buf, r)
	if w.bw.Len() >= w.s.cfg.BatchSize {
		return w.close()
	}
	return nil
}

func (w *writer) delete(r *standby.Record) error {
	w.open(FrameDeletes)
	k := r.Key()
	w.buf = w.bw.AddKey(w.buf, &k)
	if w.bw.Len() >= w.s.cfg.BatchSize {
		return w.close()
	}
	return nil
}

func (w *writer) control(frame []byte) error {
	if err := w.close(); err != nil {
		return err
	}
	w.bytes += uint64(len(frame))
	return w.c.writeFrame(frame)
}

func (w *writer) flush() error {
	if err := w.close(); err != nil {
		return err
	}
	// A peer that stops reading fails the flush; a long bulk sync's
	// intermediate writes are bounded by the reader's heartbeat timeout,
	// which closes the connection.
	w.c.nc.SetWriteDeadline(time.Now().Add(w.s.cfg.HeartbeatTimeout))
	err := w.c.flush()
	w.c.nc.SetWriteDeadline(time.Time{})
	w.mu.Lock()
	w.last = time.Now()
	w.mu.Unlock()
	w.s.status.update(func(st *Status) {
		st.Entries = w.sent
		st.Bytes = w.bytes
	})
	return err
}

// snapshot streams every flow of the Source as upserts.
func (w *writer) snapshot() (count uint64, err error) {
	w.enq = time.Time{}
	var r standby.Record
	w.s.cfg.Source.Snapshot(func(e standby.Entry) bool {
		if e.Encode(&r) != nil {
			return true
		}
		if err = w.upsert(&r); err != nil {
			return false
		}
		count++
		return true
	})
	return count, err
}

// bulkSync sends a whole generation.
func (w *writer) bulkSync(gen uint64) error {
	// Everything queued so far is in the snapshot.
	q, _, _ := w.s.take()
	w.s.giveBack(q)
	w.s.status.update(func(st *Status) { st.State = LinkSyncing })
	if err := w.control(AppendBulkBegin(nil, gen)); err != nil {
		return err
	}
	n, err := w.snapshot()
	if err != nil {
		return err
	}
	if err := w.control(AppendBulkEnd(nil, gen, n)); err != nil {
		return err
	}
	return w.flush()
}

// drain sends the queued changes.
func (w *writer) drain(gen *uint64) error {
	q, first, overflow := w.s.take()
	defer w.s.giveBack(q)
	if overflow {
		*gen++
		return w.bulkSync(*gen)
	}
	if len(q) == 0 {
		return nil
	}
	w.enq = first
	for i := range q {
		var err error
		if q[i].del {
			err = w.delete(&q[i].rec)
		} else {
			err = w.upsert(&q[i].rec)
		}
		if err != nil {
			return err
		}
	}
	err := w.flush()
	w.enq = time.Time{}
	return err
}

func (s *Sender) stream(ctx context.Context, c *conn, gen *uint64) error {
	w := &writer{s: s, c: c, buf: make([]byte, 0, 64<<10), last: time.Now()}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	readErr := make(chan error, 1)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		err := s.readAcks(c, w)
		// Unblock a write stuck on a peer that stopped reading.
		c.nc.Close()
		readErr <- err
	}()
	stop := context.AfterFunc(ctx, func() { c.nc.Close() })
	defer stop()
	// The reader must not report on this connection once the next began.
	defer func() { c.nc.Close(); <-readDone }()

	*gen++
	cur := *gen
	if err := w.bulkSync(cur); err != nil {
		return fmt.Errorf("bulk sync %d: %w", cur, err)
	}
	refresh := time.NewTicker(s.cfg.RefreshPeriod)
	defer refresh.Stop()
	beat := time.NewTicker(s.cfg.HeartbeatInterval / 2)
	defer beat.Stop()
	flushT := time.NewTimer(time.Hour)
	flushT.Stop()
	armed := false
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-readErr:
			return err
		case <-s.notify:
			s.mu.Lock()
			n, overflow := len(s.queue), s.overflow
			s.mu.Unlock()
			if n < s.cfg.BatchSize && !overflow {
				if !armed {
					flushT.Reset(s.cfg.FlushInterval)
					armed = true
				}
				continue
			}
			if err := w.drain(gen); err != nil {
				return err
			}
		case <-flushT.C:
			armed = false
			if err := w.drain(gen); err != nil {
				return err
			}
		case <-refresh.C:
			if _, err := w.snapshot(); err != nil {
				return fmt.Errorf("refresh: %w", err)
			}
			if err := w.flush(); err != nil {
				return err
			}
		case <-beat.C:
			w.mu.Lock()
			idle := time.Since(w.last) >= s.cfg.HeartbeatInterval
			w.mu.Unlock()
			if idle {
				if err := w.control(AppendHeartbeat(nil, time.Now().UnixNano())); err != nil {
					return err
				}
				if err := w.flush(); err != nil {
					return err
				}
			}
		}
	}
}

// readAcks reads the receiver's acks and heartbeats.
func (s *Sender) readAcks(c *conn, w *writer) error {
	for {
		c.nc.SetReadDeadline(time.Now().Add(s.cfg.HeartbeatTimeout))
		t, p, err := c.readFrame()
		if err != nil {
			return fmt.Errorf("reading from %s: %w", s.cfg.Partner, err)
		}
		switch t {
		case FrameHeartbeat:
		case FrameAck:
			a, err := DecodeAck(p)
			if err != nil {
				return err
			}
			now := time.Now()
			var lag time.Duration
			w.mu.Lock()
			i := 0
			for i < len(w.inflight) && w.inflight[i].seq <= a.Seq {
				lag = now.Sub(w.inflight[i].enq)
				i++
			}
			w.inflight = append(w.inflight[:0], w.inflight[i:]...)
			w.mu.Unlock()
			var synced bool
			s.status.update(func(st *Status) {
				if i > 0 {
					st.Lag = lag
				}
				st.Acked = a.Seq
				if a.Synced > st.SyncGeneration {
					st.SyncGeneration = a.Synced
					st.LastBulkSync = now
					st.State = LinkStreaming
					synced = true
				}
			})
			if synced {
				s.event(LinkEvent{Kind: LinkEventSynced, Peer: s.cfg.Partner, Gen: a.Synced})
			}
		case FrameRefuse:
			r, err := DecodeRefuse(p)
			if err != nil {
				return err
			}
			return fmt.Errorf("%w: %v: %s", ErrRefused, r.Code, r.Reason)
		default:
			return fmt.Errorf("%w: unexpected %v frame from the receiver", ErrMalformed, t)
		}
	}
}
