package chaos

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/tandem-lb/tandem/deploy/lab"
	"github.com/tandem-lb/tandem/node"
	"github.com/tandem-lb/tandem/test/traffic"
)

// SynAck is the scenario in which a flow's owner dies between the SYN-ACK
// and the client's final ACK. It is not a Run scenario: it opens its own
// connections (RunSynAck).
const SynAck Scenario = "synack"

// synackTable is the nftables table that holds the client's final ACKs
// back, in the client's namespace.
const synackTable = "tandem_synack"

// SynAckConfig configures RunSynAck.
type SynAckConfig struct {
	// Targets are the stateful vservers the held flows go to. Default: the
	// runner's stateful (USIP ON) targets on port 80.
	Targets []netip.AddrPort
	// Flows is the number of held flows per target. Default 16.
	Flows int
	// BasePort is the first client port of the held flows, one per flow
	// and target, outside the kernel's ephemeral range so that no other
	// socket meets the hold. Default 20000, with Unmirrored 21000.
	BasePort uint16
	// Wait bounds, after the release, a held connection's round trip and
	// then its retry's. Default 10s (the client's retransmission timer
	// has backed off to 1.6 or 3.2 s by the release).
	Wait time.Duration
	// Unmirrored cuts the mirroring link of the pair with n1 (nftables in
	// both members' namespaces drop the backplane port's TCP) before the
	// handshakes, and kills that pair's active member: the owner dies
	// before its partner has the flows' entries, the case the rules say
	// is not recovered and the client retries. Default false: the link
	// runs, and the entries reach the partner within its flush interval.
	Unmirrored bool
}

func (c *SynAckConfig) setDefaults(r *Runner) {
	if len(c.Targets) == 0 {
		for _, t := range r.cfg.Targets {
			if t.Mode == ModeStateful && t.Addr.Port() == 80 {
				c.Targets = append(c.Targets, t.Addr)
			}
		}
	}
	if c.Flows == 0 {
		c.Flows = 16
	}
	if c.BasePort == 0 {
		// Closed held connections stay in TIME_WAIT for a minute: the
		// two variants use ports of their own.
		c.BasePort = 20000
		if c.Unmirrored {
			c.BasePort = 21000
		}
	}
	if c.Wait == 0 {
		c.Wait = 10 * time.Second
	}
}

// SynAckFlow is one held flow's fate.
type SynAckFlow struct {
	traffic.FlowKey
	// Owner is the pair that owned the flow when its final ACK was held
	// (0: no node's table named one).
	Owner uint32
	// Orphaned is set when Owner is the pair whose active member was
	// killed: its owner died between the SYN-ACK and the final ACK.
	Orphaned bool
	// Completed is set when the held connection, released, carried its
	// round trip (hello and the echo of its request, verified).
	Completed bool
	// Backend served the completed connection or the retry.
	Backend string
	// Took is the time from the release to the verified reply.
	Took time.Duration
	// Err says why the held connection did not complete.
	Err string
	// Retried is set when a new connection was opened after the held one
	// failed; RetryOK when it carried its round trip, else RetryErr.
	Retried, RetryOK bool
	RetryErr         string
}

// SynAckResult is the outcome of RunSynAck.
type SynAckResult struct {
	Victim string
	// Unmirrored: the victim's pair had its mirroring link cut.
	Unmirrored bool
	Events     []Event
	Flows      []SynAckFlow
	Took       time.Duration
}

