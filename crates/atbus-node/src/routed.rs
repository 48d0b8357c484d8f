//! Frames a router-mode node hands to its owner unread, and the head rewriting relays do.
//!
//! A relay must not read or change a frame's body (the `content` of a packet may be encrypted
//! end to end), and must keep fields it does not know. So it never decodes the whole
//! `frame_message`: [`inspect_frame`] walks the top-level fields of the encoded bytes, decodes
//! only `head` (field 1) and notes which body field is present, and [`write_package_with_head`]
//! writes a package whose frame is the new head followed by every other field byte for byte.

use atbus_frame::{FrameLimits, PACKAGE_VERSION, package_hash, package_len};
use atbus_proto::MessageHead;
use std::ops::Range;

use bytes::{BufMut, Bytes};
use prost::Message;

use crate::types::LinkId;

/// Which body a `frame_message` carries (its `oneof body` field number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BodyKind {
    /// No body field.
    None,
    /// `ping` (5).
    Ping,
    /// `pong` (6).
    Pong,
    /// `packet` (7).
    Packet,
    /// `acknowledge` (8).
    Acknowledge,
    /// `handshake` (9): link-level, never forwarded.
    Handshake,
    /// `link_close` (10): link-level, never forwarded.
    LinkClose,
    /// `forward_error` (11).
    ForwardError,
    /// `relayed_handshake` (12): end to end, forwarded like session frames.
    RelayedHandshake,
    /// A field number this version does not know.
    Unknown(u32),
}

impl BodyKind {
    fn from_field(number: u32) -> Self {
        match number {
            5 => Self::Ping,
            6 => Self::Pong,
            7 => Self::Packet,
            8 => Self::Acknowledge,
            9 => Self::Handshake,
            10 => Self::LinkClose,
            11 => Self::ForwardError,
            12 => Self::RelayedHandshake,
            n => Self::Unknown(n),
        }
    }

    /// Whether the body concerns only the link it arrived on (handshake, link close).
    pub fn is_link_level(self) -> bool {
        matches!(self, Self::Handshake | Self::LinkClose)
    }
}

/// Why the top level of a `frame_message` could not be walked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RawFrameError {
    /// A tag, length or value runs past the end of the frame.
    #[error("frame truncated at byte {0}")]
    Truncated(usize),
    /// Field number 0 or a wire type protobuf 3 does not use (groups, 6, 7).
    #[error("invalid field key {0:#x}")]
    BadKey(u64),
    /// `head` appears more than once (protobuf would merge them; relays refuse).
    #[error("message_head appears more than once")]
    DuplicateHead,
    /// `head` is not a valid `message_head`.
    #[error("message_head does not decode: {0}")]
    BadHead(String),
}

/// The top level of a `frame_message`, as a relay sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameOutline {
    /// The decoded head, if present.
    pub head: Option<MessageHead>,
    /// Where the head field (key, length and value) lies in the frame bytes.
    pub head_span: Option<Range<usize>>,
    /// The last body field present (protobuf: the last member of a oneof wins).
    pub body: BodyKind,
}

