//! A world of nodes over `atbus-netsim` links: the test harness of the node core.

#![allow(dead_code)]

mod sim;

#[allow(unused_imports)] // Each test binary uses some of them.
pub use sim::{SimLink, byte_link, messages};

use std::collections::BTreeMap;
use std::time::Duration;

use atbus_netsim::{Clock, LinkConfig};
use atbus_node::{
    AccessToken, Action, Delivery, LinkKind, Node, NodeConfig, NodeEvent, OutgoingMessage,
};
use bytes::Bytes;
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

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
        sim::connect(
            &mut self.nodes,
            &mut self.links,
            now,
            self.seed,
            a,
            b,
            kind,
            net,
        )
    }

    /// Kills link `i` abruptly: both nodes learn it closed.
    pub fn kill_link(&mut self, i: usize) {
        sim::kill_link(&mut self.nodes, &mut self.links, self.clock.now(), i);
    }

    pub fn send(&mut self, from: usize, to: &str, stream: i64, data: Bytes) -> u64 {
        self.nodes[from]
            .send(to, stream, OutgoingMessage::data(data))
            .expect("send")
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
        let actions = &mut self.actions;
        sim::transmit(
            &mut self.nodes,
            &mut self.links,
            self.clock.now(),
            &mut self.buf,
            |_, _| {},
            |n, action| actions[n].push(action),
        );
    }

    fn deliver(&mut self) -> bool {
        sim::deliver(
            &mut self.nodes,
            &mut self.links,
            self.clock.now(),
            |_, _, _| {},
        )
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
            if self.clock.now() >= deadline {
                return false;
            }
            sim::advance(&mut self.nodes, &self.links, &mut self.clock, deadline);
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
