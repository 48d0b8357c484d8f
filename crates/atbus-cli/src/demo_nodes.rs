//! The main part of `atbus demo`: nodes in this process exchanging verified traffic over real
//! sockets — in-process (`mem://`), a Unix socket, TCP and UDP on loopback, and one peer reached
//! over TCP and a Unix socket at once (two links, one session).
//!
//! An echo node runs on its own thread and listens on every transport; for each transport a
//! client node on the calling thread connects, runs three exchanges with `atbus send`'s logic
//! ([`crate::send::exchange`]) — many small messages, large messages, and a strict ping-pong for
//! the round trip — compares every echo byte for byte, then reports which links carried what.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use atbus_node::{NodeConfig, NodeEvent};
use atbus_transport_mio::{DriverLinkInfo, LinkKind, NodeDriver, TransportConfig, Url};

use crate::node::Echo;
use crate::send::{self, Report};

/// One exchange of the demo: how many messages of which size, with how many in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Short label printed in the table.
    pub label: &'static str,
    /// Messages.
    pub count: u64,
    /// Bytes per message.
    pub size: usize,
    /// Most messages in flight (1: ping-pong).
    pub window: u64,
    /// Streams the messages are spread over.
    pub streams: u32,
}

/// The exchanges run over every transport, in order.
pub const RUNS: [Run; 3] = [
    Run {
        label: "small",
        count: 50_000,
        size: 64,
        window: 1000,
        streams: 4,
    },
    Run {
        label: "large",
        count: 300,
        size: 64 * 1024,
        window: 16,
        streams: 2,
    },
    Run {
        label: "ping-pong",
        count: 1000,
        size: 64,
        window: 1,
        streams: 1,
    },
];

/// What one exchange over one transport gave.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Transport label (`mem`, `unix`, `tcp`, `udp`, `tcp+unix`).
    pub transport: String,
    /// The exchange.
    pub run: Run,
    /// Its report.
    pub report: Report,
}

/// What the whole nodes demo measured.
#[derive(Debug, Clone, Default)]
pub struct NodesReport {
    /// Every exchange, in the order run.
    pub results: Vec<RunResult>,
    /// Messages sent over all exchanges.
    pub sent: u64,
    /// Messages whose echo matched byte for byte, exactly once, in order.
    pub verified: u64,
    /// The relay part: two namespaces, a relay each.
    pub relay: crate::demo_relay::RelayDemoReport,
}

impl NodesReport {
    /// Whether every message of every exchange came back intact, the relay part's included.
    pub fn all_verified(&self) -> bool {
        self.direct_verified() && self.relay.all_verified()
    }

    /// Whether every message of the exchanges between directly linked nodes came back intact.
    fn direct_verified(&self) -> bool {
        self.sent > 0
            && self.verified == self.sent
            && self
                .results
                .iter()
                .all(|r| r.report.verified && r.report.error.is_none())
    }
}

/// The echo node on its own thread; stopped (and its links closed) by [`EchoNode::stop`].
pub(crate) struct EchoNode {
    stop: Arc<AtomicBool>,
    wake: atbus_transport_mio::TransportHandle,
    thread: Option<JoinHandle<anyhow::Result<u64>>>,
    /// Bound URLs in listen order.
    urls: Vec<Url>,
}

