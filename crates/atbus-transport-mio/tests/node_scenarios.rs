//! Failure scenarios of two `NodeDriver`s on real loopback sockets: two links carrying one
//! session, a link killed mid-transfer, a slow reader, a peer restarted mid-stream, garbage on a
//! listening socket, and UDP through a lossy, duplicating, reordering proxy. Every message is
//! verified byte for byte, exactly once, in order per stream; every wait has a deadline.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use atbus_node::{Delivery, NodeConfig, NodeError, NodeEvent, UndeliverableReason};
use atbus_stream::SendError;
use atbus_transport_mio::{NodeDriver, TransportConfig, Url};
use bytes::Bytes;

/// Limit of every scenario; a run past it fails with what it was waiting for.
const TIMEOUT: Duration = Duration::from_secs(60);

const TICK: Option<Duration> = Some(Duration::from_millis(1));

fn url(s: &str) -> Url {
    s.parse().unwrap()
}

fn driver(name: &str) -> NodeDriver {
    driver_with(NodeConfig::new(name))
}

fn driver_with(config: NodeConfig) -> NodeDriver {
    NodeDriver::new(config, TransportConfig::default()).unwrap()
}

/// A node whose stream receive window holds a 1 MiB message with room to spare (see
/// `message_of_most_of_the_stream_window_is_delivered`).
fn big_window(name: &str) -> NodeDriver {
    let mut c = NodeConfig::new(name);
    c.session.stream_receive_window = 2 * 1024 * 1024;
    driver_with(c)
}

fn payload(seq: u32, size: usize) -> Bytes {
    let mut x = u64::from(seq) * 0x9e37_79b9 + 1;
    let v: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    Bytes::from(v)
}

/// Mixed sizes from 1 B to 1 MiB: one 1 MiB message per 2000, the rest averaging ~1 KiB.
fn size_of(seq: u32) -> usize {
    const SIZES: [usize; 10] = [1, 17, 64, 300, 1500, 4000, 5000, 1, 200, 100];
    if seq % 2000 == 1000 {
        1024 * 1024
    } else {
        SIZES[seq as usize % SIZES.len()]
    }
}

struct Deadline {
    at: Instant,
}

impl Deadline {
    fn new() -> Self {
        Self {
            at: Instant::now() + TIMEOUT,
        }
    }

    fn check(&self, what: impl FnOnce() -> String) {
        assert!(
            Instant::now() < self.at,
            "timed out after {TIMEOUT:?} waiting for: {}",
            what()
        );
    }
}

/// Echo side: returns every message to its sender on the same stream, holding what the
/// session refuses (`WouldBlock`) until it has room. Counts what it sees.
#[derive(Default)]
struct Echo {
    pending: VecDeque<(String, i64, Bytes)>,
    undeliverable: u32,
    rejected: Vec<String>,
    peer_up: u32,
}

impl Echo {
    fn step(&mut self, d: &mut NodeDriver) {
        while let Some(event) = d.poll_event() {
            match event {
                NodeEvent::Readable { peer, stream_id } => {
                    while let Some(delivery) = d.read(&peer, stream_id) {
                        let Delivery::Message(m) = delivery else {
                            panic!("echo: skipped data on stream {stream_id}");
                        };
                        self.pending.push_back((peer.clone(), stream_id, m.data));
                    }
                }
                NodeEvent::Undeliverable { .. } => self.undeliverable += 1,
                NodeEvent::LinkRejected { reason, .. } => self.rejected.push(reason.to_string()),
                NodeEvent::PeerUp { .. } => self.peer_up += 1,
                _ => {}
            }
        }
        while let Some((peer, stream, data)) = self.pending.front() {
            match d.send(peer, *stream, data.clone()) {
                Ok(_) => {
                    self.pending.pop_front();
                }
                Err(NodeError::Send(SendError::WouldBlock)) => break,
                Err(e) => panic!("echo send: {e}"),
            }
        }
    }
}

/// A sent message: its sequence number and payload.
type Sent = (u32, Bytes);

