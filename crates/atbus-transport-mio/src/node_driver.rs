//! Runs an `atbus-node` [`Node`] on a [`Transport`]: the glue loop, with clocks and an OS-seeded
//! RNG, id mapping between node and transport links, and no data lost on backpressure.
//!
//! ```no_run
//! use std::time::Duration;
//! use atbus_node::{NodeConfig, NodeEvent};
//! use atbus_transport_mio::{NodeDriver, TransportConfig};
//!
//! let mut d = NodeDriver::new(NodeConfig::new("echo"), TransportConfig::default())?;
//! let bound = d.listen(&"tcp://127.0.0.1:0".parse()?)?;
//! println!("listening on {bound}");
//! loop {
//!     d.run_once(Some(Duration::from_millis(100)))?;
//!     while let Some(event) = d.poll_event() {
//!         if let NodeEvent::PeerUp { peer, .. } = event {
//!             println!("{peer} is up");
//!         }
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Backpressure: a [`SendStatus::Blocked`] send accepted nothing, while the node already counts
//! what it handed out as sent. The driver keeps those bytes in the link's [`LinkOverflow`], tells
//! the node the link is blocked ([`Node::handle_link_blocked`]) and sends nothing else on that
//! link until [`TransportEvent::Writable`]; then the overflow goes out first and the node hears
//! [`Node::handle_link_writable`]. UDP drops ([`SendStatus::Dropped`]) are left to the sessions'
//! retransmission.
//!
//! [`SendStatus::Blocked`]: crate::SendStatus::Blocked
//! [`SendStatus::Dropped`]: crate::SendStatus::Dropped

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use atbus_node::{ConfigError, Delivery, Node, NodeConfig, NodeError, NodeEvent, OutgoingMessage};
use bytes::Bytes;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use atbus_frame::{Splice, spliced_segments};

use crate::TransportConfig;
use crate::error::TransportError;
use crate::event::{CloseReason, Direction, LinkId, LinkKind, LinkStats, TransportEvent};
use crate::overflow::{LinkOverflow, OverflowSend};
use crate::transport::{IdKeyed, Transport};
use crate::url::Url;

/// Fragment data this long or longer is not copied into the package: the driver hands it to
/// the socket in place (one `writev` with the package bytes around it). Below it, a copy costs
/// less than the extra slice, and the transport coalesces such sends anyway.
const SPLICE_MIN: usize = 16 * 1024;

/// Most pieces one transmit is handed to the transport in without joining.
const MAX_SEGMENTS: usize = 32;

type SmallSegments<'a> = [&'a [u8]; MAX_SEGMENTS];

/// Why a [`NodeDriver`] could not start or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeDriverError {
    /// The node configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A transport call failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// A transport link that ended before or without the node hearing of it being up: a failed
/// connect, reported by [`NodeDriver::poll_link_failure`].
#[derive(Debug, Clone)]
pub struct LinkFailure {
    /// The node's id of the link.
    pub link: atbus_node::LinkId,
    /// The URL it was opened for.
    pub url: Url,
    /// Why it ended.
    pub reason: CloseReason,
}

/// What the driver knows of one open transport link, from [`NodeDriver::links`].
#[derive(Debug, Clone)]
pub struct DriverLinkInfo {
    /// The transport's id of the link.
    pub transport_link: LinkId,
    /// The node's id of the link (none once the node closed it).
    pub node_link: Option<atbus_node::LinkId>,
    /// Outbound: the URL it was opened for.
    pub url: Option<Url>,
    /// Byte stream, datagram or in-process (none until it is up).
    pub kind: Option<LinkKind>,
    /// Who opened it (none until it is up).
    pub direction: Option<Direction>,
    /// Our end, as the transport reported it when the link came up.
    pub local: Option<Url>,
    /// The authenticated peer the link belongs to, once its handshake is done.
    pub peer: Option<String>,
    /// The transport's counters of the link.
    pub stats: LinkStats,
}

/// Per transport link state of the driver.
#[derive(Debug, Default)]
struct DriverLink {
    /// The node's id of this link.
    node: Option<atbus_node::LinkId>,
    /// Outbound: the URL it was opened for.
    url: Option<Url>,
    /// Kind and direction, once up.
    up_as: Option<(LinkKind, Direction)>,
    /// Our end, once up.
    local: Option<Url>,
    /// Whether the node has heard `handle_link_up`.
    up: bool,
    /// Buffers the transport refused (`Blocked`), oldest first; sent before anything else.
    overflow: LinkOverflow,
}

