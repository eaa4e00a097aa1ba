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
	tlsServerHello     = 2

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
	// ErrNotServerHello: a handshake record, but not a ServerHello.
	ErrNotServerHello = errors.New("tls handshake is not a server hello")
	// ErrMalformedHello: a hello that breaks RFC 8446/5246 framing.
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
	msg, n, err := firstHandshake(b, tlsClientHello, false)
	if err != nil {
		return ClientHello{}, err
	}
	h, err := parseHelloBody(msg)
	if err != nil {
		return ClientHello{}, err
	}
	h.Len = n
	return h, nil
}

// firstHandshake reassembles the handshake message of type typ at the start
// of the record stream b and returns its body and how many bytes of b its
// records take. A client sends nothing after its hello before the server
// answers, so trailing handshake bytes in the hello's last record are an
// error unless trailing is set (a server's hello shares its record with the
// certificate and what follows).
func firstHandshake(b []byte, typ byte, trailing bool) ([]byte, int, error) {
	notType := ErrNotClientHello
	if typ != tlsClientHello {
		notType = ErrNotServerHello
	}
	var msg []byte // handshake bytes gathered from records
	want := -1     // handshake message length with its header, once known
	pos := 0
	for want < 0 || len(msg) < want {
		if len(b)-pos < tlsRecordHeader {
			if pos == 0 && len(b) > 0 && b[0] != tlsRecordHandshake {
				return nil, 0, ErrNotTLS
			}
			return nil, 0, ErrNeedMore
		}
		h := b[pos : pos+tlsRecordHeader]
		if h[0] != tlsRecordHandshake || h[1] != 3 {
			if pos == 0 {
				return nil, 0, ErrNotTLS
			}
			return nil, 0, fmt.Errorf("record of type %d inside the hello: %w", h[0], ErrMalformedHello)
		}
		n := int(binary.BigEndian.Uint16(h[3:]))
		if n == 0 || n > tlsMaxRecord {
			return nil, 0, fmt.Errorf("handshake record of %d bytes: %w", n, ErrMalformedHello)
		}
		pos += tlsRecordHeader
		avail := min(n, len(b)-pos)
		msg = append(msg, b[pos:pos+avail]...)
		if len(msg) > 0 && msg[0] != typ {
			return nil, 0, notType
		}
		if want < 0 && len(msg) >= 4 {
			l := int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3])
			if l > MaxClientHello {
				return nil, 0, fmt.Errorf("hello of %d bytes, more than %d: %w", l, MaxClientHello, ErrMalformedHello)
			}
			want = 4 + l
		}
		// A server's hello is complete before its record is (the
		// certificate follows); a client's record must be whole.
		if avail < n && (!trailing || want < 0 || len(msg) < want) {
			return nil, 0, ErrNeedMore
		}
		pos += avail
	}
	if len(msg) != want && !trailing {
		return nil, 0, fmt.Errorf("%d bytes after the hello in its record: %w", len(msg)-want, ErrMalformedHello)
	}
	return msg[4:want], pos, nil
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

// ServerHello is what a session-id table learns from a backend's answer:
// the id the server assigned (TLS 1.2) and whether it resumed a session.
type ServerHello struct {
	// Version is the negotiated version: supported_versions if present
	// (TLS 1.3), else legacy_version.
	Version uint16
	// SessionID is the server's legacy_session_id: in TLS 1.2 the id of the
	// new session, or the client's offered id echoed when it resumes; in
	// TLS 1.3 the client's id echoed, meaning nothing.
	SessionID []byte
	// PSK: the server accepted a TLS 1.3 pre-shared key (resumption).
	PSK bool
	// HelloRetry: this is a TLS 1.3 HelloRetryRequest, not a hello.
	HelloRetry bool
	// Len is how many bytes of the stream were read to complete the
	// ServerHello: its records' headers and bytes up to the last one read,
	// which may end inside a record holding more messages.
	Len int
}

// helloRetryRandom is the random of a HelloRetryRequest (RFC 8446 4.1.3).
const helloRetryRandom = "\xcf\x21\xad\x74\xe5\x9a\x61\x11\xbe\x1d\x8c\x02\x1e\x65\xb8\x91" +
	"\xc2\xa2\x11\x16\x7a\xbb\x8c\x5e\x07\x9e\x09\xe2\xc8\xa8\x33\x9c"

// ParseServerHello reads the ServerHello at the start of what a backend
// sends on a TLS connection. Handshake messages after it in the same record
// (Certificate, ServerHelloDone) are left alone.
func ParseServerHello(b []byte) (ServerHello, error) {
	msg, n, err := firstHandshake(b, tlsServerHello, true)
	if err != nil {
		return ServerHello{}, err
	}
	r := reader{b: msg}
	var h ServerHello
	h.Version = uint16(r.u16())
	random := r.bytes(32)
	sid := r.vec(1)
	r.u16() // cipher suite
	r.u8()  // compression method
	if r.bad {
		return ServerHello{}, malformed("truncated server hello")
	}
	if len(sid.b) > 32 {
		return ServerHello{}, malformed("session id longer than 32 bytes")
	}
	h.SessionID = append([]byte(nil), sid.b...)
	h.HelloRetry = string(random) == helloRetryRandom
	h.Len = n
	if len(r.b) == 0 {
		return h, nil
	}
	exts := r.vec(2)
	if r.bad || len(r.b) != 0 {
		return ServerHello{}, malformed("server hello extensions block")
	}
	seen := map[int]bool{}
	for len(exts.b) > 0 {
		typ := exts.u16()
		data := exts.vec(2)
		if exts.bad {
			return ServerHello{}, malformed("truncated extension")
		}
		if seen[typ] {
			return ServerHello{}, malformed(fmt.Sprintf("extension %d twice", typ))
		}
		seen[typ] = true
		switch typ {
		case extSupportedVersions:
			if len(data.b) != 2 {
				return ServerHello{}, malformed("server supported_versions")
			}
			h.Version = uint16(data.u16())
		case extPreSharedKey:
			h.PSK = true
		}
	}
	return h, nil
}

// Resumed reports whether the server resumed the session the client
// offered: a TLS 1.3 PSK, or in TLS 1.2 the client's non-empty session id
// echoed back (RFC 5246 7.4.1.3, also how a server accepts a ticket).
func Resumed(c ClientHello, s ServerHello) bool {
	if s.Version >= 0x0304 {
		return s.PSK
	}
	return len(s.SessionID) > 0 && string(s.SessionID) == string(c.SessionID)
}
