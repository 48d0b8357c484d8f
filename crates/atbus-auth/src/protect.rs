//! Packet content protection: AEAD sealing of `packet_data.content` with per-direction keys.
//!
//! Layout of sealed content (specified in `docs/security.md`, section 8.1):
//!
//! ```text
//! key phase (1 byte) | ciphertext (as long as the plaintext) | tag (16 bytes)
//! ```
//!
//! - **Keys.** Each direction has its own 32-byte secret (from the handshake's HKDF, see
//!   `atbus-node`'s `SessionKeys`). The packet key and IV of key phase `p` are
//!   `HKDF-Expand(PRK, label ‖ suite ‖ p)` with `PRK = HKDF-Extract(CONTENT_LABEL, secret)`.
//!   A key update replaces the secret with `HKDF-Expand(PRK, KEY_UPDATE_INFO, 32)` and moves to
//!   phase `p + 1`.
//! - **Nonce.** As in RFC 9001 §5.3 with the path id of multipath QUIC: the 12 bytes
//!   `path_id (u32, big-endian) ‖ packet_number (u64, big-endian)` XORed with the direction's IV.
//!   Both numbers are range-checked, so the map from `(path id, packet number)` to nonce is
//!   injective. Packet numbers are never reused on a path: a retransmission is a new packet with
//!   a new number, so a key never seals twice under one nonce.
//! - **Associated data.** The header fields no relay may change (see [`ContentHeader`]); the
//!   `forward_for_*` fields and `hop_count`, which relays write, are left out on purpose.

use aes_gcm::Aes256Gcm;
use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use hkdf::Hkdf;
use sha2::Sha256;

use crate::error::ProtectError;

/// HKDF-Extract salt of content protection (version 1).
pub const CONTENT_LABEL: &[u8] = b"atbus-content-v1";
/// HKDF-Expand info prefix of a packet key (followed by the suite id and the key phase).
pub const KEY_INFO: &[u8] = b"atbus-content-v1 key";
/// HKDF-Expand info prefix of a packet IV (followed by the suite id and the key phase).
pub const IV_INFO: &[u8] = b"atbus-content-v1 iv";
/// HKDF-Expand info of the next key phase's secret.
pub const KEY_UPDATE_INFO: &[u8] = b"atbus-content-v1 key update";
/// First bytes of the associated data of every sealed packet.
pub const AAD_LABEL: &[u8] = b"atbus-content-v1 aad";
/// Length of the authentication tag.
pub const TAG_LEN: usize = 16;
/// Length of an AEAD nonce.
pub const NONCE_LEN: usize = 12;
/// Length of a direction secret and of a packet key.
pub const SECRET_LEN: usize = 32;
/// Bytes sealing adds to a plaintext: the key phase byte and the tag.
pub const SEAL_OVERHEAD: usize = 1 + TAG_LEN;
/// Largest path id that fits the nonce (32 bits).
pub const MAX_PATH_ID: i64 = u32::MAX as i64;
/// Largest packet number that may be sealed (62 bits, as QUIC); a path that reaches it must be
/// replaced by a new path.
pub const MAX_PACKET_NUMBER: i64 = (1 << 62) - 1;
/// Largest plaintext that may be sealed (16 MiB, far above any frame the node accepts).
pub const MAX_PLAINTEXT_LEN: usize = 16 << 20;

/// The AEAD of a session, chosen in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CipherSuite {
    /// ChaCha20-Poly1305 (RFC 8439): constant-time in software, the default.
    ChaCha20Poly1305,
    /// AES-256-GCM: fastest where the CPU has AES and carry-less multiply instructions.
    Aes256Gcm,
}

impl CipherSuite {
    /// The id byte of the suite in key derivation labels.
    pub fn id(self) -> u8 {
        match self {
            CipherSuite::ChaCha20Poly1305 => 1,
            CipherSuite::Aes256Gcm => 2,
        }
    }

    /// The suite with id byte `id`, if any.
    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(CipherSuite::ChaCha20Poly1305),
            2 => Some(CipherSuite::Aes256Gcm),
            _ => None,
        }
    }

    /// Default limits of the suite, from RFC 9001 §6.6 (confidentiality: packets sealed per
    /// key; integrity: failed opens per key). RFC 9001 derives the AES-GCM confidentiality
    /// limit for QUIC-sized packets: sessions sending much larger packets should lower it.
    pub fn default_limits(self) -> ProtectionLimits {
        match self {
            CipherSuite::ChaCha20Poly1305 => ProtectionLimits {
                max_packets_per_key: 1 << 62,
                max_failed_opens: 1 << 36,
            },
            CipherSuite::Aes256Gcm => ProtectionLimits {
                max_packets_per_key: 1 << 23,
                max_failed_opens: 1 << 52,
            },
        }
    }
}

