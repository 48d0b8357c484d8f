//! TLS 1.3 inside atbus frames: a sans-IO driver of rustls's QUIC-style API.
//!
//! rustls's `quic` connections take and give raw handshake messages per encryption level
//! (`read_hs` / `write_hs`) and leave record protection and reliability to the transport. This
//! module carries those bytes in [`TlsRecord`]s — the content of `packet_data` with the
//! `TLS_HANDSHAKE` flag (`docs/protocol.md`, "TLS handshake records") — and adds what the
//! transport has to: offsets and acknowledgements per level, retransmission on datagram links,
//! a deadline, size limits, and a typed refusal the peer learns about ([`TlsRefusal`]).
//!
//! When the handshake is complete, [`TlsHandshake::export_secrets`] derives the two 32-byte
//! direction secrets of [`crate::PacketProtection`] with the TLS exporter (RFC 8446 §7.5) under
//! [`EXPORTER_LABEL_C2S`] / [`EXPORTER_LABEL_S2C`]; rustls's own QUIC packet keys are not used.
//! Certificates identify nodes by the URI SAN `atbus://<namespace>/<name>`; the caller sets the
//! identity the peer claims ([`TlsHandshake::expect_peer`]) and the handshake refuses a
//! certificate without it.
//!
//! Time is an argument: `now` drives timers, `unix_ms` is the wall clock rustls checks
//! certificate validity periods against (through [`TlsClock`]). So is randomness: every random
//! byte of a handshake (randoms, session id, the X25519 key share) comes from the 32-byte seed
//! given to [`TlsHandshake::client`] / [`TlsHandshake::server`], so a simulation replays a
//! handshake exactly (with Ed25519 certificates; ring's ECDSA and RSA signatures draw their own
//! nonces from the system).
//!
//! ```
//! # use atbus_auth::tls::*;
//! # use std::time::Instant;
//! # fn demo(cert: &[u8], key: &[u8], ca: &[u8], now: Instant, unix_ms: i64)
//! #     -> Result<(), Box<dyn std::error::Error>> {
//! // PEM text of the node's certificate chain and key, and of the CA; mutual TLS on the server.
//! let server_config = TlsConfig::from_pem(Some(cert), Some(key), ca, true)?;
//! let client_config = TlsConfig::from_pem(Some(cert), Some(key), ca, false)?;
//! // Seeds from the caller's CSPRNG (fixed in tests, so a run replays exactly).
//! let (client_seed, server_seed) = ([1u8; 32], [2u8; 32]);
//! let mut client =
//!     TlsHandshake::client(&client_config, TlsTransport::reliable(), now, client_seed)?;
//! let mut server =
//!     TlsHandshake::server(&server_config, TlsTransport::reliable(), now, server_seed)?;
//! client.expect_peer(AtbusIdentity::new("game", "lobby-1")); // the name in the server's hello
//! server.expect_peer(AtbusIdentity::new("game", "player-17")); // the name in the client's hello
//! let (client, server) = (&mut client, &mut server);
//! // Each record travels as the content of a `TLS_HANDSHAKE` packet (`record_packet`).
//! let mut buf = Vec::new();
//! loop {
//!     let mut moved = false;
//!     while client.poll_transmit(now, &mut buf) {
//!         server.handle_record(now, unix_ms, &buf)?;
//!         buf.clear();
//!         moved = true;
//!     }
//!     while server.poll_transmit(now, &mut buf) {
//!         client.handle_record(now, unix_ms, &buf)?;
//!         buf.clear();
//!         moved = true;
//!     }
//!     if !moved {
//!         break;
//!     }
//! }
//! assert!(client.is_complete() && server.is_complete());
//! // Both ends derive the same direction secrets for `PacketProtection`.
//! let (c, s) = (client.export_secrets(b"hello hash")?, server.export_secrets(b"hello hash")?);
//! assert_eq!(c, s);
//! # Ok(())
//! # }
//! ```

