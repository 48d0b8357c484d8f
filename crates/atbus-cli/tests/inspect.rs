//! `atbus inspect` run as a process: the pinned sample output, every input mode and every kind
//! of corrupt input.

mod common;

use common::{atbus, hex, package, package_with_version, record, sample_path};
use serde_json::json;

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(sample_path(name)).expect("read sample")
}

fn sample_str(name: &str) -> String {
    String::from_utf8(sample(name)).expect("UTF-8 sample")
}

/// Offsets of the six packages in `samples/capture.bin` (also pinned by capture.jsonl).
const OFFSETS: [u64; 6] = [0, 114, 128, 142, 293, 350];

#[test]
fn sample_stream_output_is_pinned() {
    let path = sample_path("capture.bin");
    let out = atbus(&["inspect", path.to_str().unwrap()], b"");
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, sample_str("capture.jsonl"));
    let offsets: Vec<u64> = out
        .lines()
        .iter()
        .map(|l| l["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, OFFSETS);
}

#[test]
fn sample_datagram_output_is_pinned() {
    let path = sample_path("capture-datagrams.bin");
    let out = atbus(&["inspect", "--datagram", path.to_str().unwrap()], b"");
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, sample_str("capture-datagrams.jsonl"));
    let datagrams: Vec<u64> = out
        .lines()
        .iter()
        .map(|l| l["datagram"].as_u64().unwrap())
        .collect();
    assert_eq!(datagrams, [0, 1, 1, 2, 3, 3]);
    // The same frames as the byte stream.
    let stream: Vec<_> = atbus(&["inspect", "-"], &sample("capture.bin")).lines();
    for (d, s) in out.lines().iter().zip(&stream) {
        assert_eq!(d["frame"], s["frame"]);
        assert_eq!(d["length"], s["length"]);
    }
}

#[test]
fn committed_samples_match_the_generator() {
    assert_eq!(
        atbus_cli::sample::capture_stream().unwrap(),
        sample("capture.bin"),
        "samples/ is stale: run `cargo xtask sample`"
    );
    assert_eq!(
        atbus_cli::sample::capture_datagrams().unwrap(),
        sample("capture-datagrams.bin"),
        "samples/ is stale: run `cargo xtask sample`"
    );
}

#[test]
fn sample_line_shape() {
    let lines = atbus(&["inspect"], &sample("capture.bin")).lines();
    assert_eq!(lines.len(), 6);
    let packet = &lines[3];
    assert_eq!(packet["version"], 1);
    assert_eq!(packet["length"], 144);
    assert_eq!(packet["hash_ok"], true);
    assert!(packet.get("datagram").is_none());
    let fragments = &packet["frame"]["packet"]["content_decoded"]["fragment"];
    assert_eq!(
        fragments[0]["labels"],
        json!({"app": "chat", "room": "lobby"})
    );
    assert!(
        fragments[0].get("fragment_flag").is_none(),
        "defaults are omitted"
    );
    assert_eq!(fragments[1]["fragment_flag"], 1);
    assert_eq!(
        packet["frame"]["packet"]["stream_id"], "1",
        "int64 as string"
    );
    assert_eq!(
        lines[0]["frame"]["handshake"]["hello"]["node_name"],
        "node-a"
    );
    assert_eq!(lines[5]["frame"]["link_close"]["code"], 5);
}

#[test]
fn stdin_dash_and_no_file_agree() {
    let capture = sample("capture.bin");
    let a = atbus(&["inspect", "-"], &capture);
    let b = atbus(&["inspect"], &capture);
    assert_eq!(a.code, 0);
    assert_eq!(a.stdout, b.stdout);
    assert_eq!(a.stdout, sample_str("capture.jsonl"));
}

