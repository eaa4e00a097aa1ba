package traffic

import (
	"testing"
)

func BenchmarkAppendRecord(b *testing.B) {
	payload := make([]byte, 512)
	FillPayload(payload, 1, 1, 1)
	buf := make([]byte, 0, MaxRecordLen)
	r := Record{Kind: KindReply, Flow: 1, Seq: 1, Name: "b1", Payload: payload}
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		buf, _ = AppendRecord(buf[:0], r)
	}
}

func BenchmarkParseRecord(b *testing.B) {
	payload := make([]byte, 512)
	FillPayload(payload, 1, 1, 1)
	rec, _ := AppendRecord(nil, Record{Kind: KindReply, Flow: 1, Seq: 1, Name: "b1", Payload: payload})
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		if _, _, err := ParseRecord(rec); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFillPayload measures regenerating a request's payload, which
// every round trip does once to send and once to check.
func BenchmarkFillPayload(b *testing.B) {
	p := make([]byte, 512)
	b.SetBytes(int64(len(p)))
	seq := uint32(0)
	for b.Loop() {
		seq++
		FillPayload(p, 1, 1, seq)
	}
}
