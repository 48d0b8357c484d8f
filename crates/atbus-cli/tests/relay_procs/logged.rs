//! `atbus` processes whose standard output is read line by line by a thread and whose
//! standard error (`RUST_LOG=info`) goes to a file, and relays and nodes that register in a
//! discovery backend: what the discovery tests start.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use super::{counter, free_port, scrape, signal};

/// A running `atbus` killed when dropped: its output lines, its input, its log.
pub struct LoggedProc {
    /// The process.
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoggedProc {
    /// Starts `atbus ARGS` without `ATBUS_TOKEN` from the test's environment.
    pub fn start(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let stderr = dir.path().join("stderr");
        let mut child = Command::new(env!("CARGO_BIN_EXE_atbus"))
            .args(args)
            .env_remove("ATBUS_TOKEN")
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start atbus");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                if tx.send(line.trim().to_owned()).is_err() {
                    break;
                }
            }
        });
        LoggedProc {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
            _dir: dir,
        }
    }

    /// What the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The next line of standard output (within 20 s).
    pub fn line(&self) -> String {
        match self.lines.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!("no output within 20 s; log:\n{}", self.log()),
            Err(RecvTimeoutError::Disconnected) => {
                panic!("the process ended; log:\n{}", self.log())
            }
        }
    }

    /// The rest of the next line after `prefix`.
    pub fn expect(&self, prefix: &str) -> String {
        let line = self.line();
        line.strip_prefix(prefix)
            .unwrap_or_else(|| panic!("expected {prefix:?}…, got {line:?}; log:\n{}", self.log()))
            .to_owned()
    }

    /// Writes `line` to the process's standard input.
    pub fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write stdin");
        stdin.flush().expect("flush stdin");
    }

    /// SIGTERM, then a bounded wait; the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        signal(&mut self.child, "TERM", Duration::from_secs(10)).code()
    }
}

impl Drop for LoggedProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A relay registered in a discovery backend: its process, name and metrics URL.
pub struct DiscoveredRelay {
    /// The process.
    pub proc: LoggedProc,
    /// Its name.
    pub name: String,
    /// Its `/metrics` URL.
    pub metrics: String,
}

impl DiscoveredRelay {
    /// `atbus relay` in `ns`, listening on a fixed free port that it also publishes as its
    /// gateway for other namespaces, registered in `spec`, trusting the relays of the registry.
    pub fn start(spec: &str, name: &str, ns: &str, extra: &[&str]) -> Self {
        let url = format!("tcp://127.0.0.1:{}", free_port());
        let mut args = vec![
            "relay",
            "--name",
            name,
            "--namespace",
            ns,
            "--listen",
            &url,
            "--gateway",
            &url,
            "--discovery",
            spec,
            "--peer-relay-selector",
            "kind=relay",
            "--metrics-listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let proc = LoggedProc::start(&args);
        assert_eq!(proc.expect("listening on "), url);
        let metrics = proc.expect("metrics on ");
        assert!(proc.line().starts_with(&format!("registered {name} in ")));
        DiscoveredRelay {
            proc,
            name: name.to_owned(),
            metrics,
        }
    }

    /// The value of `series`, `RELAY` standing for the relay's name.
    pub fn metric(&self, series: &str) -> u64 {
        let series = series.replace("RELAY", &self.name);
        let body = scrape(&self.metrics);
        counter(&body, &series).unwrap_or_else(|| panic!("no {series} in\n{body}"))
    }

    /// Frames forwarded so far, once the endpoint caught up (it is at most 100 ms stale).
    pub fn forwarded(&self) -> u64 {
        std::thread::sleep(Duration::from_millis(300));
        self.metric("atbus_relay_frames_forwarded_total{relay=\"RELAY\"}")
    }
}

/// `atbus node` in `ns` listening on a free TCP port, registered in `spec`, with `extra`
/// arguments; returns once it listens.
pub fn discovered_node(spec: &str, name: &str, ns: &str, extra: &[&str]) -> LoggedProc {
    let mut args = vec![
        "node",
        "--name",
        name,
        "--namespace",
        ns,
        "--listen",
        "tcp://127.0.0.1:0",
        "--discovery",
        spec,
    ];
    args.extend_from_slice(extra);
    let proc = LoggedProc::start(&args);
    assert!(proc.line().starts_with("listening on "));
    proc
}

/// Polls `done` every 100 ms; fails the test with `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
