//! No secret leaves Switchboard. The real binary runs with an MQTT
//! password, two TLS keys encrypted with a password (one read from an
//! environment variable, one from a file) and an API token; it carries a
//! message over mutual TLS with those keys and is asked for everything it
//! serves. Then it runs again with a wrong MQTT password, a wrong key
//! password and its API token from the options file, and `switchboard
//! check` and `switchboard tls check` run with the wrong password.
//!
//! Every log line (at trace level, so the libraries' own logging too),
//! every topic and payload the broker carries (a client subscribed to `#`),
//! every answer of the web server (each GET of the OpenAPI document, the
//! pages, `/metrics`, the health checks, the refusals of a wrong token) and
//! every file of the store is searched for each secret, right or wrong, as
//! written and base64-encoded (as it would sit inside a longer base64 text,
//! at any of the three alignments).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use switchboard::tls::pki::{CertificateAuthority, CertificateRequest};
use tokio::time::Instant;

use crate::common::{free_port, hl7};
use crate::mqtt::start_broker;
use crate::mqtt_support::{Running, Watcher, send_ok};

const MQTT_USER: &str = "switchboard";
const MQTT_PASSWORD: &str = "mqtt-pw-Vq3nZ8tLx2Rk";
const KEY_PASSWORD: &str = "key-pw-Hd7sW1mPq9Tc";
const API_TOKEN: &str = "api-token-Jf5yB8nGv2Xe6Ku4";
const WRONG_MQTT_PASSWORD: &str = "mqtt-pw-wrong-Ce4Mz7Ya";
const WRONG_KEY_PASSWORD: &str = "key-pw-wrong-Np2Dx9Gw";
const WRONG_API_TOKEN: &str = "api-token-wrong-Rb6Ts3Lh8Qm";
/// The variable that holds the server key's password.
const KEY_PASSWORD_ENV: &str = "HOP_KEY_PASSWORD";
const INSTANCE: &str = "sbsecrets";
/// Longest wait for anything.
const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// What is searched for, and where

/// Base64 of `bytes` with `alphabet` (64 characters), padded.
fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// What gives `secret` away: the text itself, and for each alphabet and
/// each alignment the base64 characters that depend on the secret's bytes
/// alone, which any base64 text holding the secret contains (`user:secret`
/// in a Basic authorization, a secret inside JSON that was encoded...).
fn tells(secret: &str) -> Vec<String> {
    let mut tells = vec![secret.to_owned()];
    for alphabet in [STANDARD, URL_SAFE] {
        for shift in 0..3 {
            let mut bytes = vec![0u8; shift];
            bytes.extend_from_slice(secret.as_bytes());
            let encoded = base64(&bytes, alphabet);
            let (start, end) = ((shift * 8).div_ceil(6), bytes.len() * 8 / 6);
            tells.push(encoded[start..end].to_owned());
        }
    }
    tells
}

/// Every secret of the test, right and wrong, with how each gives itself
/// away.
fn all_tells() -> Vec<(&'static str, String)> {
    [MQTT_PASSWORD, KEY_PASSWORD, API_TOKEN, WRONG_MQTT_PASSWORD, WRONG_KEY_PASSWORD, WRONG_API_TOKEN]
        .into_iter()
        .flat_map(|secret| tells(secret).into_iter().map(move |tell| (secret, tell)))
        .collect()
}

/// Everything collected: where it came from, and the text.
#[derive(Default)]
struct Seen(Vec<(String, String)>);

impl Seen {
    fn add(&mut self, place: impl Into<String>, text: impl Into<String>) {
        self.0.push((place.into(), text.into()));
    }

