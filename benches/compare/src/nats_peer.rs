//! NATS: a `nats-server` process (Debian's package) on a free loopback port with a temporary
//! directory, and the `async-nats` client.
//!
//! Every message goes through the server, as it does in a NATS deployment: round trip is
//! request-reply (the client's `request` to a subject an echo client answers), throughput is
//! pub/sub with an echo (client publishes on `bench.in`, the echo client republishes each message
//! on `bench.out`, the client's subscription reads it back and checks it). Settings: the server's
//! defaults (max payload 1 MiB), the client's defaults (it batches writes on its own), one tokio
//! worker thread per side as in [`crate::quinn_peer`].

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::runtime::Runtime;

/// The server binary.
pub const SERVER: &str = "nats-server";
/// Longest a workload may take before the benchmark gives up with a panic.
const TIMEOUT: Duration = Duration::from_secs(60);

const RR: &str = "bench.rr";
const IN: &str = "bench.in";
const OUT: &str = "bench.out";

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The `nats-server` version line, or `None` when it is not installed.
pub fn server_version() -> Option<String> {
    let out = Command::new(SERVER).arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// A `nats-server` child process, killed and its directory removed on drop.
pub struct NatsServer {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl NatsServer {
    /// Starts the server on a free port of 127.0.0.1 and waits until it accepts connections.
    pub fn start() -> io::Result<NatsServer> {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("atbus-compare-nats-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut last = io::Error::other("nats-server did not start");
        // The free port may be taken between probing and binding: try a few.
        for _ in 0..5 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
                .local_addr()?
                .port();
            let mut child = Command::new(SERVER)
                .args(["-a", "127.0.0.1", "-p", &port.to_string()])
                .arg("-l")
                .arg(dir.join("nats.log"))
                .arg("-P")
                .arg(dir.join("nats.pid"))
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(status) = child.try_wait()? {
                    last = io::Error::other(format!("nats-server exited with {status}"));
                    break;
                }
                if TcpStream::connect(addr).is_ok() {
                    return Ok(NatsServer { child, dir, addr });
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = io::Error::other("nats-server did not listen within 10 s");
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last)
    }

    /// The client URL.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Answers requests on [`RR`] and republishes [`IN`] on [`OUT`].
async fn echo(client: async_nats::Client) {
    let (Ok(rr), Ok(inbound)) = (client.subscribe(RR).await, client.subscribe(IN).await) else {
        return;
    };
    let mut both = futures_util::stream::select(rr, inbound);
    while let Some(m) = both.next().await {
        let to = match m.reply {
            Some(reply) => reply,
            None => OUT.into(),
        };
        if client.publish(to, m.payload).await.is_err() {
            return;
        }
    }
}

/// A client and an echo client, each on its own runtime, connected to one server.
pub struct NatsPair {
    client_rt: Runtime,
    _echo_rt: Runtime,
    client: async_nats::Client,
    out: async_nats::Subscriber,
    // Declared last: the server outlives both clients.
    _server: NatsServer,
}

impl NatsPair {
    /// Starts a server and connects the echo and the client.
    pub fn new() -> io::Result<NatsPair> {
        let server = NatsServer::start()?;
        let url = server.url();
        let echo_rt = runtime();
        let echo_client = echo_rt
            .block_on(async_nats::connect(url.clone()))
            .map_err(io::Error::other)?;
        echo_rt.block_on(async {
            // The echo's subscriptions must reach the server before the first publish.
            let c = echo_client.clone();
            tokio::spawn(echo(c));
            tokio::time::sleep(Duration::from_millis(50)).await;
            echo_client.flush().await.map_err(io::Error::other)
        })?;
        let client_rt = runtime();
        let (client, out) = client_rt.block_on(async {
            let client = async_nats::connect(url).await.map_err(io::Error::other)?;
            let out = client.subscribe(OUT).await.map_err(io::Error::other)?;
            client.flush().await.map_err(io::Error::other)?;
            Ok::<_, io::Error>((client, out))
        })?;
        Ok(NatsPair {
            client_rt,
            _echo_rt: echo_rt,
            client,
            out,
            _server: server,
        })
    }

    /// One request-reply round trip of `data`; returns its duration.
    pub fn round_trip(&mut self, data: &Bytes) -> Duration {
        let start = Instant::now();
        let reply = self
            .client_rt
            .block_on(self.client.request(RR, data.clone()))
            .expect("nats request");
        let took = start.elapsed();
        assert_eq!(reply.payload, *data, "nats reply differs");
        took
    }

    /// Publishes `count` messages of `data`, at most `window` unanswered, and reads every echo.
    pub fn stream(&mut self, data: &Bytes, count: usize, window: usize) {
        let window = window.max(1);
        let client = &self.client;
        let out = &mut self.out;
        self.client_rt.block_on(async {
            let deadline = Instant::now() + TIMEOUT;
            let (mut sent, mut received) = (0usize, 0usize);
            while received < count {
                assert!(
                    Instant::now() < deadline,
                    "nats timed out: {received}/{count}"
                );
                while sent < count && sent - received < window {
                    client
                        .publish(IN, data.clone())
                        .await
                        .expect("nats publish");
                    sent += 1;
                }
                let m = tokio::time::timeout(TIMEOUT, out.next())
                    .await
                    .expect("nats echo within the timeout")
                    .expect("nats subscription open");
                assert_eq!(m.payload, *data, "nats echo differs");
                received += 1;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real `nats-server` on loopback: request-reply and the pub/sub echo, checked inside.
    /// Needs `nats-server` installed (`cargo xtask bench-compare` installs it).
    #[test]
    fn request_reply_and_pub_sub_echo_through_a_real_server() {
        assert!(
            server_version().is_some(),
            "{SERVER} is not installed (apt-get install nats-server)"
        );
        let mut n = NatsPair::new().expect("nats pair");
        let small = Bytes::from(vec![3u8; 64]);
        assert!(n.round_trip(&small) > Duration::ZERO);
        n.stream(&small, 5000, 1000);
        n.stream(&Bytes::from(vec![4u8; 64 * 1024]), 50, 10);
        let dir = n._server.dir.clone();
        assert!(dir.exists());
        drop(n);
        // The server is gone and its directory removed.
        assert!(!dir.exists());
    }
}
