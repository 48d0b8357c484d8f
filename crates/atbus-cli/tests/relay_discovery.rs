//! Relays chosen by discovery, with real processes and a real etcd: two namespaces, a relay in
//! each registering itself, an echo node in ns2 advertising its relay, and senders in ns1 that
//! find their way through `--discovery` alone. The path each run took is proven by the
//! sender's `first_hop` and by every relay's `atbus_relay_frames_forwarded_total` scraped
//! before and after; every echo is verified. Fails (never skips) when `etcd` is missing.

mod relay_procs;

use std::process::Command;
use std::time::Duration;

use atbus_discovery::NodeRecord;
use atbus_discovery_etcd::testing::EtcdProcess as Etcd;
use relay_procs::logged::{
    DiscoveredRelay as Relay, LoggedProc as Proc, discovered_node, wait_for,
};

fn start_relay(spec: &str, name: &str, ns: &str, extra: &[&str]) -> Relay {
    Relay::start(spec, name, ns, extra)
}

/// `atbus node --echo` in `ns` registered in `spec`, with `extra` arguments.
fn start_echo(spec: &str, name: &str, ns: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["--echo"];
    args.extend_from_slice(extra);
    discovered_node(spec, name, ns, &args)
}

fn records(spec: &str) -> Vec<NodeRecord> {
    let out = Command::new(env!("CARGO_BIN_EXE_atbus"))
        .args(["discovery", "list", "--json", "--discovery", spec])
        .output()
        .expect("atbus discovery list");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a record"))
        .collect()
}

/// `atbus send --discovery` from ns1; the JSON summary.
fn send(spec: &str, name: &str, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_atbus"))
        .args(["send", "--name", name, "--namespace", "ns1"])
        .args(["--discovery", spec, "--verify", "--json"])
        .args(["--count", "300", "--size", "100", "--streams", "2"])
        .args(["--timeout", "15"])
        .args(extra)
        .env_remove("ATBUS_TOKEN")
        .output()
        .expect("run atbus send");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["received"], 300, "{report}");
    report
}

/// Two namespaces: relay1 in ns1 (upstream relay2, found through its record), relay2 in ns2,
/// echo node b in ns2 advertising relay2, echo node e in ns2 linked to relay2 without
/// advertising it, echo node c in ns1, all found through etcd.
struct World {
    etcd: Etcd,
    relay1: Relay,
    relay2: Relay,
    b: Proc,
    c: Proc,
    e: Proc,
}

fn world() -> World {
    let etcd = Etcd::start();
    let spec = etcd.spec();
    let relay2 = start_relay(&spec, "relay2", "ns2", &[]);
    let relay1 = start_relay(&spec, "relay1", "ns1", &["--upstream-relay", "relay2"]);
    let b = start_echo(
        &spec,
        "b",
        "ns2",
        &["--advertise-relay", "relay2", "--label", "app=echo"],
    );
    let c = start_echo(&spec, "c", "ns1", &["--label", "app=echo"]);
    let e = start_echo(&spec, "e", "ns2", &["--upstream-relay", "relay2"]);
    wait_for("every record registered", Duration::from_secs(10), || {
        let names: Vec<String> = records(&spec).into_iter().map(|r| r.name).collect();
        names == ["b", "c", "e", "relay1", "relay2"]
    });
    // relay1 dials relay2 (b's record routes b through it); b links to relay2.
    let relay_links = "atbus_relay_links{relay=\"RELAY\",peer_kind=\"relay\"}";
    let node_links = "atbus_relay_links{relay=\"RELAY\",peer_kind=\"node\"}";
    wait_for(
        "relay1 and relay2 trust each other's link",
        Duration::from_secs(10),
        || relay1.metric(relay_links) >= 1 && relay2.metric(relay_links) >= 1,
    );
    wait_for("b and e linked to relay2", Duration::from_secs(10), || {
        relay2.metric(node_links) >= 2
    });
    World {
        etcd,
        relay1,
        relay2,
        b,
        c,
        e,
    }
}

