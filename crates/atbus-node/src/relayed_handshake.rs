//! The end-to-end handshake of sessions that run through relays (`relayed_handshake` frames).
//!
//! A relay authenticates the links it has, not the nodes behind other relays, so a session
//! whose only paths are relayed runs its own handshake with the peer, carried as relayed
//! frames: the initiator's `hello`, the responder's `hello_reply` with its proof, and, when a
//! token is used, the initiator's `confirm`. Both hellos carry the names, incarnation ids,
//! protocol version, capabilities and receive windows, as on a direct link; the proofs are the
//! link handshake's HMACs over a transcript hash that is bound to this use (`RELAYED_LABEL`), so
//! a link proof never passes here or the other way round. Session keys come from the same
//! transcript. See `docs/protocol.md`, "Relayed handshake".
//!
//! A session gets no relayed path before its peer is verified: messages sent meanwhile wait in
//! the session (bounded like any disconnected peer), and session frames from an unverified peer
//! are dropped (its session retransmits them). A relayed path is lossy, so the initiator
//! resends its hello and the responder its reply with backoff, and each side answers a
//! repeated step with the same answer. An incarnation id that differs from the one known for the
//! peer drops the old session (`PeerRestarted`), exactly like a direct link, but only once the
//! new handshake verified: a stray hello cannot end a session.

use std::time::{Duration, Instant};

use atbus_proto::{
    AtbusCloseReason, CloseReasonData, FrameMessage, HandshakeConfirm, HandshakeHello, MessageHead,
    RelayedHandshakeData, frame_message::Body, relayed_handshake_data::Step,
};
use atbus_stream::{Session, SessionConfig};
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::auth::{self, Role, SessionKeys, TranscriptHash};
use crate::handshake::MAX_RETRANSMIT_INTERVAL;
use crate::link::LinkState;
use crate::node::Node;
use crate::peer::Peer;
use crate::types::{LinkCloseReason, LinkId, NodeEvent};

/// Domain label of the relayed transcript: binds a handshake to being end to end via relays.
pub const RELAYED_LABEL: &[u8] = b"atbus-relayed-v1";

/// The relayed transcript hash: the link transcript of both hellos under [`RELAYED_LABEL`].
pub fn relayed_transcript_hash(client: &HandshakeHello, server: &HandshakeHello) -> TranscriptHash {
    let inner = auth::transcript_hash(client, server);
    let mut h = Sha256::new();
    h.update((RELAYED_LABEL.len() as u32).to_be_bytes());
    h.update(RELAYED_LABEL);
    h.update(inner);
    h.finalize().into()
}

/// Where the end-to-end handshake with one peer is.
#[derive(Debug)]
pub(crate) enum RelayedHandshake {
    /// Initiator: hello sent, waiting for the responder's reply.
    HelloSent {
        hello: Box<HandshakeHello>,
        package: Vec<u8>,
        link: LinkId,
        next: Instant,
        interval: Duration,
        deadline: Instant,
    },
    /// Responder: reply sent. Until `confirmed` (at once without a token) the reply goes out
    /// again with backoff; a repeated hello gets the same reply until `deadline`.
    ReplySent {
        client: Box<HandshakeHello>,
        package: Vec<u8>,
        th: TranscriptHash,
        secret: Option<Vec<u8>>,
        link: LinkId,
        next: Instant,
        interval: Duration,
        deadline: Instant,
        confirmed: bool,
    },
    /// Initiator, done: a repeated reply (our confirm was lost) gets the same confirm.
    Confirmed {
        reply: Box<HandshakeHello>,
        package: Vec<u8>,
        until: Instant,
    },
    /// Refused or failed: stray frames of the peer start no new handshake before `until`.
    Failed { until: Instant },
}

impl RelayedHandshake {
    /// The next timer.
    pub fn timeout(&self) -> Instant {
        match self {
            Self::HelloSent { next, deadline, .. } => (*next).min(*deadline),
            Self::ReplySent {
                next,
                deadline,
                confirmed,
                ..
            } => {
                if *confirmed {
                    *deadline
                } else {
                    (*next).min(*deadline)
                }
            }
            Self::Confirmed { until, .. } | Self::Failed { until } => *until,
        }
    }
}

fn refusal(code: AtbusCloseReason, message: impl Into<String>) -> LinkCloseReason {
    LinkCloseReason::local(code, message)
}

