//! An item's settings as the engine runs them (defaults filled in), as
//! `key: value` text for the web UI, in the productions file's own words.
//! Nothing secret lives in an item's settings: TLS material is named, and
//! key passwords are referred to by variable or file.

use std::time::Duration;

use super::model::{AckMode, ItemKind, NoMatch, RuleAction};

/// `30s`, `1.5s`, `250ms`, `2m`, as the productions file writes them.
fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0s".into(),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms if ms < 1000 => format!("{ms}ms"),
        ms => format!("{}s", ms as f64 / 1000.0),
    }
}

fn or_none(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "none".to_owned(), |v| v.to_string())
}

impl ItemKind {
    /// The kind's settings in file order, each as `(key, value)`.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        match self {
            ItemKind::MllpIn(c) => vec![
                ("host", c.host.clone()),
                ("port", c.port.to_string()),
                ("tls", or_none(c.tls.as_ref())),
                (
                    "ack_mode",
                    match c.ack_mode {
                        AckMode::Immediate => "immediate",
                        AckMode::Never => "never",
                        AckMode::Application => "application",
                    }
                    .into(),
                ),
                ("application_ack_timeout", duration(c.application_ack_timeout)),
                ("max_connections", c.max_connections.to_string()),
                ("max_connections_per_peer", c.max_connections_per_peer.to_string()),
                ("first_byte_timeout", duration(c.first_byte_timeout)),
                ("idle_timeout", duration(c.idle_timeout)),
                ("read_timeout", duration(c.read_timeout)),
                ("max_message_size", format!("{} bytes", c.max_message_size)),
            ],
            ItemKind::MllpOut(c) => vec![
                ("host", c.host.clone()),
                ("port", c.port.to_string()),
                ("tls", or_none(c.tls.as_ref())),
                ("stay_connected", c.stay_connected.to_string()),
                ("connect_timeout", duration(c.connect_timeout)),
                ("response_timeout", duration(c.response_timeout)),
                ("retry_interval", duration(c.retry_interval)),
                ("failure_timeout", c.failure_timeout.map_or_else(|| "forever".into(), duration)),
                ("pipeline_depth", c.pipeline_depth.to_string()),
                ("reply_code_actions", c.reply_code_actions.to_string()),
            ],
            ItemKind::Router(c) => {
                let mut rows: Vec<(&'static str, String)> = c
                    .rules
                    .iter()
                    .map(|r| {
                        let when = r.when.as_ref().map_or_else(|| "every message".to_owned(), |w| format!("when {w}"));
                        let action = match &r.action {
                            RuleAction::Send(to) => format!("send to {}", to.join(", ")),
                            RuleAction::Discard => "discard".to_owned(),
                        };
                        let transform = if r.transform.is_empty() {
                            String::new()
                        } else {
                            let steps: Vec<String> = r.transform.iter().map(ToString::to_string).collect();
                            format!(", after {}", steps.join("; "))
                        };
                        ("rule", format!("{when}: {action}{transform}"))
                    })
                    .collect();
                let no_match = match c.no_match {
                    NoMatch::Discard => "discard",
                    NoMatch::Error => "error",
                };
                rows.push(("no_match", no_match.into()));
                rows
            }
            ItemKind::FileIn(c) => vec![
                ("path", c.path.display().to_string()),
                ("pattern", c.pattern.clone()),
                ("archive_path", c.archive_dir().display().to_string()),
                ("poll_interval", duration(c.poll_interval)),
            ],
            ItemKind::FileOut(c) => {
                vec![("path", c.path.display().to_string()), ("filename", c.filename.clone())]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_written() {
        assert_eq!(duration(Duration::from_secs(30)), "30s");
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
        assert_eq!(duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(duration(Duration::from_secs(600)), "10m");
    }

    #[test]
    fn a_router_reads_as_its_rules() {
        let config = crate::config::parse(
            std::path::Path::new("/p.yaml"),
            "productions:\n  p:\n    items:\n      - name: R\n        kind: router\n        rules:\n          - when: MSH-9.1 = \"ADT\"\n            transform:\n              - set: PID-8\n                value: U\n            send: [O]\n        no_match: error\n      - name: O\n        kind: file_out\n        path: out\n",
        )
        .unwrap();
        let rows = config.productions[0].items[0].kind.describe();
        assert_eq!(rows[0].0, "rule");
        assert!(rows[0].1.starts_with("when MSH-9.1 = \"ADT\": send to O, after "), "{}", rows[0].1);
        assert!(rows[0].1.contains("PID-8"), "{}", rows[0].1);
        assert_eq!(rows[1], ("no_match", "error".to_owned()));
    }
}
