//! Load on one relay: 1 000 nodes linked over TCP on loopback to one real `atbus relay`
//! process, sustained verified traffic between random pairs through it for a bounded time, and
//! the relay's peak memory read from `/proc/PID/status` (`VmHWM`).
//!
//! The nodes are sans-IO [`Node`]s in this test process, driven by one loop over one mio
//! [`Transport`] (one socket per node, no thread per node). The soft limit of open files is
//! raised to what the test needs (the relay inherits it): about one descriptor per node on each
//! side.

mod relay_procs;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use atbus_node::{Action, Delivery, Node, NodeConfig, NodeError, NodeEvent, OutgoingMessage};
use atbus_stream::SendError;
use atbus_transport_mio::{
    Direction, LinkId as TLinkId, LinkKind, SendStatus, Transport, TransportConfig, TransportEvent,
    Url,
};
use bytes::Bytes;
use relay_procs::{proc_status_kib, sample, scrape, start_relay, terminate};

const RELAY: &str = "relay-l";
const NODES: usize = 1000;
/// Destinations each node sends to (random, fixed seed).
const DESTINATIONS: usize = 2;
/// How long the nodes keep sending.
const SEND_FOR: Duration = Duration::from_secs(4);
/// Messages in flight per pair (sent, not yet read by the destination).
const WINDOW: u64 = 8;
/// Payload bytes per message.
const SIZE: usize = 100;
/// Links handshaking with the relay at once (below the relay's limit of 64).
const CONNECTING_AT_ONCE: usize = 48;
/// Peak memory the relay must stay under.
const MAX_RELAY_KIB: u64 = 256 * 1024;

/// Raises the soft limit of open files to `want` (capped by the hard limit).
fn raise_open_files(want: u64) -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= want {
        return current;
    }
    let target = limit.maximum.map_or(want, |max| max.min(want));
    limit.current = Some(target);
    setrlimit(Resource::Nofile, limit).expect("raise the open files limit");
    target
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn name(i: usize) -> String {
    format!("n{i:04}")
}

fn index_of(name: &str) -> Option<usize> {
    name.strip_prefix('n')?.parse().ok()
}

/// Message `seq` from `src` to `dst`: the sequence, both ends, then a pattern of them all.
fn payload(src: usize, dst: usize, seq: u64) -> Bytes {
    let mut m = Vec::with_capacity(SIZE);
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend_from_slice(&(src as u32).to_le_bytes());
    m.extend_from_slice(&(dst as u32).to_le_bytes());
    let mut x = seq ^ ((src as u64) << 32) ^ ((dst as u64) << 48) ^ 0x9e37_79b9_7f4a_7c15;
    while m.len() < SIZE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        m.push(x as u8);
    }
    Bytes::from(m)
}

/// One sender → destination flow.
#[derive(Debug, Clone, Copy)]
struct Pair {
    src: usize,
    dst: usize,
    sent: u64,
    /// Read by the destination, each one checked: the next in sequence, byte for byte.
    received: u64,
}

/// The nodes and the loop that drives them over one transport.
struct Fleet {
    transport: Transport,
    nodes: Vec<Node>,
    /// Transport link → (node, the node's link id).
    by_transport: HashMap<TLinkId, (usize, atbus_node::LinkId)>,
    /// (node, node link id) → transport link.
    by_node: HashMap<(usize, atbus_node::LinkId), TLinkId>,
    /// Buffers the transport refused, per link, oldest first.
    overflow: HashMap<TLinkId, VecDeque<Vec<u8>>>,
    /// Nodes with input since their output was last drained.
    dirty: Vec<bool>,
    dirty_list: Vec<usize>,
    next_timers: Instant,
    accepted: usize,
    events: Vec<TransportEvent>,
    buf: Vec<u8>,
    /// Events the nodes raised that the test did not expect.
    unexpected: Vec<String>,
}

impl Fleet {
    fn new(count: usize) -> Self {
        let now = Instant::now();
        let nodes = (0..count)
            .map(|i| {
                let mut c = NodeConfig::new(name(i));
                c.relays = vec![RELAY.to_owned()];
                Node::new(c, now, rand_core::UnwrapErr(rand_core::OsRng)).expect("node")
            })
            .collect();
        Self {
            transport: Transport::new(TransportConfig::default()).expect("transport"),
            nodes,
            by_transport: HashMap::new(),
            by_node: HashMap::new(),
            overflow: HashMap::new(),
            dirty: vec![false; count],
            dirty_list: Vec::new(),
            next_timers: now,
            accepted: 0,
            events: Vec::new(),
            buf: Vec::new(),
            unexpected: Vec::new(),
        }
    }

