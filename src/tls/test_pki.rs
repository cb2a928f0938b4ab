//! Test certificates created on first start (`create_if_missing: true`), so
//! that mutual TLS can be tried — and the demo run — before a real CA has
//! issued anything.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::pki::{CertificateAuthority, CertificateRequest, KeyType, PkiError};
use crate::config::Config;

/// How long created certificates are valid: long enough for a trial, short
/// enough that nobody mistakes them for real ones.
const DAYS: u32 = 397;

/// The CA key's path: the CA file with `.key` as its extension.
pub fn ca_key_path(ca_file: &Path) -> PathBuf {
    ca_file.with_extension("key")
}

/// Creates the missing files of every TLS configuration marked
/// `create_if_missing`; configurations sharing a `ca_file` share the CA.
/// Returns the files created. Existing files are never overwritten.
pub fn create_missing(config: &Config) -> Result<Vec<PathBuf>, PkiError> {
    let mut created = Vec::new();
    let mut authorities: HashMap<PathBuf, CertificateAuthority> = HashMap::new();
    for (name, tls) in config.tls.iter().filter(|(_, t)| t.create_if_missing) {
        let (Some(ca), Some(cert), Some(key)) = (&tls.ca_file, &tls.cert_file, &tls.key_file) else {
            // The configuration check requires all three.
            continue;
        };
        if cert.exists() && key.exists() {
            continue;
        }
        if !authorities.contains_key(ca) {
            let ca_key = ca_key_path(ca);
            let authority = if ca.exists() {
                CertificateAuthority::load(ca, &ca_key, None).map_err(|e| {
                    PkiError::Load(format!(
                        "tls.{name}: {} must be created, but the CA {} cannot sign it: {e}",
                        cert.display(),
                        ca.display()
                    ))
                })?
            } else {
                let (authority, files) =
                    CertificateAuthority::new_root("Switchboard test CA", DAYS, KeyType::EcdsaP256)?;
                files.write(ca, &ca_key, false)?;
                created.extend([ca.clone(), ca_key]);
                authority
            };
            authorities.insert(ca.clone(), authority);
        }
        let Some(authority) = authorities.get(ca) else { continue };
        let mut request = CertificateRequest::new(format!("switchboard {name}"), DAYS);
        request.subject_alt_names = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        let issued = authority.issue(&request)?;
        issued.write(cert, key, false)?;
        created.extend([cert.clone(), key.clone()]);
    }
    Ok(created)
}
