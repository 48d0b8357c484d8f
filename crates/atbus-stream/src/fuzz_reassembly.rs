//! Fuzz body for [`Reassembler`]: interprets bytes as a script of operations and checks the
//! invariants after every step. Shared by the cargo-fuzz target and the ordinary test that replays
//! pseudo-random inputs, so CI exercises it on stable.
//!
//! The first byte chooses a mode. In *consistent* mode the script acts like a real sender: the
//! stream is a fixed list of messages (sizes and metadata taken from the input), every piece lies
//! within one message with the right `ends_message`, data and metadata, skips land on message
//! boundaries and the final size is the stream's length; the body then checks that every message
//! is delivered exactly once, intact and in order, or reported skipped. In *chaos* mode offsets,
//! lengths, flags, data, skips and final sizes are arbitrary; the body checks that nothing panics,
//! refusals are the expected typed errors and the memory bound holds.
//!
//! In both modes: deliveries tile `[0, read_offset)`, `is_readable` agrees with `pop`, the
//! internal structure is consistent, and `buffered_bytes` never exceeds the limit plus one forced
//! piece (forced inserts are used only while the buffer is within its limit, as a session pausing
//! its byte-stream reads would).

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::reassembly::{
    Delivery, MAX_OFFSET, MessageMeta, Piece, Reassembler, ReassemblyError, ReceivedMessage,
};

/// Pops at most this many deliveries per pop operation.
const POPS_PER_OP: usize = 8;

/// Runs one fuzz input; panics if an invariant is violated.
pub fn reassembler(data: &[u8]) {
    let mut input = Input { data, pos: 0 };
    let Some(mode) = input.next() else { return };
    let limit = 32 + usize::from(input.byte()) * 24;
    let mut fuzz = Fuzz::new(limit);
    if mode & 1 == 0 {
        fuzz.consistent(&mut input);
    } else {
        fuzz.chaos(&mut input);
    }
}

/// Reads the script; yields zeros once exhausted.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn next(&mut self) -> Option<u8> {
        let b = self.data.get(self.pos).copied();
        self.pos += 1;
        b
    }

    fn byte(&mut self) -> u8 {
        self.next().unwrap_or(0)
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.byte();
        }
        u64::from_le_bytes(b)
    }

    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }
}

/// The byte a consistent sender has at stream offset `offset`.
fn filler(offset: u64) -> u8 {
    (offset.wrapping_mul(31) ^ (offset >> 8)) as u8
}

fn filled(offset: u64, len: usize) -> Bytes {
    (0..len as u64)
        .map(|i| filler(offset.wrapping_add(i)))
        .collect()
}

fn meta_for(seed: u8) -> Option<MessageMeta> {
    match seed % 4 {
        0 => None,
        1 => Some(MessageMeta {
            packet_type: i32::from(seed),
            ..Default::default()
        }),
        _ => {
            let mut labels = BTreeMap::new();
            labels.insert(format!("k{}", seed % 7), "v".repeat(usize::from(seed % 32)));
            Some(MessageMeta {
                packet_type: i32::from(seed % 3),
                labels,
                options: None,
            })
        }
    }
}

struct Fuzz {
    r: Reassembler,
    limit: usize,
    /// Largest charge (data plus metadata) of any piece offered; bounds the overshoot.
    max_charge: usize,
    /// Everything delivered, in order.
    delivered: Vec<Delivery>,
    /// While false (final drain), the buffer bound is not checked.
    check_bound: bool,
}

impl Fuzz {
    fn new(limit: usize) -> Self {
        Self {
            r: Reassembler::new(limit),
            limit,
            max_charge: 0,
            delivered: Vec::new(),
            check_bound: true,
        }
    }

    /// Inserts, forced only while the buffer is within its limit.
    fn insert(&mut self, piece: Piece, force: bool) -> Result<u64, ReassemblyError> {
        let charge = piece.data.len() + piece.meta.as_ref().map_or(0, MessageMeta::cost);
        self.max_charge = self.max_charge.max(charge);
        let before = self.r.clone();
        let result = if force && self.r.buffered_bytes() <= self.limit {
            self.r.insert_forced(piece)
        } else {
            self.r.insert(piece)
        };
        if result.is_err() {
            assert!(before == self.r, "a refused insert changed state");
        }
        if let Err(ReassemblyError::BufferFull { buffered, limit }) = &result {
            assert_eq!((*buffered, *limit), (self.r.buffered_bytes(), self.limit));
        }
        result
    }

