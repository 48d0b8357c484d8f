//! Signed tokens, 0-RTT, anonymous peers and the amplification limit, node against node over an
//! in-memory byte stream (or datagrams), with the wall clock as an input.

use std::time::{Duration, Instant};

use atbus_node::atbus_auth::{
    AntiReplayConfig, IssuedToken, StreamSet, TokenClaims, TokenKey, TokenKeyring,
};
use atbus_node::{
    AccessToken, AnonymousPolicy, AuthMode, Delivery, Direction, LinkId, LinkKind, Node,
    NodeConfig, NodeEvent, OutgoingMessage, SignedToken,
};
use atbus_proto::AtbusCloseReason;
use bytes::Bytes;
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

const KEY_SECRET: &[u8] = b"token-signing-secret-0123456789ab";
/// Unix seconds of the tests' wall clock.
const T0: u64 = 1_800_000_000;

fn ring() -> TokenKeyring {
    let mut r = TokenKeyring::new();
    r.insert(TokenKey::new("k1", KEY_SECRET.to_vec()).unwrap())
        .unwrap();
    r
}

fn issue(name: &str, streams: &str, issued_at: u64, expires_at: u64) -> IssuedToken {
    ring()
        .issue(&TokenClaims {
            name: name.into(),
            namespace: String::new(),
            streams: StreamSet::parse(streams).unwrap(),
            issued_at,
            expires_at,
            nonce: [3; 16],
        })
        .unwrap()
}

fn signed(t: &IssuedToken) -> SignedToken {
    SignedToken::new(t.bytes.clone(), t.holder_secret.0).unwrap()
}

fn server_config(mode: AuthMode) -> NodeConfig {
    let mut c = NodeConfig::new("server");
    c.auth = Some(mode);
    c.token_keyring = Some(ring());
    c
}

fn client_config(name: &str, token: Option<SignedToken>) -> NodeConfig {
    let mut c = NodeConfig::new(name);
    c.signed_token = token;
    c
}

/// Two nodes, one link, a shared clock.
struct Pair {
    now: Instant,
    unix_ms: i64,
    client: Node,
    server: Node,
    lc: LinkId,
    ls: LinkId,
    kind: LinkKind,
    /// Every package the client sent, in order (to replay first flights).
    client_sent: Vec<Vec<u8>>,
    /// Bytes the server sent on the link.
    server_sent: usize,
    client_events: Vec<NodeEvent>,
    server_events: Vec<NodeEvent>,
}

impl Pair {
    fn new(client: NodeConfig, server: NodeConfig, seed: u64) -> Self {
        let now = Instant::now();
        let mut server = Node::new(server, now, ChaCha20Rng::seed_from_u64(seed)).unwrap();
        let client = Node::new(client, now, ChaCha20Rng::seed_from_u64(seed + 1)).unwrap();
        let unix_ms = (T0 * 1000) as i64;
        server.set_unix_time(unix_ms);
        Self {
            now,
            unix_ms,
            client,
            server,
            lc: LinkId(0),
            ls: LinkId(0),
            kind: LinkKind::ByteStream,
            client_sent: Vec::new(),
            server_sent: 0,
            client_events: Vec::new(),
            server_events: Vec::new(),
        }
    }

