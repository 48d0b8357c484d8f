//! Node configuration, access tokens and limits.

use std::collections::BTreeMap;
use std::time::Duration;

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
            protocol_version: atbus_proto::PROTOCOL_VERSION as i32,
        }
    }

    /// The same config with `tokens`.
    pub fn with_tokens(mut self, tokens: Vec<AccessToken>) -> Self {
        self.tokens = tokens;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
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
