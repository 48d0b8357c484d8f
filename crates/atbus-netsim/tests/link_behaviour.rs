//! Behaviour of simulated links: each test checks one knob against what it is configured to do.

use std::time::{Duration, Instant};

use atbus_netsim::{
    Bytes, Clock, DuplexLink, Link, LinkConfig, LinkStats, Loss, SendOutcome, earliest,
};

const MS: Duration = Duration::from_millis(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A datagram of `len` bytes (at least 8) that starts with its index.
fn numbered(index: u64, len: usize) -> Bytes {
    let mut v = index.to_be_bytes().to_vec();
    v.resize(len.max(8), 0xAB);
    Bytes::from(v)
}

fn index_of(datagram: &[u8]) -> u64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&datagram[..8]);
    u64::from_be_bytes(head)
}

/// Delivers everything due up to and including `until`, recording (time since epoch, datagram).
fn drain_until(link: &mut Link, epoch: Instant, until: Instant, out: &mut Vec<(Duration, Bytes)>) {
    while let Some(due) = link.poll_timeout() {
        if due > until {
            break;
        }
        let d = link
            .poll_deliver(due)
            .expect("due datagram is deliverable at its due time");
        out.push((due - epoch, d));
    }
}

fn drain_all(link: &mut Link, epoch: Instant) -> Vec<(Duration, Bytes)> {
    let mut out = Vec::new();
    drain_until(link, epoch, epoch + Duration::from_secs(1 << 20), &mut out);
    out
}

/// A config where every random knob is on.
fn busy_config() -> LinkConfig {
    LinkConfig::lossless(20 * MS)
        .with_jitter(5 * MS)
        .with_loss(Loss::GilbertElliott {
            p_good_to_bad: 0.05,
            p_bad_to_good: 0.3,
            loss_in_good: 0.01,
            loss_in_bad: 0.7,
        })
        .with_duplicate(0.05)
        .with_reorder(0.05, 30 * MS)
        .with_rate(2_000_000)
        .with_queue_limit(20_000)
}

fn run_scenario(seed: u64) -> (Vec<(Duration, Bytes)>, LinkStats) {
    let epoch = Instant::now();
    let mut link = Link::new(busy_config(), seed);
    let mut out = Vec::new();
    for i in 0..5_000u64 {
        let now = epoch + Duration::from_micros(i * 300);
        drain_until(&mut link, epoch, now, &mut out);
        link.send(now, numbered(i, 200 + (i as usize % 1000)));
    }
    out.extend(drain_all(&mut link, epoch));
    (out, link.stats())
}

#[test]
fn same_seed_same_run_different_seed_different_run() {
    let (a, stats_a) = run_scenario(7);
    let (b, stats_b) = run_scenario(7);
    assert_eq!(a, b);
    assert_eq!(stats_a, stats_b);
    assert!(stats_a.dropped_loss > 0 && stats_a.duplicated > 0 && stats_a.reordered > 0);
    assert!(stats_a.dropped_queue > 0, "{stats_a:?}");

    let (c, stats_c) = run_scenario(8);
    assert_ne!(a, c);
    assert_ne!(stats_a, stats_c);
}

#[test]
fn duplex_directions_do_not_perturb_each_other() {
    let run = |reverse_traffic: bool| {
        let epoch = Instant::now();
        let mut net = DuplexLink::new(busy_config(), 99);
        let mut ab = Vec::new();
        let mut ba = Vec::new();
        for i in 0..2_000u64 {
            let now = epoch + Duration::from_micros(i * 500);
            drain_until(&mut net.a_to_b, epoch, now, &mut ab);
            drain_until(&mut net.b_to_a, epoch, now, &mut ba);
            net.a_to_b.send(now, numbered(i, 300));
            if reverse_traffic && i % 3 == 0 {
                net.b_to_a.send(now, numbered(i, 700));
            }
        }
        ab.extend(drain_all(&mut net.a_to_b, epoch));
        (ab, net.a_to_b.stats(), net.b_to_a.stats())
    };
    let (quiet, quiet_stats, quiet_reverse) = run(false);
    let (busy, busy_stats, busy_reverse) = run(true);
    assert_eq!(quiet_reverse.sent, 0);
    assert!(busy_reverse.sent > 0);
    assert_eq!(quiet, busy);
    assert_eq!(quiet_stats, busy_stats);
}

