//! What TLS costs an MLLP feed, measured over 127.0.0.1 with the stack the
//! engine uses (rustls with *ring*, tokio-rustls, the MLLP codec and client):
//!
//! - full mutual-TLS handshakes per second (ECDSA P-256 certificates, root →
//!   intermediate → leaf, no session resumption), against plain TCP
//!   connections as the baseline;
//! - steady-state request/reply throughput of 64 connections, each sending
//!   a ~700-byte ADT^A01 and waiting for a small ACK, over TLS and over plain
//!   TCP in the same run.
//!
//! Run with `cargo bench --bench tls`; it prints Markdown tables. Client and
//! server share one process and its cores, so each figure is what one
//! machine does playing both ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use rustls::client::Resumption;
use rustls::server::NoServerSessionStorage;
use rustls_pki_types::ServerName;
use switchboard::config::{TlsConfig, TlsRole, TlsVersion, VerifyPeer};
use switchboard::mllp::{ClientTls, MllpClient, MllpCodec, MllpFrame};
use switchboard::tls::TlsConfigHandle;
use switchboard::tls::pki::{CertificateAuthority, CertificateRequest, KeyType};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::codec::Framed;

/// How long each handshake measurement runs.
const HANDSHAKE_RUN: Duration = Duration::from_secs(2);
/// How long each throughput measurement runs, after its connections are open.
const THROUGHPUT_RUN: Duration = Duration::from_secs(3);
/// Unmeasured traffic before each throughput measurement.
const WARM_UP: Duration = Duration::from_millis(500);
/// Each measurement is repeated this often, plain and TLS taking turns, so
/// that load from elsewhere on the machine hits both alike; the median is
/// reported.
const ROUNDS: usize = 3;
/// Connections of the throughput measurement.
const CONNECTIONS: usize = 64;
/// Concurrent clients of the handshake measurements.
const HANDSHAKE_CONCURRENCY: [usize; 2] = [1, 8];

/// An admission with the segments a real one carries, about 700 bytes.
const ADT_A01: &str = "MSH|^~\\&|EPIC|GENERAL HOSPITAL|LAB|GENERAL HOSPITAL|20260101120000||ADT^A01^ADT_A01|MSG0000000001|P|2.5.1|||AL|NE\r\
EVN|A01|20260101120000|||JSMITH^SMITH^JOHN^^^DR\r\
PID|1||000123456^^^GH^MR||DOE^JANE^QUINN^^MS||19800101|F||2106-3^White^CDCREC|100 MAIN STREET^APT 4B^SPRINGFIELD^IL^62701^USA^H||^PRN^PH^^1^217^5551234|^WPN^PH^^1^217^5555678|EN^English|M^Married||4000123456\r\
NK1|1|DOE^JOHN^A|SPO^Spouse|||^PRN^PH^^1^217^5551234\r\
PV1|1|I|WARD1^101^A^GENERAL HOSPITAL||||1234^WELBY^MARCUS^^^DR|5678^KILDARE^JAMES^^^DR||MED|||||ADM|A0||4000123456|BCBS|||||||||||||||||||GH||||20260101113000\r\
AL1|1|DA|70618^Penicillin^RXNORM|SV|Hives\r\
DG1|1||J18.9^Pneumonia, unspecified organism^I10|||A\r";

/// The ACK the receiver answers every message with.
const ACK: &str = "MSH|^~\\&|LAB|GENERAL HOSPITAL|EPIC|GENERAL HOSPITAL|20260101120001||ACK^A01^ACK|ACK0000000001|P|2.5.1\r\
MSA|AA|MSG0000000001\r";

/// The two ends of mutual TLS, made from a PKI generated for the run.
struct Tls {
    acceptor: TlsAcceptor,
    /// A connector that resumes nothing: every handshake is a full one.
    full_handshake_connector: TlsConnector,
    /// An acceptor that issues no tickets and keeps no sessions.
    full_handshake_acceptor: TlsAcceptor,
    client: TlsConfigHandle,
    _dir: tempfile::TempDir,
}

