//! Layer 3 of libatbus-rs: the sans-IO node.
//!
//! A [`Node`] owns links (transport connections the driver reports), runs the link handshake
//! with mutual token authentication on each, and keeps one `atbus-stream` [`Session`] per peer
//! name; every authenticated link to a peer becomes a path of that peer's session. Input is
//! pushed (`handle_*`), output pulled (`poll_transmit`, `poll_action`, `poll_timeout`,
//! `poll_event`); time and randomness come in as arguments. `docs/protocol.md` ("Link
//! handshake") specifies the handshake.
//!
//! Two nodes over an in-memory byte stream, driven by a loop of a few lines:
//!
//! ```
//! use std::time::Instant;
//! use atbus_node::{Delivery, Direction, LinkKind, Node, NodeConfig, NodeEvent, OutgoingMessage};
//! use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};
//!
//! let mut now = Instant::now(); // the only clock reading; nodes never read one
//! let mut a = Node::new(NodeConfig::new("node-a"), now, ChaCha20Rng::seed_from_u64(1)).unwrap();
//! let mut b = Node::new(NodeConfig::new("node-b"), now, ChaCha20Rng::seed_from_u64(2)).unwrap();
//! let (la, lb) = (a.new_link_id(), b.new_link_id());
//! a.handle_link_up(now, la, LinkKind::ByteStream, 64 * 1024, Direction::Outbound);
//! b.handle_link_up(now, lb, LinkKind::ByteStream, 64 * 1024, Direction::Inbound);
//! let (mut buf, mut got) = (Vec::new(), None);
//! while got.is_none() {
//!     let mut moved = false; // bytes move at this instant until both sides are quiet
//!     while let Some((_, n)) = a.poll_transmit(now, &mut buf) { b.handle_link_bytes(now, lb, &buf[..n]); moved = true; }
//!     while let Some((_, n)) = b.poll_transmit(now, &mut buf) { a.handle_link_bytes(now, la, &buf[..n]); moved = true; }
//!     while let Some(event) = a.poll_event() {
//!         if let NodeEvent::PeerUp { peer, .. } = event {
//!             a.send(&peer, 1, OutgoingMessage::data(&b"hello"[..])).unwrap();
//!         }
//!     }
//!     while let Some(event) = b.poll_event() {
//!         if let NodeEvent::Readable { peer, stream_id } = event {
//!             if let Some(Delivery::Message(m)) = b.read(&peer, stream_id) { got = Some(m.data); }
//!         }
//!     }
//!     if !moved {
//!         now = a.poll_timeout().into_iter().chain(b.poll_timeout()).min().unwrap_or(now).max(now);
//!         a.handle_timeout(now, 0);
//!         b.handle_timeout(now, 0);
//!     }
//! }
//! assert_eq!(got.as_deref(), Some(&b"hello"[..]));
//! ```
//!
//! # Choices
//!
//! - Messages are not pushed as events: a [`NodeEvent::Readable`] says a stream has something,
//!   and [`Node::read`] hands out messages and skipped ranges ([`Delivery::Skipped`]) in stream
//!   order, so the application reads at its own pace and backpressure reaches the sender.
//! - A peer whose last link dies keeps its session for [`NodeConfig::reconnect_wait`]; messages
//!   it had not acknowledged go out again on the next link. When the wait expires, or the peer
//!   comes back with a new incarnation id (it restarted), every unacknowledged message is
//!   reported as [`NodeEvent::Undeliverable`]: nothing is resumed mid-stream into a new process.
//! - No token on either side means open links; a token on one side only is refused with
//!   `AUTH_FAILED` on both sides.
//! - Relays: a link to a peer that announces [`capabilities::RELAY`] and is listed in
//!   [`NodeConfig::relays`] carries relayed paths of other peers' sessions
//!   ([`Node::route_via_relay`]); frames on it are handed to the session of their `source` once
//!   the relay's stamp is checked, and `forward_error` frames become
//!   [`NodeEvent::ForwardError`]. A node that announces `RELAY` itself runs in router mode: it
//!   runs no sessions and hands every frame to its owner unread ([`Node::poll_routed`]); the
//!   relay core (`atbus-relay`) is that owner. `docs/relay.md` has the rules.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod access;
#[doc(hidden)]
pub mod auth;
mod config;
pub mod content;
mod error;
#[doc(hidden)]
pub mod fuzz;
mod handshake;
mod link;
mod node;
mod peer;
mod relayed;
mod relayed_handshake;
mod route_plan;
pub mod routed;
mod tls;
mod types;

pub use access::{
    ANONYMOUS_PREFIX, EARLY_DATA_ACCEPTED, EARLY_DATA_NONE, EARLY_DATA_REFUSED, MAX_EARLY_MESSAGES,
    source_key, token_defect,
};
pub use access::{COOKIE_LEN, COOKIE_ROTATION, MAX_COOKIE_LEN};
pub use atbus_auth;
pub use atbus_auth::CipherSuite;
pub use atbus_stream::{Delivery, MessageMeta, OutgoingMessage, ReceivedMessage, Session};
pub use auth::SessionKeys;
pub use config::{
    AccessToken, AnonymousPolicy, AuthMode, DEFAULT_MAX_EARLY_DATA, DEFAULT_RELAYED_PATH_MTU,
    MAX_KEY_ID_LEN, MIN_SECRET_LEN, NodeConfig, NodeLimits, SignedToken, capabilities,
};
pub use content::{ContentPolicy, EncryptionMode};
pub use error::{ConfigError, NodeError};
pub use fuzz::fuzz_handshake;
pub use node::Node;
pub use route_plan::{PlanAction, PlanError, PlanLimits, PlannedHop, RoutePlanner, Unreachable};
pub use types::{
    Action, Direction, LinkCloseReason, LinkId, LinkInfo, LinkKind, LinkRole, NodeEvent,
    UndeliverableReason,
};
