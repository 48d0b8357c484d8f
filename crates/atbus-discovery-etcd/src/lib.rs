//! Layer 4 of libatbus-rs: the etcd backend of the [`Discovery`] trait.
//!
//! [`EtcdDiscovery`] runs an etcd client on a tokio runtime of its own thread and talks to the
//! node's thread through a channel: every request returns its [`RequestId`] at once and the
//! answer (and every watch change) comes back from [`Discovery::poll_event`]. An optional
//! waker ([`EtcdDiscovery::set_waker`], e.g. a `mio::Waker`) tells the node's event loop when
//! there is something to poll.
//!
//! Records live at `<prefix>/nodes/<name>` (default prefix `/atbus`) as the record's JSON,
//! attached to a lease of the handle (default TTL 10 s) that is kept alive, and re-granted with
//! every name put again after it is lost. Watches are served from a cache kept by one etcd
//! watch (list at revision R, watch from R+1, re-list and diff after compaction). Dropping the
//! handle (or [`EtcdDiscovery::shutdown`]) revokes the lease. See `docs/discovery.md`.
//!
//! TLS (crate feature `tls`, on by default; rustls with ring): set [`EtcdConfig::tls`] to the
//! CA file that signed etcd's certificate, plus a client certificate and key for mutual TLS,
//! and use `https://` endpoints (`etcds://host:port?ca=FILE&cert=FILE&key=FILE` as a spec).
//! Settings that cannot work fail in [`EtcdDiscovery::new`]; a certificate etcd or the client
//! refuses fails each request with `Unavailable` naming the TLS error, after its retries.
//!
//! ```no_run
//! use std::time::Duration;
//! use atbus_discovery::{Discovery, DiscoveryEvent, NodeRecord, Selector};
//! use atbus_discovery_etcd::{EtcdConfig, EtcdDiscovery};
//!
//! let config = EtcdConfig::from_spec("etcd://127.0.0.1:2379").expect("valid spec");
//! let mut discovery = EtcdDiscovery::new(config).expect("worker started");
//!
//! let mut me = NodeRecord::new("echo-1");
//! me.metadata.kind = "echo".into();
//! let req = discovery.register(me);
//! match discovery.wait_event(Duration::from_secs(5)) {
//!     Some(DiscoveryEvent::Registered { request, .. }) if request == req => {}
//!     other => panic!("not registered: {other:?}"),
//! }
//!
//! // Follow every echo node: first a List, then Put/Delete as they come and go.
//! let watch = discovery.watch(&Selector::parse("kind=echo").expect("valid selector"));
//! while let Some(event) = discovery.wait_event(Duration::from_secs(1)) {
//!     println!("{watch}: {event:?}");
//! }
//! discovery.shutdown(); // revokes the lease: echo-1 disappears at once
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod shared;
mod worker;

#[doc(hidden)]
pub mod testing;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use atbus_discovery::{Discovery, DiscoveryEvent, NodeRecord, RequestId, Selector};
use etcd_client::ConnectOptions;
use tokio::sync::{mpsc, oneshot, watch};

pub use config::{
    Backoff, DEFAULT_ETCD_PORT, DEFAULT_EVENT_QUEUE_CAPACITY, DEFAULT_LEASE_TTL,
    DEFAULT_MAX_WATCHES, DEFAULT_PREFIX, EtcdAuth, EtcdConfig, EtcdTls, SpecError, parse_spec,
};
pub use shared::EtcdStats;

use shared::Shared;
use worker::{Command, Ctx};

/// Why [`EtcdDiscovery::new`] could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The configuration names no endpoint.
    #[error("no etcd endpoint configured")]
    NoEndpoints,
    /// The event queue capacity is 0.
    #[error("event queue capacity must be at least 1")]
    ZeroQueue,
    /// TLS is configured (or an endpoint is `https://`) but the crate was built without its
    /// `tls` feature.
    #[error("TLS configured but atbus-discovery-etcd was built without the `tls` feature")]
    TlsNotBuilt,
    /// An endpoint's scheme disagrees with the TLS setting: `http://` with TLS configured, or
    /// `https://` without.
    #[error(
        "endpoint {endpoint:?} does not match the TLS setting (TLS needs https:// endpoints and an EtcdTls, plain needs http://)"
    )]
    TlsScheme {
        /// The endpoint.
        endpoint: String,
    },
    /// TLS is configured without a CA file.
    #[error(
        "TLS to etcd needs the CA that signed etcd's certificate (EtcdTls::ca_pem, or ?ca=FILE in an etcds:// spec): no system trust roots are built in"
    )]
    TlsNoCa,
    /// A client certificate was given without its key, or the other way round.
    #[error("TLS client certificate and key must be given together")]
    TlsIdentity,
    /// A TLS file could not be read.
    #[error("cannot read {path}: {source}")]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The runtime or its thread could not be created.
    #[error("cannot start the etcd worker: {0}")]
    Runtime(std::io::Error),
}

