//! The TLS driver between two in-memory ends, with certificates made here by rcgen (none is
//! stored). The clock is an argument, so validity periods are tested at fixed dates.

use std::time::{Duration, Instant};

use super::test_certs::{TestCa as Ca, TestLeaf as Leaf};
use super::*;

/// 2027-06-01 00:00 UTC in Unix milliseconds: inside every default validity period below.
const JUNE_2027_MS: i64 = 1_811_808_000_000;
/// 2031-01-01 in Unix milliseconds: after the certificates that expire at the end of 2030.
const JAN_2031_MS: i64 = 1_924_992_000_000;
/// 2020-01-01 in Unix milliseconds: before certificates valid from 2026.
const JAN_2020_MS: i64 = 1_577_836_800_000;

fn config(leaf: Option<&Leaf>, ca: &Ca, mtls: bool) -> TlsConfig {
    TlsConfig::from_pem(
        leaf.map(|l| l.cert.as_bytes()),
        leaf.map(|l| l.key.as_bytes()),
        ca.pem.as_bytes(),
        mtls,
    )
    .expect("TLS config")
}

/// Client and server of one handshake, driven over virtual time.
struct Pair {
    client: TlsHandshake,
    server: TlsHandshake,
    now: Instant,
    unix_ms: i64,
    client_error: Option<TlsError>,
    server_error: Option<TlsError>,
    /// Records sent in each direction (client→server, server→client).
    sent: [usize; 2],
}

impl Pair {
    fn new(client: &TlsConfig, server: &TlsConfig, transport: TlsTransport, unix_ms: i64) -> Self {
        let now = Instant::now();
        let mut client = TlsHandshake::client(client, transport, now, [1; 32]).expect("client");
        let mut server = TlsHandshake::server(server, transport, now, [2; 32]).expect("server");
        client.expect_peer(AtbusIdentity::new("game", "lobby-1"));
        server.expect_peer(AtbusIdentity::new("game", "player-17"));
        Self {
            client,
            server,
            now,
            unix_ms,
            client_error: None,
            server_error: None,
            sent: [0; 2],
        }
    }

