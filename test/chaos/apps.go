package chaos

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tandem-lb/tandem/deploy/lab"
	"github.com/tandem-lb/tandem/node/api"
	"github.com/tandem-lb/tandem/test/traffic"
)

// Application scenarios (issue 7): long TLS sessions through the lab's
// SSL_BRIDGE STATEFUL vservers and large FTP downloads through its FTP
// STATEFUL vserver, while the node that owns them is killed or frozen.
// They run on the same lab as the record-protocol scenarios, on the apps
// VIPs (deploy/lab's apps.go), after SetupApps.

// ModeSSLBridge and the FTP modes label the application scenarios' lines.
const (
	ModeSSLBridge  = "ssl_bridge"
	ModeFTPPassive = "ftp_passive"
	ModeFTPActive  = "ftp_active"
)

// SetupApps starts the TLS backends (and, with ftp, writes the FTP file of
// ftpSize bytes and starts vsftpd on every backend), adds the apps
// vservers with clusterctl through n1 (lab.AppsClusterCommands) and waits
// until they are UP on every node and both routers route the apps VIPs
// over every node. Vservers that exist are left alone.
func (r *Runner) SetupApps(ctx context.Context, ftp bool, ftpSize int64) (lab.FTPFile, error) {
	var file lab.FTPFile
	if err := r.lab.StartTLSBackends(ctx); err != nil {
		return file, err
	}
	if ftp {
		var err error
		if file, err = r.lab.WriteFTPFile(ftpSize, r.cfg.Seed); err != nil {
			return file, err
		}
		if err := r.lab.StartFTPBackends(ctx, ""); err != nil {
			return file, err
		}
	}
	for _, c := range r.cfg.Lab.AppsClusterCommands(ftp) {
		err := retry(ctx, r.cfg.ReadyTimeout, func() error {
			_, err := r.Ctl(ctx, "n1", c...)
			if err != nil && strings.Contains(err.Error(), "exists") {
				return nil
			}
			return err
		})
		if err != nil {
			return file, err
		}
	}
	return file, r.waitApps(ctx, ftp)
}

// appsVServers names the apps vservers SetupApps adds.
func appsVServers(ftp bool) []string {
	vs := []string{"tls4", "tls6"}
	if ftp {
		vs = append(vs, "ftp4", "ftp6")
	}
	return vs
}

// waitApps waits until the apps vservers are UP on every node and the
// front router routes the apps VIPs over every node.
func (r *Runner) waitApps(ctx context.Context, ftp bool) error {
	return retry(ctx, r.cfg.ReadyTimeout, func() error {
		for i := 1; i <= r.cfg.Lab.Nodes; i++ {
			name := lab.NodeName(i)
			vss, err := r.clients[name].VServers(ctx)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			for _, want := range appsVServers(ftp) {
				i := slices.IndexFunc(vss, func(v api.VServerView) bool { return v.Name == want })
				if i < 0 {
					return fmt.Errorf("%s: no vserver %s", name, want)
				}
				if vss[i].State != api.HealthUp {
					return fmt.Errorf("%s: vserver %s is %s", name, want, vss[i].State)
				}
			}
		}
		for _, v := range []netip.Addr{lab.AppsVIP4, lab.AppsVIP6} {
			if hops := r.Nexthops(ctx, lab.RoleFront, netip.PrefixFrom(v, v.BitLen())); len(hops) != r.cfg.Lab.Nodes {
				return fmt.Errorf("rfront routes %s over %d nodes %v, want %d", v, len(hops), hops, r.cfg.Lab.Nodes)
			}
		}
		return nil
	})
}

// TLSConfig configures RunTLS.
type TLSConfig struct {
	// Sessions is the number of TLS sessions, alternately IPv4 and IPv6,
	// each from its own client address. Default 6.
	Sessions int
	// Duration is how long each session streams. Default 25s.
	Duration time.Duration
	// KillAfter is when the owner is SIGKILLed, after the sessions
	// started. Default 8s.
	KillAfter time.Duration
	// Interval is the pause between round trips. Default 20ms.
	Interval time.Duration
	// StallTimeout breaks a session without a round trip for this long.
	// Default 10s.
	StallTimeout time.Duration
}

