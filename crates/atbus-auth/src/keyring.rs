//! Signing keys, the key ring that verifies tokens (several keys at once for rotation), and
//! the verified token with the checks a node applies to every frame.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{KeyError, TokenError, Violation};
use crate::token::{
    self, TAG_LEN, TOKEN_LABEL, TOKEN_NONCE_LEN, TokenClaims, UnverifiedToken, check_claims,
    encode_signed,
};

type HmacSha256 = Hmac<Sha256>;

/// Shortest signing secret accepted (the same floor as the node's access tokens).
pub const MIN_SECRET_LEN: usize = 16;
/// Most keys a key ring holds.
pub const MAX_KEYS: usize = 64;
/// Most revoked tokens a key ring remembers (until they expire).
pub const MAX_REVOKED: usize = 4096;
/// Default clock-skew allowance of [`VerifyPolicy`], seconds.
pub const DEFAULT_CLOCK_SKEW_SECS: u64 = 30;
/// Domain label of the holder secret derived from a token.
pub const HOLDER_SECRET_LABEL: &[u8] = b"atbus-token-v1 holder secret";
/// Length of a holder secret.
pub const HOLDER_SECRET_LEN: usize = 32;

/// HMAC-SHA256 keyed with `secret`, started with the length-prefixed domain `label`.
pub(crate) fn labelled_mac(secret: &[u8], label: &[u8]) -> HmacSha256 {
    let mut m = match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC accepts keys of any length: this arm is unreachable, whatever the input.
        Err(_) => unreachable!("HMAC-SHA256 refused a key"),
    };
    m.update(&(label.len() as u32).to_be_bytes());
    m.update(label);
    m
}

/// A token signing key: a public key id and a secret that never leaves the issuer and the
/// verifiers.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenKey {
    key_id: String,
    secret: Vec<u8>,
}

impl TokenKey {
    /// A key; `key_id` is 1–64 characters of `[A-Za-z0-9._:-]`, `secret` at least
    /// [`MIN_SECRET_LEN`] bytes (32 random bytes recommended).
    pub fn new(key_id: impl Into<String>, secret: impl Into<Vec<u8>>) -> Result<Self, KeyError> {
        let key_id = key_id.into();
        let secret = secret.into();
        if !token::valid_key_id(&key_id) {
            return Err(KeyError::BadKeyId(key_id));
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(KeyError::SecretTooShort {
                key_id,
                len: secret.len(),
                min: MIN_SECRET_LEN,
            });
        }
        Ok(Self { key_id, secret })
    }

    /// The key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    fn tag_mac(&self, signed: &[u8]) -> HmacSha256 {
        let mut m = labelled_mac(&self.secret, TOKEN_LABEL);
        m.update(signed);
        m
    }

    fn holder_secret(&self, tag: &[u8; TAG_LEN]) -> [u8; HOLDER_SECRET_LEN] {
        let mut m = labelled_mac(&self.secret, HOLDER_SECRET_LABEL);
        m.update(tag);
        m.finalize().into_bytes().into()
    }

    /// Signs `claims` with this key.
    pub fn issue(&self, claims: &TokenClaims) -> Result<IssuedToken, TokenError> {
        check_claims(&self.key_id, claims)?;
        let mut bytes = Vec::with_capacity(token::MAX_TOKEN_LEN);
        encode_signed(&self.key_id, claims, &mut bytes);
        let tag: [u8; TAG_LEN] = self.tag_mac(&bytes).finalize().into_bytes().into();
        bytes.extend_from_slice(&tag);
        Ok(IssuedToken {
            holder_secret: Secret(self.holder_secret(&tag)),
            bytes,
        })
    }
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("key_id", &self.key_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A 32-byte secret whose `Debug` form is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub [u8; HOLDER_SECRET_LEN]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A freshly signed token and the holder secret that goes with it.
///
/// The token is a bearer credential only together with the holder secret: the node proves
/// possession of the secret in the handshake (1-RTT or 0-RTT proofs), so a token seen on the
/// wire cannot be replayed by itself. Hand both to the client over a confidential channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The binary token.
    pub bytes: Vec<u8>,
    /// `HMAC(key secret, lp("atbus-token-v1 holder secret") ‖ tag)`.
    pub holder_secret: Secret,
}

