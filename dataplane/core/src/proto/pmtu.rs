//! Large client frames and tunnel MTU (sans-IO): TCP MSS clamping on SYNs
//! (RFC 879 / RFC 6691 practice, checksum fixed incrementally per RFC 1624)
//! and the "too big" answer for a frame that will not fit its tunnel —
//! ICMPv4 "fragmentation needed" (RFC 792, RFC 1191) for IPv4 with DF set,
//! ICMPv6 "packet too big" (RFC 4443) for IPv6, or outer fragmentation for
//! IPv4 without DF.
//!
//! Frames are client Ethernet frames, untagged or 802.1Q-tagged. Nothing
//! here panics on any input: short or lying headers mean "leave it alone".

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::wire::checksum::{fold, sum16};
use crate::wire::{ether, ipv4, ipv6};

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const PROTO_TCP: u8 = 6;
const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;

/// What [`clamp_mss`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClampResult {
    /// Not a TCP segment with SYN set (or not parseable).
    NotTcpSyn,
    /// A SYN whose MSS was already small enough (or had no MSS option).
    Unchanged,
    /// The MSS option was lowered.
    Clamped {
        /// MSS before.
        from: u16,
        /// MSS after.
        to: u16,
    },
}

/// What to do with a frame bigger than its tunnel allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TooBig {
    /// It fits (or is not IP): send it.
    Fits,
    /// IPv4 without DF: send it, the outer packet gets fragmented.
    Fragment,
    /// Drop it and send this frame back to the client instead.
    Reply(Vec<u8>),
    /// Drop it without an answer (an ICMP error, a non-first fragment, a
    /// multicast source or destination).
    Drop,
}

/// The EtherType and the start of the L3 packet in `frame`.
fn l3(frame: &[u8]) -> Option<(u16, usize)> {
    let v = ether::parse(frame)?;
    let at = v.inner_offset;
    let et = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
    Some((et, at + 2))
}

/// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m').
fn checksum_update(hc: u16, old: u16, new: u16) -> u16 {
    fold(u32::from(!hc) + u32::from(!old) + u32::from(new))
}

/// The largest MSS a TCP segment may announce so that it fits a tunnel of
/// `tunnel_mtu` bytes whose encapsulation adds `overhead` bytes (outer IP,
/// UDP, L2TP/GRE header and the inner Ethernet header with its tag).
pub fn mss_for(tunnel_mtu: u16, overhead: u16, ipv6: bool) -> u16 {
    let l3 = if ipv6 { 40 } else { 20 };
    tunnel_mtu
        .saturating_sub(overhead)
        .saturating_sub(l3 + 20)
        .max(256)
}

