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
/* Slots of the `sessions` array: a session's slot is its
 * local session id modulo TT_MAX_SESSIONS (tunterm::proto::l2tp::
 * SESSION_SLOTS; the allocator keeps slots of live sessions distinct). A
 * power of two. */
#define TT_MAX_SESSIONS 65536
/* The FDB's default size in slots; the daemon sizes it per deployment
 * (tunterm_ebpf::Capacity, `--fast-path-fdb-entries`): a power of two of
 * buckets of TT_FDB_BUCKET_SLOTS, from 2^TT_FDB_MIN_BITS buckets on. */
#define TT_MAX_FDB 131072
/* mGRE peers (proto::gre::DEFAULT_MAX_PEERS is 16,384). */
#define TT_MAX_GRE_PEERS 65536

/* Port indexes: what the FDB and the templates know a switch port by in
 * the fast path. 0 is the trunk's (TT_PORT_TRUNK); a tunnel port in the
 * fast path (an L2TPv3 session or an mGRE peer) gets one of 1 to
 * TT_MAX_PORTS - 1 from userspace (tunterm_ebpf::PortIndex), which hands
 * an index out again only after the FDB holds no entry naming it (so an
 * FDB entry never reaches a later tunnel's template), least recently
 * freed first. 15 bits: an FDB slot holds one beside its key. */
#define TT_MAX_PORTS 32768

/* The first switch port id of mGRE peers (tunterm::proto::gre::
 * GRE_PORT_BASE): no session's id is from here on. */
#define TT_GRE_PORT_BASE 0xF0000000u

/* The port index of the upstream trunk (its switch port id too:
 * tunterm::proto::bridge::TRUNK). */
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
 * belong to default_vlan. Also used in tt_gre_peer.flags and
 * tt_trunk.flags with the same meaning. */
#define TT_SESSION_UNTAGGED (1u << 1)

/* Address families of the 16-byte addresses (tt_session.family,
 * tt_gre_key.family, tt_template.family). An IPv4 address is stored
 * IPv4-mapped (::ffff:a.b.c.d, RFC 4291 §2.5.5.2) so both share a layout. */
#define TT_AF_INET 4
#define TT_AF_INET6 6

/* tt_session.transport: what the session was established over. */
#define TT_TRANSPORT_UDP 1
/* L2TPv3 directly over IP, protocol 115 (RFC 3931 §4.1.1.1). */
#define TT_TRANSPORT_IP 2

/* IP protocol numbers the programs take apart. */
#define TT_IPPROTO_L2TP 115
#define TT_IPPROTO_GRE 47
/* GRE protocol type of transparent Ethernet bridging. */
#define TT_GRE_PROTO_TEB 0x6558

/*
 * Value of the `sessions` array, at the slot of the local (our) 32-bit
 * session id: id % TT_MAX_SESSIONS. One entry per established L2TPv3
 * session, over UDP or IP, IPv4 or IPv6. A slot without a session is all
 * zero (session_id 0, which no data packet matches). One cache line: the
 * array is page-aligned (BPF_F_MMAPABLE) and an entry is 64 bytes, so the
 * program reads one line per packet; the session's 512-byte VLAN bitmap
 * is in `session_vlans` at the same slot, read only for tagged frames.
 */
struct tt_session {
	/* Where data must come from: the AP's address (IPv4-mapped for
	 * IPv4), network byte order, as it sits in the packet. */
	__u8 peer_addr[16];
	/* The AP's UDP port, network byte order; 0 over IP. */
	__u16 peer_port;
	/* TT_AF_INET or TT_AF_INET6: the family data must arrive in. */
	__u8 family;
	/* TT_TRANSPORT_*: data over anything else is a bad source. */
	__u8 transport;
	/* 0, 4 or 8: the cookie the peer must send (we assigned it). */
	__u16 cookie_len;
	/* VLAN of untagged frames when TT_SESSION_UNTAGGED is set. */
	__u16 default_vlan;
	__u8 cookie[TT_COOKIE_MAX];
	/* TT_SESSION_* */
	__u32 flags;
	/* The session's switch port id (its local session id today). */
	__u32 port;
	/* Where frames to a trunk destination are redirected. */
	__u32 trunk_ifindex;
	/* The local session id (host order) the slot holds: a packet's
	 * session id must be exactly this. */
	__u32 session_id;
	/* The session's port index (TT_MAX_PORTS): its clients' FDB entries
	 * name it. */
	__u16 port_idx;
	/* The trunk's untagged VLAN (frames on it leave the trunk untagged),
	 * 0: none. A copy of the trunk's, so that decapsulation reads no
	 * entry but the session's. */
	__u16 trunk_untagged_vlan;
	/* Up to the cache line. */
	__u8 _pad0[12];
};

