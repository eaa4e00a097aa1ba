package mirror

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"io"
	"testing"

	"github.com/tandem-lb/tandem/flow/standby"
)

// The hot path — queueing a flow, framing a batch with its tag, reading and
// authenticating it, decoding its records — allocates nothing per entry
// once its buffers have grown.
func TestHotPathAllocs(t *testing.T) {
	key := []byte("frame key, 32 bytes, for a test.")
	send := &conn{bw: bufio.NewWriterSize(io.Discard, 1<<20), sendMAC: hmac.New(sha256.New, key)}
	recs := make([]standby.Record, 1024)
	for i := range recs {
		recs[i] = testRecord(t, i)
	}
	var w BatchWriter
	buf := make([]byte, 0, 128<<10)
	if n := testing.AllocsPerRun(50, func() {
		buf = w.Begin(buf[:0], FrameUpserts, 1)
		for i := range recs {
			buf = w.AddRecord(buf, &recs[i])
		}
		buf = w.Finish(buf)
		if err := send.writeFrame(buf); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("framing and tagging a batch: %v allocations", n)
	}

	// A tagged stream of 50 frames, read back.
	var stream bytes.Buffer
	out := &conn{bw: bufio.NewWriter(&stream), sendMAC: hmac.New(sha256.New, key)}
	for range 51 {
		frame := w.Begin(nil, FrameUpserts, 1)
		for i := range recs {
			frame = w.AddRecord(frame, &recs[i])
		}
		out.writeFrame(w.Finish(frame))
	}
	out.bw.Flush()
	in := &conn{br: bufio.NewReaderSize(bytes.NewReader(stream.Bytes()), 1<<20), recvMAC: hmac.New(sha256.New, key)}
	in.peer.authenticated = true
	got := make([]standby.Record, 0, 1024)
	read := func() {
		typ, p, err := in.readFrame()
		if err != nil || typ != FrameUpserts {
			t.Fatal(typ, err)
		}
		if _, got, err = DecodeUpserts(p, got); err != nil || len(got) != 1024 {
			t.Fatal(len(got), err)
		}
	}
	read() // grows the read buffer
	if n := testing.AllocsPerRun(49, read); n != 0 {
		t.Errorf("reading, authenticating and decoding a batch: %v allocations", n)
	}

	// Queueing flows on a sender.
	s, err := NewSender(SenderConfig{Self: "n1", Partner: "n2", Addr: "127.0.0.1:1", Auth: Auth{PSK: testKey}, Source: &sliceSource{}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	e := testEntry(1)
	for range 4096 {
		s.Upsert(e)
	}
	q, _, _ := s.take()
	s.giveBack(q)
	if n := testing.AllocsPerRun(4000, func() { s.Upsert(e) }); n != 0 {
		t.Errorf("Sender.Upsert: %v allocations per flow", n)
	}
}
