//! The session state machine.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use atbus_frame::{FrameLimits, Splice, encode_packet, encode_packet_spliced, encode_parts};
use atbus_proto::{
    AcknowledgeData, AtbusCloseReason, FrameMessage, MessageHead, PacketContent, PacketData,
    PacketNumberRange, PingData, SessionControl, StreamAcknowledge, frame_message::Body,
    packet_content::FragmentType, packet_flags, packet_types,
};
use bytes::Bytes;
use prost::Message;

use crate::config::{
    CloseReason, Event, KeyUpdateError, PathConfig, PathError, PathId, ProtocolError, SendError,
    SessionConfig,
};
use crate::content::{ReceivedFragment, decode_fragments};
use crate::path::{Path, PathStats, PeerPathAcks, SentPacket};
use crate::protect::{ContentStats, OpenFailure, Protection, codec_overhead};
use crate::reassembly::{Delivery, MessageMeta, Piece, Reassembler, ReassemblyError};
use crate::send::SendStream;

pub(crate) mod unacked;

/// Bytes a package needs besides its head and content: the header varints and hash, the
/// `packet_data` fields at their largest, and the tags and lengths around them.
const PACKET_OVERHEAD: usize = 8 + 2 + 4 + 66;
/// Smallest content budget worth a packet.
const MIN_CONTENT_BUDGET: usize = 48;
/// Bytes the `session_control` around an acknowledgement takes (key and length).
const CONTROL_WRAP: usize = 8;
/// Most peer path-number spaces tracked at once.
const MAX_PEER_PATHS: usize = 64;

/// A message queued with [`Session::send`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutgoingMessage {
    /// The payload; never empty.
    pub data: Bytes,
    /// Type, labels and options carried on the message's first fragment.
    pub meta: MessageMeta,
}

impl OutgoingMessage {
    /// A user-data message (`packet_type` 0) without labels.
    pub fn data(data: impl Into<Bytes>) -> Self {
        Self {
            data: data.into(),
            meta: MessageMeta::default(),
        }
    }
}

/// One unit of output: `size` bytes at the start of the caller's buffer go out on `path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// The path to send on.
    pub path: PathId,
    /// Bytes written to the buffer (one datagram, or a run of packages for a byte stream).
    pub size: usize,
}

/// Counters of one stream, available through [`Session::stream_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Messages queued by the application.
    pub messages_sent: u64,
    /// Bytes queued by the application.
    pub bytes_sent: u64,
    /// Stream bytes sent again after a loss.
    pub bytes_retransmitted: u64,
    /// Messages delivered to the application.
    pub messages_received: u64,
    /// Bytes delivered to the application.
    pub bytes_received: u64,
    /// Bytes reported skipped to the application.
    pub bytes_skipped: u64,
}

impl StreamStats {
    fn add(&mut self, other: &StreamStats) {
        self.messages_sent += other.messages_sent;
        self.bytes_sent += other.bytes_sent;
        self.bytes_retransmitted += other.bytes_retransmitted;
        self.messages_received += other.messages_received;
        self.bytes_received += other.bytes_received;
        self.bytes_skipped += other.bytes_skipped;
    }
}

#[derive(Debug)]
struct RecvStream {
    stats: StreamStats,
    reasm: Reassembler,
    /// Credit advertised to the peer (max stream offset).
    advertised: u64,
    readable_reported: bool,
    finished_reported: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Open,
    /// Closed; the close packet still has to go out on these paths.
    Closed {
        reason: CloseReason,
        unsent: BTreeSet<PathId>,
    },
}

/// A session between two node names: many one-way streams over one or more paths.
///
/// Methods come in four groups, as in quinn-proto: getters; inputs (`handle_*`, `add_path`,
/// `remove_path`, `path_blocked`, `path_writable`); mutators (`send`, `finish`, `reset`, `skip`,
/// `close`, `read`); outputs (`poll_transmit`, `poll_timeout`, `poll_event`). After any input,
/// drain `poll_transmit` until `None`, then schedule a wake-up at `poll_timeout`, then drain
/// `poll_event`. Time only moves forward and is always passed in.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    epoch: Instant,
    limits: FrameLimits,
    head: MessageHead,
    head_len: usize,
    paths: BTreeMap<PathId, Path>,
    next_path_id: u64,
    peer_paths: BTreeMap<i64, PeerPathAcks>,
    send_streams: BTreeMap<i64, SendStream>,
    recv_streams: BTreeMap<i64, RecvStream>,
    closed_recv: BTreeSet<i64>,
    closed_send: BTreeSet<i64>,
    /// Streams whose acknowledgement goes out on the next `poll_transmit` (credit grants, a
    /// ping's refresh).
    stream_acks_pending: BTreeSet<i64>,
    /// Streams that received data since their last acknowledgement: acknowledged with the next
    /// path acknowledgement, or alone at `stream_ack_deadline`.
    stream_acks_owed: BTreeSet<i64>,
    /// When owed stream acknowledgements go out even if no path acknowledgement does.
    stream_ack_deadline: Option<Instant>,
    stream_stats: BTreeMap<i64, StreamStats>,
    /// Peer's session credit and what we committed of it.
    peer_max_session_data: u64,
    session_data_sent: u64,
    /// Our session credit as advertised and the total read.
    advertised_session_data: u64,
    session_data_read: u64,
    session_credit_pending: bool,
    send_buffered: usize,
    events: VecDeque<Event>,
    state: State,
    last_path: Option<PathId>,
    last_stream: i64,
    /// Decoded fragments of the packet being handled (kept to reuse its allocation).
    fragments: Vec<ReceivedFragment>,
    /// Content protection (keys, compression) installed by the node; `None`: plain.
    protection: Option<Box<Protection>>,
    /// Bytes the codec may add to a packet (0 on a plain session).
    protected_overhead: usize,
    /// When the peer's previous key phase is forgotten (after it moved to a new one).
    previous_key_discard: Option<Instant>,
    /// Payloads kept out of the buffer by the `poll_transmit_spliced` call under way.
    out: SpliceOut,
}

/// Payloads a [`Session::poll_transmit_spliced`] call keeps out of the buffer.
#[derive(Debug, Default)]
struct SpliceOut {
    /// The splices written so far (taken from the caller for the call).
    splices: Vec<Splice>,
    /// Their total length.
    len: usize,
    /// Fragment data this long or longer is spliced; 0: none (plain `poll_transmit`).
    min: usize,
}

impl Session {
    /// A session created at `now` (the zero of its `timepoint_microseconds`).
    pub fn new(config: SessionConfig, now: Instant) -> Self {
        let head = MessageHead {
            source: config.local_name.clone(),
            destination: config.peer_name.clone(),
            ..MessageHead::default()
        };
        let head_len = head.encoded_len();
        Self {
            peer_max_session_data: config.peer_session_window(),
            advertised_session_data: config.session_receive_window,
            epoch: now,
            limits: FrameLimits::default(),
            head,
            head_len,
            paths: BTreeMap::new(),
            next_path_id: 0,
            peer_paths: BTreeMap::new(),
            send_streams: BTreeMap::new(),
            recv_streams: BTreeMap::new(),
            closed_recv: BTreeSet::new(),
            closed_send: BTreeSet::new(),
            stream_acks_pending: BTreeSet::new(),
            stream_acks_owed: BTreeSet::new(),
            stream_ack_deadline: None,
            stream_stats: BTreeMap::new(),
            session_data_sent: 0,
            session_data_read: 0,
            session_credit_pending: false,
            send_buffered: 0,
            events: VecDeque::new(),
            state: State::Open,
            last_path: None,
            last_stream: -1,
            fragments: Vec::new(),
            protection: None,
            protected_overhead: 0,
            out: SpliceOut::default(),
            previous_key_discard: None,
            config,
        }
    }