// RunSynAck shows what happens to TCP flows whose owner dies between the
// SYN-ACK and the client's final ACK. In the client's namespace an
// nftables rule drops every packet but SYNs from the held flows' ports:
// their handshakes reach the owner (the SYN creates the flow entry there,
// and its mirror), the SYN-ACK reaches the client, and the client's final
// ACK and its first request are held back. The active member of the pair
// owning most held flows is SIGKILLed; once the front router has dropped
// it and a second has passed (the partner has taken over), the rule is
// removed and the client's kernel retransmits. A held connection either
// completes (its hello and the echo of its request arrive, verified) or
// fails within Wait; a failed one is retried by the client with a new
// connection, which must carry its round trip. The victim is restarted
// and the lab made whole afterwards.
func (r *Runner) RunSynAck(ctx context.Context, cfg SynAckConfig) (*SynAckResult, error) {
	cfg.setDefaults(r)
	if len(cfg.Targets) == 0 {
		return nil, errors.New("synack: no stateful target on port 80: run with Config.Stateful")
	}
	if int(cfg.BasePort)+cfg.Flows*len(cfg.Targets) > 32768 {
		return nil, fmt.Errorf("synack: ports %d.. run into the ephemeral range", cfg.BasePort)
	}
	began := time.Now()
	if err := r.ready(ctx); err != nil {
		return nil, fmt.Errorf("synack: the lab is not ready: %w", err)
	}
	out := &SynAckResult{Unmirrored: cfg.Unmirrored}
	tl := &timeline{start: time.Now(), log: r.log.With("scenario", SynAck)}
	var victim, partner string
	if cfg.Unmirrored {
		for _, p := range r.pairs(ctx) {
			for _, m := range p.Members {
				if m == lab.NodeName(1) {
					victim = p.Active
				}
			}
		}
		partner = r.partnerOf(victim)
		if victim == "" || partner == "" {
			return nil, errors.New("synack: n1's pair has no active member and partner")
		}
		defer r.mirrorLink(context.WithoutCancel(ctx), false, victim, partner)
		if err := r.mirrorLink(ctx, true, victim, partner); err != nil {
			return nil, err
		}
		tl.add("%s, %s: mirroring link cut (TCP port %d dropped)", victim, partner, node.BackplanePort)
	}
	last := cfg.BasePort + uint16(cfg.Flows*len(cfg.Targets)) - 1
	if err := r.hold(ctx, cfg.BasePort, last); err != nil {
		return nil, err
	}
	held := true
	defer func() {
		if held {
			r.release(context.WithoutCancel(ctx))
		}
	}()
	tl.add("client: packets other than SYNs from ports %d-%d dropped", cfg.BasePort, last)

	conns, flows, err := r.openHeld(ctx, cfg)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	if err != nil {
		return nil, err
	}
	tl.add("%d connections established at the client (SYN-ACK received), final ACK and first request held", len(conns))

	keys := make([]traffic.FlowKey, len(flows))
	for i := range flows {
		keys[i] = flows[i].FlowKey
	}
	owners := r.owners(ctx, keys)
	pairs := r.pairs(ctx)
	if victim == "" {
		victim = statefulVictim(owners, pairs)
	}
	if victim == "" {
		return nil, errors.New("synack: no node's flow table names an owner of the held flows")
	}
	var lost uint32
	for _, p := range pairs {
		for _, m := range p.Members {
			if m == victim {
				lost = p.ID
			}
		}
	}
	for i := range flows {
		flows[i].Owner = owners[flows[i].FlowKey]
		flows[i].Orphaned = flows[i].Owner != 0 && flows[i].Owner == lost
	}
	tl.add("held flows by owning pair: %s (victim %s)", ownerCounts(owners, pairs), victim)
	out.Victim = victim

	actErr := func() error {
		if err := r.lab.Signal(victim, syscall.SIGKILL); err != nil {
			return err
		}
		tl.add("SIGKILL %s", victim)
		if _, err := r.waitHops(ctx, r.cfg.Lab.Nodes-1, r.cfg.Lab.HoldTime+2*time.Second); err != nil {
			return err
		}
		tl.add("rfront: %s out of the ECMP set", victim)
		if cfg.Unmirrored {
			// No closing link tells the partner: it takes over when
			// the cluster declares the victim dead.
			if err := retry(ctx, 10*time.Second, func() error {
				for _, p := range r.pairs(ctx) {
					if p.ID == lost && p.Active != partner {
						return fmt.Errorf("pair %d active %q", p.ID, p.Active)
					}
				}
				return nil
			}); err != nil {
				return err
			}
			tl.add("%s took the pair over", partner)
		}
		sleep(ctx, time.Second)
		if err := r.release(ctx); err != nil {
			return err
		}
		held = false
		tl.add("client: hold released")
		return nil
	}()
	if actErr == nil {
		released := time.Now()
		r.finishHeld(ctx, cfg, conns, flows, released)
		tl.add("held connections done")
	}
	if cfg.Unmirrored {
		if err := r.mirrorLink(ctx, false, victim, partner); err != nil && actErr == nil {
			actErr = err
		}
		tl.add("%s, %s: mirroring link restored", victim, partner)
	}
	out.Flows = flows

	restoreErr := r.restore(ctx, Kill9, victim, tl)
	if restoreErr == nil {
		restoreErr = r.WaitReady(ctx)
	}
	if restoreErr == nil {
		tl.add("lab whole again")
	}
	out.Events, out.Took = tl.events, time.Since(began)
	if actErr != nil {
		return out, fmt.Errorf("synack on %s: %w", victim, actErr)
	}
	if restoreErr != nil {
		return out, fmt.Errorf("synack on %s: %w: %w", victim, ErrLabBroken, restoreErr)
	}
	return out, nil
}