/// A frame that arrived on a link of a router-mode node, handed over unread
/// (see [`crate::Node::poll_routed`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RoutedFrame {
    /// The link it arrived on.
    pub link: LinkId,
    /// Its head and body kind, or why the top level of the frame does not walk (the package's
    /// hash was right, so only this frame is bad).
    pub outline: Result<FrameOutline, RawFrameError>,
    /// The encoded `frame_message`, as received.
    pub frame: Bytes,
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, RawFrameError> {
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        let byte = *buf.get(*pos).ok_or(RawFrameError::Truncated(*pos))?;
        *pos += 1;
        if shift == 63 && byte > 1 {
            return Err(RawFrameError::Truncated(*pos));
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(RawFrameError::Truncated(*pos))
}

/// Calls `f(field_number, field_start, value_start, end)` for each top-level field.
fn walk(
    frame: &[u8],
    mut f: impl FnMut(u32, usize, usize, usize) -> Result<(), RawFrameError>,
) -> Result<(), RawFrameError> {
    let mut pos = 0;
    while pos < frame.len() {
        let start = pos;
        let key = read_varint(frame, &mut pos)?;
        let number = key >> 3;
        if number == 0 || number > u64::from(u32::MAX >> 3) {
            return Err(RawFrameError::BadKey(key));
        }
        let value_start;
        match key & 7 {
            0 => {
                read_varint(frame, &mut pos)?;
                value_start = start;
            }
            1 | 5 => {
                let n = if key & 7 == 1 { 8 } else { 4 };
                value_start = pos;
                pos = pos
                    .checked_add(n)
                    .filter(|&e| e <= frame.len())
                    .ok_or(RawFrameError::Truncated(pos))?;
            }
            2 => {
                let len = read_varint(frame, &mut pos)?;
                value_start = pos;
                pos = usize::try_from(len)
                    .ok()
                    .and_then(|l| pos.checked_add(l))
                    .filter(|&e| e <= frame.len())
                    .ok_or(RawFrameError::Truncated(pos))?;
            }
            _ => return Err(RawFrameError::BadKey(key)),
        }
        f(number as u32, start, value_start, pos)?;
    }
    Ok(())
}

/// Walks the top level of an encoded `frame_message`: decodes `head`, notes the body kind,
/// never looks into the body.
pub fn inspect_frame(frame: &[u8]) -> Result<FrameOutline, RawFrameError> {
    let mut head = None;
    let mut head_span = None;
    let mut body = BodyKind::None;
    walk(frame, |number, start, value_start, end| {
        if number == 1 {
            if head.is_some() {
                return Err(RawFrameError::DuplicateHead);
            }
            head_span = Some(start..end);
            let bytes = frame.get(value_start..end).unwrap_or_default();
            head = Some(
                MessageHead::decode(bytes).map_err(|e| RawFrameError::BadHead(e.to_string()))?,
            );
        } else if number >= 5 {
            body = BodyKind::from_field(number);
        }
        Ok(())
    })?;
    Ok(FrameOutline {
        head,
        head_span,
        body,
    })
}

/// The fields after the head of a frame from an established session link, when the head is in
/// the plain shape and names `peer` (or no one) as its source: the head is checked in place,
/// without decoding it into owned strings, because the session never reads it.
///
/// `None` when the frame is anything else (a head that is not the first field, appears twice,
/// has a field of the wrong wire type or text that is not UTF-8, names another source, or a top
/// level that does not walk): the caller then decodes the whole frame as before, which reports
/// the same errors and the same foreign source.
pub(crate) fn session_frame_rest(frame: &Bytes, peer: &str) -> Option<Bytes> {
    let mut head: Option<(usize, usize, usize)> = None;
    let mut heads = 0;
    walk(frame, |number, start, value_start, end| {
        if number == 1 {
            heads += 1;
            head = Some((start, value_start, end));
        }
        Ok(())
    })
    .ok()?;
    let Some((start, value_start, end)) = head else {
        return Some(frame.clone());
    };
    // Field 1, length-delimited, first and only once.
    if heads != 1 || start != 0 || frame.first() != Some(&0x0a) {
        return None;
    }
    let source = plain_head_source(frame.get(value_start..end)?)?;
    if !source.is_empty() && source != peer.as_bytes() {
        return None;
    }
    Some(frame.slice(end..))
}

/// The `source` of an encoded `message_head` whose fields all have the wire types protobuf
/// decoding accepts and whose strings are UTF-8; `None` otherwise.
fn plain_head_source(head: &[u8]) -> Option<&[u8]> {
    let mut source: &[u8] = &[];
    let mut pos = 0;
    while pos < head.len() {
        let key = read_varint(head, &mut pos).ok()?;
        let number = key >> 3;
        match (number, key & 7) {
            (0, _) => return None,
            // source, destination, forward_for_source: strings.
            (1..=3, 2) => {
                let len = usize::try_from(read_varint(head, &mut pos).ok()?).ok()?;
                let value = head.get(pos..pos.checked_add(len)?)?;
                std::str::from_utf8(value).ok()?;
                if number == 1 {
                    // Protobuf: the last occurrence wins.
                    source = value;
                }
                pos += len;
            }
            // forward_for_connection_id, hop_count: varints.
            (4 | 5, 0) => {
                read_varint(head, &mut pos).ok()?;
            }
            (1..=5, _) => return None,
            // Unknown fields are skipped, as protobuf decoding does.
            (_, 0) => {
                read_varint(head, &mut pos).ok()?;
            }
            (_, 1) => pos = pos.checked_add(8).filter(|&e| e <= head.len())?,
            (_, 5) => pos = pos.checked_add(4).filter(|&e| e <= head.len())?,
            (_, 2) => {
                let len = usize::try_from(read_varint(head, &mut pos).ok()?).ok()?;
                pos = pos.checked_add(len).filter(|&e| e <= head.len())?;
            }
            _ => return None,
        }
    }
    Some(source)
}

/// Size of the package [`write_package_with_head`] writes.
pub fn package_len_with_head(frame: &[u8], head: &MessageHead) -> Result<usize, RawFrameError> {
    let outline = inspect_frame(frame)?;
    Ok(package_len(frame_len_replacing(
        frame.len(),
        outline.head_span.as_ref(),
        head,
    )))
}

/// Length of `frame` with the field at `span` left out and `head` written as field 1.
fn frame_len_replacing(frame_len: usize, span: Option<&Range<usize>>, head: &MessageHead) -> usize {
    let old = span.map_or(0, |s| s.end.saturating_sub(s.start));
    let head_len = head.encoded_len();
    frame_len.saturating_sub(old)
        + 1
        + prost::encoding::encoded_len_varint(head_len as u64)
        + head_len
}

/// Why a package could not be written with a new head.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RewriteError {
    /// The frame's top level does not walk.
    #[error(transparent)]
    Frame(#[from] RawFrameError),
    /// The rewritten frame exceeds the frame length limit.
    #[error("rewritten frame of {length} bytes exceeds the limit of {limit}")]
    TooLong {
        /// Frame length.
        length: usize,
        /// Limit.
        limit: usize,
    },
}

/// Appends one package to `out`: `head` as field 1, then every other top-level field of
/// `frame` byte for byte (the old head is left out). Returns the package size.
pub fn write_package_with_head(
    frame: &[u8],
    head: &MessageHead,
    limits: &FrameLimits,
    out: &mut Vec<u8>,
) -> Result<usize, RewriteError> {
    let outline = inspect_frame(frame)?;
    write_package_replacing_head(frame, outline.head_span, head, limits, out)
}

/// As [`write_package_with_head`], with the old head's place known from [`inspect_frame`]
/// (`FrameOutline::head_span`), so the frame is not walked again: the relay's per-frame path.
pub fn write_package_replacing_head(
    frame: &[u8],
    head_span: Option<Range<usize>>,
    head: &MessageHead,
    limits: &FrameLimits,
    out: &mut Vec<u8>,
) -> Result<usize, RewriteError> {
    let span = head_span.filter(|s| s.start <= s.end && s.end <= frame.len());
    let frame_len = frame_len_replacing(frame.len(), span.as_ref(), head);
    if frame_len > limits.max_frame_length {
        return Err(RewriteError::TooLong {
            length: frame_len,
            limit: limits.max_frame_length,
        });
    }
    let total = package_len(frame_len);
    out.reserve(total);
    let start = out.len();
    prost::encoding::encode_varint(PACKAGE_VERSION, out);
    prost::encoding::encode_varint(frame_len as u64, out);
    prost::encoding::encode_varint(0x0a, out);
    prost::encoding::encode_varint(head.encoded_len() as u64, out);
    head.encode_raw(out);
    match span {
        Some(s) => {
            out.extend_from_slice(&frame[..s.start]);
            out.extend_from_slice(&frame[s.end..]);
        }
        None => out.extend_from_slice(frame),
    }
    let hash = package_hash(&out[start..]);
    out.put_u32_le(hash);
    debug_assert_eq!(out.len() - start, total);
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use atbus_proto::{FrameMessage, PacketData, frame_message::Body};

    fn frame(head: Option<MessageHead>) -> FrameMessage {
        FrameMessage {
            head,
            body: Some(Body::Packet(PacketData {
                stream_id: 3,
                stream_offset: 100,
                content: Bytes::from_static(b"opaque, maybe encrypted"),
                packet_number: 7,
                ..PacketData::default()
            })),
        }
    }

    #[test]
    fn rewriting_the_head_keeps_the_body_byte_for_byte() {
        let head = MessageHead {
            source: "a".into(),
            destination: "b".into(),
            ..MessageHead::default()
        };
        let original = frame(Some(head.clone())).encode_to_vec();
        let outline = inspect_frame(&original).unwrap();
        assert_eq!(outline.head.as_ref(), Some(&head));
        assert_eq!(outline.body, BodyKind::Packet);
        let new_head = MessageHead {
            forward_for_source: "a".into(),
            forward_for_connection_id: 42,
            hop_count: 1,
            ..head
        };
        let mut out = Vec::new();
        let n = write_package_with_head(&original, &new_head, &FrameLimits::default(), &mut out)
            .unwrap();
        assert_eq!(n, out.len());
        assert_eq!(
            package_len_with_head(&original, &new_head).unwrap(),
            out.len()
        );
        let mut decoder = atbus_frame::StreamDecoder::new(FrameLimits::default());
        decoder.feed(&out);
        let decoded = decoder.next_frame().unwrap().unwrap();
        assert_eq!(decoded, frame(Some(new_head)));
    }

    #[test]
    fn a_frame_without_head_gets_one() {
        let original = frame(None).encode_to_vec();
        assert_eq!(inspect_frame(&original).unwrap().head, None);
        let head = MessageHead {
            source: "x".into(),
            ..MessageHead::default()
        };
        let mut out = Vec::new();
        write_package_with_head(&original, &head, &FrameLimits::default(), &mut out).unwrap();
        let mut decoder = atbus_frame::StreamDecoder::new(FrameLimits::default());
        decoder.feed(&out);
        assert_eq!(decoder.next_frame().unwrap().unwrap(), frame(Some(head)));
    }

    #[test]
    fn session_frames_skip_a_plain_head_of_the_peer() {
        let head = |source: &str| MessageHead {
            source: source.into(),
            destination: "b".into(),
            hop_count: 2,
            ..MessageHead::default()
        };
        let body_only = frame(None).encode_to_vec();
        for source in ["a", ""] {
            let bytes = Bytes::from(frame(Some(head(source))).encode_to_vec());
            let rest = session_frame_rest(&bytes, "a").expect("plain head");
            assert_eq!(rest[..], body_only[..]);
        }
        // No head at all: the frame as it is.
        let bare = Bytes::from(body_only.clone());
        assert_eq!(session_frame_rest(&bare, "a"), Some(bare.clone()));
        // Another source, a head after the body, two heads, a string field sent as a varint,
        // text that is not UTF-8, and a top level that does not walk: the full decode decides.
        let other = Bytes::from(frame(Some(head("c"))).encode_to_vec());
        assert_eq!(session_frame_rest(&other, "a"), None);
        let mut late = body_only.clone();
        late.extend_from_slice(&[0x0a, 3, 0x0a, 1, b'a']);
        assert_eq!(session_frame_rest(&Bytes::from(late), "a"), None);
        let mut twice = vec![0x0a, 0, 0x0a, 0];
        twice.extend_from_slice(&body_only);
        assert_eq!(session_frame_rest(&Bytes::from(twice), "a"), None);
        for bad_head in [&[0x08, 1][..], &[0x12, 1, 0xff], &[0x0a, 5, b'a']] {
            let mut f = vec![0x0a, bad_head.len() as u8];
            f.extend_from_slice(bad_head);
            f.extend_from_slice(&body_only);
            assert_eq!(
                session_frame_rest(&Bytes::from(f), "a"),
                None,
                "{bad_head:?}"
            );
        }
        assert_eq!(
            session_frame_rest(&Bytes::from_static(&[0x0a, 5, 1]), "a"),
            None
        );
        // Unknown head fields of every wire type are skipped, as protobuf does.
        let mut f = vec![0x0a, 0];
        let unknown = [
            0x30, 1, 0x39, 0, 0, 0, 0, 0, 0, 0, 0, 0x42, 1, 0, 0x4d, 0, 0, 0, 0,
        ];
        f[1] = (unknown.len() + 3) as u8;
        f.extend_from_slice(&[0x0a, 1, b'a']);
        f.extend_from_slice(&unknown);
        f.extend_from_slice(&body_only);
        let rest = session_frame_rest(&Bytes::from(f.clone()), "a").expect("unknown fields");
        assert_eq!(rest[..], body_only[..]);
        // What the fast path accepts, protobuf decodes to the same body.
        let full = FrameMessage::decode(&f[..]).unwrap();
        assert_eq!(full.head.map(|h| h.source), Some("a".into()));
        assert_eq!(FrameMessage::decode(rest).unwrap().body, full.body);
    }

    #[test]
    fn malformed_tops_are_typed_errors() {
        assert_eq!(
            inspect_frame(&[0x0a, 5, 1]),
            Err(RawFrameError::Truncated(2))
        );
        assert!(matches!(
            inspect_frame(&[0x00]),
            Err(RawFrameError::BadKey(0))
        ));
        assert!(matches!(
            inspect_frame(&[0x0b]),
            Err(RawFrameError::BadKey(_))
        ));
        assert_eq!(
            inspect_frame(&[0x0a, 0, 0x0a, 0]),
            Err(RawFrameError::DuplicateHead)
        );
        assert!(matches!(
            inspect_frame(&[0x0a, 2, 0x08, 0x80]),
            Err(RawFrameError::BadHead(_))
        ));
    }
}
