//! Captured frames for the cloud: the daemon's pcapng stream read block by
//! block, each frame made into the `/orgs/:org_id/pcaps` stream's
//! `pcap_dict` (the seed's fields) and `pcap_raw` (base64 of a one-frame
//! classic pcap file, as the seed's example is). Sans-IO.

use serde_json::{Value, json};

/// Largest pcapng block accepted (a frame is at most 2048 bytes here).
pub const MAX_BLOCK: usize = 256 * 1024;

/// One captured frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// The capture point's name (the pcapng interface's `if_name`).
    pub interface: String,
    /// Seconds since the epoch.
    pub timestamp: f64,
    /// Inbound (`rx`) or outbound (`tx`), from the pcapng direction flag.
    pub direction: &'static str,
    /// Length on the wire.
    pub orig_len: u32,
    /// The bytes kept (Ethernet).
    pub data: Vec<u8>,
}

struct Iface {
    name: String,
    /// Units per second of its timestamps.
    units: f64,
}

/// Reads a pcapng byte stream (fed in pieces) into [`Frame`]s.
#[derive(Default)]
pub struct PcapngReader {
    buf: Vec<u8>,
    big_endian: bool,
    ifaces: Vec<Iface>,
}

impl PcapngReader {
    /// More bytes of the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn u32_at(&self, b: &[u8], at: usize) -> u32 {
        let v: [u8; 4] = b[at..at + 4].try_into().unwrap_or_default();
        if self.big_endian {
            u32::from_be_bytes(v)
        } else {
            u32::from_le_bytes(v)
        }
    }

    fn u16_at(&self, b: &[u8], at: usize) -> u16 {
        let v: [u8; 2] = b[at..at + 2].try_into().unwrap_or_default();
        if self.big_endian {
            u16::from_be_bytes(v)
        } else {
            u16::from_le_bytes(v)
        }
    }

    /// Options from `at` to the end of `body`: (code, value) pairs.
    fn options<'a>(&self, body: &'a [u8], mut at: usize) -> Vec<(u16, &'a [u8])> {
        let mut out = Vec::new();
        while at + 4 <= body.len() {
            let code = self.u16_at(body, at);
            let len = usize::from(self.u16_at(body, at + 2));
            if code == 0 || at + 4 + len > body.len() {
                break;
            }
            out.push((code, &body[at + 4..at + 4 + len]));
            at += 4 + len.div_ceil(4) * 4;
        }
        out
    }

    /// The next frame, `Ok(None)` when more bytes are needed, or why the
    /// stream is not pcapng.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        loop {
            if self.buf.len() < 12 {
                return Ok(None);
            }
            let kind = u32::from_le_bytes(self.buf[0..4].try_into().unwrap_or_default());
            if kind == 0x0A0D_0D0A {
                let magic = &self.buf[8..12];
                self.big_endian = match magic {
                    [0x4D, 0x3C, 0x2B, 0x1A] => false,
                    [0x1A, 0x2B, 0x3C, 0x4D] => true,
                    _ => return Err("pcapng: bad byte-order magic".into()),
                };
                self.ifaces.clear();
            }
            let len = self.u32_at(&self.buf, 4) as usize;
            if !(12..=MAX_BLOCK).contains(&len) || !len.is_multiple_of(4) {
                return Err(format!("pcapng: block of {len} bytes"));
            }
            if self.buf.len() < len {
                return Ok(None);
            }
            let block: Vec<u8> = self.buf.drain(..len).collect();
            let kind = self.u32_at(&block, 0);
            let body = &block[8..len - 4];
            match kind {
                // Interface Description Block.
                1 if body.len() >= 8 => {
                    let mut name = format!("if{}", self.ifaces.len());
                    let mut units = 1e6;
                    for (code, v) in self.options(body, 8) {
                        match code {
                            2 => name = String::from_utf8_lossy(v).into_owned(),
                            9 if !v.is_empty() => {
                                let r = v[0];
                                units = if r & 0x80 == 0 {
                                    10f64.powi(i32::from(r))
                                } else {
                                    2f64.powi(i32::from(r & 0x7f))
                                };
                            }
                            _ => {}
                        }
                    }
                    self.ifaces.push(Iface { name, units });
                }
                // Enhanced Packet Block.
                6 if body.len() >= 20 => {
                    let iface = self.u32_at(body, 0) as usize;
                    let ts =
                        u64::from(self.u32_at(body, 4)) << 32 | u64::from(self.u32_at(body, 8));
                    let caplen = self.u32_at(body, 12) as usize;
                    let orig_len = self.u32_at(body, 16);
                    if 20 + caplen > body.len() {
                        return Err("pcapng: packet longer than its block".into());
                    }
                    let data = body[20..20 + caplen].to_vec();
                    let mut direction = "rx";
                    for (code, v) in self.options(body, 20 + caplen.div_ceil(4) * 4) {
                        if code == 2 && v.len() == 4 && self.u32_at(v, 0) & 3 == 2 {
                            direction = "tx";
                        }
                    }
                    let (name, units) = self
                        .ifaces
                        .get(iface)
                        .map_or((format!("if{iface}"), 1e6), |i| (i.name.clone(), i.units));
                    return Ok(Some(Frame {
                        interface: name,
                        timestamp: ts as f64 / units,
                        direction,
                        orig_len,
                        data,
                    }));
                }
                _ => {}
            }
        }
    }
}

