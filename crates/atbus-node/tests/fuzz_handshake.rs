//! Runs the handshake fuzz body over a few thousand pseudo-random scripts, including mutations
//! of a real client's handshake frames, as an ordinary test.

use atbus_frame::fuzz_targets::XorShift;
use atbus_node::fuzz_handshake;
use atbus_proto::{
    FrameMessage, HandshakeConfirm, HandshakeData, HandshakeHello, frame_message::Body,
    handshake_data::Step,
};
use prost::Message;

fn frame(step: Step) -> Vec<u8> {
    FrameMessage {
        head: None,
        body: Some(Body::Handshake(HandshakeData {
            step: Some(step),
            cookie: Default::default(),
        })),
    }
    .encode_to_vec()
}

/// Seed scripts: a valid hello (open and with key id k1), a confirm, then time passing.
fn seeds() -> Vec<Vec<u8>> {
    let hello = |key: &str| {
        frame(Step::Hello(HandshakeHello {
            protocol_version: 1,
            node_name: "fuzz-client".into(),
            incarnation_id: 42,
            nonce: vec![9u8; 32].into(),
            key_id: key.into(),
            max_package_size: 65536,
            ..Default::default()
        }))
    };
    let confirm = frame(Step::Confirm(HandshakeConfirm {
        auth_proof: vec![1u8; 32].into(),
    }));
    let mut out = Vec::new();
    for (flags, key) in [(0u8, ""), (1u8, "k1")] {
        for op in [2u8, 3u8] {
            let h = hello(key);
            let mut s = vec![flags, op, h.len() as u8];
            s.extend_from_slice(&h);
            s.extend_from_slice(&[7, op, confirm.len() as u8]);
            s.extend_from_slice(&confirm);
            s.extend_from_slice(&[6 + 8 * 30, 7, 0x24, 7, 6 + 8 * 20]);
            out.push(s);
        }
    }
    // A node with a token key ring, 0-RTT and anonymous peers (flag bit 1): a hello asking
    // for an assigned name, and one with a signed token, early data and a 0-RTT proof, after
    // the guard's warm-up (time passes first).
    let anonymous = frame(Step::Hello(HandshakeHello {
        protocol_version: 1,
        incarnation_id: 43,
        nonce: vec![8u8; 32].into(),
        ..Default::default()
    }));
    let token = token_hello();
    for op in [2u8, 3u8] {
        for h in [&anonymous, &token] {
            let mut s = vec![2u8, 6 + 8 * 4, op, h.len() as u8];
            s.extend_from_slice(h);
            s.extend_from_slice(&[7, op, confirm.len() as u8]);
            s.extend_from_slice(&confirm);
            s.extend_from_slice(&[7, 6 + 8 * 30]);
            out.push(s);
        }
    }
    out.extend(cookie_seeds());
    out
}

/// Under load (flag bit 2) a datagram hello from a reported source gets a retry; the same
/// hello on a new datagram link from the same address, echoing the cookie (op 0x8f), goes on
/// to the reply; then its confirm. With flag bit 3, from a loopback address.
fn cookie_seeds() -> Vec<Vec<u8>> {
    let hello = frame(Step::Hello(HandshakeHello {
        protocol_version: 1,
        node_name: "fuzz-cookie".into(),
        incarnation_id: 45,
        nonce: vec![4u8; 32].into(),
        max_package_size: 548,
        ..Default::default()
    }));
    let confirm = frame(Step::Confirm(HandshakeConfirm::default()));
    let mut out = Vec::new();
    for (flags, addr) in [(4u8, [203, 0, 113, 5]), (12u8, [127, 0, 0, 1])] {
        let source = |s: &mut Vec<u8>| {
            s.extend_from_slice(&[0x87, 6]);
            s.extend_from_slice(&addr);
            s.extend_from_slice(&[0x0f, 0xa0]);
        };
        let mut s = vec![flags];
        source(&mut s);
        s.extend_from_slice(&[3, hello.len() as u8]);
        s.extend_from_slice(&hello);
        s.push(4 | 0x10);
        source(&mut s);
        s.extend_from_slice(&[0x8f, hello.len() as u8]);
        s.extend_from_slice(&hello);
        s.extend_from_slice(&[3, confirm.len() as u8]);
        s.extend_from_slice(&confirm);
        s.extend_from_slice(&[7, 6 + 8 * 30]);
        out.push(s);
    }
    out
}

