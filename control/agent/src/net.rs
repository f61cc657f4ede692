//! The TCP connection to the cloud: direct, or through an HTTP proxy with
//! `CONNECT` (the configuration's `proxy.url`: the mxedge's, else its
//! mxcluster's). TLS runs inside it, end to end with the cloud.

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest proxy answer head read.
const MAX_PROXY_HEAD: usize = 8 * 1024;

/// An HTTP proxy: where it is and its credentials (`user:password@`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proxy {
    /// `host:port`.
    pub authority: String,
    /// `user:password`, sent as `Proxy-Authorization: Basic` (a secret:
    /// never logged).
    pub userinfo: Option<String>,
}

impl Proxy {
    /// `http://[user:password@]host[:port][/]` (port 80 when absent).
    /// Other schemes are refused.
    pub fn parse(url: &str) -> anyhow::Result<Proxy> {
        let rest = url.strip_prefix("http://").with_context(|| {
            format!("proxy.url {url:?}: only http:// proxies (CONNECT) are supported")
        })?;
        let authority = rest.split('/').next().unwrap_or_default();
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, authority),
        };
        anyhow::ensure!(!hostport.is_empty(), "proxy.url {url:?}: no host");
        let has_port = if hostport.starts_with('[') {
            hostport.contains("]:")
        } else {
            hostport.contains(':')
        };
        let authority = if has_port {
            hostport.to_string()
        } else {
            format!("{hostport}:80")
        };
        Ok(Proxy {
            authority,
            userinfo,
        })
    }
}

/// The proxy a configuration document names: `mxedge.proxy.url`, else
/// `mxcluster.proxy.url`; `None` without one (an empty url is none).
pub fn proxy_of(doc: &serde_json::Value) -> Option<String> {
    ["mxedge", "mxcluster"].iter().find_map(|o| {
        doc[o]["proxy"]["url"]
            .as_str()
            .filter(|u| !u.trim().is_empty())
            .map(str::to_string)
    })
}

/// A TCP connection to `host:port`, through `proxy` when given.
pub async fn dial(host: &str, port: u16, proxy: Option<&Proxy>) -> anyhow::Result<TcpStream> {
    let Some(proxy) = proxy else {
        return TcpStream::connect((host, port))
            .await
            .with_context(|| format!("connecting to {host}:{port}"));
    };
    let mut s = TcpStream::connect(proxy.authority.as_str())
        .await
        .with_context(|| format!("connecting to the proxy {}", proxy.authority))?;
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(u) = &proxy.userinfo {
        req.push_str(&format!(
            "Proxy-Authorization: Basic {}\r\n",
            base64(u.as_bytes())
        ));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    // Read the head byte by byte: what follows it is the cloud's TLS.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        anyhow::ensure!(
            head.len() < MAX_PROXY_HEAD,
            "proxy {}: answer head longer than {MAX_PROXY_HEAD} bytes",
            proxy.authority
        );
        let b = s
            .read_u8()
            .await
            .with_context(|| format!("proxy {} closed during CONNECT", proxy.authority))?;
        head.push(b);
    }
    let text = String::from_utf8_lossy(&head);
    let status = text.lines().next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    anyhow::ensure!(
        code.starts_with('2'),
        "proxy {} refused CONNECT {target}: {status}",
        proxy.authority
    );
    Ok(s)
}

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn proxy_urls() {
        assert_eq!(
            Proxy::parse("http://proxy.internal:8080/").unwrap(),
            Proxy {
                authority: "proxy.internal:8080".into(),
                userinfo: None
            }
        );
        let p = Proxy::parse("http://u:p@10.0.0.1").unwrap();
        assert_eq!(p.authority, "10.0.0.1:80");
        assert_eq!(p.userinfo.as_deref(), Some("u:p"));
        assert_eq!(
            Proxy::parse("http://[::1]:3128").unwrap().authority,
            "[::1]:3128"
        );
        assert_eq!(Proxy::parse("http://[::1]").unwrap().authority, "[::1]:80");
        let e = Proxy::parse("socks5://x:1080").unwrap_err();
        assert!(e.to_string().contains("only http://"), "{e}");
        let doc = json!({"mxedge": {"proxy": {}}, "mxcluster": {"proxy": {"url": "http://c:1"}}});
        assert_eq!(proxy_of(&doc).as_deref(), Some("http://c:1"));
        let doc = json!({"mxedge": {"proxy": {"url": "http://e:1"}}, "mxcluster": {"proxy": {"url": "http://c:1"}}});
        assert_eq!(proxy_of(&doc).as_deref(), Some("http://e:1"));
        assert_eq!(proxy_of(&json!({"mxedge": {}})), None);
    }
}
