package cluster

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// ErrCorruptState: the state file exists but cannot be read back. The
// daemon refuses to start rather than join with an empty document; move the
// file away to start empty and receive the configuration from the cluster.
var ErrCorruptState = errors.New("corrupt state file")

// StateFileName is the file in StoreConfig.Dir holding the document.
const StateFileName = "config.json"

// stateFormat is the version of the state file layout.
const stateFormat = 1

// DefaultTombstoneTTL is how long a deletion is remembered. A node that was
// away for longer may bring a deleted object back when it rejoins.
const DefaultTombstoneTTL = 7 * 24 * time.Hour

// StoreConfig configures a Store.
type StoreConfig struct {
	// Node is this node's id, the tie breaker of versions. Required.
	Node string
	// Dir is the state directory; empty keeps the document in memory only.
	Dir string
	// TombstoneTTL: how long deletions are kept (default DefaultTombstoneTTL).
	TombstoneTTL time.Duration
	// Now is the wall clock, used only for tombstone times (default time.Now).
	Now func() time.Time
	// OnChange, if set, is called after every change that is applied, local
	// (Update) or remote (Merge), with the entries that changed. It is called
	// with the Store locked, so it must not block nor call the Store; the
	// memberlist adapter queues the entries for broadcast.
	OnChange func(changed []Entry, local bool)
}

func (c *StoreConfig) validate() error {
	if !validName(c.Node) {
		return fmt.Errorf("store: node id %q must be 1-127 letters, digits, '_', '.', '-'", c.Node)
	}
	if c.TombstoneTTL < 0 {
		return fmt.Errorf("store: negative tombstone TTL %s", c.TombstoneTTL)
	}
	return nil
}

// Store is the replicated configuration document of one node. It is safe
// for concurrent use.
type Store struct {
	cfg StoreConfig

	mu      sync.Mutex
	clock   uint64
	entries map[entryID]Entry
	current Config // materialized live entries, normalized
	digest  string
}

// NewStore makes a store, loading the document from cfg.Dir if a state file
// is there. A state file that cannot be decoded is an error matching
// ErrCorruptState.
func NewStore(cfg StoreConfig) (*Store, error) {
	if cfg.TombstoneTTL == 0 {
		cfg.TombstoneTTL = DefaultTombstoneTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Store{cfg: cfg, entries: map[entryID]Entry{}}
	if cfg.Dir != "" {
		if err := s.load(); err != nil {
			return nil, err
		}
	}
	s.refresh()
	return s, nil
}

// stateFile is the on-disk layout.
type stateFile struct {
	Format  int     `json:"format"`
	Node    string  `json:"node"`
	Clock   uint64  `json:"clock"`
	Entries []Entry `json:"entries"`
}

func (s *Store) path() string { return filepath.Join(s.cfg.Dir, StateFileName) }

func (s *Store) load() error {
	b, err := os.ReadFile(s.path())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading state: %w", err)
	}
	var f stateFile
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("%w %s: %v; move it away to start empty and resync from the cluster", ErrCorruptState, s.path(), err)
	}
	if f.Format != stateFormat {
		return fmt.Errorf("%w %s: format %d, this version reads %d", ErrCorruptState, s.path(), f.Format, stateFormat)
	}
	if f.Clock > maxClock {
		return fmt.Errorf("%w %s: clock %d out of range", ErrCorruptState, s.path(), f.Clock)
	}
	s.clock = f.Clock
	for i := range f.Entries {
		e := f.Entries[i]
		if err := e.Validate(); err != nil {
			return fmt.Errorf("%w %s: %v", ErrCorruptState, s.path(), err)
		}
		if _, dup := s.entries[e.id()]; dup {
			return fmt.Errorf("%w %s: entry %s %q twice", ErrCorruptState, s.path(), e.Kind, e.Key)
		}
		s.entries[e.id()] = e
		s.clock = max(s.clock, e.Version.Clock)
	}
	return nil
}

// persist writes entries atomically: temp file, fsync, rename, fsync dir.
func (s *Store) persist(entries map[entryID]Entry, clock uint64) error {
	if s.cfg.Dir == "" {
		return nil
	}
	f := stateFile{Format: stateFormat, Node: s.cfg.Node, Clock: clock, Entries: sortedEntries(entries)}
	b, err := json.MarshalIndent(f, "", " ")
	if err != nil {
		return fmt.Errorf("encoding state: %w", err)
	}
	if err := os.MkdirAll(s.cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("creating state dir: %w", err)
	}
	tmp, err := os.CreateTemp(s.cfg.Dir, StateFileName+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing state: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("writing state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("syncing state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing state: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.path()); err != nil {
		return fmt.Errorf("replacing state: %w", err)
	}
	d, err := os.Open(s.cfg.Dir)
	if err != nil {
		return fmt.Errorf("syncing state dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing state dir: %w", err)
	}
	return nil
}

func sortedEntries(m map[entryID]Entry) []Entry {
	out := make([]Entry, 0, len(m))
	for _, e := range m {
		out = append(out, e.clone())
	}
	sortEntries(out)
	return out
}

func (s *Store) refresh() {
	s.current = configOf(s.entries)
	s.digest = s.current.Digest()
}

// Node is this store's node id.
func (s *Store) Node() string { return s.cfg.Node }

// Config returns a deep copy of the current (merged) configuration, normalized.
func (s *Store) Config() Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current.Clone()
}

