//! Router rules: the conditions that pick which rule applies to a message and
//! the transforms a rule applies before it sends the message on.
//!
//! A `router` item holds ordered rules. Each rule has a condition (`when`),
//! an optional transform and its targets. Conditions are written by
//! integration engineers in the productions file, so the language reads like
//! the specs they already write — HL7 paths compared with quoted values — and
//! it is compiled once, when the configuration is loaded: a mistake is a
//! configuration error that points at the character, never a surprise while
//! messages are flowing.
//!
//! # Conditions
//!
//! ```text
//! condition  = or
//! or         = and { "or" and }
//! and        = unary { "and" unary }
//! unary      = "not" unary | primary
//! primary    = "(" or ")" | "true" | "false" | "exists" PATH | PATH comparison
//! comparison = "=" STRING | "!=" STRING | "in" list
//!            | "contains" STRING | "starts_with" STRING | "ends_with" STRING
//! list       = "[" STRING { "," STRING } [ "," ] "]"
//! ```
//!
//! - **Operands** are HL7 paths in the usual notation (`MSH-9.1`,
//!   `PID-3[2].4.2`, `OBX[3]-5`, see [`Path`]). A path is compared by its
//!   *decoded* text: HL7 escapes are resolved and the message's character set
//!   is applied, so `OBX-5 contains "1^2"` matches the raw value `1\S\2`. A
//!   path that names a whole field or component compares its full text,
//!   delimiters included.
//! - **Absent is empty**: a value the message does not reach (missing
//!   segment, field or component) compares as `""`, so `PID-7 = ""` is true
//!   whether PID-7 is empty or absent. `exists PID-7` is true when PID-7 is
//!   present and not empty, i.e. the same as `PID-7 != ""`.
//! - **Comparisons** are exact and case-sensitive, as HL7 codes are:
//!   `=`, `!=`, `in [..]` (equal to one of the values), `contains`,
//!   `starts_with` and `ends_with`. There are no regular expressions, so a
//!   rule always runs in time linear in the message.
//! - **Strings** are in double quotes; `\"` is a quote and `\\` a backslash.
//!   No other escapes exist: values are compared unescaped, so write `|`,
//!   not `\F\`.
//! - **Logic**: `not` binds tighter than `and`, which binds tighter than
//!   `or`; parentheses group. `true` matches every message (a catch-all last
//!   rule), `false` none (a rule switched off without deleting it).
//! - **Keywords** (`and`, `or`, `not`, `in`, `exists`, `contains`,
//!   `starts_with`, `ends_with`, `true`, `false`) are case-insensitive; paths
//!   are written in capitals.
//! - **Errors** give the 0-based character position and what was expected
//!   there, e.g. `at character 10: expected a quoted string after '=', e.g.
//!   MSH-9.1 = "ADT"`. Parentheses and `not` may nest at most 64 deep.
//!
//! Examples:
//!
//! ```text
//! MSH-9.1 = "ADT" and MSH-9.2 in ["A01", "A04"]
//! PID-7 = ""
//! not exists PID-7
//! (MSH-9.1 = "ADT" or MSH-9.1 = "ORU") and not PID-8 = "U"
//! OBX[3]-5 contains "hemolysed"
//! MSH-4 starts_with "GOOD"
//! true
//! ```
//!
//! ```
//! use switchboard::rules::route::{Condition, Transform, TransformStep};
//! use switchboard::hl7::Message;
//!
//! let raw = b"MSH|^~\\&|REG|GOOD HOSPITAL|LAB|LAB|20261128094512||ADT^A01|MSG1|P|2.5.1\rPID|1||123^^^H^MR||DOE^JOHN";
//! let when: Condition = r#"MSH-9.1 = "ADT" and MSH-9.2 in ["A01", "A04"] and not exists PID-7"#.parse()?;
//! assert!(when.matches(&Message::parse(raw)?));
//!
//! let err = r#"MSH-9.1 = ADT"#.parse::<Condition>().unwrap_err();
//! assert_eq!(err.to_string(), r#"at character 10: expected a quoted string after '=', e.g. MSH-9.1 = "ADT""#);
//!
//! let transform = Transform {
//!     steps: vec![TransformStep::Set { path: "PID-8".parse()?, value: "U".into() }],
//! };
//! let out = transform.apply(raw)?;
//! assert!(out.ends_with(b"DOE^JOHN|||U"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Transforms
//!
//! A [`Transform`] is an ordered list of [`TransformStep`]s (set, copy,
//! clear) applied to a copy of the message with [`MessageBuf`]: the stored
//! original is never changed, and every byte a step does not touch is
//! forwarded as received.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::hl7::{Message, MessageBuf, Path};

