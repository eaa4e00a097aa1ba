// Package mirror is the mirroring channel between the two members of a
// pair: the owner of a pair's flows streams its STATEFUL flow entries to its
// partner, which keeps them in a standby store and installs them when the
// owner dies. It also holds the pair's takeover and rejoin logic as a pure
// state machine (PairMachine).
package mirror

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/tandem-lb/tandem/flow/standby"
)

// Wire format.
//
// One TCP connection per pair, opened by the owner (the sender). Every
// message is a frame:
//
//	length uint32   bytes that follow (type, payload, tag), 1..MaxFrameSize
//	type   uint8    FrameType
//	payload         per type, below; all integers big-endian
//	tag    [32]     HMAC-SHA256 of the frame, after a PSK handshake only
//
// The handshake is Hello from each side (the dialer first), then, with a
// pre-shared key, Auth from the dialer and Auth from the listener. Either
// side may send Refuse instead and close. Hello and Refuse keep their
// layout in every protocol version, so that peers of different versions can
// tell each other why they part.
//
// After the handshake the sender sends BulkBegin, Upserts frames with every
// flow it owns, BulkEnd; then Upserts and Deletes frames with changes, and
// periodically the whole set again as Upserts (the refresh). The receiver
// answers every data frame with Ack (coalesced while more input is
// buffered). Both sides send Heartbeat when idle and drop a connection silent
// for longer than the heartbeat timeout.

// Protocol constants.
const (
	// Magic opens every Hello.
	Magic = "TNDM"
	// Version is the mirroring protocol version this package speaks. A peer
	// with another version is refused: it gets no state.
	Version uint16 = 1
	// MaxFrameSize bounds a frame's length field (type, payload and tag).
	MaxFrameSize = 1 << 20
	// MaxBatch is the most records one Upserts frame carries.
	MaxBatch = (MaxFrameSize - 1 - batchHeader - tagSize) / standby.RecordSize
	// MaxNodeID bounds a node id's length in Hello.
	MaxNodeID = 64
	// MaxReason bounds a Refuse reason's length.
	MaxReason = 255
	// NonceSize is the size of a handshake nonce.
	NonceSize = 32

	tagSize     = 32
	batchHeader = 12 // seq uint64, count uint32
)

// FrameType is a frame's type byte.
type FrameType uint8

const (
	FrameHello FrameType = 1 + iota
	FrameAuth
	FrameRefuse
	FrameBulkBegin
	FrameBulkEnd
	FrameUpserts
	FrameDeletes
	FrameAck
	FrameHeartbeat
	frameMax
)

func (t FrameType) String() string {
	names := [...]string{"", "hello", "auth", "refuse", "bulk-begin", "bulk-end", "upserts", "deletes", "ack", "heartbeat"}
	if t > 0 && t < frameMax {
		return names[t]
	}
	return fmt.Sprintf("frame(%d)", uint8(t))
}

// Sentinel errors of the wire format.
var (
	// ErrFrameTooLarge means a length field exceeds MaxFrameSize.
	ErrFrameTooLarge = errors.New("mirror frame too large")
	// ErrMalformed means a frame's payload does not parse.
	ErrMalformed = errors.New("malformed mirror frame")
	// ErrBadMagic means a Hello did not start with Magic: not a mirroring
	// peer.
	ErrBadMagic = errors.New("not a mirroring peer (bad magic)")
)

// AuthMode is how a peer authenticates.
type AuthMode uint8

const (
	// AuthPSK is an HMAC-SHA256 challenge-response over a pre-shared key,
	// then an HMAC tag on every frame.
	AuthPSK AuthMode = 1
	// AuthTLS is mutual TLS 1.3 with a cluster CA.
	AuthTLS AuthMode = 2
)

func (m AuthMode) String() string {
	switch m {
	case AuthPSK:
		return "psk"
	case AuthTLS:
		return "tls"
	}
	return fmt.Sprintf("auth(%d)", uint8(m))
}

// Hello opens the handshake.
type Hello struct {
	Version uint16
	Auth    AuthMode
	Pair    uint32
	Nonce   [NonceSize]byte
	NodeID  string
}

// RefuseCode says why a peer was refused.
type RefuseCode uint8

const (
	RefuseVersion RefuseCode = 1 + iota
	RefuseAuth
	RefusePair
	RefuseProtocol
	RefuseBusy
)

