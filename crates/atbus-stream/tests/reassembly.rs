//! Receive-side reassembly: overlapping multi-path pieces, containment, duplicates, reordering,
//! skips, final size, limits, and property tests over random cuttings of random streams.

use std::collections::BTreeMap;

use atbus_frame::fuzz_targets::XorShift;
use atbus_proto::PacketOptions;
use atbus_stream::fuzz_reassembly;
use atbus_stream::reassembly::{
    Delivery, MAX_OFFSET, MessageMeta, Piece, Reassembler, ReassemblyError, ReceivedMessage,
};
use bytes::Bytes;
use proptest::prelude::*;

fn piece(offset: u64, data: &'static [u8], ends: bool) -> Piece {
    Piece::new(offset, Bytes::from_static(data), ends)
}

fn message(d: Option<Delivery>) -> ReceivedMessage {
    match d {
        Some(Delivery::Message(m)) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

fn pop_all(r: &mut Reassembler) -> Vec<Delivery> {
    std::iter::from_fn(|| r.pop()).collect()
}

/// Pieces arriving in order take the in-order queue, the same pieces with one held back take the
/// ordered maps: both hold the same, deliver the same, and count the same bytes; once drained, the
/// queue serves again and still hands over the received `Bytes` itself.
#[test]
fn in_order_queue_and_ordered_maps_agree() {
    let typed = MessageMeta {
        packet_type: 5,
        ..Default::default()
    };
    let pieces = || {
        vec![
            piece(0, b"ab", false).with_meta(typed.clone()),
            // Metadata inside a message (an inconsistent sender) is dropped with the message.
            piece(2, b"cd", true).with_meta(typed.clone()),
            piece(4, b"efg", true),
            piece(7, b"h", false),
            piece(8, b"ij", true),
        ]
    };
    let mut queued = Reassembler::new(1024);
    for p in pieces() {
        queued.insert(p).expect("room");
        queued.check_invariants().expect("invariants");
    }
    let mut mapped = Reassembler::new(1024);
    let mut held_back = pieces();
    let first = held_back.remove(0);
    for p in held_back {
        mapped.insert(p).expect("room");
    }
    assert!(!mapped.is_readable());
    mapped.insert(first).expect("room");
    mapped.check_invariants().expect("invariants");
    assert_eq!(queued, mapped);
    assert_eq!(queued.buffered_bytes(), mapped.buffered_bytes());
    assert_eq!(queued.contiguous_offset(), 10);
    let (a, b) = (pop_all(&mut queued), pop_all(&mut mapped));
    assert_eq!(a, b);
    let data: Vec<Bytes> = a.iter().map(|d| message(Some(d.clone())).data).collect();
    assert_eq!(data, vec![&b"abcd"[..], &b"efg"[..], &b"hij"[..]]);
    assert_eq!(message(Some(a[0].clone())).meta, typed);
    for r in [&mut queued, &mut mapped] {
        assert_eq!(r.buffered_bytes(), 0, "metadata charges released");
        let next = Bytes::from(vec![7u8; 100]);
        r.insert(Piece::new(10, next.clone(), true)).expect("room");
        r.check_invariants().expect("invariants");
        let m = message(r.pop());
        assert_eq!((m.offset, m.data.as_ptr()), (10, next.as_ptr()));
    }
    // A duplicate and then a gap move queued pieces into the maps; nothing is lost.
    let mut r = Reassembler::new(1024);
    r.insert(piece(0, b"xy", false)).expect("room");
    r.insert(piece(0, b"x", false)).expect("duplicate");
    r.insert(piece(4, b"!", true)).expect("gap");
    r.insert(piece(2, b"zw", false)).expect("fills the gap");
    r.check_invariants().expect("invariants");
    assert_eq!(&message(r.pop()).data[..], b"xyzw!");
    assert_eq!(r.buffered_bytes(), 0);
}

/// The worked example of docs/stream.md: "hello" (0..5) and "world!" (5..11) sent over two
/// paths that cut them differently, arriving interleaved with duplicates.
#[test]
fn overlapping_multi_path_receive() {
    let hello_b = Bytes::from_static(b"hello");
    let world_a = Bytes::from_static(b"world!");
    // Path A: [0..3 HAS_MORE] [3..5] [5..11]; path B: [0..5] [5..8 HAS_MORE] [8..11].
    let a0 = piece(0, b"hel", false);
    let a1 = piece(3, b"lo", true);
    let a2 = Piece::new(5, world_a.clone(), true);
    let b0 = Piece::new(0, hello_b.clone(), true);
    let b1 = piece(5, b"wor", false);
    let b2 = piece(8, b"ld!", true);

    let mut r = Reassembler::new(1 << 16);
    assert_eq!(r.insert(b0.clone()).unwrap(), 5); // "hello" whole, first
    assert_eq!(r.insert(a0.clone()).unwrap(), 0); // contained: nothing new
    assert_eq!(r.insert(b1).unwrap(), 3);
    assert_eq!(r.insert(a1).unwrap(), 0);
    assert_eq!(r.insert(b0).unwrap(), 0); // duplicate
    assert_eq!(
        (r.contiguous_offset(), r.received_max(), r.buffered_bytes()),
        (8, 8, 8)
    );

    let hello = message(r.pop());
    assert_eq!((hello.offset, &hello.data[..]), (0, &b"hello"[..]));
    assert_eq!(
        hello.data.as_ptr(),
        hello_b.as_ptr(),
        "one piece is delivered without a copy"
    );
    assert_eq!(hello.meta, MessageMeta::default());
    assert!(!r.is_readable(), "\"world!\" is still incomplete");

    // Path A's "world!" contains path B's "wor": the larger piece is kept, so it too is
    // delivered without a copy; B's "ld!" arrives afterwards as a pure duplicate.
    assert_eq!(r.insert(a2).unwrap(), 3);
    assert_eq!(r.insert(b2).unwrap(), 0);
    assert_eq!(r.insert(a0).unwrap(), 0); // late duplicate of delivered data
    let world = message(r.pop());
    assert_eq!((world.offset, &world.data[..]), (5, &b"world!"[..]));
    assert_eq!(world.data.as_ptr(), world_a.as_ptr());
    assert_eq!(r.pop(), None);
    assert_eq!((r.read_offset(), r.buffered_bytes()), (11, 0));
}

/// The same two messages where the pieces that arrive first are the small ones: "hello" is
/// concatenated from path A's fragments, "world!" from B's.
#[test]
fn multi_path_receive_small_pieces_first() {
    let mut r = Reassembler::new(1 << 16);
    r.insert(piece(8, b"ld!", true)).unwrap();
    r.insert(piece(0, b"hel", false)).unwrap();
    r.insert(piece(5, b"wor", false)).unwrap();
    assert!(!r.is_readable());
    assert_eq!(r.contiguous_offset(), 3);
    r.insert(piece(3, b"lo", true)).unwrap();
    r.insert(piece(0, b"hello", true)).unwrap(); // contains both A pieces: replaces them
    assert_eq!(r.buffered_bytes(), 11);
    let d = pop_all(&mut r);
    assert_eq!(d.len(), 2);
    assert_eq!(&message(Some(d[0].clone())).data[..], b"hello");
    assert_eq!(&message(Some(d[1].clone())).data[..], b"world!");
}

#[test]
fn containment_keeps_the_larger_piece() {
    let mut r = Reassembler::new(1024);
    let big = Bytes::from_static(b"0123456789");
    assert_eq!(r.insert(piece(2, b"234", false)).unwrap(), 3);
    assert_eq!(r.insert(piece(6, b"67", false)).unwrap(), 2);
    assert_eq!(r.insert(Piece::new(0, big.clone(), true)).unwrap(), 5);
    assert_eq!(r.buffered_bytes(), 10);
    // A smaller piece inside the stored one adds nothing.
    assert_eq!(r.insert(piece(4, b"45", false)).unwrap(), 0);
    let m = message(r.pop());
    assert_eq!(m.data, big);
    assert_eq!(m.data.as_ptr(), big.as_ptr());
}

#[test]
fn partial_overlap_is_trimmed_and_concatenated() {
    let mut r = Reassembler::new(1024);
    assert_eq!(r.insert(piece(0, b"abcd", false)).unwrap(), 4);
    assert_eq!(r.insert(piece(2, b"cdef", true)).unwrap(), 2);
    assert_eq!(r.insert(piece(1, b"bcde", false)).unwrap(), 0);
    assert_eq!(r.buffered_bytes(), 6);
    let m = message(r.pop());
    assert_eq!(&m.data[..], b"abcdef");
}

#[test]
fn duplicates_are_ignored() {
    let mut r = Reassembler::new(1024);
    let p = piece(0, b"abc", true);
    assert_eq!(r.insert(p.clone()).unwrap(), 3);
    assert_eq!(r.insert(p.clone()).unwrap(), 0);
    assert_eq!(r.buffered_bytes(), 3);
    assert_eq!(&message(r.pop()).data[..], b"abc");
    assert_eq!(r.insert(p).unwrap(), 0, "duplicate of delivered data");
    assert_eq!(r.pop(), None);
    assert_eq!(r.buffered_bytes(), 0);
}

#[test]
fn reverse_order() {
    let mut r = Reassembler::new(1024);
    r.insert(piece(6, b"ghi", true)).unwrap();
    r.insert(piece(3, b"def", true)).unwrap();
    assert!(!r.is_readable());
    assert_eq!((r.contiguous_offset(), r.received_max()), (0, 9));
    r.insert(piece(0, b"abc", true)).unwrap();
    assert_eq!(r.contiguous_offset(), 9);
    let got: Vec<_> = pop_all(&mut r)
        .into_iter()
        .map(|d| message(Some(d)))
        .collect();
    let got: Vec<(u64, &[u8])> = got.iter().map(|m| (m.offset, &m.data[..])).collect();
    assert_eq!(
        got,
        vec![(0, &b"abc"[..]), (3, &b"def"[..]), (6, &b"ghi"[..])]
    );
}

#[test]
fn one_byte_pieces_in_scrambled_order() {
    let text: &'static [u8] = b"the quick brown fox jumps over the lazy dog";
    let n = text.len() as u64;
    let mut r = Reassembler::new(1024);
    // A fixed permutation: i * 7 mod n (n = 43 is prime).
    for k in 0..n {
        let i = (k * 7) % n;
        assert!(!r.is_readable());
        let p = Piece::new(
            i,
            Bytes::from_static(&text[i as usize..=i as usize]),
            i == n - 1,
        );
        assert_eq!(r.insert(p).unwrap(), 1);
    }
    let m = message(r.pop());
    assert_eq!(&m.data[..], text);
    assert_eq!(r.pop(), None);
}

#[test]
fn message_end_cuts_delivery() {
    let mut r = Reassembler::new(1024);
    // One path sends two messages; another path's piece spans into the second message's bytes
    // only up to a message end: deliveries cut at ends.
    r.insert(piece(0, b"ab", true)).unwrap();
    r.insert(piece(2, b"cd", false)).unwrap();
    r.insert(piece(4, b"e", true)).unwrap();
    assert_eq!(&message(r.pop()).data[..], b"ab");
    assert_eq!(&message(r.pop()).data[..], b"cde");
}

#[test]
fn metadata_comes_from_the_first_fragment() {
    let meta = MessageMeta {
        packet_type: 7,
        labels: BTreeMap::from([("k".to_string(), "v".to_string())]),
        options: Some(Box::new(PacketOptions {
            deadline_unix_ms: 5,
            ..Default::default()
        })),
    };
    let mut r = Reassembler::new(1024);
    r.insert(piece(3, b"def", true)).unwrap();
    r.insert(piece(0, b"abc", false).with_meta(meta.clone()))
        .unwrap();
    assert_eq!(r.buffered_bytes(), 6 + meta.cost(), "metadata is charged");
    // A default meta is not stored; the message still gets the recorded one.
    r.insert(piece(0, b"ab", false).with_meta(MessageMeta::default()))
        .unwrap();
    r.insert(piece(6, b"g", true)).unwrap();
    let m = message(r.pop());
    assert_eq!((&m.data[..], &m.meta), (&b"abcdef"[..], &meta));
    assert_eq!(message(r.pop()).meta, MessageMeta::default());
    assert_eq!(r.buffered_bytes(), 0);
}

#[test]
fn skip_in_the_middle_of_received_data() {
    let mut r = Reassembler::new(1024);
    let meta = MessageMeta {
        packet_type: 3,
        ..Default::default()
    };
    r.insert(piece(0, b"m0m0m", true)).unwrap(); // m0 0..5 complete
    r.insert(piece(5, b"m1", false).with_meta(meta.clone()))
        .unwrap(); // m1 5..10 partial
    r.insert(piece(10, b"m2m2m", true)).unwrap(); // m2 10..15 complete
    r.insert(piece(15, b"m3", false)).unwrap(); // m3 15..20 partial
    assert_eq!(r.buffered_bytes(), 14 + meta.cost());

    r.skip_to(15).unwrap();
    assert_eq!(
        r.buffered_bytes(),
        7,
        "m1 and m2 bytes and m1's metadata dropped"
    );
    assert_eq!(
        (r.read_offset(), r.contiguous_offset(), r.received_max()),
        (0, 17, 17)
    );
    assert_eq!(
        &message(r.pop()).data[..],
        b"m0m0m",
        "complete messages before the gap stay"
    );
    assert_eq!(r.pop(), Some(Delivery::Skipped { offset: 5, len: 10 }));
    assert_eq!(r.pop(), None);
    // Late pieces of skipped messages are ignored.
    assert_eq!(r.insert(piece(7, b"m1m", true)).unwrap(), 0);
    assert_eq!(r.insert(piece(12, b"m2m", true)).unwrap(), 0);
    r.insert(piece(17, b"m3m", true)).unwrap();
    let m = message(r.pop());
    assert_eq!((m.offset, &m.data[..]), (15, &b"m3m3m"[..]));
    assert_eq!(r.buffered_bytes(), 0);
}

#[test]
fn skips_while_one_is_pending_merge() {
    let mut r = Reassembler::new(1024);
    r.insert(piece(10, b"xx", true)).unwrap();
    r.skip_to(5).unwrap();
    r.skip_to(10).unwrap(); // extends the pending skip
    r.skip_to(8).unwrap(); // ignored
    assert_eq!(r.pop(), Some(Delivery::Skipped { offset: 0, len: 10 }));
    assert_eq!(message(r.pop()).offset, 10);
    r.insert(piece(14, b"zz", true)).unwrap();
    r.skip_to(14).unwrap(); // skips 12..14, keeps 14..16
    assert_eq!(r.pop(), Some(Delivery::Skipped { offset: 12, len: 2 }));
    assert_eq!(&message(r.pop()).data[..], b"zz");
}

#[test]
fn skip_before_anything_arrived() {
    let mut r = Reassembler::new(1024);
    r.skip_to(10).unwrap();
    assert_eq!((r.contiguous_offset(), r.received_max()), (10, 10));
    assert!(r.is_readable());
    r.insert(piece(10, b"abc", true)).unwrap();
    assert_eq!(r.pop(), Some(Delivery::Skipped { offset: 0, len: 10 }));
    assert_eq!(message(r.pop()).offset, 10);
}

#[test]
fn skip_after_everything_delivered_is_ignored() {
    let mut r = Reassembler::new(1024);
    r.insert(piece(0, b"0123456789", true)).unwrap();
    assert_eq!(message(r.pop()).offset, 0);
    r.skip_to(5).unwrap();
    r.skip_to(10).unwrap();
    assert_eq!(r.pop(), None);
    assert_eq!(r.read_offset(), 10);
    // Complete but undelivered messages also make a skip to their end a no-op.
    r.insert(piece(10, b"ab", true)).unwrap();
    r.skip_to(12).unwrap();
    assert_eq!(message(r.pop()).offset, 10);
    assert_eq!(r.pop(), None);
}

#[test]
fn final_size_rules() {
    let mut r = Reassembler::new(1024);
    r.insert(piece(0, b"abcd", true)).unwrap();
    assert_eq!(
        r.set_final_size(3),
        Err(ReassemblyError::FinalSizeChanged { old: 4, new: 3 })
    );
    r.set_final_size(8).unwrap();
    r.set_final_size(8).unwrap();
    assert_eq!(
        r.set_final_size(9),
        Err(ReassemblyError::FinalSizeChanged { old: 8, new: 9 })
    );
    assert_eq!(
        r.insert(piece(6, b"xyz", true)),
        Err(ReassemblyError::BeyondFinalSize {
            end: 9,
            final_size: 8
        })
    );
    assert_eq!(
        r.skip_to(9),
        Err(ReassemblyError::BeyondFinalSize {
            end: 9,
            final_size: 8
        })
    );
    assert!(!r.is_finished());
    r.insert(piece(4, b"efgh", true)).unwrap();
    assert_eq!(pop_all(&mut r).len(), 2);
    assert!(r.is_finished());
}

#[test]
fn tail_without_message_end_is_skipped_not_truncated() {
    let mut r = Reassembler::new(1024);
    r.insert(piece(0, b"ab", true)).unwrap();
    r.insert(piece(2, b"cd", false)).unwrap();
    r.set_final_size(4).unwrap();
    assert_eq!(message(r.pop()).offset, 0);
    assert_eq!(r.pop(), Some(Delivery::Skipped { offset: 2, len: 2 }));
    assert!(r.is_finished());
    assert_eq!(r.buffered_bytes(), 0);
}

#[test]
fn buffer_full_and_forced_insert() {
    let mut r = Reassembler::new(10);
    r.insert(piece(100, b"12345678", true)).unwrap();
    let p = piece(0, b"abcde", true);
    assert_eq!(
        r.insert(p.clone()),
        Err(ReassemblyError::BufferFull {
            buffered: 8,
            limit: 10
        })
    );
    assert_eq!(r.buffered_bytes(), 8, "a refused piece changes nothing");
    assert_eq!(r.insert_forced(p).unwrap(), 5);
    assert_eq!(r.buffered_bytes(), 13);
    assert!(matches!(
        r.insert(piece(5, b"x", true)),
        Err(ReassemblyError::BufferFull { .. })
    ));
    // Duplicates add nothing and are always accepted.
    assert_eq!(r.insert(piece(1, b"bc", false)).unwrap(), 0);
    assert_eq!(&message(r.pop()).data[..], b"abcde");
    assert_eq!(r.buffered_bytes(), 8);
    assert_eq!(r.insert(piece(5, b"x", true)).unwrap(), 1);
    // Metadata counts against the limit too.
    let meta = MessageMeta {
        packet_type: 1,
        ..Default::default()
    };
    let with_meta = piece(6, b"y", true).with_meta(meta);
    assert!(matches!(
        r.insert(with_meta),
        Err(ReassemblyError::BufferFull { .. })
    ));
}

#[test]
fn offsets_out_of_range() {
    let mut r = Reassembler::new(1024);
    assert_eq!(
        r.insert(piece(u64::MAX, b"a", true)),
        Err(ReassemblyError::OffsetOverflow)
    );
    assert_eq!(
        r.insert(piece(MAX_OFFSET, b"a", true)),
        Err(ReassemblyError::OffsetOverflow)
    );
    assert_eq!(
        r.insert(piece(MAX_OFFSET - 1, b"ab", true)),
        Err(ReassemblyError::OffsetOverflow)
    );
    assert_eq!(r.insert(piece(MAX_OFFSET - 1, b"a", true)).unwrap(), 1);
    assert_eq!(
        r.skip_to(MAX_OFFSET + 1),
        Err(ReassemblyError::OffsetOverflow)
    );
    assert_eq!(
        r.set_final_size(u64::MAX),
        Err(ReassemblyError::OffsetOverflow)
    );
    r.skip_to(MAX_OFFSET - 1).unwrap();
    assert_eq!(
        r.pop(),
        Some(Delivery::Skipped {
            offset: 0,
            len: MAX_OFFSET - 1
        })
    );
    assert_eq!(message(r.pop()).offset, MAX_OFFSET - 1);
    r.set_final_size(MAX_OFFSET).unwrap();
    assert!(r.is_finished());
}

#[test]
fn empty_piece_is_refused() {
    let mut r = Reassembler::new(1024);
    assert_eq!(
        r.insert(piece(0, b"", true)),
        Err(ReassemblyError::EmptyPiece)
    );
    assert_eq!(
        r.insert_forced(piece(3, b"", false)),
        Err(ReassemblyError::EmptyPiece)
    );
    assert_eq!(r.received_max(), 0);
}

/// Replays 2000 pseudo-random inputs through the fuzz body (half of them in consistent mode).
#[test]
fn fuzz_body_on_pseudo_random_inputs() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for i in 0..2000 {
        let len = (rng.next() % 700) as usize;
        let mut input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if let Some(first) = input.first_mut() {
            *first = (*first & !1) | (i & 1) as u8;
        }
        fuzz_reassembly::reassembler(&input);
    }
    fuzz_reassembly::reassembler(&[]);
    fuzz_reassembly::reassembler(&[0]);
    fuzz_reassembly::reassembler(&[1]);
}

// ---- property tests ----

/// A message of the generated stream.
#[derive(Debug, Clone)]
struct Original {
    offset: u64,
    data: Bytes,
    meta: MessageMeta,
}

fn meta_from(seed: u8) -> MessageMeta {
    match seed % 4 {
        0 => MessageMeta::default(),
        1 => MessageMeta {
            packet_type: i32::from(seed),
            ..Default::default()
        },
        2 => MessageMeta {
            packet_type: 0,
            labels: BTreeMap::from([(format!("l{seed}"), "x".repeat(usize::from(seed % 20)))]),
            options: None,
        },
        _ => MessageMeta {
            packet_type: 2,
            labels: BTreeMap::new(),
            options: Some(Box::new(PacketOptions {
                token: Bytes::from(vec![seed; usize::from(seed % 9)]),
                deadline_unix_ms: i64::from(seed),
                ..Default::default()
            })),
        },
    }
}

fn originals(specs: &[(usize, u8)]) -> Vec<Original> {
    let mut offset = 0u64;
    specs
        .iter()
        .enumerate()
        .map(|(i, &(size, meta))| {
            let data: Bytes = (0..size as u64)
                .map(|k| ((offset + k) * 7 + i as u64) as u8)
                .collect();
            let m = Original {
                offset,
                data,
                meta: meta_from(meta),
            };
            offset += size as u64;
            m
        })
        .collect()
}

/// Cuts every message by each cutting (a cycle of fragment sizes); fragments never span messages,
/// the first carries the metadata, the last ends the message.
fn cut(messages: &[Original], cuttings: &[Vec<usize>]) -> Vec<Piece> {
    let mut pieces = Vec::new();
    for sizes in cuttings {
        let mut k = 0;
        for m in messages {
            let mut pos = 0;
            while pos < m.data.len() {
                let len = sizes[k % sizes.len()].min(m.data.len() - pos);
                k += 1;
                let mut p = Piece::new(
                    m.offset + pos as u64,
                    m.data.slice(pos..pos + len),
                    pos + len == m.data.len(),
                );
                if pos == 0 && !m.meta.is_default() {
                    p.meta = Some(m.meta.clone());
                }
                pieces.push(p);
                pos += len;
            }
        }
    }
    pieces
}

/// Adds random duplicates and shuffles.
fn scramble(mut pieces: Vec<Piece>, rng: &mut XorShift) -> Vec<Piece> {
    let dups = rng.below(pieces.len() / 2 + 1);
    for _ in 0..dups {
        let p = pieces[rng.below(pieces.len())].clone();
        pieces.push(p);
    }
    for i in (1..pieces.len()).rev() {
        let j = rng.below(i + 1);
        pieces.swap(i, j);
    }
    pieces
}

fn charge(p: &Piece) -> usize {
    p.data.len() + p.meta.as_ref().map_or(0, MessageMeta::cost)
}

/// Checks that `delivered` tiles `[0, read_offset)` and that every original message in it was
/// delivered intact exactly once or lies inside a skipped range; returns how many were delivered.
fn check_deliveries(delivered: &[Delivery], messages: &[Original], read_offset: u64) -> usize {
    let mut pos = 0u64;
    let mut next = 0usize;
    let mut count = 0;
    for d in delivered {
        assert_eq!(d.offset(), pos, "deliveries are not contiguous");
        assert!(!d.is_empty());
        pos += d.len();
        match d {
            Delivery::Message(m) => {
                let o = &messages[next];
                assert_eq!((m.offset, &m.data, &m.meta), (o.offset, &o.data, &o.meta));
                next += 1;
                count += 1;
            }
            Delivery::Skipped { .. } => {
                while next < messages.len() && messages[next].offset < pos {
                    next += 1;
                }
                let boundary = messages.get(next).map_or(pos, |m| m.offset);
                assert_eq!(boundary, pos, "a skip ends inside a message");
            }
        }
    }
    assert_eq!(pos, read_offset, "deliveries do not tile [0, read_offset)");
    count
}

fn specs() -> impl Strategy<Value = Vec<(usize, u8)>> {
    prop::collection::vec((1usize..300, any::<u8>()), 1..30)
}

fn cuttings() -> impl Strategy<Value = Vec<Vec<usize>>> {
    prop::collection::vec(prop::collection::vec(1usize..200, 1..12), 1..=3)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any cuttings, any order, any duplicates: every message exactly once, in order, intact.
    #[test]
    fn exactly_once_in_order(specs in specs(), cuttings in cuttings(), seed in any::<u64>()) {
        let messages = originals(&specs);
        let total: u64 = specs.iter().map(|s| s.0 as u64).sum();
        let mut rng = XorShift(seed | 1);
        let pieces = scramble(cut(&messages, &cuttings), &mut rng);
        let mut r = Reassembler::new(1 << 24);
        let mut delivered = Vec::new();
        for p in pieces {
            r.insert(p).unwrap();
            if rng.below(4) == 0 {
                delivered.extend(std::iter::from_fn(|| r.pop()));
            }
            r.check_invariants().unwrap();
        }
        r.set_final_size(total).unwrap();
        delivered.extend(std::iter::from_fn(|| r.pop()));
        prop_assert_eq!(check_deliveries(&delivered, &messages, r.read_offset()), messages.len());
        prop_assert!(r.is_finished());
        prop_assert_eq!(r.buffered_bytes(), 0);
        prop_assert_eq!(r.contiguous_offset(), total);
    }

    /// With skips to random message boundaries interleaved: every message is delivered once or
    /// inside a skipped range, deliveries tile the stream, and memory stays within the limit.
    #[test]
    fn skips_interleaved(
        specs in specs(),
        cuttings in cuttings(),
        seed in any::<u64>(),
        limit in prop_oneof![Just(1usize << 24), 300usize..4000],
    ) {
        let messages = originals(&specs);
        let total: u64 = specs.iter().map(|s| s.0 as u64).sum();
        let mut rng = XorShift(seed | 1);
        let mut queue: std::collections::VecDeque<Piece> = scramble(cut(&messages, &cuttings), &mut rng).into();
        let max_charge = queue.iter().map(charge).max().unwrap_or(0);
        let mut r = Reassembler::new(limit);
        let mut delivered = Vec::new();
        let mut stalled = 0;
        while let Some(p) = queue.pop_front() {
            match rng.below(40) {
                0 => {
                    // The sender drops a few stale messages past the read point.
                    let current = messages.partition_point(|m| m.offset <= r.read_offset());
                    let j = current + rng.below(3);
                    let target = messages.get(j).map_or(total, |m| m.offset);
                    r.skip_to(target).unwrap();
                }
                1 => r.set_final_size(total).unwrap(),
                2..=13 => delivered.extend(std::iter::from_fn(|| r.pop())),
                _ => {}
            }
            // A byte-stream path may force one piece while within the limit; otherwise a refused
            // piece is dropped and comes again later (the peer retransmits).
            let res = if rng.below(2) == 0 && r.buffered_bytes() <= limit {
                r.insert_forced(p.clone())
            } else {
                r.insert(p.clone())
            };
            match res {
                Ok(_) => stalled = 0,
                Err(ReassemblyError::BufferFull { .. }) => {
                    queue.push_back(p);
                    delivered.extend(std::iter::from_fn(|| r.pop()));
                    stalled += 1;
                    if stalled > queue.len() + 1 {
                        // Over the limit with nothing readable: the sender gives up on the
                        // message the reader waits for.
                        let next = messages.partition_point(|m| m.offset <= r.read_offset());
                        r.skip_to(messages.get(next).map_or(total, |m| m.offset)).unwrap();
                        stalled = 0;
                    }
                }
                Err(e) => return Err(TestCaseError::fail(format!("unexpected {e}"))),
            }
            r.check_invariants().unwrap();
            prop_assert!(r.buffered_bytes() <= limit + max_charge,
                "buffered {} > {} + {}", r.buffered_bytes(), limit, max_charge);
            check_deliveries(&delivered, &messages, r.read_offset());
        }
        r.set_final_size(total).unwrap();
        delivered.extend(std::iter::from_fn(|| r.pop()));
        check_deliveries(&delivered, &messages, r.read_offset());
        prop_assert!(r.is_finished());
        prop_assert_eq!(r.buffered_bytes(), 0);
    }
}
