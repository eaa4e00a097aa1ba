package cluster

import (
	"bufio"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Scenario tests, in the style of etcd-raft's datadriven tests: each file in
// testdata/*.txt is a script of commands, each followed by "----" and the
// output expected. `go test -run TestScenarios -rewrite` rewrites the
// expected output from what the code does now (review the diff!).
//
// The harness runs one Store and one Machine per node and stands in for
// memberlist: metadata changes and membership events reach the other nodes
// at once, while gossiped messages (config deltas, health) wait in a queue
// until `deliver` or `tick`, so concurrent edits can be scripted.
//
// Commands:
//
//	add-node ID [pair=N] [proto=N]   join (with a push/pull state exchange)
//	fail ID | suspect ID | leave ID  what the others' memberlist reports
//	declare-dead BY ID               BY's partner check declares ID dead (MsgDead)
//	restart ID                       a failed node comes back (same state dir)
//	edit ID CMD...                   a config change on node ID (see runEdit)
//	probe ID[,ID...|all] SVC up|down probe verdicts
//	drain ID | undrain ID
//	deliver                          deliver queued messages until quiet
//	tick [N]                         N ticks on every node, delivering and push/pull after each
//	show tables|vips|members ID|pairs ID|health ID|config ID|owner ID ADDR PORT
//
// After each command the harness prints, per node, the data-plane effects it
// produced (program/remove table, announce/withdraw VIP, pairs changed).

var rewrite = flag.Bool("rewrite", false, "rewrite testdata/*.txt expected output")

const scenarioTableSize = 13

type simNode struct {
	id    string
	meta  MemberMeta
	store *Store
	m     *Machine
	down  bool
}

type simMsg struct {
	to  string
	msg Message
}

type sim struct {
	t      testing.TB
	nodes  map[string]*simNode
	order  []string
	queue  []simMsg
	out    *strings.Builder
	seqGen uint64
}

func newSim(t testing.TB) *sim {
	return &sim{t: t, nodes: map[string]*simNode{}}
}

func (s *sim) live() []*simNode {
	var out []*simNode
	for _, id := range s.order {
		if n := s.nodes[id]; !n.down {
			out = append(out, n)
		}
	}
	return out
}

func (s *sim) send(from string, msg Message) {
	// Encode and decode, as the network would.
	b, err := msg.Encode()
	if err != nil {
		s.t.Fatalf("encoding %s from %s: %v", msg.Type, from, err)
	}
	for _, n := range s.live() {
		if n.id == from {
			continue
		}
		m, err := DecodeMessage(b)
		if err != nil {
			s.t.Fatal(err)
		}
		s.queue = append(s.queue, simMsg{n.id, m})
	}
}

func (s *sim) receive(n *simNode, msg Message) {
	if n.down {
		return
	}
	switch msg.Type {
	case MsgDelta, MsgState:
		if _, err := n.store.Merge(msg.Entries); err != nil {
			s.t.Fatal(err)
		}
		for _, h := range msg.Health {
			n.m.Health(h)
		}
	case MsgHealth:
		n.m.Health(msg.Health[0])
	case MsgDead:
		n.m.DeclareDead(msg.Dead)
	}
	s.syncConfig(n)
}

func (s *sim) syncConfig(n *simNode) {
	if n.store.Digest() != n.m.Meta().Digest {
		n.m.SetConfig(n.store.Config())
	}
}

// drain performs every node's effects: broadcasts are queued, metadata
// reaches the others at once, data-plane effects are printed.
func (s *sim) drain() {
	for changed := true; changed; {
		changed = false
		for _, id := range s.order {
			n := s.nodes[id]
			if n.down {
				continue
			}
			for _, e := range n.m.Ready() {
				changed = true
				switch e := e.(type) {
				case Broadcast:
					s.send(n.id, e.Msg)
				case UpdateMeta:
					n.meta = e.Meta
					for _, o := range s.live() {
						if o != n {
							o.m.Member(e.Meta, netip.AddrPort{}, StateAlive)
						}
					}
				case ProgramTable:
					fmt.Fprintf(s.out, "%s: program %s\n", n.id, formatTable(&e.Table))
				case RemoveTable:
					fmt.Fprintf(s.out, "%s: remove table %s\n", n.id, e.VServer)
				case AnnounceVIP:
					fmt.Fprintf(s.out, "%s: announce %s\n", n.id, e.VIP)
				case WithdrawVIP:
					fmt.Fprintf(s.out, "%s: withdraw %s\n", n.id, e.VIP)
				case PairsChanged:
					fmt.Fprintf(s.out, "%s: pairs %s\n", n.id, formatPairs(e.Pairs))
				}
			}
		}
	}
}

func (s *sim) deliver() {
	for len(s.queue) > 0 {
		q := s.queue
		s.queue = nil
		for _, m := range q {
			s.receive(s.nodes[m.to], m.msg)
			s.drain()
		}
	}
	s.drain()
}

func formatTable(t *VServerTable) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s epoch=%d withPort=%v backends=", t.VServer, t.Epoch, t.WithPort)
	for i, n := range t.Backends {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s:%d", n, t.Weights[i])
	}
	if len(t.Slots) == 0 {
		b.WriteString(" slots=none")
	} else {
		b.WriteString(" slots=")
		for _, x := range t.Slots {
			b.WriteString(strconv.Itoa(int(x)))
		}
	}
	return b.String()
}

