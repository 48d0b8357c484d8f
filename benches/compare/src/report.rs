//! Medians over seeds, the Markdown report, and writing it into `docs/stream.md`.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use atbus_netsim::LinkStats;

use crate::Pairing;
use crate::net::{MTU, ONE_WAY, QUEUE_LIMIT, RATE_5_MBIT, RATE_10_MBIT};
use crate::workload::{BulkResult, LatencyResult};

/// Heading of the section this tool owns in `docs/stream.md`.
pub const HEADING: &str = "## Benchmarks against KCP";

/// The exact command that regenerates the section.
pub const COMMAND: &str =
    "cargo run --release --manifest-path benches/compare/Cargo.toml -- lossy --write-docs";

/// Median of `v` (the upper middle for an even count); infinities sort last.
pub fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty());
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The four runs of one seed in one row.
pub struct SeedRun {
    /// KCP bulk.
    pub kb: BulkResult,
    /// atbus bulk.
    pub ab: BulkResult,
    /// KCP latency.
    pub kl: LatencyResult,
    /// atbus latency.
    pub al: LatencyResult,
}

/// Medians of one bulk side.
#[derive(Debug, Clone, Copy)]
pub struct BulkSummary {
    /// Goodput, KiB/s.
    pub goodput: f64,
    /// Datagrams sent A→B per MiB delivered.
    pub datagrams_per_mib: f64,
    /// Share of A→B datagrams tail-dropped by the bottleneck queue, percent.
    pub queue_drop_pct: f64,
}

impl BulkSummary {
    fn of<'a>(runs: impl Iterator<Item = &'a BulkResult> + Clone) -> Self {
        let per_mib = |b: &BulkResult| {
            if b.delivered == 0 {
                f64::INFINITY
            } else {
                b.link.sent as f64 / (b.delivered as f64 / (1024.0 * 1024.0))
            }
        };
        let drop_pct = |s: &LinkStats| 100.0 * s.dropped_queue as f64 / (s.sent.max(1) as f64);
        Self {
            goodput: median(runs.clone().map(BulkResult::goodput_kib_s).collect()),
            datagrams_per_mib: median(runs.clone().map(per_mib).collect()),
            queue_drop_pct: median(runs.map(|b| drop_pct(&b.link)).collect()),
        }
    }
}

/// Medians of one latency side.
#[derive(Debug, Clone, Copy)]
pub struct LatencySummary {
    /// Median over seeds of each seed's p50, ms.
    pub p50: f64,
    /// Median over seeds of each seed's p99, ms.
    pub p99: f64,
    /// Messages never delivered, summed over seeds.
    pub undelivered: usize,
}

impl LatencySummary {
    fn of<'a>(runs: impl Iterator<Item = &'a LatencyResult> + Clone) -> Self {
        Self {
            p50: median(runs.clone().map(|r| r.quantile_ms(0.50)).collect()),
            p99: median(runs.clone().map(|r| r.quantile_ms(0.99)).collect()),
            undelivered: runs.map(LatencyResult::undelivered).sum(),
        }
    }
}

/// One line of the KCP table.
pub struct Row {
    pairing: &'static str,
    loss: f64,
    kcp_bulk: BulkSummary,
    atbus_bulk: BulkSummary,
    kcp_lat: LatencySummary,
    atbus_lat: LatencySummary,
}

/// The figures of one row the goals and plots read.
#[derive(Debug, Clone, Copy)]
pub struct RowFigures {
    /// Pairing name.
    pub pairing: &'static str,
    /// Loss rate.
    pub loss: f64,
    /// KCP goodput, KiB/s.
    pub kcp_goodput: f64,
    /// atbus goodput, KiB/s.
    pub atbus_goodput: f64,
    /// KCP p99, ms.
    pub kcp_p99: f64,
    /// atbus p99, ms.
    pub atbus_p99: f64,
}

impl Row {
    /// The row's medians.
    pub fn figures(&self) -> RowFigures {
        RowFigures {
            pairing: self.pairing,
            loss: self.loss,
            kcp_goodput: self.kcp_bulk.goodput,
            atbus_goodput: self.atbus_bulk.goodput,
            kcp_p99: self.kcp_lat.p99,
            atbus_p99: self.atbus_lat.p99,
        }
    }

