//! `atbus-compare loopback`: atbus `NodeDriver`s, raw blocking sockets and ZeroMQ over loopback
//! TCP and Unix sockets, in alternation (each round runs every contender once, in the same
//! order), with medians, min–max, ratios and the goals as a Markdown report.
//!
//! The atbus and raw echo pairs are the ones of `atbus-transport-mio`'s loopback bench
//! (`crates/atbus-transport-mio/benches/common/loopback.rs`, included as is); the ZeroMQ pairs
//! are in [`crate::zmq_peer`].

use std::fmt::Write as _;
use std::time::{Duration, Instant};

#[path = "../../../crates/atbus-transport-mio/benches/common/loopback.rs"]
pub(crate) mod common;

pub use common::Family;
use common::{AtbusPair, RawEchoMode, RawPair, payload, quantile};

use crate::atbus_nodes::{NodePair, Setup};
use crate::nats_peer::NatsPair;
use crate::quinn_peer::QuinnPair;
use crate::report::median;
use crate::svg;
use crate::zmq_peer::{ZmqReqRep, ZmqStream};

/// Messages in flight in the streamed workloads (atbus and ZeroMQ clients; raw batches).
const WINDOW: usize = 1000;

/// Which socket families to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FamilyArg {
    /// Loopback TCP only.
    Tcp,
    /// Unix stream sockets only.
    Unix,
    /// Both.
    Both,
}

/// Options of the `loopback` subcommand.
#[derive(clap::Args, Clone, Debug)]
pub struct LoopbackArgs {
    /// Fewer rounds and smaller counts (a run of seconds).
    #[arg(long)]
    pub quick: bool,
    /// Rounds of alternation (default 5, 3 with --quick).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Socket families.
    #[arg(long, value_enum, default_value_t = FamilyArg::Both)]
    pub family: FamilyArg,
    /// 64 B messages per contender and round (default 200000, 50000 with --quick).
    #[arg(long)]
    pub small_count: Option<usize>,
    /// 64 KiB messages per contender and round (default 2048, 512 with --quick).
    #[arg(long)]
    pub large_count: Option<usize>,
    /// Round trips per contender and round (default 5000, 1000 with --quick).
    #[arg(long)]
    pub pings: Option<usize>,
    /// Leave out the NATS rows (they need `nats-server` on the PATH).
    #[arg(long)]
    pub no_nats: bool,
    /// Write the latency CDF and throughput-vs-size plots (SVG) into this directory.
    #[arg(long)]
    pub svg_dir: Option<std::path::PathBuf>,
}

/// The resolved run parameters.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Rounds of alternation.
    pub rounds: usize,
    /// 64 B messages per contender and round.
    pub small_count: usize,
    /// 64 KiB messages per contender and round.
    pub large_count: usize,
    /// Round trips per contender and round.
    pub pings: usize,
    /// Whether `--quick` chose the defaults.
    pub quick: bool,
    /// Bytes per contender, size and round of the message-size sweep.
    pub sweep_bytes: usize,
    /// Whether the NATS rows run.
    pub nats: bool,
}

impl LoopbackArgs {
    fn params(&self) -> Params {
        let q = self.quick;
        Params {
            rounds: self.rounds.unwrap_or(if q { 3 } else { 5 }).max(1),
            small_count: self
                .small_count
                .unwrap_or(if q { 50_000 } else { 200_000 })
                .max(1),
            large_count: self
                .large_count
                .unwrap_or(if q { 512 } else { 2048 })
                .max(1),
            pings: self.pings.unwrap_or(if q { 1000 } else { 5000 }).max(1),
            quick: q,
            sweep_bytes: if q { 16 << 20 } else { 64 << 20 },
            nats: !self.no_nats,
        }
    }

    fn families(&self) -> Vec<Family> {
        match self.family {
            FamilyArg::Tcp => vec![Family::Tcp],
            FamilyArg::Unix => vec![Family::Unix],
            FamilyArg::Both => vec![Family::Tcp, Family::Unix],
        }
    }
}

/// A workload of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// 64 B messages per second, streamed with a window and echoed.
    Small,
    /// 64 KiB messages, bytes per second.
    Large,
    /// Round trip of one 64 B message (window 1), median.
    RttP50,
    /// Round trip of one 64 B message (window 1), 99th percentile.
    RttP99,
}

impl Workload {
    fn label(self) -> &'static str {
        match self {
            Workload::Small => "64 B echoed, msg/s",
            Workload::Large => "64 KiB echoed, MB/s",
            Workload::RttP50 => "round trip p50, µs",
            Workload::RttP99 => "round trip p99, µs",
        }
    }
}

/// Who ran a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contender {
    /// Raw blocking sockets, the reference of every ratio "× raw".
    Raw,
    /// Raw blocking sockets, one `write` per message (64 B only; not a reference).
    RawPerWrite,
    /// atbus `NodeDriver`s.
    Atbus,
    /// ZeroMQ, the reference of every ratio "× ZeroMQ".
    Zmq,
    /// quinn (QUIC over loopback UDP; in the TCP table only).
    Quinn,
    /// NATS through a local `nats-server` (TCP table only).
    Nats,
    /// atbus `NodeDriver`s over another link (TCP table only).
    Via(Setup),
}

