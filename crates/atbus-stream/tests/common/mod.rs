//! A two-session world over `atbus-netsim` links: the test harness of the session core.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use atbus_netsim::LinkConfig;
use atbus_stream::sim::SimPair;
use atbus_stream::{Delivery, Event, OutgoingMessage, PathKind, SendError, SessionConfig};
use bytes::Bytes;

/// A message the test wants delivered, with what the receiver saw.
#[derive(Debug, Default)]
pub struct StreamPlan {
    pub to_send: VecDeque<Bytes>,
    pub sent: Vec<Bytes>,
    pub sent_offsets: Vec<u64>,
    pub received: Vec<Bytes>,
    pub received_offsets: Vec<u64>,
    pub skipped: Vec<(u64, u64)>,
    pub skipped_bytes: u64,
    /// The stream was reset: nothing more is sent on it.
    pub reset: bool,
}

pub struct World {
    pub pair: SimPair,
    pub streams: BTreeMap<i64, StreamPlan>,
    pub seed: u64,
    pub events_b: Vec<Event>,
    pub events_a: Vec<Event>,
    pub max_receive_buffered: usize,
}

impl Deref for World {
    type Target = SimPair;
    fn deref(&self) -> &SimPair {
        &self.pair
    }
}

impl DerefMut for World {
    fn deref_mut(&mut self) -> &mut SimPair {
        &mut self.pair
    }
}

pub fn config(local: &str, peer: &str) -> SessionConfig {
    let mut c = SessionConfig::new(local, peer);
    c.stream_receive_window = 64 * 1024;
    c.session_receive_window = 256 * 1024;
    c.stream_send_buffer = 256 * 1024;
    c.lossy_path_window = 32 * 1024;
    c.path_idle_timeout = Duration::from_secs(30);
    c
}

impl World {
    pub fn new(seed: u64) -> Self {
        Self::with_config(seed, |_| {})
    }

    /// A world whose two session configs (based on `config`) are adjusted by `adjust`.
    pub fn with_config(seed: u64, adjust: impl Fn(&mut SessionConfig)) -> Self {
        let mut ca = config("node-a", "node-b");
        let mut cb = config("node-b", "node-a");
        adjust(&mut ca);
        adjust(&mut cb);
        Self {
            pair: SimPair::new(seed, ca, cb),
            streams: BTreeMap::new(),
            seed,
            events_a: Vec::new(),
            events_b: Vec::new(),
            max_receive_buffered: 0,
        }
    }

    /// Adds a path of `kind` over a link with `link` behaviour.
    pub fn add_path(&mut self, kind: PathKind, mtu: usize, link: LinkConfig) -> usize {
        self.pair.add_path(kind, mtu, link).expect("path")
    }

    /// Kills path `index`: the link goes down with whatever was in flight, both sessions drop it.
    pub fn kill_path(&mut self, index: usize) {
        self.pair.kill_path(index).expect("known path");
    }

    pub fn plan(&mut self, stream_id: i64, messages: Vec<Bytes>) {
        let plan = self.streams.entry(stream_id).or_default();
        plan.to_send.extend(messages);
    }

    fn feed_app(&mut self) {
        for (&id, plan) in self.streams.iter_mut() {
            if plan.reset {
                plan.to_send.clear();
                continue;
            }
            while let Some(m) = plan.to_send.front() {
                match self.pair.a.send(id, OutgoingMessage::data(m.clone())) {
                    Ok(offset) => {
                        plan.sent_offsets.push(offset);
                        plan.sent.push(m.clone());
                        plan.to_send.pop_front();
                    }
                    Err(SendError::WouldBlock) => break,
                    Err(e) => panic!("seed {}: send failed: {e}", self.seed),
                }
            }
        }
    }

    fn transmit(&mut self) {
        let seed = self.seed;
        self.pair
            .transmit()
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }

    fn deliver(&mut self) {
        let seed = self.seed;
        self.pair
            .deliver()
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }

    fn read(&mut self, slow_reader: bool) {
        self.max_receive_buffered = self
            .max_receive_buffered
            .max(self.pair.b.receive_buffered());
        while let Some(ev) = self.pair.a.poll_event() {
            self.events_a.push(ev);
        }
        while let Some(ev) = self.pair.b.poll_event() {
            self.events_b.push(ev);
        }
        for (&id, plan) in self.streams.iter_mut() {
            let mut budget = if slow_reader { 1 } else { usize::MAX };
            while budget > 0 {
                match self.pair.b.read(id) {
                    Some(Delivery::Message(m)) => {
                        plan.received_offsets.push(m.offset);
                        plan.received.push(m.data);
                    }
                    Some(Delivery::Skipped { offset, len }) => {
                        plan.skipped.push((offset, len));
                        plan.skipped_bytes += len;
                    }
                    None => break,
                }
                budget -= 1;
            }
        }
    }

