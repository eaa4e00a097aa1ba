// Package api is the HTTP/JSON API of a Tandem node: the wire types, the
// handler the daemon serves on its unix socket (and optionally on TCP behind
// Authenticate), and the Go Client that clusterctl uses.
//
// Paths are versioned (/v1/...). Configuration changes are accepted on any
// node: the handler applies them to the node's replicated store, which
// spreads them to the cluster. Every refusal is a JSON Error naming the rule
// that was broken and how to fix it; 4xx codes are refusals (422 a rule
// violation, 404 not found, 409 already exists, 400 a malformed request),
// 5xx only internal faults.
//
// Endpoints (bodies and answers are this package's types):
//
//	GET    /v1/config                          ConfigDoc
//	POST   /v1/apply                           ApplyRequest -> Result
//	GET    /v1/services[/{name}]               []ServiceView | ServiceView
//	POST   /v1/services                        cluster.Service -> Result
//	PATCH  /v1/services/{name}                 ServicePatch -> Result
//	DELETE /v1/services/{name}                 Result
//	GET    /v1/vservers[/{name}]               []VServerView | VServerView
//	POST   /v1/vservers                        cluster.VServer -> Result
//	PATCH  /v1/vservers/{name}                 VServerPatch -> Result
//	DELETE /v1/vservers/{name}                 Result (bindings go too)
//	POST   /v1/vservers/{name}/bindings        BindRequest -> Result
//	DELETE /v1/vservers/{name}/bindings/{svc}  Result
//	GET    /v1/monitors                        []cluster.Monitor
//	POST   /v1/monitors                        cluster.Monitor -> Result
//	PATCH  /v1/monitors/{name}                 MonitorPatch -> Result
//	DELETE /v1/monitors/{name}                 Result
//	GET    /v1/cluster                         ClusterView
//	GET    /v1/nodes/{name}                    NodeStatus
//	POST   /v1/nodes/{name}/drain|undrain      DrainResult
//	GET    /v1/rpcnodes                        []RPCNode
//	GET    /v1/connections?vserver=&node=      []Conn
//	POST   /v1/explain                         ExplainRequest -> Explanation
//
// The wire types are this package's own, not the cluster package's internal
// snapshots, so that the API stays stable while the daemon's internals move;
// the configuration objects themselves (cluster.Service, cluster.VServer, ...)
// are plain data and travel as they are.
package api

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"time"

	"github.com/tandem-lb/tandem/cluster"
)

// Sentinel conditions. A client-side *Error matches them with errors.Is
// according to its HTTP status, so callers test conditions the same way on
// both sides of the wire.
var (
	// ErrNotFound: the named object or node does not exist (404).
	ErrNotFound = errors.New("not found")
	// ErrExists: an object with that name already exists (409).
	ErrExists = errors.New("already exists")
	// ErrRule: the change breaks a configuration rule (422).
	ErrRule = errors.New("rule violation")
	// ErrBadRequest: the request is malformed (400).
	ErrBadRequest = errors.New("bad request")
	// ErrUnauthorized: a TCP request without a valid token or client
	// certificate (401).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrMisdirected: this node cannot do it; another node must be asked,
	// e.g. a drain that only the drained node performs (421). Wrap it with
	// a message that names the node to ask.
	ErrMisdirected = errors.New("ask another node")
	// ErrUnavailable: the node cannot answer yet, e.g. while it starts
	// (503).
	ErrUnavailable = errors.New("node not ready")
)

// Error is the body of every non-2xx response.
type Error struct {
	// Status is the HTTP status; not part of the body.
	Status int `json:"-"`
	// Message says what is wrong.
	Message string `json:"error"`
	// Rule is the id of the configuration rule that was broken, if any.
	Rule string `json:"rule,omitempty"`
	// Object names the object the refusal is about, e.g. "vserver vs1".
	Object string `json:"object,omitempty"`
	// Fix says what to do about it.
	Fix string `json:"fix,omitempty"`
	// More holds further broken rules when a change breaks several.
	More []Error `json:"more,omitempty"`
}

