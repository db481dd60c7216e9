//! Retention: removing expired certificates that nothing holds any more, in bounded atomic
//! batches, so that a fleet renewing ephemeral credentials four times a day does not grow
//! the store forever.
//!
//! **What is removed.** A certificate that no source holds any more (every file and
//! endpoint it was seen in has another certificate now, or is gone) once
//! - it is an *ephemeral* credential (validity ≤ 24 h) that expired more than
//!   [`RetentionPolicy::ephemeral_after_expiry`] ago (default 7 days), or
//! - it is any other leaf and expired, and last seen, more than
//!   [`RetentionPolicy::gone_after`] ago (default 90 days).
//!
//! **What is never removed**, however old: revoked certificates; CA certificates (chains and
//! issuer checks need them; there are few); certificates of managed CAs or issued by them;
//! certificates a workflow names (old or new); certificates with an audit event or a snooze;
//! anything still present in a source (also one whose sources overflowed the inline list,
//! or that a remembered file state still names).
//!
//! **What stays of a removed ephemeral credential**: a [`PrunedRenewals`] aggregate per
//! agent (its display name, lowercase; key `R`): how many were removed, when the first was
//! first seen, the first and last issuance and last expiry, and so the mean renewal
//! interval. Reports and stalled-renewal detection look at the agent's current certificate,
//! which is always kept (it is present in a source).
//!
//! **How.** [`Store::prune_batch`] walks the expiry index in key order from a
//! [`PruneCursor`] up to the latest expiry that can qualify, reads the records its postings
//! lead to, and removes at most `limit` of them in one atomic [`sled::Batch`] together with
//! everything that refers to them: their index postings (each posting segment that holds one
//! is rewritten without it, or dropped when nothing is left in it), their agent-index
//! entries, the reminders sent about them, and the per-agent aggregate. Every removal goes
//! through [`Removal::remove_certificate`]. A crash between batches leaves whole batches: the
//! store verifies clean after each, and the next pass continues where the records are.
//! Writers must not run concurrently with a batch (certd takes its writer lock per batch).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::agent_index;
use crate::error::Result;
use crate::ingest::{fp_prefix, index_entries, FpPrefix, Posting};
use crate::keys::{self, Index};
use crate::model::{Certificate, CredentialKind, Fingerprint, Role, UnixTime};
use crate::store::{decode, decode_postings, decode_record, encode, Store};

/// How long expired certificates that nothing holds are kept (`[retention]` in certd's
/// configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// Seconds an ephemeral credential is kept after it expired.
    pub ephemeral_after_expiry: i64,
    /// Seconds any other leaf is kept after it expired (and was last seen).
    pub gone_after: i64,
}

impl Default for RetentionPolicy {
    /// 7 days for ephemeral credentials: at 200,000 agents renewing every 6 hours that is
    /// about 5.6 million records at most (a week of renewals, for `history` and audits),
    /// and a bounded store. 90 days for other leaves: a quarter to notice and explain a
    /// vanished certificate, at a rate of replacement that is low.
    fn default() -> Self {
        RetentionPolicy {
            ephemeral_after_expiry: 7 * 86_400,
            gone_after: 90 * 86_400,
        }
    }
}

impl RetentionPolicy {
    /// The latest expiry a certificate can have and still be removed at `now`.
    fn cutoff(&self, now: UnixTime) -> UnixTime {
        now.saturating_sub(self.ephemeral_after_expiry.min(self.gone_after).max(0))
    }

    /// Whether `cert` is old enough and held by nothing (protections aside).
    pub fn is_due(&self, cert: &Certificate, now: UnixTime) -> bool {
        if cert.more_sources > 0 || cert.current_sources().next().is_some() {
            return false;
        }
        let since = match cert.credential_kind() {
            // Measured from expiry: a credential's own lifetime says when it stops mattering.
            Some(CredentialKind::Ephemeral) => cert
                .facts
                .not_after
                .saturating_add(self.ephemeral_after_expiry.max(0)),
            // Measured from expiry and from when it was last seen, whichever is later.
            _ => cert
                .facts
                .not_after
                .max(cert.last_seen)
                .saturating_add(self.gone_after.max(0)),
        };
        since <= now
    }
}

