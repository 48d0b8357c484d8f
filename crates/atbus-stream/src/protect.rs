//! Content protection of a session: the hook between the session and `atbus-auth`'s
//! [`ContentCodec`] (compression, then AEAD sealing; see `docs/security.md` §8).
//!
//! Layering: `atbus-auth` is a pure layer-1 crate (no I/O, no clock, no randomness), so the
//! session (layer 2) calls it directly; the node (layer 3) decides the keys and installs the
//! codec with [`crate::Session::set_content_codec`]. A session without a codec takes none of
//! these paths: its packets are encoded straight into the caller's buffer as before.
//!
//! Sending, the fragments of a packet are encoded into a reused buffer, transformed by the
//! codec into a second one, and the frame is written around the result into a third, which
//! `encode_raw` wraps in the package: no allocation per packet once the buffers are warm.
//! Receiving, a packet opens into a buffer of its own, which becomes the `Bytes` the fragments
//! (and the reassembler) keep.

use atbus_auth::{
    ContentCodec, ContentError, ContentHeader, MAX_PAD_OVERHEAD, ProtectError, SEAL_OVERHEAD,
};
use atbus_frame::{FrameError, FrameLimits, encode_raw};
use atbus_proto::{MessageHead, PacketContent, PacketData, SessionControl, packet_flags};
use bytes::Bytes;
use prost::Message;

use crate::config::KeyUpdateError;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, int32, int64};

/// Key of `frame_message.head`.
const FRAME_HEAD: u32 = 1;
/// Key of `frame_message.packet`.
const FRAME_PACKET: u32 = 7;
/// Key of `packet_data.content`.
const PACKET_CONTENT: u32 = 3;

/// Bytes a protected packet may need beyond its plain encoding: the key phase and tag, and a
/// longer content length varint.
pub(crate) const PROTECTED_OVERHEAD: usize = SEAL_OVERHEAD + 4;

/// Bytes a codec may add to a packet: padding, when it pads, on top of the seal.
pub(crate) fn codec_overhead(codec: &ContentCodec) -> usize {
    PROTECTED_OVERHEAD + if codec.pads() { MAX_PAD_OVERHEAD } else { 0 }
}

/// Counters of content protection, from [`crate::Session::content_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContentStats {
    /// Packets sealed (or only compressed, on a session with compression and no keys).
    pub packets_encoded: u64,
    /// Of those, packets sent with the `COMPRESSED` flag.
    pub packets_compressed: u64,
    /// Received packets whose content opened.
    pub packets_opened: u64,
    /// Received packets dropped because their tag did not verify (or their key phase, or
    /// their header, did not match): altered on the way, or forged.
    pub dropped_bad_tag: u64,
    /// Received packets dropped because they were not flagged `ENCRYPTED` on a session with
    /// keys (no downgrade), or flagged `COMPRESSED` on a session without compression.
    pub dropped_refused: u64,
    /// Control packets (acknowledgements, pings, pongs) sealed and sent.
    pub controls_sealed: u64,
    /// Sealed control packets received that opened and were applied.
    pub controls_opened: u64,
    /// Acknowledgements, pings and pongs that arrived in clear on a session with keys:
    /// dropped (an on-path attacker could have forged them).
    pub dropped_clear_control: u64,
    /// Sealed control packets that opened but whose control number was seen before (a
    /// replay) or is too old for the replay window: dropped.
    pub dropped_replayed_control: u64,
    /// Key updates of the send direction.
    pub key_updates_sent: u64,
    /// Key updates of the peer followed (a packet of its next phase opened).
    pub key_updates_received: u64,
}

/// Control numbers remembered per peer path, below the largest seen.
const CONTROL_REPLAY_WINDOW: u64 = 64;
/// Peer paths whose control numbers are remembered (the oldest id is forgotten beyond).
const MAX_CONTROL_WINDOWS: usize = 64;

/// The control numbers seen on one peer path: the largest, and a bit per number below it.
#[derive(Debug, Clone, Copy, Default)]
struct ControlWindow {
    largest: u64,
    /// Bit `i`: number `largest - i` was seen.
    seen: u64,
}

