//! Send side of one stream: queued messages kept until acknowledged, cut into fragments per
//! packet when a path transmits.

use std::collections::VecDeque;
use std::ops::Range;

use atbus_proto::{fragment_flags, packet_content::FragmentType};
use bytes::Bytes;
use prost::Message;

use crate::ranges::RangeSet;
use crate::reassembly::MessageMeta;

/// One queued message.
#[derive(Debug, Clone)]
pub(crate) struct OutMessage {
    pub offset: u64,
    pub data: Bytes,
    pub meta: MessageMeta,
}

impl OutMessage {
    fn end(&self) -> u64 {
        self.offset + self.data.len() as u64
    }
}

/// What one packet of a stream carries.
#[derive(Debug, Clone, Default)]
pub(crate) struct Chunk {
    pub range: Range<u64>,
    pub fragments: Vec<FragmentType>,
    pub finish: bool,
    pub skip_to: Option<u64>,
    /// The bytes were sent before and lost.
    pub retransmission: bool,
}

/// Send state of one stream.
#[derive(Debug, Default)]
pub(crate) struct SendStream {
    /// Messages not yet fully acknowledged, in offset order.
    messages: VecDeque<OutMessage>,
    /// End of queued data.
    pub end: u64,
    /// First offset never sent.
    pub next_new: u64,
    /// Bytes to send again (lost).
    pub retransmit: RangeSet,
    /// Acknowledged bytes at or above `acked_base`.
    acked: RangeSet,
    /// Every byte below is acknowledged or skipped.
    pub acked_base: u64,
    /// The application finished the stream.
    pub finished: bool,
    /// The finish must be (re)sent.
    pub finish_pending: bool,
    /// The finish was acknowledged.
    pub finish_acked: bool,
    /// Skip target to announce (RESET_OFFSET), if any.
    pub skip_to: u64,
    /// The skip must be (re)sent.
    pub skip_pending: bool,
    /// The latest skip notice was acknowledged (true while none is outstanding).
    pub skip_acked: bool,
    /// The application reset the stream: the skip notice is a `RESET_STREAM`.
    pub reset: bool,
    /// Peer credit: may send below this offset.
    pub max_offset: u64,
    /// Bytes held (queued or unacknowledged).
    pub buffered: usize,
    /// `send` returned WouldBlock; report Writable when room returns.
    pub blocked: bool,
    /// Scheduling priority: higher goes first, equal priorities share.
    pub priority: i32,
    /// Send-side counters of the stream.
    pub stats: crate::session::StreamStats,
    /// The path that last lost data of this stream; retransmissions avoid it when they can.
    pub last_lost_path: Option<crate::config::PathId>,
    /// Acknowledged event already reported.
    pub ack_reported: bool,
}

impl SendStream {
    pub fn new(initial_credit: u64) -> Self {
        Self {
            max_offset: initial_credit,
            skip_acked: true,
            ..Self::default()
        }
    }

    pub fn push(&mut self, data: Bytes, meta: MessageMeta) -> u64 {
        let offset = self.end;
        self.end += data.len() as u64;
        self.buffered += data.len();
        self.messages.push_back(OutMessage { offset, data, meta });
        offset
    }

    /// Whether there is anything to put in a packet, given credit.
    pub fn wants_to_send(&self) -> bool {
        !self.retransmit.is_empty()
            || self.skip_pending
            || (self.next_new < self.end && self.next_new < self.max_offset)
            || (self.finish_pending && self.next_new == self.end)
    }

    /// Whether new data waits only for credit.
    pub fn credit_blocked(&self) -> bool {
        self.next_new < self.end && self.next_new >= self.max_offset
    }

    /// Whether everything, including the finish, was acknowledged.
    pub fn all_acked(&self) -> bool {
        self.acked_base >= self.end
            && self.skip_acked
            && (!self.finished || self.finish_acked || self.reset)
    }

