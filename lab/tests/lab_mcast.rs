//! End to end in network namespaces: IGMP/MLD snooping with tunterm as
//! querier, and mDNS per VLAN, judged by the clients' kernels, tcpdump at
//! each client's link and tshark on the trunk.
//!
//! ```text
//!  c1 192.168.10.11 (IGMPv3, MLDv2) ─ ap1 ─┐        edge                     up
//!  c2 192.168.20.12 (VLAN 20)        ─ ap2 ─┼─ tunterm, tt-v10 .10.250 ── trunk ── vlan-host .10.1
//!  c3 192.168.10.13 (IGMPv2)         ─ ap2 ─┘   snooping + querier on 10       sender / querier
//!                                               mDNS on 10 only                (raw frames, VLAN 10)
//! ```
//!
//! The kernels of c1 and c3 join groups (a Python socket with
//! IP_ADD_MEMBERSHIP / IPV6_JOIN_GROUP), a sender upstream streams to both
//! groups; each client's link must carry only its own group's stream. A
//! leave stops it within the last member interval. The trunk must carry
//! tunterm's IGMPv3 and MLDv2 queries (decoded by tshark, none malformed)
//! until a lower-addressed querier upstream silences the IPv4 one; a
//! session going down takes its memberships. Beside it, a Linux bridge with
//! snooping and its querier, given the same joins, must list the same
//! (group, client) pairs as tunterm (`tunterm mdb` prints them, a reload
//! keeps them). Needs root, tcpdump, tshark and python3
//! (`.ci/install-deps`).

mod common;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::bins;
use tunterm_lab::topology::{Encap, Lab, Options};
use tunterm_lab::{Capture, Netns, Proc, addr, link_up, tshark_fields, veth, wait_until};

/// The Python helper: `join GROUP` (stays until killed: the kernel leaves
/// on close), `send IFACE VLAN SRC GROUP COUNT` (UDP to port 5001 in raw
/// 802.1Q frames), `query IFACE VLAN SRC` (an IGMPv3 general query),
/// `mdns SRC` (one mDNS datagram from SRC).
const HELPER: &str = r#"
import socket, struct, sys, time

def csum(b):
    if len(b) % 2: b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff

def ipv4(src, dst, proto, payload, opts=b''):
    hl = 20 + len(opts)
    h = struct.pack('!BBHHHBBH4s4s', 0x40 | hl // 4, 0, hl + len(payload), 0, 0, 1, proto, 0,
                    socket.inet_aton(src), socket.inet_aton(dst)) + opts
    h = h[:10] + struct.pack('!H', csum(h)) + h[12:]
    return h + payload

def frame(vlan, dst, payload):
    d = socket.inet_aton(dst)
    mac = bytes([1, 0, 0x5e, d[1] & 0x7f, d[2], d[3]])
    return mac + bytes([2, 0, 0, 0, 0x77, 1]) + struct.pack('!HHH', 0x8100, vlan, 0x0800) + payload

cmd = sys.argv[1]
if cmd == 'join':
    g = sys.argv[2]
    if ':' in g:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(('', 5001))
        idx = socket.if_nametoindex('eth0')
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                     socket.inet_pton(socket.AF_INET6, g) + struct.pack('@I', idx))
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((g, 5001))
        # ip_mreqn: the group on eth0 (the clients have no route to pick it).
        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                     socket.inet_aton(g) + socket.inet_aton('0.0.0.0')
                     + struct.pack('@i', socket.if_nametoindex('eth0')))
    print('joined', g, flush=True)
    while True:
        time.sleep(3600)
elif cmd == 'send':
    ifc, vlan, src, g, n = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6])
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifc, 0))
    udp = struct.pack('!HHHH', 40000, 5001, 8 + 16, 0) + b'tunterm-mcast-lab'[:16]
    f = frame(vlan, g, ipv4(src, g, 17, udp))
    for _ in range(n):
        s.send(f)
        time.sleep(0.01)
