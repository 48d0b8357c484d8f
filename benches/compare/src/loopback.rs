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
mod common;

pub use common::Family;
use common::{AtbusPair, RawEchoMode, RawPair, payload, quantile};

use crate::quinn_peer::QuinnPair;
use crate::report::median;
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

struct Results(Vec<Series>);

impl Results {
    fn push(&mut self, family: Family, workload: Workload, contender: Contender, value: f64) {
        if let Some(s) = self
            .0
            .iter_mut()
            .find(|s| s.family == family && s.workload == workload && s.contender == contender)
        {
            s.values.push(value);
        } else {
            self.0.push(Series {
                family,
                workload,
                contender,
                values: vec![value],
            });
        }
    }

    fn median_of(&self, family: Family, workload: Workload, contender: Contender) -> Option<f64> {
        self.0
            .iter()
            .find(|s| s.family == family && s.workload == workload && s.contender == contender)
            .map(|s| median(s.values.clone()))
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// p50 and p99 in µs of `pings` round trips after a tenth as many unmeasured ones.
fn percentiles(pings: usize, mut one: impl FnMut() -> Duration) -> (f64, f64) {
    let warm = (pings / 10).max(10);
    for _ in 0..warm {
        one();
    }
    let mut t: Vec<Duration> = (0..pings).map(|_| one()).collect();
    t.sort_unstable();
    (us(quantile(&t, 0.5)), us(quantile(&t, 0.99)))
}

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
    let mut quinn = (family == Family::Tcp).then(QuinnPair::new);
    for round in 0..p.rounds {
        let r = percentiles(p.pings, || raw.round_trip(&data));
        let a = percentiles(p.pings, || atbus.round_trip(&data));
        let z = percentiles(p.pings, || zmq.round_trip(&data));
        for (c, (p50, p99)) in [
            (Contender::Raw, r),
            (Contender::Atbus, a),
            (Contender::Zmq, z),
        ] {
            out.push(family, Workload::RttP50, c, p50);
            out.push(family, Workload::RttP99, c, p99);
        }
        if let Some(q) = quinn.as_mut() {
            let (p50, p99) = percentiles(p.pings, || q.round_trip(&data));
            out.push(family, Workload::RttP50, Contender::Quinn, p50);
            out.push(family, Workload::RttP99, Contender::Quinn, p99);
            eprintln!(
                "{} rtt round {round}: quinn p50/p99 µs {p50:.1}/{p99:.1}",
                family.name()
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
    // Warm-up: connections, buffers and sessions settle before the first measured round.
    atbus.stream(&data, n / 10, WINDOW);
    zmq.stream(&data, n / 10, WINDOW);
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
    let mut quinn = (family == Family::Tcp).then(QuinnPair::new);
    atbus.stream(&data, (n / 10).max(1), WINDOW);
    zmq.stream(&data, (n / 10).max(1), WINDOW);
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
        eprintln!(
            "{} 64KiB round {round}: MB/s raw {r:.0} | atbus {a:.0} | zmq {z:.0}",
            family.name()
        );
    }
}

/// Runs the comparison and prints the Markdown report on stdout (progress on stderr).
pub fn run(args: &LoopbackArgs) {
    let p = args.params();
    let mut out = Results(Vec::new());
    let started = Instant::now();
    for family in args.families() {
        rtt(&p, family, &mut out);
        small(&p, family, &mut out);
        large(&p, family, &mut out);
    }
    eprintln!("loopback: {:.1} s wall", started.elapsed().as_secs_f64());
    print!("{}", section(&p, &args.families(), &out));
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

/// One goal row: (text, measured ratio, met).
fn goals(family: Family, out: &Results) -> Vec<(String, Option<f64>, bool)> {
    let m = |w, c| out.median_of(family, w, c);
    let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let atbus = Contender::Atbus;
    let mut g = Vec::new();
    let r = div(
        m(Workload::Small, atbus),
        m(Workload::Small, Contender::Zmq),
    );
    g.push((
        "64 B msg/s ≥ 1.5 × ZeroMQ".to_string(),
        r,
        r.is_some_and(|r| r >= 1.5),
    ));
    let r = div(
        m(Workload::Large, atbus),
        m(Workload::Large, Contender::Raw),
    );
    g.push((
        format!("64 KiB ≥ 0.85 × raw {}", family.name()),
        r,
        r.is_some_and(|r| r >= 0.85),
    ));
    let r = div(
        m(Workload::Large, atbus),
        m(Workload::Large, Contender::Zmq),
    );
    g.push((
        "64 KiB ≥ 2.5 × ZeroMQ".to_string(),
        r,
        r.is_some_and(|r| r >= 2.5),
    ));
    let r = div(
        m(Workload::RttP50, atbus),
        m(Workload::RttP50, Contender::Raw),
    );
    g.push((
        "round trip p50 ≤ 1.5 × raw ping-pong".to_string(),
        r,
        r.is_some_and(|r| r <= 1.5),
    ));
    let r = div(
        m(Workload::RttP50, atbus),
        m(Workload::RttP50, Contender::Zmq),
    );
    g.push((
        "round trip p50 < ZeroMQ REQ/REP".to_string(),
        r,
        r.is_some_and(|r| r < 1.0),
    ));
    if let Some(q) = m(Workload::RttP50, Contender::Quinn) {
        let r = div(m(Workload::RttP50, atbus), Some(q));
        g.push((
            "round trip p50 < quinn".to_string(),
            r,
            r.is_some_and(|r| r < 1.0),
        ));
    }
    g
}

/// The Markdown report: settings, one table per family, the goals.
fn section(p: &Params, families: &[Family], out: &Results) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "### Loopback: raw sockets, atbus and ZeroMQ\n");
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
         64 KiB: one new stream per round, written by one task while the client reads the echo.\n"
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
                .0
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
        let _ = writeln!(w, "| goal | measured | met |");
        let _ = writeln!(w, "| --- | ---: | --- |");
        for (text, r, met) in goals(family, out) {
            let _ = writeln!(
                w,
                "| {text} | {} | {} |",
                r.map_or("–".to_string(), |r| format!("{r:.2} ×")),
                if met { "met" } else { "not met" }
            );
        }
        let _ = writeln!(w);
    }
    s
}

/// "workload, contender" of every series of `family` whose rounds differ by more than 2×.
fn unsteady(family: Family, out: &Results) -> Vec<String> {
    out.0
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
        let mut r = Results(Vec::new());
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
        let met: Vec<bool> = g.iter().map(|(_, _, m)| *m).collect();
        // 900/500 = 1.8 ≥ 1.5; 80/100 = 0.8 < 0.85; 80/40 = 2.0 < 2.5; 16/10 = 1.6 > 1.5;
        // 16 < 30.
        assert_eq!(met, vec![true, false, false, false, true]);
        let r = g[1].1.expect("ratio");
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
        assert_eq!(unsteady(Family::Tcp, &r).len(), r.0.len() - 2);
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
    fn missing_series_is_not_met() {
        let g = goals(Family::Unix, &results());
        assert!(g.iter().all(|(_, r, met)| r.is_none() && !met));
    }

    #[test]
    fn section_has_a_row_per_series_and_goal() {
        let p = Params {
            rounds: 3,
            small_count: 1,
            large_count: 1,
            pings: 1,
            quick: true,
        };
        let r = results();
        let s = section(&p, &[Family::Tcp], &r);
        let rows = s.lines().filter(|l| l.starts_with("| ")).count();
        // Header and separator rows of 2 tables + 9 series + 5 goals.
        assert_eq!(rows, 4 + r.0.len() + 5, "{s}");
        assert!(
            s.contains("| 64 KiB ≥ 0.85 × raw tcp | 0.80 × | not met |"),
            "{s}"
        );
        assert!(s.contains("--quick"));
    }
}
