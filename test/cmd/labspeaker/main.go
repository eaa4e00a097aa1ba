// Command labspeaker stands in for tandemd's BGP side in the lab while
// tandemd cannot run: it reads a node.yaml (node/config), starts the
// embedded speaker (node/bgp) with its BGP section and announces the given
// VIPs and return prefixes until SIGTERM (which withdraws them) or SIGKILL
// (which the routers notice when the session closes).
//
//	ip netns exec tlab-n1 labspeaker -config /run/tandem-lab/tlab/n1/node.yaml \
//	    -vip 198.19.0.10/32 -vip fd00:7a6d:ff::10/128 -return 198.18.1.0/24 -return fd00:7a6d:0:1::/64
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tandem-lb/tandem/node/bgp"
	"github.com/tandem-lb/tandem/node/config"
)

type prefixes []netip.Prefix

func (p *prefixes) String() string { return fmt.Sprint(*p) }
func (p *prefixes) Set(s string) error {
	v, err := netip.ParsePrefix(s)
	if err != nil {
		return err
	}
	*p = append(*p, v)
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "labspeaker:", err)
		os.Exit(1)
	}
}

func run() error {
	path := flag.String("config", "", "node.yaml to take the BGP section from (required)")
	var vips, returns prefixes
	flag.Var(&vips, "vip", "VIP prefix to announce to the front routers (repeatable)")
	flag.Var(&returns, "return", "return prefix to announce to the back routers (repeatable)")
	flag.Parse()
	if *path == "" {
		return fmt.Errorf("no -config: give the node.yaml to read")
	}
	nc, err := config.Load(*path)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", nc.NodeID)
	cfg, err := bgp.FromNodeConfig(nc.BGP, log)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	sp, err := bgp.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer sp.Close()
	for _, p := range vips {
		if err := sp.Announce(ctx, p, config.PrefixVIPs); err != nil {
			return fmt.Errorf("announcing VIP %v: %w", p, err)
		}
	}
	for _, p := range returns {
		if err := sp.Announce(ctx, p, config.PrefixReturn); err != nil {
			return fmt.Errorf("announcing return prefix %v: %w", p, err)
		}
	}
	log.Info("announcing", "vips", vips.String(), "return", returns.String())
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			log.Info("withdrawing")
			return nil
		case <-t.C:
			ps, err := sp.Peers(ctx)
			if err != nil {
				continue
			}
			var states []string
			for _, p := range ps {
				states = append(states, fmt.Sprintf("%v=%s", p.Address, p.State))
			}
			log.Info("peers", "states", strings.Join(states, " "))
		}
	}
}
