//! The embedded backend: an in-process registry shared by any number of handles.
//!
//! [`MemoryRegistry`] is the store (cheap to clone, all clones share it); every node takes its
//! own [`MemoryDiscovery`] handle, which implements [`Discovery`] with its own bounded event
//! queue. Everything happens inside the calling thread: a request changes the store and queues
//! the answers (and the watch events of every handle) before it returns.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::discovery::{Discovery, DiscoveryEvent, RefuseReason, RequestId};
use crate::queue::{EventQueue, watch_events};
use crate::record::NodeRecord;
use crate::selector::Selector;
use crate::validate::ValidationErrors;

/// Default number of events a handle keeps before it overflows.
pub const DEFAULT_EVENT_QUEUE_CAPACITY: usize = 1024;
/// Default number of watches one handle may have open.
pub const DEFAULT_MAX_WATCHES: usize = 64;

/// Limits of one handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandleConfig {
    /// Events kept before overflow (default [`DEFAULT_EVENT_QUEUE_CAPACITY`]).
    pub queue_capacity: usize,
    /// Open watches allowed (default [`DEFAULT_MAX_WATCHES`]).
    pub max_watches: usize,
}

impl Default for HandleConfig {
    fn default() -> Self {
        Self {
            queue_capacity: DEFAULT_EVENT_QUEUE_CAPACITY,
            max_watches: DEFAULT_MAX_WATCHES,
        }
    }
}

#[derive(Debug)]
struct Entry {
    record: NodeRecord,
    /// The handle that registered it; `None` for records put through the registry API or a
    /// static file.
    owner: Option<u64>,
}

#[derive(Debug)]
struct HandleState {
    config: HandleConfig,
    queue: EventQueue,
    watches: BTreeMap<RequestId, Selector>,
}

impl HandleState {
    fn push(&mut self, event: DiscoveryEvent) {
        self.queue.push(event, &mut self.watches);
    }
}

#[derive(Debug, Default)]
struct State {
    records: BTreeMap<String, Entry>,
    handles: BTreeMap<u64, HandleState>,
    next_handle: u64,
}

impl State {
    /// Tells every watch about a change of `name` from `old` to `new`.
    fn notify(&mut self, name: &str, old: Option<&NodeRecord>, new: Option<&NodeRecord>) {
        for h in self.handles.values_mut() {
            for e in watch_events(&h.watches, name, old, new) {
                h.push(e);
            }
        }
    }

    fn put(&mut self, record: NodeRecord, owner: Option<u64>) {
        let name = record.name.clone();
        let old = self.records.insert(
            name.clone(),
            Entry {
                record: record.clone(),
                owner,
            },
        );
        self.notify(&name, old.as_ref().map(|e| &e.record), Some(&record));
    }

    fn remove(&mut self, name: &str) -> bool {
        match self.records.remove(name) {
            Some(old) => {
                self.notify(name, Some(&old.record), None);
                true
            }
            None => false,
        }
    }

    fn list(&self, selector: &Selector) -> Vec<NodeRecord> {
        self.records
            .values()
            .filter(|e| selector.matches(&e.record))
            .map(|e| e.record.clone())
            .collect()
    }
}

/// The shared in-process store of node records.
#[derive(Debug, Clone, Default)]
pub struct MemoryRegistry {
    state: Arc<Mutex<State>>,
}

