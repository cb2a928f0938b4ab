//! The productions file: the demo loads, defaults apply, and every mistake
//! is reported with its exact path, its position and a helpful message.

use std::path::{Path, PathBuf};
use std::time::Duration;

use switchboard::config::{
    self, AckMode, BackgroundPriority, Config, ConfigError, Durability, ItemKind, NoMatch, Position, Problem,
    RuleAction, TlsRole, TlsVersion, VerifyPeer,
};
use switchboard::rules::route::TransformStep;

const SOURCE: &str = "/etc/switchboard/productions.yaml";

fn parse(yaml: &str) -> Result<Config, ConfigError> {
    config::parse(Path::new(SOURCE), yaml)
}

fn problems(yaml: &str) -> Vec<Problem> {
    match parse(yaml) {
        Ok(_) => panic!("expected problems, the file loaded:\n{yaml}"),
        Err(err) => {
            assert_eq!(err.file, PathBuf::from(SOURCE));
            err.problems
        }
    }
}

/// Indents a block of YAML written flush left.
fn indent(block: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    block.lines().map(|l| if l.is_empty() { String::new() } else { format!("{pad}{l}\n") }).collect()
}

/// A file with one production `p` whose items are `items`.
fn with_items(items: &str) -> String {
    format!("productions:\n  p:\n    items:\n{}", indent(items, 6))
}

/// A valid service -> router -> operation chain, to which cases add.
const CHAIN: &str = "\
- name: In
  kind: mllp_in
  port: 2575
  targets: [Router]
- name: Router
  kind: router
  rules:
    - send: [Out]
- name: Out
  kind: mllp_out
  host: localhost
  port: 6661
";

fn chain_with(extra: &str) -> String {
    with_items(&format!("{CHAIN}{extra}"))
}

/// The chain with `from` replaced by `to` (which must occur).
fn chain_edit(from: &str, to: &str) -> String {
    assert!(CHAIN.contains(from), "{from}");
    with_items(&CHAIN.replacen(from, to, 1))
}

#[test]
fn the_demo_loads() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/demo.yaml");
    let config = match config::load(&path) {
        Ok(config) => config,
        Err(err) => panic!("{err}"),
    };
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
    assert_eq!(config.source, path);
    let ids: Vec<&str> = config.productions.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["demo", "lab"], "the demo production and the lab system it delivers to");
    let demo = &config.productions[0];
    assert_eq!((demo.id.as_str(), demo.name.as_str(), demo.autostart), ("demo", "Demo feed", true));
    let names: Vec<&str> = demo.items.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["ADT in", "ADT router", "Lab out", "Archive"]);

    let ItemKind::MllpIn(adt_in) = &demo.items[0].kind else { panic!("ADT in is not mllp_in") };
    assert_eq!((adt_in.host.as_str(), adt_in.port), ("127.0.0.1", 2575));
    assert_eq!(demo.items[0].targets, ["ADT router"]);

    let ItemKind::Router(router) = &demo.items[1].kind else { panic!("ADT router is not a router") };
    assert_eq!(router.no_match, NoMatch::Discard);
    assert_eq!(router.rules.len(), 2);
    let when = router.rules[0].when.as_ref().map(ToString::to_string);
    assert!(when.is_some_and(|w| w.contains("A01") && w.contains("A08")));
    assert_eq!(router.rules[0].action, RuleAction::Send(vec!["Lab out".into(), "Archive".into()]));
    assert_eq!(router.rules[1].action, RuleAction::Send(vec!["Archive".into()]));

    let ItemKind::MllpOut(lab) = &demo.items[2].kind else { panic!("Lab out is not mllp_out") };
    assert_eq!((lab.host.as_str(), lab.port), ("127.0.0.1", 6661));

    let ItemKind::FileOut(archive) = &demo.items[3].kind else { panic!("Archive is not file_out") };
    // Relative to the folder of the productions file.
    assert_eq!(archive.path, path.parent().unwrap().join("demo-data/out"));
}

#[test]
fn defaults_are_applied() {
    let yaml = "\
productions:
  adt:
    items:
      - name: In
        kind: mllp_in
        port: 2575
        targets: [Router]
      - name: Router
        kind: router
        rules:
          - send: [Out, Files]
      - name: Out
        kind: mllp_out
        host: lab.example.org
        port: 6661
      - name: Files
        kind: file_out
        path: out
      - name: Pickup
        kind: file_in
        path: /var/hl7/in
        targets: Router
";
    let config = parse(yaml).unwrap();
    assert_eq!(config.store.durability, Durability::Full);
    assert_eq!(config.store.background_priority, BackgroundPriority::Low);
    assert_eq!(config.store.retention_days, 30);
    assert!(config.tls.is_empty());
    let p = &config.productions[0];
    assert_eq!(p.name, "adt");
    assert!(p.autostart);
    assert_eq!(p.stop_timeout, Duration::from_secs(10));
    assert!(p.items.iter().all(|i| i.enabled));

    let ItemKind::MllpIn(mllp_in) = &p.items[0].kind else { panic!() };
    assert_eq!(mllp_in.host, "0.0.0.0");
    assert_eq!(mllp_in.tls, None);
    assert_eq!(mllp_in.ack_mode, AckMode::Immediate);
    assert_eq!(mllp_in.application_ack_timeout, Duration::from_secs(30));
    assert_eq!(mllp_in.max_connections, 100);
    assert_eq!(mllp_in.idle_timeout, Duration::from_secs(300));
    assert_eq!(mllp_in.read_timeout, Duration::from_secs(30));
    assert_eq!(mllp_in.max_message_size, 16 * 1024 * 1024);

    let ItemKind::Router(router) = &p.items[1].kind else { panic!() };
    assert_eq!(router.no_match, NoMatch::Discard);
    assert_eq!(router.rules[0].when, None);
    assert!(router.rules[0].transform.is_empty());

    let ItemKind::MllpOut(out) = &p.items[2].kind else { panic!() };
    assert!(out.stay_connected);
    assert_eq!(out.pipeline_depth, 1, "one message at a time unless asked");
    assert_eq!(out.connect_timeout, Duration::from_secs(5));
    assert_eq!(out.response_timeout, Duration::from_secs(30));
    assert_eq!(out.retry_interval, Duration::from_secs(5));
    assert_eq!(out.failure_timeout, Some(Duration::from_secs(15)));
    assert_eq!(out.reply_code_actions.to_string(), ":?R=RF,:?E=S,:~=S,:?A=C,:*=S,:I?=W,:T?=C");

    let ItemKind::FileOut(files) = &p.items[3].kind else { panic!() };
    assert_eq!(files.path, PathBuf::from("/etc/switchboard/out"));
    assert_eq!(files.filename, "{control_id}_{timestamp}.hl7");

    let ItemKind::FileIn(pickup) = &p.items[4].kind else { panic!() };
    assert_eq!(pickup.path, PathBuf::from("/var/hl7/in"));
    assert_eq!(pickup.pattern, "*.hl7");
    assert_eq!(pickup.archive_path, None);
    assert_eq!(pickup.archive_dir(), PathBuf::from("/var/hl7/in/archive"));
    assert_eq!(pickup.poll_interval, Duration::from_secs(2));
    // A single name is accepted for a list of targets.
    assert_eq!(p.items[4].targets, ["Router"]);
}