    /// Takes the next chunk: a skip notice, else lost bytes, else new bytes, at most
    /// `budget` bytes of encoded content; `session_credit` limits new bytes. With `whole`
    /// (the budget of an empty packet), a message that would fit whole in an empty packet is
    /// never started in this one unless it fits here too, so it arrives in one piece.
    pub fn next_chunk(
        &mut self,
        budget: usize,
        whole: Option<usize>,
        session_credit: &mut u64,
        avoid_retransmit: bool,
    ) -> Option<Chunk> {
        if self.skip_pending {
            self.skip_pending = false;
            return Some(Chunk {
                range: self.skip_to..self.skip_to,
                skip_to: Some(self.skip_to),
                ..Chunk::default()
            });
        }
        if let Some(first) = self.retransmit.first().filter(|_| !avoid_retransmit) {
            let (fragments, end) = self.fragments(first.clone(), budget, whole);
            if end > first.start {
                self.retransmit.remove(first.start..end);
                let finish = self.finished && end == self.end;
                if finish {
                    self.finish_pending = false;
                }
                return Some(Chunk {
                    range: first.start..end,
                    fragments,
                    finish,
                    skip_to: None,
                    retransmission: true,
                });
            }
            return None;
        }
        let limit = self
            .end
            .min(self.max_offset)
            .min(self.next_new + *session_credit);
        if self.next_new < limit {
            let start = self.next_new;
            let (fragments, end) = self.fragments(start..limit, budget, whole);
            if end == start {
                return None;
            }
            *session_credit -= end - start;
            self.next_new = end;
            let finish = self.finished && end == self.end;
            if finish {
                self.finish_pending = false;
            }
            return Some(Chunk {
                range: start..end,
                fragments,
                finish,
                skip_to: None,
                retransmission: false,
            });
        }
        if self.finish_pending && self.next_new == self.end {
            self.finish_pending = false;
            return Some(Chunk {
                range: self.end..self.end,
                finish: true,
                ..Chunk::default()
            });
        }
        None
    }

    /// Cuts `range` into fragments fitting `budget` bytes of encoded `packet_content`; returns
    /// them and where they end. A fragment never spans two messages; metadata rides on a
    /// message's first fragment. See [`Self::next_chunk`] for `whole`.
    fn fragments(
        &self,
        range: Range<u64>,
        budget: usize,
        whole: Option<usize>,
    ) -> (Vec<FragmentType>, u64) {
        let mut pos = range.start;
        let idx = self.messages.partition_point(|m| m.end() <= pos);
        // At most one fragment per message, each at least 5 encoded bytes: one allocation.
        let mut out = Vec::with_capacity((self.messages.len() - idx).min(budget / 5 + 1));
        let mut used = 0usize;
        for m in self.messages.iter().skip(idx) {
            if pos >= range.end {
                break;
            }
            let start_in = (pos - m.offset) as usize;
            let mut frag = FragmentType::default();
            // Encoded length of the metadata fields, which only a message's first fragment has.
            let mut meta_len = 0;
            if start_in == 0 && !m.meta.is_default() {
                frag.packet_type = m.meta.packet_type;
                frag.labels = m.meta.labels.clone();
                frag.options = m.meta.options.clone();
                meta_len = frag.encoded_len();
            }
            let msg_end = m.end().min(range.end);
            let want = (msg_end - pos) as usize;
            // Fixed cost of this fragment: its own fields plus worst-case tags and length
            // varints for the data and the fragment (3 bytes each cover 2 MiB).
            let fixed = meta_len + 2 /* flag */ + 1 + 3 /* data tag+len */ + 1 + 3;
            if used + fixed >= budget {
                break;
            }
            let take = want.min(budget - used - fixed);
            if take == 0 {
                break;
            }
            // Cutting a message that an empty packet would carry whole costs the receiver a
            // copy to join the pieces; it waits for the next packet instead.
            if take < want && start_in == 0 && whole.is_some_and(|w| want + fixed <= w) {
                break;
            }
            frag.data = m.data.slice(start_in..start_in + take);
            let frag_end = pos + take as u64;
            if frag_end < m.end() {
                frag.fragment_flag = fragment_flags::HAS_MORE;
            }
            // The fields are independent, so the lengths add up to `frag.encoded_len()`.
            let mut len = meta_len + 1 + prost::encoding::encoded_len_varint(take as u64) + take;
            if frag.fragment_flag != 0 {
                len += prost::encoding::int32::encoded_len(3, &frag.fragment_flag);
            }
            debug_assert_eq!(len, frag.encoded_len());
            used += 1 + prost::encoding::encoded_len_varint(len as u64) + len;
            out.push(frag);
            pos = frag_end;
            if take < want {
                break;
            }
        }
        (out, pos)
    }

