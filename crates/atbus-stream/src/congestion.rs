//! Congestion control of lossy paths: NewReno as RFC 9002 §7 specifies it, and a pacer that
//! spreads a window over the RTT (§7.7) so bursts do not overrun small router queues.
//!
//! Byte-stream paths (TCP, Unix) rely on the kernel's congestion control and are limited only by
//! credit and their flight window.

use std::time::{Duration, Instant};

/// NewReno state of one path.
#[derive(Debug, Clone)]
pub(crate) struct NewReno {
    /// Largest datagram the path sends (its MTU minus headroom).
    max_datagram: usize,
    /// Congestion window in bytes.
    pub window: usize,
    /// Slow-start threshold in bytes.
    pub ssthresh: usize,
    /// Packets sent before this time belong to the current recovery period.
    recovery_start: Option<Instant>,
    /// Bytes acknowledged in congestion avoidance not yet turned into window growth.
    acked_in_avoidance: usize,
    /// Low-latency mode: a single lost packet does not shrink the window.
    no_delay: bool,
    /// Largest window allowed (the path's flight window).
    cap: usize,
}

impl NewReno {
    pub fn new(max_datagram: usize, cap: usize, no_delay: bool) -> Self {
        // RFC 9002 §7.2: min(10 · max_datagram, max(14720, 2 · max_datagram)).
        let initial = (10 * max_datagram).min(14_720.max(2 * max_datagram));
        Self {
            max_datagram,
            window: initial.min(cap),
            ssthresh: usize::MAX,
            recovery_start: None,
            acked_in_avoidance: 0,
            no_delay,
            cap,
        }
    }

    /// The smallest window: two datagrams.
    pub fn minimum_window(&self) -> usize {
        2 * self.max_datagram
    }

    /// Whether the path is in slow start.
    pub fn in_slow_start(&self) -> bool {
        self.window < self.ssthresh
    }

    /// A packet sent at `time_sent` of `size` bytes was acknowledged.
    pub fn on_ack(&mut self, time_sent: Instant, size: usize) {
        if self.recovery_start.is_some_and(|start| time_sent <= start) {
            return;
        }
        if self.in_slow_start() {
            self.window += size;
        } else {
            self.acked_in_avoidance += size;
            if self.acked_in_avoidance >= self.window {
                self.acked_in_avoidance -= self.window;
                self.window += self.max_datagram;
            }
        }
        self.window = self.window.min(self.cap);
    }

    /// Packets were declared lost at `now`; `latest_sent` is the send time of the newest of
    /// them; `burst` says whether they completed a run of consecutive lost packet numbers
    /// (see `Path::loss_burst`).
    pub fn on_loss(&mut self, now: Instant, latest_sent: Instant, burst: bool) {
        if self
            .recovery_start
            .is_some_and(|start| latest_sent <= start)
        {
            return;
        }
        if self.no_delay && !burst {
            // Scattered losses on a real-time path are noise, not congestion: only a run of
            // consecutive packets lost (what a full queue drops) backs off. Deciding by
            // packet numbers, not by how many losses one detection round found, keeps the
            // rule the same however acknowledgements are batched.
            return;
        }
        self.recovery_start = Some(now);
        // Low-latency mode backs off gently (× 0.8, like KCP's fast mode which keeps sending
        // through loss); the default halves, as NewReno does.
        let reduced = if self.no_delay {
            self.window * 4 / 5
        } else {
            self.window / 2
        };
        self.ssthresh = reduced.max(self.minimum_window());
        self.window = self.ssthresh;
        self.acked_in_avoidance = 0;
    }

    /// Persistent congestion (repeated probe timeouts): collapse to the minimum window.
    pub fn on_persistent_congestion(&mut self, now: Instant) {
        self.recovery_start = Some(now);
        self.ssthresh = (self.window / 2).max(self.minimum_window());
        self.window = self.minimum_window();
        self.acked_in_avoidance = 0;
    }
}

