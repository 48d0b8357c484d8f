//! libatbus-rs layer 1: the security pieces of the node that need no I/O, no clock and no
//! randomness — signed access tokens, the key ring that verifies them, the 0-RTT first-flight
//! proof with its anti-replay guard, and the transforms of packet content (compression, AEAD).
//! Time, nonces and packet numbers are always arguments.
//!
//! - [`TokenKey`] / [`TokenKeyring`]: HMAC-SHA256 signed tokens binding a node name, allowed
//!   stream ids, a namespace (audience), issue and expiry times and a nonce; several keys by key
//!   id for rotation; constant-time verification with a distinct [`TokenError`] per defect.
//! - [`VerifiedToken::check_name`] / [`VerifiedToken::check_stream`]: the checks a node applies
//!   to every frame of a token-authenticated link.
//! - [`EarlyProof`] and [`AntiReplay`]: the client's 0-RTT proof and the server's freshness
//!   window, nonce cache and warm-up; every refusal is a typed [`EarlyOutcome`] so the node falls
//!   back to 1-RTT.
//! - [`PacketProtection`], [`CompressionConfig`] and [`ContentCodec`]: the transforms of
//!   `packet_data.content` — LZ4 compression with a decompressed-size cap, then AEAD sealing
//!   (ChaCha20-Poly1305 or AES-256-GCM) with per-direction HKDF keys, a nonce made of the path
//!   id and packet number, and the immutable header fields as associated data.
//!
//! The formats are specified byte by byte in `docs/security.md`.
//!
//! ```
//! use atbus_auth::{
//!     AntiReplay, AntiReplayConfig, EarlyContext, EarlyOutcome, EarlyProof, StreamSet,
//!     TokenClaims, TokenError, TokenKey, TokenKeyring,
//! };
//!
//! // Issuer and server share a key ring (here with one key).
//! let mut ring = TokenKeyring::new();
//! ring.insert(TokenKey::new("2026-11", b"a 32-byte random secret........".to_vec())?)?;
//! let now = 1_800_000_000; // Unix seconds, supplied by the caller
//! let issued = ring.issue(&TokenClaims {
//!     name: "player-17".into(),
//!     namespace: "game".into(),
//!     streams: StreamSet::parse("1-8")?,
//!     issued_at: now,
//!     expires_at: now + 3600,
//!     nonce: [7; 16], // from the issuer's CSPRNG
//! })?;
//! let text = issued.to_text(); // "atbus1.…", handed to the client with the holder secret
//!
//! // The server verifies it, then enforces it on every frame.
//! let token = ring.verify_text(&text, "game", now + 10)?;
//! token.check_name("player-17")?;
//! assert!(token.check_stream(9).is_err());
//! assert!(matches!(
//!     ring.verify_text(&text, "game", now + 7200),
//!     Err(TokenError::Expired { .. })
//! ));
//!
//! // 0-RTT: the client proves the holder secret in its first flight...
//! let ctx = EarlyContext {
//!     key_id: "2026-11",
//!     client_name: "player-17",
//!     namespace: "game",
//!     server_name: "lobby-1",
//!     first_flight: b"encoded hello and early data",
//! };
//! let now_ms = (now + 60) * 1000;
//! let proof = EarlyProof::sign(&issued.holder_secret.0, &ctx, now_ms, [9; 32])?;
//! // ...the server's guard (started a minute earlier) checks the proof, then freshness.
//! let mut guard = AntiReplay::new(AntiReplayConfig::default(), now * 1000);
//! let secret = &token.holder_secret.0;
//! assert_eq!(guard.admit(now_ms, &proof, secret, &ctx)?, EarlyOutcome::Accepted);
//! assert_eq!(guard.admit(now_ms + 5, &proof, secret, &ctx)?, EarlyOutcome::Replayed);
//!
//! // Content protection: each end seals with its direction's key and opens the peer's.
//! use atbus_auth::{CipherSuite, ContentCodec, ContentHeader, PacketProtection, Side};
//! let (c2s, s2c) = ([1u8; 32], [2u8; 32]); // from the handshake's session keys
//! let suite = CipherSuite::ChaCha20Poly1305;
//! let mut client = ContentCodec::new(
//!     Some(PacketProtection::new(suite, Side::Client, &c2s, &s2c)?),
//!     None,
//! );
//! let mut server = ContentCodec::new(
//!     Some(PacketProtection::new(suite, Side::Server, &c2s, &s2c)?),
//!     None,
//! );
//! let mut header = ContentHeader {
//!     source: "player-17",
//!     destination: "lobby-1",
//!     stream_id: 1,
//!     packet_number: 0, // the path's next packet number, never reused
//!     ..ContentHeader::default()
//! };
//! let mut wire = Vec::new();
//! client.encode(&mut header, b"encoded packet_content", &mut wire)?; // sets ENCRYPTED
//! let mut content = Vec::new();
//! server.decode(&header, &wire, &mut content)?;
//! assert_eq!(content, b"encoded packet_content");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod compress;
mod content;
mod early;
mod error;
mod keyring;
pub mod protect;
mod replay;
mod streams;
pub mod tls;
pub mod token;

#[doc(hidden)]
pub mod fuzz;

pub use compress::{
    CompressionConfig, DEFAULT_COMPRESS_THRESHOLD, DEFAULT_MAX_DECOMPRESSED, SIZE_PREFIX_LEN,
};
pub use content::{ContentCodec, MAX_PAD_OVERHEAD, PAD_BLOCK, PAD_TRAILER_LEN, PADDED};
pub use early::{EARLY_NONCE_LEN, EARLY_PROOF_LABEL, EARLY_PROOF_LEN, EarlyContext, EarlyProof};
pub use error::{
    CompressError, ContentError, EarlyProofError, KeyError, ProtectError, TokenError, Violation,
};
pub use fuzz::{fuzz_auth_open, fuzz_auth_token};
pub use keyring::{
    DEFAULT_CLOCK_SKEW_SECS, HOLDER_SECRET_LABEL, HOLDER_SECRET_LEN, IssueError, IssuedToken,
    MAX_KEYS, MAX_REVOKED, MIN_SECRET_LEN, Secret, TokenKey, TokenKeyring, VerifiedToken,
    VerifyPolicy,
};
pub use protect::{
    CipherSuite, ContentHeader, NonceSpace, PacketProtection, ProtectionLimits, SEAL_OVERHEAD, Side,
};
pub use replay::{
    AntiReplay, AntiReplayConfig, AntiReplayStats, DEFAULT_MAX_ENTRIES, DEFAULT_WINDOW_MS,
    EarlyOutcome,
};
pub use streams::{MAX_STREAM_ID, MAX_STREAM_RANGES, StreamSet, StreamSetError};
pub use token::{TokenClaims, UnverifiedToken};