func (c RefuseCode) String() string {
	switch c {
	case RefuseVersion:
		return "version mismatch"
	case RefuseAuth:
		return "authentication failed"
	case RefusePair:
		return "not my partner"
	case RefuseProtocol:
		return "protocol error"
	case RefuseBusy:
		return "replaced by a newer connection"
	}
	return fmt.Sprintf("refuse(%d)", uint8(c))
}

// Refuse ends a connection with a reason.
type Refuse struct {
	Code    RefuseCode
	Version uint16 // the refusing side's protocol version
	Reason  string
}

// Ack reports what the receiver applied.
type Ack struct {
	// Seq is the sequence number of the last data frame applied.
	Seq uint64
	// Applied counts records applied on this connection.
	Applied uint64
	// Synced is the last bulk-sync generation completed (0: none yet).
	Synced uint64
}

// AppendFrame appends a frame of type t with payload to dst. The length
// field leaves room for a tag when tagged is set; the caller appends it.
func AppendFrame(dst []byte, t FrameType, payload []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(1+len(payload)))
	dst = append(dst, byte(t))
	return append(dst, payload...)
}

// beginFrame appends a frame header with a placeholder length; finishFrame
// fills it in. Together they build a frame in place without copying.
func beginFrame(dst []byte, t FrameType) ([]byte, int) {
	start := len(dst)
	return append(dst, 0, 0, 0, 0, byte(t)), start
}

func finishFrame(dst []byte, start int) []byte {
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst
}

// ReadFrame reads one frame from r into buf (grown as needed, never beyond
// MaxFrameSize) and returns its type and body (payload and any tag), which
// alias buf.
func ReadFrame(r *bufio.Reader, buf []byte) (FrameType, []byte, []byte, error) {
	return readFrame(r, buf, MaxFrameSize)
}

// MaxHandshakeFrame bounds frames before authentication, so that a stranger
// cannot make a node allocate more than a few kilobytes.
const MaxHandshakeFrame = 1024

func readFrame(r *bufio.Reader, buf []byte, max uint32) (FrameType, []byte, []byte, error) {
	// Peek, not a local array, which would escape through io.ReadFull.
	hdr, err := r.Peek(4)
	if err != nil {
		if errors.Is(err, io.EOF) && len(hdr) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, buf, err
	}
	n := binary.BigEndian.Uint32(hdr)
	r.Discard(4)
	if n == 0 || n > max {
		return 0, nil, buf, fmt.Errorf("%w: length %d (at most %d)", ErrFrameTooLarge, n, max)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, buf, err
	}
	return FrameType(buf[0]), buf[1:], buf, nil
}

// SplitFrame parses one frame from the start of b: its type, body and the
// rest of b.
func SplitFrame(b []byte) (FrameType, []byte, []byte, error) {
	if len(b) < 4 {
		return 0, nil, nil, fmt.Errorf("%w: %d bytes, no length", ErrMalformed, len(b))
	}
	n := binary.BigEndian.Uint32(b)
	if n == 0 || n > MaxFrameSize {
		return 0, nil, nil, fmt.Errorf("%w: length %d (at most %d)", ErrFrameTooLarge, n, MaxFrameSize)
	}
	if uint64(len(b)-4) < uint64(n) {
		return 0, nil, nil, fmt.Errorf("%w: length %d, %d bytes left", ErrMalformed, n, len(b)-4)
	}
	return FrameType(b[4]), b[5 : 4+n], b[4+n:], nil
}

// AppendHello appends h's frame to dst.
func AppendHello(dst []byte, h *Hello) []byte {
	dst, start := beginFrame(dst, FrameHello)
	dst = append(dst, Magic...)
	dst = binary.BigEndian.AppendUint16(dst, h.Version)
	dst = append(dst, byte(h.Auth))
	dst = binary.BigEndian.AppendUint32(dst, h.Pair)
	dst = append(dst, h.Nonce[:]...)
	id := h.NodeID
	if len(id) > MaxNodeID {
		id = id[:MaxNodeID]
	}
	dst = append(dst, byte(len(id)))
	dst = append(dst, id...)
	return finishFrame(dst, start)
}

