//! What a certificate says: names, validity, key, usages, fingerprint.

use std::fmt;
use std::net::IpAddr;

use rustls_pki_types::CertificateDer;
use serde::Serialize;
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

/// The facts of one X.509 certificate that an operator needs to judge it,
/// as `switchboard tls inspect` prints them and the web UI shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateInfo {
    /// Subject distinguished name, e.g. `CN=lab.example.org, O=Lab`.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// The subject's common name (CN), if any.
    pub common_name: Option<String>,
    /// Serial number, hexadecimal bytes separated by `:`.
    pub serial: String,
    /// DNS names of the subject alternative name extension.
    pub dns_names: Vec<String>,
    /// IP addresses of the subject alternative name extension.
    pub ip_addresses: Vec<IpAddr>,
    /// Start of validity.
    #[serde(serialize_with = "super::rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of validity.
    #[serde(serialize_with = "super::rfc3339")]
    pub not_after: OffsetDateTime,
    /// Key algorithm: `RSA`, `ECDSA P-256`, `ECDSA P-384`, `Ed25519`...
    pub key_type: String,
    /// Key size in bits, when it has one (RSA, EC).
    pub key_bits: Option<usize>,
    /// Key usage extension values (`digitalSignature`, `keyCertSign`...);
    /// empty when the extension is absent.
    pub key_usage: Vec<String>,
    /// Extended key usage values (`serverAuth`, `clientAuth`, or dotted
    /// OIDs); `None` when the extension is absent, which allows any usage.
    pub extended_key_usage: Option<Vec<String>>,
    /// Basic constraints: whether the certificate is a certificate authority.
    pub is_ca: bool,
    /// Basic constraints: the maximum number of intermediates below it.
    pub path_len: Option<u32>,
    /// Issued by itself: subject equals issuer and its own key verifies its
    /// signature (a root, or a self-signed leaf).
    pub self_signed: bool,
    /// SHA-256 of the DER encoding, hexadecimal bytes separated by `:`, as
    /// `openssl x509 -fingerprint -sha256` prints it.
    pub sha256_fingerprint: String,
    #[serde(skip)]
    pub(crate) subject_raw: Vec<u8>,
    #[serde(skip)]
    pub(crate) issuer_raw: Vec<u8>,
}

