//! `Schedule`: when a scheduled capture or invalidation fires.
//!
//! Accepted forms, all in UTC: a standard 5-field cron expression (`*/15 * * * *`), the
//! macros `@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`/`@midnight`, `@hourly`, and
//! `@every <duration>`. Cron arithmetic is croner's; `@every` fires on multiples of its
//! interval since the Unix epoch, so the fire times are a pure function of the schedule
//! and every replica of the operator agrees on them without shared state.

use std::{fmt, str::FromStr, sync::LazyLock};

use jiff::{Timestamp, tz::TimeZone};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::duration::{DURATION_PATTERN, Duration, DurationError};

/// Why a string is not a schedule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// A cron expression with other than five fields.
    #[error("{input:?} has {fields} fields; a cron schedule has five (minute hour day-of-month month day-of-week)")]
    FieldCount {
        /// The rejected input.
        input: String,
        /// How many fields it had.
        fields: usize,
    },
    /// A field out of range or malformed.
    #[error("{input:?} is not a valid cron schedule: {reason}")]
    Cron {
        /// The rejected input.
        input: String,
        /// croner's explanation.
        reason: String,
    },
    /// An `@every` with a bad or zero interval.
    #[error("{input:?}: {reason}")]
    Every {
        /// The rejected input.
        input: String,
        /// What is wrong with the interval.
        reason: String,
    },
    /// An `@` word we do not know.
    #[error("{input:?} is not a known macro (use @yearly, @monthly, @weekly, @daily, @hourly or @every <duration>)")]
    UnknownMacro {
        /// The rejected input.
        input: String,
    },
    /// Whitespace other than the spaces between fields.
    #[error("{input:?} has a tab, a line break or a space at either end; separate the fields with spaces only")]
    Whitespace {
        /// The rejected input.
        input: String,
    },
    /// Longer than the schema allows.
    #[error("a schedule is at most {MAX_LENGTH} characters; this one has {length}")]
    TooLong {
        /// How long the input was.
        length: usize,
    },
}

/// The longest schedule the schema admits.
pub const MAX_LENGTH: usize = 128;

/// The macros and what cron expression each stands for.
const MACROS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

/// The shortest `@every` interval; anything faster would be a busy loop, not a schedule.
pub const MIN_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
enum Kind {
    Cron(Box<croner::Cron>),
    Every(std::time::Duration),
}

/// A parsed schedule; `Display` gives back the text it was parsed from.
#[derive(Debug, Clone)]
pub struct Schedule {
    text: String,
    kind: Kind,
}

/// Fire times a schedule passed between two instants, as a CronJob-style controller needs
/// them: how many (counted up to a bound) and the most recent one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missed {
    /// The most recent fire time in the window, if any.
    pub latest: Option<Timestamp>,
    /// How many fire times were in the window, counted up to the bound given.
    pub count: usize,
    /// Whether counting stopped at the bound (there were at least `count`).
    pub truncated: bool,
}

static CRON_PARSER: LazyLock<croner::parser::CronParser> = LazyLock::new(|| {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .year(croner::parser::Year::Disallowed)
        .build()
});

impl Schedule {
    /// Why this is no schedule, when it has no fire time after `now` (a cron expression
    /// such as `0 0 30 2 *`, February 30th): the schema cannot see it, status says it.
    pub fn never_fires(&self, now: Timestamp) -> Option<String> {
        self.next_after(now).is_none().then(|| format!("schedule {:?} never fires", self.to_string()))
    }

