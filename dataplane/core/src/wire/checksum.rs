//! The Internet checksum (RFC 1071): a ones' complement sum of 16-bit
//! words, for IPv4 headers, UDP/TCP with their pseudo-header, ICMP.

/// Add `data` as big-endian 16-bit words to `acc` (an odd last byte is
/// padded with a zero byte). Chain calls to sum several pieces (a
/// pseudo-header, then the datagram), starting from 0.
pub fn sum16(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        acc += u32::from(*b) << 8;
    }
    acc
}

/// Fold the carries of a sum into 16 bits and complement it: the checksum
/// to write (0 when verifying a sum that includes a correct checksum).
pub fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The checksum of `bytes` alone: 0 over data that holds its own correct
/// checksum. (`sum16` sums in 32 bits: exact for up to 128 KiB.)
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    fold(sum16(bytes, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (folded).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum16(&data, 0)), !0xddf2);
        assert_eq!(fold(sum16(&[0xab], 0)), !0xab00);
        assert_eq!(internet_checksum(&data), !0xddf2);
    }
}
