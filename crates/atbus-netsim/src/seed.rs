//! Seeds: deriving independent streams, running many seeds, replaying a failing one.

use std::panic::{self, AssertUnwindSafe};

/// Environment variable that pins [`for_each_seed`] to one seed.
pub const REPLAY_SEED_VAR: &str = "ATBUS_SIM_SEED";

/// Base from which [`for_each_seed`] derives its seeds.
const SEED_BASE: u64 = 0x6174_6275_735f_7369; // "atbus_si"

/// A seed for sub-stream `index` of `base`, well mixed so that nearby inputs give unrelated seeds.
pub fn derive_seed(base: u64, index: u64) -> u64 {
    splitmix64(splitmix64(base) ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// Parses a seed as given in [`REPLAY_SEED_VAR`]: decimal, or hexadecimal with `0x`.
pub fn parse_seed(value: &str) -> Option<u64> {
    let value = value.trim();
    match value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => value.parse().ok(),
    }
}

/// The seed pinned by the `ATBUS_SIM_SEED` environment variable, if it is set.
///
/// # Panics
///
/// If the variable is set but is not a seed: silently running every seed instead of the one the
/// developer asked to replay would hide the failure being chased.
pub fn replay_seed() -> Option<u64> {
    let value = std::env::var(REPLAY_SEED_VAR).ok()?;
    match parse_seed(&value) {
        Some(seed) => Some(seed),
        None => panic!("netsim: {REPLAY_SEED_VAR}={value:?} is not a u64 seed"),
    }
}

/// The seeds [`for_each_seed`] runs: only `replay` if given, else `count` seeds derived from a
/// fixed base (the same every run).
pub fn seeds(count: u64, replay: Option<u64>) -> Vec<u64> {
    match replay {
        Some(seed) => vec![seed],
        None => (0..count).map(|i| derive_seed(SEED_BASE, i)).collect(),
    }
}

/// Runs `f(seed)` for `count` seeds derived from a fixed base, or only for the seed in
/// `ATBUS_SIM_SEED` if that is set.
///
/// When `f` panics, prints `netsim: failing seed = N (replay with ATBUS_SIM_SEED=N)` to stderr
/// and resumes the panic.
pub fn for_each_seed(count: u64, f: impl Fn(u64)) {
    for_each_seed_with(count, replay_seed(), f);
}

/// [`for_each_seed`] with the replay seed passed in instead of read from the environment.
pub fn for_each_seed_with(count: u64, replay: Option<u64>, f: impl Fn(u64)) {
    for seed in seeds(count, replay) {
        if let Err(panic) = panic::catch_unwind(AssertUnwindSafe(|| f(seed))) {
            eprintln!("netsim: failing seed = {seed} (replay with {REPLAY_SEED_VAR}={seed})");
            panic::resume_unwind(panic);
        }
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn parse_seed_forms() {
        assert_eq!(parse_seed("42"), Some(42));
        assert_eq!(parse_seed(" 42\n"), Some(42));
        assert_eq!(parse_seed("0x2a"), Some(42));
        assert_eq!(parse_seed("0X2A"), Some(42));
        assert_eq!(parse_seed("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_seed(""), None);
        assert_eq!(parse_seed("-1"), None);
        assert_eq!(parse_seed("seed"), None);
        assert_eq!(parse_seed("18446744073709551616"), None);
    }

    #[test]
    fn seeds_are_distinct_and_stable() {
        let a = seeds(100, None);
        assert_eq!(a.len(), 100);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 100);
        assert_eq!(a, seeds(100, None));
        assert_eq!(seeds(100, Some(7)), vec![7]);
    }

    #[test]
    fn derive_seed_separates_indices() {
        assert_ne!(derive_seed(1, 0), derive_seed(1, 1));
        assert_ne!(derive_seed(0, 1), derive_seed(1, 0));
        assert_eq!(derive_seed(9, 3), derive_seed(9, 3));
    }

    #[test]
    fn for_each_seed_with_replay_runs_only_that_seed() {
        let seen = RefCell::new(Vec::new());
        for_each_seed_with(50, Some(1234), |s| seen.borrow_mut().push(s));
        assert_eq!(*seen.borrow(), vec![1234]);
        seen.borrow_mut().clear();
        for_each_seed_with(5, None, |s| seen.borrow_mut().push(s));
        assert_eq!(*seen.borrow(), seeds(5, None));
    }

    #[test]
    fn for_each_seed_with_resumes_the_panic_and_stops() {
        let seen = RefCell::new(Vec::new());
        let failing = seeds(10, None)[3];
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            for_each_seed_with(10, None, |s| {
                seen.borrow_mut().push(s);
                assert_ne!(s, failing, "boom");
            });
        }));
        assert!(result.is_err());
        assert_eq!(seen.borrow().len(), 4);
        assert_eq!(seen.borrow().last(), Some(&failing));
    }
}