fn connect_options(config: &EtcdConfig) -> Result<ConnectOptions, SetupError> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(config.rpc_timeout)
        .with_keep_alive(config.http2_keepalive, config.http2_keepalive)
        .with_keep_alive_while_idle(false);
    if let Some(auth) = &config.auth {
        options = options
            .with_user(auth.user.clone(), auth.password.clone())
            .with_auto_token_refresh(true);
    }
    let tls = config.tls.is_some();
    let https = |e: &&String| e.starts_with("https://");
    if !cfg!(feature = "tls") && (tls || config.endpoints.iter().any(|e| https(&e))) {
        return Err(SetupError::TlsNotBuilt);
    }
    // Endpoints without a scheme take the TLS setting; explicit schemes must agree with it.
    let wrong = |e: &&String| {
        if tls {
            e.starts_with("http://")
        } else {
            https(e)
        }
    };
    if let Some(endpoint) = config.endpoints.iter().find(wrong) {
        return Err(SetupError::TlsScheme {
            endpoint: endpoint.clone(),
        });
    }
    match &config.tls {
        Some(tls) => tls_options(options, tls),
        None => Ok(options),
    }
}

#[cfg(feature = "tls")]
fn tls_options(options: ConnectOptions, tls: &EtcdTls) -> Result<ConnectOptions, SetupError> {
    use etcd_client::{Certificate, Identity, TlsOptions};
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| SetupError::TlsFile {
            path: path.clone(),
            source,
        })
    };
    let Some(ca) = &tls.ca_pem else {
        return Err(SetupError::TlsNoCa);
    };
    let mut t = TlsOptions::new().ca_certificate(Certificate::from_pem(read(ca)?));
    match (&tls.cert_pem, &tls.key_pem) {
        (Some(cert), Some(key)) => t = t.identity(Identity::from_pem(read(cert)?, read(key)?)),
        (None, None) => {}
        _ => return Err(SetupError::TlsIdentity),
    }
    if let Some(domain) = &tls.domain {
        t = t.domain_name(domain.clone());
    }
    Ok(options.with_tls(t))
}

#[cfg(not(feature = "tls"))]
fn tls_options(_: ConnectOptions, _: &EtcdTls) -> Result<ConnectOptions, SetupError> {
    Err(SetupError::TlsNotBuilt)
}

/// One node's handle on etcd, implementing [`Discovery`]. Cheap to poll; all etcd work happens
/// on its own worker thread. Dropping it revokes its lease (its records vanish at once).
pub struct EtcdDiscovery {
    config: EtcdConfig,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    suspend: watch::Sender<bool>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    next_request: u64,
}

