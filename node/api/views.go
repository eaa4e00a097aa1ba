package api

import (
	"net/http"
	"slices"
	"strings"

	"github.com/tandem-lb/tandem/cluster"
)

func (s *server) serviceViews(r *http.Request, c *cluster.Config) ([]ServiceView, error) {
	health, err := s.cfg.Status.Health(r.Context())
	if err != nil {
		return nil, err
	}
	out := make([]ServiceView, 0, len(c.Services))
	for _, sv := range c.Services {
		vs := c.VServersOf(sv.Name)
		if vs == nil {
			vs = []string{}
		}
		out = append(out, ServiceView{Service: sv, Health: healthOf(health, sv.Name), VServers: vs})
	}
	return out, nil
}

func healthOf(m map[string]Health, svc string) Health {
	if h, ok := m[svc]; ok && h != "" {
		return h
	}
	return HealthUnknown
}

func (s *server) listServices(w http.ResponseWriter, r *http.Request) {
	serveViews(s, w, r, "", s.serviceViews, nil, nil, nil)
}

func (s *server) getService(w http.ResponseWriter, r *http.Request) {
	serveViews(s, w, r, r.PathValue("name"), s.serviceViews,
		func(v ServiceView) string { return v.Name },
		func(c *cluster.Config, name string) bool { _, ok := c.Service(name); return ok },
		func(name string) error { return notFound("service", name, "list services with: show service") })
}

// serveViews answers with every view built over the running configuration
// (name ""), or with the one whose nameOf is name. An unknown name is
// refused before the status sources are read.
func serveViews[V any](s *server, w http.ResponseWriter, r *http.Request, name string,
	build func(*http.Request, *cluster.Config) ([]V, error), nameOf func(V) string,
	exists func(*cluster.Config, string) bool, missing func(string) error) {
	c := s.cfg.Store.Config()
	c.Normalize()
	if name != "" && !exists(&c, name) {
		s.fail(w, r, missing(name))
		return
	}
	views, err := build(r, &c)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if name == "" {
		writeJSON(w, http.StatusOK, views)
		return
	}
	for _, v := range views {
		if nameOf(v) == name {
			writeJSON(w, http.StatusOK, v)
			return
		}
	}
	s.fail(w, r, missing(name))
}

func (s *server) vserverViews(r *http.Request, c *cluster.Config) ([]VServerView, error) {
	ctx := r.Context()
	health, err := s.cfg.Status.Health(ctx)
	if err != nil {
		return nil, err
	}
	tables, err := s.cfg.Status.Tables(ctx)
	if err != nil {
		return nil, err
	}
	counters, err := s.cfg.Status.Counters(ctx)
	if err != nil {
		return nil, err
	}
	epochs := make(map[string]uint64, len(tables))
	for _, t := range tables {
		epochs[t.VServer] = t.Epoch
	}
	out := make([]VServerView, 0, len(c.VServers))
	for _, v := range c.VServers {
		view := VServerView{VServer: v, State: HealthDown, Epoch: epochs[v.Name],
			Bindings: []BindingView{}, Counters: counters.VServers[v.Name]}
		for _, b := range c.BindingsOf(v.Name) {
			bv := BindingView{Service: b.Service, Weight: b.Weight, Health: healthOf(health, b.Service),
				Counters: counters.Backends[v.Name][b.Service]}
			if sv, ok := c.Service(b.Service); ok {
				bv.IP, bv.Port = sv.IP, sv.Port
			}
			if bv.Health == HealthUp {
				view.State = HealthUp
			}
			view.Bindings = append(view.Bindings, bv)
		}
		out = append(out, view)
	}
	return out, nil
}

func (s *server) listVServers(w http.ResponseWriter, r *http.Request) {
	serveViews(s, w, r, "", s.vserverViews, nil, nil, nil)
}

func (s *server) getVServer(w http.ResponseWriter, r *http.Request) {
	serveViews(s, w, r, r.PathValue("name"), s.vserverViews,
		func(v VServerView) string { return v.Name },
		func(c *cluster.Config, name string) bool { _, ok := c.VServer(name); return ok },
		func(name string) error { return notFound("lb vserver", name, "list vservers with: show lb vserver") })
}

