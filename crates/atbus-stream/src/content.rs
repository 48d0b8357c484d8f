//! Decoding a received `packet_content` into the fragments the session stores.
//!
//! Nearly every fragment on the wire carries only `packet_type`, `data` and `fragment_flag`. Those
//! are read here directly, without building a `FragmentType` (and its label map) per fragment;
//! anything else (labels, options, unknown fields, an irregular encoding, an error) falls back to
//! prost for the whole content, so the result is always what prost would decode.

use atbus_proto::{PacketContent, fragment_flags, packet_content::FragmentType};
use bytes::Bytes;
use prost::Message;

use crate::reassembly::MessageMeta;

/// One received fragment, as the reassembler takes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReceivedFragment {
    /// The fragment's bytes (a slice of the received buffer).
    pub data: Bytes,
    /// `HAS_MORE` is set: the message continues in the next fragment.
    pub has_more: bool,
    /// Metadata on the fragment, if any field of it is set.
    pub meta: Option<MessageMeta>,
}

impl From<FragmentType> for ReceivedFragment {
    fn from(f: FragmentType) -> Self {
        let meta = (f.packet_type != 0 || !f.labels.is_empty() || f.options.is_some()).then(|| {
            MessageMeta {
                packet_type: f.packet_type,
                labels: f.labels,
                options: f.options,
            }
        });
        Self {
            data: f.data,
            has_more: f.fragment_flag & fragment_flags::HAS_MORE != 0,
            meta,
        }
    }
}

/// Key of `packet_content.fragment` (field 1, length-delimited).
const KEY_FRAGMENT: u64 = 1 << 3 | 2;
/// Keys of `fragment_type.packet_type` (1, varint), `data` (2, length-delimited) and
/// `fragment_flag` (3, varint).
const KEY_TYPE: u64 = 1 << 3;
const KEY_DATA: u64 = 2 << 3 | 2;
const KEY_FLAG: u64 = 3 << 3;

/// Decodes `content` into `out` (cleared first); the same fragments as prost's decode.
pub(crate) fn decode_fragments(
    content: &Bytes,
    out: &mut Vec<ReceivedFragment>,
) -> Result<(), prost::DecodeError> {
    out.clear();
    if decode_plain(content, out).is_none() {
        out.clear();
        let decoded = PacketContent::decode(content.clone())?;
        out.extend(decoded.fragment.into_iter().map(ReceivedFragment::from));
    }
    Ok(())
}

/// The direct reader: `None` as soon as anything is not a plain, well-formed fragment.
fn decode_plain(content: &Bytes, out: &mut Vec<ReceivedFragment>) -> Option<()> {
    let buf = &content[..];
    let mut pos = 0;
    while pos < buf.len() {
        if varint(buf, &mut pos)? != KEY_FRAGMENT {
            return None;
        }
        let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
        let end = pos.checked_add(len).filter(|&end| end <= buf.len())?;
        let (mut packet_type, mut flag, mut data) = (0i32, 0i32, 0..0);
        while pos < end {
            // Truncation to 32 bits is how protobuf reads an int32 from a varint.
            match varint(buf, &mut pos)? {
                KEY_TYPE => packet_type = varint(buf, &mut pos)? as i32,
                KEY_FLAG => flag = varint(buf, &mut pos)? as i32,
                KEY_DATA => {
                    let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                    let data_end = pos.checked_add(len).filter(|&e| e <= end)?;
                    data = pos..data_end;
                    pos = data_end;
                }
                _ => return None,
            }
        }
        if pos != end {
            return None;
        }
        out.push(ReceivedFragment {
            data: content.slice(data),
            has_more: flag & fragment_flags::HAS_MORE != 0,
            meta: (packet_type != 0).then(|| MessageMeta {
                packet_type,
                ..MessageMeta::default()
            }),
        });
    }
    Some(())
}

