//! Content protection and compression: round trips, every single-bit change of sealed content
//! or of a protected header field is refused, relay-written fields are free to change, wrong
//! keys and directions are refused, limits and key phases are typed, the nonce is injective,
//! decompression is capped, and arbitrary input never panics.

use atbus_auth::protect::{
    MAX_PACKET_NUMBER, MAX_PATH_ID, NonceSpace, TAG_LEN, packet_nonce, packet_nonce_in,
};
use atbus_auth::{
    CipherSuite, CompressError, CompressionConfig, ContentCodec, ContentError, ContentHeader,
    PacketProtection, ProtectError, ProtectionLimits, SEAL_OVERHEAD, Side,
};
use atbus_proto::packet_flags::{COMPRESSED, ENCRYPTED, FINISH_STREAM};
use atbus_proto::{FrameMessage, MessageHead, PacketData, frame_message::Body};
use proptest::prelude::*;
use prost::Message;

const C2S: [u8; 32] = [0x41; 32];
const S2C: [u8; 32] = [0x42; 32];
const SUITES: [CipherSuite; 2] = [CipherSuite::ChaCha20Poly1305, CipherSuite::Aes256Gcm];

fn pair(suite: CipherSuite) -> (PacketProtection, PacketProtection) {
    (
        PacketProtection::new(suite, Side::Client, &C2S, &S2C).unwrap(),
        PacketProtection::new(suite, Side::Server, &C2S, &S2C).unwrap(),
    )
}

fn header() -> ContentHeader<'static> {
    ContentHeader {
        source: "svc-a.game",
        destination: "svc-b.game",
        stream_id: 3,
        stream_offset: 65_536,
        flags: ENCRYPTED | FINISH_STREAM,
        padding_size: 0,
        timepoint_microseconds: 1_800_000_000_123_456,
        packet_number: 77,
        path_id: 2,
    }
}

fn seal(p: &mut PacketProtection, h: &ContentHeader<'_>, plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let n = p.seal(h, plain, &mut out).unwrap();
    assert_eq!(n, out.len());
    out
}

fn open(
    p: &mut PacketProtection,
    h: &ContentHeader<'_>,
    sealed: &[u8],
) -> Result<Vec<u8>, ProtectError> {
    let mut out = Vec::new();
    p.open(h, sealed, &mut out).map(|n| {
        assert_eq!(n, out.len());
        out
    })
}

#[test]
fn round_trip_both_suites_both_directions() {
    for suite in SUITES {
        let (mut client, mut server) = pair(suite);
        for len in [0usize, 1, 64, 1500, 65_536] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut h = header();
            h.packet_number = len as i64;
            let sealed = seal(&mut client, &h, &plain);
            assert_eq!(sealed.len(), plain.len() + SEAL_OVERHEAD);
            if len >= 16 {
                assert_ne!(
                    &sealed[1..1 + len],
                    &plain[..],
                    "content is not sent in clear"
                );
            }
            assert_eq!(open(&mut server, &h, &sealed).unwrap(), plain);
            let back = seal(&mut server, &h, &plain);
            assert_ne!(back, sealed, "each direction has its own key");
            assert_eq!(open(&mut client, &h, &back).unwrap(), plain);
        }
    }
}

#[test]
fn every_bit_of_sealed_content_is_protected() {
    for suite in SUITES {
        let (mut client, mut server) = pair(suite);
        let h = header();
        let sealed = seal(&mut client, &h, b"hello, fragment data of 32 bytes");
        for bit in 0..sealed.len() * 8 {
            let mut bad = sealed.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let err = open(&mut server, &h, &bad).unwrap_err();
            if bit < 8 {
                // A phase byte changed to the next phase is tried with the next key.
                assert!(
                    matches!(
                        err,
                        ProtectError::KeyPhaseMismatch { .. } | ProtectError::BadTag
                    ),
                    "{err:?}"
                );
            } else {
                assert_eq!(err, ProtectError::BadTag, "bit {bit}");
            }
        }
        // Every truncation is refused as well.
        for len in 0..sealed.len() {
            assert!(
                open(&mut server, &h, &sealed[..len]).is_err(),
                "length {len}"
            );
        }
        assert!(
            open(&mut server, &h, &sealed).is_ok(),
            "failures left the key usable"
        );
    }
}

