//! Floods of bad input against the real binary: junk connections,
//! unparseable messages, more connections than a listener holds, and bad
//! MQTT commands from anyone who can publish to the broker. Each kind of
//! warning is written a few times a minute, not once per bad input (a
//! flood must not fill the disk with its log), the count of those held
//! back is written when the listener stops, and the engine goes on
//! acknowledging messages and obeying commands meanwhile.

use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::time::Instant;

use crate::common::{closed_within, connect, free_port, raw};
use crate::mqtt::start_broker;
use crate::mqtt_support::{Running, Watcher, send_ok};

const WAIT: Duration = Duration::from_secs(30);
/// Bad inputs of each kind: far more than a burst of warnings.
const FLOOD: usize = 60;
/// Connections opened against a listener that holds [`HELD`].
const CROWD: usize = 24;
const HELD: usize = 4;
/// Warnings of one kind a listener, or the MQTT bridge, writes a minute.
const BURST: usize = 5;
const INSTANCE: &str = "sbflood";

fn productions(in_port: u16, out: &std::path::Path) -> String {
    format!(
        "productions:
  p:
    stop_timeout: 2s
    items:
      - name: In
        kind: mllp_in
        host: 127.0.0.1
        port: {in_port}
        max_connections: {HELD}
        targets: [Files]
      - name: Files
        kind: file_out
        path: \"{}\"
        filename: \"{{control_id}}.hl7\"
",
        out.display()
    )
}

/// The lines that contain `needle`.
fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|l| l.contains(needle)).count()
}

/// The number in the line `<N> more warnings about <about> were
/// suppressed`, if there is one.
fn suppressed(lines: &[String], about: &str) -> Option<usize> {
    let tail = format!(" more warnings about {about} were suppressed");
    lines.iter().find_map(|l| {
        let head = &l[..l.find(&tail)?];
        head.rsplit(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_bad_input_are_warned_about_a_few_times_and_the_engine_goes_on() {
    let broker = start_broker(None).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("productions.yaml");
    let in_port = free_port();
    std::fs::write(&config, productions(in_port, &dir.path().join("out"))).unwrap();
    let (config, data, port) = (config.to_str().unwrap(), dir.path().join("data"), broker.to_string());
    let args = ["--config", config, "--data-dir", data.to_str().unwrap()];
    let mqtt = ["--mqtt-host", "127.0.0.1", "--mqtt-port", &port, "--instance-id", INSTANCE];
    let engine = Running::start(&[&args[..], &mqtt[..]].concat(), &[("SWITCHBOARD_LOG", "info")]);
    let watcher = Watcher::start(broker, &format!("{INSTANCE}/#"), None).await;
    watcher.wait_for(&format!("{INSTANCE}/production/p/state"), "ON").await;
    let started = Instant::now();

    // Junk: connections that send bytes outside any frame and hang up.
    for _ in 0..FLOOD {
        let mut stream = raw(in_port).await;
        stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        stream.shutdown().await.unwrap();
        assert!(closed_within(&mut stream, WAIT).await.is_some(), "the listener keeps a junk connection");
    }
    // Unparseable messages on one connection, each refused.
    let mut client = connect(in_port).await;
    for n in 0..FLOOD {
        let nack = client.exchange(format!("not HL7 {n}").as_bytes(), WAIT).await.expect("a NACK");
        assert!(String::from_utf8_lossy(&nack).contains("MSA|AR"), "{}", String::from_utf8_lossy(&nack));
    }
    drop(client);
    // A crowd: each connection past the limit closes the longest idle one.
    let mut crowd = Vec::new();
    for _ in 0..CROWD {
        crowd.push(raw(in_port).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut evicted = 0;
    for stream in &mut crowd {
        evicted += usize::from(closed_within(stream, Duration::from_millis(200)).await.is_some());
    }
    assert!(evicted >= CROWD - HELD, "only {evicted} of {CROWD} connections were closed to make room");
    drop(crowd);
    // Bad MQTT commands: payloads no switch takes, and topics no entity has.
    for n in 0..FLOOD {
        watcher.publish(&format!("{INSTANCE}/production/p/set"), &format!("SIDEWAYS{n}")).await;
        watcher.publish(&format!("{INSTANCE}/production/nosuch{n}/set"), "ON").await;
    }

    // The engine goes on: a message is acknowledged and stored, and a good
    // command right after the flood is obeyed.
    send_ok(in_port, "AFTER-FLOOD").await;
    watcher.publish(&format!("{INSTANCE}/production/p/set"), "OFF").await;
    watcher.wait_for(&format!("{INSTANCE}/production/p/state"), "OFF").await;
    let flooded_for = started.elapsed();
    assert!(dir.path().join("out/AFTER-FLOOD.hl7").exists());

    let lines = engine.stop().await;
    // Within one minute of warnings, or the counts below mean nothing.
    assert!(flooded_for < Duration::from_secs(55), "the floods took {flooded_for:?}");
    let mqtt_warnings = count(&lines, "invalid MQTT command") + count(&lines, "MQTT message on an unknown topic");
    assert!((1..=BURST).contains(&mqtt_warnings), "{mqtt_warnings} MQTT warnings for {} bad commands", 2 * FLOOD);
    for (needle, about, floods) in [
        ("outside MLLP frames from", "bytes outside MLLP frames", FLOOD),
        ("rejected a message from", "rejected messages", FLOOD),
        ("to make room for one from", "connections closed to make room", evicted),
    ] {
        let written = count(&lines, needle);
        assert_eq!(written, BURST, "{needle:?}: {written} lines for {floods} cases");
        let held =
            suppressed(&lines, about).unwrap_or_else(|| panic!("no count of the held-back warnings about {about}"));
        assert!(written + held >= floods.min(FLOOD), "{about}: {written} written + {held} held back < {floods}");
    }
    // The lines name peers and counts, never a message's content.
    assert!(lines.iter().all(|l| !l.contains("not HL7")), "a refused message's content was logged");
}
