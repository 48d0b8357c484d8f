//! The tokio side: one task answers requests in order, one keeps the lease alive (re-granting
//! and re-putting after loss), one keeps the record cache in step with etcd (list, then watch
//! from the next revision; re-list and diff after compaction or cancel).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use atbus_discovery::{
    DiscoveryError, DiscoveryEvent, NodeRecord, RefuseReason, RequestId, Selector,
};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, GetResponse, KeyValue,
    PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchOptions, WatchResponse,
};
use tokio::sync::{Mutex as AsyncMutex, Notify, mpsc, watch};
use tokio::time::{Instant, sleep, timeout};
use tracing::{debug, info, warn};

use crate::config::EtcdConfig;
use crate::shared::{Cached, Shared};

/// Largest gRPC message accepted from etcd (lists of many records).
const MAX_DECODING_MESSAGE_SIZE: usize = 256 << 20;

/// A request from the handle.
pub(crate) enum Command {
    Register(RequestId, NodeRecord),
    Update(RequestId, NodeRecord),
    Deregister(RequestId, String),
    Get(RequestId, String),
    List(RequestId, Selector),
    Watch(RequestId, Selector),
    Unwatch(RequestId, RequestId),
}

/// How an etcd call failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Transport trouble or a timeout: retry (with a fresh client).
    Retry(String),
    /// etcd refused the call itself: retrying does not help.
    Fatal(String),
    /// The lease given no longer exists.
    LeaseNotFound,
}

impl Failure {
    fn message(self) -> String {
        match self {
            Failure::Retry(m) | Failure::Fatal(m) => m,
            Failure::LeaseNotFound => "etcd lease not found".to_owned(),
        }
    }
}

fn classify(e: &etcd_client::Error) -> Failure {
    use etcd_client::Error as E;
    // etcd says "requested lease not found" as a gRPC status on unary calls and the client
    // as a LeaseKeepAliveError on the keep-alive stream.
    if e.to_string().contains("lease not found") {
        return Failure::LeaseNotFound;
    }
    match e {
        E::GRpcStatus(s) => {
            // InvalidArgument, NotFound, AlreadyExists, PermissionDenied, FailedPrecondition,
            // OutOfRange, Unimplemented: etcd said no; anything else may pass on retry.
            match s.code() as i32 {
                3 | 5 | 6 | 7 | 9 | 11 | 12 => Failure::Fatal(e.to_string()),
                _ => Failure::Retry(e.to_string()),
            }
        }
        E::InvalidArgs(_)
        | E::InvalidUri(_)
        | E::Utf8Error(_)
        | E::InvalidMetadataValue(_)
        | E::EndpointsNotManaged => Failure::Fatal(e.to_string()),
        _ => Failure::Retry(e.to_string()),
    }
}

/// Whether a failure shows a TLS handshake refused by either side (an untrusted server
/// certificate, or etcd's alert about the client's). Under TLS 1.3 etcd rejects a client
/// certificate after the client has finished its handshake, so the same refusal often shows
/// only as "connection closed" or "broken pipe"; [`Ctx::retry`] then reports the clearer
/// message an earlier attempt saw.
fn tls_refusal(message: &str) -> bool {
    message.contains("certificate")
        || message.contains("Certificate")
        || message.contains("fatal alert")
}

/// What a compare-and-put/delete transaction found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The compare held and the operation ran.
    Done,
    /// The compare failed and the key does not exist.
    Absent,
    /// The compare failed and the key exists, attached to this lease (0: none).
    Held(i64),
}

/// The condition of a compare-and-put.
#[derive(Debug, Clone, Copy)]
enum Cond {
    /// The key does not exist (create_revision == 0).
    Absent,
    /// The key is attached to this lease.
    LeaseIs(i64),
}

fn txn_outcome(resp: &TxnResponse) -> Outcome {
    if resp.succeeded() {
        return Outcome::Done;
    }
    for op in resp.op_responses() {
        if let TxnOpResponse::Get(g) = op {
            return match g.kvs().first() {
                Some(kv) => Outcome::Held(kv.lease()),
                None => Outcome::Absent,
            };
        }
    }
    Outcome::Absent
}

fn compare(key: &str, cond: Cond) -> Compare {
    match cond {
        Cond::Absent => Compare::create_revision(key, CompareOp::Equal, 0),
        Cond::LeaseIs(l) => Compare::lease(key, CompareOp::Equal, l),
    }
}

