package standby

import (
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// The store.
//
// Entries live in a ristretto cache, bounded by cost (one per flow, MaxCost
// = FlowLimit plus headroom) and expiring after the flow's idle timeout,
// counted from when the entry was last received: the owner re-sends every
// live flow within its refresh period, so an entry that stops coming is
// closed or idle, and an entry that ristretto dropped (its admission policy,
// a full set buffer) comes back within one refresh period.
//
// ristretto is keyed by a 64-bit hash of the flow key (maphash, seeded per
// store). Two flows with the same hash would share a slot; with a million
// flows the chance that any two collide is about 3e-8, and the stored record
// carries its full key, so a lookup never returns another flow's entry.
//
// ristretto cannot look up one owner's entries, so the store keeps, per
// owner node, an index from key hash to (vserver id, sync generation),
// about 16 bytes of map per flow: it answers how many flows each owner has,
// which entries a bulk sync left stale, which belong to a vserver whose
// failover was disabled. It is pruned when ristretto evicts, expires or
// rejects an entry (its callbacks). It may briefly miss an entry that
// ristretto holds (an eviction callback racing with a re-insert); the next
// refresh indexes that entry again.
//
// Takeover does not walk the index: ristretto v2.4.2 can iterate its values
// (IterValues, expired ones skipped), and one sequential pass filtering on
// the owner costs a fraction of a million random lookups. Each stored value
// names its owner's index, so the pass also finds entries the index missed.

// Sentinel errors.
var (
	// ErrInvalidConfig means a Config failed validation.
	ErrInvalidConfig = errors.New("invalid standby store config")
	// ErrClosed means the store was closed.
	ErrClosed = errors.New("standby store closed")
)

// FlowInstaller installs flows into the data plane's flow table, a batch at
// a time (one BPF batch update). It receives the records as stored, valid
// (Upsert validated them) and not decoded: a data plane converts them to its
// own keys in one step (decoding a million records into Entries and
// converting those cost 0.35-0.45 s here); an installer that wants Entries
// calls Record.Decode.
// Implementations need not be safe for concurrent use: during one Takeover,
// a Store calls it from one goroutine (not the caller's), one batch after
// another, while holding a read lock of the store, so it must not call the
// Store. The batch slice is reused once InstallBatch returns: an installer
// must not keep it.
type FlowInstaller interface {
	InstallBatch(recs []Record) error
}

// Config configures a Store. The zero value of every field selects its
// default.
type Config struct {
	// FlowLimit is how many mirrored flows the store is sized for (default
	// 1,000,000).
	FlowLimit int64
	// Headroom is the fraction added to FlowLimit to make ristretto's
	// MaxCost, so that admission rarely has to refuse a flow below the limit
	// (default 0.25; at most 4).
	Headroom float64
	// TCPIdleTimeout is the TTL of TCP entries whose record carries no idle
	// timeout (default 360 s, above the common 300 s established timeout).
	TCPIdleTimeout time.Duration
	// UDPIdleTimeout is the TTL of UDP entries whose record carries none
	// (default 120 s).
	UDPIdleTimeout time.Duration
	// TakeoverBatch is how many entries Takeover hands the installer at once
	// (default 4096).
	TakeoverBatch int
	// Logger receives the store's rare warnings (default slog.Default()).
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.FlowLimit == 0 {
		c.FlowLimit = 1_000_000
	}
	if c.Headroom == 0 {
		c.Headroom = 0.25
	}
	if c.TCPIdleTimeout == 0 {
		c.TCPIdleTimeout = 360 * time.Second
	}
	if c.UDPIdleTimeout == 0 {
		c.UDPIdleTimeout = 120 * time.Second
	}
	if c.TakeoverBatch == 0 {
		c.TakeoverBatch = 4096
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func (c *Config) validate() error {
	switch {
	case c.FlowLimit < 1 || c.FlowLimit > 1<<32:
		return fmt.Errorf("%w: FlowLimit %d must be between 1 and 2^32 flows", ErrInvalidConfig, c.FlowLimit)
	case c.Headroom < 0 || c.Headroom > 4:
		return fmt.Errorf("%w: Headroom %.2f must be between 0 and 4 (a fraction of FlowLimit)", ErrInvalidConfig, c.Headroom)
	case c.TCPIdleTimeout < time.Second || c.UDPIdleTimeout < time.Second:
		return fmt.Errorf("%w: idle timeouts (TCP %v, UDP %v) must be at least 1s", ErrInvalidConfig, c.TCPIdleTimeout, c.UDPIdleTimeout)
	case c.TakeoverBatch < 1:
		return fmt.Errorf("%w: TakeoverBatch %d must be positive", ErrInvalidConfig, c.TakeoverBatch)
	}
	return nil
}

// Stats are the store's counters, for metrics.
type Stats struct {
	// Entries is how many flows are indexed, Owners how many owners hold
	// some.
	Entries int
	Owners  int
	// Stored counts writes ristretto accepted into its buffer (new or
	// updated entries).
	Stored uint64
	// Dropped counts writes ristretto refused at once (full set buffer):
	// healed by the owner's next refresh.
	Dropped uint64
	// Rejected counts new entries its admission policy refused, Evicted
	// entries it evicted for room or expired (TTL).
	Rejected uint64
	Evicted  uint64
	// Invalid counts records refused by validation.
	Invalid uint64
	// Pruned counts indexed entries found gone (expired, or replaced by
	// another owner's) when enumerated.
	Pruned uint64
	// TakenOver counts entries handed to an installer; Freed counts entries
	// removed by a delete, a vserver drop or the end of a bulk sync.
	TakenOver uint64
	Freed     uint64
}

type counters struct {
	stored, dropped, rejected, evicted, invalid, pruned, takenOver, freed atomic.Uint64
}

// Store is the partner's bounded store of mirrored flows. It is safe for
// concurrent use; one owner's entries should come from one goroutine (its
// mirroring connection), in order.
type Store struct {
	cfg   Config
	seed  maphash.Seed
	cache *ristretto.Cache[uint64, value]
	c     counters

	// clearMu is held for reading by every use of cache and for writing
	// when the cache is replaced, which must not run beside writes it
	// would lose.
	clearMu sync.RWMutex
	bg      sync.WaitGroup // closing replaced caches

	mu     sync.Mutex
	owners map[string]*ownerIndex
	closed bool
}

// value is what ristretto holds for a flow.
type value struct {
	rec   Record
	owner *ownerIndex
}

type ownerIndex struct {
	// detached is set (under Store.mu) when the index leaves Store.owners,
	// so that ristretto's callbacks for its entries skip the lock.
	detached atomic.Bool
	name     string
	gen      uint32 // generation of the current or last bulk sync
	idx      map[uint64]meta
}

type meta struct {
	vs  uint32
	gen uint32
}

// New returns an empty store. Close it to stop ristretto's goroutines.
func New(cfg Config) (*Store, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Store{
		cfg:    cfg,
		seed:   maphash.MakeSeed(),
		owners: make(map[string]*ownerIndex),
	}
	cache, err := s.newCache()
	if err != nil {
		return nil, err
	}
	s.cache = cache
	return s, nil
}

func (s *Store) newCache() (*ristretto.Cache[uint64, value], error) {
	maxCost := s.cfg.FlowLimit + int64(float64(s.cfg.FlowLimit)*s.cfg.Headroom)
	cache, err := ristretto.NewCache(&ristretto.Config[uint64, value]{
		NumCounters:        10 * maxCost,
		MaxCost:            maxCost,
		BufferItems:        64,
		IgnoreInternalCost: true,
		OnEvict: func(it *ristretto.Item[value]) {
			if s.unindex(it.Value.owner, it.Key) {
				s.c.evicted.Add(1)
			}
		},
		OnReject: func(it *ristretto.Item[value]) {
			if s.unindex(it.Value.owner, it.Key) {
				s.c.rejected.Add(1)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("creating ristretto cache: %w", err)
	}
	return cache, nil
}

// Close releases the cache. Later calls fail with ErrClosed or do nothing.
func (s *Store) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.owners = make(map[string]*ownerIndex)
	s.mu.Unlock()
	s.clearMu.Lock()
	s.cache.Close()
	s.clearMu.Unlock()
	s.bg.Wait()
}

// unindex drops h from an owner's live index; called from ristretto's
// goroutine. It reports whether the owner's index is live: entries of a
// detached index (taken over, being freed) are not counted as evicted.
func (s *Store) unindex(oi *ownerIndex, h uint64) bool {
	if oi == nil || oi.detached.Load() {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.owners[oi.name] != oi {
		return false
	}
	delete(oi.idx, h)
	return true
}

func (s *Store) hash(k []byte) uint64 { return maphash.Bytes(s.seed, k[:KeySize]) }

func (s *Store) ttl(r *Record) time.Duration {
	if t := r.IdleTimeout(); t > 0 {
		return t
	}
	if r.Proto() == ProtoUDP {
		return s.cfg.UDPIdleTimeout
	}
	return s.cfg.TCPIdleTimeout
}

// owner returns owner's index, creating it. s.mu is held.
func (s *Store) owner(name string) *ownerIndex {
	oi := s.owners[name]
	if oi == nil {
		oi = &ownerIndex{name: name, idx: make(map[uint64]meta, min(s.cfg.FlowLimit, 1<<20))}
		s.owners[name] = oi
	}
	return oi
}

// BeginSync starts bulk sync generation gen of owner's entries: entries
// upserted from now on belong to gen, and EndSync(owner, gen) frees those
// that do not.
func (s *Store) BeginSync(owner string, gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.owner(owner).gen = uint32(gen)
}

// EndSync completes bulk sync gen of owner: entries not re-sent since
// BeginSync(owner, gen) are flows the owner no longer has, and are freed. A
// stale gen (a newer sync began) does nothing. It returns how many were
// freed.
func (s *Store) EndSync(owner string, gen uint64) int {
	s.mu.Lock()
	oi := s.owners[owner]
	if s.closed || oi == nil || oi.gen != uint32(gen) {
		s.mu.Unlock()
		return 0
	}
	var stale []uint64
	for h, m := range oi.idx {
		if m.gen != oi.gen {
			stale = append(stale, h)
			delete(oi.idx, h)
		}
	}
	s.mu.Unlock()
	s.del(stale)
	s.c.freed.Add(uint64(len(stale)))
	return len(stale)
}

// Upsert stores owner's records, each with its idle timeout as TTL, and
// waits until ristretto has applied them. Invalid records are skipped and
// counted; the first one's error is returned with the number stored. A
// record ristretto drops is counted and left for the owner's refresh.
func (s *Store) Upsert(owner string, recs []Record) (stored int, err error) {
	s.clearMu.RLock()
	defer s.clearMu.RUnlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, ErrClosed
	}
	oi := s.owner(owner)
	for i := range recs {
		r := &recs[i]
		if verr := r.Validate(); verr != nil {
			s.c.invalid.Add(1)
			if err == nil {
				err = fmt.Errorf("record %d from %s: %w", i, owner, verr)
			}
			continue
		}
		h := s.hash(r[:])
		if !s.cache.SetWithTTL(h, value{rec: *r, owner: oi}, 1, s.ttl(r)) {
			s.c.dropped.Add(1)
			continue
		}
		oi.idx[h] = meta{vs: r.VServerID(), gen: oi.gen}
		stored++
	}
	s.mu.Unlock()
	s.c.stored.Add(uint64(stored))
	// Outside s.mu: ristretto's goroutine takes it in its callbacks.
	s.cache.Wait()
	return stored, err
}

// Delete frees owner's entries for keys (flows the owner closed). The
// cache entry goes even if the index lost track of it.
func (s *Store) Delete(owner string, keys []Key) {
	// clearMu is held from the index change to the cache's, so a Takeover
	// (which waits for every holder first) never sees one without the other.
	s.clearMu.RLock()
	defer s.clearMu.RUnlock()
	hs := make([]uint64, 0, len(keys))
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	oi := s.owners[owner]
	indexed := 0
	for i := range keys {
		h := s.hash(keys[i][:])
		if oi != nil {
			if _, ok := oi.idx[h]; ok {
				delete(oi.idx, h)
				indexed++
			}
		}
		hs = append(hs, h)
	}
	s.mu.Unlock()
	s.delLocked(hs)
	s.c.freed.Add(uint64(indexed))
}

func (s *Store) del(hs []uint64) {
	s.clearMu.RLock()
	defer s.clearMu.RUnlock()
	s.delLocked(hs)
}

// delLocked deletes hs from the cache; the caller holds clearMu.
func (s *Store) delLocked(hs []uint64) {
	for _, h := range hs {
		s.cache.Del(h)
	}
}

// Lookup returns the entry stored for key, whoever mirrored it.
func (s *Store) Lookup(key Key) (Entry, bool) {
	s.clearMu.RLock()
	v, ok := s.cache.Get(s.hash(key[:]))
	s.clearMu.RUnlock()
	if !ok || v.rec.Key() != key {
		return Entry{}, false
	}
	e, err := v.rec.Decode()
	return e, err == nil
}

// Owners lists the owners with indexed entries and how many each has.
func (s *Store) Owners() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.owners))
	for n, oi := range s.owners {
		out[n] = len(oi.idx)
	}
	return out
}

// Stats returns the counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	st := Stats{Owners: len(s.owners)}
	for _, oi := range s.owners {
		st.Entries += len(oi.idx)
	}
	s.mu.Unlock()
	st.Stored = s.c.stored.Load()
	st.Dropped = s.c.dropped.Load()
	st.Rejected = s.c.rejected.Load()
	st.Evicted = s.c.evicted.Load()
	st.Invalid = s.c.invalid.Load()
	st.Pruned = s.c.pruned.Load()
	st.TakenOver = s.c.takenOver.Load()
	st.Freed = s.c.freed.Load()
	return st
}

// Takeover hands every live entry mirrored by owner to inst, in batches of
// at most Config.TakeoverBatch, then frees them. On an installer error it
// stops and returns how many were installed; the entries not installed stay
// in the store, so Takeover can be called again.
//
// Freeing: when no other owner has entries (the usual case, a node stores
// its one partner's flows), the cache is replaced by an empty one and the
// old one is closed in the background; otherwise each entry is deleted,
// which costs more than the takeover itself (several microseconds per flow
// at a million flows: deletions leave Go map tombstones).
func (s *Store) Takeover(owner string, inst FlowInstaller) (installed int, err error) {
	// Barrier: an Upsert or Delete in flight (index changed, cache not yet)
	// finishes before the owner's entries are read, so the takeover matches
	// the index the caller may have looked at.
	s.clearMu.Lock()
	//lint:ignore SA2001 an empty critical section is the point: a barrier
	s.clearMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, ErrClosed
	}
	oi := s.owners[owner]
	// Detached: ristretto's callbacks no longer touch oi.idx, so it is read
	// here without the lock.
	delete(s.owners, owner)
	if oi != nil {
		oi.detached.Store(true)
	}
	s.mu.Unlock()
	if oi == nil {
		return 0, nil
	}
	n := max(1, min(s.cfg.TakeoverBatch, len(oi.idx)))
	// Two stages: this goroutine walks ristretto and copies records into
	// batches; another hands them to the installer, one at a time and in
	// order. The walk overlaps the kernel's map writes, most of a
	// takeover's time. A batch is in done only once installed.
	type batchT struct {
		rs []Record
		hs []uint64
	}
	todo := make(chan batchT, 2)
	free := make(chan batchT, 3)
	for range 3 {
		free <- batchT{rs: make([]Record, 0, n), hs: make([]uint64, 0, n)}
	}
	done := make([]uint64, 0, len(oi.idx))
	var failed atomic.Bool
	installErr := make(chan error, 1)
	go func() {
		var ierr error
		for b := range todo {
			if ierr == nil {
				if ierr = inst.InstallBatch(b.rs); ierr != nil {
					failed.Store(true)
				} else {
					done = append(done, b.hs...)
					installed += len(b.rs)
					s.c.takenOver.Add(uint64(len(b.rs)))
				}
			}
			free <- batchT{rs: b.rs[:0], hs: b.hs[:0]}
		}
		installErr <- ierr
	}()
	cur := <-free
	// One sequential pass over ristretto's shards: a million random Gets
	// cost far more in cache misses than walking the maps in memory order.
	// Expired entries are skipped by IterValues.
	s.clearMu.RLock()
	s.cache.IterValues(func(v value) bool {
		if v.owner != oi {
			return false
		}
		cur.rs = append(cur.rs, v.rec)
		cur.hs = append(cur.hs, s.hash(v.rec[:]))
		if len(cur.rs) == cap(cur.rs) {
			todo <- cur
			cur = <-free
		}
		return failed.Load()
	})
	s.clearMu.RUnlock()
	if len(cur.rs) > 0 {
		todo <- cur
	}
	close(todo)
	err = <-installErr
	if err == nil {
		// Indexed entries not found expired or were replaced.
		s.c.pruned.Add(uint64(max(0, len(oi.idx)-installed)))
	}
	if err != nil {
		for _, h := range done {
			delete(oi.idx, h)
		}
		s.mu.Lock()
		if !s.closed && s.owners[owner] == nil {
			s.owners[owner] = oi
			oi.detached.Store(false)
		}
		s.mu.Unlock()
		s.del(done)
		s.cfg.Logger.Warn("standby takeover interrupted", "owner", owner, "installed", installed, "left", len(oi.idx), "err", err)
		return installed, fmt.Errorf("installing flows mirrored by %s (%d installed): %w", owner, installed, err)
	}
	s.free(done)
	return installed, nil
}