    /// Medians over `runs` (one per seed).
    pub fn new(pairing: &'static str, loss: f64, runs: &[SeedRun]) -> Self {
        Self {
            pairing,
            loss,
            kcp_bulk: BulkSummary::of(runs.iter().map(|r| &r.kb)),
            atbus_bulk: BulkSummary::of(runs.iter().map(|r| &r.ab)),
            kcp_lat: LatencySummary::of(runs.iter().map(|r| &r.kl)),
            atbus_lat: LatencySummary::of(runs.iter().map(|r| &r.al)),
        }
    }
}

/// One line of the two-path table.
pub struct TwoPathRow {
    loss: f64,
    one: BulkSummary,
    two: BulkSummary,
}

impl TwoPathRow {
    /// Medians over `(one path, two paths)` runs, one pair per seed.
    pub fn new(loss: f64, runs: &[(BulkResult, BulkResult)]) -> Self {
        Self {
            loss,
            one: BulkSummary::of(runs.iter().map(|r| &r.0)),
            two: BulkSummary::of(runs.iter().map(|r| &r.1)),
        }
    }
}

/// What the runs were, for the text around the tables.
pub struct Params<'a> {
    /// Seeds per configuration.
    pub seeds: usize,
    /// Virtual seconds per bulk run.
    pub bulk_secs: u64,
    /// Messages per latency run.
    pub latency_messages: usize,
    /// The pairings compared.
    pub pairings: &'a [Pairing],
}

fn ms(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "lost".to_string()
    }
}

fn ratio(num: f64, den: f64) -> String {
    if num.is_finite() && den.is_finite() && den > 0.0 {
        format!("{:.2}×", num / den)
    } else {
        "—".to_string()
    }
}

fn pct(loss: f64) -> String {
    format!("{:.0} %", loss * 100.0)
}

