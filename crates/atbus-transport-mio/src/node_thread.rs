//! A [`NodeDriver`] on a thread of its own, used from any number of application threads.
//!
//! [`NodeDriver::spawn`] moves the driver to a new thread that runs its loop and returns a
//! [`NodeThread`]: [`NodeHandle`]s (clonable, `Send`) queue sends and run closures on the loop,
//! and [`NodeThread::recv`] hands out what the node produced — messages in stream order,
//! skipped ranges, node events, failed sends — as [`NodeOutput`]s.
//!
//! ```no_run
//! use std::time::Duration;
//! use atbus_node::{NodeConfig, NodeEvent};
//! use atbus_transport_mio::{NodeDriver, NodeOutput, NodeThreadConfig, TransportConfig};
//!
//! let mut driver = NodeDriver::new(NodeConfig::new("client"), TransportConfig::default())?;
//! driver.connect(&"tcp://127.0.0.1:7000".parse()?)?;
//! let node = driver.spawn(NodeThreadConfig::default())?;
//! let handle = node.handle(); // clone it into as many threads as needed
//! loop {
//!     match node.recv_timeout(Duration::from_secs(5))? {
//!         NodeOutput::Event(NodeEvent::PeerUp { peer, .. }) => handle.send(&peer, 1, "hello")?,
//!         NodeOutput::Delivered { peer, delivery, .. } => {
//!             println!("{peer} answered {delivery:?}");
//!             break;
//!         }
//!         _ => {}
//!     }
//! }
//! node.stop()?; // graceful: waits (bounded) for acknowledgements
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Both queues are bounded. Sends wait in a channel of [`NodeThreadConfig::command_capacity`];
//! a send the session refuses for now (`WouldBlock`) is held by the loop, which then takes no
//! further command until the session has room again, so [`NodeHandle::send`] blocks (and
//! [`NodeHandle::try_send`] answers [`HandleError::Full`]) instead of memory growing. Output waits
//! in a channel of [`NodeThreadConfig::output_capacity`]; while it is full the loop stops reading
//! streams, so the peers' sessions feel the backpressure, and [`NodeThread::recv`] wakes the loop
//! once there is room. Every call fails with [`HandleError::Gone`] once the loop has ended.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use atbus_node::{Delivery, NodeError, NodeEvent, OutgoingMessage};
use bytes::Bytes;

use crate::handle::TransportHandle;
use crate::node_driver::{LinkFailure, NodeDriver, NodeDriverError};
use crate::url::Url;

/// Default [`NodeThreadConfig::command_capacity`].
pub const DEFAULT_COMMAND_CAPACITY: usize = 1024;
/// Default [`NodeThreadConfig::output_capacity`].
pub const DEFAULT_OUTPUT_CAPACITY: usize = 1024;
/// Commands the loop takes per round before it looks at its sockets again.
const COMMANDS_PER_ROUND: usize = 256;

/// Settings of a [`NodeThread`].
#[derive(Debug, Clone)]
pub struct NodeThreadConfig {
    /// Commands (sends, calls) queued for the loop at most. Default 1024.
    pub command_capacity: usize,
    /// Outputs queued for the application at most. Default 1024.
    pub output_capacity: usize,
    /// How long [`NodeThread::stop`] lets the driver wait for acknowledgements. Default 2 s.
    pub shutdown_timeout: Duration,
    /// Name of the thread. Default `atbus-node`.
    pub thread_name: String,
}

impl Default for NodeThreadConfig {
    fn default() -> Self {
        Self {
            command_capacity: DEFAULT_COMMAND_CAPACITY,
            output_capacity: DEFAULT_OUTPUT_CAPACITY,
            shutdown_timeout: Duration::from_secs(2),
            thread_name: "atbus-node".into(),
        }
    }
}

/// Why a [`NodeHandle`] or [`NodeThread`] call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandleError {
    /// The node's loop has ended (stopped, failed or panicked).
    #[error("the node's loop has ended")]
    Gone,
    /// The command queue is full (only [`NodeHandle::try_send`]).
    #[error("the node's command queue is full")]
    Full,
    /// Nothing arrived in time (only [`NodeThread::recv_timeout`]).
    #[error("timed out waiting for the node")]
    Timeout,
    /// The loop ended with an error.
    #[error(transparent)]
    Driver(#[from] NodeDriverError),
}

