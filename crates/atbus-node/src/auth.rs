//! Link authentication: the handshake transcript, HMAC-SHA256 proofs and HKDF session keys.
//!
//! The transcript is SHA-256 over a domain label and every field of both hellos except
//! `auth_proof`, each length-prefixed (see `docs/protocol.md`, "Link handshake"). The server
//! proves possession of the token with `HMAC(secret, lp("atbus-link-v1 server proof") ||
//! transcript_hash)`, the client with the same under `"atbus-link-v1 client proof"`; distinct
//! labels keep a proof from being reflected back. Session keys come from
//! `HKDF-SHA256(salt = transcript_hash, ikm = secret)`.

use atbus_proto::HandshakeHello;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Domain label of version 1 link handshakes.
pub const PROTOCOL_LABEL: &[u8] = b"atbus-link-v1";
/// Label of the server's proof.
pub const SERVER_PROOF_LABEL: &[u8] = b"atbus-link-v1 server proof";
/// Label of the client's proof.
pub const CLIENT_PROOF_LABEL: &[u8] = b"atbus-link-v1 client proof";
/// HKDF info of the client-to-server key.
pub const CLIENT_TO_SERVER_INFO: &[u8] = b"atbus-link-v1 client to server";
/// HKDF info of the server-to-client key.
pub const SERVER_TO_CLIENT_INFO: &[u8] = b"atbus-link-v1 server to client";
/// Length of handshake nonces.
pub const NONCE_LEN: usize = 32;
/// Length of an HMAC-SHA256 proof.
pub const PROOF_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// SHA-256 of the transcript of a client hello and a server reply.
pub type TranscriptHash = [u8; 32];

fn lp(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u32).to_be_bytes());
    h.update(bytes);
}

fn hello_fields(h: &mut Sha256, role: &[u8], m: &HandshakeHello) {
    lp(h, role);
    h.update(m.protocol_version.to_be_bytes());
    lp(h, m.node_name.as_bytes());
    lp(h, m.namespace_name.as_bytes());
    h.update(m.incarnation_id.to_be_bytes());
    lp(h, &m.nonce);
    h.update(m.capabilities.to_be_bytes());
    lp(h, m.key_id.as_bytes());
    h.update(m.unix_time_ms.to_be_bytes());
    h.update(m.max_package_size.to_be_bytes());
    h.update((m.labels.len() as u32).to_be_bytes());
    for (k, v) in &m.labels {
        lp(h, k.as_bytes());
        lp(h, v.as_bytes());
    }
    lp(h, &m.assigned_token);
    h.update(m.stream_receive_window.to_be_bytes());
    h.update(m.session_receive_window.to_be_bytes());
    // Content protection negotiation: covered, so stripping or changing it fails the proofs.
    h.update(m.encryption_mode.to_be_bytes());
    h.update((m.cipher_suites.len() as u32).to_be_bytes());
    for s in &m.cipher_suites {
        h.update(s.to_be_bytes());
    }
    h.update(m.compression.to_be_bytes());
}

/// The transcript hash of `client`'s hello and `server`'s reply (`auth_proof` excluded).
pub fn transcript_hash(client: &HandshakeHello, server: &HandshakeHello) -> TranscriptHash {
    let mut h = Sha256::new();
    lp(&mut h, PROTOCOL_LABEL);
    hello_fields(&mut h, b"client", client);
    hello_fields(&mut h, b"server", server);
    h.finalize().into()
}

fn mac(secret: &[u8], label: &[u8], th: &TranscriptHash) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut m = match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable_hmac(),
    };
    m.update(&(label.len() as u32).to_be_bytes());
    m.update(label);
    m.update(th);
    m
}

#[cold]
fn unreachable_hmac() -> ! {
    panic!("HMAC accepts keys of any length")
}

/// Which side a proof comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The link opener (sends hello and confirm).
    Client,
    /// The answering side (sends hello_reply and accept).
    Server,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Client => CLIENT_PROOF_LABEL,
            Role::Server => SERVER_PROOF_LABEL,
        }
    }
}

/// The proof `role` sends for transcript `th` with token `secret`.
pub fn proof(secret: &[u8], role: Role, th: &TranscriptHash) -> [u8; PROOF_LEN] {
    mac(secret, role.label(), th).finalize().into_bytes().into()
}

/// Checks `role`'s proof in constant time.
pub fn verify(secret: &[u8], role: Role, th: &TranscriptHash, proof: &[u8]) -> bool {
    mac(secret, role.label(), th).verify_slice(proof).is_ok()
}

/// Keys derived from a token handshake: the session's content protection keys in PSK mode
/// (`docs/security.md` §8.8). Two values are equal when their keys and transcript are, whichever
/// side holds them.
#[derive(Clone)]
pub struct SessionKeys {
    /// This node's side of the handshake that made the keys (it seals with its direction's
    /// key).
    pub role: Role,
    /// Key for data the client sends.
    pub client_to_server: [u8; 32],
    /// Key for data the server sends.
    pub server_to_client: [u8; 32],
    /// The transcript hash the keys are bound to.
    pub transcript_hash: TranscriptHash,
}

impl PartialEq for SessionKeys {
    fn eq(&self, other: &Self) -> bool {
        self.client_to_server == other.client_to_server
            && self.server_to_client == other.server_to_client
            && self.transcript_hash == other.transcript_hash
    }
}

impl Eq for SessionKeys {}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys")
            .field("keys", &"<redacted>")
            .finish()
    }
}

/// Derives the session keys of a handshake, for the side `role`.
pub fn session_keys(secret: &[u8], th: &TranscriptHash, role: Role) -> SessionKeys {
    let hk = Hkdf::<Sha256>::new(Some(th), secret);
    let mut c2s = [0u8; 32];
    let mut s2c = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 8160-byte output limit.
    if hk.expand(CLIENT_TO_SERVER_INFO, &mut c2s).is_err()
        || hk.expand(SERVER_TO_CLIENT_INFO, &mut s2c).is_err()
    {
        unreachable_hmac();
    }
    SessionKeys {
        role,
        client_to_server: c2s,
        server_to_client: s2c,
        transcript_hash: *th,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(name: &str) -> HandshakeHello {
        HandshakeHello {
            protocol_version: 1,
            node_name: name.into(),
            nonce: vec![7u8; 32].into(),
            key_id: "k1".into(),
            ..HandshakeHello::default()
        }
    }

    #[test]
    fn proofs_verify_and_are_role_bound() {
        let th = transcript_hash(&hello("a"), &hello("b"));
        let p = proof(b"secret-secret-16", Role::Server, &th);
        assert!(verify(b"secret-secret-16", Role::Server, &th, &p));
        assert!(!verify(b"secret-secret-16", Role::Client, &th, &p));
        assert!(!verify(b"secret-secret-17", Role::Server, &th, &p));
        assert!(!verify(b"secret-secret-16", Role::Server, &th, &p[..31]));
    }

    #[test]
    fn roles_are_not_interchangeable_in_the_transcript() {
        assert_ne!(
            transcript_hash(&hello("a"), &hello("b")),
            transcript_hash(&hello("b"), &hello("a"))
        );
    }

    #[test]
    fn keys_differ_per_direction_and_transcript() {
        let th = transcript_hash(&hello("a"), &hello("b"));
        let k = session_keys(b"secret-secret-16", &th, Role::Client);
        assert_ne!(k.client_to_server, k.server_to_client);
        let th2 = transcript_hash(&hello("a"), &hello("c"));
        assert_ne!(
            session_keys(b"secret-secret-16", &th2, Role::Client).client_to_server,
            k.client_to_server
        );
    }
}
