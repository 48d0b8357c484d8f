//! Service discovery from the command line: the `--discovery SPEC` parser, the backend it
//! opens, the record `atbus node` publishes and the output of `atbus discovery list`.
//!
//! Specs:
//!
//! - `etcd://host:port[,host:port…]`: the etcd backend ([`atbus_discovery_etcd`]), shared by
//!   every process pointing at the same cluster;
//! - `etcds://host:port[,…]?ca=FILE[&cert=FILE&key=FILE][&domain=NAME]`: the same over TLS,
//!   trusting the CA in `ca` (required), presenting `cert`/`key` to an etcd that demands
//!   client certificates, checking `domain` instead of the host name when given;
//! - `static:FILE`: a TOML file of `[[node]]` tables loaded into an in-process registry;
//! - `embedded` (or no `--discovery` at all): an empty in-process registry, local to the
//!   process.
//!
//! ```
//! use atbus_cli::discovery::Spec;
//!
//! assert!(matches!(Spec::parse("static:nodes.toml")?, Spec::Static(_)));
//! assert!(matches!(Spec::parse("etcd://127.0.0.1:2379")?, Spec::Etcd(_)));
//! assert!(matches!(Spec::parse("etcds://127.0.0.1:2379?ca=ca.pem")?, Spec::Etcd(_)));
//! assert!(Spec::parse("zookeeper://x").is_err());
//! # Ok::<(), atbus_cli::discovery::SpecError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use atbus_discovery::{
    Discovery, DiscoveryEvent, Gateway, GatewayMatch, MemoryDiscovery, MemoryRegistry,
    MetadataMatch, NodeRecord, RequestId, Selector, StaticFileError,
};
use atbus_discovery_etcd::{EtcdConfig, EtcdDiscovery, SetupError};

/// Where records live, as given by `--discovery`.
#[derive(Debug, Clone)]
pub enum Spec {
    /// An in-process registry, empty at start: registration is visible to this process only.
    Embedded,
    /// A static TOML file, loaded into an in-process registry when opened.
    Static(PathBuf),
    /// An etcd cluster.
    Etcd(Box<EtcdConfig>),
}

/// Why a discovery spec cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The spec is empty.
    #[error(
        "discovery spec is empty (expected etcd://HOST:PORT[,…], etcds://HOST:PORT[,…]?ca=FILE, static:FILE or embedded)"
    )]
    Empty,
    /// The spec names no known backend.
    #[error(
        "discovery spec {spec:?}: unknown backend {scheme:?} (expected etcd://HOST:PORT[,…], etcds://HOST:PORT[,…]?ca=FILE, static:FILE or embedded)"
    )]
    UnknownBackend {
        /// The spec given.
        spec: String,
        /// The part before `:` (or the whole spec).
        scheme: String,
    },
    /// `static:` without a file name.
    #[error("discovery spec {spec:?}: static: needs a file name (static:FILE)")]
    NoFile {
        /// The spec given.
        spec: String,
    },
    /// The etcd part is malformed.
    #[error("discovery spec {spec:?}: {source}")]
    Etcd {
        /// The spec given.
        spec: String,
        /// What the etcd backend found wrong.
        source: atbus_discovery_etcd::SpecError,
    },
    /// The static file cannot be read.
    #[error("static discovery file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The static file does not hold valid records.
    #[error("static discovery file {}: {source}", path.display())]
    Static {
        /// The file.
        path: PathBuf,
        /// What is wrong in it.
        source: StaticFileError,
    },
    /// The etcd backend could not start.
    #[error("etcd discovery: {0}")]
    Setup(#[from] SetupError),
}

