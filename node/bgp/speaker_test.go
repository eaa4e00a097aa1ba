package bgp

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/tandem-lb/tandem/node/config"
	"github.com/tandem-lb/tandem/node/internal/nstest"
)

const birdConf = `
log stderr { info, remote, warning, error, auth, fatal, bug };
router id 10.0.0.2;
ipv4 table back4;
protocol device { scan time 1; }
protocol bgp tn4 {
	local 10.0.0.2 as 65000; neighbor 10.0.0.1 as 65001; passive on; hold time 9;
	ipv4 { import all; export none; };
}
protocol bgp tn6 {
	local fd00::2 as 65000; neighbor fd00::1 as 65001; passive on; hold time 9;
	ipv6 { import all; export none; };
}
protocol bgp tnback {
	local 10.0.1.2 as 65002; neighbor 10.0.1.1 as 65001; passive on; hold time 9;
	ipv4 { table back4; import all; export none; };
}
`

var (
	vip4 = netip.MustParsePrefix("203.0.113.10/32")
	vip6 = netip.MustParsePrefix("2001:db8::10/128")
	ret4 = netip.MustParsePrefix("198.51.100.0/24")
)

// TestSpeakerWithBIRD announces to a real router: BIRD in a namespace, the
// speaker in a second one (a child process, since GoBGP dials from its own
// goroutines), connected by a veth.
func TestSpeakerWithBIRD(t *testing.T) {
	if sock, ok := nstest.ReExec(t); ok {
		speakerScenario(t, nstest.AttachBIRD(sock))
		return
	}
	nstest.RequireRoot(t, "bird", "birdc")
	nsR := nstest.NewNS(t, "br")
	nsS := nstest.NewNS(t, "bs")
	// The front link carries the IPv4 and IPv6 VIP sessions; the back link,
	// to a second router (a second BGP protocol and table in the same BIRD),
	// carries the return prefixes.
	nstest.Veth(t, nsS, []string{"10.0.0.1/30", "fd00::1/64"}, nsR, []string{"10.0.0.2/30", "fd00::2/64"})
	nstest.Veth(t, nsS, []string{"10.0.1.1/30"}, nsR, []string{"10.0.1.2/30"})
	bird := nstest.StartBIRD(t, nsR, birdConf)
	out, err := nstest.Child(t, nsS, bird.Socket, 90*time.Second)
	t.Logf("speaker (in namespace %s):\n%s", nsS, out)
	if err != nil {
		t.Fatalf("speaker scenario failed: %v", err)
	}
}

