//! Cost of the checks a server runs per handshake: token verification (valid, and refused at
//! the MAC), the 0-RTT proof plus anti-replay admission, and the per-frame stream check.

use atbus_auth::{
    AntiReplay, AntiReplayConfig, EarlyContext, EarlyProof, StreamSet, TokenClaims, TokenKey,
    TokenKeyring,
};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

const NOW: u64 = 1_800_000_000;

fn ring() -> TokenKeyring {
    let mut r = TokenKeyring::new();
    r.insert(TokenKey::new("k1", b"bench-secret-0123456789abcdef-01".to_vec()).unwrap())
        .unwrap();
    r
}

fn token(r: &TokenKeyring) -> Vec<u8> {
    r.issue(&TokenClaims {
        name: "player-17.game".into(),
        namespace: "game".into(),
        streams: StreamSet::parse("1-8,100-200").unwrap(),
        issued_at: NOW,
        expires_at: NOW + 3600,
        nonce: [1; 16],
    })
    .unwrap()
    .bytes
}

fn bench(c: &mut Criterion) {
    let r = ring();
    let t = token(&r);
    let text = atbus_auth::token::to_text(&t);
    let mut tampered = t.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    c.bench_function("token verify binary", |b| {
        b.iter(|| r.verify(black_box(&t), "game", NOW).unwrap())
    });
    c.bench_function("token verify text", |b| {
        b.iter(|| r.verify_text(black_box(&text), "game", NOW).unwrap())
    });
    c.bench_function("token verify tampered", |b| {
        b.iter(|| r.verify(black_box(&tampered), "game", NOW).unwrap_err())
    });
    let v = r.verify(&t, "game", NOW).unwrap();
    c.bench_function("check_stream", |b| {
        b.iter(|| v.check_stream(black_box(150)).is_ok())
    });
    let flight = vec![7u8; 200];
    let ctx = EarlyContext {
        key_id: "k1",
        client_name: "player-17.game",
        namespace: "game",
        server_name: "lobby-1",
        first_flight: &flight,
    };
    let secret = v.holder_secret.0;
    // A guard with a full-size cache of live nonces, admitting fresh flights.
    let start = NOW * 1000;
    let now = start + 20_000;
    let mut guard = AntiReplay::new(
        AntiReplayConfig {
            window_ms: 10_000,
            max_entries: usize::MAX,
        },
        start,
    );
    let mut n: u64 = 0;
    let mut next_proof = || {
        n += 1;
        let mut nonce = [0u8; 32];
        nonce[..8].copy_from_slice(&n.to_le_bytes());
        EarlyProof::sign(&secret, &ctx, now, nonce).unwrap()
    };
    for _ in 0..65_536 {
        let p = next_proof();
        guard.check(now, &p);
    }
    c.bench_function("0-RTT sign", |b| b.iter(&mut next_proof));
    c.bench_function("0-RTT admit (65k+ nonces cached)", |b| {
        b.iter_batched(
            &mut next_proof,
            |p| guard.admit(now, &p, &secret, &ctx).unwrap(),
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
