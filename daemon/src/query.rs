//! The questions admins ask of the inventory: `list`, `show`, `stats`, `check`.
//!
//! Each answers from the store's indexes where one fits (expiry, role, name) and only falls
//! back to reading every record when the filter has no index (issuer substring, all).

use std::collections::BTreeMap;

use certctl_store::{Certificate, CredentialKind, Role, Status, Store, StoreError, UnixTime};
use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::view::EXPIRING_SECS;

/// Errors of the query layer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no certificate matches `{0}` (give a fingerprint prefix of at least 8 hex characters, or an exact subject CN or SAN)")]
    NotFound(String),
    #[error("`{id}` is ambiguous: it matches {} certificates:\n{}", candidates.len(), candidates.join("\n"))]
    Ambiguous { id: String, candidates: Vec<String> },
}

/// `certctl list` filters. All given filters must match.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ListFilter {
    pub role: Option<Role>,
    /// Not yet expired and not_after before now + this.
    pub expiring_within: Option<Duration>,
    /// Already expired. With `expiring_within`, the union of both.
    pub expired: bool,
    /// Case-insensitive substring of the issuer DN.
    pub issuer: Option<String>,
    /// Case-insensitive substring of the subject CN or a SAN.
    pub name: Option<String>,
}

/// Certificates matching `filter` at `now`, sorted by not_after.
pub fn list(
    store: &Store,
    filter: &ListFilter,
    now: UnixTime,
) -> Result<Vec<Certificate>, QueryError> {
    let time_range = match (filter.expired, filter.expiring_within) {
        (false, None) => None,
        (true, None) => Some((i64::MIN + 1, now + 1)),
        (false, Some(d)) => Some((now + 1, now.saturating_add(d.as_secs()) + 1)),
        (true, Some(d)) => Some((i64::MIN + 1, now.saturating_add(d.as_secs()) + 1)),
    };
    let mut certs = match (time_range, filter.role) {
        (Some((from, before)), role) => expiring_between(store, from, before, role)?,
        (None, Some(role)) => store.by_role(role)?,
        (None, None) => {
            let mut all = store.iter().collect::<Result<Vec<_>, _>>()?;
            all.sort_by_key(|c| (c.facts.not_after, c.facts.fingerprint));
            all
        }
    };
    if let Some(issuer) = &filter.issuer {
        let needle = issuer.to_lowercase();
        certs.retain(|c| c.facts.issuer.to_lowercase().contains(&needle));
    }
    if let Some(name) = &filter.name {
        let needle = name.to_lowercase();
        certs.retain(|c| {
            c.facts.names().any(|n| n.to_lowercase().contains(&needle))
                || c.facts.subject.to_lowercase().contains(&needle)
        });
    }
    refresh_last_seen(store, &mut certs)?;
    Ok(certs)
}

/// The expiry index's buckets are weeks since the epoch: pieces of a range cut there read
/// disjoint buckets.
const EXPIRY_BUCKET_SECS: i64 = 7 * 86_400;
/// Ranges longer than this are read in one piece (`--expired`, a role's whole list).
const MAX_SPLIT_RANGE: i64 = 5 * 365 * 86_400;

/// [`Store::expiring_between`], with a bounded range read as week-aligned pieces in
/// parallel (reading and decoding the records is most of a `list --expiring-within`). The
/// pieces are disjoint and in order, so their concatenation is sorted like one read.
fn expiring_between(
    store: &Store,
    from: UnixTime,
    before: UnixTime,
    role: Option<Role>,
) -> Result<Vec<Certificate>, StoreError> {
    use rayon::prelude::*;
    let threads = rayon::current_num_threads();
    if threads < 2 || before.saturating_sub(from) > MAX_SPLIT_RANGE || before <= from {
        return store.expiring_between(from, before, role);
    }
    let mut cuts = vec![from];
    let mut week = from.div_euclid(EXPIRY_BUCKET_SECS) + 1;
    while week * EXPIRY_BUCKET_SECS < before {
        cuts.push(week * EXPIRY_BUCKET_SECS);
        week += 1;
    }
    cuts.push(before);
    let pieces: Vec<Vec<Certificate>> = cuts
        .par_windows(2)
        .map(|w| store.expiring_between(w[0], w[1], role))
        .collect::<Result<_, _>>()?;
    Ok(pieces.into_iter().flatten().collect())
}

