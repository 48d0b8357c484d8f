//! Counters of the relay, for logs and a metrics endpoint.

use atbus_node::LinkId;

use crate::error::DropReason;

/// Relay-wide counters (monotonic).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayMetrics {
    /// Frames handed over by links (everything but link handshakes and closes).
    pub frames_received: u64,
    /// Frames written to an outgoing link.
    pub frames_forwarded: u64,
    /// Bytes of the packages written to outgoing links.
    pub bytes_forwarded: u64,
    /// `forward_error` frames queued back to sources.
    pub forward_errors_sent: u64,
    /// `forward_error` frames not sent because of the rate limit.
    pub forward_errors_suppressed: u64,
    drops: [u64; DropReason::ALL.len()],
}

impl RelayMetrics {
    /// Frames dropped for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    /// Frames dropped for any reason.
    pub fn drops_total(&self) -> u64 {
        self.drops.iter().sum()
    }

    pub(crate) fn count_drop(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }
}

/// Counters and queue depth of one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkMetrics {
    /// Link.
    pub link: LinkId,
    /// Authenticated peer name.
    pub peer: String,
    /// Whether the peer is a trusted relay.
    pub relay: bool,
    /// Frames received on the link.
    pub frames_in: u64,
    /// Frames written to the link.
    pub frames_out: u64,
    /// Bytes written to the link.
    pub bytes_out: u64,
    /// Frames queued for the link now.
    pub queued_frames: usize,
    /// Bytes queued for the link now.
    pub queued_bytes: usize,
    /// Frames dropped because this link's queue was full.
    pub dropped_queue_full: u64,
    /// Whether the driver reported the link blocked.
    pub blocked: bool,
}
