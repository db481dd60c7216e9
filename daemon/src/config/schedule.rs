//! Cron schedules as admins write them: when certd scans, probes and sends reminders.
//!
//! This module owns [`Schedule`]: parsing the text of a schedule, checking it field by field
//! with messages that say what is wrong, and answering "when does it fire next?"
//! ([`Schedule::next_after`]). The date arithmetic is the `cron` crate's.
//!
//! Accepted forms (all evaluated in **UTC**, never in the machine's local time zone):
//!
//! - **5 fields**, as in crontab(5): `minute hour day-of-month month day-of-week`, e.g.
//!   `0 8 * * 1-5` (08:00 UTC, Monday to Friday). Day-of-week numbers are crontab's:
//!   `0` and `7` are Sunday, `1` is Monday, ..., `6` is Saturday; names (`Mon-Fri`) work too.
//!   When both day-of-month and day-of-week are restricted (neither starts with `*`), the
//!   schedule fires on days matching *either*, as cron does (`0 0 1 * Mon` = the 1st of
//!   each month and every Monday).
//! - **6 or 7 fields**, the `cron` crate's own form: seconds first and an optional year last,
//!   e.g. `0 0 8 * * Mon-Fri`. Both day fields must match. Day-of-week must be written with
//!   names here: the crate numbers days 1 (Sunday) to 7 (Saturday), unlike crontab's
//!   0/7 (Sunday) to 6 (Saturday), so a number would be ambiguous and is refused.
//! - **Shorthands**: `@hourly`, `@daily` (= `@midnight`), `@weekly` (Sunday 00:00),
//!   `@monthly`, `@yearly` (= `@annually`).
//!
//! In every field: `*`, a number or name, a range `a-b`, a step `*/n`, `a-b/n` or `a/n`
//! (from `a` to the end of the range), and comma lists of these. `?` is `*` in the day fields.
//! A schedule that can never fire (`0 0 30 2 *`) is refused.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use certctl_store::UnixTime;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The accepted forms, quoted in every error.
const FORMS: &str =
    "write 5 fields `minute hour day-of-month month day-of-week` (e.g. `0 8 * * 1-5`), \
     6 or 7 fields with seconds first and an optional year (e.g. `0 0 8 * * Mon-Fri`), \
     or @hourly, @daily, @weekly";

/// When something runs: a cron expression, evaluated in UTC.
///
/// Two schedules are equal when they are written the same way.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// The text as written (trimmed).
    text: String,
    /// What the `cron` crate evaluates.
    primary: cron::Schedule,
    /// A 5-field expression restricting both day fields fires on either: `primary` has the
    /// day-of-month restriction, this one the day-of-week restriction.
    either_day: Option<cron::Schedule>,
}

/// A schedule that could not be parsed: what is wrong, and the forms that are accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid schedule `{input}`: {reason}; {FORMS}")]
pub struct ScheduleError {
    input: String,
    reason: String,
}

