//! Who a peer is and what it may do: the credential proved in the handshake (pre-shared access
//! token, signed token, none, or anonymous with an assigned name), 0-RTT early data, and the
//! guard that checks every frame of a restricted link. `docs/security.md` §9 states the rules.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use atbus_auth::{
    AntiReplay, EarlyContext, EarlyOutcome, EarlyProof, StreamSet, TokenClaims, TokenError,
    VerifiedToken,
};
use atbus_proto::{
    AtbusCloseReason, EarlyDataMessage, FrameMessage, HandshakeConfirm, HandshakeHello,
    frame_message::Body,
};
use bytes::Bytes;
use prost::Message as _;

use crate::config::check_name;
use crate::error::NodeError;
use crate::node::Node;
use crate::types::{LinkCloseReason, LinkId, NodeEvent};

/// `handshake_accept.early_data_status`: the hello carried no early data.
pub const EARLY_DATA_NONE: i32 = 0;
/// `handshake_accept.early_data_status`: the early data was accepted and delivered.
pub const EARLY_DATA_ACCEPTED: i32 = 1;
/// `handshake_accept.early_data_status`: the early data was discarded; the client sends it
/// again in the session.
pub const EARLY_DATA_REFUSED: i32 = 2;

/// Most early-data messages in one first flight.
pub const MAX_EARLY_MESSAGES: usize = 64;

/// Prefix of anonymous peers' assigned names.
pub const ANONYMOUS_PREFIX: &str = "anon-";

type Reject = LinkCloseReason;

fn auth_failed(message: impl Into<String>) -> Reject {
    LinkCloseReason::local(AtbusCloseReason::AuthFailed, message)
}

/// What the client of a link proved, or will prove in its confirm.
#[derive(Debug, Clone)]
pub(crate) enum Credential {
    /// Nothing: an open link.
    Open,
    /// The pre-shared access token at this index of `NodeConfig::tokens`.
    Shared(usize),
    /// A signed token that verified; its holder secret keys the proofs.
    Signed(Box<VerifiedToken>),
    /// An anonymous peer and the name this node assigned to it.
    Anonymous(String),
}

impl Credential {
    /// The HMAC key of the handshake proofs, if the credential has one.
    pub fn secret<'a>(&'a self, node: &'a Node) -> Option<&'a [u8]> {
        match self {
            Credential::Shared(i) => node.config.tokens.get(*i).map(|t| t.secret()),
            Credential::Signed(t) => Some(&t.holder_secret.0),
            Credential::Open | Credential::Anonymous(_) => None,
        }
    }
}

/// The stable short name of a token defect, first word of the `AUTH_FAILED` close message, so
/// a client can tell the reasons apart (`atbus send` prints the whole message).
pub fn token_defect(err: &TokenError) -> &'static str {
    match err {
        TokenError::Oversized { .. } => "token-oversized",
        TokenError::Truncated { .. } => "token-truncated",
        TokenError::UnsupportedVersion(_) => "token-unsupported-version",
        TokenError::Malformed { .. } => "token-malformed",
        TokenError::UnknownKeyId(_) => "token-unknown-key-id",
        TokenError::Tampered => "token-tampered",
        TokenError::WrongAudience { .. } => "token-wrong-audience",
        TokenError::LifetimeTooLong { .. } => "token-lifetime-too-long",
        TokenError::Expired { .. } => "token-expired",
        TokenError::NotYetValid { .. } => "token-not-yet-valid",
        TokenError::Revoked => "token-revoked",
        _ => "token-refused",
    }
}

/// What a restricted link may carry: the streams its token (or the anonymous policy) allows,
/// and for anonymous peers a packet rate.
#[derive(Debug)]
pub(crate) struct LinkGuard {
    streams: StreamSet,
    /// Whose rule it is, for close messages ("token", "anonymous policy").
    source: &'static str,
    rate: Option<Rate>,
    /// Packets dropped by the rate limit (datagram links).
    pub dropped: u64,
    /// Reading of a byte-stream link is paused by the rate limit until then.
    pub paused_until: Option<Instant>,
}

/// A fixed one-second window packet counter.
#[derive(Debug)]
struct Rate {
    per_sec: u32,
    window_start: Option<Instant>,
    used: u32,
}

/// What the guard says about one frame.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Let it through.
    Pass,
    /// Drop it unread (rate limit on a datagram link): the sender's loss recovery slows it
    /// down.
    Drop,
    /// Process it, then stop reading the (byte-stream) link until the window ends
    /// (`LinkGuard::paused_until`): a reliable link must not lose frames, so the rate limit
    /// pushes back through the transport instead.
    Pause,
    /// Close the link.
    Close(Reject),
}

