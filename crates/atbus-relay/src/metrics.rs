//! Counters of the relay, for logs and a metrics endpoint.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use atbus_node::LinkId;

use crate::error::DropReason;

/// Relay-wide counters (monotonic).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayMetrics {
    /// Frames handed over by links (everything but link handshakes and closes).
    pub frames_received: u64,
    /// Frames written to an outgoing link.
    pub frames_forwarded: u64,
    /// Bytes of the packages written to outgoing links.
    pub bytes_forwarded: u64,
    /// `forward_error` frames queued back to sources.
    pub forward_errors_sent: u64,
    /// `forward_error` frames not sent because of the rate limit.
    pub forward_errors_suppressed: u64,
    drops: [u64; DropReason::ALL.len()],
}

impl RelayMetrics {
    /// Frames dropped for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    /// Frames dropped for any reason.
    pub fn drops_total(&self) -> u64 {
        self.drops.iter().sum()
    }

    pub(crate) fn count_drop(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }
}

/// Counters and queue depth of one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkMetrics {
    /// Link.
    pub link: LinkId,
    /// Authenticated peer name.
    pub peer: String,
    /// Whether the peer is a trusted relay.
    pub relay: bool,
    /// Frames received on the link.
    pub frames_in: u64,
    /// Frames written to the link.
    pub frames_out: u64,
    /// Bytes written to the link.
    pub bytes_out: u64,
    /// Frames queued for the link now.
    pub queued_frames: usize,
    /// Bytes queued for the link now.
    pub queued_bytes: usize,
    /// Frames dropped because this link's queue was full.
    pub dropped_queue_full: u64,
    /// Whether the driver reported the link blocked.
    pub blocked: bool,
}

/// Upper bounds (seconds) of the queue delay histogram buckets; a last `+Inf` bucket follows.
pub const QUEUE_DELAY_BOUNDS: [f64; 15] = [
    0.000_01, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0,
];

/// The same bounds in nanoseconds, for recording without floating point.
const QUEUE_DELAY_BOUNDS_NS: [u64; 15] = [
    10_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];

/// Label value of the series that gathers the destinations without a series of their own.
pub const OTHER_DESTINATIONS: &str = "other";

/// How often the destinations with a series of their own are reconsidered.
const REBALANCE_INTERVAL: Duration = Duration::from_secs(10);

/// Most destinations that swap in per rebalance, so the set does not churn.
const MAX_SWAPS: usize = 4;

/// A histogram of queue delays: per-bucket counts (not cumulative), sum and count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DelayHistogram {
    /// Frames per bucket: `buckets[i]` counts delays `≤ QUEUE_DELAY_BOUNDS[i]` and above the
    /// previous bound; the last one counts those above every bound.
    pub buckets: [u64; QUEUE_DELAY_BOUNDS.len() + 1],
    /// Frames recorded.
    pub count: u64,
    /// Sum of the delays, nanoseconds.
    pub sum_ns: u64,
}

impl DelayHistogram {
    /// Records one delay.
    pub fn record(&mut self, delay: Duration) {
        let ns = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        let i = QUEUE_DELAY_BOUNDS_NS.partition_point(|&b| b < ns);
        self.buckets[i] += 1;
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &DelayHistogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }

    /// Cumulative counts in Prometheus order: `≤ bound` per bound, then `+Inf` (= count).
    pub fn cumulative(&self) -> [u64; QUEUE_DELAY_BOUNDS.len() + 1] {
        let mut out = self.buckets;
        for i in 1..out.len() {
            out[i] += out[i - 1];
        }
        out
    }
}

/// A destination with a series of its own.
#[derive(Debug, Clone)]
struct Tracked {
    histogram: DelayHistogram,
    /// Frames written since the last rebalance.
    recent: u64,
}

