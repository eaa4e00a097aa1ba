// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * Tandem's XDP data plane.
 *
 * One program, xdp_lb, runs on the node's front, back and backplane
 * interfaces:
 *
 *   client -> VIP:port      vserver lookup (exact port, then "*"), flow table
 *                           (LRU), on a miss the vserver's Maglev table with
 *                           the packet hash; NAT with USIP: destination
 *                           rewritten to the backend, client source kept.
 *   backend -> client       the service (address, port, protocol) is bound to
 *                           exactly one STATELESS vserver: the source is
 *                           rewritten back to VIP:vport with no flow state.
 *   ICMP errors             translated so that path-MTU discovery works
 *                           through the cluster (see handle_icmp).
 *   owned vservers          flows kept by their owner pair's active member,
 *                           steered to it over the backplane in Tandem's own
 *                           UDP encapsulation (see handle_owned, steer,
 *                           handle_decap); new and closed flows reported on
 *                           the events ring.
 *
 * Everything else passes to the kernel untouched. Malformed frames are never
 * forwarded: for a VIP they are dropped, otherwise passed, and counted by
 * reason either way.
 *
 * Maps (sizes are set by the Go loader from its Config):
 *   vservers      HASH  vs_key -> vserver. Type ANY is one entry per protocol.
 *   addrs         HASH  addr_key -> ADDR_F_VIP|ADDR_F_BACKEND|ADDR_F_LOCAL: tells cheaply
 *                 whether an address is a VIP (malformed frames, "*" lookups)
 *                 or a service (reverse path).
 *   backends      ARRAY backend id -> backend; id 0 is "no backend".
 *   reverse       HASH  rev_key -> rev: service -> its vserver's VIP:vport.
 *   flows         LRU_HASH flow_key -> flow.
 *   tables        ARRAY of backend ids, index ((vs_id*2 + half)*M + slot):
 *                 two halves per vserver, one flat array that scales with
 *                 max_vservers*2*M entries of 4 bytes.
 *   table_active  ARRAY vs_id -> word: bit 0 = active half, bits 1..31 = the
 *                 epoch of the table in that half. The control plane writes
 *                 the idle half, then this one aligned word, so a packet
 *                 reads either the old or the new table, never a mix.
 *   reasons       PERCPU_ARRAY reason -> packets.
 *   fib_cache     LRU_PERCPU_HASH (destination, ingress ifindex) -> the last
 *                 successful bpf_fib_lookup (egress, MACs, largest length
 *                 accepted), reused for fib_cache_ns: a route lookup costs
 *                 more than the rest of the fast path together.
 *   backend_fib   PERCPU_ARRAY backend id -> the same, for client -> backend
 *                 (an array lookup instead of a hash lookup).
 *   vserver_stats, backend_stats  PERCPU_ARRAY per vserver / backend counters.
 *   pairs, self   ARRAY: the pairs (id, live, active member's backplane
 *                 address, local, a SNIP per family and the port range)
 *                 and this node's
 *                 backplane address, written from membership.
 *   rflows        LRU_HASH reply 5-tuple -> rflow: replies of owned flows.
 *   vs_lists, rr_next, be_conns  ROUNDROBIN / LEASTCONNECTION state.
 *   snat_next     ARRAY pair index -> SNAT port cursor.
 *   events        RINGBUF of flow_event: new and closed mirrored flows.
 *   vs_byid       ARRAY vs_id -> vserver (FTP data connections have no
 *                 vserver entry of their own).
 *   expects       LRU_HASH expect_key -> expect: FTP data connections the
 *                 ALG waits for (see handle_ftp_data).
 *   ftp_scratch, ftp_pending  PERCPU_ARRAY: the ALG parser's working memory
 *                 and the control packet it is to read.
 *   ftp_vips      HASH addr_key -> the VIPs of the FTP vservers a backend
 *                 address serves (rebuilding data reply entries).
 *   alg_stats     PERCPU_ARRAY alg_counter -> count.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/icmpv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb.h"
#include "hash.h"
#include "csum.h"
#include "ftp.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* <linux/icmp.h> drags in libc headers; the one constant we need: */
#define ICMP_DEST_UNREACH 3
#define AF_INET 2
#define AF_INET6 10
#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8
#define MAX_VLAN 2
#define MAX_EXT 4
#define FRAG_FIRST 1
#define FRAG_LATER 2

/* Handlers are global BPF functions: the verifier checks each once, on its
 * own, instead of once per path through every inlined copy (which, inlined,
 * came within a few thousand instructions of the 1M processed-instruction
 * limit). Their pointer arguments may be NULL as far as it knows. */
#define HANDLER __attribute__((noinline))

/* barrier_var (bpf_helpers.h) keeps the compiler from dropping a bounds
 * mask the verifier needs. */

/* Handlers return an XDP verdict, or STEER_CODE: "steer this packet to the
 * pair at index idx" (reply: a backend -> client packet), which dispatch
 * carries out in steer(). Steering from inside the handlers would stack
 * their frames on steer's beyond BPF's 512-byte limit. */
#define STEER_FLAG 0x100
/* handle_reverse: "a reply of an owned vserver", for handle_owned_reply. */
#define OWNED_REPLY_FLAG 0x200
#define OWNED_REPLY_CODE(vs_id) (OWNED_REPLY_FLAG | ((vs_id) << 16))
#define STEER_CODE(idx, reply, vs_id) \
	(STEER_FLAG | (((idx) & (MAX_PAIRS - 1)) << 1) | ((reply) ? 1 : 0) | ((vs_id) << 16))
/* FTP (see handle_ftp_data): OWNED_REPLY_CODE of an FTP vserver's control
 * connection (the ALG reads it) or of a data connection; "maybe an FTP
 * data packet from a backend"; "an FTP data packet of vserver vs_id, for
 * handle_owned"; and, on a verdict, "run ftp_alg on this packet". */
#define OWNED_REPLY_FTP 0x400
#define OWNED_REPLY_DATA 0x800
#define FTP_DATA_REPLY_CODE 0x1000
#define FTP_OWNED_FLAG 0x2000
#define FTP_OWNED_CODE(vs_id) (FTP_OWNED_FLAG | ((vs_id) << 16))
#define FTP_ALG_FLAG 0x4000
/* vs_id of verdicts that belong to no known vserver (counted globally). */
#define VS_NONE 0x7fff

/* M, the number of slots of every Maglev table. Set by the loader. */
volatile const __u32 table_size = 65537;

/* How long a bpf_fib_lookup result is reused for a destination; 0 disables
 * the cache. Set by the loader. */
volatile const __u64 fib_cache_ns = 1000000000ULL;

/* Slots of the hot cache per CPU, a power of two; 0 disables it. Set by the
 * loader. */
volatile const __u32 hot_slots = 4096;

/* The UDP port of Tandem's steering encapsulation, network order; 0
 * disables steering and decapsulation. Set by the loader. */
volatile const __u16 steer_port = 0;

/* How long an FTP expectation waits for its data connection. Set by the
 * loader. */
volatile const __u64 ftp_expect_ns = 30000000000ULL;

/* The data backend of backend id b is b + data_backend_base: the same
 * address on any port (an FTP data connection keeps its ports). Set by the
 * loader to MaxBackends. */
volatile const __u32 data_backend_base = 4096;

/* Seed of the owner key hash: hashing.OwnerSeed. */
#define OWNER_SEED 0x6f776e72

/* Not read by the program: puts the enums into BTF so bpf2go mirrors them. */
volatile const enum reason reason_count = REASON_MAX;
volatile const enum method method_unused = METHOD_SOURCEIP;
volatile const enum event_type event_type_unused = EVENT_NEW;
volatile const enum alg_counter alg_counter_unused = ALG_MAX;
const struct flow_event *flow_event_unused __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct vs_key);
	__type(value, struct vserver);
	__uint(max_entries, 128);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} vservers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct addr_key);
	__type(value, __u32);
	__uint(max_entries, 4096);
} addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct backend);
	__uint(max_entries, 4096);
} backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct rev_key);
	__type(value, struct rev);
	__uint(max_entries, 4096);
} reverse SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct flow_key);
	__type(value, struct flow);
	__uint(max_entries, 65536);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 64 * 2 * 65537);
} tables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 64);
} table_active SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, REASON_MAX);
} reasons SEC(".maps");

/* The configuration generation, bumped by the control plane after every
 * change of a vserver or a backend: a flow's forwarding cache is used only
 * under the generation it was made in. Read before the vserver and backend
 * they were made from, so that a cache is never tagged newer than its data. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
} cfg_gen SEC(".maps");

/* One bit per hash of each VIP and bound service address (filter_bit): a
 * packet whose destination and source bits are both clear is neither for a
 * VIP nor from a service, which two array reads tell instead of three hash
 * lookups. A set bit proves nothing; the exact lookups follow. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, ADDR_FILTER_WORDS);
} addr_filter SEC(".maps");

/* The hot cache (struct hot_entry): hot_slots slots per CPU, CPU c's at
 * [c*hot_slots, (c+1)*hot_slots) of one flat array, so that a CPU reads
 * and writes only its own. Sized by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct hot_entry);
	__uint(max_entries, 2 * 4096);
} hot SEC(".maps");

/* Per-CPU scratch space: values too large for the handlers' stack frames
 * (BPF's 512 bytes hold the deepest chain of handler frames together). */
struct scratch {
	struct flow nf; /* handle_vserver: a new flow entry */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct scratch);
	__uint(max_entries, 1);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__type(key, struct fib_key);
	__type(value, struct fib_entry);
	__uint(max_entries, 16384);
} fib_cache SEC(".maps");

/* The fib answer for each backend, per CPU: an array lookup the verifier
 * inlines, where fib_cache costs a hash lookup. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct fib_entry);
	__uint(max_entries, 4096);
} backend_fib SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct vs_stats);
	__uint(max_entries, 64);
} vserver_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct be_stats);
	__uint(max_entries, 4096);
} backend_stats SEC(".maps");

/* Stateful data path (see handle_owned). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct pair);
	__uint(max_entries, MAX_PAIRS);
} pairs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct self_cfg);
	__uint(max_entries, 1);
} self SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct flow_key);
	__type(value, struct rflow);
	__uint(max_entries, 65536);
} rflows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct be_list);
	__uint(max_entries, 64);
} vs_lists SEC(".maps");

/* ROUNDROBIN position per vserver, shared by all CPUs, atomically advanced. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 64);
} rr_next SEC(".maps");

/* SNAT port cursor per pair index. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, MAX_PAIRS);
} snat_next SEC(".maps");

/* LEASTCONNECTION: active owned flows per backend, +1 on create, -1 on the
 * first FIN or RST; the control plane reconciles it with the flow table. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __s64);
	__uint(max_entries, 4096);
} be_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

/* FTP ALG (see handle_ftp_data). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct vserver);
	__uint(max_entries, 64);
} vs_byid SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct expect_key);
	__type(value, struct expect);
	__uint(max_entries, 16384);
} expects SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct addr_key);
	__type(value, struct ftp_vip_list);
	__uint(max_entries, 4096);
} ftp_vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct ftp_scratch);
	__uint(max_entries, 1);
} ftp_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct ftp_ctl);
	__uint(max_entries, 1);
} ftp_pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, ALG_MAX);
} alg_stats SEC(".maps");

/* A parsed packet. Offsets are from the start of the frame. */
struct pkt {
	__u32 src[4];
	__u32 dst[4];
	__u32 l3;
	__u32 l4;
	__u32 l3_end; /* end of the IP packet (frames may carry padding) */
	__u16 sport;
	__u16 dport;
	__u8 family;
	__u8 proto;
	__u8 frag;
	__u8 pad;
};

/* The packet quoted by an ICMP error. */
struct inner {
	__u32 src[4];
	__u32 dst[4];
	__u32 l3;
	__u32 l4;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 csum_off; /* offset of the L4 checksum in the L4 header; 0: not quoted */
	__u16 pad;
};

enum pstate {
	P_OK = 0,
	P_NOT_IP,
	P_BAD_L2,
	P_BAD_L3_NODST, /* not even the destination address is readable */
	P_BAD_L3,
	P_BAD_L4,
};

static __always_inline void *ptr_at(struct xdp_md *ctx, __u32 off, __u32 size)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	void *p;

	/* A bound the verifier can carry: it tracks packet ranges only while
	 * offset + size stays under 64 KiB. XDP frames are far shorter. */
	if (off > 0x7fff)
		return NULL;
	p = data + off;
	if (p + size > end)
		return NULL;
	return p;
}

static __always_inline void count(__u32 reason)
{
	__u64 *c = bpf_map_lookup_elem(&reasons, &reason);

	if (c)
		*c += 1;
}

static __always_inline void vs_count(__u32 vs_id, __u32 reason)
{
	struct vs_stats *s = bpf_map_lookup_elem(&vserver_stats, &vs_id);

	if (s && reason < REASON_MAX)
		s->reasons[reason] += 1;
	count(reason);
}

/* be_vs_verdict counts a verdict for a vserver and the backend it chose. */
static __always_inline int be_vs_verdict(__u32 vs_id, __u32 be_id, __u32 reason, int verdict)
{
	struct be_stats *s = bpf_map_lookup_elem(&backend_stats, &be_id);

	if (s && reason < REASON_MAX)
		s->reasons[reason] += 1;
	vs_count(vs_id, reason);
	return verdict;
}

static __always_inline int pass(__u32 reason)
{
	count(reason);
	return XDP_PASS;
}

static __always_inline int drop(__u32 reason)
{
	count(reason);
	return XDP_DROP;
}

static __always_inline int vs_verdict(__u32 vs_id, __u32 reason, int verdict)
{
	vs_count(vs_id, reason);
	return verdict;
}

static __always_inline __u32 addr_flags(const __u32 *addr, __u8 family)
{
	struct addr_key k = {};
	__u32 *f;

	__builtin_memcpy(k.addr, addr, 16);
	k.family = family;
	f = bpf_map_lookup_elem(&addrs, &k);
	return f ? *f : 0;
}

/* filter_bit4 is an address's bit in addr_filter (filterBit in Go): the
 * xor of its four words and its family, through murmur3's finaliser. */
static __always_inline __u32 filter_bit4(__u32 a0, __u32 a1, __u32 a2, __u32 a3, __u8 family)
{
	__u32 x = a0 ^ a1 ^ a2 ^ a3 ^ family;

	x ^= x >> 16;
	x *= 0x85ebca6b;
	x ^= x >> 13;
	x *= 0xc2b2ae35;
	x ^= x >> 16;
	return x & ((1 << ADDR_FILTER_BITS) - 1);
}

