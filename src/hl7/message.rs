//! The structural parser: one pass over the bytes builds a flat index of
//! every segment, field, repetition, component and subcomponent.
//!
//! The index holds byte ranges into the original buffer, never copies, so a
//! parsed message can be forwarded byte for byte and values are decoded only
//! when someone asks for them.

use std::borrow::Cow;

use memchr::memchr2;

use super::charset::Charset;
use super::escape::{self, EscapeError};
use super::{Delimiters, ParseError, Path};

/// A byte range `start..end` into the raw message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) start: u32,
    pub(crate) end: u32,
}

impl Span {
    fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// An element with children: its own span and the index range of its
/// children in the next level's table.
#[derive(Clone, Copy, Debug)]
struct Node {
    span: Span,
    first: u32,
    last: u32,
}

#[derive(Clone, Copy, Debug)]
struct SegmentNode {
    span: Span,
    id: [u8; 3],
    first_field: u32,
    last_field: u32,
}

/// A parsed HL7 v2 message borrowing its raw bytes.
///
/// Parsing never alters or copies the bytes: [`Message::raw`] returns exactly
/// what was parsed, so an unedited message is re-encoded byte-identically.
/// Segment endings may be CR (the standard), LF or CR LF; empty lines are
/// skipped.
///
/// ```
/// use switchboard::hl7::Message;
///
/// let raw = b"MSH|^~\\&|APP|FAC|||20260101||ADT^A01|42|P|2.5\rPID|1||123^^^H^MR~456^^^H^SS||DOE^JOHN";
/// let msg = Message::parse(raw).unwrap();
/// assert_eq!(msg.text("MSH-9.2").unwrap().as_deref(), Some("A01"));
/// assert_eq!(msg.text("PID-3[2].1").unwrap().as_deref(), Some("456"));
/// assert_eq!(msg.control_id(), Some(&b"42"[..]));
/// ```
#[derive(Clone, Debug)]
pub struct Message<'a> {
    raw: &'a [u8],
    delimiters: Delimiters,
    charset: Charset,
    segments: Vec<SegmentNode>,
    fields: Vec<Node>,
    repetitions: Vec<Node>,
    components: Vec<Node>,
    subcomponents: Vec<Span>,
}

/// Byte classes for the inner loop.
const PLAIN: u8 = 0;
const SUB: u8 = 1;
const COMP: u8 = 2;
const REP: u8 = 3;
const FIELD: u8 = 4;

impl<'a> Message<'a> {
    /// Parses one message. The first segment must be MSH.
    pub fn parse(raw: &'a [u8]) -> Result<Self, ParseError> {
        if raw.len() > u32::MAX as usize {
            return Err(ParseError::TooLarge { len: raw.len() });
        }
        let start = raw.iter().position(|&b| b != b'\r' && b != b'\n').ok_or(ParseError::Empty)?;
        let first_end = memchr2(b'\r', b'\n', &raw[start..]).map_or(raw.len(), |i| start + i);
        let header = &raw[start..first_end];
        if !header.starts_with(b"MSH") {
            return Err(ParseError::MissingMsh { position: start, found: super::printable_id(header) });
        }
        let (delimiters, _) = Delimiters::from_header(header, start)?;

        // A rough size hint keeps reallocation out of the hot loop.
        // Typical messages have a delimiter every 3 to 5 bytes; sizing the
        // tables for that up front means they are allocated once, never
        // grown (uninitialised capacity costs nothing to reserve).
        let estimate = raw.len() / 3 + 8;
        let mut msg = Message {
            raw,
            delimiters,
            charset: Charset::default(),
            segments: Vec::with_capacity(raw.len() / 64 + 4),
            fields: Vec::with_capacity(raw.len() / 4 + 8),
            repetitions: Vec::with_capacity(raw.len() / 4 + 8),
            components: Vec::with_capacity(estimate),
            subcomponents: Vec::with_capacity(estimate),
        };
        let mut classes = [PLAIN; 256];
        classes[delimiters.subcomponent as usize] = SUB;
        classes[delimiters.component as usize] = COMP;
        classes[delimiters.repetition as usize] = REP;
        classes[delimiters.field as usize] = FIELD;

        let mut pos = start;
        while pos < raw.len() {
            let end = memchr2(b'\r', b'\n', &raw[pos..]).map_or(raw.len(), |i| pos + i);
            if end > pos {
                msg.index_segment(pos, end, &classes)?;
            }
            pos = end + 1;
        }
        msg.charset = msg.get(&Path::field("MSH", 18).repetition(1)).map(Charset::from_msh18).unwrap_or_default();
        Ok(msg)
    }

