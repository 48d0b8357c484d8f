//! The second part of `atbus demo`: two sessions exchanging traffic over three simulated paths
//! at once, one of which dies mid-transfer.
//!
//! Everything runs in virtual time over `atbus-netsim` links with a fixed seed, so this part
//! prints the same figures on every machine (the real-socket part is [`crate::demo_nodes`]).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use atbus_netsim::{LinkConfig, Loss};
use atbus_stream::sim::{SimError, SimPair};
use atbus_stream::{Delivery, OutgoingMessage, PathKind, SendError, SessionConfig};
use bytes::Bytes;

/// Seed of every simulated link of the demo.
pub const DEMO_SEED: u64 = 7;

/// What the session demo measured.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionDemoReport {
    /// Messages queued by the sender.
    pub sent: usize,
    /// Messages the receiver got exactly once, in order, byte for byte.
    pub verified: usize,
    /// Virtual time from the first send to the last acknowledgement.
    pub elapsed: Duration,
}

/// One demo stream: what it sends and what arrived.
struct DemoStream {
    name: &'static str,
    priority: i32,
    pending: Vec<Bytes>,
    sent: Vec<(u64, Bytes, Instant)>,
    received: BTreeMap<u64, (Bytes, Instant)>,
    out_of_order: bool,
}

impl DemoStream {
    fn new(name: &'static str, priority: i32, messages: Vec<Bytes>) -> Self {
        Self {
            name,
            priority,
            pending: messages.into_iter().rev().collect(),
            sent: Vec::new(),
            received: BTreeMap::new(),
            out_of_order: false,
        }
    }

    fn verified(&self) -> usize {
        if self.out_of_order {
            return 0;
        }
        self.sent
            .iter()
            .filter(|(offset, data, _)| {
                self.received
                    .get(offset)
                    .is_some_and(|(got, _)| got == data)
            })
            .count()
    }

    /// One-way latencies in microseconds, sorted.
    fn latencies(&self) -> Vec<u64> {
        let mut l: Vec<u64> = self
            .sent
            .iter()
            .filter_map(|(offset, _, at)| {
                let (_, got) = self.received.get(offset)?;
                Some(got.saturating_duration_since(*at).as_micros() as u64)
            })
            .collect();
        l.sort_unstable();
        l
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

fn messages(count: usize, min: usize, max: usize, tag: u8) -> Vec<Bytes> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d ^ u64::from(tag);
    (0..count)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = min + (x as usize % (max - min + 1));
            Bytes::from((0..len).map(|j| (i + j) as u8 ^ tag).collect::<Vec<u8>>())
        })
        .collect()
}

fn config(local: &str, peer: &str) -> SessionConfig {
    SessionConfig::new(local, peer)
}

