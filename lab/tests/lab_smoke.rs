//! The lab's own pieces, proven end to end: namespaces, veth, two
//! `tunterm-lab vlan-host`s talking across an 802.1Q trunk (so the tag round
//! trip through AF_PACKET + auxdata works), capture, tshark, and cleanup.

mod common;

use std::path::Path;
use std::time::Duration;

use tunterm_lab::{self as lab, Capture, Netns};

use common::assert_no_namespaces;

const LAB: &str = env!("CARGO_BIN_EXE_tunterm-lab");

#[test]
fn vlan_hosts_ping_across_a_tagged_trunk() -> anyhow::Result<()> {
    lab::require_root()?;
    let prefix = lab::unique_prefix("smoke");
    lab::cleanup_prefix(&prefix);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(&prefix);
    std::fs::create_dir_all(&dir)?;

    {
        let up = Netns::new(&format!("{prefix}up"))?;
        let sw = Netns::new(&format!("{prefix}sw"))?;
        lab::veth(&up, "t0", &sw, "t0")?;
        let capture = Capture::start(&up, "t0", &dir.join("trunk.pcap"))?;

        let mut up_host = up.spawn(
            &[
                LAB,
                "vlan-host",
                "--trunk",
                "t0",
                "--vlan",
                "10=192.168.10.1/24",
                "--vlan",
                "20=192.168.20.1/24",
                "--native",
                "1=192.168.1.1/24",
            ],
            &dir.join("up-vlan-host.log"),
        )?;
        let mut sw_host = sw.spawn(
            &[
                LAB,
                "vlan-host",
                "--trunk",
                "t0",
                "--vlan",
                "10=192.168.10.2/24",
                "--vlan",
                "20=192.168.20.2/24",
                "--native",
                "1=192.168.1.2/24",
            ],
            &dir.join("sw-vlan-host.log"),
        )?;
        up_host.wait_for_log(lab::vlanhost::READY, Duration::from_secs(10))?;
        sw_host.wait_for_log(lab::vlanhost::READY, Duration::from_secs(10))?;

        for dst in ["192.168.10.2", "192.168.20.2", "192.168.1.2"] {
            let result = lab::ping(&up, dst, 3)?;
            assert_eq!(result.received, 3, "ping {dst} from up: {result:?}");
        }
        let result = lab::ping(&sw, "192.168.20.1", 2)?;
        assert_eq!(result.received, 2, "ping 192.168.20.1 from sw: {result:?}");

        let pcap = capture.stop()?;
        let rows = lab::tshark_fields(
            &pcap,
            &[],
            "icmp",
            &["vlan.id", "ip.src", "ip.dst", "icmp.type"],
        )?;
        let seen = |vid: &str, src: &str, dst: &str, icmp_type: &str| {
            rows.iter().any(|r| r == &[vid, src, dst, icmp_type])
        };
        for (vid, net) in [
            ("10", "192.168.10"),
            ("20", "192.168.20"),
            ("", "192.168.1"),
        ] {
            let (a, b) = (format!("{net}.1"), format!("{net}.2"));
            assert!(
                seen(vid, &a, &b, "8"),
                "no echo request on VLAN {vid:?}: {rows:?}"
            );
            assert!(
                seen(vid, &b, &a, "0"),
                "no echo reply on VLAN {vid:?}: {rows:?}"
            );
        }
        // Tagged subnets never leak untagged, nor the native one tagged.
        for r in &rows {
            let want = match r[1].rsplit_once('.').map(|(net, _)| net) {
                Some("192.168.10") => "10",
                Some("192.168.20") => "20",
                _ => "",
            };
            assert_eq!(r[0], want, "ICMP on the wrong VLAN: {r:?}");
        }

        let arp = lab::tshark_fields(&pcap, &[], "arp", &["vlan.id"])?;
        assert!(
            arp.iter().any(|r| r[0] == "10"),
            "no ARP on VLAN 10: {arp:?}"
        );
    }

    assert_no_namespaces(&prefix);
    // Logs and the pcap stay behind only when the test fails.
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Frames as they go on the wire: the same bytes must come out of
/// `PacketSocket::recv` on the far end, tags included (the kernel takes the
/// outer tag out on receive; recv puts it back, TPID too).
#[test]
fn packet_socket_returns_frames_as_on_the_wire() -> anyhow::Result<()> {
    use tunterm::io::afpacket::PacketSocket;
    returns_frames_as_on_the_wire("afpacket", PacketSocket::bind)?;
    returns_frames_as_on_the_wire("afpring", PacketSocket::bind_with_rx_ring)
}

fn returns_frames_as_on_the_wire(
    test: &str,
    bind: fn(&str) -> std::io::Result<tunterm::io::afpacket::PacketSocket>,
) -> anyhow::Result<()> {
    use std::io::ErrorKind;
    use tunterm::io::afpacket::RECV_BUF_LEN;

    veth_pair(test, |a, b| {
        let tx = a.enter(|| bind("p0"))??;
        let rx = b.enter(|| bind("p0"))??;
        // The socket's own address (getsockname) is the link's, as the
        // kernel reports it over netlink.
        assert_eq!(rx.mac()?, b.enter(|| tunterm::io::netlink::mac("p0"))??);

        let sent = [
            frame(&[], 1, 74),
            frame(&[(0x8100, 10)], 2, 78),
            frame(&[(0x8100, 0xa000 | 20)], 3, 78), // PCP 5
            frame(&[(0x88a8, 100), (0x8100, 42)], 4, 82),
        ];
        for f in &sent {
            assert_eq!(tx.send(f)?, f.len());
        }

        let mut got = Vec::new();
        let mut buf = vec![0u8; RECV_BUF_LEN];
        lab::wait_until(Duration::from_secs(3), || {
            loop {
                match rx.recv(&mut buf) {
                    Ok(n) => got.push(buf[..n].to_vec()),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("recv: {e}"),
                }
            }
            sent.iter().all(|f| got.contains(f))
        });
        for f in &sent {
            assert!(
                got.contains(f),
                "not received as sent: {f:02x?}\ngot: {got:02x?}"
            );
        }

        // PACKET_IGNORE_OUTGOING: the sender never reads its own frames.
        loop {
            match tx.recv(&mut buf) {
                Ok(n) => assert!(
                    !sent.iter().any(|f| f[..] == buf[..n]),
                    "own send read back"
                ),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    })
}

/// `PacketSocket::recv_batch`: many frames per `recvmmsg`, each with its
/// tags as on the wire (its own auxdata per frame), in order; one too long
/// for a slot dropped and counted; `WouldBlock` once drained.
#[test]
fn packet_socket_receives_in_batches() -> anyhow::Result<()> {
    use tunterm::io::afpacket::PacketSocket;
    receives_in_batches("afbatch", PacketSocket::bind)?;
    receives_in_batches("afring", PacketSocket::bind_with_rx_ring)
}

fn receives_in_batches(
    test: &str,
    bind: fn(&str) -> std::io::Result<tunterm::io::afpacket::PacketSocket>,
) -> anyhow::Result<()> {
    use std::io::ErrorKind;
    use tunterm::io::afpacket::PacketSocket;
    use tunterm::io::batch::RecvBatch;

    veth_pair(test, |a, b| {
        let tx = a.enter(|| PacketSocket::bind("p0"))??;
        let rx = b.enter(|| bind("p0"))??;
        // Slots of 128 bytes: a tagged frame of 128 fits (the kernel hands
        // 124 and the tag goes back in the gap), an untagged one of 130
        // does not.
        let sent = [
            frame(&[], 1, 60),
            frame(&[(0x8100, 10)], 2, 64),
            frame(&[(0x8100, 0xa000 | 20)], 3, 128),
            frame(&[], 4, 130),
            frame(&[(0x88a8, 100), (0x8100, 42)], 5, 90),
            frame(&[], 6, 124),
            frame(&[(0x8100, 30)], 7, 70),
        ];
        for f in &sent {
            assert_eq!(tx.send(f)?, f.len());
        }
        wait_readable(&rx);
        let mut batch = RecvBatch::new(3, 128);
        let (mut got, mut calls, mut truncated) = (Vec::new(), Vec::new(), 0);
        loop {
            match rx.recv_batch(&mut batch) {
                Ok(n) => {
                    calls.push(n);
                    truncated += batch.truncated();
                    got.extend(batch.iter().map(|(f, _)| f.to_vec()));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        let want: Vec<Vec<u8>> = sent.iter().filter(|f| f.len() != 130).cloned().collect();
        assert_eq!(got, want, "{test}: frames as sent, in order");
        assert_eq!(calls, [3, 2, 1], "{test}: frames kept per call");
        assert_eq!((truncated, rx.truncated()), (1, 1), "{test}");
        Ok(())
    })
}

/// A receive ring holds frames of a 1500-byte link; longer ones (jumbo
/// frames here) take the ordinary path and still come out whole, tagged
/// as on the wire, in order with the others, from `recv_batch` and from
/// `recv`.
#[test]
fn packet_socket_ring_passes_long_frames_in_order() -> anyhow::Result<()> {
    use std::io::ErrorKind;
    use tunterm::io::afpacket::{PacketSocket, RECV_BUF_LEN, RING_FRAME_LEN};
    use tunterm::io::batch::RecvBatch;

    veth_pair("afjumbo", |a, b| {
        for ns in [a, b] {
            ns.run(&["ip", "link", "set", "p0", "mtu", "9000"])?;
        }
        let tx = a.enter(|| PacketSocket::bind("p0"))??;
        let rx = b.enter(|| PacketSocket::bind_with_rx_ring("p0"))??;
        let sent = [
            frame(&[], 1, 60),
            frame(&[(0x8100, 10)], 2, RING_FRAME_LEN + 500),
            frame(&[(0x8100, 11)], 3, 1514),
            frame(&[], 4, 9000),
            frame(&[(0x8100, 12)], 5, 64),
            frame(&[(0x8100, 13)], 6, 9004),
        ];
        let mut batch = RecvBatch::new(8, RECV_BUF_LEN);
        let mut buf = vec![0u8; RECV_BUF_LEN];
        for one_by_one in [false, true] {
            for f in &sent {
                assert_eq!(tx.send(f)?, f.len());
            }
            wait_readable(&rx);
            let mut got = Vec::new();
            loop {
                let r = if one_by_one {
                    rx.recv(&mut buf).map(|n| got.push(buf[..n].to_vec()))
                } else {
                    rx.recv_batch(&mut batch)
                        .map(|_| got.extend(batch.iter().map(|(f, _)| f.to_vec())))
                };
                match r {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                }
            }
            let lens: Vec<usize> = got.iter().map(Vec::len).collect();
            assert!(
                got == sent,
                "one by one: {one_by_one}; got lengths {lens:?}"
            );
        }
        assert_eq!(rx.truncated(), 0);
        Ok(())
    })
}

#[test]
fn packet_socket_names_a_missing_interface() {
    let err = tunterm::io::afpacket::PacketSocket::bind("nosuchif0").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert!(err.to_string().contains("nosuchif0"), "{err}");
}

/// Waits (at most 5 s) until `rx` has a frame to read, then 50 ms more.
/// Frames sent together reach the socket in one pass of the receiving
/// side's softirq, which a loaded machine runs late (a fixed 100 ms sleep
/// once read an empty socket in CI).
fn wait_readable(rx: &impl std::os::fd::AsRawFd) {
    let mut p = libc::pollfd {
        fd: rx.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    unsafe { libc::poll(&mut p, 1, 5000) };
    std::thread::sleep(Duration::from_millis(50));
}

/// Two namespaces `{prefix}a` and `{prefix}b` joined by a veth (`p0` in
/// each), IPv6 off so nothing but the test's frames cross the link, for
/// `body`; then checks that none of them is left.
fn veth_pair(
    test: &str,
    body: impl FnOnce(&Netns, &Netns) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    lab::require_root()?;
    let prefix = lab::unique_prefix(test);
    lab::cleanup_prefix(&prefix);
    {
        let a = Netns::new(&format!("{prefix}a"))?;
        let b = Netns::new(&format!("{prefix}b"))?;
        for ns in [&a, &b] {
            ns.run(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])?;
            ns.run(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])?;
        }
        lab::veth(&a, "p0", &b, "p0")?;
        body(&a, &b)?;
    }
    assert_no_namespaces(&prefix);
    Ok(())
}

/// A broadcast frame from 02:00:00:00:00:`marker` with `tags` (TPID,
/// TCI), ethertype 0x88b5 (local experimental), `len` bytes in all.
fn frame(tags: &[(u16, u16)], marker: u8, len: usize) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, marker]);
    for (tpid, tci) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend((0..len - f.len()).map(|i| marker ^ i as u8));
    f
}

/// A lab whose process died without cleaning up (killed, Ctrl-C) leaves
/// namespaces behind; the next lab's start removes them, and only them.
#[test]
fn a_dead_labs_namespaces_are_removed_at_the_next_start() -> anyhow::Result<()> {
    lab::require_root()?;
    let dead = lab::unique_prefix("orphan");
    let live = lab::unique_prefix("orphanlive");
    let tmp = std::env::temp_dir();
    let dead_dir = tmp.join(format!("tunterm-lab-{}", dead.trim_end_matches('-')));
    let live_dir = tmp.join(format!("tunterm-lab-{}", live.trim_end_matches('-')));
    for d in [&dead_dir, &live_dir] {
        std::fs::create_dir_all(d)?;
    }
    // pid 1 runs, but did not start at time 0: not the owner any more.
    std::fs::write(dead_dir.join(lab::OWNER_FILE), "1 0")?;
    let own = std::fs::read_to_string("/proc/self/stat")?;
    let start = own
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(19)
        .unwrap()
        .to_owned();
    std::fs::write(
        live_dir.join(lab::OWNER_FILE),
        format!("{} {start}", std::process::id()),
    )?;
    let orphan = Netns::new(&format!("{dead}a"))?;
    let kept = Netns::new(&format!("{live}a"))?;
    // As if the dead lab's process had been killed: no guard runs.
    std::mem::forget(orphan);
    let (_prefix, _dir) = lab::begin("orphannext")?;
    let names = lab::namespaces();
    assert!(!names.contains(&format!("{dead}a")), "{names:?}");
    assert!(names.contains(&format!("{live}a")), "{names:?}");
    assert!(dead_dir.exists(), "the dead lab's logs stay");
    assert!(!dead_dir.join(lab::OWNER_FILE).exists());
    drop(kept);
    for d in [&dead_dir, &live_dir] {
        let _ = std::fs::remove_dir_all(d);
    }
    assert_no_namespaces(&dead);
    assert_no_namespaces(&live);
    Ok(())
}
