package main

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-lb/tandem/test/traffic"
)

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestServesHelloAndStopsOnSIGTERM(t *testing.T) {
	addr := freePort(t)
	pidfile := filepath.Join(t.TempDir(), "b.pid")
	var stderr bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run([]string{"-name", "bx", "-listen", addr, "-pidfile", pidfile, "-stats", "0"}, &stderr)
	}()
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
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	hello, err := traffic.ReadRecord(bufio.NewReader(c), make([]byte, traffic.MaxRecordLen))
	if err != nil || hello.Kind != traffic.KindHello || hello.Name != "bx" {
		t.Fatalf("hello %+v, %v", hello, err)
	}
	b, _ := os.ReadFile(pidfile)
	if strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Errorf("pid file holds %q", b)
	}
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

func TestRefusesMissingFlags(t *testing.T) {
	var stderr bytes.Buffer
	if err := run([]string{"-name", "x"}, &stderr); err == nil {
		t.Error("no -listen accepted")
	}
	if err := run([]string{"-listen", freePort(t)}, &stderr); err == nil {
		t.Error("no -name accepted")
	}
}