#[test]
fn hex_input() {
    let capture = sample("capture.bin");
    let ping = &capture[114..128];
    let out = atbus(&["inspect", "--hex", &hex(ping)], b"");
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(
        out.lines(),
        [
            json!({"offset": 0, "version": 1, "length": 8, "hash_ok": true,
                "frame": {"ping": {"ping_id": "1", "timepoint_microseconds": "1000000"}}})
        ]
    );
    // Whitespace anywhere, upper case, whole capture.
    let spaced: String = hex(&capture)
        .to_uppercase()
        .as_bytes()
        .chunks(6)
        .map(|c| format!("{}\n ", std::str::from_utf8(c).unwrap()))
        .collect();
    let out = atbus(&["inspect", "--hex", &spaced], b"");
    assert_eq!(out.stdout, sample_str("capture.jsonl"));
    // Hex datagram records.
    let out = atbus(
        &[
            "inspect",
            "--datagram",
            "--hex",
            &hex(&sample("capture-datagrams.bin")),
        ],
        b"",
    );
    assert_eq!(out.stdout, sample_str("capture-datagrams.jsonl"));
}

#[test]
fn bad_hex_and_missing_file_are_usage_errors() {
    let out = atbus(&["inspect", "--hex", "0g"], b"");
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("invalid hex"), "{}", out.stderr);
    let out = atbus(&["inspect", "--hex", "abc"], b"");
    assert_eq!(out.code, 2);
    let out = atbus(&["inspect", "/nonexistent/capture.bin"], b"");
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("/nonexistent/capture.bin"),
        "{}",
        out.stderr
    );
    let out = atbus(&["inspect", "file.bin", "--hex", "00"], b"");
    assert_eq!(out.code, 2, "FILE and --hex conflict");
}

#[test]
fn empty_input_prints_nothing() {
    let out = atbus(&["inspect"], b"");
    assert_eq!((out.code, out.stdout.as_str()), (0, ""));
    let out = atbus(&["inspect", "--datagram"], b"");
    assert_eq!((out.code, out.stdout.as_str()), (0, ""));
}

#[test]
fn hash_mismatch_stops_a_byte_stream() {
    let mut capture = sample("capture.bin");
    // Last hash byte of the packet_data package (142..293).
    capture[292] ^= 0x01;
    let out = atbus(&["inspect"], &capture);
    assert_eq!(out.code, 1);
    let lines = out.lines();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    let expected: Vec<serde_json::Value> = sample_str("capture.jsonl")
        .lines()
        .take(3)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[..3], expected[..]);
    assert_eq!(lines[3]["offset"], 142);
    assert_eq!(lines[3]["error_kind"], "hash_mismatch");
    assert!(
        lines[3]["error"]
            .as_str()
            .unwrap()
            .starts_with("package hash mismatch")
    );
    assert_eq!(
        lines[3].as_object().unwrap().len(),
        3,
        "offset, error_kind, error"
    );
    assert!(out.stderr.contains("1 errors"), "{}", out.stderr);
}

#[test]
fn corrupt_byte_in_frame_is_a_hash_mismatch() {
    let mut capture = sample("capture.bin");
    capture[200] ^= 0x80;
    let lines = atbus(&["inspect"], &capture).lines();
    assert_eq!(lines.last().unwrap()["error_kind"], "hash_mismatch");
}

#[test]
fn datagram_errors_skip_to_the_next_datagram() {
    let mut capture = sample("capture-datagrams.bin");
    // Datagram 1 (ping + pong) starts at 118 (record header) + 4; flip the ping's hash.
    capture[122 + 13] ^= 0xff;
    let out = atbus(&["inspect", "--datagram"], &capture);
    assert_eq!(out.code, 1);
    let lines = out.lines();
    let kinds: Vec<(u64, Option<&str>)> = lines
        .iter()
        .map(|l| (l["datagram"].as_u64().unwrap(), l["error_kind"].as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (0, None),
            (1, Some("hash_mismatch")),
            (2, None),
            (3, None),
            (3, None)
        ]
    );
    assert_eq!(lines[1]["offset"], 122);
}

