//! Ethernet II and 802.1Q (the frame header view), ARP replies and the
//! retagging builders. Property: a frame retagged to VID v (or untagged)
//! parses with that tag, the same addresses and the same remainder.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tunterm_core::wire::ether;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, frame)) = data.split_first() else {
        return;
    };
    let Some(view) = ether::parse(frame) else {
        assert!(frame.len() < 18);
        return;
    };
    let _ = ether::arp_reply_sender(frame, &view);
    let vid = (sel & 1 == 1).then(|| u16::from(sel >> 1) * 31 % 4095 + 1);
    let mut out = Vec::new();
    ether::write_retagged(frame, &view, vid, &mut out);
    let Some(again) = ether::parse(&out) else {
        // Untagging a frame whose inner ethertype is 0x8100 again (QinQ)
        // with nothing after it leaves a cut-short tagged frame.
        assert!(vid.is_none() && frame[view.inner_offset..].starts_with(&[0x81, 0x00]));
        return;
    };
    assert_eq!((again.dst, again.src), (view.dst, view.src));
    // dst, src, the new tag if any, then the old frame from its ethertype on.
    let tag_len = if vid.is_some() { 4 } else { 0 };
    assert_eq!(out.len(), 12 + tag_len + frame.len() - view.inner_offset);
    assert_eq!(&out[12 + tag_len..], &frame[view.inner_offset..]);
    match vid {
        Some(v) => {
            let tag = again.tag.expect("tagged");
            assert_eq!(tag.vid(), v);
            let old = view.tag.unwrap_or(ether::Tci(0));
            assert_eq!((tag.pcp(), tag.dei()), (old.pcp(), old.dei()));
        }
        // Untagging a frame whose inner ethertype is itself 0x8100 (QinQ)
        // leaves that inner tag visible: only the outer one is ours.
        None => {
            assert!(again.tag.is_none() || frame[view.inner_offset..].starts_with(&[0x81, 0x00]))
        }
    }
});