impl EchoNode {
    /// Starts a node configured by `config` (its `connect` URLs are dialled and redialled)
    /// that listens on `listen` and echoes every message.
    pub(crate) fn start(config: NodeConfig, listen: &[Url]) -> anyhow::Result<Self> {
        let name = config.name.clone();
        let mut driver = NodeDriver::new(config, TransportConfig::default())?;
        let mut urls = Vec::new();
        for url in listen {
            urls.push(
                driver
                    .listen(url)
                    .with_context(|| format!("cannot listen on {url}"))?,
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let wake = driver.transport().handle();
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("{name}-node"))
            .spawn(move || -> anyhow::Result<u64> {
                let mut echo = Echo::default();
                while !flag.load(Ordering::Relaxed) {
                    driver.run_once(Some(Duration::from_millis(100)))?;
                    while let Some(event) = driver.poll_event() {
                        match event {
                            NodeEvent::Readable { peer, stream_id } => {
                                echo.readable(peer, stream_id);
                            }
                            NodeEvent::Undeliverable { peer, .. } => echo.forget(&peer),
                            _ => {}
                        }
                    }
                    echo.step(&mut driver);
                }
                driver.shutdown(Duration::from_secs(1))?;
                Ok(echo.echoed)
            })?;
        Ok(Self {
            stop,
            wake,
            thread: Some(thread),
            urls,
        })
    }

    /// Stops the node; how many messages it echoed.
    pub(crate) fn stop(mut self) -> anyhow::Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.wake.wake();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => anyhow::bail!("the echo node's thread panicked"),
            None => Ok(0),
        }
    }
}

impl Drop for EchoNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.wake.wake();
    }
}

/// Removes the demo's socket directory when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn kind_name(link: &DriverLinkInfo) -> &'static str {
    match (link.kind, link.url.as_ref().map(Url::to_string)) {
        (Some(LinkKind::InProcess), _) => "mem",
        (Some(LinkKind::Datagram), _) => "udp",
        (_, Some(u)) if u.starts_with("unix:") => "unix",
        (_, Some(u)) if u.starts_with("tcp:") => "tcp",
        _ => "?",
    }
}

