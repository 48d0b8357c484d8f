//! The end-to-end handshake through a relay with real processes over TCP on loopback:
//! `atbus send` → `atbus relay` → echo `atbus node`, with access tokens. The relay accepts
//! both nodes' link tokens, but the echo node holds key `k1` with another secret than the
//! sender: the sender's session through the relay is refused end to end, with the reason on
//! both ends; a sender proving the key both share gets its messages echoed and verified.

mod relay_procs;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use relay_procs::{Guard, free_port, start_relay, terminate};

const LINK_ONLY: &str = "k1:secret-the-sender-and-relay-share";
const ECHO_K1: &str = "k1:another-secret-with-the-same-key-id";
const SHARED: &str = "k2:secret-the-echo-node-and-sender-share";

/// `atbus send` through `relay` at `url` to `echo-e`, with `extra` options; (exit success,
/// stdout, stderr).
fn send(url: &str, relay: &str, token: &str, count: u32, extra: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_atbus"))
        .args(["send", "--name", "sender-e", "--to", "echo-e"])
        .args(["--connect", url, "--upstream-relay", relay])
        .args(["--count", &count.to_string(), "--size", "100"])
        .args(["--verify", "--json", "--timeout", "20"])
        .args(["--token", token])
        .args(extra)
        .env_remove("ATBUS_TOKEN")
        .output()
        .expect("run atbus send");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_wrong_token_end_to_end_is_refused_on_both_ends_and_the_right_one_works() {
    let relay = "relay-e";
    let listen = format!("tcp://127.0.0.1:{}", free_port());
    let r = start_relay(relay, &listen, &["--token", LINK_ONLY, "--token", SHARED]);
    // The echo node links to the relay with its first token (k2) and answers end-to-end
    // handshakes for k2 and for k1, whose secret differs from the sender's.
    let mut echo = Command::new(env!("CARGO_BIN_EXE_atbus"))
        .args(["node", "--name", "echo-e", "--echo"])
        .args(["--listen", "tcp://127.0.0.1:0"])
        .args(["--connect", &r.url, "--upstream-relay", relay])
        .args(["--token", SHARED, "--token", ECHO_K1])
        .env_remove("ATBUS_TOKEN")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start atbus node");
    let mut out = BufReader::new(echo.stdout.take().expect("stdout"));
    let mut err = echo.stderr.take().expect("stderr");
    let mut echo = Guard(echo);
    let mut first = String::new();
    out.read_line(&mut first).expect("read");
    assert!(first.starts_with("listening on "), "{first}");
    let logs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });

    // The echo node needs a moment to link to the relay; a send before that finds no route.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (ok, stdout, stderr) = loop {
        let attempt = send(&r.url, relay, LINK_ONLY, 10, &[]);
        if attempt.2.contains("end-to-end") || Instant::now() > deadline {
            break attempt;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(!ok, "a wrong end-to-end token must fail: {stdout} {stderr}");
    assert!(
        stderr.contains("end-to-end handshake with \"echo-e\" through the relay failed")
            && stderr.contains("does not verify end to end"),
        "the sender says why: {stderr}"
    );

    let (ok, stdout, stderr) = send(&r.url, relay, SHARED, 200, &[]);
    assert!(ok, "the shared token works end to end: {stdout} {stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["first_hop"], relay, "{report}");

    assert!(terminate(&mut echo).success());
    let logs = logs.join().expect("log reader");
    assert!(
        logs.contains("end-to-end handshake through the relay failed")
            && logs.contains("sender-e")
            && logs.contains("does not verify end to end"),
        "the echo node logs the refusal with the reason: {logs}"
    );
    let mut r = r.child;
    assert!(terminate(&mut r).success());
}

/// `--encrypt psk` at both ends of a session that runs only through a relay: the session seals
/// with the end-to-end handshake's keys, every echo is verified and the summary says encrypted.
#[test]
fn an_encrypted_session_through_a_relay_is_sealed_end_to_end() {
    let relay = "relay-x";
    let listen = format!("tcp://127.0.0.1:{}", free_port());
    let r = start_relay(relay, &listen, &["--token", SHARED]);
    let mut echo = Command::new(env!("CARGO_BIN_EXE_atbus"))
        .args(["node", "--name", "echo-e", "--echo", "--encrypt", "psk"])
        .args(["--listen", "tcp://127.0.0.1:0"])
        .args(["--connect", &r.url, "--upstream-relay", relay])
        .args(["--token", SHARED])
        .env_remove("ATBUS_TOKEN")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start atbus node");
    let mut out = BufReader::new(echo.stdout.take().expect("stdout"));
    let mut echo = Guard(echo);
    let mut first = String::new();
    out.read_line(&mut first).expect("read");
    assert!(first.starts_with("listening on "), "{first}");

    // The echo node needs a moment to link to the relay; a send before that finds no route.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (ok, stdout, stderr) = loop {
        let attempt = send(&r.url, relay, SHARED, 200, &["--encrypt", "psk"]);
        if attempt.0 || Instant::now() > deadline {
            break attempt;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(ok, "an encrypted relayed session works: {stdout} {stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["encrypted"], true, "{report}");
    assert_eq!(report["first_hop"], relay, "{report}");
    assert!(terminate(&mut echo).success());
    let mut r = r.child;
    assert!(terminate(&mut r).success());
}