    /// Each place that holds a secret (once per secret), with the secret
    /// and a piece of the text around it.
    fn leaks(&self) -> Vec<String> {
        let tells = all_tells();
        let mut leaks = Vec::new();
        for (place, text) in &self.0 {
            let mut found: Vec<&str> = Vec::new();
            for (secret, tell) in &tells {
                if found.contains(secret) {
                    continue;
                }
                if let Some(at) = text.find(tell.as_str()) {
                    found.push(secret);
                    let mut from = at.saturating_sub(80);
                    while !text.is_char_boundary(from) {
                        from -= 1;
                    }
                    let mut to = (at + tell.len() + 80).min(text.len());
                    while !text.is_char_boundary(to) {
                        to += 1;
                    }
                    leaks.push(format!("{place}: {secret:?} (as {tell:?}) in …{}…", &text[from..to]));
                }
            }
        }
        leaks
    }

    fn count(&self, place_prefix: &str) -> usize {
        self.0.iter().filter(|(place, _)| place.starts_with(place_prefix)).count()
    }

    fn any(&self, place_prefix: &str, needle: &str) -> bool {
        self.0.iter().any(|(place, text)| place.starts_with(place_prefix) && text.contains(needle))
    }
}

#[test]
fn the_search_finds_a_secret_in_base64_at_every_alignment() {
    assert_eq!(base64(b"foobar", STANDARD), "Zm9vYmFy");
    assert_eq!(base64(b"fooba", STANDARD), "Zm9vYmE=");
    assert_eq!(base64(&[0xfb, 0xff], URL_SAFE), "-_8=");
    for prefix in ["", "u", "us", "user:", "a longer prefix, "] {
        for suffix in ["", "x", "\"}"] {
            let text = format!("{prefix}{API_TOKEN}{suffix}");
            let mut seen = Seen::default();
            seen.add("standard", base64(text.as_bytes(), STANDARD));
            seen.add("url-safe", base64(text.as_bytes(), URL_SAFE));
            assert_eq!(seen.leaks().len(), 2, "{prefix:?} {suffix:?}: {:?}", seen.leaks());
        }
    }
    let mut seen = Seen::default();
    seen.add("clean", base64(b"api-token-Jf5yB8nGv2Xe6Ku", STANDARD));
    assert!(seen.leaks().is_empty(), "{:?}", seen.leaks());
}

// ---------------------------------------------------------------------------
// The binary, its files and its answers

/// A PKCS#8 key encrypted with `password` (PBKDF2-SHA256, AES-256-CBC, as
/// `openssl pkcs8 -topk8 -v2 aes-256-cbc` writes it).
fn encrypt_key(pem: &str, password: &str) -> String {
    let (_, doc) = pkcs8::SecretDocument::from_pem(pem).expect("pem");
    let info = pkcs8::PrivateKeyInfoRef::try_from(doc.as_bytes()).expect("pkcs8");
    let params =
        pkcs8::pkcs5::pbes2::Parameters::generate_pbkdf2_sha256_aes256cbc(2048, &[3u8; 16], [5u8; 16]).expect("params");
    let encrypted = info.encrypt_with_params(params, password).expect("encrypt");
    encrypted.to_pem("ENCRYPTED PRIVATE KEY", pkcs8::LineEnding::LF).expect("pem").to_string()
}

/// Writes a file only its owner may read, as keys and passwords are kept.
fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A CA, a server and a client certificate, their keys encrypted with
/// `KEY_PASSWORD`, and the client key's password file.
fn write_pki(dir: &Path) {
    let (ca, ca_files) = CertificateAuthority::new_root("Secrets test CA", 30, Default::default()).expect("CA");
    std::fs::write(dir.join("ca.crt"), &ca_files.cert_pem).unwrap();
    for name in ["server", "client"] {
        let mut request = CertificateRequest::new(format!("switchboard {name}"), 30);
        request.subject_alt_names = vec!["localhost".into(), "127.0.0.1".into()];
        let issued = ca.issue(&request).expect("certificate");
        std::fs::write(dir.join(format!("{name}.crt")), &issued.cert_pem).unwrap();
        write_private(&dir.join(format!("{name}.key")), &encrypt_key(&issued.key_pem, KEY_PASSWORD));
    }
    write_private(&dir.join("client-key-password"), &format!("{KEY_PASSWORD}\n"));
}

