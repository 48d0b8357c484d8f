//! `atbus inspect --reassemble`: follow the streams of one or more captures.
//!
//! Every `packet_data` of the captures is fed, per stream, through an
//! [`atbus_stream::reassembly::Reassembler`]: the receive path a session uses (overlap and
//! containment merging, duplicates, reordering, `HAS_MORE` boundaries, skips, final size). A
//! stream is keyed by `(head.source, head.destination, stream_id)`; captures are read one after
//! the other, in the order given, so the captures of several paths of one session fill each
//! other's gaps. A packet's fragments become pieces as the session makes them: they start at
//! `stream_offset` and follow each other, a fragment without `HAS_MORE` ends a message, its
//! `packet_type`, `labels` and `options` are the message's metadata, and empty fragments carry
//! nothing. `RESET_OFFSET` skips everything below `stream_offset` (before the packet's data),
//! `FINISH_STREAM` sets the final size to the end of the packet's data, `RESET_STREAM` sets it to
//! `stream_offset` and skips up to it. Packets with `CLOSE_SESSION` carry no stream data.
//!
//! Output is JSON Lines. Each delivery, as soon as the reassembler hands it out:
//!
//! ```text
//! {"source":"node-a","destination":"node-b","stream_id":1,"offset":0,"length":13,"packet_type":0,"labels":{"app":"chat"},"data":"aGVsbG8sIG5vZGUtYg=="}
//! {"source":"node-a","destination":"node-b","stream_id":1,"skipped":{"offset":13,"length":30}}
//! ```
//!
//! - a message: `offset` and `length` in the stream, its `packet_type` and `labels` (keys sorted),
//!   `options` (proto3 JSON mapping, keys sorted) when it has any, `data` as standard base64;
//! - a skipped range: the sender gave up on `[offset, offset + length)`.
//!
//! Then, once every capture is read, one line per stream, sorted by stream key:
//!
//! ```text
//! {"stream_summary":{"source":"node-a","destination":"node-b","stream_id":1,"delivered_messages":1,"delivered_bytes":13,"skipped_bytes":0,"final_size":null,"finished":false,"gaps":[],"pending_bytes":30,"read_offset":13,"received_max":43,"undecodable_packets":0,"buffer_full_pieces":0,"errors":0}}
//! ```
//!
//! - `gaps`: `[start, end)` ranges still missing between `read_offset` (everything below was
//!   delivered or skipped) and the largest offset known (`received_max`, the end of a fragment
//!   refused for lack of buffer, or the final size); `pending_bytes`: bytes received there, held
//!   waiting for the gaps;
//! - `final_size`: from `FINISH_STREAM` or `RESET_STREAM`, `null` when unknown; `finished`:
//!   everything up to it was delivered or skipped;
//! - `undecodable_packets`: packets whose content cannot be followed (`ENCRYPTED`, `COMPRESSED`,
//!   a bad `padding_size`, or not a `packet_content`); their bytes show up as gaps;
//! - `buffer_full_pieces`: fragments refused because the bytes held across all streams would
//!   exceed [`Options::max_buffered`]; their bytes show up as gaps;
//! - `errors`: error lines printed for the stream (below).
//!
//! The state of each stream counts against [`Options::max_buffered`] as well; once that is spent,
//! packets of further streams are not followed, and a last line counts them:
//! `{"untracked_streams":{"packets":…}}`.
//!
//! Packages that do not decode give the error lines of plain `inspect`, with a leading `file`
//! field (the input's name). A packet the session would refuse gives an error line naming the
//! package and the stream, and is not applied:
//!
//! ```text
//! {"file":"a.bin","offset":142,"source":"node-a","destination":"node-b","stream_id":1,"error_kind":"reassembly","error":"final size changed from 43 to 40"}
//! ```
//!
//! `error_kind` is `reassembly` (the reassembler refused the data, skip or final size) or
//! `protocol` (a negative `stream_id` or `stream_offset`, unknown flag bits).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use atbus_proto::frame_message::Body;
use atbus_proto::{FrameMessage, MessageHead, PacketContent, PacketData, PacketOptions};
use atbus_proto::{fragment_flags, packet_flags};
use atbus_stream::ranges::RangeSet;
use atbus_stream::reassembly::{
    Delivery, MessageMeta, Piece, Reassembler, ReassemblyError, ReceivedMessage,
};
use base64::Engine;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde::Serialize;
use serde_json::json;

use crate::inspect::{self, ErrorRecord, InspectError, Record, Stats};