func speakerScenario(t *testing.T, bird *nstest.BIRD) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sp, err := New(ctx, Config{
		LocalAS:     65001,
		RouterID:    netip.MustParseAddr("10.0.0.1"),
		Communities: []uint32{65001<<16 | 100},
		Peers: []Peer{
			{Address: netip.MustParseAddr("10.0.0.2"), AS: 65000},
			{Address: netip.MustParseAddr("fd00::2"), AS: 65000},
			{Address: netip.MustParseAddr("10.0.1.2"), AS: 65002, Kinds: []config.PrefixKind{config.PrefixReturn}, Communities: []uint32{65002<<16 | 7}},
		},
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	start := time.Now()
	for _, a := range []struct {
		p    netip.Prefix
		kind config.PrefixKind
	}{{vip4, config.PrefixVIPs}, {vip6, config.PrefixVIPs}, {ret4, config.PrefixReturn}} {
		if err := sp.Announce(ctx, a.p, a.kind); err != nil {
			t.Fatal(err)
		}
	}
	d := bird.WaitRoute(t, "", 10*time.Second, "VIPs in BIRD's master tables", func(r map[netip.Prefix]nstest.Route) bool {
		_, ok4 := r[vip4]
		_, ok6 := r[vip6]
		return ok4 && ok6
	})
	t.Logf("VIP /32 and /128 in BIRD %v after announcing (%v after start)", d, time.Since(start))
	bird.WaitRoute(t, "back4", 10*time.Second, "return prefix in BIRD's back table", func(r map[netip.Prefix]nstest.Route) bool {
		_, ok := r[ret4]
		return ok
	})
	front, err := bird.Routes("")
	if err != nil {
		t.Fatal(err)
	}
	back, err := bird.Routes("back4")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := front[ret4]; ok {
		t.Errorf("return prefix leaked to the front peers: %+v", front[ret4])
	}
	if _, ok := back[vip4]; ok {
		t.Errorf("VIP leaked to the back peer: %+v", back[vip4])
	}
	r4, r6, rr := front[vip4], front[vip6], back[ret4]
	if r4.Protocol != "tn4" || r6.Protocol != "tn6" || rr.Protocol != "tnback" {
		t.Errorf("protocols = %q %q %q", r4.Protocol, r6.Protocol, rr.Protocol)
	}
	if r4.NextHop != "10.0.0.1" {
		t.Errorf("v4 next hop = %q, want the session's local address", r4.NextHop)
	}
	for name, r := range map[string]nstest.Route{"vip4": r4, "vip6": r6, "return": rr} {
		if !r.HasCommunity(65001, 100) {
			t.Errorf("%s lacks the global community 65001:100: %v", name, r.Communities)
		}
		if r.HasCommunity(65535, 65001) || r.HasCommunity(65535, 65002) {
			t.Errorf("%s carries an internal marker community: %v", name, r.Communities)
		}
		if r.HasCommunity(65535, 0) {
			t.Errorf("%s carries GRACEFUL_SHUTDOWN before any drain", name)
		}
	}
	if !rr.HasCommunity(65002, 7) || r4.HasCommunity(65002, 7) {
		t.Errorf("per-peer community 65002:7: back %v, front %v", rr.Communities, r4.Communities)
	}
	peers, err := sp.Peers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 3 {
		t.Fatalf("peers = %+v", peers)
	}
	for _, p := range peers {
		if !p.Established || p.State != "established" {
			t.Errorf("peer %v state %q", p.Address, p.State)
		}
	}

	// Drain: everything is re-announced with GRACEFUL_SHUTDOWN.
	if err := sp.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	d = bird.WaitRoute(t, "", 5*time.Second, "GRACEFUL_SHUTDOWN on the VIPs", func(r map[netip.Prefix]nstest.Route) bool {
		return r[vip4].HasCommunity(65535, 0) && r[vip6].HasCommunity(65535, 0)
	})
	t.Logf("VIPs carry (65535,0) %v after Drain", d)
	bird.WaitRoute(t, "back4", 5*time.Second, "GRACEFUL_SHUTDOWN on the return prefix", func(r map[netip.Prefix]nstest.Route) bool {
		return r[ret4].HasCommunity(65535, 0) && r[ret4].HasCommunity(65002, 7)
	})

	// Withdraw one VIP: gone within 1s, the other stays.
	if err := sp.Withdraw(ctx, vip4); err != nil {
		t.Fatal(err)
	}
	d = bird.WaitRoute(t, "", time.Second, "VIP /32 gone after Withdraw", func(r map[netip.Prefix]nstest.Route) bool {
		_, ok := r[vip4]
		return !ok
	})
	t.Logf("VIP /32 gone %v after Withdraw", d)
	if r, err := bird.Routes(""); err != nil || r[vip6].Protocol != "tn6" {
		t.Fatalf("VIP /128 went with the /32: %v %v", r, err)
	}

	// Close (what SIGTERM does): everything gone within 1s.
	start = time.Now()
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	bird.WaitRoute(t, "", time.Second, "VIP /128 gone after Close", func(r map[netip.Prefix]nstest.Route) bool {
		_, ok := r[vip6]
		return !ok
	})
	bird.WaitRoute(t, "back4", time.Second, "return prefix gone after Close", func(r map[netip.Prefix]nstest.Route) bool {
		_, ok := r[ret4]
		return !ok
	})
	t.Logf("all routes gone %v after Close was called", time.Since(start))
	if err := sp.Announce(ctx, vip4, config.PrefixVIPs); !errors.Is(err, ErrClosed) {
		t.Errorf("Announce after Close = %v, want ErrClosed", err)
	}
}

func TestConfigValidate(t *testing.T) {
	base := Config{LocalAS: 65001, RouterID: netip.MustParseAddr("10.0.0.1"), Peers: []Peer{{Address: netip.MustParseAddr("10.0.0.2"), AS: 65000}}}
	c := base
	c.setDefaults()
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	if c.ListenPort != -1 || c.Peers[0].HoldTime != 9*time.Second || c.Peers[0].Keepalive != 3*time.Second || c.Peers[0].Kinds[0] != config.PrefixVIPs {
		t.Errorf("defaults = %+v", c)
	}
	for name, mut := range map[string]func(*Config){
		"no AS":        func(c *Config) { c.LocalAS = 0 },
		"v6 router id": func(c *Config) { c.RouterID = netip.MustParseAddr("::1") },
		"dup peer":     func(c *Config) { c.Peers = append(c.Peers, c.Peers[0]) },
		"bad kind":     func(c *Config) { c.Peers[0].Kinds = []config.PrefixKind{"all"} },
		"hold < ka":    func(c *Config) { c.Peers[0].HoldTime, c.Peers[0].Keepalive = 3*time.Second, 5*time.Second },
	} {
		c := base
		c.Peers = append([]Peer(nil), base.Peers...)
		mut(&c)
		c.setDefaults()
		if err := c.validate(); err == nil {
			t.Errorf("%s: validate accepted %+v", name, c)
		}
	}
}
