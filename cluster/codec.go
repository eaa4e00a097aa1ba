package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// Wire formats of what nodes gossip.
//
// Every message is: magic byte 'T' (0x54), format version (1), message type,
// then a JSON body. The version lets a later release add a format while
// still reading this one; a message of an unknown version or type, or one
// whose body does not decode or breaks an invariant, is rejected with an
// error matching ErrBadMessage — never a panic, whatever the bytes.
//
// Node metadata (memberlist NodeMeta, at most 512 bytes) uses the same
// header with type metaType.

// ErrBadMessage: a gossiped message or node metadata could not be decoded.
var ErrBadMessage = errors.New("bad cluster message")

const (
	wireMagic   = 'T'
	wireVersion = 1
	// MaxMetaSize is memberlist's limit on node metadata.
	MaxMetaSize = 512
	// maxEntries bounds one message's entries (a full state with a few
	// thousand vservers fits; garbage claiming millions does not).
	maxEntries = 1 << 20
)

// MessageType says what a message carries.
type MessageType uint8

const (
	// MsgDelta carries configuration entries just changed on From.
	MsgDelta MessageType = 1
	// MsgState carries From's whole document and every health report it
	// holds: the push/pull anti-entropy exchange.
	MsgState MessageType = 2
	// MsgHealth carries From's own probe results.
	MsgHealth MessageType = 3
	// MsgDead says From has found node Dead dead (its mirroring connection
	// closed and a direct probe failed), faster than memberlist's suspicion.
	MsgDead MessageType = 4
	// MsgLeave says From leaves the cluster gracefully: forget it rather
	// than keep it as a dead member.
	MsgLeave MessageType = 5
	// MsgDrain asks node Target to drain (Drained true) or undrain itself:
	// an operator may drain any node through any node's API.
	MsgDrain MessageType = 6
	metaType MessageType = 0x4d // 'M'
)

func (t MessageType) String() string {
	switch t {
	case MsgDelta:
		return "delta"
	case MsgState:
		return "state"
	case MsgHealth:
		return "health"
	case MsgDead:
		return "dead"
	case MsgLeave:
		return "leave"
	case MsgDrain:
		return "drain"
	}
	return fmt.Sprintf("type-%d", uint8(t))
}

// ProbeResult is one node's view of one service. Seq increases with every
// change of Up on that node, so a late copy of an older result is ignored.
type ProbeResult struct {
	Service string `json:"service"`
	Up      bool   `json:"up"`
	Seq     uint64 `json:"seq"`
}

// HealthReport is every probe result of one node, sorted by service. Seq
// orders one node's reports (it grows with every change, and a restarted
// node starts above its previous run): a higher one replaces the whole set.
type HealthReport struct {
	Node    string        `json:"node"`
	Seq     uint64        `json:"seq"`
	Results []ProbeResult `json:"results"`
}

func (r *HealthReport) validate() error {
	if !validName(r.Node) {
		return fmt.Errorf("health report: invalid node %q", r.Node)
	}
	for i, p := range r.Results {
		if !validName(p.Service) {
			return fmt.Errorf("health report of %s: invalid service %q", r.Node, p.Service)
		}
		if i > 0 && r.Results[i-1].Service >= p.Service {
			return fmt.Errorf("health report of %s: results not sorted by service", r.Node)
		}
	}
	return nil
}

// Message is one gossiped message.
type Message struct {
	Type    MessageType    `json:"-"`
	From    string         `json:"from"`
	Entries []Entry        `json:"entries,omitempty"` // MsgDelta, MsgState
	Health  []HealthReport `json:"health,omitempty"`  // MsgState (all), MsgHealth (From's)
	Dead    string         `json:"dead,omitempty"`    // MsgDead
	Target  string         `json:"target,omitempty"`  // MsgDrain
	Drained bool           `json:"drained,omitempty"` // MsgDrain
}

func (m *Message) validate() error {
	if !validName(m.From) {
		return fmt.Errorf("invalid sender %q", m.From)
	}
	if len(m.Entries) > maxEntries {
		return fmt.Errorf("%d entries", len(m.Entries))
	}
	switch m.Type {
	case MsgDelta:
		if len(m.Entries) == 0 || len(m.Health) != 0 || m.Dead != "" {
			return errors.New("delta: want entries only")
		}
	case MsgState:
		if m.Dead != "" {
			return errors.New("state: unexpected dead node")
		}
	case MsgHealth:
		if len(m.Health) != 1 || len(m.Entries) != 0 || m.Dead != "" || m.Health[0].Node != m.From {
			return errors.New("health: want the sender's report only")
		}
	case MsgDead:
		if !validName(m.Dead) || len(m.Entries) != 0 || len(m.Health) != 0 {
			return errors.New("dead: want a node id only")
		}
	case MsgLeave:
		if m.Dead != "" || len(m.Entries) != 0 || len(m.Health) != 0 {
			return errors.New("leave: want the sender only")
		}
	case MsgDrain:
		if !validName(m.Target) || m.Dead != "" || len(m.Entries) != 0 || len(m.Health) != 0 {
			return errors.New("drain: want a target node id only")
		}
	default:
		return fmt.Errorf("unknown message type %d", m.Type)
	}
	for i := range m.Entries {
		if err := m.Entries[i].Validate(); err != nil {
			return err
		}
	}
	for i := range m.Health {
		if err := m.Health[i].validate(); err != nil {
			return err
		}
	}
	return nil
}

