//! Identifiers, inputs and outputs of the node: links, actions, events.

use atbus_proto::AtbusCloseReason;
use atbus_stream::MessageMeta;
use bytes::Bytes;

/// Identifies one link (transport connection). Unique per node; allocate with
/// [`crate::Node::new_link_id`] or take the one a [`Action::Connect`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId(pub u64);

/// What kind of transport a link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// TCP or Unix byte stream: bytes in any split, reliable and ordered while open.
    ByteStream,
    /// UDP association: whole datagrams of one or more packages, lossy.
    Datagram,
    /// In-process channel: whole buffers of one or more packages, reliable and ordered.
    InProcess,
}

impl LinkKind {
    /// Whether everything written arrives, in order, while the link is open.
    pub fn is_reliable(self) -> bool {
        self != LinkKind::Datagram
    }
}

/// What an authenticated link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkRole {
    /// A path of the session with the peer.
    Session,
    /// A link to a trusted relay: relayed paths of the sessions with other peers.
    ToRelay,
    /// Router mode: the owner routes its frames.
    Routed,
}

/// What the handshake established about a link ([`crate::Node::link_info`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Authenticated peer name.
    pub peer: String,
    /// Capability bits the peer announced (router-mode links only; 0 otherwise).
    pub capabilities: i64,
    /// Access key id the peer proved (router-mode links only; empty on open links).
    pub key_id: String,
    /// Transport kind.
    pub kind: LinkKind,
    /// Largest package (byte streams) or datagram payload this side's transport carries.
    pub mtu: usize,
    /// Largest package the peer said it accepts (router-mode links; otherwise `mtu`).
    pub peer_max_package: usize,
    /// What the link is for.
    pub role: LinkRole,
}

/// Who opened the link: the opener speaks first in the handshake (the "client").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// This node opened the link; it sends `hello`.
    Outbound,
    /// The peer opened the link; this node answers with `hello_reply`.
    Inbound,
}

/// Close reason of a link, from this node or from the peer's `link_close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkCloseReason {
    /// One of `ATBUS_CLOSE_REASON_*`.
    pub code: AtbusCloseReason,
    /// Human-readable detail.
    pub message: String,
    /// Whether the peer sent it (otherwise this node decided).
    pub by_peer: bool,
}

impl LinkCloseReason {
    pub(crate) fn local(code: AtbusCloseReason, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            by_peer: false,
        }
    }
}

impl std::fmt::Display for LinkCloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = if self.by_peer { "peer" } else { "local" };
        write!(f, "{} ({who}): {}", self.code.as_str_name(), self.message)
    }
}

/// Something the driver must do; pulled with [`crate::Node::poll_action`]. Drain
/// `poll_transmit` before acting on a `Close`, so a `link_close` queued for the link goes out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Close the link (after writing what `poll_transmit` gave for it), then call nothing more
    /// for it; `handle_link_closed` is not needed.
    Close {
        /// Link.
        link: LinkId,
        /// Why.
        reason: LinkCloseReason,
    },
    /// Stop reading this byte-stream link: the peer's session has too much unread data.
    PauseReading {
        /// Link.
        link: LinkId,
    },
    /// Reading the link may go on.
    ResumeReading {
        /// Link.
        link: LinkId,
    },
    /// Open a connection to `peer_url` and report it as `link` with `handle_link_up(..,
    /// Direction::Outbound)`, or with `handle_link_closed` if it failed.
    Connect {
        /// The id the new link gets.
        link: LinkId,
        /// Configured URL of the peer (opaque to the node).
        peer_url: String,
    },
}

/// Why a message could not be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UndeliverableReason {
    /// The peer restarted (new incarnation) before acknowledging it.
    PeerRestarted,
    /// The last link to the peer died and no new one came within the reconnect wait.
    ReconnectTimeout,
    /// The session closed (by either side, or on a protocol error).
    SessionClosed,
    /// The node dropped the peer for another reason (shutdown, limits).
    Dropped,
}