// DecodeHello parses a Hello payload. A payload with the right magic but
// another version decodes as far as its version (Version set, error nil
// only if the rest parses too): the caller refuses it by version first.
func DecodeHello(p []byte) (Hello, error) {
	var h Hello
	if len(p) < 4 || string(p[:4]) != Magic {
		return h, ErrBadMagic
	}
	if len(p) < 6 {
		return h, fmt.Errorf("%w: hello of %d bytes", ErrMalformed, len(p))
	}
	h.Version = binary.BigEndian.Uint16(p[4:])
	const fixed = 4 + 2 + 1 + 4 + NonceSize + 1
	if len(p) < fixed {
		return h, fmt.Errorf("%w: hello of %d bytes", ErrMalformed, len(p))
	}
	h.Auth = AuthMode(p[6])
	h.Pair = binary.BigEndian.Uint32(p[7:])
	copy(h.Nonce[:], p[11:11+NonceSize])
	idLen := int(p[fixed-1])
	if idLen == 0 || idLen > MaxNodeID || len(p) != fixed+idLen {
		return h, fmt.Errorf("%w: hello node id of %d bytes in %d", ErrMalformed, idLen, len(p)-fixed)
	}
	h.NodeID = string(p[fixed:])
	if h.Auth != AuthPSK && h.Auth != AuthTLS {
		return h, fmt.Errorf("%w: auth mode %d", ErrMalformed, p[6])
	}
	return h, nil
}

// AppendRefuse appends r's frame to dst.
func AppendRefuse(dst []byte, r *Refuse) []byte {
	dst, start := beginFrame(dst, FrameRefuse)
	dst = append(dst, byte(r.Code))
	dst = binary.BigEndian.AppendUint16(dst, r.Version)
	reason := r.Reason
	if len(reason) > MaxReason {
		reason = reason[:MaxReason]
	}
	dst = append(dst, byte(len(reason)))
	dst = append(dst, reason...)
	return finishFrame(dst, start)
}

// DecodeRefuse parses a Refuse payload.
func DecodeRefuse(p []byte) (Refuse, error) {
	if len(p) < 4 || len(p) != 4+int(p[3]) {
		return Refuse{}, fmt.Errorf("%w: refuse of %d bytes", ErrMalformed, len(p))
	}
	return Refuse{Code: RefuseCode(p[0]), Version: binary.BigEndian.Uint16(p[1:]), Reason: string(p[4:])}, nil
}

// appendU64s appends a frame whose payload is the given integers.
func appendU64s(dst []byte, t FrameType, vs ...uint64) []byte {
	dst, start := beginFrame(dst, t)
	for _, v := range vs {
		dst = binary.BigEndian.AppendUint64(dst, v)
	}
	return finishFrame(dst, start)
}

func decodeU64s(t FrameType, p []byte, vs ...*uint64) error {
	if len(p) != 8*len(vs) {
		return fmt.Errorf("%w: %v of %d bytes, want %d", ErrMalformed, t, len(p), 8*len(vs))
	}
	for i, v := range vs {
		*v = binary.BigEndian.Uint64(p[8*i:])
	}
	return nil
}

// AppendBulkBegin appends the start of bulk sync generation gen.
func AppendBulkBegin(dst []byte, gen uint64) []byte { return appendU64s(dst, FrameBulkBegin, gen) }

// DecodeBulkBegin parses a BulkBegin payload.
func DecodeBulkBegin(p []byte) (gen uint64, err error) {
	err = decodeU64s(FrameBulkBegin, p, &gen)
	return gen, err
}

// AppendBulkEnd appends the end of bulk sync gen, after count records.
func AppendBulkEnd(dst []byte, gen, count uint64) []byte {
	return appendU64s(dst, FrameBulkEnd, gen, count)
}

// DecodeBulkEnd parses a BulkEnd payload.
func DecodeBulkEnd(p []byte) (gen, count uint64, err error) {
	err = decodeU64s(FrameBulkEnd, p, &gen, &count)
	return gen, count, err
}

// AppendAck appends a.
func AppendAck(dst []byte, a Ack) []byte {
	return appendU64s(dst, FrameAck, a.Seq, a.Applied, a.Synced)
}

// DecodeAck parses an Ack payload.
func DecodeAck(p []byte) (Ack, error) {
	var a Ack
	err := decodeU64s(FrameAck, p, &a.Seq, &a.Applied, &a.Synced)
	return a, err
}

