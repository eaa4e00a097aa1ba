package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandem-lb/tandem/test/traffic"
)

func TestRunAgainstLoopbackServer(t *testing.T) {
	srv, err := traffic.NewServer(traffic.ServerConfig{Name: "lo"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTCP(ln)
	go srv.ServeUDP(pc)
	var out, errb bytes.Buffer
	jsonPath := filepath.Join(t.TempDir(), "flows.json")
	code := run(context.Background(), []string{"-json", jsonPath, "-target", "plain=" + ln.Addr().String(), "-tcp", "5", "-udp", "3",
		"-duration", "600ms", "-interval", "20ms", "-scenario", "smoke", "-src", "127.0.0.1,127.0.0.2"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "chaos scenario=smoke mode=plain flows=8 kept=8 broken=0 corrupt=0 moved=0 max_stall_ms=") {
		t.Errorf("output:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "backends=lo:8") {
		t.Errorf("detail line lacks the backend count:\n%s", out.String())
	}

	var saved struct {
		Scenario  string
		Summaries []traffic.Summary
		Flows     []traffic.FlowResult
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil || json.Unmarshal(b, &saved) != nil {
		t.Fatalf("reading the JSON results: %v\n%s", err, b)
	}
	if saved.Scenario != "smoke" || len(saved.Flows) != 8 || saved.Summaries[0].Kept != 8 || !saved.Flows[0].Src.IsValid() || saved.Flows[0].Backend != "lo" {
		t.Errorf("JSON results: %+v", saved)
	}

	// With the server gone every flow breaks and the exit status says so.
	srv.Close()
	out.Reset()
	code = run(context.Background(), []string{"-target", "plain=" + ln.Addr().String(), "-tcp", "2", "-udp", "0",
		"-duration", "300ms", "-v"}, &out, &errb)
	if code != 1 || !strings.Contains(out.String(), "kept=0 broken=2") || !strings.Contains(out.String(), "reason=dial") {
		t.Errorf("exit %d, output:\n%s", code, out.String())
	}
}

func TestRunRefusesBadArguments(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"-target", "198.19.0.10:80"},
		{"-target", "m=nonsense"},
		{"-target", "m=198.19.0.10:80", "-src", "fd00::1"},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, &out, &errb); code != 2 {
			t.Errorf("%q: exit %d, want 2 (stderr %s)", args, code, errb.String())
		}
	}
}