// Encode returns the wire form of m.
func (m *Message) Encode() ([]byte, error) {
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("encoding %s message: %w", m.Type, err)
	}
	return encodeWire(m.Type, m)
}

func encodeWire(t MessageType, v any) ([]byte, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encoding %s: %w", t, err)
	}
	return append([]byte{wireMagic, wireVersion, byte(t)}, body...), nil
}

func decodeWire(b []byte, v any) (MessageType, error) {
	if len(b) < 3 || b[0] != wireMagic {
		return 0, fmt.Errorf("%w: no Tandem header", ErrBadMessage)
	}
	if b[1] != wireVersion {
		return 0, fmt.Errorf("%w: format version %d, this node reads %d", ErrBadMessage, b[1], wireVersion)
	}
	if err := json.Unmarshal(b[3:], v); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	return MessageType(b[2]), nil
}

// DecodeMessage parses a gossiped message and checks its invariants.
func DecodeMessage(b []byte) (Message, error) {
	var m Message
	t, err := decodeWire(b, &m)
	if err != nil {
		return Message{}, err
	}
	m.Type = t
	if len(m.Entries) == 0 {
		m.Entries = nil
	}
	if len(m.Health) == 0 {
		m.Health = nil
	}
	for i := range m.Health {
		if len(m.Health[i].Results) == 0 {
			m.Health[i].Results = nil
		}
	}
	if err := m.validate(); err != nil {
		return Message{}, fmt.Errorf("%w: %s: %v", ErrBadMessage, t, err)
	}
	return m, nil
}

// MemberMeta is what a node tells the others about itself in memberlist's
// node metadata.
type MemberMeta struct {
	ID string `json:"id"`
	// Pair is the configured pair id; 0 lets pairs form from sorted node ids.
	Pair uint32 `json:"pair,omitempty"`
	// Backplane is the address partners use for mirroring and steering.
	Backplane netip.AddrPort `json:"bp,omitzero"`
	// Proto is the mirroring protocol version; partners must match.
	Proto uint16 `json:"proto"`
	// Digest is the node's configuration digest.
	Digest string `json:"digest"`
	// Drained nodes withdraw their VIPs and take no new flows.
	Drained bool `json:"drained,omitempty"`
	// Leaving is set just before a graceful leave, so that the others tell
	// a leave from a failure (memberlist's leave event does not say which).
	Leaving bool `json:"leaving,omitempty"`
	// BGPUp of BGPPeers sessions are established: gossiped so that any
	// node's `show cluster` shows every node's routing state.
	BGPUp    uint16 `json:"bgpUp,omitempty"`
	BGPPeers uint16 `json:"bgpPeers,omitempty"`
	// PairRole is the node's role in its pair (the numbering of
	// cluster/mirror.Role: 0 joining, 1 active, 2 standby, 3 taken over, 4
	// rejoining) and PairEpoch the epoch of the pair's ownership it last
	// claimed or saw: gossiped so that the partner learns claims and
	// releases, and every node steers the pair's flows to the member that
	// holds them.
	PairRole  uint8  `json:"pairRole,omitempty"`
	PairEpoch uint64 `json:"pairEpoch,omitempty"`
}

// Pair roles that own the pair's flows (mirror.RoleActive and
// mirror.RoleTakenOver).
const (
	PairRoleActive    uint8 = 1
	PairRoleTakenOver uint8 = 3
)

func pairRoleOwns(r uint8) bool { return r == PairRoleActive || r == PairRoleTakenOver }

func (m *MemberMeta) validate() error {
	if !validName(m.ID) {
		return fmt.Errorf("invalid node id %q", m.ID)
	}
	if m.Digest != "" && len(m.Digest) != 64 {
		return fmt.Errorf("invalid digest %q", m.Digest)
	}
	for _, c := range m.Digest {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("invalid digest %q", m.Digest)
		}
	}
	return nil
}

// EncodeMeta returns the wire form of m; it fails when m is invalid or does
// not fit memberlist's 512 bytes.
func EncodeMeta(m MemberMeta) ([]byte, error) {
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("encoding node metadata: %w", err)
	}
	b, err := encodeWire(metaType, m)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxMetaSize {
		return nil, fmt.Errorf("encoding node metadata: %d bytes, memberlist allows %d", len(b), MaxMetaSize)
	}
	return b, nil
}

// DecodeMeta parses node metadata.
func DecodeMeta(b []byte) (MemberMeta, error) {
	var m MemberMeta
	t, err := decodeWire(b, &m)
	if err != nil {
		return MemberMeta{}, err
	}
	if t != metaType {
		return MemberMeta{}, fmt.Errorf("%w: %s is not node metadata", ErrBadMessage, t)
	}
	if err := m.validate(); err != nil {
		return MemberMeta{}, fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	return m, nil
}

// sortResults sorts probe results by service.
func sortResults(rs []ProbeResult) {
	slices.SortFunc(rs, func(a, b ProbeResult) int {
		switch {
		case a.Service < b.Service:
			return -1
		case a.Service > b.Service:
			return 1
		}
		return 0
	})
}
