//! Virtual time for world loops.

use std::time::{Duration, Instant};

/// Earliest of several optional wake-ups (helper for world loops); `None` if all are `None`.
pub fn earliest(times: impl IntoIterator<Item = Option<Instant>>) -> Option<Instant> {
    times.into_iter().flatten().min()
}

/// A virtual clock that only moves forward, when told to.
///
/// The epoch is an arbitrary [`Instant`]; everything the simulator does depends only on offsets
/// from it, so runs replay exactly whatever the real time was when they started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    epoch: Instant,
    now: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock whose epoch is the real current instant (read once, never again).
    pub fn new() -> Self {
        Self::starting_at(Instant::now())
    }

    /// A clock whose epoch is `epoch`.
    pub fn starting_at(epoch: Instant) -> Self {
        Self { epoch, now: epoch }
    }

    /// The epoch.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the epoch.
    pub fn elapsed(&self) -> Duration {
        self.now - self.epoch
    }

    /// Moves to `to` if it is later than now; an earlier `to` leaves the clock where it is.
    /// Returns whether the clock moved.
    pub fn advance_to(&mut self, to: Instant) -> bool {
        if to > self.now {
            self.now = to;
            true
        } else {
            false
        }
    }

    /// Moves forward by `by`.
    pub fn advance_by(&mut self, by: Duration) {
        self.now += by;
    }

    /// Moves to the earliest of `wakeups` (see [`earliest`]), if there is one, and returns it.
    ///
    /// A wake-up in the past leaves the clock where it is but is still returned, so a loop that
    /// polls at the returned time makes progress.
    pub fn advance_to_earliest(
        &mut self,
        wakeups: impl IntoIterator<Item = Option<Instant>>,
    ) -> Option<Instant> {
        let next = earliest(wakeups)?;
        self.advance_to(next);
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_ignores_none() {
        let t = Instant::now();
        let later = t + Duration::from_millis(1);
        assert_eq!(earliest([None, Some(later), Some(t), None]), Some(t));
        assert_eq!(earliest([None, None]), None);
        assert_eq!(earliest(Vec::new()), None);
    }

    #[test]
    fn clock_never_moves_backwards() {
        let epoch = Instant::now();
        let mut clock = Clock::starting_at(epoch);
        assert!(clock.advance_to(epoch + Duration::from_millis(5)));
        assert!(!clock.advance_to(epoch + Duration::from_millis(2)));
        assert_eq!(clock.elapsed(), Duration::from_millis(5));
        clock.advance_by(Duration::from_millis(1));
        assert_eq!(clock.now(), epoch + Duration::from_millis(6));
        assert_eq!(clock.epoch(), epoch);
        let past = epoch + Duration::from_millis(1);
        assert_eq!(clock.advance_to_earliest([Some(past)]), Some(past));
        assert_eq!(clock.elapsed(), Duration::from_millis(6));
        assert_eq!(clock.advance_to_earliest([None]), None);
    }
}
