// Package instance makes sure one tandemd runs per state directory: the
// daemon holds an exclusive flock on <stateDir>/tandemd.lock for its whole
// life. The kernel releases the lock when the process dies, however it dies,
// so a crash never leaves a stale lock behind.
package instance

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrAlreadyRunning is returned when another tandemd holds the lock.
var ErrAlreadyRunning = errors.New("another tandemd is already running on this state directory")

// LockFile is the lock's name inside the state directory.
const LockFile = "tandemd.lock"

// Lock is a held single-instance lock.
type Lock struct {
	f *os.File
}

// Acquire creates stateDir if needed (0700) and takes the lock without
// waiting. If another process holds it, the error wraps ErrAlreadyRunning and
// names that process's pid.
func Acquire(stateDir string) (*Lock, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating state directory: %w", err)
	}
	path := filepath.Join(stateDir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening lock file: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			holder := "unknown pid"
			if b, rerr := os.ReadFile(path); rerr == nil && strings.TrimSpace(string(b)) != "" {
				holder = "pid " + strings.TrimSpace(string(b))
			}
			return nil, fmt.Errorf("%w (%s holds %s); stop it first, or give this one another stateDir", ErrAlreadyRunning, holder, path)
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	// The pid is informational only: the flock is the lock.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &Lock{f: f}, nil
}

// Release drops the lock. The file stays: removing it would race with a
// process that has just opened it.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	_ = l.f.Truncate(0)
	err := l.f.Close() // closing the last descriptor releases the flock
	l.f = nil
	return err
}
