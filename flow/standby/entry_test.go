package standby

import (
	"errors"
	"net/netip"
	"testing"
	"time"
)

// testEntry returns a distinct TCP flow for each i (IPv4), as a data plane
// would report it.
func testEntry(i int) Entry {
	return Entry{
		Proto:       ProtoTCP,
		Client:      netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), uint16(1024+i%60000)),
		VIP:         netip.MustParseAddrPort("203.0.113.10:80"),
		Backend:     netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(1 + i%200)}), 8080),
		VServerID:   uint32(1 + i%4),
		Flags:       2,
		Created:     1_790_000_000,
		LastSeen:    1_790_000_100 + uint32(i%100),
		IdleTimeout: 0,
	}
}

func TestRecordRoundTrip(t *testing.T) {
	cases := []Entry{
		testEntry(7),
		{
			Proto:       ProtoUDP,
			Client:      netip.MustParseAddrPort("[2001:db8::7]:41234"),
			VIP:         netip.MustParseAddrPort("[2001:db8:ffff::10]:53"),
			Backend:     netip.MustParseAddrPort("[2001:db8:1::11]:5353"),
			SNAT:        netip.MustParseAddrPort("[2001:db8:2::1]:61000"),
			VServerID:   1 << 31,
			Flags:       0xffff,
			Created:     1,
			LastSeen:    1<<32 - 1,
			IdleTimeout: 120 * time.Second,
		},
		{
			Proto:   ProtoTCP,
			Client:  netip.MustParseAddrPort("198.51.100.7:41234"),
			VIP:     netip.MustParseAddrPort("203.0.113.10:443"),
			Backend: netip.MustParseAddrPort("10.0.2.11:443"),
			SNAT:    netip.MustParseAddrPort("10.0.9.1:30000"),
		},
	}
	for _, e := range cases {
		var r Record
		if err := e.Encode(&r); err != nil {
			t.Fatalf("encode %+v: %v", e, err)
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("validate: %v", err)
		}
		got, err := r.Decode()
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if got != e {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, e)
		}
		k, err := e.Key()
		if err != nil || k != r.Key() {
			t.Errorf("Key() = %x, %v; want %x", k, err, r.Key())
		}
		if r.VServerID() != e.VServerID || r.Proto() != e.Proto {
			t.Errorf("accessors: vs %d proto %d", r.VServerID(), r.Proto())
		}
	}
}

func TestRecordLayout(t *testing.T) {
	e := Entry{
		Proto:       ProtoTCP,
		Client:      netip.MustParseAddrPort("1.2.3.4:258"),
		VIP:         netip.MustParseAddrPort("5.6.7.8:80"),
		Backend:     netip.MustParseAddrPort("9.9.9.9:8080"),
		VServerID:   0x01020304,
		Created:     0x0a0b0c0d,
		IdleTimeout: 300 * time.Second,
	}
	var r Record
	if err := e.Encode(&r); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		off  int
		want []byte
	}{
		{0, []byte{4, 6, 1, 2, 0, 80, 1, 2, 3, 4, 0, 0}},
		{22, []byte{5, 6, 7, 8}},
		{38, []byte{0x1f, 0x90, 0, 0, 9, 9, 9, 9}},
		{76, []byte{1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d}},
		{88, []byte{0, 0, 1, 0x2c}},
	}
	for _, c := range checks {
		if got := r[c.off : c.off+len(c.want)]; string(got) != string(c.want) {
			t.Errorf("bytes at %d = %x, want %x", c.off, got, c.want)
		}
	}
}

func TestEncodeRefuses(t *testing.T) {
	good := testEntry(1)
	cases := map[string]func(e *Entry){
		"proto":          func(e *Entry) { e.Proto = 1 },
		"no client":      func(e *Entry) { e.Client = netip.AddrPort{} },
		"no backend":     func(e *Entry) { e.Backend = netip.AddrPort{} },
		"mixed family":   func(e *Entry) { e.VIP = netip.MustParseAddrPort("[2001:db8::1]:80") },
		"snat family":    func(e *Entry) { e.SNAT = netip.MustParseAddrPort("[2001:db8::1]:80") },
		"negative idle":  func(e *Entry) { e.IdleTimeout = -time.Second },
		"too large idle": func(e *Entry) { e.IdleTimeout = (1 << 33) * time.Second },
	}
	for name, mut := range cases {
		e := good
		mut(&e)
		var r Record
		if err := e.Encode(&r); !errors.Is(err, ErrInvalidEntry) {
			t.Errorf("%s: err = %v, want ErrInvalidEntry", name, err)
		}
	}
}

