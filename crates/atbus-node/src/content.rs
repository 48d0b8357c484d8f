//! Content protection of peer sessions: the policy a node is configured with, its negotiation
//! in the link handshake, and the session keys installed in each peer's session
//! (`docs/security.md` §8.8, `docs/protocol.md` "Content protection negotiation").
//!
//! - **Mode.** Both ends must ask for the same [`EncryptionMode`]: a hello asking for another
//!   mode is refused with `ENCRYPTION_MISMATCH` and a message naming both modes. The mode is in
//!   the handshake transcript, so stripping it is caught by the proofs.
//! - **PSK.** The keys are the [`SessionKeys`] of the 1-RTT token handshake. A session has one
//!   key set for all its paths: the keys of the established link with the lowest transcript
//!   hash, so both ends pick the same one whatever order their links come up in. Relayed
//!   paths use the session's keys; a session that has only relayed paths has none, and a node
//!   that requires encryption refuses to send on it ([`crate::NodeError::NotEncrypted`]).
//! - **Suite.** The first suite of the client's list that the server's list contains.
//! - **Compression.** LZ4 when both ends ask for it; each end compresses what it sends above
//!   its own threshold.

use std::str::FromStr;

use atbus_auth::{
    CipherSuite, CompressionConfig, ContentCodec, DEFAULT_COMPRESS_THRESHOLD,
    DEFAULT_MAX_DECOMPRESSED, PacketProtection, Side,
};
use atbus_proto::{AtbusCloseReason, HandshakeHello};

use crate::auth::{Role, SessionKeys};
use crate::node::Node;
use crate::types::LinkCloseReason;

/// `handshake_hello.compression`: LZ4 block compression.
pub const COMPRESSION_LZ4: i32 = 1;

/// How a node protects the content of its sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EncryptionMode {
    /// Content travels in clear (the default).
    #[default]
    None,
    /// Content sealed with keys from the 1-RTT token handshake (needs token authentication).
    Psk,
    /// Content sealed with keys exported by a TLS 1.3 handshake run inside the link handshake
    /// (needs [`crate::NodeConfig::tls`]).
    Tls,
}

impl EncryptionMode {
    /// The value of `handshake_hello.encryption_mode`.
    pub fn wire(self) -> i32 {
        match self {
            EncryptionMode::None => 0,
            EncryptionMode::Psk => 1,
            EncryptionMode::Tls => 2,
        }
    }

    /// The mode of a `handshake_hello.encryption_mode` value.
    pub fn from_wire(v: i32) -> Option<Self> {
        match v {
            0 => Some(EncryptionMode::None),
            1 => Some(EncryptionMode::Psk),
            2 => Some(EncryptionMode::Tls),
            _ => None,
        }
    }

    /// The command-line spelling (`none`, `psk`, `tls`).
    pub fn as_str(self) -> &'static str {
        match self {
            EncryptionMode::None => "none",
            EncryptionMode::Psk => "psk",
            EncryptionMode::Tls => "tls",
        }
    }
}

impl std::fmt::Display for EncryptionMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EncryptionMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(EncryptionMode::None),
            "psk" => Ok(EncryptionMode::Psk),
            "tls" => Ok(EncryptionMode::Tls),
            _ => Err(format!("unknown encryption mode {s:?} (none, psk or tls)")),
        }
    }
}

/// Content protection settings of a node (`NodeConfig::content`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentPolicy {
    /// The mode every session must use; peers asking for another are refused.
    pub encryption: EncryptionMode,
    /// AEADs this node accepts, most preferred first (default ChaCha20-Poly1305, then
    /// AES-256-GCM).
    pub cipher_suites: Vec<CipherSuite>,
    /// Ask for LZ4 compression (used when the peer asks too; default off: see the
    /// compression-oracle note in `docs/security.md` §8.3).
    pub compression: bool,
    /// Content shorter than this is never compressed (default 256 bytes).
    pub compress_threshold: usize,
    /// Largest decompressed content accepted per packet (default 4 MiB).
    pub max_decompressed: usize,
    /// Pad sealed content to size classes, the padding length inside the ciphertext
    /// (`docs/security.md` §8.9; default off).
    pub pad: bool,
}

impl Default for ContentPolicy {
    fn default() -> Self {
        ContentPolicy {
            encryption: EncryptionMode::None,
            cipher_suites: vec![CipherSuite::ChaCha20Poly1305, CipherSuite::Aes256Gcm],
            compression: false,
            compress_threshold: DEFAULT_COMPRESS_THRESHOLD,
            max_decompressed: DEFAULT_MAX_DECOMPRESSED,
            pad: false,
        }
    }
}

impl ContentPolicy {
    /// The hello's `cipher_suites` field.
    pub(crate) fn wire_suites(&self) -> Vec<i32> {
        self.cipher_suites
            .iter()
            .map(|s| i32::from(s.id()))
            .collect()
    }

    fn compression_config(&self) -> CompressionConfig {
        CompressionConfig {
            threshold: self.compress_threshold,
            max_decompressed: self.max_decompressed,
        }
    }
}

/// The suite both ends use: the first of the client's list that the server's contains.
pub fn choose_suite(client: &[i32], server: &[i32]) -> Option<CipherSuite> {
    client
        .iter()
        .filter(|s| server.contains(s))
        .find_map(|&s| u8::try_from(s).ok().and_then(CipherSuite::from_id))
}

fn mismatch(message: String) -> LinkCloseReason {
    LinkCloseReason::local(AtbusCloseReason::EncryptionMismatch, message)
}

