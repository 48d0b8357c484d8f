//! Replays the checked-in fuzz corpus and regressions (`fuzz/corpus/<target>/*`,
//! `fuzz/regressions/<target>/*`) through the fuzz target bodies, so CI covers them on stable
//! Rust without libFuzzer.
//!
//! `cargo test -p atbus-frame --test fuzz_corpus -- --ignored write_seed_corpus` rewrites the
//! hand-made seeds (files named `seed-*`); other corpus files come from fuzzing runs.

use std::fs;
use std::path::{Path, PathBuf};

use atbus_frame::{FrameLimits, encode, encode_raw, fuzz_targets, package_hash};
use atbus_proto::{
    AcknowledgeData, CloseReasonData, FrameMessage, MessageHead, PacketData, PingData,
    StreamAcknowledge, frame_message::Body, packet_flags,
};
use bytes::Bytes;

const STREAM: &str = "frame_stream_decoder";
const DATAGRAM: &str = "frame_datagram_decoder";

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn replay(target: &str, body: fn(&[u8])) {
    atbus_frame::fuzz_targets::replay_corpus(&fuzz_dir(), target, body);
}

#[test]
fn stream_decoder_corpus() {
    replay(STREAM, fuzz_targets::stream_decoder);
}

#[test]
fn datagram_decoder_corpus() {
    replay(DATAGRAM, fuzz_targets::datagram_decoder);
}

fn head() -> Option<MessageHead> {
    Some(MessageHead {
        source: "game-7.zone-1".into(),
        destination: "match-2.zone-1".into(),
        ..Default::default()
    })
}

fn ping() -> FrameMessage {
    FrameMessage {
        head: None,
        body: Some(Body::Ping(PingData {
            ping_id: 7,
            timepoint_microseconds: 1_000,
        })),
    }
}

fn packet(len: usize) -> FrameMessage {
    FrameMessage {
        head: head(),
        body: Some(Body::Packet(PacketData {
            stream_id: 3,
            stream_offset: 4096,
            content: Bytes::from((0..len).map(|i| i as u8).collect::<Vec<u8>>()),
            flags: packet_flags::FINISH_STREAM,
            timepoint_microseconds: 1_700_000_000_000_000,
            packet_number: 42,
            path_id: 1,
            ..Default::default()
        })),
    }
}

fn ack() -> FrameMessage {
    FrameMessage {
        head: head(),
        body: Some(Body::Acknowledge(AcknowledgeData {
            streams: vec![StreamAcknowledge {
                stream_id: 3,
                acknowledge_offset: 4160,
                received_max_offset: 4160,
                max_stream_offset: 1 << 20,
                closed: false,
            }],
            path_id: 1,
            ack_delay_microseconds: 250,
            echo_timepoint_microseconds: 1_700_000_000_000_000,
            max_session_data: 1 << 24,
            ..Default::default()
        })),
    }
}

fn close() -> FrameMessage {
    FrameMessage {
        head: None,
        body: Some(Body::LinkClose(CloseReasonData {
            code: 3,
            message: "shutting down".into(),
        })),
    }
}

fn wire(frames: &[FrameMessage]) -> Vec<u8> {
    let limits = FrameLimits::default();
    let mut out = Vec::new();
    for frame in frames {
        encode(frame, &limits, &mut out).expect("encodes");
    }
    out
}

/// A package around `body` with a correct hash, whatever `header` says.
fn hashed(header: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = [header, body].concat();
    let hash = package_hash(&out);
    out.extend_from_slice(&hash.to_le_bytes());
    out
}

