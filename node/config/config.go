// Package config reads tandemd's node configuration (node.yaml).
//
// The file is decoded through yaml.Node, key by key, so that every error
// names the line it comes from: unknown keys are refused (a typo must not
// silently fall back to a default), missing required fields say what they are
// for. Defaults live in one place, Default().
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"
)

var (
	// ErrSyntax is returned when node.yaml is not well-formed YAML or a value
	// has the wrong shape (a list where a mapping is expected, ...).
	ErrSyntax = errors.New("syntax error")
	// ErrUnknownKey is returned for a key the configuration does not have.
	ErrUnknownKey = errors.New("unknown key")
	// ErrMissing is returned when a required field is absent.
	ErrMissing = errors.New("missing required field")
	// ErrInvalid is returned when a value is present but not acceptable.
	ErrInvalid = errors.New("invalid value")
)

// PrefixKind names a class of prefixes the node announces by BGP.
type PrefixKind string

const (
	// PrefixVIPs are the vservers' VIPs, announced to the front routers.
	PrefixVIPs PrefixKind = "vips"
	// PrefixReturn are the prefixes that draw backend replies (USIP/NAT
	// return traffic) to the node, announced to the back routers.
	PrefixReturn PrefixKind = "return"
)

// XDPMode is how the XDP programs are attached.
type XDPMode string

const (
	XDPNative  XDPMode = "native"
	XDPGeneric XDPMode = "generic"
	XDPOffload XDPMode = "offload"
)

// LogFormat selects the slog handler.
type LogFormat string

const (
	LogText LogFormat = "text"
	LogJSON LogFormat = "json"
)

// Config is the whole node.yaml.
type Config struct {
	// NodeID names this node in the cluster. Required.
	NodeID string
	// Interfaces are the data-path interfaces.
	Interfaces Interfaces
	// Memberlist is the gossip membership configuration.
	Memberlist Memberlist
	// Partner is the node id of this node's pair partner; empty means the
	// pairs are formed from the sorted node ids.
	Partner string
	// SNIPs are the source addresses of the pair's USIP OFF flows, at most
	// one per family (both partners configure the same). node.yaml `snip:`
	// takes one address or a list (`snip: [198.18.80.1, fd00::1]`). A flow
	// is source-NATed to the SNIP of its own family by the pair's active
	// member, which announces every SNIP to the back peers (a /32 or
	// /128), so replies follow a takeover. No SNIP of a flow's family: the
	// flows of vservers with a USIP OFF service are dropped (the data plane
	// counts drop_no_snat).
	SNIPs []netip.Addr
	// BGP is the embedded BGP speaker's configuration.
	BGP BGP
	// DrainTime is how long a drain announces GRACEFUL_SHUTDOWN before it
	// withdraws. Default 5s.
	DrainTime time.Duration
	// VIPInterface is the interface the VIP addresses are put on so that the
	// kernel answers for them. Default "lo".
	VIPInterface string
	// API is where the node's HTTP API is served.
	API API
	// Metrics is where /metrics is served.
	Metrics Metrics
	// StateDir holds the persisted cluster config and the single-instance
	// lock. Default /var/lib/tandem.
	StateDir string
	// Log is the logging configuration.
	Log Log
	// XDPMode is how XDP programs attach. Default native.
	XDPMode XDPMode
}

// Interfaces names the data-path interfaces. Front is required; Back and
// Backplane default to Front (a one-armed node).
type Interfaces struct {
	Front     string
	Back      string
	Backplane string
}

// Memberlist configures gossip membership.
type Memberlist struct {
	// BindAddr is the address gossip binds to. Required (it is also the
	// address other nodes reach this one at).
	BindAddr netip.Addr
	// BindPort is the gossip port. Default 7946.
	BindPort int
	// Seeds are host:port of nodes to join at start. Empty means start a new
	// cluster.
	Seeds []string
	// KeyringFile holds the gossip encryption keys, one base64 32-byte key a
	// line, the first being the primary. Required: gossip is never open.
	KeyringFile string
}

// BGP configures the embedded speaker.
type BGP struct {
	// LocalAS is this node's AS number. Required when peers are configured.
	LocalAS uint32
	// RouterID is the BGP identifier. Default: Memberlist.BindAddr when it is
	// IPv4.
	RouterID netip.Addr
	// ListenPort is the port BGP listens on; -1 (the default) only dials out.
	ListenPort int32
	// Peers are the routers this node announces to.
	Peers []Peer
	// Communities are added to every announced prefix ("65000:100").
	Communities []string
	// ReturnPrefixes are announced (kind "return", to the peers that take
	// it) while the node serves at least one VIP, so that the back routers
	// send the backends' replies to the clients (USIP) through the nodes.
	// Typically the client networks, or 0.0.0.0/0 and ::/0. Default none.
	ReturnPrefixes []netip.Prefix
}

// Peer is one BGP neighbour.
type Peer struct {
	// Address of the router. Required.
	Address netip.Addr
	// AS of the router. Required.
	AS uint32
	// HoldTime is the proposed hold time. Default 9s (routers must notice a
	// frozen node quickly).
	HoldTime time.Duration
	// Keepalive is the keepalive interval. Default HoldTime/3.
	Keepalive time.Duration
	// Announce says which prefix kinds this peer receives. Default [vips].
	Announce []PrefixKind
	// Communities are added to prefixes sent to this peer only.
	Communities []string
}

// Announces reports whether the peer receives prefixes of kind k.
func (p Peer) Announces(k PrefixKind) bool {
	for _, a := range p.Announce {
		if a == k {
			return true
		}
	}
	return false
}

// API configures the HTTP API listeners.
type API struct {
	// Socket is the unix socket path (mode 0600). Default
	// /run/tandem/tandemd.sock.
	Socket string
	// TCP is an optional TCP listener; it needs a token or mutual TLS.
	TCP *TCPListener
}

// TCPListener is the optional remote API listener. Exactly one of TokenFile
// or TLS must be set: the API is never open on the network.
type TCPListener struct {
	// Listen is host:port. Required.
	Listen string
	// TokenFile holds the bearer token clients must present.
	TokenFile string
	// TLS enables mutual TLS.
	TLS *TLSFiles
}

// TLSFiles are the PEM files for mutual TLS.
type TLSFiles struct {
	Cert     string
	Key      string
	ClientCA string
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	// Listen is host:port of /metrics. Default 127.0.0.1:9410; "" disables.
	Listen string
}

// Log configures log/slog.
type Log struct {
	// Format is text or json. Default text.
	Format LogFormat
	// Level is debug, info, warn or error. Default info.
	Level string
}

// Default returns a Config with every default set. Required fields (NodeID,
// Interfaces.Front, Memberlist.BindAddr, Memberlist.KeyringFile) are empty.
func Default() Config {
	return Config{
		Memberlist: Memberlist{
			BindPort: 7946, // memberlist's own default
		},
		BGP: BGP{
			ListenPort: -1, // dial out only: routers are configured with our address
		},
		DrainTime:    5 * time.Second,
		VIPInterface: "lo",
		API: API{
			Socket: "/run/tandem/tandemd.sock",
		},
		Metrics:  Metrics{Listen: "127.0.0.1:9410"},
		StateDir: "/var/lib/tandem",
		Log:      Log{Format: LogText, Level: "info"},
		XDPMode:  XDPNative,
	}
}

// DefaultPeer returns a Peer with its defaults.
func DefaultPeer() Peer {
	return Peer{
		HoldTime: 9 * time.Second,
		Announce: []PrefixKind{PrefixVIPs},
	}
}

// Load reads and parses the file at path.
func Load(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("reading node config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}
