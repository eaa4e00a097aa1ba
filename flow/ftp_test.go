package flow

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tandem-lb/tandem/flow/alg"
	"github.com/tandem-lb/tandem/flow/standby"
	"github.com/tandem-lb/tandem/hashing"
)

// FTP vservers of the ALG tests (on top of statefulEnv).
const (
	vsFTP     = 13 // 10.100.0.10:21 TCP ROUNDROBIN FTP, mirrored, backend 12 (10.1.0.12:21)
	vsFTP6    = 14 // [fd64::10]:21 TCP ROUNDROBIN FTP, mirrored, backend 13 ([fd01::12]:21)
	vsFTPSNAT = 15 // 10.100.0.11:21 TCP ROUNDROBIN FTP, USIP OFF, backend 14 (10.1.0.13:21)
)

var ftpBackendMAC = neighMAC(0x12)

func ftpEnv(t testing.TB) *testEnv {
	t.Helper()
	e := statefulEnv(t)
	for _, c := range [][]string{
		{"ip", "neigh", "add", "10.1.0.12", "lladdr", ftpBackendMAC.String(), "dev", "tfa", "nud", "permanent"},
		{"ip", "neigh", "add", "10.1.0.13", "lladdr", ftpBackendMAC.String(), "dev", "tfa", "nud", "permanent"},
		{"ip", "neigh", "add", "fd01::12", "lladdr", ftpBackendMAC.String(), "dev", "tfa", "nud", "permanent"},
	} {
		if out, err := e.ns.Run(c[0], c[1:]...); err != nil {
			t.Fatalf("%v: %v: %s", c, err, out)
		}
	}
	d := e.dp
	for _, b := range []Backend{
		{ID: 12, Addr: ip("10.1.0.12"), Port: 21},
		{ID: 13, Addr: ip("fd01::12"), Port: 21},
		{ID: 14, Addr: ip("10.1.0.13"), Port: 21},
	} {
		e.must(d.SetBackend(b))
	}
	for _, v := range []VServer{
		{ID: vsFTP, VIP: ip("10.100.0.10"), Port: 21, Protocol: ProtoTCP, Method: MethodRoundRobin, Owned: true, Mirror: true, FTP: true},
		{ID: vsFTP6, VIP: ip("fd64::10"), Port: 21, Protocol: ProtoTCP, Method: MethodRoundRobin, Owned: true, Mirror: true, FTP: true},
		{ID: vsFTPSNAT, VIP: ip("10.100.0.11"), Port: 21, Protocol: ProtoTCP, Method: MethodRoundRobin, Owned: true, SNAT: true, FTP: true},
	} {
		e.must(d.SetVServer(v))
	}
	e.must(d.SetVServerBackends(vsFTP, []uint32{12}))
	e.must(d.SetVServerBackends(vsFTP6, []uint32{13}))
	e.must(d.SetVServerBackends(vsFTPSNAT, []uint32{14}))
	for _, r := range []Reverse{
		{Addr: ip("10.1.0.12"), Port: 21, Protocol: ProtoTCP, VServerID: vsFTP, BackendID: 12, Stateful: true},
		{Addr: ip("fd01::12"), Port: 21, Protocol: ProtoTCP, VServerID: vsFTP6, BackendID: 13, Stateful: true},
		{Addr: ip("10.1.0.13"), Port: 21, Protocol: ProtoTCP, VServerID: vsFTPSNAT, BackendID: 14, Stateful: true},
	} {
		e.must(d.SetReverse(r))
	}
	return e
}

// ftpCase is one address family's control connection.
type ftpCase struct {
	name            string
	vs              uint32
	client, vip, be netip.AddrPort
}

func ftpCases() []ftpCase {
	return []ftpCase{
		{"ipv4", vsFTP, ap("10.2.0.5:40000"), ap("10.100.0.10:21"), ap("10.1.0.12:21")},
		{"ipv6", vsFTP6, ap("[fd02::5]:40000"), ap("[fd64::10]:21"), ap("[fd01::12]:21")},
	}
}

// open sends the control connection's SYN from the client and checks it is
// forwarded to the backend.
func (c ftpCase) open(t *testing.T, e *testEnv) {
	t.Helper()
	e.expectForward(t, tcpFrame(e.macB, e.routerMAC, c.client, c.vip, tcpSYN, nil),
		tcpFrame(ftpBackendMAC, e.macA, c.client, c.be, tcpSYN, nil))
}

// command sends a client line on the control connection.
func (c ftpCase) command(t *testing.T, e *testEnv, line string) {
	t.Helper()
	e.expectForward(t, tcpFrame(e.macB, e.routerMAC, c.client, c.vip, tcpACK, []byte(line)),
		tcpFrame(ftpBackendMAC, e.macA, c.client, c.be, tcpACK, []byte(line)))
}

// reply sends a backend line on the control connection.
func (c ftpCase) reply(t *testing.T, e *testEnv, line string) {
	t.Helper()
	e.expectForward(t, tcpFrame(e.macA, ftpBackendMAC, c.be, c.client, tcpACK, []byte(line)),
		tcpFrame(neighMACFor(c.client.Addr()), e.macB, c.vip, c.client, tcpACK, []byte(line)))
}