/* Value of the `session_vlans` array, at a session's slot: the VLANs a
 * tagged inner frame of that session may carry (bit v of word v / 64).
 * Userspace writes it before the session's entry, so a session never
 * meets another's VLANs in its slot. */
struct tt_vlans {
	__u64 words[TT_VLAN_WORDS];
};

/* tt_gre_key.flags */
/* The peer sends a GRE key (key None and key 0 are different peers). */
#define TT_GRE_KEY_PRESENT (1u << 0)

/* Key of the `gre_peers` map: who an mGRE peer is (tunterm's
 * proto::gre::PeerKey): its outer source address and its GRE key. */
struct tt_gre_key {
	/* The AP's address (IPv4-mapped for IPv4), network byte order. */
	__u8 addr[16];
	/* The GRE key, host order; 0 without TT_GRE_KEY_PRESENT. */
	__u32 key;
	/* TT_GRE_KEY_PRESENT */
	__u16 flags;
	/* TT_AF_INET or TT_AF_INET6. */
	__u16 family;
};

/* tt_gre_peer.flags (TT_SESSION_UNTAGGED too) */
/* The peer's last data packet carried a sequence number: the slow path
 * tracks its order and sequences what it sends back, so all of the
 * peer's data goes there. */
#define TT_GRE_SEQUENCED (1u << 2)

/* Value of the `gre_peers` map. */
struct tt_gre_peer {
	/* The peer's switch port id (GRE_PORT_BASE + n). */
	__u32 port;
	/* TT_SESSION_UNTAGGED, TT_GRE_SEQUENCED */
	__u16 flags;
	/* As tt_session.trunk_untagged_vlan. */
	__u16 trunk_untagged_vlan;
	/* Where frames to a trunk destination are redirected. */
	__u32 trunk_ifindex;
	/* VLAN of untagged frames when TT_SESSION_UNTAGGED is set. */
	__u16 default_vlan;
	/* The peer's port index (TT_MAX_PORTS): its clients' FDB entries
	 * name it. */
	__u16 port_idx;
	/* bpf_ktime_get_coarse_ns() of the last data packet forwarded (at most once a
	 * second): the slow path's peer timeout must count it as heard. */
	__u64 last_seen_ns;
	/* VLANs a tagged inner frame may carry. */
	__u64 vlans[TT_VLAN_WORDS];
};

/* Value of the one-entry `trunk` array (index 0): the trunk port's VLANs,
 * as the switch's PortConfig of TRUNK. */
#define TT_TRUNK_VALID (1u << 31)
struct tt_trunk {
	/* TT_TRUNK_VALID once userspace wrote it (until then xdp_trunk_rx
	 * passes everything); TT_SESSION_UNTAGGED: untagged frames are
	 * default_vlan. */
	__u32 flags;
	/* The trunk's untagged VLAN (upstream_port_vlan_id). */
	__u16 default_vlan;
	__u16 _pad0;
	__u64 vlans[TT_VLAN_WORDS];
};

/* Longest outer header a template holds: Ethernet 14 + IPv6 40 + UDP 8 +
 * L2TPv3 8 + cookie 8 + sublayer 4 = 82, with room to spare: what makes
 * tt_template 128 bytes, two cache lines. */
#define TT_TEMPLATE_MAX 118

/* tt_template_short.hdr_len of a tunnel whose template is not short
 * (IPv6, or no base free): the whole template is in `long_templates`. */
#define TT_TEMPLATE_LONG 0xff

/* tt_template.encap (the low 4 bits of `kind`) */
#define TT_ENCAP_L2TP_UDP 1
#define TT_ENCAP_L2TP_IP 2
#define TT_ENCAP_GRE 3

/* tt_template.kind: the encapsulation and the address family in a byte. */
#define TT_TEMPLATE_KIND(encap, family) ((encap) | ((family) << 4))