func TestValidateRefuses(t *testing.T) {
	var good Record
	e := testEntry(3)
	if err := e.Encode(&good); err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(r *Record){
		"family":       func(r *Record) { r[0] = 5 },
		"proto":        func(r *Record) { r[1] = 1 },
		"zero client":  func(r *Record) { copy(r[6:22], make([]byte, 16)) },
		"v4 padding":   func(r *Record) { r[12] = 1 },
		"zero backend": func(r *Record) { copy(r[42:58], make([]byte, 16)) },
		"snat padding": func(r *Record) { r[70] = 1 },
	}
	for name, mut := range cases {
		r := good
		mut(&r)
		if err := r.Validate(); !errors.Is(err, ErrInvalidRecord) {
			t.Errorf("%s: err = %v, want ErrInvalidRecord", name, err)
		}
		if _, err := r.Decode(); !errors.Is(err, ErrInvalidRecord) {
			t.Errorf("%s: decode err = %v, want ErrInvalidRecord", name, err)
		}
	}
	if s := good.Key().String(); s != "TCP 10.0.0.3:1027->203.0.113.10:80" {
		t.Errorf("key string %q", s)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	for i := range 3 {
		var r Record
		e := testEntry(i)
		if i == 2 {
			e.Client = netip.MustParseAddrPort("[2001:db8::7]:1")
			e.VIP = netip.MustParseAddrPort("[2001:db8::8]:2")
			e.Backend = netip.MustParseAddrPort("[2001:db8::9]:3")
		}
		if err := e.Encode(&r); err != nil {
			f.Fatal(err)
		}
		f.Add(r[:])
	}
	f.Add(make([]byte, RecordSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < RecordSize {
			return
		}
		r := Record(b[:RecordSize])
		e, err := r.Decode()
		if err != nil {
			return
		}
		// The accessors a data plane reads records with agree with Decode.
		fam := uint8(6)
		if e.Client.Addr().Is4() {
			fam = 4
		}
		cp, vp, bp, sp := r.Ports()
		ca, va, ba, sa := r.RawAddrs()
		raw := func(a netip.Addr) (w [16]byte) {
			if a.Is4() {
				b4 := a.As4()
				copy(w[:], b4[:])
				return w
			}
			if a.IsValid() {
				return a.As16()
			}
			return w
		}
		if r.Family() != fam || r.Proto() != e.Proto || r.Flags() != e.Flags || r.VServerID() != e.VServerID ||
			cp != e.Client.Port() || vp != e.VIP.Port() || bp != e.Backend.Port() || sp != e.SNAT.Port() ||
			ca != raw(e.Client.Addr()) || va != raw(e.VIP.Addr()) || ba != raw(e.Backend.Addr()) || sa != raw(e.SNAT.Addr()) ||
			r.HasSNAT() != e.SNAT.IsValid() {
			t.Fatalf("accessors of %x disagree with Decode %+v", r, e)
		}
		// What decodes re-encodes to the same bytes.
		var back Record
		if err := e.Encode(&back); err != nil {
			t.Fatalf("decoded %+v does not encode: %v", e, err)
		}
		if back != r {
			t.Fatalf("re-encoded record differs:\n%x\n%x", back, r)
		}
	})
}

func BenchmarkRecordEncode(b *testing.B) {
	e := testEntry(42)
	var r Record
	b.ReportAllocs()
	for b.Loop() {
		if err := e.Encode(&r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRecordDecode(b *testing.B) {
	e := testEntry(42)
	var r Record
	if err := e.Encode(&r); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Decode(); err != nil {
			b.Fatal(err)
		}
	}
}
