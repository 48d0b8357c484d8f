//! Authentication modes between real processes over TCP and Unix sockets: `atbus node --auth
//! …` with a token key ring, `atbus send` with signed tokens (accepted; each defect refused
//! with its reason printed), a stream outside the token refused, 0-RTT early data (refused
//! while the node's replay guard is cold, accepted after), and anonymous clients.

mod relay_procs;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use atbus_auth::{StreamSet, TokenClaims, TokenKey, TokenKeyring};
use base64::Engine as _;
use relay_procs::{NodeProc, report, send_json, start_node};

const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// Starts `atbus node --name echo --echo --listen LISTEN EXTRA…`.
fn start_echo(listen: &str, extra: &[&str]) -> NodeProc {
    start_node("echo", &[listen], extra)
}

fn keyring_file(dir: &Path) -> String {
    let path = dir.join("keys");
    std::fs::write(&path, format!("# signing keys\nk1:{SECRET}\n")).unwrap();
    path.to_str().unwrap().to_owned()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token JSON file as `atbus token issue --json` writes it.
fn issue_cli(dir: &Path, name: &str, streams: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_atbus"))
        .args(["token", "issue", "--key-id", "k1", "--secret", SECRET])
        .args([
            "--name",
            name,
            "--streams",
            streams,
            "--ttl",
            "10m",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join(format!("{name}-{streams}.json"));
    std::fs::write(&path, &out.stdout).unwrap();
    path.to_str().unwrap().to_owned()
}

/// A token made with the library (for claims `atbus token issue` refuses to make), as
/// `(text, holder secret base64url)`.
fn issue_lib(key_id: &str, name: &str, issued_at: u64, expires_at: u64) -> (String, String) {
    let mut ring = TokenKeyring::new();
    ring.insert(TokenKey::new(key_id, SECRET.as_bytes().to_vec()).unwrap())
        .unwrap();
    let t = ring
        .issue(&TokenClaims {
            name: name.into(),
            namespace: String::new(),
            streams: StreamSet::parse("0-3").unwrap(),
            issued_at,
            expires_at,
            nonce: [4; 16],
        })
        .unwrap();
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t.holder_secret.0);
    (t.to_text(), secret)
}

fn send(url: &str, name: &str, args: &[&str]) -> Output {
    send_json(url, name, args)
}

fn assert_verified(out: &Output, count: u64) -> serde_json::Value {
    let r = report(out);
    assert!(
        out.status.success(),
        "{r} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(r["received"], count, "{r}");
    assert_eq!(r["verified"], true, "{r}");
    r
}

fn assert_refused(out: &Output, reason: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted, expected {reason}");
    assert!(stderr.contains(reason), "expected {reason} in {stderr:?}");
}

#[test]
fn signed_tokens_over_tcp_accepted_defects_refused_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring_file(dir.path());
    let node = start_echo(
        "tcp://127.0.0.1:0",
        &["--auth", "1rtt", "--token-keyring", &keys],
    );
    // Accepted: the JSON file of `atbus token issue --json`, and --token with --holder-secret.
    let file = issue_cli(dir.path(), "client", "0-3");
    assert_verified(
        &send(
            node.url(),
            "client",
            &["--token-file", &file, "--count", "20", "--streams", "4"],
        ),
        20,
    );
    let (text, secret) = issue_lib("k1", "client", now() - 5, now() + 600);
    assert_verified(
        &send(
            node.url(),
            "client",
            &["--token", &text, "--holder-secret", &secret, "--count", "5"],
        ),
        5,
    );
    // Refused, each with its reason (the node's clock-skew allowance is 30 s).
    let cases = [
        (
            "token-expired",
            issue_lib("k1", "client", now() - 7200, now() - 3600),
        ),
        (
            "token-not-yet-valid",
            issue_lib("k1", "client", now() + 3600, now() + 7200),
        ),
        (
            "token-unknown-key-id",
            issue_lib("k2", "client", now() - 5, now() + 600),
        ),
        (
            "token-name-mismatch",
            issue_lib("k1", "other", now() - 5, now() + 600),
        ),
    ];
    for (reason, (text, secret)) in cases {
        assert_refused(
            &send(
                node.url(),
                "client",
                &["--token", &text, "--holder-secret", &secret, "--count", "1"],
            ),
            reason,
        );
    }
    // Tampered: one character of the signature changed.
    let (mut text, secret) = issue_lib("k1", "client", now() - 5, now() + 600);
    let last = text.pop().unwrap();
    text.push(if last == 'A' { 'Q' } else { 'A' });
    assert_refused(
        &send(
            node.url(),
            "client",
            &["--token", &text, "--holder-secret", &secret, "--count", "1"],
        ),
        "token-tampered",
    );
    // Truncated and oversized tokens never leave the client: it reads their layout first.
    let (text, secret) = issue_lib("k1", "client", now() - 5, now() + 600);
    let bytes = atbus_auth::token::from_text(&text).unwrap();
    let short = atbus_auth::token::to_text(&bytes[..bytes.len() - 5]);
    assert_refused(
        &send(
            node.url(),
            "client",
            &["--token", &short, "--holder-secret", &secret],
        ),
        "truncated",
    );
    let huge = format!("atbus1.{}", "A".repeat(2000));
    assert_refused(
        &send(
            node.url(),
            "client",
            &["--token", &huge, "--holder-secret", &secret],
        ),
        "limit",
    );
    // Without any credential the 1rtt node refuses.
    assert_refused(
        &send(node.url(), "client", &["--count", "1"]),
        "AUTH_FAILED",
    );
}

#[test]
fn a_stream_outside_the_token_is_refused_over_unix() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring_file(dir.path());
    let sock = format!("unix://{}", dir.path().join("echo.sock").display());
    let node = start_echo(&sock, &["--token-keyring", &keys]);
    let file = issue_cli(dir.path(), "client", "0");
    // Stream 0 only: fine.
    assert_verified(
        &send(
            node.url(),
            "client",
            &["--token-file", &file, "--count", "4"],
        ),
        4,
    );
    // Messages round robin on streams 0 and 1: the first packet on stream 1 closes the link.
    assert_refused(
        &send(
            node.url(),
            "client",
            &["--token-file", &file, "--count", "4", "--streams", "2"],
        ),
        "stream-not-allowed",
    );
}

#[test]
fn zero_rtt_early_data_is_delivered_once_cold_or_warm() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring_file(dir.path());
    let node = start_echo(
        "tcp://127.0.0.1:0",
        &[
            "--auth",
            "0rtt",
            "--token-keyring",
            &keys,
            "--zero-rtt-window",
            "2",
        ],
    );
    let file = issue_cli(dir.path(), "client", "0-3");
    let args = [
        "--token-file",
        &file,
        "--early-data",
        "--count",
        "10",
        "--window",
        "4",
        "--streams",
        "2",
    ];
    // Just started: the replay guard is cold, 0-RTT is refused and the data goes again after
    // the handshake — every echo exactly once, in order.
    let cold = assert_verified(&send(node.url(), "client", &args), 10);
    assert_eq!(cold["early_data_accepted"], false, "{cold}");
    std::thread::sleep(Duration::from_millis(2500));
    let warm = assert_verified(&send(node.url(), "client", &args), 10);
    assert_eq!(warm["early_data_accepted"], true, "{warm}");
    // A 1rtt node never takes early data, and nothing is lost.
    let one = start_echo(
        "tcp://127.0.0.1:0",
        &["--auth", "1rtt", "--token-keyring", &keys],
    );
    let r = assert_verified(&send(one.url(), "client", &args), 10);
    assert_eq!(r["early_data_accepted"], false, "{r}");
}

