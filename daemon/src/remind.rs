//! The reminder pass: who must be told about which certificate, the digest e-mails, and
//! their delivery over SMTP (lettre).
//!
//! A pass ([`run_pass`]) works from the store and the policies at an injected time `now`:
//!
//! 1. **Due** ([`due`]): for each certificate that is present somewhere, not revoked, not
//!    renewed ([`policy::Successors`]: same CA key, names covered, deployed where it was,
//!    served nowhere any more), and matched by a
//!    policy, the most urgent threshold it has crossed ([`policy::Policy::crossed`]). It
//!    is due for a recipient unless that recipient was already told about that threshold or
//!    a more urgent one (the store keeps every sent (certificate, threshold, recipient)).
//!    Crossing several thresholds between two passes gives one reminder. Snoozed
//!    certificates are skipped until the snooze ends, except once expired. With
//!    `renewal_expected` the policy stays quiet until renewal is overdue. An expired
//!    ephemeral agent credential is due only as a **stalled renewal**
//!    ([`crate::stalled::stalled_renewals`]): the newest credential of its agent, expired more than
//!    the grace ago, reminded once at the expiry threshold.
//!    **Tracked artifacts** (`certctl track`: enrollment bundles, ...) are due the same way
//!    under the artifact policy that applies to them ([`PolicySet::select_artifact`]), with
//!    their own sent records (once per (artifact, threshold, recipient)). A bundle replaced
//!    by a new file at the same path is no longer in the store, so it is quiet; artifacts
//!    cannot be snoozed.
//! 2. **Digests**: one e-mail per recipient, grouped expired / critical / warn, each entry
//!    with subject, role, sources, days left and the `certctl show` command (a tracked
//!    artifact: its kind, file path, days left and `certctl list --name PATH`); plain text
//!    with an HTML alternative.
//! 3. **Delivery** ([`SmtpMailer`]): one SMTP session per digest, one digest at a time. As
//!    soon as the server answers `250` to a digest, its reminders are recorded (one atomic
//!    batch, flushed to disk) — before the session is closed and before the next digest —
//!    so a restart or a later pass re-sends nothing. A digest the server does not take
//!    stays pending: the recipient's attempt count and next attempt (backoff from 1
//!    minute, doubling, at most 6 hours) and the error (server, recipient, cause) are
//!    stored; the pass goes on with the next recipient; a scheduled pass skips the
//!    recipient until its next attempt, an explicit `certctl remind --now` retries at once.
//!    Nothing is recorded as sent unless the server accepted it.
//!
//!    Each session is bounded ([`crate::smtp_client`]: reply sizes, one deadline of
//!    [`crate::smtp_client::DEADLINE_FACTOR`] × `smtp.timeout`), and in certd no store lock
//!    is held while it runs ([`run_pass_locked`]): the writer lock is taken to read what is
//!    due and to record each outcome, so scans go on while a mail server is slow.
//!
//!    **The one window for a duplicate** is inherent to SMTP: when the connection breaks
//!    (or times out) after the whole message was sent but before the server's `250`, the
//!    server may or may not have kept it, and certctl cannot tell. It treats the digest as
//!    not delivered (never lose a reminder) and says so ([`SendFailure::maybe_delivered`],
//!    "the server may have accepted it"); the retry carries the same `Message-ID`
//!    ([`Digest::message_id`], derived from the recipient and the (fingerprint, threshold)
//!    pairs only), so a mail store or client that de-duplicates by Message-ID keeps one
//!    copy. Delivery is therefore at-least-once, and exactly-once counted by Message-ID.
//!    (A crash of certctl between the `250` and the flushed record is the same window,
//!    made as small as it can be.)

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use certctl_store::{
    rfc3339, AuditEvent, Certificate, CredentialKind, DeliveryOutcome, DeliveryState, Fingerprint,
    Role, SentReminder, Snooze, Store, StoreError, TrackedArtifact, UnixTime,
};
use serde::{Deserialize, Serialize};

use crate::config::{self, Config, ConfigError, SmtpConfig, SmtpSecurity};
use crate::policy::{self, PolicyError, PolicySet, Successors};
use crate::query::{self, QueryError};
use crate::smtp_client::{Session, SmtpError};

/// First retry delay after a failed delivery; it doubles with each failure.
pub const BACKOFF_FIRST_SECS: i64 = 60;
/// Longest retry delay.
pub const BACKOFF_MAX_SECS: i64 = 6 * 3600;
/// The environment variable that holds the SMTP password (it wins over `password_file`).
pub const PASSWORD_ENV: &str = "CERTCTL_SMTP_PASSWORD";
/// The right-hand side of Message-IDs when `smtp.from` has no domain.
pub const DEFAULT_MESSAGE_ID_DOMAIN: &str = "certctl.invalid";

/// Why a pass could not run.
#[derive(Debug, thiserror::Error)]
pub enum RemindError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Policies(#[from] PolicyError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{}: no [reminders] section, so no policies folder: add one, or give --policies DIR", .0.display())]
    NoPolicies(PathBuf),
    #[error("reminders need certd's configuration (its [smtp] and [reminders]): give --config FILE, or --policies DIR with --dry-run")]
    NoConfig,
    #[error("{}: no [smtp] section and no [[webhook]]: reminders cannot be sent (--dry-run shows what would be sent)", .0.display())]
    NoSmtp(PathBuf),
}

/// Why a certificate or tracked artifact could not be snoozed.
#[derive(Debug, thiserror::Error)]
pub enum SnoozeError {
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

/// The digest groups, most urgent first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Urgency {
    Expired,
    Critical,
    Warn,
}

impl Urgency {
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::Expired => "expired",
            Urgency::Critical => "critical",
            Urgency::Warn => "warn",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Urgency::Expired => "EXPIRED",
            Urgency::Critical => "CRITICAL",
            Urgency::Warn => "WARNING",
        }
    }
}

/// One reminder: a certificate (or tracked artifact) that crossed a threshold, for one
/// recipient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// SHA-256, lowercase hex (a tracked artifact: its id, the SHA-256 of the file).
    pub fingerprint: String,
    /// Subject CN, else first SAN, else the DN (a tracked artifact: its name).
    pub name: String,
    /// The subject DN (a tracked artifact: `KIND PATH`).
    pub subject: String,
    /// `None` for a tracked artifact.
    pub role: Option<Role>,
    pub credential_kind: Option<CredentialKind>,
    /// A tracked artifact's kind (`enrollment-bundle`, ...); `None` for a certificate.
    #[serde(default)]
    pub artifact_kind: Option<String>,
    /// A tracked artifact's file path; `None` for a certificate.
    #[serde(default)]
    pub path: Option<String>,
    /// Where it is deployed: `path#index` and `tls://host:port#index` (a tracked artifact:
    /// its path).
    pub sources: Vec<String>,
    pub not_after: UnixTime,
    pub days_left: i64,
    /// The threshold crossed, seconds before expiry (0 = expired), and its label (`30d`).
    pub threshold_secs: i64,
    pub threshold: String,
    pub urgency: Urgency,
    pub policy: String,
    /// `renewal stalled for N days` when the policy expects automatic renewal; `renewal
    /// stalled: newest credential of agent X expired at T` for a stalled agent
    /// ([`crate::stalled`]).
    pub note: Option<String>,
    /// Key rule violations.
    pub violations: Vec<String>,
}

impl Entry {
    /// The command that shows the certificate (a tracked artifact: `certctl list --name PATH`).
    pub fn command(&self) -> String {
        match &self.path {
            Some(path) if self.artifact_kind.is_some() => {
                format!("certctl list --name {}", shell_quote(path))
            }
            _ => format!("certctl show {}", self.fingerprint),
        }
    }

    /// Whether it is about a tracked artifact rather than a certificate.
    pub fn is_artifact(&self) -> bool {
        self.artifact_kind.is_some()
    }

    /// `gateway` (the role) or `enrollment-bundle` (the artifact kind).
    pub fn what(&self) -> String {
        match (&self.artifact_kind, self.role) {
            (Some(kind), _) => kind.clone(),
            (None, Some(role)) => role.to_string(),
            (None, None) => String::new(),
        }
    }

    /// See [`when`].
    pub fn when(&self, now: UnixTime) -> String {
        when(self.not_after, now)
    }
}

/// `s` as one shell word (single-quoted unless it is plain).
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@%=".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// `40 days left`, `expires in 5 hours`, `expired 3 hours ago`, `expired 2 days ago` (whole
/// units, rounded down).
pub fn when(not_after: UnixTime, now: UnixTime) -> String {
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    let left = not_after - now;
    if left <= 0 {
        let ago = -left;
        if ago < 3600 {
            "expired less than an hour ago".into()
        } else if ago < 86_400 {
            format!("expired {} ago", plural(ago / 3600, "hour"))
        } else {
            format!("expired {} ago", plural(ago / 86_400, "day"))
        }
    } else if left < 86_400 {
        format!("expires in {}", plural((left / 3600).max(1), "hour"))
    } else {
        format!("{} left", plural(left / 86_400, "day"))
    }
}

/// One recipient's e-mail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub recipient: String,
    /// Most urgent first, then soonest expiry.
    pub entries: Vec<Entry>,
}

