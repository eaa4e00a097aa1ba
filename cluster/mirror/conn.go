package mirror

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"net"
	"slices"
	"time"
)

// Authentication.
//
// The channel is never open: a Config carries either a pre-shared key or a
// TLS configuration, and validate refuses neither.
//
// PSK: each side sends a 32-byte random nonce in its Hello. The dialer then
// proves it knows the key with HMAC-SHA256(key, "tandem-mirror client" ||
// transcript), the listener answers with HMAC-SHA256(key, "tandem-mirror
// server" || transcript), where the transcript is both Hellos' version, pair,
// nonces and node ids; proofs are compared in constant time. Distinct
// labels stop a proof from being reflected back. Both sides then derive one
// key per direction from the key and the transcript, and every later frame
// carries HMAC-SHA256(direction key, frame sequence number || frame) as a
// 32-byte tag, so a frame cannot be forged, altered, replayed or reordered
// without the connection being dropped. PSK mode authenticates; it does not
// encrypt (flow entries cross the backplane in clear). Use TLS where the
// backplane is not trusted for confidentiality.
//
// TLS: mutual TLS 1.3 under a cluster CA (the listener requires and verifies
// a client certificate); the peer's certificate must name its node id (a DNS
// SAN or the common name) and that id must be the one in its Hello. Frames
// carry no tag: TLS protects them.

// Sentinel errors of the handshake.
var (
	// ErrVersionMismatch means the peer speaks another protocol version.
	ErrVersionMismatch = errors.New("mirroring protocol version mismatch")
	// ErrAuthFailed means the peer could not prove it holds the key or a
	// certificate naming it.
	ErrAuthFailed = errors.New("mirroring peer authentication failed")
	// ErrNotPartner means the peer is not this node's partner (pair id or
	// node id differ from what this node expects).
	ErrNotPartner = errors.New("mirroring peer is not this node's partner")
	// ErrRefused means the peer refused this node; the error says why.
	ErrRefused = errors.New("refused by mirroring peer")
	// ErrInvalidConfig means a configuration failed validation.
	ErrInvalidConfig = errors.New("invalid mirroring config")
)

// Auth is how partners authenticate: exactly one of PSK and TLS.
type Auth struct {
	// PSK is the cluster's mirroring key, at least 16 random bytes.
	PSK []byte
	// TLS holds this node's certificate (Certificates), the cluster CA for
	// servers (RootCAs) and for clients (ClientCAs). The package forces TLS
	// 1.3, RequireAndVerifyClientCert on the listener, and as ServerName the
	// partner's node id on the dialer.
	TLS *tls.Config
}

func (a *Auth) validate() error {
	switch {
	case a.PSK != nil && a.TLS != nil:
		return fmt.Errorf("%w: set either a pre-shared key or TLS, not both", ErrInvalidConfig)
	case a.TLS != nil:
		if len(a.TLS.Certificates) == 0 && a.TLS.GetCertificate == nil && a.TLS.GetClientCertificate == nil {
			return fmt.Errorf("%w: TLS needs this node's certificate", ErrInvalidConfig)
		}
		return nil
	case len(a.PSK) >= 16:
		return nil
	case a.PSK != nil:
		return fmt.Errorf("%w: pre-shared key of %d bytes; use at least 16 random bytes", ErrInvalidConfig, len(a.PSK))
	}
	return fmt.Errorf("%w: no authentication; the mirroring channel is never open: set a pre-shared key or TLS", ErrInvalidConfig)
}

func (a *Auth) mode() AuthMode {
	if a.TLS != nil {
		return AuthTLS
	}
	return AuthPSK
}

// peerIdentity is what a handshake established about the peer.
type peerIdentity struct {
	hello         Hello
	authenticated bool
}

// conn is an established mirroring connection: framing, and per-frame tags
// after a PSK handshake. Reads and writes may run in two goroutines; each
// direction is single-goroutine.
type conn struct {
	nc   net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	rbuf []byte
	peer peerIdentity

	sendMAC, recvMAC hash.Hash // nil with TLS
	sendSeq, recvSeq uint64
	// Scratch space per direction: reads and writes run in two goroutines.
	sendTag, recvTag         [tagSize]byte
	sendScratch, recvScratch [12]byte
}

