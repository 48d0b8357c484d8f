//! Pushes messages through two in-memory sessions, for profiling with callgrind: instruction
//! counts repeat exactly run to run, unlike times on a shared machine.
//!
//! ```sh
//! cargo build --release -p atbus-stream --example pump
//! valgrind --tool=callgrind target/release/examples/pump [SIZE [ROUNDS]]
//! ```
//!
//! Each round sends 256 messages of SIZE bytes (default 64) and pumps until all are read and
//! acknowledged (ROUNDS defaults to 200); divide the total by 256 × ROUNDS for instructions per
//! message. `docs/benchmarks.md` keeps the counts.
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
