//! Relay links of a plain node (relayed paths, demultiplexed by source) and router-mode links.

use std::collections::BTreeMap;
use std::time::Instant;

use atbus_proto::{
    AtbusCloseReason, FrameMessage, HandshakeHello, MessageHead, PingData, frame_message::Body,
};
use atbus_stream::{PathConfig, PathId, PathKind, Session, SessionConfig};

use crate::config::check_name;
use crate::error::NodeError;
use crate::link::{Keepalive, LinkState};
use crate::node::Node;
use crate::peer::Peer;
use crate::types::{LinkCloseReason, LinkId, NodeEvent};

impl Node {
    /// Whether `link` is an established link to a trusted relay.
    pub(crate) fn is_relay_link(&self, link: LinkId) -> bool {
        self.links
            .get(&link)
            .is_some_and(|l| matches!(l.state, LinkState::Relay { .. }))
    }

    /// Router mode: the link is authenticated; its frames go to the owner.
    pub(crate) fn establish_routed(
        &mut self,
        id: LinkId,
        hello: &HandshakeHello,
    ) -> Result<(), LinkCloseReason> {
        let routed = self
            .links
            .values()
            .filter(|l| matches!(l.state, LinkState::Routed { .. }))
            .count();
        if routed >= self.config.limits.max_peers {
            return Err(LinkCloseReason::local(
                AtbusCloseReason::LimitExceeded,
                format!(
                    "{routed} links, the limit is {}",
                    self.config.limits.max_peers
                ),
            ));
        }
        self.set_established(
            self.last_now,
            id,
            LinkState::Routed {
                peer: hello.node_name.clone(),
                capabilities: hello.capabilities,
                key_id: hello.key_id.clone(),
                // 0: the peer did not say; its frame limit still applies on its side.
                max_package: usize::try_from(hello.max_package_size)
                    .ok()
                    .filter(|&m| m > 0)
                    .unwrap_or(usize::MAX),
                accept: None,
            },
        );
        Ok(())
    }

    /// A plain node's link to a trusted relay: configured routes through it get their paths.
    pub(crate) fn establish_relay_link(
        &mut self,
        now: Instant,
        id: LinkId,
        relay: String,
    ) -> Result<(), LinkCloseReason> {
        self.set_established(
            now,
            id,
            LinkState::Relay {
                relay: relay.clone(),
                paths: BTreeMap::new(),
                accept: None,
            },
        );
        let peers: Vec<String> = self
            .relay_routes
            .iter()
            .filter(|(_, r)| **r == relay)
            .map(|(p, _)| p.clone())
            .collect();
        for peer in peers {
            self.relayed_path_or_handshake(now, &peer, id);
        }
        Ok(())
    }

    fn set_established(&mut self, now: Instant, id: LinkId, state: LinkState) {
        let interval = self.config.session.keepalive_interval;
        let idle = self.config.session.path_idle_timeout;
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        link.last_received = link.last_received.max(now);
        link.keepalive = Some(Keepalive {
            next_ping: now + interval,
            interval,
            idle,
            ping_id: 0,
        });
        let peer = match &state {
            LinkState::Routed { peer, .. } | LinkState::Relay { relay: peer, .. } => peer.clone(),
            _ => String::new(),
        };
        link.state = state;
        if let Some(r) = link.url.and_then(|i| self.reconnects.get_mut(i)) {
            r.failures = 0;
        }
        tracing::debug!(link = id.0, peer = %peer, "link accepted");
        self.events
            .push_back(NodeEvent::LinkAccepted { link: id, peer });
    }

