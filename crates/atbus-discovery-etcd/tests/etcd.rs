//! The etcd backend against a real `etcd` process (Debian package `etcd-server`) started on
//! free loopback ports with a temporary data dir. A missing `etcd` binary fails every test.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use atbus_discovery::{
    Discovery, DiscoveryError, DiscoveryEvent, NodeRecord, RefuseReason, RequestId, Selector,
};
use atbus_discovery_etcd::{Backoff, EtcdConfig, EtcdDiscovery};

use atbus_discovery_etcd::testing::{EtcdProcess as Etcd, free_port};
use common::{next, register};

mod common;

/// Reads and changes the store behind the backend's back.
trait Store {
    /// A plain etcd client.
    fn raw<T>(&self, f: impl AsyncFnOnce(etcd_client::Client) -> T) -> T;
    /// Every record in etcd, by name.
    fn records(&self) -> BTreeMap<String, NodeRecord>;
}

impl Store for Etcd {
    fn raw<T>(&self, f: impl AsyncFnOnce(etcd_client::Client) -> T) -> T {
        common::raw(self, None, f)
    }

    fn records(&self) -> BTreeMap<String, NodeRecord> {
        common::stored_records(self, None)
    }
}

fn config(etcd: &Etcd) -> EtcdConfig {
    common::quick_config(etcd, Duration::from_secs(10))
}

fn handle(etcd: &Etcd) -> EtcdDiscovery {
    EtcdDiscovery::new(config(etcd)).expect("worker")
}

fn record(name: &str, kind: &str) -> NodeRecord {
    let mut r = common::kind_record(name, kind);
    r.metadata.labels.insert("area.region".into(), "eu".into());
    r
}

/// Opens a watch and returns its id and first list.
fn watch(d: &mut EtcdDiscovery, selector: &str) -> (RequestId, BTreeMap<String, NodeRecord>) {
    let req = d.watch(&Selector::parse(selector).expect("selector"));
    match next(d) {
        DiscoveryEvent::List { request, records } if request == req => (
            req,
            records.into_iter().map(|r| (r.name.clone(), r)).collect(),
        ),
        other => panic!("expected List for {req}, got {other:?}"),
    }
}

/// Applies watch events to `view` until `done(view)` or the timeout; returns the events seen.
fn pump(
    d: &mut EtcdDiscovery,
    w: RequestId,
    view: &mut BTreeMap<String, NodeRecord>,
    timeout: Duration,
    done: impl Fn(&BTreeMap<String, NodeRecord>) -> bool,
) -> Vec<DiscoveryEvent> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while !done(view) {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("timed out; view {view:?}, events {seen:?}"));
        let Some(e) = d.wait_event(left) else {
            panic!("timed out; view {view:?}, events {seen:?}");
        };
        match &e {
            DiscoveryEvent::Put { watch, record } if *watch == w => {
                view.insert(record.name.clone(), (**record).clone());
            }
            DiscoveryEvent::Delete { watch, name } if *watch == w => {
                view.remove(name);
            }
            other => panic!("unexpected event {other:?}"),
        }
        seen.push(e);
    }
    seen
}

fn names(view: &BTreeMap<String, NodeRecord>) -> Vec<&str> {
    view.keys().map(String::as_str).collect()
}