impl ScheduleError {
    /// What is wrong, without the input and the list of accepted forms.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl Schedule {
    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first time strictly after `t` at which the schedule fires (whole seconds, UTC), or
    /// `None` if it never fires again (a 7-field expression whose years are over, or a time
    /// past the year 2100, the `cron` crate's last year).
    pub fn next_after(&self, t: UnixTime) -> Option<UnixTime> {
        let start = DateTime::<Utc>::from_timestamp(t, 0)?;
        let next = |s: &cron::Schedule| s.after(&start).next().map(|d| d.timestamp());
        [Some(&self.primary), self.either_day.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(next)
            .min()
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Schedule {}

impl std::hash::Hash for Schedule {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| ScheduleError {
            input: s.to_string(),
            reason,
        };
        let text = s.trim();
        let (primary, either_day) = if text.is_empty() {
            return Err(err("it is empty".into()));
        } else if text.starts_with('@') {
            (shorthand(text).map_err(err)?, None)
        } else {
            let fields: Vec<&str> = text.split_whitespace().collect();
            match fields.len() {
                5 => classic(&fields).map_err(err)?,
                6 | 7 => (seconds_first(&fields).map_err(err)?, None),
                n => {
                    return Err(err(format!(
                        "it has {n} field{}",
                        if n == 1 { "" } else { "s" }
                    )))
                }
            }
        };
        let schedule = Schedule {
            text: text.to_string(),
            primary,
            either_day,
        };
        // The earliest time the crate handles: a schedule with no time after it never fires.
        if schedule.next_after(0).is_none() {
            return Err(err("it never fires (no date matches it)".into()));
        }
        Ok(schedule)
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

/// `@daily` and friends, as 6-field expressions.
fn shorthand(text: &str) -> Result<cron::Schedule, String> {
    let expression = match text.to_ascii_lowercase().as_str() {
        "@hourly" => "0 0 * * * *",
        "@daily" | "@midnight" => "0 0 0 * * *",
        "@weekly" => "0 0 0 * * Sun",
        "@monthly" => "0 0 0 1 * *",
        "@yearly" | "@annually" => "0 0 0 1 1 *",
        _ => {
            return Err(format!(
                "unknown shorthand `{text}` (known: @hourly, @daily, @weekly, @monthly, @yearly)"
            ))
        }
    };
    crate_schedule(expression)
}

/// The 5-field crontab form, translated to the crate's form: seconds `0` in front, every
/// field as an explicit list, day-of-week as names (so crontab's numbering never reaches
/// the crate, which numbers days differently).
fn classic(fields: &[&str]) -> Result<(cron::Schedule, Option<cron::Schedule>), String> {
    let minute = parse_field(fields[0], &MINUTE)?;
    let hour = parse_field(fields[1], &HOUR)?;
    let dom = parse_field(fields[2], &DAY_OF_MONTH)?;
    let month = parse_field(fields[3], &MONTH)?;
    let dow = parse_field(fields[4], &CLASSIC_DAY_OF_WEEK)?;

    let minute = emit(&minute, &MINUTE);
    let hour = emit(&hour, &HOUR);
    let month = emit(&month, &MONTH);
    let dom_list = emit(&dom, &DAY_OF_MONTH);
    // 7 is Sunday like 0.
    let days: BTreeSet<u32> = dow.values.iter().map(|d| d % 7).collect();
    let dow_list = if days.len() == 7 {
        "*".to_string()
    } else {
        days.iter()
            .map(|d| DAY_NAMES[*d as usize])
            .collect::<Vec<_>>()
            .join(",")
    };

    if !dom.star && !dow.star {
        // crontab(5): "If both fields are restricted (i.e., do not contain the "*"), the
        // command will be run when either field matches the current time."
        let by_month_day = crate_schedule(&format!("0 {minute} {hour} {dom_list} {month} *"))?;
        let by_week_day = crate_schedule(&format!("0 {minute} {hour} * {month} {dow_list}"))?;
        Ok((by_month_day, Some(by_week_day)))
    } else {
        let both = crate_schedule(&format!("0 {minute} {hour} {dom_list} {month} {dow_list}"))?;
        Ok((both, None))
    }
}

/// The crate's 6/7-field form, checked field by field first for clear messages (and to
/// refuse numeric days of the week), then handed to the crate as written.
fn seconds_first(fields: &[&str]) -> Result<cron::Schedule, String> {
    let units = [
        &SECOND,
        &MINUTE,
        &HOUR,
        &DAY_OF_MONTH,
        &MONTH,
        &NAMED_DAY_OF_WEEK,
        &YEAR,
    ];
    for (field, unit) in fields.iter().zip(units) {
        parse_field(field, unit)?;
    }
    crate_schedule(&fields.join(" "))
}

fn crate_schedule(expression: &str) -> Result<cron::Schedule, String> {
    cron::Schedule::from_str(expression).map_err(|e| {
        // The crate's messages can span lines; keep errors on one line.
        let message = e.to_string();
        message.split_whitespace().collect::<Vec<_>>().join(" ")
    })
}

/// One field of a cron expression: its name, range and names.
struct Unit {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [(&'static str, u32)],
    /// Whether plain numbers are accepted (not for day-of-week in the 6/7-field form).
    numbers: bool,
    /// What to say about this field's values when one is wrong.
    hint: &'static str,
}

const DAY_NAMES: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// Day names, numbered as in crontab (Sunday = 0); the same spellings as the `cron` crate.
const WEEKDAYS: &[(&str, u32)] = &[
    ("sun", 0),
    ("sunday", 0),
    ("mon", 1),
    ("monday", 1),
    ("tue", 2),
    ("tues", 2),
    ("tuesday", 2),
    ("wed", 3),
    ("wednesday", 3),
    ("thu", 4),
    ("thurs", 4),
    ("thursday", 4),
    ("fri", 5),
    ("friday", 5),
    ("sat", 6),
    ("saturday", 6),
];

const MONTHS: &[(&str, u32)] = &[
    ("jan", 1),
    ("january", 1),
    ("feb", 2),
    ("february", 2),
    ("mar", 3),
    ("march", 3),
    ("apr", 4),
    ("april", 4),
    ("may", 5),
    ("jun", 6),
    ("june", 6),
    ("jul", 7),
    ("july", 7),
    ("aug", 8),
    ("august", 8),
    ("sep", 9),
    ("september", 9),
    ("oct", 10),
    ("october", 10),
    ("nov", 11),
    ("november", 11),
    ("dec", 12),
    ("december", 12),
];

const fn numeric(name: &'static str, min: u32, max: u32, hint: &'static str) -> Unit {
    Unit {
        name,
        min,
        max,
        names: &[],
        numbers: true,
        hint,
    }
}

const SECOND: Unit = numeric("second", 0, 59, "0-59");
const MINUTE: Unit = numeric("minute", 0, 59, "0-59");
const HOUR: Unit = numeric("hour", 0, 23, "0-23");
const DAY_OF_MONTH: Unit = numeric("day-of-month", 1, 31, "1-31");
const YEAR: Unit = numeric("year", 1970, 2100, "1970-2100");
const MONTH: Unit = Unit {
    name: "month",
    min: 1,
    max: 12,
    names: MONTHS,
    numbers: true,
    hint: "1-12 or Jan-Dec",
};
const CLASSIC_DAY_OF_WEEK: Unit = Unit {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: WEEKDAYS,
    numbers: true,
    hint: "0-7 where 0 and 7 are Sunday, or Sun-Sat",
};
/// Only for checking: the crate's own numbering is not used, so the range is crontab's.
const NAMED_DAY_OF_WEEK: Unit = Unit {
    name: "day-of-week",
    min: 0,
    max: 6,
    names: WEEKDAYS,
    numbers: false,
    hint: "Sun-Sat",
};

/// The values a field selects, and whether it starts with `*` (or `?`): crontab's test for
/// "unrestricted" in its day-of-month/day-of-week rule.
struct Field {
    values: BTreeSet<u32>,
    star: bool,
}

fn parse_field(text: &str, unit: &Unit) -> Result<Field, String> {
    let name = unit.name;
    let is_day = unit.name.starts_with("day-of");
    let mut values = BTreeSet::new();
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("{name} `{text}` has an empty list entry"));
        }
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => {
                let step: u32 = step
                    .parse()
                    .map_err(|_| format!("{name} step `{step}` in `{item}` is not a number"))?;
                if step == 0 {
                    return Err(format!("{name} step in `{item}` is zero"));
                }
                (base, step)
            }
            None => (item, 1),
        };
        let (first, last) = if base == "*" || (base == "?" && is_day) {
            (unit.min, unit.max)
        } else if let Some((a, b)) = base.split_once('-') {
            let (a, b) = (value(a, unit)?, value(b, unit)?);
            if a > b {
                return Err(format!("{name} range `{base}` goes backwards"));
            }
            (a, b)
        } else {
            let a = value(base, unit)?;
            // `a/n` runs from a to the end of the range, as in the crate and cronie.
            (a, if step > 1 { unit.max } else { a })
        };
        values.extend((first..=last).step_by(step as usize));
    }
    Ok(Field {
        values,
        star: text.starts_with('*') || (is_day && text.starts_with('?')),
    })
}

fn value(text: &str, unit: &Unit) -> Result<u32, String> {
    let name = unit.name;
    let hint = unit.hint;
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        if !unit.numbers {
            return Err(format!(
                "{name} `{text}` is a number: in the 6/7-field form write day names \
                 (Sun-Sat, e.g. Mon-Fri), because numbers mean different days there \
                 (1 = Sunday) and in the 5-field form (1 = Monday)"
            ));
        }
        return match text.parse::<u32>() {
            Ok(n) if (unit.min..=unit.max).contains(&n) => Ok(n),
            _ => Err(format!("{name} {text} is out of range ({hint})")),
        };
    }
    unit.names
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(text))
        .map(|(_, v)| *v)
        .ok_or_else(|| format!("{name} `{text}` is not valid ({hint})"))
}

