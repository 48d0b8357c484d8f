//! Session throughput in memory: messages pushed through two sessions over one byte-stream
//! path with no simulated delay, beside the bare package codec doing the same bytes and a memcpy
//! plus two XXH3 passes of them, so the cost of the session layer reads as a ratio. The group
//! `session_cpu` runs the session and the bound again measured in CPU time of the benchmark thread
//! (messages or bytes per CPU second: "per core", steady on a loaded machine).
//!
//! `cargo bench -p atbus-stream --bench session`

use std::hint::black_box;

use atbus_frame::{FrameLimits, StreamDecoder, encode};
use atbus_proto::{FrameMessage, MessageHead, PacketContent, PacketData, frame_message::Body};
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;

#[path = "common/cpu.rs"]
mod cpu;
#[path = "common/pair.rs"]
mod pair;

use cpu::ThreadCpuTime;
use pair::{BATCH, Pair};

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

/// The session and the bound in thread CPU time: 64 B in messages per CPU second, 64 KiB in bytes.
fn bench_cpu(c: &mut Criterion<ThreadCpuTime>) {
    let mut group = c.benchmark_group("session_cpu");
    for size in [64usize, 64 * 1024 - 512] {
        let payload = Bytes::from(vec![0x5a; size]);
        group.throughput(if size == 64 {
            Throughput::Elements(BATCH as u64)
        } else {
            Throughput::Bytes((BATCH * size) as u64)
        });
        let mut pair = Pair::new();
        group.bench_with_input(BenchmarkId::new("session", size), &payload, |b, p| {
            b.iter(|| black_box(pair.round(p)))
        });
        let mut scratch = Vec::new();
        group.bench_with_input(BenchmarkId::new("memcpy_xxh3x2", size), &payload, |b, p| {
            b.iter(|| black_box(memcpy_and_hash(p, &mut scratch)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_group! {
    name = cpu_time;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = bench_cpu
}
criterion_main!(benches, cpu_time);
