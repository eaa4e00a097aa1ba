package flow

import "fmt"

// Reason is why the data plane gave a packet its verdict. Every packet is
// counted under one reason, globally (Datapath.Reasons) and, when it belongs
// to a vserver, in that vserver's Counters.
type Reason uint32

// Reasons, mirrored from enum reason in flow/bpf/lb.h.
const (
	ReasonFwdHit           = Reason(lbReasonREASON_FWD_HIT)
	ReasonFwdNew           = Reason(lbReasonREASON_FWD_NEW)
	ReasonFwdFragment      = Reason(lbReasonREASON_FWD_FRAGMENT)
	ReasonFwdReverse       = Reason(lbReasonREASON_FWD_REVERSE)
	ReasonFwdICMPClient    = Reason(lbReasonREASON_FWD_ICMP_CLIENT)
	ReasonFwdICMPBackend   = Reason(lbReasonREASON_FWD_ICMP_BACKEND)
	ReasonPassNotIP        = Reason(lbReasonREASON_PASS_NOT_IP)
	ReasonPassNotOurs      = Reason(lbReasonREASON_PASS_NOT_OURS)
	ReasonPassBadL2        = Reason(lbReasonREASON_PASS_BAD_L2)
	ReasonPassBadL3        = Reason(lbReasonREASON_PASS_BAD_L3)
	ReasonPassBadL4        = Reason(lbReasonREASON_PASS_BAD_L4)
	ReasonPassVIPNoVServer = Reason(lbReasonREASON_PASS_VIP_NO_VSERVER)
	ReasonPassFragment     = Reason(lbReasonREASON_PASS_FRAGMENT)
	ReasonPassNotStateless = Reason(lbReasonREASON_PASS_NOT_STATELESS)
	ReasonPassNoNeigh      = Reason(lbReasonREASON_PASS_NO_NEIGH)
	ReasonPassICMPUnknown  = Reason(lbReasonREASON_PASS_ICMP_UNKNOWN)
	ReasonPassLocal        = Reason(lbReasonREASON_PASS_LOCAL)
	ReasonDropBadL3        = Reason(lbReasonREASON_DROP_BAD_L3)
	ReasonDropBadL4        = Reason(lbReasonREASON_DROP_BAD_L4)
	ReasonDropBadICMP      = Reason(lbReasonREASON_DROP_BAD_ICMP)
	ReasonDropNoBackend    = Reason(lbReasonREASON_DROP_NO_BACKEND)
	ReasonDropFIB          = Reason(lbReasonREASON_DROP_FIB)
	ReasonDropFragNeeded   = Reason(lbReasonREASON_DROP_FRAG_NEEDED)
	ReasonDropUnsupported  = Reason(lbReasonREASON_DROP_UNSUPPORTED)
	// ReasonFwdSteer: a packet of an owned flow whose owner is another
	// node, encapsulated to it over the backplane.
	ReasonFwdSteer = Reason(lbReasonREASON_FWD_STEER)
	// ReasonPassNoFlow: at the owner, a TCP packet other than a SYN of an
	// unknown flow, or a reply of an owned vserver without entry.
	ReasonPassNoFlow = Reason(lbReasonREASON_PASS_NO_FLOW)
	// ReasonDropSteerPeer: a steered packet from an address that is not a
	// cluster member's backplane address.
	ReasonDropSteerPeer = Reason(lbReasonREASON_DROP_STEER_PEER)
	// ReasonDropSteerBad: a steered packet with a bad Tandem header or
	// inner packet.
	ReasonDropSteerBad = Reason(lbReasonREASON_DROP_STEER_BAD)
	// ReasonDropSteerFail: steering impossible (no backplane address, other
	// family, no neighbour entry for the owner).
	ReasonDropSteerFail = Reason(lbReasonREASON_DROP_STEER_FAIL)
	// ReasonDropNoSNAT: USIP OFF and no SNIP, or no free SNAT port.
	ReasonDropNoSNAT = Reason(lbReasonREASON_DROP_NO_SNAT)
	// ReasonDropNotOwner: a steered packet without a flow entry at a node
	// whose pairs map names another owner (a takeover in progress, views
	// not yet agreed): a TCP SYN is still taken, but a UDP datagram is not
	// given a fresh backend (its flow may live at the old owner or in this
	// node's standby store) and a reply is not forwarded un-rewritten.
	ReasonDropNotOwner = Reason(lbReasonREASON_DROP_NOT_OWNER)
	// ReasonSteerLoop is a note, not a verdict: a steered packet whose
	// owner, in this node's view, is another node; it is handled here, never
	// steered twice.
	ReasonSteerLoop = Reason(lbReasonREASON_STEER_LOOP)
	// ReasonEventLost is a note, not a verdict: the events ring was full;
	// the periodic refresh carries the flow to the partner.
	ReasonEventLost = Reason(lbReasonREASON_EVENT_LOST)

	numReasons = int(lbReasonREASON_MAX)
)

// String is the reason's metric label, e.g. "drop_no_backend".
func (r Reason) String() string {
	names := [...]string{
		"none",
		"fwd_hit", "fwd_new", "fwd_fragment", "fwd_reverse", "fwd_icmp_client", "fwd_icmp_backend",
		"pass_not_ip", "pass_not_ours", "pass_bad_l2", "pass_bad_l3", "pass_bad_l4",
		"pass_vip_no_vserver", "pass_fragment", "pass_not_stateless", "pass_no_neigh",
		"pass_icmp_unknown", "pass_local",
		"drop_bad_l3", "drop_bad_l4", "drop_bad_icmp", "drop_no_backend", "drop_fib",
		"drop_frag_needed", "drop_unsupported",
		"fwd_steer", "pass_no_flow", "drop_steer_peer", "drop_steer_bad", "drop_steer_fail",
		"drop_no_snat", "drop_not_owner", "note_steer_loop", "note_event_lost",
	}
	// The names follow enum reason of flow/bpf/lb.h; TestReasonNames checks
	// that every reason has one.
	var _ = [1]struct{}{}[numReasons-len(names)]
	if int(r) < len(names) {
		return names[r]
	}
	return fmt.Sprintf("reason(%d)", uint32(r))
}

// Reasons lists every reason, for metrics.
func Reasons() []Reason {
	rs := make([]Reason, 0, numReasons-1)
	for r := 1; r < numReasons; r++ {
		rs = append(rs, Reason(r))
	}
	return rs
}