    /// Moves the wall clock (both nodes) and the monotonic clock forward by `d`.
    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.unix_ms += d.as_millis() as i64;
        self.client.set_unix_time(self.unix_ms);
        self.server.set_unix_time(self.unix_ms);
    }

    /// Opens a new link; `early` is queued as early data on it first.
    fn connect(&mut self, early: &[(i64, &[u8])]) {
        self.client.set_unix_time(self.unix_ms);
        self.lc = self.client.new_link_id();
        for (s, d) in early {
            self.client
                .send_early(self.lc, "server", *s, Bytes::copy_from_slice(d))
                .unwrap();
        }
        self.ls = self.server.new_link_id();
        let mtu = if self.kind == LinkKind::Datagram {
            1224
        } else {
            64 * 1024
        };
        self.client
            .handle_link_up(self.now, self.lc, self.kind, mtu, Direction::Outbound);
        self.server
            .handle_link_up(self.now, self.ls, self.kind, mtu, Direction::Inbound);
    }

    fn pump(&mut self) {
        let mut buf = Vec::new();
        for _ in 0..1000 {
            let mut moved = false;
            while let Some((_, n)) = self.client.poll_transmit(self.now, &mut buf) {
                self.client_sent.push(buf[..n].to_vec());
                self.feed_server(&buf[..n]);
                moved = true;
            }
            while let Some((_, n)) = self.server.poll_transmit(self.now, &mut buf) {
                self.server_sent += n;
                let bytes = buf[..n].to_vec();
                if self.kind == LinkKind::Datagram {
                    self.client
                        .handle_datagram(self.now, self.lc, Bytes::from(bytes));
                } else {
                    self.client.handle_link_bytes(self.now, self.lc, &bytes);
                }
                moved = true;
            }
            self.client_events
                .extend(std::iter::from_fn(|| self.client.poll_event()));
            self.server_events
                .extend(std::iter::from_fn(|| self.server.poll_event()));
            if !moved {
                return;
            }
        }
        panic!("the pair never went quiet");
    }

    /// The client sends `data` to the server on `stream`; then both ends run.
    fn client_sends(&mut self, stream: i64, data: &'static [u8]) {
        self.client
            .send("server", stream, OutgoingMessage::data(data))
            .unwrap();
        self.pump();
    }

    fn feed_server(&mut self, bytes: &[u8]) {
        if self.kind == LinkKind::Datagram {
            self.server
                .handle_datagram(self.now, self.ls, Bytes::copy_from_slice(bytes));
        } else {
            self.server.handle_link_bytes(self.now, self.ls, bytes);
        }
    }

    fn read_all(node: &mut Node, peer: &str, stream: i64) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Some(d) = node.read(peer, stream) {
            if let Delivery::Message(m) = d {
                out.push(m.data);
            }
        }
        out
    }

    fn client_rejection(&self) -> Option<&atbus_node::LinkCloseReason> {
        self.client_events.iter().find_map(|e| match e {
            NodeEvent::LinkRejected { reason, .. } => Some(reason),
            _ => None,
        })
    }

    fn early_delivered(&self) -> Vec<(String, i64, Bytes)> {
        self.server_events
            .iter()
            .filter_map(|e| match e {
                NodeEvent::EarlyData {
                    peer,
                    stream_id,
                    data,
                } => Some((peer.clone(), *stream_id, data.clone())),
                _ => None,
            })
            .collect()
    }
}

/// The token most tests use: `svc-a`, streams 1–4, valid for the hour around `T0`.
fn svc_a() -> IssuedToken {
    issue("svc-a", "1-4", T0 - 10, T0 + 3600)
}

/// `svc-a` with its token, asking for 0-RTT.
fn zero_rtt_client() -> NodeConfig {
    let mut client = client_config("svc-a", Some(signed(&svc_a())));
    client.auth = Some(AuthMode::ZeroRtt);
    client
}

/// `svc-a` with its token linked to a 1-RTT server, the handshake done.
fn signed_pair(seed: u64) -> Pair {
    let mut p = Pair::new(
        client_config("svc-a", Some(signed(&svc_a()))),
        server_config(AuthMode::OneRtt),
        seed,
    );
    p.connect(&[]);
    p.pump();
    p
}

fn established(p: &Pair, peer: &str) -> bool {
    p.server.peer_links(peer).len() == 1 && p.client.peer_links("server").len() == 1
}

// ----- signed tokens -----

