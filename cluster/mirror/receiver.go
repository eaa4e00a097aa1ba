package mirror

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/tandem-lb/tandem/flow/standby"
)

// Sink keeps what a partner mirrors (standby.Store implements it). Calls
// for one owner come from one goroutine, in the order the owner sent them.
type Sink interface {
	// BeginSync and EndSync bracket bulk sync gen: at its end, entries of
	// owner not re-sent since BeginSync are gone at the owner.
	BeginSync(owner string, gen uint64)
	EndSync(owner string, gen uint64) int
	// Upsert stores records (validated by the receiver); Delete frees keys.
	Upsert(owner string, recs []standby.Record) (int, error)
	Delete(owner string, keys []standby.Key)
}

// The standby store is the production Sink.
var _ Sink = (*standby.Store)(nil)

// ReceiverConfig configures a Receiver. Zero durations select the defaults
// in their comments.
type ReceiverConfig struct {
	// Self, Pair: this node's id and pair id; Partner: the node accepted
	// (required: a receiver serves exactly its partner).
	Self    string
	Pair    uint32
	Partner string
	// Auth is required: the channel is never open.
	Auth Auth
	// Sink is required.
	Sink Sink
	// HeartbeatInterval and HeartbeatTimeout as in SenderConfig (defaults
	// 200 ms and 1 s).
	HeartbeatInterval time.Duration
	HeartbeatTimeout  time.Duration
	// HandshakeTimeout bounds a handshake (default 2 s).
	HandshakeTimeout time.Duration
	// OnEvent, if set, receives link events; LinkEventClosed is the strong
	// signal that the partner may be dead. It must not block.
	OnEvent func(LinkEvent)
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (c *ReceiverConfig) setDefaults() {
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = 200 * time.Millisecond
	}
	if c.HeartbeatTimeout == 0 {
		c.HeartbeatTimeout = time.Second
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 2 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func (c *ReceiverConfig) validate() error {
	if err := c.Auth.validate(); err != nil {
		return err
	}
	switch {
	case c.Self == "" || c.Partner == "":
		return fmt.Errorf("%w: receiver needs Self and Partner (got %q, %q)", ErrInvalidConfig, c.Self, c.Partner)
	case len(c.Self) > MaxNodeID:
		return fmt.Errorf("%w: node id %q longer than %d bytes", ErrInvalidConfig, c.Self, MaxNodeID)
	case c.Sink == nil:
		return fmt.Errorf("%w: receiver needs a Sink", ErrInvalidConfig)
	case c.HeartbeatTimeout <= c.HeartbeatInterval:
		return fmt.Errorf("%w: HeartbeatTimeout %v must exceed HeartbeatInterval %v", ErrInvalidConfig, c.HeartbeatTimeout, c.HeartbeatInterval)
	}
	return nil
}

// Receiver accepts its partner's mirroring connection and applies what it
// sends to a Sink. A newer authenticated connection from the partner
// replaces the current one.
type Receiver struct {
	cfg    ReceiverConfig
	status statusBox

	mu      sync.Mutex
	current *conn
	open    map[net.Conn]struct{} // every accepted connection, for shutdown
	wg      sync.WaitGroup
}

// NewReceiver returns a receiver; Serve starts it.
func NewReceiver(cfg ReceiverConfig) (*Receiver, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	r := &Receiver{cfg: cfg, open: make(map[net.Conn]struct{})}
	r.status.st = Status{Role: "receiver", Self: cfg.Self, Peer: cfg.Partner, Pair: cfg.Pair, Auth: cfg.Auth.mode()}
	return r, nil
}

// Status returns a snapshot of the link.
func (r *Receiver) Status() Status { return r.status.get() }

func (r *Receiver) event(ev LinkEvent) {
	ev.Receiver = true
	if r.cfg.OnEvent != nil {
		r.cfg.OnEvent(ev)
	}
}

// Serve accepts connections on ln until ctx is done, then closes ln and
// every connection and returns once they are finished.
func (r *Receiver) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		r.mu.Lock()
		for nc := range r.open {
			nc.Close()
		}
		r.mu.Unlock()
	})
	defer stop()
	defer r.wg.Wait()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accepting mirroring connections: %w", err)
		}
		r.mu.Lock()
		r.open[nc] = struct{}{}
		r.mu.Unlock()
		if ctx.Err() != nil {
			nc.Close()
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer func() {
				r.mu.Lock()
				delete(r.open, nc)
				r.mu.Unlock()
			}()
			r.handle(ctx, nc)
		}()
	}
}

