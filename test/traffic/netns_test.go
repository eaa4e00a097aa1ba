package traffic

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var nsCounter atomic.Int32

func ip(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// nsPair makes two namespaces, client and backend, joined by a veth:
// backend 198.18.200.1/24 fd00:7a6d:0:200::1/64, client .2/::2 plus the
// client addresses 198.18.201.1-8 and fd00:7a6d:0:201::1-8 on its
// loopback. It returns the namespaces' paths; both are deleted at cleanup.
func nsPair(t *testing.T) (client, backend string, sources []netip.Addr) {
	t.Helper()
	if testing.Short() {
		t.Skip("creates network namespaces; skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	base := fmt.Sprintf("tl%d-%d", os.Getpid(), nsCounter.Add(1))
	c, b := base+"c", base+"b"
	for _, ns := range []string{c, b} {
		ip(t, "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		// Without this the link-local addresses stay tentative for a second
		// or two and IPv6 neighbour discovery waits for them.
		ip(t, "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
		ip(t, "-n", ns, "link", "set", "lo", "up")
	}
	ip(t, "-n", c, "link", "add", "v0", "type", "veth", "peer", "name", "v0", "netns", b)
	ip(t, "-n", c, "addr", "add", "198.18.200.2/24", "dev", "v0")
	ip(t, "-n", c, "addr", "add", "fd00:7a6d:0:200::2/64", "dev", "v0", "nodad")
	ip(t, "-n", b, "addr", "add", "198.18.200.1/24", "dev", "v0")
	ip(t, "-n", b, "addr", "add", "fd00:7a6d:0:200::1/64", "dev", "v0", "nodad")
	for _, ns := range []string{c, b} {
		ip(t, "-n", ns, "link", "set", "v0", "up")
	}
	for i := 1; i <= 8; i++ {
		a4 := fmt.Sprintf("198.18.201.%d", i)
		a6 := fmt.Sprintf("fd00:7a6d:0:201::%d", i)
		ip(t, "-n", c, "addr", "add", a4+"/32", "dev", "lo")
		ip(t, "-n", c, "addr", "add", a6+"/128", "dev", "lo", "nodad")
		sources = append(sources, netip.MustParseAddr(a4), netip.MustParseAddr(a6))
	}
	ip(t, "-n", b, "route", "add", "198.18.201.0/24", "via", "198.18.200.2")
	ip(t, "-n", b, "-6", "route", "add", "fd00:7a6d:0:201::/64", "via", "fd00:7a6d:0:200::2")
	// The first IPv6 packet on a fresh veth waits for neighbour discovery,
	// which costs the first TCP SYN a 1 s retransmission: resolve the
	// neighbours both ways before the test measures stalls.
	resolve(t, c, "fd00:7a6d:0:200::1")
	resolve(t, b, "fd00:7a6d:0:200::2")
	return "/run/netns/" + c, "/run/netns/" + b, sources
}

// resolve sends datagrams to addr from namespace ns until the kernel has a
// neighbour entry for it, for at most 3 s.
func resolve(t *testing.T, ns, addr string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		InNetns("/run/netns/"+ns, func() error {
			c, err := net.Dial("udp", net.JoinHostPort(addr, "9"))
			if err == nil {
				c.Write([]byte("x"))
				c.Close()
			}
			return err
		})
		out, _ := exec.Command("ip", "-n", ns, "neigh", "show", addr).Output()
		if strings.Contains(string(out), "lladdr") {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: no neighbour entry for %s after 3s", ns, addr)
}

func TestCheckerThroughNamespaces(t *testing.T) {
	client, backend, sources := nsPair(t)
	srv4, port4 := serve(t, backend, "ns-b4", netip.MustParseAddr("198.18.200.1"), 0)
	srv6, port6 := serve(t, backend, "ns-b6", netip.MustParseAddr("fd00:7a6d:0:200::1"), 0)
	cfg := Config{
		Targets: []Target{
			{Mode: "plain4", Addr: netip.AddrPortFrom(netip.MustParseAddr("198.18.200.1"), port4), TCPFlows: 50, UDPFlows: 20},
			{Mode: "plain6", Addr: netip.AddrPortFrom(netip.MustParseAddr("fd00:7a6d:0:200::1"), port6), TCPFlows: 50, UDPFlows: 20},
		},
		Sources:  sources,
		Netns:    client,
		Duration: 3 * time.Second,
		Seed:     uint64(time.Now().UnixNano()),
	}
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range rep.Summaries() {
		t.Log(s.Line("netns"), "round_trips=", s.RoundTrips, "bytes=", s.Bytes)
		if s.Flows != 70 || s.Kept != 70 || s.Corrupt != 0 {
			t.Errorf("%s: %+v, want 70 flows all kept", s.Mode, s)
		}
	}
	for _, f := range rep.Results {
		if !strings.HasPrefix(f.Src.Addr().String(), "198.18.201.") && !strings.HasPrefix(f.Src.Addr().String(), "fd00:7a6d:0:201::") {
			t.Errorf("flow %d left from %v, not a client address", f.ID, f.Src)
		}
	}
	if st := srv4.Stats(); st.TCPAccepted != 50 || st.UDPSessions != 20 {
		t.Errorf("IPv4 server saw %+v, want 50 TCP connections and 20 UDP sessions", st)
	}
	if st := srv6.Stats(); st.TCPAccepted != 50 || st.UDPSessions != 20 {
		t.Errorf("IPv6 server saw %+v", st)
	}

	// Kill the backend mid-run: every flow must be reported broken.
	time.AfterFunc(1500*time.Millisecond, func() { srv4.Close(); srv6.Close() })
	cfg.StallTimeout = 2 * time.Second
	rep, err = Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range rep.Summaries() {
		t.Log(s.Line("backend-killed"), s.Reasons)
		if s.Flows != 70 || s.Broken != 70 || s.Kept != 0 || s.Corrupt != 0 {
			t.Errorf("%s after the kill: %+v, want all 70 broken", s.Mode, s)
		}
	}
}
