package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestExample(t *testing.T) {
	c, err := Load("testdata/node.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeID != "n1" || c.Interfaces != (Interfaces{"eth0", "eth1", "eth2"}) {
		t.Errorf("node/interfaces = %q %+v", c.NodeID, c.Interfaces)
	}
	if c.Memberlist.BindAddr != netip.MustParseAddr("10.0.0.1") || c.Memberlist.BindPort != 7946 ||
		!reflect.DeepEqual(c.Memberlist.Seeds, []string{"10.0.0.2:7946", "10.0.0.3:7946"}) {
		t.Errorf("memberlist = %+v", c.Memberlist)
	}
	if c.Partner != "n2" || c.BGP.LocalAS != 65001 || c.BGP.ListenPort != -1 || len(c.BGP.Peers) != 2 {
		t.Fatalf("bgp = %+v", c.BGP)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8:c::/48")}; !reflect.DeepEqual(c.BGP.ReturnPrefixes, want) {
		t.Errorf("return prefixes = %v", c.BGP.ReturnPrefixes)
	}
	p0, p1 := c.BGP.Peers[0], c.BGP.Peers[1]
	if p0.HoldTime != 9*time.Second || p0.Keepalive != 3*time.Second || !p0.Announces(PrefixVIPs) || p0.Announces(PrefixReturn) {
		t.Errorf("peer 0 = %+v", p0)
	}
	if p1.AS != 65002 || p1.HoldTime != 9*time.Second || p1.Keepalive != 3*time.Second || !p1.Announces(PrefixReturn) || p1.Announces(PrefixVIPs) {
		t.Errorf("peer 1 = %+v", p1)
	}
	if c.API.TCP == nil || c.API.TCP.TokenFile != "/etc/tandem/api-token" || c.Log.Format != LogJSON {
		t.Errorf("api/log = %+v %+v", c.API, c.Log)
	}
}

func TestMinimalGetsDefaults(t *testing.T) {
	c, err := Load("testdata/minimal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.NodeID = "n1"
	want.Interfaces = Interfaces{"eth0", "eth0", "eth0"}
	want.Memberlist.BindAddr = netip.MustParseAddr("10.0.0.1")
	want.Memberlist.KeyringFile = "/etc/tandem/keyring"
	want.BGP.RouterID = want.Memberlist.BindAddr
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got  %+v\nwant %+v", c, want)
	}
}

const minimal = "nodeId: n1\ninterfaces: {front: eth0}\nmemberlist: {bindAddr: 10.0.0.1, keyringFile: k}\n"