impl Digest {
    /// The digest's `Message-ID`: `<certctl.HASH@DOMAIN>`, HASH derived from the recipient
    /// and every (certificate or artifact fingerprint, threshold) it reminds of, and nothing
    /// else (not the time, not the text). The same reminders to the same recipient always
    /// get the same Message-ID, so when a delivery is retried after the connection broke
    /// between sending the message and the server's `250` (it may have arrived: SMTP cannot
    /// tell), the second copy has the same Message-ID and a mail store or client that
    /// de-duplicates by Message-ID keeps one. A retry that holds more (a threshold crossed
    /// in the meantime) is a different message with a different Message-ID.
    pub fn message_id(&self, domain: &str) -> String {
        use sha2::Digest as _;
        let mut keys: Vec<(bool, &str, i64)> = self
            .entries
            .iter()
            .map(|e| (e.is_artifact(), e.fingerprint.as_str(), e.threshold_secs))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut h = sha2::Sha256::new();
        h.update(b"certctl reminder digest v1\n");
        h.update(self.recipient.to_lowercase().as_bytes());
        h.update(b"\n");
        for (artifact, fingerprint, threshold) in keys {
            let kind = if artifact { "artifact" } else { "certificate" };
            h.update(format!("{kind} {fingerprint} {threshold}\n").as_bytes());
        }
        let hash = hex::encode(h.finalize());
        format!("<certctl.{}@{domain}>", &hash[..32])
    }

    fn count(&self, u: Urgency) -> usize {
        self.entries.iter().filter(|e| e.urgency == u).count()
    }

    /// The mail's subject line: `[certctl] 3 certificates need attention (1 expired, 2
    /// warn)`, `[certctl] 1 certificate and 1 tracked file need attention (...)`.
    pub fn subject(&self) -> String {
        let parts: Vec<String> = [Urgency::Expired, Urgency::Critical, Urgency::Warn]
            .into_iter()
            .map(|u| (u, self.count(u)))
            .filter(|(_, n)| *n > 0)
            .map(|(u, n)| format!("{n} {}", u.as_str()))
            .collect();
        let files = self.entries.iter().filter(|e| e.is_artifact()).count();
        let certs = self.entries.len() - files;
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let what = match (certs, files) {
            (c, 0) => plural(c, "certificate", "certificates"),
            (0, f) => plural(f, "tracked file", "tracked files"),
            (c, f) => format!(
                "{} and {}",
                plural(c, "certificate", "certificates"),
                plural(f, "tracked file", "tracked files")
            ),
        };
        format!(
            "[certctl] {what} need{} attention ({})",
            if self.entries.len() == 1 { "s" } else { "" },
            parts.join(", ")
        )
    }

    /// The plain-text body (also what `remind --dry-run` prints). Names, subjects and
    /// paths come from certificates and files: shown through [`crate::view::printable`],
    /// so none can forge lines of the mail or drive a terminal.
    pub fn text(&self, now: UnixTime) -> String {
        use crate::view::Printable as P;
        let mut s = format!(
            "certctl reminder for {} ({} UTC)\n\n",
            P(&self.recipient),
            rfc3339(now)
        );
        for u in [Urgency::Expired, Urgency::Critical, Urgency::Warn] {
            let group: Vec<&Entry> = self.entries.iter().filter(|e| e.urgency == u).collect();
            if group.is_empty() {
                continue;
            }
            s.push_str(&format!("{} ({})\n", u.title(), group.len()));
            for e in group {
                s.push_str(&format!(
                    "\n  * {} ({}): {}, not after {}\n",
                    P(&e.name),
                    P(&e.what()),
                    P(&e.when(now)),
                    rfc3339(e.not_after)
                ));
                if let (Some(kind), Some(path)) = (&e.artifact_kind, &e.path) {
                    s.push_str(&format!("    artifact:  {} (tracked file)\n", P(kind)));
                    s.push_str(&format!("    file:      {}\n", P(path)));
                    s.push_str(&format!(
                        "    threshold: {} (policy {})\n",
                        P(&e.threshold),
                        P(&e.policy)
                    ));
                } else {
                    s.push_str(&format!("    subject:   {}\n", P(&e.subject)));
                    s.push_str(&format!(
                        "    threshold: {} (policy {})\n",
                        P(&e.threshold),
                        P(&e.policy)
                    ));
                    let sources = if e.sources.is_empty() {
                        "(none)".to_string()
                    } else {
                        e.sources.join(", ")
                    };
                    s.push_str(&format!("    deployed:  {}\n", P(&sources)));
                }
                if let Some(note) = &e.note {
                    s.push_str(&format!("    note:      {}\n", P(note)));
                }
                for v in &e.violations {
                    s.push_str(&format!("    policy:    {}\n", P(v)));
                }
                s.push_str(&format!("    inspect:   {}\n", P(&e.command())));
            }
            s.push('\n');
        }
        s.push_str("Each reminder is sent once per threshold. Silence one with `certctl snooze ID --until DATE --reason TEXT` (expired certificates are never silenced).\n");
        if self.entries.iter().any(Entry::is_artifact) {
            s.push_str("Tracked files cannot be snoozed: once replaced, track the new file (`certctl track FILE --kind KIND`) and the old one's reminders stop.\n");
        }
        s
    }

    /// The HTML alternative.
    pub fn html(&self, now: UnixTime) -> String {
        let mut s = format!(
            "<!DOCTYPE html>\n<html><body style=\"font-family: sans-serif\">\n<p>certctl reminder for {} ({} UTC)</p>\n",
            esc(&self.recipient),
            rfc3339(now)
        );
        for u in [Urgency::Expired, Urgency::Critical, Urgency::Warn] {
            let group: Vec<&Entry> = self.entries.iter().filter(|e| e.urgency == u).collect();
            if group.is_empty() {
                continue;
            }
            s.push_str(&format!(
                "<h2>{} ({})</h2>\n<table border=\"1\" cellpadding=\"4\" cellspacing=\"0\">\n<tr><th>certificate / file</th><th>role / kind</th><th>when</th><th>threshold</th><th>deployed</th><th>inspect</th></tr>\n",
                u.title(),
                group.len()
            ));
            for e in group {
                let mut notes = String::new();
                for n in e.note.iter().chain(&e.violations) {
                    notes.push_str(&format!("<br><em>{}</em>", esc(n)));
                }
                s.push_str(&format!(
                    "<tr><td><b>{}</b><br><small>{}</small>{notes}</td><td>{}</td><td>{}<br><small>{}</small></td><td>{} ({})</td><td>{}</td><td><code>{}</code></td></tr>\n",
                    esc(&e.name),
                    esc(&e.subject),
                    esc(&e.what()),
                    esc(&e.when(now)),
                    rfc3339(e.not_after),
                    esc(&e.threshold),
                    esc(&e.policy),
                    e.sources.iter().map(|s| esc(s)).collect::<Vec<_>>().join("<br>"),
                    esc(&e.command()),
                ));
            }
            s.push_str("</table>\n");
        }
        s.push_str("</body></html>\n");
        s
    }
}

/// HTML-escapes `s`, control characters first ([`crate::view::printable`]).
fn esc(s: &str) -> String {
    crate::view::html(s)
}

/// Whether `recipient` was already told about `threshold` or a more urgent one.
fn told(sent: &[SentReminder], recipient: &str, threshold: i64) -> bool {
    sent.iter()
        .any(|s| s.recipient == recipient && s.threshold_secs <= threshold)
}

/// The digest group of something expiring at `expires` under `policy`.
fn urgency(policy: &policy::Policy, expires: UnixTime, now: UnixTime) -> Urgency {
    let left = expires - now;
    if left <= 0 {
        Urgency::Expired
    } else if left <= policy.critical.as_secs() {
        Urgency::Critical
    } else {
        Urgency::Warn
    }
}

