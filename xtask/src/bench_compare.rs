//! `cargo xtask bench-compare [--quick] [--no-write]`: libatbus-rs beside its peers in one run.
//!
//! Installs what the comparison crate needs when it is missing (libzmq's development files,
//! pkg-config and `nats-server`, through apt-get), builds `benches/compare` (its own workspace,
//! outside the main build) in release mode, runs its `loopback` comparison (raw sockets, atbus
//! over every transport and through a relay, ZeroMQ, quinn, NATS) and its `lossy` comparison
//! (KCP and atbus over simulated lossy links and over real UDP through a lossy proxy), and writes
//! both reports with the machine's description into `docs/benchmarks.md` under [`HEADING`],
//! replacing only that section, and the plots into `docs/img/`. `--no-write` prints the section
//! instead (and writes no plots).

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

#[path = "../../benches/compare/src/markdown.rs"]
mod markdown;

use markdown::{demote_headings, splice_section};

/// The plots the comparison writes into `docs/img/`, with their captions.
const PLOTS: [(&str, &str); 3] = [
    (
        "latency-cdf.svg",
        "Round-trip latency CDF, 64 B over loopback (atbus direct and over every link, raw, ZeroMQ, quinn, NATS)",
    ),
    (
        "throughput-vs-size.svg",
        "Echoed throughput over loopback TCP by message size, 64 B … 64 KiB",
    ),
    (
        "goodput-vs-loss.svg",
        "Goodput vs loss, atbus vs KCP, simulated and real UDP",
    ),
];

/// Heading of the section of `docs/benchmarks.md` this command owns.
pub(crate) const HEADING: &str = "## Against peers";

/// Options of the command.
#[derive(Debug, Default, Clone, Copy)]
struct Options {
    quick: bool,
    no_write: bool,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options::default();
    for a in args {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--no-write" => o.no_write = true,
            other => {
                bail!("bench-compare: unknown argument {other} (expected --quick, --no-write)")
            }
        }
    }
    Ok(o)
}

/// Runs the comparison and writes (or prints) the section.
pub(crate) fn bench_compare(root: &Path, args: &[String]) -> Result<()> {
    let o = parse(args)?;
    install_missing()?;
    let manifest = root.join("benches/compare/Cargo.toml");
    let img = root.join("docs/img");
    let load_before = load_average();
    let mut build = cargo(root);
    build.args(["build", "--release", "--manifest-path"]);
    build.arg(&manifest);
    run(build)?;
    let started = std::time::Instant::now();

    let mut loopback = compare(root, &manifest, "loopback");
    if o.quick {
        loopback.arg("--quick");
    }
    if !o.no_write {
        loopback.arg("--svg-dir").arg(&img);
    }
    let loopback = output(loopback)?;

    let jobs = nproc().to_string();
    let mut lossy = compare(root, &manifest, "lossy");
    lossy.args(["--jobs", &jobs]);
    if o.quick {
        lossy.args([
            "--seeds",
            "1",
            "--bulk-secs",
            "10",
            "--latency-messages",
            "500",
            "--udp-bulk-secs",
            "3",
            "--udp-latency-messages",
            "200",
        ]);
    }
    if !o.no_write {
        lossy.arg("--svg-dir").arg(&img);
    }
    let lossy = output(lossy)?;
    let load_after = load_average();
    let wall_secs = started.elapsed().as_secs_f64();

    let machine = Machine {
        nproc: nproc(),
        cpu: cpu_model(),
        load: format!("{load_before} before, {load_after} after"),
        rustc: command_line("rustc", &["--version"]),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".to_string()),
        date: command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        wall_secs,
    };
    let section = section(o.quick, &machine, &loopback, &lossy);
    if o.no_write {
        print!("{section}");
        return Ok(());
    }
    let doc = root.join("docs/benchmarks.md");
    let text =
        std::fs::read_to_string(&doc).with_context(|| format!("reading {}", doc.display()))?;
    std::fs::write(&doc, splice_section(&text, HEADING, &section))
        .with_context(|| format!("writing {}", doc.display()))?;
    eprintln!("xtask: wrote {} ({HEADING})", doc.display());
    Ok(())
}

fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root);
    cmd
}

/// `cargo run --release --quiet --manifest-path benches/compare/Cargo.toml -- SUBCOMMAND`.
fn compare(root: &Path, manifest: &Path, subcommand: &str) -> Command {
    let mut cmd = cargo(root);
    cmd.args(["run", "--release", "--quiet", "--manifest-path"]);
    cmd.arg(manifest);
    cmd.args(["--", subcommand]);
    cmd
}

