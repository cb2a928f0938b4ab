//! The certificate doctor: everything that can be checked about a TLS
//! configuration without connecting anywhere, and the expiry data of the
//! status hub.

use std::fmt;
use std::path::Path;

use rustls::CertificateError;
use rustls_pki_types::{CertificateDer, UnixTime};
use serde::Serialize;
use time::OffsetDateTime;

use super::error::{TlsError, TlsErrorKind};
use super::inspect::CertificateInfo;
use super::pem::{self, PasswordSource};
use crate::config::{Config, ItemKind, TlsConfig, TlsRole, VerifyPeer};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// A check that passed.
    Ok,
    /// Works today but needs attention (expires soon, loose permissions,
    /// chain a peer may not be able to build).
    Warning,
    /// Handshakes fail or will fail: fix before relying on the feed.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Ok => "ok",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// What a finding is about, so that programs (tests, the web UI) need not
/// read the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FindingKind {
    /// A file cannot be read or parsed, or the key cannot be decrypted.
    Unreadable,
    /// A certificate is inside its validity period (ok finding).
    Valid,
    /// A certificate of the chain has expired.
    Expired,
    /// A certificate of the chain is not valid yet.
    NotYetValid,
    /// A certificate of the chain expires within the warning period.
    ExpiresSoon,
    /// The private key belongs to the certificate (ok finding).
    KeyMatches,
    /// The private key belongs to another certificate.
    KeyMismatch,
    /// The key file may be read by other users.
    KeyFileReadableByOthers,
    /// The chain builds to an authority of `ca_file` (ok finding).
    ChainTrusted,
    /// The chain lacks an intermediate: the issuer of its last certificate is
    /// in neither `cert_file` nor (as a root) `ca_file`.
    ChainIncomplete,
    /// The chain ends with a root that is not in `ca_file`.
    ChainUntrusted,
    /// The certificates of `cert_file` are not leaf first, then each issuer.
    ChainOutOfOrder,
    /// The chain does not verify for another reason (bad signature...).
    ChainInvalid,
    /// `ca_file` holds a certificate that is not a certificate authority.
    CaFileHoldsLeaf,
    /// A certificate of `ca_file` has expired.
    CaExpired,
    /// The certificate allows the usage its role needs (ok finding).
    UsageOk,
    /// A server certificate without the `serverAuth` extended key usage.
    MissingServerAuth,
    /// A client certificate without the `clientAuth` extended key usage.
    MissingClientAuth,
    /// The certificate names the host (ok finding).
    HostMatches,
    /// Host verification is on but the certificate does not name the host.
    HostMismatch,
    /// A client checks nothing about the server (`verify_peer: none`).
    PeerNotVerified,
    /// The files changed while the engine ran but cannot be used: the
    /// configuration loaded before them is still in force.
    NotInForce,
}

/// One verdict of the doctor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Finding {
    /// How bad it is.
    pub severity: Severity,
    /// What it is about.
    pub kind: FindingKind,
    /// What was found and, for problems, what to do.
    pub message: String,
}

/// The doctor's report on one TLS configuration.
#[derive(Debug, Clone, Serialize)]
pub struct TlsReport {
    /// The configuration's name under `tls:`.
    pub name: String,
    /// `client` or `server`.
    pub role: String,
    /// The chain of `cert_file` as the peer sees it, leaf first.
    pub chain: Vec<CertificateInfo>,
    /// The certificates of `ca_file`.
    pub ca_certificates: Vec<CertificateInfo>,
    /// Every verdict, problems and passed checks alike.
    pub findings: Vec<Finding>,
    /// When the check ran.
    #[serde(serialize_with = "super::rfc3339")]
    pub checked_at: OffsetDateTime,
}

