package traffic

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"
)

// Target is one vserver the checker keeps flows through.
type Target struct {
	// Mode labels the target's vserver mode in the summary ("stateless",
	// "stateful", "plain" for a routed address without a load balancer).
	// Required.
	Mode string
	// Addr is the VIP and port. Required.
	Addr netip.AddrPort
	// TCPFlows is the number of long-lived TCP flows (DefaultTCPFlows in
	// DefaultTarget).
	TCPFlows int
	// UDPFlows is the number of UDP sessions (DefaultUDPFlows in
	// DefaultTarget).
	UDPFlows int
	// SNAT lists the source addresses a backend may see this target's
	// flows come from instead of the client's own: a vserver with USIP OFF
	// source-NATs to its owner pair's SNIP. With Config.CheckSource, a
	// flow's backend must see one of them, and the same address and port
	// for the whole flow (a takeover keeps the flow's SNAT). Empty: USIP,
	// the client's own address and port.
	SNAT []netip.Addr
}

const (
	// DefaultTCPFlows is the TCP flow count of DefaultTarget.
	DefaultTCPFlows = 200
	// DefaultUDPFlows is the UDP session count of DefaultTarget.
	DefaultUDPFlows = 100
)

// DefaultTarget returns a target with the default flow counts.
func DefaultTarget(mode string, addr netip.AddrPort) Target {
	return Target{Mode: mode, Addr: addr, TCPFlows: DefaultTCPFlows, UDPFlows: DefaultUDPFlows}
}

// Carrier tells which load-balancer node carries a flow. It is the hook the
// chaos runner fills from the nodes' flow tables or counters; the checker
// asks after a flow's first round trip and again at its end, and a flow
// whose two answers differ (both non-empty) counts as moved. Calls come
// from many goroutines at once.
type Carrier interface {
	CarrierOf(ctx context.Context, flow FlowKey) (node string, err error)
}

// Config configures a checker run.
type Config struct {
	// Targets are the vservers to keep flows through. At least one.
	Targets []Target
	// Sources are the client addresses flows bind to, taken round-robin
	// among those of the target's family; ports are ephemeral. Empty: the
	// kernel chooses the source address.
	Sources []netip.Addr
	// Netns is the path of the network namespace the flows' sockets are
	// opened in (e.g. /run/netns/tlab-client). Empty: the caller's.
	Netns string
	// Duration is how long flows run; they then finish their round trip
	// and close. Default 10s.
	Duration time.Duration
	// Interval is the pause between a flow's round trips. Default 100ms.
	Interval time.Duration
	// StallTimeout breaks a flow that has completed no round trip for this
	// long (also the dial timeout). Default 10s, above a BGP hold time.
	StallTimeout time.Duration
	// UDPRetry is how long a UDP flow waits for a reply before it sends the
	// request again. Default 250ms.
	UDPRetry time.Duration
	// MaxPayload bounds the payload of a request, 1..MaxPayload. Default
	// 512.
	MaxPayload int
	// StartSpread spreads the flows' starts evenly over this time so that
	// they do not all dial at once; it must be shorter than Duration.
	// Default 1s, or Duration/4 when that is shorter.
	StartSpread time.Duration
	// Seed makes the payloads reproducible.
	Seed uint64
	// Carrier is optional; without it no flow counts as moved.
	Carrier Carrier
	// CheckSource fails a flow whose backend saw it come from another
	// address than the client's own (the Peer of its hello and replies),
	// with ReasonSource: the check that the load balancer keeps the
	// client's source IP and port (USIP). Off by default: a proxy in the
	// path changes the source on purpose.
	CheckSource bool
	// Stop, when closed, ends the run early as Duration would: flows finish
	// their round trip and close, and count as kept. Optional: the chaos
	// runner sets a long Duration and closes Stop once its scenario is over.
	Stop <-chan struct{}
}

func (c *Config) setDefaults() {
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.Interval == 0 {
		c.Interval = 100 * time.Millisecond
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = 10 * time.Second
	}
	if c.UDPRetry == 0 {
		c.UDPRetry = 250 * time.Millisecond
	}
	if c.MaxPayload == 0 {
		c.MaxPayload = 512
	}
	if c.StartSpread == 0 {
		c.StartSpread = min(time.Second, c.Duration/4)
	}
}