    pub fn done(&self) -> bool {
        self.streams.iter().all(|(&id, p)| {
            let sent: u64 = p.sent.iter().map(|m| m.len() as u64).sum();
            let got: u64 = p.received.iter().map(|m| m.len() as u64).sum::<u64>() + p.skipped_bytes;
            p.to_send.is_empty() && got >= sent && self.pair.a.is_stream_acknowledged(id)
        })
    }

    /// Bytes delivered to the application so far, over all streams.
    pub fn delivered_bytes(&self) -> u64 {
        self.streams
            .values()
            .map(|p| p.received.iter().map(|m| m.len() as u64).sum::<u64>())
            .sum()
    }

    /// Runs for `duration` of virtual time whatever the state.
    pub fn run_for(&mut self, duration: Duration) {
        let end = self.clock.now() + duration;
        while self.clock.now() < end {
            self.run_with(end - self.clock.now(), false, |_| {});
            let now = self.clock.now();
            if now < end {
                self.pair
                    .advance_to(end.min(now + Duration::from_millis(1)));
            }
        }
    }

    /// Runs until every planned message is delivered and acknowledged, or `limit` of virtual time.
    pub fn run(&mut self, limit: Duration, slow_reader: bool) -> bool {
        self.run_with(limit, slow_reader, |_| {})
    }

    /// As `run`, calling `hook` each step (to add or kill paths mid-transfer).
    pub fn run_with(
        &mut self,
        limit: Duration,
        slow_reader: bool,
        mut hook: impl FnMut(&mut World),
    ) -> bool {
        let deadline = self.clock.now() + limit;
        let mut steps = 0u64;
        loop {
            hook(self);
            self.feed_app();
            self.transmit();
            self.deliver();
            self.read(slow_reader);
            self.transmit();
            if self.done() {
                return true;
            }
            let now = self.clock.now();
            if now >= deadline {
                return false;
            }
            let mut wake = self.pair.next_wakeup().unwrap_or(deadline).min(deadline);
            if slow_reader {
                wake = wake.min(now + Duration::from_millis(1));
            }
            self.pair.advance_to(wake);
            steps += 1;
            assert!(
                steps < 5_000_000,
                "seed {}: simulation does not progress",
                self.seed
            );
        }
    }

    /// Asserts that every sent message was delivered exactly once, in order, with its bytes, or
    /// lies inside a range the receiver reported skipped; and that deliveries tile the stream.
    pub fn assert_exactly_once_or_skipped(&self) {
        for (id, plan) in &self.streams {
            let seed = self.seed;
            let delivered: BTreeMap<u64, &Bytes> = plan
                .received_offsets
                .iter()
                .copied()
                .zip(&plan.received)
                .collect();
            assert_eq!(
                delivered.len(),
                plan.received.len(),
                "seed {seed}: stream {id} duplicate delivery"
            );
            assert!(
                plan.received_offsets.windows(2).all(|w| w[0] < w[1]),
                "seed {seed}: stream {id} order"
            );
            for (offset, data) in plan.sent_offsets.iter().zip(&plan.sent) {
                match delivered.get(offset) {
                    Some(got) => assert!(
                        *got == data,
                        "seed {seed}: stream {id} message at {offset} differs"
                    ),
                    None => assert!(
                        plan.skipped
                            .iter()
                            .any(|&(s, l)| s <= *offset && offset + data.len() as u64 <= s + l),
                        "seed {seed}: stream {id} message at {offset} neither delivered nor skipped"
                    ),
                }
            }
            // Deliveries and skips tile the stream from 0.
            let mut spans: Vec<(u64, u64)> = plan
                .received_offsets
                .iter()
                .zip(&plan.received)
                .map(|(&o, d)| (o, d.len() as u64))
                .chain(plan.skipped.iter().copied())
                .collect();
            spans.sort_unstable();
            let mut at = 0;
            for (o, l) in spans {
                assert_eq!(
                    o, at,
                    "seed {seed}: stream {id} deliveries do not tile at {at}"
                );
                at = o + l;
            }
        }
    }

    /// Asserts exactly-once, in-order delivery of every planned message.
    pub fn assert_exactly_once(&self) {
        for (id, plan) in &self.streams {
            assert_eq!(
                plan.received.len(),
                plan.sent.len(),
                "seed {}: stream {id} count",
                self.seed
            );
            for (i, (r, s)) in plan.received.iter().zip(&plan.sent).enumerate() {
                assert!(
                    r == s,
                    "seed {}: stream {id} message {i} differs",
                    self.seed
                );
            }
        }
    }
}

/// Deterministic message sizes from a seed (xorshift).
pub fn messages(seed: u64, count: usize, max: usize) -> Vec<Bytes> {
    let mut x = seed | 1;
    (0..count)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = 1 + (x as usize % max);
            Bytes::from((0..len).map(|j| (i * 31 + j) as u8).collect::<Vec<u8>>())
        })
        .collect()
}

pub fn now_plus(now: Instant, ms: u64) -> Instant {
    now + Duration::from_millis(ms)
}
