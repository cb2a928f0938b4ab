//! Errors of loading TLS material and building TLS configurations.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Why a TLS configuration cannot be used.
///
/// Displayed as `TLS configuration `NAME`: FILE: what is wrong; what to do`,
/// so that an operator knows which configuration and which file to fix. It
/// never contains key material or passwords.
#[derive(Debug, thiserror::Error)]
pub struct TlsError {
    /// The name of the configuration under `tls:` (or a label such as the
    /// file name, for material loaded outside a productions file).
    pub config: String,
    /// The file at fault, when there is one.
    pub file: Option<PathBuf>,
    /// What is wrong.
    pub kind: TlsErrorKind,
}

impl TlsError {
    pub(crate) fn new(config: &str, file: Option<&Path>, kind: TlsErrorKind) -> Self {
        Self { config: config.to_owned(), file: file.map(Path::to_path_buf), kind }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS configuration `{}`", self.config)?;
        if let Some(file) = &self.file {
            write!(f, ": {}", file.display())?;
        }
        write!(f, ": {}", self.kind)
    }
}

/// The kinds of [`TlsError`], for callers that react differently to each.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsErrorKind {
    /// A file could not be read.
    #[error("cannot read the {what}: {error}; {}", io_hint(.error))]
    Io {
        /// Which setting the file belongs to (`certificate file`, `CA file`...).
        what: &'static str,
        /// The operating system's error.
        error: io::Error,
    },
    /// A certificate file or CA bundle holds no certificate.
    #[error(
        "the {what} holds no certificate; it must contain PEM blocks that start with \
         `-----BEGIN CERTIFICATE-----`{}",
        if *.holds_key { " (it holds a private key: are `cert_file` and `key_file` swapped?)" } else { "" }
    )]
    NoCertificates {
        /// Which setting the file belongs to.
        what: &'static str,
        /// The file holds a private key instead.
        holds_key: bool,
    },
    /// A PEM file is malformed.
    #[error("the {what} is not valid PEM: {detail}")]
    Pem {
        /// Which setting the file belongs to.
        what: &'static str,
        /// What the PEM reader found wrong.
        detail: String,
    },
    /// A certificate cannot be parsed.
    #[error("certificate {index} of the {what} cannot be parsed: {detail}")]
    BadCertificate {
        /// Which setting the file belongs to.
        what: &'static str,
        /// Position of the certificate in the file, from 1.
        index: usize,
        /// What the parser found wrong.
        detail: String,
    },
    /// The key file holds no private key.
    #[error(
        "the key file holds no private key; expected a PEM block `-----BEGIN PRIVATE KEY-----`, \
         `RSA PRIVATE KEY`, `EC PRIVATE KEY` or `ENCRYPTED PRIVATE KEY`{}",
        if *.holds_certificate { " (it holds a certificate: are `cert_file` and `key_file` swapped?)" } else { "" }
    )]
    NoPrivateKey {
        /// The file holds a certificate instead.
        holds_certificate: bool,
    },
    /// The key is encrypted but no password is configured.
    #[error(
        "the private key is encrypted but no password is configured; set `key_password_env` or `key_password_file`"
    )]
    PasswordMissing,
    /// `key_password_env` names a variable that is not set.
    #[error(
        "the environment variable `{variable}` (key_password_env) is not set or not valid UTF-8; set it to the key's password"
    )]
    PasswordVariableUnset {
        /// The variable's name.
        variable: String,
    },
    /// `key_password_file` is empty.
    #[error("the key password file is empty; write the password on its first line")]
    PasswordFileEmpty,
    /// The password does not decrypt the key.
    #[error("cannot decrypt the private key: the password is wrong (or the file is damaged)")]
    WrongPassword,
    /// The key is encrypted with an algorithm that is not supported.
    #[error(
        "the private key is encrypted with an algorithm Switchboard does not support ({detail}); re-encrypt it \
         with `{command}` and set `key_file` to the new file"
    )]
    UnsupportedEncryption {
        /// The algorithm that was found.
        detail: String,
        /// The openssl command that re-encrypts the key.
        command: String,
    },
    /// The key is in the legacy OpenSSL encrypted PEM format.
    #[error(
        "the private key is encrypted in the legacy OpenSSL format (`Proc-Type: 4,ENCRYPTED`), which Switchboard \
         does not read; convert it to an encrypted PKCS#8 key with `{command}` (it asks for the old password and a \
         new one) and set `key_file` to the new file"
    )]
    LegacyEncryptedKey {
        /// The openssl command that converts the key.
        command: String,
    },
    /// The key was read but cannot be used for signing.
    #[error("the private key cannot be used: {detail}")]
    UnusableKey {
        /// Why the cryptographic library rejected it.
        detail: String,
    },
    /// The key does not belong to the certificate.
    #[error(
        "the private key does not belong to the certificate in {}: their public keys differ; set `key_file` to \
         the key the certificate was issued for",
        .cert_file.display()
    )]
    KeyMismatch {
        /// The certificate file.
        cert_file: PathBuf,
    },
    /// A setting that this role needs is missing.
    #[error("{0}")]
    Missing(&'static str),
    /// No CA file is configured and no system bundle was found.
    #[error(
        "no `ca_file` is set and no system CA bundle was found (looked for SSL_CERT_FILE and {searched}); set \
         `ca_file` to the authorities that sign the receiver's certificate"
    )]
    NoSystemRoots {
        /// The paths that were tried.
        searched: String,
    },
    /// The configuration has the other role.
    #[error("has `role: {actual}` but is used as a {expected}; use a configuration with `role: {expected}`")]
    WrongRole {
        /// The role the caller needs.
        expected: crate::config::TlsRole,
        /// The role of the configuration.
        actual: crate::config::TlsRole,
    },
    /// The name to verify the server against is not a DNS name or IP address.
    #[error("`{name}` is not a valid DNS name or IP address to check the server's certificate against")]
    InvalidServerName {
        /// The offending name.
        name: String,
    },
    /// rustls refused the configuration.
    #[error("{0}")]
    Rustls(String),
    /// A renewed certificate is outside its validity period: peers would
    /// refuse it, so it is not put in force.
    #[error(
        "certificate {index} of the certificate file {state} {date}; peers would refuse it, so it is not put in \
         force: install a certificate valid now"
    )]
    NotValidNow {
        /// Position of the certificate in the file, from 1 (1 is the leaf).
        index: usize,
        /// `expired on` or `is not valid until`.
        state: &'static str,
        /// The end (or start) of its validity, as [`format_time`](super::format_time) writes it.
        date: String,
    },
}

fn io_hint(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::NotFound => "check the path",
        io::ErrorKind::PermissionDenied => "make the file readable by the user Switchboard runs as",
        _ => "check that the path names a readable file",
    }
}