#[test]
fn duplex_directions_use_different_streams() {
    let epoch = Instant::now();
    let mut net = DuplexLink::new(LinkConfig::lossy(MS, 0.5), 3);
    let fates = |link: &mut Link| -> Vec<SendOutcome> {
        (0..64).map(|i| link.send(epoch, numbered(i, 8))).collect()
    };
    assert_ne!(fates(&mut net.a_to_b), fates(&mut net.b_to_a));
}

#[test]
fn random_loss_rate_matches_configuration() {
    for (p, seed) in [(0.01, 1), (0.1, 2), (0.3, 3)] {
        let epoch = Instant::now();
        let mut link = Link::new(LinkConfig::lossy(MS, p), seed);
        let n = 100_000u64;
        for i in 0..n {
            link.send(epoch + Duration::from_micros(i), numbered(i, 8));
        }
        let stats = link.stats();
        let observed = stats.dropped_loss as f64 / n as f64;
        // Six standard deviations of a binomial proportion.
        let tolerance = 6.0 * (p * (1.0 - p) / n as f64).sqrt();
        assert!(
            (observed - p).abs() < tolerance,
            "p={p}: observed {observed}"
        );
        assert_eq!(
            drain_all(&mut link, epoch).len() as u64,
            n - stats.dropped_loss
        );
    }
}

/// Mean length of runs of consecutive losses over `n` sends.
fn mean_loss_burst(loss: Loss, n: u64, seed: u64) -> (f64, f64) {
    let epoch = Instant::now();
    let mut link = Link::new(LinkConfig::lossless(MS).with_loss(loss), seed);
    let (mut bursts, mut lost, mut in_burst) = (0u64, 0u64, false);
    for i in 0..n {
        let dropped = link.send(epoch, numbered(i, 8)) == SendOutcome::DroppedLoss;
        if dropped {
            lost += 1;
            if !in_burst {
                bursts += 1;
            }
        }
        in_burst = dropped;
    }
    (lost as f64 / bursts.max(1) as f64, lost as f64 / n as f64)
}

#[test]
fn gilbert_elliott_loses_in_bursts() {
    let ge = Loss::GilbertElliott {
        p_good_to_bad: 0.02,
        p_bad_to_good: 0.2,
        loss_in_good: 0.0,
        loss_in_bad: 0.9,
    };
    let average = ge.average_rate();
    assert!((average - 0.0818).abs() < 0.001, "{average}");
    let (ge_burst, ge_rate) = mean_loss_burst(ge, 100_000, 11);
    let (random_burst, random_rate) = mean_loss_burst(Loss::Random(average), 100_000, 11);
    assert!(
        (ge_rate - average).abs() < 0.015,
        "GE rate {ge_rate} vs {average}"
    );
    assert!(
        (random_rate - average).abs() < 0.006,
        "random rate {random_rate} vs {average}"
    );
    assert!(random_burst < 1.2, "random bursts {random_burst}");
    assert!(
        ge_burst > 2.0 * random_burst,
        "GE bursts {ge_burst} vs random {random_burst}"
    );
}

#[test]
fn duplication_rate_matches_configuration() {
    let epoch = Instant::now();
    let mut link = Link::new(LinkConfig::lossless(MS).with_duplicate(0.2), 5);
    let n = 100_000u64;
    for i in 0..n {
        assert_eq!(link.send(epoch, numbered(i, 16)), SendOutcome::Queued);
    }
    let stats = link.stats();
    let observed = stats.duplicated as f64 / n as f64;
    assert!((observed - 0.2).abs() < 0.01, "{observed}");
    assert_eq!(link.in_flight_bytes(), 16 * (n + stats.duplicated) as usize);
    let delivered = drain_all(&mut link, epoch);
    assert_eq!(delivered.len() as u64, n + stats.duplicated);
    let mut copies = vec![0u8; n as usize];
    for (_, d) in &delivered {
        copies[index_of(d) as usize] += 1;
    }
    assert!(copies.iter().all(|&c| c == 1 || c == 2));
    assert_eq!(
        copies.iter().filter(|&&c| c == 2).count() as u64,
        stats.duplicated
    );
    assert_eq!(link.in_flight_bytes(), 0);
}

