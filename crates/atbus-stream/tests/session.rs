//! Behaviour of the session API: errors, finish, reset, skip, close, backpressure, statistics and
//! protocol violations.

mod common;

use std::time::{Duration, Instant};

use atbus_netsim::LinkConfig;
use atbus_proto::{
    AtbusCloseReason, FrameMessage, MessageHead, PacketContent, PacketData, frame_message::Body,
    packet_content::FragmentType, packet_flags,
};
use atbus_stream::{
    Delivery, Event, OutgoingMessage, PathConfig, PathError, PathKind, ProtocolError, SendError,
    Session, SessionConfig,
};
use bytes::Bytes;
use common::{World, messages};
use prost::Message;

fn pair() -> World {
    let mut w = World::new(1);
    w.add_path(
        PathKind::Datagram,
        1224,
        LinkConfig::lossless(Duration::from_millis(5)),
    );
    w
}

#[test]
fn send_errors_are_typed() {
    let now = Instant::now();
    let mut s = Session::new(SessionConfig::new("a", "b"), now);
    assert_eq!(
        s.send(1, OutgoingMessage::data(Bytes::new())),
        Err(SendError::EmptyMessage)
    );
    assert_eq!(
        s.send(-1, OutgoingMessage::data(&b"x"[..])),
        Err(SendError::InvalidStreamId(-1))
    );
    let big = Bytes::from(vec![0u8; s.config().stream_send_buffer + 1]);
    assert!(matches!(
        s.send(1, OutgoingMessage::data(big)),
        Err(SendError::MessageTooLarge { .. })
    ));
    s.finish(1).expect("finish");
    assert_eq!(
        s.send(1, OutgoingMessage::data(&b"x"[..])),
        Err(SendError::StreamClosed(1))
    );
    assert_eq!(s.finish(1), Err(SendError::StreamClosed(1)));
}

#[test]
fn path_mtu_too_small_is_refused() {
    let now = Instant::now();
    let mut s = Session::new(SessionConfig::new("a", "b"), now);
    let err = s
        .add_path(now, PathConfig::new(PathKind::Datagram, 100))
        .expect_err("too small");
    assert!(matches!(err, PathError::MtuTooSmall { mtu: 100, .. }));
    assert!(
        s.add_path(now, PathConfig::new(PathKind::Datagram, 548))
            .is_ok()
    );
    assert!(matches!(
        s.remove_path(atbus_stream::PathId(99)),
        Err(PathError::UnknownPath(_))
    ));
}

#[test]
fn would_block_then_writable() {
    let mut w = pair();
    let msg = Bytes::from(vec![1u8; 60 * 1024]);
    w.a.send(1, OutgoingMessage::data(msg.clone()))
        .expect("first fits");
    for _ in 0..3 {
        w.a.send(1, OutgoingMessage::data(msg.clone()))
            .expect("fits");
    }
    assert_eq!(
        w.a.send(1, OutgoingMessage::data(msg.clone())),
        Err(SendError::WouldBlock)
    );
    w.streams.entry(1).or_default();
    // Let the transfer run: the sender's buffer drains as acks come back.
    assert!(w.run(Duration::from_secs(5), false));
    let writable = w.events_a.contains(&Event::Writable { stream_id: 1 });
    assert!(
        writable,
        "Writable follows WouldBlock once acks free the buffer"
    );
    assert!(w.a.send(1, OutgoingMessage::data(msg)).is_ok());
}

#[test]
fn finish_is_reported_on_both_sides() {
    let mut w = pair();
    w.plan(4, messages(4, 20, 500));
    assert!(w.run(Duration::from_secs(10), false));
    w.a.finish(4).expect("finish");
    w.run_for(Duration::from_millis(500));
    assert!(
        w.events_b.contains(&Event::StreamFinished { stream_id: 4 }),
        "{:?}",
        w.events_b
    );
    assert!(
        w.events_a
            .contains(&Event::StreamAcknowledged { stream_id: 4 }),
        "{:?}",
        w.events_a
    );
    w.assert_exactly_once();
}

