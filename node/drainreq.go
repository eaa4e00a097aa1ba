package node

import (
	"context"
	"time"

	"github.com/tandem-lb/tandem/cluster"
)

// drainRequester is the part of Membership that forwards a drain to another
// member; *cluster.Cluster implements it.
type drainRequester interface {
	RequestDrain(id string, drained bool) error
}

// drainRequested runs a drain (or undrain) that an operator asked of this
// node through another node's API.
func (d *Daemon) drainRequested(r cluster.DrainRequest) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	if r.Drained {
		err = d.Drain(ctx)
	} else {
		err = d.Undrain(ctx)
	}
	if err != nil {
		d.log.Error("drain requested through the cluster", "by", r.From, "drained", r.Drained, "err", err)
	}
}