// AppendHeartbeat appends a heartbeat carrying the sender's clock (Unix
// nanoseconds, for logs only).
func AppendHeartbeat(dst []byte, unixNano int64) []byte {
	return appendU64s(dst, FrameHeartbeat, uint64(unixNano))
}

// DecodeHeartbeat parses a Heartbeat payload.
func DecodeHeartbeat(p []byte) (int64, error) {
	var v uint64
	err := decodeU64s(FrameHeartbeat, p, &v)
	return int64(v), err
}

// AppendAuth appends an Auth frame with an HMAC proof.
func AppendAuth(dst []byte, proof []byte) []byte { return AppendFrame(dst, FrameAuth, proof) }

// DecodeAuth parses an Auth payload.
func DecodeAuth(p []byte) ([]byte, error) {
	if len(p) != tagSize {
		return nil, fmt.Errorf("%w: auth of %d bytes, want %d", ErrMalformed, len(p), tagSize)
	}
	return p, nil
}

// BatchWriter builds one Upserts or Deletes frame in place: Begin, then Add
// records or keys, then Finish. It appends into a caller's buffer and does
// not allocate once that buffer has grown.
type BatchWriter struct {
	start, countAt int
	n              uint32
}

// Begin starts a batch frame of type t (FrameUpserts or FrameDeletes) with
// sequence number seq.
func (w *BatchWriter) Begin(dst []byte, t FrameType, seq uint64) []byte {
	dst, w.start = beginFrame(dst, t)
	dst = binary.BigEndian.AppendUint64(dst, seq)
	w.countAt = len(dst)
	w.n = 0
	return append(dst, 0, 0, 0, 0)
}

// AddRecord appends an upsert.
func (w *BatchWriter) AddRecord(dst []byte, r *standby.Record) []byte {
	w.n++
	return append(dst, r[:]...)
}

// AddKey appends a delete.
func (w *BatchWriter) AddKey(dst []byte, k *standby.Key) []byte {
	w.n++
	return append(dst, k[:]...)
}

// Len is how many records or keys the batch holds.
func (w *BatchWriter) Len() int { return int(w.n) }

// Finish completes the frame.
func (w *BatchWriter) Finish(dst []byte) []byte {
	binary.BigEndian.PutUint32(dst[w.countAt:], w.n)
	return finishFrame(dst, w.start)
}

func decodeBatchHeader(t FrameType, p []byte, size int) (seq uint64, body []byte, n int, err error) {
	if len(p) < batchHeader {
		return 0, nil, 0, fmt.Errorf("%w: %v of %d bytes", ErrMalformed, t, len(p))
	}
	seq = binary.BigEndian.Uint64(p)
	count := binary.BigEndian.Uint32(p[8:])
	body = p[batchHeader:]
	if uint64(count)*uint64(size) != uint64(len(body)) || count > MaxBatch {
		return 0, nil, 0, fmt.Errorf("%w: %v says %d entries, carries %d bytes", ErrMalformed, t, count, len(body))
	}
	return seq, body, int(count), nil
}

// DecodeUpserts parses an Upserts payload, validating every record, into
// recs (reused; returned resliced).
func DecodeUpserts(p []byte, recs []standby.Record) (uint64, []standby.Record, error) {
	seq, body, n, err := decodeBatchHeader(FrameUpserts, p, standby.RecordSize)
	if err != nil {
		return 0, recs[:0], err
	}
	recs = recs[:0]
	for i := range n {
		recs = append(recs, standby.Record(body[i*standby.RecordSize:]))
		if err := recs[i].Validate(); err != nil {
			return 0, recs[:0], fmt.Errorf("%w: record %d: %w", ErrMalformed, i, err)
		}
	}
	return seq, recs, nil
}

// DecodeDeletes parses a Deletes payload into keys (reused).
func DecodeDeletes(p []byte, keys []standby.Key) (uint64, []standby.Key, error) {
	seq, body, n, err := decodeBatchHeader(FrameDeletes, p, standby.KeySize)
	if err != nil {
		return 0, keys[:0], err
	}
	keys = keys[:0]
	for i := range n {
		keys = append(keys, standby.Key(body[i*standby.KeySize:]))
		if err := keys[i].Validate(); err != nil {
			return 0, keys[:0], fmt.Errorf("%w: key %d: %w", ErrMalformed, i, err)
		}
	}
	return seq, keys, nil
}