func (c *TLSConfig) setDefaults() {
	if c.Sessions == 0 {
		c.Sessions = 6
	}
	if c.Duration == 0 {
		c.Duration = 25 * time.Second
	}
	if c.KillAfter == 0 {
		c.KillAfter = 8 * time.Second
	}
	if c.Interval == 0 {
		c.Interval = 20 * time.Millisecond
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = 10 * time.Second
	}
}

// TLSSession is what one TLS session through an SSL_BRIDGE vserver saw.
type TLSSession struct {
	Src, Dst netip.AddrPort
	Version  uint16 // negotiated TLS version
	// Backend named itself in the hello inside TLS; every reply must name
	// it too.
	Backend    string
	RoundTrips int
	Bytes      int64 // payload bytes verified (each way)
	MaxStall   time.Duration
	Took       time.Duration
	Err        error
	Corrupt    bool
	// CarrierStart and CarrierEnd are the nodes carrying it after its
	// first round trip and at its end; Owner is its owning pair then.
	CarrierStart, CarrierEnd string
	Owner                    uint32
	// Resume is the second connection from the same client address with
	// the session's ticket, after the fault.
	Resume struct {
		Src        netip.AddrPort
		DidResume  bool
		Backend    string
		RoundTrips int
		Err        error
	}
}

// Kept reports whether the session streamed to its end without error.
func (s *TLSSession) Kept() bool { return s.Err == nil && !s.Corrupt }

// AppResult is an application scenario's outcome.
type AppResult struct {
	Scenario Scenario
	Mode     string
	Victim   string
	Events   []Event
	TLS      []*TLSSession
	FTP      []*FTPDownload
	Took     time.Duration
}

// RunTLS runs TLS sessions through the SSL_BRIDGE vservers (tls4, tls6)
// for cfg.Duration; cfg.KillAfter into them it SIGKILLs the active member
// of the pair owning most of them (read from the nodes' flow tables), waits
// for the front router to drop it, and lets the sessions stream on. At the
// end every session opens a second connection from the same client address
// with its session ticket: with SOURCEIP persistence it reaches the same
// backend, which resumes the session (each backend has its own ticket key,
// so a resumption proves the backend). Then the node is restarted and the
// lab made whole. SetupApps first.
func (r *Runner) RunTLS(ctx context.Context, cfg TLSConfig) (*AppResult, error) {
	cfg.setDefaults()
	began := time.Now()
	files, err := r.lab.TLSFiles()
	if err != nil {
		return nil, err
	}
	pem, err := os.ReadFile(files.Cert)
	if err != nil {
		return nil, fmt.Errorf("reading the lab's certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", files.Cert)
	}
	out := &AppResult{Scenario: Kill9, Mode: ModeSSLBridge}
	tl := &timeline{start: time.Now(), log: r.log.With("scenario", "tls-kill9")}
	var v4, v6 []netip.Addr
	for _, a := range r.cfg.Lab.ClientAddrs() {
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	if cfg.Sessions > len(v4)+len(v6) {
		return nil, fmt.Errorf("tls: %d sessions, the lab has %d client addresses", cfg.Sessions, len(v4)+len(v6))
	}
	sessions := make([]*TLSSession, cfg.Sessions)
	caches := make([]tls.ClientSessionCache, cfg.Sessions)
	var wg sync.WaitGroup
	for i := range sessions {
		// The last client addresses: the record-protocol targets use the
		// first ones most.
		src, dst := v4[len(v4)-1-i/2], netip.AddrPortFrom(lab.AppsVIP4, lab.TLSPort)
		if i%2 == 1 {
			src, dst = v6[len(v6)-1-i/2], netip.AddrPortFrom(lab.AppsVIP6, lab.TLSPort)
		}
		s := &TLSSession{Src: netip.AddrPortFrom(src, 0), Dst: dst}
		sessions[i] = s
		caches[i] = tls.NewLRUClientSessionCache(4)
		tcfg := &tls.Config{RootCAs: pool, ServerName: files.ServerName, ClientSessionCache: caches[i], MinVersion: tls.VersionTLS12}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.streamTLS(ctx, s, tcfg, uint32(i+1), cfg)
		}()
	}
	out.TLS = sessions
	sleep(ctx, cfg.KillAfter)
	tl.add("%d TLS sessions streaming", cfg.Sessions)
	owners := r.appOwners(ctx, sessionKeys(sessions))
	for _, s := range sessions {
		s.Owner = owners[sessionKey(s)]
	}
	pairs := r.pairs(ctx)
	victim := statefulVictim(owners, pairs)
	if victim == "" {
		wg.Wait()
		return out, fmt.Errorf("tls: no node's flow table names an owner for the %d TLS sessions", len(sessions))
	}
	tl.add("TLS sessions by owning pair: %s (victim %s)", ownerCounts(owners, pairs), victim)
	out.Victim = victim
	var actErr error
	if err := r.lab.Signal(victim, syscall.SIGKILL); err != nil {
		actErr = err
	} else {
		tl.add("SIGKILL %s", victim)
		if _, err := r.waitAppHops(ctx, r.cfg.Lab.Nodes-1, r.cfg.Lab.HoldTime+2*time.Second); err != nil {
			actErr = err
		} else {
			tl.add("rfront: %s out of the ECMP set", victim)
		}
	}
	wg.Wait()
	tl.add("TLS sessions ended")
	for i, s := range sessions {
		tcfg := &tls.Config{RootCAs: pool, ServerName: files.ServerName, ClientSessionCache: caches[i], MinVersion: tls.VersionTLS12}
		r.resumeTLS(ctx, s, tcfg, uint32(100+i), cfg)
	}
	tl.add("resumed sessions checked")
	restoreErr := r.lab.Start(ctx)
	if restoreErr == nil {
		tl.add("%s restarted", victim)
		restoreErr = r.WaitReady(ctx)
	}
	if restoreErr == nil {
		restoreErr = r.waitApps(ctx, false)
	}
	if restoreErr == nil {
		tl.add("lab whole again")
	}
	out.Events, out.Took = tl.events, time.Since(began)
	if actErr != nil {
		return out, fmt.Errorf("tls kill9 on %s: %w", victim, actErr)
	}
	if restoreErr != nil {
		return out, fmt.Errorf("tls kill9 on %s: %w: %w", victim, ErrLabBroken, restoreErr)
	}
	return out, nil
}

