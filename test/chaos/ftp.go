package chaos

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tandem-lb/tandem/deploy/lab"
	"github.com/tandem-lb/tandem/node/api"
)

// FTPConfig configures RunFTP.
type FTPConfig struct {
	// Scenario is Kill9 or Freeze (of the node owning the download's data
	// connection, else its control connection).
	Scenario Scenario
	// Active downloads in active mode (EPRT: the backend connects to the
	// client); else passive (IPv4: PASV, the 227 reply naming the VIP;
	// IPv6: EPSV, the 229 reply naming the port).
	Active bool
	// IPv6 downloads through ftp6 on the apps IPv6 VIP; else ftp4.
	IPv6 bool
	// Rate caps curl's download speed (curl --limit-rate), so that the
	// fault lands mid-transfer. Default "16M" (bytes per second).
	Rate string
	// FaultAfter is when the fault comes, after curl started. Default 4s.
	FaultAfter time.Duration
	// Timeout bounds the download. Default 3m.
	Timeout time.Duration
	// Curl is the curl binary. Default "curl" (in PATH).
	Curl string
}

func (c *FTPConfig) setDefaults() {
	if c.Scenario == "" {
		c.Scenario = Kill9
	}
	if c.Rate == "" {
		c.Rate = "16M"
	}
	if c.FaultAfter == 0 {
		c.FaultAfter = 4 * time.Second
	}
	if c.Timeout == 0 {
		c.Timeout = 3 * time.Minute
	}
	if c.Curl == "" {
		c.Curl = "curl"
	}
}

// FTPDownload is one curl download through the FTP vserver.
type FTPDownload struct {
	Mode string // ModeFTPPassive or ModeFTPActive
	Src  netip.Addr
	URL  string
	Want lab.FTPFile
	// Bytes and SHA256 are what curl wrote.
	Bytes  int64
	SHA256 string
	Took   time.Duration
	// MaxStall is the longest time curl wrote nothing, after its first
	// byte and before its last (a rate-limited curl catches up after a
	// stall, so Took alone hides it).
	MaxStall time.Duration
	// Err is curl's failure, with the end of its verbose log.
	Err error
	// Flows are the flow-table entries of the client address when the
	// fault came ("vip-port owner-pair"), Owner the pair the victim was
	// chosen from.
	Flows []string
	Owner uint32
	// DataSeen is whether a flow table held the data connection with an
	// owner when the fault came (else the victim was chosen by the
	// control connection, whose owner pair is the data's too: FTP flows
	// are owned by the client's address).
	DataSeen bool
	// Log is the tail of curl's verbose log (its FTP dialogue).
	Log string
}

// OK reports whether the download completed with the file's checksum.
func (d *FTPDownload) OK() bool {
	return d.Err == nil && d.Bytes == d.Want.Size && d.SHA256 == d.Want.SHA256
}

// Line is the download's line for scripts.
func (d *FTPDownload) Line(sc Scenario) string {
	kept, broken, corrupt := 0, 0, 0
	switch {
	case d.OK():
		kept = 1
	case d.Err == nil:
		corrupt = 1
	default:
		broken = 1
	}
	return fmt.Sprintf("chaos scenario=%s mode=%s flows=1 kept=%d broken=%d corrupt=%d max_stall_ms=%d bytes=%d sha256_ok=%v took_ms=%d",
		sc, d.Mode, kept, broken, corrupt, d.MaxStall.Milliseconds(), d.Bytes, d.SHA256 == d.Want.SHA256, d.Took.Milliseconds())
}

// Describe is the download's line for people.
func (d *FTPDownload) Describe() string {
	state := "complete, checksum right"
	switch {
	case d.Err != nil:
		state = fmt.Sprintf("FAILED: %v", d.Err)
	case !d.OK():
		state = fmt.Sprintf("WRONG: %d bytes, sha256 %s, want %d bytes %s", d.Bytes, d.SHA256, d.Want.Size, d.Want.SHA256)
	}
	by := "data connection"
	if !d.DataSeen {
		by = "control connection (no table held the data connection with an owner)"
	}
	return fmt.Sprintf("%s %s from %s: %d bytes in %v, max stall %v (flows at the fault: %s; victim's pair %d, chosen by the %s): %s",
		d.Mode, d.URL, d.Src, d.Bytes, d.Took.Round(100*time.Millisecond), d.MaxStall.Round(time.Millisecond), strings.Join(d.Flows, ", "), d.Owner, by, state)
}

// Failure says what is wrong with the download, "" when nothing.
func (d *FTPDownload) Failure() string {
	if d.OK() {
		return ""
	}
	return fmt.Sprintf("ftp %s from %s: %s", d.Mode, d.Src, d.Describe())
}