/// What the node produced, in the order it happened.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum NodeOutput {
    /// A message (or a skipped range) from `peer` on `stream_id`, in stream order.
    Delivered {
        /// Peer name.
        peer: String,
        /// Stream.
        stream_id: i64,
        /// The message or the skipped range.
        delivery: Delivery,
    },
    /// A node event; never [`NodeEvent::Readable`] (the loop reads and hands out `Delivered`).
    Event(NodeEvent),
    /// A send the node refused for good (unknown peer, closed stream, empty message, ...).
    SendFailed {
        /// Peer name.
        peer: String,
        /// Stream.
        stream_id: i64,
        /// The message.
        message: OutgoingMessage,
        /// Why.
        error: NodeError,
    },
    /// A connection opened with [`NodeHandle::connect`] failed before it came up.
    LinkFailed(LinkFailure),
}

type Call = Box<dyn FnOnce(&mut NodeDriver) + Send>;

enum Command {
    Send {
        peer: String,
        stream_id: i64,
        message: OutgoingMessage,
    },
    Call(Call),
    Stop,
}

/// State shared by the handles, the receiver and the loop.
struct Shared {
    waker: TransportHandle,
    /// A wake is on its way to the loop; later commands need no other.
    wake_pending: AtomicBool,
    /// The loop stopped reading because the output queue was full.
    output_stalled: AtomicBool,
}

impl Shared {
    fn wake(&self) -> Result<(), HandleError> {
        if !self.wake_pending.swap(true, Ordering::SeqCst) {
            self.waker.wake().map_err(|_| HandleError::Gone)?;
        }
        Ok(())
    }
}

/// A clonable, `Send` handle to a node running on its own thread.
#[derive(Clone)]
pub struct NodeHandle {
    tx: SyncSender<Command>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle").finish_non_exhaustive()
    }
}

impl NodeHandle {
    fn command(&self, command: Command) -> Result<(), HandleError> {
        self.tx.send(command).map_err(|_| HandleError::Gone)?;
        self.shared.wake()
    }

    /// Queues `data` to `peer` on `stream_id`, waiting while the command queue is full. A
    /// refusal by the node comes back as [`NodeOutput::SendFailed`].
    pub fn send(
        &self,
        peer: &str,
        stream_id: i64,
        data: impl Into<Bytes>,
    ) -> Result<(), HandleError> {
        self.send_message(peer, stream_id, OutgoingMessage::data(data))
    }

    /// Like [`send`](Self::send), with metadata.
    pub fn send_message(
        &self,
        peer: &str,
        stream_id: i64,
        message: OutgoingMessage,
    ) -> Result<(), HandleError> {
        self.command(Command::Send {
            peer: peer.to_owned(),
            stream_id,
            message,
        })
    }

    /// Like [`send`](Self::send), but answers [`HandleError::Full`] instead of waiting.
    pub fn try_send(
        &self,
        peer: &str,
        stream_id: i64,
        data: impl Into<Bytes>,
    ) -> Result<(), HandleError> {
        let command = Command::Send {
            peer: peer.to_owned(),
            stream_id,
            message: OutgoingMessage::data(data),
        };
        match self.tx.try_send(command) {
            Ok(()) => self.shared.wake(),
            Err(TrySendError::Full(_)) => Err(HandleError::Full),
            Err(TrySendError::Disconnected(_)) => Err(HandleError::Gone),
        }
    }

    /// Runs `f` on the loop's thread, after the commands queued before it, and returns its
    /// result (statistics, listeners, anything the driver offers).
    pub fn call<R, F>(&self, f: F) -> Result<R, HandleError>
    where
        R: Send + 'static,
        F: FnOnce(&mut NodeDriver) -> R + Send + 'static,
    {
        let (reply, answer) = mpsc::sync_channel(1);
        self.command(Command::Call(Box::new(move |d| {
            let _ = reply.send(f(d));
        })))?;
        answer.recv().map_err(|_| HandleError::Gone)
    }

    /// Listens on `url`; returns the bound URL.
    pub fn listen(&self, url: &Url) -> Result<Url, HandleError> {
        let url = url.clone();
        Ok(self.call(move |d| d.listen(&url))??)
    }

    /// Opens a link to `url` once; a failure comes back as [`NodeOutput::LinkFailed`].
    pub fn connect(&self, url: &Url) -> Result<atbus_node::LinkId, HandleError> {
        let url = url.clone();
        Ok(self.call(move |d| d.connect(&url))??)
    }

    /// Asks the loop to shut down gracefully (without waiting for it).
    pub fn request_stop(&self) -> Result<(), HandleError> {
        self.command(Command::Stop)
    }
}