/// How deep parentheses and `not` may nest. Deep enough for any rule a
/// person writes; shallow enough that a hostile or generated configuration
/// cannot exhaust the stack of the parser or of [`Condition::matches`].
pub const MAX_NESTING: usize = 64;

/// A compiled router condition.
///
/// Parsed once from the productions file (see the [module
/// documentation](self) for the language) so that matching a message costs
/// only path lookups and string comparisons. [`Display`](fmt::Display)
/// writes the canonical form, which parses back to the same condition; the
/// web UI and `switchboard check` show rules that way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    expr: Expr,
}

/// Why a condition could not be compiled: the character where reading
/// stopped (0-based, counted in characters, not bytes) and what was expected
/// there, so the configuration error can point at the mistake.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("at character {position}: {reason}")]
pub struct RuleError {
    /// Character offset into the condition text.
    pub position: usize,
    /// What was expected at that position.
    pub reason: String,
}

impl Condition {
    /// The condition that matches every message, for a rule written without
    /// `when`.
    pub fn always() -> Self {
        Self { expr: Expr::Const(true) }
    }

    /// Whether `msg` satisfies the condition. Never fails: a value the
    /// message does not have compares as empty text.
    pub fn matches(&self, msg: &Message<'_>) -> bool {
        self.expr.eval(msg)
    }
}

impl Default for Condition {
    fn default() -> Self {
        Self::always()
    }
}

impl FromStr for Condition {
    type Err = RuleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parser = Parser { chars: s.chars().collect(), pos: 0, depth: 0 };
        parser.skip_ws();
        if parser.at_end() {
            return Err(parser.error(
                "expected a condition, e.g. MSH-9.1 = \"ADT\" (or true for a rule that matches every message)",
            ));
        }
        let expr = parser.or(None)?;
        parser.skip_ws();
        match parser.peek() {
            None => Ok(Self { expr }),
            Some(')') => Err(parser.error("unexpected ')' without a matching '('")),
            Some(_) => Err(parser.error("expected 'and', 'or' or the end of the condition")),
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.expr.write(f, Prec::Or)
    }
}

/// The syntax tree. `and` and `or` keep their operands in a list, so long
/// chains do not deepen the tree; only parentheses and `not` do, and those
/// are bounded by [`MAX_NESTING`].
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expr {
    Const(bool),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Exists(Path),
    Compare { path: Path, op: Op },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Eq(String),
    Ne(String),
    In(Vec<String>),
    Contains(String),
    StartsWith(String),
    EndsWith(String),
}

impl Expr {
    fn eval(&self, msg: &Message<'_>) -> bool {
        match self {
            Self::Const(value) => *value,
            Self::Not(inner) => !inner.eval(msg),
            Self::And(items) => items.iter().all(|e| e.eval(msg)),
            Self::Or(items) => items.iter().any(|e| e.eval(msg)),
            Self::Exists(path) => !text(msg, path).is_empty(),
            Self::Compare { path, op } => {
                let value = text(msg, path);
                let value = value.as_ref();
                match op {
                    Op::Eq(s) => value == s,
                    Op::Ne(s) => value != s,
                    Op::In(list) => list.iter().any(|s| value == s),
                    Op::Contains(s) => value.contains(s.as_str()),
                    Op::StartsWith(s) => value.starts_with(s.as_str()),
                    Op::EndsWith(s) => value.ends_with(s.as_str()),
                }
            }
        }
    }

    fn prec(&self) -> Prec {
        match self {
            Self::Or(_) => Prec::Or,
            Self::And(_) => Prec::And,
            _ => Prec::Unary,
        }
    }