#[test]
fn reset_reports_undelivered_as_skipped() {
    let mut w = World::new(2);
    // A slow path so data is still in flight when the stream is reset.
    w.add_path(
        PathKind::Datagram,
        1224,
        LinkConfig::lossless(Duration::from_millis(50)).with_rate(200_000),
    );
    w.plan(1, messages(2, 100, 1000));
    w.run_for(Duration::from_millis(120));
    let dropped = w.a.reset(1).expect("reset");
    assert!(dropped.is_some(), "some data was still unacknowledged");
    assert_eq!(w.a.reset(1), Err(SendError::StreamClosed(1)));
    assert!(
        w.run(Duration::from_secs(30), false),
        "reset stream settles"
    );
    w.assert_exactly_once_or_skipped();
    let plan = &w.streams[&1];
    assert!(
        plan.skipped_bytes > 0,
        "the receiver reported the dropped messages as skipped"
    );
    assert!(
        w.events_b
            .iter()
            .any(|e| matches!(e, Event::StreamReset { stream_id: 1, .. }))
    );
}

#[test]
fn skip_lands_on_message_boundaries() {
    let mut w = World::new(3);
    w.add_path(
        PathKind::Datagram,
        548,
        LinkConfig::lossy(Duration::from_millis(30), 0.2).with_rate(300_000),
    );
    let msgs = messages(3, 400, 800);
    w.plan(2, msgs);
    w.run_for(Duration::from_millis(100));
    let plan = &w.streams[&2];
    // The last queued message is certainly not acknowledged yet.
    let boundary = *plan.sent_offsets.last().expect("sent some");
    assert_eq!(
        w.a.skip(2, boundary + 1),
        Err(SendError::NotAMessageBoundary(boundary + 1))
    );
    let skipped = w.a.skip(2, boundary).expect("skip");
    assert!(skipped.is_some_and(|r| r.end == boundary));
    assert!(
        w.run(Duration::from_secs(60), false),
        "stream settles after the skip"
    );
    w.assert_exactly_once_or_skipped();
    assert!(w.a.stream_stats(2).bytes_skipped > 0);
}

#[test]
fn close_reaches_the_peer_with_its_reason() {
    let mut w = pair();
    w.plan(1, messages(1, 5, 100));
    assert!(w.run(Duration::from_secs(5), false));
    w.a.close(AtbusCloseReason::Shutdown as i32, "maintenance");
    assert!(w.a.is_closed());
    assert_eq!(w.a.poll_timeout(), None, "a closed session has no timers");
    assert_eq!(
        w.a.send(1, OutgoingMessage::data(&b"x"[..])),
        Err(SendError::SessionClosed)
    );
    w.run_for(Duration::from_millis(100));
    assert!(w.b.is_closed());
    let closed = w.events_b.iter().find_map(|e| match e {
        Event::Closed { reason, by_peer } => Some((reason.clone(), *by_peer)),
        _ => None,
    });
    let (reason, by_peer) = closed.expect("peer saw the close");
    assert!(by_peer);
    assert_eq!(reason.code, AtbusCloseReason::Shutdown as i32);
    assert_eq!(reason.message, "maintenance");
}

#[test]
fn statistics_count_rtt_and_retransmissions() {
    let mut w = World::new(5);
    w.add_path(
        PathKind::Datagram,
        1224,
        LinkConfig::lossy(Duration::from_millis(20), 0.1),
    );
    w.plan(1, messages(5, 200, 1000));
    assert!(w.run(Duration::from_secs(60), false));
    let stats = w.a.path_stats(w.paths[0].a).expect("path");
    assert!(
        stats.packets_lost > 0 && stats.bytes_retransmitted > 0,
        "{stats:?}"
    );
    // One-way latency 20 ms: RTT around 40 ms plus ack delay.
    assert!(
        (35_000..80_000).contains(&stats.smoothed_rtt_us),
        "{stats:?}"
    );
    let s = w.b.stream_stats(1);
    assert_eq!(s.messages_received, 200);
    assert!(w.a.stream_stats(1).bytes_retransmitted > 0);
}

fn frame(packet: PacketData) -> FrameMessage {
    FrameMessage {
        head: Some(MessageHead::default()),
        body: Some(Body::Packet(packet)),
    }
}

