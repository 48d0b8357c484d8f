//! Layer 2 of libatbus-rs: service discovery without I/O.
//!
//! Will own the node record (name, version, custom data, key ids, host, metadata, gateways,
//! advertised relay), Kubernetes-style name and label validation, label selectors, gateway
//! matching, connection planning, the non-blocking `Discovery` trait and the embedded in-memory
//! and static-file backend. Not built yet; see `docs/architecture.md`.
#![forbid(unsafe_code)]
