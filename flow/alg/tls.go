package alg

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// TLS record and handshake constants used by ParseClientHello.
const (
	tlsRecordHeader    = 5
	tlsRecordHandshake = 22
	tlsMaxRecord       = 1<<14 + 256 // TLSPlaintext limit with some slack for old stacks
	tlsClientHello     = 1

	// MaxClientHello bounds the handshake message ParseClientHello
	// reassembles. A ClientHello with post-quantum key shares is about
	// 1.8 KiB; 16 KiB leaves room for large PSK identities.
	MaxClientHello = 1 << 14

	extServerName        = 0
	extSessionTicket     = 35
	extPreSharedKey      = 41
	extSupportedVersions = 43
)

// Errors of ParseClientHello, tested with errors.Is.
var (
	// ErrNeedMore: the bytes end before the ClientHello does; call again
	// with more of the stream.
	ErrNeedMore = errors.New("tls client hello incomplete: need more bytes")
	// ErrNotTLS: the stream does not start with a TLS handshake record.
	ErrNotTLS = errors.New("not a tls handshake record")
	// ErrNotClientHello: a handshake record, but not a ClientHello.
	ErrNotClientHello = errors.New("tls handshake is not a client hello")
	// ErrMalformedHello: a ClientHello that breaks RFC 8446/5246 framing.
	ErrMalformedHello = errors.New("malformed tls client hello")
)

// ClientHello is what SSL_BRIDGE persistence reads from the first bytes a
// client sends; the connection itself is forwarded untouched.
type ClientHello struct {
	// Version is legacy_version (0x0303 for TLS 1.2 and 1.3 clients).
	Version uint16
	// SessionID is legacy_session_id, 0 to 32 bytes. A TLS 1.2 client
	// resuming by session id offers the id the server gave it; otherwise
	// clients send 32 random bytes (TLS 1.3 middlebox compatibility, and
	// crypto/tls always), which identify nothing.
	SessionID []byte
	// ServerName is the host_name of the server_name extension (SNI), "" if
	// absent.
	ServerName string
	// SupportedVersions is the supported_versions extension (TLS 1.3), in
	// the client's order.
	SupportedVersions []uint16
	// Ticket: the client offers a non-empty TLS 1.2 session ticket.
	Ticket bool
	// PSK: the client offers a TLS 1.3 pre-shared key (resumption).
	PSK bool
	// Len is how many bytes of the stream the records holding the
	// ClientHello take.
	Len int
}

// OffersTicket reports whether the client offers a ticket (TLS 1.2
// session ticket or TLS 1.3 PSK), with which it carries its session state
// itself: such a client resumes on any backend that shares the ticket keys,
// persistence or not. A non-empty SessionID alone tells nothing: crypto/tls
// and browsers send 32 random bytes on every first hello, and only the
// server (or a table learned from ServerHellos) knows whether an id is one
// it issued.
func (h ClientHello) OffersTicket() bool { return h.Ticket || h.PSK }

// ParseClientHello reads the ClientHello at the start of a TLS stream b
// (what the client sent first, possibly several segments concatenated). The
// handshake message may span several handshake records. It returns
// ErrNeedMore while b is a valid prefix of a ClientHello.
func ParseClientHello(b []byte) (ClientHello, error) {
	var msg []byte // handshake bytes gathered from records
	want := -1     // handshake message length with its header, once known
	pos := 0
	for want < 0 || len(msg) < want {
		if len(b)-pos < tlsRecordHeader {
			if pos == 0 && len(b) > 0 && b[0] != tlsRecordHandshake {
				return ClientHello{}, ErrNotTLS
			}
			return ClientHello{}, ErrNeedMore
		}
		h := b[pos : pos+tlsRecordHeader]
		if h[0] != tlsRecordHandshake || h[1] != 3 {
			if pos == 0 {
				return ClientHello{}, ErrNotTLS
			}
			return ClientHello{}, fmt.Errorf("record of type %d inside the client hello: %w", h[0], ErrMalformedHello)
		}
		n := int(binary.BigEndian.Uint16(h[3:]))
		if n == 0 || n > tlsMaxRecord {
			return ClientHello{}, fmt.Errorf("handshake record of %d bytes: %w", n, ErrMalformedHello)
		}
		pos += tlsRecordHeader
		avail := min(n, len(b)-pos)
		msg = append(msg, b[pos:pos+avail]...)
		if want < 0 && len(msg) >= 4 {
			if msg[0] != tlsClientHello {
				return ClientHello{}, ErrNotClientHello
			}
			l := int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3])
			if l > MaxClientHello {
				return ClientHello{}, fmt.Errorf("client hello of %d bytes, more than %d: %w", l, MaxClientHello, ErrMalformedHello)
			}
			want = 4 + l
		}
		if want < 0 && len(msg) > 0 && msg[0] != tlsClientHello {
			return ClientHello{}, ErrNotClientHello
		}
		if avail < n {
			return ClientHello{}, ErrNeedMore
		}
		pos += n
	}
	if len(msg) != want {
		// The last record holds more than the ClientHello: a client sends
		// nothing else before the server's reply.
		return ClientHello{}, fmt.Errorf("%d bytes after the client hello in its record: %w", len(msg)-want, ErrMalformedHello)
	}
	h, err := parseHelloBody(msg[4:])
	if err != nil {
		return ClientHello{}, err
	}
	h.Len = pos
	return h, nil
}

