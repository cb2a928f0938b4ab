//! TLS configurations against a PKI made here: loading keys of every kind,
//! the certificate doctor on purpose-built broken certificates, and real
//! handshakes between rustls servers and clients built from configurations
//! (and `openssl s_client`) over 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use switchboard::config::{TlsConfig, TlsRole, TlsVersion, VerifyPeer};
use switchboard::tls::pki::{CertificateAuthority, CertificateRequest, IssuedCertificate, KeyType};
use switchboard::tls::{
    self, CertificateInfo, FindingKind, Severity, TlsConfigHandle, TlsErrorKind, TlsMaterial, TlsReport,
};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TIMEOUT: Duration = Duration::from_secs(10);

/// root → intermediate → leaves, plus a second, untrusted root, written to a
/// temporary folder.
struct Pki {
    dir: tempfile::TempDir,
    intermediate: CertificateAuthority,
    intermediate_pem: String,
    other_root: CertificateAuthority,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (root, root_files) =
            CertificateAuthority::new_root("Test Root CA", 3650, KeyType::EcdsaP256).expect("root");
        let (intermediate, intermediate_files) =
            root.issue_intermediate(&CertificateRequest::new("Test Intermediate CA", 1825)).expect("intermediate");
        let (other_root, other_files) =
            CertificateAuthority::new_root("Untrusted Root CA", 3650, KeyType::EcdsaP256).expect("other root");
        let pki = Self { dir, intermediate, intermediate_pem: intermediate_files.cert_pem.clone(), other_root };
        pki.write("root.crt", &root_files.cert_pem);
        pki.write("intermediate.crt", &intermediate_files.cert_pem);
        pki.write("other-root.crt", &other_files.cert_pem);
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write");
        set_mode(&path, 0o600);
        path
    }

    /// Issues a leaf from the intermediate and writes `NAME.crt` (leaf then
    /// intermediate) and `NAME.key`.
    fn leaf(&self, name: &str, request: &CertificateRequest) -> (PathBuf, PathBuf) {
        let issued = self.intermediate.issue(request).expect("leaf");
        self.save(name, &issued, &format!("{}{}", issued.cert_pem, self.intermediate_pem))
    }

    fn save(&self, name: &str, issued: &IssuedCertificate, chain_pem: &str) -> (PathBuf, PathBuf) {
        let cert = self.write(&format!("{name}.crt"), chain_pem);
        let key = self.write(&format!("{name}.key"), &issued.key_pem);
        (cert, key)
    }

    fn server_leaf(&self, name: &str) -> (PathBuf, PathBuf) {
        let mut request = CertificateRequest::new("localhost", 365);
        request.subject_alt_names = vec!["localhost".into(), "127.0.0.1".into()];
        self.leaf(name, &request)
    }

    fn client_leaf(&self, name: &str) -> (PathBuf, PathBuf) {
        let mut request = CertificateRequest::new("switchboard-client", 365);
        request.subject_alt_names = vec!["switchboard-client.example.org".into()];
        self.leaf(name, &request)
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn server_config(ca: Option<&Path>, cert: &Path, key: &Path, verify_peer: VerifyPeer) -> TlsConfig {
    TlsConfig {
        role: TlsRole::Server,
        ca_file: ca.map(Path::to_path_buf),
        cert_file: Some(cert.to_path_buf()),
        key_file: Some(key.to_path_buf()),
        key_password_env: None,
        key_password_file: None,
        verify_peer,
        verify_host: true,
        server_name: None,
        min_version: TlsVersion::Tls12,
        create_if_missing: false,
    }
}

fn client_config(ca: &Path, cert_key: Option<(&Path, &Path)>) -> TlsConfig {
    TlsConfig {
        role: TlsRole::Client,
        ca_file: Some(ca.to_path_buf()),
        cert_file: cert_key.map(|(c, _)| c.to_path_buf()),
        key_file: cert_key.map(|(_, k)| k.to_path_buf()),
        key_password_env: None,
        key_password_file: None,
        verify_peer: VerifyPeer::Require,
        verify_host: true,
        server_name: None,
        min_version: TlsVersion::Tls12,
        create_if_missing: false,
    }
}

fn load_error(name: &str, config: &TlsConfig) -> tls::TlsError {
    match TlsMaterial::load(name, config) {
        Ok(m) => panic!("expected {name} to fail to load, got {m:?}"),
        Err(e) => e,
    }
}

fn report(config: &TlsConfig, hosts: &[&str]) -> TlsReport {
    let hosts: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
    tls::check("test", config, 30, &hosts)
}

fn assert_finding(report: &TlsReport, kind: FindingKind, severity: Severity) {
    assert!(
        report.findings_of(kind).any(|f| f.severity == severity),
        "expected a {severity} finding {kind:?}, got {:#?}",
        report.findings
    );
}

fn serial_of(der: &CertificateDer<'_>) -> String {
    CertificateInfo::parse(der).expect("parse").serial
}

// ---------------------------------------------------------------- handshakes

/// What each side saw of one connection.
struct Outcome {
    server: Result<Option<String>, String>,
    client: Result<String, String>,
}

/// One connection: the server accepts with `server`'s acceptor (taken per
/// connection, as items do), the client connects to `host` with `client`'s
/// connector, sends `ping` and reads `pong`. The server's result is the
/// serial of the client certificate, if any; the client's is the serial of
/// the server certificate.
async fn connect(server: &Arc<TlsConfigHandle>, client: &TlsConfigHandle, host: &str) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let acceptor = server.acceptor().expect("acceptor");
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut stream = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let peer = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(serial_of);
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        stream.write_all(b"pong").await.map_err(|e| e.to_string())?;
        stream.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(peer)
    });
    let client_result = async {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
        let name = client.server_name(host).map_err(|e| e.to_string())?;
        let connector = client.connector().map_err(|e| e.to_string())?;
        let mut stream = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
        let serial = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(serial_of).unwrap_or_default();
        stream.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        if &buf != b"pong" {
            return Err(format!("unexpected reply {buf:?}"));
        }
        Ok(serial)
    };
    let client = tokio::time::timeout(TIMEOUT, client_result).await.unwrap_or_else(|_| Err("client timed out".into()));
    let server = match tokio::time::timeout(TIMEOUT, server_task).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("server timed out".into()),
    };
    Outcome { server, client }
}