impl IssuedToken {
    /// The text form (`atbus1.…`).
    pub fn to_text(&self) -> String {
        token::to_text(&self.bytes)
    }
}

/// How tokens are checked beyond their MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyPolicy {
    /// Seconds of clock difference tolerated at both ends of the validity period (default 30).
    pub clock_skew_secs: u64,
    /// Longest `expires_at - issued_at` accepted (default none).
    pub max_lifetime_secs: Option<u64>,
}

impl Default for VerifyPolicy {
    fn default() -> Self {
        Self {
            clock_skew_secs: DEFAULT_CLOCK_SKEW_SECS,
            max_lifetime_secs: None,
        }
    }
}

/// Keys by key id: every key verifies, one issues. Rotation: add the new key, make it the
/// issuing key, and remove the old one once the tokens it signed have expired.
#[derive(Debug, Clone, Default)]
pub struct TokenKeyring {
    keys: BTreeMap<String, TokenKey>,
    issuing: Option<String>,
    policy: VerifyPolicy,
    /// Revoked tokens by (key id, nonce), with their expiry.
    revoked: BTreeMap<(String, [u8; TOKEN_NONCE_LEN]), u64>,
}

impl TokenKeyring {
    /// An empty key ring with the default policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty key ring with `policy`.
    pub fn with_policy(policy: VerifyPolicy) -> Self {
        Self {
            policy,
            ..Self::default()
        }
    }

    /// The verification policy.
    pub fn policy(&self) -> &VerifyPolicy {
        &self.policy
    }

    /// Replaces the verification policy.
    pub fn set_policy(&mut self, policy: VerifyPolicy) {
        self.policy = policy;
    }

    /// Adds a key; the first key added becomes the issuing key.
    pub fn insert(&mut self, key: TokenKey) -> Result<(), KeyError> {
        if self.keys.contains_key(&key.key_id) {
            return Err(KeyError::DuplicateKeyId(key.key_id));
        }
        if self.keys.len() >= MAX_KEYS {
            return Err(KeyError::TooManyKeys(MAX_KEYS));
        }
        if self.issuing.is_none() {
            self.issuing = Some(key.key_id.clone());
        }
        self.keys.insert(key.key_id.clone(), key);
        Ok(())
    }

    /// Removes a key; tokens it signed no longer verify. Removing the issuing key leaves the
    /// ring without one until [`TokenKeyring::set_issuing`].
    pub fn remove(&mut self, key_id: &str) -> Result<TokenKey, KeyError> {
        let key = self
            .keys
            .remove(key_id)
            .ok_or_else(|| KeyError::UnknownKeyId(key_id.to_owned()))?;
        if self.issuing.as_deref() == Some(key_id) {
            self.issuing = None;
        }
        Ok(key)
    }

    /// Makes `key_id` the key new tokens are signed with.
    pub fn set_issuing(&mut self, key_id: &str) -> Result<(), KeyError> {
        if !self.keys.contains_key(key_id) {
            return Err(KeyError::UnknownKeyId(key_id.to_owned()));
        }
        self.issuing = Some(key_id.to_owned());
        Ok(())
    }

    /// The issuing key id, if any.
    pub fn issuing_key_id(&self) -> Option<&str> {
        self.issuing.as_deref()
    }

    /// Key ids in the ring, sorted.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Revokes one token, named by its key id and nonce, until its expiry (`expires_at`, Unix
    /// seconds) plus the clock-skew allowance; after that it is refused as expired anyway.
    /// Refuses when [`MAX_REVOKED`] tokens are already revoked and none can be forgotten at
    /// `now_unix`: remove the signing key instead, which revokes all its tokens.
    pub fn revoke(
        &mut self,
        key_id: &str,
        nonce: [u8; TOKEN_NONCE_LEN],
        expires_at: u64,
        now_unix: u64,
    ) -> Result<(), KeyError> {
        self.forget_expired_revocations(now_unix);
        let entry = (key_id.to_owned(), nonce);
        if !self.revoked.contains_key(&entry) && self.revoked.len() >= MAX_REVOKED {
            return Err(KeyError::TooManyRevocations(MAX_REVOKED));
        }
        self.revoked.insert(entry, expires_at);
        Ok(())
    }

