//! Sessions with content protection installed (`Session::set_content_codec`): every packet on
//! the wire is sealed, altered or unsealed packets are dropped and never delivered, nonces are
//! never reused across retransmissions and paths, compression is flagged only above the
//! threshold, the relay-written head fields stay outside the associated data, and frames that
//! do not open keep no path alive.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use atbus_auth::{
    CipherSuite, CompressionConfig, ContentCodec, NonceSpace, PacketProtection, ProtectionLimits,
    SEAL_OVERHEAD, Side as KeySide,
};
use atbus_frame::{DatagramDecoder, FrameLimits, StreamDecoder, encode};
use atbus_netsim::{LinkConfig, Loss};
use atbus_proto::{
    AcknowledgeData, FrameMessage, PacketNumberRange, PingData, StreamAcknowledge,
    frame_message::Body, packet_flags,
};
use atbus_stream::sim::Side;
use atbus_stream::{
    Delivery, Event, KeyUpdateError, OutgoingMessage, PathConfig, PathId, PathKind, ProtocolError,
    Session, SessionConfig,
};
use bytes::Bytes;
use common::World;
use proptest::prelude::*;

const C2S: [u8; 32] = [0x11; 32];
const S2C: [u8; 32] = [0x22; 32];
const MARKER: &[u8] = b"PLAINTEXT-MARKER";

fn codec(
    side: KeySide,
    suite: CipherSuite,
    compression: Option<CompressionConfig>,
) -> ContentCodec {
    ContentCodec::new(
        Some(PacketProtection::new(suite, side, &C2S, &S2C).expect("32-byte secrets")),
        compression,
    )
}

fn protect(a: &mut Session, b: &mut Session, compression: Option<CompressionConfig>) {
    let suite = CipherSuite::ChaCha20Poly1305;
    a.set_content_codec(Some(codec(KeySide::Client, suite, compression)));
    b.set_content_codec(Some(codec(KeySide::Server, suite, compression)));
}

/// Messages of `count` x `len` bytes, each starting with the marker and its index.
fn marked(count: usize, len: usize) -> Vec<Bytes> {
    (0..count)
        .map(|i| {
            let mut m = format!("{}-{i:06}-", String::from_utf8_lossy(MARKER)).into_bytes();
            while m.len() < len {
                m.push(b'a' + (m.len() % 26) as u8);
            }
            m.truncate(len.max(MARKER.len()));
            Bytes::from(m)
        })
        .collect()
}

fn lossy(loss: f64) -> LinkConfig {
    LinkConfig::lossless(Duration::from_millis(10))
        .with_loss(Loss::Random(loss))
        .with_duplicate(0.05)
        .with_reorder(0.05, Duration::from_millis(7))
        .with_jitter(Duration::from_millis(3))
        .with_rate(4_000_000)
}