    fn index_segment(&mut self, start: usize, end: usize, classes: &[u8; 256]) -> Result<(), ParseError> {
        let seg = &self.raw[start..end];
        let id: [u8; 3] = match seg.get(..3) {
            Some(&[a, b, c]) if [a, b, c].iter().all(|x| x.is_ascii_uppercase() || x.is_ascii_digit()) => [a, b, c],
            _ => return Err(ParseError::InvalidSegmentId { position: start }),
        };
        if seg.len() > 3 && seg[3] != self.delimiters.field {
            return Err(ParseError::InvalidSegmentId { position: start });
        }
        let first_field = self.fields.len() as u32;
        self.push_leaf_field(start, start + 3);
        let mut body = start + 4;
        if self.segments.is_empty() {
            // MSH-1 is the field separator itself and MSH-2 the encoding
            // characters: neither is split by the delimiters it declares.
            let (_, len) = Delimiters::from_header(seg, start)?;
            self.push_leaf_field(start + 3, start + 4);
            self.push_leaf_field(start + 4, start + 4 + len);
            body = start + 4 + len + 1;
        }
        if body <= end {
            self.index_fields(body, end, classes);
        }
        self.segments.push(SegmentNode {
            span: span(start, end),
            id,
            first_field,
            last_field: self.fields.len() as u32,
        });
        Ok(())
    }

    /// A field that is a single value, used for segment ids and MSH-1/MSH-2.
    fn push_leaf_field(&mut self, start: usize, end: usize) {
        let s = span(start, end);
        let sub = self.subcomponents.len() as u32;
        self.subcomponents.push(s);
        let comp = self.components.len() as u32;
        self.components.push(Node { span: s, first: sub, last: sub + 1 });
        let rep = self.repetitions.len() as u32;
        self.repetitions.push(Node { span: s, first: comp, last: comp + 1 });
        self.fields.push(Node { span: s, first: rep, last: rep + 1 });
    }

    /// The hot loop: classifies each byte of the fields part of a segment and
    /// closes the open elements at every delimiter.
    fn index_fields(&mut self, body: usize, end: usize, classes: &[u8; 256]) {
        let raw = self.raw;
        let (mut field_start, mut rep_start, mut comp_start, mut sub_start) = (body, body, body, body);
        let mut field_first = self.repetitions.len() as u32;
        let mut rep_first = self.components.len() as u32;
        let mut comp_first = self.subcomponents.len() as u32;
        for (i, &b) in raw[body..end].iter().enumerate() {
            let class = classes[b as usize];
            if class == PLAIN {
                continue;
            }
            let at = body + i;
            self.subcomponents.push(span(sub_start, at));
            sub_start = at + 1;
            if class == SUB {
                continue;
            }
            let subs = self.subcomponents.len() as u32;
            self.components.push(Node { span: span(comp_start, at), first: comp_first, last: subs });
            comp_first = subs;
            comp_start = at + 1;
            if class == COMP {
                continue;
            }
            let comps = self.components.len() as u32;
            self.repetitions.push(Node { span: span(rep_start, at), first: rep_first, last: comps });
            rep_first = comps;
            rep_start = at + 1;
            if class == REP {
                continue;
            }
            let reps = self.repetitions.len() as u32;
            self.fields.push(Node { span: span(field_start, at), first: field_first, last: reps });
            field_first = reps;
            field_start = at + 1;
        }
        self.subcomponents.push(span(sub_start, end));
        let subs = self.subcomponents.len() as u32;
        self.components.push(Node { span: span(comp_start, end), first: comp_first, last: subs });
        let comps = self.components.len() as u32;
        self.repetitions.push(Node { span: span(rep_start, end), first: rep_first, last: comps });
        let reps = self.repetitions.len() as u32;
        self.fields.push(Node { span: span(field_start, end), first: field_first, last: reps });
    }

