//! Sizes and CPU quantities as a spec writes them (`512Mi`, `1.5G`, `500m`, `0.5`): their
//! exact values, and the patterns that bound them, so that the OpenAPI document a gateway
//! serves calls valid exactly the sizes its providers take.
//!
//! A size is worked out in integers, digit by digit: `ceil(number x unit)` bytes, exactly.
//! With floating point, a size a hair above a provider's largest (`68719476736.000000001`)
//! rounded to it and was taken, while a pattern, which compares digits, refused it: the
//! served document and the server would disagree at the bound.

use super::patterns;

/// The units a size may carry, and how many bytes each is.
const UNITS: [(&str, u64); 10] = [
    ("", 1),
    ("k", 1_000),
    ("K", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
];

/// The largest size, in bytes: `i64::MAX` (8 EiB, which no runtime has, and the most that a
/// TOML limit or a database integer holds); larger sizes come back as this.
pub const MAX_BYTES: u64 = i64::MAX as u64;

/// Parses a Kubernetes-style quantity (`512Mi`, `2Gi`, `1.5G`, `1000`) into bytes, rounded
/// up, never zero; sizes past [`MAX_BYTES`] come back as [`MAX_BYTES`].
pub fn parse_quantity(text: &str) -> Option<u64> {
    if !patterns::QUANTITY.is_match(text) {
        return None;
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let factor = UNITS.iter().find(|(u, _)| *u == unit)?.1 as u128;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let whole = whole.trim_start_matches('0');
    // More digits than any size up to MAX_BYTES has, whatever its unit.
    if whole.len() > 20 {
        return Some(MAX_BYTES);
    }
    let scale = 10u128.pow(fraction.len() as u32);
    let digits = |s: &str| s.parse::<u128>().unwrap_or(0);
    let bytes = (digits(whole) * scale + digits(fraction))
        .checked_mul(factor)
        .map(|n| n.div_ceil(scale))
        .unwrap_or(u128::MAX);
    Some(bytes.clamp(1, MAX_BYTES as u128) as u64)
}

/// Parses a Kubernetes CPU quantity (`500m`, `0.5`, `2`) into vCPUs.
pub fn parse_cpu(text: &str) -> Option<f64> {
    if !patterns::CPU.is_match(text) {
        return None;
    }
    match text.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().ok().map(|m| m / 1000.0),
        None => text.parse::<f64>().ok(),
    }
}

/// A pattern for the sizes [`parse_quantity`] (given a string [`patterns::QUANTITY`]
/// matches) makes no more than `max` bytes; `None` when every size is (`max` of
/// [`MAX_BYTES`] or more).
pub fn sizes_at_most(max: u64) -> Option<String> {
    if max >= MAX_BYTES {
        return None;
    }
    let per_unit: Vec<String> = UNITS
        .iter()
        .map(|(unit, factor)| format!("{}{unit}", at_most(&quotient(max, *factor))))
        .collect();
    Some(format!("^(?:{})$", per_unit.join("|")))
}

/// A pattern for the CPU quantities (given a string [`patterns::CPU`] matches) of at most
/// `max` vCPUs.
pub fn cpus_at_most(max: f64) -> String {
    let millis = (max * 1000.0).floor().max(0.0) as u64;
    format!(
        "^(?:{}m|{})$",
        at_most(&Decimal::whole(millis)),
        at_most(&Decimal::parse(&format!("{max}")))
    )
}

/// A decimal number with its digits: `whole` with no leading zero ("" for 0), `fraction`
/// with no trailing zero.
#[derive(Debug, PartialEq)]
struct Decimal {
    whole: String,
    fraction: String,
}

impl Decimal {
    fn whole(n: u64) -> Decimal {
        Decimal::parse(&n.to_string())
    }

    fn parse(text: &str) -> Decimal {
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        Decimal {
            whole: whole.trim_start_matches('0').to_string(),
            fraction: fraction.trim_end_matches('0').to_string(),
        }
    }
}

/// `n / d` exactly, for a `d` whose only prime factors are 2 and 5 (so that the fraction
/// ends).
fn quotient(n: u64, d: u64) -> Decimal {
    let (whole, mut rest) = (n / d, n % d);
    let mut fraction = String::new();
    while rest != 0 {
        rest *= 10;
        fraction.push(char::from(b'0' + (rest / d) as u8));
        rest %= d;
    }
    Decimal {
        whole: if whole == 0 { String::new() } else { whole.to_string() },
        fraction,
    }
}

/// A pattern for the decimal numbers (leading zeros, a fraction of any length) of at most
/// `bound`: a whole part below the bound's with any fraction, or the bound's whole part
/// with a fraction no greater than its own.
fn at_most(bound: &Decimal) -> String {
    let mut alternatives = vec![];
    if !bound.whole.is_empty() {
        alternatives.push(format!("(?:{})(?:\\.[0-9]*)?", below(&bound.whole)));
    }
    alternatives.push(format!(
        "{}(?:\\.(?:{}))?",
        bound.whole,
        fraction_at_most(&bound.fraction)
    ));
    format!("0*(?:{})", alternatives.join("|"))
}

/// The whole numbers below `n` (digits, no leading zero), written with no leading zero
/// (0 as nothing).
fn below(n: &str) -> String {
    let digits: Vec<u8> = n.bytes().map(|b| b - b'0').collect();
    // Shorter numbers: nothing (0), or 1 to len-1 digits not starting with 0.
    let mut alternatives = vec![match digits.len() {
        1 => String::new(),
        len => format!("(?:[1-9][0-9]{{0,{}}})?", len - 2),
    }];
    // As long: the same digits up to one that is smaller, then any.
    for (i, &d) in digits.iter().enumerate() {
        let low = u8::from(i == 0);
        if d > low {
            alternatives.push(format!(
                "{}[{low}-{}][0-9]{{{}}}",
                &n[..i],
                d - 1,
                digits.len() - i - 1
            ));
        }
    }
    alternatives.join("|")
}

/// Fraction digits (after the point) of at most `bound`'s (no trailing zero).
fn fraction_at_most(bound: &str) -> String {
    let mut alternatives = vec![];
    for (i, d) in bound.bytes().map(|b| b - b'0').enumerate() {
        // Ends here: smaller (or equal, with nothing after).
        alternatives.push(bound[..i].to_string());
        if d > 0 {
            alternatives.push(format!("{}[0-{}][0-9]*", &bound[..i], d - 1));
        }
    }
    alternatives.push(format!("{bound}0*"));
    alternatives.join("|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_exact() {
        assert_eq!(parse_quantity("512Mi"), Some(512 << 20));
        assert_eq!(parse_quantity("2Gi"), Some(2 << 30));
        assert_eq!(parse_quantity("1.5G"), Some(1_500_000_000));
        assert_eq!(parse_quantity("1000"), Some(1000));
        assert_eq!(parse_quantity("0.5"), Some(1), "rounded up, never zero");
        assert_eq!(parse_quantity("68719476736.000000001"), Some(68719476737));
        assert_eq!(parse_quantity("0.000000001Ti"), Some(1100));
        assert_eq!(parse_quantity("99999999999999999999999999999Ti"), Some(MAX_BYTES));
        assert_eq!(parse_quantity("lots"), None);
        assert_eq!(parse_quantity("2Qi"), None);
        assert_eq!(parse_quantity(""), None);
    }

    #[test]
    fn quotients_are_exact_decimals() {
        assert_eq!(quotient(3, 2), Decimal::parse("1.5"));
        assert_eq!(quotient(1, 1 << 10), Decimal::parse("0.0009765625"));
        assert_eq!(quotient(64 << 30, 1_000_000_000), Decimal::parse("68.719476736"));
    }

    /// The bounding patterns against the parsers, over sizes around the bounds, in every
    /// unit and form: a size matches exactly when it parses to no more than the bound.
    #[test]
    fn the_bounds_agree_with_the_parsers() {
        for max in [1u64, 999, 1000, 1024, 1 << 30, (64 << 30) + 1, 68_719_476_736, 5_000_000_000_001] {
            let bound = regex::Regex::new(&sizes_at_most(max).unwrap()).unwrap();
            let mut tries = vec![];
            for (unit, factor) in UNITS {
                let q = quotient(max, factor);
                let at = format!("{}.{}", if q.whole.is_empty() { "0" } else { &q.whole }, q.fraction);
                let whole: u64 = q.whole.parse().unwrap_or(0);
                for number in [
                    at.trim_end_matches('.').to_string(),
                    format!("{at}0"),
                    format!("{at}1"),
                    format!("00{at}"),
                    whole.to_string(),
                    (whole + 1).to_string(),
                    whole.saturating_sub(1).to_string(),
                    format!("{}.999", whole.saturating_sub(1)),
                ] {
                    tries.push(format!("{number}{unit}"));
                }
            }
            for text in tries {
                let Some(bytes) = parse_quantity(&text) else {
                    continue;
                };
                assert_eq!(bound.is_match(&text), bytes <= max, "{text} ({bytes} bytes) against {max}");
            }
        }
        assert_eq!(sizes_at_most(MAX_BYTES), None);
    }

    #[test]
    fn cpu_bounds_agree_with_the_parser() {
        for max in [0.25, 1.0, 2.5, 4.0, 16.0, 1024.0] {
            let bound = regex::Regex::new(&cpus_at_most(max)).unwrap();
            for text in [
                "1", "2", "2.5", "2.50", "2.500001", "3", "4", "4.000001", "16", "16.1", "17", "191",
                "999", "0.1", "0.25", "0.250001", "0.3", "250m", "251m", "1000m", "2500m", "4000m",
                "4001m", "16000m", "16001m", "999999m", "1024", "1024.5",
            ] {
                let Some(cpu) = parse_cpu(text) else { continue };
                assert_eq!(bound.is_match(text), cpu <= max, "{text} against {max}");
            }
        }
    }
}
