//! The auth_open fuzz body as ordinary tests: the checked-in corpus replays, its valid seeds
//! still open (so a format change without a version bump is noticed), and thousands of
//! mutations of valid packets never panic and never open.

use atbus_auth::fuzz::{FUZZ_OPEN_PREFIX_LEN, fuzz_codec, fuzz_header, fuzz_open_seed};
use atbus_auth::{CompressionConfig, fuzz_auth_open};
use atbus_frame::fuzz_targets::XorShift;

const FLAG_FINISH: u8 = 4;
const FLAG_COMPRESSED: u8 = 64;

fn json(n: usize) -> Vec<u8> {
    b"{\"id\":17,\"name\":\"player\",\"pos\":[1,2,3]}"
        .iter()
        .cycle()
        .take(n)
        .copied()
        .collect()
}

/// Valid packets: every mode, with and without compression, both directions, both suites,
/// edge packet numbers. The first element of each pair is the file name in the corpus.
fn valid_seeds() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("valid-chacha", fuzz_open_seed(0, 0, 1, 0, b"hello")),
        (
            "valid-chacha-empty",
            fuzz_open_seed(0, 1, 0, FLAG_FINISH, b""),
        ),
        ("valid-chacha-lz4", fuzz_open_seed(1, 0, 2, 0, &json(300))),
        ("valid-aes", fuzz_open_seed(2, 3, 9, 0, b"hello aes")),
        (
            "valid-aes-lz4",
            fuzz_open_seed(3, 0, 1 << 40, 0, &json(600)),
        ),
        (
            "valid-client-side",
            fuzz_open_seed(4, 7, 5, 0, b"to the client"),
        ),
        (
            "valid-client-aes-lz4",
            fuzz_open_seed(7, 255, 6, 0, &json(200)),
        ),
        ("valid-plain", fuzz_open_seed(8, 0, 1, 0, b"plain content")),
        ("valid-plain-lz4", fuzz_open_seed(9, 0, 1, 0, &json(400))),
        (
            "valid-max-pn",
            fuzz_open_seed(0, 255, (1 << 62) - 1, 0, b"edge"),
        ),
    ]
}

/// Refused packets, one per kind of defect.
fn invalid_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut truncated = fuzz_open_seed(0, 0, 1, 0, b"hello");
    truncated.truncate(FUZZ_OPEN_PREFIX_LEN + 10);
    let mut flipped = fuzz_open_seed(0, 0, 1, 0, b"hello");
    let last = flipped.len() - 1;
    flipped[last] ^= 0x80;
    let mut phase = fuzz_open_seed(2, 0, 1, 0, b"hello");
    phase[FUZZ_OPEN_PREFIX_LEN] = 1;
    let mut negative = fuzz_open_seed(0, 0, 1, 0, b"hello");
    negative[2] = 0xff;
    // A plain compressed packet declaring 1 MiB behind a few bytes, and a real LZ4 bomb of
    // zeros above the fuzz cap.
    let mut bomb = fuzz_open_seed(8, 0, 1, FLAG_COMPRESSED, &[0, 0x10, 0, 0, 0x1f, 0]);
    bomb[FUZZ_OPEN_PREFIX_LEN - 1] = FLAG_COMPRESSED;
    let mut lz4 = Vec::new();
    let wide = CompressionConfig {
        threshold: 0,
        max_decompressed: 1 << 20,
    };
    assert!(wide.compress(&vec![0u8; 128 * 1024], &mut lz4));
    let mut zeros = fuzz_open_seed(9, 0, 1, FLAG_COMPRESSED, b"");
    zeros[FUZZ_OPEN_PREFIX_LEN - 1] = FLAG_COMPRESSED;
    zeros.extend_from_slice(&lz4);
    let mut stripped = fuzz_open_seed(0, 0, 1, 0, b"hello");
    stripped[FUZZ_OPEN_PREFIX_LEN - 1] &= !32;
    vec![
        ("invalid-truncated", truncated),
        ("invalid-bit-flip", flipped),
        ("invalid-key-phase", phase),
        ("invalid-negative-pn", negative),
        ("invalid-bomb-declared", bomb),
        ("invalid-zeros-over-cap", zeros),
        ("invalid-stripped-encrypted", stripped),
    ]
}