func TestErrorsNameTheLine(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     error
		wantMsg  string
	}{
		{"unknown top key", minimal + "bgpp: {}\n", ErrUnknownKey, "line 4: unknown key \"bgpp\""},
		{"unknown nested key", minimal + "bgp:\n  localAs: 1\n  peerz: []\n", ErrUnknownKey, "line 6: bgp: unknown key \"peerz\""},
		{"missing node id", "interfaces: {front: eth0}\nmemberlist: {bindAddr: 10.0.0.1, keyringFile: k}\n", ErrMissing, "line 1: \"nodeId\" is required"},
		{"missing keyring", "nodeId: n1\ninterfaces: {front: eth0}\nmemberlist:\n  bindAddr: 10.0.0.1\n", ErrMissing, "line 4: memberlist: \"keyringFile\" is required: gossip is always encrypted"},
		{"missing peer as", minimal + "bgp:\n  localAs: 1\n  peers:\n    - address: 10.0.1.1\n", ErrMissing, "line 7: bgp.peers[0]: \"as\" is required"},
		{"bad addr", minimal + "bgp:\n  localAs: 1\n  routerId: 10.0.0.300\n", ErrInvalid, "line 6: bgp.routerId: \"10.0.0.300\" is not an IP address"},
		{"bad duration", minimal + "drainTime: soon\n", ErrInvalid, "line 4: drainTime"},
		{"bad community", minimal + "bgp:\n  localAs: 1\n  communities: [\"65536:1\"]\n", ErrInvalid, "line 6: bgp.communities[0]"},
		{"bad kind", minimal + "bgp:\n  localAs: 1\n  peers:\n    - {address: 10.0.1.1, as: 2, announce: [vip]}\n", ErrInvalid, "line 7: bgp.peers[0].announce[0]: \"vip\" is not a prefix kind"},
		{"keepalive above hold", minimal + "bgp:\n  localAs: 1\n  peers:\n    - {address: 10.0.1.1, as: 2, holdTime: 3s, keepalive: 3s}\n", ErrInvalid, "keepalive 3s must be below holdTime 3s"},
		{"tcp api open", minimal + "api:\n  tcp:\n    listen: 0.0.0.0:9443\n", ErrInvalid, "line 6: api.tcp: set exactly one of tokenFile or tls"},
		{"duplicate key", minimal + "nodeId: n2\n", ErrSyntax, "line 4: key \"nodeId\" given twice"},
		{"not a mapping", "- a\n- b\n", ErrSyntax, "line 1: the file must be a mapping"},
		{"syntax", "nodeId: [\n", ErrSyntax, "line"},
		{"empty", "", ErrMissing, "line 1: empty file"},
		{"peers without AS", minimal + "bgp:\n  peers:\n    - {address: 10.0.1.1, as: 2}\n", ErrMissing, "line 5: bgp: \"localAs\" is required"},
		{"partner self", minimal + "partner: n1\n", ErrInvalid, "partner \"n1\" is this node itself"},
		{"return prefix host bits", minimal + "bgp:\n  localAs: 1\n  returnPrefixes: [10.1.2.3/8]\n", ErrInvalid, "line 6: bgp.returnPrefixes[0]: \"10.1.2.3/8\" has host bits set; did you mean 10.0.0.0/8?"},
		{"bad xdp", minimal + "xdpMode: turbo\n", ErrInvalid, "line 4: xdpMode"},
		{"bad level", minimal + "log: {level: loud}\n", ErrInvalid, "line 4: log.level"},
		{"bad snip", minimal + "snip: 198.18.80.300\n", ErrInvalid, "line 4: snip: \"198.18.80.300\" is not an IP address"},
		{"bad snip in list", minimal + "snip:\n  - 198.18.80.1\n  - fd00::zz\n", ErrInvalid, "line 6: snip[1]: \"fd00::zz\" is not an IP address"},
		{"two snips of a family", minimal + "snip: [198.18.80.1, fd00::1, 198.18.80.2]\n", ErrInvalid, "line 4: snip[2]: 198.18.80.2: the pair already has the SNIP 198.18.80.1 of that family"},
		{"snip mapping", minimal + "snip: {a: 1}\n", ErrSyntax, "line 4: snip: must be a list"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("err = %q, want it to contain %q", err, tc.wantMsg)
			}
		})
	}
}

func TestKeyring(t *testing.T) {
	k1 := make([]byte, 32)
	k2 := make([]byte, 32)
	for i := range k2 {
		k1[i], k2[i] = byte(i), byte(255-i)
	}
	path := filepath.Join(t.TempDir(), "keyring")
	content := "# primary first\n" + base64.StdEncoding.EncodeToString(k1) + "\n\n" + base64.StdEncoding.EncodeToString(k2) + "\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := LoadKeyring(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(keys, [][]byte{k1, k2}) {
		t.Errorf("keys = %x", keys)
	}
	for _, bad := range []string{"", "# only a comment\n", "not base64!\n", base64.StdEncoding.EncodeToString(k1[:16]) + "\n"} {
		if _, err := ParseKeyring([]byte(bad)); !errors.Is(err, ErrKeyring) {
			t.Errorf("ParseKeyring(%q) = %v, want ErrKeyring", bad, err)
		}
	}
}

