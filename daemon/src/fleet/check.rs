//! `certctl check`: one verdict for monitoring (ok, warning, critical) over the whole
//! inventory: certificates by policy or by the default thresholds, stalled agent renewals,
//! failing automatic renewals, endpoints serving revoked certificates, files that could not
//! be read, expiring CRLs and a stale backup. It answers from the store's counts and indexes
//! (never by reading every record) and asks the capabilities that own each finding.

use certctl_store::{Certificate, CredentialKind, Role, Store, StoreError, UnixTime};
use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::fleet::stalled::{stalled_renewals, StalledRenewal};
use crate::inventory::query::{failed_files, QueryError};

/// The verdict of `certctl check`, for monitoring systems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Nothing to act on: exit 0, `"ok"` in `check --json`.
    Ok,
    /// Something needs attention soon (a certificate within `--warn`, a failed file, a
    /// stale backup, ...): exit 1, `"warning"` in `check --json`.
    Warning,
    /// Something is broken or about to be (a certificate expired or within `--critical`, a
    /// stalled agent, a stale CRL, ...): exit 2, `"critical"` in `check --json`.
    Critical,
}

impl Verdict {
    /// `OK`, `WARNING`, `CRITICAL`: how monitoring systems spell it.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Warning => "WARNING",
            Verdict::Critical => "CRITICAL",
        }
    }
}

/// What `certctl check` found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckReport {
    /// The worst of all findings below: `verdict` in `check --json`, and the exit code.
    pub verdict: Verdict,
    /// Certificates considered (present somewhere, not revoked, not ephemeral).
    pub considered: u64,
    /// Considered certificates whose `not_after` has passed, soonest-expiring first:
    /// `expired` in `check --json`. Only the first in a brief report (see `totals`).
    pub expired: Vec<Certificate>,
    /// Considered certificates expiring within `critical_within` (or their policy's
    /// `critical`), soonest first: `critical` in `check --json`. Only the first when brief.
    pub critical: Vec<Certificate>,
    /// Considered certificates expiring within `warn` (or their policy's `warn`) but not
    /// within the critical window, soonest first: `warning` in `check --json`. Only the
    /// first when brief.
    pub warning: Vec<Certificate>,
    /// The warning window `--warn` (default 30d) used for certificates no policy judges.
    pub warn: Duration,
    /// The critical window `--critical` (default 7d) used for certificates no policy
    /// judges; also the window in which a failing automatic renewal becomes critical.
    pub critical_within: Duration,
    /// Set in a brief report ([`CheckReport::brief`]): the lengths of `expired`,
    /// `critical` and `warning` before they were cut to their first certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totals: Option<CheckTotals>,
    /// What the last probe of each endpoint found wrong (unreachable, untrusted chain, an
    /// expired or unexpected certificate served, ...): critical kinds make the verdict
    /// critical, the others a warning.
    #[serde(default)]
    pub findings: Vec<CheckFinding>,
    /// Considered certificates whose validity has not begun (a clock skew, or a
    /// certificate deployed too early): a warning.
    #[serde(default)]
    pub not_yet_valid: u64,
    /// Managed CAs whose published CRL does not list every certificate the store holds as
    /// revoked (a publish that failed): critical, since relying parties still accept them.
    #[serde(default)]
    pub stale_crls: Vec<String>,
    /// Managed CAs whose published CRL expires within a day (warning) or has expired
    /// (critical: relying parties refuse every certificate of that CA).
    #[serde(default)]
    pub crls_expiring: Vec<CrlExpiry>,
    /// Scanned files whose last read failed (their certificates cannot be seen): a warning.
    /// At most `crate::inventory::query::FAILED_FILES_LISTED` as `PATH: CAUSE`; `failed_files_total` counts all.
    #[serde(default)]
    pub failed_files: Vec<String>,
    /// How many scanned files failed their last read, all of them (`failed_files` lists at
    /// most the first few): `failed_files_total` in `check --json`.
    #[serde(default)]
    pub failed_files_total: u64,
    /// Agents whose newest ephemeral credential expired more than its grace ago
    /// (`crate::fleet::stalled`): critical. Only the first in a brief report;
    /// `stalled_renewals_total` counts all.
    #[serde(default)]
    pub stalled_renewals: Vec<StalledRenewal>,
    /// How many agents' renewals are stalled, all of them (also in a brief report):
    /// `stalled_renewals_total` in `check --json`, `stalled=N` in the performance data.
    #[serde(default)]
    pub stalled_renewals_total: u64,
    /// `[backup]` is configured and its newest good backup is older than `warn_after` (or
    /// there is none): a warning, saying which folder and since when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_backup: Option<String>,
    /// Automatic renewals whose last attempt failed (`crate::pki::renewal`): a warning, critical
    /// once the certificate is within `critical_within` of its expiry.
    #[serde(default)]
    pub failing_renewals: Vec<FailingRenewalCheck>,
}

