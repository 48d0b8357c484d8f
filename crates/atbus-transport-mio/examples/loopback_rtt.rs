//! Loopback round trips and echo throughput, atbus beside the raw-socket baseline, alternating
//! (A B A B ...) so both see the same machine noise; prints per-round figures, then the median
//! of the rounds and the ratio atbus / raw.
//!
//! ```text
//! cargo run --release -p atbus-transport-mio --example loopback_rtt -- [--rounds 5]
//!     [--pings 2000] [--family tcp|unix|both] [--only rtt|64B|64KiB] [--atbus-only]
//!     [--small-count 100000] [--large-count 1024] [--session-window BYTES]
//! ```
//!
//! - `rtt`: `--window 1` ping-pong of 64 B messages; p50 and p99 per round. The raw baseline is
//!   a blocking write then a blocking read of the echo.
//! - `64B`: messages per second with 1000 in flight (atbus) against the raw stream with one
//!   `write` per message and with 1000 messages per `write`.
//! - `64KiB`: bytes per second of 64 KiB messages.
//!
//! `--atbus-only` runs only the atbus side (for profiling under callgrind).
//! `--session-window BYTES` sets both nodes' per-stream receive window and per-path in-flight
//! window (1 MiB by default) to see how far flow control bounds the 64 KiB throughput.

#[path = "../benches/common/loopback.rs"]
mod loopback;

use std::time::{Duration, Instant};

use loopback::{AtbusPair, Family, RawEchoMode, RawPair, payload, quantile};

struct Options {
    rounds: usize,
    pings: usize,
    families: Vec<Family>,
    only: Option<String>,
    atbus_only: bool,
    small_count: usize,
    large_count: usize,
    session_window: Option<u64>,
}

