//! The relay service with real processes on loopback: `atbus relay` (and `atbus-relay`), an
//! echo `atbus node` linked to it, and `atbus send` through it. Every echo is verified, the
//! relay's `/metrics` (scraped over HTTP) shows the forwarded frames, and SIGTERM stops the
//! relay with status 0.

mod relay_procs;

use std::process::Command;
use std::time::{Duration, Instant};

use relay_procs::{counter, scrape, start_echo, terminate, try_start_relay_program};

/// Relay, echo node and sender; checks the sender's summary and the relay's metrics.
fn relayed_echo(program: &str, subcommand: &[&str], relay: &str) {
    let mut args: Vec<&str> = subcommand.to_vec();
    args.extend(["--name", relay, "--namespace", "ns1"]);
    args.extend(["--listen", "tcp://127.0.0.1:0"]);
    args.extend(["--metrics-listen", "127.0.0.1:0"]);
    let relay_procs::RelayProc {
        child: mut relay_proc,
        url: relay_url,
        metrics: metrics_url,
    } = try_start_relay_program(program, &args).expect("the relay prints its addresses");
    let before = scrape(&metrics_url);
    let series = format!("atbus_relay_frames_forwarded_total{{relay=\"{relay}\"}}");
    assert_eq!(counter(&before, &series), Some(0), "{before}");
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
        if counter(&body, &series).is_some_and(|v| v > 0) || Instant::now() >= deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let forwarded = counter(&body, &series).expect("the forwarded counter");
    assert!(forwarded > 0, "forwarded {forwarded}:\n{body}");
    let bytes = counter(
        &body,
        &format!("atbus_relay_bytes_forwarded_total{{relay=\"{relay}\"}}"),
    )
    .expect("the bytes counter");
    // Every message and every echo crossed the relay: their payload at least.
    assert!(bytes >= 2 * count * 200, "bytes {bytes}");
    let forged =
        format!("atbus_relay_frames_dropped_total{{relay=\"{relay}\",reason=\"forged_source\"}}");
    assert_eq!(counter(&body, &forged), Some(0), "{body}");
    // The echo node is still linked (the sender left).
    let links = format!("atbus_relay_links{{relay=\"{relay}\",peer_kind=\"node\"}}");
    assert!(counter(&body, &links).is_some_and(|n| n >= 1), "{body}");
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
