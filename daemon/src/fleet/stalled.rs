//! Stalled renewals: agents whose ephemeral credentials stopped being renewed.
//!
//! An agent's ephemeral credential (role `agent`, valid 24 hours or less) expires by
//! design every few hours; the agent is expected to have a newer one by then. What must
//! never go unnoticed is an agent that stopped renewing: its **newest** credential expired
//! more than a grace period ago. That agent is a *stalled renewal*: `certctl check` fails
//! (critical, `stalled=N` in the performance data), the reminder pass reminds about its
//! newest credential ("renewal stalled: newest credential of agent X expired at T"), and
//! `certctl policy explain` says so.
//!
//! - **The agent** of a credential is its subject CN, else its first SAN
//!   ([`crate::fleet::agents::agent_name`]), compared without case.
//! - **The newest credential** is the agent's ephemeral credential that expires last,
//!   revoked or not. An agent whose newest credential was revoked (cut off on purpose), or
//!   is no longer in any file or endpoint (the agent was removed), is not stalled.
//! - **The grace** is the `grace` of the policy that applies to the newest credential,
//!   else [`DEFAULT_GRACE_LIFETIMES`] times that credential's own lifetime (at least
//!   [`MIN_DEFAULT_GRACE_SECS`]): 12 hours for the usual 6-hour credential. Two whole
//!   lifetimes because a healthy agent may miss one renewal (a reboot, a network blip, a
//!   scan that has not yet seen the renewed file), while two missed renewals in a row is a
//!   stall; and it scales with the agent's own renewal cadence, where a fixed time would be
//!   too eager for 24-hour credentials and too lax for 1-hour ones.
//!
//! [`NewestCredentials`] keeps the newest credential per agent from any stream of
//! certificates, and [`judge`] decides whether one newest credential is stalled;
//! [`stalled_renewals`] feeds them from the store, and is the one entry
//! point for `check`, the reminder pass and reports.

use std::collections::{BTreeMap, HashMap};

use certctl_store::{Certificate, CredentialKind, Fingerprint, Role, Store, StoreError, UnixTime};
use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::policy::PolicySet;

/// Without a policy `grace`, an agent is stalled this many credential lifetimes after its
/// newest credential expired.
pub(crate) const DEFAULT_GRACE_LIFETIMES: i64 = 2;
/// The default grace is never shorter than this (one hour), whatever the lifetime.
pub(crate) const MIN_DEFAULT_GRACE_SECS: i64 = 3_600;

/// An agent whose newest ephemeral credential expired more than its grace ago.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StalledRenewal {
    /// The agent (its credentials' subject CN, else first SAN).
    pub agent: String,
    /// The newest credential's SHA-256 fingerprint.
    pub fingerprint: Fingerprint,
    /// When the newest credential expired.
    pub not_after: UnixTime,
    /// The grace that was allowed after that.
    pub grace: Duration,
    /// The policy whose `grace` applied; `None` for the default grace.
    pub grace_policy: Option<String>,
    /// Where the newest credential is: `path#index`, `tls://host:port#index`.
    pub sources: Vec<String>,
}

impl StalledRenewal {
    /// When the renewal became stalled: expiry plus grace.
    pub fn stalled_since(&self) -> UnixTime {
        self.not_after.saturating_add(self.grace.as_secs())
    }

    /// `renewal stalled: newest credential of agent X expired at T`.
    pub fn note(&self) -> String {
        format!(
            "renewal stalled: newest credential of agent {} expired at {} (grace {})",
            self.agent,
            certctl_store::rfc3339(self.not_after),
            self.grace
        )
    }
}

/// Whether `cert` is a credential whose renewal is expected: an ephemeral agent credential.
pub fn renewal_expected(cert: &Certificate) -> bool {
    cert.role == Role::Agent && cert.credential_kind() == Some(CredentialKind::Ephemeral)
}

/// The lowercase key of an agent.
fn agent_key(cert: &Certificate) -> String {
    crate::fleet::agents::agent_name(cert).to_lowercase()
}

