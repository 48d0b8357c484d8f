//! `atbus inspect` on frames encoded by an independent protobuf implementation: `protoc
//! --encode` turns text-format messages into bytes, the test wraps them into packages with its
//! own varints and XXH3 hash, and checks the JSON against what the text said.
//!
//! Needs `protoc` (package `protobuf-compiler`); without it the test fails, it never skips.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{atbus, package, record};
use serde_json::json;

/// Encodes text-format `text` as message `atbus.protocol.<message>` with protoc.
fn protoc_encode(message: &str, text: &str) -> Vec<u8> {
    let protoc = std::env::var("PROTOC").unwrap_or_else(|_| "protoc".into());
    let proto_dir = common::workspace().join("proto");
    let mut child = match Command::new(&protoc)
        .arg(format!("--encode=atbus.protocol.{message}"))
        .arg(format!("--proto_path={}", proto_dir.display()))
        .arg("atbus_protocol.proto")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(err) => panic!(
            "cannot run `{protoc}` ({err}): this test needs protoc as an independent protobuf \
             implementation; install protobuf-compiler: apt-get install -y protobuf-compiler \
             (or `cargo xtask setup`)"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "protoc --encode={message} failed: {}\ninput:\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `bytes` as a text-format string literal (octal escapes).
fn text_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:03o}")).collect()
}

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

const CONTENT_TEXT: &str = r#"
fragment {
  data: "hello from protoc"
  labels { key: "app" value: "chat" }
  labels { key: "lang" value: "c++" }
  options {
    token: "tok\001\002"
    deadline_unix_ms: 1700000000123
    custom { key: "k" value: "\377\000v" }
  }
}
fragment {
  packet_type: 300
  data: "part one"
  fragment_flag: 1
  forward_for { source: "node-z" namespace_name: "ns" relays: "r1" relays: "r2" }
}
"#;

fn frames_and_expectations() -> Vec<(Vec<u8>, serde_json::Value)> {
    let content = protoc_encode("packet_content", CONTENT_TEXT);
    let packet_text = format!(
        r#"
head {{
  source: "protoc-a"
  destination: "protoc-b"
  forward_for_source: "relay-1"
  forward_for_connection_id: -9007199254740993
  hop_count: 2
}}
packet {{
  stream_id: 9223372036854775807
  stream_offset: 4096
  content: "{}"
  flags: 4
  timepoint_microseconds: 123456789
  packet_number: 42
  path_id: 3
}}
"#,
        text_bytes(&content)
    );
    let packet_json = json!({
        "head": {
            "source": "protoc-a",
            "destination": "protoc-b",
            "forward_for_source": "relay-1",
            "forward_for_connection_id": "-9007199254740993",
            "hop_count": 2
        },
        "packet": {
            "stream_id": "9223372036854775807",
            "stream_offset": "4096",
            "content": b64(&content),
            "flags": 4,
            "timepoint_microseconds": "123456789",
            "packet_number": "42",
            "path_id": "3",
            "content_decoded": {
                "fragment": [
                    {
                        "data": b64(b"hello from protoc"),
                        "labels": {"app": "chat", "lang": "c++"},
                        "options": {
                            "token": b64(b"tok\x01\x02"),
                            "deadline_unix_ms": "1700000000123",
                            "custom": {"k": b64(b"\xff\x00v")}
                        }
                    },
                    {
                        "packet_type": 300,
                        "data": b64(b"part one"),
                        "fragment_flag": 1,
                        "forward_for": {
                            "source": "node-z",
                            "namespace_name": "ns",
                            "relays": ["r1", "r2"]
                        }
                    }
                ]
            }
        }
    });

    let ping_text =
        r#"head { source: "protoc-a" } ping { ping_id: -5 timepoint_microseconds: 77 }"#;
    let ping_json = json!({
        "head": {"source": "protoc-a"},
        "ping": {"ping_id": "-5", "timepoint_microseconds": "77"}
    });

    let hello_text = r#"
handshake {
  hello {
    protocol_version: 1
    node_name: "protoc-a"
    incarnation_id: 123456789012345
    nonce: "\000\001\002\003"
    labels { key: "zone" value: "eu-1" }
    max_package_size: 1224
  }
  cookie: "c"
}"#;
    let hello_json = json!({
        "handshake": {
            "hello": {
                "protocol_version": 1,
                "node_name": "protoc-a",
                "incarnation_id": "123456789012345",
                "nonce": b64(&[0, 1, 2, 3]),
                "labels": {"zone": "eu-1"},
                "max_package_size": 1224
            },
            "cookie": b64(b"c")
        }
    });

    // Encrypted content: shown as base64 only, never decoded.
    let sealed_text = format!(
        r#"packet {{ stream_id: 2 content: "{}" flags: 32 padding_size: 1 }}"#,
        text_bytes(&content)
    );
    let sealed_json = json!({
        "packet": {"stream_id": "2", "content": b64(&content), "flags": 32, "padding_size": 1}
    });

    let ack_text = r#"
acknowledge {
  streams { stream_id: 1 acknowledge_offset: 10 received_max_offset: 12 max_stream_offset: 100 closed: true }
  received_packets { first: 5 last: 7 }
  received_packets { first: 1 last: 3 }
  ack_delay_microseconds: 0
}"#;
    // Values at their default (ack_delay_microseconds: 0, path_id unset) are omitted.
    let ack_json = json!({
        "acknowledge": {
            "streams": [{
                "stream_id": "1",
                "acknowledge_offset": "10",
                "received_max_offset": "12",
                "max_stream_offset": "100",
                "closed": true
            }],
            "received_packets": [{"first": "5", "last": "7"}, {"first": "1", "last": "3"}]
        }
    });

    let close_text = r#"link_close { code: 3 message: "bye" }"#;
    let close_json = json!({"link_close": {"code": 3, "message": "bye"}});

    vec![
        (protoc_encode("frame_message", &packet_text), packet_json),
        (protoc_encode("frame_message", ping_text), ping_json),
        (protoc_encode("frame_message", hello_text), hello_json),
        (protoc_encode("frame_message", &sealed_text), sealed_json),
        (protoc_encode("frame_message", ack_text), ack_json),
        (protoc_encode("frame_message", close_text), close_json),
    ]
}