/// Every package in the captured transmits, decoded, with its sender.
fn captured_frames(w: &World) -> Vec<(Side, FrameMessage)> {
    let mut decoders: BTreeMap<(bool, usize), StreamDecoder> = BTreeMap::new();
    let mut out = Vec::new();
    for (side, index, bytes) in w.pair.capture.as_ref().expect("capture on") {
        if w.pair.paths[*index].kind == PathKind::ByteStream {
            let d = decoders
                .entry((*side == Side::A, *index))
                .or_insert_with(|| StreamDecoder::new(FrameLimits::default()));
            d.feed(bytes);
            while let Some(p) = d.next_package().expect("package") {
                out.push((*side, p.decode().expect("frame")));
            }
        } else {
            for p in DatagramDecoder::new(bytes.clone(), FrameLimits::default()) {
                out.push((*side, p.expect("package").decode().expect("frame")));
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A lossy multi-path run with keys: exactly-once delivery, nothing in clear on the wire, and
/// every (sender, key phase, path id, packet number) sealed once only.
fn sealed_run(seed: u64, loss: f64, paths: usize) {
    sealed_run_with_updates(seed, loss, paths, 0);
}

/// As [`sealed_run`], each direction updating its keys every `update_after` packets (0: the
/// default, no update in a run this short); with updates, both directions must have crossed
/// several phases and the receivers followed.
fn sealed_run_with_updates(seed: u64, loss: f64, paths: usize, update_after: u64) {
    let mut w = World::with_config(seed, |c| {
        if update_after > 0 {
            c.key_update_packets = update_after;
        }
    });
    let kinds = [
        (PathKind::Datagram, 548),
        (PathKind::Datagram, 1224),
        (PathKind::ByteStream, 65535),
    ];
    for &(kind, mtu) in kinds.iter().take(paths) {
        w.add_path(kind, mtu, lossy(loss));
    }
    let (a, b) = (&mut w.pair.a, &mut w.pair.b);
    protect(a, b, None);
    w.pair.capture = Some(Vec::new());
    // With updates, enough data for several round trips: each update waits until the peer
    // confirmed the one before (about one round trip).
    w.plan(1, marked(if update_after > 0 { 600 } else { 150 }, 1500));
    w.plan(2, marked(100, 100));
    assert!(
        w.run(Duration::from_secs(600), false),
        "seed {seed}: did not finish"
    );
    w.assert_exactly_once();
    let mut seen = BTreeSet::new();
    let mut sealed = 0;
    let mut controls = 0;
    for (side, frame) in captured_frames(&w) {
        let p = match frame.body {
            Some(Body::Packet(p)) => p,
            Some(Body::Ping(_) | Body::Pong(_) | Body::Acknowledge(_)) => {
                panic!("seed {seed}: a control frame went out in clear")
            }
            _ => continue,
        };
        let space = NonceSpace::of_flags(p.flags);
        controls += u32::from(space == NonceSpace::Control);
        assert!(
            p.flags & packet_flags::ENCRYPTED != 0,
            "seed {seed}: a packet went out unsealed"
        );
        assert!(
            !contains(&p.content, MARKER),
            "seed {seed}: plaintext on the wire"
        );
        let phase = p.content[0];
        // Stronger than the nonce: no (space, path, number) repeats even across key phases.
        assert!(
            seen.insert((side == Side::A, space, p.path_id, p.packet_number)),
            "seed {seed}: nonce reused: {side:?} phase {phase} {space:?} path {} pn {}",
            p.path_id,
            p.packet_number
        );
        sealed += 1;
    }
    assert!(sealed > 50, "seed {seed}: only {sealed} sealed packets");
    assert!(
        controls > 10,
        "seed {seed}: only {controls} sealed control packets"
    );
    for s in [&w.pair.a, &w.pair.b] {
        let stats = s.content_stats();
        assert!(
            stats.controls_sealed > 0 && stats.controls_opened > 0,
            "{stats:?}"
        );
        assert_eq!(stats.dropped_clear_control, 0);
    }
    let stats = w.pair.b.content_stats();
    assert!(stats.packets_opened > 0);
    if update_after > 0 {
        let (a, b) = (w.pair.a.content_stats(), w.pair.b.content_stats());
        assert!(
            a.key_updates_sent >= 3 && b.key_updates_received >= 3,
            "seed {seed}: a sent {} updates, b followed {}",
            a.key_updates_sent,
            b.key_updates_received
        );
        assert!(b.key_updates_sent >= 1 && a.key_updates_received >= 1);
        let phases: BTreeSet<u8> = captured_frames(&w)
            .iter()
            .filter_map(|(side, f)| match (&f.body, side) {
                (Some(Body::Packet(p)), Side::A) => p.content.first().copied(),
                _ => None,
            })
            .collect();
        assert!(
            phases.len() >= 4,
            "seed {seed}: a's phases on the wire {phases:?}"
        );
    }
    let retransmitted: u64 = [1, 2]
        .iter()
        .map(|&s| w.pair.a.stream_stats(s).bytes_retransmitted)
        .sum();
    if loss >= 0.05 {
        assert!(
            retransmitted > 0,
            "seed {seed}: the run had no retransmission"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    #[test]
    fn nonces_are_never_reused_across_retransmissions_and_paths(
        seed in any::<u64>(),
        loss in prop_oneof![Just(0.05), Just(0.2)],
        paths in 2usize..=3,
    ) {
        sealed_run(seed, loss, paths);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4))]

    /// Key updates every few packets over two or three lossy paths: exactly-once
    /// delivery across several phases, and no (space, path, number) sealed twice in any phase.
    #[test]
    fn key_updates_in_a_long_lossy_multipath_run(
        seed in any::<u64>(),
        loss in prop_oneof![Just(0.05), Just(0.15)],
        paths in 2usize..=3,
        update_after in 4u64..12,
    ) {
        sealed_run_with_updates(seed, loss, paths, update_after);
    }
}

#[test]
fn single_byte_stream_path_is_sealed() {
    sealed_run(7, 0.0, 1);
}

/// Two sessions over one datagram path, pumped by hand so a test can alter what is on the wire.
struct Pair {
    now: Instant,
    a: Session,
    b: Session,
    pa: PathId,
    pb: PathId,
    buf: Vec<u8>,
}

impl Pair {
    fn new(compression: Option<CompressionConfig>) -> Self {
        let now = Instant::now();
        let mut a = Session::new(SessionConfig::new("node-a", "node-b"), now);
        let mut b = Session::new(SessionConfig::new("node-b", "node-a"), now);
        protect(&mut a, &mut b, compression);
        let pa = a
            .add_path(now, PathConfig::new(PathKind::Datagram, 1400))
            .expect("path");
        let pb = b
            .add_path(now, PathConfig::new(PathKind::Datagram, 1400))
            .expect("path");
        Pair {
            now,
            a,
            b,
            pa,
            pb,
            buf: Vec::new(),
        }
    }

    /// Frames `a` sends now.
    fn frames_from_a(&mut self) -> Vec<FrameMessage> {
        let mut out = Vec::new();
        while let Some(t) = self.a.poll_transmit(self.now, &mut self.buf) {
            let bytes = Bytes::copy_from_slice(&self.buf[..t.size]);
            for p in DatagramDecoder::new(bytes, FrameLimits::default()) {
                out.push(p.expect("package").decode().expect("frame"));
            }
        }
        out
    }

    /// Hands `frame` to `b` as it would arrive (re-encoded).
    fn deliver_to_b(&mut self, frame: FrameMessage) -> Result<(), ProtocolError> {
        let mut wire = Vec::new();
        encode(&frame, &FrameLimits::default(), &mut wire).expect("encode");
        let len = wire.len();
        self.b.handle_frame(self.now, self.pb, frame, len)
    }

    /// Moves everything both ways until quiet, advancing time to the next timer a few times.
    fn settle(&mut self) {
        for _ in 0..50 {
            for f in self.frames_from_a() {
                let _ = self.deliver_to_b(f);
            }
            while let Some(t) = self.b.poll_transmit(self.now, &mut self.buf) {
                let bytes = Bytes::copy_from_slice(&self.buf[..t.size]);
                for p in DatagramDecoder::new(bytes, FrameLimits::default()) {
                    let p = p.expect("package");
                    let wire_len = p.wire_len;
                    let _ = self.a.handle_frame(
                        self.now,
                        self.pa,
                        p.decode().expect("frame"),
                        wire_len,
                    );
                }
            }
            let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t > self.now => self.now = t,
                _ => self.now += Duration::from_millis(1),
            }
            self.a.handle_timeout(self.now);
            self.b.handle_timeout(self.now);
        }
    }

    /// Frames `b` sends now.
    fn frames_from_b(&mut self) -> Vec<FrameMessage> {
        let mut out = Vec::new();
        while let Some(t) = self.b.poll_transmit(self.now, &mut self.buf) {
            let bytes = Bytes::copy_from_slice(&self.buf[..t.size]);
            for p in DatagramDecoder::new(bytes, FrameLimits::default()) {
                out.push(p.expect("package").decode().expect("frame"));
            }
        }
        out
    }

    /// Hands `frame` to `a` as it would arrive (re-encoded).
    fn deliver_to_a(&mut self, frame: FrameMessage) -> Result<(), ProtocolError> {
        let mut wire = Vec::new();
        encode(&frame, &FrameLimits::default(), &mut wire).expect("encode");
        let len = wire.len();
        self.a.handle_frame(self.now, self.pa, frame, len)
    }

    fn received(&mut self, stream: i64) -> Vec<Bytes> {
        let mut got = Vec::new();
        while let Some(d) = self.b.read(stream) {
            if let Delivery::Message(m) = d {
                got.push(m.data);
            }
        }
        got
    }
}

/// The stream data packets among `frames` (not the sealed control packets).
fn data_packets(frames: Vec<FrameMessage>) -> Vec<FrameMessage> {
    frames
        .into_iter()
        .filter(|f| {
            matches!(&f.body, Some(Body::Packet(p)) if p.flags & packet_flags::SESSION_CONTROL == 0)
        })
        .collect()
}

fn packet_mut(f: &mut FrameMessage) -> &mut atbus_proto::PacketData {
    match f.body.as_mut() {
        Some(Body::Packet(p)) => p,
        _ => panic!("not a packet"),
    }
}

#[test]
fn a_flipped_bit_anywhere_in_sealed_content_is_dropped_never_delivered() {
    let message = marked(1, 600).remove(0);
    // Every byte position of the sealed content, one run each.
    let len = {
        let mut pair = Pair::new(None);
        pair.a
            .send(1, OutgoingMessage::data(message.clone()))
            .expect("send");
        let frames = data_packets(pair.frames_from_a());
        assert_eq!(frames.len(), 1);
        match &frames[0].body {
            Some(Body::Packet(p)) => p.content.len(),
            _ => unreachable!(),
        }
    };
    for pos in (0..len).step_by(37).chain([len - 1]) {
        let mut pair = Pair::new(None);
        pair.a
            .send(1, OutgoingMessage::data(message.clone()))
            .expect("send");
        let mut frames = data_packets(pair.frames_from_a());
        let p = packet_mut(&mut frames[0]);
        let mut content = p.content.to_vec();
        content[pos] ^= 0x04;
        p.content = content.into();
        pair.deliver_to_b(frames.remove(0))
            .expect("a bad tag is not a protocol error");
        assert!(
            pair.received(1).is_empty(),
            "byte {pos}: altered content delivered"
        );
        assert!(!pair.b.is_closed());
        let stats = pair.b.content_stats();
        assert_eq!(stats.dropped_bad_tag, 1, "byte {pos}");
        assert_eq!(stats.packets_opened, 0);
        // The sender retransmits under a new packet number; the intact copy is delivered once.
        pair.settle();
        assert_eq!(pair.received(1), vec![message.clone()], "byte {pos}");
    }
}

#[test]
fn altered_protected_header_fields_are_dropped() {
    type Alter = fn(&mut FrameMessage);
    let alterations: [(&str, Alter); 5] = [
        ("stream_offset", |f| packet_mut(f).stream_offset += 1),
        ("stream_id", |f| packet_mut(f).stream_id = 2),
        ("packet_number", |f| packet_mut(f).packet_number += 1),
        ("source", |f| {
            if let Some(h) = f.head.as_mut() {
                h.source = "mallory".into();
            }
        }),
        ("COMPRESSED flag", |f| {
            packet_mut(f).flags |= packet_flags::COMPRESSED
        }),
    ];
    for (what, alter) in alterations {
        let mut pair = Pair::new(Some(CompressionConfig::default()));
        pair.a
            .send(1, OutgoingMessage::data(marked(1, 100).remove(0)))
            .expect("send");
        let mut frames = data_packets(pair.frames_from_a());
        alter(&mut frames[0]);
        pair.deliver_to_b(frames.remove(0))
            .expect("dropped, not closed");
        assert!(pair.received(1).is_empty(), "{what}: delivered");
        assert!(pair.received(2).is_empty(), "{what}: delivered");
        assert_eq!(pair.b.content_stats().dropped_bad_tag, 1, "{what}");
        assert!(!pair.b.is_closed(), "{what}");
    }
}

#[test]
fn relay_written_head_fields_may_change() {
    let mut pair = Pair::new(None);
    let message = marked(1, 300).remove(0);
    pair.a
        .send(1, OutgoingMessage::data(message.clone()))
        .expect("send");
    let mut frames = data_packets(pair.frames_from_a());
    let head = frames[0].head.as_mut().expect("head");
    head.forward_for_source = "relay-7".into();
    head.forward_for_connection_id = 99;
    head.hop_count = 3;
    pair.deliver_to_b(frames.remove(0)).expect("opens");
    assert_eq!(pair.received(1), vec![message]);
    assert_eq!(pair.b.content_stats().packets_opened, 1);
}

#[test]
fn unsealed_content_on_a_keyed_session_is_refused() {
    let mut pair = Pair::new(None);
    // A plain session sending as node-a on the same path: what a downgrade would look like.
    let now = pair.now;
    let mut plain = Session::new(SessionConfig::new("node-a", "node-b"), now);
    plain
        .add_path(now, PathConfig::new(PathKind::Datagram, 1400))
        .expect("path");
    plain
        .send(1, OutgoingMessage::data(marked(1, 200).remove(0)))
        .expect("send");
    let mut buf = Vec::new();
    let t = plain.poll_transmit(now, &mut buf).expect("transmit");
    let mut delivered = 0;
    for p in DatagramDecoder::new(
        Bytes::copy_from_slice(&buf[..t.size]),
        FrameLimits::default(),
    ) {
        let frame = p.expect("package").decode().expect("frame");
        if matches!(frame.body, Some(Body::Packet(_))) {
            pair.deliver_to_b(frame).expect("dropped, not closed");
            delivered += 1;
        }
    }
    assert_eq!(delivered, 1);
    assert!(pair.received(1).is_empty());
    assert_eq!(pair.b.content_stats().dropped_refused, 1);
    assert!(!pair.b.is_closed());
}

#[test]
fn integrity_limit_closes_the_session_with_a_reason() {
    let mut pair = Pair::new(None);
    let limits = ProtectionLimits {
        max_packets_per_key: 1 << 20,
        max_failed_opens: 2,
    };
    let suite = CipherSuite::ChaCha20Poly1305;
    pair.b.set_content_codec(Some(ContentCodec::new(
        Some(
            PacketProtection::with_limits(suite, KeySide::Server, &C2S, &S2C, limits)
                .expect("keys"),
        ),
        None,
    )));
    let mut last = Ok(());
    for i in 0..3 {
        pair.a
            .send(1, OutgoingMessage::data(marked(1, 100).remove(0)))
            .expect("send");
        let mut frames = data_packets(pair.frames_from_a());
        let p = packet_mut(&mut frames[0]);
        let mut c = p.content.to_vec();
        c[5] ^= 1;
        p.content = c.into();
        last = pair.deliver_to_b(frames.remove(0));
        if i < 2 {
            assert!(last.is_ok(), "forgery {i} closed the session early");
        }
    }
    assert!(matches!(last, Err(ProtocolError::Content(ref m)) if m.contains("close the session")));
    assert!(pair.b.is_closed());
}

#[test]
fn compressed_flag_only_above_the_threshold() {
    let mut pair = Pair::new(Some(CompressionConfig::default()));
    let small = Bytes::from(vec![b'x'; 100]);
    let large = Bytes::from(b"{\"k\":\"value\"}\n".repeat(80));
    pair.a
        .send(1, OutgoingMessage::data(small.clone()))
        .expect("send");
    pair.a
        .send(2, OutgoingMessage::data(large.clone()))
        .expect("send");
    let frames = data_packets(pair.frames_from_a());
    // Per stream: whether any packet was compressed, and the longest content.
    let mut seen: BTreeMap<i64, (bool, usize)> = BTreeMap::new();
    let mut compressed_on_wire = 0;
    for f in &frames {
        if let Some(Body::Packet(p)) = &f.body {
            let c = p.flags & packet_flags::COMPRESSED != 0;
            compressed_on_wire += u64::from(c);
            let e = seen.entry(p.stream_id).or_default();
            e.0 |= c;
            e.1 = e.1.max(p.content.len());
        }
    }
    let (small_compressed, small_len) = seen[&1];
    let (large_compressed, large_len) = seen[&2];
    assert!(!small_compressed, "content below the threshold compressed");
    assert!(small_len >= small.len() + SEAL_OVERHEAD);
    assert!(large_compressed, "large text not compressed");
    assert!(
        large_len < large.len() / 4,
        "compressed {large_len} of {}",
        large.len()
    );
    assert_eq!(
        pair.a.content_stats().packets_compressed,
        compressed_on_wire
    );
    for f in frames {
        pair.deliver_to_b(f).expect("opens");
    }
    assert_eq!(pair.received(1), vec![small]);
    assert_eq!(pair.received(2), vec![large]);
}

#[test]
fn a_session_without_codec_sends_exactly_what_it_sent_before() {
    // No codec: no flags, content is the plain encoding of the fragments.
    let now = Instant::now();
    let mut a = Session::new(SessionConfig::new("node-a", "node-b"), now);
    a.add_path(now, PathConfig::new(PathKind::Datagram, 1400))
        .expect("path");
    let message = marked(1, 200).remove(0);
    a.send(1, OutgoingMessage::data(message)).expect("send");
    let mut buf = Vec::new();
    let t = a.poll_transmit(now, &mut buf).expect("transmit");
    let mut found = false;
    for p in DatagramDecoder::new(
        Bytes::copy_from_slice(&buf[..t.size]),
        FrameLimits::default(),
    ) {
        if let Some(Body::Packet(p)) = p.expect("package").decode().expect("frame").body {
            assert_eq!(
                p.flags & (packet_flags::ENCRYPTED | packet_flags::COMPRESSED),
                0
            );
            assert!(contains(&p.content, MARKER));
            found = true;
        }
    }
    assert!(found);
    assert_eq!(a.content_stats(), Default::default());
}

/// The sealed control packets among `frames`.
fn control_packets(frames: Vec<FrameMessage>) -> Vec<FrameMessage> {
    frames
        .into_iter()
        .filter(|f| {
            matches!(&f.body, Some(Body::Packet(p)) if p.flags & packet_flags::SESSION_CONTROL != 0)
        })
        .collect()
}

/// Whether a control packet from `b` opens (with `a`'s keys) to an acknowledgement.
fn opens_to_an_ack(frame: &FrameMessage) -> bool {
    use prost::Message;
    let Some(Body::Packet(p)) = &frame.body else {
        return false;
    };
    let mut a = codec(KeySide::Client, CipherSuite::ChaCha20Poly1305, None);
    let header = atbus_auth::ContentHeader::of(frame.head.as_ref(), p);
    let mut plain = Vec::new();
    a.decode(&header, &p.content, &mut plain).is_ok()
        && atbus_proto::SessionControl::decode(&plain[..]).is_ok_and(|c| c.acknowledge.is_some())
}

/// What an on-path attacker would send `a` to make it drop data: an acknowledgement, in
/// clear, of every packet and every byte `a` sent, with `b`'s head.
fn forged_ack(pa: PathId, stream: i64, bytes: i64) -> FrameMessage {
    FrameMessage {
        head: Some(atbus_proto::MessageHead {
            source: "node-b".into(),
            destination: "node-a".into(),
            ..Default::default()
        }),
        body: Some(Body::Acknowledge(AcknowledgeData {
            streams: vec![StreamAcknowledge {
                stream_id: stream,
                acknowledge_offset: bytes,
                received_max_offset: bytes,
                max_stream_offset: bytes + 1_000_000,
                closed: false,
            }],
            path_id: pa.0 as i64,
            received_packets: vec![PacketNumberRange { first: 0, last: 50 }],
            ..Default::default()
        })),
    }
}

#[test]
fn a_forged_ack_in_clear_is_dropped_and_the_data_still_delivered() {
    let mut pair = Pair::new(None);
    let message = marked(1, 900).remove(0);
    pair.a
        .send(1, OutgoingMessage::data(message.clone()))
        .expect("send");
    // The data packets are lost on the way; the attacker acknowledges them in clear.
    let lost = data_packets(pair.frames_from_a());
    assert!(!lost.is_empty());
    let forged = forged_ack(pair.pa, 1, message.len() as i64);
    pair.deliver_to_a(forged)
        .expect("dropped, not a protocol error");
    let stats = pair.a.content_stats();
    assert_eq!(stats.dropped_clear_control, 1, "{stats:?}");
    assert!(
        !pair.a.is_stream_acknowledged(1),
        "the forged ack was applied"
    );
    assert!(
        pair.a.send_buffered() > 0,
        "a dropped data it believes delivered"
    );
    // A clear ping is refused the same way.
    let ping = FrameMessage {
        head: None,
        body: Some(Body::Ping(PingData {
            ping_id: 9,
            timepoint_microseconds: 0,
        })),
    };
    pair.deliver_to_a(ping).expect("dropped");
    assert_eq!(pair.a.content_stats().dropped_clear_control, 2);
    // The sender's loss recovery sends the data again; it arrives once.
    pair.settle();
    assert_eq!(pair.received(1), vec![message]);
    assert!(pair.a.is_stream_acknowledged(1) || pair.a.send_buffered() == 0);
}

#[test]
fn the_same_forged_ack_on_a_plain_session_loses_the_data() {
    // Control experiment: without keys the forgery works, so the test above can fail.
    let now = Instant::now();
    let mut a = Session::new(SessionConfig::new("node-a", "node-b"), now);
    let pa = a
        .add_path(now, PathConfig::new(PathKind::Datagram, 1400))
        .expect("path");
    let message = marked(1, 900).remove(0);
    a.send(1, OutgoingMessage::data(message.clone()))
        .expect("send");
    let mut buf = Vec::new();
    while a.poll_transmit(now, &mut buf).is_some() {}
    let forged = forged_ack(pa, 1, message.len() as i64);
    a.handle_frame(now, pa, forged, 64).expect("applied");
    assert_eq!(
        a.send_buffered(),
        0,
        "the plain sender believes it delivered"
    );
}

#[test]
fn a_flipped_bit_in_a_sealed_ack_is_rejected() {
    for what in ["content", "control number", "path id"] {
        let mut pair = Pair::new(None);
        let message = marked(1, 300).remove(0);
        pair.a
            .send(1, OutgoingMessage::data(message.clone()))
            .expect("send");
        for f in pair.frames_from_a() {
            pair.deliver_to_b(f).expect("opens");
        }
        assert_eq!(pair.received(1), vec![message.clone()]);
        // b's acknowledgement, due after the ack delay.
        pair.now += Duration::from_millis(30);
        pair.b.handle_timeout(pair.now);
        let mut acks: Vec<FrameMessage> = control_packets(pair.frames_from_b())
            .into_iter()
            .filter(opens_to_an_ack)
            .collect();
        assert!(!acks.is_empty(), "{what}: b sent no sealed ack");
        let original = acks[0].clone();
        let p = packet_mut(&mut acks[0]);
        match what {
            "content" => {
                let mut c = p.content.to_vec();
                c[3] ^= 0x10;
                p.content = c.into();
            }
            "control number" => p.packet_number += 1,
            _ => p.path_id += 1,
        }
        pair.deliver_to_a(acks.remove(0)).expect("dropped");
        let stats = pair.a.content_stats();
        assert_eq!(stats.dropped_bad_tag, 1, "{what}: {stats:?}");
        assert_eq!(stats.controls_opened, 0, "{what}");
        assert!(pair.a.send_buffered() > 0, "{what}: altered ack applied");
        // The intact copy opens and is applied once; a replay of it is dropped.
        pair.deliver_to_a(original.clone()).expect("opens");
        assert_eq!(pair.a.content_stats().controls_opened, 1, "{what}");
        assert_eq!(pair.a.send_buffered(), 0, "{what}: intact ack not applied");
        pair.deliver_to_a(original).expect("dropped");
        assert_eq!(pair.a.content_stats().dropped_replayed_control, 1, "{what}");
    }
}

/// Data packets `a` sends for one message now.
fn send_and_capture(pair: &mut Pair, stream: i64, message: &Bytes) -> Vec<FrameMessage> {
    pair.a
        .send(stream, OutgoingMessage::data(message.clone()))
        .expect("send");
    data_packets(pair.frames_from_a())
}

fn phase_of(frame: &FrameMessage) -> u8 {
    match &frame.body {
        Some(Body::Packet(p)) => p.content[0],
        _ => panic!("not a packet"),
    }
}

#[test]
fn key_updates_keep_the_previous_phase_for_a_while_and_drop_older_ones() {
    let mut pair = Pair::new(None);
    let m = marked(5, 200);
    // Phase 0: a packet held back (it will be two phases old).
    let old = send_and_capture(&mut pair, 1, &m[0]);
    assert_eq!(phase_of(&old[0]), 0);
    pair.a.update_keys(pair.now).expect("first update");
    assert_eq!(
        pair.a.update_keys(pair.now),
        Err(KeyUpdateError::NotConfirmed),
        "a second update before the peer confirmed the first"
    );
    // Phase 1 delivered: b follows; a's ping of phase 1 is answered, which confirms.
    pair.settle();
    assert_eq!(pair.received(1), vec![m[0].clone()]);
    assert_eq!(pair.b.key_phases().map(|p| p.1), Some(1));
    assert_eq!(pair.b.content_stats().key_updates_received, 1);
    // Two phase-1 packets held back, then phase 2.
    let late = send_and_capture(&mut pair, 2, &m[1]);
    let later = send_and_capture(&mut pair, 3, &m[2]);
    assert_eq!((phase_of(&late[0]), phase_of(&later[0])), (1, 1));
    pair.a
        .update_keys(pair.now)
        .expect("confirmed: second update");
    for f in send_and_capture(&mut pair, 4, &m[3]) {
        assert_eq!(phase_of(&f), 2);
        pair.deliver_to_b(f).expect("opens");
    }
    assert_eq!(pair.received(4), vec![m[3].clone()]);
    assert_eq!(pair.b.key_phases().map(|p| p.1), Some(2));
    // The previous phase (1) still opens: a reordered packet.
    for f in late {
        pair.deliver_to_b(f).expect("opens");
    }
    assert_eq!(pair.received(2), vec![m[1].clone()]);
    // Two phases ago (0): dropped, counted, the receiver stays at 2.
    let dropped = pair.b.content_stats().dropped_bad_tag;
    pair.deliver_to_b(old[0].clone()).expect("dropped");
    assert_eq!(pair.b.content_stats().dropped_bad_tag, dropped + 1);
    assert_eq!(pair.b.key_phases().map(|p| p.1), Some(2));
    // After about three probe timeouts the previous phase is forgotten too.
    let discard = pair.b.poll_timeout().expect("a timer");
    pair.now += Duration::from_secs(5);
    assert!(discard <= pair.now);
    pair.b.handle_timeout(pair.now);
    let dropped = pair.b.content_stats().dropped_bad_tag;
    for f in later {
        pair.deliver_to_b(f).expect("dropped");
    }
    assert_eq!(pair.b.content_stats().dropped_bad_tag, dropped + 1);
    assert!(pair.received(3).is_empty());
    // Nothing is lost: the dropped data goes out again under phase 2.
    pair.settle();
    assert_eq!(pair.received(3), vec![m[2].clone()]);
    assert!(!pair.a.is_closed() && !pair.b.is_closed());
}

#[test]
fn a_session_without_keys_refuses_key_updates() {
    let now = Instant::now();
    let mut s = Session::new(SessionConfig::new("node-a", "node-b"), now);
    assert_eq!(s.update_keys(now), Err(KeyUpdateError::NoKeys));
    assert_eq!(s.key_phases(), None);
}

/// Sealed frames that do not open never keep a path alive: only packets the session accepts
/// restart the idle timer (RFC 9000 §10.1), so a forger cannot hold a dead path open.
#[test]
fn sealed_frames_that_do_not_open_do_not_keep_a_path_alive() {
    let mut pair = Pair::new(None);
    let idle = SessionConfig::new("node-b", "node-a").path_idle_timeout;
    pair.a
        .send(1, OutgoingMessage::data(marked(1, 300).remove(0)))
        .expect("send");
    let mut frames = data_packets(pair.frames_from_a());
    let p = packet_mut(&mut frames[0]);
    let mut content = p.content.to_vec();
    content[0] ^= 1;
    p.content = content.into();
    let forged = frames.remove(0);
    let start = pair.now;
    let mut dead = None;
    while dead.is_none() && pair.now < start + 2 * idle {
        pair.now += Duration::from_millis(500);
        pair.deliver_to_b(forged.clone())
            .expect("a bad tag is dropped, not a protocol error");
        pair.b.handle_timeout(pair.now);
        while let Some(e) = pair.b.poll_event() {
            if matches!(e, Event::PathDead { path } if path == pair.pb) {
                dead = Some(pair.now);
            }
        }
    }
    let dead = dead.expect("b kept the path alive on frames that never opened");
    assert!(
        dead <= start + idle + Duration::from_secs(1),
        "dead after {:?}",
        dead - start
    );
    assert!(pair.b.content_stats().dropped_bad_tag >= 10);
}
