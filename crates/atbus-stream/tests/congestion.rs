//! Part 2 of the session: congestion control, pacing, min-RTT scheduling across paths, stream
//! priorities and the no-delay mode, measured in virtual time over `atbus-netsim` links.

mod common;

use std::time::{Duration, Instant};

use atbus_frame::{DatagramDecoder, FrameLimits};
use atbus_netsim::{Bytes as SimBytes, Clock, Link, LinkConfig, earliest, for_each_seed};
use atbus_proto::frame_message::Body;
use atbus_stream::{
    Delivery, OutgoingMessage, PathConfig, PathKind, SendError, Session, SessionConfig,
};
use bytes::Bytes;
use common::{World, messages};

/// 10 Mbit/s.
const RATE: u64 = 1_250_000;

fn bottleneck(rate: u64) -> LinkConfig {
    LinkConfig::lossless(Duration::from_millis(20))
        .with_rate(rate)
        .with_queue_limit(64 * 1024)
}

fn bulk(adjust: impl Fn(&mut SessionConfig)) -> impl Fn(&mut SessionConfig) {
    move |c: &mut SessionConfig| {
        c.lossy_path_window = 1024 * 1024;
        c.stream_receive_window = 2 * 1024 * 1024;
        c.session_receive_window = 8 * 1024 * 1024;
        c.stream_send_buffer = 1024 * 1024;
        adjust(c);
    }
}

/// Goodput in bytes/s between `warmup` and `warmup + span` of a world that keeps its sender
/// busy.
fn goodput(w: &mut World, warmup: Duration, span: Duration) -> f64 {
    w.run_for(warmup);
    let before = w.delivered_bytes();
    w.run_for(span);
    (w.delivered_bytes() - before) as f64 / span.as_secs_f64()
}

#[test]
fn single_session_fills_a_lossless_bottleneck() {
    for_each_seed(2, |seed| {
        let mut w = World::with_config(seed, bulk(|_| {}));
        w.add_path(PathKind::Datagram, 1224, bottleneck(RATE));
        w.plan(1, messages(seed, 20_000, 2048));
        let g = goodput(&mut w, Duration::from_secs(2), Duration::from_secs(6));
        // Goodput counts message bytes only; headers take a few percent of each datagram.
        assert!(
            g >= 0.9 * RATE as f64,
            "seed {seed}: goodput {g:.0} B/s < 90 % of {RATE}"
        );
    });
}

#[test]
fn two_paths_of_equal_rate_nearly_double_goodput() {
    for_each_seed(2, |seed| {
        let mut one = World::with_config(seed, bulk(|_| {}));
        one.add_path(PathKind::Datagram, 1224, bottleneck(RATE / 2));
        one.plan(1, messages(seed, 20_000, 2048));
        let g1 = goodput(&mut one, Duration::from_secs(2), Duration::from_secs(6));

        let mut two = World::with_config(seed, bulk(|_| {}));
        two.add_path(PathKind::Datagram, 1224, bottleneck(RATE / 2));
        two.add_path(PathKind::Datagram, 1224, bottleneck(RATE / 2));
        two.plan(1, messages(seed, 20_000, 2048));
        let g2 = goodput(&mut two, Duration::from_secs(2), Duration::from_secs(6));
        assert!(
            g2 >= 1.8 * g1,
            "seed {seed}: two paths {g2:.0} B/s vs one {g1:.0} B/s"
        );
    });
}

/// Two session pairs whose forward traffic crosses one shared bottleneck link.
struct SharedBottleneck {
    clock: Clock,
    senders: Vec<Session>,
    receivers: Vec<Session>,
    sender_paths: Vec<atbus_stream::PathId>,
    receiver_paths: Vec<atbus_stream::PathId>,
    forward: Link,
    reverse: Vec<Link>,
    delivered: Vec<u64>,
    buf: Vec<u8>,
}

impl SharedBottleneck {
    fn new(seed: u64, pairs: usize) -> Self {
        let clock = Clock::new();
        let now = clock.now();
        let mut s = Self {
            senders: Vec::new(),
            receivers: Vec::new(),
            sender_paths: Vec::new(),
            receiver_paths: Vec::new(),
            forward: Link::new(bottleneck(RATE), seed),
            reverse: Vec::new(),
            delivered: vec![0; pairs],
            buf: Vec::new(),
            clock,
        };
        for i in 0..pairs {
            let mut cs = SessionConfig::new(format!("a{i}"), format!("b{i}"));
            let mut cr = SessionConfig::new(format!("b{i}"), format!("a{i}"));
            bulk(|_| {})(&mut cs);
            bulk(|_| {})(&mut cr);
            let mut a = Session::new(cs, now);
            let mut b = Session::new(cr, now);
            s.sender_paths.push(
                a.add_path(now, PathConfig::new(PathKind::Datagram, 1224))
                    .expect("path"),
            );
            s.receiver_paths.push(
                b.add_path(now, PathConfig::new(PathKind::Datagram, 1224))
                    .expect("path"),
            );
            s.senders.push(a);
            s.receivers.push(b);
            s.reverse.push(Link::new(
                LinkConfig::lossless(Duration::from_millis(20)),
                atbus_netsim::derive_seed(seed, 10 + i as u64),
            ));
        }
        s
    }