impl Spec {
    /// Parses a spec (no I/O: a static file is read by [`open`](Spec::open)).
    pub fn parse(spec: &str) -> Result<Self, SpecError> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(SpecError::Empty);
        }
        if spec == "embedded" {
            return Ok(Spec::Embedded);
        }
        if let Some(file) = spec.strip_prefix("static:") {
            if file.is_empty() {
                return Err(SpecError::NoFile {
                    spec: spec.to_owned(),
                });
            }
            return Ok(Spec::Static(PathBuf::from(file)));
        }
        if spec.starts_with("etcd://") || spec.starts_with("etcds://") {
            return EtcdConfig::from_spec(spec)
                .map(|c| Spec::Etcd(Box::new(c)))
                .map_err(|source| SpecError::Etcd {
                    spec: spec.to_owned(),
                    source,
                });
        }
        let scheme = spec.split(':').next().unwrap_or(spec).to_owned();
        Err(SpecError::UnknownBackend {
            spec: spec.to_owned(),
            scheme,
        })
    }

    /// Opens the backend: reads and validates a static file, or starts the etcd worker
    /// (connecting happens in the background).
    pub fn open(&self) -> Result<Backend, SpecError> {
        match self {
            Spec::Embedded => Ok(Backend::Memory(MemoryRegistry::new().handle())),
            Spec::Static(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
                    path: path.clone(),
                    source,
                })?;
                let registry =
                    MemoryRegistry::from_toml_str(&text).map_err(|source| SpecError::Static {
                        path: path.clone(),
                        source,
                    })?;
                Ok(Backend::Memory(registry.handle()))
            }
            Spec::Etcd(config) => Ok(Backend::Etcd(Box::new(EtcdDiscovery::new(
                (**config).clone(),
            )?))),
        }
    }

    /// Whether records registered through this spec are visible to other processes.
    pub fn is_shared(&self) -> bool {
        matches!(self, Spec::Etcd(_))
    }
}

impl FromStr for Spec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Spec::parse(s)
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Spec::Embedded => f.write_str("embedded"),
            Spec::Static(path) => write!(f, "static:{}", path.display()),
            Spec::Etcd(config) => {
                write!(f, "etcd {}", config.endpoints.join(","))?;
                match &config.tls {
                    Some(tls) if tls.cert_pem.is_some() => f.write_str(" (mutual TLS)"),
                    Some(_) => f.write_str(" (TLS)"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// An open backend.
pub enum Backend {
    /// Embedded or static: a handle on an in-process registry.
    Memory(MemoryDiscovery),
    /// etcd.
    Etcd(Box<EtcdDiscovery>),
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Memory(_) => f.write_str("Backend::Memory"),
            Backend::Etcd(d) => write!(f, "Backend::Etcd({:?})", d.config().endpoints),
        }
    }
}

/// A request that did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The backend refused it.
    #[error("{0}")]
    Refused(atbus_discovery::RefuseReason),
    /// The backend failed.
    #[error("{0}")]
    Failed(atbus_discovery::DiscoveryError),
    /// No answer in time.
    #[error("no answer from discovery within {0:?}")]
    Timeout(Duration),
}

impl Backend {
    /// The backend as the [`Discovery`] trait.
    pub fn as_dyn(&mut self) -> &mut dyn Discovery {
        match self {
            Backend::Memory(d) => d,
            Backend::Etcd(d) => &mut **d,
        }
    }

    /// How long a blocking request may take: the etcd request timeout plus a margin.
    pub fn answer_timeout(&self) -> Duration {
        match self {
            Backend::Memory(_) => Duration::from_secs(1),
            Backend::Etcd(d) => d.config().request_timeout + Duration::from_secs(2),
        }
    }

    fn next_event(&mut self, timeout: Duration) -> Option<DiscoveryEvent> {
        match self {
            Backend::Memory(d) => d.poll_event(),
            Backend::Etcd(d) => d.wait_event(timeout),
        }
    }

