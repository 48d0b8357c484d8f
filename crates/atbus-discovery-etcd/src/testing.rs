//! A real `etcd` process for integration tests (this crate's, the CLI's): free loopback ports, a
//! temporary data directory, killed on drop, optionally serving its clients over TLS. Not part
//! of the supported API.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What a test says when a binary is missing.
pub const MISSING: &str =
    "not found: run `cargo xtask setup` or apt-get install etcd-server etcd-client";

/// TLS of a test etcd's client URL: PEM files the test wrote (peers stay plain HTTP).
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The CA that signed `cert`; with `client_cert_auth`, the CA client certificates must
    /// chain to.
    pub ca: PathBuf,
    /// The server certificate. It must name 127.0.0.1 and allow client auth too: etcdctl
    /// presents it when the harness polls health or runs commands under mutual TLS.
    pub cert: PathBuf,
    /// The server certificate's key.
    pub key: PathBuf,
    /// Mutual TLS: refuse clients without a certificate signed by `ca`.
    pub client_cert_auth: bool,
}

/// A running etcd, killed (and its data directory removed) on drop.
#[derive(Debug)]
pub struct EtcdProcess {
    child: Option<Child>,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    tls: Option<ServerTls>,
}

/// A free loopback TCP port (nothing listens on it once returned).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Panics with [`MISSING`] unless `bin --version`-style `probe` runs.
pub fn require(bin: &str, probe: &str) {
    match Command::new(bin).arg(probe).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("{bin} {MISSING} ({bin} {probe} exited with {})", o.status),
        Err(e) => panic!("{bin} {MISSING} ({e})"),
    }
}

impl EtcdProcess {
    /// Starts etcd on free loopback ports (five tries), failing the test clearly if the binary
    /// is missing.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts etcd serving clients on `https://127.0.0.1:PORT` with `tls` (health is polled
    /// with etcdctl, so it must be installed).
    pub fn start_tls(tls: ServerTls) -> Self {
        require("etcdctl", "version");
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<ServerTls>) -> Self {
        require("etcd", "--version");
        for attempt in 0..5 {
            let (client_port, peer_port) = (free_port(), free_port());
            if client_port == peer_port {
                continue;
            }
            let dir = std::env::temp_dir().join(format!(
                "atbus-etcd-{}-{client_port}-{attempt}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            if let Err(e) = std::fs::create_dir_all(&dir) {
                panic!("temp dir {}: {e}", dir.display());
            }
            let mut etcd = EtcdProcess {
                child: None,
                dir,
                client_port,
                peer_port,
                tls: tls.clone(),
            };
            if etcd.spawn() {
                return etcd;
            }
        }
        panic!("etcd did not start on any of 5 port pairs");
    }

    /// Starts etcd with auth enabled for user `user` (role root) with `password`.
    pub fn start_with_auth(user: &str, password: &str) -> Self {
        require("etcdctl", "version");
        let etcd = Self::start();
        etcd.ctl(&["user", "add", &format!("{user}:{password}")]);
        etcd.ctl(&["role", "add", "root"]);
        etcd.ctl(&["user", "grant-role", user, "root"]);
        etcd.ctl(&["auth", "enable"]);
        etcd
    }

    /// Starts etcd on this instance's ports and data dir; false if it exits or never gets
    /// healthy within 10 s.
    fn spawn(&mut self) -> bool {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.join("etcd.log"))
            .unwrap_or_else(|e| panic!("etcd log file: {e}"));
        let mut cmd = Command::new("etcd");
        if let Some(tls) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key);
            if tls.client_cert_auth {
                cmd.arg("--client-cert-auth")
                    .arg("--trusted-ca-file")
                    .arg(&tls.ca);
            }
        }
        let child = cmd
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.join("data"))
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

    /// Whether `/health` answers true (over TLS: whether `etcdctl endpoint health` succeeds).
    pub fn healthy(&self) -> bool {
        if self.tls.is_some() {
            return self
                .etcdctl(&["endpoint", "health"])
                .output()
                .is_ok_and(|o| o.status.success());
        }
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

    /// The client URL, `http://127.0.0.1:PORT` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The discovery spec, `etcd://127.0.0.1:PORT` (`etcds://` with TLS, without the files).
    pub fn spec(&self) -> String {
        let scheme = if self.tls.is_some() { "etcds" } else { "etcd" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The process id.
    pub fn pid(&self) -> String {
        self.child
            .as_ref()
            .map(|c| c.id().to_string())
            .unwrap_or_else(|| panic!("etcd is not running"))
    }

    /// Kills the process (the data dir stays for a restart).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts etcd again with the same data dir and ports.
    pub fn restart(&mut self) {
        for _ in 0..20 {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd did not restart on its ports");
    }

    /// Sends a signal (`-STOP`, `-CONT`, …) with `kill`.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} failed");
    }

    /// An `etcdctl` command (API v3, bounded by its dial and command timeouts) against this
    /// etcd; over TLS it trusts the test CA and presents the server certificate.
    fn etcdctl(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint()))
            .args(["--dial-timeout=3s", "--command-timeout=5s"]);
        if let Some(tls) = &self.tls {
            cmd.arg("--cacert")
                .arg(&tls.ca)
                .arg("--cert")
                .arg(&tls.cert)
                .arg("--key")
                .arg(&tls.key);
        }
        cmd.args(args).stdin(Stdio::null());
        cmd
    }

    /// Runs `etcdctl` against this etcd, panicking unless it succeeds; returns its stdout.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = self
            .etcdctl(args)
            .output()
            .unwrap_or_else(|e| panic!("etcdctl {MISSING} ({e})"));
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
