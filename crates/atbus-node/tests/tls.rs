//! Encryption mode `tls` in the link handshake, over simulated links: a TLS 1.3 handshake runs
//! between `hello_reply` and `confirm`, both ends seal the session with the exported keys (equal
//! on both sides), lossy datagram links complete, and each certificate failure closes the link
//! with `AUTH_FAILED` and a distinct reason on both sides. Certificates are made at test time.

mod common;

use std::time::Duration;

use atbus_auth::tls::TlsConfig;
use atbus_auth::tls::test_certs::{TestCa, TestLeaf};
use atbus_node::{ConfigError, EncryptionMode, LinkKind, Node, NodeConfig};
use atbus_proto::AtbusCloseReason;
use common::*;
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

/// The simulated wall clock (`common::sim::advance`): November 2023.
const SIM_UNIX_MS: i64 = 1_700_000_000_000;

fn tls_config(leaf: Option<&TestLeaf>, ca: &TestCa, mtls: bool) -> TlsConfig {
    TlsConfig::from_pem(
        leaf.map(|l| l.cert.as_bytes()),
        leaf.map(|l| l.key.as_bytes()),
        ca.pem.as_bytes(),
        mtls,
    )
    .expect("TLS config")
}

fn tls_node(name: &str, tls: TlsConfig) -> NodeConfig {
    let mut c = config(name, vec![]);
    c.content.encryption = EncryptionMode::Tls;
    c.tls = Some(tls);
    c
}

/// A CA with a certificate for `client` and one for `server`.
struct Pki {
    ca: TestCa,
    client: TestLeaf,
    server: TestLeaf,
}

fn pki() -> Pki {
    let ca = TestCa::new("atbus node test CA");
    let client = ca.node("", "client");
    let server = ca.node("", "server");
    Pki { ca, client, server }
}

/// Client (node 0) and server (node 1) linked once, run until both accepted or one refused.
fn link(client: NodeConfig, server: NodeConfig, kind: LinkKind, seed: u64, loss: f64) -> World {
    let mut w = World::new(seed);
    let c = w.add_node(client);
    let s = w.add_node(server);
    for n in [c, s] {
        w.nodes[n].set_unix_time(SIM_UNIX_MS);
    }
    let net = if kind == LinkKind::ByteStream {
        byte_link()
    } else {
        lossy_link(loss)
    };
    w.connect(c, s, kind, net);
    w.run_until(Duration::from_secs(12), |w| {
        (w.accepted(0) == 1 && w.accepted(1) == 1)
            || (!w.rejected(0).is_empty() && !w.rejected(1).is_empty())
    });
    w.run_for(Duration::from_millis(300));
    w
}

fn exchange(w: &mut World, count: usize) {
    let up = messages(21, count, 2000);
    let down = messages(22, count, 2000);
    for m in &up {
        w.send(0, "server", 5, m.clone());
    }
    for m in &down {
        w.send(1, "client", 5, m.clone());
    }
    assert!(w.run_until(Duration::from_secs(30), |w| {
        w.got(1, "client", 5).len() == count && w.got(0, "server", 5).len() == count
    }));
    assert_eq!(w.got(1, "client", 5), &up[..]);
    assert_eq!(w.got(0, "server", 5), &down[..]);
}

fn assert_sealed_with_equal_keys(w: &World) {
    let kc = w.nodes[0].peer_session_keys("server").expect("client keys");
    let ks = w.nodes[1].peer_session_keys("client").expect("server keys");
    assert_eq!(kc, ks, "both ends export the same keys");
    assert_ne!(kc.client_to_server, kc.server_to_client);
    for (n, peer) in [(0, "server"), (1, "client")] {
        let s = w.nodes[n].session(peer).expect("session");
        assert!(s.is_encrypted(), "node {n} does not seal");
        let stats = s.content_stats();
        assert!(
            stats.packets_encoded > 0 && stats.packets_opened > 0,
            "{stats:?}"
        );
        assert_eq!(
            stats.dropped_bad_tag + stats.dropped_refused,
            0,
            "{stats:?}"
        );
    }
}

#[test]
fn mutual_tls_sessions_seal_with_the_exported_keys_on_streams_and_datagrams() {
    let p = pki();
    for kind in [LinkKind::ByteStream, LinkKind::Datagram] {
        let mut w = link(
            tls_node("client", tls_config(Some(&p.client), &p.ca, false)),
            tls_node("server", tls_config(Some(&p.server), &p.ca, true)),
            kind,
            7,
            0.0,
        );
        assert!(w.rejected(0).is_empty(), "{kind:?}: {:?}", w.rejected(0));
        assert!(w.rejected(1).is_empty(), "{kind:?}: {:?}", w.rejected(1));
        exchange(&mut w, 30);
        assert_sealed_with_equal_keys(&w);
    }
}