/// A failing automatic renewal, as `check` reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailingRenewalCheck {
    /// The certificate whose automatic renewal fails (SHA-256).
    pub fingerprint: certctl_store::Fingerprint,
    /// Its display name (subject CN, else the first SAN, else the subject DN).
    pub name: String,
    /// When it expires (Unix seconds).
    pub not_after: UnixTime,
    /// Whether the certificate is within the critical window.
    pub critical: bool,
    /// "automatic renewal failed N times since D: CAUSE".
    pub detail: String,
}

/// A managed CA's CRL close to (or past) its nextUpdate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrlExpiry {
    /// The managed CA's name (`ca init NAME`).
    pub ca: String,
    /// Its published CRL's nextUpdate (Unix seconds; `check --json` adds `next_update_at`,
    /// RFC 3339), past when the CRL has expired.
    pub next_update: UnixTime,
}

/// An endpoint finding as `check` counts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckFinding {
    /// `host:port`.
    pub endpoint: String,
    /// What is wrong (`unreachable`, `chain-untrusted`, `serving-revoked`, ...).
    pub kind: certctl_store::FindingKind,
    /// A sentence with the particulars, as the probe recorded it.
    pub detail: String,
    /// Whether this kind makes the verdict critical (else it is a warning).
    pub critical: bool,
}