/*
 * A tunnel's header template: the complete outer header of every frame
 * the trunk sends into that tunnel: Ethernet (next hop toward the AP),
 * IPv4 or IPv6, UDP for L2TP over UDP, then the L2TPv3 data header
 * (session id, cookie, a sublayer word without sequence number) or the
 * GRE header (0x6558, key). xdp_trunk_rx copies hdr[0..hdr_len] in front
 * of the frame and fills in the IPv4 total length and header checksum,
 * the IPv6 payload length, and the UDP length (UDP checksum 0 over IPv4).
 * Sequenced sessions and peers, and IPv6 UDP (whose checksum the program
 * does not compute) have no template: the slow path sends for them.
 *
 * Where it is kept: at the tunnel's port index (TT_MAX_PORTS; a
 * session's or an mGRE peer's) in the `templates` array, as a
 * tt_template_short over a base shared with other tunnels (IPv4), or
 * whole in the `long_templates` hash (IPv6). A random tunnel's template
 * is the encapsulation's second cold load after the FDB's bucket at
 * scale, so its bytes count: 10,000 tunnels' short entries take 313 KiB,
 * one-cache-line templates took 625 KiB, 128-byte ones twice that.
 */
struct tt_template {
	/* AP-facing interface to redirect to. */
	__u32 ifindex;
	/* The VLAN whose frames enter the tunnel untagged (its port's
	 * untagged VLAN), 0: none. Frames on other VLANs keep their tag. */
	__u16 untagged_vlan;
	/* Largest outer IP packet (the tunnel MTU): bigger goes slow (ICMP
	 * too-big or fragmentation, as the slow path decides). */
	__u16 mtu;
	/* Bytes of hdr in use (even, 14 + IP + ...; 0: no template). */
	__u8 hdr_len;
	/* TT_TEMPLATE_KIND(TT_ENCAP_*, TT_AF_INET or TT_AF_INET6) */
	__u8 kind;
	/* The header. Its IPv4 header has total length and checksum 0: the
	 * program sums it here (in cache), adds the length and writes the
	 * complement. */
	__u8 hdr[TT_TEMPLATE_MAX];
};

/* How many shared template bases `template_bases` holds. */
#define TT_TEMPLATE_BASES 256

/* Bytes of a short template's tail: what follows the fixed headers up to
 * the session id and an 8-byte cookie (L2TPv3) or the key (GRE). */
#define TT_TEMPLATE_TAIL 12
/* Where the tail goes in an IPv4 header (Ethernet 14 + IPv4 20, then):
 * UDP 8 and the L2TPv3 data header's first word 4 before the session id;
 * the session id right after IP; the GRE flags and protocol before the
 * key. */
#define TT_TEMPLATE_TAIL_UDP 46
#define TT_TEMPLATE_TAIL_IP 34
#define TT_TEMPLATE_TAIL_GRE 38
/* Longest header a short template's base holds, as xdp_trunk_rx copies
 * it: IPv4 over UDP with an 8-byte cookie and the sublayer is 62 bytes. */
#define TT_TEMPLATE_SHORT_MAX 64
/* The IPv4 destination and the UDP destination port in the header. */
#define TT_TEMPLATE_DADDR 30
#define TT_TEMPLATE_DPORT 36

/*
 * Value of the `templates` array: an IPv4 tunnel's template in 32 bytes,
 * two to a cache line, so 10,000 tunnels' take 313 KiB. What tunnels
 * share (the interface, MTU, kind and length, the source MAC and address,
 * TTL, the UDP source port, the sublayer word) is a tt_template in the
 * small `template_bases` array, at `base`, with the tunnel's own bytes
 * zero; the entry holds those bytes: xdp_trunk_rx copies the base's header,
 * then writes the destination MAC, the IPv4 destination, the UDP port and
 * the 12-byte tail at their places (the tail can run past the header: the
 * inner frame's addresses are written after it), and takes the IPv4 sum
 * from ip_sum instead of summing the header. IPv6 and anything else leave
 * hdr_len TT_TEMPLATE_LONG and the whole tt_template in `long_templates`.
 */
struct tt_template_short {
	/* hdr[0..6): the next hop toward the AP. */
	__u8 dmac[6];
	/* hdr[TT_TEMPLATE_DPORT..+2) over UDP (network byte order), else 0. */
	__u16 dport;
	/* hdr[TT_TEMPLATE_DADDR..+4): the AP's address. */
	__u8 daddr[4];
	/* hdr[TT_TEMPLATE_TAIL_*..+12), what of it is in the header; zero
	 * past its end. */
	__u8 tail[TT_TEMPLATE_TAIL];
	/* The IPv4 header's 16-bit one's complement sum with total length and
	 * checksum 0, folded, as ipv4_hdr_sum gives it. */
	__u16 ip_sum;
	/* As tt_template.untagged_vlan. */
	__u16 untagged_vlan;
	/* 0: no template; TT_TEMPLATE_LONG: in `long_templates`; else the
	 * base's hdr_len (the program checks they agree). */
	__u8 hdr_len;
	/* The base's index in `template_bases`. */
	__u8 base;
	__u16 _pad0;
};

