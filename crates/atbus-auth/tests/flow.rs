//! The pieces composed the way a node will use them: an issuer signs a token, the client proves
//! its holder secret in a 0-RTT first flight, the server verifies token and proof, checks
//! freshness, then enforces the token's name and streams; replays and copies fail.

use atbus_auth::{
    AntiReplay, AntiReplayConfig, EarlyContext, EarlyOutcome, EarlyProof, EarlyProofError,
    StreamSet, TokenClaims, TokenKey, TokenKeyring, Violation,
};

const NOW_S: u64 = 1_800_000_000;
const START_MS: u64 = (NOW_S - 120) * 1000;

struct Server {
    ring: TokenKeyring,
    guard: AntiReplay,
}

#[derive(Debug, PartialEq)]
enum Admission {
    EarlyAccepted,
    FallBackTo1Rtt(EarlyOutcome),
    Refused(String),
}

impl Server {
    /// What a server does with a first flight: `hello` carries the token text; `early` the
    /// early data; the proof covers both.
    fn on_first_flight(
        &mut self,
        now_ms: u64,
        token: &str,
        client_name: &str,
        early: &[u8],
        proof: &EarlyProof,
    ) -> Admission {
        let t = match self.ring.verify_text(token, "game", now_ms / 1000) {
            Ok(t) => t,
            Err(e) => return Admission::Refused(e.to_string()),
        };
        if let Err(v) = t.check_name(client_name) {
            return Admission::Refused(v.to_string());
        }
        let flight = [token.as_bytes(), early].concat();
        let ctx = EarlyContext {
            key_id: &t.key_id,
            client_name,
            namespace: "game",
            server_name: "lobby-1",
            first_flight: &flight,
        };
        match self.guard.admit(now_ms, proof, &t.holder_secret.0, &ctx) {
            Ok(EarlyOutcome::Accepted) => Admission::EarlyAccepted,
            Ok(other) => Admission::FallBackTo1Rtt(other),
            Err(EarlyProofError::BadMac) => Admission::Refused("bad proof".into()),
            Err(e) => Admission::Refused(e.to_string()),
        }
    }
}

fn client_flight(
    token: &str,
    secret: &[u8],
    name: &str,
    early: &[u8],
    at_ms: u64,
    n: u8,
) -> EarlyProof {
    let flight = [token.as_bytes(), early].concat();
    let ctx = EarlyContext {
        key_id: "2026-11",
        client_name: name,
        namespace: "game",
        server_name: "lobby-1",
        first_flight: &flight,
    };
    EarlyProof::sign(secret, &ctx, at_ms, [n; 32]).unwrap()
}

fn setup() -> (Server, String, [u8; 32]) {
    let mut ring = TokenKeyring::new();
    ring.insert(TokenKey::new("2026-11", b"issuer-secret-0123456789abcdef!!".to_vec()).unwrap())
        .unwrap();
    let issued = ring
        .issue(&TokenClaims {
            name: "player-17".into(),
            namespace: "game".into(),
            streams: StreamSet::parse("1-8").unwrap(),
            issued_at: NOW_S - 60,
            expires_at: NOW_S + 3600,
            nonce: [3; 16],
        })
        .unwrap();
    let server = Server {
        ring,
        guard: AntiReplay::new(AntiReplayConfig::default(), START_MS),
    };
    (server, issued.to_text(), issued.holder_secret.0)
}

#[test]
fn token_and_early_data_are_accepted_once() {
    let (mut server, token, secret) = setup();
    let now = NOW_S * 1000;
    let proof = client_flight(&token, &secret, "player-17", b"buy 1", now - 40, 1);
    assert_eq!(
        server.on_first_flight(now, &token, "player-17", b"buy 1", &proof),
        Admission::EarlyAccepted
    );
    // The recorded flight replayed: early data not delivered again.
    assert_eq!(
        server.on_first_flight(now + 500, &token, "player-17", b"buy 1", &proof),
        Admission::FallBackTo1Rtt(EarlyOutcome::Replayed)
    );
    // Enforcement after admission.
    let t = server.ring.verify_text(&token, "game", NOW_S).unwrap();
    assert_eq!(t.check_stream(8), Ok(()));
    assert_eq!(t.check_stream(9), Err(Violation::StreamNotAllowed(9)));
}

#[test]
fn a_copied_token_without_the_holder_secret_is_useless() {
    let (mut server, token, _) = setup();
    let now = NOW_S * 1000;
    // The attacker saw the token on the wire and signs with a guess.
    let proof = client_flight(&token, &[0u8; 32], "player-17", b"buy 9", now, 2);
    assert_eq!(
        server.on_first_flight(now, &token, "player-17", b"buy 9", &proof),
        Admission::Refused("bad proof".into())
    );
    assert!(server.guard.is_empty());
}

#[test]
fn changed_early_data_or_another_name_is_refused() {
    let (mut server, token, secret) = setup();
    let now = NOW_S * 1000;
    let proof = client_flight(&token, &secret, "player-17", b"buy 1", now, 3);
    assert_eq!(
        server.on_first_flight(now, &token, "player-17", b"buy 100", &proof),
        Admission::Refused("bad proof".into())
    );
    assert!(matches!(
        server.on_first_flight(now, &token, "player-18", b"buy 1", &proof),
        Admission::Refused(m) if m.contains("bound to name")
    ));
}

#[test]
fn a_restarted_server_refuses_the_old_flight() {
    let (mut server, token, secret) = setup();
    let now = NOW_S * 1000;
    let proof = client_flight(&token, &secret, "player-17", b"buy 1", now, 4);
    assert_eq!(
        server.on_first_flight(now, &token, "player-17", b"buy 1", &proof),
        Admission::EarlyAccepted
    );
    server.guard = AntiReplay::new(AntiReplayConfig::default(), now + 1);
    assert!(matches!(
        server.on_first_flight(now + 2, &token, "player-17", b"buy 1", &proof),
        Admission::FallBackTo1Rtt(EarlyOutcome::NotYetWarm { .. })
    ));
}
