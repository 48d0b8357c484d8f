//! The relay part of `atbus demo`: two namespaces with a relay each, on embedded defaults (no
//! discovery service). `relay-1` (ns1) and `relay-2` (ns2) run on their own threads, each a
//! [`RelayDriver`] on real loopback TCP; `relay-1` dials `relay-2` and they trust each other as
//! peer relays. Node `a` (ns1) is linked only to `relay-1`, echo node `b` (ns2) only to
//! `relay-2`; the relays' routes send `b`'s frames to `relay-2` and `a`'s to `relay-1`.
//!
//! `a` runs `atbus send`'s exchange through `relay-1` ([`crate::send::exchange_via`]), every
//! echo checked byte for byte. Afterwards the relays' per-link counters show which path each
//! flow took ([`trace_path`]) and how many frames each relay forwarded.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use atbus_node::NodeConfig;
use atbus_relay::service::{RelayDriver, TransportConfig, TransportHandle, Url};
use atbus_relay::{DropReason, LinkMetrics, RelayConfig, RelayMetrics};
use atbus_transport_mio::NodeDriver;

use crate::demo_nodes::{EchoNode, Run, send_options, write_run_row};
use crate::send::{self, Report};

/// The exchanges of the relay part, in order.
pub const RELAY_RUNS: [Run; 2] = [
    Run {
        label: "stream",
        count: 3000,
        size: 256,
        window: 64,
        streams: 2,
    },
    Run {
        label: "ping-pong",
        count: 300,
        size: 64,
        window: 1,
        streams: 1,
    },
];

/// The relays, nodes and namespaces of the demo.
const RELAY_1: &str = "relay-1";
const RELAY_2: &str = "relay-2";
const NODE_A: &str = "a";
const NODE_B: &str = "b";

/// One relay's counters at the end of the demo.
#[derive(Debug, Clone)]
pub struct RelayCounters {
    /// Relay name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Relay-wide counters.
    pub metrics: RelayMetrics,
    /// Per link counters.
    pub links: Vec<LinkMetrics>,
}

/// What the relay part measured.
#[derive(Debug, Clone, Default)]
pub struct RelayDemoReport {
    /// Each exchange with its report.
    pub runs: Vec<(Run, Report)>,
    /// Messages sent over all exchanges.
    pub sent: u64,
    /// Messages whose echo matched byte for byte, exactly once, in order.
    pub verified: u64,
    /// Both relays' counters.
    pub relays: Vec<RelayCounters>,
    /// The path of `a → b` and of `b → a`, traced from the relays' counters.
    pub paths: Vec<(String, Vec<String>)>,
}

impl RelayDemoReport {
    /// Whether every message came back intact through the relays.
    pub fn all_verified(&self) -> bool {
        self.sent > 0
            && self.verified == self.sent
            && self
                .runs
                .iter()
                .all(|(_, r)| r.verified && r.error.is_none())
    }
}

/// The path frames from `src` to `dst` took, from per-link counters: `src`, the relay it is
/// linked to (`first_hop`), then at each relay the link to `dst` if it carried frames, else
/// the link to another relay (not the one the walk came from) that carried frames. Ends with
/// `?` when the counters show no way on. Valid when each relay link carries one flow per
/// direction, as in the demo.
pub fn trace_path(src: &str, first_hop: &str, dst: &str, relays: &[RelayCounters]) -> Vec<String> {
    let mut path = vec![src.to_owned(), first_hop.to_owned()];
    let (mut here, mut from) = (first_hop.to_owned(), src.to_owned());
    for _ in 0..relays.len() {
        let Some(r) = relays.iter().find(|r| r.name == here) else {
            break;
        };
        let carried = |l: &&LinkMetrics| l.frames_out > 0;
        if r.links.iter().filter(carried).any(|l| l.peer == dst) {
            path.push(dst.to_owned());
            return path;
        }
        let Some(next) = r
            .links
            .iter()
            .filter(carried)
            .find(|l| l.relay && l.peer != from)
        else {
            break;
        };
        path.push(next.peer.clone());
        from = std::mem::replace(&mut here, next.peer.clone());
    }
    path.push("?".to_owned());
    path
}

