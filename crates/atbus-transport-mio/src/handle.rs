//! The cross-thread handle and the inbox every other thread posts into.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::Sender;

use bytes::Bytes;
use mio::Waker;

use crate::error::{Result, TransportError};
use crate::event::{LinkId, ListenerId};
use crate::mem::{MemFlow, MemPeer};
use crate::transport::Transport;

/// A command run on the transport's thread inside `poll_events`.
pub type Command = Box<dyn FnOnce(&mut Transport) + Send>;

/// Everything that reaches the loop from outside: commands, resolver results, in-process traffic.
pub(crate) enum Inbox {
    Run(Command),
    Wake,
    Resolved {
        link: LinkId,
        result: io::Result<SocketAddr>,
    },
    MemConnect {
        listener: ListenerId,
        name: String,
        from: MemPeer,
        /// Connector → acceptor direction.
        up: Arc<MemFlow>,
        /// Acceptor → connector direction.
        down: Arc<MemFlow>,
    },
    MemAccepted {
        link: LinkId,
        peer: MemPeer,
    },
    MemRefused {
        link: LinkId,
        name: String,
    },
    MemData {
        link: LinkId,
        data: Bytes,
    },
    MemWritable {
        link: LinkId,
    },
    MemClosed {
        link: LinkId,
    },
}

/// A clonable, `Send` handle that posts commands to a [`Transport`] from any thread and wakes its
/// loop (a channel plus a `mio::Waker`).
///
/// Each posted command runs on the loop's thread during the next `poll_events`, which then reports
/// [`TransportEvent::Woken`](crate::TransportEvent::Woken).
#[derive(Clone)]
pub struct TransportHandle {
    pub(crate) tx: Sender<Inbox>,
    pub(crate) waker: Arc<Waker>,
}

impl TransportHandle {
    /// Runs `command` on the transport's thread; fails with [`TransportError::Gone`] once the
    /// transport is dropped.
    pub fn post<F>(&self, command: F) -> Result<()>
    where
        F: FnOnce(&mut Transport) + Send + 'static,
    {
        self.send(Inbox::Run(Box::new(command)))
    }

    /// Wakes the loop without a command (it reports `Woken`).
    pub fn wake(&self) -> Result<()> {
        self.send(Inbox::Wake)
    }

    pub(crate) fn send(&self, msg: Inbox) -> Result<()> {
        self.tx.send(msg).map_err(|_| TransportError::Gone)?;
        self.waker
            .wake()
            .map_err(|source| TransportError::io("wake", source))
    }
}

impl fmt::Debug for TransportHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportHandle").finish_non_exhaustive()
    }
}