/// Lower the MSS option of a TCP SYN (or SYN-ACK) in `frame` to `max_mss_v4`
/// (IPv4) or `max_mss_v6` (IPv6) if it is larger, fixing the TCP checksum.
pub fn clamp_mss(frame: &mut [u8], max_mss_v4: u16, max_mss_v6: u16) -> ClampResult {
    let Some((et, ip)) = l3(frame) else {
        return ClampResult::NotTcpSyn;
    };
    let (tcp, limit, max) = match et {
        ETH_IPV4 => {
            let Some(h) = frame.get(ip..ip + 20) else {
                return ClampResult::NotTcpSyn;
            };
            let ihl = usize::from(h[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
            let frag = u16::from_be_bytes([h[6], h[7]]);
            if h[0] >> 4 != 4 || ihl < 20 || h[9] != PROTO_TCP || frag & 0x3fff != 0 {
                return ClampResult::NotTcpSyn;
            }
            (ip + ihl, ip + total, max_mss_v4)
        }
        ETH_IPV6 => {
            let Some(h) = frame.get(ip..ip + 40) else {
                return ClampResult::NotTcpSyn;
            };
            if h[0] >> 4 != 6 || h[6] != PROTO_TCP {
                return ClampResult::NotTcpSyn;
            }
            let payload = usize::from(u16::from_be_bytes([h[4], h[5]]));
            (ip + 40, ip + 40 + payload, max_mss_v6)
        }
        _ => return ClampResult::NotTcpSyn,
    };
    let limit = limit.min(frame.len());
    let Some(h) = frame.get(tcp..tcp + 20) else {
        return ClampResult::NotTcpSyn;
    };
    if h[13] & 0x02 == 0 {
        return ClampResult::NotTcpSyn;
    }
    let doff = usize::from(h[12] >> 4) * 4;
    let opts_end = (tcp + doff).min(limit);
    let mut i = tcp + 20;
    while i < opts_end {
        match frame[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let Some(&len) = frame.get(i + 1) else { break };
                let len = usize::from(len);
                if len < 2 || i + len > opts_end {
                    break;
                }
                if kind == 2 && len == 4 {
                    let at = i + 2;
                    let old = u16::from_be_bytes([frame[at], frame[at + 1]]);
                    if old <= max {
                        return ClampResult::Unchanged;
                    }
                    frame[at..at + 2].copy_from_slice(&max.to_be_bytes());
                    // A value at an odd offset from the TCP header adds to
                    // the checksum byte-swapped (RFC 1071 §2(B)).
                    let (o, n) = if (at - tcp) % 2 == 0 {
                        (old, max)
                    } else {
                        (old.swap_bytes(), max.swap_bytes())
                    };
                    let ck = u16::from_be_bytes([frame[tcp + 16], frame[tcp + 17]]);
                    let ck = checksum_update(ck, o, n);
                    frame[tcp + 16..tcp + 18].copy_from_slice(&ck.to_be_bytes());
                    return ClampResult::Clamped { from: old, to: max };
                }
                i += len;
            }
        }
    }
    ClampResult::Unchanged
}

/// The Ethernet header of a reply to `frame`: MACs swapped, same tag.
fn reply_l2(frame: &[u8], ethertype: u16) -> Option<Vec<u8>> {
    let v = ether::parse(frame)?;
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&v.src.0);
    out.extend_from_slice(&v.dst.0);
    if let Some(t) = v.tag {
        out.extend_from_slice(&ether::TPID_8021Q.to_be_bytes());
        out.extend_from_slice(&t.0.to_be_bytes());
    }
    out.extend_from_slice(&ethertype.to_be_bytes());
    Some(out)
}

/// What to do with `frame` when the tunnel carries IP packets of at most
/// `mtu` bytes. Replies come from `src_v4` / `src_v6`, or else from the
/// original destination.
pub fn too_big_reply(
    frame: &[u8],
    mtu: u16,
    src_v4: Option<Ipv4Addr>,
    src_v6: Option<Ipv6Addr>,
) -> TooBig {
    let Some((et, ip)) = l3(frame) else {
        return TooBig::Fits;
    };
    let Some(v) = ether::parse(frame) else {
        return TooBig::Fits;
    };
    if v.src.is_multicast() {
        return TooBig::Drop;
    }
    match et {
        ETH_IPV4 => too_big_v4(frame, ip, mtu, src_v4),
        ETH_IPV6 => too_big_v6(frame, ip, mtu, src_v6),
        _ => TooBig::Fits,
    }
}

