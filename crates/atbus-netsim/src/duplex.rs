//! Two link directions between the same two endpoints.

use std::time::Instant;

use crate::clock::earliest;
use crate::config::LinkConfig;
use crate::link::Link;
use crate::seed::derive_seed;

/// A link in both directions, each with its own configuration and its own random stream.
///
/// The two directions draw from RNGs derived from `(seed, 0)` and `(seed, 1)`, so traffic in
/// one direction never changes what happens in the other.
#[derive(Debug)]
pub struct DuplexLink {
    /// The direction from endpoint A to endpoint B.
    pub a_to_b: Link,
    /// The direction from endpoint B to endpoint A.
    pub b_to_a: Link,
}

impl DuplexLink {
    /// Both directions configured alike.
    pub fn new(config: LinkConfig, seed: u64) -> Self {
        Self::asymmetric(config.clone(), config, seed)
    }

    /// Each direction configured on its own (`ab` for A→B, `ba` for B→A).
    pub fn asymmetric(ab: LinkConfig, ba: LinkConfig, seed: u64) -> Self {
        Self {
            a_to_b: Link::new(ab, derive_seed(seed, 0)),
            b_to_a: Link::new(ba, derive_seed(seed, 1)),
        }
    }

    /// Brings both directions up or down.
    pub fn set_up(&mut self, up: bool) {
        self.a_to_b.set_up(up);
        self.b_to_a.set_up(up);
    }

    /// Whether both directions are up.
    pub fn is_up(&self) -> bool {
        self.a_to_b.is_up() && self.b_to_a.is_up()
    }

    /// The earliest time a datagram becomes deliverable in either direction.
    pub fn poll_timeout(&self) -> Option<Instant> {
        earliest([self.a_to_b.poll_timeout(), self.b_to_a.poll_timeout()])
    }
}
