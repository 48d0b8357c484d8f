//! The end-to-end handshake of sessions that run only through a relay, in virtual time over
//! `atbus-netsim` links with fixed seeds: the true incarnation, keys on both ends, restarts and
//! name reuse behind the relay, a wrong token refused on both ends, recovery when the relayed
//! path loses handshake frames, and the bound on handshakes in flight. The harness checks that
//! the relay forwards every handshake frame with its body unchanged. The seed is in every
//! failure message.

mod common;

use std::time::Duration;

use atbus_node::{AccessToken, LinkKind, NodeEvent, UndeliverableReason};
use atbus_proto::{AtbusCloseReason, frame_message::Body, relayed_handshake_data::Step};
use common::{Actor, World, byte_link, lossy_link, messages, node_config, relay_config};

const SECRET_1: &[u8] = b"relayed-secret-number-one";
const SECRET_2: &[u8] = b"relayed-secret-number-two";

fn node(w: &World, n: usize) -> &atbus_node::Node {
    match &w.actors[n] {
        Actor::Node(node) => node,
        Actor::Relay(_) => panic!("actor {n} is a relay"),
    }
}

fn peer_up(w: &World, n: usize, peer: &str) -> Option<i64> {
    w.events[n].iter().find_map(|e| match e {
        NodeEvent::PeerUp {
            peer: p,
            incarnation,
        } if p == peer => Some(*incarnation),
        _ => None,
    })
}

fn last_peer_up(w: &World, n: usize, peer: &str) -> Option<i64> {
    w.events[n].iter().rev().find_map(|e| match e {
        NodeEvent::PeerUp {
            peer: p,
            incarnation,
        } if p == peer => Some(*incarnation),
        _ => None,
    })
}

fn failures(w: &World, n: usize) -> Vec<(String, atbus_node::LinkCloseReason)> {
    w.events[n]
        .iter()
        .filter_map(|e| match e {
            NodeEvent::RelayedHandshakeFailed { peer, reason, .. } => {
                Some((peer.clone(), reason.clone()))
            }
            _ => None,
        })
        .collect()
}

fn undeliverable(w: &World, n: usize, reason: UndeliverableReason) -> usize {
    w.events[n]
        .iter()
        .filter(|e| matches!(e, NodeEvent::Undeliverable { reason: r, .. } if *r == reason))
        .count()
}

/// Relayed hellos (and replies) actor `n` received from `from`.
fn handshake_steps_seen(w: &World, n: usize, from: &str, reply: bool) -> usize {
    w.seen[n]
        .iter()
        .filter(|s| {
            s.head.source == from
                && matches!(&s.body, Some(Body::RelayedHandshake(d)) if match d.step {
                    Some(Step::Hello(_)) => !reply,
                    Some(Step::HelloReply(_)) => reply,
                    _ => false,
                })
        })
        .count()
}

fn tokens(list: &[(&str, &[u8])]) -> Vec<AccessToken> {
    list.iter().map(|(k, s)| AccessToken::new(*k, *s)).collect()
}

/// a and b linked to one relay, both links up.
fn world(
    seed: u64,
    kind: LinkKind,
    loss: f64,
    ta: &[(&str, &[u8])],
    tb: &[(&str, &[u8])],
) -> (World, [usize; 3], [usize; 2]) {
    world_with(seed, kind, loss, ta, tb, |_| {})
}

/// As [`world`], with `tweak` applied to both nodes' configurations.
fn world_with(
    seed: u64,
    kind: LinkKind,
    loss: f64,
    ta: &[(&str, &[u8])],
    tb: &[(&str, &[u8])],
    tweak: impl Fn(&mut atbus_node::NodeConfig),
) -> (World, [usize; 3], [usize; 2]) {
    let net = || match kind {
        LinkKind::Datagram => lossy_link(loss),
        _ => byte_link(),
    };
    let mut w = World::new(seed);
    let mut ca = node_config("a", &["relay"]).with_tokens(tokens(ta));
    let mut cb = node_config("b", &["relay"]).with_tokens(tokens(tb));
    tweak(&mut ca);
    tweak(&mut cb);
    let a = w.add_node(ca);
    let b = w.add_node(cb);
    let mut rc = relay_config("relay", &[]);
    let mut all: Vec<(&str, &[u8])> = ta.to_vec();
    all.extend(tb.iter().filter(|t| !ta.iter().any(|u| u.0 == t.0)));
    rc.node = rc.node.with_tokens(tokens(&all));
    let r = w.add_relay(rc);
    let la = w.connect(a, r, kind, net());
    let lb = w.connect(b, r, kind, net());
    assert!(
        w.run_until(Duration::from_secs(10), |w| w.links_up(r) == 2
            && w.links_up(a) == 1
            && w.links_up(b) == 1),
        "seed {seed}: relay links"
    );
    (w, [a, b, r], [la, lb])
}

