package hashing

import (
	"bufio"
	"encoding/binary"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/packethash.golden from the current PacketHash")

// Published MurmurHash3 x86_32 values (as printed by the reference
// implementation and e.g. Python's mmh3, unsigned).
func TestMurmur3Reference(t *testing.T) {
	for _, tc := range []struct {
		seed uint32
		in   string
		want uint32
	}{
		{0, "", 0},
		{1, "", 0x514e28b7},
		{0xffffffff, "", 0x81f16f39},
		{0, "foo", 0xf6a5c420},
		{0, "hello", 0x248bfa47},
		{0, "The quick brown fox jumps over the lazy dog", 0x2e4ff723},
	} {
		if got := murmur3String(tc.seed, tc.in); got != tc.want {
			t.Errorf("murmur3(%#x, %q) = %#x, want %#x", tc.seed, tc.in, got, tc.want)
		}
	}
}

// Murmur3Words must equal the byte-string algorithm over the words'
// little-endian bytes, as its doc comment promises.
func TestMurmur3WordsMatchesBytes(t *testing.T) {
	for _, words := range [][]uint32{nil, {0}, {1, 2}, {0xdeadbeef, 0, 0xffffffff, 7, 65535}} {
		for _, seed := range []uint32{0, 1, 0x9747b28c} {
			b := make([]byte, 4*len(words))
			for i, w := range words {
				binary.LittleEndian.PutUint32(b[4*i:], w)
			}
			if got, want := Murmur3Words(seed, words...), murmur3String(seed, string(b)); got != want {
				t.Errorf("Murmur3Words(%#x, %v) = %#x, bytes give %#x", seed, words, got, want)
			}
		}
	}
}

func TestPacketHashEquivalences(t *testing.T) {
	seed := VServerSeed("vs1")
	v4 := netip.MustParseAddr("198.51.100.7")
	mapped := netip.MustParseAddr("::ffff:198.51.100.7")
	for _, withPort := range []bool{false, true} {
		if PacketHash(seed, v4, 41234, withPort) != PacketHash(seed, mapped, 41234, withPort) {
			t.Errorf("withPort=%v: IPv4-mapped address hashes differently from IPv4", withPort)
		}
		if PacketHash(seed, netip.Addr{}, 1, withPort) != PacketHash(seed, netip.IPv4Unspecified(), 1, withPort) {
			t.Errorf("withPort=%v: invalid address does not hash as 0.0.0.0", withPort)
		}
	}
	if PacketHash(seed, v4, 1, false) != PacketHash(seed, v4, 2, false) {
		t.Error("SOURCEIPHASH depends on the port")
	}
	if PacketHash(seed, v4, 1, true) == PacketHash(seed, v4, 2, true) {
		t.Error("SRCIPSRCPORTHASH ignores the port")
	}
	// The words are big-endian address words then the host-order port.
	if got, want := PacketHash(7, v4, 80, true), Murmur3Words(7, 0xc6336407, 80); got != want {
		t.Errorf("PacketHash = %#x, want Murmur3Words(7, 0xc6336407, 80) = %#x", got, want)
	}
}

func TestVServerSeed(t *testing.T) {
	// FNV-1a 32 reference values.
	for in, want := range map[string]uint32{"": 0x811c9dc5, "a": 0xe40c292c, "foobar": 0xbf9cf968} {
		if got := VServerSeed(in); got != want {
			t.Errorf("VServerSeed(%q) = %#x, want %#x", in, got, want)
		}
	}
}

type vector struct {
	seed     uint32
	addr     string
	port     uint16
	withPort bool
	hash     uint32
}

func goldenInputs() []vector {
	var vs []vector
	seeds := []uint32{0, 1, VServerSeed("vs1"), 0xffffffff}
	addrs := []string{
		"0.0.0.0", "10.0.0.1", "198.51.100.7", "255.255.255.255",
		"::", "::1", "2001:db8::7", "2001:db8:85a3::8a2e:370:7334", "fe80::1",
		"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
		"::ffff:198.51.100.7", "::ffff:10.0.0.1",
	}
	for _, s := range seeds {
		for _, a := range addrs {
			for _, p := range []uint16{0, 80, 41234, 65535} {
				vs = append(vs, vector{s, a, p, false, 0}, vector{s, a, p, true, 0})
			}
		}
	}
	return vs
}

// TestPacketHashGolden pins PacketHash to known answers, so that any change
// to the specification (which the BPF code implements) is visible.
func TestPacketHashGolden(t *testing.T) {
	path := filepath.Join("testdata", "packethash.golden")
	if *update {
		var b strings.Builder
		b.WriteString("# PacketHash known answers: seed address port withPort hash (hex).\n")
		b.WriteString("# Regenerate with: go test ./hashing -run TestPacketHashGolden -update\n")
		for _, v := range goldenInputs() {
			h := PacketHash(v.seed, netip.MustParseAddr(v.addr), v.port, v.withPort)
			fmt.Fprintf(&b, "%#08x %s %d %v %#08x\n", v.seed, v.addr, v.port, v.withPort, h)
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		v, err := parseVector(text)
		if err != nil {
			t.Fatalf("%s:%d: %v", path, line, err)
		}
		got := PacketHash(v.seed, netip.MustParseAddr(v.addr), v.port, v.withPort)
		if got != v.hash {
			t.Errorf("%s:%d: PacketHash(%#x, %s, %d, %v) = %#08x, want %#08x", path, line, v.seed, v.addr, v.port, v.withPort, got, v.hash)
		}
		n++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n != len(goldenInputs()) {
		t.Errorf("%s has %d vectors, want %d", path, n, len(goldenInputs()))
	}
}

func parseVector(line string) (vector, error) {
	f := strings.Fields(line)
	if len(f) != 5 {
		return vector{}, fmt.Errorf("want 5 fields, got %d", len(f))
	}
	seed, err := strconv.ParseUint(f[0], 0, 32)
	if err != nil {
		return vector{}, fmt.Errorf("seed: %w", err)
	}
	port, err := strconv.ParseUint(f[2], 10, 16)
	if err != nil {
		return vector{}, fmt.Errorf("port: %w", err)
	}
	withPort, err := strconv.ParseBool(f[3])
	if err != nil {
		return vector{}, fmt.Errorf("withPort: %w", err)
	}
	hash, err := strconv.ParseUint(f[4], 0, 32)
	if err != nil {
		return vector{}, fmt.Errorf("hash: %w", err)
	}
	if _, err := netip.ParseAddr(f[1]); err != nil {
		return vector{}, fmt.Errorf("address: %w", err)
	}
	return vector{uint32(seed), f[1], uint16(port), withPort, uint32(hash)}, nil
}

// BenchmarkLookup is the data plane's per-packet work on a miss, in Go:
// the packet hash and the table slot.
func BenchmarkLookup(b *testing.B) {
	table, err := BuildMaglev(backendsN(100), DefaultTableSize)
	if err != nil {
		b.Fatal(err)
	}
	seed := VServerSeed("vs1")
	for _, tc := range []struct {
		name string
		addr netip.Addr
	}{
		{"ipv4", netip.MustParseAddr("198.51.100.7")},
		{"ipv6", netip.MustParseAddr("2001:db8::7")},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var sink uint32
			port := uint16(0)
			for b.Loop() {
				port++
				i, _ := Lookup(table, PacketHash(seed, tc.addr, port, true))
				sink += i
			}
			_ = sink
		})
	}
}
