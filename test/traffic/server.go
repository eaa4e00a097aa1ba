package traffic

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// ErrServerClosed is returned by Serve methods after Close.
var ErrServerClosed = errors.New("server closed")

// ServerConfig configures a backend server.
type ServerConfig struct {
	// Name is put in every hello and reply so the client knows which
	// backend served it. Required, at most MaxName bytes.
	Name string
	// IdleTimeout closes a TCP connection that sends nothing for this long
	// and forgets a UDP session. Default 5 minutes: flows are long-lived
	// and the checker may stall for seconds during failover.
	IdleTimeout time.Duration
	// Logger receives connection errors. Default: discard.
	Logger *slog.Logger
}

func (c *ServerConfig) setDefaults() {
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 5 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *ServerConfig) validate() error {
	if c.Name == "" {
		return errors.New("server name is empty: the name is how the checker tells backends apart")
	}
	if len(c.Name) > MaxName {
		return fmt.Errorf("server name %q is %d bytes, at most %d", c.Name, len(c.Name), MaxName)
	}
	if c.IdleTimeout < 0 {
		return fmt.Errorf("idle timeout %v is negative", c.IdleTimeout)
	}
	return nil
}

// ServerStats are a server's counters.
type ServerStats struct {
	// TCPConns is the number of TCP connections open now.
	TCPConns int64
	// TCPAccepted counts TCP connections accepted.
	TCPAccepted uint64
	// UDPSessions is the number of UDP peers seen within IdleTimeout.
	UDPSessions int
	// Requests counts good requests answered.
	Requests uint64
	// Corrupt counts requests whose CRC did not match.
	Corrupt uint64
}

// Server is the lab backend: it answers hello on TCP connect and echoes
// every request in a reply that names itself, over TCP and UDP. Serve as
// many listeners as needed; Close stops them all and closes every
// connection, as a killed backend would.
type Server struct {
	cfg ServerConfig

	mu        sync.Mutex
	closed    bool
	listeners map[io.Closer]struct{}
	conns     map[net.Conn]struct{}
	sessions  map[netip.AddrPort]time.Time
	wg        sync.WaitGroup

	tcpConns    atomic.Int64
	tcpAccepted atomic.Uint64
	requests    atomic.Uint64
	corrupt     atomic.Uint64
}

// NewServer returns a server with cfg's defaults filled in.
func NewServer(cfg ServerConfig) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("configuring backend server: %w", err)
	}
	return &Server{
		cfg:       cfg,
		listeners: map[io.Closer]struct{}{},
		conns:     map[net.Conn]struct{}{},
		sessions:  map[netip.AddrPort]time.Time{},
	}, nil
}

// Name is the server's name.
func (s *Server) Name() string { return s.cfg.Name }

func (s *Server) track(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.listeners[c] = struct{}{}
	return true
}

func (s *Server) untrack(c io.Closer) {
	s.mu.Lock()
	delete(s.listeners, c)
	s.mu.Unlock()
}