// Digest is the digest of the current configuration (Config.Digest).
func (s *Store) Digest() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.digest
}

// Problems lists the broken rules of the merged document (normally none;
// see the replication model in entry.go).
func (s *Store) Problems() []*RuleError {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current.Problems()
}

// Clock is the store's Lamport clock.
func (s *Store) Clock() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clock
}

// Update applies fn to a copy of the configuration. fn's error is returned
// as is. The result is normalized and validated: a rule broken by the change
// (one not already broken in the merged document) refuses it with the
// RuleErrors. On any error nothing changes. Otherwise each changed object
// gets a new version, the document is persisted, and OnChange is called.
// fn runs with the store locked: it must not call the Store.
func (s *Store) Update(fn func(*Config) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.current.Clone()
	if err := fn(&next); err != nil {
		return err
	}
	next.Normalize()
	if err := newProblems(&s.current, &next); err != nil {
		return err
	}
	old := entriesOf(&s.current)
	now := entriesOf(&next)
	clock := s.clock + 1
	ver := Version{Clock: clock, Node: s.cfg.Node}
	var changed []Entry
	for id, e := range now {
		if o, ok := old[id]; ok && samePayload(&o, &e) {
			continue
		}
		e.Version = ver
		changed = append(changed, e)
	}
	for id := range old {
		if _, ok := now[id]; !ok {
			changed = append(changed, Entry{Kind: id.kind, Key: id.key, Version: ver, Deleted: true, DeletedAt: s.cfg.Now().Unix()})
		}
	}
	if len(changed) == 0 {
		return nil
	}
	sortEntries(changed)
	merged := make(map[entryID]Entry, len(s.entries)+len(changed))
	for id, e := range s.entries {
		merged[id] = e
	}
	for _, e := range changed {
		merged[e.id()] = e
	}
	if err := s.persist(merged, clock); err != nil {
		return err
	}
	s.entries, s.clock = merged, clock
	s.refresh()
	if s.cfg.OnChange != nil {
		s.cfg.OnChange(cloneEntries(changed), true)
	}
	return nil
}

// newProblems returns the rules next breaks that cur does not, joined.
func newProblems(cur, next *Config) error {
	probs := next.Problems()
	if len(probs) == 0 {
		return nil
	}
	had := map[string]bool{}
	for _, p := range cur.Problems() {
		had[p.Object+"\x00"+p.Error()] = true
	}
	var errs []error
	for _, p := range probs {
		if !had[p.Object+"\x00"+p.Error()] {
			errs = append(errs, p)
		}
	}
	return errors.Join(errs...)
}

func cloneEntries(es []Entry) []Entry {
	out := make([]Entry, len(es))
	for i, e := range es {
		out[i] = e.clone()
	}
	return out
}

// Merge applies remote entries: per object, the highest version wins. Every
// entry is checked first (Entry.Validate); one malformed entry rejects the
// whole batch. It returns the entries that changed the document, after
// persisting them and calling OnChange.
func (s *Store) Merge(remote []Entry) ([]Entry, error) {
	for i := range remote {
		if err := remote[i].Validate(); err != nil {
			return nil, fmt.Errorf("merging: %w", err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var changed []Entry
	merged := map[entryID]Entry{}
	clock := s.clock
	for _, r := range remote {
		clock = max(clock, r.Version.Clock)
		id := r.id()
		cur, ok := merged[id]
		if !ok {
			cur, ok = s.entries[id]
		}
		if ok && !r.wins(&cur) {
			continue
		}
		merged[id] = r.clone()
	}
	for _, e := range merged {
		changed = append(changed, e)
	}
	if len(changed) == 0 {
		if clock != s.clock {
			s.clock = clock // seen a later clock: later local changes win
		}
		return nil, nil
	}
	sortEntries(changed)
	all := make(map[entryID]Entry, len(s.entries)+len(changed))
	for id, e := range s.entries {
		all[id] = e
	}
	for _, e := range changed {
		all[e.id()] = e
	}
	if err := s.persist(all, clock); err != nil {
		return nil, err
	}
	s.entries, s.clock = all, clock
	s.refresh()
	if s.cfg.OnChange != nil {
		s.cfg.OnChange(cloneEntries(changed), false)
	}
	return cloneEntries(changed), nil
}

// Entries returns the whole document, tombstones included, sorted: the full
// state sent in push/pull.
func (s *Store) Entries() []Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return sortedEntries(s.entries)
}

// StateDigest is the hex SHA-256 of the whole document with versions and
// tombstones. Replicas that have seen the same changes have equal state
// digests; Digest compares content only.
func (s *Store) StateDigest() string {
	es := s.Entries()
	h := sha256.New()
	for i := range es {
		h.Write(es[i].encode())
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// GC forgets tombstones older than TombstoneTTL and returns how many.
func (s *Store) GC() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	limit := s.cfg.Now().Add(-s.cfg.TombstoneTTL).Unix()
	kept := make(map[entryID]Entry, len(s.entries))
	n := 0
	for id, e := range s.entries {
		if e.Deleted && e.DeletedAt < limit {
			n++
			continue
		}
		kept[id] = e
	}
	if n == 0 {
		return 0, nil
	}
	if err := s.persist(kept, s.clock); err != nil {
		return 0, err
	}
	s.entries = kept
	return n, nil
}
