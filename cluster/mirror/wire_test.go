package mirror

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/netip"
	"testing"

	"github.com/tandem-lb/tandem/flow/standby"
)

func testEntry(i int) standby.Entry {
	return standby.Entry{
		Proto:     standby.ProtoTCP,
		Client:    netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), uint16(1024+i%60000)),
		VIP:       netip.MustParseAddrPort("203.0.113.10:80"),
		Backend:   netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(1 + i%200)}), 8080),
		VServerID: uint32(1 + i%4),
		Created:   1_790_000_000,
		LastSeen:  1_790_000_000,
	}
}

func testRecord(t testing.TB, i int) standby.Record {
	t.Helper()
	var r standby.Record
	e := testEntry(i)
	if err := e.Encode(&r); err != nil {
		t.Fatal(err)
	}
	return r
}

// sampleStream is one frame of every type, as a connection carries them.
func sampleStream(t testing.TB) []byte {
	var b []byte
	h := Hello{Version: Version, Auth: AuthPSK, Pair: 7, NodeID: "n1"}
	h.Nonce[3] = 9
	b = AppendHello(b, &h)
	b = AppendAuth(b, bytes.Repeat([]byte{0xaa}, tagSize))
	b = AppendBulkBegin(b, 3)
	var w BatchWriter
	b = w.Begin(b, FrameUpserts, 1)
	for i := range 3 {
		r := testRecord(t, i)
		b = w.AddRecord(b, &r)
	}
	b = w.Finish(b)
	b = w.Begin(b, FrameDeletes, 2)
	r := testRecord(t, 1)
	k := r.Key()
	b = w.AddKey(b, &k)
	b = w.Finish(b)
	b = AppendBulkEnd(b, 3, 3)
	b = AppendAck(b, Ack{Seq: 2, Applied: 4, Synced: 3})
	b = AppendHeartbeat(b, 12345)
	b = AppendRefuse(b, &Refuse{Code: RefuseVersion, Version: 2, Reason: "speaks version 2"})
	return b
}

// decodeAny decodes one frame of any type, as the two ends do.
func decodeAny(t FrameType, p []byte, recs []standby.Record, keys []standby.Key) (any, error) {
	switch t {
	case FrameHello:
		return DecodeHello(p)
	case FrameAuth:
		return DecodeAuth(p)
	case FrameRefuse:
		return DecodeRefuse(p)
	case FrameBulkBegin:
		return DecodeBulkBegin(p)
	case FrameBulkEnd:
		g, n, err := DecodeBulkEnd(p)
		return [2]uint64{g, n}, err
	case FrameUpserts:
		_, recs, err := DecodeUpserts(p, recs)
		return len(recs), err
	case FrameDeletes:
		_, keys, err := DecodeDeletes(p, keys)
		return len(keys), err
	case FrameAck:
		return DecodeAck(p)
	case FrameHeartbeat:
		return DecodeHeartbeat(p)
	}
	return nil, ErrMalformed
}

func TestFramesRoundTrip(t *testing.T) {
	b := sampleStream(t)
	want := []any{
		nil, // hello checked below
		bytes.Repeat([]byte{0xaa}, tagSize),
		uint64(3),
		3,
		1,
		[2]uint64{3, 3},
		Ack{Seq: 2, Applied: 4, Synced: 3},
		int64(12345),
		Refuse{Code: RefuseVersion, Version: 2, Reason: "speaks version 2"},
	}
	br := bufio.NewReader(bytes.NewReader(b))
	var buf []byte
	for i, w := range want {
		typ, p, raw, err := ReadFrame(br, buf)
		buf = raw
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		got, err := decodeAny(typ, p, nil, nil)
		if err != nil {
			t.Fatalf("frame %d (%v): %v", i, typ, err)
		}
		if i == 0 {
			h := got.(Hello)
			if h.Version != Version || h.Auth != AuthPSK || h.Pair != 7 || h.NodeID != "n1" || h.Nonce[3] != 9 {
				t.Errorf("hello = %+v", h)
			}
			continue
		}
		switch w := w.(type) {
		case []byte:
			if !bytes.Equal(got.([]byte), w) {
				t.Errorf("frame %d = %x", i, got)
			}
		default:
			if got != w {
				t.Errorf("frame %d (%v) = %+v, want %+v", i, typ, got, w)
			}
		}
	}
	if _, _, _, err := ReadFrame(br, buf); !errors.Is(err, io.EOF) {
		t.Errorf("after the last frame: %v", err)
	}
	// SplitFrame parses the same stream from memory.
	n := 0
	for rest := b; len(rest) > 0; n++ {
		var err error
		if _, _, rest, err = SplitFrame(rest); err != nil {
			t.Fatal(err)
		}
	}
	if n != len(want) {
		t.Errorf("SplitFrame found %d frames", n)
	}
}

func TestUpsertsRecordsSurvive(t *testing.T) {
	var w BatchWriter
	b := w.Begin(nil, FrameUpserts, 99)
	for i := range 5 {
		r := testRecord(t, i)
		b = w.AddRecord(b, &r)
	}
	b = w.Finish(b)
	typ, p, _, err := SplitFrame(b)
	if err != nil || typ != FrameUpserts {
		t.Fatal(typ, err)
	}
	seq, recs, err := DecodeUpserts(p, nil)
	if err != nil || seq != 99 || len(recs) != 5 {
		t.Fatalf("DecodeUpserts = %d, %d records, %v", seq, len(recs), err)
	}
	for i, r := range recs {
		e, err := r.Decode()
		if err != nil || e != testEntry(i) {
			t.Errorf("record %d = %+v, %v", i, e, err)
		}
	}
}

