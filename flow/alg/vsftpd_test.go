package alg

import (
	"bytes"
	"crypto/rand"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandem-lb/tandem/test/netns"
)

// TestVsftpdCurlLines runs Debian's vsftpd with deploy/ftp/vsftpd.conf in a
// namespace and downloads a file with curl in every mode (EPSV, PASV, EPRT,
// PORT; IPv4 and IPv6). Each control line curl logs is checked with the Go
// parser and the BPF one: with the example configuration every data line
// gives an expectation, and with the backend advertising another address
// than the VIP none does.
func TestVsftpdCurlLines(t *testing.T) {
	netns.RequireRoot(t)
	for _, bin := range []string{"/usr/sbin/vsftpd", "curl"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s (Debian packages vsftpd and curl): %v", bin, err)
		}
	}
	a := newBPFALG(t)
	ns := netns.New(t)
	for _, cidr := range []string{"203.0.113.10/32", "198.51.100.7/32", "fd00::10/128", "fd00::7/128"} {
		if strings.Contains(cidr, ":") {
			if out, err := ns.Run("ip", "-6", "addr", "add", cidr, "dev", "lo", "nodad"); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			continue
		}
		ns.AddAddr("lo", cidr)
	}
	example, err := os.ReadFile("../../deploy/ftp/vsftpd.conf")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	data := make([]byte, 256<<10)
	_, _ = rand.Read(data)
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	// vsftpd serves anonymous users as the unprivileged "ftp" user, which
	// must reach the file.
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "f.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	// start runs vsftpd with the example and test-only overrides (vsftpd
	// keeps the last value of a setting).
	start := func(name string, overrides ...string) {
		conf := filepath.Join(dir, name+".conf")
		extra := append([]string{"anonymous_enable=YES", "anon_root=" + root, "local_enable=NO",
			"chroot_local_user=NO", "xferlog_enable=NO"}, overrides...)
		if err := os.WriteFile(conf, append(append([]byte{}, example...), []byte(strings.Join(extra, "\n")+"\n")...), 0o644); err != nil {
			t.Fatal(err)
		}
		ns.Start("/usr/sbin/vsftpd", conf)
	}
	start("v4", "listen_address=203.0.113.10")
	start("v6", "listen=NO", "listen_ipv6=YES", "listen_address6=fd00::10")
	start("v4bad", "listen_address=203.0.113.10", "listen_port=2121", "pasv_address=203.0.113.11")

	type run struct {
		name   string
		url    string
		client string
		args   []string
		kind   Kind
		reason Reason
	}
	runs := []run{
		{"EPSV", "ftp://203.0.113.10/f.bin", "198.51.100.7", nil, KindEPSV, ReasonOK},
		{"PASV", "ftp://203.0.113.10/f.bin", "198.51.100.7", []string{"--disable-epsv"}, KindPASV, ReasonOK},
		{"EPRT", "ftp://203.0.113.10/f.bin", "198.51.100.7", []string{"--ftp-port", "198.51.100.7"}, KindEPRT, ReasonOK},
		{"PORT", "ftp://203.0.113.10/f.bin", "198.51.100.7", []string{"--ftp-port", "198.51.100.7", "--disable-eprt"}, KindPORT, ReasonOK},
		{"EPSV6", "ftp://[fd00::10]/f.bin", "fd00::7", nil, KindEPSV, ReasonOK},
		{"EPRT6", "ftp://[fd00::10]/f.bin", "fd00::7", []string{"--ftp-port", "fd00::7"}, KindEPRT, ReasonOK},
		{"PASV not the VIP", "ftp://203.0.113.10:2121/f.bin", "198.51.100.7", []string{"--disable-epsv"}, KindPASV, ReasonAddress},
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, r := range runs {
		t.Run(r.name, func(t *testing.T) {
			vip := netip.MustParseAddr("203.0.113.10")
			if strings.Contains(r.client, ":") {
				vip = netip.MustParseAddr("fd00::10")
			}
			client := netip.MustParseAddr(r.client)
			out := filepath.Join(dir, "out")
			args := append([]string{"-sS", "-v", "-g", "--max-time", "10", "--interface", r.client, "-o", out}, r.args...)
			args = append(args, r.url)
			var log string
			for {
				// vsftpd may still be starting: retry for a few seconds.
				log, err = ns.Run("curl", args...)
				if err == nil || r.reason != ReasonOK || time.Now().After(deadline) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if r.reason == ReasonOK {
				if err != nil {
					t.Fatalf("curl: %v\n%s", err, log)
				}
				if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
					t.Fatalf("downloaded file differs")
				}
			}
			seen := 0
			for _, l := range strings.Split(log, "\n") {
				l = strings.TrimRight(l, "\r")
				var dir Direction
				switch {
				case strings.HasPrefix(l, "< "):
					dir = FromBackend
				case strings.HasPrefix(l, "> "):
					dir = FromClient
				default:
					continue
				}
				line := []byte(l[2:] + "\r\n")
				a.agree(t, line, dir, vip, client)
				e, reason := Check(line, dir, vip, client)
				if e.Kind == KindNone {
					continue
				}
				seen++
				t.Logf("%s %q: %v %v", dir, l[2:], e, reason)
				if e.Kind != r.kind || reason != r.reason {
					t.Errorf("%q: %v %v, want %v %v", l[2:], e.Kind, reason, r.kind, r.reason)
				}
			}
			if seen != 1 {
				t.Errorf("%d data lines in curl's log, want 1:\n%s", seen, log)
			}
		})
	}
}
