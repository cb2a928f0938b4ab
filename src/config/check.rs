//! Checks across items and productions: names, targets, TLS references and
//! listening ports, then the assembly of the final [`Config`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use super::Problem;
use super::build::{Draft, DraftItem, DraftProduction, Listen};
use super::model::*;
use super::reader::{Ctx, Ref, closest};

/// Runs every cross check and, when nothing is wrong, returns the settings.
pub(crate) fn finish(ctx: &mut Ctx, source: &Path, draft: Draft) -> Option<Config> {
    for production in &draft.productions {
        check_names(ctx, production);
        check_targets(ctx, production);
    }
    check_tls_refs(ctx, &draft);
    check_ports(ctx, &draft);
    if !ctx.problems.is_empty() {
        return None;
    }
    let productions = draft
        .productions
        .into_iter()
        .map(|p| ProductionConfig {
            id: p.id,
            name: p.name,
            autostart: p.autostart,
            stop_timeout: p.stop_timeout,
            items: p
                .items
                .into_iter()
                .filter_map(|item| {
                    Some(ItemConfig {
                        name: item.name?.name,
                        enabled: item.enabled,
                        targets: item
                            .targets
                            .map(|(_, _, refs)| refs.into_iter().map(|r| r.name).collect())
                            .unwrap_or_default(),
                        kind: item.kind?,
                    })
                })
                .collect(),
        })
        .collect();
    ctx.warnings.sort_by_key(|p| p.position);
    Some(Config {
        source: source.to_owned(),
        tls: draft.tls.into_iter().map(|(name, (config, _))| (name, config)).collect(),
        store: draft.store,
        productions,
        warnings: std::mem::take(&mut ctx.warnings),
    })
}

/// Item names are unique within a production. Names that differ only in
/// case count as the same, because Home Assistant ids are made from them.
fn check_names(ctx: &mut Ctx, production: &DraftProduction) {
    let mut seen: BTreeMap<String, &DraftItem> = BTreeMap::new();
    for item in &production.items {
        let Some(name) = &item.name else { continue };
        let key = name.name.to_lowercase();
        match seen.get(&key) {
            Some(first) => {
                let first_name = first.name.as_ref().map_or("", |r| r.name.as_str());
                ctx.error(
                    &name.path,
                    name.pos,
                    format!(
                        "the name {:?} is already used by {} ({first_name:?}, line {}); item names must be unique \
                         within a production (ignoring case), so rename one",
                        name.name,
                        short_item_path(&first.path),
                        first.pos.line
                    ),
                );
            }
            None => {
                seen.insert(key, item);
            }
        }
    }
}

/// `items[2]` out of `productions.adt.items[2]`.
fn short_item_path(path: &str) -> &str {
    path.rfind(".items[").map_or(path, |i| &path[i + 1..])
}

fn check_targets(ctx: &mut Ctx, production: &DraftProduction) {
    let items: Vec<(&str, &DraftItem)> =
        production.items.iter().filter_map(|item| item.name.as_ref().map(|n| (n.name.as_str(), item))).collect();
    let mut referenced: Vec<&str> = Vec::new();

    for item in &production.items {
        let (Some(tag), Some(own)) = (item.tag, item.name.as_ref()) else { continue };
        let role = tag.role();
        match (&item.targets, role) {
            (Some((path, pos, _)), ItemRole::Operation) => ctx.error(
                path,
                *pos,
                format!(
                    "an operation ({tag}) delivers messages out of Switchboard and has no targets; remove `targets`"
                ),
            ),
            (Some((path, pos, _)), ItemRole::Process) => ctx.error(
                path,
                *pos,
                "a router chooses its targets with rules, not `targets`; move these names into a rule's `send: [...]` \
                 and remove `targets`",
            ),
            (Some((path, pos, refs)), ItemRole::Service) => {
                if refs.is_empty() {
                    ctx.warn(
                        path,
                        *pos,
                        "the list is empty: received messages are stored and acknowledged but go nowhere",
                    );
                }
                check_refs(ctx, &items, own, refs, "target");
                referenced.extend(refs.iter().map(|r| r.name.as_str()));
            }
            (None, ItemRole::Service) => ctx.warn(
                &item.path,
                item.pos,
                format!(
                    "the service {:?} has no `targets`: received messages are stored and acknowledged but go \
                     nowhere; add `targets: [a router or operation]`",
                    own.name
                ),
            ),
            (None, _) => {}
        }
        if role == ItemRole::Process {
            check_refs(ctx, &items, own, &item.sends, "send to");
            referenced.extend(item.sends.iter().map(|r| r.name.as_str()));
        }
    }

    for item in &production.items {
        let (Some(tag), Some(own)) = (item.tag, item.name.as_ref()) else { continue };
        if tag.role() != ItemRole::Service && !referenced.iter().any(|r| *r == own.name) {
            ctx.warn(
                &own.path,
                own.pos,
                format!("no service targets {:?} and no router sends to it, so it never receives a message", own.name),
            );
        }
    }
}

