//! Where the MQTT settings come from: flags, `SWITCHBOARD_MQTT_*`
//! environment variables, the add-on's options file, or the Supervisor.
//!
//! Precedence, per setting: a flag or its environment variable, then the
//! options file (`/data/options.json` format, see [`AddonOptions`]), then
//! the default. When no broker host is given anywhere and the Supervisor's
//! token is set (`SUPERVISOR_TOKEN`, or the older `HASSIO_TOKEN`), the
//! Supervisor's MQTT service supplies host, port and credentials; without
//! either, Switchboard runs without MQTT.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use zeroize::Zeroizing;

use super::options::{AddonOptions, nonempty};
use crate::config::{TlsConfig, TlsRole, TlsVersion, VerifyPeer};

/// The discovery prefix Home Assistant listens on by default.
pub const DEFAULT_DISCOVERY_PREFIX: &str = "homeassistant";
/// The instance id when none is given.
pub const DEFAULT_INSTANCE_ID: &str = "switchboard";
/// The Supervisor's address inside a Home Assistant installation.
pub const DEFAULT_SUPERVISOR_URL: &str = "http://supervisor";
/// Where the Supervisor writes the add-on's options.
pub const ADDON_OPTIONS_FILE: &str = "/data/options.json";
/// Keep-alive when none is given.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(30);

/// The MQTT and Home Assistant settings given on the command line (or in
/// the `SWITCHBOARD_*` variables that stand for its flags): what
/// [`resolve`] combines with the options file and the Supervisor.
#[derive(Debug, Clone)]
pub struct MqttArgs {
    /// MQTT broker host. Without it (here, in the environment or in the
    /// options file) the Supervisor is asked when `SUPERVISOR_TOKEN` is set;
    /// otherwise Switchboard runs without MQTT.
    pub mqtt_host: Option<String>,
    /// MQTT broker port [default: 1883, or 8883 with TLS].
    pub mqtt_port: Option<u16>,
    /// MQTT user name.
    pub mqtt_username: Option<String>,
    /// The name of the environment variable that holds the MQTT password
    /// (the password itself never goes on the command line).
    pub mqtt_password_env: String,
    /// Connect to the broker over TLS (implied by `--mqtt-tls-ca` and
    /// `--mqtt-tls-cert`). Without a CA file the system's authorities are
    /// trusted.
    pub mqtt_tls: bool,
    /// PEM file of the authorities that sign the broker's certificate.
    pub mqtt_tls_ca: Option<PathBuf>,
    /// PEM client certificate, for brokers that require one.
    pub mqtt_tls_cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub mqtt_tls_key: Option<PathBuf>,
    /// The name of the environment variable that holds the client key's
    /// password, for an encrypted key.
    pub mqtt_tls_key_password_env: Option<String>,
    /// Accept a broker certificate that does not name the host connected to
    /// (the chain is still verified).
    pub mqtt_tls_skip_host_check: bool,
    /// MQTT client id [default: the instance id].
    pub mqtt_client_id: Option<String>,
    /// MQTT keep-alive, e.g. `30s` [default: 30s].
    pub mqtt_keep_alive: Option<Duration>,
    /// Home Assistant's discovery prefix [default: homeassistant].
    pub mqtt_discovery_prefix: Option<String>,
    /// Names this Switchboard in MQTT topics and Home Assistant ids
    /// (lower-case letters, digits and `_`) [default: switchboard]. Change
    /// it only to run two instances against one broker: entity ids follow it.
    pub instance_id: Option<String>,
    /// The web UI's address, linked from the Home Assistant devices.
    pub ui_url: Option<String>,
    /// Add-on options file (`/data/options.json` format) [default:
    /// /data/options.json when running under the Supervisor].
    pub options: Option<PathBuf>,
    /// The Supervisor's address, asked for the MQTT service.
    pub supervisor_url: String,
    /// Where relative certificate paths of the options file are taken
    /// from (in the add-on, `/ssl`); `None`: the current directory.
    pub ssl_dir: Option<PathBuf>,
}

impl Default for MqttArgs {
    /// Nothing given: the defaults of the command line's flags.
    fn default() -> Self {
        Self {
            mqtt_host: None,
            mqtt_port: None,
            mqtt_username: None,
            mqtt_password_env: "SWITCHBOARD_MQTT_PASSWORD".to_owned(),
            mqtt_tls: false,
            mqtt_tls_ca: None,
            mqtt_tls_cert: None,
            mqtt_tls_key: None,
            mqtt_tls_key_password_env: None,
            mqtt_tls_skip_host_check: false,
            mqtt_client_id: None,
            mqtt_keep_alive: None,
            mqtt_discovery_prefix: None,
            instance_id: None,
            ui_url: None,
            options: None,
            supervisor_url: DEFAULT_SUPERVISOR_URL.to_owned(),
            ssl_dir: None,
        }
    }
}

