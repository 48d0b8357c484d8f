//! `atbus relay` (and the `atbus-relay` binary): the relay service. Runs the relay core on
//! real sockets until SIGINT/SIGTERM, with its metrics endpoint on its own port.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use atbus_discovery::{NodeRecord, Selector};
use atbus_relay::service::{MetricsServer, MetricsSnapshot, RelayDriver, TransportConfig, Url};
use atbus_relay::{RelayConfig, RelayEvent, RelayFile};
use clap::Args;

use crate::discovery::{Backend, GatewayArg, RecordParts, Spec};
use crate::node::StopSignal;
use crate::routing::{CacheChange, RELAY_KIND, RecordCache};

/// How often the loop copies its counters to the metrics endpoint.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(100);

/// The arguments of `atbus relay` and `atbus-relay`.
#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    /// Relay name (DNS-1123 subdomain); required unless the --config file names it
    #[arg(long)]
    pub name: Option<String>,
    /// Namespace (DNS-1123 label); overrides the file's
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Address to accept nodes and relays on: tcp://HOST:PORT, udp://HOST:PORT, unix:///PATH
    /// or mem://NAME (port 0 binds a free port); repeatable, replaces the file's `listen`;
    /// required unless the --config file has `listen`
    #[arg(long, value_name = "URL")]
    pub listen: Vec<Url>,
    /// Peer relay or upstream to dial (redialled with backoff); repeatable, added to the file's
    #[arg(long, value_name = "URL")]
    pub connect: Vec<Url>,
    /// Relay that gets every frame with no direct link and no route (it is also trusted as a
    /// peer relay)
    #[arg(long, value_name = "NAME")]
    pub upstream_relay: Option<String>,
    /// Another relay to trust (its forwarding fields are kept); repeatable
    #[arg(long = "peer-relay", value_name = "NAME")]
    pub peer_relays: Vec<String>,
    /// Serve the metrics (Prometheus text format) at http://HOST:PORT/metrics
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_listen: Option<SocketAddr>,
    /// TOML configuration file (see docs/relay.md); command-line options override it
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Access token `KEY_ID:SECRET` (no colon: key id `default`); repeatable. Prefer
    /// --token-file or ATBUS_TOKEN (a command line is visible to other users)
    #[arg(long = "token", value_name = "TOKEN", conflicts_with = "token_file")]
    pub tokens: Vec<String>,
    /// File with one token per line (`KEY_ID:SECRET`; blank lines and `#` comments skipped)
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Register the relay (kind `relay`) and route by discovery: etcd://HOST:PORT[,…],
    /// etcds://HOST:PORT[,…]?ca=FILE[&cert=FILE&key=FILE], static:FILE or embedded
    #[arg(long, value_name = "SPEC", value_parser = Spec::parse)]
    pub discovery: Option<Spec>,
    /// Address URL[@PRIORITY] other namespaces reach the relay on (published for every
    /// caller; the --listen addresses are published for the relay's own namespace); repeatable
    /// (replaces the file's `gateways`; needs discovery here or in the file)
    #[arg(long = "gateway", value_name = "URL[@PRIORITY]")]
    pub gateways: Vec<GatewayArg>,
    /// Label KEY=VALUE of the relay's record (added to the file's `labels`; needs discovery
    /// here or in the file); repeatable
    #[arg(long = "label", value_name = "KEY=VALUE",
          value_parser = crate::discovery::parse_label)]
    pub labels: Vec<(String, String)>,
    /// Also trust as peer relays the relays (records of kind `relay`) this selector matches,
    /// e.g. `area.region=eu` or `name in (relay-1,relay-2)`; add --token key ids shared only by
    /// relays (`relay_key_ids` in --config) so that a name alone is not enough (needs
    /// discovery here or in the file)
    #[arg(long, value_name = "SELECTOR", value_parser = Selector::parse)]
    pub peer_relay_selector: Option<Selector>,
}

/// Help text after the options.
pub const RELAY_HELP: &str = "\
Prints `listening on URL` per bound listener and, with --metrics-listen, `metrics on
http://HOST:PORT/metrics`, then forwards frames until SIGINT/SIGTERM: every link is closed with
SHUTDOWN (peers get a link_close) and the process exits with status 0. A second signal exits at
once. Exit status 1 when it cannot start (bad configuration, address in use), 2 on bad arguments.

