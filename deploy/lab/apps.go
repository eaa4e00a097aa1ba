package lab

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The lab's application services (issue 7): SSL_BRIDGE and FTP vservers on
// a VIP of their own, served by TLS backends (labbackend -tls-listen) and
// vsftpd on the same backend namespaces as the record servers. They are
// started on demand (StartTLSBackends, StartFTPBackends) with pid files in
// the state dir, so Down stops them like every other lab process.
var (
	// AppsVIP4 and AppsVIP6 carry the SSL_BRIDGE and FTP vservers.
	AppsVIP4 = netip.MustParseAddr("198.19.0.12")
	AppsVIP6 = netip.MustParseAddr("fd00:7a6d:ff::12")
)

const (
	// TLSPort is the SSL_BRIDGE vservers' port; TLSBackendPort the
	// backends' (TLS end to end: the vserver never terminates it).
	TLSPort        = 443
	TLSBackendPort = 8443
	// FTPPort is the FTP vservers' and the vsftpd backends' control port.
	FTPPort = 21
	// FTPPassiveBase is the first passive port of backend 1; backend j
	// owns [FTPPassiveBase+1000(j-1), +999]: disjoint ranges, as
	// deploy/ftp recommends, so a data port names its backend.
	FTPPassiveBase = 30000
	// FTPFileName is the file every FTP backend serves.
	FTPFileName = "big.bin"
)

// TLSBackendName is the process name of backend j's TLS server.
func TLSBackendName(j int) string { return fmt.Sprintf("tls-%s", BackendName(j)) }

// FTPBackendName is the process name of backend j's vsftpd for IPv4;
// FTP6BackendName its IPv6 instance's (vsftpd listens on one family).
func FTPBackendName(j int) string  { return fmt.Sprintf("ftp-%s", BackendName(j)) }
func FTP6BackendName(j int) string { return fmt.Sprintf("ftp6-%s", BackendName(j)) }

// FTPPassiveRange is backend j's passive port range.
func FTPPassiveRange(j int) (lo, hi uint16) {
	lo = uint16(FTPPassiveBase + 1000*(j-1))
	return lo, lo + 999
}

// TLSFiles are the lab's TLS certificate and key, and the certificate
// alone for clients to trust.
type TLSFiles struct {
	Cert, Key string
	// ServerName is a DNS name in the certificate (the VIPs are IP SANs).
	ServerName string
}

