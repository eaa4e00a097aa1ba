package chaos

import (
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tandem-lb/tandem/deploy/lab"
)

// TestChaosSSLBridge is the end-to-end proof of stateful failover for
// SSL_BRIDGE vservers: TLS passes through the lab's tls4/tls6 vservers
// (STATEFUL, ROUNDROBIN with SOURCEIP persistence) untouched to Go TLS
// backends. Six TLS sessions (three per family) stream verified records for
// 25 s; 8 s in, the active member of the pair owning most of them is
// SIGKILLed. Every session must stream on to its end with every byte
// checked and the same backend; then a second connection from each
// session's client address, with the session's ticket, must resume it on
// the same backend (each backend has its own ticket key). Before that,
// HTTP and SSL vservers with connection failover must be refused with
// the rule and the fix.
func TestChaosSSLBridge(t *testing.T) {
	r, ctx := startLab(t, Config{Lab: lab.Config{Name: "tz"}, TCPFlows: 1, UDPFlows: 1})
	t.Cleanup(func() { r.Lab().StopApps() })
	if _, err := r.SetupApps(ctx, false, 0); err != nil {
		t.Fatal(err)
	}
	refusals, err := r.CheckRefusals(ctx)
	t.Logf("refusals:\n%s", strings.Join(refusals, "\n"))
	if err != nil {
		t.Error(err)
	}
	res, err := r.RunTLS(ctx, TLSConfig{})
	if res != nil {
		t.Logf("\n%s%s", res.Table(), strings.Join(res.Lines(), "\n"))
		for _, f := range res.Failures() {
			t.Error(f)
		}
		fams := map[bool]int{}
		for _, s := range res.TLS {
			fams[s.Dst.Addr().Is4()]++
		}
		if fams[true] == 0 || fams[false] == 0 {
			t.Errorf("sessions per family (IPv4 true) %v, want both", fams)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestChaosFTP downloads a 200 MB file through the lab's FTP STATEFUL
// vservers (vsftpd backends advertising the VIP) with curl, in passive and
// in active mode, while the node owning the transfer is SIGKILLed, then
// while it is frozen past the BGP hold time (IPv4), and SIGKILLed (IPv6):
// every download must complete with the file's checksum.
func TestChaosFTP(t *testing.T) {
	if _, err := os.Stat("/usr/sbin/vsftpd"); err != nil {
		t.Skip("needs /usr/sbin/vsftpd (make deps)")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("needs curl (make deps)")
	}
	r, ctx := startLab(t, Config{Lab: lab.Config{Name: "tz"}, TCPFlows: 1, UDPFlows: 1})
	t.Cleanup(func() { r.Lab().StopApps() })
	file, err := r.SetupApps(ctx, true, 200<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("FTP file %s: %d bytes, sha256 %s", file.Path, file.Size, file.SHA256)
	var runs []FTPConfig
	for _, sc := range []Scenario{Kill9, Freeze} {
		for _, active := range []bool{false, true} {
			runs = append(runs, FTPConfig{Scenario: sc, Active: active})
		}
	}
	// IPv6 (EPSV and EPRT |2|): kill9 only, to keep the test near 2 min;
	// chaosapps runs freeze too.
	runs = append(runs, FTPConfig{Scenario: Kill9, IPv6: true}, FTPConfig{Scenario: Kill9, IPv6: true, Active: true})
	for _, run := range runs {
		res, err := r.RunFTP(ctx, run, file)
		if res != nil {
			t.Logf("\n%s%s", res.Table(), strings.Join(res.Lines(), "\n"))
			for _, f := range res.Failures() {
				t.Error(f)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestAppResultLinesAndFailures(t *testing.T) {
	ok := &TLSSession{Src: netip.MustParseAddrPort("198.18.1.16:40000"), Dst: netip.MustParseAddrPort("198.19.0.12:443"),
		Backend: "b2", RoundTrips: 900, MaxStall: 1200 * time.Millisecond, Took: 25 * time.Second, CarrierStart: "n1", CarrierEnd: "n3"}
	ok.Resume.DidResume, ok.Resume.Backend = true, "b2"
	short := &TLSSession{Src: netip.MustParseAddrPort("[fd00:7a6d:0:1::16]:40000"), Backend: "b1", Took: 5 * time.Second}
	short.Resume.DidResume, short.Resume.Backend = true, "b3"
	broken := &TLSSession{Src: netip.MustParseAddrPort("198.18.1.15:40000"), Backend: "b1", Err: errors.New("reset"), Took: 25 * time.Second}
	broken.Resume.Err = errors.New("dial")
	res := &AppResult{Scenario: Kill9, Mode: ModeSSLBridge, TLS: []*TLSSession{ok, short, broken}}
	want := "chaos scenario=kill9 mode=ssl_bridge flows=3 kept=2 broken=1 corrupt=0 moved=1 max_stall_ms=1200 resumed=2 same_backend=1"
	if l := res.Lines(); len(l) != 1 || l[0] != want {
		t.Errorf("lines %q\nwant %q", l, want)
	}
	f := strings.Join(res.Failures(), "\n")
	for _, s := range []string{"streamed 5s, want at least 20s", "resumed on b3, the session was on b1", "session not kept: reset", "resumed connection failed: dial"} {
		if !strings.Contains(f, s) {
			t.Errorf("failures lack %q:\n%s", s, f)
		}
	}
	if strings.Contains(f, "198.18.1.16") {
		t.Errorf("the good session failed:\n%s", f)
	}

	file := lab.FTPFile{Size: 10, SHA256: "ab"}
	good := &FTPDownload{Mode: ModeFTPPassive, Want: file, Bytes: 10, SHA256: "ab"}
	bad := &FTPDownload{Mode: ModeFTPActive, Want: file, Bytes: 10, SHA256: "cd"}
	fr := &AppResult{Scenario: Freeze, FTP: []*FTPDownload{good, bad}}
	lines := fr.Lines()
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "chaos scenario=freeze mode=ftp_passive flows=1 kept=1 broken=0 corrupt=0 max_stall_ms=0 bytes=10 sha256_ok=true") ||
		!strings.Contains(lines[1], "mode=ftp_active flows=1 kept=0 broken=0 corrupt=1") {
		t.Errorf("ftp lines %q", lines)
	}
	if f := fr.Failures(); len(f) != 1 || !strings.Contains(f[0], "WRONG") {
		t.Errorf("ftp failures %q", f)
	}
}
