//! Echo pairs over loopback TCP and Unix sockets, shared by the `loopback` bench and the
//! `loopback_rtt` example: two `NodeDriver`s (the echo on its own thread), and the raw baseline of
//! the same pattern on blocking std sockets (a thread echoing length-prefixed messages).
//!
//! Both sides move the same payloads: `count` messages of `size` bytes from a client to an echo
//! and back, the client checking each echo.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use atbus_node::{Delivery, NodeConfig, NodeError, NodeEvent};
use atbus_stream::SendError;
use atbus_transport_mio::{NodeDriver, TransportConfig, Url};
use bytes::Bytes;

/// Longest any exchange may take before the benchmark gives up with a panic.
const TIMEOUT: Duration = Duration::from_secs(60);
/// The stream the atbus client sends on.
const STREAM: i64 = 1;

/// Which loopback socket family a pair uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// TCP on 127.0.0.1 with TCP_NODELAY.
    Tcp,
    /// A Unix stream socket in the temporary directory.
    Unix,
}

impl Family {
    /// Lower-case name for bench ids and tables.
    pub fn name(self) -> &'static str {
        match self {
            Family::Tcp => "tcp",
            Family::Unix => "unix",
        }
    }
}

static NEXT_SOCKET: AtomicU64 = AtomicU64::new(0);

fn unix_path() -> PathBuf {
    let n = NEXT_SOCKET.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("atbus-loopback-{}-{n}.sock", std::process::id()))
}

/// A pattern payload whose first bytes differ per size.
pub fn payload(size: usize) -> Bytes {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ size as u64;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

// ---------------------------------------------------------------------------------------------
// Raw baseline: blocking std sockets, 4-byte little-endian length prefix.

/// A blocking std socket of either family.
pub enum RawStream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix.
    Unix(UnixStream),
}

impl RawStream {
    fn try_clone(&self) -> io::Result<RawStream> {
        Ok(match self {
            RawStream::Tcp(s) => RawStream::Tcp(s.try_clone()?),
            RawStream::Unix(s) => RawStream::Unix(s.try_clone()?),
        })
    }

