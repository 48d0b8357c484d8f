//! Gateway matching and connection planning tables.

use atbus_discovery::{
    Gateway, GatewayMatch, HostMatch, MetadataMatch, NodeRecord, PlanPolicy, Reason,
    RelayPreference, RelayRef, Route, plan_connection, same_machine, same_process,
};

fn node(name: &str, ns: &str, host: &str, pid: u32) -> NodeRecord {
    let mut r = NodeRecord::new(name);
    r.metadata.namespace_name = ns.into();
    r.metadata.kind = "gamesvr".into();
    r.metadata.labels.insert("area.region".into(), "eu".into());
    r.host.hostname = host.into();
    r.host.pid = pid;
    r
}

fn ns_match(ns: &str) -> GatewayMatch {
    GatewayMatch {
        host: None,
        metadata: Some(MetadataMatch {
            namespace_name: Some(ns.into()),
            ..MetadataMatch::default()
        }),
    }
}

fn gw(priority: i32, addrs: &[&str], match_rule: GatewayMatch) -> Gateway {
    Gateway {
        priority,
        address: addrs.iter().map(|a| (*a).to_owned()).collect(),
        match_rule,
    }
}

/// Target `t` in namespace `prod` on `host-a`, pid 7, publishing: in-process and Unix
/// addresses, an internal TCP listener (prod only), and two ingress gateways for everyone.
fn target() -> NodeRecord {
    let mut t = node("target", "prod", "host-a", 7);
    t.gateways = vec![
        gw(
            0,
            &["mem://target", "unix:///run/target.sock"],
            ns_match("prod"),
        ),
        gw(
            1,
            &["tcp://10.0.0.7:7000", "udp://10.0.0.7:7001"],
            ns_match("prod"),
        ),
        gw(
            5,
            &["tcp://ingress-b.example.com:443"],
            GatewayMatch::default(),
        ),
        gw(
            9,
            &["tcp://ingress-a.example.com:443"],
            GatewayMatch::default(),
        ),
    ];
    t
}

