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
	METHOD_ROUNDROBIN = 3,	     /* owned vservers only: vs_lists + rr_next */
	METHOD_LEASTCONN = 4,	     /* owned vservers only: vs_lists + be_conns */
};

/* vserver.mode */
enum fwd_mode {
	MODE_NAT = 0,
	MODE_DSR = 1, /* reserved: packets of DSR vservers are dropped for now */
};

/* vserver.flags */
enum vserver_flags {
	VS_F_STATELESS = 1 << 0,
	/* Flows are owned by a pair (rendezvous over live pairs) and steered to
	 * its active member; the owner creates the entry on the first packet. */
	VS_F_OWNED = 1 << 1,
	/* connFailover STATEFUL: new and closed flows go to the events ring. */
	VS_F_MIRROR = 1 << 2,
	/* USIP OFF: source NAT to the owner pair's SNIP and a port of its range. */
	VS_F_SNAT = 1 << 3,
	/* Type FTP (Owned): the ALG reads the control connection (ftp.h) and
	 * data connections follow its expectations. The owner key is the
	 * client's address alone (port 0), so that the data connections, whose
	 * ports no other node can know, meet their control connection's owner. */
	VS_F_FTP = 1 << 4,
	/* STATELESS only: flows are not recorded in the flow table; every
	 * packet takes its backend from the active table (the hot cache copies
	 * it until the table changes). */
	VS_F_UNTRACKED = 1 << 5,
};

/* rev.flags */
enum rev_flags {
	/* The service is bound to owned vservers: replies need the flow state
	 * (rflows), found at the flow's owner. */
	REV_F_STATEFUL = 1 << 0,
	/* ... of an FTP vserver: replies are steered by the client's address
	 * alone (VS_F_FTP). */
	REV_F_FTP = 1 << 1,
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
	/* A cluster member's backplane address: steered packets are accepted
	 * only from these. */
	ADDR_F_MEMBER = 1 << 3,
	/* A pair's SNIP: replies to it are found in rflows, never steered. */
	ADDR_F_SNIP = 1 << 4,
	/* A VIP of an FTP vserver, or the address of one of its backends: TCP
	 * to that VIP on a port without vserver, or from that backend on a
	 * port without reverse entry, may be an FTP data connection. */
	ADDR_F_FTP = 1 << 5,
};

/* pair.flags */
enum pair_flags {
	PAIR_F_LIVE = 1 << 0,  /* a candidate of the rendezvous choice */
	PAIR_F_LOCAL = 1 << 1, /* this node is the pair's active member */
	PAIR_F_SNIP4 = 1 << 2, /* snip4 is set */
	PAIR_F_SNIP6 = 1 << 3, /* snip6 is set */
};

/* flow.flags */
enum flow_flags {
	FLOW_F_STATELESS = 1 << 0,
	FLOW_F_OWNED = 1 << 1,	   /* created by its owner (owned vserver) */
	FLOW_F_CLOSING = 1 << 2,   /* FIN or RST seen: counted closed, event sent */
	FLOW_F_SNAT = 1 << 3,	   /* source NAT to snat:snat_port */
	FLOW_F_INSTALLED = 1 << 4, /* installed by a takeover from the partner's mirror */
	FLOW_F_MIRROR = 1 << 5,	   /* of a mirrored vserver: its close is reported */
	FLOW_F_FTP_DATA = 1 << 6,  /* an FTP data connection, opened by an expectation */
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
	REASON_FWD_STEER,	 /* owned flow of another pair: encapsulated to its active member */
	REASON_PASS_NO_FLOW,	 /* owner, TCP non-SYN miss (or reply without flow): not given a backend */
	REASON_DROP_STEER_PEER,	 /* steered packet from an address that is no cluster member */
	REASON_DROP_STEER_BAD,	 /* steered packet with a bad Tandem header or inner packet */
	REASON_DROP_STEER_FAIL,	 /* cannot steer: no backplane config, family mismatch, no neighbour */
	REASON_DROP_NO_SNAT,	 /* USIP OFF: no SNIP for the owner pair, or no free port */
	REASON_DROP_NOT_OWNER,	 /* steered here without entry, owned elsewhere in this node's view:
				  * a UDP datagram or a reply must not get a fresh backend or leave
				  * un-rewritten during a takeover */
	/* Not verdicts: notes counted beside the packet's verdict. */
	REASON_STEER_LOOP,	 /* steered packet whose owner is another node here: kept, not re-steered */
	REASON_EVENT_LOST,	 /* the events ring was full: the refresh will carry the flow */
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
	__u8 flags; /* REV_F_* */
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
	__u16 flags;	  /* FLOW_F_* */
	__u16 snat_port;  /* FLOW_F_SNAT: source port the backend sees, network order */
	__u64 created_ns; /* bpf_ktime_get_coarse_ns at creation */
	__u64 seen_ns;	  /* refreshed at most once a second */
	__u32 snat[4];	  /* FLOW_F_SNAT: the source address the backend sees */
	__u32 owner;	  /* owning pair id (owned flows) */
};

