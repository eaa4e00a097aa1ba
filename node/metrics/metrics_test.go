package metrics

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

type fakeSource struct {
	snap Snapshot
	err  error
}

func (f *fakeSource) Snapshot(ctx context.Context) (Snapshot, error) { return f.snap, f.err }

func fixture() *fakeSource {
	return &fakeSource{snap: Snapshot{
		VServers: []Traffic{{Name: "vs1", Packets: 10, Bytes: 1500, NewFlows: 2, ReplyPackets: 8, ReplyBytes: 900,
			Reasons: map[string]uint64{"fwd_new": 2, "fwd_hit": 8, "drop_no_backend": 3}}},
		Backends:       []Traffic{{Name: "web1", Packets: 7, Bytes: 1000, NewFlows: 1}},
		Peers:          []Peer{{Address: "10.0.0.2", AS: 65000, State: "established", Established: true}, {Address: "10.0.1.2", AS: 65002, State: "active"}},
		Members:        map[string]int{"alive": 3, "suspect": 1},
		ConfigDigest:   "abc123",
		TableEpochs:    map[string]uint64{"vs1": 4},
		BackendUp:      map[string]bool{"web1": true, "web2": false},
		Announced:      2,
		DataPlaneLag:   true,
		ConfigProblems: 1,
	}}
}

