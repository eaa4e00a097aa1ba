package lab

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Runner runs one short command (ip, ethtool, sysctl, birdc) and returns
// its combined output. The lab's I/O boundary: tests give a fake that
// records the commands.
type Runner interface {
	Run(ctx context.Context, argv []string) ([]byte, error)
}

// ExecRunner runs commands with os/exec.
type ExecRunner struct{}

// Run implements Runner.
func (ExecRunner) Run(ctx context.Context, argv []string) ([]byte, error) {
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// Lab is one lab on this host.
type Lab struct {
	cfg Config
	run Runner
	log *slog.Logger
}

// New returns the lab cfg describes; run nil means ExecRunner, log nil
// discards.
func New(cfg Config, run Runner, log *slog.Logger) (*Lab, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("configuring lab: %w", err)
	}
	if run == nil {
		run = ExecRunner{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Lab{cfg: cfg, run: run, log: log}, nil
}

// Config returns the lab's configuration with its defaults.
func (l *Lab) Config() Config { return l.cfg }

// NetnsPath is the path of a role's namespace ("client", "n1", ...).
func (l *Lab) NetnsPath(role string) string { return "/run/netns/" + l.cfg.NS(role) }

// Command returns a command that runs argv inside a role's namespace.
func (l *Lab) Command(ctx context.Context, role string, argv ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.cfg.NS(role)}, argv...)...)
}

// Up builds whatever of the lab is missing, writes the routers' and
// nodes' configurations and starts the processes that are not running:
// BIRD on both routers, a backend server per backend (when Backend is
// set) and tandemd per node (when Tandemd is set). Running it again on a
// complete lab changes nothing.
func (l *Lab) Up(ctx context.Context) error {
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	if err := l.Build(ctx); err != nil {
		return err
	}
	if err := l.WriteConfigs(); err != nil {
		return err
	}
	return l.Start(ctx)
}

// Build runs the plan's steps, skipping those already done.
func (l *Lab) Build(ctx context.Context) error {
	for _, s := range l.cfg.Plan() {
		if s.Check != nil {
			if _, err := l.run.Run(ctx, s.Check); err == nil {
				continue
			}
		}
		for _, cmd := range s.Do {
			if _, err := l.run.Run(ctx, cmd); err != nil {
				return fmt.Errorf("building lab %s (%s): %w", l.cfg.Name, s.What, err)
			}
		}
	}
	return nil
}

// WriteConfigs writes the BIRD configurations, the gossip keyring (once:
// an existing one is kept so running nodes keep talking) and every node's
// node.yaml into the state dir.
func (l *Lab) WriteConfigs() error {
	c := l.cfg
	if err := os.MkdirAll(c.StateDir, 0o755); err != nil {
		return fmt.Errorf("creating state dir: %w", err)
	}
	front, err := c.FrontBIRD()
	if err != nil {
		return err
	}
	back, err := c.BackBIRD()
	if err != nil {
		return err
	}
	cy, err := c.ClusterYAML()
	if err != nil {
		return err
	}
	files := map[string][]byte{
		c.ClusterYAMLPath():   cy,
		c.birdConf(RoleFront): front,
		c.birdConf(RoleBack):  back,
	}
	for i := 1; i <= c.Nodes; i++ {
		y, err := c.NodeYAML(i)
		if err != nil {
			return err
		}
		files[c.NodeConfigPath(i)] = y
		if err := os.MkdirAll(filepath.Join(c.NodeDir(i), "state"), 0o755); err != nil {
			return fmt.Errorf("creating node dir: %w", err)
		}
	}
	for path, b := range files {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	if _, err := os.Stat(c.KeyringPath()); errors.Is(err, os.ErrNotExist) {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return fmt.Errorf("making gossip key: %w", err)
		}
		line := "# gossip key of lab " + c.Name + "\n" + base64.StdEncoding.EncodeToString(key) + "\n"
		if err := os.WriteFile(c.KeyringPath(), []byte(line), 0o600); err != nil {
			return fmt.Errorf("writing keyring: %w", err)
		}
	}
	return nil
}