/// How many certificates a brief [`CheckReport`] stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckTotals {
    /// All expired considered certificates (`expired=N` in the performance data).
    pub expired: u64,
    /// All certificates within the critical window (`expiring_crit=N`).
    pub critical: u64,
    /// All certificates within the warning window only (`expiring_warn=N`).
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
        self.stalled_renewals.truncate(1);
        self.totals = Some(totals);
        self
    }

    /// Expired certificates, also in a brief report.
    pub fn expired_total(&self) -> u64 {
        self.totals.map_or(self.expired.len() as u64, |t| t.expired)
    }

    /// Certificates within the critical window, also in a brief report.
    pub fn critical_total(&self) -> u64 {
        self.totals
            .map_or(self.critical.len() as u64, |t| t.critical)
    }

    /// Certificates within the warning window, also in a brief report.
    pub fn warning_total(&self) -> u64 {
        self.totals.map_or(self.warning.len() as u64, |t| t.warning)
    }

    /// The one-line summary printed by `certctl check`, with Nagios performance data after
    /// `|` (`expired=N expiring_crit=N expiring_warn=N findings=N not_yet_valid=N
    /// failed_files=N stalled=N`).
    pub fn summary(&self, now: UnixTime) -> String {
        let mut line = self.verdict_line(now);
        let critical_findings = self.findings.iter().filter(|f| f.critical).count();
        if let Some(f) = self
            .findings
            .iter()
            .find(|f| f.critical)
            .or(self.findings.first())
        {
            let kinds: std::collections::BTreeSet<&str> =
                self.findings.iter().map(|f| f.kind.as_str()).collect();
            line.push_str(&format!(
                "; {} endpoint findings, {critical_findings} critical: {} (first: tls://{} {})",
                self.findings.len(),
                kinds.into_iter().collect::<Vec<_>>().join(", "),
                f.endpoint,
                f.kind
            ));
        }
        if self.not_yet_valid > 0 {
            line.push_str(&format!(
                "; {} certificates not yet valid (clock skew?)",
                self.not_yet_valid
            ));
        }
        if let Some(first) = self.failed_files.first() {
            line.push_str(&format!(
                "; {} files could not be read (first: {})",
                self.failed_files_total,
                crate::inventory::view::printable(first)
            ));
        }
        if let Some(first) = self.stalled_renewals.first() {
            line.push_str(&format!(
                "; {} stalled renewals (first: agent {}, newest credential expired {}, grace {})",
                self.stalled_renewals_total,
                crate::inventory::view::printable(&first.agent),
                certctl_store::rfc3339(first.not_after),
                first.grace
            ));
        }
        if let Some(backup) = &self.stale_backup {
            line.push_str(&format!("; {backup}"));
        }
        if let Some(first) = self.failing_renewals.first() {
            line.push_str(&format!(
                "; {} automatic renewals failing (first: {}, {})",
                self.failing_renewals.len(),
                crate::inventory::view::printable(&first.name),
                crate::inventory::view::printable(&first.detail)
            ));
        }
        for ca in &self.stale_crls {
            line.push_str(&format!(
                "; the published CRL of CA `{ca}` is behind the store (run `certctl ca crl {ca}`)"
            ));
        }
        for e in &self.crls_expiring {
            let verb = if e.next_update <= now {
                "expired"
            } else {
                "expires"
            };
            line.push_str(&format!(
                "; the CRL of CA `{}` {verb} {} (certd re-signs it; else run `certctl ca crl {}`)",
                e.ca,
                certctl_store::rfc3339(e.next_update),
                e.ca
            ));
        }
        format!(
            "{line} | expired={} expiring_crit={} expiring_warn={} findings={} not_yet_valid={} failed_files={} stalled={}",
            self.expired_total(),
            self.critical_total(),
            self.warning_total(),
            self.findings.len(),
            self.not_yet_valid,
            self.failed_files_total,
            self.stalled_renewals_total
        )
    }

    /// Adds the automatic renewals that keep failing: a warning, critical for a certificate
    /// within `critical_within` of its expiry.
    pub fn with_renewals(
        mut self,
        store: &Store,
        now: UnixTime,
    ) -> Result<CheckReport, StoreError> {
        let critical_secs = self.critical_within.as_secs();
        for (fp, failing) in crate::pki::renewal::failing(store)? {
            let Some(cert) = store.get(&fp)? else {
                continue;
            };
            let critical = cert.facts.not_after - now <= critical_secs;
            if critical {
                self.verdict = Verdict::Critical;
            } else if self.verdict == Verdict::Ok {
                self.verdict = Verdict::Warning;
            }
            self.failing_renewals.push(FailingRenewalCheck {
                fingerprint: fp,
                name: cert.facts.display_name().to_string(),
                not_after: cert.facts.not_after,
                critical,
                detail: failing.sentence(),
            });
        }
        self.failing_renewals
            .sort_by_key(|f| (!f.critical, f.not_after));
        Ok(self)
    }

    /// Adds the managed CAs whose published CRL is behind the store (critical), and those
    /// whose CRL expires within a day (warning) or has expired (critical).
    pub fn with_crls(
        mut self,
        stale: Vec<String>,
        expiring: Vec<CrlExpiry>,
        now: UnixTime,
    ) -> CheckReport {
        if !stale.is_empty() || expiring.iter().any(|e| e.next_update <= now) {
            self.verdict = Verdict::Critical;
        } else if !expiring.is_empty() && self.verdict == Verdict::Ok {
            self.verdict = Verdict::Warning;
        }
        self.stale_crls = stale;
        self.crls_expiring = expiring;
        self
    }

    /// Adds `[backup]`'s warning ([`crate::backup::stale_warning`]), if any.
    pub fn with_backup(mut self, warning: Option<String>) -> CheckReport {
        if warning.is_some() && self.verdict == Verdict::Ok {
            self.verdict = Verdict::Warning;
        }
        self.stale_backup = warning;
        self
    }

    /// The verdict and the certificates behind it, in words.
    fn verdict_line(&self, now: UnixTime) -> String {
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
            // Only findings, not-yet-valid certificates or a stale CRL made it worse than OK.
            _ if self.expired_total() + self.critical_total() + self.warning_total() == 0 => {
                format!(
                    "{}: {} certificates, none expiring within {}",
                    self.verdict.label(),
                    self.considered,
                    self.warn
                )
            }
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
    role: Option<Role>,
    now: UnixTime,
) -> Result<CheckReport, QueryError> {
    check_with(store, warn, critical, role, None, now, false)
}