func pasvLine(a netip.Addr, port uint16) string {
	b := a.As4()
	return fmt.Sprintf("227 Entering Passive Mode (%d,%d,%d,%d,%d,%d).\r\n", b[0], b[1], b[2], b[3], port>>8, port&0xff)
}

func portLine(a netip.Addr, port uint16) string {
	b := a.As4()
	return fmt.Sprintf("PORT %d,%d,%d,%d,%d,%d\r\n", b[0], b[1], b[2], b[3], port>>8, port&0xff)
}

func (e *testEnv) expectations(t *testing.T) []Expectation {
	t.Helper()
	xs, err := e.dp.Expectations()
	e.must(err)
	return xs
}

func (e *testEnv) algCounters(t *testing.T) ALGCounters {
	t.Helper()
	c, err := e.dp.ALGCounters()
	e.must(err)
	return c
}

// TestFTPPassive: a 227 (IPv4) or 229 (IPv6) reply of the backend creates an
// expectation before the reply leaves; the client's data SYN to VIP:port
// consumes it and opens an owned, mirrored flow to the control connection's
// backend on that port (every byte checked), reported on the events ring;
// the data flows both ways; the expectation is used once.
func TestFTPPassive(t *testing.T) {
	for _, c := range ftpCases() {
		t.Run(c.name, func(t *testing.T) {
			e := ftpEnv(t)
			e.ownPairs()
			r, err := e.dp.Events()
			e.must(err)
			t.Cleanup(func() { r.Close() })
			c.open(t, e)
			if ev := readEvent(t, r); ev.Kind != EventNew || ev.Entry.Backend != c.be {
				t.Fatalf("control event %+v", ev)
			}
			const port = 30001
			line, kind := fmt.Sprintf("229 Entering Extended Passive Mode (|||%d|)\r\n", port), alg.KindEPSV
			if c.vip.Addr().Is4() {
				line, kind = pasvLine(c.vip.Addr(), port), alg.KindPASV
			}
			c.command(t, e, "PASV\r\n")
			c.reply(t, e, line)
			if ev := readEvent(t, r); ev.Kind != EventExpect {
				t.Fatalf("event %+v, want the expectation", ev)
			}
			xs := e.expectations(t)
			if len(xs) != 1 {
				t.Fatalf("expectations %+v, want one", xs)
			}
			x := xs[0]
			dataBE := netip.AddrPortFrom(c.be.Addr(), port)
			if x.Kind != kind || x.Src != c.client.Addr() || x.Dst != c.vip.Addr() || x.DstPort != port ||
				x.To != dataBE || x.ControlPort != c.client.Port() || x.VServerID != c.vs ||
				x.BackendID != e.dp.DataBackendID(map[uint32]uint32{vsFTP: 12, vsFTP6: 13}[c.vs]) {
				t.Errorf("expectation %+v", x)
			}
			if rem := x.Remaining(); rem <= 0 || rem > e.dp.Config().FTPExpectTTL {
				t.Errorf("expectation expires in %v", rem)
			}

			dc, dv := netip.AddrPortFrom(c.client.Addr(), 50000), netip.AddrPortFrom(c.vip.Addr(), port)
			e.expectForward(t, tcpFrame(e.macB, e.routerMAC, dc, dv, tcpSYN, nil),
				tcpFrame(ftpBackendMAC, e.macA, dc, dataBE, tcpSYN, nil))
			if xs := e.expectations(t); len(xs) != 0 {
				t.Errorf("expectation not consumed: %+v", xs)
			}
			ev := readEvent(t, r)
			if ev.Kind != EventNew || ev.Owner != 1 || ev.Entry.Client != dc || ev.Entry.VIP != dv ||
				ev.Entry.Backend != dataBE || ev.Entry.VServerID != c.vs || ev.Entry.Flags&FlowFlagFTPData == 0 {
				t.Errorf("data event %+v", ev)
			}
			f, err := e.dp.LookupFlow(FlowKey{Src: dc, Dst: dv, Protocol: ProtoTCP})
			e.must(err)
			if f.Owner != 1 || f.Flags != FlowFlagOwned|FlowFlagMirror|FlowFlagFTPData {
				t.Errorf("data flow %+v", f)
			}
			// the data, both ways: the server's bytes are never read as
			// control lines
			payload := []byte("227 Entering Passive Mode (10,100,0,10,117,57).\r\nEPRT |2|fd02::5|50009|\r\n")
			e.expectForward(t, tcpFrame(e.macA, ftpBackendMAC, dataBE, dc, tcpACK, payload),
				tcpFrame(neighMACFor(c.client.Addr()), e.macB, dv, dc, tcpACK, payload))
			e.expectForward(t, tcpFrame(e.macB, e.routerMAC, dc, dv, tcpACK, payload),
				tcpFrame(ftpBackendMAC, e.macA, dc, dataBE, tcpACK, payload))
			if xs := e.expectations(t); len(xs) != 0 {
				t.Errorf("data bytes made expectations: %+v", xs)
			}
			// used once: another connection to the port finds none
			if v, _ := e.run(tcpFrame(e.macB, e.routerMAC, ap(strings.Replace(dc.String(), "50000", "50001", 1)), dv, tcpSYN, nil)); v != xdpPass {
				t.Errorf("second SYN to the data port: %s, want PASS", verdictName(v))
			}
			ac := e.algCounters(t)
			if ac.Lines[kind][alg.ReasonOK] != 1 || ac.DataOpened != 1 || ac.Refused() != 0 {
				t.Errorf("ALG counters %+v", ac)
			}
			// the backend's counters include its data connections: the
			// control SYN, PASV, data SYN and data ACK client -> backend;
			// the 227 and the data reply back
			bc, err := e.dp.BackendCounters(map[uint32]uint32{vsFTP: 12, vsFTP6: 13}[c.vs])
			e.must(err)
			if bc.Packets != 4 || bc.RevPackets != 2 {
				t.Errorf("backend counters %+v, want 4 packets and 2 replies", bc)
			}
			// the mirror's view of the data flow: what a partner installs
			var got []standby.Entry
			e.must(e.dp.OwnedFlows(func(en standby.Entry) bool { got = append(got, en); return true }))
			found := false
			for _, en := range got {
				if en.Client == dc && en.VIP == dv && en.Backend == dataBE {
					found = true
				}
			}
			if !found {
				t.Errorf("data flow not among the owned flows %+v", got)
			}
			// the close of the data connection is reported
			e.expectForward(t, tcpFrame(e.macA, ftpBackendMAC, dataBE, dc, tcpFIN|tcpACK, nil),
				tcpFrame(neighMACFor(c.client.Addr()), e.macB, dv, dc, tcpFIN|tcpACK, nil))
			if ev := readEvent(t, r); ev.Kind != EventClose || ev.Entry.Client != dc {
				t.Errorf("close event %+v", ev)
			}
		})
	}
}