/// An MLLP listener that hands its messages over mutual TLS (both keys
/// encrypted) to a TLS listener of the same production, which writes them
/// to `inbox`.
fn productions(dir: &Path, in_port: u16, secure_port: u16) -> String {
    let d = dir.display();
    format!(
        r#"tls:
  hop-client:
    role: client
    ca_file: "{d}/ca.crt"
    cert_file: "{d}/client.crt"
    key_file: "{d}/client.key"
    key_password_file: "{d}/client-key-password"
  hop-server:
    role: server
    ca_file: "{d}/ca.crt"
    cert_file: "{d}/server.crt"
    key_file: "{d}/server.key"
    key_password_env: {KEY_PASSWORD_ENV}
    verify_peer: require
productions:
  p:
    name: Secrets
    autostart: true
    stop_timeout: 2s
    items:
      - name: In
        kind: mllp_in
        host: 127.0.0.1
        port: {in_port}
        targets: [Out]
      - name: Out
        kind: mllp_out
        host: 127.0.0.1
        port: {secure_port}
        tls: hop-client
        connect_timeout: 1s
        response_timeout: 2s
        retry_interval: 100ms
        failure_timeout: 1s
      - name: Secure
        kind: mllp_in
        host: 127.0.0.1
        port: {secure_port}
        tls: hop-server
        targets: [Inbox]
      - name: Inbox
        kind: file_out
        path: "{d}/inbox"
        filename: "{{control_id}}.hl7"
"#
    )
}

const ITEMS: [&str; 4] = ["In", "Out", "Secure", "Inbox"];

/// A one-shot command's output, both streams.
fn run_once(args: &[&str], envs: &[(&str, &str)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .env_clear()
        .envs(envs.iter().copied())
        .output()
        .expect("run switchboard");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

async fn wait_for(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An answer, headers and body, as text.
async fn answer(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let mut text = format!("{status}\n");
    for (name, value) in response.headers() {
        text.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())));
    }
    text.push('\n');
    text.push_str(&response.text().await.unwrap_or_default());
    (status, text)
}

