//! The content pipeline of a session: compress (if negotiated and worth it), then seal (if the
//! session has keys); on receipt, open, then decompress, as the packet's flags say.

use atbus_proto::packet_flags::{COMPRESSED, ENCRYPTED};

use crate::compress::CompressionConfig;
use crate::error::ContentError;
use crate::protect::{ContentHeader, PacketProtection};

/// Padded content is a multiple of this many bytes before sealing (`docs/security.md` §8.9).
pub const PAD_BLOCK: usize = 64;
/// Length of the padding trailer (`u16_be(padding length)`).
pub const PAD_TRAILER_LEN: usize = 2;
/// Most bytes padding adds to a packet's content.
pub const MAX_PAD_OVERHEAD: usize = PAD_BLOCK - 1 + PAD_TRAILER_LEN;
/// `packet_data.padding_size` of a padded packet: the content carries a padding trailer
/// inside the ciphertext (the length itself is never in clear).
pub const PADDED: i32 = 1;

/// What a session applies to `packet_data.content`, and the scratch buffer it works in.
///
/// A session with protection refuses unsealed content (no downgrade by stripping the
/// `ENCRYPTED` flag); a session without compression refuses `COMPRESSED` content.
#[derive(Debug, Default)]
pub struct ContentCodec {
    protection: Option<PacketProtection>,
    compression: Option<CompressionConfig>,
    pad: bool,
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
            pad: false,
            scratch: Vec::new(),
        }
    }

    /// The same codec, padding sealed content to multiples of [`PAD_BLOCK`] bytes when `pad`
    /// (only sealed packets are padded: padding in clear would hide nothing).
    pub fn with_padding(mut self, pad: bool) -> Self {
        self.pad = pad;
        self
    }

    /// Whether sealed content is padded.
    pub fn pads(&self) -> bool {
        self.pad && self.protection.is_some()
    }

    /// Whether the codec seals (the session has keys).
    pub fn seals(&self) -> bool {
        self.protection.is_some()
    }

    /// The session's protection (phases and counters).
    pub fn protection(&self) -> Option<&PacketProtection> {
        self.protection.as_ref()
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
        header.padding_size = 0;
        self.scratch.clear();
        let compressed = self
            .compression
            .as_ref()
            .is_some_and(|c| c.compress(content, &mut self.scratch));
        if compressed {
            header.flags |= COMPRESSED;
        }
        let padded = self.pads();
        if padded {
            if !compressed {
                self.scratch.extend_from_slice(content);
            }
            let n = (PAD_BLOCK - (self.scratch.len() + PAD_TRAILER_LEN) % PAD_BLOCK) % PAD_BLOCK;
            self.scratch.resize(self.scratch.len() + n, 0);
            // n < PAD_BLOCK fits 16 bits.
            self.scratch.extend_from_slice(&(n as u16).to_be_bytes());
            header.padding_size = PADDED;
        }
        let body: &[u8] = if compressed || padded {
            &self.scratch
        } else {
            content
        };
        match &mut self.protection {
            Some(p) => {
                header.flags |= ENCRYPTED;
                if let Err(e) = p.seal(header, body, out) {
                    header.flags &= !(COMPRESSED | ENCRYPTED);
                    header.padding_size = 0;
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
                let padded = header.padding_size != 0;
                if compression.is_none() && !padded {
                    return Ok(p.open(header, wire, out)?);
                }
                self.scratch.clear();
                p.open(header, wire, &mut self.scratch)?;
                if padded {
                    unpad(&self.scratch)?
                } else {
                    &self.scratch
                }
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

/// The content inside a padded plaintext (`content ‖ zeros(n) ‖ u16_be(n)`).
fn unpad(padded: &[u8]) -> Result<&[u8], ContentError> {
    let Some((rest, trailer)) = padded.split_last_chunk::<PAD_TRAILER_LEN>() else {
        return Err(ContentError::BadPadding);
    };
    let n = u16::from_be_bytes(*trailer) as usize;
    if n >= PAD_BLOCK || n > rest.len() {
        return Err(ContentError::BadPadding);
    }
    let (content, zeros) = rest.split_at(rest.len() - n);
    if zeros.iter().any(|&b| b != 0) {
        return Err(ContentError::BadPadding);
    }
    Ok(content)
}

#[cfg(test)]
mod padding_tests {
    use super::*;
    use crate::protect::{CipherSuite, Side};

    fn pair(pad: bool, compress: bool) -> (ContentCodec, ContentCodec) {
        let suite = CipherSuite::Aes256Gcm;
        let make = |side| {
            ContentCodec::new(
                Some(PacketProtection::new(suite, side, &[1; 32], &[2; 32]).expect("keys")),
                compress.then(CompressionConfig::default),
            )
            .with_padding(pad)
        };
        (make(Side::Client), make(Side::Server))
    }

    #[test]
    fn padded_content_fills_whole_blocks_and_round_trips() {
        let (mut tx, mut rx) = pair(true, false);
        let mut lens = std::collections::BTreeSet::new();
        for len in 0..300usize {
            let content: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let mut header = ContentHeader {
                packet_number: len as i64,
                ..ContentHeader::default()
            };
            let mut wire = Vec::new();
            tx.encode(&mut header, &content, &mut wire).expect("seal");
            assert_eq!(header.padding_size, PADDED);
            let inner = wire.len() - crate::protect::SEAL_OVERHEAD;
            assert_eq!(inner % PAD_BLOCK, 0, "len {len}: {inner}");
            assert!(inner >= len + PAD_TRAILER_LEN && inner <= len + MAX_PAD_OVERHEAD);
            lens.insert(wire.len());
            let mut out = Vec::new();
            rx.decode(&header, &wire, &mut out).expect("open");
            assert_eq!(out, content, "len {len}");
            // The padding flag is bound to the tag: clearing it makes the packet not open.
            let mut stripped = header;
            stripped.padding_size = 0;
            assert!(rx.decode(&stripped, &wire, &mut Vec::new()).is_err());
        }
        // 300 lengths fall in 5 size classes.
        assert_eq!(lens.len(), 5);
    }

    #[test]
    fn padding_after_compression_round_trips() {
        let (mut tx, mut rx) = pair(true, true);
        let content = b"compressible line of text\n".repeat(40);
        let mut header = ContentHeader::default();
        let mut wire = Vec::new();
        tx.encode(&mut header, &content, &mut wire).expect("seal");
        assert_ne!(header.flags & COMPRESSED, 0);
        assert_eq!((wire.len() - crate::protect::SEAL_OVERHEAD) % PAD_BLOCK, 0);
        let mut out = Vec::new();
        rx.decode(&header, &wire, &mut out).expect("open");
        assert_eq!(out, content);
    }

    #[test]
    fn unpadded_codec_does_not_pad_and_plain_codec_never_pads() {
        let (mut tx, _) = pair(false, false);
        let mut header = ContentHeader::default();
        let mut wire = Vec::new();
        tx.encode(&mut header, b"abc", &mut wire).expect("seal");
        assert_eq!(header.padding_size, 0);
        assert_eq!(wire.len(), 3 + crate::protect::SEAL_OVERHEAD);
        let mut plain = ContentCodec::new(None, None).with_padding(true);
        assert!(!plain.pads());
        let mut out = Vec::new();
        plain.encode(&mut header, b"abc", &mut out).expect("plain");
        assert_eq!(out, b"abc");
        assert_eq!(header.padding_size, 0);
    }

    #[test]
    fn malformed_trailers_are_refused() {
        assert_eq!(unpad(&[]), Err(ContentError::BadPadding));
        assert_eq!(unpad(&[0]), Err(ContentError::BadPadding));
        assert_eq!(unpad(&[1, 0, 5]), Err(ContentError::BadPadding)); // 5 > 1 byte available
        assert_eq!(unpad(&[9, 1, 0, 1]), Err(ContentError::BadPadding)); // non-zero padding
        assert_eq!(unpad(&[0, 64]).err(), Some(ContentError::BadPadding)); // n >= block
        assert_eq!(unpad(&[7, 0, 0, 1]), Ok(&[7][..]));
        assert_eq!(unpad(&[7, 8, 0, 0]), Ok(&[7, 8][..]));
    }
}
