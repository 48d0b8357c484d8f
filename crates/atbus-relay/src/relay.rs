//! The relay: a router-mode node plus routing, head stamping and bounded per-link queues.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use atbus_frame::FrameLimits;
use atbus_node::routed::{BodyKind, RoutedFrame, write_package_replacing_head};
use atbus_node::{
    Action, Direction, LinkCloseReason, LinkId, LinkKind, Node, NodeEvent, capabilities,
};
use atbus_proto::{AtbusCloseReason, ForwardErrorData, FrameMessage, MessageHead};
use bytes::Bytes;
use rand_core::CryptoRng;

use crate::config::RelayConfig;
use crate::error::{DropReason, RelayError};
use crate::metrics::{LinkMetrics, QueueDelays, RelayMetrics};

/// The `metadata.kind` of a relay's discovery record: what an `advertise_relay` reference by
/// metadata only is resolved among.
pub const RELAY_KIND: &str = "relay";

/// Something the owner of a relay may log or act on; pulled with [`Relay::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayEvent {
    /// A link finished its handshake.
    LinkUp {
        /// Link.
        link: LinkId,
        /// Authenticated peer name.
        peer: String,
        /// Whether the peer is a trusted relay.
        relay: bool,
    },
    /// An established link closed; what was queued for it is dropped.
    LinkDown {
        /// Link.
        link: LinkId,
        /// Peer name.
        peer: String,
        /// Why, when known.
        reason: Option<LinkCloseReason>,
    },
    /// A handshake failed; the link is closed.
    LinkRejected {
        /// Link.
        link: LinkId,
        /// Why.
        reason: LinkCloseReason,
    },
}

/// One authenticated link of the relay.
#[derive(Debug)]
struct RelayLink {
    peer: String,
    /// A trusted peer relay (its forwarding fields are kept).
    relay: bool,
    /// The peer announced the `RELAY` capability.
    announces_relay: bool,
    /// Access key id the peer proved in the handshake.
    key_id: String,
    kind: LinkKind,
    /// Largest package the link takes: its MTU (datagrams) or frame limit, and what the peer
    /// accepts.
    max_package: usize,
    /// Packages and when each was queued (for the queue delay metric).
    queue: VecDeque<(Bytes, Instant)>,
    queued_bytes: usize,
    blocked: bool,
    frames_in: u64,
    frames_out: u64,
    bytes_out: u64,
    dropped_queue_full: u64,
}

/// A sans-IO relay: accepts links from nodes and relays (the node's handshake and
/// authentication), and forwards each frame whose destination is another node, unread.
///
/// Drive it like a [`Node`]: push input with `handle_*`, then drain `poll_transmit`,
/// `poll_action`, `poll_event`, and wake it at `poll_timeout`.
pub struct Relay {
    node: Node,
    config: RelayConfig,
    frame_limits: FrameLimits,
    links: BTreeMap<LinkId, RelayLink>,
    by_name: BTreeMap<String, BTreeSet<LinkId>>,
    metrics: RelayMetrics,
    queue_delays: QueueDelays,
    events: VecDeque<RelayEvent>,
    /// Link served last by `poll_transmit` (round robin).
    cursor: Option<LinkId>,
    /// When a `forward_error` last went back per (link, destination, code).
    error_times: BTreeMap<(LinkId, String, i32), Instant>,
    /// Routes learned from discovery records (destination → relay); configured routes win.
    discovered: BTreeMap<String, String>,
    /// Routes learned from traffic: first source → (trusted relay it came through, when last
    /// seen). Used after every other route except the upstream.
    learned: BTreeMap<String, (String, Instant)>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("name", &self.node.name())
            .field("links", &self.links.len())
            .field("metrics", &self.metrics)
            .finish()
    }
}