impl LinkGuard {
    /// The guard of a link authenticated by `token`.
    pub fn for_token(token: &VerifiedToken) -> Self {
        Self {
            streams: token.claims.streams.clone(),
            source: "token",
            rate: None,
            dropped: 0,
            paused_until: None,
        }
    }

    /// The guard of an anonymous link.
    pub fn anonymous(streams: StreamSet, per_sec: u32) -> Self {
        Self {
            streams,
            source: "anonymous policy",
            rate: Some(Rate {
                per_sec,
                window_start: None,
                used: 0,
            }),
            dropped: 0,
            paused_until: None,
        }
    }

    /// Whether `stream_id` is allowed.
    pub fn allows(&self, stream_id: i64) -> bool {
        self.streams.contains(stream_id)
    }

    /// Checks one frame. Only data packets are restricted: acknowledgements and pings concern
    /// streams and paths the peer was already allowed to see, and the session-close packet
    /// carries no stream data.
    pub fn check(&mut self, now: Instant, frame: &FrameMessage, reliable: bool) -> Verdict {
        let Some(Body::Packet(p)) = &frame.body else {
            return Verdict::Pass;
        };
        // Close and sealed control packets (acknowledgements, pings) carry no stream data.
        let not_data = p.flags
            & (atbus_proto::packet_flags::CLOSE_SESSION
                | atbus_proto::packet_flags::SESSION_CONTROL)
            != 0;
        if !not_data && !self.streams.contains(p.stream_id) {
            return Verdict::Close(auth_failed(format!(
                "stream-not-allowed: stream {} is outside the streams the {} allows",
                p.stream_id, self.source
            )));
        }
        if let Some(r) = &mut self.rate {
            let fresh = r
                .window_start
                .is_none_or(|s| now.saturating_duration_since(s) >= Duration::from_secs(1));
            if fresh {
                r.window_start = Some(now);
                r.used = 0;
            }
            if r.used >= r.per_sec {
                if reliable {
                    // Frames already read are processed; reading stops until the window ends.
                    if self.paused_until.is_some() {
                        return Verdict::Pass;
                    }
                    let until = r.window_start.unwrap_or(now) + Duration::from_secs(1);
                    self.paused_until = Some(until);
                    return Verdict::Pause;
                }
                self.dropped += 1;
                return Verdict::Drop;
            }
            r.used += 1;
        }
        Verdict::Pass
    }
}

impl Node {
    // ----- public API of this concern -----

    /// Tells the node the wall clock (Unix milliseconds) without running timers. Token expiry
    /// and 0-RTT freshness use the latest value given here or to `handle_timeout`; call it
    /// before feeding input when timers are rare. The 0-RTT guard starts at the first value
    /// (> 0) given, and refuses 0-RTT for one window from then.
    pub fn set_unix_time(&mut self, unix_ms: i64) {
        self.unix_ms = unix_ms;
        if unix_ms > 0 && self.anti_replay.is_none() {
            self.anti_replay = Some(AntiReplay::new(
                self.config.anti_replay,
                u64::try_from(unix_ms).unwrap_or(0),
            ));
        }
    }

    /// Queues `data` on `stream_id` as early data of the link `link` (opened by the driver
    /// for `server`, not up yet). With [`crate::AuthMode::ZeroRtt`], a credential and a known
    /// wall clock it rides in the first flight with a 0-RTT proof; otherwise, or if the server
    /// refuses it, it is sent in the session once the link is up, so it is delivered once
    /// either way. If the link fails before the server answered, it is reported as
    /// [`NodeEvent::Undeliverable`] (it may or may not have been delivered).
    pub fn send_early(
        &mut self,
        link: LinkId,
        server: &str,
        stream_id: i64,
        data: impl Into<Bytes>,
    ) -> Result<(), NodeError> {
        check_name(server).map_err(NodeError::InvalidName)?;
        let data = data.into();
        let entry = self
            .early_pending
            .entry(link)
            .or_insert_with(|| (server.to_owned(), Vec::new()));
        if entry.0 != server {
            return Err(NodeError::InvalidName(format!(
                "link {} was opened for {:?}, not {server:?}",
                link.0, entry.0
            )));
        }
        let queued: usize = entry.1.iter().map(|(_, d)| d.len()).sum();
        if data.is_empty()
            || entry.1.len() >= MAX_EARLY_MESSAGES
            || queued + data.len() > self.config.max_early_data
        {
            return Err(NodeError::Send(atbus_stream::SendError::WouldBlock));
        }
        entry.1.push((stream_id, data));
        Ok(())
    }

