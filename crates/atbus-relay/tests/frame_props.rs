//! Property test: a relay fed arbitrary input on an authenticated link never panics, keeps its
//! queues within their limits, and accounts for every frame it was handed.

use std::time::{Duration, Instant};

use atbus_frame::FrameLimits;
use atbus_node::{Direction, LinkId, LinkKind, Node, NodeConfig};
use atbus_proto::MessageHead;
use atbus_relay::{Relay, RelayConfig};
use proptest::prelude::*;
use prost::Message;
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

/// A relay with two authenticated plain nodes, "a" (link `ra`) and "b" (link `rb`), and a
/// trusted peer relay "r2" (link `rr`).
struct Setup {
    now: Instant,
    relay: Relay,
    ra: LinkId,
    rb: LinkId,
    rr: LinkId,
}

fn setup() -> Setup {
    let now = Instant::now();
    let mut config = RelayConfig::new("relay");
    config.peer_relays = vec!["r2".into()];
    config.max_queue_frames = 8;
    config.max_queue_bytes = 8 * 1024;
    config.routes.insert("far".into(), "r2".into());
    let mut relay = Relay::new(config, now, ChaCha20Rng::seed_from_u64(1)).unwrap();
    let mut peers = Vec::new();
    for (i, name) in ["a", "b"].into_iter().enumerate() {
        let mut c = NodeConfig::new(name);
        c.relays = vec!["relay".into()];
        peers.push(Node::new(c, now, ChaCha20Rng::seed_from_u64(10 + i as u64)).unwrap());
    }
    let mut r2 = Relay::new(RelayConfig::new("r2"), now, ChaCha20Rng::seed_from_u64(3)).unwrap();
    let mut links = Vec::new();
    for node in peers.iter_mut() {
        let (l, rl) = (node.new_link_id(), relay.new_link_id());
        node.handle_link_up(now, l, LinkKind::ByteStream, 65536, Direction::Outbound);
        relay.handle_link_up(now, rl, LinkKind::ByteStream, 65536, Direction::Inbound);
        links.push((l, rl));
    }
    let (l2, rr) = (r2.new_link_id(), relay.new_link_id());
    r2.handle_link_up(now, l2, LinkKind::ByteStream, 65536, Direction::Outbound);
    relay.handle_link_up(now, rr, LinkKind::ByteStream, 65536, Direction::Inbound);
    let mut buf = Vec::new();
    for _ in 0..8 {
        for (node, &(l, rl)) in peers.iter_mut().zip(&links) {
            while let Some((_, n)) = node.poll_transmit(now, &mut buf) {
                relay.handle_link_bytes(now, rl, &buf[..n]);
            }
            let _ = l;
        }
        while let Some((_, n)) = r2.poll_transmit(now, &mut buf) {
            relay.handle_link_bytes(now, rr, &buf[..n]);
        }
        while let Some((link, n)) = relay.poll_transmit(now, &mut buf) {
            if link == rr {
                r2.handle_link_bytes(now, l2, &buf[..n]);
            }
            for (node, &(l, rl)) in peers.iter_mut().zip(&links) {
                if link == rl {
                    node.handle_link_bytes(now, l, &buf[..n]);
                }
            }
        }
    }
    let (ra, rb) = (links[0].1, links[1].1);
    assert_eq!(relay.link_metrics().len(), 3, "all links up");
    assert!(relay.link_metrics().iter().any(|l| l.link == rr && l.relay));
    Setup {
        now,
        relay,
        ra,
        rb,
        rr,
    }
}

#[derive(Debug, Clone)]
enum Input {
    /// Raw bytes on a link (garbage, or pieces of packages).
    Raw(u8, Vec<u8>),
    /// A valid package around arbitrary frame bytes.
    Frame(u8, Vec<u8>),
    /// A valid package whose frame has a chosen head and arbitrary body fields.
    Headed {
        link: u8,
        source: u8,
        destination: u8,
        forward_for: bool,
        hop_count: i32,
        body_field: u8,
        body: Vec<u8>,
    },
    /// The driver reports a link blocked or writable.
    Block(u8, bool),
    /// Time passes.
    Wait(u16),
}

const NAMES: [&str; 6] = ["a", "b", "relay", "r2", "far", ""];

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(l, b)| Input::Raw(l, b)),
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(l, b)| Input::Frame(l, b)),
        (
            any::<u8>(),
            0..NAMES.len() as u8,
            0..NAMES.len() as u8,
            any::<bool>(),
            prop_oneof![Just(0), Just(1), Just(15), Just(16), Just(-1), any::<i32>()],
            5u8..13,
            proptest::collection::vec(any::<u8>(), 0..600),
        )
            .prop_map(
                |(link, source, destination, forward_for, hop_count, body_field, body)| {
                    Input::Headed {
                        link,
                        source,
                        destination,
                        forward_for,
                        hop_count,
                        body_field,
                        body,
                    }
                }
            ),
        (any::<u8>(), any::<bool>()).prop_map(|(l, b)| Input::Block(l, b)),
        any::<u16>().prop_map(Input::Wait),
    ]
}

