//! A stand-in for the Supervisor's API on a port of 127.0.0.1: the two
//! calls Switchboard makes (`GET /services/mqtt` for the broker and its
//! credentials, `GET /addons/self/info` for the slug), with answers a test
//! scripts and changes while it runs, and every request's `Authorization`
//! header recorded.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// One answer of `GET /services/mqtt`.
#[derive(Clone, Debug)]
pub(crate) enum MqttAnswer {
    /// The broker on 127.0.0.1 with these credentials.
    Broker(Broker),
    /// 400 "Service not enabled": no broker add-on installed yet.
    NotEnabled,
    /// 403: the add-on's `services` lacks `mqtt`.
    Forbidden,
}

/// The broker as the Supervisor describes it.
#[derive(Clone, Debug)]
pub(crate) struct Broker {
    pub port: u16,
    pub user: String,
    pub password: String,
    /// The older API's shape (the port a string, the provider under
    /// `addon`) rather than the newer one (a number, under `app`): both are
    /// in the field.
    pub older_api: bool,
}

impl MqttAnswer {
    /// The broker, in the newer API's shape.
    pub(crate) fn broker(port: u16, user: &str, password: &str) -> Self {
        Self::Broker(Broker { port, user: user.to_owned(), password: password.to_owned(), older_api: false })
    }

    /// The broker, in the older API's shape.
    pub(crate) fn older_broker(port: u16, user: &str, password: &str) -> Self {
        Self::Broker(Broker { port, user: user.to_owned(), password: password.to_owned(), older_api: true })
    }
}

#[derive(Clone, Default)]
struct Script {
    /// Answers given in turn; the last one is repeated.
    answers: Arc<Mutex<Vec<MqttAnswer>>>,
    /// How many times `/services/mqtt` was asked.
    served: Arc<Mutex<usize>>,
    /// The path and the `Authorization` header of each request.
    requests: Arc<Mutex<Vec<(&'static str, String)>>>,
}

impl Script {
    fn record(&self, path: &'static str, headers: &HeaderMap) {
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        self.requests.lock().unwrap().push((path, auth));
    }
}

/// The running stand-in; stops when dropped.
pub(crate) struct Supervisor {
    pub port: u16,
    script: Script,
    task: JoinHandle<()>,
}

impl Supervisor {
    /// Serves `answers` in turn to `GET /services/mqtt`, repeating the
    /// last.
    pub(crate) async fn start(answers: Vec<MqttAnswer>) -> Self {
        assert!(!answers.is_empty(), "the stand-in needs an answer");
        let script = Script { answers: Arc::new(Mutex::new(answers)), ..Script::default() };
        let app = axum::Router::new()
            .route(SERVICES_MQTT, get(services_mqtt))
            .route(SELF_INFO, get(self_info))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { port, script, task }
    }

    /// The API's address, as `SUPERVISOR_URL` or the settings take it.
    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// From now on answers `answer` (a password changed, for one).
    pub(crate) fn answer(&self, answer: MqttAnswer) {
        *self.script.answers.lock().unwrap() = vec![answer];
    }

    /// The `Authorization` header of each request to `/services/mqtt` so far.
    pub(crate) fn asked(&self) -> Vec<String> {
        let requests = self.script.requests.lock().unwrap();
        requests.iter().filter(|(path, _)| *path == SERVICES_MQTT).map(|(_, auth)| auth.clone()).collect()
    }

    /// The `Authorization` header of every request so far.
    pub(crate) fn authorizations(&self) -> Vec<String> {
        self.script.requests.lock().unwrap().iter().map(|(_, auth)| auth.clone()).collect()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const SERVICES_MQTT: &str = "/services/mqtt";
const SELF_INFO: &str = "/addons/self/info";

async fn self_info(State(script): State<Script>, headers: HeaderMap) -> axum::Json<Value> {
    script.record(SELF_INFO, &headers);
    axum::Json(json!({ "result": "ok", "data": { "slug": "local_switchboard" } }))
}

async fn services_mqtt(State(script): State<Script>, headers: HeaderMap) -> (StatusCode, axum::Json<Value>) {
    script.record(SERVICES_MQTT, &headers);
    let answer = {
        let mut served = script.served.lock().unwrap();
        let answers = script.answers.lock().unwrap();
        let answer = answers[(*served).min(answers.len() - 1)].clone();
        *served += 1;
        answer
    };
    let error = |status, message: &str| (status, axum::Json(json!({ "result": "error", "message": message })));
    match answer {
        MqttAnswer::Forbidden => error(StatusCode::FORBIDDEN, "No access to the mqtt service"),
        MqttAnswer::NotEnabled => error(StatusCode::BAD_REQUEST, "Service not enabled"),
        MqttAnswer::Broker(b) => {
            let mut data = json!({
                "host": "127.0.0.1", "ssl": false, "protocol": "3.1.1",
                "username": b.user, "password": b.password,
            });
            if b.older_api {
                data["port"] = json!(b.port.to_string());
                data["addon"] = json!("core_mosquitto");
            } else {
                data["port"] = json!(b.port);
                data["app"] = json!("core_mosquitto");
            }
            (StatusCode::OK, axum::Json(json!({ "result": "ok", "data": data })))
        }
    }
}