mod cert;
mod packet;
mod random;
mod record;
#[cfg(any(test, feature = "test-certs"))]
pub mod test_certs;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::quic::{self, KeyChange};
use rustls::{AlertDescription, CertificateError};
use thiserror::Error;

pub use cert::{
    ALPN, AtbusIdentity, IDENTITY_SCHEME, TlsClock, TlsConfig, TlsConfigError,
    certificate_identities,
};
pub use packet::{MAX_TLS_PACKET_CONTENT, TlsPacketError, packet_record, record_packet};
#[doc(hidden)]
pub use record::fuzz_tls_record;
pub use record::{
    ALERT_LEN, DATA_HEADER_LEN, KIND_ALERT, KIND_DATA, LEVELS, MAX_LEVEL_BYTES, MAX_RECORD_DATA,
    RecordError, TlsRecord, TlsRefusal,
};

use crate::protect::SECRET_LEN;
use crate::{Secret, Side};

/// Exporter label of the client-to-server direction secret.
pub const EXPORTER_LABEL_C2S: &[u8] = b"EXPORTER-atbus-v1 client to server";
/// Exporter label of the server-to-client direction secret.
pub const EXPORTER_LABEL_S2C: &[u8] = b"EXPORTER-atbus-v1 server to client";
/// QUIC transport parameters the rustls QUIC API requires; atbus negotiates its own in the
/// link handshake, so this only names the protocol.
const TRANSPORT_PARAMETERS: &[u8] = b"atbus-v1";
/// Default deadline of a TLS handshake.
pub const DEFAULT_TLS_DEADLINE: Duration = Duration::from_secs(10);
/// First retransmission timeout on datagram links (doubling up to [`MAX_RTO`]).
pub const INITIAL_RTO: Duration = Duration::from_millis(250);
/// Largest retransmission timeout.
pub const MAX_RTO: Duration = Duration::from_secs(1);
/// Default handshake bytes per record on datagram links: fits the 548-byte IPv4 payload of
/// `docs/protocol.md` §5 with room for the frame and packet headers.
pub const DEFAULT_DATAGRAM_RECORD_DATA: usize = 400;

/// Why a TLS handshake failed. [`TlsError::refusal`] gives what the peer is told.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The peer's certificate does not chain to a configured CA.
    #[error("peer certificate is not issued by a trusted CA")]
    UnknownIssuer,
    /// The peer's certificate expired before the handshake's clock.
    #[error("peer certificate has expired")]
    CertificateExpired,
    /// The peer's certificate is not valid yet at the handshake's clock.
    #[error("peer certificate is not valid yet")]
    CertificateNotYetValid,
    /// This server requires a client certificate and the client presented none.
    #[error("client presented no certificate and mutual TLS is required")]
    ClientCertificateRequired,
    /// The peer's certificate has no `atbus://<namespace>/<name>` URI SAN.
    #[error("peer certificate has no atbus:// identity")]
    NoAtbusIdentity,
    /// The peer's certificate does not name the identity the peer claims.
    #[error("peer claims {claimed}, its certificate names {certified}")]
    IdentityMismatch {
        /// The identity claimed in the atbus handshake.
        claimed: String,
        /// The identities in the certificate, comma separated.
        certified: String,
    },
    /// The peer's certificate was refused for another reason.
    #[error("peer certificate refused: {0}")]
    BadCertificate(String),
    /// The peer refused the handshake and said why.
    #[error("peer refused the TLS handshake: {0}")]
    PeerRefused(TlsRefusal),
    /// The handshake did not finish before its deadline.
    #[error("TLS handshake did not finish in time")]
    Timeout,
    /// A malformed record or one that breaks the record rules.
    #[error("TLS record refused: {0}")]
    Record(String),
    /// This node has no certificate, so it cannot be a TLS server.
    #[error("no TLS certificate is configured, cannot accept TLS handshakes")]
    NoServerCertificate,
    /// Secrets were asked for before the handshake completed.
    #[error("TLS handshake not complete")]
    NotComplete,
    /// Any other TLS failure (rustls's message).
    #[error("TLS handshake failed: {0}")]
    Tls(String),
}