    fn step(&mut self) {
        let now = self.clock.now();
        let payload = Bytes::from(vec![7u8; 1000]);
        for (i, a) in self.senders.iter_mut().enumerate() {
            loop {
                match a.send(1, OutgoingMessage::data(payload.clone())) {
                    Ok(_) => {}
                    Err(SendError::WouldBlock) => break,
                    Err(e) => panic!("send: {e}"),
                }
            }
            while let Some(t) = a.poll_transmit(now, &mut self.buf) {
                // Tag each datagram with its pair so the far side knows where it goes.
                let mut d = vec![i as u8];
                d.extend_from_slice(&self.buf[..t.size]);
                self.forward.send(now, SimBytes::from(d));
            }
        }
        for (i, b) in self.receivers.iter_mut().enumerate() {
            while let Some(t) = b.poll_transmit(now, &mut self.buf) {
                self.reverse[i].send(now, SimBytes::copy_from_slice(&self.buf[..t.size]));
            }
        }
        while let Some(d) = self.forward.poll_deliver(now) {
            let i = usize::from(d[0]);
            for pkg in DatagramDecoder::new(d.slice(1..), FrameLimits::default()) {
                let pkg = pkg.expect("valid");
                let frame = pkg.decode().expect("frame");
                self.receivers[i]
                    .handle_frame(now, self.receiver_paths[i], frame, pkg.wire_len)
                    .expect("no violation");
            }
        }
        for (i, link) in self.reverse.iter_mut().enumerate() {
            while let Some(d) = link.poll_deliver(now) {
                for pkg in DatagramDecoder::new(d, FrameLimits::default()) {
                    let pkg = pkg.expect("valid");
                    let frame = pkg.decode().expect("frame");
                    self.senders[i]
                        .handle_frame(now, self.sender_paths[i], frame, pkg.wire_len)
                        .expect("no violation");
                }
            }
        }
        for (i, b) in self.receivers.iter_mut().enumerate() {
            while let Some(Delivery::Message(m)) = b.read(1) {
                self.delivered[i] += m.data.len() as u64;
            }
            while b.poll_event().is_some() {}
        }
        for a in &mut self.senders {
            while a.poll_event().is_some() {}
        }
        let wake = earliest(
            self.senders
                .iter()
                .chain(&self.receivers)
                .map(Session::poll_timeout)
                .chain([self.forward.poll_timeout()])
                .chain(self.reverse.iter().map(Link::poll_timeout)),
        )
        .unwrap_or(now + Duration::from_millis(1))
        .max(now + Duration::from_micros(10));
        self.clock.advance_to(wake);
        let now = self.clock.now();
        for s in self.senders.iter_mut().chain(self.receivers.iter_mut()) {
            s.handle_timeout(now);
        }
    }

    fn run_until(&mut self, until: Instant) {
        while self.clock.now() < until {
            self.step();
        }
    }
}

#[test]
fn two_sessions_share_a_bottleneck_fairly() {
    for_each_seed(2, |seed| {
        let mut w = SharedBottleneck::new(seed, 2);
        let start = w.clock.now();
        w.run_until(start + Duration::from_secs(5));
        let before = w.delivered.clone();
        w.run_until(start + Duration::from_secs(25));
        let got: Vec<f64> = w
            .delivered
            .iter()
            .zip(&before)
            .map(|(a, b)| (a - b) as f64)
            .collect();
        let total: f64 = got.iter().sum();
        for (i, g) in got.iter().enumerate() {
            let share = g / total;
            assert!(
                (0.4..=0.6).contains(&share),
                "seed {seed}: pair {i} got {:.1} % of the bottleneck",
                share * 100.0
            );
        }
        let utilisation = total / 20.0 / RATE as f64;
        assert!(
            utilisation > 0.85,
            "seed {seed}: the two together use {:.1} %",
            utilisation * 100.0
        );
    });
}

#[test]
fn retransmissions_prefer_another_path() {
    for_each_seed(2, |seed| {
        let mut w = World::with_config(seed, bulk(|_| {}));
        w.add_path(
            PathKind::Datagram,
            1224,
            bottleneck(RATE / 2).with_loss(atbus_netsim::Loss::Random(0.1)),
        );
        w.add_path(PathKind::Datagram, 1224, bottleneck(RATE / 2));
        w.plan(1, messages(seed, 3000, 1000));
        assert!(
            w.run(Duration::from_secs(120), false),
            "seed {seed}: transfer finished"
        );
        w.assert_exactly_once();
        let lossy = w.a.path_stats(w.paths[0].a).expect("path");
        let clean = w.a.path_stats(w.paths[1].a).expect("path");
        assert!(lossy.bytes_retransmitted > 0);
        assert!(
            clean.bytes_retransmitted_sent > lossy.bytes_retransmitted_sent,
            "seed {seed}: lossy path resent {} B itself, clean path {} B",
            lossy.bytes_retransmitted_sent,
            clean.bytes_retransmitted_sent
        );
    });
}

