//! Path notation for addressing values: `PID-3`, `PID-3.1`, `PID-3[2].4.2`,
//! `OBX[3]-5`, `MSH-9.2`.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// The address of a field, repetition, component or subcomponent.
///
/// The notation is the one integration engineers write in specs and engine
/// settings: `SEG[occurrence]-field[repetition].component.subcomponent`, all
/// numbers 1-based, occurrence and repetition optional.
///
/// - A path without a repetition and without a component (`PID-3`) names the
///   whole field, every repetition included.
/// - A path with a component but no repetition (`PID-3.1`) reads the first
///   repetition.
/// - `MSH-1` is the field separator and `MSH-2` the encoding characters, as
///   in the standard, so `MSH-9` is the message type.
///
/// ```
/// use switchboard::hl7::Path;
///
/// let p: Path = "OBX[3]-5[2].1.2".parse().unwrap();
/// assert_eq!(p.segment_id(), "OBX");
/// assert_eq!((p.segment_occurrence, p.field), (3, 5));
/// assert_eq!((p.repetition, p.component, p.subcomponent), (Some(2), Some(1), Some(2)));
/// assert_eq!(p.to_string(), "OBX[3]-5[2].1.2");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Path {
    segment: [u8; 3],
    /// Which occurrence of the segment (1 = first).
    pub segment_occurrence: usize,
    /// Field number (1-based, HL7 numbering).
    pub field: usize,
    /// Repetition number, when given.
    pub repetition: Option<usize>,
    /// Component number, when given.
    pub component: Option<usize>,
    /// Subcomponent number, when given (requires a component).
    pub subcomponent: Option<usize>,
}

/// Why a path could not be read.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("invalid HL7 path {path:?} at character {position}: {reason}")]
pub struct PathError {
    /// The path as written.
    pub path: String,
    /// Character offset of the problem.
    pub position: usize,
    /// What was expected there.
    pub reason: &'static str,
}

impl Path {
    /// The first occurrence of `segment`, field `field`.
    ///
    /// A segment id that is not three characters is padded or cut, so the
    /// path simply matches nothing; use [`FromStr`] for checked input.
    pub fn field(segment: &str, field: usize) -> Self {
        let mut id = [b' '; 3];
        for (slot, b) in id.iter_mut().zip(segment.bytes()) {
            *slot = b;
        }
        Self { segment: id, segment_occurrence: 1, field, repetition: None, component: None, subcomponent: None }
    }

    /// The same path for the `n`-th occurrence of the segment.
    pub fn occurrence(mut self, n: usize) -> Self {
        self.segment_occurrence = n;
        self
    }

    /// The same path narrowed to repetition `n`.
    pub fn repetition(mut self, n: usize) -> Self {
        self.repetition = Some(n);
        self
    }

    /// The same path narrowed to component `n`.
    pub fn component(mut self, n: usize) -> Self {
        self.component = Some(n);
        self
    }

    /// The same path narrowed to subcomponent `n`.
    pub fn subcomponent(mut self, n: usize) -> Self {
        self.subcomponent = Some(n);
        self
    }

    /// True when every number is at least 1 and a subcomponent comes with a
    /// component: what the text notation can express. Paths built in code
    /// that are not valid address nothing.
    pub fn is_valid(&self) -> bool {
        self.segment_occurrence >= 1
            && self.field >= 1
            && self.repetition.is_none_or(|n| n >= 1)
            && self.component.is_none_or(|n| n >= 1)
            && self.subcomponent.is_none_or(|n| n >= 1)
            && (self.subcomponent.is_none() || self.component.is_some())
    }

    /// The segment id, e.g. `PID`.
    pub fn segment_id(&self) -> &str {
        std::str::from_utf8(&self.segment).unwrap_or("")
    }

    /// The segment id as bytes, which is what lookups compare.
    pub(crate) fn segment_bytes(&self) -> [u8; 3] {
        self.segment
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.segment_id())?;
        if self.segment_occurrence != 1 {
            write!(f, "[{}]", self.segment_occurrence)?;
        }
        write!(f, "-{}", self.field)?;
        if let Some(r) = self.repetition {
            write!(f, "[{r}]")?;
        }
        if let Some(c) = self.component {
            write!(f, ".{c}")?;
        }
        if let Some(s) = self.subcomponent {
            write!(f, ".{s}")?;
        }
        Ok(())
    }
}

