//! User/password authentication of the etcd backend against a real `etcd` (Debian package
//! `etcd-server`) with auth enabled by `etcdctl` (package `etcd-client`), started on free
//! loopback ports with a temporary data dir. A missing `etcd` or `etcdctl` fails every test.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use atbus_discovery::{Discovery, DiscoveryError, DiscoveryEvent, NodeRecord, Selector};
use atbus_discovery_etcd::{Backoff, EtcdAuth, EtcdConfig, EtcdDiscovery};

const MISSING: &str =
    "not found: run `cargo xtask setup` or apt-get install etcd-server etcd-client";
const USER: &str = "root";
const PASSWORD: &str = "rootpw";

/// A real etcd process with auth enabled (user `root`, password `rootpw`), killed on drop.
struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn require(bin: &str) {
    match Command::new(bin).arg("version").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("{bin} {MISSING} ({bin} version exited with {})", o.status),
        Err(e) => panic!("{bin} {MISSING} ({e})"),
    }
}

impl Etcd {
    fn start_with_auth() -> Self {
        // RUST_LOG=atbus_discovery_etcd=debug shows what the backend does.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        match Command::new("etcd").arg("--version").output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!("etcd {MISSING} (etcd --version exited with {})", o.status),
            Err(e) => panic!("etcd {MISSING} ({e})"),
        }
        require("etcdctl");
        for _ in 0..5 {
            let (client_port, peer_port) = (free_port(), free_port());
            if client_port == peer_port {
                continue;
            }
            let mut etcd = Etcd {
                child: None,
                dir: tempfile::tempdir().expect("temp dir"),
                client_port,
                peer_port,
            };
            if etcd.spawn() {
                etcd.ctl(&["user", "add", &format!("{USER}:{PASSWORD}")]);
                etcd.ctl(&["role", "add", "root"]);
                etcd.ctl(&["user", "grant-role", USER, "root"]);
                etcd.ctl(&["auth", "enable"]);
                return etcd;
            }
        }
        panic!("etcd did not start on any of 5 port pairs");
    }

    /// Starts etcd on this instance's ports and data dir; false if it exits or never gets
    /// healthy.
    fn spawn(&mut self) -> bool {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).expect("log file");
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .arg(format!("--initial-cluster=t={peer}"))
            .args(["--logger", "zap", "--log-level", "error"])
            .args(["--heartbeat-interval=10", "--election-timeout=100"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("etcd {MISSING} ({e})"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return false;
            }
            if self.healthy() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.client_port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_err() {
            return false;
        }
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.contains("\"health\":\"true\"")
    }

    /// Runs `etcdctl` (API v3, bounded by its dial and command timeouts) against this etcd.
    fn ctl(&self, args: &[&str]) {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint()))
            .args(["--dial-timeout=3s", "--command-timeout=5s"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("etcdctl {MISSING} ({e})"));
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Every record in etcd, by name, read by a plain client logged in as root.
    fn records(&self) -> BTreeMap<String, NodeRecord> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let options = etcd_client::ConnectOptions::new().with_user(USER, PASSWORD);
            let mut c = etcd_client::Client::connect([self.endpoint()], Some(options))
                .await
                .expect("etcd client as root");
            let r = c
                .get(
                    "/atbus/nodes/",
                    Some(etcd_client::GetOptions::new().with_prefix()),
                )
                .await
                .expect("list");
            r.kvs()
                .iter()
                .map(|kv| {
                    let rec = NodeRecord::from_json(kv.value()).expect("valid record");
                    (rec.name.clone(), rec)
                })
                .collect()
        })
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn handle(etcd: &Etcd, auth: Option<(&str, &str)>) -> EtcdDiscovery {
    let mut c = EtcdConfig::new(vec![etcd.endpoint()]);
    c.lease_ttl = Duration::from_secs(2);
    c.backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
    };
    c.rpc_timeout = Duration::from_secs(1);
    c.request_timeout = Duration::from_secs(5);
    c.shutdown_timeout = Duration::from_secs(1);
    c.auth = auth.map(|(user, password)| EtcdAuth {
        user: user.into(),
        password: password.into(),
    });
    EtcdDiscovery::new(c).expect("worker")
}

fn record(name: &str) -> NodeRecord {
    let mut r = NodeRecord::new(name);
    r.metadata.kind = "echo".into();
    r
}

fn next(d: &mut EtcdDiscovery) -> DiscoveryEvent {
    d.wait_event(Duration::from_secs(15))
        .expect("an event within 15 s")
}

/// Registers `name` and expects the request to end with an error (not `Registered`).
fn register_fails(d: &mut EtcdDiscovery, name: &str) -> String {
    let req = d.register(record(name));
    match next(d) {
        DiscoveryEvent::Error {
            request: Some(request),
            error: DiscoveryError::Unavailable { reason },
        } if request == req => reason,
        other => panic!("expected an error for {req}, got {other:?}"),
    }
}

#[test]
fn user_and_password_register_and_list() {
    let etcd = Etcd::start_with_auth();
    let mut d = handle(&etcd, Some((USER, PASSWORD)));
    let echo = record("echo-1");
    let req = d.register(echo.clone());
    match next(&mut d) {
        DiscoveryEvent::Registered { request, name } if request == req => {
            assert_eq!(name, "echo-1");
        }
        other => panic!("expected Registered for {req}, got {other:?}"),
    }
    let req = d.list(&Selector::parse("kind=echo").expect("selector"));
    match next(&mut d) {
        DiscoveryEvent::List { request, records } if request == req => {
            assert_eq!(records, vec![echo.clone()]);
        }
        other => panic!("expected List for {req}, got {other:?}"),
    }
    assert_eq!(etcd.records().get("echo-1"), Some(&echo));

    // Shutting down revokes the lease under auth too.
    d.shutdown();
    assert!(etcd.records().is_empty());
}

#[test]
fn wrong_password_is_an_error_and_writes_nothing() {
    let etcd = Etcd::start_with_auth();
    let mut d = handle(&etcd, Some((USER, "not-the-password")));
    let reason = register_fails(&mut d, "echo-1");
    assert!(
        reason.contains("authentication failed"),
        "unexpected reason: {reason}"
    );
    assert!(etcd.records().is_empty());
}

#[test]
fn without_auth_nothing_can_be_written() {
    let etcd = Etcd::start_with_auth();
    let mut d = handle(&etcd, None);
    let reason = register_fails(&mut d, "echo-1");
    assert!(
        reason.contains("user name is empty"),
        "unexpected reason: {reason}"
    );
    assert!(etcd.records().is_empty());
}
