//! A world of nodes and relays over `atbus-netsim` links: the relay core's test harness.
//!
//! Besides moving bytes, the harness watches the wire: every package a relay writes is decoded
//! and checked (a relay originates nothing but `forward_error`, stamps every frame it forwards,
//! and leaves each body byte for byte as its sender wrote it), and the heads each actor
//! receives are recorded for the tests to inspect.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use atbus_frame::{FrameLimits, StreamDecoder};
use atbus_netsim::{Clock, DuplexLink, LinkConfig, earliest};
use atbus_node::{
    Action, Delivery, Direction, LinkId, LinkKind, Node, NodeConfig, NodeEvent, OutgoingMessage,
};
use atbus_proto::{FrameMessage, MessageHead, frame_message::Body};
use atbus_relay::{Relay, RelayConfig, RelayEvent};
use bytes::Bytes;
use prost::Message;
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

/// A node or a relay.
pub enum Actor {
    Node(Box<Node>),
    Relay(Box<Relay>),
}

impl Actor {
    fn new_link_id(&mut self) -> LinkId {
        match self {
            Actor::Node(n) => n.new_link_id(),
            Actor::Relay(r) => r.new_link_id(),
        }
    }
    fn link_up(
        &mut self,
        now: std::time::Instant,
        l: LinkId,
        k: LinkKind,
        mtu: usize,
        d: Direction,
    ) {
        match self {
            Actor::Node(n) => n.handle_link_up(now, l, k, mtu, d),
            Actor::Relay(r) => r.handle_link_up(now, l, k, mtu, d),
        }
    }
    fn bytes(&mut self, now: std::time::Instant, l: LinkId, b: &[u8]) {
        match self {
            Actor::Node(n) => n.handle_link_bytes(now, l, b),
            Actor::Relay(r) => r.handle_link_bytes(now, l, b),
        }
    }
    fn datagram(&mut self, now: std::time::Instant, l: LinkId, b: Bytes) {
        match self {
            Actor::Node(n) => n.handle_datagram(now, l, b),
            Actor::Relay(r) => r.handle_datagram(now, l, b),
        }
    }
    fn closed(&mut self, now: std::time::Instant, l: LinkId) {
        match self {
            Actor::Node(n) => n.handle_link_closed(now, l),
            Actor::Relay(r) => r.handle_link_closed(now, l),
        }
    }
    fn timeout(&mut self, now: std::time::Instant, unix: i64) {
        match self {
            Actor::Node(n) => n.handle_timeout(now, unix),
            Actor::Relay(r) => r.handle_timeout(now, unix),
        }
    }
    fn transmit(&mut self, now: std::time::Instant, buf: &mut Vec<u8>) -> Option<(LinkId, usize)> {
        match self {
            Actor::Node(n) => n.poll_transmit(now, buf),
            Actor::Relay(r) => r.poll_transmit(now, buf),
        }
    }
    fn action(&mut self) -> Option<Action> {
        match self {
            Actor::Node(n) => n.poll_action(),
            Actor::Relay(r) => r.poll_action(),
        }
    }
    fn poll_timeout(&self) -> Option<std::time::Instant> {
        match self {
            Actor::Node(n) => n.poll_timeout(),
            Actor::Relay(r) => r.poll_timeout(),
        }
    }
    fn name(&self) -> &str {
        match self {
            Actor::Node(n) => n.name(),
            Actor::Relay(r) => r.name(),
        }
    }
}

/// One simulated transport connection.
pub struct SimLink {
    pub kind: LinkKind,
    pub mtu: usize,
    pub net: DuplexLink,
    /// (actor, link id) of the opener (a) and the acceptor (b).
    pub a: (usize, LinkId),
    pub b: (usize, LinkId),
    pub closed: [bool; 2],
}

/// A head an actor received, with the link and the body kind.
#[derive(Debug, Clone)]
pub struct Seen {
    pub link: LinkId,
    pub head: MessageHead,
    pub body: Option<Body>,
}

pub struct World {
    pub clock: Clock,
    pub actors: Vec<Actor>,
    pub links: Vec<SimLink>,
    pub events: Vec<Vec<NodeEvent>>,
    pub relay_events: Vec<Vec<RelayEvent>>,
    pub received: Vec<BTreeMap<(String, i64), Vec<Bytes>>>,
    /// Frames (with a head) each actor received.
    pub seen: Vec<Vec<Seen>>,
    /// Record `seen` (costs a decode per package).
    pub tap: bool,
    /// Hashes of the bodies nodes sent (relays may only forward these).
    sent_bodies: HashSet<u64>,
    /// What a relay wrote that it must not have.
    pub violations: Vec<String>,
    pub seed: u64,
    buf: Vec<u8>,
}

