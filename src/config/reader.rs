//! Reading typed settings out of the YAML tree while collecting problems.
//!
//! Every reader returns `None` after recording a problem, so the walk goes
//! on and the file's other mistakes are reported in the same run.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::units::{parse_duration, parse_size};
use super::yaml::{Node, Value};
use super::{Position, Problem};

/// Problems and warnings found so far, and what relative paths are
/// resolved against.
pub(crate) struct Ctx {
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
    pub base_dir: PathBuf,
}

impl Ctx {
    pub(super) fn new(base_dir: PathBuf) -> Self {
        Self { problems: Vec::new(), warnings: Vec::new(), base_dir }
    }

    pub(super) fn error(&mut self, path: &str, pos: Position, message: impl Into<String>) {
        self.problems.push(Problem { path: path.to_owned(), message: message.into(), position: Some(pos) });
    }

    pub(super) fn warn(&mut self, path: &str, pos: Position, message: impl Into<String>) {
        self.warnings.push(Problem { path: path.to_owned(), message: message.into(), position: Some(pos) });
    }

    /// A relative path is taken relative to the productions file's folder.
    pub(super) fn resolve(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() { path.to_owned() } else { self.base_dir.join(path) }
    }
}

/// Appends a key to a path, quoting keys that would make the path
/// ambiguous (`productions."ADT feed".name`).
pub(crate) fn join(base: &str, key: &str) -> String {
    let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if plain { key.to_owned() } else { format!("{key:?}") };
    if base.is_empty() { key } else { format!("{base}.{key}") }
}

/// The entries of a mapping. Non-text keys and duplicates are reported when
/// it is made.
///
/// Each setting is declared once, where it is read: every `get`, `has`,
/// `read` and `required` records the key it asks for. A mapping with fixed
/// keys is read through [`Fields::closed`], which afterwards reports every
/// key nobody asked for as unknown, with the closest asked key as a
/// suggestion. So a reader must ask for all of its keys on every path,
/// before it gives up on a bad value (the tests give every kind of mapping
/// an unknown key and one of each known key).
pub(crate) struct Fields<'a> {
    pub path: String,
    pub pos: Position,
    entries: Vec<(&'a str, Position, &'a Node)>,
    /// The keys asked for so far, in the order asked: the valid keys.
    asked: RefCell<Vec<&'static str>>,
}