// TestFTPActive: a PORT (IPv4) or EPRT (IPv6) naming the client creates an
// expectation for backend -> client:port; the backend's SYN from port 20
// consumes it and leaves from VIP:20; the client's answers go to the
// backend; the flow is an owned, mirrored flow.
func TestFTPActive(t *testing.T) {
	for _, c := range ftpCases() {
		t.Run(c.name, func(t *testing.T) {
			e := ftpEnv(t)
			e.ownPairs()
			r, err := e.dp.Events()
			e.must(err)
			t.Cleanup(func() { r.Close() })
			c.open(t, e)
			readEvent(t, r)
			const port = 50000
			line, kind := fmt.Sprintf("EPRT |2|%s|%d|\r\n", c.client.Addr(), port), alg.KindEPRT
			if c.client.Addr().Is4() {
				line, kind = portLine(c.client.Addr(), port), alg.KindPORT
			}
			c.command(t, e, line)
			if ev := readEvent(t, r); ev.Kind != EventExpect {
				t.Fatalf("event %+v, want the expectation", ev)
			}
			xs := e.expectations(t)
			if len(xs) != 1 {
				t.Fatalf("expectations %+v, want one", xs)
			}
			if x := xs[0]; x.Kind != kind || x.Src != c.be.Addr() || x.Dst != c.client.Addr() || x.DstPort != port ||
				x.To != netip.AddrPortFrom(c.vip.Addr(), 0) || x.VServerID != c.vs {
				t.Errorf("expectation %+v", x)
			}
			c.reply(t, e, "200 PORT command successful. Consider using PASV.\r\n")

			bd := netip.AddrPortFrom(c.be.Addr(), 20)
			vd := netip.AddrPortFrom(c.vip.Addr(), 20)
			cd := netip.AddrPortFrom(c.client.Addr(), port)
			e.expectForward(t, tcpFrame(e.macA, ftpBackendMAC, bd, cd, tcpSYN, nil),
				tcpFrame(neighMACFor(c.client.Addr()), e.macB, vd, cd, tcpSYN, nil))
			if xs := e.expectations(t); len(xs) != 0 {
				t.Errorf("expectation not consumed: %+v", xs)
			}
			ev := readEvent(t, r)
			if ev.Kind != EventNew || ev.Entry.Client != cd || ev.Entry.VIP != vd || ev.Entry.Backend != bd || ev.Entry.VServerID != c.vs {
				t.Errorf("data event %+v", ev)
			}
			e.expectForward(t, tcpFrame(e.macB, e.routerMAC, cd, vd, tcpSYN|tcpACK, nil),
				tcpFrame(ftpBackendMAC, e.macA, cd, bd, tcpSYN|tcpACK, nil))
			e.expectForward(t, tcpFrame(e.macA, ftpBackendMAC, bd, cd, tcpACK, []byte("file")),
				tcpFrame(neighMACFor(c.client.Addr()), e.macB, vd, cd, tcpACK, []byte("file")))
			// a second SYN from the backend to that port finds nothing
			if v, _ := e.run(tcpFrame(e.macA, ftpBackendMAC, netip.AddrPortFrom(c.be.Addr(), 21000), cd, tcpSYN, nil)); v != xdpPass {
				t.Errorf("second active SYN: %s, want PASS", verdictName(v))
			}
			if ac := e.algCounters(t); ac.Lines[kind][alg.ReasonOK] != 1 || ac.DataOpened != 1 {
				t.Errorf("ALG counters %+v", ac)
			}
		})
	}
}

