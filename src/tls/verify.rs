//! Certificate verifiers beyond rustls' defaults, and the chain verdict of
//! the certificate doctor.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::config::TlsRole;

/// The server verifier of a client that checks the server's certificate
/// (`verify_peer: require`).
///
/// It checks the chain up to an authority of `ca_file`, every signature on
/// it, the validity period of each certificate and the `serverAuth` usage,
/// as rustls' standard verifier does. Then the name:
///
/// - `verify_host: true`: the certificate must name the host (or
///   `server_name`) in its subject alternative names, DNS or IP. Only when a
///   certificate has no subject alternative names at all is its common name
///   (CN) compared instead, the documented fallback for certificates issued
///   before SANs were required.
/// - `verify_host: false`: the name is not checked, everything else is. That
///   suits receivers reached by an address their certificate does not list
///   (a load balancer, an IP address, a tunnel) while still refusing
///   certificates that no trusted authority issued.
#[derive(Debug)]
pub(crate) struct ServerVerifier {
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) provider: Arc<CryptoProvider>,
    pub(crate) verify_host: bool,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if self.verify_host
            && let Err(error) = verify_server_name(&cert, server_name)
            && !common_name_fallback(end_entity, server_name)
        {
            return Err(error);
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Verifiers that check less than a peer should: each used only where a
/// configuration asks for it in so many words, and named so that no one
/// reaches for one by accident.
pub(crate) mod danger {
    use super::*;

    /// The server verifier of a client with `verify_peer: none`: any
    /// certificate is accepted (the handshake signatures are still checked, so
    /// the session is encrypted to whoever answered). Fit for tests only; the
    /// configuration loader warns about it.
    #[derive(Debug)]
    pub(crate) struct AcceptAnyServer {
        pub(crate) provider: Arc<CryptoProvider>,
    }

    impl ServerCertVerifier for AcceptAnyServer {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider.signature_verification_algorithms.supported_schemes()
        }
    }
}

/// Verifies `chain` (leaf first) against `anchors` as a peer would at time
/// `now`: a server certificate (`role: server`, checked like a client checks
/// it, without a name) or a client certificate (`role: client`, checked like
/// a server checks it). This is the real verdict: the same code that runs in
/// a handshake.
pub(crate) fn verify_chain(
    chain: &[CertificateDer<'static>],
    anchors: &[CertificateDer<'static>],
    role: TlsRole,
    now: UnixTime,
) -> Result<(), rustls::Error> {
    let provider = Arc::new(super::provider());
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err(rustls::Error::NoCertificatesPresented);
    };
    let mut roots = RootCertStore::empty();
    for anchor in anchors {
        // A certificate that cannot be an anchor simply does not count.
        let _ = roots.add(anchor.clone());
    }
    if roots.is_empty() {
        return Err(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer));
    }
    match role {
        TlsRole::Server => {
            let cert = ParsedCertificate::try_from(leaf)?;
            verify_server_cert_signed_by_trust_anchor(
                &cert,
                &roots,
                intermediates,
                now,
                provider.signature_verification_algorithms.all,
            )
        }
        TlsRole::Client => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
            verifier.verify_client_cert(leaf, intermediates, now).map(|_| ())
        }
    }
}

/// Whether a certificate without subject alternative names has `name` as
/// its common name.
fn common_name_fallback(end_entity: &CertificateDer<'_>, name: &ServerName<'_>) -> bool {
    let Ok(info) = super::inspect::CertificateInfo::parse(end_entity) else { return false };
    if !info.dns_names.is_empty() || !info.ip_addresses.is_empty() {
        return false;
    }
    let host = match name {
        ServerName::DnsName(dns) => dns.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => return false,
    };
    info.names_host(&host)
}