    /// Writes the canonical form, adding parentheses where a child binds
    /// less tightly than its position needs (and around a nested list of
    /// the same operator, so that the tree parses back unchanged).
    fn write(&self, f: &mut fmt::Formatter<'_>, min: Prec) -> fmt::Result {
        let paren = self.prec() < min;
        if paren {
            f.write_str("(")?;
        }
        match self {
            Self::Const(value) => write!(f, "{value}")?,
            Self::Not(inner) => {
                f.write_str("not ")?;
                inner.write(f, Prec::Unary)?;
            }
            Self::And(items) | Self::Or(items) => {
                let (sep, child) =
                    if matches!(self, Self::And(_)) { (" and ", Prec::Unary) } else { (" or ", Prec::And) };
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(sep)?;
                    }
                    item.write(f, child)?;
                }
            }
            Self::Exists(path) => write!(f, "exists {path}")?,
            Self::Compare { path, op } => {
                write!(f, "{path} ")?;
                match op {
                    Op::Eq(s) => write!(f, "= {}", Quoted(s))?,
                    Op::Ne(s) => write!(f, "!= {}", Quoted(s))?,
                    Op::Contains(s) => write!(f, "contains {}", Quoted(s))?,
                    Op::StartsWith(s) => write!(f, "starts_with {}", Quoted(s))?,
                    Op::EndsWith(s) => write!(f, "ends_with {}", Quoted(s))?,
                    Op::In(list) => {
                        f.write_str("in [")?;
                        for (i, s) in list.iter().enumerate() {
                            if i > 0 {
                                f.write_str(", ")?;
                            }
                            write!(f, "{}", Quoted(s))?;
                        }
                        f.write_str("]")?;
                    }
                }
            }
        }
        if paren {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// The decoded text at `path`, empty when the message does not reach it.
fn text<'m>(msg: &Message<'m>, path: &Path) -> std::borrow::Cow<'m, str> {
    msg.get(path).map(|raw| msg.decode(raw)).unwrap_or_default()
}

/// Binding strength, loosest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Prec {
    Or,
    And,
    Unary,
}

/// A string literal in the condition syntax.
struct Quoted<'s>(&'s str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for c in self.0.chars() {
            if matches!(c, '"' | '\\') {
                f.write_str("\\")?;
            }
            write!(f, "{c}")?;
        }
        f.write_str("\"")
    }
}

/// Recursive descent over characters, so that positions are character
/// offsets whatever the text contains.
struct Parser {
    chars: Vec<char>,
    pos: usize,
    /// Current nesting of parentheses and `not`.
    depth: usize,
}

impl Parser {
    fn error(&self, reason: impl Into<String>) -> RuleError {
        self.error_at(self.pos, reason)
    }