impl TlsReport {
    /// Whether any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    /// The findings of this kind.
    pub fn findings_of(&self, kind: FindingKind) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.kind == kind)
    }

    /// Whether a finding of this kind was made.
    pub fn has(&self, kind: FindingKind) -> bool {
        self.findings_of(kind).next().is_some()
    }

    /// The errors and warnings.
    pub fn problems(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.severity != Severity::Ok)
    }

    /// The expiry data the status hub publishes for this configuration.
    pub fn status(&self) -> CertificateStatus {
        let leaf = self.chain.first();
        let certs = if self.chain.is_empty() { &self.ca_certificates } else { &self.chain };
        let earliest = certs.iter().min_by_key(|c| c.not_after);
        CertificateStatus {
            name: self.name.clone(),
            role: self.role.clone(),
            subject: leaf.map(|c| c.subject.clone()),
            issuer: leaf.map(|c| c.issuer.clone()),
            serial: leaf.map(|c| c.serial.clone()),
            subject_alt_names: leaf.map(CertificateInfo::subject_alt_names).unwrap_or_default(),
            sha256_fingerprint: leaf.map(|c| c.sha256_fingerprint.clone()),
            not_after: leaf.map(|c| c.not_after),
            earliest_not_after: earliest.map(|c| c.not_after),
            earliest_expiring: earliest.map(|c| c.subject.clone()),
            days_left: earliest.map(|c| c.days_left(self.checked_at)),
            problem: self.problems().next().is_some(),
            problems: self.problems().cloned().collect(),
            checked_at: self.checked_at,
        }
    }
}

/// Certificate expiry and health of one TLS configuration, as the status hub
/// publishes it (Home Assistant: an expiry timestamp sensor, a days-left
/// sensor and a problem binary sensor with these fields as attributes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CertificateStatus {
    /// The configuration's name under `tls:`.
    pub name: String,
    /// `client` or `server`.
    pub role: String,
    /// Subject of the leaf certificate (`cert_file`), if any.
    pub subject: Option<String>,
    /// Issuer of the leaf certificate.
    pub issuer: Option<String>,
    /// Serial number of the leaf certificate.
    pub serial: Option<String>,
    /// Subject alternative names of the leaf, as `DNS:name` and `IP:address`.
    pub subject_alt_names: Vec<String>,
    /// SHA-256 fingerprint of the leaf.
    pub sha256_fingerprint: Option<String>,
    /// End of validity of the leaf.
    #[serde(serialize_with = "super::rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub not_after: Option<OffsetDateTime>,
    /// The earliest end of validity across the leaf and its chain (for a
    /// client without a certificate: across `ca_file`), the date a feed stops
    /// if nothing is renewed.
    #[serde(serialize_with = "super::rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub earliest_not_after: Option<OffsetDateTime>,
    /// Subject of the certificate that expires first.
    pub earliest_expiring: Option<String>,
    /// Whole days until `earliest_not_after`; negative once expired.
    pub days_left: Option<i64>,
    /// Whether there is any error or warning.
    pub problem: bool,
    /// The errors and warnings.
    pub problems: Vec<Finding>,
    /// When the files were checked.
    #[serde(serialize_with = "super::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub checked_at: OffsetDateTime,
}

/// Checks the TLS configuration `name`.
///
/// `warn_days`: a certificate expiring within this many days is a warning.
/// `hosts`: for `role: server`, the names clients connect with, which the
/// certificate must carry; for `role: client`, the hosts connected to (the
/// `host` of the `mllp_out` items that use it), which the server's
/// certificate must carry when `verify_host` is on — checked here when that
/// certificate is known locally (a certificate pinned in `ca_file`);
/// [`check_all`] also matches servers of the same productions file.
pub fn check(name: &str, config: &TlsConfig, warn_days: u32, hosts: &[String]) -> TlsReport {
    check_at(name, config, warn_days, hosts, &[], OffsetDateTime::now_utc())
}

