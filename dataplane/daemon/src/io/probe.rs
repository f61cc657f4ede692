//! Probes of the upstream monitoring that go through the kernel: ICMP echo
//! (a raw ICMP / ICMPv6 socket) and TCP connect, each optionally bound to
//! a source address (the edge's address on a VLAN), each bounded by a
//! timeout. Hostnames are resolved at every probe. (The ARP probe goes out
//! on the trunk through the dataplane itself: `crate::monitoring`.)

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use tunterm_core::wire::checksum::internet_checksum;

/// The first address `host` (an address or a name) resolves to.
pub async fn resolve(host: &str) -> Result<IpAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    let mut addrs = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|e| format!("resolving {host}: {e}"))?;
    addrs
        .next()
        .map(|a| a.ip())
        .ok_or_else(|| format!("resolving {host}: no address"))
}

/// ICMP echo to `host` (from `src` if given); Ok once the reply arrives
/// within `timeout`.
pub async fn ping(
    host: &str,
    src: Option<IpAddr>,
    ident: u16,
    seq: u16,
    timeout: Duration,
) -> Result<(), String> {
    let dst = resolve(host).await?;
    match tokio::time::timeout(timeout, ping_ip(dst, src, ident, seq)).await {
        Ok(r) => r.map_err(|e| format!("ping {dst}: {e}")),
        Err(_) => Err(format!("no echo reply from {dst} in {timeout:?}")),
    }
}

async fn ping_ip(dst: IpAddr, src: Option<IpAddr>, ident: u16, seq: u16) -> io::Result<()> {
    let v6 = dst.is_ipv6();
    let (domain, proto, request, reply) = if v6 {
        (Domain::IPV6, Protocol::ICMPV6, 128u8, 129u8)
    } else {
        (Domain::IPV4, Protocol::ICMPV4, 8u8, 0u8)
    };
    let sock = Socket::new(domain, Type::RAW, Some(proto))?;
    sock.set_nonblocking(true)?;
    if let Some(src) = src {
        sock.bind(&SockAddr::from(SocketAddr::new(src, 0)))
            .map_err(|e| io::Error::new(e.kind(), format!("binding source {src}: {e}")))?;
    }
    let mut msg = vec![request, 0, 0, 0];
    msg.extend_from_slice(&ident.to_be_bytes());
    msg.extend_from_slice(&seq.to_be_bytes());
    msg.extend_from_slice(b"tunterm-monitor!");
    if !v6 {
        // The kernel fills in the ICMPv6 checksum (it needs the pseudo
        // header); ICMPv4's is ours.
        let c = internet_checksum(&msg);
        msg[2..4].copy_from_slice(&c.to_be_bytes());
    }
    // SAFETY: the socket2::Socket owns its descriptor for its whole life
    // and `as_raw_fd` always returns that same descriptor.
    let fd = unsafe { AsyncFd::register(sock) }.map_err(io::Error::from)?;
    fd.get_ref()
        .send_to(&msg, &SockAddr::from(SocketAddr::new(dst, 0)))?;
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1500];
    loop {
        let mut guard = fd.readable().await?;
        let got = guard.try_io(|s| s.get_ref().recv_from(&mut buf));
        let (n, from) = match got {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => return Err(e),
            Err(_) => continue,
        };
        // SAFETY: recv_from initialised the first `n` bytes.
        let bytes: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
        // An ICMPv4 raw socket hands over the IP header too.
        let icmp = if v6 {
            bytes
        } else {
            let ihl = usize::from(bytes.first().map_or(0, |b| b & 0x0f)) * 4;
            bytes.get(ihl..).unwrap_or(&[])
        };
        let from_ip = from.as_socket().map(|a| a.ip());
        if icmp.len() >= 8
            && icmp[0] == reply
            && icmp[4..6] == ident.to_be_bytes()
            && icmp[6..8] == seq.to_be_bytes()
            && from_ip == Some(dst)
        {
            return Ok(());
        }
    }
}

/// TCP connect to `host`:`port` (from `src` if given); Ok once the
/// connection is established within `timeout` (then it is closed).
pub async fn tcp(
    host: &str,
    port: u16,
    src: Option<IpAddr>,
    timeout: Duration,
) -> Result<(), String> {
    let dst = SocketAddr::new(resolve(host).await?, port);
    let sock = if dst.is_ipv6() {
        tokio::net::TcpSocket::new_v6()
    } else {
        tokio::net::TcpSocket::new_v4()
    }
    .map_err(|e| format!("tcp socket: {e}"))?;
    if let Some(src) = src {
        sock.bind(SocketAddr::new(src, 0))
            .map_err(|e| format!("binding source {src}: {e}"))?;
    }
    match tokio::time::timeout(timeout, sock.connect(dst)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("tcp {dst}: {e}")),
        Err(_) => Err(format!("tcp {dst}: no answer in {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn tcp_succeeds_on_a_listener_and_fails_on_a_closed_port() {
        rt().block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = l.local_addr().unwrap().port();
            let t = Duration::from_secs(1);
            tcp("127.0.0.1", port, None, t).await.unwrap();
            drop(l);
            let e = tcp("127.0.0.1", port, None, t).await.unwrap_err();
            assert!(e.contains("refused"), "{e}");
            let e = tcp("127.0.0.1", port, Some("192.0.2.1".parse().unwrap()), t)
                .await
                .unwrap_err();
            assert!(e.contains("binding source 192.0.2.1"), "{e}");
        });
    }

    #[test]
    fn ping_answers_on_loopback_and_names_resolve() {
        // A test that did not run must not pass.
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        assert!(
            euid == 0,
            "the ping probe test needs root (euid is {euid}): raw ICMP sockets need \
             CAP_NET_RAW; run the tests as root"
        );
        rt().block_on(async {
            let t = Duration::from_secs(1);
            ping("127.0.0.1", None, 0x7e57, 1, t).await.unwrap();
            ping("::1", None, 0x7e57, 2, t).await.unwrap();
            ping("localhost", None, 0x7e57, 3, t).await.unwrap();
            let e = resolve("no-such-host.invalid").await.unwrap_err();
            assert!(e.contains("resolving no-such-host.invalid"), "{e}");
        });
    }
}