#[test]
fn every_setting_is_read() {
    let yaml = r#"
store:
  durability: normal
  retention_days: 0
  background_priority: normal
tls:
  adt-server:
    role: server
    cert_file: certs/server.crt
    key_file: certs/server.key
    key_password_file: /run/secrets/key-password
    ca_file: /ssl/clients.pem
    verify_peer: require
    min_version: 1.3
  lab-client:
    role: client
    server_name: lab.internal
    verify_host: false
    min_version: "1.2"
productions:
  adt:
    name: ADT feed
    autostart: false
    stop_timeout: 1m30s
    items:
      - name: ADT in
        kind: mllp_in
        enabled: false
        host: "::"
        port: 2575
        tls: adt-server
        ack_mode: application
        application_ack_timeout: 45s
        max_connections: 5
        idle_timeout: 1h
        read_timeout: 500ms
        max_message_size: 512KiB
        targets: [Router]
      - name: Router
        kind: router
        no_match: error
        rules:
          - when: MSH-9.1 = "ADT"
            transform:
              - set: PID-8
                value: U
              - copy: PID-3[1].1
                to: PID-2
              - clear: PID-19
              - set: PV1-2
                value: "1.50"
            send: Lab out
          - discard: true
      - name: Lab out
        kind: mllp_out
        host: 10.1.2.3
        port: 6661
        tls: lab-client
        stay_connected: false
        connect_timeout: 2
        response_timeout: 1m
        retry_interval: 250ms
        failure_timeout: 0
        reply_code_actions: ":?E=RF"
      - name: Pickup
        kind: file_in
        path: in
        pattern: "ADT_*.txt"
        archive_path: done
        poll_interval: 10s
        targets: [Router]
"#;
    let config = parse(yaml).unwrap();
    assert_eq!(config.store.durability, Durability::Normal);
    assert_eq!(config.store.retention_days, 0);
    assert_eq!(config.store.background_priority, BackgroundPriority::Normal);
    let server = &config.tls["adt-server"];
    assert_eq!(server.role, TlsRole::Server);
    assert_eq!(server.cert_file.as_deref(), Some(Path::new("/etc/switchboard/certs/server.crt")));
    assert_eq!(server.key_password_file.as_deref(), Some(Path::new("/run/secrets/key-password")));
    assert_eq!(server.verify_peer, VerifyPeer::Require);
    assert_eq!(server.min_version, TlsVersion::Tls13);
    let client = &config.tls["lab-client"];
    assert_eq!(client.verify_peer, VerifyPeer::Require);
    assert!(!client.verify_host);
    assert_eq!(client.server_name.as_deref(), Some("lab.internal"));
    assert_eq!(client.min_version, TlsVersion::Tls12);

    let p = config.production("adt").unwrap();
    assert_eq!(p.name, "ADT feed");
    assert!(!p.autostart);
    assert_eq!(p.stop_timeout, Duration::from_secs(90));
    assert!(!p.items[0].enabled);
    let ItemKind::MllpIn(i) = &p.items[0].kind else { panic!() };
    assert_eq!(i.host, "::");
    assert_eq!(i.tls.as_deref(), Some("adt-server"));
    assert_eq!(i.ack_mode, AckMode::Application);
    assert_eq!(i.application_ack_timeout, Duration::from_secs(45));
    assert_eq!(i.max_connections, 5);
    assert_eq!(i.idle_timeout, Duration::from_secs(3600));
    assert_eq!(i.read_timeout, Duration::from_millis(500));
    assert_eq!(i.max_message_size, 512 * 1024);

    let ItemKind::Router(r) = &p.items[1].kind else { panic!() };
    assert_eq!(r.no_match, NoMatch::Error);
    assert_eq!(r.rules[0].action, RuleAction::Send(vec!["Lab out".into()]));
    let path = |text: &str| text.parse::<switchboard::hl7::Path>().unwrap();
    assert_eq!(
        r.rules[0].transform,
        vec![
            TransformStep::Set { path: path("PID-8"), value: "U".into() },
            TransformStep::Copy { from: path("PID-3[1].1"), to: path("PID-2") },
            TransformStep::Clear { path: path("PID-19") },
            TransformStep::Set { path: path("PV1-2"), value: "1.50".into() },
        ]
    );
    assert_eq!(r.rules[1].action, RuleAction::Discard);

    let ItemKind::MllpOut(o) = &p.items[2].kind else { panic!() };
    assert!(!o.stay_connected);
    assert_eq!(o.connect_timeout, Duration::from_secs(2));
    assert_eq!(o.response_timeout, Duration::from_secs(60));
    assert_eq!(o.retry_interval, Duration::from_millis(250));
    assert_eq!(o.failure_timeout, Some(Duration::ZERO));
    assert_eq!(o.reply_code_actions.to_string(), ":?E=RF");

    let ItemKind::FileIn(f) = &p.items[3].kind else { panic!() };
    assert_eq!(f.path, PathBuf::from("/etc/switchboard/in"));
    assert_eq!(f.pattern, "ADT_*.txt");
    assert_eq!(f.archive_dir(), PathBuf::from("/etc/switchboard/done"));
    assert_eq!(f.poll_interval, Duration::from_secs(10));
}

