//! One test per token defect: each must produce its own error, and a good token must pass.

use atbus_auth::token::{self, MAX_TEXT_LEN, MAX_TOKEN_LEN, TAG_LEN};
use atbus_auth::{
    IssueError, KeyError, StreamSet, TokenClaims, TokenError, TokenKey, TokenKeyring, VerifyPolicy,
    Violation,
};

const NOW: u64 = 1_800_000_000;
const SECRET_A: &[u8] = b"secret-a-0123456789abcdef-abcdef";
const SECRET_B: &[u8] = b"secret-b-0123456789abcdef-abcdef";

fn claims() -> TokenClaims {
    TokenClaims {
        name: "svc-a.game".into(),
        namespace: "prod".into(),
        streams: StreamSet::parse("1-4,10").unwrap(),
        issued_at: NOW,
        expires_at: NOW + 600,
        nonce: [0x11; 16],
    }
}

fn ring() -> TokenKeyring {
    let mut r = TokenKeyring::new();
    r.insert(TokenKey::new("a", SECRET_A).unwrap()).unwrap();
    r
}

fn good() -> Vec<u8> {
    ring().issue(&claims()).unwrap().bytes
}

#[test]
fn a_good_token_verifies_with_its_claims() {
    let v = ring().verify(&good(), "prod", NOW + 1).unwrap();
    assert_eq!(v.key_id, "a");
    assert_eq!(v.claims, claims());
    assert_eq!(
        v.holder_secret,
        ring().issue(&claims()).unwrap().holder_secret
    );
}

#[test]
fn name_and_stream_checks() {
    let v = ring().verify(&good(), "prod", NOW).unwrap();
    assert_eq!(v.check_name("svc-a.game"), Ok(()));
    assert_eq!(
        v.check_name("svc-b.game"),
        Err(Violation::NameMismatch {
            bound: "svc-a.game".into(),
            used: "svc-b.game".into()
        })
    );
    for id in [1, 4, 10] {
        assert_eq!(v.check_stream(id), Ok(()), "stream {id}");
    }
    for id in [-1, 0, 5, 9, 11] {
        assert_eq!(v.check_stream(id), Err(Violation::StreamNotAllowed(id)));
    }
}

#[test]
fn unknown_key_id() {
    let mut other = TokenKeyring::new();
    other.insert(TokenKey::new("b", SECRET_A).unwrap()).unwrap();
    assert_eq!(
        other.verify(&good(), "prod", NOW),
        Err(TokenError::UnknownKeyId("a".into()))
    );
}

#[test]
fn unsupported_version_binary_and_text() {
    let mut t = good();
    t[0] = 2;
    assert_eq!(
        ring().verify(&t, "prod", NOW),
        Err(TokenError::UnsupportedVersion(2))
    );
    let text = token::to_text(&good()).replacen("atbus1.", "atbus2.", 1);
    assert_eq!(
        ring().verify_text(&text, "prod", NOW),
        Err(TokenError::UnsupportedVersion(2))
    );
}

#[test]
fn expired_with_and_without_skew() {
    let r = ring(); // skew 30 s by default
    let exp = NOW + 600;
    assert!(r.verify(&good(), "prod", exp + 29).is_ok());
    assert_eq!(
        r.verify(&good(), "prod", exp + 30),
        Err(TokenError::Expired {
            expires_at: exp,
            now: exp + 30,
            skew: 30
        })
    );
    let mut strict = ring();
    strict.set_policy(VerifyPolicy {
        clock_skew_secs: 0,
        max_lifetime_secs: None,
    });
    assert!(strict.verify(&good(), "prod", exp - 1).is_ok());
    assert!(matches!(
        strict.verify(&good(), "prod", exp),
        Err(TokenError::Expired { .. })
    ));
}

#[test]
fn not_yet_valid_respects_the_skew_allowance() {
    let mut r = ring();
    r.set_policy(VerifyPolicy {
        clock_skew_secs: 5,
        max_lifetime_secs: None,
    });
    assert!(r.verify(&good(), "prod", NOW - 5).is_ok());
    assert_eq!(
        r.verify(&good(), "prod", NOW - 6),
        Err(TokenError::NotYetValid {
            issued_at: NOW,
            now: NOW - 6,
            skew: 5
        })
    );
}