    /// Installs the session's content codec (keys and/or compression; see `docs/security.md`
    /// §8): from now on every packet sent on every path is transformed by it (compressed, then
    /// sealed), and every packet received must open with it: with keys, a packet without
    /// `ENCRYPTED` or whose tag does not verify is dropped and counted, never delivered.
    /// `None` goes back to plain content. Installing keys on a session that already sent
    /// packets is safe (packet numbers keep counting), but packets sealed under other keys
    /// that are still on the way are dropped and sent again.
    pub fn set_content_codec(&mut self, codec: Option<atbus_auth::ContentCodec>) {
        let stats = self
            .protection
            .as_ref()
            .map(|p| p.stats)
            .unwrap_or_default();
        self.protected_overhead = codec.as_ref().map_or(0, codec_overhead);
        self.protection = codec.map(|c| {
            let mut p = Box::new(Protection::new(c));
            p.stats = stats;
            p
        });
    }

    /// Whether the session seals its content (keys are installed).
    pub fn is_encrypted(&self) -> bool {
        self.protection.as_ref().is_some_and(|p| p.seals())
    }

    /// Whether a content codec (keys and/or compression) is installed.
    pub fn has_content_codec(&self) -> bool {
        self.protection.is_some()
    }

    /// Moves the send direction to the next key phase now (a key update, RFC 9001 §6 style;
    /// `docs/security.md` §8.6). Refused without keys, and while the previous update is not
    /// confirmed (no packet of the current phase answered by the peer yet). The session also
    /// updates by itself after [`SessionConfig::key_update_packets`] packets.
    pub fn update_keys(&mut self, now: Instant) -> Result<(), KeyUpdateError> {
        let protection = self
            .protection
            .as_deref_mut()
            .filter(|p| p.seals())
            .ok_or(KeyUpdateError::NoKeys)?;
        protection.update_send_key()?;
        // A ping on every path, sealed under the new phase: its pong confirms the update.
        for p in self.paths.values_mut() {
            p.next_ping = p.next_ping.min(now);
        }
        Ok(())
    }

    /// The send and receive key phases, on a session with keys.
    pub fn key_phases(&self) -> Option<(u8, u8)> {
        let p = self.protection.as_deref()?;
        Some((p.send_phase()?, p.receive_phase()?))
    }

    /// Counters of content protection (all zero on a plain session).
    pub fn content_stats(&self) -> ContentStats {
        self.protection
            .as_ref()
            .map(|p| p.stats)
            .unwrap_or_default()
    }