/// Every digest due at `now`, by recipient (sorted): certificates and tracked artifacts.
///
/// Two passes over the store, holding only what may be reminded about: the first picks the
/// certificates past a threshold, the second looks for a renewed successor of just those.
pub fn due(store: &Store, policies: &PolicySet, now: UnixTime) -> Result<Vec<Digest>, StoreError> {
    let snoozes: HashMap<Fingerprint, Snooze> = store
        .snoozes()?
        .into_iter()
        .map(|s| (s.fingerprint, s))
        .collect();
    let mut candidates: Vec<(Certificate, &policy::Policy, i64)> = Vec::new();
    for cert in store.iter() {
        let cert = cert?;
        if cert.revocation.is_some() || cert.current_sources().next().is_none() {
            continue;
        }
        let Some(policy) = policies.select(&cert) else {
            continue;
        };
        if policy.renewal_pending(&cert, now) {
            continue;
        }
        let Some(threshold) = policy.crossed(&cert, now) else {
            continue;
        };
        // An expired ephemeral agent credential is due only as a stalled renewal (below).
        if threshold == 0 && crate::stalled::renewal_expected(&cert) {
            continue;
        }
        let expired = cert.facts.not_after <= now;
        if !expired
            && snoozes
                .get(&cert.fingerprint())
                .is_some_and(|s| s.until > now)
        {
            continue;
        }
        candidates.push((cert, policy, threshold));
    }
    // Agents that stopped renewing: their newest credential, at the expiry threshold.
    let mut stalled: HashMap<Fingerprint, String> = HashMap::new();
    for s in crate::stalled::stalled_renewals(store, Some(policies), now)? {
        let Some(cert) = store.get(&s.fingerprint)? else {
            continue;
        };
        let Some(policy) = policies.select(&cert) else {
            continue;
        };
        stalled.insert(s.fingerprint, s.note());
        candidates.push((cert, policy, 0));
    }
    let mut successors = Successors::watching(candidates.iter().map(|(c, _, _)| c));
    if !candidates.is_empty() {
        for cert in store.iter() {
            successors.add(&cert?);
        }
    }
    // Automatic renewals that failed, or that a person must do: the reminder says so.
    let renewal_notes = crate::renewal::reminder_notes(store)?;
    let mut by_recipient: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    for (cert, policy, threshold) in &candidates {
        let threshold = *threshold;
        let stall = stalled.get(&cert.fingerprint());
        let renewal = successors.renewal(cert);
        if stall.is_none() && matches!(renewal, Some(policy::Renewal::Renewed(_))) {
            continue;
        }
        let expired = cert.facts.not_after <= now;
        let fp = cert.fingerprint();
        let sent = store.sent_reminders(&fp)?;
        let manual = match renewal_notes.get(&fp) {
            Some(note) => Some(note.clone()),
            None => crate::renewal::nobody_can_renew(store, cert, policy)
                .map_err(|e| StoreError::Io(e.to_string()))?,
        };
        for recipient in &policy.recipients {
            if told(&sent, recipient, threshold) {
                continue;
            }
            by_recipient
                .entry(recipient.clone())
                .or_default()
                .push(Entry {
                    fingerprint: fp.to_hex(),
                    name: cert.facts.display_name().to_string(),
                    subject: cert.facts.subject.clone(),
                    role: Some(cert.role),
                    credential_kind: cert.credential_kind(),
                    artifact_kind: None,
                    path: None,
                    sources: cert
                        .current_sources()
                        .map(|s| s.location.to_string())
                        .collect(),
                    not_after: cert.facts.not_after,
                    days_left: cert.days_left(now),
                    threshold_secs: threshold,
                    threshold: policy::threshold_label(threshold),
                    urgency: urgency(policy, cert.facts.not_after, now),
                    policy: policy.name.clone(),
                    note: match (&renewal, policy.renewal_stalled_days(cert, now)) {
                        _ if stall.is_some() => stall.cloned(),
                        _ if manual.is_some() => manual.clone(),
                        (Some(policy::Renewal::NotReloaded { by, endpoints }), _) => Some(format!(
                            "renewed on disk ({}), still served by {}: reload the service",
                            &by.to_hex()[..16],
                            endpoints.join(", ")
                        )),
                        (_, Some(d)) => Some(format!("renewal stalled for {d} days")),
                        (_, None) if expired => Some(
                            "not renewed: no newer certificate for this subject and role was seen"
                                .to_string(),
                        ),
                        (_, None) => None,
                    },
                    violations: policy.violations(cert),
                });
        }
    }
    let gone = store.artifacts_gone()?;
    for a in store.artifacts()? {
        // A deleted tracked file is not reminded about (marked gone by a scan or a pass).
        if gone.contains_key(&a.id) || !crate::artifacts::is_present(&a) {
            continue;
        }
        let Some(policy) = policies.select_artifact(&a) else {
            continue;
        };
        let Some(threshold) = policy.crossed_at(a.expires, now) else {
            continue;
        };
        // Snoozed like a certificate, never once it has expired.
        if a.expires > now && snoozes.get(&a.id).is_some_and(|s| s.until > now) {
            continue;
        }
        let sent = store.sent_artifact_reminders(&a.id)?;
        for recipient in &policy.recipients {
            if told(&sent, recipient, threshold) {
                continue;
            }
            by_recipient
                .entry(recipient.clone())
                .or_default()
                .push(Entry {
                    fingerprint: a.id.to_hex(),
                    name: a.name.clone(),
                    subject: format!("{} {}", a.kind, a.path),
                    role: None,
                    credential_kind: None,
                    artifact_kind: Some(a.kind.clone()),
                    path: Some(a.path.clone()),
                    sources: vec![a.path.clone()],
                    not_after: a.expires,
                    days_left: (a.expires - now).div_euclid(86_400),
                    threshold_secs: threshold,
                    threshold: policy::threshold_label(threshold),
                    urgency: urgency(policy, a.expires, now),
                    policy: policy.name.clone(),
                    note: (a.expires <= now).then(|| {
                        format!(
                            "not replaced: no newer {} was tracked at this path (certctl track FILE --kind {})",
                            a.kind, a.kind
                        )
                    }),
                    violations: Vec::new(),
                });
        }
    }
    Ok(by_recipient
        .into_iter()
        .map(|(recipient, mut entries)| {
            entries.sort_by(|a, b| {
                (a.urgency, a.not_after, &a.fingerprint).cmp(&(
                    b.urgency,
                    b.not_after,
                    &b.fingerprint,
                ))
            });
            Digest { recipient, entries }
        })
        .collect())
}

/// How a pass runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PassMode {
    /// Compute the digests, send and record nothing.
    DryRun,
    /// Asked for by an admin: retry every pending recipient at once.
    Now,
    /// certd's schedule: recipients in backoff wait for their next attempt.
    Scheduled,
}

/// A digest that was not delivered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undelivered {
    pub recipient: String,
    pub reminders: u64,
    pub error: String,
    pub attempts: u32,
    pub next_attempt: UnixTime,
    /// The digest's Message-ID (the retry carries the same one while the same reminders
    /// are due).
    #[serde(default)]
    pub message_id: String,
    /// The connection broke after the whole message was sent: it may have arrived (see
    /// [`SendFailure::maybe_delivered`]).
    #[serde(default)]
    pub maybe_delivered: bool,
}

/// What a pass did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassReport {
    pub at: UnixTime,
    pub mode: PassMode,
    /// The digests due (all of them in a dry run; sent, failed or deferred otherwise).
    pub digests: Vec<Digest>,
    pub digests_sent: u64,
    pub reminders_sent: u64,
    /// Delivery failed: still pending.
    pub failed: Vec<Undelivered>,
    /// Not tried in this (scheduled) pass: the recipient is in backoff.
    pub deferred: Vec<Undelivered>,
}

impl PassReport {
    /// One line: how many digests and reminders were sent, and what is pending.
    pub fn summary(&self) -> String {
        if self.mode == PassMode::DryRun {
            let reminders: usize = self.digests.iter().map(|d| d.entries.len()).sum();
            return format!(
                "dry run: {} digests with {reminders} reminders would be sent",
                self.digests.len()
            );
        }
        let mut s = format!(
            "sent {} digests with {} reminders",
            self.digests_sent, self.reminders_sent
        );
        if !self.failed.is_empty() {
            let n: u64 = self.failed.iter().map(|f| f.reminders).sum();
            s.push_str(&format!(
                "; {} digests ({n} reminders) failed and stay pending",
                self.failed.len()
            ));
        }
        if !self.deferred.is_empty() {
            s.push_str(&format!(
                "; {} digests deferred (retry backoff)",
                self.deferred.len()
            ));
        }
        s
    }
}

/// Why a digest was not delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendFailure {
    /// For admins: the server, the recipient and the cause.
    pub error: String,
    /// The whole message had been sent when the connection broke or timed out, before the
    /// server's answer: it may have been delivered (SMTP cannot tell). The retry carries the
    /// same Message-ID, so the copy can be recognised.
    pub maybe_delivered: bool,
}

impl SendFailure {
    /// A failure before anything of the message reached the server.
    pub fn not_sent(error: impl Into<String>) -> SendFailure {
        SendFailure {
            error: error.into(),
            maybe_delivered: false,
        }
    }
}

/// Sends one digest. [`SmtpMailer`] is the real one; tests use their own.
pub trait Mailer {
    /// Delivers the digest: `Ok` once the server accepted it (`250` to the message).
    fn send(&self, digest: &Digest, now: UnixTime) -> Result<(), SendFailure>;

    /// Ends what is left of the session of the digest last accepted (SMTP `QUIT`). The pass
    /// calls it after that digest was recorded as sent, so nothing (not even a slow QUIT)
    /// stands between the server's `250` and the record.
    fn finish(&self) {}

    /// The Message-ID the digest goes out with.
    fn message_id(&self, digest: &Digest) -> String {
        digest.message_id(DEFAULT_MESSAGE_ID_DOMAIN)
    }
}

/// The channels a pass delivers through: e-mail for addresses, [`crate::webhook`] for
/// `webhook:NAME` recipients. A digest for a channel that is not configured fails (and
/// stays pending) naming what is missing.
pub struct Channels {
    pub smtp: Option<SmtpMailer>,
    pub webhooks: crate::webhook::WebhookSender,
}

impl Channels {
    /// The channels of `config`; `None` when it has neither `[smtp]` nor `[[webhook]]`.
    pub fn from_config(config: &Config) -> Option<Channels> {
        if config.smtp.is_none() && config.webhooks.is_empty() {
            return None;
        }
        Some(Channels {
            smtp: config.smtp.as_ref().map(SmtpMailer::new),
            webhooks: crate::webhook::WebhookSender::new(&config.webhooks),
        })
    }
}

