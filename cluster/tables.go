package cluster

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"

	"github.com/tandem-lb/tandem/hashing"
)

// VServerTable is the Maglev table of one vserver, as the data plane gets it.
type VServerTable struct {
	VServer string `json:"vserver"`
	// Epoch counts this node's changes of Slots (it starts at 1); the data
	// plane uses it to flip its double-buffered table. It is local history,
	// not part of Digest: a node that joined later has smaller epochs but
	// the same table.
	Epoch    uint64 `json:"epoch"`
	Seed     uint32 `json:"seed"`     // hashing.VServerSeed(VServer)
	WithPort bool   `json:"withPort"` // SRCIPSRCPORTHASH without SOURCEIP persistence; else a source-IP table
	// Backends are every bound service, sorted by name; Slots index into it.
	Backends []string `json:"backends"`
	// Weights are the effective weights: the binding's weight when the
	// service is agreed UP, 0 when DOWN (it keeps its index but owns no slot).
	Weights []uint32 `json:"weights"`
	// Slots is the lookup table of length M; empty when no backend is UP
	// (the data plane then drops new flows of the vserver).
	Slots []uint32 `json:"slots,omitempty"`
}

// Digest is the hex SHA-256 of everything but Epoch.
func (t *VServerTable) Digest() string {
	h := sha256.New()
	writeTable(h, t)
	return hex.EncodeToString(h.Sum(nil))
}

type byteWriter interface{ Write([]byte) (int, error) }

func writeTable(h byteWriter, t *VServerTable) {
	var b [4]byte
	word := func(v uint32) {
		binary.BigEndian.PutUint32(b[:], v)
		h.Write(b[:])
	}
	str := func(s string) {
		word(uint32(len(s)))
		h.Write([]byte(s))
	}
	str(t.VServer)
	word(t.Seed)
	if t.WithPort {
		word(1)
	} else {
		word(0)
	}
	word(uint32(len(t.Backends)))
	for i, n := range t.Backends {
		str(n)
		word(t.Weights[i])
	}
	word(uint32(len(t.Slots)))
	for _, s := range t.Slots {
		word(s)
	}
}

// HasBackend reports whether some backend owns slots.
func (t *VServerTable) HasBackend() bool { return len(t.Slots) > 0 }

func (t *VServerTable) sameContent(o *VServerTable) bool {
	return t.VServer == o.VServer && t.Seed == o.Seed && t.WithPort == o.WithPort &&
		slices.Equal(t.Backends, o.Backends) && slices.Equal(t.Weights, o.Weights) && slices.Equal(t.Slots, o.Slots)
}

// TablesDigest is the digest of a set of tables (sorted by vserver), epochs
// excluded: nodes that agree on configuration and health have equal ones.
func TablesDigest(ts []VServerTable) string {
	sorted := slices.Clone(ts)
	slices.SortFunc(sorted, func(a, b VServerTable) int {
		switch {
		case a.VServer < b.VServer:
			return -1
		case a.VServer > b.VServer:
			return 1
		}
		return 0
	})
	h := sha256.New()
	for i := range sorted {
		writeTable(h, &sorted[i])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// ComputeTables builds the table of every vserver the data plane may
// program (cfg.Quarantine leaves vservers in error out), sorted by vserver:
// a pure function of the configuration, the agreed health (up[service]) and
// the table size m, so every node computes the same tables. prev, the
// previous tables by vserver, only carries epochs forward: a table whose
// content changed gets prev's epoch + 1, an unchanged one keeps it.
//
// A table whose inputs (backends, effective weights, size) equal prev's is
// not rebuilt: Maglev is a pure function of them, so prev's slots are reused.
func ComputeTables(cfg Config, up map[string]bool, prev map[string]VServerTable, m uint64) ([]VServerTable, error) {
	ok, _ := cfg.Quarantine()
	return computeTables(&ok, up, prev, m)
}

// computeTables is ComputeTables on an already quarantined configuration.
func computeTables(ok *Config, up map[string]bool, prev map[string]VServerTable, m uint64) ([]VServerTable, error) {
	if err := hashing.ValidateTableSize(m); err != nil {
		return nil, fmt.Errorf("computing tables: %w", err)
	}
	bindings := map[string][]Binding{}
	for _, b := range ok.Bindings { // sorted by vserver, then service
		bindings[b.VServer] = append(bindings[b.VServer], b)
	}
	out := make([]VServerTable, 0, len(ok.VServers))
	for _, vs := range ok.VServers {
		t := VServerTable{
			VServer:  vs.Name,
			Seed:     hashing.VServerSeed(vs.Name),
			WithPort: vs.LBMethod == MethodSrcIPSrcPortHash && vs.Persistence != PersistSourceIP,
		}
		backends := make([]hashing.Backend, 0)
		for _, b := range bindings[vs.Name] { // sorted by service name
			w := b.Weight
			if !up[b.Service] {
				w = 0
			}
			t.Backends = append(t.Backends, b.Service)
			t.Weights = append(t.Weights, w)
			backends = append(backends, hashing.Backend{Key: b.Service, Weight: w})
		}
		p, hasPrev := prev[vs.Name]
		if hasPrev && slices.Equal(p.Backends, t.Backends) && slices.Equal(p.Weights, t.Weights) &&
			(len(p.Slots) == int(m) || len(p.Slots) == 0 && !anyPositive(t.Weights)) {
			t.Slots = p.Slots
			t.Epoch = p.Epoch
			if t.Seed != p.Seed || t.WithPort != p.WithPort {
				t.Epoch++
			}
			out = append(out, t)
			continue
		}
		slots, err := hashing.BuildMaglev(backends, m)
		switch {
		case errors.Is(err, hashing.ErrNoBackends):
		case err != nil:
			return nil, fmt.Errorf("computing table of lb vserver %s: %w", vs.Name, err)
		default:
			t.Slots = slots
		}
		t.Epoch = 1
		if hasPrev {
			t.Epoch = p.Epoch
			if !t.sameContent(&p) {
				t.Epoch++
			}
		}
		out = append(out, t)
	}
	return out, nil
}

func anyPositive(ws []uint32) bool {
	for _, w := range ws {
		if w > 0 {
			return true
		}
	}
	return false
}
