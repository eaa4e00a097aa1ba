// Package bgp is tandemd's embedded BGP speaker: GoBGP as a library, dialing
// out to the rack's routers and announcing the node's VIPs (to the front
// routers) and return prefixes (to the back routers).
//
// Which peers receive which prefixes is done with one GoBGP export policy:
// every path carries an internal marker community naming its kind; per peer,
// a statement accepts the kinds that peer wants and strips the markers, and
// the default export action rejects everything else. Markers never leave the
// node.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/tandem-lb/tandem/node/config"
)

var (
	// ErrClosed is returned by a Speaker after Close.
	ErrClosed = errors.New("bgp speaker closed")
	// ErrUnknownKind is returned when a prefix kind no peer knows is used.
	ErrUnknownKind = errors.New("unknown prefix kind")
)

// Well-known communities.
const (
	// CommunityGracefulShutdown is GRACEFUL_SHUTDOWN (RFC 8326), 65535:0:
	// routers lower the preference of such routes so traffic moves away
	// before they are withdrawn.
	CommunityGracefulShutdown uint32 = 0xFFFF0000
)

// Internal marker communities naming a path's kind; stripped on export.
// 65535:65001 and 65535:65002 are in the reserved well-known range and
// unassigned, so they never collide with an operator's communities.
var kindMarkers = map[config.PrefixKind]string{
	config.PrefixVIPs:   "65535:65001",
	config.PrefixReturn: "65535:65002",
}

// Config configures a Speaker.
type Config struct {
	// LocalAS is this node's AS. Required.
	LocalAS uint32
	// RouterID is the BGP identifier. Required, IPv4.
	RouterID netip.Addr
	// ListenPort is the port to listen on; -1 only dials out. Default -1
	// (the zero value is taken as -1: tandemd never needs to listen unless
	// told).
	ListenPort int32
	// Communities are added to every prefix.
	Communities []uint32
	// Peers are the routers to announce to.
	Peers []Peer
	// Logger receives GoBGP's and the speaker's logs. Default slog.Default().
	Logger *slog.Logger
}

// Peer is one neighbour.
type Peer struct {
	// Address of the router. Required.
	Address netip.Addr
	// AS of the router. Required.
	AS uint32
	// HoldTime proposed. Default 9s.
	HoldTime time.Duration
	// Keepalive interval. Default HoldTime/3.
	Keepalive time.Duration
	// ConnectRetry is the wait between connection attempts. Default 1s (a
	// node coming up, or a router restarting, should not wait GoBGP's 120s).
	ConnectRetry time.Duration
	// Kinds of prefixes this peer receives. Default [vips].
	Kinds []config.PrefixKind
	// Communities added for this peer only.
	Communities []uint32
}