impl Tls {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        let (root, root_files) = CertificateAuthority::new_root("Bench Root CA", 30, KeyType::EcdsaP256).expect("root");
        let (intermediate, intermediate_files) =
            root.issue_intermediate(&CertificateRequest::new("Bench Intermediate CA", 30)).expect("intermediate");
        let ca_file = write("root.crt", &root_files.cert_pem);
        let leaf = |name: &str, server: bool| {
            let mut request = CertificateRequest::new(name, 30);
            request.subject_alt_names = vec!["localhost".into(), "127.0.0.1".into()];
            request.server_auth = server;
            request.client_auth = !server;
            let issued = intermediate.issue(&request).expect("leaf");
            let cert = write(&format!("{name}.crt"), &format!("{}{}", issued.cert_pem, intermediate_files.cert_pem));
            let key = write(&format!("{name}.key"), &issued.key_pem);
            (cert, key)
        };
        let (server_cert, server_key) = leaf("server", true);
        let (client_cert, client_key) = leaf("client", false);
        let config = |role, cert, key| TlsConfig {
            role,
            ca_file: Some(ca_file.clone()),
            cert_file: Some(cert),
            key_file: Some(key),
            key_password_env: None,
            key_password_file: None,
            verify_peer: VerifyPeer::Require,
            verify_host: true,
            server_name: None,
            min_version: TlsVersion::Tls12,
            create_if_missing: false,
        };
        let server = TlsConfigHandle::load("bench-server", &config(TlsRole::Server, server_cert, server_key))
            .unwrap_or_else(|e| panic!("{e}"));
        let client = TlsConfigHandle::load("bench-client", &config(TlsRole::Client, client_cert, client_key))
            .unwrap_or_else(|e| panic!("{e}"));

        let mut server_config = (*server.server_config().expect("server config")).clone();
        server_config.session_storage = Arc::new(NoServerSessionStorage {});
        server_config.send_tls13_tickets = 0;
        let mut client_config = (*client.client_config().expect("client config")).clone();
        client_config.resumption = Resumption::disabled();
        Self {
            acceptor: server.acceptor().expect("acceptor"),
            full_handshake_connector: TlsConnector::from(Arc::new(client_config)),
            full_handshake_acceptor: TlsAcceptor::from(Arc::new(server_config)),
            client,
            _dir: dir,
        }
    }

    fn server_name() -> ServerName<'static> {
        ServerName::try_from("localhost").expect("name")
    }
}

/// Latencies in microseconds, sorted, and the quantile `q` of them.
fn quantile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    f64::from(sorted[index]) / 1000.0
}

/// What one measurement produced.
struct Run {
    operations: usize,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.operations as f64 / self.elapsed.as_secs_f64()
    }

    fn p50_ms(&self) -> f64 {
        quantile(&self.latencies_us, 0.5)
    }

    fn p99_ms(&self) -> f64 {
        quantile(&self.latencies_us, 0.99)
    }
}

/// The median round of a measurement, and the lowest and highest rates.
struct Summary {
    median: Run,
    low: f64,
    high: f64,
}

impl Summary {
    fn of(mut runs: Vec<Run>) -> Self {
        runs.sort_by(|a, b| a.per_second().total_cmp(&b.per_second()));
        let low = runs.first().map_or(f64::NAN, Run::per_second);
        let high = runs.last().map_or(f64::NAN, Run::per_second);
        let median = runs.swap_remove(runs.len() / 2);
        Self { median, low, high }
    }
}

