//! A world of nodes over `atbus-netsim` links: the test harness of the node core.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use atbus_netsim::{Clock, DuplexLink, LinkConfig, earliest};
use atbus_node::{
    AccessToken, Action, Delivery, Direction, LinkId, LinkKind, Node, NodeConfig, NodeEvent,
    OutgoingMessage,
};
use bytes::Bytes;
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

/// One simulated transport connection between two nodes.
pub struct SimLink {
    pub kind: LinkKind,
    pub mtu: usize,
    pub net: DuplexLink,
    /// (node index, link id) of the opener (a) and the acceptor (b).
    pub a: (usize, LinkId),
    pub b: (usize, LinkId),
    /// Side closed its end (0 = a, 1 = b).
    pub closed: [bool; 2],
}

pub struct World {
    pub clock: Clock,
    pub nodes: Vec<Node>,
    pub links: Vec<SimLink>,
    pub events: Vec<Vec<NodeEvent>>,
    pub actions: Vec<Vec<Action>>,
    /// Messages each node read, per (peer, stream).
    pub received: Vec<BTreeMap<(String, i64), Vec<Bytes>>>,
    pub seed: u64,
    buf: Vec<u8>,
}

pub fn token(key: &str, secret: &str) -> AccessToken {
    AccessToken::new(key, secret.as_bytes().to_vec())
}

pub fn config(name: &str, tokens: Vec<AccessToken>) -> NodeConfig {
    let mut c = NodeConfig::new(name).with_tokens(tokens);
    c.session.path_idle_timeout = Duration::from_secs(30);
    c.reconnect_wait = Duration::from_secs(60);
    c
}

pub fn byte_link() -> LinkConfig {
    LinkConfig::lossless(Duration::from_millis(5))
        .with_reliable(true)
        .with_queue_limit(64 * 1024 * 1024)
        .with_mtu(usize::MAX)
}

pub fn lossy_link(loss: f64) -> LinkConfig {
    LinkConfig::lossy(Duration::from_millis(8), loss).with_mtu(548)
}

impl World {
    pub fn new(seed: u64) -> Self {
        Self {
            clock: Clock::new(),
            nodes: Vec::new(),
            links: Vec::new(),
            events: Vec::new(),
            actions: Vec::new(),
            received: Vec::new(),
            seed,
            buf: Vec::new(),
        }
    }

    pub fn add_node(&mut self, config: NodeConfig) -> usize {
        let rng = ChaCha20Rng::seed_from_u64(atbus_netsim::derive_seed(
            self.seed,
            1000 + self.nodes.len() as u64,
        ));
        let node = Node::new(config, self.clock.now(), rng).expect("valid config");
        self.nodes.push(node);
        self.events.push(Vec::new());
        self.actions.push(Vec::new());
        self.received.push(BTreeMap::new());
        self.nodes.len() - 1
    }

    /// Replaces node `i` by a new process with `config` (a restart: new incarnation).
    pub fn restart_node(&mut self, i: usize, config: NodeConfig) {
        let rng = ChaCha20Rng::seed_from_u64(atbus_netsim::derive_seed(
            self.seed,
            5000 + self.links.len() as u64,
        ));
        self.nodes[i] = Node::new(config, self.clock.now(), rng).expect("valid config");
        self.received[i].clear();
        // Its links died with it.
        for l in self.links.iter_mut() {
            if l.a.0 == i || l.b.0 == i {
                l.closed = [true, true];
                l.net.set_up(false);
                let other = if l.a.0 == i { l.b } else { l.a };
                self.nodes[other.0].handle_link_closed(self.clock.now(), other.1);
            }
        }
    }

    /// Opens a link from node `a` (client) to node `b` (server).
    pub fn connect(&mut self, a: usize, b: usize, kind: LinkKind, net: LinkConfig) -> usize {
        let now = self.clock.now();
        let mtu = if kind == LinkKind::Datagram {
            net.mtu
        } else {
            64 * 1024
        };
        let la = self.nodes[a].new_link_id();
        let lb = self.nodes[b].new_link_id();
        self.nodes[a].handle_link_up(now, la, kind, mtu, Direction::Outbound);
        self.nodes[b].handle_link_up(now, lb, kind, mtu, Direction::Inbound);
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

    /// Kills link `i` abruptly: both nodes learn it closed.
    pub fn kill_link(&mut self, i: usize) {
        let now = self.clock.now();
        let l = &mut self.links[i];
        l.net.set_up(false);
        let (a, b) = (l.a, l.b);
        l.closed = [true, true];
        self.nodes[a.0].handle_link_closed(now, a.1);
        self.nodes[b.0].handle_link_closed(now, b.1);
    }

    pub fn send(&mut self, from: usize, to: &str, stream: i64, data: Bytes) -> u64 {
        self.nodes[from]
            .send(to, stream, OutgoingMessage::data(data))
            .expect("send")
    }

    fn find(&self, node: usize, link: LinkId) -> Option<(usize, usize)> {
        // The newest link first: a restarted node numbers its links from 0 again.
        self.links.iter().enumerate().rev().find_map(|(i, l)| {
            if l.a == (node, link) {
                Some((i, 0))
            } else if l.b == (node, link) {
                Some((i, 1))
            } else {
                None
            }
        })
    }

    /// Transmits, delivers and reads until nothing more happens at this instant.
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
        let now = self.clock.now();
        for n in 0..self.nodes.len() {
            while let Some((link, size)) = self.nodes[n].poll_transmit(now, &mut self.buf) {
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
                dir.send(now, Bytes::copy_from_slice(&self.buf[..size]));
            }
            while let Some(action) = self.nodes[n].poll_action() {
                if let Action::Close { link, .. } = &action {
                    if let Some((i, side)) = self.find(n, *link) {
                        self.links[i].closed[side] = true;
                    }
                }
                self.actions[n].push(action);
            }
        }
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
                while let Some(d) = dir.poll_deliver(now) {
                    delivered = true;
                    if l.closed[receiver_side] {
                        continue;
                    }
                    if l.kind == LinkKind::ByteStream {
                        self.nodes[to.0].handle_link_bytes(now, to.1, &d);
                    } else {
                        self.nodes[to.0].handle_datagram(now, to.1, d);
                    }
                }
                // A byte stream closed by the sender ends (EOF) once its data is delivered.
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
                    self.nodes[to.0].handle_link_closed(now, to.1);
                }
            }
        }
        delivered
    }

    fn read_events(&mut self) {
        for n in 0..self.nodes.len() {
            while let Some(ev) = self.nodes[n].poll_event() {
                if let NodeEvent::Readable { peer, stream_id } = &ev {
                    while let Some(d) = self.nodes[n].read(peer, *stream_id) {
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
                self.nodes
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
            for n in self.nodes.iter_mut() {
                n.handle_timeout(now, unix);
            }
        }
    }

    pub fn run_for(&mut self, d: Duration) {
        self.run_until(d, |_| false);
    }

    pub fn accepted(&self, n: usize) -> usize {
        self.events[n]
            .iter()
            .filter(|e| matches!(e, NodeEvent::LinkAccepted { .. }))
            .count()
    }

    pub fn rejected(&self, n: usize) -> Vec<atbus_node::LinkCloseReason> {
        self.events[n]
            .iter()
            .filter_map(|e| match e {
                NodeEvent::LinkRejected { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn got(&self, n: usize, peer: &str, stream: i64) -> &[Bytes] {
        self.received[n]
            .get(&(peer.to_owned(), stream))
            .map_or(&[], Vec::as_slice)
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