    /// Runs until neither side has anything to send or a timer to run. `drop(direction,
    /// index)` says whether the `index`-th record of a direction (0 = client→server) is lost.
    fn run(&mut self, mut drop: impl FnMut(usize, usize) -> bool) {
        let mut buf = Vec::new();
        for _ in 0..10_000 {
            let mut moved = false;
            for direction in 0..2 {
                let (from, to, error) = if direction == 0 {
                    (&mut self.client, &mut self.server, &mut self.server_error)
                } else {
                    (&mut self.server, &mut self.client, &mut self.client_error)
                };
                while from.poll_transmit(self.now, &mut buf) {
                    assert!(buf.len() <= DATA_HEADER_LEN + MAX_RECORD_DATA);
                    let index = self.sent[direction];
                    self.sent[direction] += 1;
                    if !drop(direction, index) {
                        if let Err(e) = to.handle_record(self.now, self.unix_ms, &buf) {
                            error.get_or_insert(e);
                        }
                    }
                    buf.clear();
                    moved = true;
                }
            }
            if moved {
                continue;
            }
            let next = [self.client.poll_timeout(), self.server.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let settled = self.client.is_settled() && self.server.is_complete();
            match next {
                Some(at) if !settled => {
                    self.now = self.now.max(at);
                    self.client.handle_timeout(self.now);
                    self.server.handle_timeout(self.now);
                    if let Some(e) = self.client.error() {
                        self.client_error.get_or_insert(e.clone());
                    }
                    if let Some(e) = self.server.error() {
                        self.server_error.get_or_insert(e.clone());
                    }
                }
                _ => return,
            }
        }
        panic!("handshake did not settle");
    }
}

struct Pki {
    ca: Ca,
    server: Leaf,
    client: Leaf,
}

fn pki() -> Pki {
    let ca = Ca::new("atbus test CA");
    let server = ca.leaf(&["atbus://game/lobby-1"], &[], 2026, 2030);
    let client = ca.leaf(&["atbus://game/player-17"], &[], 2026, 2030);
    Pki { ca, server, client }
}

fn assert_keys_agree(pair: &Pair) {
    let c = pair.client.export_secrets(b"ctx").expect("client secrets");
    let s = pair.server.export_secrets(b"ctx").expect("server secrets");
    assert_eq!(c, s);
    assert_ne!(c.client_to_server.0, c.server_to_client.0);
    // The context binds the secrets.
    let other = pair.client.export_secrets(b"other").expect("secrets");
    assert_ne!(other.client_to_server.0, c.client_to_server.0);
    // They key content protection on both ends.
    let suite = crate::CipherSuite::ChaCha20Poly1305;
    let mut seal = crate::PacketProtection::new(
        suite,
        Side::Client,
        &c.client_to_server.0,
        &c.server_to_client.0,
    )
    .expect("client protection");
    let mut open = crate::PacketProtection::new(
        suite,
        Side::Server,
        &s.client_to_server.0,
        &s.server_to_client.0,
    )
    .expect("server protection");
    let header = crate::ContentHeader {
        flags: atbus_proto::packet_flags::ENCRYPTED,
        ..crate::ContentHeader::default()
    };
    let mut sealed = Vec::new();
    seal.seal(&header, b"hello", &mut sealed).expect("seal");
    let mut plain = Vec::new();
    open.open(&header, &sealed, &mut plain).expect("open");
    assert_eq!(plain, b"hello");
}

#[test]
fn mutual_tls_completes_and_both_sides_export_equal_secrets() {
    let pki = pki();
    let client = config(Some(&pki.client), &pki.ca, false);
    let server = config(Some(&pki.server), &pki.ca, true);
    let mut pair = Pair::new(&client, &server, TlsTransport::reliable(), JUNE_2027_MS);
    pair.run(|_, _| false);
    assert_eq!(pair.client_error, None);
    assert_eq!(pair.server_error, None);
    assert!(pair.client.is_complete() && pair.server.is_complete());
    assert!(pair.client.is_settled());
    assert_eq!(
        pair.client.peer_identity(),
        Some(&AtbusIdentity::new("game", "lobby-1"))
    );
    assert_eq!(
        pair.server.peer_identity(),
        Some(&AtbusIdentity::new("game", "player-17"))
    );
    assert_keys_agree(&pair);
    // A reliable transport needs no acknowledgement records: client hello, server flight
    // (hello, then the handshake level), client finished.
    assert_eq!(pair.sent, [2, 2], "records per direction");
}

#[test]
fn lossy_link_with_small_records_completes_through_retransmission() {
    let pki = pki();
    let client = config(Some(&pki.client), &pki.ca, false);
    let server = config(Some(&pki.server), &pki.ca, true);
    let transport = TlsTransport {
        max_record_data: 100,
        ..TlsTransport::datagram()
    };
    let mut pair = Pair::new(&client, &server, transport, JUNE_2027_MS);
    let start = pair.now;
    // Lose every third record in each direction, including the first of each.
    pair.run(|_, i| i % 3 == 0);
    assert_eq!(pair.client_error, None);
    assert_eq!(pair.server_error, None);
    assert!(pair.client.is_settled() && pair.server.is_complete());
    assert_keys_agree(&pair);
    assert!(pair.now > start, "retransmission timers ran");
    assert!(pair.now - start < DEFAULT_TLS_DEADLINE);
}

#[test]
fn lost_final_acknowledgement_is_answered_again() {
    let pki = pki();
    let client = config(Some(&pki.client), &pki.ca, false);
    let server = config(Some(&pki.server), &pki.ca, false);
    let mut pair = Pair::new(&client, &server, TlsTransport::datagram(), JUNE_2027_MS);
    // Drop every pure acknowledgement of the server once: the client resends its finished
    // flight until one gets through.
    let mut dropped = 0;
    pair.run(|direction, i| {
        let lose = direction == 1 && i >= 2 && dropped < 2;
        dropped += usize::from(lose);
        lose
    });
    assert_eq!(dropped, 2);
    assert!(pair.client.is_settled() && pair.server.is_complete());
    assert_keys_agree(&pair);
}

/// Runs a handshake expected to fail; returns (client error, server error).
fn failing(client: &TlsConfig, server: &TlsConfig, unix_ms: i64) -> (TlsError, TlsError) {
    let mut pair = Pair::new(client, server, TlsTransport::reliable(), unix_ms);
    pair.run(|_, _| false);
    assert!(pair.client.export_secrets(b"").is_err() || pair.server.export_secrets(b"").is_err());
    (
        pair.client_error.expect("client sees a failure"),
        pair.server_error.expect("server sees a failure"),
    )
}

#[test]
fn server_certificate_from_another_ca_is_unknown_issuer() {
    let pki = pki();
    let other = Ca::new("some other CA");
    let rogue = other.leaf(&["atbus://game/lobby-1"], &[], 2026, 2030);
    let client = config(Some(&pki.client), &pki.ca, false);
    let server = config(Some(&rogue), &other, false);
    let (c, s) = failing(&client, &server, JUNE_2027_MS);
    assert_eq!(c, TlsError::UnknownIssuer);
    assert_eq!(s, TlsError::PeerRefused(TlsRefusal::UnknownIssuer));
    assert_eq!(c.code(), "tls-unknown-issuer");
    assert_eq!(s.code(), "tls-peer-unknown-issuer");
}

#[test]
fn client_certificate_from_another_ca_is_unknown_issuer() {
    let pki = pki();
    let other = Ca::new("some other CA");
    let rogue = other.leaf(&["atbus://game/player-17"], &[], 2026, 2030);
    let client = config(Some(&rogue), &pki.ca, false);
    let server = config(Some(&pki.server), &pki.ca, true);
    let (c, s) = failing(&client, &server, JUNE_2027_MS);
    assert_eq!(s, TlsError::UnknownIssuer);
    assert_eq!(c, TlsError::PeerRefused(TlsRefusal::UnknownIssuer));
}

#[test]
fn expired_and_not_yet_valid_certificates_are_refused_at_the_given_clock() {
    let pki = pki();
    let client = config(Some(&pki.client), &pki.ca, false);
    let server = config(Some(&pki.server), &pki.ca, false);
    // The same certificates succeed in 2027, are expired in 2031, not yet valid in 2020.
    let (c, s) = failing(&client, &server, JAN_2031_MS);
    assert_eq!(c, TlsError::CertificateExpired);
    assert_eq!(s, TlsError::PeerRefused(TlsRefusal::CertificateExpired));
    let (c, s) = failing(&client, &server, JAN_2020_MS);
    assert_eq!(c, TlsError::CertificateNotYetValid);
    assert_eq!(s, TlsError::PeerRefused(TlsRefusal::CertificateNotYetValid));
}

#[test]
fn expired_client_certificate_is_refused_by_the_server() {
    let pki = pki();
    let old = pki.ca.leaf(&["atbus://game/player-17"], &[], 2020, 2027);
    let client = config(Some(&old), &pki.ca, false);
    let server = config(Some(&pki.server), &pki.ca, true);
    let (c, s) = failing(&client, &server, JUNE_2027_MS);
    assert_eq!(s, TlsError::CertificateExpired);
    assert_eq!(c, TlsError::PeerRefused(TlsRefusal::CertificateExpired));
}

#[test]
fn mutual_tls_required_but_client_has_no_certificate() {
    let pki = pki();
    let client = config(None, &pki.ca, false);
    let server = config(Some(&pki.server), &pki.ca, true);
    let (c, s) = failing(&client, &server, JUNE_2027_MS);
    assert_eq!(s, TlsError::ClientCertificateRequired);
    assert_eq!(
        c,
        TlsError::PeerRefused(TlsRefusal::ClientCertificateRequired)
    );

    // Without mutual TLS the same client completes, with no certified identity.
    let server = config(Some(&pki.server), &pki.ca, false);
    let mut pair = Pair::new(&client, &server, TlsTransport::reliable(), JUNE_2027_MS);
    pair.run(|_, _| false);
    assert_eq!((&pair.client_error, &pair.server_error), (&None, &None));
    assert!(pair.server.is_complete());
    assert_eq!(pair.server.peer_identity(), None);
    assert_keys_agree(&pair);
}

#[test]
fn client_certificate_naming_another_node_is_an_identity_mismatch() {
    let pki = pki();
    let mallory = pki.ca.leaf(&["atbus://game/mallory"], &[], 2026, 2030);
    let client = config(Some(&mallory), &pki.ca, false);
    let server = config(Some(&pki.server), &pki.ca, true);
    let (c, s) = failing(&client, &server, JUNE_2027_MS);
    assert_eq!(
        s,
        TlsError::IdentityMismatch {
            claimed: "atbus://game/player-17".into(),
            certified: "atbus://game/mallory".into(),
        }
    );
    assert_eq!(c, TlsError::PeerRefused(TlsRefusal::IdentityMismatch));
    // Another namespace is another identity too.
    let elsewhere = pki.ca.leaf(&["atbus://chat/player-17"], &[], 2026, 2030);
    let client = config(Some(&elsewhere), &pki.ca, false);
    let (_, s) = failing(&client, &server, JUNE_2027_MS);
    assert!(matches!(s, TlsError::IdentityMismatch { .. }), "{s:?}");
}

#[test]
fn server_certificate_naming_another_node_is_refused_by_the_client() {
    let pki = pki();
    let impostor = pki.ca.leaf(&["atbus://game/lobby-2"], &[], 2026, 2030);
    let client = config(Some(&pki.client), &pki.ca, false);
    let server = config(Some(&impostor), &pki.ca, false);
    let (c, s) = failing(&client, &server, JUNE_2027_MS);
    assert!(matches!(c, TlsError::IdentityMismatch { .. }), "{c:?}");
    assert_eq!(s, TlsError::PeerRefused(TlsRefusal::IdentityMismatch));
}

#[test]
fn certificate_without_atbus_uri_san_is_refused() {
    let pki = pki();
    let plain = pki.ca.leaf(
        &["https://example.test/x"],
        &["lobby.example.test"],
        2026,
        2030,
    );
    let client = config(Some(&pki.client), &pki.ca, false);
    let server = config(Some(&plain), &pki.ca, false);
    let (c, s) = failing(&client, &server, JUNE_2027_MS);
    assert_eq!(c, TlsError::NoAtbusIdentity);
    assert_eq!(s, TlsError::PeerRefused(TlsRefusal::NoAtbusIdentity));
}

#[test]
fn a_certificate_may_carry_several_identities() {
    let pki = pki();
    let multi = pki.ca.leaf(
        &["atbus://game/lobby-0", "atbus://game/lobby-1"],
        &[],
        2026,
        2030,
    );
    assert_eq!(
        certificate_identities(
            &<rustls::pki_types::CertificateDer<'_> as rustls::pki_types::pem::PemObject>::pem_slice_iter(multi.cert.as_bytes())
                .next()
                .expect("one cert")
                .expect("PEM")
        ),
        vec![
            AtbusIdentity::new("game", "lobby-0"),
            AtbusIdentity::new("game", "lobby-1")
        ]
    );
    let client = config(Some(&pki.client), &pki.ca, false);
    let server = config(Some(&multi), &pki.ca, false);
    assert_eq!(
        server.identities(),
        [
            AtbusIdentity::new("game", "lobby-0"),
            AtbusIdentity::new("game", "lobby-1")
        ]
    );
    assert_eq!(
        client.identities(),
        [AtbusIdentity::new("game", "player-17")]
    );
    assert!(config(None, &pki.ca, false).identities().is_empty());
    let mut pair = Pair::new(&client, &server, TlsTransport::reliable(), JUNE_2027_MS);
    pair.run(|_, _| false);
    assert_eq!(
        pair.client.peer_identity(),
        Some(&AtbusIdentity::new("game", "lobby-1"))
    );
}

#[test]
fn silent_peer_times_out_at_the_deadline() {
    let pki = pki();
    let client = config(Some(&pki.client), &pki.ca, false);
    let start = Instant::now();
    let mut hs =
        TlsHandshake::client(&client, TlsTransport::datagram(), start, [3; 32]).expect("client");
    let mut buf = Vec::new();
    let mut sends = 0;
    let mut now = start;
    let mut alert = None;
    loop {
        while hs.poll_transmit(now, &mut buf) {
            match TlsRecord::decode(&buf).expect("own record decodes") {
                TlsRecord::Data { .. } => sends += 1,
                TlsRecord::Alert { refusal, alert: a } => alert = Some((refusal, a)),
            }
            buf.clear();
        }
        let Some(at) = hs.poll_timeout() else { break };
        now = at;
        hs.handle_timeout(now);
    }
    assert_eq!(hs.error(), Some(&TlsError::Timeout));
    assert_eq!(now - start, DEFAULT_TLS_DEADLINE);
    // Sent at 0, then after 250 ms, 500 ms and every second: a dozen times in 10 s.
    assert!((10..=13).contains(&sends), "{sends} sends");
    // The peer is told, once.
    assert_eq!(alert, Some((TlsRefusal::Timeout, 0)));
    assert!(!hs.poll_transmit(now, &mut buf));
}

#[test]
fn malformed_and_lying_records_fail_the_handshake() {
    let pki = pki();
    let server_config = config(Some(&pki.server), &pki.ca, false);
    let now = Instant::now();
    let mut server = TlsHandshake::server(&server_config, TlsTransport::reliable(), now, [4; 32])
        .expect("server");
    assert!(matches!(
        server.handle_record(now, JUNE_2027_MS, &[7, 7, 7]),
        Err(TlsError::Record(_))
    ));
    // A record acknowledging bytes the server never sent.
    let mut server = TlsHandshake::server(&server_config, TlsTransport::reliable(), now, [4; 32])
        .expect("server");
    let mut rec = Vec::new();
    TlsRecord::Data {
        level: 0,
        offset: 0,
        ack: [10, 0],
        bytes: b"x",
    }
    .encode(&mut rec);
    assert!(matches!(
        server.handle_record(now, JUNE_2027_MS, &rec),
        Err(TlsError::Record(_))
    ));
    // Garbage handshake bytes: rustls refuses them.
    let mut server = TlsHandshake::server(&server_config, TlsTransport::reliable(), now, [4; 32])
        .expect("server");
    rec.clear();
    TlsRecord::Data {
        level: 0,
        offset: 0,
        ack: [0, 0],
        bytes: &[0xff; 40],
    }
    .encode(&mut rec);
    let err = server
        .handle_record(now, JUNE_2027_MS, &rec)
        .expect_err("garbage refused");
    assert!(matches!(err, TlsError::Tls(_)), "{err:?}");
    let mut out = Vec::new();
    assert!(server.poll_transmit(now, &mut out));
    assert!(matches!(
        TlsRecord::decode(&out),
        Ok(TlsRecord::Alert {
            refusal: TlsRefusal::HandshakeFailure,
            ..
        })
    ));
    assert!(!server.poll_transmit(now, &mut out), "one alert per record");
}

#[test]
fn a_node_without_a_certificate_cannot_serve() {
    let pki = pki();
    let client_only = config(None, &pki.ca, false);
    assert!(!client_only.can_serve());
    assert_eq!(
        TlsHandshake::server(
            &client_only,
            TlsTransport::reliable(),
            Instant::now(),
            [5; 32]
        )
        .err(),
        Some(TlsError::NoServerCertificate)
    );
    assert!(matches!(
        TlsConfig::from_pem(
            Some(pki.client.cert.as_bytes()),
            None,
            pki.ca.pem.as_bytes(),
            false
        ),
        Err(TlsConfigError::CertificateWithoutKey)
    ));
    // A key that is not the certificate's.
    let other = pki.ca.leaf(&["atbus://game/x"], &[], 2026, 2030);
    assert!(matches!(
        TlsConfig::from_pem(
            Some(pki.client.cert.as_bytes()),
            Some(other.key.as_bytes()),
            pki.ca.pem.as_bytes(),
            false
        ),
        Err(TlsConfigError::Refused(_))
    ));
}

/// A datagram network between the two ends: each record is lost, delayed (so records
/// reorder) or duplicated by a seeded generator; time jumps to the next delivery or timer.
fn run_over_network(pair: &mut Pair, seed: u64, loss_pct: u64, dup_pct: u64) {
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // (delivery time, sequence, direction, record)
    let mut in_flight: Vec<(Instant, u64, usize, Vec<u8>)> = Vec::new();
    let mut seq = 0u64;
    let mut buf = Vec::new();
    for _ in 0..100_000 {
        for direction in 0..2 {
            let from = if direction == 0 {
                &mut pair.client
            } else {
                &mut pair.server
            };
            while from.poll_transmit(pair.now, &mut buf) {
                assert!(buf.len() <= DATA_HEADER_LEN + DEFAULT_DATAGRAM_RECORD_DATA);
                pair.sent[direction] += 1;
                let copies = if next() % 100 < dup_pct { 2 } else { 1 };
                for _ in 0..copies {
                    if next() % 100 < loss_pct {
                        continue;
                    }
                    let delay = Duration::from_millis(20 + next() % 60);
                    seq += 1;
                    in_flight.push((pair.now + delay, seq, direction, buf.clone()));
                }
                buf.clear();
            }
        }
        if pair.client.is_settled() && pair.server.is_complete() {
            return;
        }
        if pair.client.error().is_some() || pair.server.error().is_some() {
            return;
        }
        in_flight.sort_by_key(|(at, seq, _, _)| (*at, *seq));
        let timer = [pair.client.poll_timeout(), pair.server.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let deliver = match (in_flight.first().map(|f| f.0), timer) {
            (Some(at), Some(t)) => at <= t,
            (Some(_), None) => true,
            (None, _) => false,
        };
        match timer {
            _ if deliver => {
                let (at, _, direction, record) = in_flight.remove(0);
                pair.now = pair.now.max(at);
                let (to, error) = if direction == 0 {
                    (&mut pair.server, &mut pair.server_error)
                } else {
                    (&mut pair.client, &mut pair.client_error)
                };
                if let Err(e) = to.handle_record(pair.now, pair.unix_ms, &record) {
                    error.get_or_insert(e);
                }
            }
            Some(t) => {
                pair.now = pair.now.max(t);
                pair.client.handle_timeout(pair.now);
                pair.server.handle_timeout(pair.now);
            }
            None => return,
        }
    }
    panic!("network run did not end");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
    ))]

    /// Under loss up to 20 %, duplication and reordering, mutual TLS over datagrams always
    /// completes before the deadline with equal secrets on both sides.
    #[test]
    fn datagram_handshake_survives_loss_duplication_and_reordering(
        seed in proptest::prelude::any::<u64>(),
        loss_pct in 0u64..=20,
        dup_pct in 0u64..=20,
    ) {
        use std::sync::OnceLock;
        static CONFIGS: OnceLock<(TlsConfig, TlsConfig)> = OnceLock::new();
        let (client, server) = CONFIGS.get_or_init(|| {
            let pki = pki();
            (
                config(Some(&pki.client), &pki.ca, false),
                config(Some(&pki.server), &pki.ca, true),
            )
        });
        let mut pair = Pair::new(client, server, TlsTransport::datagram(), JUNE_2027_MS);
        let start = pair.now;
        run_over_network(&mut pair, seed, loss_pct, dup_pct);
        proptest::prop_assert_eq!(&pair.client_error, &None);
        proptest::prop_assert_eq!(&pair.server_error, &None);
        proptest::prop_assert!(pair.client.is_settled() && pair.server.is_complete());
        proptest::prop_assert!(pair.now - start < DEFAULT_TLS_DEADLINE);
        let c = pair.client.export_secrets(b"").expect("client secrets");
        let s = pair.server.export_secrets(b"").expect("server secrets");
        proptest::prop_assert_eq!(c, s);
    }
}

