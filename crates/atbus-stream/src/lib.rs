//! Layer 2 of libatbus-rs: the sans-IO session.
//!
//! A [`Session`] between two node names carries many one-way streams over one or more paths:
//! per-path MTU fragmentation, per-path packet numbers, acknowledgements, loss detection and
//! retransmission, RTT estimation, flow control by receive credit, overlap-merging reassembly,
//! stale-data skips and clean close. Time comes in as arguments; input is pushed with
//! `handle_*`, output pulled with `poll_*`; nothing else happens. `docs/stream.md` explains the
//! protocol.
//!
//! Two sessions over an in-memory link, driven by a loop of a few lines:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use atbus_frame::{FrameLimits, StreamDecoder};
//! use atbus_stream::{Delivery, OutgoingMessage, PathConfig, PathId, PathKind, Session, SessionConfig};
//!
//! /// Moves everything `from` wants to send into `to` (an in-memory byte stream).
//! fn pump(now: Instant, from: &mut Session, to: &mut Session, to_path: PathId, buf: &mut Vec<u8>) {
//!     while let Some(t) = from.poll_transmit(now, buf) {
//!         let mut decoder = StreamDecoder::new(FrameLimits::default());
//!         decoder.feed(&buf[..t.size]);
//!         while let Some(p) = decoder.next_package().unwrap() {
//!             to.handle_frame(now, to_path, p.decode().unwrap(), p.wire_len).unwrap();
//!         }
//!     }
//! }
//!
//! let mut now = Instant::now(); // the only clock reading; the sessions never read one
//! let mut a = Session::new(SessionConfig::new("a", "b"), now);
//! let mut b = Session::new(SessionConfig::new("b", "a"), now);
//! let pa = a.add_path(now, PathConfig::new(PathKind::ByteStream, 64 * 1024)).unwrap();
//! let pb = b.add_path(now, PathConfig::new(PathKind::ByteStream, 64 * 1024)).unwrap();
//! a.send(1, OutgoingMessage::data(&b"hello"[..])).unwrap();
//!
//! let mut buf = Vec::new();
//! let mut got = None;
//! while !a.is_stream_acknowledged(1) {
//!     pump(now, &mut a, &mut b, pb, &mut buf);
//!     pump(now, &mut b, &mut a, pa, &mut buf);
//!     if let Some(Delivery::Message(m)) = b.read(1) {
//!         got = Some(m.data);
//!     }
//!     now = a.poll_timeout().into_iter().chain(b.poll_timeout()).min().unwrap_or(now).max(now);
//!     a.handle_timeout(now);
//!     b.handle_timeout(now);
//! }
//! assert_eq!(got.as_deref(), Some(&b"hello"[..]));
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod config;
mod congestion;
mod content;
mod path;
mod protect;
pub mod ranges;
mod rtt;
mod send;
mod session;

pub use config::{
    CloseReason, Event, KeyUpdateError, PathConfig, PathError, PathId, PathKind, ProtocolError,
    SendError, SessionConfig,
};
pub use path::PathStats;
pub use protect::ContentStats;
pub use reassembly::{Delivery, MessageMeta, ReceivedMessage};
pub use rtt::RttEstimator;
pub use session::unacked::UnacknowledgedMessage;
pub use session::{OutgoingMessage, Session, StreamStats, Transmit};

#[doc(hidden)]
pub mod fuzz_reassembly;
#[doc(hidden)]
pub mod fuzz_session;
pub mod reassembly;
#[cfg(feature = "sim")]
pub mod sim;
