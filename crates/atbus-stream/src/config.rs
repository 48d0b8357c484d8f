//! Session configuration, errors and events.

use std::time::Duration;

use crate::reassembly::ReassemblyError;

/// Tunables of a session; every limit has a default here and is documented in `docs/stream.md`.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// This node's name (written as `message_head.source`).
    pub local_name: String,
    /// The peer node's name (written as `message_head.destination`).
    pub peer_name: String,
    /// Receive credit granted per stream beyond what the application has read.
    pub stream_receive_window: u64,
    /// Receive credit granted for the whole session beyond what the application has read.
    pub session_receive_window: u64,
    /// Bytes a stream may hold queued or unacknowledged before `send` returns `WouldBlock`.
    pub stream_send_buffer: usize,
    /// Bytes all streams together may hold before `send` returns `WouldBlock`.
    pub session_send_buffer: usize,
    /// Most streams the peer may open (receive side).
    pub max_streams: usize,
    /// Unacknowledged bytes allowed in flight on one lossy path (the scheduler's room).
    pub lossy_path_window: usize,
    /// Unacknowledged bytes allowed in flight on one byte-stream path.
    pub byte_stream_path_window: usize,
    /// Most bytes `poll_transmit` writes for one byte-stream path in one call.
    pub max_transmit_bytes: usize,
    /// RTT assumed before the first sample.
    pub initial_rtt: Duration,
    /// Longest the receiver waits before acknowledging an ack-eliciting packet.
    pub max_ack_delay: Duration,
    /// Ack at once after this many ack-eliciting packets.
    pub ack_eliciting_threshold: u32,
    /// Smallest timer step (RFC 9002 kGranularity).
    pub timer_granularity: Duration,
    /// Interval of pings on each path.
    pub keepalive_interval: Duration,
    /// A path from which nothing arrived for this long is reported dead and dropped.
    pub path_idle_timeout: Duration,
    /// Most packet-number ranges carried in one acknowledgement.
    pub max_ack_ranges: usize,
    /// Low-latency mode for real-time traffic (KCP-style): acknowledge at once, lower RTO floor
    /// and gentler back-off, fast retransmit after fewer signals, no window halving on a single
    /// loss.
    pub no_delay: bool,
    /// The peer's stream receive window (its initial credit per stream), learned in the
    /// handshake; `None` assumes it equals `stream_receive_window`.
    pub peer_stream_receive_window: Option<u64>,
    /// The peer's session receive window, learned in the handshake; `None` assumes it equals
    /// `session_receive_window`.
    pub peer_session_receive_window: Option<u64>,
    /// On a session with keys, move the send direction to the next key phase after sealing
    /// this many packets under one key (default 2²², below AES-256-GCM's 2²³ limit; see
    /// `docs/security.md` §8.6). 0 turns automatic updates off.
    pub key_update_packets: u64,
}

impl SessionConfig {
    /// Initial credit per stream granted by the peer.
    pub fn peer_stream_window(&self) -> u64 {
        self.peer_stream_receive_window
            .unwrap_or(self.stream_receive_window)
    }

    /// Initial session credit granted by the peer.
    pub fn peer_session_window(&self) -> u64 {
        self.peer_session_receive_window
            .unwrap_or(self.session_receive_window)
    }

    /// Defaults for a session between `local_name` and `peer_name`.
    pub fn new(local_name: impl Into<String>, peer_name: impl Into<String>) -> Self {
        Self {
            local_name: local_name.into(),
            peer_name: peer_name.into(),
            stream_receive_window: 1024 * 1024,
            session_receive_window: 16 * 1024 * 1024,
            stream_send_buffer: 4 * 1024 * 1024,
            session_send_buffer: 64 * 1024 * 1024,
            max_streams: 1024,
            lossy_path_window: 256 * 1024,
            byte_stream_path_window: 1024 * 1024,
            max_transmit_bytes: 64 * 1024,
            initial_rtt: Duration::from_millis(100),
            max_ack_delay: Duration::from_millis(10),
            ack_eliciting_threshold: 2,
            timer_granularity: Duration::from_millis(1),
            keepalive_interval: Duration::from_secs(1),
            path_idle_timeout: Duration::from_secs(10),
            max_ack_ranges: 32,
            no_delay: false,
            peer_stream_receive_window: None,
            peer_session_receive_window: None,
            key_update_packets: 1 << 22,
        }
    }
}

/// What kind of link a path runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// A direct TCP or Unix byte stream: reliable while open, never retransmitted on itself.
    ByteStream,
    /// A UDP association: lossy.
    Datagram,
    /// A link to a relay that forwards to the peer: lossy (relays may drop).
    Relayed,
}

impl PathKind {
    /// Whether data sent on an open path of this kind always arrives.
    pub fn is_reliable(self) -> bool {
        self == PathKind::ByteStream
    }
}

/// How a path is added to a session.
#[derive(Debug, Clone, Copy)]
pub struct PathConfig {
    /// Link kind.
    pub kind: PathKind,
    /// Largest package (or datagram payload) the path carries, in bytes.
    pub mtu: usize,
    /// Bytes left free in every package for head fields relays add.
    pub headroom: usize,
}

