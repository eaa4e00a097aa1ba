// Package metrics exposes a node's state to Prometheus: data-plane counters
// per vserver and backend, BGP sessions, cluster membership, the config
// digest, table epochs and backend health; for connection failover, the
// mirroring link, the standby store and takeovers; the FTP ALG's counters.
//
// Nothing is registered globally: New returns a registry of its own, and
// every value is read from a Source at scrape time, so the metrics are never
// staler than the scrape.
package metrics

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Traffic is the counters of one vserver or backend.
type Traffic struct {
	// Name is the vserver's or the backend service's name.
	Name string
	// Packets, Bytes and NewFlows went client -> backend.
	Packets, Bytes, NewFlows uint64
	// ReplyPackets and ReplyBytes went backend -> client.
	ReplyPackets, ReplyBytes uint64
	// Reasons counts packets by verdict reason ("drop_no_backend", ...).
	// Reasons starting with "drop_" are drops.
	Reasons map[string]uint64
}

// Peer is one BGP session.
type Peer struct {
	Address     string
	AS          uint32
	State       string
	Established bool
}

// Snapshot is everything exported, read at once.
type Snapshot struct {
	VServers []Traffic
	Backends []Traffic
	Peers    []Peer
	// Members counts cluster members by state ("alive", "suspect", "dead",
	// "left").
	Members map[string]int
	// ConfigDigest is the replicated configuration's digest.
	ConfigDigest string
	// TableEpochs is each vserver's data-plane table epoch.
	TableEpochs map[string]uint64
	// BackendUp is the agreed health per service.
	BackendUp map[string]bool
	// Announced is how many prefixes the node announces by BGP.
	Announced int
	// Draining is true while the node drains.
	Draining bool
	// DataPlaneLag is true while the data plane does not hold the cluster's
	// tables (a failed write being retried); no new VIP is announced then.
	DataPlaneLag bool
	// ConfigProblems counts broken rules in the merged configuration (the
	// vservers they name are programmed nowhere until fixed).
	ConfigProblems int
	// Failover is nil on a node without the stateful side.
	Failover *Failover
	// ALG is nil when the data plane has no FTP ALG.
	ALG *ALG
}

// MirrorLink is one end of a mirroring link (show rpcnode).
type MirrorLink struct {
	Peer string
	// Role is "sender" or "receiver".
	Role string
	// Up is true while the link streams (bulk sync done, authenticated).
	Up bool
	// Entries counts records sent (sender) or applied (receiver), Bytes
	// the link's bytes read and written.
	Entries, Bytes uint64
	// Lag is the sender's last enqueue-to-applied time.
	Lag time.Duration
	// LastBulkSync is when the last bulk sync completed (zero: never).
	LastBulkSync time.Time
}

// Failover is the node's connection-failover state.
type Failover struct {
	Links []MirrorLink
	// StandbyEntries is how many of its partner's flows the node holds;
	// StandbyDropped and StandbyEvicted count entries the store refused
	// (full buffer, admission) or evicted (room, idle timeout).
	StandbyEntries                 int
	StandbyDropped, StandbyEvicted uint64
	// Takeovers counts the partner's flows taken over, TakeoverFlows the
	// flows they installed, LastTakeover how long the last one took.
	Takeovers, TakeoverFlows uint64
	LastTakeover             time.Duration
}

// ALGLine counts the FTP control lines of one kind (PASV, EPSV, PORT,
// EPRT) the ALG acted on with one reason ("ok" made an expectation).
type ALGLine struct {
	Kind, Reason string
	N            uint64
}

// ALG is the FTP ALG's counters.
type ALG struct {
	Lines []ALGLine
	// Events counts data connections opened, expectations expired, failed
	// or refused, and stray non-SYN packets, by name.
	Events map[string]uint64
}

// Source provides snapshots. It is called once per scrape, from the scrape's
// goroutine; it must honour ctx.
type Source interface {
	Snapshot(ctx context.Context) (Snapshot, error)
}

const ns = "tandem"