    fn error_at(&self, position: usize, reason: impl Into<String>) -> RuleError {
        RuleError { position, reason: reason.into() }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// The end of the run of characters from the current position that
    /// satisfy `class`.
    fn run_end(&self, class: fn(char) -> bool) -> usize {
        let mut end = self.pos;
        while self.chars.get(end).copied().is_some_and(class) {
            end += 1;
        }
        end
    }

    fn run_text(&self, end: usize) -> String {
        self.chars[self.pos..end].iter().collect()
    }

    /// Whether the next word (after white space) is the keyword `kw`, in any
    /// case; consumes it if so. In operand position, a word followed by `-`
    /// or `[` is a segment id (a Z-segment may be called `NOT`), not a
    /// keyword.
    fn keyword(&mut self, kw: &str, operand_position: bool) -> bool {
        self.skip_ws();
        let end = self.run_end(is_word_char);
        let word_matches = end - self.pos == kw.len()
            && self.chars[self.pos..end].iter().zip(kw.chars()).all(|(a, b)| a.eq_ignore_ascii_case(&b));
        let is_path = operand_position && matches!(self.chars.get(end), Some('-' | '['));
        if word_matches && !is_path {
            self.pos = end;
            true
        } else {
            false
        }
    }

    fn enter(&mut self, at: usize) -> Result<(), RuleError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(self.error_at(
                at,
                format!("the condition nests deeper than {MAX_NESTING} levels of parentheses and 'not'"),
            ));
        }
        Ok(())
    }

    /// `or = and { "or" and }`. `after` names the token before, for errors.
    fn or(&mut self, after: Option<&str>) -> Result<Expr, RuleError> {
        let mut items = vec![self.and(after)?];
        while self.keyword("or", false) {
            items.push(self.and(Some("'or'"))?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Expr::Or(items) })
    }

    /// `and = unary { "and" unary }`.
    fn and(&mut self, after: Option<&str>) -> Result<Expr, RuleError> {
        let mut items = vec![self.unary(after)?];
        while self.keyword("and", false) {
            items.push(self.unary(Some("'and'"))?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Expr::And(items) })
    }

    /// `unary = "not" unary | primary`.
    fn unary(&mut self, after: Option<&str>) -> Result<Expr, RuleError> {
        self.skip_ws();
        let start = self.pos;
        if self.keyword("not", true) {
            self.enter(start)?;
            let inner = self.unary(Some("'not'"))?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.primary(after)
    }

    fn primary(&mut self, after: Option<&str>) -> Result<Expr, RuleError> {
        self.skip_ws();
        let start = self.pos;
        if self.peek() == Some('(') {
            self.enter(start)?;
            self.pos += 1;
            let inner = self.or(Some("'('"))?;
            self.skip_ws();
            if self.peek() != Some(')') {
                return Err(self.error(format!("expected 'and', 'or' or ')' to close the '(' at character {start}")));
            }
            self.pos += 1;
            self.depth -= 1;
            return Ok(inner);
        }
        if self.keyword("true", true) {
            return Ok(Expr::Const(true));
        }
        if self.keyword("false", true) {
            return Ok(Expr::Const(false));
        }
        if self.keyword("exists", true) {
            self.skip_ws();
            if self.run_end(is_path_char) == self.pos {
                return Err(self.error("expected an HL7 path after 'exists', e.g. exists PID-7"));
            }
            return Ok(Expr::Exists(self.path()?));
        }
        if self.run_end(is_path_char) == self.pos {
            let after = after.map(|a| format!(" after {a}")).unwrap_or_default();
            return Err(self.error(format!(
                "expected a condition{after}: an HL7 path compared with a value (e.g. MSH-9.1 = \"ADT\"), \
                 exists, not, true or '('"
            )));
        }
        let path = self.path()?;
        let op = self.comparison(&path)?;
        Ok(Expr::Compare { path, op })
    }

    /// An HL7 path at the current position (known to be non-empty).
    fn path(&mut self) -> Result<Path, RuleError> {
        let start = self.pos;
        let end = self.run_end(is_path_char);
        let text = self.run_text(end);
        let path = text
            .parse::<Path>()
            .map_err(|e| self.error_at(start + e.position, format!("invalid HL7 path \"{text}\": {}", e.reason)))?;
        self.pos = end;
        Ok(path)
    }

    fn comparison(&mut self, path: &Path) -> Result<Op, RuleError> {
        self.skip_ws();
        match self.peek() {
            Some('=') => {
                self.pos += 1;
                return Ok(Op::Eq(self.string("'='", "MSH-9.1 = \"ADT\"")?));
            }
            Some('!') => {
                self.pos += 1;
                if self.peek() != Some('=') {
                    return Err(self.error("expected '=' after '!' (the operator is '!=')"));
                }
                self.pos += 1;
                return Ok(Op::Ne(self.string("'!='", "PID-8 != \"U\"")?));
            }
            _ => {}
        }
        if self.keyword("in", false) {
            return Ok(Op::In(self.list()?));
        }
        if self.keyword("contains", false) {
            return Ok(Op::Contains(self.string("'contains'", "OBX-5 contains \"hemolysed\"")?));
        }
        if self.keyword("starts_with", false) {
            return Ok(Op::StartsWith(self.string("'starts_with'", "MSH-4 starts_with \"GOOD\"")?));
        }
        if self.keyword("ends_with", false) {
            return Ok(Op::EndsWith(self.string("'ends_with'", "MSH-4 ends_with \"HOSPITAL\"")?));
        }
        Err(self.error(format!(
            "expected an operator after {path}: =, !=, in, contains, starts_with or ends_with, e.g. {path} = \"X\""
        )))
    }

    /// A quoted string; `after` and `example` make the error say what was
    /// expected.
    fn string(&mut self, after: &str, example: &str) -> Result<String, RuleError> {
        self.skip_ws();
        if self.peek() != Some('"') {
            return Err(self.error(format!("expected a quoted string after {after}, e.g. {example}")));
        }
        self.quoted()
    }

    /// The string literal starting at the current `"`.
    fn quoted(&mut self) -> Result<String, RuleError> {
        let open = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(self.error_at(open, "unterminated string: expected a closing '\"'")),
                Some('"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('\\') => match self.chars.get(self.pos + 1).copied() {
                    Some(c @ ('"' | '\\')) => {
                        out.push(c);
                        self.pos += 2;
                    }
                    None => return Err(self.error_at(open, "unterminated string: expected a closing '\"'")),
                    Some(c) => {
                        return Err(self.error(format!(
                            "unknown escape '\\{c}': only \\\" and \\\\ are escapes in a string \
                             (values are compared unescaped, so write the character itself)"
                        )));
                    }
                },
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// `list = "[" STRING { "," STRING } [ "," ] "]"`, after `in`.
    fn list(&mut self) -> Result<Vec<String>, RuleError> {
        const EXAMPLE: &str = "e.g. MSH-9.2 in [\"A01\", \"A04\"]";
        self.skip_ws();
        if self.peek() != Some('[') {
            return Err(self.error(format!("expected a list in square brackets after 'in', {EXAMPLE}")));
        }
        let open = self.pos;
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                Some('"') => items.push(self.quoted()?),
                Some(']') if !items.is_empty() => {
                    self.pos += 1;
                    return Ok(items);
                }
                _ => return Err(self.error(format!("expected a quoted string in the list, {EXAMPLE}"))),
            }
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(']') => {
                    self.pos += 1;
                    return Ok(items);
                }
                _ => {
                    return Err(self.error(format!("expected ',' or ']' to close the list opened at character {open}")));
                }
            }
        }
    }
}