impl ControlWindow {
    /// Records `n`; false if it was seen before or is older than the window.
    fn accept(&mut self, n: u64) -> bool {
        if self.seen == 0 || n > self.largest {
            let shift = if self.seen == 0 { 0 } else { n - self.largest };
            self.seen = if shift >= CONTROL_REPLAY_WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.largest = n;
            return true;
        }
        let age = self.largest - n;
        if age >= CONTROL_REPLAY_WINDOW || self.seen & (1 << age) != 0 {
            return false;
        }
        self.seen |= 1 << age;
        true
    }
}

/// Why a received packet was not opened.
#[derive(Debug)]
pub(crate) enum OpenFailure {
    /// Dropped and counted; the session goes on (an attacker can always inject garbage).
    Dropped,
    /// The receive key saw too many forgeries, or authenticated content was malformed: the
    /// session must close.
    Fatal(ContentError),
}

/// The codec of a session and its reused buffers.
pub(crate) struct Protection {
    codec: ContentCodec,
    /// Encoded `packet_content` of the packet being sent.
    plain: Vec<u8>,
    /// Its wire form (compressed and/or sealed).
    wire: Vec<u8>,
    /// The `frame_message` around it.
    frame: Vec<u8>,
    /// Control numbers seen, per peer path id (replay protection of sealed control packets).
    control_windows: std::collections::BTreeMap<i64, ControlWindow>,
    /// The peer answered a packet of the current send phase: another update may follow.
    update_confirmed: bool,
    pub(crate) stats: ContentStats,
}

impl std::fmt::Debug for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Protection")
            .field("codec", &self.codec)
            .field("stats", &self.stats)
            .finish()
    }
}

/// Why a packet could not be sealed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SealFailure {
    /// The codec refused (key limit reached, packet number exhausted).
    #[error("content protection: {0}")]
    Codec(#[from] ContentError),
    /// The package did not fit.
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
}

impl Protection {
    pub(crate) fn new(codec: ContentCodec) -> Self {
        Self {
            codec,
            plain: Vec::new(),
            wire: Vec::new(),
            frame: Vec::new(),
            control_windows: std::collections::BTreeMap::new(),
            update_confirmed: true,
            stats: ContentStats::default(),
        }
    }

    /// Whether the codec seals (a session with keys).
    pub(crate) fn seals(&self) -> bool {
        self.codec.seals()
    }

    /// The send key phase, with keys.
    pub(crate) fn send_phase(&self) -> Option<u8> {
        self.codec.protection().map(|p| p.send_phase())
    }

    /// The receive key phase, with keys.
    pub(crate) fn receive_phase(&self) -> Option<u8> {
        self.codec.protection().map(|p| p.receive_phase())
    }

    /// Packets sealed under the current send key.
    pub(crate) fn sealed_packets(&self) -> u64 {
        self.codec.protection().map_or(0, |p| p.sealed_packets())
    }

    /// Moves the send direction to the next key phase, unless the previous update is not
    /// confirmed yet.
    pub(crate) fn update_send_key(&mut self) -> Result<(), KeyUpdateError> {
        if !self.update_confirmed {
            return Err(KeyUpdateError::NotConfirmed);
        }
        let p = self.codec.protection_mut().ok_or(KeyUpdateError::NoKeys)?;
        p.update_send_key();
        self.update_confirmed = false;
        self.stats.key_updates_sent += 1;
        Ok(())
    }

    /// The peer answered a packet sealed under send phase `phase`.
    pub(crate) fn confirm_phase(&mut self, phase: u8) {
        if self.send_phase() == Some(phase) {
            self.update_confirmed = true;
        }
    }

    /// Forgets the peer's previous key phase.
    pub(crate) fn discard_previous_receive_key(&mut self) {
        if let Some(p) = self.codec.protection_mut() {
            p.discard_previous_receive_key();
        }
    }