var (
	descVSPackets   = prometheus.NewDesc(ns+"_vserver_packets_total", "Packets client to backend, per vserver.", []string{"vserver"}, nil)
	descVSBytes     = prometheus.NewDesc(ns+"_vserver_bytes_total", "Bytes client to backend, per vserver.", []string{"vserver"}, nil)
	descVSNewFlows  = prometheus.NewDesc(ns+"_vserver_new_flows_total", "New flows, per vserver.", []string{"vserver"}, nil)
	descVSRepPkts   = prometheus.NewDesc(ns+"_vserver_reply_packets_total", "Packets backend to client, per vserver.", []string{"vserver"}, nil)
	descVSRepBytes  = prometheus.NewDesc(ns+"_vserver_reply_bytes_total", "Bytes backend to client, per vserver.", []string{"vserver"}, nil)
	descVSDrops     = prometheus.NewDesc(ns+"_vserver_drops_total", "Packets dropped, per vserver and reason.", []string{"vserver", "reason"}, nil)
	descVSVerdicts  = prometheus.NewDesc(ns+"_vserver_verdicts_total", "Packets by verdict reason (forward, pass, drop), per vserver.", []string{"vserver", "reason"}, nil)
	descBEPackets   = prometheus.NewDesc(ns+"_backend_packets_total", "Packets client to backend, per backend.", []string{"backend"}, nil)
	descBEBytes     = prometheus.NewDesc(ns+"_backend_bytes_total", "Bytes client to backend, per backend.", []string{"backend"}, nil)
	descBENewFlows  = prometheus.NewDesc(ns+"_backend_new_flows_total", "New flows, per backend.", []string{"backend"}, nil)
	descBERepPkts   = prometheus.NewDesc(ns+"_backend_reply_packets_total", "Packets backend to client, per backend.", []string{"backend"}, nil)
	descBERepBytes  = prometheus.NewDesc(ns+"_backend_reply_bytes_total", "Bytes backend to client, per backend.", []string{"backend"}, nil)
	descBEUp        = prometheus.NewDesc(ns+"_backend_up", "Agreed health of a backend service (1 UP, 0 DOWN).", []string{"service"}, nil)
	descBGPUp       = prometheus.NewDesc(ns+"_bgp_session_up", "1 when the BGP session is established.", []string{"peer", "peer_as"}, nil)
	descBGPState    = prometheus.NewDesc(ns+"_bgp_session_state", "BGP session state (1 for the current state).", []string{"peer", "state"}, nil)
	descMembers     = prometheus.NewDesc(ns+"_cluster_members", "Cluster members by state.", []string{"state"}, nil)
	descConfig      = prometheus.NewDesc(ns+"_config_info", "The replicated configuration's digest (value 1).", []string{"digest"}, nil)
	descEpoch       = prometheus.NewDesc(ns+"_table_epoch", "Data-plane table epoch, per vserver.", []string{"vserver"}, nil)
	descAnnounced   = prometheus.NewDesc(ns+"_bgp_announced_prefixes", "Prefixes the node announces.", nil, nil)
	descDraining    = prometheus.NewDesc(ns+"_draining", "1 while the node drains.", nil, nil)
	descLag         = prometheus.NewDesc(ns+"_dataplane_lagging", "1 while the data plane does not hold the cluster's tables (retrying).", nil, nil)
	descProblems    = prometheus.NewDesc(ns+"_config_problems", "Broken rules in the merged configuration.", nil, nil)
	descScrapeError = prometheus.NewDesc(ns+"_scrape_error", "1 when reading the node's state failed during this scrape.", nil, nil)

	descMirrorUp       = prometheus.NewDesc(ns+"_mirror_link_up", "1 while the mirroring link streams (authenticated, bulk sync done).", []string{"peer", "role"}, nil)
	descMirrorEntries  = prometheus.NewDesc(ns+"_mirror_entries_total", "Flow records sent (sender) or applied (receiver) on the mirroring link.", []string{"peer", "role"}, nil)
	descMirrorBytes    = prometheus.NewDesc(ns+"_mirror_bytes_total", "Bytes read and written on the mirroring link.", []string{"peer", "role"}, nil)
	descMirrorLag      = prometheus.NewDesc(ns+"_mirror_lag_seconds", "Time from a change's enqueue to the partner's having applied it, last acknowledged frame.", []string{"peer", "role"}, nil)
	descMirrorLastSync = prometheus.NewDesc(ns+"_mirror_last_bulk_sync_timestamp_seconds", "When the last bulk sync completed, Unix time.", []string{"peer", "role"}, nil)
	descStandby        = prometheus.NewDesc(ns+"_standby_entries", "The partner's flows held in the standby store.", nil, nil)
	descStandbyDropped = prometheus.NewDesc(ns+"_standby_dropped_total", "Mirrored records the standby store refused (full buffer or admission); healed by the owner's refresh.", nil, nil)
	descStandbyEvicted = prometheus.NewDesc(ns+"_standby_evicted_total", "Standby entries evicted for room or expired.", nil, nil)
	descTakeovers      = prometheus.NewDesc(ns+"_takeovers_total", "Takeovers of the partner's mirrored flows.", nil, nil)
	descTakeoverFlows  = prometheus.NewDesc(ns+"_takeover_flows_total", "Flows installed by takeovers.", nil, nil)
	descTakeoverLast   = prometheus.NewDesc(ns+"_takeover_last_duration_seconds", "How long the last takeover took to install its flows.", nil, nil)
	descALGLines       = prometheus.NewDesc(ns+"_ftp_alg_lines_total", "FTP control lines the ALG acted on, by kind and reason (ok: an expectation was made).", []string{"kind", "reason"}, nil)
	descALGEvents      = prometheus.NewDesc(ns+"_ftp_alg_events_total", "FTP ALG data-connection events.", []string{"event"}, nil)
)

