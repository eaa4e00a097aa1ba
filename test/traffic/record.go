// Package traffic is the lab's traffic checker and the backend server it
// talks to.
//
// Both sides speak one small record protocol over TCP streams and UDP
// datagrams. Every record carries a flow id, a sequence number, the name of
// the backend and the client address it saw the flow come from (in hellos
// and replies) and a payload, and ends with a CRC-32C over all of it. The client sends pseudo-random payloads derived from a per-flow
// seed; the backend checks each request's CRC and echoes the payload in a
// reply that names itself. The client regenerates what it sent and compares
// the echo byte for byte, so corruption in either direction is caught, and
// the name in every reply shows which backend served the flow — it must
// never change mid-flow.
package traffic

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
)

var (
	// ErrShort is returned by ParseRecord when b holds only part of a
	// record: read more and try again.
	ErrShort = errors.New("short record")
	// ErrMalformed is returned for bytes that cannot be a record (bad
	// magic, version, kind or lengths).
	ErrMalformed = errors.New("malformed record")
	// ErrCorrupt is returned when a record's CRC does not match its bytes.
	ErrCorrupt = errors.New("corrupt record")
)

// Kind says what a record is.
type Kind uint8

const (
	// KindHello is the first record a backend sends on a TCP connection;
	// it names the backend.
	KindHello Kind = 1
	// KindRequest is a client's record.
	KindRequest Kind = 2
	// KindReply is a backend's echo of a request.
	KindReply Kind = 3
	// KindCorrupt is a backend's answer to a request whose CRC did not
	// match: the client counts the flow as corrupt.
	KindCorrupt Kind = 4
)

func (k Kind) String() string {
	switch k {
	case KindHello:
		return "hello"
	case KindRequest:
		return "request"
	case KindReply:
		return "reply"
	case KindCorrupt:
		return "corrupt"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

const (
	recordVersion = 2
	// MaxName is the longest backend name a record carries.
	MaxName = 64
	// MaxPeer is the longest peer address a record carries.
	MaxPeer = 64
	// MaxPayload is the largest payload a record carries; it keeps a UDP
	// record inside one 1500-byte frame over IPv6.
	MaxPayload = 1400
	// headerLen is magic(2) version(1) kind(1) flow(4) seq(4) nameLen(1);
	// the name follows, then peerLen(1), the peer, payloadLen(2), the
	// payload and the CRC(4).
	headerLen = 13
	// MinRecordLen is the size of a record with no name, peer or payload.
	MinRecordLen = headerLen + 1 + 2 + 4
	// MaxRecordLen is the size of the largest record.
	MaxRecordLen = MinRecordLen + MaxName + MaxPeer + MaxPayload
)

var (
	magic      = [2]byte{'T', 'L'}
	crcTable   = crc32.MakeTable(crc32.Castagnoli)
	errKind    = fmt.Errorf("unknown kind: %w", ErrMalformed)
	errMagic   = fmt.Errorf("bad magic: %w", ErrMalformed)
	errVersion = fmt.Errorf("unsupported version: %w", ErrMalformed)
)

// Record is one message of the protocol.
type Record struct {
	Kind Kind
	// Flow is the client's flow id; a backend copies it into its reply.
	Flow uint32
	// Seq numbers a flow's requests from 1; a reply carries the request's.
	Seq uint32
	// Name is the backend's name (hello, reply, corrupt); empty in requests.
	Name string
	// Peer is the client address and port the backend saw the flow come
	// from (hello, reply): with USIP it is the client's own. Empty in
	// requests.
	Peer string
	// Payload is at most MaxPayload bytes.
	Payload []byte
}

// AppendRecord appends r's wire form to dst. It fails if r's name or
// payload is too long or its kind unknown.
func AppendRecord(dst []byte, r Record) ([]byte, error) {
	if r.Kind < KindHello || r.Kind > KindCorrupt {
		return dst, errKind
	}
	if len(r.Name) > MaxName {
		return dst, fmt.Errorf("name of %d bytes, at most %d: %w", len(r.Name), MaxName, ErrMalformed)
	}
	if len(r.Peer) > MaxPeer {
		return dst, fmt.Errorf("peer of %d bytes, at most %d: %w", len(r.Peer), MaxPeer, ErrMalformed)
	}
	if len(r.Payload) > MaxPayload {
		return dst, fmt.Errorf("payload of %d bytes, at most %d: %w", len(r.Payload), MaxPayload, ErrMalformed)
	}
	start := len(dst)
	dst = append(dst, magic[0], magic[1], recordVersion, byte(r.Kind))
	dst = binary.BigEndian.AppendUint32(dst, r.Flow)
	dst = binary.BigEndian.AppendUint32(dst, r.Seq)
	dst = append(dst, byte(len(r.Name)))
	dst = append(dst, r.Name...)
	dst = append(dst, byte(len(r.Peer)))
	dst = append(dst, r.Peer...)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(r.Payload)))
	dst = append(dst, r.Payload...)
	dst = binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], crcTable))
	return dst, nil
}