/// [`Store::refresh_last_seen`], in parallel over groups of folders (reading the folders'
/// file states is the other big part of a long listing). Certificates are grouped by the
/// folder of their first file source, so each folder is read by one group.
fn refresh_last_seen(store: &Store, certs: &mut [Certificate]) -> Result<(), StoreError> {
    use rayon::prelude::*;
    const MIN_PER_GROUP: usize = 2048;
    let threads = rayon::current_num_threads();
    if threads < 2 || certs.len() < 2 * MIN_PER_GROUP {
        return store.refresh_last_seen(certs);
    }
    fn folder(c: &Certificate) -> &str {
        c.sources
            .iter()
            .find_map(|s| match &s.location {
                certctl_store::SourceLocation::File { path, .. } => {
                    Some(path.rsplit_once('/').map_or("", |(dir, _)| dir))
                }
                _ => None,
            })
            .unwrap_or("")
    }
    // Sort by folder, refresh, then restore the order (not_after, fingerprint).
    certs.sort_by(|a, b| folder(a).cmp(folder(b)));
    let groups = (threads * 4).min(certs.len() / MIN_PER_GROUP).max(1);
    let per_group = certs.len().div_ceil(groups);
    certs
        .par_chunks_mut(per_group)
        .try_for_each(|chunk| store.refresh_last_seen(chunk))?;
    certs.sort_by_key(|c| (c.facts.not_after, c.facts.fingerprint));
    Ok(())
}

/// The certificates `id` names: a fingerprint prefix (≥ 8 hex characters, colons allowed)
/// or an exact subject CN / SAN. An ambiguous prefix is an error listing the candidates;
/// a name shared by several certificates (e.g. a renewed one) returns them all.
pub fn find(store: &Store, id: &str) -> Result<Vec<Certificate>, QueryError> {
    let hex: String = id.chars().filter(|c| *c != ':').collect();
    let mut found = Vec::new();
    if hex.len() >= 8 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        found = store.find_by_fingerprint_prefix(&hex)?;
        if found.len() > 1 {
            return Err(QueryError::Ambiguous {
                id: id.to_string(),
                candidates: found.iter().map(describe).collect(),
            });
        }
    }
    if found.is_empty() {
        found = store.find_by_name(id)?;
    }
    if found.is_empty() {
        return Err(QueryError::NotFound(id.to_string()));
    }
    store.refresh_last_seen(&mut found)?;
    Ok(found)
}

fn describe(c: &Certificate) -> String {
    format!(
        "  {}  {}  expires {}",
        c.fingerprint().to_hex(),
        c.facts.display_name(),
        certctl_store::rfc3339(c.facts.not_after)
    )
}

/// `certctl stats`. Field names are part of the `--json` contract.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stats {
    pub total: u64,
    pub by_role: BTreeMap<String, u64>,
    pub by_status: BTreeMap<String, u64>,
    pub by_key: BTreeMap<String, u64>,
    pub by_credential_kind: BTreeMap<String, u64>,
}

pub fn stats(store: &Store, now: UnixTime) -> Result<Stats, QueryError> {
    let mut s = Stats::default();
    for status in [
        Status::Valid,
        Status::Expiring,
        Status::Expired,
        Status::Revoked,
        Status::NotYetValid,
    ] {
        s.by_status.insert(status.as_str().to_string(), 0);
    }
    for cert in store.iter() {
        let cert = cert?;
        s.total += 1;
        *s.by_role.entry(cert.role.as_str().to_string()).or_default() += 1;
        *s.by_status
            .entry(cert.status(now, EXPIRING_SECS).as_str().to_string())
            .or_default() += 1;
        *s.by_key.entry(cert.facts.key.to_string()).or_default() += 1;
        if let Some(kind) = cert.credential_kind() {
            *s.by_credential_kind
                .entry(kind.as_str().to_string())
                .or_default() += 1;
        }
    }
    Ok(s)
}

/// The verdict of `certctl check`, for monitoring systems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Warning,
    Critical,
}

/// What `certctl check` found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckReport {
    pub verdict: Verdict,
    /// Certificates considered (present somewhere, not revoked, not ephemeral).
    pub considered: u64,
    pub expired: Vec<Certificate>,
    pub critical: Vec<Certificate>,
    pub warning: Vec<Certificate>,
    pub warn: Duration,
    pub critical_within: Duration,
    /// Set in a brief report ([`CheckReport::brief`]): the lengths of `expired`,
    /// `critical` and `warning` before they were cut to their first certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totals: Option<CheckTotals>,
}

