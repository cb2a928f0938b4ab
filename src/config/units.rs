//! Durations and sizes as people write them in a configuration file.

use std::time::Duration;

const DURATION_HELP: &str = "write a number of seconds or a duration such as 500ms, 10s, 5m, 1h, 1d or 1m30s";
const SIZE_HELP: &str = "write a number of bytes or a size such as 512KiB, 16MiB or 1MB";

/// Reads a duration: `500ms`, `10s`, `5m`, `1h`, `1d`, combinations such as
/// `1m30s` or `1h 30m` (largest unit first), or a bare integer meaning
/// seconds, because YAML gives `timeout: 10` as a number.
///
/// The error says what is wrong and what would be valid, ready to show.
///
/// ```
/// use std::time::Duration;
/// use switchboard::config::parse_duration;
///
/// assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
/// assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
/// assert!(parse_duration("10 seconds").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(format!("the duration is empty; {DURATION_HELP}"));
    }
    if trimmed.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = trimmed.parse().map_err(|_| format!("{trimmed:?} is too large; {DURATION_HELP}"))?;
        return Ok(Duration::from_secs(secs));
    }
    if trimmed.starts_with('-') {
        return Err(format!("{trimmed:?} is negative; {DURATION_HELP}"));
    }
    let mut total = Duration::ZERO;
    let mut rest = trimmed;
    // Index of the last unit read, so that `5s1m` and `1m1m` are refused.
    let mut last_unit: Option<usize> = None;
    const UNITS: [(&str, u64); 5] = [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)];
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(match rest.chars().next() {
                Some('.') | Some(',') => {
                    format!("{trimmed:?} has a fraction; use a smaller unit, e.g. 1500ms for 1.5s")
                }
                _ => format!("{trimmed:?} is not a duration; {DURATION_HELP}"),
            });
        }
        let (number, after) = rest.split_at(digits);
        let after = after.trim_start();
        let unit_len = after.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(match after.chars().next() {
                Some('.') | Some(',') => {
                    format!("{trimmed:?} has a fraction; use a smaller unit, e.g. 1500ms for 1.5s")
                }
                _ => format!("{trimmed:?} has a number without a unit; {DURATION_HELP}"),
            });
        }
        let Some(index) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(format!("unknown unit {unit:?} in {trimmed:?}; use ms, s, m, h or d, e.g. 10s or 1m30s"));
        };
        if last_unit.is_some_and(|last| last >= index) {
            return Err(format!(
                "{trimmed:?} repeats a unit or puts a larger unit after a smaller one; write e.g. 1h30m"
            ));
        }
        last_unit = Some(index);
        let value: u64 = number.parse().map_err(|_| format!("{trimmed:?} is too large; {DURATION_HELP}"))?;
        let millis =
            value.checked_mul(UNITS[index].1).ok_or_else(|| format!("{trimmed:?} is too large; {DURATION_HELP}"))?;
        total = total
            .checked_add(Duration::from_millis(millis))
            .ok_or_else(|| format!("{trimmed:?} is too large; {DURATION_HELP}"))?;
        rest = after.trim_start();
    }
    Ok(total)
}

/// Reads a size in bytes: a bare integer, or a number with a unit — `B`,
/// `KiB`, `MiB`, `GiB` (powers of 1024) or `KB`, `MB`, `GB` (powers of
/// 1000), case-insensitive, with or without a space: `16MiB`, `512 KiB`,
/// `1MB`.
///
/// ```
/// use switchboard::config::parse_size;
///
/// assert_eq!(parse_size("16MiB"), Ok(16 * 1024 * 1024));
/// assert_eq!(parse_size("1MB"), Ok(1_000_000));
/// assert_eq!(parse_size("4096"), Ok(4096));
/// ```
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits);
    if number.is_empty() {
        return Err(format!("{trimmed:?} is not a size; {SIZE_HELP}"));
    }
    let unit = unit.trim_start();
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ if unit.starts_with('.') || unit.starts_with(',') => {
            return Err(format!("{trimmed:?} has a fraction; use a smaller unit, e.g. 1536KiB for 1.5MiB"));
        }
        _ => return Err(format!("unknown unit {unit:?} in {trimmed:?}; use B, KiB, MiB, GiB, KB, MB or GB")),
    };
    let value: u64 = number.parse().map_err(|_| format!("{trimmed:?} is too large; {SIZE_HELP}"))?;
    value.checked_mul(factor).ok_or_else(|| format!("{trimmed:?} is too large; {SIZE_HELP}"))
}

/// Writes a duration the way [`parse_duration`] reads it, e.g. `1m30s`, for
/// showing settings back to people.
///
/// ```
/// use std::time::Duration;
/// use switchboard::config::format_duration;
///
/// assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
/// ```
pub fn format_duration(d: Duration) -> String {
    let mut millis = d.as_millis();
    if millis == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400_000u128), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)] {
        if millis >= size {
            out.push_str(&format!("{}{unit}", millis / size));
            millis %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("500ms", Duration::from_millis(500)),
            ("10s", Duration::from_secs(10)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("1d", Duration::from_secs(86_400)),
            ("1m30s", Duration::from_secs(90)),
            ("1h 30m", Duration::from_secs(5400)),
            ("2s500ms", Duration::from_millis(2500)),
            ("10 s", Duration::from_secs(10)),
            ("0", Duration::ZERO),
            (" 7 ", Duration::from_secs(7)),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for (text, phrase) in [
            ("", "empty"),
            ("10x", "unknown unit \"x\""),
            ("1.5s", "fraction"),
            ("s", "not a duration"),
            ("5s1m", "larger unit after a smaller"),
            ("1m1m", "repeats"),
            ("-1", "negative"),
            ("10 20", "without a unit"),
            ("99999999999999999999d", "too large"),
        ] {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains(phrase), "{text}: {err}");
        }
    }

    #[test]
    fn sizes() {
        for (text, want) in [
            ("16MiB", 16 << 20),
            ("512KiB", 512 << 10),
            ("1MB", 1_000_000),
            ("100", 100),
            ("2 gib", 2 << 30),
            ("1kb", 1000),
        ] {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
        for text in ["", "MiB", "1.5MiB", "10 parsecs", "99999999999999GiB"] {
            assert!(parse_size(text).is_err(), "{text}");
        }
    }

    #[test]
    fn formatting_round_trips() {
        for ms in [0u64, 1, 999, 1000, 90_000, 3_723_004, 90_061_000] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{ms}");
        }
    }
}