#[test]
fn cookie_seeds_reach_the_retry_and_the_valid_cookie() {
    for s in cookie_seeds() {
        assert_eq!(atbus_node::fuzz::fuzz_handshake_stats(&s), (1, 1));
    }
    // Without the load flag, or from loopback without counting it, no cookie is asked for.
    let mut off = cookie_seeds();
    off[0][0] = 0;
    off[1][0] = 4;
    for s in off {
        assert_eq!(atbus_node::fuzz::fuzz_handshake_stats(&s), (0, 0));
    }
}

/// A client hello with a signed token for `fz`, one early message and its 0-RTT proof, made
/// for the fuzz node's key and clock (stamped 1.72 s after its start; the seed lets 1.52 s
/// pass first, and the fuzz node's window is 1 s).
fn token_hello() -> Vec<u8> {
    use atbus_node::atbus_auth::{
        EarlyContext, EarlyProof, StreamSet, TokenClaims, TokenKey, TokenKeyring,
    };
    use atbus_node::fuzz::{FUZZ_TOKEN_SECRET, FUZZ_UNIX_MS};
    let mut ring = TokenKeyring::new();
    ring.insert(TokenKey::new("k1", FUZZ_TOKEN_SECRET.to_vec()).unwrap())
        .unwrap();
    let now_s = (FUZZ_UNIX_MS / 1000) as u64;
    let issued = ring
        .issue(&TokenClaims {
            name: "fz".into(),
            namespace: String::new(),
            streams: StreamSet::parse("0-3").unwrap(),
            issued_at: now_s,
            expires_at: now_s + 60,
            nonce: [6; 16],
        })
        .unwrap();
    let mut hello = HandshakeHello {
        protocol_version: 1,
        node_name: "fz".into(),
        incarnation_id: 44,
        nonce: vec![7u8; 32].into(),
        key_id: "k1".into(),
        assigned_token: issued.bytes.clone().into(),
        early_data: vec![atbus_proto::EarlyDataMessage {
            stream_id: 1,
            data: vec![b'e'; 4].into(),
        }],
        ..Default::default()
    };
    let flight = hello.encode_to_vec();
    let ctx = EarlyContext {
        key_id: "k1",
        client_name: "fz",
        namespace: "",
        server_name: "fuzz-node",
        first_flight: &flight,
    };
    let stamp = (FUZZ_UNIX_MS + 1720) as u64;
    let proof = EarlyProof::sign(&issued.holder_secret.0, &ctx, stamp, [5; 32]).unwrap();
    hello.auth_proof = proof.to_bytes().to_vec().into();
    let f = frame(Step::Hello(hello));
    assert!(
        f.len() <= 255,
        "a seed chunk is at most 255 bytes ({})",
        f.len()
    );
    f
}

/// Writes the seeds into the checked-in corpus (`cargo test -p atbus-node --test
/// fuzz_handshake -- --ignored` after changing the handshake's wire form).
#[test]
#[ignore = "writes fuzz/corpus/node_handshake; run by hand after a wire change"]
fn seeds_into_the_corpus() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/node_handshake");
    for (i, s) in seeds().iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), s).unwrap();
    }
}

#[test]
fn seeds_run() {
    for s in seeds() {
        fuzz_handshake(&s);
    }
}

#[test]
fn thousands_of_random_and_mutated_scripts() {
    let seeds = seeds();
    let mut rng = XorShift(0x5eed_1234_abcd_ef01);
    for i in 0..3000 {
        let input: Vec<u8> = if i % 3 == 0 {
            let len = (rng.next() % 300) as usize;
            (0..len).map(|_| rng.next() as u8).collect()
        } else {
            let mut s = seeds[(rng.next() % seeds.len() as u64) as usize].clone();
            for _ in 0..1 + rng.next() % 4 {
                let at = (rng.next() % s.len() as u64) as usize;
                match rng.next() % 3 {
                    0 => s[at] ^= 1 << (rng.next() % 8),
                    1 => s[at] = rng.next() as u8,
                    _ => s.truncate(at.max(1)),
                }
            }
            s
        };
        fuzz_handshake(&input);
    }
}

#[test]
fn checked_in_corpus_replays() {
    let fuzz_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    atbus_frame::fuzz_targets::replay_corpus(&fuzz_dir, "node_handshake", fuzz_handshake);
}
