package node

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/tandem-lb/tandem/cluster"
	"github.com/tandem-lb/tandem/cluster/mirror"
	"github.com/tandem-lb/tandem/flow"
	"github.com/tandem-lb/tandem/test/netns"
)

// pairCluster is the membership both nodes of the wiring test see: two
// members of one pair, their gossiped pair roles, death declarations.
type pairCluster struct {
	mu       sync.Mutex
	members  map[string]*cluster.MemberStatus
	declared []string
}

// view is one node's handle on the fake membership (SetPairRole is its own).
type view struct {
	f    *pairCluster
	self string
}

func (v view) Members() []cluster.MemberStatus {
	v.f.mu.Lock()
	defer v.f.mu.Unlock()
	var out []cluster.MemberStatus
	for _, m := range v.f.members {
		out = append(out, *m)
	}
	slices.SortFunc(out, func(a, b cluster.MemberStatus) int { return cmpString(a.ID, b.ID) })
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (v view) Pairs() []cluster.PairStatus {
	v.f.mu.Lock()
	defer v.f.mu.Unlock()
	p := cluster.PairStatus{ID: 5, Members: []string{"a", "b"}}
	for _, id := range p.Members {
		if m := v.f.members[id]; m.State == "alive" && (p.Active == "" || m.PairRole == cluster.PairRoleActive || m.PairRole == cluster.PairRoleTakenOver) {
			p.Active = id
		}
	}
	return []cluster.PairStatus{p}
}

func (v view) DeclareDead(id string) {
	v.f.mu.Lock()
	defer v.f.mu.Unlock()
	v.f.declared = append(v.f.declared, id)
	v.f.members[id].State = "dead"
}

func (v view) SetPairRole(role uint8, epoch uint64) {
	v.f.mu.Lock()
	defer v.f.mu.Unlock()
	v.f.members[v.self].PairRole, v.f.members[v.self].PairEpoch = role, epoch
}

// fixedIDs: data-plane vserver 0 is mirrored as id 1234 on both nodes.
type fixedIDs struct{}

func (fixedIDs) MirrorIDs() (map[uint32]uint32, map[uint32]uint32, map[uint32]bool) {
	return map[uint32]uint32{0: 1234}, map[uint32]uint32{1234: 0}, map[uint32]bool{1234: true}
}

func freePort(t *testing.T) uint16 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// synFrame is an Ethernet/IPv4/TCP SYN from client to vip (checksums are
// not checked by the program).
func synFrame(client, vip netip.AddrPort) []byte {
	b := make([]byte, 14+20+20)
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 40)
	ip[8], ip[9] = 64, 6
	c, v := client.Addr().As4(), vip.Addr().As4()
	copy(ip[12:], c[:])
	copy(ip[16:], v[:])
	tcp := ip[20:]
	binary.BigEndian.PutUint16(tcp[0:], client.Port())
	binary.BigEndian.PutUint16(tcp[2:], vip.Port())
	tcp[12], tcp[13] = 5<<4, 0x02
	return b
}