/* The FDB: (VLAN, MAC) → port index, like the userspace switch's
 * (VLAN, MAC) → port. Not a kernel hash map (a lookup there is three calls
 * and a bucket walk, and XDP does two per frame) but a table of tunterm's
 * own in an mmapable array, so a lookup is inline code touching one cache
 * line, and a slot is 8 bytes, so that 100,000 clients take 1 MiB:
 *
 *   - `fdb` is an array of 2^tt_fdb_bits 64-byte buckets (page-aligned:
 *     BPF_F_MMAPABLE, so a bucket is one cache line) of
 *     TT_FDB_BUCKET_SLOTS slots, each one __u64 holding a key and its
 *     entry; tt_fdb_bits (a global set at load) is TT_FDB_MIN_BITS or
 *     more;
 *   - the table holds unicast MACs only: XDP passes a frame from or to a
 *     group address to the slow path before any lookup, and userspace
 *     stores none. So a key's MAC (m: the 48-bit value of ld_mac, its
 *     first byte lowest) has its group bit, bit 0, clear, and the table
 *     keys the other TT_FDB_MAC_BITS (47): u = m >> 1. They are permuted:
 *     p = ((u ^ (u >> 24)) * TT_FDB_HASH_MUL0) mod 2^47, a bijection of
 *     47 bits. Its first bucket is p's top tt_fdb_bits bits (the VLAN
 *     plays no part: xdp_ap_rx takes an untagged frame's VLAN from its
 *     session, and a bucket address that waited for that load would be a
 *     second cache miss in a row); the rest of p, the tag, goes in the
 *     slot. The bucket and the tag are the MAC, so a slot holds an exact
 *     key in fewer than the MAC's 48 bits;
 *   - a key's second bucket is its first XOR ((k * TT_FDB_HASH_MUL1) >>
 *     (64 - tt_fdb_bits)) | 1, k the slot's tag and VLAN bits (the key
 *     with TT_FDB_SECOND clear): from either bucket the other follows.
 *     Userspace puts a key in its first bucket while that has room,
 *     moving occupants to their other buckets when both are full (a MAC
 *     on many VLANs fills its first bucket and the rest go to their
 *     second ones). A key in its second bucket has TT_FDB_SECOND set, so
 *     it is never taken for a key whose first bucket that is;
 *   - each key has a home slot in each bucket, where userspace puts it
 *     when that is free: the 3 bits of p below the bucket's (first
 *     bucket) or of the product below the bits that pick the second: a
 *     lookup compares it first, and mostly hits;
 *   - slot bits, high to low: the tag (TT_FDB_TAG_SHIFT up: 47 -
 *     tt_fdb_bits bits, the top ones 0 in a table bigger than the
 *     smallest), the VLAN (TT_FDB_VLAN_SHIFT up, 12 bits), TT_FDB_SECOND,
 *     TT_FDB_SEEN, the port index (TT_FDB_PORT_MASK, 15 bits). The key
 *     is the bits from TT_FDB_KEY_SHIFT up: 0 in an empty slot (a key's
 *     VLAN is never 0). Whether a frame leaves untagged is the
 *     destination port's to say (the session's copy of the trunk's, a
 *     template), not the slot's;
 *   - userspace writes keys and entries, each slot with one 8-byte store:
 *     a key moved is written in its new slot before its old one is
 *     cleared; XDP reads a slot with one load, so it sees a whole key and
 *     entry or an empty slot;
 *   - XDP writes only TT_FDB_SEEN, with an atomic OR, when it forwards a
 *     frame from a source whose slot has it clear; userspace takes the
 *     marks (atomically clearing them) every few seconds to keep the
 *     switch's entries from aging. A mark racing a store of the slot is
 *     lost or lands on the key stored (on an empty slot it is no key):
 *     one refresh missed or given, which aging (minutes) does not
 *     notice. */

/* The FDB's key and entry as userspace names them (tunterm_ebpf::Fdb);
 * a slot packs both into a __u64 as above. */