#[test]
fn cross_namespace_paths_follow_the_relay_preference_and_same_namespace_goes_direct() {
    let mut w = world();
    let spec = w.etcd.spec();

    // Same namespace first (no relayed session exists yet whose stragglers a relay could
    // count): straight to c, neither relay forwards anything.
    let (r1, r2) = (w.relay1.forwarded(), w.relay2.forwarded());
    let report = send(
        &spec,
        "a-direct",
        &["--to", "c", "--upstream-relay", "relay1"],
    );
    assert_eq!(report["first_hop"], "c", "{report}");
    assert_eq!(report["to"], "c", "{report}");
    assert_eq!(w.relay1.forwarded(), r1, "relay1 was not on the path");
    assert_eq!(w.relay2.forwarded(), r2, "relay2 was not on the path");

    // target: a → relay2 → b; relay1 is not on the path.
    let report = send(
        &spec,
        "a-target",
        &[
            "--to",
            "b",
            "--upstream-relay",
            "relay1",
            "--relay-preference",
            "target",
        ],
    );
    assert_eq!(report["first_hop"], "relay2", "{report}");
    assert_eq!(report["to"], "b", "{report}");
    let (r1_target, r2_target) = (w.relay1.forwarded(), w.relay2.forwarded());
    assert_eq!(r1_target, r1, "relay1 was not on the path");
    assert!(
        r2_target > r2,
        "relay2 forwarded nothing: {r2} → {r2_target}"
    );

    // own: a → relay1 → relay2 → b.
    let report = send(
        &spec,
        "a-own",
        &[
            "--to",
            "b",
            "--upstream-relay",
            "relay1",
            "--relay-preference",
            "own",
        ],
    );
    assert_eq!(report["first_hop"], "relay1", "{report}");
    let (r1_own, r2_own) = (w.relay1.forwarded(), w.relay2.forwarded());
    assert!(
        r1_own > r1_target,
        "relay1 forwarded nothing: {r1_target} → {r1_own}"
    );
    assert!(
        r2_own > r2_target,
        "relay2 forwarded nothing: {r2_target} → {r2_own}"
    );

    // e advertises no relay: relay1 sends it to its upstream relay2, which it dialled at the
    // address relay2's record gives (no --connect anywhere).
    let report = send(&spec, "a-up", &["--to", "e", "--upstream-relay", "relay1"]);
    assert_eq!(report["first_hop"], "relay1", "{report}");
    assert!(w.relay2.forwarded() > r2_own);

    // b saw each sender under its own name (the relays' forwarded source).
    let log = w.b.log();
    for sender in ["a-own", "a-target"] {
        assert!(
            log.contains(&format!("peer={sender}")),
            "b never saw {sender}:\n{log}"
        );
    }
    assert!(!log.contains("peer=relay1"), "{log}");
    let forged = "atbus_relay_frames_dropped_total{relay=\"RELAY\",reason=\"forged_source\"}";
    for r in [&w.relay1, &w.relay2] {
        assert_eq!(r.metric(forged), 0, "{}", r.name);
    }
    for p in [
        &mut w.relay1.proc,
        &mut w.relay2.proc,
        &mut w.b,
        &mut w.c,
        &mut w.e,
    ] {
        assert_eq!(p.terminate(), Some(0));
    }
    wait_for(
        "records removed on shutdown",
        Duration::from_secs(5),
        || records(&spec).is_empty(),
    );
}