func (c *Config) setDefaults() {
	if c.ListenPort == 0 {
		c.ListenPort = -1
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	for i := range c.Peers {
		p := &c.Peers[i]
		if p.HoldTime == 0 {
			p.HoldTime = 9 * time.Second
		}
		if p.Keepalive == 0 {
			p.Keepalive = p.HoldTime / 3
		}
		if p.ConnectRetry == 0 {
			p.ConnectRetry = time.Second
		}
		if len(p.Kinds) == 0 {
			p.Kinds = []config.PrefixKind{config.PrefixVIPs}
		}
	}
}

func (c *Config) validate() error {
	if c.LocalAS == 0 {
		return errors.New("bgp: local AS is required")
	}
	if !c.RouterID.Is4() {
		return fmt.Errorf("bgp: router id %v must be an IPv4 address", c.RouterID)
	}
	seen := map[netip.Addr]bool{}
	for _, p := range c.Peers {
		if !p.Address.IsValid() || p.AS == 0 {
			return fmt.Errorf("bgp: peer %v needs an address and an AS", p.Address)
		}
		if seen[p.Address] {
			return fmt.Errorf("bgp: peer %v listed twice", p.Address)
		}
		seen[p.Address] = true
		if p.Keepalive >= p.HoldTime || p.HoldTime < 3*time.Second {
			return fmt.Errorf("bgp: peer %v: hold time %v must be at least 3s and above keepalive %v", p.Address, p.HoldTime, p.Keepalive)
		}
		for _, k := range p.Kinds {
			if _, ok := kindMarkers[k]; !ok {
				return fmt.Errorf("bgp: peer %v: %w %q", p.Address, ErrUnknownKind, k)
			}
		}
	}
	return nil
}

// FromNodeConfig converts node.yaml's BGP section.
func FromNodeConfig(b config.BGP, logger *slog.Logger) (Config, error) {
	c := Config{LocalAS: b.LocalAS, RouterID: b.RouterID, ListenPort: b.ListenPort, Logger: logger}
	for _, s := range b.Communities {
		v, err := config.ParseCommunity(s)
		if err != nil {
			return Config{}, err
		}
		c.Communities = append(c.Communities, v)
	}
	for _, p := range b.Peers {
		peer := Peer{Address: p.Address, AS: p.AS, HoldTime: p.HoldTime, Keepalive: p.Keepalive, Kinds: p.Announce}
		for _, s := range p.Communities {
			v, err := config.ParseCommunity(s)
			if err != nil {
				return Config{}, err
			}
			peer.Communities = append(peer.Communities, v)
		}
		c.Peers = append(c.Peers, peer)
	}
	return c, nil
}

// route is one announced prefix.
type route struct {
	kind        config.PrefixKind
	communities []uint32
}

// Speaker announces prefixes to the configured peers. It is safe for
// concurrent use.
type Speaker struct {
	cfg    Config
	srv    *server.BgpServer
	log    *slog.Logger
	cancel context.CancelFunc

	mu       sync.Mutex
	routes   map[netip.Prefix]route
	draining bool
	closed   bool
}

// New starts GoBGP, installs the export policy and adds the peers.
func New(ctx context.Context, cfg Config) (*Speaker, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	srv := server.NewBgpServer(server.LoggerOption(newSlogAdapter(cfg.Logger)))
	go srv.Serve()
	s := &Speaker{cfg: cfg, srv: srv, log: cfg.Logger.With("component", "bgp"), routes: map[netip.Prefix]route{}}
	closeOnError := func(err error) (*Speaker, error) {
		_ = srv.StopBgp(context.Background(), &api.StopBgpRequest{})
		return nil, err
	}
	err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:        cfg.LocalAS,
		RouterId:   cfg.RouterID.String(),
		ListenPort: cfg.ListenPort,
	}})
	if err != nil {
		return closeOnError(fmt.Errorf("starting bgp: %w", err))
	}
	if err := s.installPolicy(ctx); err != nil {
		return closeOnError(fmt.Errorf("installing export policy: %w", err))
	}
	wctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	err = srv.WatchEvent(wctx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, func(r *api.WatchEventResponse) {
		if pe := r.GetPeer(); pe != nil && pe.GetType() == api.WatchEventResponse_PeerEvent_STATE && pe.GetPeer().GetState() != nil {
			st := pe.GetPeer().GetState()
			s.log.Info("bgp peer state", "peer", st.GetNeighborAddress(), "as", st.GetPeerAsn(), "state", sessionState(st.GetSessionState()))
		}
	})
	if err != nil {
		cancel()
		return closeOnError(fmt.Errorf("watching peers: %w", err))
	}
	for _, p := range cfg.Peers {
		if err := srv.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(p)}); err != nil {
			cancel()
			return closeOnError(fmt.Errorf("adding peer %v: %w", p.Address, err))
		}
	}
	return s, nil
}

func family(a netip.Addr) *api.Family {
	if a.Is4() {
		return &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	}
	return &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
}

func apiPeer(p Peer) *api.Peer {
	return &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: p.Address.String(), PeerAsn: p.AS},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime:          uint64(p.HoldTime / time.Second),
			KeepaliveInterval: uint64(p.Keepalive / time.Second),
			ConnectRetry:      uint64(max(p.ConnectRetry/time.Second, 1)),
		}},
		AfiSafis: []*api.AfiSafi{
			{Config: &api.AfiSafiConfig{Family: family(netip.IPv4Unspecified()), Enabled: true}},
			{Config: &api.AfiSafiConfig{Family: family(netip.IPv6Unspecified()), Enabled: true}},
		},
	}
}

func communityString(c uint32) string { return fmt.Sprintf("%d:%d", c>>16, c&0xffff) }