struct tt_fdb_key {
	__u16 vlan;
	__u8 mac[6];
};

struct tt_fdb_entry {
	/* Port index (TT_PORT_TRUNK or a tunnel's: TT_MAX_PORTS). */
	__u16 port;
};

/* Slots per bucket: eight 8-byte slots fill a 64-byte cache line. */
#define TT_FDB_BUCKET_SLOTS 8

/* The bits of a unicast MAC the table keys: all but the group bit. */
#define TT_FDB_MAC_BITS 47
/* The fewest bucket bits (2^12 buckets, 32,768 slots, 256 KiB): the tag
 * is at most 47 - 12 = 35 bits, which is what the slot has room for. */
#define TT_FDB_MIN_BITS 12
/* The most (2^19 buckets, 4,194,304 slots, 32 MiB). */
#define TT_FDB_MAX_BITS 19

/* Slot bits (above). */
#define TT_FDB_PORT_MASK 0x7fffu
#define TT_FDB_SEEN (1u << 15)
#define TT_FDB_SECOND (1ull << 16)
#define TT_FDB_KEY_SHIFT 16
#define TT_FDB_VLAN_SHIFT 17
#define TT_FDB_TAG_SHIFT 29

/* Value of the `fdb` array. */
struct tt_fdb_bucket {
	__u64 slot[TT_FDB_BUCKET_SLOTS];
};

/* The two hashes (Fibonacci hashing: odd 64-bit multipliers). */
#define TT_FDB_HASH_MUL0 0x9E3779B97F4A7C15ULL
#define TT_FDB_HASH_MUL1 0xC2B2AE3D27D4EB4FULL

/* Index of the per-CPU `counters` array (__u64 values), shared by both
 * programs: one slot per action and per reason. TT_CNT_RX counts every
 * packet of xdp_ap_rx, TT_CNT_TRUNK_RX every packet of xdp_trunk_rx; each
 * packet also lands in exactly one other slot of its program. */
enum tt_counter {
	/* xdp_ap_rx */
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
	/* XDP_DROP reasons (the userspace path drops these too). */
	TT_CNT_DROP_BAD_SOURCE,
	TT_CNT_DROP_BAD_COOKIE,
	TT_CNT_DROP_BAD_SUBLAYER,
	TT_CNT_DROP_VLAN_NOT_ALLOWED,
	TT_CNT_DROP_UNTAGGED_NOT_ALLOWED,
	/* bpf_xdp_adjust_head failed: XDP_ABORTED. */
	TT_CNT_ABORTED,
	/* Added with IPv6, L2TP over IP, GRE and xdp_trunk_rx (appended, so
	 * the older slots keep their numbers). */
	/* IPv6 extension header (hop-by-hop, routing, destination options,
	 * AH, ESP, ...) before the transport header. */
	TT_CNT_PASS_IPV6_EXT,
	/* GRE with a checksum, routing, reserved bits or version != 0, or a
	 * protocol other than 0x6558 (keepalives). */
	TT_CNT_PASS_GRE_OTHER,
	/* IPv6 UDP with a zero checksum (the kernel drops it). */
	TT_CNT_PASS_UDP6_ZERO_CSUM,
	/* An inner TCP SYN: the slow path clamps its MSS to the tunnel's. */
	TT_CNT_PASS_TCP_SYN,
	/* xdp_trunk_rx: every packet (its own RX), and encapsulated and
	 * redirected into a tunnel. */
	TT_CNT_TRUNK_RX,
	TT_CNT_TRUNK_REDIRECT,
	/* xdp_trunk_rx: the trunk's VLANs are not written yet. */
	TT_CNT_TRUNK_PASS_NOT_CONFIGURED,
	/* xdp_trunk_rx: the destination tunnel has no template (sequenced,
	 * IPv6 UDP, not installed yet, or its slot holds another session's). */
	TT_CNT_TRUNK_PASS_NO_TEMPLATE,
	/* xdp_trunk_rx: the encapsulated packet exceeds the tunnel MTU. */
	TT_CNT_TRUNK_PASS_TOO_BIG,
	/* xdp_trunk_rx pass reasons shared with the AP side: malformed, BUM,
	 * unknown destination, destination not a tunnel, source not learned
	 * on the trunk, TCP SYN. */
	TT_CNT_TRUNK_PASS_MALFORMED,
	TT_CNT_TRUNK_PASS_BUM,
	TT_CNT_TRUNK_PASS_UNKNOWN_DST,
	TT_CNT_TRUNK_PASS_NOT_TUNNEL,
	TT_CNT_TRUNK_PASS_SRC_NOT_LEARNED,
	TT_CNT_TRUNK_PASS_TCP_SYN,
	/* xdp_trunk_rx: a DHCPv4 server's reply (UDP 67 → 68), which the
	 * client table reads (its leases) before it goes down the tunnel. */
	TT_CNT_TRUNK_PASS_DHCP,
	/* xdp_trunk_rx drops (the switch drops these too). */
	TT_CNT_TRUNK_DROP_VLAN_NOT_ALLOWED,
	TT_CNT_TRUNK_DROP_UNTAGGED_NOT_ALLOWED,
	TT_CNT_TRUNK_ABORTED,
	/* A packet capture runs (tt_globals.slow_path_only): what either
	 * program would have dropped by policy goes to the slow path, which
	 * drops it too and shows it at the capture's `drop` point. */
	TT_CNT_PASS_CAPTURE,
	TT_CNT_TRUNK_PASS_CAPTURE,
	/* xdp_ap_rx: a client's ARP or ICMPv6 (neighbour discovery): the
	 * client table learns its addresses from them, as it does when the
	 * forwarding workers hand them over. */
	TT_CNT_PASS_ARP_ND,
	TT_CNT_MAX
};