/// Accepts connections and, once each handshake is done (the client's
/// certificate verified), writes one byte and closes.
fn spawn_handshake_server(listener: TcpListener, acceptor: Option<TlsAcceptor>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match acceptor {
                    Some(acceptor) => {
                        if let Ok(mut stream) = acceptor.accept(tcp).await {
                            let _ = stream.write_all(b"k").await;
                            let _ = stream.shutdown().await;
                        }
                    }
                    None => {
                        let mut tcp = tcp;
                        let _ = tcp.write_all(b"k").await;
                        let _ = tcp.shutdown().await;
                    }
                }
            });
        }
    })
}

/// Opens connections (with a full handshake each when `tls` is set) from
/// `concurrency` clients for [`HANDSHAKE_RUN`].
async fn handshakes(tls: Option<&Tls>, concurrency: usize) -> Run {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let server = spawn_handshake_server(listener, tls.map(|t| t.full_handshake_acceptor.clone()));
    let connector = tls.map(|t| t.full_handshake_connector.clone());
    let started = Instant::now();
    let end = started + HANDSHAKE_RUN;
    let mut clients = JoinSet::new();
    for _ in 0..concurrency {
        let connector = connector.clone();
        clients.spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < end {
                let began = Instant::now();
                let tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
                tcp.set_nodelay(true).expect("nodelay");
                let mut byte = [0u8; 1];
                match &connector {
                    Some(connector) => {
                        let mut stream = connector.connect(Tls::server_name(), tcp).await.expect("handshake");
                        stream.read_exact(&mut byte).await.expect("read");
                    }
                    None => {
                        let mut tcp = tcp;
                        tcp.read_exact(&mut byte).await.expect("read");
                    }
                }
                if Instant::now() <= end {
                    latencies.push(began.elapsed().as_micros() as u32);
                }
            }
            latencies
        });
    }
    let mut latencies_us = Vec::new();
    while let Some(done) = clients.join_next().await {
        latencies_us.extend(done.expect("client"));
    }
    server.abort();
    latencies_us.sort_unstable();
    Run { operations: latencies_us.len(), elapsed: HANDSHAKE_RUN, latencies_us }
}

/// Answers every MLLP frame of every connection with [`ACK`].
fn spawn_acker(listener: TcpListener, acceptor: Option<TlsAcceptor>) -> tokio::task::JoinHandle<()> {
    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
        let mut framed = Framed::new(stream, MllpCodec::new());
        while let Some(Ok(frame)) = framed.next().await {
            if let MllpFrame::Message(_) = frame
                && framed.send(ACK.as_bytes()).await.is_err()
            {
                break;
            }
        }
    }
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            connections.spawn(async move {
                match acceptor {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            serve(stream).await;
                        }
                    }
                    None => serve(tcp).await,
                }
            });
            while connections.try_join_next().is_some() {}
        }
    })
}

/// [`CONNECTIONS`] MLLP clients (the engine's client, over TLS when `tls`
/// is set), each sending the ADT and waiting for the ACK in a loop.
async fn throughput(tls: Option<&Tls>) -> Run {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address").to_string();
    let server = spawn_acker(listener, tls.map(|t| t.acceptor.clone()));
    let client_tls = tls.map(|t| ClientTls {
        connector: t.client.connector().expect("connector"),
        server_name: t.client.server_name("localhost").expect("name"),
    });
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let client =
            MllpClient::connect_with(&addr, Duration::from_secs(5), client_tls.as_ref()).await.expect("connect");
        clients.push(client);
    }
    let start = Instant::now() + WARM_UP;
    let end = start + THROUGHPUT_RUN;
    let mut tasks = JoinSet::new();
    for mut client in clients {
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let began = Instant::now();
                if began >= end {
                    break;
                }
                let reply = client.exchange(ADT_A01.as_bytes(), Duration::from_secs(10)).await.expect("exchange");
                assert_eq!(reply.len(), ACK.len());
                let done = Instant::now();
                if began >= start && done <= end {
                    latencies.push((done - began).as_micros() as u32);
                }
            }
            latencies
        });
    }
    let mut latencies_us = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies_us.extend(done.expect("client"));
    }
    server.abort();
    latencies_us.sort_unstable();
    Run { operations: latencies_us.len(), elapsed: THROUGHPUT_RUN, latencies_us }
}

