//! HL7 v2 benchmarks: structural parsing (against the `hl7-parser` crate),
//! path access, ACK building and batch splitting.
//!
//! Run with `cargo bench --bench hl7`; see BENCHMARKS.md for results and for
//! how the comparison is kept fair.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use switchboard::hl7::{AckBuilder, AckCode, AckError, Hl7ErrorCode, Message, Path, Severity, split_batch};
use time::OffsetDateTime;
use time::macros::datetime;

const ADT_A01: &[u8] = include_bytes!("../tests/fixtures/valid/adt_a01.hl7");

/// A valid single-message fixture and whether its segments end in something
/// other than a bare CR (hl7-parser then needs its lenient-newline mode to
/// see every segment).
struct Fixture {
    name: &'static str,
    bytes: &'static [u8],
    lenient: bool,
}

/// Every valid fixture except `batch.hl7` (several messages, not one) and
/// `latin1_8859.hl7` (ISO-8859-1 bytes: hl7-parser only accepts `&str`).
const FIXTURES: &[Fixture] = &[
    Fixture {
        name: "ack_ae_with_err",
        bytes: include_bytes!("../tests/fixtures/valid/ack_ae_with_err.hl7"),
        lenient: false,
    },
    Fixture { name: "adt_a01", bytes: include_bytes!("../tests/fixtures/valid/adt_a01.hl7"), lenient: false },
    Fixture {
        name: "crlf_terminated",
        bytes: include_bytes!("../tests/fixtures/valid/crlf_terminated.hl7"),
        lenient: true,
    },
    Fixture {
        name: "custom_delimiters",
        bytes: include_bytes!("../tests/fixtures/valid/custom_delimiters.hl7"),
        lenient: false,
    },
    Fixture {
        name: "lf_terminated",
        bytes: include_bytes!("../tests/fixtures/valid/lf_terminated.hl7"),
        lenient: true,
    },
    Fixture {
        name: "minimal_ack_aa",
        bytes: include_bytes!("../tests/fixtures/valid/minimal_ack_aa.hl7"),
        lenient: false,
    },
    Fixture {
        name: "oru_r01_escapes",
        bytes: include_bytes!("../tests/fixtures/valid/oru_r01_escapes.hl7"),
        lenient: false,
    },
    Fixture {
        name: "repetitions_subcomponents",
        bytes: include_bytes!("../tests/fixtures/valid/repetitions_subcomponents.hl7"),
        lenient: false,
    },
];

const ACK_TIME: OffsetDateTime = datetime!(2026-11-28 09:45:13 UTC);

fn as_str(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("fixture is UTF-8")
}

fn hl7_parser_parse(text: &str, lenient: bool) -> hl7_parser::Message<'_> {
    if lenient {
        hl7_parser::Message::parse_with_lenient_newlines(text, true)
    } else {
        hl7_parser::Message::parse(text)
    }
    .expect("hl7-parser parses the message")
}

/// Checks, outside any timed loop, that both parsers build the same tree:
/// the same segments, fields, repetitions, components and subcomponents with
/// the same raw values. The timed comparison is only fair if both do the
/// same work.
fn assert_same_structure(what: &str, raw: &[u8], lenient: bool) {
    let ours = Message::parse(raw).expect("switchboard parses the message");
    let text = as_str(raw);
    let theirs = hl7_parser_parse(text, lenient);
    assert_eq!(ours.segment_count(), theirs.segments.len(), "{what}: segment count");
    for (seg, their_seg) in ours.segments().zip(&theirs.segments) {
        assert_eq!(seg.id(), their_seg.name, "{what}: segment id");
        let fields: Vec<_> = seg.fields().collect();
        assert_eq!(fields.len(), their_seg.fields.len(), "{what}: {} field count", seg.id());
        for ((n, field), their_field) in fields.into_iter().zip(&their_seg.fields) {
            assert_eq!(field.raw(), their_field.raw_value().as_bytes(), "{what}: {}-{n}", seg.id());
            if seg.id() == "MSH" && n <= 2 {
                // MSH-1/MSH-2 are single values in both parsers.
                continue;
            }
            assert_eq!(field.repetitions().len(), their_field.repeats.len(), "{what}: {}-{n} repetitions", seg.id());
            for (rep, their_rep) in field.repetitions().zip(&their_field.repeats) {
                assert_eq!(rep.components().len(), their_rep.components.len(), "{what}: {}-{n} components", seg.id());
                for (comp, their_comp) in rep.components().zip(&their_rep.components) {
                    let subs: Vec<&[u8]> = comp.subcomponents().collect();
                    let their_subs: Vec<&[u8]> = their_comp.subcomponents.iter().map(|s| s.value.as_bytes()).collect();
                    assert_eq!(subs, their_subs, "{what}: {}-{n} subcomponents", seg.id());
                }
            }
        }
    }
}

