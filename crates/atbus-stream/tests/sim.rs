//! Exactly-once, in-order delivery over simulated paths with loss, duplication, reordering and
//! jitter; 1, 2 and 3 paths of MTU 548 / 1224 / 65535; paths added, removed and killed with data
//! in flight. A failure prints its seed; `ATBUS_SIM_SEED=N` replays it.

mod common;

use std::time::Duration;

use atbus_netsim::{LinkConfig, Loss, for_each_seed};
use atbus_stream::PathKind;
use common::{World, messages};

const MTUS: [usize; 3] = [548, 1224, 65535];

fn lossy(loss: f64) -> LinkConfig {
    LinkConfig::lossless(Duration::from_millis(10))
        .with_loss(Loss::Random(loss))
        .with_duplicate(0.05)
        .with_reorder(0.05, Duration::from_millis(7))
        .with_jitter(Duration::from_millis(3))
        .with_rate(4_000_000)
}

fn kinds(n: usize) -> Vec<(PathKind, usize)> {
    [
        (PathKind::Datagram, MTUS[0]),
        (PathKind::Datagram, MTUS[1]),
        (PathKind::ByteStream, MTUS[2]),
    ]
    .into_iter()
    .take(n)
    .collect()
}

fn transfer(seed: u64, paths: &[(PathKind, usize)], loss: f64) {
    let mut w = World::new(seed);
    for &(kind, mtu) in paths {
        w.add_path(kind, mtu, lossy(loss));
    }
    w.plan(1, messages(seed, 200, 3000));
    w.plan(2, messages(seed ^ 7, 100, 300));
    w.plan(7, messages(seed ^ 9, 5, 40_000));
    assert!(
        w.run(Duration::from_secs(600), false),
        "seed {seed}: transfer did not finish"
    );
    w.assert_exactly_once();
}

#[test]
fn lossless_one_two_three_paths() {
    for n in 1..=3 {
        for_each_seed(2, |seed| transfer(seed, &kinds(n), 0.0));
    }
}

#[test]
fn datagram_paths_under_loss() {
    for loss in [0.01, 0.1, 0.3] {
        for n in 1..=2 {
            for_each_seed(2, |seed| transfer(seed, &kinds(n), loss));
        }
    }
}

#[test]
fn mixed_paths_under_loss() {
    for loss in [0.05, 0.3] {
        for_each_seed(2, |seed| transfer(seed, &kinds(3), loss));
    }
}

#[test]
fn byte_stream_only() {
    for_each_seed(2, |seed| {
        transfer(seed, &[(PathKind::ByteStream, 65535)], 0.0)
    });
}

#[test]
fn path_killed_with_data_in_flight() {
    for n in 2..=3 {
        for_each_seed(3, |seed| {
            let mut w = World::new(seed);
            for (kind, mtu) in kinds(n) {
                w.add_path(kind, mtu, lossy(0.05));
            }
            w.plan(1, messages(seed, 300, 2000));
            let start = w.clock.now();
            let mut killed = false;
            let ok = w.run_with(Duration::from_secs(600), false, |w| {
                if !killed && w.clock.now() >= start + Duration::from_millis(40) {
                    killed = true;
                    // Kill the last path (in 3-path runs the byte stream) mid-transfer.
                    w.kill_path(n - 1);
                }
            });
            assert!(
                killed && ok,
                "seed {seed}: did not finish after a path was killed"
            );
            w.assert_exactly_once();
        });
    }
}

#[test]
fn paths_added_and_removed_mid_transfer() {
    for_each_seed(3, |seed| {
        let mut w = World::new(seed);
        w.add_path(PathKind::Datagram, 548, lossy(0.1));
        w.plan(1, messages(seed, 300, 2000));
        w.plan(3, messages(seed ^ 3, 300, 100));
        let start = w.clock.now();
        let mut step = 0;
        let ok = w.run_with(Duration::from_secs(600), false, |w| {
            let t = w.clock.now() - start;
            if step == 0 && t >= Duration::from_millis(30) {
                w.add_path(PathKind::Datagram, 1224, lossy(0.05));
                step = 1;
            } else if step == 1 && t >= Duration::from_millis(60) {
                w.add_path(
                    PathKind::ByteStream,
                    65535,
                    LinkConfig::lossless(Duration::from_millis(5)),
                );
                step = 2;
            } else if step == 2 && t >= Duration::from_millis(90) {
                w.kill_path(0);
                step = 3;
            }
        });
        assert!(ok && step == 3, "seed {seed}: did not finish (step {step})");
        w.assert_exactly_once();
    });
}

#[test]
fn burst_loss_and_duplication() {
    for_each_seed(3, |seed| {
        let mut w = World::new(seed);
        let burst = LinkConfig::lossless(Duration::from_millis(20))
            .with_loss(Loss::GilbertElliott {
                p_good_to_bad: 0.02,
                p_bad_to_good: 0.3,
                loss_in_good: 0.01,
                loss_in_bad: 0.7,
            })
            .with_duplicate(0.05)
            .with_rate(2_000_000);
        w.add_path(PathKind::Datagram, 1224, burst.clone());
        w.add_path(PathKind::Relayed, 1224, burst);
        w.plan(5, messages(seed, 400, 1500));
        assert!(
            w.run(Duration::from_secs(600), false),
            "seed {seed}: did not finish"
        );
        w.assert_exactly_once();
    });
}

#[test]
fn slow_reader_keeps_memory_bounded() {
    for_each_seed(2, |seed| {
        let mut w = World::new(seed);
        w.add_path(
            PathKind::ByteStream,
            65535,
            LinkConfig::lossless(Duration::from_millis(1)),
        );
        w.add_path(PathKind::Datagram, 1224, lossy(0.05));
        w.plan(1, messages(seed, 400, 4000));
        w.plan(2, messages(seed ^ 1, 400, 4000));
        assert!(
            w.run(Duration::from_secs(600), true),
            "seed {seed}: did not finish"
        );
        w.assert_exactly_once();
        let limit = 256 * 1024 + 65535;
        assert!(
            w.max_receive_buffered <= limit,
            "seed {seed}: receiver buffered {} > {limit}",
            w.max_receive_buffered
        );
    });
}
