//! The auth_token fuzz body as ordinary tests: the checked-in corpus replays, the seeds behave
//! as their names say, and a few thousand mutations of valid tokens never panic.

use atbus_auth::fuzz::{FUZZ_NOW, fuzz_claims, fuzz_keyring};
use atbus_auth::{TokenError, fuzz_auth_token, token};
use atbus_frame::fuzz_targets::XorShift;

/// Valid tokens of the fuzz key ring, binary and text, for both audiences.
fn valid_seeds() -> Vec<Vec<u8>> {
    let ring = fuzz_keyring();
    let mut out = Vec::new();
    for (mode, ns, streams) in [
        (0u8, "", "*"),
        (1, "ns", "1-4,9"),
        (2, "", "0"),
        (3, "ns", "*"),
    ] {
        let issued = ring
            .issue(&fuzz_claims("fuzz-node.a", ns, streams))
            .unwrap();
        let mut s = vec![mode];
        if mode & 2 == 0 {
            s.extend_from_slice(&issued.bytes);
        } else {
            s.extend_from_slice(issued.to_text().as_bytes());
        }
        out.push(s);
    }
    out
}

#[test]
fn valid_seeds_verify() {
    let ring = fuzz_keyring();
    for s in valid_seeds() {
        let audience = if s[0] & 1 == 0 { "" } else { "ns" };
        let result = if s[0] & 2 == 0 {
            ring.verify(&s[1..], audience, FUZZ_NOW)
        } else {
            ring.verify_text(std::str::from_utf8(&s[1..]).unwrap(), audience, FUZZ_NOW)
        };
        assert!(result.is_ok(), "{result:?}");
        fuzz_auth_token(&s);
    }
}

#[test]
fn checked_in_valid_tokens_still_verify() {
    // The corpus holds tokens signed by the fuzz key ring; if the format changes without a
    // version bump, they stop verifying and this test says so.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/auth_token");
    let ring = fuzz_keyring();
    let mut verified = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let Some((&mode, body)) = data.split_first() else {
            continue;
        };
        let audience = if mode & 1 == 0 { "" } else { "ns" };
        let ok = if mode & 2 == 0 {
            ring.verify(body, audience, FUZZ_NOW).is_ok()
        } else {
            ring.verify_text(&String::from_utf8_lossy(body), audience, FUZZ_NOW)
                .is_ok()
        };
        verified += usize::from(ok);
    }
    assert!(verified >= 4, "only {verified} corpus tokens verify");
}

#[test]
fn thousands_of_mutated_tokens() {
    let seeds = valid_seeds();
    let ring = fuzz_keyring();
    let mut rng = XorShift(0xa77_0b05_5eed_0001);
    let mut accepted = 0;
    for _ in 0..5000 {
        let seed = &seeds[(rng.next() % seeds.len() as u64) as usize];
        let mut s = seed.clone();
        for _ in 0..1 + rng.next() % 3 {
            let at = 1 + (rng.next() % (s.len() as u64 - 1)) as usize;
            match rng.next() % 3 {
                0 => s[at] ^= 1 << (rng.next() % 8),
                1 => s[at] = rng.next() as u8,
                _ => s.truncate(at.max(2)),
            }
        }
        fuzz_auth_token(&s);
        if s[0] & 2 == 0 && s != *seed {
            let audience = if s[0] & 1 == 0 { "" } else { "ns" };
            if ring.verify(&s[1..], audience, FUZZ_NOW).is_ok() {
                accepted += 1;
            }
        }
    }
    // Mutations change signed bytes: none may verify (the mode byte is never touched).
    assert_eq!(accepted, 0);
}

#[test]
fn defects_seen_by_the_fuzz_body_are_typed() {
    let ring = fuzz_keyring();
    let good = &valid_seeds()[0][1..];
    assert!(matches!(
        ring.verify(&good[..good.len() - 1], "", FUZZ_NOW),
        Err(TokenError::Truncated { .. })
    ));
    assert!(matches!(
        ring.verify_text(&token::to_text(good), "ns", FUZZ_NOW),
        Err(TokenError::WrongAudience { .. })
    ));
}

#[test]
fn checked_in_corpus_replays() {
    let fuzz_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    atbus_frame::fuzz_targets::replay_corpus(&fuzz_dir, "auth_token", fuzz_auth_token);
}