/// The whole section, heading included, ending with a newline.
pub fn section(p: &Params<'_>, rows: &[Row], two_path: &[TwoPathRow]) -> String {
    let mut s = String::new();
    let w = &mut s;
    let rtt = ONE_WAY.as_millis() * 2;
    let _ = writeln!(w, "{HEADING}\n");
    let _ = writeln!(
        w,
        "Generated by the `lossy` subcommand of `benches/compare` (a crate outside the workspace, \
         so the `kcp` comparison peer never enters the main build):\n"
    );
    let _ = writeln!(w, "```sh\n{COMMAND}\n```\n");
    let _ = writeln!(
        w,
        "Without `--write-docs` it only prints this section. Everything runs in the virtual time \
         of `atbus-netsim`, so the figures are exact for a given seed and do not depend on the \
         machine; each configuration runs {} seeds (`atbus_netsim::seeds({}, None)`) and the \
         tables show medians over them.\n",
        p.seeds, p.seeds
    );
    let _ = writeln!(w, "Setup, identical for both protocols:\n");
    let _ = writeln!(
        w,
        "- link: `atbus-netsim` `DuplexLink`, both directions alike: {} ms one way ({rtt} ms RTT), \
         random loss in both directions, rate limit {} bytes/s (10 Mbit/s) with a {} KiB \
         tail-drop queue (≈ 1.3 × the 50 kB bandwidth-delay product), MTU {MTU}; for a given seed \
         the link draws the same random stream for every peer (`derive_seed(seed, 100 + path)`);",
        ONE_WAY.as_millis(),
        RATE_10_MBIT,
        QUEUE_LIMIT / 1024
    );
    let _ = writeln!(
        w,
        "- KCP: the `kcp` crate 0.6, message mode, `set_mtu({MTU})`, driven as its documentation \
         prescribes: `update(now_ms)` whenever `check(now_ms)` says so, `input()` for each \
         arriving datagram, `recv()` until empty; each write to its output is one datagram; \
         no extra `flush()` after `send()`;"
    );
    let _ = writeln!(
        w,
        "- atbus: two `Session`s with one `Datagram` path of MTU {MTU}, each datagram decoded with \
         `DatagramDecoder` and handed to `handle_frame`, `poll_transmit` drained after every \
         input, `handle_timeout` at `poll_timeout`;"
    );
    for pairing in p.pairings {
        let _ = writeln!(
            w,
            "- pairing **{}**: KCP {} vs atbus {};",
            pairing.name,
            pairing.kcp.describe(),
            pairing.atbus.describe()
        );
    }
    let _ = writeln!(
        w,
        "- fast-mode KCP has no congestion window (`nc = true`): a window of 128 segments \
         (≈ 134 kB) exceeds this path's bandwidth-delay product plus queue (≈ 115 kB), so it \
         overruns the queue (see its queue drops below); `--kcp-fast-wnd N` runs another window;"
    );
    let _ = writeln!(
        w,
        "- goodput: A keeps its send buffer full of 1 KiB messages (KCP: while fewer than \
         2 × `snd_wnd` segments wait; atbus: until `send` says `WouldBlock`) for {} virtual \
         seconds; goodput = message bytes B's application read in that time / {} s;",
        p.bulk_secs, p.bulk_secs
    );
    let _ = writeln!(
        w,
        "- latency: {} messages of 200 B, one in each 10 ms slot at a seeded random point of the slot (so sends keep no fixed phase against KCP's update tick); one-way latency from the `send` call \
         to B's read, p50 and p99 per seed (nearest rank), a message not delivered within 30 s \
         after the last send counts as lost.\n",
        p.latency_messages
    );
    let _ = writeln!(
        w,
        "| pairing | loss | KCP goodput KiB/s | atbus goodput KiB/s | goodput atbus/KCP | \
         KCP p50 ms | KCP p99 ms | atbus p50 ms | atbus p99 ms | p99 atbus/KCP |"
    );
    let _ = writeln!(
        w,
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for r in rows {
        let _ = writeln!(
            w,
            "| {} | {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} |",
            r.pairing,
            pct(r.loss),
            r.kcp_bulk.goodput,
            r.atbus_bulk.goodput,
            ratio(r.atbus_bulk.goodput, r.kcp_bulk.goodput),
            ms(r.kcp_lat.p50),
            ms(r.kcp_lat.p99),
            ms(r.atbus_lat.p50),
            ms(r.atbus_lat.p99),
            ratio(r.atbus_lat.p99, r.kcp_lat.p99),
        );
    }
    let _ = writeln!(
        w,
        "\nGoodput ratio above 1 and p99 ratio below 1 favour atbus (the goal of issue 4: both, in \
         both pairings). The link's own view of the bulk runs (medians; data direction A→B):\n"
    );
    let _ = writeln!(
        w,
        "| pairing | loss | KCP datagrams per MiB delivered | atbus datagrams per MiB delivered | \
         KCP queue drops | atbus queue drops | undelivered latency msgs KCP / atbus |"
    );
    let _ = writeln!(w, "| --- | --- | ---: | ---: | ---: | ---: | ---: |");
    for r in rows {
        let _ = writeln!(
            w,
            "| {} | {} | {:.0} | {:.0} | {:.1} % | {:.1} % | {} / {} |",
            r.pairing,
            pct(r.loss),
            r.kcp_bulk.datagrams_per_mib,
            r.atbus_bulk.datagrams_per_mib,
            r.kcp_bulk.queue_drop_pct,
            r.atbus_bulk.queue_drop_pct,
            r.kcp_lat.undelivered,
            r.atbus_lat.undelivered,
        );
    }
    let _ = writeln!(
        w,
        "\n### Two paths\n\natbus default configuration, bulk workload as above, over one \
         `Datagram` path vs two, each path its own link of {} bytes/s (5 Mbit/s), {} ms one way, \
         {} KiB queue, MTU {MTU} (issue 4 target: two paths ≥ 1.8 × one):\n",
        RATE_5_MBIT,
        ONE_WAY.as_millis(),
        QUEUE_LIMIT / 1024
    );
    let _ = writeln!(
        w,
        "| loss | 1 path KiB/s | 2 paths KiB/s | 2 paths / 1 path | queue drops 1 path | \
         queue drops 2 paths |"
    );
    let _ = writeln!(w, "| --- | ---: | ---: | ---: | ---: | ---: |");
    for r in two_path {
        let _ = writeln!(
            w,
            "| {} | {:.0} | {:.0} | {} | {:.1} % | {:.1} % |",
            pct(r.loss),
            r.one.goodput,
            r.two.goodput,
            ratio(r.two.goodput, r.one.goodput),
            r.one.queue_drop_pct,
            r.two.queue_drop_pct,
        );
    }
    s
}

/// Replaces the section under [`HEADING`] in the Markdown file at `path` (up to the next `## `
/// heading or the end), or appends it at the end if there is none.
pub fn write_section(path: &Path, section: &str) -> io::Result<()> {
    let text = std::fs::read_to_string(path)?;
    std::fs::write(
        path,
        crate::markdown::splice_section(&text, HEADING, section),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_takes_the_middle() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![f64::INFINITY, 1.0, 2.0]), 2.0);
    }
}
