//! Generation of the protocol's Rust code and descriptor set from `proto/`.
//!
//! The generated files are checked in, so building the workspace needs neither `protoc` nor
//! `protox`; the test below fails when they no longer match `proto/`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use prost::Message;

/// Where the generated files live, relative to the workspace root.
const GENERATED_DIR: &str = "crates/atbus-proto/src/generated";
/// The descriptor set file name inside [`GENERATED_DIR`].
const DESCRIPTOR_FILE: &str = "atbus_protocol.fds.bin";

/// Generates all files into `out`, returning their paths.
fn generate_into(root: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    let proto_dir = root.join("proto");
    let fds = protox::compile(["atbus_protocol.proto"], [&proto_dir])
        .context("compiling proto/atbus_protocol.proto")?;
    std::fs::create_dir_all(out)?;
    let mut fds_for_file = fds.clone();
    // Source locations carry absolute paths of nothing but comments; drop them so the descriptor
    // does not depend on where the checkout lives and stays small.
    for file in &mut fds_for_file.file {
        file.source_code_info = None;
    }
    let descriptor = out.join(DESCRIPTOR_FILE);
    std::fs::write(&descriptor, fds_for_file.encode_to_vec())?;
    prost_build::Config::new()
        .bytes(["."])
        .btree_map(["."])
        // Rare, large optional fields of a fragment live behind a pointer, so the fragment that
        // every message travels in stays small to move.
        .boxed(".atbus.protocol.packet_content.fragment_type.options")
        .boxed(".atbus.protocol.packet_content.fragment_type.forward_for")
        .boxed(".atbus.protocol.packet_content.fragment_type.close_reason")
        .out_dir(out)
        .compile_fds(fds)
        .context("generating Rust code with prost-build")?;
    Ok(vec![out.join("atbus.protocol.rs"), descriptor])
}

/// Regenerates the checked-in files.
pub(crate) fn write_generated(root: &Path) -> Result<()> {
    let files = generate_into(root, &root.join(GENERATED_DIR))?;
    for f in files {
        eprintln!("xtask: wrote {}", f.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_in_protocol_code_matches_proto() {
        let root = crate::workspace_root();
        let tmp = std::env::temp_dir().join(format!("atbus-gen-proto-{}", std::process::id()));
        let files = generate_into(&root, &tmp).expect("generation works");
        for fresh in files {
            let name = fresh.file_name().expect("file name");
            let checked_in = root.join(GENERATED_DIR).join(name);
            let a = std::fs::read(&fresh).expect("read fresh");
            let b = std::fs::read(&checked_in).unwrap_or_default();
            assert!(
                a == b,
                "{} is stale: run `cargo xtask gen-proto` and commit the result",
                checked_in.display()
            );
        }
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