impl std::fmt::Debug for EtcdDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdDiscovery")
            .field("endpoints", &self.config.endpoints)
            .field("prefix", &self.config.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdDiscovery {
    /// Starts the worker thread. Connecting happens in the background (and is retried), so
    /// this succeeds while etcd is down; only a bad configuration fails here.
    pub fn new(config: EtcdConfig) -> Result<Self, SetupError> {
        if config.endpoints.is_empty() {
            return Err(SetupError::NoEndpoints);
        }
        if config.event_queue_capacity == 0 {
            return Err(SetupError::ZeroQueue);
        }
        let options = connect_options(&config)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(SetupError::Runtime)?;
        let shared = Arc::new(Shared::new(config.event_queue_capacity));
        let ctx = Arc::new(Ctx::new(config.clone(), options, shared.clone()));
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (suspend, suspend_rx) = watch::channel(false);
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("atbus-etcd".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let tasks = [
                        tokio::spawn(worker::run_requests(ctx.clone(), commands_rx)),
                        tokio::spawn(worker::run_lease(ctx.clone())),
                        tokio::spawn(worker::run_watch(ctx.clone(), suspend_rx)),
                    ];
                    // Resolves on shutdown() and when the handle is dropped.
                    let _ = shutdown_rx.await;
                    for t in &tasks {
                        t.abort();
                    }
                    worker::revoke(&ctx).await;
                });
            })
            .map_err(SetupError::Runtime)?;
        Ok(Self {
            config,
            shared,
            commands,
            suspend,
            shutdown: Some(shutdown),
            thread: Some(thread),
            next_request: 0,
        })
    }

    /// The configuration this handle runs with.
    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }

    /// Sets (or clears) the function called whenever new events are queued, from the worker
    /// thread; it must be cheap and must not call back into this handle (a `mio::Waker::wake`
    /// fits).
    pub fn set_waker(&self, waker: Option<Box<dyn Fn() + Send + Sync>>) {
        self.shared.set_waker(waker.map(Arc::from));
    }

    /// Blocks up to `timeout` for the next event (for threads without an event loop: CLIs,
    /// tests). `poll_event` is the non-blocking form.
    pub fn wait_event(&mut self, timeout: Duration) -> Option<DiscoveryEvent> {
        self.shared.wait_pop(timeout)
    }

    /// Counters of this handle.
    pub fn stats(&self) -> EtcdStats {
        self.shared.with(|i| i.stats)
    }

    /// The records as the watch cache last saw them, ordered by name (what a watch with the
    /// empty selector would hold now).
    pub fn cached_records(&self) -> Vec<NodeRecord> {
        self.shared
            .with(|i| i.cache.values().map(|c| c.record.clone()).collect())
    }

    /// Stops the worker: revokes the lease (waiting at most `shutdown_timeout`), so every
    /// record of this handle is deleted at once. Later requests get `Error { Unavailable }`.
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Test hook: suspends (`true`) or resumes (`false`) the handle's etcd watch, as if its
    /// connection were cut, and waits up to 5 s until the worker complied. On resume the
    /// watch reopens from the last revision seen + 1.
    #[doc(hidden)]
    pub fn debug_suspend_watch(&self, suspend: bool) -> bool {
        let _ = self.suspend.send(suspend);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.shared.with(|i| i.watch_suspended) == suspend {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    fn send(&mut self, make: impl FnOnce(RequestId) -> Command) -> RequestId {
        self.next_request += 1;
        let request = RequestId(self.next_request);
        if self.shutdown.is_none() || self.commands.send(make(request)).is_err() {
            self.shared.push(DiscoveryEvent::Error {
                request: Some(request),
                error: atbus_discovery::DiscoveryError::Unavailable {
                    reason: "the etcd discovery handle is shut down".to_owned(),
                },
            });
        }
        request
    }
}

impl Discovery for EtcdDiscovery {
    fn register(&mut self, record: NodeRecord) -> RequestId {
        self.send(|r| Command::Register(r, record))
    }

    fn update(&mut self, record: NodeRecord) -> RequestId {
        self.send(|r| Command::Update(r, record))
    }

    fn deregister(&mut self, name: &str) -> RequestId {
        let name = name.to_owned();
        self.send(|r| Command::Deregister(r, name))
    }

    fn get(&mut self, name: &str) -> RequestId {
        let name = name.to_owned();
        self.send(|r| Command::Get(r, name))
    }

    fn list(&mut self, selector: &Selector) -> RequestId {
        let selector = selector.clone();
        self.send(|r| Command::List(r, selector))
    }

    fn watch(&mut self, selector: &Selector) -> RequestId {
        let selector = selector.clone();
        self.send(|r| Command::Watch(r, selector))
    }

    fn unwatch(&mut self, watch: RequestId) -> RequestId {
        self.send(|r| Command::Unwatch(r, watch))
    }

    fn poll_event(&mut self) -> Option<DiscoveryEvent> {
        self.shared.pop()
    }
}

impl Drop for EtcdDiscovery {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(endpoint: &str, tls: Option<EtcdTls>) -> Result<ConnectOptions, SetupError> {
        let mut c = EtcdConfig::new(vec![endpoint.to_owned()]);
        c.tls = tls;
        connect_options(&c)
    }

    #[test]
    fn plain_endpoints_need_no_tls() {
        assert!(setup("http://127.0.0.1:2379", None).is_ok());
        assert!(setup("127.0.0.1:2379", None).is_ok());
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn tls_without_the_feature_is_refused() {
        let tls = EtcdTls {
            ca_pem: Some("ca.pem".into()),
            ..EtcdTls::default()
        };
        assert!(matches!(
            setup("https://127.0.0.1:2379", Some(tls)),
            Err(SetupError::TlsNotBuilt)
        ));
        assert!(matches!(
            setup("https://127.0.0.1:2379", None),
            Err(SetupError::TlsNotBuilt)
        ));
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_settings_must_agree_with_the_endpoints() {
        let tls = EtcdTls {
            ca_pem: Some("/nonexistent/ca.pem".into()),
            ..EtcdTls::default()
        };
        assert!(matches!(
            setup("http://127.0.0.1:2379", Some(tls.clone())),
            Err(SetupError::TlsScheme { .. })
        ));
        assert!(matches!(
            setup("https://127.0.0.1:2379", None),
            Err(SetupError::TlsScheme { .. })
        ));
        assert!(matches!(
            setup("https://127.0.0.1:2379", Some(EtcdTls::default())),
            Err(SetupError::TlsNoCa)
        ));
        // A scheme-less endpoint takes the TLS setting; the CA file is read at setup.
        assert!(matches!(
            setup("127.0.0.1:2379", Some(tls)),
            Err(SetupError::TlsFile { .. })
        ));
    }
}