func sessionKey(s *TLSSession) traffic.FlowKey {
	return traffic.FlowKey{Proto: "tcp", Src: s.Src, Dst: s.Dst}
}

func sessionKeys(ss []*TLSSession) []traffic.FlowKey {
	var out []traffic.FlowKey
	for _, s := range ss {
		out = append(out, sessionKey(s))
	}
	return out
}

// appOwners returns the owning pair of each flow, as the nodes' flow
// tables name it.
func (r *Runner) appOwners(ctx context.Context, flows []traffic.FlowKey) map[traffic.FlowKey]uint32 {
	byKey := r.ownerTable(ctx)
	out := map[traffic.FlowKey]uint32{}
	for _, f := range flows {
		if o, ok := byKey[keyOf(f.Proto, f.Src, f.Dst)]; ok {
			out[f] = o
		}
	}
	return out
}

// ownerTable reads every answering node's flow table: flow -> owning pair.
func (r *Runner) ownerTable(ctx context.Context) map[connKey]uint32 {
	byKey := map[connKey]uint32{}
	for _, c := range r.clients {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conns, err := c.Connections(rctx, api.ConnFilter{})
		cancel()
		if err != nil {
			continue
		}
		for _, cn := range conns {
			if cn.Owner != 0 {
				byKey[keyOf(cn.Proto, cn.Client, cn.VIP)] = cn.Owner
			}
		}
	}
	return byKey
}

// waitAppHops waits until the front router routes the apps VIPs over n
// next hops.
func (r *Runner) waitAppHops(ctx context.Context, n int, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	err := retry(ctx, timeout, func() error {
		for _, v := range []netip.Addr{lab.AppsVIP4, lab.AppsVIP6} {
			if hops := r.Nexthops(ctx, lab.RoleFront, netip.PrefixFrom(v, v.BitLen())); len(hops) != n {
				return fmt.Errorf("rfront routes %s over %d next hops %v, want %d", v, len(hops), hops, n)
			}
		}
		return nil
	})
	return time.Since(start), err
}