/* The programs' global data (one variable in .bss), written by userspace
 * (tunterm_ebpf::FastPath::set_globals). */
struct tt_globals {
	/* Non-zero while a packet capture runs: nothing is dropped in XDP
	 * (counted TT_CNT_*PASS_CAPTURE instead), so the slow path sees it. */
	__u32 slow_path_only;
};
_Static_assert(sizeof(struct tt_globals) == 4, "tt_globals: no padding");

_Static_assert(sizeof(struct tt_session) == 64, "a session is one cache line");
_Static_assert(sizeof(struct tt_vlans) == 8 * TT_VLAN_WORDS, "tt_vlans has padding");
_Static_assert(sizeof(struct tt_gre_key) == 24, "tt_gre_key has padding");
_Static_assert(sizeof(struct tt_gre_peer) == 24 + 8 * TT_VLAN_WORDS,
	       "tt_gre_peer has implicit padding");
_Static_assert(sizeof(struct tt_trunk) == 8 + 8 * TT_VLAN_WORDS,
	       "tt_trunk has implicit padding");
_Static_assert(sizeof(struct tt_template) == 10 + TT_TEMPLATE_MAX,
	       "tt_template has implicit padding");
_Static_assert(sizeof(struct tt_template) == 128, "a long template is two cache lines");
_Static_assert(sizeof(struct tt_template_short) == 32, "two short templates to a cache line");
_Static_assert(sizeof(struct tt_fdb_key) == 8, "tt_fdb_key has padding");
_Static_assert((TT_MAX_SESSIONS & (TT_MAX_SESSIONS - 1)) == 0,
	       "session slots are the low bits of the id");
_Static_assert(sizeof(struct tt_fdb_bucket) == 64, "an FDB bucket is one cache line");
_Static_assert(TT_MAX_FDB >= TT_FDB_BUCKET_SLOTS << TT_FDB_MIN_BITS &&
		       (TT_MAX_FDB & (TT_MAX_FDB - 1)) == 0,
	       "the default FDB is a power of two, not below the smallest");
_Static_assert(sizeof(struct tt_fdb_entry) == 2, "tt_fdb_entry has padding");
_Static_assert(TT_MAX_PORTS == TT_FDB_PORT_MASK + 1, "a port index fits a slot");
_Static_assert(TT_FDB_TAG_SHIFT + TT_FDB_MAC_BITS - TT_FDB_MIN_BITS == 64, "the tag fills the slot");
_Static_assert(TT_FDB_VLAN_SHIFT + 12 == TT_FDB_TAG_SHIFT, "the VLAN sits below the tag");
_Static_assert(TT_FDB_SECOND == 1ull << TT_FDB_KEY_SHIFT, "the key starts at its bucket bit");
_Static_assert(TT_FDB_SEEN == TT_FDB_PORT_MASK + 1 && TT_FDB_SECOND == TT_FDB_SEEN << 1,
	       "the seen mark between the port and the key");

#endif /* TUNTERM_MAPS_H */