/// What retention removed of one agent's ephemeral credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrunedRenewals {
    /// The agent (display name of its certificates, as first removed).
    pub agent: String,
    /// Credentials removed.
    pub count: u64,
    /// When the first of them was first seen.
    pub first_seen: UnixTime,
    /// The earliest and latest not_before (issuance) among them.
    pub first_issued: UnixTime,
    pub last_issued: UnixTime,
    /// The latest expiry among them.
    pub last_expiry: UnixTime,
}

impl PrunedRenewals {
    /// The mean time between two renewals, from the removed credentials' issuance times.
    pub fn renewal_interval_secs(&self) -> Option<i64> {
        (self.count > 1).then(|| {
            (self.last_issued - self.first_issued) / i64::try_from(self.count - 1).unwrap_or(1)
        })
    }

    fn add(&mut self, cert: &Certificate) {
        let f = &cert.facts;
        if self.count == 0 {
            *self = PrunedRenewals {
                agent: f.display_name().to_string(),
                count: 0,
                first_seen: cert.first_seen,
                first_issued: f.not_before,
                last_issued: f.not_before,
                last_expiry: f.not_after,
            };
        }
        self.count += 1;
        self.first_seen = self.first_seen.min(cert.first_seen);
        self.first_issued = self.first_issued.min(f.not_before);
        self.last_issued = self.last_issued.max(f.not_before);
        self.last_expiry = self.last_expiry.max(f.not_after);
    }
}

/// What retention has done to the store so far (key `M` `r`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionState {
    /// When the last batch removed something.
    pub last_prune: Option<UnixTime>,
    /// Certificates removed, in total.
    pub removed_total: u64,
    /// The latest expiry among the removed certificates: `history --at` before this time
    /// may miss removed ephemeral credentials (and other leaves gone for long).
    pub removed_expiring_through: Option<UnixTime>,
}

/// Where a prune pass stands: the last expiry-index key it went through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneCursor {
    after: Option<Vec<u8>>,
    /// Records of the index value after `after` already examined (a batch that filled up
    /// in the middle of that value): not examined, nor counted, again.
    examined_next: HashSet<Fingerprint>,
    /// Set when the pass reached the end of what can qualify.
    pub done: bool,
}

/// What one batch (or, summed, a pass) did. Field names are part of `store prune --json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    /// Expired certificate records read.
    pub examined: u64,
    /// Certificates removed (with `--dry-run`: that would be removed).
    pub removed: u64,
    /// Of them, ephemeral credentials (summed into per-agent aggregates).
    pub removed_ephemeral: u64,
    /// Old enough and held by nothing, but kept because they are revoked, CA
    /// certificates, a managed CA's or issued by one, named by a workflow, an audit event
    /// or a snooze.
    pub kept_protected: u64,
    /// Index postings removed with the records.
    pub postings_removed: u64,
    /// Index values rewritten without the removed postings, and values dropped because
    /// nothing was left in them.
    pub index_values_rewritten: u64,
    pub index_values_dropped: u64,
    /// Atomic batches written.
    pub batches: u64,
}

impl PruneReport {
    pub fn add(&mut self, other: &PruneReport) {
        self.examined += other.examined;
        self.removed += other.removed;
        self.removed_ephemeral += other.removed_ephemeral;
        self.kept_protected += other.kept_protected;
        self.postings_removed += other.postings_removed;
        self.index_values_rewritten += other.index_values_rewritten;
        self.index_values_dropped += other.index_values_dropped;
        self.batches += other.batches;
    }
}

/// What protects certificates from retention beyond their own record.
struct Protection {
    fingerprints: HashSet<Fingerprint>,
    /// The managed CAs' certificates (to tell what they issued).
    managed: Vec<Certificate>,
    /// Per directory: what its remembered file states say each file holds (read once per
    /// batch). A record a file state still names stays, so no file state leads nowhere.
    files: std::cell::RefCell<HashMap<String, HashMap<String, Vec<Fingerprint>>>>,
}

