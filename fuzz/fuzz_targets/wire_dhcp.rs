//! DHCP (RFC 2131, options RFC 2132, relay agent information RFC 3046) and
//! the relay's IPv4/UDP helpers. Properties: a message whose options are
//! rewritten (option 82 out, another in) checks again and holds exactly
//! the old options minus 82 plus the new one; a message put in a UDP frame
//! comes back out of it as a client message.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::net::Ipv4Addr;
use tunterm_control::mac::MacAddr;
use tunterm_core::wire::dhcp;

const RELAY_AGENT_INFO: u8 = 82;

fuzz_target!(|data: &[u8]| {
    // The same bytes as an L3 packet after an ethertype, as the relay sees them.
    let _ = dhcp::client_message(data);
    let _ = dhcp::server_ack(data);
    let Ok(p) = dhcp::Packet::new_checked(data) else {
        return;
    };
    let _ = (
        p.op(),
        p.hops(),
        p.xid(),
        p.flags(),
        p.ciaddr(),
        p.yiaddr(),
        p.giaddr(),
    );
    let _ = (p.chaddr_mac(), p.chaddr(), p.message_type());
    let old: Vec<(u8, &[u8])> = p.options().map(|o| o.expect("checked")).collect();
    let extra = dhcp::agent_info(&data[..data.len().min(130)], b"ap-1:vlan-10");
    let mut out = Vec::new();
    dhcp::rewrite_options(&p, Some((RELAY_AGENT_INFO, &extra)), &mut out);
    let p2 = dhcp::Packet::new_checked(&out[..]).expect("a rewritten message checks");
    let new: Vec<(u8, &[u8])> = p2.options().map(|o| o.expect("checked")).collect();
    let mut want: Vec<(u8, &[u8])> = old
        .iter()
        .copied()
        .filter(|(c, _)| *c != RELAY_AGENT_INFO)
        .collect();
    want.push((RELAY_AGENT_INFO, &extra));
    assert_eq!(new, want);
    assert_eq!(p2.xid(), p.xid());

    let frame = dhcp::UdpFrame {
        src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
        dst_mac: MacAddr([0xff; 6]),
        src: (Ipv4Addr::UNSPECIFIED, 68),
        dst: (Ipv4Addr::BROADCAST, 67),
    };
    let mut f = Vec::new();
    dhcp::emit_udp_frame(&frame, data, &mut f);
    assert_eq!(
        dhcp::client_message(&f[12..]),
        Some((Ipv4Addr::BROADCAST, data))
    );
});
