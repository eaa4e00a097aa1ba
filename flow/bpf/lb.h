/* Map keys and values shared with Go (mirrored by bpf2go -type). Addresses
 * are four network-order words; an IPv4 address sits in word 0, the others
 * are zero. Ports are in network order.
 */
#ifndef TANDEM_LB_H
#define TANDEM_LB_H

#include <linux/types.h>

#define FAMILY_V4 4
#define FAMILY_V6 6

/* vserver.method */
enum method {
	METHOD_SOURCEIP = 1,	     /* SOURCEIPHASH (or SOURCEIP persistence) */
	METHOD_SOURCEIP_SOURCEPORT = 2, /* SRCIPSRCPORTHASH */
};

/* vserver.mode */
enum fwd_mode {
	MODE_NAT = 0,
	MODE_DSR = 1, /* reserved: packets of DSR vservers are dropped for now */
};

/* vserver.flags */
enum vserver_flags {
	VS_F_STATELESS = 1 << 0,
};

/* backend.flags */
enum backend_flags {
	BE_F_VALID = 1 << 0,
};

/* addr_info (value of the addrs map) */
enum addr_flags {
	ADDR_F_VIP = 1 << 0,
	ADDR_F_BACKEND = 1 << 1,
	/* An address of the node itself: replies from a backend to it (health
	 * probes, the operator's own connections) are the node's, not a
	 * client's, and must reach its stack untouched. */
	ADDR_F_LOCAL = 1 << 2,
};

/* flow.flags: reserved for stateful flows (owned, steered, closing...). */
enum flow_flags {
	FLOW_F_STATELESS = 1 << 0,
};

/* Why a packet got its verdict. Counted globally and per vserver. */
enum reason {
	REASON_NONE = 0,
	REASON_FWD_HIT,		 /* client->VIP, flow-table hit */
	REASON_FWD_NEW,		 /* client->VIP, miss: Maglev table, flow recorded */
	REASON_FWD_FRAGMENT,	 /* IP fragment forwarded by a SOURCEIPHASH wildcard vserver */
	REASON_FWD_REVERSE,	 /* backend->client, source rewritten back to VIP:vport */
	REASON_FWD_ICMP_CLIENT,	 /* ICMP error translated towards a client */
	REASON_FWD_ICMP_BACKEND, /* ICMP error translated towards a backend */
	REASON_PASS_NOT_IP,	 /* not IPv4/IPv6 */
	REASON_PASS_NOT_OURS,	 /* neither for a VIP nor from a bound service */
	REASON_PASS_BAD_L2,	 /* truncated Ethernet/VLAN header, too many tags */
	REASON_PASS_BAD_L3,	 /* malformed IP header, not for a VIP */
	REASON_PASS_BAD_L4,	 /* malformed L4 header, not for a VIP */
	REASON_PASS_VIP_NO_VSERVER, /* VIP, but no vserver for port/protocol (ping...) */
	REASON_PASS_FRAGMENT,	 /* fragment for a VIP without SOURCEIPHASH wildcard vserver */
	REASON_PASS_NOT_STATELESS, /* vserver not STATELESS: left to the stateful path */
	REASON_PASS_NO_NEIGH,	 /* fib: no neighbour; rewritten packet left to the kernel */
	REASON_PASS_ICMP_UNKNOWN, /* ICMP error about no known VIP flow or service */
	REASON_PASS_LOCAL,	 /* from a service to the node's own address (health probe) */
	REASON_DROP_BAD_L3,	 /* malformed IP header, for a VIP */
	REASON_DROP_BAD_L4,	 /* malformed L4 header, for a VIP */
	REASON_DROP_BAD_ICMP,	 /* malformed ICMP error for a VIP */
	REASON_DROP_NO_BACKEND,	 /* empty table slot or backend not set */
	REASON_DROP_FIB,	 /* fib lookup failed (no route, blackhole, forwarding off) */
	REASON_DROP_FRAG_NEEDED, /* rewritten packet larger than the egress MTU */
	REASON_DROP_UNSUPPORTED, /* DSR mode (reserved) */
	REASON_MAX,
};

struct vs_key {
	__u32 addr[4];
	__u16 port; /* 0: any port ("*") */
	__u8 proto; /* IPPROTO_TCP or IPPROTO_UDP; type ANY = one entry per protocol */
	__u8 family;
};

struct vserver {
	__u32 id;   /* index into tables, table_active, vs_stats */
	__u32 seed; /* packet-hash seed */
	__u8 method;
	__u8 mode;
	__u16 flags;
};

struct addr_key {
	__u32 addr[4];
	__u8 family;
	__u8 pad[3];
};

struct backend {
	__u32 addr[4];
	__u16 port; /* 0: keep the packet's destination port */
	__u8 family;
	__u8 flags;
};

struct rev_key {
	__u32 addr[4];
	__u16 port; /* 0: service on any port */
	__u8 proto;
	__u8 family;
};

struct rev {
	__u32 vip[4];
	__u16 vport; /* 0: keep the packet's source port */
	__u8 family;
	__u8 pad;
	__u32 vs_id;
	__u32 backend_id;
};

struct flow_key {
	__u32 src[4];
	__u32 dst[4];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 family;
	__u16 pad;
};

struct flow {
	__u32 backend_id;
	__u32 vs_id;
	__u32 epoch;	  /* table epoch the backend was taken from */
	__u16 flags;	  /* FLOW_F_*; stateful bits reserved */
	__u16 owner;	  /* reserved: owning pair for stateful flows */
	__u64 created_ns; /* bpf_ktime_get_coarse_ns at creation */
	__u64 seen_ns;	  /* refreshed at most once a second */
};

/* fib_cache: bpf_fib_lookup results (SUCCESS only), per CPU. */
struct fib_key {
	__u32 addr[4]; /* destination */
	__u32 ifindex; /* ingress interface */
	__u8 family;
	__u8 pad[3];
};

struct fib_entry {
	__u64 expires_ns; /* bpf_ktime_get_coarse_ns deadline */
	__u32 addr[4];	  /* destination the answer is for */
	__u32 in_ifindex; /* ingress interface it is for */
	__u32 ifindex;	  /* egress interface */
	__u16 max_len;	  /* largest IP length the lookup accepted (MTU check) */
	__u8 dmac[6];
	__u8 smac[6];
	__u16 pad;
};

struct vs_stats {
	__u64 packets;
	__u64 bytes;
	__u64 new_flows;
	__u64 rev_packets;
	__u64 rev_bytes;
	__u64 reasons[REASON_MAX];
};

struct be_stats {
	__u64 packets;
	__u64 bytes;
	__u64 new_flows;
	__u64 rev_packets;
	__u64 rev_bytes;
	__u64 reasons[REASON_MAX]; /* verdicts of packets once this backend was chosen */
};

#endif