/// Runs the session demo and prints its story to `out`.
pub fn run<W: Write>(out: &mut W) -> io::Result<SessionDemoReport> {
    let fail = |e: SimError| io::Error::other(e.to_string());
    let mut pair = SimPair::new(
        DEMO_SEED,
        config("node-a", "node-b"),
        config("node-b", "node-a"),
    );
    let paths = [
        (
            "udp   (datagrams, MTU 1224, 15 ms, 1 % loss, 8 Mbit/s)",
            PathKind::Datagram,
            1224,
            LinkConfig::lossless(Duration::from_millis(15))
                .with_loss(Loss::Random(0.01))
                .with_jitter(Duration::from_millis(2))
                .with_rate(1_000_000),
        ),
        (
            "tcp   (byte stream, 25 ms, 32 Mbit/s)",
            PathKind::ByteStream,
            65_535,
            LinkConfig::lossless(Duration::from_millis(25)).with_rate(4_000_000),
        ),
        (
            "relay (relayed, MTU 548, 35 ms, 0.5 % loss, 2 Mbit/s)",
            PathKind::Relayed,
            548,
            LinkConfig::lossless(Duration::from_millis(35))
                .with_loss(Loss::Random(0.005))
                .with_rate(250_000),
        ),
    ];
    writeln!(
        out,
        "Part 2: one session, three paths at once (simulated links, seed {DEMO_SEED})"
    )?;
    writeln!(out)?;
    for (i, (label, kind, mtu, link)) in paths.iter().enumerate() {
        pair.add_path(*kind, *mtu, link.clone()).map_err(fail)?;
        writeln!(out, "  path {i}: {label}")?;
    }
    let mut streams: BTreeMap<i64, DemoStream> = BTreeMap::new();
    streams.insert(
        1,
        DemoStream::new(
            "bulk     (1-16 KiB messages)",
            0,
            messages(300, 1024, 16 * 1024, 1),
        ),
    );
    streams.insert(
        2,
        DemoStream::new("control  (64 B, priority 10)", 10, messages(200, 64, 64, 2)),
    );
    streams.insert(
        3,
        DemoStream::new("chat     (20-400 B)", 0, messages(400, 20, 400, 3)),
    );
    for (&id, s) in &streams {
        pair.a.set_priority(id, s.priority);
    }
    let total: usize = streams.values().map(|s| s.pending.len()).sum();
    writeln!(
        out,
        "  streams: {}",
        streams
            .values()
            .map(|s| s.name.trim_end())
            .collect::<Vec<_>>()
            .join("; ")
    )?;
    writeln!(
        out,
        "  at 300 ms the tcp path dies with data in flight; the session moves it to the others."
    )?;
    writeln!(out)?;

    let start = pair.clock.now();
    let kill_at = start + Duration::from_millis(300);
    let mut killed = false;
    let deadline = start + Duration::from_secs(120);
    // Control messages trickle in, one every 10 ms, while bulk and chat go as fast as they can.
    let mut next_control = start;
    loop {
        let now = pair.clock.now();
        if !killed && now >= kill_at {
            pair.kill_path(1).map_err(fail)?;
            killed = true;
        }
        for (&id, s) in streams.iter_mut() {
            while let Some(m) = s.pending.last() {
                if id == 2 && now < next_control {
                    break;
                }
                match pair.a.send(id, OutgoingMessage::data(m.clone())) {
                    Ok(offset) => {
                        s.sent.push((offset, m.clone(), now));
                        s.pending.pop();
                        if id == 2 {
                            next_control = now + Duration::from_millis(10);
                        }
                    }
                    Err(SendError::WouldBlock) => break,
                    Err(e) => return Err(io::Error::other(e.to_string())),
                }
            }
        }
        pair.transmit().map_err(fail)?;
        pair.deliver().map_err(fail)?;
        let now = pair.clock.now();
        for (&id, s) in streams.iter_mut() {
            while let Some(d) = pair.b.read(id) {
                match d {
                    Delivery::Message(m) => {
                        if s.received.insert(m.offset, (m.data, now)).is_some()
                            || s.received.range(m.offset + 1..).next().is_some()
                        {
                            s.out_of_order = true;
                        }
                    }
                    Delivery::Skipped { .. } => s.out_of_order = true,
                }
            }
        }
        while pair.a.poll_event().is_some() {}
        while pair.b.poll_event().is_some() {}
        pair.transmit().map_err(fail)?;
        let done = streams.iter().all(|(&id, s)| {
            s.pending.is_empty()
                && s.received.len() == s.sent.len()
                && pair.a.is_stream_acknowledged(id)
        });
        if done || now >= deadline {
            break;
        }
        let mut wake = pair.next_wakeup().unwrap_or(deadline).min(deadline);
        if !streams[&2].pending.is_empty() {
            wake = wake.min(next_control.max(now));
        }
        if !killed {
            wake = wake.min(kill_at);
        }
        pair.advance_to(wake);
    }
    let elapsed = pair.clock.now() - start;
    let verified: usize = streams.values().map(DemoStream::verified).sum();
    let bytes: usize = streams
        .values()
        .flat_map(|s| s.sent.iter().map(|(_, d, _)| d.len()))
        .sum();

    writeln!(
        out,
        "  stream                          messages   latency p50 / p99 (queued -> read)"
    )?;
    for s in streams.values() {
        let l = s.latencies();
        writeln!(
            out,
            "  {:<31} {:>4}/{:<4}  {:>7.1} ms / {:>7.1} ms",
            s.name,
            s.verified(),
            s.sent.len(),
            percentile(&l, 0.5),
            percentile(&l, 0.99)
        )?;
    }
    writeln!(
        out,
        "  (bulk messages wait behind their own backlog in the send buffer; control overtakes it)"
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "  path   packets   bytes sent   lost   resent here   srtt      window"
    )?;
    for (i, p) in pair.paths.iter().enumerate() {
        let name = ["udp", "tcp", "relay"].get(i).copied().unwrap_or("?");
        match pair.a.path_stats(p.a) {
            Some(s) => writeln!(
                out,
                "  {name:<6} {:>7}   {:>10}   {:>4}   {:>11}   {:>5.1} ms  {:>6} B",
                s.packets_sent,
                s.bytes_sent,
                s.packets_lost,
                s.bytes_retransmitted_sent,
                s.smoothed_rtt_us as f64 / 1000.0,
                s.congestion_window
            )?,
            None => writeln!(
                out,
                "  {name:<6} (dead: removed at 300 ms, its data went out on the other paths)"
            )?,
        }
    }
    writeln!(out)?;
    let all = if verified == total { "yes" } else { "NO" };
    writeln!(
        out,
        "  {verified}/{total} messages ({:.2} MB) delivered exactly once, in order, byte for byte: {all}",
        bytes as f64 / 1e6
    )?;
    writeln!(
        out,
        "  virtual time {:.3} s, goodput {:.2} MB/s across the paths",
        elapsed.as_secs_f64(),
        bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9)
    )?;
    writeln!(out)?;
    Ok(SessionDemoReport {
        sent: total,
        verified,
        elapsed,
    })
}
