//! The web UI in a real headless browser (Chromium over WebDriver), under
//! a Home Assistant-style ingress prefix served by a small proxy that
//! strips it, as the Supervisor's does: stop and start a production (the
//! overview follows the status stream), find a message by its control id,
//! edit a field, resend it and see it delivered. Screenshots of the
//! overview and a message's detail at phone and desktop width are written
//! to `target/screenshots/`.
//!
//! Needs `chromium` and `chromedriver` (Debian: `chromium-driver`); without
//! them the test is skipped, unless `SWITCHBOARD_TEST_REQUIRE_BROWSER` is
//! set (as `.ci/run` does), when it fails.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use fantoccini::{Client, ClientBuilder, Locator};

use crate::common::{PRODUCTION, connect, hl7, reply, start_engine};
use crate::ports::free_port;

/// Generous: Chromium shares two cores with the rest of the suite.
const WAIT: Duration = Duration::from_secs(40);
const PREFIX: &str = "/api/hassio_ingress/Zm9vYmFyYmF6";

fn find_driver() -> Option<PathBuf> {
    ["chromedriver", "/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"].iter().map(PathBuf::from).find(|p| {
        Command::new(p).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    })
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The ingress proxy: `PREFIX/...` goes to the UI as `/...`, with the
/// prefix in `X-Ingress-Path`; anything else is a 404, so a link that
/// escapes the prefix shows up as a broken page.
async fn proxy(State((http, backend)): State<(reqwest::Client, SocketAddr)>, request: Request) -> Response {
    let path_and_query = request.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let Some(rest) = path_and_query.strip_prefix(PREFIX) else {
        return Response::builder().status(404).body(Body::from("outside the ingress prefix")).unwrap();
    };
    let rest = if rest.is_empty() || rest.starts_with('?') { format!("/{rest}") } else { rest.to_owned() };
    let method = request.method().clone();
    let mut forward = http.request(method, format!("http://{backend}{rest}")).header("X-Ingress-Path", PREFIX);
    for (name, value) in request.headers() {
        if !matches!(name.as_str(), "host" | "content-length" | "connection") {
            forward = forward.header(name, value);
        }
    }
    let body = axum::body::to_bytes(request.into_body(), 1 << 22).await.unwrap_or_default();
    let answer = match forward.body(body).send().await {
        Ok(a) => a,
        Err(e) => return Response::builder().status(502).body(Body::from(e.to_string())).unwrap(),
    };
    let mut response = Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        if !matches!(name.as_str(), "content-length" | "transfer-encoding" | "connection") {
            response = response.header(name, value);
        }
    }
    response.body(Body::from_stream(answer.bytes_stream())).unwrap()
}