#[test]
fn a_selector_target_is_one_node_chosen_by_rendezvous_hashing() {
    let w = world();
    let spec = w.etcd.spec();
    for key in ["k1", "k2", "k3", "k4"] {
        let expected = atbus_discovery::rendezvous::choose_name(["b", "c"], key).expect("b or c");
        let report = send(
            &spec,
            &format!("sel-{key}"),
            &[
                "--to-selector",
                "app=echo",
                "--hash-key",
                key,
                "--upstream-relay",
                "relay1",
            ],
        );
        assert_eq!(report["to"], expected, "{report}");
        let first_hop = if expected == "c" { "c" } else { "relay1" };
        assert_eq!(report["first_hop"], first_hop, "{report}");
    }
    // A sender that advertises a relay registers its record for the run (relays may then
    // route answers by it) and removes it at the end.
    let report = send(
        &spec,
        "a-adv",
        &[
            "--to",
            "b",
            "--upstream-relay",
            "relay1",
            "--advertise-relay",
            "relay1",
        ],
    );
    assert_eq!(report["first_hop"], "relay1", "{report}");
    assert!(records(&spec).iter().all(|r| r.name != "a-adv"));
    // A selector nothing matches is an error naming it.
    let out = Command::new(env!("CARGO_BIN_EXE_atbus"))
        .args(["send", "--name", "nobody", "--discovery", &spec])
        .args(["--to-selector", "app=none", "--count", "1"])
        .output()
        .expect("run atbus send");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no record matches the selector app=none"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const NODES_TOKEN: &str = "nodes:a-secret-every-node-holds";
const RELAYS_TOKEN: &str = "relays:a-secret-only-relays-hold";

#[test]
fn a_relay_matching_the_selector_is_trusted_only_with_a_relay_key() {
    let etcd = Etcd::start();
    let spec = etcd.spec();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("relay2.toml");
    std::fs::write(&config, "name = \"relay2\"\nrelay_key_ids = [\"relays\"]\n").expect("write");
    let config = config.to_str().expect("utf-8 path");
    let relay2 = start_relay(
        &spec,
        "relay2",
        "ns2",
        &[
            "--config",
            config,
            "--token",
            NODES_TOKEN,
            "--token",
            RELAYS_TOKEN,
        ],
    );
    // Both ns1 relays match `kind=relay`; only relay-good dials with the relays' key.
    let good = start_relay(
        &spec,
        "relay-good",
        "ns1",
        &["--token", RELAYS_TOKEN, "--token", NODES_TOKEN],
    );
    let bad = start_relay(&spec, "relay-bad", "ns1", &["--token", NODES_TOKEN]);
    let _b = start_echo(
        &spec,
        "b",
        "ns2",
        &["--advertise-relay", "relay2", "--token", NODES_TOKEN],
    );
    let relay_links = "atbus_relay_links{relay=\"RELAY\",peer_kind=\"relay\"}";
    let node_links = "atbus_relay_links{relay=\"RELAY\",peer_kind=\"node\"}";
    wait_for(
        "both ns1 relays linked to relay2, b too",
        Duration::from_secs(10),
        || {
            good.metric(relay_links) >= 1
                && bad.metric(relay_links) >= 1
                && relay2.metric(relay_links) + relay2.metric(node_links) >= 3
        },
    );
    // relay2 trusts relay-good only: relay-bad's link counts as a plain node's.
    assert_eq!(relay2.metric(relay_links), 1);
    assert_eq!(relay2.metric(node_links), 2, "b and relay-bad");

    let report = send(
        &spec,
        "a-good",
        &[
            "--to",
            "b",
            "--upstream-relay",
            "relay-good",
            "--token",
            NODES_TOKEN,
        ],
    );
    assert_eq!(report["first_hop"], "relay-good", "{report}");

    let forged = "atbus_relay_frames_dropped_total{relay=\"RELAY\",reason=\"forged_source\"}";
    assert_eq!(relay2.metric(forged), 0);
    let out = Command::new(env!("CARGO_BIN_EXE_atbus"))
        .args([
            "send",
            "--name",
            "a-bad",
            "--namespace",
            "ns1",
            "--discovery",
            &spec,
        ])
        .args([
            "--to",
            "b",
            "--upstream-relay",
            "relay-bad",
            "--token",
            NODES_TOKEN,
        ])
        .args(["--count", "10", "--timeout", "3", "--json"])
        .env_remove("ATBUS_TOKEN")
        .output()
        .expect("run atbus send");
    assert_eq!(out.status.code(), Some(1), "nothing gets through relay-bad");
    let report: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).expect("one JSON line");
    assert_eq!(report["first_hop"], "relay-bad", "{report}");
    assert_eq!(report["received"], 0, "{report}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(relay2.metric(forged) > 0, "relay2 refused a-bad's frames");
}
