//! `atbus inspect --reassemble` run as a process on captures built here: multi-path captures
//! with duplicates and reordering, skips, gaps, metadata, final sizes, and the shipped sample.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use atbus_frame::{FrameLimits, encode};
use atbus_proto::frame_message::Body;
use atbus_proto::packet_content::FragmentType;
use atbus_proto::{
    FrameMessage, MessageHead, PacketContent, PacketData, PacketOptions, fragment_flags,
    packet_flags,
};
use base64::Engine;
use common::{Output, atbus, record, sample_path};
use prost::Message;
use serde_json::{Value, json};

/// A fragment of `data`; `more` sets `HAS_MORE`.
fn frag(data: &[u8], more: bool) -> FragmentType {
    FragmentType {
        data: data.to_vec().into(),
        fragment_flag: if more { fragment_flags::HAS_MORE } else { 0 },
        ..Default::default()
    }
}

/// A `packet_data` frame from `source` to `destination`.
fn packet_from(
    source: &str,
    destination: &str,
    stream_id: i64,
    offset: u64,
    flags: i32,
    fragments: Vec<FragmentType>,
) -> FrameMessage {
    FrameMessage {
        head: Some(MessageHead {
            source: source.into(),
            destination: destination.into(),
            ..Default::default()
        }),
        body: Some(Body::Packet(PacketData {
            stream_id,
            stream_offset: offset as i64,
            content: PacketContent {
                fragment: fragments,
            }
            .encode_to_vec()
            .into(),
            flags,
            ..Default::default()
        })),
    }
}

/// A `packet_data` frame of stream 1 from `a` to `b`.
fn packet(offset: u64, flags: i32, fragments: Vec<FragmentType>) -> FrameMessage {
    packet_from("a", "b", 1, offset, flags, fragments)
}

/// The frames as a byte stream.
fn capture(frames: &[FrameMessage]) -> Vec<u8> {
    let mut out = Vec::new();
    for frame in frames {
        encode(frame, &FrameLimits::default(), &mut out).unwrap();
    }
    out
}

/// Writes `bytes` to a fresh file for this test.
fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("reassemble-{name}"));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Runs `atbus inspect --reassemble` on the files.
fn reassemble(files: &[&PathBuf]) -> Output {
    let mut args = vec!["inspect", "--reassemble"];
    args.extend(files.iter().map(|p| p.to_str().unwrap()));
    atbus(&args, b"")
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn unb64(value: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(value.as_str().unwrap())
        .unwrap()
}

/// The message lines.
fn messages(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|l| l.get("data").is_some()).collect()
}

/// The summary of each stream, in output order.
fn summaries(lines: &[Value]) -> Vec<&Value> {
    lines
        .iter()
        .filter_map(|l| l.get("stream_summary"))
        .collect()
}

/// `n` bytes of a recognisable pattern.
fn bytes(seed: u8, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| seed.wrapping_add((i as u8).wrapping_mul(7)))
        .collect()
}

