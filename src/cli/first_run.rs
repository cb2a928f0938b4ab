//! The add-on's first start: no productions file in its configuration
//! folder yet. Rather than stop with an error that a new user of the
//! add-on store would meet before anything else, `switchboard run` writes a
//! commented example that needs nothing outside the box (files in, a
//! router, files out: no port, no peer, no certificate), and runs it, so
//! that a device with a switch appears in Home Assistant at once.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;

/// The example (`examples/first-run.yaml`, checked by the tests).
const EXAMPLE: &str = include_str!("../../examples/first-run.yaml");

/// The folder the example's `file_in` item reads, created with it (a
/// missing folder would put the item in error).
const INBOX: &str = "inbox";

/// Writes the example at `path`, and its inbox beside it. The file is
/// written under a temporary name, synced and renamed, so that a crash
/// leaves either no file (and the next start writes it again) or all of it.
pub(super) fn write_example(path: &Path) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir.join(INBOX))
        .with_context(|| format!("cannot create the example's folder {}", dir.join(INBOX).display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = dir.join(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(EXAMPLE.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    };
    write().with_context(|| format!("cannot write the example productions file {}", path.display()))
}
