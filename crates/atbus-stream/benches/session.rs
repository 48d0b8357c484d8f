//! Session throughput in memory: messages pushed through two sessions over one byte-stream
//! path with no simulated delay, beside the bare package codec doing the same bytes and a memcpy
//! plus two XXH3 passes of them, so the cost of the session layer reads as a ratio.
//!
//! `cargo bench -p atbus-stream --bench session`

use std::hint::black_box;
use std::time::{Duration, Instant};

use atbus_frame::{FrameLimits, StreamDecoder, encode};
use atbus_proto::{FrameMessage, MessageHead, PacketContent, PacketData, frame_message::Body};
use atbus_stream::{
    Delivery, OutgoingMessage, PathConfig, PathId, PathKind, Session, SessionConfig,
};
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;

const BATCH: usize = 256;

struct Pair {
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
    fn new() -> Self {
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
    fn round(&mut self, payload: &Bytes) -> usize {
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

/// The package codec alone over the same bytes: one packet per message, encoded and decoded.
fn codec_only(payload: &Bytes, buf: &mut Vec<u8>, decoder: &mut StreamDecoder) -> usize {
    let mut got = 0;
    for i in 0..BATCH {
        let content = PacketContent {
            fragment: vec![atbus_proto::packet_content::FragmentType {
                data: payload.clone(),
                ..Default::default()
            }],
        };
        let frame = FrameMessage {
            head: Some(MessageHead {
                source: "node-a".into(),
                destination: "node-b".into(),
                ..Default::default()
            }),
            body: Some(Body::Packet(PacketData {
                stream_id: 1,
                stream_offset: (i * payload.len()) as i64,
                content: content.encode_to_vec().into(),
                packet_number: i as i64,
                ..Default::default()
            })),
        };
        buf.clear();
        encode(&frame, &FrameLimits::default(), buf).expect("fits");
        decoder.feed(buf);
        while let Some(p) = decoder.next_frame().expect("valid") {
            if let Some(Body::Packet(pd)) = p.body {
                let c = PacketContent::decode(pd.content).expect("content");
                got += c.fragment.iter().map(|f| f.data.len()).sum::<usize>();
            }
        }
    }
    got
}

/// The bound the session is measured against: copy every message once and hash it twice (the
/// package hash on each side).
fn memcpy_and_hash(payload: &Bytes, scratch: &mut Vec<u8>) -> u64 {
    let mut h = 0u64;
    for _ in 0..BATCH {
        scratch.clear();
        scratch.extend_from_slice(payload);
        h ^= xxhash_rust::xxh3::xxh3_64(scratch);
        h ^= xxhash_rust::xxh3::xxh3_64(scratch).rotate_left(1);
    }
    h
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("session_in_memory");
    for size in [64usize, 1024, 64 * 1024 - 512] {
        let payload = Bytes::from(vec![0x5a; size]);
        group.throughput(Throughput::Bytes((BATCH * size) as u64));
        let mut pair = Pair::new();
        group.bench_with_input(BenchmarkId::new("session", size), &payload, |b, p| {
            b.iter(|| black_box(pair.round(p)))
        });
        let mut scratch = Vec::new();
        group.bench_with_input(BenchmarkId::new("memcpy_xxh3x2", size), &payload, |b, p| {
            b.iter(|| black_box(memcpy_and_hash(p, &mut scratch)))
        });
        let mut buf = Vec::new();
        let mut decoder = StreamDecoder::new(FrameLimits::default());
        group.bench_with_input(BenchmarkId::new("codec_only", size), &payload, |b, p| {
            b.iter(|| black_box(codec_only(p, &mut buf, &mut decoder)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
