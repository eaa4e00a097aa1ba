package flow

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/tandem-lb/tandem/flow/standby"
)

// BenchmarkTakeover measures a takeover into the real BPF flow table: the
// partner's mirrored flows are in a standby store; Store.Takeover decodes
// them and installs them in batches (Datapath.InstallFlows: one BPF batch
// update of the flow table and one of the reply entries per batch). The
// store is filled outside the measured time. Target: 1,000,000 flows in
// under a second.
func BenchmarkTakeover(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("flows=%d", n), func(b *testing.B) {
			e := newEnv(b, Config{MaxVServers: 16, FlowTableSize: 1 << 21})
			d := e.dp
			e.must(d.SetBackend(Backend{ID: 1, Addr: ip("10.1.0.10"), Port: 9090}))
			e.must(d.SetBackend(Backend{ID: 2, Addr: ip("10.1.0.11"), Port: 9090}))
			e.must(d.SetVServer(VServer{ID: 1, VIP: ip("10.100.0.7"), Port: 80, Protocol: ProtoTCP, Method: MethodRoundRobin, Owned: true, Mirror: true}))
			recs := make([]standby.Record, n)
			for i := range recs {
				en := standby.Entry{
					Proto:     standby.ProtoTCP,
					Client:    netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), uint16(1024+i%60000)),
					VIP:       ap("10.100.0.7:80"),
					Backend:   ap("10.1.0.10:9090"),
					VServerID: 1,
					Flags:     FlowFlagOwned | FlowFlagMirror,
					Created:   uint32(time.Now().Unix()),
					LastSeen:  uint32(time.Now().Unix()),
				}
				if i%2 == 1 {
					en.Backend = ap("10.1.0.11:9090")
				}
				if err := en.Encode(&recs[i]); err != nil {
					b.Fatal(err)
				}
			}
			var total time.Duration
			installed := 0
			b.ResetTimer()
			for it := 0; it < b.N; it++ {
				b.StopTimer()
				st, err := standby.New(standby.Config{FlowLimit: int64(n)})
				if err != nil {
					b.Fatal(err)
				}
				for i := 0; i < n; i += 4096 {
					if _, err := st.Upsert("partner", recs[i:min(n, i+4096)]); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				start := time.Now()
				inst := &Installer{D: d, Owner: 1}
				got, err := st.Takeover("partner", inst)
				total += time.Since(start)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				installed = got
				st.Close()
				// A takeover writes flows the table does not hold: empty it
				// before the next round (overwriting costs the LRU twice
				// as much as inserting).
				if it < b.N-1 {
					clearFlows(b, d)
				}
				b.StartTimer()
			}
			b.StopTimer()
			if installed < n*99/100 {
				b.Fatalf("installed %d of %d flows", installed, n)
			}
			// the installed flows are in the BPF table, with their backend
			inTable := 0
			e.must(d.OwnedFlows(func(en standby.Entry) bool {
				a := en.Client.Addr().As4()
				i := int(a[1])<<16 | int(a[2])<<8 | int(a[3])
				if want := uint16(9090); en.Backend.Port() == want && (en.Backend.Addr() == ip("10.1.0.11")) == (i%2 == 1) {
					inTable++
				}
				return true
			}))
			if inTable < installed {
				b.Fatalf("%d flows installed, %d in the BPF table with their backend", installed, inTable)
			}
			per := total / time.Duration(b.N)
			b.ReportMetric(per.Seconds(), "s/takeover")
			b.ReportMetric(float64(installed)/per.Seconds(), "flows/s")
			b.ReportMetric(float64(installed), "installed")
		})
	}
}

// clearFlows deletes every entry of the flow table, in batches.
func clearFlows(b *testing.B, d *Datapath) {
	b.Helper()
	var (
		k    lbFlowKey
		v    lbFlow
		keys []lbFlowKey
	)
	it := d.objs.Flows.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, k)
	}
	if err := it.Err(); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < len(keys); i += 65536 {
		if _, err := d.objs.Flows.BatchDelete(keys[i:min(len(keys), i+65536)], nil); err != nil {
			b.Fatal(err)
		}
	}
}