/// Flips bits of one numeric header field.
type FieldFlip = fn(&mut ContentHeader<'static>, i64);

/// Every header variant with one bit of one protected field changed.
fn header_variants() -> Vec<(String, ContentHeader<'static>)> {
    let base = header();
    let mut out = Vec::new();
    for bit in 0..64 {
        let m = 1i64 << bit;
        let fields: [(&str, FieldFlip); 5] = [
            ("stream_id", |h, m| h.stream_id ^= m),
            ("stream_offset", |h, m| h.stream_offset ^= m),
            ("timepoint", |h, m| h.timepoint_microseconds ^= m),
            ("packet_number", |h, m| h.packet_number ^= m),
            ("path_id", |h, m| h.path_id ^= m),
        ];
        for (name, f) in fields {
            let mut h = base;
            f(&mut h, m);
            out.push((format!("{name} bit {bit}"), h));
        }
    }
    for bit in 0..32 {
        let mut h = base;
        h.flags ^= 1 << bit;
        out.push((format!("flags bit {bit}"), h));
        let mut h = base;
        h.padding_size ^= 1 << bit;
        out.push((format!("padding_size bit {bit}"), h));
    }
    for (name, source, destination) in [
        ("source", "svc-a.gamf", base.destination),
        ("source", "", base.destination),
        ("destination", base.source, "svc-b.gama"),
        ("names moved", "svc-a.gamesvc-b", ".game"),
        ("names swapped", base.destination, base.source),
    ] {
        out.push((
            name.to_owned(),
            ContentHeader {
                source,
                destination,
                ..base
            },
        ));
    }
    out
}

#[test]
fn every_protected_header_field_is_bound() {
    for suite in SUITES {
        let (mut client, mut server) = pair(suite);
        let sealed = seal(&mut client, &header(), b"content");
        let variants = header_variants();
        assert_eq!(variants.len(), 64 * 5 + 32 * 2 + 5);
        for (what, h) in variants {
            assert!(open(&mut server, &h, &sealed).is_err(), "{what} accepted");
        }
        assert_eq!(open(&mut server, &header(), &sealed).unwrap(), b"content");
    }
}

#[test]
fn relay_written_fields_may_change() {
    let (mut client, mut server) = pair(CipherSuite::ChaCha20Poly1305);
    let head = MessageHead {
        source: "svc-a.game".into(),
        destination: "svc-b.game".into(),
        ..Default::default()
    };
    let mut packet = PacketData {
        stream_id: 9,
        stream_offset: 128,
        flags: ENCRYPTED,
        timepoint_microseconds: 5,
        packet_number: 1,
        path_id: 0,
        ..Default::default()
    };
    let sealed = seal(
        &mut client,
        &ContentHeader::of(Some(&head), &packet),
        b"payload",
    );
    packet.content = sealed.into();
    let frame = FrameMessage {
        head: Some(head),
        body: Some(Body::Packet(packet)),
    };
    let bytes = frame.encode_to_vec();

    // A relay decodes, writes its fields and re-encodes.
    let mut relayed = FrameMessage::decode(&bytes[..]).unwrap();
    let head = relayed.head.as_mut().unwrap();
    head.forward_for_source = "relay-1".into();
    head.forward_for_connection_id = 4242;
    head.hop_count = 3;
    let relayed = FrameMessage::decode(&relayed.encode_to_vec()[..]).unwrap();
    let Some(Body::Packet(p)) = &relayed.body else {
        panic!("packet body");
    };
    let h = ContentHeader::of(relayed.head.as_ref(), p);
    assert_eq!(open(&mut server, &h, &p.content).unwrap(), b"payload");

    // The same relay forging the source is caught.
    let mut forged = relayed.clone();
    forged.head.as_mut().unwrap().source = "svc-c.game".into();
    let h = ContentHeader::of(forged.head.as_ref(), p);
    assert_eq!(open(&mut server, &h, &p.content), Err(ProtectError::BadTag));
}

#[test]
fn wrong_keys_and_directions_are_refused() {
    for suite in SUITES {
        let (mut client, mut server) = pair(suite);
        let h = header();
        let sealed = seal(&mut client, &h, b"secret");
        // The sender cannot open its own packets (reflection), nor can another session.
        assert_eq!(open(&mut client, &h, &sealed), Err(ProtectError::BadTag));
        let mut other = PacketProtection::new(suite, Side::Server, &[0x43; 32], &S2C).unwrap();
        assert_eq!(open(&mut other, &h, &sealed), Err(ProtectError::BadTag));
        // A receiver given the two secrets in the wrong order.
        let mut swapped = PacketProtection::new(suite, Side::Server, &S2C, &C2S).unwrap();
        assert_eq!(open(&mut swapped, &h, &sealed), Err(ProtectError::BadTag));
        assert_eq!(open(&mut server, &h, &sealed).unwrap(), b"secret");
    }
    // The other suite with the same secrets.
    let (mut chacha, _) = pair(CipherSuite::ChaCha20Poly1305);
    let (_, mut aes) = pair(CipherSuite::Aes256Gcm);
    let sealed = seal(&mut chacha, &header(), b"secret");
    assert_eq!(
        open(&mut aes, &header(), &sealed),
        Err(ProtectError::BadTag)
    );
}

#[test]
fn bad_secrets_and_numbers_are_typed() {
    assert_eq!(
        PacketProtection::new(CipherSuite::ChaCha20Poly1305, Side::Client, &[1; 31], &S2C)
            .unwrap_err(),
        ProtectError::BadSecretLength(31)
    );
    let (mut client, mut server) = pair(CipherSuite::ChaCha20Poly1305);
    let mut out = vec![9u8];
    for (pn, path, err) in [
        (-1, 0, ProtectError::NegativePacketNumber(-1)),
        (
            MAX_PACKET_NUMBER + 1,
            0,
            ProtectError::PacketNumberExhausted(MAX_PACKET_NUMBER + 1),
        ),
        (i64::MAX, 0, ProtectError::PacketNumberExhausted(i64::MAX)),
        (0, -1, ProtectError::PathIdOutOfRange(-1)),
        (
            0,
            MAX_PATH_ID + 1,
            ProtectError::PathIdOutOfRange(MAX_PATH_ID + 1),
        ),
    ] {
        let h = ContentHeader {
            packet_number: pn,
            path_id: path,
            ..header()
        };
        assert_eq!(client.seal(&h, b"x", &mut out), Err(err.clone()));
        assert_eq!(server.open(&h, &[0; 20], &mut out), Err(err));
        assert_eq!(out, [9], "refusals leave the buffer alone");
    }
    let edge = ContentHeader {
        packet_number: MAX_PACKET_NUMBER,
        path_id: MAX_PATH_ID,
        ..header()
    };
    let sealed = seal(&mut client, &edge, b"edge");
    assert_eq!(open(&mut server, &edge, &sealed).unwrap(), b"edge");

    let plain = ContentHeader {
        flags: FINISH_STREAM,
        ..header()
    };
    assert_eq!(
        client.seal(&plain, b"x", &mut out),
        Err(ProtectError::NotFlaggedEncrypted)
    );
    assert_eq!(
        server.open(&header(), &[0; SEAL_OVERHEAD - 1], &mut out),
        Err(ProtectError::Truncated {
            len: SEAL_OVERHEAD - 1,
            min: SEAL_OVERHEAD
        })
    );
    assert_eq!(out, [9]);
}

#[test]
fn limits_demand_a_key_update_and_close_on_forgeries() {
    let limits = ProtectionLimits {
        max_packets_per_key: 3,
        max_failed_opens: 2,
    };
    let suite = CipherSuite::ChaCha20Poly1305;
    let mut client =
        PacketProtection::with_limits(suite, Side::Client, &C2S, &S2C, limits).unwrap();
    let mut server =
        PacketProtection::with_limits(suite, Side::Server, &C2S, &S2C, limits).unwrap();
    let mut h = header();
    for pn in 0..3 {
        h.packet_number = pn;
        let sealed = seal(&mut client, &h, b"x");
        assert_eq!(open(&mut server, &h, &sealed).unwrap(), b"x");
    }
    h.packet_number = 3;
    let mut out = Vec::new();
    assert_eq!(
        client.seal(&h, b"x", &mut out),
        Err(ProtectError::KeyUpdateNeeded { sealed: 3 })
    );
    assert!(out.is_empty());

    // Key update: the receiver tries the next phase when a packet claims it, and moves on
    // only when it opens.
    client.update_send_key();
    assert_eq!((client.send_phase(), client.sealed_packets()), (1, 0));
    let sealed = seal(&mut client, &h, b"after update");
    assert_eq!(sealed[0], 1);
    // A phase byte forged back to 0 does not make the new key's packet open under the old key.
    let mut forged = sealed.clone();
    forged[0] = 0;
    assert_eq!(open(&mut server, &h, &forged), Err(ProtectError::BadTag));
    assert_eq!(
        server.receive_phase(),
        0,
        "moved on a packet that did not open"
    );
    assert_eq!(open(&mut server, &h, &sealed).unwrap(), b"after update");
    assert_eq!(server.receive_phase(), 1);
    assert!(server.has_previous_receive_key());
    // Forgeries count over the session's life, across phases: one before, one now.
    let mut bad = sealed.clone();
    bad[5] ^= 1;
    assert_eq!(open(&mut server, &h, &bad), Err(ProtectError::BadTag));
    assert_eq!(server.failed_opens(), 2);
    assert_eq!(
        open(&mut server, &h, &sealed),
        Err(ProtectError::IntegrityLimitReached { failed: 2 })
    );
}

#[test]
fn receive_phases_move_forward_keep_the_previous_and_never_go_back() {
    for suite in SUITES {
        let (mut client, mut server) = pair(suite);
        let mut h = header();
        let mut next_pn = 0;
        let mut sealed_at = |client: &mut PacketProtection, h: &mut ContentHeader<'static>| {
            h.packet_number = next_pn;
            next_pn += 1;
            (*h, seal(client, h, b"payload"))
        };
        let (h0, p0) = sealed_at(&mut client, &mut h);
        let (h0b, p0b) = sealed_at(&mut client, &mut h);
        client.update_send_key();
        let (h1, p1) = sealed_at(&mut client, &mut h);
        // Phase 1 arrives first: the receiver moves to 1; the late phase-0 packet still opens.
        assert_eq!(open(&mut server, &h1, &p1).unwrap(), b"payload");
        assert_eq!(server.receive_phase(), 1);
        assert_eq!(open(&mut server, &h0, &p0).unwrap(), b"payload");
        // Opening a previous-phase packet does not move the receiver back.
        assert_eq!(server.receive_phase(), 1);
        client.update_send_key();
        let (h2, p2) = sealed_at(&mut client, &mut h);
        assert_eq!(open(&mut server, &h2, &p2).unwrap(), b"payload");
        assert_eq!(server.receive_phase(), 2);
        // Two phases ago: refused, counted nowhere (no tag was tried).
        assert_eq!(
            open(&mut server, &h0b, &p0b),
            Err(ProtectError::KeyPhaseMismatch {
                expected: 2,
                got: 0
            })
        );
        // Phase 1 is the previous one until it is discarded.
        let (h1b, p1b) = {
            let mut c1 = pair(suite).0;
            c1.update_send_key();
            let mut hh = h1;
            hh.packet_number = 1000;
            (hh, seal(&mut c1, &hh, b"late"))
        };
        assert_eq!(open(&mut server, &h1b, &p1b).unwrap(), b"late");
        server.discard_previous_receive_key();
        assert!(!server.has_previous_receive_key());
        assert!(matches!(
            open(&mut server, &h1b, &p1b),
            Err(ProtectError::KeyPhaseMismatch { .. })
        ));
        assert_eq!(server.failed_opens(), 0);
        // Phases wrap at 256 without confusing keys: 256 updates later the byte repeats but
        // the key does not.
        let mut far = pair(suite).0;
        for _ in 0..256 {
            far.update_send_key();
        }
        assert_eq!(far.send_phase(), 0);
        let (hf, pf) = sealed_at(&mut far, &mut h);
        let (_, mut fresh) = pair(suite);
        assert_eq!(open(&mut fresh, &hf, &pf), Err(ProtectError::BadTag));
    }
}