impl TlsError {
    /// What the peer is told in the alert record.
    pub fn refusal(&self) -> TlsRefusal {
        match self {
            TlsError::UnknownIssuer => TlsRefusal::UnknownIssuer,
            TlsError::CertificateExpired => TlsRefusal::CertificateExpired,
            TlsError::CertificateNotYetValid => TlsRefusal::CertificateNotYetValid,
            TlsError::ClientCertificateRequired => TlsRefusal::ClientCertificateRequired,
            TlsError::NoAtbusIdentity => TlsRefusal::NoAtbusIdentity,
            TlsError::IdentityMismatch { .. } => TlsRefusal::IdentityMismatch,
            TlsError::BadCertificate(_) => TlsRefusal::BadCertificate,
            TlsError::Timeout => TlsRefusal::Timeout,
            TlsError::PeerRefused(_)
            | TlsError::Record(_)
            | TlsError::NoServerCertificate
            | TlsError::NotComplete
            | TlsError::Tls(_) => TlsRefusal::HandshakeFailure,
        }
    }

    /// A short stable name for close messages: the refusal's name on the refusing side,
    /// `tls-peer-` + the peer's refusal on the refused side.
    pub fn code(&self) -> String {
        match self {
            TlsError::PeerRefused(refusal) => {
                format!("tls-peer-{}", refusal.name().trim_start_matches("tls-"))
            }
            other => other.refusal().name().to_owned(),
        }
    }

    fn from_rustls(err: rustls::Error) -> Self {
        use rustls::Error as E;
        match err {
            E::InvalidCertificate(cert) => match cert {
                CertificateError::UnknownIssuer => TlsError::UnknownIssuer,
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    TlsError::CertificateExpired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    TlsError::CertificateNotYetValid
                }
                other => TlsError::BadCertificate(format!("{other:?}")),
            },
            E::NoCertificatesPresented => TlsError::ClientCertificateRequired,
            other => TlsError::Tls(other.to_string()),
        }
    }
}

/// The two direction secrets a completed handshake exports, for
/// [`crate::PacketProtection::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSecrets {
    /// Secret of the client-to-server direction.
    pub client_to_server: Secret,
    /// Secret of the server-to-client direction.
    pub server_to_client: Secret,
}

/// How the handshake's records travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsTransport {
    /// Records may be lost, duplicated or reordered (UDP): acknowledge and retransmit.
    /// On a byte stream (`false`) records arrive once, in order: no timers, no pure acks.
    pub lossy: bool,
    /// Handshake bytes per record (at most [`MAX_RECORD_DATA`]).
    pub max_record_data: usize,
    /// The handshake fails with [`TlsError::Timeout`] this long after it started.
    pub deadline: Duration,
}

impl TlsTransport {
    /// A byte-stream (or in-process) link: reliable, in order, large records.
    pub fn reliable() -> Self {
        Self {
            lossy: false,
            max_record_data: MAX_RECORD_DATA,
            deadline: DEFAULT_TLS_DEADLINE,
        }
    }

    /// A datagram link: lossy, records of [`DEFAULT_DATAGRAM_RECORD_DATA`] bytes.
    pub fn datagram() -> Self {
        Self {
            lossy: true,
            max_record_data: DEFAULT_DATAGRAM_RECORD_DATA,
            deadline: DEFAULT_TLS_DEADLINE,
        }
    }
}

/// Sent handshake bytes of one level.
#[derive(Debug, Default)]
struct SendStream {
    bytes: Vec<u8>,
    /// Bytes the peer acknowledged.
    acked: usize,
    /// Bytes sent at least once since the last retransmission timeout.
    next: usize,
}

#[derive(Debug)]
enum State {
    Handshaking,
    Complete,
    Failed(TlsError),
}

