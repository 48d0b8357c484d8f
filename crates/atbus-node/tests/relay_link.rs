//! A plain node's link to a relay: relayed frames are demultiplexed by source after the relay's
//! stamp is checked, and nothing a relay forwards (for some other node) can close the shared
//! link.

use std::time::{Duration, Instant};

use atbus_frame::FrameLimits;
use atbus_node::{
    Direction, LinkId, LinkKind, LinkRole, Node, NodeConfig, NodeEvent, capabilities,
};
use atbus_proto::{
    FrameMessage, HandshakeHello, MessageHead, PacketData, PingData, RelayedHandshakeData,
    frame_message::Body, relayed_handshake_data::Step,
};
use bytes::Bytes;
use proptest::prelude::*;
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

/// Node "a" linked to a router-mode node "relay" over an in-memory byte stream.
fn linked() -> (Instant, Node, LinkId) {
    let now = Instant::now();
    let mut ca = NodeConfig::new("a");
    ca.relays = vec!["relay".into()];
    let mut a = Node::new(ca, now, ChaCha20Rng::seed_from_u64(1)).unwrap();
    let mut cr = NodeConfig::new("relay");
    cr.capabilities |= capabilities::RELAY;
    let mut r = Node::new(cr, now, ChaCha20Rng::seed_from_u64(2)).unwrap();
    let (la, lr) = (a.new_link_id(), r.new_link_id());
    a.handle_link_up(now, la, LinkKind::ByteStream, 65536, Direction::Outbound);
    r.handle_link_up(now, lr, LinkKind::ByteStream, 65536, Direction::Inbound);
    let mut buf = Vec::new();
    for _ in 0..4 {
        while let Some((_, n)) = a.poll_transmit(now, &mut buf) {
            r.handle_link_bytes(now, lr, &buf[..n]);
        }
        while let Some((_, n)) = r.poll_transmit(now, &mut buf) {
            a.handle_link_bytes(now, la, &buf[..n]);
        }
    }
    assert!(r.is_router());
    assert_eq!(a.link_info(la).map(|i| i.role), Some(LinkRole::ToRelay));
    assert_eq!(r.link_info(lr).map(|i| i.role), Some(LinkRole::Routed));
    while a.poll_event().is_some() {}
    (now, a, la)
}

fn package(frame: &FrameMessage) -> Vec<u8> {
    let mut out = Vec::new();
    atbus_frame::encode(frame, &FrameLimits::default(), &mut out).unwrap();
    out
}

fn stamped(source: &str, body: Body) -> FrameMessage {
    FrameMessage {
        head: Some(MessageHead {
            source: source.into(),
            destination: "a".into(),
            forward_for_source: source.into(),
            forward_for_connection_id: 3,
            hop_count: 1,
        }),
        body: Some(body),
    }
}

fn ping() -> Body {
    Body::Ping(PingData {
        ping_id: 1,
        timepoint_microseconds: 0,
    })
}

/// The relayed handshake hello of a node `name` (incarnation `incarnation`), no token.
fn hello(name: &str, incarnation: i64) -> Body {
    Body::RelayedHandshake(RelayedHandshakeData {
        step: Some(Step::Hello(HandshakeHello {
            protocol_version: NodeConfig::new("p").protocol_version,
            node_name: name.into(),
            incarnation_id: incarnation,
            nonce: vec![7u8; 32].into(),
            ..HandshakeHello::default()
        })),
    })
}

/// Relayed handshake steps `a` sent on its link: (destination, step).
fn sent_steps(now: Instant, a: &mut Node) -> Vec<(String, Step)> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while let Some((_, n)) = a.poll_transmit(now, &mut buf) {
        let mut d = atbus_frame::StreamDecoder::new(FrameLimits::default());
        d.feed(&buf[..n]);
        while let Ok(Some(f)) = d.next_frame() {
            if let (Some(h), Some(Body::RelayedHandshake(RelayedHandshakeData { step: Some(s) }))) =
                (f.head, f.body)
            {
                out.push((h.destination, s));
            }
        }
    }
    out
}