elif cmd == 'query':
    ifc, vlan, src = sys.argv[2], int(sys.argv[3]), sys.argv[4]
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifc, 0))
    q = bytearray([0x11, 10, 0, 0, 0, 0, 0, 0, 2, 4, 0, 0])
    q[2:4] = struct.pack('!H', csum(bytes(q)))
    s.send(frame(vlan, '224.0.0.1', ipv4(src, '224.0.0.1', 2, bytes(q), b'\x94\x04\0\0')))
elif cmd == 'mdns':
    src = sys.argv[2]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(src))
    s.sendto(b'\0\0\0\0\0\x01\0\0\0\0\0\0\x05tunterm\x05local\0\0\x01\0\x01', ('224.0.0.251', 5353))
"#;

const G_V3: &str = "239.1.2.3";
const G_V2: &str = "239.1.2.4";
const G_V6: &str = "ff05::1:3";
const TUNTERM_V10: &str = "192.168.10.250";

fn py(ns: &Netns, helper: &Path, args: &[&str]) -> String {
    let h = helper.to_string_lossy();
    let mut a = vec!["python3", h.as_ref()];
    a.extend_from_slice(args);
    ns.run(&a)
        .unwrap_or_else(|e| panic!("{}: {e:#}", args.join(" ")))
}

fn join(ns: &Netns, helper: &Path, group: &str, log: &Path) -> Proc {
    let h = helper.to_string_lossy();
    let mut p = ns
        .spawn(&["python3", h.as_ref(), "join", group], log)
        .unwrap();
    p.wait_for_log("joined", Duration::from_secs(10)).unwrap();
    p
}

/// The MDB's (group, member ports) of VLAN 10 in tunterm's stats.
fn mdb(lab: &Lab) -> Vec<(String, Vec<u64>)> {
    let s = lab.edge_stats().unwrap();
    s["mcast"]["mdb"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["vlan"] == 10)
        .map(|g| {
            let ports = g["ports"].as_array().unwrap();
            (
                g["group"].as_str().unwrap().to_string(),
                ports.iter().map(|p| p["port"].as_u64().unwrap()).collect(),
            )
        })
        .collect()
}

fn members(lab: &Lab, group: &str) -> Vec<u64> {
    mdb(lab)
        .into_iter()
        .find(|(g, _)| g == group)
        .map(|(_, p)| p)
        .unwrap_or_default()
}

/// Packets of `pcap` matching `filter`.
fn count(pcap: &Path, filter: &str) -> usize {
    tshark_fields(pcap, &[], filter, &["frame.number"])
        .unwrap()
        .len()
}

fn epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// tunterm's address on VLAN 10, snooping with a 4 s querier there, mDNS
/// on VLAN 10 only.
fn mcast_config() -> Vec<(String, serde_json::Value)> {
    vec![
        (
            "tunterm_other_ip_configs".into(),
            serde_json::json!({"10": {"ip": TUNTERM_V10, "netmask": "255.255.255.0"}}),
        ),
        (
            "tunterm_igmp_snooping_config".into(),
            serde_json::json!({"enabled": true, "vlan_ids": [10], "querier": {
                "query_interval": 4, "max_response_time": 10, "robustness": 2, "version": 3}}),
        ),
        (
            "tunterm_multicast_config".into(),
            serde_json::json!({"mdns": {"enabled": true, "vlan_ids": [10]}}),
        ),
    ]
}

#[test]
fn snooping_querier_leave_election_and_mdns() {
    snooping_scenario("mcast", Encap::L2tpUdp);
}

#[test]
fn snooping_with_mgre_peers_as_ports() {
    snooping_scenario("mcastgre", Encap::Gre);
}