func (c *Config) validate() error {
	if len(c.Targets) == 0 {
		return errors.New("no targets: give at least one VIP:port to keep flows through")
	}
	for i, t := range c.Targets {
		if t.Mode == "" {
			return fmt.Errorf("target %d (%s) has no mode label: name the vserver mode it exercises", i, t.Addr)
		}
		if !t.Addr.IsValid() || t.Addr.Port() == 0 {
			return fmt.Errorf("target %d (%s) needs an address and a non-zero port", i, t.Mode)
		}
		if t.TCPFlows < 0 || t.UDPFlows < 0 || t.TCPFlows+t.UDPFlows == 0 {
			return fmt.Errorf("target %d (%s %s) has %d TCP and %d UDP flows: give a positive number of at least one",
				i, t.Mode, t.Addr, t.TCPFlows, t.UDPFlows)
		}
		if len(c.Sources) > 0 && len(sourcesFor(c.Sources, t.Addr.Addr())) == 0 {
			return fmt.Errorf("target %d (%s) is %s but no source address is: add a source of that family",
				i, t.Addr, family(t.Addr.Addr()))
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"duration", c.Duration}, {"interval", c.Interval}, {"stall timeout", c.StallTimeout}, {"UDP retry", c.UDPRetry}, {"start spread", c.StartSpread}} {
		if d.v < 0 {
			return fmt.Errorf("%s %v is negative", d.name, d.v)
		}
	}
	if c.StartSpread >= c.Duration {
		return fmt.Errorf("start spread %v is not shorter than the duration %v: the last flows would never start", c.StartSpread, c.Duration)
	}
	if c.UDPRetry > c.StallTimeout {
		return fmt.Errorf("UDP retry %v exceeds the stall timeout %v: a lost datagram would break the flow", c.UDPRetry, c.StallTimeout)
	}
	if c.MaxPayload < 1 || c.MaxPayload > MaxPayload {
		return fmt.Errorf("max payload %d out of range 1..%d", c.MaxPayload, MaxPayload)
	}
	return nil
}

func family(a netip.Addr) string {
	if a.Unmap().Is4() {
		return "IPv4"
	}
	return "IPv6"
}

func sourcesFor(all []netip.Addr, dst netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, a := range all {
		if a.Unmap().Is4() == dst.Unmap().Is4() {
			out = append(out, a)
		}
	}
	return out
}

// Outcome is how a flow ended.
type Outcome string

const (
	// Kept: the flow ran until the end, every byte verified, one backend.
	Kept Outcome = "kept"
	// Broken: the flow was reset, timed out, closed, refused or switched
	// backend.
	Broken Outcome = "broken"
	// Corrupt: a record failed its CRC or the echo differed from what was
	// sent.
	Corrupt Outcome = "corrupt"
)

// Reason says why a flow was not kept.
type Reason string

const (
	ReasonNone     Reason = ""
	ReasonDial     Reason = "dial"     // could not connect
	ReasonReset    Reason = "reset"    // connection reset
	ReasonRefused  Reason = "refused"  // connection refused / ICMP port unreachable
	ReasonTimeout  Reason = "timeout"  // no round trip within StallTimeout
	ReasonClosed   Reason = "closed"   // orderly close by the peer
	ReasonSwitched Reason = "switched" // a reply came from another backend
	ReasonSource   Reason = "source"   // the backend saw another client address (CheckSource)
	ReasonCorrupt  Reason = "corrupt"  // bad CRC, wrong echo, unexpected record
	ReasonOther    Reason = "error"    // any other socket error
)

// FlowKey identifies a flow by its 5-tuple.
type FlowKey struct {
	Proto string // "tcp" or "udp"
	Src   netip.AddrPort
	Dst   netip.AddrPort
}

func (k FlowKey) String() string { return fmt.Sprintf("%s %s->%s", k.Proto, k.Src, k.Dst) }

