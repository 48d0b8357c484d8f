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

#[path = "../benches/fixtures/content.rs"]
mod fixtures;

use atbus_auth::CipherSuite;
use fixtures::{codecs, header, noise, text};
use std::hint::black_box;

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
    let (mut tx, mut rx) = codecs(suite, compress)?;
    let mut wire = Vec::with_capacity(2 * len + 64);
    let mut out = Vec::with_capacity(2 * len + 64);
    for pn in 0..n {
        let mut h = header(pn);
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
