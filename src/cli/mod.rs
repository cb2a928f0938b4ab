//! The `switchboard` command line: argument definitions and the commands
//! that are thin layers over the library.
//!
//! Commands print through the macros of `output`, never `println!`, so
//! that a reader closing the pipe early cannot make them panic; the lints
//! below keep it that way.
#![deny(clippy::print_stdout, clippy::print_stderr)]

#[macro_use]
mod output;
mod first_run;
mod input;
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
    ///
    /// A line ending of any kind (CR, LF or CR LF) ends a segment and empty
    /// lines are skipped, so a file saved by a text editor reads like one
    /// written with CRs; `send` sends the same segments.
    Parse(ParseArgs),
    /// Send HL7 messages over MLLP and wait for each ACK; with `--count`, a
    /// load generator that replays the files with fresh control ids.
    ///
    /// Prints a line per message, its columns separated by tabs: the control
    /// id sent (MSH-10), the acknowledgment code (MSA-1: AA, AE, AR, CA...),
    /// the round-trip time, and the acknowledgment's text (MSA-3), if any.
    /// The exit status is 0 only when every message got a positive ACK
    /// that names it in MSA-2.
    ///
    /// Each segment goes out ended by a CR, as HL7 wants, whatever line
    /// endings the file has (CR, LF or CR LF): empty lines are skipped, and
    /// a final line ending is neither needed nor sent as an extra segment.
    /// The receiver gets the segments `parse` shows.
    Send(SendArgs),
    /// Start the engine on a productions file and run until interrupted.
    ///
    /// Ctrl-C or SIGTERM stops it gracefully: the listeners close, then
    /// routers and operations get each production's `stop_timeout` to
    /// finish the message in hand. What is not delivered yet stays queued
    /// in the store and goes out at the next start.
    Run(Box<RunArgs>),
    /// Validate a productions file (YAML, references, ports, rules, reply
    /// code actions) without starting anything.
    Check(CheckArgs),
    /// TLS configurations: the certificate doctor (`check`), certificate
    /// inspection (`inspect`) and a test PKI (`new-ca`, `new-cert`).
    Tls(tls::TlsArgs),
    /// Write a consistent copy of the message store, `switchboard-backup.db`
    /// in the data folder, without stopping the engine; with `--remove`,
    /// delete it again.
    ///
    /// The Home Assistant add-on runs it before and after each backup
    /// (`backup_pre`, `backup_post`), whose archive leaves the live files of
    /// the store out. The copy holds every message acknowledged before it
    /// started. When `switchboard run` starts on a data folder that holds
    /// the copy but no store (a restored backup), the copy becomes the
    /// store.
    Backup(BackupArgs),
}

/// Arguments of `switchboard run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The productions file. Relative paths inside it are taken from the
    /// folder that holds it [default: with `--config-dir`, the options
    /// file's `productions_file` in that folder, or `productions.yaml`].
    #[arg(long, short, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// The add-on's configuration folder (`/config` in the container):
    /// without `--config`, the productions file is looked for there, and
    /// the first start without one writes a commented example there.
    #[arg(long, env = "SWITCHBOARD_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,
    /// Where the message store lives; a relative path is taken from the
    /// directory the command runs in. The `ready` log line shows it in full.
    #[arg(long, env = "SWITCHBOARD_DATA_DIR", default_value = "switchboard-data")]
    pub data_dir: PathBuf,
    /// The certificates' folder (`/ssl` in the container): relative
    /// certificate paths of the options file are taken from it.
    #[arg(long, env = "SWITCHBOARD_SSL_DIR")]
    pub ssl_dir: Option<PathBuf>,
    /// Log filter, e.g. `info`, `debug`, `switchboard=debug,warn` [default:
    /// the options file's `log_level`, or info].
    #[arg(long, env = "SWITCHBOARD_LOG")]
    pub log_level: Option<String>,
    /// A certificate expiring within this many days is reported as a
    /// problem [default: the options file's `certificate_warning_days`, or
    /// 30].
    #[arg(long, env = "SWITCHBOARD_CERTIFICATE_WARNING_DAYS")]
    pub certificate_warning_days: Option<u32>,
    /// After a graceful stop, give the store's file a second name,
    /// `switchboard-backup.db` (a hard link), for backups that leave the
    /// live files out and are taken while Switchboard is stopped (the Home
    /// Assistant add-on's). The next start removes it.
    #[arg(long, env = "SWITCHBOARD_BACKUP_COPY_AT_STOP")]
    pub backup_copy_at_stop: bool,
    /// MQTT broker and Home Assistant discovery.
    #[command(flatten, next_help_heading = "Home Assistant (MQTT)")]
    pub mqtt: MqttFlags,
    /// The web UI and REST API.
    #[command(flatten, next_help_heading = "Web UI and API")]
    pub web: WebFlags,
}

