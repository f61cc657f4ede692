//! L2TPv3 (RFC 3931) over UDP and over IP: the packet split, control
//! messages with their AVPs, data headers and the default L2-Specific
//! Sublayer (RFC 4719). Property: a control message that parses emits to
//! bytes that parse to the same message; every AVP that types re-emits to
//! the same AVP.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tunterm_core::wire::l2tp::{self, Avp, AvpIter, ControlMessage, Packet, Transport};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let transport = if sel & 1 == 0 {
        Transport::Udp
    } else {
        Transport::Ip
    };
    match l2tp::parse(transport, bytes) {
        Ok(Packet::Control(c)) => {
            // Each AVP alone: typed → emitted → typed again is identity.
            for raw in AvpIter::new(c.avps).flatten() {
                if let Ok(avp) = Avp::from_raw(&raw) {
                    let mut out = Vec::new();
                    avp.emit(&mut out);
                    let again = AvpIter::new(&out)
                        .next()
                        .expect("an emitted AVP is there")
                        .expect("an emitted AVP is well formed");
                    assert_eq!(Avp::from_raw(&again).as_ref(), Ok(&avp));
                    let _ = avp.mandatory();
                    let _ = avp.id();
                }
            }
            if let Ok(msg) = ControlMessage::parse(&c) {
                let _ = msg.unknown_mandatory();
                let mut out = Vec::new();
                msg.emit(transport, c.header, &mut out);
                let Ok(Packet::Control(c2)) = l2tp::parse(transport, &out) else {
                    panic!("an emitted control message does not parse: {out:02x?}");
                };
                assert_eq!(c2.header, c.header);
                assert_eq!(ControlMessage::parse(&c2).as_ref(), Ok(&msg));
            } else if c.is_zlb() {
                let mut out = Vec::new();
                l2tp::emit_zlb(transport, c.header, &mut out);
                let Ok(Packet::Control(c2)) = l2tp::parse(transport, &out) else {
                    panic!("an emitted ZLB does not parse");
                };
                assert!(c2.is_zlb());
                assert_eq!(c2.header, c.header);
            }
        }
        Ok(Packet::Data(d)) => {
            assert_ne!(d.session_id, 0);
            for cookie_len in [0, 4, 8] {
                if let Ok((cookie, payload)) = d.split_cookie(cookie_len) {
                    assert_eq!(cookie.len(), cookie_len);
                    // Re-emit the header with the same id and cookie: the
                    // packet splits the same way.
                    let cookie = l2tp::Cookie::new(cookie).expect("0, 4 or 8 bytes");
                    let hl = l2tp::data_header_len(transport, cookie_len);
                    let mut out = vec![0; hl];
                    assert_eq!(
                        l2tp::emit_data_header(transport, d.session_id, &cookie, &mut out),
                        hl
                    );
                    out.extend_from_slice(payload);
                    let Ok(Packet::Data(d2)) = l2tp::parse(transport, &out) else {
                        panic!("an emitted data header does not parse");
                    };
                    assert_eq!(d2.session_id, d.session_id);
                    assert_eq!(
                        d2.split_cookie(cookie_len),
                        Ok((cookie.as_slice(), payload))
                    );
                    if let Some(seq) = l2tp::parse_sublayer(payload) {
                        let mut sl = [0u8; l2tp::SUBLAYER_LEN];
                        assert_eq!(l2tp::emit_sublayer(seq, &mut sl), l2tp::SUBLAYER_LEN);
                        assert_eq!(l2tp::parse_sublayer(&sl), Some(seq));
                    }
                }
            }
        }
        Err(_) => {}
    }
});