func TestCollect(t *testing.T) {
	reg := New(Config{Source: fixture()})
	want := `
# HELP tandem_vserver_packets_total Packets client to backend, per vserver.
# TYPE tandem_vserver_packets_total counter
tandem_vserver_packets_total{vserver="vs1"} 10
# HELP tandem_vserver_drops_total Packets dropped, per vserver and reason.
# TYPE tandem_vserver_drops_total counter
tandem_vserver_drops_total{reason="no_backend",vserver="vs1"} 3
# HELP tandem_vserver_new_flows_total New flows, per vserver.
# TYPE tandem_vserver_new_flows_total counter
tandem_vserver_new_flows_total{vserver="vs1"} 2
# HELP tandem_backend_bytes_total Bytes client to backend, per backend.
# TYPE tandem_backend_bytes_total counter
tandem_backend_bytes_total{backend="web1"} 1000
# HELP tandem_backend_up Agreed health of a backend service (1 UP, 0 DOWN).
# TYPE tandem_backend_up gauge
tandem_backend_up{service="web1"} 1
tandem_backend_up{service="web2"} 0
# HELP tandem_bgp_session_up 1 when the BGP session is established.
# TYPE tandem_bgp_session_up gauge
tandem_bgp_session_up{peer="10.0.0.2",peer_as="65000"} 1
tandem_bgp_session_up{peer="10.0.1.2",peer_as="65002"} 0
# HELP tandem_cluster_members Cluster members by state.
# TYPE tandem_cluster_members gauge
tandem_cluster_members{state="alive"} 3
tandem_cluster_members{state="dead"} 0
tandem_cluster_members{state="left"} 0
tandem_cluster_members{state="suspect"} 1
# HELP tandem_config_info The replicated configuration's digest (value 1).
# TYPE tandem_config_info gauge
tandem_config_info{digest="abc123"} 1
# HELP tandem_table_epoch Data-plane table epoch, per vserver.
# TYPE tandem_table_epoch gauge
tandem_table_epoch{vserver="vs1"} 4
# HELP tandem_scrape_error 1 when reading the node's state failed during this scrape.
# TYPE tandem_scrape_error gauge
tandem_scrape_error 0
`
	names := []string{"tandem_vserver_packets_total", "tandem_vserver_drops_total", "tandem_vserver_new_flows_total", "tandem_backend_bytes_total",
		"tandem_backend_up", "tandem_bgp_session_up", "tandem_cluster_members", "tandem_config_info", "tandem_table_epoch", "tandem_scrape_error"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(reg, "tandem_vserver_verdicts_total"); err != nil || n != 3 {
		t.Errorf("verdict series = %d, %v; want 3", n, err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP tandem_bgp_session_state BGP session state (1 for the current state).
# TYPE tandem_bgp_session_state gauge
tandem_bgp_session_state{peer="10.0.0.2",state="established"} 1
tandem_bgp_session_state{peer="10.0.1.2",state="active"} 1
`), "tandem_bgp_session_state"); err != nil {
		t.Error(err)
	}
	if probs, err := testutil.GatherAndLint(reg); err != nil || len(probs) > 0 {
		t.Errorf("lint: %v %v", probs, err)
	}
}

func TestScrapeErrorStillExportsWhatItHas(t *testing.T) {
	src := fixture()
	src.err = errors.New("bgp query timed out")
	reg := New(Config{Source: src})
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP tandem_scrape_error 1 when reading the node's state failed during this scrape.
# TYPE tandem_scrape_error gauge
tandem_scrape_error 1
`), "tandem_scrape_error"); err != nil {
		t.Error(err)
	}
	if n, _ := testutil.GatherAndCount(reg, "tandem_vserver_packets_total"); n != 1 {
		t.Errorf("vserver packets series = %d after a partial snapshot", n)
	}
}

func TestHandlerServesText(t *testing.T) {
	srv := httptest.NewServer(Handler(New(Config{Source: fixture(), Runtime: true})))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, want := range []string{`tandem_vserver_bytes_total{vserver="vs1"} 1500`, "go_goroutines", `tandem_draining 0`, `tandem_dataplane_lagging 1`, `tandem_config_problems 1`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestFailoverAndALG: the mirroring link, the standby store, takeovers and
// the FTP ALG's counters; none of their series when a node has neither.
func TestFailoverAndALG(t *testing.T) {
	src := fixture()
	src.snap.Failover = &Failover{
		Links: []MirrorLink{{Peer: "n2", Role: "sender", Up: true, Entries: 1234, Bytes: 113528, Lag: 1500 * time.Microsecond,
			LastBulkSync: time.Unix(1796600000, 0)}},
		StandbyEntries: 10, StandbyDropped: 1, StandbyEvicted: 2,
		Takeovers: 1, TakeoverFlows: 987, LastTakeover: 250 * time.Millisecond,
	}
	src.snap.ALG = &ALG{
		Lines:  []ALGLine{{Kind: "PASV", Reason: "ok", N: 5}, {Kind: "PORT", Reason: "bounce", N: 1}},
		Events: map[string]uint64{"data_opened": 5, "expired": 0},
	}
	reg := New(Config{Source: src})
	want := `
# HELP tandem_mirror_link_up 1 while the mirroring link streams (authenticated, bulk sync done).
# TYPE tandem_mirror_link_up gauge
tandem_mirror_link_up{peer="n2",role="sender"} 1
# HELP tandem_mirror_entries_total Flow records sent (sender) or applied (receiver) on the mirroring link.
# TYPE tandem_mirror_entries_total counter
tandem_mirror_entries_total{peer="n2",role="sender"} 1234
# HELP tandem_mirror_lag_seconds Time from a change's enqueue to the partner's having applied it, last acknowledged frame.
# TYPE tandem_mirror_lag_seconds gauge
tandem_mirror_lag_seconds{peer="n2",role="sender"} 0.0015
# HELP tandem_mirror_last_bulk_sync_timestamp_seconds When the last bulk sync completed, Unix time.
# TYPE tandem_mirror_last_bulk_sync_timestamp_seconds gauge
tandem_mirror_last_bulk_sync_timestamp_seconds{peer="n2",role="sender"} 1.7966e+09
# HELP tandem_standby_entries The partner's flows held in the standby store.
# TYPE tandem_standby_entries gauge
tandem_standby_entries 10
# HELP tandem_takeover_flows_total Flows installed by takeovers.
# TYPE tandem_takeover_flows_total counter
tandem_takeover_flows_total 987
# HELP tandem_takeover_last_duration_seconds How long the last takeover took to install its flows.
# TYPE tandem_takeover_last_duration_seconds gauge
tandem_takeover_last_duration_seconds 0.25
# HELP tandem_ftp_alg_lines_total FTP control lines the ALG acted on, by kind and reason (ok: an expectation was made).
# TYPE tandem_ftp_alg_lines_total counter
tandem_ftp_alg_lines_total{kind="PASV",reason="ok"} 5
tandem_ftp_alg_lines_total{kind="PORT",reason="bounce"} 1
# HELP tandem_ftp_alg_events_total FTP ALG data-connection events.
# TYPE tandem_ftp_alg_events_total counter
tandem_ftp_alg_events_total{event="data_opened"} 5
tandem_ftp_alg_events_total{event="expired"} 0
`
	names := []string{"tandem_mirror_link_up", "tandem_mirror_entries_total", "tandem_mirror_lag_seconds", "tandem_mirror_last_bulk_sync_timestamp_seconds",
		"tandem_standby_entries", "tandem_takeover_flows_total", "tandem_takeover_last_duration_seconds", "tandem_ftp_alg_lines_total", "tandem_ftp_alg_events_total"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	if probs, err := testutil.GatherAndLint(reg); err != nil || len(probs) > 0 {
		t.Errorf("lint: %v %v", probs, err)
	}
	if n, _ := testutil.GatherAndCount(New(Config{Source: fixture()}), "tandem_mirror_link_up", "tandem_standby_entries", "tandem_ftp_alg_lines_total"); n != 0 {
		t.Errorf("%d failover or ALG series from a node without them", n)
	}
}