// dialTLS connects from src (port 0: any) to dst inside the client
// namespace and completes the TLS handshake.
func (r *Runner) dialTLS(ctx context.Context, src netip.Addr, dst netip.AddrPort, cfg *tls.Config, timeout time.Duration) (*tls.Conn, error) {
	var raw net.Conn
	err := traffic.InNetns(r.lab.NetnsPath(lab.RoleClient), func() error {
		d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
		c, err := d.DialContext(ctx, "tcp", dst.String())
		raw = c
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", dst, err)
	}
	c := tls.Client(raw, cfg)
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := c.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("TLS handshake with %s: %w", dst, err)
	}
	return c, nil
}

// tlsStream is one connection's record exchange.
type tlsStream struct {
	c        *tls.Conn
	br       *bufio.Reader
	rbuf     []byte
	req      []byte
	want     []byte
	seed     uint64
	flow     uint32
	backend  string
	src      netip.AddrPort
	trips    int
	bytes    int64
	last     time.Time
	maxStall time.Duration
}

func newTLSStream(c *tls.Conn, seed uint64, flow uint32) *tlsStream {
	return &tlsStream{c: c, br: bufio.NewReaderSize(c, 2*traffic.MaxRecordLen), rbuf: make([]byte, traffic.MaxRecordLen),
		want: make([]byte, traffic.MaxPayload), seed: seed, flow: flow, last: time.Now(),
		src: c.LocalAddr().(*net.TCPAddr).AddrPort()}
}

// hello reads the backend's hello, which names it and the client address
// it saw (USIP: the client's own).
func (t *tlsStream) hello(stall time.Duration) error {
	t.c.SetReadDeadline(time.Now().Add(stall))
	h, err := traffic.ReadRecord(t.br, t.rbuf)
	if err != nil {
		return fmt.Errorf("waiting for hello: %w", err)
	}
	if h.Kind != traffic.KindHello {
		return fmt.Errorf("%v record where hello was due", h.Kind)
	}
	t.backend = h.Name
	return checkPeer(h.Peer, t.src)
}

func checkPeer(peer string, src netip.AddrPort) error {
	p, err := netip.ParseAddrPort(peer)
	if err != nil || p.Addr().Unmap() != src.Addr().Unmap() || p.Port() != src.Port() {
		return fmt.Errorf("backend saw the flow from %q, the client is %s: USIP broken: %w", peer, src, errSource)
	}
	return nil
}

var errSource = errors.New("source address not the client's")

// roundTrip sends request seq and verifies its echo.
func (t *tlsStream) roundTrip(seq uint32, stall time.Duration) error {
	n := traffic.PayloadLen(t.seed, t.flow, seq, traffic.MaxPayload)
	traffic.FillPayload(t.want[:n], t.seed, t.flow, seq)
	var err error
	t.req, err = traffic.AppendRecord(t.req[:0], traffic.Record{Kind: traffic.KindRequest, Flow: t.flow, Seq: seq, Payload: t.want[:n]})
	if err != nil {
		return err
	}
	t.c.SetDeadline(t.last.Add(stall))
	if _, err := t.c.Write(t.req); err != nil {
		return fmt.Errorf("sending seq %d: %w", seq, err)
	}
	rep, err := traffic.ReadRecord(t.br, t.rbuf)
	if err != nil {
		return fmt.Errorf("waiting for reply %d: %w", seq, err)
	}
	switch {
	case rep.Kind == traffic.KindCorrupt:
		return fmt.Errorf("backend %q saw a corrupt request: %w", rep.Name, traffic.ErrCorrupt)
	case rep.Kind != traffic.KindReply || rep.Flow != t.flow || rep.Seq != seq:
		return fmt.Errorf("%v record flow %d seq %d where reply %d/%d was due: %w", rep.Kind, rep.Flow, rep.Seq, t.flow, seq, traffic.ErrCorrupt)
	case !bytes.Equal(rep.Payload, t.want[:n]):
		return fmt.Errorf("echo of seq %d differs from what was sent: %w", seq, traffic.ErrCorrupt)
	case rep.Name != t.backend:
		return fmt.Errorf("reply from %q, the session began on %q: backend switched", rep.Name, t.backend)
	}
	if err := checkPeer(rep.Peer, t.src); err != nil {
		return err
	}
	now := time.Now()
	t.maxStall = max(t.maxStall, now.Sub(t.last))
	t.last = now
	t.trips++
	t.bytes += int64(n)
	return nil
}

