// Command labbackend is the lab's backend server: it listens on TCP and UDP
// at every -listen address, greets each TCP connection with a hello record
// that names it, and echoes every request in a reply naming it (the record
// protocol of test/traffic). It runs until SIGTERM or SIGINT.
//
//	labbackend -name b1 -listen 198.18.64.11:8080 -listen [fd00:7a6d:0:64::11]:8080
//
// Listening on explicit addresses (not the wildcard) makes UDP replies
// leave from the address the request was sent to, which matters when the
// address is a VIP on a loopback.
//
// With -tls-cert and -tls-key, every -tls-listen address serves the same
// record protocol inside TLS (crypto/tls, TLS 1.2 and 1.3, session
// tickets on): the lab's SSL_BRIDGE backends. Each process draws its own
// ticket key, so a session resumes only on the backend that issued it.
//
//	labbackend -name b1 -tls-listen 198.18.64.11:8443 -tls-cert c.pem -tls-key k.pem
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tandem-lb/tandem/test/traffic"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "labbackend:", err)
		os.Exit(1)
	}
}

func run(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("labbackend", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "", "backend name sent in every hello and reply (required)")
	var listen listFlag
	fs.Var(&listen, "listen", "address:port to serve TCP and UDP on (repeatable, required)")
	pidfile := fs.String("pidfile", "", "write the pid here")
	idle := fs.Duration("idle", 5*time.Minute, "close connections and forget UDP sessions idle this long")
	stats := fs.Duration("stats", 10*time.Second, "log counters this often (0: never)")
	var tlsListen listFlag
	fs.Var(&tlsListen, "tls-listen", "address:port to serve TCP inside TLS on (repeatable; needs -tls-cert and -tls-key)")
	tlsCert := fs.String("tls-cert", "", "PEM certificate (chain) for -tls-listen")
	tlsKey := fs.String("tls-key", "", "PEM private key for -tls-listen")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(listen) == 0 && len(tlsListen) == 0 {
		return errors.New("no -listen or -tls-listen address: give at least one address:port")
	}
	var tlsCfg *tls.Config
	if len(tlsListen) > 0 {
		if *tlsCert == "" || *tlsKey == "" {
			return errors.New("-tls-listen needs -tls-cert and -tls-key")
		}
		cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			return fmt.Errorf("loading TLS certificate: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	// Before listening: once a client can connect, SIGTERM is handled.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("backend", *name)
	srv, err := traffic.NewServer(traffic.ServerConfig{Name: *name, IdleTimeout: *idle, Logger: log})
	if err != nil {
		return err
	}
	if *pidfile != "" {
		if err := os.WriteFile(*pidfile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			return fmt.Errorf("writing pid file: %w", err)
		}
	}
	errc := make(chan error, 2*len(listen)+len(tlsListen))
	for _, a := range tlsListen {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			srv.Close()
			return fmt.Errorf("listening on tcp %s: %w", a, err)
		}
		go func() { errc <- srv.ServeTCP(tls.NewListener(ln, tlsCfg)) }()
		log.Info("serving TLS", "addr", a)
	}
	for _, a := range listen {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			srv.Close()
			return fmt.Errorf("listening on tcp %s: %w", a, err)
		}
		pc, err := net.ListenPacket("udp", a)
		if err != nil {
			srv.Close()
			return fmt.Errorf("listening on udp %s: %w", a, err)
		}
		go func() { errc <- srv.ServeTCP(ln) }()
		go func() { errc <- srv.ServeUDP(pc) }()
		log.Info("serving", "addr", a)
	}
	var tick <-chan time.Time
	if *stats > 0 {
		t := time.NewTicker(*stats)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			srv.Close()
			log.Info("stopped", "stats", fmt.Sprintf("%+v", srv.Stats()))
			return nil
		case err := <-errc:
			srv.Close()
			return err
		case <-tick:
			st := srv.Stats()
			log.Info("stats", "tcp_conns", st.TCPConns, "tcp_accepted", st.TCPAccepted, "udp_sessions", st.UDPSessions, "requests", st.Requests, "corrupt", st.Corrupt)
		}
	}
}
