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
    /// atbus only: the sender's congestion window over the run and the datagrams of the reverse
    /// (acknowledgement) direction.
    fn sender_trace(&self) -> Option<(CwndTrace, u64)> {
        None
    }
}

/// The atbus sender's congestion window and declared losses, sampled after every step of its
/// driver: how often the window shrank and in what batches losses were declared.
#[derive(Debug, Clone, Copy, Default)]
pub struct CwndTrace {
    /// Samples taken.
    pub samples: u64,
    /// Samples at which the window was smaller than at the one before.
    pub cuts: u64,
    /// Samples at which the declared-lost counter grew.
    pub loss_batches: u64,
    /// Of those, samples at which it grew by two or more.
    pub multi_loss_batches: u64,
    /// Packets declared lost in total.
    pub lost: u64,
    /// Window at the last sample, bytes.
    pub last_cwnd: u64,
    /// Sum of the windows sampled, bytes (for the mean).
    cwnd_sum: u128,
}

impl CwndTrace {
    /// Records one sample of the sender path's window and declared-lost counter.
    pub fn observe(&mut self, cwnd: u64, lost: u64) {
        if self.samples > 0 {
            if cwnd < self.last_cwnd {
                self.cuts += 1;
            }
            if lost > self.lost {
                self.loss_batches += 1;
                if lost - self.lost >= 2 {
                    self.multi_loss_batches += 1;
                }
            }
        }
        self.samples += 1;
        self.last_cwnd = cwnd;
        self.lost = lost;
        self.cwnd_sum += u128::from(cwnd);
    }

    /// Mean of the sampled windows, bytes.
    pub fn mean_cwnd(&self) -> u64 {
        (self.cwnd_sum / u128::from(self.samples.max(1))) as u64
    }

    /// One line for the logs and the docs.
    pub fn describe(&self, data: u64, reverse: u64) -> String {
        format!(
            "{} window cuts, {} packets declared lost in {} batches ({} of them ≥ 2 packets), \
             mean window {} B, final {} B, {} reverse datagrams for {} data datagrams ({:.2} per data datagram)",
            self.cuts,
            self.lost,
            self.loss_batches,
            self.multi_loss_batches,
            self.mean_cwnd(),
            self.last_cwnd,
            reverse,
            data,
            reverse as f64 / data.max(1) as f64
        )
    }
}

#[cfg(test)]
mod trace_tests {
    use super::CwndTrace;

    #[test]
    fn trace_counts_cuts_and_loss_batches() {
        let mut t = CwndTrace::default();
        for (cwnd, lost) in [(100, 0), (120, 0), (96, 1), (96, 3), (90, 3), (110, 4)] {
            t.observe(cwnd, lost);
        }
        assert_eq!(t.samples, 6);
        assert_eq!(t.cuts, 2);
        assert_eq!(t.loss_batches, 3);
        assert_eq!(t.multi_loss_batches, 1);
        assert_eq!(t.lost, 4);
        assert_eq!(t.last_cwnd, 110);
        assert_eq!(t.mean_cwnd(), 612 / 6);
        assert!(t.describe(10, 4).contains("0.40 per data datagram"));
    }
}