fn parse() -> Result<Options, String> {
    let mut o = Options {
        rounds: 5,
        pings: 2000,
        families: vec![Family::Tcp, Family::Unix],
        only: None,
        atbus_only: false,
        small_count: 100_000,
        large_count: 1024,
        session_window: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--rounds" => o.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--pings" => o.pings = value()?.parse().map_err(|e| format!("--pings: {e}"))?,
            "--small-count" => {
                o.small_count = value()?
                    .parse()
                    .map_err(|e| format!("--small-count: {e}"))?
            }
            "--large-count" => {
                o.large_count = value()?
                    .parse()
                    .map_err(|e| format!("--large-count: {e}"))?
            }
            "--family" => {
                o.families = match value()?.as_str() {
                    "tcp" => vec![Family::Tcp],
                    "unix" => vec![Family::Unix],
                    "both" => vec![Family::Tcp, Family::Unix],
                    other => return Err(format!("unknown family {other}")),
                }
            }
            "--only" => o.only = Some(value()?),
            "--session-window" => {
                let w = value()?
                    .parse()
                    .map_err(|e| format!("--session-window: {e}"))?;
                o.session_window = Some(w);
            }
            "--atbus-only" => o.atbus_only = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn min_max(v: &[f64]) -> (f64, f64) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

/// Rows of the final table: (label, unit, per-round values).
type Row = (String, &'static str, Vec<f64>);

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn rtt(o: &Options, family: Family, rows: &mut Vec<Row>) {
    let data = payload(64);
    let warm = (o.pings / 10).max(10);
    let mut atbus = AtbusPair::with_window(family, o.session_window);
    let mut raw = (!o.atbus_only).then(|| RawPair::new(family, RawEchoMode::PerMessage));
    let (mut a50, mut a99, mut r50, mut r99) = (vec![], vec![], vec![], vec![]);
    for round in 0..o.rounds {
        let mut t: Vec<Duration> = (0..warm + o.pings)
            .map(|_| atbus.round_trip(&data))
            .skip(warm)
            .collect();
        t.sort_unstable();
        a50.push(us(quantile(&t, 0.5)));
        a99.push(us(quantile(&t, 0.99)));
        if let Some(raw) = raw.as_mut() {
            let mut t: Vec<Duration> = (0..warm + o.pings)
                .map(|_| raw.round_trip(&data))
                .skip(warm)
                .collect();
            t.sort_unstable();
            r50.push(us(quantile(&t, 0.5)));
            r99.push(us(quantile(&t, 0.99)));
        }
        println!(
            "{} rtt round {round}: atbus p50 {:.1} µs p99 {:.1} µs | raw p50 {:.1} µs p99 {:.1} µs",
            family.name(),
            a50[round],
            a99[round],
            r50.get(round).copied().unwrap_or(0.0),
            r99.get(round).copied().unwrap_or(0.0),
        );
    }
    let f = family.name();
    rows.push((format!("{f} rtt p50 atbus"), "µs", a50));
    rows.push((format!("{f} rtt p50 raw ping-pong"), "µs", r50));
    rows.push((format!("{f} rtt p99 atbus"), "µs", a99));
    rows.push((format!("{f} rtt p99 raw ping-pong"), "µs", r99));
}

fn rate(count: usize, took: Duration) -> f64 {
    count as f64 / took.as_secs_f64()
}

fn small(o: &Options, family: Family, rows: &mut Vec<Row>) {
    let data = payload(64);
    let n = o.small_count;
    let mut atbus = AtbusPair::with_window(family, o.session_window);
    let mut per_write = (!o.atbus_only).then(|| RawPair::new(family, RawEchoMode::PerMessage));
    let mut batched = (!o.atbus_only).then(|| RawPair::new(family, RawEchoMode::Batched));
    atbus.stream(&data, n / 10, 1000);
    let (mut a, mut p, mut b) = (vec![], vec![], vec![]);
    for round in 0..o.rounds {
        let start = Instant::now();
        atbus.stream(&data, n, 1000);
        a.push(rate(n, start.elapsed()));
        if let (Some(pw), Some(bt)) = (per_write.as_mut(), batched.as_mut()) {
            let start = Instant::now();
            pw.stream(&data, n, 1);
            p.push(rate(n, start.elapsed()));
            let start = Instant::now();
            bt.stream(&data, n, 1000);
            b.push(rate(n, start.elapsed()));
        }
        println!(
            "{} 64B round {round}: atbus {:.0} msg/s | raw one write per message {:.0} msg/s | raw batched {:.0} msg/s",
            family.name(),
            a[round],
            p.get(round).copied().unwrap_or(0.0),
            b.get(round).copied().unwrap_or(0.0),
        );
    }
    let f = family.name();
    rows.push((format!("{f} 64B atbus (window 1000)"), "msg/s", a));
    rows.push((format!("{f} 64B raw one write per message"), "msg/s", p));
    rows.push((format!("{f} 64B raw batched (1000 per write)"), "msg/s", b));
}

fn large(o: &Options, family: Family, rows: &mut Vec<Row>) {
    let data = payload(64 * 1024);
    let n = o.large_count;
    let mut atbus = AtbusPair::with_window(family, o.session_window);
    let mut raw = (!o.atbus_only).then(|| RawPair::new(family, RawEchoMode::PerMessage));
    atbus.stream(&data, n / 10, 1000);
    let (mut a, mut r) = (vec![], vec![]);
    let bytes = (n * data.len()) as f64;
    for round in 0..o.rounds {
        let start = Instant::now();
        atbus.stream(&data, n, 1000);
        a.push(bytes / start.elapsed().as_secs_f64() / 1e6);
        if let Some(raw) = raw.as_mut() {
            let start = Instant::now();
            raw.stream(&data, n, 1);
            r.push(bytes / start.elapsed().as_secs_f64() / 1e6);
        }
        println!(
            "{} 64KiB round {round}: atbus {:.0} MB/s | raw {:.0} MB/s",
            family.name(),
            a[round],
            r.get(round).copied().unwrap_or(0.0),
        );
    }
    let f = family.name();
    rows.push((format!("{f} 64KiB atbus (window 1000)"), "MB/s", a));
    rows.push((format!("{f} 64KiB raw"), "MB/s", r));
}

fn main() {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let wants = |w: &str| o.only.as_deref().is_none_or(|only| only == w);
    let mut rows: Vec<Row> = Vec::new();
    for &family in &o.families {
        if wants("rtt") {
            rtt(&o, family, &mut rows);
        }
        if wants("64B") {
            small(&o, family, &mut rows);
        }
        if wants("64KiB") {
            large(&o, family, &mut rows);
        }
    }
    println!();
    println!("| workload | unit | median | min–max | atbus / raw |");
    println!("| --- | --- | ---: | ---: | ---: |");
    // Each atbus row is followed by its baselines; the ratio is against each baseline's median.
    let mut atbus_median = None;
    for (label, unit, values) in &rows {
        if values.is_empty() {
            continue;
        }
        let m = median(values.clone());
        let (lo, hi) = min_max(values);
        let ratio = if label.contains("atbus") {
            atbus_median = Some(m);
            String::new()
        } else {
            atbus_median.map_or(String::new(), |a| format!("{:.2}", a / m))
        };
        println!("| {label} | {unit} | {m:.1} | {lo:.1}–{hi:.1} | {ratio} |");
    }
}
