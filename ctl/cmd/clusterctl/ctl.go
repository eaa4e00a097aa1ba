// Command clusterctl is the operator CLI of a Tandem cluster. It
// speaks the grammar ADC operators know (add lb vserver vs1 ANY 203.0.113.10
// 80 -lbMethod SRCIPSRCPORTHASH) to any node's API.
//
// Every side effect (output, environment, files, the connection to the
// node) goes through an Env, so tests run the CLI in-process against a real
// API handler. Noun commands (show, explain) change nothing; verb commands
// (add, set, rm, bind, unbind, drain, undrain, apply, batch) change state,
// and a refused verb changes nothing and says which rule it broke and how
// to fix it.
//
// All of clusterctl is this one main package (as tubular's tubectl is), so
// that "go build -o bin/clusterctl ./ctl/..." names exactly one package.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/alecthomas/kong"

	"github.com/tandem-lb/tandem/node/api"
)

// Exit codes.
const (
	ExitOK     = 0
	ExitFailed = 1 // a refusal, or the node could not be reached
	ExitUsage  = 2 // the command line could not be parsed
)

// Env is everything clusterctl touches outside itself.
type Env struct {
	Stdout io.Writer
	Stderr io.Writer
	// Stdin is read by "-f -".
	Stdin io.Reader
	// Getenv reads TANDEM_NODE and TANDEM_TOKEN.
	Getenv func(string) string
	// ReadFile reads apply and batch files.
	ReadFile func(string) ([]byte, error)
	// DialContext dials the node's unix socket; nil means a net.Dialer.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLS configures https nodes; nil means the system roots.
	TLS *tls.Config
}

// OSEnv is the Env of the real process.
func OSEnv() Env {
	return Env{Stdout: os.Stdout, Stderr: os.Stderr, Stdin: os.Stdin, Getenv: os.Getenv, ReadFile: os.ReadFile}
}

// exitError carries a kong-requested exit (after --help) out of the parser.
type exitError struct{ code int }

// usageError is a command line that parses but makes no sense.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// runner is the state of one clusterctl invocation (shared by the lines of
// a batch).
type runner struct {
	ctx     context.Context
	env     Env
	token   string // from TANDEM_TOKEN
	clients map[string]*api.Client
	inBatch bool
}

// Run runs clusterctl with args (without the program name) and returns the
// exit code.
func Run(ctx context.Context, env Env, args []string) int {
	if env.Stdout == nil {
		env.Stdout = io.Discard
	}
	if env.Stderr == nil {
		env.Stderr = io.Discard
	}
	if env.Getenv == nil {
		env.Getenv = func(string) string { return "" }
	}
	if env.ReadFile == nil {
		env.ReadFile = func(name string) ([]byte, error) {
			return nil, fmt.Errorf("reading %s: no file system in this environment", name)
		}
	}
	if env.Stdin == nil {
		env.Stdin = strings.NewReader("")
	}
	r := &runner{ctx: ctx, env: env, token: env.Getenv("TANDEM_TOKEN"), clients: map[string]*api.Client{}}
	defer r.close()
	code, err := r.run(args, env.Stdout)
	if err != nil {
		reportError(env.Stderr, err)
	}
	return code
}

func (r *runner) close() {
	for _, c := range r.clients {
		c.Close()
	}
}

// run parses and runs one command line, writing its output to out.
func (r *runner) run(args []string, out io.Writer) (code int, err error) {
	var grammar cli
	var help bytes.Buffer
	parser, err := kong.New(&grammar,
		kong.Name("clusterctl"),
		kong.Description("Operate a Tandem L4 load-balancer cluster through any node's API.\nOptions may be typed ADC-style, with one dash and in any case: -lbMethod SRCIPSRCPORTHASH, -usip yes."),
		kong.Writers(&help, &help),
		kong.Exit(func(c int) { panic(exitError{c}) }),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true, NoExpandSubcommands: false}),
		kong.Vars{"node": r.defaultNode()},
	)
	if err != nil {
		return ExitFailed, fmt.Errorf("building the command grammar: %w", err)
	}
	defer func() {
		if p := recover(); p != nil {
			e, ok := p.(exitError)
			if !ok {
				panic(p)
			}
			// --help (or kong's own exit): print what kong wrote.
			_, _ = io.Copy(out, &help)
			code, err = e.code, nil
		}
	}()
	kctx, err := parser.Parse(RewriteArgs(args))
	if err != nil {
		var pe *kong.ParseError
		if errors.As(err, &pe) {
			return ExitUsage, fmt.Errorf("%w\n%s", err, helpHint(pe.Context))
		}
		return ExitUsage, err
	}
	token := grammar.Token
	if token == "" {
		token = r.token
	}
	sess := &session{runner: r, out: out, node: grammar.Node, token: token, format: grammar.Output}
	if err := kctx.Run(sess); err != nil {
		var ue *usageError
		var be *batchError
		switch {
		case errors.As(err, &ue):
			return ExitUsage, fmt.Errorf("%s\n%s", ue.msg, helpHint(kctx))
		case errors.As(err, &be):
			return be.code, err
		}
		return ExitFailed, err
	}
	return ExitOK, nil
}

func helpHint(kctx *kong.Context) string {
	if p := commandPath(kctx); p != "" {
		return "run 'clusterctl " + p + " --help' for usage"
	}
	return "run 'clusterctl --help' for usage"
}

func commandPath(kctx *kong.Context) string {
	if kctx == nil {
		return ""
	}
	var words []string
	for _, p := range kctx.Path {
		if p.Command != nil {
			words = append(words, p.Command.Name)
		}
	}
	return strings.Join(words, " ")
}

func (r *runner) defaultNode() string {
	if n := r.env.Getenv("TANDEM_NODE"); n != "" {
		return n
	}
	return api.DefaultSocket
}

// client returns the API client of a node address and token, made once
// per run.
func (r *runner) client(node, token string) (*api.Client, error) {
	key := node + "\x00" + token
	if c, ok := r.clients[key]; ok {
		return c, nil
	}
	c, err := api.NewClient(api.ClientConfig{Node: node, Token: token, TLS: r.env.TLS, DialContext: r.env.DialContext})
	if err != nil {
		return nil, err
	}
	r.clients[key] = c
	return c, nil
}

// reportError prints an error; API refusals with their rule and fix.
func reportError(w io.Writer, err error) {
	var e *api.Error
	if !errors.As(err, &e) {
		fmt.Fprintf(w, "clusterctl: %v\n", err)
		return
	}
	prefix := "clusterctl: "
	var be *batchError
	if errors.As(err, &be) {
		prefix += fmt.Sprintf("batch line %d (%s): ", be.line, be.text)
	}
	writeAPIError(w, prefix, e)
}

func writeAPIError(w io.Writer, prefix string, e *api.Error) {
	what := "refused"
	switch {
	case prefix == "":
		what = "also refused"
	case e.Status == http.StatusServiceUnavailable:
		what = "node not ready"
	case e.Status >= 500:
		what = "node failed"
	}
	fmt.Fprintf(w, "%s%s: %s\n", prefix, what, e.Message)
	if e.Rule != "" {
		fmt.Fprintf(w, "  rule:   %s\n", e.Rule)
	}
	if e.Object != "" {
		fmt.Fprintf(w, "  object: %s\n", e.Object)
	}
	if e.Fix != "" {
		fmt.Fprintf(w, "  fix:    %s\n", e.Fix)
	}
	for i := range e.More {
		writeAPIError(w, "", &e.More[i])
	}
}