#[test]
fn productions_keep_file_order() {
    let one = |id: &str, port: u16| {
        format!(
            "  {id}:\n    items:\n      - name: In\n        kind: mllp_in\n        port: {port}\n        targets: [Out]\n      \
             - name: Out\n        kind: file_out\n        path: out\n"
        )
    };
    let yaml = format!("productions:\n{}{}{}", one("zeta", 1001), one("alpha", 1002), one("mid", 1003));
    let ids: Vec<String> = parse(&yaml).unwrap().productions.into_iter().map(|p| p.id).collect();
    assert_eq!(ids, ["zeta", "alpha", "mid"]);
}

/// One mistake per case: the path of the problem, and a phrase its message
/// must contain.
#[test]
fn each_mistake_is_reported_at_its_path() {
    let cases: Vec<(&str, String, &str, &str)> = vec![
        // Unknown keys, everywhere.
        (
            "unknown top-level key",
            format!("prodcutions: {{}}\n{}", chain_with("")),
            "prodcutions",
            "did you mean `productions`?",
        ),
        (
            "unknown item key",
            chain_edit("  port: 2575\n", "  prot: 2575\n"),
            "productions.p.items[0].prot",
            "did you mean `port`?",
        ),
        (
            "unknown key lists valid keys",
            chain_edit("  port: 6661\n", "  port: 6661\n  ack_mode: never\n"),
            "productions.p.items[2].ack_mode",
            "valid keys are: name, kind, enabled, targets, host, port, tls, stay_connected",
        ),
        (
            "unknown production key",
            "productions:\n  p:\n    autostrat: true\n    items: []\n".into(),
            "productions.p.autostrat",
            "did you mean `autostart`?",
        ),
        (
            "unknown rule key",
            chain_edit("    - send: [Out]\n", "    - send: [Out]\n      whne: MSH-9.1 = \"ADT\"\n"),
            "productions.p.items[1].rules[0].whne",
            "did you mean `when`?",
        ),
        (
            "unknown store key",
            format!("store:\n  retention: 5\n{}", chain_with("")),
            "store.retention",
            "valid keys are: durability, retention_days, background_priority",
        ),
        (
            "unknown tls key",
            format!("tls:\n  c:\n    role: client\n    ca: x.pem\n{}", chain_with("")),
            "tls.c.ca",
            "valid keys are: role, ca_file",
        ),
        // Missing required keys per kind.
        ("mllp_in without port", chain_edit("  port: 2575\n", ""), "productions.p.items[0]", "has no `port`"),
        ("mllp_out without port", chain_edit("  port: 6661\n", ""), "productions.p.items[2]", "has no `port`"),
        ("mllp_out without host", chain_edit("  host: localhost\n", ""), "productions.p.items[2]", "has no `host`"),
        (
            "file_in without path",
            chain_with("- name: Pickup\n  kind: file_in\n  targets: [Router]\n"),
            "productions.p.items[3]",
            "has no `path`",
        ),
        (
            "file_out without path",
            chain_edit("  kind: mllp_out\n  host: localhost\n  port: 6661\n", "  kind: file_out\n"),
            "productions.p.items[2]",
            "has no `path`",
        ),
        (
            "item without name",
            chain_edit("- name: In\n  kind: mllp_in\n", "- kind: mllp_in\n"),
            "productions.p.items[0]",
            "has no `name`",
        ),
        (
            "item without kind",
            chain_edit("  kind: mllp_in\n", ""),
            "productions.p.items[0]",
            "has no `kind`; add `kind:` with one of: mllp_in, file_in, router, mllp_out, file_out",
        ),
        (
            "router without rules",
            chain_edit("  rules:\n    - send: [Out]\n", ""),
            "productions.p.items[1]",
            "has no `rules`",
        ),
        ("no productions", "store: {}\n".into(), "", "add a `productions:` mapping"),
        // Unknown kind.
        (
            "unknown kind",
            chain_edit("kind: mllp_in", "kind: mllp_inn"),
            "productions.p.items[0].kind",
            "did you mean `mllp_in`? valid kinds are: mllp_in, file_in, router, mllp_out, file_out",
        ),
        // Values of the wrong form.
        (
            "bad duration",
            chain_edit("  port: 6661\n", "  port: 6661\n  retry_interval: 5 sec\n"),
            "productions.p.items[2].retry_interval",
            "unknown unit \"sec\"",
        ),
        (
            "fractional duration",
            chain_edit("  port: 6661\n", "  port: 6661\n  connect_timeout: 1.5\n"),
            "productions.p.items[2].connect_timeout",
            "1500ms",
        ),
        (
            "zero timeout",
            chain_edit("  port: 2575\n", "  port: 2575\n  read_timeout: 0s\n"),
            "productions.p.items[0].read_timeout",
            "zero duration",
        ),
        (
            "bad size",
            chain_edit("  port: 2575\n", "  port: 2575\n  max_message_size: 16 megs\n"),
            "productions.p.items[0].max_message_size",
            "unknown unit \"megs\"",
        ),
        (
            "port 0",
            chain_edit("port: 2575", "port: 0"),
            "productions.p.items[0].port",
            "port 0 is not a valid port; use a port number from 1 to 65535",
        ),
        (
            "port too large",
            chain_edit("port: 6661", "port: 70000"),
            "productions.p.items[2].port",
            "port 70000 is out of range",
        ),
        (
            "port as text",
            chain_edit("port: 2575", "port: \"2575\""),
            "productions.p.items[0].port",
            "remove the quotes",
        ),
        (
            "port as words",
            chain_edit("port: 2575", "port: lots"),
            "productions.p.items[0].port",
            "expected a port number from 1 to 65535",
        ),
        (
            "boolean spelled yes",
            chain_edit("  port: 6661\n", "  port: 6661\n  stay_connected: yes\n"),
            "productions.p.items[2].stay_connected",
            "expected true or false",
        ),
        (
            "pipeline_depth of zero",
            chain_edit("  port: 6661\n", "  port: 6661\n  pipeline_depth: 0\n"),
            "productions.p.items[2].pipeline_depth",
            "0 is out of range; use a number of messages from 1 to 32",
        ),
        (
            "pipeline_depth beyond a batch",
            chain_edit("  port: 6661\n", "  port: 6661\n  pipeline_depth: 33\n"),
            "productions.p.items[2].pipeline_depth",
            "33 is out of range; use a number of messages from 1 to 32",
        ),
        (
            "pipeline_depth without staying connected",
            chain_edit("  port: 6661\n", "  port: 6661\n  stay_connected: false\n  pipeline_depth: 8\n"),
            "productions.p.items[2].pipeline_depth",
            "set `stay_connected: true` or remove `pipeline_depth`",
        ),
        (
            "bad ack_mode",
            chain_edit("  port: 2575\n", "  port: 2575\n  ack_mode: immediatly\n"),
            "productions.p.items[0].ack_mode",
            "did you mean `immediate`? use one of: immediate, never, application",
        ),
        (
            "host with port",
            chain_edit("host: localhost", "host: lab.example.org:6661"),
            "productions.p.items[2].host",
            "put the port in `port`",
        ),
        (
            "listener on a host name",
            chain_edit("  port: 2575\n", "  host: lab.example.org\n  port: 2575\n"),
            "productions.p.items[0].host",
            "a local address to listen on",
        ),
        (
            "durability",
            format!("store:\n  durability: safe\n{}", chain_with("")),
            "store.durability",
            "use one of: full, normal",
        ),
        (
            "background_priority",
            format!("store:\n  background_priority: idle\n{}", chain_with("")),
            "store.background_priority",
            "use one of: low, normal",
        ),
        (
            "retention_days negative",
            format!("store:\n  retention_days: -1\n{}", chain_with("")),
            "store.retention_days",
            "out of range",
        ),
        (
            "items not a list",
            "productions:\n  p:\n    items: In\n".into(),
            "productions.p.items",
            "expected a list of items",
        ),
        (
            "failure_timeout -5",
            chain_edit("  port: 6661\n", "  port: 6661\n  failure_timeout: -5\n"),
            "productions.p.items[2].failure_timeout",
            "`forever` (or -1)",
        ),
        // Names and ids.
        (
            "duplicate item names",
            chain_with("- name: out\n  kind: file_out\n  path: x\n"),
            "productions.p.items[3].name",
            "is already used by items[2] (\"Out\", line",
        ),
        (
            "empty item name",
            chain_edit("name: In", "name: \"\""),
            "productions.p.items[0].name",
            "the item name is empty",
        ),
        (
            "bad item name",
            chain_edit("name: Out", "name: Out/Lab"),
            "productions.p.items[2].name",
            "contains '/'; use letters, digits, spaces, `-`, `_` and `.`",
        ),
        ("numeric item name", chain_edit("name: In", "name: 42"), "productions.p.items[0].name", "put it in quotes"),
        (
            "production id",
            "productions:\n  ADT Feed:\n    items: []\n".into(),
            "productions.\"ADT Feed\"",
            "use lower-case letters, digits, `_` and `-`, starting with a letter or digit such as `adt_feed`",
        ),
        (
            "production id with leading dash",
            "productions:\n  -adt:\n    items: []\n".into(),
            "productions.-adt",
            "not a valid id",
        ),
        ("duplicate production id", format!("{}  p:\n    items: []\n", chain_with("")), "productions.p", "given twice"),
        // Targets.
        (
            "unknown target",
            chain_edit("targets: [Router]", "targets: [Ruoter]"),
            "productions.p.items[0].targets[0]",
            "there is no item named \"Ruoter\" in this production; did you mean \"Router\"?",
        ),
        (
            "targets on an operation",
            chain_edit("  port: 6661\n", "  port: 6661\n  targets: [Router]\n"),
            "productions.p.items[2].targets",
            "an operation (mllp_out) delivers messages out of Switchboard and has no targets",
        ),
        (
            "service targets a service",
            chain_with("- name: Pickup\n  kind: file_in\n  path: in\n  targets: [In]\n"),
            "productions.p.items[3].targets[0]",
            "\"In\" is a service (mllp_in)",
        ),
        (
            "target listed twice",
            chain_edit("targets: [Router]", "targets: [Router, Router]"),
            "productions.p.items[0].targets[1]",
            "listed twice",
        ),
        (
            "router with targets",
            chain_edit("  kind: router\n", "  kind: router\n  targets: [Out]\n"),
            "productions.p.items[1].targets",
            "a router chooses its targets with rules",
        ),
        (
            "router sends to unknown",
            chain_edit("send: [Out]", "send: [Out, Lab]"),
            "productions.p.items[1].rules[0].send[1]",
            "there is no item named \"Lab\"",
        ),
        (
            "router sends to a service",
            chain_edit("send: [Out]", "send: [In]"),
            "productions.p.items[1].rules[0].send[0]",
            "\"In\" is a service (mllp_in)",
        ),
        (
            "router sends to itself",
            chain_edit("send: [Out]", "send: [Router]"),
            "productions.p.items[1].rules[0].send[0]",
            "cannot send to itself",
        ),
        // Rules and transforms (condition syntax is checked elsewhere).
        (
            "rule without action",
            chain_edit("    - send: [Out]\n", "    - when: MSH-9.1 = \"ADT\"\n"),
            "productions.p.items[1].rules[0]",
            "add `send: [item names]` or `discard: true`",
        ),
        (
            "rule with both actions",
            chain_edit("    - send: [Out]\n", "    - send: [Out]\n      discard: true\n"),
            "productions.p.items[1].rules[0]",
            "not both",
        ),
        (
            "discard false",
            chain_edit("    - send: [Out]\n", "    - send: [Out]\n    - discard: false\n"),
            "productions.p.items[1].rules[1].discard",
            "does nothing",
        ),
        (
            "empty send",
            chain_edit("send: [Out]", "send: []"),
            "productions.p.items[1].rules[0].send",
            "the list is empty",
        ),
        (
            "transform bad path",
            chain_edit("    - send: [Out]\n", "    - send: [Out]\n      transform:\n        - clear: PID19\n"),
            "productions.p.items[1].rules[0].transform[0].clear",
            "is not an HL7 path",
        ),
        (
            "transform set without value",
            chain_edit("    - send: [Out]\n", "    - send: [Out]\n      transform:\n        - set: PID-8\n"),
            "productions.p.items[1].rules[0].transform[0]",
            "add `value:`",
        ),
        (
            "transform value as a number",
            chain_edit(
                "    - send: [Out]\n",
                "    - send: [Out]\n      transform:\n        - set: PV1-2\n          value: 1.50\n",
            ),
            "productions.p.items[1].rules[0].transform[0].value",
            "put it in quotes: \"1.5\"",
        ),
        (
            "transform copy without to",
            chain_edit("    - send: [Out]\n", "    - send: [Out]\n      transform:\n        - copy: PID-3\n"),
            "productions.p.items[1].rules[0].transform[0]",
            "add `to:`",
        ),
        (
            "transform two operations",
            chain_edit(
                "    - send: [Out]\n",
                "    - send: [Out]\n      transform:\n        - set: PID-8\n          clear: PID-8\n",
            ),
            "productions.p.items[1].rules[0].transform[0]",
            "split it into steps",
        ),
        (
            "transform of MSH-2",
            chain_edit("    - send: [Out]\n", "    - send: [Out]\n      transform:\n        - clear: MSH-2\n"),
            "productions.p.items[1].rules[0].transform[0].clear",
            "delimiters",
        ),
        (
            "bad no_match",
            chain_edit("  kind: router\n", "  kind: router\n  no_match: drop\n"),
            "productions.p.items[1].no_match",
            "use one of: discard, error",
        ),
        // Files.
        (
            "unknown placeholder",
            chain_with("- name: Files\n  kind: file_out\n  path: out\n  filename: \"{control}.hl7\"\n"),
            "productions.p.items[3].filename",
            "unknown placeholder {control} in \"{control}.hl7\"; did you mean {control_id}? valid placeholders are {control_id}, {message_type}, {timestamp}, {seq}, {item}",
        ),
        (
            "unclosed placeholder",
            chain_with("- name: Files\n  kind: file_out\n  path: out\n  filename: \"{seq.hl7\"\n"),
            "productions.p.items[3].filename",
            "without `}`",
        ),
        (
            "filename with folder",
            chain_with("- name: Files\n  kind: file_out\n  path: out\n  filename: \"a/{seq}.hl7\"\n"),
            "productions.p.items[3].filename",
            "contains a folder",
        ),
        (
            "archive is the inbox",
            chain_with("- name: Pickup\n  kind: file_in\n  path: in\n  archive_path: ./in\n  targets: [Router]\n"),
            "productions.p.items[3].archive_path",
            "archived files would be read again",
        ),
        // Ports.
        (
            "same port twice",
            chain_with("- name: In2\n  kind: mllp_in\n  host: 127.0.0.1\n  port: 2575\n  targets: [Router]\n"),
            "productions.p.items[3].port",
            "port 2575 on 127.0.0.1 is already used by productions.p.items[0].port (\"In\") on 0.0.0.0",
        ),
        // TLS references and roles.
        (
            "unknown tls",
            format!(
                "tls:\n  lab-client:\n    role: client\n{}",
                chain_edit("  port: 6661\n", "  port: 6661\n  tls: lab-clinet\n")
            ),
            "productions.p.items[2].tls",
            "there is no TLS configuration named `lab-clinet`; did you mean `lab-client`? defined under `tls:`: lab-client",
        ),
        (
            "tls when none defined",
            chain_edit("  port: 6661\n", "  port: 6661\n  tls: lab\n"),
            "productions.p.items[2].tls",
            "no TLS configuration is defined",
        ),
        (
            "client tls on mllp_in",
            format!(
                "tls:\n  lab-client:\n    role: client\n{}",
                chain_edit("  port: 2575\n", "  port: 2575\n  tls: lab-client\n")
            ),
            "productions.p.items[0].tls",
            "has `role: client`; an mllp_in accepts connections and needs a configuration with `role: server`",
        ),
        (
            "server tls on mllp_out",
            format!(
                "tls:\n  srv:\n    role: server\n    cert_file: a.crt\n    key_file: a.key\n{}",
                chain_edit("  port: 6661\n", "  port: 6661\n  tls: srv\n")
            ),
            "productions.p.items[2].tls",
            "has `role: server`; an mllp_out makes connections and needs a configuration with `role: client`",
        ),
        ("tls role missing", format!("tls:\n  c:\n    ca_file: ca.pem\n{}", chain_with("")), "tls.c", "has no `role`"),
        (
            "server tls without certificate",
            format!("tls:\n  s:\n    role: server\n{}", chain_with("")),
            "tls.s",
            "needs `cert_file` and `key_file`",
        ),
        (
            "certificate without key",
            format!("tls:\n  c:\n    role: client\n    cert_file: me.crt\n{}", chain_with("")),
            "tls.c",
            "has `cert_file` but no `key_file`",
        ),
        (
            "two key passwords",
            format!(
                "tls:\n  c:\n    role: client\n    cert_file: me.crt\n    key_file: me.key\n    key_password_env: PW\n    key_password_file: pw.txt\n{}",
                chain_with("")
            ),
            "tls.c.key_password_file",
            "keep one",
        ),
        (
            "password in env name",
            format!(
                "tls:\n  c:\n    role: client\n    cert_file: me.crt\n    key_file: me.key\n    key_password_env: hunter2!\n{}",
                chain_with("")
            ),
            "tls.c.key_password_env",
            "not an environment variable name",
        ),
        (
            "server verifies without ca",
            format!(
                "tls:\n  s:\n    role: server\n    cert_file: a.crt\n    key_file: a.key\n    verify_peer: require\n{}",
                chain_with("")
            ),
            "tls.s",
            "needs `ca_file`",
        ),
        (
            "tls version",
            format!("tls:\n  c:\n    role: client\n    min_version: 1.1\n{}", chain_with("")),
            "tls.c.min_version",
            "use \"1.2\" or \"1.3\"",
        ),
        (
            "test certificates without their files",
            format!(
                "tls:\n  c:\n    role: client\n    ca_file: ca.crt\n    create_if_missing: true\n{}",
                chain_with("")
            ),
            "tls.c.create_if_missing",
            "needs `ca_file`, `cert_file` and `key_file`",
        ),
        (
            "tls name",
            format!("tls:\n  Lab Client:\n    role: client\n{}", chain_with("")),
            "tls.\"Lab Client\"",
            "not a valid id",
        ),
    ];
    let mut failures = Vec::new();
    for (what, yaml, path, phrase) in &cases {
        let found = match parse(yaml) {
            Ok(_) => {
                failures.push(format!("{what}: loaded without problems"));
                continue;
            }
            Err(err) => err.problems,
        };
        if !found.iter().any(|p| p.path == *path && p.message.contains(phrase)) {
            let listed: Vec<String> = found.iter().map(|p| format!("    {p}")).collect();
            failures.push(format!("{what}: want {path:?} with {phrase:?}, got:\n{}", listed.join("\n")));
        }
        // Every problem has a position and says what would be valid.
        for p in &found {
            if p.position.is_none() || !p.message.contains(';') {
                failures.push(format!("{what}: problem without position or advice: {p}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn ports_conflict_across_productions_and_both_paths_are_named() {
    let yaml = "\
productions:
  a:
    items:
      - name: In
        kind: mllp_in
        port: 2575
        targets: [Out]
      - name: Out
        kind: file_out
        path: out
  b:
    items:
      - name: Other in
        kind: mllp_in
        host: localhost
        port: 2575
        targets: [Out]
      - name: Listener on another address
        kind: mllp_in
        host: ::1
        port: 2576
        targets: [Out]
      - name: Out
        kind: file_out
        path: out
";
    let found = problems(yaml);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "productions.b.items[0].port");
    assert!(found[0].message.contains("productions.a.items[0].port"), "{}", found[0].message);
    assert_eq!(found[0].position, Some(Position { line: 16, column: 15 }));
    // Different addresses that do not overlap may share a port number.
    let ok = yaml.replace("host: localhost\n        port: 2575", "host: 127.0.0.2\n        port: 2576");
    assert!(parse(&ok).is_ok());
}

#[test]
fn all_problems_are_reported_at_once() {
    let yaml = "\
productions:
  Bad Id:
    items:
      - name: In
        kind: mllp_in
        port: 0
        targets: [Routr]
      - name: Router
        kind: rooter
      - name: Out
        kind: mllp_out
        port: 6661
        retry_interval: soon
store:
  durability: maybe
";
    let err = parse(yaml).unwrap_err();
    let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
    for want in [
        "productions.\"Bad Id\"",
        "productions.\"Bad Id\".items[0].port",
        "productions.\"Bad Id\".items[1].kind",
        "productions.\"Bad Id\".items[2]",
        "productions.\"Bad Id\".items[2].retry_interval",
        "productions.\"Bad Id\".items[0].targets[0]",
        "store.durability",
    ] {
        assert!(paths.contains(&want), "missing {want} in {paths:#?}");
    }
    // One line per problem, each naming the file.
    let text = err.to_string();
    assert_eq!(text.lines().count(), err.problems.len());
    assert!(text.lines().all(|l| l.starts_with(&format!("{SOURCE}: "))), "{text}");
    assert!(
        text.contains(&format!(
            "{SOURCE}: productions.\"Bad Id\".items[0].port: port 0 is not a valid port; use a port number from 1 to \
             65535 (line 6, column 15)"
        )),
        "{text}"
    );
}

/// Every key of every mapping, each with a bad value: the loader learns
/// the valid keys from what it reads, so a reader that gave up early (on
/// a bad value or a missing key) would report a valid key as unknown.
const EVERY_KEY_WRONG: &str = r#"
store:
  durability: sometimes
  retention_days: -1
  background_priority: high
tls:
  a:
    role: both
    ca_file: 5
    cert_file: 5
    key_file: 5
    key_password_env: "1bad"
    key_password_file: 5
    verify_peer: maybe
    verify_host: perhaps
    server_name: ""
    min_version: "1.1"
    create_if_missing: sure
productions:
  p:
    name: ""
    autostart: maybe
    stop_timeout: soon
    items:
      - name: "bad/name"
        kind: mllp_in
        enabled: maybe
        targets: 5
        host: "tcp://x"
        port: 0
        tls: ""
        ack_mode: sometimes
        application_ack_timeout: soon
        max_connections: 0
        max_connections_per_peer: 0
        first_byte_timeout: soon
        idle_timeout: soon
        read_timeout: soon
        max_message_size: huge
      - name: R
        kind: router
        no_match: maybe
        rules:
          - when: "MSH-9.1 =="
            send: []
            discard: false
            transform:
              - set: MSH-1
                value: 5
                copy: PID-1
                to: x
                clear: y
              - value: x
                to: y
      - name: O
        kind: mllp_out
        host: "a:b"
        port: 70000
        tls: ""
        stay_connected: maybe
        connect_timeout: soon
        response_timeout: soon
        retry_interval: soon
        failure_timeout: -5
        pipeline_depth: 0
        reply_code_actions: ":Q=Z"
      - name: F
        kind: file_in
        path: 5
        pattern: "a/b"
        archive_path: 5
        poll_interval: soon
      - name: W
        kind: file_out
        path: 5
        filename: "{nope}"
"#;

#[test]
fn every_key_is_known_even_when_its_mapping_has_other_mistakes() {
    let found = problems(EVERY_KEY_WRONG);
    let unknown: Vec<&Problem> = found.iter().filter(|p| p.message.contains("unknown key")).collect();
    assert!(unknown.is_empty(), "{unknown:#?}");
    // The values were read: most bad values are reported.
    assert!(found.len() >= 40, "{found:#?}");
    let step = "productions.p.items[1].rules[0].transform[1]";
    assert!(found.iter().any(|p| p.path == step && p.message.contains("has no operation")), "{found:#?}");
}

#[test]
fn an_unknown_key_is_reported_in_every_kind_of_mapping() {
    // (the line after which `zzz: 1` is added at the same indentation,
    // the path it is reported at, a valid key the message lists)
    let places = [
        ("store:", "store.zzz", "retention_days"),
        ("    role: both", "tls.a.zzz", "ca_file"),
        ("    name: \"\"", "productions.p.zzz", "stop_timeout"),
        ("        kind: mllp_in", "productions.p.items[0].zzz", "max_message_size"),
        ("        kind: router", "productions.p.items[1].zzz", "no_match"),
        ("          - when: \"MSH-9.1 ==\"", "productions.p.items[1].rules[0].zzz", "discard"),
        ("              - value: x", "productions.p.items[1].rules[0].transform[1].zzz", "clear"),
        ("        kind: mllp_out", "productions.p.items[2].zzz", "reply_code_actions"),
        ("        kind: file_in", "productions.p.items[3].zzz", "archive_path"),
        ("        kind: file_out", "productions.p.items[4].zzz", "filename"),
    ];
    for (after, path, listed) in places {
        let line = EVERY_KEY_WRONG.lines().find(|l| l.trim_end() == after).unwrap();
        let pad = " ".repeat(line.len() - line.trim_start().trim_start_matches("- ").len());
        let yaml = if after == "store:" {
            EVERY_KEY_WRONG.replacen("store:\n", "store:\n  zzz: 1\n", 1)
        } else {
            EVERY_KEY_WRONG.replacen(&format!("{line}\n"), &format!("{line}\n{pad}zzz: 1\n"), 1)
        };
        let found = problems(&yaml);
        let hit = found.iter().find(|p| p.path == path);
        let Some(hit) = hit else { panic!("no problem at {path}: {found:#?}") };
        assert!(hit.message.starts_with("unknown key `zzz`"), "{hit:?}");
        assert!(hit.message.contains(listed), "{path}: {}", hit.message);
        let unknown = found.iter().filter(|p| p.message.contains("unknown key")).count();
        assert_eq!(unknown, 1, "{path}: {found:#?}");
    }
    // The top level too.
    let found = problems(&format!("zzz: 1\n{EVERY_KEY_WRONG}"));
    assert!(found.iter().any(|p| p.path == "zzz" && p.message.contains("valid keys are: store, tls, productions")));
}

#[test]
fn yaml_syntax_errors_report_line_and_column() {
    let yaml = "productions:\n  p:\n    items:\n      - name: In\n      kind: mllp_in\n";
    let found = problems(yaml);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].path, "");
    assert_eq!(found[0].position, Some(Position { line: 5, column: 7 }));
    assert!(found[0].message.starts_with("YAML syntax error: "), "{}", found[0].message);
    let text = parse(yaml).unwrap_err().to_string();
    assert!(text.starts_with(&format!("{SOURCE}: line 5, column 7: YAML syntax error: ")), "{text}");

    let found = problems("productions: [unclosed\n");
    assert!(found[0].position.is_some() && found[0].message.contains("YAML syntax error"), "{found:?}");
}

#[test]
fn an_unreadable_file_is_a_config_error() {
    let err = config::load(Path::new("/nonexistent/productions.yaml")).unwrap_err();
    assert_eq!(err.file, PathBuf::from("/nonexistent/productions.yaml"));
    assert!(err.to_string().starts_with("/nonexistent/productions.yaml: cannot read the productions file"), "{err}");
    assert!(err.to_string().contains("check the path"), "{err}");
}

#[test]
fn an_empty_file_says_what_is_needed() {
    for text in ["", "# nothing yet\n"] {
        let found = problems(text);
        assert!(found[0].message.contains("the file is empty"), "{found:?}");
    }
}

fn warnings(yaml: &str) -> Vec<Problem> {
    match parse(yaml) {
        Ok(config) => config.warnings().to_vec(),
        Err(err) => panic!("{err}"),
    }
}

#[test]
fn failure_timeout_forever_loads_with_a_warning() {
    for forever in ["forever", "-1", "\"-1\""] {
        let yaml = chain_edit("  port: 6661\n", &format!("  port: 6661\n  failure_timeout: {forever}\n"));
        let config = parse(&yaml).unwrap();
        let ItemKind::MllpOut(out) = &config.productions[0].items[2].kind else { panic!() };
        assert_eq!(out.failure_timeout, None, "{forever}");
        let w = config.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].path, "productions.p.items[2].failure_timeout");
        assert!(
            w[0].message.contains(
                "messages are retried forever and the queue never drains while the receiver rejects; set a finite \
                 failure_timeout"
            ),
            "{}",
            w[0].message
        );
    }
}

