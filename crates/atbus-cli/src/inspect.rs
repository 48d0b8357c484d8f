//! `atbus inspect`: the dissector of captured packages.
//!
//! Input is raw captured bytes, either a byte stream (what a TCP or Unix socket carried) or a
//! file of datagram records (`u32` little-endian length, then one datagram holding one or more
//! whole packages). Output is one JSON object per package, a line each (JSON Lines):
//!
//! ```text
//! {"offset":0,"version":1,"length":8,"hash_ok":true,"frame":{"ping":{"ping_id":"1","timepoint_microseconds":"1000000"}}}
//! ```
//!
//! - `offset`: where the package starts in the input, in bytes (for datagram records, in the
//!   whole file, record headers included); `datagram`: the record's index, datagram input only;
//! - `version`: the package version, `length`: the `frame_message` length from the header;
//! - `hash_ok`: always `true` on a package line (a bad hash gives an error line instead);
//! - `frame`: the proto3 JSON mapping of `frame_message`, with the .proto's snake_case field
//!   names, `int64` as strings, `bytes` as standard base64 and **fields at their default value
//!   omitted** (0, `""`, `false`, empty lists and maps), as the mapping specifies. Message fields
//!   that are present but empty show as `{}`. Object keys are sorted, so output is byte-for-byte
//!   reproducible;
//! - `frame.packet.content_decoded`: when the packet's `content` is neither `ENCRYPTED` nor
//!   `COMPRESSED`, is not empty and, without its `padding_size` trailing bytes, decodes as a
//!   `packet_content` that has no unknown fields, that `packet_content` in the same mapping.
//!
//! A package that cannot be decoded gives an error line instead:
//!
//! ```text
//! {"offset":12,"error_kind":"hash_mismatch","error":"package hash mismatch: …"}
//! ```
//!
//! `error_kind` is one of [`error_kind`]'s stable names. On a byte stream, a framing error ends
//! the dissection (package boundaries are lost from there on) and so does input that ends inside a
//! package (`truncated`); a `protobuf` error does not, since its package's hash checked out and
//! the next package's start is known. With datagram records, dissection goes on with the next
//! package or record whenever its start is known.
//!
//! # Following streams (`--reassemble`)
//!
//! `atbus inspect --reassemble FILE…` does not print packages: it feeds every `packet_data` of
//! one or more captures (read in order, for example one per path of a session) through the
//! session's reassembler, per `(source, destination, stream_id)`, and prints each delivered
//! message once, in delivery order, as
//! `{"source":…,"destination":…,"stream_id":…,"offset":…,"length":…,"packet_type":…,"labels":{…},"data":"<base64>"}`
//! (or a `{"…","skipped":{"offset":…,"length":…}}` line for a range the sender gave up on), then a
//! `{"stream_summary":{…}}` line per stream with delivered and skipped bytes, the final size and
//! the gaps still missing. Decode errors print as above, with a leading `file` field. See
//! [`crate::reassemble`] for the exact format.

use std::borrow::Cow;
use std::io::{self, Read, Write};

use atbus_frame::{DatagramDecoder, FrameError, FrameLimits, RawPackage, StreamDecoder};
use atbus_proto::packet_flags;
use bytes::Bytes;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions, Value};
use serde::Serialize;

/// Size of each read from the input: memory use is this plus at most one package.
pub const READ_BUFFER_LEN: usize = 64 * 1024;

/// Largest datagram record accepted (the largest UDP payload); longer records are skipped.
pub const MAX_DATAGRAM_LEN: usize = 65_535;

/// How to read the input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// The input is a file of datagram records instead of a byte stream.
    pub datagram: bool,
    /// Limits the decoders apply (frame length).
    pub limits: FrameLimits,
}

/// What a dissection printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packages decoded.
    pub packages: u64,
    /// Error lines printed.
    pub errors: u64,
}

impl Stats {
    /// Whether the capture decoded without any error.
    pub fn is_clean(&self) -> bool {
        self.errors == 0
    }
}

