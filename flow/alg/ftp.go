package alg

import (
	"errors"
	"fmt"
	"net/netip"
)

// LineMax is the longest control line, CRLF included, that the FTP ALG
// reads: the BPF parser copies at most this many payload bytes to its
// buffer. A 227 reply with an IPv4 address needs about 50 bytes, an EPRT
// command with a full IPv6 address about 60.
const LineMax = 128

// Direction says which side of an FTP control connection a segment comes
// from: replies (227, 229) come from the backend, commands (PORT, EPRT)
// from the client.
type Direction uint8

const (
	FromClient  Direction = 1 // client -> VIP:21: PORT and EPRT commands
	FromBackend Direction = 2 // backend -> client: 227 and 229 replies
)

func (d Direction) String() string {
	switch d {
	case FromClient:
		return "from-client"
	case FromBackend:
		return "from-backend"
	}
	return fmt.Sprintf("direction(%d)", uint8(d))
}

// Kind is the control line that asks for a data connection. The values are
// the BPF parser's FTP_KIND_* (flow/bpf/ftp.h).
type Kind uint8

const (
	KindNone Kind = 0 // any other line: nothing to do, not counted
	KindPASV Kind = 1 // "227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)"
	KindEPSV Kind = 2 // "229 Entering Extended Passive Mode (|||port|)"
	KindPORT Kind = 3 // "PORT h1,h2,h3,h4,p1,p2"
	KindEPRT Kind = 4 // "EPRT |1|a.b.c.d|port|" or "EPRT |2|ipv6|port|"
)