pub fn node_config(name: &str, relays: &[&str]) -> NodeConfig {
    let mut c = NodeConfig::new(name);
    c.relays = relays.iter().map(|r| r.to_string()).collect();
    c.session.path_idle_timeout = Duration::from_secs(30);
    c.reconnect_wait = Duration::from_secs(60);
    c
}

pub fn relay_config(name: &str, peer_relays: &[&str]) -> RelayConfig {
    let mut c = RelayConfig::new(name);
    c.peer_relays = peer_relays.iter().map(|r| r.to_string()).collect();
    c
}

pub fn byte_link() -> LinkConfig {
    LinkConfig::lossless(Duration::from_millis(5))
        .with_reliable(true)
        .with_queue_limit(64 * 1024 * 1024)
        .with_mtu(usize::MAX)
}

pub fn lossy_link(loss: f64) -> LinkConfig {
    LinkConfig::lossy(Duration::from_millis(8), loss).with_mtu(1224)
}

fn body_hash(frame: &FrameMessage) -> u64 {
    let mut f = frame.clone();
    f.head = None;
    let mut h = DefaultHasher::new();
    f.encode_to_vec().hash(&mut h);
    h.finish()
}

fn decode_all(bytes: &[u8]) -> Vec<FrameMessage> {
    let mut d = StreamDecoder::new(FrameLimits::default());
    d.feed(bytes);
    let mut out = Vec::new();
    while let Ok(Some(f)) = d.next_frame() {
        out.push(f);
    }
    out
}

impl World {
    pub fn new(seed: u64) -> Self {
        Self {
            clock: Clock::new(),
            actors: Vec::new(),
            links: Vec::new(),
            events: Vec::new(),
            relay_events: Vec::new(),
            received: Vec::new(),
            seen: Vec::new(),
            tap: true,
            sent_bodies: HashSet::new(),
            violations: Vec::new(),
            seed,
            buf: Vec::new(),
        }
    }