#[test]
fn register_list_watch_between_two_nodes() {
    let etcd = Etcd::start();
    let mut a = handle(&etcd);
    let mut b = handle(&etcd);

    let (w, mut view) = watch(&mut b, "kind=echo");
    assert!(view.is_empty());

    let echo = record("echo-1", "echo");
    register(&mut a, echo.clone());
    pump(&mut b, w, &mut view, Duration::from_secs(10), |v| {
        v.contains_key("echo-1")
    });
    assert_eq!(view["echo-1"], echo);

    // Key layout: one key per node, the record's JSON as value, attached to a lease.
    let (value, lease) = etcd.raw(async |mut c| {
        let r = c.get("/atbus/nodes/echo-1", None).await.expect("get");
        let kv = &r.kvs()[0];
        (kv.value().to_vec(), kv.lease())
    });
    assert_eq!(value, echo.to_json().expect("json").into_bytes());
    assert_ne!(lease, 0);

    // list and get from the other node.
    let req = b.list(&Selector::parse("kind=echo,area.region=eu").expect("selector"));
    match next(&mut b) {
        DiscoveryEvent::List { request, records } if request == req => {
            assert_eq!(records, vec![echo.clone()]);
        }
        other => panic!("{other:?}"),
    }
    let req = b.get("echo-1");
    assert_eq!(
        next(&mut b),
        DiscoveryEvent::Record {
            request: req,
            record: Some(Box::new(echo.clone()))
        }
    );
    let req = b.get("nobody");
    assert_eq!(
        next(&mut b),
        DiscoveryEvent::Record {
            request: req,
            record: None
        }
    );

    // Update by the owner: the watcher sees the new record.
    let mut echo2 = echo.clone();
    echo2.custom_data = "v2".into();
    let req = a.update(echo2.clone());
    assert!(matches!(next(&mut a), DiscoveryEvent::Updated { request, .. } if request == req));
    pump(&mut b, w, &mut view, Duration::from_secs(10), |v| {
        v.get("echo-1").is_some_and(|r| r.custom_data == "v2")
    });

    // Only the owner may change it; unknown names are not registered; bad records refused.
    let req = b.update(echo2.clone());
    assert!(matches!(next(&mut b),
        DiscoveryEvent::Refused { request, reason: RefuseReason::NotOwner { .. } } if request == req));
    let req = b.deregister("echo-1");
    assert!(matches!(next(&mut b),
        DiscoveryEvent::Refused { request, reason: RefuseReason::NotOwner { .. } } if request == req));
    let req = b.deregister("nobody");
    assert!(matches!(next(&mut b),
        DiscoveryEvent::Refused { request, reason: RefuseReason::NotRegistered { .. } } if request == req));
    let req = a.register(NodeRecord::new("Bad_Name"));
    assert!(matches!(next(&mut a),
        DiscoveryEvent::Refused { request, reason: RefuseReason::Invalid(_) } if request == req));

    // A record the selector does not match changes nothing for the watch; a record that
    // stops matching is a Delete.
    register(&mut a, record("relay-1", "relay"));
    let mut moved = echo2.clone();
    moved.metadata.kind = "other".into();
    let req = a.update(moved);
    assert!(matches!(next(&mut a), DiscoveryEvent::Updated { request, .. } if request == req));
    let seen = pump(&mut b, w, &mut view, Duration::from_secs(10), |v| {
        v.is_empty()
    });
    assert_eq!(
        seen,
        vec![DiscoveryEvent::Delete {
            watch: w,
            name: "echo-1".into()
        }]
    );

    // Deregister, then a handle that goes away: its lease is revoked, its records vanish.
    register(&mut a, record("echo-2", "echo"));
    pump(&mut b, w, &mut view, Duration::from_secs(10), |v| {
        v.contains_key("echo-2")
    });
    let req = a.deregister("echo-1");
    assert!(matches!(next(&mut a), DiscoveryEvent::Deregistered { request, .. } if request == req));
    drop(a);
    pump(&mut b, w, &mut view, Duration::from_secs(10), |v| {
        v.is_empty()
    });
    assert!(etcd.records().is_empty(), "{:?}", etcd.records());

    let req = b.unwatch(w);
    assert_eq!(
        next(&mut b),
        DiscoveryEvent::Unwatched {
            request: req,
            watch: w
        }
    );
    let req = b.unwatch(w);
    assert!(matches!(next(&mut b), DiscoveryEvent::Refused { request, .. } if request == req));
}

#[test]
fn duplicate_name_refused() {
    let etcd = Etcd::start();
    let mut a = handle(&etcd);
    let mut b = handle(&etcd);
    register(&mut a, record("dup", "echo"));
    for d in [&mut b, &mut a] {
        let req = d.register(record("dup", "other"));
        match next(d) {
            DiscoveryEvent::Refused {
                request,
                reason: RefuseReason::NameTaken { name },
            } if request == req => assert_eq!(name, "dup"),
            other => panic!("expected NameTaken, got {other:?}"),
        }
    }
    assert_eq!(etcd.records()["dup"].metadata.kind, "echo");
    let req = a.deregister("dup");
    assert!(matches!(next(&mut a), DiscoveryEvent::Deregistered { request, .. } if request == req));
    register(&mut b, record("dup", "other"));
    assert_eq!(etcd.records()["dup"].metadata.kind, "other");
}