#[test]
fn seal_and_open_write_into_the_callers_buffer() {
    let (mut client, mut server) = pair(CipherSuite::ChaCha20Poly1305);
    let plain = vec![7u8; 4096];
    let mut sealed = Vec::with_capacity(plain.len() + SEAL_OVERHEAD + 3);
    sealed.extend_from_slice(b"hdr");
    let mut opened = Vec::with_capacity(plain.len());
    let (sealed_at, opened_at) = (sealed.as_ptr(), opened.as_ptr());
    for pn in 0..50 {
        let h = ContentHeader {
            packet_number: pn,
            ..header()
        };
        sealed.truncate(3);
        opened.clear();
        client.seal(&h, &plain, &mut sealed).unwrap();
        server.open(&h, &sealed[3..], &mut opened).unwrap();
        assert_eq!(opened, plain);
        assert_eq!(&sealed[..3], b"hdr", "seal appends");
    }
    assert_eq!(sealed.as_ptr(), sealed_at, "no reallocation");
    assert_eq!(opened.as_ptr(), opened_at, "no reallocation");
}

#[test]
fn compression_round_trip_threshold_and_skip() {
    let c = CompressionConfig::default();
    let text: Vec<u8> = b"{\"player\":17,\"pos\":[1,2,3],\"state\":\"running\"}"
        .iter()
        .cycle()
        .take(10_000)
        .copied()
        .collect();
    let mut out = vec![1, 2];
    assert!(c.compress(&text, &mut out));
    assert!(out.len() < 2 + text.len() / 4, "compressible text shrinks");
    let mut back = Vec::new();
    assert_eq!(c.decompress(&out[2..], &mut back), Ok(text.len()));
    assert_eq!(back, text);

    // Below the threshold, or not shrinking: nothing appended.
    let mut out = Vec::new();
    assert!(!c.compress(&text[..c.threshold - 1], &mut out));
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    assert!(!c.compress(&noise, &mut out));
    assert!(out.is_empty());
}

