//! The add-on's files against the rules the Supervisor and the add-on
//! linter apply (see the linter's schema and the Supervisor's loader): the
//! manifest, its options schema and translations, the files the store
//! shows, the Dockerfile and its build context, the s6-overlay service and
//! the AppArmor profile. A manifest the Supervisor rejects means no
//! install, and it says so only in its own log.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Map, Value, json};
use switchboard::backup;
use switchboard::ha::AddonOptions;

pub(super) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(super) fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub(super) fn yaml(path: &str) -> Value {
    serde_saphyr::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The manifest's keys the linter knows, with their defaults (a key set
/// to its default fails the linter): its `config.schema.json`.
const LINTER_KEYS: &[(&str, Option<&str>)] = &[
    ("advanced", Some("false")),
    ("apparmor", Some("true")),
    ("arch", None),
    ("audio", Some("false")),
    ("auth_api", Some("false")),
    ("auto_uart", Some("false")),
    ("backup", Some("\"hot\"")),
    ("backup_exclude", None),
    ("backup_post", None),
    ("backup_pre", None),
    ("boot", Some("\"auto\"")),
    ("breaking_versions", None),
    ("codenotary", None),
    ("description", None),
    ("devices", None),
    ("devicetree", Some("false")),
    ("discovery", None),
    ("docker_api", Some("false")),
    ("environment", None),
    ("full_access", Some("false")),
    ("gpio", Some("false")),
    ("hassio_api", Some("false")),
    ("hassio_role", Some("\"default\"")),
    ("homeassistant", None),
    ("homeassistant_api", Some("false")),
    ("host_dbus", Some("false")),
    ("host_ipc", Some("false")),
    ("host_network", Some("false")),
    ("host_pid", Some("false")),
    ("host_uts", Some("false")),
    ("image", None),
    ("ingress", Some("false")),
    ("ingress_entry", None),
    ("ingress_port", Some("8099")),
    ("ingress_stream", Some("false")),
    ("init", Some("true")),
    ("journald", Some("false")),
    ("kernel_modules", Some("false")),
    ("legacy", Some("false")),
    ("machine", None),
    ("map", None),
    ("name", None),
    ("options", Some("{}")),
    ("panel_admin", Some("true")),
    ("panel_icon", Some("\"mdi:puzzle\"")),
    ("panel_title", None),
    ("ports", None),
    ("ports_description", None),
    ("privileged", None),
    ("realtime", Some("false")),
    ("schema", Some("{}")),
    ("services", None),
    ("slug", None),
    ("stage", Some("\"stable\"")),
    ("startup", Some("\"application\"")),
    ("stdin", Some("false")),
    ("timeout", Some("10")),
    ("tmpfs", Some("false")),
    ("uart", Some("false")),
    ("udev", Some("false")),
    ("ulimits", Some("{}")),
    ("url", None),
    ("usb", Some("false")),
    ("version", None),
    ("video", Some("false")),
    ("watchdog", None),
    ("webui", None),
];

fn cargo_version() -> String {
    let manifest = read("Cargo.toml");
    let package = manifest.split("\n[").next().unwrap_or_default();
    let line = package.lines().find(|l| l.starts_with("version")).expect("a version in [package]");
    line.split('"').nth(1).expect("a quoted version").to_owned()
}

#[test]
fn the_manifest_passes_the_supervisor_and_the_linter() {
    let config = yaml("config.yaml");
    let config = config.as_object().expect("config.yaml is a mapping");
    for (key, value) in config {
        let known = LINTER_KEYS.iter().find(|(k, _)| k == key);
        let Some((_, default)) = known else { panic!("{key}: not a key the linter knows") };
        if let Some(default) = default {
            let default: Value = serde_json::from_str(default).unwrap();
            assert_ne!(value, &default, "{key} is set to its default value; the linter wants it removed");
        }
    }
    for key in ["name", "version", "slug", "description", "arch"] {
        assert!(config.contains_key(key), "{key} is required");
    }
    let version = config["version"].as_str().expect("version is a string (quoted)");
    assert_eq!(version, cargo_version(), "config.yaml's version is not Cargo.toml's");
    assert_eq!(config["slug"], "switchboard");
    assert_eq!(config["arch"], json!(["aarch64", "amd64"]), "armhf, armv7 and i386 are deprecated");
    assert_eq!(config["init"], false, "the base image runs s6-overlay as PID 1");
    assert_eq!(config["services"], json!(["mqtt:need"]));
    assert_eq!(config["ingress"], true);
    for absent in ["ingress_port", "watchdog", "webui", "hassio_api", "build_from"] {
        assert!(!config.contains_key(absent), "{absent} should not be written");
    }
    assert!(config["panel_icon"].as_str().is_some_and(|i| i.starts_with("mdi:")));
    assert!(config["panel_title"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(config["map"], json!(["addon_config:rw", "ssl"]), "addon_config, not app_config, for older Supervisors");
    let timeout = config["timeout"].as_u64().expect("a stop timeout");
    assert!((10..=300).contains(&timeout));
    let ports = config["ports"].as_object().expect("ports");
    assert!(ports.contains_key("2575/tcp"), "the MLLP port users map");
    for (port, host) in ports {
        let (number, proto) = port.split_once('/').expect("PORT/PROTOCOL");
        assert!(number.parse::<u16>().is_ok_and(|n| n > 0) && ["tcp", "udp"].contains(&proto), "{port}");
        assert!(host.is_null() || host.as_u64().is_some_and(|h| (1..=65535).contains(&h)), "{port}: {host}");
    }
    let image = config["image"].as_str().expect("image");
    assert!(image.contains("{arch}"), "{image}");

    // No unquoted yes/no/on/off: YAML 1.1, which the Supervisor reads,
    // takes them for booleans.
    for (n, line) in read("config.yaml").lines().enumerate() {
        let value = line.split_once(": ").map_or(line.trim().trim_start_matches("- "), |(_, v)| v).trim();
        let bare = ["yes", "no", "on", "off", "y", "n"].iter().any(|w| value.eq_ignore_ascii_case(w));
        assert!(!bare, "config.yaml line {}: {line:?} must be quoted", n + 1);
    }
}

/// `fnmatch` for one path component: `*` and `?`.
fn component_matches(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            component_matches(&pattern[1..], name) || (!name.is_empty() && component_matches(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => component_matches(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => component_matches(&pattern[1..], &name[1..]),
        _ => false,
    }
}

/// The Supervisor's `backup_exclude` test: Python's `PurePath.match`,
/// which matches a relative pattern from the right, one component each.
fn excluded(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('/').collect();
    let path: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if pattern.first().is_some_and(|c| c.is_empty()) || pattern.len() > path.len() {
        return false;
    }
    pattern.iter().rev().zip(path.iter().rev()).all(|(p, c)| component_matches(p.as_bytes(), c.as_bytes()))
}

#[test]
fn backups_leave_the_live_store_out_and_take_its_copy() {
    let config = yaml("config.yaml");
    let patterns: Vec<&str> =
        config["backup_exclude"].as_array().expect("backup_exclude").iter().filter_map(Value::as_str).collect();
    for pattern in &patterns {
        assert!(!pattern.starts_with('/'), "{pattern}: a pattern starting with / never matches");
        assert!(!pattern.contains("**"), "{pattern}: ** is not recursive there");
    }
    let store = format!("/data/{}", backup::STORE_FILE);
    let left_out = |path: &str| patterns.iter().any(|p| excluded(p, path));
    for suffix in
        ["", "-wal", "-shm", "-inbound-0", "-inbound-1", "-deliveries", "-backup.lock", "-backup/switchboard.db"]
    {
        assert!(left_out(&format!("{store}{suffix}")), "{store}{suffix} would be in backups, half written");
    }
    for kept in [format!("/data/{}", backup::COPY_FILE), "/data/options.json".into(), "/config/productions.yaml".into()]
    {
        assert!(!left_out(&kept), "{kept} would be left out of backups");
    }
    let pre = config["backup_pre"].as_str().expect("backup_pre");
    let post = config["backup_post"].as_str().expect("backup_post");
    assert_eq!(pre, "/usr/bin/switchboard backup --data-dir /data");
    assert_eq!(post, "/usr/bin/switchboard backup --data-dir /data --remove");
    assert!(config.get("backup").is_none(), "backup_pre and backup_post need hot backups");
}

/// A schema type of the Supervisor's grammar.
fn valid_type(text: &str) -> bool {
    let t = text.strip_suffix('?').unwrap_or(text);
    let args = |name: &str| t.strip_prefix(name).and_then(|r| r.strip_prefix('(')).and_then(|r| r.strip_suffix(')'));
    let range = |inside: &str, parse: fn(&str) -> bool| {
        inside.split_once(',').is_some_and(|(a, b)| (a.is_empty() || parse(a)) && (b.is_empty() || parse(b)))
    };
    match t {
        "str" | "password" | "bool" | "email" | "url" | "port" | "int" | "float" | "device" => true,
        _ if t.starts_with("int(") => args("int").is_some_and(|i| range(i, |n| n.parse::<i64>().is_ok())),
        _ if t.starts_with("float(") => args("float").is_some_and(|i| range(i, |n| n.parse::<f64>().is_ok())),
        // Anchored at the start only: the pattern must end with `$`.
        _ if t.starts_with("match(") => args("match").is_some_and(|r| r.starts_with('^') && r.ends_with('$')),
        _ if t.starts_with("list(") => args("list").is_some_and(|l| l.split('|').all(|a| !a.is_empty())),
        _ if t.starts_with("device(") => args("device").is_some_and(|d| d.starts_with("subsystem=")),
        _ => false,
    }
}

fn optional(schema: &Value) -> bool {
    match schema {
        Value::String(s) => s.ends_with('?'),
        Value::Array(a) => a.first().is_some_and(optional),
        _ => false,
    }
}

/// Checks one schema entry (a type, a list of one element, or a mapping
/// one level deep) and returns a value of that type for an options file.
fn check_schema(key: &str, schema: &Value, nested: bool) -> Value {
    match schema {
        Value::String(t) => {
            assert!(valid_type(t), "{key}: {t:?} is not a schema type");
            let t = t.trim_end_matches('?');
            match t {
                "bool" => json!(true),
                "port" => json!(1884),
                "password" => json!("a-secret-of-24-characters"),
                _ if t.starts_with("int(") => {
                    let min = t[4..].split(',').next().unwrap_or_default();
                    json!(min.parse::<i64>().unwrap_or(1))
                }
                _ if t.starts_with("list(") => json!(t[5..t.len() - 1].split('|').next().unwrap()),
                _ if t.starts_with("match(") => match key {
                    "productions_file" => json!("feeds.yaml"),
                    "instance_id" => json!("lab"),
                    other => panic!("{other}: give the test a value that matches {t}"),
                },
                _ => json!("text"),
            }
        }
        Value::Array(element) => {
            assert_eq!(element.len(), 1, "{key}: a list holds one element type");
            json!([check_schema(key, &element[0], nested)])
        }
        Value::Object(fields) => {
            assert!(!nested, "{key}: the Supervisor takes mappings one level deep");
            let sample: Map<String, Value> =
                fields.iter().map(|(k, v)| (k.clone(), check_schema(&format!("{key}.{k}"), v, true))).collect();
            Value::Object(sample)
        }
        other => panic!("{key}: {other} is not a schema entry"),
    }
}

#[test]
fn every_option_has_a_schema_entry_a_translation_and_a_meaning() {
    let config = yaml("config.yaml");
    let options = config["options"].as_object().expect("options");
    let schema = config["schema"].as_object().expect("schema");
    let mut sample = Map::new();
    for (key, entry) in schema {
        sample.insert(key.clone(), check_schema(key, entry, false));
        if optional(entry) {
            assert!(!options.contains_key(key), "{key} is optional: it takes no default in options");
        } else {
            assert!(options.contains_key(key), "{key} is required: the Supervisor refuses to start without it");
        }
    }
    for (key, value) in options {
        let entry = schema.get(key).unwrap_or_else(|| panic!("{key}: options without schema are dropped"));
        match (entry, value) {
            (Value::String(t), Value::String(v)) if t.starts_with("list(") => {
                assert!(t[5..t.len() - 1].split('|').any(|a| a == v), "{key}: {v} is not one of {t}");
            }
            (Value::String(t), Value::Number(n)) if t.starts_with("int(") => {
                let inside = &t[4..t.len() - 1];
                let (min, max) = inside.split_once(',').unwrap();
                let n = n.as_i64().unwrap();
                assert!(min.parse::<i64>().is_ok_and(|m| n >= m) && max.parse::<i64>().is_ok_and(|m| n <= m));
            }
            (Value::String(_), Value::String(_)) | (Value::Array(_), Value::Array(_)) => {}
            (Value::Object(_), Value::Object(o)) => assert!(o.is_empty(), "{key}: its fields are optional"),
            _ => panic!("{key}: {value} does not fit {entry}"),
        }
    }

    // Switchboard knows every key the schema lets the Supervisor write.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("options.json");
    std::fs::write(&file, Value::Object(sample).to_string()).unwrap();
    let read = AddonOptions::read(&file).unwrap_or_else(|e| panic!("{e}"));
    assert!(read.unknown_keys().is_empty(), "options Switchboard does not know: {:?}", read.unknown_keys());

    // Every option has a name and a description, and nothing else is
    // translated (one bad entry discards the whole file).
    let translations = yaml("translations/en.yaml");
    let top: BTreeSet<&str> = translations.as_object().expect("a mapping").keys().map(String::as_str).collect();
    assert_eq!(top, BTreeSet::from(["configuration", "network"]));
    let configuration = translations["configuration"].as_object().expect("configuration");
    let keys = |m: &Map<String, Value>| m.keys().cloned().collect::<BTreeSet<_>>();
    assert_eq!(keys(configuration), keys(schema), "translated options and schema differ");
    for (key, entry) in configuration {
        assert!(entry["name"].as_str().is_some_and(|n| !n.is_empty()), "{key} has no name");
        assert!(entry["description"].as_str().is_some_and(|d| !d.is_empty()), "{key} has no description");
    }
    let network = translations["network"].as_object().expect("network");
    assert_eq!(keys(network), keys(config["ports"].as_object().unwrap()), "every port needs a description");
    assert!(network.values().all(|d| d.as_str().is_some_and(|d| !d.is_empty())));
}

/// A PNG's width and height.
fn png_size(path: &str) -> (u32, u32) {
    let bytes = std::fs::read(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && &bytes[12..16] == b"IHDR", "{path} is not a PNG");
    let at = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    (at(16), at(20))
}

#[test]
fn the_repository_holds_what_the_add_on_store_shows() {
    let repository = yaml("repository.yaml");
    for key in ["name", "url", "maintainer"] {
        assert!(repository[key].as_str().is_some_and(|v| !v.is_empty()), "repository.yaml: {key}");
    }
    for file in
        ["README.md", "DOCS.md", "CHANGELOG.md", "Dockerfile", "apparmor.txt", "addon/icon.svg", "addon/logo.svg"]
    {
        assert!(root().join(file).is_file(), "{file} is missing");
    }
    assert!(
        read("CHANGELOG.md").contains(&format!("## {}", cargo_version())),
        "CHANGELOG.md: no entry for this version"
    );
    assert_eq!(png_size("icon.png"), (128, 128));
    let (w, h) = png_size("logo.png");
    assert!((200..=300).contains(&w) && (80..=120).contains(&h), "logo.png is {w}x{h}, not about 250x100");
}

/// The Supervisor reads every `config.*` outside dot folders and `rootfs`
/// as an add-on, and `build.*` and `repository.*` files anywhere (the first
/// found wins), when they end in `.yaml`, `.yml` or `.json`: the tree holds
/// none but the add-on's own (`build.yaml` is deprecated and absent).
#[test]
fn no_other_file_is_read_as_an_add_on_or_a_repository() {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                if name != ".git" && name != "target" {
                    walk(&path, found);
                }
                continue;
            }
            let (stem, ext) = name.rsplit_once('.').unwrap_or((&name, ""));
            if ["config", "build", "repository"].contains(&stem) && ["yaml", "yml", "json"].contains(&ext) {
                found.push(path.strip_prefix(root()).unwrap().to_owned());
            }
        }
    }
    let mut found = Vec::new();
    walk(&root(), &mut found);
    found.sort();
    assert_eq!(found, [PathBuf::from("config.yaml"), PathBuf::from("repository.yaml")]);
}

#[test]
fn the_dockerfile_builds_the_binary_for_each_architecture_natively() {
    let dockerfile = read("Dockerfile");
    let lines: Vec<&str> =
        dockerfile.lines().filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty()).collect();
    assert_eq!(lines[0], "ARG BUILD_FROM=ghcr.io/home-assistant/base:3.24");
    assert!(lines.contains(&"FROM ${BUILD_FROM}"));
    assert!(lines.iter().any(|l| l.starts_with("FROM rust:1-alpine ")), "the build stage");
    assert!(!lines.iter().any(|l| l.contains("--platform")), "each architecture is built natively");
    assert!(dockerfile.contains("--profile dist") && dockerfile.contains("--locked"));
    // A Supervisor that builds the image itself may use Docker's classic
    // builder, which refuses BuildKit's RUN --mount.
    assert!(!lines.iter().any(|l| l.contains("--mount=")), "no BuildKit-only instructions");
    assert!(lines.contains(&"COPY addon/rootfs /"));
    for label in ["io.hass.type=\"app\"", "io.hass.version=", "io.hass.arch="] {
        assert!(dockerfile.contains(label), "label {label}");
    }
    assert!(!lines.iter().any(|l| l.starts_with("ENTRYPOINT") || l.starts_with("CMD")), "the base image's /init runs");
    let health = healthcheck_command();
    assert!(health.contains("127.0.0.1") && health.contains("8099") && health.contains("/healthz"), "{health}");
    assert!(!root().join("build.yaml").exists() && !root().join("build.json").exists(), "build.yaml is deprecated");
}

/// The command of the Dockerfile's HEALTHCHECK.
pub(super) fn healthcheck_command() -> String {
    let dockerfile = read("Dockerfile").replace("\\\n", " ");
    let line = dockerfile.lines().find(|l| l.starts_with("HEALTHCHECK")).expect("a HEALTHCHECK");
    line.split_once(" CMD ").expect("HEALTHCHECK ... CMD").1.trim().to_owned()
}

/// The build context (the repository less `.dockerignore`) holds what the
/// Dockerfile's `cargo build` reads: a manifest whose declared targets all
/// have their files, and every file the binary's sources include. (Cargo
/// itself has no command that checks this short of a build.)
#[test]
fn the_build_context_holds_what_the_build_reads() {
    let ignore = read(".dockerignore");
    let patterns: Vec<&str> = ignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    for needed in ["target/", ".git/", "fuzz/"] {
        assert!(patterns.contains(&needed), ".dockerignore lacks {needed}");
    }
    let ignored = |relative: &str, is_dir: bool| {
        patterns.iter().any(|p| match p.strip_suffix('/') {
            Some(dir) => is_dir && relative == dir,
            None => !relative.contains('/') && component_matches(p.as_bytes(), relative.as_bytes()),
        })
    };
    fn copy(from: &Path, to: &Path, relative: &str, ignored: &dyn Fn(&str, bool) -> bool) {
        for entry in std::fs::read_dir(from).unwrap().map(Result::unwrap) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if relative.is_empty() { name.clone() } else { format!("{relative}/{name}") };
            let is_dir = entry.file_type().unwrap().is_dir();
            if ignored(&rel, is_dir) {
                continue;
            }
            if is_dir {
                std::fs::create_dir(to.join(&name)).unwrap();
                copy(&entry.path(), &to.join(&name), &rel, ignored);
            } else if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), to.join(&name)).unwrap();
            }
        }
    }
    let context = tempfile::tempdir().unwrap();
    copy(&root(), context.path(), "", &ignored);
    assert!(context.path().join("addon/rootfs/etc/s6-overlay/s6-rc.d/switchboard/run").is_file());
    // Cargo refuses a manifest whose declared targets lack their files,
    // whichever target is built.
    let manifest = std::fs::read_to_string(context.path().join("Cargo.toml")).expect("Cargo.toml in the context");
    assert!(context.path().join("Cargo.lock").is_file(), "--locked needs Cargo.lock");
    assert!(context.path().join("src/lib.rs").is_file() && context.path().join("src/main.rs").is_file());
    for block in manifest.split("\n[[").skip(1) {
        let (kind, body) = block.split_once("]]").expect("a [[target]] header");
        let value = |key: &str| {
            body.lines()
                .take_while(|l| !l.starts_with('['))
                .find_map(|l| l.strip_prefix(key)?.trim_start().strip_prefix('=')?.trim().split('"').nth(1))
        };
        let name = value("name").expect("a target's name");
        let folder = match kind {
            "bench" => "benches",
            "example" => "examples",
            "test" => "tests",
            _ => "src/bin",
        };
        let candidates = match value("path") {
            Some(path) => vec![path.to_owned()],
            None => vec![format!("{folder}/{name}.rs"), format!("{folder}/{name}/main.rs")],
        };
        assert!(
            candidates.iter().any(|c| context.path().join(c).is_file()),
            "[[{kind}]] {name}: the build context lacks {candidates:?}, and cargo refuses the manifest without it"
        );
    }

    // include_str!/include_bytes! of the code the binary is built from
    // (tests are not).
    fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().unwrap().is_dir() {
                if name != "tests" {
                    sources(&path, found);
                }
            } else if name.ends_with(".rs") && name != "tests.rs" {
                found.push(path);
            }
        }
    }
    let mut files = Vec::new();
    sources(&context.path().join("src"), &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let includes = ["include_str!(\"", "include_bytes!(\""].map(|m| text.split(m).skip(1));
        for part in includes.into_iter().flatten() {
            let Some((included, _)) = part.split_once('"') else { continue };
            let target = file.parent().unwrap().join(included);
            assert!(target.exists(), "{} includes {included}, which the build context lacks", file.display());
        }
    }
}

