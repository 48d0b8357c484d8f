//! Identifiers, events and statuses the transport hands to its driver.

use std::fmt;
use std::io;
use std::sync::Arc;

use bytes::Bytes;

use crate::url::Url;

/// One link (connection or UDP association); ids are never reused within a transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub u64);

/// One listening endpoint; ids are never reused within a transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(pub u64);

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "link#{}", self.0)
    }
}

impl fmt::Display for ListenerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "listener#{}", self.0)
    }
}

/// What a link carries, which tells the core how to frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkKind {
    /// TCP or Unix stream: packages back to back, delivered as [`TransportEvent::Bytes`] in
    /// arbitrary splits; reliable and ordered while the link is up.
    ByteStream,
    /// UDP: each [`TransportEvent::Datagram`] is one datagram; may be lost, duplicated, reordered.
    Datagram,
    /// In-process: each `send` arrives whole as one [`TransportEvent::Datagram`], reliable and
    /// ordered.
    InProcess,
}

/// Who opened the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Accepted by one of our listeners (or a new UDP peer seen by one).
    Inbound,
    /// Opened by [`Transport::connect`](crate::Transport::connect).
    Outbound,
}

/// Why a link ended. Every link id ends with exactly one [`TransportEvent::LinkClosed`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CloseReason {
    /// Closed locally; everything queued was written (and the peer finished, for byte streams).
    Local,
    /// Closed locally, but `close_timeout` passed with `unsent` bytes still queued.
    LocalTimeout {
        /// Bytes that were never written.
        unsent: usize,
    },
    /// The peer closed its end (end of stream, or in-process peer closed or dropped).
    PeerClosed,
    /// The connection could not be established (refused, unreachable, resolution failed, no such
    /// `mem://` name).
    ConnectFailed(Arc<io::Error>),
    /// The link failed after it was up (reset, refused UDP peer, ...).
    Io(Arc<io::Error>),
}

impl CloseReason {
    /// The error behind this close, if it was not an orderly one.
    pub fn error(&self) -> Option<&io::Error> {
        match self {
            CloseReason::ConnectFailed(e) | CloseReason::Io(e) => Some(e),
            CloseReason::Local | CloseReason::LocalTimeout { .. } | CloseReason::PeerClosed => None,
        }
    }
}

/// Something that happened on the transport.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TransportEvent {
    /// A link is ready to carry data.
    LinkUp {
        /// The link.
        link: LinkId,
        /// Byte stream, datagram or in-process.
        kind: LinkKind,
        /// Accepted or connected by us.
        direction: Direction,
        /// Our end (for an outbound Unix link, whose end is unnamed: the dialed URL).
        local: Url,
        /// The peer's address as text (`ip:port`, a socket path or a `mem://` name).
        peer: String,
        /// Largest package the core should build for this link (advisory).
        mtu: usize,
    },
    /// Bytes read from a byte-stream link, in order; any split of what the peer sent.
    Bytes {
        /// The link.
        link: LinkId,
        /// The bytes (a slice of the transport's reusable read buffer; drop it soon).
        data: Bytes,
    },
    /// One datagram (UDP) or one whole in-process chunk.
    Datagram {
        /// The link.
        link: LinkId,
        /// The datagram.
        data: Bytes,
    },
    /// A link that answered [`SendStatus::Blocked`] has room again.
    Writable {
        /// The link.
        link: LinkId,
    },
    /// A link ended; its id is dead from now on.
    LinkClosed {
        /// The link.
        link: LinkId,
        /// Why.
        reason: CloseReason,
    },
    /// A [`TransportHandle`](crate::TransportHandle) woke the loop (its posted commands have run).
    Woken,
}

/// What `send` did with the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStatus {
    /// Handed to the kernel (or to the in-process peer) entirely.
    Sent,
    /// Accepted; part or all of it waits in the link's write queue.
    Queued,
    /// Not accepted: the write queue is full. Wait for [`TransportEvent::Writable`].
    Blocked,
    /// UDP only: the socket buffer was full and the datagram was dropped (and counted).
    Dropped,
}

/// Counters of one link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Bytes handed to the kernel or the in-process peer.
    pub bytes_sent: u64,
    /// Bytes delivered to the driver.
    pub bytes_received: u64,
    /// Datagrams or in-process chunks sent.
    pub datagrams_sent: u64,
    /// Datagrams or in-process chunks delivered.
    pub datagrams_received: u64,
    /// UDP datagrams dropped on send because the socket buffer was full.
    pub send_drops: u64,
    /// UDP datagrams dropped on receive because reading was paused.
    pub paused_drops: u64,
    /// Bytes waiting in the write queue (byte streams) or in flight (in-process) right now.
    pub queued_bytes: usize,
}

/// Counters of one listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenerStats {
    /// Links accepted (byte streams, in-process) or UDP peers admitted.
    pub accepted: u64,
    /// UDP peers currently served by this socket.
    pub udp_peers: usize,
    /// UDP datagrams dropped because the peer limit was reached.
    pub udp_peer_limit_drops: u64,
}