// hold installs the client's nftables rule dropping all but SYNs from the
// client ports first..last.
func (r *Runner) hold(ctx context.Context, first, last uint16) error {
	rules := fmt.Sprintf(`table inet %s {
  chain out {
    type filter hook output priority 0; policy accept;
    tcp sport %d-%d tcp flags & syn == 0 drop
  }
}`, synackTable, first, last)
	r.release(ctx) // a table left by an interrupted run
	if b, err := r.lab.Command(ctx, lab.RoleClient, "nft", rules).CombinedOutput(); err != nil {
		return fmt.Errorf("synack: installing the hold: %w: %s", err, strings.TrimSpace(string(b)))
	}
	return nil
}

// mirrorTable is the nftables table that cuts a node's mirroring link.
const mirrorTable = "tandem_nomirror"

// mirrorLink cuts (cut) or restores the mirroring link of nodes: in each
// one's namespace TCP to and from the backplane port is dropped.
func (r *Runner) mirrorLink(ctx context.Context, cut bool, nodes ...string) error {
	rules := fmt.Sprintf(`table inet %s {
  chain in {
    type filter hook input priority 0; policy accept;
    tcp dport %d drop
    tcp sport %d drop
  }
  chain out {
    type filter hook output priority 0; policy accept;
    tcp dport %d drop
    tcp sport %d drop
  }
}`, mirrorTable, node.BackplanePort, node.BackplanePort, node.BackplanePort, node.BackplanePort)
	var errs []error
	for _, n := range nodes {
		b, err := r.lab.Command(ctx, n, "nft", "delete", "table", "inet", mirrorTable).CombinedOutput()
		if err != nil && !strings.Contains(string(b), "No such file") {
			errs = append(errs, fmt.Errorf("%s: %w: %s", n, err, strings.TrimSpace(string(b))))
		}
		if !cut {
			continue
		}
		if b, err := r.lab.Command(ctx, n, "nft", rules).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("%s: cutting the mirroring link: %w: %s", n, err, strings.TrimSpace(string(b))))
		}
	}
	return errors.Join(errs...)
}

func (r *Runner) release(ctx context.Context) error {
	b, err := r.lab.Command(ctx, lab.RoleClient, "nft", "delete", "table", "inet", synackTable).CombinedOutput()
	if err != nil && !strings.Contains(string(b), "No such file") {
		return fmt.Errorf("synack: releasing the hold: %w: %s", err, strings.TrimSpace(string(b)))
	}
	return nil
}

// openHeld opens the held connections, one per flow and target, each from
// its own client address and port, and writes its first request (held).
func (r *Runner) openHeld(ctx context.Context, cfg SynAckConfig) ([]*net.TCPConn, []SynAckFlow, error) {
	var conns []*net.TCPConn
	var flows []SynAckFlow
	srcs := map[bool][]netip.Addr{}
	for _, a := range r.cfg.Lab.ClientAddrs() {
		srcs[a.Is4()] = append(srcs[a.Is4()], a)
	}
	port := cfg.BasePort
	for _, dst := range cfg.Targets {
		fam := srcs[dst.Addr().Is4()]
		if len(fam) == 0 {
			return conns, flows, fmt.Errorf("synack: no client address for %s", dst)
		}
		for k := 0; k < cfg.Flows; k++ {
			src := netip.AddrPortFrom(fam[k%len(fam)], port)
			port++
			var c *net.TCPConn
			err := traffic.InNetns(r.lab.NetnsPath(lab.RoleClient), func() error {
				d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: net.TCPAddrFromAddrPort(src)}
				nc, err := d.DialContext(ctx, "tcp", dst.String())
				if err != nil {
					return err
				}
				c = nc.(*net.TCPConn)
				return nil
			})
			if err != nil {
				return conns, flows, fmt.Errorf("synack: connecting %s -> %s (the SYN-ACK must reach the client): %w", src, dst, err)
			}
			id := uint32(len(flows) + 1)
			req, _ := synackRequest(id)
			if _, err := c.Write(req); err != nil {
				c.Close()
				return conns, flows, fmt.Errorf("synack: writing %s -> %s: %w", src, dst, err)
			}
			conns = append(conns, c)
			flows = append(flows, SynAckFlow{FlowKey: traffic.FlowKey{Proto: "tcp", Src: src, Dst: dst}})
		}
	}
	return conns, flows, nil
}