fn package(frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    atbus_frame::encode_raw(frame, &FrameLimits::default(), &mut out).unwrap();
    out
}

proptest! {
    // PROPTEST_CASES overrides the count, as everywhere in the workspace.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128)
    ))]
    #[test]
    fn arbitrary_input_never_panics_and_stays_bounded(
        inputs in proptest::collection::vec(input(), 1..40)
    ) {
        let mut s = setup();
        let links = [s.ra, s.rb, s.rr];
        let mut buf = Vec::new();
        for (i, input) in inputs.into_iter().enumerate() {
            match input {
                Input::Raw(l, bytes) => {
                    let link = links[l as usize % 3];
                    s.relay.handle_link_bytes(s.now, link, &bytes);
                }
                Input::Frame(l, frame) => {
                    let link = links[l as usize % 3];
                    s.relay.handle_link_bytes(s.now, link, &package(&frame));
                }
                Input::Headed { link, source, destination, forward_for, hop_count, body_field, body } => {
                    let head = MessageHead {
                        source: NAMES[source as usize].into(),
                        destination: NAMES[destination as usize].into(),
                        forward_for_source: if forward_for { "a".into() } else { String::new() },
                        forward_for_connection_id: 5,
                        hop_count,
                    };
                    let mut frame = Vec::new();
                    prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut frame);
                    prost::encoding::encode_varint(head.encoded_len() as u64, &mut frame);
                    head.encode_raw(&mut frame);
                    prost::encoding::encode_key(u32::from(body_field), prost::encoding::WireType::LengthDelimited, &mut frame);
                    prost::encoding::encode_varint(body.len() as u64, &mut frame);
                    frame.extend_from_slice(&body);
                    let link = links[link as usize % 3];
                    s.relay.handle_link_bytes(s.now, link, &package(&frame));
                }
                Input::Block(l, blocked) => {
                    let link = links[l as usize % 3];
                    if blocked {
                        s.relay.handle_link_blocked(link);
                    } else {
                        s.relay.handle_link_writable(link);
                    }
                }
                Input::Wait(ms) => {
                    s.now += Duration::from_millis(u64::from(ms));
                    s.relay.handle_timeout(s.now, 0);
                }
            }
            for l in s.relay.link_metrics() {
                prop_assert!(l.queued_frames <= 8 && l.queued_bytes <= 8 * 1024, "{l:?}");
            }
            // Drain half the time, so queues also fill.
            if i % 2 == 1 {
                while let Some((_, n)) = s.relay.poll_transmit(s.now, &mut buf) {
                    prop_assert!(n > 0);
                }
            }
            while s.relay.poll_action().is_some() {}
            while s.relay.poll_event().is_some() {}
        }
        // Every frame handed over (and every forward_error the relay wrote) was forwarded,
        // dropped with a reason, or is still queued (a closed link counts its queue as dropped).
        let m = s.relay.metrics().clone();
        let queued: usize = s.relay.link_metrics().iter().map(|l| l.queued_frames).sum();
        prop_assert_eq!(
            m.frames_forwarded + m.drops_total() + queued as u64,
            m.frames_received + m.forward_errors_sent,
            "{:?}, {} queued", m, queued
        );
    }
}

/// The setup above forwards: a frame from "a" to "b" with any body reaches b's link unchanged
/// but for the stamp, and one to "far" goes to the peer relay.
#[test]
fn the_property_setup_forwards_frames() {
    let mut s = setup();
    let head = MessageHead {
        source: "a".into(),
        destination: "b".into(),
        ..MessageHead::default()
    };
    let mut frame = Vec::new();
    prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut frame);
    prost::encoding::encode_varint(head.encoded_len() as u64, &mut frame);
    head.encode_raw(&mut frame);
    // Field 12: a body kind this version does not know; kept byte for byte.
    frame.extend_from_slice(&[0x62, 3, 1, 2, 3]);
    s.relay.handle_link_bytes(s.now, s.ra, &package(&frame));
    let far = MessageHead {
        destination: "far".into(),
        ..head.clone()
    };
    let mut frame2 = Vec::new();
    prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut frame2);
    prost::encoding::encode_varint(far.encoded_len() as u64, &mut frame2);
    far.encode_raw(&mut frame2);
    s.relay.handle_link_bytes(s.now, s.ra, &package(&frame2));
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while let Some((link, n)) = s.relay.poll_transmit(s.now, &mut buf) {
        out.push((link, buf[..n].to_vec()));
    }
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].0, s.rb);
    assert!(out[0].1.windows(5).any(|w| w == [0x62, 3, 1, 2, 3]));
    assert_eq!(out[1].0, s.rr);
    assert_eq!(s.relay.metrics().frames_forwarded, 2);
}
