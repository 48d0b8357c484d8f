//! The relay's forwarding rules with real `atbus relay` processes on loopback: two relays that
//! name each other as upstream do not pass a frame for an unknown destination back and forth
//! (no reflection, `UNREACHABLE` at the sender), three relays in a ring stop it at the hop limit
//! (`HOP_LIMIT` at the sender), and a plain node writing hand-built frames on its own TCP link has
//! a forged `source` dropped and its forwarding fields replaced.

mod relay_procs;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use atbus_frame::{FrameLimits, StreamDecoder};
use atbus_node::{Direction, LinkId, LinkKind, Node, NodeConfig, NodeEvent};
use atbus_proto::{FrameMessage, MessageHead, PingData, frame_message::Body};
use relay_procs::{RelayProc, forwarded, sample, scrape, start_relay, terminate};

/// A sample of relay `relay`: `name{relay="RELAY"LABELS}`, 0 when absent.
fn counter(body: &str, name: &str, relay: &str, labels: &str) -> u64 {
    sample(body, &format!("{name}{{relay=\"{relay}\"{labels}}}")).unwrap_or(0.0) as u64
}

/// `atbus_relay_frames_dropped_total` of `relay` for `reason`.
fn drops(body: &str, relay: &str, reason: &str) -> u64 {
    counter(
        body,
        "atbus_relay_frames_dropped_total",
        relay,
        &format!(",reason=\"{reason}\""),
    )
}

