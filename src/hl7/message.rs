//! The structural parser: one pass over the bytes builds a flat index of
//! every segment, field, repetition, component and subcomponent.
//!
//! The index holds byte ranges into the original buffer, never copies, so a
//! parsed message can be forwarded byte for byte and values are decoded only
//! when someone asks for them.
//!
//! # Index layout
//!
//! Only subcomponents store a byte range. Components, repetitions and fields
//! store one number each: where their children end in the level below
//! (compressed sparse rows). Every level is filled in message order and
//! every element has at least one child, so an element's children start
//! where the previous element's end, and its bytes run from its first
//! subcomponent's start to its last subcomponent's end. A delimiter costs 8
//! bytes of index plus 4 for each level it closes, and a lookup is a few
//! array reads.
//!
//! All levels share one `u32` table, each in its own region (see
//! [`Regions`]). An element is named by the position of its entry, so
//! entries name their children's entries directly: one allocation, no
//! conversions, and a single base pointer in the scanning loop.
//!
//! # Scanning
//!
//! Parsing classifies each byte with a table and stops at delimiters and
//! line endings. At each one it closes a subcomponent and, without branching
//! on the kind of delimiter, whatever else the delimiter closes: delimiters
//! follow no pattern a branch predictor could learn, so every level's open
//! element gets its end written, and only the levels the delimiter closes
//! move on.
//!
//! Finding delimiters eight bytes at a time with integer arithmetic was
//! measured slower on typical messages: their values are short, most words
//! hold a delimiter, and telling its kind from the word costs more than the
//! table lookup. On long values it was no faster either.

use std::borrow::Cow;

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

/// A segment and its fields, numbered across the message: the segment id
/// and MSH-1/MSH-2 count as fields, and the message's first field is 0.
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
    /// The index (see the module documentation).
    index: Vec<u32>,
    regions: Regions,
    /// One past the entries of the last subcomponent.
    subcomponents_end: usize,
}

/// Where each level of the index lives, for a table sized for `capacity`
/// subcomponents.
///
/// Subcomponents come first, two entries each (the start and end of their
/// bytes); a subcomponent is named by its first entry. Components,
/// repetitions and fields follow, one entry each, in their own regions. An
/// element's entry is one past its last child, so its children start at
/// the entry before it: the previous element's entry, or for the first
/// element of a level the first entry of the region, which names the first
/// element of the level below.
#[derive(Clone, Copy, Debug)]
struct Regions {
    components: usize,
    repetitions: usize,
    fields: usize,
    len: usize,
}

impl Regions {
    /// Entries are `u32`, and so are the positions they hold.
    const MAX_CAPACITY: usize = (u32::MAX as usize - 3) / 5;

    fn new(capacity: usize) -> Self {
        Self {
            components: 2 * capacity,
            repetitions: 3 * capacity + 1,
            fields: 4 * capacity + 2,
            len: 5 * capacity + 3,
        }
    }

    fn capacity(&self) -> usize {
        self.components / 2
    }

    /// A table with no elements yet, zero-filled so that the scanning loop
    /// can write ahead of what it has closed.
    fn table(&self) -> Vec<u32> {
        let mut index = vec![0; self.len];
        index[self.repetitions] = self.components as u32 + 1;
        index[self.fields] = self.repetitions as u32 + 1;
        index
    }
}

/// Byte classes for the scanning loop: what each byte closes besides the
/// subcomponent it ends.
const PLAIN: u8 = 0;
const SUB: u8 = 1;
const COMP: u8 = 2;
const REP: u8 = 3;
const FIELD: u8 = 4;
const END: u8 = 5;

/// The class of every byte value under a message's delimiters.
struct Scanner {
    classes: [u8; 256],
}

impl Scanner {
    fn new(d: &Delimiters) -> Self {
        let mut classes = [PLAIN; 256];
        classes[usize::from(d.subcomponent)] = SUB;
        classes[usize::from(d.component)] = COMP;
        classes[usize::from(d.repetition)] = REP;
        classes[usize::from(d.field)] = FIELD;
        classes[usize::from(b'\r')] = END;
        classes[usize::from(b'\n')] = END;
        Self { classes }
    }
}

