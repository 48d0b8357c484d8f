//! The client's 0-RTT first-flight proof: a Unix timestamp in milliseconds, a nonce and an
//! HMAC-SHA256 over a domain-separated, length-prefixed transcript.
//!
//! ```text
//! tag = HMAC(secret, lp("atbus-0rtt-v1 client proof") ‖ u64(unix_ms) ‖ lp(nonce)
//!                    ‖ lp(key_id) ‖ lp(client_name) ‖ lp(namespace) ‖ lp(server_name)
//!                    ‖ lp(first_flight))
//! lp(x) = u32_be(len(x)) ‖ x
//! ```
//!
//! `first_flight` is every byte of the client's first flight the proof covers (the node passes
//! its encoded hello without the proof, early data included), so nothing in it can be changed
//! without breaking the proof. The proof alone does not stop replays: the server runs every
//! proof that verifies through an [`AntiReplay`](crate::AntiReplay) guard.

use hmac::Mac;

use crate::error::EarlyProofError;
use crate::keyring::labelled_mac;

/// Domain label of 0-RTT client proofs.
pub const EARLY_PROOF_LABEL: &[u8] = b"atbus-0rtt-v1 client proof";
/// Length of a 0-RTT nonce (the handshake nonce).
pub const EARLY_NONCE_LEN: usize = 32;
/// Length of an encoded [`EarlyProof`]: timestamp, nonce, tag.
pub const EARLY_PROOF_LEN: usize = 8 + EARLY_NONCE_LEN + 32;

/// What a 0-RTT proof is bound to besides its timestamp and nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EarlyContext<'a> {
    /// Key id of the secret used (access token key id, or the token's key id).
    pub key_id: &'a str,
    /// The client's node name.
    pub client_name: &'a str,
    /// The namespace both sides are in.
    pub namespace: &'a str,
    /// The server's node name (so a flight for one server is useless at another).
    pub server_name: &'a str,
    /// The covered bytes of the first flight (hello without the proof, early data included).
    pub first_flight: &'a [u8],
}

/// A client's 0-RTT proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlyProof {
    /// The client's wall clock when it sent the flight, Unix milliseconds.
    pub unix_ms: u64,
    /// Fresh random nonce from the client's CSPRNG.
    pub nonce: [u8; EARLY_NONCE_LEN],
    /// The HMAC tag.
    pub tag: [u8; 32],
}

fn mac(
    secret: &[u8],
    ctx: &EarlyContext<'_>,
    unix_ms: u64,
    nonce: &[u8; EARLY_NONCE_LEN],
) -> hmac::Hmac<sha2::Sha256> {
    let mut m = labelled_mac(secret, EARLY_PROOF_LABEL);
    m.update(&unix_ms.to_be_bytes());
    for field in [
        &nonce[..],
        ctx.key_id.as_bytes(),
        ctx.client_name.as_bytes(),
        ctx.namespace.as_bytes(),
        ctx.server_name.as_bytes(),
        ctx.first_flight,
    ] {
        // Every field is far below 4 GiB in practice; saturating keeps the prefix total.
        let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
        m.update(&len.to_be_bytes());
        m.update(field);
    }
    m
}

impl EarlyProof {
    /// The proof for `ctx` at `unix_ms` with `nonce` (both supplied by the caller: this crate
    /// reads no clock and draws no randomness).
    pub fn sign(
        secret: &[u8],
        ctx: &EarlyContext<'_>,
        unix_ms: u64,
        nonce: [u8; EARLY_NONCE_LEN],
    ) -> Result<Self, EarlyProofError> {
        if unix_ms > i64::MAX as u64 {
            return Err(EarlyProofError::BadTimestamp(unix_ms));
        }
        let tag = mac(secret, ctx, unix_ms, &nonce)
            .finalize()
            .into_bytes()
            .into();
        Ok(Self {
            unix_ms,
            nonce,
            tag,
        })
    }

    /// Checks the tag in constant time. Run [`AntiReplay::check`](crate::AntiReplay::check)
    /// only after this succeeded, so forged flights cannot fill the nonce cache.
    pub fn verify(&self, secret: &[u8], ctx: &EarlyContext<'_>) -> Result<(), EarlyProofError> {
        mac(secret, ctx, self.unix_ms, &self.nonce)
            .verify_slice(&self.tag)
            .map_err(|_| EarlyProofError::BadMac)
    }

