//! `switchboard run` and `switchboard check`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;

use super::{BackupArgs, CheckArgs, RunArgs};
use crate::backup::{self, Restored};
use crate::config::{self, Config};
use crate::engine::{Engine, EngineOptions};
use crate::ha::AddonOptions;
use crate::store::{Durability, Store, StoreOptions};

/// How often old messages are purged.
const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// Rows per purge transaction: small, so traffic is never blocked for long.
const PURGE_BATCH: usize = 500;

/// Loads and fully validates a productions file (rules and reply code
/// actions included), printing every problem.
fn load(path: &std::path::Path) -> Option<Config> {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(e) => {
            errln!("{e}");
            return None;
        }
    };
    for warning in config.warnings() {
        errln!("warning: {}: {warning}", config.source.display());
    }
    Some(config)
}

/// The certificate doctor over every TLS configuration: prints errors and
/// warnings and says whether there was an error. Configurations whose test
/// certificates are created at start are skipped until they exist.
fn check_tls(config: &Config, warning_days: u32) -> anyhow::Result<bool> {
    let mut errors = false;
    for report in crate::tls::check_all(config, warning_days) {
        let status = report.status();
        let pending = config.tls.get(&status.name).is_some_and(|t| {
            t.create_if_missing
                && [&t.ca_file, &t.cert_file, &t.key_file].iter().any(|f| f.as_ref().is_some_and(|f| !f.exists()))
        });
        if pending {
            outln!("tls.{}: test certificates will be created at start", status.name)?;
            continue;
        }
        for finding in report.problems() {
            let error = finding.severity == crate::tls::Severity::Error;
            errors |= error;
            errln!(
                "{}: tls.{}: {}: {}",
                config.source.display(),
                status.name,
                if error { "error" } else { "warning" },
                finding.message
            );
        }
    }
    Ok(errors)
}