#[test]
fn decompression_bombs_and_corruption_are_refused() {
    let big = CompressionConfig {
        threshold: 0,
        max_decompressed: 8 << 20,
    };
    let small = CompressionConfig {
        threshold: 0,
        max_decompressed: 64 * 1024,
    };
    // 4 MiB of zeros: the most compressible input there is still decodes under a large cap
    // (the expansion bound is not too tight)...
    let zeros = vec![0u8; 4 << 20];
    let mut bomb = Vec::new();
    assert!(big.compress(&zeros, &mut bomb));
    assert!(bomb.len() < 20_000, "{}", bomb.len());
    let mut out = Vec::new();
    assert_eq!(big.decompress(&bomb, &mut out), Ok(zeros.len()));
    assert_eq!(out, zeros);
    // ...and is refused by a small cap before any buffer grows.
    let mut out = Vec::new();
    assert_eq!(
        small.decompress(&bomb, &mut out),
        Err(CompressError::TooLarge {
            declared: 4 << 20,
            max: 64 * 1024
        })
    );
    assert_eq!(out.capacity(), 0);

    // A declared size the block cannot reach.
    let mut lie = bomb.clone();
    lie[..4].copy_from_slice(&(8u32 << 20).to_be_bytes());
    assert!(matches!(
        big.decompress(&lie, &mut out),
        Err(CompressError::ImpossibleSize { .. })
    ));
    let tiny = [0, 0, 0xff, 0xff, 0x10];
    assert!(matches!(
        small.decompress(&tiny, &mut out),
        Err(CompressError::ImpossibleSize { .. })
    ));
    // A declared size that is possible but wrong.
    let mut short = bomb.clone();
    short[..4].copy_from_slice(&((4u32 << 20) - 1).to_be_bytes());
    assert!(matches!(
        big.decompress(&short, &mut out),
        Err(CompressError::SizeMismatch { .. } | CompressError::Corrupt)
    ));
    assert_eq!(
        small.decompress(&[0, 0], &mut out),
        Err(CompressError::Truncated { len: 2 })
    );
    let mut garbage = vec![0, 0, 1, 0];
    garbage.extend_from_slice(&[0xf0; 40]);
    assert!(small.decompress(&garbage, &mut out).is_err());
    assert!(out.is_empty(), "refusals leave the buffer alone");
}

