package main

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func FuzzRewriteArgs(f *testing.F) {
	for _, s := range []string{
		"add lb vserver vs1 ANY 203.0.113.10 80 -lbMethod SRCIPSRCPORTHASH -connFailover STATELESS",
		"ADD SERVICE web1 10.0.2.11 any 8080 -USIP=yes -monitor m1",
		"show conn -node n2 --node /run/tandem/api.sock -vserver vs1",
		"-o json show cluster",
		"apply -f - -prune -dry-run",
		"bind lb vserver vs1 web1 -weight -1 -- -usip",
		"set lb monitor m -interval 2s -colour",
		"explain flow [2001:db8::7]:41234 [2001:db8::10]:21 TCP",
		"batch -f x\x00y",
		"-",
		"--",
		"-node",
	} {
		f.Add(strings.ReplaceAll(s, " ", "\x00"))
	}
	f.Fuzz(func(t *testing.T, joined string) {
		if len(joined) > 4096 {
			return
		}
		in := strings.Split(joined, "\x00")
		out := RewriteArgs(in)
		if len(out) != len(in) {
			t.Fatalf("RewriteArgs changed the number of arguments: %q -> %q", in, out)
		}
		if again := RewriteArgs(out); !slices.Equal(again, out) {
			t.Fatalf("RewriteArgs is not idempotent: %q -> %q -> %q", in, out, again)
		}
		dashdash := false
		for i := range in {
			a, b := in[i], out[i]
			if dashdash && a != b {
				t.Fatalf("argument %d after -- changed: %q -> %q", i, a, b)
			}
			if a == "--" {
				dashdash = true
			}
			if a == b {
				continue
			}
			if !strings.HasPrefix(a, "-") {
				if !strings.EqualFold(a, b) {
					t.Fatalf("positional %q became %q", a, b)
				}
				continue
			}
			// A flag: only its dashes and the case of its name may change,
			// or -node may become the show conn filter.
			an, av, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			bn, bv, _ := strings.Cut(strings.TrimLeft(b, "-"), "=")
			if av != bv || !strings.HasPrefix(b, "--") || !(strings.EqualFold(an, bn) || strings.EqualFold(an, "node") && bn == "conn-node") {
				t.Fatalf("flag %q became %q", a, b)
			}
		}
		// The whole parser: never panics, and exits with a known code. No
		// node is reachable and no file exists, so nothing can change.
		var stdout, stderr bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		env := Env{Stdout: &stdout, Stderr: &stderr,
			Getenv: func(k string) string {
				if k == "TANDEM_NODE" {
					return "/nonexistent/tandem-fuzz.sock"
				}
				return ""
			}}
		switch code := Run(ctx, env, in); code {
		case ExitOK, ExitFailed, ExitUsage:
		default:
			t.Fatalf("Run(%q) = %d", in, code)
		}
	})
}

func FuzzReadBatch(f *testing.F) {
	for _, s := range []string{
		"# setup\nadd service web1 10.0.2.11 ANY 8080 -usip YES\n\nbind lb vserver vs1 web1 # trailing\n",
		"add service 'a b' \"c \\\"d\\\"\" e\\ f\r\n",
		"show cluster\nadd service \"x\n",
		"'unterminated",
		"\\",
		"a#b #c",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		lines, err := ReadBatch(data)
		if err != nil {
			if !strings.Contains(err.Error(), "line ") {
				t.Fatalf("error names no line: %v", err)
			}
			return
		}
		total := bytes.Count(data, []byte("\n")) + 1
		prev := 0
		for _, l := range lines {
			if l.Line <= prev || l.Line > total || len(l.Args) == 0 {
				t.Fatalf("bad line %+v after %d (of %d)", l, prev, total)
			}
			prev = l.Line
			// Quoting the arguments back gives the same arguments.
			q := make([]string, len(l.Args))
			for i, a := range l.Args {
				q[i] = "'" + strings.ReplaceAll(a, "'", `'"'"'`) + "'"
			}
			again, err := ReadBatch([]byte(strings.Join(q, " ")))
			if err != nil || len(again) != 1 || !slices.Equal(again[0].Args, l.Args) {
				t.Fatalf("round trip of %q: %v, %v", l.Args, again, err)
			}
		}
		_ = fmt.Sprint(lines)
	})
}
