//! Readiness handling: reads, flushes, accepts, the inbox, close deadlines.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::mpsc::TryRecvError;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use mio::{Interest, Token};
use tracing::{debug, warn};

use super::{Link, LinkIo, LinkState, ListenerIo, Transport, sockets};
use crate::event::{CloseReason, Direction, LinkId, LinkKind, LinkStats, TransportEvent};
use crate::handle::Inbox;
use crate::mem::{MemLink, MemPeer};
use crate::stream::{StreamSocket, WriteQueue};
use crate::url::Url;

/// Copies `data` into the shared read buffer and splits it off as `Bytes`.
///
/// The buffer is refilled with `reserve`, which reuses the old allocation once every `Bytes`
/// split from it has been dropped, so steady-state reads do not allocate.
fn take_bytes(read_buf: &mut BytesMut, data: &[u8], block: usize) -> Bytes {
    if read_buf.capacity() - read_buf.len() < data.len() {
        read_buf.reserve(block.max(data.len()));
    }
    read_buf.extend_from_slice(data);
    read_buf.split().freeze()
}

enum ReadEnd {
    Open,
    Eof,
    Failed(io::Error),
}

impl Transport {
    /// Handles what other threads posted; true if a handle woke us.
    pub(super) fn drain_inbox(&mut self) -> bool {
        let mut woken = false;
        self.inbox_backlog = false;
        for _ in 0..super::INBOX_BUDGET {
            let msg = match self.inbox.try_recv() {
                Ok(msg) => msg,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return woken,
            };
            match msg {
                Inbox::Run(command) => {
                    command(self);
                    woken = true;
                }
                Inbox::Wake => woken = true,
                Inbox::Resolved { link, result } => self.on_resolved(link.0, result),
                Inbox::MemConnect {
                    listener,
                    name,
                    from,
                    up,
                    down,
                } => self.on_mem_connect(listener.0, name, from, up, down),
                Inbox::MemAccepted { link, peer } => self.on_mem_accepted(link.0, peer),
                Inbox::MemRefused { link, name } => {
                    let e = io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        format!("in-process listener {name} is closed"),
                    );
                    self.remove_link(link.0, CloseReason::ConnectFailed(Arc::new(e)));
                }
                Inbox::MemData { link, data } => self.on_mem_data(link.0, data),
                Inbox::MemWritable { link } => {
                    if let Some(l) = self.links.get_mut(&link.0) {
                        l.want_writable = false;
                        self.pending_events
                            .push_back(TransportEvent::Writable { link });
                    }
                }
                Inbox::MemClosed { link } => self.on_mem_closed(link.0),
            }
        }
        self.inbox_backlog = true;
        woken
    }

    fn on_resolved(&mut self, id: u64, result: io::Result<std::net::SocketAddr>) {
        let url = match self.links.get(&id) {
            Some(Link {
                io: LinkIo::Resolving { url },
                ..
            }) => url.clone(),
            _ => return, // closed while resolving
        };
        match result {
            Ok(addr) => {
                debug!(link = id, %url, %addr, "resolved");
                self.start_connect(id, &url, addr);
            }
            Err(e) => self.remove_link(id, CloseReason::ConnectFailed(Arc::new(e))),
        }
    }

    fn on_mem_connect(
        &mut self,
        listener: u64,
        name: String,
        from: MemPeer,
        up: Arc<crate::mem::MemFlow>,
        down: Arc<crate::mem::MemFlow>,
    ) {
        let Some(l) = self.listeners.get_mut(&listener) else {
            let link = from.link;
            from.post(Inbox::MemRefused { link, name });
            return;
        };
        l.stats.accepted += 1;
        let id = self.alloc_id();
        let peer_name = format!("mem://{name}#{}", from.link.0);
        let link = Link {
            kind: LinkKind::InProcess,
            direction: Direction::Inbound,
            local: Url::Mem(name),
            peer: peer_name,
            mtu: self.config.mem_mtu,
            state: LinkState::Connecting,
            paused: false,
            want_writable: false,
            flush_due: false,
            io: LinkIo::Mem(MemLink {
                peer: Some(from.clone()),
                tx_flow: down,
                rx_flow: up,
                rx_pending: VecDeque::new(),
                peer_closed: false,
            }),
            stats: LinkStats::default(),
        };
        self.links.insert(id, link);
        let accepted = Inbox::MemAccepted {
            link: from.link,
            peer: MemPeer {
                handle: self.handle.clone(),
                link: LinkId(id),
            },
        };
        if from.post(accepted) {
            self.link_up(id);
        } else {
            // The connector is gone before it heard back; never report this link.
            self.links.remove(&id);
        }
    }

    fn on_mem_accepted(&mut self, id: u64, peer: MemPeer) {
        match self.links.get_mut(&id) {
            Some(Link {
                io: LinkIo::Mem(m),
                state: LinkState::Connecting,
                ..
            }) => {
                m.peer = Some(peer);
                self.link_up(id);
            }
            // Closed while connecting: tell the acceptor.
            _ => {
                peer.post(Inbox::MemClosed { link: peer.link });
            }
        }
    }

    fn on_mem_data(&mut self, id: u64, data: Bytes) {
        let limit = self.config.write_queue_limit;
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        let LinkIo::Mem(m) = &mut link.io else {
            return;
        };
        if link.paused || !m.rx_pending.is_empty() {
            m.rx_pending.push_back(data);
            return;
        }
        deliver_mem(
            &mut self.pending_events,
            id,
            &mut link.stats,
            m,
            data,
            limit,
        );
    }

    fn on_mem_closed(&mut self, id: u64) {
        let Some(Link {
            io: LinkIo::Mem(m), ..
        }) = self.links.get_mut(&id)
        else {
            return;
        };
        m.peer = None;
        if m.rx_pending.is_empty() {
            self.remove_link(id, CloseReason::PeerClosed);
        } else {
            m.peer_closed = true;
        }
    }

    /// Continues reads that stopped on a budget, or that a resume asked for.
    pub(super) fn run_pending_reads(&mut self) {
        let mut ids = std::mem::take(&mut self.pending_read);
        std::mem::swap(&mut self.pending_read, &mut self.pending_spare);
        for &id in &ids {
            if self.listeners.contains_key(&id) {
                self.listener_ready(id);
            } else if self.links.contains_key(&id) {
                self.read_link(id, true);
            }
        }
        ids.clear();
        self.pending_spare = ids;
    }

    /// Handles readiness of a link; `read_closed` (the peer finished or the socket failed) makes
    /// a byte stream read until end of stream rather than stop at a short read.
    pub(super) fn link_ready(
        &mut self,
        id: u64,
        readable: bool,
        writable: bool,
        read_closed: bool,
    ) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        if link.state == LinkState::Connecting {
            let LinkIo::Stream { socket, .. } = &mut link.io else {
                return;
            };
            let status = match socket.take_error() {
                Ok(Some(e)) | Err(e) => Err(e),
                Ok(None) => socket.is_connected(),
            };
            match status {
                Ok(false) => return, // spurious wake-up, still connecting
                Ok(true) => {
                    if let StreamSocket::Tcp(s) = socket {
                        let _ = s.set_nodelay(true);
                        if let Ok(local) = s.local_addr() {
                            link.local = Url::tcp(local);
                        }
                        if let Ok(peer) = s.peer_addr() {
                            link.peer = peer.to_string();
                        }
                    }
                    self.link_up(id);
                }
                Err(e) => {
                    self.remove_link(id, CloseReason::ConnectFailed(Arc::new(e)));
                    return;
                }
            }
        }
        if writable {
            self.flush_link(id);
        }
        if readable {
            self.read_link(id, read_closed);
        }
    }

    /// Writes what small sends left in the queues of links during this turn.
    pub(super) fn flush_due(&mut self) {
        if self.due.is_empty() {
            return;
        }
        let mut due = std::mem::take(&mut self.due);
        for &id in &due {
            let Some(link) = self.links.get_mut(&id) else {
                continue;
            };
            link.flush_due = false;
            // A socket that refused the last write is retried when it reports writability.
            if let LinkIo::Stream { queue, .. } = &link.io {
                if queue.is_blocked() {
                    continue;
                }
            }
            self.flush_link(id);
        }
        due.clear();
        if self.due.is_empty() {
            self.due = due;
        }
    }

    /// Writes queued bytes; reports `Writable` and advances a graceful close as they drain.
    pub(super) fn flush_link(&mut self, id: u64) {
        let limit = self.config.write_queue_limit;
        let max_slices = self.config.max_write_slices;
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        let LinkIo::Stream { socket, queue } = &mut link.io else {
            return;
        };
        if link.state == LinkState::Connecting {
            return;
        }
        match queue.flush(socket, max_slices) {
            Ok(n) => link.stats.bytes_sent += n as u64,
            Err(e) => {
                if let LinkState::Closing { .. } = link.state {
                    let unsent = queue.len();
                    debug!(link = id, error = %e, "write failed while closing");
                    return self.remove_link(id, CloseReason::LocalTimeout { unsent });
                }
                return self.remove_link(id, CloseReason::Io(Arc::new(e)));
            }
        }
        if link.want_writable && queue.len() <= limit / 2 && link.state == LinkState::Up {
            link.want_writable = false;
            self.pending_events
                .push_back(TransportEvent::Writable { link: LinkId(id) });
        }
        if let LinkState::Closing { deadline } = link.state {
            if queue.is_empty() {
                link.state = LinkState::Draining { deadline };
                if let Err(e) = socket.shutdown_write() {
                    debug!(link = id, error = %e, "shutdown failed");
                    self.remove_link(id, CloseReason::Local);
                }
            }
        }
    }

    /// Reads what a link has; a byte stream stops at a short read unless `drain` is set.
    fn read_link(&mut self, id: u64, drain: bool) {
        let Some(link) = self.links.get(&id) else {
            return;
        };
        match link.io {
            LinkIo::Stream { .. } => self.read_stream(id, drain),
            LinkIo::UdpOwn { .. } => self.read_udp_own(id),
            LinkIo::Mem(_) => self.drain_mem_pending(id),
            LinkIo::Resolving { .. } | LinkIo::UdpServed { .. } => {}
        }
    }

    /// Reads a byte stream until `WouldBlock`, end of stream, the per-link budget, or (without
    /// `drain`) a read shorter than the buffer: the socket was empty then, and data arriving
    /// later raises a new readiness edge, so the extra `read` that would only say `WouldBlock`
    /// is saved.
    fn read_stream(&mut self, id: u64, drain: bool) {
        let budget = self.config.read_budget_per_link;
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        let deliver = match link.state {
            LinkState::Up if link.paused => return,
            LinkState::Up => true,
            LinkState::Connecting => return,
            LinkState::Closing { .. } | LinkState::Draining { .. } => false,
        };
        let LinkIo::Stream { socket, .. } = &mut link.io else {
            return;
        };
        let mut total = 0;
        let block = self.blocks.block_size();
        let end = loop {
            match socket.read(self.blocks.buffer()) {
                Ok(0) => break ReadEnd::Eof,
                Ok(n) => {
                    total += n;
                    if deliver {
                        let data = self.blocks.take(n);
                        link.stats.bytes_received += n as u64;
                        self.pending_events.push_back(TransportEvent::Bytes {
                            link: LinkId(id),
                            data,
                        });
                    }
                    if total >= budget {
                        self.pending_read.push(id);
                        break ReadEnd::Open;
                    }
                    if !drain && n < block {
                        break ReadEnd::Open;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break ReadEnd::Open,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break ReadEnd::Failed(e),
            }
        };
        let state = link.state;
        match (end, state) {
            (ReadEnd::Open, _) => {}
            (ReadEnd::Eof, LinkState::Draining { .. }) => self.remove_link(id, CloseReason::Local),
            (ReadEnd::Eof, _) => self.remove_link(id, CloseReason::PeerClosed),
            (ReadEnd::Failed(_), LinkState::Draining { .. }) => {
                self.remove_link(id, CloseReason::Local)
            }
            (ReadEnd::Failed(e), _) => self.remove_link(id, CloseReason::Io(Arc::new(e))),
        }
    }

    fn read_udp_own(&mut self, id: u64) {
        let batch = self.config.udp_recv_batch.max(1);
        let block = self.config.read_buffer_size;
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        let LinkIo::UdpOwn { socket } = &mut link.io else {
            return;
        };
        let mut failure = None;
        let mut received = 0;
        while received < batch {
            match socket.recv(&mut self.scratch) {
                Ok(n) => {
                    received += 1;
                    if link.paused {
                        link.stats.paused_drops += 1;
                        continue;
                    }
                    let data = take_bytes(&mut self.read_buf, &self.scratch[..n], block);
                    link.stats.datagrams_received += 1;
                    link.stats.bytes_received += n as u64;
                    self.pending_events.push_back(TransportEvent::Datagram {
                        link: LinkId(id),
                        data,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if received == batch {
            self.pending_read.push(id);
        }
        if let Some(e) = failure {
            self.remove_link(id, CloseReason::Io(Arc::new(e)));
        }
    }

    fn drain_mem_pending(&mut self, id: u64) {
        let limit = self.config.write_queue_limit;
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        let LinkIo::Mem(m) = &mut link.io else {
            return;
        };
        while !link.paused {
            let Some(data) = m.rx_pending.pop_front() else {
                break;
            };
            deliver_mem(
                &mut self.pending_events,
                id,
                &mut link.stats,
                m,
                data,
                limit,
            );
        }
        if m.peer_closed && m.rx_pending.is_empty() {
            self.remove_link(id, CloseReason::PeerClosed);
        }
    }

    pub(super) fn listener_ready(&mut self, id: u64) {
        let Some(listener) = self.listeners.get(&id) else {
            return;
        };
        match listener.io {
            ListenerIo::Tcp(_) | ListenerIo::Unix(..) => self.accept(id),
            ListenerIo::Udp { .. } => self.read_udp_listener(id),
            ListenerIo::Mem(_) => {}
        }
    }

    fn accept(&mut self, lid: u64) {
        let batch = self.config.accept_batch.max(1);
        let Some(listener) = self.listeners.get_mut(&lid) else {
            return;
        };
        let mut accepted = Vec::new();
        while accepted.len() < batch {
            let res = match &listener.io {
                ListenerIo::Tcp(l) => l.accept().map(|(s, addr)| {
                    let _ = s.set_nodelay(true);
                    let local = s
                        .local_addr()
                        .map(Url::tcp)
                        .unwrap_or_else(|_| listener.url.clone());
                    (StreamSocket::Tcp(s), local, addr.to_string())
                }),
                ListenerIo::Unix(l, _) => l.accept().map(|(s, addr)| {
                    let peer = addr
                        .as_pathname()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "unix:(unnamed)".to_owned());
                    (StreamSocket::Unix(s), listener.url.clone(), peer)
                }),
                ListenerIo::Udp { .. } | ListenerIo::Mem(_) => return,
            };
            match res {
                Ok(conn) => accepted.push(conn),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // E.g. EMFILE: keep the listener, try again on its next readiness.
                    warn!(listener = lid, error = %e, "accept failed");
                    break;
                }
            }
        }
        listener.stats.accepted += accepted.len() as u64;
        if accepted.len() == batch {
            self.pending_read.push(lid);
        }
        for (mut socket, local, peer) in accepted {
            let id = self.alloc_id();
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = socket.register(self.poll.registry(), Token(id as usize), interest) {
                warn!(listener = lid, error = %e, "cannot register accepted socket");
                continue;
            }
            let link = Link {
                kind: LinkKind::ByteStream,
                direction: Direction::Inbound,
                local,
                peer,
                mtu: self.config.stream_mtu,
                state: LinkState::Connecting,
                paused: false,
                want_writable: false,
                flush_due: false,
                io: LinkIo::Stream {
                    socket,
                    queue: WriteQueue::default(),
                },
                stats: LinkStats::default(),
            };
            self.links.insert(id, link);
            self.link_up(id);
        }
    }

    fn read_udp_listener(&mut self, lid: u64) {
        let batch = self.config.udp_recv_batch.max(1);
        let block = self.config.read_buffer_size;
        let max_peers = self.config.udp_max_peers;
        let Some(listener) = self.listeners.get_mut(&lid) else {
            return;
        };
        let ListenerIo::Udp { socket, peers } = &mut listener.io else {
            return;
        };
        let mut received = 0;
        while received < batch {
            let (n, addr) = match socket.recv_from(&mut self.scratch) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!(listener = lid, error = %e, "udp receive error");
                    break;
                }
            };
            received += 1;
            let id = match peers.get(&addr) {
                Some(id) => *id,
                None if peers.len() >= max_peers => {
                    listener.stats.udp_peer_limit_drops += 1;
                    continue;
                }
                None => {
                    let id = self.next_id;
                    self.next_id += 1;
                    peers.insert(addr, id);
                    listener.stats.accepted += 1;
                    let link = Link {
                        kind: LinkKind::Datagram,
                        direction: Direction::Inbound,
                        local: listener.url.clone(),
                        peer: addr.to_string(),
                        mtu: sockets::udp_mtu(addr, &self.config),
                        state: LinkState::Up,
                        paused: false,
                        want_writable: false,
                        flush_due: false,
                        io: LinkIo::UdpServed {
                            listener: lid,
                            addr,
                        },
                        stats: LinkStats::default(),
                    };
                    debug!(link = id, peer = %addr, "udp peer up");
                    self.pending_events.push_back(TransportEvent::LinkUp {
                        link: LinkId(id),
                        kind: link.kind,
                        direction: link.direction,
                        local: link.local.clone(),
                        peer: link.peer.clone(),
                        mtu: link.mtu,
                    });
                    self.links.insert(id, link);
                    id
                }
            };
            let Some(link) = self.links.get_mut(&id) else {
                continue;
            };
            if link.paused {
                link.stats.paused_drops += 1;
                continue;
            }
            let data = take_bytes(&mut self.read_buf, &self.scratch[..n], block);
            link.stats.datagrams_received += 1;
            link.stats.bytes_received += n as u64;
            self.pending_events.push_back(TransportEvent::Datagram {
                link: LinkId(id),
                data,
            });
        }
        if received == batch {
            self.pending_read.push(lid);
        }
    }

    /// Ends graceful closes whose deadline passed.
    pub(super) fn check_deadlines(&mut self, now: Instant) {
        if self.closing.is_empty() {
            return;
        }
        let mut expired = Vec::new();
        self.closing.retain(|&(deadline, id)| {
            if deadline <= now {
                expired.push(id);
                false
            } else {
                true
            }
        });
        for id in expired {
            let reason = match self.links.get(&id) {
                Some(Link {
                    state: LinkState::Closing { .. },
                    io: LinkIo::Stream { queue, .. },
                    ..
                }) => CloseReason::LocalTimeout {
                    unsent: queue.len(),
                },
                Some(Link {
                    state: LinkState::Draining { .. },
                    ..
                }) => CloseReason::Local,
                _ => continue,
            };
            self.remove_link(id, reason);
        }
        // Links closed by other means leave stale entries; drop them.
        let links = &self.links;
        self.closing.retain(|(_, id)| links.contains_key(id));
    }
}

fn deliver_mem(
    events: &mut VecDeque<TransportEvent>,
    id: u64,
    stats: &mut LinkStats,
    m: &mut MemLink,
    data: Bytes,
    limit: usize,
) {
    let len = data.len();
    stats.datagrams_received += 1;
    stats.bytes_received += len as u64;
    events.push_back(TransportEvent::Datagram {
        link: LinkId(id),
        data,
    });
    if m.rx_flow.release(len, limit) {
        if let Some(peer) = &m.peer {
            peer.post(Inbox::MemWritable { link: peer.link });
        }
    }
}
