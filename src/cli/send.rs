//! `switchboard send`: deliver files of messages over MLLP and report each
//! ACK, or replay them as a load generator.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::SendArgs;
use super::input::Input;
use crate::config::{TlsConfig, TlsRole, TlsVersion, VerifyPeer};
use crate::hl7::{Message, Path, Reply};
use crate::mllp::{ClientError, ClientTls, MllpClient};
use crate::tls::TlsConfigHandle;

/// What `send` needs, independent of the command line.
#[derive(Clone)]
pub(super) struct SendOptions {
    /// `host:port` of the listener.
    pub addr: String,
    /// Connect and reply timeout.
    pub timeout: Duration,
    /// TLS, when asked for.
    pub tls: Option<ClientTls>,
}

/// The TLS client settings the flags ask for, if any.
fn client_tls(args: &SendArgs) -> anyhow::Result<Option<ClientTls>> {
    let (name, config) = if let (Some(name), Some(file)) = (&args.tls_config, &args.config) {
        let config = crate::config::load(file).map_err(|e| anyhow::anyhow!("{e}"))?;
        let tls = config.tls.get(name).cloned().with_context(|| {
            let known: Vec<&String> = config.tls.keys().collect();
            format!("{} has no TLS configuration {name:?} (it has {known:?})", file.display())
        })?;
        (name.clone(), tls)
    } else if args.ca.is_some() || args.cert.is_some() {
        let tls = TlsConfig {
            role: TlsRole::Client,
            ca_file: args.ca.clone(),
            cert_file: args.cert.clone(),
            key_file: args.key.clone(),
            key_password_env: None,
            key_password_file: None,
            verify_peer: VerifyPeer::Require,
            verify_host: true,
            server_name: args.server_name.clone(),
            min_version: TlsVersion::default(),
            create_if_missing: false,
        };
        ("command line".to_owned(), tls)
    } else {
        return Ok(None);
    };
    if config.role != TlsRole::Client {
        bail!("TLS configuration {name:?} has role server; `send` needs a client configuration");
    }
    let handle = TlsConfigHandle::load(&name, &config)?;
    let host = args.server_name.as_deref().unwrap_or(&args.host);
    Ok(Some(ClientTls { connector: handle.connector()?, server_name: handle.server_name(host)? }))
}

/// A message read from a file, with where MSH-10 sits so that load mode can
/// splice in fresh control ids without re-parsing.
struct Template {
    bytes: Vec<u8>,
    control_id: std::ops::Range<usize>,
}

impl Template {
    fn with_control_id(&self, id: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes.len() + id.len());
        out.extend_from_slice(&self.bytes[..self.control_id.start]);
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&self.bytes[self.control_id.end..]);
        out
    }
}

/// The messages of the files, in order, each as it goes on the wire.
fn load_templates(files: &[PathBuf]) -> anyhow::Result<Vec<Template>> {
    let mut templates = Vec::new();
    for file in files {
        let input = Input::read(file)?;
        let batch = input.messages()?;
        for n in 0..batch.messages.len() {
            let bytes = wire_form(&input.parse(&batch, n)?);
            // Parsed again for where MSH-10 sits in what is sent.
            let msg = Message::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: message {}: {e}", input.name, n + 1))?;
            let control_id = msg
                .range(&Path::field("MSH", 10))
                .with_context(|| format!("{}: message {} has no MSH-10 field", input.name, n + 1))?;
            templates.push(Template { bytes, control_id });
        }
    }
    if templates.is_empty() {
        bail!("no messages in the given files");
    }
    Ok(templates)
}

/// A message as HL7 sends it: each segment ended by a CR. A file may end
/// its lines with CR, LF or CR LF, hold empty lines, and have a final line
/// ending or not; the receiver gets the segments `parse` shows, each with
/// the CR the standard asks for, and a file written with CRs goes out byte
/// for byte.
fn wire_form(msg: &Message<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.raw().len() + 1);
    for segment in msg.segments() {
        out.extend_from_slice(segment.raw());
        out.push(b'\r');
    }
    out
}