    fn pop(&mut self, n: usize) {
        for _ in 0..n {
            let readable = self.r.is_readable();
            let before = self.r.read_offset();
            let Some(d) = self.r.pop() else {
                assert!(!readable, "is_readable said yes but pop gave nothing");
                return;
            };
            assert!(readable, "pop gave something but is_readable said no");
            assert_eq!(
                d.offset(),
                before,
                "delivery not contiguous with the previous one"
            );
            assert!(!d.is_empty(), "empty delivery");
            assert_eq!(
                self.r.read_offset(),
                before + d.len(),
                "read offset not advanced by the delivery"
            );
            self.delivered.push(d);
        }
    }

    fn check(&self) {
        if let Err(e) = self.r.check_invariants() {
            panic!("invariant broken: {e}");
        }
        let r = &self.r;
        assert!(r.read_offset() <= r.contiguous_offset());
        let tiled = self.delivered.last().map_or(0, |d| d.offset() + d.len());
        assert_eq!(
            tiled,
            r.read_offset(),
            "deliveries do not tile [0, read_offset)"
        );
        if let Some(size) = r.final_size() {
            assert!(r.read_offset() <= size);
            assert_eq!(r.is_finished(), r.read_offset() == size);
        } else {
            assert!(!r.is_finished());
        }
        if self.check_bound {
            assert!(
                r.buffered_bytes() <= self.limit + self.max_charge,
                "buffered {} > limit {} + one piece {}",
                r.buffered_bytes(),
                self.limit,
                self.max_charge
            );
        }
    }

    fn consistent(&mut self, input: &mut Input<'_>) {
        // The stream: message sizes and metadata.
        let count = 1 + usize::from(input.byte() % 24);
        let mut starts = Vec::with_capacity(count + 1);
        let mut metas = Vec::with_capacity(count);
        let mut pos = 0u64;
        for _ in 0..count {
            starts.push(pos);
            pos += 1 + u64::from(input.byte() % 80);
            metas.push(meta_for(input.byte()));
        }
        starts.push(pos);
        let total = pos;
        let message = |i: usize| (starts[i], starts[i + 1] - starts[i]);

        let mut steps = 0;
        while !input.done() && steps < 4096 {
            steps += 1;
            let op = input.byte();
            match op % 16 {
                0..=9 => {
                    let i = usize::from(input.byte()) % count;
                    let (start, size) = message(i);
                    let a = u64::from(input.u16()) % size;
                    let b = a + 1 + u64::from(input.u16()) % (size - a);
                    let mut piece =
                        Piece::new(start + a, filled(start + a, (b - a) as usize), b == size);
                    if a == 0 {
                        piece.meta = metas[i].clone();
                    }
                    match self.insert(piece, op & 0x10 != 0) {
                        Ok(_) | Err(ReassemblyError::BufferFull { .. }) => {}
                        Err(e) => panic!("consistent insert refused: {e}"),
                    }
                }
                10 => {
                    // Skip a few messages past the read point (a sender drops stale ones).
                    let current = starts
                        .partition_point(|&s| s <= self.r.read_offset())
                        .saturating_sub(1);
                    let j = (current + 1 + usize::from(input.byte() % 3)).min(count);
                    if let Err(e) = self.r.skip_to(starts[j]) {
                        panic!("consistent skip refused: {e}");
                    }
                }
                11 => {
                    if let Err(e) = self.r.set_final_size(total) {
                        panic!("consistent final size refused: {e}");
                    }
                }
                _ => self.pop(1 + usize::from(input.byte()) % POPS_PER_OP),
            }
            self.check();
        }

        // Drain: the sender retransmits every message whole and finishes; the reader reads.
        self.check_bound = false;
        if let Err(e) = self.r.set_final_size(total) {
            panic!("final size refused: {e}");
        }
        for (i, meta) in metas.iter().enumerate() {
            let (start, size) = message(i);
            if start + size <= self.r.read_offset() {
                continue;
            }
            let mut piece = Piece::new(start, filled(start, size as usize), true);
            piece.meta = meta.clone();
            if let Err(e) = self.r.insert_forced(piece) {
                panic!("drain insert refused: {e}");
            }
            self.pop(usize::MAX);
            self.check();
        }
        self.pop(usize::MAX);
        self.check();
        assert!(self.r.is_finished(), "stream not finished after the drain");
        assert_eq!(self.r.buffered_bytes(), 0);

        // Every message exactly once, intact, or inside a skipped range on message boundaries.
        let mut next = 0usize;
        for d in &self.delivered {
            assert_eq!(d.offset(), starts[next]);
            match d {
                Delivery::Message(ReceivedMessage { offset, data, meta }) => {
                    let (start, size) = message(next);
                    assert_eq!((*offset, data.len() as u64), (start, size));
                    assert_eq!(
                        data,
                        &filled(start, size as usize),
                        "message {next} corrupted"
                    );
                    assert_eq!(
                        Some(meta),
                        metas[next].as_ref().or(Some(&MessageMeta::default()))
                    );
                    next += 1;
                }
                Delivery::Skipped { offset, len } => {
                    let end = offset + len;
                    while starts[next] < end {
                        next += 1;
                    }
                    assert_eq!(starts[next], end, "skip not on a message boundary");
                }
            }
        }
        assert_eq!(next, count);
    }

