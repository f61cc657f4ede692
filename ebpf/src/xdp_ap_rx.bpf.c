// SPDX-License-Identifier: Apache-2.0
/*
 * xdp_ap_rx: the fast path of the AP-facing port.
 *
 *   | Ethernet (untagged) | IPv4 (no options, not a fragment) | UDP → 1701 |
 *   | L2TPv3 data: 0x0003 | reserved | session id | cookie 0/4/8 | [sublayer] |
 *   | inner Ethernet [802.1Q] ...                                            |
 *
 * A data message of a known session, from the session's peer, with the right
 * cookie, whose inner source MAC is already learned on the session's port and
 * whose destination is known on the trunk, is decapsulated, (re)tagged exactly
 * as the userspace switch would (tunterm::wire::ether::write_retagged), and
 * redirected to the trunk. The policy drops the userspace path makes too
 * (wrong source, wrong cookie, short sublayer, VLAN not allowed, untagged not
 * allowed) are dropped here. Everything else is XDP_PASS, untouched: the
 * slow path judges it. Every packet is counted once by reason (counters).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "tunterm_maps.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TT_MAX_SESSIONS);
	__type(key, __u32);
	__type(value, struct tt_session);
} sessions SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TT_MAX_FDB);
	__type(key, struct tt_fdb_key);
	__type(value, struct tt_fdb_entry);
} fdb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TT_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* L2TPv3 over UDP (RFC 3931 §4.1.2.1). */
#define L2TP_FLAG_T 0x8000
#define L2TP_VER_MASK 0x000f
#define L2TP_VER 3
#define L2TP_UDP_DATA_LEN 8
/* Default L2-Specific Sublayer (RFC 4719 §3.2): S bit of the first word. */
#define SUBLAYER_LEN 4
#define SUBLAYER_S 0x40000000

#define TPID_8021Q 0x8100
#define VLAN_HLEN 4
#define IP_MF_OFFSET 0x3fff

/* Refresh a source's last_seen at most this often (a write per packet would
 * bounce the entry's cache line between CPUs). */
#define LAST_SEEN_GRANULARITY_NS 1000000000ULL

static __always_inline int count(__u32 idx, int action)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &idx);

	if (c)
		*c += 1;
	return action;
}

#define PASS(reason) count(TT_CNT_PASS_##reason, XDP_PASS)
#define DROP(reason) count(TT_CNT_DROP_##reason, XDP_DROP)

static __always_inline int vlan_allowed(const struct tt_session *s, __u16 vid)
{
	__u32 word = (vid >> 6) & (TT_VLAN_WORDS - 1);

	return (s->vlans[word] >> (vid & 63)) & 1;
}

static __always_inline int is_group(const __u8 *mac)
{
	return mac[0] & 1;
}

static __always_inline int is_zero(const __u8 *mac)
{
	return (mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5]) == 0;
}

/* Whether the inner frame whose ethertype sits at `et` is a TCP segment with
 * SYN set (IPv4, first fragment, or IPv6 with TCP as the first next header).
 * Those go up: the slow path clamps their MSS to the tunnel. */