    /// 0-RTT flights the guard accepted, refused as replays, and refused for other reasons
    /// (stale, not yet warm, cache full): `(accepted, replayed, other)`.
    pub fn early_data_stats(&self) -> (u64, u64, u64) {
        self.early_stats
    }

    // ----- client side -----

    /// The credential this node presents as a client: key id, proof secret and the signed
    /// token's bytes (empty for a pre-shared token).
    pub(crate) fn client_credential(&self) -> Option<(&str, &[u8], &[u8])> {
        if let Some(t) = &self.config.signed_token {
            return Some((t.key_id(), t.holder_secret(), t.bytes()));
        }
        self.config
            .tokens
            .first()
            .map(|t| (t.key_id(), t.secret(), &[][..]))
    }

    /// Finishes the client's hello for `link`: an empty name when asking for an assigned one,
    /// the signed token, and the link's early data with its 0-RTT proof when allowed.
    pub(crate) fn client_first_flight(
        &mut self,
        link: LinkId,
        mut hello: HandshakeHello,
    ) -> HandshakeHello {
        if self.config.request_assigned_name {
            hello.node_name = String::new();
        }
        if let Some((_, _, token)) = self.client_credential() {
            hello.assigned_token = Bytes::copy_from_slice(token);
        }
        let Some((server, messages)) = self.early_pending.remove(&link) else {
            return hello;
        };
        let mtu = self.links.get(&link).map_or(0, |l| l.mtu);
        let mut sent = false;
        if self.config.auth_mode() == crate::config::AuthMode::ZeroRtt
            && self.unix_ms > 0
            && !self.requires_encryption()
        {
            if let Some((key_id, secret, _)) = self.client_credential() {
                let (key_id, secret) = (key_id.to_owned(), secret.to_vec());
                let mut flight = hello.clone();
                flight.early_data = messages
                    .iter()
                    .map(|(s, d)| EarlyDataMessage {
                        stream_id: *s,
                        data: d.clone(),
                    })
                    .collect();
                let bytes = flight.encode_to_vec();
                let mut nonce = [0u8; atbus_auth::EARLY_NONCE_LEN];
                self.rng.fill_bytes(&mut nonce);
                let ctx = EarlyContext {
                    key_id: &key_id,
                    client_name: &flight.node_name,
                    namespace: &flight.namespace_name,
                    server_name: &server,
                    first_flight: &bytes,
                };
                let unix_ms = u64::try_from(self.unix_ms).unwrap_or(0);
                // The whole hello must fit one package of the link (one datagram on UDP).
                if let Ok(proof) = EarlyProof::sign(&secret, &ctx, unix_ms, nonce) {
                    if bytes.len() + atbus_auth::EARLY_PROOF_LEN + 64 <= mtu {
                        flight.auth_proof = Bytes::copy_from_slice(&proof.to_bytes());
                        hello = flight;
                        sent = true;
                    }
                }
            }
        }
        if let Some(l) = self.links.get_mut(&link) {
            l.early = Some(Box::new((server, messages)));
            l.early_sent = sent;
        }
        hello
    }

    /// Client, after the accept established the link with `peer`: early data the server did
    /// not take goes out in the session, and the application learns what happened.
    pub(crate) fn client_early_outcome(&mut self, link: LinkId, peer: &str, status: i32) {
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        let sent = std::mem::take(&mut l.early_sent);
        let Some(early) = l.early.take() else {
            return;
        };
        let accepted = sent && status == EARLY_DATA_ACCEPTED;
        if !accepted {
            for (stream_id, data) in early.1 {
                let message = atbus_stream::OutgoingMessage::data(data.clone());
                if let Err(err) = self.send(peer, stream_id, message) {
                    tracing::warn!(%peer, stream_id, %err, "early data could not be resent");
                    self.events.push_back(NodeEvent::Undeliverable {
                        peer: peer.to_owned(),
                        stream_id,
                        offset: 0,
                        data,
                        meta: atbus_stream::MessageMeta::default(),
                        reason: crate::types::UndeliverableReason::Dropped,
                    });
                }
            }
        }
        if sent {
            self.events.push_back(NodeEvent::EarlyDataStatus {
                peer: peer.to_owned(),
                accepted,
            });
        }
    }

    /// A link with early data waiting for the server's answer closed: the data is reported
    /// undeliverable (it may have been delivered if the first flight carried it).
    pub(crate) fn early_data_lost(&mut self, link: LinkId) {
        let Some(early) = self.links.get_mut(&link).and_then(|l| l.early.take()) else {
            return;
        };
        let (server, messages) = *early;
        for (stream_id, data) in messages {
            self.events.push_back(NodeEvent::Undeliverable {
                peer: server.clone(),
                stream_id,
                offset: 0,
                data,
                meta: atbus_stream::MessageMeta::default(),
                reason: crate::types::UndeliverableReason::Dropped,
            });
        }
    }

