//! `atbus node` stops cleanly on SIGTERM and SIGINT: the signal wakes its loop, it shuts down
//! gracefully and exits with status 0 — with a client's traffic behind it, and idle.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Starts `atbus node --echo` on a free TCP port; returns it and its bound URL.
fn start_node(name: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_atbus"))
        .args([
            "node",
            "--name",
            name,
            "--echo",
            "--listen",
            "tcp://127.0.0.1:0",
        ])
        .env_remove("ATBUS_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start atbus node");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read stdout");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .to_owned();
    (child, url)
}

/// Sends `signal` (a `kill` name) to the child and waits for it to exit, at most 20 s.
fn signal_and_wait(child: &mut Child, signal: &str) -> ExitStatus {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} failed");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("atbus node did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigterm_after_traffic_exits_cleanly() {
    let (mut child, url) = start_node("sig-term");
    let out = Command::new(env!("CARGO_BIN_EXE_atbus"))
        .args([
            "send",
            "--name",
            "client",
            "--connect",
            &url,
            "--to",
            "sig-term",
        ])
        .args(["--count", "200", "--verify", "--timeout", "30"])
        .env_remove("ATBUS_TOKEN")
        .output()
        .expect("run atbus send");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = signal_and_wait(&mut child, "TERM");
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn sigint_when_idle_exits_cleanly() {
    let (mut child, _url) = start_node("sig-int");
    let status = signal_and_wait(&mut child, "INT");
    assert!(status.success(), "exit status {status:?}");
}