/// Deterministic pseudo-random numbers (xorshift), so the generated data is
/// the same on every run without a `rand` dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// An ORU^R01 of about `target` bytes: MSH, PID, OBR, then OBX segments
/// until the size is reached. Values use components, repetitions,
/// subcomponents and escape sequences as lab systems send them.
fn generate_oru(target: usize) -> Vec<u8> {
    const TESTS: &[(&str, &str, &str, &str, &str)] = &[
        ("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "NM", "mg/dL", "<200"),
        ("2571-8", "Triglyceride [Mass/volume] in Serum or Plasma", "NM", "mg/dL", "<150"),
        ("2085-9", "HDL Cholesterol", "NM", "mg/dL", ">40"),
        ("718-7", "Hemoglobin [Mass/volume] in Blood", "NM", "g/dL", "13.5-17.5"),
        ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "NM", "10*3/uL", "4.5-11.0"),
        ("777-3", "Platelets [#/volume] in Blood by Automated count", "NM", "10*3/uL", "150-400"),
        ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "NM", "mg/dL", "70-99"),
        ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "NM", "mg/dL", "0.7-1.3"),
        ("600-7", "Bacteria identified in Blood by Culture", "CWE", "", ""),
        ("8251-1", "Service comment", "FT", "", ""),
    ];
    const ORGANISMS: &[&str] = &[
        "112283007^Escherichia coli^SCT",
        "3092008^Staphylococcus aureus^SCT",
        "264395009^Microorganism not identified^SCT",
    ];
    const COMMENTS: &[&str] = &[
        r"Fasting sample \F\ slightly hemolysed\.br\Repeat advised",
        r"Ratio 1\S\2 \T\ retest \R\ call lab\.br\Result verified by \E\QC\E\",
        r"Specimen received at 08:42\X0D\\X0A\Temperature within range",
        r"Reference range per lab policy 4.2; see portal",
    ];
    const FLAGS: &[&str] = &["N", "H", "L", "H~A", "L~A", ""];
    const TECHS: &[&str] = &[
        "4321^CURIE^MARIE^^^DR~8765^PASTEUR^LOUIS",
        "5555^FLEMING^ALEXANDER^^^DR",
        "9999^NIGHTINGALE^FLORENCE^^^RN~1111^LISTER^JOSEPH",
    ];

    let mut rng = Rng(0x5eed_1234_abcd_0042);
    let mut out = String::with_capacity(target + 512);
    out.push_str(
        "MSH|^~\\&|LABSYS|LAB^1.2.840.114350.1.13.99^ISO|EMR|GOOD HOSPITAL|20261128101500||ORU^R01^ORU_R01|LAB100K|P|2.5.1|||AL|NE||UNICODE UTF-8\r",
    );
    out.push_str(
        "PID|1||555001^^^GOOD HOSPITAL&1.2.3.4&ISO^MR~999-88-7777^^^USSSA^SS||ROE^JANE^M^^^^L~ROE^JANIE^^^^^A||19751203|F|||42 ELM ST^^SPRINGFIELD^IL^62704^USA^H||^PRN^PH^^1^217^5550199\r",
    );
    out.push_str(
        "OBR|1|ORD448^EMR|FIL993^LABSYS|24331-1^Lipid panel with direct LDL^LN|||20261128080000|||||||20261128083000|BLD&Blood&HL70070|1234^WELBY^MARCUS^^^DR||||||20261128101400|||F\r",
    );
    let mut n = 0;
    while out.len() < target {
        n += 1;
        let (code, name, kind, units, range) = TESTS[rng.below(TESTS.len() as u64) as usize];
        let value = match kind {
            "NM" => format!("{}.{}", rng.below(400), rng.below(10)),
            "CWE" => rng.pick(ORGANISMS).to_owned(),
            _ => rng.pick(COMMENTS).to_owned(),
        };
        let flags = if kind == "NM" { rng.pick(FLAGS) } else { "" };
        let units = if units.is_empty() { String::new() } else { format!("{units}^{units}^UCUM") };
        let tech = rng.pick(TECHS);
        let (hour, minute) = (8 + rng.below(3), rng.below(60));
        out.push_str(&format!(
            "OBX|{n}|{kind}|{code}^{name}^LN^{n}^local test {n}^L|{sub}|{value}|{units}|{range}|{flags}|||F|||20261128{hour:02}{minute:02}00|LAB^Main lab^L|{tech}|ANALYZER-{id}^^1.2.3.{id}&ISO\r",
            sub = rng.below(3) + 1,
            id = rng.below(8),
        ));
    }
    out.into_bytes()
}