func (k Kind) String() string {
	switch k {
	case KindNone:
		return "none"
	case KindPASV:
		return "pasv"
	case KindEPSV:
		return "epsv"
	case KindPORT:
		return "port"
	case KindEPRT:
		return "eprt"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Passive reports whether the data connection goes client -> VIP (PASV,
// EPSV) rather than backend -> client (PORT, EPRT).
func (k Kind) Passive() bool { return k == KindPASV || k == KindEPSV }

// Reason is why a line of one of the four kinds created an expectation or
// not. The values are the BPF parser's FTP_R_* and index its counters.
type Reason uint8

const (
	ReasonOK      Reason = 0 // an expectation is created
	ReasonTooLong Reason = 1 // no line end within LineMax bytes
	ReasonPartial Reason = 2 // the segment ends before the line does
	ReasonSyntax  Reason = 3 // not the grammar of the kind
	ReasonRange   Reason = 4 // a number out of range: byte > 255, port 0 or > 65535, too many digits
	ReasonFamily  Reason = 5 // EPRT network protocol other than 1 (IPv4) or 2 (IPv6)
	ReasonAddress Reason = 6 // address other than the VIP (replies) or the client (commands)
	ReasonMax     Reason = 7
)

// String is the reason's name in counters and logs.
func (r Reason) String() string {
	switch r {
	case ReasonOK:
		return "ok"
	case ReasonTooLong:
		return "too-long"
	case ReasonPartial:
		return "partial"
	case ReasonSyntax:
		return "syntax"
	case ReasonRange:
		return "range"
	case ReasonFamily:
		return "family"
	case ReasonAddress:
		return "address"
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// Errors of ParseFTPLine and Expect.Validate, one per Reason; test them with
// errors.Is. The returned error is a *LineError that also carries the kind.
var (
	ErrTooLong = errors.New("ftp control line longer than the ALG reads")
	ErrPartial = errors.New("ftp control line not terminated in this segment")
	ErrSyntax  = errors.New("malformed ftp control line")
	ErrRange   = errors.New("number out of range in ftp control line")
	ErrFamily  = errors.New("unsupported EPRT network protocol")
	ErrAddress = errors.New("ftp data address is neither the VIP nor the client")
)

// Err is the sentinel error of r, nil for ReasonOK.
func (r Reason) Err() error {
	switch r {
	case ReasonOK:
		return nil
	case ReasonTooLong:
		return ErrTooLong
	case ReasonPartial:
		return ErrPartial
	case ReasonRange:
		return ErrRange
	case ReasonFamily:
		return ErrFamily
	case ReasonAddress:
		return ErrAddress
	}
	return ErrSyntax
}

// LineError is a rejected control line: no expectation, counted by Reason.
type LineError struct {
	Kind   Kind
	Reason Reason
}

func (e *LineError) Error() string { return fmt.Sprintf("%s: %v", e.Kind, e.Reason.Err()) }
func (e *LineError) Unwrap() error { return e.Reason.Err() }

// ReasonOf is the Reason of an error returned by ParseFTPLine or
// Expect.Validate (ReasonOK for nil).
func ReasonOf(err error) Reason {
	var le *LineError
	if errors.As(err, &le) {
		return le.Reason
	}
	if err != nil {
		return ReasonSyntax
	}
	return ReasonOK
}

// Expect is what a control line asks for: a data connection to Addr:Port.
// For 227, PORT and EPRT the address is in the line; a 229 reply carries
// only a port (the address is the control connection's, the VIP), so its
// Addr is invalid until Validate fills it in.
type Expect struct {
	Kind Kind
	Addr netip.Addr
	Port uint16
}

// ParseFTPLine reads the control line that starts payload (one segment's
// TCP payload from a line start) sent in direction dir. A line of another
// kind returns Expect{} and nil. The grammar is exactly the one of
// ftp_parse in flow/bpf/ftp.h, which the agreement tests check:
//
//   - the line ends at the first '\n' within LineMax bytes (a '\r' before
//     it is dropped); bytes after it are not read;
//   - 227: after "227 ", the first digit starts h1,h2,h3,h4,p1,p2 (each 1 to
//     3 digits, <= 255, separated by exactly ','); text after p2 is ignored;
//   - 229: after "229 ", the first '(' is followed by d d d port d ')'
//     where d is one character in '!'..'~' other than a digit and port is
//     1 to 5 digits in 1..65535; text after ')' is ignored;
//   - PORT and EPRT (command names in any case) are followed by spaces and
//     then exactly the argument, optionally followed by spaces;
//   - EPRT |2| addresses are hex groups of 1 to 4 digits with at most one
//     "::"; the embedded-IPv4 form (::ffff:1.2.3.4) and zones are refused.
func ParseFTPLine(payload []byte, dir Direction) (Expect, error) {
	e, r := parseLine(payload, dir)
	if r != ReasonOK {
		return e, &LineError{Kind: e.Kind, Reason: r}
	}
	return e, nil
}

// parseLine is ParseFTPLine without the error value, for the hot path.
func parseLine(payload []byte, dir Direction) (Expect, Reason) {
	k := lineKind(payload, dir)
	if k == KindNone {
		return Expect{}, ReasonOK
	}
	n := min(len(payload), LineMax)
	end := -1
	for i := range n {
		if payload[i] == '\n' {
			end = i
			break
		}
	}
	if end < 0 {
		if len(payload) >= LineMax {
			return Expect{Kind: k}, ReasonTooLong
		}
		return Expect{Kind: k}, ReasonPartial
	}
	if end > 0 && payload[end-1] == '\r' {
		end--
	}
	p := lineParser{b: payload[:end]}
	var e Expect
	var r Reason
	switch k {
	case KindPASV:
		e, r = p.pasv()
	case KindEPSV:
		e, r = p.epsv()
	case KindPORT:
		e, r = p.port()
	case KindEPRT:
		e, r = p.eprt()
	}
	if r != ReasonOK {
		return Expect{Kind: k}, r
	}
	e.Kind = k
	return e, ReasonOK
}

// Validate checks the address of e against the control connection: a
// reply (227, 229) must offer the VIP, a command (PORT, EPRT) must name the
// client itself, else the line could aim a data connection elsewhere (the
// FTP bounce attack). A 229 reply gets the VIP as its address.
func (e Expect) Validate(vip, client netip.Addr) (Expect, error) {
	v, r := e.validate(vip, client)
	if r != ReasonOK {
		return v, &LineError{Kind: e.Kind, Reason: r}
	}
	return v, nil
}

func (e Expect) validate(vip, client netip.Addr) (Expect, Reason) {
	if e.Kind == KindEPSV {
		e.Addr = vip
		return e, ReasonOK
	}
	want := client
	if e.Kind.Passive() {
		want = vip
	}
	if e.Addr != want.Unmap() {
		return Expect{Kind: e.Kind}, ReasonAddress
	}
	return e, ReasonOK
}

// Check is what the BPF parser computes for one segment: ParseFTPLine then
// Validate. The Expect of a rejected line carries only its Kind.
func Check(payload []byte, dir Direction, vip, client netip.Addr) (Expect, Reason) {
	e, r := parseLine(payload, dir)
	if r != ReasonOK || e.Kind == KindNone {
		return e, r
	}
	return e.validate(vip, client)
}

func lineKind(b []byte, dir Direction) Kind {
	switch dir {
	case FromBackend:
		if len(b) >= 4 && b[0] == '2' && b[1] == '2' && b[3] == ' ' {
			switch b[2] {
			case '7':
				return KindPASV
			case '9':
				return KindEPSV
			}
		}
	case FromClient:
		if len(b) >= 5 && b[4] == ' ' {
			switch {
			case upper(b[0]) == 'P' && upper(b[1]) == 'O' && upper(b[2]) == 'R' && upper(b[3]) == 'T':
				return KindPORT
			case upper(b[0]) == 'E' && upper(b[1]) == 'P' && upper(b[2]) == 'R' && upper(b[3]) == 'T':
				return KindEPRT
			}
		}
	}
	return KindNone
}

func upper(c byte) byte {
	if c >= 'a' && c <= 'z' {
		return c - 'a' + 'A'
	}
	return c
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func hexVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// lineParser walks one line (without its end) with a cursor. Reading past
// the end yields 0, which matches no expected character.
type lineParser struct {
	b []byte
	i int
}

func (p *lineParser) at(i int) byte {
	if i < len(p.b) {
		return p.b[i]
	}
	return 0
}

func (p *lineParser) peek() byte { return p.at(p.i) }

func (p *lineParser) skipSpaces() {
	for p.i < len(p.b) && p.b[p.i] == ' ' {
		p.i++
	}
}

// num reads a decimal number of 1..maxDigits digits no larger than max.
func (p *lineParser) num(maxDigits int, max uint32) (uint32, Reason) {
	if !isDigit(p.peek()) {
		return 0, ReasonSyntax
	}
	var v uint32
	for d := 0; isDigit(p.peek()); d++ {
		if d == maxDigits {
			return 0, ReasonRange
		}
		v = v*10 + uint32(p.peek()-'0')
		p.i++
	}
	if v > max {
		return 0, ReasonRange
	}
	return v, ReasonOK
}

// sixTuple reads h1,h2,h3,h4,p1,p2.
func (p *lineParser) sixTuple() (Expect, Reason) {
	var v [6]byte
	for k := range 6 {
		if k > 0 {
			if p.peek() != ',' {
				return Expect{}, ReasonSyntax
			}
			p.i++
		}
		n, r := p.num(3, 255)
		if r != ReasonOK {
			return Expect{}, r
		}
		v[k] = byte(n)
	}
	port := uint16(v[4])<<8 | uint16(v[5])
	if port == 0 {
		return Expect{}, ReasonRange
	}
	return Expect{Addr: netip.AddrFrom4([4]byte(v[:4])), Port: port}, ReasonOK
}

func (p *lineParser) pasv() (Expect, Reason) {
	p.i = 4
	for p.i < len(p.b) && !isDigit(p.b[p.i]) {
		p.i++
	}
	if p.i == len(p.b) {
		return Expect{}, ReasonSyntax
	}
	return p.sixTuple()
}

func (p *lineParser) port() (Expect, Reason) {
	p.i = 5
	p.skipSpaces()
	e, r := p.sixTuple()
	if r != ReasonOK {
		return e, r
	}
	return e, p.end()
}

// end accepts trailing spaces and nothing else.
func (p *lineParser) end() Reason {
	p.skipSpaces()
	if p.i != len(p.b) {
		return ReasonSyntax
	}
	return ReasonOK
}

func delimOK(c byte) bool { return c >= '!' && c <= '~' && !isDigit(c) }

// dataPort reads an RFC 2428 port field: 1..65535 followed by d.
func (p *lineParser) dataPort(d byte) (uint16, Reason) {
	n, r := p.num(5, 65535)
	if r != ReasonOK {
		return 0, r
	}
	if n == 0 {
		return 0, ReasonRange
	}
	if p.peek() != d {
		return 0, ReasonSyntax
	}
	p.i++
	return uint16(n), ReasonOK
}

func (p *lineParser) epsv() (Expect, Reason) {
	p.i = 4
	for p.i < len(p.b) && p.b[p.i] != '(' {
		p.i++
	}
	if p.i == len(p.b) {
		return Expect{}, ReasonSyntax
	}
	p.i++
	d := p.peek()
	if !delimOK(d) || p.at(p.i+1) != d || p.at(p.i+2) != d {
		return Expect{}, ReasonSyntax
	}
	p.i += 3
	port, r := p.dataPort(d)
	if r != ReasonOK {
		return Expect{}, r
	}
	if p.peek() != ')' {
		return Expect{}, ReasonSyntax
	}
	return Expect{Port: port}, ReasonOK
}

func (p *lineParser) eprt() (Expect, Reason) {
	p.i = 5
	p.skipSpaces()
	d := p.peek()
	if !delimOK(d) {
		return Expect{}, ReasonSyntax
	}
	p.i++
	proto := p.peek()
	if !isDigit(proto) || p.at(p.i+1) != d {
		return Expect{}, ReasonSyntax
	}
	if proto != '1' && proto != '2' {
		return Expect{}, ReasonFamily
	}
	p.i += 2
	var e Expect
	var r Reason
	if proto == '1' {
		e, r = p.dottedQuad(d)
	} else {
		e, r = p.ipv6(d)
	}
	if r != ReasonOK {
		return Expect{}, r
	}
	e.Port, r = p.dataPort(d)
	if r != ReasonOK {
		return Expect{}, r
	}
	return e, p.end()
}

// dottedQuad reads a.b.c.d followed by d.
func (p *lineParser) dottedQuad(d byte) (Expect, Reason) {
	var a [4]byte
	for k := range 4 {
		if k > 0 {
			if p.peek() != '.' {
				return Expect{}, ReasonSyntax
			}
			p.i++
		}
		n, r := p.num(3, 255)
		if r != ReasonOK {
			return Expect{}, r
		}
		a[k] = byte(n)
	}
	if p.peek() != d {
		return Expect{}, ReasonSyntax
	}
	p.i++
	return Expect{Addr: netip.AddrFrom4(a)}, ReasonOK
}

// ipv6 reads hex groups with at most one "::", followed by d. Groups
// before the "::" fill the address from the front, groups after it from
// the back.
func (p *lineParser) ipv6(d byte) (Expect, Reason) {
	var groups [8]uint16
	n, gap := 0, -1 // groups read; index of the "::" in groups, -1 if none
	if p.peek() == ':' {
		if p.at(p.i+1) != ':' {
			return Expect{}, ReasonSyntax
		}
		gap = 0
		p.i += 2
	}
	for p.peek() != d {
		if n == 8 {
			return Expect{}, ReasonSyntax
		}
		var g, digits int
		for ; hexVal(p.peek()) >= 0; p.i++ {
			if digits == 4 {
				return Expect{}, ReasonSyntax
			}
			g = g<<4 | hexVal(p.peek())
			digits++
		}
		if digits == 0 {
			return Expect{}, ReasonSyntax
		}
		groups[n] = uint16(g)
		n++
		switch p.peek() {
		case d:
		case ':':
			p.i++
			if p.peek() == ':' {
				if gap >= 0 {
					return Expect{}, ReasonSyntax
				}
				gap = n
				p.i++
			} else if p.peek() == d {
				return Expect{}, ReasonSyntax // a single trailing ':'
			}
		default:
			return Expect{}, ReasonSyntax
		}
	}
	if (gap < 0 && n != 8) || (gap >= 0 && n > 7) {
		return Expect{}, ReasonSyntax
	}
	p.i++
	var a [16]byte
	for k := range n {
		pos := k
		if gap >= 0 && k >= gap {
			pos = 8 - n + k
		}
		a[2*pos] = byte(groups[k] >> 8)
		a[2*pos+1] = byte(groups[k])
	}
	return Expect{Addr: netip.AddrFrom16(a)}, ReasonOK
}
