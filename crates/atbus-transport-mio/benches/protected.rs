//! Plain vs encrypted vs compressed sessions over loopback TCP, side by side in one run: two
//! `NodeDriver`s (the echo on its own thread, as in the `loopback` bench) with content
//! protection off, sealed with ChaCha20-Poly1305 or AES-256-GCM (PSK keys from the token
//! handshake), and sealed after LZ4 compression; the raw-socket echo of the same pattern is the
//! baseline.
//!
//! - `protected/64KiB`: bytes per second of 64 KiB messages (repetitive JSON lines, so the
//!   compressing case has something to compress; `noise` repeats the compressed case with
//!   incompressible bytes, where LZ4 tries and gives up).
//! - `protected/64B_rtt`: one 64-byte message to the echo and back, one at a time (below the
//!   compression threshold: the compressed case seals only).
//!
//! `cargo bench -p atbus-transport-mio --bench protected`
//! (quick: `-- --warm-up-time 1 --measurement-time 3`)

use std::time::Duration;

use atbus_node::{AccessToken, CipherSuite, EncryptionMode, NodeConfig};
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

#[path = "common/loopback.rs"]
mod loopback;

use loopback::{AtbusPair, Family, RawEchoMode, RawPair, payload};

/// 64 KiB messages per iteration (4 MiB).
const LARGE_COUNT: usize = 64;
/// atbus messages in flight, like `atbus send`.
const WINDOW: usize = 1000;
/// Round trips per iteration of the 64 B case.
const ROUND_TRIPS: u32 = 100;

/// One configuration of content protection.
#[derive(Clone, Copy)]
struct Mode {
    name: &'static str,
    suite: Option<CipherSuite>,
    compress: bool,
}

const MODES: [Mode; 4] = [
    Mode {
        name: "plain",
        suite: None,
        compress: false,
    },
    Mode {
        name: "chacha20poly1305",
        suite: Some(CipherSuite::ChaCha20Poly1305),
        compress: false,
    },
    Mode {
        name: "aes256gcm",
        suite: Some(CipherSuite::Aes256Gcm),
        compress: false,
    },
    Mode {
        name: "lz4+chacha20poly1305",
        suite: Some(CipherSuite::ChaCha20Poly1305),
        compress: true,
    },
];

/// Both nodes of a pair in `mode`: PSK modes share one token (the keys come from its
/// handshake), like `atbus node --encrypt psk [--compress]`.
fn pair(mode: Mode) -> AtbusPair {
    let p = AtbusPair::with_config(Family::Tcp, move |name: &str| {
        let mut c = NodeConfig::new(name);
        if let Some(suite) = mode.suite {
            c = c.with_tokens(vec![AccessToken::new(
                "bench",
                b"a-benchmark-secret-of-32-bytes!!".to_vec(),
            )]);
            c.content.encryption = EncryptionMode::Psk;
            c.content.cipher_suites = vec![suite];
            c.content.compression = mode.compress;
        }
        c
    });
    let session = p.client().node().session("echo").expect("session");
    assert_eq!(
        session.is_encrypted(),
        mode.suite.is_some(),
        "{}: protection not as configured",
        mode.name
    );
    p
}

/// Repetitive JSON lines, cut to `size` bytes.
fn text(size: usize) -> Bytes {
    let mut t = Vec::with_capacity(size + 64);
    let mut i = 0u64;
    while t.len() < size {
        t.extend_from_slice(
            format!(
                "{{\"id\":{i},\"player\":\"p-{}\",\"x\":{},\"ok\":true}}\n",
                i % 97,
                i * 3
            )
            .as_bytes(),
        );
        i += 1;
    }
    t.truncate(size);
    t.into()
}

fn throughput(c: &mut Criterion) {
    let large = text(64 * 1024);
    let mut g = c.benchmark_group("protected/64KiB");
    g.throughput(Throughput::Bytes((LARGE_COUNT * large.len()) as u64));
    {
        let mut raw = RawPair::new(Family::Tcp, RawEchoMode::PerMessage);
        g.bench_function("raw", |b| b.iter(|| raw.stream(&large, LARGE_COUNT, 1)));
    }
    for mode in MODES {
        let mut p = pair(mode);
        g.bench_function(mode.name, |b| {
            b.iter(|| p.stream(&large, LARGE_COUNT, WINDOW))
        });
        let stats = p
            .client()
            .node()
            .session("echo")
            .expect("session")
            .content_stats();
        if mode.compress {
            assert!(stats.packets_compressed > 0, "nothing was compressed");
        }
    }
    {
        let noise = payload(64 * 1024);
        let mut p = pair(MODES[3]);
        g.bench_function("lz4+chacha20poly1305/noise", |b| {
            b.iter(|| p.stream(&noise, LARGE_COUNT, WINDOW))
        });
    }
    g.finish();
}

fn round_trip(c: &mut Criterion) {
    let small = text(64);
    let mut g = c.benchmark_group("protected/64B_rtt");
    g.throughput(Throughput::Elements(u64::from(ROUND_TRIPS)));
    {
        let mut raw = RawPair::new(Family::Tcp, RawEchoMode::PerMessage);
        g.bench_function("raw", |b| {
            b.iter_custom(|iters| {
                (0..iters * u64::from(ROUND_TRIPS))
                    .map(|_| raw.round_trip(&small))
                    .sum::<Duration>()
            })
        });
    }
    for mode in MODES {
        let mut p = pair(mode);
        g.bench_function(mode.name, |b| {
            b.iter_custom(|iters| {
                (0..iters * u64::from(ROUND_TRIPS))
                    .map(|_| p.round_trip(&small))
                    .sum::<Duration>()
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = throughput, round_trip
}
criterion_main!(benches);
