//! Randomness of a TLS handshake as an input: rustls draws every random byte (client and server
//! randoms, the session id, the ephemeral X25519 key) from the seed the caller passes to
//! [`TlsHandshake::client`](super::TlsHandshake::client) /
//! [`server`](super::TlsHandshake::server), so a simulation replays a handshake byte for byte.
//!
//! rustls's `CryptoProvider::secure_random` is a `&'static dyn SecureRandom`, shared by every
//! connection of a configuration. The provider here points it at [`FedRandom`], which reads the
//! stream of the handshake being driven: the driver installs its own [`HandshakeRandom`] in a
//! thread-local slot for the duration of each call into rustls ([`with_random`]) and takes it
//! back afterwards. Outside such a call there is no source and rustls gets `GetRandomFailed`,
//! so no byte can silently come from elsewhere.
//!
//! ring's own key exchange draws from the system RNG, so the provider replaces its groups with
//! X25519 over `x25519-dalek`, keyed from the same stream. ring's ECDSA and RSA signatures also
//! draw their nonce and salt from the system RNG (ring offers no other source): with such keys
//! the CertificateVerify messages differ run to run, while Ed25519 signatures are deterministic.

use std::cell::RefCell;

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rustls::crypto::{
    ActiveKeyExchange, CryptoProvider, GetRandomFailed, SecureRandom, SharedSecret,
    SupportedKxGroup,
};
use rustls::{Error, NamedGroup};

/// The random stream of one handshake: ChaCha20 keyed with the caller's 32-byte seed (a
/// CSPRNG as long as the seed is secret).
#[derive(Clone)]
pub(crate) struct HandshakeRandom(ChaCha20Rng);

impl std::fmt::Debug for HandshakeRandom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakeRandom").finish_non_exhaustive()
    }
}

impl HandshakeRandom {
    /// The stream of `seed`.
    pub(crate) fn new(seed: [u8; 32]) -> Self {
        Self(ChaCha20Rng::from_seed(seed))
    }

    /// Fills `buf` with the next bytes of the stream.
    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        self.0.fill_bytes(buf);
    }
}

thread_local! {
    /// The stream of the handshake whose call into rustls is running on this thread.
    static CURRENT: RefCell<Option<HandshakeRandom>> = const { RefCell::new(None) };
}

/// Runs `f` (a call into rustls) with `random` as the source of every random byte it draws.
pub(crate) fn with_random<T>(random: &mut HandshakeRandom, f: impl FnOnce() -> T) -> T {
    let previous = CURRENT.with(|c| c.replace(Some(random.clone())));
    let out = f();
    let used = CURRENT.with(|c| c.replace(previous));
    if let Some(used) = used {
        *random = used;
    }
    out
}

fn draw(buf: &mut [u8]) -> Result<(), GetRandomFailed> {
    CURRENT.with(|c| match c.borrow_mut().as_mut() {
        Some(random) => {
            random.fill(buf);
            Ok(())
        }
        None => Err(GetRandomFailed),
    })
}

/// rustls's source of randomness: the stream of the handshake being driven.
#[derive(Debug)]
pub(crate) struct FedRandom;

impl SecureRandom for FedRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        draw(buf)
    }
}

static FED_RANDOM: FedRandom = FedRandom;

/// X25519 key exchange whose ephemeral secret comes from the handshake's stream.
#[derive(Debug)]
struct FedX25519;

static FED_X25519: FedX25519 = FedX25519;

struct X25519Exchange {
    secret: x25519_dalek::StaticSecret,
    public: [u8; 32],
}

impl SupportedKxGroup for FedX25519 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let mut bytes = [0u8; 32];
        draw(&mut bytes).map_err(|_| Error::FailedToGetRandomBytes)?;
        let secret = x25519_dalek::StaticSecret::from(bytes);
        let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        Ok(Box::new(X25519Exchange { secret, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

impl ActiveKeyExchange for X25519Exchange {
    fn complete(self: Box<Self>, peer_pub_key: &[u8]) -> Result<SharedSecret, Error> {
        let peer: [u8; 32] = peer_pub_key
            .try_into()
            .map_err(|_| Error::from(rustls::PeerMisbehaved::InvalidKeyShare))?;
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(peer));
        // A low-order peer point gives the all-zero secret (RFC 7748 §6.1): refused.
        if !shared.was_contributory() {
            return Err(rustls::PeerMisbehaved::InvalidKeyShare.into());
        }
        Ok(SharedSecret::from(&shared.as_bytes()[..]))
    }

    fn pub_key(&self) -> &[u8] {
        &self.public
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// ring's provider with its randomness and key exchange fed by the handshake's stream.
pub(crate) fn fed_provider() -> CryptoProvider {
    CryptoProvider {
        secure_random: &FED_RANDOM,
        kx_groups: vec![&FED_X25519],
        ..rustls::crypto::ring::default_provider()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_depends_on_the_seed_only_and_is_not_constant() {
        let (mut a, mut b, mut c) = (
            HandshakeRandom::new([7; 32]),
            HandshakeRandom::new([7; 32]),
            HandshakeRandom::new([8; 32]),
        );
        let (mut x, mut y, mut z) = ([0u8; 100], [0u8; 100], [0u8; 100]);
        a.fill(&mut x[..33]);
        a.fill(&mut x[33..]);
        b.fill(&mut y[..33]);
        b.fill(&mut y[33..]);
        c.fill(&mut z[..33]);
        c.fill(&mut z[33..]);
        assert_eq!(
            x, y,
            "the same draws from the same seed give the same bytes"
        );
        assert_ne!(x, z);
        assert_ne!(x[..32], x[32..64], "blocks differ");
    }

    #[test]
    fn nothing_is_drawn_outside_a_driven_call() {
        assert!(draw(&mut [0u8; 4]).is_err());
        let mut random = HandshakeRandom::new([1; 32]);
        let mut inside = [0u8; 8];
        with_random(&mut random, || draw(&mut inside)).expect("source installed");
        let mut next = [0u8; 8];
        random.fill(&mut next);
        let mut fresh = HandshakeRandom::new([1; 32]);
        let mut both = [0u8; 16];
        fresh.fill(&mut both);
        assert_eq!(
            both[..8],
            inside,
            "the call drew from the handshake's stream"
        );
        assert_eq!(both[8..], next, "and the stream moved on");
        assert!(draw(&mut [0u8; 4]).is_err());
    }
}
