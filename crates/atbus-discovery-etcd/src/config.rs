//! Configuration of the etcd backend and the `etcd://host:port[,host:port…]` /
//! `etcds://host:port[,…]?ca=FILE[&cert=FILE&key=FILE][&domain=NAME]` spec parser.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Default key prefix: records live under `/atbus/nodes/<name>`.
pub const DEFAULT_PREFIX: &str = "/atbus";
/// Default lease TTL of a registration.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
/// Default port when an endpoint of a spec gives none (etcd's client port).
pub const DEFAULT_ETCD_PORT: u16 = 2379;
/// Default number of events a handle keeps before it overflows (as the memory backend).
pub const DEFAULT_EVENT_QUEUE_CAPACITY: usize =
    atbus_discovery::memory::DEFAULT_EVENT_QUEUE_CAPACITY;
/// Default number of watches one handle may have open (as the memory backend).
pub const DEFAULT_MAX_WATCHES: usize = atbus_discovery::memory::DEFAULT_MAX_WATCHES;

/// Exponential backoff between retries: `initial`, doubling up to `max`, each delay drawn
/// uniformly from its upper half (jitter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First delay (default 100 ms).
    pub initial: Duration,
    /// Largest delay (default 5 s).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The un-jittered delay before retry number `attempt` (0-based): `initial · 2^attempt`,
    /// capped at `max`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay before retry number `attempt`, drawn from `[ceiling/2, ceiling]` with
    /// `random` (any `u64`).
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        let span = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(if span == 0 { 0 } else { random % (span + 1) })
    }
}

/// User/password authentication to etcd. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdAuth {
    /// etcd user name.
    pub user: String,
    /// Its password.
    pub password: String,
}

impl fmt::Debug for EtcdAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdAuth")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// TLS to etcd (needs the crate feature `tls`; endpoints must then be `https://`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdTls {
    /// PEM file of the CA that signed etcd's certificate. Required: no system trust roots are
    /// built in, so `None` makes [`EtcdDiscovery::new`](crate::EtcdDiscovery::new) fail with
    /// `TlsNoCa`.
    pub ca_pem: Option<PathBuf>,
    /// PEM file of the client certificate, for mutual TLS (needs `key_pem`).
    pub cert_pem: Option<PathBuf>,
    /// PEM file of the client key, for mutual TLS (needs `cert_pem`).
    pub key_pem: Option<PathBuf>,
    /// Server name to verify instead of the endpoint's host.
    pub domain: Option<String>,
}

/// Everything the etcd backend needs. Build with [`EtcdConfig::new`] or
/// [`EtcdConfig::from_spec`], then change fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Endpoint URLs, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Key prefix (default [`DEFAULT_PREFIX`]); records are at `<prefix>/nodes/<name>`.
    pub prefix: String,
    /// TTL of the registration lease (default 10 s; whole seconds, rounded up, at least 1 s).
    pub lease_ttl: Duration,
    /// Optional user/password authentication.
    pub auth: Option<EtcdAuth>,
    /// Optional TLS.
    pub tls: Option<EtcdTls>,
    /// Backoff between retries of requests, reconnects, watch reopens and re-registrations.
    pub backoff: Backoff,
    /// How long one request (`register`, `get`, …) is retried before it is answered with
    /// `Error { Unavailable }` (default 10 s).
    pub request_timeout: Duration,
    /// Time limit of one RPC attempt and of connecting (default 3 s).
    pub rpc_timeout: Duration,
    /// HTTP/2 keep-alive ping interval (and ping timeout) that detects a dead or frozen etcd
    /// under open streams (default 5 s).
    pub http2_keepalive: Duration,
    /// How long `shutdown` (or drop) waits to revoke the lease (default 2 s).
    pub shutdown_timeout: Duration,
    /// Events kept before the handle overflows (default [`DEFAULT_EVENT_QUEUE_CAPACITY`]).
    pub event_queue_capacity: usize,
    /// Watches one handle may have open (default [`DEFAULT_MAX_WATCHES`]).
    pub max_watches: usize,
}

