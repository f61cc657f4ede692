//! The daemon's rtnetlink calls (`tunterm::io::netlink`, and the host
//! ports and extra routes made with them) in network namespaces, with
//! iproute2 as the judge: what `ip` shows after each call is what was
//! asked. Also the neighbour tables (ARP and IPv6 ND) and the next hops the
//! fast path builds its templates from, and the errors' wording.
//!
//! Needs root (CI runs as root): without it the test fails, saying so.

use std::collections::BTreeSet;
use std::net::IpAddr;

use anyhow::{Context, ensure};
use serde_json::Value;
use tunterm::io::hostport::{HostPort, HostPortSpec, Route};
use tunterm::io::netlink::{self, NextHops, Rtnl};
use tunterm_core::wire::ether::MacAddr;
use tunterm_lab::{self as lab, Netns};

fn json(ns: &Netns, args: &[&str]) -> anyhow::Result<Value> {
    let mut full = vec!["ip", "-j"];
    full.extend_from_slice(args);
    let out = ns.run(&full)?;
    serde_json::from_str(&out).with_context(|| format!("ip {args:?}: {out}"))
}

/// `ip -j addr show dev IF`: (address, prefix length), permanent ones.
fn ip_addresses(ns: &Netns, ifname: &str) -> anyhow::Result<BTreeSet<(IpAddr, u8)>> {
    let v = json(ns, &["addr", "show", "dev", ifname])?;
    let mut out = BTreeSet::new();
    for a in v[0]["addr_info"].as_array().context("no addr_info")? {
        ensure!(a.get("tentative").is_none(), "{ifname}: tentative {a}");
        let ip: IpAddr = a["local"].as_str().context("local")?.parse()?;
        out.insert((ip, a["prefixlen"].as_u64().context("prefixlen")? as u8));
    }
    Ok(out)
}