func newConn(nc net.Conn) *conn {
	return &conn{
		nc: nc,
		br: bufio.NewReaderSize(nc, 256<<10),
		bw: bufio.NewWriterSize(nc, 256<<10),
	}
}

// writeFrame buffers one frame built by the Append functions (it may
// modify its length field to make room for the tag).
func (c *conn) writeFrame(frame []byte) error {
	if c.sendMAC != nil {
		binary.BigEndian.PutUint32(frame, uint32(len(frame)-4+tagSize))
		c.sendMAC.Reset()
		binary.BigEndian.PutUint64(c.sendScratch[:], c.sendSeq)
		c.sendMAC.Write(c.sendScratch[:8])
		c.sendMAC.Write(frame)
		c.sendSeq++
		if _, err := c.bw.Write(frame); err != nil {
			return err
		}
		_, err := c.bw.Write(c.sendMAC.Sum(c.sendTag[:0]))
		return err
	}
	_, err := c.bw.Write(frame)
	return err
}

// readFrame reads and authenticates one frame; the payload aliases c.rbuf.
// Until the peer is authenticated frames are bounded by MaxHandshakeFrame.
func (c *conn) readFrame() (FrameType, []byte, error) {
	limit := uint32(MaxFrameSize)
	if !c.peer.authenticated {
		limit = MaxHandshakeFrame
	}
	t, body, raw, err := readFrame(c.br, c.rbuf, limit)
	c.rbuf = raw
	if err != nil {
		return 0, nil, err
	}
	if c.recvMAC == nil {
		return t, body, nil
	}
	if len(body) < tagSize {
		return 0, nil, fmt.Errorf("%w: %v frame without its tag", ErrAuthFailed, t)
	}
	c.recvMAC.Reset()
	binary.BigEndian.PutUint64(c.recvScratch[:], c.recvSeq)
	binary.BigEndian.PutUint32(c.recvScratch[8:], uint32(len(raw)))
	c.recvMAC.Write(c.recvScratch[:12])
	c.recvMAC.Write(raw[:len(raw)-tagSize])
	if !hmac.Equal(c.recvMAC.Sum(c.recvTag[:0]), raw[len(raw)-tagSize:]) {
		return 0, nil, fmt.Errorf("%w: bad tag on %v frame %d", ErrAuthFailed, t, c.recvSeq)
	}
	c.recvSeq++
	return t, body[:len(body)-tagSize], nil
}

func (c *conn) flush() error { return c.bw.Flush() }

// handshakeParams is one side's part of a handshake.
type handshakeParams struct {
	self    string
	pair    uint32
	partner string // expected peer node id; "" accepts any id of the pair
	auth    *Auth
	timeout time.Duration
}

// transcript is what proofs and session keys are computed over, in the
// dialer-then-listener order whichever side computes it.
func transcript(dialer, listener *Hello) []byte {
	var b []byte
	for _, h := range []*Hello{dialer, listener} {
		b = binary.BigEndian.AppendUint16(b, h.Version)
		b = binary.BigEndian.AppendUint32(b, h.Pair)
		b = append(b, h.Nonce[:]...)
		b = append(b, byte(len(h.NodeID)))
		b = append(b, h.NodeID...)
	}
	return b
}

func keyed(psk []byte, label string, t []byte) []byte {
	m := hmac.New(sha256.New, psk)
	m.Write([]byte(label))
	m.Write(t)
	return m.Sum(nil)
}

// refuse sends a Refuse frame, best effort, and returns err.
func (c *conn) refuse(code RefuseCode, err error) error {
	r := Refuse{Code: code, Version: Version, Reason: err.Error()}
	if c.writeFrame(AppendRefuse(nil, &r)) == nil {
		c.flush()
	}
	return err
}

