//! A long-lived `atbus node` that plans per destination, with real processes and a real etcd:
//! node `a` in ns1 (`--discovery`, `--upstream-relay relay1`, `--stdin`) sends to names it has
//! no session with. To `c` in its own namespace the planner goes direct (neither relay's
//! `atbus_relay_frames_forwarded_total` moves); to `b` in ns2, known only by name, it goes
//! through its upstream relay (relay1 → relay2 → b, both counters rise); with
//! `--relay-preference target` another node goes through b's advertised relay2. Every echo is
//! checked line by line. Fails (never skips) when `etcd` is missing.

mod relay_procs;

use std::time::Duration;

use atbus_discovery_etcd::testing::EtcdProcess as Etcd;
use relay_procs::logged::{
    DiscoveredRelay as Relay, LoggedProc as Proc, discovered_node as node, wait_for,
};

/// Sends `n` lines to `to` from `sender` and checks the route taken and every echo, in order.
fn exchange(sender: &mut Proc, to: &str, n: usize, route: &str) {
    for i in 0..n {
        sender.say(&format!("{to} {to}-message-{i}"));
    }
    assert_eq!(sender.expect(&format!("route to {to}: ")), route);
    for i in 0..n {
        assert_eq!(
            sender.expect(&format!("from {to} stream 1: ")),
            format!("{to}-message-{i}")
        );
    }
}

#[test]
fn a_running_node_plans_each_destination_direct_or_through_relays() {
    let etcd = Etcd::start();
    let spec = etcd.spec();
    let mut relay2 = Relay::start(&spec, "relay2", "ns2", &[]);
    let mut relay1 = Relay::start(&spec, "relay1", "ns1", &["--upstream-relay", "relay2"]);
    let mut b = node(
        &spec,
        "b",
        "ns2",
        &["--echo", "--advertise-relay", "relay2"],
    );
    let mut c = node(&spec, "c", "ns1", &["--echo"]);
    let relay_links = "atbus_relay_links{relay=\"RELAY\",peer_kind=\"relay\"}";
    let node_links = "atbus_relay_links{relay=\"RELAY\",peer_kind=\"node\"}";
    wait_for("relay1 and relay2 linked", Duration::from_secs(10), || {
        relay1.metric(relay_links) >= 1 && relay2.metric(relay_links) >= 1
    });
    wait_for("b linked to relay2", Duration::from_secs(10), || {
        relay2.metric(node_links) >= 1
    });
    let mut a = node(
        &spec,
        "a",
        "ns1",
        &["--upstream-relay", "relay1", "--stdin"],
    );
    wait_for("a linked to relay1", Duration::from_secs(10), || {
        relay1.metric(node_links) >= 1
    });

    // Own namespace: direct, no relay forwards anything.
    let (r1, r2) = (relay1.forwarded(), relay2.forwarded());
    exchange(&mut a, "c", 20, "direct");
    assert_eq!(relay1.forwarded(), r1, "relay1 was not on the path");
    assert_eq!(relay2.forwarded(), r2, "relay2 was not on the path");

    // Another namespace, known by name only: a → relay1 → relay2 → b.
    exchange(&mut a, "b", 20, "via relay1");
    let (r1_b, r2_b) = (relay1.forwarded(), relay2.forwarded());
    assert!(r1_b > r1, "relay1 forwarded nothing: {r1} → {r1_b}");
    assert!(r2_b > r2, "relay2 forwarded nothing: {r2} → {r2_b}");
    // A known destination goes on without a new plan.
    a.say("b again");
    assert_eq!(a.expect("from b stream 1: "), "again");
    assert!(b.log().contains("peer=a"), "b never saw a:\n{}", b.log());

    // A name nobody registered is reported, and the node keeps running.
    a.say("nobody hello");
    let why = a.expect("undeliverable to nobody: ");
    assert!(why.contains("no record named"), "{why}");

    // target: the destination's advertised relay first.
    let mut a2 = node(
        &spec,
        "a2",
        "ns1",
        &[
            "--upstream-relay",
            "relay1",
            "--relay-preference",
            "target",
            "--stdin",
        ],
    );
    exchange(&mut a2, "b", 10, "via relay2");

    let forged = "atbus_relay_frames_dropped_total{relay=\"RELAY\",reason=\"forged_source\"}";
    for r in [&relay1, &relay2] {
        assert_eq!(r.metric(forged), 0, "{}", r.name);
    }
    for p in [
        &mut a,
        &mut a2,
        &mut b,
        &mut c,
        &mut relay1.proc,
        &mut relay2.proc,
    ] {
        assert_eq!(p.terminate(), Some(0));
    }
}
