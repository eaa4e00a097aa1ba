package chaos

import (
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tandem-lb/tandem/test/traffic"
)

// Row aggregates the flows of one vserver mode, IP family and protocol.
type Row struct {
	Mode, Family, Proto string
	Flows, Kept         int
	Broken, Corrupt     int
	Moved               int
	// MaxStall is the longest stall of a kept flow.
	MaxStall time.Duration
	// RoundTrips counts verified request/reply pairs.
	RoundTrips int
	// Starts and Carriers count flows by the node that carried them at
	// their first round trip and at their end ("?" when unknown).
	Starts, Carriers map[string]int
}

// Rows aggregates the result's flows per mode, family and protocol, in
// the order of the targets' modes, then IPv4 before IPv6, TCP before UDP.
func (r *Result) Rows() []Row {
	if r.Report == nil {
		return nil
	}
	modes := map[string]int{}
	for _, t := range r.Report.Targets {
		if _, ok := modes[t.Mode]; !ok {
			modes[t.Mode] = len(modes)
		}
	}
	by := map[[3]string]*Row{}
	for _, f := range r.Report.Results {
		fam := "IPv6"
		if f.Dst.Addr().Unmap().Is4() {
			fam = "IPv4"
		}
		k := [3]string{f.Mode, fam, strings.ToUpper(f.Proto)}
		row, ok := by[k]
		if !ok {
			row = &Row{Mode: k[0], Family: k[1], Proto: k[2], Starts: map[string]int{}, Carriers: map[string]int{}}
			by[k] = row
		}
		row.Flows++
		switch f.Outcome {
		case traffic.Kept:
			row.Kept++
			row.MaxStall = max(row.MaxStall, f.MaxStall)
		case traffic.Corrupt:
			row.Corrupt++
		default:
			row.Broken++
		}
		if f.Moved {
			row.Moved++
		}
		row.RoundTrips += f.RoundTrips
		row.Starts[orUnknown(f.CarrierStart)]++
		row.Carriers[orUnknown(f.CarrierEnd)]++
	}
	out := make([]Row, 0, len(by))
	for _, row := range by {
		out = append(out, *row)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Mode != b.Mode {
			return modes[a.Mode] < modes[b.Mode]
		}
		if a.Family != b.Family {
			return a.Family < b.Family
		}
		return a.Proto < b.Proto
	})
	return out
}

// Lines are the result's lines for scripts, one per vserver mode:
//
//	chaos scenario=kill9 mode=stateless flows=300 kept=300 broken=0 corrupt=0 moved=37 max_stall_ms=1200
func (r *Result) Lines() []string {
	if r.Report == nil {
		return nil
	}
	var out []string
	for _, s := range r.Report.Summaries() {
		out = append(out, s.Line(string(r.Scenario)))
	}
	return out
}

// Table renders the result for people: the timeline, one row per mode,
// family and protocol, and the flows that were not kept (at most 10).
func (r *Result) Table() string {
	var b strings.Builder
	victim := r.Victim
	if victim == "" {
		victim = "every node in turn"
	}
	fmt.Fprintf(&b, "== scenario %s on %s (%v)\n", r.Scenario, victim, r.Took.Round(100*time.Millisecond))
	for _, e := range r.Events {
		fmt.Fprintf(&b, "  %7.2fs  %s\n", e.At.Seconds(), e.What)
	}
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MODE\tFAMILY\tPROTO\tFLOWS\tKEPT\tBROKEN\tCORRUPT\tMOVED\tMAX STALL\tROUND TRIPS\tCARRIED AT START BY\tAT END BY")
	for _, row := range r.Rows() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%v\t%d\t%s\t%s\n", row.Mode, row.Family, row.Proto,
			row.Flows, row.Kept, row.Broken, row.Corrupt, row.Moved, row.MaxStall.Round(time.Millisecond), row.RoundTrips,
			counts(row.Starts), counts(row.Carriers))
	}
	tw.Flush()
	if l := r.lostPairLine(); l != "" {
		fmt.Fprintln(&b, "  "+l)
	}
	if r.Report != nil {
		shown := 0
		for _, f := range r.Report.Results {
			if f.Outcome == traffic.Kept {
				continue
			}
			if shown == 10 {
				fmt.Fprintln(&b, "  ...")
				break
			}
			shown++
			fmt.Fprintf(&b, "  not kept: %s %v backend=%s %s (%s) after %d round trips: %s\n",
				f.Mode, f.FlowKey, f.Backend, f.Outcome, f.Reason, f.RoundTrips, f.Err)
		}
	}
	return b.String()
}