    fn touch(&mut self, i: usize) {
        if !self.dirty[i] {
            self.dirty[i] = true;
            self.dirty_list.push(i);
        }
    }

    fn connect(&mut self, i: usize, url: &Url) {
        let id = self.nodes[i].new_link_id();
        let tid = self.transport.connect(url).expect("connect");
        self.by_transport.insert(tid, (i, id));
        self.by_node.insert((i, id), tid);
    }

    fn send_on(&mut self, i: usize, id: atbus_node::LinkId, data: &[u8]) {
        let Some(&tid) = self.by_node.get(&(i, id)) else {
            return;
        };
        if let Some(q) = self.overflow.get_mut(&tid) {
            q.push_back(data.to_vec());
            return;
        }
        match self.transport.send(tid, data) {
            Ok(SendStatus::Blocked) => {
                self.overflow.insert(tid, VecDeque::from([data.to_vec()]));
                self.nodes[i].handle_link_blocked(id);
            }
            Ok(_) => {}
            Err(err) => self
                .unexpected
                .push(format!("{}: send failed: {err}", name(i))),
        }
    }

    /// Drains the output and actions of every node that had input.
    fn flush(&mut self, now: Instant) {
        let mut buf = std::mem::take(&mut self.buf);
        while let Some(i) = self.dirty_list.pop() {
            self.dirty[i] = false;
            while let Some((id, n)) = self.nodes[i].poll_transmit(now, &mut buf) {
                self.send_on(i, id, &buf[..n]);
            }
            while let Some(action) = self.nodes[i].poll_action() {
                if let Action::Close { link, .. } = action {
                    if let Some(tid) = self.by_node.remove(&(i, link)) {
                        self.by_transport.remove(&tid);
                        let _ = self.transport.close(tid);
                    }
                }
            }
        }
        self.buf = buf;
    }

    /// One round: output, socket events, due timers, output. Returns the nodes that raised
    /// events (to be drained by the caller).
    fn step(&mut self, wait: Duration) -> Vec<usize> {
        self.flush(Instant::now());
        let mut events = std::mem::take(&mut self.events);
        self.transport
            .poll_events(Some(wait), &mut events)
            .expect("poll");
        let now = Instant::now();
        let mut touched = Vec::new();
        for event in events.drain(..) {
            match event {
                TransportEvent::LinkUp {
                    link,
                    kind,
                    direction,
                    mtu,
                    ..
                } => {
                    let Some(&(i, id)) = self.by_transport.get(&link) else {
                        continue;
                    };
                    assert_eq!(kind, LinkKind::ByteStream);
                    assert_eq!(direction, Direction::Outbound);
                    self.nodes[i].handle_link_up(
                        now,
                        id,
                        atbus_node::LinkKind::ByteStream,
                        mtu,
                        atbus_node::Direction::Outbound,
                    );
                    self.touch(i);
                    touched.push(i);
                }
                TransportEvent::Bytes { link, data } => {
                    if let Some(&(i, id)) = self.by_transport.get(&link) {
                        self.nodes[i].handle_link_bytes(now, id, &data);
                        self.touch(i);
                        touched.push(i);
                    }
                }
                TransportEvent::Writable { link } => {
                    let Some(&(i, id)) = self.by_transport.get(&link) else {
                        continue;
                    };
                    let mut q = self.overflow.remove(&link).unwrap_or_default();
                    while let Some(front) = q.front() {
                        match self.transport.send(link, front) {
                            Ok(SendStatus::Blocked) => break,
                            _ => {
                                q.pop_front();
                            }
                        }
                    }
                    if q.is_empty() {
                        self.nodes[i].handle_link_writable(id);
                        self.touch(i);
                    } else {
                        self.overflow.insert(link, q);
                    }
                }
                TransportEvent::LinkClosed { link, reason } => {
                    if let Some((i, id)) = self.by_transport.remove(&link) {
                        self.by_node.remove(&(i, id));
                        self.overflow.remove(&link);
                        self.unexpected
                            .push(format!("{}: link closed: {reason:?}", name(i)));
                        self.nodes[i].handle_link_closed(now, id);
                        self.touch(i);
                        touched.push(i);
                    }
                }
                _ => {}
            }
        }
        self.events = events;
        if now >= self.next_timers {
            // Every node's timers, at most every 2 ms: keepalives, acks, retransmissions.
            self.next_timers = now + Duration::from_millis(2);
            let ms = unix_ms();
            for i in 0..self.nodes.len() {
                if self.nodes[i].poll_timeout().is_some_and(|t| t <= now) {
                    self.nodes[i].handle_timeout(now, ms);
                    self.touch(i);
                    touched.push(i);
                }
            }
        }
        self.flush(Instant::now());
        touched.sort_unstable();
        touched.dedup();
        touched
    }
}