Nodes reach other nodes through the relay when they trust it and route through it:
  atbus node --name echo --listen tcp://127.0.0.1:0 --connect tcp://127.0.0.1:7100 \\
    --upstream-relay relay-1 --echo
  atbus send --name client --connect tcp://127.0.0.1:7100 --upstream-relay relay-1 --to echo

Tokens: as for `atbus node` (--token, --token-file or ATBUS_TOKEN); the file's [[tokens]] are
used when none is given here. Logs go to standard error through tracing (RUST_LOG).

Discovery: with --discovery SPEC the relay registers a record of kind `relay` (its --listen
addresses for its own namespace, every --gateway for other namespaces; it prints `registered
NAME in SPEC`), follows every record, routes a node whose record advertises another relay
through that relay, and dials the relays it routes through (the upstream, advertised relays)
at the addresses their records give it. Only trusted relays carry forwarded frames: those of
--peer-relay, --upstream-relay, the file, and with --peer-relay-selector the relay records the
selector matches. Answers to a node that reached this relay through a trusted relay go back
through that relay (learned from the traffic, forgotten after 60 s without it).

Examples:
  atbus relay --name relay-1 --namespace ns1 --listen tcp://0.0.0.0:7100 \\
    --metrics-listen 127.0.0.1:9100
  atbus relay --name relay-2 --namespace ns2 --listen tcp://10.0.2.1:7200 \\
    --gateway tcp://relay-2.example.com:7200 --discovery etcd://127.0.0.1:2379 \\
    --peer-relay-selector kind=relay";

/// Builds the relay configuration: the file (if any), then the command-line options.
pub fn config(args: &RelayArgs) -> anyhow::Result<RelayConfig> {
    merge(args).map(|(config, _)| config)
}

/// The file (if any) under the command line: the relay core's configuration, and the arguments
/// with the file's service settings (`listen`, `metrics_listen`, `token_file`, `discovery`,
/// `gateways`, `peer_relay_selector`) filled in where the command line gives none.
pub fn merge(args: &RelayArgs) -> anyhow::Result<(RelayConfig, RelayArgs)> {
    let mut merged = args.clone();
    let mut file_tokens = None;
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let file =
                RelayFile::from_toml(&text).with_context(|| format!("in {}", path.display()))?;
            fill_from_file(&mut merged, &file).with_context(|| format!("in {}", path.display()))?;
            file_tokens = file.token_file.clone();
            file.config
        }
        None => RelayConfig::new(String::new()),
    };
    if merged.listen.is_empty() {
        anyhow::bail!("the relay needs an address: --listen URL or `listen` in the --config file");
    }
    if merged.discovery.is_none() {
        let needs = [
            (!merged.gateways.is_empty(), "--gateway (`gateways`)"),
            (!merged.labels.is_empty(), "--label"),
            (
                merged.peer_relay_selector.is_some(),
                "--peer-relay-selector",
            ),
        ];
        if let Some((_, what)) = needs.iter().find(|(set, _)| *set) {
            anyhow::bail!("{what} needs --discovery SPEC or `discovery` in the --config file");
        }
    }
    if let Some(name) = &args.name {
        config.node.name.clone_from(name);
    }
    if config.node.name.is_empty() {
        anyhow::bail!("the relay needs a name: --name NAME or `name` in the --config file");
    }
    if let Some(ns) = &args.namespace {
        config.node.namespace.clone_from(ns);
    }
    config
        .node
        .connect
        .extend(args.connect.iter().map(Url::to_string));
    for relay in &args.peer_relays {
        if !config.peer_relays.contains(relay) {
            config.peer_relays.push(relay.clone());
        }
    }
    if let Some(up) = &args.upstream_relay {
        config.upstream = Some(up.clone());
        if !config.peer_relays.contains(up) {
            config.peer_relays.push(up.clone());
        }
    }
    let tokens = crate::token::collect(&args.tokens, args.token_file.as_deref())
        .context("cannot read the tokens")?;
    if !tokens.is_empty() {
        config.node.tokens = tokens;
    } else if let Some(path) = file_tokens {
        // None on the command line or in ATBUS_TOKEN: the file's `token_file` joins its
        // [[tokens]].
        let more = crate::token::read_file(&path)
            .with_context(|| format!("cannot read the token_file {}", path.display()))?;
        config.node.tokens.extend(more);
    }
    Ok((config, merged))
}

