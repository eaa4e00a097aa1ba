package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Parse parses node.yaml. Every error names the line it comes from and wraps
// one of ErrSyntax, ErrUnknownKey, ErrMissing or ErrInvalid.
func Parse(b []byte) (Config, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return Config{}, fmt.Errorf("line 1: empty file: %w: nodeId", ErrMissing)
		}
		return Config{}, fmt.Errorf("%v: %w", err, ErrSyntax)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return Config{}, fmt.Errorf("line %d: a second YAML document; node.yaml holds one: %w", extra.Line, ErrSyntax)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	c := Default()
	if err := c.decode(root); err != nil {
		return Config{}, err
	}
	if err := c.validate(root.Line); err != nil {
		return Config{}, err
	}
	return c, nil
}

// field describes one key of a mapping.
type field struct {
	set func(n *yaml.Node, path string) error
	// why is set for required fields: it says what the field is for.
	why string
}

func errAt(n *yaml.Node, path string, sentinel error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if path != "" {
		msg = path + ": " + msg
	}
	return fmt.Errorf("line %d: %s: %w", n.Line, msg, sentinel)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// mapping decodes a mapping node key by key, refusing unknown and duplicate
// keys and reporting missing required ones.
func mapping(n *yaml.Node, path string, fields map[string]field) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		n = &yaml.Node{Kind: yaml.MappingNode, Line: n.Line, Column: n.Column}
	}
	if n.Kind != yaml.MappingNode {
		what := path
		if what == "" {
			what = "the file"
		}
		return errAt(n, "", ErrSyntax, "%s must be a mapping (key: value)", what)
	}
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return errAt(k, path, ErrSyntax, "keys must be plain strings")
		}
		if v.Kind == yaml.AliasNode {
			v = v.Alias
		}
		f, ok := fields[k.Value]
		if !ok {
			return errAt(k, path, ErrUnknownKey, "unknown key %q (known: %s)", k.Value, knownKeys(fields))
		}
		if seen[k.Value] {
			return errAt(k, path, ErrSyntax, "key %q given twice", k.Value)
		}
		seen[k.Value] = true
		if err := f.set(v, join(path, k.Value)); err != nil {
			return err
		}
	}
	var missing []string
	for name, f := range fields {
		if f.why != "" && !seen[name] {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		name := missing[0]
		return errAt(n, path, ErrMissing, "%q is required: %s", name, fields[name].why)
	}
	return nil
}

func knownKeys(fields map[string]field) string {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ", ")
}

func scalar(n *yaml.Node, path string) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", errAt(n, path, ErrSyntax, "must be a single value")
	}
	return n.Value, nil
}

func sequence(n *yaml.Node, path string, each func(n *yaml.Node, path string) error) error {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		return errAt(n, path, ErrSyntax, "must be a list")
	}
	for i, e := range n.Content {
		if e.Kind == yaml.AliasNode {
			e = e.Alias
		}
		if err := each(e, fmt.Sprintf("%s[%d]", path, i)); err != nil {
			return err
		}
	}
	return nil
}

func str(dst *string) func(*yaml.Node, string) error {
	return func(n *yaml.Node, path string) error {
		s, err := scalar(n, path)
		if err != nil {
			return err
		}
		*dst = s
		return nil
	}
}

func nonEmpty(dst *string) func(*yaml.Node, string) error {
	return func(n *yaml.Node, path string) error {
		s, err := scalar(n, path)
		if err != nil {
			return err
		}
		if strings.TrimSpace(s) == "" {
			return errAt(n, path, ErrInvalid, "must not be empty")
		}
		*dst = s
		return nil
	}
}

func addr(dst *netip.Addr) func(*yaml.Node, string) error {
	return func(n *yaml.Node, path string) error {
		s, err := scalar(n, path)
		if err != nil {
			return err
		}
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return errAt(n, path, ErrInvalid, "%q is not an IP address", s)
		}
		*dst = a.Unmap()
		return nil
	}
}

