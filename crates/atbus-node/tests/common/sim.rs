//! The `atbus-netsim` plumbing shared by the test worlds of `atbus-node` and `atbus-relay`
//! (the relay's harness includes this file by path): simulated links between endpoints, moving
//! what each endpoint writes across them, and waking endpoints on time.
//!
//! A world keeps its endpoints, its [`SimLink`]s and its [`Clock`] and passes them in; what it
//! records on top (events, received messages, a wire tap) stays in the world.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use atbus_netsim::{Clock, DuplexLink, LinkConfig, earliest};
use atbus_node::{Action, Direction, LinkId, LinkKind, Node};
use bytes::Bytes;

/// What the simulator needs of a node or a relay.
pub trait Endpoint {
    fn new_link_id(&mut self) -> LinkId;
    fn link_up(&mut self, now: Instant, link: LinkId, kind: LinkKind, mtu: usize, d: Direction);
    fn link_bytes(&mut self, now: Instant, link: LinkId, bytes: &[u8]);
    fn datagram(&mut self, now: Instant, link: LinkId, datagram: Bytes);
    fn link_closed(&mut self, now: Instant, link: LinkId);
    fn timeout(&mut self, now: Instant, unix_ms: i64);
    fn transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<(LinkId, usize)>;
    fn action(&mut self) -> Option<Action>;
    fn wake_at(&self) -> Option<Instant>;
}

impl Endpoint for Node {
    fn new_link_id(&mut self) -> LinkId {
        Node::new_link_id(self)
    }
    fn link_up(&mut self, now: Instant, link: LinkId, kind: LinkKind, mtu: usize, d: Direction) {
        self.handle_link_up(now, link, kind, mtu, d);
    }
    fn link_bytes(&mut self, now: Instant, link: LinkId, bytes: &[u8]) {
        self.handle_link_bytes(now, link, bytes);
    }
    fn datagram(&mut self, now: Instant, link: LinkId, datagram: Bytes) {
        self.handle_datagram(now, link, datagram);
    }
    fn link_closed(&mut self, now: Instant, link: LinkId) {
        self.handle_link_closed(now, link);
    }
    fn timeout(&mut self, now: Instant, unix_ms: i64) {
        self.handle_timeout(now, unix_ms);
    }
    fn transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<(LinkId, usize)> {
        self.poll_transmit(now, buf)
    }
    fn action(&mut self) -> Option<Action> {
        self.poll_action()
    }
    fn wake_at(&self) -> Option<Instant> {
        self.poll_timeout()
    }
}

/// One simulated transport connection between two endpoints.
pub struct SimLink {
    pub kind: LinkKind,
    pub mtu: usize,
    pub net: DuplexLink,
    /// (endpoint index, link id) of the opener (a) and the acceptor (b).
    pub a: (usize, LinkId),
    pub b: (usize, LinkId),
    /// Side closed its end (0 = a, 1 = b).
    pub closed: [bool; 2],
}

/// A reliable byte-stream link: 5 ms one way, no loss, no MTU.
pub fn byte_link() -> LinkConfig {
    LinkConfig::lossless(Duration::from_millis(5))
        .with_reliable(true)
        .with_queue_limit(64 * 1024 * 1024)
        .with_mtu(usize::MAX)
}

/// Opens a link from endpoint `a` (dialer) to endpoint `b`; returns its index in `links`.
#[allow(clippy::too_many_arguments)]
pub fn connect<E: Endpoint>(
    endpoints: &mut [E],
    links: &mut Vec<SimLink>,
    now: Instant,
    seed: u64,
    a: usize,
    b: usize,
    kind: LinkKind,
    net: LinkConfig,
) -> usize {
    let mtu = if kind == LinkKind::Datagram {
        net.mtu
    } else {
        64 * 1024
    };
    let la = endpoints[a].new_link_id();
    let lb = endpoints[b].new_link_id();
    endpoints[a].link_up(now, la, kind, mtu, Direction::Outbound);
    endpoints[b].link_up(now, lb, kind, mtu, Direction::Inbound);
    let seed = atbus_netsim::derive_seed(seed, 100 + links.len() as u64);
    links.push(SimLink {
        kind,
        mtu,
        net: DuplexLink::new(net, seed),
        a: (a, la),
        b: (b, lb),
        closed: [false, false],
    });
    links.len() - 1
}