    fn rng(&self, salt: u64) -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(atbus_netsim::derive_seed(self.seed, salt))
    }

    fn push(&mut self, actor: Actor) -> usize {
        self.actors.push(actor);
        self.events.push(Vec::new());
        self.relay_events.push(Vec::new());
        self.received.push(BTreeMap::new());
        self.seen.push(Vec::new());
        self.actors.len() - 1
    }

    pub fn add_node(&mut self, config: NodeConfig) -> usize {
        let rng = self.rng(1000 + self.actors.len() as u64);
        let node = Node::new(config, self.clock.now(), rng).expect("valid config");
        self.push(Actor::Node(Box::new(node)))
    }

    pub fn add_relay(&mut self, config: RelayConfig) -> usize {
        let rng = self.rng(1000 + self.actors.len() as u64);
        let relay = Relay::new(config, self.clock.now(), rng).expect("valid config");
        self.push(Actor::Relay(Box::new(relay)))
    }

    pub fn node(&mut self, i: usize) -> &mut Node {
        match &mut self.actors[i] {
            Actor::Node(n) => n,
            Actor::Relay(_) => panic!("actor {i} is a relay"),
        }
    }

    pub fn relay(&self, i: usize) -> &Relay {
        match &self.actors[i] {
            Actor::Relay(r) => r,
            Actor::Node(_) => panic!("actor {i} is a node"),
        }
    }

    pub fn relay_mut(&mut self, i: usize) -> &mut Relay {
        match &mut self.actors[i] {
            Actor::Relay(r) => r,
            Actor::Node(_) => panic!("actor {i} is a node"),
        }
    }

    /// Opens a link from actor `a` (dialer) to actor `b`.
    pub fn connect(&mut self, a: usize, b: usize, kind: LinkKind, net: LinkConfig) -> usize {
        let now = self.clock.now();
        let mtu = if kind == LinkKind::Datagram {
            net.mtu
        } else {
            64 * 1024
        };
        let la = self.actors[a].new_link_id();
        let lb = self.actors[b].new_link_id();
        self.actors[a].link_up(now, la, kind, mtu, Direction::Outbound);
        self.actors[b].link_up(now, lb, kind, mtu, Direction::Inbound);
        let seed = atbus_netsim::derive_seed(self.seed, 100 + self.links.len() as u64);
        self.links.push(SimLink {
            kind,
            mtu,
            net: DuplexLink::new(net, seed),
            a: (a, la),
            b: (b, lb),
            closed: [false, false],
        });
        self.links.len() - 1
    }

    /// The link id actor `actor` has for sim link `i`.
    pub fn link_id(&self, i: usize, actor: usize) -> LinkId {
        let l = &self.links[i];
        if l.a.0 == actor { l.a.1 } else { l.b.1 }
    }

    /// Puts raw bytes on sim link `i` as if actor `from` wrote them.
    pub fn inject(&mut self, i: usize, from: usize, bytes: Vec<u8>) {
        let now = self.clock.now();
        for frame in decode_all(&bytes) {
            self.sent_bodies.insert(body_hash(&frame));
        }
        let l = &mut self.links[i];
        let dir = if l.a.0 == from {
            &mut l.net.a_to_b
        } else {
            &mut l.net.b_to_a
        };
        dir.send(now, Bytes::from(bytes));
    }

    /// Node `n` reaches `peer` through `relay`.
    pub fn route(&mut self, n: usize, peer: &str, relay: &str) {
        let now = self.clock.now();
        self.node(n)
            .route_via_relay(now, peer, relay)
            .expect("route");
    }

    /// Kills sim link `i` abruptly: both ends learn it closed.
    pub fn kill_link(&mut self, i: usize) {
        let now = self.clock.now();
        let l = &mut self.links[i];
        l.net.set_up(false);
        l.closed = [true, true];
        let (a, b) = (l.a, l.b);
        self.actors[a.0].closed(now, a.1);
        self.actors[b.0].closed(now, b.1);
    }

    pub fn send(&mut self, from: usize, to: &str, stream: i64, data: Bytes) -> u64 {
        self.node(from)
            .send(to, stream, OutgoingMessage::data(data))
            .expect("send")
    }

    fn find(&self, actor: usize, link: LinkId) -> Option<(usize, usize)> {
        self.links.iter().enumerate().rev().find_map(|(i, l)| {
            if l.a == (actor, link) {
                Some((i, 0))
            } else if l.b == (actor, link) {
                Some((i, 1))
            } else {
                None
            }
        })
    }

    fn step(&mut self) {
        loop {
            self.transmit();
            let delivered = self.deliver();
            self.read_events();
            if !delivered {
                self.transmit();
                return;
            }
        }
    }

    /// Checks one package run written by actor `n`.
    fn watch_output(&mut self, n: usize, bytes: &[u8]) {
        let name = self.actors[n].name().to_owned();
        let is_relay = matches!(self.actors[n], Actor::Relay(_));
        for frame in decode_all(bytes) {
            let Some(head) = &frame.head else { continue };
            if !is_relay {
                self.sent_bodies.insert(body_hash(&frame));
                continue;
            }
            let link_level = head.hop_count == 0
                && head.forward_for_source.is_empty()
                && matches!(frame.body, Some(Body::Ping(_) | Body::Pong(_)));
            if head.source == name {
                // Besides forward_error, a relay writes only link keepalives of its own.
                if !matches!(frame.body, Some(Body::ForwardError(_))) && !link_level {
                    self.violations
                        .push(format!("{name} originated {:?}", frame.body));
                }
                // Other relays may forward it on.
                self.sent_bodies.insert(body_hash(&frame));
                continue;
            }
            if head.forward_for_source.is_empty() || head.hop_count < 1 {
                self.violations
                    .push(format!("{name} forwarded unstamped {head:?}"));
            }
            if !self.sent_bodies.contains(&body_hash(&frame)) {
                self.violations
                    .push(format!("{name} forwarded a body no node sent: {head:?}"));
            }
        }
    }

    fn transmit(&mut self) {
        let now = self.clock.now();
        let mut buf = std::mem::take(&mut self.buf);
        for n in 0..self.actors.len() {
            while let Some((link, size)) = self.actors[n].transmit(now, &mut buf) {
                if self.tap {
                    self.watch_output(n, &buf[..size]);
                }
                let Some((i, side)) = self.find(n, link) else {
                    continue;
                };
                let l = &mut self.links[i];
                if l.closed[side] {
                    continue;
                }
                if l.kind == LinkKind::Datagram {
                    assert!(size <= l.mtu, "datagram {size} over MTU {}", l.mtu);
                }
                let dir = if side == 0 {
                    &mut l.net.a_to_b
                } else {
                    &mut l.net.b_to_a
                };
                dir.send(now, Bytes::copy_from_slice(&buf[..size]));
            }
            while let Some(action) = self.actors[n].action() {
                if let Action::Close { link, .. } = &action {
                    if let Some((i, side)) = self.find(n, *link) {
                        self.links[i].closed[side] = true;
                    }
                }
            }
        }
        self.buf = buf;
    }

    fn deliver(&mut self) -> bool {
        let now = self.clock.now();
        let mut delivered = false;
        for i in 0..self.links.len() {
            for side in 0..2 {
                let l = &mut self.links[i];
                let (to, dir) = if side == 0 {
                    (l.b, &mut l.net.a_to_b)
                } else {
                    (l.a, &mut l.net.b_to_a)
                };
                let receiver_side = 1 - side;
                let mut got = Vec::new();
                while let Some(d) = dir.poll_deliver(now) {
                    if !l.closed[receiver_side] {
                        got.push(d);
                    }
                    delivered = true;
                }
                let kind = l.kind;
                for d in got {
                    if self.tap {
                        for f in decode_all(&d) {
                            if let Some(head) = f.head {
                                self.seen[to.0].push(Seen {
                                    link: to.1,
                                    head,
                                    body: f.body,
                                });
                            }
                        }
                    }
                    if kind == LinkKind::ByteStream {
                        self.actors[to.0].bytes(now, to.1, &d);
                    } else {
                        self.actors[to.0].datagram(now, to.1, d);
                    }
                }
                let l = &mut self.links[i];
                let dir = if side == 0 {
                    &l.net.a_to_b
                } else {
                    &l.net.b_to_a
                };
                if l.kind != LinkKind::Datagram
                    && l.closed[side]
                    && !l.closed[receiver_side]
                    && dir.in_flight_len() == 0
                {
                    l.closed[receiver_side] = true;
                    delivered = true;
                    self.actors[to.0].closed(now, to.1);
                }
            }
        }
        delivered
    }

    fn read_events(&mut self) {
        for n in 0..self.actors.len() {
            match &mut self.actors[n] {
                Actor::Node(node) => {
                    while let Some(ev) = node.poll_event() {
                        if let NodeEvent::Readable { peer, stream_id } = &ev {
                            while let Some(d) = node.read(peer, *stream_id) {
                                if let Delivery::Message(m) = d {
                                    self.received[n]
                                        .entry((peer.clone(), *stream_id))
                                        .or_default()
                                        .push(m.data);
                                }
                            }
                        }
                        self.events[n].push(ev);
                    }
                }
                Actor::Relay(relay) => {
                    while let Some(ev) = relay.poll_event() {
                        self.relay_events[n].push(ev);
                    }
                }
            }
        }
    }

    /// Runs until `done` holds or `limit` of virtual time passed; returns whether it held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&World) -> bool) -> bool {
        let deadline = self.clock.now() + limit;
        loop {
            self.step();
            if done(self) {
                return true;
            }
            let now = self.clock.now();
            if now >= deadline {
                return false;
            }
            let wake = earliest(
                self.actors
                    .iter()
                    .map(|n| n.poll_timeout())
                    .chain(self.links.iter().map(|l| l.net.poll_timeout())),
            )
            .unwrap_or(deadline)
            .min(deadline)
            .max(now + Duration::from_micros(50));
            self.clock.advance_to(wake);
            let now = self.clock.now();
            let unix = 1_700_000_000_000 + self.clock.elapsed().as_millis() as i64;
            for a in self.actors.iter_mut() {
                a.timeout(now, unix);
            }
        }
    }

    pub fn run_for(&mut self, d: Duration) {
        self.run_until(d, |_| false);
    }

    pub fn got(&self, n: usize, peer: &str, stream: i64) -> &[Bytes] {
        self.received[n]
            .get(&(peer.to_owned(), stream))
            .map_or(&[], Vec::as_slice)
    }

    /// Links up on actor `n` (node LinkAccepted or relay LinkUp events).
    pub fn links_up(&self, n: usize) -> usize {
        match &self.actors[n] {
            Actor::Node(_) => self.events[n]
                .iter()
                .filter(|e| matches!(e, NodeEvent::LinkAccepted { .. }))
                .count(),
            Actor::Relay(_) => self.relay_events[n]
                .iter()
                .filter(|e| matches!(e, RelayEvent::LinkUp { .. }))
                .count(),
        }
    }

    pub fn forward_errors(&self, n: usize) -> Vec<(String, String, atbus_proto::AtbusCloseReason)> {
        self.events[n]
            .iter()
            .filter_map(|e| match e {
                NodeEvent::ForwardError {
                    relay,
                    destination,
                    code,
                    ..
                } => Some((relay.clone(), destination.clone(), *code)),
                _ => None,
            })
            .collect()
    }
}

/// Deterministic messages: `count` of sizes 1..=max.
pub fn messages(seed: u64, count: usize, max: usize) -> Vec<Bytes> {
    let mut x = seed | 1;
    (0..count)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = 1 + (x as usize % max);
            Bytes::from(
                (0..len)
                    .map(|j| (i * 31 + j + seed as usize) as u8)
                    .collect::<Vec<u8>>(),
            )
        })
        .collect()
}
