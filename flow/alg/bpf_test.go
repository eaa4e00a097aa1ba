package alg

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// bpfALG runs flow/bpf/ftp.h's ftp_parse through BPF_PROG_TEST_RUN.
type bpfALG struct {
	objs algtestObjects
	log  string
}

func newBPFALG(tb testing.TB) *bpfALG {
	tb.Helper()
	if testing.Short() {
		tb.Skip("needs root and BPF (BPF_PROG_TEST_RUN): skipped under -short")
	}
	if os.Geteuid() != 0 {
		tb.Skip("needs root and BPF (BPF_PROG_TEST_RUN): not running as root")
	}
	spec, err := loadAlgtest()
	if err != nil {
		tb.Fatal(err)
	}
	a := &bpfALG{}
	if err := spec.LoadAndAssign(&a.objs, &ebpf.CollectionOptions{
		Programs: ebpf.ProgramOptions{LogLevel: ebpf.LogLevelStats},
	}); err != nil {
		tb.Fatalf("loading the ALG test program: %+v", err)
	}
	a.log = a.objs.XdpAlgTest.VerifierLog
	tb.Cleanup(func() { a.objs.Close() })
	return a
}

func addrWords(a netip.Addr) (w [4]uint32) {
	s := a.AsSlice()
	for i := 0; i < len(s)/4; i++ {
		w[i] = binary.NativeEndian.Uint32(s[4*i:]) // network order in memory
	}
	return w
}

// frame is Ethernet + IPv4/IPv6 + TCP (no options) + payload, from src to
// dst. Checksums are not needed by the parser and left zero.
func frame(src, dst netip.Addr, payload []byte) []byte {
	b := make([]byte, 14, 14+40+20+len(payload))
	copy(b, []byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2})
	if src.Is4() {
		binary.BigEndian.PutUint16(b[12:], 0x0800)
		ip := make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+20+len(payload)))
		ip[8], ip[9] = 64, 6
		copy(ip[12:], src.AsSlice())
		copy(ip[16:], dst.AsSlice())
		b = append(b, ip...)
	} else {
		binary.BigEndian.PutUint16(b[12:], 0x86dd)
		ip := make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(20+len(payload)))
		ip[6], ip[7] = 6, 64
		copy(ip[8:], src.AsSlice())
		copy(ip[24:], dst.AsSlice())
		b = append(b, ip...)
	}
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 21)
	tcp[12] = 5 << 4
	tcp[13] = 0x18 // PSH|ACK
	b = append(b, tcp...)
	return append(b, payload...)
}

// check runs one segment payload sent in direction dir through the BPF
// parser and returns its result in the Go types.
func (a *bpfALG) check(tb testing.TB, payload []byte, dir Direction, vip, client netip.Addr) (Expect, Reason) {
	tb.Helper()
	cfg := algtestAlgCfg{Dir: uint32(dir), Family: 4, Vip: addrWords(vip), Client: addrWords(client)}
	if vip.Is6() {
		cfg.Family = 6
	}
	if err := a.objs.AlgCfgMap.Put(uint32(0), cfg); err != nil {
		tb.Fatal(err)
	}
	src, dst := client, vip // a command on its way in
	if dir == FromBackend {
		src, dst = vip, client // the reply as it leaves, already from the VIP
	}
	ret, err := a.objs.XdpAlgTest.Run(&ebpf.RunOptions{Data: frame(src, dst, payload)})
	if err != nil {
		tb.Fatalf("running the ALG test program: %v", err)
	}
	if ret != 2 { // XDP_PASS
		tb.Fatalf("ALG test program returned %d, want XDP_PASS", ret)
	}
	var res algtestFtpResult
	if err := a.objs.AlgOut.Lookup(uint32(0), &res); err != nil {
		tb.Fatal(err)
	}
	if res.Kind == 0xff {
		tb.Fatalf("ALG test program did not parse the frame")
	}
	e := Expect{Kind: Kind(res.Kind), Port: res.Port}
	var raw [16]byte
	for i, w := range res.Addr {
		binary.NativeEndian.PutUint32(raw[4*i:], w)
	}
	switch res.Family {
	case 4:
		e.Addr = netip.AddrFrom4([4]byte(raw[:4]))
		if [12]byte(raw[4:]) != [12]byte{} {
			tb.Errorf("IPv4 result with non-zero words 1..3: %x", raw)
		}
	case 6:
		e.Addr = netip.AddrFrom16(raw)
	case 0:
		if raw != [16]byte{} || res.Port != 0 {
			tb.Errorf("result without family carries data: %+v", res)
		}
	default:
		tb.Errorf("result family %d", res.Family)
	}
	if res.Pad != 0 || res.Pad2 != 0 {
		tb.Errorf("padding set: %+v", res)
	}
	return e, Reason(res.Reason)
}

// agree fails unless the BPF parser and Check give the same result.
func (a *bpfALG) agree(t *testing.T, payload []byte, dir Direction, vip, client netip.Addr) {
	t.Helper()
	ge, gr := Check(payload, dir, vip, client)
	be, br := a.check(t, payload, dir, vip, client)
	if ge != be || gr != br {
		t.Fatalf("%s %q on %v/%v:\n go:  %+v %v\n bpf: %+v %v", dir, payload, vip, client, ge, gr, be, br)
	}
}

