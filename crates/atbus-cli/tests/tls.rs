//! `--encrypt tls` between real processes: `atbus node` and `atbus send` with certificates made
//! at test time (in a temporary directory, never committed) exchange verified, sealed echoes
//! over TCP and UDP; a wrong CA, an expired certificate, mutual TLS without a client
//! certificate and a certificate naming another node each fail with a distinct reason on the
//! client (exit code and message) and in the server's log; bad TLS flags fail before starting.

mod relay_procs;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use atbus_auth::tls::test_certs::TestCa;
use relay_procs::{NodeProc, report, send_json, start_node_logged};

/// Certificate files of one test: the CA, and leaves for the node `echo` and the sender
/// `client`, plus the failure cases' files.
struct Files {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
    expired: (PathBuf, PathBuf),
    wrong_name: (PathBuf, PathBuf),
    dir: PathBuf,
}

fn files() -> Files {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_owned();
    let ca = TestCa::new("atbus cli test CA");
    let other = TestCa::new("another CA");
    Files {
        ca: ca.write(&path, "ca.crt"),
        other_ca: other.write(&path, "other-ca.crt"),
        server: ca.node("", "echo").write(&path, "echo"),
        client: ca.node("", "client").write(&path, "client"),
        expired: ca
            .leaf(&["atbus:///echo"], &[], 2019, 2022)
            .write(&path, "expired"),
        wrong_name: ca.node("", "not-echo").write(&path, "wrong-name"),
        dir: path,
        _dir: dir,
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Starts `atbus node --name echo --echo --encrypt tls` with `cert` and `ca`, its log kept.
fn start_tls_node(listen: &str, cert: &(PathBuf, PathBuf), ca: &Path, mtls: bool) -> NodeProc {
    let mut args = vec![
        "--encrypt",
        "tls",
        "--tls-cert",
        s(&cert.0),
        "--tls-key",
        s(&cert.1),
        "--tls-ca",
        s(ca),
    ];
    if mtls {
        args.push("--tls-require-client-cert");
    }
    start_node_logged("echo", &[listen], &args)
}

/// Stops the node once it had time to log what just happened; returns its log.
fn stop_after_logging(node: NodeProc) -> String {
    std::thread::sleep(Duration::from_millis(300));
    node.stop()
}

/// `atbus send --encrypt tls` of `count` messages to the node at `url` with `tls` (cert, key and
/// CA flags).
fn send(url: &str, tls: &[&str], count: &str) -> Output {
    let mut args = vec!["--encrypt", "tls", "--count", count, "--size", "700"];
    args.extend_from_slice(tls);
    send_json(url, "client", &args)
}

#[test]
fn mutual_tls_echo_is_verified_and_sealed_over_tcp_and_udp() {
    let f = files();
    for listen in ["tcp://127.0.0.1:0", "udp://127.0.0.1:0"] {
        let node = start_tls_node(listen, &f.server, &f.ca, true);
        let out = send(
            node.url(),
            &[
                "--tls-cert",
                s(&f.client.0),
                "--tls-key",
                s(&f.client.1),
                "--tls-ca",
                s(&f.ca),
            ],
            "200",
        );
        let r = report(&out);
        assert!(out.status.success(), "{listen}: {r}");
        assert_eq!(r["verified"], true, "{listen}: {r}");
        assert_eq!(r["received"], 200, "{listen}: {r}");
        assert_eq!(r["encrypted"], true, "{listen}: {r}");
        let log = stop_after_logging(node);
        assert!(!log.contains("link refused"), "{listen}: {log}");
    }
}

/// A failing handshake: what, the server's leaf, whether it requires client certificates, the
/// client's TLS flags, and the reason each side must report.
type Case<'a> = (
    &'a str,
    &'a (PathBuf, PathBuf),
    bool,
    Vec<&'a str>,
    &'a str,
    &'a str,
);

#[test]
fn certificate_failures_are_distinct_on_the_client_and_in_the_server_log() {
    let f = files();
    let (client_cert, client_key, ca) = (s(&f.client.0), s(&f.client.1), s(&f.ca));
    let cases: Vec<Case<'_>> = vec![
        (
            "wrong CA",
            &f.server,
            false,
            vec!["--tls-ca", s(&f.other_ca)],
            "tls-unknown-issuer",
            "tls-peer-unknown-issuer",
        ),
        (
            "expired",
            &f.expired,
            false,
            vec!["--tls-ca", ca],
            "tls-certificate-expired",
            "tls-peer-certificate-expired",
        ),
        (
            "mutual TLS, no client certificate",
            &f.server,
            true,
            vec!["--tls-ca", ca],
            "tls-peer-client-certificate-required",
            "tls-client-certificate-required",
        ),
        (
            "SAN mismatch",
            &f.wrong_name,
            false,
            vec![
                "--tls-cert",
                client_cert,
                "--tls-key",
                client_key,
                "--tls-ca",
                ca,
            ],
            "tls-identity-mismatch",
            "tls-peer-identity-mismatch",
        ),
    ];
    for listen in ["tcp://127.0.0.1:0", "udp://127.0.0.1:0"] {
        for (what, leaf, mtls, flags, client_code, server_code) in &cases {
            let node = start_tls_node(listen, leaf, &f.ca, *mtls);
            let out = send(node.url(), flags, "5");
            let log = stop_after_logging(node);
            let r = report(&out);
            assert_eq!(out.status.code(), Some(1), "{what} {listen}: {r}");
            let error = r["error"].as_str().unwrap_or_default();
            assert!(
                error.contains("AUTH_FAILED") && error.contains(client_code),
                "{what} {listen}: client says {error:?}"
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(client_code), "{what} {listen}: {stderr}");
            assert!(
                log.contains("link refused") && log.contains(server_code),
                "{what} {listen}: server log {log}"
            );
        }
    }
}

