//! `Session::poll_transmit_spliced`: the payloads it keeps out of the buffer, put back in place,
//! give exactly the bytes `poll_transmit` writes, and a sealed session never splices.

use std::time::{Duration, Instant};

use atbus_auth::{CipherSuite, ContentCodec, PacketProtection, Side as KeySide};
use atbus_frame::{DatagramDecoder, FrameLimits, Splice, flatten_spliced};
use atbus_stream::{
    Delivery, OutgoingMessage, PathConfig, PathId, PathKind, Session, SessionConfig,
};
use bytes::Bytes;
use proptest::prelude::*;

/// A sender and its receiver joined by one byte-stream path.
struct Pair {
    a: Session,
    b: Session,
    pa: PathId,
    pb: PathId,
}

impl Pair {
    fn new(now: Instant) -> Self {
        let mut a = Session::new(SessionConfig::new("node-a", "node-b"), now);
        let mut b = Session::new(SessionConfig::new("node-b", "node-a"), now);
        let config = PathConfig::new(PathKind::ByteStream, 72 * 1024);
        let pa = a.add_path(now, config).expect("path");
        let pb = b.add_path(now, config).expect("path");
        Pair { a, b, pa, pb }
    }
}

/// Hands the packages in `wire` from one session to the other.
fn deliver(to: &mut Session, path: PathId, now: Instant, wire: Vec<u8>) {
    for p in DatagramDecoder::new(Bytes::from(wire), FrameLimits::default()) {
        let p = p.expect("whole package with a valid hash");
        let len = p.wire_len;
        to.handle_frame(now, path, p.decode().expect("frame"), len)
            .expect("accepted");
    }
}

/// A message of `len` bytes that differs from every other one.
fn message(i: usize, len: usize) -> Bytes {
    (0..len)
        .map(|k| (k.wrapping_mul(31) ^ i.wrapping_mul(131)) as u8)
        .collect::<Vec<u8>>()
        .into()
}

proptest! {
    /// Two identical pairs fed the same messages at the same times: the one polled with
    /// `poll_transmit_spliced` puts on the wire exactly the bytes of the one polled with
    /// `poll_transmit`, and its receiver reads every message intact.
    #[test]
    fn spliced_output_is_the_plain_output(
        sizes in proptest::collection::vec(1usize..150_000, 1..12),
        min_splice in prop_oneof![Just(1usize), 1usize..70_000, Just(16 * 1024)],
    ) {
        let mut now = Instant::now();
        let mut plain = Pair::new(now);
        let mut spliced = Pair::new(now);
        let mut buf = Vec::new();
        let mut splices: Vec<Splice> = Vec::new();
        let mut spliced_any = false;
        for (i, &len) in sizes.iter().enumerate() {
            let m = message(i, len);
            plain.a.send(1, OutgoingMessage::data(m.clone())).expect("send");
            spliced.a.send(1, OutgoingMessage::data(m)).expect("send");
        }
        for _ in 0..200 {
            // a -> b, both pairs.
            loop {
                let t1 = plain.a.poll_transmit(now, &mut buf);
                let wire1 = buf.clone();
                let t2 = spliced.a.poll_transmit_spliced(now, &mut buf, &mut splices, min_splice);
                prop_assert_eq!(t1, t2);
                let Some(t) = t2 else { break };
                let mut wire2 = Vec::new();
                flatten_spliced(&buf, &splices, &mut wire2);
                prop_assert_eq!(t.size, wire2.len());
                prop_assert!(splices.iter().all(|s| s.data.len() >= min_splice));
                spliced_any |= !splices.is_empty();
                prop_assert_eq!(&wire1, &wire2);
                deliver(&mut plain.b, plain.pb, now, wire1);
                deliver(&mut spliced.b, spliced.pb, now, wire2);
            }
            // b -> a (acknowledgements and credit).
            for pair in [&mut plain, &mut spliced] {
                while pair.b.read(1).is_some() {}
                while pair.b.poll_transmit(now, &mut buf).is_some() {
                    deliver(&mut pair.a, pair.pa, now, buf.clone());
                }
            }
            if spliced.a.send_buffered() == 0 && plain.a.send_buffered() == 0 {
                break;
            }
            now += Duration::from_millis(5);
            plain.a.handle_timeout(now);
            plain.b.handle_timeout(now);
            spliced.a.handle_timeout(now);
            spliced.b.handle_timeout(now);
        }
        prop_assert_eq!(spliced.a.send_buffered(), 0, "everything acknowledged");
        // Only a message of min_splice bytes or more can be spliced (packing may cut it into
        // smaller fragments); one of 80 000 bytes or more always has a fragment of 40 000.
        if spliced_any {
            prop_assert!(sizes.iter().any(|&len| len >= min_splice));
        }
        if min_splice <= 40_000 && sizes.iter().any(|&len| len >= 80_000) {
            prop_assert!(spliced_any, "a large fragment was copied");
        }
    }
}

/// What the receiver reads from a spliced sender is what was sent.
#[test]
fn a_receiver_reads_spliced_messages_intact() {
    let now = Instant::now();
    let mut pair = Pair::new(now);
    let sent: Vec<Bytes> = (0..4).map(|i| message(i, 20_000 + i * 9_000)).collect();
    for m in &sent {
        pair.a
            .send(3, OutgoingMessage::data(m.clone()))
            .expect("send");
    }
    let (mut buf, mut splices) = (Vec::new(), Vec::new());
    let mut wire = Vec::new();
    while let Some(t) = pair
        .a
        .poll_transmit_spliced(now, &mut buf, &mut splices, 16 * 1024)
    {
        assert!(!splices.is_empty(), "large payloads are spliced");
        assert!(buf.len() < 1024, "and not copied into the buffer");
        wire.clear();
        flatten_spliced(&buf, &splices, &mut wire);
        assert_eq!(wire.len(), t.size);
        deliver(&mut pair.b, pair.pb, now, wire.clone());
    }
    let mut got = Vec::new();
    while let Some(d) = pair.b.read(3) {
        match d {
            Delivery::Message(m) => got.push(m.data),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, sent);
}

/// A session with a content codec seals every packet, so it copies: nothing is spliced.
#[test]
fn a_sealed_session_does_not_splice() {
    let now = Instant::now();
    let mut pair = Pair::new(now);
    let secret = [0x33; 32];
    let protection = PacketProtection::new(
        CipherSuite::ChaCha20Poly1305,
        KeySide::Client,
        &secret,
        &secret,
    )
    .expect("keys");
    pair.a
        .set_content_codec(Some(ContentCodec::new(Some(protection), None)));
    pair.a
        .send(1, OutgoingMessage::data(message(0, 40_000)))
        .expect("send");
    let (mut buf, mut splices) = (Vec::new(), Vec::new());
    let t = pair
        .a
        .poll_transmit_spliced(now, &mut buf, &mut splices, 1)
        .expect("a transmit");
    assert!(splices.is_empty());
    assert_eq!(t.size, buf.len());
    assert!(buf.len() > 40_000, "the sealed payload is in the buffer");
}