func (e *Error) Error() string {
	if e.Rule != "" {
		return fmt.Sprintf("%s (rule %s)", e.Message, e.Rule)
	}
	return e.Message
}

// Is maps the HTTP status onto the package's sentinels.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrExists:
		return e.Status == http.StatusConflict
	case ErrRule:
		return e.Status == http.StatusUnprocessableEntity
	case ErrBadRequest:
		return e.Status == http.StatusBadRequest
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case ErrMisdirected:
		return e.Status == http.StatusMisdirectedRequest
	case ErrUnavailable:
		return e.Status == http.StatusServiceUnavailable
	}
	return false
}

// Health is the agreed health of a backend (service).
type Health string

const (
	HealthUp      Health = "UP"
	HealthDown    Health = "DOWN"
	HealthUnknown Health = "UNKNOWN"
)

// MemberState is a cluster member's membership state.
type MemberState string

const (
	MemberAlive   MemberState = "alive"
	MemberSuspect MemberState = "suspect"
	MemberDead    MemberState = "dead"
	MemberLeft    MemberState = "left"
)

// Counters are data-plane counters summed over CPUs and, for cluster-wide
// views, over the nodes that answered.
type Counters struct {
	Packets  uint64 `json:"packets"`
	Bytes    uint64 `json:"bytes"`
	NewFlows uint64 `json:"newFlows"`
	Drops    uint64 `json:"drops"`
}

// Add returns the sum of two counter sets.
func (c Counters) Add(o Counters) Counters {
	return Counters{c.Packets + o.Packets, c.Bytes + o.Bytes, c.NewFlows + o.NewFlows, c.Drops + o.Drops}
}

// CounterSet is what the status source reports: counters per vserver and
// per (vserver, service).
type CounterSet struct {
	VServers map[string]Counters            `json:"vservers"`
	Backends map[string]map[string]Counters `json:"backends"` // vserver -> service -> counters
}

// Table is a vserver's Maglev table as the data plane holds it.
type Table struct {
	VServer  string   `json:"vserver"`
	Epoch    uint64   `json:"epoch"`
	Seed     uint32   `json:"seed"`
	WithPort bool     `json:"withPort"`
	Backends []string `json:"backends"` // service names; Slots index into it
	Slots    []uint32 `json:"slots"`
}

// ServiceView is a service with its agreed health and where it is bound.
type ServiceView struct {
	cluster.Service
	Health   Health   `json:"health"`
	VServers []string `json:"vservers"`
}

// BindingView is one service bound to a vserver, as show lb vserver lists it.
type BindingView struct {
	Service  string     `json:"service"`
	IP       netip.Addr `json:"ip"`
	Port     uint16     `json:"port"`
	Weight   uint32     `json:"weight"`
	Health   Health     `json:"health"`
	Counters Counters   `json:"counters"`
}

// VServerView is a vserver with its state, table epoch, bindings and
// counters.
type VServerView struct {
	cluster.VServer
	// State is UP when at least one bound service is UP, DOWN otherwise.
	State    Health        `json:"state"`
	Epoch    uint64        `json:"epoch"`
	Bindings []BindingView `json:"bindings"`
	Counters Counters      `json:"counters"`
}

// BGPSession is one of a node's BGP sessions towards a router.
type BGPSession struct {
	Peer     string `json:"peer"`
	PeerAS   uint32 `json:"peerAS"`
	State    string `json:"state"` // e.g. ESTABLISHED, ACTIVE, IDLE
	Prefixes int    `json:"prefixes"`
	// Graceful is set while the node announces with GRACEFUL_SHUTDOWN.
	Graceful bool `json:"graceful,omitempty"`
}

// Member is one cluster member as the answering node sees it.
type Member struct {
	ID           string      `json:"id"`
	Addr         string      `json:"addr"`
	Pair         uint32      `json:"pair"`
	State        MemberState `json:"state"`
	Digest       string      `json:"digest"` // the member's configuration digest
	ProtoVersion int         `json:"protoVersion"`
	Drained      bool        `json:"drained"`
	// BGP lists the sessions of the answering node only; BGPUp of BGPPeers
	// established is what every member gossips about itself.
	BGP      []BGPSession `json:"bgp"`
	BGPUp    int          `json:"bgpUp"`
	BGPPeers int          `json:"bgpPeers"`
}