/// One output line.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Record {
    /// A decoded package.
    Package(PackageRecord),
    /// A package (or record) that could not be decoded.
    Error(ErrorRecord),
}

/// A decoded package, as printed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PackageRecord {
    /// Offset of the package's first byte in the input.
    pub offset: u64,
    /// Index of the datagram record holding the package (datagram input only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datagram: Option<u64>,
    /// Package version from the header.
    pub version: u64,
    /// Length of the `frame_message` from the header.
    pub length: usize,
    /// Whether the hash matched (always `true`: a mismatch gives an [`ErrorRecord`]).
    pub hash_ok: bool,
    /// The `frame_message` in the proto3 JSON mapping.
    pub frame: serde_json::Value,
    /// Bytes the whole package took in the input.
    #[serde(skip)]
    pub wire_len: usize,
    /// The encoded `frame_message`.
    #[serde(skip)]
    pub frame_bytes: Bytes,
}

/// An undecodable package or record, as printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorRecord {
    /// Offset in the input where the failing package (or record) starts.
    pub offset: u64,
    /// Index of the datagram record (datagram input only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datagram: Option<u64>,
    /// Stable machine-readable kind, see [`error_kind`].
    pub error_kind: &'static str,
    /// Human-readable description.
    pub error: String,
}

/// Why a dissection could not run to its end (as opposed to errors in the capture, which are
/// printed as error lines).
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// Reading the input failed.
    #[error("cannot read the capture: {0}")]
    Read(#[source] io::Error),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Write(#[source] io::Error),
    /// The protocol descriptor built into the binary does not load.
    #[error("the built-in protocol descriptor is unusable: {0}")]
    Descriptor(String),
    /// A `--hex` argument is not hex.
    #[error("invalid hex input: {0}")]
    Hex(String),
}

/// The stable `error_kind` name of a decode error.
pub fn error_kind(err: &FrameError) -> &'static str {
    match err {
        FrameError::OverlongVarint { .. } => "overlong_varint",
        FrameError::UnsupportedVersion { .. } => "unsupported_version",
        FrameError::FrameTooLong { .. } => "frame_too_long",
        FrameError::Truncated { .. } => "truncated",
        FrameError::HashMismatch { .. } => "hash_mismatch",
        FrameError::Protobuf(_) => "protobuf",
        FrameError::EmptyDatagram => "empty_datagram",
        FrameError::StreamFailed => "stream_failed",
        _ => "other",
    }
}