impl Contender {
    fn label(self, w: Workload) -> &'static str {
        match (self, w) {
            (Contender::Raw, Workload::Small) => "raw, batched (1000 per write)",
            (Contender::Raw, Workload::Large) => "raw, one write per message",
            (Contender::Raw, _) => "raw ping-pong",
            (Contender::RawPerWrite, _) => "raw, one write per message",
            (Contender::Atbus, _) => "**atbus**",
            (Contender::Zmq, Workload::RttP50 | Workload::RttP99) => "ZeroMQ REQ/REP",
            (Contender::Zmq, _) => "ZeroMQ PUSH/PULL",
            (Contender::Quinn, Workload::Large) => "quinn, one QUIC stream (UDP)",
            (Contender::Quinn, _) => "quinn, QUIC stream (UDP)",
            (Contender::Nats, Workload::RttP50 | Workload::RttP99) => {
                "NATS request-reply (via nats-server)"
            }
            (Contender::Nats, _) => "NATS pub/sub echo (via nats-server)",
            (Contender::Via(Setup::Udp), _) => "**atbus**, udp://",
            (Contender::Via(Setup::Mem), _) => "**atbus**, mem:// (in process)",
            (Contender::Via(Setup::Mixed), _) => "**atbus**, 2 paths: tcp:// + unix://",
            (Contender::Via(Setup::Relay), _) => "**atbus**, one relay hop (tcp://)",
        }
    }
}

/// Per-round figures of one contender in one workload over one family.
#[derive(Debug, Clone)]
pub struct Series {
    /// Socket family.
    pub family: Family,
    /// Workload.
    pub workload: Workload,
    /// Contender.
    pub contender: Contender,
    /// One figure per round.
    pub values: Vec<f64>,
}

/// Everything one run measured.
#[derive(Default)]
struct Results {
    series: Vec<Series>,
    /// Round-trip samples (µs, sorted) of the last round, per contender label (TCP table).
    cdf: Vec<(String, Vec<f64>)>,
    /// Message-size sweep over TCP: (contender label, size, MB/s of every round).
    sweep: Vec<(String, usize, Vec<f64>)>,
}

impl Results {
    fn push(&mut self, family: Family, workload: Workload, contender: Contender, value: f64) {
        if let Some(s) = self
            .series
            .iter_mut()
            .find(|s| s.family == family && s.workload == workload && s.contender == contender)
        {
            s.values.push(value);
        } else {
            self.series.push(Series {
                family,
                workload,
                contender,
                values: vec![value],
            });
        }
    }

    fn sweep_push(&mut self, label: String, size: usize, value: f64) {
        if let Some(e) = self
            .sweep
            .iter_mut()
            .find(|(l, s, _)| *l == label && *s == size)
        {
            e.2.push(value);
        } else {
            self.sweep.push((label, size, vec![value]));
        }
    }