    /// The link early data was queued for never came up: the data is reported undeliverable.
    pub(crate) fn early_connect_failed(&mut self, link: LinkId) {
        let Some((server, messages)) = self.early_pending.remove(&link) else {
            return;
        };
        for (stream_id, data) in messages {
            self.events.push_back(NodeEvent::Undeliverable {
                peer: server.clone(),
                stream_id,
                offset: 0,
                data,
                meta: atbus_stream::MessageMeta::default(),
                reason: crate::types::UndeliverableReason::Dropped,
            });
        }
    }

    // ----- server side -----

    /// Verifies the signed token of `hello` and the name it binds.
    pub(crate) fn verify_signed_token(
        &self,
        hello: &HandshakeHello,
    ) -> Result<VerifiedToken, Reject> {
        let Some(ring) = &self.config.token_keyring else {
            return Err(auth_failed(
                "token-not-accepted: the peer presents a signed token but this node has no \
                 token key ring",
            ));
        };
        if self.unix_ms <= 0 {
            return Err(auth_failed(
                "token-refused: this node does not know the time yet (no wall clock given)",
            ));
        }
        let now = u64::try_from(self.unix_ms / 1000).unwrap_or(0);
        let token = ring
            .verify(&hello.assigned_token, &self.config.namespace, now)
            .map_err(|e| auth_failed(format!("{}: {e}", token_defect(&e))))?;
        if token.key_id != hello.key_id {
            return Err(auth_failed(format!(
                "token-malformed: hello names key id {:?}, the token {:?}",
                hello.key_id, token.key_id
            )));
        }
        token
            .check_name(&hello.node_name)
            .map_err(|e| auth_failed(format!("token-name-mismatch: {e}")))?;
        Ok(token)
    }

    /// Whether `name` is configured or in use here: this node, a relay, a peer with a session
    /// or a link.
    pub(crate) fn name_taken(&self, name: &str) -> bool {
        name == self.config.name
            || self.reservations.pending.contains_key(name)
            || self.reservations.held.contains(name)
            || self.config.relays.iter().any(|r| r == name)
            || self.peers.contains_key(name)
            || self.links.values().any(|l| {
                matches!(&l.state, crate::link::LinkState::ReplySent {
                    credential: Credential::Anonymous(n), ..
                } if n == name)
            })
    }

    /// Refuses an anonymous peer's labels outside the policy's allow-list and size.
    pub(crate) fn check_anonymous_labels(
        &self,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), Reject> {
        let Some(policy) = &self.config.anonymous else {
            return Ok(());
        };
        if let Some(key) = labels.keys().find(|k| !policy.label_keys.contains(*k)) {
            return Err(auth_failed(format!(
                "labels-not-allowed: anonymous peers may not announce label {key:?}"
            )));
        }
        let size: usize = labels.iter().map(|(k, v)| k.len() + v.len()).sum();
        if size > policy.max_label_bytes {
            return Err(LinkCloseReason::local(
                AtbusCloseReason::LimitExceeded,
                format!(
                    "labels-too-large: {size} bytes of labels, anonymous peers may announce {}",
                    policy.max_label_bytes
                ),
            ));
        }
        Ok(())
    }

    /// A fresh name for an anonymous peer, unique among the names in use here.
    pub(crate) fn assign_anonymous_name(&mut self) -> String {
        loop {
            let name = format!("{ANONYMOUS_PREFIX}{:016x}", self.rng.next_u64());
            if !self.name_taken(&name) {
                return name;
            }
        }
    }

    /// A token for an anonymous peer's assigned name, when the key ring has an issuing key.
    pub(crate) fn issue_anonymous_token(&mut self, name: &str) -> Option<atbus_auth::IssuedToken> {
        let policy = self.config.anonymous.as_ref()?;
        let ring = self.config.token_keyring.as_ref()?;
        ring.issuing_key_id()?;
        let now = u64::try_from(self.unix_ms / 1000).ok().filter(|&n| n > 0)?;
        let mut nonce = [0u8; 16];
        self.rng.fill_bytes(&mut nonce);
        let claims = TokenClaims {
            name: name.to_owned(),
            namespace: self.config.namespace.clone(),
            streams: policy.streams.clone(),
            issued_at: now,
            expires_at: now + policy.token_lifetime_secs.max(1),
            nonce,
        };
        ring.issue(&claims).ok()
    }