#[test]
fn relayed_only_session_learns_the_true_incarnation_and_keys() {
    for (seed, with_tokens) in [(1, false), (2, true)] {
        let t: &[(&str, &[u8])] = if with_tokens {
            &[("k1", SECRET_1)]
        } else {
            &[]
        };
        let (mut w, [a, b, _], _) = world(seed, LinkKind::ByteStream, 0.0, t, t);
        // Only a routes: b learns of a through a's handshake.
        w.route(a, "b", "relay");
        let msgs = messages(seed, 20, 3000);
        w.send_all(a, "b", 1, &msgs);
        assert!(
            w.run_until(Duration::from_secs(10), |w| w.got(b, "a", 1).len()
                == msgs.len()),
            "seed {seed}: b got {} of {}",
            w.got(b, "a", 1).len(),
            msgs.len()
        );
        assert_eq!(w.got(b, "a", 1), &msgs[..], "seed {seed}");
        let (ia, ib) = (w.node(a).incarnation(), w.node(b).incarnation());
        assert_eq!(peer_up(&w, a, "b"), Some(ib), "seed {seed}: a's PeerUp");
        assert_eq!(peer_up(&w, b, "a"), Some(ia), "seed {seed}: b's PeerUp");
        assert_eq!(w.node(a).peer_incarnation("b"), Some(ib), "seed {seed}");
        assert_eq!(w.node(b).peer_incarnation("a"), Some(ia), "seed {seed}");
        let ka = w.node(a).peer_session_keys("b").cloned();
        let kb = w.node(b).peer_session_keys("a").cloned();
        if with_tokens {
            assert!(ka.is_some(), "seed {seed}: a has end-to-end keys");
            assert_eq!(ka, kb, "seed {seed}: both ends derived the same keys");
        } else {
            assert!(
                ka.is_none() && kb.is_none(),
                "seed {seed}: no token, no keys"
            );
        }
        assert!(
            failures(&w, a).is_empty() && failures(&w, b).is_empty(),
            "seed {seed}"
        );
        assert!(w.violations.is_empty(), "seed {seed}: {:?}", w.violations);
    }
}

/// Nodes that require encryption behind one relay: a message sent before the end-to-end
/// handshake waits (no keys, no path), after it the session seals with the relayed
/// transcript's keys: b reads every message, the relay forwards only ciphertext.
#[test]
fn encrypting_nodes_seal_relayed_only_sessions_and_the_relay_sees_ciphertext() {
    let seed = 11;
    let t: &[(&str, &[u8])] = &[("k1", SECRET_1)];
    let (mut w, [a, b, r], _) = world_with(seed, LinkKind::ByteStream, 0.0, t, t, |c| {
        c.content = atbus_node::ContentPolicy {
            encryption: atbus_node::EncryptionMode::Psk,
            ..atbus_node::ContentPolicy::default()
        };
    });
    w.route(a, "b", "relay");
    let marker = b"plaintext-marker-";
    let msgs: Vec<bytes::Bytes> = (0..20)
        .map(|i| {
            let mut m = marker.to_vec();
            m.extend(std::iter::repeat_n(
                b'a' + (i % 26) as u8,
                100 + i as usize * 37,
            ));
            bytes::Bytes::from(m)
        })
        .collect();
    // Sent before the session has keys: it waits and leaves sealed.
    w.send(a, "b", 1, msgs[0].clone());
    assert!(
        w.run_until(Duration::from_secs(10), |w| peer_up(w, a, "b").is_some()
            && peer_up(w, b, "a").is_some()),
        "seed {seed}: relayed handshake"
    );
    w.send_all(a, "b", 1, &msgs[1..]);
    assert!(
        w.run_until(Duration::from_secs(10), |w| w.got(b, "a", 1).len()
            == msgs.len()),
        "seed {seed}: b got {} of {}",
        w.got(b, "a", 1).len(),
        msgs.len()
    );
    assert_eq!(w.got(b, "a", 1), &msgs[..], "seed {seed}");
    let packets: Vec<&atbus_proto::PacketData> = w.seen[r]
        .iter()
        .filter_map(|s| match &s.body {
            Some(Body::Packet(p)) if s.head.source == "a" => Some(p),
            _ => None,
        })
        .collect();
    assert!(
        !packets.is_empty(),
        "seed {seed}: the relay forwarded a's packets"
    );
    for p in &packets {
        assert_ne!(
            p.flags & atbus_proto::packet_flags::ENCRYPTED,
            0,
            "seed {seed}: a packet through the relay is not sealed"
        );
        assert!(
            !p.content.windows(marker.len()).any(|x| x == marker),
            "seed {seed}: the relay saw plaintext"
        );
    }
    assert!(w.violations.is_empty(), "seed {seed}: {:?}", w.violations);
}

