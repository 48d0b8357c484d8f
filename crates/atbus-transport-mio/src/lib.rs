//! Layer 4 of libatbus-rs: the socket layer of the mio driver.
//!
//! A [`Transport`] owns one `mio::Poll` with its listeners and links, chosen by URL —
//! `tcp://host:port`, `udp://host:port`, `unix:///abs/path` (or `unix://relative/path`, relative to
//! the working directory) and `mem://name` (in-process) — and reports what happens as
//! [`TransportEvent`]s keyed by [`LinkId`]. It knows nothing of packages or nodes: byte streams
//! deliver [`TransportEvent::Bytes`] in arbitrary splits, UDP and in-process links deliver whole
//! [`TransportEvent::Datagram`]s, and framing (`atbus-frame`) is the core's job. So any sans-IO
//! core (node, relay) glues on in about twenty lines.
//!
//! A TCP echo on loopback, driven the way a core is driven:
//!
//! ```
//! use std::time::Duration;
//! use atbus_transport_mio::{Transport, TransportConfig, TransportEvent};
//!
//! let mut t = Transport::new(TransportConfig::default())?;
//! let (_listener, bound) = t.listen(&"tcp://127.0.0.1:0".parse()?)?; // bound has the real port
//! let client = t.connect(&bound)?; // non-blocking: LinkUp (or LinkClosed) follows
//! let (mut events, mut echoed) = (Vec::new(), Vec::new());
//! while echoed != b"hello" {
//!     t.poll_events(Some(Duration::from_secs(5)), &mut events)?;
//!     for event in events.drain(..) {
//!         match event {
//!             TransportEvent::LinkUp { link, .. } if link == client => {
//!                 t.send(client, b"hello")?;
//!             }
//!             TransportEvent::Bytes { link, data } if link == client => {
//!                 echoed.extend_from_slice(&data); // any split: the core reassembles
//!             }
//!             TransportEvent::Bytes { link, data } => {
//!                 t.send(link, &data)?; // the accepted side echoes
//!             }
//!             _ => {}
//!         }
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Gluing a sans-IO core
//!
//! Input is pushed into the core, output is pulled from it, and the transport is the only thing
//! that touches sockets. With a core shaped like `atbus-node` (its method names may differ):
//!
//! ```no_run
//! # use std::time::{Duration, Instant};
//! # use atbus_transport_mio::*;
//! # enum Action { Connect(Url), Close(LinkId), Pause(LinkId), Resume(LinkId) }
//! # trait Core {
//! #     fn handle_link_up(&mut self, link: LinkId, kind: LinkKind, mtu: usize, now: Instant);
//! #     fn handle_link_bytes(&mut self, link: LinkId, data: &[u8], now: Instant);
//! #     fn handle_link_datagram(&mut self, link: LinkId, data: &[u8], now: Instant);
//! #     fn handle_link_writable(&mut self, link: LinkId, now: Instant);
//! #     fn handle_link_closed(&mut self, link: LinkId, now: Instant);
//! #     fn handle_timeout(&mut self, now: Instant);
//! #     fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> Option<LinkId>;
//! #     fn unsend(&mut self, link: LinkId, buf: &[u8]);
//! #     fn poll_action(&mut self) -> Option<Action>;
//! #     fn poll_timeout(&self) -> Option<Instant>;
//! # }
//! fn run(core: &mut impl Core, t: &mut Transport) -> Result<()> {
//!     let (mut events, mut buf) = (Vec::new(), Vec::new());
//!     loop {
//!         let now = Instant::now();
//!         for event in events.drain(..) {
//!             match event {
//!                 TransportEvent::LinkUp { link, kind, mtu, .. } => core.handle_link_up(link, kind, mtu, now),
//!                 TransportEvent::Bytes { link, data } => core.handle_link_bytes(link, &data, now),
//!                 TransportEvent::Datagram { link, data } => core.handle_link_datagram(link, &data, now),
//!                 TransportEvent::Writable { link } => core.handle_link_writable(link, now),
//!                 TransportEvent::LinkClosed { link, .. } => core.handle_link_closed(link, now),
//!                 _ => {}
//!             }
//!         }
//!         if core.poll_timeout().is_some_and(|at| at <= now) { core.handle_timeout(now); }
//!         while let Some(link) = core.poll_transmit(&mut buf) {
//!             // Blocked: the core keeps the package and waits for Writable on that link.
//!             if let Ok(SendStatus::Blocked) = t.send(link, &buf) { core.unsend(link, &buf); }
//!             buf.clear();
//!         }
//!         while let Some(action) = core.poll_action() {
//!             let _ = match action {
//!                 Action::Connect(url) => t.connect(&url).map(drop),
//!                 Action::Close(link) => t.close(link),
//!                 Action::Pause(link) => t.pause_reading(link),
//!                 Action::Resume(link) => t.resume_reading(link),
//!             };
//!         }
//!         let wait = core.poll_timeout().map(|at| at.saturating_duration_since(Instant::now()));
//!         t.poll_events(wait, &mut events)?;
//!     }
//! }
//! ```
//!
//! `examples/custom_loop.rs` is the same loop around the real `atbus_node::Node`, runnable
//! (`cargo run -p atbus-transport-mio --example custom_loop`): it connects to an echo node and
//! prints the echo. [`NodeDriver`] is that glue for `atbus-node`, ready made (with overflow
//! buffering on `Blocked`, clocks and an OS-seeded RNG).
//!
//! Application threads talk to the loop through a [`TransportHandle`] (a channel plus a
//! `mio::Waker`): `handle.post(|t| ...)` runs a closure on the loop's thread, which then reports
//! [`TransportEvent::Woken`] so the glue can poll the core for new output. For a node,
//! [`NodeDriver::spawn`] does it all: the loop runs on its own thread, [`NodeHandle`]s send (and
//! run closures on the driver) from any thread, and [`NodeThread::recv`] hands out messages and
//! events, through bounded queues (see [`node_thread`]).
//!
//! # Behaviour, limits and defaults
//!
//! - **Link lifecycle.** [`Transport::connect`] never blocks and never fails for network reasons:
//!   `LinkUp` or `LinkClosed { reason: ConnectFailed(..) }` follows. Host names resolve on a helper
//!   thread (one per connect; the first address is used); `listen` resolves on the calling thread.
//!   Every link id ends with exactly one `LinkClosed`. Sending before `LinkUp` is
//!   [`TransportError::NotConnected`].
//! - **Writes.** Byte-stream sends under [`TransportConfig::coalesce_below`] (16 KiB) are queued
//!   and written together, one system call per link, before `poll_events` next waits (or once
//!   64 KiB wait), so what one turn of the loop produced leaves at once; larger sends are written
//!   at once behind the queue in one `write_vectored`. What the socket does not take goes out on
//!   writability with `write_vectored` (up to 64 slices). The queue is bounded by
//!   [`TransportConfig::write_queue_limit`] (default 4 MiB): past it `send` answers
//!   [`SendStatus::Blocked`] and accepts nothing, and [`TransportEvent::Writable`] follows once
//!   the queue is down to half. TCP_NODELAY is on for every TCP link. Nothing waits to build a
//!   batch beyond the current turn.
//! - **Reads.** Every read lands in one reusable buffer and is handed out as `Bytes` sliced from a
//!   shared block (default 64 KiB) that is reused once the previous slices are dropped. A short
//!   byte-stream read ends the link's round (new data raises a new readiness edge). A link
//!   reads at most 1 MiB per round, a listener accepts at most 64 connections and a UDP socket
//!   receives at most 64 datagrams per round, so one busy socket cannot starve the others.
//!   `docs/transport.md` has the details and the loopback benchmarks.
//! - **Backpressure.** `pause_reading` removes read interest from byte streams (the kernel buffer
//!   fills and the peer's sender blocks); in-process chunks stay unreleased so the peer's `send`
//!   answers `Blocked`; UDP datagrams that arrive while paused are dropped and counted.
//! - **UDP.** One listening socket serves many peers: each new source address becomes an
//!   `Inbound` link, up to [`TransportConfig::udp_max_peers`] (default 1024); datagrams from
//!   further addresses are dropped and counted in [`ListenerStats::udp_peer_limit_drops`]. Closing
//!   a served link only forgets the address (if the peer keeps sending it reappears as a new
//!   link). `connect(udp://…)` gives the link its own connected socket. UDP has no backpressure:
//!   a full socket buffer drops the datagram ([`SendStatus::Dropped`]). `SO_RCVBUF` defaults to
//!   4 MiB (capped by the kernel's `rmem_max`). Reported MTUs are advisory: 548 (IPv4) and 1224
//!   (IPv6) by default.
//! - **In-process.** `mem://` names live in a process-global registry; links may join two
//!   transports on different threads. Each `send` arrives whole, reliably and in order.
//! - **Close.** `close` on a byte stream flushes the queue, shuts down the write side and waits
//!   for the peer's end of stream, within [`TransportConfig::close_timeout`] (default 5 s).
//!   [`Transport::shutdown`] does this for every link and closes every listener.
//!
//! Not here yet: trying more than one resolved address, Linux abstract Unix sockets, UDP GSO/GRO
//! and `sendmmsg` batching, and timers for cores (the glue passes the core's deadline to
//! `poll_events`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod error;
mod event;
mod handle;
mod mem;
pub mod node_driver;
pub mod node_thread;
pub mod overflow;
mod read_blocks;
mod stream;
mod transport;
mod url;

pub use config::{
    DEFAULT_BATCH, DEFAULT_UDP_MAX_PEERS, DEFAULT_WRITE_QUEUE_LIMIT, TransportConfig,
};
pub use error::{Result, TransportError};
pub use event::{
    CloseReason, Direction, LinkId, LinkKind, LinkStats, ListenerId, ListenerStats, SendStatus,
    TransportEvent,
};
pub use handle::{Command, TransportHandle};
pub use node_driver::{DriverLinkInfo, LinkFailure, NodeDriver, NodeDriverError};
pub use node_thread::{HandleError, NodeHandle, NodeOutput, NodeThread, NodeThreadConfig};
pub use overflow::{LinkOverflow, OverflowSend};
pub use transport::Transport;
pub use url::{Url, UrlError};