    fn median_of(&self, family: Family, workload: Workload, contender: Contender) -> Option<f64> {
        self.series
            .iter()
            .find(|s| s.family == family && s.workload == workload && s.contender == contender)
            .map(|s| median(s.values.clone()))
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// p50 and p99 in µs of `pings` round trips after a tenth as many unmeasured ones, and every
/// sample in µs, sorted.
fn sampled(pings: usize, mut one: impl FnMut() -> Duration) -> ((f64, f64), Vec<f64>) {
    let warm = (pings / 10).max(10);
    for _ in 0..warm {
        one();
    }
    let mut t: Vec<Duration> = (0..pings).map(|_| one()).collect();
    t.sort_unstable();
    let p = (us(quantile(&t, 0.5)), us(quantile(&t, 0.99)));
    (p, t.into_iter().map(us).collect())
}

/// Starts the NATS pair when asked and possible; says why not on stderr otherwise.
fn nats_pair(p: &Params) -> Option<NatsPair> {
    if !p.nats {
        return None;
    }
    match NatsPair::new() {
        Ok(n) => Some(n),
        Err(e) => {
            eprintln!(
                "NATS rows left out: {e} (is {} installed?)",
                crate::nats_peer::SERVER
            );
            None
        }
    }
}

/// The atbus setups of the TCP table beside the direct TCP pair.
const VIA: [Setup; 4] = [Setup::Udp, Setup::Mem, Setup::Mixed, Setup::Relay];

fn timed(f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64()
}

fn rtt(p: &Params, family: Family, out: &mut Results) {
    let data = payload(64);
    let mut raw = RawPair::new(family, RawEchoMode::PerMessage);
    let mut atbus = AtbusPair::new(family);
    let mut zmq = ZmqReqRep::new(family);
    let tcp = family == Family::Tcp;
    let mut quinn = tcp.then(QuinnPair::new);
    let mut nats = if tcp { nats_pair(p) } else { None };
    let mut via: Vec<(Setup, NodePair)> = if tcp {
        VIA.iter().map(|&s| (s, NodePair::new(s))).collect()
    } else {
        Vec::new()
    };
    for round in 0..p.rounds {
        let last = round + 1 == p.rounds;
        let mut keep = |c: Contender, (p50, p99): (f64, f64), samples: Vec<f64>| {
            out.push(family, Workload::RttP50, c, p50);
            out.push(family, Workload::RttP99, c, p99);
            if tcp && last {
                out.cdf
                    .push((c.label(Workload::RttP50).replace("**", ""), samples));
            }
        };
        let (r, rs) = sampled(p.pings, || raw.round_trip(&data));
        let (a, as_) = sampled(p.pings, || atbus.round_trip(&data));
        let (z, zs) = sampled(p.pings, || zmq.round_trip(&data));
        keep(Contender::Raw, r, rs);
        keep(Contender::Atbus, a, as_);
        keep(Contender::Zmq, z, zs);
        if let Some(q) = quinn.as_mut() {
            let (v, samples) = sampled(p.pings, || q.round_trip(&data));
            keep(Contender::Quinn, v, samples);
            eprintln!(
                "{} rtt round {round}: quinn p50/p99 µs {:.1}/{:.1}",
                family.name(),
                v.0,
                v.1
            );
        }
        if let Some(n) = nats.as_mut() {
            let (v, samples) = sampled(p.pings, || n.round_trip(&data));
            keep(Contender::Nats, v, samples);
            eprintln!(
                "tcp rtt round {round}: nats p50/p99 µs {:.1}/{:.1}",
                v.0, v.1
            );
        }
        for (setup, pair) in &mut via {
            let (v, samples) = sampled(p.pings, || pair.round_trip(&data));
            keep(Contender::Via(*setup), v, samples);
            eprintln!(
                "tcp rtt round {round}: atbus {} p50/p99 µs {:.1}/{:.1}",
                setup.name(),
                v.0,
                v.1
            );
        }
        eprintln!(
            "{} rtt round {round}: p50/p99 µs raw {:.1}/{:.1} | atbus {:.1}/{:.1} | zmq {:.1}/{:.1}",
            family.name(),
            r.0,
            r.1,
            a.0,
            a.1,
            z.0,
            z.1
        );
    }
}

fn small(p: &Params, family: Family, out: &mut Results) {
    let data = payload(64);
    let n = p.small_count;
    let mut per_write = RawPair::new(family, RawEchoMode::PerMessage);
    let mut batched = RawPair::new(family, RawEchoMode::Batched);
    let mut atbus = AtbusPair::new(family);
    let mut zmq = ZmqStream::new(family);
    let tcp = family == Family::Tcp;
    let mut nats = if tcp { nats_pair(p) } else { None };
    let mut via: Vec<(Setup, NodePair)> = if tcp {
        VIA.iter().map(|&s| (s, NodePair::new(s))).collect()
    } else {
        Vec::new()
    };
    // Warm-up: connections, buffers and sessions settle before the first measured round.
    atbus.stream(&data, n / 10, WINDOW);
    zmq.stream(&data, n / 10, WINDOW);
    if let Some(x) = nats.as_mut() {
        x.stream(&data, n / 10, WINDOW);
    }
    for (_, pair) in &mut via {
        pair.stream(&data, n / 10, WINDOW);
    }
    let rate = |secs: f64| n as f64 / secs;
    for round in 0..p.rounds {
        let pw = rate(timed(|| per_write.stream(&data, n, 1)));
        let bt = rate(timed(|| batched.stream(&data, n, WINDOW)));
        let a = rate(timed(|| atbus.stream(&data, n, WINDOW)));
        let z = rate(timed(|| zmq.stream(&data, n, WINDOW)));
        out.push(family, Workload::Small, Contender::RawPerWrite, pw);
        out.push(family, Workload::Small, Contender::Raw, bt);
        out.push(family, Workload::Small, Contender::Atbus, a);
        out.push(family, Workload::Small, Contender::Zmq, z);
        if let Some(x) = nats.as_mut() {
            let v = rate(timed(|| x.stream(&data, n, WINDOW)));
            out.push(family, Workload::Small, Contender::Nats, v);
            eprintln!("tcp 64B round {round}: nats {v:.0} msg/s");
        }
        for (setup, pair) in &mut via {
            let v = rate(timed(|| pair.stream(&data, n, WINDOW)));
            out.push(family, Workload::Small, Contender::Via(*setup), v);
            eprintln!("tcp 64B round {round}: atbus {} {v:.0} msg/s", setup.name());
        }
        eprintln!(
            "{} 64B round {round}: msg/s raw per write {pw:.0} | raw batched {bt:.0} | atbus {a:.0} | zmq {z:.0}",
            family.name()
        );
    }
}

fn large(p: &Params, family: Family, out: &mut Results) {
    let data = payload(64 * 1024);
    let n = p.large_count;
    let mut raw = RawPair::new(family, RawEchoMode::PerMessage);
    let mut atbus = AtbusPair::new(family);
    let mut zmq = ZmqStream::new(family);
    let tcp = family == Family::Tcp;
    let mut quinn = tcp.then(QuinnPair::new);
    let mut nats = if tcp { nats_pair(p) } else { None };
    let mut via: Vec<(Setup, NodePair)> = if tcp {
        VIA.iter().map(|&s| (s, NodePair::new(s))).collect()
    } else {
        Vec::new()
    };
    atbus.stream(&data, (n / 10).max(1), WINDOW);
    zmq.stream(&data, (n / 10).max(1), WINDOW);
    if let Some(x) = nats.as_mut() {
        x.stream(&data, (n / 10).max(1), WINDOW);
    }
    for (_, pair) in &mut via {
        pair.stream(&data, (n / 10).max(1), WINDOW);
    }
    if let Some(q) = quinn.as_mut() {
        q.stream(&data, (n / 10).max(1));
    }
    let mb_s = |secs: f64| (n * data.len()) as f64 / secs / 1e6;
    for round in 0..p.rounds {
        let r = mb_s(timed(|| raw.stream(&data, n, 1)));
        let a = mb_s(timed(|| atbus.stream(&data, n, WINDOW)));
        let z = mb_s(timed(|| zmq.stream(&data, n, WINDOW)));
        out.push(family, Workload::Large, Contender::Raw, r);
        out.push(family, Workload::Large, Contender::Atbus, a);
        out.push(family, Workload::Large, Contender::Zmq, z);
        if let Some(q) = quinn.as_mut() {
            let v = mb_s(timed(|| q.stream(&data, n)));
            out.push(family, Workload::Large, Contender::Quinn, v);
            eprintln!("{} 64KiB round {round}: quinn {v:.0} MB/s", family.name());
        }
        if let Some(x) = nats.as_mut() {
            let v = mb_s(timed(|| x.stream(&data, n, WINDOW)));
            out.push(family, Workload::Large, Contender::Nats, v);
            eprintln!("tcp 64KiB round {round}: nats {v:.0} MB/s");
        }
        for (setup, pair) in &mut via {
            let v = mb_s(timed(|| pair.stream(&data, n, WINDOW)));
            out.push(family, Workload::Large, Contender::Via(*setup), v);
            eprintln!(
                "tcp 64KiB round {round}: atbus {} {v:.0} MB/s",
                setup.name()
            );
        }
        eprintln!(
            "{} 64KiB round {round}: MB/s raw {r:.0} | atbus {a:.0} | zmq {z:.0}",
            family.name()
        );
    }
}

/// Message sizes of the throughput sweep.
const SWEEP_SIZES: [usize; 6] = [64, 256, 1024, 4096, 16 * 1024, 64 * 1024];

/// Throughput against message size over TCP: raw (one write per message), atbus, ZeroMQ and
/// NATS, alternating per size and round.
fn sweep(p: &Params, out: &mut Results) {
    let family = Family::Tcp;
    let mut raw = RawPair::new(family, RawEchoMode::PerMessage);
    let mut atbus = AtbusPair::new(family);
    let mut zmq = ZmqStream::new(family);
    let mut nats = nats_pair(p);
    let rounds = p.rounds.min(3);
    for size in SWEEP_SIZES {
        let data = payload(size);
        let n = (p.sweep_bytes / size).clamp(200, p.small_count.max(200));
        let mb_s = |secs: f64| (n * size) as f64 / secs / 1e6;
        for round in 0..rounds {
            let mut line = format!("sweep {size} B round {round}: MB/s");
            let mut keep = |c: Contender, v: f64| {
                let label = c.label(Workload::Large).replace("**", "");
                let _ = write!(line, " | {label} {v:.1}");
                out.sweep_push(label, size, v);
            };
            keep(Contender::Raw, mb_s(timed(|| raw.stream(&data, n, 1))));
            keep(
                Contender::Atbus,
                mb_s(timed(|| atbus.stream(&data, n, WINDOW))),
            );
            keep(Contender::Zmq, mb_s(timed(|| zmq.stream(&data, n, WINDOW))));
            if let Some(x) = nats.as_mut() {
                keep(Contender::Nats, mb_s(timed(|| x.stream(&data, n, WINDOW))));
            }
            eprintln!("{line}");
        }
    }
}

/// Runs the comparison and prints the Markdown report on stdout (progress on stderr); writes
/// the plots when asked.
pub fn run(args: &LoopbackArgs) {
    let p = args.params();
    let mut out = Results::default();
    let started = Instant::now();
    for family in args.families() {
        rtt(&p, family, &mut out);
        small(&p, family, &mut out);
        large(&p, family, &mut out);
    }
    if args.families().contains(&Family::Tcp) {
        sweep(&p, &mut out);
    }
    eprintln!("loopback: {:.1} s wall", started.elapsed().as_secs_f64());
    print!("{}", section(&p, &args.families(), &out));
    if let Some(dir) = &args.svg_dir {
        for (name, chart) in charts(&out) {
            let path = dir.join(name);
            svg::write(&path, &chart).expect("write plot");
            eprintln!("wrote {}", path.display());
        }
    }
}

/// Largest number of points a CDF line keeps.
const CDF_POINTS: usize = 400;

/// The latency CDF and the throughput-vs-size plot, with their file names.
fn charts(out: &Results) -> Vec<(&'static str, svg::Chart)> {
    let mut v = Vec::new();
    if !out.cdf.is_empty() {
        let series = out
            .cdf
            .iter()
            .enumerate()
            .map(|(i, (name, samples))| {
                let n = samples.len().max(1);
                let step = n.div_ceil(CDF_POINTS).max(1);
                let mut points: Vec<(f64, f64)> = samples
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % step == 0 || i + 1 == n)
                    .map(|(i, &x)| (x, (i + 1) as f64 / n as f64))
                    .collect();
                points.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
                svg::Series {
                    name: name.clone(),
                    points,
                    // Past the palette, lines repeat its colours dashed.
                    colour: i,
                    dashed: i >= 8,
                }
            })
            .collect();
        v.push((
            "latency-cdf.svg",
            svg::Chart {
                title: "Round trip of one 64 B message over loopback (last round)".into(),
                x_label: "round trip, µs (log scale)".into(),
                y_label: "fraction of round trips".into(),
                log_x: true,
                log_y: false,
                series,
                x_ticks: Vec::new(),
            },
        ));
    }
    if !out.sweep.is_empty() {
        let mut names: Vec<String> = Vec::new();
        for (name, _, _) in &out.sweep {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        let series = names
            .into_iter()
            .enumerate()
            .map(|(i, name)| svg::Series {
                colour: i,
                dashed: false,
                points: out
                    .sweep
                    .iter()
                    .filter(|(n, _, _)| *n == name)
                    .map(|(_, size, vals)| (*size as f64, median(vals.clone())))
                    .collect(),
                name,
            })
            .collect();
        v.push((
            "throughput-vs-size.svg",
            svg::Chart {
                title: "Echoed throughput over loopback TCP by message size (medians)".into(),
                x_label: "message size, bytes (log scale)".into(),
                y_label: "MB/s echoed (log scale)".into(),
                log_x: true,
                log_y: true,
                series,
                x_ticks: SWEEP_SIZES
                    .iter()
                    .map(|&n| (n as f64, size_label(n)))
                    .collect(),
            },
        ));
    }
    v
}

fn fmt_value(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a / b < 0.1 => format!("{:.3}", a / b),
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "–".to_string(),
    }
}

/// Why a goal is not met, from the profiles in `docs/transport.md` ("What the profile shows")
/// and `docs/relay.md` ("Cost per frame").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// 64 B message rate.
    SmallRate,
    /// 64 KiB throughput.
    LargeCopies,
    /// Round-trip latency per hop.
    HopCpu,
    /// The relay hop.
    RelayHop,
}