/// The index while it is being built.
struct Builder {
    index: Vec<u32>,
    regions: Regions,
    /// The first entry of the next subcomponent, and the entries of the open
    /// component, repetition and field.
    cursor: [usize; 4],
}

/// Why [`Builder::scan`] stopped.
enum Stop {
    /// A line ending at this position closed the segment.
    End(usize),
    /// The message ended.
    Eof,
    /// The table needs more room.
    Full,
}

impl Builder {
    /// Subcomponents the first table holds at most: large messages are
    /// often long values with few delimiters, and the table is zero-filled.
    const FIRST_CAPACITY: usize = 4096;

    fn new(len: usize) -> Self {
        // Typical messages have a delimiter every 3 to 5 bytes; sized for
        // that, the table of a message of up to about 12 KB is allocated
        // once.
        let regions = Regions::new((len / 3 + 16).min(Self::FIRST_CAPACITY));
        Self {
            index: regions.table(),
            regions,
            cursor: [0, regions.components + 1, regions.repetitions + 1, regions.fields + 1],
        }
    }

    /// Closed fields so far.
    fn field_count(&self) -> usize {
        self.cursor[3] - self.regions.fields - 1
    }

    /// Moves the index to a larger table: at least twice the size, and
    /// enough for the rest of the message if it is like the part up to
    /// `pos`.
    #[cold]
    #[inline(never)]
    fn grow(&mut self, pos: usize, len: usize) -> Result<(), ParseError> {
        let old = self.regions;
        if old.capacity() == Regions::MAX_CAPACITY {
            return Err(ParseError::TooLarge { len });
        }
        let subs = self.cursor[0] / 2;
        let expected = subs.saturating_mul(len) / pos.max(1) / 4 * 5 + 64;
        let new = Regions::new(expected.max(2 * old.capacity()).min(Regions::MAX_CAPACITY));
        let mut index = new.table();
        let [s, c, r, f] = self.cursor;
        // The entry of each open element is written again when it closes;
        // the ones before it are copied. The upper levels' entries name
        // elements of the level below, which has moved.
        index[..s].copy_from_slice(&self.index[..s]);
        index[new.components..][..c - old.components].copy_from_slice(&self.index[old.components..c]);
        let moved = |to: &mut [u32], from: &[u32], by: usize| {
            for (to, from) in to.iter_mut().zip(from) {
                *to = from + by as u32;
            }
        };
        moved(&mut index[new.repetitions..], &self.index[old.repetitions..r], new.components - old.components);
        moved(&mut index[new.fields..], &self.index[old.fields..f], new.repetitions - old.repetitions);
        self.cursor = [
            s,
            c - old.components + new.components,
            r - old.repetitions + new.repetitions,
            f - old.fields + new.fields,
        ];
        self.index = index;
        self.regions = new;
        Ok(())
    }

    /// A field that is a single value: segment ids, MSH-1/MSH-2, and the
    /// last subcomponent of a message without a final line ending (whose
    /// enclosing elements all end with it too).
    #[inline(always)]
    fn leaf(&mut self, start: usize, end: usize, len: usize) -> Result<(), ParseError> {
        if self.cursor[0] + 2 > self.regions.components {
            self.grow(start, len)?;
        }
        let [s, c, r, f] = self.cursor;
        let index = &mut self.index;
        index[s] = start as u32;
        index[s + 1] = end as u32;
        index[c] = s as u32 + 2;
        index[r] = c as u32 + 1;
        index[f] = r as u32 + 1;
        self.cursor = [s + 2, c + 1, r + 1, f + 1];
        Ok(())
    }

    /// Indexes the fields part of a segment, from `pos` (just after the
    /// field separator that follows the segment id) to the segment's end,
    /// and returns that end: the position of its CR or LF, or the length of
    /// the message.
    fn fields(&mut self, raw: &[u8], mut pos: usize, scanner: &Scanner) -> Result<usize, ParseError> {
        let mut sub_start = pos;
        loop {
            match self.scan(raw, &mut pos, &mut sub_start, scanner) {
                Stop::End(at) => return Ok(at),
                Stop::Full => self.grow(pos, raw.len())?,
                Stop::Eof => {
                    self.leaf(sub_start, raw.len(), raw.len())?;
                    return Ok(raw.len());
                }
            }
        }
    }