// streamTLS runs session s for cfg.Duration.
func (r *Runner) streamTLS(ctx context.Context, s *TLSSession, tcfg *tls.Config, flow uint32, cfg TLSConfig) {
	start := time.Now()
	defer func() { s.Took = time.Since(start) }()
	c, err := r.dialTLS(ctx, s.Src.Addr(), s.Dst, tcfg, cfg.StallTimeout)
	if err != nil {
		s.Err = err
		return
	}
	defer c.Close()
	s.Src = c.LocalAddr().(*net.TCPAddr).AddrPort()
	s.Version = c.ConnectionState().Version
	t := newTLSStream(c, r.cfg.Seed, flow)
	if err := t.hello(cfg.StallTimeout); err != nil {
		s.Err = err
		return
	}
	s.Backend = t.backend
	end := start.Add(cfg.Duration)
	defer func() {
		s.RoundTrips, s.Bytes, s.MaxStall = t.trips, t.bytes, t.maxStall
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		s.CarrierEnd, _ = r.carrier.CarrierOf(cctx, sessionKey(s))
		cancel()
	}()
	for seq := uint32(1); time.Now().Before(end); seq++ {
		if err := t.roundTrip(seq, cfg.StallTimeout); err != nil {
			s.Err = err
			s.Corrupt = errors.Is(err, traffic.ErrCorrupt)
			return
		}
		if seq == 1 {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			s.CarrierStart, _ = r.carrier.CarrierOf(cctx, sessionKey(s))
			cancel()
		}
		select {
		case <-ctx.Done():
			s.Err = ctx.Err()
			return
		case <-time.After(cfg.Interval):
		}
	}
}

// resumeTLS opens a new connection from s's client address with the
// session's ticket and exchanges a few records.
func (r *Runner) resumeTLS(ctx context.Context, s *TLSSession, tcfg *tls.Config, flow uint32, cfg TLSConfig) {
	c, err := r.dialTLS(ctx, s.Src.Addr(), s.Dst, tcfg, cfg.StallTimeout)
	if err != nil {
		s.Resume.Err = err
		return
	}
	defer c.Close()
	s.Resume.Src = c.LocalAddr().(*net.TCPAddr).AddrPort()
	s.Resume.DidResume = c.ConnectionState().DidResume
	t := newTLSStream(c, r.cfg.Seed, flow)
	if err := t.hello(cfg.StallTimeout); err != nil {
		s.Resume.Err = err
		return
	}
	s.Resume.Backend = t.backend
	for seq := uint32(1); seq <= 10; seq++ {
		if err := t.roundTrip(seq, cfg.StallTimeout); err != nil {
			s.Resume.Err = err
			return
		}
	}
	s.Resume.RoundTrips = t.trips
}

// Lines renders the result for scripts, in the format of Result.Lines
// with the application's own fields.
func (a *AppResult) Lines() []string {
	switch {
	case a.TLS != nil:
		kept, broken, corrupt, moved, resumed, same := 0, 0, 0, 0, 0, 0
		var stall time.Duration
		for _, s := range a.TLS {
			switch {
			case s.Kept():
				kept++
				stall = max(stall, s.MaxStall)
			case s.Corrupt:
				corrupt++
			default:
				broken++
			}
			if s.CarrierStart != "" && s.CarrierEnd != "" && s.CarrierStart != s.CarrierEnd {
				moved++
			}
			if s.Resume.Err == nil && s.Resume.DidResume {
				resumed++
			}
			if s.Resume.Err == nil && s.Backend != "" && s.Resume.Backend == s.Backend {
				same++
			}
		}
		return []string{fmt.Sprintf("chaos scenario=%s mode=%s flows=%d kept=%d broken=%d corrupt=%d moved=%d max_stall_ms=%d resumed=%d same_backend=%d",
			a.Scenario, a.Mode, len(a.TLS), kept, broken, corrupt, moved, stall.Milliseconds(), resumed, same)}
	case a.FTP != nil:
		var out []string
		for _, d := range a.FTP {
			out = append(out, d.Line(a.Scenario))
		}
		return out
	}
	return nil
}

