//! Cost of the content transforms per packet, 64 B and 64 KiB, in one run: a plain copy (what
//! an unprotected session does with the content), seal + open with each AEAD, and compress +
//! seal + open (ChaCha20-Poly1305) on compressible text and on incompressible bytes (where the
//! compressor gives up and the content is sealed as it is).

#[path = "fixtures/content.rs"]
mod fixtures;

use atbus_auth::CipherSuite;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fixtures::{codecs, header, noise, text};
use std::hint::black_box;

fn content(c: &mut Criterion) {
    let mut g = c.benchmark_group("content");
    for len in [64usize, 64 * 1024] {
        g.throughput(Throughput::Bytes(len as u64));
        let txt = text(len);
        let rnd = noise(len);
        let mut wire = Vec::with_capacity(2 * len + 64);
        let mut out = Vec::with_capacity(2 * len + 64);

        g.bench_with_input(BenchmarkId::new("plain-copy", len), &txt, |b, data| {
            b.iter(|| {
                wire.clear();
                wire.extend_from_slice(black_box(data));
                out.clear();
                out.extend_from_slice(&wire);
                black_box(out.len())
            })
        });

        let cases = [
            (
                "chacha20poly1305",
                CipherSuite::ChaCha20Poly1305,
                false,
                &txt,
            ),
            ("aes256gcm", CipherSuite::Aes256Gcm, false, &txt),
            (
                "lz4+chacha20poly1305-text",
                CipherSuite::ChaCha20Poly1305,
                true,
                &txt,
            ),
            (
                "lz4+chacha20poly1305-noise",
                CipherSuite::ChaCha20Poly1305,
                true,
                &rnd,
            ),
        ];
        for (name, suite, compress, data) in cases {
            let Ok((mut tx, mut rx)) = codecs(Some(suite), compress) else {
                panic!("no codecs for {name}");
            };
            let mut pn = 0i64;
            g.bench_with_input(BenchmarkId::new(name, len), data, |b, data| {
                b.iter(|| {
                    pn += 1;
                    let mut h = header(pn);
                    wire.clear();
                    out.clear();
                    let sent = tx.encode(&mut h, black_box(data), &mut wire);
                    let got = rx.decode(&h, &wire, &mut out);
                    assert!(sent.is_ok() && got == Ok(data.len()));
                    black_box(wire.len())
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, content);
criterion_main!(benches);
