//! Real processes for the binary tests: start `atbus relay` on a given or free port, echo
//! `atbus node`s (alone or linked to a relay), signal and wait for them, scrape a relay's
//! `/metrics`, read a process's memory from `/proc`; run `atbus send` against an echo node and
//! read its JSON summary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub mod logged;

/// Kills the child if a test fails before it stopped it.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Guard {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.0.try_wait().expect("try_wait").is_none()
    }
}

/// One trimmed line of a child's standard output.
pub fn line(out: &mut BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    out.read_line(&mut line).expect("read stdout");
    line.trim().to_owned()
}

/// The rest of the next line of a child's standard output after `prefix`; panics on any other
/// line.
pub fn expect_line(out: &mut BufReader<ChildStdout>, prefix: &str) -> String {
    let line = line(out);
    line.strip_prefix(prefix)
        .unwrap_or_else(|| panic!("expected {prefix:?}…, got {line:?}"))
        .to_owned()
}

/// Starts `program ARGS` with its standard output piped, its standard error discarded and no
/// `ATBUS_TOKEN` from the test's environment.
pub fn spawn(program: &str, args: &[&str]) -> (Guard, BufReader<ChildStdout>) {
    let mut child = Command::new(program)
        .args(args)
        .env_remove("ATBUS_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    let out = BufReader::new(child.stdout.take().expect("stdout"));
    (Guard(child), out)
}

/// A running `atbus node --echo`.
pub struct NodeProc {
    /// The process.
    pub child: Guard,
    /// The URLs it bound, in `--listen` order.
    pub urls: Vec<String>,
    /// Its standard error, when started by [`start_node_logged`].
    log: Option<ChildStderr>,
}

impl NodeProc {
    /// The first bound URL.
    pub fn url(&self) -> &str {
        &self.urls[0]
    }

    /// Kills the node and returns what it wrote to standard error (empty unless started by
    /// [`start_node_logged`]).
    pub fn stop(mut self) -> String {
        let _ = self.child.0.kill();
        let mut err = String::new();
        if let Some(mut log) = self.log.take() {
            let _ = log.read_to_string(&mut err);
        }
        let _ = self.child.0.wait();
        err
    }
}

/// Starts `atbus node --name NAME --echo` with a `--listen` for each of `listen`, then `extra`;
/// returns once it printed every bound URL.
pub fn start_node(name: &str, listen: &[&str], extra: &[&str]) -> NodeProc {
    start_node_with(name, listen, extra, Stdio::null())
}

/// As [`start_node`], keeping the node's standard error for [`NodeProc::stop`] (for tests that
/// read what the node logged; it must not log more than a pipe holds).
pub fn start_node_logged(name: &str, listen: &[&str], extra: &[&str]) -> NodeProc {
    start_node_with(name, listen, extra, Stdio::piped())
}

fn start_node_with(name: &str, listen: &[&str], extra: &[&str], stderr: Stdio) -> NodeProc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_atbus"))
        .args(["node", "--name", name, "--echo"])
        .args(listen.iter().flat_map(|url| ["--listen", url]))
        .args(extra)
        .env_remove("ATBUS_TOKEN")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("start atbus node: {e}"));
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let log = child.stderr.take();
    let child = Guard(child);
    let urls = listen
        .iter()
        .map(|_| expect_line(&mut out, "listening on "))
        .collect();
    NodeProc { child, urls, log }
}

/// Runs `atbus send --name NAME --connect URL --to echo --json --verify --timeout 20 ARGS`.
pub fn send_json(url: &str, name: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_atbus"))
        .args(["send", "--name", name, "--connect", url, "--to", "echo"])
        .args(["--json", "--verify", "--timeout", "20"])
        .args(args)
        .env_remove("ATBUS_TOKEN")
        .output()
        .expect("run atbus send")
}

/// The JSON summary `atbus send --json` printed.
pub fn report(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout:?} {}", String::from_utf8_lossy(&out.stderr)))
}

/// Sends `signal` (a `kill` name: `TERM`, `INT`) to the child and waits at most `limit` for it
/// to exit.
pub fn signal(child: &mut Child, signal: &str, limit: Duration) -> ExitStatus {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} failed");
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "no exit after SIG{signal}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local address").port()
}

/// A running relay: process, listen URL, metrics URL.
pub struct RelayProc {
    /// The process.
    pub child: Guard,
    /// Where nodes connect.
    pub url: String,
    /// `http://HOST:PORT/metrics`.
    pub metrics: String,
}

/// Starts `atbus relay --name NAME --listen LISTEN --metrics-listen 127.0.0.1:0 EXTRA…`; `None`
/// when it exited before printing its addresses (the port was taken, for instance).
pub fn try_start_relay(name: &str, listen: &str, extra: &[&str]) -> Option<RelayProc> {
    let mut args = vec!["relay", "--name", name, "--listen", listen];
    args.extend(["--metrics-listen", "127.0.0.1:0"]);
    args.extend_from_slice(extra);
    try_start_relay_program(env!("CARGO_BIN_EXE_atbus"), &args)
}

/// Starts the relay binary `program` with `args` (which name its listen and metrics
/// addresses); `None` when it exited before printing both.
pub fn try_start_relay_program(program: &str, args: &[&str]) -> Option<RelayProc> {
    let (child, mut out) = spawn(program, args);
    let url = line(&mut out).strip_prefix("listening on ")?.to_owned();
    let metrics = line(&mut out).strip_prefix("metrics on ")?.to_owned();
    Some(RelayProc {
        child,
        url,
        metrics,
    })
}

/// As [`try_start_relay`], retried for up to 10 s (a port just released may still be bound).
pub fn start_relay(name: &str, listen: &str, extra: &[&str]) -> RelayProc {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(r) = try_start_relay(name, listen, extra) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "relay {name} does not start on {listen}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `atbus node --echo` linked to the relay `relay` at `relay_url` (redialled with backoff).
pub fn start_echo(name: &str, relay: &str, relay_url: &str) -> Guard {
    let extra = ["--connect", relay_url, "--upstream-relay", relay];
    start_node(name, &["tcp://127.0.0.1:0"], &extra).child
}

/// `GET /metrics` over a plain TCP connection; the body, or `None` when nobody answers.
pub fn try_scrape(metrics_url: &str) -> Option<String> {
    let rest = metrics_url
        .strip_prefix("http://")?
        .strip_suffix("/metrics")?;
    let mut s = TcpStream::connect(rest).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    assert!(reply.starts_with("HTTP/1.0 200 OK\r\n"), "{reply}");
    reply
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
}

/// `GET /metrics`; panics when the endpoint does not answer.
pub fn scrape(metrics_url: &str) -> String {
    try_scrape(metrics_url).unwrap_or_else(|| panic!("no answer from {metrics_url}"))
}

/// The value of the sample `series` (name with labels) in a scrape.
pub fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The value of the counter `series` (name with labels) in a scrape, as a whole number.
pub fn counter(body: &str, series: &str) -> Option<u64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `atbus_relay_frames_forwarded_total` of relay `relay` in a scrape.
pub fn forwarded(body: &str, relay: &str) -> u64 {
    sample(
        body,
        &format!("atbus_relay_frames_forwarded_total{{relay=\"{relay}\"}}"),
    )
    .expect("the forwarded counter") as u64
}

/// A field of `/proc/PID/status` in KiB (`VmHWM`, `VmRSS`).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(field)?
            .strip_prefix(':')?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    })
}

/// Sends SIGTERM and waits at most 20 s.
pub fn terminate(child: &mut Guard) -> ExitStatus {
    signal(&mut child.0, "TERM", Duration::from_secs(20))
}
