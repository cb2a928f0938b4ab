//! Property tests of the HL7 core: escapes round-trip, the parser never
//! panics, and the structural index describes the input exactly.

use proptest::prelude::*;
use switchboard::hl7::{Delimiters, Message, MessageBuf, Path, escape, split_batch};

/// Sub-component values: no delimiters, no line endings.
fn leaf() -> impl Strategy<Value = String> {
    "[A-Za-z0-9 .:/-]{0,6}"
}

type Tree = Vec<Vec<Vec<String>>>; // field = repetitions > components > subcomponents

fn field() -> impl Strategy<Value = Tree> {
    prop::collection::vec(prop::collection::vec(prop::collection::vec(leaf(), 1..3), 1..4), 1..3)
}

fn segment() -> impl Strategy<Value = (String, Vec<Tree>)> {
    (prop::sample::select(vec!["PID", "PV1", "OBX", "ZX1", "NTE"]), prop::collection::vec(field(), 0..8))
        .prop_map(|(id, fields)| (id.to_owned(), fields))
}

fn delimiters() -> impl Strategy<Value = Delimiters> {
    prop::sample::select(vec![
        Delimiters::default(),
        Delimiters {
            field: b'#',
            component: b'*',
            repetition: b'~',
            escape: b'\\',
            subcomponent: b'%',
            truncation: None,
        },
        Delimiters { truncation: Some(b'#'), ..Delimiters::default() },
    ])
}

fn encode_field(field: &Tree, d: &Delimiters) -> Vec<u8> {
    let join = |parts: Vec<Vec<u8>>, sep: u8| parts.join(&sep);
    join(
        field
            .iter()
            .map(|rep| {
                join(
                    rep.iter()
                        .map(|comp| join(comp.iter().map(|s| s.as_bytes().to_vec()).collect(), d.subcomponent))
                        .collect(),
                    d.component,
                )
            })
            .collect(),
        d.repetition,
    )
}

fn build(header: &[Tree], segments: &[(String, Vec<Tree>)], d: &Delimiters, ending: &[u8]) -> Vec<u8> {
    let mut out = b"MSH".to_vec();
    out.push(d.field);
    out.extend(d.encoding_characters());
    for f in header {
        out.push(d.field);
        out.extend(encode_field(f, d));
    }
    for (id, fields) in segments {
        out.extend_from_slice(ending);
        out.extend_from_slice(id.as_bytes());
        for f in fields {
            out.push(d.field);
            out.extend(encode_field(f, d));
        }
    }
    out.extend_from_slice(ending);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn escape_round_trips(text in any::<String>(), d in delimiters()) {
        let escaped = escape::escape(text.as_bytes(), &d);
        prop_assert!(!escaped.iter().any(|&b| [d.field, d.component, d.repetition, d.subcomponent, b'\r', b'\n'].contains(&b) || Some(b) == d.truncation));
        let back = escape::unescape_strict(&escaped, &d).unwrap();
        prop_assert_eq!(back.as_ref(), text.as_bytes());
    }

    #[test]
    fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Message::parse(&bytes);
        let _ = split_batch(&bytes);
    }

    #[test]
    fn parse_never_panics_past_the_header(tail in prop::collection::vec(prop::sample::select(b"|^~\\&#\r\nMSHPIDX0123 ".to_vec()), 0..256)) {
        let mut bytes = b"MSH|^~\\&|".to_vec();
        bytes.extend(tail);
        if let Ok(msg) = Message::parse(&bytes) {
            for seg in msg.segments() {
                for (_, f) in seg.fields() {
                    for r in f.repetitions() {
                        for c in r.components() {
                            let _ = c.text();
                            let _ = c.subcomponents().count();
                        }
                    }
                }
            }
            let _ = msg.check_escapes();
        }
    }

    /// Every generated value is found at its path, every container has the
    /// generated number of children, and walking the index re-encodes the
    /// input byte for byte.
    #[test]
    fn index_describes_the_input_exactly(
        header in prop::collection::vec(field(), 8..12),
        segments in prop::collection::vec(segment(), 0..6),
        d in delimiters(),
        ending in prop::sample::select(vec![&b"\r"[..], b"\n", b"\r\n"]),
    ) {
        let bytes = build(&header, &segments, &d, ending);
        let msg = Message::parse(&bytes).unwrap();
        prop_assert_eq!(msg.raw(), &bytes[..]);
        prop_assert_eq!(msg.segment_count(), segments.len() + 1);

        let mut rebuilt = Vec::new();
        for seg in msg.segments() {
            rebuilt.extend_from_slice(seg.id().as_bytes());
            for (n, f) in seg.fields() {
                if seg.id() == "MSH" && n <= 2 {
                    if n == 1 { rebuilt.push(d.field) } else { rebuilt.extend(d.encoding_characters()) }
                    continue;
                }
                rebuilt.push(d.field);
                let reps: Vec<Vec<u8>> = f.repetitions().map(|r| {
                    let comps: Vec<Vec<u8>> = r.components().map(|c| c.subcomponents().collect::<Vec<_>>().join(&d.subcomponent)).collect();
                    comps.join(&d.component)
                }).collect();
                rebuilt.extend(reps.join(&d.repetition));
            }
            rebuilt.extend_from_slice(ending);
        }
        prop_assert_eq!(&rebuilt, &bytes);

        let mut occurrences = std::collections::HashMap::new();
        for (id, fields) in &segments {
            let occ = occurrences.entry(id.clone()).or_insert(0);
            *occ += 1;
            for (f, field) in fields.iter().enumerate() {
                prop_assert_eq!(msg.segment(id, *occ).unwrap().field(f + 1).unwrap().repetitions().len(), field.len());
                for (r, rep) in field.iter().enumerate() {
                    for (c, comp) in rep.iter().enumerate() {
                        for (s, sub) in comp.iter().enumerate() {
                            let path = Path::field(id, f + 1).occurrence(*occ).repetition(r + 1).component(c + 1).subcomponent(s + 1);
                            prop_assert_eq!(msg.get(&path), Some(sub.as_bytes()), "{}", path);
                        }
                    }
                }
            }
        }
    }

    /// Setting a value and reading it back gives the value; every other
    /// path keeps its bytes.
    #[test]
    fn set_then_get(
        segments in prop::collection::vec(segment(), 1..4),
        value in any::<String>(),
        f in 1usize..12, r in 1usize..4, c in 1usize..5, s in 1usize..3,
    ) {
        let header: Vec<Tree> = (0..8).map(|i| vec![vec![vec![format!("H{i}")]]]).collect();
        let bytes = build(&header, &segments, &Delimiters::default(), b"\r");
        let (id, _) = &segments[0];
        let path = Path::field(id, f).repetition(r).component(c).subcomponent(s);
        let mut buf = MessageBuf::new(bytes.clone()).unwrap();
        buf.set_path(&path, &value).unwrap();
        let msg = buf.message();
        let raw = msg.get(&path).unwrap();
        prop_assert_eq!(msg.decode(raw), value.as_str());
        prop_assert_eq!(msg.get(&Path::field("MSH", 3)), Some(&b"H0"[..]));
        prop_assert_eq!(msg.segment_count(), segments.len() + 1);
    }
}

/// Found by fuzzing: trailer counts that overflow when summed.
#[test]
fn huge_batch_counts_are_an_error_not_a_panic() {
    let err = split_batch(b"BTS|18446744073709551615\rBTS|1").unwrap_err();
    assert!(err.to_string().contains("BTS-1"), "{err}");
}
