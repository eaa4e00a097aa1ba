package chaos

import (
	"context"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tandem-lb/tandem/node/api"
	"github.com/tandem-lb/tandem/test/traffic"
)

// ConnLister is the part of a node's API the carrier reads: its flow
// table. *api.Client implements it; tests give a fake.
type ConnLister interface {
	Connections(ctx context.Context, f api.ConnFilter) ([]api.Conn, error)
}

// TableCarrier implements traffic.Carrier from the nodes' flow tables.
//
// Method: every node's data plane keeps an entry per flow it forwarded
// (client → VIP), stateless flows included, with the time of its last
// packet (api.Conn.Idle, refreshed at most once a second). A flow that the
// front router moves to another node gets a new entry there, while the old
// node keeps a stale one until its LRU evicts it. So the node that carries
// a flow now is, among the nodes that answer and hold an entry for it, the
// one whose entry is the least idle (ties: the youngest entry, then the
// node name). A dead or frozen node does not answer and carries nothing.
// Entries are read through each node's API (GET /v1/connections, what
// "clusterctl show conn -o json" prints), in one snapshot of all nodes
// shared by the calls that arrive while it is taken; a call never uses a
// snapshot begun before it was made, so a flow's first packet is always
// in the snapshot that answers it.
type TableCarrier struct {
	nodes   map[string]ConnLister
	timeout time.Duration

	mu         sync.Mutex
	cond       *sync.Cond
	refreshing bool
	taken      time.Time // when the current snapshot was begun
	snap       map[connKey]string
}

type connKey struct {
	proto    string // "tcp" or "udp"
	src, dst netip.AddrPort
}

func keyOf(proto string, src, dst netip.AddrPort) connKey {
	return connKey{strings.ToLower(proto),
		netip.AddrPortFrom(src.Addr().Unmap(), src.Port()),
		netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())}
}

// NewTableCarrier returns a carrier over the named nodes' APIs; each
// node's answer is bounded by timeout (a frozen node answers nothing).
// Default timeout 500ms.
func NewTableCarrier(nodes map[string]ConnLister, timeout time.Duration) *TableCarrier {
	if timeout <= 0 {
		timeout = 500 * time.Millisecond
	}
	c := &TableCarrier{nodes: nodes, timeout: timeout}
	c.cond = sync.NewCond(&c.mu)
	return c
}

// CarrierOf implements traffic.Carrier: the node carrying flow, "" when
// no answering node holds an entry for it.
func (c *TableCarrier) CarrierOf(ctx context.Context, flow traffic.FlowKey) (string, error) {
	return c.snapshot(ctx)[keyOf(flow.Proto, flow.Src, flow.Dst)], nil
}

// Counts returns how many of flows each node carries now (one fresh
// snapshot).
func (c *TableCarrier) Counts(ctx context.Context, flows []traffic.FlowKey) map[string]int {
	snap := c.snapshot(ctx)
	out := map[string]int{}
	for _, f := range flows {
		if n := snap[keyOf(f.Proto, f.Src, f.Dst)]; n != "" {
			out[n]++
		}
	}
	return out
}

// snapshot returns a snapshot begun after the call: the one being taken
// when it was begun after the call, else a new one.
func (c *TableCarrier) snapshot(ctx context.Context) map[connKey]string {
	asked := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.taken.Before(asked) {
		if c.refreshing {
			c.cond.Wait()
			continue
		}
		c.refreshing = true
		begun := time.Now()
		c.mu.Unlock()
		snap := c.read(ctx)
		c.mu.Lock()
		c.refreshing = false
		c.snap, c.taken = snap, begun
		c.cond.Broadcast()
	}
	return c.snap
}

type entry struct {
	node      string
	idle, age time.Duration
}

// read takes one snapshot of every node's flow table, in parallel.
func (c *TableCarrier) read(ctx context.Context) map[connKey]string {
	var mu sync.Mutex
	var wg sync.WaitGroup
	best := map[connKey]entry{}
	for name, n := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, c.timeout)
			defer cancel()
			conns, err := n.Connections(rctx, api.ConnFilter{})
			if err != nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, cn := range conns {
				k := keyOf(cn.Proto, cn.Client, cn.VIP)
				e := entry{name, cn.Idle, cn.Age}
				if old, ok := best[k]; !ok || fresher(e, old) {
					best[k] = e
				}
			}
		}()
	}
	wg.Wait()
	out := make(map[connKey]string, len(best))
	for k, e := range best {
		out[k] = e.node
	}
	return out
}

// fresher reports whether entry a is more recent than b: less idle, then
// younger, then the lower node name (so that the choice is stable).
func fresher(a, b entry) bool {
	if a.idle != b.idle {
		return a.idle < b.idle
	}
	if a.age != b.age {
		return a.age < b.age
	}
	return a.node < b.node
}

// busiest returns the node carrying the most flows in counts (ties: the
// lowest name), or "".
func busiest(counts map[string]int) string {
	names := make([]string, 0, len(counts))
	for n := range counts {
		names = append(names, n)
	}
	sort.Strings(names)
	best := ""
	for _, n := range names {
		if best == "" || counts[n] > counts[best] {
			best = n
		}
	}
	return best
}