/// Characters of keywords.
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Characters that may belong to a path; the run is then checked by
/// [`Path::from_str`], which says precisely what is wrong with it.
fn is_path_char(c: char) -> bool {
    is_word_char(c) || matches!(c, '-' | '.' | '[' | ']')
}

/// One edit of a transform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransformStep {
    /// Sets the value at `path` to `value` (plain text, escaped for HL7 on
    /// the way in). Missing fields, repetitions and components are created.
    Set {
        /// Where to write.
        path: Path,
        /// The text to write.
        value: String,
    },
    /// Copies the raw value at `from` to `to`, so composite values keep
    /// their structure. An absent source clears the target.
    Copy {
        /// Where to read.
        from: Path,
        /// Where to write.
        to: Path,
    },
    /// Empties the value at `path`; an absent value stays absent.
    Clear {
        /// What to empty.
        path: Path,
    },
}

impl TransformStep {
    /// The path the step writes, named in errors.
    pub fn target(&self) -> &Path {
        match self {
            Self::Set { path, .. } | Self::Clear { path } => path,
            Self::Copy { to, .. } => to,
        }
    }
}

impl fmt::Display for TransformStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Set { path, value } => write!(f, "set {path} = {}", Quoted(value)),
            Self::Copy { from, to } => write!(f, "copy {from} to {to}"),
            Self::Clear { path } => write!(f, "clear {path}"),
        }
    }
}

/// The edits a rule makes to the message it sends, in order.
///
/// Applied to a copy, so that the stored original stays what the sender
/// sent and each target of a rule can receive its own variant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transform {
    /// The steps, applied first to last.
    pub steps: Vec<TransformStep>,
}

/// Why a transform could not be applied. The step index (0-based, as in the
/// configuration's `transform[N]`) and its target path let an operator find
/// the step in the productions file; the message is then not sent.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("transform step {step} ({path}): {reason}")]
pub struct TransformError {
    /// Index of the failing step.
    pub step: usize,
    /// The path the step writes.
    pub path: String,
    /// Why it failed.
    pub reason: String,
}

impl Transform {
    /// Whether the transform leaves messages unchanged.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Applies the steps to `raw`, returning new bytes (the original is
    /// untouched); errors name the step index and path.
    ///
    /// Steps are all-or-nothing: on error no partially edited message is
    /// returned.
    pub fn apply(&self, raw: &[u8]) -> Result<Vec<u8>, TransformError> {
        let Some(first) = self.steps.first() else {
            return Ok(raw.to_vec());
        };
        let mut buf = MessageBuf::new(raw.to_vec()).map_err(|e| TransformError {
            step: 0,
            path: first.target().to_string(),
            reason: format!("the message does not parse: {e}"),
        })?;
        for (step, edit) in self.steps.iter().enumerate() {
            let result = match edit {
                TransformStep::Set { path, value } => buf.set_path(path, value),
                TransformStep::Copy { from, to } => buf.copy(from, to),
                TransformStep::Clear { path } => buf.clear(path),
            };
            result.map_err(|e| TransformError { step, path: edit.target().to_string(), reason: e.to_string() })?;
        }
        Ok(buf.into_bytes())
    }
}

#[cfg(test)]
mod tests;
