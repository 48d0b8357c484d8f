//! The token format: claims, the canonical binary encoding, and the `atbus1.` text form.
//!
//! Binary form, version 1 (integers big-endian; see `docs/security.md` for the same table):
//!
//! | bytes | field |
//! | --- | --- |
//! | 1 | format version, `0x01` |
//! | 1 + k | key id length `k` (1–64), key id (`A-Z a-z 0-9 . _ : -`) |
//! | 1 + n | namespace length `n` (0–63), namespace (`a-z`, `0-9`, `-`) |
//! | 1 + m | name length `m` (1–253), node name (`a-z`, `0-9`, `-`, `.`) |
//! | 8 | issued-at, Unix seconds |
//! | 8 | expires-at, Unix seconds, greater than issued-at |
//! | 16 | nonce |
//! | 1 + 16·r | range count `r` (0–32), then `r` × (first u64, last u64): sorted, disjoint, non-adjacent, each id ≤ `i64::MAX` |
//! | 32 | tag: `HMAC-SHA256(secret, u32(14) ‖ "atbus-token-v1" ‖ every byte above)` |
//!
//! Every field has exactly one valid encoding and nothing may follow the tag, so a token that
//! decodes re-encodes to the same bytes.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::TokenError;
use crate::streams::{MAX_STREAM_RANGES, StreamSet};

/// The token format version this build writes and reads.
pub const TOKEN_VERSION: u8 = 1;
/// Domain label of version 1 token tags.
pub const TOKEN_LABEL: &[u8] = b"atbus-token-v1";
/// Prefix of the text form of version 1 tokens.
pub const TEXT_PREFIX: &str = "atbus1.";
/// Length of a token nonce.
pub const TOKEN_NONCE_LEN: usize = 16;
/// Length of a token tag (HMAC-SHA256).
pub const TAG_LEN: usize = 32;
/// Longest key id.
pub const MAX_KEY_ID_LEN: usize = 64;
/// Longest namespace (a DNS-1123 label).
pub const MAX_NAMESPACE_LEN: usize = 63;
/// Longest node name (a DNS-1123 subdomain).
pub const MAX_NAME_LEN: usize = 253;
/// Hard cap of the binary form; larger input is refused before parsing.
pub const MAX_TOKEN_LEN: usize = 1024;
/// Hard cap of the text form (prefix plus base64 of [`MAX_TOKEN_LEN`] bytes).
pub const MAX_TEXT_LEN: usize = TEXT_PREFIX.len() + MAX_TOKEN_LEN.div_ceil(3) * 4;

/// What a token asserts about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// The node name the holder must use (`message_head.source`, hello `node_name`).
    pub name: String,
    /// The namespace (audience) the token is valid in; empty is the default namespace.
    pub namespace: String,
    /// Stream ids the holder may send on.
    pub streams: StreamSet,
    /// Issue time, Unix seconds.
    pub issued_at: u64,
    /// Expiry, Unix seconds: the token is invalid from this second on (plus skew allowance).
    pub expires_at: u64,
    /// Issuer-chosen nonce that makes each token unique (and names it in revocation lists).
    pub nonce: [u8; TOKEN_NONCE_LEN],
}

/// A token that decoded but whose tag has not been checked. Nothing in it is trustworthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnverifiedToken {
    /// Format version.
    pub version: u8,
    /// Key id the token claims to be signed with.
    pub key_id: String,
    /// The claims, unverified.
    pub claims: TokenClaims,
    /// The tag.
    pub tag: [u8; TAG_LEN],
    /// Length of the signed part (everything before the tag).
    pub signed_len: usize,
}

fn check_key_id(key_id: &str) -> Result<(), &'static str> {
    if key_id.is_empty() || key_id.len() > MAX_KEY_ID_LEN {
        return Err("must be 1 to 64 bytes");
    }
    // The characters discovery records allow for key ids, so every key id can be published.
    if !key_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return Err("only A-Z, a-z, 0-9, '.', '_', ':' and '-' are allowed");
    }
    Ok(())
}

/// Checks a key id: 1–64 characters of `[A-Za-z0-9._:-]`.
pub(crate) fn valid_key_id(key_id: &str) -> bool {
    check_key_id(key_id).is_ok()
}

fn check_namespace(ns: &str) -> Result<(), &'static str> {
    if ns.len() > MAX_NAMESPACE_LEN {
        return Err("longer than 63 bytes");
    }
    if !ns
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("only a-z, 0-9 and '-' are allowed");
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err("must be 1 to 253 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Err("only a-z, 0-9, '-' and '.' are allowed");
    }
    Ok(())
}

fn malformed(field: &'static str) -> impl Fn(&'static str) -> TokenError {
    move |reason| TokenError::Malformed { field, reason }
}

/// Checks the claims and key id an issuer is about to sign.
pub(crate) fn check_claims(key_id: &str, c: &TokenClaims) -> Result<(), TokenError> {
    check_key_id(key_id).map_err(malformed("key id"))?;
    check_namespace(&c.namespace).map_err(malformed("namespace"))?;
    check_name(&c.name).map_err(malformed("name"))?;
    if c.expires_at <= c.issued_at {
        return Err(TokenError::Malformed {
            field: "expires-at",
            reason: "must be later than issued-at",
        });
    }
    Ok(())
}

