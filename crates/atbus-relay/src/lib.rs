//! Layer 3 of libatbus-rs: the sans-IO relay core.
//!
//! A [`Relay`] accepts links from nodes and from other relays and forwards, frame by frame,
//! every frame whose `message_head.destination` is another node. It never reassembles streams,
//! never acknowledges stream data and never reads or changes a frame's body: it writes only
//! `forward_for_source`, `forward_for_connection_id` and `hop_count`. On the wire a relay is a
//! named node: the link handshake and authentication are [`atbus_node::Node`]'s, run in router
//! mode (the `RELAY` capability bit), which hands frames over unread.
//!
//! - **Trust**: on a link from a plain node, `source` must be the link's authenticated name
//!   (else the frame is dropped as [`DropReason::ForgedSource`]) and the forwarding fields it
//!   sent are replaced. Only links from the relays of [`RelayConfig::peer_relays`] (which
//!   announce `RELAY`, and prove one of [`RelayConfig::relay_key_ids`] when that list is set)
//!   keep their forwarding fields.
//! - **Routes**: a direct link to the destination, else [`RelayConfig::routes`], else
//!   [`RelayConfig::upstream`]; never back out the link a frame came in on. Past
//!   [`RelayConfig::hop_limit`] or with no way on, the source gets a `forward_error`.
//! - **Queues**: one bounded queue per outgoing link, served round robin; a blocked or slow link
//!   drops its own overflow ([`DropReason::QueueFull`]) and never stalls the others. Sessions
//!   recover what relays drop.
//!
//! `docs/relay.md` explains the rules. A relay between two nodes over in-memory byte streams:
//!
//! ```
//! use std::time::Instant;
//! use atbus_node::{Delivery, Direction, LinkKind, Node, NodeConfig, NodeEvent, OutgoingMessage};
//! use atbus_relay::{Relay, RelayConfig};
//! use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};
//!
//! let now = Instant::now(); // the only clock reading; the cores never read one
//! let node = |name: &str, seed| {
//!     let mut c = NodeConfig::new(name);
//!     c.relays = vec!["relay".into()];
//!     Node::new(c, now, ChaCha20Rng::seed_from_u64(seed)).unwrap()
//! };
//! let (mut a, mut b) = (node("a", 1), node("b", 2));
//! let mut r = Relay::new(RelayConfig::new("relay"), now, ChaCha20Rng::seed_from_u64(3)).unwrap();
//! // a and b each dial the relay: links (a, ra) and (b, rb).
//! let (la, ra, lb, rb) = (a.new_link_id(), r.new_link_id(), b.new_link_id(), r.new_link_id());
//! for (n, l) in [(&mut a, la), (&mut b, lb)] {
//!     n.handle_link_up(now, l, LinkKind::ByteStream, 64 * 1024, Direction::Outbound);
//! }
//! r.handle_link_up(now, ra, LinkKind::ByteStream, 64 * 1024, Direction::Inbound);
//! r.handle_link_up(now, rb, LinkKind::ByteStream, 64 * 1024, Direction::Inbound);
//! a.route_via_relay(now, "b", "relay").unwrap();
//! a.send("b", 1, OutgoingMessage::data(&b"hello"[..])).unwrap();
//! let (mut buf, mut got) = (Vec::new(), None);
//! for _ in 0..20 {
//!     while let Some((_, n)) = a.poll_transmit(now, &mut buf) { r.handle_link_bytes(now, ra, &buf[..n]); }
//!     while let Some((_, n)) = b.poll_transmit(now, &mut buf) { r.handle_link_bytes(now, rb, &buf[..n]); }
//!     while let Some((l, n)) = r.poll_transmit(now, &mut buf) {
//!         if l == ra { a.handle_link_bytes(now, la, &buf[..n]) } else { b.handle_link_bytes(now, lb, &buf[..n]) }
//!     }
//!     while let Some(event) = b.poll_event() {
//!         if let NodeEvent::Readable { peer, stream_id } = event {
//!             if let Some(Delivery::Message(m)) = b.read(&peer, stream_id) { got = Some((peer, m.data)); }
//!         }
//!     }
//! }
//! assert_eq!(got, Some(("a".to_owned(), bytes::Bytes::from_static(b"hello"))));
//! assert_eq!(r.metrics().drops_total(), 0);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod config;
mod error;
mod file;
mod metrics;
mod relay;
#[cfg(feature = "service")]
pub mod service;

pub use config::{DEFAULT_HOP_LIMIT, RelayConfig};
pub use error::{DropReason, RelayError};
pub use file::RelayFile;
pub use metrics::{
    DelayHistogram, LinkMetrics, OTHER_DESTINATIONS, QUEUE_DELAY_BOUNDS, QueueDelays, RelayMetrics,
};
pub use relay::{RELAY_KIND, Relay, RelayEvent};
