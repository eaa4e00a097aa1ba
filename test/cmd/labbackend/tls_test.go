package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-lb/tandem/deploy/lab"
	"github.com/tandem-lb/tandem/test/traffic"
)

// TestServesTLSAndResumes: -tls-listen serves the record protocol inside
// TLS with the lab's certificate, and a second connection with the first
// one's session ticket resumes it.
func TestServesTLSAndResumes(t *testing.T) {
	l, err := lab.New(lab.Config{StateDir: t.TempDir()}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	files, err := l.TLSFiles()
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(files.Cert)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("no certificate in the lab's PEM")
	}
	addr := freePort(t)
	var stderr bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run([]string{"-name", "bt", "-tls-listen", addr, "-tls-cert", files.Cert, "-tls-key", files.Key, "-stats", "0"}, &stderr)
	}()
	cfg := &tls.Config{RootCAs: pool, ServerName: files.ServerName, ClientSessionCache: tls.NewLRUClientSessionCache(2)}
	dial := func() *tls.Conn {
		t.Helper()
		var c net.Conn
		var err error
		for range 100 {
			if c, err = net.Dial("tcp", addr); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("labbackend never listened: %v\n%s", err, stderr.String())
		}
		tc := tls.Client(c, cfg)
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(tc)
		buf := make([]byte, traffic.MaxRecordLen)
		hello, err := traffic.ReadRecord(br, buf)
		if err != nil || hello.Kind != traffic.KindHello || hello.Name != "bt" {
			t.Fatalf("hello %+v, %v", hello, err)
		}
		req, _ := traffic.AppendRecord(nil, traffic.Record{Kind: traffic.KindRequest, Flow: 1, Seq: 1, Payload: []byte("tandem")})
		if _, err := tc.Write(req); err != nil {
			t.Fatal(err)
		}
		rep, err := traffic.ReadRecord(br, buf)
		if err != nil || rep.Kind != traffic.KindReply || string(rep.Payload) != "tandem" || rep.Name != "bt" {
			t.Fatalf("reply %+v, %v", rep, err)
		}
		return tc
	}
	first := dial()
	if first.ConnectionState().DidResume {
		t.Error("first connection resumed a session it never had")
	}
	first.Close()
	second := dial()
	if !second.ConnectionState().DidResume {
		t.Error("second connection with the first one's ticket did not resume")
	}
	second.Close()
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("labbackend did not stop on SIGTERM")
	}
}

func TestTLSNeedsCertificate(t *testing.T) {
	var stderr bytes.Buffer
	if err := run([]string{"-name", "x", "-tls-listen", freePort(t)}, &stderr); err == nil {
		t.Error("-tls-listen without -tls-cert accepted")
	}
}