impl Protection {
    fn load(store: &Store) -> Result<Self> {
        let mut fingerprints = HashSet::new();
        let mut managed = Vec::new();
        for ca in store.managed_cas()? {
            fingerprints.insert(ca.fingerprint);
            if let Some(cert) = store.get(&ca.fingerprint)? {
                managed.push(cert);
            }
        }
        for w in store.workflows()? {
            fingerprints.insert(w.old);
            fingerprints.extend(w.new);
        }
        Ok(Protection {
            fingerprints,
            managed,
            files: Default::default(),
        })
    }

    fn protects(&self, store: &Store, cert: &Certificate) -> Result<bool> {
        let fp = cert.fingerprint();
        if cert.revocation.is_some()
            || cert.facts.is_ca
            || cert.role == Role::Ca
            || self.fingerprints.contains(&fp)
            || self.managed.iter().any(|ca| issued_by(ca, cert))
        {
            return Ok(true);
        }
        let mut audit = vec![keys::AUDIT];
        audit.extend_from_slice(&fp.0);
        if store
            .tree()
            .scan_prefix(audit)
            .next()
            .transpose()?
            .is_some()
        {
            return Ok(true);
        }
        let mut snooze = vec![keys::SNOOZE];
        snooze.extend_from_slice(&fp.0);
        if store.tree().get(snooze)?.is_some() {
            return Ok(true);
        }
        self.named_by_a_file_state(store, cert)
    }

