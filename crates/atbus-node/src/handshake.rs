//! The link handshake: hello, hello_reply, confirm, accept (see `docs/protocol.md`).

use std::time::Instant;

use atbus_proto::{
    AtbusCloseReason, HandshakeAccept, HandshakeConfirm, HandshakeData, HandshakeHello,
    handshake_data::Step,
};
use bytes::Bytes;
use subtle::ConstantTimeEq;

use crate::access::{Credential, LinkGuard};
use crate::auth::{self, NONCE_LEN, Role};
use crate::config::{AuthMode, SignedToken, check_labels, check_name, check_namespace};
use crate::link::{LinkState, Retransmit};
use crate::node::Node;
use crate::types::{LinkCloseReason, LinkId, LinkKind, NodeEvent};

type Reject = LinkCloseReason;

/// Longest pause between two retransmissions of a handshake step.
pub const MAX_RETRANSMIT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

fn reject(code: AtbusCloseReason, message: impl Into<String>) -> Reject {
    LinkCloseReason::local(code, message)
}

impl Node {
    /// Our hello for a new outbound link.
    pub(crate) fn our_hello(&mut self, max_package_size: usize) -> HandshakeHello {
        let mut nonce = vec![0u8; NONCE_LEN];
        self.rng.fill_bytes(&mut nonce);
        HandshakeHello {
            protocol_version: self.config.protocol_version,
            node_name: self.config.name.clone(),
            namespace_name: self.config.namespace.clone(),
            incarnation_id: self.incarnation,
            nonce: nonce.into(),
            capabilities: self.config.capabilities,
            key_id: self
                .client_credential()
                .map(|(key_id, _, _)| key_id.to_owned())
                .unwrap_or_default(),
            unix_time_ms: self.unix_ms,
            auth_proof: Bytes::new(),
            max_package_size: max_package_size.min(i32::MAX as usize) as i32,
            labels: self.config.labels.clone(),
            assigned_token: Bytes::new(),
            stream_receive_window: i64::try_from(self.config.session.stream_receive_window)
                .unwrap_or(i64::MAX),
            session_receive_window: i64::try_from(self.config.session.session_receive_window)
                .unwrap_or(i64::MAX),
            early_data: Vec::new(),
            encryption_mode: self.config.content.encryption.wire(),
            cipher_suites: self.config.content.wire_suites(),
            compression: if self.config.content.compression {
                crate::content::COMPRESSION_LZ4
            } else {
                0
            },
        }
    }

    /// Checks the fields of a peer's hello or hello_reply that do not depend on tokens.
    pub(crate) fn check_peer_hello(&self, h: &HandshakeHello) -> Result<(), Reject> {
        use AtbusCloseReason::{LimitExceeded, ProtocolError, UnsupportedVersion};
        if h.protocol_version != self.config.protocol_version {
            return Err(reject(
                UnsupportedVersion,
                format!(
                    "peer speaks protocol version {}, this node speaks {}",
                    h.protocol_version, self.config.protocol_version
                ),
            ));
        }
        // An empty name asks for an assigned one; only an anonymous listener answers it.
        if h.node_name.is_empty() {
            if self.config.anonymous.is_none() {
                return Err(reject(
                    AtbusCloseReason::AuthFailed,
                    "anonymous-refused: the peer sends no name and this node does not accept \
                     anonymous peers",
                ));
            }
        } else {
            check_name(&h.node_name).map_err(|m| reject(ProtocolError, m))?;
        }
        check_namespace(&h.namespace_name).map_err(|m| reject(ProtocolError, m))?;
        if h.labels.len() > self.config.limits.max_labels {
            return Err(reject(
                LimitExceeded,
                format!(
                    "peer announces {} labels, the limit is {}",
                    h.labels.len(),
                    self.config.limits.max_labels
                ),
            ));
        }
        check_labels(&h.labels, usize::MAX).map_err(|m| reject(ProtocolError, m))?;
        self.check_peer_content(h)?;
        if h.incarnation_id < 0
            || h.capabilities < 0
            || h.max_package_size < 0
            || h.stream_receive_window < 0
            || h.session_receive_window < 0
        {
            return Err(reject(ProtocolError, "negative field in hello"));
        }
        if h.nonce.len() != NONCE_LEN {
            return Err(reject(
                ProtocolError,
                format!("nonce is {} bytes, must be {NONCE_LEN}", h.nonce.len()),
            ));
        }
        if h.node_name == self.config.name {
            let what = if h.incarnation_id == self.incarnation {
                "self-connection: the peer is this node"
            } else {
                "the peer claims this node's name"
            };
            return Err(reject(ProtocolError, what));
        }
        Ok(())
    }

