//! The audit history: an append-only log of what happened to certificates and who did it
//! (revocations, snoozes, reminders sent, supersessions, approvals, ...).
//!
//! Events are keyed by certificate then time, so `certctl history ID` is one prefix scan.
//! Events about no particular certificate use the all-zero fingerprint.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::keys;
use crate::model::{Fingerprint, Sha256, UnixTime};
use crate::store::{decode, encode, Store};

/// One thing that happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub at: UnixTime,
    /// The certificate concerned, if any.
    pub fingerprint: Option<Fingerprint>,
    /// Who did it: a user name, `certd`, or a CRL URL.
    pub actor: String,
    /// What happened, kebab-case (`revoked`, `snoozed`, `reminder-sent`, `superseded-by`,
    /// `supersedes`, `issued`, `agent-approved`, ...).
    pub action: String,
    /// Details for people (reason, threshold, recipient, other fingerprint, ...).
    pub detail: String,
}

const NO_CERTIFICATE: Sha256 = Sha256([0; 32]);

fn prefix(fp: &Fingerprint) -> Vec<u8> {
    let mut k = Vec::with_capacity(49);
    k.push(keys::AUDIT);
    k.extend_from_slice(&fp.0);
    k
}

impl Store {
    /// Appends an event to the audit history (durably: flushed before returning).
    pub fn record_audit(&self, event: &AuditEvent) -> Result<()> {
        let mut key = prefix(&event.fingerprint.unwrap_or(NO_CERTIFICATE));
        key.extend_from_slice(&keys::time_bytes(event.at));
        key.extend_from_slice(&self.next_segment_id()?.to_be_bytes());
        self.tree().insert(key, encode(event)?)?;
        self.flush()
    }

    /// The audit history of one certificate, oldest first.
    pub fn history(&self, fp: &Fingerprint) -> Result<Vec<AuditEvent>> {
        self.tree()
            .scan_prefix(prefix(fp))
            .map(|kv| decode(&kv?.1, "audit event"))
            .collect()
    }

    /// Every audit event, in no particular order across certificates.
    pub fn audit_log(&self) -> Result<Vec<AuditEvent>> {
        self.tree()
            .scan_prefix([keys::AUDIT])
            .map(|kv| decode(&kv?.1, "audit event"))
            .collect()
    }
}