/// One TLS 1.3 handshake of a link, client or server side. See the module documentation for
/// the record format and the drive loop.
///
/// Input: [`handle_record`](Self::handle_record), [`handle_timeout`](Self::handle_timeout).
/// Output: [`poll_transmit`](Self::poll_transmit) until it returns `false`, then
/// [`poll_timeout`](Self::poll_timeout).
#[derive(Debug)]
pub struct TlsHandshake {
    conn: quic::Connection,
    side: Side,
    clock: Arc<TlsClock>,
    transport: TlsTransport,
    state: State,
    send: [SendStream; LEVELS],
    /// Contiguous bytes received (and given to rustls) per level.
    received: [usize; LEVELS],
    /// Bytes received beyond a gap or above the read level, by offset (bounded per level by
    /// [`MAX_LEVEL_BYTES`]).
    pending: [BTreeMap<usize, Vec<u8>>; LEVELS],
    /// Level new handshake bytes are written at (2 = after the handshake: not sent).
    write_level: usize,
    deadline: Instant,
    rto: Duration,
    retransmit_at: Option<Instant>,
    ack_pending: bool,
    alert_pending: bool,
    expected_peer: Option<AtbusIdentity>,
    peer_identity: Option<AtbusIdentity>,
    /// Every random byte rustls draws for this handshake (`random.rs`).
    random: random::HandshakeRandom,
}

impl TlsHandshake {
    /// Starts the client side (the end that opened the link); its first flight is ready for
    /// [`poll_transmit`](Self::poll_transmit) at once. `seed` (from the caller's CSPRNG) is the
    /// source of every random byte of the handshake.
    pub fn client(
        config: &TlsConfig,
        transport: TlsTransport,
        now: Instant,
        seed: [u8; 32],
    ) -> Result<Self, TlsError> {
        let mut random = random::HandshakeRandom::new(seed);
        let conn = random::with_random(&mut random, || {
            quic::ClientConnection::new(
                config.client.clone(),
                quic::Version::V1,
                TlsConfig::server_name(),
                TRANSPORT_PARAMETERS.to_vec(),
            )
        })
        .map_err(TlsError::from_rustls)?;
        let mut hs = Self::new(conn.into(), Side::Client, config, transport, now, random);
        hs.pull_output()?;
        Ok(hs)
    }

    /// Starts the server side (the end that accepted the link). Fails without a certificate.
    /// `seed` (from the caller's CSPRNG) is the source of every random byte of the handshake.
    pub fn server(
        config: &TlsConfig,
        transport: TlsTransport,
        now: Instant,
        seed: [u8; 32],
    ) -> Result<Self, TlsError> {
        let server = config.server.clone().ok_or(TlsError::NoServerCertificate)?;
        let mut random = random::HandshakeRandom::new(seed);
        let conn = random::with_random(&mut random, || {
            quic::ServerConnection::new(server, quic::Version::V1, TRANSPORT_PARAMETERS.to_vec())
        })
        .map_err(TlsError::from_rustls)?;
        Ok(Self::new(
            conn.into(),
            Side::Server,
            config,
            transport,
            now,
            random,
        ))
    }

    fn new(
        conn: quic::Connection,
        side: Side,
        config: &TlsConfig,
        mut transport: TlsTransport,
        now: Instant,
        random: random::HandshakeRandom,
    ) -> Self {
        transport.max_record_data = transport.max_record_data.clamp(1, MAX_RECORD_DATA);
        Self {
            conn,
            side,
            clock: config.clock.clone(),
            transport,
            state: State::Handshaking,
            send: Default::default(),
            received: [0; LEVELS],
            pending: Default::default(),
            write_level: 0,
            deadline: now + transport.deadline,
            rto: INITIAL_RTO,
            retransmit_at: None,
            ack_pending: false,
            alert_pending: false,
            expected_peer: None,
            peer_identity: None,
            random,
        }
    }

