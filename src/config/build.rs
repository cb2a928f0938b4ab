//! The walk from the YAML tree to typed settings: every value is checked
//! against its type, every key its reader did not ask for is reported as
//! unknown (see [`Fields`]), and the references between items are
//! collected for [`super::check`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::model::*;
use super::reader::{
    Ctx, Fields, Ref, boolean, choice, closest, duration, file_path, integer, join, names, non_empty_text, port,
    positive_duration, size, text,
};
use super::yaml::{Node, Value};
use super::{Position, Problem};
use crate::rules::reply_actions::ReplyCodeActions;
use crate::rules::route::{Condition, TransformStep};

/// The largest `max_message_size` accepted: a frame is held in memory while
/// it is read.
const MAX_MESSAGE_SIZE_LIMIT: u64 = 1 << 30;

/// What the walk produced: the settings, plus where each name and reference
/// was written, for the checks across items and productions.
pub(crate) struct Draft {
    pub tls: BTreeMap<String, (TlsConfig, Position)>,
    pub store: StoreSettings,
    pub productions: Vec<DraftProduction>,
}

pub(crate) struct DraftProduction {
    pub id: String,
    pub name: String,
    pub autostart: bool,
    pub stop_timeout: Duration,
    pub items: Vec<DraftItem>,
}

pub(crate) struct DraftItem {
    pub path: String,
    pub pos: Position,
    /// The name, when it was readable and valid.
    pub name: Option<Ref>,
    pub tag: Option<KindTag>,
    pub enabled: bool,
    /// `targets` as written, with the key's path and position.
    pub targets: Option<(String, Position, Vec<Ref>)>,
    /// Every name in the `send` lists of a router's rules.
    pub sends: Vec<Ref>,
    /// The `tls` setting, with its path and position.
    pub tls: Option<Ref>,
    /// Host and port an `mllp_in` listens on, with the port's path.
    pub listen: Option<Listen>,
    /// The kind's settings, when they were readable.
    pub kind: Option<ItemKind>,
}

pub(crate) struct Listen {
    pub host: String,
    pub port: u16,
    pub path: String,
    pub pos: Position,
}

/// Walks the whole file. Returns `None` only when the file is not a
/// mapping at all.
pub(crate) fn walk(ctx: &mut Ctx, root: &Node) -> Option<Draft> {
    if root.value == Value::Null {
        // A problem of the whole file: the place YAML gives an empty
        // document is where the text ends, which for a file of comments
        // without a final line break is a line that does not exist.
        ctx.problems.push(Problem {
            path: String::new(),
            message: "the file is empty; a productions file needs at least a `productions:` mapping (see \
                      examples/demo.yaml)"
                .to_owned(),
            position: None,
        });
        return None;
    }
    Fields::closed(ctx, "", root, "the productions file", |ctx, top| {
        let store = match top.get("store") {
            Some(node) => store(ctx, node),
            None => StoreSettings::default(),
        };
        let tls = match top.get("tls") {
            Some(node) => tls_section(ctx, node),
            None => BTreeMap::new(),
        };
        let mut productions = Vec::new();
        if let Some(node) = top.required(
            ctx,
            "productions",
            "the file",
            "add a `productions:` mapping from production ids to productions (see examples/demo.yaml)",
        ) {
            match &node.value {
                Value::Map(entries) if entries.is_empty() => {
                    ctx.warn("productions", node.pos, "no productions are defined; nothing will run");
                }
                Value::Null => ctx.warn("productions", node.pos, "no productions are defined; nothing will run"),
                _ => {}
            }
            let fields =
                if node.value == Value::Null { None } else { Fields::new(ctx, "productions", node, "`productions`") };
            if let Some(f) = &fields {
                for (id, prod) in f.entries() {
                    if let Some(p) = production(ctx, id, f.key_pos(id), prod) {
                        productions.push(p);
                    }
                }
            }
        }
        Draft { tls, store, productions }
    })
}

fn store(ctx: &mut Ctx, node: &Node) -> StoreSettings {
    let mut settings = StoreSettings::default();
    if node.value == Value::Null {
        return settings;
    }
    Fields::closed(ctx, "store", node, "`store`", |ctx, f| {
        store_settings(ctx, f, &mut settings);
    });
    settings
}

fn store_settings(ctx: &mut Ctx, f: &Fields<'_>, settings: &mut StoreSettings) {
    settings.durability = f.read(ctx, "durability", Durability::Full, |ctx, path, node| {
        choice(ctx, path, node, &[("full", Durability::Full), ("normal", Durability::Normal)])
    });
    settings.retention_days = f.read(ctx, "retention_days", 30, |ctx, path, node| {
        integer(ctx, path, node, "a number of days (0 keeps messages forever)", 0, 36_500)
            .and_then(|d| u32::try_from(d).ok())
    });
    settings.background_priority = f.read(ctx, "background_priority", BackgroundPriority::Low, |ctx, path, node| {
        choice(ctx, path, node, &[("low", BackgroundPriority::Low), ("normal", BackgroundPriority::Normal)])
    });
}