/// A relay on its own thread; its loop keeps [`RelayThread::counters`] current and
/// [`RelayThread::stop`] ends it.
struct RelayThread {
    name: String,
    namespace: String,
    url: Url,
    stop: Arc<AtomicBool>,
    wake: TransportHandle,
    /// The relay's counters and links, refreshed by its loop after every round.
    shared: Arc<Mutex<(RelayMetrics, Vec<LinkMetrics>)>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl RelayThread {
    fn start(config: RelayConfig) -> anyhow::Result<Self> {
        let name = config.node.name.clone();
        let namespace = config.node.namespace.clone();
        let mut driver = RelayDriver::new(config, TransportConfig::default())?;
        let url = driver
            .listen(&"tcp://127.0.0.1:0".parse()?)
            .context("cannot listen on loopback")?;
        let stop = Arc::new(AtomicBool::new(false));
        let wake = driver.transport().handle();
        let shared = Arc::new(Mutex::new((RelayMetrics::default(), Vec::new())));
        let (flag, out) = (Arc::clone(&stop), Arc::clone(&shared));
        let thread = std::thread::Builder::new()
            .name(format!("{name}-relay"))
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    driver.run_once(Some(Duration::from_millis(20)))?;
                    while driver.poll_event().is_some() {}
                    // A handful of links: copying them every round costs little.
                    let relay = driver.relay();
                    *out.lock().unwrap_or_else(PoisonError::into_inner) =
                        (relay.metrics().clone(), relay.link_metrics());
                }
                driver.shutdown(Duration::from_millis(500))?;
                Ok(())
            })?;
        Ok(Self {
            name,
            namespace,
            url,
            stop,
            wake,
            shared,
            thread: Some(thread),
        })
    }

    /// The relay's counters as its loop last published them.
    fn counters(&self) -> RelayCounters {
        let (metrics, links) = self
            .shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        RelayCounters {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            metrics,
            links,
        }
    }

    /// Whether the relay has a link to `peer` (trusted as a relay when `relay`).
    fn linked_to(&self, peer: &str, relay: bool) -> bool {
        self.counters()
            .links
            .iter()
            .any(|l| l.peer == peer && l.relay == relay)
    }

    /// Asks the loop to stop (close its links) without waiting.
    fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.wake.wake();
    }

    /// Stops the loop and waits for its thread.
    fn stop(mut self) -> anyhow::Result<()> {
        self.request_stop();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => anyhow::bail!("the thread of {} panicked", self.name),
            None => Ok(()),
        }
    }
}

impl Drop for RelayThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.wake.wake();
    }
}

fn relay_config(name: &str, namespace: &str, peer: &str, route: (&str, &str)) -> RelayConfig {
    let mut c = RelayConfig::new(name);
    c.node.namespace = namespace.to_owned();
    c.peer_relays = vec![peer.to_owned()];
    c.routes.insert(route.0.to_owned(), route.1.to_owned());
    c
}

fn node_config(name: &str, namespace: &str, relay: &str) -> NodeConfig {
    let mut c = NodeConfig::new(name);
    c.namespace = namespace.to_owned();
    c.relays = vec![relay.to_owned()];
    c
}

