//! Writes the sample capture into a directory (default `samples/`): `capture.bin` (byte stream),
//! `capture-datagrams.bin` (datagram records) and the expected `atbus inspect` output of both
//! (`capture.jsonl`, `capture-datagrams.jsonl`). Run through `cargo xtask sample`.

use std::path::PathBuf;

use anyhow::Context;
use atbus_cli::inspect::{Options, inspect};
use atbus_cli::sample;

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(
        std::env::args_os()
            .nth(1)
            .unwrap_or_else(|| "samples".into()),
    );
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let outputs = [
        ("capture", sample::capture_stream()?, false),
        ("capture-datagrams", sample::capture_datagrams()?, true),
    ];
    for (name, bytes, datagram) in outputs {
        let mut json = Vec::new();
        let options = Options {
            datagram,
            ..Options::default()
        };
        let stats = inspect(bytes.as_slice(), &mut json, &options)?;
        anyhow::ensure!(
            stats.is_clean(),
            "the sample {name} does not dissect cleanly"
        );
        for (ext, data) in [("bin", &bytes), ("jsonl", &json)] {
            let path = dir.join(format!("{name}.{ext}"));
            std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {} ({} bytes)", path.display(), data.len());
        }
    }
    Ok(())
}