/// Parses hex digits, ignoring ASCII whitespace (`"01 0a\nff"`).
pub fn parse_hex(text: &str) -> Result<Vec<u8>, InspectError> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if digits.len() % 2 != 0 {
        return Err(InspectError::Hex(format!(
            "odd number of hex digits ({})",
            digits.len()
        )));
    }
    let nibble = |c: u8| -> Result<u8, InspectError> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(InspectError::Hex(format!(
                "{:?} is not a hex digit",
                char::from(c)
            ))),
        }
    };
    digits
        .chunks_exact(2)
        .map(|pair| Ok(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

/// Dissects `input` and writes one JSON line per package (or error) to `output`.
pub fn inspect<R: Read, W: Write>(
    input: R,
    mut output: W,
    options: &Options,
) -> Result<Stats, InspectError> {
    let stats = inspect_with(input, options, |record| {
        serde_json::to_writer(&mut output, record)?;
        output.write_all(b"\n")
    })?;
    output.flush().map_err(InspectError::Write)?;
    Ok(stats)
}

/// Dissects `input`, handing each record to `sink` in input order (errors of `sink` are
/// reported as [`InspectError::Write`]).
pub fn inspect_with<R, F>(input: R, options: &Options, sink: F) -> Result<Stats, InspectError>
where
    R: Read,
    F: FnMut(&Record) -> io::Result<()>,
{
    let mut run = Run {
        dissector: Dissector::new()?,
        sink,
        stats: Stats::default(),
    };
    if options.datagram {
        run.datagrams(input, options.limits)?;
    } else {
        run.stream(input, options.limits)?;
    }
    Ok(run.stats)
}

/// Turns `frame_message` bytes into JSON.
struct Dissector {
    frame: MessageDescriptor,
    content: MessageDescriptor,
    json: SerializeOptions,
}

/// Why one package's frame does not dissect.
enum DissectError {
    Decode(prost::DecodeError),
    Json(serde_json::Error),
}

impl Dissector {
    fn new() -> Result<Self, InspectError> {
        let pool = DescriptorPool::decode(atbus_proto::FILE_DESCRIPTOR_SET)
            .map_err(|err| InspectError::Descriptor(err.to_string()))?;
        let message = |name: &str| {
            pool.get_message_by_name(name)
                .ok_or_else(|| InspectError::Descriptor(format!("no message {name}")))
        };
        Ok(Self {
            frame: message(atbus_proto::FRAME_MESSAGE_NAME)?,
            content: message(atbus_proto::PACKET_CONTENT_NAME)?,
            json: SerializeOptions::new()
                .use_proto_field_name(true)
                .skip_default_fields(true)
                .stringify_64_bit_integers(true),
        })
    }

    fn to_json(&self, message: &DynamicMessage) -> Result<serde_json::Value, DissectError> {
        message
            .serialize_with_options(serde_json::value::Serializer, &self.json)
            .map_err(DissectError::Json)
    }

    fn dissect(&self, frame: &Bytes) -> Result<serde_json::Value, DissectError> {
        let message = DynamicMessage::decode(self.frame.clone(), frame.clone())
            .map_err(DissectError::Decode)?;
        let mut json = self.to_json(&message)?;
        if let Some(content) = self.packet_content(&message) {
            let decoded = self.to_json(&content)?;
            if let Some(packet) = json.get_mut("packet").and_then(|p| p.as_object_mut()) {
                packet.insert("content_decoded".into(), decoded);
            }
        }
        Ok(sorted(json))
    }

    /// The packet's content as a `packet_content`, when it plausibly is one.
    fn packet_content(&self, frame: &DynamicMessage) -> Option<DynamicMessage> {
        if !frame.has_field_by_name("packet") {
            return None;
        }
        let packet = match frame.get_field_by_name("packet")? {
            Cow::Borrowed(Value::Message(packet)) => Cow::Borrowed(packet),
            Cow::Owned(Value::Message(packet)) => Cow::Owned(packet),
            _ => return None,
        };
        let flags = packet.get_field_by_name("flags")?.as_i32()?;
        if flags & (packet_flags::ENCRYPTED | packet_flags::COMPRESSED) != 0 {
            return None;
        }
        let padding = usize::try_from(packet.get_field_by_name("padding_size")?.as_i32()?).ok()?;
        let content = packet.get_field_by_name("content")?.as_bytes()?.clone();
        let end = content.len().checked_sub(padding)?;
        if end == 0 {
            return None;
        }
        let decoded = DynamicMessage::decode(self.content.clone(), content.slice(..end)).ok()?;
        (!has_unknown_fields(&decoded)).then_some(decoded)
    }
}

/// Whether `message` or any message inside it carries fields its descriptor does not know —
/// the sign that bytes merely happened to parse.
fn has_unknown_fields(message: &DynamicMessage) -> bool {
    fn value_has(value: &Value) -> bool {
        match value {
            Value::Message(m) => has_unknown_fields(m),
            Value::List(items) => items.iter().any(value_has),
            Value::Map(entries) => entries.values().any(value_has),
            _ => false,
        }
    }
    message.unknown_fields().next().is_some() || message.fields().any(|(_, v)| value_has(v))
}

/// `value` with every object's keys in sorted order (map fields come out of prost-reflect in
/// hash order; sorting makes output reproducible whatever serde_json features are enabled).
pub(crate) fn sorted(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sorted).collect())
        }
        other => other,
    }
}

