//! The non-blocking `Discovery` trait: requests return an id at once, answers are polled.

use std::fmt;

use crate::record::NodeRecord;
use crate::selector::Selector;
use crate::validate::ValidationErrors;

/// Identifies one request of one handle; a watch keeps its request's id for its whole life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Why the registry said no to a request. The registry is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RefuseReason {
    /// `register`: another record already has this name (put-if-absent failed).
    #[error("name {name:?} is already registered")]
    NameTaken {
        /// The name.
        name: String,
    },
    /// `update`/`deregister`: no record has this name.
    #[error("name {name:?} is not registered")]
    NotRegistered {
        /// The name.
        name: String,
    },
    /// `update`/`deregister`: the record belongs to another handle (or to the static file).
    #[error("name {name:?} is registered by someone else")]
    NotOwner {
        /// The name.
        name: String,
    },
    /// The record breaks the validation rules.
    #[error("invalid record: {0}")]
    Invalid(ValidationErrors),
    /// The selector breaks the selector rules.
    #[error("invalid selector: {0}")]
    InvalidSelector(crate::selector::SelectorError),
    /// `watch`: the handle already has the most watches allowed.
    #[error("too many watches (limit {max})")]
    TooManyWatches {
        /// The limit.
        max: usize,
    },
    /// `unwatch`: no such watch on this handle.
    #[error("no watch {watch}")]
    NoSuchWatch {
        /// The watch id given.
        watch: RequestId,
    },
}

/// A failure of the backend itself (not a refusal of the request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The backend cannot reach its store; the request may be retried. Backends that retry
    /// by themselves (etcd) report this for requests they gave up on.
    #[error("discovery backend unavailable: {reason}")]
    Unavailable {
        /// Human-readable cause.
        reason: String,
    },
    /// The watch ended on the backend side; open a new one to keep following changes.
    #[error("watch {watch} cancelled: {reason}")]
    WatchCancelled {
        /// The watch.
        watch: RequestId,
        /// Human-readable cause.
        reason: String,
    },
}

/// Something a handle reports from [`Discovery::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscoveryEvent {
    /// `register` succeeded: the record is visible to everyone.
    Registered {
        /// The request.
        request: RequestId,
        /// The registered name.
        name: String,
    },
    /// `update` succeeded.
    Updated {
        /// The request.
        request: RequestId,
        /// The updated name.
        name: String,
    },
    /// `deregister` succeeded: the record is gone.
    Deregistered {
        /// The request.
        request: RequestId,
        /// The removed name.
        name: String,
    },
    /// The request was refused; nothing changed.
    Refused {
        /// The request.
        request: RequestId,
        /// Why.
        reason: RefuseReason,
    },
    /// Answer to `get`: the record, or `None` when no record has that name.
    Record {
        /// The request.
        request: RequestId,
        /// The record found.
        record: Option<Box<NodeRecord>>,
    },
    /// Answer to `list`, and the first event of a `watch` (with the watch's id): every record
    /// the selector matches at one point in time, ordered by name.
    List {
        /// The request or watch.
        request: RequestId,
        /// Matching records.
        records: Vec<NodeRecord>,
    },
    /// Watch: a record was created or changed and matches the selector.
    Put {
        /// The watch.
        watch: RequestId,
        /// The record as it is now.
        record: Box<NodeRecord>,
    },
    /// Watch: a record that matched was removed, or changed so it no longer matches.
    Delete {
        /// The watch.
        watch: RequestId,
        /// Its name.
        name: String,
    },
    /// `unwatch` succeeded: no more events for that watch.
    Unwatched {
        /// The request.
        request: RequestId,
        /// The watch that ended.
        watch: RequestId,
    },
    /// The backend failed a request (`request` set) or the handle as a whole.
    Error {
        /// The request that failed, if the failure belongs to one.
        request: Option<RequestId>,
        /// What failed.
        error: DiscoveryError,
    },
    /// The handle's event queue was full: `dropped` events (answers and watch changes) after
    /// this point in the order were lost, and every watch of the handle was cancelled. Re-list
    /// and re-watch to recover; requests made meanwhile may have lost their answer.
    Overflow {
        /// How many events were dropped.
        dropped: u64,
        /// The watches that were cancelled.
        cancelled_watches: Vec<RequestId>,
    },
}

/// A service-discovery backend as a sans-IO node sees it: every request returns at once with
/// an id, and its outcome (and, for watches, every later change) comes back through
/// [`poll_event`](Discovery::poll_event).
pub trait Discovery {
    /// Publishes a new record; refused with [`RefuseReason::NameTaken`] if the name exists
    /// (put-if-absent). The record stays until deregistered or the handle goes away.
    fn register(&mut self, record: NodeRecord) -> RequestId;
    /// Replaces a record this handle registered.
    fn update(&mut self, record: NodeRecord) -> RequestId;
    /// Removes a record this handle registered.
    fn deregister(&mut self, name: &str) -> RequestId;
    /// Looks one record up by name.
    fn get(&mut self, name: &str) -> RequestId;
    /// Lists every record the selector matches.
    fn list(&mut self, selector: &Selector) -> RequestId;
    /// Lists, then follows changes of, every record the selector matches. The returned id
    /// names the watch in its `List`, `Put` and `Delete` events.
    fn watch(&mut self, selector: &Selector) -> RequestId;
    /// Stops a watch.
    fn unwatch(&mut self, watch: RequestId) -> RequestId;
    /// The next event, or `None` when there is nothing to report now.
    fn poll_event(&mut self) -> Option<DiscoveryEvent>;
}
