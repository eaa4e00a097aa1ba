package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/tandem-lb/tandem/cluster"
)

// ConfigStore is the node's replicated configuration (cluster.Store
// implements it). Update runs fn on a copy, normalises and validates the
// result, and commits it only when fn returns nil and the change breaks no
// rule that was not already broken (refusing with *cluster.RuleError
// values), so a refused change leaves nothing behind. Implementations are
// safe for concurrent use and serialise Update calls.
type ConfigStore interface {
	Config() cluster.Config
	Update(fn func(*cluster.Config) error) error
	Digest() string
}

// StatusSource reports the live state the show and explain commands need.
// Methods are called concurrently from request goroutines and must not block
// beyond the request's context.
type StatusSource interface {
	// Cluster returns the members (with their BGP sessions) and pairs as
	// this node sees them.
	Cluster(ctx context.Context) (ClusterStatus, error)
	// Node returns one node in detail; an error matching ErrNotFound when
	// no member has that id.
	Node(ctx context.Context, id string) (NodeStatus, error)
	// RPCNodes returns the mirroring channels of every pair.
	RPCNodes(ctx context.Context) ([]RPCNode, error)
	// Tables returns the Maglev tables the data plane holds, one per
	// vserver that has one.
	Tables(ctx context.Context) ([]Table, error)
	// Counters returns the data-plane counters per vserver and backend.
	Counters(ctx context.Context) (CounterSet, error)
	// Health returns the agreed health per service name; services missing
	// from the map are UNKNOWN.
	Health(ctx context.Context) (map[string]Health, error)
	// Connections returns the flow entries matching the filter.
	Connections(ctx context.Context, f ConnFilter) ([]Conn, error)
}

// Drainer drains and undrains nodes by id, wherever the node is in the
// cluster; errors match ErrNotFound for an unknown node.
type Drainer interface {
	Drain(ctx context.Context, node string) error
	Undrain(ctx context.Context, node string) error
}

// Config configures NewHandler.
type Config struct {
	// Store is the replicated configuration. Required.
	Store ConfigStore
	// Status reports live state. Required.
	Status StatusSource
	// Drainer drains nodes. Required.
	Drainer Drainer
	// Logger logs internal faults (5xx). Default: discard.
	Logger *slog.Logger
	// MaxBodyBytes bounds request bodies. Default 4 MiB.
	MaxBodyBytes int64
}

// DefaultMaxBodyBytes is Config.MaxBodyBytes' default.
const DefaultMaxBodyBytes = 4 << 20

func (c *Config) validate() error {
	var missing []string
	if c.Store == nil {
		missing = append(missing, "Store")
	}
	if c.Status == nil {
		missing = append(missing, "Status")
	}
	if c.Drainer == nil {
		missing = append(missing, "Drainer")
	}
	if len(missing) > 0 {
		return fmt.Errorf("api handler config: %s required: the handler serves configuration, status and drain requests", strings.Join(missing, ", "))
	}
	if c.MaxBodyBytes < 0 {
		return fmt.Errorf("api handler config: MaxBodyBytes %d is negative: use 0 for the default (%d)", c.MaxBodyBytes, DefaultMaxBodyBytes)
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

type server struct {
	cfg Config
}

// NewHandler returns the /v1 API handler. It trusts every request: serve it
// as is on the unix socket, and behind Authenticate on TCP.
func NewHandler(cfg Config) (http.Handler, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &server{cfg: cfg}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/config", s.getConfig)
	mux.HandleFunc("POST /v1/apply", s.apply)

	mux.HandleFunc("GET /v1/services", s.listServices)
	mux.HandleFunc("GET /v1/services/{name}", s.getService)
	mux.HandleFunc("POST /v1/services", s.addService)
	mux.HandleFunc("PATCH /v1/services/{name}", s.setService)
	mux.HandleFunc("DELETE /v1/services/{name}", s.rmService)

	mux.HandleFunc("GET /v1/vservers", s.listVServers)
	mux.HandleFunc("GET /v1/vservers/{name}", s.getVServer)
	mux.HandleFunc("POST /v1/vservers", s.addVServer)
	mux.HandleFunc("PATCH /v1/vservers/{name}", s.setVServer)
	mux.HandleFunc("DELETE /v1/vservers/{name}", s.rmVServer)
	mux.HandleFunc("POST /v1/vservers/{name}/bindings", s.bind)
	mux.HandleFunc("DELETE /v1/vservers/{name}/bindings/{service}", s.unbind)

	mux.HandleFunc("GET /v1/monitors", s.listMonitors)
	mux.HandleFunc("POST /v1/monitors", s.addMonitor)
	mux.HandleFunc("PATCH /v1/monitors/{name}", s.setMonitor)
	mux.HandleFunc("DELETE /v1/monitors/{name}", s.rmMonitor)

	mux.HandleFunc("GET /v1/cluster", s.getCluster)
	mux.HandleFunc("GET /v1/nodes/{name}", s.getNode)
	mux.HandleFunc("POST /v1/nodes/{name}/drain", s.drain)
	mux.HandleFunc("POST /v1/nodes/{name}/undrain", s.undrain)
	mux.HandleFunc("GET /v1/rpcnodes", s.listRPCNodes)
	mux.HandleFunc("GET /v1/connections", s.listConnections)
	mux.HandleFunc("POST /v1/explain", s.explain)

	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, &Error{Status: http.StatusNotFound,
			Message: fmt.Sprintf("no API endpoint %s %s", r.Method, r.URL.Path),
			Fix:     "use clusterctl of the same release as the node"})
	})
	return mux, nil
}

