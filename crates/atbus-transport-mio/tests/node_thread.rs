//! `NodeDriver::spawn`: nodes on their own threads, used from application threads through
//! `NodeHandle`s over real loopback sockets. Several threads send at once, every echo is checked
//! byte for byte and in order, a full output queue pushes back instead of growing, and every
//! call fails cleanly once the loop is gone.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use atbus_node::{Delivery, NodeConfig, NodeEvent};
use atbus_transport_mio::{
    HandleError, NodeDriver, NodeHandle, NodeOutput, NodeThreadConfig, TransportConfig, Url,
};
use bytes::Bytes;

const TIMEOUT: Duration = Duration::from_secs(30);

fn payload(stream: i64, seq: u32, size: usize) -> Bytes {
    let mut x = (u64::from(seq) << 8 | stream as u64) * 0x9e37_79b9 + 1;
    Bytes::from(
        (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect::<Vec<u8>>(),
    )
}

/// An echo node on its own thread, echoing from a second application thread through a handle
/// (the test stops it with `request_stop` on the handle it gets back).
fn echo_node(listen: &str) -> (NodeHandle, Url, std::thread::JoinHandle<u64>) {
    let mut driver =
        NodeDriver::new(NodeConfig::new("echo"), TransportConfig::default()).expect("driver");
    let bound = driver
        .listen(&listen.parse().expect("url"))
        .expect("listen");
    let node = driver.spawn(NodeThreadConfig::default()).expect("spawn");
    let control = node.handle();
    let echo = std::thread::spawn(move || {
        let handle = node.handle();
        let mut echoed = 0u64;
        // Ends when the loop is gone (stopped through `control`).
        while let Ok(output) = node.recv() {
            if let NodeOutput::Delivered {
                peer,
                stream_id,
                delivery: Delivery::Message(m),
            } = output
            {
                if handle.send(&peer, stream_id, m.data).is_err() {
                    break;
                }
                echoed += 1;
            }
        }
        let _ = node.stop();
        echoed
    });
    (control, bound, echo)
}

/// Stops an echo node and returns how many messages it echoed.
fn stop_echo(control: NodeHandle, echo: std::thread::JoinHandle<u64>) -> u64 {
    control.request_stop().expect("stop request");
    echo.join().expect("echo thread")
}

/// Sends `per_thread` messages on each of `threads` streams from as many threads, and checks
/// every echo arrives once, in order, byte for byte.
fn exchange(url: &Url, threads: i64, per_thread: u32, size: usize) {
    let mut driver =
        NodeDriver::new(NodeConfig::new("client"), TransportConfig::default()).expect("driver");
    driver.connect(url).expect("connect");
    let client = driver
        .spawn(NodeThreadConfig {
            command_capacity: 64,
            output_capacity: 64,
            ..NodeThreadConfig::default()
        })
        .expect("spawn");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match client.recv_timeout(TIMEOUT).expect("peer up") {
            NodeOutput::Event(NodeEvent::PeerUp { peer, .. }) => {
                assert_eq!(peer, "echo");
                break;
            }
            NodeOutput::LinkFailed(f) => panic!("connect failed: {f:?}"),
            _ => {}
        }
    }
    let senders: Vec<_> = (1..=threads)
        .map(|stream| {
            let handle = client.handle();
            std::thread::spawn(move || {
                for seq in 0..per_thread {
                    handle
                        .send("echo", stream, payload(stream, seq, size))
                        .expect("send");
                }
            })
        })
        .collect();
    let mut next: BTreeMap<i64, u32> = (1..=threads).map(|s| (s, 0)).collect();
    let total = u64::from(per_thread) * threads as u64;
    let mut got = 0u64;
    while got < total {
        assert!(Instant::now() < deadline, "timed out with {got} of {total}");
        match client.recv_timeout(TIMEOUT).expect("echo") {
            NodeOutput::Delivered {
                peer,
                stream_id,
                delivery,
            } => {
                assert_eq!(peer, "echo");
                let Delivery::Message(m) = delivery else {
                    panic!("skipped data on stream {stream_id}");
                };
                let seq = next.get_mut(&stream_id).expect("known stream");
                assert_eq!(m.data, payload(stream_id, *seq, size), "stream {stream_id}");
                *seq += 1;
                got += 1;
            }
            NodeOutput::SendFailed { error, .. } => panic!("send failed: {error}"),
            NodeOutput::Event(NodeEvent::Undeliverable { .. }) => panic!("undeliverable"),
            _ => {}
        }
    }
    for s in senders {
        s.join().expect("sender thread");
    }
    assert!(next.values().all(|&n| n == per_thread), "{next:?}");
    // The loop answers calls with the driver's own state.
    let links = client
        .handle()
        .call(|d| d.links().iter().filter(|l| l.peer.is_some()).count())
        .expect("call");
    assert_eq!(links, 1);
    client.stop().expect("clean stop");
}