    /// Drops revocations of tokens that are expired at `now_unix` (skew included).
    pub fn forget_expired_revocations(&mut self, now_unix: u64) {
        let skew = self.policy.clock_skew_secs;
        self.revoked
            .retain(|_, &mut expires_at| now_unix < expires_at.saturating_add(skew));
    }

    /// Tokens revoked and remembered now.
    pub fn revoked_len(&self) -> usize {
        self.revoked.len()
    }

    /// Signs `claims` with the issuing key.
    pub fn issue(&self, claims: &TokenClaims) -> Result<IssuedToken, IssueError> {
        let key = self
            .issuing
            .as_ref()
            .and_then(|id| self.keys.get(id))
            .ok_or(IssueError::Key(KeyError::NoIssuingKey))?;
        key.issue(claims).map_err(IssueError::Claims)
    }

    /// Verifies a binary token for the namespace `audience` at Unix time `now_unix` (seconds).
    ///
    /// Order: size and layout, key id, MAC (constant time), then audience, lifetime, validity
    /// period and revocation; see [`TokenError`].
    pub fn verify(
        &self,
        bytes: &[u8],
        audience: &str,
        now_unix: u64,
    ) -> Result<VerifiedToken, TokenError> {
        let t: UnverifiedToken = token::decode(bytes)?;
        let key = self
            .keys
            .get(&t.key_id)
            .ok_or_else(|| TokenError::UnknownKeyId(t.key_id.clone()))?;
        key.tag_mac(&bytes[..t.signed_len])
            .verify_slice(&t.tag)
            .map_err(|_| TokenError::Tampered)?;
        let c = &t.claims;
        if c.namespace != audience {
            return Err(TokenError::WrongAudience {
                expected: audience.to_owned(),
                actual: c.namespace.clone(),
            });
        }
        if let Some(max) = self.policy.max_lifetime_secs {
            let lifetime = c.expires_at - c.issued_at; // decode ensures expires_at > issued_at
            if lifetime > max {
                return Err(TokenError::LifetimeTooLong { lifetime, max });
            }
        }
        let skew = self.policy.clock_skew_secs;
        if now_unix.saturating_add(skew) < c.issued_at {
            return Err(TokenError::NotYetValid {
                issued_at: c.issued_at,
                now: now_unix,
                skew,
            });
        }
        if now_unix >= c.expires_at.saturating_add(skew) {
            return Err(TokenError::Expired {
                expires_at: c.expires_at,
                now: now_unix,
                skew,
            });
        }
        if self.revoked.contains_key(&(t.key_id.clone(), c.nonce)) {
            return Err(TokenError::Revoked);
        }
        Ok(VerifiedToken {
            holder_secret: Secret(key.holder_secret(&t.tag)),
            key_id: t.key_id,
            claims: t.claims,
        })
    }

    /// Verifies a token in text form (see [`TokenKeyring::verify`]).
    pub fn verify_text(
        &self,
        text: &str,
        audience: &str,
        now_unix: u64,
    ) -> Result<VerifiedToken, TokenError> {
        let bytes = token::from_text(text)?;
        self.verify(&bytes, audience, now_unix)
    }
}

/// Why a key ring could not issue a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// No issuing key.
    #[error(transparent)]
    Key(KeyError),
    /// The claims cannot be encoded.
    #[error(transparent)]
    Claims(TokenError),
}

/// A token whose MAC, audience and validity period were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The key id that signed it.
    pub key_id: String,
    /// The claims, now trustworthy.
    pub claims: TokenClaims,
    /// The secret the holder proves possession of in the handshake.
    pub holder_secret: Secret,
}

impl VerifiedToken {
    /// Checks that a peer uses the name the token binds (hello `node_name`, every frame's
    /// `message_head.source`).
    pub fn check_name(&self, used: &str) -> Result<(), Violation> {
        if used == self.claims.name {
            Ok(())
        } else {
            Err(Violation::NameMismatch {
                bound: self.claims.name.clone(),
                used: used.to_owned(),
            })
        }
    }

    /// Checks that the token allows sending on `stream_id`.
    pub fn check_stream(&self, stream_id: i64) -> Result<(), Violation> {
        if self.claims.streams.contains(stream_id) {
            Ok(())
        } else {
            Err(Violation::StreamNotAllowed(stream_id))
        }
    }
}
