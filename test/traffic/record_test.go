package traffic

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestRecordRoundTrip(t *testing.T) {
	payload := make([]byte, 300)
	FillPayload(payload, 7, 3, 9)
	for _, r := range []Record{
		{Kind: KindHello, Name: "b1"},
		{Kind: KindRequest, Flow: 3, Seq: 9, Payload: payload},
		{Kind: KindReply, Flow: 1 << 31, Seq: 1<<32 - 1, Name: "backend-with-a-longer-name", Payload: payload[:1]},
		{Kind: KindCorrupt, Name: "x"},
	} {
		b, err := AppendRecord([]byte("prefix"), r)
		if err != nil {
			t.Fatalf("append %+v: %v", r, err)
		}
		b = b[len("prefix"):]
		got, n, err := ParseRecord(append(b, "trailing"...))
		if err != nil {
			t.Fatalf("parse %v: %v", r.Kind, err)
		}
		if n != len(b) {
			t.Errorf("%v: parsed %d bytes, record is %d", r.Kind, n, len(b))
		}
		if got.Kind != r.Kind || got.Flow != r.Flow || got.Seq != r.Seq || got.Name != r.Name || !bytes.Equal(got.Payload, r.Payload) {
			t.Errorf("round trip: got %+v, want %+v", got, r)
		}
		// The streaming reader gives the same record.
		br := bufio.NewReader(bytes.NewReader(b))
		got, err = ReadRecord(br, make([]byte, MaxRecordLen))
		if err != nil || got.Seq != r.Seq || !bytes.Equal(got.Payload, r.Payload) {
			t.Errorf("ReadRecord %v: %+v, %v", r.Kind, got, err)
		}
	}
}

func TestRecordDetectsEveryFlippedByte(t *testing.T) {
	payload := make([]byte, 64)
	FillPayload(payload, 1, 2, 3)
	b, err := AppendRecord(nil, Record{Kind: KindReply, Flow: 2, Seq: 3, Name: "b2", Payload: payload})
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		for _, bit := range []byte{0x01, 0x80} {
			c := bytes.Clone(b)
			c[i] ^= bit
			_, _, err := ParseRecord(c)
			if err == nil {
				t.Fatalf("flipping bit %#x of byte %d went unnoticed", bit, i)
			}
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrShort) {
				t.Fatalf("byte %d: error %v is none of the sentinels", i, err)
			}
		}
	}
}

func TestRecordShortAndTruncated(t *testing.T) {
	b, _ := AppendRecord(nil, Record{Kind: KindRequest, Flow: 1, Seq: 1, Payload: []byte("hello")})
	for i := range len(b) {
		if _, _, err := ParseRecord(b[:i]); !errors.Is(err, ErrShort) {
			t.Fatalf("prefix of %d bytes: %v, want ErrShort", i, err)
		}
	}
	br := bufio.NewReader(bytes.NewReader(b[:len(b)-1]))
	if _, err := ReadRecord(br, make([]byte, MaxRecordLen)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated stream: %v, want unexpected EOF", err)
	}
}

func TestAppendRecordRefusesOversize(t *testing.T) {
	if _, err := AppendRecord(nil, Record{Kind: KindReply, Name: string(make([]byte, MaxName+1))}); !errors.Is(err, ErrMalformed) {
		t.Errorf("long name: %v", err)
	}
	if _, err := AppendRecord(nil, Record{Kind: KindRequest, Payload: make([]byte, MaxPayload+1)}); !errors.Is(err, ErrMalformed) {
		t.Errorf("long payload: %v", err)
	}
	if _, err := AppendRecord(nil, Record{Kind: 9}); !errors.Is(err, ErrMalformed) {
		t.Errorf("bad kind: %v", err)
	}
}

func TestPayloadDeterministic(t *testing.T) {
	a, b := make([]byte, 100), make([]byte, 100)
	FillPayload(a, 5, 1, 1)
	FillPayload(b, 5, 1, 1)
	if !bytes.Equal(a, b) {
		t.Fatal("same (seed, flow, seq) gave different payloads")
	}
	FillPayload(b, 5, 1, 2)
	if bytes.Equal(a, b) {
		t.Fatal("different seq gave the same payload")
	}
	seen := map[int]bool{}
	for seq := range uint32(200) {
		n := PayloadLen(1, 1, seq, 512)
		if n < 1 || n > 512 {
			t.Fatalf("payload length %d out of 1..512", n)
		}
		seen[n] = true
	}
	if len(seen) < 50 {
		t.Errorf("only %d distinct payload lengths in 200 requests", len(seen))
	}
}

func FuzzParseRecord(f *testing.F) {
	for _, r := range []Record{
		{Kind: KindHello, Name: "b1"},
		{Kind: KindRequest, Flow: 1, Seq: 1, Payload: []byte("abc")},
		{Kind: KindReply, Flow: 9, Seq: 4, Name: "n3", Payload: bytes.Repeat([]byte{0xff}, 100)},
	} {
		b, _ := AppendRecord(nil, r)
		f.Add(b)
	}
	f.Add([]byte("TL"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, n, err := ParseRecord(b)
		if err != nil {
			return
		}
		if n < MinRecordLen || n > len(b) || n > MaxRecordLen {
			t.Fatalf("parsed length %d of %d bytes", n, len(b))
		}
		// A parsed record re-encodes to the same bytes.
		again, err := AppendRecord(nil, r)
		if err != nil {
			t.Fatalf("re-encoding a parsed record: %v", err)
		}
		if !bytes.Equal(again, b[:n]) {
			t.Fatalf("re-encoding differs:\n%x\n%x", again, b[:n])
		}
		br := bufio.NewReader(bytes.NewReader(b))
		if _, err := ReadRecord(br, make([]byte, MaxRecordLen)); err != nil {
			t.Fatalf("ReadRecord failed where ParseRecord succeeded: %v", err)
		}
	})
}
