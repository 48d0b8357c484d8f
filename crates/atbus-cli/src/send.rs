//! `atbus send`: sends numbered messages to an echo node, keeps at most a window of them in
//! flight, checks every echo and measures throughput and round trips.
//!
//! Message `seq` (0-based, over all streams) goes on stream `seq % streams`. Its first
//! `min(8, size)` bytes are `seq` in little endian, the rest a fixed pseudo-random pattern.
//! Echoes are matched per stream in order: the next echo on a stream must be the oldest message
//! in flight there. Without `--verify` only the length and the sequence bytes are compared;
//! with it, every byte.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use atbus_discovery::{NodeRecord, PlanPolicy, RelayPreference, RelayRef, Selector};

use atbus_node::{
    AccessToken, AuthMode, Delivery, LinkId, NodeConfig, NodeError, NodeEvent, SignedToken,
};
use atbus_stream::SendError;
use atbus_transport_mio::{NodeDriver, TransportConfig, Url};
use bytes::{Bytes, BytesMut};
use serde::Serialize;

/// What `atbus send` does.
#[derive(Debug, Clone)]
pub struct Options {
    /// This node's name.
    pub name: String,
    /// Where the echo node listens.
    pub connect: Url,
    /// The echo node's name.
    pub to: String,
    /// Messages to send.
    pub count: u64,
    /// Bytes per message (at least 1).
    pub size: usize,
    /// Streams used, round robin (at least 1).
    pub streams: u32,
    /// Most messages in flight (at least 1).
    pub window: u64,
    /// Access tokens (none: open link).
    pub tokens: Vec<AccessToken>,
    /// Compare every byte of every echo.
    pub verify: bool,
    /// Give up after this long.
    pub timeout: Duration,
    /// Draw a progress bar on standard error.
    pub progress: bool,
}

/// How `atbus send` authenticates beyond pre-shared tokens (`Options::tokens`).
#[derive(Debug, Clone, Default)]
pub struct ClientAuth {
    /// A signed token with its holder secret (`--token atbus1.… --holder-secret`, or a
    /// `--token-file` holding the JSON of `atbus token issue --json`).
    pub signed_token: Option<SignedToken>,
    /// Send the first messages as 0-RTT early data in the first flight (`--early-data`).
    pub early_data: bool,
    /// Ask the server for an assigned name instead of using `--name` (`--anonymous`).
    pub anonymous: bool,
    /// `--encrypt`, `--compress`, `--pad`: content protection of the session.
    pub content: atbus_node::ContentPolicy,
    /// `--tls-cert`, `--tls-key`, `--tls-ca`: certificates of `--encrypt tls`.
    pub tls: Option<atbus_auth::tls::TlsConfig>,
}

/// Reads a signed token: `text` is `atbus1.…` and `holder_secret` its base64url holder secret,
/// or `text` is the JSON object `atbus token issue --json` prints (with both inside).
pub fn signed_token(text: &str, holder_secret: Option<&str>) -> anyhow::Result<SignedToken> {
    use base64::Engine as _;
    let text = text.trim();
    let (token, secret) = if text.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(text)?;
        let field = |k: &str| {
            v.get(k)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| anyhow::anyhow!("token JSON has no {k:?} string"))
        };
        (field("token")?, field("holder_secret")?)
    } else {
        let secret = holder_secret.ok_or_else(|| {
            anyhow::anyhow!("a signed token (atbus1.…) needs its holder secret: --holder-secret")
        })?;
        (text.to_owned(), secret.trim().to_owned())
    };
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(secret.as_bytes())
        .map_err(|e| anyhow::anyhow!("holder secret is not base64url: {e}"))?;
    let secret = <[u8; 32]>::try_from(secret.as_slice())
        .map_err(|_| anyhow::anyhow!("holder secret must be 32 bytes"))?;
    Ok(SignedToken::from_text(&token, secret)?)
}

