//! Pushes 64-byte messages through two in-memory sessions (for profiling with callgrind).
use bytes::Bytes;

#[path = "../benches/common/pair.rs"]
mod pair;

use pair::Pair;

fn main() {
    let size: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let rounds: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let payload = Bytes::from(vec![0x5a; size]);
    let mut pair = Pair::new();
    let mut total = 0;
    for _ in 0..rounds {
        total += pair.round(&payload);
    }
    println!("{total}");
}
