//! Per-path state: packet numbers, packets in flight, loss detection (RFC 9002 §6), RTT,
//! liveness, and the receive side's packet-number acknowledgements.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::{Duration, Instant};

use crate::config::{PathConfig, PathId};
use crate::congestion::{NewReno, Pacer};
use crate::ranges::RangeSet;
use crate::rtt::RttEstimator;

/// Packet-number reordering threshold (RFC 9002 kPacketThreshold).
pub(crate) const PACKET_THRESHOLD: u64 = 3;
/// Reordering threshold in low-latency mode: fast retransmit after fewer signals.
pub(crate) const PACKET_THRESHOLD_NO_DELAY: u64 = 2;

/// Consecutive packet numbers lost in a row that low-latency mode takes as congestion (what a
/// full queue drops); shorter runs are taken as random loss.
pub(crate) const NO_DELAY_LOSS_RUN: u32 = 3;

/// A packet that carries stream data and waits for acknowledgement.
#[derive(Debug, Clone)]
pub(crate) struct SentPacket {
    pub time_sent: Instant,
    pub stream_id: i64,
    pub range: Range<u64>,
    pub finish: bool,
    pub skip: bool,
    pub size: usize,
}

/// Counters of one path, available through `Session::path_stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathStats {
    /// Packages sent.
    pub packets_sent: u64,
    /// Bytes sent (whole packages).
    pub bytes_sent: u64,
    /// Packages received.
    pub packets_received: u64,
    /// Bytes received (whole packages).
    pub bytes_received: u64,
    /// Stream data packets declared lost.
    pub packets_lost: u64,
    /// Stream bytes sent again (on any path) because a packet of this path was lost.
    pub bytes_retransmitted: u64,
    /// Smoothed RTT in microseconds (0 before the first sample).
    pub smoothed_rtt_us: u64,
    /// Latest RTT sample in microseconds.
    pub latest_rtt_us: u64,
    /// Bytes in flight now.
    pub bytes_in_flight: u64,
    /// Retransmitted stream bytes sent on this path (whichever path lost them).
    pub bytes_retransmitted_sent: u64,
    /// Congestion window in bytes (the flight window on byte-stream paths).
    pub congestion_window: u64,
}

/// Sender-side and liveness state of one of our paths.
#[derive(Debug)]
pub(crate) struct Path {
    pub id: PathId,
    pub config: PathConfig,
    pub next_pn: u64,
    /// Next control number: sealed control packets are numbered apart from data packets.
    pub next_control: u64,
    pub sent: BTreeMap<u64, SentPacket>,
    pub bytes_in_flight: usize,
    pub largest_acked: Option<u64>,
    pub loss_time: Option<Instant>,
    /// Packet number of the most recent packet declared lost, across detection rounds.
    last_lost_pn: Option<u64>,
    /// How many consecutive packet numbers ending at `last_lost_pn` were lost.
    lost_run: u32,
    /// Whether the latest losses completed a run of [`NO_DELAY_LOSS_RUN`] consecutive packet
    /// numbers (a burst), counting losses found in earlier rounds too: independent of how
    /// many losses one detection round happens to find.
    pub loss_burst: bool,
    pub last_ack_eliciting_sent: Option<Instant>,
    pub pto_count: u32,
    pub rtt: RttEstimator,
    pub blocked: bool,
    pub read_paused: bool,
    pub last_received: Instant,
    pub next_ping: Instant,
    pub ping_id: i64,
    /// Send key phase the latest ping was sealed under (a pong to it confirms the phase).
    pub ping_phase: Option<u8>,
    pub pong_due: Option<(i64, i64)>,
    pub stats: PathStats,
    pub cc: NewReno,
    pub pacer: Pacer,
    /// When the pacer lets the next packet out, if it is holding one back.
    pub pacing_wakeup: Option<Instant>,
    pub no_delay: bool,
}