/// The result of a run; `--json` prints it as one line.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Messages sent.
    pub sent: u64,
    /// Echoes received that matched.
    pub received: u64,
    /// True only with `--verify` when every echo matched byte for byte and arrived exactly once,
    /// in order per stream, and none is missing.
    pub verified: bool,
    /// Echoes that did not match (wrong length, sequence or content).
    pub corrupted: u64,
    /// Seconds from the first send to the last echo.
    pub elapsed_s: f64,
    /// Echoes per second.
    pub msgs_per_sec: f64,
    /// Echoed payload bytes per second.
    pub bytes_per_sec: f64,
    /// Median round trip, microseconds.
    pub rtt_p50_us: u64,
    /// 99th percentile round trip, microseconds.
    pub rtt_p99_us: u64,
    /// Message size in bytes.
    pub size: usize,
    /// Streams used.
    pub streams: u32,
    /// Window.
    pub window: u64,
    /// The peer the messages went to first: the destination itself when direct, else the
    /// relay.
    pub first_hop: String,
    /// The destination node (with `--to-selector`, the node the selector resolved to).
    pub to: String,
    /// Why the run stopped early (refused, connection failed, lost, timed out), if it did.
    pub error: Option<String>,
    /// With `--early-data`: whether the server accepted the early data as 0-RTT (null when
    /// none was sent in the first flight).
    pub early_data_accepted: Option<bool>,
    /// With `--anonymous`: the name the server assigned.
    pub assigned_name: Option<String>,
    /// Whether the session's content was sealed (`--encrypt psk`).
    pub encrypted: bool,
    /// Whether any packet of the session went out compressed (`--compress`, both ends).
    pub compressed: bool,
}

impl Report {
    /// Whether every message came back intact and nothing failed.
    pub fn is_success(&self, count: u64) -> bool {
        self.error.is_none() && self.corrupted == 0 && self.received == count
    }
}

