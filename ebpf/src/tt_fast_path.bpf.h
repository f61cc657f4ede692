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
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TT_MAX_SESSIONS);
	__type(key, __u32);
	__type(value, struct tt_session);
} sessions SEC(".maps");

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

/* 64 - log2(buckets of `fdb`), written at load for the map's size
 * (tunterm_ebpf::Capacity); this default fits TT_MAX_FDB. */
const volatile __u32 tt_fdb_shift = 64 - 15;
_Static_assert(TT_MAX_FDB / TT_FDB_BUCKET_SLOTS == 1 << 15, "tt_fdb_shift's default");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TT_MAX_SESSIONS);
	__type(key, __u32);
	__type(value, struct tt_template);
} templates SEC(".maps");

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

static __always_inline int is_group(const __u8 *mac)
{
	return mac[0] & 1;
}

static __always_inline int is_zero(const __u8 *mac)
{
	return (mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5]) == 0;
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

/* The FDB key of (vlan, mac): a tt_fdb_key's bytes as one __u64. */
static __always_inline __u64 fdb_key(__u16 vlan, const __u8 *mac)
{
	struct tt_fdb_key k = { .vlan = vlan };
	__u64 key;

	__builtin_memcpy(k.mac, mac, 6);
	__builtin_memcpy(&key, &k, sizeof(key));
	return key;
}

/* Look `key` up in the FDB: its slot (for touch_seen) with the entry in
 * *e, or NULL. Inline, no helper call: two array lookups at most (the
 * verifier inlines them to a bounds check and an add), four compares in
 * the cache line of each. */
static __always_inline struct tt_fdb_slot *fdb_find(__u64 key, struct tt_fdb_entry *e)
{
	__u64 h[2] = { key * TT_FDB_HASH_MUL0, (key ^ (key >> 29)) * TT_FDB_HASH_MUL1 };

#pragma unroll
	for (int i = 0; i < 2; i++) {
		__u32 b = h[i] >> tt_fdb_shift;
		struct tt_fdb_bucket *bk = bpf_map_lookup_elem(&fdb, &b);

		if (!bk)
			return NULL;
#pragma unroll
		for (int j = 0; j < TT_FDB_BUCKET_SLOTS; j++) {
			volatile struct tt_fdb_slot *s = &bk->slot[j];
			__u64 v;

			if (s->key != key)
				continue;
			/* Entry, then the key again: a slot userspace cleared
			 * and reused for another key in between is a miss. */
			v = s->entry;
			if (s->key != key)
				return NULL;
			__builtin_memcpy(e, &v, sizeof(v));
			return &bk->slot[j];
		}
	}
	return NULL;
}

/* Stamp an FDB entry seen now (only its `seen` half-word: userspace owns
 * the rest), if its stamp `seen` is older. */
static __always_inline void touch_seen(struct tt_fdb_slot *s, __u16 seen)
{
	__u16 now = bpf_ktime_get_coarse_ns() >> TT_FDB_SEEN_SHIFT;

	if (now != seen)
		((volatile struct tt_fdb_entry *)&s->entry)->seen = now;
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
	__builtin_memcpy(&type, et, sizeof(type));
	if (type == bpf_htons(ETH_P_IP)) {
		__u16 frag;
		if (ip + 20 > (__u8 *)data_end)
			return 0;
		__builtin_memcpy(&frag, ip + 6, sizeof(frag));
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
