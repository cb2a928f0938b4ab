//! The `switchboard` binary: parses the command line and hands over to the
//! library.
#![forbid(unsafe_code)]

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    switchboard::cli::main(switchboard::cli::Cli::parse())
}
