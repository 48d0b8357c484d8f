//! Known vectors, error paths and properties of the package codec.

use atbus_frame::{
    DatagramDecoder, FrameError, FrameLimits, Splice, StreamDecoder, decode_frame, encode,
    encode_packet, encode_packet_spliced, encode_parts, encode_raw, encoded_len, flatten_spliced,
    package_hash, parse_package, spliced_len, spliced_segments,
};
use atbus_proto::{FrameMessage, PacketData, PingData, frame_message::Body, strategies};
use bytes::Bytes;
use proptest::prelude::*;

fn ping(id: i64, t: i64) -> FrameMessage {
    FrameMessage {
        head: None,
        body: Some(Body::Ping(PingData {
            ping_id: id,
            timepoint_microseconds: t,
        })),
    }
}

fn wire(frame: &FrameMessage) -> Vec<u8> {
    let mut out = Vec::new();
    encode(frame, &FrameLimits::default(), &mut out).expect("encodes");
    out
}

/// The worked example of docs/protocol.md; the hash was computed with an independent XXH3
/// implementation (Python `xxhash.xxh3_64`).
#[test]
fn worked_example_bytes() {
    let bytes = wire(&ping(1, 2));
    assert_eq!(
        bytes,
        [
            0x01, 0x06, 0x2a, 0x04, 0x08, 0x01, 0x10, 0x02, 0x1f, 0xe5, 0xb2, 0x8c
        ]
    );
    assert_eq!(package_hash(&bytes[..8]), 0x8cb2_e51f);
}

#[test]
fn encoded_len_is_exact_and_reserved_once() {
    let frame = ping(123_456, 987_654_321);
    let mut out = Vec::new();
    let n = encode(&frame, &FrameLimits::default(), &mut out).expect("encodes");
    assert_eq!(n, out.len());
    assert_eq!(n, encoded_len(&frame));
    assert_eq!(
        out.capacity(),
        n,
        "exactly one allocation of the exact size"
    );
}

#[test]
fn encode_raw_matches_encode() {
    let frame = ping(5, 6);
    let body = prost::Message::encode_to_vec(&frame);
    let mut raw = Vec::new();
    encode_raw(&body, &FrameLimits::default(), &mut raw).expect("encodes");
    assert_eq!(raw, wire(&frame));
}

#[test]
fn encode_refuses_frames_over_the_limit() {
    let limits = FrameLimits {
        max_frame_length: 4,
    };
    let err = encode(&ping(1, 2), &limits, &mut Vec::new()).expect_err("too long");
    assert_eq!(
        err,
        FrameError::FrameTooLong {
            length: 6,
            limit: 4
        }
    );
}

#[test]
fn one_byte_at_a_time() {
    let frames = [ping(1, 2), ping(3, 4), FrameMessage::default()];
    let mut bytes = Vec::new();
    for f in &frames {
        bytes.extend(wire(f));
    }
    let mut decoder = StreamDecoder::new(FrameLimits::default());
    let mut out = Vec::new();
    for b in &bytes {
        decoder.feed(std::slice::from_ref(b));
        while let Some(f) = decoder.next_frame().expect("valid stream") {
            out.push(f);
        }
    }
    assert_eq!(out, frames);
    assert_eq!(decoder.position(), bytes.len() as u64);
    assert_eq!(decoder.buffered_len(), 0);
}

#[test]
fn bytes_needed_reports_the_rest_of_the_package() {
    let bytes = wire(&ping(1, 2));
    let mut decoder = StreamDecoder::new(FrameLimits::default());
    decoder.feed(&bytes[..3]);
    assert_eq!(decoder.next_package().expect("no error"), None);
    assert_eq!(decoder.bytes_needed(), Some(bytes.len() as u64 - 3));
}

#[test]
fn unsupported_version_fails_the_stream() {
    let mut bytes = wire(&ping(1, 2));
    bytes[0] = 2;
    let mut decoder = StreamDecoder::new(FrameLimits::default());
    decoder.feed(&bytes);
    assert_eq!(
        decoder.next_frame(),
        Err(FrameError::UnsupportedVersion { version: 2 })
    );
    assert!(decoder.is_failed());
    decoder.feed(&wire(&ping(1, 2)));
    assert_eq!(decoder.next_frame(), Err(FrameError::StreamFailed));
    assert_eq!(decoder.buffered_len(), 0, "a failed stream keeps nothing");
}

