//! A reminder pass: what is due, delivered through the configured channels, each outcome
//! recorded before the next digest (retries with backoff), on certd's schedule or by
//! `certctl remind`.

use std::path::{Path, PathBuf};

use certctl_store::{
    rfc3339, AuditEvent, DeliveryOutcome, DeliveryState, SentReminder, Store, StoreError, UnixTime,
};
use serde::{Deserialize, Serialize};

use super::delivery::{Mailer, SendFailure, DEFAULT_MESSAGE_ID_DOMAIN};
use super::digest::{Digest, Entry};
use super::due::due;
use super::email::SmtpMailer;
use super::webhook::WebhookSender;
use crate::config::{self, Config, ConfigError};
use crate::history::AuditAction;
use crate::policy::{self, PolicyError, PolicySet};

/// First retry delay after a failed delivery; it doubles with each failure.
pub(crate) const BACKOFF_FIRST_SECS: i64 = 60;
/// Longest retry delay.
pub(crate) const BACKOFF_MAX_SECS: i64 = 6 * 3600;

/// Why a pass could not run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RemindError {
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
    /// The e-mail address the digest is for.
    pub recipient: String,
    /// How many reminders (entries) the digest holds.
    pub reminders: u64,
    /// Why the last delivery attempt failed (the SMTP server's answer, a connection error,
    /// or no mail server configured).
    pub error: String,
    /// Failed delivery attempts so far (for `failed`: this pass's included).
    pub attempts: u32,
    /// A scheduled pass retries it from this time (Unix seconds; `remind --json` adds
    /// `next_attempt_at`, RFC 3339).
    pub next_attempt: UnixTime,
    /// The digest's Message-ID (the retry carries the same one while the same reminders
    /// are due).
    #[serde(default)]
    pub message_id: String,
    /// The connection broke after the whole message was sent: it may have arrived (see
    /// `SendFailure::maybe_delivered`).
    #[serde(default)]
    pub maybe_delivered: bool,
}

/// What a pass did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassReport {
    /// When the pass ran (Unix seconds; `remind --json` adds `at_rfc3339`): the "now" every
    /// threshold was judged against.
    pub at: UnixTime,
    /// How it ran: `dry-run`, `now` (`remind --now`) or `scheduled` (certd).
    pub mode: PassMode,
    /// The digests due (all of them in a dry run; sent, failed or deferred otherwise).
    pub digests: Vec<Digest>,
    /// Digests (one e-mail per recipient) the mail server accepted in this pass; 0 in a
    /// dry run.
    pub digests_sent: u64,
    /// Reminders (digest entries: one certificate or artifact crossing a threshold) in the
    /// digests sent; 0 in a dry run.
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

/// The channels a pass delivers through: e-mail for addresses, [`crate::reminders::webhook`] for
/// `webhook:NAME` recipients. A digest for a channel that is not configured fails (and
/// stays pending) naming what is missing.
pub(crate) struct Channels {
    pub smtp: Option<SmtpMailer>,
    pub webhooks: WebhookSender,
}

impl Channels {
    /// The channels of `config`; `None` when it has neither `[smtp]` nor `[[webhook]]`.
    pub(crate) fn from_config(config: &Config) -> Option<Channels> {
        if config.smtp.is_none() && config.webhooks.is_empty() {
            return None;
        }
        Some(Channels {
            smtp: config.smtp.as_ref().map(SmtpMailer::new),
            webhooks: WebhookSender::new(&config.webhooks),
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

#[cfg(test)]
/// Runs one pass at `now`. `mailer` may be `None` only for a dry run.
pub(crate) fn run_pass(
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
pub(crate) fn run_pass_locked<G>(
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
            crate::inventory::artifacts::refresh_presence(store, now)?;
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
            action: AuditAction::ReminderSent.into(),
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
            action: AuditAction::ReminderSent.into(),
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
pub(crate) fn backoff(attempts: u32) -> i64 {
    let shift = attempts.saturating_sub(1).min(20);
    (BACKOFF_FIRST_SECS << shift).min(BACKOFF_MAX_SECS)
}

/// Where a pass takes its policies from: `policies` if given, else `[reminders].policies`.
pub(crate) fn policies_dir(
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

/// A pass as `certctl [--config FILE] remind` runs it: configuration and policies read
/// now. The store is the one given (the configuration's `store` is neither needed nor
/// used); a dry run needs no configuration when `policies` is given. The store's writer
/// lock is taken with `lock` only around store work
/// (see [`run_pass_locked`]).
pub(crate) fn pass_with_config_locked<G>(
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
pub(crate) fn scheduled_pass<G>(
    store: &Store,
    config: &Config,
    config_path: &Path,
    now: UnixTime,
    lock: &dyn Fn() -> G,
) -> Result<String, String> {
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
            Ok(outcome)
        }
        Ok(report) => {
            let outcome = format!("failed: {}", report.summary());
            tracing::warn!("reminder pass: {outcome}");
            Err(outcome)
        }
        Err(e) => {
            tracing::error!(error = %e, "reminder pass failed");
            Err(format!("failed: {e}"))
        }
    }
}

/// When certd should run the next reminder pass after `t`: the schedule, or earlier when a
/// pending digest's retry time comes first. `None` without a `[reminders]` section.
pub(crate) fn next_run(config: &Config, store: &Store, t: UnixTime) -> Option<UnixTime> {
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