// free deletes the entries hs. When no owner is indexed any more it
// replaces the cache with an empty one instead and closes the old one in
// the background: clearing or deleting a million entries costs more than
// the takeover itself.
func (s *Store) free(hs []uint64) {
	s.clearMu.Lock()
	s.mu.Lock()
	empty := len(s.owners) == 0 && !s.closed
	s.mu.Unlock()
	if empty {
		if fresh, err := s.newCache(); err == nil {
			// No Upsert, Delete or EndSync runs (clearMu), so nothing but
			// the detached entries is dropped.
			old := s.cache
			s.cache = fresh
			s.clearMu.Unlock()
			s.c.freed.Add(uint64(len(hs)))
			s.bg.Add(1)
			go func() {
				defer s.bg.Done()
				old.Close()
			}()
			return
		}
	}
	s.clearMu.Unlock()
	s.del(hs)
	s.c.freed.Add(uint64(len(hs)))
}

// DropVServer frees every entry of vserver id (its connection failover was
// disabled or it was removed). It returns how many were freed.
func (s *Store) DropVServer(id uint32) int {
	s.mu.Lock()
	var hs []uint64
	for _, oi := range s.owners {
		for h, m := range oi.idx {
			if m.vs == id {
				hs = append(hs, h)
				delete(oi.idx, h)
			}
		}
	}
	s.mu.Unlock()
	s.del(hs)
	s.c.freed.Add(uint64(len(hs)))
	return len(hs)
}