/// Everything but the bridge, with the APs' tunnels of `encap`.
fn snooping_scenario(name: &str, encap: Encap) {
    let mut opts = Options::new(name, bins());
    opts.capture = true;
    opts.encap = encap;
    opts.mxedge_extra = mcast_config();
    let mut lab = common::start(opts);
    let dir = lab.dir.to_path_buf();
    let helper = dir.join("mcast.py");
    std::fs::write(&helper, HELPER).unwrap();
    let (c1, c2, c3) = (lab.client("c1"), lab.client("c2"), lab.client("c3"));
    c3.run(&["sysctl", "-qw", "net.ipv4.conf.eth0.force_igmp_version=2"])
        .unwrap();
    let cap1 = Capture::start(c1, "eth0", &dir.join("c1.pcap")).unwrap();
    let cap3 = Capture::start(c3, "eth0", &dir.join("c3.pcap")).unwrap();

    // Joins: c1 IGMPv3 and MLDv2, c3 IGMPv2.
    let mut r1 = join(c1, &helper, G_V3, &dir.join("join-c1.log"));
    let _r6 = join(c1, &helper, G_V6, &dir.join("join-c1-v6.log"));
    let _r3 = join(c3, &helper, G_V2, &dir.join("join-c3.log"));
    let ok = wait_until(Duration::from_secs(10), || {
        let m = mdb(&lab);
        [G_V3, G_V2, G_V6]
            .iter()
            .all(|g| m.iter().any(|(x, p)| x == g && p.len() == 1))
    });
    assert!(ok, "MDB: {:?}\n{}", mdb(&lab), lab.logs());
    let (p1, p3) = (members(&lab, G_V3)[0], members(&lab, G_V2)[0]);
    assert_ne!(p1, p3, "c1 and c3 are behind different APs");
    assert_eq!(members(&lab, G_V6), [p1], "c1's MLDv2 join");

    // The streams: each client's link carries its own group only.
    let up = &lab.up;
    py(
        up,
        &helper,
        &["send", "t0", "10", "192.168.10.1", G_V3, "30"],
    );
    py(
        up,
        &helper,
        &["send", "t0", "10", "192.168.10.1", G_V2, "30"],
    );
    std::thread::sleep(Duration::from_millis(300));
    let udp_to = |g: &str| format!("ip.dst == {g} && udp.dstport == 5001");
    let (p1pcap, p3pcap) = (dir.join("c1.pcap"), dir.join("c3.pcap"));
    assert_eq!(count(&p1pcap, &udp_to(G_V3)), 30, "c1 gets its group");
    assert_eq!(count(&p1pcap, &udp_to(G_V2)), 0, "c1 gets no other group");
    assert_eq!(count(&p3pcap, &udp_to(G_V2)), 30, "c3 gets its group");
    assert_eq!(count(&p3pcap, &udp_to(G_V3)), 0, "c3 gets no other group");
    let s = lab.edge_stats().unwrap();
    assert!(s["mcast"]["counters"]["pruned_copies"].as_u64().unwrap() >= 60);

    // Leave: c1's socket closes, its kernel leaves (IGMPv3 TO_IN {});
    // tunterm asks twice a second apart and prunes c1 at 2 s.
    let left_at = Instant::now();
    r1.kill9().unwrap();
    let gone = wait_until(Duration::from_secs(6), || members(&lab, G_V3).is_empty());
    let took = left_at.elapsed();
    assert!(gone, "c1 still a member: {:?}", mdb(&lab));
    assert!(
        took <= Duration::from_millis(3500),
        "leave took {took:?} (last member interval: 2 s, sweeps 1 s)"
    );
    py(
        up,
        &helper,
        &["send", "t0", "10", "192.168.10.1", G_V3, "30"],
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        count(&p1pcap, &udp_to(G_V3)),
        30,
        "nothing more after the leave"
    );
    let s = lab.edge_stats().unwrap();
    assert!(
        s["mcast"]["counters"]["group_queries_out"]
            .as_u64()
            .unwrap()
            >= 1
    );

    // mDNS: enabled on VLAN 10 (to the trunk and the other AP's client),
    // not on VLAN 20 (dropped, counted).
    py(c1, &helper, &["mdns", "192.168.10.11"]);
    py(c2, &helper, &["mdns", "192.168.20.12"]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        count(&p3pcap, "udp.dstport == 5353 && ip.src == 192.168.10.11"),
        1,
        "c1's mDNS reaches c3 (other AP, same VLAN)"
    );
    let s = lab.edge_stats().unwrap();
    assert_eq!(s["mcast"]["counters"]["mdns_dropped"], 1);

    // Election: a lower-addressed querier upstream silences tunterm's IPv4
    // queries (not its MLD ones) for the other querier present interval.
    let silenced_at = epoch();
    py(up, &helper, &["query", "t0", "10", "192.168.10.1"]);
    let ok = wait_until(Duration::from_secs(2), || {
        let s = lab.edge_stats().unwrap();
        s["mcast"]["mdb"]["queriers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["vlan"] == 10 && q["other"] == "192.168.10.1" && q["active"] == false)
    });
    assert!(ok, "{}", lab.edge_stats().unwrap()["mcast"]);
    // The other querier goes on querying every 4 s, as a real one does:
    // c3 answers it, so its membership stays (9 s after each report).
    std::thread::sleep(Duration::from_secs(4) - Duration::from_secs_f64(epoch() - silenced_at));
    py(up, &helper, &["query", "t0", "10", "192.168.10.1"]);
    std::thread::sleep(Duration::from_secs(2));

    let trunk = lab.trunk_capture.take().unwrap().stop().unwrap();
    cap1.stop().unwrap();
    cap3.stop().unwrap();
    ap2_leaves(&mut lab, encap);
    // tunterm's IGMPv3 general queries on the trunk, VLAN 10.
    let q4 = tshark_fields(
        &trunk,
        &[],
        &format!("igmp.type == 0x11 && ip.src == {TUNTERM_V10}"),
        &[
            "frame.time_epoch",
            "vlan.id",
            "igmp.version",
            "igmp.max_resp",
            "igmp.qrv",
            "igmp.qqic",
            "ip.ttl",
            "igmp.maddr",
        ],
    )
    .unwrap();
    let general: Vec<&Vec<String>> = q4.iter().filter(|r| r[7] == "0.0.0.0").collect();
    assert!(general.len() >= 3, "queries on the trunk: {q4:?}");
    // IGMPv3 throughout, also after c3's IGMPv2 report: an older host
    // answers them (RFC 3376 §7.2.1), and a querier steps down only for an
    // older querier (§7.3.1), so c1 keeps IGMPv3.
    for r in &general {
        assert_eq!(&r[1..7], ["10", "3", "10", "2", "4", "1"], "{r:?}");
    }
    // c3 answers them with IGMPv2 reports.
    let v2_reports: Vec<f64> = tshark_fields(
        &trunk,
        &[],
        "igmp.type == 0x16 && ip.src == 192.168.10.13",
        &["frame.time_epoch"],
    )
    .unwrap()
    .iter()
    .map(|r| r[0].parse().unwrap())
    .collect();
    let first_query: f64 = general[0][0].parse().unwrap();
    assert!(
        v2_reports.iter().filter(|t| **t > first_query).count() >= 2,
        "c3's IGMPv2 reports after the queries: {v2_reports:?}"
    );
    let times: Vec<f64> = general.iter().map(|r| r[0].parse().unwrap()).collect();
    let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().any(|g| (3.7..4.5).contains(g)),
        "steady queries every 4 s: {gaps:?}"
    );
    assert!(
        times.iter().all(|t| *t < silenced_at + 0.5),
        "tunterm queried after a lower-addressed querier spoke: {times:?} vs {silenced_at}"
    );
    // MLDv2 queries go on (no IPv6 querier was heard).
    let q6 = tshark_fields(
        &trunk,
        &[],
        "icmpv6.type == 130",
        &[
            "frame.time_epoch",
            "vlan.id",
            "icmpv6.mld.maximum_response_code",
            "icmpv6.mld.flag.qrv",
            "icmpv6.mld.qqi",
            "ipv6.hlim",
        ],
    )
    .unwrap();
    assert!(q6.len() >= 3, "MLDv2 queries: {q6:?}");
    assert!(
        q6.iter()
            .any(|r| r[0].parse::<f64>().unwrap() > silenced_at),
        "{q6:?}"
    );
    for r in &q6 {
        assert_eq!(&r[1..], ["10", "1000", "2", "4", "1"], "{r:?}");
    }
    let malformed = count(&trunk, "(igmp || icmpv6) && _ws.malformed");
    assert_eq!(malformed, 0);
    // mDNS: c1's (VLAN 10) on the trunk, c2's (VLAN 20) not.
    assert_eq!(count(&trunk, "udp.dstport == 5353 && vlan.id == 10"), 1);
    assert_eq!(count(&trunk, "udp.dstport == 5353 && vlan.id == 20"), 0);
    // Reports went up the trunk (router port), from both clients.
    assert!(count(&trunk, "igmp.type == 0x22 && ip.src == 192.168.10.11") >= 1);
    assert!(count(&trunk, "igmp.type == 0x16 && ip.src == 192.168.10.13") >= 1);

    let prefix = lab.prefix().to_string();
    drop(lab);
    common::assert_no_namespaces(&prefix);
}