fn run(mut cmd: Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Runs `cmd` with its progress (stderr) shown and returns its standard output.
fn output(mut cmd: Command) -> Result<String> {
    eprintln!("xtask: running {cmd:?}");
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed with {}", out.status);
    }
    String::from_utf8(out.stdout).with_context(|| format!("{cmd:?} printed non-UTF-8"))
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs libzmq's development files, pkg-config and `nats-server` with apt-get when missing.
fn install_missing() -> Result<()> {
    let mut missing = Vec::new();
    if !succeeds("pkg-config", &["--exists", "libzmq"]) {
        missing.extend(["libzmq3-dev", "pkg-config"]);
    }
    if !succeeds("nats-server", &["--version"]) {
        missing.push("nats-server");
    }
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !succeeds("sh", &["-c", "command -v apt-get"]) {
        bail!("missing {list} and there is no apt-get: install them by hand");
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let sudo = if root { "" } else { "sudo " };
    let script = format!(
        "{sudo}apt-get update -qq && DEBIAN_FRONTEND=noninteractive {sudo}apt-get install -y -qq {list}"
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script);
    run(cmd)
}

fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_string())
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

/// What the section says about the machine.
struct Machine {
    nproc: usize,
    cpu: String,
    load: String,
    rustc: String,
    kernel: String,
    date: String,
    wall_secs: f64,
}

/// The whole section: how it was made, the machine, the two reports, what is not compared yet.
fn section(quick: bool, m: &Machine, loopback: &str, lossy: &str) -> String {
    let flag = if quick { " --quick" } else { "" };
    let mut s = String::new();
    s.push_str(HEADING);
    s.push_str("\n\n");
    s.push_str(&format!(
        "Written by `cargo xtask bench-compare{flag}` (which rewrites this section and nothing \
         else of this file); {}. The comparison crate is `benches/compare`, a workspace of its own \
         so that neither the library's users nor `cargo test --workspace` ever build the peers. \
         To reproduce: `cargo xtask bench-compare` (full run) or `cargo xtask bench-compare \
         --quick`; it installs `libzmq3-dev`, `pkg-config` and `nats-server` with apt-get when \
         they are missing. `--no-write` prints the section instead of writing it (and writes no \
         plots).\n\n",
        if quick {
            "this is a `--quick` run: fewer rounds, messages and seeds than the full run"
        } else {
            "this is a full run"
        }
    ));
    s.push_str(&format!(
        "Machine: {} logical CPUs ({}), Linux {}, {}; load average (1, 5, 15 min) {}; run \
         {}, {:.0} s wall for both subcommands (build excluded). This machine has 2 cores shared \
         with other work while it ran, so loopback figures are noisy: read the ratios taken in \
         the same run and the medians, not single absolute figures.\n\n",
        m.nproc, m.cpu, m.kernel, m.rustc, m.load, m.date, m.wall_secs
    ));
    s.push_str("Plots (written by the same run into `docs/img/`):\n\n");
    for (file, caption) in PLOTS {
        s.push_str(&format!("- [{caption}](img/{file})\n"));
    }
    s.push_str("\n![Round-trip latency CDF](img/latency-cdf.svg)\n\n");
    s.push_str("![Throughput by message size](img/throughput-vs-size.svg)\n\n");
    s.push_str("![Goodput vs loss](img/goodput-vs-loss.svg)\n\n");
    // The loopback report's headings already sit one level under this section's.
    s.push_str(loopback);
    if !s.ends_with("\n\n") {
        s.push('\n');
    }
    s.push_str(&demote_headings(lossy));
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_links_every_plot_and_keeps_the_reports() {
        let m = Machine {
            nproc: 2,
            cpu: "cpu".into(),
            load: "1 1 1".into(),
            rustc: "rustc".into(),
            kernel: "k".into(),
            date: "d".into(),
            wall_secs: 12.0,
        };
        let s = section(
            true,
            &m,
            "### Loopback\n\nrows\n",
            "## KCP\n\nsim\n### UDP\n",
        );
        for (file, _) in PLOTS {
            assert!(s.contains(&format!("(img/{file})")), "{file}");
        }
        assert!(s.starts_with(HEADING));
        assert!(
            s.contains("### Loopback\n\nrows\n")
                && s.contains("### KCP\n")
                && s.contains("#### UDP\n")
        );
        assert!(s.contains("--quick") && s.contains("12 s wall"));
    }

    #[test]
    fn arguments() {
        let o = parse(&["--quick".to_string()]).expect("parse");
        assert!(o.quick && !o.no_write);
        assert!(parse(&["--fast".to_string()]).is_err());
    }
}