/// Usage limits of one key phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtectionLimits {
    /// Packets one send key may seal; then [`ProtectError::KeyUpdateNeeded`].
    pub max_packets_per_key: u64,
    /// Failed opens one receive key tolerates; then [`ProtectError::IntegrityLimitReached`].
    pub max_failed_opens: u64,
}

/// Which end of the session this side is: it seals with its own direction's keys and opens
/// with the peer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The end that opened the link (seals with the client-to-server secret).
    Client,
    /// The end that accepted the link (seals with the server-to-client secret).
    Server,
}

/// The header fields of a packet that protection binds, borrowed from `message_head` and
/// `packet_data`.
///
/// Not included, on purpose: `forward_for_source`, `forward_for_connection_id` and
/// `hop_count` (written by relays on the way). `packet_type` and the fragments are inside the
/// content, so the ciphertext itself covers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContentHeader<'a> {
    /// `message_head.source`: the sending node.
    pub source: &'a str,
    /// `message_head.destination`: the receiving node.
    pub destination: &'a str,
    /// `packet_data.stream_id`.
    pub stream_id: i64,
    /// `packet_data.stream_offset`.
    pub stream_offset: i64,
    /// `packet_data.flags` (must include `ENCRYPTED` when sealing or opening).
    pub flags: i32,
    /// `packet_data.padding_size`.
    pub padding_size: i32,
    /// `packet_data.timepoint_microseconds`.
    pub timepoint_microseconds: i64,
    /// `packet_data.packet_number`: per path, never reused.
    pub packet_number: i64,
    /// `packet_data.path_id`: the sender's id of the path.
    pub path_id: i64,
}

impl<'a> ContentHeader<'a> {
    /// The protected fields of a received or outgoing packet: `head` (absent counts as empty
    /// names) and `packet`. The relay-written fields of `head` are ignored.
    pub fn of(
        head: Option<&'a atbus_proto::MessageHead>,
        packet: &atbus_proto::PacketData,
    ) -> Self {
        ContentHeader {
            source: head.map_or("", |h| h.source.as_str()),
            destination: head.map_or("", |h| h.destination.as_str()),
            stream_id: packet.stream_id,
            stream_offset: packet.stream_offset,
            flags: packet.flags,
            padding_size: packet.padding_size,
            timepoint_microseconds: packet.timepoint_microseconds,
            packet_number: packet.packet_number,
            path_id: packet.path_id,
        }
    }
}

/// Which numbering a sealed packet's `packet_number` belongs to. Each path has two: stream
/// data (and close) packets, and sealed control packets (`SESSION_CONTROL`: acknowledgements,
/// pings, pongs). The two never share a nonce: a control nonce has the top bit of its 64-bit
/// number field set ([`CONTROL_NONCE_BIT`]), which no data packet number can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NonceSpace {
    /// Stream data and close packets: the path's packet numbers.
    Data,
    /// Sealed control packets: the path's control numbers.
    Control,
}

impl NonceSpace {
    /// The space of a packet with `flags` (`SESSION_CONTROL` set: control).
    pub fn of_flags(flags: i32) -> Self {
        if flags & atbus_proto::packet_flags::SESSION_CONTROL != 0 {
            NonceSpace::Control
        } else {
            NonceSpace::Data
        }
    }
}

/// Bit set in the 64-bit number field of a control packet's nonce (numbers stay below 2⁶²).
pub const CONTROL_NONCE_BIT: u64 = 1 << 63;

/// The AEAD nonce of data packet `packet_number` on path `path_id` under `iv`.
///
/// `path_id` must be in `0..=MAX_PATH_ID` and `packet_number` in `0..=MAX_PACKET_NUMBER`; in
/// that range distinct pairs give distinct nonces.
pub fn packet_nonce(
    iv: &[u8; NONCE_LEN],
    path_id: i64,
    packet_number: i64,
) -> Result<[u8; NONCE_LEN], ProtectError> {
    packet_nonce_in(iv, NonceSpace::Data, path_id, packet_number)
}