    /// Appends the package of `packet` with `content` transformed by the codec to `buf`;
    /// `packet.flags` gets `ENCRYPTED`/`COMPRESSED` as the codec set them. Returns the package
    /// size. On error `buf` is unchanged.
    pub(crate) fn encode(
        &mut self,
        head: &MessageHead,
        packet: &mut PacketData,
        content: &PacketContent,
        limits: &FrameLimits,
        buf: &mut Vec<u8>,
    ) -> Result<usize, SealFailure> {
        let size = self.encode_message(head, packet, content, limits, buf)?;
        self.stats.packets_encoded += 1;
        Ok(size)
    }

    /// As [`Protection::encode`] for a control packet (`packet.flags` has `SESSION_CONTROL`
    /// and `packet.packet_number` is the path's control number): `control` is sealed in
    /// the control nonce space.
    pub(crate) fn encode_control(
        &mut self,
        head: &MessageHead,
        packet: &mut PacketData,
        control: &SessionControl,
        limits: &FrameLimits,
        buf: &mut Vec<u8>,
    ) -> Result<usize, SealFailure> {
        debug_assert!(packet.flags & packet_flags::SESSION_CONTROL != 0);
        let size = self.encode_message(head, packet, control, limits, buf)?;
        self.stats.controls_sealed += 1;
        Ok(size)
    }

    fn encode_message(
        &mut self,
        head: &MessageHead,
        packet: &mut PacketData,
        content: &impl Message,
        limits: &FrameLimits,
        buf: &mut Vec<u8>,
    ) -> Result<usize, SealFailure> {
        self.plain.clear();
        // A `Vec` grows as needed: encoding into it cannot run out of room.
        let _ = content.encode(&mut self.plain);
        self.wire.clear();
        let mut header = ContentHeader::of(Some(head), packet);
        self.codec
            .encode(&mut header, &self.plain, &mut self.wire)?;
        packet.flags = header.flags;
        packet.padding_size = header.padding_size;
        if packet.flags & packet_flags::COMPRESSED != 0 {
            self.stats.packets_compressed += 1;
        }
        write_frame(head, packet, &self.wire, &mut self.frame);
        Ok(encode_raw(&self.frame, limits, buf)?)
    }

    /// Records the control number of an opened control packet from peer path `path_id`;
    /// false (counted) if it is a replay or older than the replay window.
    pub(crate) fn accept_control(&mut self, path_id: i64, number: u64) -> bool {
        if !self.control_windows.contains_key(&path_id)
            && self.control_windows.len() >= MAX_CONTROL_WINDOWS
        {
            self.control_windows.pop_first();
        }
        let fresh = self
            .control_windows
            .entry(path_id)
            .or_default()
            .accept(number);
        if fresh {
            self.stats.controls_opened += 1;
        } else {
            self.stats.dropped_replayed_control += 1;
        }
        fresh
    }

    /// Opens `packet`'s content in place (its flags lose `ENCRYPTED` and `COMPRESSED`);
    /// `source` and `destination` are the names of the frame's head.
    pub(crate) fn open(
        &mut self,
        source: &str,
        destination: &str,
        packet: &mut PacketData,
    ) -> Result<(), OpenFailure> {
        let mut header = ContentHeader::of(None, packet);
        header.source = source;
        header.destination = destination;
        let mut out = Vec::with_capacity(packet.content.len());
        match self.codec.decode(&header, &packet.content, &mut out) {
            Ok(_) => {
                self.stats.packets_opened += 1;
                packet.content = Bytes::from(out);
                packet.flags &= !(packet_flags::ENCRYPTED | packet_flags::COMPRESSED);
                packet.padding_size = 0;
                Ok(())
            }
            Err(ContentError::Protect(ProtectError::IntegrityLimitReached { failed })) => Err(
                OpenFailure::Fatal(ProtectError::IntegrityLimitReached { failed }.into()),
            ),
            Err(ContentError::Protect(_)) => {
                self.stats.dropped_bad_tag += 1;
                Err(OpenFailure::Dropped)
            }
            Err(
                ContentError::NotEncrypted
                | ContentError::EncryptionNotNegotiated
                | ContentError::CompressionNotNegotiated,
            ) => {
                self.stats.dropped_refused += 1;
                Err(OpenFailure::Dropped)
            }
            // Content that opened (or was not sealed) but does not decompress: the peer's own
            // bytes are malformed.
            Err(e) => Err(OpenFailure::Fatal(e)),
        }
    }
}