#[test]
fn truncated_stream_is_an_error() {
    let capture = sample("capture.bin");
    let out = atbus(&["inspect"], &capture[..capture.len() - 3]);
    assert_eq!(out.code, 1);
    let lines = out.lines();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[5]["offset"], 350);
    assert_eq!(lines[5]["error_kind"], "truncated");
    assert_eq!(
        lines[5]["error"],
        "package truncated: 25 bytes needed, 22 available"
    );
    // Ending inside the header.
    let out = atbus(&["inspect"], &capture[..351]);
    assert_eq!(out.code, 1);
    assert_eq!(out.lines()[5]["error_kind"], "truncated");
}

#[test]
fn truncated_datagram_records() {
    let capture = sample("capture-datagrams.bin");
    let out = atbus(&["inspect", "--datagram"], &capture[..capture.len() - 1]);
    assert_eq!(out.code, 1);
    let lines = out.lines();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[4]["datagram"], 3);
    assert_eq!(lines[4]["error_kind"], "truncated");
    let mut capture = capture;
    capture.extend_from_slice(&[1, 0]);
    let lines = atbus(&["inspect", "--datagram"], &capture).lines();
    assert_eq!(lines.len(), 7);
    assert_eq!(lines[6]["error_kind"], "truncated");
    assert_eq!(lines[6]["datagram"], 4);
}

#[test]
fn datagram_edge_cases() {
    let ping = &sample("capture.bin")[114..128];
    let mut capture = record(&[]);
    capture.extend(record(&vec![0u8; 70_000]));
    capture.extend(record(&[ping, &[0x01][..]].concat()));
    capture.extend(record(ping));
    let out = atbus(&["inspect", "--datagram"], &capture);
    assert_eq!(out.code, 1);
    let kinds: Vec<_> = out
        .lines()
        .iter()
        .map(|l| l["error_kind"].as_str().unwrap_or("ok").to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "empty_datagram",
            "datagram_too_long",
            "ok",
            "truncated",
            "ok"
        ]
    );
}

#[test]
fn unsupported_version() {
    let ping = &sample("capture.bin")[116..124];
    let mut capture = package(ping);
    capture.extend(package_with_version(2, ping));
    let out = atbus(&["inspect"], &capture);
    assert_eq!(out.code, 1);
    let lines = out.lines();
    assert_eq!(lines[0]["frame"]["ping"]["ping_id"], "1");
    assert_eq!(lines[1]["offset"], 14);
    assert_eq!(lines[1]["error_kind"], "unsupported_version");
    assert_eq!(
        lines[1]["error"],
        "unsupported package version 2 (this implementation speaks 1)"
    );
}