#[test]
fn tampered_claims_or_tag_or_secret() {
    let mut t = good();
    // The last byte of the name: still a valid name, so only the MAC can notice.
    // version, key id "a", namespace "prod", then the name; its last byte:
    let name_end = 1 + (1 + 1) + (1 + 4) + "svc-a.game".len();
    assert_eq!(t[name_end], b'e');
    t[name_end] = b'f';
    assert_eq!(ring().verify(&t, "prod", NOW), Err(TokenError::Tampered));
    let mut t = good();
    let last = t.len() - 1;
    t[last] ^= 0x80;
    assert_eq!(ring().verify(&t, "prod", NOW), Err(TokenError::Tampered));
    // Same key id, another secret.
    let mut forged = TokenKeyring::new();
    forged
        .insert(TokenKey::new("a", SECRET_B).unwrap())
        .unwrap();
    let f = forged.issue(&claims()).unwrap().bytes;
    assert_eq!(ring().verify(&f, "prod", NOW), Err(TokenError::Tampered));
}

#[test]
fn truncated_at_every_length() {
    let t = good();
    for len in 0..t.len() {
        assert!(
            matches!(
                ring().verify(&t[..len], "prod", NOW),
                Err(TokenError::Truncated { .. })
            ),
            "length {len}"
        );
    }
    assert_eq!(
        ring().verify(&t[..t.len() - 1], "prod", NOW),
        Err(TokenError::Truncated { field: "tag" })
    );
}

#[test]
fn oversized_binary_and_text() {
    let big = vec![1u8; MAX_TOKEN_LEN + 1];
    assert_eq!(
        ring().verify(&big, "prod", NOW),
        Err(TokenError::Oversized {
            len: MAX_TOKEN_LEN + 1,
            max: MAX_TOKEN_LEN
        })
    );
    let text = format!("atbus1.{}", "A".repeat(MAX_TEXT_LEN));
    assert!(matches!(
        ring().verify_text(&text, "prod", NOW),
        Err(TokenError::Oversized { .. })
    ));
    // The largest token the format allows fits the caps.
    let max = TokenClaims {
        name: "n".repeat(253),
        namespace: "s".repeat(63),
        streams: StreamSet::from_ranges((0..32u64).map(|i| i * 4..=i * 4 + 1)).unwrap(),
        ..claims()
    };
    let mut r = TokenKeyring::new();
    r.insert(TokenKey::new("k".repeat(64), SECRET_A).unwrap())
        .unwrap();
    let issued = r.issue(&max).unwrap();
    assert!(issued.bytes.len() <= MAX_TOKEN_LEN);
    assert!(issued.to_text().len() <= MAX_TEXT_LEN);
    assert!(
        r.verify_text(&issued.to_text(), &max.namespace, NOW)
            .is_ok()
    );
}

#[test]
fn wrong_audience() {
    assert_eq!(
        ring().verify(&good(), "staging", NOW),
        Err(TokenError::WrongAudience {
            expected: "staging".into(),
            actual: "prod".into()
        })
    );
    assert!(matches!(
        ring().verify(&good(), "", NOW),
        Err(TokenError::WrongAudience { .. })
    ));
}

#[test]
fn lifetime_cap() {
    let mut r = ring();
    r.set_policy(VerifyPolicy {
        clock_skew_secs: 0,
        max_lifetime_secs: Some(599),
    });
    assert_eq!(
        r.verify(&good(), "prod", NOW),
        Err(TokenError::LifetimeTooLong {
            lifetime: 600,
            max: 599
        })
    );
}

