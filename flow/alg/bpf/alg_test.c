// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * Test-only XDP program for the FTP ALG parser in flow/bpf/ftp.h: it finds
 * the TCP payload of an Ethernet + IPv4/IPv6 + TCP frame, runs ftp_parse on
 * it with the direction and addresses of the alg_cfg map, writes the
 * result to alg_out[0] and passes the frame. Frames it cannot parse leave a
 * result of kind 0xff, so a test never reads a stale one.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "../../bpf/ftp.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct alg_cfg {
	__u32 dir;	/* FTP_FROM_CLIENT or FTP_FROM_BACKEND */
	__u32 family;	/* of the control connection: 4 or 6 */
	__u32 vip[4];
	__u32 client[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct alg_cfg);
} alg_cfg_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ftp_result);
} alg_out SEC(".maps");

/* The parser's scratch, as lb.c keeps it: a per-CPU map value (see
 * struct ftp_scratch). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ftp_scratch);
} alg_scratch SEC(".maps");

SEC("xdp")
int xdp_alg_test(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct ftp_result *res;
	struct ftp_scratch *line;
	struct alg_cfg *cfg;
	struct tcphdr *tcp;
	__u32 zero = 0, off;
	void *payload;

	res = bpf_map_lookup_elem(&alg_out, &zero);
	cfg = bpf_map_lookup_elem(&alg_cfg_map, &zero);
	line = bpf_map_lookup_elem(&alg_scratch, &zero);
	if (!res || !cfg || !line)
		return XDP_ABORTED;
	__builtin_memset(res, 0, sizeof(*res));
	res->kind = 0xff;

	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_TCP || ip->ihl != 5)
			return XDP_PASS;
		tcp = (void *)(ip + 1);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_TCP)
			return XDP_PASS;
		tcp = (void *)(ip6 + 1);
	} else {
		return XDP_PASS;
	}
	if ((void *)(tcp + 1) > end || tcp->doff < 5)
		return XDP_PASS;
	payload = (void *)tcp + (__u64)tcp->doff * 4;
	if (payload > end)
		return XDP_PASS;
	off = payload - data;
	ftp_parse(ctx, off, end - payload, cfg->dir, cfg->family, cfg->vip, cfg->client, line,
		  res);
	return XDP_PASS;
}