/// Runs the relay part and prints its story to `out`.
pub fn run<W: Write>(out: &mut W) -> anyhow::Result<RelayDemoReport> {
    writeln!(
        out,
        "Part 1b: two namespaces, a relay each (relays on threads, real loopback TCP)"
    )?;
    writeln!(out)?;
    let relay2 = RelayThread::start(relay_config(RELAY_2, "ns2", RELAY_1, (NODE_A, RELAY_1)))?;
    let mut c1 = relay_config(RELAY_1, "ns1", RELAY_2, (NODE_B, RELAY_2));
    c1.node.connect = vec![relay2.url.to_string()];
    let relay1 = RelayThread::start(c1)?;
    let mut b = node_config(NODE_B, "ns2", RELAY_2);
    b.connect = vec![relay2.url.to_string()];
    let echo = EchoNode::start(b, &[])?;
    let mut a = NodeDriver::new(
        node_config(NODE_A, "ns1", RELAY_1),
        atbus_transport_mio::TransportConfig::default(),
    )?;
    for (r, ns, peer) in [(&relay1, "ns1", RELAY_2), (&relay2, "ns2", RELAY_1)] {
        writeln!(
            out,
            "  {} (namespace {ns}) listens on {}, peer relay {peer}",
            r.name, r.url
        )?;
    }
    writeln!(
        out,
        "  node {NODE_A} (ns1) links to {RELAY_1} only; node {NODE_B} (ns2, echoes) to {RELAY_2} only"
    )?;
    writeln!(
        out,
        "  routes: {RELAY_1} sends {NODE_B}'s frames to {RELAY_2}, {RELAY_2} sends {NODE_A}'s to {RELAY_1}"
    )?;

    // a links up once both relays are linked to each other and b to relay-2, so nothing it
    // sends meets a relay without a way on (its messages wait in its session for its link).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(relay1.linked_to(RELAY_2, true)
        && relay2.linked_to(RELAY_1, true)
        && relay2.linked_to(NODE_B, false))
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the relays and node b did not link up within 10 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    a.connect(&relay1.url)?;
    a.node_mut()
        .route_via_relay(Instant::now(), NODE_B, RELAY_1)?;

    writeln!(out)?;
    writeln!(
        out,
        "  flow       exchange    verified       msgs/s      MB/s   rtt p50   rtt p99"
    )?;
    let mut report = RelayDemoReport::default();
    for run in RELAY_RUNS {
        let mut options = send_options(NODE_A, NODE_B, &relay1.url, &run);
        options.timeout = Duration::from_secs(30);
        let r = send::exchange_via(&mut a, &options, Some(RELAY_1))?;
        report.sent += run.count;
        if r.verified {
            report.verified += r.received;
        }
        write_run_row(out, &format!("{NODE_A}->{NODE_B}->{NODE_A}   "), &run, &r)?;
        report.runs.push((run, r));
    }
    // The last acknowledgements cross the relays; then their counters are read while every
    // link is still up, and everything stops.
    let settle = Instant::now() + Duration::from_millis(50);
    while Instant::now() < settle {
        a.run_once(Some(Duration::from_millis(5)))?;
        while a.poll_event().is_some() {}
    }
    report.relays = vec![relay1.counters(), relay2.counters()];
    a.shutdown(Duration::from_millis(500))?;
    // Both relays wind down at once.
    relay1.request_stop();
    relay2.request_stop();
    let echoed = echo.stop()?;
    relay1.stop()?;
    relay2.stop()?;

    writeln!(out)?;
    writeln!(
        out,
        "  paths, traced from the relays' per-link frame counters:"
    )?;
    for (src, hop, dst) in [(NODE_A, RELAY_1, NODE_B), (NODE_B, RELAY_2, NODE_A)] {
        let path = trace_path(src, hop, dst, &report.relays);
        writeln!(out, "  flow {src} -> {dst}: {}", path.join(" -> "))?;
        report.paths.push((format!("{src}->{dst}"), path));
    }
    writeln!(out, "  relay counters:")?;
    for r in &report.relays {
        let m = &r.metrics;
        let reasons: Vec<String> = DropReason::ALL
            .iter()
            .filter(|&&d| m.drops(d) > 0)
            .map(|&d| format!("{} {}", d.as_str(), m.drops(d)))
            .collect();
        let reasons = if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        };
        writeln!(
            out,
            "  {} ({}) forwarded {} frames ({:.2} MB), received {}, dropped {}{reasons}",
            r.name,
            r.namespace,
            m.frames_forwarded,
            m.bytes_forwarded as f64 / 1e6,
            m.frames_received,
            m.drops_total()
        )?;
        for l in &r.links {
            writeln!(
                out,
                "    {} link {} -> {:<8} {:>7} frames out {:>7} frames in",
                r.name, l.link.0, l.peer, l.frames_out, l.frames_in
            )?;
        }
    }
    let all = if report.all_verified() { "yes" } else { "NO" };
    writeln!(
        out,
        "  {}/{} messages verified through two relays (node b echoed {echoed}): {all}",
        report.verified, report.sent
    )?;
    writeln!(out)?;
    out.flush()?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(peer: &str, relay: bool, frames_out: u64) -> LinkMetrics {
        LinkMetrics {
            link: atbus_node::LinkId(1),
            peer: peer.into(),
            relay,
            frames_in: 0,
            frames_out,
            bytes_out: 0,
            queued_frames: 0,
            queued_bytes: 0,
            dropped_queue_full: 0,
            blocked: false,
        }
    }

    fn relay(name: &str, links: Vec<LinkMetrics>) -> RelayCounters {
        RelayCounters {
            name: name.into(),
            namespace: String::new(),
            metrics: RelayMetrics::default(),
            links,
        }
    }

    #[test]
    fn paths_follow_the_links_that_carried_frames() {
        let relays = [
            relay("r1", vec![link("a", false, 5), link("r2", true, 7)]),
            relay("r2", vec![link("r1", true, 5), link("b", false, 7)]),
        ];
        assert_eq!(trace_path("a", "r1", "b", &relays), ["a", "r1", "r2", "b"]);
        assert_eq!(trace_path("b", "r2", "a", &relays), ["b", "r2", "r1", "a"]);
        // Nothing went out towards b: the walk says so instead of guessing.
        let idle = [
            relay("r1", vec![link("a", false, 5), link("r2", true, 0)]),
            relay("r2", vec![link("r1", true, 5), link("b", false, 0)]),
        ];
        assert_eq!(trace_path("a", "r1", "b", &idle), ["a", "r1", "?"]);
        // A walk never turns back to the relay it came from.
        let back = [
            relay("r1", vec![link("r2", true, 3)]),
            relay("r2", vec![link("r1", true, 3)]),
        ];
        assert_eq!(trace_path("a", "r1", "b", &back), ["a", "r1", "r2", "?"]);
    }
}