// NewProblems returns the rules next breaks that cur does not (joined
// *cluster.RuleError values), as the store refuses them.
func NewProblems(cur, next *cluster.Config) error {
	had := map[string]bool{}
	for _, p := range cur.Problems() {
		had[p.Object+"\x00"+p.Error()] = true
	}
	var errs []error
	for _, p := range next.Problems() {
		if !had[p.Object+"\x00"+p.Error()] {
			errs = append(errs, p)
		}
	}
	return errors.Join(errs...)
}

// errNoChange and errDryRun abort a store update on purpose.
var (
	errNoChange = errors.New("no change")
	errDryRun   = errors.New("dry run")
)

// change runs fn inside one store update, normalises and validates the
// result, and reports what changed. A refused, empty or dry-run change
// commits nothing.
func (s *server) change(dryRun bool, fn func(*cluster.Config) error) (Result, error) {
	var res Result
	err := s.cfg.Store.Update(func(c *cluster.Config) error {
		before := c.Clone()
		before.Normalize()
		if err := fn(c); err != nil {
			return err
		}
		c.Normalize()
		res.Changes = Diff(before, *c)
		if len(res.Changes) == 0 {
			return errNoChange
		}
		if dryRun {
			// The store validates only what it commits; a dry run must
			// refuse exactly what the real change would.
			if err := NewProblems(&before, c); err != nil {
				return err
			}
			return errDryRun
		}
		return nil
	})
	switch {
	case errors.Is(err, errNoChange):
	case errors.Is(err, errDryRun):
		res.DryRun = true
	case err != nil:
		return Result{}, err
	}
	if res.Changes == nil {
		res.Changes = []Change{}
	}
	res.Digest = s.cfg.Store.Digest()
	return res, nil
}

func (s *server) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	body := http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		s.fail(w, r, &Error{Status: http.StatusBadRequest, Message: fmt.Sprintf("decoding request body: %v", err)})
		return false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		s.fail(w, r, &Error{Status: http.StatusBadRequest, Message: "decoding request body: trailing data after the JSON value"})
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away; nothing to do
}

// fail writes err as an Error body with the status its condition maps to.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	e := toError(err)
	if e.Status >= 500 {
		s.cfg.Logger.Error("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeJSON(w, e.Status, e)
}

// toError maps an error onto the wire Error: rule violations to 422 with
// the rule and its fix, not-found to 404, exists to 409, malformed to 400,
// misdirected to 421, not ready to 503, anything else to 500 (a fault).
func toError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		if e.Status == 0 {
			e.Status = http.StatusInternalServerError
		}
		return e
	}
	if rules := cluster.RuleErrors(err); len(rules) > 0 {
		out := ruleToError(rules[0])
		for _, r := range rules[1:] {
			out.More = append(out.More, *ruleToError(r))
		}
		return out
	}
	switch {
	case errors.Is(err, cluster.ErrNotFound), errors.Is(err, ErrNotFound):
		return &Error{Status: http.StatusNotFound, Message: err.Error()}
	case errors.Is(err, cluster.ErrExists), errors.Is(err, ErrExists):
		return &Error{Status: http.StatusConflict, Message: err.Error(),
			Fix: "choose another name, or change the existing object with set"}
	case errors.Is(err, ErrBadRequest):
		return &Error{Status: http.StatusBadRequest, Message: err.Error()}
	case errors.Is(err, ErrMisdirected):
		return &Error{Status: http.StatusMisdirectedRequest, Message: err.Error()}
	case errors.Is(err, ErrUnavailable):
		return &Error{Status: http.StatusServiceUnavailable, Message: err.Error(), Fix: "retry when the node has joined the cluster"}
	case errors.Is(err, cluster.ErrInvalid):
		return &Error{Status: http.StatusUnprocessableEntity, Message: err.Error()}
	}
	return &Error{Status: http.StatusInternalServerError, Message: "internal error: " + err.Error()}
}