/// Fixed-seed choice of destinations (splitmix64).
fn pairs(seed: u64) -> Vec<Pair> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut out = Vec::new();
    for src in 0..NODES {
        let mut chosen: Vec<usize> = Vec::new();
        while chosen.len() < DESTINATIONS {
            let dst = (next() % NODES as u64) as usize;
            if dst != src && !chosen.contains(&dst) {
                chosen.push(dst);
            }
        }
        out.extend(chosen.into_iter().map(|dst| Pair {
            src,
            dst,
            sent: 0,
            received: 0,
        }));
    }
    out
}

#[test]
fn a_thousand_nodes_through_one_relay() {
    let started = Instant::now();
    let open_files = raise_open_files(2 * NODES as u64 + 512);
    assert!(
        open_files >= NODES as u64 + 256,
        "only {open_files} open files allowed"
    );
    let relay = start_relay(RELAY, "tcp://127.0.0.1:0", &[]);
    let pid = relay.child.pid();
    let url: Url = relay.url.parse().expect("relay URL");
    let idle_kib = proc_status_kib(pid, "VmRSS").expect("relay VmRSS");

    // Link every node to the relay, a bounded number of handshakes at a time.
    let mut fleet = Fleet::new(NODES);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut connected = 0;
    while fleet.accepted < NODES {
        while connected < NODES && connected - fleet.accepted < CONNECTING_AT_ONCE {
            fleet.connect(connected, &url);
            connected += 1;
        }
        for i in fleet.step(Duration::from_millis(5)) {
            while let Some(event) = fleet.nodes[i].poll_event() {
                match event {
                    NodeEvent::LinkAccepted { peer, .. } if peer == RELAY => fleet.accepted += 1,
                    other => fleet.unexpected.push(format!("{}: {other:?}", name(i))),
                }
            }
        }
        assert!(fleet.unexpected.is_empty(), "{:?}", fleet.unexpected);
        assert!(
            Instant::now() < deadline,
            "{} of {NODES} nodes linked",
            fleet.accepted
        );
    }
    let linked_in = started.elapsed();

    // Random pairs, each routed through the relay.
    let mut pairs = pairs(8);
    let now = Instant::now();
    for p in &pairs {
        fleet.nodes[p.src]
            .route_via_relay(now, &name(p.dst), RELAY)
            .expect("route via the relay");
        fleet.touch(p.src);
    }
    // (destination, source) → pair.
    let by_ends: HashMap<(usize, usize), usize> = pairs
        .iter()
        .enumerate()
        .map(|(k, p)| ((p.dst, p.src), k))
        .collect();

    let traffic = Instant::now();
    let stop_sending = traffic + SEND_FOR;
    let give_up = stop_sending + Duration::from_secs(15);
    let mut corrupted: Vec<String> = Vec::new();
    loop {
        let now = Instant::now();
        let sending = now < stop_sending;
        if sending {
            for p in pairs.iter_mut() {
                while p.sent - p.received < WINDOW {
                    let m = OutgoingMessage::data(payload(p.src, p.dst, p.sent));
                    match fleet.nodes[p.src].send(&name(p.dst), 1, m) {
                        Ok(_) => p.sent += 1,
                        Err(NodeError::Send(SendError::WouldBlock)) => break,
                        Err(err) => panic!("{} -> {}: {err}", p.src, p.dst),
                    }
                }
                fleet.touch(p.src);
            }
        } else if pairs.iter().all(|p| p.received == p.sent) {
            break;
        }
        assert!(
            now < give_up,
            "{} of {} messages read after {:?}",
            pairs.iter().map(|p| p.received).sum::<u64>(),
            pairs.iter().map(|p| p.sent).sum::<u64>(),
            now - traffic
        );
        for i in fleet.step(Duration::from_millis(1)) {
            while let Some(event) = fleet.nodes[i].poll_event() {
                match event {
                    NodeEvent::Readable { peer, stream_id } => {
                        let src = index_of(&peer).expect("a node name");
                        let Some(&k) = by_ends.get(&(i, src)) else {
                            corrupted.push(format!("{peer} -> {}: not a pair", name(i)));
                            continue;
                        };
                        while let Some(d) = fleet.nodes[i].read(&peer, stream_id) {
                            let p = &mut pairs[k];
                            match d {
                                Delivery::Message(m) if m.data == payload(src, i, p.received) => {
                                    p.received += 1;
                                }
                                other => corrupted.push(format!(
                                    "{peer} -> {}: message {} is {other:?}",
                                    name(i),
                                    p.received
                                )),
                            }
                        }
                    }
                    NodeEvent::PeerUp { .. } => {}
                    other => fleet.unexpected.push(format!("{}: {other:?}", name(i))),
                }
            }
        }
        assert!(
            corrupted.is_empty(),
            "{:?}",
            &corrupted[..corrupted.len().min(5)]
        );
        assert!(fleet.unexpected.is_empty(), "{:?}", fleet.unexpected);
    }
    let traffic_time = traffic.elapsed();
    let hwm_kib = proc_status_kib(pid, "VmHWM").expect("relay VmHWM");
    let rss_kib = proc_status_kib(pid, "VmRSS").expect("relay VmRSS");
    let delivered: u64 = pairs.iter().map(|p| p.received).sum();
    let slowest = pairs.iter().map(|p| p.received).min().unwrap_or(0);
    let body = scrape(&relay.metrics);
    let series = |name: &str| {
        sample(&body, &format!("{name}{{relay=\"{RELAY}\"}}")).unwrap_or_else(|| panic!("{name}"))
    };
    let forwarded = series("atbus_relay_frames_forwarded_total");
    let bytes = series("atbus_relay_bytes_forwarded_total");
    let links = sample(
        &body,
        &format!("atbus_relay_links{{relay=\"{RELAY}\",peer_kind=\"node\"}}"),
    );
    let dropped: f64 = body
        .lines()
        .filter(|l| l.starts_with("atbus_relay_frames_dropped_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    println!(
        "{NODES} nodes linked to one relay in {:.2} s; {} pairs, {delivered} messages of \
         {SIZE} B delivered and verified in {:.2} s ({:.0} msg/s, slowest pair {slowest}); \
         relay: {forwarded} frames / {:.1} MB forwarded, {dropped} dropped, VmHWM {:.1} MiB, \
         VmRSS {:.1} MiB (idle before the nodes: {:.1} MiB); open files limit {open_files}",
        linked_in.as_secs_f64(),
        pairs.len(),
        traffic_time.as_secs_f64(),
        delivered as f64 / traffic_time.as_secs_f64(),
        bytes / 1e6,
        hwm_kib as f64 / 1024.0,
        rss_kib as f64 / 1024.0,
        idle_kib as f64 / 1024.0,
    );
    assert_eq!(links, Some(NODES as f64), "every node linked");
    // The queue delay histogram: a bounded number of destination series (the busiest 16, then
    // `other`) that together count every frame forwarded, in the same scrape.
    let counts: Vec<(String, f64)> = body
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("atbus_relay_queue_delay_seconds_count{")?;
            let (labels, value) = rest.rsplit_once("} ")?;
            let dest = labels.split("destination=\"").nth(1)?.split('"').next()?;
            Some((dest.to_owned(), value.parse().ok()?))
        })
        .collect();
    assert!(
        counts.len() <= 17 && counts.iter().any(|(d, _)| d == "other"),
        "{} queue delay series: {counts:?}",
        counts.len()
    );
    let counted: f64 = counts.iter().map(|(_, n)| n).sum();
    assert_eq!(
        counted, forwarded,
        "every forwarded frame has its queue delay"
    );
    let busiest = counts
        .iter()
        .filter(|(d, _)| d != "other")
        .map(|(_, n)| *n)
        .fold(0.0, f64::max);
    println!(
        "queue delay series: {} (other: {} frames, busiest destination: {busiest} frames)",
        counts.len(),
        counts
            .iter()
            .find(|(d, _)| d == "other")
            .map_or(0.0, |c| c.1)
    );
    assert!(slowest > 0, "a pair got nothing through");
    // Every message's payload crossed the relay.
    assert!(
        forwarded > 0.0 && bytes >= (delivered * SIZE as u64) as f64,
        "forwarded {forwarded} frames, {bytes} bytes for {delivered} messages"
    );
    assert!(
        hwm_kib < MAX_RELAY_KIB,
        "relay peak memory {hwm_kib} KiB is over {MAX_RELAY_KIB} KiB"
    );
    let mut relay_child = relay.child;
    assert_eq!(terminate(&mut relay_child).code(), Some(0));
}
