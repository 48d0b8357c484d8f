//! Layer 1 of libatbus-rs: package framing.
//!
//! A package is `varint version | varint length | frame_message (length bytes) | hash (4 bytes)`,
//! where `version` is 1 and the hash is XXH3-64 (seed 0) of every byte before it, truncated to
//! its low 32 bits and written little-endian. Over TCP and Unix sockets packages follow each other
//! on the byte stream ([`StreamDecoder`]); over UDP one datagram holds one or more whole packages
//! ([`DatagramDecoder`]). Nothing here does I/O: bytes in, frames out.
//!
//! ```
//! use atbus_frame::{FrameLimits, StreamDecoder, encode};
//! use atbus_proto::{FrameMessage, PingData, frame_message::Body};
//!
//! let limits = FrameLimits::default();
//! let ping = FrameMessage {
//!     head: None,
//!     body: Some(Body::Ping(PingData { ping_id: 7, timepoint_microseconds: 1_000 })),
//! };
//! let mut wire = Vec::new();
//! encode(&ping, &limits, &mut wire).unwrap();
//! encode(&ping, &limits, &mut wire).unwrap();
//!
//! // A byte stream may arrive in any split: feed what was read, pull whole frames.
//! let mut decoder = StreamDecoder::new(limits);
//! let mut frames = Vec::new();
//! for chunk in wire.chunks(3) {
//!     decoder.feed(chunk);
//!     while let Some(frame) = decoder.next_frame().unwrap() {
//!         frames.push(frame);
//!     }
//! }
//! assert_eq!(frames, vec![ping.clone(), ping]);
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod decode;
mod encode;
mod error;
mod varint;

pub use decode::{DatagramDecoder, RawPackage, StreamDecoder, decode_frame, parse_package};
pub use encode::{
    FrameBuf, Splice, SplicedSegments, encode, encode_packet, encode_packet_spliced, encode_parts,
    encode_raw, encoded_len, flatten_spliced, package_len, spliced_len, spliced_segments,
};
pub use error::FrameError;

/// The package version this crate reads and writes.
pub const PACKAGE_VERSION: u64 = atbus_proto::PROTOCOL_VERSION;

/// Size of the trailing hash in bytes.
pub const HASH_LEN: usize = 4;

/// Longest a LEB128 varint of a `u64` can be.
pub const MAX_VARINT_LEN: usize = 10;

/// Default limit on the length of one `frame_message`: 1 MiB.
///
/// Sessions cut messages into fragments sized to each path's MTU, so real frames are far smaller;
/// the limit bounds what a peer can make a decoder buffer.
pub const DEFAULT_MAX_FRAME_LENGTH: usize = 1024 * 1024;

/// Default payload limit of one UDP datagram on IPv4 paths: 576 − 20 (IPv4) − 8 (UDP).
pub const UDP_IPV4_SAFE_PAYLOAD: usize = 548;

/// Default payload limit of one UDP datagram on IPv6 paths: 1280 − 40 (IPv6) − 8 (fragment) − 8
/// (UDP).
pub const UDP_IPV6_SAFE_PAYLOAD: usize = 1224;

/// Limits applied by encoders and decoders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest `frame_message` length accepted or produced, in bytes.
    pub max_frame_length: usize,
}

impl Default for FrameLimits {
    fn default() -> Self {
        Self {
            max_frame_length: DEFAULT_MAX_FRAME_LENGTH,
        }
    }
}

impl FrameLimits {
    /// Largest whole package these limits allow, header and hash included.
    pub fn max_package_len(&self) -> usize {
        package_len(self.max_frame_length)
    }
}

/// The package hash: XXH3-64 (seed 0) of `bytes`, low 32 bits.
pub fn package_hash(bytes: &[u8]) -> u32 {
    // Truncation to the low half is the definition of the wire hash.
    xxhash_rust::xxh3::xxh3_64(bytes) as u32
}

#[doc(hidden)]
pub mod fuzz_targets;