/// The AEAD nonce of packet `packet_number` of `space` on path `path_id` under `iv`:
/// `iv XOR (u32_be(path_id) ‖ u64_be(packet_number | space bit))`. Distinct in-range
/// triples give distinct nonces.
pub fn packet_nonce_in(
    iv: &[u8; NONCE_LEN],
    space: NonceSpace,
    path_id: i64,
    packet_number: i64,
) -> Result<[u8; NONCE_LEN], ProtectError> {
    let path = u32::try_from(path_id).map_err(|_| ProtectError::PathIdOutOfRange(path_id))?;
    if packet_number < 0 {
        return Err(ProtectError::NegativePacketNumber(packet_number));
    }
    if packet_number > MAX_PACKET_NUMBER {
        return Err(ProtectError::PacketNumberExhausted(packet_number));
    }
    let number = match space {
        NonceSpace::Data => packet_number as u64,
        NonceSpace::Control => packet_number as u64 | CONTROL_NONCE_BIT,
    };
    let mut nonce = *iv;
    for (n, b) in nonce[..4].iter_mut().zip(path.to_be_bytes()) {
        *n ^= b;
    }
    for (n, b) in nonce[4..].iter_mut().zip(number.to_be_bytes()) {
        *n ^= b;
    }
    Ok(nonce)
}

/// Writes the associated data of `header` under key phase `phase` into `aad` (cleared first).
pub fn associated_data(
    suite: CipherSuite,
    phase: u8,
    header: &ContentHeader<'_>,
    aad: &mut Vec<u8>,
) {
    aad.clear();
    aad.extend_from_slice(AAD_LABEL);
    aad.push(suite.id());
    aad.push(phase);
    for s in [header.source, header.destination] {
        aad.extend_from_slice(&(s.len() as u64).to_be_bytes());
        aad.extend_from_slice(s.as_bytes());
    }
    aad.extend_from_slice(&header.stream_id.to_be_bytes());
    aad.extend_from_slice(&header.stream_offset.to_be_bytes());
    aad.extend_from_slice(&header.flags.to_be_bytes());
    aad.extend_from_slice(&header.padding_size.to_be_bytes());
    aad.extend_from_slice(&header.timepoint_microseconds.to_be_bytes());
    aad.extend_from_slice(&header.path_id.to_be_bytes());
    aad.extend_from_slice(&header.packet_number.to_be_bytes());
}

/// Which receive phase a packet claims.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Current,
    Next,
    Previous,
}

enum Cipher {
    ChaCha(Box<ChaCha20Poly1305>),
    Aes(Box<Aes256Gcm>),
}

/// One direction's keys at one key phase.
struct DirectionKeys {
    suite: CipherSuite,
    phase: u8,
    secret: [u8; SECRET_LEN],
    cipher: Cipher,
    iv: [u8; NONCE_LEN],
    /// Packets sealed under this phase (send side).
    used: u64,
}

fn hkdf(secret: &[u8]) -> Hkdf<Sha256> {
    Hkdf::<Sha256>::new(Some(CONTENT_LABEL), secret)
}

fn expand(hk: &Hkdf<Sha256>, info: &[&[u8]], out: &mut [u8]) {
    // Outputs of 12 and 32 bytes are far below HKDF-SHA256's 8160-byte limit: cannot fail.
    let _ = hk.expand_multi_info(info, out);
}

impl DirectionKeys {
    fn new(suite: CipherSuite, phase: u8, secret: [u8; SECRET_LEN]) -> Self {
        let hk = hkdf(&secret);
        let tag = [suite.id(), phase];
        let mut key = [0u8; SECRET_LEN];
        let mut iv = [0u8; NONCE_LEN];
        expand(&hk, &[KEY_INFO, &tag], &mut key);
        expand(&hk, &[IV_INFO, &tag], &mut iv);
        let cipher = match suite {
            CipherSuite::ChaCha20Poly1305 => {
                Cipher::ChaCha(Box::new(ChaCha20Poly1305::new(&key.into())))
            }
            CipherSuite::Aes256Gcm => Cipher::Aes(Box::new(Aes256Gcm::new(&key.into()))),
        };
        DirectionKeys {
            suite,
            phase,
            secret,
            cipher,
            iv,
            used: 0,
        }
    }

    fn next(&self) -> Self {
        let mut secret = [0u8; SECRET_LEN];
        expand(&hkdf(&self.secret), &[KEY_UPDATE_INFO], &mut secret);
        DirectionKeys::new(self.suite, self.phase.wrapping_add(1), secret)
    }
}

fn direction_secret(secret: &[u8]) -> Result<[u8; SECRET_LEN], ProtectError> {
    secret
        .try_into()
        .map_err(|_| ProtectError::BadSecretLength(secret.len()))
}

