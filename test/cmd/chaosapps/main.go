// Command chaosapps runs the application scenarios of issue 7 on a lab of
// its own: TLS sessions through the SSL_BRIDGE STATEFUL vservers while
// their owner is SIGKILLed, then resumed on the same backend; and 200 MB
// FTP downloads with curl (passive and active) through the FTP
// STATEFUL vserver while the owner of the transfer is SIGKILLed, then
// frozen past the BGP hold time. It prints a table for people and a line
// per scenario for scripts:
//
//	chaos scenario=kill9 mode=ssl_bridge flows=6 kept=6 broken=0 corrupt=0 moved=5 max_stall_ms=1689 resumed=6 same_backend=6
//	chaos scenario=kill9 mode=ftp_passive flows=1 kept=1 broken=0 corrupt=0 max_stall_ms=899 bytes=209715200 sha256_ok=true took_ms=11832
//
//	chaosapps -bin bin [-name tzapps] [-tls=false] [-ftp=false] [-only freeze:ftp_active6,...] [-ftp-size 209715200] [-keep] [-up]
//
// With -up it only brings the lab and its apps up and leaves them up.
//
// Exit status: 0 when every scenario showed what it must (chaos.AppResult.
// Failures), 1 when not, 2 when the lab or a scenario could not run.
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
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tandem-lb/tandem/deploy/lab"
	"github.com/tandem-lb/tandem/test/chaos"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("chaosapps", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "tzapps", "lab name (namespaces NAME-client, NAME-n1, ...)")
	bin := fs.String("bin", "bin", "directory holding tandemd, clusterctl and labbackend")
	ftp := fs.Bool("ftp", true, "run the FTP scenarios (kill9 and freeze, passive and active)")
	ftpSize := fs.Int64("ftp-size", 200<<20, "size of the FTP file in bytes")
	runTLS := fs.Bool("tls", true, "run the SSL_BRIDGE scenario")
	keep := fs.Bool("keep", false, "leave the lab up at the end")
	only := fs.String("only", "", "run only these FTP runs, comma-separated SCENARIO:MODE (e.g. freeze:ftp_active6)")
	upOnly := fs.Bool("up", false, "bring the lab and its apps up, print how to reach them, and leave it up (no scenario)")
	verbose := fs.Bool("v", false, "log every step")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	abs := func(p string) string { a, _ := filepath.Abs(filepath.Join(*bin, p)); return a }
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	// One flow per family through the stateless vservers: the runner's
	// readiness checks look at them; the traffic here is the apps'.
	r, err := chaos.New(chaos.Config{
		Lab:        lab.Config{Name: *name, Tandemd: abs("tandemd"), Backend: abs("labbackend")},
		Clusterctl: abs("clusterctl"),
		TCPFlows:   1, UDPFlows: 1,
	}, log)
	if err != nil {
		fmt.Fprintln(stderr, "chaosapps:", err)
		return 2
	}
	defer func() {
		if *keep {
			fmt.Fprintf(stdout, "lab %s left up (tandem-lab -name %s down removes it)\n", *name, *name)
			return
		}
		dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		r.Lab().StopApps()
		// 200 MB in /run is memory: the file goes, configs and logs stay.
		r.Lab().RemoveFTPFile()
		if err := r.Down(dctx); err != nil {
			fmt.Fprintln(stderr, "chaosapps: tearing the lab down:", err)
		} else {
			fmt.Fprintf(stdout, "lab %s torn down\n", *name)
		}
	}()
	r.Lab().StopApps()
	if err := r.Down(ctx); err != nil {
		fmt.Fprintln(stderr, "chaosapps: removing an old lab:", err)
		return 2
	}
	fmt.Fprintf(stdout, "bringing lab %s up with TLS backends%s\n", *name, map[bool]string{true: " and vsftpd backends", false: ""}[*ftp])
	start := time.Now()
	if err := r.Up(ctx); err != nil {
		fmt.Fprintln(stderr, "chaosapps:", err)
		return 2
	}
	if err := r.Apply(ctx); err != nil {
		fmt.Fprintln(stderr, "chaosapps: applying the lab's cluster.yaml:", err)
		return 2
	}
	if err := r.WaitReady(ctx); err != nil {
		fmt.Fprintln(stderr, "chaosapps: lab not ready:", err)
		return 2
	}
	file, err := r.SetupApps(ctx, *ftp, *ftpSize)
	if err != nil {
		fmt.Fprintln(stderr, "chaosapps: setting the apps up:", err)
		return 2
	}
	fmt.Fprintf(stdout, "lab ready in %v: SSL_BRIDGE vservers tls4/tls6 on %s/%s port %d", time.Since(start).Round(100*time.Millisecond), lab.AppsVIP4, lab.AppsVIP6, lab.TLSPort)
	if *ftp {
		fmt.Fprintf(stdout, ", FTP vservers ftp4/ftp6 on %s/%s port %d serving %s (%d bytes, sha256 %s)", lab.AppsVIP4, lab.AppsVIP6, lab.FTPPort, lab.FTPFileName, file.Size, file.SHA256)
	}
	fmt.Fprintln(stdout)
	if *upOnly {
		*keep = true
		files, _ := r.Lab().TLSFiles()
		ns := r.Lab().Config().NS(lab.RoleClient)
		fmt.Fprintf(stdout, "try:\n  ip netns exec %s openssl s_client -connect %s:%d -servername %s -CAfile %s -sess_out /tmp/s </dev/null\n",
			ns, lab.AppsVIP4, lab.TLSPort, files.ServerName, files.Cert)
		fmt.Fprintf(stdout, "  ip netns exec %s curl -g -o /dev/null ftp://%s:%d/%s   (add --ftp-port 198.18.1.1 for active mode)\n",
			ns, lab.AppsVIP4, lab.FTPPort, lab.FTPFileName)
		return 0
	}
	code := 0
	refusals, err := r.CheckRefusals(ctx)
	fmt.Fprintln(stdout, "connection failover on HTTP and terminated SSL vservers:")
	for _, l := range refusals {
		fmt.Fprintln(stdout, "  "+l)
	}
	if err != nil {
		fmt.Fprintln(stdout, "FAIL:", err)
		code = 1
	}
	var lines []string
	report := func(res *chaos.AppResult, err error) bool {
		if res != nil {
			fmt.Fprint(stdout, res.Table())
			for _, l := range res.Lines() {
				fmt.Fprintln(stdout, l)
				lines = append(lines, l)
			}
			for _, f := range res.Failures() {
				fmt.Fprintln(stdout, "FAIL:", f)
				code = 1
			}
		}
		if err != nil {
			fmt.Fprintln(stderr, "chaosapps:", err)
			code = 2
			return false
		}
		return true
	}
	if *runTLS {
		fmt.Fprintln(stdout, "running kill9 under TLS sessions through SSL_BRIDGE...")
		if !report(r.RunTLS(ctx, chaos.TLSConfig{})) {
			return code
		}
	}
	if *ftp {
		for _, v6 := range []bool{false, true} {
			for _, sc := range []chaos.Scenario{chaos.Kill9, chaos.Freeze} {
				for _, active := range []bool{false, true} {
					mode := map[bool]string{false: chaos.ModeFTPPassive, true: chaos.ModeFTPActive}[active] + map[bool]string{false: "", true: "6"}[v6]
					if *only != "" && !slices.Contains(strings.Split(*only, ","), string(sc)+":"+mode) {
						continue
					}
					fmt.Fprintf(stdout, "running %s under an FTP download (IPv6 %v, active %v)...\n", sc, v6, active)
					if !report(r.RunFTP(ctx, chaos.FTPConfig{Scenario: sc, Active: active, IPv6: v6}, file)) {
						return code
					}
				}
			}
		}
	}
	fmt.Fprintln(stdout, "summary:")
	for _, l := range lines {
		fmt.Fprintln(stdout, l)
	}
	if code == 0 {
		fmt.Fprintln(stdout, "PASS: every session and download kept, every byte checked")
	} else {
		fmt.Fprintln(stdout, "FAIL: some scenario did not show what it must")
	}
	return code
}