// TestFTPHostile: lines that are malformed, too long, cut short, out of
// range, of an unknown family, or that name an address other than the VIP
// (replies) or the client (commands: the FTP bounce attack) create no
// expectation and are counted by kind and reason; lines in the wrong
// direction are not read.
func TestFTPHostile(t *testing.T) {
	e := ftpEnv(t)
	e.ownPairs()
	c := ftpCases()[0]
	c.open(t, e)
	long := "PORT 10,2,0,5,195,80" + strings.Repeat(" ", 150) + "\r\n"
	for _, tc := range []struct {
		fromClient bool
		line       string
		kind       alg.Kind
		reason     alg.Reason
	}{
		{false, pasvLine(ip("10.1.0.12"), 30000), alg.KindPASV, alg.ReasonAddress}, // the backend's own address
		{false, pasvLine(ip("192.0.2.1"), 30000), alg.KindPASV, alg.ReasonAddress},
		{false, "227 Entering Passive Mode (10,100,0,10,300,1)\r\n", alg.KindPASV, alg.ReasonRange},
		{false, "227 Entering Passive Mode (10,100,0,10,0,0)\r\n", alg.KindPASV, alg.ReasonRange},
		{false, "229 Entering Extended Passive Mode (|||70000|)\r\n", alg.KindEPSV, alg.ReasonRange},
		{false, "229 Entering Extended Passive Mode (||30000|)\r\n", alg.KindEPSV, alg.ReasonSyntax},
		{false, "227 Entering Passive Mode (10,100,0,10,117", alg.KindPASV, alg.ReasonPartial},
		{true, portLine(ip("192.0.2.7"), 6667), alg.KindPORT, alg.ReasonAddress}, // bounce
		{true, long, alg.KindPORT, alg.ReasonTooLong},
		{true, "PORT 10,2,0,5,195\r\n", alg.KindPORT, alg.ReasonSyntax},
		{true, "EPRT |3|10.2.0.5|50000|\r\n", alg.KindEPRT, alg.ReasonFamily},
		{true, "EPRT |1|10.2.0.6|50000|\r\n", alg.KindEPRT, alg.ReasonAddress},
		{true, "EPRT |1|10.2.0.5|0|\r\n", alg.KindEPRT, alg.ReasonRange},
	} {
		before := e.algCounters(t)
		if tc.fromClient {
			c.command(t, e, tc.line)
		} else {
			c.reply(t, e, tc.line)
		}
		after := e.algCounters(t)
		if got := after.Lines[tc.kind][tc.reason] - before.Lines[tc.kind][tc.reason]; got != 1 {
			t.Errorf("%q: counted %d times as %s/%s, want once (%+v)", tc.line, got, tc.kind, tc.reason, after.Lines)
		}
		if xs := e.expectations(t); len(xs) != 0 {
			t.Fatalf("%q made expectations %+v", tc.line, xs)
		}
	}
	// the wrong direction: a 227 from the client, a PORT from the backend
	before := e.algCounters(t)
	c.command(t, e, pasvLine(c.vip.Addr(), 30000))
	c.reply(t, e, portLine(c.client.Addr(), 50000))
	if after := e.algCounters(t); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("lines in the wrong direction counted: %+v -> %+v", before, after)
	}
	if xs := e.expectations(t); len(xs) != 0 {
		t.Fatalf("lines in the wrong direction made expectations %+v", xs)
	}
	// a SYN to a data port nobody announced, and non-SYNs: passed
	for _, fl := range []byte{tcpSYN, tcpACK} {
		if v, _ := e.run(tcpFrame(e.macB, e.routerMAC, ap("10.2.0.5:50000"), ap("10.100.0.10:30000"), fl, nil)); v != xdpPass {
			t.Errorf("unannounced data packet (flags %#x): %s, want PASS", fl, verdictName(v))
		}
	}
	if ac := e.algCounters(t); ac.NotSYN != 1 || ac.DataOpened != 0 {
		t.Errorf("ALG counters %+v", ac)
	}
}

// TestFTPExpired: a data SYN after the expectation's TTL opens nothing and
// is counted.
func TestFTPExpired(t *testing.T) {
	e := ftpEnv(t)
	e.ownPairs()
	c := ftpCases()[0]
	c.open(t, e)
	c.reply(t, e, pasvLine(c.vip.Addr(), 30001))
	// age the expectation past its deadline
	var k lbExpectKey
	var x lbExpect
	it := e.dp.objs.Expects.Iterate()
	if !it.Next(&k, &x) {
		t.Fatalf("no expectation (%v)", it.Err())
	}
	x.DeadlineNs = 1
	e.must(e.dp.objs.Expects.Update(&k, &x, 0))
	if v, _ := e.run(tcpFrame(e.macB, e.routerMAC, ap("10.2.0.5:50000"), ap("10.100.0.10:30001"), tcpSYN, nil)); v != xdpPass {
		t.Errorf("SYN after the TTL: %s, want PASS", verdictName(v))
	}
	if ac := e.algCounters(t); ac.Expired != 1 || ac.DataOpened != 0 {
		t.Errorf("ALG counters %+v", ac)
	}
	if xs := e.expectations(t); len(xs) != 0 {
		t.Errorf("expired expectation kept: %+v", xs)
	}
}

