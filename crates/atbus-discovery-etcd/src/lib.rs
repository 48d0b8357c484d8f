//! Layer 4 of libatbus-rs: the etcd backend of the `Discovery` trait.
//!
//! Will register node records under a lease with put-if-absent, keep the lease alive, list and
//! watch with recovery from compaction and etcd restarts, on a tokio runtime of its own bridged to
//! the sans-IO node by a channel and a waker. Not built yet; see `docs/architecture.md`.
#![forbid(unsafe_code)]
