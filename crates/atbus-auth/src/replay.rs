//! The 0-RTT anti-replay guard: a freshness window, a bounded cache of the nonces seen within
//! it, and a warm-up that refuses 0-RTT while the cache cannot know what an earlier instance
//! accepted.
//!
//! Why it is enough: a flight stamped `t` is accepted only while `|now − t| ≤ window`, and its
//! nonce stays cached until `now > t + window`, after which the same flight is stale. So within
//! one instance every flight is accepted at most once. After a restart at `start` the cache is
//! empty, but an earlier instance accepted only flights stamped `t ≤ start + window` (it stopped
//! before `start`); the new guard refuses every flight stamped at or before `start + window`,
//! and refuses all 0-RTT until `now ≥ start + window`. When the cache is full the guard refuses
//! rather than forgets. If the wall clock steps back, flights stamped at or before the newest
//! forgotten timestamp stay refused. Every refusal falls back to 1-RTT, which has its own fresh
//! nonces, so early data is delivered at most once.

use std::collections::BTreeSet;

use crate::early::{EARLY_NONCE_LEN, EarlyContext, EarlyProof};
use crate::error::EarlyProofError;

/// Default freshness window: ±10 s.
pub const DEFAULT_WINDOW_MS: u64 = 10_000;
/// Default nonce cache capacity (about 100 bytes each: two B-tree entries).
pub const DEFAULT_MAX_ENTRIES: usize = 65_536;

/// Settings of an [`AntiReplay`] guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AntiReplayConfig {
    /// Largest accepted difference between the flight's timestamp and the server's clock, in
    /// either direction, milliseconds (default 10 000).
    pub window_ms: u64,
    /// Most nonces remembered at once (default 65 536); when full, 0-RTT is refused.
    pub max_entries: usize,
}

