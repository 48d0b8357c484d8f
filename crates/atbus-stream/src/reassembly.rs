//! Receive-side reassembly of one stream.
//!
//! A stream's bytes may arrive over several paths at once, each path cutting the same messages into
//! fragments of its own size ("mixed streams"). A [`Reassembler`] takes those fragments
//! ([`Piece`]s) in any order, with duplicates and overlaps, and hands back whole messages in stream
//! order, each exactly once, or [`Delivery::Skipped`] markers for ranges the sender gave up on.
//!
//! # Rules
//!
//! - **Union of received bytes.** A byte is never stored twice. When a new piece contains stored
//!   pieces, the stored ones are dropped and the larger new piece is kept whole; when it overlaps a
//!   stored piece only partially, the new piece is trimmed to what is new. A message that arrived
//!   in one piece is therefore delivered as that very [`Bytes`] (no copy); a message assembled from
//!   several pieces is concatenated once, at delivery.
//! - **Message boundaries** come from pieces with [`Piece::ends_message`] (`HAS_MORE` absent): a
//!   message ends at `offset + len` of such a piece. The next message always starts at
//!   [`Reassembler::read_offset`]; it is delivered when every byte up to its end is present.
//! - **Metadata** of a message is the [`MessageMeta`] recorded at its start offset (default if
//!   none). The first metadata recorded for an offset wins.
//! - **Skips** ([`Reassembler::skip_to`]): complete messages from the read point stay deliverable;
//!   everything from the first incomplete message up to the skip target becomes one
//!   [`Delivery::Skipped`], and its buffered bytes are dropped at once. Pieces that later arrive
//!   for a skipped range are ignored.
//! - **Final size** ([`Reassembler::set_final_size`]): data past it is refused. A trailing range up
//!   to the final size that never got a message end (only an inconsistent sender or a reset in the
//!   middle of a message produces one) is reported as skipped once all its bytes are present,
//!   never delivered as a truncated message.
//! - **Tiling.** Deliveries are contiguous: the ranges of all deliveries, in order, tile
//!   `[0, read_offset)` exactly.
//!
//! # Memory
//!
//! [`Reassembler::buffered_bytes`] counts payload bytes held plus [`MessageMeta::cost`] of every
//! metadata entry held. [`Reassembler::insert`] refuses with [`ReassemblyError::BufferFull`] when
//! a piece would push that above the limit; [`Reassembler::insert_forced`] accepts it anyway (a
//! frame already read from a byte stream), so the limit is exceeded by at most one piece as long as
//! the caller stops reading once it is. Message-end markers need no budget of their own: each one
//! sits right after a distinct held byte, so there are never more of them than buffered bytes.
//! Stored pieces are slices of the `Bytes` they came in, so they keep that allocation alive until
//! they are delivered or dropped.
//!
//! # In-order arrival
//!
//! Pieces that arrive in order (each starting where the received bytes end, with nothing stored
//! out of order) go to a plain queue instead of the ordered maps: inserting and delivering them
//! costs no tree operation and no allocation per piece. The first piece that does not fit that
//! pattern moves the queue into the maps, and the general rules above take over until everything
//! stored has been delivered. Both representations follow the same rules; equality of two
//! reassemblers compares what they hold, not how.
//!
//! # Inconsistent senders
//!
//! The rules assume a sender that always sends the same bytes and boundaries for the same offsets.
//! If it does not, the reassembler never panics and never grows past the bounds above; what it
//! delivers is then unspecified (but still tiles the stream).
//!
//! # Example: an overlapping multi-path receive
//!
//! ```
//! use atbus_stream::reassembly::{Delivery, Piece, Reassembler};
//!
//! let mut r = Reassembler::new(1 << 20);
//! // "hello" (0..5) and "world!" (5..11); path B sent "hello" whole, path A in two fragments.
//! r.insert(Piece::new(0, &b"hel"[..], false)).unwrap(); // path A
//! r.insert(Piece::new(5, &b"wor"[..], false)).unwrap(); // path B
//! r.insert(Piece::new(0, &b"hello"[..], true)).unwrap(); // path B: contains "hel", kept whole
//! r.insert(Piece::new(3, &b"lo"[..], true)).unwrap(); // path A: duplicate, nothing new
//! let Some(Delivery::Message(m)) = r.pop() else { panic!() };
//! assert_eq!(&m.data[..], b"hello");
//! assert!(r.pop().is_none()); // "world!" is incomplete
//! r.insert(Piece::new(5, &b"world!"[..], true)).unwrap(); // path A: overlaps "wor"
//! let Some(Delivery::Message(m)) = r.pop() else { panic!() };
//! assert_eq!((m.offset, &m.data[..]), (5, &b"world!"[..]));
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use atbus_proto::PacketOptions;
use bytes::{Bytes, BytesMut};