impl Path {
    pub fn new(
        id: PathId,
        config: PathConfig,
        now: Instant,
        initial_rtt: Duration,
        max_window: usize,
        no_delay: bool,
    ) -> Self {
        let max_datagram = config.mtu - config.headroom;
        Self {
            cc: NewReno::new(max_datagram, max_window, no_delay),
            pacer: Pacer::new(max_datagram),
            pacing_wakeup: None,
            no_delay,
            id,
            config,
            next_pn: 0,
            next_control: 0,
            sent: BTreeMap::new(),
            bytes_in_flight: 0,
            largest_acked: None,
            loss_time: None,
            last_lost_pn: None,
            lost_run: 0,
            loss_burst: false,
            last_ack_eliciting_sent: None,
            pto_count: 0,
            rtt: RttEstimator::new(initial_rtt),
            blocked: false,
            read_paused: false,
            last_received: now,
            next_ping: now,
            ping_id: 0,
            ping_phase: None,
            pong_due: None,
            stats: PathStats::default(),
        }
    }

    /// Whether data sent here may need resending (lossy kinds).
    pub fn is_lossy(&self) -> bool {
        !self.config.kind.is_reliable()
    }

    /// Probe timeout for the packets in flight, if any (lossy paths only).
    pub fn pto_deadline(&self, granularity: Duration, max_ack_delay: Duration) -> Option<Instant> {
        if !self.is_lossy() || self.sent.is_empty() {
            return None;
        }
        let base = self.last_ack_eliciting_sent?;
        // Low-latency mode: the peer acknowledges at once and the timeout backs off by 1.5
        // instead of 2, as KCP's fast mode does.
        let (ack_delay, backoff) = if self.no_delay {
            (Duration::ZERO, 1.5f64)
        } else {
            (max_ack_delay, 2.0)
        };
        let pto = (self.rtt.pto_base(granularity) + ack_delay)
            .mul_f64(backoff.powi(self.pto_count.min(16) as i32));
        Some(base + pto)
    }

    /// The loss timer: the earlier of the time-threshold loss time and the probe timeout.
    pub fn loss_deadline(&self, granularity: Duration, max_ack_delay: Duration) -> Option<Instant> {
        self.loss_time
            .or_else(|| self.pto_deadline(granularity, max_ack_delay))
    }

    /// Time-threshold delay: 9/8 × max(srtt, latest), at least the granularity.
    fn loss_delay(&self, granularity: Duration) -> Duration {
        (self.rtt.smoothed().max(self.rtt.latest()) * 9 / 8).max(granularity)
    }

    /// Packets declared lost now (RFC 9002 §6.1), removed from flight.
    pub fn detect_lost(&mut self, now: Instant, granularity: Duration) -> Vec<SentPacket> {
        self.loss_time = None;
        let Some(largest) = self.largest_acked else {
            return Vec::new();
        };
        if !self.is_lossy() {
            return Vec::new();
        }
        let delay = self.loss_delay(granularity);
        let mut lost = Vec::new();
        self.loss_burst = false;
        let candidates: Vec<u64> = self.sent.range(..largest).map(|(&pn, _)| pn).collect();
        for pn in candidates {
            let Some(p) = self.sent.get(&pn) else {
                continue;
            };
            let too_old = now
                .checked_duration_since(p.time_sent)
                .is_some_and(|age| age >= delay);
            let threshold = if self.no_delay {
                PACKET_THRESHOLD_NO_DELAY
            } else {
                PACKET_THRESHOLD
            };
            if too_old || largest - pn >= threshold {
                if let Some(p) = self.sent.remove(&pn) {
                    self.bytes_in_flight -= p.size;
                    self.note_lost_pn(pn);
                    lost.push(p);
                }
            } else {
                let t = p.time_sent + delay;
                self.loss_time = Some(self.loss_time.map_or(t, |l| l.min(t)));
            }
        }
        self.stats.packets_lost += lost.len() as u64;
        lost
    }

