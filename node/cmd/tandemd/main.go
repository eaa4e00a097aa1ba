// Command tandemd is the Tandem node daemon: one per load-balancer node.
//
//	tandemd --config /etc/tandem/node.yaml
//
// It runs until SIGTERM or SIGINT, then withdraws its routes before it
// unloads the data plane, and exits 0 after a clean shutdown.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/tandem-lb/tandem/node"
	"github.com/tandem-lb/tandem/node/config"
	"github.com/tandem-lb/tandem/node/instance"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("tandemd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/tandem/node.yaml", "node configuration file")
	check := fs.Bool("check", false, "parse the configuration, print it and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "tandemd: %v\n", err)
		return 2
	}
	if *check {
		if err := checkFiles(cfg); err != nil {
			fmt.Fprintf(stderr, "tandemd: %s: %v\n", *path, err)
			return 2
		}
		fmt.Fprintf(stderr, "%s: ok (node %s)\n", *path, cfg.NodeID)
		return 0
	}
	opts := &slog.HandlerOptions{Level: cfg.Log.SlogLevel()}
	var h slog.Handler = slog.NewTextHandler(stderr, opts)
	if cfg.Log.Format == config.LogJSON {
		h = slog.NewJSONHandler(stderr, opts)
	}
	log := slog.New(h).With("node", cfg.NodeID)
	slog.SetDefault(log)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := node.New(cfg, node.Deps{}, log).Run(ctx, nil); err != nil {
		log.Error("tandemd failed", "err", err)
		if errors.Is(err, instance.ErrAlreadyRunning) {
			return 3
		}
		return 1
	}
	log.Info("tandemd stopped cleanly")
	return 0
}

// checkFiles reads the files the configuration names (keyring, API token or
// TLS files), so that --check catches what would stop the daemon at start.
func checkFiles(cfg config.Config) error {
	if _, err := config.LoadKeyring(cfg.Memberlist.KeyringFile); err != nil {
		return err
	}
	if t := cfg.API.TCP; t != nil {
		files := []string{t.TokenFile}
		if t.TLS != nil {
			files = []string{t.TLS.Cert, t.TLS.Key, t.TLS.ClientCA}
		}
		for _, f := range files {
			if _, err := os.ReadFile(f); err != nil {
				return fmt.Errorf("api: %w", err)
			}
		}
	}
	return nil
}
