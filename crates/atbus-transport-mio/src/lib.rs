//! Layer 4 of libatbus-rs: the mio driver.
//!
//! Will execute what nodes and relays ask for on real sockets — TCP, UDP, Unix stream sockets and
//! an in-process transport chosen by URL (`tcp://`, `udp://`, `unix://`, `mem://`) — with timers,
//! read backpressure and batched writes. Not built yet; see `docs/architecture.md`.
#![forbid(unsafe_code)]
