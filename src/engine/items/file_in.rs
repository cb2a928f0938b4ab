//! `file_in`: a business service that picks up HL7 files from a folder,
//! stores their messages, and moves each file to an archive folder once all
//! its messages are committed. Files that hold no readable message go to an
//! `error` folder beside the archive, so they are neither lost nor retried
//! forever.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::ItemCtx;
use crate::config::FileInConfig;
use crate::hl7::{Message, check_header, split_batch};
use crate::store::EventLevel;

pub(super) async fn run(ctx: &ItemCtx, config: &FileInConfig, targets: &[String]) {
    let archive = config.archive_dir();
    let rejected = archive.with_file_name("error");
    loop {
        match scan(&config.path, &config.pattern) {
            Ok(files) => {
                ctx.recovered();
                for file in files {
                    if ctx.is_cancelled() {
                        return;
                    }
                    take(ctx, &file, targets, &archive, &rejected).await;
                }
            }
            Err(e) => ctx.fail(format!("cannot read folder {}: {e}", config.path.display())),
        }
        if ctx.sleep(config.poll_interval).await.is_err() {
            return;
        }
    }
}

/// Matching files, oldest name first.
fn scan(dir: &Path, pattern: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| wildcard(pattern.as_bytes(), e.file_name().to_string_lossy().as_bytes()))
        .map(|e| e.path())
        .collect();
    files.sort();
    Ok(files)
}

/// `*` matches any run of characters, `?` any one; everything else itself.
fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

async fn take(ctx: &ItemCtx, file: &Path, targets: &[String], archive: &Path, rejected: &Path) {
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            // Perhaps still being written; try again next time.
            tracing::debug!(item = ctx.name(), file = %name, error = %e, "cannot read file yet");
            return;
        }
    };
    let stats = ctx.stats();
    let messages = match split_batch(&bytes) {
        Ok(batch) => batch.messages,
        Err(e) => {
            stats.bump(&stats.errors, 1);
            ctx.event(EventLevel::Error, "file", format!("{name}: {e}; moved to {}", rejected.display()));
            move_into(file, rejected, &name);
            return;
        }
    };
    let total = messages.len() as u64;
    let intake = ctx.intake(targets);
    let origin: Arc<str> = name.as_str().into();
    let mut bad = 0;
    for raw in messages {
        let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
        let msg = match Message::parse(raw) {
            Ok(m) if check_header(&m).is_ok() => m,
            Ok(m) => {
                bad += 1;
                let reason = check_header(&m).err().map(|e| e.to_string()).unwrap_or_default();
                ctx.event(EventLevel::Error, "file", format!("{name}: a message was skipped: {reason}"));
                continue;
            }
            Err(e) => {
                bad += 1;
                ctx.event(EventLevel::Error, "file", format!("{name}: a message was skipped: {e}"));
                continue;
            }
        };
        let (inbound, decided) = intake.inbound(&msg, Bytes::copy_from_slice(raw), origin.clone());
        match ctx.store().commit_inbound(inbound).await {
            Ok(committed) => intake.account(&committed, &decided),
            Err(e) => {
                // Leave the file in place; it is picked up again (messages
                // already committed from it will arrive twice: at-least-once).
                ctx.fail(format!("cannot store messages from {name}: {e}"));
                return;
            }
        }
        stats.bump(&stats.received, 1);
    }
    stats.bump(&stats.errors, bad);
    if bad == total {
        ctx.event(EventLevel::Error, "file", format!("{name}: no readable message; moved to {}", rejected.display()));
        move_into(file, rejected, &name);
        return;
    }
    move_into(file, archive, &name);
}

/// Moves a file into `dir`, adding a suffix rather than overwriting.
fn move_into(file: &Path, dir: &Path, name: &str) {
    if let Err(e) = std::fs::create_dir_all(dir) {
        tracing::error!(dir = %dir.display(), error = %e, "cannot create folder");
        return;
    }
    let mut target = dir.join(name);
    let mut n = 1;
    while target.exists() {
        target = dir.join(format!("{name}.{n}"));
        n += 1;
    }
    if let Err(e) = std::fs::rename(file, &target) {
        tracing::error!(file = %file.display(), error = %e, "cannot move file");
    }
}

#[cfg(test)]
mod tests {
    use super::wildcard;

    #[test]
    fn wildcards() {
        assert!(wildcard(b"*.hl7", b"a.hl7"));
        assert!(wildcard(b"*.hl7", b".hl7"));
        assert!(!wildcard(b"*.hl7", b"a.hl7.tmp"));
        assert!(wildcard(b"ADT_??.*", b"ADT_01.txt"));
        assert!(!wildcard(b"ADT_??.*", b"ADT_1.txt"));
        assert!(wildcard(b"*", b"anything"));
        assert!(wildcard(b"a*b*c", b"axxbyyc"));
        assert!(!wildcard(b"a*b*c", b"axxbyy"));
    }
}
