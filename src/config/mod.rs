//! The productions file: what Switchboard runs, read from YAML and checked
//! before anything starts.
//!
//! The file has three top-level keys:
//!
//! ```yaml
//! store:                 # optional: durability and retention (StoreSettings)
//!   durability: full
//!   retention_days: 30
//!   background_priority: low
//!
//! tls:                   # optional: named TLS configurations (TlsConfig)
//!   adt-server:
//!     role: server
//!     cert_file: /ssl/switchboard.crt
//!     key_file: /ssl/switchboard.key
//!
//! productions:           # required: production id -> production
//!   adt:                 # id: [a-z0-9][a-z0-9_-]*, used in Home Assistant ids
//!     name: ADT feed     # display name; default: the id
//!     autostart: true
//!     items:
//!       - name: ADT in
//!         kind: mllp_in           # mllp_in | file_in | router | mllp_out | file_out
//!         port: 2575
//!         tls: adt-server
//!         targets: [ADT router]   # services name where messages go
//!       - name: ADT router
//!         kind: router
//!         rules:
//!           - when: MSH-9.1 = "ADT"
//!             send: [Lab out]
//!       - name: Lab out
//!         kind: mllp_out
//!         host: lab.example.org
//!         port: 6661
//! ```
//!
//! Each setting, its default and its valid values are documented on the
//! field it fills: [`StoreSettings`], [`TlsConfig`], [`ProductionConfig`],
//! [`ItemConfig`] and the settings of each kind ([`MllpInConfig`],
//! [`RouterConfig`], [`MllpOutConfig`], [`FileInConfig`],
//! [`FileOutConfig`]). `examples/demo.yaml` is a complete, commented file.
//!
//! Conventions that hold everywhere in the file:
//!
//! - **Relative paths** (`path`, `archive_path`, `ca_file`, `cert_file`,
//!   `key_file`, `key_password_file`) are relative to the folder that holds
//!   the productions file, not to the directory Switchboard was started
//!   from, so a file and the folders next to it can be moved together.
//! - **Durations** are written `500ms`, `10s`, `5m`, `1h`, `1d` or combined
//!   (`1m30s`); a bare number is seconds. See [`parse_duration`].
//! - **Sizes** are a number of bytes or `512KiB`, `16MiB`, `1MB`. See
//!   [`parse_size`].
//! - **Booleans** are `true` and `false` only; `yes`, `no`, `on` and `off`
//!   are text.
//! - **Unknown keys are errors**, so a misspelt setting never silently falls
//!   back to its default.
//!
//! Loading collects every problem rather than stopping at the first: each
//! [`Problem`] names the path inside the file (`productions.adt.items[2].port`),
//! what is wrong, what would be valid, and the line and column. Findings that
//! do not prevent running (an operation that retries forever, an item nothing
//! sends to) are [`Config::warnings`].

mod build;
mod check;
mod describe;
mod model;
mod reader;
mod units;
mod yaml;

use std::fmt;
use std::path::{Path, PathBuf};

pub use check::probe_ports;
pub use model::{
    AckMode, BackgroundPriority, Config, Durability, FileInConfig, FileOutConfig, ItemConfig, ItemKind, ItemRole,
    KindTag, MllpInConfig, MllpOutConfig, NoMatch, ProductionConfig, RouterConfig, RuleAction, RuleConfig,
    StoreSettings, TlsConfig, TlsRole, TlsVersion, VerifyPeer,
};
pub use units::{format_duration, parse_duration, parse_size};

/// Reads, parses and validates the productions file at `path`.
///
/// Relative paths inside the file are resolved against the file's folder.
/// On failure, the error lists every problem found, each with its place in
/// the file and the fix.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(path, &text),
        Err(err) => {
            let hint = match err.kind() {
                std::io::ErrorKind::NotFound => "check the path of the productions file",
                std::io::ErrorKind::PermissionDenied => "make the file readable by the user Switchboard runs as",
                std::io::ErrorKind::InvalidData => "save the file as UTF-8 text",
                _ => "check that the path names a readable file",
            };
            Err(ConfigError {
                file: path.to_owned(),
                problems: vec![Problem {
                    path: String::new(),
                    message: format!("cannot read the productions file: {err}; {hint}"),
                    position: None,
                }],
            })
        }
    }
}

/// Parses and validates a productions file from its text.
///
/// `source` is where the text came from: it names the file in messages,
/// and relative paths inside the text are resolved against its folder.
pub fn parse(source: &Path, text: &str) -> Result<Config, ConfigError> {
    let fail = |problems| ConfigError { file: source.to_owned(), problems };
    let root = yaml::parse(text).map_err(|problem| fail(vec![problem]))?;
    let base_dir = source.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut ctx = reader::Ctx::new(base_dir);
    let config = build::walk(&mut ctx, &root).and_then(|draft| check::finish(&mut ctx, source, draft));
    match config {
        Some(config) if ctx.problems.is_empty() => Ok(config),
        _ => {
            // Top to bottom, as a reader goes through the file.
            ctx.problems.sort_by_key(|p| p.position);
            Err(fail(ctx.problems))
        }
    }
}

/// Everything wrong with a productions file.
///
/// Displayed as one line per problem, `<file>: <path>: <what is wrong>;
/// <what would be valid> (line L, column C)`, ready for a terminal, a log or
/// the web UI.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigError {
    /// The productions file.
    pub file: PathBuf,
    /// The problems, in the order of their position in the file.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {problem}", self.file.display())?;
        }
        Ok(())
    }
}

/// One problem (or warning) in a productions file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where in the file, as keys and list indexes:
    /// `productions.adt.items[2].port`, `tls.lab-client`. Empty for problems
    /// with the file as a whole (unreadable, YAML syntax).
    pub path: String,
    /// What is wrong, then after `; ` what would be valid.
    pub message: String,
    /// Line and column of the offending text, when known.
    pub position: Option<Position>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path.is_empty(), self.position) {
            (true, Some(p)) => write!(f, "line {}, column {}: {}", p.line, p.column, self.message),
            (true, None) => f.write_str(&self.message),
            (false, Some(p)) => write!(f, "{}: {} (line {}, column {})", self.path, self.message, p.line, p.column),
            (false, None) => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// A place in the productions file, both numbers starting at 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Line number.
    pub line: u64,
    /// Column number, in characters.
    pub column: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `config_load` fuzz target: a file of comments without
    /// a final line break was reported at line 2, which it does not have.
    #[test]
    fn an_empty_file_is_a_problem_of_the_whole_file() {
        for text in ["", "# # S", "# nothing yet\n", "\r\n"] {
            let err = parse(Path::new("p.yaml"), text).unwrap_err();
            assert_eq!(err.problems.len(), 1, "{text:?}: {err}");
            let problem = &err.problems[0];
            assert_eq!((problem.path.as_str(), problem.position), ("", None), "{text:?}");
            assert!(err.to_string().starts_with("p.yaml: the file is empty; "), "{text:?}: {err}");
        }
    }
}