// synackRequest is flow id's request: seq 1 with a payload derived from
// the id, and that payload.
func synackRequest(id uint32) ([]byte, []byte) {
	p := make([]byte, 64+id%64)
	traffic.FillPayload(p, 0x5a5a, id, 1)
	b, _ := traffic.AppendRecord(nil, traffic.Record{Kind: traffic.KindRequest, Flow: id, Seq: 1, Payload: p})
	return b, p
}

// finishHeld reads each held connection's hello and reply; a connection
// that fails is retried with a new one from the same client address.
func (r *Runner) finishHeld(ctx context.Context, cfg SynAckConfig, conns []*net.TCPConn, flows []SynAckFlow, released time.Time) {
	var wg sync.WaitGroup
	for i := range flows {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := &flows[i]
			id := uint32(i + 1)
			conns[i].SetDeadline(released.Add(cfg.Wait))
			name, err := roundTrip(conns[i], id, false)
			if err == nil {
				f.Completed, f.Backend, f.Took = true, name, time.Since(released)
				return
			}
			f.Err = err.Error()
			f.Retried = true
			var c *net.TCPConn
			err = traffic.InNetns(r.lab.NetnsPath(lab.RoleClient), func() error {
				d := net.Dialer{Timeout: cfg.Wait, LocalAddr: &net.TCPAddr{IP: f.Src.Addr().AsSlice()}}
				nc, err := d.DialContext(ctx, "tcp", f.Dst.String())
				if err != nil {
					return err
				}
				c = nc.(*net.TCPConn)
				return nil
			})
			if err == nil {
				defer c.Close()
				c.SetDeadline(time.Now().Add(cfg.Wait))
				f.Backend, err = roundTrip(c, id, true)
			}
			if err != nil {
				f.RetryErr = err.Error()
				return
			}
			f.RetryOK = true
		}()
	}
	wg.Wait()
}

// roundTrip reads the backend's hello and the echo of flow id's request
// (written first when write is set) and returns the backend's name.
func roundTrip(c *net.TCPConn, id uint32, write bool) (string, error) {
	req, payload := synackRequest(id)
	if write {
		if _, err := c.Write(req); err != nil {
			return "", err
		}
	}
	br := bufio.NewReader(c)
	buf := make([]byte, traffic.MaxRecordLen)
	hello, err := traffic.ReadRecord(br, buf)
	if err != nil {
		return "", fmt.Errorf("waiting for hello: %w", err)
	}
	if hello.Kind != traffic.KindHello {
		return "", fmt.Errorf("%v record where hello was due", hello.Kind)
	}
	name := hello.Name
	rep, err := traffic.ReadRecord(br, buf)
	if err != nil {
		return name, fmt.Errorf("waiting for the reply: %w", err)
	}
	if rep.Kind != traffic.KindReply || rep.Flow != id || rep.Seq != 1 || !bytes.Equal(rep.Payload, payload) {
		return name, fmt.Errorf("reply %v flow %d seq %d (%d bytes) to flow %d seq 1 (%d bytes): %w",
			rep.Kind, rep.Flow, rep.Seq, len(rep.Payload), id, len(payload), traffic.ErrCorrupt)
	}
	return name, nil
}

// SynAckCounts sums a SynAckResult up.
type SynAckCounts struct {
	Orphaned, OrphanedCompleted, Retried, RetryOK int
	Others, OthersCompleted                       int
	Corrupt                                       int
	MaxTook                                       time.Duration
}

