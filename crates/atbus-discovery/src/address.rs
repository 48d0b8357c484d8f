//! Gateway addresses: `tcp://host:port`, `udp://host:port`, `unix:///path`, `mem://name`.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::validate::check_dns1123_subdomain;

/// Longest Unix socket path: `sun_path` is 108 bytes on Linux, one of which is the NUL.
pub const UNIX_PATH_MAX_LEN: usize = 107;
/// Longest address string accepted by the parser.
pub const ADDRESS_MAX_LEN: usize = 512;

/// Why an address string does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// No `scheme://` at the start.
    #[error("address must look like scheme://..., e.g. tcp://10.0.0.1:7000")]
    MissingScheme,
    /// A scheme other than tcp, udp, unix or mem.
    #[error("unknown scheme {scheme:?} (expected tcp, udp, unix or mem)")]
    UnknownScheme {
        /// The scheme found.
        scheme: String,
    },
    /// The address string is longer than [`ADDRESS_MAX_LEN`].
    #[error("address is {len} bytes long, the limit is {ADDRESS_MAX_LEN}")]
    TooLong {
        /// Actual length.
        len: usize,
    },
    /// `host:port` without the `:port`.
    #[error("missing :port")]
    MissingPort,
    /// A port that is not a number in 1..=65535.
    #[error("port {port:?} is not a number in 1..=65535")]
    BadPort {
        /// The port text found.
        port: String,
    },
    /// Empty host.
    #[error("missing host")]
    EmptyHost,
    /// A host that is neither an IP address nor a DNS host name.
    #[error("host {host:?} is not an IPv4 address, a bracketed IPv6 address or a DNS name")]
    BadHost {
        /// The host text found.
        host: String,
    },
    /// `0.0.0.0` or `[::]`: a listen-any address that no peer can connect to.
    #[error("host {host:?} is an unspecified address; publish a reachable one")]
    UnspecifiedHost {
        /// The host text found.
        host: String,
    },
    /// Path, query or user info after `host:port`.
    #[error("unexpected path, query or user info in {scheme} address")]
    UnexpectedPart {
        /// The scheme of the address.
        scheme: Scheme,
    },
    /// `unix://` without an absolute path (it must be `unix:///path`).
    #[error("unix address must be an absolute path: unix:///path/to/socket")]
    UnixPathNotAbsolute,
    /// Unix socket path longer than [`UNIX_PATH_MAX_LEN`].
    #[error("unix socket path is {len} bytes long, the limit is {UNIX_PATH_MAX_LEN}")]
    UnixPathTooLong {
        /// Actual length.
        len: usize,
    },
    /// `mem://` name that is not a DNS-1123 subdomain.
    #[error("mem address name {name:?} must be a DNS-1123 subdomain")]
    BadMemName {
        /// The name found.
        name: String,
    },
}

/// Transport of an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scheme {
    /// TCP byte stream.
    Tcp,
    /// UDP datagrams.
    Udp,
    /// Unix domain socket (same machine only).
    Unix,
    /// In-process channel (same process only).
    Mem,
}

impl Scheme {
    /// The scheme as written in addresses.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Tcp => "tcp",
            Scheme::Udp => "udp",
            Scheme::Unix => "unix",
            Scheme::Mem => "mem",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed gateway address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GatewayAddress {
    /// `tcp://host:port`.
    Tcp {
        /// IP literal (IPv6 without brackets) or DNS name.
        host: String,
        /// Port, 1..=65535.
        port: u16,
    },
    /// `udp://host:port`.
    Udp {
        /// IP literal (IPv6 without brackets) or DNS name.
        host: String,
        /// Port, 1..=65535.
        port: u16,
    },
    /// `unix:///absolute/path`.
    Unix {
        /// Absolute socket path.
        path: String,
    },
    /// `mem://name`.
    Mem {
        /// In-process endpoint name.
        name: String,
    },
}

impl GatewayAddress {
    /// Parses `scheme://...`.
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        if s.len() > ADDRESS_MAX_LEN {
            return Err(AddressError::TooLong { len: s.len() });
        }
        let (scheme, rest) = s.split_once("://").ok_or(AddressError::MissingScheme)?;
        match scheme {
            "tcp" => {
                parse_host_port(rest, Scheme::Tcp).map(|(host, port)| Self::Tcp { host, port })
            }
            "udp" => {
                parse_host_port(rest, Scheme::Udp).map(|(host, port)| Self::Udp { host, port })
            }
            "unix" => {
                if !rest.starts_with('/') || rest.len() < 2 {
                    return Err(AddressError::UnixPathNotAbsolute);
                }
                if rest.len() > UNIX_PATH_MAX_LEN {
                    return Err(AddressError::UnixPathTooLong { len: rest.len() });
                }
                if rest.bytes().any(|b| b == 0) {
                    return Err(AddressError::UnixPathNotAbsolute);
                }
                Ok(Self::Unix {
                    path: rest.to_owned(),
                })
            }
            "mem" => {
                if check_dns1123_subdomain(rest).is_err() {
                    return Err(AddressError::BadMemName {
                        name: rest.to_owned(),
                    });
                }
                Ok(Self::Mem {
                    name: rest.to_owned(),
                })
            }
            other => Err(AddressError::UnknownScheme {
                scheme: other.to_owned(),
            }),
        }
    }