/// The first events of a server-sent event stream, for a moment.
async fn first_events(response: reqwest::Response) -> String {
    let mut text = format!("{}\n", response.status());
    let mut response = response;
    let until = Instant::now() + Duration::from_secs(1);
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(until, response.chunk()).await {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text
}

fn path_segment(text: &str) -> String {
    text.replace(' ', "%20")
}

/// Asks `base` (a listener's address) for everything: every GET of the
/// OpenAPI document for every item and message, the pages, metrics and
/// health; then refusals (a wrong token, a Basic authorization, a change
/// without a token). `token` is sent when given.
async fn ask_everything(seen: &mut Seen, label: &str, base: &str, token: Option<&str>) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let get = |path: &str| {
        let request = http.get(format!("{base}{path}"));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    };
    let doc: Value = get("/api/v1/openapi.json").send().await.unwrap().json().await.expect("the OpenAPI document");
    // A message acknowledged is searchable once the store has committed it.
    let deadline = Instant::now() + WAIT;
    let ids: Vec<String> = loop {
        let messages: Value = get("/api/v1/messages").send().await.unwrap().json().await.expect("messages");
        let ids: Vec<String> = messages["messages"]
            .as_array()
            .map(|list| list.iter().filter_map(|m| m["id"].as_u64()).map(|id| id.to_string()).collect())
            .unwrap_or_default();
        if !ids.is_empty() {
            break ids;
        }
        assert!(Instant::now() < deadline, "{label}: no message in the store");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut paths = Vec::new();
    for (path, operations) in doc["paths"].as_object().expect("paths") {
        if operations.get("get").is_none() {
            continue;
        }
        let items: &[&str] = if path.contains("{item}") { &ITEMS } else { &[""] };
        let ids: &[String] = if path.contains("{id}") { &ids } else { &[String::new()] };
        for item in items {
            for id in ids {
                let concrete =
                    path.replace("{production}", "p").replace("{item}", &path_segment(item)).replace("{id}", id);
                paths.push(format!("/api/v1{concrete}"));
            }
        }
    }
    paths.extend(
        ["/", "/productions/p", "/messages", "/certificates", "/events", "/store", "/metrics", "/healthz", "/readyz"]
            .map(str::to_owned),
    );
    paths.extend(ITEMS.map(|item| format!("/productions/p/items/{}", path_segment(item))));
    paths.extend(ids.iter().map(|id| format!("/messages/{id}")));
    for path in &paths {
        let response = get(path).send().await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let text = if path.ends_with("/stream") {
            first_events(response).await
        } else {
            let (status, text) = answer(response).await;
            assert!(status.is_success(), "{label} GET {path}: {text}");
            text
        };
        seen.add(format!("http {label} GET {path}"), text);
    }
    assert!(paths.len() >= 30, "{label}: only {} paths", paths.len());

    // Refusals.
    let url = format!("{base}/api/v1/status");
    let (status, text) = answer(http.get(&url).bearer_auth(WRONG_API_TOKEN).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    seen.add(format!("http {label} wrong token"), text);
    let (status, text) = answer(http.get(&url).basic_auth(MQTT_USER, Some(API_TOKEN)).send().await.unwrap()).await;
    seen.add(format!("http {label} basic authorization ({status})"), text);
    let stop = format!("{base}/api/v1/productions/p/stop");
    let (status, text) = answer(http.post(&stop).send().await.unwrap()).await;
    assert!(status.is_client_error(), "{text}");
    seen.add(format!("http {label} change without a token"), text);
}

/// Every file under `dir`, as text.
fn read_tree(seen: &mut Seen, label: &str, dir: &Path) {
    let mut pending = vec![dir.to_path_buf()];
    let mut files = 0;
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().map(Result::unwrap) {
            let path: PathBuf = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                seen.add(format!("file {label} {}", path.display()), String::from_utf8_lossy(&bytes).into_owned());
                files += 1;
            }
        }
    }
    assert!(files > 0, "no files in {}", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_key_password_or_token_appears_in_logs_mqtt_answers_or_files() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path();
    write_pki(pki);
    let broker = start_broker(Some((MQTT_USER, MQTT_PASSWORD))).await;
    let watcher = Watcher::start(broker, "#", Some((MQTT_USER, MQTT_PASSWORD))).await;
    let broker = broker.to_string();
    let mut seen = Seen::default();

    // 1. Everything right: a message over mutual TLS with both encrypted
    // keys, MQTT with the password, the API with the token.
    let (in_port, secure_port, web_port, api_port) = (free_port(), free_port(), free_port(), free_port());
    let config = pki.join("productions.yaml");
    std::fs::write(&config, productions(pki, in_port, secure_port)).unwrap();
    let data = pki.join("data");
    let (web, api) = (web_port.to_string(), api_port.to_string());
    let common = [
        "--config",
        config.to_str().unwrap(),
        "--web-port",
        &web,
        "--api-port",
        &api,
        "--mqtt-host",
        "127.0.0.1",
        "--mqtt-port",
        &broker,
        "--mqtt-username",
        MQTT_USER,
        "--instance-id",
        INSTANCE,
    ];
    let mut args = common.to_vec();
    args.extend(["--data-dir", data.to_str().unwrap()]);
    let engine = Running::start(
        &args,
        &[
            ("SWITCHBOARD_MQTT_PASSWORD", MQTT_PASSWORD),
            ("SWITCHBOARD_API_TOKENS", API_TOKEN),
            (KEY_PASSWORD_ENV, KEY_PASSWORD),
        ],
    );
    watcher.wait_for(&format!("{INSTANCE}/availability"), "online").await;
    watcher.wait_for(&format!("{INSTANCE}/production/p/state"), "ON").await;
    engine.wait_logged("the web server", &format!("127.0.0.1:{api_port}")).await;
    send_ok(in_port, "SECRET1").await;
    let delivered = pki.join("inbox/SECRET1.hl7");
    wait_for("the message to cross mutual TLS", || delivered.exists()).await;
    assert_eq!(std::fs::read(&delivered).unwrap(), hl7("ADT^A01", "SECRET1"));
    // Commands, a wrong one included, so that their logging is searched too.
    watcher.publish(&format!("{INSTANCE}/production/p/item/out/restart"), "PRESS").await;
    watcher.publish(&format!("{INSTANCE}/production/p/set"), "MAYBE").await;
    watcher.publish(&format!("{INSTANCE}/engine/republish"), "PRESS").await;
    engine.wait_logged("the wrong command", "invalid MQTT command").await;
    ask_everything(&mut seen, "ui", &format!("http://127.0.0.1:{web_port}"), None).await;
    ask_everything(&mut seen, "api", &format!("http://127.0.0.1:{api_port}"), Some(API_TOKEN)).await;
    for (n, line) in engine.stop().await.into_iter().enumerate() {
        seen.add(format!("log run {n}"), line);
    }
    watcher.wait_for(&format!("{INSTANCE}/availability"), "offline").await;
    read_tree(&mut seen, "run", &data);

    // 2. Everything wrong: the MQTT password (from the options file, with
    // the API token), the keys' password (variable and file).
    write_private(&pki.join("client-key-password"), &format!("{WRONG_KEY_PASSWORD}\n"));
    let options = pki.join("options.json");
    let options_json = serde_json::json!({ "mqtt": { "password": WRONG_MQTT_PASSWORD }, "api_tokens": [API_TOKEN] });
    write_private(&options, &options_json.to_string());
    let (web_port, api_port) = (free_port(), free_port());
    let (web, api) = (web_port.to_string(), api_port.to_string());
    let data = pki.join("data-wrong");
    let mut args = common.to_vec();
    for (flag, value) in [("--web-port", &web), ("--api-port", &api)] {
        let at = args.iter().position(|a| *a == flag).unwrap();
        args[at + 1] = value;
    }
    args.extend(["--data-dir", data.to_str().unwrap(), "--options", options.to_str().unwrap()]);
    let engine = Running::start(&args, &[(KEY_PASSWORD_ENV, WRONG_KEY_PASSWORD)]);
    engine.wait_logged("the refused MQTT login", "cannot connect to the MQTT broker").await;
    engine.wait_logged("the wrong key password", "the password is wrong").await;
    send_ok(in_port, "SECRET2").await;
    ask_everything(&mut seen, "ui wrong", &format!("http://127.0.0.1:{web_port}"), None).await;
    ask_everything(&mut seen, "api wrong", &format!("http://127.0.0.1:{api_port}"), Some(API_TOKEN)).await;
    for (n, line) in engine.stop().await.into_iter().enumerate() {
        seen.add(format!("log wrong {n}"), line);
    }
    read_tree(&mut seen, "wrong", &data);
    let config = config.to_str().unwrap();
    let wrong_env = [(KEY_PASSWORD_ENV, WRONG_KEY_PASSWORD)];
    seen.add("output check", run_once(&["check", "--config", config], &wrong_env));
    seen.add("output tls check", run_once(&["tls", "check", "--config", config], &wrong_env));
    seen.add("output tls check --json", run_once(&["tls", "check", "--json", "--config", config], &wrong_env));

    for message in watcher.messages() {
        seen.add(format!("mqtt {}", message.topic), format!("{}\n{}", message.topic, message.payload));
    }

    // What was searched is what was meant to be: each source has spoken.
    assert!(seen.count("log run") > 100 && seen.count("log wrong") > 50, "too few log lines");
    assert!(seen.any("log run", "connecting to the MQTT broker") && seen.any("log run", "TRACE"), "no trace log");
    assert!(seen.any("log wrong", "the password is wrong"), "the wrong key password is not reported");
    assert!(seen.count("mqtt ") > 30, "too few MQTT messages");
    assert!(seen.any("output tls check", "password is wrong"), "tls check did not try the key");
    assert!(seen.any("http api wrong GET /api/v1/certificates", "password"), "the certificates API shows no error");
    let leaks = seen.leaks();
    assert!(leaks.is_empty(), "{} places give a secret away:\n{}", leaks.len(), leaks.join("\n"));
}
