//! `io::raw` in network namespaces: raw IP sockets for L2TPv3 over IP (115)
//! and GRE (47) over IPv4 and IPv6, exact payloads and addresses both ways,
//! kernel fragmentation and reassembly, `EMSGSIZE` when fragmentation is
//! disallowed, the UDP helper, tokio registration, and tshark as the judge
//! of what went on the wire.

mod common;

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use tunterm::io::batch::RecvBatch;
use tunterm::io::raw::{IPPROTO_GRE, IPPROTO_L2TP, RECV_BUF_LEN, RawIpSocket, RawRecv, udp_socket};
use tunterm_lab::{self as lab, Capture, Netns};

use common::assert_no_namespaces;

const A4: &str = "10.115.0.1";
const B4: &str = "10.115.0.2";
const B4_2: &str = "10.115.0.3";
const A6: &str = "fd00:115::1";
const B6: &str = "fd00:115::2";
const B6_2: &str = "fd00:115::3";

/// Two namespaces `a` and `b` joined by veth `e0` (MTU 1500) with IPv4 and
/// IPv6 addresses; `b` has a second address of each family.
struct Lab {
    prefix: String,
    dir: PathBuf,
    a: Netns,
    b: Netns,
}

impl Lab {
    fn new(test: &str) -> anyhow::Result<Lab> {
        lab::require_root()?;
        let prefix = lab::unique_prefix(test);
        lab::cleanup_prefix(&prefix);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(&prefix);
        std::fs::create_dir_all(&dir)?;
        let a = Netns::new(&format!("{prefix}a"))?;
        let b = Netns::new(&format!("{prefix}b"))?;
        lab::veth(&a, "e0", &b, "e0")?;
        lab::addr(&a, "e0", &format!("{A4}/24"))?;
        lab::addr(&a, "e0", &format!("{A6}/64"))?;
        for cidr in [
            format!("{B4}/24"),
            format!("{B4_2}/24"),
            format!("{B6}/64"),
            format!("{B6_2}/64"),
        ] {
            lab::addr(&b, "e0", &cidr)?;
        }
        let mtu = b.enter(|| tunterm::io::netlink::mtu("e0"))??;
        ensure!(mtu == 1500, "veth MTU is {mtu}, tests assume 1500");
        Ok(Lab { prefix, dir, a, b })
    }

    /// Drops the namespaces, checks none is left, removes the scratch
    /// directory (kept when the test fails before this).
    fn finish(self) -> anyhow::Result<()> {
        let Lab { prefix, dir, a, b } = self;
        drop((a, b));
        assert_no_namespaces(&prefix);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A recognisable payload for `protocol`: an L2TPv3 data header (session id
/// 0x1234abcd, no cookie) or a GRE header (key present, 0x6558, key 77),
/// then a fake Ethernet frame of `len` bytes in all, filled with `marker`.
fn payload(protocol: u8, marker: u8, len: usize) -> Vec<u8> {
    let mut p = match protocol {
        IPPROTO_L2TP => vec![0x12, 0x34, 0xab, 0xcd],
        IPPROTO_GRE => vec![0x20, 0x00, 0x65, 0x58, 0, 0, 0, 77],
        _ => unreachable!(),
    };
    p.extend_from_slice(&[0xff; 6]); // dst MAC
    p.extend_from_slice(&[0x02, 0, 0, 0, 0, marker]); // src MAC
    p.extend_from_slice(&[0x88, 0xb5]); // local experimental ethertype
    let fill = len.saturating_sub(p.len());
    p.extend((0..fill).map(|i| marker ^ (i as u8)));
    p
}

/// Waits up to 3 s for one datagram on `sock`.
fn recv_wait(sock: &RawIpSocket, buf: &mut [u8]) -> anyhow::Result<RawRecv> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match sock.recv_from(buf) {
            Ok(r) => return Ok(r),
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "recv on protocol {} socket bound to {}",
                        sock.protocol(),
                        sock.local()
                    )
                });
            }
        }
    }
}

/// Nothing more is queued on `sock` (each send arrived exactly once).
fn assert_empty(sock: &RawIpSocket) {
    let mut buf = vec![0u8; RECV_BUF_LEN];
    match sock.recv_from(&mut buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!(
            "protocol {} socket on {}: expected nothing queued, got {other:?}",
            sock.protocol(),
            sock.local()
        ),
    }
}

