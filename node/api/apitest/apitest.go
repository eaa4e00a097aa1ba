// Package apitest holds in-memory implementations of the API's consumer
// interfaces (StatusSource, Drainer) and a helper that serves a handler on
// a real unix socket, so the API and clusterctl are tested end to end
// without a daemon, BPF or network.
package apitest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tandem-lb/tandem/cluster"
	"github.com/tandem-lb/tandem/hashing"
	"github.com/tandem-lb/tandem/node/api"
)

// TableSize is the Maglev table size Status builds (a small prime keeps
// tests fast; the data plane uses hashing.DefaultTableSize).
const TableSize = 251

// Status is an in-memory api.StatusSource and api.Drainer. Tables are
// built from Store's current configuration with hashing.BuildMaglev, as a
// node builds them: one per vserver whose method is a function of the
// packet, over its bound services that are UP (weight 0 for the others),
// and the epoch grows whenever a vserver's table changes. It is safe for
// concurrent use; Set* methods replace parts of the state.
type Status struct {
	// Store is the configuration tables are built from; nil means none.
	Store api.ConfigStore

	mu       sync.Mutex
	cluster  api.ClusterStatus
	nodes    map[string]api.NodeStatus
	rpc      []api.RPCNode
	counters api.CounterSet
	health   map[string]api.Health
	conns    []api.Conn
	tables   map[string]api.Table // last built, for epochs
}

// NewStatus returns an empty status over store.
func NewStatus(store api.ConfigStore) *Status {
	return &Status{Store: store, nodes: map[string]api.NodeStatus{}, health: map[string]api.Health{},
		tables: map[string]api.Table{}}
}

// SetCluster sets the members and pairs; node details are derived from
// the members unless set with SetNode.
func (s *Status) SetCluster(c api.ClusterStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cluster = c
}

// SetNode sets one node's detail.
func (s *Status) SetNode(n api.NodeStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nodes[n.ID] = n
}

// SetRPCNodes sets the mirroring channel rows.
func (s *Status) SetRPCNodes(rows []api.RPCNode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rpc = slices.Clone(rows)
}

// SetCounters sets the counters.
func (s *Status) SetCounters(c api.CounterSet) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counters = c
}

// SetHealth sets one service's agreed health.
func (s *Status) SetHealth(service string, h api.Health) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.health[service] = h
}

// SetConnections sets the flow entries.
func (s *Status) SetConnections(c []api.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns = slices.Clone(c)
}

// Cluster implements api.StatusSource.
func (s *Status) Cluster(context.Context) (api.ClusterStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.cluster
	c.Members = slices.Clone(c.Members)
	c.Pairs = slices.Clone(c.Pairs)
	return c, nil
}

// Node implements api.StatusSource.
func (s *Status) Node(_ context.Context, id string) (api.NodeStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.cluster.Members {
		if m.ID != id {
			continue
		}
		n, ok := s.nodes[id]
		if !ok {
			n = api.NodeStatus{}
		}
		n.Member = m
		return n, nil
	}
	return api.NodeStatus{}, fmt.Errorf("node %s: %w", id, api.ErrNotFound)
}

// RPCNodes implements api.StatusSource.
func (s *Status) RPCNodes(context.Context) ([]api.RPCNode, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.rpc), nil
}

// Counters implements api.StatusSource.
func (s *Status) Counters(context.Context) (api.CounterSet, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counters, nil
}

// Health implements api.StatusSource.
func (s *Status) Health(context.Context) (map[string]api.Health, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]api.Health, len(s.health))
	for k, v := range s.health {
		out[k] = v
	}
	return out, nil
}

// Connections implements api.StatusSource.
func (s *Status) Connections(_ context.Context, f api.ConnFilter) ([]api.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []api.Conn
	for _, c := range s.conns {
		if (f.VServer == "" || c.VServer == f.VServer) && (f.Node == "" || c.Node == f.Node) {
			out = append(out, c)
		}
	}
	return out, nil
}

// Tables implements api.StatusSource.
func (s *Status) Tables(context.Context) ([]api.Table, error) {
	if s.Store == nil {
		return nil, nil
	}
	cfg := s.Store.Config()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []api.Table
	for i := range cfg.VServers {
		v := &cfg.VServers[i]
		if !api.PureMethod(v) {
			continue
		}
		var bs []hashing.Backend
		for _, b := range cfg.BindingsOf(v.Name) {
			w := b.Weight
			if s.health[b.Service] != api.HealthUp {
				w = 0
			}
			bs = append(bs, hashing.Backend{Key: b.Service, Weight: w})
		}
		t := api.Table{VServer: v.Name, Seed: hashing.VServerSeed(v.Name),
			WithPort: v.LBMethod == cluster.MethodSrcIPSrcPortHash && v.Persistence != cluster.PersistSourceIP}
		sorted := hashing.SortBackends(bs)
		for _, b := range sorted {
			t.Backends = append(t.Backends, b.Key)
		}
		slots, err := hashing.BuildMaglev(bs, TableSize)
		switch {
		case errors.Is(err, hashing.ErrNoBackends):
			slots = nil
		case err != nil:
			return nil, fmt.Errorf("building table of lb vserver %s: %w", v.Name, err)
		}
		t.Slots = slots
		prev, ok := s.tables[v.Name]
		t.Epoch = prev.Epoch
		if !ok || !slices.Equal(prev.Slots, t.Slots) || !slices.Equal(prev.Backends, t.Backends) || prev.WithPort != t.WithPort {
			t.Epoch++
		}
		s.tables[v.Name] = t
		out = append(out, t)
	}
	return out, nil
}

// Drain implements api.Drainer: it marks the member drained.
func (s *Status) Drain(_ context.Context, node string) error { return s.setDrained(node, true) }

// Undrain implements api.Drainer.
func (s *Status) Undrain(_ context.Context, node string) error { return s.setDrained(node, false) }

func (s *Status) setDrained(node string, drained bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.cluster.Members {
		if s.cluster.Members[i].ID == node {
			s.cluster.Members[i].Drained = drained
			return nil
		}
	}
	return fmt.Errorf("node %s: %w", node, api.ErrNotFound)
}

// NewStore returns an in-memory cluster.Store for node id "n1".
func NewStore(tb testing.TB) *cluster.Store {
	tb.Helper()
	st, err := cluster.NewStore(cluster.StoreConfig{Node: "n1"})
	if err != nil {
		tb.Fatalf("new store: %v", err)
	}
	return st
}

// Serve serves h on a unix socket in a fresh temporary directory until the
// test ends, and returns the socket's path.
func Serve(tb testing.TB, h http.Handler) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "tdm-api")
	if err != nil {
		tb.Fatalf("temp dir: %v", err)
	}
	path := filepath.Join(dir, "api.sock") // short: sun_path holds 108 bytes
	ln, err := api.ListenUnix(path)
	if err != nil {
		os.RemoveAll(dir)
		tb.Fatalf("listen: %v", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln) // returns http.ErrServerClosed on Close
	}()
	tb.Cleanup(func() {
		srv.Close()
		<-done
		os.RemoveAll(dir)
	})
	return path
}

// NewHandler builds the API handler over store and status (also the
// drainer), failing the test on error.
func NewHandler(tb testing.TB, store api.ConfigStore, status *Status) http.Handler {
	tb.Helper()
	h, err := api.NewHandler(api.Config{Store: store, Status: status, Drainer: status})
	if err != nil {
		tb.Fatalf("new handler: %v", err)
	}
	return h
}
