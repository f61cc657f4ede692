// SPDX-License-Identifier: Apache-2.0
/*
 * xdp_ap_rx: the fast path of the AP-facing port (decapsulate → trunk).
 *
 *   | Ethernet (untagged) | IPv4 (no options, not a fragment) or IPv6     |
 *   |   (no extension header)                                             |
 *   | then one of:                                                        |
 *   |   UDP → 1701 | L2TPv3 0x0003 | reserved | session id | cookie | [SL] |
 *   |   IP 115     | session id (0: control) | cookie | [SL]              |
 *   |   IP 47      | GRE 0x6558 [key] (no checksum, no sequence number)   |
 *   | inner Ethernet [802.1Q] ...                                         |
 *
 * A data packet of a known session (from the session's peer address, and
 * UDP port over UDP, over the transport and family it was set up over, with
 * the right cookie) or of a known mGRE peer (address, key), whose inner
 * source MAC is already learned on that tunnel's port and whose destination
 * is known on the trunk, is decapsulated, (re)tagged exactly as the
 * userspace switch would (tunterm::wire::ether::write_retagged), and
 * redirected to the trunk with bpf_redirect. The policy drops the userspace
 * path makes too (wrong source, wrong cookie, short sublayer, VLAN not
 * allowed, untagged not allowed) are dropped here (passed up while a
 * capture runs, so its `drop` point sees them). Everything else is
 * XDP_PASS, untouched: the slow path judges it. Every packet is counted
 * once by reason (counters).
 */
#include "tt_fast_path.bpf.h"

/* L2TPv3 over UDP (RFC 3931 §4.1.2.1). */
#define L2TP_FLAG_T 0x8000
#define L2TP_VER_MASK 0x000f
#define L2TP_VER 3
#define L2TP_UDP_DATA_LEN 8
/* L2TPv3 over IP (RFC 3931 §4.1.1.1): the session id, 0 for control. */
#define L2TP_IP_DATA_LEN 4
/* Default L2-Specific Sublayer (RFC 4719 §3.2): S bit of the first word. */
#define SUBLAYER_LEN 4
#define SUBLAYER_S 0x40000000

/* GRE (RFC 2784, RFC 2890). */
#define GRE_C 0x8000
#define GRE_R 0x4000
#define GRE_K 0x2000
#define GRE_S 0x1000
#define GRE_RESERVED 0x0c00
#define GRE_VERSION 0x0007
#define GRE_PROTO_IPV4 0x0800
#define GRE_PROTO_IPV6 0x86dd

/* IPv6 next headers that are extension headers (RFC 8200 §4, RFC 4302,
 * RFC 4303, RFC 7401, RFC 5533, mobility RFC 6275). */
#define IPV6_FRAGMENT 44

#define PASS(reason) count(TT_CNT_PASS_##reason, XDP_PASS)
#define DROP(reason) POLICY_DROP(TT_CNT_DROP_##reason, TT_CNT_PASS_CAPTURE)

static __always_inline int ipv6_ext(__u8 nh)
{
	return nh == 0 || nh == 43 || nh == 50 || nh == 51 || nh == 60 ||
	       nh == 135 || nh == 139 || nh == 140;
}

/* Whether the 16-byte address `a` (two words, as ld64 reads them) is the
 * one at `b`. */
static __always_inline int addr_eq(const __u64 *a, const __u8 *b)
{
	return a[0] == ld64(b) && a[1] == ld64(b + 8);
}

/* The session of a data packet's session id: the entry at the id's slot,
 * if it holds exactly that id (0 never matches: an empty slot, or data with
 * the reserved id). */
static __always_inline struct tt_session *session_of(__u32 sid)
{
	__u32 slot = sid & (TT_MAX_SESSIONS - 1);
	struct tt_session *s = bpf_map_lookup_elem(&sessions, &slot);

	if (!s || sid == 0 || s->session_id != sid)
		return 0;
	return s;
}