/// The fixed part of every message of `size` bytes.
fn pattern(size: usize) -> Vec<u8> {
    let mut x: u64 = 0x243f_6a88_85a3_08d3;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Message `seq` built on `pattern`.
fn message(pattern: &[u8], seq: u64) -> Bytes {
    let mut m = BytesMut::from(pattern);
    let n = m.len().min(8);
    m[..n].copy_from_slice(&seq.to_le_bytes()[..n]);
    m.freeze()
}

/// Whether `echo` is message `seq`: length and sequence bytes, and with `full` every byte.
fn matches(pattern: &[u8], seq: u64, echo: &[u8], full: bool) -> bool {
    let n = pattern.len().min(8);
    echo.len() == pattern.len()
        && echo[..n] == seq.to_le_bytes()[..n]
        && (!full || echo[n..] == pattern[n..])
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the exchange; errors only when the node cannot start (bad name, token, ...). Network
/// failures and refusals end up in [`Report::error`].
pub fn run(options: &Options) -> anyhow::Result<Report> {
    run_via(options, None)
}

/// As [`run`]; with `relay`, `options.connect` is that relay (trusted as one, and redialled
/// with backoff when its link drops) and the messages to `options.to` go through it.
pub fn run_via(options: &Options, relay: Option<&str>) -> anyhow::Result<Report> {
    run_with_auth(options, relay, &ClientAuth::default())
}

/// As [`run_via`], authenticating with `auth` too.
pub fn run_with_auth(
    options: &Options,
    relay: Option<&str>,
    auth: &ClientAuth,
) -> anyhow::Result<Report> {
    let mut config = NodeConfig::new(options.name.clone()).with_tokens(options.tokens.clone());
    config.relays = relay.map(str::to_owned).into_iter().collect();
    config.signed_token = auth.signed_token.clone();
    config.request_assigned_name = auth.anonymous;
    config.content = auth.content.clone();
    config.tls = auth.tls.clone();
    if auth.early_data {
        config.auth = Some(AuthMode::ZeroRtt);
    }
    if relay.is_some() {
        config.connect = vec![options.connect.to_string()];
    }
    let mut driver = NodeDriver::new(config, TransportConfig::default())?;
    driver.node_mut().set_unix_time(unix_ms());
    let link = if relay.is_none() {
        Some(driver.connect(&options.connect)?)
    } else {
        None
    };
    if let Some(relay) = relay {
        driver
            .node_mut()
            .route_via_relay(Instant::now(), &options.to, relay)?;
    }
    let early_link = link.filter(|_| auth.early_data);
    let report = exchange_inner(&mut driver, options, relay, early_link);
    // Acknowledgements both ways go out before the links close.
    let _ = driver.shutdown(Duration::from_secs(1));
    report
}

/// Runs the exchange on a driver that is connecting (or already connected) to `options.to`;
/// `options.name`, `connect` and `tokens` are not used. Leaves the links open.
pub fn exchange(driver: &mut NodeDriver, options: &Options) -> anyhow::Result<Report> {
    exchange_via(driver, options, None)
}

/// How long a relayed exchange rides out a relay outage (its link lost and being redialled, or
/// the relay unable to forward yet) with no echo arriving before it gives up.
pub const RELAY_OUTAGE: Duration = Duration::from_secs(10);

/// As [`exchange`], with `options.to` reached through `relay` (already routed with
/// `Node::route_via_relay`): sends start at once and wait in the session for the relay link.
/// Once the relay link was up, losing it, failing to redial it or a `forward_error` after the
/// first echo is an outage, not an error: the sessions retransmit over the next relay link; it
/// becomes the error only when no echo arrives for [`RELAY_OUTAGE`].
pub fn exchange_via(
    driver: &mut NodeDriver,
    options: &Options,
    relay: Option<&str>,
) -> anyhow::Result<Report> {
    exchange_inner(driver, options, relay, None)
}

/// The wall clock in Unix milliseconds, for token expiry and 0-RTT freshness.
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The exchange; with `early_link` (a link not up yet) the first messages of the window go
/// as early data in its first flight.
fn exchange_inner(
    driver: &mut NodeDriver,
    options: &Options,
    relay: Option<&str>,
    early_link: Option<LinkId>,
) -> anyhow::Result<Report> {
    let streams = options.streams.max(1);
    let pattern = pattern(options.size);
    // Per stream: (seq, send time) of messages in flight, oldest first.
    let mut in_flight: Vec<VecDeque<(u64, Instant)>> = vec![VecDeque::new(); streams as usize];
    let mut rtts: Vec<u64> = Vec::with_capacity(options.count.min(1 << 24) as usize);
    let (mut sent, mut received, mut corrupted) = (0u64, 0u64, 0u64);
    let mut error: Option<String> = None;
    let mut up = relay.is_some() || !driver.node().peer_links(&options.to).is_empty();
    let deadline = Instant::now() + options.timeout;
    let mut started: Option<Instant> = up.then(Instant::now);
    let mut finished: Option<Instant> = None;
    // Relayed: whether the relay link was ever up, and an outage in progress (since, why).
    let mut relay_seen = false;
    let mut outage: Option<(Instant, String)> = None;
    let mut early_data_accepted = None;
    let mut assigned_name = None;
    if let Some(link) = early_link {
        // As many messages as the window allows and the first flight holds.
        let mut bytes = 0;
        while sent < options.count.min(options.window)
            && (sent as usize) < atbus_node::MAX_EARLY_MESSAGES
            && bytes + options.size <= atbus_node::DEFAULT_MAX_EARLY_DATA
        {
            let stream = sent % u64::from(streams);
            let data = message(&pattern, sent);
            if driver
                .node_mut()
                .send_early(link, &options.to, stream as i64, data)
                .is_err()
            {
                break;
            }
            in_flight[stream as usize].push_back((sent, Instant::now()));
            bytes += options.size;
            sent += 1;
        }
        started = Some(Instant::now());
    }
    let bar = if options.progress {
        let bar = indicatif::ProgressBar::new(options.count);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} echoes {per_sec} {elapsed_precise}",
        ) {
            bar.set_style(style);
        }
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    while error.is_none() && received + corrupted < options.count {
        if Instant::now() >= deadline {
            error = Some(format!(
                "timed out after {:?} with {received} of {} echoes",
                options.timeout, options.count
            ));
            break;
        }
        while up && sent < options.count && sent - received - corrupted < options.window {
            let stream = sent % u64::from(streams);
            match driver.send(&options.to, stream as i64, message(&pattern, sent)) {
                Ok(_) => {
                    in_flight[stream as usize].push_back((sent, Instant::now()));
                    sent += 1;
                }
                Err(NodeError::Send(SendError::WouldBlock)) => break,
                Err(err) => {
                    error = Some(format!("send failed: {err}"));
                    break;
                }
            }
        }
        driver.node_mut().set_unix_time(unix_ms());
        driver.run_once(Some(Duration::from_millis(50)))?;
        bar.set_position(received + corrupted);
        if let Some(failure) = driver.poll_link_failure() {
            let why = failure
                .reason
                .error()
                .map_or_else(|| format!("{:?}", failure.reason), ToString::to_string);
            let why = format!("cannot connect to {}: {why}", failure.url);
            if relay_seen {
                outage.get_or_insert_with(|| (Instant::now(), why));
            } else {
                error = Some(why);
            }
        }
        let mut lost = None;
        while let Some(event) = driver.poll_event() {
            match event {
                NodeEvent::PeerUp { peer, .. } if peer == options.to => {
                    up = true;
                    started.get_or_insert_with(Instant::now);
                }
                NodeEvent::LinkAccepted { peer, .. } if Some(peer.as_str()) == relay => {
                    relay_seen = true;
                    started.get_or_insert_with(Instant::now);
                }
                NodeEvent::PeerUp { peer, .. } if Some(peer.as_str()) == relay => {}
                NodeEvent::ForwardError {
                    relay: by,
                    destination,
                    code,
                    message,
                    ..
                } => {
                    let why = format!(
                        "relay {by:?} cannot forward to {destination:?}: {code:?} {message}"
                    );
                    if received > 0 {
                        outage.get_or_insert_with(|| (Instant::now(), why));
                    } else {
                        error = Some(why);
                    }
                }
                NodeEvent::PeerUp { peer, .. } => {
                    error = Some(format!("connected to node {peer:?}, not {:?}", options.to));
                }
                NodeEvent::LinkRejected { reason, .. } => {
                    error = Some(format!("link refused: {reason}"));
                }
                NodeEvent::RelayedHandshakeFailed { peer, reason, .. } if peer == options.to => {
                    error = Some(format!(
                        "end-to-end handshake with {peer:?} through the relay failed: {reason}"
                    ));
                }
                NodeEvent::PeerDown { peer } if relay.is_some() => {
                    outage.get_or_insert_with(|| {
                        (Instant::now(), format!("lost the relayed path to {peer:?}"))
                    });
                }
                NodeEvent::EarlyDataStatus { accepted, .. } => early_data_accepted = Some(accepted),
                NodeEvent::NameAssigned { name, .. } => assigned_name = Some(name),
                NodeEvent::LinkClosed {
                    reason: Some(reason),
                    ..
                } if reason.by_peer && reason.code != atbus_proto::AtbusCloseReason::Normal => {
                    error.get_or_insert(format!("link closed: {reason}"));
                }
                NodeEvent::PeerDown { peer } => {
                    // The link's close reason, if the peer gave one, comes right after.
                    lost = Some(format!("lost the connection to {peer:?}"));
                }
                NodeEvent::Undeliverable {
                    stream_id, reason, ..
                } => {
                    error = Some(format!(
                        "a message on stream {stream_id} is undeliverable: {reason:?}"
                    ));
                }
                NodeEvent::Readable { peer, stream_id } => {
                    while let Some(delivery) = driver.read(&peer, stream_id) {
                        let now = Instant::now();
                        let Delivery::Message(m) = delivery else {
                            error = Some(format!("the echo skipped data on stream {stream_id}"));
                            continue;
                        };
                        let front = usize::try_from(stream_id)
                            .ok()
                            .and_then(|s| in_flight.get_mut(s))
                            .and_then(VecDeque::pop_front);
                        match front {
                            Some((seq, at)) if matches(&pattern, seq, &m.data, options.verify) => {
                                received += 1;
                                outage = None;
                                rtts.push(now.duration_since(at).as_micros() as u64);
                            }
                            _ => corrupted += 1,
                        }
                        finished = Some(now);
                    }
                }
                _ => {}
            }
        }
        if let Some((since, why)) = &outage {
            if since.elapsed() >= RELAY_OUTAGE {
                error = Some(format!("{why}; no echo for {RELAY_OUTAGE:?}"));
            }
        }
        if let Some(lost) = lost {
            error.get_or_insert(lost);
        }
    }
    bar.finish_and_clear();
    let elapsed = match (started, finished) {
        (Some(s), Some(f)) => f.duration_since(s).as_secs_f64(),
        _ => 0.0,
    };
    let rate = |n: f64| if elapsed > 0.0 { n / elapsed } else { 0.0 };
    rtts.sort_unstable();
    let (encrypted, compressed) = driver
        .node()
        .session(&options.to)
        .map_or((false, false), |s| {
            (s.is_encrypted(), s.content_stats().packets_compressed > 0)
        });
    Ok(Report {
        sent,
        received,
        verified: options.verify && error.is_none() && corrupted == 0 && received == options.count,
        corrupted,
        elapsed_s: elapsed,
        msgs_per_sec: rate(received as f64),
        bytes_per_sec: rate(received as f64 * options.size as f64),
        rtt_p50_us: percentile(&rtts, 0.5),
        rtt_p99_us: percentile(&rtts, 0.99),
        size: options.size,
        streams,
        window: options.window,
        first_hop: relay.unwrap_or(&options.to).to_owned(),
        to: options.to.clone(),
        error,
        early_data_accepted,
        assigned_name,
        encrypted,
        compressed,
    })
}

/// How long [`run_planned`] waits for one candidate's link before trying the next.
const HOP_TIMEOUT: Duration = Duration::from_secs(3);

/// One way to reach the destination, from the connection plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// Where to connect.
    pub url: Url,
    /// The relay behind `url` (`None`: `url` is the destination itself).
    pub relay: Option<String>,
    /// Why this hop is in the plan (for logs).
    pub why: String,
}