// snips decodes one address or a list of them, at most one per family.
func snips(dst *[]netip.Addr) func(*yaml.Node, string) error {
	return func(n *yaml.Node, path string) error {
		one := func(e *yaml.Node, p string) error {
			var a netip.Addr
			if err := addr(&a)(e, p); err != nil {
				return err
			}
			for _, b := range *dst {
				if b.Is4() == a.Is4() {
					return errAt(e, p, ErrInvalid, "%v: the pair already has the SNIP %v of that family; give at most one IPv4 and one IPv6 SNIP", a, b)
				}
			}
			*dst = append(*dst, a)
			return nil
		}
		if n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
			return one(n, path)
		}
		return sequence(n, path, one)
	}
}

func duration(dst *time.Duration) func(*yaml.Node, string) error {
	return func(n *yaml.Node, path string) error {
		s, err := scalar(n, path)
		if err != nil {
			return err
		}
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return errAt(n, path, ErrInvalid, "%q is not a duration (e.g. 9s, 500ms)", s)
		}
		*dst = d
		return nil
	}
}

func integer(n *yaml.Node, path string, lo, hi int64) (int64, error) {
	s, err := scalar(n, path)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < lo || v > hi {
		return 0, errAt(n, path, ErrInvalid, "%q is not an integer in [%d, %d]", s, lo, hi)
	}
	return v, nil
}

func asn(dst *uint32) func(*yaml.Node, string) error {
	return func(n *yaml.Node, path string) error {
		v, err := integer(n, path, 1, 4294967295)
		if err != nil {
			return err
		}
		*dst = uint32(v)
		return nil
	}
}

func hostPort(dst *string) func(*yaml.Node, string) error {
	return func(n *yaml.Node, path string) error {
		s, err := scalar(n, path)
		if err != nil {
			return err
		}
		if s != "" {
			if _, _, err := net.SplitHostPort(s); err != nil {
				return errAt(n, path, ErrInvalid, "%q is not host:port", s)
			}
		}
		*dst = s
		return nil
	}
}

func communities(dst *[]string) func(*yaml.Node, string) error {
	return func(n *yaml.Node, path string) error {
		return sequence(n, path, func(e *yaml.Node, p string) error {
			s, err := scalar(e, p)
			if err != nil {
				return err
			}
			if _, err := ParseCommunity(s); err != nil {
				return errAt(e, p, ErrInvalid, "%v", err)
			}
			*dst = append(*dst, s)
			return nil
		})
	}
}

// ParseCommunity parses a standard BGP community "ASN:VALUE" (each 0..65535)
// into its 32-bit value.
func ParseCommunity(s string) (uint32, error) {
	hi, lo, ok := strings.Cut(s, ":")
	if !ok {
		return 0, fmt.Errorf("community %q is not ASN:VALUE", s)
	}
	a, err1 := strconv.ParseUint(hi, 10, 16)
	b, err2 := strconv.ParseUint(lo, 10, 16)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("community %q is not ASN:VALUE with both parts in 0..65535", s)
	}
	return uint32(a)<<16 | uint32(b), nil
}

func (c *Config) decode(root *yaml.Node) error {
	return mapping(root, "", map[string]field{
		"nodeId":       {set: nonEmpty(&c.NodeID), why: "the node's name in the cluster"},
		"interfaces":   {set: c.Interfaces.decode, why: "the data-path interfaces (at least front)"},
		"memberlist":   {set: c.Memberlist.decode, why: "the gossip bind address and keyring"},
		"partner":      {set: str(&c.Partner)},
		"snip":         {set: snips(&c.SNIPs)},
		"bgp":          {set: c.BGP.decode},
		"drainTime":    {set: duration(&c.DrainTime)},
		"vipInterface": {set: nonEmpty(&c.VIPInterface)},
		"api":          {set: c.API.decode},
		"metrics":      {set: c.Metrics.decode},
		"stateDir":     {set: nonEmpty(&c.StateDir)},
		"log":          {set: c.Log.decode},
		"xdpMode": {set: func(n *yaml.Node, path string) error {
			s, err := scalar(n, path)
			if err != nil {
				return err
			}
			switch m := XDPMode(s); m {
			case XDPNative, XDPGeneric, XDPOffload:
				c.XDPMode = m
				return nil
			}
			return errAt(n, path, ErrInvalid, "%q is not an XDP mode (native, generic, offload)", s)
		}},
	})
}