func (s *server) getCluster(w http.ResponseWriter, r *http.Request) {
	st, err := s.cfg.Status.Cluster(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	view := ClusterView{ClusterStatus: st, Digest: s.cfg.Store.Digest(), DigestAgree: true}
	slices.SortFunc(view.Members, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(view.Pairs, func(a, b Pair) int { return int(int64(a.ID) - int64(b.ID)) })
	for _, m := range view.Members {
		if m.State == MemberAlive && m.Digest != view.Digest {
			view.DigestAgree = false
		}
	}
	if view.Members == nil {
		view.Members = []Member{}
	}
	if view.Pairs == nil {
		view.Pairs = []Pair{}
	}
	writeJSON(w, http.StatusOK, view)
}

func (s *server) getNode(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	n, err := s.cfg.Status.Node(r.Context(), name)
	if err != nil {
		s.fail(w, r, nodeErr(name, err))
		return
	}
	writeJSON(w, http.StatusOK, n)
}

func nodeErr(name string, err error) error {
	if e := toError(err); e.Status == http.StatusNotFound {
		return notFound("node", name, "list nodes with: show cluster")
	}
	return err
}

// DrainResult is the answer to a drain or undrain.
type DrainResult struct {
	Node    string `json:"node"`
	Drained bool   `json:"drained"`
}

func (s *server) drain(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := s.cfg.Drainer.Drain(r.Context(), name); err != nil {
		s.fail(w, r, nodeErr(name, err))
		return
	}
	writeJSON(w, http.StatusOK, DrainResult{Node: name, Drained: true})
}

func (s *server) undrain(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := s.cfg.Drainer.Undrain(r.Context(), name); err != nil {
		s.fail(w, r, nodeErr(name, err))
		return
	}
	writeJSON(w, http.StatusOK, DrainResult{Node: name, Drained: false})
}

func (s *server) listRPCNodes(w http.ResponseWriter, r *http.Request) {
	rows, err := s.cfg.Status.RPCNodes(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	slices.SortFunc(rows, func(a, b RPCNode) int {
		if a.Pair != b.Pair {
			return int(int64(a.Pair) - int64(b.Pair))
		}
		return strings.Compare(a.Node, b.Node)
	})
	if rows == nil {
		rows = []RPCNode{}
	}
	writeJSON(w, http.StatusOK, rows)
}

func (s *server) listConnections(w http.ResponseWriter, r *http.Request) {
	f := ConnFilter{VServer: r.URL.Query().Get("vserver"), Node: r.URL.Query().Get("node")}
	if f.VServer != "" {
		c := s.cfg.Store.Config()
		if _, ok := c.VServer(f.VServer); !ok {
			s.fail(w, r, notFound("lb vserver", f.VServer, "list vservers with: show lb vserver"))
			return
		}
	}
	if f.Node != "" {
		if _, err := s.cfg.Status.Node(r.Context(), f.Node); err != nil {
			s.fail(w, r, nodeErr(f.Node, err))
			return
		}
	}
	conns, err := s.cfg.Status.Connections(r.Context(), f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	slices.SortFunc(conns, func(a, b Conn) int {
		if n := strings.Compare(a.Node, b.Node); n != 0 {
			return n
		}
		if n := strings.Compare(a.VServer, b.VServer); n != 0 {
			return n
		}
		return a.Client.Compare(b.Client)
	})
	if conns == nil {
		conns = []Conn{}
	}
	writeJSON(w, http.StatusOK, conns)
}

func (s *server) explain(w http.ResponseWriter, r *http.Request) {
	var req ExplainRequest
	if !s.decode(w, r, &req) {
		return
	}
	ctx := r.Context()
	tables, err := s.cfg.Status.Tables(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	st, err := s.cfg.Status.Cluster(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	c := s.cfg.Store.Config()
	c.Normalize()
	ex, err := Explain(&c, tables, st, req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ex)
}
