//! What the etcd tests share: a backend configured for quick tests, records, and the
//! register / wait steps every test repeats.

#![allow(dead_code)] // Each test binary uses some of them.

use std::collections::BTreeMap;
use std::time::Duration;

use atbus_discovery::{Discovery, DiscoveryError, DiscoveryEvent, NodeRecord};
use atbus_discovery_etcd::testing::EtcdProcess;
use atbus_discovery_etcd::{Backoff, EtcdConfig, EtcdDiscovery};

/// The backend's configuration for `etcd` with short leases, backoffs and timeouts;
/// `request_timeout` bounds each request.
pub fn quick_config(etcd: &EtcdProcess, request_timeout: Duration) -> EtcdConfig {
    let mut c = EtcdConfig::new(vec![etcd.endpoint()]);
    c.lease_ttl = Duration::from_secs(2);
    c.backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
    };
    c.rpc_timeout = Duration::from_secs(1);
    c.request_timeout = request_timeout;
    c.shutdown_timeout = Duration::from_secs(1);
    c
}

/// A record of `kind`.
pub fn kind_record(name: &str, kind: &str) -> NodeRecord {
    let mut r = NodeRecord::new(name);
    r.metadata.kind = kind.into();
    r
}

/// The backend's next event, failing the test after 15 s.
pub fn next(d: &mut EtcdDiscovery) -> DiscoveryEvent {
    d.wait_event(Duration::from_secs(15))
        .expect("an event within 15 s")
}

/// Registers `r` and expects `Registered`.
pub fn register(d: &mut EtcdDiscovery, r: NodeRecord) {
    let req = d.register(r);
    match next(d) {
        DiscoveryEvent::Registered { request, .. } if request == req => {}
        other => panic!("expected Registered for {req}, got {other:?}"),
    }
}

/// Registers `r` and expects the request to end with `Unavailable`; returns its reason.
pub fn register_fails(d: &mut EtcdDiscovery, r: NodeRecord) -> String {
    let req = d.register(r);
    match next(d) {
        DiscoveryEvent::Error {
            request: Some(request),
            error: DiscoveryError::Unavailable { reason },
        } if request == req => reason,
        other => panic!("expected an error for {req}, got {other:?}"),
    }
}

/// Runs `f` with a plain etcd client of `etcd` (logged in with `options`).
pub fn raw<T>(
    etcd: &EtcdProcess,
    options: Option<etcd_client::ConnectOptions>,
    f: impl AsyncFnOnce(etcd_client::Client) -> T,
) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = etcd_client::Client::connect([etcd.endpoint()], options)
            .await
            .expect("etcd client");
        f(c).await
    })
}

/// Every record in etcd, by name, read behind the backend's back.
pub fn stored_records(
    etcd: &EtcdProcess,
    options: Option<etcd_client::ConnectOptions>,
) -> BTreeMap<String, NodeRecord> {
    raw(etcd, options, async |mut c| {
        let r = c
            .get(
                "/atbus/nodes/",
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await
            .expect("list");
        r.kvs()
            .iter()
            .map(|kv| {
                let rec = NodeRecord::from_json(kv.value()).expect("valid record");
                (rec.name.clone(), rec)
            })
            .collect()
    })
}
