//! TZSP as Wireshark reads it. Property: an encoded frame parses back with
//! its original length and timestamp.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tunterm_core::wire::tzsp;

fuzz_target!(|data: &[u8]| {
    if let Some(t) = tzsp::parse(data) {
        assert!(t.frame.len() < data.len());
        let (secs, nanos) = t.timestamp.unwrap_or((1, 2));
        let orig = usize::from(t.original_len.unwrap_or(60));
        let mut out = Vec::new();
        tzsp::encode(t.frame, orig, secs, nanos, &mut out);
        let again = tzsp::parse(&out).expect("an encoded TZSP datagram parses");
        assert_eq!(again.frame, t.frame);
        assert_eq!(again.timestamp, Some((secs, nanos)));
        assert_eq!(again.original_len, Some(orig as u16));
    }
});
