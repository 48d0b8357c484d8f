//! Peers (one session each), their paths, restarts and reconnects.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use atbus_frame::Splice;
use atbus_proto::{AtbusCloseReason, HandshakeHello};
use atbus_stream::{Event, PathConfig, PathId, PathKind, Session, SessionConfig, Transmit};

use crate::auth::SessionKeys;
use crate::config::capabilities;
use crate::content::LinkContent;
use crate::link::LinkState;
use crate::node::Node;
use crate::types::{Action, LinkCloseReason, LinkId, LinkKind, NodeEvent, UndeliverableReason};

/// A peer node with a session.
#[derive(Debug)]
pub(crate) struct Peer {
    /// Unknown while the session has had relayed paths only.
    pub incarnation: Option<i64>,
    /// Reached through [`Peer::session`] and [`Peer::session_mut`], so that every change marks
    /// the session as having output to look for.
    session: Session,
    /// Whether the session changed since its `poll_transmit` last found nothing to send.
    transmit_due: bool,
    /// The session's next timer when `poll_transmit` last found nothing: the earliest time its
    /// output can change without an input.
    transmit_wake: Option<Instant>,
    /// The session's `poll_timeout` as last computed, until the session next changes (`None`:
    /// not known). Read twice per turn of a driver's loop, changed by far fewer turns.
    timeout: Cell<Option<Option<Instant>>>,
    /// Session paths and the links they run on.
    pub paths: BTreeMap<PathId, LinkId>,
    /// The session's content keys (PSK mode): those of the link in `link_content` with the
    /// lowest transcript hash; kept when the last direct link goes.
    pub keys: Option<SessionKeys>,
    /// What each direct path's handshake decided for the content (PSK mode).
    pub link_content: BTreeMap<PathId, LinkContent>,
    /// Whether both ends asked for compression.
    pub compress: bool,
    /// Since when the peer has no link (its messages wait for a reconnect).
    pub down_since: Option<Instant>,
}

/// Reconnect state of one configured URL.
#[derive(Debug)]
pub(crate) struct Reconnect {
    pub url: String,
    pub failures: u32,
    /// When to emit the next `Connect`.
    pub next_at: Option<Instant>,
    /// The link of the current attempt or connection.
    pub link: Option<LinkId>,
}

impl Peer {
    /// A peer with `session`, no paths yet.
    pub fn new(incarnation: Option<i64>, session: Session) -> Self {
        Self {
            incarnation,
            session,
            transmit_due: true,
            transmit_wake: None,
            timeout: Cell::new(None),
            paths: BTreeMap::new(),
            keys: None,
            link_content: BTreeMap::new(),
            compress: false,
            down_since: None,
        }
    }

    /// The session, to read.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The session, to change: it is polled for output again on the next `poll_transmit`.
    pub fn session_mut(&mut self) -> &mut Session {
        self.transmit_due = true;
        self.timeout.set(None);
        &mut self.session
    }

    /// The session's next timer ([`Session::poll_timeout`]), computed once per change of the
    /// session.
    pub fn session_timeout(&self) -> Option<Instant> {
        if let Some(at) = self.timeout.get() {
            return at;
        }
        let at = self.session.poll_timeout();
        self.timeout.set(Some(at));
        at
    }

    /// The session's next event (taking an event changes nothing it sends).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.session.poll_event()
    }

    /// The session's next transmit. Skips the session's own `poll_transmit` (which looks at
    /// every path and every stream) when nothing reached the session since it last found
    /// nothing to send and none of its timers has come due since: its output depends only on
    /// its inputs and on `now` passing one of its timers.
    /// With `splice` (`(splices, min)`), fragment data of at least `min` bytes is spliced
    /// ([`Session::poll_transmit_spliced`]).
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut Vec<u8>,
        splice: Option<(&mut Vec<Splice>, usize)>,
    ) -> Option<Transmit> {
        if !self.transmit_due && self.transmit_wake.is_none_or(|at| now < at) {
            buf.clear();
            return None;
        }
        let transmit = match splice {
            Some((splices, min)) => self.session.poll_transmit_spliced(now, buf, splices, min),
            None => self.session.poll_transmit(now, buf),
        };
        // Sending moves timers (loss detection, pings), and so may finding nothing to send.
        self.timeout.set(None);
        if transmit.is_none() {
            self.transmit_due = false;
            self.transmit_wake = self.session_timeout();
        }
        transmit
    }
}