/// Takes the file's service settings for what the command line leaves unset (an argument
/// given on the command line replaces the file's value).
fn fill_from_file(args: &mut RelayArgs, file: &RelayFile) -> anyhow::Result<()> {
    if args.listen.is_empty() {
        args.listen = file
            .listen
            .iter()
            .map(|u| u.parse::<Url>().with_context(|| format!("listen {u:?}")))
            .collect::<anyhow::Result<_>>()?;
    }
    if args.metrics_listen.is_none() {
        args.metrics_listen = file.metrics_listen;
    }
    if args.discovery.is_none() {
        if let Some(spec) = &file.discovery {
            args.discovery =
                Some(Spec::parse(spec).with_context(|| format!("discovery {spec:?}"))?);
        }
    }
    if args.gateways.is_empty() {
        args.gateways = file
            .gateways
            .iter()
            .map(|g| g.parse().with_context(|| format!("gateways {g:?}")))
            .collect::<anyhow::Result<_>>()?;
    }
    if args.peer_relay_selector.is_none() {
        args.peer_relay_selector
            .clone_from(&file.peer_relay_selector);
    }
    Ok(())
}

/// Runs the relay until `stop` is requested; prints `listening on URL` per listener and
/// `metrics on URL` to `out`.
pub fn run(args: &RelayArgs, stop: &StopSignal, out: &mut impl Write) -> anyhow::Result<()> {
    let (config, args) = merge(args)?;
    let args = &args;
    let name = config.node.name.clone();
    let mut driver = RelayDriver::new(config, TransportConfig::default())?;
    stop.attach(driver.transport().handle());
    let mut bound_urls = Vec::new();
    for url in &args.listen {
        let bound = driver
            .listen(url)
            .with_context(|| format!("cannot listen on {url}"))?;
        writeln!(out, "listening on {bound}")?;
        tracing::info!(%bound, "listening");
        bound_urls.push(bound.to_string());
    }
    let metrics = match args.metrics_listen {
        Some(addr) => {
            let server = MetricsServer::start(addr)
                .with_context(|| format!("cannot serve metrics on {addr}"))?;
            // Published before the address is printed: no scrape sees an empty snapshot.
            server.publish(MetricsSnapshot::of(driver.relay()));
            writeln!(out, "metrics on http://{}/metrics", server.local_addr())?;
            Some(server)
        }
        None => None,
    };
    let mut routing = match &args.discovery {
        Some(spec) => {
            let record = relay_record(args, &driver, &bound_urls);
            let mut routing = DiscoveryRouting::start(spec, record, &driver)?;
            writeln!(out, "registered {name} in {spec}")?;
            routing.step(&mut driver, args.peer_relay_selector.as_ref());
            Some(routing)
        }
        None => None,
    };
    out.flush()?;
    tracing::info!(relay = %name, "relay running");
    let mut published = Instant::now();
    let mut published_counters = counters(&driver);
    while !stop.is_requested() {
        // Counters that changed are published at most PUBLISH_INTERVAL later, even when idle.
        let dirty = metrics.is_some() && counters(&driver) != published_counters;
        let wait = if dirty {
            PUBLISH_INTERVAL.saturating_sub(published.elapsed())
        } else {
            Duration::from_millis(100)
        };
        driver.run_once(Some(wait))?;
        while let Some(failure) = driver.poll_link_failure() {
            tracing::warn!(url = %failure.url, reason = ?failure.reason, "connect failed");
            if let Some(r) = routing.as_mut() {
                r.dial_failed(&failure.url);
            }
        }
        while let Some(event) = driver.poll_event() {
            match event {
                RelayEvent::LinkUp { link, peer, relay } => {
                    tracing::info!(link = link.0, %peer, relay, "link up");
                    if let Some(r) = routing.as_mut() {
                        r.linked(&peer);
                    }
                }
                RelayEvent::LinkDown { link, peer, reason } => {
                    tracing::info!(link = link.0, %peer, ?reason, "link down");
                }
                RelayEvent::LinkRejected { link, reason } => {
                    tracing::warn!(link = link.0, %reason, "link refused");
                }
                other => tracing::debug!(?other, "event"),
            }
        }
        if let Some(r) = routing.as_mut() {
            r.step(&mut driver, args.peer_relay_selector.as_ref());
        }
        if let Some(server) = &metrics {
            if published.elapsed() >= PUBLISH_INTERVAL {
                server.publish(MetricsSnapshot::of(driver.relay()));
                published = Instant::now();
                published_counters = counters(&driver);
            }
        }
    }
    let m = driver.relay().metrics();
    tracing::info!(
        forwarded = m.frames_forwarded,
        dropped = m.drops_total(),
        "stopping"
    );
    if let Some(r) = routing.take() {
        r.stop(&name);
    }
    driver.shutdown(Duration::from_secs(2))?;
    if let Some(server) = metrics {
        server.stop();
    }
    Ok(())
}