// checkHello applies the rules both sides share to the peer's Hello.
func (p *handshakeParams) checkHello(h *Hello, err error) (RefuseCode, error) {
	if errors.Is(err, ErrBadMagic) {
		return RefuseProtocol, err
	}
	if h.Version != Version && h.Version != 0 {
		return RefuseVersion, fmt.Errorf("%w: peer %q speaks version %d, this node %d", ErrVersionMismatch, h.NodeID, h.Version, Version)
	}
	if err != nil {
		return RefuseProtocol, err
	}
	if h.Auth != p.auth.mode() {
		return RefuseAuth, fmt.Errorf("%w: peer %q uses %v, this node %v", ErrAuthFailed, h.NodeID, h.Auth, p.auth.mode())
	}
	if h.Pair != p.pair || (p.partner != "" && h.NodeID != p.partner) || h.NodeID == p.self {
		return RefusePair, fmt.Errorf("%w: peer %q of pair %d, this node %q expects %q of pair %d", ErrNotPartner, h.NodeID, h.Pair, p.self, p.partner, p.pair)
	}
	return 0, nil
}

func (p *handshakeParams) hello() (Hello, error) {
	h := Hello{Version: Version, Auth: p.auth.mode(), Pair: p.pair, NodeID: p.self}
	if _, err := rand.Read(h.Nonce[:]); err != nil {
		return h, fmt.Errorf("reading a nonce: %w", err)
	}
	return h, nil
}

// readRefuseOr reads the peer's next frame, turning a Refuse into an error.
func (c *conn) readExpect(want FrameType) ([]byte, error) {
	t, p, err := c.readFrame()
	if err != nil {
		return nil, err
	}
	switch t {
	case want:
		return p, nil
	case FrameRefuse:
		r, err := DecodeRefuse(p)
		if err != nil {
			return nil, err
		}
		if c.peer.hello.Version == 0 {
			c.peer.hello.Version = r.Version
		}
		base := ErrRefused
		switch r.Code {
		case RefuseVersion:
			base = ErrVersionMismatch
		case RefuseAuth:
			base = ErrAuthFailed
		case RefusePair:
			base = ErrNotPartner
		}
		return nil, fmt.Errorf("%w: %w (%v, peer version %d): %s", ErrRefused, base, r.Code, r.Version, r.Reason)
	}
	return nil, fmt.Errorf("%w: got a %v frame during the handshake, want %v", ErrMalformed, t, want)
}

// dial runs the dialer's side of the handshake on nc (already TLS-wrapped
// in TLS mode). On error the caller closes nc.
func dialHandshake(ctx context.Context, nc net.Conn, p *handshakeParams) (*conn, error) {
	deadline := time.Now().Add(p.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	nc.SetDeadline(deadline)
	defer nc.SetDeadline(time.Time{})
	if p.auth.TLS != nil {
		tc := nc.(*tls.Conn)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("%w: tls: %w", ErrAuthFailed, err)
		}
	}
	c := newConn(nc)
	mine, err := p.hello()
	if err != nil {
		return nil, err
	}
	if err := c.writeFrame(AppendHello(nil, &mine)); err != nil {
		return nil, err
	}
	if err := c.flush(); err != nil {
		return nil, err
	}
	payload, err := c.readExpect(FrameHello)
	if err != nil {
		return c, err
	}
	theirs, derr := DecodeHello(payload)
	c.peer.hello = theirs
	if code, err := p.checkHello(&theirs, derr); err != nil {
		return c, c.refuse(code, err)
	}
	if err := c.authenticate(p, &mine, &theirs, true); err != nil {
		return c, err
	}
	return c, nil
}