impl Relay {
    /// A relay started at `now`; its nonces come from `rng`.
    pub fn new(
        mut config: RelayConfig,
        now: Instant,
        rng: impl CryptoRng + Send + 'static,
    ) -> Result<Self, RelayError> {
        if config.hop_limit < 1 {
            return Err(RelayError::Limit("hop_limit must be at least 1".into()));
        }
        if config.max_queue_frames == 0 || config.max_queue_bytes == 0 {
            return Err(RelayError::Limit("queue limits must be positive".into()));
        }
        config.node.capabilities |= capabilities::RELAY;
        let frame_limits = FrameLimits {
            max_frame_length: config.node.limits.max_frame_length,
        };
        let node = Node::new(config.node.clone(), now, rng)?;
        let queue_delays = QueueDelays::new(config.queue_delay_destinations);
        Ok(Self {
            node,
            config,
            frame_limits,
            links: BTreeMap::new(),
            by_name: BTreeMap::new(),
            metrics: RelayMetrics::default(),
            queue_delays,
            events: VecDeque::new(),
            cursor: None,
            error_times: BTreeMap::new(),
            discovered: BTreeMap::new(),
            learned: BTreeMap::new(),
        })
    }

    // ----- getters -----

    /// The relay's name.
    pub fn name(&self) -> &str {
        self.node.name()
    }

    /// The router-mode node underneath (links, handshakes).
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The configuration.
    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// Relay-wide counters.
    pub fn metrics(&self) -> &RelayMetrics {
        &self.metrics
    }

    /// How long frames waited in the outgoing queues, per destination (bounded series).
    pub fn queue_delays(&self) -> &QueueDelays {
        &self.queue_delays
    }

    /// Counters and queue depth of every authenticated link.
    pub fn link_metrics(&self) -> Vec<LinkMetrics> {
        self.links
            .iter()
            .map(|(&link, l)| LinkMetrics {
                link,
                peer: l.peer.clone(),
                relay: l.relay,
                frames_in: l.frames_in,
                frames_out: l.frames_out,
                bytes_out: l.bytes_out,
                queued_frames: l.queue.len(),
                queued_bytes: l.queued_bytes,
                dropped_queue_full: l.dropped_queue_full,
                blocked: l.blocked,
            })
            .collect()
    }