impl CertificateInfo {
    /// Parses a DER certificate.
    pub fn parse(der: &CertificateDer<'_>) -> Result<Self, String> {
        let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| e.to_string())?;
        let subject = cert.subject().to_string();
        let issuer = cert.issuer().to_string();
        let common_name = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned);
        let mut dns_names = Vec::new();
        let mut ip_addresses = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
                    GeneralName::IPAddress(bytes) => {
                        if let Some(ip) = ip_from_bytes(bytes) {
                            ip_addresses.push(ip);
                        }
                    }
                    _ => {}
                }
            }
        }
        let key_usage = match cert.key_usage() {
            Ok(Some(ku)) => {
                let ku = ku.value;
                [
                    (ku.digital_signature(), "digitalSignature"),
                    (ku.non_repudiation(), "nonRepudiation"),
                    (ku.key_encipherment(), "keyEncipherment"),
                    (ku.data_encipherment(), "dataEncipherment"),
                    (ku.key_agreement(), "keyAgreement"),
                    (ku.key_cert_sign(), "keyCertSign"),
                    (ku.crl_sign(), "cRLSign"),
                    (ku.encipher_only(), "encipherOnly"),
                    (ku.decipher_only(), "decipherOnly"),
                ]
                .into_iter()
                .filter(|(set, _)| *set)
                .map(|(_, name)| name.to_owned())
                .collect()
            }
            _ => Vec::new(),
        };
        let extended_key_usage = match cert.extended_key_usage() {
            Ok(Some(eku)) => {
                let eku = eku.value;
                let mut out: Vec<String> = [
                    (eku.server_auth, "serverAuth"),
                    (eku.client_auth, "clientAuth"),
                    (eku.code_signing, "codeSigning"),
                    (eku.email_protection, "emailProtection"),
                    (eku.time_stamping, "timeStamping"),
                    (eku.ocsp_signing, "OCSPSigning"),
                    (eku.any, "anyExtendedKeyUsage"),
                ]
                .into_iter()
                .filter(|(set, _)| *set)
                .map(|(_, name)| name.to_owned())
                .collect();
                out.extend(eku.other.iter().map(|oid| oid.to_id_string()));
                Some(out)
            }
            _ => None,
        };
        let (is_ca, path_len) = match cert.basic_constraints() {
            Ok(Some(bc)) => (bc.value.ca, bc.value.path_len_constraint),
            _ => (false, None),
        };
        let self_signed = cert.subject().as_raw() == cert.issuer().as_raw() && cert.verify_signature(None).is_ok();
        let (key_type, key_bits) = key_description(&cert);
        let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
        Ok(Self {
            subject: non_empty(subject),
            issuer: non_empty(issuer),
            common_name,
            serial: hex_colons(cert.raw_serial()),
            dns_names,
            ip_addresses,
            not_before: to_datetime(cert.validity().not_before.timestamp()),
            not_after: to_datetime(cert.validity().not_after.timestamp()),
            key_type,
            key_bits,
            key_usage,
            extended_key_usage,
            is_ca,
            path_len,
            self_signed,
            sha256_fingerprint: hex_colons(digest.as_ref()),
            subject_raw: cert.subject().as_raw().to_vec(),
            issuer_raw: cert.issuer().as_raw().to_vec(),
        })
    }

    /// Whether the certificate may authenticate a TLS server: it has no
    /// extended key usage extension (any usage) or lists `serverAuth`.
    pub fn allows_server_auth(&self) -> bool {
        self.allows("serverAuth")
    }

    /// Whether the certificate may authenticate a TLS client.
    pub fn allows_client_auth(&self) -> bool {
        self.allows("clientAuth")
    }

    fn allows(&self, usage: &str) -> bool {
        self.extended_key_usage.as_ref().is_none_or(|list| list.iter().any(|u| u == usage))
    }

    /// Whether `issuer` is named as this certificate's issuer.
    pub fn issued_by(&self, issuer: &CertificateInfo) -> bool {
        self.issuer_raw == issuer.subject_raw
    }

    /// Whether the certificate names `host`: a DNS name of the subject
    /// alternative names (with `*.` wildcards for one label), an IP address
    /// of them, or, only when the certificate has no DNS or IP names at all,
    /// its common name (the fallback older certificates need; rustls itself
    /// does not use it, so such a certificate fails host verification).
    pub fn names_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            return self.ip_addresses.contains(&ip);
        }
        if self.dns_names.is_empty() && self.ip_addresses.is_empty() {
            return self.common_name.as_deref().is_some_and(|cn| dns_matches(cn, host));
        }
        self.dns_names.iter().any(|name| dns_matches(name, host))
    }

    /// Days from `now` to `not_after` as a reader counts them: a part of a
    /// day left counts as a day (397 days less a few seconds is 397, and 0
    /// only at the expiry itself); negative once expired (-1 within the
    /// first day after).
    pub fn days_left(&self, now: OffsetDateTime) -> i64 {
        days_left(self.not_after - now)
    }

    /// The subject alternative names as `DNS:name` and `IP:address`.
    pub fn subject_alt_names(&self) -> Vec<String> {
        self.dns_names
            .iter()
            .map(|d| format!("DNS:{d}"))
            .chain(self.ip_addresses.iter().map(|ip| format!("IP:{ip}")))
            .collect()
    }
}