    /// The hot loop: closes the elements at each delimiter from `pos` on,
    /// until the segment ends or the table is full.
    #[inline(always)]
    fn scan(&mut self, raw: &[u8], pos: &mut usize, sub_start: &mut usize, scanner: &Scanner) -> Stop {
        let limit = self.regions.components - 2;
        let index = &mut self.index[..];
        let [mut s, mut c, mut r, mut f] = self.cursor;
        let (mut p, mut start) = (*pos, *sub_start);
        let stop = loop {
            let Some(&b) = raw.get(p) else {
                break Stop::Eof;
            };
            let class = scanner.classes[usize::from(b)];
            if class != PLAIN {
                if s > limit {
                    break Stop::Full;
                }
                index[s] = start as u32;
                index[s + 1] = p as u32;
                s += 2;
                start = p + 1;
                index[c] = s as u32;
                c += usize::from(class >= COMP);
                index[r] = c as u32;
                r += usize::from(class >= REP);
                index[f] = r as u32;
                f += usize::from(class >= FIELD);
                if class == END {
                    break Stop::End(p);
                }
            }
            p += 1;
        };
        self.cursor = [s, c, r, f];
        (*pos, *sub_start) = (p, start);
        stop
    }
}

impl<'a> Message<'a> {
    /// Parses one message. The first segment must be MSH.
    pub fn parse(raw: &'a [u8]) -> Result<Self, ParseError> {
        if raw.len() > u32::MAX as usize {
            return Err(ParseError::TooLarge { len: raw.len() });
        }
        let start = raw.iter().position(|&b| b != b'\r' && b != b'\n').ok_or(ParseError::Empty)?;
        // The delimiters sit in the first 9 bytes of the header; a tenth
        // tells a sixth encoding character from the end of MSH-2.
        let head = &raw[start..raw.len().min(start + 10)];
        let header = &head[..head.iter().position(|&b| b == b'\r' || b == b'\n').unwrap_or(head.len())];
        if !header.starts_with(b"MSH") {
            return Err(ParseError::MissingMsh { position: start, found: super::printable_id(header) });
        }
        let (delimiters, encoding_len) = Delimiters::from_header(header, start)?;
        let scanner = Scanner::new(&delimiters);
        let mut index = Builder::new(raw.len());
        let mut segments = Vec::with_capacity(raw.len() / 64 + 4);

        // MSH-1 is the field separator itself and MSH-2 the encoding
        // characters: neither is split by the delimiters it declares.
        let msh2_end = start + 4 + encoding_len;
        index.leaf(start, start + 3, raw.len())?;
        index.leaf(start + 3, start + 4, raw.len())?;
        index.leaf(start + 4, msh2_end, raw.len())?;
        let mut end = match raw.get(msh2_end) {
            Some(&b) if b == delimiters.field => index.fields(raw, msh2_end + 1, &scanner)?,
            _ => msh2_end,
        };
        let last_field = index.field_count() as u32;
        segments.push(SegmentNode { span: span(start, end), id: *b"MSH", first_field: 0, last_field });

        while let Some(skip) = raw[end..].iter().position(|&b| b != b'\r' && b != b'\n') {
            let pos = end + skip;
            let id: [u8; 3] = match raw.get(pos..pos + 3) {
                Some(&[a, b, c]) if [a, b, c].iter().all(|x| x.is_ascii_uppercase() || x.is_ascii_digit()) => [a, b, c],
                _ => return Err(ParseError::InvalidSegmentId { position: pos }),
            };
            let first_field = index.field_count() as u32;
            index.leaf(pos, pos + 3, raw.len())?;
            end = match raw.get(pos + 3) {
                Some(&b) if b == delimiters.field => index.fields(raw, pos + 4, &scanner)?,
                None | Some(b'\r' | b'\n') => pos + 3,
                Some(_) => return Err(ParseError::InvalidSegmentId { position: pos }),
            };
            let last_field = index.field_count() as u32;
            segments.push(SegmentNode { span: span(pos, end), id, first_field, last_field });
        }

        let Builder { index, regions, cursor } = index;
        let mut msg = Message {
            raw,
            delimiters,
            charset: Charset::default(),
            segments,
            index,
            regions,
            subcomponents_end: cursor[0],
        };
        // MSH-18, first repetition. MSH is the first segment, so its field
        // 18 is the message's.
        if msg.segments[0].last_field > 18 {
            let rep = msg.children(msg.field_entry(18)).start;
            msg.charset = Charset::from_msh18(&raw[msg.repetition_span(rep).range()]);
        }
        Ok(msg)
    }

