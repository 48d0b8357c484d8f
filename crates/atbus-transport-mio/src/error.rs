//! Errors returned by transport calls (failures of a link are reported as events instead).

use std::io;

use crate::event::{LinkId, ListenerId};
use crate::url::UrlError;

/// An error returned directly by a [`Transport`](crate::Transport) call.
///
/// Network failures of a link (refused connection, reset, resolution failure) are not errors of
/// the call that started them: they arrive as [`TransportEvent::LinkClosed`](crate::TransportEvent).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The URL could not be parsed.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// Binding a listener failed.
    #[error("cannot listen on {url}: {source}")]
    Listen {
        /// The URL that was asked for.
        url: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A system call failed.
    #[error("{op} failed: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// No open link has this id (it never existed or was closed).
    #[error("unknown link {0}")]
    UnknownLink(LinkId),
    /// No open listener has this id.
    #[error("unknown listener {0}")]
    UnknownListener(ListenerId),
    /// The link has not reported `LinkUp` yet.
    #[error("link {0} is not connected yet")]
    NotConnected(LinkId),
    /// The link is closing; no more data is accepted.
    #[error("link {0} is closing")]
    Closing(LinkId),
    /// The transport behind a handle has been dropped.
    #[error("the transport is gone")]
    Gone,
}

impl TransportError {
    pub(crate) fn io(op: &'static str, source: io::Error) -> Self {
        TransportError::Io { op, source }
    }
}

/// Result alias of this crate.
pub type Result<T, E = TransportError> = std::result::Result<T, E>;
