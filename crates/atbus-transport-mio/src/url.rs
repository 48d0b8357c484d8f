//! Transport addresses: `tcp://host:port`, `udp://host:port`, `unix:///path`, `mem://name`.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

/// Why a string is not a transport URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// No `scheme://` prefix.
    #[error("`{0}` has no scheme (expected tcp://, udp://, unix:// or mem://)")]
    MissingScheme(String),
    /// A scheme other than `tcp`, `udp`, `unix` or `mem`.
    #[error("unsupported scheme `{0}` (expected tcp, udp, unix or mem)")]
    UnsupportedScheme(String),
    /// `tcp://` or `udp://` without a host.
    #[error("`{0}` has no host")]
    MissingHost(String),
    /// `tcp://` or `udp://` without `:port`.
    #[error("`{0}` has no port")]
    MissingPort(String),
    /// The port is not a number in 0..=65535.
    #[error("`{0}` has an invalid port")]
    InvalidPort(String),
    /// The host is neither an IP literal nor a DNS name.
    #[error("`{0}` has an invalid host")]
    InvalidHost(String),
    /// A path, query or fragment after `host:port`.
    #[error("`{0}` has something after host:port (paths are not allowed)")]
    UnexpectedPath(String),
    /// `unix://` with an empty path.
    #[error("`{0}` has an empty socket path")]
    EmptyPath(String),
    /// `mem://` with an empty name or one containing whitespace or control characters.
    #[error("`{0}` has an empty or invalid in-process name")]
    InvalidName(String),
}

/// A parsed transport address.
///
/// `unix:///abs/path` names an absolute path; `unix://relative/path` (two slashes) names a path
/// relative to the working directory of the process at the time it binds or connects.
/// Scheme names are case-insensitive; IPv6 hosts are written in brackets (`tcp://[::1]:80`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Url {
    /// A TCP endpoint.
    Tcp {
        /// IP literal (IPv6 without brackets) or DNS name.
        host: String,
        /// Port; 0 on `listen` binds a free port.
        port: u16,
    },
    /// A UDP endpoint.
    Udp {
        /// IP literal (IPv6 without brackets) or DNS name.
        host: String,
        /// Port; 0 on `listen` binds a free port.
        port: u16,
    },
    /// A Unix stream socket path.
    Unix(PathBuf),
    /// An in-process endpoint registered under this name in the process-global registry.
    Mem(String),
}

impl Url {
    /// Builds a `tcp://` URL from a socket address.
    pub fn tcp(addr: SocketAddr) -> Self {
        Url::Tcp {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }

    /// Builds a `udp://` URL from a socket address.
    pub fn udp(addr: SocketAddr) -> Self {
        Url::Udp {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }

    /// The scheme: `tcp`, `udp`, `unix` or `mem`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Url::Tcp { .. } => "tcp",
            Url::Udp { .. } => "udp",
            Url::Unix(_) => "unix",
            Url::Mem(_) => "mem",
        }
    }

    /// The socket address when the host is an IP literal (no resolution needed).
    pub fn ip_socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Url::Tcp { host, port } | Url::Udp { host, port } => host
                .parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, *port)),
            Url::Unix(_) | Url::Mem(_) => None,
        }
    }

    /// The port of a `tcp://` or `udp://` URL.
    pub fn port(&self) -> Option<u16> {
        match self {
            Url::Tcp { port, .. } | Url::Udp { port, .. } => Some(*port),
            Url::Unix(_) | Url::Mem(_) => None,
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Url::Tcp { host, port } | Url::Udp { host, port } => {
                if host.contains(':') {
                    write!(f, "{}://[{host}]:{port}", self.scheme())
                } else {
                    write!(f, "{}://{host}:{port}", self.scheme())
                }
            }
            Url::Unix(path) => write!(f, "unix://{}", path.display()),
            Url::Mem(name) => write!(f, "mem://{name}"),
        }
    }
}