/// How many certificates a brief [`CheckReport`] stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckTotals {
    pub expired: u64,
    pub critical: u64,
    pub warning: u64,
}

impl CheckReport {
    /// What the one-line summary needs: the counts and the first certificate of each list
    /// (`check` through certd without `--json` does not ship tens of thousands of records).
    pub fn brief(mut self) -> CheckReport {
        let totals = CheckTotals {
            expired: self.expired_total(),
            critical: self.critical_total(),
            warning: self.warning_total(),
        };
        self.expired.truncate(1);
        self.critical.truncate(1);
        self.warning.truncate(1);
        self.totals = Some(totals);
        self
    }

    /// Expired certificates, also in a brief report.
    pub fn expired_total(&self) -> u64 {
        self.totals
            .map_or(self.expired.len() as u64, |t| t.expired)
    }

    /// Certificates within the critical window, also in a brief report.
    pub fn critical_total(&self) -> u64 {
        self.totals
            .map_or(self.critical.len() as u64, |t| t.critical)
    }

    /// Certificates within the warning window, also in a brief report.
    pub fn warning_total(&self) -> u64 {
        self.totals
            .map_or(self.warning.len() as u64, |t| t.warning)
    }

    /// The one-line summary printed by `certctl check`.
    pub fn summary(&self, now: UnixTime) -> String {
        let first = |certs: &[Certificate]| {
            certs
                .first()
                .map(|c| {
                    let days = c.days_left(now);
                    let when = if days < 0 {
                        format!("expired {} days ago", -days)
                    } else {
                        format!("{days} days left")
                    };
                    format!(" (first: {}, {when})", c.facts.display_name())
                })
                .unwrap_or_default()
        };
        match self.verdict {
            Verdict::Ok => format!(
                "OK: {} certificates, none expiring within {}",
                self.considered, self.warn
            ),
            Verdict::Critical => {
                // The first urgent one: the first expired, else the first critical.
                let urgent = if self.expired.is_empty() {
                    &self.critical
                } else {
                    &self.expired
                };
                format!(
                    "CRITICAL: {} expired, {} expiring within {}, {} within {}{}",
                    self.expired_total(),
                    self.critical_total(),
                    self.critical_within,
                    self.warning_total(),
                    self.warn,
                    first(urgent)
                )
            }
            Verdict::Warning => format!(
                "WARNING: {} certificates expire within {}{}",
                self.warning_total(),
                self.warn,
                first(&self.warning)
            ),
        }
    }
}

/// `certctl check`: expired or within `critical` → critical; within `warn` → warning.
///
/// Considers certificates still present in at least one source, not revoked, and not
/// ephemeral (ephemeral agent certificates expire by design every few hours).
pub fn check(
    store: &Store,
    warn: Duration,
    critical: Duration,
    now: UnixTime,
) -> Result<CheckReport, QueryError> {
    let mut report = CheckReport {
        verdict: Verdict::Ok,
        considered: 0,
        expired: Vec::new(),
        critical: Vec::new(),
        warning: Vec::new(),
        warn,
        critical_within: critical,
        totals: None,
    };
    let horizon = now.saturating_add(warn.as_secs().max(critical.as_secs()));
    for cert in store.iter() {
        let cert = cert?;
        if !counts_for_check(&cert) {
            continue;
        }
        report.considered += 1;
        let not_after = cert.facts.not_after;
        if not_after > horizon {
            continue;
        }
        if not_after <= now {
            report.expired.push(cert);
        } else if not_after <= now + critical.as_secs() {
            report.critical.push(cert);
        } else if not_after <= now + warn.as_secs() {
            report.warning.push(cert);
        }
    }
    for v in [
        &mut report.expired,
        &mut report.critical,
        &mut report.warning,
    ] {
        v.sort_by_key(|c| c.facts.not_after);
    }
    report.verdict = if !report.expired.is_empty() || !report.critical.is_empty() {
        Verdict::Critical
    } else if !report.warning.is_empty() {
        Verdict::Warning
    } else {
        Verdict::Ok
    };
    Ok(report)
}

/// Whether a certificate takes part in `check` and the demo's "needs attention".
pub fn counts_for_check(cert: &Certificate) -> bool {
    cert.revocation.is_none()
        && cert.current_sources().next().is_some()
        && cert.credential_kind() != Some(CredentialKind::Ephemeral)
}
