//! One link: its decoder, handshake state and queued control packages.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use atbus_auth::tls::TlsHandshake;
use atbus_frame::StreamDecoder;
use atbus_proto::{HandshakeConfirm, HandshakeHello};
use atbus_stream::PathId;
use bytes::Bytes;

use crate::access::{Credential, LinkGuard};
use crate::auth::{SessionKeys, TranscriptHash};
use crate::types::LinkKind;

/// Retransmission timer of a handshake step on a datagram link.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retransmit {
    pub at: Instant,
    pub interval: Duration,
}

/// Where a link is in its life.
#[derive(Debug)]
pub(crate) enum LinkState {
    /// Client: hello sent, waiting for the server's hello_reply.
    HelloSent {
        hello: Box<HandshakeHello>,
        package: Vec<u8>,
        retransmit: Option<Retransmit>,
    },
    /// Server: waiting for the client's hello.
    AwaitHello,
    /// Server: hello_reply sent, waiting for the client's confirm.
    ReplySent {
        client: Box<HandshakeHello>,
        package: Vec<u8>,
        th: TranscriptHash,
        /// What the client proved (or will prove in its confirm).
        credential: Credential,
        /// What the server did with the hello's early data (`handshake_accept`).
        early_data_status: i32,
        /// Encryption mode `tls`: the server side of the TLS handshake (done before `accept`).
        tls: Option<Box<TlsHandshake>>,
    },
    /// Client, encryption mode `tls`: hello_reply checked, the TLS handshake runs; `confirm`
    /// goes out when it completes.
    TlsClient {
        server: Box<HandshakeHello>,
        confirm: HandshakeConfirm,
        th: TranscriptHash,
        tls: Box<TlsHandshake>,
    },
    /// Client: confirm sent, waiting for accept.
    ConfirmSent {
        server: Box<HandshakeHello>,
        package: Vec<u8>,
        retransmit: Option<Retransmit>,
        keys: Option<SessionKeys>,
        /// Encryption mode `tls`: the completed client side, resending its last flight until
        /// the server's `accept`.
        tls: Option<Box<TlsHandshake>>,
    },
    /// Authenticated: a path of `peer`'s session.
    Established {
        peer: String,
        path: PathId,
        /// Server: the accept package and the client's proof, to answer a retransmitted confirm.
        accept: Option<(Vec<u8>, Bytes)>,
    },
    /// Plain node: an authenticated link to a trusted relay; it carries relayed paths of the
    /// sessions with the peers in `paths`.
    Relay {
        relay: String,
        paths: BTreeMap<String, PathId>,
        /// Server: the accept package and the client's proof, to answer a retransmitted confirm.
        accept: Option<(Vec<u8>, Bytes)>,
    },
    /// Router mode: an authenticated link whose session frames go to the owner unread.
    Routed {
        peer: String,
        capabilities: i64,
        key_id: String,
        /// Largest package the peer accepts (its hello's `max_package_size`).
        max_package: usize,
        /// Server: the accept package and the client's proof, to answer a retransmitted confirm.
        accept: Option<(Vec<u8>, Bytes)>,
    },
    /// Closed: only queued control packages (a `link_close`) remain to go out.
    Closed,
}

impl LinkState {
    pub fn in_handshake(&self) -> bool {
        !matches!(
            self,
            LinkState::Established { .. }
                | LinkState::Relay { .. }
                | LinkState::Routed { .. }
                | LinkState::Closed
        )
    }
}

