//! Driving the sans-IO `atbus_node::Node` with a loop of your own, on a `Transport`.
//!
//! `NodeDriver` is the ready-made version of this loop (with overflow buffering when a link
//! answers `Blocked`, many links and reconnects); this example shows the shape for those who
//! fit a node into an event loop they already have. It starts an echo node on a thread (the
//! ready-made driver), connects to it from its own loop, sends one message and prints the echo.
//!
//! Run: `cargo run -p atbus-transport-mio --example custom_loop`

use std::error::Error;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use atbus_node::{Delivery, Direction, LinkKind, Node, NodeConfig, NodeEvent, OutgoingMessage};
use atbus_transport_mio::{NodeDriver, Transport, TransportConfig, TransportEvent};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// An echo node on its own thread; returns the URL it listens on.
fn start_echo() -> Result<atbus_transport_mio::Url, Box<dyn Error>> {
    let mut echo = NodeDriver::new(NodeConfig::new("echo"), TransportConfig::default())?;
    let url = echo.listen(&"tcp://127.0.0.1:0".parse()?)?;
    std::thread::spawn(move || {
        while echo.run_once(Some(Duration::from_millis(100))).is_ok() {
            while let Some(event) = echo.poll_event() {
                if let NodeEvent::Readable { peer, stream_id } = event {
                    while let Some(Delivery::Message(m)) = echo.read(&peer, stream_id) {
                        let _ = echo.send(&peer, stream_id, m.data);
                    }
                }
            }
        }
    });
    Ok(url)
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn main() -> Result<(), Box<dyn Error>> {
    let url = start_echo()?;
    let (now, rng) = (Instant::now(), ChaCha20Rng::from_os_rng());
    let mut node = Node::new(NodeConfig::new("client"), now, rng)?;
    let mut t = Transport::new(TransportConfig::default())?;
    // One link: the transport's id and the node's id of it.
    let (tlink, nlink) = (t.connect(&url)?, node.new_link_id());
    let (mut events, mut buf) = (Vec::new(), Vec::new());
    let deadline = now + Duration::from_secs(10);
    // The loop: events in, timers, application events, packages out, actions, wait.
    while Instant::now() < deadline {
        let now = Instant::now();
        for event in events.drain(..) {
            match event {
                TransportEvent::LinkUp { link, mtu, .. } if link == tlink => {
                    node.handle_link_up(now, nlink, LinkKind::ByteStream, mtu, Direction::Outbound)
                }
                TransportEvent::Bytes { data, .. } => node.handle_link_bytes(now, nlink, &data),
                TransportEvent::LinkClosed { .. } => node.handle_link_closed(now, nlink),
                _ => {}
            }
        }
        if node.poll_timeout().is_some_and(|at| at <= now) {
            node.handle_timeout(now, unix_ms());
        }
        while let Some(event) = node.poll_event() {
            match event {
                NodeEvent::PeerUp { peer, .. } => {
                    node.send(&peer, 1, OutgoingMessage::data(&b"hello over tcp"[..]))?;
                }
                NodeEvent::Readable { peer, stream_id } => {
                    if let Some(Delivery::Message(m)) = node.read(&peer, stream_id) {
                        println!("{peer} echoed {:?}", String::from_utf8_lossy(&m.data));
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
        // (A full driver keeps what a `Blocked` send refused; NodeDriver does.)
        while let Some((_, n)) = node.poll_transmit(now, &mut buf) {
            t.send(tlink, &buf[..n])?;
        }
        while let Some(action) = node.poll_action() {
            if let atbus_node::Action::Close { .. } = action {
                t.close(tlink)?;
            }
        }
        let wait = node
            .poll_timeout()
            .map(|at| at.saturating_duration_since(Instant::now()));
        t.poll_events(wait.or(Some(Duration::from_millis(100))), &mut events)?;
    }
    Err("no echo within 10 s".into())
}