async fn cas_put(
    mut c: Client,
    key: String,
    value: String,
    lease: i64,
    cond: Cond,
) -> Result<Outcome, etcd_client::Error> {
    let txn = Txn::new()
        .when([compare(&key, cond)])
        .and_then([TxnOp::put(
            key.as_str(),
            value,
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(key.as_str(), None)]);
    Ok(txn_outcome(&c.txn(txn).await?))
}

async fn cas_delete(mut c: Client, key: String, lease: i64) -> Result<Outcome, etcd_client::Error> {
    let txn = Txn::new()
        .when([compare(&key, Cond::LeaseIs(lease))])
        .and_then([TxnOp::delete(key.as_str(), None)])
        .or_else([TxnOp::get(key.as_str(), None)]);
    Ok(txn_outcome(&c.txn(txn).await?))
}

async fn get_key(c: Client, key: String) -> Result<GetResponse, etcd_client::Error> {
    c.kv_client()
        .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE)
        .get(key, None)
        .await
}

async fn get_prefix(c: Client, prefix: String) -> Result<GetResponse, etcd_client::Error> {
    c.kv_client()
        .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE)
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
}

/// The record name of a key under `prefix`.
fn key_name<'a>(prefix: &str, kv: &'a KeyValue) -> Option<&'a str> {
    std::str::from_utf8(kv.key()).ok()?.strip_prefix(prefix)
}

/// Decodes a stored record; records that are not valid JSON, fail validation or whose name
/// differs from their key are invisible (logged, treated as absent).
fn decode(name: &str, kv: &KeyValue) -> Option<Cached> {
    match NodeRecord::from_json(kv.value()) {
        Ok(record) if record.name == name => Some(Cached {
            record,
            mod_revision: kv.mod_revision(),
        }),
        Ok(record) => {
            warn!(key = name, found = %record.name, "etcd record name differs from its key; ignored");
            None
        }
        Err(e) => {
            warn!(key = name, error = %e, "invalid record in etcd; ignored");
            None
        }
    }
}

fn refused(request: RequestId, reason: RefuseReason) -> DiscoveryEvent {
    DiscoveryEvent::Refused { request, reason }
}

/// The JSON to store for `record`, or the answer to a request that brings an invalid one.
fn record_json(request: RequestId, record: &NodeRecord) -> Result<String, DiscoveryEvent> {
    if let Err(e) = record.validate() {
        return Err(refused(request, RefuseReason::Invalid(e)));
    }
    record
        .to_json()
        .map_err(|e| unavailable(Some(request), format!("cannot encode record: {e}")))
}

fn unavailable(request: Option<RequestId>, reason: impl Into<String>) -> DiscoveryEvent {
    DiscoveryEvent::Error {
        request,
        error: DiscoveryError::Unavailable {
            reason: reason.into(),
        },
    }
}

struct ConnState {
    generation: u64,
    client: Option<Client>,
}

/// The lease and the names registered under it.
struct LeaseState {
    /// The live lease, if any.
    id: Option<i64>,
    /// The last lease that was live (its keys may still exist until it expires).
    previous: Option<i64>,
    /// Registered names and the JSON last put for each.
    owned: BTreeMap<String, String>,
    /// Some owned names may be missing from etcd (the lease was lost): put them again.
    dirty: bool,
}

enum KeepAlive {
    /// The lease to keep alive changed; start over with the new one.
    Changed,
    /// etcd says the lease is gone.
    Lost,
    /// The stream broke; the lease may still be alive.
    Broken(String),
}

/// Everything the tasks share.
pub(crate) struct Ctx {
    config: EtcdConfig,
    options: ConnectOptions,
    pub(crate) shared: Arc<Shared>,
    nodes_prefix: String,
    conn: AsyncMutex<ConnState>,
    lease: AsyncMutex<LeaseState>,
    lease_changed: Notify,
    /// Mirror of the live lease id (0: none) for shutdown, which must not wait for the lock.
    current_lease: AtomicI64,
    jitter: AtomicU64,
}