/// A link of the node.
#[derive(Debug)]
pub(crate) struct Link {
    pub kind: LinkKind,
    pub mtu: usize,
    pub decoder: Option<StreamDecoder>,
    pub state: LinkState,
    /// Whole packages (handshake, link_close) to send before any session data.
    pub control: VecDeque<Vec<u8>>,
    /// When the handshake gives up.
    pub handshake_deadline: Instant,
    /// Configured URL this outbound link was opened for (reconnect bookkeeping).
    pub url: Option<usize>,
    /// When a package last arrived.
    pub last_received: Instant,
    /// Link-level liveness of relay and router-mode links (no session pings them).
    pub keepalive: Option<Keepalive>,
    /// What a token or the anonymous policy allows on this link, checked on every frame.
    pub guard: Option<Box<LinkGuard>>,
    /// Client: the server this link was opened for and the early data of its first flight
    /// (sent again in the session unless the server accepted it).
    pub early: Option<Box<EarlyFlight>>,
    /// Client: whether the first flight carried the early data with a 0-RTT proof.
    pub early_sent: bool,
    /// Bytes received and sent while the handshake runs (amplification limit on datagram
    /// links: a server sends at most 3× what it received before the peer is validated).
    pub handshake_rx: usize,
    /// See `handshake_rx`.
    pub handshake_tx: usize,
    /// Whether the peer's address is validated: this side opened the link, or the peer
    /// answered the server's hello_reply.
    pub validated: bool,
    /// The peer's source address as the driver reported it, reduced to what a bound per
    /// source counts (an IPv4 address, an IPv6 /64).
    pub source: Option<std::net::IpAddr>,
    /// The peer's full network address (not loopback), which a handshake cookie is bound to.
    pub peer_addr: Option<std::net::SocketAddr>,
}

/// Link-level keepalive: a ping every `interval`, the link closes after `idle` of silence.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keepalive {
    pub next_ping: Instant,
    pub interval: Duration,
    pub idle: Duration,
    pub ping_id: i64,
}

/// Early data of a client's first flight: the server it is for and the messages
/// (stream id, data).
pub(crate) type EarlyFlight = (String, Vec<(i64, Bytes)>);

/// A server sends at most this many times what it received on a datagram link before the
/// handshake validated the peer.
pub(crate) const AMPLIFICATION_FACTOR: usize = 3;

impl Link {
    /// A link whose handshake starts at `now`.
    pub fn new(
        kind: LinkKind,
        mtu: usize,
        decoder: Option<StreamDecoder>,
        handshake_deadline: Instant,
        url: Option<usize>,
        now: Instant,
    ) -> Self {
        Self {
            kind,
            mtu,
            decoder,
            state: LinkState::AwaitHello,
            control: VecDeque::new(),
            handshake_deadline,
            url,
            last_received: now,
            keepalive: None,
            guard: None,
            early: None,
            early_sent: false,
            handshake_rx: 0,
            handshake_tx: 0,
            validated: false,
            source: None,
            peer_addr: None,
        }
    }

    /// Whether this side may send `len` more bytes now: always, except for a server on a
    /// datagram link whose peer is not validated yet, which stays within
    /// [`AMPLIFICATION_FACTOR`] × what it received (RFC 9000 §8.1), `link_close` included.
    pub fn may_send(&self, len: usize) -> bool {
        self.kind != LinkKind::Datagram
            || self.validated
            || self.handshake_tx.saturating_add(len)
                <= self.handshake_rx.saturating_mul(AMPLIFICATION_FACTOR)
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, LinkState::Closed)
    }

    /// Next handshake timer of this link.
    pub fn timeout(&self) -> Option<Instant> {
        match &self.state {
            LinkState::HelloSent { retransmit, .. } => Some(
                retransmit
                    .map_or(self.handshake_deadline, |r| r.at)
                    .min(self.handshake_deadline),
            ),
            LinkState::ConfirmSent {
                retransmit, tls, ..
            } => {
                let at = retransmit
                    .map_or(self.handshake_deadline, |r| r.at)
                    .min(self.handshake_deadline);
                Some(
                    tls.as_ref()
                        .and_then(|t| t.poll_timeout())
                        .map_or(at, |t| t.min(at)),
                )
            }
            LinkState::TlsClient { tls, .. } | LinkState::ReplySent { tls: Some(tls), .. } => Some(
                tls.poll_timeout()
                    .map_or(self.handshake_deadline, |t| t.min(self.handshake_deadline)),
            ),
            LinkState::AwaitHello | LinkState::ReplySent { .. } => Some(self.handshake_deadline),
            LinkState::Established { .. } => self.guard.as_ref().and_then(|g| g.paused_until),
            LinkState::Relay { .. } | LinkState::Routed { .. } => self
                .keepalive
                .map(|k| k.next_ping.min(self.last_received + k.idle)),
            _ => None,
        }
    }
}