impl Cause {
    /// The profiled cause, for the goals table.
    pub fn text(self) -> &'static str {
        match self {
            Cause::SmallRate => {
                "per-message CPU in the session's send and receive paths and prost (about 4 700 \
                 instructions per echoed 64 B message for both nodes, callgrind of `loopback_rtt \
                 --atbus-only --only 64B --family tcp --rounds 1 --small-count 20000`; the \
                 transport is a few % of it) — docs/transport.md, What the profile shows"
            }
            Cause::LargeCopies => {
                "one user-space copy of every payload remains (the encoder's; reads land in reused \
                 blocks and are decoded in place, 4 copies at first) and the XXH3 package hash on \
                 both sides (45 % of the instructions), against none in the raw echo: callgrind of \
                 `loopback_rtt --atbus-only --only 64KiB --family tcp --rounds 1 --large-count \
                 256` went from 220.5 M to 145.9 M to 110.3 M instructions over the two changes; \
                 flow control is not the bound (8 MiB windows change nothing) — docs/transport.md"
            }
            Cause::HopCpu => {
                "per round trip one `epoll_wait` per side more than the blocking ping-pong (one \
                 more read before waiting was tried: it never found the reply there), the other \
                 system calls equal; the rest is CPU in atbus-node and atbus-stream, about 38 700 \
                 instructions per round trip: the session's send path (≈ 10 300, of which \
                 encoding ≈ 2 400), `Session::handle_frame` (≈ 6 600), prost decoding of the \
                 bodies (≈ 3 100), the transport's poll and reads (≈ 3 000), the node's timers \
                 (≈ 1 000 once cached), allocation — docs/transport.md, the last before/after \
                 sections"
            }
            Cause::RelayHop => {
                "the relay adds a third process-side hop: its core spends ≈ 3 550 instructions \
                 per forwarded 64 B frame (decode and hash check, head stamp, re-encode with a new \
                 hash, queue) plus one more read, write and wake-up per direction on a 2-core \
                 machine shared by three busy threads — docs/relay.md, Cost per frame"
            }
        }
    }
}