    /// The first fire time strictly after `t`, or `None` if the schedule never fires again.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        match &self.kind {
            Kind::Cron(cron) => {
                let zoned = t.to_zoned(TimeZone::UTC);
                cron.find_next_occurrence(&zoned, false).ok().map(|z| z.timestamp())
            }
            Kind::Every(interval) => {
                let step = i128::try_from(interval.as_nanos()).ok()?;
                let now = t.as_nanosecond();
                let next = (now.div_euclid(step) + 1).checked_mul(step)?;
                Timestamp::from_nanosecond(next).ok()
            }
        }
    }

    /// The fire times in `(after, until]`, counted up to `bound`: the scheduler fires the
    /// latest one (if any) and never replays the rest in a burst.
    pub fn missed_between(&self, after: Timestamp, until: Timestamp, bound: usize) -> Missed {
        let mut missed = Missed { latest: None, count: 0, truncated: false };
        if until <= after {
            return missed;
        }
        if let Kind::Every(interval) = &self.kind {
            // Closed form: no need to walk millions of short intervals.
            let step = interval.as_nanos() as i128;
            let first = after.as_nanosecond().div_euclid(step) + 1;
            let last = until.as_nanosecond().div_euclid(step);
            if last >= first {
                let total = usize::try_from(last - first + 1).unwrap_or(usize::MAX);
                missed.count = total.min(bound);
                missed.truncated = total > bound;
                missed.latest = Timestamp::from_nanosecond(last * step).ok();
            }
            return missed;
        }
        let mut cursor = after;
        while let Some(next) = self.next_after(cursor).filter(|n| *n <= until) {
            if missed.count == bound {
                missed.truncated = true;
                // Past the bound only the latest one matters: jump straight to it.
                missed.latest = self.latest_at_or_before(until).or(missed.latest);
                break;
            }
            missed.count += 1;
            missed.latest = Some(next);
            cursor = next;
        }
        missed
    }

    fn latest_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        match &self.kind {
            Kind::Cron(cron) => {
                let zoned = t.to_zoned(TimeZone::UTC);
                cron.find_previous_occurrence(&zoned, true).ok().map(|z| z.timestamp())
            }
            Kind::Every(interval) => {
                let step = interval.as_nanos() as i128;
                Timestamp::from_nanosecond(t.as_nanosecond().div_euclid(step) * step).ok()
            }
        }
    }

    /// The schedule's interval if it is an `@every` schedule.
    pub fn every(&self) -> Option<std::time::Duration> {
        match self.kind {
            Kind::Every(d) => Some(d),
            Kind::Cron(_) => None,
        }
    }
}

/// One field of a cron expression as the schema states it: its values (numbers of at most
/// `digits` digits in `min..=max`, or names), and how items are written.
struct CronField {
    name: &'static str,
    min: u16,
    max: u16,
    digits: usize,
    /// Names standing for `first`, `first + 1`, …
    names: &'static [&'static str],
    first: u16,
}

const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// The five fields, in order, with the bounds croner applies to them.
const CRON_FIELDS: [CronField; 5] = [
    CronField { name: "minute", min: 0, max: 59, digits: 2, names: &[], first: 0 },
    CronField { name: "hour", min: 0, max: 23, digits: 2, names: &[], first: 0 },
    CronField { name: "day-of-month", min: 1, max: 31, digits: 2, names: &[], first: 0 },
    CronField { name: "month", min: 1, max: 12, digits: 2, names: &MONTHS, first: 1 },
    // 0 and 7 are both Sunday; `sun` at the end of a range is 7, so `fri-sun` ascends.
    CronField { name: "day-of-week", min: 0, max: 7, digits: 1, names: &WEEKDAYS, first: 0 },
];

/// The largest step: no field spans more, and croner's arithmetic stays far from overflow.
pub const MAX_STEP: u16 = 99;

