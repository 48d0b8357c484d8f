//! The node: links in, sessions per peer, packages out.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use atbus_frame::{DatagramDecoder, FrameError, FrameLimits, RawPackage, Splice, StreamDecoder};
use atbus_proto::{AtbusCloseReason, CloseReasonData, FrameMessage, frame_message::Body};
use atbus_stream::{Delivery, OutgoingMessage, Session};
use bytes::Bytes;
use rand_core::CryptoRng;

use crate::auth::SessionKeys;
use crate::config::{NodeConfig, capabilities};
use crate::error::{ConfigError, NodeError};
use crate::link::{Link, LinkState};
use crate::peer::{Peer, Reconnect};
use crate::routed::{BodyKind, RoutedFrame, inspect_frame};
use crate::types::{
    Action, Direction, LinkCloseReason, LinkId, LinkInfo, LinkKind, LinkRole, NodeEvent,
};

/// A sans-IO node: owns links, their handshakes, and one session per peer.
///
/// Methods come in four groups: getters; inputs (`handle_*`); mutators (`send`, `read`,
/// `finish`, `reset`); outputs (`poll_transmit`, `poll_action`, `poll_timeout`, `poll_event`).
/// After any input, drain `poll_transmit` until `None`, then `poll_action`, then schedule a
/// wake-up at `poll_timeout`, then drain `poll_event`. Time only moves forward and is always
/// passed in; randomness comes from the RNG given to [`Node::new`].
pub struct Node {
    pub(crate) config: NodeConfig,
    pub(crate) incarnation: i64,
    pub(crate) rng: Box<dyn CryptoRng + Send>,
    pub(crate) frame_limits: FrameLimits,
    pub(crate) links: BTreeMap<LinkId, Link>,
    pub(crate) peers: BTreeMap<String, Peer>,
    pub(crate) next_link_id: u64,
    pub(crate) actions: VecDeque<Action>,
    pub(crate) events: VecDeque<NodeEvent>,
    pub(crate) reconnects: Vec<Reconnect>,
    pub(crate) unix_ms: i64,
    /// The latest `now` passed in.
    pub(crate) last_now: Instant,
    /// Router mode: frames handed to the owner unread.
    pub(crate) routed: VecDeque<RoutedFrame>,
    /// Peers reached through a relay: peer name → relay name.
    pub(crate) relay_routes: BTreeMap<String, String>,
    /// 0-RTT anti-replay guard, started at the first wall-clock reading.
    pub(crate) anti_replay: Option<atbus_auth::AntiReplay>,
    /// Client: early data queued for links not up yet (server name, messages).
    pub(crate) early_pending: BTreeMap<LinkId, crate::link::EarlyFlight>,
    /// 0-RTT flights accepted, replayed, refused otherwise.
    pub(crate) early_stats: (u64, u64, u64),
    /// Rotating secrets of the stateless handshake cookie.
    pub(crate) cookies: crate::access::CookieJar,
    /// Retries sent, hellos admitted with a valid cookie.
    pub(crate) cookie_stats: (u64, u64),
    /// Assigned names being reserved or held.
    pub(crate) reservations: crate::access::NameReservations,
    /// End-to-end handshakes through relays, per peer name.
    pub(crate) relayed_handshakes: BTreeMap<String, crate::relayed_handshake::RelayedHandshake>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.config.name)
            .field("incarnation", &self.incarnation)
            .field("links", &self.links.len())
            .field("peers", &self.peers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Node {
    /// A node started at `now`; its incarnation id and every nonce come from `rng`.
    pub fn new(
        config: NodeConfig,
        now: Instant,
        rng: impl CryptoRng + Send + 'static,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut rng: Box<dyn CryptoRng + Send> = Box::new(rng);
        let incarnation = (rng.next_u64() >> 1) as i64;
        let frame_limits = FrameLimits {
            max_frame_length: config.limits.max_frame_length,
        };
        let reconnects = config
            .connect
            .iter()
            .map(|url| Reconnect::new(url.clone(), now))
            .collect();
        let mut node = Self {
            config,
            incarnation,
            rng,
            frame_limits,
            links: BTreeMap::new(),
            peers: BTreeMap::new(),
            next_link_id: 0,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            reconnects,
            unix_ms: 0,
            last_now: now,
            routed: VecDeque::new(),
            relay_routes: BTreeMap::new(),
            anti_replay: None,
            early_pending: BTreeMap::new(),
            early_stats: (0, 0, 0),
            cookies: crate::access::CookieJar::default(),
            cookie_stats: (0, 0),
            reservations: crate::access::NameReservations::default(),
            relayed_handshakes: BTreeMap::new(),
        };
        node.run_reconnects(now);
        Ok(node)
    }

    // ----- getters -----

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// This node's incarnation id (random per construction, ≥ 0).
    pub fn incarnation(&self) -> i64 {
        self.incarnation
    }

    /// The configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Names of the peers that have a session.
    pub fn peers(&self) -> impl Iterator<Item = &str> {
        self.peers.keys().map(String::as_str)
    }

    /// The incarnation id of `peer`'s current session.
    pub fn peer_incarnation(&self, peer: &str) -> Option<i64> {
        self.peers.get(peer).and_then(|p| p.incarnation)
    }

    /// Established links to `peer`.
    pub fn peer_links(&self, peer: &str) -> Vec<LinkId> {
        self.peers
            .get(peer)
            .map(|p| p.paths.values().copied().collect())
            .unwrap_or_default()
    }

    /// The peer of an established link (for a relay link, the relay).
    pub fn link_peer(&self, link: LinkId) -> Option<&str> {
        match &self.links.get(&link)?.state {
            LinkState::Established { peer, .. }
            | LinkState::Routed { peer, .. }
            | LinkState::Relay { relay: peer, .. } => Some(peer),
            _ => None,
        }
    }

    /// What the handshake established about a link: peer name, its announced capabilities
    /// and access key id (router mode), and the link's kind and MTU.
    pub fn link_info(&self, link: LinkId) -> Option<LinkInfo> {
        let l = self.links.get(&link)?;
        let (peer, capabilities, key_id, role, peer_max_package) = match &l.state {
            LinkState::Established { peer, .. } => (peer, 0, "", LinkRole::Session, l.mtu),
            LinkState::Relay { relay, .. } => (relay, 0, "", LinkRole::ToRelay, l.mtu),
            LinkState::Routed {
                peer,
                capabilities,
                key_id,
                max_package,
                ..
            } => (
                peer,
                *capabilities,
                key_id.as_str(),
                LinkRole::Routed,
                *max_package,
            ),
            _ => return None,
        };
        Some(LinkInfo {
            peer: peer.clone(),
            capabilities,
            key_id: key_id.to_owned(),
            kind: l.kind,
            mtu: l.mtu,
            peer_max_package,
            role,
        })
    }

    /// Whether this node runs in router mode (it announces [`capabilities::RELAY`]).
    pub fn is_router(&self) -> bool {
        self.config.capabilities & capabilities::RELAY != 0
    }

    /// Whether `link` is known and its handshake is still running.
    pub fn is_handshaking(&self, link: LinkId) -> bool {
        self.links
            .get(&link)
            .is_some_and(|l| l.state.in_handshake())
    }

    /// The session with `peer` (statistics, stream state).
    pub fn session(&self, peer: &str) -> Option<&Session> {
        self.peers.get(peer).map(Peer::session)
    }

    /// Keys derived by the first token handshake of `peer`'s session (none on open links);
    /// kept for content protection.
    #[doc(hidden)]
    pub fn peer_session_keys(&self, peer: &str) -> Option<&SessionKeys> {
        self.peers.get(peer)?.keys.as_ref()
    }

    /// A fresh link id for a link the driver opened or accepted.
    pub fn new_link_id(&mut self) -> LinkId {
        let id = LinkId(self.next_link_id);
        self.next_link_id += 1;
        id
    }

    // ----- inputs -----

    /// A link is up. `mtu` is the largest package (byte streams) or datagram payload it
    /// carries. The outbound side starts the handshake at once.
    pub fn handle_link_up(
        &mut self,
        now: Instant,
        link: LinkId,
        kind: LinkKind,
        mtu: usize,
        direction: Direction,
    ) {
        self.last_now = self.last_now.max(now);
        if self.links.contains_key(&link) {
            return;
        }
        self.next_link_id = self.next_link_id.max(link.0 + 1);
        let url = self.reconnects.iter().position(|r| r.link == Some(link));
        let in_flight = self
            .links
            .values()
            .filter(|l| l.state.in_handshake())
            .count();
        let decoder = (kind == LinkKind::ByteStream).then(|| StreamDecoder::new(self.frame_limits));
        let deadline = now + self.config.handshake_timeout;
        let mut new_link = Link::new(kind, mtu, decoder, deadline, url, now);
        new_link.validated = direction == Direction::Outbound;
        self.links.insert(link, new_link);
        if in_flight >= self.config.limits.max_handshakes_in_flight {
            let reason = LinkCloseReason::local(
                AtbusCloseReason::LimitExceeded,
                format!(
                    "{in_flight} handshakes in flight, the limit is {}",
                    self.config.limits.max_handshakes_in_flight
                ),
            );
            self.reject_link(now, link, reason, true);
            return;
        }
        if direction == Direction::Outbound {
            let package_limit = mtu.min(self.frame_limits.max_package_len());
            let hello = self.our_hello(package_limit);
            let hello = self.client_first_flight(link, hello);
            let package =
                self.handshake_package(atbus_proto::handshake_data::Step::Hello(hello.clone()));
            self.queue_control(link, package.clone());
            let retransmit = self.first_retransmit(now, link);
            if let Some(l) = self.links.get_mut(&link) {
                l.state = LinkState::HelloSent {
                    hello: Box::new(hello),
                    package,
                    retransmit,
                };
            }
        }
    }

    /// Bytes read from a byte-stream link, in any split (copied into the link's decoder).
    pub fn handle_link_bytes(&mut self, now: Instant, link: LinkId, bytes: &[u8]) {
        self.last_now = self.last_now.max(now);
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        if l.is_closed() {
            return;
        }
        let Some(decoder) = l.decoder.as_mut() else {
            // Not a byte stream: the bytes are one whole buffer of packages.
            self.handle_datagram(now, link, Bytes::copy_from_slice(bytes));
            return;
        };
        decoder.feed(bytes);
        self.decode_stream(now, link);
    }

    /// Bytes read from a byte-stream link, in any split, as the transport handed them over:
    /// packages that lie whole inside `data` are decoded where they are, and message data
    /// delivered from them shares `data`'s buffer (no copy).
    pub fn handle_link_read(&mut self, now: Instant, link: LinkId, data: Bytes) {
        self.last_now = self.last_now.max(now);
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        if l.is_closed() {
            return;
        }
        let Some(decoder) = l.decoder.as_mut() else {
            self.handle_datagram(now, link, data);
            return;
        };
        decoder.feed_bytes(data);
        self.decode_stream(now, link);
    }

    /// Routes every whole package the decoder of byte-stream `link` holds.
    fn decode_stream(&mut self, now: Instant, link: LinkId) {
        while let Some(decoder) = self
            .links
            .get_mut(&link)
            .filter(|l| !l.is_closed())
            .and_then(|l| l.decoder.as_mut())
        {
            match decoder.next_package() {
                Ok(None) => break,
                Ok(Some(package)) => {
                    if let Err(err) = self.route_package(now, link, package) {
                        self.on_decode_error(now, link, err);
                        break;
                    }
                }
                Err(err) => {
                    self.on_decode_error(now, link, err);
                    break;
                }
            }
        }
        self.drain_all_sessions(now);
    }

    /// One datagram (or in-process buffer) of whole packages arrived on `link`.
    pub fn handle_datagram(&mut self, now: Instant, link: LinkId, datagram: Bytes) {
        self.last_now = self.last_now.max(now);
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        if !l.validated {
            l.handshake_rx = l.handshake_rx.saturating_add(datagram.len());
        }
        if l.is_closed() {
            return;
        }
        let reliable = l.kind.is_reliable();
        for package in DatagramDecoder::new(datagram, self.frame_limits) {
            if self.links.get(&link).is_none_or(Link::is_closed) {
                break;
            }
            match package.and_then(|p| self.route_package(now, link, p)) {
                Ok(()) => {}
                Err(err) if reliable => {
                    self.on_decode_error(now, link, err);
                    break;
                }
                // A damaged datagram loses only itself.
                Err(_) => break,
            }
        }
        self.drain_all_sessions(now);
    }

    /// The transport closed `link` (or a `Connect` failed).
    pub fn handle_link_closed(&mut self, now: Instant, link: LinkId) {
        self.last_now = self.last_now.max(now);
        if !self.links.contains_key(&link) {
            if let Some(i) = self.reconnects.iter().position(|r| r.link == Some(link)) {
                self.schedule_reconnect(now, i);
            }
            // A connect that failed: early data queued for it was never sent.
            self.early_connect_failed(link);
            return;
        }
        let reason =
            LinkCloseReason::local(AtbusCloseReason::Normal, "the transport closed the link");
        self.close_link(now, link, reason, false, false);
        self.links.remove(&link);
        self.drain_all_sessions(now);
    }

    /// The driver could not write on `link` (its write queue is full): session data stops
    /// going out on that link's paths until [`Node::handle_link_writable`].
    pub fn handle_link_blocked(&mut self, link: LinkId) {
        for (peer, path) in self.link_paths(link) {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.session_mut().path_blocked(path);
            }
        }
    }

    /// `link`, reported blocked before, takes writes again: its paths carry session data again.
    pub fn handle_link_writable(&mut self, link: LinkId) {
        for (peer, path) in self.link_paths(link) {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.session_mut().path_writable(path);
            }
        }
    }

    /// The session paths that run on `link`: one for a direct link, one per peer on a relay
    /// link.
    fn link_paths(&self, link: LinkId) -> Vec<(String, atbus_stream::PathId)> {
        match self.links.get(&link).map(|l| &l.state) {
            Some(LinkState::Established { peer, path, .. }) => vec![(peer.clone(), *path)],
            Some(LinkState::Relay { paths, .. }) => {
                paths.iter().map(|(p, &path)| (p.clone(), path)).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Runs every timer due at `now`; `unix_ms` is the wall clock (Unix time in milliseconds).
    pub fn handle_timeout(&mut self, now: Instant, unix_ms: i64) {
        self.last_now = self.last_now.max(now);
        self.set_unix_time(unix_ms);
        let names: Vec<String> = self.peers.keys().cloned().collect();
        for name in &names {
            if let Some(p) = self.peers.get_mut(name) {
                p.session_mut().handle_timeout(now);
            }
        }
        let ids: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, l)| l.timeout().is_some_and(|t| t <= now))
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            self.link_timeout(now, id);
        }
        self.relayed_handshake_timers(now);
        self.expire_peers(now);
        self.run_reconnects(now);
        self.drain_all_sessions(now);
    }

    // ----- mutators -----

    /// Queues a message to `peer` on `stream_id`; returns its stream offset.
    pub fn send(
        &mut self,
        peer: &str,
        stream_id: i64,
        message: OutgoingMessage,
    ) -> Result<u64, NodeError> {
        let p = self
            .peers
            .get_mut(peer)
            .ok_or_else(|| NodeError::UnknownPeer(peer.to_owned()))?;
        // A session that has paths but does not seal would send in clear. Without paths the
        // message waits: a relayed session gets its keys before its first path.
        if self.config.content.encryption != crate::content::EncryptionMode::None
            && !p.session().is_encrypted()
            && !p.paths.is_empty()
        {
            return Err(NodeError::NotEncrypted(peer.to_owned()));
        }
        if p.paths.is_empty() {
            let buffered = p.session().send_buffered();
            if buffered + message.data.len() > self.config.limits.max_disconnected_bytes {
                return Err(NodeError::Disconnected {
                    peer: peer.to_owned(),
                    buffered,
                });
            }
        }
        Ok(p.session_mut().send(stream_id, message)?)
    }

    /// Reads the next message (or skipped range) `peer` sent on `stream_id`, in order.
    pub fn read(&mut self, peer: &str, stream_id: i64) -> Option<Delivery> {
        let p = self.peers.get_mut(peer)?;
        let delivery = p.session_mut().read(stream_id);
        self.drain_session(peer);
        delivery
    }

    /// Finishes a stream to `peer`: nothing more is sent on it.
    pub fn finish(&mut self, peer: &str, stream_id: i64) -> Result<(), NodeError> {
        let p = self
            .peers
            .get_mut(peer)
            .ok_or_else(|| NodeError::UnknownPeer(peer.to_owned()))?;
        Ok(p.session_mut().finish(stream_id)?)
    }

    /// Closes `link` on this side: a `link_close` with `code` and `message` goes out first (drain
    /// `poll_transmit`), then `Action::Close`. A session path on it is detached as if the
    /// transport had closed it.
    pub fn close_link_with(
        &mut self,
        now: Instant,
        link: LinkId,
        code: AtbusCloseReason,
        message: impl Into<String>,
    ) {
        self.last_now = self.last_now.max(now);
        let reason = LinkCloseReason::local(code, message);
        self.close_link(now, link, reason, true, true);
        self.drain_all_sessions(now);
    }

    /// Resets a stream to `peer`; returns the unacknowledged range dropped.
    pub fn reset(
        &mut self,
        peer: &str,
        stream_id: i64,
    ) -> Result<Option<std::ops::Range<u64>>, NodeError> {
        let p = self
            .peers
            .get_mut(peer)
            .ok_or_else(|| NodeError::UnknownPeer(peer.to_owned()))?;
        Ok(p.session_mut().reset(stream_id)?)
    }

    // ----- outputs -----

    /// Writes the next output into `buf` (cleared first) and says which link it goes on: one
    /// datagram for datagram links, a run of whole packages for byte-stream and in-process
    /// links. Handshake and close packages of a link always precede its session data.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<(LinkId, usize)> {
        self.poll_transmit_inner(now, buf, None)
    }

    /// As [`poll_transmit`](Self::poll_transmit), but the data of a fragment of at least
    /// `min_splice` bytes from a plain session is not copied into `buf`: it is pushed to
    /// `splices` (cleared first) with its place in `buf`, and the output is the bytes of
    /// [`atbus_frame::spliced_segments`]`(buf, splices)` (a writer can hand them to one
    /// `writev` and never copy the application's payload). The size returned counts the
    /// spliced bytes. Sealed sessions and link control packages are copied as before.
    pub fn poll_transmit_spliced(
        &mut self,
        now: Instant,
        buf: &mut Vec<u8>,
        splices: &mut Vec<Splice>,
        min_splice: usize,
    ) -> Option<(LinkId, usize)> {
        splices.clear();
        self.poll_transmit_inner(now, buf, Some((splices, min_splice)))
    }

    fn poll_transmit_inner(
        &mut self,
        now: Instant,
        buf: &mut Vec<u8>,
        mut splice: Option<(&mut Vec<Splice>, usize)>,
    ) -> Option<(LinkId, usize)> {
        buf.clear();
        if let Some(out) = self.poll_control(buf) {
            return Some(out);
        }
        for p in self.peers.values_mut() {
            let this = splice.as_mut().map(|(s, min)| (&mut **s, *min));
            if let Some(t) = p.poll_transmit(now, buf, this) {
                if let Some(&link) = p.paths.get(&t.path) {
                    return Some((link, t.size));
                }
                buf.clear();
                if let Some((s, _)) = splice.as_mut() {
                    s.clear();
                }
            }
        }
        None
    }

    /// The next action for the driver.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When `handle_timeout` should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        // Plain loops: this runs twice per turn of a driver's loop.
        let mut next: Option<Instant> = None;
        let mut at = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for p in self.peers.values() {
            at(p.session_timeout());
            at(p.down_since.map(|t| t + self.config.reconnect_wait));
        }
        for link in self.links.values() {
            at(link.timeout());
        }
        for r in &self.reconnects {
            at(r.next_at);
        }
        at(self.relayed_handshake_timeout());
        next
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    /// Router mode: the next frame that arrived on an authenticated link, unread (everything
    /// but the link handshake and `link_close`). The owner (the relay core) routes it; drain
    /// this after every input.
    pub fn poll_routed(&mut self) -> Option<RoutedFrame> {
        self.routed.pop_front()
    }

    // ----- internals -----

    fn poll_control(&mut self, buf: &mut Vec<u8>) -> Option<(LinkId, usize)> {
        let (&id, link) = self.links.iter_mut().find(|(_, l)| !l.control.is_empty())?;
        if link.kind.is_reliable() {
            while let Some(p) = link.control.pop_front() {
                buf.extend_from_slice(&p);
            }
        } else {
            while let Some(p) = link.control.front() {
                if !buf.is_empty() && buf.len() + p.len() > link.mtu {
                    break;
                }
                if !link.may_send(p.len()) {
                    // Amplification limit: dropped; the peer's retransmission raises the budget.
                    link.control.pop_front();
                    continue;
                }
                if !link.validated {
                    link.handshake_tx += p.len();
                }
                buf.extend_from_slice(p);
                link.control.pop_front();
            }
            if buf.is_empty() {
                if link.is_closed() {
                    self.links.remove(&id);
                }
                return self.poll_control(buf);
            }
        }
        if link.is_closed() && link.control.is_empty() {
            self.links.remove(&id);
        }
        Some((id, buf.len()))
    }

    /// Encodes a link-level frame (no head) as a whole package.
    pub(crate) fn control_package(&self, body: Body) -> Vec<u8> {
        self.frame_package(&FrameMessage {
            head: None,
            body: Some(body),
        })
    }

    /// Encodes a frame the node writes itself as a whole package.
    pub(crate) fn frame_package(&self, frame: &FrameMessage) -> Vec<u8> {
        let mut out = Vec::new();
        // Handshake, close and ping frames are a few hundred bytes at most: far below any
        // frame limit.
        let _ = atbus_frame::encode(frame, &FrameLimits::default(), &mut out);
        out
    }

    pub(crate) fn queue_control(&mut self, id: LinkId, package: Vec<u8>) {
        if let Some(link) = self.links.get_mut(&id) {
            link.control.push_back(package);
        }
    }

    fn on_decode_error(&mut self, now: Instant, link: LinkId, err: FrameError) {
        let code = match err {
            FrameError::UnsupportedVersion { .. } => AtbusCloseReason::UnsupportedVersion,
            FrameError::FrameTooLong { .. } => AtbusCloseReason::LimitExceeded,
            _ => AtbusCloseReason::ProtocolError,
        };
        let reason = LinkCloseReason::local(code, format!("undecodable input: {err}"));
        self.close_link(now, link, reason, true, true);
    }

    /// Routes one package of `link`: router-mode links hand session frames over unread; the
    /// rest are decoded. A frame that does not decode is an error, except on a relay link, where
    /// it was forwarded for some other node and only that frame is dropped.
    fn route_package(
        &mut self,
        now: Instant,
        link: LinkId,
        package: RawPackage,
    ) -> Result<(), FrameError> {
        let Some(l) = self.links.get_mut(&link) else {
            return Ok(());
        };
        l.last_received = l.last_received.max(now);
        let relay_link = matches!(l.state, LinkState::Relay { .. });
        if matches!(l.state, LinkState::Routed { .. }) {
            let outline = inspect_frame(&package.frame);
            let name = &self.config.name;
            // Link-level frames, and pings and pongs addressed to this node (link liveness),
            // are the node's own.
            let own = outline.as_ref().is_ok_and(|o| {
                o.body.is_link_level()
                    || (matches!(o.body, BodyKind::Ping | BodyKind::Pong)
                        && o.head.as_ref().is_some_and(|h| h.destination == *name))
            });
            if !own {
                self.routed.push_back(RoutedFrame {
                    link,
                    outline,
                    frame: package.frame,
                });
                return Ok(());
            }
        }
        let wire_len = package.wire_len;
        // Session links: the head is checked in place and not decoded (the session never reads
        // it); anything unusual takes the full decode below.
        if let LinkState::Established { peer, .. } = &l.state {
            if let Some(rest) = crate::routed::session_frame_rest(&package.frame, peer) {
                let frame = atbus_frame::decode_frame(rest)?;
                self.route_frame(now, link, frame, wire_len);
                return Ok(());
            }
        }
        match package.into_frame() {
            Ok(frame) => {
                self.route_frame(now, link, frame, wire_len);
                Ok(())
            }
            Err(err) if relay_link => {
                tracing::debug!(link = link.0, %err, "undecodable relayed frame dropped");
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// Routes one decoded frame of `link`.
    fn route_frame(&mut self, now: Instant, link: LinkId, frame: FrameMessage, wire_len: usize) {
        let Some(l) = self.links.get(&link) else {
            return;
        };
        // TLS handshake records concern the link being set up, not a stream (`tls.rs`).
        if let (None, Some(Body::Packet(p))) = (&frame.head, &frame.body) {
            if p.flags & atbus_proto::packet_flags::TLS_HANDSHAKE != 0 {
                self.on_tls_packet(now, link, p);
                return;
            }
        }
        // Token-bound and anonymous links: streams and rate, on every frame.
        if l.guard.is_some() && !self.guard_frame(now, link, &frame) {
            return;
        }
        let Some(l) = self.links.get(&link) else {
            return;
        };
        match frame.body {
            Some(Body::Handshake(data)) => self.on_handshake(now, link, data),
            Some(Body::LinkClose(close)) => {
                let code = AtbusCloseReason::try_from(close.code)
                    .unwrap_or(AtbusCloseReason::InternalError);
                let reason = LinkCloseReason {
                    code,
                    message: close.message,
                    by_peer: true,
                };
                self.close_link(now, link, reason, false, true);
            }
            Some(Body::Ping(_) | Body::Pong(_) | Body::Packet(_) | Body::Acknowledge(_)) => {
                match &l.state {
                    LinkState::Established { peer, path, .. } => {
                        let path = *path;
                        if let Some(head) = &frame.head {
                            if !head.source.is_empty() && head.source != *peer {
                                let reason = LinkCloseReason::local(
                                    AtbusCloseReason::ProtocolError,
                                    format!("frame from {:?} on the link of {peer:?}", head.source),
                                );
                                self.close_link(now, link, reason, true, true);
                                return;
                            }
                        }
                        // `links` and `peers` are separate fields: no copy of the name needed.
                        if let Some(p) = self.peers.get_mut(peer.as_str()) {
                            // A protocol error closes the session; its Closed event drops the
                            // peer below.
                            let _ = p.session_mut().handle_frame(now, path, frame, wire_len);
                        }
                    }
                    LinkState::Relay { .. } => self.on_relayed_frame(now, link, frame, wire_len),
                    // Router mode hands the rest over before decoding.
                    LinkState::Routed { .. } => self.on_link_ping(link, &frame),
                    // The accept was lost or is late; the session sends again.
                    LinkState::ConfirmSent { .. } | LinkState::Closed => {}
                    _ => {
                        let reason = LinkCloseReason::local(
                            AtbusCloseReason::ProtocolError,
                            "session frame before the handshake finished",
                        );
                        self.reject_link(now, link, reason, true);
                    }
                }
            }
            Some(Body::ForwardError(_) | Body::RelayedHandshake(_))
                if matches!(l.state, LinkState::Relay { .. }) =>
            {
                self.on_relayed_frame(now, link, frame, wire_len);
            }
            // Relay notices and empty frames mean nothing on a direct link.
            _ => {}
        }
    }

    /// A handshake failed on `id`: `link_close` to the peer (when `send_close`),
    /// `LinkRejected`, `Action::Close`.
    pub(crate) fn reject_link(
        &mut self,
        now: Instant,
        id: LinkId,
        reason: LinkCloseReason,
        send_close: bool,
    ) {
        self.close_link(now, id, reason, send_close, true);
    }

    /// Closes a link with `reason`; `send_close` queues a `link_close`, `act` asks the driver
    /// to close it.
    pub(crate) fn close_link(
        &mut self,
        now: Instant,
        id: LinkId,
        reason: LinkCloseReason,
        send_close: bool,
        act: bool,
    ) {
        if self.links.get(&id).is_none_or(Link::is_closed) {
            return;
        }
        self.early_data_lost(id);
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        tracing::debug!(link = id.0, %reason, "link closed");
        let state = std::mem::replace(&mut link.state, LinkState::Closed);
        let url = link.url.take();
        if send_close {
            let package = self.control_package(Body::LinkClose(CloseReasonData {
                code: reason.code as i32,
                message: reason.message.clone(),
            }));
            self.queue_control(id, package);
        }
        self.release_link_name(&state);
        match state {
            LinkState::Established { peer, path, .. } => {
                self.detach_path(now, &peer, path);
                self.events.push_back(NodeEvent::LinkClosed {
                    link: id,
                    peer,
                    reason: Some(reason.clone()),
                });
            }
            LinkState::Relay { relay, paths, .. } => {
                for (peer, path) in paths {
                    self.detach_path(now, &peer, path);
                }
                self.events.push_back(NodeEvent::LinkClosed {
                    link: id,
                    peer: relay,
                    reason: Some(reason.clone()),
                });
            }
            LinkState::Routed { peer, .. } => {
                self.events.push_back(NodeEvent::LinkClosed {
                    link: id,
                    peer,
                    reason: Some(reason.clone()),
                });
            }
            LinkState::Closed => {}
            _ => self.events.push_back(NodeEvent::LinkRejected {
                link: id,
                reason: reason.clone(),
            }),
        }
        if act {
            self.actions.push_back(Action::Close { link: id, reason });
        }
        if let Some(i) = url {
            self.schedule_reconnect(now, i);
        }
        if self.links.get(&id).is_some_and(|l| l.control.is_empty()) {
            self.links.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

    /// Moves every package between `a` (link `la`) and `b` (link `lb`) until both are quiet.
    fn pump(now: Instant, a: &mut Node, la: LinkId, b: &mut Node, lb: LinkId) {
        let mut buf = Vec::new();
        loop {
            let mut moved = false;
            while let Some((_, n)) = a.poll_transmit(now, &mut buf) {
                b.handle_link_bytes(now, lb, &buf[..n]);
                moved = true;
            }
            while let Some((_, n)) = b.poll_transmit(now, &mut buf) {
                a.handle_link_bytes(now, la, &buf[..n]);
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    #[test]
    fn blocked_link_holds_session_data_until_writable() {
        let now = Instant::now();
        let mut a = Node::new(NodeConfig::new("a"), now, ChaCha20Rng::seed_from_u64(1)).unwrap();
        let mut b = Node::new(NodeConfig::new("b"), now, ChaCha20Rng::seed_from_u64(2)).unwrap();
        let (la, lb) = (a.new_link_id(), b.new_link_id());
        a.handle_link_up(now, la, LinkKind::ByteStream, 65536, Direction::Outbound);
        b.handle_link_up(now, lb, LinkKind::ByteStream, 65536, Direction::Inbound);
        pump(now, &mut a, la, &mut b, lb);
        assert_eq!(a.link_peer(la), Some("b"));
        a.handle_link_blocked(la);
        a.send("b", 1, OutgoingMessage::data(&b"held"[..])).unwrap();
        let mut buf = Vec::new();
        assert_eq!(a.poll_transmit(now, &mut buf), None);
        a.handle_link_writable(la);
        assert!(matches!(a.poll_transmit(now, &mut buf), Some((l, n)) if l == la && n > 0));
        // Unknown links are ignored.
        a.handle_link_blocked(LinkId(99));
        a.handle_link_writable(LinkId(99));
    }

    #[test]
    fn idle_session_is_polled_again_after_input_or_a_due_timer() {
        let now = Instant::now();
        let mut a = Node::new(NodeConfig::new("a"), now, ChaCha20Rng::seed_from_u64(3)).unwrap();
        let mut b = Node::new(NodeConfig::new("b"), now, ChaCha20Rng::seed_from_u64(4)).unwrap();
        let (la, lb) = (a.new_link_id(), b.new_link_id());
        a.handle_link_up(now, la, LinkKind::ByteStream, 65536, Direction::Outbound);
        b.handle_link_up(now, lb, LinkKind::ByteStream, 65536, Direction::Inbound);
        pump(now, &mut a, la, &mut b, lb);
        let mut buf = vec![1, 2, 3];
        // Quiet: nothing to send, and the buffer is cleared as documented.
        assert_eq!(a.poll_transmit(now, &mut buf), None);
        assert!(buf.is_empty());
        assert_eq!(a.poll_transmit(now, &mut buf), None);
        // A send after the empty poll goes out on the next one.
        a.send("b", 1, OutgoingMessage::data(&b"after idle"[..]))
            .unwrap();
        assert!(matches!(a.poll_transmit(now, &mut buf), Some((l, n)) if l == la && n > 0));
        b.handle_link_bytes(now, lb, &buf);
        assert_eq!(b.read("b", 1), None);
        let got = b
            .read("a", 1)
            .expect("the message sent after the idle poll");
        assert!(matches!(got, Delivery::Message(m) if m.data[..] == b"after idle"[..]));
        pump(now, &mut a, la, &mut b, lb);
        assert_eq!(a.poll_transmit(now, &mut buf), None);
        // No input, but the keep-alive ping comes due: the session is asked again even before
        // `handle_timeout` runs.
        let later = now + a.config().session.keepalive_interval;
        assert!(a.poll_timeout().is_some_and(|t| t <= later));
        assert!(matches!(a.poll_transmit(later, &mut buf), Some((l, n)) if l == la && n > 0));
    }
}
