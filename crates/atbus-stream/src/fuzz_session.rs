//! Body of the `stream_session` fuzz target: a session fed arbitrary frames on two paths, with
//! time advancing, reads, sends and transmits in between. Kept in the library so ordinary tests
//! replay the corpus on stable Rust. It panics only when an invariant breaks.

use std::time::{Duration, Instant};

use atbus_proto::FrameMessage;
use prost::Message;

use crate::{Delivery, OutgoingMessage, PathConfig, PathKind, Session, SessionConfig};

/// Interprets `data` as a script: each step is `op, len, bytes[len]`.
///
/// - `op & 3 == 0`: decode the bytes as a `frame_message` and hand it to path `op >> 2 & 1`;
/// - `op & 3 == 1`: advance time by `len` milliseconds and run the timers;
/// - `op & 3 == 2`: queue a message of `len + 1` bytes on stream `op >> 2 & 3`;
/// - `op & 3 == 3`: read every stream and drain events.
///
/// After each step every transmit is drained and checked against its path MTU, and receive
/// memory against the configured windows.
pub fn session_frames(data: &[u8]) {
    let epoch = Instant::now();
    let mut now = epoch;
    let mut config = SessionConfig::new("fuzz-a", "fuzz-b");
    config.stream_receive_window = 16 * 1024;
    config.session_receive_window = 64 * 1024;
    config.max_streams = 16;
    let window = config.session_receive_window as usize;
    let mut session = Session::new(config, now);
    let mtus = [548usize, 4096];
    let paths = [
        session
            .add_path(now, PathConfig::new(PathKind::Datagram, mtus[0]))
            .expect("valid MTU"),
        session
            .add_path(now, PathConfig::new(PathKind::ByteStream, mtus[1]))
            .expect("valid MTU"),
    ];
    let mut buf = Vec::new();
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let take = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(take);
        rest = next;
        match op & 3 {
            0 => {
                if let Ok(frame) = FrameMessage::decode(bytes) {
                    let path = paths[usize::from(op >> 2 & 1)];
                    // Protocol errors are fine; they close the session.
                    let _ = session.handle_frame(now, path, frame, bytes.len());
                }
            }
            1 => {
                now += Duration::from_millis(u64::from(*len));
                session.handle_timeout(now);
            }
            2 => {
                let stream = i64::from(op >> 2 & 3);
                let _ = session.send(
                    stream,
                    OutgoingMessage::data(vec![*op; usize::from(*len) + 1]),
                );
            }
            _ => {
                for stream in 0..16 {
                    while let Some(d) = session.read(stream) {
                        if let Delivery::Message(m) = d {
                            assert!(!m.data.is_empty(), "messages are never empty");
                        }
                    }
                }
                while session.poll_event().is_some() {}
            }
        }
        while let Some(t) = session.poll_transmit(now, &mut buf) {
            let index = paths.iter().position(|&p| p == t.path).expect("known path");
            assert_eq!(t.size, buf.len());
            if index == 0 {
                assert!(t.size <= mtus[0], "datagram {} over MTU", t.size);
            }
        }
        // One forced piece (a byte-stream frame) may exceed the window.
        assert!(
            session.receive_buffered() <= window + 2 * mtus[1],
            "receive buffer {} over its bound",
            session.receive_buffered()
        );
        if let Some(t) = session.poll_timeout() {
            assert!(t >= epoch);
        }
    }
}