/// One goal of the table.
#[derive(Debug, Clone)]
pub struct Goal {
    /// What the goal says.
    pub text: String,
    /// The measured ratio, when both sides ran.
    pub ratio: Option<f64>,
    /// The target ratio.
    pub target: f64,
    /// Whether it is met.
    pub met: bool,
    /// Why it falls short when it does.
    pub cause: Cause,
}

impl Goal {
    fn at_least(text: String, ratio: Option<f64>, target: f64, cause: Cause) -> Goal {
        Goal {
            text,
            ratio,
            target,
            met: ratio.is_some_and(|r| r >= target),
            cause,
        }
    }

    fn at_most(text: String, ratio: Option<f64>, target: f64, strict: bool, cause: Cause) -> Goal {
        Goal {
            text,
            ratio,
            target,
            met: ratio.is_some_and(|r| if strict { r < target } else { r <= target }),
            cause,
        }
    }

    /// "met", or the gap and its cause.
    fn verdict(&self) -> String {
        match self.ratio {
            None => "not measured in this run".to_string(),
            Some(_) if self.met => "met".to_string(),
            Some(r) => {
                let gap = if r > self.target {
                    r / self.target
                } else {
                    self.target / r
                };
                format!(
                    "not met: {gap:.2} × away from the target; cause: {}",
                    self.cause.text()
                )
            }
        }
    }
}