#[test]
fn host_ports_routes_and_neighbours_are_what_ip_shows() -> anyhow::Result<()> {
    let (prefix, dir) = lab::begin("netlink")?;
    let a = Netns::new(&format!("{prefix}a"))?;
    let b = Netns::new(&format!("{prefix}b"))?;
    lab::veth(&a, "e0", &b, "e0")?;
    lab::addr(&a, "e0", "10.8.0.1/24")?;
    lab::addr(&a, "e0", "fd00:8::1/64")?;
    lab::addr(&b, "e0", "10.8.0.2/24")?;
    lab::addr(&b, "e0", "fd00:8::2/64")?;

    // Links: index, MTU and MAC as `ip` shows them.
    let shown = json(&a, &["link", "show", "dev", "e0"])?;
    let l = a.enter(|| netlink::link("e0"))??;
    assert_eq!(u64::from(l.index), shown[0]["ifindex"].as_u64().unwrap());
    assert_eq!(u64::from(l.mtu), shown[0]["mtu"].as_u64().unwrap());
    assert_eq!(
        MacAddr(l.mac.unwrap()).to_string(),
        shown[0]["address"].as_str().unwrap()
    );
    assert!(l.up);
    a.run(&["ip", "link", "set", "e0", "mtu", "1400"])?;
    assert_eq!(a.enter(|| netlink::mtu("e0"))??, 1400);
    assert_eq!(a.enter(|| netlink::mac("e0"))??, l.mac.unwrap());
    let b_mac = b.enter(|| netlink::mac("e0"))??;
    let missing = a.enter(|| netlink::mtu("nope0"))?.unwrap_err();
    assert_eq!(
        missing.to_string(),
        "interface nope0: No such device (os error 19)"
    );

    // A host port as the daemon makes it: a TAP with its MAC, addresses
    // (IPv6 without DAD), up, default routes of both families.
    let spec = HostPortSpec {
        vid: 7,
        mac: tunterm_core::wire::ether::MacAddr([0x02, 0x74, 0, 0, 0, 7]),
        v4: Some(("10.7.0.2".parse()?, 24)),
        gateway: Some("10.7.0.1".parse()?),
        v6: Some(("fd00:7::2".parse()?, 64)),
        gateway6: Some("fd00:7::1".parse()?),
    };
    a.enter(|| -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        let _in_runtime = rt.enter();
        let t = std::time::Instant::now();
        let port = HostPort::create(&spec)?;
        println!(
            "host port made (TAP, MAC, 2 addresses, up, 2 default routes) in {:?}",
            t.elapsed()
        );
        assert_eq!(port.mac, spec.mac);
        let link = json(&a, &["link", "show", "dev", "tt-v7"])?;
        assert_eq!(link[0]["address"], "02:74:00:00:00:07");
        assert!(
            link[0]["flags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "UP"),
            "{link}"
        );
        let addrs = ip_addresses(&a, "tt-v7")?;
        assert!(addrs.contains(&("10.7.0.2".parse()?, 24)), "{addrs:?}");
        assert!(addrs.contains(&("fd00:7::2".parse()?, 64)), "{addrs:?}");
        let v4 = a.run(&["ip", "-4", "route", "show", "default"])?;
        assert!(v4.contains("default via 10.7.0.1 dev tt-v7"), "{v4}");
        let v6 = a.run(&["ip", "-6", "route", "show", "default"])?;
        assert!(v6.contains("default via fd00:7::1 dev tt-v7"), "{v6}");

        // Extra routes: installed where the next hop is, replaced
        // idempotently, removed.
        let mut rtnl = Rtnl::open()?;
        let routes = [
            Route {
                dest: "172.16.0.0/12".parse()?,
                via: "10.7.0.1".parse()?,
            },
            Route {
                dest: "2001:db8::/32".parse()?,
                via: "fd00:7::1".parse()?,
            },
        ];
        for r in &routes {
            r.install(&mut rtnl)?;
            r.install(&mut rtnl)?;
            let fam = if r.via.is_ipv6() { "-6" } else { "-4" };
            let shown = a.run(&["ip", fam, "route", "show", &r.dest.to_string()])?;
            // (IPv6 adds "metric 1024 pref medium", the kernel's default.)
            let want = format!("{} via {} dev tt-v7", r.dest, r.via);
            assert!(
                shown.lines().count() == 1 && shown.starts_with(&want),
                "ip route show {}: {shown}",
                r.dest
            );
        }
        for r in &routes {
            r.remove(&mut rtnl);
            let fam = if r.via.is_ipv6() { "-6" } else { "-4" };
            let shown = a.run(&["ip", fam, "route", "show", &r.dest.to_string()])?;
            assert_eq!(shown.trim(), "", "{} removed", r.dest);
            // Gone already is fine.
            r.remove(&mut rtnl);
        }
        // A next hop no interface reaches: the kernel's reason, with the
        // route named.
        let unreachable = Route {
            dest: "10.9.0.0/16".parse()?,
            via: "10.99.0.1".parse()?,
        };
        let e = format!("{:#}", unreachable.install(&mut rtnl).unwrap_err());
        assert!(
            e.starts_with("route 10.9.0.0/16 via 10.99.0.1: Network is unreachable"),
            "{e}"
        );
        // The address is there already: replaced, not refused.
        let tt = rtnl.link("tt-v7")?;
        rtnl.add_address(&tt, "10.7.0.2".parse()?, 24)?;
        assert_eq!(
            rtnl.addresses(&tt)?
                .into_iter()
                .filter(|(ip, _)| ip.is_ipv4())
                .collect::<Vec<_>>(),
            [("10.7.0.2".parse()?, 24)]
        );
        drop(port);
        Ok(())
    })??;
    // The device went with its host port, and its routes with it.
    assert!(a.run(&["ip", "link", "show", "tt-v7"]).is_err());
    let v4 = a.run(&["ip", "-4", "route", "show", "default"])?;
    assert!(v4.trim().is_empty(), "{v4}");

    // Neighbours: resolved by traffic (ARP, ND) or set by hand; the
    // unresolved and failed ones do not count.
    assert_eq!(lab::ping(&a, "10.8.0.2", 1)?.received, 1);
    assert_eq!(lab::ping(&a, "fd00:8::2", 1)?.received, 1);
    for (ip, mac) in [
        ("10.8.0.9", "02:00:00:00:00:09"),
        ("fd00:8::9", "02:00:00:00:00:19"),
    ] {
        a.run(&[
            "ip",
            "neigh",
            "replace",
            ip,
            "lladdr",
            mac,
            "dev",
            "e0",
            "nud",
            "permanent",
        ])?;
    }
    // Unanswered: incomplete, then failed.
    let _ = lab::ping(&a, "10.8.0.77", 1);
    a.run(&[
        "ip",
        "route",
        "add",
        "198.51.100.0/24",
        "via",
        "10.8.0.2",
        "dev",
        "e0",
    ])?;
    a.run(&[
        "ip",
        "-6",
        "route",
        "add",
        "2001:db8:5::/48",
        "via",
        "fd00:8::2",
        "dev",
        "e0",
    ])?;

    let shown = json(&a, &["neigh", "show", "dev", "e0"])?;
    let want: BTreeSet<(IpAddr, String)> = shown
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| {
            n["state"].as_array().unwrap().iter().any(|s| {
                ["REACHABLE", "STALE", "DELAY", "PROBE", "PERMANENT", "NOARP"]
                    .contains(&s.as_str().unwrap())
            }) && n.get("lladdr").is_some()
        })
        .map(|n| {
            (
                n["dst"].as_str().unwrap().parse().unwrap(),
                n["lladdr"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let (got, hops, routes) = a.enter(|| -> anyhow::Result<_> {
        let mut rtnl = Rtnl::open()?;
        let index = rtnl.link("e0")?.index;
        let got: BTreeSet<(IpAddr, String)> = rtnl
            .neighbours(index)?
            .into_iter()
            .map(|n| (n.ip, MacAddr(n.mac).to_string()))
            .collect();
        Ok((
            got,
            NextHops::read(&mut rtnl, index)?,
            rtnl.routes(Some(index))?,
        ))
    })??;
    assert_eq!(got, want, "ip neigh show: {shown}");
    for must in ["10.8.0.2", "fd00:8::2", "10.8.0.9", "fd00:8::9"] {
        assert!(
            got.iter()
                .any(|(ip, _)| *ip == must.parse::<IpAddr>().unwrap()),
            "{must} among {got:?}"
        );
    }
    let (dest, via) = ("198.51.100.0/24".parse()?, "10.8.0.2".parse()?);
    assert!(
        routes.iter().any(|r| r.dest == dest && r.via == Some(via)),
        "{routes:?}"
    );
    // The next hop of a peer: itself on-link, else its route's gateway,
    // over IPv4 and IPv6 alike.
    let mac = |ip: &str| hops.mac_for(ip.parse().unwrap());
    assert_eq!(mac("10.8.0.2"), Some(b_mac));
    assert_eq!(mac("fd00:8::2"), Some(b_mac));
    assert_eq!(mac("198.51.100.7"), Some(b_mac));
    assert_eq!(mac("2001:db8:5::1"), Some(b_mac));
    assert_eq!(mac("fd00:8::9"), Some([2, 0, 0, 0, 0, 0x19]));
    assert_eq!(mac("10.8.0.77"), None);
    assert_eq!(mac("192.0.2.1"), None);

    // The fast path reads the next hops in the event loop at every sync:
    // with a thousand APs' entries it stays a short pause.
    let batch = dir.join("neigh.batch");
    let mut lines = String::new();
    for i in 0..1000u32 {
        let (hi, lo) = (i / 250, i % 250 + 1);
        lines += &format!(
            "neigh replace 10.8.{}.{lo} lladdr 02:00:00:00:{hi:02x}:{lo:02x} dev e0 nud permanent\n",
            hi + 1
        );
    }
    std::fs::write(&batch, lines)?;
    a.run(&["ip", "addr", "add", "10.8.0.1/16", "dev", "e0"])?;
    a.run(&["ip", "-batch", &batch.to_string_lossy()])?;
    let (n, took) = a.enter(|| -> anyhow::Result<_> {
        let mut rtnl = Rtnl::open()?;
        let index = rtnl.link("e0")?.index;
        let t = std::time::Instant::now();
        let hops = NextHops::read(&mut rtnl, index)?;
        let took = t.elapsed();
        let n = (0..1000u32)
            .filter(|i| {
                let ip = format!("10.8.{}.{}", i / 250 + 1, i % 250 + 1);
                hops.mac_for(ip.parse().unwrap()).is_some()
            })
            .count();
        Ok((n, took))
    })??;
    println!("next hops of 1,000 neighbours read in {took:?}");
    assert_eq!(n, 1000);
    assert!(took < std::time::Duration::from_millis(200), "{took:?}");
    Ok(())
}