    /// Which end this is.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The identity the peer claims in the atbus handshake; the peer's certificate must carry
    /// it. Set it before the handshake completes (a server without client certificates skips
    /// the check when the client presents none and mutual TLS is off).
    pub fn expect_peer(&mut self, identity: AtbusIdentity) {
        self.expected_peer = Some(identity);
    }

    /// Whether the handshake completed and its checks passed (secrets can be exported).
    pub fn is_complete(&self) -> bool {
        matches!(self.state, State::Complete)
    }

    /// The failure, once the handshake failed.
    pub fn error(&self) -> Option<&TlsError> {
        match &self.state {
            State::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Whether every handshake byte this side sent was acknowledged (on a reliable transport:
    /// whether it is complete). A datagram client keeps answering until then.
    pub fn is_settled(&self) -> bool {
        self.is_complete()
            && (!self.transport.lossy || self.send.iter().all(|s| s.acked == s.bytes.len()))
    }

    /// The identity the peer's certificate proved (the claimed one), once complete; `None`
    /// for a client that presented no certificate to a server not requiring one.
    pub fn peer_identity(&self) -> Option<&AtbusIdentity> {
        self.peer_identity.as_ref()
    }

    /// Derives the direction secrets from the TLS exporter, with `context` (for example a
    /// hash of the atbus hellos) binding them to the surrounding handshake.
    pub fn export_secrets(&self, context: &[u8]) -> Result<TlsSecrets, TlsError> {
        if !self.is_complete() {
            return Err(TlsError::NotComplete);
        }
        let export = |label: &[u8]| {
            self.conn
                .export_keying_material([0u8; SECRET_LEN], label, Some(context))
                .map(Secret)
                .map_err(TlsError::from_rustls)
        };
        Ok(TlsSecrets {
            client_to_server: export(EXPORTER_LABEL_C2S)?,
            server_to_client: export(EXPORTER_LABEL_S2C)?,
        })
    }

    /// Feeds one record (the whole `content` of a `TLS_HANDSHAKE` packet). `unix_ms` is the
    /// wall clock certificates are checked against. An error is also kept in
    /// [`error`](Self::error), and the alert for the peer is queued for `poll_transmit`.
    pub fn handle_record(
        &mut self,
        now: Instant,
        unix_ms: i64,
        content: &[u8],
    ) -> Result<(), TlsError> {
        if let State::Failed(e) = &self.state {
            // Answer further data records with the alert again (the first may have been lost),
            // unless the peer refused first: alerts are never answered, so two failed sides
            // cannot keep each other talking.
            let is_data = content.first() == Some(&KIND_DATA);
            if is_data && !matches!(e, TlsError::PeerRefused(_)) {
                self.alert_pending = true;
            }
            return Err(e.clone());
        }
        if matches!(self.state, State::Handshaking) && now >= self.deadline {
            return Err(self.fail(TlsError::Timeout));
        }
        let record = match TlsRecord::decode(content) {
            Ok(record) => record,
            Err(e) => return Err(self.fail(TlsError::Record(e.to_string()))),
        };
        let (level, offset, ack, bytes) = match record {
            TlsRecord::Alert { refusal, .. } => {
                self.state = State::Failed(TlsError::PeerRefused(refusal));
                self.retransmit_at = None;
                return Err(TlsError::PeerRefused(refusal));
            }
            TlsRecord::Data {
                level,
                offset,
                ack,
                bytes,
            } => (usize::from(level), offset as usize, ack, bytes),
        };
        let mut progress = false;
        for (stream, &acked) in self.send.iter_mut().zip(ack.iter()) {
            let acked = acked as usize;
            if acked > stream.bytes.len() {
                return Err(self.fail(TlsError::Record(
                    "acknowledges handshake bytes never sent".into(),
                )));
            }
            progress |= acked > stream.acked;
            stream.acked = stream.acked.max(acked);
            stream.next = stream.next.max(stream.acked);
        }
        if progress {
            // The peer is getting our bytes: restart the timer from the first timeout.
            self.rto = INITIAL_RTO;
            let unacked = self.send.iter().any(|s| s.acked < s.bytes.len());
            self.retransmit_at = unacked.then_some(now + self.rto);
        }
        if bytes.is_empty() {
            return Ok(());
        }
        // Whatever happens to the bytes, the peer learns what we have (it may have lost our ack).
        self.ack_pending = self.transport.lossy;
        if !matches!(self.state, State::Handshaking) {
            return Ok(());
        }
        let end = offset + bytes.len();
        if end <= self.received[level] {
            return Ok(()); // a duplicate
        }
        if !self.transport.lossy && (offset != self.received[level] || level > self.read_level()) {
            return Err(self.fail(TlsError::Record(
                "record out of order on a byte stream".into(),
            )));
        }
        // Keep the new part until it can be read (a gap before it, or a level not reached).
        let skip = self.received[level].saturating_sub(offset);
        let (start, fresh) = (offset + skip, &bytes[skip..]);
        let pending = &mut self.pending[level];
        let held: usize = pending.values().map(Vec::len).sum();
        if held + fresh.len() > MAX_LEVEL_BYTES as usize {
            return Ok(()); // over the reassembly budget: dropped, the peer resends
        }
        if pending
            .get(&start)
            .is_none_or(|have| have.len() < fresh.len())
        {
            pending.insert(start, fresh.to_vec());
        }
        self.clock.set_unix_ms(unix_ms);
        self.read_pending()?;
        if !self.conn.is_handshaking() {
            self.finish()?;
        }
        Ok(())
    }

    /// Level handshake bytes are read at: the level written at, up to the handshake level.
    fn read_level(&self) -> usize {
        self.write_level.min(LEVELS - 1)
    }

    /// Feeds rustls every held byte that continues a readable level's stream.
    fn read_pending(&mut self) -> Result<(), TlsError> {
        'levels: loop {
            for level in 0..=self.read_level() {
                let received = self.received[level];
                let Some((&start, _)) = self.pending[level].range(..=received).next() else {
                    continue;
                };
                let chunk = self.pending[level].remove(&start).unwrap_or_default();
                let end = start + chunk.len();
                if end <= received {
                    continue 'levels;
                }
                self.received[level] = end;
                let (conn, random) = (&mut self.conn, &mut self.random);
                let read = random::with_random(random, || conn.read_hs(&chunk[received - start..]));
                if let Err(e) = read {
                    return Err(self.fail(TlsError::from_rustls(e)));
                }
                self.pull_output()?;
                continue 'levels;
            }
            return Ok(());
        }
    }

    /// Checks the peer's certificate identity once rustls says the handshake is done.
    fn finish(&mut self) -> Result<(), TlsError> {
        let leaf = self
            .conn
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(|leaf| certificate_identities(leaf.as_ref()));
        let result = match (leaf, &self.expected_peer) {
            // No certificate: only a client to a server not requiring one (rustls enforces
            // the rest); it has no certified identity.
            (None, _) if self.side == Side::Server => Ok(None),
            (None, _) => Err(TlsError::NoAtbusIdentity),
            (Some(ids), _) if ids.is_empty() => Err(TlsError::NoAtbusIdentity),
            (Some(ids), Some(expected)) => {
                if ids.contains(expected) {
                    Ok(Some(expected.clone()))
                } else {
                    Err(TlsError::IdentityMismatch {
                        claimed: expected.to_string(),
                        certified: ids
                            .iter()
                            .map(|i| i.to_string())
                            .collect::<Vec<_>>()
                            .join(","),
                    })
                }
            }
            (Some(mut ids), None) => Ok(Some(ids.swap_remove(0))),
        };
        match result {
            Ok(identity) => {
                self.peer_identity = identity;
                self.state = State::Complete;
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Moves rustls's pending handshake bytes into the per-level send streams.
    fn pull_output(&mut self) -> Result<(), TlsError> {
        loop {
            let mut buf = Vec::new();
            let (conn, random) = (&mut self.conn, &mut self.random);
            let change = random::with_random(random, || conn.write_hs(&mut buf));
            if !buf.is_empty() {
                if self.write_level >= LEVELS {
                    // Post-handshake messages (none are enabled): nothing to carry them in.
                } else {
                    let stream = &mut self.send[self.write_level];
                    if stream.bytes.len() + buf.len() > MAX_LEVEL_BYTES as usize {
                        return Err(self.fail(TlsError::Tls("handshake flight too large".into())));
                    }
                    stream.bytes.extend_from_slice(&buf);
                }
            }
            match change {
                Some(KeyChange::Handshake { .. }) => self.write_level = 1,
                Some(KeyChange::OneRtt { .. }) => self.write_level = 2,
                None => break,
            }
        }
        Ok(())
    }

    fn fail(&mut self, error: TlsError) -> TlsError {
        self.state = State::Failed(error.clone());
        self.alert_pending = true;
        self.retransmit_at = None;
        error
    }

    /// Writes the next record to send into `out` (appended) and returns `true`, or returns
    /// `false` when there is nothing to send now.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> bool {
        if let State::Failed(e) = &self.state {
            if !std::mem::take(&mut self.alert_pending) {
                return false;
            }
            let alert = match self.conn.alert() {
                Some(AlertDescription::Unknown(v)) => v,
                Some(desc) => u8::from(desc),
                None => 0,
            };
            TlsRecord::Alert {
                refusal: e.refusal(),
                alert,
            }
            .encode(out);
            return true;
        }
        let ack = [self.received[0] as u32, self.received[1] as u32];
        for (level, stream) in self.send.iter_mut().enumerate() {
            if stream.next < stream.bytes.len() {
                let end = stream
                    .bytes
                    .len()
                    .min(stream.next + self.transport.max_record_data);
                TlsRecord::Data {
                    level: level as u8,
                    offset: stream.next as u32,
                    ack,
                    bytes: &stream.bytes[stream.next..end],
                }
                .encode(out);
                stream.next = end;
                self.ack_pending = false;
                if self.transport.lossy && self.retransmit_at.is_none() {
                    self.retransmit_at = Some(now + self.rto);
                }
                return true;
            }
        }
        if std::mem::take(&mut self.ack_pending) {
            let level = self.read_level();
            TlsRecord::Data {
                level: level as u8,
                offset: self.send[level].bytes.len() as u32,
                ack,
                bytes: &[],
            }
            .encode(out);
            return true;
        }
        false
    }

    /// When [`handle_timeout`](Self::handle_timeout) wants to run next: the retransmission
    /// timer or the deadline, whichever is first; `None` once complete and settled, or failed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Failed(_) => None,
            State::Complete => self.retransmit_at,
            State::Handshaking => Some(
                self.retransmit_at
                    .map_or(self.deadline, |at| at.min(self.deadline)),
            ),
        }
    }

    /// Runs timers: the deadline fails an unfinished handshake, the retransmission timer
    /// queues every unacknowledged byte again (doubling the timeout, up to [`MAX_RTO`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.state, State::Failed(_)) {
            return;
        }
        if matches!(self.state, State::Handshaking) && now >= self.deadline {
            self.fail(TlsError::Timeout);
            return;
        }
        if now >= self.deadline {
            // Complete, but the peer never acknowledged the last flight: stop resending.
            self.retransmit_at = None;
            return;
        }
        if self.retransmit_at.is_some_and(|at| now >= at) {
            for stream in &mut self.send {
                stream.next = stream.acked;
            }
            self.rto = (self.rto * 2).min(MAX_RTO);
            // Re-armed by `poll_transmit` when it sends the bytes again.
            self.retransmit_at = None;
        }
    }
}

#[cfg(test)]
mod tests;