// RunFTP downloads the lab's FTP file (SetupApps with ftp) through the
// FTP vserver ftp4 (ftp6 with cfg.IPv6) with curl, in the client namespace from a client
// address of its own, and cfg.FaultAfter into the transfer SIGKILLs or
// freezes (past the BGP hold time, then SIGCONT) the active member of
// the pair owning the download's data connection (else its control
// connection), read from the nodes' flow tables. The download must
// complete with the file's checksum. The node is then restarted (kill9)
// and the lab made whole.
func (r *Runner) RunFTP(ctx context.Context, cfg FTPConfig, file lab.FTPFile) (*AppResult, error) {
	cfg.setDefaults()
	if cfg.Scenario != Kill9 && cfg.Scenario != Freeze {
		return nil, fmt.Errorf("ftp: scenario %s: want kill9 or freeze", cfg.Scenario)
	}
	began := time.Now()
	mode := ModeFTPPassive
	if cfg.Active {
		mode = ModeFTPActive
	}
	if cfg.IPv6 {
		mode += "6"
	}
	out := &AppResult{Scenario: cfg.Scenario, Mode: mode}
	tl := &timeline{start: time.Now(), log: r.log.With("scenario", "ftp-"+string(cfg.Scenario), "mode", mode)}
	// A client address per mode and scenario, from the top of the range
	// (the TLS sessions use the last few of each family).
	var addrs []netip.Addr
	for _, a := range r.cfg.Lab.ClientAddrs() {
		if a.Is4() != cfg.IPv6 {
			addrs = append(addrs, a)
		}
	}
	idx := len(addrs) / 2
	if cfg.Active {
		idx++
	}
	if cfg.Scenario == Freeze {
		idx += 2
	}
	src, vip := addrs[idx%len(addrs)], lab.AppsVIP4
	if cfg.IPv6 {
		vip = lab.AppsVIP6
	}
	d := &FTPDownload{Mode: mode, Src: src, Want: file,
		URL: fmt.Sprintf("ftp://%s/%s", netip.AddrPortFrom(vip, lab.FTPPort), lab.FTPFileName)}
	out.FTP = []*FTPDownload{d}
	args := []string{"-sS", "-v", "-g", "--max-time", fmt.Sprint(int(cfg.Timeout.Seconds())), "--limit-rate", cfg.Rate,
		"--interface", src.String(), "-o", "-"}
	switch {
	case cfg.Active:
		args = append(args, "--ftp-port", src.String())
	case !cfg.IPv6:
		args = append(args, "--disable-epsv")
	}
	args = append(args, d.URL)
	cctx, cancel := context.WithTimeout(ctx, cfg.Timeout+10*time.Second)
	defer cancel()
	cmd := r.lab.Command(cctx, lab.RoleClient, append([]string{cfg.Curl}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return out, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return out, fmt.Errorf("starting curl: %w", err)
	}
	tl.add("curl %s", strings.Join(args, " "))
	type sum struct {
		n    int64
		sha  string
		err  error
		took time.Duration // until curl closed its output
	}
	sums := make(chan sum, 1)
	sw := &stallWriter{h: sha256.New()}
	go func() {
		n, err := io.Copy(sw, stdout)
		sums <- sum{n, hex.EncodeToString(sw.h.Sum(nil)), err, time.Since(start)}
	}()
	sleep(ctx, cfg.FaultAfter)
	// The transfer may take a moment to start: wait a little for its data
	// connection to be in a flow table.
	victim, owner, flows, isData := r.ftpVictim(ctx, src, vip)
	for wait := time.Now().Add(5 * time.Second); !isData && time.Now().Before(wait) && ctx.Err() == nil; {
		sleep(ctx, 250*time.Millisecond)
		victim, owner, flows, isData = r.ftpVictim(ctx, src, vip)
	}
	d.Flows, d.Owner, d.DataSeen = flows, owner, isData
	var actErr error
	if victim == "" {
		actErr = fmt.Errorf("ftp: no flow table names an owner for the flows of %s (entries: %v)", src, flows)
	} else {
		out.Victim = victim
		tl.add("flows of %s: %s; victim %s (pair %d)", src, strings.Join(flows, ", "), victim, owner)
		actErr = r.ftpFault(ctx, cfg.Scenario, victim, tl)
	}
	s := <-sums
	werr := cmd.Wait()
	d.Took, d.Bytes, d.SHA256, d.MaxStall = s.took, s.n, s.sha, sw.maxGap
	d.Log = tail(stderr.String(), 30)
	if werr != nil || s.err != nil {
		d.Err = fmt.Errorf("curl: %w (reading: %v); curl says:\n%s", werr, s.err, d.Log)
	}
	tl.add("curl done (%d bytes in %v)", d.Bytes, d.Took.Round(100*time.Millisecond))
	var restoreErr error
	if cfg.Scenario == Kill9 {
		restoreErr = r.lab.Start(ctx)
	} else if victim != "" {
		r.lab.Signal(victim, syscall.SIGCONT)
	}
	if restoreErr == nil {
		restoreErr = r.WaitReady(ctx)
	}
	if restoreErr == nil {
		restoreErr = r.waitApps(ctx, true)
	}
	if restoreErr == nil {
		tl.add("lab whole again")
	}
	out.Events, out.Took = tl.events, time.Since(began)
	if actErr != nil {
		return out, actErr
	}
	if restoreErr != nil {
		return out, fmt.Errorf("ftp %s on %s: %w: %w", cfg.Scenario, victim, ErrLabBroken, restoreErr)
	}
	return out, nil
}

// ftpVictim returns the active member of the pair owning src's FTP data
// connection (an entry of src to the apps VIP on another port than the
// control port), else its control connection, with src's entries on
// every answering node.
func (r *Runner) ftpVictim(ctx context.Context, src, vip netip.Addr) (victim string, owner uint32, flows []string, isData bool) {
	var ctrl, data uint32
	for i := 1; i <= r.cfg.Lab.Nodes; i++ {
		name := lab.NodeName(i)
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		conns, err := r.clients[name].Connections(rctx, api.ConnFilter{})
		cancel()
		if err != nil {
			continue
		}
		for _, cn := range conns {
			if cn.Client.Addr().Unmap() != src.Unmap() {
				continue
			}
			// Every entry, owned or not, on every node: what the fault
			// acted on, for the report.
			flows = append(flows, fmt.Sprintf("%s: %s %s->%s pair %d", name, strings.ToLower(cn.Proto), cn.Client, cn.VIP, cn.Owner))
			if cn.Owner == 0 {
				continue
			}
			if cn.VIP.Port() == lab.FTPPort && cn.VIP.Addr().Unmap() == vip {
				ctrl = cn.Owner
			} else {
				data = cn.Owner
			}
		}
	}
	slices.Sort(flows)
	owner, isData = data, data != 0
	if owner == 0 {
		owner = ctrl
	}
	if owner == 0 {
		return "", 0, flows, false
	}
	for _, p := range r.pairs(ctx) {
		if p.ID == owner {
			victim = p.Active
			if victim == "" && len(p.Members) > 0 {
				victim = p.Members[0]
			}
		}
	}
	return victim, owner, flows, isData
}

// ftpFault SIGKILLs or freezes victim and waits for the front router to
// drop it (freeze: then SIGCONT and wait for it to come back).
func (r *Runner) ftpFault(ctx context.Context, sc Scenario, victim string, tl *timeline) error {
	n, hold := r.cfg.Lab.Nodes, r.cfg.Lab.HoldTime
	switch sc {
	case Kill9:
		if err := r.lab.Signal(victim, syscall.SIGKILL); err != nil {
			return err
		}
		tl.add("SIGKILL %s", victim)
		if _, err := r.waitAppHops(ctx, n-1, hold+2*time.Second); err != nil {
			return err
		}
		tl.add("rfront: %s out of the ECMP set", victim)
	case Freeze:
		if err := r.lab.Signal(victim, syscall.SIGSTOP); err != nil {
			return err
		}
		tl.add("SIGSTOP %s (BGP hold time %v)", victim, hold)
		_, err := r.waitAppHops(ctx, n-1, hold+3*time.Second)
		if err == nil {
			tl.add("rfront: %s out of the ECMP set (hold time expired)", victim)
			sleep(ctx, time.Second)
		}
		if cerr := r.lab.Signal(victim, syscall.SIGCONT); cerr != nil {
			return errors.Join(err, cerr)
		}
		tl.add("SIGCONT %s", victim)
		if err != nil {
			return err
		}
		if _, err := r.waitAppHops(ctx, n, r.cfg.ReadyTimeout); err != nil {
			return err
		}
		tl.add("rfront: %s back in the ECMP set", victim)
	}
	return nil
}

// stallWriter hashes what it is given and records the longest gap
// between two writes.
type stallWriter struct {
	h      hash.Hash
	last   time.Time
	maxGap time.Duration
}

func (w *stallWriter) Write(p []byte) (int, error) {
	now := time.Now()
	if !w.last.IsZero() {
		w.maxGap = max(w.maxGap, now.Sub(w.last))
	}
	w.last = now
	return w.h.Write(p)
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}
