package node

import (
	"context"
	"net/netip"
	"slices"
	"sync"

	"github.com/tandem-lb/tandem/node/bgp"
	"github.com/tandem-lb/tandem/node/config"
)

// noPeers is the Speaker of a node configured without BGP (a lab where
// traffic is routed to the node statically): it keeps the list of what
// would be announced, for `show node` and metrics, and sends nothing.
type noPeers struct {
	mu       sync.Mutex
	prefixes map[netip.Prefix]bool
	draining bool
	closed   bool
}

func newNoPeers() *noPeers { return &noPeers{prefixes: map[netip.Prefix]bool{}} }

func (n *noPeers) Announce(ctx context.Context, p netip.Prefix, kind config.PrefixKind, communities ...uint32) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return bgp.ErrClosed
	}
	n.prefixes[p.Masked()] = true
	return nil
}

func (n *noPeers) Withdraw(ctx context.Context, p netip.Prefix) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return bgp.ErrClosed
	}
	delete(n.prefixes, p.Masked())
	return nil
}

func (n *noPeers) Drain(ctx context.Context) error   { n.set(true); return nil }
func (n *noPeers) Undrain(ctx context.Context) error { n.set(false); return nil }

func (n *noPeers) set(d bool) {
	n.mu.Lock()
	n.draining = d
	n.mu.Unlock()
}

func (n *noPeers) Draining() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.draining
}

func (n *noPeers) Announced() []netip.Prefix {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]netip.Prefix, 0, len(n.prefixes))
	for p := range n.prefixes {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

func (n *noPeers) Peers(ctx context.Context) ([]bgp.PeerState, error) { return nil, nil }

func (n *noPeers) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closed = true
	n.prefixes = map[netip.Prefix]bool{}
	return nil
}