#[test]
fn overlong_varints_are_rejected() {
    let mut decoder = StreamDecoder::new(FrameLimits::default());
    decoder.feed(&[0xff; 11]);
    assert_eq!(
        decoder.next_frame(),
        Err(FrameError::OverlongVarint { field: "version" })
    );
    let mut decoder = StreamDecoder::new(FrameLimits::default());
    let mut bytes = vec![0x01];
    bytes.extend([0xff; 10]);
    decoder.feed(&bytes);
    assert_eq!(
        decoder.next_frame(),
        Err(FrameError::OverlongVarint { field: "length" })
    );
}

#[test]
fn length_over_limit_is_rejected_before_the_body_arrives() {
    let limits = FrameLimits {
        max_frame_length: 1000,
    };
    let mut decoder = StreamDecoder::new(limits);
    // version 1, length 1001: rejected from the header alone, nothing reserved for it.
    decoder.feed(&[0x01, 0xe9, 0x07]);
    assert_eq!(
        decoder.next_frame(),
        Err(FrameError::FrameTooLong {
            length: 1001,
            limit: 1000
        })
    );
    // A huge declared length does not make the decoder reserve memory.
    let mut decoder = StreamDecoder::new(FrameLimits::default());
    decoder.feed(&[0x01, 0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(matches!(
        decoder.next_frame(),
        Err(FrameError::FrameTooLong {
            length: 0xffff_ffff,
            ..
        })
    ));
    // Just under the limit: the decoder waits for the body without reserving room for it.
    let mut decoder = StreamDecoder::new(FrameLimits::default());
    decoder.feed(&[0x01, 0xff, 0xff, 0x3f]);
    assert_eq!(decoder.next_frame(), Ok(None));
    assert!(decoder.buffered_len() < 16);
}

#[test]
fn hash_mismatch_is_detected() {
    let mut bytes = wire(&ping(1, 2));
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    let mut decoder = StreamDecoder::new(FrameLimits::default());
    decoder.feed(&bytes);
    assert!(matches!(
        decoder.next_frame(),
        Err(FrameError::HashMismatch { .. })
    ));
}

#[test]
fn protobuf_error_is_typed() {
    // A valid package around bytes that are not a frame_message (truncated field).
    let mut bytes = Vec::new();
    encode_raw(&[0x2a, 0x09, 0x08], &FrameLimits::default(), &mut bytes).expect("encodes");
    let mut decoder = StreamDecoder::new(FrameLimits::default());
    decoder.feed(&bytes);
    assert!(matches!(decoder.next_frame(), Err(FrameError::Protobuf(_))));
    assert!(decoder.is_failed());
}

#[test]
fn datagram_with_several_packages() {
    let mut bytes = wire(&ping(1, 2));
    bytes.extend(wire(&ping(3, 4)));
    let frames: Vec<_> = DatagramDecoder::new(Bytes::from(bytes), FrameLimits::default())
        .map(|p| p.and_then(|p| p.decode()).expect("valid"))
        .collect();
    assert_eq!(frames, vec![ping(1, 2), ping(3, 4)]);
}

#[test]
fn datagram_errors() {
    let limits = FrameLimits::default();
    let mut empty = DatagramDecoder::new(Bytes::new(), limits);
    assert_eq!(empty.next(), Some(Err(FrameError::EmptyDatagram)));
    assert_eq!(empty.next(), None);

    let bytes = wire(&ping(1, 2));
    let mut truncated = DatagramDecoder::new(Bytes::copy_from_slice(&bytes[..7]), limits);
    assert_eq!(
        truncated.next(),
        Some(Err(FrameError::Truncated {
            needed: 12,
            available: 7
        }))
    );
    assert_eq!(truncated.next(), None, "stops after an error");

    // A good package followed by a truncated one: the good one comes out first.
    let mut two = bytes.clone();
    two.extend(&bytes[..5]);
    let mut decoder = DatagramDecoder::new(Bytes::from(two), limits);
    assert!(decoder.next_frame().expect("one").is_ok());
    assert!(matches!(
        decoder.next_frame(),
        Some(Err(FrameError::Truncated { .. }))
    ));
}

#[test]
fn decoding_from_bytes_shares_the_payload() {
    let payload = Bytes::from(vec![7u8; 64 * 1024]);
    let frame = FrameMessage {
        head: None,
        body: Some(Body::Packet(atbus_proto::PacketData {
            content: payload,
            ..Default::default()
        })),
    };
    let datagram = Bytes::from(wire(&frame));
    let package = parse_package(&datagram, &FrameLimits::default())
        .expect("valid")
        .expect("complete");
    let decoded = decode_frame(package.frame.clone()).expect("decodes");
    let Some(Body::Packet(packet)) = decoded.body else {
        panic!("packet expected");
    };
    let range = datagram.as_ptr_range();
    assert!(
        range.contains(&packet.content.as_ptr()),
        "content must point into the received buffer, not a copy"
    );
}

#[test]
fn packages_whole_in_fed_bytes_share_them_and_split_ones_are_joined() {
    let frame = |byte: u8| FrameMessage {
        head: None,
        body: Some(Body::Packet(atbus_proto::PacketData {
            content: Bytes::from(vec![byte; 1000]),
            ..Default::default()
        })),
    };
    let content = |f: FrameMessage| match f.body {
        Some(Body::Packet(p)) => p.content,
        _ => panic!("packet expected"),
    };
    let mut stream = Vec::new();
    for b in 1..=3 {
        stream.extend(wire(&frame(b)));
    }
    let one = wire(&frame(1)).len();
    // The first read ends inside the second package.
    let first = Bytes::from(stream[..one + 10].to_vec());
    let second = Bytes::from(stream[one + 10..].to_vec());
    let mut decoder = StreamDecoder::new(FrameLimits::default());
    decoder.feed_bytes(first.clone());
    let got = content(decoder.next_frame().expect("valid").expect("whole"));
    assert!(
        first.as_ptr_range().contains(&got.as_ptr()),
        "not a slice of the read"
    );
    assert_eq!(got, vec![1u8; 1000]);
    assert_eq!(decoder.next_frame().expect("valid"), None);
    assert_eq!(decoder.buffered_len(), 10);
    assert_eq!(decoder.bytes_needed(), Some((one - 10) as u64));
    decoder.feed_bytes(second.clone());
    let joined = content(decoder.next_frame().expect("valid").expect("joined"));
    assert_eq!(joined, vec![2u8; 1000]);
    assert!(
        !second.as_ptr_range().contains(&joined.as_ptr()),
        "joined in the decoder"
    );
    let third = content(decoder.next_frame().expect("valid").expect("whole"));
    assert_eq!(third, vec![3u8; 1000]);
    assert!(
        second.as_ptr_range().contains(&third.as_ptr()),
        "not a slice of the read"
    );
    assert_eq!(decoder.next_frame().expect("valid"), None);
    assert_eq!(decoder.position(), stream.len() as u64);
    // Garbage fed as bytes fails the stream like garbage fed as a slice.
    decoder.feed_bytes(Bytes::from_static(&[2, 0, 0, 0, 0, 0]));
    assert!(matches!(
        decoder.next_package(),
        Err(FrameError::UnsupportedVersion { version: 2 })
    ));
    assert!(decoder.is_failed());
    assert_eq!(decoder.buffered_len(), 0);
}

/// `packet` with the fields whose bit is set in `zero` set to 0 (proto3 leaves zeros out).
fn with_zeros(mut packet: PacketData, zero: u8) -> PacketData {
    let bit = |i: u8| zero & (1 << i) != 0;
    if bit(0) {
        packet.stream_id = 0;
    }
    if bit(1) {
        packet.stream_offset = 0;
    }
    if bit(2) {
        packet.flags = 0;
    }
    if bit(3) {
        packet.padding_size = 0;
    }
    if bit(4) {
        packet.timepoint_microseconds = 0;
    }
    if bit(5) {
        packet.packet_number = 0;
    }
    if bit(6) {
        packet.path_id = 0;
    }
    packet
}

#[test]
fn encode_packet_refuses_frames_over_the_limit() {
    let content = atbus_proto::PacketContent {
        fragment: vec![atbus_proto::packet_content::FragmentType {
            data: Bytes::from(vec![1u8; 100]),
            ..Default::default()
        }],
    };
    let limits = FrameLimits {
        max_frame_length: 64,
    };
    let mut out = vec![9u8];
    let err = encode_packet(None, &PacketData::default(), &content, &limits, &mut out);
    assert!(
        matches!(err, Err(FrameError::FrameTooLong { .. })),
        "{err:?}"
    );
    assert_eq!(out, vec![9u8], "nothing written");
}

proptest! {
    #[test]
    fn encode_packet_matches_encode(
        head in proptest::option::of(strategies::message_head()),
        packet in strategies::packet_data(0),
        content in strategies::packet_content(300),
        zero in any::<u8>(),
    ) {
        let packet = with_zeros(packet, zero);
        // Plain fragments (no labels, type 0) take the encoder's short path; keep both kinds.
        let mut content = content;
        for (i, f) in content.fragment.iter_mut().enumerate() {
            if zero & (1 << (7 - i % 2)) != 0 {
                f.labels.clear();
                f.packet_type = 0;
            }
        }
        let frame = FrameMessage {
            head: head.clone(),
            body: Some(Body::Packet(PacketData {
                content: prost::Message::encode_to_vec(&content).into(),
                ..packet.clone()
            })),
        };
        let expected = wire(&frame);
        // Appends after what the buffer holds, like `encode`; the packet's own content is ignored.
        let mut out = vec![0xee; 3];
        let ignored = PacketData { content: Bytes::from_static(b"ignored"), ..packet };
        let n = encode_packet(head.as_ref(), &ignored, &content, &FrameLimits::default(), &mut out)
            .expect("encodes");
        prop_assert_eq!(n, expected.len());
        prop_assert_eq!(&out[..3], &[0xee; 3][..]);
        prop_assert_eq!(&out[3..], &expected[..]);
    }

    /// Spliced packages are the same wire bytes as copied ones, whatever the splice threshold,
    /// whether the data is short (one-shot XXH3 below 240 bytes) or long, and when several
    /// packages with splices follow each other in one buffer.
    #[test]
    fn encode_packet_spliced_matches_encode_packet(
        packets in proptest::collection::vec(
            (strategies::packet_data(0), strategies::packet_content(300), 0usize..3000),
            1..4,
        ),
        head in proptest::option::of(strategies::message_head()),
        min_splice in 0usize..400,
        prefix in 0usize..5,
    ) {
        let limits = FrameLimits::default();
        let mut expected = vec![0xee; prefix];
        let mut out = vec![0xee; prefix];
        let mut splices = Vec::new();
        for (packet, mut content, big) in packets {
            // Some fragments get long data, so the hash takes its streaming long-input path.
            if let Some(f) = content.fragment.first_mut() {
                if big > 1000 {
                    f.data = Bytes::from((0..big).map(|i| i as u8).collect::<Vec<u8>>());
                    f.labels.clear();
                    f.packet_type = 0;
                }
            }
            let want = encode_packet(head.as_ref(), &packet, &content, &limits, &mut expected)
                .expect("encodes");
            let before = splices.len();
            let n = encode_packet_spliced(
                head.as_ref(), &packet, &content, &limits, &mut out, &mut splices, min_splice,
            )
            .expect("encodes");
            prop_assert_eq!(n, want);
            for s in &splices[before..] {
                prop_assert!(s.data.len() >= min_splice.max(1));
            }
        }
        prop_assert!(splices.windows(2).all(|w| w[0].at <= w[1].at));
        prop_assert_eq!(spliced_len(&out, &splices), expected.len());
        let mut flat = Vec::new();
        flatten_spliced(&out, &splices, &mut flat);
        prop_assert_eq!(&flat, &expected);
        let joined: Vec<u8> = spliced_segments(&out, &splices).flatten().copied().collect();
        prop_assert_eq!(joined, expected);
        prop_assert!(spliced_segments(&out, &splices).all(|s| !s.is_empty()));
    }

    #[test]
    fn encode_parts_matches_encode(
        head in proptest::option::of(strategies::message_head()),
        body in strategies::body(300),
    ) {
        let frame = FrameMessage { head: head.clone(), body: Some(body.clone()) };
        let mut out = Vec::new();
        let n = encode_parts(head.as_ref(), &body, &FrameLimits::default(), &mut out)
            .expect("encodes");
        prop_assert_eq!(n, out.len());
        prop_assert_eq!(out, wire(&frame));
    }

    #[test]
    fn round_trip(frame in strategies::frame_message(2048)) {
        let bytes = wire(&frame);
        let mut decoder = StreamDecoder::new(FrameLimits::default());
        decoder.feed(&bytes);
        prop_assert_eq!(decoder.next_frame().expect("valid"), Some(frame.clone()));
        let mut dgram = DatagramDecoder::new(Bytes::from(bytes), FrameLimits::default());
        prop_assert_eq!(dgram.next_frame().expect("one").expect("valid"), frame);
    }

    #[test]
    fn any_chunking_gives_the_same_frames(
        frames in proptest::collection::vec(strategies::frame_message(512), 1..6),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let mut bytes = Vec::new();
        for f in &frames {
            bytes.extend(wire(f));
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        points.push(0);
        points.push(bytes.len());
        points.sort_unstable();
        let mut decoder = StreamDecoder::new(FrameLimits::default());
        let mut out = Vec::new();
        for w in points.windows(2) {
            decoder.feed(&bytes[w[0]..w[1]]);
            while let Some(f) = decoder.next_frame().expect("valid stream") {
                out.push(f);
            }
        }
        prop_assert_eq!(out, frames);
    }

    #[test]
    fn any_chunking_fed_as_bytes_or_slices_gives_the_same_frames(
        frames in proptest::collection::vec(strategies::frame_message(512), 1..6),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
        shared in proptest::collection::vec(any::<bool>(), 21),
        drain in proptest::collection::vec(any::<bool>(), 21),
    ) {
        let mut bytes = Vec::new();
        for f in &frames {
            bytes.extend(wire(f));
        }
        let bytes = Bytes::from(bytes);
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        points.push(0);
        points.push(bytes.len());
        points.sort_unstable();
        let mut decoder = StreamDecoder::new(FrameLimits::default());
        let mut out = Vec::new();
        let mut fed = 0;
        for (i, w) in points.windows(2).enumerate() {
            if shared[i] {
                decoder.feed_bytes(bytes.slice(w[0]..w[1]));
            } else {
                decoder.feed(&bytes[w[0]..w[1]]);
            }
            fed += w[1] - w[0];
            // Pulling only now and then leaves fed bytes waiting behind new feeds.
            if drain[i] || w[1] == bytes.len() {
                while let Some(f) = decoder.next_frame().expect("valid stream") {
                    out.push(f);
                }
            }
            prop_assert_eq!(decoder.position() + decoder.buffered_len() as u64, fed as u64);
        }
        prop_assert_eq!(decoder.buffered_len(), 0);
        prop_assert_eq!(out, frames);
    }

    #[test]
    fn any_single_bit_flip_is_detected_or_rejected(
        frame in strategies::frame_message(256),
        bit in any::<prop::sample::Index>(),
    ) {
        let mut bytes = wire(&frame);
        let bit = bit.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        let mut decoder = StreamDecoder::new(FrameLimits::default());
        decoder.feed(&bytes);
        match decoder.next_frame() {
            // A flip inside the length varint can shorten the package; then the flipped bytes
            // never form a frame that passes the hash.
            Ok(None) => {}
            Ok(Some(decoded)) => prop_assert!(false, "flip at bit {} accepted: {:?}", bit, decoded),
            Err(_) => prop_assert!(decoder.is_failed()),
        }
    }

    #[test]
    fn stream_decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        atbus_frame::fuzz_targets::stream_decoder(&data);
        atbus_frame::fuzz_targets::datagram_decoder(&data);
    }
}

#[test]
fn spliced_segments_skip_empty_parts_and_keep_order() {
    let buf = b"abcdef";
    let splices = [
        Splice {
            at: 0,
            data: Bytes::from_static(b"X"),
        },
        Splice {
            at: 3,
            data: Bytes::new(),
        },
        Splice {
            at: 3,
            data: Bytes::from_static(b"YZ"),
        },
        Splice {
            at: 6,
            data: Bytes::from_static(b"!"),
        },
    ];
    let parts: Vec<&[u8]> = spliced_segments(buf, &splices).collect();
    assert_eq!(parts, [&b"X"[..], b"abc", b"YZ", b"def", b"!"]);
    assert_eq!(spliced_len(buf, &splices), 10);
}

#[test]
fn a_spliced_package_decodes_like_a_copied_one() {
    use atbus_proto::PacketContent;
    use atbus_proto::packet_content::FragmentType;
    let data = Bytes::from(vec![7u8; 70_000]);
    let content = PacketContent {
        fragment: vec![FragmentType {
            data: data.clone(),
            fragment_flag: 1,
            ..FragmentType::default()
        }],
    };
    let packet = PacketData {
        stream_id: 3,
        packet_number: 9,
        ..PacketData::default()
    };
    let mut buf = Vec::new();
    let mut splices = Vec::new();
    let n = encode_packet_spliced(
        None,
        &packet,
        &content,
        &FrameLimits::default(),
        &mut buf,
        &mut splices,
        16 * 1024,
    )
    .expect("encodes");
    assert_eq!(splices.len(), 1, "the payload is spliced");
    assert!(
        buf.len() < 64,
        "and not copied: {} bytes in the buffer",
        buf.len()
    );
    assert_eq!(
        splices[0].data.as_ptr(),
        data.as_ptr(),
        "the caller's bytes themselves"
    );
    let mut flat = Vec::new();
    flatten_spliced(&buf, &splices, &mut flat);
    assert_eq!(flat.len(), n);
    let mut decoder = StreamDecoder::new(FrameLimits::default());
    decoder.feed(&flat);
    let frame = decoder.next_frame().expect("valid hash").expect("whole");
    let Some(Body::Packet(got)) = frame.body else {
        panic!("a packet")
    };
    let got_content: PacketContent = prost::Message::decode(got.content).expect("content");
    assert_eq!(got_content, content);
}