/// Checks an id that Home Assistant will see (production ids, TLS
/// configuration names): `[a-z0-9][a-z0-9_-]*`.
fn check_id(ctx: &mut Ctx, path: &str, pos: Position, id: &str, what: &str) -> bool {
    let mut chars = id.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !valid {
        let mut suggestion: String = id
            .trim()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c.to_ascii_lowercase() } else { '_' })
            .collect();
        suggestion = suggestion.trim_start_matches(['_', '-']).to_owned();
        let hint = if suggestion.is_empty() { String::new() } else { format!(" such as `{suggestion}`") };
        ctx.error(
            path,
            pos,
            format!(
                "{what} {id:?} is not a valid id; ids become Home Assistant entity ids, so use lower-case letters, \
                 digits, `_` and `-`, starting with a letter or digit{hint} (put the display name in `name`)"
            ),
        );
    }
    valid
}

fn tls_section(ctx: &mut Ctx, node: &Node) -> BTreeMap<String, (TlsConfig, Position)> {
    let mut out = BTreeMap::new();
    if node.value == Value::Null {
        return out;
    }
    let Some(fields) = Fields::new(ctx, "tls", node, "`tls`") else { return out };
    for (name, value) in fields.entries() {
        let path = join("tls", name);
        let pos = fields.key_pos(name);
        if !check_id(ctx, &path, pos, name, "the TLS configuration name") {
            continue;
        }
        if let Some(config) = tls_config(ctx, &path, value) {
            out.insert(name.to_owned(), (config, pos));
        }
    }
    out
}

fn tls_config(ctx: &mut Ctx, path: &str, node: &Node) -> Option<TlsConfig> {
    Fields::closed(ctx, path, node, "a TLS configuration", |ctx, f| tls_settings(ctx, path, f)).flatten()
}

fn tls_settings(ctx: &mut Ctx, path: &str, f: &Fields<'_>) -> Option<TlsConfig> {
    let role = f
        .required(
            ctx,
            "role",
            "the TLS configuration",
            "add `role: client` (for mllp_out) or `role: server` (for mllp_in)",
        )
        .and_then(|n| choice(ctx, &f.path_of("role"), n, &[("client", TlsRole::Client), ("server", TlsRole::Server)]));
    let files = |ctx: &mut Ctx, key: &'static str| {
        f.read(ctx, key, None, |ctx, path, node| file_path(ctx, path, node).map(Some))
    };
    let ca_file = files(ctx, "ca_file");
    let cert_file = files(ctx, "cert_file");
    let key_file = files(ctx, "key_file");
    let key_password_file = files(ctx, "key_password_file");
    let key_password_env = f.read(ctx, "key_password_env", None, |ctx, path, node| {
        let name = non_empty_text(ctx, path, node, "write the name of an environment variable, e.g. LAB_KEY_PASSWORD")?;
        let mut chars = name.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            ctx.error(
                path,
                node.pos,
                format!(
                    "{name:?} is not an environment variable name; use letters, digits and `_`, e.g. LAB_KEY_PASSWORD \
                     (write the variable's name, never the password itself)"
                ),
            );
            return None;
        }
        Some(Some(name))
    });
    let verify_peer = f.read(ctx, "verify_peer", None, |ctx, path, node| {
        choice(
            ctx,
            path,
            node,
            &[("require", VerifyPeer::Require), ("optional", VerifyPeer::Optional), ("none", VerifyPeer::None)],
        )
        .map(Some)
    });
    let verify_host = f.read(ctx, "verify_host", true, boolean);
    let server_name = f.read(ctx, "server_name", None, |ctx, path, node| {
        non_empty_text(ctx, path, node, "write the host name the server's certificate names").map(Some)
    });
    let min_version = f.read(ctx, "min_version", TlsVersion::Tls12, |ctx, path, node| {
        let written = match &node.value {
            Value::Str(s) => s.clone(),
            Value::Float(v) => v.to_string(),
            _ => String::new(),
        };
        match written.as_str() {
            "1.2" => Some(TlsVersion::Tls12),
            "1.3" => Some(TlsVersion::Tls13),
            _ => {
                ctx.error(
                    path,
                    node.pos,
                    format!("{} is not a supported TLS version; use \"1.2\" or \"1.3\"", node.value.describe()),
                );
                None
            }
        }
    });

    let create_if_missing = f.read(ctx, "create_if_missing", false, boolean);
    let role = role?;
    if create_if_missing && (ca_file.is_none() || cert_file.is_none() || key_file.is_none()) {
        ctx.error(
            &f.path_of("create_if_missing"),
            f.key_pos("create_if_missing"),
            "creating test certificates needs `ca_file`, `cert_file` and `key_file`, the files to create; add them",
        );
    }
    if cert_file.is_some() != key_file.is_some() {
        let (has, lacks) = if cert_file.is_some() { ("cert_file", "key_file") } else { ("key_file", "cert_file") };
        ctx.error(
            path,
            f.pos,
            format!("has `{has}` but no `{lacks}`; a certificate needs its private key, so set both"),
        );
    }
    if role == TlsRole::Server && cert_file.is_none() && key_file.is_none() {
        ctx.error(
            path,
            f.pos,
            "a server TLS configuration needs `cert_file` and `key_file`, the certificate and key it presents to \
             senders; add both",
        );
    }
    if key_password_env.is_some() && key_password_file.is_some() {
        ctx.error(
            &f.path_of("key_password_file"),
            f.key_pos("key_password_file"),
            "both `key_password_env` and `key_password_file` are set; keep one",
        );
    }
    if (key_password_env.is_some() || key_password_file.is_some()) && key_file.is_none() {
        let key = if key_password_env.is_some() { "key_password_env" } else { "key_password_file" };
        ctx.error(
            &f.path_of(key),
            f.key_pos(key),
            format!("`{key}` is set but there is no `key_file`; add `key_file` or remove `{key}`"),
        );
    }
    let verify_peer = match (role, verify_peer) {
        (_, Some(v)) => v,
        (TlsRole::Client, None) => VerifyPeer::Require,
        (TlsRole::Server, None) => VerifyPeer::None,
    };
    match role {
        TlsRole::Client => {
            if verify_peer == VerifyPeer::Optional {
                ctx.error(
                    &f.path_of("verify_peer"),
                    f.key_pos("verify_peer"),
                    "`optional` applies to servers (client certificates); a client uses `require` or `none`",
                );
            }
            if verify_peer == VerifyPeer::None {
                ctx.warn(
                    &f.path_of("verify_peer"),
                    f.key_pos("verify_peer"),
                    "the receiver's certificate is not checked, so anyone on the network path can pose as the \
                     receiver; \
                     use `require` outside tests",
                );
            }
        }
        TlsRole::Server => {
            if verify_peer != VerifyPeer::None && ca_file.is_none() {
                ctx.error(
                    path,
                    f.pos,
                    "verifying client certificates (`verify_peer: require` or `optional`) needs `ca_file`, the \
                     authorities that sign them; add `ca_file` or set `verify_peer: none`",
                );
            }
            for key in ["server_name", "verify_host"] {
                if f.has(key) {
                    ctx.warn(
                        &f.path_of(key),
                        f.key_pos(key),
                        format!("`{key}` applies to `role: client` only and is ignored here; remove it"),
                    );
                }
            }
        }
    }
    Some(TlsConfig {
        role,
        ca_file,
        cert_file,
        key_file,
        key_password_env,
        key_password_file,
        verify_peer,
        verify_host,
        server_name,
        min_version,
        create_if_missing,
    })
}

