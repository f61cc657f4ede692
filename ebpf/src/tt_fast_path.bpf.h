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
 * rules in include/tunterm_maps.h), sized at load
 * (tunterm_ebpf::Capacity). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, TT_MAX_FDB / TT_FDB_BUCKET_SLOTS);
	__type(key, __u32);
	__type(value, struct tt_fdb_bucket);
} fdb SEC(".maps");

/* log2 of the buckets of `fdb`, written at load for the map's size
 * (tunterm_ebpf::Capacity); this default fits TT_MAX_FDB. */
const volatile __u32 tt_fdb_bits = TT_FDB_MIN_BITS;

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

/* Tunnels' templates, at their port index (TT_MAX_PORTS). Page-aligned
 * (BPF_F_MMAPABLE, though nothing maps it), so each 32-byte entry is in
 * one cache line. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, TT_MAX_PORTS);
	__type(key, __u32);
	__type(value, struct tt_template_short);
} templates SEC(".maps");

/* What short templates share (tt_template_short.base): a few, hot. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TT_TEMPLATE_BASES);
	__type(key, __u32);
	__type(value, struct tt_template);
} template_bases SEC(".maps");

/* Tunnels' templates that are not short (key: the port index); allocated
 * per entry: most deployments have none. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, TT_MAX_PORTS);
	__type(key, __u32);
	__type(value, struct tt_template);
} long_templates SEC(".maps");

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

/* The FDB's permutation of a unicast MAC (from ld_mac): a bijection of
 * its TT_FDB_MAC_BITS bits but the group bit, whose top tt_fdb_bits bits
 * are its first bucket and the rest its tag (tunterm_maps.h). A group
 * MAC is never looked up: it would be taken for the unicast one. */
static __always_inline __u64 fdb_perm(__u64 mac)
{
	__u64 u = mac >> 1;

	return ((u ^ (u >> 24)) * TT_FDB_HASH_MUL0) & ((1ULL << TT_FDB_MAC_BITS) - 1);
}

/* Start loading the first FDB bucket of `mac`, so that a lookup of it a
 * few dozen instructions later finds the line in the cache or on its way
 * instead of stalling there for the whole miss. BPF has no prefetch
 * instruction: a load whose value an empty asm takes is one (the CPU
 * issues it at once and runs on). */
static __always_inline void fdb_prefetch(__u64 mac)
{
	__u32 b = fdb_perm(mac) >> (TT_FDB_MAC_BITS - tt_fdb_bits);
	struct tt_fdb_bucket *bk = bpf_map_lookup_elem(&fdb, &b);

	if (bk) {
		__u64 v = ((volatile __u64 *)bk->slot)[0];

		asm volatile("" : : "r"(v));
	}
}

/* Find `want` (a key's bits, TT_FDB_SECOND set in its second bucket) in
 * bucket `b`: its slot, with the slot's entry bits in *entry, or NULL;
 * with `home_first`, the key's home slot `home` first. */
static __always_inline volatile __u64 *fdb_scan(__u32 b, __u64 want, __u32 home, __u32 *entry,
						 const int home_first)
{
	struct tt_fdb_bucket *bk = bpf_map_lookup_elem(&fdb, &b);
	volatile __u64 *slot;
	__u64 v;

	if (!bk)
		return NULL;
	slot = bk->slot;
	want >>= TT_FDB_KEY_SHIFT;
	if (home_first) {
		__u32 s = home & (TT_FDB_BUCKET_SLOTS - 1);
		v = slot[s];
		if ((v >> TT_FDB_KEY_SHIFT) == want) {
			*entry = (__u32)v;
			return &slot[s];
		}
	}
#pragma unroll
	for (int j = 0; j < TT_FDB_BUCKET_SLOTS; j++) {
		v = slot[j];
		if ((v >> TT_FDB_KEY_SHIFT) == want) {
			*entry = (__u32)v;
			return &slot[j];
		}
	}
	return NULL;
}

/* Look (vlan, mac) up in the FDB: its slot (for fdb_touch) with the
 * slot's entry bits (its port index under TT_FDB_PORT_MASK, TT_FDB_SEEN)
 * in *entry, or NULL. Inline, no helper call: two array lookups at most
 * (the verifier inlines them to a bounds check and an add), eight compares
 * of one load each in the cache line of each; with `home_first`, the
 * key's home slot first. The second bucket's hash is computed only when
 * the first bucket does not have the key. */
static __always_inline volatile __u64 *fdb_find_in(__u64 mac, __u16 vlan, __u32 *entry,
						    const int home_first)
{
	__u32 bits = tt_fdb_bits;
	__u64 p = fdb_perm(mac);
	__u64 key = (p & ((1ULL << (TT_FDB_MAC_BITS - bits)) - 1)) << TT_FDB_TAG_SHIFT |
		    (__u64)vlan << TT_FDB_VLAN_SHIFT;
	__u32 b = p >> (TT_FDB_MAC_BITS - bits);
	volatile __u64 *slot = fdb_scan(b, key, p >> (TT_FDB_MAC_BITS - 3 - bits), entry,
					home_first);

	if (slot)
		return slot;
	__u64 h = key * TT_FDB_HASH_MUL1;
	return fdb_scan(b ^ ((__u32)(h >> (64 - bits)) | 1), key | TT_FDB_SECOND, h >> (61 - bits),
			entry, home_first);
}

/* A lookup of a hot key: one of the few hosts behind the trunk (the
 * destination of decapsulation, the source of encapsulation), or a cold
 * one: a client among thousands. Both compare the key's home slot first:
 * userspace puts a key there when it is free, so the first compare
 * mostly hits, which the CPU predicts. */
static __always_inline volatile __u64 *fdb_find(__u64 mac, __u16 vlan, __u32 *entry)
{
	return fdb_find_in(mac, vlan, entry, 1);
}

/* Mark the source `slot` (from fdb_find, its entry bits `entry`) seen: a
 * frame was forwarded from its key. Written only when the mark is clear
 * (once per userspace scan), atomically: userspace may be storing the
 * slot (tunterm_maps.h). */
static __always_inline void fdb_touch(volatile __u64 *slot, __u32 entry)
{
	if (!(entry & TT_FDB_SEEN))
		__sync_fetch_and_or((__u64 *)slot, (__u64)TT_FDB_SEEN);
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