#[test]
fn reorder_rate_matches_configuration() {
    let epoch = Instant::now();
    let mut link = Link::new(LinkConfig::lossless(10 * MS).with_reorder(0.1, 50 * MS), 6);
    let n = 100_000u64;
    let mut out = Vec::new();
    for i in 0..n {
        let now = epoch + ms(i);
        drain_until(&mut link, epoch, now, &mut out);
        link.send(now, numbered(i, 8));
    }
    out.extend(drain_all(&mut link, epoch));
    let stats = link.stats();
    let observed = stats.reordered as f64 / n as f64;
    assert!((observed - 0.1).abs() < 0.006, "{observed}");
    // A held-back datagram arrives after later ones; nothing else is out of order.
    let (mut max_seen, mut out_of_order) = (None, 0u64);
    for (_, d) in &out {
        let i = index_of(d);
        if max_seen.is_some_and(|m| i < m) {
            out_of_order += 1;
        }
        max_seen = max_seen.max(Some(i));
    }
    assert!(out_of_order <= stats.reordered);
    assert!(
        out_of_order + 60 >= stats.reordered,
        "{out_of_order} vs {stats:?}"
    );
}

#[test]
fn reliable_link_never_drops_duplicates_or_reorders() {
    let epoch = Instant::now();
    let config = LinkConfig::lossy(10 * MS, 0.3)
        .with_jitter(20 * MS)
        .with_duplicate(0.3)
        .with_reorder(0.3, 50 * MS)
        .with_reliable(true);
    let mut link = Link::new(config, 21);
    let mut out = Vec::new();
    let n = 20_000u64;
    for i in 0..n {
        // Bursts of four sends at the same instant, then a pause.
        let now = epoch + ms(i / 4);
        drain_until(&mut link, epoch, now, &mut out);
        assert_eq!(link.send(now, numbered(i, 32)), SendOutcome::Queued);
    }
    out.extend(drain_all(&mut link, epoch));
    let indices: Vec<u64> = out.iter().map(|(_, d)| index_of(d)).collect();
    assert_eq!(indices, (0..n).collect::<Vec<_>>());
    assert!(out.windows(2).all(|w| w[0].0 <= w[1].0));
    // Jitter still spreads delivery times.
    assert!(out.iter().any(|(t, _)| *t > ms(n / 4) + 10 * MS));
    let stats = link.stats();
    assert_eq!(
        (stats.dropped_loss, stats.duplicated, stats.reordered),
        (0, 0, 0)
    );
    assert_eq!(stats.delivered, n);
}

#[test]
fn jitter_stays_within_bounds() {
    let epoch = Instant::now();
    let mut link = Link::new(LinkConfig::lossless(10 * MS).with_jitter(4 * MS), 8);
    let mut out = Vec::new();
    for i in 0..10_000u64 {
        let now = epoch + ms(i);
        drain_until(&mut link, epoch, now, &mut out);
        link.send(now, numbered(i, 8));
    }
    out.extend(drain_all(&mut link, epoch));
    let delays: Vec<Duration> = out.iter().map(|(t, d)| *t - ms(index_of(d))).collect();
    assert!(delays.iter().all(|d| (10 * MS..=14 * MS).contains(d)));
    let min = delays.iter().min().copied();
    let max = delays.iter().max().copied();
    assert!(min < Some(10 * MS + Duration::from_micros(100)), "{min:?}");
    assert!(max > Some(14 * MS - Duration::from_micros(100)), "{max:?}");
}

