//! The relay's TOML configuration file.
//!
//! ```toml
//! name = "relay-1"                  # required
//! namespace = "ns1"
//! labels = { zone = "a" }
//! listen = ["tcp://0.0.0.0:7100"]   # the service's addresses (RelayFile::listen)
//! metrics_listen = "127.0.0.1:9100"
//! token_file = "/etc/atbus/relay.tokens"
//! discovery = "etcd://127.0.0.1:2379"
//! gateways = ["tcp://relay-1.example.com:7100@5"]
//! peer_relay_selector = "kind=relay,area.region=eu"
//! connect = ["tcp://10.0.0.2:7000"] # peer relays and upstream to dial
//! hop_limit = 16
//! peer_relays = ["relay-2"]
//! relay_key_ids = ["relays"]
//! upstream = "relay-2"
//!
//! [routes]                          # destination = relay
//! "node-b" = "relay-2"
//!
//! [limits]
//! max_queue_bytes = 1048576
//! max_queue_frames = 4096
//! max_transmit_bytes = 65536
//! max_links = 1024
//! forward_error_interval_ms = 100
//! queue_delay_destinations = 16
//!
//! [[tokens]]                        # access tokens, as a node's
//! key_id = "relays"
//! secret = "at-least-sixteen-bytes"
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use atbus_discovery::Selector;
use atbus_node::{AccessToken, NodeConfig};
use serde::Deserialize;

use crate::config::RelayConfig;
use crate::error::RelayError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    connect: Vec<String>,
    hop_limit: Option<i32>,
    #[serde(default)]
    peer_relays: Vec<String>,
    #[serde(default)]
    relay_key_ids: Vec<String>,
    upstream: Option<String>,
    #[serde(default)]
    routes: BTreeMap<String, String>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    tokens: Vec<Token>,
    #[serde(default)]
    listen: Vec<String>,
    metrics_listen: Option<String>,
    token_file: Option<PathBuf>,
    discovery: Option<String>,
    #[serde(default)]
    gateways: Vec<String>,
    peer_relay_selector: Option<String>,
}

/// The whole configuration file: the relay core's [`RelayConfig`] and the settings of the
/// service that runs it (sockets, metrics, discovery), which the core does not use.
///
/// The service settings stay text where their syntax belongs to the program that runs the
/// relay (listen URLs, the discovery spec, gateways); the metrics address and the selector are
/// parsed here, so a bad one is an error of the file.
#[derive(Debug, Clone)]
pub struct RelayFile {
    /// The relay core's configuration (name, namespace, labels, tokens, routes, limits).
    pub config: RelayConfig,
    /// `listen`: addresses to accept nodes and relays on (`tcp://HOST:PORT`, …).
    pub listen: Vec<String>,
    /// `metrics_listen`: where to serve the metrics (`HOST:PORT`).
    pub metrics_listen: Option<SocketAddr>,
    /// `token_file`: a file of access tokens, one `KEY_ID:SECRET` a line.
    pub token_file: Option<PathBuf>,
    /// `discovery`: the registry to register in and route by (`etcd://HOST:PORT`, …).
    pub discovery: Option<String>,
    /// `gateways`: `URL[@PRIORITY]` addresses other namespaces reach the relay on.
    pub gateways: Vec<String>,
    /// `peer_relay_selector`: relay records this selector matches are trusted as peer relays.
    pub peer_relay_selector: Option<Selector>,
}