/// A batch file of `count` copies of the ADT fixture, each with its own
/// control id, between FHS/BHS headers and BTS/FTS trailers.
fn generate_batch(count: usize) -> Vec<u8> {
    let adt = as_str(ADT_A01).trim_end_matches(['\r', '\n']);
    let mut out = String::with_capacity(count * (adt.len() + 1) + 256);
    out.push_str("FHS|^~\\&|REGADT|GOOD HOSPITAL|LABSYS|LAB|20261128140000||||FILE-1\r");
    out.push_str("BHS|^~\\&|REGADT|GOOD HOSPITAL|LABSYS|LAB|20261128140000||||BATCH-1\r");
    for i in 0..count {
        out.push_str(&adt.replace("MSG00001", &format!("MSG{i:05}")));
        out.push('\r');
    }
    out.push_str(&format!("BTS|{count}\rFTS|1\r"));
    out.into_bytes()
}

fn parse_adt(c: &mut Criterion) {
    assert_same_structure("adt_a01", ADT_A01, false);
    let text = as_str(ADT_A01);
    let mut group = c.benchmark_group("parse/adt_a01");
    group.throughput(Throughput::Elements(1));
    group.bench_function("switchboard", |b| b.iter(|| Message::parse(black_box(ADT_A01)).unwrap()));
    group.bench_function("hl7-parser", |b| b.iter(|| hl7_parser::Message::parse(black_box(text)).unwrap()));
    group.bench_function("hl7-parser-lenient", |b| {
        b.iter(|| hl7_parser::Message::parse_with_lenient_newlines(black_box(text), true).unwrap());
    });
    group.finish();
}

fn parse_fixtures(c: &mut Criterion) {
    for f in FIXTURES {
        assert_same_structure(f.name, f.bytes, f.lenient);
    }
    let texts: Vec<(&str, bool)> = FIXTURES.iter().map(|f| (as_str(f.bytes), f.lenient)).collect();
    let bytes: usize = FIXTURES.iter().map(|f| f.bytes.len()).sum();
    let mut group = c.benchmark_group("parse/fixtures");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("switchboard", |b| {
        b.iter(|| {
            for f in FIXTURES {
                black_box(Message::parse(black_box(f.bytes)).unwrap());
            }
        });
    });
    group.bench_function("hl7-parser", |b| {
        b.iter(|| {
            for &(text, lenient) in &texts {
                black_box(hl7_parser_parse(black_box(text), lenient));
            }
        });
    });
    group.finish();
}

fn parse_oru_100k(c: &mut Criterion) {
    let raw = generate_oru(100 * 1024);
    assert_same_structure("oru_100k", &raw, false);
    let text = as_str(&raw);
    let mut group = c.benchmark_group("parse/oru_100k");
    group.throughput(Throughput::Bytes(raw.len() as u64));
    group.bench_function("switchboard", |b| b.iter(|| Message::parse(black_box(&raw)).unwrap()));
    group.bench_function("hl7-parser", |b| b.iter(|| hl7_parser::Message::parse(black_box(text)).unwrap()));
    group.finish();
}

/// hl7-parser's lookup of MSH-9.2 by walking its tree.
fn their_msh_9_2<'m>(m: &'m hl7_parser::Message<'m>) -> Option<&'m str> {
    m.segment("MSH")
        .and_then(|s| s.field(9))
        .and_then(|f| f.repeat(1))
        .and_then(|r| r.component(2))
        .map(hl7_parser::message::Component::raw_value)
}

/// hl7-parser's lookup of PID-3[2].1 by walking its tree.
fn their_pid_3_2_1<'m>(m: &'m hl7_parser::Message<'m>) -> Option<&'m str> {
    m.segment("PID")
        .and_then(|s| s.field(3))
        .and_then(|f| f.repeat(2))
        .and_then(|r| r.component(1))
        .map(hl7_parser::message::Component::raw_value)
}

/// hl7-parser's lookup of PV1-44 by walking its tree.
fn their_pv1_44<'m>(m: &'m hl7_parser::Message<'m>) -> Option<&'m str> {
    m.segment("PV1").and_then(|s| s.field(44)).map(hl7_parser::message::Field::raw_value)
}

/// hl7-parser's query from a path string to decoded text.
fn their_text<'m>(m: &'m hl7_parser::Message<'m>, query: &str) -> Option<String> {
    m.query(query).map(|r| r.display(&m.separators).to_string())
}