    /// Marks `range` acknowledged; returns bytes released from the buffer.
    pub fn on_acked(&mut self, range: Range<u64>) -> usize {
        if range.end <= self.acked_base {
            return 0;
        }
        let range = range.start.max(self.acked_base)..range.end;
        self.acked.insert(range.clone());
        self.retransmit.remove(range);
        self.advance_base()
    }

    /// Marks everything below `offset` acknowledged (cumulative stream ack).
    pub fn on_cumulative_ack(&mut self, offset: u64) -> usize {
        let offset = offset.min(self.next_new.max(self.skip_to));
        if offset <= self.acked_base {
            return 0;
        }
        self.on_acked(self.acked_base..offset)
    }

    fn advance_base(&mut self) -> usize {
        if let Some(first) = self.acked.first() {
            if first.start <= self.acked_base {
                self.acked_base = first.end;
                self.acked.remove(first);
            }
        }
        let mut released = 0;
        while let Some(m) = self.messages.front() {
            if m.end() > self.acked_base {
                break;
            }
            released += m.data.len();
            self.messages.pop_front();
        }
        self.buffered -= released;
        released
    }

    /// `range` was lost: send again what is not acknowledged.
    pub fn on_lost(&mut self, range: Range<u64>) {
        let start = range.start.max(self.acked_base).max(self.skip_to);
        if start >= range.end {
            return;
        }
        self.retransmit.insert(start..range.end);
        for acked in self.acked.iter().collect::<Vec<_>>() {
            self.retransmit.remove(acked);
        }
    }

    /// Skips every unacknowledged message below `target` (a message boundary). Returns the
    /// skipped byte range, if any.
    pub fn skip(&mut self, target: u64) -> Option<Range<u64>> {
        let from = self.acked_base.max(self.skip_to);
        if target <= from {
            return None;
        }
        self.skip_to = target;
        self.skip_pending = true;
        self.skip_acked = false;
        self.retransmit.remove_below(target);
        if self.next_new < target {
            self.next_new = target;
        }
        // Skipped bytes never need acknowledging.
        self.acked.insert(from..target);
        self.advance_base();
        Some(from..target)
    }

    /// Abandons the stream: nothing more is sent, the peer learns the final size (the end of
    /// everything queued). Returns the range of messages that were not acknowledged.
    pub fn reset(&mut self) -> Option<Range<u64>> {
        self.reset = true;
        self.finished = true;
        self.finish_pending = false;
        let end = self.end;
        let skipped = self.skip(end);
        // Even with nothing left to skip, the peer must learn that the stream ended.
        self.skip_to = end;
        self.skip_pending = true;
        self.skip_acked = false;
        skipped
    }

    /// Messages not yet wholly acknowledged (nor skipped), in offset order.
    pub fn unacknowledged(&self) -> impl Iterator<Item = &OutMessage> {
        self.messages.iter()
    }