/// One exchange over mutual TLS: what `cargo test --benches` checks.
async fn one_exchange(tls: &Tls) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address").to_string();
    let server = spawn_acker(listener, Some(tls.acceptor.clone()));
    let client_tls = ClientTls {
        connector: tls.client.connector().expect("connector"),
        server_name: tls.client.server_name("localhost").expect("name"),
    };
    let mut client = MllpClient::connect_with(&addr, Duration::from_secs(5), Some(&client_tls)).await.expect("connect");
    let reply = client.exchange(ADT_A01.as_bytes(), Duration::from_secs(5)).await.expect("exchange");
    assert_eq!(&reply[..], ACK.as_bytes());
    assert!((650..=750).contains(&ADT_A01.len()), "the ADT is {} bytes", ADT_A01.len());
    server.abort();
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not, and then
    // only checks that an exchange works.
    let measure = std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    runtime.block_on(async {
        let tls = Tls::new();
        if !measure {
            one_exchange(&tls).await;
            println!("tls bench: an exchange over mutual TLS works; run `cargo bench --bench tls` to measure");
            return;
        }
        println!(
            "Over 127.0.0.1, client and server in one process on {cores} core(s); rustls 0.23 with ring, TLS 1.3, \
             ECDSA P-256 certificates (root → intermediate → leaf), mutual TLS. Each row: median of {ROUNDS} rounds \
             (plain and TLS taking turns), with the lowest and highest round in brackets.\n"
        );
        println!("Handshakes ({} s per round, no session resumption):\n", HANDSHAKE_RUN.as_secs());
        println!("| connection | concurrent clients | per second | p50 ms | p99 ms |");
        println!("|---|---:|---:|---:|---:|");
        for concurrency in HANDSHAKE_CONCURRENCY {
            let (mut plain, mut tls_runs) = (Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                plain.push(handshakes(None, concurrency).await);
                tls_runs.push(handshakes(Some(&tls), concurrency).await);
            }
            for (label, runs) in [("plain TCP connect", plain), ("full mutual-TLS handshake", tls_runs)] {
                let summary = Summary::of(runs);
                let run = &summary.median;
                println!(
                    "| {label} | {concurrency} | {:.0} ({:.0}–{:.0}) | {:.2} | {:.2} |",
                    run.per_second(),
                    summary.low,
                    summary.high,
                    run.p50_ms(),
                    run.p99_ms()
                );
            }
        }
        println!(
            "\nMLLP request/reply over {CONNECTIONS} connections ({} s per round after {} ms warm-up; {}-byte \
             ADT^A01, {}-byte ACK):\n",
            THROUGHPUT_RUN.as_secs(),
            WARM_UP.as_millis(),
            ADT_A01.len(),
            ACK.len()
        );
        println!("| transport | exchanges/s | payload MB/s | p50 ms | p99 ms |");
        println!("|---|---:|---:|---:|---:|");
        let (mut plain, mut tls_runs) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            plain.push(throughput(None).await);
            tls_runs.push(throughput(Some(&tls)).await);
        }
        let mut rates = Vec::new();
        for (label, runs) in [("plain TCP", plain), ("mutual TLS", tls_runs)] {
            let summary = Summary::of(runs);
            let run = &summary.median;
            let mb = run.per_second() * (ADT_A01.len() + ACK.len()) as f64 / 1e6;
            println!(
                "| {label} | {:.0} ({:.0}–{:.0}) | {mb:.1} | {:.2} | {:.2} |",
                run.per_second(),
                summary.low,
                summary.high,
                run.p50_ms(),
                run.p99_ms()
            );
            rates.push(run.per_second());
        }
        println!("\nTLS throughput relative to plain TCP (medians): {:.0} %", 100.0 * rates[1] / rates[0]);
    });
}