#[test]
fn multi_path_duplicates_and_reordering_deliver_each_message_once_in_order() {
    let m1 = bytes(1, 50);
    let m2 = bytes(100, 70);
    let stream: Vec<u8> = [m1.as_slice(), m2.as_slice()].concat();
    let ends = [50u64, 120];
    // Path A: 16-byte fragments, one packet each (a fragment ends a message when it reaches one
    // of `ends`; the one spanning 48..64 is cut in two fragments at the boundary).
    let mut path_a = Vec::new();
    let mut pos = 0u64;
    while pos < 120 {
        let end = (pos + 16).min(120);
        let frags = if pos < 50 && end > 50 {
            vec![
                frag(&stream[pos as usize..50], false),
                frag(&stream[50..end as usize], true),
            ]
        } else {
            vec![frag(
                &stream[pos as usize..end as usize],
                !ends.contains(&end),
            )]
        };
        path_a.push(packet(pos, 0, frags));
        pos = end;
    }
    // Reorder (reverse pairs) and duplicate two packets; drop the one at 64 (path B has it).
    let mut a = Vec::new();
    for pair in path_a.chunks(2) {
        a.extend(pair.iter().rev().cloned());
    }
    a.insert(3, a[0].clone());
    a.push(a[1].clone());
    a.retain(|f| match &f.body {
        Some(Body::Packet(p)) => p.stream_offset != 64,
        _ => true,
    });
    // Path B: whole messages, second first, then the first twice.
    let b = vec![
        packet(50, 0, vec![frag(&m2, false)]),
        packet(0, 0, vec![frag(&m1, false)]),
        packet(0, 0, vec![frag(&m1, false)]),
    ];
    let file_a = write("multi-a.bin", &capture(&a));
    let file_b = write("multi-b.bin", &capture(&b));

    for files in [[&file_a, &file_b], [&file_b, &file_a]] {
        let out = reassemble(&files);
        assert_eq!(out.code, 0, "stderr: {}", out.stderr);
        let lines = out.lines();
        let msgs = messages(&lines);
        assert_eq!(msgs.len(), 2, "{}", out.stdout);
        assert_eq!(msgs[0]["offset"], 0);
        assert_eq!(msgs[0]["length"], 50);
        assert_eq!(unb64(&msgs[0]["data"]), m1);
        assert_eq!(msgs[1]["offset"], 50);
        assert_eq!(msgs[1]["length"], 70);
        assert_eq!(unb64(&msgs[1]["data"]), m2);
        for m in &msgs {
            assert_eq!(m["source"], "a");
            assert_eq!(m["destination"], "b");
            assert_eq!(m["stream_id"], 1);
        }
        assert_eq!(
            summaries(&lines),
            [&json!({"source": "a", "destination": "b", "stream_id": 1,
                "delivered_messages": 2, "delivered_bytes": 120, "skipped_bytes": 0,
                "final_size": null, "finished": false, "gaps": [], "pending_bytes": 0,
                "read_offset": 120, "received_max": 120, "undecodable_packets": 0,
                "buffer_full_pieces": 0, "errors": 0})]
        );
        assert_eq!(lines.len(), 3);
    }

    // Path A alone misses 64..80: the first message only, the rest waits for the gap.
    let out = reassemble(&[&file_a]);
    let lines = out.lines();
    assert_eq!(messages(&lines).len(), 1);
    let summary = summaries(&lines)[0];
    assert_eq!(summary["gaps"], json!([[64, 80]]));
    assert_eq!(summary["pending_bytes"], 120 - 50 - 16);
}

#[test]
fn reset_offset_prints_a_skipped_range() {
    let frames = [
        packet(0, 0, vec![frag(b"0123456789", false)]),
        // The first half of a message that the sender then gives up on.
        packet(10, 0, vec![frag(b"abcde", true)]),
        packet(20, packet_flags::RESET_OFFSET, vec![]),
        packet(20, 0, vec![frag(b"after skip", false)]),
        // A late retransmission inside the skipped range changes nothing.
        packet(15, 0, vec![frag(b"fghij", false)]),
    ];
    let file = write("skip.bin", &capture(&frames));
    let out = reassemble(&[&file]);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let lines = out.lines();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    assert_eq!(lines[0]["data"], b64(b"0123456789"));
    assert_eq!(
        lines[1],
        json!({"source": "a", "destination": "b", "stream_id": 1,
            "skipped": {"offset": 10, "length": 10}})
    );
    assert_eq!(lines[2]["offset"], 20);
    assert_eq!(lines[2]["data"], b64(b"after skip"));
    let summary = &lines[3]["stream_summary"];
    assert_eq!(summary["skipped_bytes"], 10);
    assert_eq!(summary["delivered_messages"], 2);
    assert_eq!(summary["delivered_bytes"], 20);
    assert_eq!(summary["gaps"], json!([]));
}

#[test]
fn a_missing_middle_packet_is_a_gap_and_holds_back_later_messages() {
    let frames = [
        packet(0, 0, vec![frag(b"first", false)]),
        // 5..11 "second" is missing.
        packet(11, 0, vec![frag(b"third", false)]),
        packet(16, 0, vec![frag(b"four", true)]),
    ];
    let file = write("gap.bin", &capture(&frames));
    let out = reassemble(&[&file]);
    assert_eq!(out.code, 0, "gaps are not errors; stderr: {}", out.stderr);
    let lines = out.lines();
    let msgs = messages(&lines);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["data"], b64(b"first"));
    assert_eq!(
        summaries(&lines)[0],
        &json!({"source": "a", "destination": "b", "stream_id": 1,
            "delivered_messages": 1, "delivered_bytes": 5, "skipped_bytes": 0,
            "final_size": null, "finished": false, "gaps": [[5, 11]], "pending_bytes": 9,
            "read_offset": 5, "received_max": 20, "undecodable_packets": 0,
            "buffer_full_pieces": 0, "errors": 0})
    );
}

