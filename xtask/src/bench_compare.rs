//! `cargo xtask bench-compare [--quick] [--no-write]`: libatbus-rs beside its peers in one run.
//!
//! Installs what the comparison crate needs when it is missing (libzmq's development files and
//! pkg-config, through apt-get), builds `benches/compare` (its own workspace, outside the main
//! build) in release mode, runs its `loopback` comparison (raw sockets, atbus, ZeroMQ, quinn)
//! and its `lossy` comparison (KCP and atbus over simulated lossy links), and writes both reports
//! with the machine's description into `docs/benchmarks.md` under [`HEADING`], replacing only
//! that section. `--no-write` prints the section instead.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

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
    let load_before = load_average();
    let mut build = cargo(root);
    build.args(["build", "--release", "--manifest-path"]);
    build.arg(&manifest);
    run(build)?;

    let mut loopback = compare(root, &manifest, "loopback");
    if o.quick {
        loopback.arg("--quick");
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
        ]);
    }
    let lossy = output(lossy)?;
    let load_after = load_average();

    let machine = Machine {
        nproc: nproc(),
        cpu: cpu_model(),
        load: format!("{load_before} before, {load_after} after"),
        rustc: command_line("rustc", &["--version"]),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".to_string()),
        date: command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
    };
    let section = section(o.quick, &machine, &loopback, &lossy);
    if o.no_write {
        print!("{section}");
        return Ok(());
    }
    let doc = root.join("docs/benchmarks.md");
    let text =
        std::fs::read_to_string(&doc).with_context(|| format!("reading {}", doc.display()))?;
    std::fs::write(&doc, splice(&text, &section))
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

/// Installs libzmq's development files and pkg-config with apt-get when they are missing.
fn install_missing() -> Result<()> {
    if succeeds("pkg-config", &["--exists", "libzmq"]) {
        return Ok(());
    }
    if !succeeds("sh", &["-c", "command -v apt-get"]) {
        bail!(
            "libzmq (pkg-config libzmq) is missing and there is no apt-get: install libzmq3-dev and pkg-config by hand"
        );
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let sudo = if root { "" } else { "sudo " };
    let script = format!(
        "{sudo}apt-get update -qq && DEBIAN_FRONTEND=noninteractive {sudo}apt-get install -y -qq \
         libzmq3-dev pkg-config"
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
}

/// Moves every Markdown heading of `text` one level down (`## ` becomes `### `).
fn demote_headings(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.split_inclusive('\n') {
        if line.starts_with('#') {
            out.push('#');
        }
        out.push_str(line);
    }
    out
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
         --quick`; it installs `libzmq3-dev` and `pkg-config` with apt-get when they are missing. \
         `--no-write` prints the section instead of writing it.\n\n",
        if quick {
            "this is a `--quick` run: fewer rounds, messages and seeds than the full run"
        } else {
            "this is a full run"
        }
    ));
    s.push_str(&format!(
        "Machine: {} logical CPUs ({}), Linux {}, {}; load average (1, 5, 15 min) {}; run \
         {}. Loopback figures on a shared 2-core machine are noisy: read the ratios taken in the \
         same run, not the absolute figures.\n\n",
        m.nproc, m.cpu, m.kernel, m.rustc, m.load, m.date
    ));
    // The loopback report's headings already sit one level under this section's.
    s.push_str(loopback);
    if !s.ends_with("\n\n") {
        s.push('\n');
    }
    s.push_str(&demote_headings(lossy));
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s.push_str(
        "\n### Not compared yet\n\nNATS, quinn beside atbus over UDP, atbus over UDP and \
         `mem://` and over two mixed paths, the relay rows, KCP and atbus over real UDP through a \
         lossy userspace proxy, and the SVG plots of issue 9 are still to come.\n",
    );
    s
}

/// Replaces the section under [`HEADING`] in `text` (up to the next `## ` heading or the end),
/// or appends it at the end when there is none.
fn splice(text: &str, section: &str) -> String {
    let mut offset = 0;
    let mut start = None;
    let mut end = text.len();
    for line in text.split_inclusive('\n') {
        let heading = line.trim_end();
        if start.is_none() && heading == HEADING {
            start = Some(offset);
        } else if start.is_some() && heading.starts_with("## ") {
            end = offset;
            break;
        }
        offset += line.len();
    }
    let section = section.trim_end_matches('\n');
    match start {
        Some(start) => {
            let mut out = String::with_capacity(text.len() + section.len());
            out.push_str(&text[..start]);
            out.push_str(section);
            out.push('\n');
            if end < text.len() {
                out.push('\n');
            }
            out.push_str(&text[end..]);
            out
        }
        None => {
            let mut out = text.trim_end_matches('\n').to_string();
            out.push_str("\n\n");
            out.push_str(section);
            out.push('\n');
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_appends_then_replaces_only_its_section() {
        let doc = "# B\n\n## Frame codec\n\nfigures\n";
        let first = splice(doc, "## Against peers\n\nv1\n");
        assert_eq!(
            first,
            "# B\n\n## Frame codec\n\nfigures\n\n## Against peers\n\nv1\n"
        );
        let second = splice(&first, "## Against peers\n\nv2\n\n");
        assert_eq!(
            second,
            "# B\n\n## Frame codec\n\nfigures\n\n## Against peers\n\nv2\n"
        );
        let middle = "# B\n\n## Against peers\n\nold\n### sub\n\n## Session\n\ns\n";
        assert_eq!(
            splice(middle, "## Against peers\n\nnew\n"),
            "# B\n\n## Against peers\n\nnew\n\n## Session\n\ns\n"
        );
    }

    #[test]
    fn headings_move_one_level_down() {
        assert_eq!(
            demote_headings("## A\ntext # not\n### B\n"),
            "### A\ntext # not\n#### B\n"
        );
    }

    #[test]
    fn arguments() {
        let o = parse(&["--quick".to_string()]).expect("parse");
        assert!(o.quick && !o.no_write);
        assert!(parse(&["--fast".to_string()]).is_err());
    }
}
