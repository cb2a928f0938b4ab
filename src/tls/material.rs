//! The files of a TLS configuration, loaded and checked, and the rustls
//! configurations built from them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::{CertificateDer, ServerName};

use super::error::{TlsError, TlsErrorKind};
use super::pem::{self, PasswordSource};
use super::verify::ServerVerifier;
use super::verify::danger::AcceptAnyServer;
use crate::config::{TlsConfig, TlsRole, TlsVersion, VerifyPeer};

/// Where a client without `ca_file` looks for the system's authorities, after
/// the `SSL_CERT_FILE` environment variable (the paths of Debian, Alpine,
/// Fedora/RHEL and openSUSE).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The certificates and key of one TLS configuration, read from its files
/// and checked: every certificate parses, the key decrypts, and the key
/// belongs to the certificate. Loading fails early, with the file and the
/// fix, rather than at the first handshake.
///
/// Paths are used as the configuration holds them; the productions file
/// loader has already resolved relative paths against its own folder.
pub struct TlsMaterial {
    name: String,
    config: TlsConfig,
    ca_certs: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    certified_key: Option<Arc<CertifiedKey>>,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of logs.
        f.debug_struct("TlsMaterial")
            .field("name", &self.name)
            .field("role", &self.config.role)
            .field("ca_certs", &self.ca_certs.len())
            .field("chain", &self.chain.len())
            .field("has_key", &self.certified_key.is_some())
            .finish()
    }
}

impl TlsMaterial {
    /// Reads and checks the files of the configuration `name`.
    pub fn load(name: &str, config: &TlsConfig) -> Result<Self, TlsError> {
        let ca_certs = match &config.ca_file {
            Some(path) => pem::ca_certificates(name, path)?,
            None => Vec::new(),
        };
        let chain = match &config.cert_file {
            Some(path) => pem::certificates_in_file(name, path, "certificate file")?,
            None => Vec::new(),
        };
        let certified_key = match (&config.cert_file, &config.key_file) {
            (Some(cert_file), Some(key_file)) => {
                let password = match (&config.key_password_env, &config.key_password_file) {
                    (Some(var), _) => PasswordSource::Env(var),
                    (None, Some(file)) => PasswordSource::File(file),
                    (None, None) => PasswordSource::None,
                };
                let key = pem::private_key(name, key_file, password)?;
                Some(Arc::new(certified_key(name, cert_file, key_file, chain.clone(), key)?))
            }
            (None, Some(key_file)) => {
                return Err(TlsError::new(
                    name,
                    Some(key_file),
                    TlsErrorKind::Missing("`key_file` is set but `cert_file` is not; set both"),
                ));
            }
            (Some(cert_file), None) => {
                return Err(TlsError::new(
                    name,
                    Some(cert_file),
                    TlsErrorKind::Missing("`cert_file` is set but `key_file` is not; set both"),
                ));
            }
            (None, None) => None,
        };
        if config.role == TlsRole::Server && certified_key.is_none() {
            return Err(TlsError::new(
                name,
                None,
                TlsErrorKind::Missing("a server needs `cert_file` and `key_file`, the certificate it presents"),
            ));
        }
        Ok(Self { name: name.to_owned(), config: config.clone(), ca_certs, chain, certified_key })
    }

    /// The configuration's name under `tls:`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The settings it was loaded from.
    pub fn config(&self) -> &TlsConfig {
        &self.config
    }

    /// The certificates of `ca_file`, in file order (empty without it).
    pub fn ca_certificates(&self) -> &[CertificateDer<'static>] {
        &self.ca_certs
    }

