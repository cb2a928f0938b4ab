//! A small certificate authority for trying TLS before a real one issues
//! certificates: `switchboard tls new-ca` and `switchboard tls new-cert`,
//! the demo production's certificates and the tests' PKI.

use std::fmt;
use std::io::Write as _;
use std::path::Path;
use std::str::FromStr;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SerialNumber,
};
use ring::rand::SecureRandom as _;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use super::pem::{self, PasswordSource};

/// The key algorithm of a generated certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyType {
    /// ECDSA on the P-256 curve (default): small, fast, accepted everywhere.
    #[default]
    EcdsaP256,
    /// Ed25519: smallest and fastest, but some older TLS stacks lack it.
    Ed25519,
    /// RSA 2048 bits, for peers that accept nothing else. Generating it takes
    /// a moment.
    Rsa2048,
}

impl KeyType {
    /// Every key type, in the order the help lists them.
    pub const ALL: [KeyType; 3] = [KeyType::EcdsaP256, KeyType::Ed25519, KeyType::Rsa2048];

    /// The spelling on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::Ed25519 => "ed25519",
            KeyType::Rsa2048 => "rsa2048",
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyType::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            format!("unknown key type {s:?}; use one of {}", KeyType::ALL.map(KeyType::as_str).join(", "))
        })
    }
}

/// Why a certificate could not be generated or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// The certificate library refused the request.
    #[error("cannot generate the certificate: {0}")]
    Generate(String),
    /// The CA certificate or key cannot be used.
    #[error("{0}")]
    Load(String),
    /// A file cannot be written.
    #[error("cannot write {}: {error}{}", .path.display(), if .error.kind() == std::io::ErrorKind::AlreadyExists { "; remove it first, or pass --force to overwrite it" } else { "" })]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// The operating system's error.
        error: std::io::Error,
    },
}

fn generate_error(error: impl fmt::Display) -> PkiError {
    PkiError::Generate(error.to_string())
}

/// What a new certificate should say.
#[derive(Debug, Clone)]
pub struct CertificateRequest {
    /// The subject's common name (CN).
    pub common_name: String,
    /// Subject alternative names: DNS names, or IP addresses (written as
    /// such, e.g. `127.0.0.1`).
    pub subject_alt_names: Vec<String>,
    /// Add the `serverAuth` extended key usage.
    pub server_auth: bool,
    /// Add the `clientAuth` extended key usage.
    pub client_auth: bool,
    /// Issue an intermediate certificate authority instead of a leaf.
    pub is_ca: bool,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// The key algorithm of the new key.
    pub key_type: KeyType,
}

impl CertificateRequest {
    /// A leaf for both server and client use (mutual TLS on either side),
    /// valid from an hour ago (to tolerate clock skew) for `days` days.
    pub fn new(common_name: impl Into<String>, days: u32) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            common_name: common_name.into(),
            subject_alt_names: Vec::new(),
            server_auth: true,
            client_auth: true,
            is_ca: false,
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(i64::from(days)),
            key_type: KeyType::default(),
        }
    }
}

/// A certificate and its new private key, as PEM.
pub struct IssuedCertificate {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM (unencrypted: protect the file).
    pub key_pem: Zeroizing<String>,
    /// The certificate, DER.
    pub cert_der: CertificateDer<'static>,
}

impl fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCertificate").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

impl IssuedCertificate {
    /// Writes the certificate (mode 0644) and key (mode 0600) files. Existing
    /// files are replaced only with `overwrite`.
    pub fn write(&self, cert_path: &Path, key_path: &Path, overwrite: bool) -> Result<(), PkiError> {
        write_file(key_path, self.key_pem.as_bytes(), 0o600, overwrite)?;
        write_file(cert_path, self.cert_pem.as_bytes(), 0o644, overwrite)
    }
}