#[test]
fn overlong_varint_and_frame_too_long() {
    let mut overlong = vec![0x01];
    overlong.extend([0xff; 11]);
    let out = atbus(&["inspect", "--hex", &hex(&overlong)], b"");
    assert_eq!(out.code, 1);
    assert_eq!(out.lines()[0]["error_kind"], "overlong_varint");

    let path = sample_path("capture.bin");
    let out = atbus(
        &[
            "inspect",
            "--max-frame-length",
            "100",
            path.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out.code, 1);
    let lines = out.lines();
    assert_eq!(lines.len(), 1, "the stream stops at the first error");
    assert_eq!(lines[0]["error_kind"], "frame_too_long");
}

#[test]
fn protobuf_error_with_good_hash_continues() {
    let ping = &sample("capture.bin")[114..128];
    // 0xff is field 31 with wire type 7: not protobuf.
    let mut capture = package(&[0xff, 0x01]);
    capture.extend_from_slice(ping);
    let out = atbus(&["inspect"], &capture);
    assert_eq!(out.code, 1);
    let lines = out.lines();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["error_kind"], "protobuf");
    assert!(
        lines[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("frame_message does not decode")
    );
    assert_eq!(lines[1]["offset"], 8);
    assert_eq!(lines[1]["frame"]["ping"]["ping_id"], "1");
}

/// A frame_message holding `packet { content: <content> flags: <flags> padding_size: <pad> }`,
/// encoded by hand.
fn packet_frame(content: &[u8], flags: u8, padding: u8) -> Vec<u8> {
    let mut packet = vec![0x1a];
    common::varint(content.len() as u64, &mut packet);
    packet.extend_from_slice(content);
    packet.extend([0x20, flags, 0x28, padding]);
    let mut frame = vec![0x3a];
    common::varint(packet.len() as u64, &mut frame);
    frame.extend(packet);
    frame
}

#[test]
fn content_decoding_rules() {
    // packet_content { fragment { data: "hi" } }
    let content = [0x0a, 0x04, 0x12, 0x02, b'h', b'i'];
    let decoded = json!({"fragment": [{"data": "aGk="}]});
    let run = |frame: Vec<u8>| atbus(&["inspect", "--hex", &hex(&package(&frame))], b"").lines();

    let plain = run(packet_frame(&content, 0, 0));
    assert_eq!(plain[0]["frame"]["packet"]["content_decoded"], decoded);
    // ENCRYPTED (32) and COMPRESSED (64) content is never decoded.
    for flags in [32, 64] {
        let lines = run(packet_frame(&content, flags, 0));
        assert!(lines[0]["frame"]["packet"].get("content_decoded").is_none());
        assert_eq!(lines[0]["frame"]["packet"]["content"], "CgQSAmhp");
    }
    // Padding is ignored.
    let padded = [&content[..], &[0xff, 0xff, 0xff]].concat();
    let lines = run(packet_frame(&padded, 0, 3));
    assert_eq!(lines[0]["frame"]["packet"]["content_decoded"], decoded);
    assert_eq!(lines[0]["frame"]["packet"]["padding_size"], 3);
    // Bytes that are not a packet_content (or parse only with unknown fields) stay undecoded.
    for raw in [
        &b"plain text"[..],
        &[0x08, 0x01][..],
        &[0x0a, 0x02, 0x40, 0x01][..],
    ] {
        let lines = run(packet_frame(raw, 0, 0));
        assert_eq!(lines.len(), 1);
        assert!(lines[0].get("error").is_none());
        assert!(
            lines[0]["frame"]["packet"].get("content_decoded").is_none(),
            "{raw:?}: {}",
            lines[0]
        );
    }
}

#[test]
fn help_describes_everything() {
    let out = atbus(&["--help"], b"");
    assert_eq!(out.code, 0);
    for word in ["inspect", "demo"] {
        assert!(out.stdout.contains(word), "{}", out.stdout);
    }
    let out = atbus(&["inspect", "--help"], b"");
    assert_eq!(out.code, 0);
    for word in [
        "--datagram",
        "--hex",
        "FILE",
        "hash_ok",
        "content_decoded",
        "error_kind",
        "Exit status",
    ] {
        assert!(out.stdout.contains(word), "missing {word}: {}", out.stdout);
    }
}

#[test]
fn demo_tour_summarises_the_embedded_sample() {
    let out = atbus(&["demo", "--tour"], b"");
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert!(out.stdout.contains("varint version | varint length"));
    assert!(
        out.stdout
            .contains("#3 @142 [node-a -> node-b] packet stream 1 offset 0")
    );
    let json_lines: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with('{')).collect();
    let expected = sample_str("capture.jsonl");
    assert_eq!(json_lines, expected.lines().collect::<Vec<_>>());
    assert!(out.stdout.contains("6 packages, 0 errors"));
}

#[test]
fn demo_runs_a_session_over_three_paths_and_verifies_every_message() {
    let out = atbus(&["demo"], b"");
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert!(out.stdout.contains("one session, three paths at once"));
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("delivered exactly once, in order, byte for byte"))
        .expect("verification line");
    assert!(line.trim_start().starts_with("900/900 messages"), "{line}");
    assert!(line.ends_with("yes"), "{line}");
    assert!(out.stdout.contains("(dead: removed at 300 ms"));
}
