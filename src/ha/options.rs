//! The add-on's options file: what the Supervisor writes to
//! `/data/options.json` from the Configuration tab (the `options` and
//! `schema` of `config.yaml`), and what a user running the same image
//! outside Home Assistant may write by hand.
//!
//! `switchboard run` reads it once at start and uses it for everything an
//! option sets, the web server's included: a flag or its `SWITCHBOARD_*`
//! variable wins over the file, the file over the default. The binary reads
//! the file itself rather than having the container's start script turn it
//! into environment variables: one reader applies the same precedence to
//! every option and reports unknown keys in one place, a value (an API
//! token with a comma, say) reaches the engine exactly as written instead
//! of through a shell, secrets stay out of the process environment that
//! child processes and `/proc` expose, and the tests that run the binary
//! cover it.
//!
//! A key Switchboard does not know is reported, not refused: the
//! Supervisor writes only keys of the schema, so an unknown key comes from
//! a hand-written file or from an option of another version, and a
//! Switchboard that would not start over it helps nobody. Empty strings
//! count as not set (the Configuration tab leaves optional fields empty).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::settings::{Secret, SettingsError};

/// The options file, every key Switchboard knows.
#[derive(Debug, Default)]
pub struct AddonOptions {
    /// Where it was read from; `None` when there was no file.
    pub path: Option<PathBuf>,
    /// `log_level`: `trace`, `debug`, `info`, `notice`, `warning`, `error`
    /// or `fatal` (the levels of the Home Assistant add-ons), or a log
    /// filter such as `switchboard=debug,warn`.
    pub log_level: Option<String>,
    /// `productions_file`: the productions file, relative to the add-on's
    /// configuration folder (`/config`) unless absolute.
    pub productions_file: Option<String>,
    /// `certificate_warning_days`.
    pub certificate_warning_days: Option<u32>,
    /// `retention_days`: overrides the productions file's
    /// `store.retention_days`.
    pub retention_days: Option<u32>,
    /// `web_allow`: sources admitted to the web UI without a token, beside
    /// the default ones (under the Supervisor: the ingress proxy).
    pub web_allow: Vec<String>,
    /// `api_port`: the port of the listener on which every request needs
    /// a token.
    pub api_port: Option<u16>,
    /// `api_tokens`: the API tokens.
    pub api_tokens: Vec<Secret>,
    /// `mqtt`: the broker, when not the Supervisor's.
    pub(crate) mqtt: MqttOptions,
    /// `discovery_prefix`.
    pub(crate) discovery_prefix: Option<String>,
    /// `instance_id`.
    pub(crate) instance_id: Option<String>,
    /// `ui_url`.
    pub(crate) ui_url: Option<String>,
    /// Keys not known, as paths (`mqtt.hots`), in order.
    unknown: Vec<String>,
}

/// The `mqtt` options. Its `Debug` leaves the password out.
#[derive(Default, Deserialize)]
#[serde(default)]
pub(crate) struct MqttOptions {
    pub(crate) host: Option<String>,
    #[serde(deserialize_with = "port_number")]
    pub(crate) port: Option<u16>,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) tls: Option<bool>,
    pub(crate) ca_file: Option<String>,
    pub(crate) cert_file: Option<String>,
    pub(crate) key_file: Option<String>,
    pub(crate) key_password_env: Option<String>,
    pub(crate) skip_host_check: Option<bool>,
    pub(crate) client_id: Option<String>,
    pub(crate) keep_alive: Option<u64>,
    #[serde(flatten)]
    unknown: BTreeMap<String, serde_json::Value>,
}

impl std::fmt::Debug for MqttOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &format_args!("{}", if self.password.is_some() { "\"***\"" } else { "None" }))
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("key_password_env", &self.key_password_env)
            .field("skip_host_check", &self.skip_host_check)
            .field("client_id", &self.client_id)
            .field("keep_alive", &self.keep_alive)
            .finish_non_exhaustive()
    }
}

/// The file as written.
#[derive(Default, Deserialize)]
#[serde(default)]
struct File {
    log_level: Option<String>,
    productions_file: Option<String>,
    certificate_warning_days: Option<u32>,
    retention_days: Option<u32>,
    web_allow: Option<Vec<String>>,
    #[serde(deserialize_with = "port_number")]
    api_port: Option<u16>,
    api_tokens: Option<Vec<String>>,
    mqtt: MqttOptions,
    discovery_prefix: Option<String>,
    instance_id: Option<String>,
    ui_url: Option<String>,
    #[serde(flatten)]
    unknown: BTreeMap<String, serde_json::Value>,
}

/// A port given as a number or a string (both occur in Supervisor data).
pub(crate) fn port_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Port {
        Number(u16),
        Text(String),
    }
    match Option::<Port>::deserialize(d)? {
        None => Ok(None),
        Some(Port::Number(n)) => Ok(Some(n)),
        Some(Port::Text(t)) if t.trim().is_empty() => Ok(None),
        Some(Port::Text(t)) => {
            t.trim().parse().map(Some).map_err(|_| serde::de::Error::custom(format!("{t:?} is not a port number")))
        }
    }
}

pub(crate) fn nonempty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

