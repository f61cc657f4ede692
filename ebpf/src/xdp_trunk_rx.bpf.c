// SPDX-License-Identifier: Apache-2.0
/*
 * xdp_trunk_rx: the fast path of the trunk port (encapsulate → AP).
 *
 *   | Ethernet [802.1Q] ... | from the trunk
 *        ↓ (VLAN, dst MAC) in `fdb` on a tunnel port with a template
 *   | template: Ethernet | IPv4/IPv6 | [UDP] | L2TPv3 data or GRE | frame |
 *
 * A unicast frame on a VLAN the trunk carries, whose source MAC is already
 * learned on the trunk and whose destination is learned behind a tunnel
 * (an L2TPv3 session or an mGRE peer) with a header template at its port
 * index, gets the
 * tunnel's egress tag (none on the tunnel's untagged VLAN, the VLAN with
 * the frame's PCP and DEI otherwise: tunterm::wire::ether::append_retagged
 * with Switch::egress_tag), the template in front, the IP (and UDP)
 * lengths and the IPv4 header checksum filled in, and is redirected to
 * the AP-facing interface with bpf_redirect. Frames the switch drops (VLAN
 * not on the trunk, untagged without an untagged VLAN) are dropped; all
 * else passes untouched to the slow path, counted by reason.
 */
#include "tt_fast_path.bpf.h"

#define TPASS(reason) count(TT_CNT_TRUNK_PASS_##reason, XDP_PASS)
#define TDROP(reason) POLICY_DROP(TT_CNT_TRUNK_DROP_##reason, TT_CNT_TRUNK_PASS_CAPTURE)
#define TABORT() count(TT_CNT_TRUNK_ABORTED, XDP_ABORTED)

/*
 * Encapsulate the frame at f with the template m, the destination's: a
 * whole template (own 0) or the base of the short template own, whose
 * bytes go over the base's (tt_template_short), and redirect it.
 */