    fn chaos(&mut self, input: &mut Input<'_>) {
        let mut steps = 0;
        while !input.done() && steps < 4096 {
            steps += 1;
            let op = input.byte();
            match op % 8 {
                0..=3 => {
                    let offset = match op >> 5 {
                        0 => MAX_OFFSET.wrapping_sub(u64::from(input.u16()) % 128),
                        1 => input.u64(),
                        _ => u64::from(input.u16() % 2048),
                    };
                    let len = usize::from(input.byte() % 80);
                    let flags = input.byte();
                    let data: Bytes = if flags & 2 != 0 {
                        filled(offset, len)
                    } else {
                        vec![flags; len].into()
                    };
                    let mut piece = Piece::new(offset, data, flags & 1 != 0);
                    if flags & 4 != 0 {
                        piece.meta = meta_for(input.byte());
                    }
                    let end = offset.checked_add(len as u64);
                    let result = self.insert(piece, flags & 8 != 0);
                    match result {
                        Err(ReassemblyError::EmptyPiece) => assert_eq!(len, 0),
                        Err(ReassemblyError::OffsetOverflow) => {
                            assert!(end.is_none_or(|e| e > MAX_OFFSET));
                        }
                        Err(ReassemblyError::BeyondFinalSize { end: e, final_size }) => {
                            assert_eq!(Some(e), end);
                            assert_eq!(Some(final_size), self.r.final_size());
                            assert!(e > final_size);
                        }
                        Err(ReassemblyError::FinalSizeChanged { .. }) => {
                            panic!("insert returned FinalSizeChanged")
                        }
                        Err(ReassemblyError::BufferFull { .. }) => {}
                        Ok(added) => {
                            assert!(len > 0 && end.is_some_and(|e| e <= MAX_OFFSET));
                            assert!(added <= len as u64);
                        }
                    }
                }
                4 => {
                    let offset = match op >> 5 {
                        0 => input.u64(),
                        1 => u64::from(input.u16() % 2048),
                        _ => self.r.read_offset().saturating_add(u64::from(input.byte())),
                    };
                    let before = self.r.clone();
                    if self.r.skip_to(offset).is_err() {
                        assert!(before == self.r, "a refused call changed state");
                    }
                }
                5 => {
                    let size = match op >> 5 {
                        0 => input.u64(),
                        1 => u64::from(input.u16() % 2048),
                        _ => self
                            .r
                            .received_max()
                            .saturating_add(u64::from(input.byte() % 4)),
                    };
                    let before = self.r.clone();
                    match self.r.set_final_size(size) {
                        Ok(()) => assert_eq!(self.r.final_size(), Some(size)),
                        Err(_) => assert!(before == self.r, "a refused call changed state"),
                    }
                }
                _ => self.pop(1 + usize::from(input.byte()) % POPS_PER_OP),
            }
            self.check();
        }
        // Whatever is left drains in a bounded number of pops.
        let mut pops = 0usize;
        while self.r.is_readable() {
            self.pop(1);
            pops += 1;
            assert!(pops < 1_000_000, "pop never stops");
            self.check();
        }
    }
}
