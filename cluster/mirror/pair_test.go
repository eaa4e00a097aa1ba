package mirror

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var rewrite = flag.Bool("rewrite", false, "rewrite testdata/pair/*.txt with the actual output")

// pairWorld runs the PairMachines of one pair (n1, the preferred member,
// and n2) and delivers their announcements to each other, as memberlist
// broadcasts would.
type pairWorld struct {
	nodes map[string]*PairMachine
	out   *strings.Builder
}

func partnerOf(n string) string {
	if n == "n1" {
		return "n2"
	}
	return "n1"
}

func (w *pairWorld) node(name string) (*PairMachine, error) {
	m := w.nodes[name]
	if m == nil {
		return nil, fmt.Errorf("node %s is not running", name)
	}
	return m, nil
}

// drain prints name's effects and delivers its announcements.
func (w *pairWorld) drain(name string) {
	m := w.nodes[name]
	if m == nil {
		return
	}
	for _, e := range m.Ready() {
		fmt.Fprintf(w.out, "%s: %v\n", name, e)
		a, ok := e.(Announce)
		if !ok {
			continue
		}
		peer := partnerOf(name)
		pm := w.nodes[peer]
		if pm == nil {
			continue
		}
		if a.Claim {
			pm.Claimed(a.Node, a.Epoch)
		} else {
			pm.Released(a.Node, a.Epoch)
		}
		w.drain(peer)
	}
}

func (w *pairWorld) run(cmd string, args []string) error {
	arg := func(i int) string {
		if i < len(args) {
			return args[i]
		}
		return ""
	}
	name := arg(0)
	switch cmd {
	case "boot":
		m, err := NewPairMachine(PairConfig{Self: name, Partner: partnerOf(name), Pair: 1, ProbeTicks: 3, JoinTicks: 5, ReleaseTicks: 4})
		if err != nil {
			return err
		}
		w.nodes[name] = m
		// Joining, it learns the pair's last claim from the cluster's state.
		if p := w.nodes[partnerOf(name)]; p != nil && p.Status().Owner != "" {
			st := p.Status()
			m.Claimed(st.Owner, st.Epoch)
			w.drain(name)
		}
	case "kill":
		delete(w.nodes, name)
	case "status":
	default:
		m, err := w.node(name)
		if err != nil {
			return err
		}
		switch cmd {
		case "alive":
			p := w.nodes[partnerOf(name)]
			if p == nil {
				return fmt.Errorf("%s's partner is not running", name)
			}
			m.PartnerAlive(p.Status().Role)
		case "dead":
			m.PartnerDead()
		case "link-up":
			m.LinkUp()
		case "link-closed":
			m.LinkClosed()
		case "probe":
			m.ProbeResult(arg(1) == "alive")
		case "synced":
			m.BulkSynced(1)
		case "acked":
			m.SyncAcked(1)
		case "version":
			v, err := strconv.Atoi(arg(1))
			if err != nil {
				return err
			}
			m.VersionMismatch(uint16(v))
		case "tick":
			n := 1
			if arg(1) != "" {
				if n, err = strconv.Atoi(arg(1)); err != nil {
					return err
				}
			}
			for range n {
				m.Tick()
				w.drain(name)
			}
		default:
			return fmt.Errorf("unknown command %q", cmd)
		}
		w.drain(name)
	}
	names := make([]string, 0, len(w.nodes))
	for n := range w.nodes {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(w.out, "%s %v\n", n, w.nodes[n].Status())
	}
	return nil
}

