//! `switchboard tls`: the certificate doctor, certificate inspection and a
//! test PKI.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::config;
use crate::tls::pki::{CertificateAuthority, CertificateRequest, KeyType};
use crate::tls::{self, CertificateInfo, Severity, TlsReport};

/// Arguments of `switchboard tls`.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: TlsCommand,
}

/// The `switchboard tls` subcommands.
#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// The certificate doctor: check the TLS configurations of a productions
    /// file (files, key/certificate match, chain, expiry, key usage, host
    /// names, key file permissions). Exits with status 1 when any
    /// configuration has an error.
    Check(CheckTlsArgs),
    /// Print the certificates of a PEM (or DER) file or folder.
    Inspect(InspectArgs),
    /// Create a certificate authority for testing: writes ca.crt and ca.key
    /// (mode 0600) into a folder.
    NewCa(NewCaArgs),
    /// Issue a certificate signed by a certificate authority (for example
    /// one made by `new-ca`), with a new key.
    NewCert(NewCertArgs),
}

/// Arguments of `switchboard tls check`.
#[derive(Debug, Args)]
pub struct CheckTlsArgs {
    /// The productions file.
    #[arg(long, short, env = "SWITCHBOARD_CONFIG")]
    pub config: PathBuf,
    /// The configurations to check (names under `tls:`); default all.
    pub names: Vec<String>,
    /// A certificate that expires within this many days is a warning.
    // Named as for `run` and `check`. `--warn-days`, its former name, is
    // still accepted (and not shown) so that existing scripts keep working.
    #[arg(long, alias = "warn-days", env = "SWITCHBOARD_CERTIFICATE_WARNING_DAYS", default_value_t = 30)]
    pub certificate_warning_days: u32,
    /// Print the reports as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `switchboard tls inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A PEM certificate or bundle, a DER certificate, or a folder of PEM files.
    pub file: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `switchboard tls new-ca`.
#[derive(Debug, Args)]
pub struct NewCaArgs {
    /// The folder to write ca.crt and ca.key into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// The authority's common name.
    #[arg(long, default_value = "Switchboard test CA")]
    pub name: String,
    /// Validity in days.
    #[arg(long, default_value_t = 3650)]
    pub days: u32,
    /// Key algorithm: ecdsa-p256, ed25519 or rsa2048.
    #[arg(long, default_value = "ecdsa-p256")]
    pub key_type: KeyType,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `switchboard tls new-cert`.
#[derive(Debug, Args)]
pub struct NewCertArgs {
    /// The certificate of the issuing authority.
    #[arg(long)]
    pub ca_cert: PathBuf,
    /// The private key of the issuing authority.
    #[arg(long)]
    pub ca_key: PathBuf,
    /// The environment variable that holds the password of an encrypted CA key.
    #[arg(long)]
    pub ca_key_password_env: Option<String>,
    /// Where to write the new certificate.
    #[arg(long)]
    pub out_cert: PathBuf,
    /// Where to write the new private key (mode 0600).
    #[arg(long)]
    pub out_key: PathBuf,
    /// The common name (CN).
    #[arg(long)]
    pub name: String,
    /// A subject alternative name: a DNS name or an IP address. Repeat for
    /// several. Default: the common name.
    #[arg(long = "san")]
    pub sans: Vec<String>,
    /// For servers: add the serverAuth extended key usage.
    #[arg(long)]
    pub server: bool,
    /// For clients: add the clientAuth extended key usage. Without --server
    /// and --client, both are added (mutual TLS on either side).
    #[arg(long)]
    pub client: bool,
    /// Validity in days.
    #[arg(long, default_value_t = 825)]
    pub days: u32,
    /// Key algorithm: ecdsa-p256, ed25519 or rsa2048.
    #[arg(long, default_value = "ecdsa-p256")]
    pub key_type: KeyType,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
}

/// Runs `switchboard tls ...`.
pub(super) fn run(args: &TlsArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        TlsCommand::Check(args) => check(args),
        TlsCommand::Inspect(args) => inspect(args),
        TlsCommand::NewCa(args) => new_ca(args),
        TlsCommand::NewCert(args) => new_cert(args),
    }
}

fn check(args: &CheckTlsArgs) -> anyhow::Result<ExitCode> {
    let config = config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    if config.tls.is_empty() {
        outln!("{}: no TLS configurations (add them under `tls:`)", config.source.display())?;
        return Ok(ExitCode::SUCCESS);
    }
    for name in &args.names {
        if !config.tls.contains_key(name) {
            let defined: Vec<&str> = config.tls.keys().map(String::as_str).collect();
            anyhow::bail!("there is no TLS configuration named `{name}`; defined: {}", defined.join(", "));
        }
    }
    let reports: Vec<TlsReport> = tls::check_all(&config, args.certificate_warning_days)
        .into_iter()
        .filter(|r| args.names.is_empty() || args.names.contains(&r.name))
        .collect();
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&reports)?)?;
    } else {
        for (i, report) in reports.iter().enumerate() {
            if i > 0 {
                outln!()?;
            }
            out!("{}", render_report(report))?;
        }
    }
    let failed = reports.iter().filter(|r| r.has_errors()).count();
    if !args.json {
        outln!()?;
        if failed == 0 {
            outln!("{} TLS configuration(s) checked: no errors", reports.len())?;
        } else {
            outln!("{} TLS configuration(s) checked: {failed} with errors", reports.len())?;
        }
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The text of one report: the chain, then the verdicts.
pub fn render_report(report: &TlsReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "{} ({})", report.name, report.role);
    if report.chain.is_empty() {
        let _ = writeln!(out, "  certificate: none");
    } else {
        let _ = writeln!(out, "  certificate chain (as presented):");
        for (i, cert) in report.chain.iter().enumerate() {
            let _ = writeln!(out, "    {}. {}", i + 1, cert.subject);
            let _ = writeln!(out, "       issuer:  {}", cert.issuer);
            let _ = writeln!(
                out,
                "       valid:   {} to {}",
                tls::format_time(cert.not_before),
                tls::format_time(cert.not_after)
            );
            let sans = cert.subject_alt_names();
            if !sans.is_empty() {
                let _ = writeln!(out, "       names:   {}", sans.join(", "));
            }
            let _ = writeln!(out, "       SHA-256: {}", cert.sha256_fingerprint);
        }
    }
    if !report.ca_certificates.is_empty() {
        let _ = writeln!(out, "  trusted authorities (ca_file): {}", report.ca_certificates.len());
        for cert in &report.ca_certificates {
            let _ = writeln!(out, "    - {} (until {})", cert.subject, tls::format_time(cert.not_after));
        }
    }
    let _ = writeln!(out, "  verdict:");
    for finding in &report.findings {
        let mark = match finding.severity {
            Severity::Ok => "ok     ",
            Severity::Warning => "WARNING",
            Severity::Error => "ERROR  ",
        };
        let _ = writeln!(out, "    {mark} {}", finding.message);
    }
    out
}

