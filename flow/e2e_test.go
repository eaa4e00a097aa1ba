package flow

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/tandem-lb/tandem/hashing"
	"github.com/tandem-lb/tandem/test/netns"
)

// attachIn attaches prog natively to ifname inside ns until the test ends.
func attachIn(t *testing.T, ns *netns.NetNS, prog *ebpf.Program, ifname string) {
	t.Helper()
	var l link.Link
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifi.Index, Flags: link.XDPDriverMode})
		return err
	})
	if err != nil {
		t.Fatalf("attaching XDP to %s in %s: %v", ifname, ns, err)
	}
	t.Cleanup(func() { l.Close() })
}

func nsRun(t *testing.T, ns *netns.NetNS, args ...string) {
	t.Helper()
	if out, err := ns.Run(args[0], args[1:]...); err != nil {
		t.Fatalf("%s in %s: %v: %s", strings.Join(args, " "), ns, err, out)
	}
}

// TestEndToEnd carries real TCP connections, IPv4 and IPv6, from a client
// namespace through a node namespace (the program attached natively to its
// three veths, the VIP configured nowhere) to two backend namespaces:
//
//	client tfc0 ---- tfn0 node tfn1 ---- tfb0 backend1
//	                          tfn2 ---- tfb0 backend2
//
// Each connection comes from its own source port; it must reach the
// backend the Go table names, the backend must see the client's own
// address and port (USIP), and the client must complete the handshake with
// VIP:80, which only happens if replies come back from VIP:80.
func TestEndToEnd(t *testing.T) {
	netns.RequireRoot(t)
	client, node := netns.New(t), netns.New(t)
	backends := []*netns.NetNS{netns.New(t), netns.New(t)}
	for _, ns := range []*netns.NetNS{client, node, backends[0], backends[1]} {
		ns.Sysctl("net.ipv4.conf.all.rp_filter", "0")
		ns.Sysctl("net.ipv4.conf.default.rp_filter", "0")
		ns.Sysctl("net.ipv6.conf.all.accept_dad", "0")
		ns.Sysctl("net.ipv6.conf.default.accept_dad", "0")
	}
	node.Sysctl("net.ipv4.ip_forward", "1")
	node.Sysctl("net.ipv6.conf.all.forwarding", "1")

	netns.Veth(t, client, "tfc0", node, "tfn0")
	nsRun(t, client, "ip", "addr", "add", "10.98.1.2/24", "dev", "tfc0")
	nsRun(t, client, "ip", "-6", "addr", "add", "fd98:1::2/64", "dev", "tfc0", "nodad")
	nsRun(t, client, "ip", "route", "add", "default", "via", "10.98.1.1")
	nsRun(t, client, "ip", "-6", "route", "add", "default", "via", "fd98:1::1")
	nsRun(t, node, "ip", "addr", "add", "10.98.1.1/24", "dev", "tfn0")
	nsRun(t, node, "ip", "-6", "addr", "add", "fd98:1::1/64", "dev", "tfn0", "nodad")
	for i, b := range backends {
		nif := fmt.Sprintf("tfn%d", i+1)
		netns.Veth(t, node, nif, b, "tfb0")
		nsRun(t, node, "ip", "addr", "add", fmt.Sprintf("10.98.%d.1/24", i+2), "dev", nif)
		nsRun(t, node, "ip", "-6", "addr", "add", fmt.Sprintf("fd98:%d::1/64", i+2), "dev", nif, "nodad")
		nsRun(t, b, "ip", "addr", "add", fmt.Sprintf("10.98.%d.2/24", i+2), "dev", "tfb0")
		nsRun(t, b, "ip", "-6", "addr", "add", fmt.Sprintf("fd98:%d::2/64", i+2), "dev", "tfb0", "nodad")
		nsRun(t, b, "ip", "route", "add", "default", "via", fmt.Sprintf("10.98.%d.1", i+2))
		nsRun(t, b, "ip", "-6", "route", "add", "default", "via", fmt.Sprintf("fd98:%d::1", i+2))
		b.DisableTxChecksum("tfb0")
	}
	client.DisableTxChecksum("tfc0")

	d := newDatapath(t, Config{TableSize: 251, MaxVServers: 4})
	// The program on the node's veths; a pass program on the peers gives
	// them the NAPI context that redirected frames need.
	for _, nif := range []string{"tfn0", "tfn1", "tfn2"} {
		if err := node.Do(func() error { return d.Attach(nif) }); err != nil {
			t.Fatalf("attaching to %s: %v", nif, err)
		}
	}
	attachIn(t, client, d.PassProgram(), "tfc0")
	for _, b := range backends {
		attachIn(t, b, d.PassProgram(), "tfb0")
	}

	type family struct {
		vs       VServer
		client   netip.Addr
		backends []netip.Addr
	}
	fams := []family{
		{VServer{ID: 0, VIP: ip("10.98.100.1"), Port: 80, Protocol: ProtoTCP, Method: MethodSourceIPSourcePort, Seed: hashing.VServerSeed("e2e4"), Stateless: true},
			ip("10.98.1.2"), []netip.Addr{ip("10.98.2.2"), ip("10.98.3.2")}},
		{VServer{ID: 1, VIP: ip("fd98:100::1"), Port: 80, Protocol: ProtoTCP, Method: MethodSourceIPSourcePort, Seed: hashing.VServerSeed("e2e6"), Stateless: true},
			ip("fd98:1::2"), []netip.Addr{ip("fd98:2::2"), ip("fd98:3::2")}},
	}
	names := map[uint32]string{}
	tables := map[uint32][]uint32{}
	for fi, f := range fams {
		if err := d.SetVServer(f.vs); err != nil {
			t.Fatal(err)
		}
		var hb []hashing.Backend
		for bi, a := range f.backends {
			id := uint32(1 + 2*fi + bi)
			names[id] = fmt.Sprintf("backend%d", bi+1)
			if err := d.SetBackend(Backend{ID: id, Addr: a, Port: 8080}); err != nil {
				t.Fatal(err)
			}
			if err := d.SetReverse(Reverse{Addr: a, Port: 8080, Protocol: ProtoTCP, VServerID: f.vs.ID, BackendID: id}); err != nil {
				t.Fatal(err)
			}
			hb = append(hb, hashing.Backend{Key: fmt.Sprint(id), Weight: 1})
		}
		idx, err := hashing.BuildMaglev(hb, 251)
		if err != nil {
			t.Fatal(err)
		}
		sorted := hashing.SortBackends(hb)
		slots := make([]uint32, len(idx))
		for s, j := range idx {
			fmt.Sscan(sorted[j].Key, &slots[s])
		}
		if _, err := d.SetTable(f.vs.ID, slots); err != nil {
			t.Fatal(err)
		}
		tables[f.vs.ID] = slots
	}

	// Backends answer "<name> <remote address> <line>".
	// The accept loops end when the listeners close at cleanup.
	for bi, b := range backends {
		ln := b.Listen("tcp", ":8080")
		name := fmt.Sprintf("backend%d", bi+1)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					c.SetDeadline(time.Now().Add(5 * time.Second))
					line, err := bufio.NewReader(c).ReadString('\n')
					if err != nil {
						return
					}
					fmt.Fprintf(c, "%s %s %s", name, c.RemoteAddr(), line)
				}()
			}
		}()
	}

	const perFamily = 24
	reached := map[string]int{}
	for _, f := range fams {
		for i := 0; i < perFamily; i++ {
			port := uint16(21000 + 37*i)
			src := netip.AddrPortFrom(f.client, port)
			h := hashing.PacketHash(f.vs.Seed, f.client, port, true)
			want := names[tables[f.vs.ID][hashing.Slot(h, 251)]]
			vip := netip.AddrPortFrom(f.vs.VIP, 80)
			var reply string
			err := client.Do(func() error {
				dl := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(src), Timeout: 5 * time.Second}
				c, err := dl.Dial("tcp", vip.String())
				if err != nil {
					return err
				}
				defer c.Close()
				if got := c.RemoteAddr().String(); got != vip.String() {
					return fmt.Errorf("connected to %s", got)
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				fmt.Fprintf(c, "hello %d\n", i)
				reply, err = bufio.NewReader(c).ReadString('\n')
				return err
			})
			if err != nil {
				t.Fatalf("%v -> %v: %v (reasons %v)", src, vip, err, mustReasons(d))
			}
			wantReply := fmt.Sprintf("%s %s hello %d\n", want, src, i)
			if reply != wantReply {
				t.Errorf("%v -> %v: reply %q, want %q", src, vip, reply, wantReply)
			}
			reached[fmt.Sprintf("%v %s", f.vs.VIP, want)]++
		}
	}
	t.Logf("connections per backend: %v", reached)
	if len(reached) != 4 {
		t.Errorf("connections reached %d of the 4 (vserver, backend) pairs: %v", len(reached), reached)
	}
	for _, f := range fams {
		c, err := d.VServerCounters(f.vs.ID)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("vserver %v: %+v", f.vs.VIP, c)
		if c.NewFlows != perFamily || c.RevPackets == 0 {
			t.Errorf("vserver %v: %d new flows, %d reverse packets; want %d new flows", f.vs.VIP, c.NewFlows, c.RevPackets, perFamily)
		}
	}
	r := mustReasons(d)
	t.Logf("reasons: %v", r)
	if r[ReasonFwdHit] == 0 || r[ReasonFwdReverse] == 0 {
		t.Errorf("no redirected packets: %v", r)
	}
	for _, nif := range []string{"tfn0", "tfn1", "tfn2"} {
		if err := d.Detach(nif); err != nil {
			t.Errorf("detach %s: %v", nif, err)
		}
	}
}

func mustReasons(d *Datapath) map[Reason]uint64 {
	r, _ := d.Reasons()
	return r
}
