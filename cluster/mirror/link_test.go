package mirror

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-lb/tandem/flow/standby"
)

func keyOf(t testing.TB, i int) standby.Key {
	r := testRecord(t, i)
	return r.Key()
}

// memSink is an in-memory Sink.
type memSink struct {
	mu      sync.Mutex
	flows   map[standby.Key]standby.Record
	gen     map[standby.Key]uint64
	cur     uint64
	synced  []uint64
	applied int
	onApply func(recs []standby.Record)
}

func newMemSink() *memSink {
	return &memSink{flows: map[standby.Key]standby.Record{}, gen: map[standby.Key]uint64{}}
}

func (m *memSink) BeginSync(owner string, gen uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cur = gen
}

func (m *memSink) EndSync(owner string, gen uint64) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for k, g := range m.gen {
		if g != gen {
			delete(m.flows, k)
			delete(m.gen, k)
			n++
		}
	}
	m.synced = append(m.synced, gen)
	return n
}

func (m *memSink) Upsert(owner string, recs []standby.Record) (int, error) {
	m.mu.Lock()
	for _, r := range recs {
		m.flows[r.Key()] = r
		m.gen[r.Key()] = m.cur
	}
	m.applied += len(recs)
	f := m.onApply
	m.mu.Unlock()
	if f != nil {
		f(recs)
	}
	return len(recs), nil
}

func (m *memSink) Delete(owner string, keys []standby.Key) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range keys {
		delete(m.flows, k)
		delete(m.gen, k)
	}
}

func (m *memSink) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.flows)
}

func (m *memSink) has(k standby.Key) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.flows[k]
	return ok
}

// memSource is an in-memory owner's flow table.
type memSource struct {
	mu    sync.Mutex
	flows map[int]standby.Entry
}

func newMemSource(from, to int) *memSource {
	s := &memSource{flows: map[int]standby.Entry{}}
	for i := from; i < to; i++ {
		s.flows[i] = testEntry(i)
	}
	return s
}

func (s *memSource) Snapshot(fn func(standby.Entry) bool) {
	s.mu.Lock()
	es := make([]standby.Entry, 0, len(s.flows))
	for _, e := range s.flows {
		es = append(es, e)
	}
	s.mu.Unlock()
	for _, e := range es {
		if !fn(e) {
			return
		}
	}
}

func (s *memSource) set(i int) {
	s.mu.Lock()
	s.flows[i] = testEntry(i)
	s.mu.Unlock()
}

func (s *memSource) del(i int) {
	s.mu.Lock()
	delete(s.flows, i)
	s.mu.Unlock()
}

// events collects link events.
type events struct {
	mu sync.Mutex
	ev []LinkEvent
}

func (e *events) add(ev LinkEvent) { e.mu.Lock(); e.ev = append(e.ev, ev); e.mu.Unlock() }

func (e *events) has(k LinkEventKind) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ev := range e.ev {
		if ev.Kind == k {
			return true
		}
	}
	return false
}

func eventually(t testing.TB, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

var testKey = []byte("0123456789abcdef0123456789abcdef")

// link is a receiver on loopback and a sender to it.
type link struct {
	recv   *Receiver
	send   *Sender
	sink   *memSink
	src    *memSource
	rev    *events
	sev    *events
	cancel context.CancelFunc
	done   sync.WaitGroup
}

func startReceiver(t testing.TB, cfg ReceiverConfig) (*Receiver, string) {
	t.Helper()
	r, err := NewReceiver(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return r, ln.Addr().String()
}

func startLink(t testing.TB, src *memSource, tweak func(*SenderConfig, *ReceiverConfig)) *link {
	t.Helper()
	l := &link{sink: newMemSink(), src: src, rev: &events{}, sev: &events{}}
	rc := ReceiverConfig{Self: "n2", Pair: 1, Partner: "n1", Auth: Auth{PSK: testKey}, Sink: l.sink, OnEvent: l.rev.add, Logger: quietLogger()}
	sc := SenderConfig{Self: "n1", Pair: 1, Partner: "n2", Auth: Auth{PSK: testKey}, Source: src, OnEvent: l.sev.add, Logger: quietLogger(), BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond}
	if tweak != nil {
		tweak(&sc, &rc)
	}
	var addr string
	l.recv, addr = startReceiver(t, rc)
	if sc.Addr == "" {
		sc.Addr = addr
	}
	s, err := NewSender(sc)
	if err != nil {
		t.Fatal(err)
	}
	l.send = s
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	l.done.Add(1)
	go func() { defer l.done.Done(); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); l.done.Wait() })
	return l
}