/// Checks names that an item sends to: they exist in the production, are
/// not services, not the item itself, and are listed once.
fn check_refs(ctx: &mut Ctx, items: &[(&str, &DraftItem)], own: &Ref, refs: &[Ref], verb: &str) {
    for (index, target) in refs.iter().enumerate() {
        // Same name in the same list (rules may each send to the same item).
        let list = |path: &str| path.rsplit_once('[').map_or(path, |(list, _)| list).to_owned();
        if refs[..index].iter().any(|r| r.name == target.name && list(&r.path) == list(&target.path)) {
            ctx.error(
                &target.path,
                target.pos,
                format!("{:?} is listed twice, so it would get each message twice; list it once", target.name),
            );
            continue;
        }
        let Some((_, item)) = items.iter().find(|(name, _)| *name == target.name) else {
            let suggestion = match closest(&target.name, items.iter().map(|(n, _)| *n)) {
                Some(close) => format!("did you mean {close:?}? "),
                None => String::new(),
            };
            let names: Vec<String> = items
                .iter()
                .filter(|(n, i)| *n != own.name && i.tag.is_some_and(|t| t.role() != ItemRole::Service))
                .map(|(n, _)| format!("{n:?}"))
                .collect();
            let valid = if names.is_empty() {
                "the production has no processes or operations yet".to_owned()
            } else {
                format!("items you can {verb}: {}", names.join(", "))
            };
            ctx.error(
                &target.path,
                target.pos,
                format!("there is no item named {:?} in this production; {suggestion}{valid}", target.name),
            );
            continue;
        };
        if target.name == own.name {
            ctx.error(
                &target.path,
                target.pos,
                format!("{:?} cannot {verb} itself; name a process or operation", own.name),
            );
            continue;
        }
        if let Some(tag) = item.tag.filter(|t| t.role() == ItemRole::Service) {
            ctx.error(
                &target.path,
                target.pos,
                format!(
                    "{:?} is a service ({tag}); services receive messages from outside and cannot be sent to; \
                     name a router or an operation",
                    target.name
                ),
            );
        }
    }
}

fn check_tls_refs(ctx: &mut Ctx, draft: &Draft) {
    let defined: Vec<&str> = draft.tls.keys().map(String::as_str).collect();
    for production in &draft.productions {
        for item in &production.items {
            let (Some(tls), Some(tag)) = (&item.tls, item.tag) else { continue };
            let Some((config, config_pos)) = draft.tls.get(&tls.name) else {
                let valid = if defined.is_empty() {
                    "no TLS configuration is defined; add one under `tls:` at the top of the file".to_owned()
                } else {
                    let suggestion = match closest(&tls.name, defined.iter().copied()) {
                        Some(close) => format!("did you mean `{close}`? "),
                        None => String::new(),
                    };
                    format!("{suggestion}defined under `tls:`: {}", defined.join(", "))
                };
                ctx.error(&tls.path, tls.pos, format!("there is no TLS configuration named `{}`; {valid}", tls.name));
                continue;
            };
            let needed = match tag {
                KindTag::MllpIn => TlsRole::Server,
                _ => TlsRole::Client,
            };
            if config.role != needed {
                let why = match needed {
                    TlsRole::Server => "an mllp_in accepts connections and needs a configuration with `role: server`",
                    TlsRole::Client => "an mllp_out makes connections and needs a configuration with `role: client`",
                };
                ctx.error(
                    &tls.path,
                    tls.pos,
                    format!(
                        "the TLS configuration `{}` (line {}) has `role: {}`; {why}",
                        tls.name, config_pos.line, config.role
                    ),
                );
            }
        }
    }
}

/// Whether two listeners on these hosts would compete for the same port.
/// `0.0.0.0` covers every IPv4 address and `::` every address (Linux binds
/// it dual-stack); `localhost` is both loopback addresses.
pub(super) fn hosts_overlap(a: &str, b: &str) -> bool {
    let addresses = |host: &str| -> Vec<IpAddr> {
        if host.eq_ignore_ascii_case("localhost") {
            vec![IpAddr::from([127, 0, 0, 1]), IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])]
        } else {
            host.parse::<IpAddr>().into_iter().collect()
        }
    };
    let (left, right) = (addresses(a), addresses(b));
    if left.is_empty() || right.is_empty() {
        return a.eq_ignore_ascii_case(b);
    }
    left.iter().any(|x| {
        right.iter().any(|y| {
            x == y
                || (x.is_unspecified() && (x.is_ipv6() || y.is_ipv4()))
                || (y.is_unspecified() && (y.is_ipv6() || x.is_ipv4()))
        })
    })
}

