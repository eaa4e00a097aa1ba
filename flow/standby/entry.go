// Package standby holds the flows a partner mirrors to this node, so that
// this node can install them into its BPF flow table and carry them on when
// the partner dies.
//
// A mirrored flow travels and is stored in one fixed-size binary form, the
// Record, so the receiving side validates and stores what it read without
// decoding it into Go values; a takeover hands the Records to the data plane,
// which reads them in place (Record's accessors).
package standby

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Sentinel errors of the record encoding.
var (
	// ErrInvalidEntry means an Entry cannot be encoded: an address is missing
	// or of the wrong family, or the protocol is not TCP or UDP.
	ErrInvalidEntry = errors.New("invalid flow entry")
	// ErrInvalidRecord means bytes are not a well-formed Record.
	ErrInvalidRecord = errors.New("invalid flow record")
)

// Protocols a mirrored flow may have (IP protocol numbers).
const (
	ProtoTCP uint8 = 6
	ProtoUDP uint8 = 17
)

// Address families of a Record.
const (
	familyV4 = 4
	familyV6 = 6
)

// Record layout (big-endian, fixed size). The key comes first, so
// Record[:KeySize] is the flow's Key.
//
//	off size
//	  0    1  family (4 or 6)
//	  1    1  protocol (6 TCP, 17 UDP)
//	  2    2  client port
//	  4    2  VIP port
//	  6   16  client address (IPv4: 4 bytes, then 12 zero bytes)
//	 22   16  VIP address
//	 38    2  backend port
//	 40    2  SNAT port
//	 42   16  backend address
//	 58   16  SNAT address (all zero: no source NAT, the client's address is kept)
//	 74    2  flags
//	 76    4  vserver id
//	 80    4  created, Unix seconds
//	 84    4  last seen, Unix seconds
//	 88    4  idle timeout, seconds (0: the store's default for the protocol)
const (
	// KeySize is the size of an encoded Key.
	KeySize = 38
	// RecordSize is the size of an encoded Entry.
	RecordSize = 92

	offBackendPort = 38
	offSNATPort    = 40
	offBackend     = 42
	offSNAT        = 58
	offFlags       = 74
	offVServer     = 76
	offCreated     = 80
	offLastSeen    = 84
	offIdle        = 88
)

// Key is an encoded flow key: what the BPF flow table is keyed on (client
// address and port, VIP address and port, protocol).
type Key [KeySize]byte

// Record is an encoded Entry.
type Record [RecordSize]byte

// Entry is a mirrored flow.
type Entry struct {
	// Proto is ProtoTCP or ProtoUDP.
	Proto uint8
	// Client and VIP identify the flow (the client's source, the vserver's
	// address the client reached).
	Client netip.AddrPort
	VIP    netip.AddrPort
	// Backend is where the owner forwards the flow.
	Backend netip.AddrPort
	// SNAT is the source the owner rewrites to when USIP is off; the zero
	// value means the client's address is kept.
	SNAT netip.AddrPort
	// VServerID is the vserver the flow belongs to, as the cluster numbers
	// vservers.
	VServerID uint32
	// Flags are the data plane's flow flags.
	Flags uint16
	// Created and LastSeen are Unix seconds.
	Created  uint32
	LastSeen uint32
	// IdleTimeout is how long the flow lives without traffic, in whole
	// seconds; 0 means the store's default for the protocol.
	IdleTimeout time.Duration
}

// Key returns the entry's encoded flow key.
func (e *Entry) Key() (Key, error) {
	var r Record
	if err := e.Encode(&r); err != nil {
		return Key{}, err
	}
	return r.Key(), nil
}

