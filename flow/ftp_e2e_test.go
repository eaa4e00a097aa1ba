package flow

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandem-lb/tandem/flow/alg"
	"github.com/tandem-lb/tandem/flow/standby"
	"github.com/tandem-lb/tandem/test/netns"
)

// ftpLab is the topology of the FTP end-to-end tests:
//
//	client tfc0 ---- tfn0 node tfn1 ---- tfb0 backend1 (vsftpd, v4 and v6)
//	                          tfn2 ---- tfb0 backend2 (vsftpd, v4 and v6)
//
// Each backend serves a different random file f.bin of the given size, with
// vsftpd from deploy/ftp/vsftpd.conf and test-only overrides, one instance
// per address family plus one per family on port 2121 for the USIP OFF
// vservers (the IPv4 one advertises its VIP).
type ftpLab struct {
	client, node *netns.NetNS
	backends     []*netns.NetNS
	dir          string
	sums         map[[32]byte]int // file checksum -> backend (1, 2)

	vip4, vip6, vipSNAT, snip netip.Addr
	vipSNAT6, snip6           netip.Addr
}

func newFTPLab(t *testing.T, size int) *ftpLab {
	t.Helper()
	netns.RequireRoot(t)
	for _, bin := range []string{"/usr/sbin/vsftpd", "curl"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s (Debian packages vsftpd and curl; deploy/install-deps.sh): %v", bin, err)
		}
	}
	example, err := os.ReadFile("../deploy/ftp/vsftpd.conf")
	if err != nil {
		t.Fatal(err)
	}
	l := &ftpLab{
		client: netns.New(t), node: netns.New(t), backends: []*netns.NetNS{netns.New(t), netns.New(t)},
		dir: t.TempDir(), sums: map[[32]byte]int{},
		vip4: ip("10.97.100.10"), vip6: ip("fd97:100::10"), vipSNAT: ip("10.97.100.11"), snip: ip("10.97.200.1"),
		vipSNAT6: ip("fd97:100::11"), snip6: ip("fd97:200::1"),
	}
	client, node, backends := l.client, l.node, l.backends
	for _, ns := range []*netns.NetNS{client, node, backends[0], backends[1]} {
		ns.Sysctl("net.ipv4.conf.all.rp_filter", "0")
		ns.Sysctl("net.ipv4.conf.default.rp_filter", "0")
		ns.Sysctl("net.ipv6.conf.all.accept_dad", "0")
		ns.Sysctl("net.ipv6.conf.default.accept_dad", "0")
	}
	// The backends' own ports (an active data connection of the USIP OFF
	// instance, which connects from any port) stay out of the passive
	// ranges (30000-33099): the checks below tell the two apart by port.
	for _, b := range backends {
		b.Sysctl("net.ipv4.ip_local_port_range", "40000 60999")
	}
	node.Sysctl("net.ipv4.ip_forward", "1")
	node.Sysctl("net.ipv6.conf.all.forwarding", "1")
	netns.Veth(t, client, "tfc0", node, "tfn0")
	nsRun(t, client, "ip", "addr", "add", "10.97.1.2/24", "dev", "tfc0")
	nsRun(t, client, "ip", "-6", "addr", "add", "fd97:1::2/64", "dev", "tfc0", "nodad")
	nsRun(t, client, "ip", "route", "add", "default", "via", "10.97.1.1")
	nsRun(t, client, "ip", "-6", "route", "add", "default", "via", "fd97:1::1")
	nsRun(t, node, "ip", "addr", "add", "10.97.1.1/24", "dev", "tfn0")
	nsRun(t, node, "ip", "-6", "addr", "add", "fd97:1::1/64", "dev", "tfn0", "nodad")
	for i, b := range backends {
		nif := fmt.Sprintf("tfn%d", i+1)
		netns.Veth(t, node, nif, b, "tfb0")
		nsRun(t, node, "ip", "addr", "add", fmt.Sprintf("10.97.%d.1/24", i+2), "dev", nif)
		nsRun(t, node, "ip", "-6", "addr", "add", fmt.Sprintf("fd97:%d::1/64", i+2), "dev", nif, "nodad")
		nsRun(t, b, "ip", "addr", "add", fmt.Sprintf("10.97.%d.2/24", i+2), "dev", "tfb0")
		nsRun(t, b, "ip", "-6", "addr", "add", fmt.Sprintf("fd97:%d::2/64", i+2), "dev", "tfb0", "nodad")
		nsRun(t, b, "ip", "route", "add", "default", "via", fmt.Sprintf("10.97.%d.1", i+2))
		nsRun(t, b, "ip", "-6", "route", "add", "default", "via", fmt.Sprintf("fd97:%d::1", i+2))
		b.DisableTxChecksum("tfb0")
	}
	client.DisableTxChecksum("tfc0")
	// a pass program on the peers gives them the NAPI context that
	// redirected frames need
	pass := newDatapath(t, Config{TableSize: 251, MaxVServers: 4})
	attachIn(t, client, pass.PassProgram(), "tfc0")
	for _, b := range backends {
		attachIn(t, b, pass.PassProgram(), "tfb0")
	}

	dir := l.dir
	for _, p := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i, b := range backends {
		root := filepath.Join(dir, fmt.Sprintf("root%d", i+1))
		if err := os.Mkdir(root, 0o755); err != nil {
			t.Fatal(err)
		}
		data := make([]byte, size)
		_, _ = rand.Read(data)
		if err := os.WriteFile(filepath.Join(root, "f.bin"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		l.sums[sha256.Sum256(data)] = i + 1
		common := []string{"anonymous_enable=YES", "anon_root=" + root, "local_enable=NO", "chroot_local_user=NO",
			"xferlog_enable=NO", fmt.Sprintf("pasv_min_port=%d", 30000+1000*i), fmt.Sprintf("pasv_max_port=%d", 30099+1000*i)}
		for fam, extra := range map[string][]string{
			"v4": {fmt.Sprintf("listen_address=10.97.%d.2", i+2), "pasv_address=" + l.vip4.String()},
			"v6": {"listen=NO", "listen_ipv6=YES", fmt.Sprintf("listen_address6=fd97:%d::2", i+2)},
			// USIP OFF: the control connection comes from the SNIP, a
			// PORT names the client (deploy/ftp/README.md: active mode
			// then needs port_promiscuous=YES); this instance connects
			// from any port (the data plane keeps it): with
			// connect_from_port_20 it failed here with "500 OOPS:
			// vsf_sysutil_bind" after the port-21 instance on the same
			// address had used port 20
			"snat": {fmt.Sprintf("listen_address=10.97.%d.2", i+2), "listen_port=2121", "pasv_address=" + l.vipSNAT.String(),
				fmt.Sprintf("pasv_min_port=%d", 32000+1000*i), fmt.Sprintf("pasv_max_port=%d", 32099+1000*i),
				"port_promiscuous=YES", "connect_from_port_20=NO"},
			// USIP OFF over IPv6 (vipSNAT6): an EPSV reply names no
			// address, so no pasv_address
			"snat6": {"listen=NO", "listen_ipv6=YES", fmt.Sprintf("listen_address6=fd97:%d::2", i+2), "listen_port=2121",
				fmt.Sprintf("pasv_min_port=%d", 32000+1000*i), fmt.Sprintf("pasv_max_port=%d", 32099+1000*i),
				"port_promiscuous=YES", "connect_from_port_20=NO"},
		} {
			conf := filepath.Join(dir, fmt.Sprintf("b%d%s.conf", i+1, fam))
			text := append(append([]byte{}, example...), []byte(strings.Join(append(common, extra...), "\n")+"\n")...)
			if err := os.WriteFile(conf, text, 0o644); err != nil {
				t.Fatal(err)
			}
			b.Start("/usr/sbin/vsftpd", conf)
		}
	}
	return l
}

// datapath loads a data plane programmed for the lab, not attached: this
// node is the active member of pair 1, whose SNIP the backends reach
// through it (their default route); vservers 0 (vip4), 1 (vip6), 2
// (vipSNAT, USIP OFF) and 3 (vipSNAT6, USIP OFF) are FTP, ROUNDROBIN,
// mirrored.
func (l *ftpLab) datapath(t *testing.T) *Datapath {
	t.Helper()
	d := newDatapath(t, Config{TableSize: 251, MaxVServers: 4})
	if err := d.SetPairs([]Pair{{ID: 1, Live: true, Local: true, SNIPs: []netip.Addr{l.snip, l.snip6}, SNATPorts: [2]uint16{40000, 40999}}}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []VServer{
		{ID: 0, VIP: l.vip4, Port: 21, Protocol: ProtoTCP, Method: MethodRoundRobin, Owned: true, Mirror: true, FTP: true},
		{ID: 1, VIP: l.vip6, Port: 21, Protocol: ProtoTCP, Method: MethodRoundRobin, Owned: true, Mirror: true, FTP: true},
		{ID: 2, VIP: l.vipSNAT, Port: 21, Protocol: ProtoTCP, Method: MethodRoundRobin, Owned: true, Mirror: true, FTP: true, SNAT: true},
		{ID: 3, VIP: l.vipSNAT6, Port: 21, Protocol: ProtoTCP, Method: MethodRoundRobin, Owned: true, Mirror: true, FTP: true, SNAT: true},
	} {
		if err := d.SetVServer(v); err != nil {
			t.Fatal(err)
		}
		var ids []uint32
		for i := range l.backends {
			id := uint32(1 + 2*v.ID + uint32(i))
			a := ip(fmt.Sprintf("10.97.%d.2", i+2))
			if v.VIP.Is6() {
				a = ip(fmt.Sprintf("fd97:%d::2", i+2))
			}
			port := uint16(21)
			if v.SNAT {
				port = 2121 // the USIP OFF instances
			}
			if err := d.SetBackend(Backend{ID: id, Addr: a, Port: port}); err != nil {
				t.Fatal(err)
			}
			if err := d.SetReverse(Reverse{Addr: a, Port: port, Protocol: ProtoTCP, VServerID: v.ID, BackendID: id, Stateful: true}); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		if err := d.SetVServerBackends(v.ID, ids); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// attach attaches d to the node's three interfaces.
func (l *ftpLab) attach(t *testing.T, d *Datapath) {
	t.Helper()
	for _, nif := range []string{"tfn0", "tfn1", "tfn2"} {
		if err := l.node.Do(func() error { return d.Attach(nif) }); err != nil {
			t.Fatalf("attaching to %s: %v", nif, err)
		}
	}
}

func ftpURL(vip netip.Addr) string {
	if vip.Is6() {
		return fmt.Sprintf("ftp://[%s]/f.bin", vip)
	}
	return fmt.Sprintf("ftp://%s/f.bin", vip)
}

// TestFTPEndToEnd downloads files with curl from two vsftpd backends
// through a node running the data plane (ftpLab), in every FTP mode (EPSV,
// PASV, EPRT, PORT over IPv4; EPSV and EPRT over IPv6) with USIP ON, and
// with USIP OFF in passive mode (EPSV, PASV over IPv4, EPSV over IPv6:
// source NAT to the pair's SNIP of the family, for control and data
// connections alike) and active mode (PORT over IPv4, EPRT over IPv6, with
// vsftpd's port_promiscuous=YES: the backend connects to the client itself,
// no source NAT). The VIP is configured nowhere:
// the control connection, and the data connection the ALG expects, both
// exist only through the XDP program. Each backend serves a different 4 MiB
// file under the same name; the client's copy must be one of them, byte for
// byte, and the round robin must have used both backends. vsftpd with
// pasv_promiscuous=NO and port_promiscuous=NO accepts a data connection only
// from the control connection's client, so a data connection sent to the
// other backend, or from another address, fails the download.
func TestFTPEndToEnd(t *testing.T) {
	l := newFTPLab(t, 4<<20)
	client, dir, sums := l.client, l.dir, l.sums
	vip4, vip6, vipSNAT := l.vip4, l.vip6, l.vipSNAT
	d := l.datapath(t)
	l.attach(t, d)
	var err error

	runs := []struct {
		name string
		vip  netip.Addr
		args []string
		kind alg.Kind
	}{
		{"EPSV", vip4, nil, alg.KindEPSV},
		{"PASV", vip4, []string{"--disable-epsv"}, alg.KindPASV},
		{"EPRT", vip4, []string{"--ftp-port", "10.97.1.2"}, alg.KindEPRT},
		{"PORT", vip4, []string{"--ftp-port", "10.97.1.2", "--disable-eprt"}, alg.KindPORT},
		{"EPSV6", vip6, nil, alg.KindEPSV},
		{"EPRT6", vip6, []string{"--ftp-port", "fd97:1::2"}, alg.KindEPRT},
		{"EPSV USIP OFF", vipSNAT, nil, alg.KindEPSV},
		{"PASV USIP OFF", vipSNAT, []string{"--disable-epsv"}, alg.KindPASV},
		{"PORT USIP OFF", vipSNAT, []string{"--ftp-port", "10.97.1.2", "--disable-eprt"}, alg.KindPORT},
		{"EPSV6 USIP OFF", l.vipSNAT6, nil, alg.KindEPSV},
		{"EPRT6 USIP OFF", l.vipSNAT6, []string{"--ftp-port", "fd97:1::2"}, alg.KindEPRT},
	}
	served := map[int]int{}
	start := time.Now()
	for _, r := range runs {
		// each mode twice: the round robin sends them to both backends
		for rep := 0; rep < 2; rep++ {
			out := filepath.Join(dir, "out")
			os.Remove(out)
			url := ftpURL(r.vip)
			args := append([]string{"-sS", "-v", "-g", "--connect-timeout", "5", "--max-time", "20", "-o", out}, r.args...)
			args = append(args, url)
			var log string
			deadline := time.Now().Add(5 * time.Second)
			for {
				// vsftpd may still be starting: retry the first few seconds
				log, err = client.Run("curl", args...)
				if err == nil || time.Since(start) > 10*time.Second || time.Now().After(deadline) {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if err != nil {
				ac, _ := d.ALGCounters()
				t.Fatalf("%s: curl: %v\n%s\nreasons %v\nALG %+v", r.name, err, log, mustReasons(d), ac)
			}
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			be, ok := sums[sha256.Sum256(got)]
			if !ok {
				t.Fatalf("%s: downloaded %d bytes that are neither backend's file", r.name, len(got))
			}
			served[be]++
			if !bytes.Contains([]byte(log), []byte(map[alg.Kind]string{alg.KindEPSV: "EPSV", alg.KindPASV: "PASV", alg.KindEPRT: "EPRT", alg.KindPORT: "PORT"}[r.kind])) {
				t.Errorf("%s: curl did not use %s:\n%s", r.name, r.kind, log)
			}
		}
	}
	t.Logf("downloads per backend: %v (%d of 4 MiB in %v)", served, 2*len(runs), time.Since(start).Round(time.Millisecond))
	if served[1] == 0 || served[2] == 0 {
		t.Errorf("downloads per backend %v: the round robin should have used both", served)
	}
	ac, err := d.ALGCounters()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ALG counters: %+v", ac)
	if want := uint64(2 * len(runs)); ac.DataOpened != want {
		t.Errorf("%d data connections opened by expectations, want %d", ac.DataOpened, want)
	}
	if ac.Refused() != 0 {
		t.Errorf("refused lines: %+v", ac.Lines)
	}
	for _, r := range runs {
		if ac.Lines[r.kind][alg.ReasonOK] == 0 {
			t.Errorf("no %s line made an expectation", r.kind)
		}
	}
	// USIP OFF: the passive data connections were source-NATed like
	// their control connections (vsftpd, pasv_promiscuous=NO, accepted them
	// because both came from the SNIP of their family); the active ones
	// come from the backend to the client itself and are not
	snatData, activeData := map[uint32]int{}, map[uint32]int{}
	var k lbFlowKey
	var f lbFlow
	it := d.objs.Flows.Iterate()
	for it.Next(&k, &f) {
		if f.VsId != 2 && f.VsId != 3 {
			continue
		}
		snip := map[uint32]netip.Addr{2: l.snip, 3: l.snip6}[f.VsId]
		active := f.Flags&FlowFlagFTPData != 0 && (ntohs(k.Dport) < 32000 || ntohs(k.Dport) > 33099) // not a passive port
		switch {
		case active && f.Flags&FlowFlagSNAT != 0:
			t.Errorf("USIP OFF active data flow %+v source-NATed", k)
		case active:
			activeData[f.VsId]++
		case f.Flags&FlowFlagSNAT == 0 || wordsAddr(f.Snat, k.Family) != snip:
			t.Errorf("USIP OFF flow %+v not source-NATed to %v", k, snip)
		case f.Flags&FlowFlagFTPData != 0:
			snatData[f.VsId]++
		}
	}
	// IPv4: EPSV and PASV passive, PORT active; IPv6: EPSV, EPRT; twice each
	if snatData[2] != 4 || activeData[2] != 2 || snatData[3] != 2 || activeData[3] != 2 {
		t.Errorf("source-NATed passive data flows %v and active %v per vserver, want 2:4 3:2 and 2:2 3:2", snatData, activeData)
	}
	t.Logf("reasons: %v", mustReasons(d))
}

// TestFTPTakeoverEndToEnd: a download in progress survives the death of
// the node that owns it. Mid-transfer, the owner's mirrored state (its
// owned flows and pending expectations, through the records the mirror
// carries) is installed into a second data plane, the owner's data plane is
// closed (its maps and program gone, as when the node dies) and the second
// one attached in its place, as a partner taking the pair over: the
// transfer completes with the right checksum, carried by the second data
// plane. Passive and active mode, IPv4 and IPv6, and passive with USIP
// OFF.
func TestFTPTakeoverEndToEnd(t *testing.T) {
	const size = 6 << 20
	l := newFTPLab(t, size)
	// a small receive buffer keeps the transfer on the wire at curl's
	// rate: with the default, the rest of the file can sit in the client's
	// socket buffer before the takeover
	l.client.Sysctl("net.ipv4.tcp_rmem", "4096 65536 131072")
	for _, r := range []struct {
		name string
		vip  netip.Addr
		vs   uint32
		args []string
	}{
		{"EPSV", l.vip4, 0, nil},
		{"PORT", l.vip4, 0, []string{"--ftp-port", "10.97.1.2", "--disable-eprt"}},
		{"EPSV6", l.vip6, 1, nil},
		{"EPRT6", l.vip6, 1, []string{"--ftp-port", "fd97:1::2"}},
		{"PASV USIP OFF", l.vipSNAT, 2, []string{"--disable-epsv"}},
	} {
		t.Run(r.name, func(t *testing.T) {
			owner := l.datapath(t)
			// the partner's data plane is loaded before the transfer: a
			// load takes the verifier a while on a busy machine
			partner := l.datapath(t)
			l.attach(t, owner)
			out := filepath.Join(l.dir, "takeover.out")
			os.Remove(out)
			args := append([]string{"-sS", "-v", "-g", "--connect-timeout", "5", "--max-time", "30", "--limit-rate", "2M", "-o", out}, r.args...)
			var curl *netns.Proc
			var got int64
			deadline := time.Now().Add(15 * time.Second)
			for {
				// Retry until the transfer is caught in progress: vsftpd
				// may still be starting, and curl's rate limit lets a
				// burst through now and then.
				os.Remove(out)
				curl = l.client.Start("curl", append(args, ftpURL(r.vip))...)
				for !curl.Exited() && fileSize(out) < 1<<20 && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
				got = fileSize(out)
				if (!curl.Exited() && got < size) || time.Now().After(deadline) {
					break
				}
				if err := curl.Kill(); err != nil {
					t.Fatal(err)
				}
				time.Sleep(100 * time.Millisecond)
			}
			if curl.Exited() || got >= size {
				t.Fatalf("the transfer is not in progress (%d bytes, curl exited %v): %s", got, curl.Exited(), curl.Output())
			}

			// the mirror's records of the owner's state
			var recs []standby.Record
			add := func(e standby.Entry) bool {
				var rec standby.Record
				if err := e.Encode(&rec); err != nil {
					t.Errorf("encoding %+v: %v", e, err)
				}
				recs = append(recs, rec)
				return true
			}
			if err := owner.OwnedFlows(add); err != nil {
				t.Fatal(err)
			}
			if err := owner.ExpectationEntries(add); err != nil {
				t.Fatal(err)
			}
			var flows, expects []standby.Entry
			for i := range recs {
				e, err := recs[i].Decode()
				if err != nil {
					t.Fatal(err)
				}
				if IsExpectation(&e) {
					expects = append(expects, e)
				} else {
					flows = append(flows, e)
				}
			}
			dataFlows := 0
			for _, e := range flows {
				if e.Flags&FlowFlagFTPData != 0 {
					dataFlows++
				}
			}
			if dataFlows != 1 {
				t.Fatalf("mirrored %d data flows, want 1: %+v", dataFlows, flows)
			}

			n, err := partner.InstallFlows(flows, 1)
			if err != nil || n != len(flows) {
				t.Fatalf("installed %d of %d flows: %v", n, len(flows), err)
			}
			if _, err := partner.InstallExpectations(expects); err != nil {
				t.Fatal(err)
			}
			if curl.Exited() || fileSize(out) >= size {
				t.Fatalf("the transfer ended before the takeover: %s", curl.Output())
			}
			// The owner dies. Its node's kernel must not forward
			// meanwhile: a dead node forwards nothing, and a backend's
			// packet forwarded un-rewritten makes the client reset the
			// connection.
			l.node.Sysctl("net.ipv4.ip_forward", "0")
			l.node.Sysctl("net.ipv6.conf.all.forwarding", "0")
			if err := owner.Close(); err != nil {
				t.Fatal(err)
			}
			l.attach(t, partner)
			l.node.Sysctl("net.ipv4.ip_forward", "1")
			l.node.Sysctl("net.ipv6.conf.all.forwarding", "1")
			t.Cleanup(func() { partner.Close() })
			if err := curl.Wait(); err != nil {
				t.Fatalf("curl after the takeover at %d bytes: %v: %s (partner reasons %v)", got, err, curl.Output(), mustReasons(partner))
			}
			data, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := l.sums[sha256.Sum256(data)]; !ok {
				t.Fatalf("downloaded %d bytes that are neither backend's file", len(data))
			}
			c, err := partner.VServerCounters(r.vs)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("taken over at %d of %d bytes; the partner carried %d packets and %d replies", got, size, c.Packets, c.RevPackets)
			if c.RevPackets == 0 {
				t.Errorf("the partner carried no replies: %+v (reasons %v, installed %+v)\n%s", c, mustReasons(partner), flows, curl.Output())
			}
			partner.Close()
		})
	}
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