impl FromStr for Path {
    type Err = PathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut cursor = Cursor { text: s, bytes: s.as_bytes(), pos: 0 };
        let id = cursor.segment_id()?;
        let mut path = Path::field("", 0);
        path.segment = id;
        if let Some(n) = cursor.bracketed()? {
            path.segment_occurrence = n;
        }
        cursor.expect(b'-', "expected '-' and a field number after the segment id")?;
        path.field = cursor.number()?;
        path.repetition = cursor.bracketed()?;
        if cursor.eat(b'.') {
            path.component = Some(cursor.number()?);
            if cursor.eat(b'.') {
                path.subcomponent = Some(cursor.number()?);
            }
        }
        if cursor.pos != s.len() {
            return Err(cursor.error("unexpected text after the path"));
        }
        Ok(path)
    }
}

struct Cursor<'s> {
    text: &'s str,
    bytes: &'s [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn error(&self, reason: &'static str) -> PathError {
        PathError { path: self.text.to_owned(), position: self.pos, reason }
    }

    fn segment_id(&mut self) -> Result<[u8; 3], PathError> {
        match self.bytes.get(..3) {
            Some(&[a, b, c]) if [a, b, c].iter().all(|x| x.is_ascii_uppercase() || x.is_ascii_digit()) => {
                self.pos = 3;
                Ok([a, b, c])
            }
            _ => Err(self.error("a path starts with a 3-character segment id in capitals, e.g. PID")),
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.bytes.get(self.pos) == Some(&b);
        self.pos += usize::from(hit);
        hit
    }

    fn expect(&mut self, b: u8, reason: &'static str) -> Result<(), PathError> {
        if self.eat(b) { Ok(()) } else { Err(self.error(reason)) }
    }

    fn number(&mut self) -> Result<usize, PathError> {
        let start = self.pos;
        while self.bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        let n: usize = self.text[start..self.pos].parse().map_err(|_| {
            self.pos = start;
            self.error("expected a number")
        })?;
        if n == 0 {
            self.pos = start;
            return Err(self.error("numbers in HL7 paths start at 1"));
        }
        Ok(n)
    }

    fn bracketed(&mut self) -> Result<Option<usize>, PathError> {
        if !self.eat(b'[') {
            return Ok(None);
        }
        let n = self.number()?;
        self.expect(b']', "expected ']'")?;
        Ok(Some(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let cases = [
            ("PID-3", ("PID", 1, 3, None, None, None)),
            ("PID-3.1", ("PID", 1, 3, None, Some(1), None)),
            ("PID-3[2].4.2", ("PID", 1, 3, Some(2), Some(4), Some(2))),
            ("OBX[3]-5", ("OBX", 3, 5, None, None, None)),
            ("MSH-9.2", ("MSH", 1, 9, None, Some(2), None)),
            ("ZX1-12[10]", ("ZX1", 1, 12, Some(10), None, None)),
        ];
        for (text, (seg, occ, field, rep, comp, sub)) in cases {
            let p: Path = text.parse().unwrap();
            assert_eq!(
                (p.segment_id(), p.segment_occurrence, p.field, p.repetition, p.component, p.subcomponent),
                (seg, occ, field, rep, comp, sub),
                "{text}"
            );
            assert_eq!(p.to_string(), text);
        }
    }

    #[test]
    fn paths_built_in_code_are_checked() {
        assert!(Path::field("PID", 3).repetition(2).component(4).subcomponent(1).is_valid());
        assert!(!Path::field("PID", 0).is_valid());
        assert!(!Path::field("PID", 5).repetition(0).is_valid());
        assert!(!Path::field("PID", 5).component(0).is_valid());
        assert!(!Path::field("PID", 5).subcomponent(2).is_valid());
        assert!(!Path::field("PID", 5).occurrence(0).is_valid());
    }

    #[test]
    fn rejects_bad_paths_with_position() {
        let cases = [
            ("pid-3", 0),
            ("PID", 3),
            ("PID-", 4),
            ("PID-0", 4),
            ("PID-3.", 6),
            ("PID-3[2", 7),
            ("PID-3.1.2.3", 9),
            ("PI-3", 0),
            ("PID-3x", 5),
            ("OBX[0]-5", 4),
        ];
        for (text, position) in cases {
            let err = text.parse::<Path>().unwrap_err();
            assert_eq!(err.position, position, "{text}: {err}");
        }
    }
}
