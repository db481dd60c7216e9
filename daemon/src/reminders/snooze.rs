//! Snoozes: silencing the reminders of one certificate or tracked file until a date, with a
//! reason (`certctl snooze`); an expired certificate is never silenced.

use certctl_store::{
    rfc3339, AuditEvent, Certificate, Snooze, Store, StoreError, TrackedArtifact, UnixTime,
};
use serde::{Deserialize, Serialize};

use crate::history::AuditAction;
use crate::inventory::query::{self, QueryError};

/// Why a certificate or tracked artifact could not be snoozed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SnoozeError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("`{id}` names {count} certificates or tracked files: give a fingerprint or id prefix to snooze one")]
    SeveralCertificates { id: String, count: usize },
    #[error(
        "{name} ({fingerprint}) expired on {expired}: an expired certificate is never silenced"
    )]
    Expired {
        name: String,
        fingerprint: String,
        expired: String,
    },
    #[error("the snooze must end in the future (it ends {until}, now is {now})")]
    InThePast { until: String, now: String },
    #[error("give a reason for the snooze (--reason TEXT)")]
    NoReason,
}

// ---- snoozes ------------------------------------------------------------------------------

/// A snooze with what it silences: its certificate, or its tracked artifact (the one still
/// in the store, if any).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Snoozed {
    /// The snooze record: what (`fingerprint`: a certificate's, or a tracked artifact's
    /// id), until when, why, by whom, since when.
    pub snooze: Snooze,
    /// The snoozed certificate; `None` when the snooze is for a tracked artifact, or its
    /// certificate has left the store.
    pub certificate: Option<Certificate>,
    /// The snoozed tracked artifact, when the snooze is not a certificate's and the artifact
    /// is still tracked; else `None`.
    #[serde(default)]
    pub artifact: Option<TrackedArtifact>,
}

impl Snoozed {
    /// The certificate's name, else the artifact's.
    pub fn name(&self) -> Option<&str> {
        match (&self.certificate, &self.artifact) {
            (Some(c), _) => Some(c.facts.display_name()),
            (None, Some(a)) => Some(a.name.as_str()),
            (None, None) => None,
        }
    }
}

/// Silences reminders until `until` for the one certificate `id` names, else the one tracked
/// artifact it names (id prefix, path or name); recorded in the audit history.
pub(crate) fn snooze(
    store: &Store,
    id: &str,
    until: UnixTime,
    reason: &str,
    by: &str,
    now: UnixTime,
) -> Result<Snoozed, SnoozeError> {
    if reason.trim().is_empty() {
        return Err(SnoozeError::NoReason);
    }
    let mut certificates = match query::find(store, id) {
        Ok(found) => found,
        Err(QueryError::NotFound(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let mut artifacts = if certificates.is_empty() {
        crate::inventory::artifacts::find(store, id)?
    } else {
        Vec::new()
    };
    // (What it silences: the fingerprint or artifact id, a name, and when it expires.)
    let (key, name, expires) = match (certificates.len(), artifacts.len()) {
        (1, _) => {
            let c = &certificates[0];
            (
                c.fingerprint(),
                c.facts.display_name().to_string(),
                c.facts.not_after,
            )
        }
        (0, 1) => {
            let a = &artifacts[0];
            (a.id, a.name.clone(), a.expires)
        }
        (0, 0) => return Err(SnoozeError::Query(QueryError::NotFound(id.to_string()))),
        (0, count) | (count, _) => {
            return Err(SnoozeError::SeveralCertificates {
                id: id.to_string(),
                count,
            })
        }
    };
    if expires <= now {
        return Err(SnoozeError::Expired {
            name,
            fingerprint: key.to_hex(),
            expired: rfc3339(expires),
        });
    }
    if until <= now {
        return Err(SnoozeError::InThePast {
            until: rfc3339(until),
            now: rfc3339(now),
        });
    }
    let snooze = Snooze {
        fingerprint: key,
        until,
        reason: reason.trim().to_string(),
        by: by.to_string(),
        at: now,
    };
    store.put_snooze(&snooze)?;
    store.record_audit(&AuditEvent {
        at: now,
        fingerprint: Some(snooze.fingerprint),
        actor: by.to_string(),
        action: AuditAction::Snoozed.into(),
        detail: format!("until {}: {}", rfc3339(until), snooze.reason),
    })?;
    Ok(Snoozed {
        snooze,
        certificate: certificates.pop(),
        artifact: artifacts.pop(),
    })
}

/// The snoozes still in force at `now`, soonest end first.
pub(crate) fn snoozed(store: &Store, now: UnixTime) -> Result<Vec<Snoozed>, StoreError> {
    let mut out = Vec::new();
    let tracked = store.artifacts()?;
    for s in store.snoozes()? {
        if s.until > now {
            let certificate = store.get(&s.fingerprint)?;
            let artifact = match certificate {
                Some(_) => None,
                None => tracked.iter().find(|a| a.id == s.fingerprint).cloned(),
            };
            out.push(Snoozed {
                snooze: s,
                certificate,
                artifact,
            });
        }
    }
    out.sort_by_key(|s| (s.snooze.until, s.snooze.fingerprint));
    Ok(out)
}

/// Whether `snooze` silences reminders about something expiring at `expires`, at `now`: only
/// while the snooze lasts, and never once the thing has expired (an expired certificate or
/// file is never silenced). The one place the rule is written; `due`, `policy explain` and
/// `snoozed` follow it.
pub fn silences(snooze: &Snooze, expires: UnixTime, now: UnixTime) -> bool {
    expires > now && snooze.until > now
}
