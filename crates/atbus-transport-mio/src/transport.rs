//! The transport: one `mio::Poll`, its listeners and links, and the calls a driver makes.

mod ready;
mod sockets;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mio::net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};
use tracing::{debug, info};

use crate::config::TransportConfig;
use crate::error::{Result, TransportError};
use crate::event::{
    CloseReason, Direction, LinkId, LinkKind, LinkStats, ListenerId, ListenerStats, SendStatus,
    TransportEvent,
};
use crate::handle::{Inbox, TransportHandle};
use crate::mem::{self, MemEndpoint, MemFlow, MemLink, MemPeer};
use crate::read_blocks::ReadBlocks;
use crate::stream::{StreamSocket, WriteQueue};
use crate::url::Url;

const WAKER: Token = Token(0);
/// Inbox messages handled per poll before other sockets get a turn.
const INBOX_BUDGET: usize = 4096;
/// Coalesced small sends are written at once when this many bytes wait (one full chunk).
const COALESCE_FLUSH_AT: usize = 64 * 1024;
/// Byte-stream reads shorter than this are copied out of the read block (a small message then
/// holds no block); longer ones are delivered as slices of it.
const COPY_READS_BELOW: usize = 16 * 1024;
/// Read blocks lent out and tracked to be reused (32 × 256 KiB by default): 64 KiB messages
/// streamed both ways with the default 1 MiB session windows keep more than 8 blocks held at
/// once (callgrind counted a fresh block for every fifth message with 8).
const LENT_BLOCKS: usize = 32;

/// Distinguishes transports in the process-global `mem://` registry.
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

/// Hashes the transport's own sequential link and listener ids with one multiply instead of
/// SipHash: they are looked up several times per event and are never chosen by a peer (maps
/// keyed by peer addresses keep the default hasher).
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// A map keyed by sequential ids of this process (transport or node link ids), hashed with
/// [`IdHasher`].
pub(crate) type IdKeyed<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    /// Resolving or connecting; no `LinkUp` yet.
    Connecting,
    Up,
    /// `close` called: flushing the write queue.
    Closing {
        deadline: Instant,
    },
    /// Queue flushed and write side shut down: discarding reads until the peer ends.
    Draining {
        deadline: Instant,
    },
}

enum LinkIo {
    Resolving {
        url: Url,
    },
    Stream {
        socket: StreamSocket,
        queue: WriteQueue,
    },
    UdpOwn {
        socket: UdpSocket,
    },
    UdpServed {
        listener: u64,
        addr: SocketAddr,
    },
    Mem(MemLink),
}

struct Link {
    kind: LinkKind,
    direction: Direction,
    local: Url,
    peer: String,
    mtu: usize,
    state: LinkState,
    paused: bool,
    want_writable: bool,
    /// Small sends wait in the queue; the link is in `Transport::due` until they are written.
    flush_due: bool,
    io: LinkIo,
    stats: LinkStats,
}

enum ListenerIo {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
    Udp {
        socket: UdpSocket,
        peers: HashMap<SocketAddr, u64>,
    },
    Mem(String),
}

struct Listener {
    url: Url,
    io: ListenerIo,
    stats: ListenerStats,
}