    /// Authenticated links to `peer`.
    pub fn links_to(&self, peer: &str) -> Vec<LinkId> {
        self.by_name
            .get(peer)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// A fresh link id for a link the driver opened or accepted.
    pub fn new_link_id(&mut self) -> LinkId {
        self.node.new_link_id()
    }

    // ----- inputs -----

    /// A link is up (see [`Node::handle_link_up`]).
    pub fn handle_link_up(
        &mut self,
        now: Instant,
        link: LinkId,
        kind: LinkKind,
        mtu: usize,
        direction: Direction,
    ) {
        self.node.handle_link_up(now, link, kind, mtu, direction);
        self.process(now);
    }

    /// Bytes read from a byte-stream link.
    pub fn handle_link_bytes(&mut self, now: Instant, link: LinkId, bytes: &[u8]) {
        self.node.handle_link_bytes(now, link, bytes);
        self.process(now);
    }

    /// One datagram (or in-process buffer) of whole packages.
    pub fn handle_datagram(&mut self, now: Instant, link: LinkId, datagram: Bytes) {
        self.node.handle_datagram(now, link, datagram);
        self.process(now);
    }

    /// The transport closed `link`.
    pub fn handle_link_closed(&mut self, now: Instant, link: LinkId) {
        self.node.handle_link_closed(now, link);
        self.process(now);
        self.remove_link(link);
    }

    /// The driver could not write on `link`: nothing more is written to it until
    /// [`Relay::handle_link_writable`]; its queue fills and then drops, other links go on.
    pub fn handle_link_blocked(&mut self, link: LinkId) {
        if let Some(l) = self.links.get_mut(&link) {
            l.blocked = true;
        }
    }

    /// `link` takes writes again.
    pub fn handle_link_writable(&mut self, link: LinkId) {
        if let Some(l) = self.links.get_mut(&link) {
            l.blocked = false;
        }
    }

    /// Runs timers due at `now` (handshakes, reconnects); `unix_ms` is the wall clock.
    pub fn handle_timeout(&mut self, now: Instant, unix_ms: i64) {
        self.node.handle_timeout(now, unix_ms);
        self.process(now);
        let interval = self.config.forward_error_interval;
        self.error_times.retain(|_, &mut t| t + interval > now);
        let ttl = self.config.learned_route_ttl;
        self.learned.retain(|_, (_, t)| *t + ttl > now);
    }

    // ----- mutators -----

    /// Frames for `destination` go to peer relay `relay` when no direct link reaches it.
    pub fn set_route(&mut self, destination: impl Into<String>, relay: impl Into<String>) {
        self.config.routes.insert(destination.into(), relay.into());
    }

    /// Removes the route of `destination`.
    pub fn remove_route(&mut self, destination: &str) {
        self.config.routes.remove(destination);
    }

    /// Replaces the set of trusted peer relays ([`RelayConfig::peer_relays`]) and re-checks
    /// every open link: a link from a relay that is now listed (and announced `RELAY`, and
    /// proved one of [`RelayConfig::relay_key_ids`] when that list is set) becomes trusted, one
    /// that is no longer listed becomes a plain node's link. Learned routes through relays no
    /// longer trusted are forgotten.
    pub fn set_peer_relays(&mut self, relays: impl IntoIterator<Item = String>) {
        let mut relays: Vec<String> = relays.into_iter().collect();
        relays.sort();
        relays.dedup();
        self.config.peer_relays = relays;
        let mut changed = Vec::new();
        for (&id, l) in &mut self.links {
            let trusted = trusts(&self.config, &l.peer, l.announces_relay, &l.key_id);
            if trusted != l.relay {
                l.relay = trusted;
                changed.push((id, l.peer.clone(), trusted));
            }
        }
        for (link, peer, relay) in changed {
            tracing::info!(link = link.0, %peer, relay, "peer relay trust changed");
        }
        let config = &self.config;
        self.learned
            .retain(|_, (relay, _)| config.peer_relays.contains(relay));
    }

    /// Relays this relay routes through (configured and discovered routes, the upstream) that
    /// it has no trusted link to: the service dials them.
    pub fn missing_relays(&self) -> BTreeSet<String> {
        self.config
            .routes
            .values()
            .chain(self.discovered.values())
            .chain(self.config.upstream.as_ref())
            .filter(|r| !self.has_trusted_link(r))
            .cloned()
            .collect()
    }

    /// Whether an authenticated link to `relay` is trusted as a relay link.
    pub fn has_trusted_link(&self, relay: &str) -> bool {
        self.by_name.get(relay).is_some_and(|links| {
            links
                .iter()
                .any(|l| self.links.get(l).is_some_and(|x| x.relay))
        })
    }

    /// The relay a route learned from traffic sends `destination` to, if any.
    pub fn learned_route(&self, destination: &str) -> Option<&str> {
        self.learned.get(destination).map(|(r, _)| r.as_str())
    }

    /// Replaces the routes learned from discovery with those `records` give: a node whose
    /// record advertises a relay other than this one (`advertise_relay` with a name) is reached
    /// through that relay. Nodes that advertise this relay link to it directly and need no
    /// route. A reference by metadata only (`advertise_relay: {metadata: …}`) is resolved
    /// among the same records, as senders resolve it: the first relay record (kind
    /// [`RELAY_KIND`], ordered by name) whose metadata matches; one that matches no relay record
    /// gives no route. Configured routes ([`RelayConfig::routes`], [`Relay::set_route`]) take
    /// precedence.
    pub fn set_discovered_routes<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a atbus_discovery::NodeRecord>,
    ) {
        let own = self.node.name().to_owned();
        let records: Vec<&atbus_discovery::NodeRecord> = records.into_iter().collect();
        let mut relays: Vec<&atbus_discovery::NodeRecord> = records
            .iter()
            .copied()
            .filter(|r| r.metadata.kind == RELAY_KIND)
            .collect();
        relays.sort_by(|x, y| x.name.cmp(&y.name));
        self.discovered = records
            .iter()
            .filter(|r| r.name != own)
            .filter_map(|r| {
                let reference = r.advertise_relay.as_ref()?;
                let relay = match (&reference.name, &reference.metadata) {
                    (Some(name), _) => name.clone(),
                    (None, Some(wanted)) => relays
                        .iter()
                        .find(|relay| wanted.matches(&relay.metadata))?
                        .name
                        .clone(),
                    (None, None) => return None,
                };
                (relay != own && relay != r.name).then(|| (r.name.clone(), relay))
            })
            .collect();
    }

    /// The relay that frames for `destination` go to when no direct link reaches it.
    pub fn route_of(&self, destination: &str) -> Option<&str> {
        self.config
            .routes
            .get(destination)
            .or_else(|| self.discovered.get(destination))
            .or_else(|| self.learned.get(destination).map(|(r, _)| r))
            .or(self.config.upstream.as_ref())
            .map(String::as_str)
    }

