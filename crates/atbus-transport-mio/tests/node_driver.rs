//! Two `NodeDriver`s in one process, over `mem://` and `tcp://` loopback: a client sends
//! messages of mixed sizes on several streams, an echo node returns them, and every echo is
//! checked byte for byte, exactly once, in order per stream.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use atbus_node::{AccessToken, Delivery, NodeConfig, NodeError, NodeEvent};
use atbus_stream::SendError;
use atbus_transport_mio::{NodeDriver, TransportConfig, Url};
use bytes::Bytes;

const TIMEOUT: Duration = Duration::from_secs(30);

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

/// Echo side: returns every message to its sender on the same stream, holding what the
/// session refuses (`WouldBlock`) until it has room.
#[derive(Default)]
struct Echo {
    pending: VecDeque<(String, i64, Bytes)>,
}

impl Echo {
    fn step(&mut self, d: &mut NodeDriver) {
        let mut undeliverable = 0;
        self.step_counting(d, &mut undeliverable);
        assert_eq!(
            undeliverable, 0,
            "echo node reported undeliverable messages"
        );
    }

    /// Like `step`, counting `Undeliverable` events instead of failing on them.
    fn step_counting(&mut self, d: &mut NodeDriver, undeliverable: &mut u32) {
        while let Some(event) = d.poll_event() {
            match event {
                NodeEvent::Readable { peer, stream_id } => {
                    while let Some(Delivery::Message(m)) = d.read(&peer, stream_id) {
                        self.pending.push_back((peer.clone(), stream_id, m.data));
                    }
                }
                NodeEvent::Undeliverable { .. } => *undeliverable += 1,
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

fn config(name: &str, token: Option<&str>) -> NodeConfig {
    let c = NodeConfig::new(name);
    match token {
        Some(secret) => c.with_tokens(vec![AccessToken::new("default", secret.as_bytes())]),
        None => c,
    }
}

/// Sends `count` messages from a client to an echo node listening on `listen`; returns the
/// number of verified echoes.
fn exchange(listen: &str, count: u32, streams: i64) -> u32 {
    exchange_with(listen, count, streams, TransportConfig::default()).0
}

/// Returns the echoes verified and the sends both drivers saw `Blocked`.
fn exchange_with(listen: &str, count: u32, streams: i64, transport: TransportConfig) -> (u32, u64) {
    let mut server = NodeDriver::new(config("echo", None), transport.clone()).unwrap();
    let bound = server.listen(&listen.parse::<Url>().unwrap()).unwrap();
    let mut client = NodeDriver::new(config("client", None), transport).unwrap();
    client.connect(&bound).unwrap();
    let mut echo = Echo::default();
    let sizes = [1usize, 17, 300, 1500, 9000, 70_000];
    let mut next = 0u32;
    let mut expected: HashMap<i64, VecDeque<Bytes>> = HashMap::new();
    let mut received = 0u32;
    let mut up = false;
    let deadline = Instant::now() + TIMEOUT;
    while received < count {
        assert!(Instant::now() < deadline, "timed out: {received}/{count}");
        server.run_once(Some(Duration::from_millis(1))).unwrap();
        echo.step(&mut server);
        client.run_once(Some(Duration::from_millis(1))).unwrap();
        assert!(client.poll_link_failure().is_none());
        while let Some(event) = client.poll_event() {
            match event {
                NodeEvent::PeerUp { peer, .. } => {
                    assert_eq!(peer, "echo");
                    up = true;
                }
                NodeEvent::Readable { peer, stream_id } => {
                    while let Some(delivery) = client.read(&peer, stream_id) {
                        let Delivery::Message(m) = delivery else {
                            panic!("skipped data on stream {stream_id}");
                        };
                        let want = expected
                            .get_mut(&stream_id)
                            .and_then(VecDeque::pop_front)
                            .expect("an echo nobody sent");
                        assert_eq!(m.data, want, "echo differs on stream {stream_id}");
                        received += 1;
                    }
                }
                NodeEvent::LinkRejected { reason, .. } => panic!("rejected: {reason}"),
                _ => {}
            }
        }
        // Keep at most 200 messages in flight.
        while up && next < count && next - received < 200 {
            let data = payload(next, sizes[next as usize % sizes.len()]);
            let stream = i64::from(next) % streams;
            match client.send("echo", stream, data.clone()) {
                Ok(_) => {
                    expected.entry(stream).or_default().push_back(data);
                    next += 1;
                }
                Err(NodeError::Send(SendError::WouldBlock)) => break,
                Err(e) => panic!("send: {e}"),
            }
        }
    }
    assert!(expected.values().all(VecDeque::is_empty));
    (received, server.blocked_sends() + client.blocked_sends())
}

#[test]
fn mem_echo_is_verified() {
    assert_eq!(exchange("mem://node-driver-test-echo", 2000, 3), 2000);
}

#[test]
fn tcp_echo_is_verified() {
    assert_eq!(exchange("tcp://127.0.0.1:0", 2000, 3), 2000);
}

/// A tiny write queue makes the transport answer `Blocked` (always in process; on loopback TCP
/// only when the kernel buffers fill): the driver's overflow keeps every byte.
#[test]
fn blocked_sends_lose_nothing() {
    let small = TransportConfig {
        write_queue_limit: 16 * 1024,
        ..TransportConfig::default()
    };
    for url in ["tcp://127.0.0.1:0", "mem://node-driver-test-blocked"] {
        let (received, blocked) = exchange_with(url, 1000, 2, small.clone());
        assert_eq!(received, 1000, "{url}");
        if url.starts_with("mem:") {
            assert!(blocked > 0, "{url}: the transport never blocked");
        }
    }
}

#[test]
fn udp_echo_is_verified() {
    assert_eq!(exchange("udp://127.0.0.1:0", 500, 2), 500);
}

#[test]
fn wrong_token_is_rejected_on_both_sides() {
    let mut server = NodeDriver::new(
        config("echo", Some("server-secret-0123456789")),
        TransportConfig::default(),
    )
    .unwrap();
    let bound = server
        .listen(&"tcp://127.0.0.1:0".parse::<Url>().unwrap())
        .unwrap();
    let mut client = NodeDriver::new(
        config("client", Some("client-secret-0123456789")),
        TransportConfig::default(),
    )
    .unwrap();
    client.connect(&bound).unwrap();
    let (mut client_saw, mut server_saw) = (None, None);
    let deadline = Instant::now() + TIMEOUT;
    while client_saw.is_none() || server_saw.is_none() {
        assert!(Instant::now() < deadline, "timed out");
        server.run_once(Some(Duration::from_millis(1))).unwrap();
        client.run_once(Some(Duration::from_millis(1))).unwrap();
        while let Some(e) = server.poll_event() {
            assert!(!matches!(e, NodeEvent::PeerUp { .. }));
            if let NodeEvent::LinkRejected { reason, .. } = e {
                server_saw = Some(reason);
            }
        }
        while let Some(e) = client.poll_event() {
            assert!(!matches!(e, NodeEvent::PeerUp { .. }));
            if let NodeEvent::LinkRejected { reason, .. } = e {
                client_saw = Some(reason);
            }
        }
    }
    let client_saw = client_saw.unwrap();
    assert!(
        client_saw.code.as_str_name().contains("AUTH"),
        "{client_saw}"
    );
}

/// The echo node runs on its own thread; after the exchange the client's `shutdown` waits for
/// the last acknowledgements (well before its deadline), and acknowledges every echo before
/// its link closes.
#[test]
fn shutdown_waits_for_acknowledgements() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let mut server = NodeDriver::new(config("echo", None), TransportConfig::default()).unwrap();
    let bound = server
        .listen(&"tcp://127.0.0.1:0".parse::<Url>().unwrap())
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let echo_thread = std::thread::spawn(move || {
        let mut echo = Echo::default();
        let mut undeliverable = 0;
        while !flag.load(Ordering::Relaxed) {
            server.run_once(Some(Duration::from_millis(5))).unwrap();
            echo.step_counting(&mut server, &mut undeliverable);
        }
        (server, undeliverable)
    });
    let mut client = NodeDriver::new(config("client", None), TransportConfig::default()).unwrap();
    client.connect(&bound).unwrap();
    let (mut sent, mut received) = (0u32, 0u32);
    let mut up = false;
    let deadline = Instant::now() + TIMEOUT;
    while received < 300 {
        assert!(Instant::now() < deadline, "timed out");
        if up && sent < 300 {
            client.send("echo", 0, payload(sent, 100)).unwrap();
            sent += 1;
        }
        client.run_once(Some(Duration::from_millis(5))).unwrap();
        while let Some(event) = client.poll_event() {
            match event {
                NodeEvent::PeerUp { .. } => up = true,
                NodeEvent::Readable { peer, stream_id } => {
                    while let Some(Delivery::Message(m)) = client.read(&peer, stream_id) {
                        assert_eq!(m.data, payload(received, 100));
                        received += 1;
                    }
                }
                _ => {}
            }
        }
    }
    let started = Instant::now();
    client.shutdown(Duration::from_secs(5)).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown waited {:?}",
        started.elapsed()
    );
    assert_eq!(
        client.node().session("echo").map(|s| s.send_buffered()),
        Some(0)
    );
    // Give the echo node time to see the close.
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let (server, undeliverable) = echo_thread.join().unwrap();
    assert_eq!(undeliverable, 0, "echo node lost messages");
    // Every echo was acknowledged before the client closed its link.
    assert_eq!(
        server.node().session("client").map(|s| s.send_buffered()),
        Some(0)
    );
}
