package netns

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// KillTimeout bounds how long cleanup waits for a killed process to exit.
const KillTimeout = 10 * time.Second

// Proc is a command started in a namespace by Start. Its process group is
// killed (SIGKILL) on cleanup if it is still running.
type Proc struct {
	// Cmd is the started command; do not call its Wait, use Proc.Wait.
	Cmd  *exec.Cmd
	done chan struct{}
	err  error // set before done is closed

	mu  sync.Mutex
	out bytes.Buffer
}

// Start starts a command in the namespace, in a process group of its own,
// with stdout and stderr collected (see Output). Cleanup kills the whole
// group and waits for the process.
func (n *NetNS) Start(name string, args ...string) *Proc {
	n.tb.Helper()
	argv := n.argv(name, args...)
	p := &Proc{Cmd: exec.Command(argv[0], argv[1:]...), done: make(chan struct{})}
	p.Cmd.Stdout = (*procWriter)(p)
	p.Cmd.Stderr = (*procWriter)(p)
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.Cmd.Start(); err != nil {
		n.tb.Fatalf("starting %s in %s: %v", strings.Join(argv, " "), n, err)
	}
	go func() {
		p.err = p.Cmd.Wait()
		close(p.done)
	}()
	tb := n.tb
	tb.Cleanup(func() {
		if err := p.Kill(); err != nil {
			tb.Errorf("%v", err)
		}
	})
	return p
}

type procWriter Proc

func (w *procWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.out.Write(b)
}

// Output returns what the process wrote to stdout and stderr so far.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Wait waits for the process to exit and returns its exit error.
func (p *Proc) Wait() error {
	<-p.done
	return p.err
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Kill sends SIGKILL to the process group and waits up to KillTimeout for
// the process to exit. Killing an exited process is not an error.
func (p *Proc) Kill() error {
	if p.Exited() {
		return nil
	}
	pid := p.Cmd.Process.Pid
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("killing process group %d: %w", pid, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(KillTimeout):
		return fmt.Errorf("process %d still running %v after SIGKILL", pid, KillTimeout)
	}
}