/// The goals of issue 9 (and issue 8's relay goal) read against `family`'s medians.
fn goals(family: Family, out: &Results) -> Vec<Goal> {
    let m = |w, c| out.median_of(family, w, c);
    let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let atbus = Contender::Atbus;
    let small = |c| div(m(Workload::Small, atbus), m(Workload::Small, c));
    let large = |c| div(m(Workload::Large, atbus), m(Workload::Large, c));
    let rtt = |c| div(m(Workload::RttP50, atbus), m(Workload::RttP50, c));
    let mut g = vec![
        Goal::at_least(
            "64 B msg/s ≥ 1.5 × ZeroMQ".into(),
            small(Contender::Zmq),
            1.5,
            Cause::SmallRate,
        ),
        Goal::at_least(
            format!("64 KiB ≥ 0.85 × raw {}", family.name()),
            large(Contender::Raw),
            0.85,
            Cause::LargeCopies,
        ),
        Goal::at_least(
            "64 KiB ≥ 2.5 × ZeroMQ".into(),
            large(Contender::Zmq),
            2.5,
            Cause::LargeCopies,
        ),
        Goal::at_most(
            "round trip p50 ≤ 1.5 × raw ping-pong".into(),
            rtt(Contender::Raw),
            1.5,
            false,
            Cause::HopCpu,
        ),
        Goal::at_most(
            "round trip p50 < ZeroMQ REQ/REP".into(),
            rtt(Contender::Zmq),
            1.0,
            true,
            Cause::HopCpu,
        ),
    ];
    if m(Workload::RttP50, Contender::Quinn).is_some() {
        g.push(Goal::at_most(
            "round trip p50 < quinn".into(),
            rtt(Contender::Quinn),
            1.0,
            true,
            Cause::HopCpu,
        ));
    }
    let relay = m(Workload::RttP50, Contender::Via(Setup::Relay));
    if relay.is_some() {
        g.push(Goal::at_most(
            "relay hop round trip p50 ≤ 2.2 × direct (issue 8)".into(),
            div(relay, m(Workload::RttP50, atbus)),
            2.2,
            false,
            Cause::RelayHop,
        ));
        if let Some(n) = m(Workload::RttP50, Contender::Nats) {
            g.push(Goal::at_most(
                "relay hop round trip p50 < NATS request-reply (issue 8)".into(),
                div(relay, Some(n)),
                1.0,
                true,
                Cause::RelayHop,
            ));
        }
    }
    g
}