// TestFTPSteer: at a node that does not own the client, the data
// connection's packets are steered like the control connection's, by the
// client's address alone (owner key port 0), in both directions: with
// two pairs, the control connection and data connections on other ports
// go to one owner. (The outer UDP source port is entropy for the
// backplane's ECMP, from the packet's own client port.)
func TestFTPSteer(t *testing.T) {
	e := ftpEnv(t)
	client := ip("10.2.0.5")
	owner, err := hashing.Owner(hashing.OwnerKey{Addr: client}, []uint32{1, 2})
	e.must(err)
	var pairs []Pair
	for _, id := range []uint32{1, 2} {
		pairs = append(pairs, Pair{ID: id, Live: true, Active: map[bool]netip.Addr{true: ip(peerBP), false: ip("10.1.0.21")}[id == owner]})
	}
	e.must(e.dp.SetPairs(pairs))
	for _, tc := range []struct {
		name  string
		inner []byte
		key   netip.AddrPort // the client's address and port
		reply bool
	}{
		{"control", tcpIP(ap("10.2.0.5:40000"), ap("10.100.0.10:21"), tcpSYN, nil), ap("10.2.0.5:40000"), false},
		{"passive data", tcpIP(ap("10.2.0.5:50000"), ap("10.100.0.10:30001"), tcpSYN, nil), ap("10.2.0.5:50000"), false},
		{"passive data 2", tcpIP(ap("10.2.0.5:50123"), ap("10.100.0.10:30077"), tcpACK, nil), ap("10.2.0.5:50123"), false},
		{"control reply", tcpIP(ap("10.1.0.12:21"), ap("10.2.0.5:40000"), tcpACK, []byte("227 x\r\n")), ap("10.2.0.5:40000"), true},
		{"active data", tcpIP(ap("10.1.0.12:20"), ap("10.2.0.5:50000"), tcpSYN, nil), ap("10.2.0.5:50000"), true},
	} {
		from := e.routerMAC
		if tc.reply {
			from = ftpBackendMAC
		}
		v, out := e.run(ethFrame(e.macB, from, nil, ethIPv4, tc.inner))
		if v != xdpRedirect {
			t.Fatalf("%s: verdict %s, want REDIRECT (reasons %v)", tc.name, verdictName(v), e.reasons())
		}
		diffFrames(t, tc.name, out, append(steerHeader(e, ip(peerBP), tc.key, owner, tc.reply, len(tc.inner)), tc.inner...))
	}
}

// TestFTPSNAT: USIP OFF: the passive data connection is source-NATed to
// the pair's SNIP like its control connection, and its replies come back.
func TestFTPSNAT(t *testing.T) {
	e := ftpEnv(t)
	e.ownPairs()
	client, vip, be := ap("10.2.0.5:40000"), ap("10.100.0.11:21"), ap("10.1.0.13:21")
	v, out := e.run(tcpFrame(e.macB, e.routerMAC, client, vip, tcpSYN, nil))
	if v != xdpRedirect {
		t.Fatalf("control SYN: %s (reasons %v)", verdictName(v), e.reasons())
	}
	snatCtl := srcOf(t, out)
	if snatCtl.Addr() != ip(snipStr) {
		t.Fatalf("control connection source %v, want the SNIP", snatCtl)
	}
	e.expectForward(t, tcpFrame(e.macA, ftpBackendMAC, be, snatCtl, tcpACK, []byte(pasvLine(vip.Addr(), 30005))),
		tcpFrame(neighMACFor(client.Addr()), e.macB, vip, client, tcpACK, []byte(pasvLine(vip.Addr(), 30005))))
	dc, dv, dbe := ap("10.2.0.5:50000"), ap("10.100.0.11:30005"), ap("10.1.0.13:30005")
	v, out = e.run(tcpFrame(e.macB, e.routerMAC, dc, dv, tcpSYN, nil))
	if v != xdpRedirect {
		t.Fatalf("data SYN: %s (reasons %v)", verdictName(v), e.reasons())
	}
	snatData := srcOf(t, out)
	if snatData.Addr() != ip(snipStr) || snatData == snatCtl {
		t.Fatalf("data connection source %v (control %v)", snatData, snatCtl)
	}
	diffFrames(t, "data SYN", out, tcpFrame(ftpBackendMAC, e.macA, snatData, dbe, tcpSYN, nil))
	e.expectForward(t, tcpFrame(e.macA, ftpBackendMAC, dbe, snatData, tcpSYN|tcpACK, nil),
		tcpFrame(neighMACFor(client.Addr()), e.macB, dv, dc, tcpSYN|tcpACK, nil))
}