/// Arguments of `switchboard backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The folder of the message store, as given to `run`.
    #[arg(long, env = "SWITCHBOARD_DATA_DIR", default_value = "switchboard-data")]
    pub data_dir: PathBuf,
    /// Remove the copy (once the backup holds it) instead of writing it.
    /// A copy is kept when the store exists only as the copy.
    #[arg(long)]
    pub remove: bool,
}

/// The web flags of `switchboard run`.
#[derive(Debug, Clone, Args)]
pub struct WebFlags {
    /// Port of the web UI and REST API. Off when not set, except under
    /// the Home Assistant Supervisor, where it is the ingress port 8099.
    #[arg(long, env = "SWITCHBOARD_WEB_PORT")]
    pub web_port: Option<u16>,
    /// Address the web UI listens on [default: 127.0.0.1; under the
    /// Supervisor 0.0.0.0, for the ingress proxy].
    #[arg(long, env = "SWITCHBOARD_WEB_HOST")]
    pub web_host: Option<std::net::IpAddr>,
    /// Sources admitted to the web UI without a token, comma-separated
    /// addresses or ranges (`10.0.0.0/8`); `any` admits every source
    /// [default: 127.0.0.1,::1; under the Supervisor the ingress proxy,
    /// 172.30.32.2; either with the options file's `web_allow` added].
    #[arg(long, env = "SWITCHBOARD_WEB_ALLOW", value_delimiter = ',')]
    pub web_allow: Option<Vec<String>>,
    /// Port of a second listener on which every request needs an API token
    /// (`Authorization: Bearer <token>`), for scripts and tools [default:
    /// the options file's `api_port`, or none].
    #[arg(long, env = "SWITCHBOARD_API_PORT")]
    pub api_port: Option<u16>,
    /// The name of the environment variable that holds the API tokens,
    /// comma-separated, each at least 16 characters (tokens never go on
    /// the command line). Without that variable, the options file's
    /// `api_tokens` are used.
    #[arg(long, env = "SWITCHBOARD_API_TOKENS_ENV", default_value = "SWITCHBOARD_API_TOKENS")]
    pub api_tokens_env: String,
    /// Origins allowed to call the API from a browser (CORS),
    /// comma-separated, e.g. `https://dashboard.example.org`.
    #[arg(long, env = "SWITCHBOARD_WEB_CORS_ORIGINS", value_delimiter = ',')]
    pub web_cors_origins: Vec<String>,
}

