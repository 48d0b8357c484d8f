//! Relay configuration and its limits.

use std::collections::BTreeMap;
use std::time::Duration;

use atbus_node::NodeConfig;

/// Default hop limit: a frame that already crossed this many relays is not forwarded again.
pub const DEFAULT_HOP_LIMIT: i32 = 16;

/// Everything a relay is configured with; every limit has a documented default.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The relay as a node on the wire: name, namespace, labels, access tokens, links to dial
    /// (upstream and peer relays), handshake limits. [`crate::Relay::new`] adds the
    /// `RELAY` capability bit.
    pub node: NodeConfig,
    /// Largest hop count a forwarded frame may reach (default [`DEFAULT_HOP_LIMIT`]).
    pub hop_limit: i32,
    /// Names of other relays this relay trusts: on links from them `forward_for_*` and
    /// `hop_count` are kept, and frames may carry any `source` (default: none).
    pub peer_relays: Vec<String>,
    /// When not empty, a peer relay must also have proved one of these access key ids in the
    /// link handshake (a key that plain nodes do not hold) to be trusted (default: empty).
    pub relay_key_ids: Vec<String>,
    /// Destination node name → name of the peer relay that reaches it (later filled from
    /// discovery).
    pub routes: BTreeMap<String, String>,
    /// Peer relay that gets every frame with no direct link and no route (default: none).
    pub upstream: Option<String>,
    /// Bytes queued per outgoing link before frames are dropped (default 1 MiB).
    pub max_queue_bytes: usize,
    /// Frames queued per outgoing link before frames are dropped (default 4096).
    pub max_queue_frames: usize,
    /// Most bytes one `poll_transmit` writes for a byte-stream link (default 64 KiB).
    pub max_transmit_bytes: usize,
    /// Destinations with a queue delay series of their own (default 16); the others share one
    /// series, `other`, so the metrics stay bounded with many links.
    pub queue_delay_destinations: usize,
    /// At most one `forward_error` per (incoming link, destination, code) in this interval
    /// (default 100 ms), so a session retransmitting into a dead end does not flood its source.
    pub forward_error_interval: Duration,
    /// Entries of the `forward_error` rate limiter (default 4096); when full, errors are not
    /// sent until old entries expire.
    pub max_forward_error_entries: usize,
    /// How long a route learned from traffic (a frame from a trusted relay names its first
    /// source in `forward_for_source`: answers to that source go back through that relay) lasts
    /// after the last such frame (default 60 s).
    pub learned_route_ttl: Duration,
    /// Most learned routes kept (default 65 536); when full, new sources are not learned until
    /// old routes expire.
    pub max_learned_routes: usize,
}

impl RelayConfig {
    /// Defaults for a relay called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            node: NodeConfig::new(name),
            hop_limit: DEFAULT_HOP_LIMIT,
            peer_relays: Vec::new(),
            relay_key_ids: Vec::new(),
            routes: BTreeMap::new(),
            upstream: None,
            max_queue_bytes: 1024 * 1024,
            max_queue_frames: 4096,
            max_transmit_bytes: 64 * 1024,
            queue_delay_destinations: 16,
            forward_error_interval: Duration::from_millis(100),
            max_forward_error_entries: 4096,
            learned_route_ttl: Duration::from_secs(60),
            max_learned_routes: 65_536,
        }
    }
}