/// The Markdown report: settings, one table per family, the goals.
fn section(p: &Params, families: &[Family], out: &Results) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(
        w,
        "### Loopback: raw sockets, atbus, ZeroMQ, quinn and NATS\n"
    );
    let _ = writeln!(
        w,
        "Command: `cargo run --release --manifest-path benches/compare/Cargo.toml -- loopback{}`. \
         {} rounds; in each round every contender runs once, in the order of the table (A B C A B \
         C …), so all see the same machine noise. Figures are medians of the rounds with their \
         min–max; ratios are of medians (for latencies a ratio below 1 is better). {}",
        if p.quick { " --quick" } else { "" },
        p.rounds,
        if p.quick {
            "This is a `--quick` run (fewer rounds and messages than the full run)."
        } else {
            ""
        }
    );
    let _ = writeln!(
        w,
        "\n- Workloads: {} messages of 64 B and {} of 64 KiB per contender and round, echoed and \
         checked byte for byte, at most {WINDOW} in flight (atbus and ZeroMQ clients keep a \
         window; the raw writer thread is bounded by the kernel buffers); {} strict round trips \
         of 64 B per round (window 1) after a tenth as many (at least 10) unmeasured ones.",
        p.small_count, p.large_count, p.pings
    );
    let _ = writeln!(
        w,
        "- raw: blocking std sockets, TCP_NODELAY, 4-byte length prefix, an echo thread; 64 B \
         both with one `write` per message and with 1000 messages per `write` (the echo writes \
         back all complete messages of one read at once); the batched figure is the \"× raw\" \
         reference of the 64 B row."
    );
    let _ = writeln!(
        w,
        "- atbus: two `NodeDriver`s (client and an echo node on its own thread), default \
         `NodeConfig` and `TransportConfig`, over `tcp://127.0.0.1:0` and `unix://`."
    );
    let _ = writeln!(
        w,
        "- ZeroMQ: libzmq {} through the `zmq` crate, defaults (TCP_NODELAY on, high-water marks \
         1000, its own write batching), `tcp://127.0.0.1` and `ipc://`; client and echo share one \
         context with one I/O thread. Streams: client PUSH → echo PULL, echo PUSH → client PULL; \
         round trip: REQ/REP.",
        zmq_version()
    );
    let _ = writeln!(
        w,
        "- quinn (TCP table only; QUIC runs over loopback UDP): quinn 0.11 with rustls and the \
         ring provider, defaults (congestion control, flow-control windows), a self-signed rcgen \
         certificate, one tokio worker thread per side; the echo returns every byte on the same \
         bidirectional stream. Round trip: 64 B written and read back on one long-lived stream; \
         64 KiB: one new stream per round, written by one task while the client reads the echo."
    );
    let _ = writeln!(
        w,
        "- NATS (TCP table only): {} started by the harness on a free loopback port with a \
         temporary directory and killed after, its defaults; the `async-nats` 0.51 client with its \
         defaults (it batches writes itself), one tokio worker thread per side. Every message \
         crosses the server twice (client → server → echo client → server → client): round \
         trip is `request` answered by the echo client; the streamed rows publish on one subject, \
         the echo client republishes on another that the client reads, with the same window.",
        crate::nats_peer::server_version().unwrap_or_else(|| "nats-server".to_string())
    );
    let _ = writeln!(
        w,
        "- atbus over other links (TCP table only, same client and echo code as the direct \
         rows, default configurations): `udp://127.0.0.1` (the default IPv4 datagram MTU of \
         548 bytes, so a 64 KiB message is about 120 datagrams); `mem://` (both nodes in this \
         process); one session over two paths, `tcp://` and `unix://` to the same echo node; and \
         one relay hop: client and echo each linked over `tcp://` to an `atbus-relay` \
         `RelayDriver` (default `RelayConfig`) on its own thread, the client routing to the echo \
         with `route_via_relay`. Their \"× raw\" and \"× ZeroMQ\" columns are against the raw \
         TCP and ZeroMQ TCP figures of the same run.\n"
    );
    for &family in families {
        let _ = writeln!(w, "#### {}\n", family_title(family));
        let _ = writeln!(
            w,
            "| workload | contender | median | min–max | × raw | × ZeroMQ |"
        );
        let _ = writeln!(w, "| --- | --- | ---: | ---: | ---: | ---: |");
        for workload in [
            Workload::Small,
            Workload::Large,
            Workload::RttP50,
            Workload::RttP99,
        ] {
            let raw = out.median_of(family, workload, Contender::Raw);
            let zmq = out.median_of(family, workload, Contender::Zmq);
            for series in out
                .series
                .iter()
                .filter(|s| s.family == family && s.workload == workload)
            {
                let m = median(series.values.clone());
                let lo = series.values.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = series
                    .values
                    .iter()
                    .copied()
                    .fold(f64::NEG_INFINITY, f64::max);
                let _ = writeln!(
                    w,
                    "| {} | {} | {} | {}–{} | {} | {} |",
                    workload.label(),
                    series.contender.label(workload),
                    fmt_value(m),
                    fmt_value(lo),
                    fmt_value(hi),
                    ratio(Some(m), raw),
                    ratio(Some(m), zmq),
                );
            }
        }
        let unsteady = unsteady(family, out);
        if !unsteady.is_empty() {
            let _ = writeln!(
                w,
                "\nUnsteady across rounds (slowest round more than 2 × the fastest, read with \
                 care; each round's figures are printed on stderr): {}.",
                unsteady.join("; ")
            );
        }
        let _ = writeln!(w, "\nGoals (issue 9), atbus over {}:\n", family.name());
        let _ = writeln!(w, "| goal | measured | result |");
        let _ = writeln!(w, "| --- | ---: | --- |");
        for goal in goals(family, out) {
            let _ = writeln!(
                w,
                "| {} | {} | {} |",
                goal.text,
                goal.ratio.map_or("–".to_string(), |r| format!("{r:.2} ×")),
                goal.verdict()
            );
        }
        let _ = writeln!(w);
    }
    sweep_table(w, p, out);
    s
}

/// "64 B", "4 KiB".
fn size_label(size: usize) -> String {
    if size >= 1024 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

/// The message-size sweep as a table: one row per size, one column per contender.
fn sweep_table(w: &mut String, p: &Params, out: &Results) {
    if out.sweep.is_empty() {
        return;
    }
    let mut names: Vec<&str> = Vec::new();
    for (name, _, _) in &out.sweep {
        if !names.contains(&name.as_str()) {
            names.push(name);
        }
    }
    let _ = writeln!(
        w,
        "#### Throughput by message size (TCP)\n\nEchoed MB/s, median of {} rounds; each \
         contender moves about {} MiB per size and round (at least 200 and at most {} messages), \
         windows as above; raw makes one `write` per message.\n",
        p.rounds.min(3),
        p.sweep_bytes >> 20,
        p.small_count.max(200)
    );
    let _ = writeln!(w, "| size | {} |", names.join(" | "));
    let _ = writeln!(w, "| ---: |{}", " ---: |".repeat(names.len()));
    for size in SWEEP_SIZES {
        let cells: Vec<String> = names
            .iter()
            .map(|n| {
                out.sweep
                    .iter()
                    .find(|(l, s, _)| l == n && *s == size)
                    .map_or("–".to_string(), |(_, _, v)| fmt_value(median(v.clone())))
            })
            .collect();
        if cells.iter().all(|c| c == "–") {
            continue;
        }
        let _ = writeln!(w, "| {} | {} |", size_label(size), cells.join(" | "));
    }
    let _ = writeln!(w);
}

/// "workload, contender" of every series of `family` whose rounds differ by more than 2×.
fn unsteady(family: Family, out: &Results) -> Vec<String> {
    out.series
        .iter()
        .filter(|s| s.family == family)
        .filter(|s| {
            let lo = s.values.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = s.values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            lo > 0.0 && hi / lo > 2.0
        })
        .map(|s| {
            format!(
                "{}, {}",
                s.workload.label(),
                s.contender.label(s.workload).replace("**", "")
            )
        })
        .collect()
}

fn family_title(f: Family) -> &'static str {
    match f {
        Family::Tcp => "TCP (127.0.0.1)",
        Family::Unix => "Unix stream sockets (ZeroMQ: ipc://)",
    }
}

