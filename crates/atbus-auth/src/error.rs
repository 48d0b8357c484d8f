//! Typed errors of this crate: one variant per reason, so a node can log, count and answer each
//! differently.

use thiserror::Error;

/// Why a token was refused (at decoding, verification or issue).
///
/// The variants are checked in this order: size, text form, version, layout and fields, key id,
/// MAC, then (only for a token whose MAC verified) audience, lifetime, validity period and
/// revocation. An
/// attacker therefore learns nothing about claims before proving knowledge of a key.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token is larger than the hard cap; it was not parsed.
    #[error("token is {len} bytes, the limit is {max}")]
    Oversized {
        /// Length seen (bytes of the binary form, or characters of the text form).
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The token ends inside `field`.
    #[error("token is truncated inside {field}")]
    Truncated {
        /// The field being read when the bytes ran out.
        field: &'static str,
    },
    /// The token's format version is not one this build reads.
    #[error("token format version {0} is not supported (this build reads version 1)")]
    UnsupportedVersion(u8),
    /// A field is present but its value is not allowed.
    #[error("token field {field} is malformed: {reason}")]
    Malformed {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No key of the key ring has the token's key id.
    #[error("token is signed with unknown key id {0:?}")]
    UnknownKeyId(String),
    /// The MAC does not verify: the token was altered or signed with another secret.
    #[error("token MAC does not verify (altered, or signed with another secret)")]
    Tampered,
    /// The token was issued for another namespace (audience).
    #[error("token is for namespace {actual:?}, this verifier serves {expected:?}")]
    WrongAudience {
        /// The namespace the verifier serves.
        expected: String,
        /// The namespace the token names.
        actual: String,
    },
    /// The token's lifetime is longer than the verifier allows.
    #[error("token lifetime is {lifetime} s, the verifier allows at most {max} s")]
    LifetimeTooLong {
        /// `expires_at - issued_at`.
        lifetime: u64,
        /// The policy's maximum.
        max: u64,
    },
    /// The token's expiry (plus the allowed clock skew) has passed.
    #[error("token expired at {expires_at} (now {now}, skew allowance {skew} s)")]
    Expired {
        /// Expiry, Unix seconds.
        expires_at: u64,
        /// The verifier's Unix time.
        now: u64,
        /// Clock-skew allowance applied, seconds.
        skew: u64,
    },
    /// The token's issue time (minus the allowed clock skew) is still in the future.
    #[error("token is not valid before {issued_at} (now {now}, skew allowance {skew} s)")]
    NotYetValid {
        /// Issue time, Unix seconds.
        issued_at: u64,
        /// The verifier's Unix time.
        now: u64,
        /// Clock-skew allowance applied, seconds.
        skew: u64,
    },
    /// The token was revoked (by key id and nonce) before its expiry.
    #[error("token was revoked")]
    Revoked,
}

/// Why a key or key ring operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key id is empty, longer than 64 bytes or has a character outside `[A-Za-z0-9._:-]`.
    #[error("key id {0:?} must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', ':', '-'")]
    BadKeyId(String),
    /// The secret is shorter than the minimum.
    #[error("secret of key id {key_id:?} is {len} bytes, at least {min} are required")]
    SecretTooShort {
        /// The key id.
        key_id: String,
        /// Length given.
        len: usize,
        /// Minimum length.
        min: usize,
    },
    /// The key ring already holds a key with this id.
    #[error("key id {0:?} is already in the key ring")]
    DuplicateKeyId(String),
    /// The key ring holds its maximum number of keys.
    #[error("the key ring holds {0} keys, its maximum")]
    TooManyKeys(usize),
    /// No key with this id is in the key ring.
    #[error("key id {0:?} is not in the key ring")]
    UnknownKeyId(String),
    /// The key ring already remembers its maximum of revoked tokens.
    #[error("the key ring already holds {0} revoked tokens; remove the signing key instead")]
    TooManyRevocations(usize),
    /// The key ring has no key to issue tokens with.
    #[error("the key ring has no issuing key")]
    NoIssuingKey,
}

/// A frame or request that a verified token does not permit.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Violation {
    /// The peer uses a name other than the one its token binds.
    #[error("token is bound to name {bound:?}, the peer uses {used:?}")]
    NameMismatch {
        /// The token's name.
        bound: String,
        /// The name the peer used.
        used: String,
    },
    /// The stream id is outside the token's allowed streams.
    #[error("stream id {0} is not allowed by the token")]
    StreamNotAllowed(i64),
}

