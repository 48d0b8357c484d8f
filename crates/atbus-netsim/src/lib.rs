//! A seeded, sans-IO network simulator for the libatbus-rs protocol cores.
//!
//! Will model links with latency, jitter, random and burst loss, duplication, reordering, rate
//! limits with bounded queues, MTU caps and link up/down, each direction with its own seeded RNG,
//! and a world loop that advances virtual time to the earliest timeout. Not built yet; see
//! `docs/architecture.md`.
#![forbid(unsafe_code)]
