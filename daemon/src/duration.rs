//! Durations as admins write them: `30d`, `12h`, `2w`, `90m`, `45s`.
//!
//! A duration is at most [`Duration::MAX`] (100 years): every duration certctl reads (the
//! configuration, policies, command-line options) is added to or subtracted from a Unix
//! time, and a bound this far below `i64::MAX` keeps that arithmetic from overflowing. A
//! longer one is refused where it is parsed, with the usual "invalid duration" message
//! (and `FILE:LINE:COLUMN` in configuration files).

use std::fmt;
use std::str::FromStr;

/// Seconds in a day.
pub const DAY_SECS: i64 = 86_400;
/// Seconds in a week.
pub const WEEK_SECS: i64 = 7 * DAY_SECS;

/// Whole days from `now` to `t`, rounded down: 0 on the last day, -1 the day after.
pub fn days_left(t: i64, now: i64) -> i64 {
    (t - now).div_euclid(DAY_SECS)
}

/// A length of time in whole seconds, written as an integer and a unit (`s`, `m`, `h`,
/// `d`, `w`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    secs: i64,
}

impl Duration {
    /// The longest duration accepted: 100 years (36,525 days). Certificates are not issued,
    /// reminded about or waited for over longer spans; as seconds it stays far from
    /// overflowing when added to any time certctl handles (up to the year 9999).
    pub const MAX: Duration = Duration::days(36_525);

    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: i64) -> Self {
        Duration { secs }
    }

    /// A duration of `days` days (86,400 seconds each).
    pub const fn days(days: i64) -> Self {
        Duration {
            secs: days * DAY_SECS,
        }
    }

    /// The duration in seconds.
    pub fn as_secs(self) -> i64 {
        self.secs
    }
}

/// A duration that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{input}`: {reason} (write a number and a unit: 30d, 12h, 2w, 90m, 45s)")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| DurationError {
            input: s.to_string(),
            reason,
        };
        let t = s.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| err("the unit is missing"))?;
        let (number, unit) = t.split_at(split);
        if number.is_empty() {
            return Err(err("the number is missing"));
        }
        let n: i64 = number
            .parse()
            .map_err(|_| err("the duration is too large (at most 36525d, 100 years)"))?;
        let unit_secs = match unit.trim().to_ascii_lowercase().as_str() {
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hour" | "hours" => 3_600,
            "d" | "day" | "days" => DAY_SECS,
            "w" | "week" | "weeks" => WEEK_SECS,
            _ => return Err(err("unknown unit")),
        };
        n.checked_mul(unit_secs)
            .filter(|&secs| secs <= Duration::MAX.secs)
            .map(Duration::from_secs)
            .ok_or_else(|| err("the duration is too large (at most 36525d, 100 years)"))
    }
}

impl serde::Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.secs;
        for (unit, len) in [("d", DAY_SECS), ("h", 3_600), ("m", 60)] {
            if s != 0 && s % len == 0 {
                return write!(f, "{}{unit}", s / len);
            }
        }
        write!(f, "{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        assert_eq!("30d".parse(), Ok(Duration::days(30)));
        assert_eq!("12h".parse(), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!("2w".parse(), Ok(Duration::days(14)));
        assert_eq!("90m".parse(), Ok(Duration::from_secs(5400)));
        assert_eq!("45s".parse(), Ok(Duration::from_secs(45)));
        assert_eq!("7 days".parse(), Ok(Duration::days(7)));
    }

    #[test]
    fn rejects_nonsense_with_a_hint() {
        for bad in ["", "30", "d", "3x", "-3d", "99999999999999999999d"] {
            let e = bad.parse::<Duration>().unwrap_err().to_string();
            assert!(e.contains("30d, 12h"), "{bad}: {e}");
        }
    }

    #[test]
    fn durations_above_100_years_are_refused() {
        assert_eq!("36525d".parse(), Ok(Duration::MAX));
        assert_eq!("5217w".parse(), Ok(Duration::days(5217 * 7)));
        for bad in [
            "36526d",
            "5218w",
            "3155760001s",
            "9223372036854775807s",
            "106751991167300d",
            "153722867280912930m",
            "99999999999999999999d",
        ] {
            let e = bad.parse::<Duration>().unwrap_err().to_string();
            assert!(
                e.contains("too large (at most 36525d, 100 years)"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn displays_in_the_largest_whole_unit() {
        assert_eq!(Duration::days(14).to_string(), "14d");
        assert_eq!(Duration::days(30).to_string(), "30d");
        assert_eq!(Duration::from_secs(61).to_string(), "61s");
    }
}