// Pair is a pair of partners that mirror each other's stateful flows.
type Pair struct {
	ID      uint32   `json:"id"`
	Members []string `json:"members"`
	// Active is the member currently holding the pair's flows and SNIP.
	Active string `json:"active"`
	// Protected is false when the pair has no live partner.
	Protected bool `json:"protected"`
}

// ClusterStatus is what the status source reports about the cluster.
type ClusterStatus struct {
	Self    string   `json:"self"` // the answering node's id
	Members []Member `json:"members"`
	Pairs   []Pair   `json:"pairs"`
}

// ClusterView is the answer to GET /v1/cluster: the status plus the
// configuration digest of the answering node and whether every live member
// agrees with it.
type ClusterView struct {
	ClusterStatus
	Digest      string `json:"digest"`
	DigestAgree bool   `json:"digestAgree"`
}

// NodeStatus is one node in detail.
type NodeStatus struct {
	Member
	Partner string `json:"partner"`
	// VIPs this node announces by BGP.
	VIPs []netip.Addr `json:"vips"`
	// Flows is the number of entries in its flow table.
	Flows    int      `json:"flows"`
	Counters Counters `json:"counters"`
}

// RPCNode is one row of show rpcnode: a node's mirroring channel to its
// partner.
type RPCNode struct {
	Pair uint32 `json:"pair"`
	Node string `json:"node"`
	Peer string `json:"peer"`
	// Role is "sender" (Node owns the pair's flows and mirrors them to
	// Peer) or "receiver" (Node keeps Peer's); empty while there is no
	// link.
	Role             string `json:"role,omitempty"`
	State            string `json:"state"` // e.g. streaming, syncing, down, refused
	Authenticated    bool   `json:"authenticated"`
	ProtoVersion     int    `json:"protoVersion"`
	PeerProtoVersion int    `json:"peerProtoVersion"`
	// Mirrored counts entries sent (sender) or applied (receiver); Bytes
	// the link's bytes read and written.
	Mirrored uint64 `json:"mirrored"`
	Bytes    uint64 `json:"bytes"`
	// Lag is the sender's last enqueue-to-applied time.
	Lag time.Duration `json:"lag"`
	// LastBulkSync is when the last bulk sync completed (zero: never).
	LastBulkSync time.Time `json:"lastBulkSync,omitzero"`
	// Reason says why the link is refused or down (another protocol
	// version, a wrong key), or its last error.
	Reason string `json:"reason,omitempty"`
}

// ConnFilter selects connections; empty fields match everything.
type ConnFilter struct {
	VServer string `json:"vserver,omitempty"`
	Node    string `json:"node,omitempty"`
}

// Conn is one flow-table entry.
type Conn struct {
	Node     string         `json:"node"`
	VServer  string         `json:"vserver"`
	Proto    string         `json:"proto"`
	Client   netip.AddrPort `json:"client"`
	VIP      netip.AddrPort `json:"vip"`
	Service  string         `json:"service"`
	Backend  netip.AddrPort `json:"backend"`
	Owner    uint32         `json:"owner,omitempty"` // owning pair, stateful only
	Mirrored bool           `json:"mirrored"`
	Age      time.Duration  `json:"age"`
	// Idle is the time since the data plane last saw a packet of the flow
	// (refreshed at most once a second): among several nodes holding an
	// entry for one flow, the least idle one carries it now.
	Idle time.Duration `json:"idle"`
}

// ExplainRequest asks which vserver, backend and owner a flow gets.
type ExplainRequest struct {
	Src   netip.AddrPort `json:"src"`
	Dst   netip.AddrPort `json:"dst"`
	Proto string         `json:"proto"` // TCP or UDP
}