/// Checks every TLS configuration of a productions file, with the hosts its
/// items connect to, in name order.
///
/// For a client configuration, the hosts are those of the `mllp_out` items
/// that use it. When such an item connects to this machine (`localhost`,
/// a loopback address) on the port of an `mllp_in` item of the file, the
/// server configuration of that `mllp_in` is known, so its certificate is
/// checked against the host (and listed under both configurations).
pub fn check_all(config: &Config, warn_days: u32) -> Vec<TlsReport> {
    let now = OffsetDateTime::now_utc();
    let items: Vec<&ItemKind> = config.productions.iter().flat_map(|p| p.items.iter().map(|i| &i.kind)).collect();
    let listeners: Vec<(u16, &str)> = items
        .iter()
        .filter_map(|k| match k {
            ItemKind::MllpIn(c) => c.tls.as_deref().map(|t| (c.port, t)),
            _ => None,
        })
        .collect();
    let mut server_hosts: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    let mut client_hosts: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    let mut client_peers: std::collections::BTreeMap<&str, Vec<CertificateDer<'static>>> = Default::default();
    for kind in &items {
        let ItemKind::MllpOut(out) = kind else { continue };
        let Some(client) = out.tls.as_deref() else { continue };
        let hosts = client_hosts.entry(client).or_default();
        if !hosts.contains(&out.host) {
            hosts.push(out.host.clone());
        }
        let Some(client_config) = config.tls.get(client) else { continue };
        if !is_local(&out.host) || !client_config.verify_host || client_config.verify_peer == VerifyPeer::None {
            continue;
        }
        for (_, server) in listeners.iter().filter(|(port, _)| *port == out.port) {
            let name = client_config.server_name.clone().unwrap_or_else(|| out.host.clone());
            let list = server_hosts.entry(server).or_default();
            if !list.contains(&name) {
                list.push(name);
            }
            if let Some(server_config) = config.tls.get(*server)
                && let Some(cert_file) = &server_config.cert_file
                && let Ok(chain) = pem::certificates_in_file(server, cert_file, "certificate file")
                && let Some(leaf) = chain.into_iter().next()
            {
                client_peers.entry(client).or_default().push(leaf);
            }
        }
    }
    config
        .tls
        .iter()
        .map(|(name, tls)| {
            let (hosts, peers) = match tls.role {
                TlsRole::Server => (server_hosts.get(name.as_str()).cloned().unwrap_or_default(), Vec::new()),
                TlsRole::Client => (
                    client_hosts.get(name.as_str()).cloned().unwrap_or_default(),
                    client_peers.get(name.as_str()).cloned().unwrap_or_default(),
                ),
            };
            check_at(name, tls, warn_days, &hosts, &peers, now)
        })
        .collect()
}