/// A node running on its own thread: the receiving end of its output and the owner of the
/// thread. Dropping it asks the loop to stop without waiting.
pub struct NodeThread {
    handle: NodeHandle,
    output: Receiver<NodeOutput>,
    join: Option<JoinHandle<Result<(), NodeDriverError>>>,
}

impl std::fmt::Debug for NodeThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeThread").finish_non_exhaustive()
    }
}

impl NodeThread {
    /// A new handle to the node.
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// Tells the loop there is room in the output queue if it had stopped reading.
    fn received(&self, output: NodeOutput) -> NodeOutput {
        if self
            .handle
            .shared
            .output_stalled
            .swap(false, Ordering::SeqCst)
        {
            let _ = self.handle.shared.wake();
        }
        output
    }

    /// The next output, waiting for it.
    pub fn recv(&self) -> Result<NodeOutput, HandleError> {
        let output = self.output.recv().map_err(|_| HandleError::Gone)?;
        Ok(self.received(output))
    }

    /// The next output, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<NodeOutput, HandleError> {
        match self.output.recv_timeout(timeout) {
            Ok(output) => Ok(self.received(output)),
            Err(RecvTimeoutError::Timeout) => Err(HandleError::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(HandleError::Gone),
        }
    }

    /// The next output if one is ready (`Ok(None)` if not).
    pub fn try_recv(&self) -> Result<Option<NodeOutput>, HandleError> {
        match self.output.try_recv() {
            Ok(output) => Ok(Some(self.received(output))),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(HandleError::Gone),
        }
    }

    /// Stops the loop gracefully (see [`NodeDriver::shutdown`]) and waits for the thread; the
    /// error the loop ended with, if any. Outputs not received by then are dropped.
    pub fn stop(mut self) -> Result<(), HandleError> {
        // Already gone is fine: the join below tells why.
        let _ = self.handle.request_stop();
        let join = self.join.take();
        // Dropping the receiver lets a loop blocked on a full output queue see it has no reader.
        drop(std::mem::replace(&mut self.output, mpsc::sync_channel(0).1));
        match join.map(JoinHandle::join) {
            Some(Ok(Ok(()))) | None => Ok(()),
            Some(Ok(Err(err))) => Err(err.into()),
            Some(Err(_)) => Err(HandleError::Gone),
        }
    }
}

impl Drop for NodeThread {
    fn drop(&mut self) {
        if self.join.is_some() {
            let _ = self.handle.request_stop();
        }
    }
}

impl NodeDriver {
    /// Moves the driver to a new thread that runs its loop; see [`NodeThread`].
    pub fn spawn(self, config: NodeThreadConfig) -> Result<NodeThread, NodeDriverError> {
        let (tx, commands) = mpsc::sync_channel(config.command_capacity.max(1));
        let capacity = config.output_capacity.max(1);
        let (out, output) = mpsc::sync_channel(capacity);
        let shared = Arc::new(Shared {
            waker: self.transport().handle(),
            wake_pending: AtomicBool::new(false),
            output_stalled: AtomicBool::new(false),
        });
        let handle = NodeHandle {
            tx,
            shared: Arc::clone(&shared),
        };
        let shutdown = config.shutdown_timeout;
        let join = std::thread::Builder::new()
            .name(config.thread_name.clone())
            .spawn(move || {
                Loop {
                    driver: self,
                    commands,
                    out,
                    shared,
                    capacity,
                    backlog: VecDeque::new(),
                    readable: BTreeSet::new(),
                    held: None,
                }
                .run(shutdown)
            })
            .map_err(|e| crate::TransportError::io("spawn the node thread", e))?;
        Ok(NodeThread {
            handle,
            output,
            join: Some(join),
        })
    }
}

/// The loop on the node's thread.
struct Loop {
    driver: NodeDriver,
    commands: Receiver<Command>,
    out: SyncSender<NodeOutput>,
    shared: Arc<Shared>,
    capacity: usize,
    /// Outputs the full channel did not take yet, oldest first (at most `capacity` events plus
    /// one delivery).
    backlog: VecDeque<NodeOutput>,
    /// Streams that have something to read.
    readable: BTreeSet<(String, i64)>,
    /// A send the session refused for now (`WouldBlock`); no other command runs before it.
    held: Option<(String, i64, OutgoingMessage)>,
}

/// Whether the loop goes on after a step.
enum Flow {
    Continue,
    Stop,
}

