//! Which reminders are due: per certificate and tracked file, the policy's thresholds, who
//! was told already, snoozes, and the urgency of each entry ([`due`]).

use std::collections::{BTreeMap, HashMap};

use certctl_store::{
    Certificate, Fingerprint, SentReminder, Snooze, Store, StoreError, TrackedArtifact, UnixTime,
};

use super::digest::{Digest, Entry, Urgency};
use super::snooze::silences;
use crate::duration::days_left;
use crate::policy::{self, PolicySet, Successors};

/// Whether `recipient` was already told about `threshold` or a more urgent one.
pub(super) fn told(sent: &[SentReminder], recipient: &str, threshold: i64) -> bool {
    sent.iter()
        .any(|s| s.recipient == recipient && s.threshold_secs <= threshold)
}

/// The digest group of something expiring at `expires` under `policy`.
fn urgency(policy: &policy::Policy, expires: UnixTime, now: UnixTime) -> Urgency {
    match policy.state_at(expires, now) {
        policy::State::Expired => Urgency::Expired,
        policy::State::Critical => Urgency::Critical,
        _ => Urgency::Warn,
    }
}

/// Every digest due at `now`, by recipient (sorted): certificates and tracked artifacts.
///
/// Two passes over the store, holding only what may be reminded about: the first picks the
/// certificates past a threshold, the second looks for a renewed successor of just those.
pub(crate) fn due(
    store: &Store,
    policies: &PolicySet,
    now: UnixTime,
) -> Result<Vec<Digest>, StoreError> {
    let snoozes: HashMap<Fingerprint, Snooze> = store
        .snoozes()?
        .into_iter()
        .map(|s| (s.fingerprint, s))
        .collect();
    let mut candidates = due_certificates(store, policies, &snoozes, now)?;
    // Agents that stopped renewing: their newest credential, at the expiry threshold.
    let mut stalled: HashMap<Fingerprint, String> = HashMap::new();
    for s in crate::fleet::stalled::stalled_renewals(store, Some(policies), now)? {
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
    let renewal_notes = crate::pki::renewal::reminder_notes(store)?;
    let mut by_recipient: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    for (cert, policy, threshold) in &candidates {
        let threshold = *threshold;
        let stall = stalled.get(&cert.fingerprint());
        let renewal = successors.renewal(cert);
        if stall.is_none() && matches!(renewal, Some(policy::Renewal::Renewed(_))) {
            continue;
        }
        let fp = cert.fingerprint();
        let sent = store.sent_reminders(&fp)?;
        let manual = match renewal_notes.get(&fp) {
            Some(note) => Some(note.clone()),
            None => crate::pki::renewal::nobody_can_renew(store, cert, policy)
                .map_err(|e| StoreError::Io(e.to_string()))?,
        };
        let note = certificate_note(cert, policy, &renewal, stall, manual, now);
        for recipient in &policy.recipients {
            if told(&sent, recipient, threshold) {
                continue;
            }
            by_recipient
                .entry(recipient.clone())
                .or_default()
                .push(certificate_entry(
                    cert,
                    policy,
                    threshold,
                    note.clone(),
                    now,
                ));
        }
    }
    due_artifacts(store, policies, &snoozes, now, &mut by_recipient)?;
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

/// The first pass: the certificates past a reminder threshold of their policy, with that
/// threshold; revoked, untracked, renewal-pending and snoozed ones are left out.
fn due_certificates<'p>(
    store: &Store,
    policies: &'p PolicySet,
    snoozes: &HashMap<Fingerprint, Snooze>,
    now: UnixTime,
) -> Result<Vec<(Certificate, &'p policy::Policy, i64)>, StoreError> {
    let mut candidates = Vec::new();
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
        if threshold == 0 && crate::fleet::stalled::renewal_expected(&cert) {
            continue;
        }
        if snoozes
            .get(&cert.fingerprint())
            .is_some_and(|s| silences(s, cert.facts.not_after, now))
        {
            continue;
        }
        candidates.push((cert, policy, threshold));
    }
    Ok(candidates)
}

/// What a certificate's reminder says beside the dates: a stalled agent, a renewal a person
/// must do, a renewal not yet served, a stalled renewal, or no renewal at all once expired.
fn certificate_note(
    cert: &Certificate,
    policy: &policy::Policy,
    renewal: &Option<policy::Renewal>,
    stall: Option<&String>,
    manual: Option<String>,
    now: UnixTime,
) -> Option<String> {
    let expired = cert.facts.not_after <= now;
    match (renewal, policy.renewal_stalled_days(cert, now)) {
        _ if stall.is_some() => stall.cloned(),
        _ if manual.is_some() => manual,
        (Some(policy::Renewal::NotReloaded { by, endpoints }), _) => Some(format!(
            "renewed on disk ({}), still served by {}: reload the service",
            &by.to_hex()[..16],
            endpoints.join(", ")
        )),
        (_, Some(d)) => Some(format!("renewal stalled for {d} days")),
        (_, None) if expired => {
            Some("not renewed: no newer certificate for this subject and role was seen".to_string())
        }
        (_, None) => None,
    }
}

/// A certificate's line in a digest.
fn certificate_entry(
    cert: &Certificate,
    policy: &policy::Policy,
    threshold: i64,
    note: Option<String>,
    now: UnixTime,
) -> Entry {
    Entry {
        fingerprint: cert.fingerprint().to_hex(),
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
        note,
        violations: policy.violations(cert),
    }
}

/// The tracked artifacts past a reminder threshold of their policy, added to the digests;
/// deleted and snoozed ones are left out.
fn due_artifacts(
    store: &Store,
    policies: &PolicySet,
    snoozes: &HashMap<Fingerprint, Snooze>,
    now: UnixTime,
    by_recipient: &mut BTreeMap<String, Vec<Entry>>,
) -> Result<(), StoreError> {
    let gone = store.artifacts_gone()?;
    for a in store.artifacts()? {
        // A deleted tracked file is not reminded about (marked gone by a scan or a pass).
        if gone.contains_key(&a.id) || !crate::inventory::artifacts::is_present(&a) {
            continue;
        }
        let Some(policy) = policies.select_artifact(&a) else {
            continue;
        };
        let Some(threshold) = policy.crossed_at(a.expires, now) else {
            continue;
        };
        // Snoozed like a certificate, never once it has expired.
        if snoozes
            .get(&a.id)
            .is_some_and(|s| silences(s, a.expires, now))
        {
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
                .push(artifact_entry(&a, policy, threshold, now));
        }
    }
    Ok(())
}

/// A tracked artifact's line in a digest.
fn artifact_entry(
    a: &TrackedArtifact,
    policy: &policy::Policy,
    threshold: i64,
    now: UnixTime,
) -> Entry {
    Entry {
        fingerprint: a.id.to_hex(),
        name: a.name.clone(),
        subject: format!("{} {}", a.kind, a.path),
        role: None,
        credential_kind: None,
        artifact_kind: Some(a.kind.clone()),
        path: Some(a.path.clone()),
        sources: vec![a.path.clone()],
        not_after: a.expires,
        days_left: days_left(a.expires, now),
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
    }
}
