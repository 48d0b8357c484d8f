//! Package codec cost beside bare prost and a memcpy of the payload, so framing overhead reads as
//! a ratio. Payloads of 64 B, 1 KiB and 64 KiB ride in `packet_data.content` of a frame with a
//! realistic head. Results and the command line: docs/benchmarks.md, section "Frame codec".

use std::hint::black_box;

use atbus_frame::{DatagramDecoder, FrameLimits, HASH_LEN, StreamDecoder, encode, package_hash};
use atbus_proto::{FrameMessage, MessageHead, PacketData, frame_message::Body, packet_flags};
use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;

const SIZES: [usize; 3] = [64, 1024, 64 * 1024];

fn payload(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| (i * 31 + 7) as u8).collect::<Vec<u8>>())
}

/// A data packet as a session sends it: addressed head, stream position, timestamps, path.
fn frame(content: Bytes) -> FrameMessage {
    FrameMessage {
        head: Some(MessageHead {
            source: "gamesvr-7.zone-3.prod".into(),
            destination: "matchsvr-2.zone-3.prod".into(),
            ..Default::default()
        }),
        body: Some(Body::Packet(PacketData {
            stream_id: 5,
            stream_offset: 1_234_567,
            content,
            flags: packet_flags::FINISH_STREAM,
            padding_size: 0,
            timepoint_microseconds: 1_767_225_600_123_456,
            packet_number: 98_765,
            path_id: 1,
        })),
    }
}

fn limits() -> FrameLimits {
    FrameLimits::default()
}

fn memcpy(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, p: &Bytes) {
    let mut out = Vec::with_capacity(p.len());
    group.bench_with_input(BenchmarkId::new("memcpy", p.len()), p, |b, p| {
        b.iter(|| {
            out.clear();
            out.extend_from_slice(black_box(p));
            black_box(&out);
        })
    });
}

fn bench_encode(c: &mut Criterion) {
    let limits = limits();
    let mut group = c.benchmark_group("encode");
    for size in SIZES {
        let p = payload(size);
        let f = frame(p.clone());
        group.throughput(Throughput::Bytes(size as u64));
        let mut buf = Vec::new();
        group.bench_with_input(BenchmarkId::new("frame", size), &f, |b, f| {
            b.iter(|| {
                buf.clear();
                encode(black_box(f), &limits, &mut buf).expect("encodes");
                black_box(&buf);
            })
        });
        let mut buf = Vec::new();
        group.bench_with_input(BenchmarkId::new("prost_encode", size), &f, |b, f| {
            b.iter(|| {
                buf.clear();
                black_box(f).encode(&mut buf).expect("encodes");
                black_box(&buf);
            })
        });
        memcpy(&mut group, &p);
    }
    group.finish();
}

fn bench_decode(c: &mut Criterion) {
    let limits = limits();
    let mut group = c.benchmark_group("decode");
    for size in SIZES {
        let p = payload(size);
        let f = frame(p.clone());
        let mut wire = Vec::new();
        encode(&f, &limits, &mut wire).expect("encodes");
        let wire = Bytes::from(wire);
        let bare = Bytes::from(f.encode_to_vec());
        group.throughput(Throughput::Bytes(size as u64));

        // A long-lived link decoder fed one read's worth of bytes (copied into its buffer).
        let mut decoder = StreamDecoder::new(limits);
        group.bench_with_input(BenchmarkId::new("stream", size), &wire, |b, wire| {
            b.iter(|| {
                decoder.feed(black_box(wire));
                let frame = decoder.next_frame().expect("decodes").expect("whole");
                black_box(frame);
            })
        });
        // A received datagram already in a `Bytes`: the content shares it.
        group.bench_with_input(BenchmarkId::new("datagram", size), &wire, |b, wire| {
            b.iter(|| {
                let mut datagram = DatagramDecoder::new(black_box(wire.clone()), limits);
                let frame = datagram.next_frame().expect("one").expect("decodes");
                black_box(frame);
            })
        });
        group.bench_with_input(BenchmarkId::new("prost_decode", size), &bare, |b, bare| {
            b.iter(|| {
                let frame = FrameMessage::decode(black_box(bare.clone())).expect("decodes");
                black_box(frame);
            })
        });
        // The hash check every decoder must make over the whole package: what separates a
        // zero-copy frame decode from a bare prost decode at 64 KiB.
        group.bench_with_input(BenchmarkId::new("hash", size), &wire, |b, wire| {
            b.iter(|| black_box(package_hash(black_box(&wire[..wire.len() - HASH_LEN]))))
        });
        memcpy(&mut group, &p);
    }
    group.finish();
}

fn bench_round_trip(c: &mut Criterion) {
    let limits = limits();
    let mut group = c.benchmark_group("round_trip");
    for size in SIZES {
        let p = payload(size);
        let f = frame(p.clone());
        group.throughput(Throughput::Bytes(size as u64));
        // Both sides encode into a reused `BytesMut`, freeze it and decode from the `Bytes`.
        let mut buf = BytesMut::new();
        group.bench_with_input(BenchmarkId::new("frame", size), &f, |b, f| {
            b.iter(|| {
                encode(black_box(f), &limits, &mut buf).expect("encodes");
                let mut datagram = DatagramDecoder::new(buf.split().freeze(), limits);
                let frame = datagram.next_frame().expect("one").expect("decodes");
                black_box(frame);
            })
        });
        let mut buf = BytesMut::new();
        group.bench_with_input(BenchmarkId::new("prost_round_trip", size), &f, |b, f| {
            b.iter(|| {
                buf.reserve(f.encoded_len());
                black_box(f).encode(&mut buf).expect("encodes");
                let frame = FrameMessage::decode(buf.split().freeze()).expect("decodes");
                black_box(frame);
            })
        });
        memcpy(&mut group, &p);
    }
    group.finish();
}

criterion_group!(benches, bench_encode, bench_decode, bench_round_trip);
criterion_main!(benches);