impl Ctx {
    pub(crate) fn new(config: EtcdConfig, options: ConnectOptions, shared: Arc<Shared>) -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        Self {
            nodes_prefix: config.nodes_prefix(),
            config,
            options,
            shared,
            conn: AsyncMutex::new(ConnState {
                generation: 0,
                client: None,
            }),
            lease: AsyncMutex::new(LeaseState {
                id: None,
                previous: None,
                owned: BTreeMap::new(),
                dirty: false,
            }),
            lease_changed: Notify::new(),
            current_lease: AtomicI64::new(0),
            jitter: AtomicU64::new(h.finish()),
        }
    }

    /// A pseudo-random `u64` for backoff jitter (splitmix64).
    fn random(&self) -> u64 {
        let mut z = self
            .jitter
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    async fn backoff(&self, attempt: u32) {
        sleep(self.config.backoff.delay(attempt, self.random())).await;
    }

    /// The current client, connecting first if there is none.
    async fn client(&self) -> Result<(u64, Client), Failure> {
        let mut st = self.conn.lock().await;
        if let Some(c) = &st.client {
            return Ok((st.generation, c.clone()));
        }
        let connect = Client::connect(self.config.endpoints.clone(), Some(self.options.clone()));
        match timeout(self.config.rpc_timeout, connect).await {
            Ok(Ok(c)) => {
                st.generation += 1;
                st.client = Some(c.clone());
                self.shared.with(|i| i.stats.client_connects += 1);
                debug!(generation = st.generation, "etcd client built");
                Ok((st.generation, c))
            }
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(Failure::Retry("connecting to etcd timed out".to_owned())),
        }
    }

    /// Drops the client of `generation` so that the next call builds a new one.
    async fn invalidate(&self, generation: u64) {
        let mut st = self.conn.lock().await;
        if st.generation == generation {
            st.client = None;
        }
    }

    /// One call with the RPC time limit; a retryable failure drops the client.
    async fn attempt<T, Fut>(&self, f: impl FnOnce(Client) -> Fut) -> Result<T, Failure>
    where
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let (generation, client) = self.client().await?;
        let failure = match timeout(self.config.rpc_timeout, f(client)).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => classify(&e),
            Err(_) => Failure::Retry("etcd did not answer in time".to_owned()),
        };
        if matches!(failure, Failure::Retry(_)) {
            self.invalidate(generation).await;
        }
        Err(failure)
    }

    /// Retries `f` with backoff while it fails with a retryable error, until `deadline`
    /// (`None`: for ever).
    async fn retry<T, Fut>(
        &self,
        deadline: Option<Instant>,
        mut f: impl FnMut(Client) -> Fut,
    ) -> Result<T, Failure>
    where
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut attempt = 0;
        let mut refusal: Option<String> = None;
        loop {
            match self.attempt(&mut f).await {
                Err(Failure::Retry(m)) => {
                    self.shared.with(|i| i.stats.retries += 1);
                    let delay = self.config.backoff.delay(attempt, self.random());
                    if deadline.is_some_and(|d| Instant::now() + delay >= d) {
                        return Err(Failure::Retry(match refusal {
                            Some(r) if !tls_refusal(&m) => format!("{m} (earlier: {r})"),
                            _ => m,
                        }));
                    }
                    if tls_refusal(&m) {
                        refusal = Some(m.clone());
                    }
                    debug!(error = %m, ?delay, "etcd call failed; retrying");
                    sleep(delay).await;
                    attempt = attempt.saturating_add(1);
                }
                r => return r,
            }
        }
    }

    fn set_lease(&self, st: &mut LeaseState, id: Option<i64>) {
        if id.is_none() && st.id.is_some() {
            st.previous = st.id;
            st.dirty = !st.owned.is_empty();
            self.shared.with(|i| i.stats.lease_losses += 1);
        }
        st.id = id;
        self.current_lease.store(id.unwrap_or(0), Ordering::SeqCst);
        self.lease_changed.notify_one();
    }

    /// The live lease, granting one if there is none, and putting every owned name under it
    /// when some may be missing (after a lease loss). On failure the state stays marked so
    /// that the lease task finishes the job.
    async fn ensure_lease(
        &self,
        st: &mut LeaseState,
        deadline: Option<Instant>,
    ) -> Result<i64, Failure> {
        let ttl = self.config.lease_ttl_secs();
        let mut expired = 0u32;
        loop {
            let id = match st.id {
                Some(id) => id,
                None => {
                    let granted = self
                        .retry(
                            deadline,
                            |mut c| async move { c.lease_grant(ttl, None).await },
                        )
                        .await?;
                    let id = granted.id();
                    self.shared.with(|i| i.stats.lease_grants += 1);
                    info!(lease = id, ttl = granted.ttl(), "etcd lease granted");
                    st.dirty = !st.owned.is_empty();
                    self.set_lease(st, Some(id));
                    id
                }
            };
            if !st.dirty {
                return Ok(id);
            }
            match self.put_all(st, id, deadline).await {
                Ok(()) => {
                    st.dirty = false;
                    self.shared.with(|i| i.stats.reregistrations += 1);
                    info!(names = st.owned.len(), "names registered again");
                    return Ok(id);
                }
                // The new lease died already (etcd froze again): grant another.
                Err(Failure::LeaseNotFound) => {
                    self.set_lease(st, None);
                    self.backoff(expired).await;
                    expired = expired.saturating_add(1);
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(Failure::LeaseNotFound);
                    }
                }
                Err(f) => {
                    // Wake the lease task: it retries for ever.
                    self.lease_changed.notify_one();
                    return Err(f);
                }
            }
        }
    }

    /// Puts every owned name under the new lease `id`; names that someone else took while
    /// the lease was lost are dropped with an error event.
    async fn put_all(
        &self,
        st: &mut LeaseState,
        id: i64,
        deadline: Option<Instant>,
    ) -> Result<(), Failure> {
        let owned: Vec<(String, String)> = st
            .owned
            .iter()
            .map(|(n, j)| (n.clone(), j.clone()))
            .collect();
        for (name, json) in owned {
            if !self
                .put_owned(&name, &json, id, st.previous, deadline)
                .await?
            {
                st.owned.remove(&name);
                warn!(
                    name,
                    "registered name taken by someone else while the lease was lost"
                );
                self.shared.push(unavailable(
                    None,
                    format!("registration of {name:?} lost: the name was taken while the etcd lease was lost"),
                ));
            }
        }
        Ok(())
    }

    /// Puts one owned record under `lease`: if absent, or still attached to `lease` or
    /// `previous`. Returns false when someone else holds the name.
    async fn put_owned(
        &self,
        name: &str,
        json: &str,
        lease: i64,
        previous: Option<i64>,
        deadline: Option<Instant>,
    ) -> Result<bool, Failure> {
        let key = self.config.node_key(name);
        let mut cond = Cond::Absent;
        for _ in 0..4 {
            let outcome = self
                .retry(deadline, |c| {
                    cas_put(c, key.clone(), json.to_owned(), lease, cond)
                })
                .await?;
            match outcome {
                Outcome::Done => return Ok(true),
                Outcome::Held(l) if l == lease || Some(l) == previous => cond = Cond::LeaseIs(l),
                Outcome::Held(_) => return Ok(false),
                Outcome::Absent => cond = Cond::Absent,
            }
        }
        Err(Failure::Retry(format!("record {name:?} kept changing")))
    }

    // ---- requests ---------------------------------------------------------------------

    async fn lock_lease(
        &self,
        request: RequestId,
        deadline: Instant,
    ) -> Result<tokio::sync::MutexGuard<'_, LeaseState>, DiscoveryEvent> {
        tokio::time::timeout_at(deadline, self.lease.lock())
            .await
            .map_err(|_| unavailable(Some(request), "etcd lease is being re-established"))
    }

    /// The lease state for a request on a name this handle must already hold; otherwise the
    /// answer to give (`NotRegistered` or `NotOwner`).
    async fn lock_owned(
        &self,
        request: RequestId,
        name: &str,
        deadline: Instant,
    ) -> Result<tokio::sync::MutexGuard<'_, LeaseState>, DiscoveryEvent> {
        let st = self.lock_lease(request, deadline).await?;
        if st.owned.contains_key(name) {
            return Ok(st);
        }
        drop(st);
        Err(self.not_mine(request, name.to_owned(), deadline).await)
    }

    /// The live lease, granted (and owned names put again) when needed.
    async fn live_lease(
        &self,
        st: &mut LeaseState,
        request: RequestId,
        deadline: Instant,
    ) -> Result<i64, DiscoveryEvent> {
        self.ensure_lease(st, Some(deadline))
            .await
            .map_err(|f| unavailable(Some(request), f.message()))
    }

    /// [`Self::retry`] until `deadline`, a final failure turned into the request's answer.
    async fn retry_request<T, Fut>(
        &self,
        request: RequestId,
        deadline: Instant,
        f: impl FnMut(Client) -> Fut,
    ) -> Result<T, DiscoveryEvent>
    where
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.retry(Some(deadline), f)
            .await
            .map_err(|f| unavailable(Some(request), f.message()))
    }

    /// `json` is the record's checked JSON form ([`record_json`]).
    async fn register(
        &self,
        request: RequestId,
        name: String,
        json: String,
        deadline: Instant,
    ) -> DiscoveryEvent {
        let mut st = match self.lock_lease(request, deadline).await {
            Ok(st) => st,
            Err(e) => return e,
        };
        if st.owned.contains_key(&name) {
            return refused(request, RefuseReason::NameTaken { name });
        }
        let key = self.config.node_key(&name);
        for _ in 0..3 {
            let id = match self.live_lease(&mut st, request, deadline).await {
                Ok(id) => id,
                Err(e) => return e,
            };
            let put = self
                .retry(Some(deadline), |c| {
                    cas_put(c, key.clone(), json.clone(), id, Cond::Absent)
                })
                .await;
            match put {
                // Held by our own lease: an earlier attempt went through but its answer was lost.
                Ok(Outcome::Done) => {}
                Ok(Outcome::Held(l)) if l == id => {}
                // The compare failed yet the key is absent: it changed under us; try again.
                Ok(Outcome::Absent) => continue,
                Ok(Outcome::Held(_)) => return refused(request, RefuseReason::NameTaken { name }),
                Err(Failure::LeaseNotFound) => {
                    self.set_lease(&mut st, None);
                    continue;
                }
                Err(f) => return unavailable(Some(request), f.message()),
            }
            st.owned.insert(name.clone(), json);
            return DiscoveryEvent::Registered { request, name };
        }
        unavailable(Some(request), "etcd lease kept expiring")
    }

    /// The answer to `update`/`deregister` of a name this handle does not hold.
    async fn not_mine(
        &self,
        request: RequestId,
        name: String,
        deadline: Instant,
    ) -> DiscoveryEvent {
        let key = self.config.node_key(&name);
        match self
            .retry_request(request, deadline, |c| get_key(c, key.clone()))
            .await
        {
            Ok(r) if r.kvs().is_empty() => refused(request, RefuseReason::NotRegistered { name }),
            Ok(_) => refused(request, RefuseReason::NotOwner { name }),
            Err(e) => e,
        }
    }

    /// `json` is the record's checked JSON form ([`record_json`]).
    async fn update(
        &self,
        request: RequestId,
        name: String,
        json: String,
        deadline: Instant,
    ) -> DiscoveryEvent {
        let mut st = match self.lock_owned(request, &name, deadline).await {
            Ok(st) => st,
            Err(e) => return e,
        };
        for _ in 0..3 {
            let id = match self.live_lease(&mut st, request, deadline).await {
                Ok(id) => id,
                Err(e) => return e,
            };
            match self
                .put_owned(&name, &json, id, st.previous, Some(deadline))
                .await
            {
                Ok(true) => {
                    st.owned.insert(name.clone(), json);
                    return DiscoveryEvent::Updated { request, name };
                }
                Ok(false) => {
                    st.owned.remove(&name);
                    return refused(request, RefuseReason::NotOwner { name });
                }
                Err(Failure::LeaseNotFound) => self.set_lease(&mut st, None),
                Err(f) => return unavailable(Some(request), f.message()),
            }
        }
        unavailable(Some(request), "etcd lease kept expiring")
    }

    async fn deregister(
        &self,
        request: RequestId,
        name: String,
        deadline: Instant,
    ) -> DiscoveryEvent {
        let mut st = match self.lock_owned(request, &name, deadline).await {
            Ok(st) => st,
            Err(e) => return e,
        };
        let key = self.config.node_key(&name);
        for lease in [st.id, st.previous].into_iter().flatten() {
            match self
                .retry_request(request, deadline, |c| cas_delete(c, key.clone(), lease))
                .await
            {
                Ok(Outcome::Done) => break,
                Ok(_) => {}
                Err(e) => return e,
            }
        }
        st.owned.remove(&name);
        DiscoveryEvent::Deregistered { request, name }
    }

    async fn get(&self, request: RequestId, name: String, deadline: Instant) -> DiscoveryEvent {
        let key = self.config.node_key(&name);
        let r = match self
            .retry_request(request, deadline, |c| get_key(c, key.clone()))
            .await
        {
            Ok(r) => r,
            Err(e) => return e,
        };
        let record = r.kvs().first().and_then(|kv| decode(&name, kv));
        DiscoveryEvent::Record {
            request,
            record: record.map(|c| Box::new(c.record)),
        }
    }

    async fn list(
        &self,
        request: RequestId,
        selector: Selector,
        deadline: Instant,
    ) -> DiscoveryEvent {
        if let Err(e) = selector.validate() {
            return refused(request, RefuseReason::InvalidSelector(e));
        }
        let prefix = self.nodes_prefix.clone();
        match self
            .retry_request(request, deadline, |c| get_prefix(c, prefix.clone()))
            .await
        {
            Ok(r) => {
                let mut records: Vec<NodeRecord> =
                    self.snapshot(&r).into_values().map(|c| c.record).collect();
                records.retain(|r| selector.matches(r));
                DiscoveryEvent::List { request, records }
            }
            Err(e) => e,
        }
    }

    /// Opens a watch. Its `List` comes from the cache at the moment the watch joins it, so the
    /// later `Put`/`Delete`s continue exactly from there; the cache is first brought up to a
    /// fresh list of etcd when it is behind, so the `List` holds every change made before
    /// the request.
    async fn watch(&self, request: RequestId, selector: Selector, deadline: Instant) {
        if let Err(e) = selector.validate() {
            return self
                .shared
                .push(refused(request, RefuseReason::InvalidSelector(e)));
        }
        let max = self.config.max_watches;
        if self.shared.with(|i| i.watches.len() >= max) {
            return self
                .shared
                .push(refused(request, RefuseReason::TooManyWatches { max }));
        }
        let prefix = self.nodes_prefix.clone();
        let listed = match self
            .retry_request(request, deadline, |c| get_prefix(c, prefix.clone()))
            .await
        {
            Ok(r) => r,
            Err(e) => return self.shared.push(e),
        };
        let revision = listed.header().map_or(0, |h| h.revision());
        let snapshot = self.snapshot(&listed);
        self.shared.with(|i| {
            if i.watches.len() >= max {
                return i.push(refused(request, RefuseReason::TooManyWatches { max }));
            }
            i.apply_snapshot(snapshot, revision);
            i.watches.insert(request, selector.clone());
            let records = i.matching(&selector);
            i.push(DiscoveryEvent::List { request, records });
        });
    }

    fn unwatch(&self, request: RequestId, watch: RequestId) {
        self.shared.with(|i| {
            let event = if i.watches.remove(&watch).is_some() {
                DiscoveryEvent::Unwatched { request, watch }
            } else {
                refused(request, RefuseReason::NoSuchWatch { watch })
            };
            i.push(event);
        });
    }

    fn snapshot(&self, r: &GetResponse) -> BTreeMap<String, Cached> {
        r.kvs()
            .iter()
            .filter_map(|kv| {
                let name = key_name(&self.nodes_prefix, kv)?;
                decode(name, kv).map(|c| (name.to_owned(), c))
            })
            .collect()
    }

    // ---- lease ------------------------------------------------------------------------

    async fn keep_alive(&self, id: i64) -> KeepAlive {
        let ttl = Duration::from_secs(u64::try_from(self.config.lease_ttl_secs()).unwrap_or(1));
        let interval = (ttl / 3).max(Duration::from_millis(100));
        let wait = interval.max(Duration::from_millis(500));
        let (generation, mut client) = match self.client().await {
            Ok(c) => c,
            Err(f) => return KeepAlive::Broken(f.message()),
        };
        let broken = |m: String| async move {
            self.invalidate(generation).await;
            KeepAlive::Broken(m)
        };
        let (mut keeper, mut stream) =
            match timeout(self.config.rpc_timeout, client.lease_keep_alive(id)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    return match classify(&e) {
                        Failure::LeaseNotFound => KeepAlive::Lost,
                        f => broken(f.message()).await,
                    };
                }
                Err(_) => return broken("opening keep-alive timed out".to_owned()).await,
            };
        loop {
            if self.current_lease.load(Ordering::SeqCst) != id {
                return KeepAlive::Changed;
            }
            if let Err(e) = keeper.keep_alive().await {
                return broken(e.to_string()).await;
            }
            match timeout(wait, stream.message()).await {
                Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                Ok(Ok(Some(_))) => return KeepAlive::Lost,
                Ok(Ok(None)) => return broken("keep-alive stream ended".to_owned()).await,
                Ok(Err(e)) => {
                    return match classify(&e) {
                        Failure::LeaseNotFound => KeepAlive::Lost,
                        f => broken(f.message()).await,
                    };
                }
                Err(_) => return broken("no keep-alive answer in time".to_owned()).await,
            }
            tokio::select! {
                _ = sleep(interval) => {}
                _ = self.lease_changed.notified() => return KeepAlive::Changed,
            }
        }
    }

    // ---- watch ------------------------------------------------------------------------

    fn apply_watch_response(&self, resp: &WatchResponse) {
        let events = resp.events();
        if events.is_empty() {
            // A progress notification: everything up to the header's revision was sent.
            if !resp.created() {
                if let Some(h) = resp.header() {
                    self.shared
                        .with(|i| i.stats.revision = i.stats.revision.max(h.revision()));
                }
            }
            return;
        }
        self.shared.with(|i| {
            for ev in events {
                let Some(kv) = ev.kv() else { continue };
                let Some(name) = key_name(&self.nodes_prefix, kv) else {
                    continue;
                };
                // Already in the cache through a newer list.
                if kv.mod_revision() <= i.stats.revision {
                    continue;
                }
                let new = match ev.event_type() {
                    EventType::Put => decode(name, kv),
                    EventType::Delete => None,
                };
                i.apply(name, new, kv.mod_revision());
            }
        });
    }

    /// Waits while the test hook holds the watch suspended; false when the handle is gone.
    async fn wait_unsuspended(&self, suspend: &mut watch::Receiver<bool>) -> bool {
        if !*suspend.borrow() {
            return true;
        }
        self.shared.with(|i| i.watch_suspended = true);
        while *suspend.borrow() {
            if suspend.changed().await.is_err() {
                return false;
            }
        }
        self.shared.with(|i| i.watch_suspended = false);
        true
    }
}