// installPolicy builds the global export policy: per peer, add its
// communities; per (peer, kind it receives), strip the markers and accept;
// reject the rest.
func (s *Speaker) installPolicy(ctx context.Context) error {
	markers := make([]string, 0, len(kindMarkers))
	for kind, m := range kindMarkers {
		markers = append(markers, m)
		err := s.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{
			DefinedType: api.DefinedType_COMMUNITY, Name: "tandem-kind-" + string(kind), List: []string{"^" + m + "$"},
		}})
		if err != nil {
			return err
		}
	}
	sort.Strings(markers)
	var stmts []*api.Statement
	for i, p := range s.cfg.Peers {
		nset := fmt.Sprintf("tandem-peer-%d", i)
		err := s.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{
			DefinedType: api.DefinedType_NEIGHBOR, Name: nset, List: []string{netip.PrefixFrom(p.Address, p.Address.BitLen()).String()},
		}})
		if err != nil {
			return err
		}
		if len(p.Communities) > 0 {
			cs := make([]string, len(p.Communities))
			for j, c := range p.Communities {
				cs[j] = communityString(c)
			}
			stmts = append(stmts, &api.Statement{
				Name:       fmt.Sprintf("tandem-peer-%d-communities", i),
				Conditions: &api.Conditions{NeighborSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: nset}},
				Actions:    &api.Actions{Community: &api.CommunityAction{Type: api.CommunityAction_ADD, Communities: cs}},
			})
		}
		for _, k := range p.Kinds {
			stmts = append(stmts, &api.Statement{
				Name: fmt.Sprintf("tandem-peer-%d-%s", i, k),
				Conditions: &api.Conditions{
					NeighborSet:  &api.MatchSet{Type: api.MatchSet_ANY, Name: nset},
					CommunitySet: &api.MatchSet{Type: api.MatchSet_ANY, Name: "tandem-kind-" + string(k)},
				},
				Actions: &api.Actions{
					RouteAction: api.RouteAction_ACCEPT,
					Community:   &api.CommunityAction{Type: api.CommunityAction_REMOVE, Communities: markers},
				},
			})
		}
	}
	assignment := &api.PolicyAssignment{Name: "global", Direction: api.PolicyDirection_EXPORT, DefaultAction: api.RouteAction_REJECT}
	if len(stmts) > 0 {
		pol := &api.Policy{Name: "tandem-export", Statements: stmts}
		if err := s.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: pol}); err != nil {
			return err
		}
		assignment.Policies = []*api.Policy{{Name: pol.Name}}
	}
	return s.srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: assignment})
}

// path builds the GoBGP path for prefix p. The next hop is left unspecified:
// GoBGP puts the session's local address there for each eBGP peer.
func (s *Speaker) path(p netip.Prefix, r route, draining bool) (*api.Path, error) {
	nlri, err := anypb.New(&api.IPAddressPrefix{Prefix: p.Addr().String(), PrefixLen: uint32(p.Bits())})
	if err != nil {
		return nil, err
	}
	origin, err := anypb.New(&api.OriginAttribute{Origin: 0}) // IGP
	if err != nil {
		return nil, err
	}
	comms := slices.Clone(s.cfg.Communities)
	comms = append(comms, r.communities...)
	if draining {
		comms = append(comms, CommunityGracefulShutdown)
	}
	marker, _ := config.ParseCommunity(kindMarkers[r.kind])
	comms = append(comms, marker)
	slices.Sort(comms)
	comms = slices.Compact(comms)
	communities, err := anypb.New(&api.CommunitiesAttribute{Communities: comms})
	if err != nil {
		return nil, err
	}
	var nh *anypb.Any
	if p.Addr().Is4() {
		nh, err = anypb.New(&api.NextHopAttribute{NextHop: "0.0.0.0"})
	} else {
		nh, err = anypb.New(&api.MpReachNLRIAttribute{Family: family(p.Addr()), NextHops: []string{"::"}, Nlris: []*anypb.Any{nlri}})
	}
	if err != nil {
		return nil, err
	}
	return &api.Path{Family: family(p.Addr()), Nlri: nlri, Pattrs: []*anypb.Any{origin, nh, communities}}, nil
}

// Announce announces prefix p of the given kind (with extra communities) to
// the peers that receive that kind. Announcing an announced prefix again
// replaces its attributes. While draining, the prefix carries
// GRACEFUL_SHUTDOWN.
func (s *Speaker) Announce(ctx context.Context, p netip.Prefix, kind config.PrefixKind, communities ...uint32) error {
	if _, ok := kindMarkers[kind]; !ok {
		return fmt.Errorf("announcing %v: %w %q", p, ErrUnknownKind, kind)
	}
	p = p.Masked()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	r := route{kind: kind, communities: slices.Clone(communities)}
	path, err := s.path(p, r, s.draining)
	if err != nil {
		return fmt.Errorf("building path for %v: %w", p, err)
	}
	if _, err := s.srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path}); err != nil {
		return fmt.Errorf("announcing %v: %w", p, err)
	}
	s.routes[p] = r
	return nil
}

