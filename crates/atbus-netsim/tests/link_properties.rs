//! Invariants of a link under arbitrary configurations and send schedules.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use atbus_netsim::{Bytes, Link, LinkConfig, Loss, SendOutcome};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Wait `gap_us` microseconds, then send a datagram of `len` bytes.
    Send { gap_us: u64, len: usize },
    /// Bring the link down or up.
    SetUp(bool),
}

fn probability() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), Just(1.0), 0.0..=1.0f64]
}

fn loss() -> impl Strategy<Value = Loss> {
    prop_oneof![
        Just(Loss::None),
        probability().prop_map(Loss::Random),
        (probability(), probability(), probability(), probability()).prop_map(|(a, b, c, d)| {
            Loss::GilbertElliott {
                p_good_to_bad: a,
                p_bad_to_good: b,
                loss_in_good: c,
                loss_in_bad: d,
            }
        }),
    ]
}

fn config() -> impl Strategy<Value = LinkConfig> {
    (
        (0u64..50_000, 0u64..20_000, loss(), probability()),
        (
            probability(),
            0u64..100_000,
            prop::option::of(1u64..10_000_000),
        ),
        (0usize..100_000, 8usize..2_000, any::<bool>()),
    )
        .prop_map(
            |((lat, jit, loss, dup), (reo, reo_delay, rate), (queue, mtu, reliable))| LinkConfig {
                latency: Duration::from_micros(lat),
                jitter: Duration::from_micros(jit),
                loss,
                duplicate: dup,
                reorder: reo,
                reorder_delay: Duration::from_micros(reo_delay),
                rate_bytes_per_sec: rate,
                queue_limit_bytes: queue,
                mtu,
                reliable,
            },
        )
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        20 => (prop_oneof![Just(0u64), 0u64..10_000], 8usize..2_500)
            .prop_map(|(gap_us, len)| Op::Send { gap_us, len }),
        1 => any::<bool>().prop_map(Op::SetUp),
    ];
    prop::collection::vec(op, 0..300)
}

/// A datagram of `len` bytes (at least 8) that starts with its index.
fn numbered(index: u64, len: usize) -> Bytes {
    let mut v = index.to_be_bytes().to_vec();
    v.resize(len.max(8), (index % 251) as u8);
    Bytes::from(v)
}

fn index_of(datagram: &[u8]) -> u64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&datagram[..8]);
    u64::from_be_bytes(head)
}

struct Sent {
    at: Instant,
    datagram: Bytes,
    latency: Duration,
    reliable: bool,
}

