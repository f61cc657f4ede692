/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What both XDP programs share: the map definitions (layouts from
 * include/tunterm_maps.h), the counters, and small helpers. Each program's
 * file includes this, so it builds alone (xdp_ap_rx.bpf.o) and with the
 * other in one object whose two programs share one set of maps
 * (tunterm_xdp.bpf.o, what FastPath loads).
 */
#ifndef TT_FAST_PATH_BPF_H
#define TT_FAST_PATH_BPF_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "tunterm_maps.h"

/* Arrays where a packet carries the index (a session id's slot): the
 * verifier inlines an array lookup to a bounds check and an add, where a
 * hash lookup costs three calls (hash, bucket walk, key compare) and a
 * dependent cache miss per bucket. */
/* Page-aligned (BPF_F_MMAPABLE, though nothing maps it), so each 64-byte
 * session is one cache line. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, TT_MAX_SESSIONS);
	__type(key, __u32);
	__type(value, struct tt_session);
} sessions SEC(".maps");

/* A session's VLAN bitmap, at its slot: only tagged frames read it. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TT_MAX_SESSIONS);
	__type(key, __u32);
	__type(value, struct tt_vlans);
} session_vlans SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TT_MAX_GRE_PEERS);
	__type(key, struct tt_gre_key);
	__type(value, struct tt_gre_peer);
} gre_peers SEC(".maps");

/* The FDB: buckets of tunterm's own two-choice hash table (layout and
 * rules in include/tunterm_maps.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, TT_MAX_FDB / TT_FDB_BUCKET_SLOTS);
	__type(key, __u32);
	__type(value, struct tt_fdb_bucket);
} fdb SEC(".maps");

/* Buckets of `fdb` (any number), written at load for the map's size
 * (tunterm_ebpf::Capacity); this default fits TT_MAX_FDB. */
const volatile __u32 tt_fdb_buckets = TT_MAX_FDB / TT_FDB_BUCKET_SLOTS;

/* Where a key's home slot is in its hash (fdb_home), written at load from
 * tunterm_ebpf::fdb::HOME_SHIFT, which userspace places keys by. Not in
 * the map header: where in its bucket a key sits is userspace's choice
 * and every lookup finds a key in any slot, so the maps' layout id (and a
 * hitless restart across this policy) does not depend on it. */
const volatile __u32 tt_fdb_home_shift = 30;

/* Written by userspace (struct tt_globals in tunterm_maps.h). */
volatile struct tt_globals tt_globals;

/* The bytes between an L2TPv3 data header and the inner frame (cookie and
 * sublayer: 0, 4, 8 or 12) that most sessions' data carries, written by
 * userspace (tunterm_ebpf::FastPath::expect_l2tp_extra) as sessions come
 * and go; until then the daemon's default, an 8-byte cookie. Only a guess
 * of where the inner frame is before the session says: see
 * decap_prefetch. In .data, not in tt_globals: the map header's layout
 * (and so a hitless restart) does not depend on it. */
volatile __u32 tt_l2tp_extra = 8;

/* A policy drop: dropped here, or passed to the slow path while a capture
 * runs (which drops it too, where the capture's `drop` point sees it). */
#define POLICY_DROP(counter, capture_counter)                                  \
	(tt_globals.slow_path_only ? count(capture_counter, XDP_PASS)           \
				   : count(counter, XDP_DROP))

/* Page-aligned (BPF_F_MMAPABLE, though nothing maps it), so each 64-byte
 * template line is one aligned cache line. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, TT_MAX_SESSIONS);
	__type(key, __u32);
	__type(value, struct tt_template_line);
} templates SEC(".maps");

/* Sessions' templates longer than a line (key: the port id); allocated per
 * entry: most deployments have none. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, TT_MAX_SESSIONS);
	__type(key, __u32);
	__type(value, struct tt_template);
} long_templates SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TT_MAX_GRE_PEERS);
	__type(key, __u32);
	__type(value, struct tt_template);
} gre_templates SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tt_trunk);
} trunk SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TT_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

#define TPID_8021Q 0x8100
#define VLAN_HLEN 4
#define IP_MF_OFFSET 0x3fff
#define TCP_FLAG_SYN 0x02
/* IPv6 next header of ICMPv6 (linux/in6.h's IPPROTO_ICMPV6). */
#define IPPROTO_ICMPV6_NH 58