/// Kills link `i` abruptly: both ends learn it closed.
pub fn kill_link<E: Endpoint>(endpoints: &mut [E], links: &mut [SimLink], now: Instant, i: usize) {
    let l = &mut links[i];
    l.net.set_up(false);
    l.closed = [true, true];
    let (a, b) = (l.a, l.b);
    endpoints[a.0].link_closed(now, a.1);
    endpoints[b.0].link_closed(now, b.1);
}

/// The (link index, side) endpoint `endpoint` has as `link`.
pub fn find(links: &[SimLink], endpoint: usize, link: LinkId) -> Option<(usize, usize)> {
    // The newest link first: a restarted endpoint numbers its links from 0 again.
    links.iter().enumerate().rev().find_map(|(i, l)| {
        if l.a == (endpoint, link) {
            Some((i, 0))
        } else if l.b == (endpoint, link) {
            Some((i, 1))
        } else {
            None
        }
    })
}

/// Puts every package the endpoints have to send on its link (`tap` sees each first, with the
/// writer's index) and drains their actions into `on_action`; a `Close` action closes that side.
pub fn transmit<E: Endpoint>(
    endpoints: &mut [E],
    links: &mut [SimLink],
    now: Instant,
    buf: &mut Vec<u8>,
    mut tap: impl FnMut(usize, &[u8]),
    mut on_action: impl FnMut(usize, Action),
) {
    for (n, endpoint) in endpoints.iter_mut().enumerate() {
        while let Some((link, size)) = endpoint.transmit(now, buf) {
            tap(n, &buf[..size]);
            let Some((i, side)) = find(links, n, link) else {
                continue;
            };
            let l = &mut links[i];
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
        while let Some(action) = endpoint.action() {
            if let Action::Close { link, .. } = &action {
                if let Some((i, side)) = find(links, n, *link) {
                    links[i].closed[side] = true;
                }
            }
            on_action(n, action);
        }
    }
}

/// Hands every package due by `now` to its receiver (`tap` sees each first, with the receiver's
/// index and link); a byte stream whose sender closed ends (EOF) once its data is delivered.
/// Returns whether anything arrived or closed.
pub fn deliver<E: Endpoint>(
    endpoints: &mut [E],
    links: &mut [SimLink],
    now: Instant,
    mut tap: impl FnMut(usize, LinkId, &[u8]),
) -> bool {
    let mut delivered = false;
    for l in links.iter_mut() {
        for side in 0..2 {
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
                tap(to.0, to.1, &d);
                if l.kind == LinkKind::ByteStream {
                    endpoints[to.0].link_bytes(now, to.1, &d);
                } else {
                    endpoints[to.0].datagram(now, to.1, d);
                }
            }
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
                endpoints[to.0].link_closed(now, to.1);
            }
        }
    }
    delivered
}

/// Moves the clock to the earliest wake-up of any endpoint or link (at least 50 µs on, at most
/// `deadline`) and gives every endpoint its timeout.
pub fn advance<E: Endpoint>(
    endpoints: &mut [E],
    links: &[SimLink],
    clock: &mut Clock,
    deadline: Instant,
) {
    let now = clock.now();
    let wake = earliest(
        endpoints
            .iter()
            .map(|e| e.wake_at())
            .chain(links.iter().map(|l| l.net.poll_timeout())),
    )
    .unwrap_or(deadline)
    .min(deadline)
    .max(now + Duration::from_micros(50));
    clock.advance_to(wake);
    let now = clock.now();
    let unix = 1_700_000_000_000 + clock.elapsed().as_millis() as i64;
    for e in endpoints.iter_mut() {
        e.timeout(now, unix);
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