#[test]
fn bad_tls_flags_fail_before_starting() {
    let f = files();
    let garbage = f.dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let missing = f.dir.join("missing.pem");
    let (cert, key, ca) = (s(&f.server.0), s(&f.server.1), s(&f.ca));
    let node = |extra: &[&str]| {
        let mut args = vec!["node", "--name", "echo", "--listen", "tcp://127.0.0.1:0"];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let send = |extra: &[&str]| {
        let mut args = vec![
            "send",
            "--name",
            "client",
            "--connect",
            "tcp://127.0.0.1:9",
            "--to",
            "echo",
        ];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let cases = [
        (
            node(&["--encrypt", "tls", "--tls-cert", cert, "--tls-key", key]),
            "--encrypt tls needs --tls-ca",
        ),
        (
            node(&["--encrypt", "tls", "--tls-ca", ca]),
            "needs --tls-cert FILE and --tls-key FILE",
        ),
        (node(&["--tls-ca", ca]), "are used with --encrypt tls"),
        (
            send(&["--encrypt", "tls", "--tls-ca", s(&missing)]),
            "cannot read --tls-ca",
        ),
        (
            send(&["--encrypt", "tls", "--tls-ca", s(&garbage)]),
            "CA: no certificate found",
        ),
        (
            node(&[
                "--encrypt",
                "tls",
                "--tls-cert",
                s(&garbage),
                "--tls-key",
                key,
                "--tls-ca",
                ca,
            ]),
            "certificate chain: no certificate found",
        ),
        (
            node(&[
                "--encrypt",
                "tls",
                "--tls-cert",
                cert,
                "--tls-key",
                s(&garbage),
                "--tls-ca",
                ca,
            ]),
            "private key: bad PEM",
        ),
        (
            send(&[
                "--encrypt",
                "tls",
                "--tls-ca",
                ca,
                "--tls-require-client-cert",
            ]),
            "--tls-require-client-cert applies to a node that accepts links",
        ),
    ];
    for (args, expect) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_atbus"))
            .args(&args)
            .env_remove("ATBUS_TOKEN")
            .output()
            .expect("run atbus");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
    }
    // The help text names the flags.
    let out = Command::new(env!("CARGO_BIN_EXE_atbus"))
        .args(["node", "--help"])
        .output()
        .expect("run atbus");
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--tls-cert",
        "--tls-key",
        "--tls-ca",
        "--tls-require-client-cert",
    ] {
        assert!(help.contains(flag), "{flag} missing from help");
    }
}