fn is_local(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

struct Doctor {
    findings: Vec<Finding>,
}

impl Doctor {
    fn push(&mut self, severity: Severity, kind: FindingKind, message: impl Into<String>) {
        self.findings.push(Finding { severity, kind, message: message.into() });
    }

    fn unreadable(&mut self, error: &TlsError) {
        let message = match &error.file {
            Some(file) => format!("{}: {}", file.display(), error.kind),
            None => error.kind.to_string(),
        };
        self.push(Severity::Error, FindingKind::Unreadable, message);
    }
}

fn describe(index: usize, cert: &CertificateInfo) -> String {
    if index == 0 {
        format!("the certificate `{}`", cert.subject)
    } else {
        format!("chain certificate {} `{}`", index + 1, cert.subject)
    }
}

pub(crate) fn check_at(
    name: &str,
    config: &TlsConfig,
    warn_days: u32,
    hosts: &[String],
    known_peers: &[CertificateDer<'static>],
    now: OffsetDateTime,
) -> TlsReport {
    let mut doctor = Doctor { findings: Vec::new() };
    let parse_all = |certs: &[CertificateDer<'static>]| -> Vec<CertificateInfo> {
        certs.iter().filter_map(|c| CertificateInfo::parse(c).ok()).collect()
    };

    let ca_der = match &config.ca_file {
        Some(path) => pem::ca_certificates(name, path).unwrap_or_else(|e| {
            doctor.unreadable(&e);
            Vec::new()
        }),
        None => Vec::new(),
    };
    let chain_der = match &config.cert_file {
        Some(path) => pem::certificates_in_file(name, path, "certificate file").unwrap_or_else(|e| {
            doctor.unreadable(&e);
            Vec::new()
        }),
        None => Vec::new(),
    };
    let ca = parse_all(&ca_der);
    let chain = parse_all(&chain_der);

    check_validity(&mut doctor, &chain, warn_days, now);
    if let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) {
        check_key(&mut doctor, name, config, cert_file, key_file, &chain_der);
    }
    if let Some(key_file) = &config.key_file {
        check_key_permissions(&mut doctor, key_file);
    }
    check_order(&mut doctor, &chain);
    check_trust(&mut doctor, config, &chain_der, &chain, &ca_der, &ca, now);
    check_ca_file(&mut doctor, &ca, now);
    check_usage(&mut doctor, config.role, chain.first());
    check_hosts(&mut doctor, name, config, hosts, &chain, &ca, known_peers);

    TlsReport {
        name: name.to_owned(),
        role: config.role.to_string(),
        chain,
        ca_certificates: ca,
        findings: doctor.findings,
        checked_at: now,
    }
}

fn check_validity(doctor: &mut Doctor, chain: &[CertificateInfo], warn_days: u32, now: OffsetDateTime) {
    for (i, cert) in chain.iter().enumerate() {
        let what = describe(i, cert);
        let until = super::format_time(cert.not_after);
        if now > cert.not_after {
            doctor.push(
                Severity::Error,
                FindingKind::Expired,
                format!("{what} expired on {until}; peers refuse it: install a renewed certificate"),
            );
        } else if now < cert.not_before {
            doctor.push(
                Severity::Error,
                FindingKind::NotYetValid,
                format!(
                    "{what} is not valid until {}; peers refuse it until then (check the clock of this machine and \
                     of the issuer)",
                    super::format_time(cert.not_before)
                ),
            );
        } else {
            let days = cert.days_left(now);
            if days < i64::from(warn_days) {
                doctor.push(
                    Severity::Warning,
                    FindingKind::ExpiresSoon,
                    format!("{what} expires in {days} day(s), on {until}; renew it before then"),
                );
            } else if i == 0 {
                doctor.push(Severity::Ok, FindingKind::Valid, format!("valid until {until} ({days} days left)"));
            }
        }
    }
}

fn check_key(
    doctor: &mut Doctor,
    name: &str,
    config: &TlsConfig,
    cert_file: &Path,
    key_file: &Path,
    chain: &[CertificateDer<'static>],
) {
    let password = match (&config.key_password_env, &config.key_password_file) {
        (Some(var), _) => PasswordSource::Env(var),
        (None, Some(file)) => PasswordSource::File(file),
        (None, None) => PasswordSource::None,
    };
    let key = match pem::private_key(name, key_file, password) {
        Ok(key) => key,
        Err(e) => return doctor.unreadable(&e),
    };
    if chain.is_empty() {
        return;
    }
    let provider = super::provider();
    let signing_key = match provider.key_provider.load_private_key(key) {
        Ok(k) => k,
        Err(e) => {
            return doctor.unreadable(&TlsError::new(
                name,
                Some(key_file),
                TlsErrorKind::UnusableKey { detail: e.to_string() },
            ));
        }
    };
    let certified = rustls::sign::CertifiedKey::new(chain.to_vec(), signing_key);
    match certified.keys_match() {
        Ok(()) => doctor.push(Severity::Ok, FindingKind::KeyMatches, "the private key matches the certificate"),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => doctor.push(
            Severity::Error,
            FindingKind::KeyMismatch,
            format!(
                "the private key {} does not belong to the certificate {}: their public keys differ; use the key \
                 the certificate was issued for",
                key_file.display(),
                cert_file.display()
            ),
        ),
        Err(_) => {}
    }
}

#[cfg(unix)]
fn check_key_permissions(doctor: &mut Doctor, key_file: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(meta) = std::fs::metadata(key_file) else { return };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        doctor.push(
            Severity::Warning,
            FindingKind::KeyFileReadableByOthers,
            format!(
                "the key file {} has mode {mode:04o}: users other than its owner may read the private key; run \
                 `chmod 600 {}`",
                key_file.display(),
                key_file.display()
            ),
        );
    }
}

#[cfg(not(unix))]
fn check_key_permissions(_doctor: &mut Doctor, _key_file: &Path) {}

fn check_order(doctor: &mut Doctor, chain: &[CertificateInfo]) {
    for (i, pair) in chain.windows(2).enumerate() {
        let (cert, next) = (&pair[0], &pair[1]);
        if !cert.issued_by(next) || cert.self_signed {
            doctor.push(
                Severity::Warning,
                FindingKind::ChainOutOfOrder,
                format!(
                    "the certificate file is out of order: {} is followed by `{}`, which is not its issuer (`{}`); \
                     list the leaf first, then each issuer in turn (some peers refuse other orders)",
                    describe(i, cert),
                    next.subject,
                    cert.issuer
                ),
            );
            return;
        }
    }
}

fn check_trust(
    doctor: &mut Doctor,
    config: &TlsConfig,
    chain_der: &[CertificateDer<'static>],
    chain: &[CertificateInfo],
    ca_der: &[CertificateDer<'static>],
    ca: &[CertificateInfo],
    now: OffsetDateTime,
) {
    let Some(leaf) = chain.first() else { return };
    // The top of the chain as presented: follow issuers from the leaf.
    let mut top = leaf;
    let mut steps = 0;
    while !top.self_signed && steps < chain.len() {
        match chain.iter().find(|c| top.issued_by(c) && !std::ptr::eq(*c, top)) {
            Some(issuer) => top = issuer,
            None => break,
        }
        steps += 1;
    }
    // Anchors: the CA file; without one, a root the chain itself ends with.
    let anchors: Vec<CertificateDer<'static>> = if ca_der.is_empty() {
        chain_der.iter().zip(chain).filter(|(_, info)| info.self_signed).map(|(der, _)| der.clone()).collect()
    } else {
        ca_der.to_vec()
    };
    let unix = UnixTime::since_unix_epoch(std::time::Duration::from_secs(now.unix_timestamp().max(0).unsigned_abs()));
    let verdict = super::verify::verify_chain(chain_der, &anchors, config.role, unix);
    let issuer_in_ca = ca.iter().find(|c| top.issued_by(c));
    match verdict {
        Ok(()) => {
            let anchor = match issuer_in_ca {
                Some(a) => format!("`{}` of ca_file", a.subject),
                None if top.self_signed && ca_der.is_empty() => {
                    format!("`{}`, the root at the end of cert_file (there is no ca_file)", top.subject)
                }
                None => "an authority of ca_file".to_owned(),
            };
            doctor.push(
                Severity::Ok,
                FindingKind::ChainTrusted,
                format!("the chain builds to the trust anchor {anchor}"),
            );
            if let Some(intermediate) = issuer_in_ca.filter(|c| !c.self_signed && !top.self_signed) {
                doctor.push(
                    Severity::Warning,
                    FindingKind::ChainIncomplete,
                    format!(
                        "the chain is incomplete: the intermediate `{}` is in ca_file but not in cert_file, so a \
                         peer that trusts only the root cannot build the chain; append it to the certificate file",
                        intermediate.subject
                    ),
                );
            }
        }
        Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
            let (kind, message) = match issuer_in_ca {
                Some(intermediate) => (
                    FindingKind::ChainIncomplete,
                    format!(
                        "the chain is incomplete: the intermediate `{}` that issued `{}` is in ca_file but not in \
                         cert_file; append it to the certificate file",
                        intermediate.subject, top.subject
                    ),
                ),
                None if top.self_signed => (
                    FindingKind::ChainUntrusted,
                    format!(
                        "the chain ends with the root `{}`, which is not in ca_file; the peer must trust that root \
                         (add it to the peer's CA file), or get a certificate from an authority it trusts",
                        top.subject
                    ),
                ),
                None if ca_der.is_empty() => (
                    FindingKind::ChainIncomplete,
                    format!(
                        "cannot tell whether the chain is complete: `{}` was issued by `{}`, which is not in \
                         cert_file, and there is no ca_file; if the issuer is an intermediate, append it to the \
                         certificate file",
                        top.subject, top.issuer
                    ),
                ),
                None => (
                    FindingKind::ChainIncomplete,
                    format!(
                        "the chain does not build to an authority of ca_file: `{}` was issued by `{}`, which is in \
                         neither cert_file nor ca_file; if it is an intermediate, append it to the certificate \
                         file; if it is a root, the peer must trust it",
                        top.subject, top.issuer
                    ),
                ),
            };
            doctor.push(Severity::Warning, kind, message);
        }
        // Reported by their own checks.
        Err(rustls::Error::InvalidCertificate(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. }
            | CertificateError::InvalidPurpose
            | CertificateError::InvalidPurposeContext { .. },
        )) => {}
        Err(e) => doctor.push(
            Severity::Error,
            FindingKind::ChainInvalid,
            format!("the chain does not verify: {e}; the peer will refuse it"),
        ),
    }
}