#[test]
fn both_sides_routing_at_once_agree_on_one_handshake() {
    let (mut w, [a, b, _], _) = world(3, LinkKind::ByteStream, 0.0, &[], &[]);
    w.route(a, "b", "relay");
    w.route(b, "a", "relay");
    w.send(a, "b", 1, bytes::Bytes::from_static(b"to b"));
    w.send(b, "a", 1, bytes::Bytes::from_static(b"to a"));
    assert!(
        w.run_until(Duration::from_secs(10), |w| w.got(b, "a", 1).len() == 1
            && w.got(a, "b", 1).len() == 1)
    );
    assert_eq!(peer_up(&w, a, "b"), Some(w.node(b).incarnation()));
    assert_eq!(peer_up(&w, b, "a"), Some(w.node(a).incarnation()));
    assert!(failures(&w, a).is_empty() && failures(&w, b).is_empty());
}

#[test]
fn wrong_token_end_to_end_is_refused_on_both_ends() {
    // The relay knows k1 = SECRET_1 (a's) and k2 (b's link token); b holds k1 with another
    // secret, so b's proof for k1 cannot verify at a.
    let (mut w, [a, b, _], _) = world(
        4,
        LinkKind::ByteStream,
        0.0,
        &[("k1", SECRET_1)],
        &[("k2", SECRET_2), ("k1", b"not-the-secret-of-a-k1")],
    );
    w.route(a, "b", "relay");
    w.send(a, "b", 1, bytes::Bytes::from_static(b"secret"));
    assert!(
        w.run_until(Duration::from_secs(5), |w| !failures(w, a).is_empty()
            && !failures(w, b).is_empty())
    );
    let (fa, fb) = (failures(&w, a), failures(&w, b));
    assert_eq!(fa[0].0, "b");
    assert_eq!(fa[0].1.code, AtbusCloseReason::AuthFailed);
    assert!(!fa[0].1.by_peer, "a refused b's proof: {:?}", fa[0].1);
    assert!(fa[0].1.message.contains("does not verify"), "{}", fa[0].1);
    assert_eq!(fb[0].0, "a");
    assert_eq!(fb[0].1.code, AtbusCloseReason::AuthFailed);
    assert!(fb[0].1.by_peer, "b learns that a refused: {:?}", fb[0].1);
    assert_eq!(fb[0].1.message, fa[0].1.message);
    w.run_for(Duration::from_secs(3));
    assert!(
        w.got(b, "a", 1).is_empty(),
        "nothing delivered without verification"
    );
    assert_eq!(peer_up(&w, a, "b"), None);
    assert_eq!(peer_up(&w, b, "a"), None);
    assert_eq!(w.node(a).peer_incarnation("b"), None);

    // An unknown key id: the responder refuses, the initiator hears why.
    let (mut w, [a, b, _], _) = world(
        5,
        LinkKind::ByteStream,
        0.0,
        &[("k1", SECRET_1)],
        &[("k2", SECRET_2)],
    );
    w.route(a, "b", "relay");
    assert!(
        w.run_until(Duration::from_secs(5), |w| !failures(w, a).is_empty()
            && !failures(w, b).is_empty())
    );
    let (fa, fb) = (failures(&w, a), failures(&w, b));
    assert!(
        !fb[0].1.by_peer && fb[0].1.message.contains("unknown access key id"),
        "{}",
        fb[0].1
    );
    assert!(
        fa[0].1.by_peer && fa[0].1.message == fb[0].1.message,
        "{}",
        fa[0].1
    );
}

