/* The FTP ALG's control-line parser, shared by lb.c and the test program
 * flow/alg/bpf/alg_test.c. It reads the first line of one segment of an FTP
 * control connection and says whether it asks for a data connection that
 * needs an expectation:
 *
 *   backend -> client   227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)
 *                       229 Entering Extended Passive Mode (|||port|)
 *   client -> backend   PORT h1,h2,h3,h4,p1,p2
 *                       EPRT |1|a.b.c.d|port|   EPRT |2|ipv6|port|
 *
 * The parsing must happen here, synchronously with the packets: a client
 * that reads a 227 reply connects to the data port at once, so the
 * expectation has to exist before the reply leaves the node.
 *
 * The grammar is exactly that of ParseFTPLine in flow/alg (the reference;
 * agreement tests run both on the same lines): at most FTP_LINE_MAX bytes
 * are copied to the caller's scratch (a per-CPU map value) with
 * bpf_xdp_load_bytes, the line ends at the first '\n' in them, and every
 * loop is bounded by a constant. Addresses are validated here: a reply must
 * offer the VIP, a command must name the client itself. Anything else is a
 * reason, never an expectation.
 *
 * Use from lb.c (the FTP vserver's control port, both directions):
 *
 *   struct {
 *           __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
 *           __uint(max_entries, 1);
 *           __type(key, __u32);
 *           __type(value, struct ftp_scratch);
 *   } ftp_scratch SEC(".maps");
 *
 *   struct ftp_result res;
 *   ftp_parse(ctx, l4_off + tcp_hdr_len, ip_payload_len - tcp_hdr_len,
 *             FTP_FROM_BACKEND, family, vip, client, sc, &res);
 *   if (res.kind != FTP_KIND_NONE) {
 *           if (res.reason == FTP_R_OK)
 *                   ... insert the expectation (alg.Expectation) ...
 *           else
 *                   ... count res.reason ...
 *   }
 *
 * The verifier processes about 45k instructions for one inlined call
 * (built with -mcpu=v3 like lb.c; flow/alg TestBPFVerifierBudget). A
 * handler that calls it from two places pays twice: keep one call site per
 * handler.
 */
#ifndef TANDEM_FTP_H
#define TANDEM_FTP_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define FTP_LINE_MAX 128 /* alg.LineMax; a power of two (index masks) */

/* Direction of the segment (alg.Direction). */
#define FTP_FROM_CLIENT 1
#define FTP_FROM_BACKEND 2

/* ftp_result.kind (alg.Kind) */
enum ftp_kind {
	FTP_KIND_NONE = 0, /* not a line the ALG reads */
	FTP_KIND_PASV = 1,
	FTP_KIND_EPSV = 2,
	FTP_KIND_PORT = 3,
	FTP_KIND_EPRT = 4,
};

/* ftp_result.reason (alg.Reason): counted per reason by the caller. */
enum ftp_reason {
	FTP_R_OK = 0,	   /* expectation */
	FTP_R_TOO_LONG = 1, /* no '\n' within FTP_LINE_MAX bytes */
	FTP_R_PARTIAL = 2,  /* segment ends before the line */
	FTP_R_SYNTAX = 3,
	FTP_R_RANGE = 4,    /* byte > 255, port 0 or > 65535, too many digits */
	FTP_R_FAMILY = 5,   /* EPRT protocol not 1 or 2 */
	FTP_R_ADDRESS = 6,  /* not the VIP (replies) / not the client (commands) */
	FTP_R_MAX = 7,
};

/* What a line asks for. On a reason other than FTP_R_OK only kind and
 * reason are set, the rest is zero. */
struct ftp_result {
	__u8 kind;
	__u8 family;  /* 4 or 6 */
	__u8 reason;
	__u8 pad;
	__u16 port;   /* data port, host order */
	__u16 pad2;
	__u32 addr[4]; /* network order; IPv4 in word 0 */
};

