//! Workloads driven in virtual time over any [`Pair`].

use std::time::{Duration, Instant};

use atbus_netsim::{Bytes, Clock, LinkStats};

use crate::net::Pair;

/// Smallest clock step, so a driver whose wake-up is already due still moves forward.
const MIN_STEP: Duration = Duration::from_micros(10);
/// Guard against a peer that never lets virtual time advance.
const MAX_STEPS: u64 = 50_000_000;

/// Bulk transfer: A keeps its send buffer full of `message_size`-byte messages for `duration`.
#[derive(Debug, Clone, Copy)]
pub struct Bulk {
    /// Virtual time measured.
    pub duration: Duration,
    /// Size of each message.
    pub message_size: usize,
}

/// What a bulk run measured.
#[derive(Debug, Clone, Copy)]
pub struct BulkResult {
    /// Message bytes B's application read within the duration.
    pub delivered: u64,
    /// The duration.
    pub duration: Duration,
    /// Data-direction link counters.
    pub link: LinkStats,
}

impl BulkResult {
    /// Delivered bytes per virtual second, in KiB/s.
    pub fn goodput_kib_s(&self) -> f64 {
        self.delivered as f64 / 1024.0 / self.duration.as_secs_f64()
    }
}

/// Runs `workload` on `pair` from the clock's current time.
pub fn run_bulk(pair: &mut dyn Pair, clock: &mut Clock, workload: Bulk) -> BulkResult {
    let message = Bytes::from(
        (0..workload.message_size)
            .map(|i| i as u8)
            .collect::<Vec<u8>>(),
    );
    let end = clock.now() + workload.duration;
    let mut delivered = 0u64;
    let mut steps = 0u64;
    loop {
        let now = clock.now();
        while pair.send(now, &message) {}
        pair.poll(now, &mut |m| {
            assert!(m == &message[..], "bulk message corrupted");
            delivered += m.len() as u64;
        });
        if now >= end {
            break;
        }
        let wake = pair.next_wake().unwrap_or(end).min(end);
        clock.advance_to(wake.max(now + MIN_STEP).min(end));
        steps += 1;
        assert!(steps < MAX_STEPS, "bulk run does not progress");
    }
    BulkResult {
        delivered,
        duration: workload.duration,
        link: pair.data_stats(),
    }
}

/// Steady small messages: `count` messages of `size` bytes, one in each slot of `interval`, at a
/// seeded random point of the slot, so send times keep no fixed phase against a peer's timer tick
/// (a 10 ms KCP update aligned with sends every 10 ms would make its send delay always zero).
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    /// Messages sent.
    pub count: usize,
    /// Bytes per message (at least 4: the first 4 carry the message index).
    pub size: usize,
    /// Time between two sends.
    pub interval: Duration,
    /// How long after the last send the run waits for stragglers.
    pub drain: Duration,
    /// Seed of the send times within their slots.
    pub seed: u64,
}

/// What a latency run measured.
#[derive(Debug, Clone)]
pub struct LatencyResult {
    /// One-way latency (send call to read by B) per message; `None` if it never arrived.
    pub latencies: Vec<Option<Duration>>,
}

impl LatencyResult {
    /// The `q`-quantile (nearest rank) in milliseconds; messages never delivered count as
    /// infinitely late.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let mut v: Vec<f64> = self
            .latencies
            .iter()
            .map(|l| l.map_or(f64::INFINITY, |d| d.as_secs_f64() * 1e3))
            .collect();
        v.sort_by(f64::total_cmp);
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    }

    /// Messages that never arrived.
    pub fn undelivered(&self) -> usize {
        self.latencies.iter().filter(|l| l.is_none()).count()
    }
}

/// Runs `workload` on `pair` from the clock's current time.
pub fn run_latency(pair: &mut dyn Pair, clock: &mut Clock, workload: Latency) -> LatencyResult {
    assert!(workload.size >= 4 && workload.count > 0);
    let start = clock.now();
    let slot = workload.interval.as_nanos() as u64;
    let mut x = atbus_netsim::derive_seed(workload.seed, 1) | 1;
    let times: Vec<Instant> = (0..workload.count as u64)
        .map(|i| {
            // xorshift64: a uniform offset within slot i.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            start + Duration::from_nanos(i * slot + x % slot)
        })
        .collect();
    let send_at = |i: usize| times[i];
    let last_send = send_at(workload.count - 1);
    let end = last_send + workload.drain;
    let mut sent_at: Vec<Option<Instant>> = vec![None; workload.count];
    let mut latencies: Vec<Option<Duration>> = vec![None; workload.count];
    let mut next = 0usize;
    let mut received = 0usize;
    let mut steps = 0u64;
    loop {
        let now = clock.now();
        while next < workload.count && send_at(next) <= now {
            let mut m = vec![0u8; workload.size];
            m[..4].copy_from_slice(&(next as u32).to_le_bytes());
            if !pair.send(now, &Bytes::from(m)) {
                break; // never happens at these rates; try again on the next step
            }
            sent_at[next] = Some(now);
            next += 1;
        }
        pair.poll(now, &mut |m| {
            let i = u32::from_le_bytes(m[..4].try_into().expect("index")) as usize;
            let t = sent_at[i].expect("delivered after sent");
            assert!(latencies[i].is_none(), "message {i} delivered twice");
            latencies[i] = Some(now - t);
            received += 1;
        });
        if received == workload.count || now >= end {
            break;
        }
        let next_send = (next < workload.count).then(|| send_at(next));
        let wake = atbus_netsim::earliest([pair.next_wake(), next_send, Some(end)])
            .expect("end is always there");
        clock.advance_to(wake.max(now + MIN_STEP).min(end));
        steps += 1;
        assert!(steps < MAX_STEPS, "latency run does not progress");
    }
    LatencyResult { latencies }
}