fn handle(name: &str, config: &TlsConfig) -> TlsConfigHandle {
    TlsConfigHandle::load(name, config).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn mutual_tls_succeeds_and_each_side_sees_the_other() {
    let pki = Pki::new();
    let (server_cert, server_key) = pki.server_leaf("server");
    let (client_cert, client_key) = pki.client_leaf("client");
    let ca = pki.path("root.crt");
    let server = Arc::new(handle("server", &server_config(Some(&ca), &server_cert, &server_key, VerifyPeer::Require)));
    for min_version in [TlsVersion::Tls12, TlsVersion::Tls13] {
        let mut config = client_config(&ca, Some((&client_cert, &client_key)));
        config.min_version = min_version;
        let client = handle("client", &config);
        let outcome = connect(&server, &client, "localhost").await;
        let server_serial = outcome.client.expect("client side");
        let client_serial = outcome.server.expect("server side");
        let material = client.material();
        assert_eq!(client_serial.as_deref(), Some(serial_of(&material.certificate_chain()[0]).as_str()));
        assert_eq!(server_serial, serial_of(&server.material().certificate_chain()[0]));
    }
    // An IP address as the host matches the IP SAN.
    let client = handle("client", &client_config(&ca, Some((&client_cert, &client_key))));
    assert!(connect(&server, &client, "127.0.0.1").await.client.is_ok());
}

#[tokio::test]
async fn a_server_that_requires_certificates_rejects_a_client_without_one() {
    let pki = Pki::new();
    let (server_cert, server_key) = pki.server_leaf("server");
    let ca = pki.path("root.crt");
    let server = Arc::new(handle("server", &server_config(Some(&ca), &server_cert, &server_key, VerifyPeer::Require)));
    let client = handle("client", &client_config(&ca, None));
    let outcome = connect(&server, &client, "localhost").await;
    let server_error = outcome.server.expect_err("server must refuse");
    assert!(server_error.to_lowercase().contains("certificate"), "{server_error}");
    assert!(outcome.client.is_err());

    // `optional` accepts the same client, and still verifies one that sends a certificate.
    let optional =
        Arc::new(handle("server", &server_config(Some(&ca), &server_cert, &server_key, VerifyPeer::Optional)));
    let outcome = connect(&optional, &client, "localhost").await;
    assert_eq!(outcome.server.expect("accepted"), None);
    // `none` does not ask.
    let open = Arc::new(handle("server", &server_config(None, &server_cert, &server_key, VerifyPeer::None)));
    assert!(connect(&open, &client, "localhost").await.client.is_ok());
}

#[tokio::test]
async fn certificates_from_an_untrusted_authority_are_rejected_both_ways() {
    let pki = Pki::new();
    let (server_cert, server_key) = pki.server_leaf("server");
    let ca = pki.path("root.crt");
    let other_ca = pki.path("other-root.crt");
    // A client certificate from another authority.
    let mut request = CertificateRequest::new("intruder", 365);
    request.subject_alt_names = vec!["intruder.example.org".into()];
    let intruder = pki.other_root.issue(&request).expect("issue");
    let (intruder_cert, intruder_key) = pki.save("intruder", &intruder, &intruder.cert_pem);
    let server = Arc::new(handle("server", &server_config(Some(&ca), &server_cert, &server_key, VerifyPeer::Require)));
    let client = handle("client", &client_config(&ca, Some((&intruder_cert, &intruder_key))));
    let outcome = connect(&server, &client, "localhost").await;
    let error = outcome.server.expect_err("server must refuse the intruder");
    assert!(error.contains("UnknownIssuer") || error.to_lowercase().contains("unknown"), "{error}");

    // A client that trusts only the other authority refuses our server.
    let (client_cert, client_key) = pki.client_leaf("client");
    let client = handle("client", &client_config(&other_ca, Some((&client_cert, &client_key))));
    let outcome = connect(&server, &client, "localhost").await;
    let error = outcome.client.expect_err("client must refuse");
    assert!(error.contains("UnknownIssuer") || error.to_lowercase().contains("unknown"), "{error}");
}

#[tokio::test]
async fn host_verification_rejects_a_wrong_host_and_can_be_turned_off() {
    let pki = Pki::new();
    let mut request = CertificateRequest::new("wrong.example.org", 365);
    request.subject_alt_names = vec!["wrong.example.org".into()];
    let (server_cert, server_key) = pki.leaf("wronghost", &request);
    let (client_cert, client_key) = pki.client_leaf("client");
    let ca = pki.path("root.crt");
    let server = Arc::new(handle("server", &server_config(Some(&ca), &server_cert, &server_key, VerifyPeer::Require)));

    let client = handle("client", &client_config(&ca, Some((&client_cert, &client_key))));
    let error = connect(&server, &client, "localhost").await.client.expect_err("wrong host must be refused");
    assert!(error.contains("not valid for name \"localhost\""), "{error}");

    // server_name makes the client check (and send) the name the certificate carries.
    let mut config = client_config(&ca, Some((&client_cert, &client_key)));
    config.server_name = Some("wrong.example.org".into());
    assert!(connect(&server, &handle("client", &config), "localhost").await.client.is_ok());

    // verify_host: false accepts the name but still checks the chain.
    let mut config = client_config(&ca, Some((&client_cert, &client_key)));
    config.verify_host = false;
    let relaxed = handle("client", &config);
    assert!(connect(&server, &relaxed, "localhost").await.client.is_ok());
    let mut config = client_config(&pki.path("other-root.crt"), Some((&client_cert, &client_key)));
    config.verify_host = false;
    let untrusting = handle("client", &config);
    assert!(connect(&server, &untrusting, "localhost").await.client.is_err());
}

#[tokio::test]
async fn a_certificate_with_only_a_common_name_matches_by_the_documented_fallback() {
    let pki = Pki::new();
    let request = CertificateRequest::new("localhost", 365); // no SANs at all
    let (server_cert, server_key) = pki.leaf("cn-only", &request);
    let ca = pki.path("root.crt");
    let server = Arc::new(handle("server", &server_config(None, &server_cert, &server_key, VerifyPeer::None)));
    let client = handle("client", &client_config(&ca, None));
    assert!(connect(&server, &client, "localhost").await.client.is_ok());
    assert!(connect(&server, &client, "127.0.0.1").await.client.is_err());
}

#[tokio::test]
async fn a_renewed_certificate_is_used_by_new_handshakes_without_a_restart() {
    let pki = Pki::new();
    let (server_cert, server_key) = pki.server_leaf("server");
    let ca = pki.path("root.crt");
    let server = Arc::new(handle("server", &server_config(Some(&ca), &server_cert, &server_key, VerifyPeer::None)));
    let client = handle("client", &client_config(&ca, None));
    let first = connect(&server, &client, "localhost").await.client.expect("first handshake");
    assert!(!server.reload_if_changed().expect("unchanged"), "nothing changed yet");

    // Renewal writes the certificate first: until the key follows, the pair
    // does not match, and the old configuration stays in force.
    let mut request = CertificateRequest::new("localhost", 730);
    request.subject_alt_names = vec!["localhost".into()];
    let renewed = pki.intermediate.issue(&request).expect("renew");
    std::fs::write(&server_cert, format!("{}{}", renewed.cert_pem, pki.intermediate_pem)).expect("write cert");
    let error = server.reload_if_changed().expect_err("half-renewed files must not load");
    assert!(matches!(error.kind, TlsErrorKind::KeyMismatch { .. }), "{error}");
    assert!(server.last_reload_error().is_some());
    assert_eq!(connect(&server, &client, "localhost").await.client.expect("old config"), first);

    std::fs::write(&server_key, renewed.key_pem.as_bytes()).expect("write key");
    assert!(server.reload_if_changed().expect("reload"), "the renewed files must load");
    assert!(server.last_reload_error().is_none());
    let second = connect(&server, &client, "localhost").await.client.expect("new handshake");
    assert_ne!(first, second);
    assert_eq!(second, serial_of(&renewed.cert_der));
}

#[tokio::test]
async fn openssl_s_client_completes_a_mutual_tls_handshake_with_a_server_built_from_a_configuration() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("SKIPPED: openssl is not installed, so the s_client interoperability test cannot run");
        return;
    }
    let pki = Pki::new();
    let (server_cert, server_key) = pki.server_leaf("server");
    let (client_cert, client_key) = pki.client_leaf("client");
    let ca = pki.path("root.crt");
    let server = handle("server", &server_config(Some(&ca), &server_cert, &server_key, VerifyPeer::Require));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let acceptor = server.acceptor().expect("acceptor");
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut stream = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let peer = stream.get_ref().1.peer_certificates().map(<[_]>::len).unwrap_or(0);
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        stream.write_all(b"pong\n").await.map_err(|e| e.to_string())?;
        let _ = stream.shutdown().await;
        Ok::<_, String>((peer, buf))
    });
    let args: Vec<String> = vec![
        "s_client".into(),
        "-connect".into(),
        format!("127.0.0.1:{port}"),
        "-servername".into(),
        "localhost".into(),
        "-verify_hostname".into(),
        "localhost".into(),
        "-verify_return_error".into(),
        "-CAfile".into(),
        ca.display().to_string(),
        "-cert".into(),
        client_cert.display().to_string(),
        "-key".into(),
        client_key.display().to_string(),
        // -cert sends only the first certificate of the file; the chain goes separately.
        "-cert_chain".into(),
        pki.path("intermediate.crt").display().to_string(),
    ];
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut child = Command::new("openssl")
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn openssl");
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(b"ping\n");
            std::thread::sleep(Duration::from_millis(500));
        }
        child.wait_with_output().expect("openssl output")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let (peer_certs, received) = tokio::time::timeout(TIMEOUT, server_task)
        .await
        .expect("server finished")
        .expect("join")
        .unwrap_or_else(|e| panic!("server side failed: {e}\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    assert_eq!(&received, b"ping\n");
    assert!(peer_certs >= 1, "s_client must have presented its certificate");
    assert!(stdout.contains("Verify return code: 0 (ok)"), "stdout:\n{stdout}\nstderr:\n{stderr}");
}

// ------------------------------------------------------------------ loading keys

#[test]
fn keys_of_every_kind_load_and_match_their_certificates() {
    let pki = Pki::new();
    let ca = pki.path("root.crt");
    for key_type in KeyType::ALL {
        let mut request = CertificateRequest::new("localhost", 365);
        request.subject_alt_names = vec!["localhost".into()];
        request.key_type = key_type;
        let (cert, key) = pki.leaf(&format!("leaf-{key_type}"), &request);
        let config = server_config(Some(&ca), &cert, &key, VerifyPeer::Require);
        let material = TlsMaterial::load("server", &config).unwrap_or_else(|e| panic!("{key_type}: {e}"));
        material.server_config().unwrap_or_else(|e| panic!("{key_type}: {e}"));
        let info = CertificateInfo::parse(&material.certificate_chain()[0]).expect("parse");
        let expected = match key_type {
            KeyType::EcdsaP256 => "ECDSA P-256",
            KeyType::Ed25519 => "Ed25519",
            KeyType::Rsa2048 => "RSA",
        };
        assert_eq!(info.key_type, expected);
        if key_type == KeyType::Rsa2048 {
            assert_eq!(info.key_bits, Some(2048));
            // The same key as PKCS#1 (`RSA PRIVATE KEY`).
            use rsa::pkcs1::EncodeRsaPrivateKey as _;
            use rsa::pkcs8::DecodePrivateKey as _;
            let pem = std::fs::read_to_string(&key).expect("read");
            let rsa_key = rsa::PrivateKey::from_pkcs8_pem(&pem).expect("pkcs8");
            let pkcs1 = rsa_key.to_pkcs1_pem(rsa::pkcs1::LineEnding::LF).expect("pkcs1");
            assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
            let pkcs1_path = pki.write("pkcs1.key", &pkcs1);
            let config = server_config(Some(&ca), &cert, &pkcs1_path, VerifyPeer::Require);
            TlsMaterial::load("server", &config).unwrap_or_else(|e| panic!("PKCS#1: {e}"));
        }
        if key_type == KeyType::EcdsaP256 {
            // The same key as SEC1 (`EC PRIVATE KEY`): the inner key of the PKCS#8 wrapper.
            let pem = std::fs::read_to_string(&key).expect("read");
            let (_, doc) = pkcs8::SecretDocument::from_pem(&pem).expect("pem");
            let info = pkcs8::PrivateKeyInfoRef::try_from(doc.as_bytes()).expect("pkcs8");
            let sec1 =
                pkcs8::der::pem::encode_string("EC PRIVATE KEY", pkcs8::LineEnding::LF, info.private_key.as_bytes())
                    .expect("encode");
            let sec1_path = pki.write("sec1.key", &sec1);
            let config = server_config(Some(&ca), &cert, &sec1_path, VerifyPeer::Require);
            TlsMaterial::load("server", &config).unwrap_or_else(|e| panic!("SEC1: {e}"));
        }
    }
}

/// Encrypts a PKCS#8 PEM key with a password (PBKDF2-SHA256, AES-256-CBC,
/// what `openssl pkcs8 -topk8 -v2 aes-256-cbc` writes).
fn encrypt_key(pem: &str, password: &str) -> String {
    let (_, doc) = pkcs8::SecretDocument::from_pem(pem).expect("pem");
    let info = pkcs8::PrivateKeyInfoRef::try_from(doc.as_bytes()).expect("pkcs8");
    let params =
        pkcs8::pkcs5::pbes2::Parameters::generate_pbkdf2_sha256_aes256cbc(2048, &[7u8; 16], [9u8; 16]).expect("params");
    let encrypted = info.encrypt_with_params(params, password).expect("encrypt");
    encrypted.to_pem("ENCRYPTED PRIVATE KEY", pkcs8::LineEnding::LF).expect("pem").to_string()
}

#[test]
fn an_encrypted_key_loads_with_the_right_password_and_fails_clearly_with_a_wrong_one() {
    let pki = Pki::new();
    let (cert, key) = pki.server_leaf("server");
    let plain = std::fs::read_to_string(&key).expect("read");
    let encrypted = pki.write("encrypted.key", &encrypt_key(&plain, "s3cret pass"));
    let password_file = pki.write("password.txt", "s3cret pass\n");
    let mut config = server_config(None, &cert, &encrypted, VerifyPeer::None);
    config.key_password_file = Some(password_file.clone());
    TlsMaterial::load("adt-server", &config).unwrap_or_else(|e| panic!("{e}"));

    pki.write("password.txt", "wrong\n");
    let error = load_error("adt-server", &config);
    assert!(matches!(error.kind, TlsErrorKind::WrongPassword), "{error}");
    let text = error.to_string();
    assert!(text.contains("adt-server") && text.contains("encrypted.key") && text.contains("password"), "{text}");
    assert!(!text.contains("s3cret") && !text.contains("wrong\n"), "the password must not appear: {text}");

    config.key_password_file = None;
    let error = load_error("adt-server", &config);
    assert!(matches!(error.kind, TlsErrorKind::PasswordMissing), "{error}");
    assert!(error.to_string().contains("key_password_env"), "{error}");

    config.key_password_env = Some("SWITCHBOARD_TEST_SURELY_UNSET_VARIABLE".into());
    let error = load_error("adt-server", &config);
    assert!(error.to_string().contains("SWITCHBOARD_TEST_SURELY_UNSET_VARIABLE"), "{error}");
}

#[test]
fn a_key_encrypted_by_openssl_loads() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("SKIPPED: openssl is not installed");
        return;
    }
    let pki = Pki::new();
    let (cert, key) = pki.server_leaf("server");
    let out = pki.path("openssl-encrypted.key");
    let status = Command::new("openssl")
        .args(["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-passout", "pass:opensesame", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&out)
        .status()
        .expect("openssl");
    assert!(status.success());
    let password_file = pki.write("password.txt", "opensesame");
    let mut config = server_config(None, &cert, &out, VerifyPeer::None);
    config.key_password_file = Some(password_file);
    TlsMaterial::load("server", &config).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_legacy_encrypted_pem_key_is_refused_with_the_conversion_command() {
    let pki = Pki::new();
    let (cert, _) = pki.server_leaf("server");
    let legacy = pki.write(
        "legacy.key",
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00112233445566778899AABBCCDDEEFF\n\n\
         MIIEpAIBAAKCAQEAvq1b2c3d4e5f6g7h8i9j0k\n-----END RSA PRIVATE KEY-----\n",
    );
    let error = load_error("lab-client", &server_config(None, &cert, &legacy, VerifyPeer::None));
    assert!(matches!(error.kind, TlsErrorKind::LegacyEncryptedKey { .. }), "{error}");
    let text = error.to_string();
    let expected = format!(
        "openssl pkcs8 -topk8 -v2 aes-256-cbc -in {} -out {}",
        legacy.display(),
        pki.path("legacy-pkcs8.key").display()
    );
    assert!(text.contains(&expected), "{text}");
    assert!(text.contains("lab-client"), "{text}");
}

#[test]
fn a_key_that_belongs_to_another_certificate_fails_at_load_time() {
    let pki = Pki::new();
    let (cert, _) = pki.server_leaf("server");
    let (_, other_key) = pki.client_leaf("client");
    let config = server_config(None, &cert, &other_key, VerifyPeer::None);
    let error = load_error("adt-server", &config);
    assert!(matches!(error.kind, TlsErrorKind::KeyMismatch { .. }), "{error}");
    assert!(error.to_string().contains("does not belong to the certificate"), "{error}");
    assert!(TlsConfigHandle::load("adt-server", &config).is_err());
    assert_finding(&report(&config, &[]), FindingKind::KeyMismatch, Severity::Error);
}

#[test]
fn swapped_and_missing_files_are_explained() {
    let pki = Pki::new();
    let (cert, key) = pki.server_leaf("server");
    let error = load_error("s", &server_config(None, &key, &cert, VerifyPeer::None));
    assert!(error.to_string().contains("swapped"), "{error}");
    let missing = pki.path("nope.crt");
    let error = load_error("s", &server_config(None, &missing, &key, VerifyPeer::None));
    assert!(error.to_string().contains("nope.crt") && error.to_string().contains("check the path"), "{error}");
    let config = server_config(None, &missing, &key, VerifyPeer::None);
    assert_finding(&report(&config, &[]), FindingKind::Unreadable, Severity::Error);
    // A client built as a server, and the reverse, name the mismatch.
    let material = TlsMaterial::load("s", &server_config(None, &cert, &key, VerifyPeer::None)).expect("load");
    assert!(matches!(material.client_config().map(|_| ()).unwrap_err().kind, TlsErrorKind::WrongRole { .. }));
}

#[test]
fn a_ca_folder_is_read_like_a_bundle() {
    let pki = Pki::new();
    let folder = pki.path("cas");
    std::fs::create_dir(&folder).expect("mkdir");
    std::fs::copy(pki.path("root.crt"), folder.join("root.pem")).expect("copy");
    std::fs::copy(pki.path("other-root.crt"), folder.join("other.pem")).expect("copy");
    std::fs::write(folder.join("README"), "not a certificate").expect("write");
    let certs = tls::read_certificates(&folder).expect("folder");
    assert_eq!(certs.len(), 2);
    let (cert, key) = pki.server_leaf("server");
    let material =
        TlsMaterial::load("s", &server_config(Some(&folder), &cert, &key, VerifyPeer::Require)).expect("load");
    assert_eq!(material.ca_certificates().len(), 2);
}

// ------------------------------------------------------------------ inspection

#[test]
fn inspection_reports_what_the_certificate_says() {
    let pki = Pki::new();
    let (cert, _) = pki.server_leaf("server");
    let certs = tls::read_certificates(&cert).expect("read");
    assert_eq!(certs.len(), 2, "leaf then intermediate");
    let leaf = CertificateInfo::parse(&certs[0]).expect("leaf");
    let intermediate = CertificateInfo::parse(&certs[1]).expect("intermediate");
    assert_eq!(leaf.subject, "CN=localhost");
    assert_eq!(leaf.issuer, "CN=Test Intermediate CA");
    assert_eq!(leaf.dns_names, vec!["localhost".to_owned()]);
    assert_eq!(leaf.ip_addresses, vec!["127.0.0.1".parse::<std::net::IpAddr>().expect("ip")]);
    assert_eq!(leaf.key_type, "ECDSA P-256");
    assert_eq!(leaf.key_bits, Some(256));
    assert_eq!(leaf.extended_key_usage, Some(vec!["serverAuth".to_owned(), "clientAuth".to_owned()]));
    assert_eq!(leaf.key_usage, vec!["digitalSignature".to_owned()]);
    assert!(!leaf.is_ca && !leaf.self_signed);
    assert!(leaf.issued_by(&intermediate));
    assert!(intermediate.is_ca && !intermediate.self_signed);
    let root = CertificateInfo::parse(&tls::read_certificates(&pki.path("root.crt")).expect("root")[0]).expect("root");
    assert!(root.is_ca && root.self_signed);
    assert!(root.key_usage.contains(&"keyCertSign".to_owned()));
    // The fingerprint is the SHA-256 of the DER, as openssl prints it.
    assert_eq!(leaf.sha256_fingerprint.len(), 32 * 3 - 1);
    assert!(leaf.days_left(OffsetDateTime::now_utc()) >= 364);
    if let Ok(output) =
        Command::new("openssl").args(["x509", "-noout", "-fingerprint", "-sha256", "-in"]).arg(&cert).output()
    {
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains(&leaf.sha256_fingerprint), "{text} vs {}", leaf.sha256_fingerprint);
    }
    let json = serde_json::to_value(&leaf).expect("json");
    assert!(json["not_after"].as_str().expect("date").ends_with('Z'));
}