/// The stream ids of the packets in one transmit.
fn streams_in(buf: &[u8]) -> Vec<i64> {
    DatagramDecoder::new(Bytes::copy_from_slice(buf), FrameLimits::default())
        .filter_map(|p| match p.ok()?.decode().ok()?.body {
            Some(Body::Packet(pd)) => Some(pd.stream_id),
            _ => None,
        })
        .collect()
}

#[test]
fn higher_priority_goes_first_and_equal_priorities_share() {
    let now = Instant::now();
    let mut s = Session::new(SessionConfig::new("a", "b"), now);
    s.add_path(now, PathConfig::new(PathKind::Datagram, 1224))
        .expect("path");
    for stream in [1, 2] {
        for _ in 0..20 {
            s.send(stream, OutgoingMessage::data(vec![1u8; 1000]))
                .expect("send");
        }
    }
    s.send(9, OutgoingMessage::data(vec![2u8; 100]))
        .expect("send");
    s.set_priority(9, 10);
    let mut buf = Vec::new();
    let mut order = Vec::new();
    while let Some(t) = s.poll_transmit(now, &mut buf) {
        order.extend(streams_in(&buf[..t.size]));
        if order.len() >= 7 {
            break;
        }
    }
    assert_eq!(
        order.first(),
        Some(&9),
        "the priority stream goes first: {order:?}"
    );
    let rest = &order[1..];
    let ones = rest.iter().filter(|&&id| id == 1).count();
    let twos = rest.iter().filter(|&&id| id == 2).count();
    assert!(
        ones.abs_diff(twos) <= 1,
        "equal priorities alternate: {order:?}"
    );
}

fn ack_after_one_packet(no_delay: bool) -> bool {
    let now = Instant::now();
    let mut cfg = SessionConfig::new("b", "a");
    cfg.no_delay = no_delay;
    let mut a = Session::new(SessionConfig::new("a", "b"), now);
    let mut b = Session::new(cfg, now);
    a.add_path(now, PathConfig::new(PathKind::Datagram, 1224))
        .expect("path");
    let pb = b
        .add_path(now, PathConfig::new(PathKind::Datagram, 1224))
        .expect("path");
    // Let the pings of both sides go out first.
    let mut buf = Vec::new();
    while b.poll_transmit(now, &mut buf).is_some() {}
    while a.poll_transmit(now, &mut buf).is_some() {}
    a.send(1, OutgoingMessage::data(&b"x"[..])).expect("send");
    let t = a.poll_transmit(now, &mut buf).expect("a packet");
    for pkg in DatagramDecoder::new(
        Bytes::copy_from_slice(&buf[..t.size]),
        FrameLimits::default(),
    ) {
        let pkg = pkg.expect("valid");
        b.handle_frame(now, pb, pkg.decode().expect("frame"), pkg.wire_len)
            .expect("ok");
    }
    let mut acked = false;
    while let Some(t) = b.poll_transmit(now, &mut buf) {
        acked |= DatagramDecoder::new(
            Bytes::copy_from_slice(&buf[..t.size]),
            FrameLimits::default(),
        )
        .filter_map(|p| p.ok()?.decode().ok())
        .any(|f| matches!(f.body, Some(Body::Acknowledge(ref a)) if a.path_id >= 0));
    }
    acked
}

#[test]
fn no_delay_acknowledges_at_once() {
    assert!(
        ack_after_one_packet(true),
        "no-delay acks the first packet immediately"
    );
    assert!(
        !ack_after_one_packet(false),
        "default mode waits for a second packet or the delay"
    );
}

#[test]
fn no_delay_recovers_faster_under_loss() {
    // One-way message latency under 10 % loss: no-delay must not be slower than the default.
    let run = |no_delay: bool| {
        let mut w = World::with_config(3, bulk(move |c| c.no_delay = no_delay));
        w.add_path(
            PathKind::Datagram,
            1224,
            LinkConfig::lossless(Duration::from_millis(20))
                .with_loss(atbus_netsim::Loss::Random(0.1)),
        );
        w.plan(1, messages(3, 300, 200));
        let start = w.clock.now();
        assert!(w.run(Duration::from_secs(60), false));
        w.assert_exactly_once();
        w.clock.now() - start
    };
    let fast = run(true);
    let normal = run(false);
    assert!(fast <= normal, "no-delay {fast:?} vs default {normal:?}");
}