    /// The bytes this message was parsed from, unchanged.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The delimiters declared in MSH-1 and MSH-2.
    pub fn delimiters(&self) -> &Delimiters {
        &self.delimiters
    }

    /// The character set declared in MSH-18 (first repetition).
    pub fn charset(&self) -> &Charset {
        &self.charset
    }

    /// All segments in order.
    pub fn segments(&self) -> impl ExactSizeIterator<Item = Segment<'_>> + '_ {
        (0..self.segments.len()).map(move |idx| Segment { msg: self.covariant(), idx })
    }

    /// The `occurrence`-th (1-based) segment with this id.
    pub fn segment(&self, id: &str, occurrence: usize) -> Option<Segment<'_>> {
        let id = id.as_bytes();
        let idx = self.segments.iter().enumerate().filter(|(_, s)| s.id[..] == *id).nth(occurrence.checked_sub(1)?)?.0;
        Some(Segment { msg: self.covariant(), idx })
    }

    /// How many segments the message has.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn covariant(&self) -> &Message<'_> {
        self
    }

    /// The raw (still escaped) bytes at a path, or `None` when the message
    /// does not reach that far.
    pub fn get(&self, path: &Path) -> Option<&'a [u8]> {
        self.locate(path).map(|e| &self.raw[e.span.range()])
    }

    /// The byte range of the value at `path` within [`raw`](Self::raw), for
    /// callers that splice bytes themselves (e.g. a fresh MSH-10 per copy).
    pub fn range(&self, path: &Path) -> Option<std::ops::Range<usize>> {
        self.locate(path).map(|e| e.span.range())
    }

    /// The value at `path`, unescaped and decoded with the message's
    /// character set. Unknown or unterminated escape sequences are kept as
    /// text (see [`escape`](super::escape) for what each sequence becomes).
    ///
    /// Returns an error only when `path` is not valid path notation.
    pub fn text(&self, path: &str) -> Result<Option<String>, super::PathError> {
        let path: Path = path.parse()?;
        Ok(self.get(&path).map(|raw| self.decode(raw).into_owned()))
    }

    /// Decodes raw bytes of this message: escapes, then character set.
    pub fn decode<'b>(&self, raw: &'b [u8]) -> Cow<'b, str> {
        match escape::unescape(raw, &self.delimiters) {
            Cow::Borrowed(b) => self.charset.decode(b),
            Cow::Owned(v) => Cow::Owned(self.charset.decode(&v).into_owned()),
        }
    }

    /// Like [`text`](Self::text) but reports the first malformed escape
    /// sequence of the value with its byte position in the message.
    pub fn text_strict(&self, path: &Path) -> Option<Result<String, EscapeError>> {
        let span = self.locate(path)?.span;
        Some(
            escape::unescape_strict(&self.raw[span.range()], &self.delimiters)
                .map(|bytes| self.charset.decode(&bytes).into_owned())
                .map_err(|e| e.shifted(span.start as usize)),
        )
    }

    /// Checks every escape sequence in the message and reports the first
    /// malformed one with its byte position.
    pub fn check_escapes(&self) -> Result<(), EscapeError> {
        // The first three entries are "MSH", MSH-1 and MSH-2, which hold the
        // escape character itself.
        for sub in self.subcomponents.iter().skip(3) {
            escape::unescape_strict(&self.raw[sub.range()], &self.delimiters)
                .map_err(|e| e.shifted(sub.start as usize))?;
        }
        Ok(())
    }

    /// MSH-10, the message control id, when present and not empty.
    pub fn control_id(&self) -> Option<&'a [u8]> {
        self.header_field(10, None)
    }

    /// MSH-9.1, the message code (e.g. `ADT`).
    pub fn message_code(&self) -> Option<&'a [u8]> {
        self.header_field(9, Some(1))
    }

    /// MSH-9.2, the trigger event (e.g. `A01`).
    pub fn trigger_event(&self) -> Option<&'a [u8]> {
        self.header_field(9, Some(2))
    }

    /// MSH-12, the version id (e.g. `2.5.1`).
    pub fn version(&self) -> Option<&'a [u8]> {
        self.header_field(12, Some(1))
    }

    fn header_field(&self, field: usize, component: Option<usize>) -> Option<&'a [u8]> {
        let mut path = Path::field("MSH", field);
        if let Some(c) = component {
            path = path.component(c);
        }
        self.get(&path).filter(|v| !v.is_empty())
    }

    /// Finds the element a path names.
    pub(crate) fn locate(&self, path: &Path) -> Option<Located> {
        if !path.is_valid() {
            return None;
        }
        let seg = self.segment(path.segment_id(), path.segment_occurrence)?;
        let seg = self.segments[seg.idx];
        let field_idx = (seg.first_field as usize).checked_add(path.field)?;
        if path.field == 0 || field_idx >= seg.last_field as usize {
            return None;
        }
        let field = &self.fields[field_idx];
        let Some(component) = path.component else {
            return match path.repetition {
                None => Some(Located { span: field.span }),
                Some(r) => child(field, r, &self.repetitions).map(|n| Located { span: n.span }),
            };
        };
        let rep = child(field, path.repetition.unwrap_or(1), &self.repetitions)?;
        let comp = child(&rep, component, &self.components)?;
        match path.subcomponent {
            None => Some(Located { span: comp.span }),
            Some(s) => {
                let idx = (comp.first as usize).checked_add(s.checked_sub(1)?)?;
                (idx < comp.last as usize).then(|| Located { span: self.subcomponents[idx] })
            }
        }
    }

    /// Where the element a path names would go, for editing: the deepest
    /// existing element and how many separators must be added below it.
    pub(crate) fn insertion_point(&self, path: &Path) -> Option<Insertion> {
        if !path.is_valid() {
            return None;
        }
        let seg_ref = self.segment(path.segment_id(), path.segment_occurrence)?;
        let seg = self.segments[seg_ref.idx];
        if path.field == 0 {
            return None;
        }
        let nfields = (seg.last_field - seg.first_field) as usize;
        if path.field >= nfields {
            return Some(Insertion::Append {
                at: seg.span.end as usize,
                missing: [
                    path.field - (nfields - 1),
                    path.repetition.unwrap_or(1) - 1,
                    path.component.map_or(0, |c| c - 1),
                    path.subcomponent.map_or(0, |s| s - 1),
                ],
            });
        }
        let field = self.fields[seg.first_field as usize + path.field];
        let Some(r) = path.repetition.or(path.component.map(|_| 1)) else {
            return Some(Insertion::Replace(field.span));
        };
        let nreps = (field.last - field.first) as usize;
        if r > nreps {
            return Some(Insertion::Append {
                at: field.span.end as usize,
                missing: [0, r - nreps, path.component.map_or(0, |c| c - 1), path.subcomponent.map_or(0, |s| s - 1)],
            });
        }
        let rep = self.repetitions[field.first as usize + r - 1];
        let Some(c) = path.component else {
            return Some(Insertion::Replace(rep.span));
        };
        let ncomps = (rep.last - rep.first) as usize;
        if c > ncomps {
            return Some(Insertion::Append {
                at: rep.span.end as usize,
                missing: [0, 0, c - ncomps, path.subcomponent.map_or(0, |s| s - 1)],
            });
        }
        let comp = self.components[rep.first as usize + c - 1];
        let Some(s) = path.subcomponent else {
            return Some(Insertion::Replace(comp.span));
        };
        let nsubs = (comp.last - comp.first) as usize;
        if s > nsubs {
            return Some(Insertion::Append { at: comp.span.end as usize, missing: [0, 0, 0, s - nsubs] });
        }
        Some(Insertion::Replace(self.subcomponents[comp.first as usize + s - 1]))
    }
}