/// Something the application should know; pulled with [`crate::Node::poll_event`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// A link finished its handshake and authentication and belongs to `peer`'s session.
    LinkAccepted {
        /// Link.
        link: LinkId,
        /// Authenticated peer name.
        peer: String,
    },
    /// The handshake on a link failed (on this side or the peer's); the link is closed.
    LinkRejected {
        /// Link.
        link: LinkId,
        /// Why.
        reason: LinkCloseReason,
    },
    /// An established link closed (by the driver, the peer, liveness or an error).
    LinkClosed {
        /// Link.
        link: LinkId,
        /// Peer it belonged to.
        peer: String,
        /// Why, when known.
        reason: Option<LinkCloseReason>,
    },
    /// The first link to `peer` (this incarnation) is up.
    PeerUp {
        /// Peer name.
        peer: String,
        /// The peer's incarnation id; -1 when the session has relayed paths only (the peer's
        /// incarnation is learned from a direct handshake).
        incarnation: i64,
    },
    /// The last link to `peer` is gone; its unacknowledged messages wait for a reconnect.
    PeerDown {
        /// Peer name.
        peer: String,
    },
    /// `Node::read(peer, stream_id)` returns something.
    Readable {
        /// Peer name.
        peer: String,
        /// Stream.
        stream_id: i64,
    },
    /// A stream that returned `WouldBlock` has room again.
    Writable {
        /// Peer name.
        peer: String,
        /// Stream.
        stream_id: i64,
    },
    /// The peer reset or skipped data of a stream; `read` reports the skipped ranges in order.
    Skipped {
        /// Peer name.
        peer: String,
        /// Stream.
        stream_id: i64,
        /// Final size of the reset stream.
        final_size: u64,
    },
    /// Every message sent on a finished stream was acknowledged.
    StreamAcknowledged {
        /// Peer name.
        peer: String,
        /// Stream.
        stream_id: i64,
    },
    /// A message sent to `peer` will never be delivered; the application may send it again.
    Undeliverable {
        /// Peer name.
        peer: String,
        /// Stream.
        stream_id: i64,
        /// Stream offset `send` returned for it.
        offset: u64,
        /// The payload.
        data: Bytes,
        /// Its metadata.
        meta: MessageMeta,
        /// Why.
        reason: UndeliverableReason,
    },
    /// A message that arrived as 0-RTT early data in a client's first flight (delivered once,
    /// before the handshake finished). It may have been delayed by up to the freshness window:
    /// refuse non-idempotent requests here. It is not part of the stream's ordered data. It
    /// comes before the link's `LinkAccepted`: answer after that event (until then an older
    /// session of the same name, about to be replaced, may still exist).
    EarlyData {
        /// Peer name (the name its credential binds).
        peer: String,
        /// Stream.
        stream_id: i64,
        /// The message.
        data: Bytes,
    },
    /// Client: whether the server accepted the early data of a first flight; refused early
    /// data was sent again in the session.
    EarlyDataStatus {
        /// Peer (server) name.
        peer: String,
        /// Accepted and delivered as 0-RTT.
        accepted: bool,
    },
    /// Client: the server assigned this node a name (it asked with
    /// `NodeConfig::request_assigned_name`), and a token to reconnect with it if the server
    /// issues tokens (the node keeps it as its `signed_token`).
    NameAssigned {
        /// The name this node now uses.
        name: String,
        /// The token (`atbus1.…`), when one came with the name.
        token: Option<String>,
    },
    /// Server with [`crate::AnonymousPolicy::reserve_names`]: reserve `name` (assigned to the
    /// anonymous peer on `link`) in the shared registry with put-if-absent, then answer with
    /// [`crate::Node::handle_name_reserved`]. The peer is accepted only once it is reserved.
    ReserveName {
        /// The link of the peer's handshake.
        link: LinkId,
        /// The assigned name.
        name: String,
    },
    /// Server: a reserved name is no longer used (its handshake failed, or its peer's session
    /// was dropped): remove it from the registry.
    ReleaseName {
        /// The name.
        name: String,
    },
    /// A relay could not forward a frame this node sent (`forward_error`).
    ForwardError {
        /// The link to the relay it came back on.
        link: LinkId,
        /// The relay that reported it.
        relay: String,
        /// The destination that could not be reached.
        destination: String,
        /// `UNREACHABLE`, `HOP_LIMIT` or `LIMIT_EXCEEDED`.
        code: AtbusCloseReason,
        /// Detail from the relay.
        message: String,
    },
    /// The end-to-end handshake with `peer` through a relay failed: refused by either side
    /// (`reason.by_peer` says which) or not answered. The session gets no relayed path.
    RelayedHandshakeFailed {
        /// The relay link it ran on.
        link: LinkId,
        /// The peer.
        peer: String,
        /// Why.
        reason: LinkCloseReason,
    },
}