/* The parser's working memory, provided by the caller: it must be map
 * memory (a per-CPU array value), not the stack. The verifier does not
 * track values stored in map memory, so the cursor (i) and the line length
 * (len), always read back through volatile loads, are unknown scalars to
 * it: paths that differ only in where the cursor stands are pruned as one,
 * and the cost of verifying the parser stays linear in its loops. With the
 * cursor in a register the verifier explored every split of the line into
 * fields and gave up after 1M instructions. */
struct ftp_scratch {
	__u8 buf[FTP_LINE_MAX];
	__u32 len; /* line length without its end */
	__u32 i;   /* cursor */
	/* IPv6 text: groups read, how many, where the "::" is (-1: none).
	 * Kept here for the same reason as the cursor. */
	__u16 g[8];
	__u32 n;
	__s32 gap;
};

#define FTP_GET(c, f) (*(const volatile typeof((c)->f) *)&(c)->f)
#define FTP_SET(c, f, v) (*(volatile typeof((c)->f) *)&(c)->f = (v))

static __always_inline __u32 ftp_i(const struct ftp_scratch *c)
{
	return *(const volatile __u32 *)&c->i;
}

static __always_inline void ftp_set_i(struct ftp_scratch *c, __u32 i)
{
	*(volatile __u32 *)&c->i = i;
}

static __always_inline void ftp_adv(struct ftp_scratch *c, __u32 n)
{
	ftp_set_i(c, ftp_i(c) + n);
}

static __always_inline __u32 ftp_len(const struct ftp_scratch *c)
{
	return *(const volatile __u32 *)&c->len;
}

/* The character at i, 0 past the end of the line. */
static __always_inline __u8 ftp_at(const struct ftp_scratch *c, __u32 i)
{
	if (i >= ftp_len(c))
		return 0;
	return c->buf[i & (FTP_LINE_MAX - 1)];
}

static __always_inline __u8 ftp_peek(const struct ftp_scratch *c)
{
	return ftp_at(c, ftp_i(c));
}

static __always_inline int ftp_digit(__u8 ch)
{
	return ch >= '0' && ch <= '9';
}