func formatPairs(ps []PairStatus) string {
	var parts []string
	for _, p := range ps {
		id := strconv.Itoa(int(p.ID))
		if !p.Configured {
			id = fmt.Sprintf("auto%d", p.ID-AutoPairBase)
		}
		s := fmt.Sprintf("%s[%s active=%s", id, strings.Join(p.Members, ","), p.Active)
		if p.Protected {
			s += " protected]"
		} else {
			s += " unprotected: " + p.Reason + "]"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

func kv(args []string) (map[string]string, []string) {
	opts := map[string]string{}
	var rest []string
	for _, a := range args {
		if k, v, ok := strings.Cut(a, "="); ok {
			opts[k] = v
		} else {
			rest = append(rest, a)
		}
	}
	return opts, rest
}

func (s *sim) node(id string) *simNode {
	n, ok := s.nodes[id]
	if !ok {
		s.t.Fatalf("no node %s", id)
	}
	return n
}

func (s *sim) newMachine(n *simNode) {
	s.seqGen += 1000
	m, err := NewMachine(MachineConfig{Self: n.meta, TableSize: scenarioTableSize, HealthResendTicks: 5, ForgetDeadTicks: 20,
		ConfirmDeadTicks: 3, HealthSeqBase: s.seqGen})
	if err != nil {
		s.t.Fatal(err)
	}
	n.m = m
	n.m.SetConfig(n.store.Config())
}

// join: the node and the cluster learn of each other, then exchange full
// state with the first live node (memberlist's push/pull on join).
func (s *sim) join(n *simNode) {
	for _, o := range s.live() {
		if o == n {
			continue
		}
		o.m.Member(n.m.Meta(), netip.AddrPort{}, StateAlive)
		n.m.Member(o.m.Meta(), netip.AddrPort{}, StateAlive)
	}
	for _, o := range s.live() {
		if o == n {
			continue
		}
		s.receive(n, Message{Type: MsgState, From: o.id, Entries: o.store.Entries(), Health: o.m.HealthReports()})
		s.receive(o, Message{Type: MsgState, From: n.id, Entries: n.store.Entries(), Health: n.m.HealthReports()})
		break
	}
	s.drain()
}

// antiEntropy is memberlist's periodic push/pull: every live node
// exchanges full state with the next live node in id order.
func (s *sim) antiEntropy() {
	live := s.live()
	if len(live) < 2 {
		return
	}
	for i, n := range live {
		o := live[(i+1)%len(live)]
		s.receive(o, Message{Type: MsgState, From: n.id, Entries: n.store.Entries(), Health: n.m.HealthReports()})
		s.receive(n, Message{Type: MsgState, From: o.id, Entries: o.store.Entries(), Health: o.m.HealthReports()})
		s.drain()
	}
}

func (s *sim) run(cmd string) string {
	var out strings.Builder
	s.out = &out
	f := strings.Fields(cmd)
	opts, args := kv(f[1:])
	switch f[0] {
	case "add-node":
		id := args[0]
		meta := MemberMeta{ID: id, Proto: 1}
		if p, ok := opts["pair"]; ok {
			v, _ := strconv.Atoi(p)
			meta.Pair = uint32(v)
		}
		if p, ok := opts["proto"]; ok {
			v, _ := strconv.Atoi(p)
			meta.Proto = uint16(v)
		}
		st, err := NewStore(StoreConfig{Node: id})
		if err != nil {
			s.t.Fatal(err)
		}
		n := &simNode{id: id, meta: meta, store: st}
		st.cfg.OnChange = func(c []Entry, local bool) {
			if local {
				s.send(id, Message{Type: MsgDelta, From: id, Entries: c})
			}
		}
		s.nodes[id] = n
		s.order = append(s.order, id)
		slices.Sort(s.order)
		s.newMachine(n)
		s.join(n)
	case "fail", "suspect", "leave":
		n := s.node(args[0])
		state := map[string]MemberState{"fail": StateDead, "suspect": StateSuspect, "leave": StateLeft}[f[0]]
		if state != StateSuspect {
			n.down = true
		}
		for _, o := range s.live() {
			if o != n {
				o.m.MemberState(n.id, state)
				if state == StateLeft {
					o.m.Member(n.m.Meta(), netip.AddrPort{}, StateLeft)
				}
			}
		}
		s.drain()
	case "restart":
		n := s.node(args[0])
		n.down = false
		s.newMachine(n)
		s.join(n)
	case "edit":
		n := s.node(args[0])
		if err := n.store.Update(func(c *Config) error { return runEdit(c, f[2:]) }); err != nil {
			fmt.Fprintf(&out, "error: %v\n", err)
		}
		s.syncConfig(n)
		s.drain()
	case "probe":
		var targets []*simNode
		if args[0] == "all" {
			targets = s.live()
		} else {
			for _, id := range strings.Split(args[0], ",") {
				targets = append(targets, s.node(id))
			}
		}
		for _, n := range targets {
			n.m.LocalProbe(args[1], args[2] == "up")
		}
		s.drain()
	case "declare-dead":
		// args[0] saw args[1]'s mirroring connection close: it declares it
		// dead at once and tells the cluster.
		n := s.node(args[0])
		n.m.DeclareDead(args[1])
		s.send(n.id, Message{Type: MsgDead, From: n.id, Dead: args[1]})
		s.drain()
	case "drain", "undrain":
		s.node(args[0]).m.SetDrained(f[0] == "drain")
		s.drain()
	case "pair-role":
		// args[0] gossips its pair role (mirror.Role numbering) and epoch.
		role, _ := strconv.Atoi(args[1])
		epoch, _ := strconv.Atoi(args[2])
		s.node(args[0]).m.SetPairRole(uint8(role), uint64(epoch))
		s.drain()
	case "deliver":
		s.deliver()
	case "tick":
		k := 1
		if len(args) > 0 {
			k, _ = strconv.Atoi(args[0])
		}
		for i := 0; i < k; i++ {
			for _, n := range s.live() {
				n.m.Tick()
			}
			s.drain()
			s.deliver()
			s.antiEntropy()
		}
	case "show":
		s.show(&out, args)
	default:
		s.t.Fatalf("unknown command %q", cmd)
	}
	return out.String()
}

func (s *sim) show(out *strings.Builder, args []string) {
	switch args[0] {
	case "tables":
		digests := map[string][]string{}
		for _, n := range s.live() {
			d := n.m.TablesDigest()[:12]
			digests[d] = append(digests[d], n.id)
		}
		if live := s.live(); len(live) > 0 {
			for _, t := range live[0].m.Tables() {
				fmt.Fprintf(out, "%s: %s\n", live[0].id, formatTable(&t))
			}
		}
		keys := make([]string, 0, len(digests))
		for d := range digests {
			keys = append(keys, d)
		}
		slices.Sort(keys)
		for _, d := range keys {
			fmt.Fprintf(out, "tables digest %s on %s\n", d, strings.Join(digests[d], ","))
		}
	case "vips":
		for _, n := range s.live() {
			fmt.Fprintf(out, "%s: %v\n", n.id, n.m.Announced())
		}
	case "members":
		for _, ms := range s.node(args[1]).m.Members() {
			d := ms.Digest
			if len(d) > 8 {
				d = d[:8]
			}
			fmt.Fprintf(out, "%s %s pair=%s digest=%s proto=%d drained=%v\n", ms.ID, ms.State, pairName(ms.Pair), d, ms.ProtoVersion, ms.Drained)
		}
	case "pairs":
		fmt.Fprintln(out, formatPairs(s.node(args[1]).m.Pairs()))
	case "health":
		for _, h := range s.node(args[1]).m.ServiceHealth() {
			fmt.Fprintf(out, "%s up=%v votes=%v voters=%d live=%d\n", h.Service, h.Up, h.UpVotes, h.Voters, h.Live)
		}
	case "config":
		n := s.node(args[1])
		fmt.Fprintf(out, "digest %s\n", n.store.Digest()[:12])
		for _, p := range n.store.Problems() {
			fmt.Fprintf(out, "problem: %s: %v\n", p.Object, p)
		}
	case "owner":
		port, _ := strconv.Atoi(args[3])
		pid, node, err := s.node(args[1]).m.Owner(netip.MustParseAddr(args[2]), uint16(port))
		if err != nil {
			fmt.Fprintf(out, "error: %v\n", err)
		} else {
			fmt.Fprintf(out, "pair %s node %s\n", pairName(pid), node)
		}
	default:
		s.t.Fatalf("unknown show %q", args[0])
	}
}

func pairName(id uint32) string {
	if id >= AutoPairBase {
		return fmt.Sprintf("auto%d", id-AutoPairBase)
	}
	return strconv.Itoa(int(id))
}

// runEdit applies a small clusterctl-like command to c:
//
//	add service NAME IP TYPE PORT [usip=yes]
//	add vserver NAME TYPE VIP PORT [method=M] [persistence=P] [failover=F]
//	set service NAME usip=yes|no
//	set vserver NAME [method=M] [persistence=P] [failover=F]
//	bind VS SVC [weight=N] | unbind VS SVC
//	rm service NAME | rm vserver NAME
func runEdit(c *Config, f []string) error {
	opts, a := kv(f)
	switch {
	case a[0] == "add" && a[1] == "service":
		t, err := ParseServiceType(a[4])
		if err != nil {
			return err
		}
		port, err := ParsePort(a[5])
		if err != nil {
			return err
		}
		ip, err := netip.ParseAddr(a[3])
		if err != nil {
			return err
		}
		usip, _ := ParseYesNo(orDefault(opts["usip"], "no"))
		return c.AddService(Service{Name: a[2], IP: ip, Type: t, Port: port, USIP: usip})
	case a[0] == "add" && a[1] == "vserver":
		t, err := ParseServiceType(a[3])
		if err != nil {
			return err
		}
		port, err := ParsePort(a[5])
		if err != nil {
			return err
		}
		vip, err := netip.ParseAddr(a[4])
		if err != nil {
			return err
		}
		v := VServer{Name: a[2], Type: t, VIP: vip, Port: port}
		setVServer(&v, opts)
		return c.AddVServer(v)
	case a[0] == "set" && a[1] == "service":
		s, ok := c.Service(a[2])
		if !ok {
			return ErrNotFound
		}
		s.USIP, _ = ParseYesNo(orDefault(opts["usip"], "no"))
	case a[0] == "set" && a[1] == "vserver":
		v, ok := c.VServer(a[2])
		if !ok {
			return ErrNotFound
		}
		setVServer(v, opts)
	case a[0] == "bind":
		w, _ := strconv.Atoi(orDefault(opts["weight"], "1"))
		return c.AddBinding(Binding{VServer: a[1], Service: a[2], Weight: uint32(w)})
	case a[0] == "unbind":
		return c.RemoveBinding(a[1], a[2])
	case a[0] == "rm" && a[1] == "service":
		return c.RemoveService(a[2])
	case a[0] == "rm" && a[1] == "vserver":
		return c.RemoveVServer(a[2])
	default:
		return fmt.Errorf("unknown edit %q", strings.Join(f, " "))
	}
	return nil
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func setVServer(v *VServer, opts map[string]string) {
	if m, ok := opts["method"]; ok {
		v.LBMethod = LBMethod(m)
	}
	if p, ok := opts["persistence"]; ok {
		v.Persistence = Persistence(p)
	}
	if x, ok := opts["failover"]; ok {
		v.ConnFailover = ConnFailover(x)
	}
}

type scenarioCase struct {
	comments []string
	cmd      string
	want     string
}

func parseScenario(t *testing.T, path string) []scenarioCase {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []scenarioCase
	var cur scenarioCase
	inOut := false
	var outLines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case inOut && line == "":
			cur.want = strings.Join(outLines, "\n")
			cases = append(cases, cur)
			cur, outLines, inOut = scenarioCase{}, nil, false
		case inOut:
			outLines = append(outLines, line)
		case line == "----":
			if cur.cmd == "" {
				t.Fatalf("%s: ---- without a command", path)
			}
			inOut = true
		case strings.HasPrefix(line, "#") || line == "":
			cur.comments = append(cur.comments, line)
		default:
			if cur.cmd != "" {
				t.Fatalf("%s: two commands without ----: %q, %q", path, cur.cmd, line)
			}
			cur.cmd = line
		}
	}
	if inOut {
		cur.want = strings.Join(outLines, "\n")
		cases = append(cases, cur)
	}
	return cases
}

func TestScenarios(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios: %v", err)
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			cases := parseScenario(t, path)
			s := newSim(t)
			var rewritten strings.Builder
			for _, c := range cases {
				got := strings.TrimRight(s.run(c.cmd), "\n")
				if *rewrite {
					for _, l := range c.comments {
						rewritten.WriteString(l + "\n")
					}
					fmt.Fprintf(&rewritten, "%s\n----\n", c.cmd)
					if got != "" {
						rewritten.WriteString(got + "\n")
					}
					rewritten.WriteString("\n")
					continue
				}
				if got != c.want {
					t.Fatalf("%s: %s\n got:\n%s\nwant:\n%s", path, c.cmd, got, c.want)
				}
			}
			if *rewrite {
				if err := os.WriteFile(path, []byte(rewritten.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestMachinesConvergeProperty: random joins, failures, restarts, probe
// verdicts and edits on five simulated nodes; once every message is
// delivered, all live nodes hold the same document and compute the same
// tables, equal to ComputeTables of that document and the majority rule.
func TestMachinesConvergeProperty(t *testing.T) {
	withBackends, withDown := 0, 0 // the runs must not all be trivial
	defer func() {
		if !t.Failed() && (withBackends < 10 || withDown < 10) {
			t.Errorf("only %d runs ended with a programmed backend and %d with a DOWN one", withBackends, withDown)
		}
	}()
	for seed := uint64(0); seed < 30; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			s := newSim(t)
			for i := 1; i <= 5; i++ {
				s.run(fmt.Sprintf("add-node n%d", i))
			}
			s.run("edit n1 add vserver vs1 ANY 203.0.113.10 80 method=SRCIPSRCPORTHASH failover=STATELESS")
			s.run("edit n1 add vserver vs2 TCP 203.0.113.11 80 method=ROUNDROBIN failover=STATEFUL")
			for b := 0; b < 4; b++ {
				s.run(fmt.Sprintf("edit n1 add service a%d 10.0.2.%d ANY 8080 usip=yes", b, 10+b))
				s.run(fmt.Sprintf("edit n1 add service t%d 10.0.3.%d TCP 80", b, 10+b))
			}
			s.run("deliver")
			for step := 0; step < 60; step++ {
				id := fmt.Sprintf("n%d", 1+rng.IntN(5))
				n := s.nodes[id]
				switch r := rng.IntN(10); {
				case r < 4 && !n.down:
					svc := fmt.Sprintf("%c%d", "at"[rng.IntN(2)], rng.IntN(4))
					s.run(fmt.Sprintf("probe %s %s %s", id, svc, []string{"up", "down"}[rng.IntN(2)]))
				case r < 6 && !n.down:
					b := rng.IntN(4)
					switch rng.IntN(3) {
					case 0:
						s.run(fmt.Sprintf("edit %s bind vs1 a%d weight=%d", id, b, 1+rng.IntN(3)))
					case 1:
						s.run(fmt.Sprintf("edit %s bind vs2 t%d", id, b))
					default:
						s.run(fmt.Sprintf("edit %s unbind vs%d %c%d", id, 1+rng.IntN(2), "at"[rng.IntN(2)], b))
					}
				case r < 7 && !n.down && len(s.live()) > 2:
					s.run("fail " + id)
				case r < 8 && n.down:
					s.run("restart " + id)
				case r < 9:
					s.run("deliver")
				default:
					s.run("tick")
				}
			}
			s.run("deliver")
			s.run("tick 6") // health re-gossip repairs what a failure dropped
			live := s.live()
			want := live[0]
			cfg := want.store.Config()
			for _, n := range live[1:] {
				if n.store.StateDigest() != want.store.StateDigest() {
					t.Fatalf("%s and %s hold different documents", want.id, n.id)
				}
				if n.m.TablesDigest() != want.m.TablesDigest() {
					t.Fatalf("%s and %s compute different tables:\n%v\n%v", want.id, n.id, want.m.ServiceHealth(), n.m.ServiceHealth())
				}
			}
			up := map[string]bool{}
			for _, h := range want.m.ServiceHealth() {
				up[h.Service] = 2*len(h.UpVotes) > h.Voters
			}
			ts, err := ComputeTables(cfg, up, nil, scenarioTableSize)
			if err != nil {
				t.Fatal(err)
			}
			if TablesDigest(ts) != want.m.TablesDigest() {
				t.Fatal("machine tables differ from ComputeTables of the agreed state")
			}
			hasUp, hasDown := false, false
			for _, tb := range ts {
				for _, w := range tb.Weights {
					hasUp = hasUp || w > 0
					hasDown = hasDown || w == 0
				}
			}
			if hasUp {
				withBackends++
			}
			if hasDown {
				withDown++
			}
		})
	}
}
