//! The package encoder.

use atbus_proto::frame_message::Body;
use atbus_proto::packet_content::FragmentType;
use atbus_proto::{FrameMessage, MessageHead, PacketContent, PacketData};
use bytes::{BufMut, Bytes};
use prost::Message;
use prost::encoding::{
    WireType, encode_key, encode_varint, encoded_len_varint, int32, int64, key_len,
};

use crate::{FrameError, FrameLimits, HASH_LEN, PACKAGE_VERSION, package_hash, varint};

/// A payload that belongs in an output buffer at byte `at` but is kept out of it: the wire
/// bytes are the buffer up to `at`, then `data`, then the rest of the buffer (up to the next
/// splice). Lets a writer hand a caller's payload to the kernel (`writev`) without copying it
/// into the package ([`encode_packet_spliced`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Splice {
    /// Offset in the buffer where `data` goes (before the byte at `at`).
    pub at: usize,
    /// The bytes that go there.
    pub data: Bytes,
}

/// The wire bytes of `buf` with `splices` (ordered by `at`) put in place, as consecutive
/// non-empty slices. An `at` past the end of `buf` (or before the previous one) counts as the
/// end of `buf` (the previous one).
pub fn spliced_segments<'a>(buf: &'a [u8], splices: &'a [Splice]) -> SplicedSegments<'a> {
    SplicedSegments {
        buf,
        splices,
        from: 0,
        next_is_splice: false,
    }
}

/// Iterator of [`spliced_segments`].
#[derive(Debug, Clone)]
pub struct SplicedSegments<'a> {
    buf: &'a [u8],
    splices: &'a [Splice],
    /// Bytes of `buf` already given out.
    from: usize,
    /// The buffer bytes before `splices[0]` were given: `splices[0]` comes next.
    next_is_splice: bool,
}

impl<'a> Iterator for SplicedSegments<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            let Some((first, rest)) = self.splices.split_first() else {
                let tail = &self.buf[self.from..];
                self.from = self.buf.len();
                return (!tail.is_empty()).then_some(tail);
            };
            if self.next_is_splice {
                self.next_is_splice = false;
                self.splices = rest;
                if !first.data.is_empty() {
                    return Some(&first.data);
                }
                continue;
            }
            let at = first.at.clamp(self.from, self.buf.len());
            let before = &self.buf[self.from..at];
            self.from = at;
            self.next_is_splice = true;
            if !before.is_empty() {
                return Some(before);
            }
        }
    }
}

/// Total wire length of `buf` with `splices` put in place.
pub fn spliced_len(buf: &[u8], splices: &[Splice]) -> usize {
    buf.len() + splices.iter().map(|s| s.data.len()).sum::<usize>()
}

/// Appends the wire bytes of `buf` with `splices` put in place to `out` (one copy of each
/// payload: for writers that need one contiguous buffer).
pub fn flatten_spliced(buf: &[u8], splices: &[Splice], out: &mut Vec<u8>) {
    out.reserve(spliced_len(buf, splices));
    for segment in spliced_segments(buf, splices) {
        out.extend_from_slice(segment);
    }
}

/// A buffer packages can be appended to: writable, readable back (to hash what was written) and
/// able to reserve room once for the exact package size.
pub trait FrameBuf: BufMut + AsRef<[u8]> {
    /// Makes room for at least `additional` more bytes.
    fn reserve_exact_room(&mut self, additional: usize);
}

impl FrameBuf for Vec<u8> {
    fn reserve_exact_room(&mut self, additional: usize) {
        self.reserve(additional);
    }
}

impl FrameBuf for bytes::BytesMut {
    fn reserve_exact_room(&mut self, additional: usize) {
        self.reserve(additional);
    }
}

/// Size of a whole package whose `frame_message` is `frame_len` bytes long.
pub fn package_len(frame_len: usize) -> usize {
    varint::len(PACKAGE_VERSION) + varint::len(frame_len as u64) + frame_len + HASH_LEN
}

/// Size of the package that [`encode`] writes for `frame`.
pub fn encoded_len(frame: &FrameMessage) -> usize {
    package_len(frame.encoded_len())
}