fn nonempty_list(values: Option<Vec<String>>) -> Vec<String> {
    values.unwrap_or_default().into_iter().filter_map(|v| nonempty(Some(v))).collect()
}

impl AddonOptions {
    /// Reads and checks the file. A file that is not JSON, or a value of
    /// the wrong type, is an error naming the key; unknown keys are kept
    /// for [`unknown_keys`](Self::unknown_keys).
    pub fn read(path: &Path) -> Result<Self, SettingsError> {
        let error = |reason: String| SettingsError::Options { path: path.to_owned(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let de = &mut serde_json::Deserializer::from_str(&text);
        let file: File =
            serde_path_to_error::deserialize(de).map_err(|e| error(format!("{}: {}", e.path(), e.inner())))?;
        let mut mqtt = file.mqtt;
        for value in [
            &mut mqtt.host,
            &mut mqtt.username,
            &mut mqtt.password,
            &mut mqtt.ca_file,
            &mut mqtt.cert_file,
            &mut mqtt.key_file,
            &mut mqtt.key_password_env,
            &mut mqtt.client_id,
        ] {
            *value = nonempty(value.take());
        }
        let mut unknown: Vec<String> = file.unknown.into_keys().collect();
        unknown.extend(mqtt.unknown.keys().map(|k| format!("mqtt.{k}")));
        unknown.sort();
        Ok(Self {
            path: Some(path.to_owned()),
            log_level: nonempty(file.log_level),
            productions_file: nonempty(file.productions_file),
            certificate_warning_days: file.certificate_warning_days,
            retention_days: file.retention_days,
            web_allow: nonempty_list(file.web_allow),
            api_port: file.api_port,
            api_tokens: nonempty_list(file.api_tokens).into_iter().map(Secret::new).collect(),
            mqtt,
            discovery_prefix: nonempty(file.discovery_prefix),
            instance_id: nonempty(file.instance_id),
            ui_url: nonempty(file.ui_url),
            unknown,
        })
    }

    /// The keys of the file that Switchboard does not know (`mqtt.hots`),
    /// sorted; they are ignored.
    pub fn unknown_keys(&self) -> &[String] {
        &self.unknown
    }

    /// `log_level` as a log filter: the add-on levels `notice`, `warning`
    /// and `fatal` become `info`, `warn` and `error`.
    pub fn log_filter(&self) -> Option<String> {
        let level = self.log_level.as_deref()?;
        Some(
            match level.to_ascii_lowercase().as_str() {
                "notice" => "info",
                "warning" => "warn",
                "fatal" => "error",
                _ => level,
            }
            .to_owned(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<AddonOptions, SettingsError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("options.json");
        std::fs::write(&path, json).unwrap();
        AddonOptions::read(&path)
    }

    #[test]
    fn every_option_of_the_add_on_is_read() {
        let o = read(
            r#"{"log_level":"warning","productions_file":"feeds.yaml","certificate_warning_days":14,
                "retention_days":7,"web_allow":["172.30.32.1",""],"api_port":8088,
                "api_tokens":["0123456789abcdef0123"],"mqtt":{"host":"broker","port":1884},
                "discovery_prefix":"ha","instance_id":"lab"}"#,
        )
        .unwrap();
        assert_eq!(o.log_filter().as_deref(), Some("warn"));
        assert_eq!(o.productions_file.as_deref(), Some("feeds.yaml"));
        assert_eq!((o.certificate_warning_days, o.retention_days, o.api_port), (Some(14), Some(7), Some(8088)));
        assert_eq!(o.web_allow, ["172.30.32.1"]);
        assert_eq!(o.api_tokens.iter().map(Secret::expose).collect::<Vec<_>>(), ["0123456789abcdef0123"]);
        assert_eq!((o.mqtt.host.as_deref(), o.mqtt.port), (Some("broker"), Some(1884)));
        assert!(o.unknown_keys().is_empty());
    }

    #[test]
    fn unknown_keys_are_reported_and_empty_values_are_not_set() {
        let o = read(r#"{"log_level":"","colour":"blue","mqtt":{"hots":"x","host":""},"api_port":""}"#).unwrap();
        assert_eq!(o.unknown_keys(), ["colour", "mqtt.hots"]);
        assert_eq!((o.log_filter(), o.mqtt.host.as_deref(), o.api_port), (None, None, None));
    }

    #[test]
    fn debug_output_shows_no_password_or_token() {
        let o = read(
            r#"{"api_tokens":["token-0123456789abcdef"],"mqtt":{"host":"broker","username":"u",
                "password":"pass-0123456789"}}"#,
        )
        .unwrap();
        let text = format!("{o:?}");
        assert!(text.contains("broker") && text.contains("\"***\""), "{text}");
        assert!(!text.contains("pass-0123456789") && !text.contains("token-0123456789abcdef"), "{text}");
    }

    #[test]
    fn a_wrong_value_names_its_key() {
        let e = read(r#"{"mqtt":{"port":"abc"}}"#).unwrap_err().to_string();
        assert!(e.contains("mqtt.port") && e.contains("\"abc\" is not a port number"), "{e}");
        let e = read(r#"{"retention_days":"soon"}"#).unwrap_err().to_string();
        assert!(e.contains("retention_days"), "{e}");
        assert!(read("not json").is_err());
    }
}
