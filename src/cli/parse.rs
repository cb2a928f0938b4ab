//! `switchboard parse`: a readable tree or JSON of every message in a file.

use std::fmt::Write as _;
use std::process::ExitCode;

use serde_json::{Value, json};

use super::ParseArgs;
use super::input::Input;
use crate::hl7::{Message, Segment};

pub(super) fn run(args: &ParseArgs) -> anyhow::Result<ExitCode> {
    let input = Input::read(&args.file)?;
    let batch = input.messages()?;
    let mut out = String::new();
    let mut json_messages = Vec::new();
    let mut failed = false;
    for (n, offset) in batch.offsets.iter().enumerate() {
        let msg = match input.parse(&batch, n) {
            Ok(msg) => msg,
            Err(e) => {
                // The words `send` fails with, but the other messages are
                // still shown.
                errln!("error: {e}");
                failed = true;
                continue;
            }
        };
        if let Err(e) = msg.check_escapes() {
            let e = e.shifted(*offset);
            errln!("{}: message {}: warning: {e}; the text is kept as written", input.name, n + 1);
        }
        if args.json {
            json_messages.push(message_json(&msg));
        } else {
            if batch.messages.len() > 1 {
                let _ = writeln!(out, "# message {} (byte {offset})", n + 1);
            }
            write_tree(&mut out, &msg);
        }
    }
    if batch.counts_mismatch() {
        errln!("{}: warning: the batch trailers declare other counts than the file holds", input.name);
    }
    if args.json {
        out = serde_json::to_string_pretty(&json_messages)?;
        out.push('\n');
    }
    out!("{out}")?;
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// The path prefix of a segment: `PID` or `OBX[2]` for later occurrences.
fn segment_prefixes<'m>(msg: &'m Message<'_>) -> impl Iterator<Item = (String, Segment<'m>)> + 'm {
    let mut seen = std::collections::HashMap::<&str, usize>::new();
    msg.segments().map(move |seg| {
        let n = seen.entry(seg.id()).or_default();
        *n += 1;
        let prefix = if *n == 1 { seg.id().to_owned() } else { format!("{}[{n}]", seg.id()) };
        (prefix, seg)
    })
}

/// Writes one line per non-empty element, indented by depth.
fn write_tree(out: &mut String, msg: &Message<'_>) {
    for (prefix, seg) in segment_prefixes(msg) {
        let _ = writeln!(out, "{prefix}");
        for (n, field) in seg.fields() {
            if field.raw().is_empty() {
                continue;
            }
            let base = format!("{prefix}-{n}");
            let reps = field.repetitions().len();
            let header_field = seg.id() == "MSH" && n <= 2;
            line(out, 1, &base, &field.text());
            if header_field {
                continue;
            }
            for (r, rep) in field.repetitions().enumerate() {
                let rep_path = if reps > 1 { format!("{base}[{}]", r + 1) } else { base.clone() };
                if reps > 1 && !rep.raw().is_empty() {
                    line(out, 2, &rep_path, &rep.text());
                }
                let comps = rep.components().len();
                let depth = if reps > 1 { 3 } else { 2 };
                for (c, comp) in rep.components().enumerate() {
                    if comps == 1 && comp.subcomponents().len() == 1 || comp.raw().is_empty() {
                        continue;
                    }
                    let comp_path = format!("{rep_path}.{}", c + 1);
                    line(out, depth, &comp_path, &comp.text());
                    if comp.subcomponents().len() > 1 {
                        for (s, sub) in comp.subcomponents().enumerate() {
                            if !sub.is_empty() {
                                line(out, depth + 1, &format!("{comp_path}.{}", s + 1), &msg.decode(sub));
                            }
                        }
                    }
                }
            }
        }
    }
}

fn line(out: &mut String, depth: usize, path: &str, value: &str) {
    let indent = "  ".repeat(depth);
    let width = 22usize.saturating_sub(indent.len());
    let _ = write!(out, "{indent}{path:<width$} ");
    for c in value.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('\n');
}

fn message_json(msg: &Message<'_>) -> Value {
    let segments: Vec<Value> = segment_prefixes(msg)
        .map(|(prefix, seg)| {
            let fields: Vec<Value> = seg
                .fields()
                .map(|(n, field)| {
                    let repetitions: Vec<Value> = field
                        .repetitions()
                        .map(|rep| {
                            rep.components()
                                .map(|comp| comp.subcomponents().map(|s| Value::from(msg.decode(s))).collect::<Value>())
                                .collect()
                        })
                        .collect();
                    let mut obj = json!({ "path": format!("{prefix}-{n}"), "value": field.text() });
                    if !(seg.id() == "MSH" && n <= 2) {
                        obj["repetitions"] = Value::Array(repetitions);
                    }
                    obj
                })
                .collect();
            json!({ "id": seg.id(), "path": prefix, "fields": fields })
        })
        .collect();
    json!({
        "control_id": msg.control_id().map(|v| msg.decode(v)),
        "charset": format!("{:?}", msg.charset()),
        "segments": segments,
    })
}
