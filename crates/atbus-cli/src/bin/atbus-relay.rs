//! `atbus-relay`: the relay service, with the same arguments as `atbus relay`.

use std::process::ExitCode;

use clap::Parser;

/// libatbus-rs relay: forwards frames between nodes and relays, with a metrics endpoint.
#[derive(Debug, Parser)]
#[command(name = "atbus-relay", version, after_long_help = atbus_cli::relay::RELAY_HELP)]
struct Cli {
    #[command(flatten)]
    args: atbus_cli::relay::RelayArgs,
}

fn main() -> ExitCode {
    atbus_cli::relay::main(&Cli::parse().args)
}
