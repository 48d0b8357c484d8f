//! The content pipeline of a session: compress (if negotiated and worth it), then seal (if the
//! session has keys); on receipt, open, then decompress, as the packet's flags say.

use atbus_proto::packet_flags::{COMPRESSED, ENCRYPTED};

use crate::compress::CompressionConfig;
use crate::error::ContentError;
use crate::protect::{ContentHeader, PacketProtection};

/// What a session applies to `packet_data.content`, and the scratch buffer it works in.
///
/// A session with protection refuses unsealed content (no downgrade by stripping the
/// `ENCRYPTED` flag); a session without compression refuses `COMPRESSED` content.
#[derive(Debug, Default)]
pub struct ContentCodec {
    protection: Option<PacketProtection>,
    compression: Option<CompressionConfig>,
    scratch: Vec<u8>,
}

impl ContentCodec {
    /// A codec with the negotiated protection and compression (either may be absent).
    pub fn new(
        protection: Option<PacketProtection>,
        compression: Option<CompressionConfig>,
    ) -> Self {
        ContentCodec {
            protection,
            compression,
            scratch: Vec::new(),
        }
    }

    /// The session's protection, for key updates and counters.
    pub fn protection_mut(&mut self) -> Option<&mut PacketProtection> {
        self.protection.as_mut()
    }

    /// The negotiated compression.
    pub fn compression(&self) -> Option<&CompressionConfig> {
        self.compression.as_ref()
    }

    /// Transforms `content` for sending: sets (or clears) the `COMPRESSED` and `ENCRYPTED` bits
    /// of `header.flags` and appends the wire content to `out`. On error `out` is unchanged.
    pub fn encode(
        &mut self,
        header: &mut ContentHeader<'_>,
        content: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), ContentError> {
        header.flags &= !(COMPRESSED | ENCRYPTED);
        self.scratch.clear();
        let compressed = self
            .compression
            .as_ref()
            .is_some_and(|c| c.compress(content, &mut self.scratch));
        let body: &[u8] = if compressed {
            header.flags |= COMPRESSED;
            &self.scratch
        } else {
            content
        };
        match &mut self.protection {
            Some(p) => {
                header.flags |= ENCRYPTED;
                if let Err(e) = p.seal(header, body, out) {
                    header.flags &= !(COMPRESSED | ENCRYPTED);
                    return Err(e.into());
                }
            }
            None => out.extend_from_slice(body),
        }
        Ok(())
    }

    /// Reverses [`ContentCodec::encode`]: appends the original content of a received packet
    /// to `out`. On error `out` is unchanged.
    pub fn decode(
        &mut self,
        header: &ContentHeader<'_>,
        wire: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<usize, ContentError> {
        let compressed = header.flags & COMPRESSED != 0;
        let compression = match (compressed, &self.compression) {
            (true, None) => return Err(ContentError::CompressionNotNegotiated),
            (true, Some(c)) => Some(*c),
            (false, _) => None,
        };
        let encrypted = header.flags & ENCRYPTED != 0;
        let plain: &[u8] = match (&mut self.protection, encrypted) {
            (Some(_), false) => return Err(ContentError::NotEncrypted),
            (None, true) => return Err(ContentError::EncryptionNotNegotiated),
            (None, false) => wire,
            (Some(p), true) => {
                if compression.is_none() {
                    return Ok(p.open(header, wire, out)?);
                }
                self.scratch.clear();
                p.open(header, wire, &mut self.scratch)?;
                &self.scratch
            }
        };
        match compression {
            Some(c) => Ok(c.decompress(plain, out)?),
            None => {
                out.extend_from_slice(plain);
                Ok(plain.len())
            }
        }
    }
}