impl Reconnect {
    pub fn new(url: String, now: Instant) -> Self {
        Self {
            url,
            failures: 0,
            next_at: Some(now),
            link: None,
        }
    }
}

impl Node {
    /// Makes authenticated link `id` a path of the session with `hello`'s sender.
    pub(crate) fn establish(
        &mut self,
        now: Instant,
        id: LinkId,
        hello: &HandshakeHello,
        keys: Option<SessionKeys>,
    ) -> Result<(), LinkCloseReason> {
        let name = hello.node_name.clone();
        if self.is_router() {
            return self.establish_routed(id, hello);
        }
        if hello.capabilities & capabilities::RELAY != 0 && self.config.relays.contains(&name) {
            return self.establish_relay_link(now, id, name);
        }
        self.drop_if_restarted(now, &name, hello.incarnation_id);
        let limits = &self.config.limits;
        match self.peers.get(&name) {
            Some(p) if p.paths.len() >= limits.max_links_per_peer => {
                return Err(LinkCloseReason::local(
                    AtbusCloseReason::LimitExceeded,
                    format!(
                        "peer {name:?} already has {} links, the limit is {}",
                        p.paths.len(),
                        limits.max_links_per_peer
                    ),
                ));
            }
            None if self.peers.len() >= limits.max_peers => {
                return Err(LinkCloseReason::local(
                    AtbusCloseReason::LimitExceeded,
                    format!(
                        "{} peers, the limit is {}",
                        self.peers.len(),
                        limits.max_peers
                    ),
                ));
            }
            _ => {}
        }
        let content = self.link_content(hello, keys.as_ref())?;
        let compress = self.compresses_with(hello);
        let Some(link) = self.links.get(&id) else {
            return Ok(());
        };
        let kind = match link.kind {
            LinkKind::Datagram => PathKind::Datagram,
            LinkKind::ByteStream | LinkKind::InProcess => PathKind::ByteStream,
        };
        let peer_limit = usize::try_from(hello.max_package_size).unwrap_or(0);
        let mtu = link
            .mtu
            .min(peer_limit)
            .min(self.frame_limits.max_package_len());
        let peer = self.peers.entry(name.clone()).or_insert_with(|| {
            let mut config: SessionConfig = self.config.session.clone();
            config.local_name = self.config.name.clone();
            config.peer_name = name.clone();
            // Credit starts at what the peer said it grants (0: it did not say).
            config.peer_stream_receive_window = u64::try_from(hello.stream_receive_window)
                .ok()
                .filter(|&w| w > 0);
            config.peer_session_receive_window = u64::try_from(hello.session_receive_window)
                .ok()
                .filter(|&w| w > 0);
            Peer::new(Some(hello.incarnation_id), Session::new(config, now))
        });
        let path = match peer.session_mut().add_path(now, PathConfig::new(kind, mtu)) {
            Ok(path) => path,
            Err(err) => {
                if peer.paths.is_empty() && peer.down_since.is_none() {
                    self.peers.remove(&name);
                }
                return Err(LinkCloseReason::local(
                    AtbusCloseReason::LimitExceeded,
                    format!("link unusable: {err}"),
                ));
            }
        };
        let first = peer.paths.is_empty();
        peer.incarnation = Some(hello.incarnation_id);
        peer.paths.insert(path, id);
        peer.down_since = None;
        match content {
            Some(c) => {
                peer.link_content.insert(path, c);
            }
            // A plain session keeps the first handshake's keys for the application.
            None if peer.keys.is_none() => peer.keys = keys,
            None => {}
        }
        peer.compress = compress;
        let incarnation = peer.incarnation;
        self.select_content_keys(&name);
        if let Some(link) = self.links.get_mut(&id) {
            link.state = LinkState::Established {
                peer: name.clone(),
                path,
                accept: None,
            };
            if let Some(r) = link.url.and_then(|i| self.reconnects.get_mut(i)) {
                r.failures = 0;
            }
        }
        tracing::debug!(link = id.0, peer = %name, "link accepted");
        self.events.push_back(NodeEvent::LinkAccepted {
            link: id,
            peer: name.clone(),
        });
        if first {
            self.events.push_back(NodeEvent::PeerUp {
                peer: name,
                incarnation: incarnation.unwrap_or(-1),
            });
        }
        Ok(())
    }