/// What `atbus send --discovery` needs to find its destination and plan the way there.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// Where the records are.
    pub spec: crate::discovery::Spec,
    /// The sender's namespace.
    pub namespace: String,
    /// The sender's labels.
    pub labels: BTreeMap<String, String>,
    /// The sender's upstream relay.
    pub upstream_relay: Option<String>,
    /// The relay the sender advertises; when set, the sender registers its record (with it)
    /// for the length of the run, so relays can route answers by discovery.
    pub advertise_relay: Option<String>,
    /// Which relay the plan tries first.
    pub relay_preference: RelayPreference,
    /// The destination by name.
    pub to: Option<String>,
    /// The destination as a selector, resolved to one node by rendezvous hashing.
    pub to_selector: Option<Selector>,
    /// The key of that hashing (default: the sender's name).
    pub hash_key: Option<String>,
}

/// A destination found through discovery and the ways to reach it, best first.
#[derive(Debug)]
pub struct Planned {
    /// The destination's name.
    pub to: String,
    /// Candidates, best first.
    pub hops: Vec<Hop>,
    /// Planned candidates that could not be used (relays without a record or an address).
    pub skipped: Vec<String>,
    /// The open backend, holding the sender's record when it registered one.
    pub backend: crate::discovery::Backend,
    /// Whether the sender registered its record.
    pub registered: bool,
}