    /// Closes every link with `SHUTDOWN` (a `link_close` goes out on each before its
    /// `Action::Close`); queued frames are dropped. New links are still accepted: stop
    /// listening first.
    pub fn shutdown(&mut self, now: Instant) {
        let links: Vec<LinkId> = self.links.keys().copied().collect();
        for link in links {
            self.node.close_link_with(
                now,
                link,
                AtbusCloseReason::Shutdown,
                "the relay is shutting down",
            );
        }
        self.process(now);
    }

    // ----- outputs -----

    /// Writes the next output into `buf` (cleared first) and says which link it goes on:
    /// the node's own handshake and close packages first, then queued frames, one link at a
    /// time in round robin so one busy link never starves the others.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<(LinkId, usize)> {
        if let Some(out) = self.node.poll_transmit(now, buf) {
            return Some(out);
        }
        buf.clear();
        let start = self.cursor.map_or(LinkId(0), |c| LinkId(c.0 + 1));
        let next = self
            .links
            .range(start..)
            .chain(self.links.range(..start))
            .find(|(_, l)| !l.blocked && !l.queue.is_empty())
            .map(|(&id, _)| id)?;
        self.cursor = Some(next);
        let max = self.config.max_transmit_bytes;
        let l = self.links.get_mut(&next)?;
        let limit = if l.kind == LinkKind::Datagram {
            l.max_package
        } else {
            max
        };
        let first = l.frames_out;
        let delays = std::iter::from_fn(|| {
            let (p, at) = l.queue.front()?;
            if !buf.is_empty() && buf.len() + p.len() > limit {
                return None;
            }
            buf.extend_from_slice(p);
            let delay = now.saturating_duration_since(*at);
            l.queued_bytes -= p.len();
            l.queue.pop_front();
            l.frames_out += 1;
            Some(delay)
        });
        self.queue_delays.record(now, &l.peer, delays);
        self.metrics.frames_forwarded += l.frames_out - first;
        l.bytes_out += buf.len() as u64;
        self.metrics.bytes_forwarded += buf.len() as u64;
        Some((next, buf.len()))
    }

    /// The next action for the driver (connect, close, pause reading).
    pub fn poll_action(&mut self) -> Option<Action> {
        self.node.poll_action()
    }

    /// When `handle_timeout` should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.node.poll_timeout()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<RelayEvent> {
        self.events.pop_front()
    }

    // ----- internals -----

    /// Takes in what the node produced: link changes first, then frames to route.
    fn process(&mut self, now: Instant) {
        while let Some(event) = self.node.poll_event() {
            match event {
                NodeEvent::LinkAccepted { link, peer } => self.add_link(link, peer),
                NodeEvent::LinkClosed { link, peer, reason } => {
                    self.remove_link(link);
                    self.events
                        .push_back(RelayEvent::LinkDown { link, peer, reason });
                }
                NodeEvent::LinkRejected { link, reason } => {
                    self.events
                        .push_back(RelayEvent::LinkRejected { link, reason });
                }
                _ => {}
            }
        }
        while let Some(frame) = self.node.poll_routed() {
            self.forward(now, frame);
        }
    }

    fn add_link(&mut self, link: LinkId, peer: String) {
        let Some(info) = self.node.link_info(link) else {
            return;
        };
        let announces_relay = info.capabilities & capabilities::RELAY != 0;
        let relay = trusts(&self.config, &peer, announces_relay, &info.key_id);
        tracing::debug!(link = link.0, peer = %peer, relay, "relay link up");
        self.by_name.entry(peer.clone()).or_default().insert(link);
        self.links.insert(
            link,
            RelayLink {
                peer: peer.clone(),
                relay,
                announces_relay,
                key_id: info.key_id,
                kind: info.kind,
                max_package: info
                    .peer_max_package
                    .min(if info.kind == LinkKind::Datagram {
                        info.mtu
                    } else {
                        self.frame_limits.max_package_len()
                    }),
                queue: VecDeque::new(),
                queued_bytes: 0,
                blocked: false,
                frames_in: 0,
                frames_out: 0,
                bytes_out: 0,
                dropped_queue_full: 0,
            },
        );
        self.events
            .push_back(RelayEvent::LinkUp { link, peer, relay });
    }

    fn remove_link(&mut self, link: LinkId) {
        let Some(l) = self.links.remove(&link) else {
            return;
        };
        for _ in 0..l.queue.len() {
            self.metrics.count_drop(DropReason::LinkClosed);
        }
        if let Some(set) = self.by_name.get_mut(&l.peer) {
            set.remove(&link);
            if set.is_empty() {
                self.by_name.remove(&l.peer);
            }
        }
        self.error_times.retain(|(id, _, _), _| *id != link);
    }

    fn drop_frame(&mut self, reason: DropReason) {
        tracing::trace!(%reason, "frame dropped");
        self.metrics.count_drop(reason);
    }

    /// Routes one frame: check and stamp the head, pick the outgoing link, queue the package.
    fn forward(&mut self, now: Instant, rf: RoutedFrame) {
        self.metrics.frames_received += 1;
        let ingress = rf.link;
        let Some(in_link) = self.links.get_mut(&ingress) else {
            // Frames of a link the relay does not know (it closed meanwhile).
            self.drop_frame(DropReason::LinkClosed);
            return;
        };
        in_link.frames_in += 1;
        let (in_peer, in_relay) = (in_link.peer.clone(), in_link.relay);
        let Ok(outline) = rf.outline else {
            self.drop_frame(DropReason::Malformed);
            return;
        };
        let Some(mut head) = outline.head else {
            self.drop_frame(DropReason::NoHead);
            return;
        };
        if in_relay {
            if head.hop_count < 0 || head.forward_for_source.is_empty() {
                self.drop_frame(DropReason::Malformed);
                return;
            }
            self.learn(now, &head.forward_for_source, &in_peer);
        } else {
            if head.source != in_peer {
                self.drop_frame(DropReason::ForgedSource);
                return;
            }
            // Whatever a plain node wrote in the forwarding fields is replaced: only relays
            // write them.
            head.forward_for_source = in_peer;
            head.forward_for_connection_id = i64::try_from(ingress.0).unwrap_or(i64::MAX);
            head.hop_count = 0;
        }
        if head.destination.is_empty() || head.destination == self.node.name() {
            self.drop_frame(DropReason::ToRelay);
            return;
        }
        let is_error = outline.body == BodyKind::ForwardError;
        if head.hop_count >= self.config.hop_limit {
            self.drop_frame(DropReason::HopLimit);
            if !is_error {
                let message = format!(
                    "{} relays crossed, the hop limit is {}",
                    head.hop_count, self.config.hop_limit
                );
                self.send_forward_error(now, ingress, &head, AtbusCloseReason::HopLimit, message);
            }
            return;
        }
        head.hop_count += 1;
        let egress = match self.route(&head, ingress) {
            Ok(link) => link,
            Err(reason) => {
                self.drop_frame(reason);
                if !is_error {
                    let message = format!(
                        "relay {} has no way to {:?} ({reason})",
                        self.node.name(),
                        head.destination
                    );
                    self.send_forward_error(
                        now,
                        ingress,
                        &head,
                        AtbusCloseReason::Unreachable,
                        message,
                    );
                }
                return;
            }
        };
        // Written once into its own buffer, which the queue then owns: no copy.
        let mut package = Vec::new();
        let written = write_package_replacing_head(
            &rf.frame,
            outline.head_span,
            &head,
            &self.frame_limits,
            &mut package,
        );
        match written {
            Ok(_) => self.enqueue(now, egress, Bytes::from(package)),
            Err(_) => self.drop_frame(DropReason::TooLarge),
        }
    }

    /// The outgoing link for `head.destination`: a direct link, else the route's relay, else
    /// the upstream relay; never the link the frame came in on.
    fn route(&self, head: &MessageHead, ingress: LinkId) -> Result<LinkId, DropReason> {
        let dest = head.destination.as_str();
        if dest == head.source {
            return Err(DropReason::Reflection);
        }
        let mut reflected = false;
        if let Some(links) = self.by_name.get(dest) {
            if let Some(&l) = links.iter().find(|&&l| l != ingress) {
                return Ok(l);
            }
            reflected = true;
        }
        let relays = self
            .config
            .routes
            .get(dest)
            .or_else(|| self.discovered.get(dest))
            .into_iter()
            .chain(self.learned.get(dest).map(|(r, _)| r))
            .chain(self.config.upstream.as_ref());
        for relay in relays {
            let Some(links) = self.by_name.get(relay) else {
                continue;
            };
            let mut trusted = links
                .iter()
                .filter(|l| self.links.get(l).is_some_and(|x| x.relay));
            if let Some(&l) = trusted.clone().find(|&&l| l != ingress) {
                return Ok(l);
            }
            if trusted.next().is_some() {
                reflected = true;
            }
        }
        Err(if reflected {
            DropReason::Reflection
        } else {
            DropReason::Unreachable
        })
    }

    /// Remembers that frames first sent by `source` arrive through trusted relay `relay`, so
    /// answers to it can go back that way (bounded; entries expire after
    /// [`RelayConfig::learned_route_ttl`]).
    fn learn(&mut self, now: Instant, source: &str, relay: &str) {
        if source == self.node.name() || source == relay {
            return;
        }
        if let Some(entry) = self.learned.get_mut(source) {
            if entry.0 != relay {
                relay.clone_into(&mut entry.0);
            }
            entry.1 = now;
            return;
        }
        if self.learned.len() >= self.config.max_learned_routes {
            let ttl = self.config.learned_route_ttl;
            self.learned.retain(|_, (_, t)| *t + ttl > now);
            if self.learned.len() >= self.config.max_learned_routes {
                return;
            }
        }
        self.learned
            .insert(source.to_owned(), (relay.to_owned(), now));
    }

    fn enqueue(&mut self, now: Instant, link: LinkId, package: Bytes) {
        let Some(l) = self.links.get_mut(&link) else {
            self.drop_frame(DropReason::LinkClosed);
            return;
        };
        // A package the peer would refuse could close its link (a frame over its limit ends a
        // byte stream): such a frame is dropped here instead.
        if package.len() > l.max_package {
            self.drop_frame(DropReason::TooLarge);
            return;
        }
        if l.queue.len() >= self.config.max_queue_frames
            || l.queued_bytes + package.len() > self.config.max_queue_bytes
        {
            l.dropped_queue_full += 1;
            self.drop_frame(DropReason::QueueFull);
            return;
        }
        l.queued_bytes += package.len();
        l.queue.push_back((package, now));
    }

    /// Queues a `forward_error` for the source of `head` back out the link the frame came in
    /// on, at most once per interval per (link, destination, code).
    fn send_forward_error(
        &mut self,
        now: Instant,
        ingress: LinkId,
        head: &MessageHead,
        code: AtbusCloseReason,
        message: String,
    ) {
        let key = (ingress, head.destination.clone(), code as i32);
        let interval = self.config.forward_error_interval;
        if self
            .error_times
            .get(&key)
            .is_some_and(|&t| t + interval > now)
        {
            self.metrics.forward_errors_suppressed += 1;
            return;
        }
        if self.error_times.len() >= self.config.max_forward_error_entries {
            self.error_times.retain(|_, &mut t| t + interval > now);
            if self.error_times.len() >= self.config.max_forward_error_entries {
                self.metrics.forward_errors_suppressed += 1;
                return;
            }
        }
        self.error_times.insert(key, now);
        let name = self.node.name().to_owned();
        let frame = FrameMessage {
            head: Some(MessageHead {
                source: name.clone(),
                destination: head.source.clone(),
                forward_for_source: name,
                forward_for_connection_id: 0,
                hop_count: 1,
            }),
            body: Some(atbus_proto::frame_message::Body::ForwardError(
                ForwardErrorData {
                    code: code as i32,
                    destination: head.destination.clone(),
                    message,
                },
            )),
        };
        let mut out = Vec::with_capacity(atbus_frame::encoded_len(&frame));
        if atbus_frame::encode(&frame, &self.frame_limits, &mut out).is_ok() {
            self.metrics.forward_errors_sent += 1;
            self.enqueue(now, ingress, Bytes::from(out));
        }
    }
}

/// Whether a link from `peer` is a trusted relay link under `config`: it announced `RELAY`, its
/// name is a peer relay and, when relay key ids are set, it proved one of them.
fn trusts(config: &RelayConfig, peer: &str, announces_relay: bool, key_id: &str) -> bool {
    announces_relay
        && config.peer_relays.iter().any(|r| r == peer)
        && (config.relay_key_ids.is_empty() || config.relay_key_ids.iter().any(|k| k == key_id))
}
