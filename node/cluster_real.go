package node

import (
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/netip"

	"github.com/tandem-lb/tandem/cluster"
	"github.com/tandem-lb/tandem/node/config"
)

// BackplanePort is where partners will reach each other for mirroring and
// steering; the node tells the cluster its backplane address.
const BackplanePort = 7947

// PairID is the pair id both partners derive from their two node ids, so
// that a `partner:` configured on both sides names the same pair. It is
// below cluster.AutoPairBase and never 0 (0 means "no configured pair").
func PairID(a, b string) uint32 {
	if b < a {
		a, b = b, a
	}
	h := fnv.New32a()
	h.Write([]byte(a + "\x00" + b))
	return h.Sum32()%(cluster.AutoPairBase-1) + 1
}

func realCluster(cfg config.Config, tableSize uint32, apply func(cluster.Effect), log *slog.Logger) (Membership, error) {
	keys, err := config.LoadKeyring(cfg.Memberlist.KeyringFile)
	if err != nil {
		return nil, err
	}
	cc := cluster.DefaultClusterConfig()
	cc.NodeID = cfg.NodeID
	if cfg.Partner != "" {
		cc.Pair = PairID(cfg.NodeID, cfg.Partner)
	}
	cc.Backplane = netip.AddrPortFrom(cfg.Memberlist.BindAddr, BackplanePort)
	cc.BindAddr = cfg.Memberlist.BindAddr.String()
	cc.BindPort = cfg.Memberlist.BindPort
	cc.Keys = keys
	cc.StateDir = cfg.StateDir
	cc.TableSize = uint64(tableSize)
	cc.Apply = apply
	cc.Logger = log.With("component", "cluster")
	c, err := cluster.NewCluster(cc)
	if err != nil {
		return nil, fmt.Errorf("starting the cluster: %w", err)
	}
	return c, nil
}