/// The sender's record: what the planner compares gateways with.
fn sender_record(name: &str, lookup: &Lookup) -> NodeRecord {
    let mut record = crate::discovery::node_record(&crate::discovery::RecordParts {
        name,
        namespace: &lookup.namespace,
        labels: &lookup.labels,
        listen: &[],
        gateways: &[],
    });
    record.advertise_relay = lookup.advertise_relay.as_ref().map(|r| RelayRef {
        name: Some(r.clone()),
        metadata: None,
    });
    record
}

/// Looks the destination up and plans the way there: the connection planner's candidates,
/// each relay candidate resolved to the addresses its record gives the sender.
pub fn plan(name: &str, lookup: &Lookup) -> anyhow::Result<Planned> {
    let local = sender_record(name, lookup);
    local
        .validate()
        .map_err(|errors| anyhow::anyhow!("invalid sender record: {errors}"))?;
    let mut backend = lookup.spec.open()?;
    let records = backend
        .list(&Selector::everything())
        .with_context(|| format!("cannot list the records of {}", lookup.spec))?;
    let target = match (&lookup.to, &lookup.to_selector) {
        (Some(to), _) => records
            .iter()
            .find(|r| r.name == *to)
            .ok_or_else(|| anyhow::anyhow!("no record named {to:?} in {}", lookup.spec))?,
        (None, Some(selector)) => {
            let key = lookup.hash_key.as_deref().unwrap_or(name);
            crate::routing::choose_target(&records, selector, key, name).ok_or_else(|| {
                anyhow::anyhow!(
                    "no record matches the selector {selector} in {}",
                    lookup.spec
                )
            })?
        }
        (None, None) => anyhow::bail!("a destination is needed: --to NAME or --to-selector"),
    };
    let policy = PlanPolicy {
        upstream_relay: lookup.upstream_relay.as_ref().map(|r| RelayRef {
            name: Some(r.clone()),
            metadata: None,
        }),
        relay_preference: lookup.relay_preference,
        relay_fallback: true,
    };
    let (hops, skipped) = crate::routing::plan_hops(&local, target, &records, &policy);
    let registered = lookup.advertise_relay.is_some();
    if registered {
        backend
            .register(local)
            .with_context(|| format!("cannot register {name:?} in {}", lookup.spec))?;
    }
    Ok(Planned {
        to: target.name.clone(),
        hops,
        skipped,
        backend,
        registered,
    })
}