fn zmq_version() -> String {
    let (a, b, c) = zmq::version();
    format!("{a}.{b}.{c}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results() -> Results {
        let mut r = Results::default();
        let f = Family::Tcp;
        for (w, c, v) in [
            (Workload::Small, Contender::Raw, 1000.0),
            (Workload::Small, Contender::Atbus, 900.0),
            (Workload::Small, Contender::Zmq, 500.0),
            (Workload::Large, Contender::Raw, 100.0),
            (Workload::Large, Contender::Atbus, 80.0),
            (Workload::Large, Contender::Zmq, 40.0),
            (Workload::RttP50, Contender::Raw, 10.0),
            (Workload::RttP50, Contender::Atbus, 16.0),
            (Workload::RttP50, Contender::Zmq, 30.0),
        ] {
            r.push(f, w, c, v);
            r.push(f, w, c, v * 2.0);
            r.push(f, w, c, v * 0.5);
        }
        r
    }

    #[test]
    fn goals_read_ratios_of_medians() {
        let g = goals(Family::Tcp, &results());
        let met: Vec<bool> = g.iter().map(|g| g.met).collect();
        // 900/500 = 1.8 ≥ 1.5; 80/100 = 0.8 < 0.85; 80/40 = 2.0 < 2.5; 16/10 = 1.6 > 1.5;
        // 16 < 30.
        assert_eq!(met, vec![true, false, false, false, true]);
        let r = g[1].ratio.expect("ratio");
        assert!(g[1].verdict().contains("copies"), "{}", g[1].verdict());
        assert_eq!(g[0].verdict(), "met");
        assert!((r - 0.8).abs() < 1e-9, "{r}");
    }

    #[test]
    fn unsteady_lists_series_with_a_wide_spread() {
        let mut r = results();
        r.push(Family::Unix, Workload::Large, Contender::Zmq, 10.0);
        r.push(Family::Unix, Workload::Large, Contender::Zmq, 19.0);
        r.push(Family::Unix, Workload::Large, Contender::Atbus, 10.0);
        r.push(Family::Unix, Workload::Large, Contender::Atbus, 21.0);
        // Every TCP series spans 0.5×..2× = 4×.
        assert_eq!(unsteady(Family::Tcp, &r).len(), r.series.len() - 2);
        assert_eq!(
            unsteady(Family::Unix, &r),
            vec!["64 KiB echoed, MB/s, atbus".to_string()]
        );
    }

    /// Every peer over real loopback sockets: the echoes are checked byte for byte inside.
    #[test]
    fn peers_echo_over_real_loopback() {
        let small = payload(64);
        let large = payload(64 * 1024);
        for family in [Family::Tcp, Family::Unix] {
            let mut z = ZmqStream::new(family);
            z.stream(&small, 3000, 100);
            z.stream(&large, 20, WINDOW);
            let mut r = ZmqReqRep::new(family);
            assert!(r.round_trip(&small) > Duration::ZERO);
            let mut a = AtbusPair::new(family);
            assert!(a.round_trip(&small) > Duration::ZERO);
        }
        let mut q = QuinnPair::new();
        assert!(q.round_trip(&small) > Duration::ZERO);
        q.stream(&large, 20);
        q.stream(&small, 1000);
    }

    #[test]
    fn relay_goals_read_against_direct_and_nats() {
        let mut r = results();
        let f = Family::Tcp;
        // Direct p50 medians 16; relay 30 → 1.875 ≤ 2.2; NATS 25 → relay 1.2 × NATS: not met.
        for v in [30.0, 31.0, 29.0] {
            r.push(f, Workload::RttP50, Contender::Via(Setup::Relay), v);
        }
        r.push(f, Workload::RttP50, Contender::Nats, 25.0);
        let g = goals(f, &r);
        assert_eq!(g.len(), 7);
        assert!(g[5].met && (g[5].ratio.expect("ratio") - 30.0 / 16.0).abs() < 1e-9);
        assert!(!g[6].met);
        assert!(g[6].verdict().contains("relay"), "{}", g[6].verdict());
    }

    #[test]
    fn missing_series_is_not_met() {
        let g = goals(Family::Unix, &results());
        assert!(g.iter().all(|g| g.ratio.is_none() && !g.met));
    }

    #[test]
    fn section_has_a_row_per_series_and_goal() {
        let p = Params {
            rounds: 3,
            small_count: 1,
            large_count: 1,
            pings: 1,
            quick: true,
            sweep_bytes: 1,
            nats: false,
        };
        let r = results();
        let s = section(&p, &[Family::Tcp], &r);
        let rows = s.lines().filter(|l| l.starts_with("| ")).count();
        // Header and separator rows of 2 tables + 9 series + 5 goals.
        assert_eq!(rows, 4 + r.series.len() + 5, "{s}");
        assert!(
            s.contains("| 64 KiB ≥ 0.85 × raw tcp | 0.80 × | not met: 1.06 × away"),
            "{s}"
        );
        assert!(s.contains("--quick"));
    }
}