impl Default for AntiReplayConfig {
    fn default() -> Self {
        Self {
            window_ms: DEFAULT_WINDOW_MS,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

/// What the guard decided about one first flight. Anything but `Accepted` means: do not
/// deliver the early data, continue with the 1-RTT handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlyOutcome {
    /// Fresh and never seen: the early data may be delivered (marked as 0-RTT).
    Accepted,
    /// The nonce was accepted before within the window.
    Replayed,
    /// The timestamp is outside the window (or at or before a forgotten timestamp after the
    /// clock stepped back). `offset_ms` is the flight's time minus the server's (negative:
    /// old; positive: from the future).
    Stale {
        /// Flight time minus server time, milliseconds.
        offset_ms: i64,
    },
    /// The guard started less than one window ago, or the flight is stamped at or before
    /// `warm_at_unix_ms`: an earlier instance may have accepted it.
    NotYetWarm {
        /// `start + window`: only flights stamped, and received, after it can be accepted.
        warm_at_unix_ms: u64,
    },
    /// The nonce cache is at its capacity.
    CacheFull,
}

impl EarlyOutcome {
    /// Whether the early data may be delivered.
    pub fn is_accepted(self) -> bool {
        self == Self::Accepted
    }
}

/// Counters of a guard's decisions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AntiReplayStats {
    /// Flights accepted.
    pub accepted: u64,
    /// Flights refused as replays.
    pub replayed: u64,
    /// Flights refused as stale.
    pub stale: u64,
    /// Flights refused during warm-up.
    pub not_yet_warm: u64,
    /// Flights refused because the cache was full.
    pub cache_full: u64,
}

/// The anti-replay guard of one listener. Create a new one at every process start, with the
/// start's wall-clock time.
#[derive(Debug, Clone)]
pub struct AntiReplay {
    config: AntiReplayConfig,
    warm_at: u64,
    forgotten_up_to: Option<u64>,
    nonces: BTreeSet<[u8; EARLY_NONCE_LEN]>,
    by_time: BTreeSet<(u64, [u8; EARLY_NONCE_LEN])>,
    stats: AntiReplayStats,
}

impl AntiReplay {
    /// A guard started at Unix time `started_unix_ms` (milliseconds).
    pub fn new(config: AntiReplayConfig, started_unix_ms: u64) -> Self {
        Self {
            warm_at: started_unix_ms.saturating_add(config.window_ms),
            config,
            forgotten_up_to: None,
            nonces: BTreeSet::new(),
            by_time: BTreeSet::new(),
            stats: AntiReplayStats::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &AntiReplayConfig {
        &self.config
    }

    /// Nonces remembered now.
    pub fn len(&self) -> usize {
        self.nonces.len()
    }

    /// Whether no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.nonces.is_empty()
    }

    /// Decision counters.
    pub fn stats(&self) -> AntiReplayStats {
        self.stats
    }

    /// Forgets nonces whose flights can no longer be fresh at `now_unix_ms`.
    pub fn expire(&mut self, now_unix_ms: u64) {
        while let Some(&(t, nonce)) = self.by_time.first() {
            if t.saturating_add(self.config.window_ms) >= now_unix_ms {
                break;
            }
            self.by_time.pop_first();
            self.nonces.remove(&nonce);
            self.forgotten_up_to = Some(self.forgotten_up_to.map_or(t, |f| f.max(t)));
        }
    }

    /// Decides about a first flight whose proof already verified, received at `now_unix_ms`.
    /// Remembers its nonce when it is accepted.
    pub fn check(&mut self, now_unix_ms: u64, proof: &EarlyProof) -> EarlyOutcome {
        let outcome = self.decide(now_unix_ms, proof);
        let s = &mut self.stats;
        let counter = match outcome {
            EarlyOutcome::Accepted => &mut s.accepted,
            EarlyOutcome::Replayed => &mut s.replayed,
            EarlyOutcome::Stale { .. } => &mut s.stale,
            EarlyOutcome::NotYetWarm { .. } => &mut s.not_yet_warm,
            EarlyOutcome::CacheFull => &mut s.cache_full,
        };
        *counter += 1;
        outcome
    }

    /// Verifies `proof` against `secret` and `ctx` (constant time), then, only if it verified,
    /// runs [`AntiReplay::check`]. A forged proof is an error and never touches the cache.
    pub fn admit(
        &mut self,
        now_unix_ms: u64,
        proof: &EarlyProof,
        secret: &[u8],
        ctx: &EarlyContext<'_>,
    ) -> Result<EarlyOutcome, EarlyProofError> {
        proof.verify(secret, ctx)?;
        Ok(self.check(now_unix_ms, proof))
    }

    fn decide(&mut self, now: u64, proof: &EarlyProof) -> EarlyOutcome {
        self.expire(now);
        let t = proof.unix_ms;
        let w = self.config.window_ms;
        let stale = EarlyOutcome::Stale {
            offset_ms: (i128::from(t) - i128::from(now))
                .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
        };
        if t.saturating_add(w) < now || t > now.saturating_add(w) {
            return stale;
        }
        if self.forgotten_up_to.is_some_and(|f| t <= f) {
            return stale;
        }
        if now < self.warm_at || t <= self.warm_at {
            return EarlyOutcome::NotYetWarm {
                warm_at_unix_ms: self.warm_at,
            };
        }
        if self.nonces.contains(&proof.nonce) {
            return EarlyOutcome::Replayed;
        }
        if self.nonces.len() >= self.config.max_entries {
            return EarlyOutcome::CacheFull;
        }
        self.nonces.insert(proof.nonce);
        self.by_time.insert((t, proof.nonce));
        EarlyOutcome::Accepted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u64 = 10_000;
    const START: u64 = 1_700_000_000_000;
    /// A time at which the guard started at START is warm.
    const WARM: u64 = START + 3 * W;

    fn proof(unix_ms: u64, n: u8) -> EarlyProof {
        let mut nonce = [0u8; 32];
        nonce[0] = n;
        EarlyProof {
            unix_ms,
            nonce,
            tag: [0; 32],
        }
    }

    fn guard() -> AntiReplay {
        AntiReplay::new(AntiReplayConfig::default(), START)
    }

    #[test]
    fn accepts_once_then_refuses_replay_on_the_same_instance() {
        let mut g = guard();
        assert_eq!(g.check(WARM, &proof(WARM, 1)), EarlyOutcome::Accepted);
        assert_eq!(g.check(WARM + 1, &proof(WARM, 1)), EarlyOutcome::Replayed);
        // Same nonce, other timestamp: still a replay (the MAC would fail anyway).
        assert_eq!(
            g.check(WARM + 2, &proof(WARM + 1, 1)),
            EarlyOutcome::Replayed
        );
        assert_eq!(g.check(WARM + 3, &proof(WARM, 2)), EarlyOutcome::Accepted);
        assert_eq!(g.len(), 2);
        let s = g.stats();
        assert_eq!((s.accepted, s.replayed), (2, 2));
    }

    #[test]
    fn window_edges_are_inclusive() {
        let mut g = guard();
        let now = WARM + W;
        assert_eq!(g.check(now, &proof(now - W, 1)), EarlyOutcome::Accepted);
        assert_eq!(
            g.check(now, &proof(now - W - 1, 2)),
            EarlyOutcome::Stale {
                offset_ms: -(W as i64) - 1
            }
        );
        assert_eq!(g.check(now, &proof(now + W, 3)), EarlyOutcome::Accepted);
        assert_eq!(
            g.check(now, &proof(now + W + 1, 4)),
            EarlyOutcome::Stale {
                offset_ms: W as i64 + 1
            }
        );
    }

    #[test]
    fn a_nonce_is_kept_exactly_as_long_as_its_flight_can_be_fresh() {
        let mut g = guard();
        let t = WARM;
        assert!(g.check(t, &proof(t, 9)).is_accepted());
        // At t + W the flight is still fresh: the nonce must still be remembered.
        assert_eq!(g.check(t + W, &proof(t, 9)), EarlyOutcome::Replayed);
        assert_eq!(g.len(), 1);
        // One millisecond later it is stale, and the nonce can go.
        assert!(matches!(
            g.check(t + W + 1, &proof(t, 9)),
            EarlyOutcome::Stale { .. }
        ));
        assert_eq!(g.len(), 0);
    }

    #[test]
    fn refuses_all_zero_rtt_for_one_window_after_start() {
        let mut g = guard();
        let warm_at = START + W;
        for now in [START, START + 1, warm_at - 1] {
            assert_eq!(
                g.check(now, &proof(now, 1)),
                EarlyOutcome::NotYetWarm {
                    warm_at_unix_ms: warm_at
                },
                "now = start + {}",
                now - START
            );
        }
        // Received at warm_at but stamped at warm_at: an earlier instance might have taken it.
        assert!(matches!(
            g.check(warm_at, &proof(warm_at, 1)),
            EarlyOutcome::NotYetWarm { .. }
        ));
        assert_eq!(
            g.check(warm_at + 1, &proof(warm_at + 1, 1)),
            EarlyOutcome::Accepted
        );
        assert_eq!(g.stats().not_yet_warm, 4);
    }

    #[test]
    fn replay_after_restart_is_refused() {
        // The first instance accepts a flight stamped at the latest moment it could.
        let mut first = guard();
        let stop = WARM;
        let flight = proof(stop + W, 7);
        assert!(first.check(stop, &flight).is_accepted());
        // Restart right after; the attacker replays the flight whenever it is still fresh.
        let mut second = AntiReplay::new(AntiReplayConfig::default(), stop);
        for now in [stop, stop + 1, stop + W, stop + 2 * W] {
            let outcome = second.check(now, &flight);
            assert!(!outcome.is_accepted(), "replayed at stop + {}", now - stop);
        }
        // A fresh flight after warm-up is fine.
        let now = stop + W + 1;
        assert!(second.check(now, &proof(now, 8)).is_accepted());
    }

    #[test]
    fn full_cache_refuses_instead_of_forgetting() {
        let config = AntiReplayConfig {
            window_ms: W,
            max_entries: 3,
        };
        let mut g = AntiReplay::new(config, START);
        for n in 0..3 {
            assert!(g.check(WARM, &proof(WARM, n)).is_accepted());
        }
        assert_eq!(g.check(WARM, &proof(WARM, 3)), EarlyOutcome::CacheFull);
        // The remembered ones are still refused as replays.
        assert_eq!(g.check(WARM, &proof(WARM, 0)), EarlyOutcome::Replayed);
        // Once they expire there is room again.
        let later = WARM + W + 1;
        assert!(g.check(later, &proof(later, 3)).is_accepted());
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn clock_stepping_back_does_not_reopen_forgotten_nonces() {
        let mut g = guard();
        let t = WARM;
        assert!(g.check(t, &proof(t, 5)).is_accepted());
        // The clock jumps forward: the nonce is forgotten...
        assert!(matches!(
            g.check(t + 5 * W, &proof(t + 5 * W, 6)),
            EarlyOutcome::Accepted
        ));
        assert!(!g.by_time.iter().any(|&(_, n)| n[0] == 5));
        // ...then back: the old flight is fresh by the clock but must stay refused.
        assert!(matches!(
            g.check(t, &proof(t, 5)),
            EarlyOutcome::Stale { .. }
        ));
    }

    #[test]
    fn admit_verifies_before_touching_the_cache() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let ctx = EarlyContext {
            key_id: "k",
            client_name: "c",
            namespace: "",
            server_name: "s",
            first_flight: b"hello",
        };
        let mut g = guard();
        let good = EarlyProof::sign(secret, &ctx, WARM, [1; 32]).unwrap();
        let mut forged = good.clone();
        forged.tag[0] ^= 1;
        assert_eq!(
            g.admit(WARM, &forged, secret, &ctx),
            Err(EarlyProofError::BadMac)
        );
        assert!(g.is_empty(), "a forged flight must not use the cache");
        assert_eq!(
            g.admit(WARM, &good, secret, &ctx),
            Ok(EarlyOutcome::Accepted)
        );
        assert_eq!(
            g.admit(WARM, &good, secret, &ctx),
            Ok(EarlyOutcome::Replayed)
        );
    }

    #[test]
    fn extreme_times_do_not_panic() {
        let mut g = AntiReplay::new(
            AntiReplayConfig {
                window_ms: u64::MAX,
                max_entries: 1,
            },
            u64::MAX,
        );
        let _ = g.check(0, &proof(u64::MAX, 1));
        let _ = g.check(u64::MAX, &proof(0, 2));
        let mut g = guard();
        assert!(matches!(
            g.check(0, &proof(u64::MAX, 1)),
            EarlyOutcome::Stale {
                offset_ms: i64::MAX
            }
        ));
    }
}