/// Default bound on the bytes held across all streams (`--max-buffered`).
pub const DEFAULT_MAX_BUFFERED: usize = 256 << 20;

/// Fixed memory charge of a stream's state against [`Options::max_buffered`].
const STREAM_OVERHEAD: usize = 512;

/// Fully-qualified name of `packet_options` in the protocol descriptor.
const PACKET_OPTIONS_NAME: &str = "atbus.protocol.packet_options";

/// How to read the captures and how much to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// How each capture is read (byte stream or datagram records, frame limits).
    pub inspect: inspect::Options,
    /// Most bytes held (received, not yet deliverable) across all streams, metadata and a fixed
    /// charge per stream included.
    pub max_buffered: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            inspect: inspect::Options::default(),
            max_buffered: DEFAULT_MAX_BUFFERED,
        }
    }
}

/// Reads every `(name, capture)` in order and writes deliveries, error lines and the per-stream
/// summaries to `output`. `errors` in the result counts every error line.
pub fn reassemble<I, R, W>(inputs: I, output: W, options: &Options) -> Result<Stats, InspectError>
where
    I: IntoIterator<Item = (String, R)>,
    R: Read,
    W: Write,
{
    let mut follower = Follower::new(output, options.max_buffered)?;
    let mut stats = Stats::default();
    for (name, input) in inputs {
        let file_stats = inspect::inspect_with(input, &options.inspect, |record| {
            follower.record(&name, record)
        })?;
        stats.packages += file_stats.packages;
        stats.errors += file_stats.errors;
    }
    stats.errors += follower.errors;
    follower.finish()?;
    Ok(stats)
}

/// A stream's identity in a capture.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct StreamKey {
    source: String,
    destination: String,
    stream_id: i64,
}

/// One followed stream.
struct Stream {
    reasm: Reassembler,
    /// Bytes received or skipped at or above the read offset.
    covered: RangeSet,
    /// Largest end of a fragment accepted or refused for lack of buffer.
    seen_max: u64,
    delivered_messages: u64,
    delivered_bytes: u64,
    skipped_bytes: u64,
    undecodable_packets: u64,
    buffer_full_pieces: u64,
    errors: u64,
}

impl Stream {
    fn new(max_buffered: usize) -> Self {
        Self {
            reasm: Reassembler::new(max_buffered),
            covered: RangeSet::new(),
            seen_max: 0,
            delivered_messages: 0,
            delivered_bytes: 0,
            skipped_bytes: 0,
            undecodable_packets: 0,
            buffer_full_pieces: 0,
            errors: 0,
        }
    }

    /// End of the byte range this stream knows of.
    fn known_end(&self) -> u64 {
        self.reasm
            .received_max()
            .max(self.seen_max)
            .max(self.reasm.final_size().unwrap_or(0))
            .max(self.reasm.read_offset())
    }

    /// Missing ranges between the read offset and [`known_end`](Self::known_end), and the
    /// number of bytes held there.
    fn gaps(&self) -> (Vec<[u64; 2]>, u64) {
        let end = self.known_end();
        let mut gaps = Vec::new();
        let mut pending = 0;
        let mut pos = self.reasm.read_offset();
        for range in self.covered.iter() {
            let start = range.start.max(pos);
            let stop = range.end.min(end);
            if stop <= start {
                continue;
            }
            if start > pos {
                gaps.push([pos, start]);
            }
            pending += stop - start;
            pos = stop;
        }
        if end > pos {
            gaps.push([pos, end]);
        }
        (gaps, pending)
    }
}

/// Where a packet came from, for error lines.
struct Origin<'a> {
    file: &'a str,
    offset: u64,
    datagram: Option<u64>,
}

/// A delivered message, as printed.
#[derive(Serialize)]
struct MessageLine<'a> {
    source: &'a str,
    destination: &'a str,
    stream_id: i64,
    offset: u64,
    length: u64,
    packet_type: i32,
    labels: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<serde_json::Value>,
    data: String,
}

/// A skipped range, as printed.
#[derive(Serialize)]
struct SkippedLine<'a> {
    source: &'a str,
    destination: &'a str,
    stream_id: i64,
    skipped: SkippedRange,
}

#[derive(Serialize)]
struct SkippedRange {
    offset: u64,
    length: u64,
}

/// A package error line of plain `inspect`, with the input's name.
#[derive(Serialize)]
struct FileErrorLine<'a> {
    file: &'a str,
    #[serde(flatten)]
    error: &'a ErrorRecord,
}

