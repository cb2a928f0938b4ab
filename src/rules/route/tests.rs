use super::*;
use proptest::prelude::*;

const ADT: &[u8] = include_bytes!("../../../tests/fixtures/valid/adt_a01.hl7");
const DOB_MISSING: &[u8] = include_bytes!("../../../tests/fixtures/invalid/dob_missing.hl7");
const ORU: &[u8] = include_bytes!("../../../tests/fixtures/valid/oru_r01_escapes.hl7");
const ACK: &[u8] = include_bytes!("../../../tests/fixtures/valid/minimal_ack_aa.hl7");
const QUOTES: &[u8] = b"MSH|^~\\&|A|B|C|D|20260101||ADT^A08|Q1|P|2.5.1\rNTE|1||He said \"hi\" \\E\\path";

fn cond(text: &str) -> Condition {
    text.parse().unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
}

fn check(cases: &[(&str, &[u8], bool)]) {
    for &(text, raw, expected) in cases {
        let msg = Message::parse(raw).unwrap();
        assert_eq!(cond(text).matches(&msg), expected, "{text}");
    }
}

#[test]
fn each_operator_true_and_false() {
    check(&[
        (r#"MSH-9.1 = "ADT""#, ADT, true),
        (r#"MSH-9.1 = "ORU""#, ADT, false),
        (r#"MSH-9.1 != "ORU""#, ADT, true),
        (r#"MSH-9.1 != "ADT""#, ADT, false),
        (r#"MSH-9.2 in ["A01", "A04"]"#, ADT, true),
        (r#"MSH-9.2 in ["A04", "A08"]"#, ADT, false),
        (r#"MSH-4 contains "HOSP""#, ADT, true),
        (r#"MSH-4 contains "CLINIC""#, ADT, false),
        (r#"MSH-4 starts_with "GOOD""#, ADT, true),
        (r#"MSH-4 starts_with "HOSPITAL""#, ADT, false),
        (r#"MSH-4 ends_with "HOSPITAL""#, ADT, true),
        (r#"MSH-4 ends_with "GOOD""#, ADT, false),
        ("exists PID-7", ADT, true),
        ("exists PID-7", DOB_MISSING, false),
        ("true", ADT, true),
        ("false", ADT, false),
        // Comparisons are case-sensitive.
        (r#"MSH-9.1 = "adt""#, ADT, false),
    ]);
}

#[test]
fn absent_and_empty_compare_as_empty_text() {
    check(&[
        // Present and empty.
        (r#"PID-7 = """#, DOB_MISSING, true),
        (r#"PID-7 != """#, DOB_MISSING, false),
        ("exists PID-7", DOB_MISSING, false),
        // Absent field.
        (r#"PID-8 = """#, DOB_MISSING, true),
        ("exists PID-8", DOB_MISSING, false),
        (r#"PID-8 in ["", "U"]"#, DOB_MISSING, true),
        (r#"PID-8 starts_with """#, DOB_MISSING, true),
        // Absent segment and component.
        (r#"ZZZ-1 = """#, ADT, true),
        ("exists ZZZ-1", ADT, false),
        (r#"PID-5.9 = """#, ADT, true),
        (r#"OBX[4]-5 contains "x""#, ORU, false),
        // Present and not empty.
        (r#"PID-7 = """#, ADT, false),
        (r#"PID-7 = "19800115""#, ADT, true),
    ]);
}

#[test]
fn paths_compare_decoded_text() {
    check(&[
        (r#"PID-3[2].1 = "987-65-4320""#, ADT, true),
        (r#"PID-3[2].4 = "USSSA""#, ADT, true),
        (r#"PID-5 = "DOE^JOHN^Q^JR^^^L""#, ADT, true),
        (r#"OBX-5 = "212""#, ORU, true),
        (r#"OBX[2]-5 = "180""#, ORU, true),
        (r#"OBX[3]-5 contains "ratio 1^2 & retest""#, ORU, true),
        (r#"OBX[3]-5 contains "\\S\\""#, ORU, false),
        (r#"OBX[3]-5 starts_with "Fasting sample | hemolysed""#, ORU, true),
    ]);
}

#[test]
fn brief_examples_against_realistic_messages() {
    check(&[
        (r#"MSH-9.1 = "ADT" and MSH-9.2 in ["A01","A04"]"#, ADT, true),
        (r#"MSH-9.1 = "ADT" and MSH-9.2 in ["A01","A04"]"#, ORU, false),
        (r#"PID-7 = """#, DOB_MISSING, true),
        (r#"PID-7 = """#, ADT, false),
        ("not exists PID-7", DOB_MISSING, true),
        ("not exists PID-7", ADT, false),
        (r#"(MSH-9.1 = "ADT" or MSH-9.1 = "ORU") and not PID-8 = "U""#, ADT, true),
        (r#"(MSH-9.1 = "ADT" or MSH-9.1 = "ORU") and not PID-8 = "U""#, ORU, true),
        (r#"(MSH-9.1 = "ADT" or MSH-9.1 = "ORU") and not PID-8 = "U""#, QUOTES, true),
        (r#"(MSH-9.1 = "ADT" or MSH-9.1 = "ORU") and not PID-8 = "U""#, ACK, false),
        (r#"(MSH-9.1 = "ADT" or MSH-9.1 = "ORU") and not PID-8 = "M""#, ADT, false),
        (r#"OBX[3]-5 contains "hemolysed""#, ORU, true),
        (r#"OBX[3]-5 contains "hemolysed""#, ADT, false),
        (r#"MSH-4 starts_with "GOOD""#, ADT, true),
        (r#"MSH-4 starts_with "GOOD""#, ORU, false),
    ]);
}

#[test]
fn precedence_parentheses_and_not() {
    const T: &str = r#"MSH-9.1 = "ADT""#;
    const F: &str = r#"MSH-9.1 = "ORU""#;
    let cases = [
        // `and` binds tighter than `or`: T or (F and F).
        (format!("{T} or {F} and {F}"), true),
        (format!("{F} and {F} or {T}"), true),
        (format!("({T} or {F}) and {F}"), false),
        (format!("{F} and ({F} or {T})"), false),
        // `not` binds tighter than `and` and `or`.
        (format!("not {F} and {T}"), true),
        (format!("not {T} or {T}"), true),
        (format!("not ({T} or {T})"), false),
        (format!("not {T} and {T}"), false),
        (format!("not not {T}"), true),
        (format!("not (not {T})"), true),
        (format!("(({T}))"), true),
        (format!("{F} or {F} or {F} or {T}"), true),
        (format!("{T} and {T} and {T} and {F}"), false),
    ];
    for (text, expected) in cases {
        assert_eq!(cond(&text).matches(&Message::parse(ADT).unwrap()), expected, "{text}");
    }
}

#[test]
fn keywords_are_case_insensitive_and_spacing_is_free() {
    check(&[
        (r#"MSH-9.1 = "ADT" AND MSH-9.2 IN ["A01"]"#, ADT, true),
        (r#"MSH-9.1 = "ORU" Or MSH-9.2 In ["A01"]"#, ADT, true),
        ("NOT EXISTS PID-7", DOB_MISSING, true),
        (r#"MSH-4 CONTAINS "GOOD""#, ADT, true),
        (r#"MSH-4 Starts_With "GOOD""#, ADT, true),
        (r#"MSH-4 ENDS_WITH "HOSPITAL""#, ADT, true),
        ("TRUE", ADT, true),
        ("False", ADT, false),
        (r#"MSH-9.1="ADT"and(MSH-9.2!="A04")"#, ADT, true),
        ("not(exists PID-7)", DOB_MISSING, true),
        ("\n  MSH-9.2 in[ \"A04\" ,\t\"A01\", ]  \n", ADT, true),
    ]);
}

#[test]
fn segment_ids_that_look_like_keywords_are_paths() {
    let raw: &[u8] = b"MSH|^~\\&|A|B|C|D|20260101||ADT^A08|Z1|P|2.5.1\rNOT|x\rAND|y";
    check(&[(r#"NOT-1 = "x" and AND-1 = "y""#, raw, true), (r#"not NOT[1]-1 = "y""#, raw, true)]);
}

#[test]
fn escaped_quotes_and_backslashes() {
    let c = cond(r#"NTE-3 = "He said \"hi\" \\path""#);
    assert!(c.matches(&Message::parse(QUOTES).unwrap()));
    assert!(cond(r#"NTE-3 contains "\"hi\"""#).matches(&Message::parse(QUOTES).unwrap()));
    assert!(!cond(r#"NTE-3 contains "\\E\\""#).matches(&Message::parse(QUOTES).unwrap()));
    assert_eq!(c.to_string(), r#"NTE-3 = "He said \"hi\" \\path""#);
}

#[test]
fn parse_errors_point_at_the_character() {
    let cases: &[(&str, usize, &str)] = &[
        ("", 0, "expected a condition"),
        ("   ", 3, "expected a condition"),
        (r#"MSH-9.1 = "ADT"#, 10, "unterminated string"),
        (r#"MSH-9.1 = "AD\"#, 10, "unterminated string"),
        ("MSH-9.1 = ", 10, "expected a quoted string after '='"),
        ("MSH-9.1 = ADT", 10, "expected a quoted string after '=', e.g. MSH-9.1 = \"ADT\""),
        (r#"MSH-9.1 == "ADT""#, 9, "expected a quoted string after '='"),
        (r#"MSH-4 contains GOOD"#, 15, "expected a quoted string after 'contains'"),
        (r#"MSH-9.1 = "ADT" and"#, 19, "expected a condition after 'and'"),
        (r#"MSH-9.1 = "ADT" or )"#, 19, "expected a condition after 'or'"),
        ("not", 3, "expected a condition after 'not'"),
        ("exists", 6, "expected an HL7 path after 'exists'"),
        (r#"pid-3 = "x""#, 0, "invalid HL7 path \"pid-3\""),
        (r#"PID-3.x = "1""#, 6, "expected a number"),
        (r#"PID-0 = "1""#, 4, "numbers in HL7 paths start at 1"),
        (r#""ADT" = MSH-9.1"#, 0, "expected a condition"),
        ("PID-7", 5, "expected an operator after PID-7"),
        (r#"MSH-9.1 ~ "ADT""#, 8, "expected an operator after MSH-9.1"),
        (r#"MSH-9.1 ! "ADT""#, 9, "expected '=' after '!'"),
        (r#"MSH-9.1 = "ADT" xyz"#, 16, "expected 'and', 'or' or the end of the condition"),
        (r#"MSH-9.1 = "ADT" andMSH-9.2 = "A01""#, 16, "expected 'and', 'or' or the end"),
        (r#"(MSH-9.1 = "ADT""#, 16, "expected 'and', 'or' or ')' to close the '(' at character 0"),
        (r#"((MSH-9.1 = "ADT")"#, 18, "to close the '(' at character 0"),
        (r#"MSH-9.1 = "ADT")"#, 15, "unexpected ')' without a matching '('"),
        (r#"MSH-9.2 in "A01""#, 11, "expected a list in square brackets after 'in'"),
        ("MSH-9.2 in", 10, "expected a list in square brackets after 'in'"),
        ("MSH-9.2 in []", 12, "expected a quoted string in the list"),
        (r#"MSH-9.2 in ["A01" "A04"]"#, 18, "expected ',' or ']' to close the list opened at character 11"),
        (r#"MSH-9.2 in ["A01""#, 17, "expected ',' or ']'"),
        (r#"MSH-9.2 in ["A01", A04]"#, 19, "expected a quoted string in the list"),
        (r#"MSH-9.1 = "A\x""#, 12, "unknown escape '\\x'"),
        // Positions count characters, not bytes.
        (r#"PID-5.1 = "Müller" xyz"#, 19, "expected 'and', 'or' or the end"),
    ];
    for &(text, position, reason) in cases {
        let err = text.parse::<Condition>().expect_err(text);
        assert_eq!(err.position, position, "{text:?}: {err}");
        assert!(err.reason.contains(reason), "{text:?}: {err}");
    }
}

#[test]
fn error_display_matches_the_documented_form() {
    let err = "MSH-9.1 = ADT".parse::<Condition>().unwrap_err();
    assert_eq!(err.to_string(), r#"at character 10: expected a quoted string after '=', e.g. MSH-9.1 = "ADT""#);
}

#[test]
fn nesting_is_bounded() {
    let ok = format!("{}true{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
    assert!(cond(&ok).matches(&Message::parse(ADT).unwrap()));
    let deep = format!("{}true{}", "(".repeat(MAX_NESTING + 1), ")".repeat(MAX_NESTING + 1));
    let err = deep.parse::<Condition>().unwrap_err();
    assert_eq!(err.position, MAX_NESTING);
    assert!(err.reason.contains("deeper than 64"), "{err}");

    let nots = format!("{}true", "not ".repeat(100_000));
    let err = nots.parse::<Condition>().unwrap_err();
    assert_eq!(err.position, 4 * MAX_NESTING);

    let parens = "(".repeat(1_000_000);
    assert_eq!(parens.parse::<Condition>().unwrap_err().position, MAX_NESTING);

    let mixed = format!("{}true{}", "(not ".repeat(MAX_NESTING / 2), ")".repeat(MAX_NESTING / 2));
    assert!(cond(&mixed).matches(&Message::parse(ADT).unwrap()));
}

#[test]
fn long_chains_are_not_nesting() {
    let chain = vec![r#"MSH-9.1 = "ORU""#; 10_000].join(" or ") + r#" or MSH-9.1 = "ADT""#;
    assert!(cond(&chain).matches(&Message::parse(ADT).unwrap()));
}

#[test]
fn display_is_canonical_and_round_trips() {
    let cases = [
        (r#"MSH-9.1 = "ADT" and MSH-9.2 in ["A01","A04"]"#, r#"MSH-9.1 = "ADT" and MSH-9.2 in ["A01", "A04"]"#),
        (r#"PID-7 = """#, r#"PID-7 = """#),
        ("NOT  EXISTS PID-7", "not exists PID-7"),
        (
            r#"(MSH-9.1 = "ADT" OR MSH-9.1="ORU") AND NOT PID-8 = "U""#,
            r#"(MSH-9.1 = "ADT" or MSH-9.1 = "ORU") and not PID-8 = "U""#,
        ),
        (r#"OBX[3]-5 CONTAINS "hemolysed""#, r#"OBX[3]-5 contains "hemolysed""#),
        (r#"MSH-4 starts_with "GOOD""#, r#"MSH-4 starts_with "GOOD""#),
        (r#"MSH-4 ends_with "AL" or MSH-4 != "X""#, r#"MSH-4 ends_with "AL" or MSH-4 != "X""#),
        ("TRUE", "true"),
        ("false or true", "false or true"),
        (r#"NTE-3 = "a\"b\\c""#, r#"NTE-3 = "a\"b\\c""#),
        // Redundant parentheses go; needed ones stay.
        ("((true))", "true"),
        ("(true and false) or true", "true and false or true"),
        ("true and (false or true)", "true and (false or true)"),
        ("not (true and false)", "not (true and false)"),
        ("not (not true)", "not not true"),
        // Explicit grouping of the same operator is kept, so the tree is unchanged.
        ("true or (false or true)", "true or (false or true)"),
        ("(true and false) and true", "(true and false) and true"),
    ];
    let messages = [ADT, DOB_MISSING, ORU, QUOTES].map(|raw| Message::parse(raw).unwrap());
    for (text, canonical) in cases {
        let parsed = cond(text);
        assert_eq!(parsed.to_string(), canonical, "{text}");
        let reparsed = cond(canonical);
        assert_eq!(reparsed, parsed, "{text}");
        assert_eq!(reparsed.to_string(), canonical, "{text}");
        for msg in &messages {
            assert_eq!(reparsed.matches(msg), parsed.matches(msg), "{text}");
        }
    }
}

#[test]
fn always_matches_everything() {
    assert!(Condition::always().matches(&Message::parse(ORU).unwrap()));
    assert_eq!(Condition::default().to_string(), "true");
}

fn path(text: &str) -> Path {
    text.parse().unwrap()
}

fn set(p: &str, value: &str) -> TransformStep {
    TransformStep::Set { path: path(p), value: value.to_owned() }
}

#[test]
fn transform_set_creates_missing_fields_and_escapes() {
    let transform = Transform { steps: vec![set("PID-8", "U"), set("PID-30", "Y"), set("PID-5.2", "JOHN & JANE")] };
    let out = transform.apply(DOB_MISSING).unwrap();
    let msg = Message::parse(&out).unwrap();
    assert_eq!(msg.text("PID-8").unwrap().as_deref(), Some("U"));
    assert_eq!(msg.text("PID-30").unwrap().as_deref(), Some("Y"));
    assert_eq!(msg.get(&path("PID-5.2")), Some(&b"JOHN \\T\\ JANE"[..]));
    assert_eq!(msg.text("PID-5.2").unwrap().as_deref(), Some("JOHN & JANE"));
    // Untouched parts are byte-identical.
    assert!(out.starts_with(b"MSH|^~\\&|REGADT|GOOD HOSPITAL|LAB"));
    assert_eq!(msg.segment_count(), 2);
}

#[test]
fn transform_copy_and_clear() {
    let transform = Transform {
        steps: vec![
            TransformStep::Copy { from: path("PID-5"), to: path("PID-9") },
            TransformStep::Clear { path: path("PID-7") },
            TransformStep::Copy { from: path("ZZZ-1"), to: path("PID-11") },
            TransformStep::Clear { path: path("PID-40") },
        ],
    };
    let out = transform.apply(ADT).unwrap();
    let msg = Message::parse(&out).unwrap();
    assert_eq!(msg.get(&path("PID-9")), Some(&b"DOE^JOHN^Q^JR^^^L"[..]));
    assert_eq!(msg.get(&path("PID-7")), Some(&b""[..]));
    assert_eq!(msg.get(&path("PID-11")), Some(&b""[..]));
    assert_eq!(msg.get(&path("PID-40")), None);
    assert!(cond("not exists PID-7 and exists PID-9").matches(&msg));
}

#[test]
fn transform_leaves_the_original_alone() {
    let original = ADT.to_vec();
    let out = Transform { steps: vec![set("MSH-10", "NEW")] }.apply(&original).unwrap();
    assert_eq!(original, ADT);
    assert_ne!(out, original);
    assert_eq!(Transform::default().apply(ADT).unwrap(), ADT);
    assert!(Transform::default().is_empty());
}

#[test]
fn transform_errors_name_step_and_path() {
    let transform = Transform { steps: vec![set("PID-8", "U"), set("ZZZ-1", "x"), set("PID-9", "y")] };
    let err = transform.apply(ADT).unwrap_err();
    assert_eq!((err.step, err.path.as_str()), (1, "ZZZ-1"));
    assert!(err.reason.contains("no segment ZZZ"), "{err}");
    assert!(err.to_string().starts_with("transform step 1 (ZZZ-1): "), "{err}");

    let err = Transform { steps: vec![set("MSH-2", "x")] }.apply(ADT).unwrap_err();
    assert_eq!((err.step, err.path.as_str()), (0, "MSH-2"));

    let copy = TransformStep::Copy { from: path("PID-5"), to: path("PID-9.1") };
    let err = Transform { steps: vec![set("PID-8", "U"), copy] }.apply(ADT).unwrap_err();
    assert_eq!((err.step, err.path.as_str()), (1, "PID-9.1"));

    let err = Transform { steps: vec![set("PID-8", "U")] }.apply(b"not hl7").unwrap_err();
    assert_eq!(err.step, 0);
    assert!(err.reason.contains("does not parse"), "{err}");
}

#[test]
fn transform_steps_display() {
    assert_eq!(set("PID-8", "say \"U\"").to_string(), r#"set PID-8 = "say \"U\"""#);
    assert_eq!(TransformStep::Copy { from: path("PID-5"), to: path("PID-9") }.to_string(), "copy PID-5 to PID-9");
    assert_eq!(TransformStep::Clear { path: path("OBX[2]-5") }.to_string(), "clear OBX[2]-5");
}

/// Fragments of the language, good and bad, so that generated input
/// reaches deep into the parser.
const TOKENS: &str = r#"and or not NOT exists true false ( ) in [ ] , = != ! contains starts_with ends_with
        MSH-9.1 PID-7 OBX[3]-5 PID-3[2].4.2 "A01" "" "a\"b" " \\ PID- pid-3 é"#;

fn token() -> impl Strategy<Value = &'static str> {
    prop::sample::select(TOKENS.split_whitespace().collect::<Vec<_>>())
}

fn arb_path() -> impl Strategy<Value = Path> {
    prop::sample::select(vec!["MSH-9.1", "MSH-4", "PID-7", "PID-8", "OBX[3]-5", "PID-3[2].4.2", "NOT-1", "ZZZ-1"])
        .prop_map(|p| p.parse().unwrap())
}

fn arb_expr() -> impl Strategy<Value = Expr> {
    let value = "[A-Za-z0-9 \\\"^&|é]{0,6}";
    let op = prop_oneof![
        value.prop_map(Op::Eq),
        value.prop_map(Op::Ne),
        prop::collection::vec(value, 1..4).prop_map(Op::In),
        value.prop_map(Op::Contains),
        value.prop_map(Op::StartsWith),
        value.prop_map(Op::EndsWith),
    ];
    let leaf = prop_oneof![
        any::<bool>().prop_map(Expr::Const),
        arb_path().prop_map(Expr::Exists),
        (arb_path(), op).prop_map(|(path, op)| Expr::Compare { path, op }),
    ];
    leaf.prop_recursive(6, 48, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            prop::collection::vec(inner, 2..4).prop_map(Expr::Or),
        ]
    })
}

proptest! {
    #[test]
    fn parsing_arbitrary_text_never_panics(text in "\\PC{0,80}") {
        let _ = text.parse::<Condition>();
    }

    #[test]
    fn display_of_any_condition_parses_back_to_it(expr in arb_expr()) {
        let c = Condition { expr };
        let text = c.to_string();
        let parsed: Condition = text.parse().map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(parsed, c, "{}", text);
    }

    #[test]
    fn token_soup_parses_or_fails_cleanly_and_round_trips(tokens in prop::collection::vec(token(), 0..30)) {
        let text = tokens.join(" ");
        let msg = Message::parse(ADT).unwrap();
        match text.parse::<Condition>() {
            Ok(c) => {
                let canonical = c.to_string();
                let again: Condition = canonical.parse().unwrap();
                prop_assert_eq!(&again, &c);
                prop_assert_eq!(again.to_string(), canonical);
                prop_assert_eq!(again.matches(&msg), c.matches(&msg));
            }
            Err(e) => prop_assert!(e.position <= text.chars().count()),
        }
    }
}
