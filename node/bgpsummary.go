package node

import (
	"context"
	"time"
)

// bgpPublisher is the part of Membership that gossips this node's BGP
// session summary; *cluster.Cluster implements it.
type bgpPublisher interface {
	SetBGP(up, peers int)
}

// publishBGP tells the cluster how many of this node's BGP sessions are
// established, so that `show cluster` on any node shows every node's
// routing state. The cluster gossips only a change.
func (d *Daemon) publishBGP(ctx context.Context) {
	pub, ok := d.membership().(bgpPublisher)
	if !ok {
		return
	}
	sp := d.speaker()
	if sp == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	peers, err := sp.Peers(ctx)
	if err != nil {
		return
	}
	up := 0
	for _, p := range peers {
		if p.Established {
			up++
		}
	}
	pub.SetBGP(up, len(peers))
}
