//! One direction of a simulated link: loss, delay, duplication, reordering, rate and queue.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::config::{LinkConfig, Loss, clamp_probability};

/// What happened to a datagram handed to [`Link::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendOutcome {
    /// Accepted: it (and possibly a duplicate) will be delivered later.
    Queued,
    /// Lost on the wire by the loss model.
    DroppedLoss,
    /// Tail-dropped because the queue before the rate limiter was full.
    DroppedQueueFull,
    /// Longer than the link's MTU.
    DroppedMtu,
    /// The link is down.
    DroppedDown,
}

impl SendOutcome {
    /// Whether the datagram will be delivered.
    pub fn is_queued(self) -> bool {
        self == SendOutcome::Queued
    }
}

/// Counters of one link direction since it was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkStats {
    /// Datagrams handed to [`Link::send`], whatever their fate.
    pub sent: u64,
    /// Datagrams returned by [`Link::poll_deliver`] (duplicates included).
    pub delivered: u64,
    /// Datagrams lost by the loss model.
    pub dropped_loss: u64,
    /// Datagrams tail-dropped by the queue limit.
    pub dropped_queue: u64,
    /// Datagrams longer than the MTU.
    pub dropped_mtu: u64,
    /// Datagrams sent while down, plus copies in flight when the link went down.
    pub dropped_down: u64,
    /// Datagrams that got an extra copy.
    pub duplicated: u64,
    /// Datagrams that got the extra reordering delay.
    pub reordered: u64,
    /// Payload bytes returned by [`Link::poll_deliver`].
    pub bytes_delivered: u64,
}

/// A datagram copy on its way to the receiver.
#[derive(Debug)]
struct InFlight {
    due: Instant,
    seq: u64,
    datagram: Bytes,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for InFlight {}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// The random numbers one `send` consumes.
///
/// Every send draws all of them, whatever the configuration and whatever the datagram's fate, so
/// the random stream stays aligned with the send count: changing one knob (or the outcome of one
/// send) does not shift the randomness seen by every later datagram.
struct Draws {
    state_change: u64,
    loss: u64,
    jitter: u64,
    duplicate: u64,
    duplicate_jitter: u64,
    reorder: u64,
}

impl Draws {
    fn take(rng: &mut ChaCha8Rng) -> Self {
        Self {
            state_change: rng.next_u64(),
            loss: rng.next_u64(),
            jitter: rng.next_u64(),
            duplicate: rng.next_u64(),
            duplicate_jitter: rng.next_u64(),
            reorder: rng.next_u64(),
        }
    }
}

/// One direction of a simulated link.
///
/// Push datagrams in with [`Link::send`]; ask [`Link::poll_timeout`] when the next one arrives
/// and pull it with [`Link::poll_deliver`]. Time only moves through the `now` arguments.
///
/// Each datagram leaves the sender at `max(now, end of previous departure) + size / rate` (just
/// `now` without a rate limit), then arrives `latency + jitter` later (plus `reorder_delay` if
/// chosen for reordering). Bytes waiting for departure form the queue, bounded by
/// `queue_limit_bytes` with tail drop. Lost datagrams still occupy the sender's queue and rate: they
/// are lost on the wire.
#[derive(Debug)]
pub struct Link {
    config: LinkConfig,
    rng: ChaCha8Rng,
    up: bool,
    /// Gilbert–Elliott state: `true` while in the bad state.
    in_bad_state: bool,
    next_seq: u64,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    in_flight_bytes: usize,
    /// When the rate limiter finishes serializing everything accepted so far.
    departure_free_at: Option<Instant>,
    /// Departure end and size of each datagram accepted by the rate limiter, oldest first.
    departures: VecDeque<(Instant, usize)>,
    queued_bytes: usize,
    /// Latest due time scheduled while reliable: a reliable link never delivers earlier.
    last_reliable_due: Option<Instant>,
    stats: LinkStats,
}

impl Link {
    /// A link direction with `config`, its randomness seeded from `seed`.
    pub fn new(config: LinkConfig, seed: u64) -> Self {
        Self {
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            up: true,
            in_bad_state: false,
            next_seq: 0,
            in_flight: BinaryHeap::new(),
            in_flight_bytes: 0,
            departure_free_at: None,
            departures: VecDeque::new(),
            queued_bytes: 0,
            last_reliable_due: None,
            stats: LinkStats::default(),
        }
    }