fn violation(packet: PacketData) -> ProtocolError {
    let now = Instant::now();
    let mut s = Session::new(SessionConfig::new("a", "b"), now);
    let p = s
        .add_path(now, PathConfig::new(PathKind::Datagram, 1224))
        .expect("path");
    let err = s
        .handle_frame(now, p, frame(packet), 0)
        .expect_err("violation");
    assert!(s.is_closed(), "a protocol violation closes the session");
    let closed = std::iter::from_fn(|| s.poll_event()).any(|e| {
        matches!(e, Event::Closed { reason, by_peer: false } if reason.code == AtbusCloseReason::ProtocolError as i32)
    });
    assert!(closed);
    err
}

fn content(data: &'static [u8]) -> Bytes {
    PacketContent {
        fragment: vec![FragmentType {
            data: Bytes::from_static(data),
            ..Default::default()
        }],
    }
    .encode_to_vec()
    .into()
}

#[test]
fn protocol_violations_close_the_session() {
    assert_eq!(
        violation(PacketData {
            stream_id: -1,
            content: content(b"x"),
            ..Default::default()
        }),
        ProtocolError::Negative("stream_id")
    );
    assert_eq!(
        violation(PacketData {
            flags: 1 << 20,
            ..Default::default()
        }),
        ProtocolError::UnknownFlags(1 << 20)
    );
    assert!(matches!(
        violation(PacketData {
            content: Bytes::from_static(b"\xff\xff"),
            ..Default::default()
        }),
        ProtocolError::BadContent(_)
    ));
    assert!(matches!(
        violation(PacketData {
            stream_offset: 10 << 20,
            content: content(b"x"),
            ..Default::default()
        }),
        ProtocolError::CreditExceeded { .. }
    ));
    assert_eq!(
        violation(PacketData {
            flags: packet_flags::ENCRYPTED,
            ..Default::default()
        }),
        ProtocolError::NoKeys
    );
}

#[test]
fn too_many_streams_is_a_violation() {
    let now = Instant::now();
    let mut config = SessionConfig::new("a", "b");
    config.max_streams = 2;
    let mut s = Session::new(config, now);
    let p = s
        .add_path(now, PathConfig::new(PathKind::Datagram, 1224))
        .expect("path");
    for id in 0..2 {
        let pd = PacketData {
            stream_id: id,
            content: content(b"x"),
            packet_number: id,
            ..Default::default()
        };
        s.handle_frame(now, p, frame(pd), 0).expect("within limit");
    }
    let pd = PacketData {
        stream_id: 9,
        content: content(b"x"),
        packet_number: 9,
        ..Default::default()
    };
    assert_eq!(
        s.handle_frame(now, p, frame(pd), 0),
        Err(ProtocolError::TooManyStreams(2))
    );
}

#[test]
fn late_duplicates_of_a_finished_stream_are_ignored() {
    let now = Instant::now();
    let mut s = Session::new(SessionConfig::new("a", "b"), now);
    let p = s
        .add_path(now, PathConfig::new(PathKind::Datagram, 1224))
        .expect("path");
    let pd = PacketData {
        stream_id: 3,
        content: content(b"hi"),
        flags: packet_flags::FINISH_STREAM,
        ..Default::default()
    };
    s.handle_frame(now, p, frame(pd.clone()), 0).expect("ok");
    assert!(matches!(s.read(3), Some(Delivery::Message(m)) if &m.data[..] == b"hi"));
    assert!(s.read(3).is_none());
    assert!(
        std::iter::from_fn(|| s.poll_event()).any(|e| e == Event::StreamFinished { stream_id: 3 })
    );
    // The same packet again (a late duplicate): nothing is delivered twice, the stream stays closed.
    s.handle_frame(
        now,
        p,
        frame(PacketData {
            packet_number: 1,
            ..pd
        }),
        0,
    )
    .expect("ignored");
    assert!(s.read(3).is_none());
}