/// State of one dissection.
struct Run<F> {
    dissector: Dissector,
    sink: F,
    stats: Stats,
}

impl<F: FnMut(&Record) -> io::Result<()>> Run<F> {
    fn emit(&mut self, record: Record) -> Result<(), InspectError> {
        match record {
            Record::Package(_) => self.stats.packages += 1,
            Record::Error(_) => self.stats.errors += 1,
        }
        (self.sink)(&record).map_err(InspectError::Write)
    }

    fn error(
        &mut self,
        offset: u64,
        datagram: Option<u64>,
        error_kind: &'static str,
        error: String,
    ) -> Result<(), InspectError> {
        self.emit(Record::Error(ErrorRecord {
            offset,
            datagram,
            error_kind,
            error,
        }))
    }

    fn frame_error(
        &mut self,
        offset: u64,
        datagram: Option<u64>,
        err: &FrameError,
    ) -> Result<(), InspectError> {
        self.error(offset, datagram, error_kind(err), err.to_string())
    }

    fn package(
        &mut self,
        offset: u64,
        datagram: Option<u64>,
        package: RawPackage,
    ) -> Result<(), InspectError> {
        match self.dissector.dissect(&package.frame) {
            Ok(frame) => self.emit(Record::Package(PackageRecord {
                offset,
                datagram,
                version: package.version,
                length: package.frame.len(),
                hash_ok: true,
                frame,
                wire_len: package.wire_len,
                frame_bytes: package.frame,
            })),
            Err(DissectError::Decode(err)) => {
                self.frame_error(offset, datagram, &FrameError::Protobuf(err))
            }
            Err(DissectError::Json(err)) => self.error(
                offset,
                datagram,
                "json",
                format!("frame_message has no JSON form: {err}"),
            ),
        }
    }

