//! Shared by the `forward` bench and the `forward_profile` example: a relay with two
//! authenticated plain links and a batch of packages from one node to the other.

use std::time::Instant;

use atbus_frame::FrameLimits;
use atbus_node::{Direction, LinkId, LinkKind, Node, NodeConfig};
use atbus_proto::{FrameMessage, MessageHead, PacketData, frame_message::Body};
use atbus_relay::{Relay, RelayConfig};
use bytes::Bytes;
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

/// A relay with authenticated links from "a" and "b"; returns it and its ids of both links.
pub fn relay() -> (Instant, Relay, LinkId, LinkId) {
    let now = Instant::now();
    let mut relay = Relay::new(
        RelayConfig::new("relay"),
        now,
        ChaCha20Rng::seed_from_u64(1),
    )
    .expect("config");
    let mut ids = Vec::new();
    let mut nodes = Vec::new();
    for (i, name) in ["a", "b"].into_iter().enumerate() {
        let mut c = NodeConfig::new(name);
        c.relays = vec!["relay".into()];
        let mut n = Node::new(c, now, ChaCha20Rng::seed_from_u64(2 + i as u64)).expect("config");
        let (l, rl) = (n.new_link_id(), relay.new_link_id());
        n.handle_link_up(now, l, LinkKind::ByteStream, 1 << 20, Direction::Outbound);
        relay.handle_link_up(now, rl, LinkKind::ByteStream, 1 << 20, Direction::Inbound);
        nodes.push((n, l, rl));
        ids.push(rl);
    }
    let mut buf = Vec::new();
    for _ in 0..4 {
        for (n, l, rl) in nodes.iter_mut() {
            while let Some((_, len)) = n.poll_transmit(now, &mut buf) {
                relay.handle_link_bytes(now, *rl, &buf[..len]);
            }
            while let Some((link, len)) = relay.poll_transmit(now, &mut buf) {
                if link == *rl {
                    n.handle_link_bytes(now, *l, &buf[..len]);
                }
            }
        }
    }
    // Drain the handshake leftovers of the other link too.
    while relay.poll_transmit(now, &mut buf).is_some() {}
    assert_eq!(relay.link_metrics().len(), 2);
    (now, relay, ids[0], ids[1])
}

/// `count` packages from a to b with `size` bytes of content each, back to back.
pub fn packages(count: usize, size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..count {
        let frame = FrameMessage {
            head: Some(MessageHead {
                source: "a".into(),
                destination: "b".into(),
                ..MessageHead::default()
            }),
            body: Some(Body::Packet(PacketData {
                stream_id: 1,
                stream_offset: (i * size) as i64,
                content: Bytes::from(vec![7u8; size]),
                packet_number: i as i64,
                ..PacketData::default()
            })),
        };
        atbus_frame::encode(&frame, &FrameLimits::default(), &mut out).expect("encodes");
    }
    out
}