/// Appends one package holding `frame` to `buf`, returning the package size.
///
/// The exact size is computed first and reserved once, so a `Vec` grows at most once.
pub fn encode<B: FrameBuf>(
    frame: &FrameMessage,
    limits: &FrameLimits,
    buf: &mut B,
) -> Result<usize, FrameError> {
    let frame_len = frame.encoded_len();
    check_len(frame_len, limits)?;
    let total = package_len(frame_len);
    reserve(buf, total)?;
    let start = buf.as_ref().len();
    prost::encoding::encode_varint(PACKAGE_VERSION, buf);
    prost::encoding::encode_varint(frame_len as u64, buf);
    // The room was checked above, so the unchecked encoder cannot run out of space; it skips
    // the second whole-message `encoded_len` pass that `Message::encode` would make.
    frame.encode_raw(buf);
    finish(buf, start);
    Ok(total)
}

/// Field number of `head` in `frame_message`.
const FRAME_HEAD: u32 = 1;
/// Field number of the `packet` case of `frame_message.body`.
const FRAME_PACKET: u32 = 7;
/// Field number of `content` in `packet_data`.
const PACKET_CONTENT: u32 = 3;

/// Field number of `fragment` in `packet_content`.
const CONTENT_FRAGMENT: u32 = 1;
/// Field numbers of `packet_type`, `data` and `fragment_flag` in `packet_content.fragment_type`.
const FRAGMENT_TYPE: u32 = 1;
const FRAGMENT_DATA: u32 = 2;
const FRAGMENT_FLAG: u32 = 3;

/// Length of a length-delimited field `tag` whose value is `len` bytes.
fn delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// Whether a fragment has only its scalar fields and data (the common case), which this module
/// encodes without prost's generic per-field checks.
fn is_plain(f: &FragmentType) -> bool {
    f.options.is_none()
        && f.labels.is_empty()
        && f.forward_for.is_none()
        && f.close_reason.is_none()
}

/// Encoded length of a fragment's fields (what prost's `encoded_len` gives).
fn fragment_len(f: &FragmentType) -> usize {
    if !is_plain(f) {
        return f.encoded_len();
    }
    let mut len = 0;
    if f.packet_type != 0 {
        len += int32::encoded_len(FRAGMENT_TYPE, &f.packet_type);
    }
    if !f.data.is_empty() {
        len += delimited_len(FRAGMENT_DATA, f.data.len());
    }
    if f.fragment_flag != 0 {
        len += int32::encoded_len(FRAGMENT_FLAG, &f.fragment_flag);
    }
    len
}

/// Encoded length of a `packet_content` (what prost's `encoded_len` gives).
fn content_len(content: &PacketContent) -> usize {
    content
        .fragment
        .iter()
        .map(|f| delimited_len(CONTENT_FRAGMENT, fragment_len(f)))
        .sum()
}

/// Where fragment data of at least `min` bytes goes instead of into the buffer.
struct SpliceTo<'a> {
    splices: &'a mut Vec<Splice>,
    min: usize,
}

impl SpliceTo<'_> {
    /// Whether the data of fragment `f` is spliced rather than copied.
    fn takes(&self, f: &FragmentType) -> bool {
        f.data.len() >= self.min && is_plain(f)
    }
}

/// Writes a `packet_content` (what prost's `encode_raw` writes), each fragment's length computed
/// once. With `splice`, large plain fragment data is recorded as a [`Splice`] at its place
/// instead of being copied.
fn encode_content<B: FrameBuf>(
    content: &PacketContent,
    buf: &mut B,
    mut splice: Option<&mut SpliceTo<'_>>,
) {
    for f in &content.fragment {
        encode_key(CONTENT_FRAGMENT, WireType::LengthDelimited, buf);
        encode_varint(fragment_len(f) as u64, buf);
        if !is_plain(f) {
            f.encode_raw(buf);
            continue;
        }
        if f.packet_type != 0 {
            int32::encode(FRAGMENT_TYPE, &f.packet_type, buf);
        }
        if !f.data.is_empty() {
            encode_key(FRAGMENT_DATA, WireType::LengthDelimited, buf);
            encode_varint(f.data.len() as u64, buf);
            match splice.as_deref_mut() {
                Some(to) if to.takes(f) => to.splices.push(Splice {
                    at: buf.as_ref().len(),
                    data: f.data.clone(),
                }),
                _ => buf.put_slice(&f.data),
            }
        }
        if f.fragment_flag != 0 {
            int32::encode(FRAGMENT_FLAG, &f.fragment_flag, buf);
        }
    }
}