/// Largest stream offset (exclusive end) accepted: offsets travel as signed varints, and `2^62`
/// keeps every sum of two offsets far from overflow.
pub const MAX_OFFSET: u64 = 1 << 62;

/// Fixed per-entry charge of a metadata entry, on top of its string and byte contents.
const META_ENTRY_OVERHEAD: usize = 64;
/// Fixed charge of each label or option entry, on top of its contents.
const MAP_ENTRY_OVERHEAD: usize = 16;

/// Message metadata carried on a message's first fragment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MessageMeta {
    /// `packet_type` of the message (0 = user data).
    pub packet_type: i32,
    /// Labels of the message.
    pub labels: BTreeMap<String, String>,
    /// Options of the message.
    pub options: Option<Box<PacketOptions>>,
}

impl MessageMeta {
    /// Whether every field has its default value (such metadata is not stored).
    pub fn is_default(&self) -> bool {
        self.packet_type == 0 && self.labels.is_empty() && self.options.is_none()
    }

    /// Approximate memory, in bytes, this metadata is charged against a reassembler's limit.
    pub fn cost(&self) -> usize {
        let labels = self.labels.iter().fold(0usize, |acc, (k, v)| {
            acc.saturating_add(k.len())
                .saturating_add(v.len())
                .saturating_add(MAP_ENTRY_OVERHEAD)
        });
        let options = self.options.as_ref().map_or(0, |o| {
            o.custom.iter().fold(
                o.token.len().saturating_add(MAP_ENTRY_OVERHEAD),
                |acc, (k, v)| {
                    acc.saturating_add(k.len())
                        .saturating_add(v.len())
                        .saturating_add(MAP_ENTRY_OVERHEAD)
                },
            )
        });
        META_ENTRY_OVERHEAD
            .saturating_add(labels)
            .saturating_add(options)
    }
}

/// One received fragment: bytes `[offset, offset + data.len())` of the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    /// Stream offset of the first byte.
    pub offset: u64,
    /// The fragment's bytes; never empty.
    pub data: Bytes,
    /// `HAS_MORE` is absent: a message ends at `offset + data.len()`.
    pub ends_message: bool,
    /// Metadata the sender put on this fragment (a message's first fragment), if any.
    pub meta: Option<MessageMeta>,
}

impl Piece {
    /// A fragment without metadata.
    pub fn new(offset: u64, data: impl Into<Bytes>, ends_message: bool) -> Self {
        Self {
            offset,
            data: data.into(),
            ends_message,
            meta: None,
        }
    }

    /// The same fragment carrying `meta`.
    pub fn with_meta(mut self, meta: MessageMeta) -> Self {
        self.meta = Some(meta);
        self
    }
}

/// A whole message, delivered in stream order.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedMessage {
    /// Stream offset of the message's first byte.
    pub offset: u64,
    /// The message payload.
    pub data: Bytes,
    /// The message's metadata (default if none was received).
    pub meta: MessageMeta,
}

/// What [`Reassembler::pop`] hands back.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// A whole message.
    Message(ReceivedMessage),
    /// The sender skipped `[offset, offset + len)`; the messages there are never delivered.
    Skipped {
        /// First skipped stream offset.
        offset: u64,
        /// Number of skipped bytes.
        len: u64,
    },
}

impl Delivery {
    /// Stream offset of the first byte this delivery covers.
    pub fn offset(&self) -> u64 {
        match self {
            Delivery::Message(m) => m.offset,
            Delivery::Skipped { offset, .. } => *offset,
        }
    }

    /// Number of stream bytes this delivery covers.
    pub fn len(&self) -> u64 {
        match self {
            Delivery::Message(m) => m.data.len() as u64,
            Delivery::Skipped { len, .. } => *len,
        }
    }

    /// Whether the delivery covers no bytes (never true for deliveries from a reassembler).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a reassembler refused an input. A refused input changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReassemblyError {
    /// Accepting the piece would exceed the buffer limit (bytes held beyond the read point).
    #[error("reassembly buffer full: {buffered} bytes held, limit {limit}")]
    BufferFull {
        /// Bytes held now (as [`Reassembler::buffered_bytes`]).
        buffered: usize,
        /// The configured limit.
        limit: usize,
    },
    /// Data or a skip target lies past the stream's known final size.
    #[error("data up to offset {end} lies past the final size {final_size}")]
    BeyondFinalSize {
        /// End offset of the refused data or skip.
        end: u64,
        /// The known final size.
        final_size: u64,
    },
    /// The final size was set twice to different values, or below data already received; `old` is
    /// the previous final size, or the largest offset already received.
    #[error("final size changed from {old} to {new}")]
    FinalSizeChanged {
        /// The previous final size, or the largest offset already received.
        old: u64,
        /// The refused final size.
        new: u64,
    },
    /// The piece carries no data (fragments are never empty, not even one that ends a message).
    #[error("empty stream piece")]
    EmptyPiece,
    /// An offset or `offset + len` overflows or exceeds [`MAX_OFFSET`].
    #[error("stream offset out of range")]
    OffsetOverflow,
}