impl Loop {
    fn run(mut self, shutdown: Duration) -> Result<(), NodeDriverError> {
        loop {
            let (flow, more) = self.take_commands();
            if let Flow::Stop = flow {
                break;
            }
            let wait = if more || self.can_read() {
                Duration::ZERO
            } else {
                Duration::from_millis(500)
            };
            self.driver.run_once(Some(wait))?;
            if let Flow::Stop = self.produce() {
                break;
            }
        }
        let result = self.driver.shutdown(shutdown);
        while let Some(event) = self.driver.poll_event() {
            if self.out.try_send(NodeOutput::Event(event)).is_err() {
                break;
            }
        }
        result
    }

    /// Whether a readable stream waits while the output queue has room.
    fn can_read(&self) -> bool {
        !self.readable.is_empty() && self.backlog.is_empty()
    }

    /// Runs queued commands; whether to stop, and whether commands are left for the next round.
    fn take_commands(&mut self) -> (Flow, bool) {
        self.shared.wake_pending.store(false, Ordering::SeqCst);
        if let Some((peer, stream_id, message)) = self.held.take() {
            if !self.send(peer, stream_id, message) {
                return (Flow::Continue, false);
            }
        }
        for _ in 0..COMMANDS_PER_ROUND {
            match self.commands.try_recv() {
                Ok(Command::Send {
                    peer,
                    stream_id,
                    message,
                }) => {
                    if !self.send(peer, stream_id, message) {
                        return (Flow::Continue, false);
                    }
                }
                Ok(Command::Call(f)) => f(&mut self.driver),
                Ok(Command::Stop) => return (Flow::Stop, false),
                Err(TryRecvError::Empty) => return (Flow::Continue, false),
                // Every handle is gone, the thread's owner too: nobody can use the node.
                Err(TryRecvError::Disconnected) => return (Flow::Stop, false),
            }
        }
        (Flow::Continue, true)
    }

    /// Hands a message to the node; false when the session refused it for now (it is held).
    fn send(&mut self, peer: String, stream_id: i64, message: OutgoingMessage) -> bool {
        match self
            .driver
            .node_mut()
            .send(&peer, stream_id, message.clone())
        {
            Ok(_) => true,
            Err(NodeError::Send(atbus_stream::SendError::WouldBlock)) => {
                self.held = Some((peer, stream_id, message));
                false
            }
            Err(error) => {
                self.emit(NodeOutput::SendFailed {
                    peer,
                    stream_id,
                    message,
                    error,
                });
                true
            }
        }
    }

    /// Queues `output` for the application, keeping it in the backlog while the channel is full.
    fn emit(&mut self, output: NodeOutput) -> bool {
        if !self.backlog.is_empty() {
            self.backlog.push_back(output);
            return true;
        }
        match self.out.try_send(output) {
            Ok(()) => true,
            Err(TrySendError::Full(output)) => {
                self.backlog.push_back(output);
                self.shared.output_stalled.store(true, Ordering::SeqCst);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Moves backlog, link failures, node events and readable messages to the application.
    fn produce(&mut self) -> Flow {
        while let Some(front) = self.backlog.pop_front() {
            match self.out.try_send(front) {
                Ok(()) => {}
                Err(TrySendError::Full(front)) => {
                    self.backlog.push_front(front);
                    self.shared.output_stalled.store(true, Ordering::SeqCst);
                    break;
                }
                Err(TrySendError::Disconnected(_)) => return Flow::Stop,
            }
        }
        while let Some(failure) = self.driver.poll_link_failure() {
            if !self.emit(NodeOutput::LinkFailed(failure)) {
                return Flow::Stop;
            }
        }
        while self.backlog.len() < self.capacity {
            let Some(event) = self.driver.poll_event() else {
                break;
            };
            match event {
                NodeEvent::Readable { peer, stream_id } => {
                    self.readable.insert((peer, stream_id));
                }
                other => {
                    if !self.emit(NodeOutput::Event(other)) {
                        return Flow::Stop;
                    }
                }
            }
        }
        while self.backlog.is_empty() {
            let Some((peer, stream_id)) = self.readable.first().cloned() else {
                break;
            };
            match self.driver.read(&peer, stream_id) {
                Some(delivery) => {
                    let output = NodeOutput::Delivered {
                        peer,
                        stream_id,
                        delivery,
                    };
                    if !self.emit(output) {
                        return Flow::Stop;
                    }
                }
                None => {
                    self.readable.remove(&(peer, stream_id));
                }
            }
        }
        Flow::Continue
    }
}
