package cluster

import (
	"net/netip"
	"testing"

	"github.com/tandem-lb/tandem/hashing"
)

func TestComputeTables(t *testing.T) {
	c := goodConfig()
	up := map[string]bool{"web1": true, "web2": true, "ftp1": true}
	ts, err := ComputeTables(c, up, nil, 251)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 3 {
		t.Fatalf("want 3 tables, got %d", len(ts))
	}
	byName := map[string]VServerTable{}
	for _, tb := range ts {
		byName[tb.VServer] = tb
	}
	vs1 := byName["vs1"]
	if vs1.Epoch != 1 || !vs1.WithPort || vs1.Seed != hashing.VServerSeed("vs1") || len(vs1.Slots) != 251 {
		t.Errorf("vs1: %+v", vs1)
	}
	// web2 has weight 3, web1 weight 1: about 3/4 of the slots.
	n := 0
	for _, s := range vs1.Slots {
		if vs1.Backends[s] == "web2" {
			n++
		}
	}
	if n < 170 || n > 206 {
		t.Errorf("web2 (weight 3 of 4) owns %d of 251 slots", n)
	}
	if v6 := byName["v6"]; v6.HasBackend() || v6.Weights[0] != 0 {
		t.Errorf("v6 has no UP backend but got %+v", v6)
	}

	// Same inputs: same epochs. Changed health: epoch bumps only there.
	prev := map[string]VServerTable{}
	for _, tb := range ts {
		prev[tb.VServer] = tb
	}
	again, _ := ComputeTables(c, up, prev, 251)
	if TablesDigest(again) != TablesDigest(ts) {
		t.Error("not deterministic")
	}
	for _, tb := range again {
		if tb.Epoch != 1 {
			t.Errorf("%s epoch %d without change", tb.VServer, tb.Epoch)
		}
	}
	up["web1"] = false
	next, _ := ComputeTables(c, up, prev, 251)
	fresh, _ := ComputeTables(c, up, nil, 251)
	if TablesDigest(next) != TablesDigest(fresh) {
		t.Error("tables computed from prev differ from fresh ones")
	}
	for _, tb := range next {
		want := uint64(1)
		if tb.VServer == "vs1" {
			want = 2
			for _, s := range tb.Slots {
				if tb.Backends[s] != "web2" {
					t.Fatal("a DOWN backend owns a slot")
				}
			}
		}
		if tb.Epoch != want {
			t.Errorf("%s epoch %d, want %d", tb.VServer, tb.Epoch, want)
		}
	}
	// The epoch is not part of the digest.
	n0 := next[0]
	n0.Epoch = 99
	if n0.Digest() != next[0].Digest() {
		t.Error("epoch changes the digest")
	}

	// A quarantined vserver gets no table.
	c.PutVServer(vsrv("dup", TypeANY, "203.0.113.10", 80, MethodSrcIPSrcPortHash, PersistNone, FailoverStateless))
	q, _ := ComputeTables(c, up, nil, 251)
	for _, tb := range q {
		if tb.VServer == "vs1" || tb.VServer == "dup" {
			t.Errorf("table for vserver in conflict: %s", tb.VServer)
		}
	}
	if _, err := ComputeTables(c, up, nil, 100); err == nil {
		t.Error("non-prime table size accepted")
	}
}

func TestMachineOwner(t *testing.T) {
	m, err := NewMachine(MachineConfig{Self: MemberMeta{ID: "n1", Pair: 1, Proto: 1}, TableSize: 13})
	if err != nil {
		t.Fatal(err)
	}
	m.Member(MemberMeta{ID: "n2", Pair: 1, Proto: 1}, netip.AddrPort{}, StateAlive)
	m.Member(MemberMeta{ID: "n3", Pair: 2, Proto: 1}, netip.AddrPort{}, StateAlive)
	m.Member(MemberMeta{ID: "n4", Pair: 2, Proto: 2}, netip.AddrPort{}, StateAlive)
	ps := m.Pairs()
	if len(ps) != 2 || !ps[0].Protected || ps[1].Protected || ps[1].Reason == "" {
		t.Fatalf("pairs %+v", ps)
	}
	client := netip.MustParseAddr("198.51.100.7")
	owners := map[uint32]int{}
	for port := uint16(1000); port < 1400; port++ {
		pid, node, err := m.Owner(client, port)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := hashing.Owner(hashing.OwnerKey{Addr: client, Port: port}, []uint32{1, 2})
		if pid != want || (pid == 1 && node != "n1") || (pid == 2 && node != "n3") {
			t.Fatalf("port %d: pair %d node %s, want pair %d", port, pid, node, want)
		}
		owners[pid]++
	}
	if owners[1] < 150 || owners[2] < 150 {
		t.Errorf("owners unbalanced: %v", owners)
	}
	// n3 dies: pair 2 is owned by n4.
	m.MemberState("n3", StateDead)
	for port := uint16(1000); port < 1100; port++ {
		if pid, node, _ := m.Owner(client, port); pid == 2 && node != "n4" {
			t.Fatalf("pair 2 active is %s", node)
		}
	}
	if _, err := NewMachine(MachineConfig{Self: MemberMeta{ID: "x", Pair: AutoPairBase}}); err == nil {
		t.Error("pair id in the automatic range accepted")
	}
}