// ServeTCP accepts connections on ln until Close; it returns
// ErrServerClosed then, or the accept error that stopped it.
func (s *Server) ServeTCP(ln net.Listener) error {
	if !s.track(ln) {
		ln.Close()
		return ErrServerClosed
	}
	defer s.untrack(ln)
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accepting on %s: %w", ln.Addr(), err)
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return ErrServerClosed
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		s.tcpAccepted.Add(1)
		s.tcpConns.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.tcpConns.Add(-1)
			err := s.serveConn(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
			if !errors.Is(err, io.EOF) && !s.isClosed() {
				s.cfg.Logger.Debug("tcp connection ended", "peer", c.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

func (s *Server) serveConn(c net.Conn) error {
	peer := c.RemoteAddr().String()
	out, err := AppendRecord(nil, Record{Kind: KindHello, Name: s.cfg.Name, Peer: peer})
	if err != nil {
		return err
	}
	if _, err := c.Write(out); err != nil {
		return fmt.Errorf("sending hello: %w", err)
	}
	r := bufio.NewReaderSize(c, 2*MaxRecordLen)
	buf := make([]byte, MaxRecordLen)
	for {
		c.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		req, err := ReadRecord(r, buf)
		if err != nil {
			if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrMalformed) {
				s.corrupt.Add(1)
				out, _ = AppendRecord(out[:0], Record{Kind: KindCorrupt, Name: s.cfg.Name})
				c.Write(out)
			}
			return err
		}
		out, err = s.answer(out[:0], req, peer)
		if err != nil {
			return err
		}
		if _, err := c.Write(out); err != nil {
			return fmt.Errorf("sending reply: %w", err)
		}
	}
}

// answer appends the reply to req, which came from peer.
func (s *Server) answer(out []byte, req Record, peer string) ([]byte, error) {
	if req.Kind != KindRequest {
		s.corrupt.Add(1)
		return AppendRecord(out, Record{Kind: KindCorrupt, Flow: req.Flow, Seq: req.Seq, Name: s.cfg.Name})
	}
	s.requests.Add(1)
	return AppendRecord(out, Record{Kind: KindReply, Flow: req.Flow, Seq: req.Seq, Name: s.cfg.Name, Peer: peer, Payload: req.Payload})
}

// ServeUDP answers datagrams on pc until Close. Each datagram must hold one
// request; the reply goes back to its sender from pc's address.
func (s *Server) ServeUDP(pc net.PacketConn) error {
	if !s.track(pc) {
		pc.Close()
		return ErrServerClosed
	}
	defer s.untrack(pc)
	in := make([]byte, 64<<10)
	var out []byte
	lastSweep := time.Now()
	for {
		n, from, err := pc.ReadFrom(in)
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("reading on %s: %w", pc.LocalAddr(), err)
		}
		now := time.Now()
		if ua, ok := from.(*net.UDPAddr); ok {
			s.mu.Lock()
			s.sessions[ua.AddrPort()] = now
			if now.Sub(lastSweep) > s.cfg.IdleTimeout/4 {
				for k, t := range s.sessions {
					if now.Sub(t) > s.cfg.IdleTimeout {
						delete(s.sessions, k)
					}
				}
				lastSweep = now
			}
			s.mu.Unlock()
		}
		req, m, err := ParseRecord(in[:n])
		if err == nil && m != n {
			err = fmt.Errorf("%d bytes after the record: %w", n-m, ErrMalformed)
		}
		if err != nil {
			s.corrupt.Add(1)
			out, _ = AppendRecord(out[:0], Record{Kind: KindCorrupt, Name: s.cfg.Name})
		} else if out, err = s.answer(out[:0], req, from.String()); err != nil {
			continue
		}
		if _, err := pc.WriteTo(out, from); err != nil && !s.isClosed() {
			s.cfg.Logger.Debug("udp reply failed", "peer", from.String(), "err", err)
		}
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Close stops every listener and closes every connection, then waits for
// the connection handlers to return.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		// Abort rather than close gracefully: a killed backend's peer sees a
		// reset, not an orderly FIN.
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// Stats returns the server's counters.
func (s *Server) Stats() ServerStats {
	s.mu.Lock()
	sessions := len(s.sessions)
	s.mu.Unlock()
	return ServerStats{
		TCPConns:    s.tcpConns.Load(),
		TCPAccepted: s.tcpAccepted.Load(),
		UDPSessions: sessions,
		Requests:    s.requests.Load(),
		Corrupt:     s.corrupt.Load(),
	}
}

// ReadRecord reads one record from r into buf (at least MaxRecordLen bytes)
// and parses it. The record aliases buf.
func ReadRecord(r *bufio.Reader, buf []byte) (Record, error) {
	if len(buf) < MaxRecordLen {
		return Record{}, fmt.Errorf("record buffer of %d bytes, need %d", len(buf), MaxRecordLen)
	}
	if _, err := io.ReadFull(r, buf[:headerLen]); err != nil {
		return Record{}, err
	}
	have := headerLen
	for {
		n, err := RecordLen(buf[:have])
		if err == nil {
			if _, err := io.ReadFull(r, buf[have:n]); err != nil {
				return Record{}, noEOF(err)
			}
			rec, _, err := ParseRecord(buf[:n])
			return rec, err
		}
		if !errors.Is(err, ErrShort) {
			return Record{}, err
		}
		// Read up to the next length RecordLen needs: the peer length
		// after the name, then the payload length after the peer.
		want := headerLen + int(buf[12]) + 1
		if have >= want {
			want += int(buf[want-1]) + 2
		}
		if want <= have {
			return Record{}, fmt.Errorf("record header of %d bytes: %w", have, ErrMalformed)
		}
		if _, err := io.ReadFull(r, buf[have:want]); err != nil {
			return Record{}, noEOF(err)
		}
		have = want
	}
}

// noEOF turns an EOF in the middle of a record into ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
