//! What a session sent and the peer has not acknowledged: reported to the application when the
//! session is dropped (peer restarted, reconnect timed out), so nothing is lost silently.

use bytes::Bytes;

use super::Session;
use crate::reassembly::MessageMeta;

/// A message queued with `Session::send` whose bytes the peer has not all acknowledged.
#[derive(Debug, Clone, PartialEq)]
pub struct UnacknowledgedMessage {
    /// Stream it was sent on.
    pub stream_id: i64,
    /// Stream offset `send` returned for it.
    pub offset: u64,
    /// The payload.
    pub data: Bytes,
    /// Its metadata.
    pub meta: MessageMeta,
}

impl Session {
    /// Every message not yet wholly acknowledged (nor skipped), by stream id then offset.
    pub fn unacknowledged_messages(&self) -> impl Iterator<Item = UnacknowledgedMessage> + '_ {
        self.send_streams.iter().flat_map(|(&stream_id, s)| {
            s.unacknowledged().map(move |m| UnacknowledgedMessage {
                stream_id,
                offset: m.offset,
                data: m.data.clone(),
                meta: m.meta.clone(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use crate::{OutgoingMessage, PathConfig, PathKind, Session, SessionConfig};

    #[test]
    fn unsent_and_skipped_messages() {
        let now = Instant::now();
        let mut s = Session::new(SessionConfig::new("a", "b"), now);
        s.add_path(now, PathConfig::new(PathKind::ByteStream, 64 * 1024))
            .expect("path");
        s.send(1, OutgoingMessage::data(&b"one"[..])).expect("send");
        let second = s.send(1, OutgoingMessage::data(&b"two"[..])).expect("send");
        s.send(2, OutgoingMessage::data(&b"three"[..]))
            .expect("send");
        let mut buf = Vec::new();
        while s.poll_transmit(now, &mut buf).is_some() {}
        let all: Vec<_> = s.unacknowledged_messages().collect();
        assert_eq!(all.len(), 3, "sent but not acknowledged still counts");
        assert_eq!((all[1].stream_id, all[1].offset), (1, second));
        assert_eq!(&all[2].data[..], b"three");
        s.skip(1, second).expect("skip");
        let left: Vec<_> = s.unacknowledged_messages().map(|m| m.offset).collect();
        assert_eq!(left, vec![second, 0], "skipped messages are not reported");
    }
}