#[test]
fn saturated_rate_limited_link_carries_the_configured_rate() {
    for (rate, size, seed) in [(1_000_000u64, 1000usize, 1u64), (250_000, 1372, 2)] {
        let epoch = Instant::now();
        let limit = 20 * size;
        let config = LinkConfig::lossless(10 * MS)
            .with_rate(rate)
            .with_queue_limit(limit);
        let mut link = Link::new(config, seed);
        let (mut clock, mut window_bytes) = (Clock::starting_at(epoch), 0u64);
        let (start, end) = (
            epoch + Duration::from_secs(1),
            epoch + Duration::from_secs(11),
        );
        let mut i = 0u64;
        while clock.now() < end {
            // Keep the queue full.
            while link.send(clock.now(), numbered(i, size)) == SendOutcome::Queued {
                i += 1;
                assert!(link.queued_bytes(clock.now()) <= limit);
            }
            assert!(link.queued_bytes(clock.now()) <= limit);
            while let Some(d) = link.poll_deliver(clock.now()) {
                if clock.now() >= start {
                    window_bytes += d.len() as u64;
                }
            }
            clock.advance_by(MS);
        }
        let throughput = window_bytes as f64 / 10.0;
        assert!(
            (throughput / rate as f64 - 1.0).abs() < 0.02,
            "rate {rate}: got {throughput}"
        );
        assert!(link.stats().dropped_queue > 0);
        // In flight beyond the limiter is bounded by the queue plus latency × rate.
        let bound = limit + (rate as usize / 100) + size;
        assert!(
            link.in_flight_bytes() <= bound,
            "{} > {bound}",
            link.in_flight_bytes()
        );
    }
}

#[test]
fn queue_tail_drops_and_drains_at_the_rate() {
    let epoch = Instant::now();
    let config = LinkConfig::lossless(10 * MS)
        .with_rate(1000)
        .with_queue_limit(5000);
    let mut link = Link::new(config, 4);
    let outcomes: Vec<SendOutcome> = (0..8)
        .map(|i| link.send(epoch, numbered(i, 1000)))
        .collect();
    assert!(outcomes[..5].iter().all(|o| *o == SendOutcome::Queued));
    assert!(
        outcomes[5..]
            .iter()
            .all(|o| *o == SendOutcome::DroppedQueueFull)
    );
    assert_eq!(link.queued_bytes(epoch), 5000);
    assert_eq!(link.stats().dropped_queue, 3);
    // The first datagram finishes serializing after one second; then there is room again.
    let one_sec = epoch + Duration::from_secs(1);
    assert_eq!(link.queued_bytes(one_sec), 4000);
    assert_eq!(link.send(one_sec, numbered(8, 1000)), SendOutcome::Queued);
    assert_eq!(
        link.send(one_sec, numbered(9, 1),),
        SendOutcome::DroppedQueueFull
    );
    let out = drain_all(&mut link, epoch);
    let times: Vec<Duration> = out.iter().map(|(t, _)| *t).collect();
    let expected: Vec<Duration> = (1..=6).map(|s| Duration::from_secs(s) + 10 * MS).collect();
    assert_eq!(times, expected);
}

#[test]
fn oversized_datagrams_are_dropped_at_the_mtu() {
    let epoch = Instant::now();
    let mut link = Link::new(LinkConfig::lossless(MS).with_mtu(1200), 0);
    assert_eq!(link.send(epoch, numbered(0, 1200)), SendOutcome::Queued);
    assert_eq!(link.send(epoch, numbered(1, 1201)), SendOutcome::DroppedMtu);
    assert_eq!(link.send(epoch, Bytes::new()), SendOutcome::Queued);
    let stats = link.stats();
    assert_eq!((stats.sent, stats.dropped_mtu), (3, 1));
    let out = drain_all(&mut link, epoch);
    assert_eq!(
        out.iter().map(|(_, d)| d.len()).collect::<Vec<_>>(),
        vec![1200, 0]
    );
    assert_eq!(link.stats().bytes_delivered, 1200);
}