#[test]
fn a_stamped_frame_of_an_unknown_source_starts_the_handshake_and_an_unstamped_one_does_not() {
    let (now, mut a, la) = linked();
    // No stamp: not forwarded by a relay.
    let mut unstamped = stamped("x", ping());
    unstamped.head.as_mut().unwrap().hop_count = 0;
    a.handle_link_bytes(now, la, &package(&unstamped));
    // A stamp that does not match the source.
    let mut mismatched = stamped("y", ping());
    mismatched.head.as_mut().unwrap().forward_for_source = "z".into();
    a.handle_link_bytes(now, la, &package(&mismatched));
    // Addressed to someone else.
    let mut elsewhere = stamped("w", ping());
    elsewhere.head.as_mut().unwrap().destination = "b".into();
    a.handle_link_bytes(now, la, &package(&elsewhere));
    assert_eq!(a.peers().count(), 0);
    assert!(sent_steps(now, &mut a).is_empty());
    // A stamped session frame of a peer not verified opens no session: it starts the
    // end-to-end handshake with that peer.
    a.handle_link_bytes(now, la, &package(&stamped("x", ping())));
    assert_eq!(a.peers().count(), 0);
    let steps = sent_steps(now, &mut a);
    assert!(
        matches!(&steps[..], [(to, Step::Hello(h))] if to == "x" && h.incarnation_id == a.incarnation()),
        "{steps:?}"
    );
    // x's own hello (crossing: "a" sorts first, so a stays initiator and ignores it) ...
    a.handle_link_bytes(now, la, &package(&stamped("x", hello("x", 77))));
    assert!(sent_steps(now, &mut a).is_empty());
    // ... while a hello of a peer with no handshake running is answered, and opens the session
    // with the true incarnation.
    a.handle_link_bytes(now, la, &package(&stamped("y", hello("y", 78))));
    let steps = sent_steps(now, &mut a);
    assert!(
        matches!(&steps[..], [(to, Step::HelloReply(h))] if to == "y" && h.node_name == "a"),
        "{steps:?}"
    );
    assert_eq!(a.peers().collect::<Vec<_>>(), ["y"]);
    assert_eq!(a.peer_links("y"), [la]);
    assert_eq!(a.peer_incarnation("y"), Some(78));
    let up = std::iter::from_fn(|| a.poll_event()).find(|e| matches!(e, NodeEvent::PeerUp { .. }));
    assert_eq!(
        up,
        Some(NodeEvent::PeerUp {
            peer: "y".into(),
            incarnation: 78
        })
    );
    // The session answers its ping through the relay link.
    a.handle_link_bytes(now, la, &package(&stamped("y", ping())));
    let mut buf = Vec::new();
    let mut answered = false;
    while let Some((l, n)) = a.poll_transmit(now, &mut buf) {
        answered |= l == la && n > 0;
    }
    assert!(answered);
}

#[test]
fn a_hello_naming_another_node_than_its_source_is_refused() {
    let (now, mut a, la) = linked();
    a.handle_link_bytes(now, la, &package(&stamped("x", hello("y", 5))));
    let steps = sent_steps(now, &mut a);
    assert!(
        matches!(&steps[..], [(to, Step::Refuse(r))] if to == "x" && r.message.contains("authenticated")),
        "{steps:?}"
    );
    assert_eq!(a.peers().count(), 0);
    assert!(
        std::iter::from_fn(|| a.poll_event())
            .any(|e| matches!(e, NodeEvent::RelayedHandshakeFailed { peer, .. } if peer == "x"))
    );
}

#[test]
fn a_forward_error_becomes_an_event() {
    let (now, mut a, la) = linked();
    let error = FrameMessage {
        head: Some(MessageHead {
            source: "relay".into(),
            destination: "a".into(),
            forward_for_source: "relay".into(),
            forward_for_connection_id: 0,
            hop_count: 1,
        }),
        body: Some(Body::ForwardError(atbus_proto::ForwardErrorData {
            code: atbus_proto::AtbusCloseReason::Unreachable as i32,
            destination: "nobody".into(),
            message: "no route".into(),
        })),
    };
    a.handle_link_bytes(now, la, &package(&error));
    let event =
        std::iter::from_fn(|| a.poll_event()).find(|e| matches!(e, NodeEvent::ForwardError { .. }));
    assert_eq!(
        event,
        Some(NodeEvent::ForwardError {
            link: la,
            relay: "relay".into(),
            destination: "nobody".into(),
            code: atbus_proto::AtbusCloseReason::Unreachable,
            message: "no route".into(),
        })
    );
    assert_eq!(a.peers().count(), 0);
}

