//! Package decoders: byte streams and whole datagrams.

use atbus_proto::FrameMessage;
use bytes::{Buf, Bytes, BytesMut};
use prost::Message;

use crate::varint::{self, Varint};
use crate::{FrameError, FrameLimits, HASH_LEN, PACKAGE_VERSION, package_hash};

/// One package whose header and hash checked out; the `frame_message` is still encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPackage {
    /// The package version (always [`PACKAGE_VERSION`] today).
    pub version: u64,
    /// The encoded `frame_message`, sharing the input buffer.
    pub frame: Bytes,
    /// Bytes the whole package took on the wire.
    pub wire_len: usize,
}

impl RawPackage {
    /// Decodes the `frame_message`; `bytes` fields share this package's buffer.
    pub fn decode(&self) -> Result<FrameMessage, FrameError> {
        decode_frame(self.frame.clone())
    }

    /// Decodes the `frame_message`, handing this package's buffer to it without another
    /// reference count round trip.
    #[inline]
    pub fn into_frame(self) -> Result<FrameMessage, FrameError> {
        decode_frame(self.frame)
    }
}

/// Decodes `frame_message` bytes; `bytes` fields share `frame`'s buffer (no payload copy).
#[inline]
pub fn decode_frame(frame: Bytes) -> Result<FrameMessage, FrameError> {
    // Merging into a default message keeps the (large) `FrameMessage` in one place instead of
    // moving it through `Result` conversions.
    let mut message = FrameMessage::default();
    match message.merge(frame) {
        Ok(()) => Ok(message),
        Err(err) => Err(FrameError::Protobuf(err)),
    }
}

/// Where the header parse ended.
enum Header {
    /// More bytes are needed; the total package length if already known.
    Incomplete(Option<u64>),
    /// Header length and frame length.
    Complete { header_len: usize, frame_len: usize },
}

fn parse_header(buf: &[u8], limits: &FrameLimits) -> Result<Header, FrameError> {
    let (version, version_len) = match varint::read(buf) {
        Varint::Value(v, n) => (v, n),
        Varint::Incomplete => return Ok(Header::Incomplete(None)),
        Varint::Overlong => return Err(FrameError::OverlongVarint { field: "version" }),
    };
    if version != PACKAGE_VERSION {
        return Err(FrameError::UnsupportedVersion { version });
    }
    let (length, length_len) = match varint::read(&buf[version_len..]) {
        Varint::Value(v, n) => (v, n),
        Varint::Incomplete => return Ok(Header::Incomplete(None)),
        Varint::Overlong => return Err(FrameError::OverlongVarint { field: "length" }),
    };
    if length > limits.max_frame_length as u64 {
        return Err(FrameError::FrameTooLong {
            length,
            limit: limits.max_frame_length,
        });
    }
    // `length` fits the limit, itself a usize: no overflow below.
    let frame_len = length as usize;
    let header_len = version_len + length_len;
    if buf.len() < header_len + frame_len + HASH_LEN {
        return Ok(Header::Incomplete(Some(
            (header_len + frame_len + HASH_LEN) as u64,
        )));
    }
    Ok(Header::Complete {
        header_len,
        frame_len,
    })
}

fn check_hash(package: &[u8]) -> Result<(), FrameError> {
    let (covered, tail) = package.split_at(package.len() - HASH_LEN);
    let wire = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    let computed = package_hash(covered);
    if wire != computed {
        return Err(FrameError::HashMismatch { wire, computed });
    }
    Ok(())
}

/// Parses the package at the front of `input` without consuming it.
///
/// `Ok(None)` means `input` ends inside the package (a byte stream needs more bytes). The
/// returned package's `frame` shares `input`'s buffer.
pub fn parse_package(
    input: &Bytes,
    limits: &FrameLimits,
) -> Result<Option<RawPackage>, FrameError> {
    Ok(
        check_package(input, limits)?.map(|(header_len, frame_len)| RawPackage {
            version: PACKAGE_VERSION,
            frame: input.slice(header_len..header_len + frame_len),
            wire_len: header_len + frame_len + HASH_LEN,
        }),
    )
}

/// Header and hash check of the package at the front of `input`: header and frame lengths, or
/// `None` when `input` ends inside the package.
fn check_package(input: &[u8], limits: &FrameLimits) -> Result<Option<(usize, usize)>, FrameError> {
    match parse_header(input, limits)? {
        Header::Incomplete(_) => Ok(None),
        Header::Complete {
            header_len,
            frame_len,
        } => {
            check_hash(&input[..header_len + frame_len + HASH_LEN])?;
            Ok(Some((header_len, frame_len)))
        }
    }
}

