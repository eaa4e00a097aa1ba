package node

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/tandem-lb/tandem/node/config"
)

// TestSNIPsFollowThePair: the active member announces both SNIPs of its
// pair (a /32 and a /128) with the return prefixes, and withdraws both
// when it stops owning the pair's flows; a standby never announces them.
func TestSNIPsFollowThePair(t *testing.T) {
	h := newHarness(t)
	h.cfg.SNIPs = []netip.Addr{netip.MustParseAddr("198.18.80.1"), netip.MustParseAddr("fd00:7a6d:80::1")}
	d := New(h.cfg, h.deps, quietLog())
	st := &Stateful{}
	d.stateful = st
	ctx := context.Background()
	snip4, snip6 := "198.18.80.1/32", "fd00:7a6d:80::1/128"
	has := func(s string) bool { return slices.Contains(h.ev.list(), s) }
	announce := func(p string) string { return fmt.Sprintf("announce %s %s", p, config.PrefixReturn) }

	d.reconcileReturns(ctx, h.sp) // standby
	if has(announce(snip4)) || has(announce(snip6)) {
		t.Fatalf("standby announced a SNIP: %v", h.ev.list())
	}
	st.mu.Lock()
	st.owning = true
	st.mu.Unlock()
	d.reconcileReturns(ctx, h.sp)
	if !has(announce(snip4)) || !has(announce(snip6)) {
		t.Fatalf("active member did not announce both SNIPs: %v", h.ev.list())
	}
	n := len(h.ev.list())
	d.reconcileReturns(ctx, h.sp) // nothing changes: nothing announced again
	if got := h.ev.list(); len(got) != n {
		t.Errorf("second reconcile: %v", got[n:])
	}
	st.mu.Lock()
	st.owning = false
	st.mu.Unlock()
	d.reconcileReturns(ctx, h.sp)
	if !has("withdraw "+snip4) || !has("withdraw "+snip6) {
		t.Fatalf("both SNIPs not withdrawn: %v", h.ev.list())
	}
}

// TestCanOwnPairSNIPs: with SNIPs (one or two), claiming the pair back
// waits for the BGP sessions with the back peers; without, it never waits.
func TestCanOwnPairSNIPs(t *testing.T) {
	h := newHarness(t)
	h.cfg.BGP.Peers = []config.Peer{{Address: netip.MustParseAddr("10.0.0.2"), AS: 65000, Announce: []config.PrefixKind{config.PrefixReturn}}}
	for _, tc := range []struct {
		snips   []string
		speaker bool
		want    bool
	}{
		{nil, false, true},
		{[]string{"fd00:7a6d:80::1"}, false, false},
		{[]string{"198.18.80.1", "fd00:7a6d:80::1"}, false, false},
		{[]string{"198.18.80.1", "fd00:7a6d:80::1"}, true, true},
	} {
		cfg := h.cfg
		for _, s := range tc.snips {
			cfg.SNIPs = append(cfg.SNIPs, netip.MustParseAddr(s))
		}
		d := New(cfg, h.deps, quietLog())
		if tc.speaker {
			d.sp = h.sp
		}
		if got := d.canOwnPair(); got != tc.want {
			t.Errorf("SNIPs %v, speaker %v: canOwnPair %v, want %v", tc.snips, tc.speaker, got, tc.want)
		}
	}
}