#[test]
fn signed_token_is_accepted_and_binds_the_name() {
    let mut p = signed_pair(1);
    assert!(established(&p, "svc-a"), "{:?}", p.client_events);
    // Keys derived from the holder secret agree on both sides.
    assert_eq!(
        p.server.peer_session_keys("svc-a"),
        p.client.peer_session_keys("server")
    );
    p.client_sends(2, b"allowed");
    assert_eq!(
        Pair::read_all(&mut p.server, "svc-a", 2),
        vec![Bytes::from_static(b"allowed")]
    );
}

/// The client's view of a refused handshake: the reason the server sent.
fn refused_with(client: NodeConfig, server: NodeConfig) -> atbus_node::LinkCloseReason {
    let mut p = Pair::new(client, server, 7);
    p.connect(&[]);
    p.pump();
    assert!(
        p.server.peers().next().is_none(),
        "server accepted a bad token"
    );
    let r = p
        .client_rejection()
        .expect("client saw the refusal")
        .clone();
    assert_eq!(r.code, AtbusCloseReason::AuthFailed);
    assert!(r.by_peer);
    r
}

#[test]
fn every_token_defect_is_refused_with_its_own_reason() {
    let good = svc_a();
    let cases: Vec<(&str, SignedToken)> = vec![
        (
            "token-expired",
            signed(&issue("svc-a", "1", T0 - 7200, T0 - 3600)),
        ),
        (
            "token-not-yet-valid",
            signed(&issue("svc-a", "1", T0 + 3600, T0 + 7200)),
        ),
        (
            "token-name-mismatch",
            signed(&issue("svc-b", "1", T0 - 10, T0 + 3600)),
        ),
        ("token-unknown-key-id", {
            let mut other = TokenKeyring::new();
            other
                .insert(TokenKey::new("k9", KEY_SECRET.to_vec()).unwrap())
                .unwrap();
            let t = other
                .issue(&TokenClaims {
                    name: "svc-a".into(),
                    namespace: String::new(),
                    streams: StreamSet::parse("1").unwrap(),
                    issued_at: T0 - 10,
                    expires_at: T0 + 10,
                    nonce: [1; 16],
                })
                .unwrap();
            signed(&t)
        }),
        ("token-tampered", {
            let mut bytes = good.bytes.clone();
            let last = bytes.len() - 1;
            bytes[last] ^= 1; // a bit of the tag
            SignedToken::new(bytes, good.holder_secret.0).unwrap()
        }),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (defect, token) in cases {
        let r = refused_with(
            client_config("svc-a", Some(token)),
            server_config(AuthMode::OneRtt),
        );
        assert!(
            r.message.starts_with(defect),
            "expected {defect}, got {}",
            r.message
        );
        seen.insert(r.message.split(':').next().unwrap().to_owned());
    }
    assert_eq!(seen.len(), 5, "every defect has its own reason");
}

/// Truncated and oversized tokens cannot be built as `SignedToken` (the client checks the
/// layout), so these hellos are written by hand, as an attacker would.
#[test]
fn truncated_and_oversized_tokens_on_the_wire_are_refused() {
    use atbus_proto::handshake_data::Step;
    use atbus_proto::{FrameMessage, HandshakeData, HandshakeHello, frame_message::Body};
    let good = svc_a();
    for (defect, token) in [
        (
            "token-truncated",
            good.bytes[..good.bytes.len() - 5].to_vec(),
        ),
        ("token-oversized", vec![1u8; 2000]),
    ] {
        let now = Instant::now();
        let mut server = Node::new(
            server_config(AuthMode::OneRtt),
            now,
            ChaCha20Rng::seed_from_u64(9),
        )
        .unwrap();
        server.set_unix_time((T0 * 1000) as i64);
        let ls = server.new_link_id();
        server.handle_link_up(now, ls, LinkKind::ByteStream, 65536, Direction::Inbound);
        let hello = HandshakeHello {
            protocol_version: atbus_proto::PROTOCOL_VERSION as i32,
            node_name: "svc-a".into(),
            nonce: vec![5u8; 32].into(),
            key_id: "k1".into(),
            assigned_token: token.into(),
            ..Default::default()
        };
        let mut pkg = Vec::new();
        atbus_frame::encode(
            &FrameMessage {
                head: None,
                body: Some(Body::Handshake(HandshakeData {
                    step: Some(Step::Hello(hello)),
                    cookie: Bytes::new(),
                })),
            },
            &atbus_frame::FrameLimits::default(),
            &mut pkg,
        )
        .unwrap();
        server.handle_link_bytes(now, ls, &pkg);
        let reason = std::iter::from_fn(|| server.poll_event())
            .find_map(|e| match e {
                NodeEvent::LinkRejected { reason, .. } => Some(reason),
                _ => None,
            })
            .expect("refused");
        assert_eq!(reason.code, AtbusCloseReason::AuthFailed);
        assert!(
            reason.message.starts_with(defect),
            "{defect}: {}",
            reason.message
        );
    }
}

#[test]
fn a_packet_on_a_stream_outside_the_token_closes_the_link() {
    let mut p = signed_pair(2);
    assert!(established(&p, "svc-a"));
    p.client_sends(4, b"fine");
    assert_eq!(Pair::read_all(&mut p.server, "svc-a", 4).len(), 1);
    p.client_sends(5, b"not allowed");
    assert!(Pair::read_all(&mut p.server, "svc-a", 5).is_empty());
    let closed = p.client_events.iter().find_map(|e| match e {
        NodeEvent::LinkClosed {
            reason: Some(r), ..
        } => Some(r.clone()),
        _ => None,
    });
    let closed = closed.expect("the client's link was closed");
    assert_eq!(closed.code, AtbusCloseReason::AuthFailed);
    assert!(
        closed.message.starts_with("stream-not-allowed"),
        "{}",
        closed.message
    );
}

#[test]
fn pre_shared_tokens_still_work_and_auth_modes_apply() {
    let psk = AccessToken::new("p1", b"pre-shared-secret-16".to_vec());
    let mut server = NodeConfig::new("server").with_tokens(vec![psk.clone()]);
    server.auth = Some(AuthMode::OneRtt);
    let mut p = Pair::new(
        NodeConfig::new("c").with_tokens(vec![psk]),
        server.clone(),
        3,
    );
    p.connect(&[]);
    p.pump();
    assert!(established(&p, "c"));
    // 1-RTT refuses a peer without credentials...
    let r = refused_with(NodeConfig::new("c"), server.clone());
    assert!(r.message.contains("no access token"), "{}", r.message);
    // ...`none` accepts it as an open link.
    server.auth = Some(AuthMode::None);
    let mut p = Pair::new(NodeConfig::new("c"), server, 4);
    p.connect(&[]);
    p.pump();
    assert!(established(&p, "c"));
    // 1rtt/0rtt without any credential is a configuration error.
    let mut bad = NodeConfig::new("x");
    bad.auth = Some(AuthMode::ZeroRtt);
    assert!(Node::new(bad, Instant::now(), ChaCha20Rng::seed_from_u64(1)).is_err());
}

// ----- 0-RTT -----

fn zero_rtt_pair(seed: u64) -> Pair {
    let client = zero_rtt_client();
    let mut p = Pair::new(client, server_config(AuthMode::ZeroRtt), seed);
    // The server's guard is warm once one window has passed since it started.
    p.advance(Duration::from_millis(
        AntiReplayConfig::default().window_ms + 1000,
    ));
    p
}

#[test]
fn zero_rtt_early_data_is_delivered_once_and_marked() {
    let mut p = zero_rtt_pair(10);
    p.connect(&[(1, b"early one"), (2, b"early two")]);
    // The server delivers the early data on the first flight alone, before answering.
    let first = {
        let mut buf = Vec::new();
        let (_, n) = p.client.poll_transmit(p.now, &mut buf).unwrap();
        buf[..n].to_vec()
    };
    p.client_sent.push(first.clone());
    p.feed_server(&first);
    p.server_events
        .extend(std::iter::from_fn(|| p.server.poll_event()));
    assert_eq!(
        p.early_delivered(),
        vec![
            ("svc-a".to_owned(), 1, Bytes::from_static(b"early one")),
            ("svc-a".to_owned(), 2, Bytes::from_static(b"early two")),
        ]
    );
    p.pump();
    assert!(established(&p, "svc-a"));
    assert!(p.client_events.contains(&NodeEvent::EarlyDataStatus {
        peer: "server".into(),
        accepted: true
    }));
    // Not delivered a second time through the session.
    assert!(Pair::read_all(&mut p.server, "svc-a", 1).is_empty());
    assert_eq!(p.early_delivered().len(), 2);
    assert_eq!(p.server.early_data_stats(), (1, 0, 0));
}

#[test]
fn a_replayed_first_flight_is_not_delivered_twice() {
    let mut p = zero_rtt_pair(11);
    p.connect(&[(1, b"pay 10")]);
    p.pump();
    assert_eq!(p.early_delivered().len(), 1);
    let flight = p.client_sent[0].clone();
    // An attacker replays the captured first flight on a new link, a second later.
    p.advance(Duration::from_secs(1));
    let ls2 = p.server.new_link_id();
    p.server
        .handle_link_up(p.now, ls2, LinkKind::ByteStream, 65536, Direction::Inbound);
    p.server.handle_link_bytes(p.now, ls2, &flight);
    p.server_events
        .extend(std::iter::from_fn(|| p.server.poll_event()));
    assert_eq!(p.early_delivered().len(), 1, "replay delivered again");
    assert_eq!(p.server.early_data_stats(), (1, 1, 0));
    // The replayer cannot finish the 1-RTT handshake: it does not hold the secret.
    assert!(p.server.is_handshaking(ls2));
}

#[test]
fn zero_rtt_is_refused_right_after_a_restart_and_the_data_goes_in_the_session() {
    let client = zero_rtt_client();
    // A server that just started: its guard is cold for one window.
    let mut p = Pair::new(client, server_config(AuthMode::ZeroRtt), 12);
    p.connect(&[(1, b"after restart")]);
    p.pump();
    assert!(established(&p, "svc-a"));
    assert!(p.early_delivered().is_empty());
    assert!(p.client_events.contains(&NodeEvent::EarlyDataStatus {
        peer: "server".into(),
        accepted: false
    }));
    // Sent again in the session: delivered exactly once, as ordinary stream data.
    assert_eq!(
        Pair::read_all(&mut p.server, "svc-a", 1),
        vec![Bytes::from_static(b"after restart")]
    );
    assert_eq!(p.server.early_data_stats(), (0, 0, 1));
}

#[test]
fn a_stale_first_flight_falls_back_to_one_rtt() {
    let mut p = zero_rtt_pair(13);
    // The client's clock is 11 s behind the server's: outside the ±10 s window.
    p.client.set_unix_time(p.unix_ms - 11_000);
    p.lc = p.client.new_link_id();
    p.client
        .send_early(p.lc, "server", 1, &b"stale"[..])
        .unwrap();
    p.ls = p.server.new_link_id();
    p.client.handle_link_up(
        p.now,
        p.lc,
        LinkKind::ByteStream,
        65536,
        Direction::Outbound,
    );
    p.server
        .handle_link_up(p.now, p.ls, LinkKind::ByteStream, 65536, Direction::Inbound);
    p.pump();
    assert!(p.early_delivered().is_empty());
    assert_eq!(
        Pair::read_all(&mut p.server, "svc-a", 1),
        vec![Bytes::from_static(b"stale")]
    );
    // 9 s behind is inside the window (once the guard's warm-up is over for such stamps).
    let mut q = zero_rtt_pair(14);
    q.advance(Duration::from_secs(10));
    q.client.set_unix_time(q.unix_ms - 9_000);
    q.lc = q.client.new_link_id();
    q.client
        .send_early(q.lc, "server", 1, &b"fresh"[..])
        .unwrap();
    q.ls = q.server.new_link_id();
    q.client.handle_link_up(
        q.now,
        q.lc,
        LinkKind::ByteStream,
        65536,
        Direction::Outbound,
    );
    q.server
        .handle_link_up(q.now, q.ls, LinkKind::ByteStream, 65536, Direction::Inbound);
    q.pump();
    assert_eq!(q.early_delivered().len(), 1);
}

#[test]
fn one_rtt_server_discards_early_data_and_the_client_resends_it() {
    let client = zero_rtt_client();
    let mut p = Pair::new(client, server_config(AuthMode::OneRtt), 15);
    p.advance(Duration::from_secs(20));
    p.connect(&[(3, b"once")]);
    p.pump();
    assert!(p.early_delivered().is_empty());
    assert_eq!(
        Pair::read_all(&mut p.server, "svc-a", 3),
        vec![Bytes::from_static(b"once")]
    );
}

#[test]
fn early_data_outside_the_token_closes_the_link() {
    let mut p = zero_rtt_pair(16);
    p.connect(&[(9, b"not mine")]);
    p.pump();
    assert!(p.early_delivered().is_empty());
    let r = p.client_rejection().expect("refused");
    assert!(r.message.starts_with("stream-not-allowed"), "{}", r.message);
}

// ----- anonymous peers -----

fn anonymous_server() -> NodeConfig {
    let mut c = server_config(AuthMode::OneRtt);
    c.anonymous = Some(AnonymousPolicy::default());
    c
}

fn anonymous_client() -> NodeConfig {
    let mut c = NodeConfig::new("placeholder");
    c.request_assigned_name = true;
    c
}

#[test]
fn anonymous_peer_gets_a_unique_name_and_a_token_to_reconnect() {
    let mut p = Pair::new(anonymous_client(), anonymous_server(), 20);
    p.connect(&[]);
    p.pump();
    let (name, token) = p
        .client_events
        .iter()
        .find_map(|e| match e {
            NodeEvent::NameAssigned { name, token } => Some((name.clone(), token.clone())),
            _ => None,
        })
        .expect("a name was assigned");
    assert!(name.starts_with("anon-"), "{name}");
    assert_eq!(p.client.name(), name);
    assert!(established(&p, &name));
    p.client_sends(0, b"hi");
    assert_eq!(Pair::read_all(&mut p.server, &name, 0).len(), 1);
    // A second anonymous client gets another name.
    let mut q = Pair::new(anonymous_client(), anonymous_server(), 21);
    q.connect(&[]);
    q.pump();
    assert_ne!(q.client.name(), name);
    // The token reconnects under the assigned name, with a 1-RTT proof of its holder secret.
    let token = token.expect("the server has an issuing key");
    let verified = ring().verify_text(&token, "", T0).unwrap();
    assert_eq!(verified.claims.name, name);
    assert_eq!(
        p.client.config().signed_token.as_ref().map(|t| t.key_id()),
        Some("k1")
    );
    let reconnect = NodeConfig {
        signed_token: p.client.config().signed_token.clone(),
        ..NodeConfig::new(name.clone())
    };
    let mut r = Pair::new(reconnect, anonymous_server(), 22);
    r.connect(&[]);
    r.pump();
    assert!(established(&r, &name), "{:?}", r.client_events);
}

#[test]
fn anonymous_peer_claiming_a_configured_or_other_name_is_refused() {
    let r = refused_with(NodeConfig::new("server-relay"), {
        let mut c = anonymous_server();
        c.relays = vec!["server-relay".into()];
        c
    });
    assert!(r.message.starts_with("name-taken"), "{}", r.message);
    let r = refused_with(NodeConfig::new("someone"), anonymous_server());
    assert!(
        r.message.starts_with("anonymous-name-claimed"),
        "{}",
        r.message
    );
    // A server without the anonymous option refuses a request for a name.
    let r = refused_with(anonymous_client(), server_config(AuthMode::OneRtt));
    assert!(r.message.starts_with("anonymous-refused"), "{}", r.message);
}

#[test]
fn anonymous_peers_are_restricted_to_their_streams_and_rate() {
    let mut server = anonymous_server();
    server.anonymous = Some(AnonymousPolicy {
        streams: StreamSet::parse("0-1").unwrap(),
        max_packets_per_sec: 5,
        token_lifetime_secs: 60,
        ..AnonymousPolicy::default()
    });
    // Datagrams: packets beyond the rate are dropped; the session's loss recovery brings them
    // again later, so everything arrives, slowly.
    let mut p = Pair::new(anonymous_client(), server.clone(), 23);
    p.kind = LinkKind::Datagram;
    p.connect(&[]);
    p.pump();
    let name = p.client.name().to_owned();
    assert!(established(&p, &name));
    for i in 0..20u8 {
        // One message per datagram.
        p.client
            .send("server", 1, OutgoingMessage::data(vec![i; 1000]))
            .unwrap();
    }
    p.pump();
    let first = Pair::read_all(&mut p.server, &name, 1).len();
    assert!(first < 20, "rate limit let {first} packets in at once");
    let mut later = 0;
    for _ in 0..300 {
        p.advance(Duration::from_millis(100));
        p.client.handle_timeout(p.now, p.unix_ms);
        p.server.handle_timeout(p.now, p.unix_ms);
        p.pump();
        later += Pair::read_all(&mut p.server, &name, 1).len();
    }
    assert_eq!(first + later, 20);
    // Byte stream: nothing is lost; the server stops reading for the rest of the second.
    let mut b = Pair::new(anonymous_client(), server.clone(), 25);
    b.connect(&[]);
    b.pump();
    let name = b.client.name().to_owned();
    for i in 0..20u8 {
        b.client
            .send("server", 1, OutgoingMessage::data(vec![i; 10]))
            .unwrap();
        b.pump();
    }
    assert_eq!(Pair::read_all(&mut b.server, &name, 1).len(), 20);
    let actions: Vec<_> = std::iter::from_fn(|| b.server.poll_action()).collect();
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, atbus_node::Action::PauseReading { .. })),
        "{actions:?}"
    );
    b.advance(Duration::from_secs(1));
    b.server.handle_timeout(b.now, b.unix_ms);
    let actions: Vec<_> = std::iter::from_fn(|| b.server.poll_action()).collect();
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, atbus_node::Action::ResumeReading { .. })),
        "{actions:?}"
    );
    // Stream 2 is outside the policy.
    let mut q = Pair::new(anonymous_client(), server, 24);
    q.connect(&[]);
    q.pump();
    q.client
        .send("server", 2, OutgoingMessage::data(&b"x"[..]))
        .unwrap();
    q.pump();
    assert!(q.client.peer_links("server").is_empty());
}

