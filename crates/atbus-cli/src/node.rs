//! `atbus node`: runs one node on real sockets until asked to stop, optionally echoing every
//! message back to its sender.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use atbus_node::atbus_auth::TokenKeyring;
use atbus_node::{
    AccessToken, AnonymousPolicy, AuthMode, Delivery, NodeConfig, NodeError, NodeEvent, SignedToken,
};
use atbus_stream::SendError;
use atbus_transport_mio::{NodeDriver, TransportConfig, TransportHandle, Url};
use bytes::Bytes;

use crate::discovery::{Backend, RecordParts, Spec};

/// What `atbus node` runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Node name.
    pub name: String,
    /// Namespace (may be empty).
    pub namespace: String,
    /// Addresses to listen on.
    pub listen: Vec<Url>,
    /// Peers to connect to (reconnected with backoff).
    pub connect: Vec<Url>,
    /// Access tokens (none: open links).
    pub tokens: Vec<AccessToken>,
    /// Send every received message back to its sender on the same stream.
    pub echo: bool,
    /// Where to register the node's record; `None` keeps the node out of discovery.
    pub discovery: Option<crate::discovery::Spec>,
    /// Labels of the record.
    pub labels: BTreeMap<String, String>,
    /// Gateways published besides the listen addresses.
    pub gateways: Vec<crate::discovery::GatewayArg>,
    /// Relay whose links this node trusts as relay links (it accepts frames other nodes sent
    /// through it, and answers through it).
    pub upstream_relay: Option<String>,
    /// Relay published in the node's record as the way to reach it (`advertise_relay`); the
    /// node trusts it and, with discovery, links to it.
    pub advertise_relay: Option<String>,
    /// Which of the two relays is dialled first.
    pub relay_preference: atbus_discovery::RelayPreference,
}

/// How `atbus node` authenticates the peers that connect to it (node-wide: every `--listen`
/// address applies it), and what it presents to the peers it connects to.
#[derive(Debug, Clone, Default)]
pub struct AuthOptions {
    /// `--auth none|1rtt|0rtt`; `None`: 1rtt with credentials configured, else none.
    pub auth: Option<AuthMode>,
    /// `--anonymous`: accept peers without credentials and assign them names.
    pub anonymous: bool,
    /// `--token-keyring FILE`: keys that verify signed tokens (the first also issues the
    /// tokens handed to anonymous peers).
    pub token_keyring: Option<TokenKeyring>,
    /// A signed token presented to the peers this node connects to.
    pub signed_token: Option<SignedToken>,
    /// `--zero-rtt-window SECS`: 0-RTT freshness window (default 10 s); 0-RTT is refused for
    /// one window after the node starts.
    pub zero_rtt_window: Option<Duration>,
    /// `--encrypt`, `--compress`, `--pad`: content protection of every session.
    pub content: atbus_node::ContentPolicy,
    /// `--tls-cert`, `--tls-key`, `--tls-ca`, `--tls-require-client-cert`: certificates of
    /// `--encrypt tls`.
    pub tls: Option<atbus_auth::tls::TlsConfig>,
}

/// A request to stop a running node, which wakes its loop at once (from a signal-watching
/// thread, for instance). Clones share the request.
#[derive(Debug, Clone, Default)]
pub struct StopSignal {
    inner: Arc<StopInner>,
}

#[derive(Debug, Default)]
struct StopInner {
    requested: AtomicBool,
    /// The running loop's waker, once it runs.
    waker: Mutex<Option<TransportHandle>>,
}

impl StopSignal {
    /// A signal nobody requested yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the node to stop and wakes its loop.
    pub fn request(&self) {
        self.inner.requested.store(true, Ordering::SeqCst);
        let waker = self
            .inner
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(handle) = waker.as_ref() {
            let _ = handle.wake();
        }
    }

    /// Whether a stop was requested.
    pub fn is_requested(&self) -> bool {
        self.inner.requested.load(Ordering::SeqCst)
    }

    /// Lets [`request`](Self::request) wake the loop behind `handle`.
    pub fn attach(&self, handle: TransportHandle) {
        *self
            .inner
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(handle);
    }
}

