//! The relay's TOML configuration file.
//!
//! ```toml
//! name = "relay-1"                  # required
//! namespace = "ns1"
//! labels = { zone = "a" }
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
use std::time::Duration;

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
    /// Reads a relay configuration from TOML (see the module documentation for the keys).
    /// Values are checked by [`crate::Relay::new`].
    pub fn from_toml(text: &str) -> Result<Self, RelayError> {
        let file: File = toml::from_str(text).map_err(|e| RelayError::File(e.to_string()))?;
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
        Ok(config)
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
}
