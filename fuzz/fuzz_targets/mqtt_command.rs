//! Feeds arbitrary topics and payloads to what the MQTT bridge does with
//! an incoming message: Home Assistant's status topic, the bridge's own
//! config topics, and the command topics of switches and buttons, whose
//! payloads `CommandTarget::action` reads.
//!
//! Input layout: the topic, a NUL byte, then the payload (a topic that is
//! not UTF-8 never reaches the bridge: the MQTT client refuses it).
//!
//! Checked beyond "no panic":
//! - a command is accepted exactly for the documented payloads (`ON`/`OFF`
//!   for switches, `PRESS` for buttons, surrounding white space allowed),
//!   and names the production and item of its topic;
//! - every payload is also tried on every command topic;
//! - a refused payload's reason quotes at most the first 40 bytes of it.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use switchboard::config::{ItemRole, KindTag};
use switchboard::ha::discovery::{
    Action, CommandTarget, Discovery, ItemLayout, Layout, Naming, ProductionLayout, preview, unique_slugs,
};

/// The discovery of a production whose names need slugs made unique.
fn discovery() -> &'static (Naming, Discovery) {
    static DISCOVERY: OnceLock<(Naming, Discovery)> = OnceLock::new();
    DISCOVERY.get_or_init(|| {
        let naming = Naming { prefix: "homeassistant".into(), instance: "switchboard".into(), ui_url: None };
        let names = ["ADT in", "Lab out", "Lab-out", "Été", "", "Router"];
        let kinds = [
            (KindTag::MllpIn, ItemRole::Service),
            (KindTag::MllpOut, ItemRole::Operation),
            (KindTag::FileOut, ItemRole::Operation),
            (KindTag::FileIn, ItemRole::Service),
            (KindTag::MllpOut, ItemRole::Operation),
            (KindTag::Router, ItemRole::Process),
        ];
        let items = names
            .iter()
            .zip(unique_slugs(names.iter().copied()))
            .zip(kinds)
            .map(|((name, slug), (kind, role))| ItemLayout { name: (*name).into(), slug, kind, role })
            .collect();
        let layout = Layout {
            productions: vec![
                ProductionLayout { id: "adt".into(), slug: "adt".into(), name: "ADT".into(), items },
                ProductionLayout { id: "lab-2".into(), slug: "lab_2".into(), name: "Lab".into(), items: vec![] },
            ],
            certificates: vec![],
        };
        let discovery = Discovery::build(&naming, &layout);
        (naming, discovery)
    })
}

fuzz_target!(|data: &[u8]| {
    let (topic, payload) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (&data[..0], data),
    };
    let (naming, discovery) = discovery();

    let shown = preview(payload);
    assert!(shown.trim_end_matches('…').len() <= 40 * 3, "preview of {} bytes is {} bytes", payload.len(), shown.len());

    if let Ok(topic) = std::str::from_utf8(topic) {
        if topic != naming.birth() {
            if let Some(target) = discovery.commands.get(topic) {
                check(target, payload);
            }
        }
    }
    for target in discovery.commands.values() {
        check(target, payload);
    }
});

fn check(target: &CommandTarget, payload: &[u8]) {
    let text = std::str::from_utf8(payload).map(str::trim).ok();
    match (target.action(payload), target) {
        (Ok(Action::Start(p)), CommandTarget::Production(id)) => assert!(p == *id && text == Some("ON")),
        (Ok(Action::Stop(p)), CommandTarget::Production(id)) => assert!(p == *id && text == Some("OFF")),
        (Ok(Action::SetEnabled(p, i, on)), CommandTarget::Enable(id, name)) => {
            assert!(p == *id && i == *name && text == Some(if on { "ON" } else { "OFF" }));
        }
        (Ok(Action::Restart(p, i)), CommandTarget::Restart(id, name)) => {
            assert!(p == *id && i == *name && text == Some("PRESS"));
        }
        (Ok(Action::Republish), CommandTarget::Republish) => assert_eq!(text, Some("PRESS")),
        (Ok(action), target) => panic!("{target:?} gave {action:?}"),
        (Err(why), CommandTarget::Production(_) | CommandTarget::Enable(..)) => {
            assert!(!matches!(text, Some("ON" | "OFF")), "{why}");
        }
        (Err(why), CommandTarget::Restart(..) | CommandTarget::Republish) => assert_ne!(text, Some("PRESS"), "{why}"),
    }
}