func (c Config) birdConf(role string) string   { return filepath.Join(c.StateDir, role+".bird.conf") }
func (c Config) birdSocket(role string) string { return filepath.Join(c.StateDir, role+".ctl") }

func (c Config) procs() []proc {
	var ps []proc
	for _, r := range []string{RoleFront, RoleBack} {
		ps = append(ps, proc{name: r, ns: c.NS(r), argv: []string{c.BIRD, "-f",
			"-c", c.birdConf(r), "-s", c.birdSocket(r), "-P", c.pidFile(r)}})
	}
	if c.Backend != "" {
		for j := 1; j <= c.Backends; j++ {
			a := Backend(j)
			ps = append(ps, proc{name: BackendName(j), ns: c.NS(BackendName(j)), argv: []string{c.Backend,
				"-name", BackendName(j),
				"-listen", netip.AddrPortFrom(a.V4, c.ServicePort).String(),
				"-listen", netip.AddrPortFrom(a.V6, c.ServicePort).String(),
				"-listen", netip.AddrPortFrom(a.V4, c.ServicePort+1).String(),
				"-listen", netip.AddrPortFrom(a.V6, c.ServicePort+1).String(),
				"-listen", netip.AddrPortFrom(a.V4, c.ServicePort+2).String(),
				"-listen", netip.AddrPortFrom(a.V6, c.ServicePort+2).String(),
				"-pidfile", c.pidFile(BackendName(j))}})
		}
	}
	switch {
	case c.Tandemd != "":
		for i := 1; i <= c.Nodes; i++ {
			ps = append(ps, proc{name: NodeName(i), ns: c.NS(NodeName(i)), argv: []string{c.Tandemd, "--config", c.NodeConfigPath(i)}})
		}
	case c.Speaker != "":
		c4, c6 := ClientPrefixes()
		for i := 1; i <= c.Nodes; i++ {
			argv := []string{c.Speaker, "-config", c.NodeConfigPath(i)}
			for _, v := range c.VIPs {
				argv = append(argv, "-vip", netip.PrefixFrom(v, v.BitLen()).String())
			}
			argv = append(argv, "-return", c4.String(), "-return", c6.String())
			ps = append(ps, proc{name: NodeName(i), ns: c.NS(NodeName(i)), argv: argv})
		}
	}
	return ps
}

// Start starts the lab's processes that are not running and waits until
// both BIRDs answer on their control sockets.
func (l *Lab) Start(ctx context.Context) error {
	for _, p := range l.cfg.procs() {
		if st, err := os.Stat(p.argv[0]); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return fmt.Errorf("starting %s: %s is not an executable file (build it, or fix the path)", p.name, p.argv[0])
		}
	}
	var lastStart time.Time
	for _, p := range l.cfg.procs() {
		pid, started, err := l.cfg.start(p)
		if err != nil {
			return err
		}
		if started {
			lastStart = time.Now()
			l.log.Info("started", "process", p.name, "pid", pid, "log", l.cfg.logFile(p.name))
		}
	}
	for _, r := range []string{RoleFront, RoleBack} {
		if err := l.waitBIRD(ctx, r, 10*time.Second); err != nil {
			return err
		}
	}
	// A process that dies at once (a bad config, a missing capability)
	// should fail up, not be found later by status.
	if wait := time.Until(lastStart.Add(300 * time.Millisecond)); wait > 0 {
		time.Sleep(wait)
	}
	var errs []error
	for _, p := range l.cfg.procs() {
		if _, ok := l.cfg.readPid(p.name); !ok {
			errs = append(errs, fmt.Errorf("%s exited after start; see %s", p.name, l.cfg.logFile(p.name)))
		}
	}
	return errors.Join(errs...)
}

