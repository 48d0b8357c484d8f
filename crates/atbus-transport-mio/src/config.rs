//! Transport configuration: every limit has a documented default.

use std::time::Duration;

/// Default [`TransportConfig::write_queue_limit`]: 4 MiB.
pub const DEFAULT_WRITE_QUEUE_LIMIT: usize = 4 * 1024 * 1024;
/// Default [`TransportConfig::coalesce_below`]: 16 KiB.
const DEFAULT_COALESCE_BELOW: usize = 16 * 1024;
/// Default [`TransportConfig::udp_max_peers`]: 1024.
pub const DEFAULT_UDP_MAX_PEERS: usize = 1024;
/// Default [`TransportConfig::udp_recv_batch`] and [`TransportConfig::accept_batch`]: 64.
pub const DEFAULT_BATCH: usize = 64;

/// Settings of a [`Transport`](crate::Transport). Build with `..Default::default()`.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Bytes a link may hold unsent (byte streams) or in flight (in-process) before `send` answers
    /// [`SendStatus::Blocked`](crate::SendStatus). Default 4 MiB. A single send into an empty
    /// queue is always accepted, whatever its size.
    pub write_queue_limit: usize,
    /// Size of the blocks byte-stream reads land in (and of the buffer datagrams are received
    /// into). Default 256 KiB: several packages of 64 KiB messages arrive whole in one read, and
    /// the node decodes those in place (only a package split between two reads is copied to be
    /// joined). A read of 16 KiB or more is delivered as a slice of its block without copying,
    /// and the block is reused once every slice of it has been dropped; a shorter read is
    /// copied out, so that it holds no block.
    pub read_buffer_size: usize,
    /// Bytes read from one byte-stream link per readiness round before other sockets get a turn.
    /// Default 1 MiB.
    pub read_budget_per_link: usize,
    /// Connections accepted per listener per readiness round. Default 64.
    pub accept_batch: usize,
    /// Datagrams received per UDP socket per readiness round. Default 64.
    pub udp_recv_batch: usize,
    /// Remote addresses one UDP listening socket serves as links; datagrams from further
    /// addresses are dropped and counted. Default 1024.
    pub udp_max_peers: usize,
    /// `SO_RCVBUF` for UDP sockets (the kernel may cap it, see `net.core.rmem_max`).
    /// Default 4 MiB; `None` keeps the system default.
    pub udp_recv_buffer: Option<usize>,
    /// `SO_SNDBUF` for UDP sockets. Default `None` (system default).
    pub udp_send_buffer: Option<usize>,
    /// MTU reported for UDP links to IPv4 peers. Default 548 (IPv4-safe payload).
    pub udp_mtu_ipv4: usize,
    /// MTU reported for UDP links to IPv6 peers. Default 1224 (IPv6-safe payload).
    pub udp_mtu_ipv6: usize,
    /// MTU reported for byte-stream links (a hint for how large a package to build). Default
    /// 72 KiB: a message of 64 KiB and its package overhead fit one package, so it arrives
    /// whole and is delivered without joining fragments.
    pub stream_mtu: usize,
    /// MTU reported for in-process links. Default 72 KiB, as `stream_mtu`: a 64 KiB message
    /// goes in one chunk and is delivered without joining fragments.
    pub mem_mtu: usize,
    /// How long `close` waits for queued bytes to be written and for the peer to finish.
    /// Default 5 s.
    pub close_timeout: Duration,
    /// Capacity of the mio event buffer (events handled per poll). Default 1024.
    pub poll_capacity: usize,
    /// Most buffers handed to one `write_vectored` call. Default 64.
    pub max_write_slices: usize,
    /// Byte-stream sends smaller than this are queued and written together, in one system call
    /// per link, before [`Transport::poll_events`](crate::Transport::poll_events) next waits
    /// (or as soon as 64 KiB are queued); larger sends are written at once, together with what is
    /// queued. Default 16 KiB; 0 writes every send at once.
    pub coalesce_below: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            write_queue_limit: DEFAULT_WRITE_QUEUE_LIMIT,
            read_buffer_size: 256 * 1024,
            read_budget_per_link: 1024 * 1024,
            accept_batch: DEFAULT_BATCH,
            udp_recv_batch: DEFAULT_BATCH,
            udp_max_peers: DEFAULT_UDP_MAX_PEERS,
            udp_recv_buffer: Some(4 * 1024 * 1024),
            udp_send_buffer: None,
            udp_mtu_ipv4: 548,
            udp_mtu_ipv6: 1224,
            stream_mtu: 72 * 1024,
            mem_mtu: 72 * 1024,
            close_timeout: Duration::from_secs(5),
            poll_capacity: 1024,
            max_write_slices: 64,
            coalesce_below: DEFAULT_COALESCE_BELOW,
        }
    }
}