impl Mailer for Channels {
    fn send(&self, digest: &Digest, now: UnixTime) -> Result<(), SendFailure> {
        if crate::config::sections::webhook_name(&digest.recipient).is_some() {
            // The Idempotency-Key: the digest's content hash, as in its Message-ID.
            let key = self.message_id(digest);
            let key = key
                .trim_start_matches('<')
                .split('@')
                .next()
                .unwrap_or_default();
            return self.webhooks.send(digest, key, now);
        }
        match &self.smtp {
            Some(m) => m.send(digest, now),
            None => Err(SendFailure::not_sent(format!(
                "{}: certd's configuration has no [smtp] section",
                digest.recipient
            ))),
        }
    }

    fn finish(&self) {
        if let Some(m) = &self.smtp {
            m.finish();
        }
    }

    fn message_id(&self, digest: &Digest) -> String {
        match &self.smtp {
            Some(m) => m.message_id(digest),
            None => digest.message_id(DEFAULT_MESSAGE_ID_DOMAIN),
        }
    }
}

/// The Message-ID `digest` goes (or would go) out with.
fn message_id(mailer: Option<&dyn Mailer>, digest: &Digest) -> String {
    match mailer {
        Some(m) => m.message_id(digest),
        None => digest.message_id(DEFAULT_MESSAGE_ID_DOMAIN),
    }
}

/// Runs one pass at `now`. `mailer` may be `None` only for a dry run.
pub fn run_pass(
    store: &Store,
    policies: &PolicySet,
    mailer: Option<&dyn Mailer>,
    now: UnixTime,
    mode: PassMode,
) -> Result<PassReport, StoreError> {
    run_pass_locked(store, policies, mailer, now, mode, &|| ())
}

/// [`run_pass`] with the store's writer lock: `lock` takes it (its guard is held while the
/// pass reads what is due and while it records an outcome) and the pass never holds it
/// during an SMTP session, so a slow or hostile mail server cannot hold up scans. The
/// caller makes sure that only one pass runs at a time (certd: its reminder lock).
pub fn run_pass_locked<G>(
    store: &Store,
    policies: &PolicySet,
    mailer: Option<&dyn Mailer>,
    now: UnixTime,
    mode: PassMode,
    lock: &dyn Fn() -> G,
) -> Result<PassReport, StoreError> {
    let (digests, states) = {
        let _writer = lock();
        if mode != PassMode::DryRun {
            crate::artifacts::refresh_presence(store, now)?;
        }
        let digests = due(store, policies, now)?;
        if mode != PassMode::DryRun {
            // Recipients who were pending but have nothing due any more (renewed, snoozed).
            for state in store.delivery_states()? {
                if !digests.iter().any(|d| d.recipient == state.recipient) {
                    store.clear_delivery_state(&state.recipient)?;
                }
            }
        }
        let states = digests
            .iter()
            .map(|d| store.delivery_state(&d.recipient))
            .collect::<Result<Vec<_>, _>>()?;
        (digests, states)
    };
    let mut report = PassReport {
        at: now,
        mode,
        digests: Vec::new(),
        digests_sent: 0,
        reminders_sent: 0,
        failed: Vec::new(),
        deferred: Vec::new(),
    };
    if mode == PassMode::DryRun {
        report.digests = digests;
        return Ok(report);
    }
    let mut delivery = DeliveryOutcome {
        at: now,
        ..DeliveryOutcome::default()
    };
    for (digest, state) in digests.into_iter().zip(states) {
        let reminders = digest.entries.len() as u64;
        if let (PassMode::Scheduled, Some(s)) = (mode, &state) {
            if s.next_attempt > now {
                report.deferred.push(Undelivered {
                    recipient: digest.recipient.clone(),
                    reminders,
                    error: s.last_error.clone(),
                    attempts: s.attempts,
                    next_attempt: s.next_attempt,
                    message_id: message_id(mailer, &digest),
                    maybe_delivered: false,
                });
                report.digests.push(digest);
                continue;
            }
        }
        // The SMTP session: no lock held.
        let outcome = match mailer {
            Some(m) => m.send(&digest, now),
            None => Err(SendFailure::not_sent("no mail server configured")),
        };
        match outcome {
            Ok(()) => {
                // Recorded (and flushed) right after the server's 250, before anything else:
                // a crash from here on cannot make this digest go out again.
                let recorded = {
                    let _writer = lock();
                    record_sent(store, &digest, now)
                };
                if let Some(m) = mailer {
                    m.finish();
                }
                recorded?;
                report.digests_sent += 1;
                report.reminders_sent += reminders;
                delivery.delivered += 1;
                delivery.reminders_delivered += reminders;
                delivery.retried += u64::from(state.is_some());
                tracing::info!(recipient = %digest.recipient, reminders, "reminder digest sent");
            }
            Err(SendFailure {
                error,
                maybe_delivered,
            }) => {
                let attempts = state.as_ref().map_or(0, |s| s.attempts).saturating_add(1);
                let next_attempt = now + backoff(attempts);
                let failure = DeliveryState {
                    recipient: digest.recipient.clone(),
                    attempts,
                    first_failure: state.as_ref().map_or(now, |s| s.first_failure),
                    last_attempt: now,
                    next_attempt,
                    last_error: error.clone(),
                    pending: reminders,
                };
                {
                    let _writer = lock();
                    store.record_delivery_failure(&failure)?;
                }
                delivery.failed += 1;
                delivery
                    .error
                    .get_or_insert_with(|| format!("{}: {error}", digest.recipient));
                let message_id = message_id(mailer, &digest);
                tracing::warn!(recipient = %digest.recipient, reminders, attempts, next_attempt = %rfc3339(next_attempt), maybe_delivered, %message_id, %error, "reminder digest not delivered; it stays pending");
                report.failed.push(Undelivered {
                    recipient: digest.recipient.clone(),
                    reminders,
                    error,
                    attempts,
                    next_attempt,
                    message_id,
                    maybe_delivered,
                });
            }
        }
        report.digests.push(digest);
    }
    // What `status` shows: only a pass that tried to deliver something replaces it.
    if delivery.delivered + delivery.failed > 0 {
        let _writer = lock();
        store.record_delivery_outcome(&delivery)?;
    }
    Ok(report)
}

/// Records the reminders of an accepted digest (one flushed batch), then their audit events.
fn record_sent(store: &Store, digest: &Digest, now: UnixTime) -> Result<(), StoreError> {
    let record = |e: &Entry| {
        Some(SentReminder {
            fingerprint: e.fingerprint.parse().ok()?,
            recipient: digest.recipient.clone(),
            threshold_secs: e.threshold_secs,
            sent_at: now,
        })
    };
    let (files, certs): (Vec<&Entry>, Vec<&Entry>) =
        digest.entries.iter().partition(|e| e.is_artifact());
    let sent: Vec<SentReminder> = certs.iter().filter_map(|e| record(e)).collect();
    let sent_files: Vec<SentReminder> = files.iter().filter_map(|e| record(e)).collect();
    store.record_delivery_with_artifacts(&digest.recipient, &sent, &sent_files, now)?;
    for s in &sent {
        store.record_audit(&AuditEvent {
            at: now,
            fingerprint: Some(s.fingerprint),
            actor: "reminders".into(),
            action: "reminder-sent".into(),
            detail: format!(
                "{} reminder sent to {}",
                policy::threshold_label(s.threshold_secs),
                s.recipient
            ),
        })?;
    }
    for e in &files {
        let Some(s) = record(e) else { continue };
        store.record_audit(&AuditEvent {
            at: now,
            fingerprint: Some(s.fingerprint),
            actor: "reminders".into(),
            action: "reminder-sent".into(),
            detail: format!(
                "{} reminder about {} {} sent to {}",
                e.threshold,
                e.artifact_kind.as_deref().unwrap_or("artifact"),
                e.path.as_deref().unwrap_or(""),
                s.recipient
            ),
        })?;
    }
    Ok(())
}

/// The delay before attempt `attempts + 1`: 1 minute, doubling, at most 6 hours.
pub fn backoff(attempts: u32) -> i64 {
    let shift = attempts.saturating_sub(1).min(20);
    (BACKOFF_FIRST_SECS << shift).min(BACKOFF_MAX_SECS)
}

/// Where a pass takes its policies from: `policies` if given, else `[reminders].policies`.
pub fn policies_dir(
    config: &Config,
    config_path: &Path,
    policies: Option<&Path>,
) -> Result<PathBuf, RemindError> {
    match (policies, &config.reminders) {
        (Some(p), _) => Ok(p.to_path_buf()),
        (None, Some(r)) => Ok(r.policies.clone()),
        (None, None) => Err(RemindError::NoPolicies(config_path.to_path_buf())),
    }
}

/// A pass as `certctl [--config FILE] remind` runs it: configuration and policies read now.
/// The store is the one given (the configuration's `store` is neither needed nor used); a
/// dry run needs no configuration when `policies` is given.
pub fn pass_with_config(
    store: &Store,
    config_path: Option<&Path>,
    policies: Option<&Path>,
    now: UnixTime,
    mode: PassMode,
) -> Result<PassReport, RemindError> {
    pass_with_config_locked(store, config_path, policies, now, mode, &|| ())
}

