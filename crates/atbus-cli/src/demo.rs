//! The last part of `atbus demo --tour`: a guided dissection of the sample capture.
//!
//! It explains the wire format and runs `inspect` over the capture embedded in the binary,
//! printing a human-readable summary line before each package's JSON.

use std::io::Write;

use atbus_proto::FrameMessage;
use atbus_proto::frame_message::Body;
use atbus_proto::handshake_data::Step;
use prost::Message;

use crate::inspect::{self, InspectError, Options, Record, Stats};

/// What the demo prints before the dissection.
pub const INTRO: &str = "\
Every frame on an atbus link travels in a package:
  varint version | varint length | frame_message (length bytes) | 4-byte XXH3 hash
This demo dissects the sample capture built into the binary (samples/capture.bin): a link
handshake, a ping and its pong, one data packet carrying two message fragments, the peer's
acknowledgement and a link close. Each package gets a summary line, then the JSON line that
`atbus inspect` prints for it.
";

/// One human-readable line describing a decoded package: kind, stream, sizes.
pub fn summary_line(index: u64, offset: u64, wire_len: usize, frame: &FrameMessage) -> String {
    let route = match &frame.head {
        Some(head) => format!("{} -> {}", head.source, head.destination),
        None => "link".to_string(),
    };
    let detail = match &frame.body {
        None => "empty frame".to_string(),
        Some(Body::Handshake(h)) => match &h.step {
            Some(Step::Hello(hello)) => format!(
                "handshake hello from {:?} in {:?}",
                hello.node_name, hello.namespace_name
            ),
            Some(Step::HelloReply(hello)) => {
                format!("handshake hello_reply from {:?}", hello.node_name)
            }
            Some(Step::Confirm(_)) => "handshake confirm".into(),
            Some(Step::Accept(a)) => format!("handshake accept, name {:?}", a.assigned_name),
            Some(Step::Retry(_)) => "handshake retry".into(),
            None => "handshake (no step)".into(),
        },
        Some(Body::Ping(p)) => format!("ping id {}", p.ping_id),
        Some(Body::Pong(p)) => format!("pong id {}", p.ping_id),
        Some(Body::Packet(p)) => {
            let fragments = atbus_proto::PacketContent::decode(p.content.clone())
                .map(|c| {
                    let data: usize = c.fragment.iter().map(|f| f.data.len()).sum();
                    format!(", {} fragments, {data} B data", c.fragment.len())
                })
                .unwrap_or_default();
            format!(
                "packet stream {} offset {} pn {}, content {} B{fragments}",
                p.stream_id,
                p.stream_offset,
                p.packet_number,
                p.content.len()
            )
        }
        Some(Body::Acknowledge(a)) => {
            let streams: Vec<String> = a
                .streams
                .iter()
                .map(|s| format!("stream {} acked to {}", s.stream_id, s.acknowledge_offset))
                .collect();
            format!("acknowledge path {}: {}", a.path_id, streams.join(", "))
        }
        Some(Body::LinkClose(c)) => format!("link_close code {} {:?}", c.code, c.message),
        Some(Body::ForwardError(e)) => {
            format!("forward_error code {} for {:?}", e.code, e.destination)
        }
        Some(Body::RelayedHandshake(h)) => {
            use atbus_proto::relayed_handshake_data::Step as R;
            match &h.step {
                Some(R::Hello(h)) => format!("relayed hello from {:?}", h.node_name),
                Some(R::HelloReply(h)) => format!("relayed hello_reply from {:?}", h.node_name),
                Some(R::Confirm(_)) => "relayed confirm".into(),
                Some(R::Refuse(c)) => format!("relayed refuse code {} {:?}", c.code, c.message),
                None => "relayed handshake (no step)".into(),
            }
        }
    };
    format!(
        "#{index} @{offset} [{route}] {detail} (frame {} B, package {wire_len} B)",
        frame.encoded_len()
    )
}

/// Prints [`INTRO`], then a summary line and the JSON line of each package of `capture` (a byte
/// stream), then a closing line.
pub fn run<W: Write>(capture: &[u8], mut out: W) -> Result<Stats, InspectError> {
    out.write_all(INTRO.as_bytes())
        .and_then(|()| writeln!(out))
        .map_err(InspectError::Write)?;
    let mut index = 0u64;
    let stats = inspect::inspect_with(capture, &Options::default(), |record| {
        if let Record::Package(p) = record {
            if let Ok(frame) = FrameMessage::decode(p.frame_bytes.clone()) {
                writeln!(out, "{}", summary_line(index, p.offset, p.wire_len, &frame))?;
            }
            index += 1;
        }
        serde_json::to_writer(&mut out, record)?;
        writeln!(out)?;
        writeln!(out)
    })?;
    writeln!(
        out,
        "{} packages, {} errors, {} bytes. Dissect a capture of your own with \
         `atbus inspect FILE` (or `--datagram`, `--hex`); see `atbus inspect --help`.",
        stats.packages,
        stats.errors,
        capture.len()
    )
    .and_then(|()| out.flush())
    .map_err(InspectError::Write)?;
    Ok(stats)
}