/// A [`Node`] on a [`Transport`]: call [`run_once`](Self::run_once) in a loop and read
/// [`poll_event`](Self::poll_event) after each call.
pub struct NodeDriver {
    node: Node,
    transport: Transport,
    links: IdKeyed<LinkId, DriverLink>,
    by_node: IdKeyed<atbus_node::LinkId, LinkId>,
    events: Vec<TransportEvent>,
    buf: Vec<u8>,
    /// Payloads of the transmit under way kept out of `buf` (written in place by `writev`).
    splices: Vec<Splice>,
    failures: VecDeque<LinkFailure>,
    blocked_sends: u64,
}

impl std::fmt::Debug for NodeDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeDriver")
            .field("node", &self.node)
            .field("transport", &self.transport)
            .field("links", &self.links.len())
            .finish_non_exhaustive()
    }
}

fn node_kind(kind: LinkKind) -> atbus_node::LinkKind {
    match kind {
        LinkKind::ByteStream => atbus_node::LinkKind::ByteStream,
        LinkKind::Datagram => atbus_node::LinkKind::Datagram,
        LinkKind::InProcess => atbus_node::LinkKind::InProcess,
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl NodeDriver {
    /// A node configured by `config` (RNG seeded from the OS) on a new transport.
    pub fn new(config: NodeConfig, transport: TransportConfig) -> Result<Self, NodeDriverError> {
        let node = Node::new(config, Instant::now(), ChaCha20Rng::from_os_rng())?;
        Ok(Self::with_parts(node, Transport::new(transport)?))
    }

    /// As [`new`](Self::new) with the node's RNG seeded from `seed`: every name, nonce and
    /// secret the node draws is predictable. For tests only (two nodes seeded alike draw the
    /// same anonymous names).
    #[doc(hidden)]
    pub fn with_seed(
        config: NodeConfig,
        transport: TransportConfig,
        seed: u64,
    ) -> Result<Self, NodeDriverError> {
        let node = Node::new(config, Instant::now(), ChaCha20Rng::seed_from_u64(seed))?;
        Ok(Self::with_parts(node, Transport::new(transport)?))
    }

    /// Drives an existing node on an existing transport.
    pub fn with_parts(node: Node, transport: Transport) -> Self {
        Self {
            node,
            transport,
            links: IdKeyed::default(),
            by_node: IdKeyed::default(),
            events: Vec::new(),
            buf: Vec::new(),
            splices: Vec::new(),
            failures: VecDeque::new(),
            blocked_sends: 0,
        }
    }

    /// The node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The node, to change it directly (call [`run_once`](Self::run_once) after).
    pub fn node_mut(&mut self) -> &mut Node {
        &mut self.node
    }

    /// How many sends the transport refused (`Blocked`) and the driver kept in overflow.
    pub fn blocked_sends(&self) -> u64 {
        self.blocked_sends
    }

    /// The transport.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Listens on `url`; returns the bound URL (with the real port for `…:0`).
    pub fn listen(&mut self, url: &Url) -> Result<Url, NodeDriverError> {
        Ok(self.transport.listen(url)?.1)
    }

    /// Opens a link to `url` (once; a failure is reported by
    /// [`poll_link_failure`](Self::poll_link_failure)). For connections the node re-establishes
    /// with backoff, put the URL in [`NodeConfig::connect`] instead.
    pub fn connect(&mut self, url: &Url) -> Result<atbus_node::LinkId, NodeDriverError> {
        let id = self.node.new_link_id();
        self.open(id, url)?;
        Ok(id)
    }

    fn open(&mut self, id: atbus_node::LinkId, url: &Url) -> Result<(), TransportError> {
        let tid = self.transport.connect(url)?;
        self.by_node.insert(id, tid);
        self.links.insert(
            tid,
            DriverLink {
                node: Some(id),
                url: Some(url.clone()),
                ..DriverLink::default()
            },
        );
        Ok(())
    }

    /// Queues `data` to `peer` on `stream_id`; returns its stream offset.
    pub fn send(
        &mut self,
        peer: &str,
        stream_id: i64,
        data: impl Into<Bytes>,
    ) -> Result<u64, NodeError> {
        self.node.send(peer, stream_id, OutgoingMessage::data(data))
    }

    /// Queues `message` (with its metadata) to `peer` on `stream_id`; returns its stream offset.
    pub fn send_message(
        &mut self,
        peer: &str,
        stream_id: i64,
        message: OutgoingMessage,
    ) -> Result<u64, NodeError> {
        self.node.send(peer, stream_id, message)
    }

    /// The open transport links, ordered by transport id, with their peer and counters.
    pub fn links(&self) -> Vec<DriverLinkInfo> {
        let mut links: Vec<DriverLinkInfo> = self
            .links
            .iter()
            .map(|(&tid, l)| DriverLinkInfo {
                transport_link: tid,
                node_link: l.node,
                url: l.url.clone(),
                kind: l.up_as.map(|(k, _)| k),
                direction: l.up_as.map(|(_, d)| d),
                local: l.local.clone(),
                peer: l
                    .node
                    .and_then(|id| self.node.link_peer(id))
                    .map(str::to_owned),
                stats: self.transport.link_stats(tid).unwrap_or_default(),
            })
            .collect();
        links.sort_by_key(|l| l.transport_link);
        links
    }

    /// Reads the next message (or skipped range) from `peer` on `stream_id`.
    pub fn read(&mut self, peer: &str, stream_id: i64) -> Option<Delivery> {
        self.node.read(peer, stream_id)
    }

    /// The next node event.
    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.node.poll_event()
    }

    /// The next outbound link that ended before it came up (refused, unreachable, ...).
    pub fn poll_link_failure(&mut self) -> Option<LinkFailure> {
        self.failures.pop_front()
    }

    /// One round: sends what the node has, waits for socket events up to `timeout` (or the
    /// node's next timer, if sooner), feeds them to the node, runs due timers and sends again.
    pub fn run_once(&mut self, timeout: Option<Duration>) -> Result<(), NodeDriverError> {
        self.flush(Instant::now());
        let now = Instant::now();
        let timer = self
            .node
            .poll_timeout()
            .map(|at| at.saturating_duration_since(now));
        let wait = match (timeout, timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut events = std::mem::take(&mut self.events);
        let polled = self.transport.poll_events(wait, &mut events);
        let now = Instant::now();
        // Token expiry and 0-RTT freshness need the wall clock when a hello arrives.
        self.node.set_unix_time(unix_ms());
        for event in events.drain(..) {
            self.on_event(now, event);
        }
        self.events = events;
        polled?;
        if self.node.poll_timeout().is_some_and(|at| at <= now) {
            self.node.handle_timeout(now, unix_ms());
        }
        self.flush(now);
        Ok(())
    }

    /// Graceful stop within `timeout`: keeps running until every connected peer acknowledged
    /// what was sent to it (and our own acknowledgements had time to go out), then closes every
    /// link and listener. Node events raised meanwhile stay queued for
    /// [`poll_event`](Self::poll_event).
    pub fn shutdown(&mut self, timeout: Duration) -> Result<(), NodeDriverError> {
        let start = Instant::now();
        let deadline = start + timeout;
        let linger = start + self.node.config().session.max_ack_delay * 2;
        loop {
            let now = Instant::now();
            if now >= deadline || (now >= linger && !self.unacknowledged()) {
                break;
            }
            self.run_once(Some(Duration::from_millis(5)))?;
        }
        let mut events = Vec::new();
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        self.transport.shutdown(left, &mut events)?;
        Ok(())
    }

    /// Whether a peer with a link still holds data it has not had acknowledged.
    fn unacknowledged(&self) -> bool {
        self.node.peers().any(|p| {
            !self.node.peer_links(p).is_empty()
                && self.node.session(p).is_some_and(|s| s.send_buffered() > 0)
        })
    }

    fn on_event(&mut self, now: Instant, event: TransportEvent) {
        match event {
            TransportEvent::LinkUp {
                link,
                kind,
                direction,
                mtu,
                local,
                peer,
            } => {
                let entry = self.links.entry(link).or_default();
                entry.up_as = Some((kind, direction));
                entry.local = Some(local);
                let id = match entry.node {
                    Some(id) => id,
                    None => {
                        let id = self.node.new_link_id();
                        entry.node = Some(id);
                        self.by_node.insert(id, link);
                        id
                    }
                };
                entry.up = true;
                let direction = match direction {
                    Direction::Inbound => atbus_node::Direction::Inbound,
                    Direction::Outbound => atbus_node::Direction::Outbound,
                };
                self.node
                    .handle_link_up(now, id, node_kind(kind), mtu, direction);
                if direction == atbus_node::Direction::Inbound {
                    // Bounds half-open handshakes per source address.
                    self.node.handle_link_source(now, id, &peer);
                }
            }
            TransportEvent::Bytes { link, data } => {
                if let Some(id) = self.node_link(link) {
                    self.node.handle_link_read(now, id, data);
                }
            }
            TransportEvent::Datagram { link, data } => {
                if let Some(id) = self.node_link(link) {
                    self.node.handle_datagram(now, id, data);
                }
            }
            TransportEvent::Writable { link } if self.flush_overflow(link) => {
                if let Some(id) = self.node_link(link) {
                    self.node.handle_link_writable(id);
                }
            }
            TransportEvent::LinkClosed { link, reason } => {
                let Some(entry) = self.links.remove(&link) else {
                    return;
                };
                if let Some(id) = entry.node {
                    self.by_node.remove(&id);
                    if !entry.up {
                        if let Some(url) = entry.url {
                            tracing::debug!(%url, ?reason, "connect failed");
                            self.failures.push_back(LinkFailure {
                                link: id,
                                url,
                                reason,
                            });
                        }
                    }
                    self.node.handle_link_closed(now, id);
                }
            }
            _ => {}
        }
    }

    fn node_link(&self, link: LinkId) -> Option<atbus_node::LinkId> {
        self.links.get(&link).and_then(|l| l.node)
    }

    /// Sends the overflow of `link`; true when it is empty afterwards.
    fn flush_overflow(&mut self, link: LinkId) -> bool {
        self.links
            .get_mut(&link)
            .is_some_and(|entry| entry.overflow.flush(&mut self.transport, link))
    }

    /// Hands every pending transmit of the node to the transport, then runs its actions;
    /// repeats until both are drained.
    fn flush(&mut self, now: Instant) {
        loop {
            let mut buf = std::mem::take(&mut self.buf);
            let mut splices = std::mem::take(&mut self.splices);
            let mut worked = false;
            while let Some((id, _)) =
                self.node
                    .poll_transmit_spliced(now, &mut buf, &mut splices, SPLICE_MIN)
            {
                worked = true;
                self.transmit(id, &buf, &splices);
            }
            splices.clear();
            self.buf = buf;
            self.splices = splices;
            while let Some(action) = self.node.poll_action() {
                worked = true;
                self.act(now, action);
            }
            if !worked {
                return;
            }
        }
    }

    /// Sends `buf` with `splices` in place on node link `id`.
    fn transmit(&mut self, id: atbus_node::LinkId, buf: &[u8], splices: &[Splice]) {
        let Some(&tid) = self.by_node.get(&id) else {
            return;
        };
        let Some(entry) = self.links.get_mut(&tid) else {
            return;
        };
        let sent = if splices.is_empty() {
            entry.overflow.send(&mut self.transport, tid, buf)
        } else {
            let mut segments: SmallSegments<'_> = [&[][..]; MAX_SEGMENTS];
            let mut count = 0;
            let mut rest = Vec::new();
            for segment in spliced_segments(buf, splices) {
                if count < MAX_SEGMENTS {
                    segments[count] = segment;
                    count += 1;
                } else {
                    // More pieces than one call takes (never with the default limits): the
                    // tail goes joined.
                    rest.extend_from_slice(segment);
                }
            }
            if rest.is_empty() {
                entry
                    .overflow
                    .send_segments(&mut self.transport, tid, &segments[..count])
            } else {
                let mut all = segments[..count].to_vec();
                all.push(&rest);
                entry.overflow.send_segments(&mut self.transport, tid, &all)
            }
        };
        if sent == OverflowSend::Blocked {
            self.blocked_sends += 1;
            self.node.handle_link_blocked(id);
        }
    }

    fn act(&mut self, now: Instant, action: atbus_node::Action) {
        use atbus_node::Action;
        match action {
            Action::Close { link, reason } => {
                tracing::debug!(link = link.0, %reason, "closing link");
                if let Some(tid) = self.by_node.remove(&link) {
                    self.flush_overflow(tid);
                    if let Some(entry) = self.links.get_mut(&tid) {
                        entry.node = None;
                        entry.overflow.clear();
                    }
                    let _ = self.transport.close(tid);
                }
            }
            Action::PauseReading { link } => {
                if let Some(&tid) = self.by_node.get(&link) {
                    let _ = self.transport.pause_reading(tid);
                }
            }
            Action::ResumeReading { link } => {
                if let Some(&tid) = self.by_node.get(&link) {
                    let _ = self.transport.resume_reading(tid);
                }
            }
            Action::Connect { link, peer_url } => {
                let opened = peer_url
                    .parse::<Url>()
                    .map_err(TransportError::from)
                    .and_then(|url| self.open(link, &url));
                if let Err(err) = opened {
                    tracing::warn!(url = %peer_url, %err, "cannot connect");
                    self.node.handle_link_closed(now, link);
                }
            }
            _ => {}
        }
    }
}
