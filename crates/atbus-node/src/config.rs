//! Node configuration, access tokens and limits.

use std::collections::BTreeMap;
use std::time::Duration;

use atbus_auth::{AntiReplayConfig, StreamSet, TokenError, TokenKeyring};
use atbus_discovery::validate;
use atbus_stream::SessionConfig;

use crate::error::ConfigError;

/// Capability bits announced in `handshake_hello.capabilities` (see `docs/protocol.md`).
pub mod capabilities {
    /// The node merges several links to one peer into one session (mixed streams).
    pub const MULTI_PATH: i64 = 0x1;
    /// The sender is a relay: it forwards frames addressed to other nodes and runs no sessions
    /// of its own. A node announcing it runs in router mode (see `Node::poll_routed`); a plain
    /// node treats a link to a peer announcing it as a relay link only when the peer's name is
    /// in [`crate::NodeConfig::relays`].
    pub const RELAY: i64 = 0x2;
    /// Every bit a plain node announces by default; the rest are reserved (encryption,
    /// compression, 0-RTT). [`RELAY`] is announced by relays only.
    pub const ALL: i64 = MULTI_PATH;
}

/// A pre-shared access token: a key id that travels on the wire and a secret that never does.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    key_id: String,
    secret: Vec<u8>,
}

impl AccessToken {
    /// A token with `key_id` (non-empty, at most 64 bytes) and `secret` (at least 16 bytes).
    pub fn new(key_id: impl Into<String>, secret: impl Into<Vec<u8>>) -> Self {
        Self {
            key_id: key_id.into(),
            secret: secret.into(),
        }
    }

    /// The key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub(crate) fn secret(&self) -> &[u8] {
        &self.secret
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("key_id", &self.key_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// How this node authenticates the peers that open links to it (node-wide: every listener of
/// the node applies the same policy; see `docs/security.md` §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Peers without credentials are accepted as open links; credentials a peer presents are
    /// still verified.
    None,
    /// Every peer proves a credential (pre-shared access token or signed token) in the 1-RTT
    /// handshake; 0-RTT early data is discarded (the client sends it again in the session).
    OneRtt,
    /// As [`AuthMode::OneRtt`], and a client's first flight may carry a 0-RTT proof and early
    /// data, delivered once if the proof is fresh and never seen before. As a client: put early
    /// data into the first flight ([`crate::Node::send_early`]).
    ZeroRtt,
}

impl std::str::FromStr for AuthMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(AuthMode::None),
            "1rtt" => Ok(AuthMode::OneRtt),
            "0rtt" => Ok(AuthMode::ZeroRtt),
            other => Err(format!("unknown auth mode {other:?} (none, 1rtt or 0rtt)")),
        }
    }
}

/// A signed token (`atbus1.…`, issued by an [`atbus_auth::TokenKeyring`]) and its holder
/// secret: the credential a client presents in its hello.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedToken {
    bytes: Vec<u8>,
    key_id: String,
    holder_secret: [u8; 32],
}

impl SignedToken {
    /// A token in binary form with its holder secret. Only the layout is checked here (the
    /// signature is the server's business).
    pub fn new(token: Vec<u8>, holder_secret: [u8; 32]) -> Result<Self, TokenError> {
        let t = atbus_auth::token::decode(&token)?;
        Ok(Self {
            bytes: token,
            key_id: t.key_id,
            holder_secret,
        })
    }

    /// A token in text form (`atbus1.…`) with its holder secret.
    pub fn from_text(text: &str, holder_secret: [u8; 32]) -> Result<Self, TokenError> {
        Self::new(atbus_auth::token::from_text(text)?, holder_secret)
    }

    /// The key id that signed it.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The binary token.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub(crate) fn holder_secret(&self) -> &[u8] {
        &self.holder_secret
    }
}

impl std::fmt::Debug for SignedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedToken")
            .field("key_id", &self.key_id)
            .field("holder_secret", &"<redacted>")
            .finish()
    }
}