#[test]
fn other_warnings() {
    let cases = [
        (chain_edit("  targets: [Router]\n", ""), "productions.p.items[0]", "has no `targets`"),
        (
            chain_with("- name: Spare\n  kind: mllp_out\n  host: spare\n  port: 7000\n"),
            "productions.p.items[3].name",
            "never receives",
        ),
        (
            chain_edit("    - send: [Out]\n", "    - send: [Out]\n    - discard: true\n"),
            "productions.p.items[1].rules[1]",
            "never used",
        ),
        (
            chain_with("- name: Files\n  kind: file_out\n  path: out\n  filename: \"{message_type}.hl7\"\n"),
            "productions.p.items[3].filename",
            "same file name",
        ),
        (
            chain_edit("  port: 2575\n", "  port: 2575\n  application_ack_timeout: 5s\n"),
            "productions.p.items[0].application_ack_timeout",
            "ack_mode: application",
        ),
    ];
    for (yaml, path, phrase) in cases {
        let found = warnings(&yaml);
        assert!(found.iter().any(|w| w.path == path && w.message.contains(phrase)), "{path} {phrase}: {found:#?}");
    }
}

#[test]
fn durations_and_sizes_parse() {
    for (text, want) in [
        ("500ms", Duration::from_millis(500)),
        ("10s", Duration::from_secs(10)),
        ("5m", Duration::from_secs(300)),
        ("1h", Duration::from_secs(3600)),
        ("1d", Duration::from_secs(86_400)),
        ("1m30s", Duration::from_secs(90)),
        ("45", Duration::from_secs(45)),
    ] {
        assert_eq!(config::parse_duration(text), Ok(want), "{text}");
        assert_eq!(config::parse_duration(&config::format_duration(want)), Ok(want));
    }
    assert!(config::parse_duration("ten seconds").unwrap_err().contains("500ms, 10s, 5m"));
    for (text, want) in [("16MiB", 16u64 << 20), ("512KiB", 512 << 10), ("1MB", 1_000_000), ("2048", 2048)] {
        assert_eq!(config::parse_size(text), Ok(want), "{text}");
    }
    // In the file, a number is seconds (durations) or bytes (sizes).
    let yaml = chain_edit("  port: 2575\n", "  port: 2575\n  idle_timeout: 90\n  max_message_size: 1048576\n");
    let config = parse(&yaml).unwrap();
    let ItemKind::MllpIn(i) = &config.productions[0].items[0].kind else { panic!() };
    assert_eq!(i.idle_timeout, Duration::from_secs(90));
    assert_eq!(i.max_message_size, 1 << 20);
}

