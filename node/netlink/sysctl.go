package netlink

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// SysctlFS reads and writes sysctls by dotted name. The real one is ProcSys;
// tests use an in-memory map.
type SysctlFS interface {
	ReadSysctl(name string) (string, error)
	WriteSysctl(name, value string) error
}

// ProcSys is the SysctlFS of /proc/sys. Sysctls under net. are those of the
// network namespace of the thread that opens them.
type ProcSys struct {
	// Root is the sysctl tree. Default /proc/sys.
	Root string
}

func (p ProcSys) path(name string) string {
	root := p.Root
	if root == "" {
		root = "/proc/sys"
	}
	// Interface names may contain dots; they are written with '/' by
	// callers that need it, so only the dotted separators become slashes.
	return filepath.Join(root, strings.ReplaceAll(name, ".", "/"))
}

// ReadSysctl reads one value, trimmed.
func (p ProcSys) ReadSysctl(name string) (string, error) {
	b, err := os.ReadFile(p.path(name))
	if err != nil {
		return "", fmt.Errorf("reading sysctl %s: %w", name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// WriteSysctl writes one value.
func (p ProcSys) WriteSysctl(name, value string) error {
	if err := os.WriteFile(p.path(name), []byte(value+"\n"), 0o644); err != nil {
		return fmt.Errorf("writing sysctl %s=%s: %w", name, value, err)
	}
	return nil
}

// Sysctl is one setting.
type Sysctl struct {
	Name  string
	Value string
}

// DataPathSysctls returns what the data path needs: forwarding on for both
// families (bpf_fib_lookup answers only when forwarding is on, and the
// kernel must route what XDP passes up), and reverse-path filtering off on
// the data interfaces (a VIP's packets and backend replies arrive on
// interfaces the source is not routed through). Interfaces are
// deduplicated.
func DataPathSysctls(ifaces ...string) []Sysctl {
	out := []Sysctl{
		{"net.ipv4.ip_forward", "1"},
		{"net.ipv6.conf.all.forwarding", "1"},
		{"net.ipv4.conf.all.rp_filter", "0"},
		{"net.ipv4.conf.default.rp_filter", "0"},
	}
	seen := map[string]bool{}
	for _, i := range ifaces {
		if i == "" || seen[i] || strings.Contains(i, ".") {
			// A VLAN interface "eth0.100" would be misread as a path;
			// "all" covers it (the effective rp_filter is the maximum).
			continue
		}
		seen[i] = true
		out = append(out, Sysctl{"net.ipv4.conf." + i + ".rp_filter", "0"})
	}
	return out
}

// Sysctls sets sysctls and restores what it found. It is safe for
// concurrent use.
type Sysctls struct {
	fs SysctlFS

	mu      sync.Mutex
	saved   []Sysctl // the values found, in the order they were changed
	journal journal
}

// NewSysctls returns a Sysctls over fs.
func NewSysctls(fs SysctlFS) *Sysctls { return &Sysctls{fs: fs} }

// WithJournal makes s record the values it replaces in the file at path
// before changing anything, and adopts the values a previous run that
// crashed recorded there: those are the true originals (the current values
// are that run's), so Restore writes them back.
func (s *Sysctls) WithJournal(path string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.journal = journal{path}
	var left []Sysctl
	ok, err := s.journal.load(&left)
	if err != nil || !ok {
		return err
	}
	s.saved = append(left, s.saved...)
	return nil
}

func (s *Sysctls) found(name string) bool {
	for _, st := range s.saved {
		if st.Name == name {
			return true
		}
	}
	return false
}

// Apply sets each sysctl, remembering the value it replaces. A sysctl
// already at its value is not touched (nor restored). On error, what was
// set so far stays set and remembered: call Restore.
func (s *Sysctls) Apply(settings []Sysctl) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range settings {
		old, err := s.fs.ReadSysctl(st.Name)
		if err != nil {
			return err
		}
		if old == st.Value {
			continue
		}
		recorded := s.found(st.Name) // the original is already recorded
		if !recorded {
			s.saved = append(s.saved, Sysctl{st.Name, old})
			if err := s.journal.save(s.saved); err != nil {
				s.saved = s.saved[:len(s.saved)-1]
				return err
			}
		}
		if err := s.fs.WriteSysctl(st.Name, st.Value); err != nil {
			if !recorded { // unchanged: nothing to restore
				s.saved = s.saved[:len(s.saved)-1]
				_ = s.journal.save(s.saved)
			}
			return err
		}
	}
	return nil
}

// Restore writes back every value Apply replaced, last changed first.
func (s *Sysctls) Restore() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for i := len(s.saved) - 1; i >= 0; i-- {
		if err := s.fs.WriteSysctl(s.saved[i].Name, s.saved[i].Value); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	s.saved = nil
	return s.journal.remove()
}