/// Time frames spend queued in the relay (enqueued → handed to the driver) per destination
/// link peer, with bounded cardinality: the busiest `limit` destinations get a series of their
/// own, the others share [`OTHER_DESTINATIONS`].
///
/// Every series only grows: a destination that loses its place has its counts merged into
/// `other` (so `other` plus the named series always add up to every frame written), and a
/// newcomer starts a fresh series. Which destinations are busiest is estimated over windows of
/// 10 s from frame counts kept for at most `4 × limit` candidates (when full, the least busy
/// candidate is replaced, space-saving style), so memory stays bounded whatever the traffic.
#[derive(Debug, Clone)]
pub struct QueueDelays {
    limit: usize,
    tracked: BTreeMap<String, Tracked>,
    other: DelayHistogram,
    /// Destinations without a series: frames written since the last rebalance.
    candidates: BTreeMap<String, u64>,
    next_rebalance: Option<Instant>,
}

impl QueueDelays {
    /// At most `limit` destinations with a series of their own (0: everything is `other`).
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            tracked: BTreeMap::new(),
            other: DelayHistogram::default(),
            candidates: BTreeMap::new(),
            next_rebalance: None,
        }
    }

    /// Records the delays of frames written to `destination` at `now`.
    pub fn record(
        &mut self,
        now: Instant,
        destination: &str,
        delays: impl IntoIterator<Item = Duration>,
    ) {
        if self.next_rebalance.is_none_or(|t| now >= t) {
            if self.next_rebalance.is_some() {
                self.rebalance();
            }
            self.next_rebalance = Some(now + REBALANCE_INTERVAL);
        }
        let can_track = destination != OTHER_DESTINATIONS && self.limit > 0;
        if can_track && !self.tracked.contains_key(destination) && self.tracked.len() < self.limit {
            self.candidates.remove(destination);
            self.tracked.insert(
                destination.to_owned(),
                Tracked {
                    histogram: DelayHistogram::default(),
                    recent: 0,
                },
            );
        }
        let mut frames = 0u64;
        match self.tracked.get_mut(destination) {
            Some(t) => {
                for d in delays {
                    t.histogram.record(d);
                    frames += 1;
                }
                t.recent += frames;
            }
            None => {
                for d in delays {
                    self.other.record(d);
                    frames += 1;
                }
                if can_track {
                    self.note_candidate(destination, frames);
                }
            }
        }
    }

    /// Counts `frames` for a destination without a series (space-saving when full).
    fn note_candidate(&mut self, destination: &str, frames: u64) {
        if let Some(c) = self.candidates.get_mut(destination) {
            *c += frames;
            return;
        }
        let mut base = 0;
        if self.candidates.len() >= self.limit.saturating_mul(4).max(1) {
            let Some((least, &count)) = self.candidates.iter().min_by_key(|(_, c)| **c) else {
                return;
            };
            let least = least.clone();
            self.candidates.remove(&least);
            base = count;
        }
        self.candidates
            .insert(destination.to_owned(), base + frames);
    }

    /// Swaps the busiest candidates in for the least busy tracked destinations, then starts a
    /// new window.
    fn rebalance(&mut self) {
        for _ in 0..MAX_SWAPS {
            let Some((best, &best_count)) = self.candidates.iter().max_by_key(|(_, c)| **c) else {
                break;
            };
            let Some((least, least_tracked)) = self.tracked.iter().min_by_key(|(_, t)| t.recent)
            else {
                break;
            };
            if best_count <= least_tracked.recent {
                break;
            }
            let (best, least) = (best.clone(), least.clone());
            self.candidates.remove(&best);
            if let Some(evicted) = self.tracked.remove(&least) {
                self.other.merge(&evicted.histogram);
                self.candidates.insert(least, evicted.recent);
            }
            self.tracked.insert(
                best,
                Tracked {
                    histogram: DelayHistogram::default(),
                    recent: best_count,
                },
            );
        }
        for t in self.tracked.values_mut() {
            t.recent = 0;
        }
        self.candidates.clear();
    }

    /// Every series: the tracked destinations by name, then [`OTHER_DESTINATIONS`].
    pub fn series(&self) -> Vec<(String, DelayHistogram)> {
        self.tracked
            .iter()
            .map(|(name, t)| (name.clone(), t.histogram.clone()))
            .chain(std::iter::once((
                OTHER_DESTINATIONS.to_owned(),
                self.other.clone(),
            )))
            .collect()
    }

    /// Frames recorded over every series.
    pub fn total(&self) -> u64 {
        self.other.count
            + self
                .tracked
                .values()
                .map(|t| t.histogram.count)
                .sum::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delays_fall_in_their_buckets() {
        let mut h = DelayHistogram::default();
        h.record(Duration::ZERO);
        h.record(Duration::from_micros(10));
        h.record(Duration::from_micros(11));
        h.record(ms(3));
        h.record(Duration::from_secs(5));
        assert_eq!(h.count, 5);
        assert_eq!(h.buckets[0], 2, "0 and exactly 10 us are <= 10 us");
        assert_eq!(h.buckets[1], 1);
        assert_eq!(h.buckets[7], 1, "3 ms is in (2.5 ms, 5 ms]");
        assert_eq!(
            h.buckets[QUEUE_DELAY_BOUNDS.len()],
            1,
            "5 s is above every bound"
        );
        let c = h.cumulative();
        assert_eq!(c[QUEUE_DELAY_BOUNDS.len()], h.count);
        assert!(c.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(h.sum_ns, 5_003_021_000);
    }

    #[test]
    fn cardinality_is_bounded_and_nothing_is_lost() {
        let t0 = Instant::now();
        let mut q = QueueDelays::new(2);
        for i in 0..50u64 {
            q.record(t0, &format!("n{i}"), [ms(1)]);
        }
        let series = q.series();
        assert_eq!(series.len(), 3, "two destinations and other");
        assert_eq!(series[0].0, "n0");
        assert_eq!(series[1].0, "n1");
        assert_eq!(series[2].0, OTHER_DESTINATIONS);
        assert_eq!(series[2].1.count, 48);
        assert_eq!(q.total(), 50);
        assert!(q.candidates.len() <= 8);
    }

    #[test]
    fn the_busiest_destinations_take_over_and_series_only_grow() {
        let t0 = Instant::now();
        let mut q = QueueDelays::new(2);
        q.record(t0, "quiet-1", [ms(1)]);
        q.record(t0, "quiet-2", [ms(1)]);
        for _ in 0..10 {
            q.record(t0, "busy", [ms(2), ms(2)]);
        }
        assert!(q.series().iter().all(|(n, _)| n != "busy"));
        let other_before = q.series()[2].1.count;
        // The next window starts: busy (20 frames) beats a quiet one (1 frame).
        let t1 = t0 + REBALANCE_INTERVAL;
        q.record(t1, "busy", [ms(2)]);
        let series = q.series();
        let names: Vec<&str> = series.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"busy"), "{names:?}");
        assert_eq!(names.len(), 3);
        let other = &series.last().unwrap().1;
        assert_eq!(
            other.count,
            other_before + 1,
            "the evicted series went to other"
        );
        assert_eq!(q.total(), 23);
    }

    #[test]
    fn a_destination_named_other_shares_the_other_series() {
        let mut q = QueueDelays::new(4);
        q.record(Instant::now(), OTHER_DESTINATIONS, [ms(1)]);
        assert_eq!(q.series().len(), 1);
        assert_eq!(q.series()[0].1.count, 1);
    }

    #[test]
    fn no_limit_means_everything_is_other() {
        let mut q = QueueDelays::new(0);
        q.record(Instant::now(), "a", [ms(1), ms(2)]);
        assert_eq!(q.series().len(), 1);
        assert_eq!(q.total(), 2);
        assert!(q.candidates.is_empty());
    }
}