impl PathConfig {
    /// Headroom left on relayed paths by default: room for `forward_for_source` names up to 64
    /// bytes, the connection id and the hop count.
    pub const RELAY_HEADROOM: usize = 96;

    /// A path of `kind` with `mtu`; relayed paths get [`Self::RELAY_HEADROOM`].
    pub fn new(kind: PathKind, mtu: usize) -> Self {
        let headroom = if kind == PathKind::Relayed {
            Self::RELAY_HEADROOM
        } else {
            0
        };
        Self {
            kind,
            mtu,
            headroom,
        }
    }
}

/// Identifies a path inside one session (this side's numbering; sent as `packet_data.path_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathId(pub u64);

/// Why `send` and friends refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The stream or session buffer is full; a `Writable` event follows when room returns.
    #[error("send buffer full; wait for a Writable event")]
    WouldBlock,
    /// Messages are never empty.
    #[error("a message must not be empty")]
    EmptyMessage,
    /// The message can never fit the stream send buffer or the peer's stream receive window.
    #[error(
        "message of {len} bytes exceeds the largest message of {limit} bytes (stream send buffer and receive window)"
    )]
    MessageTooLarge {
        /// Message length.
        len: usize,
        /// The buffer limit.
        limit: usize,
    },
    /// The stream was finished or reset; its id never reopens.
    #[error("stream {0} is closed")]
    StreamClosed(i64),
    /// Stream ids are non-negative.
    #[error("invalid stream id {0}")]
    InvalidStreamId(i64),
    /// The skip target is not a message boundary of unacknowledged data.
    #[error("skip target {0} is not a message boundary")]
    NotAMessageBoundary(u64),
    /// The session is closed.
    #[error("session closed")]
    SessionClosed,
}

/// Why a path could not be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The MTU leaves no room for data after headers and headroom.
    #[error("path MTU {mtu} is too small: at least {min} bytes needed")]
    MtuTooSmall {
        /// Given MTU.
        mtu: usize,
        /// Smallest usable MTU for this session.
        min: usize,
    },
    /// No such path.
    #[error("unknown path {0:?}")]
    UnknownPath(PathId),
}

/// A protocol violation by the peer; the session closes with `PROTOCOL_ERROR`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A field that must not be negative was.
    #[error("negative {0}")]
    Negative(&'static str),
    /// Unknown flag bits.
    #[error("unknown packet flags {0:#x}")]
    UnknownFlags(i32),
    /// `content` is not a `packet_content`.
    #[error("packet content does not decode: {0}")]
    BadContent(String),
    /// Data beyond the granted credit.
    #[error("stream {stream_id} data up to {end} exceeds credit {credit}")]
    CreditExceeded {
        /// Stream.
        stream_id: i64,
        /// End offset of the data.
        end: u64,
        /// Credit granted.
        credit: u64,
    },
    /// More streams than allowed.
    #[error("more than {0} streams")]
    TooManyStreams(usize),
    /// The reassembler refused the data.
    #[error("stream {stream_id}: {error}")]
    Reassembly {
        /// Stream.
        stream_id: i64,
        /// What was wrong.
        error: ReassemblyError,
    },
    /// Encrypted content on a session without keys.
    #[error("encrypted content but no keys")]
    NoKeys,
    /// Protected content failed in a way that ends the session: the receive key reached its
    /// integrity limit, or content that opened does not decompress.
    #[error("content protection: {0}")]
    Content(String),
}

/// Why a key update was refused ([`crate::Session::update_keys`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyUpdateError {
    /// The session has no keys.
    #[error("the session has no keys")]
    NoKeys,
    /// The previous update is not confirmed yet: no packet of the current phase was answered
    /// by the peer, so it may not have the current keys (updating again could leave it two
    /// phases behind).
    #[error("the previous key update is not confirmed by the peer yet")]
    NotConfirmed,
}

/// Why the session closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// One of `ATBUS_CLOSE_REASON_*`.
    pub code: i32,
    /// Human-readable detail.
    pub message: String,
}

/// Something the application (or driver) should know; pulled with `Session::poll_event`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// `Session::read` on this stream will return something.
    StreamReadable {
        /// Stream.
        stream_id: i64,
    },
    /// A stream that returned `WouldBlock` has room again.
    Writable {
        /// Stream.
        stream_id: i64,
    },
    /// Every message the sender finished the stream with was read.
    StreamFinished {
        /// Stream.
        stream_id: i64,
    },
    /// The peer reset the stream; messages not yet delivered are reported by `read` as skipped.
    StreamReset {
        /// Stream.
        stream_id: i64,
        /// Final size.
        final_size: u64,
    },
    /// Everything sent on the stream, including its finish, was acknowledged.
    StreamAcknowledged {
        /// Stream.
        stream_id: i64,
    },
    /// Nothing arrived on the path for the idle timeout; it was removed and its data moved.
    PathDead {
        /// Path.
        path: PathId,
    },
    /// The receive buffer is full: stop reading this byte-stream link until `ResumeReading`.
    PauseReading {
        /// Path.
        path: PathId,
    },
    /// The application read enough: reading the link may go on.
    ResumeReading {
        /// Path.
        path: PathId,
    },
    /// The session closed.
    Closed {
        /// Why.
        reason: CloseReason,
        /// Whether the peer closed it.
        by_peer: bool,
    },
}