/// Where an edit lands.
pub(crate) enum Insertion {
    /// Replace this existing element.
    Replace(Span),
    /// Insert at `at` after adding the missing field, repetition, component
    /// and subcomponent separators (in that order).
    Append { at: usize, missing: [usize; 4] },
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Located {
    pub(crate) span: Span,
}

fn child(parent: &Node, n: usize, table: &[Node]) -> Option<Node> {
    let idx = (parent.first as usize).checked_add(n.checked_sub(1)?)?;
    (idx < parent.last as usize).then(|| table[idx])
}

fn span(start: usize, end: usize) -> Span {
    // Lengths were checked against u32::MAX at the start of `parse`.
    Span { start: start as u32, end: end as u32 }
}

/// One segment of a parsed message.
#[derive(Clone, Copy)]
pub struct Segment<'m> {
    msg: &'m Message<'m>,
    idx: usize,
}

impl<'m> Segment<'m> {
    /// The three-character segment id, e.g. `PID`.
    pub fn id(&self) -> &'m str {
        let id = &self.msg.segments[self.idx].id;
        // Segment ids are checked to be ASCII uppercase letters or digits.
        std::str::from_utf8(id).unwrap_or("???")
    }

    /// The segment's bytes without its terminator.
    pub fn raw(&self) -> &'m [u8] {
        &self.msg.raw[self.msg.segments[self.idx].span.range()]
    }

    /// The byte offset of the segment in the message.
    pub fn position(&self) -> usize {
        self.msg.segments[self.idx].span.start as usize
    }

    /// Fields with their HL7 numbers, starting at 1 (for MSH, field 1 is the
    /// field separator).
    pub fn fields(&self) -> impl Iterator<Item = (usize, Field<'m>)> + 'm {
        let seg = self.msg.segments[self.idx];
        let msg = self.msg;
        (seg.first_field as usize + 1..seg.last_field as usize)
            .enumerate()
            .map(move |(i, idx)| (i + 1, Field { msg, node: msg.fields[idx] }))
    }

    /// Field `n` (HL7 numbering), if present.
    pub fn field(&self, n: usize) -> Option<Field<'m>> {
        let seg = self.msg.segments[self.idx];
        let idx = (seg.first_field as usize).checked_add(n)?;
        (n >= 1 && idx < seg.last_field as usize).then(|| Field { msg: self.msg, node: self.msg.fields[idx] })
    }

    /// The number of the highest field present.
    pub fn field_count(&self) -> usize {
        let seg = self.msg.segments[self.idx];
        (seg.last_field - seg.first_field) as usize - 1
    }
}

