//! Layer 4 of libatbus-rs: the mio driver's socket layer.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod error;
mod event;
mod handle;
mod mem;
mod stream;
mod transport;
mod url;

pub use config::{
    DEFAULT_BATCH, DEFAULT_UDP_MAX_PEERS, DEFAULT_WRITE_QUEUE_LIMIT, TransportConfig,
};
pub use error::{Result, TransportError};
pub use event::{
    CloseReason, Direction, LinkId, LinkKind, LinkStats, ListenerId, ListenerStats, SendStatus,
    TransportEvent,
};
pub use handle::{Command, TransportHandle};
pub use transport::Transport;
pub use url::{Url, UrlError};
