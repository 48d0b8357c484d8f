//! Content protection between real processes over TCP and Unix sockets: `atbus node --encrypt
//! psk [--compress]` and `atbus send --encrypt psk [--compress]` exchange verified echoes and
//! say so in the JSON summary; mismatched modes are refused with a clear error on both sides;
//! `--encrypt tls` without a CA and `--encrypt psk` without tokens fail before starting.

mod relay_procs;

use std::process::Command;
use std::time::Duration;

use relay_procs::{report, send_json, start_node_logged};

const TOKEN: &str = "k1:0123456789abcdef0123456789abcdef";

fn send(url: &str, args: &[&str]) -> std::process::Output {
    send_json(url, "client", args)
}

fn listen_urls(dir: &std::path::Path) -> [String; 2] {
    [
        "tcp://127.0.0.1:0".to_owned(),
        format!("unix://{}", dir.join("n.sock").display()),
    ]
}

#[test]
fn encrypted_and_compressed_echo_is_verified_over_tcp_and_unix() {
    let dir = tempfile::tempdir().unwrap();
    for listen in listen_urls(dir.path()) {
        let _ = std::fs::remove_file(dir.path().join("n.sock"));
        let node = start_node_logged(
            "echo",
            &[&listen],
            &["--token", TOKEN, "--encrypt", "psk", "--compress"],
        );
        // Compressible messages above the threshold, and small ones.
        for (size, compressed) in [("4096", Some(true)), ("64", None)] {
            let out = send(
                node.url(),
                &[
                    "--token",
                    TOKEN,
                    "--encrypt",
                    "psk",
                    "--compress",
                    "--count",
                    "200",
                    "--size",
                    size,
                ],
            );
            let r = report(&out);
            assert!(out.status.success(), "{listen}: {r}");
            assert_eq!(r["verified"], true, "{listen}: {r}");
            assert_eq!(r["received"], 200, "{listen}: {r}");
            assert_eq!(r["encrypted"], true, "{listen}: {r}");
            // Small messages are compressed only when batched above the threshold (the
            // threshold itself is tested on the session).
            if let Some(c) = compressed {
                assert_eq!(r["compressed"], c, "{listen} size {size}: {r}");
            }
        }
        // Encrypted without compression, padded.
        drop(node);
        let _ = std::fs::remove_file(dir.path().join("n.sock"));
        let node = start_node_logged(
            "echo",
            &[&listen],
            &["--token", TOKEN, "--encrypt", "psk", "--pad"],
        );
        let out = send(
            node.url(),
            &[
                "--token",
                TOKEN,
                "--encrypt",
                "psk",
                "--pad",
                "--count",
                "100",
                "--size",
                "1000",
            ],
        );
        let r = report(&out);
        assert_eq!(r["verified"], true, "{listen}: {r}");
        assert_eq!(r["encrypted"], true, "{listen}: {r}");
        assert_eq!(r["compressed"], false, "{listen}: {r}");
    }
}

#[test]
fn plain_echo_says_not_encrypted() {
    let node = start_node_logged("echo", &["tcp://127.0.0.1:0"], &[]);
    let out = send(node.url(), &["--count", "20"]);
    let r = report(&out);
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(r["encrypted"], false, "{r}");
    assert_eq!(r["compressed"], false, "{r}");
}

#[test]
fn mismatched_modes_are_refused_with_clear_errors_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    for listen in listen_urls(dir.path()) {
        for (node_mode, send_mode) in [("psk", "none"), ("none", "psk")] {
            let _ = std::fs::remove_file(dir.path().join("n.sock"));
            let node = start_node_logged(
                "echo",
                &[&listen],
                &["--token", TOKEN, "--encrypt", node_mode],
            );
            let out = send(
                node.url(),
                &["--token", TOKEN, "--encrypt", send_mode, "--count", "5"],
            );
            std::thread::sleep(Duration::from_millis(200));
            let node_err = node.stop();
            let r = report(&out);
            assert!(!out.status.success(), "{listen}: accepted {r}");
            let error = r["error"].as_str().unwrap_or_default().to_owned();
            for side in [&error, &node_err] {
                assert!(
                    side.contains("encryption-mismatch"),
                    "{listen} node {node_mode} send {send_mode}: {side:?}"
                );
                assert!(side.contains("psk") && side.contains("none"), "{side:?}");
            }
        }
    }
}

#[test]
fn impossible_modes_fail_before_starting() {
    for (cmd, args, expect) in [
        (
            "send",
            vec!["--token", TOKEN, "--encrypt", "tls"],
            "--encrypt tls needs --tls-ca",
        ),
        (
            "send",
            vec!["--encrypt", "psk"],
            "--encrypt psk takes its keys",
        ),
        ("send", vec!["--pad"], "--pad pads sealed content only"),
        (
            "node",
            vec!["--token", TOKEN, "--encrypt", "tls"],
            "--encrypt tls needs --tls-ca",
        ),
        (
            "node",
            vec!["--encrypt", "psk"],
            "--encrypt psk takes its keys",
        ),
    ] {
        let base: Vec<&str> = if cmd == "send" {
            vec![
                "send",
                "--name",
                "c",
                "--connect",
                "tcp://127.0.0.1:9",
                "--to",
                "echo",
            ]
        } else {
            vec!["node", "--name", "echo", "--listen", "tcp://127.0.0.1:0"]
        };
        let out = Command::new(env!("CARGO_BIN_EXE_atbus"))
            .args(&base)
            .args(&args)
            .env_remove("ATBUS_TOKEN")
            .output()
            .expect("run atbus");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd} {args:?}: {stderr}");
        assert!(stderr.contains(expect), "{cmd} {args:?}: {stderr}");
    }
}