// Encode writes the entry into r. It does not allocate unless it fails.
func (e *Entry) Encode(r *Record) error {
	if e.Proto != ProtoTCP && e.Proto != ProtoUDP {
		return fmt.Errorf("%w: protocol %d (want TCP 6 or UDP 17)", ErrInvalidEntry, e.Proto)
	}
	ca, va := e.Client.Addr().Unmap(), e.VIP.Addr().Unmap()
	if !ca.IsValid() || !va.IsValid() || !e.Backend.Addr().IsValid() {
		return fmt.Errorf("%w: client, VIP and backend addresses are required", ErrInvalidEntry)
	}
	fam := byte(familyV6)
	if ca.Is4() {
		fam = familyV4
	}
	if e.IdleTimeout < 0 || e.IdleTimeout/time.Second > 1<<32-1 {
		return fmt.Errorf("%w: idle timeout %v", ErrInvalidEntry, e.IdleTimeout)
	}
	*r = Record{}
	r[0] = fam
	r[1] = e.Proto
	binary.BigEndian.PutUint16(r[2:], e.Client.Port())
	binary.BigEndian.PutUint16(r[4:], e.VIP.Port())
	binary.BigEndian.PutUint16(r[offBackendPort:], e.Backend.Port())
	if e.SNAT.Addr().IsValid() {
		binary.BigEndian.PutUint16(r[offSNATPort:], e.SNAT.Port())
	}
	for _, a := range [...]struct {
		addr netip.Addr
		off  int
		opt  bool
	}{{ca, 6, false}, {va, 22, false}, {e.Backend.Addr(), offBackend, false}, {e.SNAT.Addr(), offSNAT, true}} {
		if a.opt && !a.addr.IsValid() {
			continue
		}
		if !putAddr(r[a.off:a.off+16], a.addr, fam) {
			return fmt.Errorf("%w: address %v is not of the client's family IPv%d", ErrInvalidEntry, a.addr, fam)
		}
	}
	binary.BigEndian.PutUint16(r[offFlags:], e.Flags)
	binary.BigEndian.PutUint32(r[offVServer:], e.VServerID)
	binary.BigEndian.PutUint32(r[offCreated:], e.Created)
	binary.BigEndian.PutUint32(r[offLastSeen:], e.LastSeen)
	binary.BigEndian.PutUint32(r[offIdle:], uint32(e.IdleTimeout/time.Second))
	return nil
}

func putAddr(dst []byte, a netip.Addr, fam byte) bool {
	a = a.Unmap()
	if a.Is4() != (fam == familyV4) {
		return false
	}
	if a.Is4() {
		b := a.As4()
		copy(dst, b[:])
		return true
	}
	b := a.As16()
	copy(dst, b[:])
	return true
}

func getAddr(src []byte, fam byte) netip.Addr {
	if fam == familyV4 {
		return netip.AddrFrom4([4]byte(src[:4]))
	}
	return netip.AddrFrom16([16]byte(src[:16]))
}

// Key returns the record's flow key.
func (r *Record) Key() Key { return Key(r[:KeySize]) }

// VServerID returns the record's vserver id without decoding it.
func (r *Record) VServerID() uint32 { return binary.BigEndian.Uint32(r[offVServer:]) }

// Proto returns the record's protocol without decoding it.
func (r *Record) Proto() uint8 { return r[1] }

// Family returns the record's address family, 4 or 6.
func (r *Record) Family() uint8 { return r[0] }

// Flags returns the record's flow flags without decoding it.
func (r *Record) Flags() uint16 { return binary.BigEndian.Uint16(r[offFlags:]) }

// Ports returns the record's ports: the client's, the VIP's, the backend's
// and the SNAT port (0 without source NAT).
func (r *Record) Ports() (client, vip, backend, snat uint16) {
	return binary.BigEndian.Uint16(r[2:]), binary.BigEndian.Uint16(r[4:]),
		binary.BigEndian.Uint16(r[offBackendPort:]), binary.BigEndian.Uint16(r[offSNATPort:])
}

// RawAddrs returns the record's addresses as stored, 16 bytes each in
// network order (an IPv4 address fills the first 4 and the rest is zero),
// for a data plane that converts records without decoding them.
func (r *Record) RawAddrs() (client, vip, backend, snat [16]byte) {
	return [16]byte(r[6:22]), [16]byte(r[22:38]), [16]byte(r[offBackend:]), [16]byte(r[offSNAT:])
}

// HasSNAT reports whether the flow is source-NATed (Decode gives it a
// valid SNAT).
func (r *Record) HasSNAT() bool {
	return !allZero(r[offSNAT:offSNAT+16]) || binary.BigEndian.Uint16(r[offSNATPort:]) != 0
}

// IdleTimeout returns the record's idle timeout (0: the default).
func (r *Record) IdleTimeout() time.Duration {
	return time.Duration(binary.BigEndian.Uint32(r[offIdle:])) * time.Second
}