#[test]
fn a_protocol_error_of_one_relayed_session_keeps_the_link_for_the_others() {
    let (now, mut a, la) = linked();
    a.handle_link_bytes(now, la, &package(&stamped("x", hello("x", 1))));
    a.handle_link_bytes(now, la, &package(&stamped("y", hello("y", 2))));
    assert_eq!(a.peers().count(), 2);
    // x sends a packet with unknown flags: its session closes.
    let bad = Body::Packet(PacketData {
        flags: 0x4000,
        ..PacketData::default()
    });
    a.handle_link_bytes(now, la, &package(&stamped("x", bad)));
    assert_eq!(a.peers().collect::<Vec<_>>(), ["y"]);
    assert_eq!(a.link_peer(la), Some("relay"));
    assert!(
        !std::iter::from_fn(|| a.poll_event()).any(|e| matches!(e, NodeEvent::LinkClosed { .. }))
    );
}

#[derive(Debug, Clone)]
struct Arb {
    source: u8,
    destination: u8,
    stamp: u8,
    hop_count: i32,
    body_field: u8,
    body: Vec<u8>,
    packet: Option<(i64, i64, i32, Vec<u8>)>,
    wait_ms: u16,
}

const NAMES: [&str; 5] = ["x", "y", "a", "relay", ""];

fn arb() -> impl Strategy<Value = Arb> {
    (
        (
            0..NAMES.len() as u8,
            0..NAMES.len() as u8,
            0..NAMES.len() as u8,
        ),
        prop_oneof![Just(0), Just(1), Just(2), any::<i32>()],
        // Any body a relay forwards: everything but handshake (9) and link_close (10), which
        // concern one link and which a relay answers itself.
        (
            prop_oneof![Just(5u8), Just(6), Just(7), Just(8), Just(11), Just(12)],
            proptest::collection::vec(any::<u8>(), 0..200),
        ),
        proptest::option::of((
            prop_oneof![Just(1i64), any::<i64>()],
            prop_oneof![Just(0i64), any::<i64>()],
            prop_oneof![Just(0), any::<i32>()],
            proptest::collection::vec(any::<u8>(), 0..200),
        )),
        0u16..3000,
    )
        .prop_map(
            |((source, destination, stamp), hop_count, (body_field, body), packet, wait_ms)| Arb {
                source,
                destination,
                stamp,
                hop_count,
                body_field,
                body,
                packet,
                wait_ms,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128)
    ))]
    /// Well-framed packages with arbitrary heads and bodies never panic the node and never
    /// close its relay link.
    #[test]
    fn relayed_input_never_closes_the_relay_link(frames in proptest::collection::vec(arb(), 1..30)) {
        let (mut now, mut a, la) = linked();
        let mut buf = Vec::new();
        for f in frames {
            let head = MessageHead {
                source: NAMES[f.source as usize].into(),
                destination: NAMES[f.destination as usize].into(),
                forward_for_source: NAMES[f.stamp as usize].into(),
                forward_for_connection_id: 1,
                hop_count: f.hop_count,
            };
            let mut frame = Vec::new();
            prost::encoding::message::encode(1, &head, &mut frame);
            match f.packet {
                Some((stream_id, offset, flags, content)) => {
                    let packet = PacketData {
                        stream_id,
                        stream_offset: offset,
                        flags,
                        content: Bytes::from(content),
                        ..PacketData::default()
                    };
                    prost::encoding::message::encode(7, &packet, &mut frame);
                }
                None => {
                    prost::encoding::bytes::encode(u32::from(f.body_field), &f.body, &mut frame);
                }
            }
            let mut out = Vec::new();
            atbus_frame::encode_raw(&frame, &FrameLimits::default(), &mut out).unwrap();
            a.handle_link_bytes(now, la, &out);
            now += Duration::from_millis(u64::from(f.wait_ms));
            a.handle_timeout(now, 0);
            while a.poll_transmit(now, &mut buf).is_some() {}
            while a.poll_action().is_some() {}
            while a.poll_event().is_some() {}
            prop_assert_eq!(a.link_peer(la), Some("relay"));
        }
    }
}
