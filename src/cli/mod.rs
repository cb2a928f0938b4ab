//! The `switchboard` command line: argument definitions and the commands
//! that are thin layers over the library.

mod parse;
mod run;
mod send;
pub mod tls;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Switchboard, an HL7 v2 interface engine.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the structure of HL7 messages in a file (one message, several
    /// back to back, or a batch file), with paths and decoded values.
    Parse(ParseArgs),
    /// Send HL7 messages over MLLP and wait for each ACK; with `--count`, a
    /// load generator that replays the files with fresh control ids.
    Send(SendArgs),
    /// Start the engine on a productions file and run until interrupted.
    Run(RunArgs),
    /// Validate a productions file (YAML, references, ports, rules, reply
    /// code actions) without starting anything.
    Check(CheckArgs),
    /// TLS configurations: the certificate doctor (`check`), certificate
    /// inspection (`inspect`) and a test PKI (`new-ca`, `new-cert`).
    Tls(tls::TlsArgs),
}

/// Arguments of `switchboard run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The productions file.
    #[arg(long, short, env = "SWITCHBOARD_CONFIG")]
    pub config: PathBuf,
    /// Where the message store lives.
    #[arg(long, env = "SWITCHBOARD_DATA_DIR", default_value = "switchboard-data")]
    pub data_dir: PathBuf,
    /// Log filter, e.g. `info`, `debug`, `switchboard=debug,warn`.
    #[arg(long, env = "SWITCHBOARD_LOG", default_value = "info")]
    pub log_level: String,
    /// A certificate expiring within this many days is reported as a problem.
    #[arg(long, env = "SWITCHBOARD_CERTIFICATE_WARNING_DAYS", default_value_t = 30)]
    pub certificate_warning_days: u32,
}

/// Arguments of `switchboard check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The productions file.
    #[arg(long, short, env = "SWITCHBOARD_CONFIG")]
    pub config: PathBuf,
    /// A certificate expiring within this many days is reported as a warning.
    #[arg(long, default_value_t = 30)]
    pub certificate_warning_days: u32,
}

/// Arguments of `switchboard parse`.
#[derive(Debug, Args)]
pub struct ParseArgs {
    /// The file to read.
    pub file: PathBuf,
    /// Print JSON instead of a tree.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `switchboard send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Host of the MLLP listener.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port of the MLLP listener.
    #[arg(long)]
    pub port: u16,
    /// Files of HL7 messages (single, back to back, or batch files).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// How long to wait for each connection and each ACK, e.g. `10s`, `500ms`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Load mode: send this many messages in total, cycling through the
    /// files, each with a fresh MSH-10, and print throughput and latency.
    #[arg(long)]
    pub count: Option<u64>,
    /// Load mode: number of concurrent connections.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
}

/// Reads `250ms`, `10s`, `5m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 =
        number.parse().map_err(|_| format!("{text:?} is not a duration; write e.g. 500ms, 10s, 5m or 1h"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("unknown unit {unit:?} in {text:?}; use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is out of range"))
}

/// Runs a parsed command line and returns the process exit status.
pub fn main(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Parse(args) => parse::run(&args),
        Command::Send(args) => send::run(args),
        Command::Run(args) => run::run(&args),
        Command::Check(args) => run::check(&args),
        Command::Tls(args) => tls::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("ms").is_err());
    }
}