    /// Offers `datagram` to the link at `now`, and says what became of it.
    pub fn send(&mut self, now: Instant, datagram: Bytes) -> SendOutcome {
        self.stats.sent += 1;
        let draws = Draws::take(&mut self.rng);
        self.release_departed(now);
        if !self.up {
            self.stats.dropped_down += 1;
            return SendOutcome::DroppedDown;
        }
        let size = datagram.len();
        if size > self.config.mtu {
            self.stats.dropped_mtu += 1;
            return SendOutcome::DroppedMtu;
        }
        let departure = match self.config.rate_bytes_per_sec {
            None => now,
            Some(rate) => {
                if self.queued_bytes.saturating_add(size) > self.config.queue_limit_bytes {
                    self.stats.dropped_queue += 1;
                    return SendOutcome::DroppedQueueFull;
                }
                let start = self.departure_free_at.map_or(now, |free| free.max(now));
                let end = start + serialization_time(size, rate);
                self.departure_free_at = Some(end);
                self.departures.push_back((end, size));
                self.queued_bytes += size;
                end
            }
        };

        let reliable = self.config.reliable;
        if !reliable && self.is_lost(&draws) {
            self.stats.dropped_loss += 1;
            return SendOutcome::DroppedLoss;
        }
        let base = departure + self.config.latency;
        let mut due = base + uniform_duration(draws.jitter, self.config.jitter);
        if !reliable && chance(draws.reorder, self.config.reorder) {
            self.stats.reordered += 1;
            due += self.config.reorder_delay;
        }
        if reliable {
            if let Some(last) = self.last_reliable_due {
                due = due.max(last);
            }
            self.last_reliable_due = Some(due);
        }
        let duplicate = !reliable && chance(draws.duplicate, self.config.duplicate);
        if duplicate {
            self.stats.duplicated += 1;
            let copy_due = base + uniform_duration(draws.duplicate_jitter, self.config.jitter);
            self.schedule(due, datagram.clone());
            self.schedule(copy_due, datagram);
        } else {
            self.schedule(due, datagram);
        }
        SendOutcome::Queued
    }

    /// The earliest time a datagram becomes deliverable, if any is in flight.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.in_flight.peek().map(|Reverse(d)| d.due)
    }

    /// The next datagram due at or before `now`, in due order (ties in send order).
    pub fn poll_deliver(&mut self, now: Instant) -> Option<Bytes> {
        if self.poll_timeout()? > now {
            return None;
        }
        let Reverse(d) = self.in_flight.pop()?;
        self.in_flight_bytes -= d.datagram.len();
        self.stats.delivered += 1;
        self.stats.bytes_delivered += d.datagram.len() as u64;
        Some(d.datagram)
    }

    /// Brings the link up or down. Going down drops everything queued or in flight; while down
    /// every send is dropped.
    pub fn set_up(&mut self, up: bool) {
        if self.up && !up {
            self.stats.dropped_down += self.in_flight.len() as u64;
            self.in_flight.clear();
            self.in_flight_bytes = 0;
            self.departures.clear();
            self.queued_bytes = 0;
            self.departure_free_at = None;
            self.last_reliable_due = None;
        }
        self.up = up;
    }

    /// Whether the link is up.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// The configuration.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// The configuration, to change it for datagrams sent from now on.
    pub fn config_mut(&mut self) -> &mut LinkConfig {
        &mut self.config
    }