/// The relay's own record: kind `relay`, its bound listen addresses for its own namespace,
/// the `--gateway`s for everyone.
fn relay_record(args: &RelayArgs, driver: &RelayDriver, bound: &[String]) -> NodeRecord {
    let config = driver.relay().config();
    let labels: BTreeMap<String, String> = config
        .node
        .labels
        .clone()
        .into_iter()
        .chain(args.labels.iter().cloned())
        .collect();
    let mut record = crate::discovery::node_record(&RecordParts {
        name: driver.relay().name(),
        namespace: &config.node.namespace,
        labels: &labels,
        listen: bound,
        gateways: &args.gateways,
    });
    record.metadata.kind = RELAY_KIND.to_owned();
    record
}

/// How long a dial to a relay found through discovery may take to come up.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before dialling a relay again after a failed attempt.
const REDIAL_DELAY: Duration = Duration::from_millis(500);

/// The relay's side of discovery: its registration, a watch on every record (routes, peer
/// relays), and dials to the relays it routes through.
struct DiscoveryRouting {
    spec: Spec,
    backend: Backend,
    own: NodeRecord,
    cache: RecordCache,
    /// Peer relays from the command line and the file (always trusted).
    configured_peers: Vec<String>,
    /// Relay name → (URL being dialled, since when).
    dialling: BTreeMap<String, (Url, Instant)>,
    /// Relay name → (attempts so far, not before).
    retry: BTreeMap<String, (usize, Instant)>,
    /// Relays routed through that are not trusted (warned once).
    warned: BTreeSet<String>,
    dirty: bool,
}

impl DiscoveryRouting {
    /// Registers `own` (put-if-absent) and opens a watch on every record.
    fn start(spec: &Spec, own: NodeRecord, driver: &RelayDriver) -> anyhow::Result<Self> {
        own.validate()
            .map_err(|errors| anyhow::anyhow!("invalid relay record: {errors}"))?;
        let mut backend = spec.open()?;
        backend
            .register(own.clone())
            .with_context(|| format!("cannot register relay {:?} in {spec}", own.name))?;
        tracing::info!(%spec, "registered");
        let mut routing = Self {
            spec: spec.clone(),
            backend,
            own,
            cache: RecordCache::new(),
            configured_peers: driver.relay().config().peer_relays.clone(),
            dialling: BTreeMap::new(),
            retry: BTreeMap::new(),
            warned: BTreeSet::new(),
            dirty: false,
        };
        routing.watch();
        Ok(routing)
    }

    fn watch(&mut self) {
        self.cache.watch = Some(self.backend.as_dyn().watch(&Selector::everything()));
    }

    /// Takes in discovery events, updates the relay's peer relays and routes when records
    /// changed, and dials relays it routes through but has no trusted link to.
    fn step(&mut self, driver: &mut RelayDriver, selector: Option<&Selector>) {
        while let Some(event) = self.backend.as_dyn().poll_event() {
            match self.cache.apply(&event) {
                CacheChange::Changed => self.dirty = true,
                CacheChange::Rewatch => {
                    tracing::warn!(spec = %self.spec, "discovery watch lost; watching again");
                    self.watch();
                }
                CacheChange::None => match event {
                    atbus_discovery::DiscoveryEvent::Error { error, .. } => {
                        tracing::warn!(%error, "discovery");
                    }
                    other => tracing::debug!(?other, "discovery event"),
                },
            }
        }
        if std::mem::take(&mut self.dirty) {
            let own = self.own.name.clone();
            let mut peers = self.configured_peers.clone();
            if let Some(selector) = selector {
                peers.extend(
                    self.cache
                        .records()
                        .filter(|r| r.name != own && r.metadata.kind == RELAY_KIND)
                        .filter(|r| selector.matches(r))
                        .map(|r| r.name.clone()),
                );
            }
            let relay = driver.relay_mut();
            relay.set_peer_relays(peers);
            relay.set_discovered_routes(self.cache.records());
            tracing::debug!(
                peers = ?relay.config().peer_relays,
                "routes and peer relays from discovery"
            );
        }
        self.dial(driver);
    }

