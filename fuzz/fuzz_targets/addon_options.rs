//! Reads arbitrary bytes as the add-on's options file
//! (`/data/options.json`), then does with what it read what
//! `switchboard run` does: combines it with the flags and the environment
//! into the MQTT settings, turns `log_level` into a log filter, and reads
//! `web_allow` and `api_tokens`.
//!
//! Checked beyond "no panic":
//! - unknown keys are reported sorted, and empty values count as not set;
//! - an instance id and a discovery prefix that were accepted give topics
//!   that the bridge's command filters match;
//! - a `web_allow` entry that parses writes itself in a form that parses
//!   back to the same range, which contains its own address.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use switchboard::ha::discovery::{Discovery, Layout, Naming, ProductionLayout};
use switchboard::ha::{AddonOptions, BrokerSource, Environment, MqttArgs, resolve_with};
use switchboard::web::{IpNet, Token};

/// Where each input is written: one file per process, in `TMPDIR`.
fn options_file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("switchboard-fuzz-options-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch folder in TMPDIR");
        dir.join("options.json")
    })
}

fuzz_target!(|data: &[u8]| {
    let path = options_file();
    std::fs::write(path, data).expect("the scratch file can be written");
    let Ok(options) = AddonOptions::read(path) else {
        return;
    };

    let unknown = options.unknown_keys();
    assert!(unknown.is_sorted(), "unknown keys not sorted: {unknown:?}");
    for value in [&options.log_level, &options.productions_file] {
        assert!(value.as_deref().is_none_or(|v| !v.is_empty() && v.trim() == v), "{value:?}");
    }
    assert!(options.web_allow.iter().all(|v| !v.is_empty()));

    if let Some(filter) = options.log_filter() {
        let _ = tracing_subscriber::EnvFilter::try_new(&filter);
    }
    for written in &options.web_allow {
        let Ok(net) = written.parse::<IpNet>() else { continue };
        let shown = net.to_string();
        assert_eq!(shown.parse::<IpNet>(), Ok(net), "{written:?} shown as {shown:?}");
        let own = shown.split('/').next().and_then(|a| a.parse().ok()).expect("an address");
        assert!(net.contains(own), "{shown} does not contain its own address");
    }
    for token in &options.api_tokens {
        let _ = Token::new(token.expose());
    }

    let args = MqttArgs::default();
    for env in [
        Environment::default(),
        Environment { supervisor_token: Some("token".into()), mqtt_password: Some("secret".into()) },
    ] {
        let Ok(settings) = resolve_with(&args, &env, &options) else { continue };
        if let BrokerSource::Given(broker) = &settings.broker {
            assert!(!broker.host.is_empty() && !broker.client_id.is_empty());
        }
        let naming =
            Naming { prefix: settings.discovery_prefix, instance: settings.instance_id, ui_url: settings.ui_url };
        check_topics(&naming);
    }
});

/// Every command topic of a small layout is matched by one of the filters
/// the bridge subscribes with; config topics by the config filter.
fn check_topics(naming: &Naming) {
    let layout = Layout {
        productions: vec![ProductionLayout { id: "adt".into(), slug: "adt".into(), name: "ADT".into(), items: vec![] }],
        certificates: vec![],
    };
    let discovery = Discovery::build(naming, &layout);
    let filters = naming.command_filters();
    for topic in discovery.commands.keys() {
        let matching = filters.iter().filter(|f| matches_filter(f, topic)).count();
        assert_eq!(matching, 1, "{topic} is matched by {matching} of {filters:?}");
    }
    for entity in &discovery.entities {
        assert!(matches_filter(&naming.config_filter(), &entity.config_topic), "{}", entity.config_topic);
    }
}

/// MQTT topic filter matching with `+` (one level) and `#` (the rest).
fn matches_filter(filter: &str, topic: &str) -> bool {
    let mut levels = topic.split('/');
    for part in filter.split('/') {
        match (part, levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (p, Some(level)) if p == level => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}