    /// Sends to `peer` through `relay` (one of [`crate::NodeConfig::relays`]): the session with
    /// `peer` gets a relayed path on every link to that relay, now and whenever one comes up.
    /// The session is created if needed, so `send` works at once; messages wait for a path.
    pub fn route_via_relay(
        &mut self,
        now: Instant,
        peer: &str,
        relay: &str,
    ) -> Result<(), NodeError> {
        self.last_now = self.last_now.max(now);
        check_name(peer).map_err(NodeError::InvalidName)?;
        if peer == self.config.name {
            return Err(NodeError::InvalidName(format!(
                "{peer:?} is this node's own name"
            )));
        }
        if !self.config.relays.iter().any(|r| r == relay) {
            return Err(NodeError::NotARelay(relay.to_owned()));
        }
        self.relay_routes.insert(peer.to_owned(), relay.to_owned());
        let links: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, l)| matches!(&l.state, LinkState::Relay { relay: r, .. } if r == relay))
            .map(|(&id, _)| id)
            .collect();
        if !self.peers.contains_key(peer) {
            if self.peers.len() >= self.config.limits.max_peers {
                return Err(NodeError::UnknownPeer(peer.to_owned()));
            }
            let mut p = self.relayed_peer(peer, now);
            p.down_since = Some(now);
            self.peers.insert(peer.to_owned(), p);
        }
        for link in links {
            self.relayed_path_or_handshake(now, peer, link);
        }
        Ok(())
    }

    /// Trusts `relay` as a relay from now on (adds it to [`crate::NodeConfig::relays`]): a
    /// link that authenticates under that name and announces `RELAY` after this call is a relay
    /// link. Links already up keep what they are. For owners that plan routes at run time
    /// ([`crate::RoutePlanner`]): the relay a destination's record advertises.
    pub fn trust_relay(&mut self, relay: &str) -> Result<(), NodeError> {
        check_name(relay).map_err(NodeError::InvalidName)?;
        if relay == self.config.name {
            return Err(NodeError::InvalidName(format!(
                "{relay:?} is this node's own name"
            )));
        }
        if !self.config.relays.iter().any(|r| r == relay) {
            self.config.relays.push(relay.to_owned());
        }
        Ok(())
    }

    /// The relay through which [`Node::route_via_relay`] sends to `peer`.
    pub fn relay_route(&self, peer: &str) -> Option<&str> {
        self.relay_routes.get(peer).map(String::as_str)
    }

    fn relayed_peer(&self, name: &str, now: Instant) -> Peer {
        let mut config: SessionConfig = self.config.session.clone();
        config.local_name = self.config.name.clone();
        config.peer_name = name.to_owned();
        Peer::new(None, Session::new(config, now))
    }

    /// Gives `peer`'s session a relayed path on relay link `link` (or returns the one it has).
    pub(crate) fn add_relayed_path(
        &mut self,
        now: Instant,
        peer: &str,
        link: LinkId,
    ) -> Result<PathId, LinkCloseReason> {
        let Some(l) = self.links.get(&link) else {
            return Err(LinkCloseReason::local(
                AtbusCloseReason::Normal,
                "the relay link is gone",
            ));
        };
        let LinkState::Relay { paths, .. } = &l.state else {
            return Err(LinkCloseReason::local(
                AtbusCloseReason::ProtocolError,
                "not a relay link",
            ));
        };
        if let Some(&path) = paths.get(peer) {
            return Ok(path);
        }
        let mtu = l
            .mtu
            .min(self.config.relayed_path_mtu)
            .min(self.frame_limits.max_package_len());
        let limits = &self.config.limits;
        match self.peers.get(peer) {
            Some(p) if p.paths.len() >= limits.max_links_per_peer => {
                return Err(LinkCloseReason::local(
                    AtbusCloseReason::LimitExceeded,
                    format!("peer {peer:?} already has {} paths", p.paths.len()),
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
        if !self.peers.contains_key(peer) {
            let p = self.relayed_peer(peer, now);
            self.peers.insert(peer.to_owned(), p);
        }
        let Some(p) = self.peers.get_mut(peer) else {
            return Err(LinkCloseReason::local(
                AtbusCloseReason::InternalError,
                "peer vanished",
            ));
        };
        let path = match p
            .session_mut()
            .add_path(now, PathConfig::new(PathKind::Relayed, mtu))
        {
            Ok(path) => path,
            Err(err) => {
                if p.paths.is_empty() && p.down_since.is_none() {
                    self.peers.remove(peer);
                }
                return Err(LinkCloseReason::local(
                    AtbusCloseReason::LimitExceeded,
                    format!("relayed path unusable: {err}"),
                ));
            }
        };
        let first = p.paths.is_empty();
        p.paths.insert(path, link);
        p.down_since = None;
        let incarnation = p.incarnation.unwrap_or(-1);
        if let Some(LinkState::Relay { paths, .. }) =
            self.links.get_mut(&link).map(|l| &mut l.state)
        {
            paths.insert(peer.to_owned(), path);
        }
        tracing::debug!(link = link.0, peer = %peer, "relayed path added");
        if first {
            self.events.push_back(NodeEvent::PeerUp {
                peer: peer.to_owned(),
                incarnation,
            });
        }
        Ok(path)
    }

    /// A frame that arrived on a relay link: checked, then handed to the session of its
    /// `source`; a `forward_error` becomes an event.
    pub(crate) fn on_relayed_frame(
        &mut self,
        now: Instant,
        link: LinkId,
        frame: FrameMessage,
        wire_len: usize,
    ) {
        let Some(head) = frame.head.as_ref() else {
            tracing::debug!(link = link.0, "relayed frame without head dropped");
            return;
        };
        let from_relay = match self.links.get(&link).map(|l| &l.state) {
            Some(LinkState::Relay { relay, .. }) => head.source == *relay,
            _ => false,
        };
        if from_relay && matches!(frame.body, Some(Body::Ping(_) | Body::Pong(_))) {
            self.on_link_ping(link, &frame);
            return;
        }
        // Relays stamp every frame they forward: forward_for_source is the source the first
        // relay authenticated, and at least one hop was counted.
        if head.destination != self.config.name
            || head.forward_for_source != head.source
            || head.hop_count < 1
            || check_name(&head.source).is_err()
            || head.source == self.config.name
        {
            tracing::debug!(
                link = link.0,
                ?head,
                "relayed frame with a bad head dropped"
            );
            return;
        }
        let source = head.source.clone();
        let body_opens = matches!(frame.body, Some(Body::Packet(_) | Body::Ping(_)));
        let session_frame = body_opens || matches!(frame.body, Some(Body::Acknowledge(_)));
        if let Some(Body::RelayedHandshake(data)) = frame.body {
            self.on_relayed_handshake(now, link, source, data);
            return;
        }
        if let Some(Body::ForwardError(fe)) = frame.body {
            let code = AtbusCloseReason::try_from(fe.code).unwrap_or(AtbusCloseReason::Unreachable);
            self.events.push_back(NodeEvent::ForwardError {
                link,
                relay: source,
                destination: fe.destination,
                code,
                message: fe.message,
            });
            return;
        }
        let known = match self.links.get(&link).map(|l| &l.state) {
            Some(LinkState::Relay { paths, .. }) => paths.get(&source).copied(),
            _ => return,
        };
        let path = match known {
            Some(path) => path,
            // A verified peer reaching this node through the relay for the first time.
            None if body_opens && self.peer_verified(&source) => {
                match self.add_relayed_path(now, &source, link) {
                    Ok(path) => path,
                    Err(reason) => {
                        tracing::debug!(peer = %source, %reason, "relayed peer refused");
                        return;
                    }
                }
            }
            // Session frames of a peer not verified (new, or this node restarted): dropped,
            // and the end-to-end handshake starts (its session retransmits them after).
            None if session_frame && !self.peer_verified(&source) => {
                self.start_relayed_handshake(now, &source, link, true);
                return;
            }
            None => return,
        };
        let requires_encryption = self.requires_encryption();
        if let Some(p) = self.peers.get_mut(&source) {
            // A node that requires encryption takes no session content in clear: a session
            // with relayed paths only does not seal yet, even when the end-to-end handshake
            // derived keys (`docs/security.md` §8.8).
            if requires_encryption
                && !p.session().is_encrypted()
                && matches!(
                    frame.body,
                    Some(atbus_proto::frame_message::Body::Packet(_))
                )
            {
                tracing::debug!(peer = %source, "relayed content in clear refused: no session keys");
                return;
            }
            // A protocol error closes that session only; its Closed event drops the peer.
            let _ = p.session_mut().handle_frame(now, path, frame, wire_len);
        }
    }

    /// A link-level ping or pong on a relay or router-mode link: a ping addressed to this node
    /// is answered on the same link; arriving at all kept the link alive.
    pub(crate) fn on_link_ping(&mut self, link: LinkId, frame: &FrameMessage) {
        let (Some(head), Some(Body::Ping(ping))) = (&frame.head, &frame.body) else {
            return;
        };
        if head.destination != self.config.name {
            return;
        }
        let pong = FrameMessage {
            head: Some(MessageHead {
                source: self.config.name.clone(),
                destination: head.source.clone(),
                ..MessageHead::default()
            }),
            body: Some(Body::Pong(*ping)),
        };
        let package = self.frame_package(&pong);
        self.queue_control(link, package);
    }

    /// Keepalive timers of a relay or router-mode link: ping when due, close when silent.
    pub(crate) fn link_keepalive(&mut self, now: Instant, id: LinkId) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        let Some(k) = link.keepalive.as_mut() else {
            return;
        };
        let peer = match &link.state {
            LinkState::Relay { relay: peer, .. } | LinkState::Routed { peer, .. } => peer.clone(),
            _ => return,
        };
        if now >= link.last_received + k.idle {
            let reason = LinkCloseReason::local(
                AtbusCloseReason::IdleTimeout,
                format!("nothing arrived on the link for {:?}", k.idle),
            );
            self.close_link(now, id, reason, true, true);
            return;
        }
        if now < k.next_ping {
            return;
        }
        k.next_ping = now + k.interval;
        k.ping_id += 1;
        let ping = FrameMessage {
            head: Some(MessageHead {
                source: self.config.name.clone(),
                destination: peer,
                ..MessageHead::default()
            }),
            body: Some(Body::Ping(PingData {
                ping_id: k.ping_id,
                timepoint_microseconds: 0,
            })),
        };
        let package = self.frame_package(&ping);
        self.queue_control(id, package);
    }
}
