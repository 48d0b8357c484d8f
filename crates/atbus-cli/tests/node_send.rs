//! `atbus node --echo` and `atbus send` as real processes on loopback: verified echoes over
//! TCP, Unix sockets and UDP, strict ping-pong, tokens from a file and the environment, and a
//! wrong token refused with an error.

mod relay_procs;

use std::process::{Command, Output};

use relay_procs::{NodeProc, start_node};

/// Starts `atbus node --name echo --echo` listening on `listen`, plus `extra` arguments.
fn start_echo(listen: &[&str], extra: &[&str]) -> NodeProc {
    start_node("echo", listen, extra)
}

/// Runs `atbus send` against `url` with `args` (and `env` set).
fn send(url: &str, args: &[&str], env: Option<(&str, &str)>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_atbus"));
    cmd.args(["send", "--name", "client", "--connect", url, "--to", "echo"])
        .args(args)
        .args(["--timeout", "30"])
        .env_remove("ATBUS_TOKEN");
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    cmd.output().expect("run atbus send")
}

/// Runs `atbus send --json --verify` and checks every echo came back.
fn send_verified(url: &str, count: u64, args: &[&str]) -> serde_json::Value {
    let n = count.to_string();
    let mut all = vec!["--count", &n, "--json", "--verify"];
    all.extend_from_slice(args);
    let out = send(url, &all, None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "atbus send failed: {stdout} {stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(report["sent"], count, "{report}");
    assert_eq!(report["received"], count, "{report}");
    assert_eq!(report["verified"], true, "{report}");
    for key in [
        "elapsed_s",
        "msgs_per_sec",
        "bytes_per_sec",
        "rtt_p50_us",
        "rtt_p99_us",
    ] {
        assert!(report[key].is_number(), "{key} missing: {report}");
    }
    report
}

#[test]
fn tcp_echo_verified() {
    let node = start_echo(&["tcp://127.0.0.1:0"], &[]);
    assert!(node.urls[0].starts_with("tcp://127.0.0.1:"));
    assert!(!node.urls[0].ends_with(":0"));
    send_verified(&node.urls[0], 3000, &["--size", "100", "--streams", "3"]);
    // Larger messages, several fragments each.
    send_verified(&node.urls[0], 200, &["--size", "70000", "--window", "50"]);
}

#[test]
fn unix_echo_verified() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("unix://{}", dir.path().join("echo.sock").display());
    let node = start_echo(&[&url], &[]);
    send_verified(&node.urls[0], 2000, &["--size", "300", "--streams", "2"]);
    // The largest message the default windows allow, and the smallest.
    send_verified(&node.urls[0], 4, &["--size", "1048576"]);
    send_verified(&node.urls[0], 500, &["--size", "1", "--streams", "7"]);
}

#[test]
fn udp_echo_verified() {
    let node = start_echo(&["udp://127.0.0.1:0"], &[]);
    send_verified(&node.urls[0], 1000, &["--size", "1000", "--window", "100"]);
}

#[test]
fn window_one_is_ping_pong() {
    let node = start_echo(&["tcp://127.0.0.1:0"], &[]);
    let report = send_verified(&node.urls[0], 200, &["--window", "1"]);
    assert_eq!(report["window"], 1);
    assert!(
        report["rtt_p50_us"].as_u64().is_some_and(|v| v > 0),
        "{report}"
    );
}

#[test]
fn tokens_from_file_and_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("tokens");
    std::fs::write(
        &file,
        "# rotation: old and new\nold:0123456789abcdef-old\nnew:0123456789abcdef-new\n",
    )
    .expect("write tokens");
    let node = start_echo(
        &["tcp://127.0.0.1:0"],
        &["--token-file", file.to_str().expect("utf-8 path")],
    );
    let url = &node.urls[0];
    let ok = send(
        url,
        &["--count", "50", "--verify"],
        Some(("ATBUS_TOKEN", "new:0123456789abcdef-new")),
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let wrong = send(
        url,
        &["--count", "10", "--token", "new:not-the-right-secret"],
        None,
    );
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("AUTH_FAILED"), "stderr: {stderr}");

    let none = send(url, &["--count", "10"], None);
    assert!(!none.status.success());
    let stderr = String::from_utf8_lossy(&none.stderr);
    assert!(stderr.contains("AUTH_FAILED"), "stderr: {stderr}");
}

#[test]
fn unreachable_peer_fails() {
    // Bind and drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let out = send(&format!("tcp://127.0.0.1:{port}"), &["--count", "1"], None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot connect"), "stderr: {stderr}");
}