// acceptHandshake runs the listener's side on nc.
func acceptHandshake(ctx context.Context, nc net.Conn, p *handshakeParams) (*conn, error) {
	nc.SetDeadline(time.Now().Add(p.timeout))
	defer nc.SetDeadline(time.Time{})
	if p.auth.TLS != nil {
		tc := nc.(*tls.Conn)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("%w: tls: %w", ErrAuthFailed, err)
		}
	}
	c := newConn(nc)
	payload, err := c.readExpect(FrameHello)
	if err != nil {
		return c, err
	}
	theirs, derr := DecodeHello(payload)
	c.peer.hello = theirs
	if code, err := p.checkHello(&theirs, derr); err != nil {
		if errors.Is(err, ErrBadMagic) {
			return c, err // not a mirroring peer: no answer
		}
		return c, c.refuse(code, err)
	}
	mine, err := p.hello()
	if err != nil {
		return c, err
	}
	if err := c.writeFrame(AppendHello(nil, &mine)); err != nil {
		return c, err
	}
	if err := c.flush(); err != nil {
		return c, err
	}
	if err := c.authenticate(p, &theirs, &mine, false); err != nil {
		return c, err
	}
	return c, nil
}

// authenticate completes the handshake after both Hellos: proofs and frame
// keys for PSK, the certificate's name for TLS.
func (c *conn) authenticate(p *handshakeParams, dialer, listener *Hello, isDialer bool) error {
	peer := listener
	if !isDialer {
		peer = dialer
	}
	if p.auth.TLS != nil {
		st := c.nc.(*tls.Conn).ConnectionState()
		if len(st.PeerCertificates) == 0 || !certNames(st.PeerCertificates[0], peer.NodeID) {
			return c.refuse(RefuseAuth, fmt.Errorf("%w: peer certificate does not name node %q", ErrAuthFailed, peer.NodeID))
		}
		c.peer.authenticated = true
		return nil
	}
	t := transcript(dialer, listener)
	clientProof := keyed(p.auth.PSK, "tandem-mirror client", t)
	serverProof := keyed(p.auth.PSK, "tandem-mirror server", t)
	if isDialer {
		if err := c.writeFrame(AppendAuth(nil, clientProof)); err != nil {
			return err
		}
		if err := c.flush(); err != nil {
			return err
		}
		payload, err := c.readExpect(FrameAuth)
		if err != nil {
			return err
		}
		proof, err := DecodeAuth(payload)
		if err != nil {
			return err
		}
		if !hmac.Equal(proof, serverProof) {
			return c.refuse(RefuseAuth, fmt.Errorf("%w: peer %q proved no knowledge of the key", ErrAuthFailed, peer.NodeID))
		}
	} else {
		payload, err := c.readExpect(FrameAuth)
		if err != nil {
			return err
		}
		proof, err := DecodeAuth(payload)
		if err != nil {
			return c.refuse(RefuseProtocol, err)
		}
		if !hmac.Equal(proof, clientProof) {
			return c.refuse(RefuseAuth, fmt.Errorf("%w: peer %q proved no knowledge of the key", ErrAuthFailed, peer.NodeID))
		}
		if err := c.writeFrame(AppendAuth(nil, serverProof)); err != nil {
			return err
		}
		if err := c.flush(); err != nil {
			return err
		}
	}
	c2s := hmac.New(sha256.New, keyed(p.auth.PSK, "tandem-mirror dialer frames", t))
	s2c := hmac.New(sha256.New, keyed(p.auth.PSK, "tandem-mirror listener frames", t))
	if isDialer {
		c.sendMAC, c.recvMAC = c2s, s2c
	} else {
		c.sendMAC, c.recvMAC = s2c, c2s
	}
	c.peer.authenticated = true
	return nil
}

func certNames(cert *x509.Certificate, id string) bool {
	return cert.Subject.CommonName == id || slices.Contains(cert.DNSNames, id)
}

// clientTLS and serverTLS complete a node's TLS configuration for each role.
func clientTLS(base *tls.Config, partner string) *tls.Config {
	c := base.Clone()
	c.MinVersion = tls.VersionTLS13
	if c.ServerName == "" {
		c.ServerName = partner
	}
	return c
}

func serverTLS(base *tls.Config) *tls.Config {
	c := base.Clone()
	c.MinVersion = tls.VersionTLS13
	c.ClientAuth = tls.RequireAndVerifyClientCert
	return c
}