/// [`pass_with_config`] taking the store's writer lock with `lock` only around store work
/// (see [`run_pass_locked`]).
pub fn pass_with_config_locked<G>(
    store: &Store,
    config_path: Option<&Path>,
    policies: Option<&Path>,
    now: UnixTime,
    mode: PassMode,
    lock: &dyn Fn() -> G,
) -> Result<PassReport, RemindError> {
    let (dir, channels) = match config_path {
        Some(path) => {
            let config = config::load_for_store(path, store.path())?;
            let dir = policies_dir(&config, path, policies)?;
            let channels = match (Channels::from_config(&config), mode) {
                (_, PassMode::DryRun) => None,
                (Some(channels), _) => Some(channels),
                (None, _) => return Err(RemindError::NoSmtp(path.to_path_buf())),
            };
            (dir, channels)
        }
        None => match (policies, mode) {
            (Some(dir), PassMode::DryRun) => (dir.to_path_buf(), None),
            _ => return Err(RemindError::NoConfig),
        },
    };
    let set = policy::load_dir(&dir)?;
    Ok(run_pass_locked(
        store,
        &set,
        channels.as_ref().map(|m| m as &dyn Mailer),
        now,
        mode,
        lock,
    )?)
}

/// certd's scheduled pass; returns the outcome shown by `certctl status`. `lock` takes the
/// store's writer lock, held only around store work (see [`run_pass_locked`]).
pub fn scheduled_pass<G>(
    store: &Store,
    config: &Config,
    config_path: &Path,
    now: UnixTime,
    lock: &dyn Fn() -> G,
) -> String {
    let result = (|| -> Result<PassReport, RemindError> {
        let dir = policies_dir(config, config_path, None)?;
        let set = policy::load_dir(&dir)?;
        let mailer = Channels::from_config(config)
            .ok_or_else(|| RemindError::NoSmtp(config_path.to_path_buf()))?;
        Ok(run_pass_locked(
            store,
            &set,
            Some(&mailer),
            now,
            PassMode::Scheduled,
            lock,
        )?)
    })();
    match result {
        Ok(report) if report.failed.is_empty() => {
            let outcome = format!("ok, {}", report.summary());
            // Quiet when there was nothing to send: the schedule may run every minute.
            if report.digests_sent > 0 {
                tracing::info!("reminder pass: {outcome}");
            }
            outcome
        }
        Ok(report) => {
            let outcome = format!("failed: {}", report.summary());
            tracing::warn!("reminder pass: {outcome}");
            outcome
        }
        Err(e) => {
            tracing::error!(error = %e, "reminder pass failed");
            format!("failed: {e}")
        }
    }
}

/// When certd should run the next reminder pass after `t`: the schedule, or earlier when a
/// pending digest's retry time comes first. `None` without a `[reminders]` section.
pub fn next_run(config: &Config, store: &Store, t: UnixTime) -> Option<UnixTime> {
    let scheduled = config.reminders.as_ref()?.schedule.next_after(t);
    let retry = store
        .delivery_states()
        .ok()
        .and_then(|all| all.iter().map(|s| s.next_attempt.max(t + 1)).min());
    match (scheduled, retry) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

// ---- SMTP ---------------------------------------------------------------------------------

/// Where an SMTP session broke off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Connecting, the server's greeting, EHLO (with `tls`, the handshake first).
    Greeting,
    /// STARTTLS, AUTH.
    Login,
    /// MAIL FROM, RCPT TO, DATA: nothing of the message was sent yet.
    Envelope,
    /// The message was sent; its answer was awaited.
    Message,
}

/// Delivers digests through the `[smtp]` server: one SMTP session per digest, driven step
/// by step with the bounded [`crate::smtp_client::Session`] (reply sizes capped, one
/// deadline per session of [`crate::smtp_client::DEADLINE_FACTOR`] × `smtp.timeout`) so that a failure says whether the message had been sent ([`SendFailure::maybe_delivered`]),
/// and so that the session of an accepted digest is closed (QUIT) only after the pass
/// recorded it ([`Mailer::finish`]), not before.
pub struct SmtpMailer {
    config: SmtpConfig,
    /// The password, or why it could not be read. Never logged.
    password: Result<Option<String>, String>,
    /// The session of the last accepted digest, until [`Mailer::finish`] closes it.
    open: std::sync::Mutex<Option<Session>>,
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("host", &self.config.host)
            .field("port", &self.config.port)
            .finish_non_exhaustive()
    }
}

impl SmtpMailer {
    /// Reads the password now: `$CERTCTL_SMTP_PASSWORD` if set, else `password_file`.
    pub fn new(config: &SmtpConfig) -> SmtpMailer {
        let password = match (std::env::var(PASSWORD_ENV), &config.password_file) {
            (Ok(p), _) if !p.is_empty() => Ok(Some(p)),
            (_, Some(file)) => crate::ca::Secret::from_private_file(file)
                .map(|p| Some(p.0))
                .map_err(|e| format!("cannot use the SMTP password file: {e}")),
            _ => Ok(None),
        };
        SmtpMailer {
            config: config.clone(),
            password,
            open: std::sync::Mutex::new(None),
        }
    }

    fn server(&self) -> String {
        format!(
            "SMTP server {}:{} ({})",
            self.config.host, self.config.port, self.config.security
        )
    }

    /// The domain of `smtp.from`, for Message-IDs (`certctl.invalid` if it has none).
    fn domain(&self) -> String {
        self.config
            .from
            .parse::<lettre::message::Mailbox>()
            .map(|m| m.email.domain().to_string())
            .ok()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| DEFAULT_MESSAGE_ID_DOMAIN.to_string())
    }

    /// Connects, greets, secures the connection as `security` says (with `tls`, see
    /// [`crate::smtp_tls`]) and logs in. An error comes with the phase it broke off in.
    fn connect(
        &self,
        password: Option<String>,
        tls: Option<openssl::ssl::SslConnector>,
    ) -> Result<Session, (Phase, SmtpError)> {
        use lettre::transport::smtp::authentication::Credentials;
        use lettre::transport::smtp::extension::ClientId;
        let c = &self.config;
        let hello = ClientId::default();
        let wrapped = tls.as_ref().filter(|_| c.security == SmtpSecurity::Tls);
        let mut conn = Session::connect(&c.host, c.port, c.timeout, wrapped, &hello)
            .map_err(|e| (Phase::Greeting, e))?;
        if let (SmtpSecurity::StartTls, Some(tls)) = (c.security, &tls) {
            conn.starttls(tls, &c.host, &hello)
                .map_err(|e| (Phase::Login, e))?;
        }
        if let (Some(user), Some(password)) = (&c.username, password) {
            conn.auth(&Credentials::new(user.clone(), password))
                .map_err(|e| (Phase::Login, e))?;
        }
        Ok(conn)
    }

    fn message(&self, digest: &Digest, now: UnixTime) -> Result<lettre::Message, String> {
        use lettre::message::{Mailbox, MultiPart};
        let from: Mailbox = self
            .config
            .from
            .parse()
            .map_err(|e| format!("smtp.from `{}`: {e}", self.config.from))?;
        let to: Mailbox = digest
            .recipient
            .parse()
            .map_err(|e| format!("recipient `{}`: {e}", digest.recipient))?;
        lettre::Message::builder()
            .from(from)
            .to(to)
            .message_id(Some(digest.message_id(&self.domain())))
            .subject(digest.subject())
            .multipart(MultiPart::alternative_plain_html(
                digest.text(now),
                digest.html(now),
            ))
            .map_err(|e| format!("cannot build the e-mail to {}: {e}", digest.recipient))
    }

    /// MAIL FROM, RCPT TO, DATA (with 8BITMIME / SMTPUTF8 when the message needs them).
    fn envelope(
        &self,
        conn: &mut Session,
        message: &lettre::Message,
        raw: &[u8],
    ) -> Result<(), Result<SmtpError, String>> {
        use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
        use lettre::transport::smtp::extension::{Extension, MailBodyParameter, MailParameter};
        let envelope = message.envelope();
        let mut options = Vec::new();
        let non_ascii = envelope
            .from()
            .into_iter()
            .chain(envelope.to())
            .any(|a| !AsRef::<str>::as_ref(a).is_ascii());
        if non_ascii {
            if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
                return Err(Err(
                    "the addresses are not ASCII and the server does not offer SMTPUTF8".into(),
                ));
            }
            options.push(MailParameter::SmtpUtfEight);
        }
        if !raw.is_ascii() {
            if !conn.server_info().supports_feature(Extension::EightBitMime) {
                return Err(Err(
                    "the message is not ASCII and the server does not offer 8BITMIME".into(),
                ));
            }
            options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        conn.command(&Mail::new(envelope.from().cloned(), options).to_string())
            .map_err(Ok)?;
        for to in envelope.to() {
            conn.command(&Rcpt::new(to.clone(), vec![]).to_string())
                .map_err(Ok)?;
        }
        conn.command(&Data.to_string()).map_err(Ok)?;
        Ok(())
    }

    /// The failure of `digest` in `phase`, for admins: the server, the recipient, the cause,
    /// and after the message was sent, that it may have arrived (and its Message-ID).
    fn failure(&self, digest: &Digest, phase: Phase, e: &SmtpError) -> SendFailure {
        // A server that never greeted (an SMTPS port?) gets its own cause, not the raw timeout.
        let silent = match phase {
            Phase::Greeting => crate::smtp_tls::no_greeting(e, &self.config),
            _ => None,
        };
        let cause =
            silent.unwrap_or_else(|| crate::smtp_tls::with_hint(e.to_string(), &self.config));
        let message_id = digest.message_id(&self.domain());
        // The server answered with an error code: it is alive and did not take the message.
        let refused = e.is_transient() || e.is_permanent();
        let auth = matches!(phase, Phase::Greeting | Phase::Login)
            && (e.code() == Some(535) || cause.to_lowercase().contains("authentication"));
        let error = if auth {
            format!(
                "{}: authentication failed for user `{}`: {cause} (check smtp.username and the password in smtp.password_file or ${PASSWORD_ENV})",
                self.server(),
                self.config.username.as_deref().unwrap_or("")
            )
        } else if phase == Phase::Message && !refused {
            format!(
                "{}: cannot deliver to {}: no answer after the message was sent ({cause}): the server may have accepted it; the retry carries the same Message-ID {message_id}",
                self.server(),
                digest.recipient
            )
        } else {
            let when = match phase {
                Phase::Greeting | Phase::Login => "",
                Phase::Envelope => "before the message was sent: ",
                Phase::Message => "the server refused the message: ",
            };
            format!(
                "{}: cannot deliver to {}: {when}{cause}",
                self.server(),
                digest.recipient
            )
        };
        SendFailure {
            error,
            maybe_delivered: phase == Phase::Message && !refused,
        }
    }
}