// ------------------------------------------------------------------ the doctor

fn dated(common_name: &str, from_days: i64, to_days: i64) -> CertificateRequest {
    let now = OffsetDateTime::now_utc();
    let mut request = CertificateRequest::new(common_name, 1);
    request.subject_alt_names = vec!["localhost".into()];
    request.not_before = now + time::Duration::days(from_days);
    request.not_after = now + time::Duration::days(to_days);
    request
}

#[test]
fn a_healthy_configuration_has_only_passed_checks() {
    let pki = Pki::new();
    let (cert, key) = pki.server_leaf("server");
    let config = server_config(Some(&pki.path("root.crt")), &cert, &key, VerifyPeer::Require);
    let report = report(&config, &["localhost", "127.0.0.1"]);
    assert!(report.problems().next().is_none(), "{:#?}", report.findings);
    for kind in [
        FindingKind::Valid,
        FindingKind::KeyMatches,
        FindingKind::ChainTrusted,
        FindingKind::UsageOk,
        FindingKind::HostMatches,
    ] {
        assert_finding(&report, kind, Severity::Ok);
    }
    assert_eq!(report.chain.len(), 2);
    let status = report.status();
    assert!(!status.problem);
    assert_eq!(status.subject.as_deref(), Some("CN=localhost"));
    // The earliest expiry across leaf and chain is the leaf's here (365 days < 1825).
    assert_eq!(status.earliest_not_after, status.not_after);
    assert_eq!(status.days_left, Some(365));
    assert_eq!(status.subject_alt_names, vec!["DNS:localhost".to_owned(), "IP:127.0.0.1".to_owned()]);
    let json = serde_json::to_value(&status).expect("json");
    assert_eq!(json["name"], "test");
    assert!(json["earliest_not_after"].is_string());
}

