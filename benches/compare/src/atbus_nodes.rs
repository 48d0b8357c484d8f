//! atbus `NodeDriver` echo pairs over the links the shared loopback pair does not cover: UDP,
//! `mem://`, two mixed paths (TCP and Unix in one session) and one relay hop (client → relay
//! service → echo, all on loopback TCP).
//!
//! The echo loop and the client's exchanges (every echo checked byte for byte) are the ones of
//! `crates/atbus-transport-mio/benches/common/loopback.rs`, which `crate::loopback` includes.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use atbus_node::{NodeConfig, NodeEvent};
use atbus_relay::RelayConfig;
use atbus_relay::service::RelayDriver;
use atbus_transport_mio::{NodeDriver, TransportConfig, Url};
use bytes::Bytes;

use crate::loopback::common::{echo_loop, round_trip, stream_echoes};

/// Longest any exchange may take before the benchmark gives up with a panic.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Name of the relay node.
const RELAY: &str = "relay";

/// How the client reaches the echo node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// One `udp://127.0.0.1` link.
    Udp,
    /// One in-process `mem://` link.
    Mem,
    /// Two links in one session: `tcp://127.0.0.1` and `unix://`.
    Mixed,
    /// Client and echo each linked over TCP to a relay service on its own thread.
    Relay,
}