#[test]
fn lost_hello_and_reply_on_a_lossy_relayed_path_are_resent() {
    let t: &[(&str, &[u8])] = &[("k1", SECRET_1)];
    let mut resent = 0;
    for seed in 10..16 {
        let (mut w, [a, b, r], _) = world(seed, LinkKind::Datagram, 0.3, t, t);
        w.route(a, "b", "relay");
        let msgs = messages(seed, 30, 1000);
        w.send_all(a, "b", 1, &msgs);
        assert!(
            w.run_until(Duration::from_secs(120), |w| w.got(b, "a", 1).len()
                == msgs.len()),
            "seed {seed}: b got {} of {}; a {:?}; b {:?}",
            w.got(b, "a", 1).len(),
            msgs.len(),
            failures(&w, a),
            failures(&w, b)
        );
        assert_eq!(w.got(b, "a", 1), &msgs[..], "seed {seed}");
        assert_eq!(
            peer_up(&w, a, "b"),
            Some(w.node(b).incarnation()),
            "seed {seed}"
        );
        assert_eq!(
            peer_up(&w, b, "a"),
            Some(w.node(a).incarnation()),
            "seed {seed}"
        );
        assert_eq!(
            node(&w, a).peer_session_keys("b"),
            node(&w, b).peer_session_keys("a"),
            "seed {seed}"
        );
        // What reached the relay more than once was sent again.
        resent += handshake_steps_seen(&w, r, "a", false).saturating_sub(1)
            + handshake_steps_seen(&w, r, "b", true).saturating_sub(1);
        assert!(w.violations.is_empty(), "seed {seed}: {:?}", w.violations);
    }
    assert!(
        resent > 0,
        "no seed lost a handshake step: the test proves nothing"
    );
}

/// Node "b" is replaced by a new process of the same name (a new incarnation) behind the relay
/// while a streams to it; `new_routes`: the new process routes to a itself (else it only
/// receives a's frames). Returns (messages a sent, the world, a, the new b, messages the old b got).
fn replace_b_mid_stream(seed: u64, new_routes: bool) -> (usize, World, usize, usize, usize) {
    let (mut w, [a, b, r], [_, lb]) = world(seed, LinkKind::ByteStream, 0.0, &[], &[]);
    w.route(a, "b", "relay");
    let msgs = messages(seed, 400, 4000);
    w.send_all(a, "b", 1, &msgs);
    assert!(
        w.run_until(Duration::from_secs(20), |w| w.got(b, "a", 1).len() >= 50),
        "seed {seed}: the stream started"
    );
    let old_b = w.node(b).incarnation();
    let got_old = w.got(b, "a", 1).len();
    assert!(
        got_old < msgs.len(),
        "seed {seed}: the stream ended before the restart"
    );
    w.kill_link(lb);
    let b2 = w.add_node(node_config("b", &["relay"]));
    assert_ne!(w.node(b2).incarnation(), old_b, "seed {seed}");
    w.connect(b2, r, LinkKind::ByteStream, byte_link());
    assert!(
        w.run_until(Duration::from_secs(5), |w| w.links_up(b2) == 1),
        "seed {seed}: new b linked"
    );
    if new_routes {
        w.route(b2, "a", "relay");
    }
    (msgs.len(), w, a, b2, got_old)
}

#[test]
fn peer_restarted_behind_the_relay_mid_stream_reports_the_loss() {
    let (sent, mut w, a, b2, got_old) = replace_b_mid_stream(20, false);
    let new_b = w.node(b2).incarnation();
    assert!(
        w.run_until(Duration::from_secs(20), |w| node(w, a)
            .peer_incarnation("b")
            == Some(new_b)),
        "a learns the new incarnation from the new process's handshake"
    );
    w.run_for(Duration::from_secs(2));
    let lost = undeliverable(&w, a, UndeliverableReason::PeerRestarted);
    assert!(
        lost > 0,
        "the restart is reported as undeliverable messages"
    );
    assert!(
        got_old + lost >= sent,
        "every message was either delivered to the old process or reported: {got_old} + {lost} < {sent}"
    );
    assert!(
        w.got(b2, "a", 1).is_empty(),
        "the old stream is not resumed into the new process ({} messages)",
        w.got(b2, "a", 1).len()
    );
    assert_eq!(last_peer_up(&w, a, "b"), Some(new_b));
    assert!(failures(&w, a).is_empty(), "{:?}", failures(&w, a));
}

#[test]
fn name_reused_by_another_process_is_detected() {
    let (_, mut w, a, b2, _) = replace_b_mid_stream(21, true);
    let new_b = w.node(b2).incarnation();
    assert!(
        w.run_until(Duration::from_secs(20), |w| last_peer_up(w, a, "b")
            == Some(new_b)
            && peer_up(w, b2, "a").is_some()),
        "the new process of name b is seen as a new incarnation"
    );
    assert_eq!(w.node(a).peer_incarnation("b"), Some(new_b));
    assert_eq!(peer_up(&w, b2, "a"), Some(w.node(a).incarnation()));
    assert!(undeliverable(&w, a, UndeliverableReason::PeerRestarted) > 0);
    // The new session works both ways.
    w.send(a, "b", 3, bytes::Bytes::from_static(b"fresh"));
    w.send(b2, "a", 3, bytes::Bytes::from_static(b"hello again"));
    assert!(
        w.run_until(Duration::from_secs(5), |w| w.got(b2, "a", 3).len() == 1
            && w.got(a, "b", 3).len() == 1)
    );
}

