//! Per-link limits that apply before authentication: frame size, labels, session frames on a
//! link whose handshake is not done (no stream is opened), and the bytes an unfinished frame
//! may hold. Each is hit by a peer that never proves a credential.

use std::time::Instant;

use atbus_frame::FrameLimits;
use atbus_node::{
    AccessToken, AuthMode, Direction, LinkCloseReason, LinkId, LinkKind, Node, NodeConfig,
    NodeEvent,
};
use atbus_proto::{AtbusCloseReason, FrameMessage, PacketData, frame_message::Body};
use bytes::Bytes;
use prost::Message as _;
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

const SECRET: [u8; 16] = *b"0123456789abcdef";

/// A node that requires the access token `k1`, with a small frame and label limit.
fn server(now: Instant) -> Node {
    let mut c = NodeConfig::new("server").with_tokens(vec![AccessToken::new("k1", SECRET)]);
    c.auth = Some(AuthMode::OneRtt);
    c.limits.max_frame_length = 512;
    c.limits.max_labels = 2;
    Node::new(c, now, ChaCha20Rng::seed_from_u64(1)).unwrap()
}

fn inbound(server: &mut Node, now: Instant, kind: LinkKind) -> LinkId {
    let id = server.new_link_id();
    server.handle_link_up(now, id, kind, 65536, Direction::Inbound);
    id
}

fn rejection(server: &mut Node) -> Option<LinkCloseReason> {
    std::iter::from_fn(|| server.poll_event()).find_map(|e| match e {
        NodeEvent::LinkRejected { reason, .. } => Some(reason),
        _ => None,
    })
}

/// A package of `frame_len` bytes of frame, encoded under the default (1 MiB) limit.
fn package_of(frame_len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    atbus_frame::encode_raw(&vec![0u8; frame_len], &FrameLimits::default(), &mut out).unwrap();
    out
}

#[test]
fn a_frame_over_the_limit_is_refused_before_any_credential() {
    let now = Instant::now();
    // Byte stream: the header alone is enough, the body is never buffered.
    let mut s = server(now);
    let link = inbound(&mut s, now, LinkKind::ByteStream);
    let package = package_of(4096);
    s.handle_link_bytes(now, link, &package[..32]);
    let r = rejection(&mut s).expect("refused");
    assert_eq!(r.code, AtbusCloseReason::LimitExceeded, "{r}");
    assert!(!s.is_handshaking(link));
    // At the limit, the frame is read (and refused for what it is, not for its size).
    let mut t = server(now);
    let link = inbound(&mut t, now, LinkKind::ByteStream);
    t.handle_link_bytes(now, link, &package_of(400));
    let r = rejection(&mut t).expect("garbage refused");
    assert_ne!(r.code, AtbusCloseReason::LimitExceeded, "{r}");
    // Datagram: the oversized datagram is dropped unread and costs the link nothing; a real
    // hello on the same link is answered.
    let mut u = server(now);
    let link = inbound(&mut u, now, LinkKind::Datagram);
    u.handle_datagram(now, link, Bytes::from(package_of(4096)));
    assert!(rejection(&mut u).is_none());
    let mut buf = Vec::new();
    assert!(u.poll_transmit(now, &mut buf).is_none(), "nothing answered");
    assert!(u.is_handshaking(link));
    let mut c = Node::new(
        NodeConfig::new("client").with_tokens(vec![AccessToken::new("k1", SECRET)]),
        now,
        ChaCha20Rng::seed_from_u64(3),
    )
    .unwrap();
    let cl = c.new_link_id();
    c.handle_link_up(now, cl, LinkKind::Datagram, 1200, Direction::Outbound);
    let (_, n) = c.poll_transmit(now, &mut buf).unwrap();
    let hello = Bytes::copy_from_slice(&buf[..n]);
    u.handle_datagram(now, link, hello);
    assert!(
        u.poll_transmit(now, &mut buf).is_some(),
        "the hello is answered"
    );
}