    fn dial(&mut self, driver: &mut RelayDriver) {
        let now = Instant::now();
        self.dialling.retain(|name, (url, since)| {
            let waiting = now.duration_since(*since) < DIAL_TIMEOUT;
            if !waiting {
                tracing::warn!(relay = %name, %url, "no link in time");
            }
            waiting
        });
        let missing = driver.relay().missing_relays();
        for name in missing {
            if self.dialling.contains_key(&name) || !driver.relay().links_to(&name).is_empty() {
                continue;
            }
            if !driver.relay().config().peer_relays.contains(&name) {
                if self.warned.insert(name.clone()) {
                    tracing::warn!(relay = %name, "routes go through a relay that is not trusted; \
                        add it with --peer-relay or --peer-relay-selector");
                }
                continue;
            }
            let (attempts, not_before) = self.retry.get(&name).copied().unwrap_or((0, now));
            if now < not_before {
                continue;
            }
            let Some(record) = self.cache.get(&name) else {
                continue;
            };
            let urls = crate::routing::direct_urls(&self.own, record);
            if urls.is_empty() {
                if self.warned.insert(name.clone()) {
                    tracing::warn!(relay = %name, "its record has no address for this relay");
                }
                continue;
            }
            let connect = &driver.relay().config().node.connect;
            if urls.iter().any(|u| connect.contains(&u.to_string())) {
                // A configured --connect reaches it: the relay core (re)dials that one.
                continue;
            }
            let url = urls[attempts % urls.len()].clone();
            self.retry
                .insert(name.clone(), (attempts + 1, now + REDIAL_DELAY));
            match driver.connect(&url) {
                Ok(_) => {
                    tracing::info!(relay = %name, %url, "dialling a relay found through discovery");
                    self.dialling.insert(name, (url, now));
                }
                Err(err) => tracing::warn!(relay = %name, %url, %err, "cannot dial"),
            }
        }
    }

    /// A link to `peer` came up.
    fn linked(&mut self, peer: &str) {
        if self.dialling.remove(peer).is_some() {
            self.retry.remove(peer);
        }
        self.warned.remove(peer);
    }

    /// A dial to `url` failed before the link came up.
    fn dial_failed(&mut self, url: &Url) {
        self.dialling.retain(|_, (u, _)| u != url);
    }

    /// Deregisters the relay and revokes its lease.
    fn stop(mut self, name: &str) {
        if let Err(err) = self.backend.deregister(name, Duration::from_secs(3)) {
            tracing::warn!(%err, "deregister failed");
        }
        self.backend.shutdown();
    }
}

/// The relay-wide counters that make a published snapshot stale.
fn counters(driver: &RelayDriver) -> (u64, u64, u64, usize) {
    let m = driver.relay().metrics();
    (
        m.frames_received,
        m.frames_forwarded,
        m.drops_total(),
        driver.link_count(),
    )
}

/// Logs to standard error, filtered by `RUST_LOG` (default `info`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .try_init();
}

/// SIGINT or SIGTERM asks the node or relay to stop (its loop wakes at once); a second one ends the
/// process without waiting. Used by `atbus relay`, `atbus-relay` and `atbus node`.
pub fn watch_signals(stop: StopSignal) -> io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("atbus-signals".into())
        .spawn(move || {
            let mut signals = signals.forever();
            if signals.next().is_some() {
                tracing::info!("stop requested");
                stop.request();
            }
            if let Some(signal) = signals.next() {
                eprintln!("atbus: second signal, exiting at once");
                std::process::exit(128 + signal);
            }
        })?;
    Ok(())
}

