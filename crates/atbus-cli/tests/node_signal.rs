//! `atbus node` stops cleanly on SIGTERM and SIGINT: the signal wakes its loop, it shuts down
//! gracefully and exits with status 0 — with a client's traffic behind it, and idle.

mod relay_procs;

use std::process::{Command, ExitStatus};
use std::time::Duration;

use relay_procs::{NodeProc, start_node};

/// Sends `signal` (a `kill` name) to the node and waits for it to exit, at most 20 s.
fn signal_and_wait(node: &mut NodeProc, signal: &str) -> ExitStatus {
    relay_procs::signal(&mut node.child.0, signal, Duration::from_secs(20))
}

#[test]
fn sigterm_after_traffic_exits_cleanly() {
    let mut node = start_node("sig-term", &["tcp://127.0.0.1:0"], &[]);
    let url = node.url().to_owned();
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
    let status = signal_and_wait(&mut node, "TERM");
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn sigint_when_idle_exits_cleanly() {
    let mut node = start_node("sig-int", &["tcp://127.0.0.1:0"], &[]);
    let status = signal_and_wait(&mut node, "INT");
    assert!(status.success(), "exit status {status:?}");
}
