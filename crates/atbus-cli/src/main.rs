//! The `atbus` command line.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use atbus_cli::inspect::{self, InspectError, Options, Stats};
use atbus_cli::reassemble::{self, DEFAULT_MAX_BUFFERED};
use atbus_frame::{DEFAULT_MAX_FRAME_LENGTH, FrameLimits};
use clap::{Args, CommandFactory, Parser, Subcommand};

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
    /// Capture file to read; `-` or nothing reads standard input. With --reassemble, one or more
    /// files, read in order (for example one per path of a session)
    #[arg(value_name = "FILE", conflicts_with = "hex")]
    files: Vec<PathBuf>,
    /// Follow the streams: feed every packet_data through the session's reassembler and print
    /// each delivered message (or skipped range) once, in delivery order, then a summary per
    /// stream
    #[arg(long)]
    reassemble: bool,
    /// With --reassemble: most bytes held waiting for missing data, across all streams; fragments
    /// beyond are refused and counted as buffer_full_pieces
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_BUFFERED, requires = "reassemble")]
    max_buffered: usize,
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

With --reassemble, the packages themselves are not printed. Every packet_data is fed, per stream
(head.source, head.destination, stream_id), through the receive path of a session (overlaps,
duplicates, reordering, HAS_MORE boundaries, RESET_OFFSET skips, FINISH_STREAM and RESET_STREAM
final sizes); the files are read one after the other. Each delivery prints once, in delivery
order:
  {\"source\":\"node-a\",\"destination\":\"node-b\",\"stream_id\":1,\"offset\":0,\"length\":13,
   \"packet_type\":0,\"labels\":{\"app\":\"chat\"},\"data\":\"aGVsbG8sIG5vZGUtYg==\"}
  {\"source\":…,\"destination\":…,\"stream_id\":1,\"skipped\":{\"offset\":13,\"length\":30}}
  offset, length  the message's place in the stream; data is base64, labels keys sorted, and
                  \"options\" appears when the message has any
  skipped         a range the sender gave up on
then one line per stream, sorted:
  {\"stream_summary\":{\"source\":…,\"destination\":…,\"stream_id\":1,\"delivered_messages\":1,
   \"delivered_bytes\":13,\"skipped_bytes\":0,\"final_size\":null,\"finished\":false,
   \"gaps\":[[13,20]],\"pending_bytes\":23,\"read_offset\":13,\"received_max\":43,
   \"undecodable_packets\":0,\"buffer_full_pieces\":0,\"errors\":0}}
  gaps                 [start,end) ranges still missing above read_offset (everything below it
                       was delivered or skipped), up to received_max or the final size
  pending_bytes        bytes received there, waiting for the gaps
  undecodable_packets  ENCRYPTED or COMPRESSED packets, or content that is not a packet_content
  buffer_full_pieces   fragments refused because of --max-buffered
Each stream's state also counts against --max-buffered (512 bytes plus its names); once it is
spent, packets of new streams are not followed and a last line {\"untracked_streams\":{\"packets\":…}}
counts them.
Error lines gain a leading \"file\" field; a packet the session would refuse prints
{\"file\":…,\"offset\":…,\"source\":…,\"destination\":…,\"stream_id\":…,\"error_kind\":…,\"error\":…}
with error_kind reassembly (data past the final size, a changed final size) or protocol (negative
stream_id or stream_offset, unknown flag bits). Gaps alone are not errors.

Exit status: 0 when every package decoded, 1 when an error line was printed, 2 when the input
could not be read or the arguments are wrong.

Examples:
  atbus inspect samples/capture.bin
  atbus inspect --datagram samples/capture-datagrams.bin
  atbus inspect --hex '01 08 2a06080110c0843d 06d59d8d'
  atbus inspect - < stream.bin
  atbus inspect --reassemble path1.bin path2.bin";

/// `atbus demo`: the session over simulated paths, then the dissection tour.
fn run_demo() -> Result<Stats, InspectError> {
    let mut out = BufWriter::new(io::stdout().lock());
    let report = atbus_cli::demo_session::run(&mut out).map_err(InspectError::Write)?;
    if report.verified != report.sent {
        let _ = out.flush();
        eprintln!(
            "atbus: error: only {} of {} messages were delivered intact",
            report.verified, report.sent
        );
        return Ok(Stats {
            errors: 1,
            ..Stats::default()
        });
    }
    writeln!(out, "Part 2: what it looks like on the wire").map_err(InspectError::Write)?;
    writeln!(out).map_err(InspectError::Write)?;
    atbus_cli::demo::run(SAMPLE_CAPTURE, out)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => run_inspect(args),
        Command::Demo => run_demo(),
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

/// Exits with a usage error of `atbus inspect` (status 2).
fn usage_error(kind: clap::error::ErrorKind, message: &str) -> ! {
    let mut cli = Cli::command();
    cli.build();
    match cli.find_subcommand_mut("inspect") {
        Some(inspect) => inspect.error(kind, message).exit(),
        None => cli.error(kind, message).exit(),
    }
}

/// Opens `path` (`-`: standard input).
fn open(path: &Path) -> Result<Box<dyn Read>, InspectError> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(io::stdin().lock()));
    }
    let file = File::open(path).map_err(|err| {
        InspectError::Read(io::Error::new(
            err.kind(),
            format!("{}: {err}", path.display()),
        ))
    })?;
    Ok(Box::new(file))
}

fn run_inspect(args: InspectArgs) -> Result<Stats, InspectError> {
    if !args.reassemble && args.files.len() > 1 {
        usage_error(
            clap::error::ErrorKind::TooManyValues,
            "more than one FILE needs --reassemble",
        );
    }
    if args.files.iter().filter(|p| p.as_os_str() == "-").count() > 1 {
        usage_error(
            clap::error::ErrorKind::ArgumentConflict,
            "standard input (`-`) can be read only once",
        );
    }
    let options = Options {
        datagram: args.datagram,
        limits: FrameLimits {
            max_frame_length: args.max_frame_length,
        },
    };
    let mut inputs: Vec<(String, Box<dyn Read>)> = Vec::new();
    if let Some(hex) = &args.hex {
        inputs.push((
            "hex".into(),
            Box::new(io::Cursor::new(inspect::parse_hex(hex)?)),
        ));
    } else if args.files.is_empty() {
        inputs.push(("-".into(), Box::new(io::stdin().lock())));
    } else {
        for path in &args.files {
            inputs.push((path.display().to_string(), open(path)?));
        }
    }
    let out = BufWriter::new(io::stdout().lock());
    let stats = if args.reassemble {
        let options = reassemble::Options {
            inspect: options,
            max_buffered: args.max_buffered,
        };
        reassemble::reassemble(inputs, out, &options)?
    } else {
        let Some((_, input)) = inputs.pop() else {
            unreachable!("one input at least");
        };
        inspect::inspect(input, out, &options)?
    };
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

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