/// A certificate authority that can issue certificates.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Creates a self-signed root authority named `common_name`, valid for
    /// `days` days. Returns it and its certificate and key as PEM.
    pub fn new_root(
        common_name: &str,
        days: u32,
        key_type: KeyType,
    ) -> Result<(CertificateAuthority, IssuedCertificate), PkiError> {
        let mut request = CertificateRequest::new(common_name, days);
        request.is_ca = true;
        request.key_type = key_type;
        Self::new_root_from(&request)
    }

    /// Creates a self-signed root authority as `request` says (its `is_ca`
    /// is implied).
    pub fn new_root_from(request: &CertificateRequest) -> Result<(CertificateAuthority, IssuedCertificate), PkiError> {
        let key = generate_key(request.key_type)?;
        let params = params_for(&CertificateRequest { is_ca: true, ..request.clone() })?;
        let cert = params.self_signed(&key).map_err(generate_error)?;
        let issued = IssuedCertificate {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
            cert_der: cert.der().clone(),
        };
        let ca = CertificateAuthority {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        };
        Ok((ca, issued))
    }

    /// An authority from its certificate and private key, as PEM text.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let cert_der = pem::certificates_in_bytes(cert_pem.as_bytes())
            .map_err(|e| PkiError::Load(format!("the CA certificate: {e}")))?
            .into_iter()
            .next()
            .ok_or_else(|| PkiError::Load("the CA certificate file is empty".to_owned()))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|_| PkiError::Load("the CA key is not an unencrypted PEM private key".to_owned()))?;
        Self::from_parts(cert_der, key)
    }

    /// An authority from its certificate and key files. The key may be in
    /// any form Switchboard reads; an encrypted key needs `key_password_env`,
    /// the name of the environment variable holding its password.
    pub fn load(cert_file: &Path, key_file: &Path, key_password_env: Option<&str>) -> Result<Self, PkiError> {
        let label = cert_file.display().to_string();
        let cert_der = pem::certificates_in_file(&label, cert_file, "CA certificate file")
            .map_err(|e| PkiError::Load(e.to_string()))?
            .into_iter()
            .next()
            .ok_or_else(|| PkiError::Load(format!("{} holds no certificate", cert_file.display())))?;
        let password = key_password_env.map_or(PasswordSource::None, PasswordSource::Env);
        let key = pem::private_key(&label, key_file, password).map_err(|e| PkiError::Load(e.to_string()))?;
        Self::from_parts(cert_der, key)
    }

    fn from_parts(cert_der: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> Result<Self, PkiError> {
        let pkcs8 = to_pkcs8(key)?;
        let key = KeyPair::try_from(&PrivateKeyDer::Pkcs8(pkcs8))
            .map_err(|e| PkiError::Load(format!("the CA key cannot sign: {e}")))?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| PkiError::Load(format!("the CA certificate cannot be used: {e}")))?;
        let cert_pem = pem_encode("CERTIFICATE", cert_der.as_ref());
        Ok(Self { issuer, cert_pem, cert_der })
    }

    /// The authority's certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The authority's certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Issues a certificate with a new key.
    pub fn issue(&self, request: &CertificateRequest) -> Result<IssuedCertificate, PkiError> {
        let key = generate_key(request.key_type)?;
        let params = params_for(request)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(generate_error)?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
            cert_der: cert.der().clone(),
        })
    }

    /// Issues an intermediate authority and returns it ready to issue in
    /// turn, with its certificate and key as PEM.
    pub fn issue_intermediate(
        &self,
        request: &CertificateRequest,
    ) -> Result<(CertificateAuthority, IssuedCertificate), PkiError> {
        let request = CertificateRequest { is_ca: true, ..request.clone() };
        let key = generate_key(request.key_type)?;
        let params = params_for(&request)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(generate_error)?;
        let issued = IssuedCertificate {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
            cert_der: cert.der().clone(),
        };
        let ca = CertificateAuthority {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        };
        Ok((ca, issued))
    }
}

fn params_for(request: &CertificateRequest) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(request.subject_alt_names.clone()).map_err(generate_error)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, request.common_name.clone());
    params.not_before = request.not_before;
    params.not_after = request.not_after;
    params.serial_number = Some(random_serial()?);
    params.use_authority_key_identifier_extension = true;
    if request.is_ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    } else {
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if request.key_type == KeyType::Rsa2048 {
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        if request.server_auth {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if request.client_auth {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth);
        }
    }
    Ok(params)
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| generate_error("no random numbers"))?;
    // Positive, and without a leading zero byte.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn generate_key(key_type: KeyType) -> Result<KeyPair, PkiError> {
    match key_type {
        KeyType::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate_error),
        KeyType::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(generate_error),
        KeyType::Rsa2048 => {
            // ring cannot generate RSA keys; the rsa crate can.
            use rsa::pkcs8::EncodePrivateKey as _;
            let key = rsa::PrivateKey::new(&mut RingRng, 2048).map_err(generate_error)?;
            let der = key.to_pkcs8_der().map_err(generate_error)?;
            let der = PrivatePkcs8KeyDer::from(der.as_bytes().to_vec());
            KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256).map_err(generate_error)
        }
    }
}

/// Turns a PKCS#1 RSA key into PKCS#8, the form the signer reads.
fn to_pkcs8(key: PrivateKeyDer<'static>) -> Result<PrivatePkcs8KeyDer<'static>, PkiError> {
    match key {
        PrivateKeyDer::Pkcs8(pkcs8) => Ok(pkcs8),
        PrivateKeyDer::Pkcs1(pkcs1) => {
            use rsa::pkcs1::DecodeRsaPrivateKey as _;
            use rsa::pkcs8::EncodePrivateKey as _;
            let key = rsa::PrivateKey::from_pkcs1_der(pkcs1.secret_pkcs1_der())
                .map_err(|e| PkiError::Load(format!("the CA key is not a valid RSA key: {e}")))?;
            let der = key.to_pkcs8_der().map_err(|e| PkiError::Load(e.to_string()))?;
            Ok(PrivatePkcs8KeyDer::from(der.as_bytes().to_vec()))
        }
        _ => Err(PkiError::Load(
            "the CA key is a SEC1 EC key; convert it to PKCS#8 with `openssl pkcs8 -topk8 -nocrypt -in ca.key -out \
             ca-pkcs8.key` and use the new file"
                .to_owned(),
        )),
    }
}

/// The operating system's random numbers (through ring) for the rsa crate.
struct RingRng;

impl rsa::rand_core::TryRng for RingRng {
    type Error = NoRandomness;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut bytes = [0u8; 4];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut bytes = [0u8; 8];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        ring::rand::SystemRandom::new().fill(dst).map_err(|_| NoRandomness)
    }
}

/// The operating system did not provide random numbers.
#[derive(Debug)]
struct NoRandomness;

impl fmt::Display for NoRandomness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the operating system provided no random numbers")
    }
}

impl std::error::Error for NoRandomness {}

impl rsa::rand_core::TryCryptoRng for RingRng {}

fn pem_encode(label: &str, der: &[u8]) -> String {
    pkcs8::der::pem::encode_string(label, pkcs8::der::pem::LineEnding::LF, der).unwrap_or_default()
}

fn write_file(path: &Path, contents: &[u8], mode: u32, overwrite: bool) -> Result<(), PkiError> {
    let fail = |error| PkiError::Write { path: path.to_owned(), error };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if overwrite {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(fail)?;
    // An existing file keeps its old mode when overwritten; set it anyway.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(fail)?;
    }
    file.write_all(contents).map_err(fail)?;
    file.sync_all().map_err(fail)
}