/// Answers requests one after another, in the order they were made.
pub(crate) async fn run_requests(ctx: Arc<Ctx>, mut rx: mpsc::UnboundedReceiver<Command>) {
    while let Some(cmd) = rx.recv().await {
        let deadline = Instant::now() + ctx.config.request_timeout;
        let event = match cmd {
            Command::Register(r, rec) => match record_json(r, &rec) {
                Ok(json) => ctx.register(r, rec.name, json, deadline).await,
                Err(refusal) => refusal,
            },
            Command::Update(r, rec) => match record_json(r, &rec) {
                Ok(json) => ctx.update(r, rec.name, json, deadline).await,
                Err(refusal) => refusal,
            },
            Command::Deregister(r, name) => ctx.deregister(r, name, deadline).await,
            Command::Get(r, name) => ctx.get(r, name, deadline).await,
            Command::List(r, sel) => ctx.list(r, sel, deadline).await,
            Command::Watch(r, sel) => {
                ctx.watch(r, sel, deadline).await;
                continue;
            }
            Command::Unwatch(r, w) => {
                ctx.unwatch(r, w);
                continue;
            }
        };
        ctx.shared.push(event);
    }
}

/// Keeps the lease alive; after loss, grants a new one and puts every name again, for ever.
pub(crate) async fn run_lease(ctx: Arc<Ctx>) {
    let mut attempt = 0u32;
    loop {
        // After a loss, or when a request could not finish putting the names back.
        let pending = ctx
            .lease
            .try_lock()
            .is_ok_and(|st| st.dirty || (st.id.is_none() && !st.owned.is_empty()));
        if pending {
            let mut st = ctx.lease.lock().await;
            // With no deadline this returns only once done, or on an error etcd itself gave.
            if let Err(f) = ctx.ensure_lease(&mut st, None).await {
                warn!(error = %f.message(), "re-registration failed; retrying");
                drop(st);
                ctx.backoff(attempt).await;
                attempt = attempt.saturating_add(1);
            }
            continue;
        }
        let id = ctx.current_lease.load(Ordering::SeqCst);
        if id == 0 {
            ctx.lease_changed.notified().await;
            continue;
        }
        match ctx.keep_alive(id).await {
            KeepAlive::Changed => attempt = 0,
            KeepAlive::Lost => {
                warn!(lease = id, "etcd lease lost; registering again");
                let mut st = ctx.lease.lock().await;
                if st.id == Some(id) {
                    ctx.set_lease(&mut st, None);
                }
                attempt = 0;
            }
            KeepAlive::Broken(m) => {
                debug!(lease = id, error = %m, "keep-alive stream broken; reopening");
                ctx.backoff(attempt).await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

/// Keeps the cache in step with etcd: list at revision R, watch from R+1; reopen from the last
/// revision seen + 1 after a broken stream; re-list and diff after compaction or cancel.
pub(crate) async fn run_watch(ctx: Arc<Ctx>, mut suspend: watch::Receiver<bool>) {
    let mut need_list = true;
    let mut attempt = 0u32;
    loop {
        if !ctx.wait_unsuspended(&mut suspend).await {
            return;
        }
        if need_list {
            let prefix = ctx.nodes_prefix.clone();
            match ctx.attempt(|c| get_prefix(c, prefix.clone())).await {
                Ok(r) => {
                    let revision = r.header().map_or(0, |h| h.revision());
                    let snapshot = ctx.snapshot(&r);
                    ctx.shared.with(|i| i.apply_snapshot(snapshot, revision));
                    debug!(revision, "etcd records listed");
                    need_list = false;
                }
                Err(f) => {
                    debug!(error = %f.message(), "listing etcd failed; retrying");
                    ctx.backoff(attempt).await;
                    attempt = attempt.saturating_add(1);
                    continue;
                }
            }
        }
        let from = ctx.shared.with(|i| i.stats.revision) + 1;
        let (generation, client) = match ctx.client().await {
            Ok(c) => c,
            Err(_) => {
                ctx.backoff(attempt).await;
                attempt = attempt.saturating_add(1);
                continue;
            }
        };
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(from)
            .with_prev_key()
            .with_progress_notify();
        let mut wc = client
            .watch_client()
            .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE);
        let opened = timeout(
            ctx.config.rpc_timeout,
            wc.watch(ctx.nodes_prefix.as_str(), Some(options)),
        )
        .await;
        let mut stream = match opened {
            Ok(Ok(s)) => s,
            _ => {
                ctx.invalidate(generation).await;
                ctx.backoff(attempt).await;
                attempt = attempt.saturating_add(1);
                continue;
            }
        };
        ctx.shared.with(|i| i.stats.watch_opens += 1);
        debug!(from, "etcd watch opened");
        loop {
            tokio::select! {
                msg = stream.message() => match msg {
                    Ok(Some(resp)) => {
                        attempt = 0;
                        if resp.canceled() {
                            let compacted = resp.compact_revision();
                            if compacted > 0 {
                                ctx.shared.with(|i| i.stats.compactions += 1);
                            }
                            warn!(compacted, reason = resp.cancel_reason(), "etcd watch cancelled; listing again");
                            need_list = true;
                            break;
                        }
                        ctx.apply_watch_response(&resp);
                    }
                    Ok(None) | Err(_) => {
                        debug!("etcd watch stream ended; reopening");
                        ctx.invalidate(generation).await;
                        ctx.backoff(attempt).await;
                        attempt = attempt.saturating_add(1);
                        break;
                    }
                },
                changed = suspend.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
            }
        }
    }
}

/// Revokes the live lease (graceful shutdown): etcd deletes every key attached to it.
pub(crate) async fn revoke(ctx: &Ctx) {
    let id = ctx.current_lease.load(Ordering::SeqCst);
    if id == 0 {
        return;
    }
    let revoked = timeout(ctx.config.shutdown_timeout, async {
        let (_, mut c) = ctx.client().await?;
        c.lease_revoke(id).await.map_err(|e| classify(&e))
    })
    .await;
    match revoked {
        Ok(Ok(_)) => info!(lease = id, "etcd lease revoked"),
        Ok(Err(f)) => warn!(lease = id, error = %f.message(), "revoking the etcd lease failed"),
        Err(_) => warn!(lease = id, "revoking the etcd lease timed out"),
    }
}