/// Reads a varint at `pos`; `None` past the end or for one longer than ten bytes or above
/// `u64::MAX` (left to prost to report).
fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let byte = *buf.get(*pos + i)?;
        if i == 9 && byte > 1 {
            return None;
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *pos += i + 1;
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use atbus_proto::strategies;
    use proptest::prelude::*;

    /// What prost decodes, converted the way the session converts it.
    fn by_prost(content: &Bytes) -> Result<Vec<ReceivedFragment>, String> {
        PacketContent::decode(content.clone())
            .map(|c| c.fragment.into_iter().map(ReceivedFragment::from).collect())
            .map_err(|e| e.to_string())
    }

    fn direct(content: &Bytes) -> Result<Vec<ReceivedFragment>, String> {
        let mut out = vec![ReceivedFragment {
            data: Bytes::from_static(b"stale"),
            has_more: true,
            meta: None,
        }];
        decode_fragments(content, &mut out).map_err(|e| e.to_string())?;
        Ok(out)
    }

    #[test]
    fn plain_fragments_share_the_buffer() {
        let content = PacketContent {
            fragment: vec![
                FragmentType {
                    data: Bytes::from_static(b"hello"),
                    ..Default::default()
                },
                FragmentType {
                    packet_type: 3,
                    data: Bytes::from_static(b"wor"),
                    fragment_flag: fragment_flags::HAS_MORE,
                    ..Default::default()
                },
            ],
        };
        let wire = Bytes::from(content.encode_to_vec());
        let mut out = Vec::new();
        decode_fragments(&wire, &mut out).expect("valid");
        assert_eq!(Ok(out.clone()), by_prost(&wire));
        assert_eq!(out.len(), 2);
        assert!(wire.as_ptr_range().contains(&out[0].data.as_ptr()));
        assert_eq!(out[1].meta.as_ref().map(|m| m.packet_type), Some(3));
        assert!(out[1].has_more && !out[0].has_more);
    }

    #[test]
    fn irregular_encodings_match_prost() {
        let cases: &[&[u8]] = &[
            // Repeated data field: the last one wins.
            &[
                0x0a, 0x08, 0x12, 0x01, b'a', 0x12, 0x02, b'b', b'c', 0x18, 0x01,
            ],
            // Overlong (non-canonical) varint for the type.
            &[0x0a, 0x03, 0x08, 0x81, 0x00],
            // A negative type: ten-byte varint, truncated to 32 bits.
            &[
                0x0a, 0x0b, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
            // An unknown field inside a fragment.
            &[0x0a, 0x05, 0x12, 0x01, b'x', 0x40, 0x07],
            // An unknown field in the content.
            &[0x10, 0x01, 0x0a, 0x03, 0x12, 0x01, b'y'],
            // Truncated fragment, truncated data, wrong wire type, eleven-byte varint.
            &[0x0a, 0x05, 0x12, 0x01],
            &[0x0a, 0x03, 0x12, 0x05, b'z'],
            &[0x0a, 0x02, 0x0a, 0x00],
            &[
                0x0a, 0x0c, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
            &[],
        ];
        for case in cases {
            let wire = Bytes::from_static(case);
            assert_eq!(direct(&wire), by_prost(&wire), "{case:02x?}");
        }
    }

    proptest! {
        #[test]
        fn encoded_content_matches_prost(content in strategies::packet_content(200), plain in any::<bool>()) {
            let mut content = content;
            if plain {
                content.fragment.iter_mut().for_each(|f| f.labels.clear());
            }
            let wire = Bytes::from(content.encode_to_vec());
            prop_assert_eq!(direct(&wire), by_prost(&wire));
        }

        #[test]
        fn any_bytes_match_prost(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let wire = Bytes::from(data);
            prop_assert_eq!(direct(&wire), by_prost(&wire));
        }

        #[test]
        fn damaged_content_matches_prost(
            content in strategies::packet_content(40),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = content.encode_to_vec();
            if !bytes.is_empty() {
                for (at, value) in flips {
                    let i = at.index(bytes.len());
                    bytes[i] = value;
                }
            }
            let wire = Bytes::from(bytes);
            prop_assert_eq!(direct(&wire), by_prost(&wire));
        }
    }
}
