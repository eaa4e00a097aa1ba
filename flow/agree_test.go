package flow

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/tandem-lb/tandem/hashing"
)

// TestGoAndBPFAgree: for 10,000 random (client address, client port,
// vserver) inputs per IP version, the backend the Go side predicts (slot
// hashing.PacketHash % M of the table written) is the one the BPF program
// rewrites the destination to.
func TestGoAndBPFAgree(t *testing.T) {
	const perFamily = 10000
	e := newEnv(t, Config{TableSize: 4099, FlowTableSize: 1 << 16})
	rng := rand.New(rand.NewPCG(1, 2))
	// 16 backends per family, each a neighbour of the namespace.
	byAddr := make(map[netip.Addr]uint32)
	var ids4, ids6 []uint32
	for i := 0; i < 16; i++ {
		a4 := netip.AddrFrom4([4]byte{10, 1, 0, byte(20 + i)})
		a6 := netip.MustParseAddr(fmt.Sprintf("fd01::%x", 0x20+i))
		for j, a := range []netip.Addr{a4, a6} {
			dev := "tfa"
			if out, err := e.ns.Run("ip", "neigh", "add", a.String(), "lladdr", neighMAC(byte(0x20+i)).String(), "dev", dev, "nud", "permanent"); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			id := uint32(100 + 2*i + j)
			e.must(e.dp.SetBackend(Backend{ID: id, Addr: a, Port: uint16(9000 + i)}))
			byAddr[a] = id
			if j == 0 {
				ids4 = append(ids4, id)
			} else {
				ids6 = append(ids6, id)
			}
		}
	}
	type vsCase struct {
		vs  VServer
		ids []uint32
	}
	var vss []vsCase
	for i, c := range []struct {
		vip    string
		method Method
		ids    []uint32
	}{
		{"10.100.1.1", MethodSourceIPSourcePort, ids4},
		{"10.100.1.2", MethodSourceIP, ids4},
		{"fd64::1:1", MethodSourceIPSourcePort, ids6},
		{"fd64::1:2", MethodSourceIP, ids6},
	} {
		v := VServer{ID: uint32(i), VIP: ip(c.vip), Port: 80, Protocol: ProtoAny, Method: c.method, Seed: rng.Uint32(), Stateless: true}
		e.must(e.dp.SetVServer(v))
		vss = append(vss, vsCase{v, c.ids})
	}
	tables := make(map[uint32][]uint32)
	for _, c := range vss {
		// Weighted, so that backends own unequal shares.
		var bs []hashing.Backend
		key := make(map[string]uint32)
		for k, id := range c.ids {
			name := fmt.Sprintf("be-%d", id)
			bs = append(bs, hashing.Backend{Key: name, Weight: uint32(1 + k%3)})
			key[name] = id
		}
		idx, err := hashing.BuildMaglev(bs, uint64(e.dp.Config().TableSize))
		e.must(err)
		sorted := hashing.SortBackends(bs)
		slots := make([]uint32, len(idx))
		for s, j := range idx {
			slots[s] = key[sorted[j].Key]
		}
		_, err = e.dp.SetTable(c.vs.ID, slots)
		e.must(err)
		tables[c.vs.ID] = slots
	}

	checked := map[bool]int{}
	for n := 0; n < 2*perFamily; n++ {
		v6 := n >= perFamily
		c := vss[rng.IntN(2)]
		var src netip.Addr
		if v6 {
			c = vss[2+rng.IntN(2)]
			var b [16]byte
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			b[0] = 0x20 | b[0]&0x1f // global unicast (2000::/3): a multicast source fails fib
			if n%10 == 0 {          // IPv4-mapped clients hash as IPv4
				copy(b[:12], []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff})
			}
			src = netip.AddrFrom16(b)
		} else {
			src = netip.AddrFrom4([4]byte{byte(1 + rng.IntN(223)), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())})
		}
		client := netip.AddrPortFrom(src, uint16(1+rng.IntN(65535)))
		proto := uint8(protoTCP)
		if n%2 == 1 {
			proto = protoUDP
		}
		h := hashing.PacketHash(c.vs.Seed, client.Addr(), client.Port(), c.vs.Method.WithPort())
		want := tables[c.vs.ID][hashing.Slot(h, uint64(e.dp.Config().TableSize))]

		p := flowPacket{dstMAC: e.macB, srcMAC: e.routerMAC, src: client, dst: netip.AddrPortFrom(c.vs.VIP, 80), proto: proto}
		v, out := e.run(p.frame())
		if v != xdpRedirect {
			t.Fatalf("%v -> %v: verdict %s (%v)", client, p.dst, verdictName(v), e.reasons())
		}
		var dst netip.Addr
		var dport uint16
		if v6 {
			dst = netip.AddrFrom16([16]byte(out[14+24 : 14+40]))
			dport = binary.BigEndian.Uint16(out[14+40+2:])
		} else {
			dst = netip.AddrFrom4([4]byte(out[14+16 : 14+20]))
			dport = binary.BigEndian.Uint16(out[14+20+2:])
		}
		got := byAddr[dst]
		if got != want || dport != uint16(9000+(want-100)/2) {
			t.Fatalf("%v -> vserver %d: BPF sent to %v:%d (backend %d), Go table says backend %d", client, c.vs.ID, dst, dport, got, want)
		}
		checked[v6]++
	}
	t.Logf("agreed on %d IPv4 and %d IPv6 inputs", checked[false], checked[true])
}