/// Token-bucket pacer: sends at 1.25 × window / smoothed RTT, with a burst of ten datagrams.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    tokens: f64,
    capacity: f64,
    last: Option<Instant>,
}

/// Pacing gain over window / RTT (RFC 9002 §7.7, N = 1.25).
const PACING_GAIN: f64 = 1.25;

impl Pacer {
    pub fn new(max_datagram: usize) -> Self {
        let capacity = (10 * max_datagram) as f64;
        Self {
            tokens: capacity,
            capacity,
            last: None,
        }
    }

    fn rate(window: usize, srtt: Duration) -> f64 {
        let secs = srtt.as_secs_f64().max(1e-6);
        PACING_GAIN * window as f64 / secs
    }

    fn refill(&mut self, now: Instant, window: usize, srtt: Duration) {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * Self::rate(window, srtt)).min(self.capacity);
        }
        self.last = Some(now);
    }

    /// Whether `size` bytes may leave now; if not, when they may.
    pub fn check(
        &mut self,
        now: Instant,
        size: usize,
        window: usize,
        srtt: Duration,
    ) -> Result<(), Instant> {
        self.refill(now, window, srtt);
        let size = size as f64;
        if self.tokens >= size.min(self.capacity) {
            return Ok(());
        }
        let wait = (size.min(self.capacity) - self.tokens) / Self::rate(window, srtt);
        Err(now + Duration::from_secs_f64(wait.max(1e-6)))
    }

    /// `size` bytes left.
    pub fn on_sent(&mut self, size: usize) {
        self.tokens -= size as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_start_then_halving_then_linear_growth() {
        let t0 = Instant::now();
        let mut cc = NewReno::new(1200, usize::MAX, false);
        assert_eq!(cc.window, 12_000);
        cc.on_ack(t0, 1200);
        assert_eq!(cc.window, 13_200, "slow start grows by what was acked");
        let t1 = t0 + Duration::from_millis(10);
        cc.on_loss(t1, t0, false);
        assert_eq!(cc.window, 6_600);
        // A second loss of a packet sent before recovery started does not halve again.
        cc.on_loss(t1 + Duration::from_millis(1), t0, false);
        assert_eq!(cc.window, 6_600);
        // Acks of packets sent before recovery do not grow the window.
        cc.on_ack(t0, 1200);
        assert_eq!(cc.window, 6_600);
        // Congestion avoidance: one datagram per window acknowledged.
        let t2 = t1 + Duration::from_millis(5);
        for _ in 0..6 {
            cc.on_ack(t2, 1100);
        }
        assert_eq!(cc.window, 7_800);
        cc.on_persistent_congestion(t2);
        assert_eq!(cc.window, 2_400);
    }

    #[test]
    fn no_delay_ignores_isolated_losses() {
        let t0 = Instant::now();
        let mut cc = NewReno::new(1000, usize::MAX, true);
        let w = cc.window;
        cc.on_loss(t0, t0, false);
        assert_eq!(cc.window, w);
        cc.on_loss(t0, t0, true);
        assert_eq!(cc.window, w * 4 / 5, "a burst of losses: a gentle back-off");
    }

    #[test]
    fn pacer_spreads_a_window_over_the_rtt() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1000);
        let srtt = Duration::from_millis(100);
        // The burst allowance goes out at once.
        for _ in 0..10 {
            assert!(p.check(t0, 1000, 100_000, srtt).is_ok());
            p.on_sent(1000);
        }
        let next = p.check(t0, 1000, 100_000, srtt).expect_err("paced");
        // 1.25 × 100 kB / 100 ms = 1.25 MB/s: 1000 bytes take 0.8 ms.
        let wait = next - t0;
        assert!(
            wait >= Duration::from_micros(790) && wait <= Duration::from_micros(810),
            "{wait:?}"
        );
        assert!(p.check(next, 1000, 100_000, srtt).is_ok());
    }
}