    /// Checks the 0-RTT proof of `hello` and delivers its early data once. Returns the
    /// `early_data_status` for the accept; a proof that does not verify is an error (the
    /// client does not hold the credential it names).
    pub(crate) fn admit_early_data(
        &mut self,
        hello: &HandshakeHello,
        secret: Option<&[u8]>,
        guard: Option<&LinkGuard>,
    ) -> Result<i32, Reject> {
        if hello.auth_proof.is_empty() && hello.early_data.is_empty() {
            return Ok(EARLY_DATA_NONE);
        }
        let refused = |why: &str| {
            tracing::debug!(peer = %hello.node_name, why, "0-RTT refused, 1-RTT goes on");
            Ok(EARLY_DATA_REFUSED)
        };
        if self.config.auth_mode() != crate::config::AuthMode::ZeroRtt {
            return refused("0-RTT is off");
        }
        // Early data would travel before the session keys exist, readable on the way and
        // replayable by an observer within the window: an encrypted node takes none
        // (`docs/security.md` §8.8); the client sends it again in the sealed session.
        if self.requires_encryption() || hello.encryption_mode != 0 {
            return refused("the session is encrypted");
        }
        let Some(secret) = secret else {
            return refused("no credential");
        };
        let size: usize = hello.early_data.iter().map(|m| m.data.len()).sum();
        if hello.early_data.len() > MAX_EARLY_MESSAGES || size > self.config.max_early_data {
            return refused("too much early data");
        }
        let proof = EarlyProof::from_bytes(&hello.auth_proof)
            .map_err(|e| LinkCloseReason::local(AtbusCloseReason::ProtocolError, e.to_string()))?;
        let mut flight = hello.clone();
        flight.auth_proof = Bytes::new();
        let bytes = flight.encode_to_vec();
        let ctx = EarlyContext {
            key_id: &hello.key_id,
            client_name: &hello.node_name,
            namespace: &hello.namespace_name,
            server_name: &self.config.name,
            first_flight: &bytes,
        };
        let now = u64::try_from(self.unix_ms).unwrap_or(0);
        let Some(guard_0rtt) = self.anti_replay.as_mut() else {
            return refused("wall clock unknown");
        };
        let outcome = guard_0rtt
            .admit(now, &proof, secret, &ctx)
            .map_err(|e| auth_failed(format!("early-proof-invalid: {e}")))?;
        match outcome {
            EarlyOutcome::Accepted => {}
            EarlyOutcome::Replayed => {
                self.early_stats.1 += 1;
                return refused("replayed");
            }
            other => {
                self.early_stats.2 += 1;
                tracing::debug!(?other, "0-RTT outcome");
                return refused("stale, not yet warm or cache full");
            }
        }
        if let Some(g) = guard {
            if let Some(m) = hello.early_data.iter().find(|m| !g.allows(m.stream_id)) {
                return Err(auth_failed(format!(
                    "stream-not-allowed: early data on stream {} is outside the token's streams",
                    m.stream_id
                )));
            }
        }
        self.early_stats.0 += 1;
        for m in &hello.early_data {
            self.events.push_back(NodeEvent::EarlyData {
                peer: hello.node_name.clone(),
                stream_id: m.stream_id,
                data: m.data.clone(),
            });
        }
        Ok(EARLY_DATA_ACCEPTED)
    }

    /// Runs the guard of `link` on `frame`; false when the frame must not be processed (dropped
    /// or the link closed).
    pub(crate) fn guard_frame(&mut self, now: Instant, link: LinkId, frame: &FrameMessage) -> bool {
        let Some(l) = self.links.get_mut(&link) else {
            return true;
        };
        let reliable = l.kind.is_reliable();
        let Some(guard) = l.guard.as_mut() else {
            return true;
        };
        match guard.check(now, frame, reliable) {
            Verdict::Pass => true,
            Verdict::Drop => false,
            Verdict::Pause => {
                self.actions
                    .push_back(crate::types::Action::PauseReading { link });
                true
            }
            Verdict::Close(reason) => {
                self.close_link(now, link, reason, true, true);
                false
            }
        }
    }
}

impl Node {
    /// Ends a rate-limit pause of `link` when its time came; true if it did.
    pub(crate) fn guard_timeout(&mut self, now: Instant, link: LinkId) -> bool {
        let Some(g) = self.links.get_mut(&link).and_then(|l| l.guard.as_mut()) else {
            return false;
        };
        if g.paused_until.is_none_or(|t| t > now) {
            return false;
        }
        g.paused_until = None;
        self.actions
            .push_back(crate::types::Action::ResumeReading { link });
        true
    }
}