/// Echoes messages, reading a stream only while the previous echoes were accepted, so a slow
/// sender-side reader pushes back instead of growing memory here.
#[derive(Debug, Default)]
pub struct Echo {
    /// 0-RTT early data waiting for its sender's link to come up (it arrives before the
    /// handshake finished, possibly while an older session of the same name still exists).
    early: VecDeque<(String, i64, Bytes)>,
    /// Streams with something to read.
    readable: BTreeSet<(String, i64)>,
    /// Echoes the session refused (`WouldBlock`), oldest first.
    pending: VecDeque<(String, i64, Bytes)>,
    /// Echoes to peers this node has no session with (to be routed by discovery).
    unrouted: Vec<(String, i64, Bytes)>,
    /// Messages echoed so far.
    pub echoed: u64,
}

impl Echo {
    /// Notes a `Readable` event.
    pub fn readable(&mut self, peer: String, stream_id: i64) {
        self.readable.insert((peer, stream_id));
    }

    /// Notes early data (echoed once the sender's link is accepted).
    pub fn early(&mut self, peer: String, stream_id: i64, data: Bytes) {
        self.early.push_back((peer, stream_id, data));
    }

    /// `peer`'s link was accepted: its early data is echoed in its (new) session.
    pub fn link_accepted(&mut self, peer: &str) {
        let (mine, rest): (VecDeque<_>, VecDeque<_>) =
            self.early.drain(..).partition(|(p, _, _)| p == peer);
        self.early = rest;
        self.pending.extend(mine);
    }

    /// Echoes that found no session with their peer since the last call.
    pub fn take_unrouted(&mut self) -> Vec<(String, i64, Bytes)> {
        std::mem::take(&mut self.unrouted)
    }

    /// Forgets what belongs to `peer` (it went away for good).
    pub fn forget(&mut self, peer: &str) {
        self.early.retain(|(p, _, _)| p != peer);
        self.readable.retain(|(p, _)| p != peer);
        self.pending.retain(|(p, _, _)| p != peer);
    }

    /// Sends what is pending, then reads and echoes readable streams while the session
    /// accepts.
    pub fn step(&mut self, d: &mut NodeDriver) {
        while let Some((peer, stream, data)) = self.pending.front() {
            match d.send(peer, *stream, data.clone()) {
                Ok(_) => {
                    self.echoed += 1;
                    self.pending.pop_front();
                }
                Err(NodeError::Send(SendError::WouldBlock)) => return,
                Err(NodeError::UnknownPeer(_)) => {
                    if let Some(echo) = self.pending.pop_front() {
                        self.unrouted.push(echo);
                    }
                }
                Err(err) => {
                    tracing::warn!(%peer, stream, %err, "echo dropped");
                    self.pending.pop_front();
                }
            }
        }
        while let Some((peer, stream)) = self.readable.first().cloned() {
            loop {
                match d.read(&peer, stream) {
                    Some(Delivery::Message(m)) => match d.send(&peer, stream, m.data.clone()) {
                        Ok(_) => self.echoed += 1,
                        Err(NodeError::Send(SendError::WouldBlock)) => {
                            self.pending.push_back((peer, stream, m.data));
                            return;
                        }
                        Err(err) => tracing::warn!(%peer, stream, %err, "echo dropped"),
                    },
                    Some(Delivery::Skipped { offset, len }) => {
                        tracing::warn!(%peer, stream, offset, len, "peer skipped data");
                    }
                    None => break,
                }
            }
            self.readable.remove(&(peer, stream));
        }
    }
}

/// The node's record: bound addresses, gateways, labels, advertised relay.
fn own_record(options: &Options, bound: &[String]) -> atbus_discovery::NodeRecord {
    let mut record = crate::discovery::node_record(&RecordParts {
        name: &options.name,
        namespace: &options.namespace,
        labels: &options.labels,
        listen: bound,
        gateways: &options.gateways,
    });
    record.advertise_relay = options
        .advertise_relay
        .as_ref()
        .map(|r| atbus_discovery::RelayRef {
            name: Some(r.clone()),
            metadata: None,
        });
    record
}

/// The connection planner's policy for this node's own traffic.
fn plan_policy(options: &Options) -> atbus_discovery::PlanPolicy {
    atbus_discovery::PlanPolicy {
        upstream_relay: options
            .upstream_relay
            .as_ref()
            .map(|r| atbus_discovery::RelayRef {
                name: Some(r.clone()),
                metadata: None,
            }),
        relay_preference: options.relay_preference,
        relay_fallback: true,
    }
}