/* Owned flows seen from the backend: the key is the reply's 5-tuple
 * (backend -> client, or backend -> SNIP:port), the value what the reply is
 * rewritten to. */
struct rflow {
	__u32 client[4]; /* destination of the rewritten reply */
	__u32 vip[4];	 /* its source */
	__u16 client_port;
	__u16 vport;
	__u32 vs_id;
	__u32 backend_id;
	__u16 flags; /* FLOW_F_SNAT when the destination changes too */
	__u16 pad;
};

/* A pair as the data plane steers to it. Written by the control plane from
 * membership; entries [0, self.npairs) are candidates. */
struct pair {
	__u32 id;	 /* pair id (hashing.Owner candidates) */
	__u32 addr[4];	 /* active member's backplane address */
	__u32 snip4[4];	 /* the pair's IPv4 SNIP (USIP OFF), valid with PAIR_F_SNIP4 */
	__u32 snip6[4];	 /* its IPv6 SNIP, valid with PAIR_F_SNIP6 */
	__u16 snat_lo;	 /* SNAT port range of each SNIP, host order, inclusive */
	__u16 snat_hi;
	__u8 flags;	 /* PAIR_F_* */
	__u8 family;	 /* family of addr */
	__u8 pad[2];
};

/* This node's steering configuration (one entry). */
struct self_cfg {
	__u32 npairs;  /* pairs in use */
	__u32 addr[4]; /* own backplane address: outer source, decap destination */
	__u8 family;   /* 0: steering not configured */
	__u8 pad[3];
};

/* The Tandem encapsulation header, after the outer UDP header. */
struct tandem_hdr {
	__u8 version; /* TANDEM_ENCAP_VERSION */
	__u8 flags;   /* TH_F_REPLY: a backend -> client packet */
	__u16 rsvd;
	__u32 pair; /* owner pair id, network order */
};

#define TANDEM_ENCAP_VERSION 1
#define TH_F_REPLY 1

/* Ring-buffer event of an owned, mirrored flow. */
enum event_type {
	EVENT_NEW = 1,
	EVENT_CLOSE = 2,
	/* An FTP expectation of a mirrored vserver (ftp_alg), in flow_event:
	 * src, dst, dport = the expect_key; snat = expect.to; flags = kind;
	 * backend_id = the data backend; ts_ns = the deadline. */
	EVENT_EXPECT = 3,
};

struct flow_event {
	__u8 type; /* EVENT_* */
	__u8 proto;
	__u8 family;
	__u8 pad;
	__u16 sport; /* client port, network order */
	__u16 dport; /* VIP port */
	__u32 src[4]; /* client */
	__u32 dst[4]; /* VIP */
	__u32 vs_id;
	__u32 backend_id;
	__u32 snat[4];
	__u16 snat_port;
	__u16 flags;
	__u32 owner;
	__u64 ts_ns;
};

/* FTP ALG (handle_ftp_*). An expectation waits for the first packet (SYN)
 * of a data connection, from any source port:
 *   passive (227, 229)  key client -> VIP:port, to = the backend
 *   active (PORT, EPRT) key backend -> client:port, to = the VIP
 * Data connections translate addresses only, never ports: the backend
 * listens on the port it advertised (vsftpd pasv_address = the VIP), and
 * connects from the port it chose (20 with connect_from_port_20). */
struct expect_key {
	__u32 src[4];
	__u32 dst[4];
	__u16 dport; /* network order */
	__u8 family;
	__u8 pad;
};

