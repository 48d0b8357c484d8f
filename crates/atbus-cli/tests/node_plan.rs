//! A long-lived `atbus node` that plans per destination, with real processes and a real etcd:
//! node `a` in ns1 (`--discovery`, `--upstream-relay relay1`, `--stdin`) sends to names it has
//! no session with. To `c` in its own namespace the planner goes direct (neither relay's
//! `atbus_relay_frames_forwarded_total` moves); to `b` in ns2, known only by name, it goes
//! through its upstream relay (relay1 → relay2 → b, both counters rise); with
//! `--relay-preference target` another node goes through b's advertised relay2. Every echo is
//! checked line by line. Fails (never skips) when `etcd` is missing.

mod relay_procs;

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use atbus_discovery_etcd::testing::{EtcdProcess as Etcd, free_port};
use relay_procs::{counter, scrape};

/// A child process killed when dropped; standard output read by a thread, standard error in a
/// file.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    fn start(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let stderr = dir.path().join("stderr");
        let mut child = Command::new(env!("CARGO_BIN_EXE_atbus"))
            .args(args)
            .env_remove("ATBUS_TOKEN")
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start atbus");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                if tx.send(line.trim().to_owned()).is_err() {
                    break;
                }
            }
        });
        Proc {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The next line of standard output (within 20 s).
    fn line(&self) -> String {
        match self.lines.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!("no output within 20 s; log:\n{}", self.log()),
            Err(RecvTimeoutError::Disconnected) => {
                panic!("the process ended; log:\n{}", self.log())
            }
        }
    }

    /// The rest of the next line after `prefix`.
    fn expect(&self, prefix: &str) -> String {
        let line = self.line();
        line.strip_prefix(prefix)
            .unwrap_or_else(|| panic!("expected {prefix:?}…, got {line:?}; log:\n{}", self.log()))
            .to_owned()
    }

    fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write stdin");
        stdin.flush().expect("flush stdin");
    }

    fn terminate(&mut self) -> Option<i32> {
        relay_procs::signal(&mut self.child, "TERM", Duration::from_secs(10)).code()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Relay {
    proc: Proc,
    name: String,
    metrics: String,
}

impl Relay {
    fn start(spec: &str, name: &str, ns: &str, extra: &[&str]) -> Self {
        let url = format!("tcp://127.0.0.1:{}", free_port());
        let mut args = vec![
            "relay",
            "--name",
            name,
            "--namespace",
            ns,
            "--listen",
            &url,
            "--gateway",
            &url,
            "--discovery",
            spec,
            "--peer-relay-selector",
            "kind=relay",
            "--metrics-listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let proc = Proc::start(&args);
        assert_eq!(proc.expect("listening on "), url);
        let metrics = proc.expect("metrics on ");
        assert!(proc.line().starts_with(&format!("registered {name} in ")));
        Relay {
            proc,
            name: name.to_owned(),
            metrics,
        }
    }

    fn metric(&self, series: &str) -> u64 {
        let series = series.replace("RELAY", &self.name);
        let body = scrape(&self.metrics);
        counter(&body, &series).unwrap_or_else(|| panic!("no {series} in\n{body}"))
    }

    /// Frames forwarded so far, once the endpoint caught up (it is at most 100 ms stale).
    fn forwarded(&self) -> u64 {
        std::thread::sleep(Duration::from_millis(300));
        self.metric("atbus_relay_frames_forwarded_total{relay=\"RELAY\"}")
    }
}

/// `atbus node` in `ns` registered in `spec`.
fn node(spec: &str, name: &str, ns: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        "node",
        "--name",
        name,
        "--namespace",
        ns,
        "--listen",
        "tcp://127.0.0.1:0",
        "--discovery",
        spec,
    ];
    args.extend_from_slice(extra);
    let proc = Proc::start(&args);
    assert!(proc.line().starts_with("listening on "));
    proc
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends `n` lines to `to` from `sender` and checks the route taken and every echo, in order.
fn exchange(sender: &mut Proc, to: &str, n: usize, route: &str) {
    for i in 0..n {
        sender.say(&format!("{to} {to}-message-{i}"));
    }
    assert_eq!(sender.expect(&format!("route to {to}: ")), route);
    for i in 0..n {
        assert_eq!(
            sender.expect(&format!("from {to} stream 1: ")),
            format!("{to}-message-{i}")
        );
    }
}

#[test]
fn a_running_node_plans_each_destination_direct_or_through_relays() {
    let etcd = Etcd::start();
    let spec = etcd.spec();
    let mut relay2 = Relay::start(&spec, "relay2", "ns2", &[]);
    let mut relay1 = Relay::start(&spec, "relay1", "ns1", &["--upstream-relay", "relay2"]);
    let mut b = node(
        &spec,
        "b",
        "ns2",
        &["--echo", "--advertise-relay", "relay2"],
    );
    let mut c = node(&spec, "c", "ns1", &["--echo"]);
    let relay_links = "atbus_relay_links{relay=\"RELAY\",peer_kind=\"relay\"}";
    let node_links = "atbus_relay_links{relay=\"RELAY\",peer_kind=\"node\"}";
    wait_for("relay1 and relay2 linked", Duration::from_secs(10), || {
        relay1.metric(relay_links) >= 1 && relay2.metric(relay_links) >= 1
    });
    wait_for("b linked to relay2", Duration::from_secs(10), || {
        relay2.metric(node_links) >= 1
    });
    let mut a = node(
        &spec,
        "a",
        "ns1",
        &["--upstream-relay", "relay1", "--stdin"],
    );
    wait_for("a linked to relay1", Duration::from_secs(10), || {
        relay1.metric(node_links) >= 1
    });

    // Own namespace: direct, no relay forwards anything.
    let (r1, r2) = (relay1.forwarded(), relay2.forwarded());
    exchange(&mut a, "c", 20, "direct");
    assert_eq!(relay1.forwarded(), r1, "relay1 was not on the path");
    assert_eq!(relay2.forwarded(), r2, "relay2 was not on the path");

    // Another namespace, known by name only: a → relay1 → relay2 → b.
    exchange(&mut a, "b", 20, "via relay1");
    let (r1_b, r2_b) = (relay1.forwarded(), relay2.forwarded());
    assert!(r1_b > r1, "relay1 forwarded nothing: {r1} → {r1_b}");
    assert!(r2_b > r2, "relay2 forwarded nothing: {r2} → {r2_b}");
    // A known destination goes on without a new plan.
    a.say("b again");
    assert_eq!(a.expect("from b stream 1: "), "again");
    assert!(b.log().contains("peer=a"), "b never saw a:\n{}", b.log());

    // A name nobody registered is reported, and the node keeps running.
    a.say("nobody hello");
    let why = a.expect("undeliverable to nobody: ");
    assert!(why.contains("no record named"), "{why}");

    // target: the destination's advertised relay first.
    let mut a2 = node(
        &spec,
        "a2",
        "ns1",
        &[
            "--upstream-relay",
            "relay1",
            "--relay-preference",
            "target",
            "--stdin",
        ],
    );
    exchange(&mut a2, "b", 10, "via relay2");

    let forged = "atbus_relay_frames_dropped_total{relay=\"RELAY\",reason=\"forged_source\"}";
    for r in [&relay1, &relay2] {
        assert_eq!(r.metric(forged), 0, "{}", r.name);
    }
    for p in [
        &mut a,
        &mut a2,
        &mut b,
        &mut c,
        &mut relay1.proc,
        &mut relay2.proc,
    ] {
        assert_eq!(p.terminate(), Some(0));
    }
}
