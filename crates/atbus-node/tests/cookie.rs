//! The stateless cookie/retry under handshake load (`docs/security.md` §9.4), sans-IO: a
//! client node and a server node over datagram links, with the server's links opened the way a
//! driver opens them (a fresh link for a datagram from an address without one).

use std::time::{Duration, Instant};

use atbus_frame::{FrameLimits, decode_frame, parse_package};
use atbus_node::{Direction, LinkId, LinkKind, Node, NodeConfig, NodeEvent};
use atbus_proto::{FrameMessage, HandshakeData, frame_message::Body, handshake_data::Step};
use bytes::Bytes;
use prost::Message as _;
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

const MTU: usize = 1224;
const CLIENT_ADDR: &str = "198.51.100.9:4000";

/// The handshake step in `package`, if it is one (session frames are not).
fn try_handshake(package: &[u8]) -> Option<HandshakeData> {
    let bytes = Bytes::copy_from_slice(package);
    let raw = parse_package(&bytes, &FrameLimits::default())
        .unwrap()
        .unwrap();
    match decode_frame(raw.frame).unwrap().body {
        Some(Body::Handshake(h)) => Some(h),
        _ => None,
    }
}

fn handshake(package: &[u8]) -> HandshakeData {
    try_handshake(package).expect("a handshake frame")
}

fn step_name(h: &HandshakeData) -> &'static str {
    match h.step {
        Some(Step::Hello(_)) => "hello",
        Some(Step::HelloReply(_)) => "hello_reply",
        Some(Step::Confirm(_)) => "confirm",
        Some(Step::Accept(_)) => "accept",
        Some(Step::Retry(_)) => "retry",
        None => "none",
    }
}

/// A server with `threshold`, `load` half-open handshakes from other addresses, and a client.
struct Bench {
    now: Instant,
    server: Node,
    client: Node,
    lc: LinkId,
    /// The server's link for the client's address, if it has one.
    ls: Option<LinkId>,
    /// Handshake steps the server sent the client, in order.
    server_steps: Vec<&'static str>,
    /// (hello size, retry size) of the last retry exchange.
    sizes: Vec<(usize, usize)>,
    last_client_package: usize,
}

impl Bench {
    fn new(threshold: usize, load: usize, seed: u64) -> Self {
        let now = Instant::now();
        let mut config = NodeConfig::new("server");
        config.limits.cookie_threshold = threshold;
        config.limits.max_handshakes_per_source = 64;
        let mut server = Node::new(config, now, ChaCha20Rng::seed_from_u64(seed)).unwrap();
        for i in 0..load {
            let id = server.new_link_id();
            server.handle_link_up(now, id, LinkKind::Datagram, MTU, Direction::Inbound);
            server.handle_link_source(now, id, &format!("203.0.113.{}:{}", i % 200, 1000 + i));
        }
        let client = Node::new(
            NodeConfig::new("client"),
            now,
            ChaCha20Rng::seed_from_u64(seed + 1),
        )
        .unwrap();
        Self {
            now,
            server,
            client,
            lc: LinkId(0),
            ls: None,
            server_steps: Vec::new(),
            sizes: Vec::new(),
            last_client_package: 0,
        }
    }

    fn connect(&mut self) {
        self.lc = self.client.new_link_id();
        self.client.handle_link_up(
            self.now,
            self.lc,
            LinkKind::Datagram,
            MTU,
            Direction::Outbound,
        );
    }

    /// What a driver does with a datagram from the client's address.
    fn server_receives(&mut self, addr: &str, package: &[u8]) {
        let id = match self.ls {
            Some(id) => id,
            None => {
                let id = self.server.new_link_id();
                self.server.handle_link_up(
                    self.now,
                    id,
                    LinkKind::Datagram,
                    MTU,
                    Direction::Inbound,
                );
                self.server.handle_link_source(self.now, id, addr);
                self.ls = Some(id);
                id
            }
        };
        self.server
            .handle_datagram(self.now, id, Bytes::copy_from_slice(package));
        // The driver drops a link the node closed.
        while let Some(a) = self.server.poll_action() {
            if matches!(a, atbus_node::Action::Close { link, .. } if Some(link) == self.ls) {
                self.ls = None;
            }
        }
    }

