//! Forwards a fixed number of frames through the relay core, for instruction counts:
//!
//! ```text
//! cargo build --release -p atbus-relay --example forward_profile
//! valgrind --tool=callgrind target/release/examples/forward_profile 64 1000
//! ```
//!
//! Arguments: content size in bytes (default 64) and rounds of 64 frames (default 1000).

#[path = "../benches/common/mod.rs"]
mod common;

fn main() {
    let mut args = std::env::args().skip(1);
    let size = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let (now, mut relay, ra, rb) = common::relay();
    let input = common::packages(64, size);
    let mut buf = Vec::new();
    let mut bytes = 0;
    for _ in 0..rounds {
        relay.handle_link_bytes(now, ra, &input);
        while let Some((link, n)) = relay.poll_transmit(now, &mut buf) {
            assert_eq!(link, rb);
            bytes += n;
        }
    }
    let m = relay.metrics();
    assert_eq!(m.drops_total(), 0);
    println!(
        "{} frames of {size} B content forwarded, {bytes} bytes out",
        m.frames_forwarded
    );
}