/// Writes `frame_message { head, packet }` with `content` as `packet.content` into `frame`
/// (cleared first), fields in number order as prost writes them.
fn write_frame(head: &MessageHead, packet: &PacketData, content: &[u8], frame: &mut Vec<u8>) {
    let int64s_before = [(1, packet.stream_id), (2, packet.stream_offset)];
    let int32s = [(4, packet.flags), (5, packet.padding_size)];
    let int64s_after = [
        (6, packet.timepoint_microseconds),
        (7, packet.packet_number),
        (8, packet.path_id),
    ];
    let len64 = |fields: &[(u32, i64)]| -> usize {
        fields
            .iter()
            .filter(|(_, v)| *v != 0)
            .map(|(tag, v)| int64::encoded_len(*tag, v))
            .sum()
    };
    let content_field = if content.is_empty() {
        0
    } else {
        prost::encoding::key_len(PACKET_CONTENT)
            + encoded_len_varint(content.len() as u64)
            + content.len()
    };
    let packet_len = len64(&int64s_before)
        + content_field
        + int32s
            .iter()
            .filter(|(_, v)| *v != 0)
            .map(|(tag, v)| int32::encoded_len(*tag, v))
            .sum::<usize>()
        + len64(&int64s_after);
    frame.clear();
    let head_len = head.encoded_len();
    encode_key(FRAME_HEAD, WireType::LengthDelimited, frame);
    encode_varint(head_len as u64, frame);
    head.encode_raw(frame);
    encode_key(FRAME_PACKET, WireType::LengthDelimited, frame);
    encode_varint(packet_len as u64, frame);
    for (tag, v) in int64s_before.iter().filter(|(_, v)| *v != 0) {
        int64::encode(*tag, v, frame);
    }
    if !content.is_empty() {
        encode_key(PACKET_CONTENT, WireType::LengthDelimited, frame);
        encode_varint(content.len() as u64, frame);
        frame.extend_from_slice(content);
    }
    for (tag, v) in int32s.iter().filter(|(_, v)| *v != 0) {
        int32::encode(*tag, v, frame);
    }
    for (tag, v) in int64s_after.iter().filter(|(_, v)| *v != 0) {
        int64::encode(*tag, v, frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_window_refuses_replays_and_numbers_too_old() {
        let mut w = ControlWindow::default();
        assert!(w.accept(0));
        assert!(!w.accept(0));
        assert!(w.accept(5));
        assert!(w.accept(3), "late but new");
        assert!(!w.accept(3) && !w.accept(5));
        assert!(w.accept(5 + CONTROL_REPLAY_WINDOW - 1));
        assert!(!w.accept(4), "fell out of the window");
        assert!(w.accept(1000));
        assert!(!w.accept(1000 - CONTROL_REPLAY_WINDOW));
        assert!(w.accept(1000 - CONTROL_REPLAY_WINDOW + 1));
    }
    use atbus_proto::{FrameMessage, frame_message::Body};

    #[test]
    fn written_frame_decodes_as_prost_would_encode_it() {
        let head = MessageHead {
            source: "a".into(),
            destination: "b".into(),
            ..MessageHead::default()
        };
        let packet = PacketData {
            stream_id: 3,
            stream_offset: 9000,
            flags: packet_flags::ENCRYPTED,
            timepoint_microseconds: 77,
            packet_number: 5,
            path_id: 1,
            ..PacketData::default()
        };
        let content = b"sealed bytes";
        let mut frame = Vec::new();
        write_frame(&head, &packet, content, &mut frame);
        let expected = FrameMessage {
            head: Some(head.clone()),
            body: Some(Body::Packet(PacketData {
                content: Bytes::from_static(content),
                ..packet.clone()
            })),
        };
        assert_eq!(frame, expected.encode_to_vec());
        assert_eq!(FrameMessage::decode(&frame[..]).ok(), Some(expected));
    }
}