fn too_big_v4(frame: &[u8], ip: usize, mtu: u16, src: Option<Ipv4Addr>) -> TooBig {
    let Some(h) = frame.get(ip..ip + 20) else {
        return TooBig::Fits;
    };
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let total = u16::from_be_bytes([h[2], h[3]]);
    if h[0] >> 4 != 4 || ihl < 20 || total <= mtu {
        return TooBig::Fits;
    }
    let frag = u16::from_be_bytes([h[6], h[7]]);
    if frag & 0x4000 == 0 {
        return TooBig::Fragment;
    }
    let orig_src = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
    let orig_dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
    let icmp_error = h[9] == PROTO_ICMP
        && frame
            .get(ip + ihl)
            .is_some_and(|t| matches!(t, 3 | 4 | 5 | 11 | 12));
    if frag & 0x1fff != 0
        || icmp_error
        || orig_src.is_multicast()
        || orig_src.is_broadcast()
        || orig_src.is_unspecified()
        || orig_dst.is_multicast()
    {
        return TooBig::Drop;
    }
    let Some(mut out) = reply_l2(frame, ETH_IPV4) else {
        return TooBig::Drop;
    };
    let quote_len = (ihl + 8).min(frame.len() - ip);
    let quote = &frame[ip..ip + quote_len];
    let src = src.unwrap_or(orig_dst);
    ipv4::Repr {
        src_addr: src,
        dst_addr: orig_src,
        protocol: ipv4::Protocol::Icmp,
        payload_len: 8 + quote_len,
        ttl: 64,
        ident: 0,
        dont_frag: false,
        dscp_ecn: 0,
    }
    .append_to(&mut out);
    let icmp_at = out.len();
    out.extend_from_slice(&[3, 4, 0, 0, 0, 0]);
    out.extend_from_slice(&mtu.to_be_bytes());
    out.extend_from_slice(quote);
    let ck = fold(sum16(&out[icmp_at..], 0));
    out[icmp_at + 2..icmp_at + 4].copy_from_slice(&ck.to_be_bytes());
    TooBig::Reply(out)
}

fn too_big_v6(frame: &[u8], ip: usize, mtu: u16, src: Option<Ipv6Addr>) -> TooBig {
    let Some(h) = frame.get(ip..ip + 40) else {
        return TooBig::Fits;
    };
    let len = 40 + usize::from(u16::from_be_bytes([h[4], h[5]]));
    if h[0] >> 4 != 6 || len <= usize::from(mtu) {
        return TooBig::Fits;
    }
    let mut a = [0u8; 16];
    a.copy_from_slice(&h[8..24]);
    let orig_src = Ipv6Addr::from(a);
    a.copy_from_slice(&h[24..40]);
    let orig_dst = Ipv6Addr::from(a);
    let icmp_error = h[6] == PROTO_ICMPV6 && frame.get(ip + 40).is_some_and(|&t| t < 128);
    if icmp_error || orig_src.is_multicast() || orig_src.is_unspecified() {
        return TooBig::Drop;
    }
    let Some(mut out) = reply_l2(frame, ETH_IPV6) else {
        return TooBig::Drop;
    };
    // As much of the original as fits in the minimum MTU (RFC 4443 §2.4).
    let quote = &frame[ip..frame.len().min(ip + 1280 - 48)];
    let src = src.unwrap_or(orig_dst);
    let plen = (8 + quote.len()) as u16;
    ipv6::Repr {
        src_addr: src,
        dst_addr: orig_src,
        next_header: ipv6::Protocol::Icmpv6,
        payload_len: usize::from(plen),
        hop_limit: 64,
    }
    .append_to(&mut out);
    let icmp_at = out.len();
    out.extend_from_slice(&[2, 0, 0, 0]);
    out.extend_from_slice(&u32::from(mtu).to_be_bytes());
    out.extend_from_slice(quote);
    // Pseudo-header: source, destination, length, next header.
    let mut acc = sum16(&src.octets(), 0);
    acc = sum16(&orig_src.octets(), acc);
    acc += u32::from(plen) + u32::from(PROTO_ICMPV6);
    let ck = fold(sum16(&out[icmp_at..], acc));
    out[icmp_at + 2..icmp_at + 4].copy_from_slice(&ck.to_be_bytes());
    TooBig::Reply(out)
}

