package netlink

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// journal persists what tandemd changed in the kernel, so that the next run
// after a crash (SIGKILL, OOM, power) still undoes it: the VIP addresses it
// added, and the sysctl values it found before changing them.
type journal struct{ path string }

// load reads the journal into v; false when there is none.
func (j journal) load(v any) (bool, error) {
	if j.path == "" {
		return false, nil
	}
	b, err := os.ReadFile(j.path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", j.path, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("%s is corrupt (remove it after checking the kernel state by hand): %w", j.path, err)
	}
	return true, nil
}

// save writes v atomically (temporary file, fsync, rename).
func (j journal) save(v any) error {
	if j.path == "" {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(j.path), filepath.Base(j.path)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", j.path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", j.path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", j.path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", j.path, err)
	}
	if err := os.Rename(tmp.Name(), j.path); err != nil {
		return fmt.Errorf("writing %s: %w", j.path, err)
	}
	return nil
}

func (j journal) remove() error {
	if j.path == "" {
		return nil
	}
	if err := os.Remove(j.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