/* Start loading the FDB bucket of the inner source MAC of an L2TPv3 data
 * packet (transport `proto` at `l4off`) before its session is looked up,
 * where the inner frame is if the cookie and sublayer take tt_l2tp_extra
 * bytes. The client's bucket is the cold line at scale, and the lookup
 * proper finds the inner frame by the session's cookie length, on the
 * session's line, itself often a miss: the guess issues the load before
 * either. A wrong guess (a session unlike most, or a packet that is not
 * L2TP data) costs one wasted load, nothing else: the lookup proper reads
 * the frame where the session puts it. */
static __always_inline void decap_prefetch(void *data, void *data_end, __u8 proto, __u32 l4off)
{
	__u32 hdr;

	if (proto == IPPROTO_UDP)
		hdr = sizeof(struct udphdr) + L2TP_UDP_DATA_LEN;
	else if (proto == TT_IPPROTO_L2TP)
		hdr = L2TP_IP_DATA_LEN;
	else
		return;
	__u8 *in = (__u8 *)data + l4off + hdr + (tt_l2tp_extra & 12);
	if (in + ETH_HLEN > (__u8 *)data_end)
		return;
	fdb_prefetch(ld_mac(in + ETH_ALEN));
}

SEC("xdp")
int xdp_ap_rx(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	count(TT_CNT_RX, XDP_PASS);

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return PASS(MALFORMED);

	/* The outer source, 16 bytes (IPv4-mapped for IPv4) as two words,
	 * its family, the transport protocol, and where the transport header
	 * starts. */
	__u64 src[2];
	__u8 family;
	__u8 proto;
	__u8 *l4;
	/* Offset of l4 from data (a constant per family: pointer differences
	 * are unknown scalars to the verifier). */
	__u32 l4off;
	/* Bytes of the IP payload: exactly what arrived after the header. */
	__u64 l4_len;

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > data_end)
			return PASS(MALFORMED);
		if (ip->version != 4)
			return PASS(MALFORMED);
		if (ip->ihl != 5)
			return PASS(IP_OPTIONS);
		/* The kernel drops a header with a bad checksum before any
		 * socket sees it; so must we, or leave it to the kernel. */
		if (ipv4_hdr_sum(ip) != 0xffff)
			return PASS(MALFORMED);
		/* Any fragment, first or not: the kernel reassembles, the slow
		 * path gets the datagram. */
		if (ip->frag_off & bpf_htons(IP_MF_OFFSET))
			return PASS(FRAGMENT);
		proto = ip->protocol;
		if (proto != IPPROTO_UDP && proto != TT_IPPROTO_L2TP &&
		    proto != TT_IPPROTO_GRE)
			return PASS(NOT_L2TP);
		l4 = (__u8 *)(ip + 1);
		l4off = sizeof(*eth) + sizeof(*ip);
		decap_prefetch(data, data_end, proto, l4off);
		/* The IP length must match what arrived, exactly: a truncated
		 * packet, or one with trailing bytes, is the kernel's to
		 * judge. From here on every length agrees, like the datagram
		 * a socket reads. (UDP checks its port first: another port is
		 * not ours at all.) */
		__u64 ip_len = data_end - (void *)ip;
		if (proto != IPPROTO_UDP && bpf_ntohs(ip->tot_len) != ip_len)
			return PASS(MALFORMED);
		if (proto == IPPROTO_UDP) {
			struct udphdr *udp = (void *)l4;
			if ((void *)(udp + 1) > data_end)
				return PASS(MALFORMED);
			if (udp->dest != bpf_htons(TT_L2TP_PORT))
				return PASS(NOT_L2TP);
			if (bpf_ntohs(ip->tot_len) != ip_len)
				return PASS(MALFORMED);
		}
		l4_len = ip_len - sizeof(*ip);
		/* ::ffff:a.b.c.d: bytes 10 and 11 are 0xff, 12 to 15 the
		 * address. */
		src[0] = 0;
		src[1] = 0xffff0000ULL | (__u64)ld32(&ip->saddr) << 32;
		family = TT_AF_INET;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end)
			return PASS(MALFORMED);
		if (ip6->version != 6)
			return PASS(MALFORMED);
		proto = ip6->nexthdr;
		if (proto == IPV6_FRAGMENT)
			return PASS(FRAGMENT);
		if (ipv6_ext(proto))
			return PASS(IPV6_EXT);
		if (proto != IPPROTO_UDP && proto != TT_IPPROTO_L2TP &&
		    proto != TT_IPPROTO_GRE)
			return PASS(NOT_L2TP);
		l4 = (__u8 *)(ip6 + 1);
		l4off = sizeof(*eth) + sizeof(*ip6);
		decap_prefetch(data, data_end, proto, l4off);
		l4_len = data_end - (void *)l4;
		if (proto == IPPROTO_UDP) {
			struct udphdr *udp = (void *)l4;
			if ((void *)(udp + 1) > data_end)
				return PASS(MALFORMED);
			if (udp->dest != bpf_htons(TT_L2TP_PORT))
				return PASS(NOT_L2TP);
		}
		if (bpf_ntohs(ip6->payload_len) != l4_len)
			return PASS(MALFORMED);
		src[0] = ld64(&ip6->saddr);
		src[1] = ld64((__u8 *)&ip6->saddr + 8);
		family = TT_AF_INET6;
	} else {
		return PASS(NOT_IPV4);
	}

	/* What the tunnel says about the inner frame. */
	__u32 port, flags, ifindex;
	__u16 default_vlan, trunk_untagged;
	/* The tunnel's VLAN bitmap: an mGRE peer's; a session's is looked up
	 * (session_vlans) only for a tagged frame. */
	const __u64 *vlans = 0;
	__u64 *peer_seen = 0;
	/* Offset of the inner frame from data: a constant on each branch
	 * plus a bounded cookie/key length, so the verifier knows its range. */
	__u32 off;
	/* The session, for the cookie and sublayer checks (L2TP only). */
	struct tt_session *s = 0;

	if (proto == IPPROTO_UDP) {
		struct udphdr *udp = (void *)l4;
		/* Checked above; again for the verifier. */
		if ((void *)(udp + 1) > data_end)
			return PASS(MALFORMED);
		if (bpf_ntohs(udp->len) != l4_len)
			return PASS(MALFORMED);
		/* IPv6 UDP needs a checksum: the kernel drops a zero one. */
		if (family == TT_AF_INET6 && udp->check == 0)
			return PASS(UDP6_ZERO_CSUM);
		__u8 *l2tp = l4 + sizeof(*udp);
		if (l2tp + L2TP_UDP_DATA_LEN > (__u8 *)data_end)
			return PASS(MALFORMED);
		__u16 lflags;
		lflags = ld16(l2tp);
		lflags = bpf_ntohs(lflags);
		if (lflags & L2TP_FLAG_T)
			return PASS(CONTROL);
		if ((lflags & L2TP_VER_MASK) != L2TP_VER)
			return PASS(NOT_L2TP);
		__u32 sid;
		sid = ld32(l2tp + 4);
		sid = bpf_ntohl(sid);
		s = session_of(sid);
		if (!s)
			return PASS(UNKNOWN_SESSION);
		if (s->transport != TT_TRANSPORT_UDP || s->family != family ||
		    !addr_eq(src, s->peer_addr) || udp->source != s->peer_port)
			return DROP(BAD_SOURCE);
		off = l4off + sizeof(*udp) + L2TP_UDP_DATA_LEN;
	} else if (proto == TT_IPPROTO_L2TP) {
		if (l4 + L2TP_IP_DATA_LEN > (__u8 *)data_end)
			return PASS(MALFORMED);
		__u32 sid;
		sid = ld32(l4);
		if (sid == 0)
			return PASS(CONTROL);
		sid = bpf_ntohl(sid);
		s = session_of(sid);
		if (!s)
			return PASS(UNKNOWN_SESSION);
		if (s->transport != TT_TRANSPORT_IP || s->family != family ||
		    !addr_eq(src, s->peer_addr))
			return DROP(BAD_SOURCE);
		off = l4off + L2TP_IP_DATA_LEN;
	} else {
		/* GRE */
		if (l4 + 4 > (__u8 *)data_end)
			return PASS(MALFORMED);
		__u16 gflags, gproto;
		gflags = ld16(l4);
		gproto = ld16(l4 + 2);
		gflags = bpf_ntohs(gflags);
		gproto = bpf_ntohs(gproto);
		/* Checksums, RFC 1701 features, other versions: the slow path
		 * verifies or refuses them. */
		if (gflags & (GRE_C | GRE_R | GRE_RESERVED | GRE_VERSION))
			return PASS(GRE_OTHER);
		if (gproto == GRE_PROTO_IPV4 || gproto == GRE_PROTO_IPV6)
			return PASS(CONTROL); /* keepalive */
		if (gproto != TT_GRE_PROTO_TEB)
			return PASS(GRE_OTHER);
		struct tt_gre_key key = {};
		st64(key.addr, src[0]);
		st64(key.addr + 8, src[1]);
		key.family = family;
		__u32 hlen = 4;
		if (gflags & GRE_K) {
			__u32 k;
			if (l4 + 8 > (__u8 *)data_end)
				return PASS(MALFORMED);
			k = ld32(l4 + 4);
			key.key = bpf_ntohl(k);
			key.flags = TT_GRE_KEY_PRESENT;
			hlen = 8;
		}
		/* The slow path tracks every sequence number. */
		if (gflags & GRE_S)
			return PASS(SEQUENCED);
		struct tt_gre_peer *peer = bpf_map_lookup_elem(&gre_peers, &key);
		if (!peer)
			return PASS(UNKNOWN_SESSION);
		/* A peer that sequenced until now: the slow path sees it stop. */
		if (peer->flags & TT_GRE_SEQUENCED)
			return PASS(SEQUENCED);
		port = peer->port_idx;
		flags = peer->flags;
		ifindex = peer->trunk_ifindex;
		default_vlan = peer->default_vlan;
		trunk_untagged = peer->trunk_untagged_vlan;
		vlans = peer->vlans;
		peer_seen = &peer->last_seen_ns;
		off = l4off + hlen;
	}

	/* Keep the verifier's idea of the offset small. */
	if (off > 128)
		return PASS(MALFORMED);
	if (s) {
		__u8 *cookie = (__u8 *)data + off;
		if (s->cookie_len == 4) {
			__u32 got, want;
			if (cookie + 4 > (__u8 *)data_end)
				return DROP(BAD_COOKIE);
			got = ld32(cookie);
			want = ld32(s->cookie);
			if (got != want)
				return DROP(BAD_COOKIE);
			off += 4;
		} else if (s->cookie_len == 8) {
			__u64 got, want;
			if (cookie + 8 > (__u8 *)data_end)
				return DROP(BAD_COOKIE);
			got = ld64(cookie);
			want = ld64(s->cookie);
			if (got != want)
				return DROP(BAD_COOKIE);
			off += 8;
		} else if (s->cookie_len != 0) {
			/* An entry userspace should never write: not ours to
			 * judge. */
			return PASS(UNKNOWN_SESSION);
		}
		if (s->flags & TT_SESSION_SUBLAYER) {
			__u8 *sl = (__u8 *)data + off;
			__u32 word;
			if (sl + SUBLAYER_LEN > (__u8 *)data_end)
				return DROP(BAD_SUBLAYER);
			word = ld32(sl);
			/* Sequence numbers are tracked (and enforced) by the
			 * slow path. */
			if (bpf_ntohl(word) & SUBLAYER_S)
				return PASS(SEQUENCED);
			off += SUBLAYER_LEN;
		}
		port = s->port_idx;
		flags = s->flags;
		ifindex = s->trunk_ifindex;
		default_vlan = s->default_vlan;
		trunk_untagged = s->trunk_untagged_vlan;
	}
	if (off > 256)
		return PASS(MALFORMED);
	/* Index 0 is the trunk's: a tunnel written without its own (never by
	 * tunterm) must not pass the trunk's hosts off as its clients. */
	if (port == TT_PORT_TRUNK)
		return PASS(UNKNOWN_SESSION);

	/* The inner frame. */
	__u8 *in = (__u8 *)data + off;
	if (in + ETH_HLEN > (__u8 *)data_end)
		return PASS(MALFORMED);
	struct eth_view e;
	if (eth_parse(in, data_end, &e))
		return PASS(MALFORMED);

	/* The switch's VLAN decision (bridge::Switch::vlan_of): VID 0 is a
	 * priority tag, untagged for VLAN purposes. */
	__u16 vlan;
	if (e.vid == 0) {
		if (!(flags & TT_SESSION_UNTAGGED))
			return DROP(UNTAGGED_NOT_ALLOWED);
		vlan = default_vlan;
	} else {
		if (s) {
			__u32 slot = s->session_id & (TT_MAX_SESSIONS - 1);
			struct tt_vlans *v = bpf_map_lookup_elem(&session_vlans, &slot);
			if (!v)
				return PASS(UNKNOWN_SESSION);
			vlans = v->words;
		}
		if (!vlans || !vlan_allowed(vlans, e.vid))
			return DROP(VLAN_NOT_ALLOWED);
		vlan = e.vid;
	}

	/* Bad sources are dropped by the slow path, flooding is its job too. */
	if (is_group(e.smac) || is_zero(e.smac))
		return PASS(SRC_NOT_LEARNED);
	if (is_group(e.dmac))
		return PASS(BUM);

	/* Learning stays in userspace: a source not (or no longer) on this
	 * tunnel's port goes up so the switch learns or moves it. */
	__u32 srce, dst;
	volatile __u64 *src_slot = fdb_find(e.smac, vlan, &srce);
	if (!src_slot || (srce & TT_FDB_PORT_MASK) != port)
		return PASS(SRC_NOT_LEARNED);
	if (!fdb_find(e.dmac, vlan, &dst))
		return PASS(UNKNOWN_DST);
	if ((dst & TT_FDB_PORT_MASK) != TT_PORT_TRUNK)
		return PASS(NOT_TRUNK);
	/* The trunk's untagged VLAN leaves untagged, as the switch sends (0
	 * is none: a frame's VLAN never is). */
	__u32 out_tagged = vlan != trunk_untagged;
	/* The slow path clamps the MSS of SYNs to the tunnel's MTU. */
	if (is_tcp_syn(in + ETH_HLEN - 2 + e.tagged * VLAN_HLEN, data_end))
		return PASS(TCP_SYN);
	/* The client table learns the client's addresses from its ARP and
	 * neighbour discovery (a unicast ARP reply, a neighbour advert). */
	if (is_arp_or_icmp6(in + ETH_HLEN - 2 + e.tagged * VLAN_HLEN, data_end))
		return PASS(ARP_ND);

	fdb_touch(src_slot, srce);
	if (peer_seen)
		touch(peer_seen);

	/* Rewrite: drop the outer headers and the inner tag (if any), then
	 * write the MACs and the egress tag (if any) in front of the inner
	 * ethertype, which stays where it is. */
	__u16 tci_out = bpf_htons(e.prio | vlan);
	int delta = (int)(off + e.tagged * VLAN_HLEN) - (int)(out_tagged * VLAN_HLEN);

	if (bpf_xdp_adjust_head(ctx, delta))
		return count(TT_CNT_ABORTED, XDP_ABORTED);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	__u8 *p = data;
	if (p + 2 * ETH_ALEN > (__u8 *)data_end)
		return count(TT_CNT_ABORTED, XDP_ABORTED);
	st_mac(p, e.dmac);
	st_mac(p + ETH_ALEN, e.smac);
	if (out_tagged) {
		__u16 tpid = bpf_htons(TPID_8021Q);
		if (p + 2 * ETH_ALEN + VLAN_HLEN > (__u8 *)data_end)
			return count(TT_CNT_ABORTED, XDP_ABORTED);
		st16(p + 2 * ETH_ALEN, tpid);
		st16(p + 2 * ETH_ALEN + 2, tci_out);
	}
	count(TT_CNT_REDIRECT, XDP_REDIRECT);
	return bpf_redirect(ifindex, 0);
}