#[test]
fn relative_paths_follow_the_productions_file() {
    let items =
        "- name: In\n  kind: file_in\n  path: in\n  targets: [Out]\n- name: Out\n  kind: file_out\n  path: ../out\n";
    let yaml = with_items(items);
    let config = config::parse(Path::new("conf/prod.yaml"), &yaml).unwrap();
    let ItemKind::FileIn(i) = &config.productions[0].items[0].kind else { panic!() };
    assert_eq!(i.path, PathBuf::from("conf/in"));
    let ItemKind::FileOut(o) = &config.productions[0].items[1].kind else { panic!() };
    assert_eq!(o.path, PathBuf::from("conf/../out"));
    // A file named without a folder: paths stay relative to the working directory.
    let config = config::parse(Path::new("prod.yaml"), &yaml).unwrap();
    let ItemKind::FileIn(i) = &config.productions[0].items[0].kind else { panic!() };
    assert_eq!(i.path, PathBuf::from("in"));
}

#[test]
fn fixtures_match_their_expectations() {
    // Each fixture starts with `# expect: <path> | <phrase>` lines, or
    // `# expect: ok`.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    assert!(!entries.is_empty());
    for file in entries {
        let text = std::fs::read_to_string(&file).unwrap();
        let expects: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# expect: ")).collect();
        assert!(!expects.is_empty(), "{} has no `# expect:` line", file.display());
        let result = config::load(&file);
        if expects == ["ok"] {
            if let Err(err) = result {
                panic!("{err}");
            }
            continue;
        }
        let Err(err) = result else { panic!("{} loaded", file.display()) };
        assert_eq!(err.problems.len(), expects.len(), "{}:\n{err}", file.display());
        for expect in expects {
            let (path, phrase) = expect.split_once(" | ").unwrap();
            assert!(
                err.problems.iter().any(|p| p.path == path && p.message.contains(phrase)),
                "{}: want {path} with {phrase:?}:\n{err}",
                file.display()
            );
        }
    }
}

