//! Layer 2 of libatbus-rs: the sans-IO session.
//!
//! A `Session` between two node names will carry many one-way streams over one or more paths:
//! per-path MTU fragmentation, per-path packet numbers, acknowledgements, loss detection and
//! retransmission, RTT estimation, flow control by receive credit, overlap-merging reassembly,
//! stale-data skips and clean close. Time and randomness come in as arguments; input is pushed
//! with `handle_*`, output pulled with `poll_*`. Not built yet; see `docs/architecture.md`.
#![forbid(unsafe_code)]