async fn wait_text(client: &Client, css: &str, want: &str) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if let Ok(el) = client.find(Locator::Css(css)).await
            && el.text().await.is_ok_and(|t| t.contains(want))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn screenshot(client: &Client, name: &str, width: u32) {
    client.set_window_size(width, 900).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = client.screenshot().await.unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}-{width}.png")), png).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_stops_starts_finds_edits_and_resends_in_a_browser() {
    let Some(driver) = find_driver() else {
        assert!(
            std::env::var_os("SWITCHBOARD_TEST_REQUIRE_BROWSER").is_none(),
            "chromedriver is not installed (Debian: apt install chromium chromium-driver)"
        );
        eprintln!("skipped: chromedriver is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let in_port = free_port();
    let yaml = format!(
        "productions:\n  {PRODUCTION}:\n    name: Browser feed\n    items:\n      - name: ADT in\n        kind: mllp_in\n        \
         host: 127.0.0.1\n        port: {in_port}\n        targets: [Files]\n      - name: Files\n        kind: file_out\n        \
         path: \"{}\"\n        filename: \"{{control_id}}-{{timestamp}}-{{seq}}.hl7\"\n",
        dir.path().join("out").display()
    );
    let engine = start_engine(dir.path(), &yaml).await;
    let web = switchboard::web::start(engine.clone(), crate::web::open_options()).await.unwrap();
    let proxy_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy_listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(proxy).with_state((reqwest::Client::new(), web.local_addr()));
    tokio::spawn(async move { axum::serve(proxy_listener, app).await });

    // One message to find.
    let ack = reply(&connect(in_port).await.exchange(&hl7("ADT^A01", "BROWSER1"), WAIT).await.unwrap());
    assert_eq!(ack.acknowledgment_code(), Some("AA"));

    let port = free_port();
    let _driver = Driver(
        Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"]}),
    );
    let mut client = None;
    let deadline = Instant::now() + WAIT;
    while client.is_none() && Instant::now() < deadline {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => client = Some(c),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let client = client.expect("connect to chromedriver");
    let base = format!("http://{proxy_addr}{PREFIX}/");

    // The overview, live: stop and start the production.
    client.goto(&base).await.unwrap();
    assert!(wait_text(&client, "h1", "Overview").await);
    screenshot(&client, "overview", 360).await;
    screenshot(&client, "overview", 1280).await;
    let stop = client.find(Locator::Css("button[data-post$='/stop']")).await.unwrap();
    let start = client.find(Locator::Css("button[data-post$='/start']")).await.unwrap();
    assert!(!start.is_displayed().await.unwrap(), "Start is offered for a running production");
    stop.click().await.unwrap();
    // The confirmation opens a moment after the click.
    let deadline = Instant::now() + WAIT;
    while client.accept_alert().await.is_err() {
        assert!(Instant::now() < deadline, "no confirmation to stop the production");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(wait_text(&client, "h2 .badge", "stopped").await, "the badge follows the status stream");
    let stop = client.find(Locator::Css("button[data-post$='/stop']")).await.unwrap();
    let deadline = Instant::now() + WAIT;
    while stop.is_displayed().await.unwrap() {
        assert!(Instant::now() < deadline, "Stop is still offered for a stopped production");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.find(Locator::Css("button[data-post$='/start']")).await.unwrap().click().await.unwrap();
    assert!(wait_text(&client, "h2 .badge", "running").await);
    let start = client.find(Locator::Css("button[data-post$='/start']")).await.unwrap();
    let deadline = Instant::now() + WAIT;
    while start.is_displayed().await.unwrap() {
        assert!(Instant::now() < deadline, "Start is still offered once the production runs again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Find the message by its control id.
    client.find(Locator::LinkText("Messages")).await.unwrap().click().await.unwrap();
    assert!(wait_text(&client, "h1", "Messages").await);
    client.find(Locator::Id("control_id")).await.unwrap().send_keys("BROWSER1").await.unwrap();
    client.find(Locator::Css("form.filters button[type=submit]")).await.unwrap().click().await.unwrap();
    assert!(wait_text(&client, "table.messages", "BROWSER1").await);
    let row =
        client.find(Locator::XPath("//table[contains(@class,'messages')]//tr[contains(., 'Files')]//a")).await.unwrap();
    row.click().await.unwrap();
    assert!(wait_text(&client, "h1", "Message").await);
    screenshot(&client, "message", 360).await;
    screenshot(&client, "message", 1280).await;

    // Edit a field and resend: the new message opens, with the change shown.
    client.find(Locator::Id("edit-path")).await.unwrap().send_keys("PID-8").await.unwrap();
    client.find(Locator::Css("input[name=edit_value]")).await.unwrap().send_keys("F").await.unwrap();
    client.find(Locator::Css("form.edit button[type=submit]")).await.unwrap().click().await.unwrap();
    assert!(wait_text(&client, "main", "Changed from message").await, "the resent message opens with its differences");
    assert!(wait_text(&client, "table.diff", "PID-8").await);
    let deadline = Instant::now() + WAIT;
    let mut delivered = false;
    while Instant::now() < deadline && !delivered {
        client.refresh().await.unwrap();
        if let Ok(facts) = client.find(Locator::Css("dl.facts")).await {
            delivered = facts.text().await.is_ok_and(|t| t.contains("completed"));
        }
        if !delivered {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    assert!(delivered, "the resent message was delivered");
    let files: Vec<_> = std::fs::read_dir(dir.path().join("out")).unwrap().filter_map(Result::ok).collect();
    let edited =
        files.iter().map(|f| std::fs::read(f.path()).unwrap()).any(|b| b.windows(12).any(|w| w == b"|19800101|F\r"));
    assert!(edited, "the delivered copy carries the edit");

    client.close().await.unwrap();
    web.shutdown().await;
    engine.shutdown().await;
}