/* Refresh a last_seen at most this often (a write per packet would bounce
 * the entry's cache line between CPUs). */
#define LAST_SEEN_GRANULARITY_NS 1000000000ULL

static __always_inline int count(__u32 idx, int action)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &idx);

	if (c)
		*c += 1;
	return action;
}

static __always_inline int vlan_allowed(const __u64 *vlans, __u16 vid)
{
	__u32 word = (vid >> 6) & (TT_VLAN_WORDS - 1);

	return (vlans[word] >> (vid & 63)) & 1;
}

/* Loads and stores of packet bytes at any alignment, one instruction each.
 * clang's BPF target turns a memcpy it cannot prove aligned into single
 * bytes (eight loads, shifts and ors for a __u64), which the JIT keeps;
 * x86 loads and stores unaligned words at full speed, and the verifier
 * allows them in packets on kernels with efficient unaligned access (x86),
 * as every XDP program's struct iphdr * does. */
typedef __u16 __attribute__((may_alias)) tt_u16;
typedef __u32 __attribute__((may_alias)) tt_u32;
typedef __u64 __attribute__((may_alias)) tt_u64;

static __always_inline __u16 ld16(const void *p)
{
	return *(const tt_u16 *)p;
}

static __always_inline __u32 ld32(const void *p)
{
	return *(const tt_u32 *)p;
}

static __always_inline __u64 ld64(const void *p)
{
	return *(const tt_u64 *)p;
}

static __always_inline void st16(void *p, __u16 v)
{
	*(tt_u16 *)p = v;
}

static __always_inline void st32(void *p, __u32 v)
{
	*(tt_u32 *)p = v;
}

static __always_inline void st64(void *p, __u64 v)
{
	*(tt_u64 *)p = v;
}

/* A MAC address as the low 48 bits of a __u64, its first byte lowest (the
 * bytes in memory order on a little-endian machine, like tt_fdb_key). */
static __always_inline __u64 ld_mac(const void *p)
{
	return (__u64)ld32(p) | (__u64)ld16((const __u8 *)p + 4) << 32;
}

static __always_inline void st_mac(void *p, __u64 mac)
{
	st32(p, (__u32)mac);
	st16((__u8 *)p + 4, (__u16)(mac >> 32));
}

static __always_inline int is_group(__u64 mac)
{
	return mac & 1;
}

static __always_inline int is_zero(__u64 mac)
{
	return mac == 0;
}

/* The ones' complement sum of an IPv4 header without options, folded to
 * 16 bits (RFC 1071): 0xffff when its checksum field is right. Inline
 * arithmetic, not bpf_csum_diff: a helper call costs more than the five
 * loads and adds. */
