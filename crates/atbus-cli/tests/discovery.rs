//! `atbus discovery list` over a static file, spec and selector errors, and `atbus node
//! --discovery etcd://…` (and `etcds://…` with mutual TLS, certificates generated at test
//! time) against a real `etcd` process (Debian package `etcd-server`) started on free loopback
//! ports with a temporary data dir. A missing `etcd` binary fails the etcd tests.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use atbus_discovery::NodeRecord;

const STATIC: &str = r#"
[[node]]
name = "echo-1"
version = "0.1.0"
host = { hostname = "host-a", pid = 10 }

[node.metadata]
namespace_name = "prod"
kind = "echo"
labels = { "area.region" = "eu", tier = "edge" }

[[node.gateways]]
priority = 10
address = ["tcp://10.0.0.1:7000"]
match = { metadata = { namespace_name = "prod" } }

[[node]]
name = "echo-2"
metadata = { namespace_name = "prod", kind = "echo", labels = { "area.region" = "us" } }

[[node]]
name = "relay-1"
metadata = { kind = "relay" }
"#;

fn atbus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_atbus"))
        .args(args)
        .output()
        .expect("run atbus")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `atbus discovery list --discovery SPEC`, then `extra`.
fn list(spec: &str, extra: &[&str]) -> Output {
    let mut args = vec!["discovery", "list", "--discovery", spec];
    args.extend_from_slice(extra);
    atbus(&args)
}

/// The arguments of a node called `name` listening on a free loopback TCP port, then `extra`.
fn node_args<'a>(name: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--name", name, "--listen", "tcp://127.0.0.1:0"];
    args.extend_from_slice(extra);
    args
}

/// Asserts that `o` exited with `code` and that its stderr says `needle` (`what` names the case
/// in the message).
fn assert_exit(o: &Output, code: i32, needle: &str, what: &str) {
    assert_eq!(o.status.code(), Some(code), "{what}: {}", stderr(o));
    assert!(stderr(o).contains(needle), "{what}: {}", stderr(o));
}

fn static_file() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nodes.toml");
    std::fs::write(&path, STATIC).expect("write static file");
    let spec = format!("static:{}", path.display());
    (dir, spec)
}

fn json_records(o: &Output) -> Vec<NodeRecord> {
    stdout(o)
        .lines()
        .map(|l| NodeRecord::from_json(l.as_bytes()).expect("a record per line"))
        .collect()
}

