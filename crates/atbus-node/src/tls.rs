//! TLS 1.3 in the link handshake (`docs/security.md` §8.7, `docs/protocol.md` "TLS handshake
//! records"): with encryption mode `tls` the session keys are exported by a TLS handshake that
//! runs between `hello_reply` and `confirm`.
//!
//! - The client starts the driver when the server's `hello_reply` passed every check, with the
//!   server's claimed identity as the one its certificate must carry; the server starts its side
//!   when it answers the hello (after the handshake limits and the cookie), expecting the
//!   identity of the client's hello.
//! - Records travel as `packet_data` with exactly the `TLS_HANDSHAKE` flag, no head, on the link
//!   being set up. On datagram links the client pads its first flight to the link's package
//!   size, so the server's certificate flight fits the 3× amplification budget.
//! - The client sends `confirm` once its side completed; the server answers it with `accept` only
//!   when its side completed and the client's identity checked. Both take the direction secrets
//!   from the TLS exporter with the hash of the two hellos as context.
//! - A failure closes the link with `AUTH_FAILED` and a message starting with the refusal's
//!   name; the alert tells the peer, which closes with `tls-peer-…`.

use std::time::Instant;

use atbus_auth::tls::{
    AtbusIdentity, DATA_HEADER_LEN, KIND_DATA, MAX_RECORD_DATA, TlsError, TlsHandshake,
    TlsTransport, packet_record, record_packet,
};
use atbus_proto::frame_message::Body;
use atbus_proto::{AtbusCloseReason, HandshakeHello, PacketData};

use crate::auth::{Role, SessionKeys, TranscriptHash};
use crate::content::EncryptionMode;
use crate::link::LinkState;
use crate::node::Node;
use crate::types::{LinkCloseReason, LinkId, LinkKind};

/// Bytes of a package around a TLS record on a datagram link: both varints, the frame and
/// packet field tags and lengths, the hash. A record of `mtu - RECORD_PACKAGE_OVERHEAD` bytes
/// and its padding fit one datagram.
const RECORD_PACKAGE_OVERHEAD: usize = 32;

/// The atbus identity a hello claims.
pub(crate) fn claimed_identity(h: &HandshakeHello) -> AtbusIdentity {
    AtbusIdentity::new(h.namespace_name.clone(), h.node_name.clone())
}

/// Session keys of a completed TLS handshake: the exporter's direction secrets with the
/// hellos' hash as context; the transcript hash orders them against other links' keys.
pub(crate) fn tls_session_keys(
    tls: &TlsHandshake,
    th: &TranscriptHash,
    role: Role,
) -> Result<SessionKeys, TlsError> {
    let secrets = tls.export_secrets(th)?;
    Ok(SessionKeys {
        role,
        client_to_server: secrets.client_to_server.0,
        server_to_client: secrets.server_to_client.0,
        transcript_hash: *th,
    })
}

fn tls_refused(error: &TlsError) -> LinkCloseReason {
    LinkCloseReason::local(
        AtbusCloseReason::AuthFailed,
        format!("{}: {error}", error.code()),
    )
}

impl Node {
    /// Whether the link handshake with `h`'s sender runs TLS: this node's mode is `tls` and the
    /// link is a session link (links to and from relays carry other sessions' sealed packets).
    pub(crate) fn tls_applies(&self, h: &HandshakeHello) -> bool {
        let relay_link = h.capabilities & crate::config::capabilities::RELAY != 0
            && self.config.relays.contains(&h.node_name);
        self.config.content.encryption == EncryptionMode::Tls && !self.is_router() && !relay_link
    }

    /// Relayed-only sessions do not run TLS end to end (yet): a node in mode `tls` refuses the
    /// end-to-end handshake through relays with a typed reason rather than sealing with keys
    /// that no certificate vouches for.
    pub(crate) fn refuse_relayed_tls(&self) -> Result<(), LinkCloseReason> {
        if self.config.content.encryption == EncryptionMode::Tls {
            return Err(LinkCloseReason::local(
                AtbusCloseReason::EncryptionMismatch,
                "tls-relayed-unsupported: encryption tls needs a direct link; sessions through \
                 relays only are refused",
            ));
        }
        Ok(())
    }