    /// The entry of field `n` of the message (see [`SegmentNode`]).
    #[inline]
    fn field_entry(&self, n: usize) -> usize {
        self.regions.fields + 1 + n
    }

    /// The children of the element at entry `e`.
    #[inline]
    fn children(&self, e: usize) -> std::ops::Range<usize> {
        self.index[e - 1] as usize..self.index[e] as usize
    }

    #[inline]
    fn subcomponent_span(&self, s: usize) -> Span {
        Span { start: self.index[s], end: self.index[s + 1] }
    }

    // One past the last subcomponent of a component, repetition or field.
    #[inline]
    fn component_end(&self, c: usize) -> usize {
        self.index[c] as usize
    }

    #[inline]
    fn repetition_end(&self, r: usize) -> usize {
        self.component_end(self.index[r] as usize - 1)
    }

    #[inline]
    fn field_end(&self, f: usize) -> usize {
        self.repetition_end(self.index[f] as usize - 1)
    }

    /// The bytes from the subcomponent at `first` to the one before `end`.
    /// An element's subcomponents start where the previous element's end
    /// (for the first element of a level, the entry before it leads to the
    /// first subcomponent the same way), and there is at least one.
    #[inline]
    fn subcomponents_span(&self, first: usize, end: usize) -> Span {
        Span { start: self.index[first], end: self.index[end - 1] }
    }

    #[inline]
    fn component_span(&self, c: usize) -> Span {
        self.subcomponents_span(self.component_end(c - 1), self.component_end(c))
    }

    #[inline]
    fn repetition_span(&self, r: usize) -> Span {
        self.subcomponents_span(self.repetition_end(r - 1), self.repetition_end(r))
    }

    #[inline]
    fn field_span(&self, f: usize) -> Span {
        self.subcomponents_span(self.field_end(f - 1), self.field_end(f))
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
        let id: [u8; 3] = id.as_bytes().try_into().ok()?;
        self.segment_index(id, occurrence).map(|idx| Segment { msg: self.covariant(), idx })
    }

