//! User/password authentication of the etcd backend against a real `etcd` (Debian package
//! `etcd-server`) with auth enabled by `etcdctl` (package `etcd-client`), started on free
//! loopback ports with a temporary data dir. A missing `etcd` or `etcdctl` fails every test.

use std::collections::BTreeMap;
use std::time::Duration;

use atbus_discovery::{Discovery, DiscoveryEvent, NodeRecord, Selector};
use atbus_discovery_etcd::{EtcdAuth, EtcdDiscovery};

use atbus_discovery_etcd::testing::EtcdProcess as Etcd;
use common::{next, register_fails};

mod common;

const USER: &str = "root";
const PASSWORD: &str = "rootpw";

/// Reads the store behind the backend's back.
trait Store {
    /// Every record in etcd, by name, read by a plain client logged in as root.
    fn records(&self) -> BTreeMap<String, NodeRecord>;
}

impl Store for Etcd {
    fn records(&self) -> BTreeMap<String, NodeRecord> {
        let options = etcd_client::ConnectOptions::new().with_user(USER, PASSWORD);
        common::stored_records(self, Some(options))
    }
}

fn handle(etcd: &Etcd, auth: Option<(&str, &str)>) -> EtcdDiscovery {
    let mut c = common::quick_config(etcd, Duration::from_secs(5));
    c.auth = auth.map(|(user, password)| EtcdAuth {
        user: user.into(),
        password: password.into(),
    });
    EtcdDiscovery::new(c).expect("worker")
}

fn record(name: &str) -> NodeRecord {
    common::kind_record(name, "echo")
}

#[test]
fn user_and_password_register_and_list() {
    let etcd = Etcd::start_with_auth(USER, PASSWORD);
    let mut d = handle(&etcd, Some((USER, PASSWORD)));
    let echo = record("echo-1");
    let req = d.register(echo.clone());
    match next(&mut d) {
        DiscoveryEvent::Registered { request, name } if request == req => {
            assert_eq!(name, "echo-1");
        }
        other => panic!("expected Registered for {req}, got {other:?}"),
    }
    let req = d.list(&Selector::parse("kind=echo").expect("selector"));
    match next(&mut d) {
        DiscoveryEvent::List { request, records } if request == req => {
            assert_eq!(records, vec![echo.clone()]);
        }
        other => panic!("expected List for {req}, got {other:?}"),
    }
    assert_eq!(etcd.records().get("echo-1"), Some(&echo));

    // Shutting down revokes the lease under auth too.
    d.shutdown();
    assert!(etcd.records().is_empty());
}

#[test]
fn wrong_password_is_an_error_and_writes_nothing() {
    let etcd = Etcd::start_with_auth(USER, PASSWORD);
    let mut d = handle(&etcd, Some((USER, "not-the-password")));
    let reason = register_fails(&mut d, record("echo-1"));
    assert!(
        reason.contains("authentication failed"),
        "unexpected reason: {reason}"
    );
    assert!(etcd.records().is_empty());
}

#[test]
fn without_auth_nothing_can_be_written() {
    let etcd = Etcd::start_with_auth(USER, PASSWORD);
    let mut d = handle(&etcd, None);
    let reason = register_fails(&mut d, record("echo-1"));
    assert!(
        reason.contains("user name is empty"),
        "unexpected reason: {reason}"
    );
    assert!(etcd.records().is_empty());
}