func (i *Interfaces) decode(n *yaml.Node, path string) error {
	return mapping(n, path, map[string]field{
		"front":     {set: nonEmpty(&i.Front), why: "the interface clients' packets arrive on"},
		"back":      {set: nonEmpty(&i.Back)},
		"backplane": {set: nonEmpty(&i.Backplane)},
	})
}

func (m *Memberlist) decode(n *yaml.Node, path string) error {
	return mapping(n, path, map[string]field{
		"bindAddr": {set: addr(&m.BindAddr), why: "the address other nodes gossip with this one at"},
		"bindPort": {set: func(n *yaml.Node, path string) error {
			v, err := integer(n, path, 1, 65535)
			m.BindPort = int(v)
			return err
		}},
		"seeds": {set: func(n *yaml.Node, path string) error {
			return sequence(n, path, func(e *yaml.Node, p string) error {
				var s string
				if err := hostPort(&s)(e, p); err != nil {
					return err
				}
				m.Seeds = append(m.Seeds, s)
				return nil
			})
		}},
		"keyringFile": {set: nonEmpty(&m.KeyringFile), why: "gossip is always encrypted: a file of base64 32-byte keys"},
	})
}

func (b *BGP) decode(n *yaml.Node, path string) error {
	return mapping(n, path, map[string]field{
		"localAs":  {set: asn(&b.LocalAS), why: "this node's AS number"},
		"routerId": {set: addr(&b.RouterID)},
		"listenPort": {set: func(n *yaml.Node, path string) error {
			v, err := integer(n, path, -1, 65535)
			b.ListenPort = int32(v)
			return err
		}},
		"peers": {set: func(n *yaml.Node, path string) error {
			return sequence(n, path, func(e *yaml.Node, p string) error {
				peer := DefaultPeer()
				if err := peer.decode(e, p); err != nil {
					return err
				}
				b.Peers = append(b.Peers, peer)
				return nil
			})
		}},
		"communities": {set: communities(&b.Communities)},
		"returnPrefixes": {set: func(n *yaml.Node, path string) error {
			return sequence(n, path, func(e *yaml.Node, p string) error {
				s, err := scalar(e, p)
				if err != nil {
					return err
				}
				pfx, err := netip.ParsePrefix(s)
				if err != nil || pfx.Addr().Zone() != "" {
					return errAt(e, p, ErrInvalid, "%q is not a prefix (e.g. 198.51.100.0/24)", s)
				}
				if pfx != pfx.Masked() {
					return errAt(e, p, ErrInvalid, "%q has host bits set; did you mean %s?", s, pfx.Masked())
				}
				b.ReturnPrefixes = append(b.ReturnPrefixes, pfx)
				return nil
			})
		}},
	})
}

func (p *Peer) decode(n *yaml.Node, path string) error {
	err := mapping(n, path, map[string]field{
		"address":   {set: addr(&p.Address), why: "the router's address"},
		"as":        {set: asn(&p.AS), why: "the router's AS number"},
		"holdTime":  {set: duration(&p.HoldTime)},
		"keepalive": {set: duration(&p.Keepalive)},
		"announce": {set: func(n *yaml.Node, path string) error {
			p.Announce = nil
			err := sequence(n, path, func(e *yaml.Node, p2 string) error {
				s, err := scalar(e, p2)
				if err != nil {
					return err
				}
				switch k := PrefixKind(s); k {
				case PrefixVIPs, PrefixReturn:
					if !p.Announces(k) {
						p.Announce = append(p.Announce, k)
					}
					return nil
				}
				return errAt(e, p2, ErrInvalid, "%q is not a prefix kind (vips, return)", s)
			})
			if err == nil && len(p.Announce) == 0 {
				return errAt(n, path, ErrInvalid, "must name at least one prefix kind (vips, return)")
			}
			return err
		}},
		"communities": {set: communities(&p.Communities)},
	})
	if err != nil {
		return err
	}
	if p.HoldTime != 0 && p.HoldTime < 3*time.Second {
		return errAt(n, path, ErrInvalid, "holdTime %v is below 3s, the minimum BGP allows (or 0 to disable)", p.HoldTime)
	}
	if p.Keepalive == 0 {
		p.Keepalive = p.HoldTime / 3
	}
	if p.HoldTime != 0 && p.Keepalive >= p.HoldTime {
		return errAt(n, path, ErrInvalid, "keepalive %v must be below holdTime %v", p.Keepalive, p.HoldTime)
	}
	if p.HoldTime%time.Second != 0 || p.Keepalive%time.Second != 0 {
		return errAt(n, path, ErrInvalid, "holdTime and keepalive are whole seconds in BGP")
	}
	return nil
}

