//! The web UI and REST API over real sockets: pages under an ingress-style
//! prefix, the control API, access rules (allowed sources, tokens, CSRF,
//! CORS), problem responses, health, metrics and the OpenAPI document.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use switchboard::engine::{Engine, ProductionState};
use switchboard::web::{IpNet, Token, WebOptions, WebServer};

use crate::common::{PRODUCTION, production_state, start_engine};
use crate::ports::free_port;

const WAIT: Duration = Duration::from_secs(10);
const TOKEN: &str = "test-token-0123456789abcdef";

/// mllp_in → file_out, the smallest production with a service and an
/// operation.
fn yaml(dir: &Path, in_port: u16) -> String {
    format!(
        "productions:\n  {PRODUCTION}:\n    name: Test feed\n    items:\n      - name: ADT in\n        kind: mllp_in\n        \
         host: 127.0.0.1\n        port: {in_port}\n        targets: [Files]\n      - name: Files\n        kind: file_out\n        \
         path: \"{}\"\n        filename: \"{{control_id}}.hl7\"\n",
        dir.join("out").display()
    )
}

/// A UI listener on a free loopback port that admits every source, with
/// no tokens: what most tests need.
pub(crate) fn open_options() -> WebOptions {
    WebOptions {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        allow: None,
        direct: None,
        tokens: Vec::new(),
        cors_origins: Vec::new(),
        retention_days: 30,
    }
}

struct Web {
    engine: Engine,
    server: WebServer,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

impl Web {
    async fn start(allow: Option<Vec<IpNet>>, direct: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let engine = start_engine(dir.path(), &yaml(dir.path(), free_port())).await;
        let options = WebOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            allow,
            direct: direct.then(|| SocketAddr::from(([127, 0, 0, 1], 0))),
            tokens: vec![Token::new(TOKEN).unwrap()],
            cors_origins: vec!["https://dashboard.example.org".into()],
            retention_days: 30,
        };
        let server = switchboard::web::start(engine.clone(), options).await.unwrap();
        let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
        Self { engine, server, http, dir }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.local_addr())
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    /// The CSRF token a page carries.
    async fn csrf(&self) -> String {
        let page = self.get("/").await.text().await.unwrap();
        let at = page.find("name=\"csrf-token\" content=\"").expect("csrf meta") + 27;
        page[at..at + 64].to_owned()
    }

