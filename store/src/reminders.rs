//! What the reminder pass remembers: which reminders were sent to whom, which certificates
//! are snoozed, and how delivery to each recipient (and the SMTP server) is going.
//!
//! - `N` + fingerprint + recipient + `\0` + threshold: a [`SentReminder`]. A reminder for a
//!   (certificate, threshold, recipient) is sent at most once: the pass looks here first, and
//!   a successful delivery writes all the digest's entries in one atomic batch. Reminders
//!   about tracked artifacts are kept the same way under the artifact's own keys (`X` + id +
//!   `N` + recipient + `\0` + threshold, see `fleet.rs`), written in the same batch.
//! - `Z` + fingerprint: the [`Snooze`] of a certificate.
//! - `Q` + `r` + recipient: the [`DeliveryState`] of a recipient whose digest could not be
//!   delivered (attempts, next attempt for the backoff, last error); `Q` + `s`: the
//!   [`SmtpState`] (last error and last success talking to the SMTP server); `Q` + `c`: the
//!   delivery counters (digests accepted by the SMTP server, failed delivery attempts) since
//!   the store was created, for the Prometheus counters. Each is written in the same atomic
//!   batch as the delivery or failure it counts. `Q` + `o`: the [`DeliveryOutcome`] of the
//!   last reminder pass that tried to deliver anything (what `status` shows).

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::keys;
use crate::model::{Fingerprint, UnixTime};
use crate::store::{decode, encode, Store};

/// One reminder that was delivered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentReminder {
    pub fingerprint: Fingerprint,
    /// The e-mail address it went to (lowercase).
    pub recipient: String,
    /// The threshold, in seconds before expiry (0 = expired).
    pub threshold_secs: i64,
    pub sent_at: UnixTime,
}

/// A certificate whose reminders are silenced until a date (expired ones never are).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snooze {
    pub fingerprint: Fingerprint,
    pub until: UnixTime,
    pub reason: String,
    /// Who snoozed it (a user name).
    pub by: String,
    /// When.
    pub at: UnixTime,
}

/// A recipient whose digest is pending because delivery failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryState {
    pub recipient: String,
    /// Failed attempts so far.
    pub attempts: u32,
    pub first_failure: UnixTime,
    pub last_attempt: UnixTime,
    /// Not retried by a scheduled pass before this time (backoff).
    pub next_attempt: UnixTime,
    pub last_error: String,
    /// Reminders waiting for this recipient at the last attempt.
    pub pending: u64,
}

/// How talking to the SMTP server went lately.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmtpState {
    /// The last error, cleared by the next successful delivery.
    pub last_error: Option<String>,
    pub last_error_at: Option<UnixTime>,
    pub last_success_at: Option<UnixTime>,
}

/// What the last reminder pass that tried to deliver a digest achieved: `status` shows it,
/// so that a delivery that failed, and a retry that then succeeded, are both visible.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryOutcome {
    /// When the pass ran.
    pub at: UnixTime,
    /// Recipients whose digest the SMTP server accepted.
    pub delivered: u64,
    /// The reminders those digests held.
    pub reminders_delivered: u64,
    /// Of the recipients delivered to, those whose digest had failed before (a retry that
    /// succeeded).
    pub retried: u64,
    /// Recipients whose digest was not accepted (it stays pending).
    pub failed: u64,
    /// The first failure: `RECIPIENT: CAUSE`.
    pub error: Option<String>,
}

fn sent_prefix(fp: &Fingerprint) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.push(keys::SENT_REMINDER);
    k.extend_from_slice(&fp.0);
    k
}

fn sent_key(s: &SentReminder) -> Vec<u8> {
    let mut k = sent_prefix(&s.fingerprint);
    k.extend_from_slice(s.recipient.as_bytes());
    k.push(0);
    k.extend_from_slice(&keys::time_bytes(s.threshold_secs));
    k
}

fn snooze_key(fp: &Fingerprint) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.push(keys::SNOOZE);
    k.extend_from_slice(&fp.0);
    k
}

fn delivery_key(recipient: &str) -> Vec<u8> {
    let mut k = vec![keys::DELIVERY, b'r'];
    k.extend_from_slice(recipient.as_bytes());
    k
}

const SMTP_STATE_KEY: [u8; 2] = [keys::DELIVERY, b's'];
const COUNTERS_KEY: [u8; 2] = [keys::DELIVERY, b'c'];
const OUTCOME_KEY: [u8; 2] = [keys::DELIVERY, b'o'];