/// What is kept of an agent's newest credential.
#[derive(Clone, Debug)]
struct Newest {
    fingerprint: Fingerprint,
    not_after: UnixTime,
    revoked: bool,
    present: bool,
}

/// The newest ephemeral credential of each agent, from any stream of certificates (the
/// others are ignored).
#[derive(Default)]
pub struct NewestCredentials {
    by_agent: HashMap<String, Newest>,
}

impl NewestCredentials {
    /// Takes one more certificate into account.
    pub fn add(&mut self, cert: &Certificate) {
        if !renewal_expected(cert) {
            return;
        }
        let this = Newest {
            fingerprint: cert.fingerprint(),
            not_after: cert.facts.not_after,
            revoked: cert.revocation.is_some(),
            present: cert.current_sources().next().is_some(),
        };
        let slot = self.by_agent.entry(agent_key(cert)).or_insert(this.clone());
        if (this.not_after, this.fingerprint) > (slot.not_after, slot.fingerprint) {
            *slot = this;
        }
    }

    /// The newest credential of the agent `cert` belongs to.
    pub fn newest_for(&self, cert: &Certificate) -> Option<Fingerprint> {
        self.by_agent.get(&agent_key(cert)).map(|n| n.fingerprint)
    }

    /// The newest credentials that expired before `now` and are neither revoked nor gone:
    /// the only ones that can be stalled ([`judge`] decides).
    pub fn expired(&self, now: UnixTime) -> Vec<Fingerprint> {
        self.by_agent
            .values()
            .filter(|n| n.not_after <= now && !n.revoked && n.present)
            .map(|n| n.fingerprint)
            .collect()
    }
}

/// The grace for `newest` and the policy that set it (`None`: the default).
pub fn grace(newest: &Certificate, policies: Option<&PolicySet>) -> (Duration, Option<String>) {
    match policies
        .and_then(|set| set.select(newest))
        .and_then(|p| p.grace.map(|g| (g, p.name.clone())))
    {
        Some((g, name)) => (g, Some(name)),
        None => (default_grace(newest), None),
    }
}

/// [`DEFAULT_GRACE_LIFETIMES`] times the credential's lifetime, at least
/// [`MIN_DEFAULT_GRACE_SECS`].
pub(crate) fn default_grace(cert: &Certificate) -> Duration {
    Duration::from_secs(
        cert.facts
            .validity_secs()
            .saturating_mul(DEFAULT_GRACE_LIFETIMES)
            .max(MIN_DEFAULT_GRACE_SECS),
    )
}

/// Whether `newest`, the newest credential of its agent, is a stalled renewal at `now`:
/// expired more than its grace ago, not revoked, still present somewhere.
pub fn judge(
    newest: &Certificate,
    policies: Option<&PolicySet>,
    now: UnixTime,
) -> Option<StalledRenewal> {
    if !renewal_expected(newest)
        || newest.revocation.is_some()
        || newest.current_sources().next().is_none()
    {
        return None;
    }
    let (grace, grace_policy) = grace(newest, policies);
    if now.saturating_sub(newest.facts.not_after) <= grace.as_secs() {
        return None;
    }
    Some(StalledRenewal {
        agent: crate::fleet::agents::agent_name(newest),
        fingerprint: newest.fingerprint(),
        not_after: newest.facts.not_after,
        grace,
        grace_policy,
        sources: newest
            .current_sources()
            .map(|s| s.location.to_string())
            .collect(),
    })
}