    /// How TLS records travel on `id`.
    fn tls_transport(&self, now: Instant, id: LinkId) -> TlsTransport {
        let Some(link) = self.links.get(&id) else {
            return TlsTransport::reliable();
        };
        let mut transport = if link.kind == LinkKind::Datagram {
            let mut t = TlsTransport::datagram();
            let room = link
                .mtu
                .saturating_sub(RECORD_PACKAGE_OVERHEAD + DATA_HEADER_LEN);
            t.max_record_data = room.clamp(64, MAX_RECORD_DATA);
            t
        } else {
            TlsTransport::reliable()
        };
        transport.deadline = link.handshake_deadline.saturating_duration_since(now);
        transport
    }

    /// Client: starts the TLS handshake with the server of `reply`.
    pub(crate) fn start_tls_client(
        &mut self,
        now: Instant,
        id: LinkId,
        reply: &HandshakeHello,
    ) -> Result<Box<TlsHandshake>, LinkCloseReason> {
        let Some(config) = self.config.tls.as_ref() else {
            return Err(tls_refused(&TlsError::Tls(
                "no TLS configuration on this node".into(),
            )));
        };
        let transport = self.tls_transport(now, id);
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let mut tls =
            TlsHandshake::client(config, transport, now, seed).map_err(|e| tls_refused(&e))?;
        tls.expect_peer(claimed_identity(reply));
        Ok(Box::new(tls))
    }

    /// Server: starts the TLS handshake with the client of `hello` (its first record comes
    /// next). A node without a certificate cannot serve TLS and refuses the link.
    pub(crate) fn start_tls_server(
        &mut self,
        now: Instant,
        id: LinkId,
        hello: &HandshakeHello,
    ) -> Result<Box<TlsHandshake>, LinkCloseReason> {
        let Some(config) = self.config.tls.as_ref() else {
            return Err(tls_refused(&TlsError::NoServerCertificate));
        };
        let transport = self.tls_transport(now, id);
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let mut tls =
            TlsHandshake::server(config, transport, now, seed).map_err(|e| tls_refused(&e))?;
        if !hello.node_name.is_empty() {
            tls.expect_peer(claimed_identity(hello));
        }
        Ok(Box::new(tls))
    }

    /// The TLS handshake running on `id`, if any.
    fn link_tls(&mut self, id: LinkId) -> Option<&mut TlsHandshake> {
        match &mut self.links.get_mut(&id)?.state {
            LinkState::TlsClient { tls, .. } => Some(tls),
            LinkState::ConfirmSent { tls: Some(tls), .. }
            | LinkState::ReplySent { tls: Some(tls), .. } => Some(tls),
            _ => None,
        }
    }

    /// A `TLS_HANDSHAKE` packet arrived on `id`.
    pub(crate) fn on_tls_packet(&mut self, now: Instant, id: LinkId, packet: &PacketData) {
        let record = match packet_record(packet) {
            Ok(record) => record,
            Err(e) => {
                let reason = LinkCloseReason::local(AtbusCloseReason::ProtocolError, e.to_string());
                self.reject_link(now, id, reason, true);
                return;
            }
        };
        let unix_ms = self.unix_ms;
        match self.link_tls(id) {
            Some(tls) => {
                // A failure is kept by the driver and handled below, with its alert.
                let _ = tls.handle_record(now, unix_ms, record);
            }
            None => {
                let running = self.links.get(&id).map(|l| &l.state);
                let late = matches!(
                    running,
                    None | Some(
                        LinkState::Established { .. }
                            | LinkState::Relay { .. }
                            | LinkState::Routed { .. }
                            | LinkState::ConfirmSent { .. }
                            | LinkState::Closed
                    )
                );
                if !late {
                    let reason = LinkCloseReason::local(
                        AtbusCloseReason::ProtocolError,
                        "TLS handshake record on a link that runs no TLS handshake",
                    );
                    self.reject_link(now, id, reason, true);
                }
                // Retransmissions crossing the end of the handshake are ignored.
                return;
            }
        }
        self.tls_progress(now, id);
    }

    /// Runs the TLS timers of `id` (retransmission on datagram links, the deadline).
    pub(crate) fn tls_timeout(&mut self, now: Instant, id: LinkId) {
        let Some(tls) = self.link_tls(id) else {
            return;
        };
        if tls.poll_timeout().is_some_and(|at| at <= now) {
            tls.handle_timeout(now);
            self.tls_progress(now, id);
        }
    }