// ----- denial of service -----

#[test]
fn a_datagram_server_sends_at_most_three_times_what_it_received_before_validation() {
    // A server with many labels answers a small hello with a much larger reply.
    let mut server = NodeConfig::new("server");
    for i in 0..60 {
        server
            .labels
            .insert(format!("label-key-{i:03}"), "v".repeat(60));
    }
    let mut p = Pair::new(NodeConfig::new("c"), server.clone(), 30);
    p.kind = LinkKind::Datagram;
    p.connect(&[]);
    let mut buf = Vec::new();
    let (_, n) = p.client.poll_transmit(p.now, &mut buf).unwrap();
    let hello = buf[..n].to_vec();
    p.feed_server(&hello);
    let mut sent = 0;
    while let Some((_, m)) = p.server.poll_transmit(p.now, &mut buf) {
        sent += m;
    }
    assert_eq!(sent, 0, "the reply is larger than 3x the hello: held back");
    // Over a byte stream (address validated by the transport) the same reply goes out.
    let mut q = Pair::new(NodeConfig::new("c"), server, 31);
    q.connect(&[]);
    q.pump();
    assert!(established(&q, "c"));
    assert!(q.server_sent > 3 * q.client_sent[0].len());
    // A small reply is within the limit on datagrams too.
    let mut r = Pair::new(NodeConfig::new("c"), NodeConfig::new("server"), 32);
    r.kind = LinkKind::Datagram;
    r.connect(&[]);
    r.pump();
    assert!(established(&r, "c"));
}

