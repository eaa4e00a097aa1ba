package lab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a long-running process of the lab, started in a namespace with
// its pid file and log in the state dir.
type proc struct {
	name string   // b1, rfront, n3: also the pid and log file names
	ns   string   // namespace to run in
	argv []string // command and arguments
}

func (c Config) pidFile(name string) string { return filepath.Join(c.StateDir, name+".pid") }
func (c Config) logFile(name string) string { return filepath.Join(c.StateDir, name+".log") }

// readPid returns the pid recorded for name when that process is alive and
// is the lab's: its command line mentions the state dir (every lab process
// is given a path in it), so a recycled pid is never signalled.
func (c Config) readPid(name string) (int, bool) {
	b, err := os.ReadFile(c.pidFile(name))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, false
	}
	return pid, c.ownsPid(pid)
}

func (c Config) ownsPid(pid int) bool {
	for range 50 {
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			return false
		}
		if len(cmdline) == 0 && alive(pid) {
			// Between "ip netns exec" and the program it execs the command
			// line reads empty for a moment: look again.
			time.Sleep(2 * time.Millisecond)
			continue
		}
		return bytes.Contains(cmdline, []byte(c.StateDir+"/")) && alive(pid)
	}
	return false
}

// alive reports whether pid exists and has not exited.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// Field 3, after the parenthesised command name, is the state; a
	// zombie has exited.
	if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
		return false
	}
	return true
}

// start starts p unless its pid file names a live process of the lab.
// The process gets its own session so that it outlives the command that
// started it.
func (c Config) start(p proc) (pid int, started bool, err error) {
	if pid, ok := c.readPid(p.name); ok {
		return pid, false, nil
	}
	logf, err := os.OpenFile(c.logFile(p.name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, false, fmt.Errorf("opening log of %s: %w", p.name, err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== %s starting: %s\n", time.Now().UTC().Format(time.RFC3339), strings.Join(p.argv, " "))
	argv := append([]string{"ip", "netns", "exec", p.ns}, p.argv...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, false, fmt.Errorf("starting %s: %w", p.name, err)
	}
	// "ip netns exec" execs the command, so this pid is the process's.
	pid = cmd.Process.Pid
	if err := os.WriteFile(c.pidFile(p.name), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return 0, false, fmt.Errorf("writing pid file of %s: %w", p.name, err)
	}
	// Reap it if it dies while this process lives (tests), so that a dead
	// process never looks alive as a zombie.
	go cmd.Wait()
	return pid, true, nil
}

// stop signals the process recorded in name's pid file: SIGTERM, then
// SIGKILL after grace. It removes the pid file. A pid file naming no live
// process of the lab is just removed.
func (c Config) stop(name string, grace time.Duration) (bool, error) {
	pid, ok := c.readPid(name)
	defer os.Remove(c.pidFile(name))
	if !ok {
		return false, nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return false, fmt.Errorf("stopping %s (pid %d): %w", name, pid, err)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !c.ownsPid(pid) {
			return true, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return false, fmt.Errorf("killing %s (pid %d): %w", name, pid, err)
	}
	for range 100 {
		if !c.ownsPid(pid) {
			return true, nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true, fmt.Errorf("%s (pid %d) survived SIGKILL for 1s", name, pid)
}

// pidNames lists the names of the pid files in the state dir.
func (c Config) pidNames() []string {
	matches, _ := filepath.Glob(filepath.Join(c.StateDir, "*.pid"))
	var out []string
	for _, m := range matches {
		out = append(out, strings.TrimSuffix(filepath.Base(m), ".pid"))
	}
	return out
}
