package netns

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
)

// RemoveStale deletes the namespaces this package created in test processes
// that no longer exist (a test binary killed by its timeout runs no
// cleanup), and returns their names. Namespaces of live processes, and any
// name not of the form "th<pid>-...", are left alone.
func RemoveStale() ([]string, error) {
	names, err := List(Prefix)
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, name := range names {
		pid, ok := ownerPid(name)
		if !ok || processExists(pid) {
			continue
		}
		if out, err := command("ip", "netns", "delete", name); err != nil {
			if Exists(name) { // another process may have removed it first
				errs = append(errs, fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out))))
			}
			continue
		}
		removed = append(removed, name)
	}
	return removed, errors.Join(errs...)
}

// ownerPid parses the pid out of a name "th<pid>-<suffix>".
func ownerPid(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, Prefix)
	if !ok {
		return 0, false
	}
	digits, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(digits)
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

func processExists(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
