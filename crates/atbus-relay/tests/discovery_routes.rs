//! What the relay service needs to route by discovery: peer relays trusted at run time, routes
//! learned from traffic for answers, and the relays a relay still has to dial.

mod common;

use std::time::Duration;

use atbus_discovery::{NodeRecord, RelayRef};
use atbus_node::LinkKind;
use atbus_relay::DropReason;
use bytes::Bytes;
use common::*;

fn advertising(name: &str, relay: &str) -> NodeRecord {
    let mut r = NodeRecord::new(name);
    r.advertise_relay = Some(RelayRef {
        name: Some(relay.into()),
        metadata: None,
    });
    r
}

/// a — r1 — r2 — b, r1 sends everything upstream to r2, r2 has no route back to a.
fn chain(seed: u64, r2_trusts_r1: bool) -> (World, usize, usize, usize, usize) {
    let mut w = World::new(seed);
    let a = w.add_node(node_config("a", &["r1"]));
    let b = w.add_node(node_config("b", &["r2"]));
    let mut c1 = relay_config("r1", &["r2"]);
    c1.upstream = Some("r2".into());
    let r1 = w.add_relay(c1);
    let r2 = w.add_relay(relay_config("r2", if r2_trusts_r1 { &["r1"] } else { &[] }));
    w.connect_bytes(&[(a, r1), (r1, r2), (b, r2)]);
    assert!(w.run_until(Duration::from_secs(2), |w| w.links_up(r1) == 2
        && w.links_up(r2) == 2));
    (w, a, b, r1, r2)
}

#[test]
fn answers_go_back_through_the_relay_the_source_came_through() {
    let (mut w, a, b, r1, r2) = chain(31, true);
    assert_eq!(
        w.relay(r2).route_of("a"),
        None,
        "nothing configured back to a"
    );
    w.route(a, "b", "r1");
    w.send(a, "b", 1, Bytes::from_static(b"question"));
    assert!(w.run_until(Duration::from_secs(5), |w| !w.got(b, "a", 1).is_empty()));
    assert_eq!(w.relay(r2).learned_route("a"), Some("r1"));
    assert_eq!(w.relay(r2).route_of("a"), Some("r1"));
    // Nothing is learned from plain nodes' links (their names need no route: they are linked).
    assert_eq!(w.relay(r1).learned_route("a"), None);
    w.send(b, "a", 1, Bytes::from_static(b"answer"));
    assert!(w.run_until(Duration::from_secs(5), |w| !w.got(a, "b", 1).is_empty()));
    assert_eq!(w.got(a, "b", 1), [Bytes::from_static(b"answer")]);
    assert_eq!(w.relay(r2).metrics().drops(DropReason::Unreachable), 0);
    assert!(w.violations.is_empty(), "{:?}", w.violations);
}

#[test]
fn learned_routes_expire_and_are_bounded() {
    let mut w = World::new(32);
    let a = w.add_node(node_config("a", &["r1"]));
    let a2 = w.add_node(node_config("a2", &["r1"]));
    let b = w.add_node(node_config("b", &["r2"]));
    let mut c1 = relay_config("r1", &["r2"]);
    c1.upstream = Some("r2".into());
    let r1 = w.add_relay(c1);
    let mut c2 = relay_config("r2", &["r1"]);
    c2.learned_route_ttl = Duration::from_secs(3);
    c2.max_learned_routes = 1;
    // b answers a2's end-to-end handshake: r2 reaches a2 by a configured route while the
    // learned table is full (a configured route is not a learned one).
    c2.routes.insert("a2".into(), "r1".into());
    let r2 = w.add_relay(c2);
    let a_link = w.connect(a, r1, LinkKind::ByteStream, byte_link());
    w.connect_bytes(&[(a2, r1), (r1, r2), (b, r2)]);
    assert!(w.run_until(Duration::from_secs(2), |w| w.links_up(r1) == 3
        && w.links_up(r2) == 2));
    w.route(a, "b", "r1");
    w.send(a, "b", 1, Bytes::from_static(b"x"));
    assert!(w.run_until(Duration::from_secs(5), |w| !w.got(b, "a", 1).is_empty()));
    assert_eq!(w.relay(r2).learned_route("a"), Some("r1"));
    // Full (one route, still fresh): a2 is not learned.
    w.route(a2, "b", "r1");
    w.send(a2, "b", 1, Bytes::from_static(b"y"));
    assert!(w.run_until(Duration::from_secs(5), |w| !w.got(b, "a2", 1).is_empty()));
    assert_eq!(w.relay(r2).learned_route("a2"), None, "bounded");
    // a falls silent (its link is cut): its route expires after the TTL, and a2, still
    // talking (session keepalives), takes the freed place.
    w.kill_link(a_link);
    w.run_for(Duration::from_secs(8));
    assert_eq!(w.relay(r2).learned_route("a"), None, "expired");
    assert_eq!(w.relay(r2).learned_route("a2"), Some("r1"));
}

#[test]
fn a_peer_relay_trusted_at_run_time_carries_frames_from_then_on() {
    let (mut w, a, b, _r1, r2) = chain(33, false);
    assert!(!w.relay(r2).has_trusted_link("r1"));
    w.route(a, "b", "r1");
    w.send(a, "b", 1, Bytes::from_static(b"through r1 and r2"));
    w.run_for(Duration::from_millis(500));
    assert!(
        w.got(b, "a", 1).is_empty(),
        "r1 is a plain node to r2 so far"
    );
    assert!(w.relay(r2).metrics().drops(DropReason::ForgedSource) >= 1);
    w.relay_mut(r2).set_peer_relays(["r1".to_owned()]);
    assert!(w.relay(r2).has_trusted_link("r1"));
    assert!(
        w.relay(r2)
            .link_metrics()
            .iter()
            .any(|l| l.peer == "r1" && l.relay)
    );
    // The session retransmits what r2 dropped.
    assert!(w.run_until(Duration::from_secs(10), |w| !w.got(b, "a", 1).is_empty()));
    // And trust can be withdrawn again.
    w.relay_mut(r2).set_peer_relays(Vec::new());
    assert!(!w.relay(r2).has_trusted_link("r1"));
}

#[test]
fn missing_relays_are_those_routed_through_without_a_trusted_link() {
    let (mut w, _a, _b, r1, r2) = chain(34, true);
    assert!(
        w.relay(r1).missing_relays().is_empty(),
        "r2 (upstream) is linked"
    );
    let records = [advertising("c", "r3"), advertising("b", "r2")];
    w.relay_mut(r1).set_discovered_routes(&records);
    assert_eq!(
        w.relay(r1).missing_relays().into_iter().collect::<Vec<_>>(),
        ["r3"]
    );
    // r2 does not trust r1's link as a relay link unless r1 is a peer relay of r2.
    w.relay_mut(r2).set_peer_relays(Vec::new());
    w.relay_mut(r2).set_route("a", "r1");
    assert_eq!(
        w.relay(r2).missing_relays().into_iter().collect::<Vec<_>>(),
        ["r1"]
    );
}