func TestConfigRefusesOpenChannel(t *testing.T) {
	base := SenderConfig{Self: "n1", Partner: "n2", Addr: "127.0.0.1:1", Source: newMemSource(0, 0)}
	for name, a := range map[string]Auth{
		"none":        {},
		"short key":   {PSK: []byte("short")},
		"both":        {PSK: testKey, TLS: &tls.Config{}},
		"tls no cert": {TLS: &tls.Config{}},
	} {
		c := base
		c.Auth = a
		if _, err := NewSender(c); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: NewSender err = %v", name, err)
		}
		if _, err := NewReceiver(ReceiverConfig{Self: "n2", Partner: "n1", Sink: newMemSink(), Auth: a}); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: NewReceiver err = %v", name, err)
		}
	}
}

func TestMirrorBulkThenIncrements(t *testing.T) {
	src := newMemSource(0, 5000)
	l := startLink(t, src, nil)
	eventually(t, "bulk sync", func() bool { return l.sink.len() == 5000 && l.rev.has(LinkEventSynced) })
	eventually(t, "sender sees the sync acked", func() bool { return l.sev.has(LinkEventSynced) })

	// Increments: new flows and closed ones.
	for i := 5000; i < 6000; i++ {
		src.set(i)
		l.send.Upsert(testEntry(i))
	}
	for i := range 100 {
		src.del(i)
		r := testRecord(t, i)
		l.send.Delete(r.Key())
	}
	eventually(t, "increments", func() bool { return l.sink.len() == 5900 })
	if l.sink.has(keyOf(t, 5)) || !l.sink.has(keyOf(t, 5999)) {
		t.Error("wrong flows after increments")
	}
	eventually(t, "sender counts what it sent", func() bool { return l.send.Status().Entries >= 6100 })
	st := l.send.Status()
	if !st.Authenticated || st.State != LinkStreaming || st.PeerVersion != Version || st.SyncGeneration != 1 || st.Entries < 6100 {
		t.Errorf("sender status %+v", st)
	}
	eventually(t, "lag measured", func() bool { return l.send.Status().Lag > 0 })
	eventually(t, "receiver counts what it applied", func() bool { return l.recv.Status().Entries >= 6100 })
	rs := l.recv.Status()
	if !rs.Authenticated || rs.Peer != "n1" || rs.State != LinkStreaming || rs.LastBulkSync.IsZero() {
		t.Errorf("receiver status %+v", rs)
	}
}

// A reconnection bulk-syncs again, and flows closed while the link was down
// leave the partner's store.
func TestMirrorResyncAfterReconnect(t *testing.T) {
	src := newMemSource(0, 1000)
	l := startLink(t, src, nil)
	eventually(t, "first sync", func() bool { return l.sink.len() == 1000 })
	// Break the connection from the receiver's side.
	l.recv.mu.Lock()
	l.recv.current.nc.Close()
	l.recv.mu.Unlock()
	// Meanwhile flows 0..99 close at the owner without a Delete reaching
	// the partner.
	for i := range 100 {
		src.del(i)
	}
	eventually(t, "second sync", func() bool {
		l.sink.mu.Lock()
		defer l.sink.mu.Unlock()
		return len(l.sink.synced) >= 2
	})
	eventually(t, "stale flows freed", func() bool { return l.sink.len() == 900 })
	if !l.rev.has(LinkEventClosed) || !l.sev.has(LinkEventClosed) {
		t.Error("closure not reported as an event on both sides")
	}
	if c := l.send.Status().Connections; c < 2 {
		t.Errorf("sender connections = %d", c)
	}
}

func TestMirrorRefreshHeals(t *testing.T) {
	src := newMemSource(0, 200)
	l := startLink(t, src, func(sc *SenderConfig, _ *ReceiverConfig) { sc.RefreshPeriod = 50 * time.Millisecond })
	eventually(t, "sync", func() bool { return l.sink.len() == 200 })
	// The store loses an entry (as ristretto may drop a write).
	k := keyOf(t, 7)
	l.sink.Delete("n1", []standby.Key{k})
	eventually(t, "refresh re-sends it", func() bool { return l.sink.has(k) })
}

