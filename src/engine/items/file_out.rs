//! `file_out`: an operation that writes each message of its queue to a file
//! in a folder. Files appear atomically: written under a temporary name,
//! synced, then renamed, so a reader never sees half a message.

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::ItemCtx;
use crate::config::FileOutConfig;
use crate::hl7::Message;
use crate::store::{Finished, Status};

pub(super) async fn run(ctx: &ItemCtx, config: &FileOutConfig) {
    let seq = AtomicU64::new(0);
    while let Some(batch) = ctx.next_batch(32).await {
        for message in batch {
            let stats = ctx.stats();
            stats.bump(&stats.received, 1);
            let name = file_name(&config.filename, &message.body, ctx.name(), seq.fetch_add(1, Ordering::Relaxed));
            // Off the thread the operations share: the write ends in an
            // fsync, which must not hold up other operations' deliveries.
            let (dir, file, body) = (config.path.clone(), name.clone(), message.body.clone());
            let started = std::time::Instant::now();
            let written = tokio::task::spawn_blocking(move || write_atomically(&dir, &file, &body))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            if let Err(e) = written {
                // A full disk or a missing permission: keep the message
                // queued and put the item in error until writing works again.
                ctx.fail(format!("cannot write {}: {e}", config.path.join(&name).display()));
                if ctx.sleep(std::time::Duration::from_secs(5)).await.is_err() {
                    return;
                }
                break;
            }
            ctx.recovered();
            let finished = Finished {
                header_id: message.id,
                production: ctx.production_id().to_owned(),
                item: ctx.name().to_owned(),
                status: Status::Completed,
                attempts: message.attempts + 1,
                reply: None,
                error: None,
            };
            // Noted in the delivery log, like `mllp_out`'s results: safe
            // from a crash at once, and a store that cannot commit it (a
            // full disk) retries it without the file being written again.
            if ctx.record_result(&finished, false).await.is_err() {
                return;
            }
            stats.latency.observe(started.elapsed());
            stats.bump(&stats.sent, 1);
        }
    }
}

/// A temporary file that failed to be written (a full disk) is removed:
/// its name changes with the sequence number and the time, so it would
/// not be written over by the next try, and left behind it would keep the
/// space the next try needs.
fn write_atomically(dir: &Path, name: &str, body: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let written = std::fs::File::create(&tmp).and_then(|mut file| {
        file.write_all(body)?;
        file.sync_data()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, dir.join(name))) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

/// Fills the filename pattern. Values are reduced to characters that are
/// safe in a file name on every platform.
fn file_name(pattern: &str, body: &[u8], item: &str, seq: u64) -> String {
    let msg = Message::parse(body).ok();
    let text = |path: &str| {
        msg.as_ref()
            .and_then(|m| m.text(path).ok().flatten())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "unknown".into())
    };
    let message_type = match (text("MSH-9.1"), text("MSH-9.2")) {
        (code, event) if event != "unknown" => format!("{code}_{event}"),
        (code, _) => code,
    };
    let format = time::macros::format_description!("[year][month][day][hour][minute][second][subsecond digits:3]");
    let timestamp = time::OffsetDateTime::now_utc().format(&format).unwrap_or_default();
    let filled = pattern
        .replace("{control_id}", &text("MSH-10"))
        .replace("{message_type}", &message_type)
        .replace("{timestamp}", &timestamp)
        .replace("{seq}", &seq.to_string())
        .replace("{item}", item);
    filled.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::file_name;

    #[test]
    fn patterns_are_filled_and_made_safe() {
        let body = b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|ID/../1|P|2.5";
        assert_eq!(file_name("{control_id}.hl7", body, "Out", 0), "ID_.._1.hl7");
        assert_eq!(file_name("{message_type}-{seq}-{item}.hl7", body, "Files out", 7), "ADT_A01-7-Files_out.hl7");
        assert_eq!(file_name("{control_id}.hl7", b"junk", "Out", 0), "unknown.hl7");
    }
}