fn check_ca_file(doctor: &mut Doctor, ca: &[CertificateInfo], now: OffsetDateTime) {
    for cert in ca {
        if !cert.is_ca {
            doctor.push(
                Severity::Warning,
                FindingKind::CaFileHoldsLeaf,
                format!(
                    "ca_file holds `{}`, which is not a certificate authority: it cannot sign other certificates and \
                     is trusted only as itself; put the issuing CA certificates in ca_file (and your own certificate \
                     in cert_file)",
                    cert.subject
                ),
            );
        }
        if now > cert.not_after {
            doctor.push(
                Severity::Warning,
                FindingKind::CaExpired,
                format!(
                    "the authority `{}` in ca_file expired on {}; certificates it signed no longer verify",
                    cert.subject,
                    super::format_time(cert.not_after)
                ),
            );
        }
    }
}

fn check_usage(doctor: &mut Doctor, role: TlsRole, leaf: Option<&CertificateInfo>) {
    let Some(leaf) = leaf else { return };
    let has = leaf.extended_key_usage.as_ref().map_or_else(|| "any".to_owned(), |l| l.join(", "));
    match role {
        TlsRole::Server if !leaf.allows_server_auth() => doctor.push(
            Severity::Error,
            FindingKind::MissingServerAuth,
            format!(
                "the certificate lacks the serverAuth extended key usage (it has: {has}); clients refuse it as a \
                 server certificate: reissue it with serverAuth (and clientAuth if it is also used as a client)"
            ),
        ),
        TlsRole::Client if !leaf.allows_client_auth() => doctor.push(
            Severity::Error,
            FindingKind::MissingClientAuth,
            format!(
                "the certificate lacks the clientAuth extended key usage (it has: {has}); servers refuse it as a \
                 client certificate: reissue it with clientAuth (and serverAuth if it is also used as a server)"
            ),
        ),
        _ => doctor.push(
            Severity::Ok,
            FindingKind::UsageOk,
            format!("extended key usage allows the {role} role ({has})"),
        ),
    }
}