/// The relays this node trusts, preferred first.
fn relays(options: &Options) -> Vec<String> {
    let mut relays: Vec<String> = match options.relay_preference {
        atbus_discovery::RelayPreference::Own => {
            [&options.upstream_relay, &options.advertise_relay]
        }
        atbus_discovery::RelayPreference::Target => {
            [&options.advertise_relay, &options.upstream_relay]
        }
    }
    .into_iter()
    .flatten()
    .cloned()
    .collect();
    relays.dedup();
    relays
}

/// How long a node waits at start for the records of the relays it names.
const RELAY_LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The address to dial for each relay in `relays`, from their records (the first direct
/// candidate the connection planner gives this node); with a shared registry (etcd), waits up
/// to [`RELAY_LOOKUP_TIMEOUT`] for records that are not there yet, then goes on without them.
fn relay_urls(
    options: &Options,
    backend: &mut Backend,
    shared: bool,
    relays: &[String],
) -> Vec<String> {
    let local = own_record(options, &[]);
    let wait = if shared {
        RELAY_LOOKUP_TIMEOUT
    } else {
        Duration::ZERO
    };
    let deadline = std::time::Instant::now() + wait;
    let mut urls = Vec::new();
    let mut left: Vec<&String> = relays.iter().collect();
    while !left.is_empty() {
        match backend.list(&atbus_discovery::Selector::everything()) {
            Ok(records) => left.retain(|name| {
                let Some(record) = records.iter().find(|r| r.name == **name) else {
                    return true;
                };
                match crate::routing::direct_urls(&local, record).first() {
                    Some(url) => {
                        tracing::info!(relay = %name, %url, "relay found through discovery");
                        urls.push(url.to_string());
                    }
                    None => {
                        tracing::warn!(relay = %name, "its record has no address for this node")
                    }
                }
                false
            }),
            Err(err) => tracing::warn!(%err, "cannot look the relays up"),
        }
        if left.is_empty() || std::time::Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for name in left {
        tracing::warn!(relay = %name, "no record of this relay: not linked");
    }
    urls
}

/// Registers the node's record (put-if-absent) with its bound addresses.
fn register(
    options: &Options,
    spec: &Spec,
    mut backend: Backend,
    bound: &[String],
) -> anyhow::Result<Backend> {
    let record = own_record(options, bound);
    record
        .validate()
        .map_err(|errors| anyhow::anyhow!("invalid node record: {errors}"))?;
    backend
        .register(record)
        .with_context(|| format!("cannot register node {:?} in {spec}", options.name))?;
    if !spec.is_shared() {
        tracing::info!(%spec, "registered in a discovery registry local to this process");
    } else {
        tracing::info!(%spec, "registered");
    }
    Ok(backend)
}

/// Runs the node until `stop` is requested (which wakes the loop at once); prints `listening on URL` for every bound address to
/// `out`. With `options.discovery`, registers the node's record once the listeners are bound
/// (failing when the name is taken) and deregisters it on the way out.
pub fn run(options: &Options, stop: &StopSignal, out: &mut impl Write) -> anyhow::Result<()> {
    run_with_auth(options, &AuthOptions::default(), stop, out)
}

/// The wall clock in Unix milliseconds, for token expiry and 0-RTT freshness.
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// As [`run`], with the authentication policy `auth`.
pub fn run_with_auth(
    options: &Options,
    auth: &AuthOptions,
    stop: &StopSignal,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    run_node(options, auth, None, None, stop, out)
}

/// As [`run_with_auth`], with the application's messages coming from `input`: each item is a
/// line `NAME MESSAGE`, sent to node `NAME` on stream 1. A name the node has no session with
/// is looked up through `options.discovery` and linked as the connection planner says
/// ([`crate::node_routes`]). Received messages are written to `out` as
/// `from NAME stream N: MESSAGE` (unless `options.echo`), each new route as
/// `route to NAME: direct` or `route to NAME: via RELAY`, and what could not be sent as
/// `undeliverable to NAME: …`.
pub fn run_with_input(
    options: &Options,
    auth: &AuthOptions,
    input: std::sync::mpsc::Receiver<String>,
    stop: &StopSignal,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    run_node(options, auth, None, Some(input), stop, out)
}

/// The stream `run_with_input` sends the application's lines on.
pub const INPUT_STREAM: i64 = 1;

/// As [`run_with_auth`], with the node's RNG seeded from `seed` (tests: two nodes seeded alike
/// draw the same anonymous names, so their reservations collide).
#[doc(hidden)]
pub fn run_with_seed(
    options: &Options,
    auth: &AuthOptions,
    seed: u64,
    stop: &StopSignal,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    run_node(options, auth, Some(seed), None, stop, out)
}

/// Reserves an anonymous peer's assigned name in the registry (put-if-absent, under this
/// node's lease with etcd); true when it is now this node's.
fn reserve_name(options: &Options, backend: &mut Backend, name: &str) -> bool {
    let mut record = atbus_discovery::NodeRecord::new(name);
    record.metadata.namespace_name = options.namespace.clone();
    record.metadata.kind = "anonymous".to_owned();
    record
        .metadata
        .annotations
        .insert("assigned-by".to_owned(), options.name.clone());
    match backend.register(record) {
        Ok(()) => {
            tracing::info!(%name, "assigned name reserved");
            true
        }
        Err(err) => {
            tracing::warn!(%name, %err, "assigned name not reserved");
            false
        }
    }
}

fn run_node(
    options: &Options,
    auth: &AuthOptions,
    seed: Option<u64>,
    input: Option<std::sync::mpsc::Receiver<String>>,
    stop: &StopSignal,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut config = NodeConfig::new(options.name.clone()).with_tokens(options.tokens.clone());
    config.auth = auth.auth;
    config.token_keyring = auth.token_keyring.clone();
    config.signed_token = auth.signed_token.clone();
    // With a shared registry, assigned names are reserved there first (unique across nodes).
    config.anonymous = auth.anonymous.then(|| AnonymousPolicy {
        reserve_names: options.discovery.is_some(),
        ..AnonymousPolicy::default()
    });
    config.content = auth.content.clone();
    config.tls = auth.tls.clone();
    if let Some(w) = auth.zero_rtt_window {
        config.anti_replay.window_ms = u64::try_from(w.as_millis()).unwrap_or(u64::MAX);
    }
    config.namespace = options.namespace.clone();
    config.connect = options.connect.iter().map(Url::to_string).collect();
    config.relays = relays(options);
    // With discovery, the relays named are linked at the addresses their records give (unless
    // --connect dials them), before the node registers.
    let mut backend = match &options.discovery {
        Some(spec) => Some(spec.open()?),
        None => None,
    };
    if let (Some(b), Some(spec)) = (backend.as_mut(), &options.discovery) {
        if options.connect.is_empty() && !config.relays.is_empty() {
            config.connect = relay_urls(options, b, spec.is_shared(), &config.relays);
        }
    }
    let mut driver = match seed {
        Some(seed) => NodeDriver::with_seed(config, TransportConfig::default(), seed)?,
        None => NodeDriver::new(config, TransportConfig::default())?,
    };
    driver.node_mut().set_unix_time(unix_ms());
    stop.attach(driver.transport().handle());
    let mut bound_urls = Vec::new();
    for url in &options.listen {
        let bound = driver
            .listen(url)
            .with_context(|| format!("cannot listen on {url}"))?;
        writeln!(out, "listening on {bound}")?;
        tracing::info!(%bound, "listening");
        bound_urls.push(bound.to_string());
    }
    out.flush()?;
    let mut discovery = match (&options.discovery, backend) {
        (Some(spec), Some(b)) => Some(register(options, spec, b, &bound_urls)?),
        _ => None,
    };
    let mut echo = Echo::default();
    let mut routes =
        crate::node_routes::NodeRoutes::new(own_record(options, &bound_urls), plan_policy(options));
    while !stop.is_requested() {
        driver.node_mut().set_unix_time(unix_ms());
        driver.run_once(Some(Duration::from_millis(100)))?;
        while let Some(failure) = driver.poll_link_failure() {
            tracing::warn!(url = %failure.url, reason = ?failure.reason, "connect failed");
            let why = failure
                .reason
                .error()
                .map_or_else(|| format!("{:?}", failure.reason), ToString::to_string);
            routes.handle_link_failure(std::time::Instant::now(), &failure.url, &why);
        }
        while let Some(event) = driver.poll_event() {
            routes.handle_event(&event);
            match event {
                NodeEvent::Readable { peer, stream_id } if options.echo => {
                    echo.readable(peer, stream_id);
                }
                NodeEvent::Readable { peer, stream_id } => {
                    while let Some(d) = driver.read(&peer, stream_id) {
                        if let Delivery::Message(m) = d {
                            tracing::info!(%peer, stream_id, len = m.data.len(), "message");
                            if input.is_some() {
                                let text = String::from_utf8_lossy(&m.data);
                                writeln!(out, "from {peer} stream {stream_id}: {text}")?;
                            }
                        }
                    }
                }
                NodeEvent::EarlyData {
                    peer,
                    stream_id,
                    data,
                } => {
                    tracing::info!(%peer, stream_id, len = data.len(), "0-RTT early data");
                    if options.echo {
                        echo.early(peer, stream_id, data);
                    }
                }
                NodeEvent::LinkAccepted { peer, .. } => echo.link_accepted(&peer),
                NodeEvent::PeerUp { peer, incarnation } => {
                    tracing::info!(%peer, incarnation, "peer up");
                }
                NodeEvent::PeerDown { peer } => tracing::info!(%peer, "peer down"),
                NodeEvent::LinkRejected { link, reason } => {
                    tracing::warn!(link = link.0, %reason, "link refused");
                }
                NodeEvent::RelayedHandshakeFailed { peer, reason, .. } => {
                    tracing::warn!(%peer, %reason, "end-to-end handshake through the relay failed");
                }
                NodeEvent::LinkClosed { link, peer, reason } => {
                    tracing::info!(link = link.0, %peer, ?reason, "link closed");
                }
                NodeEvent::Undeliverable {
                    peer,
                    stream_id,
                    reason,
                    ..
                } => {
                    tracing::warn!(%peer, stream_id, ?reason, "message undeliverable");
                    echo.forget(&peer);
                }
                NodeEvent::ReserveName { name, .. } => {
                    let reserved = discovery
                        .as_mut()
                        .is_some_and(|d| reserve_name(options, d, &name));
                    driver.node_mut().handle_name_reserved(
                        std::time::Instant::now(),
                        &name,
                        reserved,
                    );
                }
                NodeEvent::ReleaseName { name } => {
                    if let Some(d) = discovery.as_mut() {
                        let timeout = d.answer_timeout();
                        if let Err(err) = d.deregister(&name, timeout) {
                            tracing::warn!(%name, %err, "assigned name not released");
                        }
                    }
                }
                other => tracing::debug!(?other, "event"),
            }
        }
        if options.echo {
            echo.step(&mut driver);
        }
        let now = std::time::Instant::now();
        let has_discovery = discovery.is_some();
        for (peer, stream, data) in echo.take_unrouted() {
            if let Err(err) = routes.send(now, &mut driver, has_discovery, &peer, stream, data) {
                tracing::warn!(%peer, stream, %err, "echo dropped");
            }
        }
        while let Some(line) = input.as_ref().and_then(|i| i.try_recv().ok()) {
            let Some((to, text)) = line.trim().split_once(' ') else {
                writeln!(out, "undeliverable: expected NAME MESSAGE, got {line:?}")?;
                continue;
            };
            let data = Bytes::copy_from_slice(text.as_bytes());
            if let Err(err) = routes.send(now, &mut driver, has_discovery, to, INPUT_STREAM, data) {
                writeln!(out, "undeliverable to {to}: {err}")?;
            }
        }
        if let Some(d) = discovery.as_mut() {
            routes.poll_discovery(d);
        }
        routes.step(now, &mut driver, discovery.as_mut(), out)?;
    }
    tracing::info!(echoed = echo.echoed, "stopping");
    if let Some(mut d) = discovery.take() {
        if let Err(err) = d.deregister(&options.name, Duration::from_secs(3)) {
            tracing::warn!(%err, "deregister failed");
        }
        d.shutdown();
    }
    driver.shutdown(Duration::from_secs(2))?;
    Ok(())
}