static __always_inline int ftp_hex(__u8 ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

static __always_inline __u8 ftp_upper(__u8 ch)
{
	return ch >= 'a' && ch <= 'z' ? ch - 'a' + 'A' : ch;
}

static __always_inline void ftp_skip_spaces(struct ftp_scratch *c)
{
	for (int k = 0; k < FTP_LINE_MAX; k++) {
		if (ftp_peek(c) != ' ')
			break;
		ftp_adv(c, 1);
	}
}

/* A decimal number of 1..max_digits digits, at most max. */
static __always_inline int ftp_num(struct ftp_scratch *c, int max_digits, __u32 max, __u32 *out)
{
	__u32 v = 0;
	int d;

	if (!ftp_digit(ftp_peek(c)))
		return FTP_R_SYNTAX;
	for (d = 0; d < 6; d++) {
		__u8 ch = ftp_peek(c);

		if (!ftp_digit(ch))
			break;
		if (d == max_digits)
			return FTP_R_RANGE;
		v = v * 10 + (ch - '0');
		ftp_adv(c, 1);
	}
	if (v > max)
		return FTP_R_RANGE;
	*out = v;
	return FTP_R_OK;
}

/* h1,h2,h3,h4,p1,p2 */
static __always_inline int ftp_six(struct ftp_scratch *c, struct ftp_result *res)
{
	__u32 v[6];
	int r;

	for (int k = 0; k < 6; k++) {
		if (k > 0) {
			if (ftp_peek(c) != ',')
				return FTP_R_SYNTAX;
			ftp_adv(c, 1);
		}
		r = ftp_num(c, 3, 255, &v[k]);
		if (r != FTP_R_OK)
			return r;
	}
	res->port = (__u16)(v[4] << 8 | v[5]);
	if (res->port == 0)
		return FTP_R_RANGE;
	res->family = 4;
	res->addr[0] = bpf_htonl(v[0] << 24 | v[1] << 16 | v[2] << 8 | v[3]);
	return FTP_R_OK;
}

static __always_inline int ftp_end(struct ftp_scratch *c)
{
	ftp_skip_spaces(c);
	return ftp_i(c) == ftp_len(c) ? FTP_R_OK : FTP_R_SYNTAX;
}

static __always_inline int ftp_delim_ok(__u8 ch)
{
	return ch >= '!' && ch <= '~' && !ftp_digit(ch);
}

/* RFC 2428 port field: 1..65535 followed by d. */
static __always_inline int ftp_data_port(struct ftp_scratch *c, __u8 d, struct ftp_result *res)
{
	__u32 n;
	int r = ftp_num(c, 5, 65535, &n);

	if (r != FTP_R_OK)
		return r;
	if (n == 0)
		return FTP_R_RANGE;
	if (ftp_peek(c) != d)
		return FTP_R_SYNTAX;
	ftp_adv(c, 1);
	res->port = n;
	return FTP_R_OK;
}

static __always_inline int ftp_pasv(struct ftp_scratch *c, struct ftp_result *res)
{
	ftp_set_i(c, 4);
	for (int k = 0; k < FTP_LINE_MAX; k++) {
		if (ftp_i(c) >= ftp_len(c) || ftp_digit(ftp_peek(c)))
			break;
		ftp_adv(c, 1);
	}
	if (ftp_i(c) >= ftp_len(c))
		return FTP_R_SYNTAX;
	return ftp_six(c, res);
}

static __always_inline int ftp_port(struct ftp_scratch *c, struct ftp_result *res)
{
	int r;

	ftp_set_i(c, 5);
	ftp_skip_spaces(c);
	r = ftp_six(c, res);
	if (r != FTP_R_OK)
		return r;
	return ftp_end(c);
}

static __always_inline int ftp_epsv(struct ftp_scratch *c, struct ftp_result *res)
{
	__u8 d;
	int r;

	ftp_set_i(c, 4);
	for (int k = 0; k < FTP_LINE_MAX; k++) {
		if (ftp_i(c) >= ftp_len(c) || ftp_peek(c) == '(')
			break;
		ftp_adv(c, 1);
	}
	if (ftp_i(c) >= ftp_len(c))
		return FTP_R_SYNTAX;
	ftp_adv(c, 1);
	d = ftp_peek(c);
	if (!ftp_delim_ok(d) || ftp_at(c, ftp_i(c) + 1) != d || ftp_at(c, ftp_i(c) + 2) != d)
		return FTP_R_SYNTAX;
	ftp_adv(c, 3);
	r = ftp_data_port(c, d, res);
	if (r != FTP_R_OK)
		return r;
	if (ftp_peek(c) != ')')
		return FTP_R_SYNTAX;
	return FTP_R_OK;
}

/* a.b.c.d followed by d */
static __always_inline int ftp_quad(struct ftp_scratch *c, __u8 d, struct ftp_result *res)
{
	__u32 v[4];
	int r;

	for (int k = 0; k < 4; k++) {
		if (k > 0) {
			if (ftp_peek(c) != '.')
				return FTP_R_SYNTAX;
			ftp_adv(c, 1);
		}
		r = ftp_num(c, 3, 255, &v[k]);
		if (r != FTP_R_OK)
			return r;
	}
	if (ftp_peek(c) != d)
		return FTP_R_SYNTAX;
	ftp_adv(c, 1);
	res->family = 4;
	res->addr[0] = bpf_htonl(v[0] << 24 | v[1] << 16 | v[2] << 8 | v[3]);
	return FTP_R_OK;
}

/* Hex groups with at most one "::", followed by d. Groups before the "::"
 * fill the address from the front, groups after it from the back. */
static __always_inline int ftp_ipv6(struct ftp_scratch *c, __u8 d, struct ftp_result *res)
{
	__u16 out[8] = {};
	__s32 gap;
	__u32 n;

	FTP_SET(c, n, 0);
	FTP_SET(c, gap, -1);
	if (ftp_peek(c) == ':') {
		if (ftp_at(c, ftp_i(c) + 1) != ':')
			return FTP_R_SYNTAX;
		FTP_SET(c, gap, 0);
		ftp_adv(c, 2);
	}
	for (int k = 0; k < 9; k++) {
		__u32 v = 0;
		int digits = 0;

		if (ftp_peek(c) == d)
			break;
		if (FTP_GET(c, n) >= 8)
			return FTP_R_SYNTAX;
		for (int j = 0; j < 5; j++) {
			int h = ftp_hex(ftp_peek(c));

			if (h < 0)
				break;
			if (digits == 4)
				return FTP_R_SYNTAX;
			v = v << 4 | h;
			digits++;
			ftp_adv(c, 1);
		}
		if (digits == 0)
			return FTP_R_SYNTAX;
		n = FTP_GET(c, n);
		c->g[n & 7] = v;
		FTP_SET(c, n, n + 1);
		__u8 ch = ftp_peek(c);
		if (ch == d)
			continue;
		if (ch != ':')
			return FTP_R_SYNTAX;
		ftp_adv(c, 1);
		if (ftp_peek(c) == ':') {
			if (FTP_GET(c, gap) >= 0)
				return FTP_R_SYNTAX;
			FTP_SET(c, gap, FTP_GET(c, n));
			ftp_adv(c, 1);
		} else if (ftp_peek(c) == d) {
			return FTP_R_SYNTAX;
		}
	}
	if (ftp_peek(c) != d)
		return FTP_R_SYNTAX;
	n = FTP_GET(c, n);
	gap = FTP_GET(c, gap);
	if ((gap < 0 && n != 8) || (gap >= 0 && n > 7))
		return FTP_R_SYNTAX;
	ftp_adv(c, 1);
	for (int k = 0; k < 8; k++) {
		__u32 pos = k;

		if (k >= n)
			break;
		if (gap >= 0 && k >= gap)
			pos = 8 - n + k;
		out[pos & 7] = c->g[k];
	}
	res->family = 6;
	for (int w = 0; w < 4; w++)
		res->addr[w] = bpf_htonl((__u32)out[2 * w] << 16 | out[2 * w + 1]);
	return FTP_R_OK;
}

static __always_inline int ftp_eprt(struct ftp_scratch *c, struct ftp_result *res)
{
	__u8 d, proto;
	int r;

	ftp_set_i(c, 5);
	ftp_skip_spaces(c);
	d = ftp_peek(c);
	if (!ftp_delim_ok(d))
		return FTP_R_SYNTAX;
	ftp_adv(c, 1);
	proto = ftp_peek(c);
	if (!ftp_digit(proto) || ftp_at(c, ftp_i(c) + 1) != d)
		return FTP_R_SYNTAX;
	if (proto != '1' && proto != '2')
		return FTP_R_FAMILY;
	ftp_adv(c, 2);
	if (proto == '1')
		r = ftp_quad(c, d, res);
	else
		r = ftp_ipv6(c, d, res);
	if (r != FTP_R_OK)
		return r;
	r = ftp_data_port(c, d, res);
	if (r != FTP_R_OK)
		return r;
	return ftp_end(c);
}

static __always_inline int ftp_addr_eq(const struct ftp_result *res, __u8 family, const __u32 *a)
{
	if (res->family != family)
		return 0;
	if (family == 4)
		return res->addr[0] == a[0];
	return res->addr[0] == a[0] && res->addr[1] == a[1] &&
	       res->addr[2] == a[2] && res->addr[3] == a[3];
}

static __always_inline void ftp_result_clear(struct ftp_result *res)
{
	__builtin_memset(res, 0, sizeof(*res));
}

/* ftp_parse reads the control line at payload offset off (len bytes of
 * payload in the segment: take it from the IP header, not data_end, which
 * counts Ethernet padding) sent in direction dir (FTP_FROM_*), on a control
 * connection of the given family between client and vip (four network
 * order words each, IPv4 in word 0). sc is the caller's scratch, a per-CPU
 * map value (see struct ftp_scratch). res is always filled: kind
 * FTP_KIND_NONE for lines the ALG does not read. */
static __always_inline void ftp_parse(struct xdp_md *ctx, __u32 off, __u32 len, int dir,
				      __u8 family, const __u32 *vip, const __u32 *client,
				      struct ftp_scratch *sc, struct ftp_result *res)
{
	__u64 n = len < FTP_LINE_MAX ? len : FTP_LINE_MAX, m;
	__u8 *buf = sc->buf;
	__u8 kind = FTP_KIND_NONE;
	int r, end = -1;

	ftp_result_clear(res);
	if (n < 4)
		return;
	/* n is 4..128 already: the mask, which clang cannot see through, makes
	 * sure the register handed to the helper is the bounded one (clang
	 * otherwise passes len, whose upper half the verifier does not know). */
	m = n - 1;
	asm volatile("%[m] &= 0x7f" : [m] "+r"(m));
	if (bpf_xdp_load_bytes(ctx, off, buf, m + 1) < 0)
		return;
	if (dir == FTP_FROM_BACKEND) {
		if (buf[0] == '2' && buf[1] == '2' && buf[3] == ' ') {
			if (buf[2] == '7')
				kind = FTP_KIND_PASV;
			else if (buf[2] == '9')
				kind = FTP_KIND_EPSV;
		}
	} else if (dir == FTP_FROM_CLIENT && n >= 5 && buf[4] == ' ') {
		__u8 a = ftp_upper(buf[0]), b = ftp_upper(buf[1]);

		if (ftp_upper(buf[2]) == 'R' && ftp_upper(buf[3]) == 'T') {
			if (a == 'P' && b == 'O')
				kind = FTP_KIND_PORT;
			else if (a == 'E' && b == 'P')
				kind = FTP_KIND_EPRT;
		}
	}
	if (kind == FTP_KIND_NONE)
		return;

	/* The scan stores where the line ends rather than keeping it in a
	 * register, so that what follows is verified once, not once per
	 * possible line length. */
	*(volatile __u32 *)&sc->len = FTP_LINE_MAX; /* no end */
	for (int i = 0; i < FTP_LINE_MAX; i++) {
		if (i >= n)
			break;
		if (buf[i] == '\n') {
			*(volatile __u32 *)&sc->len = i;
			break;
		}
	}
	end = ftp_len(sc);
	if (end >= FTP_LINE_MAX) {
		r = len >= FTP_LINE_MAX ? FTP_R_TOO_LONG : FTP_R_PARTIAL;
		goto fail;
	}
	if (end > 0 && buf[(end - 1) & (FTP_LINE_MAX - 1)] == '\r')
		*(volatile __u32 *)&sc->len = end - 1;

	switch (kind) {
	case FTP_KIND_PASV:
		r = ftp_pasv(sc, res);
		break;
	case FTP_KIND_EPSV:
		r = ftp_epsv(sc, res);
		break;
	case FTP_KIND_PORT:
		r = ftp_port(sc, res);
		break;
	default:
		r = ftp_eprt(sc, res);
		break;
	}
	if (r != FTP_R_OK)
		goto fail;
	if (kind == FTP_KIND_EPSV) {
		res->family = family;
		for (int w = 0; w < 4; w++)
			res->addr[w] = vip[w];
	} else if (!ftp_addr_eq(res, family, kind == FTP_KIND_PASV ? vip : client)) {
		r = FTP_R_ADDRESS;
		goto fail;
	}
	res->kind = kind;
	return;
fail:
	ftp_result_clear(res);
	res->kind = kind;
	res->reason = r;
}

#endif /* TANDEM_FTP_H */