impl EtcdConfig {
    /// Defaults for the given endpoint URLs.
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            prefix: DEFAULT_PREFIX.to_owned(),
            lease_ttl: DEFAULT_LEASE_TTL,
            auth: None,
            tls: None,
            backoff: Backoff::default(),
            request_timeout: Duration::from_secs(10),
            rpc_timeout: Duration::from_secs(3),
            http2_keepalive: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(2),
            event_queue_capacity: DEFAULT_EVENT_QUEUE_CAPACITY,
            max_watches: DEFAULT_MAX_WATCHES,
        }
    }

    /// Defaults for a discovery spec: the endpoints as [`parse_spec`] reads them, and for
    /// `etcds://` the TLS files of its query, `?ca=FILE[&cert=FILE&key=FILE][&domain=NAME]`
    /// (file names as written, no percent-decoding). `etcds://` without a query still means
    /// TLS (then [`EtcdDiscovery::new`](crate::EtcdDiscovery::new) asks for the CA).
    pub fn from_spec(spec: &str) -> Result<Self, SpecError> {
        let (base, query) = match spec.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (spec, None),
        };
        let mut config = Self::new(parse_spec(base)?);
        let tls = base.starts_with("etcds://");
        if query.is_some() && !tls {
            return Err(SpecError::QueryNeedsTls {
                spec: spec.to_owned(),
            });
        }
        if tls {
            config.tls = Some(parse_tls_query(query.unwrap_or(""))?);
        }
        Ok(config)
    }

    /// The prefix without trailing `/`.
    fn base(&self) -> &str {
        self.prefix.trim_end_matches('/')
    }

    /// Prefix of every record key: `<prefix>/nodes/`.
    pub fn nodes_prefix(&self) -> String {
        format!("{}/nodes/", self.base())
    }

    /// Key of one record: `<prefix>/nodes/<name>`.
    pub fn node_key(&self, name: &str) -> String {
        format!("{}/nodes/{name}", self.base())
    }

    /// The lease TTL in whole seconds as etcd takes it.
    pub fn lease_ttl_secs(&self) -> i64 {
        let secs = self.lease_ttl.as_secs() + u64::from(self.lease_ttl.subsec_nanos() > 0);
        i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
    }
}

/// Why a discovery spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The spec does not start with `etcd://` (or `etcds://`).
    #[error("discovery spec {spec:?} must start with etcd:// or etcds://")]
    Scheme {
        /// The spec given.
        spec: String,
    },
    /// No endpoint after the scheme.
    #[error("discovery spec {spec:?} names no endpoint")]
    Empty {
        /// The spec given.
        spec: String,
    },
    /// One endpoint is malformed.
    #[error("endpoint {endpoint:?}: {problem}")]
    Endpoint {
        /// The endpoint as written.
        endpoint: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// A query (TLS files) was given on a plain `etcd://` spec.
    #[error("discovery spec {spec:?}: ?ca=…&cert=…&key=… needs etcds:// (TLS)")]
    QueryNeedsTls {
        /// The spec given.
        spec: String,
    },
    /// One `key=value` of the query is malformed, unknown or repeated.
    #[error("spec option {option:?}: {problem}")]
    Query {
        /// The option as written.
        option: String,
        /// What is wrong.
        problem: &'static str,
    },
}

/// Reads `ca=FILE&cert=FILE&key=FILE&domain=NAME` (every part optional, none repeated).
fn parse_tls_query(query: &str) -> Result<EtcdTls, SpecError> {
    let mut tls = EtcdTls::default();
    for option in query.split('&').filter(|o| !o.is_empty()) {
        let bad = |problem| SpecError::Query {
            option: option.to_owned(),
            problem,
        };
        let Some((key, value)) = option.split_once('=') else {
            return Err(bad("expected key=value"));
        };
        if value.is_empty() {
            return Err(bad("empty value"));
        }
        let slot = match key {
            "ca" => &mut tls.ca_pem,
            "cert" => &mut tls.cert_pem,
            "key" => &mut tls.key_pem,
            "domain" => {
                if tls.domain.replace(value.to_owned()).is_some() {
                    return Err(bad("given twice"));
                }
                continue;
            }
            _ => return Err(bad("unknown option (expected ca, cert, key or domain)")),
        };
        if slot.replace(PathBuf::from(value)).is_some() {
            return Err(bad("given twice"));
        }
    }
    Ok(tls)
}

