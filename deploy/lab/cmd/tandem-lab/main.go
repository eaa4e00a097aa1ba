// Command tandem-lab brings a Tandem rack up in network namespaces on this
// host, and tears it down.
//
//	tandem-lab [flags] up              build what is missing, start BIRD, backends, tandemd
//	tandem-lab [flags] down            stop the lab's processes, delete its namespaces
//	tandem-lab [flags] status          namespaces, processes, BGP sessions, ECMP routes
//	tandem-lab [flags] plan            print the commands up would run on an empty host
//	tandem-lab [flags] exec NS -- CMD  run CMD in namespace NS (client, rfront, n1, b2, ...)
//
// See deploy/lab/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/tandem-lb/tandem/deploy/lab"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage: tandem-lab [flags] up|down|status|plan|exec NS -- CMD...

flags:
`

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	def := lab.Default()
	fs := flag.NewFlagSet("tandem-lab", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	name := fs.String("name", def.Name, "lab name: namespaces are NAME-client, NAME-rfront, NAME-n1, ...")
	nodes := fs.Int("nodes", def.Nodes, "number of tandemd nodes (paired 1-2, 3-4, ...)")
	backends := fs.Int("backends", def.Backends, "number of backend servers")
	clients := fs.Int("clients", def.Clients, "client addresses per IP family")
	state := fs.String("state", "", "state dir for configs, pid files, sockets and logs (default /run/tandem-lab/NAME)")
	tandemd := fs.String("tandemd", "", "tandemd binary; empty: nodes are plumbed but not started")
	speaker := fs.String("speaker", "", "labspeaker binary, run on the nodes in tandemd's place to announce the VIPs by BGP (routing only)")
	backend := fs.String("backend", "", "labbackend binary (go build ./test/cmd/labbackend); empty: no backend servers")
	bird := fs.String("bird", def.BIRD, "BIRD daemon")
	birdc := fs.String("birdc", def.Birdc, "BIRD client")
	verbose := fs.Bool("v", false, "log every process started and namespace deleted")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	abs := func(p string) string {
		if p == "" {
			return ""
		}
		if a, err := filepath.Abs(p); err == nil {
			return a
		}
		return p
	}
	cfg := lab.Config{
		Name: *name, Nodes: *nodes, Backends: *backends, Clients: *clients,
		StateDir: abs(*state), Tandemd: abs(*tandemd), Speaker: abs(*speaker), Backend: abs(*backend),
		BIRD: *bird, Birdc: *birdc,
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	l, err := lab.New(cfg, nil, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})))
	if err != nil {
		fmt.Fprintln(stderr, "tandem-lab:", err)
		return 2
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	fail := func(err error) int {
		fmt.Fprintln(stderr, "tandem-lab:", err)
		return 1
	}
	switch cmd {
	case "up":
		if err := l.Up(ctx); err != nil {
			return fail(err)
		}
		st, err := l.Status(ctx)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "lab %s is up (state in %s)\n%s", l.Config().Name, l.Config().StateDir, st.Format())
	case "down":
		if err := l.Down(ctx); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "lab %s is down\n", l.Config().Name)
	case "status":
		st, err := l.Status(ctx)
		if err != nil {
			return fail(err)
		}
		fmt.Fprint(stdout, st.Format())
		if !st.Ready() {
			return 1
		}
	case "plan":
		fmt.Fprint(stdout, lab.FormatPlan(l.Config().Plan()))
	case "exec":
		if len(rest) > 0 && rest[0] != "--" && len(rest) > 1 && rest[1] == "--" {
			rest = append(rest[:1], rest[2:]...)
		}
		if len(rest) < 2 {
			fmt.Fprintln(stderr, "tandem-lab: exec needs a namespace and a command: exec client -- ping 198.19.0.10")
			return 2
		}
		role := strings.TrimPrefix(rest[0], l.Config().Name+"-")
		c := l.Command(ctx, role, rest[1:]...)
		c.Stdin, c.Stdout, c.Stderr = stdin, stdout, stderr
		if err := c.Run(); err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return ee.ExitCode()
			}
			return fail(err)
		}
	default:
		fmt.Fprintf(stderr, "tandem-lab: unknown command %q\n", cmd)
		fs.Usage()
		return 2
	}
	return 0
}