fn inspect(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let certs = tls::read_certificates(&args.file)
        .map_err(|e| anyhow::anyhow!("{}", e.kind))
        .with_context(|| format!("{}", args.file.display()))?;
    let infos = certs
        .iter()
        .enumerate()
        .map(|(i, c)| CertificateInfo::parse(c).map_err(|e| anyhow::anyhow!("certificate {}: {e}", i + 1)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&infos)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let now = time::OffsetDateTime::now_utc();
    for (i, info) in infos.iter().enumerate() {
        if infos.len() > 1 {
            outln!("certificate {} of {}", i + 1, infos.len())?;
        }
        outln!("{info}")?;
        let days = info.days_left(now);
        if now > info.not_after {
            outln!("status:       EXPIRED")?;
        } else if now < info.not_before {
            outln!("status:       NOT YET VALID")?;
        } else {
            outln!("status:       valid, {days} day(s) left")?;
        }
        if i + 1 < infos.len() {
            let next = &infos[i + 1];
            if !info.issued_by(next) && !info.self_signed {
                outln!("note:         the next certificate is not this one's issuer")?;
            }
            outln!()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn new_ca(args: &NewCaArgs) -> anyhow::Result<ExitCode> {
    let (_, issued) = CertificateAuthority::new_root(&args.name, args.days, args.key_type)?;
    let cert = args.out.join("ca.crt");
    let key = args.out.join("ca.key");
    issued.write(&cert, &key, args.force)?;
    outln!("wrote {} (give it to peers as their ca_file)", cert.display())?;
    outln!("wrote {} (keep it private: it signs certificates)", key.display())?;
    Ok(ExitCode::SUCCESS)
}

fn new_cert(args: &NewCertArgs) -> anyhow::Result<ExitCode> {
    let ca = CertificateAuthority::load(&args.ca_cert, &args.ca_key, args.ca_key_password_env.as_deref())?;
    let mut request = CertificateRequest::new(&args.name, args.days);
    request.subject_alt_names = if args.sans.is_empty() { vec![args.name.clone()] } else { args.sans.clone() };
    if args.server || args.client {
        request.server_auth = args.server;
        request.client_auth = args.client;
    }
    request.key_type = args.key_type;
    let issued = ca.issue(&request)?;
    issued.write(&args.out_cert, &args.out_key, args.force)?;
    let usages: Vec<&str> = [(request.server_auth, "serverAuth"), (request.client_auth, "clientAuth")]
        .into_iter()
        .filter(|u| u.0)
        .map(|u| u.1)
        .collect();
    outln!(
        "wrote {} ({}; names: {})",
        args.out_cert.display(),
        usages.join(" + "),
        request.subject_alt_names.join(", ")
    )?;
    outln!("wrote {} (mode 0600)", args.out_key.display())?;
    Ok(ExitCode::SUCCESS)
}