#[test]
fn etcd_restart_keeps_registration_and_watch() {
    let mut etcd = Etcd::start();
    let mut a = handle(&etcd);
    let mut w = handle(&etcd);
    register(&mut a, record("node-a", "echo"));
    register(&mut a, record("node-gone", "echo"));
    let (wid, mut view) = watch(&mut w, "");
    assert_eq!(names(&view), ["node-a", "node-gone"]);
    let opens = w.stats().watch_opens;

    etcd.kill();
    // A request made while etcd is down is retried until it is back.
    let mut a2 = record("node-a", "echo");
    a2.custom_data = "during-outage".into();
    let req = a.update(a2.clone());
    std::thread::sleep(Duration::from_millis(700));
    etcd.restart();
    // Changes made right after the restart, before the backend's streams are back: the
    // watch must not miss them (it resumes from its last revision + 1).
    etcd.raw(async |mut c| {
        let r = record("node-direct", "echo");
        c.put("/atbus/nodes/node-direct", r.to_json().expect("json"), None)
            .await
            .expect("put");
    });
    let req_gone = a.deregister("node-gone");
    assert!(matches!(next(&mut a), DiscoveryEvent::Updated { request, .. } if request == req));
    assert!(
        matches!(next(&mut a), DiscoveryEvent::Deregistered { request, .. } if request == req_gone)
    );
    let mut b = handle(&etcd);
    register(&mut b, record("node-b", "echo"));

    pump(&mut w, wid, &mut view, Duration::from_secs(15), |v| {
        names(v) == ["node-a", "node-b", "node-direct"]
            && v["node-a"].custom_data == "during-outage"
    });
    assert!(w.stats().watch_opens > opens, "{:?}", w.stats());

    // The lease of `a` survived (etcd extends leases on restart) and is still kept alive.
    std::thread::sleep(Duration::from_secs(3));
    assert!(etcd.records().contains_key("node-a"));
    let req = a.deregister("node-a");
    assert!(matches!(next(&mut a), DiscoveryEvent::Deregistered { request, .. } if request == req));
    pump(&mut w, wid, &mut view, Duration::from_secs(10), |v| {
        !v.contains_key("node-a")
    });

    // The watcher's view (List + events) and its cache equal etcd's state.
    let truth = etcd.records();
    assert_eq!(view, truth);
    let cached: BTreeMap<String, NodeRecord> = w
        .cached_records()
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
    assert_eq!(cached, truth);
}