/// Delivers everything due up to `until`, each at its due time, checking the polling contract.
fn deliver_until(link: &mut Link, until: Instant, out: &mut Vec<(Instant, Bytes)>) {
    while let Some(due) = link.poll_timeout() {
        if due > until {
            break;
        }
        if let Some(before) = due.checked_sub(Duration::from_nanos(1)) {
            assert_eq!(
                link.poll_deliver(before),
                None,
                "delivered before poll_timeout"
            );
        }
        let d = link.poll_deliver(due);
        assert!(d.is_some(), "poll_deliver at poll_timeout returned None");
        out.extend(d.map(|d| (due, d)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn deliveries_are_sent_datagrams_never_early(
        config in config(),
        ops in ops(),
        seed in any::<u64>(),
    ) {
        let epoch = Instant::now();
        let mut link = Link::new(config.clone(), seed);
        let mut now = epoch;
        let mut sent: Vec<Sent> = Vec::new();
        let mut accepted = 0u64;
        let mut out = Vec::new();
        let mut outages = false;
        for op in &ops {
            match *op {
                Op::Send { gap_us, len } => {
                    let next = now + Duration::from_micros(gap_us);
                    deliver_until(&mut link, next, &mut out);
                    now = next;
                    let datagram = numbered(sent.len() as u64, len);
                    let outcome = link.send(now, datagram.clone());
                    if outcome == SendOutcome::Queued {
                        accepted += 1;
                    }
                    if link.config().rate_bytes_per_sec.is_some() {
                        prop_assert!(link.queued_bytes(now) <= config.queue_limit_bytes);
                    }
                    if len > config.mtu && link.is_up() {
                        prop_assert_eq!(outcome, SendOutcome::DroppedMtu);
                    }
                    if config.reliable && link.is_up() && len <= config.mtu {
                        prop_assert_ne!(outcome, SendOutcome::DroppedLoss);
                    }
                    sent.push(Sent { at: now, datagram, latency: config.latency, reliable: config.reliable });
                }
                Op::SetUp(up) => {
                    outages |= !up;
                    link.set_up(up);
                    if !up {
                        prop_assert_eq!(link.poll_timeout(), None);
                        prop_assert_eq!(link.in_flight_bytes(), 0);
                    }
                }
            }
        }
        deliver_until(&mut link, now + Duration::from_secs(1 << 20), &mut out);
        prop_assert_eq!(link.poll_timeout(), None);
        prop_assert_eq!(link.in_flight_bytes(), 0);

        let stats = link.stats();
        prop_assert_eq!(stats.sent, sent.len() as u64);
        prop_assert_eq!(
            stats.sent,
            accepted + stats.dropped_loss + stats.dropped_queue + stats.dropped_mtu
                + (stats.dropped_down - in_flight_dropped_down(&stats, accepted, &out)),
        );
        prop_assert_eq!(stats.delivered, out.len() as u64);
        prop_assert!(stats.delivered <= stats.sent * 2);
        if !outages {
            prop_assert_eq!(stats.delivered, accepted + stats.duplicated);
        }

        let mut copies: HashMap<u64, u32> = HashMap::new();
        let mut last_reliable: Option<u64> = None;
        for (at, d) in &out {
            prop_assert!(d.len() >= 8);
            let i = index_of(d);
            let s = sent.get(i as usize);
            prop_assert!(s.is_some(), "delivered a datagram that was never sent");
            let Some(s) = s else { continue };
            prop_assert_eq!(d, &s.datagram);
            prop_assert!(*at >= s.at + s.latency, "delivered before send time + latency");
            let c = copies.entry(i).or_default();
            *c += 1;
            prop_assert!(*c <= 2);
            if s.reliable {
                prop_assert_eq!(*c, 1, "reliable datagram duplicated");
                prop_assert!(last_reliable < Some(i), "reliable datagrams out of order");
                last_reliable = Some(i);
            }
        }
    }

    #[test]
    fn same_seed_same_fates(config in config(), ops in ops(), seed in any::<u64>()) {
        let run = || {
            let epoch = Instant::now();
            let mut link = Link::new(config.clone(), seed);
            let (mut now, mut out, mut fates) = (epoch, Vec::new(), Vec::new());
            for (i, op) in ops.iter().enumerate() {
                match *op {
                    Op::Send { gap_us, len } => {
                        now += Duration::from_micros(gap_us);
                        deliver_until(&mut link, now, &mut out);
                        fates.push(link.send(now, numbered(i as u64, len)));
                    }
                    Op::SetUp(up) => link.set_up(up),
                }
            }
            deliver_until(&mut link, now + Duration::from_secs(1 << 20), &mut out);
            let timed: Vec<(Duration, Bytes)> =
                out.into_iter().map(|(t, d)| (t - epoch, d)).collect();
            (fates, timed, link.stats())
        };
        prop_assert_eq!(run(), run());
    }
}

/// Copies dropped by going down that were already accepted: everything accepted (plus its
/// duplicates) that was not delivered.
fn in_flight_dropped_down(
    stats: &atbus_netsim::LinkStats,
    accepted: u64,
    out: &[(Instant, Bytes)],
) -> u64 {
    accepted + stats.duplicated - out.len() as u64
}
