//! A relay killed mid-transfer, with real processes over TCP on loopback: `atbus send` →
//! `atbus relay` → echo `atbus node`. The relay gets SIGKILL while verified messages flow and
//! a new relay process starts on the same address; both nodes redial it with backoff, the
//! sessions retransmit what the dead relay dropped, and `atbus send --verify` reports every
//! message echoed exactly once, in order per stream.

mod relay_procs;

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use relay_procs::{Guard, forwarded, free_port, scrape, start_echo, start_relay, terminate};

/// Waits for a child with piped output; its standard output, standard error and status.
fn finish(child: &mut Guard) -> (String, String, ExitStatus) {
    let mut out = child.0.stdout.take().expect("piped stdout");
    let mut err = child.0.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut stdout = String::new();
    out.read_to_string(&mut stdout).expect("read stdout");
    let status = child.0.wait().expect("wait");
    (stdout, reader.join().expect("stderr reader"), status)
}

#[test]
fn a_relay_killed_mid_transfer_loses_no_message() {
    let relay = "relay-k";
    let listen = format!("tcp://127.0.0.1:{}", free_port());
    let first = start_relay(relay, &listen, &["--namespace", "ns1"]);
    let mut echo = start_echo("echo-k", relay, &first.url);
    let count = 100_000u64;
    let sender = Command::new(env!("CARGO_BIN_EXE_atbus"))
        .args(["send", "--name", "client-k", "--to", "echo-k"])
        .args(["--connect", &first.url, "--upstream-relay", relay])
        .args(["--count", &count.to_string(), "--size", "200"])
        .args(["--streams", "3", "--window", "256"])
        .args(["--verify", "--json", "--timeout", "90"])
        .env_remove("ATBUS_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run atbus send");
    let mut sender = Guard(sender);

    // Let the transfer get going through the first relay, then kill it without warning.
    let deadline = Instant::now() + Duration::from_secs(30);
    let before_kill = loop {
        let n = forwarded(&scrape(&first.metrics), relay);
        if n >= 1_000 {
            break n;
        }
        assert!(Instant::now() < deadline, "no traffic through the relay");
        assert!(sender.running(), "the sender stopped before the kill");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        sender.running(),
        "the transfer ended before the relay was killed"
    );
    let mut first_child = first.child;
    first_child.0.kill().expect("SIGKILL the relay");
    let killed = first_child.0.wait().expect("wait for the relay");
    let killed_at = Instant::now();
    assert_eq!(killed.code(), None, "the relay was killed by a signal");

    // Down for a moment (both nodes fail to redial), then a new relay on the same address.
    std::thread::sleep(Duration::from_millis(300));
    let second = start_relay(relay, &listen, &["--namespace", "ns1"]);
    assert_eq!(second.url, first.url);
    let restarted_after = killed_at.elapsed();

    let (stdout, stderr, status) = finish(&mut sender);
    assert!(status.success(), "{stdout} {stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["received"], count, "{report}");
    assert_eq!(report["corrupted"], 0, "{report}");
    assert_eq!(report["error"], serde_json::Value::Null, "{report}");
    assert_eq!(report["first_hop"], relay, "{report}");

    // The rest of the transfer went through the new relay process.
    let deadline = Instant::now() + Duration::from_secs(5);
    let after = loop {
        let n = forwarded(&scrape(&second.metrics), relay);
        if n > 0 || Instant::now() >= deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(after > 0, "nothing went through the restarted relay");
    println!(
        "relay killed after {before_kill} frames forwarded, restarted {:.0} ms later; \
         the new relay forwarded {after} frames; {} messages of 200 B verified in {:.2} s",
        restarted_after.as_secs_f64() * 1e3,
        report["received"],
        report["elapsed_s"].as_f64().unwrap_or(0.0)
    );
    let mut second_child = second.child;
    assert_eq!(terminate(&mut second_child).code(), Some(0));
    assert_eq!(terminate(&mut echo).code(), Some(0));
}