/// A packet that was not applied to its stream, as printed.
#[derive(Serialize)]
struct StreamErrorLine<'a> {
    file: &'a str,
    offset: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    datagram: Option<u64>,
    source: &'a str,
    destination: &'a str,
    stream_id: i64,
    error_kind: &'static str,
    error: String,
}

#[derive(Serialize)]
struct SummaryLine<'a> {
    stream_summary: Summary<'a>,
}

/// The end-of-capture state of one stream, as printed.
#[derive(Serialize)]
struct Summary<'a> {
    source: &'a str,
    destination: &'a str,
    stream_id: i64,
    delivered_messages: u64,
    delivered_bytes: u64,
    skipped_bytes: u64,
    final_size: Option<u64>,
    finished: bool,
    gaps: Vec<[u64; 2]>,
    pending_bytes: u64,
    read_offset: u64,
    received_max: u64,
    undecodable_packets: u64,
    buffer_full_pieces: u64,
    errors: u64,
}

/// What to do to a stream's reassembler.
enum Op {
    Skip(u64),
    Insert(Piece),
    FinalSize(u64),
}

/// The state of a `--reassemble` run.
struct Follower<W> {
    out: W,
    streams: BTreeMap<StreamKey, Stream>,
    max_buffered: usize,
    /// Sum of `buffered_bytes` over all streams.
    buffered: usize,
    /// Sum of the fixed charges of all streams' state.
    overhead: usize,
    /// Error lines printed by the follower itself (reassembly and protocol).
    errors: u64,
    /// Packets of new streams refused because the budget was exhausted.
    untracked_packets: u64,
    options: MessageDescriptor,
    json: SerializeOptions,
}

impl<W: Write> Follower<W> {
    fn new(out: W, max_buffered: usize) -> Result<Self, InspectError> {
        let pool = DescriptorPool::decode(atbus_proto::FILE_DESCRIPTOR_SET)
            .map_err(|err| InspectError::Descriptor(err.to_string()))?;
        let options = pool
            .get_message_by_name(PACKET_OPTIONS_NAME)
            .ok_or_else(|| InspectError::Descriptor(format!("no message {PACKET_OPTIONS_NAME}")))?;
        Ok(Self {
            out,
            streams: BTreeMap::new(),
            max_buffered,
            buffered: 0,
            overhead: 0,
            errors: 0,
            untracked_packets: 0,
            options,
            json: SerializeOptions::new()
                .use_proto_field_name(true)
                .skip_default_fields(true)
                .stringify_64_bit_integers(true),
        })
    }

    /// Everything charged against the budget: bytes held and stream state.
    fn total(&self) -> usize {
        self.buffered.saturating_add(self.overhead)
    }