    async fn post(&self, path: &str, csrf: Option<&str>, body: Option<Value>) -> reqwest::Response {
        let mut request = self.http.post(self.url(path));
        if let Some(csrf) = csrf {
            request = request.header("X-CSRF-Token", csrf);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    async fn stop(self) {
        self.server.shutdown().await;
        self.engine.shutdown().await;
    }
}

async fn problem(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    let kind = response.headers().get("content-type").unwrap().to_str().unwrap().to_owned();
    assert_eq!(kind, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_use_only_relative_links_and_carry_the_security_headers() {
    let web = Web::start(None, false).await;
    for path in ["/", "/productions/p", "/productions/p/items/ADT%20in", "/productions/p/items/Files", "/certificates"]
    {
        let response =
            web.http.get(web.url(path)).header("X-Ingress-Path", "/api/hassio_ingress/abcdef").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let csp = response.headers().get("content-security-policy").unwrap().to_str().unwrap().to_owned();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(response.headers().get("x-content-type-options").unwrap(), "nosniff");
        let page = response.text().await.unwrap();
        for absolute in ["href=\"/", "src=\"/", "action=\"/", "href=\"http", "src=\"http", "data-post=\"/"] {
            assert!(!page.contains(absolute), "{path} has an absolute link ({absolute})");
        }
        assert!(!page.contains("<script>"), "{path} has inline script");
        assert!(page.contains("Test feed") || path == "/certificates", "{path}");
    }
    let item = web.get("/productions/p/items/ADT%20in").await.text().await.unwrap();
    assert!(item.contains("href=\"../../../assets/app.css\""), "links climb back to the root");
    assert!(item.contains("Send a test message"), "a service offers a test message");
    assert!(item.contains("<dt>port</dt>"), "its settings are shown");
    let js = web.get("/assets/app.js").await;
    assert_eq!(js.headers().get("content-type").unwrap(), "text/javascript; charset=utf-8");
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_api_stops_and_starts_with_a_csrf_token_and_refuses_without() {
    let web = Web::start(None, false).await;
    let refused = web.post("/api/v1/productions/p/stop", None, None).await;
    let body = problem(refused, StatusCode::FORBIDDEN).await;
    assert!(body["detail"].as_str().unwrap().contains("CSRF"), "{body}");
    assert_eq!(production_state(&web.engine.status()), ProductionState::Running, "nothing changed");

    let csrf = web.csrf().await;
    let wrong = web.post("/api/v1/productions/p/stop", Some("0000"), None).await;
    problem(wrong, StatusCode::FORBIDDEN).await;
    let stopped = web.post("/api/v1/productions/p/stop", Some(&csrf), None).await;
    assert_eq!(stopped.status(), StatusCode::OK);
    assert!(web.engine.wait_for(WAIT, |s| production_state(s) == ProductionState::Stopped).await);
    let listed: Value = web.get("/api/v1/productions").await.json().await.unwrap();
    assert_eq!(listed[0]["state"], "stopped");
    let started = web.post("/api/v1/productions/p/start", Some(&csrf), None).await;
    assert_eq!(started.status(), StatusCode::OK);
    assert!(web.engine.wait_for(WAIT, |s| production_state(s) == ProductionState::Running).await);

    let disabled = web.post("/api/v1/productions/p/items/Files/disable", Some(&csrf), None).await;
    assert_eq!(disabled.status(), StatusCode::OK);
    let item: Value = web.get("/api/v1/productions/p/items/Files").await.json().await.unwrap();
    assert_eq!((item["enabled"].as_bool(), item["state"].as_str()), (Some(false), Some("disabled")));
    let enabled = web.post("/api/v1/productions/p/items/Files/enable", Some(&csrf), None).await;
    assert_eq!(enabled.status(), StatusCode::OK);
    let restarted = web.post("/api/v1/productions/p/items/Files/restart", Some(&csrf), None).await;
    assert_eq!(restarted.status(), StatusCode::OK);

    let unknown = web.post("/api/v1/productions/nope/start", Some(&csrf), None).await;
    let body = problem(unknown, StatusCode::NOT_FOUND).await;
    assert!(body["detail"].as_str().unwrap().contains("nope"));
    problem(web.post("/api/v1/productions/p/items/Nope/restart", Some(&csrf), None).await, StatusCode::NOT_FOUND).await;
    problem(web.get("/api/v1/productions/p/items/Nope").await, StatusCode::NOT_FOUND).await;
    problem(web.get("/productions/nope").await, StatusCode::NOT_FOUND).await;
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_message_is_checked_then_received_and_delivered() {
    let web = Web::start(None, false).await;
    let csrf = web.csrf().await;
    let path = "/api/v1/productions/p/items/ADT%20in/test-message";
    let bad = web.post(path, Some(&csrf), Some(serde_json::json!({"message": "PID|1||x"}))).await;
    let body = problem(bad, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(body["detail"].as_str().unwrap().contains("MSH"), "{body}");
    let empty = web.post(path, Some(&csrf), Some(serde_json::json!({"message": "  \n"}))).await;
    problem(empty, StatusCode::UNPROCESSABLE_ENTITY).await;
    let not_a_service = web
        .post(
            "/api/v1/productions/p/items/Files/test-message",
            Some(&csrf),
            Some(serde_json::json!({"message": "MSH|^~\\&|A"})),
        )
        .await;
    problem(not_a_service, StatusCode::CONFLICT).await;
    let malformed = web
        .http
        .post(web.url(path))
        .header("X-CSRF-Token", &csrf)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    problem(malformed, StatusCode::BAD_REQUEST).await;
    let wrong_shape = web.post(path, Some(&csrf), Some(serde_json::json!({"msg": "MSH|"}))).await;
    problem(wrong_shape, StatusCode::UNPROCESSABLE_ENTITY).await;
    let not_json = web.http.post(web.url(path)).header("X-CSRF-Token", &csrf).body("MSH|^~\\&|").send().await.unwrap();
    problem(not_json, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    problem(web.get("/no/such/page").await, StatusCode::NOT_FOUND).await;

    let message = "MSH|^~\\&|UI|FAC|SWB|FAC|20260101120000||ADT^A01|WEB1|P|2.5\nPID|1||123^^^FAC^MR||DOE^JANE\n";
    let sent = web.post(path, Some(&csrf), Some(serde_json::json!({ "message": message }))).await;
    assert_eq!(sent.status(), StatusCode::CREATED);
    let answer: Value = sent.json().await.unwrap();
    assert!(answer["id"].as_i64().is_some_and(|id| id > 0), "{answer}");
    let file = web.dir.path().join("out/WEB1.hl7");
    let mut delivered = false;
    for _ in 0..100 {
        if file.exists() {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(delivered, "the test message was not delivered");
    let written = std::fs::read(&file).unwrap();
    assert!(written.starts_with(b"MSH|") && written.contains(&b'\r'), "segments end in carriage returns");
    let item = web.engine.status().item(PRODUCTION, "ADT in").unwrap().received;
    assert_eq!(item, 1);
    let mut counted = false;
    for _ in 0..100 {
        let metrics = web.get("/metrics").await.text().await.unwrap();
        if metrics.contains("switchboard_delivery_duration_seconds_count{production=\"p\",item=\"Files\"} 1") {
            assert!(metrics.contains("# TYPE switchboard_delivery_duration_seconds histogram"), "{metrics}");
            assert!(
                metrics.contains(
                    "switchboard_delivery_duration_seconds_bucket{le=\"+Inf\",production=\"p\",item=\"Files\"} 1"
                ) || metrics.contains(
                    "switchboard_delivery_duration_seconds_bucket{production=\"p\",item=\"Files\",le=\"+Inf\"} 1"
                ),
                "{metrics}"
            );
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(counted, "the delivery's time is in the histogram");
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_tokens_and_health_are_enforced_per_listener() {
    // Only the ingress proxy may use the UI listener; the test connects from
    // loopback, which may reach /healthz and nothing else without a token.
    let web = Web::start(Some(vec!["172.30.32.2".parse().unwrap()]), true).await;
    assert_eq!(web.get("/healthz").await.status(), StatusCode::OK);
    problem(web.get("/").await, StatusCode::UNAUTHORIZED).await;
    problem(web.get("/readyz").await, StatusCode::UNAUTHORIZED).await;
    let with_token = web.http.get(web.url("/api/v1/status")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(with_token.status(), StatusCode::OK);

    let direct = web.server.direct_addr().unwrap();
    let url = |path: &str| format!("http://{direct}{path}");
    let bare = web.http.get(url("/api/v1/productions")).send().await.unwrap();
    assert_eq!(bare.headers().get("www-authenticate").unwrap(), "Bearer");
    problem(bare, StatusCode::UNAUTHORIZED).await;
    let wrong = web.http.get(url("/api/v1/productions")).bearer_auth("not-the-token-at-all").send().await.unwrap();
    problem(wrong, StatusCode::UNAUTHORIZED).await;
    let good = web.http.get(url("/api/v1/productions")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(good.status(), StatusCode::OK);
    // A token stands for the CSRF token: scripts post directly.
    let stopped = web.http.post(url("/api/v1/productions/p/stop")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(stopped.status(), StatusCode::OK);
    assert!(web.engine.wait_for(WAIT, |s| production_state(s) == ProductionState::Stopped).await);
    assert_eq!(web.http.get(url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_admits_only_configured_origins_and_answers_preflight() {
    let web = Web::start(None, false).await;
    let preflight = |origin: &'static str| {
        web.http
            .request(reqwest::Method::OPTIONS, web.url("/api/v1/productions/p/stop"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "authorization")
            .send()
    };
    let allowed = preflight("https://dashboard.example.org").await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(allowed.headers().get("access-control-allow-origin").unwrap(), "https://dashboard.example.org");
    let headers = allowed.headers().get("access-control-allow-headers").unwrap().to_str().unwrap().to_lowercase();
    assert!(headers.contains("authorization"), "{headers}");
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    web.stop().await;
}

/// When the store's writer is gone, every request that changes the store
/// gets a 503 problem document naming the store, not a hang or a 500,
/// while searches (on their own connection) still answer; `/readyz` says
/// so for a probe, and `/healthz` (the process answers) stays ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_store_answers_503_and_readiness_fails_while_health_stays_ok() {
    let web = Web::start(None, false).await;
    let csrf = web.csrf().await;
    web.engine.store().close().await;
    let requests = [
        ("/api/v1/store/purge", None),
        ("/api/v1/productions/p/items/Files/resend-all", Some(serde_json::json!({"expected": 0}))),
    ];
    for (path, json) in requests {
        let body = problem(web.post(path, Some(&csrf), json).await, StatusCode::SERVICE_UNAVAILABLE).await;
        assert!(body["detail"].as_str().unwrap().contains("message store"), "{path}: {body}");
    }
    assert_eq!(web.get("/api/v1/messages").await.status(), StatusCode::OK, "the viewer still reads");
    let ready = web.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.text().await.unwrap(), "the message store is closed\n");
    assert_eq!(web.get("/healthz").await.status(), StatusCode::OK);
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_status_stream_and_certificates() {
    let web = Web::start(None, false).await;
    assert_eq!(web.get("/healthz").await.text().await.unwrap(), "ok\n");
    let ready = web.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::OK);
    let metrics = web.get("/metrics").await;
    assert!(
        metrics.headers().get("content-type").unwrap().to_str().unwrap().starts_with("application/openmetrics-text")
    );
    let text = metrics.text().await.unwrap();
    for line in [
        "switchboard_messages_received_total{production=\"p\",item=\"ADT in\"} 0",
        "switchboard_queue_depth{production=\"p\",item=\"Files\"} 0",
        "switchboard_production_up{production=\"p\"} 1",
        "# TYPE switchboard_store_size_bytes gauge",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    let certificates: Value = web.get("/api/v1/certificates").await.json().await.unwrap();
    assert_eq!(certificates, serde_json::json!([]));

    let mut stream = web.get("/api/v1/status/stream").await;
    assert_eq!(stream.headers().get("content-type").unwrap(), "text/event-stream");
    let mut seen = String::new();
    while !seen.contains("\n\n") {
        let chunk = tokio::time::timeout(WAIT, stream.chunk()).await.unwrap().unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.starts_with("event: status\ndata: {"), "{seen}");
    assert!(seen.contains("\"id\":\"p\""), "{seen}");
    web.stop().await;
}

/// Every operation in the OpenAPI document is served (none answers 404 or
/// 405), the document is OpenAPI 3.1, and it is served at its own address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_routes() {
    let web = Web::start(None, false).await;
    let doc: Value = web.get("/api/v1/openapi.json").await.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 12, "{:?}", paths.keys());
    let csrf = web.csrf().await;
    for (path, operations) in paths {
        let concrete = path.replace("{production}", "p").replace("{item}", "Files").replace("{id}", "1");
        for method in operations.as_object().unwrap().keys() {
            let url = web.url(&format!("/api/v1{concrete}"));
            let request = match method.as_str() {
                "get" => web.http.get(&url),
                "post" => web.http.post(&url).header("X-CSRF-Token", &csrf).json(&serde_json::json!({})),
                "delete" => web.http.delete(&url).header("X-CSRF-Token", &csrf),
                other => panic!("unexpected method {other} for {path}"),
            };
            let response = if path.ends_with("/stream") {
                let r = request.send().await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                continue;
            } else {
                request.send().await.unwrap()
            };
            let status = response.status();
            assert!(
                status != StatusCode::NOT_FOUND
                    || response.headers().get("content-type").is_some_and(|c| c == "application/problem+json"),
                "{method} {path}: no such route"
            );
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        }
    }
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificates_page_shows_each_chain_and_its_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let yaml = format!(
        "tls:\n  adt-server:\n    role: server\n    ca_file: \"{d}/ca.pem\"\n    cert_file: \"{d}/server.pem\"\n    \
         key_file: \"{d}/server.key\"\n    create_if_missing: true\nproductions:\n  {PRODUCTION}:\n    items:\n      \
         - name: In\n        kind: mllp_in\n        host: 127.0.0.1\n        port: {}\n        tls: adt-server\n        \
         targets: [Files]\n      - name: Files\n        kind: file_out\n        path: \"{d}/out\"\n",
        free_port()
    );
    crate::common::create_test_certificates(dir.path(), &yaml);
    let engine = start_engine(dir.path(), &yaml).await;
    let options = open_options();
    let server = switchboard::web::start(engine.clone(), options).await.unwrap();
    let page =
        reqwest::get(format!("http://{}/certificates", server.local_addr())).await.unwrap().text().await.unwrap();
    for want in ["adt-server", "Chain", "CN=switchboard adt-server", "Trusted authorities", "Days left", " UTC"] {
        assert!(page.contains(want), "missing {want:?}");
    }
    let api: Value = reqwest::get(format!("http://{}/api/v1/certificates", server.local_addr()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api[0]["name"], "adt-server");
    assert!(api[0]["days_left"].as_i64().is_some_and(|d| d > 300), "{api}");
    server.shutdown().await;
    engine.shutdown().await;
}

/// Sends `control_id` to the test production's listener and waits until
/// the file_out has delivered it.
async fn deliver(web: &Web, in_port: u16, control_id: &str) {
    let mut client = crate::common::connect(in_port).await;
    let ack = crate::common::reply(&client.exchange(&crate::common::hl7("ADT^A01", control_id), WAIT).await.unwrap());
    assert_eq!(ack.acknowledgment_code(), Some("AA"));
    let file = web.dir.path().join(format!("out/{control_id}.hl7"));
    for _ in 0..200 {
        if file.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{control_id} was not delivered");
}

fn listener_port(web: &Web) -> u16 {
    let config = web.engine.config();
    match &config.productions[0].items[0].kind {
        switchboard::config::ItemKind::MllpIn(c) => c.port,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_found_inspected_edited_and_resent_through_the_api() {
    let web = Web::start(None, false).await;
    let in_port = listener_port(&web);
    for id in ["FIND1", "FIND2", "FIND3"] {
        deliver(&web, in_port, id).await;
    }
    // Newest first, the operation's copy by item.
    let page: Value = web.get("/api/v1/messages?item=Files").await.json().await.unwrap();
    let ids: Vec<&str> =
        page["messages"].as_array().unwrap().iter().map(|m| m["control_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["FIND3", "FIND2", "FIND1"]);
    let page: Value = web.get("/api/v1/messages?item=Files&limit=2").await.json().await.unwrap();
    let next = page["next"].as_i64().expect("a second page");
    let rest: Value =
        web.get(&format!("/api/v1/messages?item=Files&limit=2&before={next}")).await.json().await.unwrap();
    assert_eq!(rest["messages"][0]["control_id"], "FIND1", "keyset paging continues where it stopped");
    let found: Value = web.get("/api/v1/messages?control_id=FIND2&item=Files").await.json().await.unwrap();
    assert_eq!(found["messages"].as_array().unwrap().len(), 1);
    let id = found["messages"][0]["id"].as_i64().unwrap();
    let by_patient: Value = web.get("/api/v1/messages?patient_id=FIND2").await.json().await.unwrap();
    assert!(by_patient["messages"].as_array().unwrap().iter().all(|m| m["control_id"] == "FIND2"), "{by_patient}");
    let by_text: Value = web.get("/api/v1/messages?text=DOE%5EJOHN&item=Files").await.json().await.unwrap();
    assert_eq!(by_text["messages"].as_array().unwrap().len(), 3, "{by_text}");

    let detail: Value = web.get(&format!("/api/v1/messages/{id}")).await.json().await.unwrap();
    assert_eq!(detail["message"]["status"], "completed");
    assert!(detail["body"].as_str().unwrap().contains("PID|1||FIND2"), "{detail}");
    let outline = detail["outline"].as_array().unwrap();
    assert!(outline.iter().any(|e| e["path"] == "PID-5.1" && e["value"] == "DOE"), "{detail}");
    assert_eq!(detail["trace"].as_array().unwrap().len(), 2, "received, then delivered");

    // Bad resends change nothing.
    let csrf = web.csrf().await;
    let resend = format!("/api/v1/messages/{id}/resend");
    let bad_path =
        web.post(&resend, Some(&csrf), Some(serde_json::json!({"edits": [{"path": "PID-", "value": "F"}]}))).await;
    problem(bad_path, StatusCode::UNPROCESSABLE_ENTITY).await;
    let bad_text = web.post(&resend, Some(&csrf), Some(serde_json::json!({"message": "not hl7"}))).await;
    problem(bad_text, StatusCode::UNPROCESSABLE_ENTITY).await;
    let bad_target = web.post(&resend, Some(&csrf), Some(serde_json::json!({"target": "Nope"}))).await;
    problem(bad_target, StatusCode::UNPROCESSABLE_ENTITY).await;
    problem(
        web.post("/api/v1/messages/999999/resend", Some(&csrf), Some(serde_json::json!({}))).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(web.get("/api/v1/messages/abc").await, StatusCode::BAD_REQUEST).await;
    problem(web.get("/api/v1/messages/999999").await, StatusCode::NOT_FOUND).await;
    problem(web.get("/api/v1/messages?status=lost").await, StatusCode::BAD_REQUEST).await;
    problem(web.get("/api/v1/messages?limit=0").await, StatusCode::BAD_REQUEST).await;
    problem(web.get("/api/v1/messages?from=20&to=10").await, StatusCode::BAD_REQUEST).await;
    problem(web.get("/api/v1/messages?before=x").await, StatusCode::BAD_REQUEST).await;
    let unchanged: Value = web.get(&format!("/api/v1/messages/{id}")).await.json().await.unwrap();
    assert_eq!(unchanged["resends"], serde_json::json!([]), "nothing was resent");

    // Edit and resend: a new message, linked both ways, delivered edited.
    let sent =
        web.post(&resend, Some(&csrf), Some(serde_json::json!({"edits": [{"path": "PID-8", "value": "F"}]}))).await;
    assert_eq!(sent.status(), StatusCode::CREATED);
    let copy = sent.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let original: Value = web.get(&format!("/api/v1/messages/{id}")).await.json().await.unwrap();
    assert_eq!(original["resends"], serde_json::json!([copy]));
    assert!(original["body"].as_str().unwrap().contains("|M\r"), "the original is unchanged");
    let mut delivered = Value::Null;
    for _ in 0..200 {
        delivered = web.get(&format!("/api/v1/messages/{copy}")).await.json().await.unwrap();
        if delivered["message"]["status"] == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(delivered["message"]["status"], "completed", "{delivered}");
    assert_eq!(delivered["message"]["resent_from"], id);
    assert!(delivered["body"].as_str().unwrap().contains("|19800101|F\r"), "{delivered}");

    // The pages show the same.
    let list = web.get("/messages?control_id=FIND2").await.text().await.unwrap();
    assert!(list.contains(&format!("href=\"./messages/{copy}\"")), "the copy is listed");
    let page = web.get(&format!("/messages/{copy}")).await.text().await.unwrap();
    for want in ["Changed from message", "PID-8", "Trace", "Fields", "Raw", "\u{21b5}", "Edit and resend"] {
        assert!(page.contains(want), "missing {want:?}");
    }
    assert!(page.contains(&format!("href=\"../messages/{id}\"")), "links back to the original");
    assert!(!page.contains("href=\"/"), "relative links only");
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_messages_are_resent_in_bulk_after_confirming_their_count() {
    let dir = tempfile::tempdir().unwrap();
    let in_port = free_port();
    // Nothing listens at the operation's port: each message fails after
    // its failure timeout.
    let yaml = format!(
        "productions:\n  {PRODUCTION}:\n    name: Test feed\n    items:\n      - name: In\n        kind: mllp_in\n        \
         host: 127.0.0.1\n        port: {in_port}\n        targets: [Out]\n      - name: Out\n        kind: mllp_out\n        \
         host: 127.0.0.1\n        port: {}\n        connect_timeout: 200ms\n        retry_interval: 100ms\n        \
         failure_timeout: 300ms\n",
        free_port()
    );
    let engine = start_engine(dir.path(), &yaml).await;
    let options = open_options();
    let server = switchboard::web::start(engine.clone(), options).await.unwrap();
    let web = Web { engine, server, http: reqwest::Client::builder().timeout(WAIT).build().unwrap(), dir };
    let mut client = crate::common::connect(in_port).await;
    for id in ["BULK1", "BULK2"] {
        let ack = crate::common::reply(&client.exchange(&crate::common::hl7("ADT^A01", id), WAIT).await.unwrap());
        assert_eq!(ack.acknowledgment_code(), Some("AA"));
    }
    let mut count = 0;
    for _ in 0..200 {
        let r: Value = web.get("/api/v1/productions/p/items/Out/resendable").await.json().await.unwrap();
        count = r["count"].as_u64().unwrap();
        if count == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count, 2, "both messages failed");
    let errors: Value = web.get("/api/v1/messages?status=error&item=Out").await.json().await.unwrap();
    assert_eq!(errors["messages"].as_array().unwrap().len(), 2);
    let item_page = web.get("/productions/p/items/Out").await.text().await.unwrap();
    assert!(item_page.contains("Resend 2 failed"), "the item page offers the bulk resend with its count");
    assert!(item_page.contains("data-body=\"{&quot;expected&quot;:2}\""), "confirmed with the count shown");
    let csrf = web.csrf().await;
    let path = "/api/v1/productions/p/items/Out/resend-all";
    let stale = web.post(path, Some(&csrf), Some(serde_json::json!({"expected": 5}))).await;
    let body = problem(stale, StatusCode::CONFLICT).await;
    assert!(body["detail"].as_str().unwrap().contains("2 messages"), "{body}");
    problem(web.post(path, Some(&csrf), Some(serde_json::json!({}))).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    problem(
        web.post("/api/v1/productions/p/items/Nope/resend-all", Some(&csrf), Some(serde_json::json!({"expected": 2})))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let done = web.post(path, Some(&csrf), Some(serde_json::json!({"expected": 2}))).await;
    assert_eq!(done.status(), StatusCode::OK);
    assert_eq!(done.json::<Value>().await.unwrap()["count"], 2);

    // The failures are in the event log, and the store page counts them.
    let events: Value = web.get("/api/v1/events?level=error&item=Out").await.json().await.unwrap();
    assert!(!events["events"].as_array().unwrap().is_empty(), "{events}");
    assert!(events["events"].as_array().unwrap().iter().all(|e| e["level"] == "error"));
    problem(web.get("/api/v1/events?level=loud").await, StatusCode::BAD_REQUEST).await;
    let page = web.get("/events?level=error").await.text().await.unwrap();
    assert!(page.contains("Out"), "the events page lists them");
    let store: Value = web.get("/api/v1/store").await.json().await.unwrap();
    assert!(store["size_bytes"].as_u64().unwrap() > 0);
    assert!(store["counts"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum::<u64>() >= 4, "{store}");
    assert_eq!(store["retention_days"], 30);
    let page = web.get("/store").await.text().await.unwrap();
    assert!(page.contains("Purge now"), "the store page offers a purge");
    let purged = web.post("/api/v1/store/purge", Some(&csrf), None).await;
    assert_eq!(purged.status(), StatusCode::OK);
    web.stop().await;
}