/* maybe_ours4: false when the address is certainly neither a VIP nor a
 * bound service. */
static __always_inline int maybe_ours4(__u32 a0, __u32 a1, __u32 a2, __u32 a3, __u8 family)
{
	__u32 b = filter_bit4(a0, a1, a2, a3, family), w = b >> 6;
	__u64 *word = bpf_map_lookup_elem(&addr_filter, &w);

	return word && ((*word >> (b & 63)) & 1);
}

static __always_inline int maybe_ours(const __u32 *a, __u8 family)
{
	return maybe_ours4(a[0], a[1], a[2], a[3], family);
}

static __always_inline int is_vip(const struct pkt *p)
{
	return addr_flags(p->dst, p->family) & ADDR_F_VIP;
}

static __always_inline struct vserver *lookup_vserver(const __u32 *addr, __u16 port, __u8 proto,
						      __u8 family, int wildcard)
{
	struct vs_key k = {};
	struct vserver *vs;

	__builtin_memcpy(k.addr, addr, 16);
	k.port = port;
	k.proto = proto;
	k.family = family;
	vs = bpf_map_lookup_elem(&vservers, &k);
	if (vs || !wildcard || port == 0)
		return vs;
	k.port = 0;
	return bpf_map_lookup_elem(&vservers, &k);
}

static __always_inline struct rev *lookup_reverse(const __u32 *addr, __u16 port, __u8 proto,
						  __u8 family)
{
	struct rev_key k = {};
	struct rev *r;

	__builtin_memcpy(k.addr, addr, 16);
	k.port = port;
	k.proto = proto;
	k.family = family;
	r = bpf_map_lookup_elem(&reverse, &k);
	if (r || port == 0)
		return r;
	k.port = 0;
	return bpf_map_lookup_elem(&reverse, &k);
}

static __always_inline struct backend *lookup_backend(__u32 id)
{
	struct backend *b;

	if (id == 0)
		return NULL;
	b = bpf_map_lookup_elem(&backends, &id);
	if (!b || !(b->flags & BE_F_VALID))
		return NULL;
	return b;
}

/* pick returns the backend id in the active table's slot for a client, and the
 * table's epoch. 0 means no backend. */
static __always_inline __u32 pick(const struct vserver *vs, const __u32 *client, __u8 family,
				  __u16 client_port, __u32 *epoch)
{
	__u32 id = vs->id;
	__u32 *word = bpf_map_lookup_elem(&table_active, &id);
	__u32 w, h, idx, *slot;

	if (!word)
		return 0;
	w = *word;
	*epoch = w >> 1;
	h = packet_hash(vs->seed, client, family == FAMILY_V6, bpf_ntohs(client_port),
			vs->method == METHOD_SOURCEIP_SOURCEPORT);
	idx = (id * 2 + (w & 1)) * table_size + h % table_size;
	slot = bpf_map_lookup_elem(&tables, &idx);
	return slot ? *slot : 0;
}

static __always_inline int parse_l4(struct xdp_md *ctx, struct pkt *p)
{
	if (p->frag == FRAG_LATER)
		return P_OK;
	if (p->proto == IPPROTO_TCP) {
		struct tcphdr *th = ptr_at(ctx, p->l4, sizeof(*th));
		__u32 doff;

		if (!th || p->l4 + sizeof(*th) > p->l3_end)
			return P_BAD_L4;
		doff = th->doff * 4;
		if (doff < sizeof(*th))
			return P_BAD_L4;
		if (!p->frag && p->l4 + doff > p->l3_end)
			return P_BAD_L4;
		p->sport = th->source;
		p->dport = th->dest;
	} else if (p->proto == IPPROTO_UDP) {
		struct udphdr *uh = ptr_at(ctx, p->l4, sizeof(*uh));
		__u32 ulen;

		if (!uh || p->l4 + sizeof(*uh) > p->l3_end)
			return P_BAD_L4;
		ulen = bpf_ntohs(uh->len);
		if (!p->frag && (ulen < sizeof(*uh) || p->l4 + ulen > p->l3_end))
			return P_BAD_L4;
		p->sport = uh->source;
		p->dport = uh->dest;
	} else if ((p->proto == IPPROTO_ICMP && p->family == FAMILY_V4) ||
		   (p->proto == IPPROTO_ICMPV6 && p->family == FAMILY_V6)) {
		if (!ptr_at(ctx, p->l4, 8) || p->l4 + 8 > p->l3_end)
			return P_BAD_L4;
	}
	return P_OK;
}

HANDLER int parse(struct xdp_md *ctx, struct pkt *p)
{
	__u32 frame_len = ctx->data_end - ctx->data;
	struct ethhdr *eth = ptr_at(ctx, 0, sizeof(*eth));
	__u32 off = sizeof(*eth);
	__u16 proto;
	int i;

	if (!p)
		return P_NOT_IP;
	if (!eth)
		return P_BAD_L2;
	proto = eth->h_proto;
#pragma unroll
	for (i = 0; i < MAX_VLAN; i++) {
		if (proto == bpf_htons(ETH_P_8021Q_) || proto == bpf_htons(ETH_P_8021AD_)) {
			__u16 *tag = ptr_at(ctx, off, 4);

			if (!tag)
				return P_BAD_L2;
			proto = tag[1];
			off += 4;
		}
	}
	if (proto == bpf_htons(ETH_P_8021Q_) || proto == bpf_htons(ETH_P_8021AD_))
		return P_BAD_L2;
	p->l3 = off;

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = ptr_at(ctx, off, sizeof(*ip));
		__u32 hlen, tot;
		__u16 fo;

		if (!ip)
			return P_BAD_L3_NODST;
		p->family = FAMILY_V4;
		p->src[0] = ip->saddr;
		p->dst[0] = ip->daddr;
		p->proto = ip->protocol;
		if (ip->version != 4 || ip->ihl < 5)
			return P_BAD_L3;
		hlen = ip->ihl * 4;
		tot = bpf_ntohs(ip->tot_len);
		if (tot < hlen || off + tot > frame_len)
			return P_BAD_L3;
		p->l3_end = off + tot;
		p->l4 = off + hlen;
		fo = bpf_ntohs(ip->frag_off);
		if (fo & 0x1fff)
			p->frag = FRAG_LATER;
		else if (fo & 0x2000)
			p->frag = FRAG_FIRST;
		return parse_l4(ctx, p);
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = ptr_at(ctx, off, sizeof(*ip6));
		__u32 plen;
		__u8 nh;

		if (!ip6)
			return P_BAD_L3_NODST;
		p->family = FAMILY_V6;
		__builtin_memcpy(p->src, &ip6->saddr, 16);
		__builtin_memcpy(p->dst, &ip6->daddr, 16);
		if (ip6->version != 6)
			return P_BAD_L3;
		plen = bpf_ntohs(ip6->payload_len);
		/* payload_len 0 is a jumbogram: not supported, not forwarded */
		if (plen == 0 || off + sizeof(*ip6) + plen > frame_len)
			return P_BAD_L3;
		p->l3_end = off + sizeof(*ip6) + plen;
		off += sizeof(*ip6);
		nh = ip6->nexthdr;
#pragma unroll
		for (i = 0; i < MAX_EXT; i++) {
			if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS) {
				__u8 *oh = ptr_at(ctx, off, 8);

				if (!oh || off + 8 > p->l3_end)
					return P_BAD_L3;
				nh = oh[0];
				off += ((__u32)oh[1] + 1) * 8;
			} else if (nh == IPPROTO_FRAGMENT) {
				__u8 *fh = ptr_at(ctx, off, 8);
				__u16 fo;

				if (!fh || off + 8 > p->l3_end)
					return P_BAD_L3;
				nh = fh[0];
				fo = bpf_ntohs(*(__u16 *)(fh + 2));
				if (fo & 0xfff8)
					p->frag = FRAG_LATER;
				else if (fo & 1)
					p->frag = FRAG_FIRST;
				off += 8;
			}
		}
		if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS ||
		    nh == IPPROTO_FRAGMENT)
			return P_BAD_L3; /* more extension headers than we parse */
		if (off > p->l3_end)
			return P_BAD_L3;
		p->proto = nh;
		p->l4 = off;
		return parse_l4(ctx, p);
	}
	return P_NOT_IP;
}

static __always_inline __u32 cur_gen(void)
{
	__u32 key = 0, *g = bpf_map_lookup_elem(&cfg_gen, &key);

	return g ? *g : 0;
}

/* An answer is good for its destination and ingress interface, until it
 * expires or the cache generation changes (fast.go bumps it every TTL, so
 * that the hot cache's copies of the answers expire too). */
static __always_inline int fib_entry_for(const struct fib_entry *ce, const __u32 *dst,
					 __u32 in_ifindex, __u64 now, __u32 gen)
{
	return now < ce->expires_ns && ce->gen == gen && ce->in_ifindex == in_ifindex &&
	       ce->addr[0] == dst[0] &&
	       ce->addr[1] == dst[1] && ce->addr[2] == dst[2] && ce->addr[3] == dst[3];
}

/* fib looks up the route and neighbour for dst (bpf_fib_lookup), through a
 * per-CPU cache: slot (an entry the caller holds: the backend's backend_fib
 * entry, or dst's fib_cache entry) or, when slot is NULL, fib_cache. A
 * SUCCESS is reused for fib_cache_ns, for the same destination and ingress
 * interface, for packets no longer than one the kernel accepted (so the MTU
 * check still holds). Only ifindex, smac and dmac of fp are meaningful after
 * a cached answer. */
static __always_inline int fib(struct xdp_md *ctx, const struct pkt *p, __u8 proto,
			       const __u32 *src, const __u32 *dst, __u16 sport, __u16 dport,
			       struct bpf_fib_lookup *fp, __u64 now, struct fib_entry *slot)
{
	__u32 len = p->l3_end - p->l3, in = ctx->ingress_ifindex, gen = cur_gen();
	struct fib_entry *ce = slot;
	struct fib_key ck = {};
	int rc;

	if (fib_cache_ns) {
		if (!slot) {
			__builtin_memcpy(ck.addr, dst, 16);
			ck.ifindex = in;
			ck.family = p->family;
			ce = bpf_map_lookup_elem(&fib_cache, &ck);
		}
		if (ce && len <= ce->max_len && fib_entry_for(ce, dst, in, now, gen)) {
			fp->ifindex = ce->ifindex;
			__builtin_memcpy(fp->dmac, ce->dmac, ETH_ALEN);
			__builtin_memcpy(fp->smac, ce->smac, ETH_ALEN);
			return BPF_FIB_LKUP_RET_SUCCESS;
		}
	}
	__builtin_memset(fp, 0, sizeof(*fp));
	fp->ifindex = in;
	fp->l4_protocol = proto;
	fp->sport = sport;
	fp->dport = dport;
	fp->tot_len = len;
	if (p->family == FAMILY_V4) {
		fp->family = AF_INET;
		fp->ipv4_src = src[0];
		fp->ipv4_dst = dst[0];
	} else {
		fp->family = AF_INET6;
		__builtin_memcpy(fp->ipv6_src, src, 16);
		__builtin_memcpy(fp->ipv6_dst, dst, 16);
	}
	rc = bpf_fib_lookup(ctx, fp, sizeof(*fp), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS && fib_cache_ns) {
		struct fib_entry ne = {
			.expires_ns = now + fib_cache_ns,
			.in_ifindex = in,
			.ifindex = fp->ifindex,
			.max_len = len,
			.gen = gen,
		};

		/* a still valid answer for the same path keeps its larger length */
		if (ce && ce->ifindex == fp->ifindex && ce->max_len > len &&
		    fib_entry_for(ce, dst, in, now, gen))
			ne.max_len = ce->max_len;
		__builtin_memcpy(ne.addr, dst, 16);
		__builtin_memcpy(ne.dmac, fp->dmac, ETH_ALEN);
		__builtin_memcpy(ne.smac, fp->smac, ETH_ALEN);
		if (slot)
			*slot = ne;
		else
			bpf_map_update_elem(&fib_cache, &ck, &ne, BPF_ANY);
	}
	return rc;
}

/* fib_refused maps a fib result the packet cannot be forwarded with to the
 * drop reason; 0 when the packet may go on (SUCCESS or NO_NEIGH). */