#[test]
fn tls_completes_over_lossy_datagram_links() {
    let p = pki();
    let (client, server) = (
        tls_config(Some(&p.client), &p.ca, false),
        tls_config(Some(&p.server), &p.ca, true),
    );
    for seed in 1..=6 {
        let mut w = link(
            tls_node("client", client.clone()),
            tls_node("server", server.clone()),
            LinkKind::Datagram,
            seed,
            0.2,
        );
        assert_eq!(
            (w.accepted(0), w.accepted(1)),
            (1, 1),
            "seed {seed}: {:?} / {:?}",
            w.rejected(0),
            w.rejected(1)
        );
        exchange(&mut w, 10);
        assert_sealed_with_equal_keys(&w);
    }
}

#[test]
fn a_client_without_a_certificate_is_served_unless_mutual_tls_is_required() {
    let p = pki();
    let mut w = link(
        tls_node("client", tls_config(None, &p.ca, false)),
        tls_node("server", tls_config(Some(&p.server), &p.ca, false)),
        LinkKind::ByteStream,
        3,
        0.0,
    );
    assert_eq!((w.accepted(0), w.accepted(1)), (1, 1));
    exchange(&mut w, 5);
    assert_sealed_with_equal_keys(&w);
}

/// Runs a handshake expected to fail and returns the close messages of (client, server).
fn refused(client: NodeConfig, server: NodeConfig, kind: LinkKind) -> (String, String) {
    let w = link(client, server, kind, 9, 0.0);
    assert_eq!((w.accepted(0), w.accepted(1)), (0, 0));
    let (c, s) = (w.rejected(0), w.rejected(1));
    assert!(!c.is_empty(), "client saw no refusal");
    assert!(!s.is_empty(), "server saw no refusal");
    for r in [&c[0], &s[0]] {
        assert_eq!(r.code, AtbusCloseReason::AuthFailed, "{r}");
        assert!(!r.by_peer, "each side reports its own reason: {r}");
    }
    (c[0].message.clone(), s[0].message.clone())
}

#[test]
fn certificate_failures_close_the_link_with_a_distinct_reason_on_both_sides() {
    let p = pki();
    let other = TestCa::new("another CA");
    let stranger = other.node("", "server");
    let expired = p.ca.leaf(&["atbus:///server"], &[], 2019, 2022);
    let wrong_name = p.ca.node("", "someone-else");
    let cases: Vec<(&str, NodeConfig, NodeConfig, &str, &str)> = vec![
        (
            "wrong CA",
            tls_node("client", tls_config(Some(&p.client), &p.ca, false)),
            tls_node("server", tls_config(Some(&stranger), &p.ca, false)),
            "tls-unknown-issuer",
            "tls-peer-unknown-issuer",
        ),
        (
            "expired",
            tls_node("client", tls_config(Some(&p.client), &p.ca, false)),
            tls_node("server", tls_config(Some(&expired), &p.ca, false)),
            "tls-certificate-expired",
            "tls-peer-certificate-expired",
        ),
        (
            "mutual TLS without a client certificate",
            tls_node("client", tls_config(None, &p.ca, false)),
            tls_node("server", tls_config(Some(&p.server), &p.ca, true)),
            "tls-peer-client-certificate-required",
            "tls-client-certificate-required",
        ),
        (
            "server certificate naming another node",
            tls_node("client", tls_config(Some(&p.client), &p.ca, false)),
            tls_node("server", tls_config(Some(&wrong_name), &p.ca, false)),
            "tls-identity-mismatch",
            "tls-peer-identity-mismatch",
        ),
        (
            "client certificate naming another node",
            tls_node("client", tls_config(Some(&wrong_name), &p.ca, false)),
            tls_node("server", tls_config(Some(&p.server), &p.ca, true)),
            "tls-peer-identity-mismatch",
            "tls-identity-mismatch",
        ),
    ];
    for kind in [LinkKind::ByteStream, LinkKind::Datagram] {
        for (what, client, server, c_code, s_code) in cases.iter().cloned() {
            let (c, s) = refused(client, server, kind);
            assert!(c.starts_with(c_code), "{what} {kind:?}: client says {c}");
            assert!(s.starts_with(s_code), "{what} {kind:?}: server says {s}");
        }
    }
}

#[test]
fn mode_tls_needs_a_tls_configuration_and_a_certificate_to_serve() {
    let mut c = config("lonely", vec![]);
    c.content.encryption = EncryptionMode::Tls;
    let err = Node::new(c, std::time::Instant::now(), ChaCha20Rng::seed_from_u64(1))
        .expect_err("no TLS configuration");
    assert!(matches!(err, ConfigError::Content(ref m) if m.contains("TLS configuration")));
    // A node without a certificate connects, but cannot accept TLS links.
    let p = pki();
    let w = link(
        tls_node("client", tls_config(Some(&p.client), &p.ca, false)),
        tls_node("server", tls_config(None, &p.ca, false)),
        LinkKind::ByteStream,
        4,
        0.0,
    );
    assert_eq!((w.accepted(0), w.accepted(1)), (0, 0));
    let s = w.rejected(1);
    assert!(
        s.first()
            .is_some_and(|r| r.code == AtbusCloseReason::AuthFailed
                && r.message.starts_with("tls-handshake-failure")),
        "{s:?}"
    );
    let c = w.rejected(0);
    assert!(
        c.first()
            .is_some_and(|r| r.by_peer && r.message.starts_with("tls-handshake-failure")),
        "{c:?}"
    );
}
