package node

import (
	"bytes"
	"net/netip"
	"reflect"
	"testing"

	"github.com/tandem-lb/tandem/cluster"
	"github.com/tandem-lb/tandem/cluster/mirror"
	"github.com/tandem-lb/tandem/flow"
)

func TestPairsFromCluster(t *testing.T) {
	members := []cluster.MemberStatus{
		{ID: "n1", Backplane: netip.MustParseAddrPort("10.0.9.1:7947")},
		{ID: "n2", Backplane: netip.MustParseAddrPort("10.0.9.2:7947")},
		{ID: "n3", Backplane: netip.MustParseAddrPort("10.0.9.3:7947")},
		{ID: "n4"}, // no backplane address known
	}
	pairs := []cluster.PairStatus{
		{ID: 7, Members: []string{"n1", "n2"}, Active: "n1"},
		{ID: 1 << 31, Members: []string{"n3", "n4"}, Active: "n3"},
		{ID: 9, Members: []string{"n5", "n6"}},                // both dead
		{ID: 11, Members: []string{"n4", "n7"}, Active: "n4"}, // active without backplane
	}
	got := PairsFromCluster("n3", pairs, members)
	want := []flow.Pair{
		{ID: 7, Live: true, Active: netip.MustParseAddr("10.0.9.1")},
		{ID: 1 << 31, Live: true, Local: true, Active: netip.MustParseAddr("10.0.9.3")},
		{ID: 9},
		{ID: 11},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("pair %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestMirrorPSK(t *testing.T) {
	k := bytes.Repeat([]byte{1}, 32)
	a, b := MirrorPSK(k), MirrorPSK(k)
	if !bytes.Equal(a, b) || len(a) != 32 || bytes.Equal(a, k) {
		t.Errorf("psk %x from %x", a, k)
	}
	if bytes.Equal(MirrorPSK(bytes.Repeat([]byte{2}, 32)), a) {
		t.Error("different gossip keys gave the same mirroring key")
	}
}

// A rejoining node's completed bulk sync (after which its pair machine
// claims the pair back) waits while it cannot own the pair; nothing else
// does.
func TestDeferClaim(t *testing.T) {
	synced := mirror.LinkEvent{Kind: mirror.LinkEventSynced, Receiver: true}
	no, yes := func() bool { return false }, func() bool { return true }
	for _, tc := range []struct {
		name   string
		ev     mirror.LinkEvent
		role   mirror.Role
		canOwn func() bool
		want   bool
	}{
		{"rejoining, cannot own", synced, mirror.RoleRejoining, no, true},
		{"rejoining, can own", synced, mirror.RoleRejoining, yes, false},
		{"rejoining, no gate", synced, mirror.RoleRejoining, nil, false},
		{"standby sync", synced, mirror.RoleStandby, no, false},
		{"sender's ack", mirror.LinkEvent{Kind: mirror.LinkEventSynced}, mirror.RoleRejoining, no, false},
		{"link up", mirror.LinkEvent{Kind: mirror.LinkEventUp, Receiver: true}, mirror.RoleRejoining, no, false},
	} {
		if got := deferClaim(tc.ev, tc.role, tc.canOwn); got != tc.want {
			t.Errorf("%s: deferClaim = %v, want %v", tc.name, got, tc.want)
		}
	}
}