#[test]
fn static_list_table() {
    let (_dir, spec) = static_file();
    let o = list(&spec, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    for h in ["NAME", "NAMESPACE", "KIND", "LABELS", "GATEWAYS"] {
        assert!(lines[0].contains(h), "{out}");
    }
    assert!(lines[1].starts_with("echo-1 "), "{out}");
    assert!(lines[1].contains("area.region=eu,tier=edge"), "{out}");
    assert!(lines[1].contains("tcp://10.0.0.1:7000@10"), "{out}");
    assert!(lines[2].starts_with("echo-2 "), "{out}");
    assert!(lines[3].starts_with("relay-1 "), "{out}");
}

#[test]
fn static_list_with_selector() {
    let (_dir, spec) = static_file();
    let o = list(&spec, &["--selector", "kind=echo,area.region in (eu)"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.lines().nth(1).is_some_and(|l| l.starts_with("echo-1 ")));

    let o = list(&spec, &["--selector", "kind=nothing"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 1, "header only");
}

#[test]
fn static_list_json() {
    let (_dir, spec) = static_file();
    let o = list(&spec, &["--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let records = json_records(&o);
    let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["echo-1", "echo-2", "relay-1"]);
    // The record's own JSON form, byte for byte.
    let first = stdout(&o).lines().next().unwrap_or_default().to_owned();
    assert_eq!(first, records[0].to_json().expect("json"));
    assert_eq!(records[0].host.pid, 10);
    assert_eq!(records[0].gateways[0].address, ["tcp://10.0.0.1:7000"]);

    let o = list(&spec, &["--json", "--selector", "!kind,tier notin (edge)"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(json_records(&o).is_empty());
}

#[test]
fn bad_selector_exits_2() {
    let (_dir, spec) = static_file();
    let o = list(&spec, &["--selector", "kind in (a"]);
    assert_exit(&o, 2, "selector syntax error at byte", "bad selector");
    assert!(stdout(&o).is_empty());
}

#[test]
fn bad_specs_exit_2_naming_the_part() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[node]]\nname = \"Bad_Name\"\n").expect("write");
    let bad = format!("static:{}", bad.display());
    let cases = [
        ("consul://x:1", "\"consul\""),
        ("etcd://127.0.0.1:notaport", "127.0.0.1:notaport"),
        ("etcd://", "names no endpoint"),
        ("static:", "static: needs a file name"),
        // Specs that parse but whose file is missing or invalid.
        ("static:/nonexistent/nodes.toml", "/nonexistent/nodes.toml"),
        (bad.as_str(), "Bad_Name"),
    ];
    for (spec, needle) in cases {
        assert_exit(&list(spec, &[]), 2, needle, spec);
    }
}

#[test]
fn node_with_static_discovery_refuses_a_name_in_the_file() {
    let (_dir, spec) = static_file();
    let mut args = vec!["node"];
    args.extend(node_args("echo-1", &["--discovery", &spec]));
    assert_exit(&atbus(&args), 1, "already registered", "name in the file");
}

#[test]
fn node_rejects_bad_label_and_gateway() {
    let cases: [(&[&str], i32, &str); 2] = [
        // A gateway priority that is not a number: refused while parsing the arguments.
        (&["--gateway", "tcp://gw:1@high"], 2, "\"high\""),
        // A label key the record rules refuse: the node stops with the field named.
        (&["--label", "bad key=v"], 1, "metadata.labels"),
    ];
    for (extra, code, needle) in cases {
        let mut args = vec!["node"];
        args.extend(node_args("n", &["--discovery", "embedded"]));
        args.extend_from_slice(extra);
        assert_exit(&atbus(&args), code, needle, &extra.join(" "));
    }
}

use atbus_discovery_etcd::testing::EtcdProcess as Etcd;

/// A running `atbus node`, killed when dropped.
struct Node {
    child: Child,
    url: String,
}

impl Node {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_atbus"))
            .arg("node")
            .args(args)
            .env_remove("ATBUS_TOKEN")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start atbus node");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read stdout");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected line {line:?}"))
            .to_owned();
        Node { child, url }
    }

    /// SIGTERM, then waits (bounded) for a clean exit.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "node did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn list_json(spec: &str) -> Vec<NodeRecord> {
    let o = list(spec, &["--json"]);
    assert!(o.status.success(), "list failed: {}", stderr(&o));
    json_records(&o)
}

/// Lists until `done` holds for the records, up to `limit`.
fn poll_until(
    spec: &str,
    limit: Duration,
    done: impl Fn(&[NodeRecord]) -> bool,
) -> Vec<NodeRecord> {
    let deadline = Instant::now() + limit;
    loop {
        let records = list_json(spec);
        if done(&records) {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "condition not reached within {limit:?}; records: {records:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn node_registers_in_etcd_refuses_duplicates_and_deregisters() {
    let etcd = Etcd::start();
    let spec = etcd.spec();
    let n1_args = node_args(
        "n1",
        &[
            "--discovery",
            &spec,
            "--label",
            "kind-tier=edge",
            "--namespace",
            "ns1",
            "--gateway",
            "tcp://edge.example.com:443@10",
        ],
    );
    let mut n1 = Node::start(&n1_args);
    assert!(n1.url.starts_with("tcp://127.0.0.1:"), "{}", n1.url);

    let records = poll_until(&spec, Duration::from_secs(15), |r| {
        r.iter().any(|r| r.name == "n1")
    });
    let r = records.iter().find(|r| r.name == "n1").expect("n1 listed");
    assert_eq!(r.metadata.namespace_name, "ns1");
    assert_eq!(
        r.metadata.labels.get("kind-tier").map(String::as_str),
        Some("edge")
    );
    assert_eq!(r.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(r.host.pid, n1.child.id());
    assert_eq!(r.gateways.len(), 2, "{r:?}");
    assert_eq!(r.gateways[0].address, [n1.url.clone()]);
    assert!(r.gateways[0].is_internal_to("ns1"));
    assert_eq!(r.gateways[1].address, ["tcp://edge.example.com:443"]);
    assert_eq!(r.gateways[1].priority, 10);

    // The selector reaches etcd too.
    let o = list(&spec, &["--selector", "kind-tier=edge,namespace_name=ns1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).lines().any(|l| l.starts_with("n1 ")),
        "{}",
        stdout(&o)
    );

    // Same name again: put-if-absent refuses, the second node exits non-zero.
    let second = Command::new(env!("CARGO_BIN_EXE_atbus"))
        .arg("node")
        .args(&n1_args)
        .env_remove("ATBUS_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start second node");
    let out = wait_output(second, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("name \"n1\" is already registered"),
        "{}",
        stderr(&out)
    );
    // The first registration is untouched.
    let records = list_json(&spec);
    let r = records
        .iter()
        .find(|r| r.name == "n1")
        .expect("n1 still listed");
    assert_eq!(r.host.pid, n1.child.id());

    // Graceful shutdown deregisters at once (well before the 10 s lease TTL).
    let status = n1.terminate();
    assert!(status.success(), "node exit status {status}");
    let started = Instant::now();
    poll_until(&spec, Duration::from_secs(5), |r| {
        r.iter().all(|r| r.name != "n1")
    });
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn node_with_embedded_discovery_runs_and_stops_cleanly() {
    let mut node = Node::start(&node_args(
        "solo",
        &[
            "--discovery",
            "embedded",
            "--label",
            "tier=edge",
            "--gateway",
            "tcp://gw.example.com:443@3",
        ],
    ));
    assert!(node.url.starts_with("tcp://127.0.0.1:"), "{}", node.url);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        node.child.try_wait().expect("try_wait").is_none(),
        "node exited early"
    );
    let status = node.terminate();
    assert!(status.success(), "node exit status {status}");
    // --label and --gateway need --discovery.
    let mut args = vec!["node"];
    args.extend(node_args("n", &["--label", "a=b"]));
    assert_exit(
        &atbus(&args),
        2,
        "--discovery",
        "--label without --discovery",
    );
}

/// Waits for `child` to exit within `limit` (killed and failed otherwise).
fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "process did not exit within {limit:?}; stderr: {}",
                stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A CA, an etcd server pair (127.0.0.1, client use too: the harness's etcdctl presents it)
/// and a client pair, generated into `dir` at test time.
struct Pki {
    ca: std::path::PathBuf,
    server_cert: std::path::PathBuf,
    server_key: std::path::PathBuf,
    client_cert: std::path::PathBuf,
    client_key: std::path::PathBuf,
}

impl Pki {
    fn new(dir: &std::path::Path) -> Self {
        use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "atbus CLI test CA");
        let ca_pem = ca.self_signed(&ca_key).expect("CA certificate").pem();
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |names: &[&str], uses| {
            let key = KeyPair::generate().expect("key");
            let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            let mut params = CertificateParams::new(names).expect("params");
            params.extended_key_usages = uses;
            let cert = params.signed_by(&key, &issuer).expect("certificate");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(&["127.0.0.1"], vec![ServerAuth, ClientAuth]);
        let (client_cert, client_key) = leaf(&[], vec![ClientAuth]);
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write PEM");
            path
        };
        Self {
            ca: write("ca.pem", &ca_pem),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server-key.pem", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client-key.pem", &client_key),
        }
    }
}

#[test]
fn node_registers_over_mutual_tls_and_tls_spec_errors_are_clear() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new(dir.path());
    let etcd = Etcd::start_tls(atbus_discovery_etcd::testing::ServerTls {
        ca: pki.ca.clone(),
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        client_cert_auth: true,
    });
    let spec = format!(
        "{}?ca={}&cert={}&key={}",
        etcd.spec(),
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    );
    assert!(spec.starts_with("etcds://127.0.0.1:"), "{spec}");
    let mut node = Node::start(&node_args("tls-1", &["--discovery", &spec]));
    let records = poll_until(&spec, Duration::from_secs(15), |r| {
        r.iter().any(|r| r.name == "tls-1")
    });
    let r = records.iter().find(|r| r.name == "tls-1").expect("listed");
    assert_eq!(r.host.pid, node.child.id());
    let status = node.terminate();
    assert!(status.success(), "node exit status {status}");
    poll_until(&spec, Duration::from_secs(5), |r| r.is_empty());

    // Settings that cannot work stop before any request, with exit code 2.
    let no_ca = etcd.spec();
    let missing = format!(
        "{}?ca={}",
        etcd.spec(),
        dir.path().join("nope.pem").display()
    );
    for (spec, says) in [
        (no_ca.as_str(), "needs the CA"),
        (missing.as_str(), "nope.pem"),
    ] {
        assert_exit(&list(spec, &[]), 2, says, spec);
    }
}