impl FromStr for Url {
    type Err = UrlError;

    fn from_str(input: &str) -> Result<Self, UrlError> {
        let (scheme, rest) = input
            .split_once("://")
            .ok_or_else(|| UrlError::MissingScheme(input.to_owned()))?;
        match scheme.to_ascii_lowercase().as_str() {
            "tcp" => {
                let (host, port) = parse_host_port(input, rest)?;
                Ok(Url::Tcp { host, port })
            }
            "udp" => {
                let (host, port) = parse_host_port(input, rest)?;
                Ok(Url::Udp { host, port })
            }
            "unix" => {
                if rest.is_empty() {
                    return Err(UrlError::EmptyPath(input.to_owned()));
                }
                Ok(Url::Unix(PathBuf::from(rest)))
            }
            "mem" => {
                if rest.is_empty() || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(UrlError::InvalidName(input.to_owned()));
                }
                Ok(Url::Mem(rest.to_owned()))
            }
            other => Err(UrlError::UnsupportedScheme(other.to_owned())),
        }
    }
}

fn parse_host_port(input: &str, rest: &str) -> Result<(String, u16), UrlError> {
    if rest.contains(['/', '?', '#']) {
        return Err(UrlError::UnexpectedPath(input.to_owned()));
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| UrlError::InvalidHost(input.to_owned()))?;
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(UrlError::InvalidHost(input.to_owned()));
        }
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| UrlError::MissingPort(input.to_owned()))?;
        (host, port)
    } else {
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| UrlError::MissingPort(input.to_owned()))?;
        if host.contains(':') {
            // An IPv6 literal without brackets is ambiguous.
            return Err(UrlError::InvalidHost(input.to_owned()));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err(UrlError::MissingHost(input.to_owned()));
    }
    if !host.contains(':') && !is_dns_name(host) {
        return Err(UrlError::InvalidHost(input.to_owned()));
    }
    if port.is_empty() {
        return Err(UrlError::MissingPort(input.to_owned()));
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UrlError::InvalidPort(input.to_owned()));
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| UrlError::InvalidPort(input.to_owned()))?;
    Ok((host.to_owned(), port))
}

/// Accepts IPv4 literals and DNS names (letters, digits, `-`, `_`, dots between labels).
fn is_dns_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in [
            "tcp://127.0.0.1:80",
            "udp://[::1]:0",
            "tcp://example.com:443",
            "unix:///tmp/x.sock",
            "unix://rel/x.sock",
            "mem://bus-1",
        ] {
            let url: Url = s.parse().unwrap();
            assert_eq!(url.to_string(), s);
        }
    }

    #[test]
    fn typed_errors() {
        type Check = fn(&UrlError) -> bool;
        let cases: [(&str, Check); 11] = [
            ("127.0.0.1:80", |e| matches!(e, UrlError::MissingScheme(_))),
            ("http://a:1", |e| {
                matches!(e, UrlError::UnsupportedScheme(_))
            }),
            ("tcp://:80", |e| matches!(e, UrlError::MissingHost(_))),
            ("tcp://host", |e| matches!(e, UrlError::MissingPort(_))),
            ("tcp://host:", |e| matches!(e, UrlError::MissingPort(_))),
            ("tcp://host:99999", |e| {
                matches!(e, UrlError::InvalidPort(_))
            }),
            ("tcp://host:+1", |e| matches!(e, UrlError::InvalidPort(_))),
            ("tcp://::1:80", |e| matches!(e, UrlError::InvalidHost(_))),
            ("tcp://h:1/x", |e| matches!(e, UrlError::UnexpectedPath(_))),
            ("unix://", |e| matches!(e, UrlError::EmptyPath(_))),
            ("mem://a b", |e| matches!(e, UrlError::InvalidName(_))),
        ];
        for (input, check) in cases {
            let err = input.parse::<Url>().unwrap_err();
            assert!(check(&err), "{input}: {err:?}");
        }
    }
}
