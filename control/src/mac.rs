//! The MAC address (IEEE 802): six bytes in wire order, written
//! `aa:bb:cc:dd:ee:ff`.
//!
//! It lives here, at the bottom of the crate graph, because the
//! configuration already names APs by MAC (an `mxtunnel` host order is
//! keyed on the AP's MAC); `tunterm-core` re-exports it as
//! `wire::ether::MacAddr` for its frame views, the FDB and the daemon.

use std::fmt;
use std::str::FromStr;

/// A MAC address in wire order. `Display` writes lowercase hex with colons
/// (`02:00:5e:00:00:01`), the form stats, logs and the CLI show; `FromStr`
/// reads that form and the other usual spellings (see [`MacAddr::from_str`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

/// Why a string is not a MAC address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a MAC address (expected 12 hex digits, as aa:bb:cc:dd:ee:ff)")]
pub struct MacParseError {
    /// The text that was refused.
    pub input: String,
}

impl MacAddr {
    /// The broadcast address, ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// All zeros: no address (never a valid source).
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The six bytes, in wire order.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// A group address (multicast, broadcast included): the I/G bit is set.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// A locally administered address: the U/L bit is set.
    pub const fn is_local(&self) -> bool {
        self.0[0] & 2 == 2
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(b: [u8; 6]) -> MacAddr {
        MacAddr(b)
    }
}

impl From<MacAddr> for [u8; 6] {
    fn from(m: MacAddr) -> [u8; 6] {
        m.0
    }
}

impl TryFrom<&[u8]> for MacAddr {
    type Error = std::array::TryFromSliceError;

    /// The address in `b`, which must be exactly six bytes.
    fn try_from(b: &[u8]) -> Result<MacAddr, Self::Error> {
        Ok(MacAddr(b.try_into()?))
    }
}

impl AsRef<[u8]> for MacAddr {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl PartialEq<[u8; 6]> for MacAddr {
    fn eq(&self, other: &[u8; 6]) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = MacParseError;

    /// Twelve hex digits in any case, as `5c:5b:35:3e:4e:b1`,
    /// `5c-5b-35-3e-4e-b1`, `5c5b.353e.4eb1` or bare `5c5b353e4eb1` (how
    /// Mist names APs). Separators must split the digits into equal groups
    /// of two or four, one kind of separator per address.
    fn from_str(s: &str) -> Result<MacAddr, MacParseError> {
        let err = || MacParseError {
            input: s.to_owned(),
        };
        let sep = s.bytes().find(|b| matches!(b, b':' | b'-' | b'.'));
        let groups: Vec<&str> = match sep {
            Some(c) => s.split(char::from(c)).collect(),
            None => vec![s],
        };
        let width = groups[0].len();
        let shape_ok = match groups.len() {
            1 => width == 12,
            3 => width == 4,
            6 => width == 2,
            _ => false,
        };
        if !shape_ok
            || groups
                .iter()
                .any(|g| g.len() != width || !g.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(err());
        }
        let hex = groups.concat();
        let mut mac = [0u8; 6];
        for (i, b) in mac.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| err())?;
        }
        Ok(MacAddr(mac))
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: MacAddr = MacAddr([0x5c, 0x5b, 0x35, 0x3e, 0x4e, 0xb1]);

    #[test]
    fn displays_lowercase_with_colons() {
        assert_eq!(M.to_string(), "5c:5b:35:3e:4e:b1");
        assert_eq!(format!("{M:?}"), "5c:5b:35:3e:4e:b1");
        assert_eq!(
            MacAddr([0, 1, 2, 0xa, 0xb, 0xff]).to_string(),
            "00:01:02:0a:0b:ff"
        );
    }

    #[test]
    fn parses_the_usual_spellings() {
        for s in [
            "5c5b353e4eb1",
            "5c:5b:35:3e:4e:b1",
            "5C:5B:35:3E:4E:B1",
            "5c-5b-35-3e-4e-b1",
            "5c5b.353e.4eb1",
        ] {
            assert_eq!(s.parse::<MacAddr>(), Ok(M), "{s}");
        }
        assert_eq!(M.to_string().parse::<MacAddr>(), Ok(M), "round trip");
    }

    #[test]
    fn refuses_anything_else_with_the_input_in_the_error() {
        for s in [
            "",
            "ap1",
            "5c5b353e4eb1ff",
            "5c5b353e4eb",
            "5c:5b:35:3e:4e",
            "5c:5b:35:3e:4e:b1:00",
            "5c:5b:35:3e:4e:g1",
            "5c:5b:35-3e:4e:b1",
            "5:c5b:35:3e:4e:b1",
            "5c::5b:35:3e:4eb1",
            "+c:5b:35:3e:4e:b1",
            " 5c:5b:35:3e:4e:b1",
            "5c5b.353e4eb1",
        ] {
            let e = s.parse::<MacAddr>().unwrap_err();
            assert_eq!(e.input, s);
            assert!(e.to_string().contains("is not a MAC address"), "{e}");
        }
    }

    #[test]
    fn address_kinds() {
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(MacAddr([0x01, 0x00, 0x5e, 0, 0, 0xfb]).is_multicast());
        assert!(MacAddr([0x33, 0x33, 0, 0, 0, 1]).is_multicast());
        assert!(!M.is_multicast() && !MacAddr::ZERO.is_multicast());
        assert!(MacAddr([2, 0, 0, 0, 0, 1]).is_local() && !M.is_local());
    }

    #[test]
    fn serde_is_the_display_string() {
        let j = serde_json::to_string(&M).unwrap();
        assert_eq!(j, "\"5c:5b:35:3e:4e:b1\"");
        assert_eq!(serde_json::from_str::<MacAddr>(&j).unwrap(), M);
        assert!(serde_json::from_str::<MacAddr>("\"nope\"").is_err());
    }
}