#[test]
fn malformed_fields() {
    let t = good();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // Key id length 0.
        (
            {
                let mut b = t.clone();
                b[1] = 0;
                b
            },
            "key id",
        ),
        // A space in the key id.
        (
            {
                let mut b = t.clone();
                b[2] = b' ';
                b
            },
            "key id",
        ),
        // An upper-case letter in the namespace.
        (
            {
                let mut b = t.clone();
                b[4] = b'P';
                b
            },
            "namespace",
        ),
        // Invalid UTF-8 in the name.
        (
            {
                let mut b = t.clone();
                b[9] = 0xff;
                b
            },
            "name",
        ),
        // A byte after the tag.
        (
            {
                let mut b = t.clone();
                b.push(0);
                b
            },
            "tag",
        ),
    ];
    for (bytes, field) in cases {
        match ring().verify(&bytes, "prod", NOW) {
            Err(TokenError::Malformed { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn malformed_times_and_ranges() {
    let t = good();
    let times = 1 + (1 + 1) + (1 + 4) + (1 + 10);
    // expires-at := issued-at
    let mut b = t.clone();
    let issued: [u8; 8] = b[times..times + 8].try_into().unwrap();
    b[times + 8..times + 16].copy_from_slice(&issued);
    assert!(matches!(
        ring().verify(&b, "prod", NOW),
        Err(TokenError::Malformed {
            field: "expires-at",
            ..
        })
    ));
    let ranges = times + 16 + 16;
    assert_eq!(t[ranges], 2, "two ranges: 1-4 and 10");
    let mut b = t.clone();
    b[ranges] = 33;
    assert!(matches!(
        ring().verify(&b, "prod", NOW),
        Err(TokenError::Malformed {
            field: "stream ranges",
            ..
        })
    ));
    // Second range starts at 5: adjacent to 1-4, so not canonical.
    let mut b = t.clone();
    b[ranges + 1 + 16 + 7] = 5;
    assert!(matches!(
        ring().verify(&b, "prod", NOW),
        Err(TokenError::Malformed {
            field: "stream ranges",
            ..
        })
    ));
}

#[test]
fn malformed_text() {
    let r = ring();
    for text in [
        "",
        "atbus1",
        "jwt.abc",
        "atbus1.!!!!",
        "atbus1.AB=",
        "atbusx.AAAA",
    ] {
        assert!(
            matches!(
                r.verify_text(text, "prod", NOW),
                Err(TokenError::Malformed { field: "text", .. })
            ),
            "{text:?}"
        );
    }
    // Non-canonical base64: the same bytes with a changed unused trailing bit.
    let good_text = token::to_text(&good());
    let body_len = good_text.len() - "atbus1.".len();
    assert_ne!(body_len % 4, 0, "the test needs a partial last group");
    let mut chars: Vec<char> = good_text.chars().collect();
    let last = chars.len() - 1;
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let idx = alphabet.find(chars[last]).unwrap();
    chars[last] = alphabet.as_bytes()[idx ^ 1] as char;
    let bent: String = chars.into_iter().collect();
    assert!(r.verify_text(&bent, "prod", NOW).is_err());
    // Surrounding whitespace is fine.
    assert!(
        r.verify_text(&format!("  {good_text}\n"), "prod", NOW)
            .is_ok()
    );
}

#[test]
fn rotation_old_and_new_keys_verify_until_removed() {
    let mut r = ring();
    let old = r.issue(&claims()).unwrap().bytes;
    r.insert(TokenKey::new("b", SECRET_B).unwrap()).unwrap();
    assert_eq!(r.issuing_key_id(), Some("a"));
    r.set_issuing("b").unwrap();
    let new = r.issue(&claims()).unwrap().bytes;
    assert_eq!(r.verify(&new, "prod", NOW).unwrap().key_id, "b");
    assert_eq!(r.verify(&old, "prod", NOW).unwrap().key_id, "a");
    r.remove("a").unwrap();
    assert_eq!(
        r.verify(&old, "prod", NOW),
        Err(TokenError::UnknownKeyId("a".into()))
    );
    assert!(r.verify(&new, "prod", NOW).is_ok());
    assert_eq!(r.key_ids().collect::<Vec<_>>(), vec!["b"]);
}

#[test]
fn key_and_ring_errors() {
    assert!(matches!(
        TokenKey::new("", SECRET_A),
        Err(KeyError::BadKeyId(_))
    ));
    assert!(matches!(
        TokenKey::new("k 1", SECRET_A),
        Err(KeyError::BadKeyId(_))
    ));
    assert!(matches!(
        TokenKey::new("k".repeat(65), SECRET_A),
        Err(KeyError::BadKeyId(_))
    ));
    assert_eq!(
        TokenKey::new("k", &b"short"[..]),
        Err(KeyError::SecretTooShort {
            key_id: "k".into(),
            len: 5,
            min: 16
        })
    );
    let mut r = ring();
    assert_eq!(
        r.insert(TokenKey::new("a", SECRET_B).unwrap()),
        Err(KeyError::DuplicateKeyId("a".into()))
    );
    assert_eq!(
        r.set_issuing("zz"),
        Err(KeyError::UnknownKeyId("zz".into()))
    );
    r.remove("a").unwrap();
    assert_eq!(
        r.issue(&claims()),
        Err(IssueError::Key(KeyError::NoIssuingKey))
    );
    for i in 0..atbus_auth::MAX_KEYS {
        r.insert(TokenKey::new(format!("k{i}"), SECRET_A).unwrap())
            .unwrap();
    }
    assert_eq!(
        r.insert(TokenKey::new("one-more", SECRET_A).unwrap()),
        Err(KeyError::TooManyKeys(atbus_auth::MAX_KEYS))
    );
    // Debug output never shows a secret.
    let shown = format!("{:?}", TokenKey::new("a", SECRET_A).unwrap());
    assert!(!shown.contains("secret-a"), "{shown}");
    let shown = format!("{:?}", ring().issue(&claims()).unwrap());
    assert!(shown.contains("redacted"), "{shown}");
}

#[test]
fn issuing_refuses_bad_claims() {
    let r = ring();
    for (c, field) in [
        (
            TokenClaims {
                name: String::new(),
                ..claims()
            },
            "name",
        ),
        (
            TokenClaims {
                name: "UPPER".into(),
                ..claims()
            },
            "name",
        ),
        (
            TokenClaims {
                namespace: "a.b".into(),
                ..claims()
            },
            "namespace",
        ),
        (
            TokenClaims {
                expires_at: NOW,
                ..claims()
            },
            "expires-at",
        ),
    ] {
        match r.issue(&c) {
            Err(IssueError::Claims(TokenError::Malformed { field: f, .. })) => {
                assert_eq!(f, field)
            }
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn decode_exposes_unverified_fields() {
    let u = token::decode(&good()).unwrap();
    assert_eq!(u.key_id, "a");
    assert_eq!(u.claims, claims());
    assert_eq!(u.signed_len + TAG_LEN, good().len());
}

#[test]
fn the_documented_example_layout() {
    // docs/security.md §3.1: key id k1, namespace prod, name svc-a, streams 1-4.
    let mut r = TokenKeyring::new();
    r.insert(TokenKey::new("k1", SECRET_A).unwrap()).unwrap();
    let c = TokenClaims {
        name: "svc-a".into(),
        namespace: "prod".into(),
        streams: StreamSet::parse("1-4").unwrap(),
        issued_at: 1_800_000_000,
        expires_at: 1_800_003_600,
        nonce: [0xee; 16],
    };
    let b = r.issue(&c).unwrap().bytes;
    let mut want = vec![0x01, 0x02, b'k', b'1', 0x04, b'p', b'r', b'o', b'd'];
    want.extend_from_slice(&[0x05, b's', b'v', b'c', b'-', b'a']);
    want.extend_from_slice(&[0, 0, 0, 0, 0x6b, 0x49, 0xd2, 0x00]);
    want.extend_from_slice(&[0, 0, 0, 0, 0x6b, 0x49, 0xe0, 0x10]);
    want.extend_from_slice(&[0xee; 16]);
    want.push(0x01);
    want.extend_from_slice(&1u64.to_be_bytes());
    want.extend_from_slice(&4u64.to_be_bytes());
    assert_eq!(&b[..b.len() - TAG_LEN], &want[..]);
    assert_eq!(b.len(), want.len() + TAG_LEN);
    assert_eq!(token::MAX_TEXT_LEN, 1375);
    // The largest token: every field at its maximum.
    let max = TokenClaims {
        name: "n".repeat(253),
        namespace: "s".repeat(63),
        streams: StreamSet::from_ranges((0..32u64).map(|i| i * 4..=i * 4 + 1)).unwrap(),
        ..c
    };
    let mut r = TokenKeyring::new();
    r.insert(TokenKey::new("k".repeat(64), SECRET_A).unwrap())
        .unwrap();
    assert_eq!(r.issue(&max).unwrap().bytes.len(), 961);
}

#[test]
fn revoked_tokens_are_refused_until_they_expire() {
    let mut r = ring();
    let t = good();
    let other = r
        .issue(&TokenClaims {
            nonce: [0x22; 16],
            ..claims()
        })
        .unwrap()
        .bytes;
    r.revoke("a", claims().nonce, NOW + 600, NOW).unwrap();
    assert_eq!(r.verify(&t, "prod", NOW), Err(TokenError::Revoked));
    assert!(r.verify(&other, "prod", NOW).is_ok(), "only that token");
    // Revoking it under another key id does not touch it.
    let mut r2 = ring();
    r2.revoke("b", claims().nonce, NOW + 600, NOW).unwrap();
    assert!(r2.verify(&t, "prod", NOW).is_ok());
    // Once the token is expired (skew included) the entry is forgotten and it stays refused.
    r.forget_expired_revocations(NOW + 600 + 29);
    assert_eq!(r.revoked_len(), 1);
    r.forget_expired_revocations(NOW + 600 + 30);
    assert_eq!(r.revoked_len(), 0);
    assert!(matches!(
        r.verify(&t, "prod", NOW + 630),
        Err(TokenError::Expired { .. })
    ));
}

#[test]
fn the_revocation_list_is_bounded() {
    let mut r = ring();
    for i in 0..atbus_auth::MAX_REVOKED as u64 {
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&i.to_be_bytes());
        r.revoke("a", nonce, NOW + 10 + i % 2, NOW).unwrap();
    }
    assert_eq!(
        r.revoke("a", [0xff; 16], NOW + 100, NOW),
        Err(KeyError::TooManyRevocations(atbus_auth::MAX_REVOKED))
    );
    // Revoking one already listed is fine; so is a new one once some have expired.
    let mut first = [0u8; 16];
    first[..8].copy_from_slice(&0u64.to_be_bytes());
    assert_eq!(r.revoke("a", first, NOW + 10, NOW), Ok(()));
    assert_eq!(r.revoke("a", [0xff; 16], NOW + 100, NOW + 40), Ok(()));
    assert_eq!(r.revoked_len(), atbus_auth::MAX_REVOKED / 2 + 1);
}
