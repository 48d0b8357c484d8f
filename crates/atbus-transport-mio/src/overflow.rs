//! Bytes a link's socket refused, kept in order until it is writable again: the backpressure
//! rule shared by every driver that runs a core (node, relay) on a [`Transport`].
//!
//! A [`SendStatus::Blocked`] send accepted nothing, while the core already counts what it handed
//! out as sent. The driver keeps those bytes here, tells its core the link is blocked (once, on
//! the refusal) and sends nothing else on the link until [`TransportEvent::Writable`]; then
//! [`LinkOverflow::flush`] sends the kept bytes first, and the core hears the link is writable
//! only when they all went out.
//!
//! [`TransportEvent::Writable`]: crate::TransportEvent::Writable

use std::collections::VecDeque;

use crate::event::{LinkId, SendStatus};
use crate::transport::Transport;

/// What [`LinkOverflow::send`] did with a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverflowSend {
    /// The transport took it (sent, queued, or for UDP dropped), or the link is gone (its
    /// `LinkClosed` event tells the core).
    Passed,
    /// The transport refused it just now: it is kept, and the core must hear the link is blocked.
    Blocked,
    /// Earlier buffers are still kept: it was kept behind them, unsent.
    Queued,
}

/// One link's refused buffers, oldest first (see the module documentation).
#[derive(Debug, Default)]
pub struct LinkOverflow {
    kept: VecDeque<Vec<u8>>,
}

impl LinkOverflow {
    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// Bytes kept.
    pub fn len_bytes(&self) -> usize {
        self.kept.iter().map(Vec::len).sum()
    }

    /// Forgets what is kept (the link is closing).
    pub fn clear(&mut self) {
        self.kept.clear();
    }

    /// Sends `data` on `link` behind what is kept; keeps it when the transport refuses it.
    pub fn send(&mut self, transport: &mut Transport, link: LinkId, data: &[u8]) -> OverflowSend {
        self.send_segments(transport, link, &[data])
    }

    /// Sends the concatenation of `segments` on `link` behind what is kept
    /// ([`Transport::send_segments`]: no copy when the socket takes it); keeps a joined copy
    /// when the transport refuses it.
    pub fn send_segments(
        &mut self,
        transport: &mut Transport,
        link: LinkId,
        segments: &[&[u8]],
    ) -> OverflowSend {
        if !self.kept.is_empty() {
            self.kept.push_back(segments.concat());
            return OverflowSend::Queued;
        }
        match transport.send_segments(link, segments) {
            Ok(SendStatus::Blocked) => {
                self.kept.push_back(segments.concat());
                OverflowSend::Blocked
            }
            Ok(_) => OverflowSend::Passed,
            Err(err) => {
                tracing::debug!(%link, %err, "send failed");
                OverflowSend::Passed
            }
        }
    }

    /// Sends what is kept, oldest first, until the transport refuses one again; true when
    /// nothing is kept afterwards (the core may be told the link is writable).
    pub fn flush(&mut self, transport: &mut Transport, link: LinkId) -> bool {
        while let Some(front) = self.kept.front() {
            match transport.send(link, front) {
                Ok(SendStatus::Blocked) => return false,
                // Sent, queued, or dropped (UDP: the sessions retransmit); a dead link closes.
                Ok(_) | Err(_) => {
                    self.kept.pop_front();
                }
            }
        }
        true
    }
}
