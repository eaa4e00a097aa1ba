package alg

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"math/big"
	"net"
	"slices"
	"testing"
	"time"
)

// clientHelloBytes returns what a crypto/tls client with cfg writes first:
// its ClientHello records, read from the other end of a net.Pipe.
func clientHelloBytes(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	go tls.Client(c1, cfg).Handshake() //nolint:errcheck // fails when the pipe closes
	var got []byte
	buf := make([]byte, 4096)
	_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		n, err := c2.Read(buf)
		if err != nil {
			t.Fatalf("reading the client hello: %v (after %d bytes)", err, len(got))
		}
		got = append(got, buf[:n]...)
		if _, err := ParseClientHello(got); !errors.Is(err, ErrNeedMore) {
			return got
		}
	}
}

// selfSigned is a certificate for name, made for the test.
func selfSigned(t testing.TB, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestClientHelloTLS13(t *testing.T) {
	b := clientHelloBytes(t, &tls.Config{ServerName: "www.example.com", InsecureSkipVerify: true})
	h, err := ParseClientHello(b)
	if err != nil {
		t.Fatal(err)
	}
	if h.ServerName != "www.example.com" || h.Version != tls.VersionTLS12 || len(h.SessionID) != 32 ||
		!slices.Contains(h.SupportedVersions, tls.VersionTLS13) || h.Len != len(b) {
		t.Errorf("parsed %+v from %d bytes", h, len(b))
	}
	if h.OffersTicket() {
		t.Error("a first TLS 1.3 hello offers a ticket")
	}
	t.Logf("crypto/tls ClientHello: %d bytes, SNI %q, versions %x", len(b), h.ServerName, h.SupportedVersions)
}

func TestClientHelloTLS12NoSNI(t *testing.T) {
	b := clientHelloBytes(t, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12})
	h, err := ParseClientHello(b)
	if err != nil {
		t.Fatal(err)
	}
	if h.ServerName != "" || slices.Contains(h.SupportedVersions, tls.VersionTLS13) || h.Ticket || h.PSK || h.OffersTicket() {
		t.Errorf("parsed %+v", h)
	}
}

// TestClientHelloResumption completes a TLS 1.2 and a TLS 1.3 handshake with
// a crypto/tls server, then reads the hello of the resuming connection.
func TestClientHelloResumption(t *testing.T) {
	cert := selfSigned(t, "bridge.test")
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cache := tls.NewLRUClientSessionCache(4)
		cfg := &tls.Config{ServerName: "bridge.test", InsecureSkipVerify: true, ClientSessionCache: cache, MaxVersion: v}
		// Over loopback TCP rather than net.Pipe: the kernel's buffers keep
		// the two handshakes from waiting on each other's writes.
		ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: v})
		if err != nil {
			t.Fatal(err)
		}
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
		cli, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		_ = cli.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := cli.Read(make([]byte, 1)); err != nil {
			t.Fatalf("TLS %x: reading: %v", v, err)
		}
		if _, err := cli.Write([]byte("y")); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		cli.Close()
		ln.Close()

		h, err := ParseClientHello(clientHelloBytes(t, cfg))
		if err != nil {
			t.Fatal(err)
		}
		if !h.OffersTicket() || (v == tls.VersionTLS12 && !h.Ticket) || (v == tls.VersionTLS13 && !h.PSK) {
			t.Errorf("TLS %x resuming hello parsed as %+v", v, h)
		}
	}
}