impl Mailer for SmtpMailer {
    fn send(&self, digest: &Digest, now: UnixTime) -> Result<(), SendFailure> {
        self.finish();
        let message = self.message(digest, now).map_err(SendFailure::not_sent)?;
        let password = self.password.clone().map_err(SendFailure::not_sent)?;
        let raw = message.formatted();
        let tls = crate::smtp_tls::tls_parameters(&self.config).map_err(|e| {
            SendFailure::not_sent(format!(
                "{}: cannot deliver to {}: {e}",
                self.server(),
                digest.recipient
            ))
        })?;
        let mut conn = self
            .connect(password, tls)
            .map_err(|(phase, e)| self.failure(digest, phase, &e))?;
        // A server that answered an error is alive: say goodbye (QUIT). After a network
        // error or a timeout, just drop the connection (a QUIT could wait another timeout).
        let close = |mut conn: Session, e: &SmtpError| {
            if e.is_transient() || e.is_permanent() {
                conn.abort();
            }
        };
        match self.envelope(&mut conn, &message, &raw) {
            Ok(()) => {}
            Err(Ok(e)) => {
                close(conn, &e);
                return Err(self.failure(digest, Phase::Envelope, &e));
            }
            Err(Err(problem)) => {
                conn.abort();
                return Err(SendFailure::not_sent(format!(
                    "{}: cannot deliver to {}: {problem}",
                    self.server(),
                    digest.recipient
                )));
            }
        }
        match conn.message(&raw) {
            Ok(_) => {
                // Accepted (250). The pass records it before the session is closed.
                *self.open.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn);
                Ok(())
            }
            Err(e) => {
                let failure = self.failure(digest, Phase::Message, &e);
                close(conn, &e);
                Err(failure)
            }
        }
    }

    fn message_id(&self, digest: &Digest) -> String {
        digest.message_id(&self.domain())
    }

    fn finish(&self) {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut conn) = open {
            // Best effort, bounded by the timeout: the message is accepted and recorded.
            let _ = conn.quit();
        }
    }
}

// ---- snoozes ------------------------------------------------------------------------------

/// A snooze with what it silences: its certificate, or its tracked artifact (the one still
/// in the store, if any).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Snoozed {
    pub snooze: Snooze,
    pub certificate: Option<Certificate>,
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
pub fn snooze(
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
        crate::artifacts::find(store, id)?
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
        action: "snoozed".into(),
        detail: format!("until {}: {}", rfc3339(until), snooze.reason),
    })?;
    Ok(Snoozed {
        snooze,
        certificate: certificates.pop(),
        artifact: artifacts.pop(),
    })
}