/// The whole command: logs, signals, run; the exit status.
pub fn main(args: &RelayArgs) -> ExitCode {
    init_tracing();
    let stop = StopSignal::new();
    if let Err(err) = watch_signals(stop.clone()) {
        eprintln!("atbus: error: cannot install the signal handler: {err}");
        return ExitCode::from(2);
    }
    match run(args, &stop, &mut io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("atbus: error: {err:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: RelayArgs,
    }

    fn args(line: &[&str]) -> RelayArgs {
        Cli::try_parse_from(std::iter::once("atbus-relay").chain(line.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn options_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(
            &path,
            "name = \"from-file\"\nnamespace = \"a\"\nconnect = [\"tcp://127.0.0.1:1\"]\n\
             peer_relays = [\"r2\"]\n",
        )
        .unwrap();
        let c = config(&args(&[
            "--config",
            path.to_str().unwrap(),
            "--namespace",
            "b",
            "--listen",
            "tcp://127.0.0.1:0",
            "--connect",
            "tcp://127.0.0.1:2",
            "--upstream-relay",
            "r3",
            "--token",
            "k:0123456789abcdef",
        ]))
        .unwrap();
        assert_eq!(c.node.name, "from-file");
        assert_eq!(c.node.namespace, "b");
        assert_eq!(c.node.connect, ["tcp://127.0.0.1:1", "tcp://127.0.0.1:2"]);
        assert_eq!(c.upstream.as_deref(), Some("r3"));
        assert_eq!(c.peer_relays, ["r2", "r3"]);
        assert_eq!(c.node.tokens.len(), 1);
    }

    #[test]
    fn a_name_is_required() {
        let err = config(&args(&["--listen", "tcp://127.0.0.1:0"])).unwrap_err();
        assert!(err.to_string().contains("needs a name"), "{err}");
        let c = config(&args(&["--name", "r", "--listen", "tcp://127.0.0.1:0"])).unwrap();
        assert_eq!(c.node.name, "r");
        assert!(c.upstream.is_none());
    }

    #[test]
    fn the_relay_record_is_of_kind_relay_with_internal_and_public_gateways() {
        let a = args(&[
            "--name",
            "relay-x",
            "--namespace",
            "ns9",
            "--listen",
            "tcp://127.0.0.1:0",
            "--discovery",
            "embedded",
            "--gateway",
            "tcp://relay-x.example.com:7000@5",
            "--label",
            "zone=a",
        ]);
        let driver = RelayDriver::new(config(&a).unwrap(), TransportConfig::default()).unwrap();
        let record = relay_record(&a, &driver, &["tcp://127.0.0.1:7100".to_owned()]);
        assert!(record.validate().is_ok(), "{record:?}");
        assert_eq!(record.name, "relay-x");
        assert_eq!(record.metadata.kind, RELAY_KIND);
        assert_eq!(record.metadata.namespace_name, "ns9");
        assert_eq!(
            record.metadata.labels.get("zone").map(String::as_str),
            Some("a")
        );
        assert_eq!(record.gateways.len(), 2);
        assert_eq!(record.gateways[0].address, ["tcp://127.0.0.1:7100"]);
        assert!(record.gateways[0].is_internal_to("ns9"));
        assert_eq!(
            record.gateways[1].address,
            ["tcp://relay-x.example.com:7000"]
        );
        assert_eq!(record.gateways[1].priority, 5);
        assert!(record.gateways[1].match_rule.is_empty(), "for every caller");
    }

    #[test]
    fn discovery_options_need_discovery() {
        for extra in [
            ["--peer-relay-selector", "kind=relay"],
            ["--gateway", "tcp://gw.example.com:1"],
            ["--label", "zone=a"],
        ] {
            let mut line = vec!["--name", "r", "--listen", "tcp://127.0.0.1:0"];
            line.extend(extra);
            let err = config(&args(&line)).unwrap_err();
            assert!(err.to_string().contains("needs --discovery"), "{err}");
            line.extend(["--discovery", "embedded"]);
            assert!(config(&args(&line)).is_ok(), "{line:?}");
        }
    }

    /// Writes `text` as a relay file and returns (dir, path).
    fn relay_file(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, text).unwrap();
        let path = path.to_str().unwrap().to_owned();
        (dir, path)
    }

    fn selector_text(a: &RelayArgs) -> Option<String> {
        a.peer_relay_selector.as_ref().map(ToString::to_string)
    }

    #[test]
    fn the_file_gives_the_service_settings() {
        let (dir, path) = relay_file("");
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, "file-key:0123456789abcdef\n").unwrap();
        std::fs::write(
            &path,
            format!(
                "name = \"relay-f\"\nlisten = [\"tcp://127.0.0.1:0\"]\n\
                 metrics_listen = \"127.0.0.1:0\"\ndiscovery = \"embedded\"\n\
                 gateways = [\"tcp://relay-f.example.com:7000@5\"]\n\
                 peer_relay_selector = \"kind=relay\"\ntoken_file = {:?}\n\
                 [[tokens]]\nkey_id = \"inline\"\nsecret = \"0123456789abcdef\"\n",
                tokens.display()
            ),
        )
        .unwrap();
        // ATBUS_TOKEN would replace the file's tokens.
        assert!(std::env::var_os(crate::token::TOKEN_ENV).is_none());
        let (c, merged) = merge(&args(&["--config", &path])).unwrap();
        assert_eq!(c.node.name, "relay-f");
        assert_eq!(merged.listen.len(), 1);
        assert_eq!(merged.listen[0].to_string(), "tcp://127.0.0.1:0");
        assert_eq!(merged.metrics_listen, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(
            merged.discovery.as_ref().map(Spec::to_string).as_deref(),
            Some("embedded")
        );
        assert_eq!(merged.gateways.len(), 1);
        assert_eq!(merged.gateways[0].url, "tcp://relay-f.example.com:7000");
        assert_eq!(merged.gateways[0].priority, 5);
        assert_eq!(selector_text(&merged).as_deref(), Some("kind=relay"));
        let ids: Vec<&str> = c.node.tokens.iter().map(|t| t.key_id()).collect();
        assert_eq!(ids, ["inline", "file-key"]);

        // The command line replaces each of them.
        let (c, merged) = merge(&args(&[
            "--config",
            &path,
            "--listen",
            "tcp://127.0.0.1:7",
            "--metrics-listen",
            "127.0.0.1:8",
            "--discovery",
            "static:/x.toml",
            "--gateway",
            "tcp://other.example.com:1",
            "--peer-relay-selector",
            "zone=b",
            "--token",
            "cli:0123456789abcdef",
        ]))
        .unwrap();
        assert_eq!(merged.listen[0].to_string(), "tcp://127.0.0.1:7");
        assert_eq!(merged.metrics_listen, Some("127.0.0.1:8".parse().unwrap()));
        assert_eq!(
            merged.discovery.as_ref().map(Spec::to_string).as_deref(),
            Some("static:/x.toml")
        );
        assert_eq!(merged.gateways[0].url, "tcp://other.example.com:1");
        assert_eq!(selector_text(&merged).as_deref(), Some("zone=b"));
        let ids: Vec<&str> = c.node.tokens.iter().map(|t| t.key_id()).collect();
        assert_eq!(ids, ["cli"]);
    }

    #[test]
    fn bad_file_settings_name_the_key_and_the_file() {
        let err = config(&args(&["--name", "r"])).unwrap_err();
        assert!(err.to_string().contains("needs an address"), "{err}");
        for (text, says) in [
            ("name = \"r\"", "needs an address"),
            ("name = \"r\"\nlisten = [\"ftp://x:1\"]", "listen"),
            (
                "name = \"r\"\nlisten = [\"tcp://127.0.0.1:0\"]\ndiscovery = \"consul://x\"",
                "discovery",
            ),
            (
                "name = \"r\"\nlisten = [\"tcp://127.0.0.1:0\"]\ngateways = [\"tcp://g:1@hi\"]",
                "gateways",
            ),
            (
                "name = \"r\"\nlisten = [\"tcp://127.0.0.1:0\"]\ngateways = [\"tcp://g:1\"]",
                "needs --discovery",
            ),
            (
                "name = \"r\"\nlisten = [\"tcp://127.0.0.1:0\"]\ntoken_file = \"/nonexistent/t\"",
                "/nonexistent/t",
            ),
        ] {
            let (_dir, path) = relay_file(text);
            let err = config(&args(&["--config", &path])).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains(says), "{text}: {msg}");
            if ["listen", "discovery", "gateways"].contains(&says) {
                assert!(msg.contains(&path), "{text}: {msg}");
            }
        }
    }
}
