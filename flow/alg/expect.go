package alg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Config tunes the expectations the FTP ALG creates.
type Config struct {
	// TTL is how long an expectation waits for its data connection.
	// Clients connect at once after a 227/229 reply or a 150 after PORT;
	// default 30s.
	TTL time.Duration
	// ActiveSourcePort is the port the data connection of PORT/EPRT
	// appears to come from after the rewrite to the VIP (RFC 959: L-1, that
	// is 20 for a control port of 21); default 20.
	ActiveSourcePort uint16
}

// DefaultConfig returns a Config with every default filled in.
func DefaultConfig() Config {
	return Config{
		TTL:              30 * time.Second, // a client connects within a round trip
		ActiveSourcePort: 20,               // ftp-data
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.TTL == 0 {
		c.TTL = d.TTL
	}
	if c.ActiveSourcePort == 0 {
		c.ActiveSourcePort = d.ActiveSourcePort
	}
	return c
}

// Control is an FTP control connection as the owner node sees it.
type Control struct {
	Client  netip.AddrPort // the client's address and control port
	VIP     netip.AddrPort // the vserver, usually VIP:21
	Backend netip.AddrPort // the backend chosen for the control connection
}

// Errors of NewExpectation and Expectation.UnmarshalBinary.
var (
	ErrNotExpecting = errors.New("control line asks for no data connection")
	ErrMixedFamily  = errors.New("control connection mixes IPv4 and IPv6 addresses")
	ErrEncoding     = errors.New("malformed expectation encoding")
)

// Expectation is a data connection the node waits for, created by the FTP
// ALG from a validated control line. It matches the first packet (SYN) of
// the data connection as it reaches the node, is used once, and expires at
// Deadline. The data plane stores it keyed by (Src, Dst, DstPort, TCP) and
// the mirror carries it to the partner like a flow entry.
//
//   - passive (227, 229): client:any -> VIP:port is forwarded to
//     Backend:port, the port the backend listens on (it advertised the VIP
//     with its own port, so the port is not translated);
//   - active (PORT, EPRT): backend:any -> client:port gets its source
//     rewritten to VIP:Config.ActiveSourcePort, like the reply direction of
//     the control connection.
type Expectation struct {
	Kind Kind
	// Src and SrcPort are the data connection's source; SrcPort 0 = any
	// (a passive client picks any port; an active backend usually uses 20
	// but vsftpd without connect_from_port_20 uses any).
	Src     netip.Addr
	SrcPort uint16
	// Dst:DstPort is where the data connection's SYN is addressed.
	Dst     netip.Addr
	DstPort uint16
	// To is what the packet is rewritten to: the backend's data address
	// (passive, destination rewrite) or VIP:ActiveSourcePort (active,
	// source rewrite).
	To netip.AddrPort
	// Control is the control connection's client port, so that closing
	// the control connection can drop its pending expectations.
	ControlPort uint16
	// Deadline is in the clock of the data plane (bpf_ktime_get_ns,
	// CLOCK_MONOTONIC nanoseconds).
	Deadline uint64
}

// NewExpectation turns a validated Expect of the control connection ctl
// into an expectation that expires TTL after now (monotonic nanoseconds).
func NewExpectation(cfg Config, ctl Control, e Expect, now uint64) (Expectation, error) {
	cfg = cfg.withDefaults()
	c, v, b := ctl.Client.Addr().Unmap(), ctl.VIP.Addr().Unmap(), ctl.Backend.Addr().Unmap()
	if c.Is4() != v.Is4() || c.Is4() != b.Is4() {
		return Expectation{}, ErrMixedFamily
	}
	x := Expectation{Kind: e.Kind, ControlPort: ctl.Client.Port(), Deadline: now + uint64(cfg.TTL)}
	switch e.Kind {
	case KindPASV, KindEPSV:
		if e.Addr.Unmap() != v {
			return Expectation{}, fmt.Errorf("%s offers %v, vserver %v: %w", e.Kind, e.Addr, v, ErrAddress)
		}
		x.Src, x.Dst, x.DstPort = c, v, e.Port
		x.To = netip.AddrPortFrom(b, e.Port)
	case KindPORT, KindEPRT:
		if e.Addr.Unmap() != c {
			return Expectation{}, fmt.Errorf("%s names %v, client %v: %w", e.Kind, e.Addr, c, ErrAddress)
		}
		x.Src, x.Dst, x.DstPort = b, c, e.Port
		x.To = netip.AddrPortFrom(v, cfg.ActiveSourcePort)
	default:
		return Expectation{}, ErrNotExpecting
	}
	return x, nil
}

// Matches reports whether a TCP SYN src:sport -> dst:dport at time now
// (monotonic nanoseconds) is the data connection x waits for.
func (x Expectation) Matches(src netip.AddrPort, dst netip.AddrPort, now uint64) bool {
	return now < x.Deadline &&
		src.Addr().Unmap() == x.Src && (x.SrcPort == 0 || src.Port() == x.SrcPort) &&
		dst.Addr().Unmap() == x.Dst && dst.Port() == x.DstPort
}

// ExpectationSize is the length of an encoded Expectation.
const ExpectationSize = 72

// MarshalBinary encodes x in the fixed layout the mirror carries: kind,
// family (4 or 6), src port, dst port, control port, to-port, 6 zero bytes,
// deadline at 16, then src, dst and to addresses as 16 bytes each from 24
// (IPv4 in the first 4, the rest zero). Multi-byte fields are big endian.
func (x Expectation) MarshalBinary() ([]byte, error) {
	b := make([]byte, ExpectationSize)
	if x.Kind == KindNone || x.Kind > KindEPRT {
		return nil, fmt.Errorf("encoding expectation of kind %v: %w", x.Kind, ErrNotExpecting)
	}
	b[0] = byte(x.Kind)
	b[1] = 4
	if !x.Src.Is4() {
		b[1] = 6
	}
	binary.BigEndian.PutUint16(b[2:], x.SrcPort)
	binary.BigEndian.PutUint16(b[4:], x.DstPort)
	binary.BigEndian.PutUint16(b[6:], x.ControlPort)
	binary.BigEndian.PutUint16(b[8:], x.To.Port())
	binary.BigEndian.PutUint64(b[16:], x.Deadline)
	for i, a := range []netip.Addr{x.Src, x.Dst, x.To.Addr()} {
		if !a.IsValid() || a.Is4() != x.Src.Is4() {
			return nil, fmt.Errorf("encoding expectation: %w", ErrMixedFamily)
		}
		s := a.AsSlice()
		copy(b[24+16*i:], s)
	}
	return b, nil
}

// UnmarshalBinary decodes what MarshalBinary wrote.
func (x *Expectation) UnmarshalBinary(b []byte) error {
	if len(b) != ExpectationSize {
		return fmt.Errorf("expectation of %d bytes, want %d: %w", len(b), ExpectationSize, ErrEncoding)
	}
	k := Kind(b[0])
	if k == KindNone || k > KindEPRT {
		return fmt.Errorf("expectation kind %d: %w", b[0], ErrEncoding)
	}
	addr := func(i int) (netip.Addr, error) {
		s := b[24+16*i : 40+16*i]
		switch b[1] {
		case 4:
			for _, c := range s[4:] {
				if c != 0 {
					return netip.Addr{}, fmt.Errorf("ipv4 address with trailing bytes: %w", ErrEncoding)
				}
			}
			return netip.AddrFrom4([4]byte(s[:4])), nil
		case 6:
			return netip.AddrFrom16([16]byte(s)), nil
		}
		return netip.Addr{}, fmt.Errorf("expectation family %d: %w", b[1], ErrEncoding)
	}
	for _, c := range b[10:16] {
		if c != 0 {
			return fmt.Errorf("non-zero padding: %w", ErrEncoding)
		}
	}
	var as [3]netip.Addr
	for i := range as {
		a, err := addr(i)
		if err != nil {
			return err
		}
		as[i] = a
	}
	*x = Expectation{
		Kind:        k,
		Src:         as[0],
		SrcPort:     binary.BigEndian.Uint16(b[2:]),
		Dst:         as[1],
		DstPort:     binary.BigEndian.Uint16(b[4:]),
		ControlPort: binary.BigEndian.Uint16(b[6:]),
		To:          netip.AddrPortFrom(as[2], binary.BigEndian.Uint16(b[8:])),
		Deadline:    binary.BigEndian.Uint64(b[16:]),
	}
	return nil
}
