package cluster

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Replication model.
//
// The configuration is replicated object by object. Every service, vserver,
// binding and monitor is an Entry carrying the Version of its last change: a
// Lamport clock and the id of the node that made the change. A deletion is an
// Entry too (a tombstone), so that it wins over older copies that are still
// travelling. Merging keeps, per object, the entry with the highest
// (clock, node id); ties on both (only possible for the same change seen twice)
// fall back to comparing the encoded entries, so the merge is commutative,
// associative and idempotent and every node that has seen the same set of
// entries holds the same document, whatever the order or duplication.
//
// Objects are merged independently, so two nodes can concurrently make a
// document that breaks a rule (both add a vserver on the same VIP and port,
// or one binds a service the other removes). Such a document is accepted as
// merged (refusing it would make nodes diverge); Config.Quarantine then leaves
// the vservers in error out of the data plane on every node alike, and
// Store.Problems shows why until an operator fixes it.

// Kind is the kind of a replicated object.
type Kind string

const (
	KindService Kind = "service"
	KindVServer Kind = "vserver"
	KindBinding Kind = "binding"
	KindMonitor Kind = "monitor"
)

// Version orders changes of one object: Lamport clock, then node id.
type Version struct {
	Clock uint64 `json:"clock"`
	Node  string `json:"node"`
}

// Compare returns -1, 0 or +1.
func (v Version) Compare(o Version) int {
	if x := cmp.Compare(v.Clock, o.Clock); x != 0 {
		return x
	}
	return cmp.Compare(v.Node, o.Node)
}

func (v Version) String() string { return fmt.Sprintf("%d@%s", v.Clock, v.Node) }

// maxClock bounds accepted Lamport clocks, so that a corrupt or hostile
// entry cannot push the clock to overflow (2^62 changes never happen).
const maxClock = 1 << 62

// Entry is one replicated object, or its tombstone.
type Entry struct {
	Kind    Kind    `json:"kind"`
	Key     string  `json:"key"` // the name; "vserver/service" for bindings
	Version Version `json:"version"`
	Deleted bool    `json:"deleted,omitempty"`
	// DeletedAt is the deleting node's wall clock (Unix seconds), used only
	// to garbage-collect the tombstone after Store's TombstoneTTL.
	DeletedAt int64    `json:"deletedAt,omitempty"`
	Service   *Service `json:"service,omitempty"`
	VServer   *VServer `json:"vserver,omitempty"`
	Binding   *Binding `json:"binding,omitempty"`
	Monitor   *Monitor `json:"monitor,omitempty"`
}

type entryID struct {
	kind Kind
	key  string
}

func (e *Entry) id() entryID { return entryID{e.Kind, e.Key} }

// BindingKey is the Entry key of a binding.
func BindingKey(vs, svc string) string { return vs + "/" + svc }

// Validate checks that an entry is well formed (not that the configuration
// it belongs to follows the rules): a known kind, a key that matches its
// object, a version, and exactly the payload its kind needs.
func (e *Entry) Validate() error {
	if e.Version.Clock == 0 || e.Version.Clock > maxClock || !validName(e.Version.Node) {
		return fmt.Errorf("entry %s %q: invalid version %s", e.Kind, e.Key, e.Version)
	}
	n := 0
	for _, p := range []bool{e.Service != nil, e.VServer != nil, e.Binding != nil, e.Monitor != nil} {
		if p {
			n++
		}
	}
	if e.Deleted {
		if n != 0 {
			return fmt.Errorf("entry %s %q: tombstone with a payload", e.Kind, e.Key)
		}
	} else if n != 1 {
		return fmt.Errorf("entry %s %q: want exactly one payload, have %d", e.Kind, e.Key, n)
	} else if e.DeletedAt != 0 {
		return fmt.Errorf("entry %s %q: live entry with a deletion time", e.Kind, e.Key)
	}
	var name string
	var ok bool
	switch e.Kind {
	case KindService:
		ok = e.Deleted || e.Service != nil
		if e.Service != nil {
			name = e.Service.Name
		}
	case KindVServer:
		ok = e.Deleted || e.VServer != nil
		if e.VServer != nil {
			name = e.VServer.Name
		}
	case KindMonitor:
		ok = e.Deleted || e.Monitor != nil
		if e.Monitor != nil {
			name = e.Monitor.Name
		}
	case KindBinding:
		ok = e.Deleted || e.Binding != nil
		if e.Binding != nil {
			name = BindingKey(e.Binding.VServer, e.Binding.Service)
		}
	default:
		return fmt.Errorf("entry %q: unknown kind %q", e.Key, e.Kind)
	}
	if !ok {
		return fmt.Errorf("entry %s %q: payload of another kind", e.Kind, e.Key)
	}
	if e.Kind == KindBinding {
		vs, svc, found := strings.Cut(e.Key, "/")
		if !found || !validName(vs) || !validName(svc) {
			return fmt.Errorf("entry binding %q: key must be vserver/service", e.Key)
		}
	} else if !validName(e.Key) {
		return fmt.Errorf("entry %s %q: invalid name", e.Kind, e.Key)
	}
	if !e.Deleted && name != e.Key {
		return fmt.Errorf("entry %s %q: key does not match object %q", e.Kind, e.Key, name)
	}
	return nil
}