#[test]
fn records_over_the_level_or_record_cap_are_refused_with_their_typed_error() {
    let pki = pki();
    let server_config = config(Some(&pki.server), &pki.ca, false);
    let now = Instant::now();
    let over_level = {
        let mut rec = Vec::new();
        TlsRecord::Data {
            level: 0,
            offset: MAX_LEVEL_BYTES - 8,
            ack: [0, 0],
            bytes: &[0u8; 16],
        }
        .encode(&mut rec);
        rec
    };
    let big = vec![0u8; MAX_RECORD_DATA + 1];
    let over_record = {
        let mut rec = Vec::new();
        TlsRecord::Data {
            level: 0,
            offset: 0,
            ack: [0, 0],
            bytes: &big,
        }
        .encode(&mut rec);
        rec
    };
    let cases = [
        (&over_level, RecordError::BeyondLimit),
        (&over_record, RecordError::TooLarge(MAX_RECORD_DATA + 1)),
    ];
    for transport in [TlsTransport::reliable(), TlsTransport::datagram()] {
        for (rec, expected) in &cases {
            let mut server =
                TlsHandshake::server(&server_config, transport, now, [6; 32]).expect("server");
            let err = server
                .handle_record(now, JUNE_2027_MS, rec)
                .expect_err("over the cap");
            assert_eq!(err, TlsError::Record(expected.to_string()));
            assert_eq!(server.error(), Some(&err), "the handshake failed");
            let mut out = Vec::new();
            assert!(server.poll_transmit(now, &mut out), "the peer is told");
            assert!(matches!(
                TlsRecord::decode(&out),
                Ok(TlsRecord::Alert {
                    refusal: TlsRefusal::HandshakeFailure,
                    ..
                })
            ));
        }
    }
    // Exactly at both caps is not refused for its size: on a datagram link a full record that
    // ends at the level cap waits for the bytes before it.
    let mut server = TlsHandshake::server(&server_config, TlsTransport::datagram(), now, [7; 32])
        .expect("server");
    let full = vec![0u8; MAX_RECORD_DATA];
    let mut rec = Vec::new();
    TlsRecord::Data {
        level: 0,
        offset: MAX_LEVEL_BYTES - MAX_RECORD_DATA as u32,
        ack: [0, 0],
        bytes: &full,
    }
    .encode(&mut rec);
    assert_eq!(server.handle_record(now, JUNE_2027_MS, &rec), Ok(()));
    assert!(server.error().is_none());
}