/// Runs the exchange over the first of `hops` whose link comes up (each gets
/// [`HOP_TIMEOUT`]); `options.connect` is not used. The report's `first_hop` is the peer of
/// that link. When none works, the report's error lists what each attempt met.
pub fn run_planned(options: &Options, hops: &[Hop]) -> anyhow::Result<Report> {
    let mut failures = Vec::new();
    for hop in hops {
        let mut config = NodeConfig::new(options.name.clone()).with_tokens(options.tokens.clone());
        config.relays = hop.relay.iter().cloned().collect();
        let mut driver = NodeDriver::new(config, TransportConfig::default())?;
        let via = hop.relay.as_deref();
        let first_hop = via.unwrap_or(&options.to).to_owned();
        match wait_link(&mut driver, &hop.url, &first_hop) {
            Ok(()) => {
                tracing::info!(url = %hop.url, %first_hop, why = %hop.why, "sending");
                if let Some(relay) = via {
                    driver
                        .node_mut()
                        .route_via_relay(Instant::now(), &options.to, relay)?;
                }
                let report = exchange_via(&mut driver, options, via);
                let _ = driver.shutdown(Duration::from_secs(1));
                return report;
            }
            Err(why) => {
                tracing::info!(url = %hop.url, %first_hop, %why, "candidate failed");
                failures.push(format!("{} ({}): {why}", hop.url, hop.why));
                let _ = driver.shutdown(Duration::from_millis(200));
            }
        }
    }
    let error = if failures.is_empty() {
        format!("no way to reach {:?}: the plan is empty", options.to)
    } else {
        format!("no way to reach {:?}: {}", options.to, failures.join("; "))
    };
    Ok(Report {
        sent: 0,
        received: 0,
        verified: false,
        corrupted: 0,
        elapsed_s: 0.0,
        msgs_per_sec: 0.0,
        bytes_per_sec: 0.0,
        rtt_p50_us: 0,
        rtt_p99_us: 0,
        size: options.size,
        streams: options.streams.max(1),
        window: options.window,
        first_hop: String::new(),
        to: options.to.clone(),
        error: Some(error),
        early_data_accepted: None,
        assigned_name: None,
        encrypted: false,
        compressed: false,
    })
}

/// Connects to `url` and waits until the link to `peer` is authenticated.
fn wait_link(driver: &mut NodeDriver, url: &Url, peer: &str) -> Result<(), String> {
    driver.connect(url).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + HOP_TIMEOUT;
    while Instant::now() < deadline {
        driver
            .run_once(Some(Duration::from_millis(20)))
            .map_err(|e| e.to_string())?;
        if let Some(failure) = driver.poll_link_failure() {
            return Err(failure
                .reason
                .error()
                .map_or_else(|| format!("{:?}", failure.reason), ToString::to_string));
        }
        while let Some(event) = driver.poll_event() {
            match event {
                NodeEvent::LinkAccepted { peer: p, .. } | NodeEvent::PeerUp { peer: p, .. }
                    if p == peer =>
                {
                    return Ok(());
                }
                NodeEvent::PeerUp { peer: p, .. } | NodeEvent::LinkAccepted { peer: p, .. } => {
                    return Err(format!("reached {p:?}, not {peer:?}"));
                }
                NodeEvent::LinkRejected { reason, .. } => {
                    return Err(format!("link refused: {reason}"));
                }
                _ => {}
            }
        }
    }
    Err(format!("no link within {HOP_TIMEOUT:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_their_sequence() {
        let p = pattern(20);
        let m = message(&p, 7);
        assert!(matches(&p, 7, &m, true));
        assert!(!matches(&p, 8, &m, true));
        let mut bad = m.to_vec();
        bad[19] ^= 1;
        assert!(!matches(&p, 7, &bad, true));
        assert!(matches(&p, 7, &bad, false));
        let p1 = pattern(1);
        assert!(matches(&p1, 3, &message(&p1, 3), true));
    }

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 51);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&[], 0.5), 0);
    }
}
