//! Assigned names unique across nodes through a real etcd: two `atbus node --anonymous
//! --discovery etcd://…` loops whose RNGs are seeded alike (so they draw the same names)
//! reserve every name with put-if-absent before accepting the peer, so anonymous clients
//! connecting over real TCP never get the same name; a third loop seeded alike without
//! discovery shows the collision was real. Stopping a node revokes its lease and its names.

use std::time::{Duration, Instant};

use atbus_cli::discovery::Spec;
use atbus_cli::node::{AuthOptions, Options, StopSignal, run_with_seed};
use atbus_discovery::Selector;
use atbus_discovery_etcd::testing::{EtcdProcess as Etcd, free_port};
use atbus_node::{NodeConfig, NodeEvent};
use atbus_transport_mio::{NodeDriver, TransportConfig, Url};

const SEED: u64 = 0x5eed;

struct Server {
    url: Url,
    stop: StopSignal,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    fn start(name: &str, discovery: Option<&str>) -> Self {
        let url: Url = format!("tcp://127.0.0.1:{}", free_port()).parse().unwrap();
        let options = Options {
            name: name.to_owned(),
            namespace: String::new(),
            listen: vec![url.clone()],
            connect: Vec::new(),
            tokens: Vec::new(),
            echo: false,
            discovery: discovery.map(|s| Spec::parse(s).unwrap()),
            labels: Default::default(),
            gateways: Vec::new(),
            upstream_relay: None,
            advertise_relay: None,
            relay_preference: atbus_discovery::RelayPreference::Own,
        };
        let auth = AuthOptions {
            anonymous: true,
            ..AuthOptions::default()
        };
        let stop = StopSignal::new();
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            run_with_seed(&options, &auth, SEED, &s, &mut std::io::sink())
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = url.to_string().trim_start_matches("tcp://").to_owned();
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "{name} never listened on {url}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Server {
            url,
            stop,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.request();
        if let Some(t) = self.thread.take() {
            t.join().expect("node thread").expect("node ran");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.request();
    }
}

/// An anonymous client over real TCP: the name the server assigned it.
fn anonymous_name(server: &Url) -> String {
    let mut config = NodeConfig::new("placeholder");
    config.request_assigned_name = true;
    let mut d = NodeDriver::new(config, TransportConfig::default()).unwrap();
    d.connect(server).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        d.run_once(Some(Duration::from_millis(20))).unwrap();
        while let Some(event) = d.poll_event() {
            match event {
                NodeEvent::NameAssigned { name, .. } => {
                    let _ = d.shutdown(Duration::from_millis(200));
                    return name;
                }
                NodeEvent::LinkRejected { reason, .. } => panic!("refused: {reason}"),
                _ => {}
            }
        }
        assert!(Instant::now() < deadline, "no name from {server}");
    }
}

fn anonymous_records(spec: &str) -> Vec<String> {
    let mut backend = Spec::parse(spec).unwrap().open().unwrap();
    let mut names: Vec<String> = backend
        .list(&Selector::everything())
        .unwrap()
        .into_iter()
        .filter(|r| r.metadata.kind == "anonymous")
        .map(|r| r.name)
        .collect();
    backend.shutdown();
    names.sort();
    names
}

#[test]
fn two_nodes_on_one_etcd_never_assign_the_same_anonymous_name() {
    let etcd = Etcd::start();
    let spec = etcd.spec();
    // Without a registry, a loop seeded alike shows the names the others draw first.
    let mut plain = Server::start("plain", None);
    let expected_first = anonymous_name(&plain.url);
    plain.stop();
    let mut a = Server::start("server-a", Some(&spec));
    let mut b = Server::start("server-b", Some(&spec));
    let mut names = Vec::new();
    for _ in 0..3 {
        names.push(anonymous_name(&a.url));
        names.push(anonymous_name(&b.url));
    }
    // Both drew the same first name; the registry gave it to a, so b took another.
    assert_eq!(names[0], expected_first);
    assert_ne!(names[1], expected_first);
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 6, "{names:?}");
    // Every assigned name is held in etcd.
    assert_eq!(anonymous_records(&spec), unique);
    // Stopping a node revokes its lease: its names go, the other node's stay.
    b.stop();
    let b_names: Vec<String> = names.iter().skip(1).step_by(2).cloned().collect();
    let mut a_names: Vec<String> = names.iter().step_by(2).cloned().collect();
    a_names.sort();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = anonymous_records(&spec);
        if left == a_names {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left {left:?}, b had {b_names:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    a.stop();
}