func TestMirrorQueueOverflowResyncs(t *testing.T) {
	src := newMemSource(0, 10)
	l := startLink(t, src, func(sc *SenderConfig, _ *ReceiverConfig) {
		sc.QueueLimit = 64
		sc.BatchSize = 16
	})
	eventually(t, "sync", func() bool { return l.sink.len() == 10 })
	for i := 10; i < 500; i++ {
		src.set(i)
		l.send.Upsert(testEntry(i))
	}
	eventually(t, "overflow covered by a resync", func() bool { return l.sink.len() == 500 })
}

func TestHandshakeRefusals(t *testing.T) {
	cases := []struct {
		name  string
		tweak func(*SenderConfig, *ReceiverConfig)
		want  error
	}{
		{"wrong key", func(sc *SenderConfig, _ *ReceiverConfig) { sc.Auth.PSK = []byte("another key, 16+ bytes") }, ErrAuthFailed},
		{"wrong pair", func(sc *SenderConfig, _ *ReceiverConfig) { sc.Pair = 2 }, ErrNotPartner},
		{"not the partner", func(sc *SenderConfig, _ *ReceiverConfig) { sc.Self = "n9" }, ErrNotPartner},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := startLink(t, newMemSource(0, 10), c.tweak)
			eventually(t, "refusal", func() bool { return l.sev.has(LinkEventRefused) })
			st := l.send.Status()
			if st.State != LinkRefused || st.Authenticated || !strings.Contains(st.Reason, c.want.Error()) {
				t.Errorf("sender status %+v", st)
			}
			time.Sleep(50 * time.Millisecond)
			if n := l.sink.len(); n != 0 {
				t.Errorf("refused peer's %d flows applied", n)
			}
			if c.name == "wrong key" {
				rs := l.recv.Status()
				if rs.State != LinkRefused || !strings.Contains(rs.Reason, "proved no knowledge") {
					t.Errorf("receiver status %+v", rs)
				}
			}
		})
	}
}

// rawDial sends bytes to a receiver and returns what it answers.
func rawDial(t *testing.T, addr string, send []byte) []byte {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Write(send); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(nc)
	return b
}

func TestReceiverRefusesOtherVersion(t *testing.T) {
	sink := newMemSink()
	ev := &events{}
	r, addr := startReceiver(t, ReceiverConfig{Self: "n2", Pair: 1, Partner: "n1", Auth: Auth{PSK: testKey}, Sink: sink, OnEvent: ev.add, Logger: quietLogger()})
	h := Hello{Version: Version + 1, Auth: AuthPSK, Pair: 1, NodeID: "n1"}
	answer := rawDial(t, addr, AppendHello(nil, &h))
	typ, p, _, err := SplitFrame(answer)
	if err != nil || typ != FrameRefuse {
		t.Fatalf("answer %v, %v", typ, err)
	}
	ref, err := DecodeRefuse(p)
	if err != nil || ref.Code != RefuseVersion || ref.Version != Version || !strings.Contains(ref.Reason, "version 2") {
		t.Fatalf("refusal %+v, %v", ref, err)
	}
	st := r.Status()
	if st.State != LinkRefused || st.PeerVersion != Version+1 || !strings.Contains(st.Reason, "version mismatch") || st.Authenticated {
		t.Errorf("receiver status %+v", st)
	}
	if !ev.has(LinkEventRefused) {
		t.Error("no refused event")
	}
}