    /// Handles one handshake frame on `id`.
    pub(crate) fn on_handshake(&mut self, now: Instant, id: LinkId, data: HandshakeData) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        let datagram = link.kind == LinkKind::Datagram;
        let step = data.step;
        let cookie = data.cookie;
        let result = match (&link.state, step) {
            (LinkState::AwaitHello, Some(Step::Hello(hello))) => {
                // The cookie is checked before any other work; without a valid one under load
                // the node answers with a retry and forgets the link.
                if self.cookie_gate(now, id, &cookie) {
                    self.server_on_hello(now, id, hello)
                } else {
                    Ok(())
                }
            }
            (LinkState::HelloSent { .. }, Some(Step::Retry(retry))) => {
                self.client_on_retry(id, retry.cookie)
            }
            (
                LinkState::ReplySent {
                    client, package, ..
                },
                Some(Step::Hello(hello)),
            ) => {
                let mut again = hello;
                again.early_data = Vec::new();
                if **client == again {
                    // The reply was lost: the same reply goes out again.
                    let package = package.clone();
                    self.queue_control(id, package);
                    Ok(())
                } else {
                    Err(reject(
                        AtbusCloseReason::ProtocolError,
                        "a second, different hello",
                    ))
                }
            }
            (LinkState::HelloSent { .. }, Some(Step::HelloReply(reply))) => {
                self.client_on_reply(now, id, reply)
            }
            // A retransmitted reply while TLS runs: the TLS records carry the handshake on.
            (LinkState::TlsClient { .. }, Some(Step::HelloReply(_))) => Ok(()),
            (LinkState::ConfirmSent { package, .. }, Some(Step::HelloReply(_))) => {
                if datagram {
                    let package = package.clone();
                    self.queue_control(id, package);
                }
                Ok(())
            }
            (LinkState::ReplySent { .. }, Some(Step::Confirm(confirm))) => {
                self.server_on_confirm(now, id, confirm)
            }
            (
                LinkState::Established {
                    accept: Some((package, proof)),
                    ..
                },
                Some(Step::Confirm(confirm)),
            ) => {
                // The accept was lost: answer the same confirm with the same accept.
                if bool::from(proof.as_ref().ct_eq(confirm.auth_proof.as_ref())) {
                    let package = package.clone();
                    self.queue_control(id, package);
                }
                Ok(())
            }
            (
                LinkState::Routed {
                    accept: Some((package, proof)),
                    ..
                }
                | LinkState::Relay {
                    accept: Some((package, proof)),
                    ..
                },
                Some(Step::Confirm(confirm)),
            ) => {
                // The same on a router-mode link (a relay's) and on a link from a relay.
                if bool::from(proof.as_ref().ct_eq(confirm.auth_proof.as_ref())) {
                    let package = package.clone();
                    self.queue_control(id, package);
                }
                Ok(())
            }
            (LinkState::ConfirmSent { .. }, Some(Step::Accept(accept))) => {
                self.client_on_accept(now, id, accept)
            }
            // Retransmissions crossing the final step (relay and router-mode links included).
            (
                LinkState::Established { .. } | LinkState::Relay { .. } | LinkState::Routed { .. },
                Some(Step::Hello(_) | Step::Accept(_) | Step::HelloReply(_)),
            )
            | (LinkState::Closed, _) => Ok(()),
            // A retry after the reply: late or duplicated, ignored.
            (_, Some(Step::Retry(_))) => Ok(()),
            (_, _) => Err(reject(
                AtbusCloseReason::ProtocolError,
                "unexpected handshake step",
            )),
        };
        if let Err(reason) = result {
            self.reject_link(now, id, reason, true);
        }
    }

    /// Client: the server is under load and asks for the same hello again with `cookie`.
    fn client_on_retry(&mut self, id: LinkId, cookie: Bytes) -> Result<(), Reject> {
        if cookie.is_empty() || cookie.len() > crate::access::MAX_COOKIE_LEN {
            return Err(reject(
                AtbusCloseReason::ProtocolError,
                format!("handshake_retry cookie of {} bytes", cookie.len()),
            ));
        }
        let Some(LinkState::HelloSent { hello, .. }) = self.links.get(&id).map(|l| &l.state) else {
            return Ok(());
        };
        let package =
            self.control_package(atbus_proto::frame_message::Body::Handshake(HandshakeData {
                step: Some(Step::Hello((**hello).clone())),
                cookie,
            }));
        self.queue_control(id, package.clone());
        if let Some(LinkState::HelloSent { package: p, .. }) =
            self.links.get_mut(&id).map(|l| &mut l.state)
        {
            // Retransmissions carry the cookie too.
            *p = package;
        }
        Ok(())
    }

    fn server_on_hello(
        &mut self,
        now: Instant,
        id: LinkId,
        hello: HandshakeHello,
    ) -> Result<(), Reject> {
        self.check_peer_hello(&hello)?;
        let (credential, guard) = self.server_credential(&hello)?;
        let secret = credential.secret(self).map(<[u8]>::to_vec);
        let early_data_status =
            self.admit_early_data(&hello, secret.as_deref(), guard.as_deref())?;
        let mtu = self.links.get(&id).map_or(0, |l| l.mtu);
        let mut reply = self.our_hello(mtu);
        reply.key_id = hello.key_id.clone();
        // The client's hello went into `th` whole, early data aside (its proof covers it).
        let mut client = hello;
        client.early_data = Vec::new();
        let th = auth::transcript_hash(&client, &reply);
        if let Some(secret) = &secret {
            reply.auth_proof = auth::proof(secret, Role::Server, &th).to_vec().into();
        }
        // Encryption mode tls: the server side waits for the client's first record; nothing
        // of TLS runs before the limits and the cookie above.
        let tls = if self.tls_applies(&client) {
            Some(self.start_tls_server(now, id, &client)?)
        } else {
            None
        };
        let package = self.handshake_package(Step::HelloReply(reply));
        self.queue_control(id, package.clone());
        if let Some(link) = self.links.get_mut(&id) {
            link.state = LinkState::ReplySent {
                client: Box::new(client),
                package,
                th,
                credential,
                early_data_status,
                tls,
            };
            link.guard = guard;
        }
        self.reserve_assigned_name(id);
        Ok(())
    }

    /// What the client of a hello proves: a signed token, a pre-shared token, nothing (open
    /// link) or nothing with an assigned name (anonymous); and the guard of its link.
    fn server_credential(
        &mut self,
        hello: &HandshakeHello,
    ) -> Result<(Credential, Option<Box<LinkGuard>>), Reject> {
        if hello.node_name.is_empty() {
            if !hello.key_id.is_empty() || !hello.assigned_token.is_empty() {
                return Err(reject(
                    AtbusCloseReason::ProtocolError,
                    "a hello with credentials must name its sender",
                ));
            }
            let Some(policy) = &self.config.anonymous else {
                return Err(reject(
                    AtbusCloseReason::AuthFailed,
                    "anonymous-refused: this node does not accept anonymous peers",
                ));
            };
            let guard = LinkGuard::anonymous(policy.streams.clone(), policy.max_packets_per_sec);
            self.check_anonymous_labels(&hello.labels)?;
            let name = self.assign_anonymous_name();
            return Ok((Credential::Anonymous(name), Some(Box::new(guard))));
        }
        if !hello.assigned_token.is_empty() {
            let token = self.verify_signed_token(hello)?;
            let guard = LinkGuard::for_token(&token);
            return Ok((Credential::Signed(Box::new(token)), Some(Box::new(guard))));
        }
        if !hello.key_id.is_empty() {
            if self.config.tokens.is_empty() {
                return Err(reject(
                    AtbusCloseReason::AuthFailed,
                    format!(
                        "peer presents access key {:?} but this node has no access tokens \
                         (a token is configured on one side only)",
                        hello.key_id
                    ),
                ));
            }
            let Some(index) = self
                .config
                .tokens
                .iter()
                .position(|t| t.key_id() == hello.key_id)
            else {
                return Err(reject(
                    AtbusCloseReason::AuthFailed,
                    format!("unknown access key id {:?}", hello.key_id),
                ));
            };
            return Ok((Credential::Shared(index), None));
        }
        if self.config.anonymous.is_some() && self.name_taken(&hello.node_name) {
            return Err(reject(
                AtbusCloseReason::AuthFailed,
                format!(
                    "name-taken: {:?} is configured or in use here; anonymous peers get an \
                     assigned name (send an empty name)",
                    hello.node_name
                ),
            ));
        }
        match self.config.auth_mode() {
            AuthMode::None => Ok((Credential::Open, None)),
            _ if self.config.anonymous.is_some() => Err(reject(
                AtbusCloseReason::AuthFailed,
                "anonymous-name-claimed: peers without credentials get an assigned name here \
                 (send an empty name)",
            )),
            _ => Err(reject(
                AtbusCloseReason::AuthFailed,
                "peer presents no access token but this node requires one",
            )),
        }
    }

    fn client_on_reply(
        &mut self,
        now: Instant,
        id: LinkId,
        reply: HandshakeHello,
    ) -> Result<(), Reject> {
        self.check_peer_hello(&reply)?;
        let Some(LinkState::HelloSent { hello, .. }) = self.links.get(&id).map(|l| &l.state) else {
            return Ok(());
        };
        let mut unsigned = reply.clone();
        unsigned.auth_proof = Bytes::new();
        let mut sent = (**hello).clone();
        sent.auth_proof = Bytes::new();
        sent.early_data = Vec::new();
        let th = auth::transcript_hash(&sent, &unsigned);
        let keys = match self.client_credential() {
            None => {
                if !reply.key_id.is_empty() || !reply.auth_proof.is_empty() {
                    return Err(reject(
                        AtbusCloseReason::AuthFailed,
                        "peer sent an access proof but this node has no access tokens",
                    ));
                }
                None
            }
            Some((key_id, secret, _)) => {
                if reply.key_id != key_id {
                    return Err(reject(
                        AtbusCloseReason::AuthFailed,
                        format!(
                            "peer answered for access key {:?}, this node presented {key_id:?}",
                            reply.key_id
                        ),
                    ));
                }
                if !auth::verify(secret, Role::Server, &th, &reply.auth_proof) {
                    return Err(reject(
                        AtbusCloseReason::AuthFailed,
                        format!(
                            "peer's proof for access key {key_id:?} does not verify (the tokens differ)"
                        ),
                    ));
                }
                Some((
                    auth::proof(secret, Role::Client, &th),
                    auth::session_keys(secret, &th, Role::Client),
                ))
            }
        };
        let (proof, keys) = match keys {
            Some((p, k)) => (Bytes::from(p.to_vec()), Some(k)),
            None => (Bytes::new(), None),
        };
        let confirm = HandshakeConfirm { auth_proof: proof };
        if self.tls_applies(&reply) {
            // Encryption mode tls: the confirm waits for the TLS handshake, whose keys replace
            // any the tokens made.
            let tls = self.start_tls_client(now, id, &reply)?;
            if let Some(link) = self.links.get_mut(&id) {
                link.state = LinkState::TlsClient {
                    server: Box::new(reply),
                    confirm,
                    th,
                    tls,
                };
            }
            self.tls_progress(now, id);
            return Ok(());
        }
        let package = self.handshake_package(Step::Confirm(confirm));
        self.queue_control(id, package.clone());
        let retransmit = self.first_retransmit(now, id);
        if let Some(link) = self.links.get_mut(&id) {
            link.state = LinkState::ConfirmSent {
                server: Box::new(reply),
                package,
                retransmit,
                keys,
                tls: None,
            };
        }
        Ok(())
    }

    pub(crate) fn server_on_confirm(
        &mut self,
        now: Instant,
        id: LinkId,
        confirm: HandshakeConfirm,
    ) -> Result<(), Reject> {
        if self.confirm_waits_for_name(id, &confirm) {
            return Ok(());
        }
        let Some(LinkState::ReplySent {
            client,
            th,
            credential,
            early_data_status,
            ..
        }) = self.links.get(&id).map(|l| &l.state)
        else {
            return Ok(());
        };
        let mut client = (**client).clone();
        let (th, credential, early_data_status) = (*th, credential.clone(), *early_data_status);
        // Encryption mode tls: accept only once TLS completed (the client's identity checked);
        // its exported keys are the session's.
        let tls_keys = if self.runs_tls(id) {
            match self.server_tls_keys(id, &th)? {
                Some(keys) => Some(keys),
                None => return Ok(()),
            }
        } else {
            None
        };
        let keys = match credential.secret(self) {
            Some(secret) => {
                if !auth::verify(secret, Role::Client, &th, &confirm.auth_proof) {
                    return Err(reject(
                        AtbusCloseReason::AuthFailed,
                        format!(
                            "peer's proof for access key {:?} does not verify (the tokens differ)",
                            client.key_id
                        ),
                    ));
                }
                Some(auth::session_keys(secret, &th, Role::Server))
            }
            None => {
                if !confirm.auth_proof.is_empty() {
                    return Err(reject(
                        AtbusCloseReason::AuthFailed,
                        "peer sent an access proof on an open link",
                    ));
                }
                None
            }
        };
        let keys = if tls_keys.is_some() { tls_keys } else { keys };
        if let Some(link) = self.links.get_mut(&id) {
            link.validated = true;
        }
        let mut accept = HandshakeAccept {
            capabilities: self.config.capabilities & client.capabilities,
            early_data_status,
            ..HandshakeAccept::default()
        };
        if let Credential::Anonymous(name) = &credential {
            client.node_name = name.clone();
            accept.assigned_name = name.clone();
            if let Some(issued) = self.issue_anonymous_token(name) {
                accept.assigned_token = issued.bytes.into();
                accept.assigned_holder_secret = issued.holder_secret.0.to_vec().into();
            }
        }
        let package = self.handshake_package(Step::Accept(accept));
        // The accept goes out before anything the session sends on the new path.
        self.queue_control(id, package.clone());
        self.establish(now, id, &client, keys)?;
        if let Some(link) = self.links.get_mut(&id) {
            if let LinkState::Established { accept, .. }
            | LinkState::Routed { accept, .. }
            | LinkState::Relay { accept, .. } = &mut link.state
            {
                *accept = Some((package, confirm.auth_proof));
            }
        }
        Ok(())
    }

    fn client_on_accept(
        &mut self,
        now: Instant,
        id: LinkId,
        accept: HandshakeAccept,
    ) -> Result<(), Reject> {
        if !accept.assigned_name.is_empty() {
            self.take_assigned_name(&accept)?;
        }
        let Some(link) = self.links.get_mut(&id) else {
            return Ok(());
        };
        let LinkState::ConfirmSent { server, keys, .. } =
            std::mem::replace(&mut link.state, LinkState::AwaitHello)
        else {
            return Ok(());
        };
        self.establish(now, id, &server, keys)?;
        self.client_early_outcome(id, &server.node_name, accept.early_data_status);
        Ok(())
    }

    /// Client: adopts the name (and token) the server assigned, if this node asked for one.
    fn take_assigned_name(&mut self, accept: &HandshakeAccept) -> Result<(), Reject> {
        if !self.config.request_assigned_name {
            return Err(reject(
                AtbusCloseReason::ProtocolError,
                "the server assigned a name this node did not ask for",
            ));
        }
        check_name(&accept.assigned_name)
            .map_err(|m| reject(AtbusCloseReason::ProtocolError, m))?;
        let name = accept.assigned_name.clone();
        self.config.name = name.clone();
        self.config.session.local_name = name.clone();
        self.config.request_assigned_name = false;
        let token = <[u8; 32]>::try_from(accept.assigned_holder_secret.as_ref())
            .ok()
            .and_then(|secret| SignedToken::new(accept.assigned_token.to_vec(), secret).ok());
        let text = token
            .as_ref()
            .map(|t| atbus_auth::token::to_text(t.bytes()));
        if token.is_some() {
            self.config.signed_token = token;
        }
        self.events
            .push_back(NodeEvent::NameAssigned { name, token: text });
        Ok(())
    }

    /// Encodes a handshake step as a whole package.
    pub(crate) fn handshake_package(&self, step: Step) -> Vec<u8> {
        self.control_package(atbus_proto::frame_message::Body::Handshake(HandshakeData {
            step: Some(step),
            cookie: Bytes::new(),
        }))
    }

    /// The first retransmission timer of a handshake step, on datagram links only.
    pub(crate) fn first_retransmit(&self, now: Instant, id: LinkId) -> Option<Retransmit> {
        let link = self.links.get(&id)?;
        (link.kind == LinkKind::Datagram).then(|| Retransmit {
            at: now + self.config.handshake_retransmit,
            interval: self.config.handshake_retransmit,
        })
    }

    /// Runs handshake timers of one link: retransmission and the overall deadline.
    pub(crate) fn link_timeout(&mut self, now: Instant, id: LinkId) {
        if self.guard_timeout(now, id) {
            return;
        }
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        if link.keepalive.is_some() {
            self.link_keepalive(now, id);
            return;
        }
        if link.state.in_handshake() && now >= link.handshake_deadline {
            let reason = reject(
                AtbusCloseReason::IdleTimeout,
                format!(
                    "handshake not finished within {:?}",
                    self.config.handshake_timeout
                ),
            );
            self.reject_link(now, id, reason, true);
            return;
        }
        self.tls_timeout(now, id);
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        let resend = match &mut link.state {
            LinkState::HelloSent {
                package,
                retransmit: Some(r),
                ..
            }
            | LinkState::ConfirmSent {
                package,
                retransmit: Some(r),
                ..
            } if r.at <= now => {
                r.interval = (r.interval * 2).min(MAX_RETRANSMIT_INTERVAL);
                r.at = now + r.interval;
                Some(package.clone())
            }
            _ => None,
        };
        if let Some(package) = resend {
            self.queue_control(id, package);
        }
    }
}
