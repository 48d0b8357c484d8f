//! Anonymous peers: names reserved through the application (put-if-absent in a registry),
//! conflicts, release, label restrictions, and names an anonymous peer can never claim. One
//! server and several clients over in-memory byte streams, time as an input.

use std::time::{Duration, Instant};

use atbus_discovery::{Discovery, DiscoveryEvent, MemoryRegistry, NodeRecord, RefuseReason};
use atbus_node::{
    AccessToken, AnonymousPolicy, AuthMode, Direction, LinkCloseReason, LinkId, LinkKind, Node,
    NodeConfig, NodeEvent,
};
use atbus_proto::AtbusCloseReason;
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

struct Client {
    node: Node,
    /// The client's and the server's id of their link.
    lc: LinkId,
    ls: LinkId,
    events: Vec<NodeEvent>,
}

/// One server, any number of clients, each on its own byte stream.
struct Net {
    now: Instant,
    server: Node,
    server_events: Vec<NodeEvent>,
    clients: Vec<Client>,
}

impl Net {
    fn new(server: NodeConfig, seed: u64) -> Self {
        let now = Instant::now();
        Self {
            now,
            server: Node::new(server, now, ChaCha20Rng::seed_from_u64(seed)).unwrap(),
            server_events: Vec::new(),
            clients: Vec::new(),
        }
    }

    fn connect(&mut self, config: NodeConfig, seed: u64) -> usize {
        let mut node = Node::new(config, self.now, ChaCha20Rng::seed_from_u64(seed)).unwrap();
        let lc = node.new_link_id();
        let ls = self.server.new_link_id();
        node.handle_link_up(
            self.now,
            lc,
            LinkKind::ByteStream,
            65536,
            Direction::Outbound,
        );
        self.server.handle_link_up(
            self.now,
            ls,
            LinkKind::ByteStream,
            65536,
            Direction::Inbound,
        );
        self.clients.push(Client {
            node,
            lc,
            ls,
            events: Vec::new(),
        });
        self.pump();
        self.clients.len() - 1
    }

    fn pump(&mut self) {
        let mut buf = Vec::new();
        for _ in 0..1000 {
            let mut moved = false;
            for c in &mut self.clients {
                while let Some((_, n)) = c.node.poll_transmit(self.now, &mut buf) {
                    self.server.handle_link_bytes(self.now, c.ls, &buf[..n]);
                    moved = true;
                }
            }
            while let Some((link, n)) = self.server.poll_transmit(self.now, &mut buf) {
                if let Some(c) = self.clients.iter_mut().find(|c| c.ls == link) {
                    c.node.handle_link_bytes(self.now, c.lc, &buf[..n]);
                }
                moved = true;
            }
            for c in &mut self.clients {
                c.events.extend(std::iter::from_fn(|| c.node.poll_event()));
            }
            self.server_events
                .extend(std::iter::from_fn(|| self.server.poll_event()));
            if !moved {
                return;
            }
        }
        panic!("never went quiet");
    }

    /// Names the server asked to reserve since the last call, in order.
    fn take_reserve_requests(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        self.server_events.retain(|e| match e {
            NodeEvent::ReserveName { name, .. } => {
                out.push(name.clone());
                false
            }
            _ => true,
        });
        out
    }

