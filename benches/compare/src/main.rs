//! `atbus-compare`: libatbus-rs side by side with other protocols over the same simulated links.
//!
//! `atbus-compare lossy` runs KCP and atbus sessions over identical `atbus-netsim` links (same
//! configuration, same seeds) and prints a Markdown report; `--write-docs` also puts it into
//! `docs/stream.md` under `## Benchmarks against KCP`.
//!
//! `atbus-compare loopback [--quick]` runs raw blocking sockets, atbus `NodeDriver`s, ZeroMQ
//! (over loopback TCP and Unix sockets) and quinn (over loopback UDP) in alternation and prints
//! a Markdown report with the goals marked met or not met (`cargo xtask bench-compare`
//! puts it into `docs/benchmarks.md`).

mod atbus_nodes;
mod atbus_peer;
mod kcp_peer;
mod loopback;
mod lossy_udp;
mod markdown;
mod nats_peer;
mod net;
mod quinn_peer;
mod report;
mod svg;
mod workload;
mod zmq_peer;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use atbus_netsim::Clock;
use clap::{Parser, Subcommand};

use crate::atbus_peer::{AtbusMode, AtbusPair};
use crate::kcp_peer::{KcpMode, KcpPair};
use crate::net::{Pair, RATE_5_MBIT, RATE_10_MBIT, link_config};
use crate::workload::{Bulk, BulkResult, Latency, LatencyResult};

#[derive(Parser)]
#[command(
    name = "atbus-compare",
    about = "libatbus-rs beside other protocols: simulated lossy links and real loopback sockets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// KCP vs atbus sessions over lossy 10 Mbit/s, 40 ms RTT links; atbus over two paths vs one.
    Lossy(LossyArgs),
    /// Raw sockets, atbus and ZeroMQ over loopback TCP and Unix sockets, in real time.
    Loopback(loopback::LoopbackArgs),
}

#[derive(clap::Args, Clone)]
struct LossyArgs {
    /// Seeds per configuration (medians are reported).
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Virtual seconds of each bulk transfer.
    #[arg(long, default_value_t = 20)]
    bulk_secs: u64,
    /// Messages in each latency run (200 B every 10 ms).
    #[arg(long, default_value_t = 1000)]
    latency_messages: usize,
    /// Loss rates (fractions) of the KCP comparison.
    #[arg(long, value_delimiter = ',', default_values_t = [0.01, 0.05, 0.10])]
    losses: Vec<f64>,
    /// KCP fast mode's send and receive window, in segments.
    #[arg(long, default_value_t = 128)]
    kcp_fast_wnd: u16,
    /// Worker threads (runs are independent and deterministic; the result does not depend on it).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Also write the report into docs/stream.md (section `## Benchmarks against KCP`).
    #[arg(long)]
    write_docs: bool,
    /// Leave out the runs over real UDP through the lossy proxy.
    #[arg(long)]
    no_udp: bool,
    /// Run only the real-UDP part (no simulation, nothing written; the goals list only its rows).
    #[arg(long, conflicts_with_all = ["no_udp", "write_docs"])]
    udp_only: bool,
    /// Run only the pairings whose name starts with this (`fast` or `normal`).
    #[arg(long)]
    pairing: Option<String>,
    /// Print each atbus bulk run's sender trace (window cuts, loss batches, reverse datagrams).
    #[arg(long)]
    trace: bool,
    /// Real seconds of each bulk run over the proxy.
    #[arg(long, default_value_t = 10)]
    udp_bulk_secs: u64,
    /// Messages of each latency run over the proxy.
    #[arg(long, default_value_t = 1000)]
    udp_latency_messages: usize,
    /// Write the goodput-vs-loss plot (SVG) into this directory.
    #[arg(long)]
    svg_dir: Option<PathBuf>,
}

/// Loss rates of the two-path run.
const TWO_PATH_LOSSES: [f64; 2] = [0.0, 0.01];
/// Bulk message size.
const BULK_MESSAGE: usize = 1024;
/// Latency workload message size and spacing.
const LATENCY_MESSAGE: usize = 200;
const LATENCY_INTERVAL: Duration = Duration::from_millis(10);
/// How long a latency run waits for stragglers after its last send.
const LATENCY_DRAIN: Duration = Duration::from_secs(30);

