//! How a [`TlsRecord`](super::TlsRecord) rides in a `packet_data` (`docs/protocol.md`, "TLS
//! handshake records"): flags exactly `TLS_HANDSHAKE`, stream 0 at offset 0, the record in
//! `content` followed by `padding_size` bytes of padding, no sealing, no compression. The frame
//! carries no `message_head`: like the link handshake, it concerns only the link it is on.

use atbus_proto::PacketData;
use atbus_proto::packet_flags::TLS_HANDSHAKE;
use thiserror::Error;

/// Largest `content` of a TLS handshake packet: a full record plus padding up to a 64 KiB
/// package.
pub const MAX_TLS_PACKET_CONTENT: usize = 64 * 1024;

/// Why a `packet_data` is not a valid TLS handshake packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TlsPacketError {
    /// The flags are not exactly `TLS_HANDSHAKE` (sealed, compressed or stream flags set).
    #[error("TLS handshake packet with flags {0:#x}, must be exactly TLS_HANDSHAKE")]
    Flags(i32),
    /// `stream_id` or `stream_offset` is not 0.
    #[error("TLS handshake packet on stream {stream_id} at offset {stream_offset}, must be 0/0")]
    Stream {
        /// The packet's stream id.
        stream_id: i64,
        /// The packet's stream offset.
        stream_offset: i64,
    },
    /// `padding_size` is negative or longer than the content.
    #[error("TLS handshake packet padding {padding} does not fit {len} content bytes")]
    Padding {
        /// The declared padding.
        padding: i32,
        /// The content length.
        len: usize,
    },
    /// The content is larger than [`MAX_TLS_PACKET_CONTENT`].
    #[error("TLS handshake packet content of {0} bytes")]
    TooLarge(usize),
}

/// Wraps an encoded record in the `packet_data` that carries it, padded with zero bytes to at
/// least `pad_to` content bytes (a datagram client pads its first flight so the server's
/// answer fits the amplification budget). `pad_to` is capped at [`MAX_TLS_PACKET_CONTENT`].
pub fn record_packet(mut record: Vec<u8>, pad_to: usize) -> PacketData {
    let len = record.len();
    let target = pad_to.min(MAX_TLS_PACKET_CONTENT);
    let padding = target.saturating_sub(len);
    record.resize(len + padding, 0);
    PacketData {
        flags: TLS_HANDSHAKE,
        // At most 64 KiB, so it fits an i32.
        padding_size: i32::try_from(padding).unwrap_or(i32::MAX),
        content: record.into(),
        ..PacketData::default()
    }
}

/// The record bytes of a received TLS handshake packet (content without its padding), after
/// checking the packet rules. Call [`TlsHandshake::handle_record`](super::TlsHandshake::handle_record)
/// with the result.
pub fn packet_record(packet: &PacketData) -> Result<&[u8], TlsPacketError> {
    if packet.flags != TLS_HANDSHAKE {
        return Err(TlsPacketError::Flags(packet.flags));
    }
    if packet.stream_id != 0 || packet.stream_offset != 0 {
        return Err(TlsPacketError::Stream {
            stream_id: packet.stream_id,
            stream_offset: packet.stream_offset,
        });
    }
    let len = packet.content.len();
    if len > MAX_TLS_PACKET_CONTENT {
        return Err(TlsPacketError::TooLarge(len));
    }
    let padding = usize::try_from(packet.padding_size)
        .ok()
        .filter(|&p| p <= len)
        .ok_or(TlsPacketError::Padding {
            padding: packet.padding_size,
            len,
        })?;
    Ok(&packet.content[..len - padding])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{TlsRecord, TlsRefusal};

    #[test]
    fn records_ride_padded_packets_and_come_back_unpadded() {
        let mut record = Vec::new();
        TlsRecord::Data {
            level: 0,
            offset: 0,
            ack: [0, 0],
            bytes: b"client hello",
        }
        .encode(&mut record);
        let packet = record_packet(record.clone(), 1200);
        assert_eq!(packet.content.len(), 1200);
        assert_eq!(packet.padding_size as usize, 1200 - record.len());
        assert_eq!(packet.flags, TLS_HANDSHAKE);
        assert_eq!(packet_record(&packet), Ok(&record[..]));
        // No padding asked: none added.
        let packet = record_packet(record.clone(), 0);
        assert_eq!(packet.padding_size, 0);
        assert_eq!(packet_record(&packet), Ok(&record[..]));
        let mut alert = Vec::new();
        TlsRecord::Alert {
            refusal: TlsRefusal::Timeout,
            alert: 0,
        }
        .encode(&mut alert);
        assert_eq!(
            TlsRecord::decode(packet_record(&record_packet(alert, 64)).expect("valid")),
            Ok(TlsRecord::Alert {
                refusal: TlsRefusal::Timeout,
                alert: 0
            })
        );
    }

    #[test]
    fn packets_breaking_the_rules_are_refused() {
        let good = record_packet(vec![2, 8, 0], 0);
        let sealed = PacketData {
            flags: TLS_HANDSHAKE | atbus_proto::packet_flags::ENCRYPTED,
            ..good.clone()
        };
        assert!(matches!(
            packet_record(&sealed),
            Err(TlsPacketError::Flags(_))
        ));
        let plain = PacketData {
            flags: 0,
            ..good.clone()
        };
        assert_eq!(packet_record(&plain), Err(TlsPacketError::Flags(0)));
        let on_stream = PacketData {
            stream_id: 3,
            ..good.clone()
        };
        assert!(matches!(
            packet_record(&on_stream),
            Err(TlsPacketError::Stream { .. })
        ));
        for padding in [-1, 4] {
            let bad = PacketData {
                padding_size: padding,
                ..good.clone()
            };
            assert!(matches!(
                packet_record(&bad),
                Err(TlsPacketError::Padding { .. })
            ));
        }
        let huge = record_packet(vec![0; MAX_TLS_PACKET_CONTENT + 1], 0);
        assert_eq!(
            packet_record(&huge),
            Err(TlsPacketError::TooLarge(MAX_TLS_PACKET_CONTENT + 1))
        );
    }
}