    fn named_by_a_file_state(&self, store: &Store, cert: &Certificate) -> Result<bool> {
        let mut files = self.files.borrow_mut();
        for source in &cert.sources {
            let crate::model::SourceLocation::File { path, .. } = &source.location else {
                continue;
            };
            let Some((dir, name)) = path.rsplit_once('/') else {
                continue;
            };
            let dir = if dir.is_empty() { "/" } else { dir };
            if !files.contains_key(dir) {
                let states = store
                    .dir_files(dir)?
                    .into_iter()
                    .map(|f| (f.name, f.certificates))
                    .collect();
                files.insert(dir.to_string(), states);
            }
            if files
                .get(dir)
                .and_then(|states| states.get(name))
                .is_some_and(|held| held.contains(&cert.fingerprint()))
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// The rule of `certctl`'s managed-CA check (`ca::issued_by`): issuer DN equals the CA's
/// subject and, when both are known, the authority key id its subject key id.
fn issued_by(ca: &Certificate, cert: &Certificate) -> bool {
    ca.fingerprint() != cert.fingerprint()
        && cert.facts.issuer.eq_ignore_ascii_case(&ca.facts.subject)
        && match (&cert.facts.authority_key_id, &ca.facts.subject_key_id) {
            (Some(aki), Some(ski)) => aki == ski,
            _ => true,
        }
}

/// One atomic removal of certificates and everything that refers to them. Built by
/// [`Store::prune_batch`]; every certificate goes through [`Removal::remove_certificate`].
pub(crate) struct Removal<'s> {
    store: &'s Store,
    batch: crate::batch::Batch,
    /// Index values to rewrite: key → its postings (loaded once).
    values: BTreeMap<Vec<u8>, Vec<Posting>>,
    /// Segment prefixes (bucket + segment id) already loaded into `values`.
    loaded: HashSet<Vec<u8>>,
    /// Fingerprint prefixes of the removed records, and the postings each must lose.
    dropped: HashSet<FpPrefix>,
    expected: Vec<(Vec<u8>, i64, FpPrefix)>,
    aggregates: HashMap<String, PrunedRenewals>,
    removed: u64,
    removed_ephemeral: u64,
    latest_expiry: Option<UnixTime>,
    /// What the store's counts ([`crate::counts`]) lose with the removed records.
    counts: crate::CountChanges,
}

impl<'s> Removal<'s> {
    fn new(store: &'s Store) -> Self {
        Removal {
            store,
            batch: crate::batch::Batch::default(),
            values: BTreeMap::new(),
            loaded: HashSet::new(),
            dropped: HashSet::new(),
            expected: Vec::new(),
            aggregates: HashMap::new(),
            removed: 0,
            removed_ephemeral: 0,
            latest_expiry: None,
            counts: crate::CountChanges::new(),
        }
    }

    /// Removes one certificate record with everything that refers to it: its index
    /// postings (found in `segment`, the posting segment its expiry posting is in, else
    /// anywhere in their buckets), its agent-index entries, the reminders sent about it; an
    /// ephemeral credential is summed into its agent's [`PrunedRenewals`]. The only place a
    /// certificate record is ever deleted.
    pub(crate) fn remove_certificate(
        &mut self,
        cert: &Certificate,
        segment: [u8; 8],
    ) -> Result<()> {
        let fp = cert.fingerprint();
        self.batch
            .remove(keys::record_key(cert.facts.not_after, &fp.0).as_slice());
        self.batch.remove(keys::locator_key(&fp.0).as_slice());
        self.counts.record_change(Some(cert), None);
        agent_index::update(&mut self.batch, agent_index::entry_of(cert).as_ref(), None)?;
        let mut sent = vec![keys::SENT_REMINDER];
        sent.extend_from_slice(&fp.0);
        for kv in self.store.tree().scan_prefix(sent) {
            self.batch.remove(kv?.0);
        }
        let prefix = fp_prefix(&fp);
        self.dropped.insert(prefix);
        let week = keys::expiry_week(cert.facts.not_after);
        // Postings written with the record share its segment id; a role posting written at
        // creation may name a role the record no longer has.
        let mut segments: Vec<Vec<u8>> = Role::ALL
            .iter()
            .map(|r| {
                keys::bucket_prefix(Index::RoleExpiry, &keys::role_expiry_bucket(r.code(), week))
            })
            .collect();
        for (bucket, key) in index_entries(cert) {
            segments.push(bucket.clone());
            self.expected.push((bucket, key, prefix));
        }
        for mut bucket in segments {
            bucket.extend_from_slice(&segment);
            self.load(bucket)?;
        }
        if cert.credential_kind() == Some(CredentialKind::Ephemeral) {
            let agent = cert.facts.display_name().to_lowercase();
            if !self.aggregates.contains_key(&agent) {
                let stored = self.store.pruned_renewals(&agent)?.unwrap_or_default();
                self.aggregates.insert(agent.clone(), stored);
            }
            if let Some(a) = self.aggregates.get_mut(&agent) {
                a.add(cert);
            }
            self.removed_ephemeral += 1;
        }
        self.removed += 1;
        self.latest_expiry = self.latest_expiry.max(Some(cert.facts.not_after));
        Ok(())
    }

    /// Loads the index values under `prefix` (a bucket, or a bucket and segment id).
    fn load(&mut self, prefix: Vec<u8>) -> Result<()> {
        if !self.loaded.insert(prefix.clone()) {
            return Ok(());
        }
        for kv in self.store.tree().scan_prefix(&prefix) {
            let (k, v) = kv?;
            if !self.values.contains_key(k.as_ref()) {
                self.values.insert(k.to_vec(), decode_postings(&v)?);
            }
        }
        Ok(())
    }

    /// Writes everything (unless `dry_run`) in one atomic batch and says what it did.
    fn finish(mut self, now: UnixTime, dry_run: bool, report: &mut PruneReport) -> Result<()> {
        if self.removed == 0 {
            return Ok(());
        }
        // A posting not in its record's segment (a role changed later): look through the
        // whole bucket for it.
        let found: HashSet<(&[u8], i64, FpPrefix)> = self
            .values
            .iter()
            .filter_map(|(k, postings)| Some((k.get(..k.len().checked_sub(10)?)?, postings)))
            .flat_map(|(bucket, postings)| {
                postings
                    .iter()
                    .filter(|p| self.dropped.contains(&p.fp))
                    .map(move |p| (bucket, p.key, p.fp))
            })
            .collect();
        let missing: HashSet<Vec<u8>> = self
            .expected
            .iter()
            .filter(|(bucket, key, fp)| !found.contains(&(bucket.as_slice(), *key, *fp)))
            .map(|(bucket, _, _)| bucket.clone())
            .collect();
        for bucket in missing {
            self.load(bucket)?;
        }
        for (key, postings) in &self.values {
            let before = postings.len();
            let kept: Vec<Posting> = postings
                .iter()
                .filter(|p| !self.dropped.contains(&p.fp))
                .copied()
                .collect();
            if kept.len() == before {
                continue;
            }
            report.postings_removed += (before - kept.len()) as u64;
            if kept.is_empty() {
                report.index_values_dropped += 1;
                self.batch.remove(key.as_slice());
            } else {
                report.index_values_rewritten += 1;
                self.batch.insert(key.as_slice(), encode(&kept)?);
            }
        }
        for (agent, aggregate) in &self.aggregates {
            self.batch.insert(pruned_key(agent), encode(aggregate)?);
        }
        let mut state = self.store.retention_state()?;
        state.last_prune = Some(now);
        state.removed_total += self.removed;
        state.removed_expiring_through = state.removed_expiring_through.max(self.latest_expiry);
        self.batch.insert(&RETENTION_STATE_KEY, encode(&state)?);
        report.removed += self.removed;
        report.removed_ephemeral += self.removed_ephemeral;
        report.batches += 1;
        if !dry_run {
            // With the counts' changes, in the same atomic batch; lookups made before it
            // must read again (see `Lookup`).
            let store = self.store;
            let counts = self.counts;
            store.apply_counted(
                self.batch,
                |_| Ok(counts),
                |_| Ok(()),
                || store.count_record_commit(),
            )?;
        }
        Ok(())
    }
}

const RETENTION_STATE_KEY: [u8; 2] = [keys::META, b'r'];

fn pruned_key(agent_lower: &str) -> Vec<u8> {
    let mut k = vec![keys::PRUNED];
    k.extend_from_slice(agent_lower.as_bytes());
    k
}

impl Store {
    /// One batch of retention: removes at most `limit` certificates that `policy` says are
    /// due at `now` (reading at most about four times as many expired records), continuing
    /// from `cursor` and moving it on. Call until `cursor.done`. With `dry_run` nothing is
    /// written and the report says what would be removed. The caller must keep other
    /// writers out for the duration of the call.
    pub fn prune_batch(
        &self,
        policy: &RetentionPolicy,
        now: UnixTime,
        cursor: &mut PruneCursor,
        limit: usize,
        dry_run: bool,
    ) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        let limit = limit.max(1);
        let cutoff = policy.cutoff(now);
        let protection = Protection::load(self)?;
        let end = keys::prefix_end(&keys::bucket_prefix(
            Index::Expiry,
            &keys::expiry_bucket(keys::expiry_week(cutoff)),
        ));
        let start = match &cursor.after {
            Some(after) => {
                let mut k = after.clone();
                k.push(0);
                k
            }
            None => keys::index_prefix(Index::Expiry).to_vec(),
        };
        let mut removal = Removal::new(self);
        // The records examined in the value this batch starts with, by earlier batches.
        let mut carried = Some(std::mem::take(&mut cursor.examined_next));
        let mut seen: HashSet<Fingerprint> = carried.clone().unwrap_or_default();
        let mut reached_end = true;
        'values: for kv in self.tree().range(start..end) {
            let (key, value) = kv?;
            let Some(segment) = segment_of(&key) else {
                continue;
            };
            let mut examined_here = carried.take().unwrap_or_default();
            for p in decode_postings(&value)? {
                if p.key > cutoff {
                    continue;
                }
                for kv in self.tree().scan_prefix(keys::record_prefix(p.key, &p.fp)) {
                    let cert = decode_record(&kv?.1)?;
                    if cert.facts.not_after != p.key || seen.contains(&cert.fingerprint()) {
                        continue;
                    }
                    if removal.removed as usize >= limit || report.examined as usize >= 4 * limit {
                        // Full: this value is taken up again by the next batch.
                        cursor.examined_next = examined_here;
                        reached_end = false;
                        break 'values;
                    }
                    seen.insert(cert.fingerprint());
                    examined_here.insert(cert.fingerprint());
                    report.examined += 1;
                    if !policy.is_due(&cert, now) {
                        continue;
                    }
                    if protection.protects(self, &cert)? {
                        report.kept_protected += 1;
                        continue;
                    }
                    removal.remove_certificate(&cert, segment)?;
                }
            }
            cursor.after = Some(key.to_vec());
        }
        cursor.done = reached_end;
        removal.finish(now, dry_run, &mut report)?;
        Ok(report)
    }

