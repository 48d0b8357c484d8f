//! The package encoder.

use atbus_proto::FrameMessage;
use bytes::BufMut;
use prost::Message;

use crate::{FrameError, FrameLimits, HASH_LEN, PACKAGE_VERSION, package_hash, varint};

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

fn finish<B: FrameBuf>(buf: &mut B, start: usize) {
    let hash = package_hash(&buf.as_ref()[start..]);
    buf.put_u32_le(hash);
}