func (r *Receiver) handle(ctx context.Context, nc net.Conn) {
	defer nc.Close()
	addr := nc.RemoteAddr().String()
	if r.cfg.Auth.TLS != nil {
		nc = tls.Server(nc, serverTLS(r.cfg.Auth.TLS))
	}
	p := handshakeParams{self: r.cfg.Self, pair: r.cfg.Pair, partner: r.cfg.Partner, auth: &r.cfg.Auth, timeout: r.cfg.HandshakeTimeout}
	c, err := acceptHandshake(ctx, nc, &p)
	if err != nil {
		var peer Hello
		if c != nil {
			peer = c.peer.hello
		}
		r.cfg.Logger.Warn("mirroring peer refused", "addr", addr, "peer", peer.NodeID, "version", peer.Version, "err", err)
		// A stranger's garbage does not disturb the partner's status; a
		// refused partner (version, key) shows why it gets no state.
		if peer.NodeID == r.cfg.Partner {
			r.status.update(func(st *Status) {
				st.State = LinkRefused
				st.Reason = err.Error()
				st.PeerVersion = peer.Version
				st.PeerAddr = addr
			})
			r.event(LinkEvent{Kind: LinkEventRefused, Peer: peer.NodeID, PeerVersion: peer.Version, Err: err})
		}
		return
	}
	r.mu.Lock()
	old := r.current
	r.current = c
	r.mu.Unlock()
	if old != nil {
		old.nc.Close()
	}
	if ctx.Err() != nil {
		return
	}
	r.status.update(func(st *Status) {
		st.Authenticated = true
		st.PeerVersion = c.peer.hello.Version
		st.PeerAddr = addr
		st.State = LinkSyncing
		st.Reason = ""
		st.Connections++
	})
	r.event(LinkEvent{Kind: LinkEventUp, Peer: r.cfg.Partner})
	err = r.apply(c)
	r.mu.Lock()
	replaced := r.current != c
	if !replaced {
		r.current = nil
	}
	r.mu.Unlock()
	if replaced {
		return
	}
	r.status.update(func(st *Status) {
		st.Authenticated = false
		st.State = LinkDown
		st.Reason = errString(err, ctx)
	})
	if ctx.Err() == nil {
		r.cfg.Logger.Warn("mirroring link from partner closed", "peer", r.cfg.Partner, "err", err)
		r.event(LinkEvent{Kind: LinkEventClosed, Peer: r.cfg.Partner, Err: err})
	}
}

// apply reads frames and applies them until the connection fails.
func (r *Receiver) apply(c *conn) error {
	owner := r.cfg.Partner
	var (
		recs    []standby.Record
		keys    []standby.Key
		ack     Ack
		syncing uint64
		bytes   uint64
		wmu     sync.Mutex
		wbuf    []byte
		done    = make(chan struct{})
	)
	defer close(done)
	write := func(frame []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		if err := c.writeFrame(frame); err != nil {
			return err
		}
		c.nc.SetWriteDeadline(time.Now().Add(r.cfg.HeartbeatTimeout))
		return c.flush()
	}
	// Heartbeats keep the sender's read deadline alive while it is idle.
	go func() {
		t := time.NewTicker(r.cfg.HeartbeatInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if write(AppendHeartbeat(nil, time.Now().UnixNano())) != nil {
					c.nc.Close()
					return
				}
			}
		}
	}()
	for {
		c.nc.SetReadDeadline(time.Now().Add(r.cfg.HeartbeatTimeout))
		t, p, err := c.readFrame()
		if err != nil {
			return err
		}
		bytes += uint64(len(p)) + 5
		data := false
		switch t {
		case FrameHeartbeat:
			if _, err := DecodeHeartbeat(p); err != nil {
				return err
			}
		case FrameBulkBegin:
			gen, err := DecodeBulkBegin(p)
			if err != nil {
				return err
			}
			syncing = gen
			r.cfg.Sink.BeginSync(owner, gen)
			r.status.update(func(st *Status) { st.State = LinkSyncing })
		case FrameBulkEnd:
			gen, _, err := DecodeBulkEnd(p)
			if err != nil {
				return err
			}
			if gen != syncing {
				return fmt.Errorf("%w: bulk sync %d ends, %d began", ErrMalformed, gen, syncing)
			}
			r.cfg.Sink.EndSync(owner, gen)
			ack.Synced = gen
			data = true
			now := time.Now()
			r.status.update(func(st *Status) {
				st.State = LinkStreaming
				st.SyncGeneration = gen
				st.LastBulkSync = now
			})
			r.event(LinkEvent{Kind: LinkEventSynced, Peer: owner, Gen: gen})
		case FrameUpserts:
			var seq uint64
			seq, recs, err = DecodeUpserts(p, recs)
			if err != nil {
				return err
			}
			if _, err := r.cfg.Sink.Upsert(owner, recs); errors.Is(err, standby.ErrClosed) {
				return err
			}
			ack.Seq = seq
			ack.Applied += uint64(len(recs))
			data = true
		case FrameDeletes:
			var seq uint64
			seq, keys, err = DecodeDeletes(p, keys)
			if err != nil {
				return err
			}
			r.cfg.Sink.Delete(owner, keys)
			ack.Seq = seq
			ack.Applied += uint64(len(keys))
			data = true
		default:
			return fmt.Errorf("%w: unexpected %v frame from the sender", ErrMalformed, t)
		}
		// Acks are coalesced while more input is already buffered.
		if data && c.br.Buffered() == 0 {
			wbuf = AppendAck(wbuf[:0], ack)
			if err := write(wbuf); err != nil {
				return err
			}
			r.status.update(func(st *Status) {
				st.Entries = ack.Applied
				st.Acked = ack.Seq
				st.Bytes = bytes
			})
		}
	}
}