#[test]
fn link_down_drops_in_flight_and_new_sends() {
    let epoch = Instant::now();
    let mut net = DuplexLink::new(LinkConfig::lossless(10 * MS).with_rate(10_000), 1);
    for i in 0..5 {
        assert!(net.a_to_b.send(epoch, numbered(i, 100)).is_queued());
        assert!(net.b_to_a.send(epoch, numbered(i, 100)).is_queued());
    }
    assert!(net.poll_timeout().is_some());
    net.set_up(false);
    assert!(!net.is_up() && !net.a_to_b.is_up());
    assert_eq!(net.poll_timeout(), None);
    assert_eq!(net.a_to_b.in_flight_bytes(), 0);
    assert_eq!(net.a_to_b.queued_bytes(epoch), 0);
    assert_eq!(
        net.a_to_b.poll_deliver(epoch + Duration::from_secs(10)),
        None
    );
    let later = epoch + 5 * MS;
    assert_eq!(
        net.a_to_b.send(later, numbered(9, 100)),
        SendOutcome::DroppedDown
    );
    assert_eq!(net.a_to_b.stats().dropped_down, 6);
    assert_eq!(net.b_to_a.stats().dropped_down, 5);

    net.set_up(true);
    assert!(net.is_up());
    // The rate limiter restarts empty: no queue left over from before the outage.
    assert!(net.a_to_b.send(later, numbered(10, 100)).is_queued());
    let out = drain_all(&mut net.a_to_b, epoch);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 5 * MS + 10 * MS + 10 * MS);
    assert_eq!(index_of(&out[0].1), 10);
}

#[test]
fn poll_timeout_and_poll_deliver_agree() {
    let epoch = Instant::now();
    let mut link = Link::new(busy_config().with_loss(Loss::None), 13);
    assert_eq!(link.poll_timeout(), None);
    assert_eq!(link.poll_deliver(epoch), None);
    for i in 0..500u64 {
        link.send(
            epoch + Duration::from_micros(i * 37),
            numbered(i, 64 + (i as usize % 400)),
        );
    }
    let mut delivered = 0;
    while let Some(due) = link.poll_timeout() {
        assert_eq!(link.poll_deliver(due - Duration::from_nanos(1)), None);
        let before = link.in_flight_len();
        assert!(link.poll_deliver(due).is_some());
        assert_eq!(link.in_flight_len(), before - 1);
        assert!(link.poll_timeout().is_none_or(|next| next >= due));
        delivered += 1;
    }
    let stats = link.stats();
    assert_eq!(delivered, stats.delivered);
    assert!(stats.dropped_queue > 0, "{stats:?}");
    assert_eq!(delivered, 500 - stats.dropped_queue + stats.duplicated);
}

#[test]
fn world_loop_with_clock_and_earliest() {
    // Two links of different latency feeding one receiver: the loop steps to the earliest wake-up.
    let mut clock = Clock::new();
    let mut fast = Link::new(LinkConfig::lossless(5 * MS), 1);
    let mut slow = Link::new(LinkConfig::lossless(30 * MS), 2);
    fast.send(clock.now(), Bytes::from_static(b"fast"));
    slow.send(clock.now(), Bytes::from_static(b"slow"));
    let mut arrivals = Vec::new();
    while let Some(t) = clock.advance_to_earliest([fast.poll_timeout(), slow.poll_timeout()]) {
        assert_eq!(t, clock.now());
        for link in [&mut fast, &mut slow] {
            while let Some(d) = link.poll_deliver(clock.now()) {
                arrivals.push((clock.elapsed(), d));
            }
        }
    }
    assert_eq!(
        arrivals,
        vec![
            (5 * MS, Bytes::from_static(b"fast")),
            (30 * MS, Bytes::from_static(b"slow"))
        ]
    );
    assert_eq!(earliest([fast.poll_timeout(), slow.poll_timeout()]), None);
}

#[test]
fn config_changes_apply_to_later_sends() {
    let epoch = Instant::now();
    let mut link = Link::new(LinkConfig::lossless(10 * MS), 1);
    link.send(epoch, numbered(0, 8));
    link.config_mut().latency = 2 * MS;
    link.config_mut().loss = Loss::Random(1.0);
    assert_eq!(link.send(epoch, numbered(1, 8)), SendOutcome::DroppedLoss);
    link.config_mut().loss = Loss::None;
    link.send(epoch, numbered(2, 8));
    assert_eq!(link.config().latency, 2 * MS);
    let out = drain_all(&mut link, epoch);
    let got: Vec<(Duration, u64)> = out.iter().map(|(t, d)| (*t, index_of(d))).collect();
    assert_eq!(got, vec![(2 * MS, 2), (10 * MS, 0)]);
}
