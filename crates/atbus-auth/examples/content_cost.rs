//! Runs one content transform case `N` times, for instruction counts under callgrind that do
//! not depend on machine load:
//!
//! ```text
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/content_cost CASE LEN N
//! ```
//!
//! Instructions per packet = (total at N - total at 0) / N. CASE is one of `copy`, `chacha`,
//! `aes`, `lz4-chacha-text`, `lz4-chacha-noise` (the cases of `benches/protect.rs`).

use atbus_auth::{
    CipherSuite, CompressionConfig, ContentCodec, ContentHeader, PacketProtection, Side,
};
use std::hint::black_box;

fn text(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut i = 0u32;
    while out.len() < len {
        let line = format!(
            "{{\"player\":{},\"x\":{},\"state\":\"running\"}}\n",
            i % 97,
            i * 7 % 1000
        );
        out.extend_from_slice(line.as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, case, len, n] = args.as_slice() else {
        return Err("usage: content_cost CASE LEN N".into());
    };
    let len: usize = len.parse()?;
    let n: i64 = n.parse()?;
    let (suite, compress, data) = match case.as_str() {
        "copy" => (None, false, text(len)),
        "chacha" => (Some(CipherSuite::ChaCha20Poly1305), false, text(len)),
        "aes" => (Some(CipherSuite::Aes256Gcm), false, text(len)),
        "lz4-chacha-text" => (Some(CipherSuite::ChaCha20Poly1305), true, text(len)),
        "lz4-chacha-noise" => (Some(CipherSuite::ChaCha20Poly1305), true, noise(len)),
        other => return Err(format!("unknown case {other}").into()),
    };
    let config = compress.then(CompressionConfig::default);
    let (c2s, s2c) = ([1u8; 32], [2u8; 32]);
    let protection = |side| match suite {
        Some(s) => PacketProtection::new(s, side, &c2s, &s2c).map(Some),
        None => Ok(None),
    };
    let mut tx = ContentCodec::new(protection(Side::Client)?, config);
    let mut rx = ContentCodec::new(protection(Side::Server)?, config);
    let mut wire = Vec::with_capacity(2 * len + 64);
    let mut out = Vec::with_capacity(2 * len + 64);
    for pn in 0..n {
        let mut h = ContentHeader {
            source: "bench-a",
            destination: "bench-b",
            stream_id: 1,
            packet_number: pn,
            ..ContentHeader::default()
        };
        wire.clear();
        out.clear();
        tx.encode(&mut h, black_box(&data), &mut wire)?;
        rx.decode(&h, &wire, &mut out)?;
        black_box(&out);
    }
    if out.len() != if n > 0 { len } else { 0 } {
        return Err("content did not come back".into());
    }
    Ok(())
}