/// Writes the signed part of a token (everything but the tag). Claims must have been checked.
pub(crate) fn encode_signed(key_id: &str, c: &TokenClaims, out: &mut Vec<u8>) {
    out.push(TOKEN_VERSION);
    // Lengths were checked by `check_claims`: all fit one byte.
    for field in [key_id.as_bytes(), c.namespace.as_bytes(), c.name.as_bytes()] {
        out.push(field.len() as u8);
        out.extend_from_slice(field);
    }
    out.extend_from_slice(&c.issued_at.to_be_bytes());
    out.extend_from_slice(&c.expires_at.to_be_bytes());
    out.extend_from_slice(&c.nonce);
    out.push(c.streams.ranges().len() as u8);
    for (first, last) in c.streams.ranges() {
        out.extend_from_slice(&first.to_be_bytes());
        out.extend_from_slice(&last.to_be_bytes());
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], TokenError> {
        if self.bytes.len() < n {
            return Err(TokenError::Truncated { field });
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, TokenError> {
        Ok(self.take(1, field)?[0])
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, TokenError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8, field)?);
        Ok(u64::from_be_bytes(b))
    }

    fn str(
        &mut self,
        field: &'static str,
        check: fn(&str) -> Result<(), &'static str>,
    ) -> Result<String, TokenError> {
        let len = usize::from(self.u8(field)?);
        let raw = self.take(len, field)?;
        let s = std::str::from_utf8(raw).map_err(|_| TokenError::Malformed {
            field,
            reason: "not UTF-8",
        })?;
        check(s).map_err(malformed(field))?;
        Ok(s.to_owned())
    }
}

/// Decodes the binary form without checking the tag. Refuses oversized, truncated, malformed
/// and unsupported-version input, and any byte after the tag.
pub fn decode(bytes: &[u8]) -> Result<UnverifiedToken, TokenError> {
    if bytes.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Oversized {
            len: bytes.len(),
            max: MAX_TOKEN_LEN,
        });
    }
    let mut r = Reader { bytes };
    let version = r.u8("version")?;
    if version != TOKEN_VERSION {
        return Err(TokenError::UnsupportedVersion(version));
    }
    let key_id = r.str("key id", check_key_id)?;
    let namespace = r.str("namespace", check_namespace)?;
    let name = r.str("name", check_name)?;
    let issued_at = r.u64("issued-at")?;
    let expires_at = r.u64("expires-at")?;
    if expires_at <= issued_at {
        return Err(TokenError::Malformed {
            field: "expires-at",
            reason: "must be later than issued-at",
        });
    }
    let mut nonce = [0u8; TOKEN_NONCE_LEN];
    nonce.copy_from_slice(r.take(TOKEN_NONCE_LEN, "nonce")?);
    let count = usize::from(r.u8("stream ranges")?);
    if count > MAX_STREAM_RANGES {
        return Err(TokenError::Malformed {
            field: "stream ranges",
            reason: "more than 32 ranges",
        });
    }
    let mut ranges = Vec::with_capacity(count);
    for _ in 0..count {
        let first = r.u64("stream ranges")?;
        let last = r.u64("stream ranges")?;
        ranges.push((first, last));
    }
    let streams = StreamSet::from_canonical(ranges).map_err(malformed("stream ranges"))?;
    let signed_len = bytes.len() - r.bytes.len();
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(r.take(TAG_LEN, "tag")?);
    if !r.bytes.is_empty() {
        return Err(TokenError::Malformed {
            field: "tag",
            reason: "bytes follow the tag",
        });
    }
    Ok(UnverifiedToken {
        version,
        key_id,
        claims: TokenClaims {
            name,
            namespace,
            streams,
            issued_at,
            expires_at,
            nonce,
        },
        tag,
        signed_len,
    })
}

/// The text form of a binary token: `atbus1.` followed by unpadded base64url.
pub fn to_text(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(TEXT_PREFIX.len() + bytes.len().div_ceil(3) * 4);
    s.push_str(TEXT_PREFIX);
    URL_SAFE_NO_PAD.encode_string(bytes, &mut s);
    s
}

/// The binary form of a text token. Refuses text over [`MAX_TEXT_LEN`], another version prefix
/// (`atbusN.`, as [`TokenError::UnsupportedVersion`]), a missing prefix and non-canonical or
/// invalid base64url. Surrounding whitespace is ignored.
pub fn from_text(text: &str) -> Result<Vec<u8>, TokenError> {
    let text = text.trim();
    if text.len() > MAX_TEXT_LEN {
        return Err(TokenError::Oversized {
            len: text.len(),
            max: MAX_TEXT_LEN,
        });
    }
    let Some(body) = text.strip_prefix(TEXT_PREFIX) else {
        if let Some((head, _)) = text.split_once('.') {
            if let Some(v) = head.strip_prefix("atbus") {
                if let Ok(v) = v.parse::<u8>() {
                    return Err(TokenError::UnsupportedVersion(v));
                }
            }
        }
        return Err(TokenError::Malformed {
            field: "text",
            reason: "does not start with `atbus1.`",
        });
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| TokenError::Malformed {
            field: "text",
            reason: "not canonical unpadded base64url",
        })?;
    if bytes.first().is_some_and(|&v| v != TOKEN_VERSION) {
        // The prefix says version 1; the bytes must agree.
        return Err(TokenError::Malformed {
            field: "version",
            reason: "differs from the text prefix",
        });
    }
    Ok(bytes)
}
