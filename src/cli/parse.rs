//! `switchboard parse`: a readable tree or JSON of every message in a file.

use std::fmt::Write as _;
use std::process::ExitCode;

use serde_json::{Value, json};

use super::ParseArgs;
use super::input::Input;
use crate::hl7::{Message, outline, segment_paths};

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

/// Writes one line per non-empty element, indented by depth.
fn write_tree(out: &mut String, msg: &Message<'_>) {
    for l in outline(msg) {
        if l.depth == 0 {
            let _ = writeln!(out, "{}", l.path);
        } else {
            line(out, l.depth, &l.path, &l.value);
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
    let segments: Vec<Value> = segment_paths(msg)
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
