//! Link handshake and authentication between nodes over simulated links.

mod common;

use std::time::Duration;

use atbus_netsim::for_each_seed;
use atbus_node::{LinkKind, NodeEvent};
use atbus_proto::AtbusCloseReason;
use common::*;

/// Handshake, then messages both ways; returns the world for further checks.
fn exchange(client: atbus_node::NodeConfig, server: atbus_node::NodeConfig, seed: u64) -> World {
    let mut w = World::new(seed);
    let c = w.add_node(client);
    let s = w.add_node(server);
    w.connect(c, s, LinkKind::ByteStream, byte_link());
    assert!(
        w.run_until(Duration::from_secs(5), |w| w.accepted(0) == 1
            && w.accepted(1) == 1),
        "handshake did not finish: {:?} / {:?}",
        w.events[0],
        w.events[1]
    );
    let up: Vec<_> = w.events[0]
        .iter()
        .filter_map(|e| match e {
            NodeEvent::PeerUp { peer, incarnation } => Some((peer.clone(), *incarnation)),
            _ => None,
        })
        .collect();
    assert_eq!(up, vec![("server".to_owned(), w.nodes[s].incarnation())]);
    let to_server = messages(seed, 50, 3000);
    let to_client = messages(seed + 1, 50, 3000);
    for m in &to_server {
        w.send(c, "server", 3, m.clone());
    }
    for m in &to_client {
        w.send(s, "client", 3, m.clone());
    }
    assert!(w.run_until(Duration::from_secs(10), |w| {
        w.got(1, "client", 3).len() == 50 && w.got(0, "server", 3).len() == 50
    }));
    assert_eq!(w.got(1, "client", 3), &to_server[..]);
    assert_eq!(w.got(0, "server", 3), &to_client[..]);
    assert!(w.rejected(0).is_empty() && w.rejected(1).is_empty());
    w
}

#[test]
fn open_links_exchange_messages_both_ways() {
    let w = exchange(config("client", vec![]), config("server", vec![]), 1);
    assert!(
        w.nodes[0].peer_session_keys("server").is_none(),
        "open link has no keys"
    );
}

#[test]
fn matching_tokens_exchange_messages_and_derive_the_same_keys() {
    let t = token("k1", "a-shared-secret-of-32-bytes-long");
    let w = exchange(
        config("client", vec![t.clone()]),
        config("server", vec![t]),
        2,
    );
    let kc = w.nodes[0].peer_session_keys("server").expect("client keys");
    let ks = w.nodes[1].peer_session_keys("client").expect("server keys");
    assert_eq!(kc, ks, "both sides derive the same session keys");
}

#[test]
fn token_rotation_server_accepts_old_and_new() {
    let old = token("2024-old", "old-secret-0123456789abcdef");
    let new = token("2025-new", "new-secret-0123456789abcdef");
    let server = || config("server", vec![new.clone(), old.clone()]);
    exchange(config("client", vec![old.clone()]), server(), 3);
    exchange(config("client", vec![new.clone()]), server(), 4);
}

fn rejected_both_sides(
    client: atbus_node::NodeConfig,
    server: atbus_node::NodeConfig,
    code: AtbusCloseReason,
) -> World {
    let mut w = World::new(9);
    let c = w.add_node(client);
    let s = w.add_node(server);
    w.connect(c, s, LinkKind::ByteStream, byte_link());
    assert!(
        w.run_until(Duration::from_secs(5), |w| !w.rejected(0).is_empty()
            && !w.rejected(1).is_empty()),
        "not rejected on both sides: {:?} / {:?}",
        w.events[0],
        w.events[1]
    );
    w.run_for(Duration::from_secs(1));
    for n in [c, s] {
        let r = w.rejected(n);
        assert_eq!(r.len(), 1, "node {n}: {r:?}");
        assert_eq!(r[0].code, code, "node {n}: {r:?}");
        assert!(!r[0].message.is_empty());
        assert_eq!(w.accepted(n), 0);
        assert_eq!(w.nodes[n].peers().count(), 0);
    }
    // Exactly one side decided; the other heard it from the peer.
    assert_ne!(w.rejected(c)[0].by_peer, w.rejected(s)[0].by_peer);
    w
}

#[test]
fn wrong_token_is_rejected_on_both_sides() {
    let w = rejected_both_sides(
        config("client", vec![token("k1", "the-client-secret-123")]),
        config("server", vec![token("k1", "the-server-secret-456")]),
        AtbusCloseReason::AuthFailed,
    );
    // The client found the server's proof wrong (it checks first).
    assert!(
        w.rejected(0)[0].message.contains("does not verify"),
        "{:?}",
        w.rejected(0)
    );
}

#[test]
fn unknown_key_id_is_rejected_on_both_sides() {
    rejected_both_sides(
        config("client", vec![token("k9", "the-client-secret-123")]),
        config("server", vec![token("k1", "the-client-secret-123")]),
        AtbusCloseReason::AuthFailed,
    );
}

#[test]
fn token_on_one_side_only_is_rejected() {
    rejected_both_sides(
        config("client", vec![token("k1", "the-client-secret-123")]),
        config("server", vec![]),
        AtbusCloseReason::AuthFailed,
    );
    rejected_both_sides(
        config("client", vec![]),
        config("server", vec![token("k1", "the-client-secret-123")]),
        AtbusCloseReason::AuthFailed,
    );
}

