//! Socket construction: resolution, UDP sockets with buffer sizing, Unix listeners.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::Path;

use mio::net::{UdpSocket, UnixListener};
use socket2::{Domain, Protocol, Socket, Type};
use tracing::warn;

use crate::config::TransportConfig;
use crate::url::Url;

/// Resolves a `tcp://` or `udp://` URL on the calling thread (IP literals never block).
pub(super) fn resolve_now(url: &Url) -> io::Result<SocketAddr> {
    if let Some(addr) = url.ip_socket_addr() {
        return Ok(addr);
    }
    match url {
        Url::Tcp { host, port } | Url::Udp { host, port } => resolve(host, *port),
        Url::Unix(_) | Url::Mem(_) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an IP transport URL",
        )),
    }
}

/// Blocking name resolution; returns the first address.
pub(super) fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    (host, port).to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} resolved to no address"),
        )
    })
}

/// A non-blocking UDP socket bound to `addr`, with the configured buffer sizes.
pub(super) fn udp_socket(addr: SocketAddr, config: &TransportConfig) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Some(size) = config.udp_recv_buffer {
        if let Err(e) = socket.set_recv_buffer_size(size) {
            warn!(size, error = %e, "cannot set SO_RCVBUF");
        }
    }
    if let Some(size) = config.udp_send_buffer {
        if let Err(e) = socket.set_send_buffer_size(size) {
            warn!(size, error = %e, "cannot set SO_SNDBUF");
        }
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(UdpSocket::from_std(socket.into()))
}

/// A UDP socket on an ephemeral port of the peer's family, connected to `peer`.
pub(super) fn udp_connected(peer: SocketAddr, config: &TransportConfig) -> io::Result<UdpSocket> {
    let any = match peer.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let socket = udp_socket(SocketAddr::new(any, 0), config)?;
    socket.connect(peer)?;
    Ok(socket)
}

/// The advisory MTU of a UDP link to `peer`.
pub(super) fn udp_mtu(peer: SocketAddr, config: &TransportConfig) -> usize {
    match peer.ip() {
        IpAddr::V4(_) => config.udp_mtu_ipv4,
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => config.udp_mtu_ipv4,
        IpAddr::V6(_) => config.udp_mtu_ipv6,
    }
}

/// Binds a Unix listener, replacing a socket file nobody accepts on any more.
pub(super) fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let stale = matches!(
                std::os::unix::net::UnixStream::connect(path),
                Err(ref c) if c.kind() == io::ErrorKind::ConnectionRefused
            );
            if !stale {
                return Err(e);
            }
            std::fs::remove_file(path)?;
            UnixListener::bind(path)
        }
        other => other,
    }
}