func TestSenderRefusesOtherVersion(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				br := bufio.NewReader(nc)
				if _, _, _, err := ReadFrame(br, nil); err != nil {
					return
				}
				h := Hello{Version: Version + 1, Auth: AuthPSK, Pair: 1, NodeID: "n2"}
				nc.Write(AppendHello(nil, &h))
				io.Copy(io.Discard, nc)
			}()
		}
	}()
	ev := &events{}
	s, err := NewSender(SenderConfig{Self: "n1", Pair: 1, Partner: "n2", Addr: ln.Addr().String(), Auth: Auth{PSK: testKey}, Source: newMemSource(0, 1), OnEvent: ev.add, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	eventually(t, "refusal", func() bool { return ev.has(LinkEventRefused) })
	st := s.Status()
	if st.State != LinkRefused || st.PeerVersion != Version+1 || !strings.Contains(st.Reason, "version mismatch") {
		t.Errorf("sender status %+v", st)
	}
}

func TestReceiverRefusesGarbage(t *testing.T) {
	big := append([]byte{0, 0, 0x10, 0, byte(FrameHello)}, Magic...)
	sink := newMemSink()
	r, addr := startReceiver(t, ReceiverConfig{Self: "n2", Pair: 1, Partner: "n1", Auth: Auth{PSK: testKey}, Sink: sink, Logger: quietLogger()})
	for _, g := range [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		{0, 0, 0, 5, 1, 'T', 'N', 'D', 'X'},
		bytes.Repeat([]byte{0xff}, 64),
		// A handshake frame beyond MaxHandshakeFrame is refused unread.
		append(big, make([]byte, 4096)...),
	} {
		if answer := rawDial(t, addr, g); len(answer) != 0 {
			t.Errorf("garbage %q answered with %q", g[:8], answer)
		}
	}
	if st := r.Status(); st.State != LinkIdle || sink.len() != 0 {
		t.Errorf("garbage changed the partner's status: %+v", st)
	}
}

// Frames carry tags after a PSK handshake: a replayed or altered frame
// fails.
func TestFrameTagsDetectTampering(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	p1 := handshakeParams{self: "n1", pair: 1, partner: "n2", auth: &Auth{PSK: testKey}, timeout: 2 * time.Second}
	p2 := handshakeParams{self: "n2", pair: 1, partner: "n1", auth: &Auth{PSK: testKey}, timeout: 2 * time.Second}
	type res struct {
		c   *conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := acceptHandshake(context.Background(), b, &p2); ch <- res{c, err} }()
	ca, err := dialHandshake(context.Background(), a, &p1)
	if err != nil {
		t.Fatal(err)
	}
	rb := <-ch
	if rb.err != nil {
		t.Fatal(rb.err)
	}
	cb := rb.c
	// Good frame, then a replayed one, then an altered one.
	frame := AppendBulkBegin(nil, 5)
	send := func() chan struct{} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			ca.writeFrame(bytes.Clone(frame))
			ca.flush()
		}()
		return done
	}
	sent := send()
	typ, p, err := cb.readFrame()
	<-sent
	if err != nil || typ != FrameBulkBegin {
		t.Fatalf("good frame: %v %v", typ, err)
	}
	if g, _ := DecodeBulkBegin(p); g != 5 {
		t.Fatalf("gen %d", g)
	}
	// Replay: same bytes under sequence 0 again.
	ca.sendSeq = 0
	sent = send()
	if _, _, err := cb.readFrame(); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("replayed frame: %v", err)
	}
	<-sent
	// Forged: a frame whose tag was not made with the key.
	raw := AppendBulkBegin(nil, 6)
	binary.BigEndian.PutUint32(raw, uint32(len(raw)-4+tagSize))
	raw = append(raw, make([]byte, tagSize)...)
	cb.br = bufio.NewReader(bytes.NewReader(raw))
	if _, _, err := cb.readFrame(); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("forged frame: %v", err)
	}
}

// TLS: mutual authentication under a cluster CA.

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tandem test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert, key, pool}
}

func (ca *testCA) tlsFor(t testing.TB, node string) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: node},
		DNSNames:     []string{node},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		RootCAs:      ca.pool,
		ClientCAs:    ca.pool,
	}
}

func TestMirrorOverMutualTLS(t *testing.T) {
	ca := newTestCA(t)
	l := startLink(t, newMemSource(0, 300), func(sc *SenderConfig, rc *ReceiverConfig) {
		sc.Auth = Auth{TLS: ca.tlsFor(t, "n1")}
		rc.Auth = Auth{TLS: ca.tlsFor(t, "n2")}
	})
	eventually(t, "sync over TLS", func() bool { return l.sink.len() == 300 })
	if st := l.recv.Status(); !st.Authenticated || st.Auth != AuthTLS {
		t.Errorf("receiver status %+v", st)
	}
}

