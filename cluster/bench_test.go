package cluster

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// bigConfig has nvs stateless vservers with per backends each.
func bigConfig(nvs, per int) (Config, map[string]bool) {
	var c Config
	up := map[string]bool{}
	for v := 0; v < nvs; v++ {
		vs := fmt.Sprintf("vs%03d", v)
		c.VServers = append(c.VServers, VServer{Name: vs, Type: TypeANY, VIP: netip.AddrFrom4([4]byte{203, 0, 113, byte(v)}), Port: 80,
			LBMethod: MethodSrcIPSrcPortHash, ConnFailover: FailoverStateless})
		for b := 0; b < per; b++ {
			s := fmt.Sprintf("%s-web%02d", vs, b)
			c.Services = append(c.Services, Service{Name: s, IP: netip.AddrFrom4([4]byte{10, byte(v), 0, byte(b + 1)}), Type: TypeANY, Port: 8080, USIP: true})
			c.Bindings = append(c.Bindings, Binding{VServer: vs, Service: s, Weight: uint32(1 + b%3)})
			up[s] = b%5 != 0
		}
	}
	c.Normalize()
	return c, up
}

func BenchmarkValidate(b *testing.B) {
	c, _ := bigConfig(100, 10)
	for b.Loop() {
		if err := c.Validate(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDigest(b *testing.B) {
	c, _ := bigConfig(100, 10)
	for b.Loop() {
		_ = c.Digest()
	}
}

// BenchmarkComputeTables: 10 vservers of 10 backends, M = 65537.
func BenchmarkComputeTables(b *testing.B) {
	c, up := bigConfig(10, 10)
	for b.Loop() {
		if _, err := ComputeTables(c, up, nil, 65537); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMerge: merging a full state of 100 vservers x 10 services into
// an empty store (what a joining node does).
func BenchmarkMerge(b *testing.B) {
	c, _ := bigConfig(100, 10)
	src, _ := NewStore(StoreConfig{Node: "a"})
	if err := src.Update(func(x *Config) error { *x = c; return nil }); err != nil {
		b.Fatal(err)
	}
	entries := src.Entries()
	b.ResetTimer()
	for b.Loop() {
		dst, _ := NewStore(StoreConfig{Node: "b"})
		if _, err := dst.Merge(entries); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeState(b *testing.B) {
	c, _ := bigConfig(100, 10)
	src, _ := NewStore(StoreConfig{Node: "a"})
	_ = src.Update(func(x *Config) error { *x = c; return nil })
	msg := Message{Type: MsgState, From: "a", Entries: src.Entries()}
	buf, err := msg.Encode()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if _, err := DecodeMessage(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzLoadState: whatever the state file holds, NewStore loads it or
// refuses it with ErrCorruptState; it never panics.
func FuzzLoadState(f *testing.F) {
	dir := f.TempDir()
	s, _ := NewStore(StoreConfig{Node: "n1", Dir: dir})
	_ = s.Update(func(c *Config) error { *c = goodConfig(); return nil })
	_ = s.Update(func(c *Config) error { return c.RemoveVServer("v6") })
	good, err := os.ReadFile(filepath.Join(dir, StateFileName))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"format":1,"entries":null}`))
	f.Add([]byte(`{"format":1,"clock":18446744073709551615,"entries":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, StateFileName), b, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := NewStore(StoreConfig{Node: "n1", Dir: d})
		if err != nil {
			if !errors.Is(err, ErrCorruptState) {
				t.Fatalf("error does not match ErrCorruptState: %v", err)
			}
			return
		}
		// A loaded store can take a change and reload it.
		_ = s.Update(func(c *Config) error { c.PutMonitor(Monitor{Name: "fuzz"}); return nil })
		if _, err := NewStore(StoreConfig{Node: "n1", Dir: d}); err != nil {
			t.Fatalf("store does not reload its own file: %v", err)
		}
	})
}

// BenchmarkMachineTick: one tick of a node with 100 vservers of 10
// backends (M = 65537) and 8 members, when nothing changed: the cost paid
// every 200 ms.
func BenchmarkMachineTick(b *testing.B) {
	c, up := bigConfig(100, 10)
	m, err := NewMachine(MachineConfig{Self: MemberMeta{ID: "n1", Proto: 1}, HealthResendTicks: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	for i := 2; i <= 8; i++ {
		m.Member(MemberMeta{ID: fmt.Sprintf("n%d", i), Proto: 1}, netip.AddrPort{}, StateAlive)
	}
	m.SetConfig(c)
	for s, u := range up {
		m.LocalProbe(s, u)
	}
	m.Ready()
	b.ResetTimer()
	for b.Loop() {
		m.Tick()
		if len(m.Ready()) != 0 {
			b.Fatal("effects without a change")
		}
	}
}
