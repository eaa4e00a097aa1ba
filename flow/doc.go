// Package flow is Tandem's data plane: the XDP program in flow/bpf
// (compiled by bpf2go, see gen.go; the generated lb_bpfel.go and .o are
// committed so that building needs no clang) and Datapath, the Go type that
// owns every kernel object it needs.
//
// The control plane drives a Datapath with a handful of calls: SetVServer,
// SetBackend, SetReverse, SetTable (write the idle half of a vserver's Maglev
// table, then flip one word with a new epoch), the Delete* counterparts,
// VServerCounters / BackendCounters / Reasons / Flows / LookupFlow to
// observe, Attach / Detach / Close.
//
// # What the program does
//
// client -> VIP:port. The vserver is looked up by (VIP, port, protocol),
// exact port first, then port 0 ("*"). A vserver of type ANY is written as
// one entry per protocol (TCP and UDP), so the lookup stays two hash lookups
// at most. A flow-table hit forwards to the recorded backend. On a miss a
// STATELESS vserver takes slot hashing.PacketHash(seed, client, port,
// withPort) % M of its active table, records the flow and forwards. Mode nat
// with USIP: destination address and port rewritten, client source kept,
// IPv4 header and TCP/UDP checksums updated incrementally (an IPv4 UDP
// checksum of 0 stays 0; a computed 0 is sent as 0xffff). Owned vservers
// take the stateful path below; a vserver neither STATELESS nor Owned
// passes to the kernel (ReasonPassNotStateless). DSR is reserved (ModeDSR
// packets are dropped and counted).
//
// Untracked STATELESS vservers (VServer.Untracked, an option, off by
// default) record no flow: every packet takes its backend from the active
// table, so a table change moves the flows of the slots that changed
// instead of keeping them on their recorded backend.
//
// # The hit path (fast.go)
//
// xdp_lb, the attached program, decides the two commonest cases itself with
// no hash lookup and no function call, and tail-calls xdp_full (all of the
// above and below) for everything else:
//
//   - a TCP (not SYN) or UDP packet of a STATELESS flow in this CPU's hot
//     cache: a direct-mapped array of Config.HotCacheSize slots per CPU
//     (default 4096, 104 bytes each) holding the 5-tuple and what
//     forwarding needs (backend address and port, checksum deltas, egress
//     interface and MACs, the largest length the route accepted, vserver and
//     backend ids). xdp_full fills it at a recorded flow's second packet
//     (untracked: its first), from the FIB cache's answer. It is forwarded
//     and counted exactly as xdp_full would (ReasonFwdHit);
//   - a TCP or UDP packet whose destination and source both miss the
//     address filter (one bit per hash of every VIP and service address):
//     passed, ReasonPassNotOurs.
//
// Only untagged frames, IPv4 without options or fragments and IPv6 without
// extension headers are looked at there. A hot entry is valid under the
// cache generation it was made in: the Datapath bumps it after every change
// of a vserver, backend, table or flow it makes, and every FIBCacheTTL, so
// a change reaches every flow at its next packet, and a route or neighbour
// change within FIBCacheTTL as before. Every active flow thus goes through
// xdp_full once per FIBCacheTTL, which refreshes its flow-table entry (seen
// time, LRU recency); a recorded flow the LRU evicted meanwhile is
// forwarded from the hot cache until then, and recorded again at that
// packet. A FIBCacheTTL < 0 disables the hot cache too.
//
// # The stateful path (Owned vservers; stateful.go, events.go)
//
// An Owned vserver's flow belongs to a pair: hashing.Owner((client address,
// client port), live pairs of SetPairs), computed in BPF bit for bit (tested
// over 10,000 keys), and within the pair to its active member (Pair.Local
// on that node). At any other node the packet is steered to the owner: the
// IP packet is encapsulated with bpf_xdp_adjust_head in Ethernet, an outer
// IPv4 or IPv6 header (own backplane address -> the owner's), UDP (source
// port from the owner key hash for the backplane's ECMP, destination
// Config.SteerPort, checksum 0) and an 8-byte Tandem header (version 1,
// flags: 1 = reply, reserved, pair id), then redirected after a fib lookup
// (ReasonFwdSteer). The overhead is 36 bytes over IPv4, 56 over IPv6; VLAN
// tags are not carried. The owner's program accepts steered packets only
// from cluster members' backplane addresses (SetBackplane; else
// ReasonDropSteerPeer), strips the header and handles the inner packet as
// its owner, never steering it again (ReasonSteerLoop counts those its own
// pairs map would have sent elsewhere, during a takeover). Of those, only a
// TCP SYN may open a flow there; a UDP datagram or a reply without an entry
// is dropped (ReasonDropNotOwner): its flow lives at the old owner or in the
// standby store being installed, and must get no fresh backend nor leave
// un-rewritten. No kernel tunnel is involved.
//
// At the owner, a flow-table miss creates the entry on the first packet —
// for TCP only on a SYN: any other packet of an unknown flow passes to the
// kernel (ReasonPassNoFlow) and is never given a fresh backend. The backend
// is the vserver's Maglev slot (SOURCEIPHASH, SRCIPSRCPORTHASH), the next
// of its list in turn (ROUNDROBIN: one shared position per vserver), or the
// backend of its list with the fewest active owned flows on this node
// (LEASTCONNECTION: a per-backend counter, +1 on create, -1 on the flow's
// first FIN or RST, recounted from the flow table by ReconcileConns for
// flows that end otherwise). A reply entry (rflows, keyed by the reply's
// 5-tuple) rewrites backend -> client packets back to VIP:vport; replies
// reaching a node without that entry are steered by (destination,
// destination port), the same owner key, so both directions meet at the
// owner whatever the routers' ECMP does. USIP OFF (VServer.SNAT): the
// source becomes the owner pair's SNIP of the packet's family (Pair.SNIPs:
// at most one IPv4 and one IPv6; none of that family: ReasonDropNoSNAT)
// and a free port of the pair's range, which each SNIP has whole (the
// reply entry is (backend, SNIP:port), taken with BPF_NOEXIST); replies to
// a SNIP are routed to the pair's active member, which announces its
// SNIPs, and are never steered.
//
// New and closed flows of mirrored vservers (VServer.Mirror, connFailover
// STATEFUL) are written to a BPF ring buffer (Events); a full ring is
// counted (ReasonEventLost) and healed by the mirror's periodic refresh,
// which reads the flow table in batches (OwnedFlows). A takeover
// (InstallRecords, through Installer) reads the standby store's records in
// place and writes the partner's mirrored flows, and the reply entries of
// those that need one, with one batch update per map, batch and writer, two
// writers in parallel. BenchmarkTakeover on this machine: 1,000,000 USIP ON
// flows in 0.75-0.82 s, 100,000 in 0.06 s; 1,000,000 USIP OFF flows, each
// with its reply entry, in 1.15-1.28 s.
//
// # FTP (ftp.go; ftp_alg, handle_ftp_data, handle_ftp_data_reply in lb.c)
//
// An FTP vserver (VServer.FTP: Owned, TCP) forwards its control connection
// as an owned flow whose owner key is the client's address alone
// (hashing.OwnerKey with port 0), so that its data connections, whose
// ports no other node knows, are steered to the same owner. At the owner,
// after a control packet is rewritten and sent (the redirect takes effect
// when the program returns, so the expectation exists before a 227 reaches
// the client), ftp_alg runs the parser of flow/bpf/ftp.h on its payload:
// PORT and EPRT from the client, 227 and 229 from the backend, one line
// per segment. A valid line inserts an expectation in an LRU hash
// (Config.FTPExpectations, Config.FTPExpectTTL = 30s):
//
//   - passive: client:any -> VIP:port, to the control connection's backend
//     on that port (the backend advertises the VIP: vsftpd pasv_address);
//   - active: backend:any -> client:port, to leave from the VIP.
//
// The first packet of a data connection, a SYN, consumes it (once; past the
// TTL it is counted expired) and opens an owned flow of the vserver to the
// data backend (DataBackendID: the backend's address on any port), with its
// reply entry, its owner pair, an event on the ring (mirrored vservers) and
// source NAT for a passive connection of a USIP OFF vserver. Data
// connections translate addresses, never ports: an active one leaves from
// VIP:<the backend's source port>, 20 with vsftpd's connect_from_port_20.
// TCP to an FTP VIP on a port without vserver, and from an FTP backend on a
// port without reverse entry, is looked at as a possible data connection
// (ADDR_F_FTP); without flow or expectation it passes, as before. A data
// connection's bytes are never parsed. Lines that create nothing (too long,
// cut short, syntax, range, family, an address other than the VIP or the
// client) are counted by kind and reason (ALGCounters). Expectations of
// mirrored vservers go on the events ring too (EventExpect) and travel to
// the partner as mirror entries (FlowFlagFTPExpect); InstallExpectations
// writes them at a takeover, with the time they had left, beside the
// control and data flows that InstallFlows writes. SweepExpectations, run
// periodically by the node, frees expectations past their deadline or of
// closed control connections. The payload is never rewritten, so there are
// no sequence adjustments to mirror.
//
// backend -> client. A bound service (address, port, protocol) belongs to
// exactly one STATELESS vserver, so the source is rewritten back to
// VIP:vport from the reverse map, on any node, with no flow state. A service
// or vserver on port "*" keeps the packet's port.
//
// ICMP errors (IPv4 destination unreachable, including fragmentation
// needed; ICMPv6 destination unreachable and packet too big) about VIP flows
// are translated so that path-MTU discovery works through the cluster:
//
//   - addressed to a VIP and quoting VIP:vport -> client: sent to the
//     backend of that flow (flow table, else the vserver's table), the outer
//     destination and the quoted source rewritten to the backend;
//   - addressed to a client and quoting client -> backend:port of a bound
//     service: sent to the client, the quoted destination rewritten back to
//     VIP:vport and the outer source set to the VIP.
//
// The outer IPv4 header, the quoted IPv4 header, the quoted TCP/UDP checksum
// (when quoted) and the ICMP checksum (for ICMPv6 with its pseudo-header)
// are all updated. Other ICMP to a VIP (echo...) passes to the kernel.
//
// Fragments. A non-first fragment has no ports, so neither a vserver's port
// nor SRCIPSRCPORTHASH can apply to it. Fragments for a VIP are forwarded
// only by a wildcard-port STATELESS vserver with SOURCEIPHASH, and then
// every fragment of a datagram (first and later) goes by that vserver to the
// same backend, without a flow entry. Any other fragment for a VIP passes to
// the kernel and is counted (ReasonPassFragment). Likewise, fragments from a
// service are rewritten back to the VIP only when the service is bound on
// any port to a vserver on port "*" (only the address changes); fragments
// from other services pass.
//
// Forwarding. bpf_fib_lookup (before anything is rewritten) gives egress
// interface and MACs; the frame is redirected, or sent back with XDP_TX
// when the egress is the ingress interface. Without a neighbour entry the
// rewritten packet passes to the kernel, which forwards it and resolves the
// neighbour (ReasonPassNoNeigh). A packet longer than the route's MTU is
// dropped (ReasonDropFragNeeded); other failures drop (ReasonDropFIB). A
// successful lookup is cached per CPU for Config.FIBCacheTTL (default 1s),
// and at most until the next cache generation, for the same destination and
// ingress interface (per backend in an array for client -> backend, in an
// LRU hash for other destinations), and reused only for packets no longer
// than one the kernel accepted. TTL and hop limit are not decremented:
// the node rewrites like a NAT middlebox, not like a router. VLAN tags are
// parsed (802.1Q, and QinQ with an 802.1ad outer tag) and kept as they are.
//
// Malformed or truncated frames are never forwarded and never altered: for a
// VIP they are dropped, otherwise passed, and counted by reason either way.
// Checksums are not verified (a frame with a wrong checksum keeps it wrong).
// IPv6 extension headers (hop-by-hop, routing, destination options,
// fragment) are followed up to four; a fifth makes the packet malformed.
//
// # Map layout
//
// Tables are double-buffered in one flat BPF array of backend ids: vserver
// id's half h is at ((id*2 + h) * M). A per-vserver word holds
// (epoch << 1) | active half; SetTable writes the idle half, then that one
// aligned word. Memory is MaxVServers*2*M*4 bytes (34 MB with the
// defaults), sized at load. Backend id 0 means "no backend" (the packet is
// dropped, ReasonDropNoBackend). The flow table is an LRU hash keyed by the
// 5-tuple; its value holds backend, vserver, table epoch, flags, owner
// pair, source NAT and timestamps; rflows, the reply entries of owned flows,
// is an LRU hash of the same size. Counters are per-CPU arrays, summed by
// the readers here. The hot cache is one flat array of
// HotCacheSize*CPUs entries (CPU c's slots from c*HotCacheSize; 832 KiB
// with the defaults on 2 CPUs); the cache generation (cfg_gen) and the
// address filter (addr_filter, 2^16 bits) are arrays the Datapath writes;
// progs holds xdp_full and is set at load.
//
// # Performance
//
// go test -run '^$' -bench . ./flow/ runs each packet once per
// BPF_PROG_TEST_RUN and subtracts an XDP_PASS program run on the same frame
// in the same loop (ns/pkt-net; the baseline itself is 85-95 ns); see
// bench_test.go. On the development VM (2 vCPUs of an AMD EPYC under
// nested virtualisation, kernel 6.18, retpolines and the Safe-RET SRSO
// mitigation, so every call and return costs), 5 runs of 20,000 packets
// each alternating with the previous design's binary, median, while other
// jobs shared the machine (load average 2.7-4), previous design -> this
// one:
//
//	flow-table hit, IPv4 TCP     194 -> 50 ns   (target 55)
//	flow-table hit, IPv6 TCP     212 -> 51 ns
//	non-VIP pass                 116 -> 17 ns   (warm caches: 96 -> 12)
//	backend -> client rewrite    301 -> 306 ns  (path unchanged then; see Replies)
//	miss, flow recorded          506 -> 533 ns  (target 65: see below)
//	miss, Untracked vserver        -  -> 316 ns
//
// Under heavier load (6-7) the same runs gave 53, 55, 15, 309, 730 and 376
// ns. The hit is near its target rather than well under it: 10 more runs
// of the hit benchmarks alone (load 3) gave IPv4 45-62 ns, median 53, and
// IPv6 44-78 ns, median 51. A hit costs one array read (the hot slot) and no hash lookup: on
// this machine the flow table's LRU hash lookup alone took 40-50 ns
// (jhash, a call to memcmp, returns through the SRSO thunk), the vserver
// lookup as much, a BPF function call 15-25 ns and a helper call 20-30 ns
// (bpf_ktime_get_coarse_ns about 30: the hit path reads no clock;
// bpf_redirect about 20, which it cannot avoid).
//
// Replies: a stateless reply (backend -> client) enters the hot cache at
// its first packet with the route answer it used (handle_reverse calls
// hot_set with rev set), and the flow's later replies are rewritten by
// xdp_lb's fast path like hits (the source becomes VIP:vport). The reverse
// entries and the local addresses are part of the cache generation.
//
// Session of 2026-12-06, another VM (2 vCPUs, Intel Xeon), quiet, 20,000
// packets: hit 33 ns (IPv6 38), reply of an established flow 37 ns (the
// hot cache; a SYN-ACK, which takes the full path, 116), non-VIP pass 14
// ns (warm 8), miss with the flow recorded 391 ns, Untracked miss 179 ns.
//
// A miss is dominated by memory no earlier packet touched: a cold cache
// line or page costs 100-150 ns here (a probe of a random hot-cache slot
// measured 130 ns; hence no probe for a TCP SYN). Cut short at points of
// the tracked miss path (throwaway builds, quiet machine): 110 ns to the
// flow-table lookup (xdp_lb's parse and filter, the tail call, parse,
// vserver lookup), 220 more to the insert (the lookup of an absent key in
// the 1M-entry table, whose bucket is cold, then the Maglev slot and the
// route), 160 for the LRU insert, 35 for the rewrite, counters and
// redirect. 65 ns per miss with a recorded flow is out of reach on this
// machine. An Untracked vserver (an option, off by default) saves the
// lookup and the insert, and pays a write of the hot slot instead; it
// gives up the record, so a table change moves the flows of the slots
// that changed instead of keeping them on their backend.
package flow