/// What a per-source bound counts of a peer address `ip:port` (`[v6]:port`): the IPv4 address,
/// or the /64 prefix of an IPv6 address. `None` for anything else (Unix paths, `mem://` names)
/// and for loopback addresses (local processes cannot be spoofed from the network, and tests
/// and benchmarks open many links from one loopback address at once).
pub fn source_key(peer: &str) -> Option<std::net::IpAddr> {
    source_key_with(peer, false)
}

/// As [`source_key`]; with `loopback` set, loopback addresses are counted too
/// ([`crate::NodeLimits::limit_loopback`]).
fn source_key_with(peer: &str, loopback: bool) -> Option<std::net::IpAddr> {
    let addr: std::net::SocketAddr = peer.parse().ok()?;
    if addr.ip().is_loopback() && !loopback {
        return None;
    }
    Some(match addr.ip() {
        std::net::IpAddr::V4(v4) => std::net::IpAddr::V4(v4),
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            std::net::IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    })
}

impl Node {
    /// The driver reports where inbound `link` comes from (`ip:port` as the socket gave it).
    /// Handshakes still running from the same IPv4 address or IPv6 /64 are bounded by
    /// [`crate::NodeLimits::max_handshakes_per_source`]; past it the link is refused with
    /// `LIMIT_EXCEEDED`. Addresses that are not IP (Unix sockets) and loopback addresses are
    /// not counted ([`source_key`]) unless [`crate::NodeLimits::limit_loopback`] is set.
    pub fn handle_link_source(&mut self, now: Instant, link: LinkId, peer: &str) {
        let Some(key) = source_key_with(peer, self.config.limits.limit_loopback) else {
            return;
        };
        let same = self
            .links
            .iter()
            .filter(|(id, l)| **id != link && l.source == Some(key) && l.state.in_handshake())
            .count();
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        if !l.state.in_handshake() {
            return;
        }
        l.source = Some(key);
        l.peer_addr = peer.parse().ok();
        let max = self.config.limits.max_handshakes_per_source;
        if same >= max {
            let reason = LinkCloseReason::local(
                AtbusCloseReason::LimitExceeded,
                format!("{same} handshakes in flight from {key}, the limit per source is {max}"),
            );
            self.reject_link(now, link, reason, true);
        }
    }
}

// ----- stateless cookie / retry -----

/// Length of a handshake cookie (a truncated HMAC-SHA256).
pub const COOKIE_LEN: usize = 16;

/// How long one cookie secret is used before a fresh one replaces it; a cookie verifies under
/// the current secret or the one before, so it lives between one and two periods.
pub const COOKIE_ROTATION: Duration = Duration::from_secs(120);

/// Longest cookie a client echoes back; anything longer is a protocol error.
pub const MAX_COOKIE_LEN: usize = 64;

/// The rotating secrets of the stateless cookie (`docs/security.md` §9.4). Secrets are drawn
/// from the node's caller-supplied RNG; time comes from the `now` passed in.
#[derive(Default)]
pub(crate) struct CookieJar {
    /// When slot 0 began (the first gated hello); slots are [`COOKIE_ROTATION`] long.
    origin: Option<Instant>,
    /// The secret of the current slot and the slot number.
    current: Option<([u8; 32], u64)>,
    /// The secret of the slot just before, while it is still accepted.
    previous: Option<([u8; 32], u64)>,
}

impl std::fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieJar")
            .field("slot", &self.current.as_ref().map(|c| c.1))
            .finish_non_exhaustive()
    }
}

