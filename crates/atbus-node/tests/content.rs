//! Content protection negotiated in the link handshake: PSK sessions sealed with the token
//! handshake's keys on every path, mode and suite mismatches refused with
//! `ENCRYPTION_MISMATCH` on both sides, compression only when both ends ask, and a node that
//! requires encryption never sending in clear to a peer it reaches through relays only.

mod common;

use std::time::{Duration, Instant};

use atbus_node::{
    CipherSuite, ConfigError, ContentPolicy, Direction, EncryptionMode, LinkKind, Node, NodeConfig,
    OutgoingMessage, capabilities,
};
use atbus_proto::{AtbusCloseReason, FrameMessage, MessageHead, PacketData, frame_message::Body};
use common::*;
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

const SECRET: &str = "a-shared-secret-of-32-bytes-long";

fn psk(name: &str) -> NodeConfig {
    let mut c = config(name, vec![token("k1", SECRET)]);
    c.content.encryption = EncryptionMode::Psk;
    c
}

/// Client (node 0) and server (node 1) linked once; whether both accepted.
fn link(client: NodeConfig, server: NodeConfig, kind: LinkKind) -> World {
    let mut w = World::new(3);
    let c = w.add_node(client);
    let s = w.add_node(server);
    let net = if kind == LinkKind::ByteStream {
        byte_link()
    } else {
        lossy_link(0.0)
    };
    w.connect(c, s, kind, net);
    w.run_until(Duration::from_secs(5), |w| {
        (w.accepted(0) == 1 && w.accepted(1) == 1)
            || !w.rejected(0).is_empty()
            || !w.rejected(1).is_empty()
    });
    w.run_for(Duration::from_millis(200));
    w
}

fn exchange_both_ways(w: &mut World, count: usize) {
    let to_server = messages(11, count, 3000);
    let to_client = messages(12, count, 3000);
    for m in &to_server {
        w.send(0, "server", 3, m.clone());
    }
    for m in &to_client {
        w.send(1, "client", 3, m.clone());
    }
    let done = w.run_until(Duration::from_secs(20), |w| {
        w.got(1, "client", 3).len() == count && w.got(0, "server", 3).len() == count
    });
    assert!(
        done,
        "client {:?} server {:?}, got {} / {}",
        w.nodes[0].session("server").map(|s| s.content_stats()),
        w.nodes[1].session("client").map(|s| s.content_stats()),
        w.got(1, "client", 3).len(),
        w.got(0, "server", 3).len()
    );
    assert_eq!(w.got(1, "client", 3), &to_server[..]);
    assert_eq!(w.got(0, "server", 3), &to_client[..]);
}

#[test]
fn psk_sessions_are_sealed_both_ways_with_the_handshake_keys() {
    for kind in [LinkKind::ByteStream, LinkKind::Datagram] {
        let mut w = link(psk("client"), psk("server"), kind);
        assert!(w.rejected(0).is_empty() && w.rejected(1).is_empty());
        exchange_both_ways(&mut w, 40);
        for (n, peer) in [(0, "server"), (1, "client")] {
            let s = w.nodes[n].session(peer).expect("session");
            assert!(s.is_encrypted(), "{kind:?}: node {n} not encrypted");
            let stats = s.content_stats();
            assert!(
                stats.packets_encoded >= 1 && stats.packets_opened >= 1,
                "{stats:?}"
            );
            assert_eq!(stats.dropped_bad_tag + stats.dropped_refused, 0);
        }
        assert_eq!(
            w.nodes[0].peer_session_keys("server"),
            w.nodes[1].peer_session_keys("client")
        );
    }
}

#[test]
fn plain_sessions_stay_plain() {
    let mut w = link(
        config("client", vec![]),
        config("server", vec![]),
        LinkKind::ByteStream,
    );
    exchange_both_ways(&mut w, 10);
    let s = w.nodes[0].session("server").expect("session");
    assert!(!s.is_encrypted());
    assert_eq!(s.content_stats(), Default::default());
}