#[test]
fn listener_flood_limits_have_defaults_and_bounds() {
    let config = parse(&chain_with("")).unwrap();
    let ItemKind::MllpIn(defaults) = &config.productions[0].items[0].kind else { panic!() };
    assert_eq!(defaults.first_byte_timeout, Duration::from_secs(10));
    assert_eq!(defaults.max_connections_per_peer, 10);

    let yaml = chain_edit("  port: 2575\n", "  port: 2575\n  first_byte_timeout: 2s\n  max_connections_per_peer: 3\n");
    let config = parse(&yaml).unwrap();
    let ItemKind::MllpIn(set) = &config.productions[0].items[0].kind else { panic!() };
    assert_eq!((set.first_byte_timeout, set.max_connections_per_peer), (Duration::from_secs(2), 3));

    for (setting, path, phrase) in [
        ("max_connections_per_peer: 0", "max_connections_per_peer", "0 is out of range"),
        ("first_byte_timeout: 0s", "first_byte_timeout", "0"),
        ("first_byte_timeout: soon", "first_byte_timeout", "soon"),
    ] {
        let found = problems(&chain_edit("  port: 2575\n", &format!("  port: 2575\n  {setting}\n")));
        assert_eq!(found.len(), 1, "{setting}: {found:?}");
        assert_eq!(found[0].path, format!("productions.p.items[0].{path}"), "{setting}");
        assert!(found[0].message.contains(phrase), "{setting}: {}", found[0].message);
    }
}