    /// Waits up to `timeout` for the answer to `request`; other events are logged and dropped.
    pub fn wait_answer(
        &mut self,
        request: RequestId,
        timeout: Duration,
    ) -> Result<DiscoveryEvent, RequestError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RequestError::Timeout(timeout));
            }
            let Some(event) = self.next_event(left) else {
                if matches!(self, Backend::Memory(_)) {
                    return Err(RequestError::Timeout(timeout));
                }
                continue;
            };
            match event {
                DiscoveryEvent::Refused { request: r, reason } if r == request => {
                    return Err(RequestError::Refused(reason));
                }
                DiscoveryEvent::Error {
                    request: Some(r),
                    error,
                } if r == request => return Err(RequestError::Failed(error)),
                DiscoveryEvent::Registered { request: r, .. }
                | DiscoveryEvent::Updated { request: r, .. }
                | DiscoveryEvent::Deregistered { request: r, .. }
                | DiscoveryEvent::Record { request: r, .. }
                | DiscoveryEvent::List { request: r, .. }
                    if r == request =>
                {
                    return Ok(event);
                }
                other => log_event(other),
            }
        }
    }

    /// Logs and drops the events queued so far (for a node that has no watches).
    pub fn drain(&mut self) {
        while let Some(event) = self.as_dyn().poll_event() {
            log_event(event);
        }
    }

    /// Registers `record` (put-if-absent) and waits for the answer.
    pub fn register(&mut self, record: NodeRecord) -> Result<(), RequestError> {
        let timeout = self.answer_timeout();
        let request = self.as_dyn().register(record);
        self.wait_answer(request, timeout).map(drop)
    }

    /// Removes `name` and waits (up to `timeout`) for the answer.
    pub fn deregister(&mut self, name: &str, timeout: Duration) -> Result<(), RequestError> {
        let request = self.as_dyn().deregister(name);
        self.wait_answer(request, timeout).map(drop)
    }

    /// Lists the records `selector` matches, ordered by name.
    pub fn list(&mut self, selector: &Selector) -> Result<Vec<NodeRecord>, RequestError> {
        let timeout = self.answer_timeout();
        let request = self.as_dyn().list(selector);
        match self.wait_answer(request, timeout)? {
            DiscoveryEvent::List { records, .. } => Ok(records),
            other => Err(RequestError::Failed(
                atbus_discovery::DiscoveryError::Unavailable {
                    reason: format!("unexpected answer {other:?}"),
                },
            )),
        }
    }

    /// Stops the backend; for etcd this revokes the lease (so this handle's records vanish).
    pub fn shutdown(&mut self) {
        if let Backend::Etcd(d) = self {
            d.shutdown();
        }
    }
}

fn log_event(event: DiscoveryEvent) {
    match event {
        DiscoveryEvent::Error { error, .. } => tracing::warn!(%error, "discovery"),
        DiscoveryEvent::Overflow { dropped, .. } => {
            tracing::warn!(dropped, "discovery events dropped");
        }
        other => tracing::debug!(?other, "discovery event"),
    }
}

/// A `--gateway URL[@PRIORITY]` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayArg {
    /// The address.
    pub url: String,
    /// Its priority (higher first); 0 when not given.
    pub priority: i32,
}

/// Why a `--gateway` or `--label` argument is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgError {
    /// The priority after `@` is not an integer.
    #[error("gateway {arg:?}: priority {priority:?} is not an integer (URL[@PRIORITY])")]
    Priority {
        /// The argument.
        arg: String,
        /// The part after `@`.
        priority: String,
    },
    /// No URL.
    #[error("gateway {arg:?}: no URL (URL[@PRIORITY])")]
    NoUrl {
        /// The argument.
        arg: String,
    },
    /// A label without `=`.
    #[error("label {arg:?}: expected KEY=VALUE")]
    Label {
        /// The argument.
        arg: String,
    },
}

impl FromStr for GatewayArg {
    type Err = ArgError;

    fn from_str(arg: &str) -> Result<Self, Self::Err> {
        let (url, priority) = match arg.rsplit_once('@') {
            Some((url, p)) => {
                let priority = p.trim().parse::<i32>().map_err(|_| ArgError::Priority {
                    arg: arg.to_owned(),
                    priority: p.to_owned(),
                })?;
                (url, priority)
            }
            None => (arg, 0),
        };
        if url.trim().is_empty() {
            return Err(ArgError::NoUrl {
                arg: arg.to_owned(),
            });
        }
        Ok(GatewayArg {
            url: url.trim().to_owned(),
            priority,
        })
    }
}