fn production(ctx: &mut Ctx, id: &str, id_pos: Position, node: &Node) -> Option<DraftProduction> {
    let path = join("productions", id);
    check_id(ctx, &path, id_pos, id, "the production id");
    Fields::closed(ctx, &path, node, "a production", |ctx, f| production_settings(ctx, id, f))
}

fn production_settings(ctx: &mut Ctx, id: &str, f: &Fields<'_>) -> DraftProduction {
    let name = f.read(ctx, "name", id.to_owned(), |ctx, path, node| {
        non_empty_text(ctx, path, node, "write the production's display name, e.g. ADT feed")
    });
    let autostart = f.read(ctx, "autostart", true, boolean);
    let stop_timeout = f.read(ctx, "stop_timeout", Duration::from_secs(10), duration);
    let mut items = Vec::new();
    if let Some(list) = f.required(
        ctx,
        "items",
        "the production",
        "add `items:` with the list of its services, processes and operations",
    ) {
        let items_path = f.path_of("items");
        match &list.value {
            Value::Seq(nodes) => {
                for (index, item_node) in nodes.iter().enumerate() {
                    items.push(item(ctx, &format!("{items_path}[{index}]"), item_node));
                }
            }
            Value::Null => ctx.warn(&items_path, list.pos, "the production has no items"),
            other => ctx.error(
                &items_path,
                list.pos,
                format!("found {}; expected a list of items (lines starting with `- name:`)", other.describe()),
            ),
        }
    }
    DraftProduction { id: id.to_owned(), name, autostart, stop_timeout, items }
}

fn valid_kinds() -> String {
    KindTag::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
}