// Config configures New.
type Config struct {
	// Source is read at each scrape. Required.
	Source Source
	// Timeout bounds a scrape's Snapshot. Default 5s.
	Timeout time.Duration
	// Runtime adds the Go runtime and process collectors. Default false
	// (tests compare exact output); tandemd turns it on.
	Runtime bool
}

type collector struct {
	src     Source
	timeout time.Duration
}

// New returns a registry holding the node's collector.
func New(cfg Config) *prometheus.Registry {
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(&collector{src: cfg.Source, timeout: cfg.Timeout})
	if cfg.Runtime {
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	return reg
}

// Handler serves the registry's /metrics.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descVSPackets, descVSBytes, descVSNewFlows, descVSRepPkts, descVSRepBytes, descVSDrops, descVSVerdicts,
		descBEPackets, descBEBytes, descBENewFlows, descBERepPkts, descBERepBytes, descBEUp, descBGPUp, descBGPState,
		descMembers, descConfig, descEpoch, descAnnounced, descDraining, descLag, descProblems, descScrapeError,
		descMirrorUp, descMirrorEntries, descMirrorBytes, descMirrorLag, descMirrorLastSync, descStandby, descStandbyDropped,
		descStandbyEvicted, descTakeovers, descTakeoverFlows, descTakeoverLast, descALGLines, descALGEvents} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	s, err := c.src.Snapshot(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(descScrapeError, prometheus.GaugeValue, 1)
		// A partial snapshot is still exported: a failing BGP query should
		// not hide the data-plane counters.
	} else {
		ch <- prometheus.MustNewConstMetric(descScrapeError, prometheus.GaugeValue, 0)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, v := range s.VServers {
		counter(descVSPackets, v.Packets, v.Name)
		counter(descVSBytes, v.Bytes, v.Name)
		counter(descVSNewFlows, v.NewFlows, v.Name)
		counter(descVSRepPkts, v.ReplyPackets, v.Name)
		counter(descVSRepBytes, v.ReplyBytes, v.Name)
		for r, n := range v.Reasons {
			counter(descVSVerdicts, n, v.Name, r)
			if strings.HasPrefix(r, "drop_") {
				counter(descVSDrops, n, v.Name, strings.TrimPrefix(r, "drop_"))
			}
		}
	}
	for _, b := range s.Backends {
		counter(descBEPackets, b.Packets, b.Name)
		counter(descBEBytes, b.Bytes, b.Name)
		counter(descBENewFlows, b.NewFlows, b.Name)
		counter(descBERepPkts, b.ReplyPackets, b.Name)
		counter(descBERepBytes, b.ReplyBytes, b.Name)
	}
	for svc, up := range s.BackendUp {
		gauge(descBEUp, b2f(up), svc)
	}
	for _, p := range s.Peers {
		gauge(descBGPUp, b2f(p.Established), p.Address, strconv.FormatUint(uint64(p.AS), 10))
		gauge(descBGPState, 1, p.Address, p.State)
	}
	// The usual states always, at 0 when empty, so that alerts on them
	// have a series; any other state as it comes.
	for _, st := range []string{"alive", "suspect", "dead", "left"} {
		gauge(descMembers, float64(s.Members[st]), st)
	}
	for st, n := range s.Members {
		switch st {
		case "alive", "suspect", "dead", "left":
		default:
			gauge(descMembers, float64(n), st)
		}
	}
	if s.ConfigDigest != "" {
		gauge(descConfig, 1, s.ConfigDigest)
	}
	for vs, e := range s.TableEpochs {
		gauge(descEpoch, float64(e), vs)
	}
	gauge(descAnnounced, float64(s.Announced))
	gauge(descDraining, b2f(s.Draining))
	gauge(descLag, b2f(s.DataPlaneLag))
	gauge(descProblems, float64(s.ConfigProblems))
	if f := s.Failover; f != nil {
		for _, l := range f.Links {
			gauge(descMirrorUp, b2f(l.Up), l.Peer, l.Role)
			counter(descMirrorEntries, l.Entries, l.Peer, l.Role)
			counter(descMirrorBytes, l.Bytes, l.Peer, l.Role)
			gauge(descMirrorLag, l.Lag.Seconds(), l.Peer, l.Role)
			if !l.LastBulkSync.IsZero() {
				gauge(descMirrorLastSync, float64(l.LastBulkSync.UnixNano())/1e9, l.Peer, l.Role)
			}
		}
		gauge(descStandby, float64(f.StandbyEntries))
		counter(descStandbyDropped, f.StandbyDropped)
		counter(descStandbyEvicted, f.StandbyEvicted)
		counter(descTakeovers, f.Takeovers)
		counter(descTakeoverFlows, f.TakeoverFlows)
		gauge(descTakeoverLast, f.LastTakeover.Seconds())
	}
	if a := s.ALG; a != nil {
		for _, l := range a.Lines {
			counter(descALGLines, l.N, l.Kind, l.Reason)
		}
		for ev, n := range a.Events {
			counter(descALGEvents, n, ev)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