fn check_ports(ctx: &mut Ctx, draft: &Draft) {
    let mut listeners: Vec<(&Listen, &DraftItem)> = Vec::new();
    for production in &draft.productions {
        for item in &production.items {
            let Some(listen) = &item.listen else { continue };
            if let Some((first, first_item)) =
                listeners.iter().find(|(l, _)| l.port == listen.port && hosts_overlap(&l.host, &listen.host))
            {
                let name = first_item.name.as_ref().map_or(String::new(), |n| format!(" ({:?})", n.name));
                ctx.error(
                    &listen.path,
                    listen.pos,
                    format!(
                        "port {} on {} is already used by {}{name} on {} (line {}); two listeners cannot share a \
                         port, so choose another port",
                        listen.port, listen.host, first.path, first.host, first.pos.line
                    ),
                );
            }
            listeners.push((listen, item));
        }
    }
}

/// Tries to listen on the address of every enabled `mllp_in`, to tell
/// whether another program holds its port. A warning, not an error: the
/// listener tries its port again until it is free (the production shows
/// as troubled meanwhile), and the program holding it may be Switchboard
/// itself, already running the file being checked. `switchboard check`
/// calls it; loading a file never touches the network.
pub fn probe_ports(config: &Config) -> Vec<Problem> {
    let mut warnings = Vec::new();
    for production in &config.productions {
        for (index, item) in production.items.iter().enumerate() {
            let ItemKind::MllpIn(listen) = &item.kind else { continue };
            if !item.enabled {
                continue;
            }
            // Dropped at once: the port is free again when this returns.
            let Err(error) = std::net::TcpListener::bind((listen.host.as_str(), listen.port)) else { continue };
            let what = match error.kind() {
                std::io::ErrorKind::AddrInUse => {
                    "another program listens there; stop it or choose another port (if it is Switchboard, already \
                     running this file, all is well). Until the port is free the item is in error and tries it again \
                     every 30s at most"
                }
                std::io::ErrorKind::PermissionDenied => {
                    "ports below 1024 need privileges; choose a port from 1024 up, or run with the right to bind it"
                }
                std::io::ErrorKind::AddrNotAvailable => {
                    "no network interface of this machine has that address; correct `host`, or check that the \
                     interface is up when Switchboard starts (the item tries again until it is)"
                }
                _ => "the item tries again until it can listen",
            };
            warnings.push(Problem {
                path: format!("productions.{}.items[{index}].port", production.id),
                message: format!("cannot listen on port {} of {} now: {error}; {what}", listen.port, listen.host),
                position: None,
            });
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::hosts_overlap;

    #[test]
    fn overlapping_hosts() {
        assert!(hosts_overlap("0.0.0.0", "127.0.0.1"));
        assert!(hosts_overlap("127.0.0.1", "0.0.0.0"));
        assert!(hosts_overlap("::", "10.0.0.1"));
        assert!(hosts_overlap("localhost", "127.0.0.1"));
        assert!(hosts_overlap("localhost", "::1"));
        assert!(!hosts_overlap("127.0.0.1", "127.0.0.2"));
        assert!(!hosts_overlap("0.0.0.0", "::1"));
        assert!(!hosts_overlap("localhost", "10.0.0.1"));
    }

    #[test]
    fn a_port_held_by_another_program_is_a_warning_naming_the_item() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = held.local_addr().expect("address").port();
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let free_port = free.local_addr().expect("address").port();
        drop(free);
        let yaml = format!(
            r#"productions:
  adt:
    items:
      - name: Free in
        kind: mllp_in
        host: 127.0.0.1
        port: {free_port}
        targets: [Out]
      - name: Out
        kind: file_out
        path: out
      - name: Taken in
        kind: mllp_in
        host: 127.0.0.1
        port: {port}
        targets: [Out]
"#
        );
        let config = crate::config::parse(std::path::Path::new("/tmp/productions.yaml"), &yaml).expect("valid");
        let warnings = super::probe_ports(&config);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].path, "productions.adt.items[2].port");
        let message = &warnings[0].message;
        assert!(message.contains(&port.to_string()) && message.contains("another program"), "{message}");
        drop(held);
        assert!(super::probe_ports(&config).is_empty());
    }
}