/// The MQTT and Home Assistant flags of `switchboard run`, handed to
/// [`crate::ha::resolve`] as [`crate::ha::MqttArgs`].
#[derive(Debug, Clone, Args)]
pub struct MqttFlags {
    /// MQTT broker host. Without it (here, in the environment or in the
    /// options file) the Supervisor is asked when `SUPERVISOR_TOKEN` is set;
    /// otherwise Switchboard runs without MQTT.
    #[arg(long, env = "SWITCHBOARD_MQTT_HOST")]
    pub mqtt_host: Option<String>,
    /// MQTT broker port [default: 1883, or 8883 with TLS].
    #[arg(long, env = "SWITCHBOARD_MQTT_PORT")]
    pub mqtt_port: Option<u16>,
    /// MQTT user name.
    #[arg(long, env = "SWITCHBOARD_MQTT_USERNAME")]
    pub mqtt_username: Option<String>,
    /// The name of the environment variable that holds the MQTT password
    /// (the password itself never goes on the command line).
    #[arg(long, env = "SWITCHBOARD_MQTT_PASSWORD_ENV", default_value = "SWITCHBOARD_MQTT_PASSWORD")]
    pub mqtt_password_env: String,
    /// Connect to the broker over TLS (implied by `--mqtt-tls-ca` and
    /// `--mqtt-tls-cert`). Without a CA file the system's authorities are
    /// trusted.
    #[arg(long, env = "SWITCHBOARD_MQTT_TLS")]
    pub mqtt_tls: bool,
    /// PEM file of the authorities that sign the broker's certificate.
    #[arg(long, env = "SWITCHBOARD_MQTT_TLS_CA")]
    pub mqtt_tls_ca: Option<PathBuf>,
    /// PEM client certificate, for brokers that require one.
    #[arg(long, env = "SWITCHBOARD_MQTT_TLS_CERT")]
    pub mqtt_tls_cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(long, env = "SWITCHBOARD_MQTT_TLS_KEY")]
    pub mqtt_tls_key: Option<PathBuf>,
    /// The name of the environment variable that holds the client key's
    /// password, for an encrypted key.
    #[arg(long, env = "SWITCHBOARD_MQTT_TLS_KEY_PASSWORD_ENV")]
    pub mqtt_tls_key_password_env: Option<String>,
    /// Accept a broker certificate that does not name the host connected to
    /// (the chain is still verified).
    #[arg(long, env = "SWITCHBOARD_MQTT_TLS_SKIP_HOST_CHECK")]
    pub mqtt_tls_skip_host_check: bool,
    /// MQTT client id [default: the instance id].
    #[arg(long, env = "SWITCHBOARD_MQTT_CLIENT_ID")]
    pub mqtt_client_id: Option<String>,
    /// MQTT keep-alive, e.g. `30s` [default: 30s].
    #[arg(long, env = "SWITCHBOARD_MQTT_KEEP_ALIVE", value_parser = crate::config::parse_duration)]
    pub mqtt_keep_alive: Option<Duration>,
    /// Home Assistant's discovery prefix [default: homeassistant].
    #[arg(long, env = "SWITCHBOARD_MQTT_DISCOVERY_PREFIX")]
    pub mqtt_discovery_prefix: Option<String>,
    /// Names this Switchboard in MQTT topics and Home Assistant ids
    /// (lower-case letters, digits and `_`) [default: switchboard]. Change
    /// it only to run two instances against one broker: entity ids follow it.
    #[arg(long, env = "SWITCHBOARD_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// The web UI's address, linked from the Home Assistant devices.
    #[arg(long, env = "SWITCHBOARD_UI_URL")]
    pub ui_url: Option<String>,
    /// Add-on options file (`/data/options.json` format) [default:
    /// /data/options.json when running under the Supervisor].
    #[arg(long, env = "SWITCHBOARD_OPTIONS")]
    pub options: Option<PathBuf>,
    /// The Supervisor's address, asked for the MQTT service.
    #[arg(long, env = "SWITCHBOARD_SUPERVISOR_URL", default_value = crate::ha::settings::DEFAULT_SUPERVISOR_URL)]
    pub supervisor_url: String,
}