/// What an anonymous peer gets on a node that accepts them ([`NodeConfig::anonymous`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnonymousPolicy {
    /// Stream ids an anonymous peer may send on (default 0–15); a packet on another closes the
    /// link with `AUTH_FAILED`.
    pub streams: StreamSet,
    /// Data packets per second accepted from one anonymous link (default 200); packets beyond
    /// are dropped unread, so the peer's session slows down through its own loss recovery.
    pub max_packets_per_sec: u32,
    /// Lifetime of the token issued with an assigned name, when the key ring has an issuing
    /// key (default 3600 s).
    pub token_lifetime_secs: u64,
    /// Label keys an anonymous peer may announce in its hello (default: none); a hello with
    /// another key is refused with `AUTH_FAILED` (`labels-not-allowed`).
    pub label_keys: std::collections::BTreeSet<String>,
    /// Most bytes of label keys and values together an anonymous peer may announce (default
    /// 256); more is refused with `LIMIT_EXCEEDED`.
    pub max_label_bytes: usize,
    /// Assigned names must be reserved by the application before the peer is accepted
    /// (default off): the node asks with [`crate::NodeEvent::ReserveName`] and waits for
    /// [`crate::Node::handle_name_reserved`]; see `docs/security.md` §9.3.
    pub reserve_names: bool,
    /// Names tried for one peer when reservations conflict (default 4); past it the peer is
    /// refused with `LIMIT_EXCEEDED` (`name-unavailable`).
    pub max_name_attempts: u32,
}

impl Default for AnonymousPolicy {
    fn default() -> Self {
        Self {
            streams: StreamSet::from_ranges([0..=15]).unwrap_or_default(),
            max_packets_per_sec: 200,
            token_lifetime_secs: 3600,
            label_keys: std::collections::BTreeSet::new(),
            max_label_bytes: 256,
            reserve_names: false,
            max_name_attempts: 4,
        }
    }
}

/// Default of [`NodeConfig::max_early_data`].
pub const DEFAULT_MAX_EARLY_DATA: usize = 16 * 1024;

/// Shortest token secret accepted.
pub const MIN_SECRET_LEN: usize = 16;
/// Longest key id accepted.
pub const MAX_KEY_ID_LEN: usize = 64;

/// Default of [`NodeConfig::relayed_path_mtu`].
pub const DEFAULT_RELAYED_PATH_MTU: usize = 1224;

/// Limits of a node; each has a documented default.
#[derive(Debug, Clone)]
pub struct NodeLimits {
    /// Links whose handshake is not finished, at once (default 64); more are refused with
    /// `LIMIT_EXCEEDED`.
    pub max_handshakes_in_flight: usize,
    /// Inbound links whose handshake is not finished, at once, from one source address (an
    /// IPv4 address or an IPv6 /64, loopback not counted; default 8), counted once the driver
    /// reports the source ([`crate::Node::handle_link_source`]); more are refused with
    /// `LIMIT_EXCEEDED`.
    pub max_handshakes_per_source: usize,
    /// Half-open handshakes (besides the new one) from which the node is under load: a hello
    /// on a datagram link from a network address must then echo a valid cookie, else it is
    /// answered with a stateless `handshake_retry` (default 32, half of
    /// `max_handshakes_in_flight`; `usize::MAX` turns cookies off). See `docs/security.md` §9.4.
    pub cookie_threshold: usize,
    /// Apply the per-source bounds and the cookie gate to loopback addresses too (default
    /// off: local processes cannot be spoofed from the network, and tests and benchmarks open
    /// many links from one loopback address). For tests of those defences on real sockets.
    pub limit_loopback: bool,
    /// Established links per peer (default 8).
    pub max_links_per_peer: usize,
    /// Peers with a session at once (default 1024).
    pub max_peers: usize,
    /// Labels a peer may announce in its hello (default 64).
    pub max_labels: usize,
    /// Longest `frame_message` accepted on a link (default 1 MiB).
    pub max_frame_length: usize,
    /// Bytes a peer without links may hold queued for a reconnect (default 16 MiB); `send`
    /// refuses beyond.
    pub max_disconnected_bytes: usize,
}

