//! Property: whatever order first flights are replayed in, and however the server's clock moves
//! (within and beyond the freshness window), no 0-RTT early message is delivered twice, and a
//! flight delivered once was delivered the first time it was seen inside the window.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use atbus_node::atbus_auth::{StreamSet, TokenClaims, TokenKey, TokenKeyring};
use atbus_node::{AuthMode, Direction, LinkKind, Node, NodeConfig, NodeEvent, SignedToken};
use bytes::Bytes;
use proptest::prelude::*;
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

const SECRET: &[u8] = b"token-signing-secret-0123456789ab";
const T0_MS: i64 = 1_800_000_000_000;
const WINDOW_MS: i64 = 10_000;

fn ring() -> TokenKeyring {
    let mut r = TokenKeyring::new();
    r.insert(TokenKey::new("k1", SECRET.to_vec()).unwrap())
        .unwrap();
    r
}

/// The first flight of a client that sends `message` as early data at Unix time `at_ms`.
fn first_flight(i: u64, at_ms: i64, message: &[u8]) -> Vec<u8> {
    let issued = ring()
        .issue(&TokenClaims {
            name: "client".into(),
            namespace: String::new(),
            streams: StreamSet::parse("1").unwrap(),
            issued_at: (T0_MS / 1000) as u64 - 10,
            expires_at: (T0_MS / 1000) as u64 + 3600,
            nonce: [1; 16],
        })
        .unwrap();
    let mut config = NodeConfig::new("client");
    config.signed_token = Some(SignedToken::new(issued.bytes, issued.holder_secret.0).unwrap());
    config.auth = Some(AuthMode::ZeroRtt);
    let now = Instant::now();
    let mut client = Node::new(config, now, ChaCha20Rng::seed_from_u64(100 + i)).unwrap();
    client.set_unix_time(at_ms);
    let link = client.new_link_id();
    client
        .send_early(link, "server", 1, Bytes::copy_from_slice(message))
        .unwrap();
    client.handle_link_up(now, link, LinkKind::ByteStream, 65536, Direction::Outbound);
    let mut buf = Vec::new();
    let (_, n) = client.poll_transmit(now, &mut buf).unwrap();
    buf[..n].to_vec()
}

/// Feeds the flights (stamped `T0 + stamps[i]`, carrying "m<i>") to one server as `script`
/// says: (which flight, how far the clock moves first). Returns how often each message was
/// delivered; fails if one was accepted outside the window or before the warm-up.
fn run(stamps: &[i64], script: &[(usize, i64)]) -> Result<BTreeMap<Bytes, usize>, TestCaseError> {
    let mut config = NodeConfig::new("server");
    config.auth = Some(AuthMode::ZeroRtt);
    config.token_keyring = Some(ring());
    let start = Instant::now();
    let mut server = Node::new(config, start, ChaCha20Rng::seed_from_u64(7)).unwrap();
    server.set_unix_time(T0_MS);
    let flights: Vec<(i64, Vec<u8>)> = stamps
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let at = T0_MS + s;
            (at, first_flight(i as u64, at, format!("m{i}").as_bytes()))
        })
        .collect();
    let mut now_ms = T0_MS;
    let mut delivered: BTreeMap<Bytes, usize> = BTreeMap::new();
    for &(pick, step) in script {
        now_ms += step;
        server.set_unix_time(now_ms);
        let (stamp, flight) = &flights[pick % flights.len()];
        let now = start + Duration::from_millis((now_ms - T0_MS) as u64);
        let link = server.new_link_id();
        server.handle_link_up(now, link, LinkKind::ByteStream, 65536, Direction::Inbound);
        server.handle_link_bytes(now, link, flight);
        let mut got = false;
        while let Some(e) = server.poll_event() {
            if let NodeEvent::EarlyData { data, .. } = e {
                *delivered.entry(data).or_default() += 1;
                got = true;
            }
        }
        if got {
            prop_assert!((now_ms - stamp).abs() <= WINDOW_MS);
            prop_assert!(*stamp > T0_MS + WINDOW_MS && now_ms >= T0_MS + WINDOW_MS);
        }
        let mut buf = Vec::new();
        while server.poll_transmit(now, &mut buf).is_some() {}
    }
    Ok(delivered)
}

#[test]
fn a_fresh_flight_is_delivered_once_and_its_replays_never() {
    let delivered = run(&[15_000], &[(0, 15_000), (0, 100), (0, 5_000), (0, 20_000)]).unwrap();
    assert_eq!(delivered.get(&Bytes::from_static(b"m0")), Some(&1));
    // Before the warm-up nothing is delivered.
    assert!(run(&[5_000], &[(0, 5_000), (0, 100)]).unwrap().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn early_data_is_delivered_at_most_once(
        stamps in prop::collection::vec(0i64..40_000, 1..5),
        script in prop::collection::vec((0usize..5, 0i64..6_000), 1..24),
    ) {
        for (message, n) in run(&stamps, &script)? {
            prop_assert_eq!(n, 1, "{:?} delivered {} times", message, n);
        }
    }
}