#[test]
fn labels_are_limited_before_the_credential_is_looked_at() {
    let now = Instant::now();
    let hello_with = |labels: usize| {
        // A client presenting an unknown key id: it cannot authenticate.
        let mut c = NodeConfig::new("client").with_tokens(vec![AccessToken::new("nope", SECRET)]);
        for i in 0..labels {
            c.labels.insert(format!("k{i}"), "v".into());
        }
        let mut client = Node::new(c, now, ChaCha20Rng::seed_from_u64(2)).unwrap();
        let l = client.new_link_id();
        client.handle_link_up(now, l, LinkKind::ByteStream, 65536, Direction::Outbound);
        let mut buf = Vec::new();
        let (_, n) = client.poll_transmit(now, &mut buf).unwrap();
        buf[..n].to_vec()
    };
    let mut s = server(now);
    let link = inbound(&mut s, now, LinkKind::ByteStream);
    s.handle_link_bytes(now, link, &hello_with(3));
    let r = rejection(&mut s).expect("refused");
    assert_eq!(r.code, AtbusCloseReason::LimitExceeded, "{r}");
    assert!(r.message.contains("labels"), "{r}");
    // Within the label limit the same client fails on its credential instead.
    let mut s = server(now);
    let link = inbound(&mut s, now, LinkKind::ByteStream);
    s.handle_link_bytes(now, link, &hello_with(2));
    let r = rejection(&mut s).expect("refused");
    assert_eq!(r.code, AtbusCloseReason::AuthFailed, "{r}");
}

#[test]
fn session_frames_before_the_handshake_open_no_stream() {
    let now = Instant::now();
    let frame = FrameMessage {
        head: None,
        body: Some(Body::Packet(PacketData {
            stream_id: 7,
            content: Bytes::from_static(b"early bird"),
            ..PacketData::default()
        })),
    }
    .encode_to_vec();
    for kind in [LinkKind::ByteStream, LinkKind::Datagram] {
        let mut s = server(now);
        let link = inbound(&mut s, now, kind);
        let mut package = Vec::new();
        atbus_frame::encode_raw(&frame, &FrameLimits::default(), &mut package).unwrap();
        if kind == LinkKind::ByteStream {
            s.handle_link_bytes(now, link, &package);
        } else {
            s.handle_datagram(now, link, Bytes::from(package));
        }
        let events: Vec<NodeEvent> = std::iter::from_fn(|| s.poll_event()).collect();
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, NodeEvent::Readable { .. } | NodeEvent::PeerUp { .. })),
            "{kind:?}: {events:?}"
        );
        assert_eq!(s.peers().count(), 0);
        assert!(
            events
                .iter()
                .any(|e| matches!(e, NodeEvent::LinkRejected { .. }))
                || s.is_handshaking(link),
            "{kind:?}: {events:?}"
        );
    }
}

#[test]
fn an_unfinished_frame_holds_at_most_the_frame_limit() {
    let now = Instant::now();
    let mut s = server(now);
    let link = inbound(&mut s, now, LinkKind::ByteStream);
    // A header announcing exactly the limit, then the body a byte at a time: the node waits
    // for it (the handshake deadline bounds the time) ...
    let package = package_of(512);
    let (head, body) = package.split_at(package.len() - 512);
    s.handle_link_bytes(now, link, head);
    for b in &body[..511] {
        s.handle_link_bytes(now, link, std::slice::from_ref(b));
    }
    assert!(s.is_handshaking(link));
    assert!(rejection(&mut s).is_none());
    // ... and the byte that completes it makes the frame be read, not buffered further.
    s.handle_link_bytes(now, link, &body[511..]);
    assert!(rejection(&mut s).is_some());
    // One byte over the limit is refused at the header.
    let mut s = server(now);
    let link = inbound(&mut s, now, LinkKind::ByteStream);
    let over = package_of(513);
    s.handle_link_bytes(now, link, &over[..over.len() - 513]);
    let r = rejection(&mut s).expect("refused at the header");
    assert_eq!(r.code, AtbusCloseReason::LimitExceeded, "{r}");
}