/// The bytes a cookie is bound to: the peer's IP address and port.
fn address_bytes(addr: &std::net::SocketAddr) -> Vec<u8> {
    let mut out = match addr.ip() {
        std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
        std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    out.extend_from_slice(&addr.port().to_be_bytes());
    out
}

fn cookie_mac(secret: &[u8; 32], addr: &std::net::SocketAddr, slot: u64) -> [u8; COOKIE_LEN] {
    use hmac::Mac as _;
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let Ok(mut m) = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(secret) else {
        unreachable!("HMAC accepts keys of any length")
    };
    m.update(b"atbus cookie v1");
    m.update(&address_bytes(addr));
    m.update(&slot.to_be_bytes());
    let tag = m.finalize().into_bytes();
    let mut out = [0u8; COOKIE_LEN];
    out.copy_from_slice(&tag[..COOKIE_LEN]);
    out
}

impl CookieJar {
    /// Moves to the slot of `now`: a fresh secret for a new slot, the secret of the slot just
    /// before kept as the previous one (still accepted), anything older dropped. A cookie thus
    /// verifies in its own slot and the next: two to four minutes.
    pub fn rotate(&mut self, now: Instant, rng: &mut dyn rand_core::CryptoRng) {
        let origin = *self.origin.get_or_insert(now);
        let slot = now.saturating_duration_since(origin).as_secs() / COOKIE_ROTATION.as_secs();
        if self.current.is_some_and(|(_, s)| s == slot) {
            return;
        }
        self.previous = self.current.filter(|(_, s)| s + 1 == slot);
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        self.current = Some((secret, slot));
    }

    /// The cookie for `addr` under the current secret.
    pub fn make(&self, addr: &std::net::SocketAddr) -> Option<[u8; COOKIE_LEN]> {
        let (secret, slot) = self.current.as_ref()?;
        Some(cookie_mac(secret, addr, *slot))
    }

    /// Whether `cookie` was made for `addr` under the current or the previous secret
    /// (constant-time comparisons).
    pub fn verify(&self, addr: &std::net::SocketAddr, cookie: &[u8]) -> bool {
        use subtle::ConstantTimeEq as _;
        if cookie.len() != COOKIE_LEN {
            return false;
        }
        let mut ok = subtle::Choice::from(0);
        if let Some((secret, slot)) = &self.current {
            ok |= cookie_mac(secret, addr, *slot).ct_eq(cookie);
        }
        if let Some((secret, slot)) = &self.previous {
            ok |= cookie_mac(secret, addr, *slot).ct_eq(cookie);
        }
        ok.into()
    }
}

impl Node {
    /// Half-open handshakes other than `link`'s.
    fn handshakes_in_flight_besides(&self, link: LinkId) -> usize {
        self.links
            .iter()
            .filter(|(id, l)| **id != link && l.state.in_handshake())
            .count()
    }

    /// Server, first thing on a hello of inbound `link`: under load (at least
    /// [`crate::NodeLimits::cookie_threshold`] other handshakes in flight), a datagram link
    /// from a known network address must echo a valid cookie. Without one the node answers
    /// with a `handshake_retry` carrying a fresh cookie and forgets the link (no `link_close`,
    /// no handshake state), and returns false. True: go on with the hello.
    pub(crate) fn cookie_gate(&mut self, now: Instant, link: LinkId, cookie: &[u8]) -> bool {
        let Some(l) = self.links.get(&link) else {
            return false;
        };
        let Some(addr) = l.peer_addr else {
            // Byte streams are validated by their transport; Unix and loopback peers cannot
            // be spoofed from the network.
            return true;
        };
        if l.kind != crate::types::LinkKind::Datagram {
            return true;
        }
        if self.handshakes_in_flight_besides(link) < self.config.limits.cookie_threshold {
            return true;
        }
        self.cookies.rotate(now, &mut *self.rng);
        if self.cookies.verify(&addr, cookie) {
            self.cookie_stats.1 += 1;
            return true;
        }
        let Some(fresh) = self.cookies.make(&addr) else {
            return false;
        };
        self.cookie_stats.0 += 1;
        let package = self.handshake_package(atbus_proto::handshake_data::Step::Retry(
            atbus_proto::HandshakeRetry {
                cookie: Bytes::copy_from_slice(&fresh),
            },
        ));
        self.queue_control(link, package);
        let reason = LinkCloseReason::local(
            AtbusCloseReason::LimitExceeded,
            "cookie-retry: under load, the hello must echo a valid cookie",
        );
        self.close_link(now, link, reason, false, true);
        false
    }

    /// Retries sent and hellos admitted with a valid cookie since the node started.
    pub fn cookie_stats(&self) -> (u64, u64) {
        self.cookie_stats
    }
}

// ----- reservation of assigned names -----

/// Assigned names the node asked the application to reserve (in the discovery backend, with
/// put-if-absent) and those it holds; `docs/security.md` §9.3. Bounded by the links and peers
/// of the node: one name per anonymous handshake or session.
#[derive(Debug, Default)]
pub(crate) struct NameReservations {
    /// Asked for, not answered yet: name → (link, attempt number, from 1).
    pending: BTreeMap<String, (LinkId, u32)>,
    /// Reserved, and used by a handshake or a peer session.
    held: BTreeSet<String>,
    /// Confirms that arrived before their link's name was reserved.
    confirms: BTreeMap<LinkId, HandshakeConfirm>,
}

impl Node {
    /// Whether assigned names wait for a reservation.
    fn reserving(&self) -> bool {
        self.config
            .anonymous
            .as_ref()
            .is_some_and(|p| p.reserve_names)
    }

    /// The name assigned on `link` while its handshake runs.
    fn assigned_on(&self, link: LinkId) -> Option<&str> {
        match &self.links.get(&link)?.state {
            crate::link::LinkState::ReplySent {
                credential: Credential::Anonymous(name),
                ..
            } => Some(name),
            _ => None,
        }
    }

    /// Server, after the reply to an anonymous hello: asks the application to reserve the name
    /// assigned on `link` ([`NodeEvent::ReserveName`]).
    pub(crate) fn reserve_assigned_name(&mut self, link: LinkId) {
        if !self.reserving() {
            return;
        }
        let Some(name) = self.assigned_on(link).map(str::to_owned) else {
            return;
        };
        self.reservations.pending.insert(name.clone(), (link, 1));
        self.events.push_back(NodeEvent::ReserveName { link, name });
    }

    /// Server: keeps the confirm of `link` until its assigned name is reserved; true if it
    /// must wait.
    pub(crate) fn confirm_waits_for_name(
        &mut self,
        link: LinkId,
        confirm: &HandshakeConfirm,
    ) -> bool {
        if !self.reserving() {
            return false;
        }
        let Some(name) = self.assigned_on(link) else {
            return false;
        };
        if self.reservations.held.contains(name) {
            return false;
        }
        self.reservations.confirms.insert(link, confirm.clone());
        true
    }

    /// Forgets `name`'s reservation (its handshake failed or its peer's session was dropped);
    /// a held name is given back with [`NodeEvent::ReleaseName`]. An answer still to come for
    /// it is released when it arrives.
    pub(crate) fn release_name(&mut self, name: &str) {
        if let Some((link, _)) = self.reservations.pending.remove(name) {
            self.reservations.confirms.remove(&link);
        }
        if self.reservations.held.remove(name) {
            self.events.push_back(NodeEvent::ReleaseName {
                name: name.to_owned(),
            });
        }
    }

    /// The link closed during its handshake: the name assigned on it, if any, is released.
    pub(crate) fn release_link_name(&mut self, state: &crate::link::LinkState) {
        if let crate::link::LinkState::ReplySent {
            credential: Credential::Anonymous(name),
            ..
        } = state
        {
            let name = name.clone();
            self.release_name(&name);
        }
    }

    /// The application's answer to [`NodeEvent::ReserveName`] for `name`: `reserved` when the
    /// name is now this node's (put-if-absent succeeded), false when it exists elsewhere or
    /// the backend failed. A reserved name lets the peer's handshake finish; on a conflict
    /// the node assigns another name and asks again, up to
    /// [`crate::AnonymousPolicy::max_name_attempts`] names, then refuses the peer with
    /// `LIMIT_EXCEEDED` (`name-unavailable`). An answer for a name no handshake waits for any
    /// more (it failed meanwhile) is given back with [`NodeEvent::ReleaseName`] if reserved.
    pub fn handle_name_reserved(&mut self, now: Instant, name: &str, reserved: bool) {
        self.last_now = self.last_now.max(now);
        let Some((link, attempt)) = self.reservations.pending.remove(name) else {
            if reserved && !self.reservations.held.contains(name) {
                self.events.push_back(NodeEvent::ReleaseName {
                    name: name.to_owned(),
                });
            }
            return;
        };
        if reserved {
            self.reservations.held.insert(name.to_owned());
            if let Some(confirm) = self.reservations.confirms.remove(&link) {
                if let Err(reason) = self.server_on_confirm(now, link, confirm) {
                    self.reject_link(now, link, reason, true);
                }
            }
            return;
        }
        let max = self
            .config
            .anonymous
            .as_ref()
            .map_or(1, |p| p.max_name_attempts.max(1));
        if attempt >= max {
            self.reservations.confirms.remove(&link);
            let reason = LinkCloseReason::local(
                AtbusCloseReason::LimitExceeded,
                format!("name-unavailable: {attempt} assigned names were taken elsewhere"),
            );
            self.reject_link(now, link, reason, true);
            return;
        }
        let fresh = self.assign_anonymous_name();
        let Some(crate::link::LinkState::ReplySent {
            credential: Credential::Anonymous(current),
            ..
        }) = self.links.get_mut(&link).map(|l| &mut l.state)
        else {
            return;
        };
        *current = fresh.clone();
        self.reservations
            .pending
            .insert(fresh.clone(), (link, attempt + 1));
        self.events
            .push_back(NodeEvent::ReserveName { link, name: fresh });
    }

    /// Names reserved and held, and reservations asked for and not answered yet.
    pub fn name_reservations(&self) -> (usize, usize) {
        (
            self.reservations.held.len(),
            self.reservations.pending.len(),
        )
    }
}
