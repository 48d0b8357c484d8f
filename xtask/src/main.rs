//! Project automation for libatbus-rs, run as `cargo xtask <command>`.
//!
//! - `cargo xtask demo`: the main job (builds and runs `atbus demo`).
//! - `cargo xtask test`: the whole test suite, installing what it needs first (the etcd
//!   backend's TLS tests run with it, as `tls` is a default feature).
//! - `cargo xtask gen-proto`: regenerates `crates/atbus-proto/src/generated/` from `proto/`.
//! - `cargo xtask setup`: installs the system packages the tests need (protoc, etcd).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

mod bench_compare;
mod proto;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("gen-proto") => proto::write_generated(&workspace_root()),
        Some("setup") => setup(),
        Some("sample") => sample(),
        Some("bench-compare") => bench_compare::bench_compare(&workspace_root(), &args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <demo|test|gen-proto|setup|sample|bench-compare>\n\
                 \n  demo       run the demo (the main job) on embedded defaults\
                 \n  test       run the whole test suite (fmt, clippy, tests, corpus replay)\
                 \n  gen-proto  regenerate the Rust code of proto/atbus_protocol.proto\
                 \n  setup      install the system packages the tests need\
                 \n  sample     rewrite samples/ from the encoder\
                 \n  bench-compare [--quick] [--no-write]\
                 \n             atbus beside raw sockets, ZeroMQ, quinn and KCP; writes docs/benchmarks.md"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of this crate's folder).
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
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

fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Installs the Debian packages the test suite needs when they are missing.
fn setup() -> Result<()> {
    let wanted = [
        ("protoc", "protobuf-compiler"),
        ("etcd", "etcd-server"),
        ("etcdctl", "etcd-client"),
    ];
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(bin, _)| !have(bin))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !have("apt-get") {
        bail!("missing {missing:?} and no apt-get to install them: install them by hand");
    }
    let sudo = if have("id")
        && Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.trim_ascii() != b"0")
            .unwrap_or(true)
    {
        "sudo "
    } else {
        ""
    };
    let script = format!(
        "{sudo}apt-get update -qq && DEBIAN_FRONTEND=noninteractive {sudo}apt-get install -y -qq {} \
         && ({sudo}service etcd stop >/dev/null 2>&1 || true)",
        missing.join(" ")
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script);
    run(cmd)
}

/// The whole test suite: what CI runs and what the README tells users to run.
fn test(extra: &[String]) -> Result<()> {
    setup()?;
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    run(fmt)?;
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run(clippy)?;
    // The etcd backend's TLS (a default feature) is cfg-gated: lint the build without it too,
    // so that a plain-HTTP-only build stays warning-free.
    let mut clippy_plain = cargo();
    clippy_plain.args([
        "clippy",
        "-p",
        "atbus-discovery-etcd",
        "--no-default-features",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run(clippy_plain)?;
    let mut tests = cargo();
    tests.args(["test", "--workspace"]);
    tests.args(extra);
    if std::env::var_os("PROPTEST_CASES").is_none() {
        tests.env("PROPTEST_CASES", "256");
    }
    run(tests)?;
    // Run every criterion bench once in test mode, so benches never rot; built with the test
    // profile, reusing what the tests compiled.
    let mut benches = cargo();
    benches.args(["test", "--workspace", "--benches"]);
    run(benches)
}

/// The main job: the `atbus demo` command, in release mode.
fn demo(extra: &[String]) -> Result<()> {
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--release",
        "--quiet",
        "--package",
        "atbus-cli",
        "--bin",
        "atbus",
        "--",
    ]);
    cmd.arg("demo");
    cmd.args(extra);
    run(cmd)
}

/// Rewrites the sample capture shipped in `samples/` with the current encoder.
fn sample() -> Result<()> {
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--quiet",
        "--package",
        "atbus-cli",
        "--example",
        "write_sample",
        "--",
    ]);
    cmd.arg(workspace_root().join("samples"));
    run(cmd)
}