    /// Sends what the TLS handshake of `id` has to send, then acts on its state: a failure
    /// closes the link (after the alert), a completed client side sends `confirm`.
    pub(crate) fn tls_progress(&mut self, now: Instant, id: LinkId) {
        let Some(link) = self.links.get(&id) else {
            return;
        };
        let pad_first_flight = link.kind == LinkKind::Datagram;
        let mtu = link.mtu;
        let mut packages = Vec::new();
        let mut buf = Vec::new();
        let (error, client_done) = {
            let Some(tls) = self.link_tls(id) else {
                return;
            };
            let client = tls.side() == atbus_auth::Side::Client;
            while tls.poll_transmit(now, &mut buf) {
                // The client's initial-level records (its ClientHello) are padded to the
                // package size: what the server may send back before the client is validated
                // grows with them (RFC 9000 §8.1, as QUIC pads Initial packets).
                let initial = buf.first() == Some(&KIND_DATA) && buf.get(1) == Some(&0);
                let pad_to = if client && pad_first_flight && initial {
                    mtu.saturating_sub(RECORD_PACKAGE_OVERHEAD)
                } else {
                    0
                };
                packages.push(record_packet(std::mem::take(&mut buf), pad_to));
            }
            (tls.error().cloned(), client && tls.is_complete())
        };
        for packet in packages {
            let package = self.control_package(Body::Packet(packet));
            self.queue_control(id, package);
        }
        if let Some(error) = error {
            tracing::info!(link = id.0, %error, "TLS handshake failed");
            self.reject_link(now, id, tls_refused(&error), true);
            return;
        }
        if client_done {
            if let Err(reason) = self.client_tls_complete(now, id) {
                self.reject_link(now, id, reason, true);
            }
        }
    }

    /// Client: TLS completed and the server's certificate names the server's claimed identity;
    /// the confirm goes out with the exported keys kept for `accept`.
    fn client_tls_complete(&mut self, now: Instant, id: LinkId) -> Result<(), LinkCloseReason> {
        let retransmit = self.first_retransmit(now, id);
        let Some(link) = self.links.get_mut(&id) else {
            return Ok(());
        };
        if !matches!(link.state, LinkState::TlsClient { .. }) {
            return Ok(());
        }
        let LinkState::TlsClient {
            server,
            confirm,
            th,
            tls,
        } = std::mem::replace(&mut link.state, LinkState::AwaitHello)
        else {
            return Ok(());
        };
        let keys = tls_session_keys(&tls, &th, Role::Client).map_err(|e| tls_refused(&e))?;
        let package = self.handshake_package(atbus_proto::handshake_data::Step::Confirm(confirm));
        self.queue_control(id, package.clone());
        if let Some(link) = self.links.get_mut(&id) {
            link.state = LinkState::ConfirmSent {
                server,
                package,
                retransmit,
                keys: Some(keys),
                // Kept until `accept`: a lost Finished is resent by its timer.
                tls: Some(tls),
            };
        }
        Ok(())
    }

    /// Server, on `confirm`: the keys exported by TLS once complete. `Ok(None)`: the TLS
    /// handshake is still running on a datagram link (the confirm overtook the client's last
    /// records), so the confirm is ignored and comes again.
    pub(crate) fn server_tls_keys(
        &self,
        id: LinkId,
        th: &TranscriptHash,
    ) -> Result<Option<SessionKeys>, LinkCloseReason> {
        let Some(link) = self.links.get(&id) else {
            return Ok(None);
        };
        let LinkState::ReplySent { tls: Some(tls), .. } = &link.state else {
            return Ok(None);
        };
        if !tls.is_complete() {
            if link.kind == LinkKind::Datagram {
                return Ok(None);
            }
            return Err(LinkCloseReason::local(
                AtbusCloseReason::ProtocolError,
                "confirm before the TLS handshake completed",
            ));
        }
        tls_session_keys(tls, th, Role::Server)
            .map(Some)
            .map_err(|e| tls_refused(&e))
    }

    /// Whether the link `id` runs a TLS handshake (server side: its `confirm` needs it done).
    pub(crate) fn runs_tls(&self, id: LinkId) -> bool {
        matches!(
            self.links.get(&id).map(|l| &l.state),
            Some(LinkState::ReplySent { tls: Some(_), .. })
        )
    }
}