/// Sends `data` from `tx` to `dst` and checks `rx` gets exactly it, from
/// `tx`'s address to `dst`.
fn check_one_way(
    tx: &RawIpSocket,
    rx: &RawIpSocket,
    dst: IpAddr,
    data: &[u8],
) -> anyhow::Result<()> {
    assert_eq!(tx.send_to(data, dst)?, data.len());
    let mut buf = vec![0u8; RECV_BUF_LEN];
    let got = recv_wait(rx, &mut buf)?;
    let want = RawRecv {
        len: data.len(),
        src: tx.local(),
        dst,
    };
    assert_eq!(got, want, "protocol {} to {dst}", tx.protocol());
    assert!(
        buf[..got.len] == *data,
        "protocol {} to {dst}: payload differs",
        tx.protocol()
    );
    Ok(())
}

#[test]
fn raw_sockets_carry_l2tp_and_gre_over_ipv4_and_ipv6() -> anyhow::Result<()> {
    let lab = Lab::new("rawrt")?;
    let capture = Capture::start_lossless(&lab.b, "e0", &lab.dir.join("rt.pcap"))?;

    for protocol in [IPPROTO_L2TP, IPPROTO_GRE] {
        for (a_ip, b_ip) in [(A4, B4), (A6, B6)] {
            let (a_ip, b_ip) = (ip(a_ip), ip(b_ip));
            let sa = lab.a.enter(|| RawIpSocket::bind(a_ip, protocol))??;
            let sb = lab.b.enter(|| RawIpSocket::bind(b_ip, protocol))??;
            assert_eq!((sa.local(), sa.protocol()), (a_ip, protocol));

            check_one_way(&sa, &sb, b_ip, &payload(protocol, 1, 100))?;
            check_one_way(&sb, &sa, a_ip, &payload(protocol, 2, 1400))?;
            // Smallest payloads: the bare encapsulation header.
            check_one_way(&sa, &sb, b_ip, &payload(protocol, 3, 0)[..4])?;
            assert_empty(&sa);
            assert_empty(&sb);
        }
    }

    // Bound to 0.0.0.0 / ::, the destination tells B's addresses apart; a
    // socket bound to one address never sees packets to the other.
    for (a_ip, b_ip, b_ip2, any) in [(A4, B4, B4_2, "0.0.0.0"), (A6, B6, B6_2, "::")] {
        let (a_ip, b_ip, b_ip2, any) = (ip(a_ip), ip(b_ip), ip(b_ip2), ip(any));
        let sa = lab.a.enter(|| RawIpSocket::bind(a_ip, IPPROTO_L2TP))??;
        let sb_any = lab.b.enter(|| RawIpSocket::bind(any, IPPROTO_L2TP))??;
        let sb_one = lab.b.enter(|| RawIpSocket::bind(b_ip, IPPROTO_L2TP))??;
        check_one_way(&sa, &sb_any, b_ip2, &payload(IPPROTO_L2TP, 4, 80))?;
        check_one_way(&sa, &sb_any, b_ip, &payload(IPPROTO_L2TP, 5, 80))?;
        // The specifically bound socket got its own copy of the second
        // (marker byte 5) and none of the first.
        let mut buf = vec![0u8; RECV_BUF_LEN];
        let got = recv_wait(&sb_one, &mut buf)?;
        assert_eq!((got.src, got.dst, got.len, buf[15]), (a_ip, b_ip, 80, 5));
        assert_empty(&sb_any);
        assert_empty(&sb_one);
        // The family must match the socket's.
        let other = if a_ip.is_ipv4() { ip(B6) } else { ip(B4) };
        let err = sa.send_to(&[0; 8], other).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }

    // IPv4 options (ihl > 5) are stripped with the header; a payload too
    // big for the caller's buffer is dropped and counted, not cut short.
    {
        let sa = lab.a.enter(|| RawIpSocket::bind(ip(A4), IPPROTO_L2TP))??;
        let sb = lab.b.enter(|| RawIpSocket::bind(ip(B4), IPPROTO_L2TP))??;
        let nops = [1u8; 4]; // four IPOPT_NOOP: IHL 6
        // SAFETY: `nops` is live for the call and its length is passed.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&sa),
                libc::IPPROTO_IP,
                libc::IP_OPTIONS,
                nops.as_ptr().cast(),
                nops.len() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "IP_OPTIONS: {}", std::io::Error::last_os_error());
        check_one_way(&sa, &sb, ip(B4), &payload(IPPROTO_L2TP, 12, 300))?;

        sa.send_to(&payload(IPPROTO_L2TP, 13, 200), ip(B4))?;
        let mut small = [0u8; 100];
        let dropped = lab::wait_until(Duration::from_secs(3), || {
            assert!(
                matches!(sb.recv_from(&mut small), Err(e) if e.kind() == ErrorKind::WouldBlock)
            );
            sb.truncated() == 1
        });
        assert!(dropped, "oversize datagram not counted as truncated");
        assert_eq!(sb.malformed(), 0);
    }

    let pcap = capture.stop()?;
    let l2tp4 = lab::tshark_fields(
        &pcap,
        &[],
        "ip.proto == 115",
        &["ip.src", "ip.dst", "l2tp.sid"],
    )?;
    for (src, dst) in [(A4, B4), (B4, A4), (A4, B4_2)] {
        assert!(
            l2tp4.iter().any(|r| r[..2] == [src, dst]),
            "no IPv4 proto 115 {src} -> {dst}: {l2tp4:?}"
        );
    }
    assert!(
        l2tp4
            .iter()
            .any(|r| r[2] == "0x1234abcd" || r[2] == "305441741"),
        "tshark did not decode the L2TPv3 session id: {l2tp4:?}"
    );
    let l2tp6 = lab::tshark_fields(&pcap, &[], "ipv6.nxt == 115", &["ipv6.src", "ipv6.dst"])?;
    for (src, dst) in [(A6, B6), (B6, A6), (A6, B6_2)] {
        assert!(
            l2tp6.iter().any(|r| r[..] == [src, dst]),
            "no IPv6 next header 115 {src} -> {dst}: {l2tp6:?}"
        );
    }
    let gre = lab::tshark_fields(
        &pcap,
        &[],
        "gre",
        &[
            "ip.src",
            "ip.dst",
            "ipv6.src",
            "ipv6.dst",
            "gre.proto",
            "gre.key",
        ],
    )?;
    for (a, b) in [(A4, B4), (A6, B6)] {
        let (cols, fill) = if a.contains(':') {
            (2..4, 0..2)
        } else {
            (0..2, 2..4)
        };
        for (src, dst) in [(a, b), (b, a)] {
            assert!(
                gre.iter().any(|r| r[cols.clone()] == [src, dst]
                    && r[fill.clone()] == ["", ""]
                    && r[4] == "0x6558"
                    && r[5] == "0x0000004d"),
                "no GRE 0x6558 key 77 {src} -> {dst}: {gre:?}"
            );
        }
    }

    // Raw sockets took the packets: no ICMP protocol unreachable (v4) or
    // parameter problem / unreachable (v6) came back from either side.
    let icmp = lab::tshark_fields(
        &pcap,
        &[],
        "icmp || icmpv6.type == 1 || icmpv6.type == 4",
        &["frame.number", "icmp.type", "icmp.code", "icmpv6.type"],
    )?;
    assert!(icmp.is_empty(), "ICMP errors on the wire: {icmp:?}");
    let ihl6 = lab::tshark_fields(
        &pcap,
        &[],
        "ip.proto == 115 && ip.hdr_len == 24",
        &["ip.len"],
    )?;
    assert_eq!(ihl6, [["324"], ["224"]], "the datagrams with IP options");

    lab.finish()
}