    fn shutdown(&self) {
        let _ = match self {
            RawStream::Tcp(s) => s.shutdown(Shutdown::Both),
            RawStream::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for RawStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            RawStream::Tcp(s) => s.read(buf),
            RawStream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for RawStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            RawStream::Tcp(s) => s.write(buf),
            RawStream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How the raw echo thread writes back what it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawEchoMode {
    /// One `write` per message.
    PerMessage,
    /// All complete messages of one `read` in one `write`.
    Batched,
}

/// Echoes length-prefixed messages until end of stream.
fn raw_echo(mut s: RawStream, mode: RawEchoMode) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = match s.read(&mut buf[filled..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        filled += n;
        let mut at = 0;
        let mut start = 0;
        while filled - at >= 4 {
            let len = u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
            if filled - at < 4 + len {
                break;
            }
            if mode == RawEchoMode::PerMessage && s.write_all(&buf[at..at + 4 + len]).is_err() {
                return;
            }
            at += 4 + len;
        }
        if mode == RawEchoMode::Batched && at > start && s.write_all(&buf[start..at]).is_err() {
            return;
        }
        start = at;
        buf.copy_within(start..filled, 0);
        filled -= start;
    }
}

/// A client connected to a raw echo thread.
pub struct RawPair {
    client: RawStream,
    echo: Option<JoinHandle<()>>,
    path: Option<PathBuf>,
    frame: Vec<u8>,
    read_buf: Vec<u8>,
}

impl RawPair {
    /// Starts an echo thread on a fresh loopback socket and connects to it.
    pub fn new(family: Family, mode: RawEchoMode) -> RawPair {
        let (client, server, path) = match family {
            Family::Tcp => {
                let l = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
                let c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect tcp");
                let (s, _) = l.accept().expect("accept tcp");
                c.set_nodelay(true).expect("nodelay");
                s.set_nodelay(true).expect("nodelay");
                (RawStream::Tcp(c), RawStream::Tcp(s), None)
            }
            Family::Unix => {
                let path = unix_path();
                let l = UnixListener::bind(&path).expect("bind unix");
                let c = UnixStream::connect(&path).expect("connect unix");
                let (s, _) = l.accept().expect("accept unix");
                (RawStream::Unix(c), RawStream::Unix(s), Some(path))
            }
        };
        let echo = thread::spawn(move || raw_echo(server, mode));
        RawPair {
            client,
            echo: Some(echo),
            path,
            frame: Vec::new(),
            read_buf: vec![0u8; 256 * 1024],
        }
    }

    fn set_frame(&mut self, data: &[u8]) {
        self.frame.clear();
        self.frame
            .extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.frame.extend_from_slice(data);
    }

    /// One strict round trip of `data`: one write, then read the echo; returns its duration.
    pub fn round_trip(&mut self, data: &[u8]) -> Duration {
        self.set_frame(data);
        let start = Instant::now();
        self.client.write_all(&self.frame).expect("raw write");
        let want = self.frame.len();
        self.client
            .read_exact(&mut self.read_buf[..want])
            .expect("raw read");
        let took = start.elapsed();
        assert_eq!(&self.read_buf[..want], &self.frame[..], "raw echo differs");
        took
    }

    /// Streams `count` messages of `data` to the echo and reads every echo back, the writer on
    /// its own thread (the kernel buffers are the window). `batch` messages go in one `write`.
    pub fn stream(&mut self, data: &[u8], count: usize, batch: usize) {
        self.set_frame(data);
        let batch = batch.max(1);
        let mut chunk = Vec::with_capacity(self.frame.len() * batch);
        for _ in 0..batch {
            chunk.extend_from_slice(&self.frame);
        }
        let frame_len = self.frame.len();
        let mut writer = self.client.try_clone().expect("clone socket");
        thread::scope(|scope| {
            scope.spawn(move || {
                let mut left = count;
                while left > 0 {
                    let n = left.min(batch);
                    writer
                        .write_all(&chunk[..n * frame_len])
                        .expect("raw write");
                    left -= n;
                }
            });
            let total = count * frame_len;
            let mut got = 0;
            // Offset in the current frame: every echoed byte is checked, as the atbus side
            // checks every echoed message.
            let mut at = 0;
            while got < total {
                let n = self.client.read(&mut self.read_buf).expect("raw read");
                assert!(n > 0, "raw echo ended early");
                let mut rest = &self.read_buf[..n];
                while !rest.is_empty() {
                    let take = rest.len().min(frame_len - at);
                    assert!(
                        rest[..take] == self.frame[at..at + take],
                        "raw echo differs"
                    );
                    at = (at + take) % frame_len;
                    rest = &rest[take..];
                }
                got += n;
            }
            assert_eq!(got, total, "raw echo returned more than was sent");
        });
    }
}

impl Drop for RawPair {
    fn drop(&mut self) {
        self.client.shutdown();
        if let Some(echo) = self.echo.take() {
            let _ = echo.join();
        }
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// atbus: a client NodeDriver and an echo NodeDriver on its own thread.

/// Returns every message to its sender on the same stream, holding what the session refuses.
pub fn echo_loop(mut d: NodeDriver, stop: &AtomicBool) {
    let mut pending: VecDeque<(String, i64, Bytes)> = VecDeque::new();
    while !stop.load(Ordering::Relaxed) {
        if d.run_once(Some(Duration::from_millis(20))).is_err() {
            return;
        }
        while let Some(event) = d.poll_event() {
            if let NodeEvent::Readable { peer, stream_id } = event {
                while let Some(delivery) = d.read(&peer, stream_id) {
                    if let Delivery::Message(m) = delivery {
                        pending.push_back((peer.clone(), stream_id, m.data));
                    }
                }
            }
        }
        while let Some((peer, stream, data)) = pending.front() {
            match d.send(peer, *stream, data.clone()) {
                Ok(_) => {
                    pending.pop_front();
                }
                Err(NodeError::Send(SendError::WouldBlock)) => break,
                Err(e) => panic!("echo send: {e}"),
            }
        }
    }
}

/// Reads the echoes that reached `client` (from the node named `echo`); checks each against
/// `data`, calls `on_echo` for each, returns how many.
pub fn take_echoes(client: &mut NodeDriver, data: &Bytes, mut on_echo: impl FnMut()) -> usize {
    let mut got = 0;
    while let Some(event) = client.poll_event() {
        match event {
            NodeEvent::Readable { peer, stream_id } => {
                while let Some(delivery) = client.read(&peer, stream_id) {
                    let Delivery::Message(m) = delivery else {
                        panic!("the echo skipped data");
                    };
                    assert_eq!(m.data, *data, "atbus echo differs");
                    got += 1;
                    on_echo();
                }
            }
            NodeEvent::PeerDown { peer } if peer == "echo" => panic!("lost the echo node"),
            NodeEvent::Undeliverable { .. } => panic!("undeliverable message"),
            _ => {}
        }
    }
    got
}

/// `client` sends `count` messages of `data` to `echo`, at most `window` in flight, and waits
/// for every echo.
pub fn stream_echoes(client: &mut NodeDriver, data: &Bytes, count: usize, window: usize) {
    let window = window.max(1);
    let (mut sent, mut received) = (0usize, 0usize);
    let deadline = Instant::now() + TIMEOUT;
    while received < count {
        assert!(Instant::now() < deadline, "timed out: {received}/{count}");
        while sent < count && sent - received < window {
            match client.send("echo", STREAM, data.clone()) {
                Ok(_) => sent += 1,
                Err(NodeError::Send(SendError::WouldBlock)) => break,
                Err(e) => panic!("send: {e}"),
            }
        }
        client
            .run_once(Some(Duration::from_millis(50)))
            .expect("run");
        received += take_echoes(client, data, || {});
    }
}

/// One strict round trip of `data` from `client` to `echo`; returns its duration.
pub fn round_trip(client: &mut NodeDriver, data: &Bytes) -> Duration {
    let start = Instant::now();
    client.send("echo", STREAM, data.clone()).expect("send");
    let deadline = start + TIMEOUT;
    loop {
        assert!(Instant::now() < deadline, "round trip timed out");
        client
            .run_once(Some(Duration::from_millis(50)))
            .expect("run");
        let mut at = None;
        take_echoes(client, data, || at = Some(start.elapsed()));
        if let Some(took) = at {
            return took;
        }
    }
}

/// A client `NodeDriver` linked to an echo `NodeDriver` running on its own thread.
pub struct AtbusPair {
    client: NodeDriver,
    stop: Arc<AtomicBool>,
    echo: Option<JoinHandle<()>>,
    path: Option<PathBuf>,
}

impl AtbusPair {
    /// Starts the echo node on a fresh loopback listener and waits until the client's session
    /// with it is up.
    pub fn new(family: Family) -> AtbusPair {
        AtbusPair::with_window(family, None)
    }

    /// Like [`new`](Self::new); `window` (bytes), when given, replaces on both nodes the
    /// session's per-stream receive window and per-path in-flight window (both 1 MiB by
    /// default), to see how far flow control bounds the throughput.
    pub fn with_window(family: Family, window: Option<u64>) -> AtbusPair {
        AtbusPair::with_config(family, move |name: &str| {
            let mut c = NodeConfig::new(name);
            if let Some(w) = window {
                c.session.stream_receive_window = w;
                c.session.session_receive_window = c.session.session_receive_window.max(w * 4);
                c.session.byte_stream_path_window = usize::try_from(w).unwrap_or(usize::MAX);
            }
            c
        })
    }

    /// Like [`new`](Self::new), both nodes configured by `config(name)` (for example with
    /// tokens and content protection).
    pub fn with_config(
        family: Family,
        config: impl Fn(&str) -> NodeConfig + Send + Sync + 'static,
    ) -> AtbusPair {
        let config = Arc::new(config);
        let echo_config = Arc::clone(&config);
        let (url, path) = match family {
            Family::Tcp => ("tcp://127.0.0.1:0".to_string(), None),
            Family::Unix => {
                let p = unix_path();
                (format!("unix://{}", p.display()), Some(p))
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let echo_stop = Arc::clone(&stop);
        let echo = thread::spawn(move || {
            let mut d = NodeDriver::new(echo_config("echo"), TransportConfig::default())
                .expect("echo node");
            let bound = d.listen(&url.parse::<Url>().expect("url")).expect("listen");
            tx.send(bound).expect("report bound url");
            echo_loop(d, &echo_stop);
        });
        let bound = rx.recv().expect("echo node started");
        let mut client =
            NodeDriver::new(config("client"), TransportConfig::default()).expect("client node");
        client.connect(&bound).expect("connect");
        let deadline = Instant::now() + TIMEOUT;
        'up: loop {
            assert!(Instant::now() < deadline, "echo node never came up");
            client
                .run_once(Some(Duration::from_millis(20)))
                .expect("run");
            assert!(client.poll_link_failure().is_none(), "connect failed");
            while let Some(event) = client.poll_event() {
                if let NodeEvent::PeerUp { .. } = event {
                    break 'up;
                }
            }
        }
        AtbusPair {
            client,
            stop,
            echo: Some(echo),
            path,
        }
    }

    /// The client driver (for its transport counters).
    pub fn client(&self) -> &NodeDriver {
        &self.client
    }

    /// Sends `count` messages of `data`, at most `window` in flight, and waits for every echo.
    pub fn stream(&mut self, data: &Bytes, count: usize, window: usize) {
        stream_echoes(&mut self.client, data, count, window);
    }

    /// One strict round trip of `data`; returns its duration.
    pub fn round_trip(&mut self, data: &Bytes) -> Duration {
        round_trip(&mut self.client, data)
    }
}

impl Drop for AtbusPair {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(echo) = self.echo.take() {
            let _ = echo.join();
        }
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The value at quantile `q` (0..=1) of `sorted`.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