pub(super) fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    let templates = load_templates(&args.files)?;
    let options =
        SendOptions { addr: format!("{}:{}", args.host, args.port), timeout: args.timeout, tls: client_tls(&args)? };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match args.count {
        None => runtime.block_on(send_each(&options, &templates)),
        Some(count) => {
            let report = runtime.block_on(load(&options, Arc::new(templates), count, args.concurrency))?;
            outln!("{report}")?;
            Ok(if report.is_clean() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

/// Sends each message once, in order, on one connection, printing a line per
/// message.
async fn send_each(options: &SendOptions, templates: &[Template]) -> anyhow::Result<ExitCode> {
    let mut client = MllpClient::connect_with(&options.addr, options.timeout, options.tls.as_ref()).await?;
    let mut ok = true;
    for template in templates {
        let sent_id = String::from_utf8_lossy(&template.bytes[template.control_id.clone()]).into_owned();
        let started = Instant::now();
        let outcome = client.exchange(&template.bytes, options.timeout).await;
        let rtt = started.elapsed();
        match outcome.map(|reply| judge(&reply, &sent_id)) {
            Ok(Verdict { code, text, positive, id_matches }) => {
                let note = if id_matches { String::new() } else { "  (MSA-2 does not match MSH-10)".to_owned() };
                outln!("{sent_id}\t{code}\t{:.1} ms\t{}{note}", rtt.as_secs_f64() * 1e3, text.unwrap_or_default())?;
                ok &= positive && id_matches;
            }
            Err(e) => {
                let hint = hint(&e, options.tls.is_some());
                outln!("{sent_id}\terror\t{:.1} ms\t{e}{hint}", rtt.as_secs_f64() * 1e3)?;
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// What to try when a plain connection ended before any reply: a TLS
/// listener closes it that way when it reads a plaintext frame where it
/// expects a handshake.
fn hint(error: &ClientError, tls: bool) -> &'static str {
    let ended = matches!(error, ClientError::Closed | ClientError::Mllp(crate::mllp::MllpError::Io(_)));
    match (ended, tls) {
        (true, false) => " (the peer may expect TLS: try --ca, or --tls-config with --config)",
        _ => "",
    }
}

struct Verdict {
    code: String,
    text: Option<String>,
    positive: bool,
    id_matches: bool,
}

fn judge(reply: &[u8], sent_id: &str) -> Verdict {
    match Message::parse(reply) {
        Ok(msg) => {
            let reply = Reply::read(&msg);
            Verdict {
                code: reply.acknowledgment_code().unwrap_or("(no MSA)").to_owned(),
                text: reply.text().map(str::to_owned),
                positive: reply.is_positive(),
                id_matches: reply.acknowledged_control_id() == Some(sent_id),
            }
        }
        Err(e) => {
            Verdict { code: "(unreadable)".into(), text: Some(e.to_string()), positive: false, id_matches: false }
        }
    }
}

/// Throughput and latency of a load run.
#[derive(Debug)]
pub(super) struct LoadReport {
    /// Messages whose ACK was positive and matched the control id.
    pub positive: u64,
    /// Messages answered negatively (or with a mismatching MSA-2).
    pub negative: u64,
    /// Messages lost to timeouts or connection errors.
    pub errors: u64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Round-trip times of answered messages, sorted.
    pub latencies: Vec<Duration>,
    /// Number of connections.
    pub concurrency: u16,
}

impl LoadReport {
    /// True when every message got a positive ACK.
    pub(super) fn is_clean(&self) -> bool {
        self.negative == 0 && self.errors == 0
    }

    /// The latency below which `p` percent of answered messages fall.
    pub(super) fn percentile(&self, p: f64) -> Option<Duration> {
        let last = self.latencies.len().checked_sub(1)?;
        let idx = ((p / 100.0) * last as f64).round() as usize;
        self.latencies.get(idx.min(last)).copied()
    }

    /// Answered messages per second.
    pub(super) fn throughput(&self) -> f64 {
        (self.positive + self.negative) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
        writeln!(
            f,
            "sent {} messages on {} connection(s) in {:.3} s: {} positive, {} negative, {} errors",
            self.positive + self.negative + self.errors,
            self.concurrency,
            self.elapsed.as_secs_f64(),
            self.positive,
            self.negative,
            self.errors
        )?;
        writeln!(f, "throughput {:.0} msgs/s", self.throughput())?;
        write!(
            f,
            "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            ms(self.percentile(50.0)),
            ms(self.percentile(90.0)),
            ms(self.percentile(99.0)),
            ms(self.percentile(99.9)),
            ms(self.latencies.last().copied())
        )?;
        if let Some(e) = &self.first_error {
            write!(f, "\nfirst error: {e}")?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct WorkerTally {
    positive: u64,
    negative: u64,
    errors: u64,
    first_error: Option<String>,
    latencies: Vec<Duration>,
}

/// Sends `count` messages over `concurrency` connections, cycling through
/// the templates, each with a fresh control id.
async fn load(
    options: &SendOptions,
    templates: Arc<Vec<Template>>,
    count: u64,
    concurrency: u16,
) -> anyhow::Result<LoadReport> {
    let next = Arc::new(AtomicU64::new(0));
    // A run prefix keeps control ids unique across runs against one engine.
    let run =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) & 0xffff_ffff;
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (next, templates, options) = (next.clone(), templates.clone(), options.clone());
        workers.push(tokio::spawn(async move {
            let mut tally = WorkerTally::default();
            let mut client = match MllpClient::connect_with(&options.addr, options.timeout, options.tls.as_ref()).await
            {
                Ok(c) => c,
                Err(e) => {
                    tally.first_error = Some(e.to_string());
                    return tally;
                }
            };
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    break;
                }
                let id = format!("SB{run:08x}{n}");
                let message = templates[(n % templates.len() as u64) as usize].with_control_id(&id);
                let sent = Instant::now();
                match client.exchange(&message, options.timeout).await {
                    Ok(reply) => {
                        tally.latencies.push(sent.elapsed());
                        let verdict = judge(&reply, &id);
                        if verdict.positive && verdict.id_matches {
                            tally.positive += 1;
                        } else {
                            tally.negative += 1;
                        }
                    }
                    Err(e) => {
                        tally.errors += 1;
                        let hint = hint(&e, options.tls.is_some());
                        tally.first_error.get_or_insert_with(|| format!("{e}{hint}"));
                        // After a timeout a late reply would be taken for the
                        // next message's: this connection is done.
                        break;
                    }
                }
            }
            tally
        }));
    }
    let mut report = LoadReport {
        positive: 0,
        negative: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        latencies: Vec::with_capacity(count.min(10_000_000) as usize),
        concurrency,
    };
    for worker in workers {
        let tally = worker.await.context("load worker failed")?;
        report.positive += tally.positive;
        report.negative += tally.negative;
        report.errors += tally.errors;
        if report.first_error.is_none() {
            report.first_error = tally.first_error;
        }
        report.latencies.extend(tally.latencies);
    }
    report.elapsed = started.elapsed();
    // Messages no worker could send (all connections failed) count as errors.
    let answered = report.positive + report.negative + report.errors;
    report.errors += count.saturating_sub(answered).min(count);
    report.latencies.sort_unstable();
    Ok(report)
}