const SERVICE: &str = "addon/rootfs/etc/s6-overlay/s6-rc.d/switchboard";

#[test]
fn the_s6_service_starts_and_halts_the_container_on_a_crash() {
    let service = root().join(SERVICE);
    assert_eq!(read(&format!("{SERVICE}/type")).trim(), "longrun");
    assert!(service.join("dependencies.d/base").is_file(), "without it the service may start before the base");
    assert!(
        root().join("addon/rootfs/etc/s6-overlay/s6-rc.d/user/contents.d/switchboard").is_file(),
        "without user/contents.d/switchboard the service never starts"
    );
    for script in ["run", "finish"] {
        let path = service.join(script);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{script} is not executable");
        let check = Command::new("sh").arg("-n").arg(&path).output().unwrap();
        assert!(check.status.success(), "{script}: {}", String::from_utf8_lossy(&check.stderr));
    }
    let run = read(&format!("{SERVICE}/run"));
    assert!(run.starts_with("#!/command/with-contenv "), "run needs the container's environment");
    assert!(run.contains("\nexec switchboard run\n"), "run must exec, so that s6 signals Switchboard itself");
    // Docker copies the modes of the checkout: git must record them.
    let git = Command::new("git").args(["ls-files", "-s", "--", SERVICE]).current_dir(root()).output();
    if let Some(out) = git.ok().filter(|o| o.status.success() && !o.stdout.is_empty()) {
        let listing = String::from_utf8_lossy(&out.stdout).into_owned();
        for script in ["run", "finish"] {
            let line = listing.lines().find(|l| l.ends_with(&format!("/{script}"))).expect("tracked");
            assert!(line.starts_with("100755 "), "git records {script} as not executable: {line}");
        }
    }

    // A graceful stop needs nothing; a crash halts the container.
    let finish = |args: &[&str]| Command::new("sh").arg(service.join("finish")).args(args).output().unwrap();
    for args in [&["0"][..], &["256", "15"]] {
        let out = finish(args);
        assert!(out.status.success() && out.stderr.is_empty(), "finish {args:?}: {out:?}");
    }
    if !Path::new("/run/s6/basedir/bin/halt").exists() {
        let out = finish(&["2"]);
        assert!(String::from_utf8_lossy(&out.stderr).contains("exited with code 2: stopping the add-on"), "{out:?}");
        let out = finish(&["256", "11"]);
        assert!(String::from_utf8_lossy(&out.stderr).contains("killed by signal 11"), "{out:?}");
    }
}

#[test]
fn the_apparmor_profile_confines_the_binary_and_compiles() {
    let profile = read("apparmor.txt");
    assert!(profile.contains("/usr/bin/switchboard cx -> switchboard,"), "the binary's own profile");
    for rule in ["/data/** rwlk,", "/config/** rwk,", "/ssl/** r,", "network inet stream,"] {
        assert!(profile.contains(rule), "{rule}");
    }
    let parser = ["/sbin/apparmor_parser", "/usr/sbin/apparmor_parser"].into_iter().find(|p| Path::new(p).exists());
    let Some(parser) = parser else {
        assert!(
            std::env::var_os("SWITCHBOARD_TEST_REQUIRE_APPARMOR").is_none(),
            "apparmor_parser is not installed but SWITCHBOARD_TEST_REQUIRE_APPARMOR is set"
        );
        eprintln!("SKIPPED: apparmor_parser is not installed (apt-get install apparmor); the profile was not compiled");
        return;
    };
    let out = Command::new(parser).args(["-Q", "-K", "-T"]).arg(root().join("apparmor.txt")).output().unwrap();
    assert!(out.status.success(), "apparmor_parser: {}", String::from_utf8_lossy(&out.stderr));
}