/// A stored range: received bytes, or a range the sender skipped (value: its end offset).
#[derive(Debug, Clone, PartialEq)]
enum Chunk {
    Data(Bytes),
    Skip(u64),
}

impl Chunk {
    fn end(&self, start: u64) -> u64 {
        match self {
            Chunk::Data(b) => start + b.len() as u64,
            Chunk::Skip(end) => *end,
        }
    }
}

/// What `pop` would deliver next.
enum Ready {
    /// A skip chunk at the read point, ending here.
    Skip(u64),
    /// A complete message ending here.
    Message(u64),
    /// A message-less tail up to the final size, all bytes present.
    Tail(u64),
}

/// How an insert changes the stored ranges; computed before anything is mutated.
struct Plan {
    /// Keys of stored data chunks the new piece contains (dropped in favour of the piece).
    remove: Vec<u64>,
    /// Bytes in those chunks.
    removed: u64,
    /// Ranges to store as slices of the new piece.
    fill: Vec<(u64, u64)>,
    /// Total length of `fill`.
    filled: u64,
}

/// A piece held in the in-order queue (see the module docs).
#[derive(Debug, Clone)]
struct Queued {
    offset: u64,
    data: Bytes,
    ends_message: bool,
    meta: Option<MessageMeta>,
}

/// Reassembles one stream from possibly overlapping, duplicated, reordered pieces.
#[derive(Debug, Clone)]
pub struct Reassembler {
    max_buffered: usize,
    /// In-order pieces tiling `[read_offset, contiguous)`; when not empty, `chunks`, `ends` and
    /// `metas` are empty.
    queue: VecDeque<Queued>,
    /// Number of queued pieces that end a message.
    queue_ends: usize,
    /// Non-overlapping, non-empty ranges at or above `read_offset`, keyed by start offset.
    chunks: BTreeMap<u64, Chunk>,
    /// Message end offsets, all above `read_offset`.
    ends: BTreeSet<u64>,
    /// Metadata by offset, all at or above `read_offset`.
    metas: BTreeMap<u64, MessageMeta>,
    read_offset: u64,
    contiguous: u64,
    received_max: u64,
    data_bytes: usize,
    meta_bytes: usize,
    final_size: Option<u64>,
}

impl Reassembler {
    /// An empty reassembler that holds at most `max_buffered` bytes (see the module docs).
    pub fn new(max_buffered: usize) -> Self {
        Self {
            max_buffered,
            queue: VecDeque::new(),
            queue_ends: 0,
            chunks: BTreeMap::new(),
            ends: BTreeSet::new(),
            metas: BTreeMap::new(),
            read_offset: 0,
            contiguous: 0,
            received_max: 0,
            data_bytes: 0,
            meta_bytes: 0,
            final_size: None,
        }
    }

    /// Inserts a fragment; duplicates and overlaps are trimmed to what is new. Returns how many
    /// new bytes were stored (stream bytes not held before; stored pieces the new one contains
    /// are replaced by it and do not count).
    pub fn insert(&mut self, piece: Piece) -> Result<u64, ReassemblyError> {
        self.insert_inner(piece, false)
    }

    /// Same as [`insert`](Self::insert) but never refuses for [`ReassemblyError::BufferFull`]: a
    /// frame already read from a byte stream is always accepted. The limit may then be exceeded by
    /// this piece; the caller pauses reading until the application takes data.
    pub fn insert_forced(&mut self, piece: Piece) -> Result<u64, ReassemblyError> {
        self.insert_inner(piece, true)
    }

