//! The relay service with real processes on loopback: `atbus relay` (and `atbus-relay`), an
//! echo `atbus node` linked to it, and `atbus send` through it. Every echo is verified, the
//! relay's `/metrics` (scraped over HTTP) shows the forwarded frames, and SIGTERM stops the
//! relay with status 0.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Kills the child if a test fails before it stopped it.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn line(out: &mut BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    out.read_line(&mut line).expect("read stdout");
    line.trim().to_owned()
}

/// Starts a relay binary with `args`; returns it, its listen URL and its metrics URL.
fn start_relay(program: &str, args: &[&str]) -> (Guard, String, String) {
    let mut child = Command::new(program)
        .args(args)
        .args([
            "--listen",
            "tcp://127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .env_remove("ATBUS_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the relay");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let listen = line(&mut out);
    let metrics = line(&mut out);
    let listen = listen
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected line {listen:?}"))
        .to_owned();
    let metrics = metrics
        .strip_prefix("metrics on ")
        .unwrap_or_else(|| panic!("unexpected line {metrics:?}"))
        .to_owned();
    (Guard(child), listen, metrics)
}

/// `atbus node --echo` linked to the relay at `relay_url`.
fn start_echo(name: &str, relay: &str, relay_url: &str) -> Guard {
    let mut child = Command::new(env!("CARGO_BIN_EXE_atbus"))
        .args([
            "node",
            "--name",
            name,
            "--echo",
            "--listen",
            "tcp://127.0.0.1:0",
        ])
        .args(["--connect", relay_url, "--upstream-relay", relay])
        .env_remove("ATBUS_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start atbus node");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    assert!(line(&mut out).starts_with("listening on "));
    Guard(child)
}

/// `GET /metrics` over a plain TCP connection; returns the body.
fn scrape(metrics_url: &str) -> String {
    let rest = metrics_url
        .strip_prefix("http://")
        .expect("http URL")
        .strip_suffix("/metrics")
        .expect("/metrics path");
    let mut s = TcpStream::connect(rest).expect("connect to the metrics port");
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("write");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read");
    assert!(reply.starts_with("HTTP/1.0 200 OK\r\n"), "{reply}");
    reply
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .expect("a body")
}

/// The value of the sample `series` (name with labels) in a scrape.
fn sample(body: &str, series: &str) -> Option<u64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Sends SIGTERM and waits at most 20 s.
fn terminate(child: &mut Guard) -> ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Relay, echo node and sender; checks the sender's summary and the relay's metrics.
fn relayed_echo(program: &str, subcommand: &[&str], relay: &str) {
    let mut args: Vec<&str> = subcommand.to_vec();
    args.extend(["--name", relay, "--namespace", "ns1"]);
    let (mut relay_proc, relay_url, metrics_url) = start_relay(program, &args);
    let before = scrape(&metrics_url);
    let series = format!("atbus_relay_frames_forwarded_total{{relay=\"{relay}\"}}");
    assert_eq!(sample(&before, &series), Some(0), "{before}");
    let mut echo = start_echo("echo-r", relay, &relay_url);
    let count = 500u64;
    let out = Command::new(env!("CARGO_BIN_EXE_atbus"))
        .args([
            "send", "--name", "client-r", "--to", "echo-r", "--verify", "--json",
        ])
        .args(["--connect", &relay_url, "--upstream-relay", relay])
        .args([
            "--count",
            &count.to_string(),
            "--size",
            "200",
            "--streams",
            "3",
        ])
        .args(["--timeout", "30"])
        .env_remove("ATBUS_TOKEN")
        .output()
        .expect("run atbus send");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["received"], count, "{report}");
    assert_eq!(report["first_hop"], relay, "{report}");
    // Counters reach the endpoint within its publish interval.
    let deadline = Instant::now() + Duration::from_secs(5);
    let body = loop {
        let body = scrape(&metrics_url);
        if sample(&body, &series).is_some_and(|v| v > 0) || Instant::now() >= deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let forwarded = sample(&body, &series).expect("the forwarded counter");
    assert!(forwarded > 0, "forwarded {forwarded}:\n{body}");
    let bytes = sample(
        &body,
        &format!("atbus_relay_bytes_forwarded_total{{relay=\"{relay}\"}}"),
    )
    .expect("the bytes counter");
    // Every message and every echo crossed the relay: their payload at least.
    assert!(bytes >= 2 * count * 200, "bytes {bytes}");
    let forged =
        format!("atbus_relay_frames_dropped_total{{relay=\"{relay}\",reason=\"forged_source\"}}");
    assert_eq!(sample(&body, &forged), Some(0), "{body}");
    // The echo node is still linked (the sender left).
    let links = format!("atbus_relay_links{{relay=\"{relay}\",peer_kind=\"node\"}}");
    assert!(sample(&body, &links).is_some_and(|n| n >= 1), "{body}");
    let status = terminate(&mut relay_proc);
    assert_eq!(status.code(), Some(0), "relay exit {status:?}");
    assert_eq!(terminate(&mut echo).code(), Some(0));
}

#[test]
fn atbus_relay_forwards_between_real_processes() {
    relayed_echo(env!("CARGO_BIN_EXE_atbus"), &["relay"], "relay-a");
}

#[test]
fn the_atbus_relay_binary_takes_the_same_arguments() {
    relayed_echo(env!("CARGO_BIN_EXE_atbus-relay"), &[], "relay-b");
}

#[test]
fn a_relay_without_a_name_exits_with_status_1() {
    let out = Command::new(env!("CARGO_BIN_EXE_atbus"))
        .args(["relay", "--listen", "tcp://127.0.0.1:0"])
        .output()
        .expect("run atbus relay");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a name"));
}
