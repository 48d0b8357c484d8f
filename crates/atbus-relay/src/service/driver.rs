//! Runs a [`Relay`] on a [`Transport`]: link id mapping, clocks, an OS-seeded RNG, and no
//! bytes lost when a socket pushes back.
//!
//! Backpressure: a [`SendStatus::Blocked`] send accepted nothing, while the relay already
//! counts what it handed out as forwarded. The driver keeps those bytes in the link's
//! [`LinkOverflow`] (the queue the node driver uses too), tells the relay the link is blocked
//! ([`Relay::handle_link_blocked`], so its queue for that link fills and drops its own
//! overflow) and sends nothing else on it until [`TransportEvent::Writable`]. Other links keep
//! flowing.
//!
//! [`SendStatus::Blocked`]: atbus_transport_mio::SendStatus::Blocked

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use atbus_node::Action;
use atbus_transport_mio::{
    CloseReason, Direction, LinkId, LinkKind, LinkOverflow, ListenerId, OverflowSend, Transport,
    TransportConfig, TransportError, TransportEvent, Url,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::{Relay, RelayConfig, RelayError, RelayEvent};

/// Why a [`RelayDriver`] could not start or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayDriverError {
    /// The relay configuration was refused.
    #[error(transparent)]
    Relay(#[from] RelayError),
    /// A transport call failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// An outbound link that ended before it came up (refused, unreachable, ...); the relay's
/// configured `connect` URLs are retried with backoff.
#[derive(Debug, Clone)]
pub struct RelayLinkFailure {
    /// The URL it was opened for.
    pub url: Url,
    /// Why it ended.
    pub reason: CloseReason,
}

/// Per transport link state.
#[derive(Debug, Default)]
struct DriverLink {
    /// The relay's id of this link.
    relay: Option<atbus_node::LinkId>,
    /// Outbound: the URL it was opened for.
    url: Option<Url>,
    /// Whether the relay has heard `handle_link_up`.
    up: bool,
    /// Buffers the transport refused (`Blocked`), oldest first; sent before anything else.
    overflow: LinkOverflow,
}

/// A [`Relay`] on a [`Transport`]: call [`run_once`](Self::run_once) in a loop and read
/// [`poll_event`](Self::poll_event) after each call.
pub struct RelayDriver {
    relay: Relay,
    transport: Transport,
    links: HashMap<LinkId, DriverLink>,
    by_relay: HashMap<atbus_node::LinkId, LinkId>,
    listeners: Vec<ListenerId>,
    events: Vec<TransportEvent>,
    buf: Vec<u8>,
    failures: VecDeque<RelayLinkFailure>,
    blocked_sends: u64,
}

impl std::fmt::Debug for RelayDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayDriver")
            .field("relay", &self.relay)
            .field("links", &self.links.len())
            .finish_non_exhaustive()
    }
}