    fn released(&self) -> Vec<String> {
        self.server_events
            .iter()
            .filter_map(|e| match e {
                NodeEvent::ReleaseName { name } => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    fn assigned(&self, i: usize) -> Option<String> {
        self.clients[i].events.iter().find_map(|e| match e {
            NodeEvent::NameAssigned { name, .. } => Some(name.clone()),
            _ => None,
        })
    }

    fn rejection(&self, i: usize) -> Option<&LinkCloseReason> {
        self.clients[i].events.iter().find_map(|e| match e {
            NodeEvent::LinkRejected { reason, .. } => Some(reason),
            _ => None,
        })
    }

    fn answer(&mut self, name: &str, reserved: bool) {
        self.server.handle_name_reserved(self.now, name, reserved);
        self.pump();
    }
}

fn reserving_server(attempts: u32) -> NodeConfig {
    let mut c = NodeConfig::new("server");
    c.auth = Some(AuthMode::OneRtt);
    c.anonymous = Some(AnonymousPolicy {
        reserve_names: true,
        max_name_attempts: attempts,
        ..AnonymousPolicy::default()
    });
    c.reconnect_wait = Duration::from_secs(5);
    c
}

fn anonymous_client() -> NodeConfig {
    let mut c = NodeConfig::new("placeholder");
    c.request_assigned_name = true;
    c
}

#[test]
fn the_peer_is_accepted_only_once_its_name_is_reserved() {
    let mut net = Net::new(reserving_server(4), 1);
    let c = net.connect(anonymous_client(), 2);
    let asked = net.take_reserve_requests();
    assert_eq!(asked.len(), 1, "{:?}", net.server_events);
    assert!(asked[0].starts_with("anon-"));
    // Nothing is accepted while the reservation is open.
    assert_eq!(net.assigned(c), None);
    assert!(net.server.peer_links(&asked[0]).is_empty());
    assert_eq!(net.server.name_reservations(), (0, 1));
    net.answer(&asked[0], true);
    assert_eq!(net.assigned(c).as_deref(), Some(asked[0].as_str()));
    assert_eq!(net.server.peer_links(&asked[0]).len(), 1);
    assert_eq!(net.server.name_reservations(), (1, 0));
    assert!(net.released().is_empty());
}

#[test]
fn a_conflict_assigns_another_name_and_asks_again() {
    let mut net = Net::new(reserving_server(4), 3);
    let c = net.connect(anonymous_client(), 4);
    let first = net.take_reserve_requests();
    net.answer(&first[0], false);
    let second = net.take_reserve_requests();
    assert_eq!(second.len(), 1);
    assert_ne!(second[0], first[0]);
    assert_eq!(net.assigned(c), None);
    net.answer(&second[0], true);
    assert_eq!(net.assigned(c).as_deref(), Some(second[0].as_str()));
    // The conflicting name was never this node's: nothing to release.
    assert!(net.released().is_empty());
    // A late answer for the first name (a duplicate) is given back if it says reserved.
    net.answer(&first[0], true);
    assert_eq!(net.released(), vec![first[0].clone()]);
}

#[test]
fn too_many_conflicts_refuse_the_peer_with_its_own_reason() {
    let mut net = Net::new(reserving_server(3), 5);
    let c = net.connect(anonymous_client(), 6);
    let mut tried = Vec::new();
    for _ in 0..3 {
        let asked = net.take_reserve_requests();
        assert_eq!(asked.len(), 1);
        tried.push(asked[0].clone());
        net.answer(&asked[0], false);
    }
    assert!(net.take_reserve_requests().is_empty(), "bounded retries");
    tried.sort();
    tried.dedup();
    assert_eq!(tried.len(), 3);
    let r = net.rejection(c).expect("the peer is refused");
    assert_eq!(r.code, AtbusCloseReason::LimitExceeded);
    assert!(r.message.starts_with("name-unavailable"), "{}", r.message);
    assert_eq!(net.server.name_reservations(), (0, 0));
}

#[test]
fn names_are_released_when_the_handshake_fails_or_the_peer_goes_away() {
    let mut net = Net::new(reserving_server(4), 7);
    // Established, then the link dies and the reconnect wait runs out.
    let c = net.connect(anonymous_client(), 8);
    let name = net.take_reserve_requests().remove(0);
    net.answer(&name, true);
    assert_eq!(net.assigned(c).as_deref(), Some(name.as_str()));
    let ls = net.clients[c].ls;
    net.server.handle_link_closed(net.now, ls);
    net.pump();
    assert!(
        net.released().is_empty(),
        "the session waits for a reconnect"
    );
    net.now += Duration::from_secs(6);
    net.server.handle_timeout(net.now, 0);
    net.pump();
    assert_eq!(net.released(), vec![name.clone()]);
    assert_eq!(net.server.name_reservations(), (0, 0));
    // A handshake that fails while its name is being reserved: the answer that comes after
    // is given back.
    let d = net.connect(anonymous_client(), 9);
    let pending = net.take_reserve_requests().remove(0);
    let ls = net.clients[d].ls;
    net.server.handle_link_closed(net.now, ls);
    net.pump();
    assert_eq!(net.server.name_reservations(), (0, 0));
    net.answer(&pending, true);
    assert_eq!(net.released(), vec![name, pending]);
}

/// Two servers whose name generators are seeded alike, reserving in one registry with
/// put-if-absent: they never hand out the same name.
#[test]
fn two_servers_with_equal_seeds_never_assign_the_same_name() {
    let registry = MemoryRegistry::new();
    let mut handles = [registry.handle(), registry.handle()];
    let mut nets = [
        Net::new(reserving_server(4), 42),
        Net::new(reserving_server(4), 42),
    ];
    let mut names = Vec::new();
    let mut conflicts = 0;
    for round in 0..3u64 {
        for (i, net) in nets.iter_mut().enumerate() {
            let c = net.connect(anonymous_client(), 100 + round * 2 + i as u64);
            loop {
                let asked = net.take_reserve_requests();
                let Some(name) = asked.first() else { break };
                let req = handles[i].register(NodeRecord::new(name.clone()));
                let reserved = match handles[i].poll_event() {
                    Some(DiscoveryEvent::Registered { request, .. }) if request == req => true,
                    Some(DiscoveryEvent::Refused {
                        reason: RefuseReason::NameTaken { .. },
                        ..
                    }) => {
                        conflicts += 1;
                        false
                    }
                    other => panic!("{other:?}"),
                };
                net.answer(name, reserved);
            }
            names.push(net.assigned(c).expect("a name was assigned"));
        }
    }
    assert!(conflicts >= 3, "equal seeds collide: {conflicts} conflicts");
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "{names:?}");
}

// ----- restrictions of anonymous peers -----

fn labelled(labels: &[(&str, &str)]) -> NodeConfig {
    let mut c = anonymous_client();
    c.labels = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    c
}

#[test]
fn anonymous_labels_are_restricted_to_the_allow_list_and_size() {
    let mut server = NodeConfig::new("server");
    server.anonymous = Some(AnonymousPolicy {
        label_keys: ["role".to_owned(), "note".to_owned()].into(),
        max_label_bytes: 40,
        ..AnonymousPolicy::default()
    });
    let mut net = Net::new(server, 20);
    let ok = net.connect(labelled(&[("role", "viewer")]), 21);
    assert!(net.assigned(ok).is_some(), "{:?}", net.clients[ok].events);
    let bad_key = net.connect(labelled(&[("admin", "yes")]), 22);
    let r = net.rejection(bad_key).expect("refused");
    assert_eq!(r.code, AtbusCloseReason::AuthFailed);
    assert!(r.message.starts_with("labels-not-allowed"), "{}", r.message);
    let long = "x".repeat(40);
    let too_big = net.connect(labelled(&[("note", &long)]), 23);
    let r = net.rejection(too_big).expect("refused");
    assert_eq!(r.code, AtbusCloseReason::LimitExceeded);
    assert!(r.message.starts_with("labels-too-large"), "{}", r.message);
    // The default policy allows no labels at all.
    let mut net = Net::new(reserving_server(4), 24);
    let any = net.connect(labelled(&[("role", "viewer")]), 25);
    assert!(net.rejection(any).is_some());
}

#[test]
fn an_anonymous_peer_never_gets_a_configured_live_or_registered_name() {
    let mut server = NodeConfig::new("server");
    server.auth = Some(AuthMode::OneRtt);
    server.tokens = vec![AccessToken::new("k1", *b"0123456789abcdef")];
    server.relays = vec!["relay-a".into()];
    server.anonymous = Some(AnonymousPolicy {
        reserve_names: true,
        ..AnonymousPolicy::default()
    });
    let mut net = Net::new(server, 30);
    // A live peer with a credential.
    let mut alice = NodeConfig::new("alice");
    alice.tokens = vec![AccessToken::new("k1", *b"0123456789abcdef")];
    let a = net.connect(alice, 31);
    assert!(net.rejection(a).is_none());
    assert_eq!(net.server.peer_links("alice").len(), 1);
    let refused = |net: &mut Net, name: &str, seed| {
        let i = net.connect(NodeConfig::new(name), seed);
        net.rejection(i).cloned().expect("refused")
    };
    // The live peer's name, a configured relay's name, this node's own name.
    let r = refused(&mut net, "alice", 32);
    assert!(r.message.starts_with("name-taken"), "{}", r.message);
    let r = refused(&mut net, "relay-a", 33);
    assert!(r.message.starts_with("name-taken"), "{}", r.message);
    let r = refused(&mut net, "server", 34);
    assert_eq!(r.code, AtbusCloseReason::ProtocolError);
    // A name registered in discovery: claiming it without a credential is refused, and an
    // assigned name that turns out to be registered is replaced (the registry says no).
    let registry = MemoryRegistry::new();
    let mut other = registry.handle();
    other.register(NodeRecord::new("elsewhere"));
    let r = refused(&mut net, "elsewhere", 35);
    assert!(
        r.message.starts_with("anonymous-name-claimed"),
        "{}",
        r.message
    );
    let mut mine = registry.handle();
    let c = net.connect(anonymous_client(), 36);
    let first = net.take_reserve_requests().remove(0);
    // Someone registered the very name first.
    other.register(NodeRecord::new(first.clone()));
    mine.register(NodeRecord::new(first.clone()));
    let taken = std::iter::from_fn(|| mine.poll_event()).any(|e| {
        matches!(
            e,
            DiscoveryEvent::Refused {
                reason: RefuseReason::NameTaken { .. },
                ..
            }
        )
    });
    assert!(taken);
    net.answer(&first, false);
    let second = net.take_reserve_requests().remove(0);
    mine.register(NodeRecord::new(second.clone()));
    net.answer(&second, true);
    assert_eq!(net.assigned(c).as_deref(), Some(second.as_str()));
    assert_ne!(second, first);
}
