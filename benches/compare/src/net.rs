//! The simulated network every peer runs over, and the driver interface peers implement.

use std::time::{Duration, Instant};

use atbus_netsim::{Bytes, DuplexLink, LinkConfig, LinkStats, derive_seed};

/// Largest datagram any peer may send (KCP `set_mtu`, atbus path MTU, link MTU).
pub const MTU: usize = 1224;
/// One-way propagation delay (40 ms round trip).
pub const ONE_WAY: Duration = Duration::from_millis(20);
/// 10 Mbit/s.
pub const RATE_10_MBIT: u64 = 1_250_000;
/// 5 Mbit/s (each path of the two-path run).
pub const RATE_5_MBIT: u64 = 625_000;
/// Bytes that may wait for the rate limiter before tail drop: about 1.3 × the bandwidth-delay
/// product of 10 Mbit/s × 40 ms (50 kB), i.e. at most ~52 ms of queueing at 10 Mbit/s.
pub const QUEUE_LIMIT: usize = 64 * 1024;

/// One direction's behaviour; both directions of a link are configured alike (acks see the same
/// loss, delay and rate as data).
pub fn link_config(loss: f64, rate: u64) -> LinkConfig {
    LinkConfig::lossy(ONE_WAY, loss)
        .with_rate(rate)
        .with_queue_limit(QUEUE_LIMIT)
        .with_mtu(MTU)
}

/// The link for path `index` of a run with `seed`: every peer gets the same random streams.
pub fn link(config: LinkConfig, seed: u64, index: u64) -> DuplexLink {
    DuplexLink::new(config, derive_seed(seed, 100 + index))
}

/// Sums the counters of the A→B directions of `links`.
pub fn data_direction_stats<'a>(links: impl IntoIterator<Item = &'a DuplexLink>) -> LinkStats {
    let mut total = LinkStats::default();
    for l in links {
        let s = l.a_to_b.stats();
        total.sent += s.sent;
        total.delivered += s.delivered;
        total.bytes_delivered += s.bytes_delivered;
        total.dropped_loss += s.dropped_loss;
        total.dropped_queue += s.dropped_queue;
        total.dropped_mtu += s.dropped_mtu;
        total.dropped_down += s.dropped_down;
    }
    total
}

/// Two endpoints of one protocol, A sending to B, over simulated links, driven in virtual time.
pub trait Pair {
    /// The application at A offers one message to B at `now`; `false` when A's send buffer is
    /// full (the message was not taken).
    fn send(&mut self, now: Instant, message: &Bytes) -> bool;
    /// Does everything due at `now`: link deliveries, timers, output into the links; passes each
    /// message B's application reads to `delivered`.
    fn poll(&mut self, now: Instant, delivered: &mut dyn FnMut(&[u8]));
    /// When `poll` must be called next if nothing else happens.
    fn next_wake(&self) -> Option<Instant>;
    /// Counters of the data direction (A→B) of the links.
    fn data_stats(&self) -> LinkStats;
}