#[test]
fn metadata_of_the_first_fragment_is_printed() {
    let mut first = frag(b"meta", true);
    first.packet_type = 300;
    first.labels = BTreeMap::from([
        ("zone".to_string(), "eu".to_string()),
        ("app".to_string(), "chat".to_string()),
    ]);
    first.options = Some(Box::new(PacketOptions {
        token: b"tok".to_vec().into(),
        deadline_unix_ms: 1_700_000_000_123,
        ..Default::default()
    }));
    let mut second = frag(b"data", false);
    // Metadata on a later fragment is not the message's.
    second.packet_type = 7;
    let frames = [
        packet(0, 0, vec![first, second]),
        packet(8, 0, vec![frag(b"plain", false)]),
    ];
    let file = write("meta.bin", &capture(&frames));
    let out = reassemble(&[&file]);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let first_line = out.stdout.lines().next().unwrap();
    assert_eq!(
        first_line,
        format!(
            r#"{{"source":"a","destination":"b","stream_id":1,"offset":0,"length":8,"packet_type":300,"labels":{{"app":"chat","zone":"eu"}},"options":{{"deadline_unix_ms":"1700000000123","token":"{}"}},"data":"{}"}}"#,
            b64(b"tok"),
            b64(b"metadata")
        )
    );
    let lines = out.lines();
    let plain = messages(&lines)[1];
    assert_eq!(plain["packet_type"], 0);
    assert_eq!(plain["labels"], json!({}));
    assert!(plain.get("options").is_none());
}

#[test]
fn finish_and_reset_stream_set_the_final_size() {
    let frames = [
        // FINISH arrives before the data preceding it.
        packet(6, packet_flags::FINISH_STREAM, vec![frag(b"world", false)]),
        packet(0, 0, vec![frag(b"hello ", false)]),
        // Stream 2 is abandoned at 4 with a message half received.
        packet_from("a", "b", 2, 0, 0, vec![frag(b"ab", true)]),
        packet_from("a", "b", 2, 4, packet_flags::RESET_STREAM, vec![]),
        // The reverse direction is another stream.
        packet_from("b", "a", 1, 0, 0, vec![frag(b"reply", false)]),
    ];
    let file = write("finish.bin", &capture(&frames));
    let out = reassemble(&[&file]);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let lines = out.lines();
    let sums = summaries(&lines);
    assert_eq!(sums.len(), 3);
    // Sorted by (source, destination, stream_id).
    assert_eq!(
        (&sums[0]["source"], &sums[0]["stream_id"]),
        (&json!("a"), &json!(1))
    );
    assert_eq!(sums[0]["final_size"], 11);
    assert_eq!(sums[0]["finished"], true);
    assert_eq!(sums[0]["delivered_messages"], 2);
    assert_eq!(
        (&sums[1]["source"], &sums[1]["stream_id"]),
        (&json!("a"), &json!(2))
    );
    assert_eq!(sums[1]["final_size"], 4);
    assert_eq!(sums[1]["finished"], true);
    assert_eq!(sums[1]["skipped_bytes"], 4);
    assert_eq!(sums[2]["source"], "b");
    assert_eq!(sums[2]["finished"], false);
    assert!(
        lines.contains(&json!({"source": "a", "destination": "b", "stream_id": 2,
        "skipped": {"offset": 0, "length": 4}}))
    );
    let msgs: Vec<_> = messages(&lines).iter().map(|m| unb64(&m["data"])).collect();
    assert_eq!(msgs, [&b"hello "[..], b"world", b"reply"]);
}

#[test]
fn data_past_the_final_size_is_an_error_line_and_exit_1() {
    let frames = [
        packet(0, packet_flags::FINISH_STREAM, vec![frag(b"done", false)]),
        packet(4, 0, vec![frag(b"late", false)]),
    ];
    let file = write("beyond.bin", &capture(&frames));
    let out = reassemble(&[&file]);
    assert_eq!(out.code, 1);
    let lines = out.lines();
    let error = lines
        .iter()
        .find(|l| l.get("error_kind").is_some())
        .unwrap();
    assert_eq!(error["error_kind"], "reassembly");
    assert_eq!(error["stream_id"], 1);
    assert_eq!(error["file"], file.to_str().unwrap());
    assert_eq!(summaries(&lines)[0]["errors"], 1);
    assert_eq!(summaries(&lines)[0]["finished"], true);
}

#[test]
fn encrypted_packets_are_counted_as_undecodable() {
    let frames = [
        packet(0, 0, vec![frag(b"clear", false)]),
        packet(5, packet_flags::ENCRYPTED, vec![frag(b"secret", false)]),
    ];
    let file = write("encrypted.bin", &capture(&frames));
    let out = reassemble(&[&file]);
    assert_eq!(out.code, 0);
    let lines = out.lines();
    let summary = summaries(&lines)[0];
    assert_eq!(summary["undecodable_packets"], 1);
    assert_eq!(summary["delivered_messages"], 1);
}