// Explanation is the answer to an ExplainRequest, computed from the
// configuration, the tables and the hashing package exactly as the data
// plane computes it.
type Explanation struct {
	Src          netip.AddrPort       `json:"src"`
	Dst          netip.AddrPort       `json:"dst"`
	Proto        string               `json:"proto"`
	VServer      string               `json:"vserver"`
	LBMethod     cluster.LBMethod     `json:"lbMethod"`
	Persistence  cluster.Persistence  `json:"persistenceType"`
	ConnFailover cluster.ConnFailover `json:"connFailover"`
	// Mode is "table" when the backend is a pure function of the packet
	// (Maglev table), "owner" when the owner pair chooses it on the first
	// packet.
	Mode     string `json:"mode"`
	Epoch    uint64 `json:"epoch"`
	Seed     uint32 `json:"seed"`
	WithPort bool   `json:"withPort"`
	Hash     uint32 `json:"hash"`
	Slot     uint32 `json:"slot"`
	TableLen int    `json:"tableLen"`
	// Service and Backend are empty in owner mode, or when the table is empty.
	Service string         `json:"service,omitempty"`
	Backend netip.AddrPort `json:"backend"`
	// OwnerPair and OwnerNode are set for STATEFUL vservers and owner mode.
	OwnerPair uint32   `json:"ownerPair,omitempty"`
	OwnerNode string   `json:"ownerNode,omitempty"`
	Mirrored  bool     `json:"mirrored"`
	Notes     []string `json:"notes,omitempty"`
}

// ConfigDoc is the answer to GET /v1/config.
type ConfigDoc struct {
	Digest string         `json:"digest"`
	Config cluster.Config `json:"config"`
}

// ApplyRequest replaces the declared objects of the configuration in one
// update. Objects absent from Config are kept unless Prune is set.
type ApplyRequest struct {
	Config cluster.Config `json:"config"`
	Prune  bool           `json:"prune"`
	DryRun bool           `json:"dryRun"`
}

// ServicePatch is the body of PATCH /v1/services/{name}; nil fields keep
// their value.
type ServicePatch struct {
	USIP    *bool   `json:"usip,omitempty"`
	Monitor *string `json:"monitor,omitempty"`
}

// VServerPatch is the body of PATCH /v1/vservers/{name}; nil fields keep
// their value.
type VServerPatch struct {
	LBMethod     *cluster.LBMethod     `json:"lbMethod,omitempty"`
	Persistence  *cluster.Persistence  `json:"persistenceType,omitempty"`
	ConnFailover *cluster.ConnFailover `json:"connFailover,omitempty"`
	FwdMode      *cluster.FwdMode      `json:"fwdMode,omitempty"`
}

// MonitorPatch is the body of PATCH /v1/monitors/{name}; nil fields keep
// their value.
type MonitorPatch struct {
	Interval *time.Duration `json:"interval,omitempty"`
	Timeout  *time.Duration `json:"timeout,omitempty"`
	Rise     *int           `json:"rise,omitempty"`
	Fall     *int           `json:"fall,omitempty"`
}

// Action is what a change did to an object.
type Action string

const (
	Added   Action = "added"
	Changed Action = "changed"
	Removed Action = "removed"
)

// Kind names the kind of configuration object.
type Kind string

const (
	KindService Kind = "service"
	KindVServer Kind = "vserver"
	KindBinding Kind = "binding"
	KindMonitor Kind = "monitor"
)

// Change is one object a verb added, changed or removed.
type Change struct {
	Action Action `json:"action"`
	Kind   Kind   `json:"kind"`
	Name   string `json:"name"` // bindings: "vserver/service"
	// Fields lists changed fields as "name: old -> new".
	Fields []string `json:"fields,omitempty"`
}

func (c Change) String() string {
	s := fmt.Sprintf("%s %s %s", c.Action, c.Kind, c.Name)
	for i, f := range c.Fields {
		if i == 0 {
			s += ": "
		} else {
			s += ", "
		}
		s += f
	}
	return s
}

// Result is the answer of every verb: what changed (empty: nothing) and
// the configuration digest afterwards.
type Result struct {
	Changes []Change `json:"changes"`
	Digest  string   `json:"digest"`
	DryRun  bool     `json:"dryRun,omitempty"`
}
