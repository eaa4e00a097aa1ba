package flow

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
)

// Protocol is an L4 protocol as the data plane matches it.
type Protocol uint8

const (
	// ProtoAny is a vserver or service of type ANY: the data plane holds one
	// entry per protocol (TCP and UDP), so the BPF lookup stays exact.
	ProtoAny Protocol = 0
	ProtoTCP Protocol = 6
	ProtoUDP Protocol = 17
)

func (p Protocol) String() string {
	switch p {
	case ProtoAny:
		return "ANY"
	case ProtoTCP:
		return "TCP"
	case ProtoUDP:
		return "UDP"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// expand lists the concrete protocols a Protocol stands for.
func (p Protocol) expand() []Protocol {
	if p == ProtoAny {
		return []Protocol{ProtoTCP, ProtoUDP}
	}
	return []Protocol{p}
}

// Method is how a stateless vserver hashes a new flow onto its table.
type Method uint8

const (
	// MethodSourceIP hashes the client address only (SOURCEIPHASH, or any
	// method with SOURCEIP persistence).
	MethodSourceIP = Method(lbMethodMETHOD_SOURCEIP)
	// MethodSourceIPSourcePort hashes address and port (SRCIPSRCPORTHASH).
	MethodSourceIPSourcePort = Method(lbMethodMETHOD_SOURCEIP_SOURCEPORT)
	// MethodRoundRobin (Owned vservers only) takes the vserver's backend
	// list (SetVServerBackends) in turn, one shared position per vserver.
	MethodRoundRobin = Method(lbMethodMETHOD_ROUNDROBIN)
	// MethodLeastConnection (Owned vservers only) takes the backend of the
	// list with the fewest active owned flows on this node; ties go in turn.
	MethodLeastConnection = Method(lbMethodMETHOD_LEASTCONN)
)

// WithPort reports whether the method hashes the source port too, as the
// withPort argument of hashing.PacketHash.
func (m Method) WithPort() bool { return m == MethodSourceIPSourcePort }

// Mode is a vserver's forwarding mode.
type Mode uint8

const (
	// ModeNAT rewrites the destination to the backend and keeps the client
	// source (USIP).
	ModeNAT Mode = 0
	// ModeDSR is reserved: packets of DSR vservers are dropped and counted
	// (ReasonDropUnsupported) until DSR is implemented.
	ModeDSR Mode = 1
)

// Flag values shared with flow/bpf/lb.h.
const (
	familyV4 = 4
	familyV6 = 6

	vsFlagStateless = 1 << 0
	vsFlagOwned     = 1 << 1
	vsFlagMirror    = 1 << 2
	vsFlagSNAT      = 1 << 3
	vsFlagFTP       = 1 << 4
	vsFlagUntracked = 1 << 5
	beFlagValid     = 1 << 0
	revFlagStateful = 1 << 0
	revFlagFTP      = 1 << 1
	addrFlagVIP     = 1 << 0
	addrFlagBackend = 1 << 1
	addrFlagLocal   = 1 << 2
	addrFlagMember  = 1 << 3
	addrFlagSNIP    = 1 << 4
	addrFlagFTP     = 1 << 5
	pairFlagLive    = 1 << 0
	pairFlagLocal   = 1 << 1
	pairFlagSNIP4   = 1 << 2
	pairFlagSNIP6   = 1 << 3

	// FlowFlagStateless marks a flow created from a stateless vserver's table.
	FlowFlagStateless = 1 << 0
	// FlowFlagOwned marks a flow its owner created (an Owned vserver).
	FlowFlagOwned = 1 << 1
	// FlowFlagClosing: a FIN or RST was seen; the flow is counted closed.
	FlowFlagClosing = 1 << 2
	// FlowFlagSNAT: the flow is source-NATed (USIP OFF).
	FlowFlagSNAT = 1 << 3
	// FlowFlagInstalled: installed by a takeover from the partner's mirror.
	FlowFlagInstalled = 1 << 4
	// FlowFlagMirror: the flow's vserver is mirrored (connFailover STATEFUL).
	FlowFlagMirror = 1 << 5
	// FlowFlagFTPData: an FTP data connection, opened by an expectation
	// of the FTP ALG (ftp.go); its backend is a data backend (DataBackendID).
	FlowFlagFTPData = 1 << 6
)

// VServer is a vserver as the data plane sees it.
type VServer struct {
	// ID indexes the vserver's tables and counters: 0 <= ID < MaxVServers.
	// The caller allocates ids; reusing a deleted id starts from empty tables.
	ID uint32
	// VIP, Port (0 = "*") and Protocol (ProtoAny = TCP and UDP) are what
	// clients reach.
	VIP      netip.Addr
	Port     uint16
	Protocol Protocol
	// Method and Seed select a backend for new flows:
	// table[hashing.PacketHash(Seed, client, port, Method.WithPort()) % M].
	Method Method
	Seed   uint32
	Mode   Mode
	// Stateless vservers are forwarded from their table on any node.
	Stateless bool
	// Owned vservers (not Stateless) keep flow state at each flow's owner:
	// the active member of the pair hashing.Owner picks for the client's
	// (address, port); other nodes steer to it (SetPairs). A vserver that
	// is neither passes to the kernel (ReasonPassNotStateless).
	Owned bool
	// Mirror (connFailover STATEFUL, Owned only) reports new and closed
	// flows on the events ring (Events) for the partner's mirror.
	Mirror bool
	// SNAT (USIP OFF, Owned only) rewrites the source to the owner pair's
	// SNIP and a port of its range (Pair.SNIP, Pair.SNATPorts).
	SNAT bool
	// FTP (type FTP, Owned, Protocol TCP) runs the FTP ALG on the control
	// connection and opens data connections from its expectations (ftp.go).
	// Its flows are owned by the client's address alone (hashing.OwnerKey
	// with Port 0), control and data connections alike.
	FTP bool
	// Untracked (Stateless only) records no flow: every packet takes the
	// backend of the active table (on a miss of the hot cache, which then
	// copies it), so a miss costs no flow-table insert. A table change
	// (SetTable) moves the flows whose slot changed, where recorded flows
	// would keep their backend: Maglev moves few slots, but those flows
	// break. Packets not served by the hot cache count as new flows
	// (ReasonFwdNew).
	Untracked bool
}

// Backend is a backend (a service's address and port) packets are sent to.
type Backend struct {
	// ID is what table slots hold: 1 <= ID < MaxBackends (0 is "no backend").
	ID   uint32
	Addr netip.Addr
	// Port 0 keeps the packet's destination port (a service on "*").
	Port uint16
}

// Reverse says that packets from a bound service (Addr, Port, Protocol)
// belong to a vserver: their source is rewritten back to the vserver's
// VIP:port with no flow state. A service is bound to exactly one STATELESS
// vserver, so the entry is unique.
type Reverse struct {
	Addr     netip.Addr
	Port     uint16   // 0: the service listens on any port; the port is kept
	Protocol Protocol // ProtoAny = TCP and UDP
	// VServerID names the vserver (set before); its VIP and port are used.
	// A vserver on port "*" keeps the packet's source port.
	VServerID uint32
	// BackendID is the backend the service is, for counters.
	BackendID uint32
	// Stateful: the service is bound to Owned vservers (possibly several):
	// its replies are rewritten from the owner's flow state, not from this
	// entry's VIP (ReasonPassNoFlow without state).
	Stateful bool
}

// htons converts a port to the network-order value the maps hold (the
// generated structs are host-endian; BPF is little-endian only here).
func htons(p uint16) uint16 { return bits.ReverseBytes16(p) }

func ntohs(p uint16) uint16 { return bits.ReverseBytes16(p) }

// addrWords lays out an address as four words whose memory bytes are the
// address in network order; IPv4 in word 0. It returns the family.
func addrWords(a netip.Addr) ([4]uint32, uint8) {
	var w [4]uint32
	a = a.Unmap()
	if a.Is4() {
		b := a.As4()
		w[0] = binary.LittleEndian.Uint32(b[:])
		return w, familyV4
	}
	b := a.As16()
	for i := range w {
		w[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return w, familyV6
}

func wordsAddr(w [4]uint32, family uint8) netip.Addr {
	var b [16]byte
	for i := range w {
		binary.LittleEndian.PutUint32(b[4*i:], w[i])
	}
	if family == familyV4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(b)
}
