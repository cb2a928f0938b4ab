//! Reading certificates and private keys from PEM (or DER) files.
//!
//! Certificates: every `CERTIFICATE` block of a file, in file order; a CA
//! setting may also name a folder, whose files are all read. Private keys:
//! PKCS#8 (`PRIVATE KEY`), password-encrypted PKCS#8 (`ENCRYPTED PRIVATE
//! KEY`, decrypted with the `pkcs8` crate), PKCS#1 RSA (`RSA PRIVATE KEY`),
//! SEC1 EC (`EC PRIVATE KEY`) and Ed25519 (PKCS#8). The legacy OpenSSL
//! encryption (`Proc-Type: 4,ENCRYPTED` inside an RSA/EC block) is refused
//! with the command that converts the key.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use pkcs8::EncryptedPrivateKeyInfoRef;
use rustls_pki_types::pem::{self, PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

use super::error::{TlsError, TlsErrorKind};

/// Where the password of an encrypted key comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PasswordSource<'a> {
    /// No password is configured.
    None,
    /// `key_password_env`: the name of an environment variable.
    Env(&'a str),
    /// `key_password_file`: a file whose first line is the password.
    File(&'a Path),
}

pub(crate) fn read_file(config: &str, path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::new(config, Some(path), TlsErrorKind::Io { what, error }))
}

/// Reads the certificates of one file: PEM blocks in file order, or a single
/// DER certificate.
pub(crate) fn certificates_in_file(
    config: &str,
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_file(config, path, what)?;
    certificates_in_bytes(&bytes).map_err(|kind| TlsError::new(config, Some(path), with_what(kind, what)))
}

/// Reads a CA setting: one PEM bundle, or every file of a folder (files
/// without certificates, such as keys or notes, are skipped; duplicates, such
/// as OpenSSL's hash links, are read once).
pub(crate) fn ca_certificates(config: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    const WHAT: &str = "CA file";
    if !path.is_dir() {
        return certificates_in_file(config, path, WHAT);
    }
    let entries = std::fs::read_dir(path)
        .map_err(|error| TlsError::new(config, Some(path), TlsErrorKind::Io { what: "CA folder", error }))?;
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
    files.sort();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for file in files {
        let bytes = read_file(config, &file, WHAT)?;
        match certificates_in_bytes(&bytes) {
            Ok(certs) => {
                for cert in certs {
                    if seen.insert(cert.as_ref().to_vec()) {
                        out.push(cert);
                    }
                }
            }
            Err(TlsErrorKind::NoCertificates { .. }) => {}
            Err(kind) => return Err(TlsError::new(config, Some(&file), with_what(kind, WHAT))),
        }
    }
    if out.is_empty() {
        return Err(TlsError::new(
            config,
            Some(path),
            TlsErrorKind::NoCertificates { what: "CA folder", holds_key: false },
        ));
    }
    Ok(out)
}

fn with_what(kind: TlsErrorKind, what: &'static str) -> TlsErrorKind {
    match kind {
        TlsErrorKind::NoCertificates { holds_key, .. } => TlsErrorKind::NoCertificates { what, holds_key },
        TlsErrorKind::Pem { detail, .. } => TlsErrorKind::Pem { what, detail },
        TlsErrorKind::BadCertificate { index, detail, .. } => TlsErrorKind::BadCertificate { what, index, detail },
        other => other,
    }
}

/// The certificates in a buffer. The `what` of the returned error is a
/// placeholder that callers replace.
pub(crate) fn certificates_in_bytes(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsErrorKind> {
    let what = "file";
    let certs: Vec<CertificateDer<'static>> = if looks_like_der(bytes) {
        vec![CertificateDer::from(bytes.to_vec())]
    } else {
        CertificateDer::pem_slice_iter(bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| TlsErrorKind::Pem { what, detail: pem_error(&e) })?
    };
    if certs.is_empty() {
        return Err(TlsErrorKind::NoCertificates { what, holds_key: contains(bytes, b"PRIVATE KEY-----") });
    }
    for (i, cert) in certs.iter().enumerate() {
        if let Err(e) = x509_parser::parse_x509_certificate(cert.as_ref()) {
            return Err(TlsErrorKind::BadCertificate { what, index: i + 1, detail: e.to_string() });
        }
    }
    Ok(certs)
}

/// Describes a PEM error without echoing file contents (which, for a key
/// file, would be secret).
fn pem_error(error: &pem::Error) -> String {
    match error {
        pem::Error::MissingSectionEnd { .. } => "a block has no `-----END ...-----` line".to_owned(),
        pem::Error::IllegalSectionStart { .. } => "a `-----BEGIN ...` line is malformed".to_owned(),
        pem::Error::Base64Decode(_) => "a block holds invalid base64".to_owned(),
        pem::Error::Io(e) => e.to_string(),
        pem::Error::NoItemsFound => "no PEM block found".to_owned(),
        pem::Error::SectionTooLarge => "a block is larger than 256 MB".to_owned(),
        _ => "malformed PEM".to_owned(),
    }
}

fn looks_like_der(bytes: &[u8]) -> bool {
    // A DER SEQUENCE with a long-form length, and no PEM armour anywhere.
    bytes.len() > 4 && bytes[0] == 0x30 && (bytes[1] == 0x82 || bytes[1] == 0x81) && !contains(bytes, b"-----BEGIN")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The openssl command that turns a key into an encrypted PKCS#8 file next
/// to it.
pub(crate) fn pkcs8_convert_command(key_file: &Path) -> String {
    let stem = key_file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "key".to_owned());
    let new = key_file.with_file_name(format!("{stem}-pkcs8.key"));
    format!("openssl pkcs8 -topk8 -v2 aes-256-cbc -in {} -out {}", key_file.display(), new.display())
}

/// Reads the private key of `path`, decrypting it with the password from
/// `password` when it is encrypted. The password is read only when needed,
/// kept in memory that is wiped after use, and never reported.
pub(crate) fn private_key(
    config: &str,
    path: &Path,
    password: PasswordSource<'_>,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = Zeroizing::new(read_file(config, path, "key file")?);
    let fail = |kind| TlsError::new(config, Some(path), kind);
    if contains(&bytes, b"Proc-Type: 4,ENCRYPTED") {
        return Err(fail(TlsErrorKind::LegacyEncryptedKey { command: pkcs8_convert_command(path) }));
    }
    if let Some(block) = encrypted_block(&bytes) {
        let (_label, der) = pkcs8::der::pem::decode_vec(block).map_err(|_| {
            fail(TlsErrorKind::Pem { what: "key file", detail: "the encrypted key block is malformed".into() })
        })?;
        let der = Zeroizing::new(der);
        let password = read_password(config, password)?;
        return decrypt_pkcs8(&der, password.as_bytes()).map_err(|kind| {
            let kind = match kind {
                TlsErrorKind::UnsupportedEncryption { detail, .. } => {
                    TlsErrorKind::UnsupportedEncryption { detail, command: pkcs8_convert_command(path) }
                }
                other => other,
            };
            fail(kind)
        });
    }
    if looks_like_der(&bytes) {
        return PrivateKeyDer::try_from(bytes.to_vec())
            .map_err(|_| fail(TlsErrorKind::NoPrivateKey { holds_certificate: false }));
    }
    let mut holds_certificate = false;
    for section in AnySection::pem_slice_iter(&bytes) {
        let AnySection(kind, der) =
            section.map_err(|e| fail(TlsErrorKind::Pem { what: "key file", detail: pem_error(&e) }))?;
        match kind {
            SectionKind::PrivateKey => return Ok(PrivateKeyDer::Pkcs8(der.into())),
            SectionKind::RsaPrivateKey => return Ok(PrivateKeyDer::Pkcs1(der.into())),
            SectionKind::EcPrivateKey => return Ok(PrivateKeyDer::Sec1(der.into())),
            SectionKind::Certificate => holds_certificate = true,
            _ => {}
        }
    }
    Err(fail(TlsErrorKind::NoPrivateKey { holds_certificate }))
}

/// Any PEM block of a kind the PEM reader knows, to tell what a file holds.
struct AnySection(SectionKind, Vec<u8>);

impl PemObject for AnySection {
    fn from_pem(kind: SectionKind, der: Vec<u8>) -> Option<Self> {
        Some(Self(kind, der))
    }
}

/// Decrypts a DER `EncryptedPrivateKeyInfo`.
pub(crate) fn decrypt_pkcs8(der: &[u8], password: &[u8]) -> Result<PrivateKeyDer<'static>, TlsErrorKind> {
    let info = EncryptedPrivateKeyInfoRef::try_from(der)
        .map_err(|e| TlsErrorKind::Pem { what: "key file", detail: format!("the encrypted key is malformed: {e}") })?;
    match info.decrypt(password) {
        Ok(doc) => Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(doc.as_bytes().to_vec()))),
        Err(pkcs8::Error::EncryptedPrivateKey(pkcs8::pkcs5::Error::UnsupportedAlgorithm { oid })) => {
            Err(TlsErrorKind::UnsupportedEncryption { detail: format!("algorithm {oid}"), command: String::new() })
        }
        Err(pkcs8::Error::EncryptedPrivateKey(pkcs8::pkcs5::Error::NoPbes1CryptSupport)) => {
            Err(TlsErrorKind::UnsupportedEncryption { detail: "PKCS#5 v1.5 (PBES1)".into(), command: String::new() })
        }
        // A wrong password shows as bad padding or, rarely, as garbage that
        // is not a private key.
        Err(_) => Err(TlsErrorKind::WrongPassword),
    }
}

