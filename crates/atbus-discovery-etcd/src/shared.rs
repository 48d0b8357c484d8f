//! State shared between the handle (the node's thread) and the worker (the tokio thread): the
//! bounded event queue, the open watches and the record cache they are served from.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use atbus_discovery::{DiscoveryEvent, EventQueue, NodeRecord, RequestId, Selector, watch_events};

/// Counters of one handle, for observability and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EtcdStats {
    /// Clients built (the first connect and every rebuild after a transport failure).
    pub client_connects: u64,
    /// Leases granted.
    pub lease_grants: u64,
    /// Leases found lost (TTL 0 or "lease not found" on keep-alive).
    pub lease_losses: u64,
    /// Times the registered names were put again under a new lease.
    pub reregistrations: u64,
    /// Full lists of the record prefix that moved the cache forward (the first one, every
    /// re-list after compaction or cancel, and lists taken for new watches while the cache
    /// was behind).
    pub lists: u64,
    /// etcd watches opened (the first one and every reopen).
    pub watch_opens: u64,
    /// Watches cancelled by etcd because their start revision was compacted.
    pub compactions: u64,
    /// Watch events produced by diffing a re-list against the cache.
    pub synthetic_events: u64,
    /// RPC attempts that failed and were retried.
    pub retries: u64,
    /// The revision the cache reflects.
    pub revision: i64,
}

/// One cached record with the revision that last changed it.
#[derive(Debug, Clone)]
pub(crate) struct Cached {
    pub record: NodeRecord,
    pub mod_revision: i64,
}

pub(crate) struct Inner {
    queue: EventQueue,
    pub watches: BTreeMap<RequestId, Selector>,
    pub cache: BTreeMap<String, Cached>,
    synced: bool,
    pub watch_suspended: bool,
    pub stats: EtcdStats,
}

impl Inner {
    /// Queues an event with the shared overflow rule ([`EventQueue`]): once full, later
    /// events are counted, every watch is cancelled, and `Overflow` comes after what was
    /// queued.
    pub fn push(&mut self, event: DiscoveryEvent) {
        self.queue.push(event, &mut self.watches);
    }

    fn pending(&self) -> (usize, u64) {
        (self.queue.len(), self.queue.dropped())
    }

    /// Tells every watch that `name` changed from `old` to `new`; returns the events queued.
    pub fn notify(
        &mut self,
        name: &str,
        old: Option<&NodeRecord>,
        new: Option<&NodeRecord>,
    ) -> u64 {
        let events = watch_events(&self.watches, name, old, new);
        let n = events.len() as u64;
        for e in events {
            self.push(e);
        }
        n
    }

    /// Applies one change of the store to the cache and the watches.
    pub fn apply(&mut self, name: &str, new: Option<Cached>, revision: i64) {
        let old = match &new {
            Some(c) => self.cache.insert(name.to_owned(), c.clone()),
            None => self.cache.remove(name),
        };
        self.notify(
            name,
            old.as_ref().map(|c| &c.record),
            new.as_ref().map(|c| &c.record),
        );
        self.stats.revision = self.stats.revision.max(revision);
    }

    /// Replaces the cache by a full list taken at `revision`, telling the watches about every
    /// difference (synthetic events). A list older than the cache is ignored.
    pub fn apply_snapshot(&mut self, snapshot: BTreeMap<String, Cached>, revision: i64) {
        if self.synced && revision <= self.stats.revision {
            return;
        }
        let old = std::mem::take(&mut self.cache);
        let mut names: Vec<&String> = old.keys().chain(snapshot.keys()).collect();
        names.sort();
        names.dedup();
        let mut synthetic = 0;
        for name in names {
            let (o, n) = (old.get(name), snapshot.get(name));
            let same = match (o, n) {
                (Some(o), Some(n)) => o.mod_revision == n.mod_revision && o.record == n.record,
                (None, None) => true,
                _ => false,
            };
            if !same {
                synthetic += self.notify(name, o.map(|c| &c.record), n.map(|c| &c.record));
            }
        }
        self.cache = snapshot;
        self.stats.revision = revision;
        self.stats.lists += 1;
        self.stats.synthetic_events += synthetic;
        self.synced = true;
    }

    /// Cached records matching `selector`, ordered by name.
    pub fn matching(&self, selector: &Selector) -> Vec<NodeRecord> {
        self.cache
            .values()
            .filter(|c| selector.matches(&c.record))
            .map(|c| c.record.clone())
            .collect()
    }
}

type Waker = Arc<dyn Fn() + Send + Sync>;

/// The shared state plus the ways to wake whoever waits for events.
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    cond: Condvar,
    waker: Mutex<Option<Waker>>,
}

impl Shared {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                queue: EventQueue::new(capacity),
                watches: BTreeMap::new(),
                cache: BTreeMap::new(),
                synced: false,
                watch_suspended: false,
                stats: EtcdStats::default(),
            }),
            cond: Condvar::new(),
            waker: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No change panics half-way, so a poisoned state is still whole.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the state; if it queued events, wakes waiters and calls the waker.
    pub fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut inner = self.lock();
        let before = inner.pending();
        let r = f(&mut inner);
        let grew = inner.pending() != before;
        drop(inner);
        if grew {
            self.cond.notify_all();
            let waker = self
                .waker
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some(w) = waker {
                w();
            }
        }
        r
    }

    pub fn push(&self, event: DiscoveryEvent) {
        self.with(|i| i.push(event));
    }

    pub fn set_waker(&self, waker: Option<Waker>) {
        *self.waker.lock().unwrap_or_else(PoisonError::into_inner) = waker;
    }

    pub fn pop(&self) -> Option<DiscoveryEvent> {
        self.lock().queue.pop()
    }

    pub fn wait_pop(&self, timeout: Duration) -> Option<DiscoveryEvent> {
        let deadline = Instant::now() + timeout;
        let mut inner = self.lock();
        loop {
            if let Some(e) = inner.queue.pop() {
                return Some(e);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            inner = self
                .cond
                .wait_timeout(inner, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}
