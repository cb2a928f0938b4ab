//! TLS through the engine, with real handshakes over 127.0.0.1 and a PKI
//! made here (root → intermediate → leaves, plus broken leaves of every
//! kind): mutual TLS between an `mllp_out` of one production and an
//! `mllp_in` of another, each way a handshake is refused, plaintext and TLS
//! peers on the wrong kind of port, a certificate renewed while the engine
//! runs, interoperability with `openssl s_client` and `s_server`, and the
//! certificate status the engine publishes.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use switchboard::config::{TlsConfig, TlsRole, TlsVersion, VerifyPeer};
use switchboard::engine::{Engine, EngineOptions, EngineStatus, ItemState, ItemStatus, ProductionState};
use switchboard::hl7::{AckBuilder, AckCode, Message, Reply};
use switchboard::mllp::{ClientError, ClientTls, MllpClient};
use switchboard::store::{Store, StoreOptions, StoredEvent};
use switchboard::tls::pki::{CertificateAuthority, CertificateRequest, KeyType};
use switchboard::tls::{CertificateInfo, CertificateStatus, FindingKind, TlsConfigHandle};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::ports::free_ports;

/// The longest any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(5);
/// `failure_timeout` of the `mllp_out` items.
const FAILURE_TIMEOUT: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------------------
// The PKI

/// root → intermediate → leaves, and an untrusted root, in a temporary
/// folder. Every leaf is written as `NAME.crt` (leaf, then its issuer unless
/// that is a root) and `NAME.key` (mode 0600).
struct Pki {
    dir: tempfile::TempDir,
    intermediate: CertificateAuthority,
    intermediate_pem: String,
}

/// Validity from `from` to `to`, relative to now.
fn request(common_name: &str, sans: &[&str], from: time::Duration, to: time::Duration) -> CertificateRequest {
    let now = OffsetDateTime::now_utc();
    let mut request = CertificateRequest::new(common_name, 1);
    request.subject_alt_names = sans.iter().map(|s| (*s).to_owned()).collect();
    request.not_before = now + from;
    request.not_after = now + to;
    request
}

/// A server certificate for localhost and 127.0.0.1, valid from an hour ago
/// for `days` days.
fn server_request(days: i64) -> CertificateRequest {
    let mut request =
        request("localhost", &["localhost", "127.0.0.1"], time::Duration::hours(-1), time::Duration::days(days));
    request.client_auth = false;
    request
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
        let pki = Self { dir, intermediate, intermediate_pem: intermediate_files.cert_pem };
        pki.write("root.crt", &root_files.cert_pem);
        pki.write("intermediate.crt", &pki.intermediate_pem);
        pki.write("other-root.crt", &other_files.cert_pem);

        let hour = time::Duration::hours(1);
        let day = time::Duration::days(1);
        pki.leaf("server", &server_request(365));
        let mut client = request("switchboard-a", &[], -hour, 365 * day);
        client.server_auth = false;
        pki.leaf("client", &client);
        let intruder = other_root.issue(&client).expect("untrusted leaf");
        pki.write("untrusted-client.crt", &intruder.cert_pem);
        pki.write("untrusted-client.key", &intruder.key_pem);
        pki.leaf("expired", &request("localhost", &["localhost", "127.0.0.1"], -30 * day, -day));
        pki.leaf("not-yet-valid", &request("localhost", &["localhost", "127.0.0.1"], day, 30 * day));
        let mut client_only = request("localhost", &["localhost", "127.0.0.1"], -hour, 365 * day);
        client_only.server_auth = false;
        pki.leaf("no-server-auth", &client_only);
        pki.leaf("wrong-host", &request("wrong.example.org", &["wrong.example.org"], -hour, 365 * day));
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let path = self.path(name);
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        path
    }

    /// Issues a leaf from the intermediate, writes it and returns its serial.
    fn leaf(&self, name: &str, request: &CertificateRequest) -> String {
        let issued = self.intermediate.issue(request).expect("leaf");
        self.write(&format!("{name}.crt"), &format!("{}{}", issued.cert_pem, self.intermediate_pem));
        self.write(&format!("{name}.key"), &issued.key_pem);
        CertificateInfo::parse(&issued.cert_der).expect("parse").serial
    }

    /// The serial of the leaf in `NAME.crt`.
    fn serial(&self, name: &str) -> String {
        let certs = switchboard::tls::read_certificates(&self.path(&format!("{name}.crt"))).expect("read");
        CertificateInfo::parse(&certs[0]).expect("parse").serial
    }

    /// A client configuration trusting the root, with the leaf `NAME` as its
    /// certificate, for connections made by the tests themselves.
    fn client(&self, leaf: Option<&str>) -> TlsConfigHandle {
        let config = TlsConfig {
            role: TlsRole::Client,
            ca_file: Some(self.path("root.crt")),
            cert_file: leaf.map(|l| self.path(&format!("{l}.crt"))),
            key_file: leaf.map(|l| self.path(&format!("{l}.key"))),
            key_password_env: None,
            key_password_file: None,
            verify_peer: VerifyPeer::Require,
            verify_host: true,
            server_name: None,
            min_version: TlsVersion::Tls12,
            create_if_missing: false,
        };
        TlsConfigHandle::load("test-client", &config).unwrap_or_else(|e| panic!("{e}"))
    }
}