    fn pump(&mut self, addr: &str) {
        let mut buf = Vec::new();
        for _ in 0..100 {
            let mut moved = false;
            while let Some((_, n)) = self.client.poll_transmit(self.now, &mut buf) {
                let package = buf[..n].to_vec();
                self.last_client_package = n;
                self.server_receives(addr, &package);
                moved = true;
            }
            while let Some((_, n)) = self.server.poll_transmit(self.now, &mut buf) {
                if let Some(h) = try_handshake(&buf[..n]) {
                    self.server_steps.push(step_name(&h));
                    if matches!(h.step, Some(Step::Retry(_))) {
                        self.sizes.push((self.last_client_package, n));
                    }
                }
                self.client
                    .handle_datagram(self.now, self.lc, Bytes::copy_from_slice(&buf[..n]));
                moved = true;
            }
            while self.client.poll_action().is_some() {}
            if !moved {
                return;
            }
        }
        panic!("never went quiet");
    }

    fn established(&self) -> bool {
        self.server.peer_links("client").len() == 1 && self.client.peer_links("server").len() == 1
    }

    /// The client's first hello, as sent (without a cookie).
    fn client_hello(&mut self) -> Vec<u8> {
        let mut buf = Vec::new();
        let (_, n) = self.client.poll_transmit(self.now, &mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    /// The server's answer to `package` from `addr` on a fresh link: its handshake steps,
    /// and whether the link still exists afterwards.
    fn answer(&mut self, addr: &str, package: &[u8]) -> (Vec<HandshakeData>, bool) {
        self.ls = None;
        self.server_receives(addr, package);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some((_, n)) = self.server.poll_transmit(self.now, &mut buf) {
            out.push(handshake(&buf[..n]));
        }
        (out, self.ls.is_some())
    }
}

/// `hello` (a package) re-encoded with `cookie` in its handshake_data.
fn with_cookie(hello: &[u8], cookie: &[u8]) -> Vec<u8> {
    let data = handshake(hello);
    let frame = FrameMessage {
        head: None,
        body: Some(Body::Handshake(HandshakeData {
            step: data.step,
            cookie: Bytes::copy_from_slice(cookie),
        })),
    };
    let mut out = Vec::new();
    atbus_frame::encode(&frame, &FrameLimits::default(), &mut out).unwrap();
    out
}

fn retry_cookie(steps: &[HandshakeData]) -> Bytes {
    match steps {
        [
            HandshakeData {
                step: Some(Step::Retry(r)),
                ..
            },
        ] => r.cookie.clone(),
        other => panic!(
            "expected one retry, got {:?}",
            other.iter().map(step_name).collect::<Vec<_>>()
        ),
    }
}

#[test]
fn below_the_threshold_no_retry() {
    let mut b = Bench::new(4, 3, 1);
    b.connect();
    b.pump(CLIENT_ADDR);
    assert!(b.established());
    assert!(!b.server_steps.contains(&"retry"), "{:?}", b.server_steps);
    assert_eq!(b.server.cookie_stats(), (0, 0));
}

#[test]
fn above_the_threshold_a_hello_without_cookie_gets_a_retry_and_no_state() {
    let mut b = Bench::new(4, 4, 2);
    b.connect();
    let hello = b.client_hello();
    let links_before = (0..100)
        .filter(|i| b.server.is_handshaking(LinkId(*i)))
        .count();
    let (steps, kept) = b.answer(CLIENT_ADDR, &hello);
    let cookie = retry_cookie(&steps);
    assert_eq!(cookie.len(), atbus_node::COOKIE_LEN);
    assert!(
        !kept,
        "the server keeps no link for a hello it answered with a retry"
    );
    let links_after = (0..100)
        .filter(|i| b.server.is_handshaking(LinkId(*i)))
        .count();
    assert_eq!(links_before, links_after, "no handshake state was added");
    // No name, no event about a peer: only the link the driver opened was rejected.
    let events: Vec<_> = std::iter::from_fn(|| b.server.poll_event()).collect();
    assert!(
        events
            .iter()
            .all(|e| matches!(e, NodeEvent::LinkRejected { .. })),
        "{events:?}"
    );
    assert_eq!(b.server.cookie_stats(), (1, 0));
}

#[test]
fn with_the_right_cookie_the_handshake_proceeds_end_to_end() {
    let mut b = Bench::new(4, 4, 3);
    b.connect();
    b.pump(CLIENT_ADDR);
    assert!(b.established(), "steps {:?}", b.server_steps);
    assert_eq!(b.server_steps.first(), Some(&"retry"));
    assert!(b.server_steps.contains(&"accept"));
    assert_eq!(b.server.cookie_stats(), (1, 1));
}

#[test]
fn the_retry_is_never_larger_than_the_hello() {
    for seed in 0..4 {
        let mut b = Bench::new(1, 1, 10 + seed);
        b.connect();
        b.pump(CLIENT_ADDR);
        assert!(b.established());
        assert!(!b.sizes.is_empty());
        for (hello, retry) in &b.sizes {
            assert!(retry <= hello, "retry {retry} bytes, hello {hello} bytes");
            // A hello carries at least its 32-byte nonce; the retry only the 16-byte cookie.
            assert!(*retry < 32 + atbus_node::COOKIE_LEN, "retry {retry} bytes");
        }
    }
}

#[test]
fn a_cookie_for_another_address_a_forged_or_a_malformed_one_is_refused() {
    let mut b = Bench::new(2, 2, 4);
    b.connect();
    let hello = b.client_hello();
    let (steps, _) = b.answer(CLIENT_ADDR, &hello);
    let cookie = retry_cookie(&steps);
    // The right cookie from the right address: the server replies and keeps the link.
    let (steps, kept) = b.answer(CLIENT_ADDR, &with_cookie(&hello, &cookie));
    assert_eq!(
        steps.iter().map(step_name).collect::<Vec<_>>(),
        ["hello_reply"]
    );
    assert!(kept);
    // That link is now one more handshake in flight; the load stays above the threshold.
    let mut forged = cookie.to_vec();
    forged[0] ^= 1;
    for (addr, c) in [
        ("198.51.100.9:4001", cookie.to_vec()),
        ("198.51.100.10:4000", cookie.to_vec()),
        (CLIENT_ADDR, forged),
        (CLIENT_ADDR, vec![0; atbus_node::COOKIE_LEN]),
        (CLIENT_ADDR, cookie[..8].to_vec()),
    ] {
        let (steps, kept) = b.answer(addr, &with_cookie(&hello, &c));
        // Refused: answered with a fresh retry, nothing kept.
        let fresh = retry_cookie(&steps);
        assert_ne!(fresh.as_ref(), c.as_slice());
        assert!(!kept, "{addr} {c:?}");
    }
}

#[test]
fn secrets_rotate_and_an_expired_cookie_is_refused() {
    let mut b = Bench::new(1, 1, 5);
    b.connect();
    let hello = b.client_hello();
    let (steps, _) = b.answer(CLIENT_ADDR, &hello);
    let first = retry_cookie(&steps);
    // Within the same period the same address gets the same cookie (stateless: derived).
    let (steps, _) = b.answer(CLIENT_ADDR, &hello);
    assert_eq!(retry_cookie(&steps), first);
    // After one rotation the secret is new: a new cookie, and the old one still verifies.
    b.now += atbus_node::COOKIE_ROTATION + Duration::from_secs(1);
    let (steps, _) = b.answer(CLIENT_ADDR, &hello);
    let second = retry_cookie(&steps);
    assert_ne!(second, first, "the secret rotated");
    let (steps, kept) = b.answer(CLIENT_ADDR, &with_cookie(&hello, &first));
    assert_eq!(
        steps.iter().map(step_name).collect::<Vec<_>>(),
        ["hello_reply"]
    );
    assert!(kept, "the previous secret is still accepted");
    // After a second rotation the first cookie has expired; the second still verifies.
    b.now += atbus_node::COOKIE_ROTATION + Duration::from_secs(1);
    let (steps, kept) = b.answer(CLIENT_ADDR, &with_cookie(&hello, &first));
    assert!(!kept);
    let third = retry_cookie(&steps);
    assert!(third != first && third != second);
    let (steps, kept) = b.answer("198.51.100.9:4000", &with_cookie(&hello, &second));
    assert_eq!(
        steps.iter().map(step_name).collect::<Vec<_>>(),
        ["hello_reply"]
    );
    assert!(kept);
    // A long silence expires both.
    b.now += 5 * atbus_node::COOKIE_ROTATION;
    let (steps, kept) = b.answer(CLIENT_ADDR, &with_cookie(&hello, &third));
    assert!(!kept);
    retry_cookie(&steps);
}

#[test]
fn byte_streams_and_loopback_peers_get_no_retry() {
    let now = Instant::now();
    let mut config = NodeConfig::new("server");
    config.limits.cookie_threshold = 0;
    let mut server = Node::new(config, now, ChaCha20Rng::seed_from_u64(6)).unwrap();
    let mut client = Node::new(
        NodeConfig::new("client"),
        now,
        ChaCha20Rng::seed_from_u64(7),
    )
    .unwrap();
    for (kind, addr) in [
        (LinkKind::ByteStream, CLIENT_ADDR),
        (LinkKind::Datagram, "127.0.0.1:5000"),
    ] {
        let lc = client.new_link_id();
        client.handle_link_up(now, lc, kind, MTU, Direction::Outbound);
        let ls = server.new_link_id();
        server.handle_link_up(now, ls, kind, MTU, Direction::Inbound);
        server.handle_link_source(now, ls, addr);
        let mut buf = Vec::new();
        let (_, n) = client.poll_transmit(now, &mut buf).unwrap();
        let hello = buf[..n].to_vec();
        if kind == LinkKind::Datagram {
            server.handle_datagram(now, ls, Bytes::from(hello));
        } else {
            server.handle_link_bytes(now, ls, &hello);
        }
        let (_, n) = server.poll_transmit(now, &mut buf).unwrap();
        assert_eq!(
            step_name(&handshake(&buf[..n])),
            "hello_reply",
            "{kind:?} {addr}"
        );
    }
    assert_eq!(server.cookie_stats(), (0, 0));
}

#[test]
fn a_retry_with_an_empty_or_oversized_cookie_is_a_protocol_error() {
    for cookie in [Vec::new(), vec![7u8; atbus_node::MAX_COOKIE_LEN + 1]] {
        let now = Instant::now();
        let mut client = Node::new(
            NodeConfig::new("client"),
            now,
            ChaCha20Rng::seed_from_u64(8),
        )
        .unwrap();
        let lc = client.new_link_id();
        client.handle_link_up(now, lc, LinkKind::Datagram, MTU, Direction::Outbound);
        let frame = FrameMessage {
            head: None,
            body: Some(Body::Handshake(HandshakeData {
                step: Some(Step::Retry(atbus_proto::HandshakeRetry {
                    cookie: cookie.clone().into(),
                })),
                cookie: Bytes::new(),
            })),
        };
        let mut out = Vec::new();
        atbus_frame::encode(&frame, &FrameLimits::default(), &mut out).unwrap();
        client.handle_datagram(now, lc, Bytes::from(out));
        let rejected = std::iter::from_fn(|| client.poll_event()).any(|e| {
            matches!(e, NodeEvent::LinkRejected { reason, .. }
                if reason.code == atbus_proto::AtbusCloseReason::ProtocolError)
        });
        assert!(rejected, "cookie of {} bytes", cookie.len());
    }
    // The proto encodes a 16-byte cookie retry in a few bytes.
    assert!(
        atbus_proto::HandshakeRetry {
            cookie: vec![0; 16].into()
        }
        .encoded_len()
            <= 18
    );
}

#[test]
fn the_repeated_hello_and_its_retransmissions_carry_the_cookie() {
    let mut b = Bench::new(1, 1, 9);
    b.connect();
    let hello = b.client_hello();
    let (steps, _) = b.answer(CLIENT_ADDR, &hello);
    let cookie = retry_cookie(&steps);
    let mut buf = Vec::new();
    assert!(
        b.server.poll_transmit(b.now, &mut buf).is_none(),
        "the server sent nothing more"
    );
    // The retry reaches the client: it sends the same hello again, with the cookie.
    let frame = FrameMessage {
        head: None,
        body: Some(Body::Handshake(HandshakeData {
            step: Some(Step::Retry(atbus_proto::HandshakeRetry {
                cookie: cookie.clone(),
            })),
            cookie: Bytes::new(),
        })),
    };
    let mut out = Vec::new();
    atbus_frame::encode(&frame, &FrameLimits::default(), &mut out).unwrap();
    b.client.handle_datagram(b.now, b.lc, Bytes::from(out));
    let (_, n) = b.client.poll_transmit(b.now, &mut buf).unwrap();
    let again = handshake(&buf[..n]);
    assert_eq!(again.cookie, cookie);
    assert_eq!(again.step, handshake(&hello).step, "the same hello");
    // That datagram is lost; the retransmission carries the cookie too.
    b.now += Duration::from_secs(2);
    b.client.handle_timeout(b.now, 0);
    let (_, n) = b.client.poll_transmit(b.now, &mut buf).unwrap();
    let resent = handshake(&buf[..n]);
    assert_eq!(resent.cookie, cookie);
    assert!(matches!(resent.step, Some(Step::Hello(_))));
}
