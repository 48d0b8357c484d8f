//! LEB128 varints of the package header.

use crate::MAX_VARINT_LEN;

/// Result of reading a varint from the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Varint {
    /// The value and how many bytes it took.
    Value(u64, usize),
    /// The buffer ends inside the varint.
    Incomplete,
    /// More than ten bytes, or a tenth byte that overflows 64 bits.
    Overlong,
}

/// Reads an unsigned LEB128 varint from the front of `buf`.
#[inline]
pub(crate) fn read(buf: &[u8]) -> Varint {
    // Header varints are almost always one byte (version 1, short frames).
    if let Some(&first) = buf.first() {
        if first < 0x80 {
            return Varint::Value(u64::from(first), 1);
        }
    }
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().take(MAX_VARINT_LEN).enumerate() {
        let low = u64::from(byte & 0x7f);
        if i == MAX_VARINT_LEN - 1 && byte > 0x01 {
            return Varint::Overlong;
        }
        value |= low << (7 * i);
        if byte & 0x80 == 0 {
            return Varint::Value(value, i + 1);
        }
    }
    if buf.len() >= MAX_VARINT_LEN {
        Varint::Overlong
    } else {
        Varint::Incomplete
    }
}

/// Number of bytes the minimal encoding of `value` takes.
pub(crate) fn len(value: u64) -> usize {
    prost::encoding::encoded_len_varint(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(read(&[0x00]), Varint::Value(0, 1));
        assert_eq!(read(&[0x01]), Varint::Value(1, 1));
        assert_eq!(read(&[0x7f]), Varint::Value(127, 1));
        assert_eq!(read(&[0x80, 0x01]), Varint::Value(128, 2));
        assert_eq!(read(&[0xac, 0x02]), Varint::Value(300, 2));
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(read(&max), Varint::Value(u64::MAX, 10));
        // Non-minimal encodings are valid LEB128 and accepted.
        assert_eq!(read(&[0x81, 0x00]), Varint::Value(1, 2));
    }

    #[test]
    fn incomplete_and_overlong() {
        assert_eq!(read(&[]), Varint::Incomplete);
        assert_eq!(read(&[0x80]), Varint::Incomplete);
        assert_eq!(read(&[0xff; 9]), Varint::Incomplete);
        assert_eq!(read(&[0xff; 10]), Varint::Overlong);
        assert_eq!(read(&[0xff; 11]), Varint::Overlong);
        let overflow = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(read(&overflow), Varint::Overlong);
    }

    #[test]
    fn len_matches_encoding() {
        for v in [
            0u64,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            prost::encoding::encode_varint(v, &mut buf);
            assert_eq!(len(v), buf.len());
            assert_eq!(read(&buf), Varint::Value(v, buf.len()));
        }
    }
}