impl MemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No operation panics half-way through a change, so a poisoned state is still whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new handle with default limits.
    pub fn handle(&self) -> MemoryDiscovery {
        self.handle_with(HandleConfig::default())
    }

    /// A new handle with the given limits.
    pub fn handle_with(&self, config: HandleConfig) -> MemoryDiscovery {
        let mut s = self.lock();
        s.next_handle += 1;
        let id = s.next_handle;
        s.handles.insert(
            id,
            HandleState {
                config,
                queue: EventQueue::new(config.queue_capacity),
                watches: BTreeMap::new(),
            },
        );
        MemoryDiscovery {
            registry: self.clone(),
            id,
            next_request: 0,
        }
    }

    /// Inserts or replaces a record directly (API-driven discovery); watches see it. Such a
    /// record belongs to no handle, so handles cannot update or deregister it.
    pub fn put(&self, record: NodeRecord) -> Result<(), ValidationErrors> {
        record.validate()?;
        self.lock().put(record, None);
        Ok(())
    }

    /// Removes a record whoever registered it; returns whether it existed.
    pub fn remove(&self, name: &str) -> bool {
        self.lock().remove(name)
    }

    /// The record with this name.
    pub fn get(&self, name: &str) -> Option<NodeRecord> {
        self.lock().records.get(name).map(|e| e.record.clone())
    }

    /// Every record the selector matches, ordered by name.
    pub fn list(&self, selector: &Selector) -> Vec<NodeRecord> {
        self.lock().list(selector)
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether there is no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One node's handle on a [`MemoryRegistry`]. Dropping it removes the records it registered
/// (as an etcd lease revoke would) and ends its watches.
#[derive(Debug)]
pub struct MemoryDiscovery {
    registry: MemoryRegistry,
    id: u64,
    next_request: u64,
}

impl MemoryDiscovery {
    /// The registry this handle works on.
    pub fn registry(&self) -> &MemoryRegistry {
        &self.registry
    }

    fn next_id(&mut self) -> RequestId {
        self.next_request += 1;
        RequestId(self.next_request)
    }

    /// Runs `f` on the store and queues what it returns for this handle.
    fn answer(
        &mut self,
        f: impl FnOnce(&mut State, u64, RequestId) -> DiscoveryEvent,
    ) -> RequestId {
        let request = self.next_id();
        let mut s = self.registry.lock();
        let event = f(&mut s, self.id, request);
        if let Some(h) = s.handles.get_mut(&self.id) {
            h.push(event);
        }
        request
    }

    fn change_owned(&mut self, name: String, new: Option<NodeRecord>) -> RequestId {
        self.answer(|s, me, request| {
            if let Some(r) = &new {
                if let Err(e) = r.validate() {
                    return refused(request, RefuseReason::Invalid(e));
                }
            }
            match s.records.get(&name) {
                None => refused(request, RefuseReason::NotRegistered { name }),
                Some(e) if e.owner != Some(me) => refused(request, RefuseReason::NotOwner { name }),
                Some(_) => match new {
                    Some(r) => {
                        s.put(r, Some(me));
                        DiscoveryEvent::Updated { request, name }
                    }
                    None => {
                        s.remove(&name);
                        DiscoveryEvent::Deregistered { request, name }
                    }
                },
            }
        })
    }
}

fn refused(request: RequestId, reason: RefuseReason) -> DiscoveryEvent {
    DiscoveryEvent::Refused { request, reason }
}

impl Discovery for MemoryDiscovery {
    fn register(&mut self, record: NodeRecord) -> RequestId {
        self.answer(|s, me, request| {
            if let Err(e) = record.validate() {
                return refused(request, RefuseReason::Invalid(e));
            }
            let name = record.name.clone();
            if s.records.contains_key(&name) {
                return refused(request, RefuseReason::NameTaken { name });
            }
            s.put(record, Some(me));
            DiscoveryEvent::Registered { request, name }
        })
    }

    fn update(&mut self, record: NodeRecord) -> RequestId {
        let name = record.name.clone();
        self.change_owned(name, Some(record))
    }

    fn deregister(&mut self, name: &str) -> RequestId {
        self.change_owned(name.to_owned(), None)
    }

    fn get(&mut self, name: &str) -> RequestId {
        self.answer(|s, _, request| DiscoveryEvent::Record {
            request,
            record: s.records.get(name).map(|e| Box::new(e.record.clone())),
        })
    }

    fn list(&mut self, selector: &Selector) -> RequestId {
        self.answer(|s, _, request| match selector.validate() {
            Err(e) => refused(request, RefuseReason::InvalidSelector(e)),
            Ok(()) => DiscoveryEvent::List {
                request,
                records: s.list(selector),
            },
        })
    }

    fn watch(&mut self, selector: &Selector) -> RequestId {
        self.answer(|s, me, request| {
            if let Err(e) = selector.validate() {
                return refused(request, RefuseReason::InvalidSelector(e));
            }
            let records = s.list(selector);
            let Some(h) = s.handles.get_mut(&me) else {
                return refused(request, RefuseReason::NoSuchWatch { watch: request });
            };
            if h.watches.len() >= h.config.max_watches {
                return refused(
                    request,
                    RefuseReason::TooManyWatches {
                        max: h.config.max_watches,
                    },
                );
            }
            h.watches.insert(request, selector.clone());
            DiscoveryEvent::List { request, records }
        })
    }

    fn unwatch(&mut self, watch: RequestId) -> RequestId {
        self.answer(|s, me, request| {
            let removed = s
                .handles
                .get_mut(&me)
                .and_then(|h| h.watches.remove(&watch))
                .is_some();
            if removed {
                DiscoveryEvent::Unwatched { request, watch }
            } else {
                refused(request, RefuseReason::NoSuchWatch { watch })
            }
        })
    }

    fn poll_event(&mut self) -> Option<DiscoveryEvent> {
        self.registry.lock().handles.get_mut(&self.id)?.queue.pop()
    }
}

impl Drop for MemoryDiscovery {
    fn drop(&mut self) {
        let mut s = self.registry.lock();
        s.handles.remove(&self.id);
        let owned: Vec<String> = s
            .records
            .iter()
            .filter(|(_, e)| e.owner == Some(self.id))
            .map(|(n, _)| n.clone())
            .collect();
        for name in owned {
            s.remove(&name);
        }
    }
}