    /// Records packet number `pn` as lost (called in increasing order within a round) and
    /// marks a burst when it completes a run of [`NO_DELAY_LOSS_RUN`] consecutive losses.
    fn note_lost_pn(&mut self, pn: u64) {
        if self
            .last_lost_pn
            .is_some_and(|last| last.checked_add(1) == Some(pn))
        {
            self.lost_run = self.lost_run.saturating_add(1);
        } else {
            self.lost_run = 1;
        }
        if self.lost_run >= NO_DELAY_LOSS_RUN {
            self.loss_burst = true;
        }
        self.last_lost_pn = Some(pn);
    }

    /// Probe timeout fired: the oldest packets in flight (up to two) are treated as lost, and
    /// the timeout backs off.
    pub fn on_pto(&mut self) -> Vec<SentPacket> {
        self.pto_count += 1;
        self.loss_burst = false;
        let oldest: Vec<u64> = self.sent.keys().take(2).copied().collect();
        let mut lost = Vec::new();
        for pn in oldest {
            if let Some(p) = self.sent.remove(&pn) {
                self.bytes_in_flight -= p.size;
                self.note_lost_pn(pn);
                lost.push(p);
            }
        }
        self.stats.packets_lost += lost.len() as u64;
        lost
    }

    /// Whether the congestion window has room for another packet.
    pub fn window_has_room(&self, flight_window: usize) -> bool {
        let window = if self.is_lossy() {
            self.cc.window
        } else {
            flight_window
        };
        self.bytes_in_flight < window
    }

    /// Everything in flight, when the path goes away.
    pub fn drain_in_flight(&mut self) -> Vec<SentPacket> {
        self.bytes_in_flight = 0;
        std::mem::take(&mut self.sent).into_values().collect()
    }
}

/// Receive-side state for one of the peer's paths (its packet-number space).
#[derive(Debug, Default)]
pub(crate) struct PeerPathAcks {
    pub received: RangeSet,
    pub largest: Option<u64>,
    pub largest_time: Option<Instant>,
    pub largest_timepoint: i64,
    pub unacked_eliciting: u32,
    pub ack_deadline: Option<Instant>,
    pub ack_now: bool,
    /// Our path the peer's packets last arrived on (preferred for the ack).
    pub via: Option<PathId>,
}

impl PeerPathAcks {
    /// Records packet `pn`; returns whether it was new.
    pub fn on_packet(&mut self, pn: u64, now: Instant, timepoint: i64, max_ranges: usize) -> bool {
        if self.received.contains(pn) {
            // Duplicates are acknowledged again at once: the earlier ack may have been lost.
            self.ack_now = true;
            return false;
        }
        let out_of_order = self.largest.is_some_and(|l| pn != l + 1);
        self.received.insert(pn..pn + 1);
        self.received.truncate_low(max_ranges);
        if self.largest.is_none_or(|l| pn > l) {
            self.largest = Some(pn);
            self.largest_time = Some(now);
            self.largest_timepoint = timepoint;
        }
        if out_of_order {
            self.ack_now = true;
        }
        true
    }