#[test]
fn a_flight_over_the_level_cap_fails_the_sender_and_the_peer_hears_it() {
    let pki = pki();
    // A server chain of more than 64 KiB: the leaf followed by 200 copies of the CA.
    let mut chain = pki.server.cert.clone();
    for _ in 0..200 {
        chain.push_str(&pki.ca.pem);
    }
    assert!(
        chain.len() > 64 * 1024 * 4 / 3,
        "chain of {} PEM bytes",
        chain.len()
    );
    let huge = Leaf {
        cert: chain,
        key: pki.server.key.clone(),
    };
    let client = config(Some(&pki.client), &pki.ca, false);
    let server = config(Some(&huge), &pki.ca, false);
    let (client_err, server_err) = failing(&client, &server, JUNE_2027_MS);
    assert_eq!(
        server_err,
        TlsError::Tls("handshake flight too large".into())
    );
    assert_eq!(
        client_err,
        TlsError::PeerRefused(TlsRefusal::HandshakeFailure)
    );
}

/// Every record of one mutual-TLS handshake over a reliable carrier, in sending order, with
/// the given seeds.
fn recorded_handshake(
    client: &TlsConfig,
    server: &TlsConfig,
    seeds: [[u8; 32]; 2],
) -> Vec<Vec<u8>> {
    let now = Instant::now();
    let transport = TlsTransport::reliable();
    let mut c = TlsHandshake::client(client, transport, now, seeds[0]).expect("client");
    let mut s = TlsHandshake::server(server, transport, now, seeds[1]).expect("server");
    c.expect_peer(AtbusIdentity::new("game", "lobby-1"));
    s.expect_peer(AtbusIdentity::new("game", "player-17"));
    let mut records = Vec::new();
    let mut buf = Vec::new();
    for _ in 0..10 {
        while c.poll_transmit(now, &mut buf) {
            s.handle_record(now, JUNE_2027_MS, &buf)
                .expect("server reads");
            records.push(std::mem::take(&mut buf));
        }
        while s.poll_transmit(now, &mut buf) {
            c.handle_record(now, JUNE_2027_MS, &buf)
                .expect("client reads");
            records.push(std::mem::take(&mut buf));
        }
    }
    assert!(c.is_complete() && s.is_complete());
    records
}

#[test]
fn the_same_seeds_replay_a_handshake_byte_for_byte() {
    // Ed25519 signatures are deterministic; every other random byte comes from the seeds.
    let ca = Ca::with_key("atbus replay CA", super::test_certs::TestKey::Ed25519);
    let server = ca.leaf(&["atbus://game/lobby-1"], &[], 2026, 2030);
    let client = ca.leaf(&["atbus://game/player-17"], &[], 2026, 2030);
    let (client, server) = (
        config(Some(&client), &ca, true),
        config(Some(&server), &ca, true),
    );
    let first = recorded_handshake(&client, &server, [[1; 32], [2; 32]]);
    let again = recorded_handshake(&client, &server, [[1; 32], [2; 32]]);
    assert!(first.len() >= 4, "{} records", first.len());
    assert_eq!(first, again, "same seeds, same records");
    // Another seed on either side changes the records from its first flight on.
    let other_client = recorded_handshake(&client, &server, [[9; 32], [2; 32]]);
    assert_ne!(other_client[0], first[0]);
    let other_server = recorded_handshake(&client, &server, [[1; 32], [9; 32]]);
    assert_eq!(
        other_server[0], first[0],
        "the client's first flight is its own"
    );
    assert_ne!(other_server[1], first[1]);
}
