//! `atbus relay --config FILE` with nothing else on the command line: the file gives the name,
//! the listen address, the metrics address, discovery, gateways and the peer relay selector.
//! The relay binds, serves its metrics, registers, and stops with status 0 on SIGTERM; a file
//! with no `listen` stops it with status 1.

mod relay_procs;

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::process::Command;

use relay_procs::{spawn, terminate};

fn write_config(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, text).expect("write the relay file");
    path.to_str().expect("UTF-8 path").to_owned()
}

#[test]
fn a_relay_starts_from_its_file_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(
        &dir,
        r#"
name = "relay-file"
namespace = "ns1"
listen = ["tcp://127.0.0.1:0"]
metrics_listen = "127.0.0.1:0"
discovery = "embedded"
gateways = ["tcp://relay-file.example.com:7100@5"]
peer_relay_selector = "kind=relay"
"#,
    );
    let (mut relay, stdout) = spawn(env!("CARGO_BIN_EXE_atbus"), &["relay", "--config", &config]);
    let lines: Vec<String> = stdout
        .lines()
        .take(3)
        .map(|l| l.expect("read stdout"))
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let listen = lines[0]
        .strip_prefix("listening on tcp://")
        .unwrap_or_else(|| panic!("{lines:?}"));
    let metrics = lines[1]
        .strip_prefix("metrics on http://")
        .and_then(|m| m.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(lines[2], "registered relay-file in embedded");

    // The file's listen address accepts connections, on a port the relay chose.
    assert!(
        listen.starts_with("127.0.0.1:") && !listen.ends_with(":0"),
        "{listen}"
    );
    TcpStream::connect(listen).expect("connect to the relay's listen address");

    // The file's metrics address answers with the relay's families.
    let mut s = TcpStream::connect(metrics).expect("connect to the metrics port");
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("write");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read");
    assert!(reply.starts_with("HTTP/1.0 200 OK\r\n"), "{reply}");
    assert!(
        reply.contains("atbus_relay_frames_forwarded_total"),
        "{reply}"
    );

    let status = terminate(&mut relay);
    assert!(status.success(), "{status}");
}

#[test]
fn a_file_without_listen_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(&dir, "name = \"relay-file\"\n");
    let out = Command::new(env!("CARGO_BIN_EXE_atbus"))
        .args(["relay", "--config", &config])
        .env_remove("ATBUS_TOKEN")
        .output()
        .expect("run the relay");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs an address"), "{err}");
}
