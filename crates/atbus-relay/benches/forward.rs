//! Per-frame cost of the relay core: packages from node "a" to node "b" go in on a's link and
//! out on b's, with the head checked, stamped and rewritten; no sockets, no sessions.
//!
//! `cargo bench -p atbus-relay --bench forward`

mod common;

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

fn forward(c: &mut Criterion) {
    const BATCH: usize = 64;
    let mut group = c.benchmark_group("relay_forward");
    for size in [64usize, 1024] {
        let input = common::packages(BATCH, size);
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function(format!("{size}B_x{BATCH}"), |bencher| {
            let (now, mut relay, ra, rb) = common::relay();
            let mut buf = Vec::new();
            bencher.iter_batched_ref(
                || (),
                |_| {
                    relay.handle_link_bytes(now, ra, black_box(&input));
                    let mut out = 0;
                    while let Some((link, n)) = relay.poll_transmit(now, &mut buf) {
                        debug_assert_eq!(link, rb);
                        out += n;
                    }
                    black_box(out)
                },
                BatchSize::SmallInput,
            );
            assert_eq!(relay.metrics().drops_total(), 0);
        });
    }
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