/// Decodes a corpus input the way the fuzz body does; `Ok(len)` when it opens.
fn decode(data: &[u8]) -> Option<Result<usize, atbus_auth::ContentError>> {
    let (&mode, rest) = data.split_first()?;
    let (prefix, wire) = rest.split_first_chunk::<{ FUZZ_OPEN_PREFIX_LEN - 1 }>()?;
    let header = fuzz_header(mode, prefix);
    let mut rx = fuzz_codec(mode, mode & 4 != 0);
    Some(rx.decode(&header, wire, &mut Vec::new()))
}

fn corpus_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/auth_open")
}

#[test]
fn seeds_behave_as_named() {
    for (name, seed) in valid_seeds() {
        assert!(
            matches!(decode(&seed), Some(Ok(_))),
            "{name}: {:?}",
            decode(&seed)
        );
        fuzz_auth_open(&seed);
    }
    for (name, seed) in invalid_seeds() {
        assert!(
            matches!(decode(&seed), Some(Err(_))),
            "{name}: {:?}",
            decode(&seed)
        );
        fuzz_auth_open(&seed);
    }
}

/// The corpus is the seeds above, written by this test when `ATBUS_WRITE_CORPUS=1`; otherwise
/// the test checks that every checked-in seed still decodes as its name says.
#[test]
fn checked_in_seeds_match() {
    let dir = corpus_dir();
    let seeds: Vec<_> = valid_seeds().into_iter().chain(invalid_seeds()).collect();
    if std::env::var_os("ATBUS_WRITE_CORPUS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, seed) in &seeds {
            std::fs::write(dir.join(name), seed).unwrap();
        }
    }
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let data = std::fs::read(&path).unwrap();
        if name.starts_with("valid-") {
            assert!(
                matches!(decode(&data), Some(Ok(_))),
                "{name} no longer opens"
            );
            checked += 1;
        } else if name.starts_with("invalid-") {
            assert!(matches!(decode(&data), Some(Err(_))), "{name} now opens");
            checked += 1;
        }
    }
    assert!(
        checked >= seeds.len(),
        "only {checked} named seeds in the corpus"
    );
}

#[test]
fn checked_in_corpus_replays() {
    let fuzz_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    atbus_frame::fuzz_targets::replay_corpus(&fuzz_dir, "auth_open", fuzz_auth_open);
}

#[test]
fn thousands_of_mutated_packets() {
    let seeds = valid_seeds();
    let mut rng = XorShift(0x0be9_5eed_a7b5_0001);
    let mut opened = 0;
    let mut mutated = 0;
    for _ in 0..5000 {
        let (_, seed) = &seeds[(rng.next() % seeds.len() as u64) as usize];
        let mut s = seed.clone();
        for _ in 0..1 + rng.next() % 3 {
            // Never the mode byte: it selects the session, not the packet.
            let at = 1 + (rng.next() % (s.len() as u64 - 1)) as usize;
            match rng.next() % 3 {
                0 => s[at] ^= 1 << (rng.next() % 8),
                1 => s[at] = rng.next() as u8,
                _ => s.truncate(at.max(2)),
            }
        }
        fuzz_auth_open(&s);
        // Sealed packets that were changed must not open.
        if s != *seed && s[0] & 8 == 0 && s.len() > FUZZ_OPEN_PREFIX_LEN {
            mutated += 1;
            let encrypted = s[FUZZ_OPEN_PREFIX_LEN - 1] & 32 != 0;
            if encrypted && matches!(decode(&s), Some(Ok(_))) {
                opened += 1;
            }
        }
    }
    assert!(mutated > 2000, "{mutated}");
    assert_eq!(opened, 0);
}