fn path_access(c: &mut Criterion) {
    let msg = Message::parse(ADT_A01).unwrap();
    let text = as_str(ADT_A01);
    let theirs = hl7_parser::Message::parse(text).unwrap();
    let mut group = c.benchmark_group("path");
    group.throughput(Throughput::Elements(1));

    // Pre-parsed paths. hl7-parser's equivalent of a pre-parsed path is
    // walking its tree with segment/field/repeat/component, which allocates
    // nothing (its `query` takes a `LocationQuery` by value, so reusing one
    // would add a String clone per lookup).
    let ours_msh_9_2: Path = "MSH-9.2".parse().unwrap();
    let ours_pid_3_2_1: Path = "PID-3[2].1".parse().unwrap();
    let ours_pv1_44: Path = "PV1-44".parse().unwrap();
    assert_eq!(msg.get(&ours_msh_9_2), Some(&b"A01"[..]));
    assert_eq!(msg.get(&ours_pid_3_2_1), Some(&b"987-65-4320"[..]));
    assert_eq!(msg.get(&ours_pv1_44), Some(&b"20261128094000"[..]));

    assert_eq!(their_msh_9_2(&theirs), Some("A01"));
    assert_eq!(their_pid_3_2_1(&theirs), Some("987-65-4320"));
    assert_eq!(their_pv1_44(&theirs), Some("20261128094000"));

    group.bench_function(BenchmarkId::new("MSH-9.2", "switchboard"), |b| {
        b.iter(|| black_box(&msg).get(black_box(&ours_msh_9_2)));
    });
    group.bench_function(BenchmarkId::new("MSH-9.2", "hl7-parser"), |b| b.iter(|| their_msh_9_2(black_box(&theirs))));
    group.bench_function(BenchmarkId::new("PID-3[2].1", "switchboard"), |b| {
        b.iter(|| black_box(&msg).get(black_box(&ours_pid_3_2_1)));
    });
    group.bench_function(BenchmarkId::new("PID-3[2].1", "hl7-parser"), |b| {
        b.iter(|| their_pid_3_2_1(black_box(&theirs)));
    });
    group.bench_function(BenchmarkId::new("PV1-44", "switchboard"), |b| {
        b.iter(|| black_box(&msg).get(black_box(&ours_pv1_44)));
    });
    group.bench_function(BenchmarkId::new("PV1-44", "hl7-parser"), |b| b.iter(|| their_pv1_44(black_box(&theirs))));

    // From a path string to decoded, owned text.
    assert_eq!(msg.text("PID-5.1").unwrap().as_deref(), Some("DOE"));
    assert_eq!(their_text(&theirs, "PID.5.1").as_deref(), Some("DOE"));
    group.bench_function(BenchmarkId::new("text_PID-5.1", "switchboard"), |b| {
        b.iter(|| black_box(&msg).text(black_box("PID-5.1")).unwrap());
    });
    group.bench_function(BenchmarkId::new("text_PID-5.1", "hl7-parser"), |b| {
        b.iter(|| their_text(black_box(&theirs), black_box("PID.5.1")));
    });
    group.finish();
}

fn ack_build(c: &mut Criterion) {
    let msg = Message::parse(ADT_A01).unwrap();
    let error = AckError {
        location: Some("PID-7".parse().unwrap()),
        code: Hl7ErrorCode::RequiredFieldMissing,
        severity: Severity::Error,
    };
    let aa = || AckBuilder::new(&msg, AckCode::AA).control_id("ACK00001").timestamp(ACK_TIME).build();
    let ae = || {
        AckBuilder::new(&msg, AckCode::AE)
            .text("Date of birth in PID.7 must not be empty")
            .error(error.clone())
            .control_id("ACK00002")
            .timestamp(ACK_TIME)
            .build()
    };
    assert!(aa().starts_with(b"MSH|^~\\&|LABSYS|LAB|REGADT|GOOD HOSPITAL|20261128094513+0000||ACK^A01^ACK|ACK00001|"));
    assert!(ae().ends_with(b"ERR||PID^1^7|101^Required field missing^HL70357|E\r"));

    let mut group = c.benchmark_group("ack/build");
    group.throughput(Throughput::Elements(1));
    group.bench_function("AA", |b| b.iter(|| black_box(aa())));
    group.bench_function("AE_text_err", |b| b.iter(|| black_box(ae())));
    // As the engine builds them: the time and a control id made for each.
    group.bench_function("AA_generated_id", |b| b.iter(|| black_box(AckBuilder::new(&msg, AckCode::AA).build())));
    group.finish();
}

fn batch_split(c: &mut Criterion) {
    let raw = generate_batch(1_000);
    let batch = split_batch(&raw).unwrap();
    assert_eq!(batch.messages.len(), 1_000);
    assert!(!batch.counts_mismatch());
    let mut group = c.benchmark_group("batch/split");
    group.throughput(Throughput::Bytes(raw.len() as u64));
    group.bench_function("switchboard_1000_adt", |b| b.iter(|| split_batch(black_box(&raw)).unwrap()));
    group.finish();
}

criterion_group!(benches, parse_adt, parse_fixtures, parse_oru_100k, path_access, ack_build, batch_split);
criterion_main!(benches);