func TestTLSRefusals(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	cases := map[string]func(sc *SenderConfig, rc *ReceiverConfig){
		// A certificate from another CA.
		"foreign CA": func(sc *SenderConfig, rc *ReceiverConfig) {
			sc.Auth = Auth{TLS: other.tlsFor(t, "n1")}
			sc.Auth.TLS.RootCAs = ca.pool
			rc.Auth = Auth{TLS: ca.tlsFor(t, "n2")}
		},
		// A valid certificate that names another node than the Hello.
		"wrong name": func(sc *SenderConfig, rc *ReceiverConfig) {
			sc.Auth = Auth{TLS: ca.tlsFor(t, "n7")}
			rc.Auth = Auth{TLS: ca.tlsFor(t, "n2")}
		},
		// TLS against a PSK receiver.
		"mode": func(sc *SenderConfig, rc *ReceiverConfig) {
			sc.Auth = Auth{TLS: ca.tlsFor(t, "n1")}
		},
	}
	for name, tweak := range cases {
		t.Run(name, func(t *testing.T) {
			l := startLink(t, newMemSource(0, 10), tweak)
			eventually(t, "refusal", func() bool {
				return l.send.Status().State == LinkRefused || l.send.Status().State == LinkDown && l.send.Status().Reason != ""
			})
			time.Sleep(50 * time.Millisecond)
			if l.sink.len() != 0 || l.recv.Status().Authenticated {
				t.Errorf("refused sender got state in: receiver %+v", l.recv.Status())
			}
		})
	}
}

// recordingHandler keeps slog records.
type recordingHandler struct {
	mu   sync.Mutex
	msgs []string
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler            { return h }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	h.mu.Lock()
	h.msgs = append(h.msgs, b.String())
	h.mu.Unlock()
	return nil
}

func (h *recordingHandler) has(sub string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.msgs {
		if strings.Contains(m, sub) {
			return true
		}
	}
	return false
}

func TestWrongKeyIsLogged(t *testing.T) {
	rh, sh := &recordingHandler{}, &recordingHandler{}
	l := startLink(t, newMemSource(0, 10), func(sc *SenderConfig, rc *ReceiverConfig) {
		sc.Auth.PSK = []byte("not the cluster's key at all")
		sc.Logger = slog.New(sh)
		rc.Logger = slog.New(rh)
	})
	eventually(t, "receiver logs the refusal", func() bool {
		return rh.has("mirroring peer refused") && rh.has("peer=n1") && rh.has("proved no knowledge of the key")
	})
	eventually(t, "sender logs the refusal", func() bool { return sh.has("mirroring peer refused") })
	if l.sink.len() != 0 {
		t.Error("state applied from a peer with the wrong key")
	}
}

// recordingInstaller is a fake data plane flow table.
type recordingInstaller struct{ flows map[standby.Key]standby.Entry }

func (r *recordingInstaller) InstallBatch(recs []standby.Record) error {
	for i := range recs {
		e, err := recs[i].Decode()
		if err != nil {
			return err
		}
		r.flows[recs[i].Key()] = e
	}
	return nil
}

// End to end on one host: the owner mirrors into the partner's standby
// store, some flows change and close, the owner dies, and the partner's
// takeover installs exactly the owner's live flows.
func TestMirrorThenTakeover(t *testing.T) {
	store, err := standby.New(standby.Config{FlowLimit: 100_000, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	src := newMemSource(0, 20_000)
	rev := &events{}
	_, addr := startReceiver(t, ReceiverConfig{Self: "n2", Pair: 1, Partner: "n1", Auth: Auth{PSK: testKey}, Sink: store, OnEvent: rev.add, Logger: quietLogger()})
	s, err := NewSender(SenderConfig{Self: "n1", Pair: 1, Partner: "n2", Addr: addr, Auth: Auth{PSK: testKey}, Source: src, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	eventually(t, "bulk sync", func() bool { return rev.has(LinkEventSynced) })
	for i := 20_000; i < 25_000; i++ {
		src.set(i)
		s.Upsert(testEntry(i))
	}
	for i := 0; i < 20_000; i += 4 {
		src.del(i)
		s.Delete(keyOf(t, i))
	}
	// The count alone is no sign: 20k were there before the increments.
	want := 25_000 - 5_000
	eventually(t, "increments applied", func() bool {
		if store.Owners()["n1"] != want {
			return false
		}
		if _, ok := store.Lookup(keyOf(t, 19_996)); ok {
			return false
		}
		_, ok := store.Lookup(keyOf(t, 24_999))
		return ok
	})
	// The owner dies.
	cancel()
	<-done
	eventually(t, "link closed", func() bool { return rev.has(LinkEventClosed) })
	inst := &recordingInstaller{flows: map[standby.Key]standby.Entry{}}
	n, err := store.Takeover("n1", inst)
	if err != nil || n != want {
		t.Fatalf("Takeover = %d, %v; want %d", n, err, want)
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	for _, e := range src.flows {
		k, _ := e.Key()
		if inst.flows[k] != e {
			t.Fatalf("flow %v installed as %+v, want %+v", k, inst.flows[k], e)
		}
	}
}