fn megabytes(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// Writes the table row of one exchange: `flow` (what the messages crossed), the run's label,
/// verified/sent, rates and, for ping-pong runs, the round-trip percentiles; an error the
/// exchange met follows on a line of its own.
pub(crate) fn write_run_row<W: Write>(
    out: &mut W,
    flow: &str,
    run: &Run,
    r: &Report,
) -> std::io::Result<()> {
    let rtt = if run.window == 1 {
        format!("{:>6} us {:>6} us", r.rtt_p50_us, r.rtt_p99_us)
    } else {
        String::new()
    };
    let row = format!(
        "  {flow} {:<10} {:>6}/{:<6} {:>10.0} {:>9.1}   {rtt}",
        run.label,
        if r.verified { r.received } else { 0 },
        run.count,
        r.msgs_per_sec,
        r.bytes_per_sec / 1e6,
    );
    writeln!(out, "{}", row.trim_end())?;
    if let Some(error) = &r.error {
        writeln!(out, "  {flow} error: {error}")?;
    }
    out.flush()
}

/// Options of one client phase.
pub(crate) fn send_options(client: &str, to: &str, connect: &Url, run: &Run) -> send::Options {
    send::Options {
        name: client.to_owned(),
        connect: connect.clone(),
        to: to.to_owned(),
        count: run.count,
        size: run.size,
        streams: run.streams,
        window: run.window,
        tokens: Vec::new(),
        verify: true,
        timeout: Duration::from_secs(60),
        progress: false,
    }
}

/// Runs the nodes demo and prints its story to `out`.
pub fn run<W: Write>(out: &mut W) -> anyhow::Result<NodesReport> {
    let pid = std::process::id();
    let dir = TempDir(std::env::temp_dir().join(format!("atbus-demo-{pid}")));
    std::fs::create_dir_all(&dir.0)
        .with_context(|| format!("cannot create {}", dir.0.display()))?;
    let unix = |file: &str| -> anyhow::Result<Url> {
        Ok(format!("unix://{}", dir.0.join(file).display()).parse()?)
    };
    let listen = [
        format!("mem://atbus-demo-{pid}").parse()?,
        unix("echo.sock")?,
        "tcp://127.0.0.1:0".parse()?,
        "udp://127.0.0.1:0".parse()?,
    ];
    let echo = EchoNode::start(NodeConfig::new("echo"), &listen)?;
    let [mem, unix_url, tcp, udp] = [0, 1, 2, 3].map(|i| echo.urls[i].clone());
    let phases: [(&str, &str, Vec<Url>); 5] = [
        ("mem", "client-mem", vec![mem]),
        ("unix", "client-unix", vec![unix_url.clone()]),
        ("tcp", "client-tcp", vec![tcp.clone()]),
        ("udp", "client-udp", vec![udp]),
        ("tcp+unix", "client-mixed", vec![tcp, unix_url]),
    ];

    writeln!(
        out,
        "Part 1: six nodes in this process, talking over real sockets"
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "  node \"echo\" runs on its own thread, sends every message back on its stream, and listens on"
    )?;
    for url in &echo.urls {
        writeln!(out, "    {url}")?;
    }
    writeln!(
        out,
        "  For each transport a client node connects (client-mixed over TCP and Unix at once: two"
    )?;
    writeln!(
        out,
        "  links, one session) and runs three exchanges; every echo is checked byte for byte,"
    )?;
    writeln!(out, "  exactly once and in order per stream:")?;
    for run in RUNS {
        writeln!(
            out,
            "    {:<10} {} messages of {} B on {} stream(s), at most {} in flight",
            run.label, run.count, run.size, run.streams, run.window
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "  transport  exchange    verified       msgs/s      MB/s   rtt p50   rtt p99"
    )?;
    out.flush()?;

    let mut report = NodesReport::default();
    let mut link_lines = Vec::new();
    for (transport, client, urls) in phases {
        let mut driver = NodeDriver::new(NodeConfig::new(client), TransportConfig::default())?;
        for url in &urls {
            driver.connect(url)?;
        }
        // Both links of the mixed phase join the session before traffic starts.
        let deadline = Instant::now() + Duration::from_secs(10);
        while driver.node().peer_links("echo").len() < urls.len() && Instant::now() < deadline {
            driver.run_once(Some(Duration::from_millis(20)))?;
            while driver.poll_event().is_some() {}
            if let Some(failure) = driver.poll_link_failure() {
                anyhow::bail!(
                    "{client} cannot connect to {}: {:?}",
                    failure.url,
                    failure.reason
                );
            }
        }
        for run in RUNS {
            let options = send_options(client, "echo", &urls[0], &run);
            let r = send::exchange(&mut driver, &options)?;
            report.sent += run.count;
            if r.verified {
                report.verified += r.received;
            }
            write_run_row(out, &format!("{transport:<10}"), &run, &r)?;
            report.results.push(RunResult {
                transport: transport.to_owned(),
                run,
                report: r,
            });
        }
        for link in driver.links() {
            link_lines.push(format!(
                "  {client:<13} -> {:<5} {:<5} {:>9.2} MB out {:>9.2} MB in  {}",
                link.peer.as_deref().unwrap_or("?"),
                kind_name(&link),
                megabytes(link.stats.bytes_sent),
                megabytes(link.stats.bytes_received),
                link.url.as_ref().map(Url::to_string).unwrap_or_default(),
            ));
        }
        driver.shutdown(Duration::from_secs(1))?;
    }
    let echoed = echo.stop()?;

    writeln!(out)?;
    writeln!(
        out,
        "  links that carried the traffic (counted by the transport, framing and acks included):"
    )?;
    for line in &link_lines {
        writeln!(out, "{line}")?;
    }
    writeln!(
        out,
        "  (client-mixed's two links are two paths of one session: the session picks a path per packet)"
    )?;
    writeln!(out)?;
    let all = if report.direct_verified() {
        "yes"
    } else {
        "NO"
    };
    writeln!(
        out,
        "  {}/{} messages verified (echo node echoed {echoed}): {all}",
        report.verified, report.sent
    )?;
    writeln!(out)?;
    out.flush()?;
    report.relay = crate::demo_relay::run(out)?;
    Ok(report)
}