#[test]
fn a_second_link_joins_the_session_and_both_ends_keep_one_key_set() {
    let mut w = World::new(5);
    let c = w.add_node(psk("client"));
    let s = w.add_node(psk("server"));
    w.connect(c, s, LinkKind::ByteStream, byte_link());
    w.connect(c, s, LinkKind::Datagram, lossy_link(0.02));
    assert!(w.run_until(Duration::from_secs(5), |w| w.accepted(0) == 2
        && w.accepted(1) == 2));
    exchange_both_ways(&mut w, 60);
    let (kc, ks) = (
        w.nodes[0].peer_session_keys("server").cloned(),
        w.nodes[1].peer_session_keys("client").cloned(),
    );
    assert!(kc.is_some());
    assert_eq!(kc, ks, "both ends chose the same link's keys");
    // Kill the first link: the session goes on over the second with one key set.
    w.kill_link(0);
    let more = messages(13, 20, 1000);
    for m in &more {
        w.send(0, "server", 4, m.clone());
    }
    assert!(
        w.run_until(Duration::from_secs(20), |w| w.got(1, "client", 4).len()
            == 20)
    );
    assert_eq!(w.got(1, "client", 4), &more[..]);
    assert_eq!(
        w.nodes[0].peer_session_keys("server"),
        w.nodes[1].peer_session_keys("client")
    );
}

#[test]
fn mismatched_modes_are_refused_on_both_sides_with_a_clear_reason() {
    for (client, server) in [
        (psk("client"), config("server", vec![token("k1", SECRET)])),
        (config("client", vec![token("k1", SECRET)]), psk("server")),
    ] {
        let w = link(client, server, LinkKind::ByteStream);
        assert_eq!(w.accepted(0) + w.accepted(1), 0);
        for n in [0, 1] {
            let r = w.rejected(n);
            assert_eq!(r.len(), 1, "node {n}: {:?}", w.events[n]);
            assert_eq!(
                r[0].code,
                AtbusCloseReason::EncryptionMismatch,
                "{:?}",
                r[0]
            );
            assert!(
                r[0].message.contains("encryption-mismatch"),
                "{}",
                r[0].message
            );
            assert!(
                r[0].message.contains("psk") && r[0].message.contains("none"),
                "{}",
                r[0].message
            );
        }
    }
}

#[test]
fn no_common_cipher_suite_is_refused() {
    let mut client = psk("client");
    client.content.cipher_suites = vec![CipherSuite::Aes256Gcm];
    let mut server = psk("server");
    server.content.cipher_suites = vec![CipherSuite::ChaCha20Poly1305];
    let w = link(client, server, LinkKind::ByteStream);
    let r = w.rejected(1);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].code, AtbusCloseReason::EncryptionMismatch);
    assert!(r[0].message.contains("cipher suite"), "{}", r[0].message);
}

#[test]
fn the_suite_is_the_clients_first_that_the_server_accepts() {
    let mut client = psk("client");
    client.content.cipher_suites = vec![CipherSuite::Aes256Gcm, CipherSuite::ChaCha20Poly1305];
    let mut w = link(client, psk("server"), LinkKind::ByteStream);
    exchange_both_ways(&mut w, 5);
    assert_eq!(
        atbus_node::content::choose_suite(&[2, 1], &[1, 2]),
        Some(CipherSuite::Aes256Gcm)
    );
    assert_eq!(atbus_node::content::choose_suite(&[2], &[1]), None);
}

#[test]
fn compression_only_when_both_ends_ask() {
    for (a, b, expect) in [
        (true, true, true),
        (true, false, false),
        (false, true, false),
    ] {
        let mut client = config("client", vec![]);
        client.content.compression = a;
        let mut server = config("server", vec![]);
        server.content.compression = b;
        let mut w = link(client, server, LinkKind::ByteStream);
        // Repetitive messages above the threshold.
        let text = bytes::Bytes::from("abcdefgh".repeat(200));
        for _ in 0..5 {
            w.send(0, "server", 3, text.clone());
        }
        assert!(w.run_until(Duration::from_secs(5), |w| w.got(1, "client", 3).len() == 5));
        let compressed = w.nodes[0]
            .session("server")
            .expect("session")
            .content_stats()
            .packets_compressed;
        assert_eq!(
            compressed > 0,
            expect,
            "client {a} server {b}: {compressed}"
        );
    }
}