// Withdraw withdraws prefix p. Withdrawing a prefix not announced is a no-op.
func (s *Speaker) Withdraw(ctx context.Context, p netip.Prefix) error {
	p = p.Masked()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	return s.withdrawLocked(ctx, p)
}

func (s *Speaker) withdrawLocked(ctx context.Context, p netip.Prefix) error {
	r, ok := s.routes[p]
	if !ok {
		return nil
	}
	path, err := s.path(p, r, s.draining)
	if err != nil {
		return fmt.Errorf("building path for %v: %w", p, err)
	}
	if err := s.srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Family: path.Family, Path: path}); err != nil {
		return fmt.Errorf("withdrawing %v: %w", p, err)
	}
	delete(s.routes, p)
	return nil
}

// Drain re-announces every prefix with GRACEFUL_SHUTDOWN (65535:0), and
// every later announcement carries it too, until Undrain.
func (s *Speaker) Drain(ctx context.Context) error { return s.setDraining(ctx, true) }

// Undrain re-announces every prefix without GRACEFUL_SHUTDOWN.
func (s *Speaker) Undrain(ctx context.Context) error { return s.setDraining(ctx, false) }

func (s *Speaker) setDraining(ctx context.Context, on bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.draining = on
	for p, r := range s.routes {
		path, err := s.path(p, r, on)
		if err != nil {
			return fmt.Errorf("building path for %v: %w", p, err)
		}
		if _, err := s.srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path}); err != nil {
			return fmt.Errorf("re-announcing %v: %w", p, err)
		}
	}
	return nil
}

// Draining reports whether the speaker is draining.
func (s *Speaker) Draining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

// Announced returns the announced prefixes, sorted.
func (s *Speaker) Announced() []netip.Prefix {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]netip.Prefix, 0, len(s.routes))
	for p := range s.routes {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return out
}

// PeerState is a neighbour's session, for metrics and `show cluster`.
type PeerState struct {
	Address     netip.Addr
	AS          uint32
	State       string // idle, connect, active, opensent, openconfirm, established
	Established bool
	// Since is when the session last changed state (zero if never up).
	Since time.Time
}

func sessionState(s api.PeerState_SessionState) string {
	switch s {
	case api.PeerState_IDLE:
		return "idle"
	case api.PeerState_CONNECT:
		return "connect"
	case api.PeerState_ACTIVE:
		return "active"
	case api.PeerState_OPENSENT:
		return "opensent"
	case api.PeerState_OPENCONFIRM:
		return "openconfirm"
	case api.PeerState_ESTABLISHED:
		return "established"
	}
	return "unknown"
}

// Peers returns the neighbours' session states, sorted by address.
func (s *Speaker) Peers(ctx context.Context) ([]PeerState, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	var out []PeerState
	err := s.srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		st := p.GetState()
		addr, _ := netip.ParseAddr(p.GetConf().GetNeighborAddress())
		ps := PeerState{
			Address:     addr,
			AS:          p.GetConf().GetPeerAsn(),
			State:       sessionState(st.GetSessionState()),
			Established: st.GetSessionState() == api.PeerState_ESTABLISHED,
		}
		if t := p.GetTimers().GetState(); t != nil {
			if ts := t.GetUptime(); ts != nil && ps.Established {
				ps.Since = ts.AsTime()
			} else if ts := t.GetDowntime(); ts != nil {
				ps.Since = ts.AsTime()
			}
		}
		out = append(out, ps)
	})
	if err != nil {
		return nil, fmt.Errorf("listing peers: %w", err)
	}
	slices.SortFunc(out, func(a, b PeerState) int { return a.Address.Compare(b.Address) })
	return out, nil
}

// Close withdraws every prefix, then closes the sessions (a CEASE
// notification to each peer) and stops the speaker. Routers drop the routes
// on the withdrawal or, at the latest, when the session closes.
func (s *Speaker) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var errs []error
	for p := range s.routes {
		if err := s.withdrawLocked(ctx, p); err != nil {
			errs = append(errs, err)
		}
	}
	s.closed = true
	s.mu.Unlock()
	if s.cancel != nil {
		s.cancel()
	}
	if err := s.srv.StopBgp(ctx, &api.StopBgpRequest{}); err != nil {
		errs = append(errs, fmt.Errorf("stopping bgp: %w", err))
	}
	return errors.Join(errs...)
}