static __always_inline __u32 fib_refused(int rc)
{
	if (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return 0;
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return REASON_DROP_FRAG_NEEDED;
	return REASON_DROP_FIB;
}

/* send finishes a rewritten packet: new MACs and redirect (XDP_TX when the
 * egress interface is the ingress one), or, without a neighbour entry, the
 * kernel gets the rewritten packet, forwards it and resolves the neighbour. */
static __always_inline int send(struct xdp_md *ctx, int rc, struct bpf_fib_lookup *fp,
				__u32 vs_id, __u32 be_id, __u32 fwd_reason)
{
	struct ethhdr *eth;

	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return be_vs_verdict(vs_id, be_id, REASON_PASS_NO_NEIGH, XDP_PASS);
	eth = ptr_at(ctx, 0, sizeof(*eth));
	if (!eth)
		return XDP_ABORTED;
	__builtin_memcpy(eth->h_dest, fp->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fp->smac, ETH_ALEN);
	be_vs_verdict(vs_id, be_id, fwd_reason, 0);
	if (fp->ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(fp->ifindex, 0);
}

/* rewrite replaces the source (is_src) or destination address and port of a
 * parsed packet and updates the IPv4 header and the TCP/UDP checksums. */
static __always_inline int rewrite(struct xdp_md *ctx, const struct pkt *p, int is_src,
				   const __u32 *naddr, __u16 nport)
{
	int v6 = p->family == FAMILY_V6;
	const __u32 *oaddr = is_src ? p->src : p->dst;
	__u16 oport = is_src ? p->sport : p->dport;
	__u32 d_addr = delta_addr(0, oaddr, naddr, v6);
	__u32 d_l4 = delta_add16(d_addr, oport, nport);

	if (!v6) {
		struct iphdr *ip = ptr_at(ctx, p->l3, sizeof(*ip));

		if (!ip)
			return -1;
		ip->check = csum_apply(ip->check, d_addr);
		if (is_src)
			ip->saddr = naddr[0];
		else
			ip->daddr = naddr[0];
	} else {
		struct ipv6hdr *ip6 = ptr_at(ctx, p->l3, sizeof(*ip6));

		if (!ip6)
			return -1;
		if (is_src)
			__builtin_memcpy(&ip6->saddr, naddr, 16);
		else
			__builtin_memcpy(&ip6->daddr, naddr, 16);
	}
	if (p->frag == FRAG_LATER)
		return 0;
	if (p->proto == IPPROTO_TCP) {
		struct tcphdr *th = ptr_at(ctx, p->l4, sizeof(*th));

		if (!th)
			return -1;
		if (is_src)
			th->source = nport;
		else
			th->dest = nport;
		th->check = csum_apply(th->check, d_l4);
	} else if (p->proto == IPPROTO_UDP) {
		struct udphdr *uh = ptr_at(ctx, p->l4, sizeof(*uh));

		if (!uh)
			return -1;
		if (is_src)
			uh->source = nport;
		else
			uh->dest = nport;
		/* IPv4 UDP may go without checksum (0); IPv6 may not. A computed
		 * 0 is sent as 0xffff. */
		if (uh->check || v6) {
			__u16 c = csum_apply(uh->check, d_l4);

			uh->check = c ? c : 0xffff;
		}
	}
	return 0;
}

/* stats_add counts one packet in a vserver's or a backend's per-CPU
 * counters (struct vs_stats and struct be_stats have one layout). */
#define stats_add(s, bytes, new_flow, rev)             \
	do {                                           \
		if (rev) {                             \
			(s)->rev_packets += 1;         \
			(s)->rev_bytes += (bytes);     \
		} else {                               \
			(s)->packets += 1;             \
			(s)->bytes += (bytes);         \
			(s)->new_flows += (new_flow);  \
		}                                      \
	} while (0)

static __always_inline void vs_add(__u32 vs_id, __u64 bytes, int new_flow, int rev)
{
	struct vs_stats *s = bpf_map_lookup_elem(&vserver_stats, &vs_id);

	if (s)
		stats_add(s, bytes, new_flow, rev);
}

static __always_inline void be_add(__u32 be_id, __u64 bytes, int new_flow, int rev)
{
	struct be_stats *s = bpf_map_lookup_elem(&backend_stats, &be_id);

	if (s)
		stats_add(s, bytes, new_flow, rev);
}

/* fwd_count counts a forwarded packet once in each of its counters: the
 * vserver's and the backend's packets, bytes, new flows (rev: reply packets
 * and bytes) and reason, and the global reason. */
static __always_inline void fwd_count(__u32 vs_id, __u32 be_id, __u64 bytes, int new_flow,
				      int rev, __u32 reason)
{
	struct vs_stats *vs = bpf_map_lookup_elem(&vserver_stats, &vs_id);
	struct be_stats *bs = bpf_map_lookup_elem(&backend_stats, &be_id);

	if (reason >= REASON_MAX)
		return;
	if (vs) {
		stats_add(vs, bytes, new_flow, rev);
		vs->reasons[reason] += 1;
	}
	if (bs) {
		stats_add(bs, bytes, new_flow, rev);
		bs->reasons[reason] += 1;
	}
	count(reason);
}

/* hot_hash spreads a flow's 5-tuple over the hot cache's slots. Any
 * function would do (the entry holds the whole key); this one is cheap. */
static __always_inline __u32 hot_hash(__u32 s0, __u32 s1, __u32 s2, __u32 s3, __u32 d0, __u32 d1,
				      __u32 d2, __u32 d3, __u32 ports, __u8 proto)
{
	__u32 x = (s0 ^ s1 ^ s2 ^ s3) * 0x9e3779b1;

	x ^= d0 ^ d1 ^ d2 ^ d3 ^ proto;
	x *= 0x85ebca6b;
	x ^= ports;
	x ^= x >> 15;
	x *= 0xc2b2ae35;
	x ^= x >> 13;
	return x;
}

static __always_inline struct hot_entry *hot_slot(__u32 h)
{
	__u32 idx = bpf_get_smp_processor_id() * hot_slots + (h & (hot_slots - 1));

	return bpf_map_lookup_elem(&hot, &idx);
}

/* hot_set caches a stateless packet's rewrite in this CPU's hot slot: its
 * destination (rev 0: client -> backend) or its source (rev 1: a reply,
 * back to the VIP) becomes naddr:nport, sent by the route answer in ce (the
 * backend_fib or fib_cache entry just used). p is the packet as it came. */
static __always_inline void hot_set(const struct pkt *p, __u32 gen, __u32 vs_id, __u32 be_id,
				    const __u32 *naddr, __u16 nport, int rev,
				    const struct fib_entry *ce)
{
	__u32 ports = (__u32)p->sport | ((__u32)p->dport << 16);
	int v6 = p->family == FAMILY_V6;
	struct hot_entry *e;
	__u32 d;

	if (!hot_slots)
		return;
	e = hot_slot(hot_hash(p->src[0], p->src[1], p->src[2], p->src[3], p->dst[0], p->dst[1],
			      p->dst[2], p->dst[3], ports, p->proto));
	if (!e)
		return;
	e->gen = 0;
	asm volatile("" ::: "memory");
	__builtin_memcpy(e->src, p->src, 16);
	__builtin_memcpy(e->dst, p->dst, 16);
	e->ports = ports;
	e->proto = p->proto;
	e->family = p->family;
	e->max_len = ce->max_len;
	e->in_ifindex = ce->in_ifindex;
	e->ifindex = ce->ifindex;
	e->vs_id = vs_id;
	e->backend_id = be_id;
	d = delta_addr(0, rev ? p->src : p->dst, naddr, v6);
	e->csum_ip = d;
	e->csum_l4 = delta_add16(d, rev ? p->sport : p->dport, nport);
	__builtin_memcpy(e->new_addr, naddr, 16);
	e->new_port = nport;
	e->rev = rev;
	__builtin_memcpy(e->dmac, ce->dmac, ETH_ALEN);
	__builtin_memcpy(e->smac, ce->smac, ETH_ALEN);
	asm volatile("" ::: "memory");
	e->gen = gen;
}

/* handle_vserver forwards client -> VIP packets of a vserver. gen is the
 * cache generation, read before the vserver. */
HANDLER int handle_vserver(struct xdp_md *ctx, struct pkt *p, struct vserver *vs, __u32 gen)
{
	__u32 vs_id, be_id = 0, epoch = 0, why;
	struct bpf_fib_lookup fp;
	struct backend *be = NULL;
	struct flow_key fk = {};
	struct flow *f = NULL;
	struct fib_entry *ce;
	__u64 now = 0;
	int new_flow = 0, rc;
	__u16 nport;

	if (!p || !vs)
		return XDP_ABORTED;
	vs_id = vs->id;
	if (!(vs->flags & VS_F_STATELESS))
		return vs_verdict(vs_id, REASON_PASS_NOT_STATELESS, XDP_PASS);
	if (vs->mode != MODE_NAT)
		return vs_verdict(vs_id, REASON_DROP_UNSUPPORTED, XDP_DROP);

	__builtin_memcpy(fk.src, p->src, 16);
	__builtin_memcpy(fk.dst, p->dst, 16);
	fk.sport = p->sport;
	fk.dport = p->dport;
	fk.proto = p->proto;
	fk.family = p->family;
	if (!(vs->flags & VS_F_UNTRACKED))
		f = bpf_map_lookup_elem(&flows, &fk);

	if (f && f->vs_id == vs_id) {
		be_id = f->backend_id;
		be = lookup_backend(be_id);
	}
	if (!be) {
		be_id = pick(vs, p->src, p->family, p->sport, &epoch);
		be = lookup_backend(be_id);
		if (!be)
			return vs_verdict(vs_id, REASON_DROP_NO_BACKEND, XDP_DROP);
		new_flow = 1;
	}
	if (be->family != p->family)
		return vs_verdict(vs_id, REASON_DROP_NO_BACKEND, XDP_DROP);
	nport = be->port ? be->port : p->dport;

	now = bpf_ktime_get_coarse_ns();
	ce = bpf_map_lookup_elem(&backend_fib, &be_id);
	rc = fib(ctx, p, p->proto, p->src, be->addr, p->sport, nport, &fp, now, ce);
	why = fib_refused(rc);
	if (why)
		return be_vs_verdict(vs_id, be_id, why, XDP_DROP);
	/* ce holds the answer fib used when it succeeded with the cache on */
	if (!(rc == BPF_FIB_LKUP_RET_SUCCESS && fib_cache_ns))
		ce = NULL;

	if (new_flow && (vs->flags & VS_F_UNTRACKED)) {
		/* not recorded; the hot cache is all it gets */
	} else if (new_flow) {
		__u32 key = 0;
		struct scratch *sc = bpf_map_lookup_elem(&scratch, &key);
		struct flow *nf;

		if (!sc)
			return XDP_ABORTED;
		nf = &sc->nf;
		__builtin_memset(nf, 0, sizeof(*nf));
		nf->backend_id = be_id;
		nf->vs_id = vs_id;
		nf->epoch = epoch;
		nf->flags = FLOW_F_STATELESS;
		nf->created_ns = now;
		nf->seen_ns = now;
		bpf_map_update_elem(&flows, &fk, nf, BPF_ANY);
	} else if (f && now - f->seen_ns > 1000000000ULL) {
		f->seen_ns = now;
	}
	/* A recorded flow enters the hot cache at its second packet: a miss
	 * does not pay for a write to a cold slot, and flows of one packet (a
	 * scan, a flood of SYNs) do not evict the ones that carry traffic. An
	 * untracked vserver's flow has no record to tell its second packet:
	 * it enters at once. */
	if (ce && gen && (!new_flow || (vs->flags & VS_F_UNTRACKED)))
		hot_set(p, gen, vs_id, be_id, be->addr, nport, 0, ce);
	if (rewrite(ctx, p, 0, be->addr, nport))
		return XDP_ABORTED;
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		vs_add(vs_id, ctx->data_end - ctx->data, new_flow, 0);
		be_add(be_id, ctx->data_end - ctx->data, new_flow, 0);
		return be_vs_verdict(vs_id, be_id, REASON_PASS_NO_NEIGH, XDP_PASS);
	}
	{
		struct ethhdr *eth = ptr_at(ctx, 0, sizeof(*eth));

		if (!eth)
			return XDP_ABORTED;
		__builtin_memcpy(eth->h_dest, fp.dmac, ETH_ALEN);
		__builtin_memcpy(eth->h_source, fp.smac, ETH_ALEN);
	}
	fwd_count(vs_id, be_id, ctx->data_end - ctx->data, new_flow, 0,
		  new_flow ? REASON_FWD_NEW : REASON_FWD_HIT);
	if (fp.ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(fp.ifindex, 0);
}


/* ---- Stateful data path ------------------------------------------------
 *
 * Owned vservers (VS_F_OWNED: ROUNDROBIN, LEASTCONNECTION, or any method of a
 * STATEFUL vserver) keep a flow entry that only the flow's owner makes. The
 * owner is the pair hashing.Owner((client address, client port), live pairs)
 * chooses, and within it the active member (PAIR_F_LOCAL on that node). Any
 * other node steers the packet to the owner: client -> VIP packets by
 * (source, sport), backend -> client replies by (destination, dport), the same
 * key, so both directions meet at the owner whatever the routers' ECMP does.
 *
 * Steering is Tandem's own encapsulation (no kernel tunnel is needed):
 *
 *   Ethernet | outer IPv4 or IPv6 (own backplane -> owner's backplane
 *   address, TTL 64, no options) | UDP (sport from the owner key hash,
 *   dport steer_port, checksum 0) | tandem_hdr (8 bytes: version, flags,
 *   reserved, pair id) | the original IP packet (VLAN tags are not carried)
 *
 * The overhead is 36 bytes over IPv4 and 56 over IPv6, on the backplane: give
 * it an MTU that much larger than the front's, or the steered packets that do
 * not fit are dropped (REASON_DROP_FRAG_NEEDED). The UDP checksum is 0 (RFC
 * 6935 allows it for tunnels over IPv6): the receiver is Tandem's XDP, which
 * checks the outer source is a cluster member (ADDR_F_MEMBER) and the
 * header's version, strips it and handles the inner packet as its owner,
 * never steering it again (REASON_STEER_LOOP counts those its own view would
 * have sent elsewhere: the pairs maps of two nodes disagree for a moment
 * during a takeover).
 */

/* owner_pair returns the live pair that owns the key (client address and
 * port), the rendezvous choice of hashing.Owner, bit for bit; NULL when no
 * pair is live (a node without pairs owns every flow itself). */
static __always_inline struct pair *owner_pair(const struct self_cfg *sc, const __u32 *addr,
					       __u8 family, __u16 port, __u32 *pidx)
{
	__u32 k = packet_hash(OWNER_SEED, addr, family == FAMILY_V6, bpf_ntohs(port), 1);
	struct pair *best = NULL;
	__u32 best_score = 0, i;

	for (i = 0; i < MAX_PAIRS; i++) {
		__u32 idx = i, score;
		struct pair *pr;

		if (i >= sc->npairs)
			break;
		pr = bpf_map_lookup_elem(&pairs, &idx);
		if (!pr || !(pr->flags & PAIR_F_LIVE))
			continue;
		score = murmur_final(murmur_mix(k, pr->id), 4);
		if (!best || score > best_score || (score == best_score && pr->id < best->id)) {
			best = pr;
			best_score = score;
			*pidx = i;
		}
	}
	return best;
}

static __always_inline __u16 ip_csum20(const __u16 *w)
{
	__u32 sum = 0;
	int i;

#pragma unroll
	for (i = 0; i < 10; i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

/* steer encapsulates the IP packet of p towards pr's active member and
 * redirects it (see the comment above). */
HANDLER int steer(struct xdp_md *ctx, struct pkt *p, __u32 code)
{
	__u32 key = 0, inner_len, outer_len, hdr, why, pair_id;
	__u32 pidx = (code >> 1) & (MAX_PAIRS - 1), vs_id = code >> 16;
	int reply = code & 1;
	struct pair *pr;
	struct bpf_fib_lookup fp;
	struct self_cfg *sc;
	struct pkt op = {};
	__u32 dst[4], src[4];
	__u16 sport;
	int rc, v6;

	if (!p)
		return XDP_ABORTED;
	pr = bpf_map_lookup_elem(&pairs, &pidx);
	sc = bpf_map_lookup_elem(&self, &key);
	if (!pr || !sc || !sc->family || sc->family != pr->family || !steer_port)
		return vs_verdict(vs_id, REASON_DROP_STEER_FAIL, XDP_DROP);
	v6 = sc->family == FAMILY_V6;
	__builtin_memcpy(src, sc->addr, 16);
	__builtin_memcpy(dst, pr->addr, 16);
	pair_id = pr->id;
	inner_len = p->l3_end - p->l3;
	outer_len = (v6 ? 40 : 20) + 8 + 8 + inner_len;
	hdr = sizeof(struct ethhdr) + (v6 ? 40 : 20) + 8 + 8;
	{
		/* sport: entropy for the backplane's ECMP, from the owner key */
		const __u32 *ka = reply ? p->dst : p->src;
		__u16 kp = reply ? p->dport : p->sport;

		sport = 0xc000 | (packet_hash(OWNER_SEED, ka, p->family == FAMILY_V6,
					      bpf_ntohs(kp), 1) & 0x3fff);
	}
	op.family = sc->family;
	op.l3 = 0;
	op.l3_end = outer_len;
	rc = fib(ctx, &op, IPPROTO_UDP, src, dst, bpf_htons(sport), steer_port, &fp,
		 bpf_ktime_get_coarse_ns(), NULL);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		/* the kernel cannot forward a frame from our own address: the
		 * mirroring connection over the backplane keeps the neighbour */
		return vs_verdict(vs_id, REASON_DROP_STEER_FAIL, XDP_DROP);
	why = fib_refused(rc);
	if (why)
		return vs_verdict(vs_id, why, XDP_DROP);
	if (inner_len > 0xffff - 80)
		return vs_verdict(vs_id, REASON_DROP_FRAG_NEEDED, XDP_DROP);
	if (bpf_xdp_adjust_head(ctx, (int)p->l3 - (int)hdr))
		return vs_verdict(vs_id, REASON_DROP_STEER_FAIL, XDP_DROP);
	{
		struct ethhdr *eth = ptr_at(ctx, 0, sizeof(*eth));

		if (!eth)
			return XDP_ABORTED;
		__builtin_memcpy(eth->h_dest, fp.dmac, ETH_ALEN);
		__builtin_memcpy(eth->h_source, fp.smac, ETH_ALEN);
		eth->h_proto = bpf_htons(v6 ? ETH_P_IPV6 : ETH_P_IP);
	}
	if (!v6) {
		struct iphdr *ip = ptr_at(ctx, sizeof(struct ethhdr), sizeof(*ip));
		struct iphdr h = {};

		if (!ip)
			return XDP_ABORTED;
		h.version = 4;
		h.ihl = 5;
		h.tot_len = bpf_htons(outer_len);
		h.ttl = 64;
		h.protocol = IPPROTO_UDP;
		h.saddr = src[0];
		h.daddr = dst[0];
		h.check = ip_csum20((__u16 *)&h);
		*ip = h;
	} else {
		struct ipv6hdr *ip6 = ptr_at(ctx, sizeof(struct ethhdr), sizeof(*ip6));
		struct ipv6hdr h = {};

		if (!ip6)
			return XDP_ABORTED;
		h.version = 6;
		h.payload_len = bpf_htons(outer_len - 40);
		h.nexthdr = IPPROTO_UDP;
		h.hop_limit = 64;
		__builtin_memcpy(&h.saddr, src, 16);
		__builtin_memcpy(&h.daddr, dst, 16);
		*ip6 = h;
	}
	{
		__u32 off = sizeof(struct ethhdr) + (v6 ? 40 : 20);
		struct udphdr *uh = ptr_at(ctx, off, sizeof(*uh) + sizeof(struct tandem_hdr));
		struct tandem_hdr *th;

		if (!uh)
			return XDP_ABORTED;
		uh->source = bpf_htons(sport);
		uh->dest = steer_port;
		uh->len = bpf_htons(outer_len - (v6 ? 40 : 20));
		uh->check = 0;
		th = (struct tandem_hdr *)(uh + 1);
		th->version = TANDEM_ENCAP_VERSION;
		th->flags = reply ? TH_F_REPLY : 0;
		th->rsvd = 0;
		th->pair = bpf_htonl(pair_id);
	}
	vs_count(vs_id, REASON_FWD_STEER);
	if (fp.ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(fp.ifindex, 0);
}

/* emit reports a new or closed owned flow to user space. */
static __always_inline void emit(__u8 type, const struct flow_key *fk, const struct flow *f,
				 __u64 now)
{
	struct flow_event ev = {};

	ev.type = type;
	ev.proto = fk->proto;
	ev.family = fk->family;
	ev.sport = fk->sport;
	ev.dport = fk->dport;
	__builtin_memcpy(ev.src, fk->src, 16);
	__builtin_memcpy(ev.dst, fk->dst, 16);
	ev.vs_id = f->vs_id;
	ev.backend_id = f->backend_id;
	__builtin_memcpy(ev.snat, f->snat, 16);
	ev.snat_port = f->snat_port;
	ev.flags = f->flags;
	ev.owner = f->owner;
	ev.ts_ns = now;
	if (bpf_ringbuf_output(&events, &ev, sizeof(ev), 0))
		count(REASON_EVENT_LOST);
}

/* rflow_set fills a reply entry: replies of the flow client:cport ->
 * vip:vport of vserver vs_id, served by backend be_id. */
static __always_inline void rflow_set(struct rflow *rf, const __u32 *client, const __u32 *vip,
				      __u16 cport, __u16 vport, __u32 vs_id, __u32 be_id)
{
	__builtin_memcpy(rf->client, client, 16);
	__builtin_memcpy(rf->vip, vip, 16);
	rf->client_port = cport;
	rf->vport = vport;
	rf->vs_id = vs_id;
	rf->backend_id = be_id;
}

static __always_inline void conns_add(__u32 be_id, __s64 d)
{
	__s64 *c = bpf_map_lookup_elem(&be_conns, &be_id);

	if (c)
		__sync_fetch_and_add(c, d);
}

/* ---- FTP ALG: the control connection ---------------------------------
 *
 * An FTP vserver (VS_F_FTP, Owned) forwards its control connection like
 * any owned flow; at the owner, after a packet of it was rewritten and sent
 * (the redirect happens when the program returns, so an expectation is in
 * place before a 227 reply reaches the client), ftp_alg reads the first
 * line of its payload with ftp.h: PORT and EPRT from the client, 227 and
 * 229 from the backend. A valid one inserts an expectation (expects) that
 * the data connection's first packet, a SYN, consumes in handle_ftp_data
 * (passive) or handle_ftp_data_reply (active). Every line of those kinds is
 * counted by kind and reason in alg_stats. */

static __always_inline void alg_count(__u32 idx)
{
	__u64 *c;

	if (idx >= ALG_MAX)
		return;
	c = bpf_map_lookup_elem(&alg_stats, &idx);
	if (c)
		*c += 1;
}

/* ftp_note leaves what ftp_alg needs of a control packet in ftp_pending and
 * flags the verdict, so that dispatch runs ftp_alg after the handler, on its
 * own stack frame. Dropped packets are not read: the peer sends them again. */
static __always_inline int ftp_note(int verdict, __u8 dir, __u8 family, const __u32 *vip,
				    const __u32 *client, const __u32 *backend, __u32 vs_id,
				    __u32 be_id, __u16 cport, __u16 vport)
{
	struct ftp_ctl *c;
	__u32 k = 0;

	if (verdict != XDP_REDIRECT && verdict != XDP_TX && verdict != XDP_PASS)
		return verdict;
	c = bpf_map_lookup_elem(&ftp_pending, &k);
	if (!c)
		return verdict;
	__builtin_memcpy(c->vip, vip, 16);
	__builtin_memcpy(c->client, client, 16);
	__builtin_memcpy(c->backend, backend, 16);
	c->vs_id = vs_id;
	c->backend_id = be_id;
	c->cport = cport;
	c->vport = vport;
	c->dir = dir;
	c->family = family;
	return verdict | FTP_ALG_FLAG;
}

/* pick_owned chooses the backend of a new owned flow. */
static __always_inline __u32 pick_owned(const struct vserver *vs, const struct pkt *p,
					__u32 *epoch)
{
	__u32 id = vs->id, n, start, i, best = 0;
	__s64 best_conns = 0;
	struct be_list *l;
	__u32 *cur;

	if (vs->method == METHOD_SOURCEIP || vs->method == METHOD_SOURCEIP_SOURCEPORT)
		return pick(vs, p->src, p->family, p->sport, epoch);
	l = bpf_map_lookup_elem(&vs_lists, &id);
	cur = bpf_map_lookup_elem(&rr_next, &id);
	if (!l || !cur)
		return 0;
	n = l->n;
	if (n == 0 || n > MAX_LIST)
		return 0;
	start = __sync_fetch_and_add(cur, 1) % n;
	if (vs->method == METHOD_ROUNDROBIN) {
		i = start & (MAX_LIST - 1);
		barrier_var(i);
		i &= MAX_LIST - 1;
		return l->ids[i];
	}
	/* LEASTCONNECTION: fewest active flows; ties go to the first from the
	 * round-robin position, so equal backends share new flows in turn. */
	for (i = 0; i < MAX_LIST; i++) {
		__u32 j, be;
		__s64 *c;

		if (i >= n)
			break;
		j = start + i;
		if (j >= n)
			j -= n;
		barrier_var(j);
		j &= MAX_LIST - 1;
		be = l->ids[j];
		c = bpf_map_lookup_elem(&be_conns, &be);
		if (!c || !lookup_backend(be))
			continue;
		if (!best || *c < best_conns) {
			best = be;
			best_conns = *c;
		}
	}
	return best;
}

/* tcp_flags returns the TCP flags byte, 0 for UDP. */
static __always_inline __u8 tcp_flags(struct xdp_md *ctx, const struct pkt *p)
{
	__u8 *fl;

	if (p->proto != IPPROTO_TCP)
		return 0;
	fl = ptr_at(ctx, p->l4 + 13, 1);
	return fl ? *fl : 0;
}

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

/* mark_closing counts an owned flow closed on its first FIN or RST. */
static __always_inline void mark_closing(struct flow *f, const struct flow_key *fk, __u8 mirror,
					 __u64 now)
{
	if (f->flags & FLOW_F_CLOSING)
		return;
	f->flags |= FLOW_F_CLOSING;
	conns_add(f->backend_id, -1);
	if (mirror)
		emit(EVENT_CLOSE, fk, f, now);
}

/* pair_snip is the pair's SNIP of the given family, NULL when it has none
 * (USIP OFF flows of that family are then dropped, drop_no_snat). */
static __always_inline const __u32 *pair_snip(const struct pair *pr, __u8 family)
{
	if (!pr)
		return NULL;
	if (family == FAMILY_V4)
		return (pr->flags & PAIR_F_SNIP4) ? pr->snip4 : NULL;
	return (pr->flags & PAIR_F_SNIP6) ? pr->snip6 : NULL;
}

/* snat_alloc takes a free port of the pair's SNAT range for a flow to
 * (backend, bport): the reply key (backend:bport -> SNIP:port) must be new
 * in rflows, so each SNIP has the whole range (the cursor is shared by the
 * pair's SNIPs). Returns the port (network order), 0 when none was free
 * after a few tries. */
static __always_inline __u16 snat_alloc(const struct pair *pr, const __u32 *snip, __u32 pidx,
					const struct pkt *p, const struct backend *be, __u16 bport,
					struct rflow *rf)
{
	__u32 span, *cur, i;
	struct flow_key rk = {};

	if (pr->snat_hi < pr->snat_lo)
		return 0;
	cur = bpf_map_lookup_elem(&snat_next, &pidx);
	if (!cur)
		return 0;
	span = (__u32)pr->snat_hi - pr->snat_lo + 1;
	__builtin_memcpy(rk.src, be->addr, 16);
	__builtin_memcpy(rk.dst, snip, 16);
	rk.sport = bport;
	rk.proto = p->proto;
	rk.family = p->family;
	for (i = 0; i < 8; i++) {
		__u16 port = pr->snat_lo + (__sync_fetch_and_add(cur, 1) % span);

		rk.dport = bpf_htons(port);
		if (!bpf_map_update_elem(&rflows, &rk, rf, BPF_NOEXIST))
			return rk.dport;
	}
	return 0;
}

/* handle_owned forwards client -> VIP packets of an owned vserver. */
HANDLER int handle_owned(struct xdp_md *ctx, struct pkt *p, struct vserver *vs, int steered)
{
	__u32 vs_id, be_id = 0, epoch = 0, why, key = 0, pidx = 0;
	struct bpf_fib_lookup fp;
	struct backend *be = NULL;
	struct flow_key fk = {};
	struct self_cfg *sc;
	struct pair *pr = NULL;
	struct flow *f;
	__u64 now;
	int new_flow = 0, rc, elsewhere = 0;
	__u16 nport;
	__u8 tf;

	if (!p || !vs)
		return XDP_ABORTED;
	vs_id = vs->id;
	if (vs->mode != MODE_NAT)
		return vs_verdict(vs_id, REASON_DROP_UNSUPPORTED, XDP_DROP);
	sc = bpf_map_lookup_elem(&self, &key);
	if (sc && sc->npairs) {
		pr = owner_pair(sc, p->src, p->family, (vs->flags & VS_F_FTP) ? 0 : p->sport, &pidx);
		if (pr && !(pr->flags & PAIR_F_LOCAL)) {
			if (!steered)
				return STEER_CODE(pidx, 0, vs_id);
			count(REASON_STEER_LOOP);
			elsewhere = 1;
		}
	}
	tf = tcp_flags(ctx, p);
	now = bpf_ktime_get_coarse_ns();

	__builtin_memcpy(fk.src, p->src, 16);
	__builtin_memcpy(fk.dst, p->dst, 16);
	fk.sport = p->sport;
	fk.dport = p->dport;
	fk.proto = p->proto;
	fk.family = p->family;
	f = bpf_map_lookup_elem(&flows, &fk);
	if (f && f->vs_id == vs_id && (f->flags & FLOW_F_OWNED) &&
	    !((f->flags & FLOW_F_CLOSING) && (tf & (TCP_SYN | TCP_ACK)) == TCP_SYN)) {
		be_id = f->backend_id;
		be = lookup_backend(be_id);
		if (!be)
			return vs_verdict(vs_id, REASON_DROP_NO_BACKEND, XDP_DROP);
		if (tf & (TCP_FIN | TCP_RST))
			mark_closing(f, &fk, (f->flags & FLOW_F_MIRROR) && (vs->flags & VS_F_MIRROR), now);
		else if (now - f->seen_ns > 1000000000ULL)
			f->seen_ns = now;
	} else {
		struct flow nf = {};

		/* Steered here while this node's view names another owner: only a
		 * TCP SYN may open a flow; a UDP datagram's flow may live at the
		 * old owner or in the standby store being installed. */
		if (elsewhere && p->proto != IPPROTO_TCP)
			return vs_verdict(vs_id, REASON_DROP_NOT_OWNER, XDP_DROP);
		/* TCP: only a SYN opens a flow; anything else of an unknown
		 * flow goes to the kernel (which answers with a RST, as it
		 * would without Tandem), never to a fresh backend. */
		if (p->proto == IPPROTO_TCP && (tf & (TCP_SYN | TCP_ACK | TCP_RST)) != TCP_SYN)
			return vs_verdict(vs_id, REASON_PASS_NO_FLOW, XDP_PASS);
		be_id = pick_owned(vs, p, &epoch);
		be = lookup_backend(be_id);
		if (!be || be->family != p->family)
			return vs_verdict(vs_id, REASON_DROP_NO_BACKEND, XDP_DROP);
		nport = be->port ? be->port : p->dport;
		nf.backend_id = be_id;
		nf.vs_id = vs_id;
		nf.epoch = epoch;
		nf.flags = FLOW_F_OWNED | ((vs->flags & VS_F_MIRROR) ? FLOW_F_MIRROR : 0);
		nf.owner = pr ? pr->id : 0;
		nf.created_ns = now;
		nf.seen_ns = now;
		{
			struct rflow rf = {};
			struct flow_key rk = {};

			rflow_set(&rf, p->src, p->dst, p->sport, p->dport, vs_id, be_id);
			if (vs->flags & VS_F_SNAT) {
				const __u32 *snip = pair_snip(pr, p->family);
				__u16 sp;

				rf.flags = FLOW_F_SNAT;
				if (!pr || !snip)
					return vs_verdict(vs_id, REASON_DROP_NO_SNAT, XDP_DROP);
				sp = snat_alloc(pr, snip, pidx & (MAX_PAIRS - 1), p, be, nport, &rf);
				if (!sp)
					return vs_verdict(vs_id, REASON_DROP_NO_SNAT, XDP_DROP);
				nf.flags |= FLOW_F_SNAT;
				__builtin_memcpy(nf.snat, snip, 16);
				nf.snat_port = sp;
			} else {
				__builtin_memcpy(rk.src, be->addr, 16);
				__builtin_memcpy(rk.dst, p->src, 16);
				rk.sport = nport;
				rk.dport = p->sport;
				rk.proto = p->proto;
				rk.family = p->family;
				bpf_map_update_elem(&rflows, &rk, &rf, BPF_ANY);
			}
		}
		bpf_map_update_elem(&flows, &fk, &nf, BPF_ANY);
		f = bpf_map_lookup_elem(&flows, &fk);
		if (!f)
			return vs_verdict(vs_id, REASON_DROP_NO_BACKEND, XDP_DROP);
		conns_add(be_id, 1);
		if (vs->flags & VS_F_MIRROR)
			emit(EVENT_NEW, &fk, f, now);
		new_flow = 1;
	}
	if (be->family != p->family)
		return vs_verdict(vs_id, REASON_DROP_NO_BACKEND, XDP_DROP);
	nport = be->port ? be->port : p->dport;
	{
		__u32 snat[4];
		__u16 snat_port = 0;
		int do_snat = f->flags & FLOW_F_SNAT;

		__builtin_memcpy(snat, f->snat, 16);
		snat_port = f->snat_port;
		rc = fib(ctx, p, p->proto, do_snat ? snat : p->src, be->addr,
			 do_snat ? snat_port : p->sport, nport, &fp, now,
			 bpf_map_lookup_elem(&backend_fib, &be_id));
		why = fib_refused(rc);
		if (why)
			return be_vs_verdict(vs_id, be_id, why, XDP_DROP);
		if (rewrite(ctx, p, 0, be->addr, nport))
			return XDP_ABORTED;
		if (do_snat) {
			struct pkt q = *p;

			/* the destination is rewritten: its checksum delta
			 * is in the headers already, so the second rewrite
			 * starts from the new ones */
			__builtin_memcpy(q.dst, be->addr, 16);
			q.dport = nport;
			if (rewrite(ctx, &q, 1, snat, snat_port))
				return XDP_ABORTED;
		}
	}
	vs_add(vs_id, ctx->data_end - ctx->data, new_flow, 0);
	be_add(be_id, ctx->data_end - ctx->data, new_flow, 0);
	if ((vs->flags & VS_F_FTP) && !(f->flags & FLOW_F_FTP_DATA))
		return ftp_note(send(ctx, rc, &fp, vs_id, be_id, new_flow ? REASON_FWD_NEW : REASON_FWD_HIT),
				FTP_FROM_CLIENT, p->family, p->dst, p->src, be->addr, vs_id, be_id,
				p->sport, p->dport);
	return send(ctx, rc, &fp, vs_id, be_id, new_flow ? REASON_FWD_NEW : REASON_FWD_HIT);
}

/* handle_owned_reply rewrites backend -> client replies of owned flows back
 * to VIP:vport (and, after source NAT, to the client) from rflows. A reply
 * without entry at a node that does not own its flow is steered to the
 * owner by (destination, dport); replies to a SNIP are routed to the pair's
 * active member by BGP and never steered. flags: 1 if steered, and
 * OWNED_REPLY_FTP (an FTP control connection, whose replies the ALG reads)
 * or OWNED_REPLY_DATA (an FTP data connection); both are steered by the
 * destination alone. */
HANDLER int handle_owned_reply(struct xdp_md *ctx, struct pkt *p, __u32 vs_hint, int flags)
{
	int steered = flags & 1, ftp = flags & (OWNED_REPLY_FTP | OWNED_REPLY_DATA);
	struct bpf_fib_lookup fp;
	struct flow_key rk = {};
	struct rflow *rf;
	__u32 why, key = 0, vs_id, be_id;
	__u32 client[4], vip[4];
	__u16 cport, vport;
	int rc, snat;
	__u8 tf;

	if (!p)
		return XDP_ABORTED;
	__builtin_memcpy(rk.src, p->src, 16);
	__builtin_memcpy(rk.dst, p->dst, 16);
	rk.sport = p->sport;
	rk.dport = p->dport;
	rk.proto = p->proto;
	rk.family = p->family;
	rf = bpf_map_lookup_elem(&rflows, &rk);
	if (rf) {
		vs_id = rf->vs_id;
		be_id = rf->backend_id;
		snat = rf->flags & FLOW_F_SNAT;
		__builtin_memcpy(client, rf->client, 16);
		__builtin_memcpy(vip, rf->vip, 16);
		cport = rf->client_port;
		vport = rf->vport;
	} else {
		struct self_cfg *sc;
		struct pair *pr;
		struct rev *r;
		struct flow_key fk = {};
		struct flow *f;

		if (addr_flags(p->dst, p->family) & ADDR_F_SNIP)
			return vs_verdict(vs_hint, REASON_PASS_NO_FLOW, XDP_PASS);
		sc = bpf_map_lookup_elem(&self, &key);
		if (!steered && sc && sc->npairs) {
			pr = owner_pair(sc, p->dst, p->family, ftp ? 0 : p->dport, &key);
			if (pr && !(pr->flags & PAIR_F_LOCAL))
				return STEER_CODE(key, 1, vs_hint);
		}
		/* No reply entry, but the flow may be here: a takeover installs
		 * flows without the reply entries of flows that keep the
		 * client's address (they follow from the flow and the service's
		 * reverse entry), and an LRU may evict a reply entry alone. The
		 * entry is rebuilt from the flow and recorded. */
		r = lookup_reverse(p->src, p->sport, p->proto, p->family);
		if (!r || r->family != p->family || !(r->flags & REV_F_STATEFUL))
			goto no_flow;
		__builtin_memcpy(fk.src, p->dst, 16);
		__builtin_memcpy(fk.dst, r->vip, 16);
		fk.sport = p->dport;
		fk.dport = r->vport ? r->vport : p->sport;
		fk.proto = p->proto;
		fk.family = p->family;
		f = bpf_map_lookup_elem(&flows, &fk);
		if (!f || !(f->flags & FLOW_F_OWNED) || (f->flags & FLOW_F_SNAT) ||
		    f->backend_id != r->backend_id)
			goto no_flow;
		vs_id = f->vs_id;
		be_id = f->backend_id;
		snat = 0;
		__builtin_memcpy(client, fk.src, 16);
		__builtin_memcpy(vip, fk.dst, 16);
		cport = fk.sport;
		vport = fk.dport;
		{
			struct rflow nrf = {};

			rflow_set(&nrf, client, vip, cport, vport, vs_id, be_id);
			bpf_map_update_elem(&rflows, &rk, &nrf, BPF_NOEXIST);
		}
	}
	tf = tcp_flags(ctx, p);
	if (tf & (TCP_FIN | TCP_RST)) {
		struct flow_key fk = {};
		struct flow *f;

		__builtin_memcpy(fk.src, client, 16);
		__builtin_memcpy(fk.dst, vip, 16);
		fk.sport = cport;
		fk.dport = vport;
		fk.proto = p->proto;
		fk.family = p->family;
		f = bpf_map_lookup_elem(&flows, &fk);
		if (f && (f->flags & FLOW_F_OWNED))
			mark_closing(f, &fk, f->flags & FLOW_F_MIRROR, bpf_ktime_get_coarse_ns());
	}
	rc = fib(ctx, p, p->proto, vip, client, vport, cport, &fp, bpf_ktime_get_coarse_ns(), NULL);
	why = fib_refused(rc);
	if (why)
		return be_vs_verdict(vs_id, be_id, why, XDP_DROP);
	if (rewrite(ctx, p, 1, vip, vport))
		return XDP_ABORTED;
	if (snat) {
		struct pkt q = *p;

		__builtin_memcpy(q.src, vip, 16);
		q.sport = vport;
		if (rewrite(ctx, &q, 0, client, cport))
			return XDP_ABORTED;
	}
	vs_add(vs_id, ctx->data_end - ctx->data, 0, 1);
	be_add(be_id, ctx->data_end - ctx->data, 0, 1);
	if (ftp == OWNED_REPLY_FTP)
		return ftp_note(send(ctx, rc, &fp, vs_id, be_id, REASON_FWD_REVERSE), FTP_FROM_BACKEND,
				p->family, vip, client, p->src, vs_id, be_id, cport, vport);
	return send(ctx, rc, &fp, vs_id, be_id, REASON_FWD_REVERSE);
no_flow:
	/* steered here but not ours: never forward it un-rewritten */
	if (steered)
		return vs_verdict(vs_hint, REASON_DROP_NOT_OWNER, XDP_DROP);
	return vs_verdict(vs_hint, REASON_PASS_NO_FLOW, XDP_PASS);
}

/* ftp_alg reads the control packet ftp_note left (p is the packet as it was
 * parsed; its payload is not rewritten) and inserts the expectation its
 * line asks for. */
HANDLER int ftp_alg(struct xdp_md *ctx, struct pkt *p)
{
	struct ftp_scratch *sc;
	struct ftp_result res;
	struct expect_key ek = {};
	struct expect x = {};
	struct ftp_ctl *c;
	struct tcphdr *th;
	__u32 k = 0, off, len;
	__u8 dir;

	if (!p)
		return 0;
	c = bpf_map_lookup_elem(&ftp_pending, &k);
	sc = bpf_map_lookup_elem(&ftp_scratch, &k);
	if (!c || !sc)
		return 0;
	dir = c->dir;
	c->dir = 0;
	if (dir != FTP_FROM_CLIENT && dir != FTP_FROM_BACKEND)
		return 0;
	th = ptr_at(ctx, p->l4, sizeof(*th));
	if (!th)
		return 0;
	off = p->l4 + th->doff * 4;
	if (off >= p->l3_end)
		return 0;
	len = p->l3_end - off;
	ftp_parse(ctx, off, len, dir, c->family, c->vip, c->client, sc, &res);
	if (res.kind == FTP_KIND_NONE)
		return 0;
	alg_count((__u32)res.kind * ALG_FTP_REASONS + res.reason);
	if (res.reason != FTP_R_OK)
		return 0;
	ek.family = c->family;
	ek.dport = bpf_htons(res.port);
	if (res.kind == FTP_KIND_PASV || res.kind == FTP_KIND_EPSV) {
		/* client:any -> VIP:port, to the backend on that port */
		__builtin_memcpy(ek.src, c->client, 16);
		__builtin_memcpy(ek.dst, c->vip, 16);
		__builtin_memcpy(x.to, c->backend, 16);
	} else {
		/* backend:any -> client:port, from the VIP */
		__builtin_memcpy(ek.src, c->backend, 16);
		__builtin_memcpy(ek.dst, c->client, 16);
		__builtin_memcpy(x.to, c->vip, 16);
	}
	x.deadline_ns = bpf_ktime_get_coarse_ns() + ftp_expect_ns;
	x.vs_id = c->vs_id;
	x.backend_id = c->backend_id + data_backend_base;
	x.ctl_port = c->cport;
	x.ctl_vport = c->vport;
	x.kind = res.kind;
	if (bpf_map_update_elem(&expects, &ek, &x, BPF_ANY)) {
		alg_count(ALG_FTP_EXPECT_FAIL);
		return 0;
	}
	{
		/* mirrored vservers: the partner keeps it for a takeover */
		__u32 id = x.vs_id;
		struct vserver *vs = bpf_map_lookup_elem(&vs_byid, &id);
		struct flow_event ev = {};

		if (!vs || !(vs->flags & VS_F_MIRROR))
			return 0;
		ev.type = EVENT_EXPECT;
		ev.proto = IPPROTO_TCP;
		ev.family = ek.family;
		ev.dport = ek.dport;
		__builtin_memcpy(ev.src, ek.src, 16);
		__builtin_memcpy(ev.dst, ek.dst, 16);
		__builtin_memcpy(ev.snat, x.to, 16);
		ev.vs_id = x.vs_id;
		ev.backend_id = x.backend_id;
		ev.flags = x.kind;
		ev.ts_ns = x.deadline_ns;
		if (bpf_ringbuf_output(&events, &ev, sizeof(ev), 0))
			count(REASON_EVENT_LOST);
	}
	return 0;
}

/* take_expect looks up and consumes (deletes) the expectation of a data
 * connection's first packet; 0 when there is a live one of a wanted kind
 * (passive or not). */
static __always_inline int take_expect(const struct expect_key *ek, int passive, struct expect *x)
{
	struct expect *e = bpf_map_lookup_elem(&expects, ek);

	if (!e)
		return -1;
	if (passive != (e->kind == FTP_KIND_PASV || e->kind == FTP_KIND_EPSV))
		return -1;
	*x = *e;
	bpf_map_delete_elem(&expects, ek);
	if (bpf_ktime_get_coarse_ns() >= x->deadline_ns) {
		alg_count(ALG_FTP_EXPIRED);
		return -1;
	}
	return 0;
}

/* handle_ftp_data takes TCP packets to an FTP vserver's VIP on a port
 * without vserver: the client's side of data connections. Their owner key
 * is the client's address alone (VS_F_FTP), so a node that does not own it
 * steers them without knowing the connection. At the owner, a packet of a
 * known data connection goes to handle_owned with its vserver; a SYN that
 * an expectation waits for (passive: client -> VIP:port) opens the flow to
 * the control connection's backend, on the same port, with its own reply
 * entry (and source NAT when the vserver has USIP OFF), reported on the
 * events ring like any mirrored flow. Anything else passes, as a VIP port
 * without vserver does. */
HANDLER int handle_ftp_data(struct xdp_md *ctx, struct pkt *p, int steered)
{
	__u32 key = 0, pidx = 0, vs_id, be_id;
	struct self_cfg *sc;
	struct pair *pr = NULL;
	struct flow_key fk = {};
	struct expect_key ek = {};
	struct expect x;
	struct vserver *vs;
	struct backend *be;
	struct flow nf = {};
	struct rflow rf = {};
	struct flow *f;
	__u64 now;
	__u8 tf;

	if (!p)
		return XDP_ABORTED;
	sc = bpf_map_lookup_elem(&self, &key);
	if (sc && sc->npairs) {
		pr = owner_pair(sc, p->src, p->family, 0, &pidx);
		if (pr && !(pr->flags & PAIR_F_LOCAL) && !steered)
			return STEER_CODE(pidx, 0, VS_NONE);
	}
	__builtin_memcpy(fk.src, p->src, 16);
	__builtin_memcpy(fk.dst, p->dst, 16);
	fk.sport = p->sport;
	fk.dport = p->dport;
	fk.proto = p->proto;
	fk.family = p->family;
	tf = tcp_flags(ctx, p);
	f = bpf_map_lookup_elem(&flows, &fk);
	/* a SYN on a closed data connection's tuple is a new one: it needs an
	 * expectation, never a backend of the control connection's vserver */
	if (f && (f->flags & FLOW_F_FTP_DATA) && (f->flags & FLOW_F_OWNED) &&
	    !((f->flags & FLOW_F_CLOSING) && (tf & (TCP_SYN | TCP_ACK)) == TCP_SYN))
		return FTP_OWNED_CODE(f->vs_id & VS_NONE);
	if ((tf & (TCP_SYN | TCP_ACK | TCP_RST)) != TCP_SYN) {
		alg_count(ALG_FTP_NOT_SYN);
		return pass(REASON_PASS_VIP_NO_VSERVER);
	}
	__builtin_memcpy(ek.src, p->src, 16);
	__builtin_memcpy(ek.dst, p->dst, 16);
	ek.dport = p->dport;
	ek.family = p->family;
	if (take_expect(&ek, 1, &x))
		return pass(REASON_PASS_VIP_NO_VSERVER);
	vs_id = x.vs_id;
	be_id = x.backend_id;
	vs = bpf_map_lookup_elem(&vs_byid, &vs_id);
	if (!vs || !(vs->flags & VS_F_FTP))
		return pass(REASON_PASS_VIP_NO_VSERVER);
	be = lookup_backend(be_id);
	if (!be || be->family != p->family) {
		alg_count(ALG_FTP_DATA_REFUSED);
		return vs_verdict(vs_id, REASON_DROP_NO_BACKEND, XDP_DROP);
	}
	now = bpf_ktime_get_coarse_ns();
	nf.backend_id = be_id;
	nf.vs_id = vs_id;
	nf.flags = FLOW_F_OWNED | FLOW_F_FTP_DATA | ((vs->flags & VS_F_MIRROR) ? FLOW_F_MIRROR : 0);
	nf.owner = pr ? pr->id : 0;
	nf.created_ns = now;
	nf.seen_ns = now;
	rflow_set(&rf, p->src, p->dst, p->sport, p->dport, vs_id, be_id);
	if (vs->flags & VS_F_SNAT) {
		const __u32 *snip = pair_snip(pr, p->family);
		__u16 sp = 0;

		rf.flags = FLOW_F_SNAT;
		if (pr && snip)
			sp = snat_alloc(pr, snip, pidx & (MAX_PAIRS - 1), p, be, p->dport, &rf);
		if (!sp || !snip) {
			alg_count(ALG_FTP_DATA_REFUSED);
			return vs_verdict(vs_id, REASON_DROP_NO_SNAT, XDP_DROP);
		}
		nf.flags |= FLOW_F_SNAT;
		__builtin_memcpy(nf.snat, snip, 16);
		nf.snat_port = sp;
	} else {
		struct flow_key rk = {};

		__builtin_memcpy(rk.src, be->addr, 16);
		__builtin_memcpy(rk.dst, p->src, 16);
		rk.sport = p->dport;
		rk.dport = p->sport;
		rk.proto = p->proto;
		rk.family = p->family;
		bpf_map_update_elem(&rflows, &rk, &rf, BPF_ANY);
	}
	bpf_map_update_elem(&flows, &fk, &nf, BPF_ANY);
	conns_add(be_id, 1);
	if (vs->flags & VS_F_MIRROR)
		emit(EVENT_NEW, &fk, &nf, now);
	alg_count(ALG_FTP_DATA_OPEN);
	return FTP_OWNED_CODE(vs_id & VS_NONE);
}

/* handle_ftp_data_reply takes TCP packets from an FTP backend's address on
 * a port without reverse entry: the backend's side of data connections.
 * A packet with a reply entry goes to handle_owned_reply; elsewhere than at
 * the owner of the destination's address it is steered there; at the
 * owner, a SYN that an expectation waits for (active: backend -> client:port)
 * opens the flow: client:port -> VIP:backend port forwards to the backend,
 * and the SYN and what follows from the backend leave from the VIP. The
 * port is kept, so a backend that connects from 20 (vsftpd
 * connect_from_port_20) appears as VIP:20. Active data connections are never
 * source-NATed: the backend connects to the client itself. Anything else
 * passes. */
HANDLER int handle_ftp_data_reply(struct xdp_md *ctx, struct pkt *p, int steered)
{
	__u32 key = 0, pidx = 0, vs_id, be_id;
	struct self_cfg *sc;
	struct pair *pr = NULL;
	struct flow_key fk = {}, rk = {};
	struct expect_key ek = {};
	struct expect x;
	struct vserver *vs;
	struct backend *be;
	struct flow nf = {};
	struct rflow rf = {};
	struct rflow *r;
	__u64 now;
	__u8 tf;

	if (!p)
		return XDP_ABORTED;
	__builtin_memcpy(rk.src, p->src, 16);
	__builtin_memcpy(rk.dst, p->dst, 16);
	rk.sport = p->sport;
	rk.dport = p->dport;
	rk.proto = p->proto;
	rk.family = p->family;
	r = bpf_map_lookup_elem(&rflows, &rk);
	if (r)
		return OWNED_REPLY_CODE(r->vs_id & VS_NONE) | OWNED_REPLY_DATA;
	sc = bpf_map_lookup_elem(&self, &key);
	if (sc && sc->npairs) {
		pr = owner_pair(sc, p->dst, p->family, 0, &pidx);
		if (pr && !(pr->flags & PAIR_F_LOCAL) && !steered)
			return STEER_CODE(pidx, 1, VS_NONE);
	}
	tf = tcp_flags(ctx, p);
	if ((tf & (TCP_SYN | TCP_ACK | TCP_RST)) != TCP_SYN) {
		/* No reply entry, but the flow may be here: a takeover installs
		 * data flows without theirs (see handle_owned_reply). It is
		 * rebuilt from the flow client:port -> VIP:backend port, for
		 * each VIP this backend serves, and recorded. */
		struct addr_key ak = {};
		struct ftp_vip_list *vl;
		__u32 i;

		__builtin_memcpy(ak.addr, p->src, 16);
		ak.family = p->family;
		vl = bpf_map_lookup_elem(&ftp_vips, &ak);
		if (!vl)
			return pass(REASON_PASS_NOT_OURS);
		for (i = 0; i < FTP_MAX_VIPS; i++) {
			struct flow *f;

			if (i >= vl->n)
				break;
			__builtin_memcpy(fk.src, p->dst, 16);
			__builtin_memcpy(fk.dst, vl->vip[i], 16);
			fk.sport = p->dport;
			fk.dport = p->sport;
			fk.proto = p->proto;
			fk.family = p->family;
			f = bpf_map_lookup_elem(&flows, &fk);
			if (!f || (f->flags & (FLOW_F_OWNED | FLOW_F_FTP_DATA)) != (FLOW_F_OWNED | FLOW_F_FTP_DATA) ||
			    (f->flags & FLOW_F_SNAT))
				continue;
			be = lookup_backend(f->backend_id);
			if (!be || be->addr[0] != p->src[0] || be->addr[1] != p->src[1] ||
			    be->addr[2] != p->src[2] || be->addr[3] != p->src[3])
				continue;
			vs_id = f->vs_id;
			rflow_set(&rf, fk.src, fk.dst, fk.sport, fk.dport, vs_id, f->backend_id);
			bpf_map_update_elem(&rflows, &rk, &rf, BPF_NOEXIST);
			return OWNED_REPLY_CODE(vs_id & VS_NONE) | OWNED_REPLY_DATA;
		}
		return pass(REASON_PASS_NOT_OURS);
	}
	__builtin_memcpy(ek.src, p->src, 16);
	__builtin_memcpy(ek.dst, p->dst, 16);
	ek.dport = p->dport;
	ek.family = p->family;
	if (take_expect(&ek, 0, &x))
		return pass(REASON_PASS_NOT_OURS);
	vs_id = x.vs_id;
	be_id = x.backend_id;
	vs = bpf_map_lookup_elem(&vs_byid, &vs_id);
	if (!vs || !(vs->flags & VS_F_FTP))
		return pass(REASON_PASS_NOT_OURS);
	be = lookup_backend(be_id);
	if (!be || be->family != p->family) {
		alg_count(ALG_FTP_DATA_REFUSED);
		return vs_verdict(vs_id, REASON_DROP_NO_BACKEND, XDP_DROP);
	}
	now = bpf_ktime_get_coarse_ns();
	__builtin_memcpy(fk.src, p->dst, 16);
	__builtin_memcpy(fk.dst, x.to, 16);
	fk.sport = p->dport;
	fk.dport = p->sport;
	fk.proto = p->proto;
	fk.family = p->family;
	nf.backend_id = be_id;
	nf.vs_id = vs_id;
	nf.flags = FLOW_F_OWNED | FLOW_F_FTP_DATA | ((vs->flags & VS_F_MIRROR) ? FLOW_F_MIRROR : 0);
	nf.owner = pr ? pr->id : 0;
	nf.created_ns = now;
	nf.seen_ns = now;
	rflow_set(&rf, p->dst, x.to, p->dport, p->sport, vs_id, be_id);
	bpf_map_update_elem(&rflows, &rk, &rf, BPF_ANY);
	bpf_map_update_elem(&flows, &fk, &nf, BPF_ANY);
	conns_add(be_id, 1);
	if (vs->flags & VS_F_MIRROR)
		emit(EVENT_NEW, &fk, &nf, now);
	alg_count(ALG_FTP_DATA_OPEN);
	return OWNED_REPLY_CODE(vs_id & VS_NONE) | OWNED_REPLY_DATA;
}

/* handle_reverse_fragment: fragments from a service are rewritten only when
 * the service's reverse entry is for any port and its vserver is on port
 * "*": then the source address alone changes and every fragment can be
 * rewritten alike. Other fragments from services pass and are counted. */
HANDLER int handle_reverse_fragment(struct xdp_md *ctx, struct pkt *p)
{
	struct bpf_fib_lookup fp;
	struct rev_key k = {};
	struct rev *r;
	__u32 why;
	int rc;

	if (!p)
		return XDP_ABORTED;
	if (!(addr_flags(p->src, p->family) & ADDR_F_BACKEND))
		return pass(REASON_PASS_NOT_OURS);
	if (addr_flags(p->dst, p->family) & ADDR_F_LOCAL)
		return pass(REASON_PASS_LOCAL);
	__builtin_memcpy(k.addr, p->src, 16);
	k.proto = p->proto;
	k.family = p->family;
	r = bpf_map_lookup_elem(&reverse, &k);
	if (!r || r->vport != 0 || r->family != p->family)
		return pass(REASON_PASS_FRAGMENT);
	rc = fib(ctx, p, p->proto, r->vip, p->dst, p->sport, p->dport, &fp, bpf_ktime_get_coarse_ns(),
		 NULL);
	why = fib_refused(rc);
	if (why)
		return be_vs_verdict(r->vs_id, r->backend_id, why, XDP_DROP);
	if (rewrite(ctx, p, 1, r->vip, p->sport))
		return XDP_ABORTED;
	vs_add(r->vs_id, ctx->data_end - ctx->data, 0, 1);
	be_add(r->backend_id, ctx->data_end - ctx->data, 0, 1);
	return send(ctx, rc, &fp, r->vs_id, r->backend_id, REASON_FWD_FRAGMENT);
}

/* handle_fragment (for a VIP): a non-first fragment has no ports, so neither the
 * vserver's port nor SRCIPSRCPORTHASH can be applied to it. Fragments for a
 * VIP are forwarded only by a wildcard-port ("*") STATELESS vserver with
 * SOURCEIPHASH, for every fragment of a datagram (first and later) alike, so
 * that all of them reach the same backend; no flow entry is made. Any other
 * fragment for a VIP passes to the kernel and is counted. Fragments from
 * services: see handle_reverse_fragment. */
HANDLER int handle_fragment(struct xdp_md *ctx, struct pkt *p)
{
	struct bpf_fib_lookup fp;
	struct backend *be;
	struct vserver *vs;
	__u32 be_id, epoch = 0, why;
	__u16 nport;
	int rc;

	if (!p)
		return XDP_ABORTED;

	vs = lookup_vserver(p->dst, 0, p->proto, p->family, 0);
	if (!vs)
		return pass(REASON_PASS_FRAGMENT);
	if (vs->method != METHOD_SOURCEIP || !(vs->flags & VS_F_STATELESS) || vs->mode != MODE_NAT)
		return vs_verdict(vs->id, REASON_PASS_FRAGMENT, XDP_PASS);
	be_id = pick(vs, p->src, p->family, 0, &epoch);
	be = lookup_backend(be_id);
	if (!be || be->family != p->family)
		return vs_verdict(vs->id, REASON_DROP_NO_BACKEND, XDP_DROP);
	nport = (p->frag == FRAG_FIRST && be->port) ? be->port : p->dport;
	rc = fib(ctx, p, p->proto, p->src, be->addr, p->sport, nport, &fp, bpf_ktime_get_coarse_ns(),
		 bpf_map_lookup_elem(&backend_fib, &be_id));
	why = fib_refused(rc);
	if (why)
		return be_vs_verdict(vs->id, be_id, why, XDP_DROP);
	if (rewrite(ctx, p, 0, be->addr, nport))
		return XDP_ABORTED;
	vs_add(vs->id, ctx->data_end - ctx->data, 0, 0);
	be_add(be_id, ctx->data_end - ctx->data, 0, 0);
	return send(ctx, rc, &fp, vs->id, be_id, REASON_FWD_FRAGMENT);
}

/* handle_reverse rewrites backend -> client packets back to VIP:vport. */
HANDLER int handle_reverse(struct xdp_md *ctx, struct pkt *p)
{
	struct bpf_fib_lookup fp;
	struct fib_key ck = {};
	struct fib_entry *ce = NULL;
	struct rev *r;
	__u32 why, sflags, gen;
	__u16 nport;
	__u64 now;
	int rc;

	if (!p)
		return XDP_ABORTED;
	/* the cache generation, read before the entries a hot entry copies */
	gen = cur_gen();
	sflags = addr_flags(p->src, p->family);
	if (!(sflags & ADDR_F_BACKEND))
		return pass(REASON_PASS_NOT_OURS);
	if (addr_flags(p->dst, p->family) & ADDR_F_LOCAL)
		return pass(REASON_PASS_LOCAL);
	r = lookup_reverse(p->src, p->sport, p->proto, p->family);
	if (!r || r->family != p->family) {
		if ((sflags & ADDR_F_FTP) && p->proto == IPPROTO_TCP)
			return FTP_DATA_REPLY_CODE;
		return pass(REASON_PASS_NOT_OURS);
	}
	if (r->flags & REV_F_STATEFUL)
		return OWNED_REPLY_CODE(r->vs_id) | ((r->flags & REV_F_FTP) ? OWNED_REPLY_FTP : 0);
	nport = r->vport ? r->vport : p->sport;
	now = bpf_ktime_get_coarse_ns();
	/* the client's fib_cache entry, found once: fib uses and refreshes it
	 * in place (per-CPU), and the hot entry copies it */
	if (fib_cache_ns) {
		__builtin_memcpy(ck.addr, p->dst, 16);
		ck.ifindex = ctx->ingress_ifindex;
		ck.family = p->family;
		ce = bpf_map_lookup_elem(&fib_cache, &ck);
	}
	rc = fib(ctx, p, p->proto, r->vip, p->dst, nport, p->dport, &fp, now, ce);
	why = fib_refused(rc);
	if (why)
		return be_vs_verdict(r->vs_id, r->backend_id, why, XDP_DROP);
	/* The reply's rewrite enters the hot cache with the route answer it
	 * used, so that the flow's next replies cost no hash lookup (hot_set,
	 * rev). A SYN-ACK never reaches the cache's probe: the replies after
	 * it do. */
	if (rc == BPF_FIB_LKUP_RET_SUCCESS && fib_cache_ns && gen && hot_slots) {
		if (!ce) /* fib added the answer */
			ce = bpf_map_lookup_elem(&fib_cache, &ck);
		if (ce && p->l3_end - p->l3 <= ce->max_len && fib_entry_for(ce, p->dst, ck.ifindex, now, gen))
			hot_set(p, gen, r->vs_id, r->backend_id, r->vip, nport, 1, ce);
	}
	if (rewrite(ctx, p, 1, r->vip, nport))
		return XDP_ABORTED;
	vs_add(r->vs_id, ctx->data_end - ctx->data, 0, 1);
	be_add(r->backend_id, ctx->data_end - ctx->data, 0, 1);
	return send(ctx, rc, &fp, r->vs_id, r->backend_id, REASON_FWD_REVERSE);
}

/* parse_inner reads the packet quoted by an ICMP error: an IP header with
 * TCP or UDP behind it and at least the 8 bytes that hold the ports.
 * Returns 0 when usable. */
static __always_inline int parse_inner(struct xdp_md *ctx, const struct pkt *p, struct inner *in)
{
	__u32 off = p->l4 + 8;

	in->l3 = off;
	if (p->family == FAMILY_V4) {
		struct iphdr *ip = ptr_at(ctx, off, sizeof(*ip));

		if (!ip || off + sizeof(*ip) > p->l3_end)
			return -1;
		if (ip->version != 4 || ip->ihl < 5)
			return -1;
		if (ip->frag_off & bpf_htons(0x1fff))
			return -1;
		in->src[0] = ip->saddr;
		in->dst[0] = ip->daddr;
		in->proto = ip->protocol;
		off += ip->ihl * 4;
	} else {
		struct ipv6hdr *ip6 = ptr_at(ctx, off, sizeof(*ip6));

		if (!ip6 || off + sizeof(*ip6) > p->l3_end)
			return -1;
		if (ip6->version != 6)
			return -1;
		__builtin_memcpy(in->src, &ip6->saddr, 16);
		__builtin_memcpy(in->dst, &ip6->daddr, 16);
		in->proto = ip6->nexthdr;
		off += sizeof(*ip6);
	}
	if (in->proto != IPPROTO_TCP && in->proto != IPPROTO_UDP)
		return -1;
	in->l4 = off;
	{
		__u16 *ports = ptr_at(ctx, off, 8);

		if (!ports || off + 8 > p->l3_end)
			return -1;
		in->sport = ports[0];
		in->dport = ports[1];
	}
	in->csum_off = 0;
	if (in->proto == IPPROTO_UDP)
		in->csum_off = 6;
	else if (off + 18 <= p->l3_end)
		in->csum_off = 16;
	return 0;
}

/* icmp_rewrite translates an ICMP error: the outer source (outer_src) or
 * destination becomes oaddr; the quoted packet's source (inner_src) or
 * destination becomes iaddr:iport. The IPv4 headers, the quoted L4 checksum
 * (when quoted) and the ICMP checksum (ICMPv6: with its pseudo-header) are
 * updated incrementally. */
static __always_inline int icmp_rewrite(struct xdp_md *ctx, const struct pkt *p,
					const struct inner *in, int outer_src, const __u32 *oaddr,
					int inner_src, const __u32 *iaddr, __u16 iport)
{
	int v6 = p->family == FAMILY_V6;
	const __u32 *oold = outer_src ? p->src : p->dst;
	const __u32 *iold = inner_src ? in->src : in->dst;
	__u16 oport = inner_src ? in->sport : in->dport;
	__u32 d_outer = delta_addr(0, oold, oaddr, v6);
	__u32 d_iaddr = delta_addr(0, iold, iaddr, v6);
	__u32 d_icmp = 0;
	__u16 *ic;

	if (!v6) {
		struct iphdr *ip = ptr_at(ctx, p->l3, sizeof(*ip));
		struct iphdr *iip = ptr_at(ctx, in->l3, sizeof(*iip));
		__u16 oc, nc;

		if (!ip || !iip)
			return -1;
		ip->check = csum_apply(ip->check, d_outer);
		if (outer_src)
			ip->saddr = oaddr[0];
		else
			ip->daddr = oaddr[0];
		oc = iip->check;
		nc = csum_apply(oc, d_iaddr);
		iip->check = nc;
		d_icmp = delta_add16(d_iaddr, oc, nc);
		if (inner_src)
			iip->saddr = iaddr[0];
		else
			iip->daddr = iaddr[0];
	} else {
		struct ipv6hdr *ip6 = ptr_at(ctx, p->l3, sizeof(*ip6));
		struct ipv6hdr *iip6 = ptr_at(ctx, in->l3, sizeof(*iip6));

		if (!ip6 || !iip6)
			return -1;
		if (outer_src)
			__builtin_memcpy(&ip6->saddr, oaddr, 16);
		else
			__builtin_memcpy(&ip6->daddr, oaddr, 16);
		if (inner_src)
			__builtin_memcpy(&iip6->saddr, iaddr, 16);
		else
			__builtin_memcpy(&iip6->daddr, iaddr, 16);
		/* the ICMPv6 pseudo-header holds the outer addresses */
		d_icmp = csum_fold32(d_outer + d_iaddr);
	}
	{
		__u16 *pp = ptr_at(ctx, in->l4 + (inner_src ? 0 : 2), 2);

		if (!pp)
			return -1;
		*pp = iport;
		d_icmp = delta_add16(d_icmp, oport, iport);
	}
	if (in->csum_off) {
		__u16 *cp = ptr_at(ctx, in->l4 + in->csum_off, 2);
		__u16 oc, nc;

		if (!cp)
			return -1;
		oc = *cp;
		if (!(in->proto == IPPROTO_UDP && !v6 && oc == 0)) {
			nc = csum_apply(oc, delta_add16(d_iaddr, oport, iport));
			if (in->proto == IPPROTO_UDP && nc == 0)
				nc = 0xffff;
			*cp = nc;
			d_icmp = delta_add16(d_icmp, oc, nc);
		}
	}
	ic = ptr_at(ctx, p->l4 + 2, 2);
	if (!ic)
		return -1;
	*ic = csum_apply(*ic, d_icmp);
	return 0;
}

/* handle_icmp translates ICMP errors about VIP flows (IPv4 destination
 * unreachable, including fragmentation needed; ICMPv6 destination unreachable
 * and packet too big):
 *
 *   client side: the error is addressed to a VIP and quotes a packet
 *   VIP:vport -> client (one we sent on a backend's behalf). It goes to the
 *   backend the flow maps to (flow table, else the vserver's table), outer
 *   destination and quoted source rewritten to the backend.
 *
 *   backend side: the error is addressed to a client and quotes a packet
 *   client -> backend:port of a bound service (one we forwarded). It goes to
 *   the client with the quoted destination rewritten back to VIP:vport and
 *   the outer source set to the VIP, so the client's socket matches it.
 */
HANDLER int handle_icmp(struct xdp_md *ctx, struct pkt *p)
{
	struct bpf_fib_lookup fp;
	struct inner in = {};
	int err, rc, v6, vip;
	__u8 *type;
	__u32 why;

	if (!p)
		return XDP_ABORTED;
	v6 = p->family == FAMILY_V6;
	vip = is_vip(p);
	type = ptr_at(ctx, p->l4, 1);
	if (!type)
		return XDP_ABORTED;
	if (p->frag)
		return pass(vip ? REASON_PASS_FRAGMENT : REASON_PASS_NOT_OURS);
	if (v6)
		err = *type == ICMPV6_DEST_UNREACH || *type == ICMPV6_PKT_TOOBIG;
	else
		err = *type == ICMP_DEST_UNREACH;
	if (!err)
		return pass(vip ? REASON_PASS_VIP_NO_VSERVER : REASON_PASS_NOT_OURS);

	if (vip) {
		struct vserver *vs;
		struct backend *be;
		struct flow_key fk = {};
		struct flow *f;
		__u32 be_id = 0, epoch = 0;
		__u16 nport;

		if (parse_inner(ctx, p, &in))
			return drop(REASON_DROP_BAD_ICMP);
		/* the quoted packet must come from the VIP the error goes to */
		if (in.src[0] != p->dst[0] || in.src[1] != p->dst[1] || in.src[2] != p->dst[2] ||
		    in.src[3] != p->dst[3])
			return pass(REASON_PASS_ICMP_UNKNOWN);
		vs = lookup_vserver(in.src, in.sport, in.proto, p->family, 1);
		if (!vs || !(vs->flags & VS_F_STATELESS) || vs->mode != MODE_NAT)
			return pass(REASON_PASS_ICMP_UNKNOWN);
		__builtin_memcpy(fk.src, in.dst, 16);
		__builtin_memcpy(fk.dst, in.src, 16);
		fk.sport = in.dport;
		fk.dport = in.sport;
		fk.proto = in.proto;
		fk.family = p->family;
		f = bpf_map_lookup_elem(&flows, &fk);
		if (f && f->vs_id == vs->id)
			be_id = f->backend_id;
		else
			be_id = pick(vs, in.dst, p->family, in.dport, &epoch);
		be = lookup_backend(be_id);
		if (!be || be->family != p->family)
			return vs_verdict(vs->id, REASON_DROP_NO_BACKEND, XDP_DROP);
		nport = be->port ? be->port : in.sport;
		rc = fib(ctx, p, p->proto, p->src, be->addr, 0, 0, &fp, bpf_ktime_get_coarse_ns(),
			 bpf_map_lookup_elem(&backend_fib, &be_id));
		why = fib_refused(rc);
		if (why)
			return be_vs_verdict(vs->id, be_id, why, XDP_DROP);
		if (icmp_rewrite(ctx, p, &in, 0, be->addr, 1, be->addr, nport))
			return XDP_ABORTED;
		return send(ctx, rc, &fp, vs->id, be_id, REASON_FWD_ICMP_BACKEND);
	} else {
		struct rev *r;
		__u16 nport;

		if (parse_inner(ctx, p, &in))
			return pass(REASON_PASS_ICMP_UNKNOWN);
		/* about the node's own connection (a health probe): the node's */
		if (addr_flags(p->dst, p->family) & ADDR_F_LOCAL)
			return pass(REASON_PASS_LOCAL);
		r = lookup_reverse(in.dst, in.dport, in.proto, p->family);
		if (!r || r->family != p->family)
			return pass(REASON_PASS_NOT_OURS);
		/* the quoted packet must come from the client the error goes to */
		if (in.src[0] != p->dst[0] || in.src[1] != p->dst[1] || in.src[2] != p->dst[2] ||
		    in.src[3] != p->dst[3])
			return pass(REASON_PASS_ICMP_UNKNOWN);
		nport = r->vport ? r->vport : in.dport;
		rc = fib(ctx, p, p->proto, r->vip, p->dst, 0, 0, &fp, bpf_ktime_get_coarse_ns(), NULL);
		why = fib_refused(rc);
		if (why)
			return be_vs_verdict(r->vs_id, r->backend_id, why, XDP_DROP);
		if (icmp_rewrite(ctx, p, &in, 1, r->vip, 0, r->vip, nport))
			return XDP_ABORTED;
		return send(ctx, rc, &fp, r->vs_id, r->backend_id, REASON_FWD_ICMP_CLIENT);
	}
}

/* not_for_vip handles a packet that is not for a VIP: a reply from a bound
 * service, or not ours. */
static __always_inline int not_for_vip(struct xdp_md *ctx, struct pkt *p, int steered)
{
	int rc;

	if (!maybe_ours(p->src, p->family))
		return pass(REASON_PASS_NOT_OURS);
	rc = handle_reverse(ctx, p);
	if (rc == FTP_DATA_REPLY_CODE)
		rc = handle_ftp_data_reply(ctx, p, steered);
	if (rc & OWNED_REPLY_FLAG)
		return handle_owned_reply(ctx, p, (__u32)rc >> 16,
					  (steered ? 1 : 0) | (rc & (OWNED_REPLY_FTP | OWNED_REPLY_DATA)));
	return rc;
}

static __always_inline int dispatch1(struct xdp_md *ctx, struct pkt *p, int steered)
{
	struct vserver *vs;
	__u32 gen;

	if ((p->proto == IPPROTO_ICMP && p->family == FAMILY_V4) ||
	    (p->proto == IPPROTO_ICMPV6 && p->family == FAMILY_V6))
		return handle_icmp(ctx, p);
	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP)
		return pass(maybe_ours(p->dst, p->family) && is_vip(p) ? REASON_PASS_VIP_NO_VSERVER
									: REASON_PASS_NOT_OURS);
	if (p->frag)
		return maybe_ours(p->dst, p->family) && is_vip(p) ? handle_fragment(ctx, p)
								  : handle_reverse_fragment(ctx, p);
	if (!maybe_ours(p->dst, p->family))
		return not_for_vip(ctx, p, steered);

	gen = cur_gen();
	vs = lookup_vserver(p->dst, p->dport, p->proto, p->family, 0);
	if (!vs) {
		__u32 af = addr_flags(p->dst, p->family);

		if (!(af & ADDR_F_VIP))
			return not_for_vip(ctx, p, steered);
		if (p->dport != 0)
			vs = lookup_vserver(p->dst, 0, p->proto, p->family, 0);
		if (!vs && (af & ADDR_F_FTP) && p->proto == IPPROTO_TCP) {
			int rc = handle_ftp_data(ctx, p, steered);
			__u32 id;

			if (!(rc & FTP_OWNED_FLAG) || (rc & STEER_FLAG))
				return rc;
			id = (__u32)rc >> 16;
			vs = bpf_map_lookup_elem(&vs_byid, &id);
			if (!vs)
				return pass(REASON_PASS_VIP_NO_VSERVER);
		}
		if (!vs)
			return pass(REASON_PASS_VIP_NO_VSERVER);
	}
	{
		struct vserver v = *vs;

		if ((v.flags & (VS_F_STATELESS | VS_F_OWNED)) == VS_F_OWNED)
			return handle_owned(ctx, p, &v, steered);
		return handle_vserver(ctx, p, &v, gen);
	}
}

/* dispatch sends a parsed packet to its handler. steered: it came
 * encapsulated from another node, which found this node its owner. */
static __always_inline int dispatch(struct xdp_md *ctx, struct pkt *p, int steered)
{
	int rc = dispatch1(ctx, p, steered);

	if (rc & STEER_FLAG)
		return steer(ctx, p, rc);
	if (rc & FTP_ALG_FLAG) {
		ftp_alg(ctx, p);
		rc &= ~FTP_ALG_FLAG;
	}
	return rc;
}

#define DECAP_NOT_OURS -1
#define DECAP_DONE -2

/* handle_decap takes a steered packet (UDP to steer_port at this node's
 * backplane address) from a cluster member, strips the encapsulation and
 * handles the inner packet as its owner. DECAP_NOT_OURS: not for this node's
 * backplane address, an ordinary UDP packet. DECAP_DONE: the frame is now
 * the inner packet, to be parsed and dispatched as steered. */
HANDLER int handle_decap(struct xdp_md *ctx, struct pkt *p)
{
	__u32 key = 0, inner;
	struct self_cfg *sc;
	__u8 dmac[ETH_ALEN], smac[ETH_ALEN];
	__u8 *v;
	int st;

	if (!p)
		return XDP_ABORTED;
	sc = bpf_map_lookup_elem(&self, &key);
	if (!sc || sc->family != p->family || sc->addr[0] != p->dst[0] || sc->addr[1] != p->dst[1] ||
	    sc->addr[2] != p->dst[2] || sc->addr[3] != p->dst[3])
		return DECAP_NOT_OURS;
	if (!(addr_flags(p->src, p->family) & ADDR_F_MEMBER))
		return drop(REASON_DROP_STEER_PEER);
	{
		struct tandem_hdr *th = ptr_at(ctx, p->l4 + 8, sizeof(*th));

		if (!th || p->l4 + 8 + sizeof(*th) > p->l3_end || th->version != TANDEM_ENCAP_VERSION)
			return drop(REASON_DROP_STEER_BAD);
	}
	inner = p->l4 + 8 + sizeof(struct tandem_hdr);
	v = ptr_at(ctx, inner, 1);
	if (!v || inner >= p->l3_end)
		return drop(REASON_DROP_STEER_BAD);
	{
		struct ethhdr *eth = ptr_at(ctx, 0, sizeof(*eth));

		if (!eth)
			return XDP_ABORTED;
		__builtin_memcpy(dmac, eth->h_dest, ETH_ALEN);
		__builtin_memcpy(smac, eth->h_source, ETH_ALEN);
	}
	st = *v >> 4;
	if (st != 4 && st != 6)
		return drop(REASON_DROP_STEER_BAD);
	if (inner < sizeof(struct ethhdr) ||
	    bpf_xdp_adjust_head(ctx, (int)(inner - sizeof(struct ethhdr))))
		return drop(REASON_DROP_STEER_BAD);
	{
		struct ethhdr *eth = ptr_at(ctx, 0, sizeof(*eth));

		if (!eth)
			return XDP_ABORTED;
		__builtin_memcpy(eth->h_dest, dmac, ETH_ALEN);
		__builtin_memcpy(eth->h_source, smac, ETH_ALEN);
		eth->h_proto = bpf_htons(st == 4 ? ETH_P_IP : ETH_P_IPV6);
	}
	return DECAP_DONE;
}

/* xdp_full is the whole data path, tail-called by xdp_lb for every packet
 * its shortcuts do not settle. */
SEC("xdp")
int xdp_full(struct xdp_md *ctx)
{
	struct pkt p = {};
	int st = parse(ctx, &p);

	switch (st) {
	case P_OK:
		break;
	case P_NOT_IP:
		return pass(REASON_PASS_NOT_IP);
	case P_BAD_L2:
		return pass(REASON_PASS_BAD_L2);
	case P_BAD_L3_NODST:
		return pass(REASON_PASS_BAD_L3);
	case P_BAD_L3:
		return is_vip(&p) ? drop(REASON_DROP_BAD_L3) : pass(REASON_PASS_BAD_L3);
	default:
		return is_vip(&p) ? drop(REASON_DROP_BAD_L4) : pass(REASON_PASS_BAD_L4);
	}

	if (steer_port && p.proto == IPPROTO_UDP && p.dport == steer_port && !p.frag) {
		st = handle_decap(ctx, &p);
		if (st == DECAP_DONE) {
			__builtin_memset(&p, 0, sizeof(p));
			if (parse(ctx, &p) != P_OK)
				return drop(REASON_DROP_STEER_BAD);
			return dispatch(ctx, &p, 1);
		}
		if (st != DECAP_NOT_OURS)
			return st;
	}
	return dispatch(ctx, &p, 0);
}

/* progs[0] is xdp_full. A tail call, not a BPF function call: xdp_full's
 * deepest chain of handler frames has the whole 512-byte stack to itself. */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, int(struct xdp_md *));
} progs SEC(".maps") = {
	.values = { [0] = (void *)&xdp_full },
};

#define FAST_MISS -1

/* fast settles, with no hash lookup and no function call, the two commonest
 * cases, and leaves everything else (FAST_MISS) to xdp_full:
 *
 *   - a TCP or UDP packet of a stateless flow in this CPU's hot cache, made
 *     under the current cache generation (handle_vserver fills it), from
 *     the same ingress interface and no longer than the cached route
 *     accepted: forwarded as xdp_full would, counters included;
 *   - a TCP or UDP packet whose destination and source are both clear in
 *     addr_filter: neither for a VIP nor from a service, passed.
 *
 * Only untagged frames, IPv4 without options or fragmentation and IPv6
 * without extension headers are looked at, validated as parse does; the
 * rest (and steering traffic) goes to xdp_full. */
static __always_inline int fast(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 frame_len = end - data, l3_end, ports, len, gen;
	__u32 s0, s1 = 0, s2 = 0, s3 = 0, d0, d1 = 0, d2 = 0, d3 = 0;
	struct ethhdr *eth = data;
	struct hot_entry *e;
	__u8 proto, family, syn = 0;
	__u16 *l4csum, *l4port, *l4sport;
	int v6;

	if (data + sizeof(*eth) > end)
		return FAST_MISS;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + sizeof(*eth);
		__u32 tot;

		if ((void *)(ip + 1) > end)
			return FAST_MISS;
		if (*(__u8 *)ip != 0x45 || (ip->frag_off & bpf_htons(0x3fff)))
			return FAST_MISS;
		tot = bpf_ntohs(ip->tot_len);
		if (tot < sizeof(*ip) || sizeof(*eth) + tot > frame_len)
			return FAST_MISS;
		l3_end = sizeof(*eth) + tot;
		proto = ip->protocol;
		family = FAMILY_V4;
		v6 = 0;
		s0 = ip->saddr;
		d0 = ip->daddr;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + sizeof(*eth);
		__u32 plen;

		if ((void *)(ip6 + 1) > end)
			return FAST_MISS;
		if (ip6->version != 6)
			return FAST_MISS;
		plen = bpf_ntohs(ip6->payload_len);
		if (plen == 0 || sizeof(*eth) + sizeof(*ip6) + plen > frame_len)
			return FAST_MISS;
		l3_end = sizeof(*eth) + sizeof(*ip6) + plen;
		proto = ip6->nexthdr;
		family = FAMILY_V6;
		v6 = 1;
		s0 = ip6->saddr.in6_u.u6_addr32[0];
		s1 = ip6->saddr.in6_u.u6_addr32[1];
		s2 = ip6->saddr.in6_u.u6_addr32[2];
		s3 = ip6->saddr.in6_u.u6_addr32[3];
		d0 = ip6->daddr.in6_u.u6_addr32[0];
		d1 = ip6->daddr.in6_u.u6_addr32[1];
		d2 = ip6->daddr.in6_u.u6_addr32[2];
		d3 = ip6->daddr.in6_u.u6_addr32[3];
	} else {
		return FAST_MISS;
	}
	{
		__u32 l4 = sizeof(*eth) + (v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr));

		if (proto == IPPROTO_TCP) {
			struct tcphdr *th = ptr_at(ctx, l4, sizeof(*th));
			__u32 doff;

			if (!th || l4 + sizeof(*th) > l3_end)
				return FAST_MISS;
			doff = th->doff * 4;
			if (doff < sizeof(*th) || l4 + doff > l3_end)
				return FAST_MISS;
			ports = *(__u32 *)th;
			syn = ((__u8 *)th)[13] & TCP_SYN;
			l4csum = &th->check;
			l4port = &th->dest;
			l4sport = &th->source;
		} else if (proto == IPPROTO_UDP) {
			struct udphdr *uh = ptr_at(ctx, l4, sizeof(*uh));
			__u32 ulen;

			if (!uh || l4 + sizeof(*uh) > l3_end)
				return FAST_MISS;
			ulen = bpf_ntohs(uh->len);
			if (ulen < sizeof(*uh) || l4 + ulen > l3_end)
				return FAST_MISS;
			if (steer_port && uh->dest == steer_port)
				return FAST_MISS;
			ports = *(__u32 *)uh;
			l4csum = &uh->check;
			l4port = &uh->dest;
			l4sport = &uh->source;
		} else {
			return FAST_MISS;
		}
	}

	/* neither for a VIP nor from a service: not ours */
	if (!maybe_ours4(d0, d1, d2, d3, family) && !maybe_ours4(s0, s1, s2, s3, family))
		return pass(REASON_PASS_NOT_OURS);

	/* a SYN opens a flow: not worth a probe (a cold cache line); a
	 * SYN-ACK neither (the reply's entry is made by it) */
	if (!hot_slots || syn)
		return FAST_MISS;
	e = hot_slot(hot_hash(s0, s1, s2, s3, d0, d1, d2, d3, ports, proto));
	gen = cur_gen();
	if (!e || !gen || e->gen != gen)
		return FAST_MISS;
	if (e->ports != ports || e->proto != proto || e->family != family || e->src[0] != s0 ||
	    e->dst[0] != d0 || e->src[1] != s1 || e->src[2] != s2 || e->src[3] != s3 ||
	    e->dst[1] != d1 || e->dst[2] != d2 || e->dst[3] != d3)
		return FAST_MISS;
	len = l3_end - sizeof(*eth);
	if (len > e->max_len || e->in_ifindex != ctx->ingress_ifindex)
		return FAST_MISS;

	/* the rewrite of the destination (or of a reply's source), checksum
	 * deltas precomputed in the entry */
	if (!v6) {
		struct iphdr *ip = data + sizeof(*eth);

		if ((void *)(ip + 1) > end)
			return XDP_ABORTED;
		ip->check = csum_apply(ip->check, e->csum_ip);
		if (e->rev)
			ip->saddr = e->new_addr[0];
		else
			ip->daddr = e->new_addr[0];
	} else {
		struct ipv6hdr *ip6 = data + sizeof(*eth);

		if ((void *)(ip6 + 1) > end)
			return XDP_ABORTED;
		if (e->rev)
			__builtin_memcpy(&ip6->saddr, e->new_addr, 16);
		else
			__builtin_memcpy(&ip6->daddr, e->new_addr, 16);
	}
	if (e->rev)
		l4port = l4sport;
	*l4port = e->new_port;
	if (proto == IPPROTO_TCP || v6 || *l4csum) {
		__u16 c = csum_apply(*l4csum, e->csum_l4);

		*l4csum = (proto == IPPROTO_UDP && !c) ? 0xffff : c;
	}
	__builtin_memcpy(eth->h_dest, e->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, e->smac, ETH_ALEN);
	fwd_count(e->vs_id, e->backend_id, frame_len, 0, e->rev,
		  e->rev ? REASON_FWD_REVERSE : REASON_FWD_HIT);
	if (e->ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(e->ifindex, 0);
}

SEC("xdp")
int xdp_lb(struct xdp_md *ctx)
{
	int rc = fast(ctx);

	if (rc != FAST_MISS)
		return rc;
	bpf_tail_call(ctx, &progs, 0);
	/* not reached: the loader sets progs[0] */
	return XDP_ABORTED;
}

/* xdp_pass is the benchmark baseline, and what veth peers in tests attach to
 * get NAPI (needed to receive XDP_REDIRECTed frames). */
SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}