pub(super) fn backup(args: &BackupArgs) -> anyhow::Result<ExitCode> {
    let data_dir = &args.data_dir;
    if args.remove {
        if backup::remove_copy(data_dir).context("cannot remove the backup copy")? {
            outln!("removed {}", data_dir.join(backup::COPY_FILE).display())?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let copied = runtime.block_on(backup::copy(data_dir)).context("cannot copy the message store")?;
    match copied {
        backup::Copied::Written { path, bytes, elapsed } => outln!(
            "wrote {} ({:.1} MiB in {} ms)",
            path.display(),
            bytes as f64 / (1024.0 * 1024.0),
            elapsed.as_millis()
        )?,
        backup::Copied::OnlyTheCopy(path) => outln!("the store is only in {}: nothing to copy", path.display())?,
        backup::Copied::NoStore => outln!("no message store in {} yet: nothing to copy", data_dir.display())?,
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let Some(config) = load(&args.config) else { return Ok(ExitCode::FAILURE) };
    for warning in config::probe_ports(&config) {
        errln!("warning: {}: {warning}", config.source.display());
    }
    if check_tls(&config, args.certificate_warning_days)? {
        return Ok(ExitCode::FAILURE);
    }
    let items: usize = config.productions.iter().map(|p| p.items.len()).sum();
    outln!(
        "{}: OK ({} production(s), {items} item(s), {} TLS configuration(s))",
        config.source.display(),
        config.productions.len(),
        config.tls.len()
    )?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut mqtt = crate::ha::MqttArgs::from(args.mqtt.clone());
    mqtt.ssl_dir.clone_from(&args.ssl_dir);
    let env = crate::ha::Environment::from_process(&mqtt);
    let options = match crate::ha::options_path(&mqtt, &env) {
        Some(path) => AddonOptions::read(&path)?,
        None => AddonOptions::default(),
    };
    let log_filter = args.log_level.clone().or_else(|| options.log_filter());
    init_tracing(log_filter.as_deref().unwrap_or("info"))?;
    if let Some(path) = &options.path {
        for key in options.unknown_keys() {
            tracing::warn!(
                option = %key,
                file = %path.display(),
                "unknown option ignored: Switchboard does not know it (a misspelt key, or one of another version)"
            );
        }
    }
    let Some(config_path) = productions_path(args, &options)? else { return Ok(ExitCode::from(2)) };
    let Some(mut config) = load(&config_path) else { return Ok(ExitCode::from(2)) };
    if let Some(days) = options.retention_days {
        config.store.retention_days = days;
    }
    let warning_days = args.certificate_warning_days.or(options.certificate_warning_days).unwrap_or(30);
    let ha_settings = crate::ha::resolve_with(&mqtt, &env, &options)?;
    let supervised = env.supervisor_token.is_some();
    let web_options = web_options(&args.web, &options, supervised, config.store.retention_days)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    for file in crate::tls::create_missing(&config).context("cannot create test certificates")? {
        errln!("created test certificate file {}", file.display());
    }
    // Problems are reported and the engine starts anyway: the items that
    // use a broken configuration report it. Nor does a closed standard
    // output stop an engine, whose log goes to standard error.
    let _ = check_tls(&config, warning_days);
    runtime.block_on(async move {
        let stop = shutdown_signal().context("cannot listen for SIGTERM")?;
        let durability = match config.store.durability {
            config::Durability::Full => Durability::Full,
            config::Durability::Normal => Durability::Normal,
        };
        let retention_days = config.store.retention_days;
        // Absolute in the log and in errors: a relative --data-dir is taken
        // from the directory the command was run in, which whoever reads
        // the log may not know.
        let data_dir = std::path::absolute(&args.data_dir)
            .with_context(|| format!("cannot resolve the data directory {}", args.data_dir.display()))?;
        let db = data_dir.join(backup::STORE_FILE);
        match backup::restore_from_copy(&data_dir) {
            Ok(Restored::FromCopy) => tracing::warn!(
                copy = backup::COPY_FILE,
                "the message store was restored from a backup: its copy is the store now"
            ),
            Ok(Restored::CopyRemoved) => tracing::info!(
                copy = backup::COPY_FILE,
                "removed an older copy of the message store (the store beside it is newer)"
            ),
            Ok(_) => {}
            Err(e) => return Err(e).context("cannot restore the message store from its backup copy"),
        }
        let low_background_priority = config.store.background_priority == config::BackgroundPriority::Low;
        let (store, recovered) = Store::open(&db, StoreOptions { durability, low_background_priority })
            .with_context(|| format!("cannot open the message store {}", db.display()))?;
        if recovered > 0 {
            tracing::warn!(recovered, "messages that were being delivered when the engine stopped are queued again");
        }
        let options = EngineOptions { certificate_warning_days: warning_days, ..EngineOptions::default() };
        let engine = Engine::with_options(config, store, options)?;
        let web = match web_options {
            Some(options) => Some(crate::web::bind(options).await?),
            None => None,
        };
        engine.start().await;
        tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, store = %db.display(), "ready");
        let purge = tokio::spawn(purge_loop(engine.clone(), retention_days));
        let bridge = crate::ha::start(engine.clone(), ha_settings);
        let web = web.map(|listeners| listeners.serve(engine.clone(), Some(bridge.watch_status())));
        stop.await;
        tracing::info!("shutting down");
        purge.abort();
        bridge.refuse_commands();
        if let Some(web) = web {
            web.shutdown().await;
        }
        engine.shutdown().await;
        bridge.shutdown().await;
        if args.backup_copy_at_stop {
            keep_copy_at_rest(&engine, &data_dir);
        }
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// The productions file in the configuration folder when the options file
/// names none.
const DEFAULT_PRODUCTIONS_FILE: &str = "productions.yaml";

/// The productions file to run: `--config`, or the options file's
/// `productions_file` (else `productions.yaml`) in `--config-dir`. There,
/// and only there, a missing file is the add-on's first start: a commented
/// example is written, so that a new user sees a device in Home Assistant
/// at once. A `--config` that does not exist stays an error, since whoever
/// typed it meant a file that is not there. `None` when the error has been
/// printed.
fn productions_path(args: &RunArgs, options: &AddonOptions) -> anyhow::Result<Option<PathBuf>> {
    if let Some(path) = &args.config {
        return Ok(Some(path.clone()));
    }
    let Some(dir) = &args.config_dir else {
        errln!(
            "error: no productions file: give --config FILE (SWITCHBOARD_CONFIG), or --config-dir DIR \
             (SWITCHBOARD_CONFIG_DIR) to run DIR/{DEFAULT_PRODUCTIONS_FILE}"
        );
        return Ok(None);
    };
    let path = dir.join(options.productions_file.as_deref().unwrap_or(DEFAULT_PRODUCTIONS_FILE));
    if !path.exists() {
        super::first_run::write_example(&path)?;
        tracing::warn!(
            file = %path.display(),
            "no productions file yet: wrote a commented example there, which runs as it is; edit it and restart"
        );
    }
    Ok(Some(path))
}

/// The port the ingress proxy connects to under the Supervisor.
const INGRESS_PORT: u16 = 8099;
/// The Supervisor's ingress proxy.
const INGRESS_PROXY: &str = "172.30.32.2";

/// The web server's settings from the flags and the options file, or
/// `None` when it is off. A flag (or its variable) wins over the options
/// file; the file's `web_allow` adds to the default sources rather than
/// replacing them, so that listing another source in the add-on's
/// Configuration tab cannot shut out the ingress proxy.
fn web_options(
    flags: &super::WebFlags,
    options: &AddonOptions,
    supervised: bool,
    retention_days: u32,
) -> anyhow::Result<Option<crate::web::WebOptions>> {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    let api_port = flags.api_port.or(options.api_port);
    let Some(port) = flags.web_port.or(supervised.then_some(INGRESS_PORT)) else {
        if api_port.is_some() {
            anyhow::bail!("--api-port needs the web server: set --web-port (SWITCHBOARD_WEB_PORT) too");
        }
        return Ok(None);
    };
    let host = flags.web_host.unwrap_or(if supervised {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    });
    let default_allow: &[&str] = if supervised { &[INGRESS_PROXY] } else { &["127.0.0.1", "::1"] };
    let written: Vec<String> = match &flags.web_allow {
        Some(list) => list.iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect(),
        None => default_allow.iter().map(|s| (*s).to_owned()).chain(options.web_allow.iter().cloned()).collect(),
    };
    let allow = if written.iter().any(|s| s.eq_ignore_ascii_case("any")) {
        None
    } else {
        let nets = written
            .iter()
            .map(|s| s.parse::<crate::web::IpNet>().map_err(|e| anyhow::anyhow!("--web-allow: {e}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Some(nets)
    };
    let too_short = |n: usize, source: &str| {
        anyhow::anyhow!(
            "API token {n} in {source} is shorter than 16 characters; use long random tokens (e.g. `openssl rand -hex 24`)"
        )
    };
    let mut tokens = Vec::new();
    let from_env = std::env::var(&flags.api_tokens_env).ok().filter(|t| !t.trim().is_empty());
    if let Some(text) = from_env {
        for (n, part) in text.split([',', '\n']).map(str::trim).filter(|p| !p.is_empty()).enumerate() {
            tokens.push(crate::web::Token::new(part).ok_or_else(|| too_short(n + 1, &flags.api_tokens_env))?);
        }
    } else {
        for (n, token) in options.api_tokens.iter().enumerate() {
            tokens
                .push(crate::web::Token::new(token.expose()).ok_or_else(|| too_short(n + 1, "the option api_tokens"))?);
        }
    }
    if api_port.is_some() && tokens.is_empty() {
        anyhow::bail!(
            "--api-port needs API tokens: put them in the environment variable {}, comma-separated (in the add-on: \
             the option api_tokens)",
            flags.api_tokens_env
        );
    }
    let cors_origins = flags.web_cors_origins.iter().map(|o| o.trim().to_owned()).filter(|o| !o.is_empty()).collect();
    Ok(Some(crate::web::WebOptions {
        listen: SocketAddr::new(host, port),
        allow,
        direct: api_port.map(|p| SocketAddr::new(host_for_direct(host), p)),
        tokens,
        cors_origins,
        retention_days,
    }))
}

/// The direct listener is for other machines: it listens on every address
/// unless the web UI was pinned to one.
fn host_for_direct(web_host: std::net::IpAddr) -> std::net::IpAddr {
    if web_host.is_loopback() { web_host } else { std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED) }
}

/// After a graceful stop, the store's file under the copy's name too (see
/// [`backup::keep_copy_at_rest`]), unless the store could not commit
/// everything it took (then the copy would lack it, and a backup taken
/// while stopped is better without one).
fn keep_copy_at_rest(engine: &Engine, data_dir: &std::path::Path) {
    if let Some(trouble) = engine.store().commit_trouble().borrow().clone() {
        tracing::warn!(
            reason = %trouble,
            "the message store is not kept for backups taken while stopped: it could not commit everything"
        );
        return;
    }
    if let Err(e) = backup::keep_copy_at_rest(data_dir) {
        tracing::warn!(error = %e, "the message store is not kept for backups taken while stopped");
    }
}

async fn purge_loop(engine: Engine, retention_days: u32) {
    if retention_days == 0 {
        return;
    }
    loop {
        let cutoff = SystemTime::now() - Duration::from_secs(u64::from(retention_days) * 86_400);
        match engine.store().purge(cutoff, PURGE_BATCH).await {
            Ok(stats) if stats.headers + stats.bodies + stats.events > 0 => {
                tracing::info!(
                    headers = stats.headers,
                    bodies = stats.bodies,
                    events = stats.events,
                    "purged old messages"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "purge failed"),
        }
        tokio::time::sleep(PURGE_EVERY).await;
    }
}

/// Listens for Ctrl-C and SIGTERM from now on. A signal that arrives while
/// the engine is still starting is kept, and stops it gracefully once it
/// has started, rather than killing the process midway, as the signal's
/// default would (the Supervisor stops an add-on that way whenever it
/// likes, a start just under way included).
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

fn init_tracing(filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("invalid log filter {filter:?}; use e.g. info, debug or switchboard=debug,warn"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    Ok(())
}