impl<'a> Fields<'a> {
    /// Reads `node` as a mapping whose keys are names chosen by the user
    /// (production ids, TLS configuration names). `what` names it in
    /// messages ("`productions`").
    pub(super) fn new(ctx: &mut Ctx, path: &str, node: &'a Node, what: &str) -> Option<Fields<'a>> {
        let Value::Map(map) = &node.value else {
            ctx.error(
                path,
                node.pos,
                format!(
                    "found {}; expected a mapping: write the settings of {what} as `key: value` lines",
                    node.value.describe()
                ),
            );
            return None;
        };
        let mut fields =
            Fields { path: path.to_owned(), pos: node.pos, entries: Vec::new(), asked: RefCell::default() };
        for (key, value) in map {
            let Value::Str(name) = &key.value else {
                ctx.error(
                    path,
                    key.pos,
                    format!("the key {} is not text; keys are names such as `port`", key.value.describe()),
                );
                continue;
            };
            if let Some(first) = map.iter().find(|(k, _)| k.value == key.value).filter(|(k, _)| k.pos != key.pos) {
                ctx.error(
                    &join(path, name),
                    key.pos,
                    format!("`{name}` is given twice (first on line {}); keep one", first.0.pos.line),
                );
                continue;
            }
            fields.entries.push((name.as_str(), key.pos, value));
        }
        Some(fields)
    }

    /// Reads `node` as a mapping of settings with `body`, then reports each
    /// key `body` did not ask for as unknown in `what` ("an item of kind
    /// mllp_in"). `None` when `node` is not a mapping.
    pub(super) fn closed<R>(
        ctx: &mut Ctx,
        path: &str,
        node: &'a Node,
        what: &str,
        body: impl FnOnce(&mut Ctx, &Fields<'a>) -> R,
    ) -> Option<R> {
        let fields = Fields::new(ctx, path, node, what)?;
        let out = body(ctx, &fields);
        let asked = fields.asked.borrow();
        for &(name, pos, _) in &fields.entries {
            if asked.contains(&name) {
                continue;
            }
            let suggestion = match closest(name, asked.iter().copied()) {
                Some(close) => format!("did you mean `{close}`? "),
                None => String::new(),
            };
            ctx.error(
                &join(path, name),
                pos,
                format!("unknown key `{name}` in {what}; {suggestion}valid keys are: {}", asked.join(", ")),
            );
        }
        Some(out)
    }

    /// The value of `key`, if present.
    pub(super) fn get(&self, key: &'static str) -> Option<&'a Node> {
        let mut asked = self.asked.borrow_mut();
        if !asked.contains(&key) {
            asked.push(key);
        }
        drop(asked);
        self.entries.iter().find(|(k, _, _)| *k == key).map(|(_, _, v)| *v)
    }

    pub(super) fn has(&self, key: &'static str) -> bool {
        self.get(key).is_some()
    }

    /// Where `key` is written, or where the mapping starts when it is not.
    pub(super) fn key_pos(&self, key: &str) -> Position {
        self.entries.iter().find(|(k, _, _)| *k == key).map_or(self.pos, |&(_, pos, _)| pos)
    }

    /// The path of `key` inside this mapping.
    pub(super) fn path_of(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The value of a required `key`; when missing, reports it with `hint`
    /// (what to write).
    pub(super) fn required(&self, ctx: &mut Ctx, key: &'static str, what: &str, hint: &str) -> Option<&'a Node> {
        let node = self.get(key);
        if node.is_none() {
            ctx.error(&self.path, self.pos, format!("{what} has no `{key}`; {hint}"));
        }
        node
    }

    /// Reads an optional `key` with `read`, falling back to `default` when it
    /// is absent or wrong (the problem is recorded either way).
    pub(super) fn read<T>(
        &self,
        ctx: &mut Ctx,
        key: &'static str,
        default: T,
        read: impl FnOnce(&mut Ctx, &str, &Node) -> Option<T>,
    ) -> T {
        match self.get(key) {
            Some(node) => read(ctx, &self.path_of(key), node).unwrap_or(default),
            None => default,
        }
    }

    /// The entries in file order, for a mapping whose keys are names.
    pub(super) fn entries(&self) -> impl Iterator<Item = (&'a str, &'a Node)> + '_ {
        self.entries.iter().map(|&(k, _, v)| (k, v))
    }
}

fn wrong_type(ctx: &mut Ctx, path: &str, node: &Node, expected: &str) {
    ctx.error(path, node.pos, format!("found {}; expected {expected}", node.value.describe()));
}

/// Text. A number or boolean is refused with the advice to quote it, so
/// `name: 2575` does not silently become a name.
pub(crate) fn text(ctx: &mut Ctx, path: &str, node: &Node) -> Option<String> {
    match &node.value {
        Value::Str(s) => Some(s.clone()),
        Value::Int(_) | Value::Float(_) | Value::Bool(_) => {
            let shown = match &node.value {
                Value::Int(i) => i.to_string(),
                Value::Float(f) => f.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => String::new(),
            };
            ctx.error(
                path,
                node.pos,
                format!("found {}; expected text, so put it in quotes: \"{shown}\"", node.value.describe()),
            );
            None
        }
        _ => {
            wrong_type(ctx, path, node, "text");
            None
        }
    }
}

/// Text that must not be empty or blank.
pub(crate) fn non_empty_text(ctx: &mut Ctx, path: &str, node: &Node, hint: &str) -> Option<String> {
    let value = text(ctx, path, node)?;
    if value.trim().is_empty() {
        ctx.error(path, node.pos, format!("is empty; {hint}"));
        return None;
    }
    Some(value)
}

pub(crate) fn boolean(ctx: &mut Ctx, path: &str, node: &Node) -> Option<bool> {
    match &node.value {
        Value::Bool(b) => Some(*b),
        _ => {
            ctx.error(path, node.pos, format!("found {}; expected true or false", node.value.describe()));
            None
        }
    }
}

/// A whole number within `min..=max`; `what` describes it ("a port number").
pub(crate) fn integer(ctx: &mut Ctx, path: &str, node: &Node, what: &str, min: i128, max: i128) -> Option<i128> {
    let range = format!("{what} from {min} to {max}");
    match &node.value {
        Value::Int(i) if (min..=max).contains(i) => Some(*i),
        Value::Int(i) => {
            ctx.error(path, node.pos, format!("{i} is out of range; use {range}"));
            None
        }
        Value::Str(s) if s.trim().parse::<i128>().is_ok() => {
            ctx.error(path, node.pos, format!("found the text {s:?}; expected {range}, so remove the quotes"));
            None
        }
        _ => {
            wrong_type(ctx, path, node, &range);
            None
        }
    }
}

/// A TCP port, 1–65535.
pub(crate) fn port(ctx: &mut Ctx, path: &str, node: &Node) -> Option<u16> {
    match &node.value {
        Value::Int(0) => {
            ctx.error(path, node.pos, "port 0 is not a valid port; use a port number from 1 to 65535");
            None
        }
        Value::Int(i) if !(1..=65535).contains(i) => {
            ctx.error(path, node.pos, format!("port {i} is out of range; use a port number from 1 to 65535"));
            None
        }
        _ => integer(ctx, path, node, "a port number", 1, 65535).and_then(|p| u16::try_from(p).ok()),
    }
}

/// A duration: a whole number of seconds or text such as `10s`, `1m30s`.
pub(crate) fn duration(ctx: &mut Ctx, path: &str, node: &Node) -> Option<Duration> {
    match &node.value {
        Value::Int(i) => match u64::try_from(*i) {
            Ok(secs) => Some(Duration::from_secs(secs)),
            Err(_) => {
                ctx.error(
                    path,
                    node.pos,
                    format!("{i} is not a valid duration; use a positive number of seconds or e.g. 10s, 5m"),
                );
                None
            }
        },
        Value::Str(s) => match parse_duration(s) {
            Ok(d) => Some(d),
            Err(why) => {
                ctx.error(path, node.pos, why);
                None
            }
        },
        Value::Float(f) => {
            ctx.error(path, node.pos, format!("{f} has a fraction; use a smaller unit, e.g. 1500ms for 1.5 seconds"));
            None
        }
        _ => {
            wrong_type(ctx, path, node, "a duration such as 10s, 5m or 1m30s");
            None
        }
    }
}

/// A duration that must be longer than zero.
pub(crate) fn positive_duration(ctx: &mut Ctx, path: &str, node: &Node) -> Option<Duration> {
    let d = duration(ctx, path, node)?;
    if d.is_zero() {
        ctx.error(path, node.pos, "a zero duration is not allowed here; use at least 1ms, e.g. 10s");
        return None;
    }
    Some(d)
}

/// A size in bytes: a number, or text such as `16MiB`.
pub(crate) fn size(ctx: &mut Ctx, path: &str, node: &Node) -> Option<u64> {
    match &node.value {
        Value::Int(i) => match u64::try_from(*i) {
            Ok(n) => Some(n),
            Err(_) => {
                ctx.error(path, node.pos, format!("{i} is not a valid size; use a number of bytes or e.g. 16MiB"));
                None
            }
        },
        Value::Str(s) => match parse_size(s) {
            Ok(n) => Some(n),
            Err(why) => {
                ctx.error(path, node.pos, why);
                None
            }
        },
        _ => {
            wrong_type(ctx, path, node, "a size such as 16MiB, 512KiB or 1MB");
            None
        }
    }
}

/// One of a fixed set of words.
pub(crate) fn choice<T: Copy>(ctx: &mut Ctx, path: &str, node: &Node, options: &[(&str, T)]) -> Option<T> {
    let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
    let valid = names.join(", ");
    let Value::Str(s) = &node.value else {
        wrong_type(ctx, path, node, &format!("one of: {valid}"));
        return None;
    };
    if let Some((_, v)) = options.iter().find(|(n, _)| n == s) {
        return Some(*v);
    }
    let suggestion = match closest(s, names.iter().copied()) {
        Some(close) => format!("did you mean `{close}`? "),
        None => String::new(),
    };
    ctx.error(path, node.pos, format!("{s:?} is not valid here; {suggestion}use one of: {valid}"));
    None
}

/// A path in the file system, resolved against the productions file's
/// folder.
pub(crate) fn file_path(ctx: &mut Ctx, path: &str, node: &Node) -> Option<PathBuf> {
    let value = non_empty_text(ctx, path, node, "write a path, e.g. /ssl/server.crt or data/out")?;
    Some(ctx.resolve(&value))
}

/// A name with where it was written, for checking references later.
#[derive(Debug, Clone)]
pub(crate) struct Ref {
    pub name: String,
    pub path: String,
    pub pos: Position,
}

/// A list of names (`[Lab out, Archive]`), or a single name.
pub(crate) fn names(ctx: &mut Ctx, path: &str, node: &Node) -> Option<Vec<Ref>> {
    let items: Vec<(String, &Node)> = match &node.value {
        Value::Seq(list) => list.iter().enumerate().map(|(i, n)| (format!("{path}[{i}]"), n)).collect(),
        Value::Str(_) => vec![(path.to_owned(), node)],
        Value::Null => Vec::new(),
        _ => {
            wrong_type(ctx, path, node, "a list of item names, e.g. [Lab out, Archive]");
            return None;
        }
    };
    let mut out = Vec::new();
    for (item_path, item) in items {
        if let Some(name) = non_empty_text(ctx, &item_path, item, "write the name of an item") {
            out.push(Ref { name, path: item_path, pos: item.pos });
        }
    }
    Some(out)
}

/// The candidate closest to `word`, if it is close enough to be a likely
/// typo: differs only in case, or within about a third of its letters.
pub(crate) fn closest<'c>(word: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let lower = word.to_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        let distance = edit_distance(&lower, &candidate.to_lowercase());
        let limit = (candidate.chars().count().max(word.chars().count()) / 3).max(1);
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// Edit distance counting a swap of two neighbouring letters as one edit
/// (optimal string alignment), since `prot` for `port` is a typical typo.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for (i, row) in d.chunks_mut(width).enumerate() {
        row[0] = i;
    }
    for (j, cell) in d.iter_mut().take(width).enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best =
                (d[(i - 1) * width + j] + 1).min(d[i * width + j - 1] + 1).min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(closest("prot", ["host", "port", "tls"]), Some("port"));
        assert_eq!(closest("lab out", ["Lab out", "Archive"]), Some("Lab out"));
        assert_eq!(closest("Lab ot", ["Lab out", "Archive"]), Some("Lab out"));
        assert_eq!(closest("xyz", ["Lab out", "Archive"]), None);
        assert_eq!(closest("whne", ["when", "send"]), Some("when"));
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("prot", "port"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn joins_paths() {
        assert_eq!(join("", "productions"), "productions");
        assert_eq!(join("productions", "adt"), "productions.adt");
        assert_eq!(join("productions", "ADT feed"), "productions.\"ADT feed\"");
    }
}