#[test]
fn path_silent_past_the_idle_timeout_is_dead() {
    let now = Instant::now();
    let mut config = SessionConfig::new("a", "b");
    config.path_idle_timeout = Duration::from_secs(3);
    let mut s = Session::new(config, now);
    let p = s
        .add_path(now, PathConfig::new(PathKind::Datagram, 1224))
        .expect("path");
    s.handle_timeout(now + Duration::from_secs(2));
    assert_eq!(s.paths().count(), 1);
    s.handle_timeout(now + Duration::from_secs(3));
    assert_eq!(s.paths().count(), 0);
    assert_eq!(s.poll_event(), Some(Event::PathDead { path: p }));
}

#[test]
fn every_datagram_fits_its_path_mtu() {
    for mtu in [548usize, 1224, 1500] {
        let mut w = World::new(mtu as u64);
        w.add_path(
            PathKind::Datagram,
            mtu,
            LinkConfig::lossless(Duration::from_millis(2)),
        );
        w.add_path(
            PathKind::Relayed,
            mtu,
            LinkConfig::lossless(Duration::from_millis(4)),
        );
        w.plan(1, messages(9, 50, 5000));
        assert!(w.run(Duration::from_secs(20), false));
        assert!(w.max_package_seen <= mtu, "{} > {mtu}", w.max_package_seen);
        assert!(
            w.max_package_seen + 300 > mtu,
            "packets use the MTU: {}",
            w.max_package_seen
        );
    }
}

/// A session whose peer overruns the session window (credit is per stream, so a peer can):
/// byte-stream paths accept the frame already read and ask the driver to pause reading;
/// datagram paths drop it unacknowledged.
fn overrun(kind: PathKind) -> (Session, atbus_stream::PathId, Vec<Event>) {
    let now = Instant::now();
    let mut config = SessionConfig::new("a", "b");
    config.session_receive_window = 4096;
    let mut s = Session::new(config, now);
    let p = s.add_path(now, PathConfig::new(kind, 65535)).expect("path");
    let mut events = Vec::new();
    for i in 0..4i64 {
        let data = vec![i as u8; 2000];
        let content: Bytes = PacketContent {
            fragment: vec![FragmentType {
                data: Bytes::from(data),
                ..Default::default()
            }],
        }
        .encode_to_vec()
        .into();
        let pd = PacketData {
            stream_id: i,
            content,
            packet_number: i,
            ..Default::default()
        };
        s.handle_frame(now, p, frame(pd), 0)
            .expect("not a violation");
        events.extend(std::iter::from_fn(|| s.poll_event()));
    }
    (s, p, events)
}

#[test]
fn byte_stream_overrun_pauses_reading_then_resumes() {
    let (mut s, p, events) = overrun(PathKind::ByteStream);
    assert!(
        events.contains(&Event::PauseReading { path: p }),
        "{events:?}"
    );
    // The frame already read was kept: the limit is exceeded by at most one frame.
    assert!(s.receive_buffered() > 4096 && s.receive_buffered() <= 4096 + 2 * 2000);
    // The application reads: buffer drains, reading resumes.
    for i in 0..4 {
        while s.read(i).is_some() {}
    }
    let after: Vec<Event> = std::iter::from_fn(|| s.poll_event()).collect();
    assert!(
        after.contains(&Event::ResumeReading { path: p }),
        "{after:?}"
    );
}

#[test]
fn datagram_overrun_drops_without_acknowledging() {
    let (mut s, _p, events) = overrun(PathKind::Datagram);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::PauseReading { .. }))
    );
    assert!(
        s.receive_buffered() <= 4096,
        "nothing beyond the window is kept"
    );
    // The acknowledgement must not cover the dropped packets (numbers 2 and 3 here).
    let mut buf = Vec::new();
    let mut acked = Vec::new();
    let later = Instant::now() + Duration::from_millis(50);
    s.handle_timeout(later);
    while let Some(t) = s.poll_transmit(later, &mut buf) {
        for pkg in atbus_frame::DatagramDecoder::new(
            Bytes::copy_from_slice(&buf[..t.size]),
            Default::default(),
        ) {
            if let Ok(Some(Body::Acknowledge(a))) = pkg.and_then(|p| p.decode()).map(|f| f.body) {
                for r in a.received_packets {
                    acked.extend(r.first..=r.last);
                }
            }
        }
    }
    acked.sort_unstable();
    acked.dedup();
    assert_eq!(acked, vec![0, 1], "only accepted packets are acknowledged");
}