/// Split the IPv4 packet (without DF) in `frame` into fragments of at most
/// `mtu` bytes of IP each (RFC 791 §3.2 "Fragmentation"), each a whole
/// Ethernet frame with `frame`'s header and tag, appended to `out`. Used
/// when a tunnel's configured MTU is below the path's, where the kernel would
/// not fragment the outer packet: the fragments cross the tunnel whole and
/// the client's destination reassembles them.
///
/// The first fragment keeps every IP option, later ones only the options
/// with the "copied" flag. A packet that is itself a fragment keeps its
/// offset and its MF bit on the last piece. Returns how many fragments were
/// written; 0 (and `out` untouched) when `frame` is not an IPv4 packet that
/// needs and allows fragmentation, or `mtu` leaves no room for 8 bytes of
/// payload.
pub fn fragment_v4(frame: &[u8], mtu: u16, out: &mut Vec<Vec<u8>>) -> usize {
    let Some((ETH_IPV4, ip)) = l3(frame) else {
        return 0;
    };
    let Some(h) = frame.get(ip..ip + 20) else {
        return 0;
    };
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    let flags = u16::from_be_bytes([h[6], h[7]]);
    let mtu = usize::from(mtu);
    if h[0] >> 4 != 4
        || ihl < 20
        || total < ihl
        || frame.len() < ip + total
        || total <= mtu
        || flags & 0x4000 != 0
    {
        return 0;
    }
    let header = &frame[ip..ip + ihl];
    // Options copied into every fragment (type with the top bit set).
    let mut copied = Vec::new();
    let mut i = 20;
    while i < ihl {
        match header[i] {
            0 => break,
            1 => i += 1,
            t => {
                let len = header.get(i + 1).map_or(0, |&l| usize::from(l));
                if len < 2 || i + len > ihl {
                    break;
                }
                if t & 0x80 != 0 {
                    copied.extend_from_slice(&header[i..i + len]);
                }
                i += len;
            }
        }
    }
    copied.resize(copied.len().next_multiple_of(4), 0);
    let later_ihl = 20 + copied.len();
    // Payload per fragment: a multiple of 8 that fits with the header.
    let first_room = mtu.saturating_sub(ihl) & !7;
    let later_room = mtu.saturating_sub(later_ihl) & !7;
    if first_room == 0 || later_room == 0 {
        return 0;
    }
    let payload = &frame[ip + ihl..ip + total];
    let base = usize::from(flags & 0x1fff) * 8;
    let more_after = flags & 0x2000 != 0;
    let mut done = 0;
    let mut n = 0;
    while done < payload.len() {
        let first = done == 0;
        let room = if first { first_room } else { later_room };
        let take = room.min(payload.len() - done);
        let last = done + take == payload.len();
        let mut f = Vec::with_capacity(ip + later_ihl.max(ihl) + take);
        f.extend_from_slice(&frame[..ip]);
        let at = f.len();
        if first {
            f.extend_from_slice(header);
        } else {
            f.extend_from_slice(&header[..20]);
            f.extend_from_slice(&copied);
            ipv4::Packet::new_unchecked(&mut f[at..]).set_version_and_header_len(later_ihl);
        }
        let hl = f.len() - at;
        let mut h = ipv4::Packet::new_unchecked(&mut f[at..]);
        h.set_total_len((hl + take) as u16);
        let mf = if last && !more_after {
            0
        } else {
            ipv4::FLAG_MF
        };
        h.set_flags_frag(((base + done) / 8) as u16 | mf | (flags & 0x8000));
        h.fill_checksum();
        f.extend_from_slice(&payload[done..done + take]);
        out.push(f);
        done += take;
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: [u8; 6] = [2, 0, 0, 0, 0, 0xc1];
    const SERVER: [u8; 6] = [2, 0, 0, 0, 0, 0x51];

    fn eth(tag: Option<u16>, ethertype: u16) -> Vec<u8> {
        let mut f = SERVER.to_vec();
        f.extend_from_slice(&CLIENT);
        if let Some(v) = tag {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    /// An independent TCP checksum over IPv4/IPv6 pseudo-header + segment.
    fn tcp_checksum_ok(frame: &[u8]) -> bool {
        let (et, ip) = l3(frame).unwrap();
        let (mut acc, seg) = if et == ETH_IPV4 {
            let ihl = usize::from(frame[ip] & 0xf) * 4;
            let total = usize::from(u16::from_be_bytes([frame[ip + 2], frame[ip + 3]]));
            let seg = &frame[ip + ihl..ip + total];
            let acc = sum16(&frame[ip + 12..ip + 20], 0) + 6 + seg.len() as u32;
            (acc, seg)
        } else {
            let plen = usize::from(u16::from_be_bytes([frame[ip + 4], frame[ip + 5]]));
            let seg = &frame[ip + 40..ip + 40 + plen];
            (
                sum16(&frame[ip + 8..ip + 40], 0) + 6 + seg.len() as u32,
                seg,
            )
        };
        acc = sum16(seg, acc);
        fold(acc) == 0
    }

    /// A SYN with `options` (padded to 4 bytes), checksum filled in.
    fn syn(v6: bool, tag: Option<u16>, flags: u8, options: &[u8]) -> Vec<u8> {
        let mut opts = options.to_vec();
        while !opts.len().is_multiple_of(4) {
            opts.push(0);
        }
        let mut tcp = vec![0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 0];
        tcp.push((((20 + opts.len()) / 4) << 4) as u8);
        tcp.extend_from_slice(&[flags, 0xff, 0xff, 0, 0, 0, 0]);
        tcp.extend_from_slice(&opts);
        let mut f = eth(tag, if v6 { ETH_IPV6 } else { ETH_IPV4 });
        let ip = f.len();
        if v6 {
            ipv6::Repr {
                src_addr: "fd00::11".parse().unwrap(),
                dst_addr: "fd00::1".parse().unwrap(),
                next_header: ipv6::Protocol::Tcp,
                payload_len: tcp.len(),
                hop_limit: 64,
            }
            .append_to(&mut f);
        } else {
            ipv4::Repr {
                src_addr: Ipv4Addr::new(192, 168, 10, 11),
                dst_addr: Ipv4Addr::new(192, 168, 10, 1),
                protocol: ipv4::Protocol::Tcp,
                payload_len: tcp.len(),
                ttl: 64,
                ident: 1,
                dont_frag: true,
                dscp_ecn: 0,
            }
            .append_to(&mut f);
        }
        let tcp_at = f.len();
        f.extend_from_slice(&tcp);
        // Fill the checksum so that the independent check passes.
        let (mut acc, len) = (0u32, tcp.len() as u32);
        if v6 {
            acc = sum16(&f[ip + 8..ip + 40], acc);
        } else {
            acc = sum16(&f[ip + 12..ip + 20], acc);
        }
        acc = sum16(&f[tcp_at..], acc + 6 + len);
        let ck = fold(acc);
        f[tcp_at + 16..tcp_at + 18].copy_from_slice(&ck.to_be_bytes());
        assert!(tcp_checksum_ok(&f));
        f
    }

    fn mss_of(frame: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([frame[at], frame[at + 1]])
    }

    #[test]
    fn clamps_syn_and_synack_v4_v6_tagged_or_not() {
        for v6 in [false, true] {
            for tag in [None, Some(10)] {
                for flags in [0x02, 0x12] {
                    let mut f = syn(v6, tag, flags, &[2, 4, 0x05, 0xb4]);
                    let r = clamp_mss(&mut f, 1300, 1280);
                    let want = if v6 { 1280 } else { 1300 };
                    assert_eq!(
                        r,
                        ClampResult::Clamped {
                            from: 1460,
                            to: want
                        }
                    );
                    assert!(tcp_checksum_ok(&f), "checksum still valid");
                    let opt = f.len() - 4;
                    assert_eq!(mss_of(&f, opt + 2), want);
                }
            }
        }
    }

    #[test]
    fn odd_offset_mss_keeps_checksum_valid() {
        // NOP then MSS: the value sits at an odd offset.
        let mut f = syn(false, None, 0x02, &[1, 2, 4, 0x05, 0xb4, 1, 1, 1]);
        assert!(matches!(
            clamp_mss(&mut f, 1000, 1000),
            ClampResult::Clamped { .. }
        ));
        assert!(tcp_checksum_ok(&f));
    }

    #[test]
    fn small_mss_non_syn_and_garbage_are_left_alone() {
        let mut f = syn(false, None, 0x02, &[2, 4, 0x02, 0x00]);
        assert_eq!(clamp_mss(&mut f, 1300, 1300), ClampResult::Unchanged);
        let mut f = syn(false, None, 0x10, &[2, 4, 0x05, 0xb4]);
        assert_eq!(clamp_mss(&mut f, 1300, 1300), ClampResult::NotTcpSyn);
        // Option with a lying length: stop, no panic.
        let mut f = syn(false, None, 0x02, &[8, 40, 2, 4]);
        assert_eq!(clamp_mss(&mut f, 1300, 1300), ClampResult::Unchanged);
        let base = syn(true, Some(5), 0x02, &[1, 2, 4, 0x05, 0xb4]);
        for n in 0..base.len() {
            let mut cut = base[..n].to_vec();
            let _ = clamp_mss(&mut cut, 1000, 1000);
            let _ = too_big_reply(&cut, 100, None, None);
        }
    }

    fn big_v4(df: bool, tag: Option<u16>, len: usize) -> Vec<u8> {
        let mut f = eth(tag, ETH_IPV4);
        ipv4::Repr {
            src_addr: Ipv4Addr::new(192, 168, 10, 11),
            dst_addr: Ipv4Addr::new(192, 168, 10, 1),
            protocol: ipv4::Protocol::Udp,
            payload_len: len - 20,
            ttl: 64,
            ident: 7,
            dont_frag: df,
            dscp_ecn: 0,
        }
        .append_to(&mut f);
        f.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0, 0, 0, 0]);
        f.resize(f.len() + len - 28, 0xee);
        f
    }

    #[test]
    fn df_gets_fragmentation_needed_no_df_fragments() {
        let f = big_v4(true, Some(10), 1500);
        let TooBig::Reply(r) = too_big_reply(&f, 1342, Some(Ipv4Addr::new(10, 99, 0, 1)), None)
        else {
            panic!("reply expected");
        };
        let v = ether::parse(&r).unwrap();
        assert_eq!((v.dst.0, v.src.0), (CLIENT, SERVER), "MACs swapped");
        assert_eq!(v.tag.map(|t| t.vid()), Some(10), "VLAN kept");
        let ip = v.inner_offset + 2;
        assert_eq!(fold(sum16(&r[ip..ip + 20], 0)), 0, "IP checksum");
        assert_eq!(&r[ip + 12..ip + 16], &[10, 99, 0, 1]);
        assert_eq!(&r[ip + 16..ip + 20], &[192, 168, 10, 11]);
        let icmp = &r[ip + 20..];
        assert_eq!((icmp[0], icmp[1]), (3, 4));
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1342);
        assert_eq!(fold(sum16(icmp, 0)), 0, "ICMP checksum");
        assert_eq!(icmp.len(), 8 + 28, "quotes the IP header and 8 bytes");
        assert_eq!(
            too_big_reply(&big_v4(false, None, 1500), 1342, None, None),
            TooBig::Fragment
        );
        assert_eq!(
            too_big_reply(&big_v4(true, None, 1300), 1342, None, None),
            TooBig::Fits
        );
    }

    #[test]
    fn ipv6_gets_packet_too_big() {
        let mut f = eth(None, ETH_IPV6);
        f.extend_from_slice(&[0x60, 0, 0, 0, 0x05, 0x8c, 17, 64]);
        f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11]);
        f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01]);
        f.resize(f.len() + 0x58c, 0xab);
        let TooBig::Reply(r) = too_big_reply(&f, 1300, None, None) else {
            panic!("reply expected");
        };
        let ip = 14;
        assert_eq!(r[ip + 6], 58);
        let icmp_at = ip + 40;
        assert_eq!((r[icmp_at], r[icmp_at + 1]), (2, 0));
        assert_eq!(
            u32::from_be_bytes(r[icmp_at + 4..icmp_at + 8].try_into().unwrap()),
            1300
        );
        assert!(r.len() - ip <= 1280, "fits the IPv6 minimum MTU");
        let plen = usize::from(u16::from_be_bytes([r[ip + 4], r[ip + 5]]));
        let mut acc = sum16(&r[ip + 8..ip + 40], 0) + plen as u32 + 58;
        acc = sum16(&r[icmp_at..], acc);
        assert_eq!(fold(acc), 0, "ICMPv6 checksum");
    }

    #[test]
    fn icmp_errors_and_multicast_are_never_answered() {
        let mut f = big_v4(true, None, 1500);
        f[14 + 9] = PROTO_ICMP;
        f[14 + 20] = 3;
        assert_eq!(too_big_reply(&f, 1000, None, None), TooBig::Drop);
        let mut f = big_v4(true, None, 1500);
        f[14 + 16] = 239;
        assert_eq!(too_big_reply(&f, 1000, None, None), TooBig::Drop);
        let mut f = big_v4(true, None, 1500);
        f[6] = 0x01;
        assert_eq!(
            too_big_reply(&f, 1000, None, None),
            TooBig::Drop,
            "multicast source MAC"
        );
    }

    #[test]
    fn mss_for_subtracts_every_header() {
        // 1400-byte path, L2TP/UDP/IPv4 with a 4-byte cookie + tagged
        // Ethernet: 20 + 8 + 12 + 18 = 58.
        assert_eq!(mss_for(1400, 58, false), 1400 - 58 - 40);
        assert_eq!(mss_for(1400, 58, true), 1400 - 58 - 60);
        assert_eq!(mss_for(100, 58, false), 256, "floor");
    }

    /// Reassemble `frags` the way a receiver does (RFC 791 / RFC 815),
    /// checking each header; returns (first header, payload, last MF).
    fn reassemble(frags: &[Vec<u8>], mtu: usize) -> (Vec<u8>, Vec<u8>, bool) {
        let mut payload = Vec::new();
        let mut first = Vec::new();
        let mut mf = true;
        for f in frags {
            let (_, ip) = l3(f).unwrap();
            let ihl = usize::from(f[ip] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([f[ip + 2], f[ip + 3]]));
            assert_eq!(f.len(), ip + total, "frame holds exactly the fragment");
            assert!(total <= mtu, "fragment of {total} > mtu {mtu}");
            assert_eq!(fold(sum16(&f[ip..ip + ihl], 0)), 0, "header checksum");
            let w = u16::from_be_bytes([f[ip + 6], f[ip + 7]]);
            assert_eq!(w & 0x4000, 0, "DF clear");
            let off = usize::from(w & 0x1fff) * 8;
            assert!(mf, "a fragment after the last one");
            mf = w & 0x2000 != 0;
            if first.is_empty() {
                first = f[ip..ip + ihl].to_vec();
                payload.resize(off, 0);
            }
            assert_eq!(payload.len(), off, "fragments contiguous, in order");
            if mf {
                assert_eq!((total - ihl) % 8, 0, "non-last payload a multiple of 8");
            }
            payload.extend_from_slice(&f[ip + ihl..]);
        }
        (first, payload, mf)
    }

    #[test]
    fn no_df_packet_is_split_into_fragments_that_reassemble() {
        for tag in [None, Some(20)] {
            let mut f = big_v4(false, tag, 1500);
            let (_, ip) = l3(&f).unwrap();
            for (i, b) in f[ip + 28..].iter_mut().enumerate() {
                *b = i as u8;
            }
            let mut out = Vec::new();
            assert_eq!(fragment_v4(&f, 1000, &mut out), 2);
            let (h, payload, mf) = reassemble(&out, 1000);
            assert!(!mf);
            assert_eq!(payload, f[ip + 20..], "payload intact");
            assert_eq!(&h[12..20], &f[ip + 12..ip + 20], "addresses kept");
            assert_eq!(h[4..6], f[ip + 4..ip + 6], "identification kept");
            for o in &out {
                assert_eq!(o[..ip], f[..ip], "Ethernet header and tag kept");
            }
            let mut small = Vec::new();
            assert_eq!(fragment_v4(&f, 576, &mut small), 3);
            assert_eq!(reassemble(&small, 576).1, f[ip + 20..]);
        }
    }

    #[test]
    fn only_copied_options_go_into_later_fragments() {
        let mut f = big_v4(false, None, 1200);
        let ip = 14;
        // IHL 8: a record-route option (7, not copied, 7 bytes) + NOP, then
        // a copied option (0x94 router alert, 4 bytes) + EOL padding.
        let opts = [7, 7, 4, 0, 0, 0, 0, 1, 0x94, 4, 0, 0];
        f[ip] = 0x48;
        let total = 1200 + opts.len() as u16;
        f[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
        f.splice(ip + 20..ip + 20, opts);
        let mut out = Vec::new();
        assert_eq!(fragment_v4(&f, 600, &mut out), 3);
        assert_eq!(out[0][ip] & 0x0f, 8, "first keeps every option");
        for later in &out[1..] {
            assert_eq!(later[ip] & 0x0f, 6, "later fragments: 20 + 4");
            assert_eq!(&later[ip + 20..ip + 24], &[0x94, 4, 0, 0]);
        }
        let (_, payload, _) = reassemble(&out, 600);
        assert_eq!(payload, f[ip + 32..]);
    }

    #[test]
    fn a_fragment_is_split_at_its_own_offset_and_keeps_mf() {
        let mut f = big_v4(false, None, 1500);
        f[14 + 6..14 + 8].copy_from_slice(&(0x2000u16 | 100).to_be_bytes());
        let mut out = Vec::new();
        assert_eq!(fragment_v4(&f, 1000, &mut out), 2);
        let w = |o: &[u8]| u16::from_be_bytes([o[20], o[21]]);
        assert_eq!(w(&out[0]), 0x2000 | 100);
        assert_eq!(w(&out[1]), 0x2000 | (100 + 976 / 8), "MF kept on the last");
    }

    #[test]
    fn nothing_to_fragment_leaves_out_untouched() {
        let mut out = Vec::new();
        assert_eq!(
            fragment_v4(&big_v4(true, None, 1500), 1000, &mut out),
            0,
            "DF"
        );
        assert_eq!(
            fragment_v4(&big_v4(false, None, 900), 1000, &mut out),
            0,
            "fits"
        );
        assert_eq!(
            fragment_v4(&big_v4(false, None, 1500), 27, &mut out),
            0,
            "no room"
        );
        let mut lying = big_v4(false, None, 1500);
        lying[14 + 2..14 + 4].copy_from_slice(&3000u16.to_be_bytes());
        assert_eq!(
            fragment_v4(&lying, 1000, &mut out),
            0,
            "length past the frame"
        );
        let f = big_v4(false, Some(10), 1500);
        for cut in 0..f.len() {
            let _ = fragment_v4(&f[..cut], 1000, &mut out);
        }
        assert!(out.is_empty());
        let mut v6 = big_v4(false, None, 1500);
        v6[12..14].copy_from_slice(&ETH_IPV6.to_be_bytes());
        assert_eq!(fragment_v4(&v6, 1000, &mut out), 0, "not IPv4");
    }
}
