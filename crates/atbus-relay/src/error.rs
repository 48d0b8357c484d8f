//! Typed errors and drop reasons of the relay.

use atbus_node::ConfigError;

/// Why `Relay::new` refused a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The node part of the configuration is invalid.
    #[error(transparent)]
    Node(#[from] ConfigError),
    /// A relay limit is out of range.
    #[error("invalid relay limit: {0}")]
    Limit(String),
    /// The configuration file does not parse (syntax, unknown key, wrong type).
    #[error("relay configuration file: {0}")]
    File(String),
}

/// Why the relay dropped a frame; each has a counter in [`crate::RelayMetrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// The frame's top level does not walk (bad field key, truncated, bad head).
    Malformed,
    /// No `message_head`: nothing to route by.
    NoHead,
    /// A plain node sent a frame whose `source` is not its authenticated name.
    ForgedSource,
    /// Addressed to the relay itself (or to no one): relays run no sessions.
    ToRelay,
    /// The hop count reached the hop limit.
    HopLimit,
    /// No direct link, route or upstream reaches the destination.
    Unreachable,
    /// The only way on is the link the frame came in on.
    Reflection,
    /// The outgoing link's queue is full (slow or blocked destination).
    QueueFull,
    /// The rewritten package does not fit the outgoing link.
    TooLarge,
    /// Queued for a link that closed before it was written.
    LinkClosed,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 10] = [
        DropReason::Malformed,
        DropReason::NoHead,
        DropReason::ForgedSource,
        DropReason::ToRelay,
        DropReason::HopLimit,
        DropReason::Unreachable,
        DropReason::Reflection,
        DropReason::QueueFull,
        DropReason::TooLarge,
        DropReason::LinkClosed,
    ];

    /// A snake_case name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::NoHead => "no_head",
            DropReason::ForgedSource => "forged_source",
            DropReason::ToRelay => "to_relay",
            DropReason::HopLimit => "hop_limit",
            DropReason::Unreachable => "unreachable",
            DropReason::Reflection => "reflection",
            DropReason::QueueFull => "queue_full",
            DropReason::TooLarge => "too_large",
            DropReason::LinkClosed => "link_closed",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