/// Client side: sends `count` numbered messages round-robin on `streams` streams with at most
/// `window` unechoed, and verifies every echo (exactly once, in order per stream).
struct Client {
    peer: String,
    count: u32,
    streams: i64,
    window: u32,
    next: u32,
    received: u32,
    up: bool,
    /// Per stream: sent and not yet echoed, oldest first.
    expected: HashMap<i64, VecDeque<Sent>>,
    /// Per stream: stream offset -> message, for everything sent in the current session.
    offsets: HashMap<i64, BTreeMap<u64, Sent>>,
    /// `Undeliverable` events: (stream, offset, data, reason).
    undeliverable: Vec<(i64, u64, Bytes, UndeliverableReason)>,
    peer_down: u32,
    peer_up: u32,
    size: fn(u32) -> usize,
    /// Outbound links that failed (only counted while the peer is expected to be away).
    link_failures: Option<u32>,
}

impl Client {
    fn new(peer: &str, count: u32, streams: i64, window: u32) -> Self {
        Self {
            peer: peer.to_owned(),
            count,
            streams,
            window,
            next: 0,
            received: 0,
            up: false,
            expected: HashMap::new(),
            offsets: HashMap::new(),
            undeliverable: Vec::new(),
            peer_down: 0,
            peer_up: 0,
            size: size_of,
            link_failures: None,
        }
    }

    fn done(&self) -> bool {
        self.received == self.count
    }

    fn bytes_sent(&self) -> u64 {
        (0..self.next).map(|s| (self.size)(s) as u64).sum()
    }

    fn step(&mut self, d: &mut NodeDriver) {
        while let Some(f) = d.poll_link_failure() {
            match self.link_failures.as_mut() {
                Some(n) => *n += 1,
                None => panic!("client link failed: {f:?}"),
            }
        }
        while let Some(event) = d.poll_event() {
            self.handle(d, event);
        }
        self.send_more(d);
    }

    /// Handles one event of the client's driver.
    fn handle(&mut self, d: &mut NodeDriver, event: NodeEvent) {
        match event {
            NodeEvent::Readable { peer, stream_id } => {
                while let Some(delivery) = d.read(&peer, stream_id) {
                    let Delivery::Message(m) = delivery else {
                        panic!("skipped data on stream {stream_id}");
                    };
                    let (seq, want) = self
                        .expected
                        .get_mut(&stream_id)
                        .and_then(VecDeque::pop_front)
                        .unwrap_or_else(|| panic!("an echo nobody sent on {stream_id}"));
                    assert!(
                        m.data == want,
                        "echo of message {seq} differs on stream {stream_id}"
                    );
                    self.received += 1;
                }
            }
            NodeEvent::Undeliverable {
                stream_id,
                offset,
                data,
                reason,
                ..
            } => self.undeliverable.push((stream_id, offset, data, reason)),
            NodeEvent::LinkRejected { reason, .. } => panic!("client link rejected: {reason}"),
            NodeEvent::PeerUp { .. } => {
                self.up = true;
                self.peer_up += 1;
            }
            NodeEvent::PeerDown { .. } => self.peer_down += 1,
            _ => {}
        }
    }

    fn send_more(&mut self, d: &mut NodeDriver) {
        while self.up && self.next < self.count && self.next - self.received < self.window {
            let seq = self.next;
            let data = payload(seq, (self.size)(seq));
            let stream = i64::from(seq) % self.streams;
            match d.send(&self.peer, stream, data.clone()) {
                Ok(offset) => {
                    self.expected
                        .entry(stream)
                        .or_default()
                        .push_back((seq, data.clone()));
                    self.offsets
                        .entry(stream)
                        .or_default()
                        .insert(offset, (seq, data));
                    self.next += 1;
                }
                Err(NodeError::Send(SendError::WouldBlock)) => break,
                Err(e) => panic!("send of message {seq}: {e}"),
            }
        }
    }

    fn assert_all_echoed(&self) {
        assert_eq!(self.received, self.count);
        assert!(
            self.expected.values().all(VecDeque::is_empty),
            "messages never echoed"
        );
        assert!(
            self.undeliverable.is_empty(),
            "{} messages reported undeliverable",
            self.undeliverable.len()
        );
    }
}

/// Runs `client` against an echo `server` until every message came back.
fn run_echo(client_d: &mut NodeDriver, server_d: &mut NodeDriver, client: &mut Client) -> Echo {
    let mut echo = Echo::default();
    let deadline = Deadline::new();
    while !client.done() {
        deadline.check(|| format!("echoes: {}/{}", client.received, client.count));
        server_d.run_once(TICK).unwrap();
        echo.step(server_d);
        client_d.run_once(TICK).unwrap();
        client.step(client_d);
    }
    echo
}