// FlowResult is what the checker saw of one flow.
type FlowResult struct {
	ID   uint32
	Mode string
	FlowKey
	// Backend is the name of the backend that served the flow (the first
	// one when it switched).
	Backend string
	Outcome Outcome
	Reason  Reason
	// Err is the error that ended the flow, if any.
	Err string
	// RoundTrips counts verified request/reply pairs.
	RoundTrips int
	// Bytes counts verified payload bytes (each direction).
	Bytes int64
	// MaxStall is the longest time between successful round trips (for a
	// flow that was not kept, including the time until it failed).
	MaxStall time.Duration
	// Start and End bound the flow.
	Start, End time.Time
	// CarrierStart and CarrierEnd are the Carrier hook's answers.
	CarrierStart, CarrierEnd string
	// Moved is set when the carrier changed during the flow.
	Moved bool
}

// Report is a checker run's result.
type Report struct {
	Targets []Target
	Results []FlowResult
}

// Summary is the per-mode aggregate the chaos scripts print.
type Summary struct {
	Mode    string
	Flows   int
	Kept    int
	Broken  int
	Corrupt int
	Moved   int
	// MaxStall is the longest stall of a kept flow.
	MaxStall time.Duration
	// Reasons counts the flows not kept by reason.
	Reasons map[Reason]int
	// Backends counts flows by the backend that served them.
	Backends map[string]int
	// RoundTrips and Bytes are totals over the mode's flows.
	RoundTrips int
	Bytes      int64
}

// Line formats the summary as the scripts' line:
//
//	chaos scenario=kill9 mode=stateless flows=300 kept=300 broken=0 corrupt=0 moved=37 max_stall_ms=1200
func (s Summary) Line(scenario string) string {
	return fmt.Sprintf("chaos scenario=%s mode=%s flows=%d kept=%d broken=%d corrupt=%d moved=%d max_stall_ms=%d",
		scenario, s.Mode, s.Flows, s.Kept, s.Broken, s.Corrupt, s.Moved, s.MaxStall.Milliseconds())
}

// Summaries aggregates the results per mode, in the order the targets
// name the modes.
func (r *Report) Summaries() []Summary {
	var order []string
	by := map[string]*Summary{}
	add := func(mode string) *Summary {
		s, ok := by[mode]
		if !ok {
			s = &Summary{Mode: mode, Reasons: map[Reason]int{}, Backends: map[string]int{}}
			by[mode] = s
			order = append(order, mode)
		}
		return s
	}
	for _, t := range r.Targets {
		add(t.Mode)
	}
	for _, f := range r.Results {
		s := add(f.Mode)
		s.Flows++
		switch f.Outcome {
		case Kept:
			s.Kept++
			s.MaxStall = max(s.MaxStall, f.MaxStall)
		case Corrupt:
			s.Corrupt++
		default:
			s.Broken++
		}
		if f.Reason != ReasonNone {
			s.Reasons[f.Reason]++
		}
		if f.Moved {
			s.Moved++
		}
		if f.Backend != "" {
			s.Backends[f.Backend]++
		}
		s.RoundTrips += f.RoundTrips
		s.Bytes += f.Bytes
	}
	out := make([]Summary, 0, len(order))
	for _, m := range order {
		out = append(out, *by[m])
	}
	return out
}