fn item(ctx: &mut Ctx, path: &str, node: &Node) -> DraftItem {
    let mut draft = DraftItem {
        path: path.to_owned(),
        pos: node.pos,
        name: None,
        tag: None,
        enabled: true,
        targets: None,
        sends: Vec::new(),
        tls: None,
        listen: None,
        kind: None,
    };
    // The kind decides which keys are allowed, so it is read first.
    let kind_node = match &node.value {
        Value::Map(entries) => entries.iter().find(|(k, _)| k.value == Value::Str("kind".into())).map(|(_, v)| v),
        _ => None,
    };
    let kind_path = join(path, "kind");
    if let Some(kind_node) = kind_node {
        match &kind_node.value {
            Value::Str(kind) => match KindTag::from_name(kind) {
                Some(tag) => draft.tag = Some(tag),
                None => {
                    let names: Vec<&str> = KindTag::ALL.iter().map(|k| k.as_str()).collect();
                    let suggestion = match closest(kind, names) {
                        Some(close) => format!("did you mean `{close}`? "),
                        None => String::new(),
                    };
                    ctx.error(
                        &kind_path,
                        kind_node.pos,
                        format!("unknown kind {kind:?}; {suggestion}valid kinds are: {}", valid_kinds()),
                    );
                }
            },
            other => ctx.error(
                &kind_path,
                kind_node.pos,
                format!("found {}; expected one of: {}", other.describe(), valid_kinds()),
            ),
        }
    }
    match draft.tag {
        // Its keys are known only with its kind.
        Some(tag) => {
            Fields::closed(ctx, path, node, &format!("an item of kind {tag}"), |ctx, f| {
                item_settings(ctx, f, &mut draft);
            });
        }
        None => {
            if let Some(f) = Fields::new(ctx, path, node, "an item") {
                item_settings(ctx, &f, &mut draft);
            }
        }
    }
    draft
}

/// The settings every item has, then those of its kind.
fn item_settings(ctx: &mut Ctx, f: &Fields<'_>, draft: &mut DraftItem) {
    if let Some(name_node) =
        f.required(ctx, "name", "the item", "add `name:`, unique within the production, e.g. `name: ADT in`")
    {
        let name_path = f.path_of("name");
        let name = text(ctx, &name_path, name_node);
        if let Some(name) = name.filter(|n| check_item_name(ctx, &name_path, name_node.pos, n)) {
            draft.name = Some(Ref { name, path: name_path, pos: name_node.pos });
        }
    }
    if !f.has("kind") {
        ctx.error(&f.path, f.pos, format!("the item has no `kind`; add `kind:` with one of: {}", valid_kinds()));
    }
    draft.enabled = f.read(ctx, "enabled", true, boolean);
    if let Some(targets) = f.get("targets") {
        let targets_path = f.path_of("targets");
        let refs = names(ctx, &targets_path, targets).unwrap_or_default();
        draft.targets = Some((targets_path, f.key_pos("targets"), refs));
    }
    let Some(tag) = draft.tag else { return };
    draft.kind = match tag {
        KindTag::MllpIn => mllp_in(ctx, f, draft),
        KindTag::MllpOut => mllp_out(ctx, f, draft),
        KindTag::Router => router(ctx, f, draft),
        KindTag::FileIn => file_in(ctx, f),
        KindTag::FileOut => file_out(ctx, f),
    };
}

fn check_item_name(ctx: &mut Ctx, path: &str, pos: Position, name: &str) -> bool {
    const RULE: &str = "use letters, digits, spaces, `-`, `_` and `.`, e.g. `ADT in`";
    if name.trim().is_empty() {
        ctx.error(path, pos, format!("the item name is empty; {RULE}"));
        return false;
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.'))) {
        ctx.error(path, pos, format!("the item name {name:?} contains {bad:?}; {RULE}"));
        return false;
    }
    if name.starts_with(' ') || name.ends_with(' ') || name.contains("  ") {
        ctx.error(
            path,
            pos,
            format!(
                "the item name {name:?} has leading, trailing or double spaces; write it with single spaces \
                 between words"
            ),
        );
        return false;
    }
    true
}

/// Reads a `host`: for a listener, an IP address or `localhost`; for a
/// connection, a host name or IP address.
fn host(ctx: &mut Ctx, path: &str, node: &Node, listen: bool) -> Option<String> {
    let example = if listen { "0.0.0.0, 127.0.0.1 or ::" } else { "lab.example.org or 10.1.2.3" };
    let value = non_empty_text(ctx, path, node, &format!("write a host such as {example}"))?;
    let bare = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')).unwrap_or(&value);
    if bare.parse::<IpAddr>().is_ok() || bare.eq_ignore_ascii_case("localhost") {
        return Some(bare.to_owned());
    }
    let problem = if value.contains("://") {
        Some("write only the host, without a scheme such as tcp://".to_owned())
    } else if value.contains(':') {
        Some("write only the host and put the port in `port`".to_owned())
    } else if listen {
        Some(format!(
            "a listener's host is a local address to listen on: an IP address such as {example}, or localhost"
        ))
    } else if value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')) {
        None
    } else {
        Some(format!("a host name has letters, digits, `-` and `.` only, e.g. {example}"))
    };
    match problem {
        Some(problem) => {
            ctx.error(path, node.pos, format!("{value:?} is not a valid host; {problem}"));
            None
        }
        None => Some(value),
    }
}