impl Setup {
    /// Short name for progress lines.
    pub fn name(self) -> &'static str {
        match self {
            Setup::Udp => "udp",
            Setup::Mem => "mem",
            Setup::Mixed => "tcp+unix",
            Setup::Relay => "relay",
        }
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

fn unique(prefix: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

fn url(s: &str) -> Url {
    s.parse().expect("valid url")
}

/// Runs `d` until links to `peers` distinct peers are accepted (a relay link raises
/// `LinkAccepted`; a direct peer also `PeerUp`).
fn wait_up(d: &mut NodeDriver, peers: usize, what: &str) {
    let deadline = Instant::now() + TIMEOUT;
    let mut up = std::collections::BTreeSet::new();
    while up.len() < peers {
        assert!(Instant::now() < deadline, "{what}: peers never came up");
        d.run_once(Some(Duration::from_millis(20))).expect("run");
        if let Some(f) = d.poll_link_failure() {
            panic!("{what}: link failed: {f:?}");
        }
        while let Some(event) = d.poll_event() {
            match event {
                NodeEvent::PeerUp { peer, .. } | NodeEvent::LinkAccepted { peer, .. } => {
                    up.insert(peer);
                }
                _ => {}
            }
        }
    }
}

/// A client `NodeDriver` whose messages an echo node (and in [`Setup::Relay`] a relay) on other
/// threads return.
pub struct NodePair {
    client: NodeDriver,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    paths: Vec<PathBuf>,
}

impl NodePair {
    /// Starts the echo (and relay) and waits until the client can send to the echo.
    pub fn new(setup: Setup) -> NodePair {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut paths = Vec::new();
        let mut client = NodeDriver::new(NodeConfig::new("client"), TransportConfig::default())
            .expect("client node");
        if setup == Setup::Relay {
            let (tx, rx) = mpsc::channel();
            let relay_stop = Arc::clone(&stop);
            threads.push(thread::spawn(move || {
                let mut r = RelayDriver::new(RelayConfig::new(RELAY), TransportConfig::default())
                    .expect("relay");
                let bound = r.listen(&url("tcp://127.0.0.1:0")).expect("relay listen");
                tx.send(bound).expect("report relay url");
                while !relay_stop.load(Ordering::Relaxed) {
                    if r.run_once(Some(Duration::from_millis(20))).is_err() {
                        return;
                    }
                    while r.poll_event().is_some() {}
                    while r.poll_link_failure().is_some() {}
                }
            }));
            let relay_url = rx.recv().expect("relay started");
            let (up_tx, up_rx) = mpsc::channel();
            let echo_stop = Arc::clone(&stop);
            let echo_relay = relay_url.clone();
            threads.push(thread::spawn(move || {
                let mut c = NodeConfig::new("echo");
                c.relays = vec![RELAY.into()];
                let mut d = NodeDriver::new(c, TransportConfig::default()).expect("echo node");
                d.connect(&echo_relay).expect("echo connect");
                wait_up(&mut d, 1, "echo");
                up_tx.send(()).expect("report echo up");
                echo_loop(d, &echo_stop);
            }));
            up_rx.recv().expect("echo linked to the relay");
            let mut c = NodeConfig::new("client");
            c.relays = vec![RELAY.into()];
            client = NodeDriver::new(c, TransportConfig::default()).expect("client node");
            client.connect(&relay_url).expect("client connect");
            wait_up(&mut client, 1, "client");
            client
                .node_mut()
                .route_via_relay(Instant::now(), "echo", RELAY)
                .expect("route via relay");
        } else {
            let listen: Vec<String> = match setup {
                Setup::Udp => vec!["udp://127.0.0.1:0".into()],
                Setup::Mem => vec![format!("mem://{}", unique("atbus-compare"))],
                Setup::Mixed => {
                    let p = std::env::temp_dir().join(format!("{}.sock", unique("atbus-compare")));
                    let u = format!("unix://{}", p.display());
                    paths.push(p);
                    vec!["tcp://127.0.0.1:0".into(), u]
                }
                Setup::Relay => unreachable!("handled above"),
            };
            let (tx, rx) = mpsc::channel();
            let echo_stop = Arc::clone(&stop);
            threads.push(thread::spawn(move || {
                let mut d = NodeDriver::new(NodeConfig::new("echo"), TransportConfig::default())
                    .expect("echo node");
                let bound: Vec<Url> = listen
                    .iter()
                    .map(|u| d.listen(&url(u)).expect("listen"))
                    .collect();
                tx.send(bound).expect("report bound urls");
                echo_loop(d, &echo_stop);
            }));
            let bound = rx.recv().expect("echo node started");
            for u in &bound {
                client.connect(u).expect("connect");
            }
            wait_up(&mut client, 1, "client");
            if bound.len() > 1 {
                // The second link joins the session as its second path.
                let deadline = Instant::now() + TIMEOUT;
                while client.node().peer_links("echo").len() < bound.len() {
                    assert!(Instant::now() < deadline, "second path never came up");
                    client
                        .run_once(Some(Duration::from_millis(20)))
                        .expect("run");
                    while client.poll_event().is_some() {}
                }
            }
        }
        let mut pair = NodePair {
            client,
            stop,
            threads,
            paths,
        };
        // The first message also settles a relayed route.
        pair.round_trip(&Bytes::from_static(b"warm-up"));
        pair
    }

    /// Paths of the client's session with the echo, and the client's transport links.
    #[cfg(test)]
    pub fn paths_and_links(&self) -> (usize, usize) {
        (
            self.client.node().peer_links("echo").len(),
            self.client.links().len(),
        )
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

impl Drop for NodePair {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every setup over real sockets (or the in-process transport): echoes checked inside.
    #[test]
    fn every_setup_echoes() {
        let small = Bytes::from(vec![7u8; 64]);
        let large = Bytes::from(vec![9u8; 64 * 1024]);
        for setup in [Setup::Udp, Setup::Mem, Setup::Mixed, Setup::Relay] {
            let mut p = NodePair::new(setup);
            assert!(p.round_trip(&small) > Duration::ZERO, "{setup:?}");
            p.stream(&small, 2000, 100);
            p.stream(&large, 20, 10);
            // Two paths over two links; the relay's path is the client's only link, to the relay.
            let want = if setup == Setup::Mixed {
                (2, 2)
            } else {
                (1, 1)
            };
            assert_eq!(p.paths_and_links(), want, "{setup:?}");
        }
    }
}