/// A pairing of KCP and atbus configurations.
#[derive(Debug, Clone, Copy)]
pub struct Pairing {
    name: &'static str,
    kcp: KcpMode,
    atbus: AtbusMode,
}

fn pairings(args: &LossyArgs) -> [Pairing; 2] {
    [
        Pairing {
            name: "fast / no_delay",
            kcp: KcpMode::Fast {
                wnd: args.kcp_fast_wnd,
            },
            atbus: AtbusMode::NoDelay,
        },
        Pairing {
            name: "normal / default",
            kcp: KcpMode::Normal,
            atbus: AtbusMode::Default,
        },
    ]
}

/// One independent simulation.
#[derive(Debug, Clone, Copy)]
enum Job {
    KcpBulk(KcpMode, f64, u64),
    KcpLatency(KcpMode, f64, u64),
    AtbusBulk(AtbusMode, f64, u64),
    AtbusLatency(AtbusMode, f64, u64),
    /// atbus default mode, `paths` links of 5 Mbit/s each.
    MultiPath(usize, f64, u64),
}

#[derive(Debug, Clone)]
enum Outcome {
    Bulk(BulkResult),
    Latency(LatencyResult),
}

fn run_job(job: Job, args: &LossyArgs) -> Outcome {
    let mut clock = Clock::new();
    let now = clock.now();
    let bulk = Bulk {
        duration: Duration::from_secs(args.bulk_secs),
        message_size: BULK_MESSAGE,
    };
    let seed = match job {
        Job::KcpBulk(.., s)
        | Job::KcpLatency(.., s)
        | Job::AtbusBulk(.., s)
        | Job::AtbusLatency(.., s)
        | Job::MultiPath(.., s) => s,
    };
    let latency = Latency {
        count: args.latency_messages,
        size: LATENCY_MESSAGE,
        interval: LATENCY_INTERVAL,
        drain: LATENCY_DRAIN,
        seed,
    };
    let mut pair: Box<dyn Pair> = match job {
        Job::KcpBulk(m, loss, seed) | Job::KcpLatency(m, loss, seed) => {
            Box::new(KcpPair::new(m, link_config(loss, RATE_10_MBIT), seed, now))
        }
        Job::AtbusBulk(m, loss, seed) | Job::AtbusLatency(m, loss, seed) => Box::new(
            AtbusPair::new(m, &[link_config(loss, RATE_10_MBIT)], seed, now),
        ),
        Job::MultiPath(paths, loss, seed) => Box::new(AtbusPair::new(
            AtbusMode::Default,
            &vec![link_config(loss, RATE_5_MBIT); paths],
            seed,
            now,
        )),
    };
    match job {
        Job::KcpBulk(..) | Job::AtbusBulk(..) | Job::MultiPath(..) => {
            let out = workload::run_bulk(pair.as_mut(), &mut clock, bulk);
            if let (true, Job::AtbusBulk(..), Some((t, reverse))) =
                (args.trace, job, pair.sender_trace())
            {
                eprintln!("{job:?} trace: {}", t.describe(out.link.sent, reverse));
            }
            Outcome::Bulk(out)
        }
        Job::KcpLatency(..) | Job::AtbusLatency(..) => {
            Outcome::Latency(workload::run_latency(pair.as_mut(), &mut clock, latency))
        }
    }
}

/// Runs every job on `jobs` threads; results come back in job order.
fn run_all(list: &[Job], args: &LossyArgs) -> Vec<Outcome> {
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new(vec![None; list.len()]);
    std::thread::scope(|s| {
        for _ in 0..args.jobs.max(1) {
            s.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().expect("lock");
                        let i = *n;
                        *n += 1;
                        i
                    };
                    let Some(&job) = list.get(i) else { break };
                    let started = Instant::now();
                    let out = run_job(job, args);
                    eprintln!("{job:?}: {:.1} s wall", started.elapsed().as_secs_f64());
                    results.lock().expect("lock")[i] = Some(out);
                }
            });
        }
    });
    results
        .into_inner()
        .expect("lock")
        .into_iter()
        .map(|o| o.expect("every job ran"))
        .collect()
}