// Table renders the result for people: the timeline and one line per
// session or download.
func (a *AppResult) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "scenario %s (%s) on %s, %v\n", a.Scenario, a.Mode, orUnknown(a.Victim), a.Took.Round(100*time.Millisecond))
	for _, e := range a.Events {
		fmt.Fprintf(&b, "  %6.2fs  %s\n", e.At.Seconds(), e.What)
	}
	for _, s := range a.TLS {
		state := "kept"
		if !s.Kept() {
			state = fmt.Sprintf("NOT KEPT: %v", s.Err)
		}
		res := fmt.Sprintf("resumed=%v on %s", s.Resume.DidResume, orUnknown(s.Resume.Backend))
		if s.Resume.Err != nil {
			res = fmt.Sprintf("resume failed: %v", s.Resume.Err)
		}
		fmt.Fprintf(&b, "  %s -> %s %s backend %s pair %d carried %s->%s: %d round trips, %d bytes each way, max stall %v, %s; %s\n",
			s.Src, s.Dst, tls.VersionName(s.Version), orUnknown(s.Backend), s.Owner, orUnknown(s.CarrierStart), orUnknown(s.CarrierEnd),
			s.RoundTrips, s.Bytes, s.MaxStall.Round(time.Millisecond), state, res)
	}
	for _, d := range a.FTP {
		fmt.Fprintf(&b, "  %s\n", d.Describe())
	}
	return b.String()
}

// Failures lists what the scenario must have shown and did not: every
// session kept with every byte verified for at least 20 s, and every
// resumed session resumed on its backend.
func (a *AppResult) Failures() []string {
	var out []string
	for _, s := range a.TLS {
		if !s.Kept() {
			out = append(out, fmt.Sprintf("tls %s: session not kept: %v", s.Src, s.Err))
		} else if s.Took < 20*time.Second {
			out = append(out, fmt.Sprintf("tls %s: streamed %v, want at least 20s", s.Src, s.Took))
		}
		switch {
		case s.Resume.Err != nil:
			out = append(out, fmt.Sprintf("tls %s: resumed connection failed: %v", s.Src, s.Resume.Err))
		case !s.Resume.DidResume:
			out = append(out, fmt.Sprintf("tls %s: second connection (%s) did not resume the session", s.Src, s.Resume.Src))
		case s.Resume.Backend != s.Backend:
			out = append(out, fmt.Sprintf("tls %s: resumed on %s, the session was on %s", s.Src, s.Resume.Backend, s.Backend))
		}
	}
	for _, d := range a.FTP {
		if f := d.Failure(); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// CheckRefusals asks the cluster, through a live node's clusterctl, for
// HTTP and terminated-SSL vservers with connection failover (STATEFUL and
// STATELESS) on the apps VIP: each must be refused naming the rule
// (no-failover-http) and the fix, and must not exist afterwards. It
// returns the refusals as clusterctl printed them (first line of each).
func (r *Runner) CheckRefusals(ctx context.Context) ([]string, error) {
	var out []string
	for _, typ := range []string{"HTTP", "SSL"} {
		for _, mode := range []string{"STATEFUL", "STATELESS"} {
			name := strings.ToLower("refuse-" + typ + "-" + mode)
			msg, err := r.Ctl(ctx, "n1", "add", "lb", "vserver", name, typ, lab.AppsVIP4.String(), "8000",
				"--lbMethod", "SOURCEIPHASH", "--persistenceType", "SOURCEIP", "--connFailover", mode)
			if err == nil {
				return out, fmt.Errorf("%s vserver with connFailover %s was accepted: %s", typ, mode, msg)
			}
			text := string(msg)
			for _, want := range []string{"refuse connection failover", "no-failover-http", "fix:"} {
				if !strings.Contains(text, want) {
					return out, fmt.Errorf("%s vserver with connFailover %s refused without %q: %s", typ, mode, want, text)
				}
			}
			if shown, err := r.Ctl(ctx, "n1", "show", "lb", "vserver", name); err == nil {
				return out, fmt.Errorf("refused vserver %s exists: %s", name, shown)
			}
			out = append(out, fmt.Sprintf("%s %s: %s", typ, mode, strings.SplitN(strings.TrimSpace(text), "\n", 2)[0]))
		}
	}
	return out, nil
}