/// ap2 goes away (StopCCN; an mGRE peer times out in 3 s): c3's
/// membership goes with its port (`port_removed`), not at the membership
/// timeout (9 s after c3's last report, the answer to the other querier's
/// latest query).
fn ap2_leaves(lab: &mut Lab, encap: Encap) {
    assert_eq!(members(lab, G_V2).len(), 1);
    lab.ap2.signal(libc::SIGTERM).unwrap();
    let down = Instant::now();
    let gone = wait_until(Duration::from_secs(5), || members(lab, G_V2).is_empty());
    assert!(gone, "c3 still a member after its AP left: {:?}", mdb(lab));
    assert!(
        down.elapsed() < Duration::from_millis(4500),
        "{:?}",
        down.elapsed()
    );
    // Both an L2TP session (at the StopCCN) and an mGRE peer (after 3 s of
    // silence) take their memberships with them.
    let s = lab.edge_stats().unwrap();
    assert!(
        s["mcast"]["counters"]["port_removed"].as_u64().unwrap() >= 1,
        "{encap:?}: {}",
        s["mcast"]["counters"]
    );
}

/// The three test groups' (group, client) pairs of `pairs`, sorted.
fn test_groups(mut pairs: Vec<(String, String)>) -> Vec<(String, String)> {
    pairs.retain(|(g, _)| [G_V3, G_V2, G_V6].contains(&g.as_str()));
    pairs.sort();
    pairs
}

