package cluster

// Gossip: what this node sends (broadcasts, direct sends) and how it takes
// what memberlist hands it (the Delegate and EventDelegate implementations).

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"

	"github.com/hashicorp/memberlist"
)

// storeChanged is the Store's OnChange: called under the store's lock, so
// it only queues. A local change is gossiped and also sent directly to
// every live member over memberlist's reliable (TCP) channel: operator
// edits are rare, and this makes them arrive in one round trip even when
// gossip packets are lost; gossip and push/pull remain the repair path.
func (c *Cluster) storeChanged(changed []Entry, local bool) {
	if local {
		msg := Message{Type: MsgDelta, From: c.cfg.NodeID, Entries: changed}
		c.broadcast(msg)
		b, err := msg.Encode()
		if err != nil {
			c.log.Error("encoding delta", "err", err)
			return
		}
		c.directMu.Lock()
		c.direct = append(c.direct, b)
		c.directMu.Unlock()
	}
	c.kick()
}

// sendDirect sends queued messages to every live member, one goroutine
// per member (a dead member costs a TCP timeout, not a stalled loop).
func (c *Cluster) sendDirect() {
	c.directMu.Lock()
	bufs := c.direct
	if c.directHealth != nil {
		bufs = append(bufs, c.directHealth)
	}
	c.direct, c.directHealth = nil, nil
	c.directMu.Unlock()
	if len(bufs) == 0 {
		return
	}
	for _, mem := range c.Members() {
		if mem.Self || mem.State != StateAlive.String() && mem.State != StateSuspect.String() || !mem.Addr.IsValid() {
			continue
		}
		// A copy of the node: memberlist's own Node values change under its lock.
		to := &memberlist.Node{Name: mem.ID, Addr: mem.Addr.Addr().AsSlice(), Port: mem.Addr.Port()}
		c.senders.Add(1)
		go func() {
			defer c.senders.Done()
			for _, b := range bufs {
				if err := c.list.SendReliable(to, b); err != nil {
					c.log.Debug("sending delta directly", "member", to.Name, "err", err)
					return
				}
			}
		}()
	}
}

// maxGossip is the size above which a delta is split so that each part fits
// one gossip packet (memberlist's UDP buffer is 1400 bytes, minus headers,
// encryption and compound framing).
const maxGossip = 1000

// maxPacket is the largest message gossip can carry in one packet (1400
// bytes of UDP buffer minus memberlist's framing and encryption overhead).
const maxPacket = 1300

// broadcast gossips msg. A message too large for a gossip packet (a health
// report of hundreds of services) cannot be gossiped: this node's own is
// sent directly to every member over TCP, a relayed one is dropped (its
// origin sends it directly too, and push/pull carries every report).
func (c *Cluster) broadcast(msg Message) {
	for _, part := range splitDelta(msg, maxGossip) {
		b, err := part.Encode()
		if err != nil {
			c.log.Error("encoding broadcast", "type", msg.Type, "err", err)
			continue
		}
		if len(b) > maxPacket {
			if part.From == c.cfg.NodeID {
				c.directMu.Lock()
				if part.Type == MsgHealth {
					c.directHealth = b // only the latest report matters
				} else {
					c.direct = append(c.direct, b)
				}
				c.directMu.Unlock()
				c.kick()
			}
			continue
		}
		name := ""
		if msg.Type == MsgHealth {
			// A newer report of a node replaces its older one in the queue.
			name = "health/" + msg.From
		}
		c.queue.QueueBroadcast(&gossip{msg: b, name: name})
	}
}

// splitDelta splits a delta's entries into messages of at most limit bytes
// (a single entry larger than that is sent alone; push/pull carries it if
// gossip cannot).
func splitDelta(msg Message, limit int) []Message {
	if msg.Type != MsgDelta {
		return []Message{msg}
	}
	var out []Message
	cur := Message{Type: MsgDelta, From: msg.From}
	size := 0
	for _, e := range msg.Entries {
		n := len(e.encode()) + 1
		if len(cur.Entries) > 0 && size+n > limit {
			out = append(out, cur)
			cur = Message{Type: MsgDelta, From: msg.From}
			size = 0
		}
		cur.Entries = append(cur.Entries, e)
		size += n
	}
	if len(cur.Entries) > 0 {
		out = append(out, cur)
	}
	return out
}

type gossip struct {
	msg  []byte
	name string
	done chan struct{} // closed by Finished, if set
	once sync.Once
}

func (g *gossip) Message() []byte { return g.msg }
func (g *gossip) Finished() {
	if g.done != nil {
		g.once.Do(func() { close(g.done) })
	}
}
func (g *gossip) Invalidates(o memberlist.Broadcast) bool {
	og, ok := o.(*gossip)
	return ok && g.name != "" && g.name == og.name
}

// delegate implements memberlist.Delegate.
type delegate Cluster

func (d *delegate) c() *Cluster { return (*Cluster)(d) }

func (d *delegate) NodeMeta(limit int) []byte {
	c := d.c()
	c.mu.Lock()
	meta := c.machine.Meta()
	c.mu.Unlock()
	b, err := EncodeMeta(meta)
	if err != nil || len(b) > limit {
		c.log.Error("node metadata does not fit", "err", err, "limit", limit)
		return nil
	}
	return b
}

