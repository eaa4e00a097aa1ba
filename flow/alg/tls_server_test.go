package alg

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"
)

// teeConn records what a connection reads and writes.
type teeConn struct {
	net.Conn
	r, w bytes.Buffer
}

func (c *teeConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.r.Write(b[:n])
	return n, err
}

func (c *teeConn) Write(b []byte) (int, error) {
	c.w.Write(b)
	return c.Conn.Write(b)
}

// handshake runs a crypto/tls client against a crypto/tls server over
// loopback TCP and returns the bytes the client wrote and read.
func handshake(t testing.TB, cli *tls.Config, srv *tls.Config) (sent, received []byte) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, err = c.Write([]byte("x")) // handshakes; TLS 1.3 tickets go before the byte
			if err == nil {
				_, err = c.Read(make([]byte, 1))
			}
			c.Close()
		}
		done <- err
	}()
	raw, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	tee := &teeConn{Conn: raw}
	c := tls.Client(tee, cli)
	defer c.Close()
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatalf("client: %v", err)
	}
	if _, err := c.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("server: %v", err)
	}
	return tee.w.Bytes(), tee.r.Bytes()
}

func TestServerHelloResumption(t *testing.T) {
	cert := selfSigned(t, "bridge.test")
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cli := &tls.Config{ServerName: "bridge.test", InsecureSkipVerify: true,
			ClientSessionCache: tls.NewLRUClientSessionCache(4), MaxVersion: v}
		srv := &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: v}
		for i, wantResumed := range []bool{false, true} {
			sent, received := handshake(t, cli, srv)
			ch, err := ParseClientHello(sent)
			if err != nil {
				t.Fatal(err)
			}
			sh, err := ParseServerHello(received)
			if err != nil {
				t.Fatal(err)
			}
			if sh.Version != v || sh.HelloRetry || sh.Len > len(received) {
				t.Errorf("TLS %x connection %d: server hello %+v", v, i, sh)
			}
			if got := Resumed(ch, sh); got != wantResumed {
				t.Errorf("TLS %x connection %d: resumed %v, want %v", v, i, got, wantResumed)
			}
		}
	}
}

func TestServerHelloRetry(t *testing.T) {
	cert := selfSigned(t, "bridge.test")
	// The client's key share is X25519 (with ML-KEM); a server that only
	// takes P-256 asks again.
	srv := &tls.Config{Certificates: []tls.Certificate{cert}, CurvePreferences: []tls.CurveID{tls.CurveP256}}
	_, received := handshake(t, &tls.Config{InsecureSkipVerify: true}, srv)
	sh, err := ParseServerHello(received)
	if err != nil {
		t.Fatal(err)
	}
	if !sh.HelloRetry || sh.Version != tls.VersionTLS13 {
		t.Errorf("server hello %+v, want a TLS 1.3 HelloRetryRequest", sh)
	}
}

func TestServerHelloRefusals(t *testing.T) {
	cert := selfSigned(t, "bridge.test")
	sent, received := handshake(t, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12},
		&tls.Config{Certificates: []tls.Certificate{cert}})
	if _, err := ParseServerHello(sent); !errors.Is(err, ErrNotServerHello) {
		t.Errorf("a client hello: %v", err)
	}
	if _, err := ParseClientHello(received); !errors.Is(err, ErrNotClientHello) {
		t.Errorf("a server hello read as a client's: %v", err)
	}
	sh, err := ParseServerHello(received)
	if err != nil {
		t.Fatal(err)
	}
	// Every prefix that stops before the hello does asks for more.
	for cut := 0; cut < 5+4+38; cut++ {
		if _, err := ParseServerHello(received[:cut]); !errors.Is(err, ErrNeedMore) {
			t.Fatalf("cut at %d: %v", cut, err)
		}
	}
	// crypto/tls servers keep no session cache: a TLS 1.2 session they
	// start has no id (they resume by ticket only), so a session-id table
	// learns nothing from them; OpenSSL-based servers assign 32 bytes.
	if len(sh.SessionID) != 0 || sh.Version != tls.VersionTLS12 {
		t.Errorf("TLS 1.2 server hello %+v", sh)
	}
}

func FuzzParseServerHello(f *testing.F) {
	cert := selfSigned(f, "bridge.test")
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		_, received := handshake(f, &tls.Config{InsecureSkipVerify: true, MaxVersion: v},
			&tls.Config{Certificates: []tls.Certificate{cert}})
		f.Add(received)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseServerHello(b)
		if err != nil {
			if !errors.Is(err, ErrNeedMore) && !errors.Is(err, ErrNotTLS) &&
				!errors.Is(err, ErrNotServerHello) && !errors.Is(err, ErrMalformedHello) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if h.Len > len(b) || len(h.SessionID) > 32 {
			t.Fatalf("parsed %+v from %d bytes", h, len(b))
		}
		if h2, err := ParseServerHello(b[:h.Len]); err != nil || !bytes.Equal(h2.SessionID, h.SessionID) || h2.Version != h.Version {
			t.Fatalf("the hello's own bytes parse as %+v, %v; with the rest as %+v", h2, err, h)
		}
	})
}