/// What a link's handshake decided for the session's content.
#[derive(Debug, Clone)]
pub(crate) struct LinkContent {
    pub keys: SessionKeys,
    pub suite: CipherSuite,
}

impl Node {
    /// Checks that `h` (a peer's hello or hello_reply) asks for this node's content protection.
    pub(crate) fn check_peer_content(&self, h: &HandshakeHello) -> Result<(), LinkCloseReason> {
        // Content protection is end to end: links to and from relays carry other sessions'
        // sealed packets and need no common mode.
        let relay_link = h.capabilities & crate::config::capabilities::RELAY != 0
            && self.config.relays.contains(&h.node_name);
        if self.is_router() || relay_link {
            return Ok(());
        }
        let ours = self.config.content.encryption;
        let theirs = EncryptionMode::from_wire(h.encryption_mode).ok_or_else(|| {
            mismatch(format!(
                "encryption-mismatch: peer asks for unknown encryption mode {}",
                h.encryption_mode
            ))
        })?;
        if theirs != ours {
            return Err(mismatch(format!(
                "encryption-mismatch: peer {:?} requires encryption {theirs}, this node is \
                 configured for {ours}",
                h.node_name
            )));
        }
        if ours != EncryptionMode::None
            && choose_suite(&h.cipher_suites, &self.config.content.wire_suites()).is_none()
        {
            return Err(mismatch(format!(
                "encryption-mismatch: no common cipher suite (peer offers {:?}, this node {:?})",
                h.cipher_suites,
                self.config.content.wire_suites()
            )));
        }
        Ok(())
    }

    /// The content setup of a link established with `hello`'s sender: the suite and keys for
    /// an encrypted session, `None` for a plain one. A session that must be encrypted but whose
    /// handshake made no keys is refused.
    pub(crate) fn link_content(
        &self,
        hello: &HandshakeHello,
        keys: Option<&SessionKeys>,
    ) -> Result<Option<LinkContent>, LinkCloseReason> {
        match self.config.content.encryption {
            EncryptionMode::None => Ok(None),
            mode @ (EncryptionMode::Psk | EncryptionMode::Tls) => {
                let Some(keys) = keys else {
                    let how = if mode == EncryptionMode::Tls {
                        "a TLS handshake"
                    } else {
                        "a token handshake"
                    };
                    return Err(mismatch(format!(
                        "encryption-mismatch: encryption {mode} needs {how}, and peer {:?} \
                         authenticated without one",
                        hello.node_name
                    )));
                };
                let ours = self.config.content.wire_suites();
                let suite = match keys.role {
                    Role::Client => choose_suite(&ours, &hello.cipher_suites),
                    Role::Server => choose_suite(&hello.cipher_suites, &ours),
                }
                .ok_or_else(|| mismatch("encryption-mismatch: no common cipher suite".into()))?;
                Ok(Some(LinkContent {
                    keys: keys.clone(),
                    suite,
                }))
            }
        }
    }

    /// Whether the session with `hello`'s sender compresses (both ends ask for LZ4).
    pub(crate) fn compresses_with(&self, hello: &HandshakeHello) -> bool {
        self.config.content.compression && hello.compression == COMPRESSION_LZ4
    }

    /// The codec of a session: keys of `content` (if any) and compression (if `compress`).
    pub(crate) fn session_codec(
        &self,
        content: Option<&LinkContent>,
        compress: bool,
    ) -> Option<ContentCodec> {
        let compression = compress.then(|| self.config.content.compression_config());
        let protection = match content {
            Some(c) => {
                let side = match c.keys.role {
                    Role::Client => Side::Client,
                    Role::Server => Side::Server,
                };
                // Both secrets are 32 bytes: this cannot fail.
                PacketProtection::new(
                    c.suite,
                    side,
                    &c.keys.client_to_server,
                    &c.keys.server_to_client,
                )
                .ok()
            }
            None => None,
        };
        if protection.is_none() && compression.is_none() {
            return None;
        }
        Some(ContentCodec::new(protection, compression).with_padding(self.config.content.pad))
    }

    /// Whether this node requires encrypted sessions.
    pub(crate) fn requires_encryption(&self) -> bool {
        self.config.content.encryption != EncryptionMode::None
    }
}

impl ContentPolicy {
    /// Checks the policy against the rest of `config`.
    pub(crate) fn validate(
        &self,
        config: &crate::config::NodeConfig,
    ) -> Result<(), crate::error::ConfigError> {
        use crate::error::ConfigError;
        match self.encryption {
            EncryptionMode::None => {}
            EncryptionMode::Tls => {
                // A certificate not naming this node is allowed (peers refuse it with
                // `tls-identity-mismatch`, which says what is wrong on both ends); drivers
                // warn about it at start (`TlsConfig::identities`).
                if config.tls.is_none() {
                    return Err(ConfigError::Content(
                        "encryption tls needs a TLS configuration (CA, and a certificate and key \
                         to accept links)"
                            .into(),
                    ));
                }
            }
            EncryptionMode::Psk => {
                let credentials = !config.tokens.is_empty()
                    || config.token_keyring.is_some()
                    || config.signed_token.is_some();
                if config.auth_mode() == crate::config::AuthMode::None || !credentials {
                    return Err(ConfigError::Content(
                        "encryption psk takes its keys from the token handshake: it needs \
                         auth 1rtt or 0rtt with access tokens, a token key ring or a signed token"
                            .into(),
                    ));
                }
            }
        }
        if self.cipher_suites.is_empty() {
            return Err(ConfigError::Content("no cipher suite configured".into()));
        }
        Ok(())
    }
}
