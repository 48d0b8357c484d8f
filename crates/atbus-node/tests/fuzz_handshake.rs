//! Runs the handshake fuzz body over a few thousand pseudo-random scripts, including mutations
//! of a real client's handshake frames, as an ordinary test.

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
    out
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
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