func (d *delegate) NotifyMsg(b []byte) {
	c := d.c()
	msg, err := DecodeMessage(b)
	if err != nil {
		c.log.Warn("dropping gossip", "err", err)
		return
	}
	c.receive(msg)
}

// receive applies a gossiped message. What was new to this node is
// gossiped on (memberlist only retransmits a broadcast a few times from its
// origin, which can miss nodes; re-gossiping what is new spreads it
// epidemically, and stops by itself where nothing is new).
func (c *Cluster) receive(msg Message) {
	if len(msg.Entries) > 0 {
		changed, err := c.store.Merge(msg.Entries)
		if err != nil {
			c.log.Error("merging configuration", "from", msg.From, "err", err)
		}
		if len(changed) > 0 && msg.Type == MsgDelta {
			c.broadcast(Message{Type: MsgDelta, From: c.cfg.NodeID, Entries: changed})
		}
	}
	if msg.Type == MsgDrain {
		if msg.Target == c.cfg.NodeID {
			c.log.Info("drain requested", "by", msg.From, "drained", msg.Drained)
			c.mu.Lock()
			c.pending = append(c.pending, DrainRequest{Drained: msg.Drained, From: msg.From})
			c.mu.Unlock()
			c.kick()
		}
		return
	}
	if msg.Type == MsgLeave {
		known := false
		c.withMachine(func(m *Machine) {
			for _, mem := range m.Members() {
				known = known || mem.ID == msg.From && !mem.Self
			}
			m.MemberLeft(msg.From)
		})
		if known {
			c.broadcast(msg)
		}
		return
	}
	if len(msg.Health) == 0 && msg.Type != MsgDead {
		return
	}
	var fresh []HealthReport
	newDead := false
	c.withMachine(func(m *Machine) {
		for _, h := range msg.Health {
			if m.Health(h) {
				fresh = append(fresh, h)
			}
		}
		if msg.Type == MsgDead && msg.Dead != c.cfg.NodeID {
			for _, mem := range m.Members() {
				if mem.ID == msg.Dead && mem.State != StateDead.String() {
					newDead = true
				}
			}
			m.DeclareDead(msg.Dead)
		}
	})
	if msg.Type == MsgHealth {
		for _, h := range fresh {
			c.broadcast(Message{Type: MsgHealth, From: h.Node, Health: []HealthReport{h}})
		}
	}
	if newDead {
		c.broadcast(msg)
	}
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.c().queue.GetBroadcasts(overhead, limit)
}

func (d *delegate) LocalState(join bool) []byte {
	c := d.c()
	c.mu.Lock()
	health := c.machine.HealthReports()
	c.mu.Unlock()
	msg := Message{Type: MsgState, From: c.cfg.NodeID, Entries: c.store.Entries(), Health: health}
	b, err := msg.Encode()
	if err != nil {
		c.log.Error("encoding state", "err", err)
		return nil
	}
	return b
}

func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	c := d.c()
	msg, err := DecodeMessage(buf)
	if err != nil || msg.Type != MsgState {
		c.log.Warn("dropping remote state", "err", err, "type", msg.Type)
		return
	}
	c.receive(msg)
}

// events implements memberlist.EventDelegate.
type events Cluster

func (e *events) member(n *memberlist.Node, state MemberState) {
	c := (*Cluster)(e)
	meta, err := DecodeMeta(n.Meta)
	if err != nil {
		c.log.Warn("ignoring member with bad metadata", "member", n.Name, "err", err)
		return
	}
	if meta.ID != n.Name {
		c.log.Warn("ignoring member whose metadata names another node", "member", n.Name, "meta", meta.ID)
		return
	}
	var addr netip.AddrPort
	if ip, ok := netip.AddrFromSlice(n.Addr); ok {
		addr = netip.AddrPortFrom(ip.Unmap(), n.Port)
	}
	c.withMachine(func(m *Machine) { m.Member(meta, addr, state) })
}

func (e *events) NotifyJoin(n *memberlist.Node)   { e.member(n, StateAlive) }
func (e *events) NotifyUpdate(n *memberlist.Node) { e.member(n, StateAlive) }

// NotifyLeave: memberlist calls it for failures and leaves alike (the
// Node's State field is not kept up to date); the Machine tells them apart
// by the Leaving flag of the node's last metadata.
func (e *events) NotifyLeave(n *memberlist.Node) { e.member(n, StateDead) }

// logWriter turns memberlist's "[LEVEL] memberlist: ..." lines into slog.
type logWriter struct{ log *slog.Logger }

func (w *logWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelDebug
	switch {
	case strings.Contains(line, "[ERR]"):
		level = slog.LevelError
	case strings.Contains(line, "[WARN]"):
		level = slog.LevelWarn
	case strings.Contains(line, "[INFO]"):
		level = slog.LevelInfo
	}
	if i := strings.Index(line, "memberlist: "); i >= 0 {
		line = line[i+len("memberlist: "):]
	}
	w.log.Log(context.Background(), level, line, "component", "memberlist")
	return len(p), nil
}

var _ io.Writer = (*logWriter)(nil)