    fn stream<R: Read>(&mut self, mut input: R, limits: FrameLimits) -> Result<(), InspectError> {
        let mut decoder = StreamDecoder::new(limits);
        let mut buf = vec![0u8; READ_BUFFER_LEN];
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(InspectError::Read(err)),
            };
            decoder.feed(&buf[..n]);
            loop {
                let offset = decoder.position();
                match decoder.next_package() {
                    Ok(Some(package)) => self.package(offset, None, package)?,
                    Ok(None) => break,
                    Err(err) => return self.frame_error(offset, None, &err),
                }
            }
        }
        let available = decoder.buffered_len();
        if available > 0 {
            let needed = available as u64 + decoder.bytes_needed().unwrap_or(1);
            let err = FrameError::Truncated { needed, available };
            self.frame_error(decoder.position(), None, &err)?;
        }
        Ok(())
    }

    fn datagrams<R: Read>(
        &mut self,
        mut input: R,
        limits: FrameLimits,
    ) -> Result<(), InspectError> {
        let mut record_start = 0u64;
        for index in 0u64.. {
            let mut header = [0u8; 4];
            match read_full(&mut input, &mut header)? {
                0 => break,
                4 => {}
                got => {
                    return self.error(
                        record_start,
                        Some(index),
                        "truncated",
                        format!(
                            "datagram record header truncated: 4 bytes needed, {got} available"
                        ),
                    );
                }
            }
            let len = u32::from_le_bytes(header);
            let body_start = record_start + 4;
            let next_start = body_start + u64::from(len);
            let len = len as usize;
            if len > MAX_DATAGRAM_LEN {
                self.error(
                    record_start,
                    Some(index),
                    "datagram_too_long",
                    format!("datagram record of {len} bytes exceeds {MAX_DATAGRAM_LEN}; skipped"),
                )?;
                let skipped = io::copy(&mut (&mut input).take(len as u64), &mut io::sink())
                    .map_err(InspectError::Read)?;
                if skipped < len as u64 {
                    return self.truncated_record(record_start, index, len, skipped as usize);
                }
                record_start = next_start;
                continue;
            }
            let mut datagram = Vec::with_capacity(len);
            (&mut input)
                .take(len as u64)
                .read_to_end(&mut datagram)
                .map_err(InspectError::Read)?;
            if datagram.len() < len {
                return self.truncated_record(record_start, index, len, datagram.len());
            }
            let mut offset = body_start;
            for item in DatagramDecoder::new(Bytes::from(datagram), limits) {
                match item {
                    Ok(package) => {
                        let wire_len = package.wire_len as u64;
                        self.package(offset, Some(index), package)?;
                        offset += wire_len;
                    }
                    Err(err) => self.frame_error(offset, Some(index), &err)?,
                }
            }
            record_start = next_start;
        }
        Ok(())
    }

    fn truncated_record(
        &mut self,
        record_start: u64,
        index: u64,
        len: usize,
        available: usize,
    ) -> Result<(), InspectError> {
        self.error(
            record_start,
            Some(index),
            "truncated",
            format!("datagram record truncated: {len} bytes needed, {available} available"),
        )
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full<R: Read>(input: &mut R, buf: &mut [u8]) -> Result<usize, InspectError> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(InspectError::Read(err)),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ignores_whitespace_and_rejects_garbage() {
        assert_eq!(parse_hex(" 01 0a\nFF\t").unwrap(), vec![1, 10, 255]);
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
        assert!(parse_hex("").unwrap().is_empty());
    }

    /// Hands out its bytes `step` at a time.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn run(input: impl Read, datagram: bool) -> (Stats, String) {
        let mut out = Vec::new();
        let options = Options {
            datagram,
            ..Options::default()
        };
        let stats = inspect(input, &mut out, &options).unwrap();
        (stats, String::from_utf8(out).unwrap())
    }

    #[test]
    fn any_read_split_gives_the_same_output() {
        let stream = crate::sample::capture_stream().unwrap();
        let datagrams = crate::sample::capture_datagrams().unwrap();
        let whole = run(stream.as_slice(), false);
        let whole_dg = run(datagrams.as_slice(), true);
        assert_eq!(whole.0.packages, 6);
        for step in [1, 2, 3, 7, 64] {
            let trickle = Trickle {
                data: &stream,
                step,
            };
            assert_eq!(run(trickle, false), whole);
            let trickle = Trickle {
                data: &datagrams,
                step,
            };
            assert_eq!(run(trickle, true), whole_dg);
        }
    }

    #[test]
    fn packages_straddling_read_buffers() {
        use atbus_proto::{FrameMessage, PacketData, frame_message::Body};
        let limits = FrameLimits::default();
        let mut stream = Vec::new();
        let mut count = 0;
        while stream.len() < 3 * READ_BUFFER_LEN {
            let frame = FrameMessage {
                head: None,
                body: Some(Body::Packet(PacketData {
                    stream_id: count,
                    content: vec![0xa5; 1000 + 7919 * count as usize % 90_000].into(),
                    flags: packet_flags::ENCRYPTED,
                    ..Default::default()
                })),
            };
            atbus_frame::encode(&frame, &limits, &mut stream).unwrap();
            count += 1;
        }
        let mut ids = Vec::new();
        let stats = inspect_with(stream.as_slice(), &Options::default(), |record| {
            if let Record::Package(p) = record {
                ids.push(p.frame["packet"]["stream_id"].clone());
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(
            stats,
            Stats {
                packages: count as u64,
                errors: 0
            }
        );
        assert_eq!(ids.len() as i64, count);
        assert_eq!(ids[1], "1");
    }

    #[test]
    fn sorting_is_recursive() {
        let v = serde_json::json!({"b": {"d": 1, "c": [{"f": 1, "e": 2}]}, "a": 0});
        assert_eq!(
            serde_json::to_string(&sorted(v)).unwrap(),
            r#"{"a":0,"b":{"c":[{"e":2,"f":1}],"d":1}}"#
        );
    }
}
