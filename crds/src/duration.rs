//! `Duration`: the one duration syntax of our API (`30s`, `5m`, `1h30m`, `500ms`).
//!
//! The grammar is a subset of Go's `time.ParseDuration` — whole numbers of at most five digits
//! followed by `h`, `m`, `s` or `ms`, each unit at most once and largest first — so the same
//! string means the same span to the API server's CEL `duration()` and to us: the longest,
//! `99999h99999m99999s99999ms`, is far inside both Go's range and ours, and prints back in a
//! form that parses. The arithmetic is jiff's.

use std::{fmt, str::FromStr};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The regular expression the CRD schema enforces on every duration field: the units
/// largest first, at most [`MAX_DIGITS`] digits per number. It matches the empty string too:
/// the schema's `minLength` keeps that out.
pub const DURATION_PATTERN: &str = "^([0-9]{1,5}h)?([0-9]{1,5}m)?([0-9]{1,5}s)?([0-9]{1,5}ms)?$";

/// The most digits a number in a duration may have: enough for any span anyone means
/// (`100000s` is `27h46m40s`), no sum of such numbers overflows, and the canonical form of
/// the longest sum (`101692h…`) still has few enough digits to parse.
pub const MAX_DIGITS: usize = 5;

/// Why a string is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The input was empty.
    #[error("a duration must not be empty (write e.g. 30s, 5m or 1h30m)")]
    Empty,
    /// Something other than `<digits><unit>` groups.
    #[error("{input:?} is not a duration: {reason} (write e.g. 30s, 5m or 1h30m)")]
    Syntax {
        /// The rejected input.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Well-formed but not a span jiff accepts: too large, or units out of order.
    #[error("{input:?} is not a valid duration: {reason}")]
    Invalid {
        /// The rejected input.
        input: String,
        /// The underlying arithmetic failure.
        reason: String,
    },
}

/// A non-negative span of time written as `30s`, `5m`, `1h30m` or `250ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(std::time::Duration);

impl Duration {
    /// A duration of whole seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }

    /// A duration of whole milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Self(std::time::Duration::from_millis(millis))
    }

    /// The span as a standard library duration.
    pub const fn as_std(self) -> std::time::Duration {
        self.0
    }

    /// Whether the span is zero.
    pub const fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

/// The units in the order they must appear.
const UNITS: [&str; 4] = ["h", "m", "s", "ms"];

/// Checks the grammar jiff is more lenient about (it also takes `1 hour`, `1.5h`, `-5s`).
fn check_grammar(input: &str) -> Result<(), DurationError> {
    let syntax = |reason| DurationError::Syntax { input: input.to_owned(), reason };
    let bytes = input.as_bytes();
    let (mut i, mut next_unit) = (0, 0);
    while i < bytes.len() {
        let digits_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == digits_start {
            return Err(syntax("expected a number before each unit"));
        }
        if i - digits_start > MAX_DIGITS {
            return Err(syntax("at most 5 digits per number (write 100000s as 27h46m40s)"));
        }
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &input[unit_start..i];
        match UNITS.iter().position(|u| *u == unit) {
            Some(position) if position >= next_unit => next_unit = position + 1,
            Some(_) => return Err(syntax("each unit at most once, largest first (1h30m, not 30m1h)")),
            None if unit.is_empty() => return Err(syntax("expected a unit (h, m, s or ms) after each number")),
            None => return Err(syntax("the units are h, m, s and ms")),
        }
    }
    Ok(())
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if input.is_empty() {
            return Err(DurationError::Empty);
        }
        check_grammar(input)?;
        let invalid = |reason: String| DurationError::Invalid { input: input.to_owned(), reason };
        let span: jiff::SignedDuration = input.parse().map_err(|e: jiff::Error| invalid(e.to_string()))?;
        std::time::Duration::try_from(span).map(Self).map_err(|e| invalid(e.to_string()))
    }
}