static __always_inline int is_tcp_syn(const __u8 *et, const void *data_end)
{
	const __u8 *end = data_end;
	const __u8 *l3 = et + 2;
	const __u8 *tcp;
	__u16 type;

	if (l3 > end)
		return 0;
	__builtin_memcpy(&type, et, sizeof(type));
	if (type == bpf_htons(0x0800)) {
		__u16 frag;

		if (l3 + 20 > end || l3[9] != IPPROTO_TCP)
			return 0;
		__builtin_memcpy(&frag, l3 + 6, sizeof(frag));
		if (bpf_ntohs(frag) & 0x1fff)
			return 0;
		tcp = l3 + (l3[0] & 0x0f) * 4;
	} else if (type == bpf_htons(0x86dd)) {
		if (l3 + 40 > end || l3[6] != IPPROTO_TCP)
			return 0;
		tcp = l3 + 40;
	} else {
		return 0;
	}
	if (tcp + 14 > end)
		return 0;
	return tcp[13] & 0x02;
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
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return PASS(NOT_IPV4);

	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return PASS(MALFORMED);
	if (ip->version != 4)
		return PASS(MALFORMED);
	if (ip->ihl != 5)
		return PASS(IP_OPTIONS);
	/* The kernel drops a header with a bad checksum before any socket
	 * sees it; so must we, or leave it to the kernel. */
	__s64 sum = bpf_csum_diff(0, 0, (__be32 *)ip, sizeof(*ip), 0);
	if (sum < 0)
		return PASS(MALFORMED);
	__u32 folded = (__u32)sum;
	folded = (folded & 0xffff) + (folded >> 16);
	folded = (folded & 0xffff) + (folded >> 16);
	if ((__u16)~folded != 0)
		return PASS(MALFORMED);
	/* Any fragment, first or not: the kernel reassembles, the slow path
	 * gets the datagram. */
	if (ip->frag_off & bpf_htons(IP_MF_OFFSET))
		return PASS(FRAGMENT);
	if (ip->protocol != IPPROTO_UDP)
		return PASS(NOT_L2TP);

	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > data_end)
		return PASS(MALFORMED);
	if (udp->dest != bpf_htons(TT_L2TP_PORT))
		return PASS(NOT_L2TP);

	/* The IP and UDP lengths must match what arrived, exactly: a truncated
	 * packet, or one with trailing bytes, is the kernel's to judge. From
	 * here on every length agrees, like the datagram a UDP socket reads. */
	__u64 ip_len = data_end - (void *)ip;
	if (bpf_ntohs(ip->tot_len) != ip_len ||
	    bpf_ntohs(udp->len) != ip_len - sizeof(*ip))
		return PASS(MALFORMED);

	__u8 *l2tp = (void *)(udp + 1);
	if (l2tp + L2TP_UDP_DATA_LEN > (__u8 *)data_end)
		return PASS(MALFORMED);
	__u16 lflags;
	__builtin_memcpy(&lflags, l2tp, sizeof(lflags));
	lflags = bpf_ntohs(lflags);
	if (lflags & L2TP_FLAG_T)
		return PASS(CONTROL);
	if ((lflags & L2TP_VER_MASK) != L2TP_VER)
		return PASS(NOT_L2TP);
	__u32 sid;
	__builtin_memcpy(&sid, l2tp + 4, sizeof(sid));
	sid = bpf_ntohl(sid);

	struct tt_session *s = bpf_map_lookup_elem(&sessions, &sid);
	if (!s)
		return PASS(UNKNOWN_SESSION);
	if (ip->saddr != s->peer_addr || udp->source != s->peer_port)
		return DROP(BAD_SOURCE);

	/* Offset of what follows the cookie, from data: a constant on each
	 * branch, so the verifier knows its range. */
	__u32 off = sizeof(*eth) + sizeof(*ip) + sizeof(*udp) + L2TP_UDP_DATA_LEN;
	__u8 *cookie = l2tp + L2TP_UDP_DATA_LEN;
	if (s->cookie_len == 4) {
		__u32 got, want;
		if (cookie + 4 > (__u8 *)data_end)
			return DROP(BAD_COOKIE);
		__builtin_memcpy(&got, cookie, 4);
		__builtin_memcpy(&want, s->cookie, 4);
		if (got != want)
			return DROP(BAD_COOKIE);
		off += 4;
	} else if (s->cookie_len == 8) {
		__u64 got, want;
		if (cookie + 8 > (__u8 *)data_end)
			return DROP(BAD_COOKIE);
		__builtin_memcpy(&got, cookie, 8);
		__builtin_memcpy(&want, s->cookie, 8);
		if (got != want)
			return DROP(BAD_COOKIE);
		off += 8;
	} else if (s->cookie_len != 0) {
		/* An entry userspace should never write: not ours to judge. */
		return PASS(UNKNOWN_SESSION);
	}

	if (s->flags & TT_SESSION_SUBLAYER) {
		__u8 *sl = (__u8 *)data + off;
		__u32 word;
		if (sl + SUBLAYER_LEN > (__u8 *)data_end)
			return DROP(BAD_SUBLAYER);
		__builtin_memcpy(&word, sl, sizeof(word));
		/* Sequence numbers are tracked (and enforced) by the slow path. */
		if (bpf_ntohl(word) & SUBLAYER_S)
			return PASS(SEQUENCED);
		off += SUBLAYER_LEN;
	}

	/* The inner frame. */
	__u8 *in = (__u8 *)data + off;
	if (in + ETH_HLEN > (__u8 *)data_end)
		return PASS(MALFORMED);
	struct tt_fdb_key dkey = {}, skey = {};
	__builtin_memcpy(dkey.mac, in, 6);
	__builtin_memcpy(skey.mac, in + 6, 6);
	__u16 ethertype;
	__builtin_memcpy(&ethertype, in + 12, sizeof(ethertype));

	__u32 tagged = 0;
	__u16 prio = 0, vid = 0;
	if (ethertype == bpf_htons(TPID_8021Q)) {
		__u16 tci;
		if (in + ETH_HLEN + VLAN_HLEN > (__u8 *)data_end)
			return PASS(MALFORMED);
		__builtin_memcpy(&tci, in + ETH_HLEN, sizeof(tci));
		tci = bpf_ntohs(tci);
		tagged = 1;
		prio = tci & 0xf000; /* PCP and DEI travel with the frame */
		vid = tci & 0x0fff;
	}

	/* The switch's VLAN decision (bridge::Switch::vlan_of): VID 0 is a
	 * priority tag, untagged for VLAN purposes. */
	__u16 vlan;
	if (vid == 0) {
		if (!(s->flags & TT_SESSION_UNTAGGED))
			return DROP(UNTAGGED_NOT_ALLOWED);
		vlan = s->default_vlan;
	} else {
		if (!vlan_allowed(s, vid))
			return DROP(VLAN_NOT_ALLOWED);
		vlan = vid;
	}
	dkey.vlan = vlan;
	skey.vlan = vlan;

	/* Bad sources are dropped by the slow path, flooding is its job too. */
	if (is_group(skey.mac) || is_zero(skey.mac))
		return PASS(SRC_NOT_LEARNED);
	if (is_group(dkey.mac))
		return PASS(BUM);

	/* Learning stays in userspace: a source not (or no longer) on this
	 * session's port goes up so the switch learns or moves it. */
	struct tt_fdb_entry *src = bpf_map_lookup_elem(&fdb, &skey);
	if (!src || src->port != s->port)
		return PASS(SRC_NOT_LEARNED);
	struct tt_fdb_entry *dst = bpf_map_lookup_elem(&fdb, &dkey);
	if (!dst)
		return PASS(UNKNOWN_DST);
	if (dst->port != TT_PORT_TRUNK)
		return PASS(NOT_TRUNK);

	if (is_tcp_syn(in + ETH_HLEN + tagged * VLAN_HLEN - 2, data_end))
		return PASS(TCP_SYN);

	__u64 now = bpf_ktime_get_ns();
	if (now - src->last_seen_ns > LAST_SEEN_GRANULARITY_NS)
		src->last_seen_ns = now;

	/* Rewrite: drop the outer headers and the inner tag (if any), then
	 * write the MACs and the egress tag (if any) in front of the inner
	 * ethertype, which stays where it is. */
	__u32 out_tagged = !(dst->flags & TT_FDB_EGRESS_UNTAGGED);
	__u16 tci_out = bpf_htons(prio | vlan);
	__u32 ifindex = s->trunk_ifindex;
	int delta = (int)(off + tagged * VLAN_HLEN) - (int)(out_tagged * VLAN_HLEN);

	if (bpf_xdp_adjust_head(ctx, delta))
		return count(TT_CNT_ABORTED, XDP_ABORTED);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	__u8 *p = data;
	if (p + 2 * ETH_ALEN > (__u8 *)data_end)
		return count(TT_CNT_ABORTED, XDP_ABORTED);
	__builtin_memcpy(p, dkey.mac, ETH_ALEN);
	__builtin_memcpy(p + ETH_ALEN, skey.mac, ETH_ALEN);
	if (out_tagged) {
		__u16 tpid = bpf_htons(TPID_8021Q);
		if (p + 2 * ETH_ALEN + VLAN_HLEN > (__u8 *)data_end)
			return count(TT_CNT_ABORTED, XDP_ABORTED);
		__builtin_memcpy(p + 2 * ETH_ALEN, &tpid, sizeof(tpid));
		__builtin_memcpy(p + 2 * ETH_ALEN + 2, &tci_out, sizeof(tci_out));
	}
	count(TT_CNT_REDIRECT, XDP_REDIRECT);
	return bpf_redirect(ifindex, 0);
}

char _license[] SEC("license") = "Apache-2.0";