#[test]
fn lease_expiry_while_etcd_stopped() {
    let etcd = Etcd::start();
    let mut a = handle(&etcd);
    let mut w = handle(&etcd);
    register(&mut a, record("frozen", "echo"));
    let (wid, mut view) = watch(&mut w, "kind=echo");
    assert_eq!(names(&view), ["frozen"]);

    // Stopped longer than the 2 s TTL: once it runs again etcd expires the lease at once.
    etcd.signal("-STOP");
    std::thread::sleep(Duration::from_secs(4));
    etcd.signal("-CONT");

    // The peer sees the record go, then come back once the node has registered again.
    let gone = pump(&mut w, wid, &mut view, Duration::from_secs(20), |v| {
        !v.contains_key("frozen")
    });
    assert_eq!(gone.len(), 1, "{gone:?}");
    let back = pump(&mut w, wid, &mut view, Duration::from_secs(20), |v| {
        v.contains_key("frozen")
    });
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(view["frozen"], record("frozen", "echo"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.stats().reregistrations == 0 {
        assert!(Instant::now() < deadline, "{:?}", a.stats());
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = a.stats();
    assert!(
        stats.lease_losses >= 1 && stats.lease_grants >= 2,
        "{stats:?}"
    );
    assert!(etcd.records().contains_key("frozen"));

    // The new lease is kept alive: the record outlives several TTLs.
    std::thread::sleep(Duration::from_secs(3));
    assert!(etcd.records().contains_key("frozen"));
    assert!(a.poll_event().is_none());
}

#[test]
fn compaction_rebuilds_cache_with_synthetic_events() {
    let etcd = Etcd::start();
    let mut a = handle(&etcd);
    let mut w = handle(&etcd);
    register(&mut a, record("keep", "echo"));
    register(&mut a, record("old", "echo"));
    let (wid, mut view) = watch(&mut w, "kind=echo");
    assert_eq!(names(&view), ["keep", "old"]);

    // The watcher loses its stream; meanwhile records change and history is compacted.
    assert!(w.debug_suspend_watch(true));
    let req = a.deregister("old");
    assert!(matches!(next(&mut a), DiscoveryEvent::Deregistered { request, .. } if request == req));
    register(&mut a, record("new", "echo"));
    let mut keep2 = record("keep", "echo");
    keep2.custom_data = "changed".into();
    let req = a.update(keep2.clone());
    assert!(matches!(next(&mut a), DiscoveryEvent::Updated { request, .. } if request == req));
    etcd.raw(async |mut c| {
        let rev = c
            .get("/", None)
            .await
            .expect("get")
            .header()
            .expect("header")
            .revision();
        c.compact(rev, None).await.expect("compact");
    });

    // Reopening below the compacted revision is refused; the re-list is diffed.
    assert!(w.debug_suspend_watch(false));
    let seen = pump(&mut w, wid, &mut view, Duration::from_secs(10), |v| {
        names(v) == ["keep", "new"] && v["keep"].custom_data == "changed"
    });
    assert_eq!(
        seen,
        vec![
            DiscoveryEvent::Put {
                watch: wid,
                record: Box::new(keep2)
            },
            DiscoveryEvent::Put {
                watch: wid,
                record: Box::new(record("new", "echo"))
            },
            DiscoveryEvent::Delete {
                watch: wid,
                name: "old".into()
            },
        ]
    );
    let stats = w.stats();
    assert_eq!(stats.compactions, 1, "{stats:?}");
    assert_eq!(stats.synthetic_events, 3, "{stats:?}");
    assert_eq!(view, etcd.records());

    // The watch goes on normally afterwards.
    register(&mut a, record("later", "echo"));
    pump(&mut w, wid, &mut view, Duration::from_secs(10), |v| {
        v.contains_key("later")
    });
    assert_eq!(view, etcd.records());
}

#[test]
fn overflow_cancels_watches_like_the_memory_backend() {
    let etcd = Etcd::start();
    let mut a = handle(&etcd);
    let mut cfg = config(&etcd);
    cfg.event_queue_capacity = 2;
    let mut w = EtcdDiscovery::new(cfg).expect("worker");
    let (wid, _) = watch(&mut w, "");
    for n in ["o-1", "o-2", "o-3", "o-4"] {
        register(&mut a, record(n, "echo"));
    }
    // Wait until the cache has seen all four, then read: two Puts, then the overflow (the
    // third Put was dropped and cancelled the watch, so the fourth made no event).
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.cached_records().len() < 4 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(matches!(next(&mut w), DiscoveryEvent::Put { .. }));
    assert!(matches!(next(&mut w), DiscoveryEvent::Put { .. }));
    assert_eq!(
        next(&mut w),
        DiscoveryEvent::Overflow {
            dropped: 1,
            cancelled_watches: vec![wid]
        }
    );
    // The queue works again and the watch is gone.
    let req = w.unwatch(wid);
    assert!(matches!(next(&mut w),
        DiscoveryEvent::Refused { request, reason: RefuseReason::NoSuchWatch { .. } } if request == req));
}

#[test]
fn unreachable_etcd_answers_unavailable() {
    // Not a test of etcd itself, but it needs a port where nothing listens.
    let port = free_port();
    let mut cfg = EtcdConfig::new(vec![format!("http://127.0.0.1:{port}")]);
    cfg.request_timeout = Duration::from_millis(600);
    cfg.rpc_timeout = Duration::from_millis(200);
    cfg.backoff = Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(100),
    };
    let mut d = EtcdDiscovery::new(cfg).expect("worker starts without etcd");
    let req = d.get("x");
    match next(&mut d) {
        DiscoveryEvent::Error {
            request,
            error: DiscoveryError::Unavailable { .. },
        } => assert_eq!(request, Some(req)),
        other => panic!("{other:?}"),
    }
    d.shutdown();
    let req = d.get("x");
    assert!(matches!(next(&mut d), DiscoveryEvent::Error { request, .. } if request == Some(req)));
}

#[test]
fn revoked_lease_reregisters_and_reports_names_taken_meanwhile() {
    let etcd = Etcd::start();
    let mut a = handle(&etcd);
    register(&mut a, record("mine", "echo"));
    register(&mut a, record("stolen", "echo"));
    // Revoke the lease behind the backend's back and take one of the names at once.
    etcd.raw(async |mut c| {
        let r = c.get("/atbus/nodes/mine", None).await.expect("get");
        c.lease_revoke(r.kvs()[0].lease()).await.expect("revoke");
        let thief = record("stolen", "thief");
        c.put("/atbus/nodes/stolen", thief.to_json().expect("json"), None)
            .await
            .expect("put");
    });
    match next(&mut a) {
        DiscoveryEvent::Error {
            request: None,
            error: DiscoveryError::Unavailable { reason },
        } => assert!(reason.contains("stolen"), "{reason}"),
        other => panic!("expected the lost-name error, got {other:?}"),
    }
    let records = etcd.records();
    assert_eq!(records["mine"], record("mine", "echo"));
    assert_eq!(records["stolen"].metadata.kind, "thief");
    let stats = a.stats();
    assert_eq!(
        (stats.lease_losses, stats.reregistrations),
        (1, 1),
        "{stats:?}"
    );
    let req = a.update(record("stolen", "echo"));
    assert!(matches!(next(&mut a),
        DiscoveryEvent::Refused { request, reason: RefuseReason::NotOwner { .. } } if request == req));
}
