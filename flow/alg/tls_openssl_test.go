package alg

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// recordingProxy forwards one connection at a time from its listener to
// target and keeps the bytes of each direction.
type recordingProxy struct {
	ln     net.Listener
	target string
}

// relay accepts one connection and returns what the client sent and what
// the server sent, once both sides have closed. It may run on any goroutine.
func (p *recordingProxy) relay() (fromClient, fromServer []byte, err error) {
	c, err := p.ln.Accept()
	if err != nil {
		return nil, nil, err
	}
	defer c.Close()
	s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	defer s.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	var cb, sb bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(io.MultiWriter(s, &cb), c)
		_ = s.(*net.TCPConn).CloseWrite()
	}()
	go func() {
		defer wg.Done()
		_, _ = io.Copy(io.MultiWriter(c, &sb), s)
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	wg.Wait()
	return cb.Bytes(), sb.Bytes(), nil
}

// TestOpenSSLSessionIDResumption is the case session-id persistence is
// about: OpenSSL's s_server assigns a TLS 1.2 session id, s_client saves
// the session and offers the id on its next connection, and the server
// resumes it. The id learned from the first ServerHello is the one the
// second ClientHello offers, and Resumed sees the resumption.
func TestOpenSSLSessionIDResumption(t *testing.T) {
	if testing.Short() {
		t.Skip("runs openssl: skipped under -short")
	}
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skipf("needs openssl (Debian package openssl): %v", err)
	}
	dir := t.TempDir()
	cert := selfSigned(t, "bridge.test")
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	// A free loopback port for s_server.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := exec.CommandContext(ctx, "openssl", "s_server", "-quiet", "-accept", "127.0.0.1:"+strconv.Itoa(port),
		"-cert", certFile, "-key", keyFile, "-tls1_2", "-no_ticket", "-naccept", "3")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = srv.Process.Kill()
		_ = srv.Wait()
	})
	target := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		// The proxy's first dial must find s_server listening.
		if c, err := net.DialTimeout("tcp", target, time.Second); err == nil {
			c.Close()
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("s_server did not listen")
		}
	}
	// s_server accepts three connections: the probe above and two clients.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := &recordingProxy{ln: ln, target: target}
	// connect runs s_client through the proxy and returns the hellos.
	connect := func(args ...string) (ClientHello, ServerHello) {
		t.Helper()
		type relayed struct {
			c, s []byte
			err  error
		}
		res := make(chan relayed, 1)
		go func() {
			c, s, err := p.relay()
			res <- relayed{c, s, err}
		}()
		args = append([]string{"s_client", "-connect", ln.Addr().String(), "-tls1_2", "-no_ticket",
			"-servername", "bridge.test"}, args...)
		cmd := exec.CommandContext(ctx, "openssl", args...)
		cmd.Stdin = bytes.NewReader(nil) // handshake, then EOF: s_client closes
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, out)
		}
		r := <-res
		if r.err != nil {
			t.Fatal(r.err)
		}
		ch, err := ParseClientHello(r.c)
		if err != nil {
			t.Fatal(err)
		}
		sh, err := ParseServerHello(r.s)
		if err != nil {
			t.Fatal(err)
		}
		return ch, sh
	}
	sess := filepath.Join(dir, "sess.pem")
	ch1, sh1 := connect("-sess_out", sess)
	if len(sh1.SessionID) != 32 || Resumed(ch1, sh1) || ch1.ServerName != "bridge.test" {
		t.Fatalf("first connection: client %+v server %+v", ch1, sh1)
	}
	ch2, sh2 := connect("-sess_in", sess)
	if !bytes.Equal(ch2.SessionID, sh1.SessionID) {
		t.Errorf("second hello offers session id %x, the server assigned %x", ch2.SessionID, sh1.SessionID)
	}
	if !Resumed(ch2, sh2) {
		t.Errorf("resumption not seen: client %+v server %+v", ch2, sh2)
	}
	t.Logf("s_server assigned session id %x; the next connection offered it and resumed", sh1.SessionID)
}
