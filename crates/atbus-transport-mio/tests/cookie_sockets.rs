//! The handshake defences on real loopback sockets, with `NodeLimits::limit_loopback` so
//! 127.0.0.1 counts as a source: over UDP a flood of hellos past the cookie threshold gets
//! stateless retries while a real client (which echoes the cookie) still connects; over TCP
//! the half-open handshakes from one source are bounded. Counts are asserted at the server.

use std::io::Write as _;
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use atbus_node::{Direction, LinkKind, Node, NodeConfig, NodeEvent};
use atbus_transport_mio::{NodeDriver, TransportConfig, Url};
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

const TIMEOUT: Duration = Duration::from_secs(20);

fn server(threshold: usize, per_source: usize) -> NodeDriver {
    let mut c = NodeConfig::new("server");
    c.limits.limit_loopback = true;
    c.limits.cookie_threshold = threshold;
    c.limits.max_handshakes_per_source = per_source;
    c.limits.max_handshakes_in_flight = 64;
    NodeDriver::new(c, TransportConfig::default()).unwrap()
}

/// A real client's first hello for a link of `kind`, as one package.
fn hello(kind: LinkKind, seed: u64) -> Vec<u8> {
    let now = Instant::now();
    let mut n = Node::new(
        NodeConfig::new(format!("flood-{seed}")),
        now,
        ChaCha20Rng::seed_from_u64(seed),
    )
    .unwrap();
    let l = n.new_link_id();
    n.handle_link_up(now, l, kind, 1200, Direction::Outbound);
    let mut buf = Vec::new();
    let (_, len) = n.poll_transmit(now, &mut buf).unwrap();
    buf[..len].to_vec()
}

fn half_open(d: &NodeDriver) -> usize {
    d.links()
        .iter()
        .filter_map(|l| l.node_link)
        .filter(|&l| d.node().is_handshaking(l))
        .count()
}

fn spin(d: &mut NodeDriver, until: impl Fn(&NodeDriver) -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !until(d) {
        assert!(Instant::now() < deadline, "timed out");
        d.run_once(Some(Duration::from_millis(10))).unwrap();
        while d.poll_event().is_some() {}
    }
}

/// Runs the server and a client until the client's peer is up.
fn connect_client(server: &mut NodeDriver, url: &Url, name: &str) -> bool {
    let mut client = NodeDriver::new(NodeConfig::new(name), TransportConfig::default()).unwrap();
    client.connect(url).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        server.run_once(Some(Duration::from_millis(5))).unwrap();
        while server.poll_event().is_some() {}
        client.run_once(Some(Duration::from_millis(5))).unwrap();
        while let Some(e) = client.poll_event() {
            match e {
                NodeEvent::PeerUp { .. } => return true,
                NodeEvent::LinkRejected { reason, .. } => panic!("{name} refused: {reason}"),
                _ => {}
            }
        }
    }
    false
}

#[test]
fn udp_flood_past_the_threshold_gets_retries_and_a_real_client_connects() {
    const THRESHOLD: usize = 3;
    const FLOOD: usize = 24;
    let mut d = server(THRESHOLD, 64);
    let url = d.listen(&"udp://127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = url.to_string().trim_start_matches("udp://").to_owned();
    // Each flood socket sends one hello from its own port and never answers.
    let sockets: Vec<UdpSocket> = (0..FLOOD)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for (i, s) in sockets.iter().enumerate() {
        s.send_to(&hello(LinkKind::Datagram, i as u64), &addr)
            .unwrap();
        // Let the server read it before the next, so the load builds one hello at a time.
        d.run_once(Some(Duration::from_millis(2))).unwrap();
        while d.poll_event().is_some() {}
    }
    spin(&mut d, |d| {
        let (retries, _) = d.node().cookie_stats();
        retries as usize + half_open(d) >= FLOOD
    });
    let (retries, admitted) = d.node().cookie_stats();
    assert_eq!(admitted, 0, "no flood socket echoed a cookie");
    assert_eq!(
        half_open(&d),
        THRESHOLD,
        "half-open handshakes stop at the threshold"
    );
    assert_eq!(retries as usize, FLOOD - THRESHOLD);
    // Every socket past the threshold got a retry datagram, smaller than its hello.
    let mut answered = 0;
    for s in &sockets[THRESHOLD..] {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = s.recv_from(&mut buf).expect("a retry");
        assert!(n < hello(LinkKind::Datagram, 0).len(), "retry of {n} bytes");
        answered += 1;
    }
    assert_eq!(answered, FLOOD - THRESHOLD);
    // A real client is under the same load: it gets a retry, echoes the cookie and connects.
    assert!(
        connect_client(&mut d, &url, "real-udp"),
        "client never connected"
    );
    let (retries_after, admitted) = d.node().cookie_stats();
    assert!(retries_after > retries, "the client was asked for a cookie");
    assert_eq!(admitted, 1, "the client's echoed cookie was accepted");
    assert_eq!(d.node().peer_links("real-udp").len(), 1);
}

#[test]
fn tcp_half_open_handshakes_from_one_loopback_source_are_bounded() {
    const PER_SOURCE: usize = 3;
    const FLOOD: usize = 10;
    // A threshold of 0 would gate every datagram hello; byte streams are never asked.
    let mut d = server(0, PER_SOURCE);
    let url = d.listen(&"tcp://127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = url.to_string().trim_start_matches("tcp://").to_owned();
    let mut flood = Vec::new();
    for i in 0..FLOOD {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(&hello(LinkKind::ByteStream, 100 + i as u64))
            .unwrap();
        flood.push(s);
        d.run_once(Some(Duration::from_millis(2))).unwrap();
    }
    let mut refused = 0;
    let deadline = Instant::now() + TIMEOUT;
    while refused < FLOOD - PER_SOURCE {
        assert!(Instant::now() < deadline, "{refused} refused");
        d.run_once(Some(Duration::from_millis(10))).unwrap();
        while let Some(e) = d.poll_event() {
            if let NodeEvent::LinkRejected { reason, .. } = e {
                assert_eq!(format!("{:?}", reason.code), "LimitExceeded", "{reason}");
                refused += 1;
            }
        }
    }
    assert_eq!(half_open(&d), PER_SOURCE);
    assert_eq!(
        d.node().cookie_stats(),
        (0, 0),
        "byte streams get no cookie"
    );
    // While the flood holds the source's slots a real client from 127.0.0.1 is refused too;
    // once they are gone it connects.
    drop(flood);
    spin(&mut d, |d| half_open(d) == 0);
    assert!(connect_client(&mut d, &url, "real-tcp"));
    assert_eq!(d.node().peer_links("real-tcp").len(), 1);
}