    pub fn needs_ack(&self, now: Instant) -> bool {
        self.ack_now || self.ack_deadline.is_some_and(|d| d <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PathKind;

    fn path_with_flight(now: Instant, count: u64) -> Path {
        let config = PathConfig::new(PathKind::Datagram, 1224);
        let mut p = Path::new(
            PathId(0),
            config,
            now,
            Duration::from_millis(100),
            usize::MAX,
            true,
        );
        for pn in 0..count {
            p.sent.insert(
                pn,
                SentPacket {
                    time_sent: now,
                    stream_id: 0,
                    range: pn * 100..(pn + 1) * 100,
                    finish: false,
                    skip: false,
                    size: 100,
                },
            );
            p.bytes_in_flight += 100;
        }
        p.next_pn = count;
        p
    }

    /// Acknowledges `pns` (removes them from flight) and raises the largest acknowledged.
    fn ack(p: &mut Path, pns: &[u64]) {
        for pn in pns {
            if let Some(sp) = p.sent.remove(pn) {
                p.bytes_in_flight -= sp.size;
            }
            p.largest_acked = Some(p.largest_acked.map_or(*pn, |l| l.max(*pn)));
        }
    }

    fn lost_pns(lost: &[SentPacket]) -> Vec<u64> {
        lost.iter().map(|sp| sp.range.start / 100).collect()
    }

    #[test]
    fn isolated_losses_found_together_are_not_a_burst() {
        let now = Instant::now();
        let mut p = path_with_flight(now, 10);
        ack(&mut p, &[0, 1, 2, 4, 5, 6, 8, 9]);
        let lost = p.detect_lost(now, Duration::from_millis(1));
        assert_eq!(lost_pns(&lost), vec![3, 7]);
        assert!(
            !p.loss_burst,
            "two isolated losses in one round are not a burst"
        );
        assert_eq!(p.lost_run, 1);
    }

    #[test]
    fn a_run_found_in_one_round_is_a_burst_a_shorter_one_is_not() {
        let now = Instant::now();
        let mut p = path_with_flight(now, 13);
        ack(&mut p, &[0, 1, 4, 5, 6, 7, 11, 12]);
        let lost = p.detect_lost(now, Duration::from_millis(1));
        assert_eq!(lost_pns(&lost), vec![2, 3, 8, 9, 10]);
        assert!(p.loss_burst, "8, 9, 10 is a run of three");
        let mut q = path_with_flight(now, 13);
        ack(&mut q, &[0, 1, 4, 5, 6, 7, 9, 11, 12]);
        let lost = q.detect_lost(now, Duration::from_millis(1));
        assert_eq!(lost_pns(&lost), vec![2, 3, 8, 10]);
        assert!(!q.loss_burst, "runs of two are random loss");
    }

    #[test]
    fn a_run_found_across_rounds_is_a_burst() {
        let now = Instant::now();
        let mut p = path_with_flight(now, 12);
        ack(&mut p, &[0, 1, 2, 3, 6]);
        let lost = p.detect_lost(now, Duration::from_millis(1));
        assert_eq!(lost_pns(&lost), vec![4]);
        assert!(!p.loss_burst);
        ack(&mut p, &[8]);
        let lost = p.detect_lost(now, Duration::from_millis(1));
        assert_eq!(lost_pns(&lost), vec![5]);
        assert!(!p.loss_burst, "4, 5 is only two");
        ack(&mut p, &[9]);
        let lost = p.detect_lost(now, Duration::from_millis(1));
        assert_eq!(lost_pns(&lost), vec![7]);
        assert!(!p.loss_burst, "6 was acknowledged: 7 starts a new run");
        let mut q = path_with_flight(now, 12);
        ack(&mut q, &[0, 6]);
        assert_eq!(
            lost_pns(&q.detect_lost(now, Duration::from_millis(1))),
            vec![1, 2, 3, 4]
        );
        assert!(q.loss_burst);
        ack(&mut q, &[10]);
        assert_eq!(
            lost_pns(&q.detect_lost(now, Duration::from_millis(1))),
            vec![5, 7, 8]
        );
        assert!(q.loss_burst, "5 extends the run of the round before");
        ack(&mut q, &[11]);
        assert_eq!(
            lost_pns(&q.detect_lost(now, Duration::from_millis(1))),
            vec![9]
        );
        assert!(q.loss_burst, "7, 8, 9 is a run of three across two rounds");
    }

    #[test]
    fn a_round_without_losses_clears_the_mark() {
        let now = Instant::now();
        let mut p = path_with_flight(now, 12);
        ack(&mut p, &[0, 4]);
        assert_eq!(
            lost_pns(&p.detect_lost(now, Duration::from_millis(1))),
            vec![1, 2]
        );
        assert!(!p.loss_burst);
        ack(&mut p, &[3, 5, 6]);
        assert!(p.detect_lost(now, Duration::from_millis(1)).is_empty());
        assert!(!p.loss_burst);
    }
}