/// Frames `relay` received on its links to relays (summed over the per-link counters).
fn frames_in_from_relays(body: &str, relay: &str) -> u64 {
    let prefix = format!("atbus_relay_link_frames_in_total{{relay=\"{relay}\",");
    body.lines()
        .filter(|l| l.starts_with(&prefix) && l.contains("peer_kind=\"relay\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Scrapes `metrics` until `ok` holds (the endpoint is refreshed every 100 ms) or 5 s pass;
/// returns the last body.
fn scrape_until(metrics: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let body = scrape(metrics);
        if ok(&body) || Instant::now() >= deadline {
            return body;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `relay` has `n` links to other relays.
fn wait_relay_links(r: &RelayProc, relay: &str, n: u64) {
    let series = "atbus_relay_links";
    let body = scrape_until(&r.metrics, |b| {
        counter(b, series, relay, ",peer_kind=\"relay\"") == n
    });
    assert_eq!(
        counter(&body, series, relay, ",peer_kind=\"relay\""),
        n,
        "{relay} relay links:\n{body}"
    );
}

/// `atbus send` of a few messages to `to` through `relay` at `url`: exit code, stderr and
/// the JSON report.
fn send_through(url: &str, relay: &str, to: &str) -> (Option<i32>, String, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_atbus"))
        .args(["send", "--name", "sender", "--to", to, "--json"])
        .args(["--connect", url, "--upstream-relay", relay])
        .args(["--count", "5", "--size", "32", "--timeout", "8"])
        .env_remove("ATBUS_TOKEN")
        .output()
        .expect("run atbus send");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout:?} {}", String::from_utf8_lossy(&out.stderr)));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        report,
    )
}

/// The frame counters of every relay, to compare two moments.
fn counters(relays: &[(&RelayProc, &str)]) -> Vec<(u64, u64)> {
    relays
        .iter()
        .map(|(r, name)| {
            let body = scrape(&r.metrics);
            (
                counter(&body, "atbus_relay_frames_received_total", name, ""),
                forwarded(&body, name),
            )
        })
        .collect()
}

/// Nothing moves between the relays once the sender is gone (after the counters settle).
fn assert_quiet(relays: &[(&RelayProc, &str)]) {
    std::thread::sleep(Duration::from_millis(400));
    let before = counters(relays);
    std::thread::sleep(Duration::from_millis(1000));
    let after = counters(relays);
    assert_eq!(before, after, "frames still move between the relays");
}

#[test]
fn two_relays_naming_each_other_upstream_do_not_pass_a_frame_back() {
    let a = start_relay(
        "loop-a",
        "tcp://127.0.0.1:0",
        &["--upstream-relay", "loop-b"],
    );
    let b = start_relay(
        "loop-b",
        "tcp://127.0.0.1:0",
        &["--upstream-relay", "loop-a", "--connect", &a.url],
    );
    wait_relay_links(&a, "loop-a", 1);
    wait_relay_links(&b, "loop-b", 1);

    let (code, stderr, report) = send_through(&a.url, "loop-a", "nobody");
    assert_eq!(code, Some(1), "{stderr} {report}");
    assert_eq!(report["received"], 0, "{report}");
    let error = report["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("relay \"loop-b\" cannot forward to \"nobody\": Unreachable"),
        "{report}"
    );
    assert!(stderr.contains(error), "{stderr}");

    let relays = [(&a, "loop-a"), (&b, "loop-b")];
    assert_quiet(&relays);
    let body_a = scrape(&a.metrics);
    let body_b = scrape(&b.metrics);
    // loop-b does not send the frame back to loop-a (its upstream, where it came from).
    assert!(drops(&body_b, "loop-b", "reflection") >= 1, "{body_b}");
    assert_eq!(drops(&body_b, "loop-b", "hop_limit"), 0, "{body_b}");
    assert_eq!(drops(&body_a, "loop-a", "reflection"), 0, "{body_a}");
    // loop-b wrote nothing but the errors it originated.
    let errors_b = counter(
        &body_b,
        "atbus_relay_forward_errors_sent_total",
        "loop-b",
        "",
    );
    assert!(errors_b >= 1, "{body_b}");
    assert_eq!(forwarded(&body_b, "loop-b"), errors_b, "{body_b}");
    // loop-a forwarded each frame of the sender once, and each error back once.
    let from_sender = counter(&body_a, "atbus_relay_frames_received_total", "loop-a", "")
        - frames_in_from_relays(&body_a, "loop-a");
    assert!(from_sender >= 1, "{body_a}");
    assert!(
        forwarded(&body_a, "loop-a") <= from_sender + errors_b,
        "{body_a}\n{body_b}"
    );
    for (mut r, _) in [(a, ()), (b, ())] {
        assert_eq!(terminate(&mut r.child).code(), Some(0));
    }
}

#[test]
fn a_ring_of_three_relays_ends_at_the_hop_limit() {
    // ring-a → ring-b → ring-c → ring-a: each forwards what it cannot place to the next.
    let a = start_relay(
        "ring-a",
        "tcp://127.0.0.1:0",
        &["--upstream-relay", "ring-b", "--peer-relay", "ring-c"],
    );
    let b = start_relay(
        "ring-b",
        "tcp://127.0.0.1:0",
        &[
            "--upstream-relay",
            "ring-c",
            "--peer-relay",
            "ring-a",
            "--connect",
            &a.url,
        ],
    );
    let c = start_relay(
        "ring-c",
        "tcp://127.0.0.1:0",
        &[
            "--upstream-relay",
            "ring-a",
            "--peer-relay",
            "ring-b",
            "--connect",
            &a.url,
            "--connect",
            &b.url,
        ],
    );
    for (r, name) in [(&a, "ring-a"), (&b, "ring-b"), (&c, "ring-c")] {
        wait_relay_links(r, name, 2);
    }

    let (code, stderr, report) = send_through(&a.url, "ring-a", "nobody");
    assert_eq!(code, Some(1), "{stderr} {report}");
    assert_eq!(report["received"], 0, "{report}");
    let error = report["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("cannot forward to \"nobody\": HopLimit"),
        "{report}"
    );
    assert!(error.contains("the hop limit is 16"), "{report}");

    let relays = [(&a, "ring-a"), (&b, "ring-b"), (&c, "ring-c")];
    assert_quiet(&relays);
    let bodies: Vec<String> = relays.iter().map(|(r, _)| scrape(&r.metrics)).collect();
    let hop_drops: u64 = relays
        .iter()
        .zip(&bodies)
        .map(|((_, name), body)| drops(body, name, "hop_limit"))
        .sum();
    assert!(hop_drops >= 1, "{bodies:#?}");
    let reflections: u64 = relays
        .iter()
        .zip(&bodies)
        .map(|((_, name), body)| drops(body, name, "reflection"))
        .sum();
    assert_eq!(reflections, 0, "{bodies:#?}");
    // Each frame of the sender is forwarded at most 16 times, plus the errors on their way back.
    let from_sender = counter(
        &bodies[0],
        "atbus_relay_frames_received_total",
        "ring-a",
        "",
    ) - frames_in_from_relays(&bodies[0], "ring-a");
    assert!(from_sender >= 1, "{}", bodies[0]);
    let data_forwards: u64 = relays
        .iter()
        .zip(&bodies)
        .map(|((_, name), body)| {
            forwarded(body, name) - counter(body, "atbus_relay_forward_errors_sent_total", name, "")
        })
        .sum();
    assert!(
        data_forwards <= from_sender * 16 + 2 * hop_drops,
        "{data_forwards} forwards for {from_sender} frames: {bodies:#?}"
    );
    for (mut r, _) in [(a, ()), (b, ()), (c, ())] {
        assert_eq!(terminate(&mut r.child).code(), Some(0));
    }
}

/// A sans-IO node on a real TCP connection to a relay; every frame it receives is also decoded
/// here so the test sees the heads as they came off the wire.
struct RawNode {
    node: Node,
    sock: TcpStream,
    link: LinkId,
    tee: StreamDecoder,
    /// Heads of the frames received, in order.
    heads: Vec<MessageHead>,
    events: Vec<NodeEvent>,
    buf: Vec<u8>,
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl RawNode {
    /// Connects `name` to relay `relay` at `url` and completes the handshake.
    fn connect(name: &str, relay: &str, url: &str) -> Self {
        let addr = url.strip_prefix("tcp://").expect("a tcp:// URL");
        let sock = TcpStream::connect(addr).expect("connect to the relay");
        sock.set_nonblocking(true).expect("nonblocking");
        let now = Instant::now();
        let mut config = NodeConfig::new(name);
        config.relays = vec![relay.to_owned()];
        let mut node =
            Node::new(config, now, rand_core::UnwrapErr(rand_core::OsRng)).expect("node");
        let link = node.new_link_id();
        node.handle_link_up(
            now,
            link,
            LinkKind::ByteStream,
            64 * 1024,
            Direction::Outbound,
        );
        let mut raw = Self {
            node,
            sock,
            link,
            tee: StreamDecoder::new(FrameLimits::default()),
            heads: Vec::new(),
            events: Vec::new(),
            buf: Vec::new(),
        };
        let up = raw.pump_until(|r| {
            r.events
                .iter()
                .any(|e| matches!(e, NodeEvent::LinkAccepted { peer, .. } if peer == relay))
        });
        assert!(up, "{name}: no handshake with {relay}: {:?}", raw.events);
        raw
    }

    /// Writes the node's output, reads what arrived, runs its timers.
    fn pump(&mut self) {
        let now = Instant::now();
        self.node.handle_timeout(now, unix_ms());
        let mut buf = std::mem::take(&mut self.buf);
        while let Some((link, n)) = self.node.poll_transmit(now, &mut buf) {
            assert_eq!(link, self.link);
            self.write(&buf[..n]);
        }
        self.buf = buf;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.sock.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    self.tee.feed(&chunk[..n]);
                    while let Ok(Some(frame)) = self.tee.next_frame() {
                        self.heads.extend(frame.head);
                    }
                    self.node
                        .handle_link_bytes(Instant::now(), self.link, &chunk[..n]);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        while let Some(e) = self.node.poll_event() {
            self.events.push(e);
        }
        while self.node.poll_action().is_some() {}
    }

    /// Pumps until `done` holds or 5 s pass; whether it held.
    fn pump_until(&mut self, done: impl Fn(&Self) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            self.pump();
            if done(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// Writes `bytes` whole on the socket.
    fn write(&mut self, mut bytes: &[u8]) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !bytes.is_empty() {
            match self.sock.write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "the relay does not read");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("write: {e}"),
            }
        }
    }
}

/// A ping frame with `head`, encoded as one package.
fn ping(head: MessageHead, id: i64) -> Vec<u8> {
    let frame = FrameMessage {
        head: Some(head),
        body: Some(Body::Ping(PingData {
            ping_id: id,
            timepoint_microseconds: 0,
        })),
    };
    let mut out = Vec::new();
    atbus_frame::encode(&frame, &FrameLimits::default(), &mut out).expect("encodes");
    out
}

#[test]
fn a_plain_node_cannot_forge_its_source_or_the_forwarding_fields() {
    let relay = "rules-r";
    let mut r = start_relay(relay, "tcp://127.0.0.1:0", &[]);
    let mut observer = RawNode::connect("observer", relay, &r.url);
    let mut mallory = RawNode::connect("mallory", relay, &r.url);
    let before = scrape(&r.metrics);
    assert_eq!(drops(&before, relay, "forged_source"), 0, "{before}");

    // Someone else's name as source: dropped. Then its own name with forwarding fields only a
    // relay may write: forwarded with them replaced. Same link, so in this order.
    let forged = ping(
        MessageHead {
            source: "victim".into(),
            destination: "observer".into(),
            ..MessageHead::default()
        },
        1,
    );
    let stamped = ping(
        MessageHead {
            source: "mallory".into(),
            destination: "observer".into(),
            forward_for_source: "victim".into(),
            forward_for_connection_id: 999,
            hop_count: 7,
        },
        2,
    );
    mallory.write(&forged);
    mallory.write(&stamped);
    let got = observer.pump_until(|o| o.heads.iter().any(|h| h.source == "mallory"));
    mallory.pump();
    assert!(got, "the observer got {:?}", observer.heads);
    assert!(
        observer.heads.iter().all(|h| h.source != "victim"),
        "{:?}",
        observer.heads
    );
    let h = observer
        .heads
        .iter()
        .find(|h| h.source == "mallory")
        .expect("mallory's ping");
    assert_eq!(h.destination, "observer");
    assert_eq!(h.forward_for_source, "mallory", "{h:?}");
    assert_ne!(h.forward_for_connection_id, 999, "{h:?}");
    assert_eq!(h.hop_count, 1, "{h:?}");

    let body = scrape_until(&r.metrics, |b| drops(b, relay, "forged_source") >= 1);
    assert_eq!(drops(&body, relay, "forged_source"), 1, "{body}");
    assert_eq!(drops(&body, relay, "hop_limit"), 0, "{body}");
    assert!(forwarded(&body, relay) >= 1, "{body}");
    assert_eq!(terminate(&mut r.child).code(), Some(0));
}
