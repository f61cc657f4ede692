//! IGMPv1/v2/v3 (RFC 2236, RFC 3376) and MLDv1/v2 (RFC 2710, RFC 3810) as
//! a snooping switch reads them. Property: a query that parses, written
//! again with the same fields, parses to the same query.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::net::Ipv6Addr;
use tunterm_core::wire::{igmp, mld};

fuzz_target!(|data: &[u8]| {
    match igmp::Repr::parse(data) {
        Ok(igmp::Repr::ReportV3 { records }) => {
            for r in records {
                let _ = r.joins();
            }
        }
        Ok(igmp::Repr::Query {
            version,
            max_resp,
            group,
            qrv,
            qqi,
        }) => {
            let q = igmp::Query {
                version,
                max_resp,
                group,
                qrv,
                qqi,
            };
            let mut out = Vec::new();
            q.append_to(&mut out);
            assert_eq!(out.len(), q.buffer_len());
            let Ok(igmp::Repr::Query {
                version: v2,
                max_resp: m2,
                group: g2,
                qrv: r2,
                qqi: i2,
            }) = igmp::Repr::parse(&out)
            else {
                panic!("an emitted IGMP query does not parse: {out:02x?}");
            };
            assert_eq!((v2, m2, g2), (version, max_resp, group));
            if version == igmp::Version::V3 {
                assert_eq!((r2, i2), (qrv & 7, qqi));
            }
        }
        _ => {}
    }
    let src: Ipv6Addr = "fe80::1".parse().unwrap();
    let dst: Ipv6Addr = "ff02::1".parse().unwrap();
    match mld::Repr::parse(&src, &dst, data) {
        Ok(mld::Repr::ReportV2 { records }) => {
            for r in records {
                let _ = r.joins();
            }
        }
        Ok(mld::Repr::Query {
            version,
            max_resp_ms,
            group,
            qrv,
            qqi,
        }) => {
            let q = mld::Query {
                version,
                max_resp_ms,
                group,
                qrv,
                qqi,
            };
            let mut out = Vec::new();
            q.append_to(&src, &dst, &mut out);
            assert_eq!(out.len(), q.buffer_len());
            let Ok(mld::Repr::Query {
                version: v2,
                max_resp_ms: m2,
                group: g2,
                qrv: r2,
                qqi: i2,
            }) = mld::Repr::parse(&src, &dst, &out)
            else {
                panic!("an emitted MLD query does not parse: {out:02x?}");
            };
            assert_eq!((v2, m2, g2), (version, max_resp_ms, group));
            if version == igmp::Version::V3 {
                assert_eq!((r2, i2), (qrv & 7, qqi));
            }
        }
        _ => {}
    }
});
