//! Typed errors of the node.

use atbus_stream::SendError;

/// Why `Node::new` refused a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The node name is not a DNS-1123 subdomain.
    #[error("invalid node name: {0}")]
    Name(String),
    /// The namespace is not a DNS-1123 label.
    #[error("invalid namespace: {0}")]
    Namespace(String),
    /// A label is invalid.
    #[error("invalid label: {0}")]
    Label(String),
    /// An access token is invalid.
    #[error("invalid access token: {0}")]
    Token(String),
    /// The content protection settings cannot work.
    #[error("content protection: {0}")]
    Content(String),
}

/// Why a node operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// No session with that peer (never connected, or dropped).
    #[error("unknown peer {0:?}")]
    UnknownPeer(String),
    /// The peer has no link and its reconnect buffer is full.
    #[error("peer {peer:?} is disconnected and {buffered} bytes already wait for it")]
    Disconnected {
        /// Peer.
        peer: String,
        /// Bytes waiting.
        buffered: usize,
    },
    /// A name is not a valid node name.
    #[error("invalid node name: {0}")]
    InvalidName(String),
    /// The relay is not one of `NodeConfig::relays`.
    #[error("{0:?} is not a configured relay")]
    NotARelay(String),
    /// This node requires encrypted sessions and the session with the peer has paths but does
    /// not seal (its handshake made no keys).
    #[error(
        "the session with peer {0:?} does not encrypt and this node requires encryption (its \
         handshake, direct or through relays only, made no keys)"
    )]
    NotEncrypted(String),
    /// The session refused the message (backpressure, empty message, closed stream, ...).
    #[error(transparent)]
    Send(#[from] SendError),
}
