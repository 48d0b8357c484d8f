//! What one direction of a simulated link does to the datagrams it carries.

use std::time::Duration;

/// How a link loses datagrams.
///
/// Probabilities outside `[0, 1]` are clamped; NaN counts as 0.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Loss {
    /// Nothing is lost.
    #[default]
    None,
    /// Each datagram is lost independently with this probability.
    Random(f64),
    /// Two-state Markov (Gilbert–Elliott) burst loss.
    ///
    /// Before each datagram the link may change state (`good → bad` with `p_good_to_bad`,
    /// `bad → good` with `p_bad_to_good`); the datagram is then lost with the loss probability of
    /// the state it is in. The link starts in the good state.
    GilbertElliott {
        /// Probability of moving from the good to the bad state, per datagram.
        p_good_to_bad: f64,
        /// Probability of moving from the bad to the good state, per datagram.
        p_bad_to_good: f64,
        /// Loss probability while in the good state.
        loss_in_good: f64,
        /// Loss probability while in the bad state.
        loss_in_bad: f64,
    },
}

impl Loss {
    /// Long-run fraction of datagrams this model loses (the stationary loss rate).
    pub fn average_rate(&self) -> f64 {
        match *self {
            Loss::None => 0.0,
            Loss::Random(p) => clamp_probability(p),
            Loss::GilbertElliott {
                p_good_to_bad,
                p_bad_to_good,
                loss_in_good,
                loss_in_bad,
            } => {
                let to_bad = clamp_probability(p_good_to_bad);
                let to_good = clamp_probability(p_bad_to_good);
                let (good, bad) = (
                    clamp_probability(loss_in_good),
                    clamp_probability(loss_in_bad),
                );
                if to_bad + to_good == 0.0 {
                    // Never leaves the initial (good) state.
                    return good;
                }
                let in_bad = to_bad / (to_bad + to_good);
                (1.0 - in_bad) * good + in_bad * bad
            }
        }
    }
}

/// Configuration of one direction of a simulated link.
///
/// Build one with [`LinkConfig::lossless`], [`LinkConfig::lossy`] or [`Default`], then adjust it
/// with the `with_*` methods. Changes made through [`crate::Link::config_mut`] apply to datagrams
/// sent afterwards; datagrams already in flight keep their schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// One-way propagation delay.
    pub latency: Duration,
    /// Extra one-way delay, uniform in `[0, jitter]`, drawn per datagram.
    pub jitter: Duration,
    /// Loss model (ignored when `reliable`).
    pub loss: Loss,
    /// Probability that a datagram is delivered twice (ignored when `reliable`).
    pub duplicate: f64,
    /// Probability that a datagram gets `reorder_delay` of extra delay (ignored when `reliable`).
    pub reorder: f64,
    /// Extra delay given to a reordered datagram.
    pub reorder_delay: Duration,
    /// Serialization rate of the sender's bottleneck, in bytes per second; `None` is unlimited.
    /// `Some(0)` is treated as 1 byte per second.
    pub rate_bytes_per_sec: Option<u64>,
    /// Bytes that may wait for the rate limiter; a datagram that would exceed it is tail-dropped.
    /// Only meaningful with a rate limit (without one nothing ever waits).
    pub queue_limit_bytes: usize,
    /// Datagrams longer than this many bytes are dropped.
    pub mtu: usize,
    /// Byte-stream-like link (TCP, Unix socket): no loss, duplication or reordering, and jitter
    /// never lets a datagram overtake an earlier one. MTU, queue limit and link-down drops still
    /// apply; on such a link a [`crate::SendOutcome::DroppedQueueFull`] is backpressure.
    pub reliable: bool,
}

impl Default for LinkConfig {
    /// 10 ms latency, no jitter, no loss, MTU 65535, no rate limit, 1 MiB queue.
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: Loss::None,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            rate_bytes_per_sec: None,
            queue_limit_bytes: 1 << 20,
            mtu: 65535,
            reliable: false,
        }
    }
}

impl LinkConfig {
    /// A link that only delays: `latency`, nothing else.
    pub fn lossless(latency: Duration) -> Self {
        Self {
            latency,
            ..Self::default()
        }
    }