// srcOf is the source address and port of a forwarded IPv4 TCP frame.
func srcOf(t *testing.T, frame []byte) netip.AddrPort {
	t.Helper()
	if len(frame) < 14+20+4 {
		t.Fatalf("frame of %d bytes", len(frame))
	}
	a := netip.AddrFrom4([4]byte(frame[26:30]))
	return netip.AddrPortFrom(a, uint16(frame[34])<<8|uint16(frame[35]))
}

// TestFTPTakeover: the partner installs the mirrored control and data
// flows of a passive transfer and carries the data on, both ways, to the
// same backend port.
func TestFTPTakeover(t *testing.T) {
	owner := ftpEnv(t)
	owner.ownPairs()
	c := ftpCases()[0]
	c.open(t, owner)
	c.reply(t, owner, pasvLine(c.vip.Addr(), 30001))
	dc, dv, dbe := ap("10.2.0.5:50000"), ap("10.100.0.10:30001"), ap("10.1.0.12:30001")
	owner.expectForward(t, tcpFrame(owner.macB, owner.routerMAC, dc, dv, tcpSYN, nil),
		tcpFrame(ftpBackendMAC, owner.macA, dc, dbe, tcpSYN, nil))
	var mirrored []standby.Entry
	owner.must(owner.dp.OwnedFlows(func(en standby.Entry) bool {
		var r standby.Record
		owner.must(en.Encode(&r)) // what travels to the partner
		back, err := r.Decode()
		owner.must(err)
		mirrored = append(mirrored, back)
		return true
	}))
	if len(mirrored) != 2 {
		t.Fatalf("mirrored %+v, want the control and the data flow", mirrored)
	}

	partner := ftpEnv(t)
	partner.ownPairs()
	n, err := partner.dp.InstallFlows(mirrored, 1)
	partner.must(err)
	if n != 2 {
		t.Fatalf("installed %d of 2", n)
	}
	data := bytes.Repeat([]byte("x"), 100)
	partner.expectForward(t, tcpFrame(partner.macB, partner.routerMAC, dc, dv, tcpACK, data),
		tcpFrame(ftpBackendMAC, partner.macA, dc, dbe, tcpACK, data))
	partner.expectForward(t, tcpFrame(partner.macA, ftpBackendMAC, dbe, dc, tcpACK, data),
		tcpFrame(neighMACFor(dc.Addr()), partner.macB, dv, dc, tcpACK, data))
	// a reply entry lost (an LRU evicts it alone, or a takeover did not
	// install it) is rebuilt from the data flow, for the VIPs the backend
	// serves (ftp_vips)
	var rk lbFlowKey
	for partner.dp.objs.Rflows.NextKey(nil, &rk) == nil {
		partner.must(partner.dp.objs.Rflows.Delete(&rk))
	}
	partner.expectForward(t, tcpFrame(partner.macA, ftpBackendMAC, dbe, dc, tcpACK, data),
		tcpFrame(neighMACFor(dc.Addr()), partner.macB, dv, dc, tcpACK, data))
	if n := mapLen(t, partner.dp.objs.Rflows); n != 1 {
		t.Errorf("%d reply entries after the data reply, want its rebuilt one", n)
	}
	// the control connection goes on, and its ALG with it
	c.reply(t, partner, pasvLine(c.vip.Addr(), 30002))
	if xs := partner.expectations(t); len(xs) != 1 || xs[0].DstPort != 30002 {
		t.Errorf("expectations after the takeover %+v", xs)
	}
}