    /// A handshake (direct or through relays) verified `name` with `incarnation`: if the peer
    /// was known under another one it restarted, so its old session is dropped and what it did
    /// not deliver is reported, never resumed into the new process.
    pub(crate) fn drop_if_restarted(&mut self, now: Instant, name: &str, incarnation: i64) {
        if self
            .peers
            .get(name)
            .is_some_and(|p| p.incarnation.is_some_and(|i| i != incarnation))
        {
            tracing::info!(peer = %name, "peer restarted; dropping its old session");
            self.drop_peer(
                now,
                name,
                UndeliverableReason::PeerRestarted,
                AtbusCloseReason::PeerRestarted,
            );
        }
    }

    /// Installs `name`'s session keys: those of its direct link with the lowest transcript
    /// hash (both ends see the same links, so both pick the same keys); with no direct link
    /// left, the keys stay as they were. Also installs compression alone on a plain session.
    pub(crate) fn select_content_keys(&mut self, name: &str) {
        let Some(p) = self.peers.get(name) else {
            return;
        };
        let best = p
            .link_content
            .values()
            .min_by_key(|c| c.keys.transcript_hash)
            .cloned();
        let current = p.keys.as_ref().map(|k| k.transcript_hash);
        let installed = p.session().has_content_codec();
        let codec = match &best {
            Some(c) if current == Some(c.keys.transcript_hash) && installed => return,
            Some(c) => self.session_codec(Some(c), p.compress),
            None if self.requires_encryption() || installed => return,
            None => self.session_codec(None, p.compress),
        };
        let Some(p) = self.peers.get_mut(name) else {
            return;
        };
        if let Some(c) = best {
            p.keys = Some(c.keys);
        }
        if codec.is_some() {
            p.session_mut().set_content_codec(codec);
        }
    }

    /// The link of `path` is gone: remove the path; the last one makes the peer wait.
    pub(crate) fn detach_path(&mut self, now: Instant, name: &str, path: PathId) {
        let Some(p) = self.peers.get_mut(name) else {
            return;
        };
        let Some(link) = p.paths.remove(&path) else {
            return;
        };
        let _ = p.session_mut().remove_path(path);
        if p.link_content.remove(&path).is_some() {
            self.select_content_keys(name);
        }
        if let Some(LinkState::Relay { paths, .. }) =
            self.links.get_mut(&link).map(|l| &mut l.state)
        {
            paths.remove(name);
        }
        let Some(p) = self.peers.get_mut(name) else {
            return;
        };
        if p.paths.is_empty() {
            p.down_since = Some(now);
            self.events.push_back(NodeEvent::PeerDown {
                peer: name.to_owned(),
            });
        }
    }

    /// Drops `name`'s session: what it had not delivered is reported, its links close with
    /// `code`.
    pub(crate) fn drop_peer(
        &mut self,
        now: Instant,
        name: &str,
        why: UndeliverableReason,
        code: AtbusCloseReason,
    ) {
        let Some(mut p) = self.peers.remove(name) else {
            return;
        };
        self.release_name(name);
        // A closed session still owes its close packets; they go out ahead of the link_close.
        let mut buf = Vec::new();
        while let Some(t) = p.session.poll_transmit(now, &mut buf) {
            if let Some(&link) = p.paths.get(&t.path) {
                self.queue_control(link, buf[..t.size].to_vec());
            }
        }
        for m in p.session.unacknowledged_messages() {
            self.events.push_back(NodeEvent::Undeliverable {
                peer: name.to_owned(),
                stream_id: m.stream_id,
                offset: m.offset,
                data: m.data,
                meta: m.meta,
                reason: why,
            });
        }
        let had_links = !p.paths.is_empty();
        for (_, link) in p.paths {
            if let Some(LinkState::Relay { paths, .. }) =
                self.links.get_mut(&link).map(|l| &mut l.state)
            {
                // The relay link serves other peers: it stays.
                paths.remove(name);
                continue;
            }
            let reason = LinkCloseReason::local(code, format!("session with {name:?} dropped"));
            if let Some(l) = self.links.get_mut(&link) {
                // The path is gone with the session; close the link without detaching again.
                l.state = LinkState::Established {
                    peer: name.to_owned(),
                    path: PathId(u64::MAX),
                    accept: None,
                };
            }
            self.close_link(now, link, reason, true, true);
        }
        if had_links {
            self.events.push_back(NodeEvent::PeerDown {
                peer: name.to_owned(),
            });
        }
    }