func TestBPFAgreesOnCases(t *testing.T) {
	a := newBPFALG(t)
	for _, c := range ftpCases {
		t.Run(c.name, func(t *testing.T) {
			vip, client := c.peers()
			a.agree(t, []byte(c.line), c.dir, vip, client)
			// And the expected result, not merely the same one.
			e, r := a.check(t, []byte(c.line), c.dir, vip, client)
			if e != c.want() || r != c.reason {
				t.Errorf("bpf %+v %v, want %+v %v", e, r, c.want(), c.reason)
			}
		})
	}
}

// TestBPFAgreesOnMutations runs every case cut at each length and with
// each byte replaced by characters the grammar cares about.
func TestBPFAgreesOnMutations(t *testing.T) {
	a := newBPFALG(t)
	rng := rand.New(rand.NewPCG(7, 7))
	special := []byte("0123456789,.:|()!afAF \r\n\x00\xff")
	n := 0
	for _, c := range ftpCases {
		vip, client := c.peers()
		line := []byte(c.line)
		for cut := 0; cut <= len(line); cut++ {
			a.agree(t, line[:cut], c.dir, vip, client)
			n++
		}
		for range 40 {
			m := append([]byte(nil), line...)
			m[rng.IntN(len(m))] = special[rng.IntN(len(special))]
			a.agree(t, m, c.dir, vip, client)
			n++
		}
	}
	t.Logf("%d mutated lines agree", n)
}

func FuzzBPFAgrees(f *testing.F) {
	for _, c := range ftpCases {
		f.Add([]byte(c.line), uint8(c.dir), c.v6)
	}
	f.Add([]byte("EPRT |2|::|1|\n"), uint8(FromClient), true)
	a := newBPFALG(f)
	f.Fuzz(func(t *testing.T, line []byte, dir uint8, v6 bool) {
		if len(line) > 1400 {
			return
		}
		vip, client := vip4, client4
		if v6 {
			vip, client = vip6, client6
		}
		a.agree(t, line, Direction(dir%2+1), vip, client)
	})
}

// TestBPFVerifierBudget keeps the parser cheap for the verifier: lb.c
// inlines it into a handler that has its own budget.
func TestBPFVerifierBudget(t *testing.T) {
	const budget = 75000
	a := newBPFALG(t)
	m := regexp.MustCompile(`processed (\d+) insns`).FindStringSubmatch(a.log)
	if m == nil {
		t.Fatalf("no instruction count in the verifier log: %q", a.log)
	}
	n, _ := strconv.Atoi(m[1])
	t.Logf("verifier processed %d instructions for the ALG test program (budget %d, limit 1000000)", n, budget)
	if n > budget {
		t.Errorf("verifier processed %d instructions, over the budget of %d", n, budget)
	}
}

// benchCases are the lines the benchmarks parse; "other commands" is the
// baseline of a line the ALG does not read (headers, copy, kind check).
func benchCases(tb testing.TB) []ftpCase {
	var cs []ftpCase
	for _, name := range []string{"other commands", "vsftpd 227", "vsftpd 229", "curl PORT", "curl EPRT IPv6", "EPRT IPv6 full form"} {
		for _, c := range ftpCases {
			if c.name == name {
				cs = append(cs, c)
			}
		}
	}
	if len(cs) != 6 {
		tb.Fatalf("benchmark cases missing: %d", len(cs))
	}
	return cs
}

func BenchmarkBPFParse(b *testing.B) {
	a := newBPFALG(b)
	for _, c := range benchCases(b) {
		vip, client := c.peers()
		cfg := algtestAlgCfg{Dir: uint32(c.dir), Family: 4, Vip: addrWords(vip), Client: addrWords(client)}
		if c.v6 {
			cfg.Family = 6
		}
		if err := a.objs.AlgCfgMap.Put(uint32(0), cfg); err != nil {
			b.Fatal(err)
		}
		data := frame(client, vip, []byte(c.line))
		b.Run(c.name, func(b *testing.B) {
			// The program does not rewrite the frame, so a repeated run
			// parses the same line each time; the kernel times the runs.
			const repeat = 1000
			var total time.Duration
			for b.Loop() {
				_, per, err := a.objs.XdpAlgTest.Benchmark(data, repeat, nil)
				if err != nil {
					b.Fatal(err)
				}
				total += per
			}
			b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/run")
		})
	}
}

// TestBPFAgreesOnIPv6 has the BPF parser assemble IPv6 addresses in every
// textual form ("::" anywhere, full, upper case) for a client with that
// address, so that each must come out as an expectation, word for word.
func TestBPFAgreesOnIPv6(t *testing.T) {
	a := newBPFALG(t)
	addrs := []string{"::", "::1", "1::", "2001:db8::10", "2001:db8:1::7", "fe80::1:2:3:4", "1:2:3:4:5:6:7:8",
		"1:0:0:4:0:0:0:8", "1::4:0:0:0:8", "1:0:0:4::8", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::a:b", "a:b::",
		"0:1:2:3:4:5:6::", "::1:2:3:4:5:6:7"}
	for _, s := range addrs {
		client := netip.MustParseAddr(s)
		for _, text := range []string{s, client.String(), client.StringExpanded(), strings.ToUpper(client.StringExpanded())} {
			line := []byte("EPRT |2|" + text + "|1024|\r\n")
			a.agree(t, line, FromClient, vip6, client)
			if e, r := a.check(t, line, FromClient, vip6, client); r != ReasonOK || e.Addr != client {
				t.Errorf("%q: bpf %+v %v, want %v", line, e, r, client)
			}
		}
	}
}
