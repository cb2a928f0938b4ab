//! TLS configurations: loading certificates and keys, building rustls
//! configurations for `mllp_in` (server) and `mllp_out` (client) items,
//! reloading renewed certificates, inspecting certificates, the certificate
//! doctor behind `switchboard tls check`, and a small test PKI.
//!
//! Everything runs on rustls with the *ring* provider ([`provider`]); no
//! OpenSSL is linked.
//!
//! # Using a configuration in an item
//!
//! ```no_run
//! # async fn demo(config: &switchboard::config::Config) -> Result<(), Box<dyn std::error::Error>> {
//! use switchboard::tls::TlsConfigHandle;
//!
//! // Server side (mllp_in with `tls: adt-server`):
//! let server = TlsConfigHandle::load("adt-server", &config.tls["adt-server"])?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:2575").await?;
//! let (tcp, _) = listener.accept().await?;
//! let tls_stream = server.acceptor()?.accept(tcp).await?;
//!
//! // Client side (mllp_out with `tls: lab-client`, host lab.example.org):
//! let client = TlsConfigHandle::load("lab-client", &config.tls["lab-client"])?;
//! let tcp = tokio::net::TcpStream::connect("lab.example.org:6661").await?;
//! let tls_stream = client.connector()?.connect(client.server_name("lab.example.org")?, tcp).await?;
//!
//! // Periodically (a renewed certificate is used by the next handshake):
//! if let Err(e) = server.reload_if_changed() { /* log; the old configuration stays */ }
//! # Ok(()) }
//! ```
//!
//! The status hub gets the expiry data with [`check`] (or [`check_all`] for
//! a whole productions file) and [`TlsReport::status`].

mod doctor;
mod error;
mod inspect;
mod material;
mod pem;
pub mod pki;
mod reload;
mod test_pki;
mod verify;

use std::path::Path;

use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

pub use doctor::{CertificateStatus, Finding, FindingKind, Severity, TlsReport, check, check_all};
pub use error::{TlsError, TlsErrorKind};
pub use inspect::CertificateInfo;
pub use material::{TlsMaterial, server_name};
pub use reload::TlsConfigHandle;
pub use test_pki::{ca_key_path, create_missing};

/// The cryptography provider of every TLS configuration: rustls with *ring*.
///
/// Configurations are always built with an explicit provider
/// (`builder_with_provider`), never from a process-wide default, so the
/// choice cannot be changed by another crate and rustls never has to pick
/// between two providers at run time.
pub fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Reads every certificate of a PEM bundle (or a DER certificate, or a
/// folder of PEM files), for `switchboard tls inspect` and the web UI.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let label = path.display().to_string();
    pem::ca_certificates(&label, path).map_err(|mut e| {
        if let TlsErrorKind::NoCertificates { what, .. } = &mut e.kind {
            *what = "file";
        }
        e
    })
}

/// `2026-05-01 12:00:00 UTC`, the format of every date the TLS module prints.
pub fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn rfc3339<S: serde::Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    let text = t.format(&time::format_description::well_known::Rfc3339).map_err(serde::ser::Error::custom)?;
    s.serialize_str(&text)
}

fn rfc3339_opt<S: serde::Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}