fn codec(side: Side, protect: bool, compress: bool) -> ContentCodec {
    let protection = protect
        .then(|| PacketProtection::new(CipherSuite::ChaCha20Poly1305, side, &C2S, &S2C).unwrap());
    ContentCodec::new(protection, compress.then(CompressionConfig::default))
}

#[test]
fn codec_compresses_then_seals_and_refuses_downgrades() {
    let content: Vec<u8> = b"fragment fragment fragment "
        .iter()
        .cycle()
        .take(3000)
        .copied()
        .collect();
    for (protect, compress) in [(true, true), (true, false), (false, true), (false, false)] {
        let mut tx = codec(Side::Client, protect, compress);
        let mut rx = codec(Side::Server, protect, compress);
        let mut h = ContentHeader {
            flags: FINISH_STREAM,
            ..header()
        };
        let mut wire = Vec::new();
        tx.encode(&mut h, &content, &mut wire).unwrap();
        assert_eq!(h.flags & ENCRYPTED != 0, protect);
        assert_eq!(h.flags & COMPRESSED != 0, compress);
        assert_eq!(h.flags & FINISH_STREAM, FINISH_STREAM, "other flags kept");
        if compress {
            assert!(wire.len() < content.len() / 2);
        }
        let mut out = Vec::new();
        assert_eq!(rx.decode(&h, &wire, &mut out), Ok(content.len()));
        assert_eq!(out, content);

        // Small content is not compressed even when compression is negotiated.
        let mut small = header();
        let mut wire_small = Vec::new();
        tx.encode(&mut small, b"tiny", &mut wire_small).unwrap();
        assert_eq!(small.flags & COMPRESSED, 0);

        if protect {
            // Stripping ENCRYPTED is a downgrade; toggling COMPRESSED breaks the tag.
            let stripped = ContentHeader {
                flags: h.flags & !ENCRYPTED,
                ..h
            };
            assert_eq!(
                rx.decode(&stripped, &wire, &mut out),
                Err(ContentError::NotEncrypted)
            );
            if compress {
                let toggled = ContentHeader {
                    flags: h.flags & !COMPRESSED,
                    ..h
                };
                assert_eq!(
                    rx.decode(&toggled, &wire, &mut out),
                    Err(ContentError::Protect(ProtectError::BadTag))
                );
            }
        } else {
            let claimed = ContentHeader {
                flags: h.flags | ENCRYPTED,
                ..h
            };
            assert_eq!(
                rx.decode(&claimed, &wire, &mut out),
                Err(ContentError::EncryptionNotNegotiated)
            );
        }
    }
    let mut rx = codec(Side::Server, false, false);
    let h = ContentHeader {
        flags: COMPRESSED,
        ..header()
    };
    assert_eq!(
        rx.decode(&h, b"1234", &mut Vec::new()),
        Err(ContentError::CompressionNotNegotiated)
    );
}

