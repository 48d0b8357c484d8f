//! Layer 1 of libatbus-rs: package framing.
