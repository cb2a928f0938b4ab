//! Loads arbitrary text as a productions file: the YAML reader, the walk
//! that turns it into settings and collects every problem, the checks
//! across items, and the error report.
//!
//! Checked beyond "no panic":
//! - a failed load reports at least one problem, each at a line and column
//!   inside the text (or just past its end; lines end as YAML ends them,
//!   at a lone CR too), in the order of the file;
//! - every problem and warning displays;
//! - a loaded file's router conditions read back from their canonical
//!   form, and every item describes its settings;
//! - for each line of the text, the duration and size readers never panic,
//!   and a duration written back by `format_duration` reads as itself.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use switchboard::config::{self, ItemKind, format_duration, parse_duration, parse_size};
use switchboard::rules::route::Condition;

/// Lines of the input also tried as durations and sizes.
const MAX_UNIT_LINES: usize = 8;

fuzz_target!(|data: &[u8]| {
    // `config::load` reads the file as UTF-8 text and stops at anything else.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let source = Path::new("/etc/switchboard/productions.yaml");
    // YAML ends a line at CR LF, LF or a lone CR, and so do the positions
    // in problems.
    let lines = text.replace("\r\n", "\n").bytes().filter(|&b| b == b'\n' || b == b'\r').count() as u64 + 1;

    match config::parse(source, text) {
        Ok(config) => {
            for warning in config.warnings() {
                let _ = warning.to_string();
                if let Some(p) = warning.position {
                    assert!(p.line >= 1 && p.line <= lines && p.column >= 1, "warning at {p:?}: {warning}");
                }
            }
            let _ = config.fed_by_own_operations();
            for production in &config.productions {
                for item in &production.items {
                    let _ = (item.role(), item.kind.describe());
                    let ItemKind::Router(router) = &item.kind else { continue };
                    for rule in &router.rules {
                        let Some(when) = &rule.when else { continue };
                        let canonical = when.to_string();
                        assert_eq!(canonical.parse::<Condition>().as_ref(), Ok(when), "{canonical}");
                        for step in &rule.transform {
                            let _ = step.to_string();
                        }
                    }
                }
            }
        }
        Err(error) => {
            assert!(!error.problems.is_empty(), "a refused file names no problem");
            assert_eq!(error.file, source);
            let _ = error.to_string();
            let mut previous = None;
            for problem in &error.problems {
                assert!(!problem.message.is_empty());
                if let Some(p) = problem.position {
                    assert!(p.line >= 1 && p.line <= lines && p.column >= 1, "problem at {p:?}: {problem}");
                    assert!(previous <= Some(p), "problems out of order: {previous:?} then {p:?}");
                    previous = Some(p);
                }
            }
        }
    }

    for line in text.lines().take(MAX_UNIT_LINES) {
        let _ = parse_size(line);
        if let Ok(d) = parse_duration(line) {
            let written = format_duration(d);
            assert_eq!(parse_duration(&written), Ok(d), "{line:?} written as {written:?}");
        }
    }
});