// wins reports whether a should replace b in a merge.
func (a *Entry) wins(b *Entry) bool {
	if x := a.Version.Compare(b.Version); x != 0 {
		return x > 0
	}
	// Same version twice: normally the same change. Break the tie on the
	// encoding so that even a forged duplicate cannot make nodes diverge.
	return bytes.Compare(a.encode(), b.encode()) > 0
}

func (e *Entry) encode() []byte {
	b, err := json.Marshal(e)
	if err != nil {
		panic(fmt.Sprintf("encoding entry: %v", err))
	}
	return b
}

func (e Entry) clone() Entry {
	if e.Service != nil {
		s := *e.Service
		e.Service = &s
	}
	if e.VServer != nil {
		v := *e.VServer
		e.VServer = &v
	}
	if e.Binding != nil {
		b := *e.Binding
		e.Binding = &b
	}
	if e.Monitor != nil {
		m := *e.Monitor
		e.Monitor = &m
	}
	return e
}

func sortEntries(es []Entry) {
	slices.SortFunc(es, func(a, b Entry) int {
		if x := cmp.Compare(a.Kind, b.Kind); x != 0 {
			return x
		}
		return cmp.Compare(a.Key, b.Key)
	})
}

// entriesOf lists the live objects of a configuration as entries (without
// versions), keyed by id.
func entriesOf(c *Config) map[entryID]Entry {
	out := map[entryID]Entry{}
	for _, s := range c.Services {
		s := s
		out[entryID{KindService, s.Name}] = Entry{Kind: KindService, Key: s.Name, Service: &s}
	}
	for _, v := range c.VServers {
		v := v
		out[entryID{KindVServer, v.Name}] = Entry{Kind: KindVServer, Key: v.Name, VServer: &v}
	}
	for _, b := range c.Bindings {
		b := b
		k := BindingKey(b.VServer, b.Service)
		out[entryID{KindBinding, k}] = Entry{Kind: KindBinding, Key: k, Binding: &b}
	}
	for _, m := range c.Monitors {
		m := m
		out[entryID{KindMonitor, m.Name}] = Entry{Kind: KindMonitor, Key: m.Name, Monitor: &m}
	}
	return out
}

// samePayload compares the objects of two live entries.
func samePayload(a, b *Entry) bool {
	switch {
	case a.Service != nil && b.Service != nil:
		return *a.Service == *b.Service
	case a.VServer != nil && b.VServer != nil:
		return *a.VServer == *b.VServer
	case a.Binding != nil && b.Binding != nil:
		return *a.Binding == *b.Binding
	case a.Monitor != nil && b.Monitor != nil:
		return *a.Monitor == *b.Monitor
	}
	return false
}

// configOf materializes the live entries as a normalized configuration.
func configOf(entries map[entryID]Entry) Config {
	var c Config
	for _, e := range entries {
		if e.Deleted {
			continue
		}
		switch {
		case e.Service != nil:
			c.Services = append(c.Services, *e.Service)
		case e.VServer != nil:
			c.VServers = append(c.VServers, *e.VServer)
		case e.Binding != nil:
			c.Bindings = append(c.Bindings, *e.Binding)
		case e.Monitor != nil:
			c.Monitors = append(c.Monitors, *e.Monitor)
		}
	}
	c.Normalize()
	return c
}