func waitWithin(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStatefulWiring runs the stateful wiring of two nodes of one pair with
// real data planes (loaded, not attached) and a real mirroring link over
// loopback: a pairs with b, a owns the pair (lower id) and mirrors to b;
// flows a's program creates reach b's standby store through the events
// ring and the link; a dies (its wiring stops, its link closes, a probe of
// it fails); b takes over: the flows are in b's BPF flow table, b's pairs
// map makes it the pair's active member, and b declared a dead.
func TestStatefulWiring(t *testing.T) {
	netns.RequireRoot(t)
	pa, pb := freePort(t), freePort(t)
	fc := &pairCluster{members: map[string]*cluster.MemberStatus{
		// Addr is the gossip address the probe tries: nothing listens.
		"a": {ID: "a", State: "alive", Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), freePort(t)), Backplane: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), pa)},
		"b": {ID: "b", State: "alive", Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), freePort(t)), Backplane: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), pb)},
	}}
	vip := netip.MustParseAddrPort("10.77.0.1:80")
	newDP := func() *flow.Datapath {
		d, err := flow.New(flow.Config{TableSize: 251, MaxVServers: 4, FlowTableSize: 4096, EventRingSize: 1 << 16})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		for _, err := range []error{
			d.SetBackend(flow.Backend{ID: 1, Addr: netip.MustParseAddr("10.78.0.10"), Port: 8080}),
			d.SetVServer(flow.VServer{ID: 0, VIP: vip.Addr(), Port: vip.Port(), Protocol: flow.ProtoTCP, Method: flow.MethodRoundRobin, Owned: true, Mirror: true}),
			d.SetVServerBackends(0, []uint32{1}),
		} {
			if err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	dpA, dpB := newDP(), newDP()
	psk := MirrorPSK(make([]byte, 32))
	start := func(self string, d *flow.Datapath, port uint16) (*Stateful, context.CancelFunc, chan struct{}) {
		s, err := NewStateful(StatefulConfig{
			Self: self, Listen: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port),
			Auth: mirror.Auth{PSK: psk}, Tick: 20 * time.Millisecond,
			Logger: slog.Default().With("node", self),
		}, d, view{fc, self}, fixedIDs{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := s.Run(ctx); err != nil {
				t.Errorf("%s: %v", self, err)
			}
		}()
		t.Cleanup(func() { cancel(); <-done })
		return s, cancel, done
	}
	sa, cancelA, doneA := start("a", dpA, pa)
	sb, _, _ := start("b", dpB, pb)

	streaming := func(s *Stateful) bool {
		r := s.RPCNodes()
		return len(r) == 1 && r[0].Authenticated && r[0].State == "streaming"
	}
	waitWithin(t, 5*time.Second, "a mirrors to b", func() bool { return streaming(sa) && streaming(sb) })
	if r := sa.RPCNodes()[0]; r.Peer != "b" || r.Pair != 5 || r.Role != "sender" || r.Bytes == 0 || r.LastBulkSync.IsZero() || r.Reason != "" {
		t.Errorf("a's rpcnode %+v: want the sender to b of pair 5, bytes counted, a bulk sync done, no reason", r)
	}
	if r := sb.RPCNodes()[0]; r.Peer != "a" || r.Role != "receiver" || r.Bytes == 0 || r.LastBulkSync.IsZero() {
		t.Errorf("b's rpcnode %+v: want the receiver of a's flows, bytes counted, a bulk sync applied", r)
	}
	if f := sa.Failover(); len(f.Links) != 1 || !f.Links[0].Up || f.Links[0].Role != "sender" || f.Takeovers != 0 {
		t.Errorf("a's failover metrics %+v: want one streaming sender link, no takeover", f)
	}
	if ps := dpA.Pairs(); len(ps) != 1 || !ps[0].Local || !ps[0].Live {
		t.Errorf("a's pairs map %+v: a should own pair 5", ps)
	}
	if ps := dpB.Pairs(); len(ps) != 1 || ps[0].Local || ps[0].Active != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("b's pairs map %+v: b should steer pair 5 to a", ps)
	}

	// a's program creates flows (they are dropped afterwards for want of
	// a route here, but created and reported first).
	const n = 50
	var keys []flow.FlowKey
	for i := 0; i < n; i++ {
		c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 79, 0, byte(i + 1)}), uint16(30000+i))
		if _, err := dpA.Program().Run(&ebpf.RunOptions{Data: synFrame(c, vip)}); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, flow.FlowKey{Src: c, Dst: vip, Protocol: flow.ProtoTCP})
	}
	for _, k := range keys {
		if _, err := dpA.LookupFlow(k); err != nil {
			t.Fatalf("a's program made no flow %v: %v", k, err)
		}
	}
	waitWithin(t, 5*time.Second, fmt.Sprintf("b holds the %d flows", n), func() bool {
		r := sb.RPCNodes()
		return len(r) == 1 && r[0].Mirrored >= n
	})

	// a dies.
	took := time.Now()
	cancelA()
	<-doneA
	waitWithin(t, 5*time.Second, "b installs a's flows", func() bool {
		for _, k := range keys {
			f, err := dpB.LookupFlow(k)
			if err != nil || f.Flags&flow.FlowFlagInstalled == 0 || f.Owner != 5 || f.VServerID != 0 || f.BackendID != 1 {
				return false
			}
		}
		return true
	})
	waitWithin(t, 2*time.Second, "b owns pair 5 in its pairs map", func() bool {
		ps := dpB.Pairs()
		return len(ps) == 1 && ps[0].Local && ps[0].Live
	})
	t.Logf("takeover of %d flows %v after a stopped", n, time.Since(took))
	// the metrics count the takeover and what it installed
	waitWithin(t, 2*time.Second, "b's metrics count the takeover", func() bool {
		f := sb.Failover()
		return f.Takeovers >= 1 && f.TakeoverFlows >= n && f.LastTakeover > 0
	})
	// no link any more: show rpcnode says why
	if r := sb.RPCNodes(); len(r) != 1 || r[0].State != "down" || !strings.Contains(r[0].Reason, "partner a is") {
		t.Errorf("b's rpcnode after the takeover %+v: want the link down, with the reason", r)
	}
	waitWithin(t, 2*time.Second, "b gossips its takeover", func() bool {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		return fc.members["b"].PairRole == cluster.PairRoleTakenOver
	})
	fc.mu.Lock()
	declared, role := fc.declared, fc.members["b"].PairRole
	fc.mu.Unlock()
	if !slices.Contains(declared, "a") {
		t.Errorf("b declared %v dead, want a", declared)
	}
	if role != cluster.PairRoleTakenOver {
		t.Errorf("b gossips pair role %d, want taken over (%d)", role, cluster.PairRoleTakenOver)
	}
	if uint8(mirror.RoleTakenOver) != cluster.PairRoleTakenOver || uint8(mirror.RoleActive) != cluster.PairRoleActive {
		t.Errorf("cluster's pair role numbers differ from mirror.Role")
	}
}

// TestProbeLooksTwice: a SIGKILLed partner's mirroring link can close
// before its listeners do. A partner whose port answers the first connect
// and is gone probeRecheck later is dead; one that answers both is alive;
// one that never answers is dead.
func TestProbeLooksTwice(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	addr := netip.MustParseAddrPort(ln.Addr().String())
	fc := &pairCluster{members: map[string]*cluster.MemberStatus{
		"a": {ID: "a", State: "alive", Addr: addr},
		"c": {ID: "c", State: "alive", Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), freePort(t))},
	}}
	s := &Stateful{cl: view{fc, "b"}, log: slog.Default()}
	if !s.partnerAnswers("a") {
		t.Error("a listening partner probed dead")
	}
	if s.partnerAnswers("c") {
		t.Error("a partner with nothing listening probed alive")
	}
	// the listener closes between the two looks
	time.AfterFunc(probeRecheck/4, func() { ln.Close() })
	if s.partnerAnswers("a") {
		t.Error("a partner whose listener closed after the first look probed alive")
	}
}