// TLSFiles returns the lab's certificate files, generating them on first
// use: a self-signed ECDSA P-256 certificate, valid a day, for
// "apps.<name>.lab" and the apps VIPs. The backends all present it; the
// client trusts it and nothing else.
func (l *Lab) TLSFiles() (TLSFiles, error) {
	dir := filepath.Join(l.cfg.StateDir, "tls")
	f := TLSFiles{Cert: filepath.Join(dir, "cert.pem"), Key: filepath.Join(dir, "key.pem"),
		ServerName: "apps." + l.cfg.Name + ".lab"}
	if _, err := os.Stat(f.Key); err == nil {
		if _, err := os.Stat(f.Cert); err == nil {
			return f, nil
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return f, fmt.Errorf("creating TLS dir: %w", err)
	}
	certPEM, keyPEM, err := selfSigned(f.ServerName, []netip.Addr{AppsVIP4, AppsVIP6}, time.Now())
	if err != nil {
		return f, err
	}
	if err := os.WriteFile(f.Key, keyPEM, 0o600); err != nil {
		return f, fmt.Errorf("writing TLS key: %w", err)
	}
	if err := os.WriteFile(f.Cert, certPEM, 0o644); err != nil {
		return f, fmt.Errorf("writing TLS certificate: %w", err)
	}
	return f, nil
}

// selfSigned returns a PEM certificate and PKCS#8 key for name and ips.
func selfSigned(name string, ips []netip.Addr, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating TLS key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, fmt.Errorf("drawing a serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"tandem lab"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{name},
	}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip.AsSlice())
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("creating TLS certificate: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding TLS key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

// StartTLSBackends starts, on every backend, labbackend serving the record
// protocol inside TLS on TLSBackendPort (both families), with the lab's
// certificate; a server already running is left alone. Each backend has its
// own session-ticket key, so a resumed session proves which backend it
// reached.
func (l *Lab) StartTLSBackends(ctx context.Context) error {
	if l.cfg.Backend == "" {
		return errors.New("TLS backends: the lab has no labbackend binary (Config.Backend)")
	}
	f, err := l.TLSFiles()
	if err != nil {
		return err
	}
	var ps []proc
	for j := 1; j <= l.cfg.Backends; j++ {
		a := Backend(j)
		ps = append(ps, proc{name: TLSBackendName(j), ns: l.cfg.NS(BackendName(j)), argv: []string{l.cfg.Backend,
			"-name", BackendName(j),
			"-tls-listen", netip.AddrPortFrom(a.V4, TLSBackendPort).String(),
			"-tls-listen", netip.AddrPortFrom(a.V6, TLSBackendPort).String(),
			"-tls-cert", f.Cert, "-tls-key", f.Key,
			"-pidfile", l.cfg.pidFile(TLSBackendName(j))}})
	}
	return l.startApps(ctx, ps)
}

// FTPFile describes the file the FTP backends serve.
type FTPFile struct {
	Path   string // in the backends' shared anonymous root
	Size   int64
	SHA256 string // hex
}

// WriteFTPFile writes the FTP backends' file of size bytes (seeded
// pseudo-random, no holes) into the state dir's FTP root, unless a file of
// that size and seed is there, and returns it with its checksum.
func (l *Lab) WriteFTPFile(size int64, seed uint64) (FTPFile, error) {
	root := l.ftpRoot()
	f := FTPFile{Path: filepath.Join(root, FTPFileName), Size: size}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return f, fmt.Errorf("creating FTP root: %w", err)
	}
	// vsftpd serves anonymous users as the unprivileged "ftp" user, which
	// must reach the file; its root must not be writable by it.
	for d := root; d != "/" && d != "."; d = filepath.Dir(d) {
		if st, err := os.Stat(d); err == nil && st.Mode().Perm()&0o005 != 0o005 {
			if err := os.Chmod(d, st.Mode().Perm()|0o005); err != nil {
				return f, fmt.Errorf("opening %s to the ftp user: %w", d, err)
			}
		}
	}
	stamp := filepath.Join(l.cfg.StateDir, "ftp", "file.sha256")
	want := fmt.Sprintf("%d %d", size, seed)
	if b, err := os.ReadFile(stamp); err == nil {
		if fs := strings.Fields(string(b)); len(fs) == 3 && fs[0]+" "+fs[1] == want {
			if st, err := os.Stat(f.Path); err == nil && st.Size() == size {
				f.SHA256 = fs[2]
				return f, nil
			}
		}
	}
	out, err := os.OpenFile(f.Path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return f, fmt.Errorf("creating FTP file: %w", err)
	}
	h := sha256.New()
	rng := mrand.NewChaCha8(seedBytes(seed))
	if _, err := io.CopyN(io.MultiWriter(out, h), rng, size); err != nil {
		out.Close()
		return f, fmt.Errorf("writing FTP file: %w", err)
	}
	if err := out.Close(); err != nil {
		return f, fmt.Errorf("writing FTP file: %w", err)
	}
	f.SHA256 = hex.EncodeToString(h.Sum(nil))
	if err := os.WriteFile(stamp, []byte(want+" "+f.SHA256+"\n"), 0o644); err != nil {
		return f, fmt.Errorf("writing FTP file checksum: %w", err)
	}
	return f, nil
}

func seedBytes(seed uint64) [32]byte {
	var s [32]byte
	for i := range 4 {
		v := seed + uint64(i)*0x9e3779b97f4a7c15
		for k := range 8 {
			s[8*i+k] = byte(v >> (8 * k))
		}
	}
	return s
}

// RemoveFTPFile removes the FTP backends' file and its checksum (the state
// dir may be a tmpfs: /run).
func (l *Lab) RemoveFTPFile() error {
	os.Remove(filepath.Join(l.cfg.StateDir, "ftp", "file.sha256"))
	if err := os.RemoveAll(l.ftpRoot()); err != nil {
		return fmt.Errorf("removing the FTP file: %w", err)
	}
	return nil
}

func (l *Lab) ftpRoot() string { return filepath.Join(l.cfg.StateDir, "ftp", "root") }

// VsftpdConf is backend j's vsftpd configuration: deploy/ftp's settings
// (pasv_address = the apps VIP, pasv_addr_resolve=NO, a passive range of
// its own, active mode from port 20) with anonymous read-only access to
// the lab's FTP root, on the backend's IPv4 address, or with v6 on its
// IPv6 address (passive mode is then EPSV, whose 229 reply carries only
// the port: pasv_address does not apply).
func (l *Lab) VsftpdConf(j int, v6 bool) string {
	lo, hi := FTPPassiveRange(j)
	listen := []string{"listen=YES", "listen_ipv6=NO", "listen_address=" + Backend(j).V4.String()}
	if v6 {
		listen = []string{"listen=NO", "listen_ipv6=YES", "listen_address6=" + Backend(j).V6.String()}
	}
	return strings.Join(append(append([]string{
		"# vsftpd of " + BackendName(j) + " in lab " + l.cfg.Name + ". Generated by deploy/lab (apps.go)."},
		listen...),
		fmt.Sprintf("listen_port=%d", FTPPort),
		"background=NO",
		"pasv_enable=YES",
		"pasv_address="+AppsVIP4.String(),
		"pasv_addr_resolve=NO",
		fmt.Sprintf("pasv_min_port=%d", lo),
		fmt.Sprintf("pasv_max_port=%d", hi),
		"pasv_promiscuous=NO",
		"port_enable=YES",
		"connect_from_port_20=YES",
		"ftp_data_port=20",
		"port_promiscuous=NO",
		"accept_timeout=60",
		"connect_timeout=60",
		"data_connection_timeout=300",
		"idle_session_timeout=600",
		"anonymous_enable=YES",
		"no_anon_password=YES",
		"anon_root="+l.ftpRoot(),
		"local_enable=NO",
		"write_enable=NO",
		"secure_chroot_dir=/var/run/vsftpd/empty",
		"xferlog_enable=NO",
		"ssl_enable=NO",
		"",
	), "\n")
}

// StartFTPBackends starts two vsftpd (VsftpdConf, IPv4 and IPv6) on every
// backend; a vsftpd already running is left alone. WriteFTPFile first.
func (l *Lab) StartFTPBackends(ctx context.Context, vsftpd string) error {
	if vsftpd == "" {
		vsftpd = "/usr/sbin/vsftpd"
	}
	if err := os.MkdirAll("/var/run/vsftpd/empty", 0o755); err != nil {
		return fmt.Errorf("creating vsftpd's secure chroot dir: %w", err)
	}
	var ps []proc
	for j := 1; j <= l.cfg.Backends; j++ {
		for _, v6 := range []bool{false, true} {
			name, file := FTPBackendName(j), BackendName(j)+".vsftpd.conf"
			if v6 {
				name, file = FTP6BackendName(j), BackendName(j)+".vsftpd6.conf"
			}
			conf := filepath.Join(l.cfg.StateDir, "ftp", file)
			if err := os.MkdirAll(filepath.Dir(conf), 0o755); err != nil {
				return fmt.Errorf("creating FTP dir: %w", err)
			}
			if err := os.WriteFile(conf, []byte(l.VsftpdConf(j, v6)), 0o644); err != nil {
				return fmt.Errorf("writing vsftpd config: %w", err)
			}
			ps = append(ps, proc{name: name, ns: l.cfg.NS(BackendName(j)), argv: []string{vsftpd, conf}})
		}
	}
	return l.startApps(ctx, ps)
}

// startApps starts ps (those not running) and fails if one died within
// 300 ms.
func (l *Lab) startApps(ctx context.Context, ps []proc) error {
	for _, p := range ps {
		if st, err := os.Stat(p.argv[0]); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return fmt.Errorf("starting %s: %s is not an executable file", p.name, p.argv[0])
		}
	}
	started := false
	for _, p := range ps {
		pid, ok, err := l.cfg.start(p)
		if err != nil {
			return err
		}
		if ok {
			started = true
			l.log.Info("started", "process", p.name, "pid", pid, "log", l.cfg.logFile(p.name))
		}
	}
	if started {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
	var errs []error
	for _, p := range ps {
		if _, ok := l.cfg.readPid(p.name); !ok {
			errs = append(errs, fmt.Errorf("%s exited after start; see %s", p.name, l.cfg.logFile(p.name)))
		}
	}
	return errors.Join(errs...)
}

// StopApps stops the TLS and FTP backends with their process groups
// (vsftpd forks a process per session, which would outlive its parent).
// Down calls it first.
func (l *Lab) StopApps() error {
	var errs []error
	for j := 1; j <= l.cfg.Backends; j++ {
		for _, name := range []string{TLSBackendName(j), FTPBackendName(j), FTP6BackendName(j)} {
			pid, ok := l.cfg.readPid(name)
			if !ok {
				os.Remove(l.cfg.pidFile(name))
				continue
			}
			// start gave every process its own session, so its group is
			// its pid and holds its children.
			if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				errs = append(errs, fmt.Errorf("stopping %s (pid %d): %w", name, pid, err))
				continue
			}
			for range 100 {
				if !l.cfg.ownsPid(pid) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			os.Remove(l.cfg.pidFile(name))
		}
	}
	return errors.Join(errs...)
}

// AppsClusterCommands are the clusterctl commands (without --node) that
// add the apps vservers over the backends: per family,
//
//   - tls4/tls6: SSL_BRIDGE on the apps VIP port TLSPort, ROUNDROBIN with
//     SOURCEIP persistence (flow/alg's recommendation for clients that
//     resume), STATEFUL, over TLSBackendPort;
//   - ftp4/ftp6 (with ftp): FTP on the apps VIP port FTPPort,
//     LEASTCONNECTION, STATEFUL.
//
// All services keep the client's address (USIP).
func (c Config) AppsClusterCommands(ftp bool) [][]string {
	var cmds [][]string
	vs := func(name, typ string, vip netip.Addr, port, bport uint16, flags ...string) {
		var svcs []string
		for j := 1; j <= c.Backends; j++ {
			ip := Backend(j).V4
			if vip.Is6() {
				ip = Backend(j).V6
			}
			svc := fmt.Sprintf("%s-%s", BackendName(j), name)
			cmds = append(cmds, []string{"add", "service", svc, ip.String(), typ, fmt.Sprint(bport), "--usip", "YES"})
			svcs = append(svcs, svc)
		}
		cmds = append(cmds, append([]string{"add", "lb", "vserver", name, typ, vip.String(), fmt.Sprint(port)}, flags...))
		for _, s := range svcs {
			cmds = append(cmds, []string{"bind", "lb", "vserver", name, s})
		}
	}
	for _, fam := range []struct {
		n   string
		vip netip.Addr
	}{{"4", AppsVIP4}, {"6", AppsVIP6}} {
		vs("tls"+fam.n, "SSL_BRIDGE", fam.vip, TLSPort, TLSBackendPort,
			"--lbMethod", "ROUNDROBIN", "--persistenceType", "SOURCEIP", "--connFailover", "STATEFUL")
	}
	if ftp {
		vs("ftp4", "FTP", AppsVIP4, FTPPort, FTPPort, "--lbMethod", "LEASTCONNECTION", "--connFailover", "STATEFUL")
		vs("ftp6", "FTP", AppsVIP6, FTPPort, FTPPort, "--lbMethod", "LEASTCONNECTION", "--connFailover", "STATEFUL")
	}
	return cmds
}