// RecordLen reports how long the record starting at b is, from its first
// bytes. It returns ErrShort when b is too short to tell and ErrMalformed
// when the header is impossible.
func RecordLen(b []byte) (int, error) {
	if len(b) < headerLen {
		return 0, ErrShort
	}
	if b[0] != magic[0] || b[1] != magic[1] {
		return 0, errMagic
	}
	if b[2] != recordVersion {
		return 0, errVersion
	}
	if k := Kind(b[3]); k < KindHello || k > KindCorrupt {
		return 0, errKind
	}
	nameLen := int(b[12])
	if nameLen > MaxName {
		return 0, fmt.Errorf("name of %d bytes: %w", nameLen, ErrMalformed)
	}
	if len(b) < headerLen+nameLen+1 {
		return 0, ErrShort
	}
	peerLen := int(b[headerLen+nameLen])
	if peerLen > MaxPeer {
		return 0, fmt.Errorf("peer of %d bytes: %w", peerLen, ErrMalformed)
	}
	if len(b) < headerLen+nameLen+1+peerLen+2 {
		return 0, ErrShort
	}
	payLen := int(binary.BigEndian.Uint16(b[headerLen+nameLen+1+peerLen:]))
	if payLen > MaxPayload {
		return 0, fmt.Errorf("payload of %d bytes: %w", payLen, ErrMalformed)
	}
	return MinRecordLen + nameLen + peerLen + payLen, nil
}

// ParseRecord parses the record at the start of b and returns it with the
// number of bytes it took. The record's Name and Payload alias b.
func ParseRecord(b []byte) (Record, int, error) {
	n, err := RecordLen(b)
	if err != nil {
		return Record{}, 0, err
	}
	if len(b) < n {
		return Record{}, 0, ErrShort
	}
	if got, want := crc32.Checksum(b[:n-4], crcTable), binary.BigEndian.Uint32(b[n-4:]); got != want {
		return Record{}, 0, fmt.Errorf("crc %08x, record says %08x: %w", got, want, ErrCorrupt)
	}
	nameLen := int(b[12])
	peerAt := headerLen + nameLen + 1
	peerLen := int(b[peerAt-1])
	r := Record{
		Kind: Kind(b[3]),
		Flow: binary.BigEndian.Uint32(b[4:]),
		Seq:  binary.BigEndian.Uint32(b[8:]),
		Name: string(b[headerLen : headerLen+nameLen]),
		Peer: string(b[peerAt : peerAt+peerLen]),
	}
	r.Payload = b[peerAt+peerLen+2 : n-4]
	return r, n, nil
}

// FillPayload fills p with the pseudo-random bytes of (seed, flow, seq), so
// that the client can regenerate what it sent instead of keeping it.
func FillPayload(p []byte, seed uint64, flow, seq uint32) {
	rng := rand.NewPCG(seed, uint64(flow)<<32|uint64(seq))
	for i := 0; i < len(p); i += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], rng.Uint64())
		copy(p[i:], w[:])
	}
}

// PayloadLen is the payload length of (seed, flow, seq) for payloads of at
// most max bytes: between 1 and max, varying per request so that records
// straddle segment boundaries differently.
func PayloadLen(seed uint64, flow, seq uint32, max int) int {
	if max <= 1 {
		return 1
	}
	rng := rand.NewPCG(seed^0x9e3779b97f4a7c15, uint64(flow)<<32|uint64(seq))
	return 1 + int(rng.Uint64()%uint64(max))
}
