//! Two sessions over one in-memory byte-stream path: the pump shared by the session benchmark
//! and the `pump` profiling example.

use std::time::{Duration, Instant};

use atbus_frame::{FrameLimits, StreamDecoder};
use atbus_stream::{
    Delivery, OutgoingMessage, PathConfig, PathId, PathKind, Session, SessionConfig,
};
use bytes::Bytes;

/// Messages per round.
pub const BATCH: usize = 256;

/// Two sessions and the buffers that join them.
pub struct Pair {
    now: Instant,
    a: Session,
    b: Session,
    pa: PathId,
    pb: PathId,
    buf: Vec<u8>,
    decoder_ab: StreamDecoder,
    decoder_ba: StreamDecoder,
}

impl Pair {
    /// A pair with windows large enough for a whole round.
    pub fn new() -> Self {
        let now = Instant::now();
        let mut ca = SessionConfig::new("node-a", "node-b");
        let mut cb = SessionConfig::new("node-b", "node-a");
        for c in [&mut ca, &mut cb] {
            c.stream_receive_window = 32 * 1024 * 1024;
            c.session_receive_window = 64 * 1024 * 1024;
            c.stream_send_buffer = 32 * 1024 * 1024;
        }
        let mut a = Session::new(ca, now);
        let mut b = Session::new(cb, now);
        let pa = a
            .add_path(now, PathConfig::new(PathKind::ByteStream, 65_535))
            .expect("path");
        let pb = b
            .add_path(now, PathConfig::new(PathKind::ByteStream, 65_535))
            .expect("path");
        Self {
            now,
            a,
            b,
            pa,
            pb,
            buf: Vec::with_capacity(128 * 1024),
            decoder_ab: StreamDecoder::new(FrameLimits::default()),
            decoder_ba: StreamDecoder::new(FrameLimits::default()),
        }
    }

    /// Sends a batch of messages and pumps until all are read and acknowledged.
    pub fn round(&mut self, payload: &Bytes) -> usize {
        for _ in 0..BATCH {
            self.a
                .send(1, OutgoingMessage::data(payload.clone()))
                .expect("room");
        }
        let mut got = 0;
        loop {
            while let Some(t) = self.a.poll_transmit(self.now, &mut self.buf) {
                self.decoder_ab.feed(&self.buf[..t.size]);
                while let Some(p) = self.decoder_ab.next_package().expect("valid") {
                    let wire = p.wire_len;
                    self.b
                        .handle_frame(self.now, self.pb, p.into_frame().expect("frame"), wire)
                        .expect("ok");
                }
            }
            while let Some(Delivery::Message(m)) = self.b.read(1) {
                got += m.data.len();
            }
            while let Some(t) = self.b.poll_transmit(self.now, &mut self.buf) {
                self.decoder_ba.feed(&self.buf[..t.size]);
                while let Some(p) = self.decoder_ba.next_package().expect("valid") {
                    let wire = p.wire_len;
                    self.a
                        .handle_frame(self.now, self.pa, p.into_frame().expect("frame"), wire)
                        .expect("ok");
                }
            }
            if got == BATCH * payload.len() && self.a.send_buffered() == 0 {
                return got;
            }
            // Acks wait for the ack delay when fewer than two packets arrived.
            self.now += Duration::from_millis(20);
            self.a.handle_timeout(self.now);
            self.b.handle_timeout(self.now);
        }
    }
}