    #[inline]
    fn segment_index(&self, id: [u8; 3], occurrence: usize) -> Option<usize> {
        let mut skip = occurrence.checked_sub(1)?;
        for (idx, seg) in self.segments.iter().enumerate() {
            if seg.id == id {
                if skip == 0 {
                    return Some(idx);
                }
                skip -= 1;
            }
        }
        None
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
    #[inline]
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
        for s in (6..self.subcomponents_end).step_by(2) {
            let sub = self.subcomponent_span(s);
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
    #[inline]
    pub(crate) fn locate(&self, path: &Path) -> Option<Located> {
        // What `Path::is_valid` rules out addresses nothing: a 0 for the
        // occurrence, repetition, component or subcomponent makes the
        // lookup of that child fail, which leaves these two.
        if path.field == 0 || (path.subcomponent.is_some() && path.component.is_none()) {
            return None;
        }
        let seg = &self.segments[self.segment_index(path.segment_bytes(), path.segment_occurrence)?];
        if path.field >= (seg.last_field - seg.first_field) as usize {
            return None;
        }
        let f = self.field_entry(seg.first_field as usize + path.field);
        let Some(component) = path.component else {
            let span = match path.repetition {
                None => self.field_span(f),
                Some(r) => self.repetition_span(nth(self.children(f), 1, r)?),
            };
            return Some(Located { span });
        };
        let rep = nth(self.children(f), 1, path.repetition.unwrap_or(1))?;
        let comp = nth(self.children(rep), 1, component)?;
        let span = match path.subcomponent {
            None => self.component_span(comp),
            Some(s) => self.subcomponent_span(nth(self.children(comp), 2, s)?),
        };
        Some(Located { span })
    }

    /// Where the element a path names would go, for editing: the deepest
    /// existing element and how many separators must be added below it.
    pub(crate) fn insertion_point(&self, path: &Path) -> Option<Insertion> {
        if !path.is_valid() {
            return None;
        }
        let seg = self.segments[self.segment_index(path.segment_bytes(), path.segment_occurrence)?];
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
        let f = self.field_entry(seg.first_field as usize + path.field);
        let Some(r) = path.repetition.or(path.component.map(|_| 1)) else {
            return Some(Insertion::Replace(self.field_span(f)));
        };
        let reps = self.children(f);
        if r > reps.len() {
            return Some(Insertion::Append {
                at: self.field_span(f).end as usize,
                missing: [
                    0,
                    r - reps.len(),
                    path.component.map_or(0, |c| c - 1),
                    path.subcomponent.map_or(0, |s| s - 1),
                ],
            });
        }
        let rep = reps.start + r - 1;
        let Some(c) = path.component else {
            return Some(Insertion::Replace(self.repetition_span(rep)));
        };
        let comps = self.children(rep);
        if c > comps.len() {
            return Some(Insertion::Append {
                at: self.repetition_span(rep).end as usize,
                missing: [0, 0, c - comps.len(), path.subcomponent.map_or(0, |s| s - 1)],
            });
        }
        let comp = comps.start + c - 1;
        let Some(s) = path.subcomponent else {
            return Some(Insertion::Replace(self.component_span(comp)));
        };
        let subs = self.children(comp);
        let nsubs = subs.len() / 2;
        if s > nsubs {
            return Some(Insertion::Append {
                at: self.component_span(comp).end as usize,
                missing: [0, 0, 0, s - nsubs],
            });
        }
        Some(Insertion::Replace(self.subcomponent_span(subs.start + 2 * (s - 1))))
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

/// The position of the `n`-th (1-based) of `children`, each `size`
/// entries long.
#[inline]
fn nth(children: std::ops::Range<usize>, size: usize, n: usize) -> Option<usize> {
    let i = n.checked_sub(1)?;
    (i < children.len() / size).then(|| children.start + i * size)
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
            .map(move |(i, n)| (i + 1, Field { msg, idx: msg.field_entry(n) }))
    }

    /// Field `n` (HL7 numbering), if present.
    pub fn field(&self, n: usize) -> Option<Field<'m>> {
        let seg = self.msg.segments[self.idx];
        let idx = (seg.first_field as usize).checked_add(n)?;
        (n >= 1 && idx < seg.last_field as usize).then_some(Field { msg: self.msg, idx: self.msg.field_entry(idx) })
    }

    /// The number of the highest field present.
    pub fn field_count(&self) -> usize {
        let seg = self.msg.segments[self.idx];
        (seg.last_field - seg.first_field) as usize - 1
    }
}

/// Shared accessors of fields, repetitions and components.
macro_rules! element_accessors {
    ($span:ident) => {
        /// The raw (escaped) bytes.
        pub fn raw(&self) -> &'m [u8] {
            &self.msg.raw[self.msg.$span(self.idx).range()]
        }

        /// The value with escapes and character set decoded.
        pub fn text(&self) -> Cow<'m, str> {
            self.msg.decode(self.raw())
        }

        /// The byte offset in the message.
        pub fn position(&self) -> usize {
            self.msg.$span(self.idx).start as usize
        }
    };
}

/// A field: one or more repetitions.
#[derive(Clone, Copy)]
pub struct Field<'m> {
    msg: &'m Message<'m>,
    idx: usize,
}

impl<'m> Field<'m> {
    element_accessors!(field_span);

    /// Repetitions in order (an empty field has one, empty).
    pub fn repetitions(&self) -> impl ExactSizeIterator<Item = Repetition<'m>> + 'm {
        let msg = self.msg;
        msg.children(self.idx).map(move |idx| Repetition { msg, idx })
    }
}

/// One repetition of a field: one or more components.
#[derive(Clone, Copy)]
pub struct Repetition<'m> {
    msg: &'m Message<'m>,
    idx: usize,
}

impl<'m> Repetition<'m> {
    element_accessors!(repetition_span);

    /// Components in order.
    pub fn components(&self) -> impl ExactSizeIterator<Item = Component<'m>> + 'm {
        let msg = self.msg;
        msg.children(self.idx).map(move |idx| Component { msg, idx })
    }
}

/// One component: one or more subcomponents.
#[derive(Clone, Copy)]
pub struct Component<'m> {
    msg: &'m Message<'m>,
    idx: usize,
}