// TestFTPMirrorExpectations: an expectation of a mirrored FTP vserver is
// reported on the events ring and listed for the bulk sync as a mirror
// entry; carried through the standby store (records, TTL) it is installed
// at the partner's takeover with the control flow, and a data connection
// opened after the owner died finds its backend there: passive (the
// client's SYN to VIP:port) and active (the backend's SYN, leaving from
// VIP:20), IPv4 and IPv6.
func TestFTPMirrorExpectations(t *testing.T) {
	for _, c := range ftpCases() {
		for _, passive := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s passive=%v", c.name, passive), func(t *testing.T) {
				owner := ftpEnv(t)
				owner.ownPairs()
				r, err := owner.dp.Events()
				owner.must(err)
				t.Cleanup(func() { r.Close() })
				c.open(t, owner)
				readEvent(t, r)
				const port = 30001
				v4 := c.client.Addr().Is4()
				switch {
				case passive && v4:
					c.reply(t, owner, pasvLine(c.vip.Addr(), port))
				case passive:
					c.reply(t, owner, fmt.Sprintf("229 Entering Extended Passive Mode (|||%d|)\r\n", port))
				case v4:
					c.command(t, owner, portLine(c.client.Addr(), port))
				default:
					c.command(t, owner, fmt.Sprintf("EPRT |2|%s|%d|\r\n", c.client.Addr(), port))
				}
				ev := readEvent(t, r)
				if ev.Kind != EventExpect || !IsExpectation(&ev.Entry) || ev.Entry.VServerID != c.vs {
					t.Fatalf("expectation event %+v", ev)
				}
				if l := ev.Entry.IdleTimeout; l < 29*time.Second || l > 30*time.Second {
					t.Errorf("mirrored expectation lives %v, want the TTL left (30s)", l)
				}
				var bulk []standby.Entry
				owner.must(owner.dp.OwnedFlows(func(e standby.Entry) bool { bulk = append(bulk, e); return true }))
				owner.must(owner.dp.ExpectationEntries(func(e standby.Entry) bool { bulk = append(bulk, e); return true }))
				if len(bulk) != 2 || bulk[1] != ev.Entry {
					t.Fatalf("bulk sync %+v, want the control flow and %+v", bulk, ev.Entry)
				}

				store, err := standby.New(standby.Config{FlowLimit: 1000})
				owner.must(err)
				t.Cleanup(store.Close)
				recs := make([]standby.Record, len(bulk))
				for i := range bulk {
					owner.must(bulk[i].Encode(&recs[i]))
				}
				if n, err := store.Upsert("owner", recs); err != nil || n != 2 {
					t.Fatalf("store kept %d of 2: %v", n, err)
				}

				partner := ftpEnv(t)
				partner.ownPairs()
				// the node's installer: flows into the flow table,
				// expectations into the expectations table
				in := &Installer{D: partner.dp, Owner: 1}
				if _, err := store.Takeover("owner", in); err != nil {
					t.Fatal(err)
				}
				if xs := partner.expectations(t); in.Installed != 1 || len(xs) != 1 {
					t.Fatalf("installed %d flows and %d expectations, want 1 and 1", in.Installed, len(xs))
				}
				if passive {
					dc := netip.AddrPortFrom(c.client.Addr(), 50000)
					dv := netip.AddrPortFrom(c.vip.Addr(), port)
					partner.expectForward(t, tcpFrame(partner.macB, partner.routerMAC, dc, dv, tcpSYN, nil),
						tcpFrame(ftpBackendMAC, partner.macA, dc, netip.AddrPortFrom(c.be.Addr(), port), tcpSYN, nil))
				} else {
					bd := netip.AddrPortFrom(c.be.Addr(), 20)
					cd := netip.AddrPortFrom(c.client.Addr(), port)
					partner.expectForward(t, tcpFrame(partner.macA, ftpBackendMAC, bd, cd, tcpSYN, nil),
						tcpFrame(neighMACFor(c.client.Addr()), partner.macB, netip.AddrPortFrom(c.vip.Addr(), 20), cd, tcpSYN, nil))
				}
				if ac := partner.algCounters(t); ac.DataOpened != 1 {
					t.Errorf("partner's ALG counters %+v", ac)
				}
			})
		}
	}
}

// BenchmarkFTPControlReply: the backend's replies on an FTP control
// connection, through the whole program: a 227 (the ALG parses it and
// inserts an expectation) against an ordinary reply line (the ALG finds no
// line of its kinds) and a pure ACK (nothing to read).
func BenchmarkFTPControlReply(b *testing.B) {
	for _, bc := range []struct {
		name    string
		payload string
	}{
		{"227", "227 Entering Passive Mode (10,100,0,10,117,49).\r\n"},
		{"150", "150 Opening BINARY mode data connection for f.bin (8388608 bytes).\r\n"},
		{"ack", ""},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e := ftpEnv(b)
			e.ownPairs()
			c := ftpCases()[0]
			if v, _ := e.run(tcpFrame(e.macB, e.routerMAC, c.client, c.vip, tcpSYN, nil)); v != xdpRedirect {
				b.Fatalf("control SYN: %s", verdictName(v))
			}
			f := tcpFrame(e.macA, ftpBackendMAC, c.be, c.client, tcpACK, []byte(bc.payload))
			runBench(b, e, benchCase{verdict: xdpRedirect, frame: func(int) []byte { return f }})
		})
	}
}

// BenchmarkFTPDataOpen: the first packet of a passive data connection
// consumes its expectation and opens the flow (expectation lookup and
// delete, flow and reply entry inserts, event); the expectation is put back
// outside the measured time.
func BenchmarkFTPDataOpen(b *testing.B) {
	e := ftpEnv(b)
	e.ownPairs()
	c := ftpCases()[0]
	if v, _ := e.run(tcpFrame(e.macB, e.routerMAC, c.client, c.vip, tcpSYN, nil)); v != xdpRedirect {
		b.Fatalf("control SYN: %s", verdictName(v))
	}
	reply := tcpFrame(e.macA, ftpBackendMAC, c.be, c.client, tcpACK, []byte(pasvLine(c.vip.Addr(), 30001)))
	if v, _ := e.run(reply); v != xdpRedirect {
		b.Fatalf("227: %s", verdictName(v))
	}
	var k lbExpectKey
	var x lbExpect
	it := e.dp.objs.Expects.Iterate()
	if !it.Next(&k, &x) {
		b.Fatal("no expectation")
	}
	runBench(b, e, benchCase{
		verdict: xdpRedirect,
		frame: func(i int) []byte {
			src := netip.AddrPortFrom(c.client.Addr(), uint16(1024+i%60000))
			return tcpFrame(e.macB, e.routerMAC, src, ap("10.100.0.10:30001"), tcpSYN, nil)
		},
		after: func(int) error { return e.dp.objs.Expects.Update(&k, &x, 0) },
	})
}