    /// Counters since creation.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Payload bytes scheduled for delivery and not yet delivered (duplicates counted twice).
    pub fn in_flight_bytes(&self) -> usize {
        self.in_flight_bytes
    }

    /// Datagram copies scheduled for delivery and not yet delivered.
    pub fn in_flight_len(&self) -> usize {
        self.in_flight.len()
    }

    /// Bytes waiting for the rate limiter at `now` (the queue that `queue_limit_bytes` bounds).
    pub fn queued_bytes(&self, now: Instant) -> usize {
        self.departures
            .iter()
            .filter(|(end, _)| *end > now)
            .map(|(_, size)| size)
            .sum()
    }

    fn schedule(&mut self, due: Instant, datagram: Bytes) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.in_flight_bytes += datagram.len();
        self.in_flight
            .push(Reverse(InFlight { due, seq, datagram }));
    }

    /// Forgets departures completed by `now`.
    fn release_departed(&mut self, now: Instant) {
        while let Some(&(end, size)) = self.departures.front() {
            if end > now {
                break;
            }
            self.departures.pop_front();
            self.queued_bytes -= size;
        }
    }

    /// Advances the loss model by one datagram and says whether that datagram is lost.
    fn is_lost(&mut self, draws: &Draws) -> bool {
        match self.config.loss {
            Loss::None => false,
            Loss::Random(p) => chance(draws.loss, p),
            Loss::GilbertElliott {
                p_good_to_bad,
                p_bad_to_good,
                loss_in_good,
                loss_in_bad,
            } => {
                let leave = if self.in_bad_state {
                    p_bad_to_good
                } else {
                    p_good_to_bad
                };
                if chance(draws.state_change, leave) {
                    self.in_bad_state = !self.in_bad_state;
                }
                let p = if self.in_bad_state {
                    loss_in_bad
                } else {
                    loss_in_good
                };
                chance(draws.loss, p)
            }
        }
    }
}

/// Whether a uniform draw falls under probability `p`.
fn chance(draw: u64, p: f64) -> bool {
    // 53 random bits give a uniform value in [0, 1); `p == 1` always passes, `p == 0` never does.
    let unit = (draw >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
    unit < clamp_probability(p)
}

/// A duration uniform in `[0, max]`, from one draw.
fn uniform_duration(draw: u64, max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let span = max.as_nanos().saturating_add(1);
    // Multiply-shift maps the draw onto [0, span) without division.
    let nanos = (u128::from(draw) * span) >> 64;
    duration_from_nanos(nanos)
}

/// Time to serialize `size` bytes at `rate` bytes per second, rounded up to a nanosecond.
fn serialization_time(size: usize, rate: u64) -> Duration {
    let rate = u128::from(rate.max(1));
    let nanos = (size as u128 * 1_000_000_000).div_ceil(rate);
    duration_from_nanos(nanos)
}

fn duration_from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    // The remainder is below 10^9 and always fits.
    let sub = (nanos % NANOS_PER_SEC) as u32;
    Duration::new(secs, sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chance_extremes() {
        assert!(chance(u64::MAX, 1.0));
        assert!(!chance(0, 0.0));
        assert!(chance(0, 1e-9));
        assert!(!chance(u64::MAX, 0.999_999));
    }

    #[test]
    fn uniform_duration_bounds() {
        let max = Duration::from_millis(3);
        assert_eq!(uniform_duration(0, max), Duration::ZERO);
        assert_eq!(uniform_duration(u64::MAX, max), max);
        assert_eq!(uniform_duration(u64::MAX, Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn serialization_time_rounds_up() {
        assert_eq!(
            serialization_time(1000, 1_000_000),
            Duration::from_millis(1)
        );
        assert_eq!(serialization_time(1, 3), Duration::from_nanos(333_333_334));
        assert_eq!(serialization_time(5, 0), Duration::from_secs(5));
    }
}