fn paths(d: &NodeDriver, peer: &str) -> usize {
    d.node().session(peer).map_or(0, |s| s.paths().count())
}

/// Pumps both drivers until `until` holds.
fn pump(
    a: &mut NodeDriver,
    b: &mut NodeDriver,
    what: &str,
    mut until: impl FnMut(&mut NodeDriver, &mut NodeDriver) -> bool,
) {
    let deadline = Deadline::new();
    while !until(a, b) {
        deadline.check(|| what.to_owned());
        a.run_once(TICK).unwrap();
        b.run_once(TICK).unwrap();
    }
}

// ----- 1. two links, one session -----

#[test]
fn tcp_and_udp_links_carry_one_session() {
    let mut server = big_window("echo");
    let tcp = server.listen(&url("tcp://127.0.0.1:0")).unwrap();
    let udp = server.listen(&url("udp://127.0.0.1:0")).unwrap();
    let mut client_d = big_window("client");
    client_d.connect(&tcp).unwrap();
    client_d.connect(&udp).unwrap();
    let mut client = Client::new("echo", 3000, 3, 300);
    // Both links join before any data, so both paths carry the stream.
    let mut echo = Echo::default();
    let deadline = Deadline::new();
    while paths(&client_d, "echo") < 2 || paths(&server, "client") < 2 {
        deadline.check(|| "both links to become paths of one session".into());
        server.run_once(TICK).unwrap();
        echo.step(&mut server);
        client_d.run_once(TICK).unwrap();
        assert!(client_d.poll_link_failure().is_none());
        while let Some(e) = client_d.poll_event() {
            match e {
                NodeEvent::PeerUp { .. } => {
                    client.up = true;
                    client.peer_up += 1;
                }
                NodeEvent::LinkRejected { reason, .. } => panic!("rejected: {reason}"),
                _ => {}
            }
        }
    }
    assert_eq!(client.peer_up, 1, "the second link opened a second session");
    let echo2 = run_echo(&mut client_d, &mut server, &mut client);
    client.assert_all_echoed();
    assert_eq!(echo.peer_up + echo2.peer_up, 1);
    assert_eq!(echo.undeliverable + echo2.undeliverable, 0);
    assert_eq!(paths(&client_d, "echo"), 2);
    let total = client.bytes_sent();
    assert!(total > 3_000_000 && total < 6_000_000, "{total} bytes");
    let session = client_d.node().session("echo").unwrap();
    for path in session.paths() {
        let stats = session.path_stats(path).unwrap();
        assert!(
            stats.packets_sent > 0,
            "path {path:?} never used: {stats:?}"
        );
    }
}

// ----- 2. a link killed mid-transfer -----