/// Parses `etcd://host:port[,host:port…]` (plain HTTP) or `etcds://…` (TLS) into endpoint URLs
/// (`http://host:port` / `https://host:port`). Hosts are DNS names, IPv4 or `[IPv6]`; a
/// missing port means [`DEFAULT_ETCD_PORT`]. No path, user or query is accepted.
pub fn parse_spec(spec: &str) -> Result<Vec<String>, SpecError> {
    let (scheme, rest) = if let Some(rest) = spec.strip_prefix("etcd://") {
        ("http", rest)
    } else if let Some(rest) = spec.strip_prefix("etcds://") {
        ("https", rest)
    } else {
        return Err(SpecError::Scheme {
            spec: spec.to_owned(),
        });
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.trim().is_empty() {
        return Err(SpecError::Empty {
            spec: spec.to_owned(),
        });
    }
    rest.split(',')
        .map(|endpoint| {
            let endpoint = endpoint.trim();
            let (host, port) = split_host_port(endpoint)?;
            Ok(format!("{scheme}://{host}:{port}"))
        })
        .collect()
}

fn split_host_port(endpoint: &str) -> Result<(&str, u16), SpecError> {
    let bad = |problem| SpecError::Endpoint {
        endpoint: endpoint.to_owned(),
        problem,
    };
    if endpoint.is_empty() {
        return Err(bad("empty endpoint"));
    }
    if endpoint.contains(['/', '@', '?', '#', ' ']) {
        return Err(bad("only host[:port] is allowed"));
    }
    let (host, port) = if let Some(after) = endpoint.strip_prefix('[') {
        let Some(close) = after.find(']') else {
            return Err(bad("unclosed [ in IPv6 address"));
        };
        let host = &endpoint[..close + 2];
        match &after[close + 1..] {
            "" => (host, None),
            p => match p.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => return Err(bad("junk after ]")),
            },
        }
    } else {
        match endpoint.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (endpoint, None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(bad("empty host"));
    }
    if host.starts_with('[') {
        if host[1..host.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .is_err()
        {
            return Err(bad("bad IPv6 address"));
        }
    } else if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(bad("host must be a DNS name, an IPv4 address or [IPv6]"));
    }
    let port = match port {
        None => DEFAULT_ETCD_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(bad("port must be 1-65535")),
        },
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parsing() {
        assert_eq!(
            parse_spec("etcd://127.0.0.1:2379,etcd-1.local:12379,[::1]:7").unwrap(),
            vec![
                "http://127.0.0.1:2379",
                "http://etcd-1.local:12379",
                "http://[::1]:7"
            ]
        );
        assert_eq!(parse_spec("etcds://h").unwrap(), vec!["https://h:2379"]);
        assert_eq!(parse_spec("etcd://h:1/").unwrap(), vec!["http://h:1"]);
        for bad in [
            "http://h:1",
            "etcd://",
            "etcd://h:0",
            "etcd://h:x",
            "etcd://h:1,,g:2",
            "etcd://u@h:1",
            "etcd://h:1/path",
            "etcd://[::1",
            "etcd://[zz]:1",
            "etcd://h_1:1",
            "static:x.toml",
        ] {
            assert!(parse_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn spec_tls_options() {
        let c = EtcdConfig::from_spec("etcds://h:1?ca=/p/ca.pem&cert=c.pem&key=k.pem&domain=etcd")
            .unwrap();
        assert_eq!(c.endpoints, vec!["https://h:1"]);
        assert_eq!(
            c.tls,
            Some(EtcdTls {
                ca_pem: Some("/p/ca.pem".into()),
                cert_pem: Some("c.pem".into()),
                key_pem: Some("k.pem".into()),
                domain: Some("etcd".into()),
            })
        );
        let c = EtcdConfig::from_spec("etcds://h").unwrap();
        assert_eq!(c.tls, Some(EtcdTls::default()));
        assert_eq!(EtcdConfig::from_spec("etcd://h").unwrap().tls, None);
        assert!(matches!(
            EtcdConfig::from_spec("etcd://h?ca=x"),
            Err(SpecError::QueryNeedsTls { .. })
        ));
        for (bad, option) in [
            ("etcds://h?ca=a&ca=b", "ca=b"),
            ("etcds://h?domain=a&domain=b", "domain=b"),
            ("etcds://h?ca=", "ca="),
            ("etcds://h?ca", "ca"),
            ("etcds://h?password=x", "password=x"),
        ] {
            match EtcdConfig::from_spec(bad) {
                Err(SpecError::Query { option: o, .. }) => assert_eq!(o, option, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(matches!(
            EtcdConfig::from_spec("etcds://h:x?ca=a"),
            Err(SpecError::Endpoint { .. })
        ));
    }

    #[test]
    fn keys_and_ttl() {
        let mut c = EtcdConfig::new(vec![]);
        assert_eq!(c.node_key("echo-1"), "/atbus/nodes/echo-1");
        c.prefix = "/x/".into();
        assert_eq!(c.nodes_prefix(), "/x/nodes/");
        c.lease_ttl = Duration::from_millis(1500);
        assert_eq!(c.lease_ttl_secs(), 2);
        c.lease_ttl = Duration::ZERO;
        assert_eq!(c.lease_ttl_secs(), 1);
    }

    #[test]
    fn backoff_bounds() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(3), Duration::from_millis(800));
        assert_eq!(b.ceiling(40), Duration::from_secs(1));
        for r in [0, 1, u64::MAX, 12345] {
            let d = b.delay(2, r);
            assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(400));
        }
    }
}