    /// A link with `latency` that loses each datagram independently with `loss_prob`.
    pub fn lossy(latency: Duration, loss_prob: f64) -> Self {
        Self {
            latency,
            loss: Loss::Random(loss_prob),
            ..Self::default()
        }
    }

    /// Sets the one-way latency.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Sets the jitter bound (extra delay uniform in `[0, jitter]`).
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets the loss model.
    pub fn with_loss(mut self, loss: Loss) -> Self {
        self.loss = loss;
        self
    }

    /// Sets the probability that a datagram is delivered twice.
    pub fn with_duplicate(mut self, probability: f64) -> Self {
        self.duplicate = probability;
        self
    }

    /// Sets the probability that a datagram is held back by `extra_delay`.
    pub fn with_reorder(mut self, probability: f64, extra_delay: Duration) -> Self {
        self.reorder = probability;
        self.reorder_delay = extra_delay;
        self
    }

    /// Limits the serialization rate to `bytes_per_sec`.
    pub fn with_rate(mut self, bytes_per_sec: u64) -> Self {
        self.rate_bytes_per_sec = Some(bytes_per_sec);
        self
    }

    /// Sets how many bytes may wait for the rate limiter before tail drop.
    pub fn with_queue_limit(mut self, bytes: usize) -> Self {
        self.queue_limit_bytes = bytes;
        self
    }

    /// Sets the largest datagram the link carries.
    pub fn with_mtu(mut self, mtu: usize) -> Self {
        self.mtu = mtu;
        self
    }

    /// Makes the link byte-stream-like (see [`LinkConfig::reliable`]).
    pub fn with_reliable(mut self, reliable: bool) -> Self {
        self.reliable = reliable;
        self
    }
}

/// Clamps a probability to `[0, 1]`, mapping NaN to 0.
pub(crate) fn clamp_probability(p: f64) -> f64 {
    if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_rate_of_models() {
        assert_eq!(Loss::None.average_rate(), 0.0);
        assert_eq!(Loss::Random(1.5).average_rate(), 1.0);
        assert_eq!(Loss::Random(f64::NAN).average_rate(), 0.0);
        let ge = Loss::GilbertElliott {
            p_good_to_bad: 0.01,
            p_bad_to_good: 0.09,
            loss_in_good: 0.0,
            loss_in_bad: 1.0,
        };
        assert!((ge.average_rate() - 0.1).abs() < 1e-12);
        let stuck = Loss::GilbertElliott {
            p_good_to_bad: 0.0,
            p_bad_to_good: 0.0,
            loss_in_good: 0.25,
            loss_in_bad: 1.0,
        };
        assert_eq!(stuck.average_rate(), 0.25);
    }

    #[test]
    fn builders_set_fields() {
        let c = LinkConfig::lossy(Duration::from_millis(5), 0.2)
            .with_jitter(Duration::from_millis(1))
            .with_duplicate(0.3)
            .with_reorder(0.4, Duration::from_millis(7))
            .with_rate(1000)
            .with_queue_limit(4000)
            .with_mtu(1200)
            .with_reliable(true);
        assert_eq!(c.latency, Duration::from_millis(5));
        assert_eq!(c.loss, Loss::Random(0.2));
        assert_eq!(c.jitter, Duration::from_millis(1));
        assert_eq!(c.duplicate, 0.3);
        assert_eq!(
            (c.reorder, c.reorder_delay),
            (0.4, Duration::from_millis(7))
        );
        assert_eq!(c.rate_bytes_per_sec, Some(1000));
        assert_eq!(c.queue_limit_bytes, 4000);
        assert_eq!(c.mtu, 1200);
        assert!(c.reliable);
        let d = LinkConfig::default();
        assert_eq!(d.latency, Duration::from_millis(10));
        assert_eq!(
            (d.mtu, d.queue_limit_bytes, d.rate_bytes_per_sec),
            (65535, 1 << 20, None)
        );
        assert_eq!(LinkConfig::lossless(Duration::ZERO).loss, Loss::None);
    }
}