func ruleToError(r *cluster.RuleError) *Error {
	return &Error{Status: http.StatusUnprocessableEntity, Message: r.Message, Rule: r.Rule, Object: r.Object, Fix: r.Fix}
}

func notFound(kind, name, fix string) *Error {
	return &Error{Status: http.StatusNotFound, Message: fmt.Sprintf("%s %s not found", kind, name), Fix: fix}
}

func (s *server) respond(w http.ResponseWriter, r *http.Request, res Result, err error) {
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *server) getConfig(w http.ResponseWriter, r *http.Request) {
	c := s.cfg.Store.Config()
	c.Normalize()
	writeJSON(w, http.StatusOK, ConfigDoc{Digest: s.cfg.Store.Digest(), Config: c})
}

func (s *server) apply(w http.ResponseWriter, r *http.Request) {
	var req ApplyRequest
	if !s.decode(w, r, &req) {
		return
	}
	res, err := s.change(req.DryRun, func(c *cluster.Config) error {
		return ApplyConfig(c, req.Config, req.Prune)
	})
	s.respond(w, r, res, err)
}

// ApplyConfig makes c hold every object of want (added or replaced) and,
// with prune, only those. Objects are matched by name (bindings by vserver
// and service). want is normalised first, so omitted settings take their
// defaults exactly as when the object is added by a command. A document
// that declares one object twice is refused (rule duplicate): which of the
// two was meant cannot be guessed.
func ApplyConfig(c *cluster.Config, want cluster.Config, prune bool) error {
	want = want.Clone()
	want.Normalize()
	if err := duplicates(&want); err != nil {
		return err
	}
	for _, m := range want.Monitors {
		c.PutMonitor(m)
	}
	for _, sv := range want.Services {
		c.PutService(sv)
	}
	for _, v := range want.VServers {
		c.PutVServer(v)
	}
	for _, b := range want.Bindings {
		c.PutBinding(b)
	}
	if !prune {
		return nil
	}
	c.Bindings = slices.DeleteFunc(c.Bindings, func(b cluster.Binding) bool {
		_, ok := want.Binding(b.VServer, b.Service)
		return !ok
	})
	c.VServers = slices.DeleteFunc(c.VServers, func(v cluster.VServer) bool {
		_, ok := want.VServer(v.Name)
		return !ok
	})
	c.Services = slices.DeleteFunc(c.Services, func(sv cluster.Service) bool {
		_, ok := want.Service(sv.Name)
		return !ok
	})
	c.Monitors = slices.DeleteFunc(c.Monitors, func(m cluster.Monitor) bool {
		_, ok := want.Monitor(m.Name)
		return !ok
	})
	return nil
}

// duplicates refuses a declared document that names an object twice.
func duplicates(c *cluster.Config) error {
	var errs []error
	check := func(kind, name string, seen map[string]bool) {
		if seen[name] {
			errs = append(errs, &cluster.RuleError{Rule: cluster.RuleDuplicate, Object: kind + " " + name,
				Message: fmt.Sprintf("the document declares %s %s more than once", kind, name),
				Fix:     "keep one declaration of it in the file"})
		}
		seen[name] = true
	}
	seen := map[string]bool{}
	for _, m := range c.Monitors {
		check("monitor", m.Name, seen)
	}
	seen = map[string]bool{}
	for _, sv := range c.Services {
		check("service", sv.Name, seen)
	}
	seen = map[string]bool{}
	for _, v := range c.VServers {
		check("lb vserver", v.Name, seen)
	}
	seen = map[string]bool{}
	for _, b := range c.Bindings {
		check("binding", b.VServer+" "+b.Service, seen)
	}
	return errors.Join(errs...)
}

func (s *server) addService(w http.ResponseWriter, r *http.Request) {
	var sv cluster.Service
	if !s.decode(w, r, &sv) {
		return
	}
	res, err := s.change(false, func(c *cluster.Config) error { return c.AddService(sv) })
	s.respond(w, r, res, err)
}