/// Appends one package holding `frame_message { head, body }`: the same bytes as [`encode`] of
/// that frame, without an owned `FrameMessage` (so a sender keeps one head for every frame).
pub fn encode_parts<B: FrameBuf>(
    head: Option<&MessageHead>,
    body: &Body,
    limits: &FrameLimits,
    buf: &mut B,
) -> Result<usize, FrameError> {
    let head_len = head.map(Message::encoded_len);
    let frame_len = head_len.map_or(0, |len| delimited_len(FRAME_HEAD, len)) + body.encoded_len();
    check_len(frame_len, limits)?;
    let total = package_len(frame_len);
    reserve(buf, total)?;
    let start = buf.as_ref().len();
    encode_varint(PACKAGE_VERSION, buf);
    encode_varint(frame_len as u64, buf);
    if let (Some(head), Some(len)) = (head, head_len) {
        encode_key(FRAME_HEAD, WireType::LengthDelimited, buf);
        encode_varint(len as u64, buf);
        head.encode_raw(buf);
    }
    body.encode(buf);
    finish(buf, start);
    Ok(total)
}

/// Appends one package holding `frame_message { head, packet }` whose `packet.content` is
/// `content`, encoded in place: the same bytes as [`encode`] of that frame with `content` set to
/// `content.encode_to_vec()`, without encoding the content into a buffer of its own first (one
/// payload copy fewer). `packet.content` itself is ignored.
pub fn encode_packet<B: FrameBuf>(
    head: Option<&MessageHead>,
    packet: &PacketData,
    content: &PacketContent,
    limits: &FrameLimits,
    buf: &mut B,
) -> Result<usize, FrameError> {
    encode_packet_inner(head, packet, content, limits, buf, None)
}

/// As [`encode_packet`], but the data of every plain fragment of at least `min_splice` bytes is
/// not copied into `buf`: it is pushed to `splices` (with its offset in `buf`) and the package
/// hash covers it where it belongs. The wire bytes ([`spliced_segments`]) are exactly those
/// [`encode_packet`] writes. Returns the whole package size, spliced bytes included.
pub fn encode_packet_spliced<B: FrameBuf>(
    head: Option<&MessageHead>,
    packet: &PacketData,
    content: &PacketContent,
    limits: &FrameLimits,
    buf: &mut B,
    splices: &mut Vec<Splice>,
    min_splice: usize,
) -> Result<usize, FrameError> {
    let mut to = SpliceTo {
        splices,
        min: min_splice.max(1),
    };
    encode_packet_inner(head, packet, content, limits, buf, Some(&mut to))
}