impl Default for NodeLimits {
    fn default() -> Self {
        Self {
            max_handshakes_in_flight: 64,
            max_handshakes_per_source: 8,
            cookie_threshold: 32,
            limit_loopback: false,
            max_links_per_peer: 8,
            max_peers: 1024,
            max_labels: 64,
            max_frame_length: atbus_frame::DEFAULT_MAX_FRAME_LENGTH,
            max_disconnected_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Everything a node is configured with.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Node name: a DNS-1123 subdomain of at most 253 bytes.
    pub name: String,
    /// Namespace: empty or a DNS-1123 label.
    pub namespace: String,
    /// Labels (Kubernetes label syntax), announced in the handshake.
    pub labels: BTreeMap<String, String>,
    /// Access tokens. Empty = open links (only peers without tokens connect). As client the
    /// node presents the first; as server it accepts any of them (rotation).
    pub tokens: Vec<AccessToken>,
    /// Peers to connect to (opaque URLs); reconnected with exponential backoff and jitter.
    pub connect: Vec<String>,
    /// Template of every peer session (names are filled in per peer).
    pub session: SessionConfig,
    /// A handshake not finished after this long closes its link (default 10 s).
    pub handshake_timeout: Duration,
    /// First retransmission delay of hello/confirm on datagram links, doubled each time up to
    /// 1 s (default 250 ms).
    pub handshake_retransmit: Duration,
    /// How long a peer without links keeps its unacknowledged messages for a reconnect before
    /// reporting them undeliverable (default 30 s).
    pub reconnect_wait: Duration,
    /// First reconnect delay (default 100 ms), doubled per failure up to `reconnect_max`.
    pub reconnect_initial: Duration,
    /// Longest reconnect delay (default 30 s).
    pub reconnect_max: Duration,
    /// Capability bits announced (default [`capabilities::ALL`]).
    pub capabilities: i64,
    /// Limits.
    pub limits: NodeLimits,
    /// Names of the relays this node trusts: a link to a peer of one of these names that
    /// announces [`capabilities::RELAY`] carries relayed paths of other peers' sessions instead of
    /// a session with the relay (default: none).
    pub relays: Vec<String>,
    /// Largest package on a relayed path (default 1224, the IPv6-safe UDP payload), so a frame
    /// fits every link of the relay chain and relays never re-fragment; capped by the link MTU.
    pub relayed_path_mtu: usize,
    /// Authentication policy of inbound links; `None` (the default) means [`AuthMode::OneRtt`]
    /// when credentials are configured (`tokens` or `token_keyring`), else [`AuthMode::None`].
    /// As a client, [`AuthMode::ZeroRtt`] makes the node put early data in its first flight.
    pub auth: Option<AuthMode>,
    /// Keys that verify signed tokens presented by peers (and, with an issuing key, sign the
    /// tokens handed to anonymous peers).
    pub token_keyring: Option<TokenKeyring>,
    /// The signed token this node presents as a client (before `tokens`).
    pub signed_token: Option<SignedToken>,
    /// Accept peers without credentials and assign them names (default: off).
    pub anonymous: Option<AnonymousPolicy>,
    /// As a client: ask the server for an assigned name (the hello's name is empty); the node
    /// takes the name the server assigns ([`crate::NodeEvent::NameAssigned`]).
    pub request_assigned_name: bool,
    /// 0-RTT freshness window and nonce cache (default ±10 s, 65 536 nonces).
    pub anti_replay: AntiReplayConfig,
    /// Most bytes of early data in one first flight (default 16 KiB), both to send and to
    /// accept.
    pub max_early_data: usize,
    /// Content protection of sessions (encryption mode, suites, compression, padding).
    pub content: crate::content::ContentPolicy,
    /// TLS certificates and CA of encryption mode `tls` (`docs/security.md` §8.7).
    pub tls: Option<atbus_auth::tls::TlsConfig>,
    /// Protocol version announced; always [`atbus_proto::PROTOCOL_VERSION`] outside tests.
    #[doc(hidden)]
    pub protocol_version: i32,
}

impl NodeConfig {
    /// Defaults for a node called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        Self {
            session: SessionConfig::new(name.clone(), String::new()),
            name,
            namespace: String::new(),
            labels: BTreeMap::new(),
            tokens: Vec::new(),
            connect: Vec::new(),
            handshake_timeout: Duration::from_secs(10),
            handshake_retransmit: Duration::from_millis(250),
            reconnect_wait: Duration::from_secs(30),
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(30),
            capabilities: capabilities::ALL,
            limits: NodeLimits::default(),
            relays: Vec::new(),
            relayed_path_mtu: DEFAULT_RELAYED_PATH_MTU,
            auth: None,
            token_keyring: None,
            signed_token: None,
            anonymous: None,
            request_assigned_name: false,
            anti_replay: AntiReplayConfig::default(),
            max_early_data: DEFAULT_MAX_EARLY_DATA,
            content: crate::content::ContentPolicy::default(),
            tls: None,
            protocol_version: atbus_proto::PROTOCOL_VERSION as i32,
        }
    }