#[test]
fn the_doctor_finds_expired_not_yet_valid_and_expiring_certificates() {
    let pki = Pki::new();
    let ca = pki.path("root.crt");
    let (cert, key) = pki.leaf("expired", &dated("localhost", -30, -1));
    let expired = report(&server_config(Some(&ca), &cert, &key, VerifyPeer::None), &[]);
    assert_finding(&expired, FindingKind::Expired, Severity::Error);
    assert!(expired.has_errors());
    assert!(expired.status().days_left.is_some_and(|d| d < 0));

    let (cert, key) = pki.leaf("future", &dated("localhost", 10, 400));
    assert_finding(
        &report(&server_config(Some(&ca), &cert, &key, VerifyPeer::None), &[]),
        FindingKind::NotYetValid,
        Severity::Error,
    );

    let (cert, key) = pki.leaf("soon", &dated("localhost", -1, 10));
    let soon = report(&server_config(Some(&ca), &cert, &key, VerifyPeer::None), &[]);
    assert_finding(&soon, FindingKind::ExpiresSoon, Severity::Warning);
    assert!(!soon.has_errors());
    let status = soon.status();
    assert!(status.problem && status.days_left == Some(10), "{status:?}");
    assert_eq!(status.problems.len(), 1);
}

#[test]
fn the_doctor_finds_incomplete_out_of_order_and_untrusted_chains() {
    let pki = Pki::new();
    let ca = pki.path("root.crt");
    let mut request = CertificateRequest::new("localhost", 365);
    request.subject_alt_names = vec!["localhost".into()];
    let issued = pki.intermediate.issue(&request).expect("issue");

    let (cert, key) = pki.save("leaf-only", &issued, &issued.cert_pem);
    assert_finding(
        &report(&server_config(Some(&ca), &cert, &key, VerifyPeer::None), &[]),
        FindingKind::ChainIncomplete,
        Severity::Warning,
    );
    // The intermediate only in ca_file: verifies here, but peers that trust only the root fail.
    let bundle =
        pki.write("bundle.crt", &format!("{}{}", std::fs::read_to_string(&ca).expect("root"), pki.intermediate_pem));
    let report_bundle = report(&server_config(Some(&bundle), &cert, &key, VerifyPeer::None), &[]);
    assert_finding(&report_bundle, FindingKind::ChainIncomplete, Severity::Warning);
    assert_finding(&report_bundle, FindingKind::ChainTrusted, Severity::Ok);

    let root_pem = std::fs::read_to_string(&ca).expect("root");
    let (cert, key) =
        pki.save("disordered", &issued, &format!("{}{}{}", issued.cert_pem, root_pem, pki.intermediate_pem));
    assert_finding(
        &report(&server_config(Some(&ca), &cert, &key, VerifyPeer::None), &[]),
        FindingKind::ChainOutOfOrder,
        Severity::Warning,
    );

    // A leaf from another root, with that root appended: it does not build to ca_file.
    let other = pki.other_root.issue(&request).expect("issue");
    let other_root_pem = std::fs::read_to_string(pki.path("other-root.crt")).expect("read");
    let (cert, key) = pki.save("untrusted", &other, &format!("{}{}", other.cert_pem, other_root_pem));
    assert_finding(
        &report(&server_config(Some(&ca), &cert, &key, VerifyPeer::None), &[]),
        FindingKind::ChainUntrusted,
        Severity::Warning,
    );
}

