//! RTT estimation (RFC 6298 / RFC 9002 §5).

use std::time::Duration;

/// Smoothed RTT state of one path.
#[derive(Debug, Clone, Copy)]
pub struct RttEstimator {
    latest: Duration,
    smoothed: Option<Duration>,
    var: Duration,
    min: Duration,
    initial: Duration,
}

impl RttEstimator {
    /// An estimator that assumes `initial` until the first sample.
    pub fn new(initial: Duration) -> Self {
        Self {
            latest: initial,
            smoothed: None,
            var: initial / 2,
            min: initial,
            initial,
        }
    }

    /// Adds a sample; `ack_delay` (already capped by the caller) is removed when that keeps the
    /// sample at or above the minimum RTT, as RFC 9002 §5.3 says.
    pub fn update(&mut self, sample: Duration, ack_delay: Duration) {
        self.latest = sample;
        let Some(smoothed) = self.smoothed else {
            self.min = sample;
            self.smoothed = Some(sample);
            self.var = sample / 2;
            return;
        };
        self.min = self.min.min(sample);
        let adjusted = if sample >= self.min + ack_delay {
            sample - ack_delay
        } else {
            sample
        };
        let diff = smoothed.abs_diff(adjusted);
        self.var = (self.var * 3 + diff) / 4;
        self.smoothed = Some((smoothed * 7 + adjusted) / 8);
    }

    /// Smoothed RTT (the initial value before any sample).
    pub fn smoothed(&self) -> Duration {
        self.smoothed.unwrap_or(self.initial)
    }

    /// RTT variation.
    pub fn var(&self) -> Duration {
        self.var
    }

    /// Latest sample.
    pub fn latest(&self) -> Duration {
        self.latest
    }

    /// Minimum RTT seen.
    pub fn min(&self) -> Duration {
        self.min
    }

    /// Whether any sample was taken.
    pub fn has_sample(&self) -> bool {
        self.smoothed.is_some()
    }

    /// Base probe timeout: srtt + max(4·rttvar, granularity).
    pub fn pto_base(&self, granularity: Duration) -> Duration {
        self.smoothed() + (self.var * 4).max(granularity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converges_and_removes_ack_delay() {
        let mut r = RttEstimator::new(Duration::from_millis(100));
        assert_eq!(r.smoothed(), Duration::from_millis(100));
        r.update(Duration::from_millis(40), Duration::ZERO);
        assert_eq!(r.smoothed(), Duration::from_millis(40));
        for _ in 0..50 {
            r.update(Duration::from_millis(50), Duration::from_millis(10));
        }
        let s = r.smoothed().as_micros();
        assert!((39_000..=41_000).contains(&s), "ack delay removed: {s}");
        assert_eq!(r.min(), Duration::from_millis(40));
    }
}