static __always_inline __u16 ipv4_hdr_sum(const struct iphdr *ip)
{
	const __u32 *w = (const __u32 *)ip;
	__u64 sum = (__u64)w[0] + w[1] + w[2] + w[3] + w[4];

	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

/* CLOCK_MONOTONIC_COARSE: the same clock as bpf_ktime_get_ns (and the
 * slow path's Instant), at most a tick behind, read from memory: the
 * precise clock reads the TSC, which in a VM cost ~1.4% of the sending CPU
 * at 64-byte line rate on every forwarded frame (perf, labbench case 3). */
static __always_inline void touch(__u64 *last_seen)
{
	__u64 now = bpf_ktime_get_coarse_ns();

	if (now - *last_seen > LAST_SEEN_GRANULARITY_NS)
		*last_seen = now;
}

/* The FDB key of (vlan, mac from ld_mac): a tt_fdb_key's bytes as one
 * little-endian __u64. */
static __always_inline __u64 fdb_key(__u16 vlan, __u64 mac)
{
	return (__u64)vlan | mac << 16;
}

/* The first hash of a MAC: the bucket most keys are in does not depend on
 * the VLAN (TT_FDB_HASH0_SHIFT in tunterm_maps.h). */
static __always_inline __u64 fdb_hash0(__u64 mac)
{
	return (mac ^ (mac >> 24)) * TT_FDB_HASH_MUL0;
}

/* The bucket of a hash product: its top 32 bits scaled to the table
 * (multiply-shift range reduction, as tunterm_ebpf::fdb::bucket_of). */
static __always_inline __u32 fdb_bucket(__u64 h)
{
	return ((h >> 32) * tt_fdb_buckets) >> 32;
}

/* Start loading the first FDB bucket of `mac`, so that a lookup of it a
 * few dozen instructions later finds the line in the cache or on its way
 * instead of stalling there for the whole miss. BPF has no prefetch
 * instruction: a load whose value an empty asm takes is one (the CPU
 * issues it at once and runs on). */
static __always_inline void fdb_prefetch(__u64 mac)
{
	__u32 b = fdb_bucket(fdb_hash0(mac));
	struct tt_fdb_bucket *bk = bpf_map_lookup_elem(&fdb, &b);

	if (bk) {
		__u64 v = ((volatile struct tt_fdb_slot *)bk->slot)->key;

		asm volatile("" : : "r"(v));
	}
}

/* The home slot of a key in the bucket of hash `h`: the slot userspace
 * puts it in when that is free (tunterm_ebpf::fdb::home_slot), so the
 * first compare of a lookup mostly hits and the CPU predicts it. */
static __always_inline __u32 fdb_home(__u64 h)
{
	return (h >> tt_fdb_home_shift) & (TT_FDB_BUCKET_SLOTS - 1);
}

/* Whether slot `s` holds `key`: 1 with its entry in *e, 0 if not, -1 if
 * it did and userspace cleared it meanwhile. */
static __always_inline int fdb_match(volatile struct tt_fdb_slot *s, __u64 key,
				     struct tt_fdb_entry *e)
{
	__u64 v;

	if (s->key != key)
		return 0;
	/* Entry, then the key again: a slot userspace cleared and reused for
	 * another key in between is a miss. */
	v = s->entry;
	if (s->key != key)
		return -1;
	__builtin_memcpy(e, &v, sizeof(v));
	return 1;
}

/* Look `key` up in the FDB: its slot (for touch_seen) with the entry in
 * *e, or NULL. Inline, no helper call: two array lookups at most (the
 * verifier inlines them to a bounds check and an add), four compares in
 * the cache line of each; with `home_first`, the key's home slot first. */
static __always_inline struct tt_fdb_slot *fdb_find_in(__u64 key, struct tt_fdb_entry *e,
						   const int home_first)
{
	__u64 h[2] = { fdb_hash0(key >> TT_FDB_HASH0_SHIFT),
		       (key ^ (key >> 29)) * TT_FDB_HASH_MUL1 };

#pragma unroll
	for (int i = 0; i < 2; i++) {
		__u32 b = fdb_bucket(h[i]);
		struct tt_fdb_bucket *bk = bpf_map_lookup_elem(&fdb, &b);
		struct tt_fdb_slot *home;
		int m;

		if (!bk)
			return NULL;
		if (home_first) {
			home = &bk->slot[fdb_home(h[i])];
			m = fdb_match(home, key, e);
			if (m)
				return m > 0 ? home : NULL;
		}
#pragma unroll
		for (int j = 0; j < TT_FDB_BUCKET_SLOTS; j++) {
			m = fdb_match(&bk->slot[j], key, e);
			if (m)
				return m > 0 ? &bk->slot[j] : NULL;
		}
	}
	return NULL;
}

/* A lookup of a hot key: one of the few hosts behind the trunk (the
 * destination of decapsulation, the source of encapsulation), at the same
 * slot frame after frame, which the CPU predicts without the home slot
 * (comparing it first measured 1-3 ns more at 1 x 1). */
static __always_inline struct tt_fdb_slot *fdb_find(__u64 key, struct tt_fdb_entry *e)
{
	return fdb_find_in(key, e, 0);
}

/* A lookup of a cold key: a client among thousands, at a different slot
 * frame by frame; from its home slot the first compare mostly hits. */
static __always_inline struct tt_fdb_slot *fdb_find_cold(__u64 key, struct tt_fdb_entry *e)
{
	return fdb_find_in(key, e, 1);
}

/* Stamp an FDB entry seen now (only its `seen` half-word: userspace owns
 * the rest), if its stamp `seen` is older. */
static __always_inline void touch_seen(struct tt_fdb_slot *s, __u16 seen)
{
	__u16 now = (__u16)tt_globals.seen_now;

	if (now != seen)
		((volatile struct tt_fdb_entry *)&s->entry)->seen = now;
}

/* Whether the frame from ethertype `et` on is an unfragmented IPv4 UDP
 * datagram from port 67 to port 68 (a DHCPv4 server's reply). */
static __always_inline int is_dhcp_reply(__u8 *et, void *data_end)
{
	__u8 *ip = et + 2;
	__u8 *udp;
	__u16 frag;

	if (ip + 20 > (__u8 *)data_end || ld16(et) != bpf_htons(ETH_P_IP))
		return 0;
	frag = ld16(ip + 6);
	if ((ip[0] >> 4) != 4 || (ip[0] & 0x0f) < 5 || ip[9] != IPPROTO_UDP ||
	    (frag & bpf_htons(IP_MF_OFFSET)))
		return 0;
	udp = ip + (ip[0] & 0x0f) * 4;
	if (udp + 4 > (__u8 *)data_end)
		return 0;
	return ld16(udp) == bpf_htons(67) && ld16(udp + 2) == bpf_htons(68);
}

/* A frame's Ethernet addresses and 802.1Q tag (VID 0 and no tag: vid 0). */
struct eth_view {
	__u64 dmac;
	__u64 smac;
	/* 1 if the frame carries an 802.1Q tag. */
	__u32 tagged;
	/* The tag's PCP and DEI bits (they travel with the frame). */
	__u16 prio;
	__u16 vid;
};

/* Read the Ethernet header at `f`, whose 14 bytes the caller checked are
 * in the packet: 0, or -1 if a tag is cut short. */
static __always_inline int eth_parse(__u8 *f, void *data_end, struct eth_view *e)
{
	e->dmac = ld_mac(f);
	e->smac = ld_mac(f + 6);
	e->tagged = 0;
	e->prio = 0;
	e->vid = 0;
	if (ld16(f + 12) == bpf_htons(TPID_8021Q)) {
		__u16 tci;
		if (f + ETH_HLEN + VLAN_HLEN > (__u8 *)data_end)
			return -1;
		tci = bpf_ntohs(ld16(f + ETH_HLEN));
		e->tagged = 1;
		e->prio = tci & 0xf000;
		e->vid = tci & 0x0fff;
	}
	return 0;
}

/* Whether the frame from ethertype `et` on is ARP, or IPv6 whose next
 * header is ICMPv6 (neighbour discovery among it): what the client table
 * learns a client's addresses from (tunterm::proto::clients), so it goes
 * to the slow path as the forwarding workers hand it over. */
static __always_inline int is_arp_or_icmp6(__u8 *et, void *data_end)
{
	__u16 type;
	__u8 *ip = et + 2;

	if (et + 2 > (__u8 *)data_end)
		return 0;
	type = ld16(et);
	if (type == bpf_htons(ETH_P_ARP))
		return 1;
	if (type != bpf_htons(ETH_P_IPV6) || ip + 40 > (__u8 *)data_end)
		return 0;
	return ip[6] == IPPROTO_ICMPV6_NH;
}

/* Whether the frame's L3 payload, starting with its ethertype at `et`, is a
 * TCP SYN whose MSS the slow path would clamp: the same test as
 * tunterm::proto::pmtu::clamp_mss (IPv4 not a fragment, or IPv6 with TCP as
 * the next header; a whole 20-byte TCP header with SYN set). */
static __always_inline int is_tcp_syn(__u8 *et, void *data_end)
{
	__u16 type;
	__u8 *ip = et + 2;
	__u8 *tcp;

	if (et + 2 > (__u8 *)data_end)
		return 0;
	type = ld16(et);
	if (type == bpf_htons(ETH_P_IP)) {
		__u16 frag;
		if (ip + 20 > (__u8 *)data_end)
			return 0;
		frag = ld16(ip + 6);
		if ((ip[0] >> 4) != 4 || (ip[0] & 0x0f) < 5 || ip[9] != IPPROTO_TCP ||
		    (frag & bpf_htons(IP_MF_OFFSET)))
			return 0;
		tcp = ip + (ip[0] & 0x0f) * 4;
	} else if (type == bpf_htons(ETH_P_IPV6)) {
		if (ip + 40 > (__u8 *)data_end)
			return 0;
		if ((ip[0] >> 4) != 6 || ip[6] != IPPROTO_TCP)
			return 0;
		tcp = ip + 40;
	} else {
		return 0;
	}
	if (tcp + 20 > (__u8 *)data_end)
		return 0;
	return tcp[13] & TCP_FLAG_SYN;
}

char _license[] SEC("license") = "Apache-2.0";

#endif /* TT_FAST_PATH_BPF_H */