/// The snoozes still in force at `now`, soonest end first.
pub fn snoozed(store: &Store, now: UnixTime) -> Result<Vec<Snoozed>, StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use certctl_store::{CertificateFacts, KeyAlgorithm, Sha256, SourceLocation, SubjectAltNames};
    use std::cell::RefCell;

    const DAY: i64 = 86_400;

    fn facts(cn: &str, n: u8, not_before: i64, not_after: i64) -> CertificateFacts {
        CertificateFacts {
            fingerprint: Sha256([n; 32]),
            subject: format!("CN={cn}"),
            subject_cn: Some(cn.into()),
            issuer: "CN=Issuing CA".into(),
            serial: format!("{n:x}"),
            not_before,
            not_after,
            sans: SubjectAltNames::default(),
            key: KeyAlgorithm::Ec {
                curve: "P-256".into(),
            },
            signature_algorithm: "ecdsa-with-SHA256".into(),
            is_ca: false,
            subject_key_id: None,
            authority_key_id: None,
            spki_sha256: Sha256([n; 32]),
            crl_distribution_points: vec![],
            ocsp_urls: vec![],
        }
    }

    /// `f` found in its CN's file (a renewal replaces the file: same path).
    fn add(store: &Store, f: CertificateFacts, role: Role) {
        let mut ingest = store.ingest();
        let path = format!("/certs/{}.pem", f.subject_cn.as_deref().unwrap_or("x"));
        ingest
            .observe(f, Some(role), SourceLocation::File { path, index: 0 }, 0)
            .unwrap();
        ingest.commit().unwrap();
    }

    fn policies() -> PolicySet {
        let text = "[[policy]]\nname = \"iis\"\nroles = [\"iis\"]\nremind = [\"60d\", \"30d\", \"14d\"]\nwarn = \"30d\"\ncritical = \"7d\"\nrecipients = [\"a@example.org\", \"b@example.org\"]\n";
        policy::parse_files(&[("/p/x.toml".into(), text.into())]).unwrap()
    }

    #[derive(Default)]
    struct FakeMailer {
        fail: RefCell<Option<String>>,
        sent: RefCell<Vec<Digest>>,
    }

    impl Mailer for FakeMailer {
        fn send(&self, digest: &Digest, _now: UnixTime) -> Result<(), SendFailure> {
            if let Some(e) = self.fail.borrow().clone() {
                return Err(SendFailure::not_sent(e));
            }
            self.sent.borrow_mut().push(digest.clone());
            Ok(())
        }
    }

    #[test]
    fn once_per_threshold_and_recipient_then_the_next_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        add(&store, facts("a.example", 1, 0, 40 * DAY), Role::Iis);
        add(&store, facts("b.example", 2, 0, 400 * DAY), Role::Iis);
        let set = policies();
        let mailer = FakeMailer::default();

        let r = run_pass(&store, &set, Some(&mailer), 0, PassMode::Now).unwrap();
        assert_eq!((r.digests_sent, r.reminders_sent), (2, 2));
        let sent = mailer.sent.borrow().clone();
        assert_eq!(sent[0].recipient, "a@example.org");
        assert_eq!(sent[0].entries[0].threshold, "60d");
        assert_eq!(sent[0].entries[0].urgency, Urgency::Warn);

        let r = run_pass(&store, &set, Some(&mailer), DAY, PassMode::Now).unwrap();
        assert_eq!(r.reminders_sent, 0);

        // 30 days later: 10 days left, past 30d and 14d: one reminder (14d) each.
        let r = run_pass(&store, &set, Some(&mailer), 30 * DAY, PassMode::Now).unwrap();
        assert_eq!((r.digests_sent, r.reminders_sent), (2, 2));
        assert_eq!(r.digests[0].entries[0].threshold, "14d");
        let r = run_pass(&store, &set, Some(&mailer), 31 * DAY, PassMode::Now).unwrap();
        assert_eq!(r.reminders_sent, 0);
    }

    #[test]
    fn failures_stay_pending_with_backoff() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        add(&store, facts("a.example", 1, 0, 10 * DAY), Role::Iis);
        let set = policies();
        let mailer = FakeMailer::default();
        *mailer.fail.borrow_mut() = Some("connection refused".into());
        let r = run_pass(&store, &set, Some(&mailer), 0, PassMode::Scheduled).unwrap();
        assert_eq!(r.failed.len(), 2);
        assert_eq!(r.failed[0].next_attempt, 60);
        assert_eq!(
            store.smtp_state().unwrap().last_error.as_deref(),
            Some("connection refused")
        );
        // Scheduled passes wait for the backoff; the retry doubles it.
        let r = run_pass(&store, &set, Some(&mailer), 30, PassMode::Scheduled).unwrap();
        assert_eq!((r.failed.len(), r.deferred.len()), (0, 2));
        let r = run_pass(&store, &set, Some(&mailer), 60, PassMode::Scheduled).unwrap();
        assert_eq!(r.failed[0].next_attempt, 180);
        *mailer.fail.borrow_mut() = None;
        let r = run_pass(&store, &set, Some(&mailer), 100, PassMode::Now).unwrap();
        assert_eq!(r.reminders_sent, 2);
        assert!(store.delivery_states().unwrap().is_empty());
        assert_eq!(store.smtp_state().unwrap().last_error, None);
        let r = run_pass(&store, &set, Some(&mailer), 200, PassMode::Now).unwrap();
        assert_eq!(r.reminders_sent, 0);
        assert_eq!(backoff(30), BACKOFF_MAX_SECS);
    }

    #[test]
    fn renewal_expected_stays_quiet_then_reports_the_stall() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        add(&store, facts("acme.example", 1, 0, 90 * DAY), Role::Iis);
        let text = "[[policy]]\nname = \"acme\"\nroles = [\"iis\"]\nremind = [\"60d\", \"30d\", \"14d\"]\nwarn = \"30d\"\ncritical = \"7d\"\nrenewal_expected = \"20d\"\nrecipients = [\"a@example.org\"]\n";
        let set = policy::parse_files(&[("/p/x.toml".into(), text.into())]).unwrap();
        // 60d and 30d were crossed, but renewal is not due before 20d: quiet.
        assert!(due(&store, &set, 65 * DAY).unwrap().is_empty());
        // 15 days left and still the newest: the renewal stalled 5 days ago.
        let d = due(&store, &set, 75 * DAY).unwrap();
        assert_eq!(d.len(), 1);
        let e = &d[0].entries[0];
        assert_eq!(e.threshold, "20d");
        assert_eq!(e.note.as_deref(), Some("renewal stalled for 5 days"));
        // Renewed after all: quiet again.
        add(
            &store,
            facts("acme.example", 2, 74 * DAY, 164 * DAY),
            Role::Iis,
        );
        assert!(due(&store, &set, 75 * DAY).unwrap().is_empty());
    }

    #[test]
    fn renewed_snoozed_and_expired() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        add(&store, facts("a.example", 1, 0, 10 * DAY), Role::Iis);
        add(&store, facts("a.example", 2, 5, 100 * DAY), Role::Iis);
        add(&store, facts("c.example", 3, 0, 10 * DAY), Role::Iis);
        let set = policies();
        // a.example#1 is renewed by #2; c is snoozed.
        let s = snooze(
            &store,
            &"03".repeat(32),
            20 * DAY,
            "change window",
            "alice",
            0,
        )
        .unwrap();
        assert_eq!(s.snooze.by, "alice");
        assert_eq!(
            store.history(&Sha256([3; 32])).unwrap()[0].action,
            "snoozed"
        );
        let d = due(&store, &set, 0).unwrap();
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(snoozed(&store, 0).unwrap().len(), 1);
        // Expired: the snooze no longer silences it.
        let d = due(&store, &set, 11 * DAY).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].entries.len(), 1);
        assert_eq!(d[0].entries[0].urgency, Urgency::Expired);
        assert!(d[0].text(11 * DAY).contains("certctl show 0303"));
        assert!(d[0].html(11 * DAY).contains("EXPIRED"));
        // Snoozing an expired certificate is refused.
        let e = snooze(&store, &"03".repeat(32), 20 * DAY, "x", "alice", 11 * DAY).unwrap_err();
        assert!(e.to_string().contains("never silenced"), "{e}");
    }

    fn bundle(
        store: &Store,
        path: &str,
        n: u8,
        issued: UnixTime,
    ) -> certctl_store::TrackedArtifact {
        let a = certctl_store::TrackedArtifact {
            id: Sha256([n; 32]),
            kind: "enrollment-bundle".into(),
            name: path.rsplit('/').next().unwrap_or(path).into(),
            path: path.into(),
            issued,
            expires: issued + 10 * DAY,
            expiry_from: "default".into(),
            tracked_at: issued,
            tracked_by: "me".into(),
        };
        store.put_artifact(&a).unwrap();
        a
    }

    #[test]
    fn tracked_artifacts_are_reminded_once_per_threshold_under_artifact_policies() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Same id as a certificate fingerprint: their reminders stay apart.
        add(&store, facts("a.example", 1, 0, 5 * DAY), Role::Iis);
        // A real file: a tracked file that is gone is not reminded about.
        let files = tempfile::tempdir().unwrap();
        let path = format!("{}/site a.bundle", files.path().display());
        std::fs::write(&path, "bundle").unwrap();
        bundle(&store, &path, 1, 0);
        let text = "[[policy]]\nname = \"iis\"\nroles = [\"iis\", \"other\"]\nremind = []\nwarn = \"0s\"\ncritical = \"0s\"\nrecipients = [\"a@example.org\"]\n\n[[policy]]\nname = \"bundles\"\nartifacts = [\"enrollment-bundle\"]\nremind = [\"3d\", \"1d\"]\nwarn = \"3d\"\ncritical = \"3d\"\nrecipients = [\"a@example.org\"]\n";
        let set = policy::parse_files(&[("/p/x.toml".into(), text.into())]).unwrap();
        let mailer = FakeMailer::default();
        let r = run_pass(&store, &set, Some(&mailer), 0, PassMode::Now).unwrap();
        assert_eq!(r.reminders_sent, 0, "{r:?}");
        let r = run_pass(&store, &set, Some(&mailer), 7 * DAY, PassMode::Now).unwrap();
        // The certificate expired (policy iis), the bundle crossed 3d (policy bundles).
        assert_eq!((r.digests_sent, r.reminders_sent), (1, 2), "{r:?}");
        let d = &r.digests[0];
        assert_eq!(
            d.subject(),
            "[certctl] 1 certificate and 1 tracked file need attention (1 expired, 1 critical)"
        );
        let e = d.entries.iter().find(|e| e.is_artifact()).unwrap();
        assert_eq!((e.threshold.as_str(), e.policy.as_str()), ("3d", "bundles"));
        assert_eq!((e.days_left, e.urgency), (3, Urgency::Critical));
        assert_eq!(e.command(), format!("certctl list --name '{path}'"));
        let text = d.text(7 * DAY);
        assert!(
            text.contains("site a.bundle (enrollment-bundle): 3 days left"),
            "{text}"
        );
        assert!(text.contains(&format!("file:      {path}")), "{text}");
        assert_eq!(
            store
                .sent_artifact_reminders(&Sha256([1; 32]))
                .unwrap()
                .len(),
            1
        );
        assert_eq!(store.sent_reminders(&Sha256([1; 32])).unwrap().len(), 1);
        let r = run_pass(&store, &set, Some(&mailer), 7 * DAY + 3600, PassMode::Now).unwrap();
        assert_eq!(r.reminders_sent, 0, "{r:?}");
        let r = run_pass(&store, &set, Some(&mailer), 9 * DAY, PassMode::Now).unwrap();
        assert_eq!(r.reminders_sent, 1, "{r:?}");
        assert_eq!(r.digests[0].entries[0].threshold, "1d");
        assert_eq!(
            r.digests[0].subject(),
            "[certctl] 1 tracked file needs attention (1 critical)"
        );
        // Replaced by a new bundle at the same path: the old one is quiet, the new one fresh.
        store.remove_artifact(&Sha256([1; 32])).unwrap();
        bundle(&store, &path, 2, 9 * DAY);
        assert!(due(&store, &set, 9 * DAY + 3600).unwrap().is_empty());
        // Deleted: the next pass marks it gone and reminds nothing about it, even at expiry.
        std::fs::remove_file(&path).unwrap();
        let r = run_pass(&store, &set, Some(&mailer), 19 * DAY, PassMode::Now).unwrap();
        assert_eq!(r.reminders_sent, 0, "{r:?}");
        assert_eq!(
            store.artifacts_gone().unwrap().get(&Sha256([2; 32])),
            Some(&(19 * DAY))
        );
    }

    #[test]
    fn the_message_id_depends_on_the_recipient_and_its_reminders_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        add(&store, facts("a.example", 1, 0, 40 * DAY), Role::Iis);
        add(&store, facts("b.example", 2, 0, 50 * DAY), Role::Iis);
        let set = policies();
        let d = due(&store, &set, 0).unwrap();
        assert_eq!(d.len(), 2);
        let id = d[0].message_id("contoso.example");
        assert!(
            id.starts_with("<certctl.") && id.ends_with("@contoso.example>"),
            "{id}"
        );
        assert_eq!(id.len(), "<certctl.@contoso.example>".len() + 32, "{id}");
        // An hour later (other text, other days left): the same reminders, the same id.
        let later = due(&store, &set, 3600).unwrap();
        assert_ne!(later[0].text(3600), d[0].text(0));
        assert_eq!(later[0].message_id("contoso.example"), id);
        // The entries' order does not matter.
        let mut reversed = d[0].clone();
        reversed.entries.reverse();
        assert_eq!(reversed.message_id("contoso.example"), id);
        // Another recipient, another threshold, fewer reminders: another id.
        assert_ne!(d[1].message_id("contoso.example"), id);
        let mut other = d[0].clone();
        other.entries[0].threshold_secs = 14 * DAY;
        assert_ne!(other.message_id("contoso.example"), id);
        let mut fewer = d[0].clone();
        fewer.entries.pop();
        assert_ne!(fewer.message_id("contoso.example"), id);
    }

    /// Fails for one recipient; checks, at each send, that every digest accepted before
    /// was already recorded in the store and its session finished.
    struct Flaky<'s> {
        store: &'s Store,
        fail_for: &'static str,
        accepted: RefCell<Vec<Digest>>,
        open_session: RefCell<bool>,
        finished: RefCell<usize>,
    }

    impl Mailer for Flaky<'_> {
        fn send(&self, digest: &Digest, _now: UnixTime) -> Result<(), SendFailure> {
            assert!(
                !*self.open_session.borrow(),
                "finish() after each accepted digest"
            );
            for earlier in self.accepted.borrow().iter() {
                for e in &earlier.entries {
                    let fp: Fingerprint = e.fingerprint.parse().unwrap();
                    let sent = self.store.sent_reminders(&fp).unwrap();
                    assert!(
                        told(&sent, &earlier.recipient, e.threshold_secs),
                        "{} was not recorded before the next send",
                        earlier.recipient
                    );
                }
            }
            if digest.recipient == self.fail_for {
                return Err(SendFailure {
                    error: "SMTP server 127.0.0.1:25 (none): cannot deliver: no answer".into(),
                    maybe_delivered: true,
                });
            }
            self.accepted.borrow_mut().push(digest.clone());
            *self.open_session.borrow_mut() = true;
            Ok(())
        }

        fn finish(&self) {
            *self.open_session.borrow_mut() = false;
            *self.finished.borrow_mut() += 1;
        }
    }

    #[test]
    fn each_accepted_digest_is_recorded_before_the_next_and_a_failure_does_not_stop_the_pass() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        add(&store, facts("a.example", 1, 0, 40 * DAY), Role::Iis);
        let text = "[[policy]]\nname = \"iis\"\nroles = [\"iis\"]\nremind = [\"60d\"]\nwarn = \"30d\"\ncritical = \"7d\"\nrecipients = [\"a@example.org\", \"b@example.org\", \"c@example.org\"]\n";
        let set = policy::parse_files(&[("/p/x.toml".into(), text.into())]).unwrap();
        let mailer = Flaky {
            store: &store,
            fail_for: "b@example.org",
            accepted: RefCell::default(),
            open_session: RefCell::new(false),
            finished: RefCell::new(0),
        };
        let r = run_pass(&store, &set, Some(&mailer), 0, PassMode::Now).unwrap();
        assert_eq!((r.digests_sent, r.reminders_sent), (2, 2), "{r:?}");
        assert_eq!(*mailer.finished.borrow(), 2);
        assert_eq!(r.failed.len(), 1);
        let f = &r.failed[0];
        assert_eq!(f.recipient, "b@example.org");
        assert!(f.maybe_delivered);
        let b = r
            .digests
            .iter()
            .find(|d| d.recipient == "b@example.org")
            .unwrap();
        assert_eq!(f.message_id, b.message_id(DEFAULT_MESSAGE_ID_DOMAIN));
        assert_eq!(store.smtp_delivery_failures_total().unwrap(), 1);
        assert_eq!(store.smtp_deliveries_total().unwrap(), 2);
        // The retry sends only b's digest, under the same Message-ID.
        let mailer = FakeMailer::default();
        let r = run_pass(&store, &set, Some(&mailer), 60, PassMode::Now).unwrap();
        assert_eq!((r.digests_sent, r.reminders_sent), (1, 1), "{r:?}");
        let sent = mailer.sent.borrow();
        assert_eq!(sent[0].recipient, "b@example.org");
        assert_eq!(sent[0].message_id(DEFAULT_MESSAGE_ID_DOMAIN), f.message_id);
    }

    // ---- SmtpMailer against a scripted server --------------------------------------------

    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// What the scripted server does once it has read the message (after DATA).
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Script {
        Accept,
        Refuse,
        /// Closes the connection without answering.
        Vanish,
        /// Closes the connection when asked RCPT TO.
        VanishAtRcpt,
    }

    /// A one-connection SMTP server on loopback; returns its port and the transcript (the
    /// client's lines) once the connection ends.
    fn scripted(script: Script) -> (u16, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            let mut out = stream.try_clone().unwrap();
            let mut lines = BufReader::new(stream);
            let mut seen = Vec::new();
            let mut say = |s: &str| out.write_all(s.as_bytes()).is_ok();
            say("220 scripted ESMTP\r\n");
            let mut line = String::new();
            while lines.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                let cmd = line.trim_end().to_string();
                line.clear();
                seen.push(cmd.clone());
                let verb = cmd.split(' ').next().unwrap_or("").to_ascii_uppercase();
                match verb.as_str() {
                    "EHLO" => say("250 scripted\r\n"),
                    "MAIL" => say("250 ok\r\n"),
                    "RCPT" if script == Script::VanishAtRcpt => return seen,
                    "RCPT" => say("250 ok\r\n"),
                    "DATA" => {
                        say("354 go ahead\r\n");
                        loop {
                            let mut l = String::new();
                            if lines.read_line(&mut l).map(|n| n == 0).unwrap_or(true) {
                                return seen;
                            }
                            if l == ".\r\n" {
                                break;
                            }
                            seen.push(l.trim_end().to_string());
                        }
                        match script {
                            Script::Accept => say("250 2.0.0 queued\r\n"),
                            Script::Refuse => say("554 5.6.0 message refused\r\n"),
                            _ => return seen,
                        }
                    }
                    "QUIT" => {
                        say("221 bye\r\n");
                        return seen;
                    }
                    _ => say("502 what?\r\n"),
                };
            }
            seen
        });
        (port, handle)
    }

    fn mailer_for(port: u16) -> SmtpMailer {
        SmtpMailer::new(&SmtpConfig {
            host: "127.0.0.1".into(),
            port,
            security: SmtpSecurity::None,
            from: "certd@contoso.example".into(),
            username: None,
            password_file: None,
            ca_file: None,
            timeout: std::time::Duration::from_secs(10),
        })
    }

    fn one_digest() -> Digest {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        add(&store, facts("a.example", 1, 0, 40 * DAY), Role::Iis);
        due(&store, &policies(), 0).unwrap().remove(0)
    }

    #[test]
    fn smtp_accepted_carries_the_message_id_and_quits_only_when_finished() {
        let digest = one_digest();
        let (port, server) = scripted(Script::Accept);
        let mailer = mailer_for(port);
        mailer.send(&digest, 0).unwrap();
        assert!(
            mailer.open.lock().unwrap().is_some(),
            "the session stays open"
        );
        mailer.finish();
        let seen = server.join().unwrap();
        let id = digest.message_id("contoso.example");
        assert!(
            seen.iter()
                .any(|l| l.eq_ignore_ascii_case(&format!("message-id: {id}"))),
            "{seen:#?}"
        );
        assert_eq!(seen.last().map(String::as_str), Some("QUIT"), "{seen:#?}");
    }

    #[test]
    fn smtp_no_answer_after_the_message_may_have_delivered_it() {
        let digest = one_digest();
        let (port, server) = scripted(Script::Vanish);
        let e = mailer_for(port).send(&digest, 0).unwrap_err();
        server.join().unwrap();
        assert!(e.maybe_delivered, "{e:?}");
        assert!(
            e.error.starts_with(&format!(
                "SMTP server 127.0.0.1:{port} (none): cannot deliver to a@example.org: no answer after the message was sent"
            )),
            "{e:?}"
        );
        assert!(e.error.contains("the server may have accepted it"), "{e:?}");
        assert!(
            e.error.contains(&digest.message_id("contoso.example")),
            "{e:?}"
        );
    }

    #[test]
    fn smtp_a_server_without_greeting_fails_at_the_timeout_with_the_tls_hint() {
        let digest = one_digest();
        // Connections are accepted (backlog) but nothing is said, like an SMTPS port.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut config = mailer_for(port).config;
        config.timeout = std::time::Duration::from_secs(1);
        let started = std::time::Instant::now();
        let e = SmtpMailer::new(&config).send(&digest, 0).unwrap_err();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(!e.maybe_delivered, "{e:?}");
        assert_eq!(
            e.error,
            format!(
                "SMTP server 127.0.0.1:{port} (none): cannot deliver to a@example.org: no greeting within 1s: if the server expects TLS from the first byte (SMTPS, usually port 465), set security = \"tls\""
            )
        );
        drop(listener);
    }

    #[test]
    fn smtp_failures_before_the_message_or_refusals_are_not_deliveries() {
        let digest = one_digest();
        let (port, server) = scripted(Script::VanishAtRcpt);
        let e = mailer_for(port).send(&digest, 0).unwrap_err();
        server.join().unwrap();
        assert!(!e.maybe_delivered, "{e:?}");
        assert!(
            e.error
                .contains("cannot deliver to a@example.org: before the message was sent"),
            "{e:?}"
        );

        let (port, server) = scripted(Script::Refuse);
        let e = mailer_for(port).send(&digest, 0).unwrap_err();
        let seen = server.join().unwrap();
        assert!(!e.maybe_delivered, "{e:?}");
        assert!(e.error.contains("the server refused the message"), "{e:?}");
        assert!(e.error.contains("554"), "{e:?}");
        assert_eq!(seen.last().map(String::as_str), Some("QUIT"), "{seen:#?}");

        // Nobody listening.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = mailer_for(port).send(&digest, 0).unwrap_err();
        assert!(!e.maybe_delivered, "{e:?}");
        assert!(
            e.error.starts_with(&format!(
                "SMTP server 127.0.0.1:{port} (none): cannot deliver to a@example.org: "
            )),
            "{e:?}"
        );
        assert!(
            e.error.to_lowercase().contains("connection refused"),
            "{e:?}"
        );
    }
}
