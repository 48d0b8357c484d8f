//! A seeded, sans-IO network simulator for the libatbus-rs protocol cores.
//!
//! ```
//! use std::time::Duration;
//! use atbus_netsim::{Bytes, Clock, DuplexLink, LinkConfig};
//!
//! // 20 ms each way, 10% random loss, seed 42: the same run every time.
//! let mut net = DuplexLink::new(LinkConfig::lossy(Duration::from_millis(20), 0.1), 42);
//! let mut clock = Clock::new();
//! for i in 0..10u8 {
//!     net.a_to_b.send(clock.now(), Bytes::from(vec![i])); // A pings B
//! }
//! let mut pongs = Vec::new();
//! // The world loop: jump to the earliest wake-up, deliver what is due, react.
//! while clock.advance_to_earliest([net.poll_timeout()]).is_some() {
//!     while let Some(ping) = net.a_to_b.poll_deliver(clock.now()) {
//!         net.b_to_a.send(clock.now(), ping); // B echoes
//!     }
//!     while let Some(pong) = net.b_to_a.poll_deliver(clock.now()) {
//!         assert!(clock.elapsed() >= Duration::from_millis(40)); // a full round trip
//!         pongs.push(pong[0]);
//!     }
//! }
//! let stats = net.a_to_b.stats();
//! assert_eq!(stats.sent, 10);
//! assert_eq!(stats.delivered + stats.dropped_loss, 10);
//! assert_eq!(pongs.len() as u64, net.b_to_a.stats().delivered);
//! ```
//!
//! # Model
//!
//! A [`Link`] is one direction; a [`DuplexLink`] holds two. Each datagram handed to
//! [`Link::send`] is checked against the link state (up/down), the MTU and the queue before the
//! rate limiter (tail drop), then serialized at the configured rate, possibly lost (random or
//! Gilbert–Elliott burst loss), delayed by latency plus uniform jitter, possibly held back for
//! reordering, and possibly duplicated. [`Link::send`] returns what happened, and
//! [`Link::stats`] counts it. A link configured `reliable` behaves like a byte stream: no loss,
//! duplication or reordering, and deliveries in send order.
//!
//! Nothing here reads a clock, spawns a thread or touches a socket. Time is the `now: Instant`
//! the caller passes (a [`Clock`] keeps a virtual one), and every random choice comes from a
//! `ChaCha8Rng` seeded by the caller; the two directions of a [`DuplexLink`] use independent
//! streams derived from the seed, so traffic in one direction never perturbs the other. Every
//! send consumes the same amount of randomness whatever its fate, so one dropped datagram does not
//! reshuffle the fate of all later ones.
//!
//! # Replaying a failing seed
//!
//! Run a scenario over many seeds with [`for_each_seed`]:
//!
//! ```
//! use atbus_netsim::{for_each_seed, Link, LinkConfig};
//! for_each_seed(8, |seed| {
//!     let link = Link::new(LinkConfig::default(), seed);
//!     assert!(link.is_up());
//! });
//! ```
//!
//! When the scenario panics for some seed, the test output carries the line
//!
//! ```text
//! netsim: failing seed = 1234567 (replay with ATBUS_SIM_SEED=1234567)
//! ```
//!
//! Re-run just that case with the variable set, and only the failing seed runs:
//!
//! ```text
//! ATBUS_SIM_SEED=1234567 cargo test -p atbus-stream the_failing_test -- --nocapture
//! ```
//!
//! The seed may also be written in hexadecimal (`0x12d687`). Runs are bit-for-bit repeatable, so
//! the failure reproduces exactly, under a debugger or with extra logging.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod clock;
mod config;
mod duplex;
mod link;
mod seed;

pub use bytes::Bytes;
pub use clock::{Clock, earliest};
pub use config::{LinkConfig, Loss};
pub use duplex::DuplexLink;
pub use link::{Link, LinkStats, SendOutcome};
pub use seed::{
    REPLAY_SEED_VAR, derive_seed, for_each_seed, for_each_seed_with, parse_seed, replay_seed, seeds,
};