func TestDecodeRefusesGarbage(t *testing.T) {
	var w BatchWriter
	good := w.Begin(nil, FrameUpserts, 1)
	r := testRecord(t, 1)
	good = w.AddRecord(good, &r)
	good = w.Finish(good)
	_, goodPayload, _, _ := SplitFrame(good)

	badCount := bytes.Clone(goodPayload)
	badCount[11] = 2
	badRecord := bytes.Clone(goodPayload)
	badRecord[12] = 9 // family
	h := Hello{Version: Version, Auth: AuthPSK, NodeID: "n1"}
	_, hello, _, _ := SplitFrame(AppendHello(nil, &h))
	badMagic := bytes.Clone(hello)
	badMagic[0] = 'X'
	badAuth := bytes.Clone(hello)
	badAuth[6] = 9
	cases := []struct {
		name string
		t    FrameType
		p    []byte
		want error
	}{
		{"count", FrameUpserts, badCount, ErrMalformed},
		{"record", FrameUpserts, badRecord, standby.ErrInvalidRecord},
		{"short batch", FrameDeletes, []byte{1, 2}, ErrMalformed},
		{"magic", FrameHello, badMagic, ErrBadMagic},
		{"hello auth", FrameHello, badAuth, ErrMalformed},
		{"hello short", FrameHello, hello[:20], ErrMalformed},
		{"hello trailing", FrameHello, append(bytes.Clone(hello), 0), ErrMalformed},
		{"ack", FrameAck, make([]byte, 23), ErrMalformed},
		{"refuse", FrameRefuse, []byte{1, 0, 1, 5, 'a'}, ErrMalformed},
		{"auth", FrameAuth, make([]byte, 31), ErrMalformed},
	}
	for _, c := range cases {
		if _, err := decodeAny(c.t, c.p, nil, nil); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
	for _, b := range [][]byte{{0, 0, 0, 0, 1}, {0x7f, 0, 0, 0, 1}} {
		if _, _, _, err := ReadFrame(bufio.NewReader(bytes.NewReader(b)), nil); !errors.Is(err, ErrFrameTooLarge) {
			t.Errorf("length %x: %v", b[:4], err)
		}
	}
	if _, _, _, err := ReadFrame(bufio.NewReader(bytes.NewReader([]byte{0, 0, 0, 9, 1})), nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated frame: %v", err)
	}
}

func TestNewerHelloShowsItsVersion(t *testing.T) {
	// A future version may change everything after the version field.
	p := []byte(Magic + "\x00\x02whatever comes next")
	h, err := DecodeHello(p)
	if h.Version != 2 || err == nil {
		t.Errorf("DecodeHello = %+v, %v", h, err)
	}
	params := handshakeParams{self: "n2", pair: 1, auth: &Auth{PSK: make([]byte, 16)}}
	if code, err := params.checkHello(&h, err); code != RefuseVersion || !errors.Is(err, ErrVersionMismatch) {
		t.Errorf("checkHello = %v, %v", code, err)
	}
}

// FuzzDecodeFrame feeds arbitrary bytes to both frame readers and every
// payload decoder: they must never panic, must bound every length, and
// must reject what does not parse with an error.
func FuzzDecodeFrame(f *testing.F) {
	stream := sampleStream(f)
	f.Add(stream)
	for rest := stream; len(rest) > 0; {
		start := rest
		var err error
		_, _, rest, err = SplitFrame(rest)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(start[:len(start)-len(rest)])
	}
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 6})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var recs []standby.Record
		var keys []standby.Key
		br := bufio.NewReader(bytes.NewReader(b))
		var buf []byte
		for {
			typ, p, raw, err := ReadFrame(br, buf)
			buf = raw
			if err != nil {
				break
			}
			if len(raw) > MaxFrameSize {
				t.Fatalf("frame of %d bytes read", len(raw))
			}
			v, err := decodeAny(typ, p, recs, keys)
			if err == nil && typ == FrameUpserts {
				// What decodes validates, record by record.
				_, rs, _ := DecodeUpserts(p, nil)
				if len(rs) != v.(int) {
					t.Fatalf("decoded %d records, then %d", v, len(rs))
				}
				for _, r := range rs {
					if _, err := r.Decode(); err != nil {
						t.Fatalf("accepted record does not decode: %v", err)
					}
				}
			}
		}
		for rest := b; len(rest) > 0; {
			var err error
			if _, _, rest, err = SplitFrame(rest); err != nil {
				break
			}
		}
	})
}

func BenchmarkEncodeBatch(b *testing.B) {
	recs := make([]standby.Record, 1024)
	for i := range recs {
		recs[i] = testRecord(b, i)
	}
	var w BatchWriter
	buf := make([]byte, 0, 128<<10)
	b.ReportAllocs()
	for b.Loop() {
		buf = w.Begin(buf[:0], FrameUpserts, 1)
		for i := range recs {
			buf = w.AddRecord(buf, &recs[i])
		}
		buf = w.Finish(buf)
	}
	b.ReportMetric(float64(b.N*len(recs))/b.Elapsed().Seconds(), "records/s")
}

func BenchmarkDecodeBatch(b *testing.B) {
	var w BatchWriter
	buf := w.Begin(nil, FrameUpserts, 1)
	for i := range 1024 {
		r := testRecord(b, i)
		buf = w.AddRecord(buf, &r)
	}
	buf = w.Finish(buf)
	_, p, _, _ := SplitFrame(buf)
	recs := make([]standby.Record, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if _, recs, err = DecodeUpserts(p, recs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*1024)/b.Elapsed().Seconds(), "records/s")
}