impl fmt::Display for Duration {
    /// Canonical form: largest units first, zero parts left out (`1h30m`, `1m0s` is `1m`).
    /// No part has more than [`MAX_DIGITS`] digits — beyond `99999h` the rest goes to the
    /// smaller units — so every duration the parser accepted prints as one it accepts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0.as_millis();
        if rest == 0 {
            return f.write_str("0s");
        }
        let most = 10u128.pow(MAX_DIGITS as u32) - 1;
        for (unit_ms, unit) in [(3_600_000, "h"), (60_000, "m"), (1000, "s"), (1, "ms")] {
            // The last unit takes all that is left: nothing is dropped.
            let value = if unit_ms == 1 { rest } else { (rest / unit_ms).min(most) };
            rest -= value * unit_ms;
            if value > 0 {
                write!(f, "{value}{unit}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "minLength": 2,
            "maxLength": 32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Duration, DurationError> {
        s.parse()
    }

    #[test]
    fn parses_go_style_durations() {
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("1m30s500ms").unwrap(), Duration::from_millis(90_500));
        assert_eq!(parse("0s").unwrap(), Duration::default());
        assert_eq!(parse("90m").unwrap(), Duration::from_secs(5400));
    }

    #[test]
    fn refuses_what_the_schema_refuses() {
        for bad in ["", "30", "s", "1.5h", "-5s", "1 hour", "1h 30m", "5M", "1d", "10mo", "P1D", "1us", "h1"] {
            assert!(parse(bad).is_err(), "{bad:?} must be refused");
        }
        assert_eq!(parse(""), Err(DurationError::Empty));
        let err = parse("1d").unwrap_err().to_string();
        assert!(err.contains("units are h, m, s and ms"), "{err}");
    }

    #[test]
    fn long_numbers_are_refused_before_any_arithmetic() {
        for input in ["99999999999999999999h", "9223372036854775808s", "2562047788015216h", "100000s"] {
            let err = parse(input).unwrap_err();
            assert!(err.to_string().contains("at most 5 digits"), "{input}: {err:?}");
        }
        // The longest duration that can be written is exact, far inside Go's range (what
        // CEL's duration() reads: 292 years of nanoseconds), and prints as a duration.
        let longest = parse("99999h99999m99999s99999ms").unwrap();
        assert_eq!(longest.as_std().as_millis(), 99_999 * (3_600_000 + 60_000 + 1_000 + 1));
        assert!(longest.as_std().as_nanos() < i64::MAX as u128 / 20);
        assert_eq!(longest.to_string().parse::<Duration>(), Ok(longest));
    }

    #[test]
    fn units_out_of_order_or_repeated_are_refused() {
        for input in ["30s5m", "1h1h", "5ms1s"] {
            let err = parse(input).unwrap_err();
            assert!(err.to_string().contains("largest first"), "{input}: {err}");
        }
    }

    #[test]
    fn displays_canonically_and_round_trips() {
        for (input, shown) in [
            ("90m", "1h30m"),
            ("60s", "1m"),
            ("1500ms", "1s500ms"),
            ("0s", "0s"),
            ("2h", "2h"),
            // Beyond 99999h the rest stays in minutes: what prints must parse.
            ("99999h99999m", "99999h99999m"),
            ("99999h120m", "99999h120m"),
            ("99998h120m", "99999h60m"),
        ] {
            let d = parse(input).unwrap();
            assert_eq!(d.to_string(), shown);
            assert_eq!(parse(shown).unwrap(), d);
        }
    }

    #[test]
    fn pattern_agrees_with_the_parser() {
        let re = regex::Regex::new(DURATION_PATTERN).unwrap();
        for s in ["30s", "5m", "1h30m", "250ms", "0s", "1m30s500ms"] {
            assert!(re.is_match(s) && parse(s).is_ok(), "{s}");
        }
        for s in ["30", "1.5h", "-5s", "1 hour", "1d", "5M", "1us", "30s5m", "1h1h", "5ms1s", "100000s"] {
            assert!(!re.is_match(s) && parse(s).is_err(), "{s}");
        }
        // The empty string is kept out by the schema's minLength, not the pattern.
        assert!(parse("").is_err());
    }

    /// Every generated case: the schema (pattern and lengths, as the test API server applies
    /// them) admits it exactly when the parser accepts it.
    #[test]
    fn schema_admits_exactly_what_the_parser_accepts() {
        let schema = crate::schema_check::Admits::new::<Duration>();
        let numbers =
            ["0", "1", "5", "30", "007", "99999", "100000", "000001", "18446744073709551616", "-1", "1.5", ""];
        let units = ["h", "m", "s", "ms", "us", "d", "M", "", " "];
        let parts: Vec<String> = numbers.iter().flat_map(|n| units.iter().map(move |u| format!("{n}{u}"))).collect();
        let mut cases: Vec<String> = parts.clone();
        for a in &parts {
            for b in &parts {
                cases.push(format!("{a}{b}"));
            }
        }
        // Every sequence of up to four units, in and out of order, with small and long numbers.
        for len in 1..=4u32 {
            for mut code in 0..4usize.pow(len) {
                let mut case = String::new();
                for i in 0..len {
                    case.push_str(if i % 2 == 0 { "1" } else { "99999" });
                    case.push_str(["h", "m", "s", "ms"][code % 4]);
                    code /= 4;
                }
                cases.push(case);
            }
        }
        cases.extend(["99999h99999m99999s99999ms", "P1D", " 5s", "5s ", "+5s", "5 s"].map(String::from));
        for case in &cases {
            let schema_says = schema.check(case);
            let parser_says = parse(case);
            assert_eq!(
                schema_says.is_ok(),
                parser_says.is_ok(),
                "{case:?}: the schema says {schema_says:?}, the parser {parser_says:?}"
            );
            // What the operator writes back (status, Events) is admitted too.
            if let Ok(d) = parser_says {
                assert!(schema.check(&d.to_string()).is_ok(), "{case:?} prints as {d}, which the schema refuses");
            }
        }
    }

    #[test]
    fn serde_uses_the_text_form() {
        let d: Duration = serde_json::from_str("\"1h30m\"").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1h30m\"");
        assert!(serde_json::from_str::<Duration>("\"1 hour\"").is_err());
    }
}
