//! The sample capture shipped in `samples/`: six packages of a short exchange between `node-a`
//! and `node-b`, as a byte stream and as datagram records.
//!
//! `cargo xtask sample` writes the files from these functions; a test checks that the committed
//! files still equal what they return.

use std::collections::BTreeMap;

use atbus_frame::{FrameError, FrameLimits, encode};
use atbus_proto::frame_message::Body;
use atbus_proto::handshake_data::Step;
use atbus_proto::packet_content::FragmentType;
use atbus_proto::{
    AcknowledgeData, AtbusCloseReason, CloseReasonData, FrameMessage, HandshakeData,
    HandshakeHello, MessageHead, PacketContent, PacketData, PacketNumberRange, PingData,
    StreamAcknowledge, fragment_flags,
};
use bytes::Bytes;
use prost::Message;

/// How the sample's packages are grouped into datagrams (counts, in order).
pub const DATAGRAM_GROUPS: &[usize] = &[1, 2, 1, 2];

fn head(source: &str, destination: &str) -> Option<MessageHead> {
    Some(MessageHead {
        source: source.into(),
        destination: destination.into(),
        ..Default::default()
    })
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The `packet_content` carried by the sample's data packet: one whole message with labels,
/// then the first fragment of a second message (`HAS_MORE`).
pub fn packet_content() -> PacketContent {
    PacketContent {
        fragment: vec![
            FragmentType {
                data: Bytes::from_static(b"hello, node-b"),
                labels: labels(&[("app", "chat"), ("room", "lobby")]),
                ..Default::default()
            },
            FragmentType {
                packet_type: 256,
                data: Bytes::from_static(b"first half of a longer message"),
                fragment_flag: fragment_flags::HAS_MORE,
                labels: labels(&[("app", "chat"), ("trace", "t-42")]),
                ..Default::default()
            },
        ],
    }
}

/// The sample's frames, in capture order.
pub fn frames() -> Vec<FrameMessage> {
    let content = packet_content();
    let data_len: usize = content.fragment.iter().map(|f| f.data.len()).sum();
    let data_len = data_len as i64;
    vec![
        FrameMessage {
            head: None,
            body: Some(Body::Handshake(HandshakeData {
                step: Some(Step::Hello(HandshakeHello {
                    protocol_version: 1,
                    node_name: "node-a".into(),
                    namespace_name: "default".into(),
                    incarnation_id: 0x1f2e_3d4c_5b6a_7988,
                    nonce: (0u8..32).collect::<Vec<u8>>().into(),
                    capabilities: 3,
                    unix_time_ms: 1_700_000_000_000,
                    max_package_size: 65_536,
                    labels: labels(&[("role", "game"), ("zone", "eu-1")]),
                    ..Default::default()
                })),
                cookie: Bytes::new(),
            })),
        },
        FrameMessage {
            head: None,
            body: Some(Body::Ping(PingData {
                ping_id: 1,
                timepoint_microseconds: 1_000_000,
            })),
        },
        FrameMessage {
            head: None,
            body: Some(Body::Pong(PingData {
                ping_id: 1,
                timepoint_microseconds: 1_000_000,
            })),
        },
        FrameMessage {
            head: head("node-a", "node-b"),
            body: Some(Body::Packet(PacketData {
                stream_id: 1,
                stream_offset: 0,
                content: content.encode_to_vec().into(),
                flags: 0,
                padding_size: 0,
                timepoint_microseconds: 1_000_250,
                packet_number: 1,
                path_id: 1,
            })),
        },
        FrameMessage {
            head: head("node-b", "node-a"),
            body: Some(Body::Acknowledge(AcknowledgeData {
                streams: vec![StreamAcknowledge {
                    stream_id: 1,
                    acknowledge_offset: data_len,
                    received_max_offset: data_len,
                    max_stream_offset: data_len + 65_536,
                    closed: false,
                }],
                path_id: 1,
                received_packets: vec![PacketNumberRange { first: 1, last: 1 }],
                ack_delay_microseconds: 250,
                echo_timepoint_microseconds: 1_000_250,
                max_session_data: 1 << 20,
            })),
        },
        FrameMessage {
            head: None,
            body: Some(Body::LinkClose(CloseReasonData {
                code: AtbusCloseReason::Shutdown as i32,
                message: "demo finished".into(),
            })),
        },
    ]
}

/// The sample as a byte stream (`samples/capture.bin`).
pub fn capture_stream() -> Result<Vec<u8>, FrameError> {
    let limits = FrameLimits::default();
    let mut out = Vec::new();
    for frame in frames() {
        encode(&frame, &limits, &mut out)?;
    }
    Ok(out)
}

/// The sample as datagram records grouped by [`DATAGRAM_GROUPS`]
/// (`samples/capture-datagrams.bin`).
pub fn capture_datagrams() -> Result<Vec<u8>, FrameError> {
    let limits = FrameLimits::default();
    let mut frames = frames().into_iter();
    let mut out = Vec::new();
    for &count in DATAGRAM_GROUPS {
        let mut datagram = Vec::new();
        for frame in frames.by_ref().take(count) {
            encode(&frame, &limits, &mut datagram)?;
        }
        write_datagram_record(&mut out, &datagram);
    }
    Ok(out)
}

/// Appends one datagram record: `u32` little-endian length, then the datagram.
///
/// # Panics
/// If `datagram` is longer than `u32::MAX` bytes (no datagram is).
pub fn write_datagram_record(out: &mut Vec<u8>, datagram: &[u8]) {
    let len = u32::try_from(datagram.len()).expect("a datagram fits u32");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(datagram);
}
