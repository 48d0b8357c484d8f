//! The in-process transport: a process-global registry of `mem://` names, and flow accounting.
//!
//! Each transport has one inbox (channel + waker). An in-process link is a pair of link ids, one
//! per transport (both may be the same transport); sending posts the chunk into the peer's inbox.
//! Backpressure is a shared byte counter per direction: the sender adds, the receiver subtracts
//! when it delivers the chunk to its driver, and posts `MemWritable` back when it falls to half the
//! limit after the sender was refused.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::event::{LinkId, ListenerId};
use crate::handle::{Inbox, TransportHandle};

/// Where to post messages for the other end of an in-process link.
#[derive(Clone)]
pub(crate) struct MemPeer {
    pub(crate) handle: TransportHandle,
    pub(crate) link: LinkId,
}

impl MemPeer {
    /// Posts to the peer's inbox; false when the peer transport is gone.
    pub(crate) fn post(&self, msg: Inbox) -> bool {
        self.handle.send(msg).is_ok()
    }
}

/// Byte accounting of one direction of an in-process link.
#[derive(Default)]
pub(crate) struct MemFlow {
    in_flight: AtomicUsize,
    want_writable: AtomicBool,
}

impl MemFlow {
    /// Reserves room for `len` bytes, or marks the sender as waiting for `Writable`.
    pub(crate) fn try_reserve(&self, len: usize, limit: usize) -> bool {
        let fits = |cur: usize| cur == 0 || cur.saturating_add(len) <= limit;
        if !fits(self.in_flight.load(Ordering::SeqCst)) {
            self.want_writable.store(true, Ordering::SeqCst);
            // The receiver may have drained between the check and the flag; look again.
            if !fits(self.in_flight.load(Ordering::SeqCst)) {
                return false;
            }
        }
        self.in_flight.fetch_add(len, Ordering::SeqCst);
        true
    }

    /// Releases `len` delivered bytes; true when the sender must be told it is writable.
    pub(crate) fn release(&self, len: usize, limit: usize) -> bool {
        let before = self.in_flight.fetch_sub(len, Ordering::SeqCst);
        before.saturating_sub(len) <= limit / 2 && self.want_writable.swap(false, Ordering::SeqCst)
    }

    /// Bytes in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// Our end of an in-process link.
pub(crate) struct MemLink {
    /// `None` until the acceptor answered (outbound links).
    pub(crate) peer: Option<MemPeer>,
    pub(crate) tx_flow: Arc<MemFlow>,
    pub(crate) rx_flow: Arc<MemFlow>,
    /// Chunks received while reading was paused, delivered on resume.
    pub(crate) rx_pending: VecDeque<Bytes>,
    /// The peer closed while chunks were still pending here.
    pub(crate) peer_closed: bool,
}

/// A registered `mem://` listener.
pub(crate) struct MemEndpoint {
    pub(crate) handle: TransportHandle,
    pub(crate) listener: ListenerId,
    pub(crate) owner: u64,
}

static REGISTRY: Mutex<BTreeMap<String, MemEndpoint>> = Mutex::new(BTreeMap::new());

pub(crate) fn registry() -> MutexGuard<'static, BTreeMap<String, MemEndpoint>> {
    // A panic while holding the lock cannot leave the map half-updated: take it anyway.
    REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Posts to `peer`, ignoring a gone receiver (used on drop paths).
pub(crate) fn post_quietly(peer: &MemPeer, msg: Inbox) {
    let _ = peer.post(msg);
}