static __always_inline int encap(struct xdp_md *ctx, const struct tt_template *m,
				 const struct tt_template_short *own, __u8 *f, void *data_end,
				 const struct eth_view *e, __u16 vlan, volatile __u64 *src_slot,
				 __u32 src)
{
	const __u32 hdr_max = own ? TT_TEMPLATE_SHORT_MAX : TT_TEMPLATE_MAX;
	const __u8 *hdr = m->hdr;
	__u32 hlen = m->hdr_len;
	__u8 kind = m->kind;
	__u8 encap = kind & 0xf;
	__u8 family = kind >> 4;
	/* Only entries userspace builds (TunnelTemplate): anything else is
	 * not ours to send. IPv6 UDP needs a payload checksum: slow path. */
	__u32 ip_hlen = family == TT_AF_INET ? 20 : 40;
	if ((family != TT_AF_INET && family != TT_AF_INET6) ||
	    (family == TT_AF_INET6 && encap == TT_ENCAP_L2TP_UDP) ||
	    (encap != TT_ENCAP_L2TP_UDP && encap != TT_ENCAP_L2TP_IP &&
	     encap != TT_ENCAP_GRE) ||
	    hlen > hdr_max || hlen < ETH_HLEN + ip_hlen + 4 || (hlen & 1))
		return TPASS(NO_TEMPLATE);
	/* A short template is IPv4, over a base of its own length (an entry
	 * naming a base of another length is not a template). */
	__u32 tail_off = encap == TT_ENCAP_L2TP_UDP ? TT_TEMPLATE_TAIL_UDP
			 : encap == TT_ENCAP_L2TP_IP ? TT_TEMPLATE_TAIL_IP
						      : TT_TEMPLATE_TAIL_GRE;
	if (own && (family != TT_AF_INET || own->hdr_len != hlen || hlen < tail_off))
		return TPASS(NO_TEMPLATE);

	if (is_tcp_syn(f + ETH_HLEN - 2 + e->tagged * VLAN_HLEN, data_end))
		return TPASS(TCP_SYN);
	/* The client table learns leases from the ACKs (bridged DHCP). */
	if (is_dhcp_reply(f + ETH_HLEN - 2 + e->tagged * VLAN_HLEN, data_end))
		return TPASS(DHCP);

	/* The tunnel's untagged VLAN leaves untagged (0 is none: a frame's
	 * VLAN never is). */
	__u32 out_tagged = vlan != (own ? own->untagged_vlan : m->untagged_vlan);
	__u64 frame_len = (__u8 *)data_end - f;
	__u64 ip_len = hlen - ETH_HLEN + frame_len - e->tagged * VLAN_HLEN +
		       out_tagged * VLAN_HLEN;
	if (ip_len > m->mtu)
		return TPASS(TOO_BIG);

	fdb_touch(src_slot, src);

	__u16 tci_out = bpf_htons(e->prio | vlan);
	__u32 ifindex = m->ifindex;
	/* The template's IPv4 header as built (length and checksum 0),
	 * summed from the entry: never read back from the packet just
	 * written (a load of stores not yet in the cache waits for them). */
	__u16 ip_sum = 0;
	if (own)
		ip_sum = own->ip_sum;
	else if (family == TT_AF_INET)
		ip_sum = ipv4_hdr_sum((const struct iphdr *)&hdr[ETH_HLEN]);
	int delta = (int)(e->tagged * VLAN_HLEN) - (int)(out_tagged * VLAN_HLEN) - (int)hlen;
	if (bpf_xdp_adjust_head(ctx, delta))
		return TABORT();
	data_end = (void *)(long)ctx->data_end;
	__u8 *p = (void *)(long)ctx->data;

	/* The template, eight bytes at a time, the last eight ending at hlen
	 * (overlapping the one before): no read past hdr[hlen - 1], so a
	 * template line is the only cache line read. */
	for (__u32 i = 0; i < (hdr_max & ~7u); i += 8) {
		if (i + 8 > hlen)
			break;
		if (p + i + 8 > (__u8 *)data_end)
			return TABORT();
		st64(p + i, ld64(&hdr[i]));
	}
	if (hlen & 7) {
		__u32 t = hlen - 8;
		if (t > hdr_max - 8 || p + t + 8 > (__u8 *)data_end)
			return TABORT();
		st64(p + t, ld64(&hdr[t]));
	}
	/* A short template's own bytes over the base's; the tail may run into
	 * the inner addresses, written next. */
	if (own) {
		if (tail_off > TT_TEMPLATE_TAIL_UDP ||
		    p + tail_off + TT_TEMPLATE_TAIL > (__u8 *)data_end)
			return TABORT();
		st_mac(p, ld_mac(own->dmac));
		st32(p + TT_TEMPLATE_DADDR, ld32(own->daddr));
		if (encap == TT_ENCAP_L2TP_UDP)
			st16(p + TT_TEMPLATE_DPORT, own->dport);
		st64(p + tail_off, ld64(own->tail));
		st32(p + tail_off + 8, ld32(own->tail + 8));
	}
	/* The inner frame's addresses and egress tag; its ethertype and
	 * payload are where they were. */
	__u8 *in = p + (hlen & 0xff);
	if (in + 2 * ETH_ALEN + VLAN_HLEN > (__u8 *)data_end)
		return TABORT();
	st_mac(in, e->dmac);
	st_mac(in + ETH_ALEN, e->smac);
	if (out_tagged) {
		__u16 tpid = bpf_htons(TPID_8021Q);
		st16(in + 2 * ETH_ALEN, tpid);
		st16(in + 2 * ETH_ALEN + 2, tci_out);
	}

	/* Lengths and checksums. */
	if (family == TT_AF_INET) {
		struct iphdr *ip = (void *)(p + ETH_HLEN);
		if ((void *)(ip + 1) + sizeof(struct udphdr) > data_end)
			return TABORT();
		__u16 tot_len = bpf_htons((__u16)ip_len);
		__u32 sum = (__u32)ip_sum + tot_len;
		sum = (sum & 0xffff) + (sum >> 16);
		ip->tot_len = tot_len;
		ip->check = ~(__u16)sum;
		if (encap == TT_ENCAP_L2TP_UDP) {
			struct udphdr *udp = (void *)(ip + 1);
			udp->len = bpf_htons((__u16)(ip_len - sizeof(*ip)));
			udp->check = 0;
		}
	} else {
		struct ipv6hdr *ip6 = (void *)(p + ETH_HLEN);
		if ((void *)(ip6 + 1) > data_end)
			return TABORT();
		ip6->payload_len = bpf_htons((__u16)(ip_len - sizeof(*ip6)));
	}

	count(TT_CNT_TRUNK_REDIRECT, XDP_REDIRECT);
	return bpf_redirect(ifindex, 0);
}