#[test]
fn a_node_answering_a_relays_link_resends_a_lost_accept() {
    // The relay dials the node over a lossy datagram link: the node is the handshake's server;
    // when its accept is lost, the relay's repeated confirm must get the same accept again (not
    // close the link as an unexpected step).
    let mut closed = 0;
    for seed in 40..60 {
        let mut w = World::new(seed);
        let a = w.add_node(node_config("a", &["relay"]));
        let r = w.add_relay(relay_config("relay", &[]));
        w.connect(r, a, LinkKind::Datagram, lossy_link(0.35));
        let up = w.run_until(Duration::from_secs(20), |w| {
            w.links_up(a) == 1 && w.links_up(r) == 1
        });
        w.run_for(Duration::from_secs(2));
        closed += w.events[a]
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    NodeEvent::LinkRejected { .. } | NodeEvent::LinkClosed { .. }
                )
            })
            .count();
        assert!(up, "seed {seed}: the link comes up; a {:?}", w.events[a]);
    }
    assert_eq!(closed, 0, "no link was refused or closed");
}

/// Distinct peers actor `n` sent a relayed hello to, as the relay `r` received them.
fn hello_targets(w: &World, r: usize, from: &str) -> std::collections::BTreeSet<String> {
    w.seen[r]
        .iter()
        .filter(|s| {
            s.head.source == from
                && matches!(&s.body, Some(Body::RelayedHandshake(d))
                    if matches!(d.step, Some(Step::Hello(_))))
        })
        .map(|s| s.head.destination.clone())
        .collect()
}

/// `max_handshakes_in_flight` bounds relayed handshakes on both ends: an initiator starts no
/// more than the limit at once, and a responder at its limit refuses a new peer with
/// `LIMIT_EXCEEDED`, which the peer hears.
#[test]
fn relayed_handshakes_in_flight_are_bounded_on_both_ends() {
    let t: &[(&str, &[u8])] = &[("k1", SECRET_1)];
    let (mut w, [a, _, r], _) = world_with(21, LinkKind::ByteStream, 0.0, t, t, |c| {
        c.limits.max_handshakes_in_flight = 2;
    });
    // Peers nobody answers for: their handshakes stay in flight until the deadline.
    for ghost in ["ghost-1", "ghost-2", "ghost-3", "ghost-4"] {
        w.route(a, ghost, "relay");
        w.send(a, ghost, 1, bytes::Bytes::from_static(b"hello"));
    }
    w.run_for(Duration::from_secs(2));
    let started = hello_targets(&w, r, "a");
    assert_eq!(
        started.len(),
        2,
        "a started relayed handshakes with {started:?}; the limit is 2"
    );

    // In a fresh world, b at its limit (two unanswered handshakes of its own) refuses a's hello.
    let (mut w, [a, b, r], _) = world_with(22, LinkKind::ByteStream, 0.0, t, t, |c| {
        c.limits.max_handshakes_in_flight = 2;
    });
    for ghost in ["ghost-5", "ghost-6"] {
        w.route(b, ghost, "relay");
        w.send(b, ghost, 1, bytes::Bytes::from_static(b"hello"));
    }
    w.run_for(Duration::from_millis(200));
    assert_eq!(hello_targets(&w, r, "b").len(), 2);
    w.route(a, "b", "relay");
    w.send(a, "b", 1, bytes::Bytes::from_static(b"to b"));
    assert!(
        w.run_until(Duration::from_secs(2), |w| failures(w, b)
            .iter()
            .any(|(p, _)| p == "a")),
        "b never refused a; b's failures: {:?}",
        failures(&w, b)
    );
    let fb = failures(&w, b);
    let (_, refusal) = fb.iter().find(|(p, _)| p == "a").expect("b refused a");
    assert_eq!(refusal.code, AtbusCloseReason::LimitExceeded, "{refusal}");
    assert!(!refusal.by_peer, "{refusal}");
    assert!(
        refusal.message.contains("relayed handshakes in flight"),
        "{refusal}"
    );
    assert!(
        w.run_until(Duration::from_secs(5), |w| failures(w, a)
            .iter()
            .any(|(p, r)| p == "b" && r.by_peer)),
        "a never heard b's refusal: {:?}",
        failures(&w, a)
    );
    assert!(w.got(b, "a", 1).is_empty(), "nothing delivered unverified");
}