/// The content protection of one session end: seals what it sends, opens what it receives.
///
/// No I/O, no clock, no randomness: everything that varies per packet is in the
/// [`ContentHeader`]. Sealing appends to a caller-owned buffer and allocates nothing once that
/// buffer and the internal associated-data buffer have grown to their working size.
pub struct PacketProtection {
    limits: ProtectionLimits,
    send: DirectionKeys,
    receive: DirectionKeys,
    /// The peer's next phase, derived ahead so that trying it costs no more than the current.
    receive_next: DirectionKeys,
    /// The peer's previous phase, kept for reordered packets until the caller discards it.
    receive_previous: Option<DirectionKeys>,
    /// Failed opens over the whole session, all phases (RFC 9001 §6.6).
    failed_opens: u64,
    aad: Vec<u8>,
}

impl std::fmt::Debug for PacketProtection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketProtection")
            .field("suite", &self.send.suite)
            .field("send_phase", &self.send.phase)
            .field("receive_phase", &self.receive.phase)
            .field("keys", &"<redacted>")
            .finish()
    }
}

impl PacketProtection {
    /// Protection for `side` of a session whose direction secrets are `client_to_server` and
    /// `server_to_client` (32 bytes each), with the suite's default limits.
    pub fn new(
        suite: CipherSuite,
        side: Side,
        client_to_server: &[u8],
        server_to_client: &[u8],
    ) -> Result<Self, ProtectError> {
        Self::with_limits(
            suite,
            side,
            client_to_server,
            server_to_client,
            suite.default_limits(),
        )
    }

    /// As [`PacketProtection::new`], with explicit limits.
    pub fn with_limits(
        suite: CipherSuite,
        side: Side,
        client_to_server: &[u8],
        server_to_client: &[u8],
        limits: ProtectionLimits,
    ) -> Result<Self, ProtectError> {
        let c2s = direction_secret(client_to_server)?;
        let s2c = direction_secret(server_to_client)?;
        let (send, receive) = match side {
            Side::Client => (c2s, s2c),
            Side::Server => (s2c, c2s),
        };
        let receive = DirectionKeys::new(suite, 0, receive);
        Ok(PacketProtection {
            limits,
            send: DirectionKeys::new(suite, 0, send),
            receive_next: receive.next(),
            receive,
            receive_previous: None,
            failed_opens: 0,
            aad: Vec::with_capacity(128),
        })
    }

    /// The session's AEAD.
    pub fn suite(&self) -> CipherSuite {
        self.send.suite
    }

    /// The key phase this side seals with.
    pub fn send_phase(&self) -> u8 {
        self.send.phase
    }

    /// The key phase this side expects to open.
    pub fn receive_phase(&self) -> u8 {
        self.receive.phase
    }

    /// Packets sealed under the current send key.
    pub fn sealed_packets(&self) -> u64 {
        self.send.used
    }

    /// Moves the send direction to the next key phase (a key update).
    pub fn update_send_key(&mut self) {
        self.send = self.send.next();
    }

    /// Moves the receive direction to the next key phase, after the peer's key update (`open`
    /// does this by itself when a packet of the next phase opens). The phase left becomes
    /// the previous one, still accepted until [`PacketProtection::discard_previous_receive_key`].
    pub fn update_receive_key(&mut self) {
        let next = self.receive_next.next();
        let current = std::mem::replace(&mut self.receive_next, next);
        self.receive_previous = Some(std::mem::replace(&mut self.receive, current));
    }

    /// Forgets the previous receive phase: its packets are refused from now on. Call it a
    /// while (about three probe timeouts, RFC 9001 §6.5) after the receive phase changed.
    pub fn discard_previous_receive_key(&mut self) {
        self.receive_previous = None;
    }

    /// Whether the previous receive phase is still accepted.
    pub fn has_previous_receive_key(&self) -> bool {
        self.receive_previous.is_some()
    }

    /// Packets that failed to open over the session's life, all phases together.
    pub fn failed_opens(&self) -> u64 {
        self.failed_opens
    }

