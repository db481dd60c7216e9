//! What certd's automatic renewal remembers per certificate (issue 20): why a renewal was
//! started, which workflow carries it, and how its attempts went (for the backoff, `check`,
//! `/metrics` and the reminder that names the failure).
//!
//! - `E` + `r` + fingerprint (32) → [`RenewalRecord`] of the certificate being renewed.
//! - `E` + `c` + method + `\0` + outcome → how many automatic renewals ended so
//!   (`certctl_renewals_total{method,outcome}`), a counter that never goes down.
//!
//! Each write is flushed before returning: a renewal pass records the workflow it started
//! before running it, so a crash never leaves a started renewal unrecorded.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::keys;
use crate::model::{Fingerprint, UnixTime};
use crate::store::{decode, encode, Store};

const RECORD: u8 = b'r';
const COUNTER: u8 = b'c';

/// The automatic renewal of one certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewalRecord {
    /// The certificate being renewed.
    pub fingerprint: Fingerprint,
    /// `managed-ca`, `scep` or `manual`.
    pub method: String,
    /// Why it was started (`auto-renewal: expires D, renew_before X`).
    pub reason: String,
    /// The regenerate workflow carrying it, once started.
    pub workflow: Option<u64>,
    /// When the renewal was first started.
    pub started: UnixTime,
    /// Failed attempts since the last success (0: none failed).
    pub failures: u32,
    /// When the first of those failures happened.
    pub first_failure: Option<UnixTime>,
    pub last_attempt: UnixTime,
    /// No attempt before this time (backoff).
    pub next_attempt: UnixTime,
    /// What stopped the last attempt.
    pub last_error: Option<String>,
    /// When the renewal finished (the new certificate deployed).
    pub finished: Option<UnixTime>,
    /// The new certificate, once issued.
    pub new: Option<Fingerprint>,
}

fn record_key(fp: &Fingerprint) -> Vec<u8> {
    let mut k = Vec::with_capacity(34);
    k.push(keys::RENEWAL);
    k.push(RECORD);
    k.extend_from_slice(&fp.0);
    k
}

fn counter_key(method: &str, outcome: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + method.len() + outcome.len());
    k.push(keys::RENEWAL);
    k.push(COUNTER);
    k.extend_from_slice(method.as_bytes());
    k.push(0);
    k.extend_from_slice(outcome.as_bytes());
    k
}

impl Store {
    /// Saves the renewal record of a certificate, durably.
    pub fn put_renewal(&self, record: &RenewalRecord) -> Result<()> {
        let value = encode(record)?;
        self.ensure_space(value.len() as u64)?;
        self.tree().insert(record_key(&record.fingerprint), value)?;
        self.flush()
    }

    /// The renewal record of a certificate.
    pub fn renewal(&self, fp: &Fingerprint) -> Result<Option<RenewalRecord>> {
        match self.tree().get(record_key(fp))? {
            Some(v) => Ok(Some(decode(&v, "renewal record")?)),
            None => Ok(None),
        }
    }

    /// Every renewal record, in fingerprint order.
    pub fn renewals(&self) -> Result<Vec<RenewalRecord>> {
        self.tree()
            .scan_prefix([keys::RENEWAL, RECORD])
            .map(|kv| decode(&kv?.1, "renewal record"))
            .collect()
    }

    /// Counts one automatic renewal that ended with `outcome` (`success`, `failure`),
    /// durably.
    pub fn count_renewal(&self, method: &str, outcome: &str) -> Result<()> {
        let key = counter_key(method, outcome);
        self.tree().update_and_fetch(&key, |old| {
            let n = old
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            Some(n.saturating_add(1).to_be_bytes().to_vec())
        })?;
        self.flush()
    }

    /// The renewal counters: (method, outcome, count), in key order.
    pub fn renewal_counts(&self) -> Result<Vec<(String, String, u64)>> {
        let mut out = Vec::new();
        for kv in self.tree().scan_prefix([keys::RENEWAL, COUNTER]) {
            let (k, v) = kv?;
            let body = &k[2..];
            let Some(split) = body.iter().position(|b| *b == 0) else {
                continue;
            };
            let n = <[u8; 8]>::try_from(v.as_ref())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            out.push((
                String::from_utf8_lossy(&body[..split]).into_owned(),
                String::from_utf8_lossy(&body[split + 1..]).into_owned(),
                n,
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sha256;

    #[test]
    fn renewal_records_and_counters_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let record = RenewalRecord {
            fingerprint: Sha256([3; 32]),
            method: "managed-ca".into(),
            reason: "auto-renewal: expires 2027-01-01, renew_before 30d".into(),
            workflow: Some(7),
            started: 10,
            failures: 2,
            first_failure: Some(11),
            last_attempt: 12,
            next_attempt: 13,
            last_error: Some("boom".into()),
            finished: None,
            new: None,
        };
        {
            let store = Store::open(dir.path()).unwrap();
            store.put_renewal(&record).unwrap();
            store.count_renewal("managed-ca", "success").unwrap();
            store.count_renewal("managed-ca", "success").unwrap();
            store.count_renewal("scep", "failure").unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.renewal(&record.fingerprint).unwrap(), Some(record));
        assert_eq!(store.renewals().unwrap().len(), 1);
        assert_eq!(
            store.renewal_counts().unwrap(),
            vec![
                ("managed-ca".into(), "success".into(), 2),
                ("scep".into(), "failure".into(), 1)
            ]
        );
    }
}