fn tls_ref(ctx: &mut Ctx, f: &Fields<'_>) -> Option<Ref> {
    let node = f.get("tls")?;
    let path = f.path_of("tls");
    let name = non_empty_text(ctx, &path, node, "write the name of a configuration under `tls:`")?;
    Some(Ref { name, path, pos: node.pos })
}

fn mllp_in(ctx: &mut Ctx, f: &Fields<'_>, draft: &mut DraftItem) -> Option<ItemKind> {
    let host_value = f.read(ctx, "host", Some(MllpInConfig::DEFAULT_HOST.to_owned()), |ctx, path, node| {
        host(ctx, path, node, true).map(Some)
    });
    let port_node = f.required(ctx, "port", "an mllp_in item", "add `port:` with the TCP port to listen on, 1-65535");
    let port_value = port_node.and_then(|n| port(ctx, &f.path_of("port"), n));
    draft.tls = tls_ref(ctx, f);
    let mut config = MllpInConfig::with_port(port_value.unwrap_or(1));
    config.tls = draft.tls.as_ref().map(|r| r.name.clone());
    config.ack_mode = f.read(ctx, "ack_mode", AckMode::Immediate, |ctx, path, node| {
        choice(
            ctx,
            path,
            node,
            &[("immediate", AckMode::Immediate), ("never", AckMode::Never), ("application", AckMode::Application)],
        )
    });
    config.application_ack_timeout =
        f.read(ctx, "application_ack_timeout", config.application_ack_timeout, positive_duration);
    if config.ack_mode != AckMode::Application && f.has("application_ack_timeout") {
        ctx.warn(
            &f.path_of("application_ack_timeout"),
            f.get("application_ack_timeout").map_or(f.pos, |n| n.pos),
            "is used only with `ack_mode: application` and is ignored here; remove it or set `ack_mode: application`",
        );
    }
    config.max_connections = f.read(ctx, "max_connections", config.max_connections, |ctx, path, node| {
        integer(ctx, path, node, "a number of connections", 1, 100_000).and_then(|n| usize::try_from(n).ok())
    });
    config.max_connections_per_peer =
        f.read(ctx, "max_connections_per_peer", config.max_connections_per_peer, |ctx, path, node| {
            integer(ctx, path, node, "a number of connections", 1, 100_000).and_then(|n| usize::try_from(n).ok())
        });
    config.first_byte_timeout = f.read(ctx, "first_byte_timeout", config.first_byte_timeout, positive_duration);
    config.idle_timeout = f.read(ctx, "idle_timeout", config.idle_timeout, positive_duration);
    config.read_timeout = f.read(ctx, "read_timeout", config.read_timeout, positive_duration);
    config.max_message_size = f.read(ctx, "max_message_size", config.max_message_size, |ctx, path, node| {
        let bytes = size(ctx, path, node)?;
        if bytes == 0 || bytes > MAX_MESSAGE_SIZE_LIMIT {
            ctx.error(
                path,
                node.pos,
                format!("{bytes} bytes is out of range; use a size from 1 byte to 1GiB, e.g. 16MiB"),
            );
            return None;
        }
        usize::try_from(bytes).ok()
    });
    let (host_value, port_value) = (host_value?, port_value?);
    config.host = host_value.clone();
    draft.listen = Some(Listen {
        host: host_value,
        port: port_value,
        path: f.path_of("port"),
        pos: port_node.map_or(f.pos, |n| n.pos),
    });
    Some(ItemKind::MllpIn(config))
}