    /// The sender skipped everything below `offset` (a message boundary). Complete messages
    /// contiguous from the read point stay deliverable; from the first incomplete message (or
    /// gap) up to `offset` becomes one [`Delivery::Skipped`], and buffered bytes there are
    /// dropped. Ignored if `offset` is at or below that point. Data at or after `offset` is kept.
    pub fn skip_to(&mut self, offset: u64) -> Result<(), ReassemblyError> {
        if offset > MAX_OFFSET {
            return Err(ReassemblyError::OffsetOverflow);
        }
        if let Some(final_size) = self.final_size {
            if offset > final_size {
                return Err(ReassemblyError::BeyondFinalSize {
                    end: offset,
                    final_size,
                });
            }
        }
        self.spill();
        let start = self.first_incomplete();
        if offset <= start {
            return Ok(());
        }
        // A skip range already reaching past `offset` is absorbed whole.
        let mut end = offset;
        if let Some((_, Chunk::Skip(skip_end))) = self.chunks.range(..offset).next_back() {
            end = end.max(*skip_end);
        }
        self.drop_range(start, end);
        let mut start = start;
        if let Some((&key, Chunk::Skip(skip_end))) = self.chunks.range(..start).next_back() {
            if *skip_end == start {
                self.chunks.remove(&key);
                start = key;
            }
        }
        self.chunks.insert(start, Chunk::Skip(end));
        self.received_max = self.received_max.max(end);
        // `start` never lies above the contiguous offset, so everything up to `end` is covered.
        self.contiguous = self.contiguous.max(end);
        self.advance_contiguous();
        Ok(())
    }

    /// Records the stream's final size (FINISH or RESET).
    pub fn set_final_size(&mut self, size: u64) -> Result<(), ReassemblyError> {
        if size > MAX_OFFSET {
            return Err(ReassemblyError::OffsetOverflow);
        }
        if let Some(old) = self.final_size {
            if old != size {
                return Err(ReassemblyError::FinalSizeChanged { old, new: size });
            }
            return Ok(());
        }
        if size < self.received_max {
            return Err(ReassemblyError::FinalSizeChanged {
                old: self.received_max,
                new: size,
            });
        }
        self.final_size = Some(size);
        Ok(())
    }

    /// Next delivery in stream order, if ready: a whole message (the very `Bytes` it arrived in
    /// when it arrived in one piece, concatenated otherwise), or a skipped range.
    pub fn pop(&mut self) -> Option<Delivery> {
        if !self.queue.is_empty() {
            if self.queue_ends > 0 {
                if let Some(message) = self.pop_queued() {
                    return Some(Delivery::Message(message));
                }
            } else if self.next_ready().is_none() {
                // A message still arriving: keep the queue.
                return None;
            }
            // A finished tail without a message end: the general rules report it.
            self.spill();
        }
        let start = self.read_offset;
        match self.next_ready()? {
            Ready::Skip(end) | Ready::Tail(end) => {
                self.drop_range(start, end);
                self.set_read_offset(end);
                Some(Delivery::Skipped {
                    offset: start,
                    len: end - start,
                })
            }
            Ready::Message(end) => self.take_message(start, end).map(Delivery::Message),
        }
    }

    /// Whether [`pop`](Self::pop) would return `Some`.
    pub fn is_readable(&self) -> bool {
        // With pieces queued the maps are empty: `next_ready` then sees only a finished tail.
        self.queue_ends > 0 || self.next_ready().is_some()
    }

    /// Everything below this offset has been delivered or skipped.
    pub fn read_offset(&self) -> u64 {
        self.read_offset
    }

    /// Everything below this offset has been received or skipped (the cumulative ack offset).
    pub fn contiguous_offset(&self) -> u64 {
        self.contiguous
    }

    /// Largest `offset + len` of an accepted piece, or skip target (a hint for acks).
    pub fn received_max(&self) -> u64 {
        self.received_max
    }

    /// Bytes held (received, not yet delivered), plus the charge of metadata held.
    pub fn buffered_bytes(&self) -> usize {
        self.data_bytes.saturating_add(self.meta_bytes)
    }

    /// The configured buffer limit.
    pub fn max_buffered(&self) -> usize {
        self.max_buffered
    }

    /// The stream's final size, once known.
    pub fn final_size(&self) -> Option<u64> {
        self.final_size
    }

    /// Whether the final size is known and everything up to it was delivered or skipped.
    pub fn is_finished(&self) -> bool {
        self.final_size == Some(self.read_offset)
    }