/// Decoder for packages on a byte stream (TCP, Unix socket).
///
/// Feed whatever was read, in any split, and pull whole packages. It buffers at most one
/// partial package beyond what the caller fed in one go and never reserves memory because a
/// length field asked for it. After any error it refuses further use: a byte stream whose
/// package boundaries are lost cannot be trusted again, so the link must be closed.
///
/// [`StreamDecoder::feed_bytes`] takes the read as `Bytes`: packages that lie whole inside it are
/// handed out as slices of it, without a copy; only a package split between two reads is
/// joined (copied) in the decoder's own buffer.
#[derive(Debug)]
pub struct StreamDecoder {
    /// The start of a package split between reads (joined here), or bytes fed by slice.
    buf: BytesMut,
    /// Bytes fed as `Bytes` and not yet consumed; empty whenever `buf` holds anything but a
    /// package still being completed from it.
    rest: Bytes,
    limits: FrameLimits,
    consumed: u64,
    failed: bool,
}

impl StreamDecoder {
    /// A decoder with the given limits.
    pub fn new(limits: FrameLimits) -> Self {
        Self {
            buf: BytesMut::new(),
            rest: Bytes::new(),
            limits,
            consumed: 0,
            failed: false,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &FrameLimits {
        &self.limits
    }

    /// Appends bytes read from the stream (copied into the decoder's buffer).
    pub fn feed(&mut self, data: &[u8]) {
        if !self.failed {
            self.settle_rest();
            self.buf.extend_from_slice(data);
        }
    }

    /// Appends bytes read from the stream, keeping them where they are: whole packages inside
    /// `data` come out of [`StreamDecoder::next_package`] as slices of it.
    pub fn feed_bytes(&mut self, data: Bytes) {
        if self.failed || data.is_empty() {
            return;
        }
        if self.rest.is_empty() {
            self.rest = data;
        } else {
            // Unconsumed bytes of an earlier feed: keep the stream in order.
            self.settle_rest();
            self.buf.extend_from_slice(&data);
        }
    }

    /// Moves unconsumed fed `Bytes` into the buffer, behind what it holds.
    fn settle_rest(&mut self) {
        if !self.rest.is_empty() {
            let rest = std::mem::take(&mut self.rest);
            self.buf.extend_from_slice(&rest);
        }
    }

    /// Bytes buffered and not yet returned as packages.
    pub fn buffered_len(&self) -> usize {
        self.buf.len() + self.rest.len()
    }

    /// Stream offset of the next package (bytes consumed by returned packages so far).
    pub fn position(&self) -> u64 {
        self.consumed
    }

    /// Whether the stream failed; no package will come out of it again.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// Bytes still needed before the next package can be returned, if the header tells.
    pub fn bytes_needed(&self) -> Option<u64> {
        let buffered = self.buffered_len() as u64;
        let header = if self.buf.is_empty() {
            parse_header(&self.rest, &self.limits)
        } else {
            parse_header(&self.buf, &self.limits)
        };
        match header {
            Ok(Header::Incomplete(Some(total))) => Some(total.saturating_sub(buffered)),
            _ => None,
        }
    }

    /// The next whole package, `Ok(None)` when more bytes are needed.
    pub fn next_package(&mut self) -> Result<Option<RawPackage>, FrameError> {
        if self.failed {
            return Err(FrameError::StreamFailed);
        }
        if self.buf.is_empty() {
            return self.next_in_rest();
        }
        if !self.rest.is_empty() {
            self.complete_from_rest();
        }
        let (header_len, frame_len) = match parse_header(&self.buf, &self.limits) {
            Ok(Header::Incomplete(_)) => return Ok(None),
            Ok(Header::Complete {
                header_len,
                frame_len,
            }) => (header_len, frame_len),
            Err(err) => return Err(self.fail(err)),
        };
        let wire_len = header_len + frame_len + HASH_LEN;
        if let Err(err) = check_hash(&self.buf[..wire_len]) {
            return Err(self.fail(err));
        }
        let mut package = self.buf.split_to(wire_len);
        package.advance(header_len);
        package.truncate(frame_len);
        self.consumed += wire_len as u64;
        Ok(Some(RawPackage {
            version: PACKAGE_VERSION,
            frame: package.freeze(),
            wire_len,
        }))
    }

    /// The next package from the fed `Bytes` alone (nothing buffered before it): a slice of
    /// them when whole; otherwise what is left moves to the buffer to wait for more.
    fn next_in_rest(&mut self) -> Result<Option<RawPackage>, FrameError> {
        let (header_len, frame_len) = match parse_header(&self.rest, &self.limits) {
            Ok(Header::Incomplete(_)) => {
                self.settle_rest();
                return Ok(None);
            }
            Ok(Header::Complete {
                header_len,
                frame_len,
            }) => (header_len, frame_len),
            Err(err) => return Err(self.fail(err)),
        };
        let wire_len = header_len + frame_len + HASH_LEN;
        if let Err(err) = check_hash(&self.rest[..wire_len]) {
            return Err(self.fail(err));
        }
        // The last package of the read takes the `Bytes` over instead of sharing it.
        let mut frame = if wire_len == self.rest.len() {
            std::mem::take(&mut self.rest)
        } else {
            self.rest.split_to(wire_len)
        };
        frame.advance(header_len);
        frame.truncate(frame_len);
        self.consumed += wire_len as u64;
        Ok(Some(RawPackage {
            version: PACKAGE_VERSION,
            frame,
            wire_len,
        }))
    }

    /// Copies from the fed `Bytes` only what the buffered partial package still lacks (its
    /// header first, then the rest of it), so the packages after it stay slices of the read.
    fn complete_from_rest(&mut self) {
        // A header is at most two varints.
        const MAX_HEADER: usize = 2 * crate::MAX_VARINT_LEN;
        for _ in 0..2 {
            let want = match parse_header(&self.buf, &self.limits) {
                Ok(Header::Incomplete(Some(total))) => {
                    usize::try_from(total).unwrap_or(usize::MAX) - self.buf.len()
                }
                Ok(Header::Incomplete(None)) => MAX_HEADER.saturating_sub(self.buf.len()).max(1),
                // Complete, or an error that the caller reports.
                _ => return,
            };
            let take = want.min(self.rest.len());
            self.buf.extend_from_slice(&self.rest[..take]);
            self.rest.advance(take);
            if self.rest.is_empty() {
                return;
            }
        }
    }

    /// The next whole package, decoded. A protobuf error also fails the stream.
    pub fn next_frame(&mut self) -> Result<Option<FrameMessage>, FrameError> {
        let Some(package) = self.next_package()? else {
            return Ok(None);
        };
        // Built in the returned value itself, so the large message is not moved afterwards.
        let mut out = Ok(Some(FrameMessage::default()));
        if let Ok(Some(message)) = &mut out {
            if let Err(err) = message.merge(package.frame) {
                out = Err(self.fail(FrameError::Protobuf(err)));
            }
        }
        out
    }

    fn fail(&mut self, err: FrameError) -> FrameError {
        self.failed = true;
        self.buf = BytesMut::new();
        self.rest = Bytes::new();
        err
    }
}

/// Decoder of one UDP datagram holding one or more whole packages.
///
/// An iterator of packages; it stops after the first error (the rest of the datagram has no
/// reliable boundaries). Packages share the datagram's buffer.
#[derive(Debug, Clone)]
pub struct DatagramDecoder {
    rest: Bytes,
    limits: FrameLimits,
    started: bool,
    done: bool,
}

impl DatagramDecoder {
    /// A decoder over one received datagram.
    pub fn new(datagram: Bytes, limits: FrameLimits) -> Self {
        Self {
            rest: datagram,
            limits,
            started: false,
            done: false,
        }
    }

    /// The next package, decoded.
    #[inline]
    pub fn next_frame(&mut self) -> Option<Result<FrameMessage, FrameError>> {
        let frame = match self.next()? {
            Ok(package) => package.frame,
            Err(err) => return Some(Err(err)),
        };
        // Built in the returned value itself, so the large message is not moved afterwards.
        let mut out = Some(Ok(FrameMessage::default()));
        if let Some(Ok(message)) = &mut out {
            if let Err(err) = message.merge(frame) {
                out = Some(Err(FrameError::Protobuf(err)));
            }
        }
        out
    }
}

impl Iterator for DatagramDecoder {
    type Item = Result<RawPackage, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.rest.is_empty() {
            self.done = true;
            return (!self.started).then_some(Err(FrameError::EmptyDatagram));
        }
        self.started = true;
        let result = match check_package(&self.rest, &self.limits) {
            Ok(Some((header_len, frame_len))) => {
                let wire_len = header_len + frame_len + HASH_LEN;
                // The last package (usually the only one) takes the datagram's buffer over
                // instead of sharing it, which saves a reference count round trip.
                let mut frame = if wire_len == self.rest.len() {
                    std::mem::take(&mut self.rest)
                } else {
                    self.rest.split_to(wire_len)
                };
                frame.advance(header_len);
                frame.truncate(frame_len);
                return Some(Ok(RawPackage {
                    version: PACKAGE_VERSION,
                    frame,
                    wire_len,
                }));
            }
            Ok(None) => {
                let needed = match parse_header(&self.rest, &self.limits) {
                    Ok(Header::Incomplete(Some(total))) => total,
                    _ => self.rest.len() as u64 + 1,
                };
                Err(FrameError::Truncated {
                    needed,
                    available: self.rest.len(),
                })
            }
            Err(err) => Err(err),
        };
        self.done = true;
        Some(result)
    }
}