/// Shared accessors of fields, repetitions and components.
macro_rules! element_accessors {
    () => {
        /// The raw (escaped) bytes.
        pub fn raw(&self) -> &'m [u8] {
            &self.msg.raw[self.node.span.range()]
        }

        /// The value with escapes and character set decoded.
        pub fn text(&self) -> Cow<'m, str> {
            self.msg.decode(self.raw())
        }

        /// The byte offset in the message.
        pub fn position(&self) -> usize {
            self.node.span.start as usize
        }
    };
}

/// A field: one or more repetitions.
#[derive(Clone, Copy)]
pub struct Field<'m> {
    msg: &'m Message<'m>,
    node: Node,
}

impl<'m> Field<'m> {
    element_accessors!();

    /// Repetitions in order (an empty field has one, empty).
    pub fn repetitions(&self) -> impl ExactSizeIterator<Item = Repetition<'m>> + 'm {
        let msg = self.msg;
        (self.node.first..self.node.last).map(move |i| Repetition { msg, node: msg.repetitions[i as usize] })
    }
}

/// One repetition of a field: one or more components.
#[derive(Clone, Copy)]
pub struct Repetition<'m> {
    msg: &'m Message<'m>,
    node: Node,
}

impl<'m> Repetition<'m> {
    element_accessors!();

    /// Components in order.
    pub fn components(&self) -> impl ExactSizeIterator<Item = Component<'m>> + 'm {
        let msg = self.msg;
        (self.node.first..self.node.last).map(move |i| Component { msg, node: msg.components[i as usize] })
    }
}

/// One component: one or more subcomponents.
#[derive(Clone, Copy)]
pub struct Component<'m> {
    msg: &'m Message<'m>,
    node: Node,
}

impl<'m> Component<'m> {
    element_accessors!();

    /// The raw bytes of each subcomponent in order.
    pub fn subcomponents(&self) -> impl ExactSizeIterator<Item = &'m [u8]> + 'm {
        let msg = self.msg;
        (self.node.first..self.node.last).map(move |i| &msg.raw[msg.subcomponents[i as usize].range()])
    }
}
