/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The one definition of every map layout shared by the XDP programs and the
 * userspace switch. The Rust side is generated from this file by bindgen
 * (ebpf/build.rs), so the two can never drift.
 *
 * Rules (checked: -Werror=padded when compiling the programs, the static
 * assertions below, and bindgen's layout tests):
 *   - fixed-width types only, no implicit padding (explicit _pad fields),
 *   - __u32 flag words, never bool,
 *   - byte order is said on every field that is not host order.
 */
#ifndef TUNTERM_MAPS_H
#define TUNTERM_MAPS_H

#include <linux/types.h>

/* Capacities (max_entries). */
#define TT_MAX_SESSIONS 65536
#define TT_MAX_FDB 262144

/* The switch port id of the upstream trunk (tunterm::proto::bridge::TRUNK). */
#define TT_PORT_TRUNK 0

/* UDP port of L2TPv3 over UDP. */
#define TT_L2TP_PORT 1701

/* Longest L2TPv3 cookie (RFC 3931 §4.1: 0, 4 or 8 bytes). */
#define TT_COOKIE_MAX 8

/* 64-bit words of a 4096-bit VLAN bitmap (bit v of word v / 64). */
#define TT_VLAN_WORDS 64

/* tt_session.flags */
/* Data messages carry the default L2-Specific Sublayer (RFC 4719). */
#define TT_SESSION_SUBLAYER (1u << 0)
/* Untagged (and priority-tagged, VID 0) inner frames are allowed and
 * belong to default_vlan. */
#define TT_SESSION_UNTAGGED (1u << 1)

/*
 * Value of the `sessions` map; key: the local (our) 32-bit session id,
 * host byte order. One entry per established L2TPv3 session over UDP.
 */
struct tt_session {
	/* Where data must come from: the AP's IPv4 address and UDP port,
	 * network byte order, as they sit in the packet. */
	__u32 peer_addr;
	__u16 peer_port;
	/* 0, 4 or 8: the cookie the peer must send (we assigned it). */
	__u16 cookie_len;
	__u8 cookie[TT_COOKIE_MAX];
	/* TT_SESSION_* */
	__u32 flags;
	/* The session's switch port id (its local session id today). */
	__u32 port;
	/* Where frames to a trunk destination are redirected. */
	__u32 trunk_ifindex;
	/* VLAN of untagged frames when TT_SESSION_UNTAGGED is set. */
	__u16 default_vlan;
	__u16 _pad0;
	/* VLANs a tagged inner frame may carry. */
	__u64 vlans[TT_VLAN_WORDS];
};

/* Key of the `fdb` map: (VLAN, MAC), like the userspace switch's FDB. */
struct tt_fdb_key {
	__u16 vlan;
	__u8 mac[6];
};

/* tt_fdb_entry.flags */
/* Frames on this VLAN leave the entry's port untagged (the trunk's
 * untagged VLAN). */
#define TT_FDB_EGRESS_UNTAGGED (1u << 0)

/* Value of the `fdb` map. Installed and aged by userspace; XDP only
 * refreshes last_seen_ns of a source it forwards from. */
struct tt_fdb_entry {
	/* Switch port id (TT_PORT_TRUNK or a session's port). */
	__u32 port;
	/* TT_FDB_* */
	__u32 flags;
	/* bpf_ktime_get_ns() (CLOCK_MONOTONIC) when last seen as a source. */
	__u64 last_seen_ns;
};

/* Index of the per-CPU `counters` array (__u64 values): one slot per action
 * and per reason. RX counts every packet; each packet also lands in exactly
 * one other slot. */
enum tt_counter {
	TT_CNT_RX = 0,
	/* Decapsulated and redirected to the trunk. */
	TT_CNT_REDIRECT,
	/* XDP_PASS reasons: the slow path takes these unchanged. */
	TT_CNT_PASS_NOT_IPV4,
	TT_CNT_PASS_IP_OPTIONS,
	TT_CNT_PASS_FRAGMENT,
	TT_CNT_PASS_NOT_L2TP,
	TT_CNT_PASS_MALFORMED,
	TT_CNT_PASS_CONTROL,
	TT_CNT_PASS_UNKNOWN_SESSION,
	TT_CNT_PASS_SEQUENCED,
	TT_CNT_PASS_SRC_NOT_LEARNED,
	TT_CNT_PASS_BUM,
	TT_CNT_PASS_UNKNOWN_DST,
	TT_CNT_PASS_NOT_TRUNK,
	/* A TCP SYN: the slow path clamps its MSS to the tunnel. */
	TT_CNT_PASS_TCP_SYN,
	/* XDP_DROP reasons (the userspace path drops these too). */
	TT_CNT_DROP_BAD_SOURCE,
	TT_CNT_DROP_BAD_COOKIE,
	TT_CNT_DROP_BAD_SUBLAYER,
	TT_CNT_DROP_VLAN_NOT_ALLOWED,
	TT_CNT_DROP_UNTAGGED_NOT_ALLOWED,
	/* bpf_xdp_adjust_head failed: XDP_ABORTED. */
	TT_CNT_ABORTED,
	TT_CNT_MAX
};

_Static_assert(sizeof(struct tt_session) == 32 + 8 * TT_VLAN_WORDS,
	       "tt_session has implicit padding");
_Static_assert(sizeof(struct tt_fdb_key) == 8, "tt_fdb_key has padding");
_Static_assert(sizeof(struct tt_fdb_entry) == 16, "tt_fdb_entry has padding");

#endif /* TUNTERM_MAPS_H */