#[test]
fn the_linux_bridge_snoops_the_same_members() {
    let mut opts = Options::new("mcastbr", bins());
    opts.mxedge_extra = mcast_config();
    let lab = common::start(opts);
    let dir = lab.dir.to_path_buf();
    let helper = dir.join("mcast.py");
    std::fs::write(&helper, HELPER).unwrap();
    // The reference: a Linux bridge for VLAN 10 (this kernel has no VLAN
    // filtering) with snooping and its querier, and two clients like c1
    // and c3.
    let p = lab.prefix().to_string();
    let ns = |n: &str| Netns::new(&format!("{p}{n}")).unwrap();
    let (br, k1, k3) = (ns("br"), ns("k1"), ns("k3"));
    br.run(&[
        "ip",
        "link",
        "add",
        "br0",
        "type",
        "bridge",
        "mcast_snooping",
        "1",
        "mcast_querier",
        "1",
    ])
    .unwrap();
    for (port, k, cidr) in [
        ("p1", &k1, "192.168.10.11/24"),
        ("p3", &k3, "192.168.10.13/24"),
    ] {
        veth(&br, port, k, "eth0").unwrap();
        br.run(&["ip", "link", "set", port, "master", "br0"])
            .unwrap();
        addr(k, "eth0", cidr).unwrap();
    }
    link_up(&br, "br0").unwrap();

    let mut procs = Vec::new();
    for (side, c1, c3) in [
        ("edge", lab.client("c1"), lab.client("c3")),
        ("bridge", &k1, &k3),
    ] {
        c3.run(&["sysctl", "-qw", "net.ipv4.conf.eth0.force_igmp_version=2"])
            .unwrap();
        procs.push(join(c1, &helper, G_V3, &dir.join(format!("{side}-c1.log"))));
        procs.push(join(
            c1,
            &helper,
            G_V6,
            &dir.join(format!("{side}-c1-v6.log")),
        ));
        procs.push(join(c3, &helper, G_V2, &dir.join(format!("{side}-c3.log"))));
    }

    // tunterm's MDB, its ports named by the client behind them (the FDB).
    let macs = [
        (lab.client("c1").mac("eth0").unwrap().to_string(), "c1"),
        (lab.client("c3").mac("eth0").unwrap().to_string(), "c3"),
    ];
    let edge_pairs = || {
        let fdb = lab.edge_fdb().unwrap();
        let client = |port: u64| {
            fdb.iter()
                .find(|e| e.port == port.to_string() && macs.iter().any(|(m, _)| *m == e.mac))
                .and_then(|e| macs.iter().find(|(m, _)| *m == e.mac))
                .map_or_else(|| format!("port {port}"), |(_, c)| c.to_string())
        };
        let pairs = mdb(&lab)
            .into_iter()
            .flat_map(|(g, ports)| ports.into_iter().map(move |p| (g.clone(), p)))
            .map(|(g, p)| (g, client(p)))
            .collect();
        test_groups(pairs)
    };
    let bridge_pairs = || {
        let out = br
            .run(&["bridge", "-j", "mdb", "show", "dev", "br0"])
            .unwrap();
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        let mut pairs = Vec::new();
        for e in doc.as_array().into_iter().flatten() {
            for m in e["mdb"].as_array().into_iter().flatten() {
                let client = match m["port"].as_str() {
                    Some("p1") => "c1",
                    Some("p3") => "c3",
                    _ => "?",
                };
                pairs.push((
                    m["grp"].as_str().unwrap_or("").to_string(),
                    client.to_string(),
                ));
            }
        }
        test_groups(pairs)
    };
    let want: Vec<(String, String)> = test_groups(
        [(G_V3, "c1"), (G_V6, "c1"), (G_V2, "c3")]
            .map(|(g, c)| (g.to_string(), c.to_string()))
            .to_vec(),
    );
    let ok = wait_until(Duration::from_secs(10), || {
        edge_pairs() == want && bridge_pairs() == want
    });
    assert!(
        ok,
        "tunterm {:?}, bridge {:?}, want {want:?}",
        edge_pairs(),
        bridge_pairs()
    );
    // `tunterm mdb` prints the same, for VLAN 10 only.
    let out = std::process::Command::new(&bins().tunterm)
        .args(["mdb", "--vlan", "10", "--control-socket"])
        .arg(lab.edge_socket())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let groups: Vec<&str> = doc["mdb"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["group"].as_str().unwrap())
        .collect();
    for g in [G_V3, G_V2, G_V6] {
        assert!(groups.contains(&g), "{g} not in tunterm mdb: {doc}");
    }
    assert_eq!(doc["snooping_vlans"], "10");
    assert_eq!(doc["mdb"]["queriers"].as_array().unwrap().len(), 2);

    // A reload (SIGHUP) applies new settings: snooping on VLANs 10 and 20,
    // no tunterm_multicast_config (mDNS back to the normal rules); the
    // groups of VLAN 10 stay.
    let config = dir.join("edge.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    cfg["mxedge"]["tunterm_igmp_snooping_config"]["vlan_ids"] = serde_json::json!([10, 20]);
    cfg["mxedge"]
        .as_object_mut()
        .unwrap()
        .remove("tunterm_multicast_config");
    std::fs::write(&config, cfg.to_string()).unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &lab.tunterm.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let ok = wait_until(Duration::from_secs(5), || {
        let m = &lab.edge_stats().unwrap()["mcast"];
        m["snooping_vlans"] == "10,20" && m["mdns_vlans"].is_null()
    });
    assert!(ok, "{}", lab.edge_stats().unwrap()["mcast"]);
    assert_eq!(edge_pairs(), want, "groups kept across the reload");
    drop(procs);
    drop((br, k1, k3));
    let prefix = lab.prefix().to_string();
    drop(lab);
    common::assert_no_namespaces(&prefix);
}