impl RelayFile {
    /// Reads the whole configuration file (see the module documentation for the keys).
    /// Syntax, unknown keys, a bad `metrics_listen` or `peer_relay_selector` are errors here;
    /// the core's values are checked by [`crate::Relay::new`].
    pub fn from_toml(text: &str) -> Result<Self, RelayError> {
        let mut file: File = toml::from_str(text).map_err(|e| RelayError::File(e.to_string()))?;
        let metrics_listen = file
            .metrics_listen
            .take()
            .map(|a| {
                a.parse::<SocketAddr>().map_err(|e| {
                    RelayError::File(format!("metrics_listen {a:?} is not HOST:PORT: {e}"))
                })
            })
            .transpose()?;
        let peer_relay_selector = file
            .peer_relay_selector
            .take()
            .map(|s| {
                Selector::parse(&s)
                    .map_err(|e| RelayError::File(format!("peer_relay_selector {s:?}: {e}")))
            })
            .transpose()?;
        Ok(Self {
            listen: std::mem::take(&mut file.listen),
            metrics_listen,
            token_file: file.token_file.take(),
            discovery: file.discovery.take(),
            gateways: std::mem::take(&mut file.gateways),
            peer_relay_selector,
            config: file.into_config(),
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    max_queue_bytes: Option<usize>,
    max_queue_frames: Option<usize>,
    max_transmit_bytes: Option<usize>,
    max_links: Option<usize>,
    forward_error_interval_ms: Option<u64>,
    queue_delay_destinations: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Token {
    key_id: String,
    secret: String,
}

impl RelayConfig {
    /// Reads a relay configuration from TOML (see the module documentation for the keys): the
    /// core's part of [`RelayFile::from_toml`], whose service settings are checked and left
    /// out. Values are checked by [`crate::Relay::new`].
    pub fn from_toml(text: &str) -> Result<Self, RelayError> {
        RelayFile::from_toml(text).map(|f| f.config)
    }
}

impl File {
    fn into_config(self) -> RelayConfig {
        let file = self;
        let mut node = NodeConfig::new(file.name);
        node.namespace = file.namespace;
        node.labels = file.labels;
        node.connect = file.connect;
        node.tokens = file
            .tokens
            .into_iter()
            .map(|t| AccessToken::new(t.key_id, t.secret.into_bytes()))
            .collect();
        let mut config = RelayConfig::new(String::new());
        if let Some(max) = file.limits.max_links {
            node.limits.max_peers = max;
        }
        config.node = node;
        if let Some(h) = file.hop_limit {
            config.hop_limit = h;
        }
        config.peer_relays = file.peer_relays;
        config.relay_key_ids = file.relay_key_ids;
        config.upstream = file.upstream;
        config.routes = file.routes;
        let l = file.limits;
        if let Some(v) = l.max_queue_bytes {
            config.max_queue_bytes = v;
        }
        if let Some(v) = l.max_queue_frames {
            config.max_queue_frames = v;
        }
        if let Some(v) = l.max_transmit_bytes {
            config.max_transmit_bytes = v;
        }
        if let Some(ms) = l.forward_error_interval_ms {
            config.forward_error_interval = Duration::from_millis(ms);
        }
        if let Some(n) = l.queue_delay_destinations {
            config.queue_delay_destinations = n;
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let text = r#"
            name = "relay-1"
            namespace = "ns1"
            labels = { zone = "a" }
            connect = ["tcp://10.0.0.2:7000"]
            hop_limit = 8
            peer_relays = ["relay-2"]
            relay_key_ids = ["relays"]
            upstream = "relay-2"
            [routes]
            "node-b" = "relay-2"
            [limits]
            max_queue_bytes = 2048
            max_queue_frames = 16
            max_links = 10
            forward_error_interval_ms = 250
            queue_delay_destinations = 3
            [[tokens]]
            key_id = "relays"
            secret = "at-least-sixteen-bytes"
        "#;
        let c = RelayConfig::from_toml(text).unwrap();
        assert_eq!(c.node.name, "relay-1");
        assert_eq!(c.node.namespace, "ns1");
        assert_eq!(c.node.labels.get("zone").map(String::as_str), Some("a"));
        assert_eq!(c.node.connect, ["tcp://10.0.0.2:7000"]);
        assert_eq!(c.node.tokens[0].key_id(), "relays");
        assert_eq!(c.node.limits.max_peers, 10);
        assert_eq!(c.hop_limit, 8);
        assert_eq!(c.peer_relays, ["relay-2"]);
        assert_eq!(c.relay_key_ids, ["relays"]);
        assert_eq!(c.upstream.as_deref(), Some("relay-2"));
        assert_eq!(c.routes.get("node-b").map(String::as_str), Some("relay-2"));
        assert_eq!((c.max_queue_bytes, c.max_queue_frames), (2048, 16));
        assert_eq!(c.max_transmit_bytes, 64 * 1024, "default kept");
        assert_eq!(c.forward_error_interval, Duration::from_millis(250));
        assert_eq!(c.queue_delay_destinations, 3);
    }

    #[test]
    fn unknown_keys_and_missing_names_are_errors() {
        assert!(matches!(
            RelayConfig::from_toml("name = \"r\"\nhop_limt = 3"),
            Err(RelayError::File(_))
        ));
        assert!(matches!(
            RelayConfig::from_toml("namespace = \"x\""),
            Err(RelayError::File(_))
        ));
        assert!(matches!(
            RelayConfig::from_toml("name = \"r\"\n[limits]\nmax_queue_bytes = -1"),
            Err(RelayError::File(_))
        ));
    }

    fn rng() -> rand_chacha::ChaCha20Rng {
        use rand_chacha::rand_core::SeedableRng;
        rand_chacha::ChaCha20Rng::seed_from_u64(1)
    }

    #[test]
    fn values_are_checked_when_the_relay_starts() {
        let now = std::time::Instant::now();
        let bad_name = RelayConfig::from_toml("name = \"Not A Name\"").unwrap();
        assert!(matches!(
            crate::Relay::new(bad_name, now, rng()),
            Err(RelayError::Node(_))
        ));
        let zero_hops = RelayConfig::from_toml("name = \"r\"\nhop_limit = 0").unwrap();
        assert!(matches!(
            crate::Relay::new(zero_hops, now, rng()),
            Err(RelayError::Limit(_))
        ));
    }

    const SERVICE: &str = r#"
        name = "relay-1"
        labels = { zone = "a" }
        listen = ["tcp://0.0.0.0:7100", "unix:///tmp/relay.sock"]
        metrics_listen = "127.0.0.1:9100"
        token_file = "/etc/atbus/relay.tokens"
        discovery = "etcd://127.0.0.1:2379"
        gateways = ["tcp://relay-1.example.com:7100@5"]
        peer_relay_selector = "kind=relay,area.region in (eu)"
    "#;

    #[test]
    fn service_settings_are_read() {
        let f = RelayFile::from_toml(SERVICE).unwrap();
        assert_eq!(f.config.node.name, "relay-1");
        assert_eq!(f.listen, ["tcp://0.0.0.0:7100", "unix:///tmp/relay.sock"]);
        assert_eq!(f.metrics_listen, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(
            f.token_file.as_deref(),
            Some(std::path::Path::new("/etc/atbus/relay.tokens"))
        );
        assert_eq!(f.discovery.as_deref(), Some("etcd://127.0.0.1:2379"));
        assert_eq!(f.gateways, ["tcp://relay-1.example.com:7100@5"]);
        let selector = f.peer_relay_selector.expect("selector");
        let mut eu = atbus_discovery::NodeRecord::new("relay-2");
        eu.metadata.kind = "relay".into();
        eu.metadata.labels.insert("area.region".into(), "eu".into());
        let mut us = eu.clone();
        us.metadata.labels.insert("area.region".into(), "us".into());
        assert!(selector.matches(&eu));
        assert!(!selector.matches(&us));
        // The core's view of the same file is the same core configuration.
        let c = RelayConfig::from_toml(SERVICE).unwrap();
        assert_eq!(c.node.name, f.config.node.name);
        assert_eq!(c.node.labels, f.config.node.labels);
    }

    #[test]
    fn service_settings_default_to_none() {
        let f = RelayFile::from_toml("name = \"r\"").unwrap();
        assert!(f.listen.is_empty() && f.gateways.is_empty());
        assert!(f.metrics_listen.is_none() && f.token_file.is_none());
        assert!(f.discovery.is_none() && f.peer_relay_selector.is_none());
    }

    #[test]
    fn bad_service_settings_are_file_errors_naming_the_key() {
        let cases = [
            ("metrics_listen = \"localhost\"", "metrics_listen"),
            ("metrics_listen = 9100", "metrics_listen"),
            (
                "peer_relay_selector = \"kind in (a\"",
                "peer_relay_selector",
            ),
            ("listen = \"tcp://127.0.0.1:1\"", "listen"),
            ("gateways = [1]", "gateways"),
            ("discovery = [\"etcd://a:1\"]", "discovery"),
        ];
        for (line, key) in cases {
            let text = format!("name = \"r\"\n{line}");
            match RelayFile::from_toml(&text) {
                Err(RelayError::File(m)) => assert!(m.contains(key), "{line}: {m}"),
                other => panic!("{line}: {other:?}"),
            }
            assert!(
                matches!(RelayConfig::from_toml(&text), Err(RelayError::File(_))),
                "{line}"
            );
        }
    }
}