    fn line<T: Serialize>(&mut self, value: &T) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, value)?;
        self.out.write_all(b"\n")
    }

    fn record(&mut self, file: &str, record: &Record) -> io::Result<()> {
        let package = match record {
            Record::Error(error) => return self.line(&FileErrorLine { file, error }),
            Record::Package(package) => package,
        };
        let origin = Origin {
            file,
            offset: package.offset,
            datagram: package.datagram,
        };
        let frame = match FrameMessage::decode(package.frame_bytes.clone()) {
            Ok(frame) => frame,
            // The dissector decoded this frame already; should the typed decode still disagree,
            // say so instead of losing the packet silently.
            Err(err) => {
                self.errors += 1;
                let error = ErrorRecord {
                    offset: package.offset,
                    datagram: package.datagram,
                    error_kind: "protobuf",
                    error: format!("frame_message does not decode: {err}"),
                };
                return self.line(&FileErrorLine {
                    file,
                    error: &error,
                });
            }
        };
        match frame.body {
            Some(Body::Packet(packet)) => self.packet(&origin, frame.head, packet),
            _ => Ok(()),
        }
    }

    fn packet(
        &mut self,
        origin: &Origin<'_>,
        head: Option<MessageHead>,
        packet: PacketData,
    ) -> io::Result<()> {
        let head = head.unwrap_or_default();
        let key = StreamKey {
            source: head.source,
            destination: head.destination,
            stream_id: packet.stream_id,
        };
        if packet.flags & packet_flags::CLOSE_SESSION != 0 {
            return Ok(());
        }
        let problem = if packet.stream_id < 0 {
            Some("negative stream_id".to_string())
        } else if packet.stream_offset < 0 {
            Some("negative stream_offset".to_string())
        } else if packet.flags & !packet_flags::ALL != 0 {
            Some(format!("unknown packet flag bits {:#x}", packet.flags))
        } else {
            None
        };
        if let Some(error) = problem {
            return self.stream_error(origin, &key, "protocol", error);
        }
        if !self.streams.contains_key(&key) {
            // Stream state counts against the budget too, so that a capture of countless tiny
            // streams cannot exhaust memory either.
            let cost = stream_cost(&key);
            if self.total().saturating_add(cost) > self.max_buffered {
                self.untracked_packets += 1;
                return Ok(());
            }
            self.overhead += cost;
            self.streams
                .insert(key.clone(), Stream::new(self.max_buffered));
        }
        let Some(stream) = self.streams.get_mut(&key) else {
            return Ok(());
        };
        let Some(content) = packet_content(&packet) else {
            stream.undecodable_packets += 1;
            return Ok(());
        };

        let offset = packet.stream_offset as u64;
        let mut ops = Vec::with_capacity(content.fragment.len() + 3);
        if packet.flags & packet_flags::RESET_OFFSET != 0 {
            ops.push(Op::Skip(offset));
        }
        let mut pos = Some(offset);
        for fragment in content.fragment {
            let Some(at) = pos else { break };
            if fragment.data.is_empty() {
                continue;
            }
            pos = at.checked_add(fragment.data.len() as u64);
            let meta = (fragment.packet_type != 0
                || !fragment.labels.is_empty()
                || fragment.options.is_some())
            .then(|| MessageMeta {
                packet_type: fragment.packet_type,
                labels: fragment.labels,
                options: fragment.options,
            });
            ops.push(Op::Insert(Piece {
                offset: at,
                data: fragment.data,
                ends_message: fragment.fragment_flag & fragment_flags::HAS_MORE == 0,
                meta,
            }));
        }
        let Some(end) = pos else {
            let error = ReassemblyError::OffsetOverflow.to_string();
            return self.stream_error(origin, &key, "reassembly", error);
        };
        if packet.flags & packet_flags::FINISH_STREAM != 0 {
            ops.push(Op::FinalSize(end));
        }
        if packet.flags & packet_flags::RESET_STREAM != 0 {
            ops.push(Op::FinalSize(offset));
            ops.push(Op::Skip(offset));
        }
        for op in ops {
            if let Err(error) = self.apply(&key, op) {
                return self.stream_error(origin, &key, "reassembly", error.to_string());
            }
            self.drain(&key)?;
        }
        Ok(())
    }

    /// Applies one operation to the stream's reassembler, keeping the byte accounting.
    fn apply(&mut self, key: &StreamKey, op: Op) -> Result<(), ReassemblyError> {
        let alone = self.streams.len() == 1;
        let total = self.total();
        let Some(stream) = self.streams.get_mut(key) else {
            return Ok(());
        };
        let before = stream.reasm.buffered_bytes();
        let result = match op {
            Op::Skip(target) => {
                let read = stream.reasm.read_offset();
                stream.reasm.skip_to(target).map(|()| {
                    stream.covered.insert(read..target);
                })
            }
            Op::FinalSize(size) => stream.reasm.set_final_size(size),
            Op::Insert(piece) => {
                let range = piece.offset..piece.offset + piece.data.len() as u64;
                let charge = piece
                    .data
                    .len()
                    .saturating_add(piece.meta.as_ref().map_or(0, MessageMeta::cost));
                // The reassembler enforces the limit on its own stream's bytes exactly; with other
                // streams, everything is counted in, the whole piece included (conservative when it
                // overlaps bytes already held).
                let result = if !alone && total.saturating_add(charge) > self.max_buffered {
                    Err(ReassemblyError::BufferFull {
                        buffered: total,
                        limit: self.max_buffered,
                    })
                } else {
                    stream.reasm.insert(piece)
                };
                match result {
                    Ok(_) => {
                        stream.seen_max = stream.seen_max.max(range.end);
                        stream.covered.insert(range);
                        Ok(())
                    }
                    Err(ReassemblyError::BufferFull { .. }) => {
                        stream.seen_max = stream.seen_max.max(range.end);
                        stream.buffer_full_pieces += 1;
                        Ok(())
                    }
                    Err(error) => Err(error),
                }
            }
        };
        self.buffered = self.buffered - before + stream.reasm.buffered_bytes();
        result
    }

    /// Prints every delivery the stream has ready.
    fn drain(&mut self, key: &StreamKey) -> io::Result<()> {
        loop {
            let Some(stream) = self.streams.get_mut(key) else {
                return Ok(());
            };
            let before = stream.reasm.buffered_bytes();
            let Some(delivery) = stream.reasm.pop() else {
                let read = stream.reasm.read_offset();
                stream.covered.remove_below(read);
                return Ok(());
            };
            self.buffered = self.buffered - before + stream.reasm.buffered_bytes();
            match delivery {
                Delivery::Message(message) => {
                    stream.delivered_messages += 1;
                    stream.delivered_bytes += message.data.len() as u64;
                    self.message(key, &message)?;
                }
                Delivery::Skipped { offset, len } => {
                    stream.skipped_bytes += len;
                    self.line(&SkippedLine {
                        source: &key.source,
                        destination: &key.destination,
                        stream_id: key.stream_id,
                        skipped: SkippedRange {
                            offset,
                            length: len,
                        },
                    })?;
                }
            }
        }
    }

    fn message(&mut self, key: &StreamKey, message: &ReceivedMessage) -> io::Result<()> {
        let options = match &message.meta.options {
            Some(options) => Some(self.options_json(options)?),
            None => None,
        };
        self.line(&MessageLine {
            source: &key.source,
            destination: &key.destination,
            stream_id: key.stream_id,
            offset: message.offset,
            length: message.data.len() as u64,
            packet_type: message.meta.packet_type,
            labels: &message.meta.labels,
            options,
            data: base64::engine::general_purpose::STANDARD.encode(&message.data),
        })
    }

    /// `options` in the proto3 JSON mapping, keys sorted.
    fn options_json(&self, options: &PacketOptions) -> io::Result<serde_json::Value> {
        let message =
            DynamicMessage::decode(self.options.clone(), options.encode_to_vec().as_slice())
                .map_err(io::Error::other)?;
        let json = message
            .serialize_with_options(serde_json::value::Serializer, &self.json)
            .map_err(io::Error::other)?;
        Ok(inspect::sorted(json))
    }

    fn stream_error(
        &mut self,
        origin: &Origin<'_>,
        key: &StreamKey,
        error_kind: &'static str,
        error: String,
    ) -> io::Result<()> {
        self.errors += 1;
        if let Some(stream) = self.streams.get_mut(key) {
            stream.errors += 1;
        }
        self.line(&StreamErrorLine {
            file: origin.file,
            offset: origin.offset,
            datagram: origin.datagram,
            source: &key.source,
            destination: &key.destination,
            stream_id: key.stream_id,
            error_kind,
            error,
        })
    }

    /// Prints the per-stream summaries and flushes the output.
    fn finish(mut self) -> Result<(), InspectError> {
        let streams = std::mem::take(&mut self.streams);
        for (key, stream) in &streams {
            let (gaps, pending_bytes) = stream.gaps();
            let summary = Summary {
                source: &key.source,
                destination: &key.destination,
                stream_id: key.stream_id,
                delivered_messages: stream.delivered_messages,
                delivered_bytes: stream.delivered_bytes,
                skipped_bytes: stream.skipped_bytes,
                final_size: stream.reasm.final_size(),
                finished: stream.reasm.is_finished(),
                gaps,
                pending_bytes,
                read_offset: stream.reasm.read_offset(),
                received_max: stream.reasm.received_max(),
                undecodable_packets: stream.undecodable_packets,
                buffer_full_pieces: stream.buffer_full_pieces,
                errors: stream.errors,
            };
            self.line(&SummaryLine {
                stream_summary: summary,
            })
            .map_err(InspectError::Write)?;
        }
        if self.untracked_packets > 0 {
            let line = json!({"untracked_streams": {"packets": self.untracked_packets}});
            self.line(&line).map_err(InspectError::Write)?;
        }
        self.out.flush().map_err(InspectError::Write)
    }
}

/// Memory charged for the state of a stream (on top of the bytes it holds).
fn stream_cost(key: &StreamKey) -> usize {
    STREAM_OVERHEAD
        .saturating_add(key.source.len())
        .saturating_add(key.destination.len())
}

/// The packet's content as a `packet_content`, when it can be followed: neither `ENCRYPTED` nor
/// `COMPRESSED`, a valid `padding_size`, and decodable.
fn packet_content(packet: &PacketData) -> Option<PacketContent> {
    if packet.flags & (packet_flags::ENCRYPTED | packet_flags::COMPRESSED) != 0 {
        return None;
    }
    let padding = usize::try_from(packet.padding_size).ok()?;
    let end = packet.content.len().checked_sub(padding)?;
    PacketContent::decode(packet.content.slice(..end)).ok()
}