impl<'m> Component<'m> {
    element_accessors!(component_span);

    /// The raw bytes of each subcomponent in order.
    pub fn subcomponents(&self) -> impl ExactSizeIterator<Item = &'m [u8]> + 'm {
        let msg = self.msg;
        msg.children(self.idx).step_by(2).map(move |s| &msg.raw[msg.subcomponent_span(s).range()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An element in the reference tree: its byte range and its children.
    #[derive(Debug, PartialEq, Eq)]
    struct Node {
        range: (usize, usize),
        children: Vec<Node>,
    }

    fn leaf(start: usize, end: usize) -> Node {
        let sub = Node { range: (start, end), children: Vec::new() };
        let comp = Node { range: (start, end), children: vec![sub] };
        let rep = Node { range: (start, end), children: vec![comp] };
        Node { range: (start, end), children: vec![rep] }
    }

    /// Splits `raw[start..end]` at `delimiters[0]`, then each part at the
    /// next delimiter, down to subcomponents.
    fn split(raw: &[u8], start: usize, end: usize, delimiters: &[u8]) -> Vec<Node> {
        let Some((&d, lower)) = delimiters.split_first() else {
            return Vec::new();
        };
        let mut nodes = Vec::new();
        let mut from = start;
        for i in start..=end {
            if i == end || raw[i] == d {
                nodes.push(Node { range: (from, i), children: split(raw, from, i, lower) });
                from = i + 1;
            }
        }
        nodes
    }

    /// The parser's rules read the simple way: one line at a time, one
    /// level at a time.
    fn reference(raw: &[u8]) -> Result<Vec<([u8; 3], Node)>, ParseError> {
        let is_end = |b: &u8| *b == b'\r' || *b == b'\n';
        let start = raw.iter().position(|b| !is_end(b)).ok_or(ParseError::Empty)?;
        let first_end = raw[start..].iter().position(is_end).map_or(raw.len(), |i| start + i);
        let header = &raw[start..first_end];
        if !header.starts_with(b"MSH") {
            return Err(ParseError::MissingMsh { position: start, found: crate::hl7::printable_id(header) });
        }
        let (d, len) = Delimiters::from_header(header, start)?;
        let levels = [d.field, d.repetition, d.component, d.subcomponent];
        let mut segments = Vec::new();
        let mut pos = start;
        while pos < raw.len() {
            let end = raw[pos..].iter().position(is_end).map_or(raw.len(), |i| pos + i);
            if end > pos {
                let seg = &raw[pos..end];
                let id: [u8; 3] = match seg.get(..3) {
                    Some(&[a, b, c]) if [a, b, c].iter().all(|x| x.is_ascii_uppercase() || x.is_ascii_digit()) => {
                        [a, b, c]
                    }
                    _ => return Err(ParseError::InvalidSegmentId { position: pos }),
                };
                if seg.len() > 3 && seg[3] != d.field {
                    return Err(ParseError::InvalidSegmentId { position: pos });
                }
                let mut fields = vec![leaf(pos, pos + 3)];
                let mut body = pos + 4;
                if segments.is_empty() {
                    fields.push(leaf(pos + 3, pos + 4));
                    fields.push(leaf(pos + 4, pos + 4 + len));
                    body = pos + 4 + len + 1;
                }
                if body <= end {
                    fields.extend(split(raw, body, end, &levels));
                }
                segments.push((id, Node { range: (pos, end), children: fields }));
            }
            pos = end + 1;
        }
        Ok(segments)
    }

    fn range_of(raw: &[u8], part: &[u8]) -> (usize, usize) {
        let start = part.as_ptr() as usize - raw.as_ptr() as usize;
        (start, start + part.len())
    }

    /// The parsed message as a reference tree, read through the public
    /// accessors and, for every element, through a path lookup.
    fn tree(msg: &Message<'_>) -> Vec<([u8; 3], Node)> {
        let raw = msg.raw();
        let mut occurrences: Vec<[u8; 3]> = Vec::new();
        let mut segments = Vec::new();
        for seg in msg.segments() {
            let id: [u8; 3] = seg.id().as_bytes().try_into().unwrap();
            occurrences.push(id);
            let occurrence = occurrences.iter().filter(|o| **o == id).count();
            let mut fields = vec![leaf(seg.position(), seg.position() + 3)];
            for (n, field) in seg.fields() {
                let path = Path::field(seg.id(), n).occurrence(occurrence);
                assert_eq!(msg.get(&path), Some(field.raw()), "{path}");
                assert_eq!(field.position(), range_of(raw, field.raw()).0);
                let mut reps = Vec::new();
                for (r, rep) in field.repetitions().enumerate() {
                    let path = path.repetition(r + 1);
                    assert_eq!(msg.get(&path), Some(rep.raw()), "{path}");
                    let mut comps = Vec::new();
                    for (c, comp) in rep.components().enumerate() {
                        let path = path.component(c + 1);
                        assert_eq!(msg.get(&path), Some(comp.raw()), "{path}");
                        let mut subs = Vec::new();
                        for (s, sub) in comp.subcomponents().enumerate() {
                            let path = path.subcomponent(s + 1);
                            assert_eq!(msg.get(&path), Some(sub), "{path}");
                            subs.push(Node { range: range_of(raw, sub), children: Vec::new() });
                        }
                        assert_eq!(msg.get(&path.subcomponent(subs.len() + 1)), None);
                        comps.push(Node { range: range_of(raw, comp.raw()), children: subs });
                    }
                    assert_eq!(msg.get(&path.component(comps.len() + 1)), None);
                    reps.push(Node { range: range_of(raw, rep.raw()), children: comps });
                }
                assert_eq!(msg.get(&path.repetition(reps.len() + 1)), None);
                fields.push(Node { range: range_of(raw, field.raw()), children: reps });
            }
            assert_eq!(seg.field_count(), fields.len() - 1);
            assert!(seg.field(fields.len()).is_none());
            segments.push((id, Node { range: range_of(raw, seg.raw()), children: fields }));
        }
        segments
    }

    fn check(raw: &[u8]) {
        let expected = reference(raw);
        match Message::parse(raw) {
            Ok(msg) => {
                let expected = expected.unwrap_or_else(|e| panic!("{:?}: parsed, expected {e:?}", raw.escape_ascii()));
                assert_eq!(tree(&msg), expected, "{:?}", raw.escape_ascii());
            }
            Err(e) => assert_eq!(Err(e), expected.map(|_| ()), "{:?}", raw.escape_ascii()),
        }
    }

    /// Deterministic pseudo-random numbers (xorshift).
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    #[test]
    fn index_matches_the_reference_on_random_messages() {
        // Delimiters, line endings, bytes close to them (one bit off, or
        // with the high bit set), other control characters, and other bytes
        // above 0x7f.
        const MIXED: &[u8] = b"|^~\\&#\r\n\r\nMSHPIDOBX0123 aZ'}_]%$!*@\x7f\x0c\x0b\x0e\t\x00\x01\
            \x80\x8a\x8d\xfc\xde\xfe\xa6\xdc\xa3\xa5\xa1\xaa\xc0\xa7\xff";
        // More delimiters than typical messages have, so that the index
        // outgrows its first estimate.
        const DENSE: &[u8] = b"|^~&|^~&|^~&|^~&%!*@\rx";
        const HEADERS: &[&[u8]] =
            &[b"MSH|^~\\&|", b"MSH|^~\\&#|", b"MSH%^~\\&%", b"MSH!*$@'!", b"MSH|^~\\&", b"\r\nMSH|^~\\&|", b"MSH"];
        let mut rng = Rng(0x5eed_0000_1234_5678);
        let (mut parsed, mut grown) = (0, 0);
        for _ in 0..30_000 {
            let mut raw = HEADERS[rng.below(HEADERS.len())].to_vec();
            let alphabet = if rng.below(4) == 0 { DENSE } else { MIXED };
            let max = if rng.below(8) == 0 { 800 } else { 90 };
            let len = rng.below(max);
            raw.extend((0..len).map(|_| alphabet[rng.below(alphabet.len())]));
            // Mostly valid segment ids after line endings.
            for i in (1..raw.len()).rev() {
                if matches!(raw[i - 1], b'\r' | b'\n') && !matches!(raw[i], b'\r' | b'\n') && rng.below(16) != 0 {
                    raw.splice(i..i, *b"PID|");
                }
            }
            check(&raw);
            if let Ok(msg) = Message::parse(&raw) {
                parsed += 1;
                grown += usize::from(msg.regions.components > 2 * (raw.len() / 3 + 16));
            }
        }
        // The cases reach past the header and the table's first estimate.
        assert!(parsed > 5_000 && grown > 500, "{parsed} parsed, {grown} grown");
    }

    #[test]
    fn index_matches_the_reference_for_every_value_length() {
        // Values of every length up to a few words, each followed by every
        // delimiter, line ending or the end of the message.
        for len in 0..40 {
            for next in [&b"|"[..], b"^", b"~", b"&", b"\r", b"\n", b"\r\n", b""] {
                for tail in [&b""[..], b"\rPID|1", b"\nZ1X", b"\r\r\n"] {
                    let mut raw = b"MSH|^~\\&|".to_vec();
                    raw.extend(std::iter::repeat_n(b'x', len));
                    raw.extend_from_slice(next);
                    raw.extend_from_slice(tail);
                    check(&raw);
                }
            }
        }
    }

    #[test]
    fn index_grows_past_its_first_estimate() {
        // A delimiter in every byte needs several times the table sized
        // for typical messages; large messages start with a capped table.
        for (filler, counts) in [
            (&b"|"[..], &[3_000, 20_000][..]),
            (b"^", &[3_000, 20_000]),
            (b"~", &[3_000, 20_000]),
            (b"&", &[3_000, 20_000]),
            (b"|^~&", &[3_000, 20_000]),
            // Path lookups scan the segments, so the check is quadratic in
            // their number.
            (b"\rA1B", &[3_000]),
        ] {
            for &count in counts {
                let mut raw = b"MSH|^~\\&|".to_vec();
                for _ in 0..count {
                    raw.extend_from_slice(filler);
                }
                check(&raw);
            }
        }
        // A long value first makes the rest look sparser than it is.
        let mut raw = b"MSH|^~\\&|".to_vec();
        raw.extend(std::iter::repeat_n(b'x', 50_000));
        raw.extend(std::iter::repeat_n(b'|', 50_000));
        check(&raw);
    }

    #[test]
    fn invalid_paths_address_nothing() {
        let msg = Message::parse(b"MSH|^~\\&|A\rPID|1|a&b^c~d\rPID|2").unwrap();
        let pid = Path::field("PID", 2);
        assert_eq!(msg.get(&pid.repetition(1).component(1).subcomponent(2)), Some(&b"b"[..]));
        assert_eq!(msg.get(&pid.occurrence(2)), None);
        assert_eq!(msg.get(&Path::field("PID", 1).occurrence(2)), Some(&b"2"[..]));
        for path in [
            Path::field("PID", 0),
            pid.occurrence(0),
            pid.repetition(0),
            pid.component(0),
            pid.component(1).subcomponent(0),
            pid.subcomponent(1),
            pid.repetition(1).subcomponent(1),
        ] {
            assert!(!path.is_valid(), "{path:?}");
            assert_eq!(msg.get(&path), None, "{path:?}");
            assert_eq!(msg.insertion_point(&path).map(|_| ()), None, "{path:?}");
        }
    }

    #[test]
    fn segment_ends_and_header_forms() {
        for raw in [
            &b"MSH|^~\\&"[..],
            b"MSH|^~\\&|",
            b"MSH|^~\\&#",
            b"MSH|^~\\&#|A",
            b"MSH|^~\\&\rPID",
            b"MSH|^~\\&\rPID|",
            b"MSH|^~\\&\r\n\r\nPID|a\n\nOBX|1\r\n",
            b"\n\rMSH|^~\\&|1|2\rPI",
            b"MSH|^~\\&|1\rpid|",
            b"MSH|^~\\&|1\rPIDX",
            b"MSH|^~",
            b"MSH^~\\&|",
            b"MSH|^~\\&#$%",
            b"MSH|^~\\&#$",
            b"MSA|1",
            b"\r\n",
            b"",
            // Bytes that are a delimiter, CR or LF plus 0x80 (U+1980 is E1 A6 80
            // in UTF-8).
            "MSH|^~\\&|\u{1980}|x\rPID|1".as_bytes(),
            b"MSH|^~\\&|\xa6\xde\xfe\xfc\xdc|\x8d\x8a\rPID|\xa6",
        ] {
            check(raw);
        }
    }
}