    /// Seals `plaintext` for the packet described by `header` and appends the sealed content
    /// (key phase, ciphertext, tag) to `out`. Returns the number of bytes appended.
    ///
    /// The caller guarantees that `(header.path_id, header.packet_number)` was never sealed
    /// before with this key (packet numbers are never reused on a path).
    pub fn seal(
        &mut self,
        header: &ContentHeader<'_>,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<usize, ProtectError> {
        if header.flags & atbus_proto::packet_flags::ENCRYPTED == 0 {
            return Err(ProtectError::NotFlaggedEncrypted);
        }
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(ProtectError::TooLarge {
                len: plaintext.len(),
                max: MAX_PLAINTEXT_LEN,
            });
        }
        if self.send.used >= self.limits.max_packets_per_key {
            return Err(ProtectError::KeyUpdateNeeded {
                sealed: self.send.used,
            });
        }
        let nonce = packet_nonce_in(
            &self.send.iv,
            NonceSpace::of_flags(header.flags),
            header.path_id,
            header.packet_number,
        )?;
        associated_data(self.send.suite, self.send.phase, header, &mut self.aad);
        let start = out.len();
        out.reserve(plaintext.len() + SEAL_OVERHEAD);
        out.push(self.send.phase);
        out.extend_from_slice(plaintext);
        let body = &mut out[start + 1..];
        let tag = match &self.send.cipher {
            Cipher::ChaCha(c) => c.encrypt_in_place_detached(&nonce.into(), &self.aad, body),
            Cipher::Aes(c) => c.encrypt_in_place_detached(&nonce.into(), &self.aad, body),
        };
        match tag {
            Ok(tag) => out.extend_from_slice(&tag),
            Err(_) => {
                // Only reachable beyond the AEADs' message size limits, far above the cap.
                out.truncate(start);
                return Err(ProtectError::TooLarge {
                    len: plaintext.len(),
                    max: MAX_PLAINTEXT_LEN,
                });
            }
        }
        self.send.used += 1;
        Ok(out.len() - start)
    }

    /// Opens sealed content of the packet described by `header` and appends the plaintext to
    /// `out`. Returns the plaintext length. On any error `out` is left as it was.
    pub fn open(
        &mut self,
        header: &ContentHeader<'_>,
        sealed: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<usize, ProtectError> {
        if header.flags & atbus_proto::packet_flags::ENCRYPTED == 0 {
            return Err(ProtectError::NotFlaggedEncrypted);
        }
        if sealed.len() < SEAL_OVERHEAD {
            return Err(ProtectError::Truncated {
                len: sealed.len(),
                min: SEAL_OVERHEAD,
            });
        }
        if sealed.len() - SEAL_OVERHEAD > MAX_PLAINTEXT_LEN {
            return Err(ProtectError::TooLarge {
                len: sealed.len() - SEAL_OVERHEAD,
                max: MAX_PLAINTEXT_LEN,
            });
        }
        if self.failed_opens >= self.limits.max_failed_opens {
            return Err(ProtectError::IntegrityLimitReached {
                failed: self.failed_opens,
            });
        }
        // The current phase, the next one (the peer updated: try it, move on if it opens), or
        // the previous one while it is kept (reordered packets); never two phases back.
        let phase = sealed[0];
        let which = if phase == self.receive.phase {
            Phase::Current
        } else if phase == self.receive_next.phase {
            Phase::Next
        } else if self
            .receive_previous
            .as_ref()
            .is_some_and(|k| k.phase == phase)
        {
            Phase::Previous
        } else {
            return Err(ProtectError::KeyPhaseMismatch {
                expected: self.receive.phase,
                got: phase,
            });
        };
        let keys = match which {
            Phase::Current => &self.receive,
            Phase::Next => &self.receive_next,
            Phase::Previous => match &self.receive_previous {
                Some(k) => k,
                None => &self.receive,
            },
        };
        let nonce = packet_nonce_in(
            &keys.iv,
            NonceSpace::of_flags(header.flags),
            header.path_id,
            header.packet_number,
        )?;
        associated_data(keys.suite, phase, header, &mut self.aad);
        let (ciphertext, tag) = sealed[1..].split_at(sealed.len() - SEAL_OVERHEAD);
        let start = out.len();
        out.extend_from_slice(ciphertext);
        let body = &mut out[start..];
        let opened = match &keys.cipher {
            Cipher::ChaCha(c) => {
                c.decrypt_in_place_detached(&nonce.into(), &self.aad, body, tag.into())
            }
            Cipher::Aes(c) => {
                c.decrypt_in_place_detached(&nonce.into(), &self.aad, body, tag.into())
            }
        };
        if opened.is_err() {
            out.truncate(start);
            self.failed_opens += 1;
            return Err(ProtectError::BadTag);
        }
        if which == Phase::Next {
            self.update_receive_key();
        }
        Ok(ciphertext.len())
    }
}
