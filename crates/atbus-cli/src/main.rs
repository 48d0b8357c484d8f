//! The `atbus` command line.

use std::fs::File;
use std::io::{self, BufWriter, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use atbus_cli::inspect::{self, InspectError, Options, Stats};
use atbus_frame::{DEFAULT_MAX_FRAME_LENGTH, FrameLimits};
use clap::{Args, Parser, Subcommand};

/// The sample capture shipped in `samples/`, embedded for `atbus demo`.
const SAMPLE_CAPTURE: &[u8] = include_bytes!("../../../samples/capture.bin");

/// libatbus-rs command line: a message bus for server processes.
#[derive(Debug, Parser)]
#[command(name = "atbus", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Dissect captured atbus packages and print one JSON object per package (JSON Lines)
    #[command(after_long_help = INSPECT_HELP)]
    Inspect(InspectArgs),
    /// Provisional demo: explains the package format and dissects the built-in sample capture
    Demo,
}

#[derive(Debug, Args)]
struct InspectArgs {
    /// Capture file to read; `-` or nothing reads standard input
    #[arg(value_name = "FILE", conflicts_with = "hex")]
    file: Option<PathBuf>,
    /// The input is datagram records (u32 little-endian length, then one datagram holding one or
    /// more packages) instead of a byte stream
    #[arg(long)]
    datagram: bool,
    /// Take the captured bytes from this hex string (whitespace ignored) instead of a file
    #[arg(long, value_name = "HEX")]
    hex: Option<String>,
    /// Largest frame_message length accepted, in bytes
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_FRAME_LENGTH)]
    max_frame_length: usize,
}

const INSPECT_HELP: &str = "\
Output, one JSON object per line:
  {\"offset\":0,\"version\":1,\"length\":8,\"hash_ok\":true,
   \"frame\":{\"ping\":{\"ping_id\":\"1\",\"timepoint_microseconds\":\"1000000\"}}}
  offset    where the package starts in the input (datagram input: in the whole file)
  datagram  index of the datagram record (with --datagram only)
  length    frame_message length from the package header
  frame     frame_message in the proto3 JSON mapping: the .proto's snake_case field names,
            int64 as strings, bytes as base64, fields at their default value (0, \"\", false,
            empty) omitted, keys sorted
  frame.packet.content_decoded
            the packet's content decoded as packet_content, when it is not ENCRYPTED or
            COMPRESSED and decodes cleanly (padding_size trailing bytes ignored)

A package that does not decode prints {\"offset\":…,\"error_kind\":…,\"error\":…} with error_kind
one of hash_mismatch, unsupported_version, frame_too_long, overlong_varint, truncated, protobuf,
empty_datagram, datagram_too_long. On a byte stream a framing error ends the dissection (package
boundaries are lost), as does input ending inside a package; with --datagram it goes on with the
next datagram.

Exit status: 0 when every package decoded, 1 when an error line was printed, 2 when the input
could not be read or the arguments are wrong.

Examples:
  atbus inspect samples/capture.bin
  atbus inspect --datagram samples/capture-datagrams.bin
  atbus inspect --hex '01 08 2a06080110c0843d 06d59d8d'
  atbus inspect - < stream.bin";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => run_inspect(args),
        Command::Demo => atbus_cli::demo::run(SAMPLE_CAPTURE, BufWriter::new(io::stdout().lock())),
    };
    match result {
        Ok(stats) if stats.is_clean() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        // `atbus inspect big.bin | head`: the reader left, nothing more to say.
        Err(InspectError::Write(err)) if err.kind() == io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("atbus: error: {err}");
            ExitCode::from(2)
        }
    }
}

fn run_inspect(args: InspectArgs) -> Result<Stats, InspectError> {
    let options = Options {
        datagram: args.datagram,
        limits: FrameLimits {
            max_frame_length: args.max_frame_length,
        },
    };
    let input: Box<dyn Read> = match (&args.hex, &args.file) {
        (Some(hex), _) => Box::new(io::Cursor::new(inspect::parse_hex(hex)?)),
        (None, Some(path)) if path.as_os_str() != "-" => {
            Box::new(File::open(path).map_err(|err| {
                InspectError::Read(io::Error::new(
                    err.kind(),
                    format!("{}: {err}", path.display()),
                ))
            })?)
        }
        (None, _) => Box::new(io::stdin().lock()),
    };
    let out = BufWriter::new(io::stdout().lock());
    let stats = inspect::inspect(input, out, &options)?;
    if !stats.is_clean() {
        eprintln!(
            "atbus: {} packages decoded, {} errors",
            stats.packages, stats.errors
        );
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