// reader reads big-endian fields; any overrun sets bad.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) bytes(n int) []byte {
	if r.bad || n > len(r.b) {
		r.bad = true
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() int {
	v := r.bytes(1)
	if v == nil {
		return 0
	}
	return int(v[0])
}

func (r *reader) u16() int {
	v := r.bytes(2)
	if v == nil {
		return 0
	}
	return int(binary.BigEndian.Uint16(v))
}

// vec reads a vector with an n-byte length prefix (n = 1 or 2).
func (r *reader) vec(n int) reader {
	var l int
	if n == 1 {
		l = r.u8()
	} else {
		l = r.u16()
	}
	v := r.bytes(l)
	return reader{b: v, bad: r.bad}
}

func malformed(what string) error { return fmt.Errorf("%s: %w", what, ErrMalformedHello) }

func parseHelloBody(body []byte) (ClientHello, error) {
	r := reader{b: body}
	var h ClientHello
	h.Version = uint16(r.u16())
	r.bytes(32) // random
	sid := r.vec(1)
	if len(sid.b) > 32 {
		return ClientHello{}, malformed("session id longer than 32 bytes")
	}
	h.SessionID = append([]byte(nil), sid.b...)
	suites := r.vec(2)
	if len(suites.b) < 2 || len(suites.b)%2 != 0 {
		return ClientHello{}, malformed("cipher suites")
	}
	if comp := r.vec(1); len(comp.b) < 1 {
		return ClientHello{}, malformed("compression methods")
	}
	if r.bad {
		return ClientHello{}, malformed("truncated client hello")
	}
	if len(r.b) == 0 {
		return h, nil // no extensions (SSL 3.0 / early TLS 1.0 clients)
	}
	exts := r.vec(2)
	if r.bad || len(r.b) != 0 {
		return ClientHello{}, malformed("extensions block")
	}
	seen := map[int]bool{}
	for len(exts.b) > 0 {
		typ := exts.u16()
		data := exts.vec(2)
		if exts.bad {
			return ClientHello{}, malformed("truncated extension")
		}
		if seen[typ] {
			return ClientHello{}, malformed(fmt.Sprintf("extension %d twice", typ))
		}
		seen[typ] = true
		switch typ {
		case extServerName:
			name, err := serverName(data)
			if err != nil {
				return ClientHello{}, err
			}
			h.ServerName = name
		case extSupportedVersions:
			vs := data.vec(1)
			if data.bad || len(data.b) != 0 || len(vs.b) < 2 || len(vs.b)%2 != 0 {
				return ClientHello{}, malformed("supported_versions")
			}
			for len(vs.b) > 0 {
				h.SupportedVersions = append(h.SupportedVersions, uint16(vs.u16()))
			}
		case extSessionTicket:
			h.Ticket = len(data.b) > 0
		case extPreSharedKey:
			h.PSK = true
		}
	}
	return h, nil
}

// serverName reads a server_name extension (RFC 6066): a list with at most
// one host_name entry.
func serverName(data reader) (string, error) {
	list := data.vec(2)
	if data.bad || len(data.b) != 0 || len(list.b) == 0 {
		return "", malformed("server_name list")
	}
	var name string
	for len(list.b) > 0 {
		typ := list.u8()
		v := list.vec(2)
		if list.bad {
			return "", malformed("truncated server_name entry")
		}
		if typ != 0 {
			continue // unknown name types are skipped
		}
		if name != "" {
			return "", malformed("two host names")
		}
		if len(v.b) == 0 {
			return "", malformed("empty host name")
		}
		for _, c := range v.b {
			if c <= ' ' || c >= 0x7f {
				return "", malformed("host name with a byte outside printable ASCII")
			}
		}
		name = string(v.b)
	}
	return name, nil
}