// TestPairScenarios replays testdata/pair/*.txt: blocks of a command, a
// "----" line and the expected output, separated by blank lines.
func TestPairScenarios(t *testing.T) {
	files, err := filepath.Glob("testdata/pair/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			w := &pairWorld{nodes: map[string]*PairMachine{}}
			var rewritten strings.Builder
			blocks := strings.Split(strings.TrimSpace(string(data)), "\n\n")
			for _, blk := range blocks {
				lines := strings.Split(blk, "\n")
				var cmdLine string
				var pre []string
				i := 0
				for ; i < len(lines); i++ {
					l := lines[i]
					if strings.HasPrefix(l, "#") {
						pre = append(pre, l)
						continue
					}
					cmdLine = l
					i++
					break
				}
				if cmdLine == "" {
					rewritten.WriteString(blk + "\n\n")
					continue
				}
				if i >= len(lines) || lines[i] != "----" {
					t.Fatalf("block %q: want a ---- line after the command", cmdLine)
				}
				want := strings.Join(lines[i+1:], "\n")
				fields := strings.Fields(cmdLine)
				w.out = &strings.Builder{}
				if err := w.run(fields[0], fields[1:]); err != nil {
					fmt.Fprintf(w.out, "error: %v\n", err)
				}
				got := strings.TrimSpace(w.out.String())
				if got != want && !*rewrite {
					t.Errorf("%s: %s\ngot:\n%s\nwant:\n%s", f, cmdLine, got, want)
				}
				for _, p := range pre {
					rewritten.WriteString(p + "\n")
				}
				fmt.Fprintf(&rewritten, "%s\n----\n%s\n\n", cmdLine, got)
			}
			if *rewrite {
				if err := os.WriteFile(f, []byte(strings.TrimSpace(rewritten.String())+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestPairConfigValidate(t *testing.T) {
	for _, c := range []PairConfig{{Self: "n1"}, {Self: "n1", Partner: "n1"}, {Self: "n1", Partner: "n2", ProbeTicks: -1}} {
		if _, err := NewPairMachine(c); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("NewPairMachine(%+v) = %v", c, err)
		}
	}
}

// Invariant over random event sequences, announcements delivered at once:
// while both members run, they never both own the pair.
func TestPairNeverTwoOwners(t *testing.T) {
	cmds := []string{"alive", "dead", "link-up", "link-closed", "probe-alive", "probe-dead", "synced", "acked", "tick", "kill", "boot"}
	seed := uint64(1)
	next := func(n int) int {
		seed = seed*6364136223846793005 + 1442695040888963407
		return int(seed>>33) % n
	}
	owned, takeovers := 0, 0
	for round := range 2000 {
		w := &pairWorld{nodes: map[string]*PairMachine{}, out: &strings.Builder{}}
		w.run("boot", []string{"n1"})
		w.run("boot", []string{"n2"})
		for step := range 40 {
			name := []string{"n1", "n2"}[next(2)]
			cmd := cmds[next(len(cmds))]
			var args []string
			switch cmd {
			case "probe-alive", "probe-dead":
				args = []string{name, strings.TrimPrefix(cmd, "probe-")}
				cmd = "probe"
			default:
				args = []string{name}
			}
			if cmd == "boot" && w.nodes[name] != nil {
				continue
			}
			w.run(cmd, args)
			a, b := w.nodes["n1"], w.nodes["n2"]
			if a == nil || b == nil {
				continue
			}
			sa, sb := a.Status(), b.Status()
			if sa.Role.owns() != sb.Role.owns() {
				owned++
			}
			if sa.Role == RoleTakenOver || sb.Role == RoleTakenOver {
				takeovers++
			}
			if sa.Role.owns() && sb.Role.owns() {
				t.Fatalf("round %d step %d: both own the pair (epochs %d, %d)\n%s", round, step, sa.Epoch, sb.Epoch, w.out)
			}
		}
	}
	// The walk must reach the states it claims to check.
	if owned < 10000 || takeovers < 1000 {
		t.Errorf("random walk too shallow: %d steps with one owner, %d after a takeover", owned, takeovers)
	}
	t.Logf("%d steps with one owner, %d after a takeover", owned, takeovers)
}

// The machines driven by real links' events: n2's machine learns its mirror
// is complete from its Receiver, n1's from its Sender's acks; when n1's
// process goes away, n2's machine asks for a probe.
func TestPairMachineDrivenByLinks(t *testing.T) {
	n1, err := NewPairMachine(PairConfig{Self: "n1", Partner: "n2", Pair: 1})
	if err != nil {
		t.Fatal(err)
	}
	n2, err := NewPairMachine(PairConfig{Self: "n2", Partner: "n1", Pair: 1})
	if err != nil {
		t.Fatal(err)
	}
	n2.PartnerAlive(RoleJoining)
	n1.PartnerAlive(RoleStandby)
	n2.Claimed("n1", 1)
	if st := n1.Status(); st.Role != RoleActive {
		t.Fatalf("n1 %v", st)
	}
	n1.Ready()
	n2.Ready()

	evs := make(chan LinkEvent, 64)
	l := startLink(t, newMemSource(0, 500), func(sc *SenderConfig, rc *ReceiverConfig) {
		sc.OnEvent = func(ev LinkEvent) { evs <- ev }
		rc.OnEvent = func(ev LinkEvent) { evs <- ev }
	})
	feed := func(until func() bool) {
		t.Helper()
		for !until() {
			select {
			case ev := <-evs:
				if ev.Receiver {
					n2.Link(ev)
				} else {
					n1.Link(ev)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("stuck: n1 %v, n2 %v", n1.Status(), n2.Status())
			}
		}
	}
	feed(func() bool { return n1.Status().Protected && n2.Status().Protected })
	if l.sink.len() != 500 {
		t.Errorf("sink holds %d flows", l.sink.len())
	}
	// n1's sender stops (its process dies): n2's link closes.
	l.cancel()
	l.done.Wait()
	feed(func() bool { return n2.Status().Probing })
	effects := n2.Ready()
	if len(effects) != 1 || effects[0] != (Probe{Partner: "n1"}) {
		t.Errorf("n2 effects %v, want a probe", effects)
	}
	n2.ProbeResult(false)
	if st := n2.Status(); st.Role != RoleTakenOver || st.Takeover != "complete" || st.Owner != "n2" {
		t.Errorf("n2 after the failed probe: %v", st)
	}
}

func TestPairMachineLearnsVersionMismatch(t *testing.T) {
	m, err := NewPairMachine(PairConfig{Self: "n2", Partner: "n1", Pair: 1})
	if err != nil {
		t.Fatal(err)
	}
	m.PartnerAlive(RoleJoining)
	m.Ready()
	var got []LinkEvent
	var mu sync.Mutex
	_, addr := startReceiver(t, ReceiverConfig{Self: "n2", Pair: 1, Partner: "n1", Auth: Auth{PSK: testKey}, Sink: newMemSink(), Logger: quietLogger(),
		OnEvent: func(ev LinkEvent) { mu.Lock(); got = append(got, ev); mu.Unlock() }})
	h := Hello{Version: Version + 1, Auth: AuthPSK, Pair: 1, NodeID: "n1"}
	rawDial(t, addr, AppendHello(nil, &h))
	eventually(t, "refusal event", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) > 0 })
	mu.Lock()
	m.Link(got[0])
	mu.Unlock()
	st := m.Status()
	if st.Protected || !strings.Contains(st.Reason, "version 2") {
		t.Errorf("status %v", st)
	}
}
