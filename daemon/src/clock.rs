//! The one clock: the wall clock, or `$CERTCTL_NOW` when set. The variable exists for tests
//! and benchmarks (`scripts/bench-soak` runs rounds at simulated times); it freezes the
//! clock and is not meant for production. certd and `certctl` read it the same way.
//!
//! May import: `history` (the date parser) only.

use certctl_store::UnixTime;

/// The variable that freezes the clock (RFC 3339, or a date meaning 00:00 UTC).
pub const NOW_ENV: &str = "CERTCTL_NOW";

/// `$CERTCTL_NOW` is set to something that is not a time.
#[derive(Debug, thiserror::Error)]
#[error("${NOW_ENV} `{0}` is not an RFC 3339 time")]
pub struct ClockError(pub String);

/// The frozen time when `$CERTCTL_NOW` is set (and not empty), else `None`.
pub fn frozen() -> Result<Option<UnixTime>, ClockError> {
    frozen_at(std::env::var(NOW_ENV).ok())
}

/// What a value of `$CERTCTL_NOW` freezes the clock at.
fn frozen_at(value: Option<String>) -> Result<Option<UnixTime>, ClockError> {
    match value {
        Some(text) if !text.trim().is_empty() => crate::history::parse_date(&text)
            .map(Some)
            .map_err(|_| ClockError(text)),
        _ => Ok(None),
    }
}

/// Now: `$CERTCTL_NOW` when set, else the wall clock.
pub fn now() -> Result<UnixTime, ClockError> {
    Ok(frozen()?.unwrap_or_else(certctl_store::now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frozen_clock_reads_rfc3339_and_dates_and_refuses_the_rest() {
        let at = |v: &str| frozen_at(Some(v.to_string()));
        assert_eq!(
            at("2026-12-03T12:00:00Z").expect("rfc 3339"),
            Some(1_796_299_200)
        );
        assert_eq!(at("2026-12-03").expect("a date"), Some(1_796_256_000));
        assert_eq!(
            at("tomorrow").expect_err("not a time").to_string(),
            "$CERTCTL_NOW `tomorrow` is not an RFC 3339 time"
        );
        assert_eq!(at("").expect("empty"), None);
        assert_eq!(frozen_at(None).expect("unset"), None);
    }
}
