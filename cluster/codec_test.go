package cluster

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func sampleMessages(t testing.TB) []Message {
	s, err := NewStore(StoreConfig{Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(c *Config) error { *c = goodConfig(); return nil }); err != nil {
		t.Fatal(err)
	}
	_ = s.Update(func(c *Config) error { return c.RemoveBinding("ftp", "ftp1") })
	health := []HealthReport{{Node: "n1", Results: []ProbeResult{{Service: "web1", Up: true, Seq: 3}, {Service: "web2", Seq: 1}}}}
	return []Message{
		{Type: MsgDelta, From: "n1", Entries: s.Entries()[:2]},
		{Type: MsgState, From: "n1", Entries: s.Entries(), Health: health},
		{Type: MsgState, From: "n1"},
		{Type: MsgHealth, From: "n1", Health: health},
		{Type: MsgDead, From: "n1", Dead: "n2"},
		{Type: MsgLeave, From: "n1"},
	}
}

func TestMessageRoundTrip(t *testing.T) {
	for _, m := range sampleMessages(t) {
		b, err := m.Encode()
		if err != nil {
			t.Fatalf("%s: %v", m.Type, err)
		}
		got, err := DecodeMessage(b)
		if err != nil {
			t.Fatalf("%s: %v", m.Type, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("%s: round trip\n got %+v\nwant %+v", m.Type, got, m)
		}
	}
}

func TestMessageRejects(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":             nil,
		"no magic":          []byte("X\x01\x01{}"),
		"version":           []byte("T\x02\x01{}"),
		"type":              []byte("T\x01\x09{\"from\":\"n1\"}"),
		"body":              []byte("T\x01\x01{"),
		"no sender":         []byte("T\x01\x01{\"entries\":[]}"),
		"empty delta":       []byte("T\x01\x01{\"from\":\"n1\"}"),
		"bad entry":         []byte(`T` + "\x01\x01" + `{"from":"n1","entries":[{"kind":"service","key":"a","version":{"clock":1,"node":"n1"}}]}`),
		"health of another": []byte(`T` + "\x01\x03" + `{"from":"n1","health":[{"node":"n2","results":[]}]}`),
		"unsorted health":   []byte(`T` + "\x01\x03" + `{"from":"n1","health":[{"node":"n1","results":[{"service":"b"},{"service":"a"}]}]}`),
		"meta as message":   []byte("T\x01M{\"id\":\"n1\"}"),
	} {
		if _, err := DecodeMessage(b); !errors.Is(err, ErrBadMessage) {
			t.Errorf("%s: want ErrBadMessage, got %v", name, err)
		}
	}
}

func TestMetaRoundTrip(t *testing.T) {
	m := MemberMeta{ID: "n1", Pair: 7, Backplane: netip.MustParseAddrPort("[2001:db8::1]:7946"), Proto: 1,
		Digest: strings.Repeat("ab", 32), Drained: true}
	b, err := EncodeMeta(m)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > MaxMetaSize {
		t.Fatalf("%d bytes", len(b))
	}
	got, err := DecodeMeta(b)
	if err != nil || got != m {
		t.Fatalf("got %+v, %v", got, err)
	}
	if _, err := EncodeMeta(MemberMeta{ID: strings.Repeat("a", 127), Digest: "xyz"}); err == nil {
		t.Error("bad digest encoded")
	}
	if _, err := DecodeMeta([]byte("T\x01\x01{\"from\":\"n1\",\"dead\":\"n2\"}")); !errors.Is(err, ErrBadMessage) {
		t.Errorf("message accepted as metadata: %v", err)
	}
}

func FuzzDecodeMessage(f *testing.F) {
	for _, m := range sampleMessages(f) {
		b, err := m.Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("T\x01\x01null"))
	f.Add([]byte("T\x01\x02{\"from\":\"a\",\"entries\":[null]}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMessage(b)
		if err != nil {
			if !errors.Is(err, ErrBadMessage) {
				t.Fatalf("error does not match ErrBadMessage: %v", err)
			}
			return
		}
		// Whatever decodes re-encodes, decodes to the same thing, and
		// merges into a store without error.
		b2, err := m.Encode()
		if err != nil {
			t.Fatalf("decoded message does not encode: %v", err)
		}
		m2, err := DecodeMessage(b2)
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("re-decode: %v\n%+v\n%+v", err, m, m2)
		}
		s, _ := NewStore(StoreConfig{Node: "fuzz"})
		if _, err := s.Merge(m.Entries); err != nil {
			t.Fatalf("valid message does not merge: %v", err)
		}
		_ = s.Problems()
	})
}

func FuzzDecodeMeta(f *testing.F) {
	b, _ := EncodeMeta(MemberMeta{ID: "n1", Pair: 1, Proto: 1, Digest: strings.Repeat("0", 64)})
	f.Add(b)
	f.Add([]byte("T\x01M{\"id\":\"n1\",\"bp\":\"1.2.3.4:5\"}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMeta(b)
		if err != nil {
			if !errors.Is(err, ErrBadMessage) {
				t.Fatalf("error does not match ErrBadMessage: %v", err)
			}
			return
		}
		if _, err := EncodeMeta(m); err != nil && len(b) <= MaxMetaSize {
			t.Fatalf("decoded metadata does not encode: %v", err)
		}
	})
}