fn mllp_out(ctx: &mut Ctx, f: &Fields<'_>, draft: &mut DraftItem) -> Option<ItemKind> {
    let host_value = f
        .required(ctx, "host", "an mllp_out item", "add `host:` with the receiver's host name or IP address")
        .and_then(|n| host(ctx, &f.path_of("host"), n, false));
    let port_value = f
        .required(ctx, "port", "an mllp_out item", "add `port:` with the receiver's TCP port, 1-65535")
        .and_then(|n| port(ctx, &f.path_of("port"), n));
    draft.tls = tls_ref(ctx, f);
    let mut config = MllpOutConfig::with_address(String::new(), 1);
    config.tls = draft.tls.as_ref().map(|r| r.name.clone());
    config.stay_connected = f.read(ctx, "stay_connected", true, boolean);
    config.connect_timeout = f.read(ctx, "connect_timeout", config.connect_timeout, positive_duration);
    config.response_timeout = f.read(ctx, "response_timeout", config.response_timeout, positive_duration);
    config.retry_interval = f.read(ctx, "retry_interval", config.retry_interval, positive_duration);
    config.failure_timeout = f.read(ctx, "failure_timeout", config.failure_timeout, |ctx, path, node| {
        let forever = match &node.value {
            Value::Int(-1) => true,
            Value::Str(s) => s.trim() == "forever" || s.trim() == "-1",
            _ => false,
        };
        if forever {
            ctx.warn(
                path,
                node.pos,
                "messages are retried forever and the queue never drains while the receiver rejects; set a finite \
                 failure_timeout",
            );
            return Some(None);
        }
        if let Value::Int(i @ ..=-1) = node.value {
            ctx.error(
                path,
                node.pos,
                format!("{i} is not valid; use a duration such as 15s, or `forever` (or -1) to retry without end"),
            );
            return None;
        }
        duration(ctx, path, node).map(Some)
    });
    config.reply_code_actions = f.read(ctx, "reply_code_actions", config.reply_code_actions, |ctx, path, node| {
        let default = MllpOutConfig::DEFAULT_REPLY_CODE_ACTIONS;
        let text = non_empty_text(ctx, path, node, &format!("remove the key for the default {default:?}"))?;
        match text.parse::<ReplyCodeActions>() {
            Ok(actions) => Some(actions),
            Err(e) => {
                ctx.error(path, node.pos, format!("{e}; the default is {default:?}"));
                None
            }
        }
    });
    let max_depth = MllpOutConfig::MAX_PIPELINE_DEPTH as i128;
    config.pipeline_depth = f.read(ctx, "pipeline_depth", config.pipeline_depth, |ctx, path, node| {
        integer(ctx, path, node, "a number of messages", 1, max_depth).and_then(|n| usize::try_from(n).ok())
    });
    if config.pipeline_depth > 1 && !config.stay_connected {
        ctx.error(
            &f.path_of("pipeline_depth"),
            f.get("pipeline_depth").map_or(f.pos, |n| n.pos),
            "sending ahead needs one connection for many messages; set `stay_connected: true` or remove \
             `pipeline_depth`",
        );
    }
    config.host = host_value?;
    config.port = port_value?;
    Some(ItemKind::MllpOut(config))
}

fn router(ctx: &mut Ctx, f: &Fields<'_>, draft: &mut DraftItem) -> Option<ItemKind> {
    let no_match = f.read(ctx, "no_match", NoMatch::Discard, |ctx, path, node| {
        choice(ctx, path, node, &[("discard", NoMatch::Discard), ("error", NoMatch::Error)])
    });
    let rules_node = f.required(
        ctx,
        "rules",
        "a router",
        "add `rules:`, a list of rules such as `- when: MSH-9.1 = \"ADT\"` with `send: [Lab out]`",
    )?;
    let rules_path = f.path_of("rules");
    let nodes: &[Node] = match &rules_node.value {
        Value::Seq(nodes) => nodes,
        Value::Null => &[],
        other => {
            ctx.error(
                &rules_path,
                rules_node.pos,
                format!(
                    "found {}; expected a list of rules (lines starting with `- when:` or `- send:`)",
                    other.describe()
                ),
            );
            return None;
        }
    };
    if nodes.is_empty() {
        ctx.warn(&rules_path, rules_node.pos, "the router has no rules, so every message goes to `no_match`");
    }
    let mut rules = Vec::new();
    let mut catch_all: Option<usize> = None;
    let mut complete = true;
    for (index, node) in nodes.iter().enumerate() {
        let path = format!("{rules_path}[{index}]");
        if let Some(first) = catch_all {
            ctx.warn(
                &path,
                node.pos,
                format!("this rule is never used: rules[{first}] before it has no `when` and matches every message"),
            );
        }
        match rule(ctx, &path, node, draft) {
            Some(r) => {
                if r.when.is_none() && catch_all.is_none() {
                    catch_all = Some(index);
                }
                rules.push(r);
            }
            None => complete = false,
        }
    }
    complete.then_some(ItemKind::Router(RouterConfig { rules, no_match }))
}

fn rule(ctx: &mut Ctx, path: &str, node: &Node, draft: &mut DraftItem) -> Option<RuleConfig> {
    Fields::closed(ctx, path, node, "a rule", |ctx, f| rule_settings(ctx, path, f, draft)).flatten()
}