    /// What retention removed of an agent's ephemeral credentials (name case-insensitive).
    pub fn pruned_renewals(&self, agent: &str) -> Result<Option<PrunedRenewals>> {
        self.tree()
            .get(pruned_key(&agent.to_lowercase()))?
            .map(|v| decode(&v, "pruned renewals"))
            .transpose()
    }

    /// Every per-agent aggregate of removed ephemeral credentials, by lowercase agent.
    pub fn all_pruned_renewals(&self) -> Result<Vec<PrunedRenewals>> {
        self.tree()
            .scan_prefix([keys::PRUNED])
            .map(|kv| decode(&kv?.1, "pruned renewals"))
            .collect()
    }

    /// What retention has done so far.
    pub fn retention_state(&self) -> Result<RetentionState> {
        Ok(self
            .tree()
            .get(RETENTION_STATE_KEY)?
            .map(|v| decode(&v, "retention state"))
            .transpose()?
            .unwrap_or_default())
    }
}

/// The segment id of an index value's key (`P` + index + bucket + segment (8) + chunk (2)).
fn segment_of(key: &[u8]) -> Option<[u8; 8]> {
    let end = key.len().checked_sub(2)?;
    let start = end.checked_sub(8)?;
    key.get(start..end)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CertificateFacts, Revocation, RevocationReason, Sha256, SourceLocation};
    use crate::test_support::facts;

    const HOUR: i64 = 3600;
    const DAY: i64 = 86_400;

    /// A small deterministic generator (xorshift), so a failing fleet can be replayed.
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

    fn fingerprint(agent: u32, round: u32) -> Sha256 {
        let mut fp = [0u8; 32];
        fp[..4].copy_from_slice(&agent.to_be_bytes());
        fp[4..8].copy_from_slice(&round.to_be_bytes());
        fp[8] = 0x5a;
        Sha256(fp)
    }

    fn credential(agent: u32, round: u32, issued: i64, validity: i64) -> CertificateFacts {
        let mut f = facts(1, &format!("agent-{agent}"));
        f.fingerprint = fingerprint(agent, round);
        f.serial = format!("{agent:x}{round:04x}");
        f.not_before = issued;
        f.not_after = issued + validity;
        f.spki_sha256 = Sha256([(agent % 251) as u8; 32]);
        f
    }

    fn at(agent: u32) -> SourceLocation {
        SourceLocation::File {
            path: format!("/fleet/agent-{agent}.pem"),
            index: 0,
        }
    }

    /// Prunes to the end in batches of `limit`, verifying the store after every batch.
    fn prune_all(
        store: &Store,
        policy: &RetentionPolicy,
        now: UnixTime,
        limit: usize,
    ) -> PruneReport {
        let mut cursor = PruneCursor::default();
        let mut total = PruneReport::default();
        while !cursor.done {
            let r = store
                .prune_batch(policy, now, &mut cursor, limit, false)
                .expect("prune");
            assert!(
                r.removed as usize <= limit,
                "a batch removes at most its limit"
            );
            total.add(&r);
            let v = store.verify().expect("verify");
            assert!(v.is_ok(), "after a batch: {:?}", v.problems);
        }
        total
    }

    #[test]
    fn random_fleets_keep_exactly_what_must_stay() {
        for seed in [7u64, 1234, 987_654_321] {
            let mut rng = Rng(seed);
            let dir = tempfile::tempdir().expect("tempdir");
            let store = Store::open(dir.path()).expect("open");
            let agents = 20 + rng.below(20) as u32;
            let rounds = 8 + rng.below(8) as u32;
            let start = 1_800_000_000i64;
            // Agents that stop renewing at some round keep their last credential present.
            let stalls: Vec<Option<u32>> = (0..agents)
                .map(|_| (rng.below(4) == 0).then(|| rng.below(u64::from(rounds)) as u32))
                .collect();
            let mut t = start;
            for round in 0..rounds {
                let mut ingest = store.ingest();
                for a in 0..agents {
                    if stalls[a as usize].is_some_and(|s| round > s) {
                        continue;
                    }
                    // Every fifth agent holds a permanent certificate, renewed each round.
                    let validity = if a % 5 == 0 { 2 * DAY } else { 6 * HOUR };
                    ingest
                        .observe(
                            credential(a, round, t, validity),
                            Some(Role::Agent),
                            at(a),
                            t,
                        )
                        .expect("observe");
                    if round > 0 {
                        let prev = (0..round)
                            .rev()
                            .map(|r| fingerprint(a, r))
                            .next()
                            .expect("a previous round");
                        ingest.mark_gone(&prev, &at(a), t).expect("gone");
                    }
                }
                ingest.commit().expect("commit");
                t += 6 * HOUR;
            }
            // Protections on random old credentials.
            let mut protected = HashSet::new();
            for _ in 0..6 {
                let fp = fingerprint(rng.below(u64::from(agents)) as u32, rng.below(2) as u32);
                let Some(mut cert) = store.get(&fp).expect("get") else {
                    continue;
                };
                match rng.below(3) {
                    0 => {
                        cert.revocation = Some(Revocation {
                            revoked_at: t,
                            reason: RevocationReason::Superseded,
                            revoked_by: "test".into(),
                        });
                        store.put(&cert).expect("put");
                    }
                    1 => store
                        .put_snooze(&crate::Snooze {
                            fingerprint: fp,
                            until: t,
                            reason: "test".into(),
                            by: "test".into(),
                            at: t,
                        })
                        .expect("snooze"),
                    _ => store
                        .record_audit(&crate::AuditEvent {
                            at: t,
                            fingerprint: Some(fp),
                            actor: "test".into(),
                            action: "noted".into(),
                            detail: String::new(),
                        })
                        .expect("audit"),
                }
                protected.insert(fp);
            }
            let policy = RetentionPolicy {
                ephemeral_after_expiry: DAY,
                gone_after: 3 * DAY,
            };
            let now = t + 2 * DAY;
            let before: Vec<Certificate> = store.iter().collect::<Result<_>>().expect("read");
            let must_stay: HashSet<Fingerprint> = before
                .iter()
                .filter(|c| !policy.is_due(c, now) || protected.contains(&c.fingerprint()))
                .map(Certificate::fingerprint)
                .collect();
            let ephemeral_due = before
                .iter()
                .filter(|c| !must_stay.contains(&c.fingerprint()))
                .filter(|c| c.credential_kind() == Some(CredentialKind::Ephemeral))
                .count() as u64;

            // A dry run writes nothing.
            let mut cursor = PruneCursor::default();
            let mut dry = PruneReport::default();
            while !cursor.done {
                dry.add(
                    &store
                        .prune_batch(&policy, now, &mut cursor, 7, true)
                        .expect("dry run"),
                );
            }
            assert_eq!(
                store.len(),
                before.len(),
                "seed {seed}: the dry run removed"
            );
            assert_eq!(dry.removed as usize, before.len() - must_stay.len());

            let report = prune_all(&store, &policy, now, 7);
            let kept: HashSet<Fingerprint> = store
                .iter()
                .map(|c| c.map(|c| c.fingerprint()))
                .collect::<Result<_>>()
                .expect("read");
            assert_eq!(kept, must_stay, "seed {seed}");
            assert_eq!(report.removed as usize, before.len() - must_stay.len());
            assert_eq!(report.removed_ephemeral, ephemeral_due, "seed {seed}");
            assert!(
                report.removed > 0,
                "seed {seed}: the fleet had something to prune"
            );
            assert!(report.postings_removed >= 5 * report.removed);
            // Every index posting left leads to a kept record (verify says so too), and
            // what was removed is summed per agent.
            let summed: u64 = store
                .all_pruned_renewals()
                .expect("aggregates")
                .iter()
                .map(|a| a.count)
                .sum();
            assert_eq!(summed, ephemeral_due, "seed {seed}");
            // A second pass finds nothing more.
            let again = prune_all(&store, &policy, now, 1000);
            assert_eq!(again.removed, 0);
            // Every agent's current credential stays findable through the indexes.
            for a in 0..agents {
                assert!(
                    !store
                        .find_by_name(&format!("agent-{a}"))
                        .expect("find")
                        .is_empty(),
                    "seed {seed}: agent-{a}"
                );
            }
        }
    }

    #[test]
    fn the_aggregate_keeps_count_first_seen_and_renewal_interval() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let start = 1_800_000_000i64;
        for round in 0..5u32 {
            let t = start + i64::from(round) * 6 * HOUR;
            let mut ingest = store.ingest();
            ingest
                .observe(
                    credential(1, round, t, 6 * HOUR),
                    Some(Role::Agent),
                    at(1),
                    t,
                )
                .expect("observe");
            if round > 0 {
                ingest
                    .mark_gone(&fingerprint(1, round - 1), &at(1), t)
                    .expect("gone");
            }
            ingest.commit().expect("commit");
        }
        let report = prune_all(&store, &RetentionPolicy::default(), start + 30 * DAY, 2);
        assert_eq!(report.removed, 4, "all but the current credential");
        assert!(report.batches >= 2, "batches of two");
        let a = store
            .pruned_renewals("AGENT-1")
            .expect("read")
            .expect("an aggregate");
        assert_eq!(a.agent, "agent-1");
        assert_eq!(a.count, 4);
        assert_eq!(a.first_seen, start);
        assert_eq!(a.first_issued, start);
        assert_eq!(a.last_issued, start + 18 * HOUR);
        assert_eq!(a.renewal_interval_secs(), Some(6 * HOUR));
        let state = store.retention_state().expect("state");
        assert_eq!(state.removed_total, 4);
        assert_eq!(state.removed_expiring_through, Some(start + 24 * HOUR));
        assert_eq!(store.len(), 1);
        assert_eq!(store.agent_credentials("agent-1").expect("index").len(), 1);
    }

    #[test]
    fn a_record_a_file_state_still_names_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let t = 1_800_000_000i64;
        let mut ingest = store.ingest();
        ingest
            .observe(credential(4, 0, t, 6 * HOUR), Some(Role::Agent), at(4), t)
            .expect("observe");
        ingest
            .mark_gone(&fingerprint(4, 0), &at(4), t + 1)
            .expect("gone");
        // The directory's file state (from a read that failed since, say) still names it.
        ingest.replace_dir(
            "/fleet",
            vec![crate::FileState {
                name: "agent-4.pem".into(),
                size: 1,
                modified_ns: 1,
                last_seen: t,
                certificates: vec![fingerprint(4, 0)],
                problem: None,
            }],
        );
        ingest.commit().expect("commit");
        let report = prune_all(&store, &RetentionPolicy::default(), t + 30 * DAY, 10);
        assert_eq!((report.removed, report.kept_protected), (0, 1));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn a_role_changed_record_loses_its_later_posting_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let t = 1_800_000_000i64;
        let mut ingest = store.ingest();
        ingest
            .observe(credential(3, 0, t, 6 * HOUR), None, at(3), t)
            .expect("observe");
        ingest.commit().expect("commit");
        // Later seen with a role: a role posting in another segment.
        ingest
            .observe(
                credential(3, 0, t, 6 * HOUR),
                Some(Role::Agent),
                at(3),
                t + 1,
            )
            .expect("observe");
        ingest.commit().expect("commit");
        ingest
            .observe(
                credential(3, 1, t + 1, 6 * HOUR),
                Some(Role::Agent),
                at(3),
                t + 2,
            )
            .expect("observe");
        ingest
            .mark_gone(&fingerprint(3, 0), &at(3), t + 2)
            .expect("gone");
        ingest.commit().expect("commit");
        let report = prune_all(&store, &RetentionPolicy::default(), t + 30 * DAY, 10);
        assert_eq!(report.removed, 1);
        assert!(store.verify().expect("verify").is_ok());
        let left = store.verify().expect("verify").postings;
        assert_eq!(left, 5, "only the kept record's postings are left");
    }
}
