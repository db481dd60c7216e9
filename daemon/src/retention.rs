//! Retention passes: `certctl store prune` and certd's background job (`[retention]`).
//!
//! A pass calls [`certctl_store::Store::prune_batch`] until the store says it reached the
//! end; each batch is one atomic write of at most `batch` removals (see the store's
//! `retention` module for what is removed and what never is). certd takes its writer lock
//! per batch, so scans and control requests go on between batches.
//!
//! Test hook: after each batch written, `crate::crash_point::here` with
//! [`CRASH_AFTER_BATCH`] (`CERTCTL_TEST_CRASH_AT=prune-after-batch` kills the process there).

use certctl_store::{PruneCursor, PruneReport, RetentionPolicy, Store, StoreError, UnixTime};
use serde::{Deserialize, Serialize};

/// Certificates removed per atomic batch unless configured (`[retention] batch`).
pub const DEFAULT_BATCH: usize = 5000;

/// The crash point after each batch written (debug builds, tests).
pub const CRASH_AFTER_BATCH: &str = "prune-after-batch";

/// `certctl store prune`. Windows left out come from certd's `[retention]` (through certd),
/// else from `certctl --config FILE`, else the defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PruneRequest {
    /// Report what would be removed, remove nothing.
    pub dry_run: bool,
    /// Seconds; overrides `ephemeral_after_expiry`.
    #[serde(default)]
    pub ephemeral_after_expiry: Option<i64>,
    /// Seconds; overrides `gone_after`.
    #[serde(default)]
    pub gone_after: Option<i64>,
    /// Certificates per batch; else the configured or default one.
    #[serde(default)]
    pub batch: Option<usize>,
}

impl PruneRequest {
    /// The policy: this request's windows over `configured`.
    pub fn policy(&self, configured: RetentionPolicy) -> RetentionPolicy {
        RetentionPolicy {
            ephemeral_after_expiry: self
                .ephemeral_after_expiry
                .unwrap_or(configured.ephemeral_after_expiry),
            gone_after: self.gone_after.unwrap_or(configured.gone_after),
        }
    }
}

/// What a pass did. Field names are part of `store prune --json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PruneSummary {
    /// Whether nothing was removed, only counted (`--dry-run`); `dry_run` in
    /// `store prune --json`.
    pub dry_run: bool,
    /// The windows applied, in seconds.
    pub ephemeral_after_expiry_secs: i64,
    /// Other leaves go once expired and last seen more than this long ago (`--gone-after`,
    /// `[retention] gone_after`); `gone_after_secs` in `store prune --json`.
    pub gone_after_secs: i64,
    /// When the pass judged "expired long enough".
    pub at: UnixTime,
    /// The counts of the pass, flattened into the same JSON object (`examined`, `removed`,
    /// ...).
    #[serde(flatten)]
    pub report: PruneReport,
    /// Certificate records left in the store.
    pub certificates_left: u64,
}

/// One batch; the caller keeps other writers out for its duration. A written batch passes
/// the crash point.
pub fn batch(
    store: &Store,
    policy: &RetentionPolicy,
    now: UnixTime,
    cursor: &mut PruneCursor,
    limit: usize,
    dry_run: bool,
) -> Result<PruneReport, StoreError> {
    let report = store.prune_batch(policy, now, cursor, limit, dry_run)?;
    if !dry_run && report.removed > 0 {
        store.flush()?;
        crate::crash_point::here(CRASH_AFTER_BATCH);
    }
    Ok(report)
}

/// A whole pass from one thread that owns the store (direct mode): `progress` is called
/// after each batch with the totals so far.
pub fn pass(
    store: &Store,
    request: &PruneRequest,
    configured: RetentionPolicy,
    now: UnixTime,
    progress: &mut dyn FnMut(&PruneReport),
) -> Result<PruneSummary, StoreError> {
    let policy = request.policy(configured);
    let limit = request.batch.unwrap_or(DEFAULT_BATCH);
    let mut cursor = PruneCursor::default();
    let mut total = PruneReport::default();
    while !cursor.done {
        let report = batch(store, &policy, now, &mut cursor, limit, request.dry_run)?;
        total.add(&report);
        progress(&total);
    }
    Ok(summary(store, request.dry_run, &policy, now, total))
}

/// The summary of a pass that ended with `total`.
pub fn summary(
    store: &Store,
    dry_run: bool,
    policy: &RetentionPolicy,
    now: UnixTime,
    total: PruneReport,
) -> PruneSummary {
    PruneSummary {
        dry_run,
        ephemeral_after_expiry_secs: policy.ephemeral_after_expiry,
        gone_after_secs: policy.gone_after,
        at: now,
        report: total,
        certificates_left: store.len() as u64,
    }
}