#[test]
fn psk_needs_token_authentication() {
    let now = Instant::now();
    let mut c = NodeConfig::new("solo");
    c.content.encryption = EncryptionMode::Psk;
    let err = Node::new(c, now, ChaCha20Rng::seed_from_u64(1)).err();
    assert!(
        matches!(&err, Some(ConfigError::Content(m)) if m.contains("token handshake")),
        "{err:?}"
    );
    let mut c = config("solo", vec![token("k1", SECRET)]);
    c.content.encryption = EncryptionMode::Tls;
    let err = Node::new(c, now, ChaCha20Rng::seed_from_u64(1)).err();
    assert!(
        matches!(&err, Some(ConfigError::Content(m)) if m.contains("needs a TLS configuration")),
        "{err:?}"
    );
    let mut c = config("solo", vec![token("k1", SECRET)]);
    c.content = ContentPolicy {
        encryption: EncryptionMode::Psk,
        cipher_suites: vec![],
        ..ContentPolicy::default()
    };
    assert!(Node::new(c, now, ChaCha20Rng::seed_from_u64(1)).is_err());
}

#[test]
fn a_relayed_only_peer_gets_no_clear_content_from_an_encrypted_node() {
    let now = Instant::now();
    let mut ca = psk("a");
    ca.relays = vec!["relay".into()];
    let mut a = Node::new(ca, now, ChaCha20Rng::seed_from_u64(1)).expect("node a");
    let mut cr = config("relay", vec![token("k1", SECRET)]);
    cr.capabilities |= capabilities::RELAY;
    let mut r = Node::new(cr, now, ChaCha20Rng::seed_from_u64(2)).expect("relay");
    let (la, lr) = (a.new_link_id(), r.new_link_id());
    a.handle_link_up(now, la, LinkKind::ByteStream, 65536, Direction::Outbound);
    r.handle_link_up(now, lr, LinkKind::ByteStream, 65536, Direction::Inbound);
    let mut buf = Vec::new();
    for _ in 0..4 {
        while let Some((_, n)) = a.poll_transmit(now, &mut buf) {
            r.handle_link_bytes(now, lr, &buf[..n]);
        }
        while let Some((_, n)) = r.poll_transmit(now, &mut buf) {
            a.handle_link_bytes(now, la, &buf[..n]);
        }
    }
    assert!(r.is_router(), "relay link up");
    a.route_via_relay(now, "x", "relay").expect("route");
    // No keys yet: the message waits in the session (no path before the end-to-end handshake
    // made keys) and nothing leaves in clear.
    a.send("x", 1, OutgoingMessage::data(&b"secret-plaintext"[..]))
        .expect("queued until the session has keys");
    for _ in 0..4 {
        while let Some((_, n)) = a.poll_transmit(now, &mut buf) {
            assert!(
                !buf[..n].windows(16).any(|w| w == b"secret-plaintext"),
                "content left in clear before the session had keys"
            );
            r.handle_link_bytes(now, lr, &buf[..n]);
        }
        while let Some((_, n)) = r.poll_transmit(now, &mut buf) {
            a.handle_link_bytes(now, la, &buf[..n]);
        }
    }
    // Content from "x" in clear through the relay is not taken either.
    let packet = FrameMessage {
        head: Some(MessageHead {
            source: "x".into(),
            destination: "a".into(),
            forward_for_source: "x".into(),
            forward_for_connection_id: 3,
            hop_count: 1,
        }),
        body: Some(Body::Packet(PacketData {
            stream_id: 1,
            content: atbus_proto::PacketContent {
                fragment: vec![atbus_proto::packet_content::FragmentType {
                    data: bytes::Bytes::from_static(b"in clear"),
                    ..Default::default()
                }],
            }
            .encode_to_vec()
            .into(),
            ..PacketData::default()
        })),
    };
    let mut wire = Vec::new();
    atbus_frame::encode(&packet, &atbus_frame::FrameLimits::default(), &mut wire).expect("encode");
    a.handle_link_bytes(now, la, &wire);
    assert!(a.read("x", 1).is_none(), "clear relayed content delivered");
}

use prost::Message as _;