fn check_hosts(
    doctor: &mut Doctor,
    name: &str,
    config: &TlsConfig,
    hosts: &[String],
    chain: &[CertificateInfo],
    ca: &[CertificateInfo],
    known_peers: &[CertificateDer<'static>],
) {
    match config.role {
        TlsRole::Server => {
            let Some(leaf) = chain.first() else { return };
            for host in hosts {
                host_verdict(doctor, leaf, host, "clients connecting to");
            }
        }
        TlsRole::Client => {
            if config.verify_peer == VerifyPeer::None {
                doctor.push(
                    Severity::Warning,
                    FindingKind::PeerNotVerified,
                    "verify_peer is none: the server's certificate is not checked at all, so anyone on the network \
                     path can pose as the receiver; use `require` outside tests",
                );
                return;
            }
            if !config.verify_host {
                return;
            }
            let names: Vec<String> = match &config.server_name {
                Some(server_name) => vec![server_name.clone()],
                None => hosts.to_vec(),
            };
            for host in &names {
                if let Err(e) = super::material::server_name(name, config, host) {
                    doctor.push(Severity::Error, FindingKind::HostMismatch, e.kind.to_string());
                    continue;
                }
                let pinned = ca.iter().filter(|c| !c.is_ca);
                let peers: Vec<CertificateInfo> =
                    known_peers.iter().filter_map(|c| CertificateInfo::parse(c).ok()).collect();
                for peer in pinned.chain(peers.iter()) {
                    host_verdict(doctor, peer, host, "connecting to");
                }
            }
        }
    }
}

fn host_verdict(doctor: &mut Doctor, cert: &CertificateInfo, host: &str, context: &str) {
    if cert.names_host(host) {
        doctor.push(Severity::Ok, FindingKind::HostMatches, format!("`{}` names {host}", cert.subject));
        return;
    }
    let names = cert.subject_alt_names();
    let names = if names.is_empty() {
        format!("no subject alternative names (CN {})", cert.common_name.as_deref().unwrap_or("absent"))
    } else {
        names.join(", ")
    };
    doctor.push(
        Severity::Error,
        FindingKind::HostMismatch,
        format!(
            "host verification is on but `{}` does not name {host} (it has {names}); {context} {host} refuse it: \
             reissue the certificate with {host} as a subject alternative name, set `server_name` to a name it \
             carries, or set `verify_host: false`",
            cert.subject
        ),
    );
}