// FuzzFTPControl sends arbitrary payloads on an FTP control connection,
// from the client and from the backend, through the whole program. The
// segment is always forwarded with its payload untouched, and an
// expectation exists afterwards exactly when the reference parser
// (alg.Check) accepts the line, with its kind and port.
func FuzzFTPControl(f *testing.F) {
	e := ftpEnv(f)
	e.ownPairs()
	c := ftpCases()[0]
	if v, _ := e.run(tcpFrame(e.macB, e.routerMAC, c.client, c.vip, tcpSYN, nil)); v != xdpRedirect {
		f.Fatalf("control SYN: %s", verdictName(v))
	}
	for _, s := range []string{
		pasvLine(c.vip.Addr(), 30001), portLine(c.client.Addr(), 50000), "EPRT |1|10.2.0.5|50001|\r\n",
		"229 Entering Extended Passive Mode (|||30002|)\r\n", "227 (10,100,0,10,1,2", "PORT 1,2,3,4,5,6\r\n",
	} {
		f.Add(false, []byte(s))
		f.Add(true, []byte(s))
	}
	f.Fuzz(func(t *testing.T, fromClient bool, payload []byte) {
		if len(payload) > 1400 {
			t.Skip("one segment")
		}
		// start from no expectation
		var k lbExpectKey
		for e.dp.objs.Expects.NextKey(nil, &k) == nil {
			if err := e.dp.objs.Expects.Delete(&k); err != nil {
				t.Fatal(err)
			}
		}
		dir := alg.FromBackend
		in := tcpFrame(e.macA, ftpBackendMAC, c.be, c.client, tcpACK, payload)
		want := tcpFrame(neighMACFor(c.client.Addr()), e.macB, c.vip, c.client, tcpACK, payload)
		if fromClient {
			dir = alg.FromClient
			in = tcpFrame(e.macB, e.routerMAC, c.client, c.vip, tcpACK, payload)
			want = tcpFrame(ftpBackendMAC, e.macA, c.client, c.be, tcpACK, payload)
		}
		v, out, err := e.tryRun(e.dp.Program(), in)
		if err != nil {
			t.Fatal(err)
		}
		if v != xdpRedirect {
			t.Fatalf("%q: verdict %s, want REDIRECT", payload, verdictName(v))
		}
		diffFrames(t, "forwarded", out, want)
		xs, err := e.dp.Expectations()
		if err != nil {
			t.Fatal(err)
		}
		ref, reason := alg.Check(payload, dir, c.vip.Addr(), c.client.Addr())
		if ref.Kind == alg.KindNone || reason != alg.ReasonOK {
			if len(xs) != 0 {
				t.Fatalf("%q: expectations %+v, the reference makes none (%v %v)", payload, xs, ref.Kind, reason)
			}
			return
		}
		if len(xs) != 1 || xs[0].Kind != ref.Kind || xs[0].DstPort != ref.Port {
			t.Fatalf("%q: expectations %+v, the reference makes %+v", payload, xs, ref)
		}
	})
}

// TestFTPSweepExpectations: expired expectations and those whose control
// connection closed are deleted; live ones stay.
func TestFTPSweepExpectations(t *testing.T) {
	e := ftpEnv(t)
	e.ownPairs()
	c := ftpCases()[0]
	c.open(t, e)
	c.reply(t, e, pasvLine(c.vip.Addr(), 30001))
	c.command(t, e, portLine(c.client.Addr(), 50000))
	if n, err := e.dp.SweepExpectations(); err != nil || n != 0 {
		t.Fatalf("swept %d live expectations (%v)", n, err)
	}
	if xs := e.expectations(t); len(xs) != 2 {
		t.Fatalf("expectations %+v, want 2", xs)
	}
	// a second control connection's expectation, aged past its deadline
	c2 := c
	c2.client = ap("10.2.0.5:40001")
	c2.open(t, e)
	c2.reply(t, e, pasvLine(c.vip.Addr(), 30002))
	var k lbExpectKey
	var x lbExpect
	it := e.dp.objs.Expects.Iterate()
	for it.Next(&k, &x) {
		if ntohs(k.Dport) == 30002 {
			x.DeadlineNs = 1
			e.must(e.dp.objs.Expects.Update(&k, &x, 0))
		}
	}
	if n, err := e.dp.SweepExpectations(); err != nil || n != 1 {
		t.Fatalf("swept %d (%v), want the expired one", n, err)
	}
	// the first control connection closes: both of its expectations go
	e.expectForward(t, tcpFrame(e.macB, e.routerMAC, c.client, c.vip, tcpFIN|tcpACK, nil),
		tcpFrame(ftpBackendMAC, e.macA, c.client, c.be, tcpFIN|tcpACK, nil))
	if n, err := e.dp.SweepExpectations(); err != nil || n != 2 {
		t.Fatalf("swept %d (%v), want the closed control connection's 2", n, err)
	}
	if xs := e.expectations(t); len(xs) != 0 {
		t.Errorf("expectations left %+v", xs)
	}
}
