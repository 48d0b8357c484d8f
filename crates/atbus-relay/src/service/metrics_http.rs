//! The metrics endpoint: the relay's counters in the Prometheus text format (version 0.0.4),
//! served by a small HTTP/1.0 responder on its own port and thread.
//!
//! The relay loop publishes a [`MetricsSnapshot`] now and then ([`MetricsServer::publish`]);
//! the server thread renders the latest one for every `GET /metrics`. One request is served at
//! a time, each with a 2 s read/write timeout and an 8 KiB request limit, so a slow or hostile
//! client costs the relay nothing but that thread's time.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{DelayHistogram, DropReason, LinkMetrics, QUEUE_DELAY_BOUNDS, Relay, RelayMetrics};

/// Largest request head read (request line and headers).
const MAX_REQUEST: usize = 8 * 1024;
/// Read and write timeout of one request.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// The numbers the endpoint serves, copied out of the relay.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    /// The relay's name (label `relay` of every sample).
    pub relay: String,
    /// Relay-wide counters.
    pub metrics: RelayMetrics,
    /// Per link counters and queue depths.
    pub links: Vec<LinkMetrics>,
    /// Queue delay histograms per destination (the busiest ones, then `other`).
    pub queue_delays: Vec<(String, DelayHistogram)>,
}

impl MetricsSnapshot {
    /// Copies the current counters of `relay`.
    pub fn of(relay: &Relay) -> Self {
        Self {
            relay: relay.name().to_owned(),
            metrics: relay.metrics().clone(),
            links: relay.link_metrics(),
            queue_delays: relay.queue_delays().series(),
        }
    }
}

/// Escapes a label value (backslash, double quote, newline).
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Renders `snapshot` in the Prometheus text format.
pub fn render_prometheus(snapshot: &MetricsSnapshot) -> String {
    let mut out = String::new();
    let relay = escape(&snapshot.relay);
    let m = &snapshot.metrics;
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let sep = if labels.is_empty() { "" } else { "," };
            let _ = writeln!(out, "{name}{{relay=\"{relay}\"{sep}{labels}}} {value}");
        }
    };
    let one = |v: u64| vec![(String::new(), v)];
    family(
        "atbus_relay_frames_received_total",
        "counter",
        "Frames handed over by links (everything but link handshakes and closes).",
        &one(m.frames_received),
    );
    family(
        "atbus_relay_frames_forwarded_total",
        "counter",
        "Frames written to an outgoing link.",
        &one(m.frames_forwarded),
    );
    family(
        "atbus_relay_bytes_forwarded_total",
        "counter",
        "Bytes of the packages written to outgoing links.",
        &one(m.bytes_forwarded),
    );
    family(
        "atbus_relay_forward_errors_sent_total",
        "counter",
        "forward_error frames sent back to sources.",
        &one(m.forward_errors_sent),
    );
    family(
        "atbus_relay_forward_errors_suppressed_total",
        "counter",
        "forward_error frames not sent because of the rate limit.",
        &one(m.forward_errors_suppressed),
    );
    let drops: Vec<(String, u64)> = DropReason::ALL
        .iter()
        .map(|&r| (format!("reason=\"{}\"", r.as_str()), m.drops(r)))
        .collect();
    family(
        "atbus_relay_frames_dropped_total",
        "counter",
        "Frames dropped, by reason.",
        &drops,
    );
    let relays = snapshot.links.iter().filter(|l| l.relay).count() as u64;
    let nodes = snapshot.links.len() as u64 - relays;
    family(
        "atbus_relay_links",
        "gauge",
        "Authenticated links, by peer kind.",
        &[
            ("peer_kind=\"node\"".to_owned(), nodes),
            ("peer_kind=\"relay\"".to_owned(), relays),
        ],
    );
    let sum = |f: fn(&LinkMetrics) -> u64| snapshot.links.iter().map(f).sum::<u64>();
    family(
        "atbus_relay_queued_frames",
        "gauge",
        "Frames queued on all outgoing links.",
        &one(sum(|l| l.queued_frames as u64)),
    );
    family(
        "atbus_relay_queued_bytes",
        "gauge",
        "Bytes queued on all outgoing links.",
        &one(sum(|l| l.queued_bytes as u64)),
    );
    let per_link = |f: fn(&LinkMetrics) -> u64| -> Vec<(String, u64)> {
        snapshot
            .links
            .iter()
            .map(|l| {
                (
                    format!(
                        "link=\"{}\",peer=\"{}\",peer_kind=\"{}\"",
                        l.link.0,
                        escape(&l.peer),
                        if l.relay { "relay" } else { "node" }
                    ),
                    f(l),
                )
            })
            .collect()
    };
    family(
        "atbus_relay_link_queued_frames",
        "gauge",
        "Frames queued for the link.",
        &per_link(|l| l.queued_frames as u64),
    );
    family(
        "atbus_relay_link_queued_bytes",
        "gauge",
        "Bytes queued for the link.",
        &per_link(|l| l.queued_bytes as u64),
    );
    family(
        "atbus_relay_link_frames_in_total",
        "counter",
        "Frames received on the link.",
        &per_link(|l| l.frames_in),
    );
    family(
        "atbus_relay_link_frames_out_total",
        "counter",
        "Frames written to the link.",
        &per_link(|l| l.frames_out),
    );
    family(
        "atbus_relay_link_bytes_out_total",
        "counter",
        "Bytes written to the link.",
        &per_link(|l| l.bytes_out),
    );
    family(
        "atbus_relay_link_dropped_queue_full_total",
        "counter",
        "Frames dropped because the link's queue was full.",
        &per_link(|l| l.dropped_queue_full),
    );
    family(
        "atbus_relay_link_blocked",
        "gauge",
        "1 while the socket of the link pushes back.",
        &per_link(|l| u64::from(l.blocked)),
    );
    render_queue_delays(&mut out, &relay, &snapshot.queue_delays);
    out
}

