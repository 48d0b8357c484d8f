//! Helpers shared by the `atbus` binary tests: running the binary and building packages by hand
//! (own varints, hash straight from `xxhash-rust`), independent of `atbus-frame`'s encoder.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// What a run of the binary produced.
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Stdout parsed as JSON Lines.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect()
    }
}

/// Runs `atbus` with `args`, feeding `stdin`.
pub fn atbus(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_atbus"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start atbus");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        // The binary may exit before reading everything (a usage error): ignore broken pipes.
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait for atbus");
    writer.join().unwrap();
    Output {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8(out.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("UTF-8 stderr"),
    }
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A file of `samples/`.
pub fn sample_path(name: &str) -> PathBuf {
    workspace().join("samples").join(name)
}

/// LEB128 varint.
pub fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A package around `frame` with the given version, hash computed directly with XXH3-64.
pub fn package_with_version(version: u64, frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(version, &mut out);
    varint(frame.len() as u64, &mut out);
    out.extend_from_slice(frame);
    let hash = xxhash_rust::xxh3::xxh3_64(&out) as u32;
    out.extend_from_slice(&hash.to_le_bytes());
    out
}

/// A version-1 package around `frame`.
pub fn package(frame: &[u8]) -> Vec<u8> {
    package_with_version(1, frame)
}

/// One datagram record: u32 little-endian length, then the datagram.
pub fn record(datagram: &[u8]) -> Vec<u8> {
    let mut out = (datagram.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(datagram);
    out
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