#[test]
fn version_mismatch_is_rejected() {
    let mut client = config("client", vec![]);
    client.protocol_version = 2;
    let w = rejected_both_sides(
        client,
        config("server", vec![]),
        AtbusCloseReason::UnsupportedVersion,
    );
    assert!(
        w.rejected(1)[0].message.contains("version 2"),
        "{:?}",
        w.rejected(1)
    );
}

#[test]
fn self_connection_is_rejected() {
    let mut w = World::new(5);
    let a = w.add_node(config("node-a", vec![]));
    // One node, both ends of the link.
    let la = w.nodes[a].new_link_id();
    let lb = w.nodes[a].new_link_id();
    let now = w.clock.now();
    w.nodes[a].handle_link_up(
        now,
        la,
        LinkKind::InProcess,
        65536,
        atbus_node::Direction::Outbound,
    );
    w.nodes[a].handle_link_up(
        now,
        lb,
        LinkKind::InProcess,
        65536,
        atbus_node::Direction::Inbound,
    );
    let mut buf = Vec::new();
    let (link, n) = w.nodes[a].poll_transmit(now, &mut buf).expect("hello");
    assert_eq!(link, la);
    w.nodes[a].handle_datagram(now, lb, bytes::Bytes::copy_from_slice(&buf[..n]));
    let r: Vec<_> = std::iter::from_fn(|| w.nodes[a].poll_event()).collect();
    assert!(
        r.iter()
            .any(|e| matches!(e, NodeEvent::LinkRejected { link, reason }
            if *link == lb && reason.code == AtbusCloseReason::ProtocolError
                && reason.message.contains("self-connection"))),
        "{r:?}"
    );
}

#[test]
fn handshake_completes_over_a_lossy_datagram_link() {
    for_each_seed(12, |seed| {
        let mut w = World::new(seed);
        let t = token("k1", "a-shared-secret-of-32-bytes-long");
        let c = w.add_node(config("client", vec![t.clone()]));
        let s = w.add_node(config("server", vec![t]));
        let l = w.connect(c, s, LinkKind::Datagram, lossy_link(0.3));
        assert!(
            w.run_until(Duration::from_secs(9), |w| w.accepted(0) == 1
                && w.accepted(1) == 1),
            "seed {seed}: {:?} / {:?}",
            w.events[0],
            w.events[1]
        );
        let stats = w.links[l].net.a_to_b.stats();
        assert!(stats.sent >= 2, "hello and confirm");
        // Traffic flows on the datagram path too.
        let msgs = messages(seed, 20, 1500);
        for m in &msgs {
            w.send(c, "server", 1, m.clone());
        }
        assert!(
            w.run_until(Duration::from_secs(30), |w| w.got(1, "client", 1).len()
                == 20),
            "seed {seed}"
        );
        assert_eq!(w.got(1, "client", 1), &msgs[..]);
    });
}

#[test]
fn lossy_handshakes_retransmit() {
    // At 30% loss over 12 seeds some hello or confirm must have been sent more than once.
    let mut retransmitted = false;
    for seed in 0..12 {
        let mut w = World::new(seed);
        let c = w.add_node(config("client", vec![]));
        let s = w.add_node(config("server", vec![]));
        let l = w.connect(c, s, LinkKind::Datagram, lossy_link(0.3));
        assert!(
            w.run_until(Duration::from_secs(9), |w| w.accepted(0) == 1),
            "seed {seed}"
        );
        retransmitted |= w.links[l].net.a_to_b.stats().sent > 2;
    }
    assert!(retransmitted);
}

#[test]
fn handshake_times_out_without_answer() {
    let mut w = World::new(3);
    let c = w.add_node(config("client", vec![]));
    let s = w.add_node(config("server", vec![]));
    let l = w.connect(c, s, LinkKind::Datagram, lossy_link(1.0));
    w.run_for(Duration::from_secs(12));
    let r = w.rejected(c);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].code, AtbusCloseReason::IdleTimeout);
    assert!(
        w.links[l].net.a_to_b.stats().sent >= 4,
        "hello retransmitted with backoff"
    );
}

#[test]
fn invalid_names_are_refused_by_config() {
    let now = std::time::Instant::now();
    let rng = <rand_chacha::ChaCha20Rng as rand_chacha::rand_core::SeedableRng>::seed_from_u64(1);
    let err = atbus_node::Node::new(atbus_node::NodeConfig::new("Bad_Name"), now, rng);
    assert!(matches!(err, Err(atbus_node::ConfigError::Name(_))));
}

#[test]
fn handshakes_in_flight_are_bounded() {
    let mut w = World::new(4);
    let mut server = config("server", vec![]);
    server.limits.max_handshakes_in_flight = 2;
    let s = w.add_node(server);
    let now = w.clock.now();
    for _ in 0..5 {
        let l = w.nodes[s].new_link_id();
        w.nodes[s].handle_link_up(
            now,
            l,
            LinkKind::ByteStream,
            65536,
            atbus_node::Direction::Inbound,
        );
    }
    let rejected: Vec<_> = std::iter::from_fn(|| w.nodes[s].poll_event())
        .filter(|e| {
            matches!(e, NodeEvent::LinkRejected { reason, .. }
            if reason.code == AtbusCloseReason::LimitExceeded)
        })
        .collect();
    assert_eq!(rejected.len(), 3);
}