// Run keeps the configured flows for cfg.Duration and reports how each
// went. It returns early, with the flows ended so far reported as they
// stand, when ctx is cancelled; it never runs longer than Duration +
// StallTimeout + a second. An error means the run could not start.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("configuring traffic checker: %w", err)
	}
	if cfg.Netns != "" {
		if _, err := os.Stat(cfg.Netns); err != nil {
			return nil, fmt.Errorf("traffic checker namespace: %w", err)
		}
	}
	type job struct {
		id     uint32
		target Target
		udp    bool
		src    netip.Addr
	}
	var jobs []job
	for _, t := range cfg.Targets {
		srcs := sourcesFor(cfg.Sources, t.Addr.Addr())
		for i := range t.TCPFlows + t.UDPFlows {
			j := job{id: uint32(len(jobs) + 1), target: t, udp: i >= t.TCPFlows}
			if len(srcs) > 0 {
				j.src = srcs[len(jobs)%len(srcs)]
			}
			jobs = append(jobs, j)
		}
	}

	start := time.Now()
	// stop asks flows to finish; hard bounds every socket operation.
	stop, cancelStop := context.WithDeadline(ctx, start.Add(cfg.Duration))
	defer cancelStop()
	if cfg.Stop != nil {
		go func() {
			select {
			case <-cfg.Stop:
				cancelStop()
			case <-stop.Done():
			}
		}()
	}
	hard, cancelHard := context.WithDeadline(ctx, start.Add(cfg.Duration+cfg.StallTimeout+time.Second))
	defer cancelHard()

	results := make([]FlowResult, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := &flow{cfg: &cfg, id: j.id, dst: j.target.Addr, src: j.src, snat: j.target.SNAT, stop: stop, hard: hard}
			f.res = FlowResult{ID: j.id, Mode: j.target.Mode, FlowKey: FlowKey{Proto: "tcp", Dst: j.target.Addr}}
			if j.udp {
				f.res.Proto = "udp"
			}
			delay := time.Duration(0)
			if len(jobs) > 1 {
				delay = cfg.StartSpread * time.Duration(i) / time.Duration(len(jobs))
			}
			select {
			case <-time.After(delay):
				f.run()
			case <-stop.Done():
				f.fail(ReasonDial, fmt.Errorf("run ended before the flow started: %w", context.Cause(stop)))
				f.res.Start = time.Now()
			}
			f.res.End = time.Now()
			results[i] = f.res
		}()
	}
	wg.Wait()
	return &Report{Targets: cfg.Targets, Results: results}, nil
}

// flow is one TCP or UDP flow's state.
type flow struct {
	cfg        *Config
	id         uint32
	src        netip.Addr
	dst        netip.AddrPort
	snat       []netip.Addr // the target's SNAT
	stop, hard context.Context
	res        FlowResult
	last       time.Time      // last successful round trip (or establishment)
	seen       netip.AddrPort // the first peer the backend reported (SNAT)

	req, want []byte
	rbuf      []byte
}

func (f *flow) fail(r Reason, err error) {
	if f.res.Outcome != "" {
		return
	}
	f.res.Outcome, f.res.Reason = Broken, r
	if r == ReasonCorrupt {
		f.res.Outcome = Corrupt
	}
	if err != nil {
		f.res.Err = err.Error()
	}
	if !f.last.IsZero() {
		f.res.MaxStall = max(f.res.MaxStall, time.Since(f.last))
	}
}

// failErr classifies err and fails the flow with it.
func (f *flow) failErr(err error) {
	f.fail(classify(err), err)
}

func classify(err error) Reason {
	switch {
	case errors.Is(err, ErrCorrupt), errors.Is(err, ErrMalformed), errors.Is(err, errProtocol):
		return ReasonCorrupt
	case errors.Is(err, errSwitched):
		return ReasonSwitched
	case errors.Is(err, errSource):
		return ReasonSource
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return ReasonReset
	case errors.Is(err, syscall.ECONNREFUSED):
		return ReasonRefused
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return ReasonTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return ReasonClosed
	}
	return ReasonOther
}

var (
	errProtocol = errors.New("unexpected record")
	errSwitched = errors.New("backend switched mid-flow")
	errSource   = errors.New("backend saw another client address")
)

