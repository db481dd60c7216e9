//! The audit history: who did what to a certificate and when (`certctl history ID`), what
//! was valid at a past moment (`certctl history --at DATE`), and who the acting user is
//! ([`actor`]) for every audit event certctl and certd record.
//!
//! Pruned periods: retention removes expired ephemeral credentials no source holds (their
//! per-agent aggregates stay), so `history --at` answers for them only through those
//! aggregates; every certificate still stored keeps its whole history.

use certctl_store::{Certificate, Store, StoreError, UnixTime};
use serde::{Deserialize, Serialize};

use crate::inventory::query::{self, QueryError};

/// Why a history question could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The ID given to `history ID` matches no certificate, or is an ambiguous fingerprint
    /// prefix.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// `history --at DATE` was given a date it cannot read; holds the text as given.
    #[error(
        "invalid date `{0}`: write 2026-11-25, 2026-11-25T17:00:00Z or 2026-11-25 17:00 (UTC)"
    )]
    BadDate(String),
}

/// What an audit event records: the `action` of [`certctl_store::AuditEvent`] and of `certctl history`
/// lines, one word each (the store keeps the word, so old records and these agree).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditAction {
    /// first seen by a scan (history only).
    FirstSeen,
    /// seen at a source (history only).
    SeenAt,
    /// gone from a source (history only).
    GoneFrom,
    /// issued by a managed CA.
    Issued,
    /// received from an outside CA (`workflows complete`).
    Received,
    /// a managed CA created (`ca init`).
    CaCreated,
    /// revoked (by certctl, or found on a CRL).
    Revoked,
    /// a managed CA published a CRL.
    CrlPublished,
    /// a regenerate workflow started.
    RegenerateRequested,
    /// the new certificate of a workflow names the old one.
    Supersedes,
    /// the old certificate names its successor.
    SupersededBy,
    /// a workflow deployed the new certificate.
    Deployed,
    /// an automatic renewal started.
    RenewalStarted,
    /// an automatic renewal failed.
    RenewalFailed,
    /// a reminder digest was delivered.
    ReminderSent,
    /// reminders silenced until a date.
    Snoozed,
    /// an agent approved.
    AgentApproved,
    /// an agent blocked (on the deny list).
    AgentBlocked,
    /// a tracked file no longer tracked.
    Untracked,
    /// an endpoint removed from the probe list.
    EndpointForgotten,
    /// the store restored from a backup.
    StoreRestored,
}

impl AuditAction {
    /// The word stored and shown (`revoked`, `crl-published`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::FirstSeen => "first-seen",
            AuditAction::SeenAt => "seen-at",
            AuditAction::GoneFrom => "gone-from",
            AuditAction::Issued => "issued",
            AuditAction::Received => "received",
            AuditAction::CaCreated => "ca-created",
            AuditAction::Revoked => "revoked",
            AuditAction::CrlPublished => "crl-published",
            AuditAction::RegenerateRequested => "regenerate-requested",
            AuditAction::Supersedes => "supersedes",
            AuditAction::SupersededBy => "superseded-by",
            AuditAction::Deployed => "deployed",
            AuditAction::RenewalStarted => "renewal-started",
            AuditAction::RenewalFailed => "renewal-failed",
            AuditAction::ReminderSent => "reminder-sent",
            AuditAction::Snoozed => "snoozed",
            AuditAction::AgentApproved => "agent-approved",
            AuditAction::AgentBlocked => "agent-blocked",
            AuditAction::Untracked => "untracked",
            AuditAction::EndpointForgotten => "endpoint-forgotten",
            AuditAction::StoreRestored => "store-restored",
        }
    }
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<AuditAction> for String {
    fn from(a: AuditAction) -> String {
        a.as_str().to_string()
    }
}

/// Who runs the command (`$USER`, else `$LOGNAME`, else the uid).
pub fn actor() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| format!("uid {}", rustix::process::getuid().as_raw()))
}

/// One line of `certctl history ID`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When it happened, in Unix seconds (`at` in `history --json`, as RFC 3339 there).
    pub at: UnixTime,
    /// `first-seen`, `seen-at`, `gone-from`, or an audit action (`revoked`, `issued`, ...).
    pub action: String,
    /// Who did it: `inventory` for sightings, else the user or service that acted (see
    /// [`actor`]); `actor` in `history --json`.
    pub actor: String,
    /// What it concerns: the certificate's name for `first-seen`, the source location for
    /// `seen-at`/`gone-from`, the audit event's own sentence otherwise; `detail` in
    /// `history --json`.
    pub detail: String,
}

/// A certificate and its history, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct History {
    /// The certificate the ID matched (`certificate` in `history --json`).
    pub certificate: Certificate,
    /// Its sightings and audit events, oldest first (`entries` in `history --json`).
    pub entries: Vec<HistoryEntry>,
}