fn lossy(args: &LossyArgs) {
    let seeds = atbus_netsim::seeds(args.seeds, None);
    let pairings: Vec<Pairing> = pairings(args)
        .into_iter()
        .filter(|p| {
            args.pairing
                .as_ref()
                .is_none_or(|f| p.name.starts_with(f.as_str()))
        })
        .collect();
    if args.udp_only {
        let p = lossy_udp::UdpParams {
            bulk: Duration::from_secs(args.udp_bulk_secs.max(1)),
            latency_messages: args.udp_latency_messages.max(1),
            seed: seeds.first().copied().unwrap_or(1),
        };
        let udp_rows = lossy_udp::run_rows(&pairings, &args.losses, p);
        print!("{}", lossy_udp::section(&p, &udp_rows, &[]));
        return;
    }
    let mut jobs = Vec::new();
    for &p in &pairings {
        for &loss in &args.losses {
            for &seed in &seeds {
                jobs.push(Job::KcpBulk(p.kcp, loss, seed));
                jobs.push(Job::AtbusBulk(p.atbus, loss, seed));
                jobs.push(Job::KcpLatency(p.kcp, loss, seed));
                jobs.push(Job::AtbusLatency(p.atbus, loss, seed));
            }
        }
    }
    for loss in TWO_PATH_LOSSES {
        for &seed in &seeds {
            jobs.push(Job::MultiPath(1, loss, seed));
            jobs.push(Job::MultiPath(2, loss, seed));
        }
    }
    let started = Instant::now();
    let outcomes = run_all(&jobs, args);
    eprintln!(
        "{} simulations in {:.1} s wall",
        jobs.len(),
        started.elapsed().as_secs_f64()
    );

    let mut it = outcomes.into_iter();
    let mut rows = Vec::new();
    for &p in &pairings {
        for &loss in &args.losses {
            let mut runs = Vec::new();
            for _ in &seeds {
                let (Some(Outcome::Bulk(kb)), Some(Outcome::Bulk(ab))) = (it.next(), it.next())
                else {
                    unreachable!("bulk outcomes in job order")
                };
                let (Some(Outcome::Latency(kl)), Some(Outcome::Latency(al))) =
                    (it.next(), it.next())
                else {
                    unreachable!("latency outcomes in job order")
                };
                runs.push(report::SeedRun { kb, ab, kl, al });
            }
            rows.push(report::Row::new(p.name, loss, &runs));
        }
    }
    let mut two_path = Vec::new();
    for loss in TWO_PATH_LOSSES {
        let mut pairs = Vec::new();
        for _ in &seeds {
            let (Some(Outcome::Bulk(one)), Some(Outcome::Bulk(two))) = (it.next(), it.next())
            else {
                unreachable!("bulk outcomes in job order")
            };
            pairs.push((one, two));
        }
        two_path.push(report::TwoPathRow::new(loss, &pairs));
    }

    let params = report::Params {
        seeds: seeds.len(),
        bulk_secs: args.bulk_secs,
        latency_messages: args.latency_messages,
        pairings: &pairings,
    };
    let section = report::section(&params, &rows, &two_path);
    print!("{section}");
    if args.write_docs {
        let path = docs_path();
        report::write_section(&path, &section).expect("write docs/stream.md");
        eprintln!("wrote {}", path.display());
    }
    let sim: Vec<report::RowFigures> = rows.iter().map(report::Row::figures).collect();
    let udp_rows = if args.no_udp {
        Vec::new()
    } else {
        let p = lossy_udp::UdpParams {
            bulk: Duration::from_secs(args.udp_bulk_secs.max(1)),
            latency_messages: args.udp_latency_messages.max(1),
            seed: seeds.first().copied().unwrap_or(1),
        };
        let started = Instant::now();
        let udp_rows = lossy_udp::run_rows(&pairings, &args.losses, p);
        eprintln!(
            "real UDP runs: {:.1} s wall",
            started.elapsed().as_secs_f64()
        );
        print!("\n{}", lossy_udp::section(&p, &udp_rows, &sim));
        udp_rows
    };
    if let Some(dir) = &args.svg_dir {
        let path = dir.join("goodput-vs-loss.svg");
        svg::write(&path, &lossy_udp::chart(&udp_rows, &sim)).expect("write plot");
        eprintln!("wrote {}", path.display());
    }
}

fn docs_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/stream.md")
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Lossy(args) => lossy(&args),
        Command::Loopback(args) => loopback::run(&args),
    }
}