fn encrypted_block(bytes: &[u8]) -> Option<&[u8]> {
    const BEGIN: &[u8] = b"-----BEGIN ENCRYPTED PRIVATE KEY-----";
    const END: &[u8] = b"-----END ENCRYPTED PRIVATE KEY-----";
    let start = bytes.windows(BEGIN.len()).position(|w| w == BEGIN)?;
    let end = bytes[start..].windows(END.len()).position(|w| w == END)? + start + END.len();
    Some(&bytes[start..end])
}

fn read_password(config: &str, source: PasswordSource<'_>) -> Result<Zeroizing<String>, TlsError> {
    match source {
        PasswordSource::None => Err(TlsError::new(config, None, TlsErrorKind::PasswordMissing)),
        PasswordSource::Env(variable) => match std::env::var(variable) {
            Ok(value) => Ok(Zeroizing::new(value)),
            Err(_) => {
                Err(TlsError::new(config, None, TlsErrorKind::PasswordVariableUnset { variable: variable.to_owned() }))
            }
        },
        PasswordSource::File(path) => {
            let bytes = Zeroizing::new(read_file(config, path, "key password file")?);
            let text = String::from_utf8_lossy(&bytes);
            let line = text.lines().next().unwrap_or("").trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                return Err(TlsError::new(config, Some(path), TlsErrorKind::PasswordFileEmpty));
            }
            Ok(Zeroizing::new(line.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convert_command_names_the_files() {
        assert_eq!(
            pkcs8_convert_command(Path::new("/ssl/lab.key")),
            "openssl pkcs8 -topk8 -v2 aes-256-cbc -in /ssl/lab.key -out /ssl/lab-pkcs8.key"
        );
    }

    #[test]
    fn finds_the_encrypted_block() {
        let text = b"junk\n-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let block = encrypted_block(text).map(|b| String::from_utf8_lossy(b).into_owned());
        assert_eq!(
            block.as_deref(),
            Some("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----")
        );
    }
}
