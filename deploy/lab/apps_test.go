package lab

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"os"
	"strings"
	"testing"
)

func TestVsftpdConfFollowsDeployFTP(t *testing.T) {
	l, err := New(Config{StateDir: t.TempDir()}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	v4 := l.VsftpdConf(2, false)
	for _, want := range []string{"listen=YES", "listen_address=198.18.64.12", "pasv_address=198.19.0.12",
		"pasv_addr_resolve=NO", "pasv_min_port=31000", "pasv_max_port=31999", "pasv_promiscuous=NO",
		"port_promiscuous=NO", "connect_from_port_20=YES", "ssl_enable=NO", "anonymous_enable=YES"} {
		if !strings.Contains(v4, want+"\n") {
			t.Errorf("IPv4 config lacks %q:\n%s", want, v4)
		}
	}
	v6 := l.VsftpdConf(2, true)
	for _, want := range []string{"listen=NO", "listen_ipv6=YES", "listen_address6=fd00:7a6d:0:64::12"} {
		if !strings.Contains(v6, want+"\n") {
			t.Errorf("IPv6 config lacks %q:\n%s", want, v6)
		}
	}
	for j := 1; j < MaxBackends && j < 30; j++ {
		_, hi := FTPPassiveRange(j)
		lo, _ := FTPPassiveRange(j + 1)
		if lo <= hi {
			t.Fatalf("passive ranges of b%d and b%d overlap", j, j+1)
		}
	}
}

func TestWriteFTPFileIsSeededAndKept(t *testing.T) {
	l, err := New(Config{StateDir: t.TempDir()}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := l.WriteFTPFile(1<<20+3, 7)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(a.Path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	if int64(len(b)) != a.Size || hex.EncodeToString(sum[:]) != a.SHA256 {
		t.Fatalf("file of %d bytes sha256 %x, WriteFTPFile says %d %s", len(b), sum, a.Size, a.SHA256)
	}
	st, _ := os.Stat(a.Path)
	again, err := l.WriteFTPFile(1<<20+3, 7)
	if err != nil || again != a {
		t.Fatalf("same size and seed: %+v, %v; want %+v", again, err, a)
	}
	if st2, _ := os.Stat(a.Path); !st2.ModTime().Equal(st.ModTime()) {
		t.Error("same size and seed rewrote the file")
	}
	other, err := l.WriteFTPFile(1<<20+3, 8)
	if err != nil || other.SHA256 == a.SHA256 {
		t.Fatalf("another seed: %+v, %v", other, err)
	}
}

func TestTLSFilesAndAppsCommands(t *testing.T) {
	l, err := New(Config{StateDir: t.TempDir()}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := l.TLSFiles()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Leaf == nil || cert.Leaf.VerifyHostname(f.ServerName) != nil || cert.Leaf.VerifyHostname(AppsVIP4.String()) != nil ||
		cert.Leaf.VerifyHostname(AppsVIP6.String()) != nil {
		t.Errorf("certificate does not name %s and the apps VIPs", f.ServerName)
	}
	if again, err := l.TLSFiles(); err != nil || again != f {
		t.Errorf("second call %+v, %v", again, err)
	}
	var joined []string
	for _, c := range l.Config().AppsClusterCommands(true) {
		joined = append(joined, strings.Join(c, " "))
	}
	all := strings.Join(joined, "\n")
	for _, want := range []string{
		"add service b1-tls4 198.18.64.11 SSL_BRIDGE 8443 --usip YES",
		"add lb vserver tls6 SSL_BRIDGE fd00:7a6d:ff::12 443 --lbMethod ROUNDROBIN --persistenceType SOURCEIP --connFailover STATEFUL",
		"add lb vserver ftp4 FTP 198.19.0.12 21 --lbMethod LEASTCONNECTION --connFailover STATEFUL",
		"add service b3-ftp6 fd00:7a6d:0:64::13 FTP 21 --usip YES",
		"bind lb vserver ftp6 b3-ftp6",
	} {
		if !strings.Contains(all, want+"\n") && !strings.HasSuffix(all, want) {
			t.Errorf("commands lack %q:\n%s", want, all)
		}
	}
	if n := len(l.Config().AppsClusterCommands(false)); n != 2*(1+2*3) {
		t.Errorf("%d commands without FTP, want 14", n)
	}
}