/// A TCP forwarder on loopback whose connection can be cut from the test.
struct TcpProxy {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl TcpProxy {
    fn new(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (Arc::clone(&conns), Arc::clone(&stop));
        let accept = std::thread::spawn(move || {
            let deadline = Instant::now() + TIMEOUT;
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok((down, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                down.set_nonblocking(false).unwrap();
                let up = TcpStream::connect(upstream).unwrap();
                let _ = down.set_nodelay(true);
                let _ = up.set_nodelay(true);
                c.lock()
                    .unwrap()
                    .extend([down.try_clone().unwrap(), up.try_clone().unwrap()]);
                for (mut from, mut to) in [
                    (down.try_clone().unwrap(), up.try_clone().unwrap()),
                    (up, down),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Self {
            addr,
            conns,
            accept: Some(accept),
            stop,
        }
    }

    /// Cuts every forwarded connection at once (both ends see it closed).
    fn kill(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.kill();
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn socket_addr(u: &Url) -> SocketAddr {
    let s = u.to_string();
    let hostport = s.split("://").nth(1).unwrap().trim_end_matches('/');
    hostport.parse().unwrap()
}

#[test]
fn tcp_link_killed_mid_transfer_loses_nothing() {
    let mut server = driver("echo");
    let tcp = server.listen(&url("tcp://127.0.0.1:0")).unwrap();
    let udp = server.listen(&url("udp://127.0.0.1:0")).unwrap();
    let proxy = TcpProxy::new(socket_addr(&tcp));
    let mut client_d = driver("client");
    client_d
        .connect(&url(&format!("tcp://{}", proxy.addr)))
        .unwrap();
    client_d.connect(&udp).unwrap();
    pump(&mut client_d, &mut server, "two paths", |c, s| {
        paths(c, "echo") == 2 && paths(s, "client") == 2
    });
    let mut client = Client::new("echo", 3000, 2, 300);
    client.size = |seq| size_of(seq).min(20_000);
    client.up = true;
    let mut echo = Echo::default();
    let mut killed = false;
    let mut closed = false;
    let deadline = Deadline::new();
    while !client.done() {
        deadline.check(|| {
            format!(
                "echoes after the TCP link was killed: {}/{} (killed {killed}, closed {closed})",
                client.received, client.count
            )
        });
        server.run_once(TICK).unwrap();
        echo.step(&mut server);
        client_d.run_once(TICK).unwrap();
        while let Some(e) = client_d.poll_event() {
            match e {
                NodeEvent::LinkClosed { .. } => closed = true,
                NodeEvent::PeerDown { .. } => panic!("the UDP link went down too"),
                other => client.handle(&mut client_d, other),
            }
        }
        client.send_more(&mut client_d);
        if !killed && client.received >= 1000 {
            let unacknowledged = client_d.node().session("echo").unwrap().send_buffered();
            assert!(unacknowledged > 0, "nothing in flight at the kill");
            proxy.kill();
            killed = true;
        }
    }
    assert!(killed);
    // The TCP path is gone; everything went on over UDP.
    pump(
        &mut client_d,
        &mut server,
        "the TCP path to be dropped",
        |c, _| paths(c, "echo") == 1,
    );
    client.assert_all_echoed();
    assert_eq!(echo.undeliverable, 0);
}

/// The receiver grants stream credit only once a quarter window was read since the last grant,
/// so the sender's limit may lag up to a quarter window behind `read offset + window`. `send`
/// accepts messages up to the whole window, and a message is delivered (and read) only when
/// complete: one larger than about 3/4 of the window, after smaller messages on its stream, used
/// to wait forever for credit; the reader now tops credit up whenever it runs dry.
#[test]
fn message_of_most_of_the_stream_window_is_delivered() {
    let mut server = driver("echo");
    let tcp = server.listen(&url("tcp://127.0.0.1:0")).unwrap();
    let mut client_d = driver("client");
    client_d.connect(&tcp).unwrap();
    // Message 1000 (on stream 1) is 1 MiB, the default stream receive window.
    let mut client = Client::new("echo", 1300, 3, 300);
    run_echo(&mut client_d, &mut server, &mut client);
    client.assert_all_echoed();
}

// ----- 3. a slow reader -----

#[test]
fn slow_reader_blocks_the_sender_with_bounded_memory() {
    slow_reader(true);
}

/// docs/stream.md: "Both sides assume the configured windows until the node handshake exchanges
/// them" — but the handshake carries no window, so a sender configured with larger windows
/// than its peer overruns the peer's credit and the peer drops the session.
#[test]
fn slow_reader_with_smaller_windows_than_the_sender() {
    slow_reader(false);
}

/// A sender fills a reader that pauses reading (for `PAUSE` after the first `WouldBlock`), then
/// reads everything; `same_windows`: the sender is configured with the reader's windows.
fn slow_reader(same_windows: bool) {
    const MSG: usize = 8 * 1024;
    const COUNT: u32 = 512; // 4 MiB
    const PAUSE: Duration = Duration::from_millis(300);
    // Slack over the session window for one package in transit when the limit is checked.
    const FRAME: usize = 64 * 1024;
    let mut sink_config = NodeConfig::new("sink");
    sink_config.session.stream_receive_window = 64 * 1024;
    sink_config.session.session_receive_window = 96 * 1024;
    let window = sink_config.session.session_receive_window as usize;
    let mut sink = driver_with(sink_config);
    let tcp = sink.listen(&url("tcp://127.0.0.1:0")).unwrap();
    let mut sender_config = NodeConfig::new("sender");
    if same_windows {
        sender_config.session.stream_receive_window = 64 * 1024;
        sender_config.session.session_receive_window = 96 * 1024;
    }
    sender_config.session.stream_send_buffer = 256 * 1024;
    sender_config.session.session_send_buffer = 256 * 1024;
    let mut sender = driver_with(sender_config);
    sender.connect(&tcp).unwrap();
    pump(&mut sender, &mut sink, "the session", |a, b| {
        paths(a, "sink") == 1 && paths(b, "sender") == 1
    });

    let mut next = 0u32;
    let mut received = [0u32; 2];
    let mut blocked_at: Option<Instant> = None;
    let mut max_buffered = 0;
    let deadline = Deadline::new();
    while received.iter().sum::<u32>() < COUNT {
        deadline.check(|| format!("slow reader: sent {next}, received {received:?}"));
        while next < COUNT {
            let stream = i64::from(next % 2);
            match sender.send("sink", stream, payload(next, MSG)) {
                Ok(_) => next += 1,
                Err(NodeError::Send(SendError::WouldBlock)) => {
                    blocked_at.get_or_insert_with(Instant::now);
                    break;
                }
                Err(e) => panic!("send: {e}"),
            }
        }
        sender.run_once(TICK).unwrap();
        sink.run_once(TICK).unwrap();
        let buffered = sink
            .node()
            .session("sender")
            .map_or(0, |s| s.receive_buffered());
        max_buffered = max_buffered.max(buffered);
        assert!(
            buffered <= window + FRAME,
            "the paused reader holds {buffered} bytes, window {window}"
        );
        let reading = blocked_at.is_some_and(|t| t.elapsed() >= PAUSE);
        while let Some(e) = sink.poll_event() {
            if let NodeEvent::PeerDown { .. } | NodeEvent::LinkClosed { .. } = e {
                panic!("the paused reader lost its link: {e:?}");
            }
        }
        if reading {
            for stream in 0..2 {
                while let Some(d) = sink.read("sender", stream) {
                    let Delivery::Message(m) = d else {
                        panic!("skipped data on stream {stream}");
                    };
                    let seq = received[stream as usize] * 2 + stream as u32;
                    assert!(m.data == payload(seq, MSG), "message {seq} differs");
                    received[stream as usize] += 1;
                }
            }
        }
        while sender.poll_event().is_some() {}
    }
    assert!(blocked_at.is_some(), "the sender never saw WouldBlock");
    assert!(
        max_buffered > window / 2,
        "the reader never filled its window ({max_buffered} bytes)"
    );
}

// ----- 4. a peer restarted mid-stream -----

#[test]
fn restarted_peer_on_a_new_port_reports_the_loss_and_a_new_session_works() {
    restarted_peer(false);
}

/// The restarted peer listens on the same URL; the client reconnects by itself (the URL is in
/// its `NodeConfig::connect`).
#[test]
fn restarted_peer_on_the_same_url_is_reconnected_and_reports_the_loss() {
    restarted_peer(true);
}

fn restarted_peer(same_url: bool) {
    let mut server = driver("echo");
    let tcp = server.listen(&url("tcp://127.0.0.1:0")).unwrap();
    let mut client_config = NodeConfig::new("client");
    if same_url {
        client_config.connect = vec![tcp.to_string()];
    }
    let mut client_d = driver_with(client_config);
    if !same_url {
        client_d.connect(&tcp).unwrap();
    }
    let mut client = Client::new("echo", 100_000, 2, 200);
    client.size = |seq| size_of(seq).min(20_000);
    let mut echo = Echo::default();
    let deadline = Deadline::new();
    while client.received < 500 {
        deadline.check(|| format!("first session echoes: {}/500", client.received));
        server.run_once(TICK).unwrap();
        echo.step(&mut server);
        client_d.run_once(TICK).unwrap();
        client.step(&mut client_d);
    }
    let old_incarnation = client_d.node().peer_incarnation("echo").unwrap();
    // Reconnects to the dead peer may be refused until the new one listens.
    client.link_failures = Some(0);
    // The echo node dies with messages in flight both ways.
    drop(server);
    while client.peer_down == 0 {
        deadline.check(|| "the client to see its peer down".into());
        client_d.run_once(TICK).unwrap();
        client.step(&mut client_d);
    }
    // Messages sent while the peer is down can only be acknowledged by the old incarnation,
    // which is gone: they must be reported.
    client.window = u32::MAX;
    client.count = client.next + 50;
    let after_kill = client.next..client.count;
    client.send_more(&mut client_d);
    assert_eq!(
        client.next, client.count,
        "sends to a down peer were refused"
    );

    if same_url {
        // The client's reconnects are refused while nobody listens.
        while client.link_failures < Some(1) {
            deadline.check(|| "a refused reconnect".into());
            client_d.run_once(TICK).unwrap();
            client.step(&mut client_d);
        }
    }
    let mut server = driver("echo");
    if same_url {
        assert_eq!(server.listen(&tcp).unwrap(), tcp);
    } else {
        let tcp = server.listen(&url("tcp://127.0.0.1:0")).unwrap();
        client_d.connect(&tcp).unwrap();
    }
    let mut echo = Echo::default();
    while client.peer_up < 2 {
        deadline.check(|| "the restarted peer to come up".into());
        server.run_once(TICK).unwrap();
        echo.step(&mut server);
        client_d.run_once(TICK).unwrap();
        if let Some(f) = client_d.poll_link_failure() {
            assert!(same_url, "connect to the restarted peer failed: {f:?}");
        }
        while let Some(e) = client_d.poll_event() {
            if let NodeEvent::Readable { .. } = e {
                panic!("data from the new session before any was sent");
            }
            client.handle(&mut client_d, e);
        }
    }
    assert_ne!(
        client_d.node().peer_incarnation("echo"),
        Some(old_incarnation)
    );

    // The loss is reported: every message sent after the kill, and per stream a whole suffix of
    // what the old session sent, each with its payload.
    let lost = std::mem::take(&mut client.undeliverable);
    assert!(!lost.is_empty(), "the restart lost nothing it reported");
    let mut lost_seqs = std::collections::BTreeSet::new();
    for (stream, offset, data, reason) in &lost {
        assert_eq!(*reason, UndeliverableReason::PeerRestarted);
        let (seq, sent) = client.offsets[stream]
            .get(offset)
            .unwrap_or_else(|| panic!("undeliverable at {offset} on {stream}: never sent"));
        assert!(
            data == sent,
            "undeliverable message {seq} has another payload"
        );
        assert!(lost_seqs.insert(*seq), "message {seq} reported twice");
    }
    for seq in after_kill {
        assert!(lost_seqs.contains(&seq), "message {seq} lost silently");
    }
    for (stream, sent) in &client.offsets {
        let first = lost
            .iter()
            .filter(|l| l.0 == *stream)
            .map(|l| l.1)
            .min()
            .unwrap();
        for (offset, (seq, _)) in sent.range(first..) {
            assert!(
                lost_seqs.contains(seq),
                "message {seq} at {offset} on {stream} lost silently"
            );
        }
    }

    // A new session carries verified traffic.
    let mut fresh = Client::new("echo", 1000, 2, 200);
    fresh.size = |seq| size_of(seq).min(20_000);
    fresh.up = true;
    let echo2 = run_echo(&mut client_d, &mut server, &mut fresh);
    fresh.assert_all_echoed();
    assert_eq!(echo.undeliverable + echo2.undeliverable, 0);
}

// ----- 6. garbage on a listening socket -----

#[test]
fn garbage_on_a_listening_socket_closes_that_link_only() {
    let mut server = driver("echo");
    let tcp = server.listen(&url("tcp://127.0.0.1:0")).unwrap();
    let mut client_d = driver("client");
    client_d.connect(&tcp).unwrap();
    let mut client = Client::new("echo", 2000, 2, 200);
    client.size = |seq| size_of(seq).min(20_000);
    let mut echo = Echo::default();
    let mut raw: Option<TcpStream> = None;
    let mut raw_closed = false;
    let deadline = Deadline::new();
    while !client.done() || !raw_closed || echo.rejected.is_empty() {
        deadline.check(|| {
            format!(
                "echoes {}/{}, garbage link closed {raw_closed}, rejected {:?}",
                client.received, client.count, echo.rejected
            )
        });
        server.run_once(TICK).unwrap();
        echo.step(&mut server);
        client_d.run_once(TICK).unwrap();
        client.step(&mut client_d);
        if raw.is_none() && client.received >= 200 {
            let mut s = TcpStream::connect(socket_addr(&tcp)).unwrap();
            let mut garbage = b"GET / HTTP/1.1\r\nHost: atbus\r\n\r\n".to_vec();
            garbage.extend_from_slice(&payload(7, 4096));
            s.write_all(&garbage).unwrap();
            s.set_nonblocking(true).unwrap();
            raw = Some(s);
        }
        if let Some(s) = raw.as_mut().filter(|_| !raw_closed) {
            let mut buf = [0u8; 4096];
            match s.read(&mut buf) {
                Ok(0) => raw_closed = true,
                // The node may answer with a close package before closing.
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => raw_closed = true,
            }
        }
    }
    client.assert_all_echoed();
    assert_eq!(client.peer_down, 0, "the real peer lost its link");
    assert_eq!(paths(&client_d, "echo"), 1);
    assert_eq!(echo.peer_up, 1);
    assert_eq!(echo.rejected.len(), 1, "{:?}", echo.rejected);
    assert!(
        echo.rejected[0].contains("undecodable"),
        "unclear rejection: {}",
        echo.rejected[0]
    );
}

// ----- 7. UDP through a lossy, duplicating, reordering proxy -----

/// Forwards datagrams between one client and a server on loopback, dropping, duplicating and
/// delaying (reordering) a share of them with a seeded RNG. Stops when dropped or after
/// `TIMEOUT`.
struct LossyUdpProxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<[u64; 4]>>,
}

impl LossyUdpProxy {
    fn new(server: SocketAddr, seed: u64) -> Self {
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = front.local_addr().unwrap();
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (i, (rx, tx)) in [
            (front.try_clone().unwrap(), back.try_clone().unwrap()),
            (back, front),
        ]
        .into_iter()
        .enumerate()
        {
            let (client, stop) = (Arc::clone(&client), Arc::clone(&stop));
            let to_server = i == 0;
            threads.push(std::thread::spawn(move || {
                rx.set_read_timeout(Some(Duration::from_millis(2))).unwrap();
                let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) + i as u64 + 1;
                let mut rand = move || {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x % 1000
                };
                // forwarded, dropped, duplicated, delayed
                let mut stats = [0u64; 4];
                let mut held: Vec<(Instant, Vec<u8>)> = Vec::new();
                let mut buf = vec![0u8; 65536];
                let end = Instant::now() + TIMEOUT;
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    let dest = |client: &Mutex<Option<SocketAddr>>| {
                        if to_server {
                            Some(server)
                        } else {
                            *client.lock().unwrap()
                        }
                    };
                    let now = Instant::now();
                    let (due, later): (Vec<_>, Vec<_>) = held.drain(..).partition(|h| h.0 <= now);
                    held = later;
                    for (_, d) in due {
                        if let Some(to) = dest(&client) {
                            let _ = tx.send_to(&d, to);
                        }
                    }
                    let Ok((n, from)) = rx.recv_from(&mut buf) else {
                        continue;
                    };
                    if to_server {
                        *client.lock().unwrap() = Some(from);
                    }
                    let Some(to) = dest(&client) else { continue };
                    let r = rand();
                    if r < 50 {
                        stats[1] += 1;
                    } else if r < 70 {
                        stats[2] += 1;
                        let _ = tx.send_to(&buf[..n], to);
                        let _ = tx.send_to(&buf[..n], to);
                    } else if r < 120 {
                        stats[3] += 1;
                        let delay = Duration::from_millis(1 + rand() % 20);
                        held.push((now + delay, buf[..n].to_vec()));
                    } else {
                        stats[0] += 1;
                        let _ = tx.send_to(&buf[..n], to);
                    }
                }
                stats
            }));
        }
        Self {
            addr,
            stop,
            threads,
        }
    }

    /// Stops the proxy; returns forwarded, dropped, duplicated and delayed counts.
    fn finish(mut self) -> [u64; 4] {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = [0u64; 4];
        for t in self.threads.drain(..) {
            for (sum, n) in total.iter_mut().zip(t.join().unwrap()) {
                *sum += n;
            }
        }
        total
    }
}

impl Drop for LossyUdpProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn udp_through_a_lossy_reordering_proxy_is_exactly_once_in_order() {
    let mut server = driver("echo");
    let udp = server.listen(&url("udp://127.0.0.1:0")).unwrap();
    let proxy = LossyUdpProxy::new(socket_addr(&udp), 42);
    let mut client_d = driver("client");
    client_d
        .connect(&url(&format!("udp://{}", proxy.addr)))
        .unwrap();
    let mut client = Client::new("echo", 3000, 2, 200);
    client.size = |seq| [1, 17, 300, 1200, 4000, 100][seq as usize % 6];
    let echo = run_echo(&mut client_d, &mut server, &mut client);
    client.assert_all_echoed();
    assert_eq!(echo.undeliverable, 0);
    assert_eq!(echo.peer_up, 1);
    let [forwarded, dropped, duplicated, delayed] = proxy.finish();
    assert!(
        forwarded > 0 && dropped > 0 && duplicated > 0 && delayed > 0,
        "the proxy did not disturb the traffic: forwarded {forwarded}, dropped {dropped}, \
         duplicated {duplicated}, delayed {delayed}"
    );
}
