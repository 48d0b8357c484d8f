//! Property test over random operation scripts: sends, skips, resets, inbound drops and
//! reordering, paths added and removed, time advancing, a slow reader. Whatever the script, every
//! message is delivered exactly once in order or reported skipped, memory stays bounded, and no
//! datagram exceeds its path MTU (the harness asserts that on every transmit).

mod common;

use std::time::Duration;

use atbus_netsim::{LinkConfig, Loss};
use atbus_stream::PathKind;
use bytes::Bytes;
use common::World;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Send {
        stream: i64,
        len: usize,
        count: usize,
    },
    Skip {
        stream: i64,
    },
    Reset {
        stream: i64,
    },
    DropInbound {
        path: usize,
    },
    Reorder {
        path: usize,
    },
    AddPath {
        kind: u8,
    },
    RemovePath {
        path: usize,
    },
    Advance {
        ms: u64,
    },
    SlowReader {
        on: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0i64..4, 1usize..4000, 1usize..20).prop_map(|(stream, len, count)| Op::Send { stream, len, count }),
        1 => (0i64..4).prop_map(|stream| Op::Skip { stream }),
        1 => (0i64..4).prop_map(|stream| Op::Reset { stream }),
        2 => (0usize..4).prop_map(|path| Op::DropInbound { path }),
        2 => (0usize..4).prop_map(|path| Op::Reorder { path }),
        1 => (0u8..3).prop_map(|kind| Op::AddPath { kind }),
        1 => (0usize..4).prop_map(|path| Op::RemovePath { path }),
        3 => (1u64..200).prop_map(|ms| Op::Advance { ms }),
        1 => any::<bool>().prop_map(|on| Op::SlowReader { on }),
    ]
}

fn base_link() -> LinkConfig {
    LinkConfig::lossless(Duration::from_millis(8))
        .with_jitter(Duration::from_millis(2))
        .with_rate(2_000_000)
}

fn add_path(w: &mut World, kind: u8) {
    let (kind, mtu) = match kind {
        0 => (PathKind::Datagram, 548),
        1 => (PathKind::Datagram, 1224),
        _ => (PathKind::ByteStream, 65535),
    };
    w.add_path(kind, mtu, base_link());
}

fn alive(w: &World) -> Vec<usize> {
    (0..w.paths.len()).filter(|&i| w.paths[i].alive).collect()
}

fn run_script(seed: u64, first_path: u8, ops: Vec<Op>) {
    let mut w = World::new(seed);
    add_path(&mut w, first_path);
    let mut counter = 0u8;
    let mut slow = false;
    for op in ops {
        match op {
            Op::Send { stream, len, count } => {
                let msgs = (0..count)
                    .map(|_| {
                        counter = counter.wrapping_add(1);
                        Bytes::from(vec![counter; len])
                    })
                    .collect();
                w.plan(stream, msgs);
            }
            Op::Skip { stream } => {
                let target = w
                    .streams
                    .get(&stream)
                    .and_then(|p| p.sent_offsets.last().copied());
                if let Some(target) = target {
                    w.a.skip(stream, target)
                        .expect("last sent offset is a boundary");
                }
            }
            Op::Reset { stream } => {
                if w.a.reset(stream).is_ok() {
                    w.streams.entry(stream).or_default().reset = true;
                }
            }
            Op::DropInbound { path } | Op::Reorder { path } => {
                let live = alive(&w);
                let i = live[path % live.len()];
                if w.paths[i].kind != PathKind::ByteStream {
                    let cfg = w.paths[i].link.a_to_b.config_mut();
                    if matches!(op, Op::DropInbound { .. }) {
                        cfg.loss = Loss::Random(0.5);
                    } else {
                        cfg.reorder = 0.5;
                        cfg.reorder_delay = Duration::from_millis(15);
                    }
                    w.run_for(Duration::from_millis(20));
                    let cfg = w.paths[i].link.a_to_b.config_mut();
                    cfg.loss = Loss::None;
                    cfg.reorder = 0.0;
                }
            }
            Op::AddPath { kind } => {
                if alive(&w).len() < 4 {
                    add_path(&mut w, kind);
                }
            }
            Op::RemovePath { path } => {
                let live = alive(&w);
                if live.len() > 1 {
                    w.kill_path(live[path % live.len()]);
                }
            }
            Op::Advance { ms } => {
                if slow {
                    // A slow reader: time passes, the receiver takes one message per step.
                    w.run_with(Duration::from_millis(ms), true, |_| {});
                } else {
                    w.run_for(Duration::from_millis(ms));
                }
            }
            Op::SlowReader { on } => slow = on,
        }
    }
    let finished = w.run(Duration::from_secs(900), false);
    assert!(finished, "seed {seed}: script did not settle");
    w.assert_exactly_once_or_skipped();
    // Receive memory: the session window plus one package.
    let limit = 256 * 1024 + 65535;
    assert!(
        w.max_receive_buffered <= limit,
        "seed {seed}: buffered {}",
        w.max_receive_buffered
    );
    assert_eq!(
        w.a.send_buffered(),
        0,
        "seed {seed}: everything acknowledged is released"
    );
}

proptest! {
    #[test]
    fn any_script_is_exactly_once_or_skipped(
        seed in any::<u64>(),
        first_path in 0u8..3,
        ops in proptest::collection::vec(op(), 1..30),
    ) {
        run_script(seed, first_path, ops);
    }
}