// ---------------------------------------------------------------------------
// Productions

/// Production `a` takes plain MLLP on `In` and sends it with `Out` over TLS
/// (configuration `a-client`) to production `b`, whose `Secure in` listens
/// with TLS (configuration `b-server`) and writes each message to the
/// `Inbox` folder as `CONTROL_ID.hl7`.
#[derive(Clone, Debug)]
struct Hop {
    /// The certificate `Secure in` presents.
    server_leaf: &'static str,
    /// `verify_peer` of `b-server`.
    verify_peer: &'static str,
    /// The certificate `Out` presents, if any.
    client_leaf: Option<&'static str>,
    /// The `host` of `Out`.
    host: &'static str,
    /// `verify_host` of `a-client`.
    verify_host: bool,
    /// Where `Out` connects instead of `Secure in`.
    downstream_port: Option<u16>,
    /// `failure_timeout` of `Out`.
    failure_timeout: Duration,
}

impl Default for Hop {
    /// Mutual TLS that works.
    fn default() -> Self {
        Self {
            server_leaf: "server",
            verify_peer: "require",
            client_leaf: Some("client"),
            host: "127.0.0.1",
            verify_host: true,
            downstream_port: None,
            failure_timeout: FAILURE_TIMEOUT,
        }
    }
}

/// The productions file of `hop`.
fn productions(pki: &Pki, hop: &Hop, in_port: u16, secure_port: u16, inbox: &Path) -> String {
    let file = |name: &str| pki.path(name).display().to_string();
    let client_cert = match hop.client_leaf {
        Some(leaf) => format!(
            "    cert_file: \"{}\"\n    key_file: \"{}\"\n",
            file(&format!("{leaf}.crt")),
            file(&format!("{leaf}.key"))
        ),
        None => String::new(),
    };
    format!(
        r#"tls:
  a-client:
    role: client
    ca_file: "{root}"
{client_cert}    verify_host: {verify_host}
  b-server:
    role: server
    ca_file: "{root}"
    cert_file: "{server_cert}"
    key_file: "{server_key}"
    verify_peer: {verify_peer}
productions:
  a:
    name: Sender
    autostart: true
    stop_timeout: 2s
    items:
      - name: In
        kind: mllp_in
        host: 127.0.0.1
        port: {in_port}
        read_timeout: 1s
        idle_timeout: 2s
        targets: [Out]
      - name: Out
        kind: mllp_out
        host: {host}
        port: {out_port}
        tls: a-client
        connect_timeout: 1s
        response_timeout: 2s
        retry_interval: 50ms
        failure_timeout: {failure_timeout}ms
  b:
    name: Receiver
    autostart: true
    stop_timeout: 2s
    items:
      - name: Secure in
        kind: mllp_in
        host: 127.0.0.1
        port: {secure_port}
        tls: b-server
        first_byte_timeout: 1s
        read_timeout: 1s
        idle_timeout: 2s
        targets: [Inbox]
      - name: Inbox
        kind: file_out
        path: "{inbox}"
        filename: "{{control_id}}.hl7"
"#,
        root = file("root.crt"),
        verify_host = hop.verify_host,
        server_cert = file(&format!("{}.crt", hop.server_leaf)),
        server_key = file(&format!("{}.key", hop.server_leaf)),
        verify_peer = hop.verify_peer,
        host = hop.host,
        out_port = hop.downstream_port.unwrap_or(secure_port),
        failure_timeout = hop.failure_timeout.as_millis(),
        inbox = inbox.display(),
    )
}