    // ----- getters -----

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Whether the session closed.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed { .. })
    }

    /// Paths in use.
    pub fn paths(&self) -> impl Iterator<Item = PathId> + '_ {
        self.paths.keys().copied()
    }

    /// Counters of a path.
    pub fn path_stats(&self, path: PathId) -> Option<PathStats> {
        self.paths.get(&path).map(|p| {
            let mut s = p.stats;
            s.smoothed_rtt_us = if p.rtt.has_sample() {
                p.rtt.smoothed().as_micros() as u64
            } else {
                0
            };
            s.latest_rtt_us = if p.rtt.has_sample() {
                p.rtt.latest().as_micros() as u64
            } else {
                0
            };
            s.bytes_in_flight = p.bytes_in_flight as u64;
            s.congestion_window = if p.is_lossy() {
                p.cc.window as u64
            } else {
                self.config.byte_stream_path_window as u64
            };
            s
        })
    }

    /// Counters of a stream (either direction).
    pub fn stream_stats(&self, stream_id: i64) -> StreamStats {
        // Live streams count in place (no map lookup per message); finished receive streams
        // leave their counters in `stream_stats`.
        let mut total = self
            .stream_stats
            .get(&stream_id)
            .copied()
            .unwrap_or_default();
        if let Some(s) = self.send_streams.get(&stream_id) {
            total.add(&s.stats);
        }
        if let Some(r) = self.recv_streams.get(&stream_id) {
            total.add(&r.stats);
        }
        total
    }

    /// Bytes held for sending (queued or unacknowledged) across all streams.
    pub fn send_buffered(&self) -> usize {
        self.send_buffered
    }

    /// Bytes held for reading across all streams.
    pub fn receive_buffered(&self) -> usize {
        self.recv_streams
            .values()
            .map(|s| s.reasm.buffered_bytes())
            .sum()
    }

    /// Whether everything sent on `stream_id` was acknowledged.
    pub fn is_stream_acknowledged(&self, stream_id: i64) -> bool {
        self.send_streams
            .get(&stream_id)
            .is_none_or(SendStream::all_acked)
    }

    // ----- inputs -----

    /// Adds a path; its id goes into every packet sent on it.
    pub fn add_path(&mut self, now: Instant, config: PathConfig) -> Result<PathId, PathError> {
        let min = self.overhead(&config) + MIN_CONTENT_BUDGET;
        if config.mtu < min || config.mtu > self.limits.max_frame_length {
            return Err(PathError::MtuTooSmall {
                mtu: config.mtu,
                min,
            });
        }
        let id = PathId(self.next_path_id);
        self.next_path_id += 1;
        self.paths.insert(
            id,
            Path::new(
                id,
                config,
                now,
                self.config.initial_rtt,
                self.config.lossy_path_window,
                self.config.no_delay,
            ),
        );
        Ok(id)
    }

    /// Removes a path (its link closed); data in flight on it is sent again on the others.
    pub fn remove_path(&mut self, path: PathId) -> Result<(), PathError> {
        let mut p = self
            .paths
            .remove(&path)
            .ok_or(PathError::UnknownPath(path))?;
        let lost = p.drain_in_flight();
        self.on_lost_without_congestion(lost);
        for acks in self.peer_paths.values_mut() {
            if acks.via == Some(path) {
                acks.via = None;
            }
        }
        if let State::Closed { unsent, .. } = &mut self.state {
            unsent.remove(&path);
        }
        Ok(())
    }

    /// The driver could not write everything on the path: stop scheduling on it.
    pub fn path_blocked(&mut self, path: PathId) {
        if let Some(p) = self.paths.get_mut(&path) {
            p.blocked = true;
        }
    }

    /// The path's link is writable again.
    pub fn path_writable(&mut self, path: PathId) {
        if let Some(p) = self.paths.get_mut(&path) {
            p.blocked = false;
        }
    }

    /// Handles one frame that arrived on `path`. A protocol violation closes the session and is
    /// returned.
    pub fn handle_frame(
        &mut self,
        now: Instant,
        path: PathId,
        frame: FrameMessage,
        wire_len: usize,
    ) -> Result<(), ProtocolError> {
        if !self.paths.contains_key(&path) {
            return Ok(());
        }
        // With keys, acknowledgements, pings and pongs come sealed in `SESSION_CONTROL`
        // packets; in clear they could be forged by anyone on the path: dropped, and they
        // do not keep the path alive.
        if matches!(
            frame.body,
            Some(Body::Ping(_) | Body::Pong(_) | Body::Acknowledge(_))
        ) {
            if let Some(protection) = self.protection.as_deref_mut().filter(|p| p.seals()) {
                protection.stats.dropped_clear_control += 1;
                return Ok(());
            }
        }
        // Only what the session accepts keeps a path alive (RFC 9000 §10.1): on a session that
        // seals, a packet refreshes the idle timer once it opened (`on_packet`).
        let sealed_packet = matches!(frame.body, Some(Body::Packet(_)))
            && self.protection.as_deref().is_some_and(|p| p.seals());
        let Some(p) = self.paths.get_mut(&path) else {
            return Ok(());
        };
        if !sealed_packet {
            p.last_received = now;
        }
        p.stats.packets_received += 1;
        p.stats.bytes_received += wire_len as u64;
        let head = frame.head;
        let result = match frame.body {
            Some(Body::Ping(ping)) => {
                self.on_ping(path, ping);
                Ok(())
            }
            Some(Body::Pong(pong)) => {
                self.on_pong(now, path, pong);
                Ok(())
            }
            Some(Body::Packet(packet)) => self.on_packet(now, path, head.as_ref(), packet),
            Some(Body::Acknowledge(ack)) => self.on_ack(now, ack),
            _ => Ok(()),
        };
        if let Err(err) = &result {
            self.close_with(
                CloseReason {
                    code: AtbusCloseReason::ProtocolError as i32,
                    message: err.to_string(),
                },
                false,
            );
        }
        result
    }

    /// Runs the timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_closed() {
            return;
        }
        if self.previous_key_discard.is_some_and(|t| t <= now) {
            self.previous_key_discard = None;
            if let Some(p) = self.protection.as_deref_mut() {
                p.discard_previous_receive_key();
            }
        }
        let granularity = self.config.timer_granularity;
        let max_ack_delay = self.config.max_ack_delay;
        let ids: Vec<PathId> = self.paths.keys().copied().collect();
        for id in ids {
            let Some(p) = self.paths.get_mut(&id) else {
                continue;
            };
            if now.saturating_duration_since(p.last_received) >= self.config.path_idle_timeout {
                self.events.push_back(Event::PathDead { path: id });
                let _ = self.remove_path(id);
                continue;
            }
            if p.pacing_wakeup.is_some_and(|t| t <= now) {
                p.pacing_wakeup = None;
            }
            if p.loss_time.is_some_and(|t| t <= now) {
                let lost = p.detect_lost(now, granularity);
                self.on_lost(now, lost, Some(id));
            } else if p
                .pto_deadline(granularity, max_ack_delay)
                .is_some_and(|t| t <= now)
            {
                let lost = p.on_pto();
                // Three probe timeouts in a row: persistent congestion (RFC 9002 §7.6).
                if p.pto_count >= 3 {
                    p.cc.on_persistent_congestion(now);
                }
                self.on_lost(now, lost, Some(id));
            }
        }
    }

    // ----- mutators -----

    /// Queues a message on a stream; returns its stream offset.
    pub fn send(&mut self, stream_id: i64, message: OutgoingMessage) -> Result<u64, SendError> {
        if self.is_closed() {
            return Err(SendError::SessionClosed);
        }
        if stream_id < 0 {
            return Err(SendError::InvalidStreamId(stream_id));
        }
        if message.data.is_empty() {
            return Err(SendError::EmptyMessage);
        }
        if self.closed_send.contains(&stream_id) {
            return Err(SendError::StreamClosed(stream_id));
        }
        let len = message.data.len();
        // A message is delivered whole, so it must fit the peer's stream receive window.
        let limit = self
            .config
            .stream_send_buffer
            .min(self.config.peer_stream_window() as usize);
        if len > limit {
            return Err(SendError::MessageTooLarge { len, limit });
        }
        let credit = self.config.peer_stream_window();
        let stream = self
            .send_streams
            .entry(stream_id)
            .or_insert_with(|| SendStream::new(credit));
        if stream.finished {
            return Err(SendError::StreamClosed(stream_id));
        }
        if stream.buffered + len > self.config.stream_send_buffer
            || self.send_buffered + len > self.config.session_send_buffer
        {
            stream.blocked = true;
            return Err(SendError::WouldBlock);
        }
        let offset = stream.push(message.data, message.meta);
        stream.ack_reported = false;
        self.send_buffered += len;
        stream.stats.messages_sent += 1;
        stream.stats.bytes_sent += len as u64;
        Ok(offset)
    }

    /// Finishes a stream: nothing more will be sent on it, and its id never reopens.
    pub fn finish(&mut self, stream_id: i64) -> Result<(), SendError> {
        let credit = self.config.peer_stream_window();
        let stream = self
            .send_streams
            .entry(stream_id)
            .or_insert_with(|| SendStream::new(credit));
        if stream.finished {
            return Err(SendError::StreamClosed(stream_id));
        }
        stream.finished = true;
        stream.finish_pending = true;
        stream.ack_reported = false;
        self.closed_send.insert(stream_id);
        Ok(())
    }

    /// Skips every unacknowledged message of `stream_id` below `offset`, which must be a message
    /// boundary (an offset `send` returned, or the end of the stream). Returns the skipped range.
    pub fn skip(
        &mut self,
        stream_id: i64,
        offset: u64,
    ) -> Result<Option<std::ops::Range<u64>>, SendError> {
        let Some(stream) = self.send_streams.get_mut(&stream_id) else {
            return Ok(None);
        };
        if offset > stream.acked_base.max(stream.skip_to) && !stream.is_boundary(offset) {
            return Err(SendError::NotAMessageBoundary(offset));
        }
        let before = stream.buffered;
        let committed_before = stream.next_new;
        let skipped = stream.skip(offset);
        // Skipped bytes beyond what was ever sent consume session credit like data would, so
        // both sides keep counting offsets.
        self.session_data_sent += stream.next_new - committed_before;
        self.send_buffered -= before - stream.buffered;
        if let Some(r) = &skipped {
            stream.stats.bytes_skipped += r.end - r.start;
        }
        Ok(skipped)
    }

    /// Resets a stream: nothing more is sent or retransmitted on it, the peer stops waiting and
    /// reports what it had not delivered as skipped. Returns the unacknowledged range dropped.
    pub fn reset(&mut self, stream_id: i64) -> Result<Option<std::ops::Range<u64>>, SendError> {
        if stream_id < 0 {
            return Err(SendError::InvalidStreamId(stream_id));
        }
        let credit = self.config.peer_stream_window();
        let stream = self
            .send_streams
            .entry(stream_id)
            .or_insert_with(|| SendStream::new(credit));
        if stream.reset {
            return Err(SendError::StreamClosed(stream_id));
        }
        let before = stream.buffered;
        let committed_before = stream.next_new;
        let skipped = stream.reset();
        self.session_data_sent += stream.next_new - committed_before;
        self.send_buffered -= before - stream.buffered;
        stream.ack_reported = false;
        self.closed_send.insert(stream_id);
        if let Some(r) = &skipped {
            stream.stats.bytes_skipped += r.end - r.start;
        }
        Ok(skipped)
    }

    /// Sets a stream's scheduling priority: higher goes first, equal priorities share the
    /// paths fairly (default 0).
    pub fn set_priority(&mut self, stream_id: i64, priority: i32) {
        let credit = self.config.peer_stream_window();
        self.send_streams
            .entry(stream_id)
            .or_insert_with(|| SendStream::new(credit))
            .priority = priority;
    }

    /// Closes the session; the peer gets `reason`.
    pub fn close(&mut self, code: i32, message: impl Into<String>) {
        self.close_with(
            CloseReason {
                code,
                message: message.into(),
            },
            false,
        );
    }

    /// Reads the next message (or skip marker) of a stream, in order.
    pub fn read(&mut self, stream_id: i64) -> Option<Delivery> {
        let stream = self.recv_streams.get_mut(&stream_id)?;
        let before = stream.reasm.read_offset();
        let delivery = stream.reasm.pop();
        if delivery.is_none() {
            stream.readable_reported = false;
        }
        let advanced = stream.reasm.read_offset() - before;
        self.session_data_read += advanced;
        let stats = &mut stream.stats;
        match &delivery {
            Some(Delivery::Message(m)) => {
                stats.messages_received += 1;
                stats.bytes_received += m.data.len() as u64;
            }
            Some(Delivery::Skipped { len, .. }) => stats.bytes_skipped += len,
            None => {}
        }
        // Grant credit once a quarter window was read, and when the reader has drained what is
        // readable while part of a message waits: a message is readable only when complete, so
        // a large one that the last grant cut short would otherwise never finish. (Data of such
        // a message that arrives after this read is granted for on arrival, in
        // `on_stream_data`.) A drained stream with nothing buffered needs no grant yet: the
        // sender stops only at the credit edge, and reading up to it passes the quarter mark.
        let window = self.config.stream_receive_window;
        let target = stream.reasm.read_offset() + window;
        if target >= stream.advertised + window / 4
            || (delivery.is_none()
                && target > stream.advertised
                && stream.reasm.received_max() > stream.reasm.read_offset())
        {
            stream.advertised = target;
            self.stream_acks_pending.insert(stream_id);
        }
        let session_target = self.session_data_read + self.config.session_receive_window;
        if session_target >= self.advertised_session_data + self.config.session_receive_window / 4 {
            self.advertised_session_data = session_target;
            self.session_credit_pending = true;
        }
        if stream.reasm.is_finished() && !stream.finished_reported && !stream.reasm.is_readable() {
            stream.finished_reported = true;
            self.events.push_back(Event::StreamFinished { stream_id });
            self.retire_recv_stream(stream_id);
            self.closed_recv.insert(stream_id);
        }
        self.maybe_resume_reading();
        delivery
    }

    // ----- outputs -----

    /// Writes the next datagram (or run of packages for a byte stream) into `buf` (cleared
    /// first) and says which path it goes on.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        buf.clear();
        if !self.has_output(now) {
            return None;
        }
        self.transmit_any(now, buf)
    }

    /// `poll_transmit` once `has_output` said yes.
    fn transmit_any(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        // One path (the common case): no order to work out, nothing to allocate.
        if self.paths.len() == 1 {
            let id = *self.paths.keys().next()?;
            return self.transmit_on(now, id, buf);
        }
        // Min-RTT scheduling: the path with the lowest smoothed RTT fills first; data spills
        // to the next when its window or pacer is full.
        let mut ids: Vec<(std::time::Duration, PathId)> = self
            .paths
            .values()
            .map(|p| (p.rtt.smoothed(), p.id))
            .collect();
        ids.sort_unstable();
        ids.into_iter()
            .find_map(|(_, id)| self.transmit_on(now, id, buf))
    }

    /// As [`poll_transmit`](Self::poll_transmit), but on a plain session (no content codec)
    /// the data of a fragment of at least `min_splice` bytes is not copied into `buf`: it is
    /// pushed to `splices` (cleared first), which the caller writes in place with
    /// [`atbus_frame::spliced_segments`] (for example with one `writev`). The transmit's
    /// `size` counts the spliced bytes. A session with a codec copies as `poll_transmit` does.
    pub fn poll_transmit_spliced(
        &mut self,
        now: Instant,
        buf: &mut Vec<u8>,
        splices: &mut Vec<Splice>,
        min_splice: usize,
    ) -> Option<Transmit> {
        splices.clear();
        buf.clear();
        // Nothing to send (most calls): no splice state to set up.
        if !self.has_output(now) {
            return None;
        }
        self.out = SpliceOut {
            splices: std::mem::take(splices),
            len: 0,
            min: min_splice.max(1),
        };
        let transmit = self.transmit_any(now, buf);
        *splices = std::mem::take(&mut self.out).splices;
        transmit
    }

    /// Fills `buf` for path `id`; the transmit if anything went in.
    fn transmit_on(&mut self, now: Instant, id: PathId, buf: &mut Vec<u8>) -> Option<Transmit> {
        self.fill(now, id, buf);
        if buf.is_empty() {
            return None;
        }
        self.last_path = Some(id);
        let size = buf.len() + self.out.len;
        let p = self.paths.get_mut(&id)?;
        p.stats.bytes_sent += size as u64;
        Some(Transmit { path: id, size })
    }

    /// Whether [`Session::poll_transmit`] may have something to write at `now`: a cheap test
    /// that looks at flags and the paths' and streams' states without building anything.
    /// `false` means `poll_transmit` would write nothing and change nothing; `true` may still
    /// end in `None` (for example when a window or the pacer holds data back).
    pub fn has_output(&self, now: Instant) -> bool {
        matches!(self.state, State::Closed { .. })
            || !self.stream_acks_pending.is_empty()
            || self.session_credit_pending
            || self.stream_ack_deadline.is_some_and(|d| d <= now)
            || self
                .paths
                .values()
                .any(|p| p.pong_due.is_some() || p.next_ping <= now)
            || self.peer_paths.values().any(|a| a.needs_ack(now))
            // A stream waiting for credit may make `poll_transmit` schedule a credit probe.
            || self
                .send_streams
                .values()
                .any(|s| s.wants_to_send() || s.credit_blocked())
    }

    /// When `handle_timeout` should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_closed() {
            // A closed session has no timers; unsent close packets go out on the next
            // `poll_transmit`.
            return None;
        }
        let mut t: Option<Instant> = None;
        let mut at = |x: Instant| t = Some(t.map_or(x, |t| t.min(x)));
        for p in self.paths.values() {
            if let Some(d) =
                p.loss_deadline(self.config.timer_granularity, self.config.max_ack_delay)
            {
                at(d);
            }
            at(p.next_ping);
            if let Some(t) = p.pacing_wakeup {
                at(t);
            }
            at(p.last_received + self.config.path_idle_timeout);
        }
        for acks in self.peer_paths.values() {
            if let Some(d) = acks.ack_deadline {
                at(d);
            }
        }
        if let Some(d) = self.stream_ack_deadline {
            at(d);
        }
        if let Some(d) = self.previous_key_discard {
            at(d);
        }
        t
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ----- internals -----

    fn overhead(&self, config: &PathConfig) -> usize {
        PACKET_OVERHEAD + self.protected_overhead + self.head_len + config.headroom
    }

    fn timepoint(&self, now: Instant) -> i64 {
        now.saturating_duration_since(self.epoch).as_micros() as i64
    }

    fn close_with(&mut self, reason: CloseReason, by_peer: bool) {
        if self.is_closed() {
            return;
        }
        let unsent = if by_peer {
            BTreeSet::new()
        } else {
            self.paths.keys().copied().collect()
        };
        self.events.push_back(Event::Closed {
            reason: reason.clone(),
            by_peer,
        });
        self.state = State::Closed { reason, unsent };
    }

    fn push_frame(&self, body: Body, buf: &mut Vec<u8>) -> usize {
        // Frames are built to fit the path MTU, far below the frame limit.
        encode_parts(Some(&self.head), &body, &self.limits, buf).unwrap_or(0)
    }

    /// Fills `buf` with what path `id` should carry now.
    fn fill(&mut self, now: Instant, id: PathId, buf: &mut Vec<u8>) {
        let Some(p) = self.paths.get(&id) else { return };
        let config = p.config;
        let package_limit = config.mtu - config.headroom;
        let total_limit = if config.kind.is_reliable() {
            self.config.max_transmit_bytes.max(package_limit)
        } else {
            package_limit
        };
        let timepoint = self.timepoint(now);

        // Closing: one close packet per path, nothing else.
        if let State::Closed { reason, unsent } = &mut self.state {
            if unsent.remove(&id) {
                let content = PacketContent {
                    fragment: vec![FragmentType {
                        packet_type: packet_types::CONTROL,
                        close_reason: Some(Box::new(atbus_proto::CloseReasonData {
                            code: reason.code,
                            message: reason.message.clone(),
                        })),
                        ..FragmentType::default()
                    }],
                };
                let packet = PacketData {
                    flags: packet_flags::CLOSE_SESSION,
                    timepoint_microseconds: timepoint,
                    path_id: id.0 as i64,
                    ..PacketData::default()
                };
                self.push_close(id, packet, content, buf);
            }
            return;
        }

        // Automatic key update once the send key sealed its share of packets.
        let update_after = self.config.key_update_packets;
        if update_after > 0
            && self
                .protection
                .as_deref()
                .is_some_and(|p| p.seals() && p.sealed_packets() >= update_after)
        {
            let _ = self.update_keys(now);
        }

        // Pong and ping.
        if let Some(p) = self.paths.get_mut(&id) {
            if let Some((ping_id, tp)) = p.pong_due.take() {
                let body = Body::Pong(PingData {
                    ping_id,
                    timepoint_microseconds: tp,
                });
                self.push_control(id, body, timepoint, buf);
            }
        }
        if let Some(p) = self.paths.get_mut(&id) {
            if p.next_ping <= now {
                p.ping_id += 1;
                p.next_ping = now + self.config.keepalive_interval;
                p.ping_phase = self.protection.as_deref().and_then(Protection::send_phase);
                let body = Body::Ping(PingData {
                    ping_id: p.ping_id,
                    timepoint_microseconds: timepoint,
                });
                self.push_control(id, body, timepoint, buf);
            }
        }

        // Acknowledgements: peer path spaces that arrived here (or anywhere, if due), found
        // one after the other (building an ack clears its space's due state).
        let mut from = i64::MIN;
        while buf.len() + self.out.len + 512 <= total_limit {
            let Some(peer_path) = self
                .peer_paths
                .range(from..)
                .find(|(_, a)| {
                    a.needs_ack(now) && (a.via == Some(id) || a.via.is_none() || a.ack_now)
                })
                .map(|(&k, _)| k)
            else {
                break;
            };
            let budget = package_limit - self.overhead(&config) - self.control_wrap();
            let ack = self.build_ack(now, Some(peer_path), budget);
            self.push_control(id, Body::Acknowledge(ack), timepoint, buf);
            let Some(next) = peer_path.checked_add(1) else {
                break;
            };
            from = next;
        }
        let owed_due = self.stream_ack_deadline.is_some_and(|d| d <= now);
        if (!self.stream_acks_pending.is_empty() || self.session_credit_pending || owed_due)
            && buf.len() + self.out.len + 512 <= total_limit
        {
            let budget = package_limit - self.overhead(&config) - self.control_wrap();
            let ack = self.build_ack(now, None, budget);
            self.push_control(id, Body::Acknowledge(ack), timepoint, buf);
        }

        // A sender waiting for credit while nothing is in flight probes with an early ping: the
        // peer answers a ping with fresh credit, so a lost credit update costs one RTT.
        if let Some(p) = self.paths.get_mut(&id) {
            if p.sent.is_empty() && self.send_streams.values().any(SendStream::credit_blocked) {
                let probe = now + p.rtt.pto_base(self.config.timer_granularity);
                if probe < p.next_ping {
                    p.next_ping = probe;
                }
            }
        }

        // Stream data. Retransmissions avoid the path that lost them while another path has
        // room.
        let others_usable = self
            .paths
            .values()
            .any(|q| q.id != id && !q.blocked && q.window_has_room(self.flight_window(q)));
        loop {
            let Some(p) = self.paths.get_mut(&id) else {
                return;
            };
            let flight_window = if p.is_lossy() {
                self.config.lossy_path_window
            } else {
                self.config.byte_stream_path_window
            };
            if p.blocked || !p.window_has_room(flight_window) {
                return;
            }
            if p.is_lossy() {
                let srtt = p.rtt.smoothed();
                match p.pacer.check(now, package_limit, p.cc.window, srtt) {
                    Ok(()) => p.pacing_wakeup = None,
                    Err(at) => {
                        p.pacing_wakeup = Some(at);
                        return;
                    }
                }
            }
            let room = (total_limit - buf.len() - self.out.len).min(package_limit);
            let overhead = self.overhead(&config);
            if room < overhead + MIN_CONTENT_BUDGET {
                return;
            }
            let budget = room - overhead;
            // On a byte stream, a package may end early at no cost, so messages that fit a
            // package are not cut (the receiver then delivers them without a copy). Datagram
            // paths fill each datagram.
            let whole = config.kind.is_reliable().then(|| package_limit - overhead);
            let Some((stream_id, chunk)) = self.next_chunk(budget, whole, id, others_usable) else {
                return;
            };
            let mut flags = 0;
            if chunk.finish {
                flags |= packet_flags::FINISH_STREAM;
            }
            let stream_offset = if let Some(target) = chunk.skip_to {
                let reset = self.send_streams.get(&stream_id).is_some_and(|s| s.reset);
                flags |= if reset {
                    packet_flags::RESET_STREAM
                } else {
                    packet_flags::RESET_OFFSET
                };
                target
            } else {
                chunk.range.start
            };
            // Encoded straight into the package: no buffer of its own, no payload copy.
            let content = PacketContent {
                fragment: chunk.fragments,
            };
            let Some(p) = self.paths.get_mut(&id) else {
                return;
            };
            let pn = p.next_pn;
            p.next_pn += 1;
            let mut packet = PacketData {
                stream_id,
                stream_offset: stream_offset as i64,
                content: Bytes::new(),
                flags,
                padding_size: 0,
                timepoint_microseconds: timepoint,
                packet_number: pn as i64,
                path_id: id.0 as i64,
            };
            let Some(size) = self.encode_data_packet(&mut packet, &content, buf) else {
                return;
            };
            debug_assert!(
                size <= package_limit,
                "package {size} over limit {package_limit}"
            );
            let Some(p) = self.paths.get_mut(&id) else {
                return;
            };
            if p.is_lossy() {
                p.pacer.on_sent(size);
            }
            if chunk.retransmission {
                p.stats.bytes_retransmitted_sent += chunk.range.end - chunk.range.start;
            }
            p.stats.packets_sent += 1;
            p.bytes_in_flight += size;
            p.last_ack_eliciting_sent = Some(now);
            p.sent.insert(
                pn,
                SentPacket {
                    time_sent: now,
                    stream_id,
                    range: chunk.range,
                    finish: chunk.finish,
                    skip: chunk.skip_to.is_some(),
                    size,
                },
            );
        }
    }

    /// Appends the package of a data packet: straight into `buf` on a plain session, through
    /// the content codec otherwise (a codec failure closes the session).
    #[inline]
    fn encode_data_packet(
        &mut self,
        packet: &mut PacketData,
        content: &PacketContent,
        buf: &mut Vec<u8>,
    ) -> Option<usize> {
        let Some(protection) = self.protection.as_deref_mut() else {
            let min = self.out.min;
            if min == 0 || content.fragment.iter().all(|f| f.data.len() < min) {
                return encode_packet(Some(&self.head), packet, content, &self.limits, buf).ok();
            }
            let before = self.out.splices.len();
            let size = encode_packet_spliced(
                Some(&self.head),
                packet,
                content,
                &self.limits,
                buf,
                &mut self.out.splices,
                self.out.min,
            )
            .ok()?;
            self.out.len += self.out.splices[before..]
                .iter()
                .map(|s| s.data.len())
                .sum::<usize>();
            return Some(size);
        };
        match protection.encode(&self.head, packet, content, &self.limits, buf) {
            Ok(size) => Some(size),
            Err(err) => {
                self.close_with(
                    CloseReason {
                        code: AtbusCloseReason::InternalError as i32,
                        message: format!("cannot send: {err}"),
                    },
                    false,
                );
                None
            }
        }
    }

    /// Bytes a sealed control packet adds around an acknowledgement (0 without keys).
    fn control_wrap(&self) -> usize {
        if self.is_encrypted() { CONTROL_WRAP } else { 0 }
    }

    /// Appends a control frame (ping, pong or acknowledgement) for path `id`: as its own
    /// frame body on a session without keys; with keys, sealed in a `SESSION_CONTROL` packet
    /// numbered in the path's control space (`docs/security.md` §8.6).
    fn push_control(&mut self, id: PathId, body: Body, timepoint: i64, buf: &mut Vec<u8>) {
        let Some(protection) = self.protection.as_deref_mut().filter(|p| p.seals()) else {
            self.push_frame(body, buf);
            return;
        };
        let control = match body {
            Body::Ping(ping) => SessionControl {
                ping: Some(ping),
                ..SessionControl::default()
            },
            Body::Pong(pong) => SessionControl {
                pong: Some(pong),
                ..SessionControl::default()
            },
            Body::Acknowledge(ack) => SessionControl {
                acknowledge: Some(ack),
                ..SessionControl::default()
            },
            _ => return,
        };
        let Some(p) = self.paths.get_mut(&id) else {
            return;
        };
        let number = p.next_control;
        p.next_control += 1;
        let mut packet = PacketData {
            flags: packet_flags::SESSION_CONTROL,
            timepoint_microseconds: timepoint,
            packet_number: number as i64,
            path_id: id.0 as i64,
            ..PacketData::default()
        };
        if let Err(err) =
            protection.encode_control(&self.head, &mut packet, &control, &self.limits, buf)
        {
            self.close_with(
                CloseReason {
                    code: AtbusCloseReason::InternalError as i32,
                    message: format!("cannot send: {err}"),
                },
                false,
            );
        }
    }

    /// A ping arrived on `path`: a pong is due.
    fn on_ping(&mut self, path: PathId, ping: PingData) {
        let Some(p) = self.paths.get_mut(&path) else {
            return;
        };
        p.pong_due = Some((ping.ping_id, ping.timepoint_microseconds));
        // Credit updates ride on acks that a lossy path may drop; a ping refreshes them
        // all, so a sender blocked on credit never waits longer than one keepalive.
        self.stream_acks_pending
            .extend(self.recv_streams.keys().copied());
        self.session_credit_pending = true;
    }

    /// A pong arrived on `path`: an RTT sample when it answers the latest ping.
    fn on_pong(&mut self, now: Instant, path: PathId, pong: PingData) {
        let Some(p) = self.paths.get_mut(&path) else {
            return;
        };
        if pong.ping_id == p.ping_id {
            // A sealed pong to a ping of the current phase: the peer has our current keys.
            if let (Some(phase), Some(protection)) = (p.ping_phase, self.protection.as_deref_mut())
            {
                protection.confirm_phase(phase);
            }
            let sent = self.epoch
                + std::time::Duration::from_micros(pong.timepoint_microseconds.max(0) as u64);
            if let Some(sample) = now.checked_duration_since(sent) {
                p.rtt.update(sample, std::time::Duration::ZERO);
            }
        }
    }

    /// An opened `SESSION_CONTROL` packet: its control frames, unless it is a replay. Only a
    /// session with keys takes them (they are never sent in clear).
    fn on_control(
        &mut self,
        now: Instant,
        path: PathId,
        packet: PacketData,
    ) -> Result<(), ProtocolError> {
        let Some(protection) = self.protection.as_deref_mut().filter(|p| p.seals()) else {
            return Ok(());
        };
        if !protection.accept_control(packet.path_id, packet.packet_number as u64) {
            return Ok(());
        }
        let control = SessionControl::decode(packet.content)
            .map_err(|e| ProtocolError::BadContent(e.to_string()))?;
        if let Some(ping) = control.ping {
            self.on_ping(path, ping);
        }
        if let Some(pong) = control.pong {
            self.on_pong(now, path, pong);
        }
        match control.acknowledge {
            Some(ack) => self.on_ack(now, ack),
            None => Ok(()),
        }
    }

    /// Appends the close packet of path `id`. A protected session seals it under a fresh
    /// packet number of the path (never the number of a data packet).
    fn push_close(
        &mut self,
        id: PathId,
        mut packet: PacketData,
        content: PacketContent,
        buf: &mut Vec<u8>,
    ) {
        let Some(protection) = self.protection.as_deref_mut() else {
            packet.content = content.encode_to_vec().into();
            self.push_frame(Body::Packet(packet), buf);
            return;
        };
        let Some(p) = self.paths.get_mut(&id) else {
            return;
        };
        packet.packet_number = p.next_pn as i64;
        p.next_pn += 1;
        // A session whose keys cannot seal any more sends no close; the peer times out.
        let _ = protection.encode(&self.head, &mut packet, &content, &self.limits, buf);
    }

    /// Picks the next stream with something to send (round robin) and cuts its chunk.
    fn next_chunk(
        &mut self,
        budget: usize,
        whole: Option<usize>,
        path: PathId,
        others_usable: bool,
    ) -> Option<(i64, crate::send::Chunk)> {
        // Highest priority first; round robin among equal priorities, starting after the stream
        // served last.
        let last = self.last_stream;
        let mut wanting = self
            .send_streams
            .iter()
            .filter(|(_, s)| s.wants_to_send())
            .map(|(&id, s)| (-s.priority, id <= last, id));
        // Nothing or one stream to serve (the common cases): no order to work out.
        let first = wanting.next()?;
        let Some(second) = wanting.next() else {
            return self.chunk_of(first.2, budget, whole, path, others_usable);
        };
        let mut ids = vec![first, second];
        ids.extend(wanting);
        ids.sort_unstable();
        ids.into_iter()
            .find_map(|(_, _, id)| self.chunk_of(id, budget, whole, path, others_usable))
    }

    /// Cuts stream `id`'s next chunk, if it has one within the credit left.
    fn chunk_of(
        &mut self,
        id: i64,
        budget: usize,
        whole: Option<usize>,
        path: PathId,
        others_usable: bool,
    ) -> Option<(i64, crate::send::Chunk)> {
        let mut credit = self
            .peer_max_session_data
            .saturating_sub(self.session_data_sent);
        let before = credit;
        let stream = self.send_streams.get_mut(&id)?;
        let avoid = others_usable && stream.last_lost_path == Some(path);
        let chunk = stream.next_chunk(budget, whole, &mut credit, avoid)?;
        self.session_data_sent += before - credit;
        self.last_stream = id;
        Some((id, chunk))
    }

    fn flight_window(&self, p: &Path) -> usize {
        if p.is_lossy() {
            self.config.lossy_path_window
        } else {
            self.config.byte_stream_path_window
        }
    }

    fn build_ack(
        &mut self,
        now: Instant,
        peer_path: Option<i64>,
        budget: usize,
    ) -> AcknowledgeData {
        let mut ack = AcknowledgeData {
            path_id: -1,
            ..AcknowledgeData::default()
        };
        let mut used = 16;
        if let Some(pp) = peer_path {
            if let Some(a) = self.peer_paths.get_mut(&pp) {
                ack.path_id = pp;
                for r in a.received.iter().rev().take(self.config.max_ack_ranges) {
                    ack.received_packets.push(PacketNumberRange {
                        first: r.start as i64,
                        last: r.end as i64 - 1,
                    });
                    used += 24;
                }
                if let Some(t) = a.largest_time {
                    ack.ack_delay_microseconds =
                        now.saturating_duration_since(t).as_micros() as i64;
                }
                ack.echo_timepoint_microseconds = a.largest_timepoint;
                a.ack_now = false;
                a.ack_deadline = None;
                a.unacked_eliciting = 0;
            }
        }
        // Every stream owed an acknowledgement rides along, urgent ones first.
        while used + 56 <= budget {
            let Some(stream_id) = self
                .stream_acks_pending
                .pop_first()
                .or_else(|| self.stream_acks_owed.pop_first())
            else {
                break;
            };
            self.stream_acks_owed.remove(&stream_id);
            let Some(s) = self.recv_streams.get(&stream_id) else {
                continue;
            };
            ack.streams.push(StreamAcknowledge {
                stream_id,
                acknowledge_offset: s.reasm.contiguous_offset() as i64,
                received_max_offset: s.reasm.received_max() as i64,
                max_stream_offset: s.advertised as i64,
                closed: false,
            });
            used += 56;
        }
        if self.session_credit_pending || !ack.streams.is_empty() {
            ack.max_session_data = self.advertised_session_data as i64;
            self.session_credit_pending = false;
        }
        if self.stream_acks_owed.is_empty() {
            self.stream_ack_deadline = None;
        }
        ack
    }

    fn on_packet(
        &mut self,
        now: Instant,
        path: PathId,
        head: Option<&MessageHead>,
        mut packet: PacketData,
    ) -> Result<(), ProtocolError> {
        for (value, name) in [
            (packet.stream_id, "stream_id"),
            (packet.stream_offset, "stream_offset"),
            (packet.packet_number, "packet_number"),
            (packet.path_id, "path_id"),
        ] {
            if value < 0 {
                return Err(ProtocolError::Negative(name));
            }
        }
        if packet.flags & !packet_flags::ALL != 0 {
            return Err(ProtocolError::UnknownFlags(packet.flags));
        }
        if let Some(protection) = self.protection.as_deref_mut() {
            // A node may hand over frames without their head once it checked the source: the
            // names are then the ones the head must have carried.
            let (source, destination) = match head {
                Some(h) => (h.source.as_str(), h.destination.as_str()),
                None => (
                    self.config.peer_name.as_str(),
                    self.config.local_name.as_str(),
                ),
            };
            let phase_before = protection.receive_phase();
            match protection.open(source, destination, &mut packet) {
                Ok(()) if protection.receive_phase() != phase_before => {
                    // The peer updated its keys: keep the previous phase for reordered
                    // packets for about three probe timeouts (RFC 9001 §6.5).
                    protection.stats.key_updates_received += 1;
                    let pto = self
                        .paths
                        .values()
                        .map(|p| p.rtt.pto_base(self.config.timer_granularity))
                        .max()
                        .unwrap_or(self.config.initial_rtt);
                    self.previous_key_discard = Some(now + 3 * pto);
                }
                Ok(()) => {}
                Err(OpenFailure::Dropped) => return Ok(()),
                Err(OpenFailure::Fatal(e)) => return Err(ProtocolError::Content(e.to_string())),
            }
            if let Some(p) = self.paths.get_mut(&path) {
                p.last_received = now;
            }
        } else if packet.flags & packet_flags::ENCRYPTED != 0 {
            return Err(ProtocolError::NoKeys);
        }
        if packet.flags & packet_flags::SESSION_CONTROL != 0 {
            return self.on_control(now, path, packet);
        }
        if packet.flags & packet_flags::CLOSE_SESSION != 0 {
            let content = PacketContent::decode(packet.content.clone())
                .map_err(|e| ProtocolError::BadContent(e.to_string()))?;
            let reason = content
                .fragment
                .iter()
                .find_map(|f| f.close_reason.clone())
                .map(|r| CloseReason {
                    code: r.code,
                    message: r.message,
                })
                .unwrap_or(CloseReason {
                    code: AtbusCloseReason::Normal as i32,
                    message: String::new(),
                });
            self.close_with(reason, true);
            return Ok(());
        }
        let mut fragments = std::mem::take(&mut self.fragments);
        if let Err(e) = decode_fragments(&packet.content, &mut fragments) {
            return Err(ProtocolError::BadContent(e.to_string()));
        }
        if self.is_closed() {
            return Ok(());
        }
        let accepted = self.on_stream_data(path, &packet, &mut fragments);
        // The vector is kept for the next packet; its fragments are moved out or dropped.
        fragments.clear();
        self.fragments = fragments;
        let accepted = accepted?;
        if !accepted {
            // Dropped for lack of buffer: not acknowledged, so the peer sends it again.
            return Ok(());
        }
        let max_ranges = self.config.max_ack_ranges;
        if !self.peer_paths.contains_key(&packet.path_id) && self.peer_paths.len() >= MAX_PEER_PATHS
        {
            if let Some(&oldest) = self.peer_paths.keys().next() {
                self.peer_paths.remove(&oldest);
            }
        }
        let acks = self.peer_paths.entry(packet.path_id).or_default();
        acks.via = Some(path);
        acks.on_packet(
            packet.packet_number as u64,
            now,
            packet.timepoint_microseconds,
            max_ranges,
        );
        acks.unacked_eliciting += 1;
        if self.config.no_delay {
            acks.ack_now = true;
        }
        if acks.unacked_eliciting >= self.config.ack_eliciting_threshold {
            acks.ack_now = true;
        }
        if acks.ack_deadline.is_none() {
            acks.ack_deadline = Some(now + self.config.max_ack_delay);
        }
        if !self.stream_acks_owed.is_empty() {
            if self.config.no_delay {
                self.stream_acks_pending
                    .extend(std::mem::take(&mut self.stream_acks_owed));
            } else if self.stream_ack_deadline.is_none() {
                self.stream_ack_deadline = Some(now + self.config.max_ack_delay);
            }
        }
        Ok(())
    }

    /// Applies a packet's stream data; returns false when it was dropped for lack of buffer.
    fn on_stream_data(
        &mut self,
        path: PathId,
        packet: &PacketData,
        fragments: &mut Vec<ReceivedFragment>,
    ) -> Result<bool, ProtocolError> {
        let stream_id = packet.stream_id;
        if self.closed_recv.contains(&stream_id) {
            return Ok(true);
        }
        if !self.recv_streams.contains_key(&stream_id) {
            if self.recv_streams.len() >= self.config.max_streams {
                return Err(ProtocolError::TooManyStreams(self.config.max_streams));
            }
            let window = self.config.stream_receive_window;
            self.recv_streams.insert(
                stream_id,
                RecvStream {
                    stats: StreamStats::default(),
                    // The window bounds what the peer may send; a quarter more absorbs
                    // retransmitted overlaps.
                    reasm: Reassembler::new((window + window / 4) as usize),
                    advertised: window,
                    readable_reported: false,
                    finished_reported: false,
                },
            );
        }
        let incoming: usize = fragments.iter().map(|f| f.data.len()).sum();
        let session_full = incoming > 0
            && self.receive_buffered() + incoming > self.config.session_receive_window as usize;
        let reliable = self
            .paths
            .get(&path)
            .is_some_and(|p| p.config.kind.is_reliable());
        let Some(stream) = self.recv_streams.get_mut(&stream_id) else {
            return Ok(true);
        };
        let reasm_err = |error| ProtocolError::Reassembly { stream_id, error };
        let offset = packet.stream_offset as u64;
        if packet.flags & packet_flags::RESET_OFFSET != 0 {
            stream.reasm.skip_to(offset).map_err(reasm_err)?;
        }
        let mut pos = offset;
        let mut pieces = Vec::with_capacity(fragments.len());
        for f in fragments.drain(..) {
            if f.data.is_empty() {
                continue;
            }
            let len = f.data.len() as u64;
            pieces.push(Piece {
                offset: pos,
                data: f.data,
                ends_message: !f.has_more,
                meta: f.meta,
            });
            pos = pos
                .checked_add(len)
                .ok_or(reasm_err(ReassemblyError::OffsetOverflow))?;
        }
        // Skip and reset notices carry no data and need no credit.
        if pos > offset && pos > stream.advertised {
            return Err(ProtocolError::CreditExceeded {
                stream_id,
                end: pos,
                credit: stream.advertised,
            });
        }
        let mut paused = false;
        for piece in pieces {
            let result = if session_full {
                Err(ReassemblyError::BufferFull {
                    buffered: 0,
                    limit: 0,
                })
            } else {
                stream.reasm.insert(piece.clone())
            };
            match result {
                Ok(_) => {}
                Err(ReassemblyError::BufferFull { .. }) if reliable => {
                    stream.reasm.insert_forced(piece).map_err(reasm_err)?;
                    paused = true;
                }
                Err(ReassemblyError::BufferFull { .. }) => return Ok(false),
                Err(error) => return Err(reasm_err(error)),
            }
        }
        if packet.flags & packet_flags::FINISH_STREAM != 0 {
            stream.reasm.set_final_size(pos).map_err(reasm_err)?;
        }
        if packet.flags & packet_flags::RESET_STREAM != 0 && stream.reasm.final_size().is_none() {
            stream.reasm.set_final_size(offset).map_err(reasm_err)?;
            stream.reasm.skip_to(offset).map_err(reasm_err)?;
            self.events.push_back(Event::StreamReset {
                stream_id,
                final_size: offset,
            });
        }
        // Acknowledged with the next path acknowledgement (at most `max_ack_delay` away): the
        // sender's buffer and loss state wait on it, nothing else does.
        self.stream_acks_owed.insert(stream_id);
        // Part of a message arrived that the reader cannot take until more credit is granted:
        // the reader already drained what was readable, so grant now (see `read`).
        let window = self.config.stream_receive_window;
        let target = stream.reasm.read_offset() + window;
        if !stream.reasm.is_readable()
            && target > stream.advertised
            && stream.reasm.received_max() > stream.reasm.read_offset()
        {
            stream.advertised = target;
            self.stream_acks_pending.insert(stream_id);
        }
        if stream.reasm.is_readable() && !stream.readable_reported {
            stream.readable_reported = true;
            self.events.push_back(Event::StreamReadable { stream_id });
        }
        if stream.reasm.is_finished() && !stream.finished_reported && !stream.reasm.is_readable() {
            stream.finished_reported = true;
            self.events.push_back(Event::StreamFinished { stream_id });
            self.retire_recv_stream(stream_id);
            self.closed_recv.insert(stream_id);
        }
        if paused {
            if let Some(p) = self.paths.get_mut(&path) {
                if !p.read_paused {
                    p.read_paused = true;
                    self.events.push_back(Event::PauseReading { path });
                }
            }
        }
        Ok(true)
    }

    /// Drops a finished receive stream, keeping its counters.
    fn retire_recv_stream(&mut self, stream_id: i64) {
        if let Some(r) = self.recv_streams.remove(&stream_id) {
            self.stream_stats
                .entry(stream_id)
                .or_default()
                .add(&r.stats);
        }
    }

    fn maybe_resume_reading(&mut self) {
        if !self.paths.values().any(|p| p.read_paused)
            || self.receive_buffered() * 2 > self.config.session_receive_window as usize
        {
            return;
        }
        for p in self.paths.values_mut() {
            if p.read_paused {
                p.read_paused = false;
                self.events.push_back(Event::ResumeReading { path: p.id });
            }
        }
    }

    fn on_ack(&mut self, now: Instant, ack: AcknowledgeData) -> Result<(), ProtocolError> {
        if ack.max_session_data > 0 {
            self.peer_max_session_data =
                self.peer_max_session_data.max(ack.max_session_data as u64);
        }
        for s in &ack.streams {
            if s.stream_id < 0 || s.acknowledge_offset < 0 || s.max_stream_offset < 0 {
                return Err(ProtocolError::Negative("stream_acknowledge field"));
            }
            if let Some(stream) = self.send_streams.get_mut(&s.stream_id) {
                stream.max_offset = stream.max_offset.max(s.max_stream_offset as u64);
                let released = stream.on_cumulative_ack(s.acknowledge_offset as u64);
                self.send_buffered -= released;
            }
        }
        let granularity = self.config.timer_granularity;
        if ack.path_id >= 0 {
            let id = PathId(ack.path_id as u64);
            if let Some(p) = self.paths.get_mut(&id) {
                let mut newly = Vec::new();
                let mut largest_newly: Option<(u64, Instant)> = None;
                for r in &ack.received_packets {
                    if r.first < 0 || r.last < r.first {
                        return Err(ProtocolError::Negative("packet range"));
                    }
                    // One acknowledged packet at a time: nothing to collect first.
                    while let Some(pn) = p
                        .sent
                        .range(r.first as u64..=r.last as u64)
                        .next()
                        .map(|(&k, _)| k)
                    {
                        if let Some(sp) = p.sent.remove(&pn) {
                            p.bytes_in_flight -= sp.size;
                            if largest_newly.is_none_or(|(l, _)| pn > l) {
                                largest_newly = Some((pn, sp.time_sent));
                            }
                            newly.push(sp);
                        }
                    }
                    let last = r.last as u64;
                    p.largest_acked = Some(p.largest_acked.map_or(last, |l| l.max(last)));
                }
                if let Some((pn, sent)) = largest_newly {
                    if p.largest_acked == Some(pn) {
                        let ack_delay = std::time::Duration::from_micros(
                            ack.ack_delay_microseconds.max(0) as u64,
                        )
                        .min(self.config.max_ack_delay);
                        if let Some(sample) = now.checked_duration_since(sent) {
                            p.rtt.update(sample, ack_delay);
                        }
                    }
                    p.pto_count = 0;
                }
                let lost = p.detect_lost(now, granularity);
                if p.is_lossy() {
                    for sp in &newly {
                        p.cc.on_ack(sp.time_sent, sp.size);
                    }
                }
                for sp in newly {
                    self.on_acked(sp);
                }
                self.on_lost(now, lost, Some(id));
            }
        }
        self.report_writable();
        Ok(())
    }

    fn on_acked(&mut self, sp: SentPacket) {
        let Some(stream) = self.send_streams.get_mut(&sp.stream_id) else {
            return;
        };
        if sp.skip && sp.range.end == stream.skip_to {
            stream.skip_acked = true;
        }
        let released = stream.on_acked(sp.range.clone());
        if sp.finish && stream.acked_base >= stream.end {
            stream.finish_acked = true;
        }
        self.send_buffered -= released;
    }

    /// Packets of path `from` were declared lost at `now`: a congestion signal, then the data
    /// goes out again (preferably on another path).
    fn on_lost(&mut self, now: Instant, lost: Vec<SentPacket>, from: Option<PathId>) {
        if let (Some(p), Some(latest)) = (
            from.and_then(|id| self.paths.get_mut(&id)),
            lost.iter().map(|sp| sp.time_sent).max(),
        ) {
            if p.is_lossy() {
                let burst = p.loss_burst;
                p.cc.on_loss(now, latest, burst);
            }
        }
        for sp in &lost {
            if let Some(stream) = self.send_streams.get_mut(&sp.stream_id) {
                stream.last_lost_path = from;
            }
        }
        self.requeue(lost, from);
    }

    /// A path went away with packets in flight: they go out again, no congestion signal.
    fn on_lost_without_congestion(&mut self, lost: Vec<SentPacket>) {
        self.requeue(lost, None);
    }

    fn requeue(&mut self, lost: Vec<SentPacket>, from: Option<PathId>) {
        for sp in lost {
            let Some(stream) = self.send_streams.get_mut(&sp.stream_id) else {
                continue;
            };
            let len = sp.range.end - sp.range.start;
            stream.on_lost(sp.range.clone());
            if sp.finish && !stream.finish_acked {
                stream.finish_pending = true;
            }
            if sp.skip && !stream.skip_acked && sp.range.end == stream.skip_to {
                stream.skip_pending = true;
            }
            stream.stats.bytes_retransmitted += len;
            if let Some(p) = from.and_then(|id| self.paths.get_mut(&id)) {
                p.stats.bytes_retransmitted += len;
            }
        }
    }

    fn report_writable(&mut self) {
        let session_room = self.send_buffered < self.config.session_send_buffer;
        for (&id, s) in self.send_streams.iter_mut() {
            if s.blocked && session_room && s.buffered < self.config.stream_send_buffer {
                s.blocked = false;
                self.events.push_back(Event::Writable { stream_id: id });
            }
            if s.finished && s.all_acked() && !s.ack_reported {
                s.ack_reported = true;
                self.events
                    .push_back(Event::StreamAcknowledged { stream_id: id });
            }
        }
    }
}