// Counts returns the result's counts.
func (r *SynAckResult) Counts() SynAckCounts {
	var c SynAckCounts
	for _, f := range r.Flows {
		if f.Orphaned {
			c.Orphaned++
			if f.Completed {
				c.OrphanedCompleted++
			}
		} else {
			c.Others++
			if f.Completed {
				c.OthersCompleted++
			}
		}
		if f.Retried {
			c.Retried++
			if f.RetryOK {
				c.RetryOK++
			}
		}
		if strings.Contains(f.Err, traffic.ErrCorrupt.Error()) || strings.Contains(f.RetryErr, traffic.ErrCorrupt.Error()) {
			c.Corrupt++
		}
		if f.Completed {
			c.MaxTook = max(c.MaxTook, f.Took)
		}
	}
	return c
}

// Line is the result's line for scripts:
//
//	chaos scenario=synack flows=32 orphaned=18 orphaned_completed=18 others=14 others_completed=14 retried=0 retry_ok=0 corrupt=0 max_took_ms=1650
func (r *SynAckResult) Line() string {
	c := r.Counts()
	sc := "synack"
	if r.Unmirrored {
		sc = "synack-unmirrored"
	}
	return fmt.Sprintf("chaos scenario=%s flows=%d orphaned=%d orphaned_completed=%d others=%d others_completed=%d retried=%d retry_ok=%d corrupt=%d max_took_ms=%d",
		sc, len(r.Flows), c.Orphaned, c.OrphanedCompleted, c.Others, c.OthersCompleted, c.Retried, c.RetryOK, c.Corrupt, c.MaxTook.Milliseconds())
}

// Table renders the result for people.
func (r *SynAckResult) Table() string {
	var b strings.Builder
	sc := "synack"
	if r.Unmirrored {
		sc = "synack (mirroring link cut)"
	}
	fmt.Fprintf(&b, "== scenario %s on %s (%v)\n", sc, r.Victim, r.Took.Round(100*time.Millisecond))
	for _, e := range r.Events {
		fmt.Fprintf(&b, "  %7.2fs  %s\n", e.At.Seconds(), e.What)
	}
	c := r.Counts()
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HELD FLOWS\tFLOWS\tCOMPLETED\tRETRIED\tRETRY OK")
	fmt.Fprintf(tw, "owner killed\t%d\t%d\t%d\t%d\n", c.Orphaned, c.OrphanedCompleted, c.Orphaned-c.OrphanedCompleted, c.Orphaned-c.OrphanedCompleted-countRetryFailed(r.Flows, true))
	fmt.Fprintf(tw, "owner alive\t%d\t%d\t%d\t%d\n", c.Others, c.OthersCompleted, c.Others-c.OthersCompleted, c.Others-c.OthersCompleted-countRetryFailed(r.Flows, false))
	tw.Flush()
	shown := 0
	for _, f := range r.Flows {
		if f.Completed || shown == 10 {
			continue
		}
		shown++
		fmt.Fprintf(&b, "  not completed: %v (pair %d): %s; retry ok=%v %s\n", f.FlowKey, f.Owner, f.Err, f.RetryOK, f.RetryErr)
	}
	return b.String()
}

func countRetryFailed(fs []SynAckFlow, orphaned bool) int {
	n := 0
	for _, f := range fs {
		if f.Orphaned == orphaned && f.Retried && !f.RetryOK {
			n++
		}
	}
	return n
}

// Failures checks what the scenario must show: some held flow was owned
// by the killed pair (else it proved nothing); every held flow either
// completed or was retried successfully by the client; flows of the
// surviving pairs completed on their own connection; nothing corrupt.
func (r *SynAckResult) Failures() []string {
	c := r.Counts()
	var out []string
	if c.Orphaned == 0 {
		out = append(out, "synack: no held flow was owned by the killed pair: the fault proved nothing")
	}
	if c.Retried != c.RetryOK {
		out = append(out, fmt.Sprintf("synack: %d of %d retries failed", c.Retried-c.RetryOK, c.Retried))
	}
	if c.Others != c.OthersCompleted {
		out = append(out, fmt.Sprintf("synack: %d of %d held flows of surviving pairs did not complete", c.Others-c.OthersCompleted, c.Others))
	}
	if c.Corrupt > 0 {
		out = append(out, fmt.Sprintf("synack: %d corrupt", c.Corrupt))
	}
	return out
}
