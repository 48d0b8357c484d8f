//! Typed errors of the package codec.

/// Why a package could not be encoded or decoded.
///
/// On a byte stream every decode error is final: the stream has lost its package boundaries and
/// the link must be closed (the decoder refuses further input). On UDP only the datagram is lost.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A header varint is longer than ten bytes or overflows 64 bits.
    #[error("the {field} varint is longer than 10 bytes or overflows 64 bits")]
    OverlongVarint {
        /// Which header field: `version` or `length`.
        field: &'static str,
    },
    /// The package declares a version this implementation does not speak.
    #[error("unsupported package version {version} (this implementation speaks 1)")]
    UnsupportedVersion {
        /// The version found on the wire.
        version: u64,
    },
    /// The declared `frame_message` length exceeds the configured limit.
    #[error("frame length {length} exceeds the limit of {limit} bytes")]
    FrameTooLong {
        /// The declared (or, when encoding, actual) length.
        length: u64,
        /// The configured limit.
        limit: usize,
    },
    /// A datagram (or a whole input) ends inside a package.
    #[error("package truncated: {needed} bytes needed, {available} available")]
    Truncated {
        /// Bytes the package needs from its start (as far as the header tells).
        needed: u64,
        /// Bytes that were there.
        available: usize,
    },
    /// The hash does not match the bytes it covers.
    #[error("package hash mismatch: wire says {wire:#010x}, bytes hash to {computed:#010x}")]
    HashMismatch {
        /// The hash written in the package.
        wire: u32,
        /// The hash of the bytes received.
        computed: u32,
    },
    /// The `frame_message` bytes are not valid protobuf.
    #[error("frame_message does not decode: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// The output buffer cannot take the whole package (nothing was written).
    #[error("output buffer too small: the package needs {needed} bytes, {remaining} fit")]
    BufferTooSmall {
        /// Size of the whole package.
        needed: usize,
        /// Bytes the buffer could still take.
        remaining: usize,
    },
    /// A datagram carried no package at all.
    #[error("empty datagram")]
    EmptyDatagram,
    /// The byte stream already failed; its package boundaries are lost.
    #[error("the byte stream already failed and cannot be resynchronised")]
    StreamFailed,
}
