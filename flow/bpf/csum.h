/* Incremental Internet checksum updates (RFC 1624, eqn. 3):
 * HC' = ~(~HC + ~m + m'). Values are taken as they lie in the packet (network
 * order); the one's-complement sum does not depend on byte order as long as
 * every term is read the same way.
 */
#ifndef TANDEM_CSUM_H
#define TANDEM_CSUM_H

#include <linux/types.h>

static __always_inline __u32 csum_fold32(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return s;
}

/* delta_add32 accumulates the change of one 32-bit word from old to new. */
static __always_inline __u32 delta_add32(__u32 d, __u32 old, __u32 new)
{
	old = ~old;
	d += (old & 0xffff) + (old >> 16);
	d += (new & 0xffff) + (new >> 16);
	return csum_fold32(d);
}

static __always_inline __u32 delta_add16(__u32 d, __u16 old, __u16 new)
{
	d += (__u16)~old;
	d += new;
	return csum_fold32(d);
}

/* csum_apply applies an accumulated delta to a checksum field. */
static __always_inline __u16 csum_apply(__u16 check, __u32 delta)
{
	__u32 s = (__u16)~check;
	s += delta;
	return (__u16)~csum_fold32(s);
}

/* delta_addr accumulates the change of an address of 1 (IPv4) or 4 words. */
static __always_inline __u32 delta_addr(__u32 d, const __u32 *old, const __u32 *new, int is_v6)
{
	d = delta_add32(d, old[0], new[0]);
	if (is_v6) {
		d = delta_add32(d, old[1], new[1]);
		d = delta_add32(d, old[2], new[2]);
		d = delta_add32(d, old[3], new[3]);
	}
	return d;
}

#endif