/// [`check`] as [`CheckReport::brief`] gives it, without holding every certificate of the
/// three lists while the store is read (one pass over a million records otherwise keeps
/// tens of thousands of them).
pub(crate) fn check_brief(
    store: &Store,
    warn: Duration,
    critical: Duration,
    role: Option<Role>,
    now: UnixTime,
) -> Result<CheckReport, QueryError> {
    check_with(store, warn, critical, role, None, now, true)
}

/// [`check`] (or, `brief`, [`check_brief`]) where each certificate a policy of `policies`
/// matches is judged by that policy's `warn` and `critical`; the others by `warn` and
/// `critical`.
pub(crate) fn check_by_policies(
    store: &Store,
    warn: Duration,
    critical: Duration,
    role: Option<Role>,
    policies: &crate::policy::PolicySet,
    now: UnixTime,
    brief: bool,
) -> Result<CheckReport, QueryError> {
    check_with(store, warn, critical, role, Some(policies), now, brief)
}

fn check_with(
    store: &Store,
    warn: Duration,
    critical: Duration,
    role: Option<Role>,
    policies: Option<&crate::policy::PolicySet>,
    now: UnixTime,
    brief: bool,
) -> Result<CheckReport, QueryError> {
    let mut report = empty_report(warn, critical);
    report.considered = considered(store, role)?;
    report.not_yet_valid = store.check_not_yet_valid(now, role)?;
    let totals = sort_by_expiry(store, &mut report, role, policies, now, brief)?;
    if brief {
        report.totals = Some(totals);
    }
    report.findings = endpoint_findings(store, role)?;
    // Files that failed: what they hold cannot be judged (role filters do not apply: a
    // file's role is unknown until it is read).
    (report.failed_files, report.failed_files_total) = failed_files(store)?;
    // Agents that stopped renewing their ephemeral credentials (those are not counted
    // above: they expire by design).
    if role.is_none_or(|r| r == Role::Agent) {
        report.stalled_renewals = stalled_renewals(store, policies, now)?;
        report.stalled_renewals_total = report.stalled_renewals.len() as u64;
        if brief {
            report.stalled_renewals.truncate(1);
        }
    }
    report.verdict = verdict_of(&report);
    Ok(report)
}

/// A report with nothing in it yet, for the default thresholds.
fn empty_report(warn: Duration, critical: Duration) -> CheckReport {
    CheckReport {
        verdict: Verdict::Ok,
        considered: 0,
        expired: Vec::new(),
        critical: Vec::new(),
        warning: Vec::new(),
        warn,
        critical_within: critical,
        totals: None,
        findings: Vec::new(),
        not_yet_valid: 0,
        stale_crls: Vec::new(),
        crls_expiring: Vec::new(),
        failed_files: Vec::new(),
        failed_files_total: 0,
        stalled_renewals: Vec::new(),
        stalled_renewals_total: 0,
        stale_backup: None,
        failing_renewals: Vec::new(),
    }
}

