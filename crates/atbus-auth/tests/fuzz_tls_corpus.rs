//! The tls_record fuzz body as ordinary tests: the checked-in corpus (and any minimised
//! crashes under `fuzz/regressions/tls_record`) replays, its seeds still decode as they did,
//! and mutations of valid records never panic.

use std::path::Path;

use atbus_auth::tls::{RecordError, TlsRecord, TlsRefusal, fuzz_tls_record};

fn corpus_files(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../fuzz/{kind}/tls_record"));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<(String, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).expect("read corpus file"),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn checked_in_corpus_replays() {
    let corpus = corpus_files("corpus");
    assert!(corpus.len() >= 10, "corpus has {} files", corpus.len());
    for (_, data) in corpus.iter().chain(corpus_files("regressions").iter()) {
        fuzz_tls_record(data);
    }
}

#[test]
fn seeds_decode_as_named() {
    let corpus = corpus_files("corpus");
    let get = |name: &str| {
        corpus
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| panic!("seed {name} missing"))
    };
    let mut valid = 0;
    for (name, data) in &corpus {
        let decoded = TlsRecord::decode(data);
        if name.starts_with("data-beyond") || name.starts_with("data-ack-beyond") {
            assert_eq!(decoded, Err(RecordError::BeyondLimit), "{name}");
        } else if name == "data-bad-level" {
            assert_eq!(decoded, Err(RecordError::UnknownLevel(2)));
        } else if name == "unknown-kind" {
            assert_eq!(decoded, Err(RecordError::UnknownKind(7)));
        } else if name == "empty" || name == "data-truncated-header" {
            assert!(
                matches!(decoded, Err(RecordError::Truncated { .. })),
                "{name}"
            );
        } else if name == "alert-too-long" {
            assert_eq!(decoded, Err(RecordError::AlertLength(4)));
        } else {
            assert!(decoded.is_ok(), "{name}: {decoded:?}");
            valid += 1;
        }
    }
    assert!(valid >= 5);
    assert_eq!(
        TlsRecord::decode(&get("alert-unknown-issuer")),
        Ok(TlsRecord::Alert {
            refusal: TlsRefusal::UnknownIssuer,
            alert: 48
        })
    );
    assert_eq!(
        TlsRecord::decode(&get("alert-unknown-code")),
        Ok(TlsRecord::Alert {
            refusal: TlsRefusal::Unknown(200),
            alert: 0
        })
    );
}

#[test]
fn mutations_of_valid_records_never_panic() {
    // A deterministic xorshift over every corpus file: flip, truncate and extend.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (_, seed) in corpus_files("corpus") {
        for _ in 0..500 {
            let mut data = seed.clone();
            match next() % 3 {
                0 if !data.is_empty() => {
                    let i = (next() as usize) % data.len();
                    data[i] ^= 1 << (next() % 8);
                }
                1 => data.truncate((next() as usize) % (data.len() + 1)),
                _ => data.extend((0..next() % 8).map(|_| next() as u8)),
            }
            fuzz_tls_record(&data);
        }
    }
}