fn plan(local: &NodeRecord, target: &NodeRecord, policy: &PlanPolicy) -> Vec<String> {
    plan_connection(local, target, policy)
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn relay(name: &str) -> RelayRef {
    RelayRef {
        name: Some(name.into()),
        metadata: None,
    }
}

#[test]
fn same_machine_and_process_rules() {
    let a = node("a", "prod", "host-a", 1);
    assert!(same_machine(&a, &node("b", "prod", "host-a", 2)));
    assert!(!same_process(&a, &node("b", "prod", "host-a", 2)));
    assert!(same_process(&a, &node("b", "prod", "host-a", 1)));
    assert!(
        !same_machine(&a, &node("b", "test", "host-a", 1)),
        "namespace differs"
    );
    assert!(
        !same_machine(&a, &node("b", "prod", "host-b", 1)),
        "host differs"
    );
    let blank = node("c", "prod", "", 1);
    assert!(
        !same_machine(&blank, &node("d", "prod", "", 1)),
        "unknown host"
    );
}

#[test]
fn gateway_matching_table() {
    let caller = node("caller", "prod", "host-a", 3);
    let m =
        |host: Option<HostMatch>, metadata: Option<MetadataMatch>| GatewayMatch { host, metadata };
    let host = |hostname: Option<&str>, pid: Option<u32>| HostMatch {
        hostname: hostname.map(Into::into),
        pid,
    };
    let meta = |f: &dyn Fn(&mut MetadataMatch)| {
        let mut x = MetadataMatch::default();
        f(&mut x);
        x
    };
    let table: Vec<(&str, GatewayMatch, bool)> = vec![
        ("empty match", GatewayMatch::default(), true),
        (
            "host name equal",
            m(Some(host(Some("host-a"), None)), None),
            true,
        ),
        (
            "host name differs",
            m(Some(host(Some("host-b"), None)), None),
            false,
        ),
        ("pid equal", m(Some(host(None, Some(3))), None), true),
        (
            "pid differs",
            m(Some(host(Some("host-a"), Some(4))), None),
            false,
        ),
        ("empty host match", m(Some(host(None, None)), None), true),
        ("namespace equal", ns_match("prod"), true),
        ("namespace differs", ns_match("test"), false),
        (
            "kind equal",
            m(None, Some(meta(&|x| x.kind = Some("gamesvr".into())))),
            true,
        ),
        (
            "kind differs",
            m(None, Some(meta(&|x| x.kind = Some("echo".into())))),
            false,
        ),
        (
            "group unset on caller",
            m(None, Some(meta(&|x| x.group = Some("g".into())))),
            false,
        ),
        (
            "label subset",
            m(
                None,
                Some(meta(&|x| {
                    x.labels.insert("area.region".into(), "eu".into());
                })),
            ),
            true,
        ),
        (
            "label value differs",
            m(
                None,
                Some(meta(&|x| {
                    x.labels.insert("area.region".into(), "us".into());
                })),
            ),
            false,
        ),
        (
            "label missing",
            m(
                None,
                Some(meta(&|x| {
                    x.labels.insert("tier".into(), "a".into());
                })),
            ),
            false,
        ),
        (
            "host and metadata both needed",
            m(Some(host(Some("host-b"), None)), Some(meta(&|_| {}))),
            false,
        ),
    ];
    for (what, rule, want) in table {
        let g = gw(0, &["tcp://h:1"], rule);
        assert_eq!(g.applies_to(&caller), want, "{what}");
    }
}

#[test]
fn planning_direct_table() {
    let policy = PlanPolicy::default();
    let t = target();
    let table: Vec<(&str, NodeRecord, Vec<&str>)> = vec![
        (
            "same process: mem, unix, internal, ingress by priority",
            node("local", "prod", "host-a", 7),
            vec![
                "mem://target (same process, gateway 0)",
                "unix:///run/target.sock (same machine, gateway 0)",
                "tcp://10.0.0.7:7000 (internal address, gateway 1, priority 1)",
                "udp://10.0.0.7:7001 (internal address, gateway 1, priority 1)",
                "tcp://ingress-a.example.com:443 (gateway 3, priority 9)",
                "tcp://ingress-b.example.com:443 (gateway 2, priority 5)",
            ],
        ),
        (
            "same machine, other process: no mem",
            node("local", "prod", "host-a", 8),
            vec![
                "unix:///run/target.sock (same machine, gateway 0)",
                "tcp://10.0.0.7:7000 (internal address, gateway 1, priority 1)",
                "udp://10.0.0.7:7001 (internal address, gateway 1, priority 1)",
                "tcp://ingress-a.example.com:443 (gateway 3, priority 9)",
                "tcp://ingress-b.example.com:443 (gateway 2, priority 5)",
            ],
        ),
        (
            "same namespace, other machine: internal first despite lower priority",
            node("local", "prod", "host-b", 7),
            vec![
                "tcp://10.0.0.7:7000 (internal address, gateway 1, priority 1)",
                "udp://10.0.0.7:7001 (internal address, gateway 1, priority 1)",
                "tcp://ingress-a.example.com:443 (gateway 3, priority 9)",
                "tcp://ingress-b.example.com:443 (gateway 2, priority 5)",
            ],
        ),
        (
            "other namespace, same host and pid: only ingress, higher priority first",
            node("local", "test", "host-a", 7),
            vec![
                "tcp://ingress-a.example.com:443 (gateway 3, priority 9)",
                "tcp://ingress-b.example.com:443 (gateway 2, priority 5)",
            ],
        ),
    ];
    for (what, local, want) in table {
        assert_eq!(plan(&local, &t, &policy), want, "{what}");
    }
}

#[test]
fn planning_to_self_is_empty() {
    let t = target();
    assert!(plan_connection(&t, &t, &PlanPolicy::default()).is_empty());
}

#[test]
fn equal_priorities_keep_publish_order_and_duplicates_and_bad_addresses_are_skipped() {
    let mut t = node("target", "prod", "host-a", 7);
    t.gateways = vec![
        gw(3, &["tcp://b:1", "not-an-address"], GatewayMatch::default()),
        gw(3, &["tcp://a:1", "tcp://b:1"], GatewayMatch::default()),
        // mem/unix offered to a caller on another machine are never listed.
        gw(
            10,
            &["mem://target", "unix:///x.sock"],
            GatewayMatch::default(),
        ),
    ];
    let local = node("local", "test", "host-z", 1);
    assert_eq!(
        plan(&local, &t, &PlanPolicy::default()),
        vec![
            "tcp://b:1 (gateway 0, priority 3)",
            "tcp://a:1 (gateway 1, priority 3)",
        ]
    );
}

#[test]
fn planning_relay_table() {
    let mut t = target();
    t.advertise_relay = Some(relay("relay-target"));
    let outsider = node("local", "test", "host-z", 1);
    let mut unreachable = target();
    unreachable.gateways.retain(|g| g.is_internal_to("prod"));
    unreachable.advertise_relay = Some(relay("relay-target"));

    let policy = |upstream: Option<&str>, pref, fallback| PlanPolicy {
        upstream_relay: upstream.map(relay),
        relay_preference: pref,
        relay_fallback: fallback,
    };
    use RelayPreference::{Own, Target};
    let ingress = [
        "tcp://ingress-a.example.com:443 (gateway 3, priority 9)",
        "tcp://ingress-b.example.com:443 (gateway 2, priority 5)",
    ];
    let own = "relay relay-own (own upstream relay)";
    let theirs = "relay relay-target (target's advertised relay)";
    let with = |tail: &[&str]| {
        ingress
            .iter()
            .chain(tail)
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    let only = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let table: Vec<(&str, &NodeRecord, PlanPolicy, Vec<String>)> = vec![
        (
            "own first, as fallback",
            &t,
            policy(Some("relay-own"), Own, true),
            with(&[own, theirs]),
        ),
        (
            "target first, as fallback",
            &t,
            policy(Some("relay-own"), Target, true),
            with(&[theirs, own]),
        ),
        ("no upstream", &t, policy(None, Own, true), with(&[theirs])),
        (
            "no fallback when direct exists",
            &t,
            policy(Some("relay-own"), Own, false),
            with(&[]),
        ),
        (
            "no direct: own first",
            &unreachable,
            policy(Some("relay-own"), Own, false),
            only(&[own, theirs]),
        ),
        (
            "no direct: target first",
            &unreachable,
            policy(Some("relay-own"), Target, false),
            only(&[theirs, own]),
        ),
        (
            "same relay listed once, under the preferred reason",
            &unreachable,
            policy(Some("relay-target"), Own, true),
            only(&["relay relay-target (own upstream relay)"]),
        ),
        (
            "relay that is the target itself is skipped",
            &unreachable,
            policy(Some("target"), Own, true),
            only(&[theirs]),
        ),
    ];
    for (what, target, policy, want) in table {
        assert_eq!(plan(&outsider, target, &policy), want, "{what}");
    }

    let mut nothing = unreachable.clone();
    nothing.advertise_relay = None;
    assert!(
        plan(&outsider, &nothing, &PlanPolicy::default()).is_empty(),
        "no route at all"
    );
}

#[test]
fn candidates_carry_structured_reasons() {
    let mut t = target();
    t.advertise_relay = Some(RelayRef {
        name: None,
        metadata: Some(MetadataMatch {
            kind: Some("relay".into()),
            ..MetadataMatch::default()
        }),
    });
    let local = node("local", "prod", "host-a", 7);
    let plan = plan_connection(&local, &t, &PlanPolicy::default());
    assert_eq!(plan[0].reason, Reason::SameProcess { gateway: 0 });
    assert_eq!(
        plan[2].reason,
        Reason::InternalGateway {
            gateway: 1,
            priority: 1
        }
    );
    let last = plan.last().expect("relay candidate");
    assert_eq!(last.reason, Reason::TargetRelay);
    assert!(matches!(&last.route, Route::Relay(r) if r.name.is_none()));
    assert_eq!(
        last.to_string(),
        "relay by metadata (target's advertised relay)"
    );
}

#[test]
fn relay_ref_resolution() {
    let mut r = node("relay-1", "prod", "h", 1);
    r.metadata.kind = "relay".into();
    assert!(relay("relay-1").matches(&r));
    assert!(!relay("relay-2").matches(&r));
    assert!(
        !RelayRef::default().matches(&r),
        "empty reference names nothing"
    );
    let by_kind = RelayRef {
        name: None,
        metadata: Some(MetadataMatch {
            kind: Some("relay".into()),
            ..MetadataMatch::default()
        }),
    };
    assert!(by_kind.matches(&r));
}

#[test]
fn policy_serde_uses_lowercase_preference() {
    let p: PlanPolicy = serde_json::from_str(r#"{"relay_preference":"target"}"#).expect("parse");
    assert_eq!(p.relay_preference, RelayPreference::Target);
    assert!(p.relay_fallback);
    assert!(p.upstream_relay.is_none());
}
