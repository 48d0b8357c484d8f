//! A world of nodes and relays over `atbus-netsim` links: the relay core's test harness.
//!
//! Besides moving bytes, the harness watches the wire: every package a relay writes is decoded
//! and checked (a relay originates nothing but `forward_error`, stamps every frame it forwards,
//! and leaves each body byte for byte as its sender wrote it), and the heads each actor
//! receives are recorded for the tests to inspect.

#![allow(dead_code)]

#[path = "../../../atbus-node/tests/common/sim.rs"]
mod sim;

use sim::Endpoint;
#[allow(unused_imports)] // Each test binary uses some of them.
pub use sim::{SimLink, byte_link, messages};

use std::collections::{BTreeMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};

use atbus_frame::{FrameLimits, StreamDecoder};
use atbus_netsim::{Clock, LinkConfig};
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

impl Endpoint for Actor {
    fn new_link_id(&mut self) -> LinkId {
        match self {
            Actor::Node(n) => n.new_link_id(),
            Actor::Relay(r) => r.new_link_id(),
        }
    }
    fn link_up(&mut self, now: Instant, l: LinkId, k: LinkKind, mtu: usize, d: Direction) {
        match self {
            Actor::Node(n) => n.handle_link_up(now, l, k, mtu, d),
            Actor::Relay(r) => r.handle_link_up(now, l, k, mtu, d),
        }
    }
    fn link_bytes(&mut self, now: Instant, l: LinkId, b: &[u8]) {
        match self {
            Actor::Node(n) => n.handle_link_bytes(now, l, b),
            Actor::Relay(r) => r.handle_link_bytes(now, l, b),
        }
    }
    fn datagram(&mut self, now: Instant, l: LinkId, b: Bytes) {
        match self {
            Actor::Node(n) => n.handle_datagram(now, l, b),
            Actor::Relay(r) => r.handle_datagram(now, l, b),
        }
    }
    fn link_closed(&mut self, now: Instant, l: LinkId) {
        match self {
            Actor::Node(n) => n.handle_link_closed(now, l),
            Actor::Relay(r) => r.handle_link_closed(now, l),
        }
    }
    fn timeout(&mut self, now: Instant, unix: i64) {
        match self {
            Actor::Node(n) => n.handle_timeout(now, unix),
            Actor::Relay(r) => r.handle_timeout(now, unix),
        }
    }
    fn transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<(LinkId, usize)> {
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
    fn wake_at(&self) -> Option<Instant> {
        match self {
            Actor::Node(n) => n.poll_timeout(),
            Actor::Relay(r) => r.poll_timeout(),
        }
    }
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
    /// Each actor's name and whether it is a relay (for the wire checks).
    who: Vec<(String, bool)>,
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
            who: Vec::new(),
            buf: Vec::new(),
        }
    }

    fn rng(&self, salt: u64) -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(atbus_netsim::derive_seed(self.seed, salt))
    }

    fn push(&mut self, actor: Actor) -> usize {
        let who = match &actor {
            Actor::Node(n) => (n.name().to_owned(), false),
            Actor::Relay(r) => (r.name().to_owned(), true),
        };
        self.who.push(who);
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
        sim::connect(
            &mut self.actors,
            &mut self.links,
            now,
            self.seed,
            a,
            b,
            kind,
            net,
        )
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
        sim::kill_link(&mut self.actors, &mut self.links, self.clock.now(), i);
    }

    pub fn send(&mut self, from: usize, to: &str, stream: i64, data: Bytes) -> u64 {
        self.node(from)
            .send(to, stream, OutgoingMessage::data(data))
            .expect("send")
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

    fn transmit(&mut self) {
        let (who, sent_bodies, violations) =
            (&self.who, &mut self.sent_bodies, &mut self.violations);
        let tap = self.tap;
        sim::transmit(
            &mut self.actors,
            &mut self.links,
            self.clock.now(),
            &mut self.buf,
            |n, bytes| {
                if tap {
                    let (name, is_relay) = &who[n];
                    watch_output(name, *is_relay, bytes, sent_bodies, violations);
                }
            },
            |_, _| {},
        );
    }

    fn deliver(&mut self) -> bool {
        let (seen, tap) = (&mut self.seen, self.tap);
        sim::deliver(
            &mut self.actors,
            &mut self.links,
            self.clock.now(),
            |to, link, d| {
                if tap {
                    for f in decode_all(d) {
                        if let Some(head) = f.head {
                            seen[to].push(Seen {
                                link,
                                head,
                                body: f.body,
                            });
                        }
                    }
                }
            },
        )
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
            if self.clock.now() >= deadline {
                return false;
            }
            sim::advance(&mut self.actors, &self.links, &mut self.clock, deadline);
        }
    }

    pub fn run_for(&mut self, d: Duration) {
        self.run_until(d, |_| false);
    }

    /// Node `from` sends each of `msgs` to `to` on `stream`, in order.
    pub fn send_all(&mut self, from: usize, to: &str, stream: i64, msgs: &[Bytes]) {
        for m in msgs {
            self.send(from, to, stream, m.clone());
        }
    }

    /// Runs until node `n` read at least `count` messages from `peer` on `stream`, or `limit`
    /// of virtual time passed; returns whether it did.
    pub fn run_until_got(
        &mut self,
        n: usize,
        peer: &str,
        stream: i64,
        count: usize,
        limit: Duration,
    ) -> bool {
        self.run_until(limit, |w| w.got(n, peer, stream).len() >= count)
    }

    /// Opens a reliable byte-stream link for each (dialer, acceptor) pair, in order.
    pub fn connect_bytes(&mut self, pairs: &[(usize, usize)]) -> Vec<usize> {
        pairs
            .iter()
            .map(|&(a, b)| self.connect(a, b, LinkKind::ByteStream, byte_link()))
            .collect()
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

/// Checks one package run written by actor `name`: a relay originates nothing but
/// `forward_error` and link keepalives, stamps what it forwards, and forwards only bodies some
/// node sent.
fn watch_output(
    name: &str,
    is_relay: bool,
    bytes: &[u8],
    sent_bodies: &mut HashSet<u64>,
    violations: &mut Vec<String>,
) {
    for frame in decode_all(bytes) {
        let Some(head) = &frame.head else { continue };
        if !is_relay {
            sent_bodies.insert(body_hash(&frame));
            continue;
        }
        let link_level = head.hop_count == 0
            && head.forward_for_source.is_empty()
            && matches!(frame.body, Some(Body::Ping(_) | Body::Pong(_)));
        if head.source == name {
            // Besides forward_error, a relay writes only link keepalives of its own.
            if !matches!(frame.body, Some(Body::ForwardError(_))) && !link_level {
                violations.push(format!("{name} originated {:?}", frame.body));
            }
            // Other relays may forward it on.
            sent_bodies.insert(body_hash(&frame));
            continue;
        }
        if head.forward_for_source.is_empty() || head.hop_count < 1 {
            violations.push(format!("{name} forwarded unstamped {head:?}"));
        }
        if !sent_bodies.contains(&body_hash(&frame)) {
            violations.push(format!("{name} forwarded a body no node sent: {head:?}"));
        }
    }
}