/// Why a 0-RTT proof was refused before the anti-replay check.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EarlyProofError {
    /// The encoded proof is shorter than its fixed size.
    #[error("0-RTT proof is {len} bytes, it must be {expected}")]
    Truncated {
        /// Length given.
        len: usize,
        /// The fixed size.
        expected: usize,
    },
    /// The encoded proof is longer than its fixed size.
    #[error("0-RTT proof is {len} bytes, it must be {expected}")]
    Oversized {
        /// Length given.
        len: usize,
        /// The fixed size.
        expected: usize,
    },
    /// The timestamp does not fit a signed 64-bit millisecond count.
    #[error("0-RTT proof timestamp {0} is out of range")]
    BadTimestamp(u64),
    /// The MAC does not verify.
    #[error("0-RTT proof MAC does not verify")]
    BadMac,
}

/// Why packet content could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProtectError {
    /// A direction secret is not 32 bytes.
    #[error("content protection secret is {0} bytes, it must be 32")]
    BadSecretLength(usize),
    /// The packet's flags lack `ENCRYPTED` (sealed content must say so, and only it is opened).
    #[error("packet flags lack ENCRYPTED")]
    NotFlaggedEncrypted,
    /// The sealed content is shorter than the key phase byte and the tag.
    #[error("sealed content is {len} bytes, at least {min} are required")]
    Truncated {
        /// Length given.
        len: usize,
        /// Key phase byte plus tag.
        min: usize,
    },
    /// The plaintext is larger than the cap.
    #[error("content is {len} bytes, the limit is {max}")]
    TooLarge {
        /// Length given.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The path id does not fit the nonce (negative or above 2^32 - 1).
    #[error("path id {0} is outside 0..=4294967295")]
    PathIdOutOfRange(i64),
    /// The packet number is negative.
    #[error("packet number {0} is negative")]
    NegativePacketNumber(i64),
    /// The packet number is above 2^62 - 1: the path's numbers are used up, open a new path.
    #[error("packet number {0} is above 2^62 - 1: the path must be replaced")]
    PacketNumberExhausted(i64),
    /// The send key sealed its maximum of packets: update the key before sealing more.
    #[error("the send key sealed {sealed} packets, its limit: a key update is needed")]
    KeyUpdateNeeded {
        /// Packets sealed under the key.
        sealed: u64,
    },
    /// The receive key saw its maximum of forgeries: the session must close.
    #[error("{failed} packets failed to open under this key, its limit: close the session")]
    IntegrityLimitReached {
        /// Failed opens under the key.
        failed: u64,
    },
    /// The packet was sealed under another key phase.
    #[error("packet key phase is {got}, the receive key is at phase {expected}")]
    KeyPhaseMismatch {
        /// The receive key's phase.
        expected: u8,
        /// The packet's phase byte.
        got: u8,
    },
    /// The tag does not verify: content or header was altered, or another key sealed it.
    #[error("content tag does not verify (altered, or sealed with another key)")]
    BadTag,
}

/// Why compressed content could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CompressError {
    /// The content is shorter than the declared-size prefix.
    #[error("compressed content is {len} bytes, shorter than its 4-byte size prefix")]
    Truncated {
        /// Length given.
        len: usize,
    },
    /// The declared size is above the cap (a decompression bomb, or a peer with other limits).
    #[error("compressed content declares {declared} bytes, the limit is {max}")]
    TooLarge {
        /// Declared decompressed size.
        declared: usize,
        /// The cap.
        max: usize,
    },
    /// The declared size is more than the compressed bytes can expand to.
    #[error("{compressed} compressed bytes cannot expand to the declared {declared}")]
    ImpossibleSize {
        /// Declared decompressed size.
        declared: usize,
        /// Length of the LZ4 block.
        compressed: usize,
    },
    /// The LZ4 block decoded to another size than declared.
    #[error("compressed content declares {declared} bytes but decodes to {actual}")]
    SizeMismatch {
        /// Declared decompressed size.
        declared: usize,
        /// Decoded size.
        actual: usize,
    },
    /// The LZ4 block is malformed.
    #[error("compressed content is malformed")]
    Corrupt,
}

/// Why the content pipeline refused a packet.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ContentError {
    /// Sealing or opening failed.
    #[error(transparent)]
    Protect(#[from] ProtectError),
    /// Decompression failed.
    #[error(transparent)]
    Compress(#[from] CompressError),
    /// The session is encrypted but the packet is not flagged `ENCRYPTED`.
    #[error("the session is encrypted, the packet is not")]
    NotEncrypted,
    /// The packet is flagged `ENCRYPTED` but the session has no keys.
    #[error("the packet is flagged ENCRYPTED, the session has no keys")]
    EncryptionNotNegotiated,
    /// The packet is flagged `COMPRESSED` but the session did not negotiate compression.
    #[error("the packet is flagged COMPRESSED, the session did not negotiate compression")]
    CompressionNotNegotiated,
    /// Opened content marked padded does not end in a valid padding trailer.
    #[error("padded content has a malformed padding trailer")]
    BadPadding,
}