/// Sockets, listeners and in-process endpoints on one `mio::Poll`, driven by [`poll_events`].
///
/// Calls are grouped like a sans-IO core's: setup (`new`, `listen`, `connect`), output
/// (`send`, `pause_reading`, `resume_reading`, `close`), and the drive call `poll_events`, which
/// waits for readiness and reports [`TransportEvent`]s. Network failures never fail a call; they
/// end the link with [`TransportEvent::LinkClosed`].
///
/// [`poll_events`]: Transport::poll_events
pub struct Transport {
    poll: Poll,
    events: Events,
    config: TransportConfig,
    handle: TransportHandle,
    inbox: Receiver<Inbox>,
    inbox_backlog: bool,
    instance: u64,
    next_id: u64,
    links: IdMap<Link>,
    listeners: IdMap<Listener>,
    pending_events: VecDeque<TransportEvent>,
    pending_read: Vec<u64>,
    pending_spare: Vec<u64>,
    /// Per event of the last poll: token, readable, writable, read side closed.
    ready: Vec<(u64, bool, bool, bool)>,
    closing: Vec<(Instant, u64)>,
    /// Links with coalesced small sends to write before the next wait.
    due: Vec<u64>,
    /// Target of every datagram read (initialised once, reused).
    scratch: Vec<u8>,
    /// Backing store of delivered datagrams; split per read, reclaimed once they are dropped.
    read_buf: BytesMut,
    /// Blocks byte-stream reads land in, lent out without copying and reused.
    blocks: ReadBlocks,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("links", &self.links.len())
            .field("listeners", &self.listeners.len())
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Creates a transport with its own `mio::Poll` and waker.
    pub fn new(config: TransportConfig) -> Result<Self> {
        let poll = Poll::new().map_err(|e| TransportError::io("create poll", e))?;
        let waker = Waker::new(poll.registry(), WAKER)
            .map_err(|e| TransportError::io("create waker", e))?;
        let (tx, inbox) = mpsc::channel();
        let scratch = vec![0; config.read_buffer_size.max(64 * 1024)];
        Ok(Self {
            events: Events::with_capacity(config.poll_capacity.max(16)),
            poll,
            handle: TransportHandle {
                tx,
                waker: Arc::new(waker),
            },
            inbox,
            inbox_backlog: false,
            instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
            next_id: 1,
            links: IdMap::default(),
            listeners: IdMap::default(),
            pending_events: VecDeque::new(),
            pending_read: Vec::new(),
            pending_spare: Vec::new(),
            ready: Vec::new(),
            closing: Vec::new(),
            due: Vec::new(),
            scratch,
            read_buf: BytesMut::with_capacity(config.read_buffer_size),
            blocks: ReadBlocks::new(
                config.read_buffer_size.max(64 * 1024),
                COPY_READS_BELOW,
                LENT_BLOCKS,
            ),
            config,
        })
    }

    /// A cross-thread handle that posts commands to this transport and wakes its loop.
    pub fn handle(&self) -> TransportHandle {
        self.handle.clone()
    }

    /// The configuration in use.
    pub fn config(&self) -> &TransportConfig {
        &self.config
    }

    /// Number of open links (including connecting and closing ones).
    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    /// Counters of a link.
    pub fn link_stats(&self, link: LinkId) -> Option<LinkStats> {
        let l = self.links.get(&link.0)?;
        let mut stats = l.stats;
        stats.queued_bytes = match &l.io {
            LinkIo::Stream { queue, .. } => queue.len(),
            LinkIo::Mem(m) => m.tx_flow.in_flight(),
            _ => 0,
        };
        Some(stats)
    }

    /// Counters of a listener.
    pub fn listener_stats(&self, listener: ListenerId) -> Option<ListenerStats> {
        let l = self.listeners.get(&listener.0)?;
        let mut stats = l.stats;
        if let ListenerIo::Udp { peers, .. } = &l.io {
            stats.udp_peers = peers.len();
        }
        Some(stats)
    }

