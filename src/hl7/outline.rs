//! A message as an outline: one line per non-empty element, with its path
//! (`PID-5.1`, `OBX[2]-5`) and its decoded value. What `switchboard parse`
//! prints and what the web UI's message detail shows, from one walk.

use std::collections::HashMap;

use super::{Message, Segment};

/// One element of the outline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutlineLine {
    /// 0 for a segment, 1 for a field, 2 and more for repetitions,
    /// components and subcomponents.
    pub depth: usize,
    /// The element's path, as rules and transforms write it.
    pub path: String,
    /// The decoded value (escape sequences resolved); empty for a segment.
    pub value: String,
}

/// The segments with their path prefixes: `PID`, or `OBX[2]` for the second
/// OBX.
pub fn segment_paths<'m>(msg: &'m Message<'_>) -> impl Iterator<Item = (String, Segment<'m>)> + 'm {
    let mut seen = HashMap::<&str, usize>::new();
    msg.segments().map(move |seg| {
        let n = seen.entry(seg.id()).or_default();
        *n += 1;
        let prefix = if *n == 1 { seg.id().to_owned() } else { format!("{}[{n}]", seg.id()) };
        (prefix, seg)
    })
}

/// The outline of `msg`: each segment, then each non-empty field, its
/// repetitions when there are several, its components when there are
/// several, and their subcomponents when there are several.
pub fn outline(msg: &Message<'_>) -> Vec<OutlineLine> {
    let mut out = Vec::new();
    let mut push = |depth, path: String, value: String| out.push(OutlineLine { depth, path, value });
    for (prefix, seg) in segment_paths(msg) {
        push(0, prefix.clone(), String::new());
        for (n, field) in seg.fields() {
            if field.raw().is_empty() {
                continue;
            }
            let base = format!("{prefix}-{n}");
            let reps = field.repetitions().len();
            push(1, base.clone(), field.text().into_owned());
            // MSH-1 and MSH-2 are the delimiters themselves.
            if seg.id() == "MSH" && n <= 2 {
                continue;
            }
            for (r, rep) in field.repetitions().enumerate() {
                let rep_path = if reps > 1 { format!("{base}[{}]", r + 1) } else { base.clone() };
                if reps > 1 && !rep.raw().is_empty() {
                    push(2, rep_path.clone(), rep.text().into_owned());
                }
                let comps = rep.components().len();
                let depth = if reps > 1 { 3 } else { 2 };
                for (c, comp) in rep.components().enumerate() {
                    if comps == 1 && comp.subcomponents().len() == 1 || comp.raw().is_empty() {
                        continue;
                    }
                    let comp_path = format!("{rep_path}.{}", c + 1);
                    push(depth, comp_path.clone(), comp.text().into_owned());
                    if comp.subcomponents().len() > 1 {
                        for (s, sub) in comp.subcomponents().enumerate() {
                            if !sub.is_empty() {
                                push(depth + 1, format!("{comp_path}.{}", s + 1), msg.decode(sub).into_owned());
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outline_names_every_element_by_its_path() {
        let raw = b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|X1|P|2.5\rPID|1||123^^^FAC~456^^^OTHER||DOE^JANE\\T\\CO\rOBX|1\rOBX|2|TX|||a&b\r";
        let msg = Message::parse(raw).unwrap();
        let lines = outline(&msg);
        let find = |path: &str| lines.iter().find(|l| l.path == path).map(|l| (l.depth, l.value.as_str()));
        assert_eq!(find("MSH"), Some((0, "")));
        assert_eq!(find("MSH-9.2"), Some((2, "A01")));
        assert_eq!(find("PID-3[2]"), Some((2, "456^^^OTHER")));
        assert_eq!(find("PID-3[2].4"), Some((3, "OTHER")));
        assert_eq!(find("PID-5.2"), Some((2, "JANE&CO")), "escapes decoded");
        assert_eq!(find("OBX[2]-5.1.2"), Some((3, "b")));
        assert!(find("MSH-2.1").is_none(), "the delimiters are not taken apart");
    }
}