func orUnknown(node string) string {
	if node == "" {
		return "?"
	}
	return node
}

func counts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s:%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

// Failures checks the result against what its scenario must show and
// returns what it does not (nil: as expected):
//
//   - no flow of any mode is corrupt;
//   - every stateless flow is kept, in every scenario, and kill9 moved
//     some (else the fault proved nothing);
//   - every stateful flow is kept in kill9, freeze and linkdown;
//   - in pairloss, the stateful flows owned by the lost pair (Owners,
//     LostPair) are not kept — TCP ones are broken, since no node holds
//     their state; a UDP one may be kept when the new owner re-creates it
//     from its next datagram on the same backend, which is counted, not
//     failed — every other stateful flow is kept, and the lost pair owned
//     some flows (else the scenario proved nothing).
//
// Stateful flows in drain and rolling are reported, not checked.
func (r *Result) Failures() []string {
	if r.Report == nil {
		return []string{fmt.Sprintf("%s: no traffic report", r.Scenario)}
	}
	type tally struct{ flows, bad int }
	var order []string
	by := map[string]*tally{}
	note := func(what string, bad bool) {
		t, ok := by[what]
		if !ok {
			t = &tally{}
			by[what] = t
			order = append(order, what)
		}
		t.flows++
		if bad {
			t.bad++
		}
	}
	statefulChecked := r.Scenario == Kill9 || r.Scenario == Freeze || r.Scenario == LinkDown || r.Scenario == PairLoss
	moved, lost := 0, 0
	for _, f := range r.Report.Results {
		kept := f.Outcome == traffic.Kept
		note("corrupt flows", f.Outcome == traffic.Corrupt)
		switch {
		case f.Mode == ModeStateless:
			note("stateless flows not kept", !kept)
			if f.Moved {
				moved++
			}
		case !isStateful(f.Mode) || !statefulChecked:
		case r.Scenario != PairLoss:
			note("stateful flows not kept", !kept)
		default:
			owner, ok := r.Owners[f.FlowKey]
			switch {
			case !ok:
				note("stateful flows with no known owner at the fault", true)
			case owner == r.LostPair:
				lost++
				note("stateful TCP flows of the lost pair kept", f.Proto == "tcp" && kept)
			default:
				note("stateful flows of surviving pairs not kept", !kept)
			}
		}
	}
	var out []string
	for _, what := range order {
		if t := by[what]; t.bad > 0 {
			out = append(out, fmt.Sprintf("%s: %d %s (of %d)", r.Scenario, t.bad, what, t.flows))
		}
	}
	if r.Scenario == Kill9 && by["stateless flows not kept"] != nil && moved == 0 {
		out = append(out, "kill9: no stateless flow moved to another node: the fault proved nothing")
	}
	if r.Scenario == PairLoss && r.Owners != nil && lost == 0 {
		out = append(out, fmt.Sprintf("pairloss: pair %d owned no stateful flow: the fault proved nothing", r.LostPair))
	}
	return out
}

// lostPairLine sums up, after pairloss, the stateful flows of the lost
// pair and of the others ("" in other scenarios).
func (r *Result) lostPairLine() string {
	if r.Scenario != PairLoss || r.Report == nil || r.Owners == nil {
		return ""
	}
	var lost, lostTCP, lostUDP, recreated, others, othersKept int
	for _, f := range r.Report.Results {
		owner, ok := r.Owners[f.FlowKey]
		if !isStateful(f.Mode) || !ok {
			continue
		}
		kept := f.Outcome == traffic.Kept
		switch {
		case owner != r.LostPair:
			others++
			if kept {
				othersKept++
			}
		case kept:
			recreated++
		default:
			lost++
			if f.Proto == "tcp" {
				lostTCP++
			} else {
				lostUDP++
			}
		}
	}
	return fmt.Sprintf("pair %d owned %d stateful flows: %d broken (%d TCP, %d UDP), %d UDP kept (the new owner creates a UDP flow from any datagram: kept when it chose the same backend); other pairs kept %d of %d",
		r.LostPair, lost+recreated, lost, lostTCP, lostUDP, recreated, othersKept, others)
}