fn encode_packet_inner<B: FrameBuf>(
    head: Option<&MessageHead>,
    packet: &PacketData,
    content: &PacketContent,
    limits: &FrameLimits,
    buf: &mut B,
    mut splice: Option<&mut SpliceTo<'_>>,
) -> Result<usize, FrameError> {
    let head_len = head.map(Message::encoded_len);
    let content_len = content_len(content);
    // Fields in field-number order, as prost writes them; zero scalars and empty bytes are left
    // out (proto3 defaults).
    let before_content = [(1, packet.stream_id), (2, packet.stream_offset)];
    let after_content_32 = [(4, packet.flags), (5, packet.padding_size)];
    let after_content_64 = [
        (6, packet.timepoint_microseconds),
        (7, packet.packet_number),
        (8, packet.path_id),
    ];
    let len64 = |fields: &[(u32, i64)]| {
        fields
            .iter()
            .filter(|(_, v)| *v != 0)
            .map(|(tag, v)| int64::encoded_len(*tag, v))
            .sum::<usize>()
    };
    let packet_len = len64(&before_content)
        + if content_len > 0 {
            delimited_len(PACKET_CONTENT, content_len)
        } else {
            0
        }
        + after_content_32
            .iter()
            .filter(|(_, v)| *v != 0)
            .map(|(tag, v)| int32::encoded_len(*tag, v))
            .sum::<usize>()
        + len64(&after_content_64);
    let frame_len = head_len.map_or(0, |len| delimited_len(FRAME_HEAD, len))
        + delimited_len(FRAME_PACKET, packet_len);
    check_len(frame_len, limits)?;
    let total = package_len(frame_len);
    let spliced: usize = splice.as_deref().map_or(0, |to| {
        content
            .fragment
            .iter()
            .filter(|f| to.takes(f))
            .map(|f| f.data.len())
            .sum()
    });
    reserve(buf, total - spliced)?;
    let start = buf.as_ref().len();
    let first_splice = splice.as_deref().map_or(0, |to| to.splices.len());
    encode_varint(PACKAGE_VERSION, buf);
    encode_varint(frame_len as u64, buf);
    if let (Some(head), Some(len)) = (head, head_len) {
        encode_key(FRAME_HEAD, WireType::LengthDelimited, buf);
        encode_varint(len as u64, buf);
        head.encode_raw(buf);
    }
    encode_key(FRAME_PACKET, WireType::LengthDelimited, buf);
    encode_varint(packet_len as u64, buf);
    let put64 = |fields: &[(u32, i64)], buf: &mut B| {
        for (tag, v) in fields.iter().filter(|(_, v)| *v != 0) {
            int64::encode(*tag, v, buf);
        }
    };
    put64(&before_content, buf);
    if content_len > 0 {
        encode_key(PACKET_CONTENT, WireType::LengthDelimited, buf);
        encode_varint(content_len as u64, buf);
        encode_content(content, buf, splice.as_deref_mut());
    }
    for (tag, v) in after_content_32.iter().filter(|(_, v)| *v != 0) {
        int32::encode(*tag, v, buf);
    }
    put64(&after_content_64, buf);
    match splice {
        Some(to) if to.splices.len() > first_splice => {
            finish_spliced(buf, start, &to.splices[first_splice..]);
        }
        _ => finish(buf, start),
    }
    Ok(total)
}

/// Appends one package around already-encoded `frame_message` bytes (relays, capture tools).
pub fn encode_raw<B: FrameBuf>(
    frame_bytes: &[u8],
    limits: &FrameLimits,
    buf: &mut B,
) -> Result<usize, FrameError> {
    check_len(frame_bytes.len(), limits)?;
    let total = package_len(frame_bytes.len());
    reserve(buf, total)?;
    let start = buf.as_ref().len();
    prost::encoding::encode_varint(PACKAGE_VERSION, buf);
    prost::encoding::encode_varint(frame_bytes.len() as u64, buf);
    buf.put_slice(frame_bytes);
    finish(buf, start);
    Ok(total)
}

fn check_len(frame_len: usize, limits: &FrameLimits) -> Result<(), FrameError> {
    if frame_len > limits.max_frame_length {
        return Err(FrameError::FrameTooLong {
            length: frame_len as u64,
            limit: limits.max_frame_length,
        });
    }
    Ok(())
}

/// Reserves room for `total` bytes and checks that the buffer can take them, so nothing is
/// written when a bounded buffer is too small.
fn reserve<B: FrameBuf>(buf: &mut B, total: usize) -> Result<(), FrameError> {
    buf.reserve_exact_room(total);
    let remaining = buf.remaining_mut();
    if remaining < total {
        return Err(FrameError::BufferTooSmall {
            needed: total,
            remaining,
        });
    }
    Ok(())
}

/// Appends the hash of the package that starts at `start` in `buf`, with `splices` in place.
fn finish_spliced<B: FrameBuf>(buf: &mut B, start: usize, splices: &[Splice]) {
    let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
    let mut from = start;
    for s in splices {
        hasher.update(&buf.as_ref()[from..s.at]);
        hasher.update(&s.data);
        from = s.at;
    }
    hasher.update(&buf.as_ref()[from..]);
    // Truncation to the low half is the definition of the wire hash.
    buf.put_u32_le(hasher.digest() as u32);
}

fn finish<B: FrameBuf>(buf: &mut B, start: usize) {
    let hash = package_hash(&buf.as_ref()[start..]);
    buf.put_u32_le(hash);
}