#[test]
fn the_doctor_finds_a_leaf_in_the_ca_file() {
    let pki = Pki::new();
    let (cert, key) = pki.server_leaf("server");
    let leaf_pem = std::fs::read_to_string(&cert).expect("read");
    let leaf_only = leaf_pem.split_inclusive("-----END CERTIFICATE-----\n").next().expect("leaf");
    let ca = pki
        .write("mixed-ca.crt", &format!("{}{leaf_only}", std::fs::read_to_string(pki.path("root.crt")).expect("root")));
    assert_finding(
        &report(&server_config(Some(&ca), &cert, &key, VerifyPeer::Require), &[]),
        FindingKind::CaFileHoldsLeaf,
        Severity::Warning,
    );
}

#[test]
fn the_doctor_finds_a_missing_extended_key_usage_for_each_role() {
    let pki = Pki::new();
    let ca = pki.path("root.crt");
    let mut client_only = CertificateRequest::new("localhost", 365);
    client_only.subject_alt_names = vec!["localhost".into()];
    client_only.server_auth = false;
    let (cert, key) = pki.leaf("client-only", &client_only);
    assert_finding(
        &report(&server_config(Some(&ca), &cert, &key, VerifyPeer::None), &[]),
        FindingKind::MissingServerAuth,
        Severity::Error,
    );
    assert_finding(&report(&client_config(&ca, Some((&cert, &key))), &[]), FindingKind::UsageOk, Severity::Ok);

    let mut server_only = client_only.clone();
    server_only.server_auth = true;
    server_only.client_auth = false;
    let (cert, key) = pki.leaf("server-only", &server_only);
    assert_finding(
        &report(&client_config(&ca, Some((&cert, &key))), &[]),
        FindingKind::MissingClientAuth,
        Severity::Error,
    );
}