    /// The transport of this address.
    pub fn scheme(&self) -> Scheme {
        match self {
            Self::Tcp { .. } => Scheme::Tcp,
            Self::Udp { .. } => Scheme::Udp,
            Self::Unix { .. } => Scheme::Unix,
            Self::Mem { .. } => Scheme::Mem,
        }
    }
}

impl std::str::FromStr for GatewayAddress {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for GatewayAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp { host, port } | Self::Udp { host, port } => {
                if host.contains(':') {
                    write!(f, "{}://[{host}]:{port}", self.scheme())
                } else {
                    write!(f, "{}://{host}:{port}", self.scheme())
                }
            }
            Self::Unix { path } => write!(f, "unix://{path}"),
            Self::Mem { name } => write!(f, "mem://{name}"),
        }
    }
}

fn parse_host_port(rest: &str, scheme: Scheme) -> Result<(String, u16), AddressError> {
    if rest.contains(['/', '?', '#', '@']) {
        return Err(AddressError::UnexpectedPart { scheme });
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (inside, after) = bracketed
            .split_once(']')
            .ok_or_else(|| AddressError::BadHost {
                host: rest.to_owned(),
            })?;
        let port = after.strip_prefix(':').ok_or(AddressError::MissingPort)?;
        let ip: Ipv6Addr = inside.parse().map_err(|_| AddressError::BadHost {
            host: inside.to_owned(),
        })?;
        if ip.is_unspecified() {
            return Err(AddressError::UnspecifiedHost {
                host: inside.to_owned(),
            });
        }
        (inside, port)
    } else {
        let (host, port) = rest.rsplit_once(':').ok_or(AddressError::MissingPort)?;
        if host.is_empty() {
            return Err(AddressError::EmptyHost);
        }
        if host.contains(':') {
            // A bare IPv6 literal: it must be bracketed to tell it from the port.
            return Err(AddressError::BadHost {
                host: host.to_owned(),
            });
        }
        if let Ok(ip) = host.parse::<Ipv4Addr>() {
            if ip.is_unspecified() {
                return Err(AddressError::UnspecifiedHost {
                    host: host.to_owned(),
                });
            }
        } else if host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            || check_dns1123_subdomain(&host.to_ascii_lowercase()).is_err()
        {
            return Err(AddressError::BadHost {
                host: host.to_owned(),
            });
        }
        (host, port)
    };
    let port_num = if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5
    {
        None
    } else {
        port.parse::<u16>().ok().filter(|&p| p != 0)
    };
    let port_num = port_num.ok_or_else(|| AddressError::BadPort {
        port: port.to_owned(),
    })?;
    Ok((host.to_owned(), port_num))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        let ok = [
            ("tcp://10.0.0.1:7000", Scheme::Tcp),
            ("tcp://[::1]:7000", Scheme::Tcp),
            ("udp://gw.example.com:65535", Scheme::Udp),
            ("tcp://Gw.Example.com:1", Scheme::Tcp),
            ("unix:///run/atbus/echo.sock", Scheme::Unix),
            ("mem://echo-1", Scheme::Mem),
        ];
        for (s, scheme) in ok {
            let a = GatewayAddress::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(a.scheme(), scheme, "{s}");
            assert_eq!(a.to_string(), s, "display round trip");
        }
    }

    #[test]
    fn rejects_bad_addresses() {
        use AddressError as E;
        type Check = fn(&AddressError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("10.0.0.1:7000", |e| *e == E::MissingScheme),
            ("http://a:1", |e| matches!(e, E::UnknownScheme { .. })),
            ("tcp://a", |e| *e == E::MissingPort),
            ("tcp://a:0", |e| matches!(e, E::BadPort { .. })),
            ("tcp://a:65536", |e| matches!(e, E::BadPort { .. })),
            ("tcp://a:+1", |e| matches!(e, E::BadPort { .. })),
            ("tcp://:1", |e| *e == E::EmptyHost),
            ("tcp://::1:7000", |e| matches!(e, E::BadHost { .. })),
            ("tcp://[zz]:7000", |e| matches!(e, E::BadHost { .. })),
            ("tcp://a_b:7000", |e| matches!(e, E::BadHost { .. })),
            ("tcp://1.2.3:7000", |e| matches!(e, E::BadHost { .. })),
            ("tcp://0.0.0.0:7000", |e| {
                matches!(e, E::UnspecifiedHost { .. })
            }),
            ("udp://[::]:7000", |e| {
                matches!(e, E::UnspecifiedHost { .. })
            }),
            ("tcp://a:1/x", |e| matches!(e, E::UnexpectedPart { .. })),
            ("tcp://u@a:1", |e| matches!(e, E::UnexpectedPart { .. })),
            ("unix://run/x.sock", |e| *e == E::UnixPathNotAbsolute),
            ("unix://", |e| *e == E::UnixPathNotAbsolute),
            ("mem://Echo", |e| matches!(e, E::BadMemName { .. })),
            ("mem://", |e| matches!(e, E::BadMemName { .. })),
        ];
        for (s, check) in cases {
            let e = GatewayAddress::parse(s).expect_err(s);
            assert!(check(&e), "{s}: unexpected {e:?}");
        }
        let long = format!("unix:///{}", "a".repeat(UNIX_PATH_MAX_LEN));
        assert!(matches!(
            GatewayAddress::parse(&long),
            Err(E::UnixPathTooLong { .. })
        ));
    }
}