#[test]
fn a_message_of_nearly_the_whole_window_after_small_ones_is_delivered() {
    // Small messages move the read offset by less than a quarter window, then one message of
    // nearly the whole window follows: the reader must top up credit when it runs dry.
    let mut w = World::with_config(11, |c| {
        c.stream_receive_window = 64 * 1024;
        c.session_receive_window = 1024 * 1024;
    });
    w.add_path(
        PathKind::ByteStream,
        65535,
        LinkConfig::lossless(Duration::from_millis(2)),
    );
    let mut msgs: Vec<Bytes> = (0..10).map(|i| Bytes::from(vec![i as u8; 1000])).collect();
    msgs.push(Bytes::from(vec![0xab; 63 * 1024]));
    msgs.push(Bytes::from(vec![0xcd; 64 * 1024]));
    w.plan(1, msgs);
    assert!(
        w.run(Duration::from_secs(10), false),
        "large messages stalled on credit"
    );
    w.assert_exactly_once();
}

/// Over a byte stream, every message that fits one package is handed to the reader as a slice of
/// the very buffer the package was decoded into: no payload copy after the stream decoder.
#[test]
fn messages_arriving_in_one_piece_are_not_copied() {
    use atbus_frame::{FrameLimits, StreamDecoder};

    let mut now = Instant::now();
    let mut a = Session::new(SessionConfig::new("a", "b"), now);
    let mut b = Session::new(SessionConfig::new("b", "a"), now);
    let pa = a
        .add_path(now, PathConfig::new(PathKind::ByteStream, 65_535))
        .expect("path");
    let pb = b
        .add_path(now, PathConfig::new(PathKind::ByteStream, 65_535))
        .expect("path");
    // Sizes that pack several to a package, so some would straddle two packages if cut.
    let sizes = [64usize, 1000, 60_000, 64, 30_000, 40_000, 7, 65_000];
    let sent: Vec<Bytes> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| Bytes::from((0..n).map(|j| (i * 31 + j) as u8).collect::<Vec<_>>()))
        .collect();
    for m in &sent {
        a.send(1, OutgoingMessage::data(m.clone())).expect("room");
    }
    let (mut ab, mut ba) = (
        StreamDecoder::new(FrameLimits::default()),
        StreamDecoder::new(FrameLimits::default()),
    );
    let mut buf = Vec::new();
    // Every decoded package buffer, kept alive so its address range stays unique.
    let mut packages: Vec<Bytes> = Vec::new();
    let mut received = Vec::new();
    for _ in 0..100 {
        while let Some(t) = a.poll_transmit(now, &mut buf) {
            ab.feed(&buf[..t.size]);
            while let Some(p) = ab.next_package().expect("valid") {
                packages.push(p.frame.clone());
                let wire = p.wire_len;
                b.handle_frame(now, pb, p.into_frame().expect("frame"), wire)
                    .expect("ok");
            }
        }
        while let Some(Delivery::Message(m)) = b.read(1) {
            received.push(m.data);
        }
        while let Some(t) = b.poll_transmit(now, &mut buf) {
            ba.feed(&buf[..t.size]);
            while let Some(p) = ba.next_package().expect("valid") {
                let wire = p.wire_len;
                a.handle_frame(now, pa, p.into_frame().expect("frame"), wire)
                    .expect("ok");
            }
        }
        if received.len() == sent.len() {
            break;
        }
        now += Duration::from_millis(20);
        a.handle_timeout(now);
        b.handle_timeout(now);
    }
    assert_eq!(received, sent);
    assert!(packages.len() >= 3, "the messages needed several packages");
    for (i, m) in received.iter().enumerate() {
        let start = m.as_ptr();
        let end = start.wrapping_add(m.len());
        assert!(
            packages.iter().any(|p| {
                let range = p.as_ptr_range();
                range.start <= start && end <= range.end
            }),
            "message {i} ({} bytes) was copied out of its package",
            m.len()
        );
    }
}