#[tokio::test]
async fn a_server_certificate_without_server_auth_is_refused_in_the_handshake_too() {
    let pki = Pki::new();
    let ca = pki.path("root.crt");
    let mut client_only = CertificateRequest::new("localhost", 365);
    client_only.subject_alt_names = vec!["localhost".into()];
    client_only.server_auth = false;
    let (cert, key) = pki.leaf("client-only", &client_only);
    let server = Arc::new(handle("server", &server_config(None, &cert, &key, VerifyPeer::None)));
    let client = handle("client", &client_config(&ca, None));
    let error = connect(&server, &client, "localhost").await.client.expect_err("wrong EKU must be refused");
    assert!(error.contains("extended key usage for server authentication"), "{error}");
}

#[test]
fn the_doctor_finds_a_host_the_certificate_does_not_name() {
    let pki = Pki::new();
    let ca = pki.path("root.crt");
    let mut request = CertificateRequest::new("wrong.example.org", 365);
    request.subject_alt_names = vec!["wrong.example.org".into()];
    let (cert, key) = pki.leaf("wronghost", &request);
    let server = report(&server_config(Some(&ca), &cert, &key, VerifyPeer::None), &["localhost"]);
    assert_finding(&server, FindingKind::HostMismatch, Severity::Error);
    let finding = server.findings_of(FindingKind::HostMismatch).next().expect("finding");
    assert!(finding.message.contains("DNS:wrong.example.org"), "{}", finding.message);

    // A client whose ca_file pins the server's own certificate: its names are checked.
    let leaf_pem = std::fs::read_to_string(&cert).expect("read");
    let pinned = pki.write("pinned.crt", leaf_pem.split_inclusive("-----END CERTIFICATE-----\n").next().expect("leaf"));
    let client = report(&client_config(&pinned, None), &["localhost"]);
    assert_finding(&client, FindingKind::HostMismatch, Severity::Error);
    let mut relaxed = client_config(&pinned, None);
    relaxed.verify_host = false;
    assert!(!report(&relaxed, &["localhost"]).has(FindingKind::HostMismatch));
}