func (s *server) setService(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var p ServicePatch
	if !s.decode(w, r, &p) {
		return
	}
	res, err := s.change(false, func(c *cluster.Config) error {
		sv, ok := c.Service(name)
		if !ok {
			return notFound("service", name, "add it first: add service "+name+" IP TYPE PORT")
		}
		if p.USIP != nil {
			sv.USIP = *p.USIP
		}
		if p.Monitor != nil {
			sv.Monitor = *p.Monitor
		}
		return nil
	})
	s.respond(w, r, res, err)
}

func (s *server) rmService(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	res, err := s.change(false, func(c *cluster.Config) error { return c.RemoveService(name) })
	s.respond(w, r, res, err)
}

func (s *server) addVServer(w http.ResponseWriter, r *http.Request) {
	var v cluster.VServer
	if !s.decode(w, r, &v) {
		return
	}
	res, err := s.change(false, func(c *cluster.Config) error { return c.AddVServer(v) })
	s.respond(w, r, res, err)
}

func (s *server) setVServer(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var p VServerPatch
	if !s.decode(w, r, &p) {
		return
	}
	res, err := s.change(false, func(c *cluster.Config) error {
		v, ok := c.VServer(name)
		if !ok {
			return notFound("lb vserver", name, "add it first: add lb vserver "+name+" TYPE VIP PORT")
		}
		if p.LBMethod != nil {
			v.LBMethod = *p.LBMethod
		}
		if p.Persistence != nil {
			v.Persistence = *p.Persistence
		}
		if p.ConnFailover != nil {
			v.ConnFailover = *p.ConnFailover
		}
		if p.FwdMode != nil {
			v.FwdMode = *p.FwdMode
		}
		return nil
	})
	s.respond(w, r, res, err)
}

func (s *server) rmVServer(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	res, err := s.change(false, func(c *cluster.Config) error { return c.RemoveVServer(name) })
	s.respond(w, r, res, err)
}

// BindRequest is the body of POST /v1/vservers/{name}/bindings.
type BindRequest struct {
	Service string `json:"service"`
	// Weight 0 means the default (1).
	Weight uint32 `json:"weight"`
}

func (s *server) bind(w http.ResponseWriter, r *http.Request) {
	vs := r.PathValue("name")
	var req BindRequest
	if !s.decode(w, r, &req) {
		return
	}
	res, err := s.change(false, func(c *cluster.Config) error {
		if _, ok := c.VServer(vs); !ok {
			return notFound("lb vserver", vs, "add it first: add lb vserver "+vs+" TYPE VIP PORT")
		}
		if _, ok := c.Service(req.Service); !ok {
			return notFound("service", req.Service, "add it first: add service "+req.Service+" IP TYPE PORT")
		}
		return c.AddBinding(cluster.Binding{VServer: vs, Service: req.Service, Weight: req.Weight})
	})
	s.respond(w, r, res, err)
}

func (s *server) unbind(w http.ResponseWriter, r *http.Request) {
	vs, svc := r.PathValue("name"), r.PathValue("service")
	res, err := s.change(false, func(c *cluster.Config) error { return c.RemoveBinding(vs, svc) })
	s.respond(w, r, res, err)
}

func (s *server) addMonitor(w http.ResponseWriter, r *http.Request) {
	var m cluster.Monitor
	if !s.decode(w, r, &m) {
		return
	}
	res, err := s.change(false, func(c *cluster.Config) error { return c.AddMonitor(m) })
	s.respond(w, r, res, err)
}

func (s *server) setMonitor(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var p MonitorPatch
	if !s.decode(w, r, &p) {
		return
	}
	res, err := s.change(false, func(c *cluster.Config) error {
		m, ok := c.Monitor(name)
		if !ok {
			return notFound("lb monitor", name, "add it first: add lb monitor "+name+" TCP")
		}
		if p.Interval != nil {
			m.Interval = *p.Interval
		}
		if p.Timeout != nil {
			m.Timeout = *p.Timeout
		}
		if p.Rise != nil {
			m.Rise = *p.Rise
		}
		if p.Fall != nil {
			m.Fall = *p.Fall
		}
		return nil
	})
	s.respond(w, r, res, err)
}

func (s *server) rmMonitor(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	res, err := s.change(false, func(c *cluster.Config) error { return c.RemoveMonitor(name) })
	s.respond(w, r, res, err)
}

func (s *server) listMonitors(w http.ResponseWriter, r *http.Request) {
	c := s.cfg.Store.Config()
	c.Normalize()
	ms := c.Monitors
	if ms == nil {
		ms = []cluster.Monitor{}
	}
	writeJSON(w, http.StatusOK, ms)
}