func (l *Lab) waitBIRD(ctx context.Context, role string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if _, err = l.Birdc(ctx, role, "show", "status"); err == nil {
			return nil
		}
		// Only a pid that is gone means BIRD died: while "ip netns exec"
		// becomes bird, its command line may briefly read empty.
		if pid := l.pidFromFile(role); pid == 0 || !alive(pid) {
			return fmt.Errorf("BIRD of %s exited; see %s: %w", role, l.cfg.logFile(role), err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("BIRD of %s not answering on %s after %v: %w", role, l.cfg.birdSocket(role), timeout, err)
}

// Birdc runs a birdc command against a router's BIRD ("rfront" or
// "rback").
func (l *Lab) Birdc(ctx context.Context, role string, args ...string) (string, error) {
	out, err := l.run.Run(ctx, append([]string{l.cfg.Birdc, "-s", l.cfg.birdSocket(role)}, args...))
	return string(out), err
}

// Down stops the processes recorded in the state dir's pid files (SIGTERM,
// SIGKILL after a grace period) and deletes the lab's namespaces — every
// namespace named "<Name>-<role>" for the lab's roles, whatever the node
// and backend counts were when it was built — and the nodes' persisted
// state. Configs and logs stay in the state dir for post-mortems.
func (l *Lab) Down(ctx context.Context) error {
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	// The apps' servers go with their sessions (vsftpd forks one per
	// client, which its parent's SIGTERM leaves running).
	errs := []error{l.StopApps()}
	// tandemd first, so that it withdraws while the routers still listen.
	names := l.cfg.pidNames()
	sort.SliceStable(names, func(a, b int) bool { return procOrder(names[a]) < procOrder(names[b]) })
	for _, name := range names {
		stopped, err := l.cfg.stop(name, 3*time.Second)
		if err != nil {
			errs = append(errs, err)
		} else if stopped {
			l.log.Info("stopped", "process", name)
		}
	}
	nss, err := l.namespaces()
	if err != nil {
		errs = append(errs, err)
	}
	for _, ns := range nss {
		if _, err := l.run.Run(ctx, []string{"ip", "netns", "del", ns}); err != nil {
			errs = append(errs, fmt.Errorf("deleting namespace %s: %w", ns, err))
		} else {
			l.log.Info("deleted", "namespace", ns)
		}
	}
	for _, r := range []string{RoleFront, RoleBack} {
		os.Remove(l.cfg.birdSocket(r))
	}
	// The nodes' persisted cluster state and sockets go too, so that the
	// next up starts a fresh cluster; configs and logs stay.
	dirs, _ := filepath.Glob(filepath.Join(l.cfg.StateDir, "n*", "state"))
	socks, _ := filepath.Glob(filepath.Join(l.cfg.StateDir, "n*", "*.sock"))
	for _, p := range append(dirs, socks...) {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, fmt.Errorf("removing node state: %w", err))
		}
	}
	return errors.Join(errs...)
}

func procOrder(name string) int {
	switch {
	case name == RoleFront || name == RoleBack:
		return 2
	case strings.HasPrefix(name, "n"):
		return 0
	}
	return 1
}