#[test]
fn the_doctor_finds_a_key_file_readable_by_others() {
    let pki = Pki::new();
    let (cert, key) = pki.server_leaf("server");
    let config = server_config(None, &cert, &key, VerifyPeer::None);
    assert!(!report(&config, &[]).has(FindingKind::KeyFileReadableByOthers));
    set_mode(&key, 0o644);
    let finding_report = report(&config, &[]);
    assert_finding(&finding_report, FindingKind::KeyFileReadableByOthers, Severity::Warning);
    let message = &finding_report.findings_of(FindingKind::KeyFileReadableByOthers).next().expect("finding").message;
    assert!(message.contains("chmod 600") && message.contains("0644"), "{message}");
}

#[test]
fn the_doctor_reports_an_undecryptable_key() {
    let pki = Pki::new();
    let (cert, key) = pki.server_leaf("server");
    let plain = std::fs::read_to_string(&key).expect("read");
    let encrypted = pki.write("encrypted.key", &encrypt_key(&plain, "right"));
    let mut config = server_config(None, &cert, &encrypted, VerifyPeer::None);
    config.key_password_file = Some(pki.write("pw", "wrong"));
    let report = report(&config, &[]);
    assert_finding(&report, FindingKind::Unreadable, Severity::Error);
    assert!(report.findings_of(FindingKind::Unreadable).any(|f| f.message.contains("password")));
}