/// A password: never printed, wiped from memory when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a password.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The password itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// TLS to the broker.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BrokerTls {
    /// Authorities of the broker's certificate; `None`: the system's.
    pub ca_file: Option<PathBuf>,
    /// Client certificate.
    pub cert_file: Option<PathBuf>,
    /// Its key.
    pub key_file: Option<PathBuf>,
    /// Environment variable holding the key's password.
    pub key_password_env: Option<String>,
    /// Check that the certificate names the host.
    pub verify_host: bool,
}

impl BrokerTls {
    /// The same settings as a TLS configuration of the productions file, so
    /// that the broker connection loads keys and verifies exactly like an
    /// `mllp_out` item does.
    pub fn as_tls_config(&self) -> TlsConfig {
        TlsConfig {
            role: TlsRole::Client,
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            key_password_env: self.key_password_env.clone(),
            key_password_file: None,
            verify_peer: VerifyPeer::Require,
            verify_host: self.verify_host,
            server_name: None,
            min_version: TlsVersion::default(),
            create_if_missing: false,
        }
    }
}

/// How to reach the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Secret>,
    /// TLS, if used.
    pub tls: Option<BrokerTls>,
    /// MQTT client id.
    pub client_id: String,
    /// Keep-alive.
    pub keep_alive: Duration,
}

/// Where the broker settings come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerSource {
    /// Given by flags, environment or options file.
    Given(Broker),
    /// To be asked from the Supervisor's MQTT service.
    Supervisor {
        /// Base URL, e.g. `http://supervisor`.
        url: String,
        /// `SUPERVISOR_TOKEN`.
        token: Secret,
        /// Client id and keep-alive to use with what it returns.
        client_id: String,
        /// Keep-alive.
        keep_alive: Duration,
    },
    /// No MQTT: nothing configured and no Supervisor.
    Off,
}

/// Everything the Home Assistant bridge needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaSettings {
    /// The broker, or how to find it.
    pub broker: BrokerSource,
    /// Discovery prefix.
    pub discovery_prefix: String,
    /// Instance id: node id, base topic and id prefix.
    pub instance_id: String,
    /// The web UI's address for `configuration_url`.
    pub ui_url: Option<String>,
}

/// Why the settings cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The options file cannot be read or parsed.
    #[error("cannot read the options file {path}: {reason}")]
    Options {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A value is invalid.
    #[error("{0}")]
    Invalid(String),
}

/// Checks an id used in topics and entity ids (which allow no `-`).
fn check_id(what: &str, value: &str) -> Result<(), SettingsError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(SettingsError::Invalid(format!(
            "{what} {value:?} is not valid: use 1 to 64 lower-case letters, digits or `_`"
        )))
    }
}

/// Checks the discovery prefix: a topic without wildcards.
fn check_prefix(value: &str) -> Result<(), SettingsError> {
    if value.is_empty() || value.contains(['+', '#', '\0']) || value.starts_with('/') || value.ends_with('/') {
        return Err(SettingsError::Invalid(format!(
            "the discovery prefix {value:?} is not valid: write a topic such as `homeassistant`, without `+`, `#` \
             or a leading or trailing `/`"
        )));
    }
    Ok(())
}

/// What the environment holds that matters here (passed in so tests do not
/// touch the process environment). Its `Debug` says which values are set,
/// never what they are.
#[derive(Clone, Default)]
pub struct Environment {
    /// The Supervisor's token: `SUPERVISOR_TOKEN`, or `HASSIO_TOKEN`, its
    /// older name.
    pub supervisor_token: Option<String>,
    /// The value of the variable named by `--mqtt-password-env`.
    pub mqtt_password: Option<String>,
}

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |v: &Option<String>| if v.is_some() { "\"***\"" } else { "None" };
        f.debug_struct("Environment")
            .field("supervisor_token", &format_args!("{}", set(&self.supervisor_token)))
            .field("mqtt_password", &format_args!("{}", set(&self.mqtt_password)))
            .finish()
    }
}

impl Environment {
    /// Reads the process environment.
    pub fn from_process(args: &MqttArgs) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            supervisor_token: var("SUPERVISOR_TOKEN").or_else(|| var("HASSIO_TOKEN")),
            mqtt_password: var(&args.mqtt_password_env),
        }
    }
}