// rerecord splits the handshake bytes of one-record hello b into records
// of at most size bytes.
func rerecord(b []byte, size int) []byte {
	msg := b[5:]
	var out []byte
	for len(msg) > 0 {
		n := min(size, len(msg))
		out = append(out, 22, 3, 1, byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

func TestClientHelloSplitAndTruncated(t *testing.T) {
	b := clientHelloBytes(t, &tls.Config{ServerName: "www.example.com", InsecureSkipVerify: true})
	if int(binary.BigEndian.Uint16(b[3:])) != len(b)-5 {
		t.Fatalf("crypto/tls wrote its hello in several records")
	}
	want, _ := ParseClientHello(b)
	for _, size := range []int{1, 3, 100, 512} {
		s := rerecord(b, size)
		h, err := ParseClientHello(s)
		if err != nil || h.ServerName != want.ServerName || !bytes.Equal(h.SessionID, want.SessionID) || h.Len != len(s) {
			t.Errorf("records of %d: %+v, %v", size, h, err)
		}
		for cut := range len(s) {
			if _, err := ParseClientHello(s[:cut]); !errors.Is(err, ErrNeedMore) {
				t.Fatalf("records of %d cut at %d: %v, want ErrNeedMore", size, cut, err)
			}
		}
	}
	// Application data after the hello's records is not the parser's.
	if h, err := ParseClientHello(append(slices.Clone(b), 23, 3, 3, 0, 1, 0)); err != nil || h.Len != len(b) {
		t.Errorf("trailing record: %+v, %v", h, err)
	}
}

func TestClientHelloRefusals(t *testing.T) {
	good := clientHelloBytes(t, &tls.Config{ServerName: "a.example", InsecureSkipVerify: true})
	mut := func(f func(b []byte) []byte) []byte { return f(slices.Clone(good)) }
	for _, c := range []struct {
		name string
		b    []byte
		err  error
	}{
		{"http", []byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), ErrNotTLS},
		{"one byte of http", []byte("G"), ErrNotTLS},
		{"ssl2", []byte{0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15}, ErrNotTLS},
		{"server hello", mut(func(b []byte) []byte { b[5] = 2; return b }), ErrNotClientHello},
		{"alert record", mut(func(b []byte) []byte { b[0] = 21; return b }), ErrNotTLS},
		{"record of 0 bytes", []byte{22, 3, 1, 0, 0}, ErrMalformedHello},
		{"oversized hello", []byte{22, 3, 1, 0, 4, 1, 0x01, 0, 0}, ErrMalformedHello},
		{"hello longer than its record", mut(func(b []byte) []byte { b[8]--; return b }), ErrMalformedHello},
		{"session id of 33", mut(func(b []byte) []byte { b[5+4+34] = 33; return b }), ErrMalformedHello},
	} {
		if _, err := ParseClientHello(c.b); !errors.Is(err, c.err) {
			t.Errorf("%s: %v, want %v", c.name, err, c.err)
		}
	}
}

func FuzzParseClientHello(f *testing.F) {
	b := clientHelloBytes(f, &tls.Config{ServerName: "www.example.com", InsecureSkipVerify: true})
	f.Add(b)
	f.Add(rerecord(b, 64))
	f.Add(clientHelloBytes(f, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}))
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseClientHello(b)
		if err != nil {
			if !errors.Is(err, ErrNeedMore) && !errors.Is(err, ErrNotTLS) &&
				!errors.Is(err, ErrNotClientHello) && !errors.Is(err, ErrMalformedHello) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if h.Len > len(b) || len(h.SessionID) > 32 {
			t.Fatalf("parsed %+v from %d bytes", h, len(b))
		}
		// The hello is a prefix property: what follows it does not matter.
		h2, err := ParseClientHello(append(slices.Clone(b[:h.Len]), 0xff))
		if err != nil || h2.ServerName != h.ServerName || !bytes.Equal(h2.SessionID, h.SessionID) {
			t.Fatalf("hello alone parses as %+v, %v; with the rest as %+v", h2, err, h)
		}
	})
}

func BenchmarkParseClientHello(b *testing.B) {
	hello := clientHelloBytes(b, &tls.Config{ServerName: "www.example.com", InsecureSkipVerify: true})
	b.SetBytes(int64(len(hello)))
	for b.Loop() {
		if _, err := ParseClientHello(hello); err != nil {
			b.Fatal(err)
		}
	}
}