#[test]
fn tag_length_is_sixteen() {
    assert_eq!(SEAL_OVERHEAD, 1 + TAG_LEN);
    assert_eq!(TAG_LEN, 16);
}

fn any_header() -> impl Strategy<Value = ContentHeader<'static>> {
    (
        any::<i64>(),
        any::<i64>(),
        any::<i32>(),
        any::<i32>(),
        any::<i64>(),
        prop_oneof![0i64..4, any::<i64>()],
        prop_oneof![0i64..4, any::<i64>()],
    )
        .prop_map(
            |(stream_id, stream_offset, flags, padding, time, pn, path)| ContentHeader {
                source: "p-src",
                destination: "p-dst",
                stream_id,
                stream_offset,
                flags,
                padding_size: padding,
                timepoint_microseconds: time,
                packet_number: pn,
                path_id: path,
            },
        )
}

proptest! {
    /// The nonce is injective over (path id, packet number) in range, for any IV: pairs that
    /// differ only in one number, or that swap bytes between the two, still differ.
    #[test]
    fn nonce_is_injective(
        iv in any::<[u8; 12]>(),
        a in (0..=MAX_PATH_ID, 0..=MAX_PACKET_NUMBER),
        b in prop_oneof![
            (0..=MAX_PATH_ID, 0..=MAX_PACKET_NUMBER),
            (0..=3i64, 0..=3i64),
        ],
        same_path in any::<bool>(),
    ) {
        let b = if same_path { (a.0, b.1) } else { b };
        let na = packet_nonce(&iv, a.0, a.1).unwrap();
        let nb = packet_nonce(&iv, b.0, b.1).unwrap();
        prop_assert_eq!(na == nb, a == b);
        // The map is also invertible: XOR with the IV gives back both numbers.
        let mut raw = na;
        for (r, v) in raw.iter_mut().zip(iv) {
            *r ^= v;
        }
        prop_assert_eq!(i64::from(u32::from_be_bytes(raw[..4].try_into().unwrap())), a.0);
        prop_assert_eq!(i64::from_be_bytes(raw[4..].try_into().unwrap()), a.1);
    }

    /// Data and control packets never share a nonce: the map from (space, path id, number)
    /// to nonce is injective over both spaces.
    #[test]
    fn data_and_control_nonces_never_meet(
        iv in any::<[u8; 12]>(),
        a in (any::<bool>(), 0..=MAX_PATH_ID, 0..=MAX_PACKET_NUMBER),
        b in (any::<bool>(), 0..=MAX_PATH_ID, 0..=MAX_PACKET_NUMBER),
        same_numbers in any::<bool>(),
    ) {
        let space = |control: bool| if control { NonceSpace::Control } else { NonceSpace::Data };
        let b = if same_numbers { (b.0, a.1, a.2) } else { b };
        let na = packet_nonce_in(&iv, space(a.0), a.1, a.2).unwrap();
        let nb = packet_nonce_in(&iv, space(b.0), b.1, b.2).unwrap();
        prop_assert_eq!(na == nb, a == b);
        prop_assert_eq!(packet_nonce(&iv, a.1, a.2).unwrap(), packet_nonce_in(&iv, NonceSpace::Data, a.1, a.2).unwrap());
    }

    /// Sealed content opens to the plaintext under any in-range header.
    #[test]
    fn seal_open_round_trip(
        plain in proptest::collection::vec(any::<u8>(), 0..2048),
        h in any_header(),
        aes in any::<bool>(),
    ) {
        let suite = if aes { CipherSuite::Aes256Gcm } else { CipherSuite::ChaCha20Poly1305 };
        let (mut client, mut server) = pair(suite);
        let h = ContentHeader { flags: h.flags | ENCRYPTED, ..h };
        let mut sealed = Vec::new();
        match client.seal(&h, &plain, &mut sealed) {
            Ok(_) => prop_assert_eq!(open(&mut server, &h, &sealed).unwrap(), plain),
            Err(e) => {
                prop_assert!(sealed.is_empty());
                let in_range = (0..=MAX_PATH_ID).contains(&h.path_id)
                    && (0..=MAX_PACKET_NUMBER).contains(&h.packet_number);
                prop_assert!(!in_range, "refused in range: {e:?}");
            }
        }
    }

    /// Arbitrary wire bytes under arbitrary headers never panic, never open (they were not
    /// sealed), and leave the output buffer as it was.
    #[test]
    fn arbitrary_input_never_panics(
        wire in proptest::collection::vec(any::<u8>(), 0..300),
        h in any_header(),
        protect in any::<bool>(),
        compress in any::<bool>(),
    ) {
        let mut rx = codec(Side::Server, protect, compress);
        let mut out = vec![1u8, 2, 3];
        let r = rx.decode(&h, &wire, &mut out);
        if protect && h.flags & ENCRYPTED != 0 {
            prop_assert!(r.is_err());
        }
        match r {
            Ok(n) => prop_assert_eq!(out.len(), 3 + n),
            Err(_) => prop_assert_eq!(out, vec![1u8, 2, 3]),
        }
        let mut plain = Vec::new();
        if let Ok(n) = CompressionConfig::default().decompress(&wire, &mut plain) {
            prop_assert_eq!(n, plain.len());
        }
        atbus_auth::fuzz_auth_open(&wire);
    }

    /// Any content survives the full pipeline in every negotiation.
    #[test]
    fn codec_round_trip(
        content in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..3000),
            proptest::collection::vec(0u8..3, 0..3000),
        ],
        protect in any::<bool>(),
        compress in any::<bool>(),
        pn in 0i64..1_000_000,
    ) {
        let mut tx = codec(Side::Client, protect, compress);
        let mut rx = codec(Side::Server, protect, compress);
        let mut h = ContentHeader { packet_number: pn, ..header() };
        let mut wire = Vec::new();
        tx.encode(&mut h, &content, &mut wire).unwrap();
        let mut out = Vec::new();
        prop_assert_eq!(rx.decode(&h, &wire, &mut out), Ok(content.len()));
        prop_assert_eq!(out, content);
    }
}