/// Parses a `--label KEY=VALUE` argument (the value may be empty; checked by record
/// validation).
pub fn parse_label(arg: &str) -> Result<(String, String), ArgError> {
    match arg.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(ArgError::Label {
            arg: arg.to_owned(),
        }),
    }
}

/// This machine's host name (from `/proc/sys/kernel/hostname`, `/etc/hostname` or `HOSTNAME`),
/// or empty when none is known or it would not pass record validation.
pub fn hostname() -> String {
    let candidates = [
        std::fs::read_to_string("/proc/sys/kernel/hostname").ok(),
        std::fs::read_to_string("/etc/hostname").ok(),
        std::env::var("HOSTNAME").ok(),
    ];
    candidates
        .into_iter()
        .flatten()
        .map(|h| h.trim().to_owned())
        .find(|h| !h.is_empty() && atbus_discovery::validate::check_hostname(h).is_ok())
        .unwrap_or_default()
}

/// What a node publishes about itself.
#[derive(Debug, Clone)]
pub struct RecordParts<'a> {
    /// Node name.
    pub name: &'a str,
    /// Namespace (may be empty).
    pub namespace: &'a str,
    /// Labels.
    pub labels: &'a BTreeMap<String, String>,
    /// Bound listen URLs (its internal addresses).
    pub listen: &'a [String],
    /// Further gateways.
    pub gateways: &'a [GatewayArg],
}

/// Builds the record of a node: version = this crate's version, host = this machine and
/// process, its bound listen addresses as one gateway matching its own namespace (everyone
/// when the namespace is empty), then one gateway per `--gateway`. Addresses no peer can
/// connect to (`0.0.0.0`, `[::]`) are left out of the internal gateway.
pub fn node_record(parts: &RecordParts<'_>) -> NodeRecord {
    let mut record = NodeRecord::new(parts.name);
    record.version = env!("CARGO_PKG_VERSION").to_owned();
    record.host.hostname = hostname();
    record.host.pid = std::process::id();
    record.metadata.namespace_name = parts.namespace.to_owned();
    record.metadata.labels = parts.labels.clone();
    let internal: Vec<String> = parts
        .listen
        .iter()
        .filter(|u| {
            let unspecified = u.contains("://0.0.0.0:") || u.contains("://[::]:");
            if unspecified {
                tracing::warn!(url = %u, "not published: peers cannot connect to it");
            }
            !unspecified
        })
        .cloned()
        .collect();
    if !internal.is_empty() {
        let match_rule = if parts.namespace.is_empty() {
            GatewayMatch::default()
        } else {
            GatewayMatch {
                host: None,
                metadata: Some(MetadataMatch {
                    namespace_name: Some(parts.namespace.to_owned()),
                    ..MetadataMatch::default()
                }),
            }
        };
        record.gateways.push(Gateway {
            priority: 0,
            address: internal,
            match_rule,
        });
    }
    for g in parts.gateways {
        record.gateways.push(Gateway {
            priority: g.priority,
            address: vec![g.url.clone()],
            match_rule: GatewayMatch::default(),
        });
    }
    record
}