/// Sorts the certificates within the longest window into expired, critical and warning
/// (by their own policy's thresholds when policies are given, else the report's); a brief
/// report keeps only the first of each list. Returns the counts.
fn sort_by_expiry(
    store: &Store,
    report: &mut CheckReport,
    role: Option<Role>,
    policies: Option<&crate::policy::PolicySet>,
    now: UnixTime,
    brief: bool,
) -> Result<CheckTotals, QueryError> {
    // Nothing beyond the longest window can be listed: read the considered certificates
    // up to it from the store's check entries (sorted by not_after, then fingerprint).
    let (warn, critical) = (report.warn, report.critical_within);
    let mut longest = warn.as_secs().max(critical.as_secs());
    if let Some(set) = policies {
        for p in &set.policies {
            longest = longest.max(p.warn.as_secs()).max(p.critical.as_secs());
        }
    }
    let horizon = now.saturating_add(longest);
    let mut totals = CheckTotals {
        expired: 0,
        critical: 0,
        warning: 0,
    };
    let read = |fp: &certctl_store::Fingerprint| -> Result<Certificate, QueryError> {
        store
            .get(fp)?
            .ok_or_else(|| QueryError::NotFound(fp.to_hex()))
    };
    for entry in store.check_entries(horizon)? {
        if role.is_some_and(|r| entry.role != r) {
            continue;
        }
        let not_after = entry.not_after;
        // Its own policy's thresholds, when policies are given and one matches.
        let mut cert = None;
        let (warn_secs, critical_secs) = match policies {
            Some(set) => {
                let c = read(&entry.fingerprint)?;
                let thresholds = match set.select(&c) {
                    Some(p) => (p.warn.as_secs(), p.critical.as_secs()),
                    None => (warn.as_secs(), critical.as_secs()),
                };
                cert = Some(c);
                thresholds
            }
            None => (warn.as_secs(), critical.as_secs()),
        };
        let (list, total) = if not_after <= now {
            (&mut report.expired, &mut totals.expired)
        } else if not_after <= now.saturating_add(critical_secs) {
            (&mut report.critical, &mut totals.critical)
        } else if not_after <= now.saturating_add(warn_secs) {
            (&mut report.warning, &mut totals.warning)
        } else {
            continue;
        };
        *total += 1;
        // Entries come sorted: a brief report keeps the first of each list.
        if !brief || list.is_empty() {
            let cert = match cert {
                Some(c) => c,
                None => read(&entry.fingerprint)?,
            };
            list.push(cert);
        }
    }
    Ok(totals)
}

/// The findings of the probed endpoints (of `role`), with `serving-revoked` added.
fn endpoint_findings(store: &Store, role: Option<Role>) -> Result<Vec<CheckFinding>, QueryError> {
    let mut findings = Vec::new();
    for mut endpoint in store.endpoints()? {
        if role.is_some_and(|r| endpoint.role != Some(r)) {
            continue;
        }
        if let Some(f) = crate::fleet::reports::serving_revoked(store, &endpoint)? {
            endpoint.findings.push(f);
        }
        for f in endpoint.findings {
            findings.push(CheckFinding {
                endpoint: endpoint.address.clone(),
                critical: f.kind.is_critical(),
                kind: f.kind,
                detail: f.detail,
            });
        }
    }
    Ok(findings)
}

/// Critical for anything expired, critical or stalled, warning for anything else listed.
fn verdict_of(report: &CheckReport) -> Verdict {
    let critical_finding = report.findings.iter().any(|f| f.critical);
    if !report.expired.is_empty()
        || !report.critical.is_empty()
        || critical_finding
        || report.stalled_renewals_total > 0
    {
        Verdict::Critical
    } else if !report.warning.is_empty()
        || !report.findings.is_empty()
        || report.not_yet_valid > 0
        || report.failed_files_total > 0
    {
        Verdict::Warning
    } else {
        Verdict::Ok
    }
}

/// How many certificates `check` considers (of one role), from the store's counts.
fn considered(store: &Store, role: Option<Role>) -> Result<u64, StoreError> {
    let counts = store.class_counts()?;
    Ok(counts
        .keys
        .iter()
        .filter(|((class, revoked, _), _)| {
            !revoked
                && class.present
                && class.kind != Some(CredentialKind::Ephemeral)
                && role.is_none_or(|r| class.role == r)
        })
        .map(|(_, n)| n)
        .sum())
}

