//! Content compression: LZ4 block format with a declared size, a skip threshold and a hard cap
//! on the decompressed size.
//!
//! Layout of compressed content (specified in `docs/security.md`, section 8.2):
//!
//! ```text
//! decompressed length (u32, big-endian) | LZ4 block
//! ```
//!
//! Compression runs before sealing and is flagged per packet (`COMPRESSED`). Content shorter
//! than the threshold, or that does not shrink, is sent as it is and not flagged.
//!
//! **Compression oracle.** When attacker-chosen bytes are compressed together with secrets in
//! one packet, the length of the sealed packet tells the attacker whether a guess matched
//! (CRIME, BREACH). Sessions therefore negotiate compression explicitly, and it stays off by
//! default on encrypted sessions that carry attacker-influenced input.

use crate::error::CompressError;

/// Length of the declared-size prefix.
pub const SIZE_PREFIX_LEN: usize = 4;
/// Default: content shorter than this is never compressed.
pub const DEFAULT_COMPRESS_THRESHOLD: usize = 256;
/// Default cap on the decompressed size of one packet's content (4 MiB).
pub const DEFAULT_MAX_DECOMPRESSED: usize = 4 << 20;
/// Most bytes one LZ4 block byte can expand to (a match length byte adds 255), plus slack for
/// the shortest sequences; a declared size above `compressed * ratio + slack` is impossible.
const MAX_EXPANSION_RATIO: usize = 255;
const EXPANSION_SLACK: usize = 64;

/// Compression settings agreed by both ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressionConfig {
    /// Content shorter than this is sent uncompressed.
    pub threshold: usize,
    /// Largest decompressed content accepted (the defence against decompression bombs).
    pub max_decompressed: usize,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            threshold: DEFAULT_COMPRESS_THRESHOLD,
            max_decompressed: DEFAULT_MAX_DECOMPRESSED,
        }
    }
}

impl CompressionConfig {
    /// Compresses `input` and appends the result to `out` if that is worth it: returns `true`
    /// when it appended compressed content (the packet gets the `COMPRESSED` flag), `false`
    /// when `input` is below the threshold, above the cap, or does not shrink (nothing is
    /// appended; send `input` as it is).
    pub fn compress(&self, input: &[u8], out: &mut Vec<u8>) -> bool {
        if input.len() < self.threshold
            || input.len() > self.max_decompressed
            || u32::try_from(input.len()).is_err()
        {
            return false;
        }
        let start = out.len();
        let room = lz4_flex::block::get_maximum_output_size(input.len());
        out.resize(start + SIZE_PREFIX_LEN + room, 0);
        let written = lz4_flex::block::compress_into(input, &mut out[start + SIZE_PREFIX_LEN..]);
        match written {
            Ok(n) if SIZE_PREFIX_LEN + n < input.len() => {
                out[start..start + SIZE_PREFIX_LEN]
                    .copy_from_slice(&(input.len() as u32).to_be_bytes());
                out.truncate(start + SIZE_PREFIX_LEN + n);
                true
            }
            _ => {
                out.truncate(start);
                false
            }
        }
    }

    /// Decompresses content produced by [`CompressionConfig::compress`] and appends it to
    /// `out`. Returns the decompressed length. The declared size is checked against the cap
    /// and against what the compressed bytes could possibly expand to before any buffer is
    /// grown. On any error `out` is left as it was.
    pub fn decompress(&self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, CompressError> {
        let Some((prefix, block)) = input.split_first_chunk::<SIZE_PREFIX_LEN>() else {
            return Err(CompressError::Truncated { len: input.len() });
        };
        let declared = u32::from_be_bytes(*prefix) as usize;
        if declared > self.max_decompressed {
            return Err(CompressError::TooLarge {
                declared,
                max: self.max_decompressed,
            });
        }
        let possible = block
            .len()
            .saturating_mul(MAX_EXPANSION_RATIO)
            .saturating_add(EXPANSION_SLACK);
        if declared > possible {
            return Err(CompressError::ImpossibleSize {
                declared,
                compressed: block.len(),
            });
        }
        let start = out.len();
        out.resize(start + declared, 0);
        match lz4_flex::block::decompress_into(block, &mut out[start..]) {
            Ok(n) if n == declared => Ok(n),
            Ok(n) => {
                out.truncate(start);
                Err(CompressError::SizeMismatch {
                    declared,
                    actual: n,
                })
            }
            Err(_) => {
                out.truncate(start);
                Err(CompressError::Corrupt)
            }
        }
    }
}