/// The options file to read: `--options`, or under the Supervisor
/// `/data/options.json` when it exists.
pub fn options_path(args: &MqttArgs, env: &Environment) -> Option<PathBuf> {
    match &args.options {
        Some(path) => Some(path.clone()),
        None if env.supervisor_token.is_some() && Path::new(ADDON_OPTIONS_FILE).is_file() => {
            Some(PathBuf::from(ADDON_OPTIONS_FILE))
        }
        None => None,
    }
}

/// Combines flags, environment and options file into the bridge settings.
pub fn resolve(args: &MqttArgs, env: &Environment) -> Result<HaSettings, SettingsError> {
    let file = match options_path(args, env) {
        Some(path) => AddonOptions::read(&path)?,
        None => AddonOptions::default(),
    };
    resolve_with(args, env, &file)
}

/// [`resolve`] with the options file already read.
pub fn resolve_with(args: &MqttArgs, env: &Environment, file: &AddonOptions) -> Result<HaSettings, SettingsError> {
    let m = &file.mqtt;
    let instance_id = nonempty(args.instance_id.clone())
        .or(file.instance_id.clone())
        .unwrap_or_else(|| DEFAULT_INSTANCE_ID.to_owned());
    check_id("the instance id", &instance_id)?;
    let discovery_prefix = nonempty(args.mqtt_discovery_prefix.clone())
        .or(file.discovery_prefix.clone())
        .unwrap_or_else(|| DEFAULT_DISCOVERY_PREFIX.to_owned());
    check_prefix(&discovery_prefix)?;
    let client_id = nonempty(args.mqtt_client_id.clone()).or(m.client_id.clone()).unwrap_or(instance_id.clone());
    let keep_alive = args
        .mqtt_keep_alive
        .or(m.keep_alive.map(Duration::from_secs))
        .unwrap_or(DEFAULT_KEEP_ALIVE)
        .clamp(Duration::from_secs(5), Duration::from_secs(3600));
    let ui_url = nonempty(args.ui_url.clone()).or(file.ui_url.clone());

    // A relative path in the options file is taken from the certificates'
    // folder (`mqtt-ca.pem` is `/ssl/mqtt-ca.pem` in the add-on).
    let from_file = |value: &Option<String>| {
        value.as_ref().map(|v| match &args.ssl_dir {
            Some(dir) => dir.join(v),
            None => PathBuf::from(v),
        })
    };
    let ca_file = args.mqtt_tls_ca.clone().or_else(|| from_file(&m.ca_file));
    let cert_file = args.mqtt_tls_cert.clone().or_else(|| from_file(&m.cert_file));
    let key_file = args.mqtt_tls_key.clone().or_else(|| from_file(&m.key_file));
    let tls_wanted = args.mqtt_tls || m.tls.unwrap_or(false) || ca_file.is_some() || cert_file.is_some();
    let tls = tls_wanted.then(|| BrokerTls {
        ca_file,
        cert_file,
        key_file,
        key_password_env: nonempty(args.mqtt_tls_key_password_env.clone()).or(m.key_password_env.clone()),
        verify_host: !(args.mqtt_tls_skip_host_check || m.skip_host_check.unwrap_or(false)),
    });

    let broker = match nonempty(args.mqtt_host.clone()).or(m.host.clone()) {
        Some(host) => BrokerSource::Given(Broker {
            port: args.mqtt_port.or(m.port).unwrap_or(if tls.is_some() { 8883 } else { 1883 }),
            host,
            username: nonempty(args.mqtt_username.clone()).or(m.username.clone()),
            password: env.mqtt_password.clone().or(m.password.clone()).map(Secret::new),
            tls,
            client_id,
            keep_alive,
        }),
        None => match &env.supervisor_token {
            Some(token) => BrokerSource::Supervisor {
                url: args.supervisor_url.trim_end_matches('/').to_owned(),
                token: Secret::new(token.clone()),
                client_id,
                keep_alive,
            },
            None => BrokerSource::Off,
        },
    };
    Ok(HaSettings { broker, discovery_prefix, instance_id, ui_url })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> MqttArgs {
        MqttArgs {
            mqtt_password_env: "SWITCHBOARD_MQTT_PASSWORD".into(),
            supervisor_url: DEFAULT_SUPERVISOR_URL.into(),
            ..MqttArgs::default()
        }
    }

    #[test]
    fn nothing_configured_means_off() {
        let s = resolve(&args(), &Environment::default()).unwrap();
        assert_eq!(s.broker, BrokerSource::Off);
        assert_eq!(s.discovery_prefix, "homeassistant");
        assert_eq!(s.instance_id, "switchboard");
    }

    #[test]
    fn the_environment_never_shows_its_secrets() {
        let env = Environment { supervisor_token: Some("sv-token-1234".into()), mqtt_password: None };
        assert_eq!(format!("{env:?}"), "Environment { supervisor_token: \"***\", mqtt_password: None }");
    }

    #[test]
    fn supervisor_when_only_a_token() {
        let env = Environment { supervisor_token: Some("tok".into()), mqtt_password: None };
        let a = MqttArgs { supervisor_url: "http://127.0.0.1:9/".into(), ..args() };
        let s = resolve(&a, &env).unwrap();
        match s.broker {
            BrokerSource::Supervisor { url, token, client_id, .. } => {
                assert_eq!(url, "http://127.0.0.1:9");
                assert_eq!(token.expose(), "tok");
                assert_eq!(client_id, "switchboard");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_win_over_the_options_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("options.json");
        std::fs::write(
            &file,
            r#"{"log_level":"info","mqtt":{"host":"file-host","port":"1884","username":"u","password":"p",
                "tls":false,"ca_file":""},"discovery_prefix":"ha","instance_id":"lab"}"#,
        )
        .unwrap();
        let env = Environment { supervisor_token: Some("tok".into()), mqtt_password: None };
        let a = MqttArgs { options: Some(file.clone()), ..args() };
        let s = resolve(&a, &env).unwrap();
        let BrokerSource::Given(b) = &s.broker else { panic!("{:?}", s.broker) };
        assert_eq!((b.host.as_str(), b.port), ("file-host", 1884));
        assert_eq!(b.password.as_ref().map(Secret::expose), Some("p"));
        assert_eq!(b.client_id, "lab");
        assert!(b.tls.is_none());
        assert_eq!((s.discovery_prefix.as_str(), s.instance_id.as_str()), ("ha", "lab"));

        let env = Environment { supervisor_token: None, mqtt_password: Some("from-env".into()) };
        let a = MqttArgs {
            options: Some(file),
            mqtt_host: Some("flag-host".into()),
            mqtt_tls_ca: Some("/ssl/ca.pem".into()),
            ..args()
        };
        let s = resolve(&a, &env).unwrap();
        let BrokerSource::Given(b) = &s.broker else { panic!("{:?}", s.broker) };
        assert_eq!((b.host.as_str(), b.port), ("flag-host", 1884));
        assert_eq!(b.password.as_ref().map(Secret::expose), Some("from-env"));
        let tls = b.tls.as_ref().unwrap();
        assert_eq!(tls.ca_file.as_deref(), Some(Path::new("/ssl/ca.pem")));
        assert!(tls.verify_host);
    }

    #[test]
    fn relative_certificates_of_the_options_file_are_in_the_ssl_folder() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("options.json");
        std::fs::write(&file, r#"{"mqtt":{"host":"h","ca_file":"mqtt-ca.pem","cert_file":"/elsewhere/c.pem"}}"#)
            .unwrap();
        let a = MqttArgs { options: Some(file), ssl_dir: Some("/ssl".into()), ..args() };
        let BrokerSource::Given(b) = resolve(&a, &Environment::default()).unwrap().broker else { panic!() };
        let tls = b.tls.unwrap();
        assert_eq!(tls.ca_file.as_deref(), Some(Path::new("/ssl/mqtt-ca.pem")));
        assert_eq!(tls.cert_file.as_deref(), Some(Path::new("/elsewhere/c.pem")));
        assert_eq!(b.port, 8883);
    }

    #[test]
    fn tls_default_port_and_bad_values() {
        let a = MqttArgs { mqtt_host: Some("h".into()), mqtt_tls: true, ..args() };
        let BrokerSource::Given(b) = resolve(&a, &Environment::default()).unwrap().broker else { panic!() };
        assert_eq!(b.port, 8883);
        for bad in ["Not OK", "with-dash", ""] {
            let a = MqttArgs { instance_id: Some(bad.into()), ..args() };
            assert_eq!(resolve(&a, &Environment::default()).is_err(), !bad.is_empty(), "{bad:?}");
        }
        let a = MqttArgs { mqtt_discovery_prefix: Some("ha/#".into()), ..args() };
        assert!(resolve(&a, &Environment::default()).is_err());
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "\"***\"");
        let b = Broker {
            host: "h".into(),
            port: 1,
            username: None,
            password: Some(s),
            tls: None,
            client_id: "c".into(),
            keep_alive: DEFAULT_KEEP_ALIVE,
        };
        assert!(!format!("{b:?}").contains("hunter2"));
    }
}