func (a *API) decode(n *yaml.Node, path string) error {
	return mapping(n, path, map[string]field{
		"socket": {set: nonEmpty(&a.Socket)},
		"tcp": {set: func(n *yaml.Node, path string) error {
			t := &TCPListener{}
			err := mapping(n, path, map[string]field{
				"listen":    {set: hostPort(&t.Listen), why: "host:port to listen on"},
				"tokenFile": {set: nonEmpty(&t.TokenFile)},
				"tls": {set: func(n *yaml.Node, path string) error {
					t.TLS = &TLSFiles{}
					return mapping(n, path, map[string]field{
						"cert":     {set: nonEmpty(&t.TLS.Cert), why: "the server certificate (PEM)"},
						"key":      {set: nonEmpty(&t.TLS.Key), why: "the server key (PEM)"},
						"clientCa": {set: nonEmpty(&t.TLS.ClientCA), why: "the CA that signs client certificates (PEM)"},
					})
				}},
			})
			if err != nil {
				return err
			}
			if (t.TokenFile == "") == (t.TLS == nil) {
				return errAt(n, path, ErrInvalid, "set exactly one of tokenFile or tls: the TCP API is never open")
			}
			a.TCP = t
			return nil
		}},
	})
}

func (m *Metrics) decode(n *yaml.Node, path string) error {
	return mapping(n, path, map[string]field{
		"listen": {set: hostPort(&m.Listen)},
	})
}

func (l *Log) decode(n *yaml.Node, path string) error {
	return mapping(n, path, map[string]field{
		"format": {set: func(n *yaml.Node, path string) error {
			s, err := scalar(n, path)
			if err != nil {
				return err
			}
			switch f := LogFormat(s); f {
			case LogText, LogJSON:
				l.Format = f
				return nil
			}
			return errAt(n, path, ErrInvalid, "%q is not a log format (text, json)", s)
		}},
		"level": {set: func(n *yaml.Node, path string) error {
			s, err := scalar(n, path)
			if err != nil {
				return err
			}
			var lv slog.Level
			if err := lv.UnmarshalText([]byte(s)); err != nil {
				return errAt(n, path, ErrInvalid, "%q is not a log level (debug, info, warn, error)", s)
			}
			l.Level = s
			return nil
		}},
	})
}

// SlogLevel returns the configured level.
func (l Log) SlogLevel() slog.Level {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(l.Level)); err != nil {
		return slog.LevelInfo
	}
	return lv
}

// validate checks what spans several fields and fills derived defaults.
func (c *Config) validate(line int) error {
	at := func(format string, args ...any) error {
		return fmt.Errorf("line %d: %s: %w", line, fmt.Sprintf(format, args...), ErrInvalid)
	}
	if c.Interfaces.Back == "" {
		c.Interfaces.Back = c.Interfaces.Front
	}
	if c.Interfaces.Backplane == "" {
		c.Interfaces.Backplane = c.Interfaces.Front
	}
	if c.Partner == c.NodeID {
		return at("partner %q is this node itself; name another node or leave it out", c.Partner)
	}
	if !c.BGP.RouterID.IsValid() && c.Memberlist.BindAddr.Is4() {
		c.BGP.RouterID = c.Memberlist.BindAddr
	}
	if len(c.BGP.Peers) > 0 {
		if c.BGP.LocalAS == 0 {
			return at("bgp.localAs is required when bgp.peers are configured")
		}
		if !c.BGP.RouterID.Is4() {
			return at("bgp.routerId must be an IPv4 address (the memberlist bind address is not IPv4, so set it)")
		}
	}
	seen := map[netip.Addr]bool{}
	for i, p := range c.BGP.Peers {
		if seen[p.Address] {
			return at("bgp.peers[%d]: peer %s listed twice", i, p.Address)
		}
		seen[p.Address] = true
	}
	return nil
}