// namespaces lists the lab's namespaces that exist.
func (l *Lab) namespaces() ([]string, error) {
	ents, err := os.ReadDir("/run/netns")
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing namespaces: %w", err)
	}
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(l.cfg.Name) + `-(client|rfront|rback|bp|n[0-9]+|b[0-9]+)$`)
	var out []string
	for _, e := range ents {
		if re.MatchString(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// Status is what Status reports.
type Status struct {
	// Namespaces are the lab's namespaces that exist.
	Namespaces []string
	// Missing are the namespaces the configuration wants that do not.
	Missing []string
	// Processes maps a process name to its pid, 0 when not running.
	Processes map[string]int
	// BIRD maps a router role to its "show protocols" output.
	BIRD map[string]string
	// Routes maps a router role to its kernel routes for the prefixes it
	// learns by BGP (VIPs on the front, client prefixes on the back).
	Routes map[string]string
}

// Status reports what of the lab exists and runs.
func (l *Lab) Status(ctx context.Context) (Status, error) {
	st := Status{Processes: map[string]int{}, BIRD: map[string]string{}, Routes: map[string]string{}}
	var err error
	if st.Namespaces, err = l.namespaces(); err != nil {
		return st, err
	}
	have := map[string]bool{}
	for _, ns := range st.Namespaces {
		have[ns] = true
	}
	for _, ns := range l.cfg.Namespaces() {
		if !have[ns] {
			st.Missing = append(st.Missing, ns)
		}
	}
	for _, p := range l.cfg.procs() {
		if pid, ok := l.cfg.readPid(p.name); ok {
			st.Processes[p.name] = pid
		} else {
			st.Processes[p.name] = 0
		}
	}
	c4, c6 := ClientPrefixes()
	for role, dsts := range map[string][]string{
		RoleFront: {VIPRange4.String(), VIPRange6.String()},
		RoleBack:  {c4.String(), c6.String()},
	} {
		if st.Processes[role] != 0 {
			out, err := l.Birdc(ctx, role, "show", "protocols")
			if err != nil {
				out = err.Error()
			}
			st.BIRD[role] = out
		}
		if have[l.cfg.NS(role)] {
			var b strings.Builder
			for _, d := range dsts {
				fam := "-4"
				if strings.Contains(d, ":") {
					fam = "-6"
				}
				out, _ := l.run.Run(ctx, []string{"ip", "-n", l.cfg.NS(role), fam, "route", "show", "root", d, "proto", "bird"})
				b.Write(out)
			}
			st.Routes[role] = b.String()
		}
	}
	return st, nil
}

// Ready reports whether every namespace exists and every process runs.
func (s Status) Ready() bool {
	if len(s.Missing) > 0 {
		return false
	}
	for _, pid := range s.Processes {
		if pid == 0 {
			return false
		}
	}
	return true
}

// Format renders the status for people.
func (s Status) Format() string {
	var b strings.Builder
	fmt.Fprintf(&b, "namespaces: %d present", len(s.Namespaces))
	if len(s.Missing) > 0 {
		fmt.Fprintf(&b, ", missing: %s", strings.Join(s.Missing, " "))
	}
	b.WriteString("\nprocesses:\n")
	names := make([]string, 0, len(s.Processes))
	for n := range s.Processes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if pid := s.Processes[n]; pid != 0 {
			fmt.Fprintf(&b, "  %-8s pid %d\n", n, pid)
		} else {
			fmt.Fprintf(&b, "  %-8s not running\n", n)
		}
	}
	for _, r := range []string{RoleFront, RoleBack} {
		if out, ok := s.BIRD[r]; ok {
			fmt.Fprintf(&b, "%s BGP sessions:\n%s", r, indent(out))
		}
		if out, ok := s.Routes[r]; ok {
			if strings.TrimSpace(out) == "" {
				out = "(none)\n"
			}
			fmt.Fprintf(&b, "%s routes learnt by BGP:\n%s", r, indent(out))
		}
	}
	return b.String()
}

func indent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return "  " + strings.Join(lines, "\n  ") + "\n"
}

// ErrNotRunning is returned by Signal when the named process does not run.
var ErrNotRunning = errors.New("process not running")

// Signal sends sig to one of the lab's processes by name ("rfront",
// "rback", "b2", "n3"), found through its pid file; the chaos runner kills
// and freezes nodes with it.
func (l *Lab) Signal(name string, sig syscall.Signal) error {
	pid, ok := l.cfg.readPid(name)
	if !ok {
		return fmt.Errorf("signalling %s: %w", name, ErrNotRunning)
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("signalling %s (pid %d): %w", name, pid, err)
	}
	return nil
}

// pidFromFile returns the pid a pid file records, without checking it.
func (l *Lab) pidFromFile(name string) int {
	b, err := os.ReadFile(l.cfg.pidFile(name))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// Pid returns the pid of one of the lab's processes, 0 when not running.
func (l *Lab) Pid(name string) int {
	if pid, ok := l.cfg.readPid(name); ok {
		return pid
	}
	return 0
}