#[test]
fn half_open_handshakes_are_bounded_per_source_address() {
    let now = Instant::now();
    let mut config = NodeConfig::new("server");
    config.limits.max_handshakes_per_source = 2;
    let mut server = Node::new(config, now, ChaCha20Rng::seed_from_u64(40)).unwrap();
    let open = |server: &mut Node, peer: &str| {
        let id = server.new_link_id();
        server.handle_link_up(now, id, LinkKind::ByteStream, 65536, Direction::Inbound);
        server.handle_link_source(now, id, peer);
        id
    };
    let a = open(&mut server, "192.0.2.7:1000");
    let b = open(&mut server, "192.0.2.7:1001");
    let c = open(&mut server, "192.0.2.7:1002");
    // Another address and the same IPv6 /64 twice are counted on their own; Unix and loopback
    // peers are not counted.
    let d = open(&mut server, "192.0.2.8:1000");
    let e = open(&mut server, "[2001:db8::1]:5");
    let f = open(&mut server, "[2001:db8::ffff]:6");
    let g = open(&mut server, "[2001:db8::2]:7");
    let u: Vec<_> = (0..4)
        .map(|i| open(&mut server, if i % 2 == 0 { "" } else { "127.0.0.1:9" }))
        .collect();
    for id in [a, b, d, e, f] {
        assert!(server.is_handshaking(id), "{id:?}");
    }
    for id in u {
        assert!(server.is_handshaking(id));
    }
    for id in [c, g] {
        assert!(!server.is_handshaking(id), "{id:?} should be refused");
    }
    let refused: Vec<_> = std::iter::from_fn(|| server.poll_event())
        .filter_map(|e| match e {
            NodeEvent::LinkRejected { reason, .. } => Some(reason.code),
            _ => None,
        })
        .collect();
    assert_eq!(refused, vec![AtbusCloseReason::LimitExceeded; 2]);
    assert_eq!(
        atbus_node::source_key("[2001:db8:1:2:3:4:5:6]:9"),
        "2001:db8:1:2::".parse().ok()
    );
}

#[test]
fn early_data_of_a_connect_that_failed_is_reported_undeliverable() {
    let t = svc_a();
    let now = Instant::now();
    let mut client = Node::new(
        client_config("svc-a", Some(signed(&t))),
        now,
        ChaCha20Rng::seed_from_u64(50),
    )
    .unwrap();
    let link = client.new_link_id();
    client.send_early(link, "server", 1, &b"lost"[..]).unwrap();
    // More than the first flight may hold is refused at once.
    assert!(
        client
            .send_early(
                link,
                "server",
                1,
                vec![0u8; atbus_node::DEFAULT_MAX_EARLY_DATA]
            )
            .is_err()
    );
    client.handle_link_closed(now, link);
    let lost: Vec<_> = std::iter::from_fn(|| client.poll_event())
        .filter_map(|e| match e {
            NodeEvent::Undeliverable { peer, data, .. } => Some((peer, data)),
            _ => None,
        })
        .collect();
    assert_eq!(
        lost,
        vec![("server".to_owned(), Bytes::from_static(b"lost"))]
    );
}
