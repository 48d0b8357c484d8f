//! Layer 3 of libatbus-rs: the sans-IO node.
//!
//! Will own links and their handshake, authentication (1-RTT, 0-RTT, anonymous, assigned names
//! and tokens), content protection keys, incarnation ids, reconnect backoff and routing directly
//! or through relays, with one `atbus-stream` session per peer. Not built yet; see
//! `docs/architecture.md`.
#![forbid(unsafe_code)]
