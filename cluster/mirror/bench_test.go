package mirror

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandem-lb/tandem/flow/standby"
)

// sliceSource serves a fixed set of flows.
type sliceSource struct{ flows []standby.Entry }

func (s *sliceSource) Snapshot(fn func(standby.Entry) bool) {
	for _, e := range s.flows {
		if !fn(e) {
			return
		}
	}
}

func entries(n int) []standby.Entry {
	out := make([]standby.Entry, n)
	for i := range out {
		out[i] = testEntry(i)
	}
	return out
}

// indexOf recovers testEntry's i from a record (the client address).
func indexOf(r *standby.Record) int {
	return int(binary.BigEndian.Uint32(r[6:10]) & 0xffffff)
}

// storeSink is the real standby store, with a hook after each batch.
type storeSink struct {
	*standby.Store
	after func(recs []standby.Record)
}

func (s storeSink) Upsert(owner string, recs []standby.Record) (int, error) {
	n, err := s.Store.Upsert(owner, recs)
	if s.after != nil {
		s.after(recs)
	}
	return n, err
}

type benchLink struct {
	send    *Sender
	store   *standby.Store
	synced  chan uint64
	applied atomic.Int64
	stop    func()
}

// startBenchLink runs a receiver into a real standby store and a sender
// over loopback TCP with PSK authentication and per-frame tags.
func startBenchLink(b *testing.B, src Source, flowLimit int64, after func([]standby.Record)) *benchLink {
	b.Helper()
	st, err := standby.New(standby.Config{FlowLimit: flowLimit})
	if err != nil {
		b.Fatal(err)
	}
	bl := &benchLink{store: st, synced: make(chan uint64, 16)}
	sink := storeSink{Store: st, after: func(recs []standby.Record) {
		bl.applied.Add(int64(len(recs)))
		if after != nil {
			after(recs)
		}
	}}
	r, err := NewReceiver(ReceiverConfig{
		Self: "n2", Pair: 1, Partner: "n1", Auth: Auth{PSK: testKey}, Sink: sink, Logger: quietLogger(),
		HeartbeatTimeout: 5 * time.Second,
		OnEvent: func(ev LinkEvent) {
			if ev.Kind == LinkEventSynced {
				bl.synced <- ev.Gen
			}
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	s, err := NewSender(SenderConfig{Self: "n1", Pair: 1, Partner: "n2", Addr: addr, Auth: Auth{PSK: testKey}, Source: src, Logger: quietLogger(), HeartbeatTimeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	bl.send = s
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	wg.Add(1)
	go func() { defer wg.Done(); r.Serve(ctx, ln) }()
	go func() { defer wg.Done(); s.Run(ctx) }()
	bl.stop = func() { cancel(); wg.Wait(); st.Close() }
	b.Cleanup(bl.stop)
	return bl
}

// BenchmarkBulkSync: a sender bulk-syncs n flows to a receiver that stores
// them in a standby store; timed from the sender's start to the receiver
// having applied the whole generation.
func BenchmarkBulkSync(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("flows=%d", n), func(b *testing.B) {
			src := &sliceSource{flows: entries(n)}
			var total time.Duration
			for b.Loop() {
				start := time.Now()
				bl := startBenchLink(b, src, int64(n), nil)
				select {
				case <-bl.synced:
				case <-time.After(60 * time.Second):
					b.Fatal("bulk sync did not complete")
				}
				total += time.Since(start)
				b.StopTimer()
				if st := bl.send.Status(); st.Connections != 1 {
					b.Logf("sync needed %d connections: %+v", st.Connections, st)
				}
				if got := bl.store.Owners()["n1"]; got != n {
					b.Fatalf("store holds %d flows of %d", got, n)
				}
				bl.stop()
				b.StartTimer()
			}
			b.ReportMetric(total.Seconds()/float64(b.N), "s/sync")
			b.ReportMetric(float64(n)*float64(b.N)/total.Seconds(), "flows/s")
		})
	}
}

// BenchmarkIncremental: new flows (at least 200,000, so a figure means
// something at -benchtime 1x) are queued as fast as the caller can, after
// the bulk sync; timed until the receiver applied all of them. Beyond 2^20
// flows the keys repeat, and later upserts update entries.
func BenchmarkIncremental(b *testing.B) {
	bl := startBenchLink(b, &sliceSource{}, 4_000_000, nil)
	<-bl.synced
	es := entries(1 << 20)
	total := max(b.N, 200_000)
	b.ResetTimer()
	start := time.Now()
	for i := range total {
		bl.send.Upsert(es[i&(1<<20-1)])
	}
	for bl.applied.Load() < int64(total) {
		time.Sleep(100 * time.Microsecond)
	}
	el := time.Since(start)
	b.ReportMetric(float64(total)/el.Seconds(), "flows/s")
}

// BenchmarkLag: new flows arrive at a steady rate (paced every
// millisecond); each flow's lag is measured from its enqueue to the
// receiver having stored it. Reports p50, p99 and max in microseconds.
func BenchmarkLag(b *testing.B) {
	for _, rate := range []int{50_000, 200_000} {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) {
			const n = 1 << 20
			enq := make([]int64, n)
			lags := make([]int64, 0, n)
			var mu sync.Mutex
			base := time.Now()
			bl := startBenchLink(b, &sliceSource{}, 4_000_000, func(recs []standby.Record) {
				now := time.Since(base).Nanoseconds()
				mu.Lock()
				for i := range recs {
					lags = append(lags, now-atomic.LoadInt64(&enq[indexOf(&recs[i])]))
				}
				mu.Unlock()
			})
			<-bl.synced
			es := entries(n)
			total := max(b.N, rate/2) // at least half a second of traffic
			perTick := rate / 1000
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			b.ResetTimer()
			sent := 0
			next := time.Now()
			for sent < total {
				// Catch up on missed ticks so the average rate holds.
				next = next.Add(time.Millisecond)
				for i := 0; i < perTick && sent < total; i++ {
					k := sent % n
					atomic.StoreInt64(&enq[k], time.Since(base).Nanoseconds())
					bl.send.Upsert(es[k])
					sent++
				}
				if d := time.Until(next); d > 0 {
					time.Sleep(d)
				}
			}
			deadline := time.Now().Add(30 * time.Second)
			for bl.applied.Load() < int64(total) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			mu.Lock()
			defer mu.Unlock()
			if len(lags) < total {
				b.Fatalf("%d of %d flows applied", len(lags), total)
			}
			slices.Sort(lags)
			q := func(p float64) float64 { return float64(lags[int(p*float64(len(lags)-1))]) / 1e3 }
			b.ReportMetric(q(0.5), "p50-µs")
			b.ReportMetric(q(0.99), "p99-µs")
			b.ReportMetric(q(1), "max-µs")
			b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "flows/s")
		})
	}
}