#[test]
fn anonymous_clients_get_an_assigned_name_and_cannot_claim_one() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring_file(dir.path());
    let node = start_echo(
        "tcp://127.0.0.1:0",
        &[
            "--anonymous",
            "--token-keyring",
            &keys,
            "--upstream-relay",
            "relay-1",
        ],
    );
    let a = assert_verified(
        &send(node.url(), "ignored", &["--anonymous", "--count", "5"]),
        5,
    );
    let b = assert_verified(
        &send(node.url(), "ignored", &["--anonymous", "--count", "5"]),
        5,
    );
    let (na, nb) = (
        a["assigned_name"].as_str().unwrap(),
        b["assigned_name"].as_str().unwrap(),
    );
    assert!(na.starts_with("anon-"), "{a}");
    assert_ne!(na, nb);
    // Claiming a configured name (the trusted relay's) is refused; so is any other claim
    // without credentials on this 1rtt node.
    assert_refused(
        &send(node.url(), "relay-1", &["--count", "1"]),
        "name-taken",
    );
    assert_refused(
        &send(node.url(), "someone", &["--count", "1"]),
        "anonymous-name-claimed",
    );
    // Anonymous peers are held to streams 0-15.
    assert_refused(
        &send(
            node.url(),
            "x",
            &["--anonymous", "--count", "20", "--streams", "20"],
        ),
        "stream-not-allowed",
    );
}