    /// Checks the internal invariants; for tests and fuzzing.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        if !self.queue.is_empty() {
            return self.check_queue();
        }
        if self.queue_ends != 0 {
            return Err(format!(
                "{} message ends counted in an empty queue",
                self.queue_ends
            ));
        }
        let mut prev_end = self.read_offset;
        let mut data = 0usize;
        for (&key, chunk) in &self.chunks {
            let end = chunk.end(key);
            if key < prev_end {
                return Err(format!(
                    "chunk at {key} overlaps the previous range ending {prev_end}"
                ));
            }
            if end <= key {
                return Err(format!("empty chunk at {key}"));
            }
            if let Chunk::Data(b) = chunk {
                data += b.len();
            }
            prev_end = end;
        }
        if data != self.data_bytes {
            return Err(format!("data bytes {data} != counted {}", self.data_bytes));
        }
        let meta: usize = self.metas.values().map(MessageMeta::cost).sum();
        if meta != self.meta_bytes {
            return Err(format!("meta bytes {meta} != counted {}", self.meta_bytes));
        }
        if self
            .metas
            .keys()
            .next()
            .is_some_and(|&k| k < self.read_offset)
        {
            return Err("metadata below the read offset".into());
        }
        if self
            .ends
            .iter()
            .next()
            .is_some_and(|&e| e <= self.read_offset)
        {
            return Err("message end at or below the read offset".into());
        }
        let mut contiguous = self.read_offset;
        while let Some(chunk) = self.chunks.get(&contiguous) {
            contiguous = chunk.end(contiguous);
        }
        if contiguous != self.contiguous {
            return Err(format!(
                "contiguous {} != actual {contiguous}",
                self.contiguous
            ));
        }
        if self.contiguous > self.received_max.max(self.read_offset) {
            return Err("contiguous offset above received max".into());
        }
        if let Some(final_size) = self.final_size {
            if self.received_max > final_size || self.read_offset > final_size {
                return Err("data past the final size".into());
            }
        }
        Ok(())
    }

    /// [`Self::check_invariants`] while pieces are queued.
    fn check_queue(&self) -> Result<(), String> {
        if !self.chunks.is_empty() || !self.ends.is_empty() || !self.metas.is_empty() {
            return Err("pieces queued while the maps hold ranges".into());
        }
        let mut pos = self.read_offset;
        let (mut data, mut meta, mut ends) = (0usize, 0usize, 0usize);
        for q in &self.queue {
            if q.offset != pos {
                return Err(format!(
                    "queued piece at {} where {pos} was expected",
                    q.offset
                ));
            }
            if q.data.is_empty() {
                return Err(format!("empty queued piece at {pos}"));
            }
            pos += q.data.len() as u64;
            data += q.data.len();
            meta += q.meta.as_ref().map_or(0, MessageMeta::cost);
            ends += usize::from(q.ends_message);
        }
        if pos != self.contiguous {
            return Err(format!("contiguous {} != queue end {pos}", self.contiguous));
        }
        if (data, meta, ends) != (self.data_bytes, self.meta_bytes, self.queue_ends) {
            return Err(format!(
                "queue holds {data} data bytes, {meta} metadata bytes, {ends} message ends; \
                 counted {}, {}, {}",
                self.data_bytes, self.meta_bytes, self.queue_ends
            ));
        }
        if self.contiguous > self.received_max {
            return Err("contiguous offset above received max".into());
        }
        if let Some(final_size) = self.final_size {
            if self.received_max > final_size {
                return Err("data past the final size".into());
            }
        }
        Ok(())
    }

    /// Whether nothing is stored out of order (so a piece at the contiguous offset may queue).
    fn maps_empty(&self) -> bool {
        self.chunks.is_empty() && self.ends.is_empty() && self.metas.is_empty()
    }

    /// Queues a piece that starts exactly where the received bytes end.
    fn enqueue(&mut self, piece: Piece, end: u64, forced: bool) -> Result<u64, ReassemblyError> {
        let meta = piece.meta.filter(|meta| !meta.is_default());
        let meta_cost = meta.as_ref().map_or(0, MessageMeta::cost);
        let len = end - piece.offset;
        let charge = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .saturating_add(meta_cost);
        let buffered = self.buffered_bytes();
        if !forced && buffered.saturating_add(charge) > self.max_buffered {
            return Err(ReassemblyError::BufferFull {
                buffered,
                limit: self.max_buffered,
            });
        }
        self.data_bytes += piece.data.len();
        self.meta_bytes += meta_cost;
        self.queue_ends += usize::from(piece.ends_message);
        self.queue.push_back(Queued {
            offset: piece.offset,
            data: piece.data,
            ends_message: piece.ends_message,
            meta,
        });
        self.received_max = self.received_max.max(end);
        self.contiguous = end;
        Ok(len)
    }

    /// Moves the queued pieces into the maps, stored as [`Self::append`] would have stored them.
    fn spill(&mut self) {
        for q in self.queue.drain(..) {
            let end = q.offset + q.data.len() as u64;
            if let Some(meta) = q.meta {
                self.metas.insert(q.offset, meta);
            }
            if q.ends_message {
                self.ends.insert(end);
            }
            self.chunks.insert(q.offset, Chunk::Data(q.data));
        }
        self.queue_ends = 0;
    }

    /// Delivers the message at the front of the queue: the very `Bytes` of its piece when it
    /// arrived in one, or its pieces concatenated. `None` if no queued piece ends a message.
    fn pop_queued(&mut self) -> Option<ReceivedMessage> {
        let last = self.queue.iter().position(|q| q.ends_message)?;
        let first = self.queue.pop_front()?;
        let start = first.offset;
        let meta = match first.meta {
            Some(meta) => {
                self.meta_bytes -= meta.cost();
                meta
            }
            None => MessageMeta::default(),
        };
        let data = if last == 0 {
            first.data
        } else {
            let total = self
                .queue
                .iter()
                .take(last)
                .fold(first.data.len(), |acc, q| acc + q.data.len());
            let mut buf = BytesMut::with_capacity(total);
            buf.extend_from_slice(&first.data);
            for q in self.queue.drain(..last) {
                buf.extend_from_slice(&q.data);
                // Metadata inside a message (an inconsistent sender) is dropped with it.
                if let Some(meta) = q.meta {
                    self.meta_bytes -= meta.cost();
                }
            }
            buf.freeze()
        };
        self.queue_ends -= 1;
        self.data_bytes -= data.len();
        self.set_read_offset(start + data.len() as u64);
        Some(ReceivedMessage {
            offset: start,
            data,
            meta,
        })
    }

    /// A copy with the queue moved into the maps, for comparisons.
    fn spilled(&self) -> std::borrow::Cow<'_, Self> {
        if self.queue.is_empty() {
            std::borrow::Cow::Borrowed(self)
        } else {
            let mut copy = self.clone();
            copy.spill();
            std::borrow::Cow::Owned(copy)
        }
    }

    fn insert_inner(&mut self, piece: Piece, forced: bool) -> Result<u64, ReassemblyError> {
        let len = piece.data.len() as u64;
        if len == 0 {
            return Err(ReassemblyError::EmptyPiece);
        }
        let end = piece
            .offset
            .checked_add(len)
            .filter(|&end| end <= MAX_OFFSET)
            .ok_or(ReassemblyError::OffsetOverflow)?;
        if let Some(final_size) = self.final_size {
            if end > final_size {
                return Err(ReassemblyError::BeyondFinalSize { end, final_size });
            }
        }
        if end <= self.read_offset {
            return Ok(0);
        }
        if piece.offset == self.contiguous.max(self.read_offset)
            && (!self.queue.is_empty() || self.maps_empty())
        {
            return self.enqueue(piece, end, forced);
        }
        self.spill();
        // In-order arrival, the common case: the piece starts at or after the end of everything
        // stored (data and skips), so it overlaps nothing and lies in no skipped range.
        let appends = piece.offset >= self.read_offset
            && self
                .chunks
                .last_key_value()
                .is_none_or(|(&key, chunk)| chunk.end(key) <= piece.offset);
        if appends {
            return self.append(piece, end, forced);
        }
        let plan = self.plan(piece.offset.max(self.read_offset), end);
        let meta = piece.meta.filter(|meta| {
            !meta.is_default()
                && piece.offset >= self.read_offset
                && !self.metas.contains_key(&piece.offset)
                && !self.in_skip(piece.offset)
        });
        let meta_cost = meta.as_ref().map_or(0, MessageMeta::cost);
        let added = plan.filled - plan.removed;
        let charge = usize::try_from(added)
            .unwrap_or(usize::MAX)
            .saturating_add(meta_cost);
        let buffered = self.buffered_bytes();
        if !forced && charge > 0 && buffered.saturating_add(charge) > self.max_buffered {
            return Err(ReassemblyError::BufferFull {
                buffered,
                limit: self.max_buffered,
            });
        }

        for key in &plan.remove {
            if let Some(Chunk::Data(b)) = self.chunks.remove(key) {
                self.data_bytes -= b.len();
            }
        }
        for &(from, to) in &plan.fill {
            // `piece.offset <= from < to <= end`, so both indexes are within `data`.
            let slice = piece
                .data
                .slice((from - piece.offset) as usize..(to - piece.offset) as usize);
            self.data_bytes += slice.len();
            self.chunks.insert(from, Chunk::Data(slice));
        }
        if let Some(meta) = meta {
            self.meta_bytes += meta_cost;
            self.metas.insert(piece.offset, meta);
        }
        if piece.ends_message && !self.in_skip(end - 1) {
            self.ends.insert(end);
        }
        self.received_max = self.received_max.max(end);
        self.advance_contiguous();
        Ok(added)
    }

    /// [`Self::insert_inner`] for a piece beyond everything stored: one chunk, no trimming.
    fn append(&mut self, piece: Piece, end: u64, forced: bool) -> Result<u64, ReassemblyError> {
        let meta = piece
            .meta
            .filter(|meta| !meta.is_default() && !self.metas.contains_key(&piece.offset));
        let meta_cost = meta.as_ref().map_or(0, MessageMeta::cost);
        let len = end - piece.offset;
        let charge = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .saturating_add(meta_cost);
        let buffered = self.buffered_bytes();
        if !forced && buffered.saturating_add(charge) > self.max_buffered {
            return Err(ReassemblyError::BufferFull {
                buffered,
                limit: self.max_buffered,
            });
        }
        self.data_bytes += piece.data.len();
        self.chunks.insert(piece.offset, Chunk::Data(piece.data));
        if let Some(meta) = meta {
            self.meta_bytes += meta_cost;
            self.metas.insert(piece.offset, meta);
        }
        if piece.ends_message {
            self.ends.insert(end);
        }
        self.received_max = self.received_max.max(end);
        // Nothing is stored beyond the piece: it extends the contiguous range when it touches it.
        self.contiguous = self.contiguous.max(self.read_offset);
        if piece.offset <= self.contiguous {
            self.contiguous = end;
        }
        Ok(len)
    }

    /// Which parts of `[start, end)` a new piece adds, and which stored chunks it replaces.
    fn plan(&self, start: u64, end: u64) -> Plan {
        let mut plan = Plan {
            remove: Vec::new(),
            removed: 0,
            fill: Vec::new(),
            filled: 0,
        };
        let mut start = start;
        let mut end = end;
        if let Some((&key, chunk)) = self.chunks.range(..start).next_back() {
            start = start.max(chunk.end(key));
        }
        if start >= end {
            return plan;
        }
        let mut cursor = start;
        for (&key, chunk) in self.chunks.range(start..end) {
            let chunk_end = chunk.end(key);
            if chunk_end > end {
                end = key;
                break;
            }
            match chunk {
                Chunk::Data(b) => {
                    plan.remove.push(key);
                    plan.removed += b.len() as u64;
                }
                Chunk::Skip(_) => {
                    if key > cursor {
                        plan.fill.push((cursor, key));
                    }
                    cursor = chunk_end;
                }
            }
        }
        if end > cursor {
            plan.fill.push((cursor, end));
        }
        plan.filled = plan.fill.iter().map(|(from, to)| to - from).sum();
        plan
    }

    /// Whether stream byte `offset` lies in a skipped range.
    fn in_skip(&self, offset: u64) -> bool {
        matches!(
            self.chunks.range(..=offset).next_back(),
            Some((_, Chunk::Skip(end))) if *end > offset
        )
    }

    fn advance_contiguous(&mut self) {
        self.contiguous = self.contiguous.max(self.read_offset);
        // The chunk covering the contiguous offset may start below it: a piece that contains
        // stored chunks replaces them.
        while let Some((&key, chunk)) = self.chunks.range(..=self.contiguous).next_back() {
            let end = chunk.end(key);
            if end <= self.contiguous {
                break;
            }
            self.contiguous = end;
        }
    }

    /// Start of the first message, from the read point, that is not complete (or the end of the
    /// skipped ranges met on the way).
    fn first_incomplete(&self) -> u64 {
        let mut pos = self.read_offset;
        loop {
            if let Some(Chunk::Skip(end)) = self.chunks.get(&pos) {
                pos = *end;
                continue;
            }
            match self.ends.range(pos + 1..).next() {
                Some(&end) if end <= self.contiguous => pos = end,
                _ => return pos,
            }
        }
    }

    fn next_ready(&self) -> Option<Ready> {
        let start = self.read_offset;
        if let Some(Chunk::Skip(end)) = self.chunks.get(&start) {
            return Some(Ready::Skip(*end));
        }
        match self.ends.range(start + 1..).next() {
            Some(&end) => (end <= self.contiguous).then_some(Ready::Message(end)),
            None => match self.final_size {
                Some(size) if size > start && self.contiguous >= size => Some(Ready::Tail(size)),
                _ => None,
            },
        }
    }

    /// Takes the complete message `[start, end)` out of the stored chunks.
    fn take_message(&mut self, start: u64, end: u64) -> Option<ReceivedMessage> {
        let mut first = match self.chunks.remove(&start) {
            Some(Chunk::Data(b)) => b,
            Some(other) => {
                self.chunks.insert(start, other);
                return None;
            }
            None => return None,
        };
        let want = end - start;
        let mut taken_to = end;
        let data = if first.len() as u64 >= want {
            if first.len() as u64 > want {
                let rest = first.split_off(want as usize);
                self.chunks.insert(end, Chunk::Data(rest));
            }
            first
        } else {
            let mut buf = BytesMut::with_capacity(
                usize::try_from(want)
                    .unwrap_or(usize::MAX)
                    .min(self.data_bytes),
            );
            let mut pos = start + first.len() as u64;
            buf.extend_from_slice(&first);
            while pos < end {
                match self.chunks.remove(&pos) {
                    Some(Chunk::Data(mut b)) => {
                        let take = (b.len() as u64).min(end - pos);
                        if (b.len() as u64) > take {
                            let rest = b.split_off(take as usize);
                            self.chunks.insert(pos + take, Chunk::Data(rest));
                        }
                        buf.extend_from_slice(&b);
                        pos += take;
                    }
                    // Unreachable with a consistent state (the message is complete and a skip
                    // never starts inside a message); deliver what precedes it.
                    Some(other) => {
                        self.chunks.insert(pos, other);
                        break;
                    }
                    None => break,
                }
            }
            taken_to = pos;
            buf.freeze()
        };
        self.data_bytes -= data.len();
        let meta = match self.metas.remove(&start) {
            Some(meta) => {
                self.meta_bytes -= meta.cost();
                meta
            }
            None => MessageMeta::default(),
        };
        // A message taken from the one chunk that held it leaves nothing else in its range but
        // its end marker (the first end after `start` is `end`, chunks are disjoint) unless an
        // inconsistent sender left metadata inside it; otherwise sweep the range.
        if taken_to == end && self.metas.range(start..end).next().is_none() {
            self.ends.remove(&end);
        } else {
            self.drop_range(start, taken_to);
        }
        self.set_read_offset(taken_to);
        Some(ReceivedMessage {
            offset: start,
            data,
            meta,
        })
    }

    fn set_read_offset(&mut self, offset: u64) {
        self.read_offset = offset;
        self.contiguous = self.contiguous.max(offset);
    }

    /// Drops stored bytes, skip ranges, message ends in `(from, to]` and metadata in
    /// `[from, to)`; parts of stored ranges outside `[from, to)` are kept.
    fn drop_range(&mut self, from: u64, to: u64) {
        if from >= to {
            return;
        }
        if let Some((&key, chunk)) = self.chunks.range(..from).next_back() {
            if chunk.end(key) > from {
                if let Some(chunk) = self.chunks.remove(&key) {
                    self.reinsert_outside(key, chunk, from, to);
                }
            }
        }
        let keys: Vec<u64> = self.chunks.range(from..to).map(|(&k, _)| k).collect();
        for key in keys {
            if let Some(chunk) = self.chunks.remove(&key) {
                self.reinsert_outside(key, chunk, from, to);
            }
        }
        let ends: Vec<u64> = self.ends.range(from + 1..=to).copied().collect();
        for end in ends {
            self.ends.remove(&end);
        }
        let metas: Vec<u64> = self.metas.range(from..to).map(|(&k, _)| k).collect();
        for key in metas {
            if let Some(meta) = self.metas.remove(&key) {
                self.meta_bytes -= meta.cost();
            }
        }
    }

    /// Puts back the parts of the removed `chunk` (at `key`) that lie outside `[from, to)`.
    fn reinsert_outside(&mut self, key: u64, chunk: Chunk, from: u64, to: u64) {
        let end = chunk.end(key);
        match chunk {
            Chunk::Data(mut b) => {
                self.data_bytes -= b.len();
                let mut middle = if key < from {
                    let middle = b.split_off((from - key) as usize);
                    self.data_bytes += b.len();
                    self.chunks.insert(key, Chunk::Data(b));
                    middle
                } else {
                    b
                };
                let middle_start = key.max(from);
                if end > to {
                    let tail = middle.split_off((to - middle_start) as usize);
                    self.data_bytes += tail.len();
                    self.chunks.insert(to, Chunk::Data(tail));
                }
            }
            Chunk::Skip(_) => {
                if key < from {
                    self.chunks.insert(key, Chunk::Skip(from));
                }
                if end > to {
                    self.chunks.insert(to, Chunk::Skip(end));
                }
            }
        }
    }
}

impl PartialEq for Reassembler {
    /// Compares what the reassemblers hold and their limits, whichever representation holds it.
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.spilled(), other.spilled());
        a.max_buffered == b.max_buffered
            && a.chunks == b.chunks
            && a.ends == b.ends
            && a.metas == b.metas
            && a.read_offset == b.read_offset
            && a.contiguous == b.contiguous
            && a.received_max == b.received_max
            && a.data_bytes == b.data_bytes
            && a.meta_bytes == b.meta_bytes
            && a.final_size == b.final_size
    }
}