/// An engine running the productions of one [`Hop`].
struct Setup {
    engine: Engine,
    /// `In` of production `a` (plain MLLP).
    in_port: u16,
    /// `Secure in` of production `b` (TLS).
    secure_port: u16,
    /// Where `Inbox` writes.
    inbox: PathBuf,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn start(pki: &Pki, hop: &Hop, options: EngineOptions) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let [in_port, secure_port] = free_ports();
        let inbox = dir.path().join("inbox");
        let yaml = productions(pki, hop, in_port, secure_port, &inbox);
        let config =
            switchboard::config::parse(&dir.path().join("productions.yaml"), &yaml).unwrap_or_else(|e| panic!("{e}"));
        let (store, _) = Store::open(&dir.path().join("store.db"), StoreOptions::default()).expect("open the store");
        let engine = Engine::with_options(config, store, options).unwrap_or_else(|e| panic!("{e}"));
        engine.start().await;
        assert!(
            engine.wait_for(WAIT, |s| s.productions.iter().all(|p| p.state == ProductionState::Running)).await,
            "the productions did not start: {:#?}",
            engine.status()
        );
        Self { engine, in_port, secure_port, inbox, _dir: dir }
    }

    fn status(&self) -> EngineStatus {
        self.engine.status()
    }

    /// Sends one message to `In` and checks that it was accepted (stored).
    async fn send_accepted(&self, message: &[u8]) {
        let ack = reply(&plain_exchange(self.in_port, message).await.unwrap_or_else(|e| panic!("no ACK: {e}")));
        assert_eq!(ack.acknowledgment_code(), Some("AA"), "{ack:?}");
    }

    /// Events of one item, newest first.
    fn events(&self, production: &str, item: &str) -> Vec<StoredEvent> {
        self.engine
            .store()
            .recent_events(1000)
            .expect("events")
            .into_iter()
            .filter(|e| e.production.as_deref() == Some(production) && e.item.as_deref() == Some(item))
            .collect()
    }

    /// Waits until an event of the item mentions every one of `words`
    /// (case-insensitively) and returns its text.
    async fn event_naming(&self, production: &str, item: &str, words: &[&str]) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let events = self.events(production, item);
            if let Some(e) = events.iter().find(|e| mentions(&e.text, words)) {
                return e.text.clone();
            }
            if Instant::now() >= deadline {
                let texts: Vec<&str> = events.iter().map(|e| e.text.as_str()).collect();
                panic!("no event of {production}/{item} names {words:?}; events: {texts:#?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn item<'a>(status: &'a EngineStatus, production: &str, name: &str) -> &'a ItemStatus {
    status.item(production, name).unwrap_or_else(|| panic!("no item {production}/{name}"))
}

fn certificate<'a>(status: &'a EngineStatus, name: &str) -> &'a CertificateStatus {
    status.certificates.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no certificate status {name}"))
}

/// Whether `text` contains every one of `words`, ignoring case.
fn mentions(text: &str, words: &[&str]) -> bool {
    let text = text.to_lowercase();
    words.iter().all(|w| text.contains(&w.to_lowercase()))
}

// ---------------------------------------------------------------------------
// Messages and connections

/// An ADT message with MSH-10 `control_id`.
fn hl7(message_type: &str, control_id: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|SENDER|FAC|SWB|FAC|20260101120000||{message_type}|{control_id}|P|2.5\r\
         EVN|A01|20260101120000\r\
         PID|1||{control_id}^^^FAC^MR||DOE^JOHN||19800101|M\r"
    )
    .into_bytes()
}

fn frame(message: &[u8]) -> Vec<u8> {
    [&[0x0B][..], message, &[0x1C, 0x0D]].concat()
}

fn reply(bytes: &[u8]) -> Reply {
    Reply::read(&Message::parse(bytes).unwrap_or_else(|e| panic!("unreadable reply: {e}")))
}

/// One message over a new plain connection.
async fn plain_exchange(port: u16, message: &[u8]) -> Result<Bytes, ClientError> {
    let mut client = MllpClient::connect(&format!("127.0.0.1:{port}"), Duration::from_secs(2)).await?;
    client.exchange(message, Duration::from_secs(2)).await
}

/// One message over a new TLS connection (to `localhost`).
async fn tls_exchange(client: &TlsConfigHandle, port: u16, message: &[u8]) -> Result<Bytes, ClientError> {
    let tls = ClientTls {
        connector: client.connector().expect("connector"),
        server_name: client.server_name("localhost").expect("name"),
    };
    let mut client = MllpClient::connect_with(&format!("127.0.0.1:{port}"), Duration::from_secs(2), Some(&tls)).await?;
    client.exchange(message, Duration::from_secs(2)).await
}

/// A handshake with the server on `port`; returns the serial of the
/// certificate it presented.
async fn server_serial(client: &TlsConfigHandle, port: u16) -> Result<String, String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let connector = client.connector().map_err(|e| e.to_string())?;
    let handshake = connector.connect(client.server_name("localhost").map_err(|e| e.to_string())?, tcp);
    let mut stream = tokio::time::timeout(WAIT, handshake)
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let peer = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).ok_or("no server certificate")?;
    let serial = CertificateInfo::parse(peer).map_err(|e| e.to_string())?.serial;
    let _ = stream.shutdown().await;
    Ok(serial)
}