    /// The fixed-size encoding: `u64_be(unix_ms) ‖ nonce ‖ tag`.
    pub fn to_bytes(&self) -> [u8; EARLY_PROOF_LEN] {
        let mut out = [0u8; EARLY_PROOF_LEN];
        out[..8].copy_from_slice(&self.unix_ms.to_be_bytes());
        out[8..8 + EARLY_NONCE_LEN].copy_from_slice(&self.nonce);
        out[8 + EARLY_NONCE_LEN..].copy_from_slice(&self.tag);
        out
    }

    /// Decodes [`EarlyProof::to_bytes`]; any other length is refused.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EarlyProofError> {
        if bytes.len() < EARLY_PROOF_LEN {
            return Err(EarlyProofError::Truncated {
                len: bytes.len(),
                expected: EARLY_PROOF_LEN,
            });
        }
        if bytes.len() > EARLY_PROOF_LEN {
            return Err(EarlyProofError::Oversized {
                len: bytes.len(),
                expected: EARLY_PROOF_LEN,
            });
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&bytes[..8]);
        let unix_ms = u64::from_be_bytes(ts);
        if unix_ms > i64::MAX as u64 {
            return Err(EarlyProofError::BadTimestamp(unix_ms));
        }
        let mut nonce = [0u8; EARLY_NONCE_LEN];
        nonce.copy_from_slice(&bytes[8..8 + EARLY_NONCE_LEN]);
        let mut tag = [0u8; 32];
        tag.copy_from_slice(&bytes[8 + EARLY_NONCE_LEN..]);
        Ok(Self {
            unix_ms,
            nonce,
            tag,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn ctx(flight: &[u8]) -> EarlyContext<'_> {
        EarlyContext {
            key_id: "k1",
            client_name: "client-a",
            namespace: "ns",
            server_name: "server-b",
            first_flight: flight,
        }
    }

    #[test]
    fn verifies_and_binds_every_field() {
        let p = EarlyProof::sign(SECRET, &ctx(b"hello"), 1_700_000_000_000, [7; 32]).unwrap();
        assert_eq!(p.verify(SECRET, &ctx(b"hello")), Ok(()));
        let bad = EarlyProofError::BadMac;
        assert_eq!(
            p.verify(b"another-secret-0123", &ctx(b"hello")),
            Err(bad.clone())
        );
        assert_eq!(p.verify(SECRET, &ctx(b"hellp")), Err(bad.clone()));
        for change in 0..4 {
            let mut c = ctx(b"hello");
            match change {
                0 => c.key_id = "k2",
                1 => c.client_name = "client-x",
                2 => c.namespace = "",
                _ => c.server_name = "server-c",
            }
            assert_eq!(p.verify(SECRET, &c), Err(bad.clone()), "change {change}");
        }
        let mut q = p.clone();
        q.unix_ms += 1;
        assert_eq!(q.verify(SECRET, &ctx(b"hello")), Err(bad.clone()));
        let mut q = p.clone();
        q.nonce[31] ^= 1;
        assert_eq!(q.verify(SECRET, &ctx(b"hello")), Err(bad));
    }

    #[test]
    fn fields_do_not_slide_into_each_other() {
        // Same concatenation, different split: the length prefixes keep them apart.
        let mut a = ctx(b"");
        a.client_name = "ab";
        a.namespace = "c";
        let mut b = ctx(b"");
        b.client_name = "a";
        b.namespace = "bc";
        let p = EarlyProof::sign(SECRET, &a, 5, [1; 32]).unwrap();
        assert!(p.verify(SECRET, &b).is_err());
    }

    #[test]
    fn encoding_round_trips_and_refuses_other_lengths() {
        let p = EarlyProof::sign(SECRET, &ctx(b"x"), 42, [3; 32]).unwrap();
        let b = p.to_bytes();
        assert_eq!(EarlyProof::from_bytes(&b), Ok(p));
        assert_eq!(
            EarlyProof::from_bytes(&b[..71]),
            Err(EarlyProofError::Truncated {
                len: 71,
                expected: 72
            })
        );
        let mut long = b.to_vec();
        long.push(0);
        assert_eq!(
            EarlyProof::from_bytes(&long),
            Err(EarlyProofError::Oversized {
                len: 73,
                expected: 72
            })
        );
        let mut huge = b;
        huge[0] = 0x80;
        assert!(matches!(
            EarlyProof::from_bytes(&huge),
            Err(EarlyProofError::BadTimestamp(_))
        ));
        assert!(matches!(
            EarlyProof::sign(SECRET, &ctx(b"x"), u64::MAX, [0; 32]),
            Err(EarlyProofError::BadTimestamp(_))
        ));
    }
}
