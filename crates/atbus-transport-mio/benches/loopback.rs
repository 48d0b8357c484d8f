//! Echo throughput over loopback TCP and Unix sockets: two `NodeDriver`s (the echo on its own
//! thread) beside the raw baseline of the same pattern in the same run, blocking std sockets with
//! a thread echoing length-prefixed messages.
//!
//! - `*/64B`: 64-byte messages per second; atbus keeps 1000 in flight (the `atbus send`
//!   default); the raw baseline writes one message per `write` (`raw_per_write`) or 1000 per
//!   `write` (`raw_batched`), its writer on its own thread so the kernel buffers are the window.
//! - `*/64KiB`: bytes per second of 64 KiB messages.
//!
//! `cargo bench -p atbus-transport-mio --bench loopback`
//! (round-trip p50/p99: `cargo run --release -p atbus-transport-mio --example loopback_rtt`)

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

#[path = "common/loopback.rs"]
mod loopback;

use loopback::{AtbusPair, Family, RawEchoMode, RawPair, payload};

/// 64 B messages per iteration.
const SMALL_COUNT: usize = 10_000;
/// 64 KiB messages per iteration (4 MiB).
const LARGE_COUNT: usize = 64;
/// atbus messages in flight, like `atbus send`.
const WINDOW: usize = 1000;

fn family(c: &mut Criterion, family: Family) {
    let small = payload(64);
    let large = payload(64 * 1024);

    let mut g = c.benchmark_group(format!("{}/64B", family.name()));
    g.throughput(Throughput::Elements(SMALL_COUNT as u64));
    {
        let mut raw = RawPair::new(family, RawEchoMode::PerMessage);
        g.bench_function("raw_per_write", |b| {
            b.iter(|| raw.stream(&small, SMALL_COUNT, 1))
        });
    }
    {
        let mut raw = RawPair::new(family, RawEchoMode::Batched);
        g.bench_function("raw_batched", |b| {
            b.iter(|| raw.stream(&small, SMALL_COUNT, WINDOW))
        });
    }
    {
        let mut atbus = AtbusPair::new(family);
        g.bench_function("atbus_window_1000", |b| {
            b.iter(|| atbus.stream(&small, SMALL_COUNT, WINDOW))
        });
    }
    g.finish();

    let mut g = c.benchmark_group(format!("{}/64KiB", family.name()));
    g.throughput(Throughput::Bytes((LARGE_COUNT * large.len()) as u64));
    {
        let mut raw = RawPair::new(family, RawEchoMode::PerMessage);
        g.bench_function("raw", |b| b.iter(|| raw.stream(&large, LARGE_COUNT, 1)));
    }
    {
        let mut atbus = AtbusPair::new(family);
        g.bench_function("atbus_window_1000", |b| {
            b.iter(|| atbus.stream(&large, LARGE_COUNT, WINDOW))
        });
    }
    g.finish();
}

fn loopback(c: &mut Criterion) {
    family(c, Family::Tcp);
    family(c, Family::Unix);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = loopback
}
criterion_main!(benches);