// Validate checks that r could have been written by Encode: a known family
// and protocol, zero padding after IPv4 addresses, non-zero client, VIP and
// backend addresses. A receiver validates every record it reads.
func (r *Record) Validate() error {
	if err := validateKey(r[:KeySize]); err != nil {
		return err
	}
	fam := r[0]
	if allZero(r[offBackend : offBackend+16]) {
		return fmt.Errorf("%w: no backend address", ErrInvalidRecord)
	}
	if fam == familyV4 && (!allZero(r[offBackend+4:offBackend+16]) || !allZero(r[offSNAT+4:offSNAT+16])) {
		return fmt.Errorf("%w: IPv4 address with non-zero padding", ErrInvalidRecord)
	}
	if fam == familyV6 && (is4in6(r[offBackend:]) || is4in6(r[offSNAT:])) {
		return fmt.Errorf("%w: IPv4-mapped address in an IPv6 record", ErrInvalidRecord)
	}
	return nil
}

// is4in6 reports an IPv4-mapped IPv6 address: Encode writes those as IPv4,
// so an IPv6 record holding one is not canonical.
func is4in6(b []byte) bool {
	return allZero(b[:10]) && b[10] == 0xff && b[11] == 0xff
}

// Validate checks the key as Record.Validate does.
func (k *Key) Validate() error { return validateKey(k[:]) }

func validateKey(b []byte) error {
	fam, proto := b[0], b[1]
	if fam != familyV4 && fam != familyV6 {
		return fmt.Errorf("%w: family %d", ErrInvalidRecord, fam)
	}
	if proto != ProtoTCP && proto != ProtoUDP {
		return fmt.Errorf("%w: protocol %d", ErrInvalidRecord, proto)
	}
	if allZero(b[6:22]) || allZero(b[22:38]) {
		return fmt.Errorf("%w: zero client or VIP address", ErrInvalidRecord)
	}
	if fam == familyV4 && (!allZero(b[10:22]) || !allZero(b[26:38])) {
		return fmt.Errorf("%w: IPv4 address with non-zero padding", ErrInvalidRecord)
	}
	if fam == familyV6 && (is4in6(b[6:]) || is4in6(b[22:])) {
		return fmt.Errorf("%w: IPv4-mapped address in an IPv6 record", ErrInvalidRecord)
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Decode returns the entry r encodes.
func (r *Record) Decode() (Entry, error) {
	if err := r.Validate(); err != nil {
		return Entry{}, err
	}
	fam := r[0]
	e := Entry{
		Proto:       r[1],
		Client:      netip.AddrPortFrom(getAddr(r[6:], fam), binary.BigEndian.Uint16(r[2:])),
		VIP:         netip.AddrPortFrom(getAddr(r[22:], fam), binary.BigEndian.Uint16(r[4:])),
		Backend:     netip.AddrPortFrom(getAddr(r[offBackend:], fam), binary.BigEndian.Uint16(r[offBackendPort:])),
		VServerID:   r.VServerID(),
		Flags:       binary.BigEndian.Uint16(r[offFlags:]),
		Created:     binary.BigEndian.Uint32(r[offCreated:]),
		LastSeen:    binary.BigEndian.Uint32(r[offLastSeen:]),
		IdleTimeout: r.IdleTimeout(),
	}
	if snat := r[offSNAT : offSNAT+16]; !allZero(snat) || binary.BigEndian.Uint16(r[offSNATPort:]) != 0 {
		e.SNAT = netip.AddrPortFrom(getAddr(snat, fam), binary.BigEndian.Uint16(r[offSNATPort:]))
	}
	return e, nil
}

// String formats the key for logs.
func (k Key) String() string {
	var r Record
	copy(r[:], k[:])
	if err := k.Validate(); err != nil {
		return fmt.Sprintf("invalid key %x", k[:])
	}
	fam := r[0]
	proto := "TCP"
	if r[1] == ProtoUDP {
		proto = "UDP"
	}
	c := netip.AddrPortFrom(getAddr(r[6:], fam), binary.BigEndian.Uint16(r[2:]))
	v := netip.AddrPortFrom(getAddr(r[22:], fam), binary.BigEndian.Uint16(r[4:]))
	return fmt.Sprintf("%s %s->%s", proto, c, v)
}