/// Whether a certificate takes part in `check` and the demo's "needs attention".
pub fn counts_for_check(cert: &Certificate) -> bool {
    cert.revocation.is_none()
        && cert.current_sources().next().is_some()
        && cert.credential_kind() != Some(CredentialKind::Ephemeral)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::query::tests::{facts, store_with_file_states};
    use crate::inventory::query::{stats, stats_by_reading_all};
    use certctl_store::{Sha256, SourceLocation};

    #[test]
    fn a_brief_check_has_the_same_summary() {
        let now = 1_795_000_000;
        let (_dir, store) = store_with_file_states(now);
        let full = check(&store, Duration::days(30), Duration::days(7), None, now).expect("check");
        assert!(full.expired.len() > 1 && full.critical.len() > 1 && full.warning.len() > 1);
        let brief = full.clone().brief();
        assert_eq!(brief.summary(now), full.summary(now));
        let direct =
            check_brief(&store, Duration::days(30), Duration::days(7), None, now).expect("check");
        assert_eq!(direct.summary(now), full.summary(now));
        assert_eq!(direct.totals, brief.totals);
        for (a, b) in [
            (&direct.expired, &brief.expired),
            (&direct.critical, &brief.critical),
            (&direct.warning, &brief.warning),
        ] {
            assert_eq!(a.len(), 1);
            assert!(a[0] == b[0]);
        }
        assert_eq!(brief.expired.len(), 1);
        assert_eq!(brief.expired_total(), full.expired.len() as u64);
        // Through the wire too.
        let wire: CheckReport =
            serde_json::from_str(&serde_json::to_string(&brief).expect("json")).expect("read");
        assert_eq!(wire.summary(now), full.summary(now));
    }

    /// A small deterministic generator (no dependency for one test).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// `check` as it was answered before the counts: every record read.
    fn check_by_reading_all(
        store: &Store,
        warn: Duration,
        critical: Duration,
        role: Option<Role>,
        now: UnixTime,
    ) -> (u64, u64, [Vec<certctl_store::Fingerprint>; 3]) {
        let (mut considered, mut nyv) = (0, 0);
        let mut lists: [Vec<(UnixTime, certctl_store::Fingerprint)>; 3] = Default::default();
        for cert in store.iter() {
            let cert = cert.expect("record");
            if !counts_for_check(&cert) || role.is_some_and(|r| cert.role != r) {
                continue;
            }
            considered += 1;
            if cert.facts.not_before > now {
                nyv += 1;
            }
            let na = cert.facts.not_after;
            let list = if na <= now {
                0
            } else if na <= now + critical.as_secs() {
                1
            } else if na <= now + warn.as_secs() {
                2
            } else {
                continue;
            };
            lists[list].push((na, cert.facts.fingerprint));
        }
        let lists = lists.map(|mut l| {
            l.sort();
            l.into_iter().map(|(_, fp)| fp).collect()
        });
        (considered, nyv, lists)
    }

    #[test]
    fn counts_answer_as_a_full_read_does_through_changes_and_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_with_cache(dir.path(), 16 << 20).expect("store");
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let start = 1_795_000_000;
        let hour = 3_600;
        let roles = Role::ALL;
        let mut known: Vec<u32> = Vec::new();
        let mut t = start;
        for round in 0..12u32 {
            let mut ingest = store.ingest();
            for _ in 0..150 {
                let i = (rng.next() as u32) & 0xffff;
                // Validity: ephemeral (hours), long-lived, future-dated or inverted.
                let na = t + rng.below(60 * 86_400) as i64 - 20 * 86_400;
                let mut f = facts(i, na);
                f.not_before = match rng.below(10) {
                    0 => na + 3_600,                           // inverted
                    1 => t + rng.below(3 * 86_400) as i64,     // may begin later
                    2..=5 => na - rng.below(20) as i64 * hour, // ephemeral
                    _ => na - 200 * 86_400,
                };
                f.is_ca = rng.below(15) == 0;
                if rng.below(4) == 0 {
                    f.key = certctl_store::KeyAlgorithm::Rsa { bits: 2048 };
                }
                let role = roles[rng.below(roles.len() as u64) as usize];
                let path = format!("/srv/d{}/c{}.pem", i % 7, rng.below(400));
                ingest
                    .observe(f, Some(role), SourceLocation::File { path, index: 0 }, t)
                    .expect("observe");
                known.push(i);
            }
            ingest.commit().expect("commit");
            // Some go away, some are revoked, some change role.
            let mut ingest = store.ingest();
            for _ in 0..40 {
                let i = known[rng.below(known.len() as u64) as usize];
                let mut fp = [0u8; 32];
                fp[..4].copy_from_slice(&i.to_be_bytes());
                fp[31] = 0xaa;
                let fp = Sha256(fp);
                let Some(mut cert) = store.get(&fp).expect("get") else {
                    continue;
                };
                match rng.below(3) {
                    0 => {
                        let location = cert.sources[0].location.clone();
                        ingest.mark_gone(&fp, &location, t).expect("gone");
                    }
                    1 => {
                        cert.revocation = Some(certctl_store::Revocation {
                            revoked_at: t,
                            reason: certctl_store::RevocationReason::KeyCompromise,
                            revoked_by: "test".into(),
                        });
                        ingest.replace(cert).expect("replace");
                    }
                    _ => {
                        cert.role = roles[rng.below(roles.len() as u64) as usize];
                        ingest.replace(cert).expect("replace");
                    }
                }
            }
            ingest.commit().expect("commit");
            // Time moves across thresholds: check at several moments of the round.
            for step in [0, 1, 59, 3_601, 86_400 + 7, 9 * 86_400] {
                let now = t + step;
                assert_eq!(
                    stats(&store, now).expect("stats"),
                    stats_by_reading_all(&store, now).expect("stats"),
                    "stats at round {round}, +{step}s"
                );
                for role in [None, Some(Role::Agent), Some(Role::Gateway)] {
                    let (warn, critical) = (Duration::days(30), Duration::days(7));
                    let (considered, nyv, lists) =
                        check_by_reading_all(&store, warn, critical, role, now);
                    let got = check(&store, warn, critical, role, now).expect("check");
                    assert_eq!(got.considered, considered);
                    assert_eq!(got.not_yet_valid, nyv);
                    let fps = |l: &[Certificate]| {
                        l.iter().map(|c| c.facts.fingerprint).collect::<Vec<_>>()
                    };
                    assert_eq!(fps(&got.expired), lists[0]);
                    assert_eq!(fps(&got.critical), lists[1]);
                    assert_eq!(fps(&got.warning), lists[2]);
                    let brief = check_brief(&store, warn, critical, role, now).expect("brief");
                    assert_eq!(brief.summary(now), got.summary(now));
                }
            }
            t += 6 * hour + rng.below(hour as u64) as i64;
        }
        // (Random paths put two certificates in one file at once, which verify also reports;
        // only the counts matter here.)
        let v = store.verify().expect("verify");
        let counts: Vec<&String> = v.problems.iter().filter(|p| p.contains("count")).collect();
        assert!(counts.is_empty(), "{counts:?}");
        assert_eq!(store.len() as u64, store.iter().count() as u64);
    }

    /// `check` at the steady state (issue 16): the agents' ephemeral credentials are not
    /// considered and none is stalled, so no record is read at all (the counts and the
    /// live index's expiry order answer).
    #[test]
    fn check_reads_no_record_of_a_renewing_fleet() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, t) =
            crate::fleet::agents::tests::renewing_fleet(&dir.path().join("store"), 40, 4);
        let before = store.records_read();
        let report = check(
            &store,
            crate::duration::Duration::days(30),
            crate::duration::Duration::days(7),
            None,
            t,
        )
        .expect("check");
        assert_eq!(store.records_read() - before, 0, "records read by check");
        assert_eq!(report.considered, 0);
        assert_eq!(report.stalled_renewals_total, 0);
    }
}