    /// The same config with `tokens`.
    pub fn with_tokens(mut self, tokens: Vec<AccessToken>) -> Self {
        self.tokens = tokens;
        self
    }

    /// The authentication policy in effect (see [`NodeConfig::auth`]).
    pub fn auth_mode(&self) -> AuthMode {
        self.auth
            .unwrap_or(if self.tokens.is_empty() && self.token_keyring.is_none() {
                AuthMode::None
            } else {
                AuthMode::OneRtt
            })
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.auth_mode() != AuthMode::None
            && self.tokens.is_empty()
            && self.token_keyring.is_none()
            && self.signed_token.is_none()
            && self.anonymous.is_none()
        {
            return Err(ConfigError::Token(
                "auth 1rtt/0rtt needs access tokens, a token key ring, a signed token or \
                 anonymous peers"
                    .to_owned(),
            ));
        }
        self.content.validate(self)?;
        check_name(&self.name).map_err(ConfigError::Name)?;
        check_namespace(&self.namespace).map_err(ConfigError::Namespace)?;
        check_labels(&self.labels, usize::MAX).map_err(ConfigError::Label)?;
        for r in &self.relays {
            check_name(r).map_err(ConfigError::Name)?;
        }
        let mut seen = std::collections::BTreeSet::new();
        for t in &self.tokens {
            if t.key_id.is_empty() || t.key_id.len() > MAX_KEY_ID_LEN {
                return Err(ConfigError::Token(format!(
                    "key id must be 1 to {MAX_KEY_ID_LEN} bytes"
                )));
            }
            if t.secret.len() < MIN_SECRET_LEN {
                return Err(ConfigError::Token(format!(
                    "secret of key id {:?} is shorter than {MIN_SECRET_LEN} bytes",
                    t.key_id
                )));
            }
            if !seen.insert(t.key_id.as_str()) {
                return Err(ConfigError::Token(format!(
                    "key id {:?} appears twice",
                    t.key_id
                )));
            }
        }
        Ok(())
    }
}

/// A node name: DNS-1123 subdomain, at most 253 bytes.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    validate::check_dns1123_subdomain(name).map_err(|p| format!("node name {name:?} {p}"))
}

/// A namespace: empty or a DNS-1123 label.
pub(crate) fn check_namespace(ns: &str) -> Result<(), String> {
    if ns.is_empty() {
        return Ok(());
    }
    validate::check_dns1123_label(ns).map_err(|p| format!("namespace {ns:?} {p}"))
}

/// Labels: qualified-name keys, label values, at most `max` entries.
pub(crate) fn check_labels(labels: &BTreeMap<String, String>, max: usize) -> Result<(), String> {
    if labels.len() > max {
        return Err(format!("{} labels, the limit is {max}", labels.len()));
    }
    for (k, v) in labels {
        validate::check_qualified_name(k).map_err(|p| format!("label key {k:?} {p}"))?;
        validate::check_label_value(v).map_err(|p| format!("label value {v:?} {p}"))?;
    }
    Ok(())
}
