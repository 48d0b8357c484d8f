//! The embedded backend: register, duplicates, ownership, list, watch, overflow, static files.

use atbus_discovery::{
    Discovery, DiscoveryEvent, HandleConfig, MemoryDiscovery, MemoryRegistry, NodeRecord,
    RefuseReason, RequestId, Selector, StaticFileError, parse_static_records,
};

fn record(name: &str, kind: &str) -> NodeRecord {
    let mut r = NodeRecord::new(name);
    r.metadata.kind = kind.into();
    r
}

fn drain(h: &mut MemoryDiscovery) -> Vec<DiscoveryEvent> {
    std::iter::from_fn(|| h.poll_event()).collect()
}

fn names(records: &[NodeRecord]) -> Vec<&str> {
    records.iter().map(|r| r.name.as_str()).collect()
}

#[test]
fn register_duplicate_get_list() {
    let reg = MemoryRegistry::new();
    let mut a = reg.handle();
    let mut b = reg.handle();

    let r1 = a.register(record("echo-1", "echo"));
    let r2 = b.register(record("echo-1", "other"));
    assert_eq!(
        drain(&mut a),
        vec![DiscoveryEvent::Registered {
            request: r1,
            name: "echo-1".into()
        }]
    );
    assert_eq!(
        drain(&mut b),
        vec![DiscoveryEvent::Refused {
            request: r2,
            reason: RefuseReason::NameTaken {
                name: "echo-1".into()
            }
        }]
    );
    assert_eq!(
        reg.get("echo-1").map(|r| r.metadata.kind),
        Some("echo".into())
    );

    b.register(record("game-1", "gamesvr"));
    drain(&mut b);
    let g = b.get("echo-1");
    let missing = b.get("nope");
    let l = b.list(&Selector::parse("kind in (echo,gamesvr)").expect("selector"));
    let events = drain(&mut b);
    assert!(
        matches!(&events[0], DiscoveryEvent::Record { request, record: Some(r) } if *request == g && r.name == "echo-1")
    );
    assert_eq!(
        events[1],
        DiscoveryEvent::Record {
            request: missing,
            record: None
        }
    );
    match &events[2] {
        DiscoveryEvent::List { request, records } => {
            assert_eq!(*request, l);
            assert_eq!(names(records), ["echo-1", "game-1"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_requests_are_refused() {
    let reg = MemoryRegistry::new();
    let mut a = reg.handle();
    let r = a.register(NodeRecord::new("Bad_Name"));
    let bad_sel = Selector {
        match_labels: [("bad key".to_owned(), "x".to_owned())].into(),
        ..Selector::default()
    };
    let l = a.list(&bad_sel);
    let w = a.watch(&bad_sel);
    let u = a.unwatch(RequestId(99));
    let events = drain(&mut a);
    assert!(
        matches!(&events[0], DiscoveryEvent::Refused { request, reason: RefuseReason::Invalid(e) } if *request == r && e.has_field("name"))
    );
    assert!(
        matches!(&events[1], DiscoveryEvent::Refused { request, reason: RefuseReason::InvalidSelector(_) } if *request == l)
    );
    assert!(
        matches!(&events[2], DiscoveryEvent::Refused { request, reason: RefuseReason::InvalidSelector(_) } if *request == w)
    );
    assert!(
        matches!(&events[3], DiscoveryEvent::Refused { request, reason: RefuseReason::NoSuchWatch { .. } } if *request == u)
    );
    assert!(reg.is_empty());
}

#[test]
fn only_the_owner_updates_and_deregisters() {
    let reg = MemoryRegistry::new();
    let mut a = reg.handle();
    let mut b = reg.handle();
    a.register(record("echo-1", "echo"));
    drain(&mut a);

    b.update(record("echo-1", "hijack"));
    b.deregister("echo-1");
    b.deregister("nope");
    let reasons: Vec<RefuseReason> = drain(&mut b)
        .into_iter()
        .filter_map(|e| match e {
            DiscoveryEvent::Refused { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            RefuseReason::NotOwner {
                name: "echo-1".into()
            },
            RefuseReason::NotOwner {
                name: "echo-1".into()
            },
            RefuseReason::NotRegistered {
                name: "nope".into()
            },
        ]
    );

    let u = a.update(record("echo-1", "echo2"));
    let d = a.deregister("echo-1");
    assert_eq!(
        drain(&mut a),
        vec![
            DiscoveryEvent::Updated {
                request: u,
                name: "echo-1".into()
            },
            DiscoveryEvent::Deregistered {
                request: d,
                name: "echo-1".into()
            },
        ]
    );
    assert!(reg.is_empty());
}

#[test]
fn watch_delivers_snapshot_then_changes_to_every_matching_handle() {
    let reg = MemoryRegistry::new();
    let mut server = reg.handle();
    let mut w1 = reg.handle();
    let mut w2 = reg.handle();
    server.register(record("echo-1", "echo"));
    drain(&mut server);

    let echo = Selector::parse("kind=echo").expect("selector");
    let id1 = w1.watch(&echo);
    let id2 = w2.watch(&Selector::parse("kind=gamesvr").expect("selector"));
    match &drain(&mut w1)[..] {
        [DiscoveryEvent::List { request, records }] => {
            assert_eq!(*request, id1);
            assert_eq!(names(records), ["echo-1"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(&drain(&mut w2)[..], [DiscoveryEvent::List { records, .. }] if records.is_empty())
    );

    server.register(record("echo-2", "echo"));
    server.update(record("echo-1", "gamesvr")); // leaves w1's selector, enters w2's
    server.deregister("echo-1");
    assert_eq!(
        drain(&mut w1),
        vec![
            DiscoveryEvent::Put {
                watch: id1,
                record: Box::new(record("echo-2", "echo"))
            },
            DiscoveryEvent::Delete {
                watch: id1,
                name: "echo-1".into()
            },
        ]
    );
    assert_eq!(
        drain(&mut w2),
        vec![
            DiscoveryEvent::Put {
                watch: id2,
                record: Box::new(record("echo-1", "gamesvr"))
            },
            DiscoveryEvent::Delete {
                watch: id2,
                name: "echo-1".into()
            },
        ]
    );

    // Dropping a handle removes what it registered, like a revoked lease.
    drop(server);
    assert_eq!(
        drain(&mut w1),
        vec![DiscoveryEvent::Delete {
            watch: id1,
            name: "echo-2".into()
        }]
    );

    let un = w1.unwatch(id1);
    reg.put(record("echo-3", "echo")).expect("valid");
    assert_eq!(
        drain(&mut w1),
        vec![DiscoveryEvent::Unwatched {
            request: un,
            watch: id1
        }]
    );
}

#[test]
fn api_driven_records_belong_to_no_handle() {
    let reg = MemoryRegistry::new();
    reg.put(record("static-1", "echo")).expect("valid");
    assert!(reg.put(NodeRecord::new("-bad")).is_err());
    let mut a = reg.handle();
    a.deregister("static-1");
    assert!(matches!(
        &drain(&mut a)[..],
        [DiscoveryEvent::Refused {
            reason: RefuseReason::NotOwner { .. },
            ..
        }]
    ));
    assert!(reg.remove("static-1"));
    assert!(!reg.remove("static-1"));
}

#[test]
fn full_queue_reports_overflow_and_cancels_watches() {
    let reg = MemoryRegistry::new();
    let mut w = reg.handle_with(HandleConfig {
        queue_capacity: 3,
        max_watches: 1,
    });
    let watch = w.watch(&Selector::everything());
    let second = w.watch(&Selector::everything());
    for i in 0..5 {
        reg.put(record(&format!("n-{i}"), "echo")).expect("valid");
    }
    let events = drain(&mut w);
    assert!(matches!(&events[0], DiscoveryEvent::List { request, .. } if *request == watch));
    assert!(
        matches!(&events[1], DiscoveryEvent::Refused { request, reason: RefuseReason::TooManyWatches { max: 1 } } if *request == second)
    );
    assert!(matches!(&events[2], DiscoveryEvent::Put { .. }));
    assert_eq!(
        events[3],
        DiscoveryEvent::Overflow {
            dropped: 1,
            cancelled_watches: vec![watch]
        }
    );
    assert_eq!(events.len(), 4, "the cancelled watch reports nothing more");
    // The handle works again after the overflow was reported.
    let g = w.get("n-0");
    assert!(
        matches!(&drain(&mut w)[..], [DiscoveryEvent::Record { request, record: Some(_) }] if *request == g)
    );
}

const STATIC: &str = r#"
[[node]]
name = "echo-1"
version = "0.1.0"
tokens = ["key-1"]
host = { hostname = "host-a", pid = 10 }

[node.metadata]
namespace_name = "prod"
kind = "echo"
labels = { "area.region" = "eu" }

[[node.gateways]]
priority = 10
address = ["tcp://10.0.0.1:7000"]
match = { metadata = { namespace_name = "prod" } }

[[node]]
name = "relay-1"
metadata = { kind = "relay" }
"#;

#[test]
fn static_file_loads_into_a_registry() {
    let reg = MemoryRegistry::from_toml_str(STATIC).expect("static file");
    assert_eq!(reg.len(), 2);
    let echo = reg.get("echo-1").expect("echo-1");
    assert_eq!(echo.gateways[0].priority, 10);
    assert!(echo.gateways[0].is_internal_to("prod"));
    let relays = reg.list(&Selector::parse("kind=relay").expect("selector"));
    assert_eq!(names(&relays), ["relay-1"]);
}

#[test]
fn static_file_errors() {
    assert!(matches!(
        parse_static_records("[[node]]\nname = 1"),
        Err(StaticFileError::Toml(_))
    ));
    assert!(matches!(
        parse_static_records("[[nodes]]\nname = \"a\""),
        Err(StaticFileError::Toml(_))
    ));
    match parse_static_records("[[node]]\nname = \"a\"\n[[node]]\nname = \"B\"") {
        Err(StaticFileError::Invalid { index, errors, .. }) => {
            assert_eq!(index, 1);
            assert!(errors.has_field("name"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        parse_static_records("[[node]]\nname = \"a\"\n[[node]]\nname = \"a\""),
        Err(StaticFileError::DuplicateName { index: 1, .. })
    ));
    assert_eq!(parse_static_records("").map(|v| v.len()).ok(), Some(0));
}
