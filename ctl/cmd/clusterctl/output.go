package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"

	"gopkg.in/yaml.v3"

	"github.com/tandem-lb/tandem/cluster"
	"github.com/tandem-lb/tandem/node/api"
)

// print writes v in the session's format: table (for people) through fn,
// json (stable: fixed field order, indented) or yaml.
func (s *session) print(v any, table func(io.Writer) error) error {
	switch s.format {
	case "json":
		return writeJSON(s.out, v)
	case "yaml":
		return writeYAML(s.out, v)
	}
	return table(s.out)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeYAML writes v's JSON form as YAML, so that both formats name fields
// alike (the wire types carry JSON names).
func writeYAML(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding output: %w", err)
	}
	var tree yaml.Node
	if err := yaml.Unmarshal(b, &tree); err != nil {
		return fmt.Errorf("encoding output: %w", err)
	}
	// JSON is YAML's flow style with quoted strings; print block style,
	// quoting only what needs it.
	clearStyle(&tree)
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(&tree); err != nil {
		return fmt.Errorf("encoding output: %w", err)
	}
	return enc.Close()
}

func clearStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		clearStyle(c)
	}
}

// table is an aligned text table.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)}
	if len(header) > 0 {
		fmt.Fprintln(t.tw, strings.Join(header, "\t"))
	}
	return t
}

func (t *table) row(cells ...any) {
	s := make([]string, len(cells))
	for i, c := range cells {
		s[i] = fmt.Sprint(c)
	}
	fmt.Fprintln(t.tw, strings.Join(s, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

func printResult(w io.Writer, res api.Result) error {
	prefix := ""
	if res.DryRun {
		prefix = "would have "
	}
	if len(res.Changes) == 0 {
		_, err := fmt.Fprintln(w, "no changes")
		return err
	}
	for _, c := range res.Changes {
		if _, err := fmt.Fprintln(w, prefix+c.String()); err != nil {
			return err
		}
	}
	return nil
}

func yesNo(b bool) string {
	if b {
		return "YES"
	}
	return "NO"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// short abbreviates a configuration digest as operators compare them.
func short(digest string) string {
	if len(digest) > 12 {
		return digest[:12]
	}
	return orDash(digest)
}

func joinHostPort(a netip.Addr, port uint16) string {
	if a.Is6() {
		return "[" + a.String() + "]:" + cluster.FormatPort(port)
	}
	return a.String() + ":" + cluster.FormatPort(port)
}

// MarshalConfig writes a configuration as the YAML document apply reads.
func MarshalConfig(c cluster.Config) ([]byte, error) {
	c = c.Clone()
	c.Normalize()
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("encoding configuration: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encoding configuration: %w", err)
	}
	return buf.Bytes(), nil
}

// UnmarshalConfig reads an apply document. Unknown fields are errors (a
// misspelt setting must not silently take its default), and so is anything
// after the first document.
func UnmarshalConfig(data []byte) (cluster.Config, error) {
	var c cluster.Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		if err == io.EOF {
			return cluster.Config{}, nil // an empty file declares nothing
		}
		return cluster.Config{}, fmt.Errorf("parsing configuration: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		return cluster.Config{}, fmt.Errorf("parsing configuration: only one YAML document is allowed")
	}
	return c, nil
}
