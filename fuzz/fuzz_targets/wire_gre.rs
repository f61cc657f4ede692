//! GRE (RFC 2784, RFC 2890 key and sequence number). Property: a header
//! that parses emits to bytes that parse to the same header and payload.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tunterm_core::wire::gre;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = gre::parse(data) else {
        return;
    };
    assert_eq!(p.header.header_len() + p.payload.len(), data.len());
    let mut out = Vec::new();
    gre::emit_packet(&p.header, p.payload, &mut out);
    let again = gre::parse(&out).expect("an emitted GRE packet parses");
    assert_eq!(again.header, p.header);
    assert_eq!(again.payload, p.payload);
});