/// `recv_batch`: many datagrams per `recvmmsg`, each as `recv_from` gives
/// it (IPv4 header and options stripped), in order, with its source; one
/// too long for a slot dropped and counted; `WouldBlock` once drained.
#[test]
fn recv_batch_takes_many_datagrams_per_call() -> anyhow::Result<()> {
    let lab = Lab::new("rawbatch")?;
    for protocol in [IPPROTO_L2TP, IPPROTO_GRE] {
        for (a_ip, b_ip) in [(A4, B4), (A6, B6)] {
            let (a_ip, b_ip) = (ip(a_ip), ip(b_ip));
            let sa = lab.a.enter(|| RawIpSocket::bind(a_ip, protocol))??;
            let sa2 = lab.a.enter(|| RawIpSocket::bind(a_ip, protocol))??;
            let sb = lab.b.enter(|| RawIpSocket::bind(b_ip, protocol))??;
            if a_ip.is_ipv4() {
                // The second sender's datagrams carry IP options (IHL 6).
                let nops = [1u8; 4];
                // SAFETY: `nops` is live for the call and its length is
                // passed.
                let rc = unsafe {
                    libc::setsockopt(
                        std::os::fd::AsRawFd::as_raw_fd(&sa2),
                        libc::IPPROTO_IP,
                        libc::IP_OPTIONS,
                        nops.as_ptr().cast(),
                        nops.len() as libc::socklen_t,
                    )
                };
                assert_eq!(rc, 0, "IP_OPTIONS: {}", std::io::Error::last_os_error());
            }
            let mut sent = Vec::new();
            for i in 0..9u8 {
                // The fifth is longer than a slot (200 bytes).
                let len = if i == 4 { 400 } else { 8 + 20 * usize::from(i) };
                let data = payload(protocol, i, len);
                let tx = if i % 3 == 2 { &sa2 } else { &sa };
                assert_eq!(tx.send_to(&data, b_ip)?, data.len());
                if i != 4 {
                    sent.push(data);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
            let mut batch = RecvBatch::new(4, 200);
            let (mut got, mut calls, mut truncated) = (Vec::new(), Vec::new(), 0);
            loop {
                match sb.recv_batch(&mut batch) {
                    Ok(n) => {
                        calls.push(n);
                        truncated += batch.truncated();
                        for (p, from) in batch.iter() {
                            assert_eq!(from, SocketAddr::new(a_ip, 0));
                            got.push(p.to_vec());
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                }
            }
            let what = format!("protocol {protocol} to {b_ip}");
            assert!(got == sent, "{what}: payloads differ or out of order");
            assert_eq!(calls, [4, 3, 1], "{what}: datagrams kept per call");
            assert_eq!(
                (truncated, sb.truncated(), sb.malformed()),
                (1, 1, 0),
                "{what}"
            );
        }
    }
    lab.finish()
}

#[test]
fn oversize_datagrams_fragment_or_fail_with_emsgsize() -> anyhow::Result<()> {
    let lab = Lab::new("rawfrag")?;
    let capture = Capture::start_lossless(&lab.b, "e0", &lab.dir.join("frag.pcap"))?;

    for protocol in [IPPROTO_L2TP, IPPROTO_GRE] {
        for (a_ip, b_ip) in [(A4, B4), (A6, B6)] {
            let (a_ip, b_ip) = (ip(a_ip), ip(b_ip));
            let sa = lab.a.enter(|| RawIpSocket::bind(a_ip, protocol))??;
            let sb = lab.b.enter(|| RawIpSocket::bind(b_ip, protocol))??;
            let big = payload(protocol, 7, 3000);

            // Kernel default (IP_PMTUDISC_WANT): fragmented locally.
            check_one_way(&sa, &sb, b_ip, &big)?;

            sa.set_fragmentation(true)?;
            check_one_way(&sa, &sb, b_ip, &big)?;
            // Exactly the MTU still goes whole.
            let hdr = if a_ip.is_ipv4() { 20 } else { 40 };
            sa.set_fragmentation(false)?;
            check_one_way(&sa, &sb, b_ip, &payload(protocol, 8, 1500 - hdr))?;
            for len in [1500 - hdr + 1, 3000] {
                let err = sa.send_to(&payload(protocol, 9, len), b_ip).unwrap_err();
                assert_eq!(
                    err.raw_os_error(),
                    Some(libc::EMSGSIZE),
                    "protocol {protocol} {len} B to {b_ip} with DF: {err}"
                );
            }
            // And back to allowed.
            sa.set_fragmentation(true)?;
            check_one_way(&sa, &sb, b_ip, &big)?;
            assert_empty(&sb);
        }
    }

    // The UDP helper (L2TPv3 over UDP 1701), both families.
    for (a_ip, b_ip) in [(A4, B4), (A6, B6)] {
        let a_sa = SocketAddr::new(ip(a_ip), 1701);
        let b_sa = SocketAddr::new(ip(b_ip), 1701);
        let ua = lab.a.enter(|| udp_socket(a_sa, true))??;
        let ub = lab.b.enter(|| udp_socket(b_sa, true))??;
        let ua_df = lab
            .a
            .enter(|| udp_socket(SocketAddr::new(ip(a_ip), 1702), false))??;
        let big = payload(IPPROTO_L2TP, 10, 3000);
        assert_eq!(ua.send_to(&big, b_sa)?, big.len());
        let (n, from) = udp_recv_wait(&ub)?;
        assert_eq!((n.len(), from), (big.len(), a_sa));
        assert!(n == big, "UDP payload differs");
        let err = ua_df.send_to(&big, b_sa).unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(libc::EMSGSIZE),
            "UDP with DF: {err}"
        );
        // SO_REUSEADDR: the daemon can rebind at once after a restart.
        drop(ub);
        lab.b.enter(|| udp_socket(b_sa, true))??;
    }

    let pcap = capture.stop()?;
    // The 3000-byte datagrams crossed the wire as fragments (3 per datagram
    // at MTU 1500) and were reassembled by B's kernel.
    let frags4 = lab::tshark_fields(
        &pcap,
        &["-o", "ip.defragment:FALSE"],
        "ip.flags.mf == 1 || ip.frag_offset > 0",
        &["ip.proto", "ip.frag_offset"],
    )?;
    for proto in ["115", "47", "17"] {
        assert!(
            frags4.iter().any(|r| r[0] == proto && r[1] != "0"),
            "no IPv4 protocol {proto} fragments: {frags4:?}"
        );
    }
    let frags6 = lab::tshark_fields(
        &pcap,
        &["-o", "ipv6.defragment:FALSE"],
        "ipv6.fraghdr",
        &["ipv6.fraghdr.nxt", "ipv6.fraghdr.offset"],
    )?;
    for proto in ["115", "47", "17"] {
        assert!(
            frags6.iter().any(|r| r[0] == proto),
            "no IPv6 fragments of next header {proto}: {frags6:?}"
        );
    }
    // None of the refused (EMSGSIZE) sends left anything: every 115/47
    // datagram on the wire from A is one of the accepted ones.
    let df_sized = lab::tshark_fields(
        &pcap,
        &[],
        "(ip.proto == 115 || ip.proto == 47) && ip.len == 1501",
        &["ip.src"],
    )?;
    assert!(
        df_sized.is_empty(),
        "a refused datagram went out: {df_sized:?}"
    );

    lab.finish()
}

#[test]
fn into_async_wakes_on_a_datagram() -> anyhow::Result<()> {
    let lab = Lab::new("rawasync")?;
    for (a_ip, b_ip) in [(A4, B4), (A6, B6)] {
        let (a_ip, b_ip) = (ip(a_ip), ip(b_ip));
        let sa = lab.a.enter(|| RawIpSocket::bind(a_ip, IPPROTO_GRE))??;
        let sb = lab.b.enter(|| RawIpSocket::bind(b_ip, IPPROTO_GRE))??;
        let data = payload(IPPROTO_GRE, 11, 200);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let got = rt.block_on(async {
            let afd = sb.into_async()?;
            let send = data.clone();
            // Send only once the reader waits.
            let sender = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                sa.send_to(&send, b_ip)
            });
            let mut buf = vec![0u8; RECV_BUF_LEN];
            let recv = tokio::time::timeout(Duration::from_secs(3), async {
                loop {
                    let mut guard = afd.readable().await?;
                    match guard.try_io(|s| s.get_ref().recv_from(&mut buf)) {
                        Ok(r) => return r,
                        Err(_would_block) => continue,
                    }
                }
            })
            .await
            .context("no datagram within 3 s")??;
            sender.await??;
            anyhow::Ok((recv, buf[..recv.len].to_vec()))
        })?;
        assert_eq!(got.0.src, a_ip);
        assert_eq!(got.0.dst, b_ip);
        assert!(got.1 == data, "payload differs");
    }
    lab.finish()
}

#[test]
fn bind_rejects_what_it_cannot_do() -> anyhow::Result<()> {
    for protocol in [0, 255] {
        let err = RawIpSocket::bind(ip("0.0.0.0"), protocol).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    }
    lab::require_root()?;
    // An address this host does not have (checked in a fresh namespace).
    let prefix = lab::unique_prefix("rawbind");
    lab::cleanup_prefix(&prefix);
    {
        let ns = Netns::new(&format!("{prefix}a"))?;
        let err = ns
            .enter(|| RawIpSocket::bind(ip("192.0.2.1"), IPPROTO_L2TP))?
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AddrNotAvailable, "{err}");
        assert!(err.to_string().contains("192.0.2.1"), "{err}");
        let ok = ns.enter(|| RawIpSocket::bind(ip("127.0.0.1"), IPPROTO_L2TP))??;
        // The buffers were forced past the (namespace's) rmem_max.
        let rcvbuf = socket2::SockRef::from(&ok).recv_buffer_size()?;
        assert!(rcvbuf >= 8 << 20, "SO_RCVBUF is {rcvbuf}");
    }
    assert_no_namespaces(&prefix);
    Ok(())
}

/// Waits up to 3 s for one UDP datagram.
fn udp_recv_wait(sock: &UdpSocket) -> anyhow::Result<(Vec<u8>, SocketAddr)> {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => return Ok((buf[..n].to_vec(), from)),
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => bail!("UDP recv on {:?}: {e}", sock.local_addr()),
        }
    }
}