    /// The chain of `cert_file` as presented to the peer, leaf first (empty
    /// without it).
    pub fn certificate_chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// Builds the rustls server configuration (`role: server`).
    ///
    /// Client certificates follow `verify_peer`: `require` (mutual TLS) asks
    /// every client for a certificate that chains to `ca_file` and refuses
    /// the handshake without one; `optional` checks a certificate when the
    /// client sends one; `none` does not ask.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        self.expect_role(TlsRole::Server)?;
        let provider = Arc::new(super::provider());
        let verifier: Arc<dyn ClientCertVerifier> = match self.config.verify_peer {
            VerifyPeer::None => WebPkiClientVerifier::no_client_auth(),
            peer => {
                let roots = Arc::new(self.root_store(self.ca_file_or_missing()?)?);
                let builder = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
                let builder = if peer == VerifyPeer::Optional { builder.allow_unauthenticated() } else { builder };
                builder.build().map_err(|e| self.rustls_error(e))?
            }
        };
        let Some(key) = &self.certified_key else {
            return Err(self.error(None, TlsErrorKind::Missing("a server needs `cert_file` and `key_file`")));
        };
        let config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions(self.config.min_version))
            .map_err(|e| self.rustls_error(e))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(key.clone())));
        Ok(Arc::new(config))
    }

    /// Builds the rustls client configuration (`role: client`).
    ///
    /// The server's certificate must chain to `ca_file` (or, without it, to
    /// the system's authorities). With `verify_host: true` it must also name
    /// the host (see [`server_name`](Self::server_name)); with `false` the
    /// name is not checked but everything else is. With `verify_peer: none`
    /// nothing is checked. A client certificate is sent when `cert_file` is
    /// set and the server asks for one.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        self.expect_role(TlsRole::Client)?;
        let provider = Arc::new(super::provider());
        let verifier: Arc<dyn ServerCertVerifier> = match (self.config.verify_peer, self.config.verify_host) {
            (VerifyPeer::None, _) => Arc::new(AcceptAnyServer { provider: provider.clone() }),
            (_, verify_host) => Arc::new(ServerVerifier {
                roots: Arc::new(self.client_roots()?),
                provider: provider.clone(),
                verify_host,
            }),
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions(self.config.min_version))
            .map_err(|e| self.rustls_error(e))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &self.certified_key {
            Some(key) => builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(key.clone()))),
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }

    /// The name a client sends (SNI) and checks the server's certificate
    /// against: `server_name` when set, else `host` (the item's host, a DNS
    /// name or an IP address).
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>, TlsError> {
        server_name(&self.name, &self.config, host)
    }

    fn expect_role(&self, expected: TlsRole) -> Result<(), TlsError> {
        if self.config.role == expected {
            Ok(())
        } else {
            Err(self.error(None, TlsErrorKind::WrongRole { expected, actual: self.config.role }))
        }
    }

    fn ca_file_or_missing(&self) -> Result<&[CertificateDer<'static>], TlsError> {
        if self.ca_certs.is_empty() {
            Err(self.error(
                None,
                TlsErrorKind::Missing(
                    "verifying client certificates needs `ca_file`, the authorities that sign them; add it or set \
                     `verify_peer: none`",
                ),
            ))
        } else {
            Ok(&self.ca_certs)
        }
    }

    fn client_roots(&self) -> Result<RootCertStore, TlsError> {
        if !self.ca_certs.is_empty() {
            return self.root_store(&self.ca_certs);
        }
        let env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
        for path in env.iter().map(PathBuf::as_path).chain(SYSTEM_BUNDLES.iter().map(Path::new)) {
            if path.is_file() {
                let certs = pem::certificates_in_file(&self.name, path, "system CA bundle")?;
                return self.root_store(&certs);
            }
        }
        Err(self.error(None, TlsErrorKind::NoSystemRoots { searched: SYSTEM_BUNDLES.join(", ") }))
    }

    fn root_store(&self, certs: &[CertificateDer<'static>]) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        let (_added, ignored) = roots.add_parsable_certificates(certs.iter().cloned());
        if roots.is_empty() {
            return Err(self.error(
                self.config.ca_file.as_deref(),
                TlsErrorKind::Rustls(format!(
                    "none of the {ignored} certificate(s) can serve as a trust anchor; check that the file holds \
                     CA certificates"
                )),
            ));
        }
        Ok(roots)
    }

    fn error(&self, file: Option<&Path>, kind: TlsErrorKind) -> TlsError {
        TlsError::new(&self.name, file, kind)
    }

    fn rustls_error(&self, error: impl fmt::Display) -> TlsError {
        self.error(None, TlsErrorKind::Rustls(error.to_string()))
    }
}

/// The name a client of configuration `name` sends (SNI) and verifies:
/// `server_name` when set, else `host`.
pub fn server_name(name: &str, config: &TlsConfig, host: &str) -> Result<ServerName<'static>, TlsError> {
    let wanted = config.server_name.as_deref().unwrap_or(host);
    let trimmed = wanted.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(trimmed.to_owned())
        .map_err(|_| TlsError::new(name, None, TlsErrorKind::InvalidServerName { name: wanted.to_owned() }))
}

fn versions(min: TlsVersion) -> &'static [&'static SupportedProtocolVersion] {
    static BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
    static ONLY_13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
    match min {
        TlsVersion::Tls12 => BOTH,
        TlsVersion::Tls13 => ONLY_13,
    }
}

/// Pairs the chain with its key, refusing a key that belongs to another
/// certificate (their public keys are compared).
fn certified_key(
    name: &str,
    cert_file: &Path,
    key_file: &Path,
    chain: Vec<CertificateDer<'static>>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
) -> Result<CertifiedKey, TlsError> {
    let provider: CryptoProvider = super::provider();
    let signing_key = provider.key_provider.load_private_key(key).map_err(|e| {
        TlsError::new(name, Some(key_file), TlsErrorKind::UnusableKey { detail: describe_key_error(&e) })
    })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::new(name, Some(key_file), TlsErrorKind::KeyMismatch { cert_file: cert_file.to_owned() }))
        }
        Err(e) => Err(TlsError::new(name, Some(cert_file), TlsErrorKind::Rustls(e.to_string()))),
    }
}

fn describe_key_error(error: &rustls::Error) -> String {
    match error {
        rustls::Error::General(text) => format!(
            "{text}; supported keys are RSA (2048 to 8192 bits), ECDSA P-256 and P-384, and Ed25519, in PKCS#8, \
             PKCS#1 or SEC1 form"
        ),
        other => other.to_string(),
    }
}