/// Agents whose newest ephemeral credential expired more than its grace ago, at `now`
/// (rules: [`crate::fleet::stalled`]; each grace from the policy of `policies` that applies to the
/// newest credential, else the default), sorted by expiry then agent. The one question
/// `check`, the reminder pass and reports ask about stalled renewals.
pub(crate) fn stalled_renewals(
    store: &Store,
    policies: Option<&PolicySet>,
    now: UnixTime,
) -> Result<Vec<StalledRenewal>, StoreError> {
    // A stalled agent's newest credential is expired yet still deployed and not revoked:
    // a live entry of the agent index with not_after <= now (a range of its expiry-ordered
    // entries, however many agents are live). Only those agents' own
    // credentials are read (in steady state, the few agents between a renewal and its
    // scan, and the stalled ones), never every agent record.
    let mut candidates: BTreeMap<String, UnixTime> = BTreeMap::new();
    for entry in store.live_agent_credentials_expired_by(now)? {
        if entry.not_after <= now {
            let since = candidates
                .entry(entry.agent.to_lowercase())
                .or_insert(entry.not_after);
            *since = (*since).min(entry.not_after);
        }
    }
    let mut out = Vec::new();
    for (agent, since) in candidates {
        let mut newest = NewestCredentials::default();
        for credential in store.agent_credentials(&agent)? {
            // An older credential cannot be the newest of a stalled agent: it would be an
            // expired live one itself, and `since` is the earliest of those.
            if credential.not_after < since {
                continue;
            }
            if let Some(cert) = store.get(&credential.fingerprint)? {
                newest.add(&cert);
            }
        }
        for fp in newest.expired(now) {
            if let Some(cert) = store.get(&fp)? {
                out.extend(judge(&cert, policies, now));
            }
        }
    }
    out.sort_by(|a, b| (a.not_after, &a.agent).cmp(&(b.not_after, &b.agent)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use certctl_store::{
        CertificateFacts, KeyAlgorithm, Sha256, Source, SourceLocation, SubjectAltNames,
    };

    const HOUR: i64 = 3600;

    fn cred(agent: &str, n: u8, not_after: UnixTime, path: Option<&str>) -> Certificate {
        let mut fp = [0u8; 32];
        fp[0] = n;
        fp[1] = agent.len() as u8;
        let facts = CertificateFacts {
            fingerprint: Sha256(fp),
            subject: format!("CN={agent}"),
            subject_cn: Some(agent.to_string()),
            issuer: "CN=Agents CA".into(),
            serial: format!("{n:x}"),
            not_before: not_after - 6 * HOUR,
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
            crl_distribution_points: Vec::new(),
            ocsp_urls: Vec::new(),
        };
        let mut c = Certificate::new(facts, Role::Agent, 0);
        c.sources.push(Source {
            location: SourceLocation::File {
                path: path.unwrap_or("/agents/x.pem").to_string(),
                index: 0,
            },
            first_seen: 0,
            last_seen: 0,
            gone_since: path.is_none().then_some(1),
        });
        c
    }

    #[test]
    fn only_the_newest_credential_counts_and_only_past_its_grace() {
        let now = 100 * HOUR;
        let old = cred("agent-1", 1, now - 30 * HOUR, Some("/a/1.pem"));
        let newest = cred("agent-1", 2, now - 5 * HOUR, Some("/a/1.pem"));
        let mut n = NewestCredentials::default();
        n.add(&old);
        n.add(&newest);
        assert_eq!(n.newest_for(&old), Some(newest.fingerprint()));
        // 5 hours past expiry, default grace 12 hours (two 6-hour lifetimes): not yet.
        assert_eq!(default_grace(&newest), Duration::from_secs(12 * HOUR));
        assert!(judge(&newest, None, now).is_none());
        let s = judge(&newest, None, now + 8 * HOUR).expect("stalled after 13 hours");
        assert_eq!(s.agent, "agent-1");
        assert_eq!(s.stalled_since(), newest.facts.not_after + 12 * HOUR);
        assert!(s
            .note()
            .starts_with("renewal stalled: newest credential of agent agent-1 expired at "));
    }

    #[test]
    fn revoked_or_gone_newest_credentials_are_not_stalled() {
        let now = 100 * HOUR;
        let mut revoked = cred("agent-2", 1, now - 30 * HOUR, Some("/a/2.pem"));
        revoked.revocation = Some(certctl_store::Revocation {
            revoked_at: 0,
            reason: certctl_store::RevocationReason::KeyCompromise,
            revoked_by: "test".into(),
        });
        let gone = cred("agent-3", 1, now - 30 * HOUR, None);
        let mut n = NewestCredentials::default();
        n.add(&revoked);
        n.add(&gone);
        assert!(n.expired(now).is_empty());
        assert!(judge(&revoked, None, now).is_none());
        assert!(judge(&gone, None, now).is_none());
    }
}