#[test]
fn a_listener_fed_by_an_operation_of_the_same_file_is_known() {
    // The demo's lab is fed by `Lab out` over 127.0.0.1.
    let demo = config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo.yaml")).unwrap();
    assert_eq!(demo.fed_by_own_operations(), [("lab".to_owned(), "Lab in".to_owned())]);

    let two = |out_host: &str, in_host: &str, in_port: u16| {
        format!(
            "productions:\n  a:\n    items:\n{}  b:\n    items:\n{}",
            indent(
                &format!(
                    "- name: Out\n  kind: mllp_out\n  host: \"{out_host}\"\n  port: 6661\n  failure_timeout: 15s\n"
                ),
                6
            ),
            indent(
                &format!(
                    "- name: In\n  kind: mllp_in\n  host: \"{in_host}\"\n  port: {in_port}\n  targets: [Files]\n\
                     - name: Files\n  kind: file_out\n  path: /tmp/files\n"
                ),
                6
            )
        )
    };
    let fed = |yaml: String| parse(&yaml).unwrap_or_else(|e| panic!("{e}")).fed_by_own_operations();
    let lab = vec![("b".to_owned(), "In".to_owned())];
    assert_eq!(fed(two("localhost", "0.0.0.0", 6661)), lab);
    assert_eq!(fed(two("127.0.0.1", "127.0.0.1", 6661)), lab);
    assert_eq!(fed(two("::1", "::", 6661)), lab);
    // Another machine, another port, or an address the listener does not
    // take: messages from outside.
    assert!(fed(two("lab.example.org", "0.0.0.0", 6661)).is_empty());
    assert!(fed(two("127.0.0.1", "0.0.0.0", 6662)).is_empty());
    assert!(fed(two("::1", "0.0.0.0", 6661)).is_empty());
}