/// Reads until the peer closes (EOF or error) and returns what arrived, or
/// `None` if it stays open for `timeout`.
async fn read_until_closed(stream: &mut TcpStream, timeout: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(received),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

// ---------------------------------------------------------------------------
// 1. Mutual TLS end to end

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_carries_a_message_from_mllp_out_to_mllp_in_byte_for_byte() {
    let pki = Pki::new();
    let setup = Setup::start(&pki, &Hop::default(), EngineOptions::default()).await;
    let message = hl7("ADT^A01", "MTLS-1");
    setup.send_accepted(&message).await;

    let delivered = setup.inbox.join("MTLS-1.hl7");
    assert!(
        setup
            .engine
            .wait_for(WAIT, |s| {
                // The queue's depth falls once the result is committed,
                // which may come just after the count.
                let out = item(s, "a", "Out");
                out.sent == 1 && out.queue_depth == 0 && item(s, "b", "Inbox").sent == 1 && delivered.exists()
            })
            .await,
        "not delivered: {:#?}",
        setup.status()
    );
    assert_eq!(std::fs::read(&delivered).expect("inbox file"), message, "the message changed on the way");
    let status = setup.status();
    let out = item(&status, "a", "Out");
    assert_eq!((out.state, out.queue_depth, out.errors, out.last_error.as_deref()), (ItemState::Running, 0, 0, None));
    let secure_in = item(&status, "b", "Secure in");
    assert_eq!((secure_in.state, secure_in.received, secure_in.errors), (ItemState::Running, 1, 0));
    assert_eq!(item(&status, "b", "Inbox").received, 1);
    assert!(
        setup.events("b", "Secure in").iter().all(|e| !mentions(&e.text, &["tls handshake"])),
        "{:#?}",
        setup.events("b", "Secure in")
    );

    // The receiving side sees the sender's certificate: a connection
    // without one is refused, one with it is served.
    let anonymous = pki.client(None);
    assert!(tls_exchange(&anonymous, setup.secure_port, &hl7("ADT^A01", "MTLS-2")).await.is_err());
    let ack = tls_exchange(&pki.client(Some("client")), setup.secure_port, &hl7("ADT^A01", "MTLS-3")).await;
    assert_eq!(reply(&ack.expect("ACK")).acknowledgment_code(), Some("AA"));
    setup.engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// 2. Refused handshakes

/// Sends one message through `hop` and checks that the TLS hop refuses it:
/// a failed handshake is a transport failure, so `Out` keeps trying the
/// message until its failure timeout; then it is put in error with a last
/// error naming `out_reason`, which the event log names too, and the
/// message is handled like `X` (no reply): the default actions have no `X`,
/// so it fails, its error naming the handshake. With `server_reason`,
/// `Secure in` logs a failed handshake naming it.
async fn assert_refused(pki: &Pki, hop: Hop, out_reason: &[&str], server_reason: Option<&[&str]>) {
    let setup = Setup::start(pki, &hop, EngineOptions::default()).await;
    let started = Instant::now();
    setup.send_accepted(&hl7("ADT^A01", "REFUSED-1")).await;
    assert!(
        setup.engine.wait_for(WAIT, |s| item(s, "a", "Out").state == ItemState::Error).await,
        "Out did not go to error: {:#?}",
        setup.status()
    );
    assert!(started.elapsed() >= FAILURE_TIMEOUT, "in error before the failure timeout");
    assert!(
        setup.engine.wait_for(WAIT, |s| (item(s, "a", "Out").errors, item(s, "a", "Out").queue_depth) == (1, 0)).await,
        "the message was not failed: {:#?}",
        setup.status()
    );
    let status = setup.status();
    let out = item(&status, "a", "Out");
    assert_eq!(out.state, ItemState::Error);
    assert_eq!((out.queue_depth, out.sent, out.errors), (0, 0, 1), "{out:#?}");
    let store = setup.engine.store();
    let failed = store.header(2).unwrap().expect("the message's header at Out");
    assert_eq!((failed.target.as_str(), failed.status), ("Out", switchboard::store::Status::Error));
    let error = failed.error.unwrap_or_default();
    assert!(error.contains("transport failure (TLS handshake)") && mentions(&error, out_reason), "{error}");
    let last_error = out.last_error.clone().expect("last error");
    assert!(mentions(&last_error, out_reason), "Out's last error does not name {out_reason:?}: {last_error}");
    assert_eq!(status.production("a").expect("a").state, ProductionState::Troubled);
    setup.event_naming("a", "Out", out_reason).await;
    assert_eq!(item(&status, "b", "Secure in").received, 0);
    assert!(!setup.inbox.join("REFUSED-1.hl7").exists());
    if let Some(reason) = server_reason {
        let words: Vec<&str> = ["tls handshake", "failed"].iter().chain(reason).copied().collect();
        setup.event_naming("b", "Secure in", &words).await;
    }
    setup.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_an_untrusted_authority_is_refused() {
    let pki = Pki::new();
    let hop = Hop { client_leaf: Some("untrusted-client"), ..Hop::default() };
    assert_refused(&pki, hop, &["tls", "unknownca"], Some(&["unknownissuer"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused_when_the_server_requires_one() {
    let pki = Pki::new();
    let hop = Hop { client_leaf: None, ..Hop::default() };
    assert_refused(&pki, hop, &["tls", "certificaterequired"], Some(&["no certificates"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_server_certificate_is_refused() {
    let pki = Pki::new();
    let hop = Hop { server_leaf: "expired", ..Hop::default() };
    assert_refused(&pki, hop, &["tls handshake", "expired"], Some(&["alert", "certificateexpired"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_that_is_not_yet_valid_is_refused() {
    let pki = Pki::new();
    let hop = Hop { server_leaf: "not-yet-valid", ..Hop::default() };
    assert_refused(&pki, hop, &["tls handshake", "not valid yet"], Some(&["alert", "certificateexpired"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_without_server_auth_is_refused() {
    let pki = Pki::new();
    let hop = Hop { server_leaf: "no-server-auth", ..Hop::default() };
    assert_refused(&pki, hop, &["tls handshake", "server authentication"], Some(&["alert", "unsupportedcertificate"]))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_for_another_host_is_refused_and_accepted_without_host_verification() {
    let pki = Pki::new();
    let hop = Hop { server_leaf: "wrong-host", host: "localhost", ..Hop::default() };
    assert_refused(
        &pki,
        hop.clone(),
        &["tls handshake", "not valid for name \"localhost\""],
        Some(&["alert", "badcertificate"]),
    )
    .await;

    // The same certificate and host, with verify_host: false: delivered.
    let setup = Setup::start(&pki, &Hop { verify_host: false, ..hop }, EngineOptions::default()).await;
    let message = hl7("ADT^A01", "RELAXED-1");
    setup.send_accepted(&message).await;
    let delivered = setup.inbox.join("RELAXED-1.hl7");
    assert!(
        setup.engine.wait_for(WAIT, |s| item(s, "a", "Out").sent == 1 && delivered.exists()).await,
        "not delivered: {:#?}",
        setup.status()
    );
    assert_eq!(std::fs::read(&delivered).expect("inbox file"), message);
    assert_eq!(item(&setup.status(), "a", "Out").state, ItemState::Running);
    setup.engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// 3. The wrong kind of client

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_clients_on_a_tls_port_fail_cleanly_without_stalling_tls_clients() {
    let pki = Pki::new();
    let setup = Setup::start(&pki, &Hop::default(), EngineOptions::default()).await;
    let addr = ("127.0.0.1", setup.secure_port);
    // One plaintext client says nothing (the handshake waits for it), one
    // sends a framed message.
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let mut plain = TcpStream::connect(addr).await.expect("connect");
    plain.write_all(&frame(&hl7("ADT^A01", "PLAIN-1"))).await.expect("write");

    let started = Instant::now();
    let ack = tls_exchange(&pki.client(Some("client")), setup.secure_port, &hl7("ADT^A01", "TLS-1")).await;
    let took = started.elapsed();
    assert_eq!(reply(&ack.expect("ACK over TLS")).acknowledgment_code(), Some("AA"));
    assert!(took < Duration::from_secs(1), "the TLS client waited {took:?}");

    let received = read_until_closed(&mut plain, WAIT).await.expect("the plaintext connection must be closed");
    assert!(!received.windows(4).any(|w| w == b"MSA|"), "a plaintext client got an ACK: {received:?}");
    let received = read_until_closed(&mut silent, WAIT).await.expect("the silent connection must be closed");
    assert!(received.is_empty() || received[0] != 0x0B, "{received:?}");

    let status = setup.status();
    assert_eq!(item(&status, "b", "Secure in").received, 1);
    assert_eq!(item(&status, "b", "Secure in").state, ItemState::Running);
    setup.event_naming("b", "Secure in", &["plaintext on a tls port", "the sender must use tls"]).await;
    setup.event_naming("b", "Secure in", &["nothing received within 1s", "first_byte_timeout"]).await;
    setup.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_on_a_plaintext_port_fails_cleanly_without_stalling_plaintext_clients() {
    let pki = Pki::new();
    let setup = Setup::start(&pki, &Hop::default(), EngineOptions::default()).await;
    let client = pki.client(Some("client"));
    let port = setup.in_port;
    let handshake = tokio::spawn(async move {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
        let started = Instant::now();
        let result =
            client.connector().expect("connector").connect(client.server_name("localhost").expect("name"), tcp);
        match tokio::time::timeout(WAIT, result).await {
            Ok(Ok(_)) => Err("the handshake succeeded on a plaintext port".to_owned()),
            Ok(Err(e)) => Ok((e.to_string(), started.elapsed())),
            Err(_) => Err("the handshake neither failed nor finished".to_owned()),
        }
    });
    // Give the ClientHello time to arrive, then a plaintext client.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let ack = plain_exchange(setup.in_port, &hl7("ADT^A01", "PLAIN-2")).await.expect("ACK");
    let took = started.elapsed();
    assert_eq!(reply(&ack).acknowledgment_code(), Some("AA"));
    assert!(took < Duration::from_secs(1), "the plaintext client waited {took:?}");

    let (error, failed_after) = handshake.await.expect("join").unwrap_or_else(|e| panic!("{e}"));
    assert!(failed_after < Duration::from_secs(4), "the handshake took {failed_after:?} to fail: {error}");
    let status = setup.status();
    assert_eq!(item(&status, "a", "In").received, 1);
    assert_eq!(item(&status, "a", "In").state, ItemState::Running);
    setup.event_naming("a", "In", &["tls on a plaintext port", "the sender must not use tls here"]).await;
    setup.engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// 4. Renewal while running

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_server_certificate_is_used_by_new_handshakes_while_the_engine_runs() {
    let pki = Pki::new();
    let options = EngineOptions { tls_reload_interval: Duration::from_millis(200), ..EngineOptions::default() };
    let setup = Setup::start(&pki, &Hop::default(), options).await;
    let client = pki.client(Some("client"));
    let old_serial = pki.serial("server");
    assert_eq!(server_serial(&client, setup.secure_port).await.expect("handshake"), old_serial);
    assert_eq!(certificate(&setup.status(), "b-server").serial.as_deref(), Some(old_serial.as_str()));

    // Renewal the way tools do it: new files, renamed over the old ones.
    let renewed = pki.intermediate.issue(&server_request(730)).expect("renew");
    let new_serial = CertificateInfo::parse(&renewed.cert_der).expect("parse").serial;
    assert_ne!(new_serial, old_serial);
    pki.write("renewed.key", &renewed.key_pem);
    pki.write("renewed.crt", &format!("{}{}", renewed.cert_pem, pki.intermediate_pem));
    std::fs::rename(pki.path("renewed.key"), pki.path("server.key")).expect("rename key");
    std::fs::rename(pki.path("renewed.crt"), pki.path("server.crt")).expect("rename cert");

    let deadline = Instant::now() + WAIT;
    let mut seen = old_serial.clone();
    while seen != new_serial && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen = server_serial(&client, setup.secure_port).await.expect("handshake");
    }
    assert_eq!(seen, new_serial, "new handshakes still get the old certificate");
    assert!(
        setup
            .engine
            .wait_for(WAIT, |s| certificate(s, "b-server").serial.as_deref() == Some(new_serial.as_str()))
            .await,
        "the certificate status was not refreshed: {:#?}",
        certificate(&setup.status(), "b-server")
    );
    let status = certificate(&setup.status(), "b-server").clone();
    let not_after = status.not_after.expect("not_after");
    assert!(not_after > OffsetDateTime::now_utc() + time::Duration::days(700), "{not_after}");
    assert!(status.days_left.expect("days left") >= 365, "{status:#?}");

    // The engine kept running: a message still goes through.
    assert!(setup.status().productions.iter().all(|p| p.state == ProductionState::Running));
    setup.send_accepted(&hl7("ADT^A01", "RENEWED-1")).await;
    assert!(
        setup.engine.wait_for(WAIT, |s| item(s, "b", "Inbox").sent == 1).await,
        "not delivered after renewal: {:#?}",
        setup.status()
    );
    let tls_events: Vec<String> = setup
        .engine
        .store()
        .recent_events(1000)
        .expect("events")
        .into_iter()
        .filter(|e| e.kind == "tls")
        .map(|e| e.text)
        .collect();
    assert!(tls_events.iter().any(|t| mentions(t, &["b-server", "new certificate files in use"])), "{tls_events:#?}");
    setup.engine.shutdown().await;
}

/// Replaces `NAME.crt` and `NAME.key` with copies of the leaf `with`, the
/// way renewal tools do: new files renamed over the old ones.
fn replace_leaf(pki: &Pki, name: &str, with: &str) {
    for ext in ["key", "crt"] {
        let text = std::fs::read_to_string(pki.path(&format!("{with}.{ext}"))).expect("read");
        pki.write(&format!("replacing.{ext}"), &text);
        std::fs::rename(pki.path(&format!("replacing.{ext}")), pki.path(&format!("{name}.{ext}"))).expect("rename");
    }
}

/// Waits for an event of kind `tls` that mentions every one of `words`;
/// returns its level and text.
async fn tls_event(setup: &Setup, words: &[&str]) -> (String, String) {
    let deadline = Instant::now() + WAIT;
    loop {
        let events = setup.engine.store().recent_events(1000).expect("events");
        if let Some(e) = events.iter().find(|e| e.kind == "tls" && mentions(&e.text, words)) {
            return (e.level.clone(), e.text.clone());
        }
        if Instant::now() >= deadline {
            let texts: Vec<&str> = events.iter().map(|e| e.text.as_str()).collect();
            panic!("no tls event names {words:?}; events: {texts:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The certificate of a TLS configuration replaced by an expired one while
/// the engine runs: the engine keeps the certificate in force (peers would
/// refuse the expired one), says so in an error event, in the certificate
/// status behind the sensors and metrics, and in the doctor's report; and
/// a good certificate put in its place afterwards is used without a
/// restart. Server side (`b-server`, presented to every sender) and client
/// side (`a-client`, presented by `Out`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_replaced_by_an_expired_one_is_not_put_in_force_and_a_good_one_is() {
    for (config, leaf) in [("b-server", "server"), ("a-client", "client")] {
        let pki = Pki::new();
        let options = EngineOptions { tls_reload_interval: Duration::from_millis(200), ..EngineOptions::default() };
        let setup = Setup::start(&pki, &Hop::default(), options).await;
        let client = pki.client(Some("client"));
        let server_serial_before = pki.serial("server");

        replace_leaf(&pki, leaf, "expired");
        let (level, text) = tls_event(&setup, &[config, "expired on", "previous ones stay in force"]).await;
        assert_eq!(level, "error", "{text}");
        let not_in_force =
            |s: &EngineStatus| certificate(s, config).problems.iter().any(|f| f.kind == FindingKind::NotInForce);
        assert!(setup.engine.wait_for(WAIT, not_in_force).await, "{:#?}", certificate(&setup.status(), config));
        let status = certificate(&setup.status(), config).clone();
        assert!(status.problem, "{status:#?}");
        assert!(status.days_left.expect("days left") < 0, "the files' certificate has expired: {status:#?}");
        assert!(status.problems.iter().any(|f| f.kind == FindingKind::Expired), "{status:#?}");
        let report = setup.engine.tls_reports().into_iter().find(|r| r.name == config).expect("a report");
        assert!(report.has(FindingKind::Expired) && report.has(FindingKind::NotInForce), "{:#?}", report.findings);

        // The certificate in force still carries the feed: senders get the
        // good server certificate, and `Out` presents the good client one.
        assert_eq!(server_serial(&client, setup.secure_port).await.expect("handshake"), server_serial_before);
        setup.send_accepted(&hl7("ADT^A01", "KEPT-1")).await;
        assert!(
            setup.engine.wait_for(WAIT, |s| item(s, "b", "Inbox").sent == 1).await,
            "{config}: not delivered with the expired files in place: {:#?}",
            setup.status()
        );

        // A good certificate put in place is used at once.
        let request = if leaf == "server" {
            server_request(730)
        } else {
            let mut request = server_request(730);
            (request.server_auth, request.client_auth) = (false, true);
            request
        };
        let renewed = pki.leaf("renewed", &request);
        replace_leaf(&pki, leaf, "renewed");
        tls_event(&setup, &[config, "new certificate files in use"]).await;
        let renewed_in_status = |s: &EngineStatus| {
            let c = certificate(s, config);
            c.serial.as_deref() == Some(renewed.as_str()) && !c.problem
        };
        assert!(setup.engine.wait_for(WAIT, renewed_in_status).await, "{:#?}", certificate(&setup.status(), config));
        if leaf == "server" {
            assert_eq!(server_serial(&client, setup.secure_port).await.expect("handshake"), renewed);
        }
        setup.send_accepted(&hl7("ADT^A01", "RENEWED-2")).await;
        assert!(
            setup.engine.wait_for(WAIT, |s| item(s, "b", "Inbox").sent == 2).await,
            "{config}: not delivered after the renewal: {:#?}",
            setup.status()
        );
        let out = item(&setup.status(), "a", "Out").clone();
        assert_eq!(out.errors, 0, "{config}: {out:#?}");
        setup.engine.shutdown().await;
    }
}

// ---------------------------------------------------------------------------
// 5. Interoperability with OpenSSL

fn openssl_missing() -> bool {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("SKIPPED: openssl is not installed, so the interoperability test cannot run");
        return true;
    }
    false
}

/// An `openssl` child process whose output is collected as it comes; it is
/// killed when dropped.
struct Openssl {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Openssl {
    fn spawn(args: &[String]) -> Self {
        let mut child = Command::new("openssl")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn openssl");
        let collect = |mut pipe: Box<dyn std::io::Read + Send>| {
            let sink = Arc::new(Mutex::new(Vec::new()));
            let shared = sink.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    shared.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
            sink
        };
        let stdout = collect(Box::new(child.stdout.take().expect("stdout")));
        let stderr = collect(Box::new(child.stderr.take().expect("stderr")));
        Self { stdin: child.stdin.take(), child, stdout, stderr }
    }

    fn write(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin.write_all(bytes).expect("write to openssl");
        stdin.flush().expect("flush");
    }

    fn stdout(&self) -> Vec<u8> {
        self.stdout.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits until stdout holds `wanted`.
    async fn wait_stdout(&self, wanted: &[u8]) -> bool {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.stdout().windows(wanted.len()).any(|w| w == wanted) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    fn describe(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&self.stdout()), self.stderr())
    }
}

impl Drop for Openssl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_client_sends_a_framed_message_through_a_tls_mllp_in() {
    if openssl_missing() {
        return;
    }
    let pki = Pki::new();
    let setup = Setup::start(&pki, &Hop::default(), EngineOptions::default()).await;
    let file = |name: &str| pki.path(name).display().to_string();
    let args = [
        "s_client",
        "-connect",
        &format!("127.0.0.1:{}", setup.secure_port),
        "-servername",
        "localhost",
        "-verify_hostname",
        "localhost",
        "-verify_return_error",
        "-CAfile",
        &file("root.crt"),
        "-cert",
        &file("client.crt"),
        "-key",
        &file("client.key"),
        // -cert sends only the first certificate of the file.
        "-cert_chain",
        &file("intermediate.crt"),
        "-quiet",
        "-ign_eof",
    ]
    .map(str::to_owned);
    let mut s_client = Openssl::spawn(&args);
    let message = hl7("ADT^A01", "OPENSSL-1");
    s_client.write(&frame(&message));
    assert!(s_client.wait_stdout(&[0x1C, 0x0D]).await, "no ACK frame from the engine\n{}", s_client.describe());
    let stdout = s_client.stdout();
    let start = stdout.iter().position(|&b| b == 0x0B).expect("start block");
    let end = stdout.windows(2).position(|w| w == [0x1C, 0x0D]).expect("end block");
    let ack = reply(&stdout[start + 1..end]);
    assert_eq!(ack.acknowledgment_code(), Some("AA"), "{ack:?}");
    assert_eq!(ack.acknowledged_control_id(), Some("OPENSSL-1"));
    drop(s_client);

    let delivered = setup.inbox.join("OPENSSL-1.hl7");
    assert!(setup.engine.wait_for(WAIT, |_| delivered.exists()).await, "not in the inbox");
    assert_eq!(std::fs::read(&delivered).expect("inbox file"), message);
    setup.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mllp_out_delivers_to_openssl_s_server_with_its_client_certificate() {
    if openssl_missing() {
        return;
    }
    let pki = Pki::new();
    let [port] = free_ports();
    let file = |name: &str| pki.path(name).display().to_string();
    let args = [
        "s_server",
        "-accept",
        &format!("127.0.0.1:{port}"),
        "-cert",
        &file("server.crt"),
        "-key",
        &file("server.key"),
        "-cert_chain",
        &file("intermediate.crt"),
        "-CAfile",
        &file("root.crt"),
        "-Verify",
        "1",
        "-verify_return_error",
        "-quiet",
    ]
    .map(str::to_owned);
    let mut s_server = Openssl::spawn(&args);
    // s_server needs a moment to listen; Out retries until it does.
    let hop = Hop { downstream_port: Some(port), failure_timeout: WAIT, ..Hop::default() };
    let setup = Setup::start(&pki, &hop, EngineOptions::default()).await;
    let message = hl7("ADT^A01", "S-SERVER-1");
    setup.send_accepted(&message).await;
    assert!(s_server.wait_stdout(&frame(&message)).await, "the message did not arrive\n{}", s_server.describe());
    let stderr = s_server.stderr();
    assert!(
        stderr.contains("depth=0 CN = switchboard-a") && stderr.contains("verify return:1"),
        "s_server did not verify the client certificate\n{}",
        s_server.describe()
    );
    assert_eq!(item(&setup.status(), "a", "Out").queue_depth, 1, "delivered before the reply");

    // s_server relays its stdin to the client: answer with an ACK.
    let ack = AckBuilder::new(&Message::parse(&message).expect("parse"), AckCode::AA).build();
    s_server.write(&frame(&ack));
    assert!(
        setup.engine.wait_for(WAIT, |s| item(s, "a", "Out").sent == 1 && item(s, "a", "Out").queue_depth == 0).await,
        "the ACK did not complete the delivery: {:#?}\n{}",
        setup.status(),
        s_server.describe()
    );
    assert_eq!(item(&setup.status(), "a", "Out").state, ItemState::Running);
    setup.engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// 6. Certificate status

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_status_carries_expiry_and_problems_of_every_tls_configuration() {
    let pki = Pki::new();
    let setup = Setup::start(&pki, &Hop::default(), EngineOptions::default()).await;
    let status = setup.status();
    let names: Vec<&str> = status.certificates.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["a-client", "b-server"]);
    for (name, leaf, role) in [("a-client", "client", "client"), ("b-server", "server", "server")] {
        let cert = certificate(&status, name);
        assert_eq!(cert.role, role);
        assert_eq!(cert.serial.as_deref(), Some(pki.serial(leaf).as_str()), "{cert:#?}");
        assert_eq!(cert.days_left, Some(365), "{cert:#?}");
        assert!(!cert.problem && cert.problems.is_empty(), "{cert:#?}");
        assert!(cert.sha256_fingerprint.is_some() && cert.not_after.is_some(), "{cert:#?}");
    }
    setup.engine.shutdown().await;

    // A server certificate that expires in 10 days is a problem with a
    // 30-day warning threshold, and none with a 5-day one.
    pki.leaf("expiring", &server_request(10));
    let hop = Hop { server_leaf: "expiring", ..Hop::default() };
    for (warning_days, problem) in [(30, true), (5, false)] {
        let options = EngineOptions { certificate_warning_days: warning_days, ..EngineOptions::default() };
        let setup = Setup::start(&pki, &hop, options).await;
        let status = setup.status();
        let server = certificate(&status, "b-server");
        assert_eq!(server.days_left, Some(10), "{server:#?}");
        assert_eq!(server.problem, problem, "warning after {warning_days} days: {server:#?}");
        if problem {
            assert!(server.problems.iter().any(|f| mentions(&f.message, &["expires"])), "{server:#?}");
        }
        assert!(!certificate(&status, "a-client").problem, "{:#?}", certificate(&status, "a-client"));
        // The feed itself still works.
        setup.send_accepted(&hl7("ADT^A01", &format!("EXPIRING-{warning_days}"))).await;
        assert!(setup.engine.wait_for(WAIT, |s| item(s, "b", "Inbox").sent == 1).await, "{:#?}", setup.status());
        setup.engine.shutdown().await;
    }
}