fn rule_settings(ctx: &mut Ctx, path: &str, f: &Fields<'_>, draft: &mut DraftItem) -> Option<RuleConfig> {
    let when = f.read(ctx, "when", None, |ctx, path, node| {
        let text = non_empty_text(
            ctx,
            path,
            node,
            "write a condition such as MSH-9.1 = \"ADT\", or remove `when` to match every message",
        )?;
        match text.parse::<Condition>() {
            Ok(condition) => Some(Some(condition)),
            Err(e) => {
                ctx.error(path, node.pos, format!("{e} (in {text:?})"));
                None
            }
        }
    });
    let send = f.get("send").and_then(|node| {
        let send_path = f.path_of("send");
        let refs = names(ctx, &send_path, node)?;
        if refs.is_empty() {
            ctx.error(
                &send_path,
                node.pos,
                "the list is empty; name at least one item, e.g. `send: [Lab out]`, or use `discard: true`",
            );
            return None;
        }
        Some(refs)
    });
    let discard = f.read(ctx, "discard", None, |ctx, path, node| {
        let value = boolean(ctx, path, node)?;
        if !value {
            ctx.error(
                path,
                node.pos,
                "`discard: false` does nothing; remove it and use `send: [...]`, or write `discard: true`",
            );
            return None;
        }
        Some(Some(()))
    });
    let transform = f.read(ctx, "transform", Some(Vec::new()), transforms);
    let action = match (f.has("send"), f.has("discard")) {
        (true, true) => {
            ctx.error(path, f.pos, "a rule has either `send` or `discard`, not both; remove one");
            None
        }
        (false, false) => {
            ctx.error(path, f.pos, "the rule does nothing; add `send: [item names]` or `discard: true`");
            None
        }
        (true, false) => send.map(|refs| {
            let names = refs.iter().map(|r| r.name.clone()).collect();
            draft.sends.extend(refs);
            RuleAction::Send(names)
        }),
        (false, true) => discard.map(|()| RuleAction::Discard),
    };
    Some(RuleConfig { when, action: action?, transform: transform? })
}

fn transforms(ctx: &mut Ctx, path: &str, node: &Node) -> Option<Option<Vec<TransformStep>>> {
    let nodes = match &node.value {
        Value::Seq(nodes) => nodes,
        Value::Null => return Some(Some(Vec::new())),
        other => {
            ctx.error(
                path,
                node.pos,
                format!(
                    "found {}; expected a list of edits (`- set: PID-8` with `value: U`, `- copy: ...`, \
                     `- clear: ...`)",
                    other.describe()
                ),
            );
            return Some(None);
        }
    };
    let mut out = Vec::new();
    let mut complete = true;
    for (index, node) in nodes.iter().enumerate() {
        match transform(ctx, &format!("{path}[{index}]"), node) {
            Some(t) => out.push(t),
            None => complete = false,
        }
    }
    Some(complete.then_some(out))
}

fn transform(ctx: &mut Ctx, path: &str, node: &Node) -> Option<TransformStep> {
    Fields::closed(ctx, path, node, "a transform step", |ctx, f| transform_settings(ctx, path, f)).flatten()
}

fn transform_settings(ctx: &mut Ctx, path: &str, f: &Fields<'_>) -> Option<TransformStep> {
    // Every key is asked for before the step can be refused, so that no
    // key is reported unknown because of another mistake.
    let (has_value, has_to) = (f.has("value"), f.has("to"));
    let ops: Vec<&str> = ["set", "copy", "clear"].into_iter().filter(|k| f.has(k)).collect();
    let op = match ops.as_slice() {
        [op] => *op,
        [] => {
            ctx.error(
                path,
                f.pos,
                "the step has no operation; start it with `set: <path>`, `copy: <path>` or `clear: <path>`",
            );
            return None;
        }
        _ => {
            ctx.error(
                path,
                f.pos,
                format!("one step does one thing, but this one has {}; split it into steps", ops.join(" and ")),
            );
            return None;
        }
    };
    let hl7_path = |ctx: &mut Ctx, key: &'static str| -> Option<crate::hl7::Path> {
        let node = f.get(key)?;
        let key_path = f.path_of(key);
        let value = non_empty_text(ctx, &key_path, node, "write an HL7 path such as PID-8 or PID-3[1].1")?;
        match value.parse::<crate::hl7::Path>() {
            Ok(parsed) if parsed.segment_id() == "MSH" && parsed.field <= 2 => {
                ctx.error(
                    &key_path,
                    node.pos,
                    "MSH-1 and MSH-2 are the message's delimiters and cannot be edited; choose another field",
                );
                None
            }
            Ok(parsed) => Some(parsed),
            Err(err) => {
                ctx.error(
                    &key_path,
                    node.pos,
                    format!(
                        "{value:?} is not an HL7 path ({} at character {}); write e.g. PID-8, PID-3[1].1 or OBX[2]-5",
                        err.reason,
                        err.position + 1
                    ),
                );
                None
            }
        }
    };
    let forbid = |ctx: &mut Ctx, key: &'static str, given: bool, why: &str| {
        if given {
            ctx.error(
                &f.path_of(key),
                f.get(key).map_or(f.pos, |n| n.pos),
                format!("`{key}` does not go with `{op}`; {why}"),
            );
        }
    };
    match op {
        "set" => {
            forbid(ctx, "to", has_to, "remove it");
            let target = hl7_path(ctx, "set");
            // Numbers are refused rather than converted: `1.50` or `007` would
            // not survive the trip through a number.
            let value = f
                .required(ctx, "value", "a `set` step", "add `value:` with the text to write, e.g. `value: U`")
                .and_then(|node| text(ctx, &f.path_of("value"), node));
            Some(TransformStep::Set { path: target?, value: value? })
        }
        "copy" => {
            forbid(ctx, "value", has_value, "a copy takes its value from the `copy` path; remove it");
            let from = hl7_path(ctx, "copy");
            let to = match f.get("to") {
                Some(_) => hl7_path(ctx, "to"),
                None => {
                    ctx.error(
                        path,
                        f.pos,
                        "a `copy` step has no `to`; add `to:` with the path to write, e.g. `to: PID-2`",
                    );
                    None
                }
            };
            Some(TransformStep::Copy { from: from?, to: to? })
        }
        _ => {
            forbid(ctx, "value", has_value, "`clear` empties the field; use `set` to write a value");
            forbid(ctx, "to", has_to, "remove it");
            Some(TransformStep::Clear { path: hl7_path(ctx, "clear")? })
        }
    }
}

