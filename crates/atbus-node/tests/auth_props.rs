//! Property tests of the handshake transcript and proofs: any change to any transcript field
//! makes verification fail.

use std::collections::BTreeMap;

use atbus_node::auth::{self, Role};
use atbus_proto::HandshakeHello;
use proptest::prelude::*;

fn hello_strategy() -> impl Strategy<Value = HandshakeHello> {
    (
        1i32..3,
        "[a-z][a-z0-9-]{0,20}",
        "[a-z]{0,8}",
        0i64..i64::MAX,
        proptest::collection::vec(any::<u8>(), 32),
        0i64..16,
        "[a-z0-9]{0,8}",
        any::<i64>(),
        0i32..100_000,
        proptest::collection::btree_map("[a-z]{1,6}", "[a-z0-9]{0,6}", 0..3),
    )
        .prop_map(
            |(version, name, ns, inc, nonce, caps, key, unix, max, labels)| HandshakeHello {
                protocol_version: version,
                node_name: name,
                namespace_name: ns,
                incarnation_id: inc,
                nonce: nonce.into(),
                capabilities: caps,
                key_id: key,
                unix_time_ms: unix,
                max_package_size: max,
                labels,
                ..HandshakeHello::default()
            },
        )
}

/// Changes field `which` of `h` (always to a different value).
fn mutate(h: &mut HandshakeHello, which: usize, byte: u8) {
    match which {
        0 => h.protocol_version = h.protocol_version.wrapping_add(1),
        1 => h.node_name.push('x'),
        2 => h.namespace_name.push('y'),
        3 => h.incarnation_id ^= 1,
        4 => {
            let mut n = h.nonce.to_vec();
            n[byte as usize % 32] ^= 0x01;
            h.nonce = n.into();
        }
        5 => h.capabilities ^= 1,
        6 => h.key_id.push('k'),
        7 => h.unix_time_ms = h.unix_time_ms.wrapping_add(1),
        8 => h.max_package_size ^= 1,
        9 => {
            h.labels.insert("zz-new".into(), "v".into());
        }
        // Content protection negotiation: a stripped or changed mode, suite list or
        // compression must fail the proofs (no downgrade).
        10 => h.encryption_mode ^= 1,
        11 => h.cipher_suites.push(i32::from(byte)),
        12 => h.compression ^= 1,
        _ => h.assigned_token = vec![byte].into(),
    }
}

proptest! {
    #[test]
    fn any_transcript_change_fails_both_proofs(
        client in hello_strategy(),
        server in hello_strategy(),
        side in 0usize..2,
        which in 0usize..14,
        byte in any::<u8>(),
        secret in proptest::collection::vec(any::<u8>(), 16..40),
    ) {
        let th = auth::transcript_hash(&client, &server);
        let server_proof = auth::proof(&secret, Role::Server, &th);
        let client_proof = auth::proof(&secret, Role::Client, &th);
        prop_assert!(auth::verify(&secret, Role::Server, &th, &server_proof));
        prop_assert!(auth::verify(&secret, Role::Client, &th, &client_proof));

        let (mut c2, mut s2) = (client.clone(), server.clone());
        if side == 0 { mutate(&mut c2, which, byte) } else { mutate(&mut s2, which, byte) }
        let th2 = auth::transcript_hash(&c2, &s2);
        prop_assert_ne!(th, th2);
        prop_assert!(!auth::verify(&secret, Role::Server, &th2, &server_proof));
        prop_assert!(!auth::verify(&secret, Role::Client, &th2, &client_proof));
        prop_assert_ne!(
            auth::session_keys(&secret, &th2, Role::Client),
            auth::session_keys(&secret, &th, Role::Client)
        );
    }

    #[test]
    fn a_different_secret_fails(
        client in hello_strategy(),
        server in hello_strategy(),
        secret in proptest::collection::vec(any::<u8>(), 16..40),
        flip in any::<usize>(),
    ) {
        let th = auth::transcript_hash(&client, &server);
        let p = auth::proof(&secret, Role::Client, &th);
        let mut other = secret.clone();
        let i = flip % other.len();
        other[i] ^= 0x80;
        prop_assert!(!auth::verify(&other, Role::Client, &th, &p));
    }

    #[test]
    fn length_prefixes_prevent_field_shifting(a in "[a-z]{1,8}", b in "[a-z]{1,8}") {
        // Moving a character from the name into the namespace must change the transcript.
        let mut c1 = HandshakeHello { node_name: format!("{a}{b}"), ..Default::default() };
        let mut c2 = HandshakeHello { node_name: a.clone(), namespace_name: b.clone(), ..Default::default() };
        c1.labels = BTreeMap::new();
        c2.labels = BTreeMap::new();
        let s = HandshakeHello::default();
        prop_assert_ne!(auth::transcript_hash(&c1, &s), auth::transcript_hash(&c2, &s));
    }
}