// checkPeer verifies, with CheckSource, that the backend saw the flow come
// from the client's own address and port, or (a target with SNAT) from one
// of the SNAT addresses, the same address and port all along.
func (f *flow) checkPeer(peer string) error {
	if !f.cfg.CheckSource {
		return nil
	}
	ap, err := netip.ParseAddrPort(peer)
	if err != nil {
		return fmt.Errorf("backend reported peer %q: %w", peer, errSource)
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if len(f.snat) > 0 {
		if !slices.Contains(f.snat, ap.Addr()) {
			return fmt.Errorf("backend saw the flow from %s, not from a SNAT address %v: %w", ap, f.snat, errSource)
		}
		if f.seen.IsValid() && ap != f.seen {
			return fmt.Errorf("backend saw the flow from %s, earlier from %s: %w", ap, f.seen, errSource)
		}
		f.seen = ap
		return nil
	}
	if ap.Addr().Unmap() != f.res.Src.Addr().Unmap() || ap.Port() != f.res.Src.Port() {
		return fmt.Errorf("backend saw the flow from %s, the client is %s: %w", ap, f.res.Src, errSource)
	}
	return nil
}

func (f *flow) run() {
	f.res.Start = time.Now()
	f.req = make([]byte, 0, MaxRecordLen)
	f.want = make([]byte, MaxPayload)
	f.rbuf = make([]byte, 64<<10)
	if f.res.Proto == "udp" {
		f.runUDP()
	} else {
		f.runTCP()
	}
	if f.res.Outcome == "" {
		f.res.Outcome = Kept
	}
	if f.cfg.Carrier != nil && f.res.CarrierStart != "" {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		f.res.CarrierEnd, _ = f.cfg.Carrier.CarrierOf(ctx, f.res.FlowKey)
		cancel()
		f.res.Moved = f.res.CarrierEnd != "" && f.res.CarrierEnd != f.res.CarrierStart
	}
}

// deadline is when the current round trip must have completed.
func (f *flow) deadline() time.Time {
	d := f.last.Add(f.cfg.StallTimeout)
	if hd, ok := f.hard.Deadline(); ok && hd.Before(d) {
		d = hd
	}
	return d
}

// request builds the request of seq into f.req and its expected echo into
// f.want, returning the payload length.
func (f *flow) request(seq uint32) (int, error) {
	n := PayloadLen(f.cfg.Seed, f.id, seq, f.cfg.MaxPayload)
	FillPayload(f.want[:n], f.cfg.Seed, f.id, seq)
	var err error
	f.req, err = AppendRecord(f.req[:0], Record{Kind: KindRequest, Flow: f.id, Seq: seq, Payload: f.want[:n]})
	return n, err
}

// check verifies a reply to seq whose expected payload is f.want[:n].
func (f *flow) check(rep Record, seq uint32, n int) error {
	switch {
	case rep.Kind == KindCorrupt:
		return fmt.Errorf("backend %q saw a corrupt request: %w", rep.Name, ErrCorrupt)
	case rep.Kind != KindReply:
		return fmt.Errorf("%v record where a reply was due: %w", rep.Kind, errProtocol)
	case rep.Flow != f.id || rep.Seq != seq:
		return fmt.Errorf("reply for flow %d seq %d, expected flow %d seq %d: %w", rep.Flow, rep.Seq, f.id, seq, errProtocol)
	case !bytes.Equal(rep.Payload, f.want[:n]):
		return fmt.Errorf("echo of seq %d differs from what was sent (%d bytes, %d expected): %w", seq, len(rep.Payload), n, ErrCorrupt)
	}
	if err := f.checkPeer(rep.Peer); err != nil {
		return err
	}
	if f.res.Backend == "" {
		f.res.Backend = rep.Name
	} else if rep.Name != f.res.Backend {
		return fmt.Errorf("reply from %q, flow began on %q: %w", rep.Name, f.res.Backend, errSwitched)
	}
	return nil
}

// succeeded records a verified round trip.
func (f *flow) succeeded(n int) {
	now := time.Now()
	f.res.MaxStall = max(f.res.MaxStall, now.Sub(f.last))
	f.last = now
	f.res.RoundTrips++
	f.res.Bytes += int64(n)
	if f.res.RoundTrips == 1 && f.cfg.Carrier != nil {
		ctx, cancel := context.WithTimeout(f.hard, time.Second)
		f.res.CarrierStart, _ = f.cfg.Carrier.CarrierOf(ctx, f.res.FlowKey)
		cancel()
	}
}

// pause waits Interval; it reports false when the run is over.
func (f *flow) pause() bool {
	t := time.NewTimer(f.cfg.Interval)
	defer t.Stop()
	select {
	case <-t.C:
		return f.stop.Err() == nil
	case <-f.stop.Done():
		return false
	}
}

func (f *flow) runTCP() {
	var conn *net.TCPConn
	err := InNetns(f.cfg.Netns, func() error {
		d := net.Dialer{Timeout: f.cfg.StallTimeout}
		if f.src.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: f.src.AsSlice()}
		}
		c, err := d.DialContext(f.hard, "tcp", f.dst.String())
		if err != nil {
			return err
		}
		conn = c.(*net.TCPConn)
		return nil
	})
	if err != nil {
		f.fail(ReasonDial, err)
		return
	}
	defer conn.Close()
	f.res.Src = conn.LocalAddr().(*net.TCPAddr).AddrPort()
	f.last = time.Now()
	// Unblock reads and writes as soon as the hard bound passes.
	go func() {
		<-f.hard.Done()
		conn.SetDeadline(time.Now())
	}()

	br := bufio.NewReaderSize(conn, 2*MaxRecordLen)
	conn.SetReadDeadline(f.deadline())
	hello, err := ReadRecord(br, f.rbuf)
	if err != nil {
		f.failErr(fmt.Errorf("waiting for hello: %w", err))
		return
	}
	if hello.Kind != KindHello {
		f.failErr(fmt.Errorf("%v record where hello was due: %w", hello.Kind, errProtocol))
		return
	}
	f.res.Backend = hello.Name
	if err := f.checkPeer(hello.Peer); err != nil {
		f.failErr(err)
		return
	}
	for seq := uint32(1); ; seq++ {
		n, err := f.request(seq)
		if err != nil {
			f.failErr(err)
			return
		}
		conn.SetDeadline(f.deadline())
		if _, err := conn.Write(f.req); err != nil {
			f.failErr(fmt.Errorf("sending seq %d: %w", seq, err))
			return
		}
		rep, err := ReadRecord(br, f.rbuf)
		if err != nil {
			f.failErr(fmt.Errorf("waiting for reply %d: %w", seq, err))
			return
		}
		if err := f.check(rep, seq, n); err != nil {
			f.failErr(err)
			return
		}
		f.succeeded(n)
		if !f.pause() {
			return
		}
	}
}

