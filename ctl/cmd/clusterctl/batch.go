package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// MaxBatchLine bounds one line of a batch file.
const MaxBatchLine = 64 << 10

// ErrBatchSyntax: a batch file line cannot be split into arguments.
var ErrBatchSyntax = errors.New("batch syntax error")

// BatchLine is one command of a batch file.
type BatchLine struct {
	Line int // 1-based line number in the file
	Args []string
}

// ReadBatch splits a batch file into commands: one per line, arguments
// separated by blanks, quoted with '...' (literal) or "..." (where \" and \\
// escape), '#' starting a comment where a new argument could start. Blank
// and comment-only lines are skipped. Errors match ErrBatchSyntax and name
// the line.
func ReadBatch(data []byte) ([]BatchLine, error) {
	var out []BatchLine
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), MaxBatchLine)
	n := 0
	for sc.Scan() {
		n++
		args, err := splitLine(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("line %d: %w: %v", n, ErrBatchSyntax, err)
		}
		if len(args) > 0 {
			out = append(out, BatchLine{Line: n, Args: args})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %w: %v", n+1, ErrBatchSyntax, err)
	}
	return out, nil
}

func splitLine(line string) ([]string, error) {
	var args []string
	var cur strings.Builder
	inArg := false
	for i := 0; i < len(line); i++ {
		ch := line[i]
		switch {
		case ch == ' ' || ch == '\t' || ch == '\r':
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		case ch == '#' && !inArg:
			return args, nil
		case ch == '\'':
			inArg = true
			end := strings.IndexByte(line[i+1:], '\'')
			if end < 0 {
				return nil, fmt.Errorf("unterminated ' quote at column %d", i+1)
			}
			cur.WriteString(line[i+1 : i+1+end])
			i += end + 1
		case ch == '"':
			inArg = true
			j := i + 1
			for ; j < len(line) && line[j] != '"'; j++ {
				if line[j] == '\\' && j+1 < len(line) && (line[j+1] == '"' || line[j+1] == '\\') {
					j++
				}
				cur.WriteByte(line[j])
			}
			if j >= len(line) {
				return nil, fmt.Errorf("unterminated \" quote at column %d", i+1)
			}
			i = j
		case ch == '\\' && i+1 < len(line):
			inArg = true
			i++
			cur.WriteByte(line[i])
		default:
			inArg = true
			cur.WriteByte(ch)
		}
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args, nil
}

type batchCmd struct {
	File string `short:"f" required:"" help:"File of clusterctl commands, one per line, # comments; - for stdin." placeholder:"FILE"`
}

func (c *batchCmd) Help() string {
	return "Runs each line as a clusterctl command (without the program name), with this\n" +
		"invocation's --node, --token and -o, and stops at the first line that fails,\n" +
		"naming it. Lines before it stay applied: each line is its own update (use\n" +
		"apply -f for all-or-nothing changes).\n\nExample file:\n\n" +
		"    # web tier\n" +
		"    add service web1 10.0.2.11 ANY 8080 -usip YES\n" +
		"    add lb vserver vs1 ANY 203.0.113.10 80 -lbMethod SRCIPSRCPORTHASH -connFailover STATELESS\n" +
		"    bind lb vserver vs1 web1\n\nExample:\n\n    clusterctl batch -f setup.txt"
}

// batchError is a failed batch line.
type batchError struct {
	line int
	text string
	code int
	err  error
}

func (e *batchError) Error() string {
	return fmt.Sprintf("batch line %d (%s): %v", e.line, e.text, e.err)
}
func (e *batchError) Unwrap() error { return e.err }

func (c *batchCmd) Run(s *session) error {
	if s.inBatch {
		return usagef("batch cannot run inside a batch")
	}
	data, err := s.readFile(c.File)
	if err != nil {
		return err
	}
	lines, err := ReadBatch(data)
	if err != nil {
		return fmt.Errorf("%s: %w", c.File, err)
	}
	s.inBatch = true
	defer func() { s.inBatch = false }()
	for _, l := range lines {
		args := []string{"--node", s.node, "-o", s.format}
		if s.token != "" {
			args = append(args, "--token", s.token)
		}
		args = append(args, l.Args...)
		code, err := s.run(args, s.out)
		if err == nil && code != ExitOK {
			err = fmt.Errorf("exit code %d", code)
		}
		if err != nil {
			return &batchError{line: l.Line, text: strings.Join(l.Args, " "), code: code, err: err}
		}
	}
	return nil
}
