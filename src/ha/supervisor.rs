//! The Supervisor's services API: the MQTT broker Home Assistant provides
//! (the Mosquitto add-on), asked for with the add-on's token.
//!
//! `GET <url>/services/mqtt` with `Authorization: Bearer $SUPERVISOR_TOKEN`
//! answers `{"result":"ok","data":{"host":…,"port":…,"ssl":…,"username":…,
//! "password":…,"addon":…}}`, HTTP 400 ("Service not enabled") while no
//! broker is installed, or HTTP 403 when the add-on's `config.yaml` does
//! not list `mqtt` under `services`. The port may come as a number or as a
//! string; the add-on that provides the broker is `addon`, or `app` in the
//! newer API, and neither is required.

use std::time::Duration;

use serde::Deserialize;

use super::settings::{Broker, BrokerTls, Secret};

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the Supervisor gave no broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisorError {
    /// The request failed (connection, timeout).
    #[error("cannot reach the Supervisor at {url}: {reason}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// Why.
        reason: String,
    },
    /// The Supervisor answered with an error, e.g. 400 "Service not enabled"
    /// while no MQTT broker is installed.
    #[error("the Supervisor answered {status} to {url}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The URL asked.
        url: String,
        /// Its message.
        message: String,
    },
    /// HTTP 403: the add-on may not use the MQTT service, because its
    /// `config.yaml` lacks `mqtt:need` (or `mqtt:want`) under `services`.
    /// Asking again cannot help.
    #[error(
        "the Supervisor refused the MQTT service ({url} answered 403: {message}): the add-on's config.yaml must \
         list `mqtt:need` under `services`; set the `mqtt` options to connect without the Supervisor"
    )]
    Forbidden {
        /// The URL asked.
        url: String,
        /// Its message.
        message: String,
    },
    /// The answer is not what the API documents.
    #[error("unexpected answer from the Supervisor at {url}: {reason}")]
    Unexpected {
        /// The URL asked.
        url: String,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Deserialize)]
struct Envelope<T> {
    result: String,
    #[serde(default)]
    message: Option<String>,
    data: Option<T>,
}

#[derive(Deserialize)]
struct MqttService {
    host: String,
    #[serde(deserialize_with = "port")]
    port: u16,
    #[serde(default)]
    ssl: bool,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    addon: Option<String>,
    #[serde(default)]
    app: Option<String>,
}

/// The broker the Supervisor named, and the add-on that provides it
/// (`core_mosquitto`), if it said.
pub(super) struct Provided {
    pub(super) broker: Broker,
    pub(super) provider: Option<String>,
}

fn port<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Port {
        Number(u16),
        Text(String),
    }
    match Port::deserialize(d)? {
        Port::Number(n) => Ok(n),
        Port::Text(t) => t.trim().parse().map_err(|_| serde::de::Error::custom(format!("{t:?} is not a port"))),
    }
}

/// Asks the Supervisor for the MQTT service once.
pub(super) async fn mqtt_service(
    base_url: &str,
    token: &Secret,
    client_id: &str,
    keep_alive: Duration,
) -> Result<Provided, SupervisorError> {
    let url = format!("{}/services/mqtt", base_url.trim_end_matches('/'));
    let unreachable = |reason: String| SupervisorError::Unreachable { url: url.clone(), reason };
    let client = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().map_err(|e| unreachable(e.to_string()))?;
    let response = client
        .get(&url)
        .bearer_auth(token.expose())
        .header("Accept", "application/json")
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| unreachable(e.to_string()))?;
    let envelope: Result<Envelope<MqttService>, _> = serde_json::from_slice(&body);
    if !status.is_success() {
        let message = match &envelope {
            Ok(e) => e.message.clone().unwrap_or_default(),
            Err(_) => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        };
        if status == reqwest::StatusCode::FORBIDDEN {
            return Err(SupervisorError::Forbidden { url, message });
        }
        return Err(SupervisorError::Refused { status: status.as_u16(), url, message });
    }
    let envelope = envelope.map_err(|e| SupervisorError::Unexpected { url: url.clone(), reason: e.to_string() })?;
    if envelope.result != "ok" {
        return Err(SupervisorError::Refused {
            status: status.as_u16(),
            url,
            message: envelope.message.unwrap_or(envelope.result),
        });
    }
    let Some(data) = envelope.data else {
        return Err(SupervisorError::Unexpected { url, reason: "no `data`".into() });
    };
    let broker = Broker {
        host: data.host,
        port: data.port,
        username: data.username.filter(|u| !u.is_empty()),
        password: data.password.filter(|p| !p.is_empty()).map(Secret::new),
        tls: data.ssl.then(|| BrokerTls { verify_host: true, ..BrokerTls::default() }),
        client_id: client_id.to_owned(),
        keep_alive,
    };
    Ok(Provided { broker, provider: data.addon.or(data.app).filter(|p| !p.is_empty()) })
}

/// The add-on's slug, for links into its ingress page (`GET /addons/self/info`).
pub(super) async fn addon_slug(base_url: &str, token: &Secret) -> Option<String> {
    #[derive(Deserialize)]
    struct Info {
        slug: String,
    }
    let url = format!("{}/addons/self/info", base_url.trim_end_matches('/'));
    let client = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().ok()?;
    let response = client.get(&url).bearer_auth(token.expose()).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body = response.bytes().await.ok()?;
    let envelope: Envelope<Info> = serde_json::from_slice(&body).ok()?;
    envelope.data.map(|d| d.slug).filter(|s| !s.is_empty())
}