#[test]
fn max_buffered_refuses_pieces_and_streams_instead_of_growing() {
    let frames = [
        packet(10, 0, vec![frag(&[1; 400], false)]),
        packet(410, 0, vec![frag(&[2; 400], false)]),
        packet(0, 0, vec![frag(&[0; 10], false)]),
        // A second stream's state does not fit the budget beside the first one's.
        packet_from("a", "b", 2, 0, 0, vec![frag(b"other", false)]),
        packet_from("a", "b", 2, 5, 0, vec![frag(b"other", false)]),
    ];
    let file = write("limit.bin", &capture(&frames));
    let out = atbus(
        &[
            "inspect",
            "--reassemble",
            "--max-buffered",
            "600",
            file.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let lines = out.lines();
    assert_eq!(messages(&lines).len(), 2);
    let sums = summaries(&lines);
    assert_eq!(sums.len(), 1);
    assert_eq!(sums[0]["buffer_full_pieces"], 1);
    assert_eq!(sums[0]["gaps"], json!([[410, 810]]));
    assert_eq!(sums[0]["received_max"], 410);
    assert_eq!(
        lines.last().unwrap(),
        &json!({"untracked_streams": {"packets": 2}})
    );
}

#[test]
fn decode_errors_print_as_in_inspect_with_the_file_and_exit_1() {
    let mut bytes = capture(&[packet(0, 0, vec![frag(b"ok", false)])]);
    let good = bytes.clone();
    let last = bytes.len() - 1;
    bytes[last] ^= 1; // break the hash
    let bad = write("bad.bin", &bytes);
    let good = write("good.bin", &good);
    let out = reassemble(&[&bad, &good]);
    assert_eq!(out.code, 1);
    let lines = out.lines();
    assert_eq!(lines[0]["file"], bad.to_str().unwrap());
    assert_eq!(lines[0]["error_kind"], "hash_mismatch");
    assert_eq!(lines[0]["offset"], 0);
    // The next file is still read.
    assert_eq!(lines[1]["data"], b64(b"ok"));
}

#[test]
fn the_shipped_sample_reassembles() {
    // The sample's one packet holds a whole message and the first fragment of a second one.
    let expected = concat!(
        r#"{"source":"node-a","destination":"node-b","stream_id":1,"offset":0,"length":13,"packet_type":0,"labels":{"app":"chat","room":"lobby"},"data":"aGVsbG8sIG5vZGUtYg=="}"#,
        "\n",
        r#"{"stream_summary":{"source":"node-a","destination":"node-b","stream_id":1,"delivered_messages":1,"delivered_bytes":13,"skipped_bytes":0,"final_size":null,"finished":false,"gaps":[],"pending_bytes":30,"read_offset":13,"received_max":43,"undecodable_packets":0,"buffer_full_pieces":0,"errors":0}}"#,
        "\n",
    );
    let out = reassemble(&[&sample_path("capture.bin")]);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, expected);
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode("aGVsbG8sIG5vZGUtYg==")
            .unwrap(),
        b"hello, node-b"
    );
    let datagrams = sample_path("capture-datagrams.bin");
    let out = atbus(
        &[
            "inspect",
            "--reassemble",
            "--datagram",
            datagrams.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out.stdout, expected);
    // Standard input and --hex are inputs too.
    let capture = std::fs::read(sample_path("capture.bin")).unwrap();
    assert_eq!(
        atbus(&["inspect", "--reassemble"], &capture).stdout,
        expected
    );
    let hex = common::hex(&capture);
    assert_eq!(
        atbus(&["inspect", "--reassemble", "--hex", &hex], b"").stdout,
        expected
    );
}

#[test]
fn several_files_need_reassemble() {
    let path = sample_path("capture.bin");
    let p = path.to_str().unwrap();
    let out = atbus(&["inspect", p, p], b"");
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("--reassemble"), "{}", out.stderr);
    let out = atbus(&["inspect", "--max-buffered", "10", p], b"");
    assert_eq!(out.code, 2);
    // Datagram records of several files.
    let dg = write(
        "records.bin",
        &record(&capture(&[packet(0, 0, vec![frag(b"x", false)])])),
    );
    let out = atbus(
        &[
            "inspect",
            "--reassemble",
            "--datagram",
            dg.to_str().unwrap(),
            dg.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(
        messages(&out.lines()).len(),
        1,
        "duplicates are delivered once"
    );
}