impl From<MqttFlags> for crate::ha::MqttArgs {
    fn from(f: MqttFlags) -> Self {
        Self {
            mqtt_host: f.mqtt_host,
            mqtt_port: f.mqtt_port,
            mqtt_username: f.mqtt_username,
            mqtt_password_env: f.mqtt_password_env,
            mqtt_tls: f.mqtt_tls,
            mqtt_tls_ca: f.mqtt_tls_ca,
            mqtt_tls_cert: f.mqtt_tls_cert,
            mqtt_tls_key: f.mqtt_tls_key,
            mqtt_tls_key_password_env: f.mqtt_tls_key_password_env,
            mqtt_tls_skip_host_check: f.mqtt_tls_skip_host_check,
            mqtt_client_id: f.mqtt_client_id,
            mqtt_keep_alive: f.mqtt_keep_alive,
            mqtt_discovery_prefix: f.mqtt_discovery_prefix,
            instance_id: f.instance_id,
            ui_url: f.ui_url,
            options: f.options,
            supervisor_url: f.supervisor_url,
            ssl_dir: None,
        }
    }
}

/// Arguments of `switchboard check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The productions file.
    #[arg(long, short, env = "SWITCHBOARD_CONFIG")]
    pub config: PathBuf,
    /// A certificate expiring within this many days is reported as a warning.
    #[arg(long, env = "SWITCHBOARD_CERTIFICATE_WARNING_DAYS", default_value_t = 30)]
    pub certificate_warning_days: u32,
}

/// Arguments of `switchboard parse`.
#[derive(Debug, Args)]
pub struct ParseArgs {
    /// The file to read; `-` reads standard input.
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
    /// Port of the MLLP listener (2575 is the port registered for HL7 over
    /// MLLP).
    #[arg(long, default_value_t = 2575)]
    pub port: u16,
    /// Files of HL7 messages (single, back to back, or batch files); `-`
    /// reads standard input.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// How long to wait for each connection and each ACK, e.g. `10s`, `500ms`.
    #[arg(long, default_value = "10s", value_parser = crate::config::parse_duration)]
    pub timeout: Duration,
    /// Load mode: send this many messages in total, cycling through the
    /// files, each with a fresh MSH-10, and print throughput and latency.
    #[arg(long)]
    pub count: Option<u64>,
    /// Load mode: number of concurrent connections. Only with `--count`:
    /// without it each message is sent once, in order, on one connection.
    #[arg(long, default_value_t = 1, requires = "count", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// Connect over TLS with this client configuration of a productions
    /// file (needs `--config`).
    #[arg(long, requires = "config", conflicts_with_all = ["ca", "cert", "key"], help_heading = "TLS")]
    pub tls_config: Option<String>,
    /// The productions file that holds `--tls-config`.
    #[arg(long, help_heading = "TLS")]
    pub config: Option<PathBuf>,
    /// Connect over TLS, trusting the authorities in this PEM file.
    #[arg(long, help_heading = "TLS")]
    pub ca: Option<PathBuf>,
    /// Our certificate (PEM, leaf first), for mutual TLS.
    #[arg(long, requires = "key", help_heading = "TLS")]
    pub cert: Option<PathBuf>,
    /// The private key of `--cert`.
    #[arg(long, requires = "cert", help_heading = "TLS")]
    pub key: Option<PathBuf>,
    /// The name to check the server's certificate against (default: `--host`).
    #[arg(long, help_heading = "TLS")]
    pub server_name: Option<String>,
}

/// Reads the process's command line and runs it: all of `main`.
pub fn run_from_args() -> ExitCode {
    main(Cli::parse())
}

/// Runs a parsed command line and returns the process exit status.
pub fn main(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Parse(args) => parse::run(&args),
        Command::Send(args) => send::run(args),
        Command::Run(args) => run::run(&args),
        Command::Check(args) => run::check(&args),
        Command::Tls(args) => tls::run(&args),
        Command::Backup(args) => run::backup(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) if e.is::<output::StdoutClosed>() => ExitCode::SUCCESS,
        Err(e) => {
            errln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