impl Node {
    /// Whether `peer` is verified: a direct link or a relayed handshake told its incarnation.
    pub(crate) fn peer_verified(&self, peer: &str) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|p| p.incarnation.is_some())
    }

    /// A relay link can carry `peer`'s session: adds the relayed path when the peer is verified,
    /// else starts the end-to-end handshake on `link` (once; it adds the paths when it ends).
    pub(crate) fn relayed_path_or_handshake(&mut self, now: Instant, peer: &str, link: LinkId) {
        if self.peer_verified(peer) {
            if let Err(reason) = self.add_relayed_path(now, peer, link) {
                tracing::debug!(peer = %peer, %reason, "no relayed path");
            }
            return;
        }
        self.start_relayed_handshake(now, peer, link, false);
    }

    /// Starts the handshake with `peer` on relay link `link`, unless one runs; `stray`: started
    /// by a session frame of an unverified peer (not after a recent failure).
    pub(crate) fn start_relayed_handshake(
        &mut self,
        now: Instant,
        peer: &str,
        link: LinkId,
        stray: bool,
    ) {
        match self.relayed_handshakes.get(peer) {
            Some(RelayedHandshake::HelloSent { .. } | RelayedHandshake::ReplySent { .. }) => {
                return;
            }
            Some(RelayedHandshake::Failed { .. }) if stray => return,
            _ => {}
        }
        if self.relayed_in_flight() >= self.config.limits.max_handshakes_in_flight {
            tracing::debug!(peer = %peer, "relayed handshake not started: too many in flight");
            return;
        }
        let mut hello = self.our_hello(self.config.relayed_path_mtu);
        // Labels are discovery data, not needed end to end; they would only make the frame big.
        hello.labels.clear();
        hello.key_id = self
            .config
            .tokens
            .first()
            .map(|t| t.key_id().to_owned())
            .unwrap_or_default();
        let package = self.relayed_package(peer, Step::Hello(hello.clone()));
        self.queue_control(link, package.clone());
        let interval = self.config.handshake_retransmit;
        tracing::debug!(link = link.0, peer = %peer, "relayed handshake: hello sent");
        self.relayed_handshakes.insert(
            peer.to_owned(),
            RelayedHandshake::HelloSent {
                hello: Box::new(hello),
                package,
                link,
                next: now + interval,
                interval,
                deadline: now + self.config.handshake_timeout,
            },
        );
    }

    /// Relayed handshakes running (not finished, not failed).
    fn relayed_in_flight(&self) -> usize {
        self.relayed_handshakes
            .values()
            .filter(|h| match h {
                RelayedHandshake::HelloSent { .. } => true,
                RelayedHandshake::ReplySent { confirmed, .. } => !confirmed,
                _ => false,
            })
            .count()
    }

    /// A `relayed_handshake` frame from `source` (checked by the relay stamp) on relay link
    /// `link`.
    pub(crate) fn on_relayed_handshake(
        &mut self,
        now: Instant,
        link: LinkId,
        source: String,
        data: RelayedHandshakeData,
    ) {
        let result = match data.step {
            Some(Step::Hello(hello)) => self.relayed_on_hello(now, link, &source, hello),
            Some(Step::HelloReply(reply)) => self.relayed_on_reply(now, link, &source, reply),
            Some(Step::Confirm(confirm)) => self.relayed_on_confirm(now, link, &source, confirm),
            Some(Step::Refuse(close)) => {
                self.relayed_on_refuse(now, link, &source, close);
                Ok(())
            }
            None => Ok(()),
        };
        if let Err(reason) = result {
            self.relayed_refuse(now, link, &source, reason);
        }
    }

    /// Responder: checks the hello, answers with our hello and proof.
    fn relayed_on_hello(
        &mut self,
        now: Instant,
        link: LinkId,
        source: &str,
        hello: HandshakeHello,
    ) -> Result<(), LinkCloseReason> {
        match self.relayed_handshakes.get(source) {
            // Crossing hellos: the node with the smaller name stays the initiator.
            Some(RelayedHandshake::HelloSent { .. }) if *self.config.name < *source => {
                return Ok(());
            }
            Some(RelayedHandshake::ReplySent {
                client, package, ..
            }) if **client == hello => {
                // Our reply was lost: the same reply again.
                let package = package.clone();
                self.queue_control(link, package);
                return Ok(());
            }
            _ => {}
        }
        self.check_peer_hello(&hello)?;
        self.refuse_relayed_tls()?;
        if hello.node_name != source {
            return Err(refusal(
                AtbusCloseReason::ProtocolError,
                format!(
                    "the hello names {:?} but the relay authenticated {source:?}",
                    hello.node_name
                ),
            ));
        }
        if !self.peers.contains_key(source) && self.peers.len() >= self.config.limits.max_peers {
            return Err(refusal(
                AtbusCloseReason::LimitExceeded,
                format!(
                    "{} peers, the limit is {}",
                    self.peers.len(),
                    self.config.limits.max_peers
                ),
            ));
        }
        let running_here = matches!(
            self.relayed_handshakes.get(source),
            Some(RelayedHandshake::HelloSent { .. } | RelayedHandshake::ReplySent { .. })
        );
        if !running_here && self.relayed_in_flight() >= self.config.limits.max_handshakes_in_flight
        {
            return Err(refusal(
                AtbusCloseReason::LimitExceeded,
                format!(
                    "{} relayed handshakes in flight, the limit is {}",
                    self.relayed_in_flight(),
                    self.config.limits.max_handshakes_in_flight
                ),
            ));
        }
        let secret = self.relayed_server_secret(&hello)?;
        let mut reply = self.our_hello(self.config.relayed_path_mtu);
        reply.labels.clear();
        reply.key_id = hello.key_id.clone();
        let th = relayed_transcript_hash(&hello, &reply);
        if let Some(secret) = &secret {
            reply.auth_proof = auth::proof(secret, Role::Server, &th).to_vec().into();
        }
        let package = self.relayed_package(source, Step::HelloReply(reply));
        self.queue_control(link, package.clone());
        let interval = self.config.handshake_retransmit;
        let confirmed = secret.is_none();
        tracing::debug!(link = link.0, peer = %source, "relayed handshake: reply sent");
        self.relayed_handshakes.insert(
            source.to_owned(),
            RelayedHandshake::ReplySent {
                client: Box::new(hello.clone()),
                package,
                th,
                secret,
                link,
                next: now + interval,
                interval,
                deadline: now + self.config.handshake_timeout,
                confirmed,
            },
        );
        if confirmed {
            // No token: nothing more to prove; the peer is known now.
            self.relayed_verified(now, link, &hello, None);
        }
        Ok(())
    }

    /// Responder: the secret the initiator's key id names (`None`: an open session).
    fn relayed_server_secret(
        &self,
        hello: &HandshakeHello,
    ) -> Result<Option<Vec<u8>>, LinkCloseReason> {
        use AtbusCloseReason::AuthFailed;
        if !hello.assigned_token.is_empty() {
            return Err(refusal(
                AuthFailed,
                "signed tokens are not accepted end to end through relays (use an access token)",
            ));
        }
        if !hello.key_id.is_empty() {
            if self.config.tokens.is_empty() {
                return Err(refusal(
                    AuthFailed,
                    format!(
                        "peer presents access key {:?} but this node has no access tokens \
                         (a token is configured on one side only)",
                        hello.key_id
                    ),
                ));
            }
            return match self
                .config
                .tokens
                .iter()
                .find(|t| t.key_id() == hello.key_id)
            {
                Some(t) => Ok(Some(t.secret().to_vec())),
                None => Err(refusal(
                    AuthFailed,
                    format!("unknown access key id {:?}", hello.key_id),
                )),
            };
        }
        if self.config.auth_mode() == crate::config::AuthMode::None {
            Ok(None)
        } else {
            Err(refusal(
                AuthFailed,
                "peer presents no access token but this node requires one",
            ))
        }
    }

    /// Initiator: verifies the responder's reply, confirms, and the peer is known.
    fn relayed_on_reply(
        &mut self,
        now: Instant,
        link: LinkId,
        source: &str,
        reply: HandshakeHello,
    ) -> Result<(), LinkCloseReason> {
        let hello = match self.relayed_handshakes.get(source) {
            Some(RelayedHandshake::HelloSent { hello, .. }) => (**hello).clone(),
            Some(RelayedHandshake::Confirmed {
                reply: r, package, ..
            }) => {
                // Our confirm was lost: the same confirm again.
                if **r == reply {
                    let package = package.clone();
                    self.queue_control(link, package);
                }
                return Ok(());
            }
            // Late, duplicated or not asked for.
            _ => return Ok(()),
        };
        self.check_peer_hello(&reply)?;
        self.refuse_relayed_tls()?;
        if reply.node_name != source {
            return Err(refusal(
                AtbusCloseReason::ProtocolError,
                format!(
                    "the reply names {:?} but the relay authenticated {source:?}",
                    reply.node_name
                ),
            ));
        }
        let mut unsigned = reply.clone();
        unsigned.auth_proof = Bytes::new();
        let th = relayed_transcript_hash(&hello, &unsigned);
        let secret = self.config.tokens.first().map(|t| t.secret().to_vec());
        let keys = match &secret {
            None => {
                if !reply.key_id.is_empty() || !reply.auth_proof.is_empty() {
                    return Err(refusal(
                        AtbusCloseReason::AuthFailed,
                        "peer sent an access proof but this node has no access tokens",
                    ));
                }
                None
            }
            Some(secret) => {
                if reply.key_id != hello.key_id {
                    return Err(refusal(
                        AtbusCloseReason::AuthFailed,
                        format!(
                            "peer answered for access key {:?}, this node presented {:?}",
                            reply.key_id, hello.key_id
                        ),
                    ));
                }
                if !auth::verify(secret, Role::Server, &th, &reply.auth_proof) {
                    return Err(refusal(
                        AtbusCloseReason::AuthFailed,
                        format!(
                            "peer's proof for access key {:?} does not verify end to end \
                             (the tokens differ)",
                            hello.key_id
                        ),
                    ));
                }
                Some(auth::session_keys(secret, &th, Role::Client))
            }
        };
        if let Some(secret) = &secret {
            let proof = auth::proof(secret, Role::Client, &th);
            let package = self.relayed_package(
                source,
                Step::Confirm(HandshakeConfirm {
                    auth_proof: proof.to_vec().into(),
                }),
            );
            self.queue_control(link, package.clone());
            self.relayed_handshakes.insert(
                source.to_owned(),
                RelayedHandshake::Confirmed {
                    reply: Box::new(reply.clone()),
                    package,
                    until: now + self.config.handshake_timeout,
                },
            );
        } else {
            self.relayed_handshakes.remove(source);
        }
        tracing::debug!(link = link.0, peer = %source, "relayed handshake: peer verified");
        self.relayed_verified(now, link, &reply, keys);
        Ok(())
    }

    /// Responder: the initiator's proof.
    fn relayed_on_confirm(
        &mut self,
        now: Instant,
        link: LinkId,
        source: &str,
        confirm: HandshakeConfirm,
    ) -> Result<(), LinkCloseReason> {
        let Some(RelayedHandshake::ReplySent {
            client,
            th,
            secret,
            confirmed,
            ..
        }) = self.relayed_handshakes.get_mut(source)
        else {
            return Ok(());
        };
        if *confirmed {
            return Ok(());
        }
        let Some(secret) = secret.as_ref() else {
            return Ok(());
        };
        if !auth::verify(secret, Role::Client, th, &confirm.auth_proof) {
            return Err(refusal(
                AtbusCloseReason::AuthFailed,
                format!(
                    "peer's proof for access key {:?} does not verify end to end (the tokens \
                     differ)",
                    client.key_id
                ),
            ));
        }
        *confirmed = true;
        let keys = auth::session_keys(secret, th, Role::Server);
        let client = (**client).clone();
        tracing::debug!(link = link.0, peer = %source, "relayed handshake: peer verified");
        self.relayed_verified(now, link, &client, Some(keys));
        Ok(())
    }

    /// The peer refused our handshake.
    fn relayed_on_refuse(
        &mut self,
        now: Instant,
        link: LinkId,
        source: &str,
        close: CloseReasonData,
    ) {
        let running = matches!(
            self.relayed_handshakes.get(source),
            Some(
                RelayedHandshake::HelloSent { .. }
                    | RelayedHandshake::ReplySent { .. }
                    | RelayedHandshake::Confirmed { .. }
            )
        );
        if !running {
            return;
        }
        let reason = LinkCloseReason {
            code: AtbusCloseReason::try_from(close.code).unwrap_or(AtbusCloseReason::AuthFailed),
            message: close.message,
            by_peer: true,
        };
        self.relayed_failed(now, link, source, reason);
    }

    /// This side refuses: `refuse` to the peer, the failure reported here.
    fn relayed_refuse(&mut self, now: Instant, link: LinkId, peer: &str, reason: LinkCloseReason) {
        tracing::info!(peer = %peer, %reason, "relayed handshake refused");
        let package = self.relayed_package(
            peer,
            Step::Refuse(CloseReasonData {
                code: reason.code as i32,
                message: reason.message.clone(),
            }),
        );
        self.queue_control(link, package);
        self.relayed_failed(now, link, peer, reason);
    }

    fn relayed_failed(&mut self, now: Instant, link: LinkId, peer: &str, reason: LinkCloseReason) {
        // Failures are remembered (to hold off stray-frame handshakes) while the table is small.
        let bound = self
            .config
            .limits
            .max_handshakes_in_flight
            .saturating_mul(4);
        if self.relayed_handshakes.len() < bound || self.relayed_handshakes.contains_key(peer) {
            self.relayed_handshakes.insert(
                peer.to_owned(),
                RelayedHandshake::Failed {
                    until: now + self.config.handshake_timeout,
                },
            );
        }
        self.events.push_back(NodeEvent::RelayedHandshakeFailed {
            link,
            peer: peer.to_owned(),
            reason,
        });
    }

    /// The handshake verified `hello`'s sender: a changed incarnation drops the old session
    /// (its undelivered messages are reported), then the session gets its relayed paths.
    fn relayed_verified(
        &mut self,
        now: Instant,
        link: LinkId,
        hello: &HandshakeHello,
        keys: Option<SessionKeys>,
    ) {
        let name = hello.node_name.clone();
        self.drop_if_restarted(now, &name, hello.incarnation_id);
        let fresh = self.peers.get(&name).is_none_or(|p| {
            p.incarnation.is_none()
                && p.paths.is_empty()
                && p.session().send_buffered() == 0
                && p.session().receive_buffered() == 0
        });
        if fresh {
            // Nothing was sent yet: the session starts with the credit the peer announced.
            let down_since = self.peers.get(&name).and_then(|p| p.down_since);
            let mut p = Peer::new(None, Session::new(self.session_config_for(hello), now));
            p.down_since = down_since;
            self.peers.insert(name.clone(), p);
        }
        // Content protection end to end: both hellos passed `check_peer_hello` (same mode, a
        // common suite) and the keys come from the relayed transcript. A session that already
        // seals with a direct link's keys keeps them.
        let codec = match self.link_content(hello, keys.as_ref()) {
            Ok(content) => self.session_codec(content.as_ref(), self.compresses_with(hello)),
            Err(reason) => {
                tracing::warn!(peer = %name, %reason, "relayed session without content protection");
                None
            }
        };
        if let Some(p) = self.peers.get_mut(&name) {
            p.incarnation = Some(hello.incarnation_id);
            if p.keys.is_none() {
                p.keys = keys;
            }
            if codec.is_some() && p.link_content.is_empty() && !p.session().has_content_codec() {
                p.session_mut().set_content_codec(codec);
            }
        }
        // Messages sent before the handshake wait in the session; they never leave in clear.
        if self.requires_encryption()
            && !self
                .peers
                .get(&name)
                .is_some_and(|p| p.session().is_encrypted())
        {
            tracing::warn!(peer = %name, "relayed session does not seal; no relayed path");
            return;
        }
        let mut links = vec![link];
        if let Some(relay) = self.relay_routes.get(&name) {
            links.extend(
                self.links
                    .iter()
                    .filter(|&(&id, l)| {
                        id != link
                            && matches!(&l.state, LinkState::Relay { relay: r, .. } if r == relay)
                    })
                    .map(|(&id, _)| id),
            );
        }
        for l in links {
            if let Err(reason) = self.add_relayed_path(now, &name, l) {
                tracing::debug!(peer = %name, %reason, "no relayed path");
            }
        }
    }

    /// A session configuration for the sender of `hello`, with the credit it announced.
    fn session_config_for(&self, hello: &HandshakeHello) -> SessionConfig {
        let mut config: SessionConfig = self.config.session.clone();
        config.local_name = self.config.name.clone();
        config.peer_name = hello.node_name.clone();
        config.peer_stream_receive_window = u64::try_from(hello.stream_receive_window)
            .ok()
            .filter(|&w| w > 0);
        config.peer_session_receive_window = u64::try_from(hello.session_receive_window)
            .ok()
            .filter(|&w| w > 0);
        config
    }

    /// A relayed handshake frame to `peer`, as a whole package.
    fn relayed_package(&self, peer: &str, step: Step) -> Vec<u8> {
        self.frame_package(&FrameMessage {
            head: Some(MessageHead {
                source: self.config.name.clone(),
                destination: peer.to_owned(),
                ..MessageHead::default()
            }),
            body: Some(Body::RelayedHandshake(RelayedHandshakeData {
                step: Some(step),
            })),
        })
    }

    /// The next relayed handshake timer.
    pub(crate) fn relayed_handshake_timeout(&self) -> Option<Instant> {
        self.relayed_handshakes
            .values()
            .map(RelayedHandshake::timeout)
            .min()
    }

    /// Runs the relayed handshake timers due at `now`: retransmissions with backoff, expiry.
    pub(crate) fn relayed_handshake_timers(&mut self, now: Instant) {
        let due: Vec<String> = self
            .relayed_handshakes
            .iter()
            .filter(|(_, h)| h.timeout() <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for peer in due {
            self.relayed_handshake_timer(now, &peer);
        }
    }

    fn relayed_handshake_timer(&mut self, now: Instant, peer: &str) {
        let Some(h) = self.relayed_handshakes.get_mut(peer) else {
            return;
        };
        let (expired, link) = match h {
            RelayedHandshake::HelloSent { deadline, link, .. } => (now >= *deadline, Some(*link)),
            RelayedHandshake::ReplySent {
                deadline,
                confirmed,
                link,
                ..
            } => {
                if now >= *deadline && *confirmed {
                    self.relayed_handshakes.remove(peer);
                    return;
                }
                (now >= *deadline, Some(*link))
            }
            RelayedHandshake::Confirmed { .. } | RelayedHandshake::Failed { .. } => {
                self.relayed_handshakes.remove(peer);
                return;
            }
        };
        if expired {
            let reason = refusal(
                AtbusCloseReason::IdleTimeout,
                format!(
                    "the end-to-end handshake through the relay was not answered within {:?}",
                    self.config.handshake_timeout
                ),
            );
            let link = link.unwrap_or(LinkId(u64::MAX));
            self.relayed_failed(now, link, peer, reason);
            // A peer still waiting for its relayed paths tries again at once, on a live link.
            let waiting = self
                .peers
                .get(peer)
                .is_some_and(|p| p.incarnation.is_none());
            if waiting {
                if let Some(l) = self.relay_link_for(peer, None) {
                    self.relayed_handshakes.remove(peer);
                    self.start_relayed_handshake(now, peer, l, false);
                }
            }
            return;
        }
        // A retransmission, on the same link while it lives, else on another to the same relay.
        let current = match self.relayed_handshakes.get(peer) {
            Some(
                RelayedHandshake::HelloSent { link, .. } | RelayedHandshake::ReplySent { link, .. },
            ) => *link,
            _ => return,
        };
        let Some(out) = self.relay_link_for(peer, Some(current)) else {
            // No relay link left: the handshake starts again when one comes up.
            self.relayed_handshakes.remove(peer);
            return;
        };
        let package = match self.relayed_handshakes.get_mut(peer) {
            Some(
                RelayedHandshake::HelloSent {
                    package,
                    link,
                    next,
                    interval,
                    ..
                }
                | RelayedHandshake::ReplySent {
                    package,
                    link,
                    next,
                    interval,
                    ..
                },
            ) => {
                *interval = (*interval * 2).min(MAX_RETRANSMIT_INTERVAL);
                *next = now + *interval;
                *link = out;
                package.clone()
            }
            _ => return,
        };
        self.queue_control(out, package);
    }

    /// A live relay link to reach `peer`: `preferred` if it is one, else a link to the relay
    /// the peer is routed through.
    fn relay_link_for(&self, peer: &str, preferred: Option<LinkId>) -> Option<LinkId> {
        if let Some(l) = preferred.filter(|&l| self.is_relay_link(l)) {
            return Some(l);
        }
        let relay = self.relay_routes.get(peer)?;
        self.links
            .iter()
            .find(|(_, l)| matches!(&l.state, LinkState::Relay { relay: r, .. } if r == relay))
            .map(|(&id, _)| id)
    }
}