struct expect {
	__u32 to[4];	  /* passive: the backend; active: the VIP */
	__u64 deadline_ns; /* bpf_ktime_get_coarse_ns */
	__u32 vs_id;
	__u32 backend_id; /* the data backend (address, any port) */
	__u16 ctl_port;	  /* the control connection's client port, network order */
	__u16 ctl_vport;  /* and its VIP port */
	__u8 kind;	  /* FTP_KIND_* */
	__u8 pad[3];
};

/* What the handler of an FTP control packet leaves for ftp_alg, which runs
 * after it (per-CPU, one packet at a time): the ALG's parser takes 45k
 * verified instructions and a stack frame of its own. */
struct ftp_ctl {
	__u32 vip[4];
	__u32 client[4];
	__u32 backend[4];
	__u32 vs_id;
	__u32 backend_id; /* of the control connection */
	__u16 cport;	  /* network order */
	__u16 vport;
	__u8 dir; /* FTP_FROM_*; 0: nothing pending */
	__u8 family;
	__u16 pad;
};

/* ftp_vips value: the VIPs of the FTP vservers a backend address serves.
 * A takeover installs flows without reply entries (they are rebuilt from
 * the flow); a data connection's flow is keyed client -> VIP:backend port,
 * and the backend's packet does not say which VIP: these are tried. */
#define FTP_MAX_VIPS 4
struct ftp_vip_list {
	__u32 n;
	__u32 vip[FTP_MAX_VIPS][4];
};

/* alg_stats index: FTP control lines by kind and reason
 * (kind * ALG_FTP_REASONS + reason, kinds 1..4, reasons FTP_R_*), then the
 * counters below. */
#define ALG_FTP_REASONS 8
enum alg_counter {
	ALG_FTP_DATA_OPEN = 5 * ALG_FTP_REASONS, /* data connection opened by an expectation */
	ALG_FTP_EXPIRED,			 /* SYN matched an expectation past its deadline */
	ALG_FTP_EXPECT_FAIL,			 /* expectation map update failed */
	ALG_FTP_DATA_REFUSED,			 /* expectation used, but no backend or SNAT port */
	ALG_FTP_NOT_SYN,			 /* non-SYN of an unknown data connection (passed) */
	ALG_MAX,
};

/* addr_filter: one bit per hash of every VIP and bound service address
 * (filter_bit4 in lb.c, filterBit in Go): 2^ADDR_FILTER_BITS bits in u64
 * words. */
#define ADDR_FILTER_BITS 16
#define ADDR_FILTER_WORDS ((1 << ADDR_FILTER_BITS) / 64)

/* hot: a per-CPU direct-mapped cache of stateless flows, what a flow-table
 * hit (client -> backend) or a service's reverse entry (backend -> client)
 * needs to forward a packet, so that it costs no hash lookup. An entry is
 * valid while gen equals the cache generation (cfg_gen; 0: empty), for
 * frames from in_ifindex whose IP length is at most max_len. */
struct hot_entry {
	__u32 src[4];
	__u32 dst[4];
	__u32 ports; /* sport | dport << 16, as the packet holds them */
	__u8 proto;
	__u8 family;
	__u16 max_len;
	__u32 gen;
	__u32 in_ifindex;
	__u32 ifindex; /* egress interface */
	__u32 vs_id;
	__u32 backend_id;
	__u32 csum_ip;	   /* checksum delta of the rewrite: IPv4 header */
	__u32 csum_l4;	   /* and TCP/UDP (address and port) */
	__u32 new_addr[4]; /* the backend's address, or (rev) the VIP */
	__u16 new_port;	   /* the port after the rewrite, network order */
	__u8 dmac[6];
	__u8 smac[6];
	__u8 rev;	   /* 1: a reply, the source is rewritten; 0: the destination */
	__u8 pad;
	__u32 pad2;
};

#define MAX_PAIRS 16
#define MAX_LIST 64

/* vs_lists value: the backends of a ROUNDROBIN / LEASTCONNECTION vserver. */
struct be_list {
	__u32 n;
	__u32 ids[MAX_LIST];
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
	__u32 gen; /* cache generation (cfg_gen) it was made in */
	__u32 pad2;
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