    fn alloc_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Binds a listener and returns it with the bound URL (port 0 becomes the real port).
    ///
    /// `tcp://` and `udp://` hosts that are not IP literals are resolved here, synchronously
    /// (listening happens at setup; use IP literals to keep this call from blocking). A Unix socket
    /// file left by a dead process (nothing accepts on it) is replaced; the file is removed when
    /// the listener closes. `mem://` names are process-global and fail with `AddrInUse` if taken.
    pub fn listen(&mut self, url: &Url) -> Result<(ListenerId, Url)> {
        let id = self.alloc_id();
        let listen_err = |source: io::Error| TransportError::Listen {
            url: url.to_string(),
            source,
        };
        let (io, bound) = match url {
            Url::Tcp { .. } => {
                let addr = sockets::resolve_now(url).map_err(listen_err)?;
                let mut l = TcpListener::bind(addr).map_err(listen_err)?;
                let local = l.local_addr().map_err(listen_err)?;
                self.poll
                    .registry()
                    .register(&mut l, Token(id as usize), Interest::READABLE)
                    .map_err(listen_err)?;
                (ListenerIo::Tcp(l), Url::tcp(local))
            }
            Url::Udp { .. } => {
                let addr = sockets::resolve_now(url).map_err(listen_err)?;
                let mut s = sockets::udp_socket(addr, &self.config).map_err(listen_err)?;
                let local = s.local_addr().map_err(listen_err)?;
                self.poll
                    .registry()
                    .register(&mut s, Token(id as usize), Interest::READABLE)
                    .map_err(listen_err)?;
                let io = ListenerIo::Udp {
                    socket: s,
                    peers: HashMap::new(),
                };
                (io, Url::udp(local))
            }
            Url::Unix(path) => {
                let mut l = sockets::bind_unix(path).map_err(listen_err)?;
                self.poll
                    .registry()
                    .register(&mut l, Token(id as usize), Interest::READABLE)
                    .map_err(listen_err)?;
                (ListenerIo::Unix(l, path.clone()), url.clone())
            }
            Url::Mem(name) => {
                let mut registry = mem::registry();
                if registry.contains_key(name) {
                    return Err(listen_err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        "in-process name already registered",
                    )));
                }
                registry.insert(
                    name.clone(),
                    MemEndpoint {
                        handle: self.handle.clone(),
                        listener: ListenerId(id),
                        owner: self.instance,
                    },
                );
                (ListenerIo::Mem(name.clone()), url.clone())
            }
        };
        info!(listener = id, url = %bound, "listening");
        self.listeners.insert(
            id,
            Listener {
                url: bound.clone(),
                io,
                stats: ListenerStats::default(),
            },
        );
        Ok((ListenerId(id), bound))
    }

    /// Closes a listener. Links it accepted stay open, except UDP peers of a UDP listener, whose
    /// socket this is: they close with [`CloseReason::Local`].
    pub fn close_listener(&mut self, listener: ListenerId) -> Result<()> {
        let mut l = self
            .listeners
            .remove(&listener.0)
            .ok_or(TransportError::UnknownListener(listener))?;
        let registry = self.poll.registry();
        match &mut l.io {
            ListenerIo::Tcp(s) => {
                let _ = registry.deregister(s);
            }
            ListenerIo::Unix(s, path) => {
                let _ = registry.deregister(s);
                let _ = std::fs::remove_file(path);
            }
            ListenerIo::Udp { socket, peers } => {
                let _ = registry.deregister(socket);
                let ids: Vec<u64> = peers.drain().map(|(_, id)| id).collect();
                for id in ids {
                    self.remove_link(id, CloseReason::Local);
                }
            }
            ListenerIo::Mem(name) => self.unregister_mem(name, listener.0),
        }
        info!(listener = listener.0, url = %l.url, "listener closed");
        Ok(())
    }

    fn unregister_mem(&self, name: &str, listener: u64) {
        let mut registry = mem::registry();
        if registry
            .get(name)
            .is_some_and(|e| e.owner == self.instance && e.listener.0 == listener)
        {
            registry.remove(name);
        }
    }

    /// Opens a link without blocking; `LinkUp` follows when it is ready, or `LinkClosed` with
    /// [`CloseReason::ConnectFailed`] when it cannot be established.
    ///
    /// Host names are resolved on a helper thread (one per call) and the result comes back through
    /// the waker; IP literals connect at once. Only the first resolved address is tried.
    /// `udp://` links get their own socket connected to the peer and are up at once.
    pub fn connect(&mut self, url: &Url) -> Result<LinkId> {
        let id = self.alloc_id();
        match url {
            Url::Tcp { host, port } | Url::Udp { host, port } => match url.ip_socket_addr() {
                Some(addr) => self.start_connect(id, url, addr),
                None => {
                    self.insert_link(id, url, LinkIo::Resolving { url: url.clone() });
                    let handle = self.handle.clone();
                    let (host, port) = (host.clone(), *port);
                    let spawned = std::thread::Builder::new()
                        .name("atbus-resolve".into())
                        .spawn(move || {
                            let result = sockets::resolve(&host, port);
                            let _ = handle.send(Inbox::Resolved {
                                link: LinkId(id),
                                result,
                            });
                        });
                    if let Err(e) = spawned {
                        self.remove_link(id, CloseReason::ConnectFailed(Arc::new(e)));
                    }
                }
            },
            Url::Unix(path) => match UnixStream::connect(path) {
                Ok(socket) => self.start_stream(id, url, StreamSocket::Unix(socket)),
                Err(e) => self.connect_failed(id, url, e),
            },
            Url::Mem(name) => self.connect_mem(id, url, name),
        }
        debug!(link = id, %url, "connecting");
        Ok(LinkId(id))
    }

    fn connect_mem(&mut self, id: u64, url: &Url, name: &str) {
        let endpoint = mem::registry()
            .get(name)
            .map(|e| (e.handle.clone(), e.listener));
        let Some((handle, listener)) = endpoint else {
            let e = io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "no in-process listener by that name",
            );
            return self.connect_failed(id, url, e);
        };
        let up = Arc::new(MemFlow::default());
        let down = Arc::new(MemFlow::default());
        let link = MemLink {
            peer: None,
            tx_flow: up.clone(),
            rx_flow: down.clone(),
            rx_pending: VecDeque::new(),
            peer_closed: false,
        };
        self.insert_link(id, url, LinkIo::Mem(link));
        let msg = Inbox::MemConnect {
            listener,
            name: name.to_owned(),
            from: MemPeer {
                handle: self.handle.clone(),
                link: LinkId(id),
            },
            up,
            down,
        };
        if handle.send(msg).is_err() {
            let e = io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "in-process listener is gone",
            );
            self.remove_link(id, CloseReason::ConnectFailed(Arc::new(e)));
        }
    }

    /// Starts connecting to a resolved address (`id` may already exist as a resolving link).
    fn start_connect(&mut self, id: u64, url: &Url, addr: SocketAddr) {
        match url {
            Url::Udp { .. } => match sockets::udp_connected(addr, &self.config) {
                Ok(mut socket) => {
                    let reg = self.poll.registry().register(
                        &mut socket,
                        Token(id as usize),
                        Interest::READABLE,
                    );
                    if let Err(e) = reg {
                        return self.connect_failed(id, url, e);
                    }
                    let local = socket
                        .local_addr()
                        .map(Url::udp)
                        .unwrap_or_else(|_| url.clone());
                    self.insert_link(id, url, LinkIo::UdpOwn { socket });
                    if let Some(link) = self.links.get_mut(&id) {
                        link.local = local;
                        link.peer = addr.to_string();
                        link.mtu = sockets::udp_mtu(addr, &self.config);
                    }
                    self.link_up(id);
                }
                Err(e) => self.connect_failed(id, url, e),
            },
            _ => match TcpStream::connect(addr) {
                Ok(socket) => {
                    let _ = socket.set_nodelay(true);
                    self.start_stream(id, url, StreamSocket::Tcp(socket));
                }
                Err(e) => self.connect_failed(id, url, e),
            },
        }
    }

    fn start_stream(&mut self, id: u64, url: &Url, mut socket: StreamSocket) {
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = socket.register(self.poll.registry(), Token(id as usize), interest) {
            return self.connect_failed(id, url, e);
        }
        let queue = WriteQueue::default();
        self.insert_link(id, url, LinkIo::Stream { socket, queue });
    }

    fn connect_failed(&mut self, id: u64, url: &Url, e: io::Error) {
        debug!(link = id, %url, error = %e, "connect failed");
        if !self.links.contains_key(&id) {
            self.insert_link(id, url, LinkIo::Resolving { url: url.clone() });
        }
        self.remove_link(id, CloseReason::ConnectFailed(Arc::new(e)));
    }

    /// Inserts (or replaces the io of) an outbound link in state `Connecting`.
    fn insert_link(&mut self, id: u64, url: &Url, io: LinkIo) {
        let (kind, mtu) = match url {
            Url::Tcp { .. } | Url::Unix(_) => (LinkKind::ByteStream, self.config.stream_mtu),
            Url::Udp { .. } => (LinkKind::Datagram, self.config.udp_mtu_ipv4),
            Url::Mem(_) => (LinkKind::InProcess, self.config.mem_mtu),
        };
        if let Some(link) = self.links.get_mut(&id) {
            link.io = io;
            return;
        }
        let link = Link {
            kind,
            direction: Direction::Outbound,
            local: url.clone(),
            peer: url.to_string(),
            mtu,
            state: LinkState::Connecting,
            paused: false,
            want_writable: false,
            flush_due: false,
            io,
            stats: LinkStats::default(),
        };
        self.links.insert(id, link);
    }

    /// Marks a link up and reports it.
    fn link_up(&mut self, id: u64) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        link.state = LinkState::Up;
        debug!(link = id, local = %link.local, peer = %link.peer, kind = ?link.kind, "link up");
        self.pending_events.push_back(TransportEvent::LinkUp {
            link: LinkId(id),
            kind: link.kind,
            direction: link.direction,
            local: link.local.clone(),
            peer: link.peer.clone(),
            mtu: link.mtu,
        });
    }

    /// Sends bytes (byte streams), one datagram (UDP) or one chunk (in-process).
    ///
    /// Byte streams: a send smaller than [`TransportConfig::coalesce_below`] (16 KiB) is
    /// queued ([`SendStatus::Queued`]) and the queue goes out before the next
    /// [`poll_events`](Self::poll_events) waits, so the small packages of one turn (a message
    /// and an acknowledgement, say) leave in one system call; 64 KiB queued are written at
    /// once. A larger send is written at once, behind what is queued, in one `write_vectored`
    /// ([`SendStatus::Sent`] when the socket took it all). What the socket does not take is
    /// written, with as few `write_vectored` calls as possible, when it becomes writable. If the
    /// queue already holds data and this would take it past
    /// [`TransportConfig::write_queue_limit`], nothing is accepted and the answer is
    /// [`SendStatus::Blocked`]: wait for [`TransportEvent::Writable`] (sent once the queue has
    /// drained to half the limit). In-process links count bytes the peer has not yet delivered
    /// against the same limit. UDP has no backpressure: a full socket buffer drops the datagram
    /// ([`SendStatus::Dropped`], counted in [`LinkStats::send_drops`]).
    pub fn send(&mut self, link: LinkId, data: &[u8]) -> Result<SendStatus> {
        self.send_inner(link, &[data], None)
    }

    /// Like [`send`](Self::send), but hands an in-process peer this `Bytes` without copying.
    pub fn send_bytes(&mut self, link: LinkId, data: Bytes) -> Result<SendStatus> {
        self.send_inner(link, &[&data.clone()], Some(data))
    }

    /// Like [`send`](Self::send) of the concatenation of `segments`, without joining them
    /// first on byte streams: a send written at once goes out in one `write_vectored` with
    /// whatever is queued, and only what the socket does not take is copied into the queue.
    /// Datagram and in-process links join the segments into one datagram or chunk.
    pub fn send_segments(&mut self, link: LinkId, segments: &[&[u8]]) -> Result<SendStatus> {
        self.send_inner(link, segments, None)
    }

    fn send_inner(
        &mut self,
        link_id: LinkId,
        segments: &[&[u8]],
        owned: Option<Bytes>,
    ) -> Result<SendStatus> {
        let total: usize = segments.iter().map(|s| s.len()).sum();
        let id = link_id.0;
        let limit = self.config.write_queue_limit;
        let coalesce_below = self.config.coalesce_below;
        let max_slices = self.config.max_write_slices;
        let link = self
            .links
            .get_mut(&id)
            .ok_or(TransportError::UnknownLink(link_id))?;
        match link.state {
            LinkState::Up => {}
            LinkState::Connecting => return Err(TransportError::NotConnected(link_id)),
            LinkState::Closing { .. } | LinkState::Draining { .. } => {
                return Err(TransportError::Closing(link_id));
            }
        }
        let failure: io::Error = match &mut link.io {
            LinkIo::Resolving { .. } => return Err(TransportError::NotConnected(link_id)),
            LinkIo::Stream { socket, queue } => 'stream: {
                let over = |queue: &WriteQueue| {
                    !queue.is_empty() && queue.len().saturating_add(total) > limit
                };
                if over(queue) && !queue.is_blocked() {
                    // Only coalesced bytes wait: write them before judging the limit.
                    match queue.flush(socket, max_slices) {
                        Ok(n) => link.stats.bytes_sent += n as u64,
                        Err(e) => break 'stream e,
                    }
                }
                if over(queue) {
                    link.want_writable = true;
                    return Ok(SendStatus::Blocked);
                }
                if queue.is_blocked() {
                    queue.push_segments(segments, 0);
                    return Ok(SendStatus::Queued);
                }
                // Small sends wait for the end of the driver's turn (the next `poll_events`),
                // so the packages of one turn leave in one system call.
                if total < coalesce_below && queue.len() + total < COALESCE_FLUSH_AT {
                    queue.push_segments(segments, 0);
                    if !link.flush_due {
                        link.flush_due = true;
                        self.due.push(id);
                    }
                    return Ok(SendStatus::Queued);
                }
                match queue.write_with(socket, segments, max_slices) {
                    Ok((written, taken)) => {
                        link.stats.bytes_sent += written as u64;
                        if taken == total {
                            return Ok(SendStatus::Sent);
                        }
                        queue.push_segments(segments, taken);
                        return Ok(SendStatus::Queued);
                    }
                    Err(e) => e,
                }
            }
            LinkIo::UdpOwn { socket } => match socket.send(&joined(segments)) {
                Ok(_) => return Ok(count_datagram(&mut link.stats, total)),
                Err(e) => match udp_send_error(&mut link.stats, e)? {
                    Some(status) => return Ok(status),
                    None => io::ErrorKind::ConnectionRefused.into(),
                },
            },
            LinkIo::UdpServed { listener, addr } => {
                let Some(Listener {
                    io: ListenerIo::Udp { socket, .. },
                    ..
                }) = self.listeners.get(listener)
                else {
                    return Err(TransportError::Closing(link_id));
                };
                match socket.send_to(&joined(segments), *addr) {
                    Ok(_) => return Ok(count_datagram(&mut link.stats, total)),
                    Err(e) => match udp_send_error(&mut link.stats, e)? {
                        Some(status) => return Ok(status),
                        None => io::ErrorKind::ConnectionRefused.into(),
                    },
                }
            }
            LinkIo::Mem(m) => {
                let Some(peer) = &m.peer else {
                    return Err(TransportError::Closing(link_id));
                };
                if !m.tx_flow.try_reserve(total, limit) {
                    link.want_writable = true;
                    return Ok(SendStatus::Blocked);
                }
                let chunk = owned.unwrap_or_else(|| match segments {
                    [one] => Bytes::copy_from_slice(one),
                    _ => Bytes::from(segments.concat()),
                });
                if peer.post(Inbox::MemData {
                    link: peer.link,
                    data: chunk,
                }) {
                    return Ok(count_datagram(&mut link.stats, total));
                }
                io::Error::new(io::ErrorKind::BrokenPipe, "in-process peer is gone")
            }
        };
        debug!(link = id, error = %failure, "send failed; closing link");
        self.remove_link(id, CloseReason::Io(Arc::new(failure)));
        Err(TransportError::Closing(link_id))
    }

    /// Stops reading from a link: byte streams drop read interest (the kernel buffer fills and the
    /// peer's sends block); in-process chunks wait here, unacknowledged, so the peer gets
    /// `Blocked`; UDP datagrams arriving while paused are dropped and counted.
    pub fn pause_reading(&mut self, link: LinkId) -> Result<()> {
        self.set_paused(link, true)
    }

    /// Resumes reading; what waited is delivered first, in order.
    pub fn resume_reading(&mut self, link: LinkId) -> Result<()> {
        self.set_paused(link, false)
    }

    fn set_paused(&mut self, link_id: LinkId, paused: bool) -> Result<()> {
        let l = self
            .links
            .get_mut(&link_id.0)
            .ok_or(TransportError::UnknownLink(link_id))?;
        match l.state {
            LinkState::Up => {}
            LinkState::Connecting => return Err(TransportError::NotConnected(link_id)),
            LinkState::Closing { .. } | LinkState::Draining { .. } => return Ok(()),
        }
        if l.paused == paused {
            return Ok(());
        }
        l.paused = paused;
        if let LinkIo::Stream { socket, .. } = &mut l.io {
            let interest = if paused {
                Interest::WRITABLE
            } else {
                Interest::READABLE | Interest::WRITABLE
            };
            socket
                .reregister(self.poll.registry(), Token(link_id.0 as usize), interest)
                .map_err(|e| TransportError::io("reregister", e))?;
        }
        if !paused {
            // Edge-triggered readiness may have fired while paused: look again.
            self.pending_read.push(link_id.0);
        }
        Ok(())
    }

    /// Closes a link. Byte streams first write what is queued (no more sends are accepted), then
    /// shut down their write side and wait for the peer to finish, all within
    /// [`TransportConfig::close_timeout`]; `LinkClosed` reports [`CloseReason::Local`] or
    /// [`CloseReason::LocalTimeout`]. Other links close at once (in-process chunks already sent
    /// still arrive, in order, before the peer sees the close). Bytes that arrive on a closing link
    /// are discarded. Closing twice is a no-op.
    pub fn close(&mut self, link_id: LinkId) -> Result<()> {
        let id = link_id.0;
        let timeout = self.config.close_timeout;
        let l = self
            .links
            .get_mut(&id)
            .ok_or(TransportError::UnknownLink(link_id))?;
        match (&mut l.io, l.state) {
            (_, LinkState::Closing { .. } | LinkState::Draining { .. }) => Ok(()),
            (LinkIo::Stream { socket, .. }, LinkState::Up) => {
                if l.paused {
                    l.paused = false;
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    let _ = socket.reregister(self.poll.registry(), Token(id as usize), interest);
                }
                let deadline = Instant::now() + timeout;
                l.state = LinkState::Closing { deadline };
                self.closing.push((deadline, id));
                self.flush_link(id);
                Ok(())
            }
            _ => {
                self.remove_link(id, CloseReason::Local);
                Ok(())
            }
        }
    }

    /// Waits up to `timeout` for readiness (or less when internal work or a close deadline is
    /// due), handles it, and appends what happened to `out` (which is not cleared).
    ///
    /// Delivered `Bytes` share one reusable read buffer; dropping them before the next call lets
    /// the buffer be reused without allocating.
    pub fn poll_events(
        &mut self,
        timeout: Option<Duration>,
        out: &mut Vec<TransportEvent>,
    ) -> Result<()> {
        self.flush_due();
        let now = Instant::now();
        let timeout = if !self.pending_events.is_empty()
            || !self.pending_read.is_empty()
            || self.inbox_backlog
        {
            Some(Duration::ZERO)
        } else {
            let next_deadline = self.closing.iter().map(|(d, _)| *d).min();
            match (timeout, next_deadline) {
                (t, None) => t,
                (None, Some(d)) => Some(d.saturating_duration_since(now)),
                (Some(t), Some(d)) => Some(t.min(d.saturating_duration_since(now))),
            }
        };
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(TransportError::io("poll", e)),
        }
        self.ready.clear();
        for ev in self.events.iter() {
            let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
            let writable = ev.is_writable() || ev.is_write_closed() || ev.is_error();
            let closed = ev.is_read_closed() || ev.is_error();
            self.ready
                .push((ev.token().0 as u64, readable, writable, closed));
        }
        let woken = self.drain_inbox();
        self.run_pending_reads();
        let mut ready = std::mem::take(&mut self.ready);
        for &(token, readable, writable, closed) in &ready {
            if token == WAKER.0 as u64 {
                continue;
            }
            if self.listeners.contains_key(&token) {
                self.listener_ready(token);
            } else if self.links.contains_key(&token) {
                self.link_ready(token, readable, writable, closed);
            }
        }
        ready.clear();
        self.ready = ready;
        self.check_deadlines(Instant::now());
        // Sends made while handling (commands posted by handles) leave now, not after a wait.
        self.flush_due();
        if woken {
            self.pending_events.push_back(TransportEvent::Woken);
        }
        out.extend(self.pending_events.drain(..));
        Ok(())
    }

    /// Graceful shutdown: closes every listener, closes every link as [`close`](Self::close)
    /// does, and drives the loop until all links are closed or `timeout` passes (links left then
    /// close with [`CloseReason::LocalTimeout`]). Events, including each `LinkClosed`, go to `out`.
    pub fn shutdown(&mut self, timeout: Duration, out: &mut Vec<TransportEvent>) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let listeners: Vec<u64> = self.listeners.keys().copied().collect();
        for id in listeners {
            self.close_listener(ListenerId(id))?;
        }
        let links: Vec<u64> = self.links.keys().copied().collect();
        for id in links {
            self.close(LinkId(id))?;
        }
        loop {
            let now = Instant::now();
            if self.links.is_empty() || now >= deadline {
                break;
            }
            self.poll_events(Some(deadline - now), out)?;
        }
        let left: Vec<u64> = self.links.keys().copied().collect();
        for id in left {
            let unsent = match self.links.get(&id).map(|l| &l.io) {
                Some(LinkIo::Stream { queue, .. }) => queue.len(),
                _ => 0,
            };
            self.remove_link(id, CloseReason::LocalTimeout { unsent });
        }
        out.extend(self.pending_events.drain(..));
        Ok(())
    }

    /// Removes a link at once and reports `LinkClosed`.
    fn remove_link(&mut self, id: u64, reason: CloseReason) {
        let Some(mut link) = self.links.remove(&id) else {
            return;
        };
        let registry = self.poll.registry();
        match &mut link.io {
            LinkIo::Resolving { .. } => {}
            LinkIo::Stream { socket, .. } => {
                let _ = socket.deregister(registry);
            }
            LinkIo::UdpOwn { socket } => {
                let _ = registry.deregister(socket);
            }
            LinkIo::UdpServed { listener, addr } => {
                if let Some(Listener {
                    io: ListenerIo::Udp { peers, .. },
                    ..
                }) = self.listeners.get_mut(listener)
                {
                    peers.remove(addr);
                }
            }
            LinkIo::Mem(m) => {
                if let Some(peer) = m.peer.take() {
                    mem::post_quietly(&peer, Inbox::MemClosed { link: peer.link });
                }
            }
        }
        debug!(link = id, ?reason, "link closed");
        self.pending_events.push_back(TransportEvent::LinkClosed {
            link: LinkId(id),
            reason,
        });
    }
}