func (f *flow) runUDP() {
	var conn *net.UDPConn
	err := InNetns(f.cfg.Netns, func() error {
		var laddr *net.UDPAddr
		if f.src.IsValid() {
			laddr = &net.UDPAddr{IP: f.src.AsSlice()}
		}
		c, err := net.DialUDP("udp", laddr, net.UDPAddrFromAddrPort(f.dst))
		conn = c
		return err
	})
	if err != nil {
		f.fail(ReasonDial, err)
		return
	}
	defer conn.Close()
	f.res.Src = conn.LocalAddr().(*net.UDPAddr).AddrPort()
	f.last = time.Now()

	for seq := uint32(1); ; seq++ {
		n, err := f.request(seq)
		if err != nil {
			f.failErr(err)
			return
		}
		if err := f.udpRoundTrip(conn, seq, n); err != nil {
			f.failErr(err)
			return
		}
		f.succeeded(n)
		if !f.pause() {
			return
		}
	}
}

// udpRoundTrip sends the request until its reply arrives, ignoring
// replies to earlier (retransmitted) requests.
func (f *flow) udpRoundTrip(conn *net.UDPConn, seq uint32, n int) error {
	for {
		deadline := f.deadline()
		if !time.Now().Before(deadline) {
			return fmt.Errorf("no reply to seq %d: %w", seq, os.ErrDeadlineExceeded)
		}
		if _, err := conn.Write(f.req); err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				return fmt.Errorf("sending seq %d: %w", seq, err)
			}
			// Transient (no route during a withdrawal...): retry after UDPRetry.
			time.Sleep(min(f.cfg.UDPRetry, time.Until(deadline)))
			continue
		}
		retry := time.Now().Add(f.cfg.UDPRetry)
		for {
			conn.SetReadDeadline(earlier(retry, deadline))
			m, err := conn.Read(f.rbuf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break // send again
			}
			if err != nil {
				return fmt.Errorf("waiting for reply %d: %w", seq, err)
			}
			rep, used, err := ParseRecord(f.rbuf[:m])
			if err == nil && used != m {
				err = fmt.Errorf("%d bytes after the reply: %w", m-used, ErrMalformed)
			}
			if err != nil {
				return fmt.Errorf("reply to seq %d: %w", seq, err)
			}
			if rep.Kind == KindReply && rep.Flow == f.id && rep.Seq < seq {
				continue // a late answer to a retransmission
			}
			return f.check(rep, seq, n)
		}
	}
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