/// Delivery attempts since the store was created (`Q` + `c`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct DeliveryCounters {
    /// Digests the SMTP server accepted.
    delivered: u64,
    /// Digests it did not (connection, authentication, refusal, broken connection).
    failed: u64,
}

impl Store {
    /// The reminders sent about one certificate, to anyone.
    pub fn sent_reminders(&self, fp: &Fingerprint) -> Result<Vec<SentReminder>> {
        self.tree()
            .scan_prefix(sent_prefix(fp))
            .map(|kv| decode(&kv?.1, "sent reminder"))
            .collect()
    }

    /// Records, atomically and durably, that one recipient's digest was delivered: the
    /// reminders it held, the end of the recipient's pending state, and the SMTP success.
    pub fn record_delivery(
        &self,
        recipient: &str,
        sent: &[SentReminder],
        at: UnixTime,
    ) -> Result<()> {
        self.record_delivery_with_artifacts(recipient, sent, &[], at)
    }

    /// [`Store::record_delivery`] for a digest that also held reminders about tracked
    /// artifacts (`artifacts`: their `fingerprint` is the artifact id); one atomic batch.
    pub fn record_delivery_with_artifacts(
        &self,
        recipient: &str,
        sent: &[SentReminder],
        artifacts: &[SentReminder],
        at: UnixTime,
    ) -> Result<()> {
        let mut batch = sled::Batch::default();
        for s in sent {
            batch.insert(sent_key(s), encode(s)?);
        }
        for s in artifacts {
            batch.insert(crate::fleet::artifact_sent_key(s), encode(s)?);
        }
        batch.remove(delivery_key(recipient));
        let mut smtp = self.smtp_state()?;
        smtp.last_error = None;
        smtp.last_success_at = Some(at);
        batch.insert(SMTP_STATE_KEY.to_vec(), encode(&smtp)?);
        let mut counters = self.counters()?;
        counters.delivered = counters.delivered.saturating_add(1);
        batch.insert(COUNTERS_KEY.to_vec(), encode(&counters)?);
        self.tree().apply_batch(batch)?;
        self.flush()
    }

    /// Records that delivery to `state.recipient` failed (its reminders stay pending), and
    /// the error as the SMTP server's last error.
    pub fn record_delivery_failure(&self, state: &DeliveryState) -> Result<()> {
        let mut batch = sled::Batch::default();
        batch.insert(delivery_key(&state.recipient), encode(state)?);
        let mut smtp = self.smtp_state()?;
        smtp.last_error = Some(state.last_error.clone());
        smtp.last_error_at = Some(state.last_attempt);
        batch.insert(SMTP_STATE_KEY.to_vec(), encode(&smtp)?);
        let mut counters = self.counters()?;
        counters.failed = counters.failed.saturating_add(1);
        batch.insert(COUNTERS_KEY.to_vec(), encode(&counters)?);
        self.tree().apply_batch(batch)?;
        self.flush()
    }

    fn counters(&self) -> Result<DeliveryCounters> {
        match self.tree().get(COUNTERS_KEY)? {
            Some(v) => decode(&v, "delivery counters"),
            None => Ok(DeliveryCounters::default()),
        }
    }

    /// How many digests the SMTP server accepted since the store was created (a counter:
    /// it never goes down).
    pub fn smtp_deliveries_total(&self) -> Result<u64> {
        Ok(self.counters()?.delivered)
    }

    /// How many delivery attempts failed since the store was created, one per digest and
    /// attempt (the server unreachable, refusing the login or the message, or the
    /// connection breaking); a counter.
    pub fn smtp_delivery_failures_total(&self) -> Result<u64> {
        Ok(self.counters()?.failed)
    }

    /// The pending state of a recipient, if its last delivery failed.
    pub fn delivery_state(&self, recipient: &str) -> Result<Option<DeliveryState>> {
        match self.tree().get(delivery_key(recipient))? {
            Some(v) => Ok(Some(decode(&v, "delivery state")?)),
            None => Ok(None),
        }
    }

    /// Every recipient with pending reminders.
    pub fn delivery_states(&self) -> Result<Vec<DeliveryState>> {
        self.tree()
            .scan_prefix([keys::DELIVERY, b'r'])
            .map(|kv| decode(&kv?.1, "delivery state"))
            .collect()
    }