/// Writes `records` as a table (name, namespace, kind, labels, gateways) with a header line.
pub fn write_table(records: &[NodeRecord], out: &mut impl Write) -> io::Result<()> {
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.to_owned()
        }
    };
    let mut rows = vec![[
        "NAME".to_owned(),
        "NAMESPACE".to_owned(),
        "KIND".to_owned(),
        "LABELS".to_owned(),
        "GATEWAYS".to_owned(),
    ]];
    for r in records {
        let labels: Vec<String> = r
            .metadata
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let gateways: Vec<String> = r
            .gateways
            .iter()
            .map(|g| format!("{}@{}", g.address.join(","), g.priority))
            .collect();
        rows.push([
            r.name.clone(),
            dash(&r.metadata.namespace_name),
            dash(&r.metadata.kind),
            dash(&labels.join(",")),
            dash(&gateways.join(" ")),
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// Writes `records` one JSON document per line (the record's own JSON form).
pub fn write_json(records: &[NodeRecord], out: &mut impl Write) -> io::Result<()> {
    for r in records {
        let line = r.to_json().map_err(io::Error::other)?;
        writeln!(out, "{line}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert!(matches!(Spec::parse("embedded"), Ok(Spec::Embedded)));
        assert!(
            matches!(Spec::parse("static:a.toml"), Ok(Spec::Static(p)) if p.as_path() == std::path::Path::new("a.toml"))
        );
        match Spec::parse("etcd://10.0.0.1:2379,h2") {
            Ok(Spec::Etcd(c)) => assert_eq!(
                c.endpoints,
                ["http://10.0.0.1:2379", "http://h2:2379"].map(String::from)
            ),
            other => panic!("{other:?}"),
        }
        let err = Spec::parse("etcd://h:notaport").unwrap_err().to_string();
        assert!(err.contains("h:notaport"), "{err}");
        assert!(matches!(
            Spec::parse("static:"),
            Err(SpecError::NoFile { .. })
        ));
        assert!(matches!(Spec::parse(""), Err(SpecError::Empty)));
        match Spec::parse("etcds://10.0.0.1:2379?ca=ca.pem&cert=c.pem&key=k.pem") {
            Ok(Spec::Etcd(c)) => {
                assert_eq!(c.endpoints, ["https://10.0.0.1:2379"]);
                let tls = c.tls.as_ref().expect("TLS");
                assert_eq!(tls.ca_pem.as_deref(), Some(std::path::Path::new("ca.pem")));
                assert_eq!(tls.key_pem.as_deref(), Some(std::path::Path::new("k.pem")));
                assert_eq!(
                    Spec::Etcd(c.clone()).to_string(),
                    "etcd https://10.0.0.1:2379 (mutual TLS)"
                );
            }
            other => panic!("{other:?}"),
        }
        let err = Spec::parse("etcd://h?ca=x").unwrap_err().to_string();
        assert!(err.contains("etcds://"), "{err}");
        let err = Spec::parse("etcds://h?pass=x").unwrap_err().to_string();
        assert!(err.contains("pass=x"), "{err}");
        let err = Spec::parse("consul://x").unwrap_err().to_string();
        assert!(err.contains("\"consul\""), "{err}");
    }

    #[test]
    fn gateway_and_label_args() {
        let g: GatewayArg = "tcp://gw.example.com:443@10".parse().unwrap();
        assert_eq!(
            (g.url.as_str(), g.priority),
            ("tcp://gw.example.com:443", 10)
        );
        let g: GatewayArg = "tcp://gw:1@-5".parse().unwrap();
        assert_eq!(g.priority, -5);
        let g: GatewayArg = "udp://gw:1".parse().unwrap();
        assert_eq!(g.priority, 0);
        assert!(matches!(
            "tcp://gw:1@x".parse::<GatewayArg>(),
            Err(ArgError::Priority { .. })
        ));
        assert!(matches!(
            "@3".parse::<GatewayArg>(),
            Err(ArgError::NoUrl { .. })
        ));
        assert_eq!(parse_label("a=b").unwrap(), ("a".into(), "b".into()));
        assert_eq!(parse_label("a=").unwrap(), ("a".into(), String::new()));
        assert!(parse_label("ab").is_err());
        assert!(parse_label("=b").is_err());
    }

    #[test]
    fn record_is_valid() {
        let labels = BTreeMap::from([("tier".to_owned(), "edge".to_owned())]);
        let listen = [
            "tcp://127.0.0.1:7000".to_owned(),
            "tcp://0.0.0.0:7001".to_owned(),
        ];
        let gateways = [GatewayArg {
            url: "tcp://gw.example.com:443".into(),
            priority: 5,
        }];
        let r = node_record(&RecordParts {
            name: "n1",
            namespace: "ns1",
            labels: &labels,
            listen: &listen,
            gateways: &gateways,
        });
        r.validate().unwrap();
        assert_eq!(r.gateways.len(), 2);
        assert_eq!(r.gateways[0].address, ["tcp://127.0.0.1:7000"]);
        assert!(r.gateways[0].is_internal_to("ns1"));
        assert_eq!(r.gateways[1].priority, 5);
        assert_eq!(r.host.pid, std::process::id());
    }
}