/// Seconds with enough digits for nanoseconds, without a trailing exponent.
fn seconds(ns: u64) -> String {
    format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
}

/// The `atbus_relay_queue_delay_seconds` histogram family, one series per destination.
fn render_queue_delays(out: &mut String, relay: &str, series: &[(String, DelayHistogram)]) {
    let name = "atbus_relay_queue_delay_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time a frame spent queued in the relay for its destination link \
         (queued to handed to the socket), by destination: the busiest ones, then other."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (destination, h) in series {
        let labels = format!("relay=\"{relay}\",destination=\"{}\"", escape(destination));
        let cumulative = h.cumulative();
        let les = QUEUE_DELAY_BOUNDS
            .iter()
            .map(ToString::to_string)
            .chain(std::iter::once("+Inf".to_owned()));
        for (le, n) in les.zip(cumulative) {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", seconds(h.sum_ns));
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
    }
}

/// Shared between the relay loop and the server thread.
#[derive(Debug, Default)]
struct Shared {
    snapshot: Mutex<MetricsSnapshot>,
    stop: AtomicBool,
}

/// The metrics endpoint: `GET /metrics` on its own TCP port, answered from the last published
/// snapshot. Dropping it (or [`stop`](Self::stop)) ends its thread.
#[derive(Debug)]
pub struct MetricsServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port) and starts serving.
    pub fn start(addr: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("atbus-relay-metrics".into())
            .spawn(move || serve(&listener, &for_thread))?;
        Ok(Self {
            shared,
            addr,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the numbers served.
    pub fn publish(&self, snapshot: MetricsSnapshot) {
        *self
            .shared
            .snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = snapshot;
    }

    /// Stops serving and waits for the thread.
    pub fn stop(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn serve(listener: &TcpListener, shared: &Shared) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        match stream {
            Ok(stream) => {
                if let Err(err) = answer(stream, shared) {
                    tracing::debug!(%err, "metrics request failed");
                }
            }
            Err(err) => {
                tracing::debug!(%err, "metrics accept failed");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    Metrics,
    NotFound,
    BadMethod,
    Bad,
}

/// Parses the request line of `head`.
fn parse_request(head: &[u8]) -> Request {
    let Some(line) = head.split(|&b| b == b'\n').next() else {
        return Request::Bad;
    };
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Request::Bad;
    };
    if method != "GET" && method != "HEAD" {
        return Request::BadMethod;
    }
    let path = target.split('?').next().unwrap_or(target);
    if path == "/metrics" {
        Request::Metrics
    } else {
        Request::NotFound
    }
}

fn answer(mut stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
        if head.len() > MAX_REQUEST {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "",
                false,
            );
        }
    }
    let head_only = head.starts_with(b"HEAD ");
    match parse_request(&head) {
        Request::Metrics => {
            let body = {
                let snapshot = shared
                    .snapshot
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                render_prometheus(&snapshot)
            };
            respond(&mut stream, "200 OK", &body, head_only)
        }
        Request::NotFound => respond(&mut stream, "404 Not Found", "try /metrics\n", head_only),
        Request::BadMethod => respond(&mut stream, "405 Method Not Allowed", "", false),
        Request::Bad => respond(&mut stream, "400 Bad Request", "", false),
    }
}

fn respond(stream: &mut TcpStream, status: &str, body: &str, head_only: bool) -> io::Result<()> {
    let header = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes())?;
    if !head_only {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn requests_are_classified() {
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\n\r\n"),
            Request::Metrics
        );
        assert_eq!(
            parse_request(b"GET /metrics?x=1 HTTP/1.0\r\n"),
            Request::Metrics
        );
        assert_eq!(parse_request(b"GET / HTTP/1.0\r\n"), Request::NotFound);
        assert_eq!(
            parse_request(b"POST /metrics HTTP/1.0\r\n"),
            Request::BadMethod
        );
        assert_eq!(parse_request(b"garbage"), Request::Bad);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn serves_the_published_snapshot() {
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut metrics = RelayMetrics::default();
        metrics.frames_forwarded = 42;
        metrics.bytes_forwarded = 4200;
        metrics.count_drop(DropReason::QueueFull);
        server.publish(MetricsSnapshot {
            relay: "r\"1".into(),
            metrics,
            links: vec![LinkMetrics {
                link: atbus_node::LinkId(7),
                peer: "b".into(),
                relay: false,
                frames_in: 1,
                frames_out: 2,
                bytes_out: 3,
                queued_frames: 4,
                queued_bytes: 5,
                dropped_queue_full: 6,
                blocked: true,
            }],
            queue_delays: {
                let mut q = crate::QueueDelays::new(1);
                let now = std::time::Instant::now();
                q.record(
                    now,
                    "b",
                    [Duration::from_micros(30), Duration::from_millis(2)],
                );
                q.record(now, "c", [Duration::from_secs(3)]);
                q.series()
            },
        });
        let reply = get(server.local_addr(), "GET /metrics HTTP/1.0\r\n\r\n");
        assert!(reply.starts_with("HTTP/1.0 200 OK\r\n"), "{reply}");
        let body = reply.split("\r\n\r\n").nth(1).unwrap();
        let len: usize = reply
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, body.len());
        assert!(body.contains("atbus_relay_frames_forwarded_total{relay=\"r\\\"1\"} 42\n"));
        assert!(body.contains("atbus_relay_bytes_forwarded_total{relay=\"r\\\"1\"} 4200\n"));
        assert!(body.contains(
            "atbus_relay_frames_dropped_total{relay=\"r\\\"1\",reason=\"queue_full\"} 1\n"
        ));
        assert!(body.contains("atbus_relay_links{relay=\"r\\\"1\",peer_kind=\"node\"} 1\n"));
        assert!(body.contains(
            "atbus_relay_link_queued_bytes{relay=\"r\\\"1\",link=\"7\",peer=\"b\",peer_kind=\"node\"} 5\n"
        ));
        assert!(body.contains("atbus_relay_link_blocked{relay=\"r\\\"1\",link=\"7\",peer=\"b\",peer_kind=\"node\"} 1\n"));
        let delay = "atbus_relay_queue_delay_seconds";
        let b = "relay=\"r\\\"1\",destination=\"b\"";
        for (le, n) in [("0.00001", 0), ("0.00005", 1), ("0.0025", 2), ("+Inf", 2)] {
            let line = format!("{delay}_bucket{{{b},le=\"{le}\"}} {n}\n");
            assert!(body.contains(&line), "{line}{body}");
        }
        assert!(body.contains(&format!("{delay}_sum{{{b}}} 0.002030000\n")));
        assert!(body.contains(&format!("{delay}_count{{{b}}} 2\n")));
        let other = "relay=\"r\\\"1\",destination=\"other\"";
        assert!(body.contains(&format!("{delay}_bucket{{{other},le=\"1\"}} 0\n")));
        assert!(body.contains(&format!("{delay}_bucket{{{other},le=\"+Inf\"}} 1\n")));
        assert!(body.contains(&format!("{delay}_sum{{{other}}} 3.000000000\n")));
        // Every sample line is NAME{LABELS} VALUE with a TYPE line before its family (a
        // histogram's samples add _bucket, _sum, _count to its name).
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().unwrap() >= 0.0, "{line}");
            let name = series.split('{').next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| body.contains(&format!("# TYPE {f} histogram")))
                .unwrap_or(name);
            assert!(body.contains(&format!("# TYPE {family} ")), "{line}");
        }
        let missing = get(server.local_addr(), "GET /other HTTP/1.0\r\n\r\n");
        assert!(missing.starts_with("HTTP/1.0 404 "), "{missing}");
        let post = get(server.local_addr(), "POST /metrics HTTP/1.0\r\n\r\n");
        assert!(post.starts_with("HTTP/1.0 405 "), "{post}");
        server.stop();
    }
}
