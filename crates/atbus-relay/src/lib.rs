//! Layer 3 of libatbus-rs: the sans-IO relay core.
//!
//! Will own per-frame forwarding between links: the routing table, the hop limit, loop rules,
//! rewriting of the `message_head` forwarding fields, and bounded per-link queues. A relay never
//! reassembles streams, never acknowledges stream data and never reads `content`. The
//! `atbus-relay` service runs this core on the mio driver. Not built yet; see
//! `docs/architecture.md`.
#![forbid(unsafe_code)]