/// The segments of one datagram as one buffer (borrowed when there is one segment).
fn joined<'a>(segments: &[&'a [u8]]) -> std::borrow::Cow<'a, [u8]> {
    match segments {
        [] => std::borrow::Cow::Borrowed(&[]),
        [one] => std::borrow::Cow::Borrowed(one),
        _ => std::borrow::Cow::Owned(segments.concat()),
    }
}

fn count_datagram(stats: &mut LinkStats, len: usize) -> SendStatus {
    stats.datagrams_sent += 1;
    stats.bytes_sent += len as u64;
    SendStatus::Sent
}

/// `Ok(Some(Dropped))` on a full buffer, `Ok(None)` when the peer refused (the link closes),
/// `Err` for other failures (the link stays).
fn udp_send_error(stats: &mut LinkStats, e: io::Error) -> Result<Option<SendStatus>> {
    match e.kind() {
        io::ErrorKind::WouldBlock => {
            stats.send_drops += 1;
            Ok(Some(SendStatus::Dropped))
        }
        io::ErrorKind::ConnectionRefused => Ok(None),
        _ => Err(TransportError::io("send", e)),
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        // Coalesced sends were accepted: give them to the kernel before the sockets close.
        self.flush_due();
        for (id, l) in &self.listeners {
            match &l.io {
                ListenerIo::Mem(name) => self.unregister_mem(name, *id),
                ListenerIo::Unix(_, path) => {
                    let _ = std::fs::remove_file(path);
                }
                _ => {}
            }
        }
        for l in self.links.values_mut() {
            if let LinkIo::Mem(m) = &mut l.io {
                if let Some(peer) = m.peer.take() {
                    mem::post_quietly(&peer, Inbox::MemClosed { link: peer.link });
                }
            }
        }
    }
}