/// `certctl history ID`: the sightings of the record and the audit events, in time order.
pub fn history(store: &Store, id: &str) -> Result<Vec<History>, HistoryError> {
    let certs = query::find(store, id)?;
    let mut out = Vec::with_capacity(certs.len());
    for cert in certs {
        let mut entries = vec![HistoryEntry {
            at: cert.first_seen,
            action: AuditAction::FirstSeen.into(),
            actor: "inventory".into(),
            detail: cert.facts.display_name().to_string(),
        }];
        for s in &cert.sources {
            entries.push(HistoryEntry {
                at: s.first_seen,
                action: AuditAction::SeenAt.into(),
                actor: "inventory".into(),
                detail: s.location.to_string(),
            });
            if let Some(g) = s.gone_since {
                entries.push(HistoryEntry {
                    at: g,
                    action: AuditAction::GoneFrom.into(),
                    actor: "inventory".into(),
                    detail: s.location.to_string(),
                });
            }
        }
        for e in store.history(&cert.fingerprint())? {
            entries.push(HistoryEntry {
                at: e.at,
                action: e.action,
                actor: e.actor,
                detail: e.detail,
            });
        }
        entries.sort_by_key(|e| e.at);
        out.push(History {
            certificate: cert,
            entries,
        });
    }
    Ok(out)
}

/// One certificate of `certctl history --at DATE`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidAt {
    /// A certificate that was valid at that moment (`certificate` in `history --at --json`).
    pub certificate: Certificate,
    /// Where it was deployed at that moment (sources seen before and not gone by then).
    pub deployed_at: Vec<String>,
    /// Whether certctl already knew it then (first seen before that moment).
    pub known_then: bool,
}

/// `certctl history --at DATE`: the certificates that were valid at `t` (inside their
/// validity, not yet revoked), with where they were deployed then.
pub fn valid_at(store: &Store, t: UnixTime) -> Result<Vec<ValidAt>, HistoryError> {
    let mut out = Vec::new();
    for cert in store.iter() {
        let cert = cert?;
        let f = &cert.facts;
        if f.not_before > t || f.not_after <= t {
            continue;
        }
        if cert.revocation.as_ref().is_some_and(|r| r.revoked_at <= t) {
            continue;
        }
        let deployed_at = cert
            .sources
            .iter()
            .filter(|s| s.first_seen <= t && s.gone_since.is_none_or(|g| g > t))
            .map(|s| s.location.to_string())
            .collect();
        out.push(ValidAt {
            known_then: cert.first_seen <= t,
            deployed_at,
            certificate: cert,
        });
    }
    out.sort_by_key(|v| (v.certificate.facts.not_after, v.certificate.fingerprint()));
    Ok(out)
}

/// Parses `2026-11-25`, `2026-11-25T17:00:00Z` (any RFC 3339) or `2026-11-25 17:00[:00]`
/// (UTC).
pub fn parse_date(s: &str) -> Result<UnixTime, HistoryError> {
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;
    let s = s.trim();
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    let normalised = s.replacen('T', " ", 1).trim_end_matches('Z').to_string();
    let full = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let short = format_description!("[year]-[month]-[day] [hour]:[minute]");
    for fmt in [full, short] {
        if let Ok(t) = time::PrimitiveDateTime::parse(&normalised, fmt) {
            return Ok(t.assume_utc().unix_timestamp());
        }
    }
    if let Ok(d) = time::Date::parse(s, format_description!("[year]-[month]-[day]")) {
        return Ok(d.midnight().assume_utc().unix_timestamp());
    }
    Err(HistoryError::BadDate(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The words are in stores already written: a variant may be added, never renamed.
    #[test]
    fn audit_actions_keep_their_released_words() {
        use AuditAction as A;
        let words: Vec<&str> = [
            A::FirstSeen,
            A::SeenAt,
            A::GoneFrom,
            A::Issued,
            A::Received,
            A::CaCreated,
            A::Revoked,
            A::CrlPublished,
            A::RegenerateRequested,
            A::Supersedes,
            A::SupersededBy,
            A::Deployed,
            A::RenewalStarted,
            A::RenewalFailed,
            A::ReminderSent,
            A::Snoozed,
            A::AgentApproved,
            A::AgentBlocked,
            A::Untracked,
            A::EndpointForgotten,
            A::StoreRestored,
        ]
        .into_iter()
        .map(AuditAction::as_str)
        .collect();
        assert_eq!(
            words,
            [
                "first-seen",
                "seen-at",
                "gone-from",
                "issued",
                "received",
                "ca-created",
                "revoked",
                "crl-published",
                "regenerate-requested",
                "supersedes",
                "superseded-by",
                "deployed",
                "renewal-started",
                "renewal-failed",
                "reminder-sent",
                "snoozed",
                "agent-approved",
                "agent-blocked",
                "untracked",
                "endpoint-forgotten",
                "store-restored",
            ]
        );
    }

    #[test]
    fn dates_parse() {
        assert_eq!(parse_date("1970-01-02").unwrap(), 86_400);
        assert_eq!(parse_date("1970-01-01T00:01:00Z").unwrap(), 60);
        assert_eq!(parse_date("1970-01-01 00:02").unwrap(), 120);
        assert!(parse_date("yesterday").is_err());
    }
}