#[test]
fn protoc_frames_on_a_byte_stream() {
    let frames = frames_and_expectations();
    let mut capture = Vec::new();
    let mut offsets = Vec::new();
    for (frame, _) in &frames {
        offsets.push(capture.len() as u64);
        capture.extend(package(frame));
    }
    let out = atbus(&["inspect", "-"], &capture);
    assert_eq!(
        out.code, 0,
        "stderr: {}\nstdout: {}",
        out.stderr, out.stdout
    );
    let lines = out.lines();
    assert_eq!(lines.len(), frames.len());
    for ((line, (frame, expected)), offset) in lines.iter().zip(&frames).zip(offsets) {
        assert_eq!(line["offset"], offset);
        assert_eq!(line["version"], 1);
        assert_eq!(line["length"], frame.len());
        assert_eq!(line["hash_ok"], true);
        assert_eq!(&line["frame"], expected);
    }
}

#[test]
fn protoc_frames_in_datagrams() {
    let frames = frames_and_expectations();
    // Two packages in the first datagram, the rest one each.
    let mut capture = record(&[package(&frames[0].0), package(&frames[1].0)].concat());
    for (frame, _) in &frames[2..] {
        capture.extend(record(&package(frame)));
    }
    let out = atbus(&["inspect", "--datagram"], &capture);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let lines = out.lines();
    let datagrams: Vec<u64> = lines
        .iter()
        .map(|l| l["datagram"].as_u64().unwrap())
        .collect();
    assert_eq!(datagrams, [0, 0, 1, 2, 3, 4]);
    for (line, (_, expected)) in lines.iter().zip(&frames) {
        assert_eq!(&line["frame"], expected);
    }
    assert_eq!(lines[0]["offset"], 4);
    assert_eq!(lines[1]["offset"], 4 + package(&frames[0].0).len() as u64);
}

/// protoc's encoding of the same frames decodes to the same typed messages as our own types, and
/// our encoding of the typed messages is what protoc produced (both implementations agree on the
/// wire bytes of these frames).
#[test]
fn protoc_and_prost_agree() {
    use prost::Message;
    for (frame, _) in frames_and_expectations() {
        let decoded = atbus_proto::FrameMessage::decode(frame.as_slice()).expect("prost decodes");
        assert_eq!(decoded.encode_to_vec(), frame);
    }
}
