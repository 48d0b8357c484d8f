//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/*`, `fuzz/regressions/<target>/*`)
//! of the session and reassembler targets, so CI covers them on stable Rust.
//!
//! `cargo test -p atbus-stream --test fuzz_corpus -- --ignored write_seed_corpus` rewrites the
//! hand-made seeds (`seed-*`); other files come from fuzzing runs.

use std::fs;
use std::path::{Path, PathBuf};

use atbus_proto::{
    AcknowledgeData, FrameMessage, MessageHead, PacketContent, PacketData, PacketNumberRange,
    PingData, StreamAcknowledge, frame_message::Body, packet_content::FragmentType, packet_flags,
};
use atbus_stream::{fuzz_reassembly, fuzz_session};
use bytes::Bytes;
use prost::Message;

const SESSION: &str = "stream_session";
const REASSEMBLER: &str = "stream_reassembler";

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn replay(target: &str, body: fn(&[u8])) {
    atbus_frame::fuzz_targets::replay_corpus(&fuzz_dir(), target, body);
}

#[test]
fn session_corpus_replays() {
    replay(SESSION, fuzz_session::session_frames);
}

#[test]
fn reassembler_corpus_replays() {
    replay(REASSEMBLER, fuzz_reassembly::reassembler);
}

fn step(out: &mut Vec<u8>, op: u8, bytes: &[u8]) {
    let len = u8::try_from(bytes.len()).expect("seed frames fit a length byte");
    out.push(op);
    out.push(len);
    out.extend_from_slice(bytes);
}

fn frame(body: Body) -> Vec<u8> {
    FrameMessage {
        head: Some(MessageHead {
            source: "fuzz-b".into(),
            destination: "fuzz-a".into(),
            ..Default::default()
        }),
        body: Some(body),
    }
    .encode_to_vec()
}

fn packet(stream_id: i64, offset: i64, pn: i64, flags: i32, frags: &[(&[u8], bool)]) -> Vec<u8> {
    let content = PacketContent {
        fragment: frags
            .iter()
            .map(|(d, more)| FragmentType {
                data: Bytes::copy_from_slice(d),
                fragment_flag: i32::from(*more),
                ..Default::default()
            })
            .collect(),
    };
    frame(Body::Packet(PacketData {
        stream_id,
        stream_offset: offset,
        content: content.encode_to_vec().into(),
        flags,
        packet_number: pn,
        ..Default::default()
    }))
}

#[test]
#[ignore = "rewrites the seed corpus"]
fn write_seed_corpus() {
    let dir = fuzz_dir().join("corpus").join(SESSION);
    fs::create_dir_all(&dir).expect("corpus dir");
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();

    let mut s = Vec::new();
    step(
        &mut s,
        0,
        &frame(Body::Ping(PingData {
            ping_id: 1,
            timepoint_microseconds: 5,
        })),
    );
    step(&mut s, 1, &[]);
    seeds.push(("seed-ping", s));

    let mut s = Vec::new();
    step(&mut s, 0, &packet(1, 0, 0, 0, &[(b"hel", true)]));
    step(
        &mut s,
        4,
        &packet(1, 0, 0, 0, &[(b"hello", false), (b"wor", true)]),
    );
    step(
        &mut s,
        0,
        &packet(1, 5, 1, packet_flags::FINISH_STREAM, &[(b"world!", false)]),
    );
    step(&mut s, 3, &[]);
    seeds.push(("seed-multipath-overlap", s));

    let mut s = Vec::new();
    step(&mut s, 2, &[0; 200]);
    step(&mut s, 6, &[0; 50]);
    step(&mut s, 1, &[0; 30]);
    let ack = AcknowledgeData {
        path_id: 0,
        received_packets: vec![PacketNumberRange { first: 0, last: 1 }],
        streams: vec![StreamAcknowledge {
            stream_id: 0,
            acknowledge_offset: 100,
            max_stream_offset: 1 << 20,
            ..Default::default()
        }],
        ack_delay_microseconds: 500,
        ..Default::default()
    };
    step(&mut s, 0, &frame(Body::Acknowledge(ack)));
    step(&mut s, 1, &[0; 250]);
    seeds.push(("seed-send-ack-timeout", s));

    let mut s = Vec::new();
    step(
        &mut s,
        0,
        &packet(2, 0, 0, 0, &[(b"abc", false), (b"defg", false)]),
    );
    step(&mut s, 0, &packet(2, 7, 1, packet_flags::RESET_OFFSET, &[]));
    step(
        &mut s,
        0,
        &packet(2, 20, 2, packet_flags::RESET_STREAM, &[]),
    );
    step(&mut s, 3, &[]);
    seeds.push(("seed-skip-reset", s));

    let mut s = Vec::new();
    step(
        &mut s,
        0,
        &packet(3, 0, 0, packet_flags::CLOSE_SESSION, &[]),
    );
    step(&mut s, 2, &[1; 10]);
    seeds.push(("seed-close", s));

    let mut s = Vec::new();
    step(&mut s, 0, &packet(-1, -5, -1, 1 << 12, &[(b"x", false)]));
    seeds.push(("seed-negative", s));

    for (name, bytes) in seeds {
        fs::write(dir.join(name), bytes).expect("write seed");
    }

    let dir = fuzz_dir().join("corpus").join(REASSEMBLER);
    fs::create_dir_all(&dir).expect("corpus dir");
    // Pseudo-random scripts: the reassembler body reads any bytes.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..8 {
        let bytes: Vec<u8> = (0..64 + i * 32)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        fs::write(dir.join(format!("seed-script-{i}")), bytes).expect("write seed");
    }
}