    /// Peers without links past the reconnect wait are dropped.
    pub(crate) fn expire_peers(&mut self, now: Instant) {
        let wait = self.config.reconnect_wait;
        let expired: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, p)| p.down_since.is_some_and(|t| now >= t + wait))
            .map(|(n, _)| n.clone())
            .collect();
        for name in expired {
            self.drop_peer(
                now,
                &name,
                UndeliverableReason::ReconnectTimeout,
                AtbusCloseReason::IdleTimeout,
            );
        }
    }

    /// Drains the session events of every peer.
    pub(crate) fn drain_all_sessions(&mut self, now: Instant) {
        let names: Vec<String> = self.peers.keys().cloned().collect();
        for name in names {
            self.drain_session_at(now, &name);
        }
    }

    /// Drains `name`'s session events (after a read, at the last time seen).
    pub(crate) fn drain_session(&mut self, name: &str) {
        self.drain_session_at(self.last_now, name);
    }

    fn drain_session_at(&mut self, now: Instant, name: &str) {
        loop {
            let Some(p) = self.peers.get_mut(name) else {
                return;
            };
            let Some(event) = p.poll_event() else {
                return;
            };
            let peer = name.to_owned();
            match event {
                Event::StreamReadable { stream_id } => {
                    self.events
                        .push_back(NodeEvent::Readable { peer, stream_id });
                }
                Event::Writable { stream_id } => {
                    self.events
                        .push_back(NodeEvent::Writable { peer, stream_id });
                }
                Event::StreamReset {
                    stream_id,
                    final_size,
                } => self.events.push_back(NodeEvent::Skipped {
                    peer,
                    stream_id,
                    final_size,
                }),
                Event::StreamAcknowledged { stream_id } => self
                    .events
                    .push_back(NodeEvent::StreamAcknowledged { peer, stream_id }),
                Event::PathDead { path } => {
                    // The session already removed the path.
                    if let Some(link) = p.paths.get(&path).copied() {
                        if self.is_relay_link(link) {
                            // A relayed path died, not the relay link: other peers use it.
                            self.detach_path(now, name, path);
                            continue;
                        }
                        let reason = LinkCloseReason::local(
                            AtbusCloseReason::IdleTimeout,
                            "nothing arrived on the link for the idle timeout",
                        );
                        self.close_link(now, link, reason, true, true);
                    }
                }
                Event::PauseReading { path } => {
                    // A relay link is never paused for one peer: it would stall the others;
                    // the relayed path is lossy and the sender retransmits what was refused.
                    if let Some(link) = p
                        .paths
                        .get(&path)
                        .copied()
                        .filter(|&l| !self.is_relay_link(l))
                    {
                        self.actions.push_back(Action::PauseReading { link });
                    }
                }
                Event::ResumeReading { path } => {
                    if let Some(link) = p
                        .paths
                        .get(&path)
                        .copied()
                        .filter(|&l| !self.is_relay_link(l))
                    {
                        self.actions.push_back(Action::ResumeReading { link });
                    }
                }
                Event::Closed { reason, by_peer } => {
                    tracing::info!(peer = %name, code = reason.code, by_peer, "session closed");
                    let code = if by_peer {
                        AtbusCloseReason::Normal
                    } else {
                        AtbusCloseReason::try_from(reason.code)
                            .unwrap_or(AtbusCloseReason::ProtocolError)
                    };
                    self.drop_peer(now, name, UndeliverableReason::SessionClosed, code);
                    return;
                }
                _ => {}
            }
        }
    }

    /// Emits `Connect` for every configured URL whose time came.
    pub(crate) fn run_reconnects(&mut self, now: Instant) {
        for i in 0..self.reconnects.len() {
            let due = self.reconnects[i].next_at.is_some_and(|t| t <= now);
            if !due {
                continue;
            }
            let link = self.new_link_id();
            let r = &mut self.reconnects[i];
            r.next_at = None;
            r.link = Some(link);
            self.actions.push_back(Action::Connect {
                link,
                peer_url: r.url.clone(),
            });
        }
    }

    /// The link of configured URL `i` failed or closed: try again after a backoff with jitter.
    pub(crate) fn schedule_reconnect(&mut self, now: Instant, i: usize) {
        let jitter = self.rng.next_u64();
        let initial = self.config.reconnect_initial;
        let max = self.config.reconnect_max;
        let Some(r) = self.reconnects.get_mut(i) else {
            return;
        };
        let base = initial.saturating_mul(1u32 << r.failures.min(20)).min(max);
        // "Equal jitter": half the delay fixed, half random, so retries spread out.
        let half = base / 2;
        let random = Duration::from_nanos(jitter % (half.as_nanos() as u64).max(1));
        r.failures = r.failures.saturating_add(1);
        r.link = None;
        r.next_at = Some(now + half + random);
    }
}
