//! YAML to a tree of nodes that remember where they were written.
//!
//! The productions file is read in two steps: first into this untyped tree
//! (the only step that can fail outright, on a YAML syntax error), then into
//! the typed settings by a walk that collects every problem instead of
//! stopping at the first, each with its path and position.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DuplicateKeyPolicy, Spanned};

use super::{Position, Problem};

/// A YAML value and where it starts in the file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub value: Value,
    pub pos: Position,
}

/// The YAML value of a [`Node`]. Mappings keep the file's order and every
/// entry, duplicates included, so that duplicates can be reported with both
/// positions.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// How the value is described in an error message: "the text \"x\"",
    /// "the number 5", "a list".
    pub(super) fn describe(&self) -> String {
        match self {
            Value::Null => "nothing (an empty value)".to_owned(),
            Value::Bool(b) => format!("the boolean {b}"),
            Value::Int(i) => format!("the number {i}"),
            Value::Float(f) => format!("the number {f}"),
            Value::Str(s) => format!("the text {s:?}"),
            Value::Seq(_) => "a list".to_owned(),
            Value::Map(_) => "a mapping".to_owned(),
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(deserializer)?;
        let at = spanned.referenced;
        Ok(Node { value: spanned.value, pos: Position { line: at.line(), column: at.column() } })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }

    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Value, E> {
        i128::try_from(v).map(Value::Int).map_err(|_| E::custom("integer too large"))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Value::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(node) = seq.next_element::<Node>()? {
            items.push(node);
        }
        Ok(Value::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<Node, Node>()? {
            entries.push(entry);
        }
        Ok(Value::Map(entries))
    }
}

/// Nodes (values, lists and maps, aliases expanded) a file may hold: a
/// productions file of a hundred productions of ten items each has about
/// 30,000, and a file that expands further through aliases is refused
/// sooner than at the parser's own limit of 250,000.
const MAX_NODES: usize = 100_000;

/// Parses YAML text into a tree, or says where the syntax is wrong.
///
/// YAML 1.1 booleans (`yes`, `no`, `on`, `off`, `y`, `n`) stay text, so that
/// an item called `n` or a value `no` means what it says; only `true` and
/// `false` are booleans.
pub(crate) fn parse(text: &str) -> Result<Node, Problem> {
    let options = serde_saphyr::options! {
        strict_booleans: true,
        duplicate_keys: DuplicateKeyPolicy::LastWins,
        with_snippet: false,
        budget: serde_saphyr::budget! { max_nodes: MAX_NODES },
    };
    serde_saphyr::from_str_with_options::<Node>(text, options).map_err(|err| {
        let mut message = err.to_string();
        let position = err.location().filter(|l| l.line() > 0).map(|l| Position { line: l.line(), column: l.column() });
        // The position is reported separately; drop the library's suffix.
        if let Some(p) = position {
            let suffix = format!(" at line {}, column {}", p.line, p.column);
            if let Some(stripped) = message.strip_suffix(&suffix) {
                message = stripped.to_owned();
            }
        }
        // The parser's limits (nodes, depth, aliases) guard against a file
        // that expands without end; hitting one is not an indentation slip.
        let hint = if matches!(err, serde_saphyr::Error::Budget { .. }) || message.contains("budget breached") {
            "the file is too large, too deeply nested, or expands too far through aliases (`*name`), \
             far beyond any productions file: look for an alias repeated by mistake"
        } else {
            "check the indentation, and quote values that contain `: `, `#`, `[`, `]`, `{` or `}`"
        };
        Problem { path: String::new(), message: format!("YAML syntax error: {message}; {hint}"), position }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_positions_and_duplicates() {
        let node = parse("b: 1\na: [x, y]\nb: no\n").unwrap();
        let Value::Map(entries) = node.value else { panic!("not a map") };
        let keys: Vec<_> = entries.iter().map(|(k, _)| (k.value.clone(), k.pos.line)).collect();
        assert_eq!(keys, vec![(Value::Str("b".into()), 1), (Value::Str("a".into()), 2), (Value::Str("b".into()), 3)]);
        let Value::Seq(list) = &entries[1].1.value else { panic!("not a list") };
        assert_eq!(list[1].value, Value::Str("y".into()));
        assert_eq!(list[1].pos, Position { line: 2, column: 8 });
        assert_eq!(entries[2].1.value, Value::Str("no".into()));
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let problem = parse("a: 1\nb:\n  - x\n  y: 2\n").unwrap_err();
        assert_eq!(problem.position, Some(Position { line: 4, column: 3 }));
        assert!(problem.message.starts_with("YAML syntax error: "), "{}", problem.message);
        assert!(!problem.message.contains(" at line "), "{}", problem.message);
    }

    /// Aliases nested to expand a few lines into millions of nodes are
    /// refused, and the error says so rather than blaming indentation.
    #[test]
    fn aliases_that_expand_without_end_are_refused_as_such() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for n in 1..9 {
            let refs = vec![format!("*a{}", n - 1); 10].join(", ");
            text.push_str(&format!("a{n}: &a{n} [{refs}]\n"));
        }
        text.push_str("productions: *a8\n");
        let started = std::time::Instant::now();
        let problem = parse(&text).unwrap_err();
        assert!(problem.message.contains("expands too far through aliases"), "{}", problem.message);
        assert!(!problem.message.contains("indentation"), "{}", problem.message);
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "{:?}", started.elapsed());
    }

    #[test]
    fn empty_text_is_null() {
        assert_eq!(parse("").unwrap().value, Value::Null);
        assert_eq!(parse("# only a comment\n").unwrap().value, Value::Null);
    }
}