fn mac(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The seed's `pcap_dict` for a frame (`lost`: frames not sent up before
/// this one).
pub fn pcap_dict(f: &Frame, mxedge_id: &str, lost: u64) -> Value {
    let d = &f.data;
    let mut dict = json!({
        "dst_mac": d.get(0..6).map(mac), "src_mac": d.get(6..12).map(mac),
        "vlan": 0, "src_ip": null, "dst_ip": null, "src_port": null, "dst_port": null,
        "protocol": null, "mxedge_id": mxedge_id, "direction": f.direction,
        "timestamp": (f.timestamp * 1000.0).round() / 1000.0, "length": f.orig_len,
        "lost_messages": lost, "interface": f.interface, "info": null,
    });
    let mut at = 12;
    let mut ethertype = d
        .get(12..14)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    while matches!(ethertype, 0x8100 | 0x88a8) && d.len() >= at + 6 {
        if dict["vlan"] == json!(0) {
            dict["vlan"] = json!(u16::from_be_bytes([d[at + 2], d[at + 3]]) & 0x0fff);
        }
        at += 4;
        ethertype = u16::from_be_bytes([d[at], d[at + 1]]);
    }
    let l3 = &d[(at + 2).min(d.len())..];
    let (proto, l4, src, dst) = match ethertype {
        0x0800 if l3.len() >= 20 => {
            let ihl = usize::from(l3[0] & 0x0f) * 4;
            let ip = |o: usize| {
                std::net::Ipv4Addr::from([l3[o], l3[o + 1], l3[o + 2], l3[o + 3]]).to_string()
            };
            (l3[9], l3.get(ihl..).unwrap_or_default(), ip(12), ip(16))
        }
        0x86dd if l3.len() >= 40 => {
            let ip = |o: usize| {
                let b: [u8; 16] = l3[o..o + 16].try_into().unwrap_or_default();
                std::net::Ipv6Addr::from(b).to_string()
            };
            (l3[6], &l3[40..], ip(8), ip(24))
        }
        0x0806 => {
            dict["protocol"] = json!("ARP");
            dict["info"] = json!("ARP");
            return dict;
        }
        other => {
            dict["info"] = json!(format!("ethertype 0x{other:04x}"));
            return dict;
        }
    };
    dict["src_ip"] = json!(src);
    dict["dst_ip"] = json!(dst);
    let name = match proto {
        1 => "ICMP",
        2 => "IGMP",
        6 => "TCP",
        17 => "UDP",
        47 => "GRE",
        58 => "ICMPv6",
        115 => "L2TP",
        _ => "IP",
    };
    dict["protocol"] = json!(name);
    let mut info = format!("IP {src} > {dst}: {name}");
    if matches!(proto, 6 | 17) && l4.len() >= 4 {
        let (sp, dp) = (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        );
        dict["src_port"] = json!(sp);
        dict["dst_port"] = json!(dp);
        info = format!("IP {src}.{sp} > {dst}.{dp}: {name}");
    }
    dict["info"] = json!(info);
    dict
}

/// One frame as a classic pcap file (microseconds, Ethernet), the bytes
/// `pcap_raw` carries in base64.
pub fn pcap_file(f: &Frame) -> Vec<u8> {
    let mut out = Vec::with_capacity(40 + f.data.len());
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // thiszone
    out.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    let secs = f.timestamp.trunc();
    let usecs = ((f.timestamp - secs) * 1e6).round().min(999_999.0);
    out.extend_from_slice(&(secs as u32).to_le_bytes());
    out.extend_from_slice(&(usecs as u32).to_le_bytes());
    out.extend_from_slice(&(f.data.len() as u32).to_le_bytes());
    out.extend_from_slice(&f.orig_len.max(f.data.len() as u32).to_le_bytes());
    out.extend_from_slice(&f.data);
    out
}

/// The `pcap` message for a frame.
pub fn message(capture_id: &str, f: &Frame, mxedge_id: &str, lost: u64) -> Value {
    json!({"type": "pcap", "capture_id": capture_id,
           "pcap_dict": pcap_dict(f, mxedge_id, lost),
           "pcap_raw": crate::net::base64(&pcap_file(f))})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(kind: u32, body: &[u8]) -> Vec<u8> {
        let len = (12 + body.len().div_ceil(4) * 4) as u32;
        let mut b = kind.to_le_bytes().to_vec();
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(body);
        b.resize(len as usize - 4, 0);
        b.extend_from_slice(&len.to_le_bytes());
        b
    }

    fn opt(code: u16, v: &[u8]) -> Vec<u8> {
        let mut o = code.to_le_bytes().to_vec();
        o.extend_from_slice(&(v.len() as u16).to_le_bytes());
        o.extend_from_slice(v);
        o.resize(4 + v.len().div_ceil(4) * 4, 0);
        o
    }

    /// An ICMP echo on VLAN 10, 192.168.10.11 -> 192.168.10.1.
    fn frame() -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x81, 0, 0, 10, 8, 0];
        f.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0]);
        f.extend_from_slice(&[192, 168, 10, 11, 192, 168, 10, 1]);
        f.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]);
        f
    }

    #[test]
    fn a_pcapng_stream_in_pieces_gives_its_frames_in_the_seeds_shape() {
        let mut shb = 0x1A2B_3C4Du32.to_le_bytes().to_vec();
        shb.extend_from_slice(&[1, 0, 0, 0]);
        shb.extend_from_slice(&u64::MAX.to_le_bytes());
        let mut idb = vec![1, 0, 0, 0, 0, 8, 0, 0];
        idb.extend(opt(2, b"trunk"));
        idb.extend(opt(9, &[9]));
        idb.extend(opt(0, b""));
        let f = frame();
        let ts: u64 = 1_652_247_615_250_000_000;
        let mut epb = 0u32.to_le_bytes().to_vec();
        epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(ts as u32).to_le_bytes());
        epb.extend_from_slice(&(f.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(f.len() as u32).to_le_bytes());
        epb.extend_from_slice(&f);
        epb.resize(20 + f.len().div_ceil(4) * 4, 0);
        epb.extend(opt(2, &2u32.to_le_bytes()));
        epb.extend(opt(0, b""));
        let mut stream = block(0x0A0D_0D0A, &shb);
        stream.extend(block(1, &idb));
        stream.extend(block(6, &epb));
        let mut r = PcapngReader::default();
        let mut got = Vec::new();
        for piece in stream.chunks(7) {
            r.push(piece);
            while let Some(fr) = r.next_frame().unwrap() {
                got.push(fr);
            }
        }
        assert_eq!(got.len(), 1);
        let fr = &got[0];
        assert_eq!((fr.interface.as_str(), fr.direction), ("trunk", "tx"));
        assert!((fr.timestamp - 1_652_247_615.25).abs() < 1e-6);
        let d = pcap_dict(fr, "e1", 3);
        assert_eq!(d["vlan"], 10);
        assert_eq!(d["src_ip"], "192.168.10.11");
        assert_eq!(d["protocol"], "ICMP");
        assert_eq!(d["lost_messages"], 3);
        assert_eq!(d["src_mac"], "02:00:00:00:00:02");
        let keys: Vec<&str> = d.as_object().unwrap().keys().map(String::as_str).collect();
        for k in [
            "dst_mac",
            "src_mac",
            "vlan",
            "src_ip",
            "dst_ip",
            "dst_port",
            "src_port",
            "protocol",
            "mxedge_id",
            "direction",
            "timestamp",
            "length",
            "lost_messages",
            "info",
            "interface",
        ] {
            assert!(keys.contains(&k), "{k}");
        }
        assert_eq!(keys.len(), 15, "only the seed's fields: {keys:?}");
        let raw = pcap_file(fr);
        assert_eq!(
            &raw[..4],
            &[0xd4, 0xc3, 0xb2, 0xa1],
            "the seed's pcap_raw starts 1MOyoQ"
        );
        assert!(crate::net::base64(&raw).starts_with("1MOyoQ"));
        assert_eq!(&raw[40..], &f[..]);
        let mut bad = PcapngReader::default();
        bad.push(&block(0x0A0D_0D0A, &[0u8; 16]));
        assert!(bad.next_frame().is_err());
    }
}