/// A field as the crate reads it: `*` when everything is selected, else a list of numbers.
fn emit(field: &Field, unit: &Unit) -> String {
    if field.values.len() as u32 == unit.max - unit.min + 1 {
        "*".to_string()
    } else {
        field
            .values
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, NaiveDate, Timelike, Weekday};

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> UnixTime {
        NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_opt(h, mi, 0)
            .unwrap()
            .and_utc()
            .timestamp()
    }

    fn next(expr: &str, t: UnixTime) -> UnixTime {
        expr.parse::<Schedule>().unwrap().next_after(t).unwrap()
    }

    fn weekday(t: UnixTime) -> Weekday {
        DateTime::<Utc>::from_timestamp(t, 0).unwrap().weekday()
    }

    #[test]
    fn weekday_mornings_skip_the_weekend() {
        // 2025-06-06 is a Friday.
        assert_eq!(weekday(at(2025, 6, 6, 0, 0)), Weekday::Fri);
        let s: Schedule = "0 8 * * 1-5".parse().unwrap();
        // Friday before 08:00 → Friday 08:00.
        assert_eq!(
            s.next_after(at(2025, 6, 6, 7, 0)),
            Some(at(2025, 6, 6, 8, 0))
        );
        // Friday at 08:00 exactly → strictly after: Monday 08:00.
        assert_eq!(
            s.next_after(at(2025, 6, 6, 8, 0)),
            Some(at(2025, 6, 9, 8, 0))
        );
        // Saturday noon → Monday.
        let monday = s.next_after(at(2025, 6, 7, 12, 0)).unwrap();
        assert_eq!(monday, at(2025, 6, 9, 8, 0));
        assert_eq!(weekday(monday), Weekday::Mon);
        // Sunday → Monday, not Sunday (the crate's 1 would be Sunday).
        assert_eq!(
            s.next_after(at(2025, 6, 8, 0, 0)),
            Some(at(2025, 6, 9, 8, 0))
        );
        // Every weekday of a week, and no weekend day.
        let mut t = at(2025, 6, 6, 9, 0);
        let mut days = Vec::new();
        for _ in 0..5 {
            t = s.next_after(t).unwrap();
            days.push(weekday(t));
        }
        use Weekday::*;
        assert_eq!(days, [Mon, Tue, Wed, Thu, Fri]);
    }

    #[test]
    fn names_mean_the_same_days_as_numbers() {
        let t = at(2025, 6, 6, 9, 0);
        assert_eq!(next("0 8 * * Mon-Fri", t), next("0 8 * * 1-5", t));
        assert_eq!(next("0 8 * * mon-5", t), next("0 8 * * 1-5", t));
    }

    #[test]
    fn every_quarter_hour() {
        let s: Schedule = "*/15 * * * *".parse().unwrap();
        assert_eq!(
            s.next_after(at(2025, 1, 1, 10, 0)),
            Some(at(2025, 1, 1, 10, 15))
        );
        assert_eq!(
            s.next_after(at(2025, 1, 1, 10, 7)),
            Some(at(2025, 1, 1, 10, 15))
        );
        assert_eq!(
            s.next_after(at(2025, 1, 1, 23, 50)),
            Some(at(2025, 1, 2, 0, 0))
        );
        // Mid-minute: still on the quarter, at second 0.
        assert_eq!(
            s.next_after(at(2025, 1, 1, 10, 14) + 30),
            Some(at(2025, 1, 1, 10, 15))
        );
    }

    #[test]
    fn six_and_seven_field_forms() {
        let t = at(2025, 6, 6, 9, 0); // Friday
        assert_eq!(next("0 0 8 * * Mon-Fri", t), at(2025, 6, 9, 8, 0));
        assert_eq!(next("30 0 8 * * *", t), at(2025, 6, 7, 8, 0) + 30);
        assert_eq!(next("0 0 8 * * Mon-Fri 2026", t), at(2026, 1, 1, 8, 0));
        assert_eq!(next("0 0 8 ? * Sun", t), at(2025, 6, 8, 8, 0));
    }

    #[test]
    fn sunday_is_0_and_7() {
        let t = at(2025, 6, 4, 12, 0); // Wednesday
        let sunday = at(2025, 6, 8, 0, 0);
        assert_eq!(weekday(sunday), Weekday::Sun);
        assert_eq!(next("0 0 * * 0", t), sunday);
        assert_eq!(next("0 0 * * 7", t), sunday);
        assert_eq!(next("0 0 * * Sun", t), sunday);
        // Friday to Sunday across the end of the numbering.
        assert_eq!(
            next("0 0 * * 5-7", at(2025, 6, 6, 12, 0)),
            at(2025, 6, 7, 0, 0)
        );
        assert_eq!(next("0 0 * * 5-7", at(2025, 6, 7, 12, 0)), sunday);
        assert_eq!(next("0 0 * * 6", t), at(2025, 6, 7, 0, 0)); // Saturday
    }

    #[test]
    fn shorthands() {
        let t = at(2025, 6, 4, 12, 30); // Wednesday
        assert_eq!(next("@hourly", t), at(2025, 6, 4, 13, 0));
        assert_eq!(next("@daily", t), at(2025, 6, 5, 0, 0));
        assert_eq!(next("@weekly", t), at(2025, 6, 8, 0, 0)); // Sunday
        assert_eq!(next("@WEEKLY", t), at(2025, 6, 8, 0, 0));
        assert!("@reboot".parse::<Schedule>().is_err());
    }

    #[test]
    fn either_day_field_matches_when_both_are_restricted() {
        // The 1st of the month and every Monday, as crontab(5) says.
        let s: Schedule = "0 0 1 * Mon".parse().unwrap();
        let mut t = at(2025, 5, 28, 0, 0); // Wednesday
        let mut fired = Vec::new();
        for _ in 0..3 {
            t = s.next_after(t).unwrap();
            let d = DateTime::<Utc>::from_timestamp(t, 0).unwrap();
            fired.push((d.month(), d.day(), d.hour()));
        }
        assert_eq!(fired, [(6, 1, 0), (6, 2, 0), (6, 9, 0)]);
        // With a star in front, both must match (cron's rule too): Sundays, Tuesdays,
        // Thursdays and Saturdays that are the 1st to the 7th.
        let s: Schedule = "0 0 1-7 * */2".parse().unwrap();
        assert_eq!(
            s.next_after(at(2025, 6, 1, 0, 0)),
            Some(at(2025, 6, 3, 0, 0))
        );
        assert_eq!(
            s.next_after(at(2025, 6, 3, 0, 0)),
            Some(at(2025, 6, 5, 0, 0))
        );
        assert_eq!(
            s.next_after(at(2025, 6, 7, 0, 0)),
            Some(at(2025, 7, 1, 0, 0))
        );
    }

    #[test]
    fn display_is_the_text_as_written() {
        for text in ["0 8 * * 1-5", "*/15 * * * *", "0 0 8 * * Mon-Fri", "@daily"] {
            let s: Schedule = text.parse().unwrap();
            assert_eq!(s.to_string(), text);
        }
        assert_eq!(
            " 0 8 * * 1-5 ".parse::<Schedule>().unwrap().to_string(),
            "0 8 * * 1-5"
        );
    }

    #[test]
    fn deserializes_from_a_string() {
        let s: Schedule = serde_json::from_str("\"0 8 * * 1-5\"").unwrap();
        assert_eq!(s, "0 8 * * 1-5".parse().unwrap());
        let e = serde_json::from_str::<Schedule>("\"61 * * * *\"").unwrap_err();
        assert!(e.to_string().contains("minute 61 is out of range"), "{e}");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"0 8 * * 1-5\"");
    }

    #[test]
    fn errors_say_what_is_wrong_and_show_both_forms() {
        let cases = [
            ("61 * * * *", "minute 61 is out of range (0-59)"),
            ("* * *", "it has 3 fields"),
            ("", "it is empty"),
            ("0 24 * * *", "hour 24 is out of range (0-23)"),
            ("0 0 0 * *", "day-of-month 0 is out of range (1-31)"),
            ("0 0 * 13 *", "month 13 is out of range"),
            (
                "0 0 * * 8",
                "day-of-week 8 is out of range (0-7 where 0 and 7 are Sunday",
            ),
            ("0 0 * * Funday", "day-of-week `Funday` is not valid"),
            ("*/0 * * * *", "minute step in `*/0` is zero"),
            ("5-1 * * * *", "minute range `5-1` goes backwards"),
            ("1,,2 * * * *", "empty list entry"),
            ("0 0 8 * * 1-5", "day-of-week `1` is a number"),
            ("0 0 30 2 *", "it never fires"),
            ("@fortnightly", "unknown shorthand"),
            ("0 0 8 * * * 1969", "year 1969 is out of range"),
        ];
        for (input, reason) in cases {
            let e = input.parse::<Schedule>().unwrap_err();
            let text = e.to_string();
            assert!(e.reason().contains(reason), "{input}: {text}");
            assert!(text.contains("`0 8 * * 1-5`"), "{input}: {text}");
            assert!(text.contains("`0 0 8 * * Mon-Fri`"), "{input}: {text}");
            assert!(!text.contains('\n'), "{input}: {text}");
        }
    }

    #[test]
    fn steps_and_lists() {
        let t = at(2025, 6, 4, 12, 0);
        assert_eq!(next("0 1-23/6 * * *", t), at(2025, 6, 4, 13, 0));
        assert_eq!(next("0 6/6 * * *", t), at(2025, 6, 4, 18, 0));
        assert_eq!(
            next("0,30 * * * *", at(2025, 6, 4, 12, 1)),
            at(2025, 6, 4, 12, 30)
        );
        assert_eq!(next("0 0 1 Jan,Jul *", t), at(2025, 7, 1, 0, 0));
    }

    #[test]
    fn equality_is_by_text() {
        let a: Schedule = "0 8 * * 1-5".parse().unwrap();
        let b: Schedule = "0 8 * * Mon-Fri".parse().unwrap();
        assert_ne!(a, b);
        assert_eq!(a, a.clone());
    }
}