impl fmt::Display for CertificateInfo {
    /// Several indented lines, as `switchboard tls inspect` prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "subject:      {}", self.subject)?;
        writeln!(f, "issuer:       {}", self.issuer)?;
        writeln!(f, "serial:       {}", self.serial)?;
        writeln!(f, "valid:        {} to {}", super::format_time(self.not_before), super::format_time(self.not_after))?;
        let sans = self.subject_alt_names();
        writeln!(f, "alt names:    {}", if sans.is_empty() { "(none)".to_owned() } else { sans.join(", ") })?;
        match self.key_bits {
            Some(bits) if !self.key_type.starts_with("ECDSA") => {
                writeln!(f, "key:          {} {bits} bits", self.key_type)?;
            }
            _ => writeln!(f, "key:          {}", self.key_type)?,
        }
        let ku = if self.key_usage.is_empty() { "(not restricted)".to_owned() } else { self.key_usage.join(", ") };
        writeln!(f, "key usage:    {ku}")?;
        let eku = self.extended_key_usage.as_ref().map_or_else(|| "(not restricted)".to_owned(), |l| l.join(", "));
        writeln!(f, "ext. usage:   {eku}")?;
        let ca = match (self.is_ca, self.path_len) {
            (true, Some(n)) => format!("yes (path length {n})"),
            (true, None) => "yes".to_owned(),
            (false, _) => "no".to_owned(),
        };
        writeln!(f, "CA:           {ca}{}", if self.self_signed { ", self-signed" } else { "" })?;
        write!(f, "SHA-256:      {}", self.sha256_fingerprint)
    }
}

fn non_empty(name: String) -> String {
    if name.is_empty() { "(empty)".to_owned() } else { name }
}

fn to_datetime(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).unwrap_or(if unix < 0 {
        OffsetDateTime::UNIX_EPOCH
    } else {
        time::macros::datetime!(9999-12-31 23:59:59 UTC)
    })
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

fn dns_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim_end_matches('.');
    if let Some(suffix) = pattern.strip_prefix("*.") {
        return host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(suffix));
    }
    pattern.eq_ignore_ascii_case(host)
}

pub(crate) fn hex_colons(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

fn key_description(cert: &X509Certificate<'_>) -> (String, Option<usize>) {
    let spki = cert.public_key();
    let alg = &spki.algorithm.algorithm;
    if *alg == oid_registry::OID_SIG_ED25519 {
        return ("Ed25519".to_owned(), None);
    }
    if *alg == oid_registry::OID_SIG_ED448 {
        return ("Ed448".to_owned(), None);
    }
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => ("RSA".to_owned(), Some(rsa.key_size())),
        Ok(PublicKey::EC(ec)) => {
            let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
            let name = match curve {
                Some(c) if c == oid_registry::OID_EC_P256 => "ECDSA P-256".to_owned(),
                Some(c) if c == oid_registry::OID_NIST_EC_P384 => "ECDSA P-384".to_owned(),
                Some(c) if c == oid_registry::OID_NIST_EC_P521 => "ECDSA P-521".to_owned(),
                Some(c) => format!("EC {}", c.to_id_string()),
                None => "EC".to_owned(),
            };
            (name, Some(ec.key_size()))
        }
        Ok(PublicKey::DSA(_)) => ("DSA".to_owned(), None),
        _ => (alg.to_id_string(), None),
    }
}

/// See [`CertificateInfo::days_left`].
fn days_left(remaining: time::Duration) -> i64 {
    let seconds = remaining.whole_seconds();
    if seconds > 0 { seconds.div_euclid(86_400) + i64::from(seconds % 86_400 != 0) } else { seconds.div_euclid(86_400) }
}

#[cfg(test)]
mod tests {
    use super::{days_left, dns_matches};
    use time::Duration;

    #[test]
    fn days_left_count_a_part_of_a_day_as_a_day() {
        let day = Duration::days(1);
        assert_eq!(days_left(day * 397 - Duration::seconds(5)), 397);
        assert_eq!(days_left(day * 397), 397);
        assert_eq!(days_left(day * 397 + Duration::seconds(1)), 398);
        assert_eq!(days_left(Duration::seconds(1)), 1);
        assert_eq!(days_left(Duration::ZERO), 0);
        assert_eq!(days_left(Duration::seconds(-1)), -1);
        assert_eq!(days_left(-day), -1);
        assert_eq!(days_left(-day - Duration::seconds(1)), -2);
    }

    #[test]
    fn wildcards_cover_exactly_one_label() {
        assert!(dns_matches("*.example.org", "lab.example.org"));
        assert!(dns_matches("LAB.example.org", "lab.EXAMPLE.org"));
        assert!(!dns_matches("*.example.org", "example.org"));
        assert!(!dns_matches("*.example.org", "a.b.example.org"));
        assert!(!dns_matches("lab.example.org", "lab.example.org.evil"));
    }
}
