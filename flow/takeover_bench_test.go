package flow

import (
	"fmt"
	"github.com/cilium/ebpf"
	"net/netip"
	"testing"
	"time"

	"github.com/tandem-lb/tandem/flow/standby"
)

// BenchmarkTakeover measures a takeover into the real BPF flow table, as a
// node runs it: the partner's mirrored flows are in a standby store;
// Store.Takeover walks it and hands the records to the node's installer
// (Installer, with the cluster-to-data-plane vserver id map the node
// passes), which converts them in place and writes them with one BPF batch
// update per map, batch and writer. The store is filled, and the flow
// table emptied, outside the measured time.
//
// The backends are bound services of the vserver (their reverse entries
// exist, as on a node), so a USIP ON flow needs no reply entry of its own;
// usip=off flows are source-NATed to the pair's SNIP and each needs one,
// twice the kernel's work. Target: 1,000,000 flows in under a second.
func BenchmarkTakeover(b *testing.B) {
	for _, bc := range []struct {
		flows int
		snat  bool
	}{{100_000, false}, {1_000_000, false}, {1_000_000, true}} {
		name := fmt.Sprintf("flows=%d", bc.flows)
		if bc.snat {
			name += "/usip=off"
		}
		b.Run(name, func(b *testing.B) {
			n := bc.flows
			e := newEnv(b, Config{MaxVServers: 16, FlowTableSize: 1 << 21})
			d := e.dp
			// 16 backends, bound services of the vserver: a SNIP has 64,000
			// ports toward each, so a million source-NATed flows need 16
			e.must(d.SetVServer(VServer{ID: 1, VIP: ip("10.100.0.7"), Port: 80, Protocol: ProtoTCP, Method: MethodRoundRobin, Owned: true, Mirror: true}))
			const nbe = 16
			be := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 1, 0, byte(10 + i%nbe)}) }
			for i := range nbe {
				e.must(d.SetBackend(Backend{ID: uint32(i + 1), Addr: be(i), Port: 9090}))
				e.must(d.SetReverse(Reverse{Addr: be(i), Port: 9090, Protocol: ProtoTCP, VServerID: 1, BackendID: uint32(i + 1), Stateful: true}))
			}
			recs := make([]standby.Record, n)
			for i := range recs {
				en := standby.Entry{
					Proto:     standby.ProtoTCP,
					Client:    netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), uint16(1024+i%60000)),
					VIP:       ap("10.100.0.7:80"),
					Backend:   netip.AddrPortFrom(be(i), 9090),
					VServerID: 7, // the cluster's id; the installer maps it
					Flags:     FlowFlagOwned | FlowFlagMirror,
					Created:   uint32(time.Now().Unix()),
					LastSeen:  uint32(time.Now().Unix()),
				}
				if bc.snat {
					en.SNAT = netip.AddrPortFrom(ip("10.0.9.1"), uint16(1024+i/nbe%64000))
				}
				if err := en.Encode(&recs[i]); err != nil {
					b.Fatal(err)
				}
			}
			ids := map[uint32]uint32{7: 1}
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
				inst := &Installer{D: d, Owner: 1, IDs: ids}
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
			// (and their SNAT address), and the reply entries that need one
			inTable := 0
			e.must(d.OwnedFlows(func(en standby.Entry) bool {
				a := en.Client.Addr().As4()
				i := int(a[1])<<16 | int(a[2])<<8 | int(a[3])
				if en.Backend == netip.AddrPortFrom(be(i), 9090) &&
					en.VServerID == 1 && en.SNAT.IsValid() == bc.snat {
					inTable++
				}
				return true
			}))
			if inTable < installed {
				b.Fatalf("%d flows installed, %d in the BPF table with their backend", installed, inTable)
			}
			replies := 0
			var (
				rk lbFlowKey
				rv lbRflow
			)
			for it := d.objs.Rflows.Iterate(); it.Next(&rk, &rv); {
				replies++
			}
			if want := map[bool]int{false: 0, true: installed}[bc.snat]; replies != want {
				b.Fatalf("%d reply entries, want %d", replies, want)
			}
			per := total / time.Duration(b.N)
			b.ReportMetric(per.Seconds(), "s/takeover")
			b.ReportMetric(float64(installed)/per.Seconds(), "flows/s")
			b.ReportMetric(float64(installed), "installed")
		})
	}
}

// clearFlows deletes every entry of the flow table and of the reply
// entries, in batches.
func clearFlows(b *testing.B, d *Datapath) {
	b.Helper()
	for _, m := range []*ebpf.Map{d.objs.Flows, d.objs.Rflows} {
		var (
			k    lbFlowKey
			v    = make([]byte, m.ValueSize())
			keys []lbFlowKey
		)
		it := m.Iterate()
		for it.Next(&k, &v) {
			keys = append(keys, k)
		}
		if err := it.Err(); err != nil {
			b.Fatal(err)
		}
		for i := 0; i < len(keys); i += 65536 {
			if _, err := m.BatchDelete(keys[i:min(len(keys), i+65536)], nil); err != nil {
				b.Fatal(err)
			}
		}
	}
}