#[test]
fn rules_and_reply_code_actions_are_compiled_while_loading_with_positions() {
    // A bad condition: path, line and column of the value, and the
    // character where reading stopped.
    let found = problems(&chain_edit("    - send: [Out]\n", "    - when: MSH-9.1 == \"ADT\"\n      send: [Out]\n"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "productions.p.items[1].rules[0].when");
    assert_eq!(found[0].position, Some(Position { line: 11, column: 19 }), "{:?}", found[0]);
    assert!(found[0].message.contains("at character"), "{}", found[0].message);

    // Bad reply code actions, and both at once: every problem is reported.
    let bad_actions = "  port: 6661\n  reply_code_actions: \":?E=Q\"\n";
    let found = problems(&chain_edit("  port: 6661\n", bad_actions));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "productions.p.items[2].reply_code_actions");
    assert!(found[0].position.is_some());
    assert!(found[0].message.contains("the default is"), "{}", found[0].message);
    let both =
        with_items(&CHAIN.replacen("    - send: [Out]\n", "    - when: PID-3 in [\n      send: [Out]\n", 1).replacen(
            "  port: 6661\n",
            bad_actions,
            1,
        ));
    assert_eq!(problems(&both).len(), 2);

    // A good condition arrives compiled.
    let config =
        parse(&chain_edit("    - send: [Out]\n", "    - when: MSH-9.1 = \"ADT\"\n      send: [Out]\n")).unwrap();
    let ItemKind::Router(router) = &config.productions[0].items[1].kind else { panic!() };
    assert_eq!(router.rules[0].when.as_ref().map(ToString::to_string).as_deref(), Some("MSH-9.1 = \"ADT\""));
}