/// Datagram seeds: name and bytes. The stream seeds are the same inputs behind a chunk-size byte.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let one_packet = wire(&[packet(64)]);
    let mut bad_hash = one_packet.clone();
    let mid = bad_hash.len() / 2;
    bad_hash[mid] ^= 0x01;
    let mut good_then_bad_hash = wire(&[ping()]);
    good_then_bad_hash.extend_from_slice(&bad_hash);
    let mut garbage_protobuf = Vec::new();
    encode_raw(
        &[0x0a, 0xff, 0xff, 0x07],
        &FrameLimits::default(),
        &mut garbage_protobuf,
    )
    .expect("encodes");
    let empty_frame = wire(&[FrameMessage::default()]);
    vec![
        ("seed-ping", wire(&[ping()])),
        ("seed-packet-64", one_packet.clone()),
        ("seed-packet-1k", wire(&[packet(1024)])),
        ("seed-empty-frame", empty_frame),
        (
            "seed-several",
            wire(&[ping(), packet(64), ack(), close(), packet(16)]),
        ),
        (
            "seed-truncated-body",
            one_packet[..one_packet.len() - 9].to_vec(),
        ),
        ("seed-truncated-header", one_packet[..1].to_vec()),
        ("seed-truncated-hash", {
            let mut v = wire(&[ping(), packet(64)]);
            v.truncate(v.len() - 2);
            v
        }),
        ("seed-bad-version", {
            let mut v = one_packet.clone();
            v[0] = 2;
            v
        }),
        ("seed-overlong-version", vec![0xff; 12]),
        ("seed-overlong-length", {
            let mut v = vec![0x01];
            v.extend_from_slice(&[0x80; 10]);
            v.push(0x01);
            v
        }),
        (
            "seed-overflow-length",
            [&[0x01][..], &[0xff; 9], &[0x02]].concat(),
        ),
        ("seed-nonminimal-varints", {
            let body = prost::Message::encode_to_vec(&ping());
            hashed(&[0x81, 0x00, 0x80 | body.len() as u8, 0x00], &body)
        }),
        ("seed-hash-mismatch", bad_hash),
        ("seed-good-then-hash-mismatch", good_then_bad_hash),
        (
            "seed-huge-length",
            vec![0x01, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x00],
        ),
        ("seed-length-just-over-limit", {
            // 64 KiB + 1, the fuzz targets' limit plus one.
            vec![0x01, 0x81, 0x80, 0x04, 0x00, 0x00]
        }),
        ("seed-garbage-protobuf", garbage_protobuf),
    ]
}

/// Writes the hand-made seeds into `fuzz/corpus/<target>/`. Run on purpose only.
#[test]
#[ignore = "rewrites the checked-in seed corpus"]
fn write_seed_corpus() {
    let seeds = seeds();
    for (target, chunk_seeds) in [(DATAGRAM, &[][..]), (STREAM, &[0u8, 2, 16][..])] {
        let dir = fuzz_dir().join("corpus").join(target);
        fs::create_dir_all(&dir).expect("corpus folder");
        for (i, (name, bytes)) in seeds.iter().enumerate() {
            let data = match chunk_seeds.get(i % chunk_seeds.len().max(1)) {
                Some(&seed) => [&[seed][..], bytes].concat(),
                None => bytes.clone(),
            };
            fs::write(dir.join(name), data).expect("corpus file written");
        }
    }
}

/// The seeds exercise what they are named after.
#[test]
fn seeds_hit_their_paths() {
    use atbus_frame::{DatagramDecoder, FrameError};
    let limits = FrameLimits {
        max_frame_length: 64 * 1024,
    };
    for (name, bytes) in seeds() {
        let results: Vec<_> = DatagramDecoder::new(Bytes::from(bytes), limits)
            .map(|p| p.and_then(|p| p.decode()))
            .collect();
        let last = results.last().expect("at least one result").clone();
        let oks = results.iter().filter(|r| r.is_ok()).count();
        match name {
            "seed-several" => assert_eq!(oks, 5, "{name}"),
            "seed-ping"
            | "seed-packet-64"
            | "seed-packet-1k"
            | "seed-empty-frame"
            | "seed-nonminimal-varints" => assert!(last.is_ok(), "{name}: {last:?}"),
            "seed-truncated-body" | "seed-truncated-header" | "seed-truncated-hash" => {
                assert!(
                    matches!(last, Err(FrameError::Truncated { .. })),
                    "{name}: {last:?}"
                )
            }
            "seed-bad-version" => assert!(
                matches!(last, Err(FrameError::UnsupportedVersion { version: 2 })),
                "{name}"
            ),
            "seed-overlong-version" | "seed-overlong-length" | "seed-overflow-length" => {
                assert!(
                    matches!(last, Err(FrameError::OverlongVarint { .. })),
                    "{name}: {last:?}"
                )
            }
            "seed-hash-mismatch" | "seed-good-then-hash-mismatch" => assert!(
                matches!(last, Err(FrameError::HashMismatch { .. })),
                "{name}: {last:?}"
            ),
            "seed-huge-length" | "seed-length-just-over-limit" => assert!(
                matches!(last, Err(FrameError::FrameTooLong { .. })),
                "{name}: {last:?}"
            ),
            "seed-garbage-protobuf" => assert!(
                matches!(last, Err(FrameError::Protobuf(_))),
                "{name}: {last:?}"
            ),
            other => panic!("seed {other} has no expectation"),
        }
    }
}