fn relay_kind(kind: LinkKind) -> atbus_node::LinkKind {
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

impl RelayDriver {
    /// A relay configured by `config` (RNG seeded from the OS) on a new transport. The
    /// relay's `connect` URLs (peer relays, upstream) are dialled at the first
    /// [`run_once`](Self::run_once) and redialled with backoff.
    pub fn new(config: RelayConfig, transport: TransportConfig) -> Result<Self, RelayDriverError> {
        let relay = Relay::new(config, Instant::now(), ChaCha20Rng::from_os_rng())?;
        Ok(Self::with_parts(relay, Transport::new(transport)?))
    }

    /// Drives an existing relay on an existing transport.
    pub fn with_parts(relay: Relay, transport: Transport) -> Self {
        Self {
            relay,
            transport,
            links: HashMap::new(),
            by_relay: HashMap::new(),
            listeners: Vec::new(),
            events: Vec::new(),
            buf: Vec::new(),
            failures: VecDeque::new(),
            blocked_sends: 0,
        }
    }

    /// The relay (metrics, links, routes).
    pub fn relay(&self) -> &Relay {
        &self.relay
    }

    /// The relay, to change it (routes); call [`run_once`](Self::run_once) after.
    pub fn relay_mut(&mut self) -> &mut Relay {
        &mut self.relay
    }

    /// The transport (its [`handle`](Transport::handle) wakes the loop from other threads).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// How many sends the transport refused (`Blocked`) and the driver kept in overflow.
    pub fn blocked_sends(&self) -> u64 {
        self.blocked_sends
    }

    /// Open transport links (connecting ones included).
    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    /// Listens on `url` (tcp, udp, unix or mem); returns the bound URL (with the real port
    /// for `…:0`).
    pub fn listen(&mut self, url: &Url) -> Result<Url, RelayDriverError> {
        let (id, bound) = self.transport.listen(url)?;
        self.listeners.push(id);
        Ok(bound)
    }

    /// Opens a link to `url` once (a peer relay found through discovery, for instance); the
    /// handshake follows as for configured links. A failure before the link comes up is
    /// reported by [`poll_link_failure`](Self::poll_link_failure); it is not redialled (put
    /// URLs the relay must keep in `RelayConfig::node.connect` instead).
    pub fn connect(&mut self, url: &Url) -> Result<atbus_node::LinkId, RelayDriverError> {
        let id = self.relay.new_link_id();
        self.open(id, url)?;
        Ok(id)
    }

    /// The next relay event (links up, down, refused).
    pub fn poll_event(&mut self) -> Option<RelayEvent> {
        self.relay.poll_event()
    }

    /// The next outbound link that ended before it came up.
    pub fn poll_link_failure(&mut self) -> Option<RelayLinkFailure> {
        self.failures.pop_front()
    }

    /// One round: sends what the relay has, waits for socket events up to `timeout` (or the
    /// relay's next timer, if sooner), feeds them in, runs due timers and sends again.
    pub fn run_once(&mut self, timeout: Option<Duration>) -> Result<(), RelayDriverError> {
        self.flush(Instant::now());
        let now = Instant::now();
        let timer = self
            .relay
            .poll_timeout()
            .map(|at| at.saturating_duration_since(now));
        let wait = match (timeout, timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut events = std::mem::take(&mut self.events);
        let polled = self.transport.poll_events(wait, &mut events);
        let now = Instant::now();
        for event in events.drain(..) {
            self.on_event(now, event);
        }
        self.events = events;
        polled?;
        if self.relay.poll_timeout().is_some_and(|at| at <= now) {
            self.relay.handle_timeout(now, unix_ms());
        }
        // A fresh reading: the relay's queue delay metric spans the events handled above.
        self.flush(Instant::now());
        Ok(())
    }

    /// Graceful stop within `timeout`: stops listening, closes every link with `SHUTDOWN`
    /// (each peer gets a `link_close` first; queued frames are dropped and counted), then
    /// closes the transport.
    pub fn shutdown(&mut self, timeout: Duration) -> Result<(), RelayDriverError> {
        let deadline = Instant::now() + timeout;
        for id in std::mem::take(&mut self.listeners) {
            let _ = self.transport.close_listener(id);
        }
        let now = Instant::now();
        self.relay.shutdown(now);
        self.flush(now);
        // Let the link_close packages and overflow leave before the sockets close.
        let linger = Instant::now() + Duration::from_millis(50).min(timeout);
        while Instant::now() < linger && self.links.values().any(|l| !l.overflow.is_empty()) {
            self.run_once(Some(Duration::from_millis(5)))?;
        }
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        let mut events = Vec::new();
        self.transport.shutdown(left, &mut events)?;
        Ok(())
    }

    fn on_event(&mut self, now: Instant, event: TransportEvent) {
        match event {
            TransportEvent::LinkUp {
                link,
                kind,
                direction,
                mtu,
                ..
            } => {
                let entry = self.links.entry(link).or_default();
                let id = match entry.relay {
                    Some(id) => id,
                    None => {
                        let id = self.relay.new_link_id();
                        entry.relay = Some(id);
                        self.by_relay.insert(id, link);
                        id
                    }
                };
                entry.up = true;
                let direction = match direction {
                    Direction::Inbound => atbus_node::Direction::Inbound,
                    Direction::Outbound => atbus_node::Direction::Outbound,
                };
                self.relay
                    .handle_link_up(now, id, relay_kind(kind), mtu, direction);
            }
            TransportEvent::Bytes { link, data } => {
                if let Some(id) = self.relay_link(link) {
                    self.relay.handle_link_bytes(now, id, &data);
                }
            }
            TransportEvent::Datagram { link, data } => {
                if let Some(id) = self.relay_link(link) {
                    self.relay.handle_datagram(now, id, data);
                }
            }
            TransportEvent::Writable { link } if self.flush_overflow(link) => {
                if let Some(id) = self.relay_link(link) {
                    self.relay.handle_link_writable(id);
                }
            }
            TransportEvent::LinkClosed { link, reason } => {
                let Some(entry) = self.links.remove(&link) else {
                    return;
                };
                if let Some(id) = entry.relay {
                    self.by_relay.remove(&id);
                    if !entry.up {
                        if let Some(url) = entry.url {
                            tracing::debug!(%url, ?reason, "connect failed");
                            self.failures.push_back(RelayLinkFailure { url, reason });
                        }
                    }
                    self.relay.handle_link_closed(now, id);
                }
            }
            _ => {}
        }
    }

    fn relay_link(&self, link: LinkId) -> Option<atbus_node::LinkId> {
        self.links.get(&link).and_then(|l| l.relay)
    }

    /// Sends the overflow of `link`; true when it is empty afterwards.
    fn flush_overflow(&mut self, link: LinkId) -> bool {
        self.links
            .get_mut(&link)
            .is_some_and(|entry| entry.overflow.flush(&mut self.transport, link))
    }

    /// Hands every pending transmit of the relay to the transport, then runs its actions;
    /// repeats until both are drained.
    fn flush(&mut self, now: Instant) {
        loop {
            let mut buf = std::mem::take(&mut self.buf);
            let mut worked = false;
            while let Some((id, n)) = self.relay.poll_transmit(now, &mut buf) {
                worked = true;
                self.transmit(id, &buf[..n]);
            }
            self.buf = buf;
            while let Some(action) = self.relay.poll_action() {
                worked = true;
                self.act(now, action);
            }
            if !worked {
                return;
            }
        }
    }

    fn transmit(&mut self, id: atbus_node::LinkId, data: &[u8]) {
        let Some(&tid) = self.by_relay.get(&id) else {
            return;
        };
        let Some(entry) = self.links.get_mut(&tid) else {
            return;
        };
        if entry.overflow.send(&mut self.transport, tid, data) == OverflowSend::Blocked {
            self.blocked_sends += 1;
            self.relay.handle_link_blocked(id);
        }
    }

    fn open(&mut self, id: atbus_node::LinkId, url: &Url) -> Result<(), TransportError> {
        let tid = self.transport.connect(url)?;
        self.by_relay.insert(id, tid);
        self.links.insert(
            tid,
            DriverLink {
                relay: Some(id),
                url: Some(url.clone()),
                ..DriverLink::default()
            },
        );
        Ok(())
    }

    fn act(&mut self, now: Instant, action: Action) {
        match action {
            Action::Close { link, reason } => {
                tracing::debug!(link = link.0, %reason, "closing link");
                if let Some(tid) = self.by_relay.remove(&link) {
                    self.flush_overflow(tid);
                    if let Some(entry) = self.links.get_mut(&tid) {
                        entry.relay = None;
                        entry.overflow.clear();
                    }
                    let _ = self.transport.close(tid);
                }
            }
            Action::PauseReading { link } => {
                if let Some(&tid) = self.by_relay.get(&link) {
                    let _ = self.transport.pause_reading(tid);
                }
            }
            Action::ResumeReading { link } => {
                if let Some(&tid) = self.by_relay.get(&link) {
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
                    self.relay.handle_link_closed(now, link);
                }
            }
            _ => {}
        }
    }
}