impl CronField {
    /// The value of a number or name; `range_end` reads `sun` as 7.
    fn value(&self, token: &str, range_end: bool) -> Result<u16, String> {
        if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
            let value: u16 = token.parse().unwrap_or(u16::MAX);
            if token.len() > self.digits || value < self.min || value > self.max {
                return Err(format!("the {} field takes {}-{}, not {token}", self.name, self.min, self.max));
            }
            return Ok(value);
        }
        match self.names.iter().position(|n| n.eq_ignore_ascii_case(token)) {
            Some(0) if range_end && self.max == 7 => Ok(7),
            Some(i) => Ok(self.first + u16::try_from(i).unwrap_or(u16::MAX)),
            None if self.names.is_empty() => Err(format!("the {} field takes numbers, not {token:?}", self.name)),
            None => Err(format!("{token:?} is not a number or a {} name", self.name)),
        }
    }

    /// Checks one comma-separated item: `*`, a value, a range `a-b` (ascending), or `*` or
    /// a range followed by `/step` (1 to [`MAX_STEP`]).
    fn check_item(&self, item: &str) -> Result<(), String> {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (item, None),
        };
        if let Some(step) = step {
            let ok =
                (1..=2).contains(&step.len()) && !step.starts_with('0') && step.bytes().all(|b| b.is_ascii_digit());
            if !ok {
                return Err(format!("the step in {item:?} must be a number from 1 to {MAX_STEP}"));
            }
            if range != "*" && !range.contains('-') {
                return Err(format!(
                    "a step follows * or a range, not a single value: write */{step} or {range}-{}/{step}, not {item}",
                    self.max
                ));
            }
        }
        if range == "*" {
            return Ok(());
        }
        match range.split_once('-') {
            Some((low, high)) => {
                let (from, to) = (self.value(low, false)?, self.value(high, true)?);
                if from > to {
                    return Err(format!(
                        "the {} range {range} runs backwards; write it from low to high ({high}-{low}, or two ranges such as {low}-{},{}-{high})",
                        self.name, self.max, self.min
                    ));
                }
                Ok(())
            }
            None => self.value(range, false).map(drop),
        }
    }

    /// Checks a whole field: items separated by commas.
    fn check(&self, field: &str) -> Result<(), String> {
        field.split(',').try_for_each(|item| {
            if item.is_empty() {
                return Err(format!("the {} field {field:?} has an empty item", self.name));
            }
            self.check_item(item)
        })
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    /// Accepts exactly what the CRD schema admits ([`SCHEDULE_PATTERN`], [`MAX_LENGTH`] and the
    /// rules of [`Schedule::json_schema`]), so an object the API server stored always reads.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let text = input.to_owned();
        let length = text.chars().count();
        if length > MAX_LENGTH {
            return Err(ScheduleError::TooLong { length });
        }
        if text.trim() != text || text.chars().any(|c| c.is_whitespace() && c != ' ') {
            return Err(ScheduleError::Whitespace { input: text });
        }
        let cron_text = if let Some(rest) = text.strip_prefix("@every") {
            let every_err = |reason: String| ScheduleError::Every { input: text.clone(), reason };
            let rest = rest
                .strip_prefix(' ')
                .ok_or_else(|| every_err("write @every followed by one space and a duration, e.g. @every 5m".into()))?;
            let interval: Duration = rest.parse().map_err(|e: DurationError| every_err(e.to_string()))?;
            if interval < MIN_EVERY {
                return Err(every_err(format!("the interval must be at least {MIN_EVERY}")));
            }
            return Ok(Self { text, kind: Kind::Every(interval.as_std()) });
        } else if text.starts_with('@') {
            MACROS
                .iter()
                .find(|(name, _)| *name == text)
                .map(|(_, expr)| (*expr).to_owned())
                .ok_or_else(|| ScheduleError::UnknownMacro { input: text.clone() })?
        } else {
            let fields: Vec<&str> = text.split(' ').filter(|f| !f.is_empty()).collect();
            if fields.len() != 5 {
                return Err(ScheduleError::FieldCount { input: text.clone(), fields: fields.len() });
            }
            for (field, spec) in fields.iter().zip(&CRON_FIELDS) {
                spec.check(field).map_err(|reason| ScheduleError::Cron { input: text.clone(), reason })?;
            }
            text.clone()
        };
        let cron = CRON_PARSER
            .parse(&cron_text)
            .map_err(|e| ScheduleError::Cron { input: text.clone(), reason: e.to_string() })?;
        Ok(Self { text, kind: Kind::Cron(Box::new(cron)) })
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Schedule {}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Schedule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One cron field as a regular expression: comma-separated items, each `*`, a value, a
/// range, or `*` or a range followed by a `/step` of 1 to 99 (croner refuses a step after a
/// single value). That a range ascends is [`ASCENDING_RANGES`]' job: a regular expression
/// cannot compare numbers.
fn cron_field(value: &str) -> String {
    let item = format!("((\\*|({value})-({value}))(/[1-9][0-9]?)?|({value}))");
    format!("{item}(,{item})*")
}

/// The regular expression the CRD schema enforces on schedules, so that out-of-range cron
/// fields are refused at `kubectl apply`, not discovered by the operator.
pub static SCHEDULE_PATTERN: LazyLock<String> = LazyLock::new(|| {
    let minute = cron_field("[0-5]?[0-9]");
    let hour = cron_field("[01]?[0-9]|2[0-3]");
    let dom = cron_field("0?[1-9]|[12][0-9]|3[01]");
    let month = cron_field("0?[1-9]|1[0-2]|(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)");
    let dow = cron_field("[0-7]|(?i:sun|mon|tue|wed|thu|fri|sat)");
    let every = DURATION_PATTERN.trim_start_matches('^').trim_end_matches('$');
    format!(
        "^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|@every {every}|{minute} +{hour} +{dom} +{month} +{dow})$"
    )
});

/// The CEL rule refusing a cron range that runs backwards (`30-10`), which croner refuses.
/// Names become numbers as croner reads them (weekdays first, `sun` ending a range is 7),
/// then every item of every field is one list: one comprehension, a small cost.
pub static ASCENDING_RANGES: LazyLock<String> = LazyLock::new(|| {
    let names = std::iter::once(("-sun".to_owned(), "-7".to_owned()))
        .chain(WEEKDAYS.iter().zip(0..).map(|(n, i)| ((*n).to_owned(), i.to_string())))
        .chain(MONTHS.iter().zip(1..).map(|(n, i)| ((*n).to_owned(), i.to_string())));
    let numeric =
        names.fold("self.lowerAscii()".to_owned(), |acc, (name, n)| format!("{acc}.replace('{name}', '{n}')"));
    let bounds = "i.split('/')[0].split('-')";
    format!(
        "self.startsWith('@') || {numeric}.replace(' ', ',').split(',').all(i, !i.matches('^[0-9]{{1,2}}-[0-9]{{1,2}}(/[0-9]+)?$') || int({bounds}[0]) <= int({bounds}[1]))"
    )
});

/// What the API server says when [`ASCENDING_RANGES`] refuses a schedule.
pub const ASCENDING_RANGES_MESSAGE: &str = "a cron range must run from low to high (10-30, not 30-10)";

impl JsonSchema for Schedule {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Schedule".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": MAX_LENGTH,
            "pattern": *SCHEDULE_PATTERN,
            "x-kubernetes-validations": [{
                // The size check refuses `@every ` with nothing after it (the pattern cannot).
                "rule": "!self.startsWith('@every ') || (self.size() > 7 && duration(self.substring(7)) >= duration('1s'))",
                "message": "an @every interval must be at least 1s"
            }, {
                "rule": *ASCENDING_RANGES,
                "message": ASCENDING_RANGES_MESSAGE
            }],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_schedule_without_fire_times_is_named() {
        let now = ts("2026-01-01T00:00:00Z");
        assert_eq!(sched("0 0 30 2 *").never_fires(now).as_deref(), Some(r#"schedule "0 0 30 2 *" never fires"#));
        assert_eq!(sched("@every 5m").never_fires(now), None);
        assert_eq!(sched("0 0 29 2 *").never_fires(now), None, "leap days come");
    }

    fn sched(s: &str) -> Schedule {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn cron_next_fire_times() {
        let s = sched("*/15 * * * *");
        assert_eq!(s.next_after(ts("2026-01-01T10:07:00Z")), Some(ts("2026-01-01T10:15:00Z")));
        // Strictly after: a fire time is not its own successor.
        assert_eq!(s.next_after(ts("2026-01-01T10:15:00Z")), Some(ts("2026-01-01T10:30:00Z")));
        let s = sched("30 2 * * 1-5");
        // 2026-01-03 is a Saturday: the next weekday is Monday the 5th.
        assert_eq!(s.next_after(ts("2026-01-02T03:00:00Z")), Some(ts("2026-01-05T02:30:00Z")));
    }

    #[test]
    fn macros_are_cron_shorthands() {
        assert_eq!(sched("@hourly").next_after(ts("2026-03-01T10:59:59Z")), Some(ts("2026-03-01T11:00:00Z")));
        assert_eq!(sched("@daily").next_after(ts("2026-03-01T10:00:00Z")), Some(ts("2026-03-02T00:00:00Z")));
        assert_eq!(sched("@midnight"), sched("@midnight"));
        assert_eq!(sched("@weekly").next_after(ts("2026-03-02T00:00:00Z")), Some(ts("2026-03-08T00:00:00Z")));
        assert_eq!(sched("@yearly").next_after(ts("2026-03-01T00:00:00Z")), Some(ts("2027-01-01T00:00:00Z")));
        assert!("@fortnightly".parse::<Schedule>().is_err());
    }

    #[test]
    fn month_ends_in_utc() {
        // The 31st only exists in some months: from the end of January it is in March.
        let s = sched("0 12 31 * *");
        assert_eq!(s.next_after(ts("2026-01-31T12:00:00Z")), Some(ts("2026-03-31T12:00:00Z")));
        // The 29th of February exists only in leap years.
        let s = sched("0 0 29 2 *");
        assert_eq!(s.next_after(ts("2026-03-01T00:00:00Z")), Some(ts("2028-02-29T00:00:00Z")));
        // @monthly across a year end.
        assert_eq!(sched("@monthly").next_after(ts("2026-12-15T00:00:00Z")), Some(ts("2027-01-01T00:00:00Z")));
        // UTC has no DST: 01:30 on the European switch-over day fires exactly once, an hour apart.
        let s = sched("30 * * * *");
        assert_eq!(s.next_after(ts("2026-03-29T00:30:00Z")), Some(ts("2026-03-29T01:30:00Z")));
    }

    #[test]
    fn every_is_epoch_aligned() {
        let s = sched("@every 5m");
        assert_eq!(s.every(), Some(std::time::Duration::from_secs(300)));
        assert_eq!(s.next_after(ts("2026-01-01T10:07:13Z")), Some(ts("2026-01-01T10:10:00Z")));
        assert_eq!(s.next_after(ts("2026-01-01T10:10:00Z")), Some(ts("2026-01-01T10:15:00Z")));
        let s = sched("@every 1h30m");
        assert_eq!(s.next_after(ts("1970-01-01T01:00:00Z")), Some(ts("1970-01-01T01:30:00Z")));
    }

    #[test]
    fn refuses_bad_schedules() {
        for (bad, why) in [
            ("@every 0s", "at least"),
            ("@every", "one space"),
            ("@every 5", "unit"),
            ("@every 500ms", "at least"),
            ("60 * * * *", "valid cron"),
            ("* 24 * * *", "valid cron"),
            ("* * 32 * *", "valid cron"),
            ("* * 0 * *", "valid cron"),
            ("* * * 13 *", "valid cron"),
            ("* * * * 8", "valid cron"),
            ("* * * *", "has 4 fields"),
            ("0 * * * * *", "has 6 fields"),
            ("", "has 0 fields"),
            ("@often", "not a known macro"),
        ] {
            let err = bad.parse::<Schedule>().expect_err(bad).to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn missed_runs_are_counted_not_replayed() {
        let s = sched("*/10 * * * *");
        let m = s.missed_between(ts("2026-01-01T10:00:00Z"), ts("2026-01-01T10:35:00Z"), 100);
        assert_eq!(m, Missed { latest: Some(ts("2026-01-01T10:30:00Z")), count: 3, truncated: false });
        // Window is (after, until]: a fire time equal to `after` is not missed, one equal to `until` is.
        let m = s.missed_between(ts("2026-01-01T10:00:00Z"), ts("2026-01-01T10:10:00Z"), 100);
        assert_eq!(m.count, 1);
        // Nothing missed in an empty or reversed window.
        let none = s.missed_between(ts("2026-01-01T10:01:00Z"), ts("2026-01-01T10:09:00Z"), 100);
        assert_eq!(none, Missed { latest: None, count: 0, truncated: false });
        assert_eq!(s.missed_between(ts("2026-01-02T00:00:00Z"), ts("2026-01-01T00:00:00Z"), 100).count, 0);
        // A week of downtime: counting stops at the bound, the latest is still exact.
        let m = s.missed_between(ts("2026-01-01T00:00:00Z"), ts("2026-01-08T00:05:00Z"), 100);
        assert_eq!(m, Missed { latest: Some(ts("2026-01-08T00:00:00Z")), count: 100, truncated: true });
    }

    #[test]
    fn missed_every_runs_in_closed_form() {
        let s = sched("@every 1s");
        let m = s.missed_between(ts("2026-01-01T00:00:00Z"), ts("2026-12-31T00:00:00.5Z"), 10);
        assert_eq!(m, Missed { latest: Some(ts("2026-12-31T00:00:00Z")), count: 10, truncated: true });
        let m = s.missed_between(ts("2026-01-01T00:00:00.2Z"), ts("2026-01-01T00:00:02.7Z"), 10);
        assert_eq!(m, Missed { latest: Some(ts("2026-01-01T00:00:02Z")), count: 2, truncated: false });
    }

    #[test]
    fn pattern_agrees_with_the_parser() {
        let re = regex::Regex::new(&SCHEDULE_PATTERN).unwrap();
        let good = [
            "*/15 * * * *",
            "0 0 * * *",
            "30 2 * * 1-5",
            "0 9-17/2 * * MON-FRI",
            "5,35 */6 1,15 jan,jul *",
            "0 0 31 12 7",
            "@hourly",
            "@daily",
            "@every 5m",
            "@every 1h30m",
        ];
        for s in good {
            assert!(re.is_match(s), "pattern refuses {s:?}");
            assert!(s.parse::<Schedule>().is_ok(), "parser refuses {s:?}");
        }
        let bad = [
            "60 * * * *",
            "* 24 * * *",
            "* * 32 * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 8",
            "* * * *",
            "@often",
            "@every 5",
            "5/15 * * * *",
            "*/0 * * * *",
            "*/100 * * * *",
        ];
        for s in bad {
            assert!(!re.is_match(s), "pattern accepts {s:?}");
            assert!(s.parse::<Schedule>().is_err(), "parser accepts {s:?}");
        }
    }

    /// Every generated case: the schema (pattern, length, CEL rules, as the test API server
    /// applies them) admits it exactly when the parser accepts it. One field varies at a
    /// time, the others are `*`.
    #[test]
    fn schema_admits_exactly_what_the_parser_accepts() {
        let schema = crate::schema_check::Admits::new::<Schedule>();
        let mut cases: Vec<String> = Vec::new();
        let steps = ["0", "00", "1", "01", "2", "7", "13", "59", "60", "99", "100", "101", "65535", "65536", "x", ""];
        let odd = ["00", "01", "07", "007", "-1", "x", "", "L", "?", "1W", "5#2", "sunday"].map(String::from);
        for (f, field) in CRON_FIELDS.iter().enumerate() {
            let (min, max) = (i32::from(field.min), i32::from(field.max));
            let names = field.names.iter().flat_map(|n| [n.to_string(), n.to_uppercase()]);
            // Every number around the field's range, the odd spellings, every name.
            let values: Vec<String> = (-1..=61).map(|v| v.to_string()).chain(odd.clone()).chain(names).collect();
            // Values at the field's bounds, a few odd spellings and the names: the ones whose
            // ranges and steps matter.
            let near: Vec<String> = (min - 1..=min + 1)
                .chain(max - 1..=max + 1)
                .chain([(min + max) / 2])
                .map(|v| v.to_string())
                .chain(["00", "07", "007", "x"].map(String::from))
                .chain(field.names.iter().map(|n| n.to_string()))
                .collect();
            let mut items: Vec<String> = values.clone();
            for step in steps {
                items.push(format!("*/{step}"));
                items.extend(near.iter().map(|v| format!("{v}/{step}")));
                items.push(format!("{min}-{max}/{step}"));
                items.push(format!("{max}-{max}/{step}"));
            }
            for low in &near {
                for high in &near {
                    items.push(format!("{low}-{high}"));
                    items.extend(["1", "2", "100"].map(|step| format!("{low}-{high}/{step}")));
                }
            }
            items.extend(["*", "**", "*-5", "1-2-3", "1,", ",1", "1,,2", "1-", "*/5/2"].map(String::from));
            items.push(format!("{min},{min}-{max},{max}"));
            for item in items {
                let mut fields = ["*"; 5].map(String::from);
                fields[f] = item;
                cases.push(fields.join(" "));
            }
        }
        // Impossible dates: the schema and the parser admit them; status reports them.
        for day in 28..=32 {
            for month in 1..=13 {
                cases.push(format!("0 0 {day} {month} *"));
            }
        }
        cases.extend(
            [
                "0  0 * * *",
                " 0 0 * * *",
                "0 0 * * * ",
                "0\t0 * * *",
                "0 0 * * *\n",
                "0 0 * * * *",
                "0 0 * *",
                "",
                "@hourly",
                "@HOURLY",
                "@yearly",
                "@annually",
                "@midnight",
                "@reboot",
                "@every 1s",
                "@every 999ms",
                "@every 1000ms",
                "@every 0s",
                "@every 5m",
                "@every  5m",
                "@every5m",
                "@every 5m ",
                "@every 99999h",
                "@every 100000h",
                "@every 9223372036854775807s",
                "@every 1h1h",
                "@every ",
                "@every",
            ]
            .map(String::from),
        );
        // Exactly as long as the schema allows, and one character longer.
        for length in [MAX_LENGTH, MAX_LENGTH + 1] {
            let extra = length - "0 * * * *".len();
            let (repeats, wide) = if extra.is_multiple_of(2) { (extra / 2, "") } else { ((extra - 3) / 2, ",00") };
            let case = format!("0{}{wide} * * * *", ",0".repeat(repeats));
            assert_eq!(case.len(), length);
            cases.push(case);
        }
        let mut admitted = 0;
        for case in &cases {
            let schema_says = schema.check(case);
            let parser_says = case.parse::<Schedule>();
            assert_eq!(
                schema_says.is_ok(),
                parser_says.is_ok(),
                "{case:?}: the schema says {schema_says:?}, the parser {parser_says:?}"
            );
            admitted += usize::from(schema_says.is_ok());
        }
        assert!(cases.len() > 5_000 && admitted > 1_000, "{} cases, {admitted} admitted", cases.len());
    }

    #[test]
    fn a_backwards_range_is_refused_with_a_way_out() {
        let err = "30-10 * * * *".parse::<Schedule>().unwrap_err().to_string();
        assert!(err.contains("minute range 30-10 runs backwards") && err.contains("10-30"), "{err}");
        let schema = crate::schema_check::Admits::new::<Schedule>();
        let refused = schema.check("30-10 * * * *").unwrap_err();
        assert!(refused.contains(ASCENDING_RANGES_MESSAGE), "{refused}");
        // Sunday ends a weekday range as 7, as in croner: fri-sun ascends, sun-fri too.
        for s in ["0 0 * * fri-sun", "0 0 * * sun-fri", "0 0 * * 5-7", "0 0 * * sat-sun/1"] {
            assert!(schema.check(s).is_ok() && s.parse::<Schedule>().is_ok(), "{s}");
        }
        for s in ["0 0 * * 5-0", "0 0 * * sat-mon", "0 0 * dec-jan *", "0 0 31-1 * *", "0 23-0/2 * * *"] {
            assert!(schema.check(s).is_err() && s.parse::<Schedule>().is_err(), "{s}");
        }
    }
}