    /// Forgets the pending state of a recipient (nothing is due for it any more).
    pub fn clear_delivery_state(&self, recipient: &str) -> Result<()> {
        self.tree().remove(delivery_key(recipient))?;
        Ok(())
    }

    /// The SMTP server's last error and success.
    pub fn smtp_state(&self) -> Result<SmtpState> {
        match self.tree().get(SMTP_STATE_KEY)? {
            Some(v) => decode(&v, "SMTP state"),
            None => Ok(SmtpState::default()),
        }
    }

    /// Records what a reminder pass delivered (replacing the previous pass's outcome).
    /// Durable on return.
    pub fn record_delivery_outcome(&self, outcome: &DeliveryOutcome) -> Result<()> {
        self.tree().insert(OUTCOME_KEY, encode(outcome)?)?;
        self.flush()
    }

    /// What the last reminder pass that tried to deliver anything achieved.
    pub fn last_delivery_outcome(&self) -> Result<Option<DeliveryOutcome>> {
        match self.tree().get(OUTCOME_KEY)? {
            Some(v) => Ok(Some(decode(&v, "delivery outcome")?)),
            None => Ok(None),
        }
    }

    /// Records an error that is not about one recipient (e.g. the SMTP password file cannot
    /// be read, so no digest could be sent at all).
    pub fn record_smtp_error(&self, error: &str, at: UnixTime) -> Result<()> {
        let mut smtp = self.smtp_state()?;
        smtp.last_error = Some(error.to_string());
        smtp.last_error_at = Some(at);
        self.tree().insert(SMTP_STATE_KEY, encode(&smtp)?)?;
        self.flush()
    }

    /// Snoozes a certificate (replacing an earlier snooze). Durable on return.
    pub fn put_snooze(&self, snooze: &Snooze) -> Result<()> {
        self.tree()
            .insert(snooze_key(&snooze.fingerprint), encode(snooze)?)?;
        self.flush()
    }

    /// The snooze of one certificate, whether or not it is still in force.
    pub fn snooze_of(&self, fp: &Fingerprint) -> Result<Option<Snooze>> {
        match self.tree().get(snooze_key(fp))? {
            Some(v) => Ok(Some(decode(&v, "snooze")?)),
            None => Ok(None),
        }
    }

    /// Every recorded snooze, in fingerprint order (expired ones included).
    pub fn snoozes(&self) -> Result<Vec<Snooze>> {
        self.tree()
            .scan_prefix([keys::SNOOZE])
            .map(|kv| decode(&kv?.1, "snooze"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sha256;

    #[test]
    fn sent_reminders_and_snoozes_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let fp = Sha256([7; 32]);
        let other = Sha256([8; 32]);
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.smtp_deliveries_total().unwrap(), 0);
            assert_eq!(store.smtp_delivery_failures_total().unwrap(), 0);
            let failure = DeliveryState {
                recipient: "ops@example.org".into(),
                attempts: 1,
                first_failure: 10,
                last_attempt: 10,
                next_attempt: 70,
                last_error: "connection refused".into(),
                pending: 1,
            };
            store.record_delivery_failure(&failure).unwrap();
            assert_eq!(
                store.smtp_state().unwrap().last_error.as_deref(),
                Some("connection refused")
            );
            assert_eq!(store.delivery_states().unwrap(), vec![failure]);
            let sent = SentReminder {
                fingerprint: fp,
                recipient: "ops@example.org".into(),
                threshold_secs: 30 * 86_400,
                sent_at: 100,
            };
            store
                .record_delivery("ops@example.org", &[sent], 100)
                .unwrap();
            store
                .put_snooze(&Snooze {
                    fingerprint: fp,
                    until: 1000,
                    reason: "change window".into(),
                    by: "alice".into(),
                    at: 100,
                })
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let sent = store.sent_reminders(&fp).unwrap();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].threshold_secs, 30 * 86_400);
        assert!(store.sent_reminders(&other).unwrap().is_empty());
        assert!(store.delivery_states().unwrap().is_empty());
        let smtp = store.smtp_state().unwrap();
        assert_eq!((smtp.last_error, smtp.last_success_at), (None, Some(100)));
        assert_eq!(store.smtp_deliveries_total().unwrap(), 1);
        assert_eq!(store.smtp_delivery_failures_total().unwrap(), 1);
        assert_eq!(store.snooze_of(&fp).unwrap().unwrap().until, 1000);
        assert_eq!(store.snoozes().unwrap().len(), 1);
        assert!(store.snooze_of(&other).unwrap().is_none());
    }
}
