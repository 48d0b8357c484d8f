//! Fuzz body of `fuzz/fuzz_targets/auth_token.rs`, kept here so the corpus replays as an
//! ordinary test on stable Rust.

use crate::early::EarlyProof;
use crate::keyring::{TokenKey, TokenKeyring, VerifyPolicy};
use crate::replay::{AntiReplay, AntiReplayConfig};
use crate::streams::StreamSet;
use crate::token::{self, TokenClaims};

/// Unix time (seconds) the fuzz body verifies at.
pub const FUZZ_NOW: u64 = 1_800_000_000;

/// The key ring of the fuzz body: `k1` and `k2` with fixed secrets, `k1` issuing.
pub fn fuzz_keyring() -> TokenKeyring {
    let mut ring = TokenKeyring::with_policy(VerifyPolicy::default());
    for (id, secret) in [
        ("k1", &b"fuzz-secret-one-0123456789abcdef"[..]),
        ("k2", &b"fuzz-secret-two-0123456789abcdef"[..]),
    ] {
        if let Ok(key) = TokenKey::new(id, secret) {
            let _ = ring.insert(key);
        }
    }
    ring
}

/// Valid claims for seeds: `name` in namespace `ns`, valid around [`FUZZ_NOW`].
pub fn fuzz_claims(name: &str, ns: &str, streams: &str) -> TokenClaims {
    TokenClaims {
        name: name.to_owned(),
        namespace: ns.to_owned(),
        streams: StreamSet::parse(streams).unwrap_or_default(),
        issued_at: FUZZ_NOW - 60,
        expires_at: FUZZ_NOW + 3600,
        nonce: [0x5a; token::TOKEN_NONCE_LEN],
    }
}

/// Input: one mode byte, then the token. Mode bit 0 selects the audience (`""` or `"ns"`),
/// bit 1 the text form instead of the binary one. Checks that nothing panics, that every
/// token that verifies re-encodes to exactly its input (the encoding is canonical), and that
/// decoding and verification agree on malformed input.
pub fn fuzz_auth_token(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let ring = fuzz_keyring();
    let audience = if mode & 1 == 0 { "" } else { "ns" };
    let binary: Option<Vec<u8>> = if mode & 2 == 0 {
        Some(body.to_vec())
    } else {
        let text = String::from_utf8_lossy(body);
        let via_text = ring.verify_text(&text, audience, FUZZ_NOW);
        match token::from_text(&text) {
            Ok(bytes) => {
                assert_eq!(
                    token::to_text(&bytes),
                    text.trim(),
                    "text form is canonical"
                );
                Some(bytes)
            }
            Err(e) => {
                assert_eq!(via_text, Err(e), "text errors agree");
                None
            }
        }
    };
    if let Some(bytes) = binary {
        let verified = ring.verify(&bytes, audience, FUZZ_NOW);
        match token::decode(&bytes) {
            Err(e) => assert_eq!(verified, Err(e), "decode and verify agree"),
            Ok(t) => {
                assert_eq!(t.signed_len + token::TAG_LEN, bytes.len());
                let mut again = Vec::new();
                token::encode_signed(&t.key_id, &t.claims, &mut again);
                assert_eq!(again, bytes[..t.signed_len], "decoding is canonical");
            }
        }
        if let Ok(v) = verified {
            assert!(v.claims.namespace == audience);
            let key = TokenKey::new(
                v.key_id.clone(),
                match v.key_id.as_str() {
                    "k1" => &b"fuzz-secret-one-0123456789abcdef"[..],
                    _ => &b"fuzz-secret-two-0123456789abcdef"[..],
                },
            );
            if let Ok(key) = key {
                if let Ok(issued) = key.issue(&v.claims) {
                    assert_eq!(
                        issued.bytes, bytes,
                        "a verified token re-issues identically"
                    );
                    assert_eq!(issued.holder_secret, v.holder_secret);
                }
            }
            let _ = v.check_name(&v.claims.name.clone());
            let _ = v.check_stream(i64::from(mode));
        }
    }
    // The other parsers of this crate take the same bytes.
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = StreamSet::parse(text);
    }
    if let Ok(p) = EarlyProof::from_bytes(body) {
        let mut guard = AntiReplay::new(AntiReplayConfig::default(), p.unix_ms / 3);
        let _ = guard.check(p.unix_ms.wrapping_add(u64::from(mode)), &p);
    }
}
