//! Shared helpers: a poll loop with a deadline, payload generation, and an echo exchange.
#![allow(dead_code)]

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use atbus_transport_mio::{
    Direction, LinkId, LinkKind, SendStatus, Transport, TransportConfig, TransportEvent, Url,
};
use bytes::Bytes;

/// Generous limit for every wait in these tests.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Polls until `step` (called after every poll with that poll's events) returns true.
pub fn drive(
    t: &mut Transport,
    what: &str,
    mut step: impl FnMut(&mut Transport, Vec<TransportEvent>) -> bool,
) {
    let deadline = Instant::now() + TIMEOUT;
    let mut events = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "timed out after {TIMEOUT:?} waiting for: {what}"
        );
        t.poll_events(Some(Duration::from_millis(50)), &mut events)
            .expect("poll_events");
        if step(t, std::mem::take(&mut events)) {
            return;
        }
    }
}

/// Deterministic pseudo-random numbers (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

/// Message `seq` of `size` bytes: the sequence number (when it fits), then a seeded pattern.
pub fn payload(seq: u32, size: usize) -> Vec<u8> {
    let mut rng = Rng::new(u64::from(seq) * 0x9e37_79b9 + 1);
    let mut v: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
    if size >= 4 {
        v[..4].copy_from_slice(&seq.to_le_bytes());
    }
    v
}

/// Mixed sizes: mostly small, some medium, a few large; `count` messages, total capped.
pub fn mixed_sizes(seed: u64, count: usize, max: usize, cap_total: usize) -> Vec<usize> {
    let mut rng = Rng::new(seed);
    let mut total = 0;
    let mut sizes = Vec::new();
    while sizes.len() < count && total < cap_total {
        let pick = rng.range(0, 99);
        let size = if pick < 60 {
            rng.range(1, 64)
        } else if pick < 90 {
            rng.range(65, 4096.min(max))
        } else {
            rng.range(4097.min(max), max)
        };
        total += size;
        sizes.push(size);
    }
    sizes
}

/// An echo on the server side that respects backpressure: what cannot be sent waits, and the
/// server link stops reading until `Writable`.
#[derive(Default)]
pub struct Echo {
    backlog: VecDeque<Bytes>,
}

impl Echo {
    pub fn on_data(&mut self, t: &mut Transport, link: LinkId, data: Bytes) {
        if !self.backlog.is_empty() {
            self.backlog.push_back(data);
            return;
        }
        if t.send(link, &data).expect("echo send") == SendStatus::Blocked {
            self.backlog.push_back(data);
            t.pause_reading(link).expect("pause");
        }
    }

    pub fn on_writable(&mut self, t: &mut Transport, link: LinkId) {
        while let Some(data) = self.backlog.front() {
            if t.send(link, data).expect("echo send") == SendStatus::Blocked {
                return;
            }
            self.backlog.pop_front();
        }
        t.resume_reading(link).expect("resume");
    }
}

/// Connects to a listener on `listen_url` within one transport, sends `sizes` messages, echoes
/// them back and verifies byte for byte: the concatenation for byte streams, each datagram for
/// datagram and in-process links (in order for in-process, by sequence number for UDP, with at
/// most `window` datagrams in flight).
pub fn echo_exchange(listen_url: &str, config: TransportConfig, sizes: &[usize], window: usize) {
    let mut t = Transport::new(config).expect("transport");
    let (_listener, bound) = t
        .listen(&listen_url.parse::<Url>().expect("url"))
        .expect("listen");
    let client = t.connect(&bound).expect("connect");
    let mut server = None;
    let mut kind = None;
    let mut echo = Echo::default();

    let messages: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &s)| payload(i as u32, s))
        .collect();
    let stream: Vec<u8> = messages.concat();
    let mut next_send = 0;
    let mut blocked = false;
    let mut received_bytes = 0usize;
    let mut received_msgs = 0usize;
    let mut seen = HashSet::new();

    drive(&mut t, &format!("echo over {listen_url}"), |t, events| {
        for ev in events {
            match ev {
                TransportEvent::LinkUp {
                    link,
                    direction,
                    kind: k,
                    ..
                } => {
                    if link != client {
                        assert_eq!(direction, Direction::Inbound);
                        server = Some(link);
                    } else {
                        assert_eq!(direction, Direction::Outbound);
                        kind = Some(k);
                    }
                }
                TransportEvent::Bytes { link, data } if Some(link) == server => {
                    echo.on_data(t, link, data)
                }
                TransportEvent::Datagram { link, data } if Some(link) == server => {
                    echo.on_data(t, link, data)
                }
                TransportEvent::Writable { link } if Some(link) == server => {
                    echo.on_writable(t, link)
                }
                TransportEvent::Writable { link } if link == client => blocked = false,
                TransportEvent::Bytes { link, data } => {
                    assert_eq!(link, client);
                    let end = received_bytes + data.len();
                    assert!(end <= stream.len(), "more bytes echoed than sent");
                    assert!(
                        data[..] == stream[received_bytes..end],
                        "echoed bytes differ in {received_bytes}..{end}"
                    );
                    received_bytes = end;
                }
                TransportEvent::Datagram { link, data } => {
                    assert_eq!(link, client);
                    let seq = if kind == Some(LinkKind::Datagram) {
                        u32::from_le_bytes(data[..4].try_into().expect("seq")) as usize
                    } else {
                        received_msgs
                    };
                    assert!(seq < messages.len(), "unknown message {seq}");
                    assert!(seen.insert(seq), "message {seq} echoed twice");
                    assert!(data[..] == messages[seq][..], "message {seq} differs");
                    received_msgs += 1;
                    received_bytes += data.len();
                }
                TransportEvent::LinkClosed { link, reason } => {
                    panic!("{link} closed during the exchange: {reason:?}")
                }
                _ => {}
            }
        }
        // A UDP listener only learns of a peer from its first datagram.
        if kind.is_some() && (server.is_some() || kind == Some(LinkKind::Datagram)) {
            while !blocked && next_send < messages.len() {
                let datagrams = kind != Some(LinkKind::ByteStream);
                if datagrams
                    && kind == Some(LinkKind::Datagram)
                    && next_send - received_msgs >= window
                {
                    break;
                }
                match t.send(client, &messages[next_send]).expect("client send") {
                    SendStatus::Blocked => blocked = true,
                    SendStatus::Dropped => panic!("datagram {next_send} dropped on send"),
                    SendStatus::Sent | SendStatus::Queued => next_send += 1,
                }
            }
        }
        received_bytes == stream.len() && next_send == messages.len()
    });
    if kind != Some(LinkKind::ByteStream) {
        assert_eq!(received_msgs, messages.len());
    }
}