    /// Whether `offset` is a boundary of an unacknowledged message (or the end).
    pub fn is_boundary(&self, offset: u64) -> bool {
        offset == self.end || self.messages.iter().any(|m| m.offset == offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_with(msgs: &[&[u8]]) -> SendStream {
        let mut s = SendStream::new(u64::MAX);
        for m in msgs {
            s.push(Bytes::copy_from_slice(m), MessageMeta::default());
        }
        s
    }

    #[test]
    fn fragments_never_span_messages() {
        let mut s = stream_with(&[b"hello", b"world!"]);
        let mut credit = u64::MAX;
        let c = s.next_chunk(1000, None, &mut credit, false).expect("chunk");
        assert_eq!(c.range, 0..11);
        assert_eq!(c.fragments.len(), 2);
        assert_eq!(&c.fragments[0].data[..], b"hello");
        assert_eq!(c.fragments[0].fragment_flag, 0);
        assert_eq!(&c.fragments[1].data[..], b"world!");
    }

    #[test]
    fn small_budget_cuts_with_has_more() {
        let mut s = stream_with(&[&[7u8; 100]]);
        let mut credit = u64::MAX;
        let c = s.next_chunk(40, None, &mut credit, false).expect("chunk");
        assert!(c.range.end < 100);
        assert_eq!(c.fragments[0].fragment_flag, fragment_flags::HAS_MORE);
        let content = atbus_proto::PacketContent {
            fragment: c.fragments,
        };
        assert!(content.encoded_len() <= 40);
    }

    #[test]
    fn messages_that_fit_an_empty_packet_are_not_cut() {
        let mut s = stream_with(&[&[1u8; 30], &[2u8; 30], &[3u8; 100]]);
        let mut credit = u64::MAX;
        // Room for the first message and part of the second; an empty packet holds both.
        let c = s
            .next_chunk(60, Some(200), &mut credit, false)
            .expect("chunk");
        assert_eq!(
            c.range,
            0..30,
            "the second message waits for the next packet"
        );
        let c = s
            .next_chunk(200, Some(200), &mut credit, false)
            .expect("chunk");
        assert_eq!(c.range, 30..160, "both whole");
        assert!(c.fragments.iter().all(|f| f.fragment_flag == 0));
        // A message larger than an empty packet is cut as before.
        let mut s = stream_with(&[&[1u8; 30], &[2u8; 300]]);
        let c = s
            .next_chunk(100, Some(200), &mut credit, false)
            .expect("chunk");
        assert!(c.range.end > 30, "the large message starts at once");
        assert_eq!(c.fragments[1].fragment_flag, fragment_flags::HAS_MORE);
        // Without `whole` (datagram paths), packets are filled.
        let mut s = stream_with(&[&[1u8; 30], &[2u8; 30]]);
        let c = s.next_chunk(60, None, &mut credit, false).expect("chunk");
        assert!(c.range.end > 30);
    }

    #[test]
    fn lost_then_acked_is_not_resent() {
        let mut s = stream_with(&[b"abcdef"]);
        let mut credit = u64::MAX;
        s.next_chunk(1000, None, &mut credit, false);
        s.on_acked(0..3);
        s.on_lost(0..6);
        assert_eq!(s.retransmit.iter().collect::<Vec<_>>(), vec![3..6]);
        assert_eq!(s.on_acked(3..6), 6);
        assert!(s.retransmit.is_empty());
        assert_eq!(s.buffered, 0);
    }

    #[test]
    fn credit_limits_new_data() {
        let mut s = SendStream::new(4);
        s.push(Bytes::from_static(b"abcdefgh"), MessageMeta::default());
        let mut credit = u64::MAX;
        let c = s.next_chunk(1000, None, &mut credit, false).expect("chunk");
        assert_eq!(c.range, 0..4);
        assert!(s.credit_blocked());
        let mut small = 2;
        s.max_offset = 100;
        let c = s.next_chunk(1000, None, &mut small, false).expect("chunk");
        assert_eq!(c.range, 4..6, "session credit too");
    }
}
