//! Property tests: the token codec round-trips, every single-bit flip and every truncation is
//! refused, arbitrary input never panics, stream sets match a naive model, and the anti-replay
//! guard never accepts a nonce twice.

use std::collections::BTreeSet;

use atbus_auth::token::{self, TAG_LEN};
use atbus_auth::{
    AntiReplay, AntiReplayConfig, EarlyOutcome, EarlyProof, StreamSet, TokenClaims, TokenError,
    TokenKey, TokenKeyring, fuzz_auth_token,
};
use proptest::prelude::*;

const SECRET: &[u8] = b"property-secret-0123456789abcdef";

fn ring() -> TokenKeyring {
    let mut r = TokenKeyring::new();
    r.insert(TokenKey::new("prop-key", SECRET).unwrap())
        .unwrap();
    r
}

fn ranges() -> impl Strategy<Value = Vec<std::ops::RangeInclusive<u64>>> {
    prop::collection::vec(
        (0u64..1000, 0u64..50).prop_map(|(a, len)| a..=a + len),
        0..40,
    )
}

fn stream_set() -> impl Strategy<Value = StreamSet> {
    prop_oneof![
        Just(StreamSet::all()),
        ranges().prop_filter_map("too many ranges", |r| StreamSet::from_ranges(r).ok()),
    ]
}

fn claims() -> impl Strategy<Value = TokenClaims> {
    (
        "[a-z0-9][a-z0-9.-]{0,60}",
        "[a-z0-9-]{0,63}",
        stream_set(),
        0u64..4_000_000_000,
        1u64..10_000_000,
        any::<[u8; 16]>(),
    )
        .prop_map(
            |(name, namespace, streams, issued_at, life, nonce)| TokenClaims {
                name,
                namespace,
                streams,
                issued_at,
                expires_at: issued_at + life,
                nonce,
            },
        )
}

proptest! {
    #[test]
    fn issue_decode_verify_round_trip(c in claims()) {
        let r = ring();
        let issued = r.issue(&c).unwrap();
        prop_assert!(issued.bytes.len() <= token::MAX_TOKEN_LEN);
        let u = token::decode(&issued.bytes).unwrap();
        prop_assert_eq!(&u.claims, &c);
        let v = r.verify(&issued.bytes, &c.namespace, c.issued_at).unwrap();
        prop_assert_eq!(&v.claims, &c);
        prop_assert_eq!(&v.holder_secret, &issued.holder_secret);
        let text = issued.to_text();
        prop_assert_eq!(token::from_text(&text).unwrap(), issued.bytes.clone());
        prop_assert_eq!(r.verify_text(&text, &c.namespace, c.issued_at).unwrap(), v);
    }

    #[test]
    fn any_single_bit_flip_is_refused(c in claims(), bit in any::<prop::sample::Index>()) {
        let r = ring();
        let mut bytes = r.issue(&c).unwrap().bytes;
        let at = bit.index(bytes.len() * 8);
        bytes[at / 8] ^= 1 << (at % 8);
        let result = r.verify(&bytes, &c.namespace, c.issued_at);
        prop_assert!(result.is_err(), "bit {} flipped and accepted", at);
        if at / 8 >= bytes.len() - TAG_LEN {
            prop_assert_eq!(result, Err(TokenError::Tampered));
        }
    }

    #[test]
    fn any_changed_text_character_is_refused(
        c in claims(),
        at in any::<prop::sample::Index>(),
        ch in "[A-Za-z0-9_.=+/-]",
    ) {
        let r = ring();
        let text = r.issue(&c).unwrap().to_text();
        let i = at.index(text.len());
        let mut changed = text.clone();
        changed.replace_range(i..i + 1, &ch);
        prop_assume!(changed != text);
        prop_assert!(r.verify_text(&changed, &c.namespace, c.issued_at).is_err());
    }

    #[test]
    fn any_truncation_is_refused_as_truncated(c in claims(), cut in any::<prop::sample::Index>()) {
        let r = ring();
        let bytes = r.issue(&c).unwrap().bytes;
        let len = cut.index(bytes.len());
        let result = r.verify(&bytes[..len], &c.namespace, c.issued_at);
        prop_assert!(
            matches!(result, Err(TokenError::Truncated { .. })),
            "len {} gave {:?}",
            len,
            result
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..1200)) {
        fuzz_auth_token(&data);
    }

    #[test]
    fn mutated_tokens_never_panic(
        c in claims(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        mode in 0u8..4,
    ) {
        let r = ring();
        let issued = r.issue(&c).unwrap();
        let mut data = vec![mode];
        if mode & 2 == 0 {
            data.extend_from_slice(&issued.bytes);
        } else {
            data.extend_from_slice(issued.to_text().as_bytes());
        }
        for (at, b) in edits {
            let i = 1 + at.index(data.len() - 1);
            data[i] = b;
        }
        fuzz_auth_token(&data);
    }

    #[test]
    fn stream_sets_match_a_naive_model(r in ranges(), probes in prop::collection::vec(0i64..1100, 20)) {
        let Ok(set) = StreamSet::from_ranges(r.clone()) else {
            return Ok(());
        };
        for id in probes {
            let naive = r.iter().any(|x| x.contains(&(id as u64)));
            prop_assert_eq!(set.contains(id), naive, "id {}", id);
        }
        prop_assert_eq!(StreamSet::parse(&set.to_string()).ok(), (!set.is_empty()).then(|| set.clone()));
    }

    /// A script of flights (some repeated) at advancing and sometimes stepping-back clocks:
    /// no flight (timestamp and nonce, what the MAC covers) is ever accepted twice by one guard, the cache stays within its cap, and every
    /// accepted flight was fresh.
    #[test]
    fn no_nonce_is_accepted_twice(
        ops in prop::collection::vec((0u64..3_000, -12_000i64..12_000, 0u8..24), 1..300),
        window in 1u64..15_000,
        cap in 1usize..20,
    ) {
        let start = 1_000_000u64;
        let mut g = AntiReplay::new(AntiReplayConfig { window_ms: window, max_entries: cap }, start);
        let mut now = start;
        let mut accepted = BTreeSet::new();
        for (step, offset, n) in ops {
            // Mostly forward, sometimes back.
            now = if step % 7 == 0 { now.saturating_sub(step) } else { now + step };
            let t = now.saturating_add_signed(offset);
            let mut nonce = [0u8; 32];
            nonce[0] = n;
            let p = EarlyProof { unix_ms: t, nonce, tag: [0; 32] };
            let outcome = g.check(now, &p);
            prop_assert!(g.len() <= cap);
            if outcome == EarlyOutcome::Accepted {
                prop_assert!(t.abs_diff(now) <= window);
                prop_assert!(t > start + window && now >= start + window);
                prop_assert!(accepted.insert((t, nonce)), "flight ({}, {}) accepted twice", t, n);
            }
        }
    }
}