fn file_in(ctx: &mut Ctx, f: &Fields<'_>) -> Option<ItemKind> {
    let folder = f
        .required(ctx, "path", "a file_in item", "add `path:` with the folder to pick files up from")
        .and_then(|n| file_path(ctx, &f.path_of("path"), n));
    let pattern = f.read(ctx, "pattern", FileInConfig::DEFAULT_PATTERN.to_owned(), |ctx, path, node| {
        let pattern = non_empty_text(ctx, path, node, "write a file name pattern such as *.hl7")?;
        if pattern.contains(['/', '\\']) {
            ctx.error(
                path,
                node.pos,
                format!(
                    "{pattern:?} contains a folder; put the folder in `path` and only the file name pattern here, \
                     e.g. *.hl7"
                ),
            );
            return None;
        }
        Some(pattern)
    });
    let archive_path = f.read(ctx, "archive_path", None, |ctx, path, node| file_path(ctx, path, node).map(Some));
    let poll_interval = f.read(ctx, "poll_interval", Duration::from_secs(2), positive_duration);
    let folder = folder?;
    if archive_path.as_ref() == Some(&folder) {
        let node = f.get("archive_path");
        ctx.error(
            &f.path_of("archive_path"),
            node.map_or(f.pos, |n| n.pos),
            "is the folder being watched, so archived files would be read again; choose another folder, or remove \
             the key to use `archive` inside `path`",
        );
        return None;
    }
    Some(ItemKind::FileIn(FileInConfig { path: folder, pattern, archive_path, poll_interval }))
}

fn file_out(ctx: &mut Ctx, f: &Fields<'_>) -> Option<ItemKind> {
    let folder: Option<PathBuf> = f
        .required(ctx, "path", "a file_out item", "add `path:` with the folder to write files to")
        .and_then(|n| file_path(ctx, &f.path_of("path"), n));
    let filename = f.read(ctx, "filename", Some(FileOutConfig::DEFAULT_FILENAME.to_owned()), |ctx, path, node| {
        let name = non_empty_text(ctx, path, node, "write a file name such as {control_id}_{timestamp}.hl7")?;
        check_filename(ctx, path, node.pos, &name).then_some(Some(name))
    });
    Some(ItemKind::FileOut(FileOutConfig { path: folder?, filename: filename? }))
}

fn check_filename(ctx: &mut Ctx, path: &str, pos: Position, name: &str) -> bool {
    let valid = FileOutConfig::PLACEHOLDERS.iter().map(|p| format!("{{{p}}}")).collect::<Vec<_>>().join(", ");
    if name.contains(['/', '\\']) {
        ctx.error(
            path,
            pos,
            format!("{name:?} contains a folder; put the folder in `path` and only the file name here"),
        );
        return false;
    }
    let mut rest = name;
    let mut used = Vec::new();
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            ctx.error(path, pos, format!("{name:?} has a `}}` without `{{`; placeholders are written {valid}"));
            return false;
        }
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            ctx.error(path, pos, format!("{name:?} has a `{{` without `}}`; placeholders are written {valid}"));
            return false;
        };
        let placeholder = &after[..close];
        if !FileOutConfig::PLACEHOLDERS.contains(&placeholder) {
            let suggestion = match closest(placeholder, FileOutConfig::PLACEHOLDERS) {
                Some(close) => format!("did you mean {{{close}}}? "),
                None => String::new(),
            };
            ctx.error(
                path,
                pos,
                format!(
                    "unknown placeholder {{{placeholder}}} in {name:?}; {suggestion}valid placeholders are {valid}"
                ),
            );
            return false;
        }
        used.push(placeholder);
        rest = &after[close + 1..];
    }
    if !used.iter().any(|p| matches!(*p, "control_id" | "timestamp" | "seq")) {
        ctx.warn(
            path,
            pos,
            format!(
                "{name:?} gives every message the same file name, so each file replaces the previous one; add \
                 {{control_id}}, {{timestamp}} or {{seq}}"
            ),
        );
    }
    true
}