SEC("xdp")
int xdp_trunk_rx(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	count(TT_CNT_TRUNK_RX, XDP_PASS);

	__u8 *f = data;
	if (f + ETH_HLEN > (__u8 *)data_end)
		return TPASS(MALFORMED);
	__u32 zero = 0;
	struct tt_trunk *t = bpf_map_lookup_elem(&trunk, &zero);
	if (!t || !(t->flags & TT_TRUNK_VALID))
		return TPASS(NOT_CONFIGURED);

	struct eth_view e;
	if (eth_parse(f, data_end, &e))
		return TPASS(MALFORMED);
	/* The destination's bucket is the one that misses the cache (a
	 * client among thousands; the source is the few hosts behind the
	 * trunk): its load starts here, under the VLAN decision and the
	 * source's lookup. */
	fdb_prefetch(e.dmac);

	/* The switch's VLAN decision for the trunk port. */
	__u16 vlan;
	if (e.vid == 0) {
		if (!(t->flags & TT_SESSION_UNTAGGED))
			return TDROP(UNTAGGED_NOT_ALLOWED);
		vlan = t->default_vlan;
	} else {
		if (!vlan_allowed(t->vlans, e.vid))
			return TDROP(VLAN_NOT_ALLOWED);
		vlan = e.vid;
	}

	if (is_group(e.smac) || is_zero(e.smac))
		return TPASS(SRC_NOT_LEARNED);
	if (is_group(e.dmac))
		return TPASS(BUM);
	__u32 srce, dst;
	volatile __u64 *src_slot = fdb_find(e.smac, vlan, &srce);
	if (!src_slot || (srce & TT_FDB_PORT_MASK) != TT_PORT_TRUNK)
		return TPASS(SRC_NOT_LEARNED);
	if (!fdb_find(e.dmac, vlan, &dst))
		return TPASS(UNKNOWN_DST);
	__u32 dport = dst & TT_FDB_PORT_MASK;
	if (dport == TT_PORT_TRUNK)
		return TPASS(NOT_TUNNEL);
	/* The destination's template, at its port index: a short entry over
	 * its base for most tunnels (IPv4); a whole one (IPv6) in
	 * `long_templates`. An empty entry (hdr_len 0) is no template. */
	const struct tt_template_short *own = bpf_map_lookup_elem(&templates, &dport);
	if (!own || own->hdr_len == 0)
		return TPASS(NO_TEMPLATE);
	if (own->hdr_len != TT_TEMPLATE_LONG) {
		/* Base 0 (most deployments have one base) at an address known
		 * before the entry arrives: its header copy need not wait for
		 * the entry's line, a cold load at scale. */
		__u32 b = own->base;
		const struct tt_template *base;
		if (b == 0) {
			__u32 zero = 0;
			asm volatile("" : "+r"(zero));
			base = bpf_map_lookup_elem(&template_bases, &zero);
		} else {
			base = bpf_map_lookup_elem(&template_bases, &b);
		}
		if (!base)
			return TPASS(NO_TEMPLATE);
		return encap(ctx, base, own, f, data_end, &e, vlan, src_slot, srce);
	}
	const struct tt_template *tpl = bpf_map_lookup_elem(&long_templates, &dport);
	if (!tpl)
		return TPASS(NO_TEMPLATE);
	return encap(ctx, tpl, 0, f, data_end, &e, vlan, src_slot, srce);
}