// ------------------------------------------------------------------ command line

fn switchboard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
}

#[test]
fn new_ca_and_new_cert_make_a_pki_that_loads_and_passes_the_doctor() {
    let dir = tempfile::tempdir().expect("temp");
    let out = switchboard().args(["tls", "new-ca", "--out"]).arg(dir.path().join("ca")).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ca_cert = dir.path().join("ca/ca.crt");
    let ca_key = dir.path().join("ca/ca.key");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&ca_key).expect("key").permissions().mode() & 0o777, 0o600);
    // Refuses to overwrite the authority by accident.
    let again = switchboard().args(["tls", "new-ca", "--out"]).arg(dir.path().join("ca")).output().expect("run");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    let cert = dir.path().join("server.crt");
    let key = dir.path().join("server.key");
    let out = switchboard()
        .args(["tls", "new-cert", "--ca-cert"])
        .arg(&ca_cert)
        .arg("--ca-key")
        .arg(&ca_key)
        .arg("--out-cert")
        .arg(&cert)
        .arg("--out-key")
        .arg(&key)
        .args(["--name", "localhost", "--san", "localhost", "--san", "127.0.0.1", "--server", "--key-type", "ed25519"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info = CertificateInfo::parse(&tls::read_certificates(&cert).expect("cert")[0]).expect("parse");
    assert_eq!(info.extended_key_usage, Some(vec!["serverAuth".to_owned()]));
    assert_eq!(info.key_type, "Ed25519");
    assert_eq!(info.ip_addresses.len(), 1);
    let config = server_config(Some(&ca_cert), &cert, &key, VerifyPeer::Require);
    let report = report(&config, &["localhost"]);
    assert!(report.problems().next().is_none(), "{:#?}", report.findings);

    let out = switchboard().args(["tls", "inspect"]).arg(&cert).output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("CN=localhost") && text.contains("SHA-256"), "{text}");
}

#[test]
fn tls_check_prints_the_chain_and_verdicts_and_fails_on_errors() {
    let pki = Pki::new();
    let (server_cert, server_key) = pki.server_leaf("server");
    let (client_cert, client_key) = pki.client_leaf("client");
    let plain = std::fs::read_to_string(&client_key).expect("read");
    pki.write("client-encrypted.key", &encrypt_key(&plain, "env password"));
    let mut request = CertificateRequest::new("wrong.example.org", 365);
    request.subject_alt_names = vec!["wrong.example.org".into()];
    pki.leaf("wronghost", &request);
    let yaml = |server_cert: &str| {
        format!(
            "tls:\n  hop-server:\n    role: server\n    ca_file: root.crt\n    cert_file: {server_cert}.crt\n    \
             key_file: {server_cert}.key\n    verify_peer: require\n  hop-client:\n    role: client\n    ca_file: \
             root.crt\n    cert_file: client.crt\n    key_file: client-encrypted.key\n    key_password_env: \
             HOP_KEY_PASSWORD\nproductions:\n  hop:\n    items:\n      - name: In\n        kind: mllp_in\n        \
             port: 42575\n        host: 127.0.0.1\n        tls: hop-server\n        targets: [Out]\n      - name: \
             Out\n        kind: mllp_out\n        host: localhost\n        port: 42575\n        tls: hop-client\n"
        )
    };
    let _ = (&server_cert, &server_key, &client_cert);
    let good = pki.write("good.yaml", &yaml("server"));
    let out = switchboard()
        .args(["tls", "check", "--config"])
        .arg(&good)
        .env("HOP_KEY_PASSWORD", "env password")
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("hop-server (server)") && text.contains("hop-client (client)"), "{text}");
    assert!(text.contains("CN=Test Intermediate CA") && text.contains("SHA-256"), "{text}");
    assert!(text.contains("names localhost"), "{text}");

    // Without the password variable, the client's key is unreadable: exit 1.
    let out = switchboard()
        .args(["tls", "check", "--config"])
        .arg(&good)
        .env_remove("HOP_KEY_PASSWORD")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("HOP_KEY_PASSWORD"));

    // The mllp_out connects to localhost, whose server certificate names another host.
    let bad = pki.write("bad.yaml", &yaml("wronghost"));
    let out = switchboard()
        .args(["tls", "check", "--config"])
        .arg(&bad)
        .env("HOP_KEY_PASSWORD", "env password")
        .args(["--json"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let kinds = |name: &str| -> Vec<String> {
        reports.as_array().expect("array").iter().find(|r| r["name"] == name).expect("report")["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .map(|f| f["kind"].as_str().expect("kind").to_owned())
            .collect()
    };
    assert!(kinds("hop-server").contains(&"host_mismatch".to_owned()));
    assert!(kinds("hop-client").contains(&"host_mismatch".to_owned()));

    // Only the named configuration.
    let out = switchboard()
        .args(["tls", "check", "--config"])
        .arg(&bad)
        .arg("hop-client")
        .env("HOP_KEY_PASSWORD", "env password")
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("hop-server (server)") && text.contains("hop-client (client)"), "{text}");
}