#[test]
fn threads_send_over_tcp_and_receive_verified_echoes() {
    let (control, url, echo) = echo_node("tcp://127.0.0.1:0");
    exchange(&url, 4, 500, 200);
    assert_eq!(stop_echo(control, echo), 2000);
}

#[test]
fn threads_send_over_unix_and_mem() {
    let dir = std::env::temp_dir().join(format!("atbus-node-thread-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let unix = format!("unix://{}", dir.join("echo.sock").display());
    let (control, url, echo) = echo_node(&unix);
    exchange(&url, 3, 300, 3000);
    assert_eq!(stop_echo(control, echo), 900);
    let (control, url, echo) = echo_node("mem://node-thread-test");
    exchange(&url, 2, 100, 100_000);
    assert_eq!(stop_echo(control, echo), 200);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_reader_that_stops_pushes_back_to_the_sender() {
    const SIZE: usize = 16 * 1024;
    const CAP: u32 = 4000; // 64 MiB: far beyond every window and queue on the way
    let (control, url, echo) = echo_node("tcp://127.0.0.1:0");
    let mut driver =
        NodeDriver::new(NodeConfig::new("client"), TransportConfig::default()).expect("driver");
    driver.connect(&url).expect("connect");
    let client = driver
        .spawn(NodeThreadConfig {
            command_capacity: 8,
            output_capacity: 8,
            ..NodeThreadConfig::default()
        })
        .expect("spawn");
    loop {
        if let NodeOutput::Event(NodeEvent::PeerUp { .. }) =
            client.recv_timeout(TIMEOUT).expect("peer up")
        {
            break;
        }
    }
    // Nobody reads the client's output: echoes pile up until every queue on the way is full,
    // and then try_send keeps answering Full.
    let handle = client.handle();
    let mut sent = 0u32;
    let mut full_since: Option<Instant> = None;
    let deadline = Instant::now() + TIMEOUT;
    while full_since.is_none_or(|at| at.elapsed() < Duration::from_millis(300)) {
        assert!(Instant::now() < deadline, "never pushed back");
        match handle.try_send("echo", 1, payload(1, sent, SIZE)) {
            Ok(()) => {
                sent += 1;
                full_since = None;
                assert!(sent < CAP, "{sent} messages accepted without backpressure");
            }
            Err(HandleError::Full) => {
                full_since.get_or_insert_with(Instant::now);
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(sent > 8, "only {sent} accepted before the queues filled");
    // Reading again drains everything, in order and intact.
    for seq in 0..sent {
        loop {
            match client.recv_timeout(TIMEOUT).expect("echo") {
                NodeOutput::Delivered {
                    delivery: Delivery::Message(m),
                    ..
                } => {
                    assert_eq!(m.data, payload(1, seq, SIZE), "message {seq}");
                    break;
                }
                NodeOutput::Delivered { .. } => panic!("skipped data"),
                _ => {}
            }
        }
    }
    client.stop().expect("clean stop");
    assert_eq!(stop_echo(control, echo), u64::from(sent));
}

#[test]
fn calls_fail_once_the_loop_is_gone() {
    let driver =
        NodeDriver::new(NodeConfig::new("lonely"), TransportConfig::default()).expect("driver");
    let node = driver.spawn(NodeThreadConfig::default()).expect("spawn");
    let handle = node.handle();
    let bound = handle
        .listen(&"tcp://127.0.0.1:0".parse().expect("url"))
        .expect("listen through the handle");
    assert!(bound.to_string().starts_with("tcp://127.0.0.1:"));
    assert_ne!(bound.to_string(), "tcp://127.0.0.1:0");
    // A send to nobody is refused by the node and reported, not lost silently.
    handle.send("nobody", 1, "hi").expect("queued");
    match node.recv_timeout(TIMEOUT).expect("output") {
        NodeOutput::SendFailed { peer, error, .. } => {
            assert_eq!(peer, "nobody");
            assert!(error.to_string().contains("unknown peer"), "{error}");
        }
        other => panic!("unexpected {other:?}"),
    }
    node.stop().expect("clean stop");
    assert!(matches!(handle.send("x", 1, "y"), Err(HandleError::Gone)));
    assert!(matches!(
        handle.try_send("x", 1, "y"),
        Err(HandleError::Gone)
    ));
    assert!(matches!(handle.call(|_| ()), Err(HandleError::Gone)));
}
