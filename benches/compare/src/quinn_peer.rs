//! QUIC (quinn 0.11, rustls with the ring provider) over loopback UDP: one connection to an echo
//! endpoint that returns every byte of each bidirectional stream on the same stream.
//!
//! Settings: quinn's defaults (its congestion control, flow-control windows and GSO where the
//! kernel has it), a self-signed certificate made by rcgen that the client trusts as its only
//! root, one tokio runtime with one worker thread per side.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::rustls::RootCertStore;
use quinn::rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Copies everything read on `recv` back into `send` until the peer finishes the stream.
async fn echo_stream(mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(Some(n)) = recv.read(&mut buf).await {
        if send.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
}

/// A client connection to a quinn echo endpoint.
pub struct QuinnPair {
    client_rt: Runtime,
    _server_rt: Runtime,
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    _client: quinn::Endpoint,
    read_buf: Vec<u8>,
}

impl QuinnPair {
    /// Starts the echo endpoint on 127.0.0.1, connects, and opens the round-trip stream.
    pub fn new() -> QuinnPair {
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
        let cert: CertificateDer<'static> = certified.cert.der().clone();
        let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
        let server_config = quinn::ServerConfig::with_single_cert(vec![cert.clone()], key.into())
            .expect("server config");
        let server_rt = runtime();
        let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let server = {
            let _guard = server_rt.enter();
            quinn::Endpoint::server(server_config, any).expect("quinn server")
        };
        let server_addr = server.local_addr().expect("server address");
        server_rt.spawn(async move {
            while let Some(incoming) = server.accept().await {
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok((send, recv)) = conn.accept_bi().await {
                        tokio::spawn(echo_stream(send, recv));
                    }
                });
            }
        });

        let mut roots = RootCertStore::empty();
        roots.add(cert).expect("trust the test certificate");
        let client_config =
            quinn::ClientConfig::with_root_certificates(Arc::new(roots)).expect("client config");
        let client_rt = runtime();
        let (client, conn, send, recv) = client_rt.block_on(async move {
            let mut client = quinn::Endpoint::client(any).expect("quinn client");
            client.set_default_client_config(client_config);
            let conn = client
                .connect(server_addr, "localhost")
                .expect("connect")
                .await
                .expect("handshake");
            let (send, recv) = conn.open_bi().await.expect("open stream");
            (client, conn, send, recv)
        });
        QuinnPair {
            client_rt,
            _server_rt: server_rt,
            conn,
            send,
            recv,
            _client: client,
            read_buf: vec![0u8; 64 * 1024],
        }
    }

    /// One write of `data` on the long-lived stream and the read of its echo; returns its time.
    pub fn round_trip(&mut self, data: &[u8]) -> Duration {
        let (send, recv, buf) = (&mut self.send, &mut self.recv, &mut self.read_buf);
        self.client_rt.block_on(async {
            let start = Instant::now();
            send.write_all(data).await.expect("quinn write");
            recv.read_exact(&mut buf[..data.len()])
                .await
                .expect("quinn read");
            let took = start.elapsed();
            assert!(buf[..data.len()] == *data, "quinn echo differs");
            took
        })
    }

    /// Writes `count` copies of `data` on a new stream (one stream per call) while reading the
    /// echo back on the same stream; checks every byte.
    pub fn stream(&mut self, data: &[u8], count: usize) {
        let conn = self.conn.clone();
        let data = data.to_vec();
        self.client_rt.block_on(async move {
            let (mut send, mut recv) = conn.open_bi().await.expect("open stream");
            let writer_data = data.clone();
            let writer = tokio::spawn(async move {
                for _ in 0..count {
                    send.write_all(&writer_data).await.expect("quinn write");
                }
                send.finish().expect("finish");
            });
            let mut buf = vec![0u8; 256 * 1024];
            let total = count * data.len();
            let (mut got, mut at) = (0usize, 0usize);
            while got < total {
                let n = recv
                    .read(&mut buf)
                    .await
                    .expect("quinn read")
                    .expect("echo ended early");
                let mut rest = &buf[..n];
                while !rest.is_empty() {
                    let take = rest.len().min(data.len() - at);
                    assert!(rest[..take] == data[at..at + take], "quinn echo differs");
                    at = (at + take) % data.len();
                    rest = &rest[take..];
                }
                got += n;
            }
            assert_eq!(got, total, "quinn echoed more than was sent");
            writer.await.expect("writer task");
        });
    }
}

impl Drop for QuinnPair {
    fn drop(&mut self) {
        self.conn.close(0u32.into(), b"done");
    }
}