func TestParseCommunity(t *testing.T) {
	if v, err := ParseCommunity("65535:0"); err != nil || v != 0xffff0000 {
		t.Errorf("65535:0 = %#x, %v", v, err)
	}
	for _, bad := range []string{"1", "a:b", "1:65536", ":1", "-1:2"} {
		if _, err := ParseCommunity(bad); err == nil {
			t.Errorf("ParseCommunity(%q) succeeded", bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, name := range []string{"testdata/node.yaml", "testdata/minimal.yaml"} {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(minimal + "bgp: {localAs: 1, peers: [{address: \"::1\", as: 2}]}\n"))
	f.Add([]byte("a: &x {b: 1}\nc: *x\n"))
	f.Add([]byte("nodeId: ~\n"))
	f.Add([]byte(minimal + "snip: [198.18.80.1, \"fd00::1\"]\n"))
	f.Add([]byte(minimal + "snip: 198.18.80.1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrSyntax) && !errors.Is(err, ErrUnknownKey) && !errors.Is(err, ErrMissing) && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			if !strings.HasPrefix(err.Error(), "line ") && !strings.HasPrefix(err.Error(), "yaml:") {
				t.Fatalf("error does not name a line: %v", err)
			}
			return
		}
		if c.NodeID == "" || c.Interfaces.Front == "" || c.Interfaces.Back == "" || !c.Memberlist.BindAddr.IsValid() || c.Memberlist.KeyringFile == "" {
			t.Fatalf("accepted config lacks a required field: %+v", c)
		}
		for _, p := range c.BGP.Peers {
			if p.HoldTime != 0 && p.Keepalive >= p.HoldTime {
				t.Fatalf("accepted keepalive >= hold time: %+v", p)
			}
		}
		if len(c.SNIPs) > 2 || len(c.SNIPs) == 2 && c.SNIPs[0].Is4() == c.SNIPs[1].Is4() {
			t.Fatalf("accepted SNIPs %v: at most one per family", c.SNIPs)
		}
	})
}

func FuzzParseKeyring(f *testing.F) {
	f.Add([]byte("# primary\n" + base64.StdEncoding.EncodeToString(make([]byte, 32)) + "\n"))
	f.Add([]byte("not base64\n"))
	f.Add([]byte("\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := ParseKeyring(b)
		if err != nil {
			if !errors.Is(err, ErrKeyring) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		if len(keys) == 0 {
			t.Fatal("no key and no error")
		}
		for _, k := range keys {
			if len(k) != KeySize {
				t.Fatalf("accepted a %d-byte key", len(k))
			}
		}
	})
}

func FuzzParseCommunity(f *testing.F) {
	for _, s := range []string{"65535:0", "0:0", "1:65536", "a:b", ":", "65001:100"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseCommunity(s)
		if err != nil {
			return
		}
		if back := fmt.Sprintf("%d:%d", v>>16, v&0xffff); back != s {
			// Leading zeros or a plus sign are accepted; the value must
			// still be what the two numbers say.
			v2, err := ParseCommunity(back)
			if err != nil || v2 != v {
				t.Fatalf("%q -> %#x -> %q -> %#x", s, v, back, v2)
			}
		}
	})
}

// TestSNIPs: snip takes one address (old files) or a list, one per family.
func TestSNIPs(t *testing.T) {
	for in, want := range map[string][]netip.Addr{
		"snip: 198.18.80.1\n":                {netip.MustParseAddr("198.18.80.1")},
		"snip: fd00:7a6d:80::1\n":            {netip.MustParseAddr("fd00:7a6d:80::1")},
		"snip: [198.18.80.1, fd00::1]\n":     {netip.MustParseAddr("198.18.80.1"), netip.MustParseAddr("fd00::1")},
		"snip:\n  - fd00::1\n  - 10.0.0.9\n": {netip.MustParseAddr("fd00::1"), netip.MustParseAddr("10.0.0.9")},
		"snip: []\n":                         nil,
	} {
		c, err := Parse([]byte(minimal + in))
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if !reflect.DeepEqual(c.SNIPs, want) {
			t.Errorf("%q: SNIPs %v, want %v", in, c.SNIPs, want)
		}
	}
}
