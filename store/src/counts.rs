//! Counts kept up to date on every commit, so that `stats`, `check`, `status` and
//! `/metrics` cost O(answer) rather than a read of every record.
//!
//! Everything lives under the key prefix `U` (see [`crate::keys`]) and is written in the same
//! sled batch as the certificate records it counts. [`CountChanges::record_change`] is the
//! one place that turns a record change (`before` → `after`, either side absent for an
//! insert or a removal) into changes of these keys; every writer of a `C` record calls it.
//!
//! | key                                           | value        | what                                   |
//! |-----------------------------------------------|--------------|----------------------------------------|
//! | `Uc` + role + kind + present + revoked + key type | count (8)  | records per class (time-independent)   |
//! | `Ua` + role + kind + present + level + time   | count (8)    | not_after histogram of unrevoked records |
//! | `Ub` + role + kind + present + level + time   | count (8)    | not_before histogram of unrevoked records |
//! | `Uk` + not_after (8) + fingerprint (32)       | role + not_before | the certificates `check` considers  |
//! | `Un` + not_before (8) + fingerprint (32)      | role         | the same, by not_before                |
//! | `Up` + agent? (1) + fingerprint (32)          | role         | every present certificate              |
//! | `Ug` + agent (lowercase)                      | count (8)    | an agent's live credentials (schema 5) |
//! | `UG`                                          | count (8)    | agents with a live credential (schema 5) |
//! | `Uq` + agent (lowercase)                      | count (8)    | an agent's live credentials no registration covers (schema 7) |
//! | `UQ`                                          | count (8)    | agents with such a credential (schema 7) |
//!
//! *kind* is 0 (none: a CA certificate), 1 (permanent) or 2 (ephemeral); *present* is 1
//! when a source still holds the certificate. The histograms have four levels (a second, a
//! minute, an hour and a day per bucket): how many unrevoked certificates of a class expire
//! at or before a time is the sum of the whole days before it, the whole hours of its day,
//! the whole minutes of its hour and the seconds of its minute, so time moving certificates
//! across "expired" or "expiring" needs no record read. `check` considers certificates
//! still present, unrevoked and not ephemeral; their entries give its lists (the records
//! only of what it shows), `Up` gives `/metrics` its per-certificate series. An agent's
//! credential is *live* while a source holds it and it is not revoked (as in the agent
//! index): `Ug` counts them per agent (by display name, lowercase) and `UG` counts the
//! agents that have one, so the pending queue's size needs no scan of the live agents.
//! `Uq` and `UQ` do the same for the live credentials the agent registrations do not cover
//! (see `crate::coverage`; without registrations they equal `Ug` and `UG`): the pending
//! queue's size with registrations imported.
//!
//! Counters are read-modified-written, so commits that change them are serialised by the
//! store's count lock ([`crate::Store::apply_counted`]).

use std::collections::BTreeMap;

use crate::error::{Result, StoreError};
use crate::keys;
use crate::model::{Certificate, CredentialKind, Role, UnixTime};

/// The prefix byte of every count key.
pub(crate) const COUNTS: u8 = b'U';
const CLASS: u8 = b'c';
const NOT_AFTER: u8 = b'a';
const NOT_BEFORE: u8 = b'b';
const CHECK: u8 = b'k';
const CHECK_NOT_BEFORE: u8 = b'n';
const PRESENT: u8 = b'p';
const AGENT_LIVE: u8 = b'g';
const LIVE_AGENTS: u8 = b'G';
const AGENT_UNCOVERED: u8 = b'q';
const UNCOVERED_AGENTS: u8 = b'Q';

/// Bucket widths of the histogram levels, finest first.
const LEVELS: [i64; 4] = [1, 60, 3_600, 86_400];

/// What the counts know of one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Counted {
    fp: [u8; 32],
    role: u8,
    kind: u8,
    present: bool,
    revoked: bool,
    key: String,
    not_before: UnixTime,
    not_after: UnixTime,
    /// The agent (display name, lowercase) of an agent certificate.
    agent: Option<String>,
    /// SHA-256 of its public key (registrations may name it).
    spki: [u8; 32],
}

impl Counted {
    /// The counted record's notAfter.
    pub(crate) fn not_after(&self) -> UnixTime {
        self.not_after
    }

    pub(crate) fn of(cert: &Certificate) -> Counted {
        Counted {
            fp: cert.facts.fingerprint.0,
            role: cert.role.code(),
            kind: kind_code(cert.credential_kind()),
            present: cert.current_sources().next().is_some(),
            revoked: cert.revocation.is_some(),
            key: cert.facts.key.to_string(),
            not_before: cert.facts.not_before,
            not_after: cert.facts.not_after,
            agent: (cert.role == Role::Agent).then(|| cert.facts.display_name().to_lowercase()),
            spki: cert.facts.spki_sha256.0,
        }
    }

    /// Its agent, while it is a live credential of one (present and not revoked).
    fn live_agent(&self) -> Option<&str> {
        self.agent
            .as_deref()
            .filter(|_| self.present && !self.revoked)
    }

    /// Whether `check` considers it: present, not revoked, not ephemeral.
    fn considered(&self) -> bool {
        self.present && !self.revoked && self.kind != 2
    }

    fn class(&self) -> [u8; 3] {
        [self.role, self.kind, u8::from(self.present)]
    }
}

fn kind_code(kind: Option<CredentialKind>) -> u8 {
    match kind {
        None => 0,
        Some(CredentialKind::Permanent) => 1,
        Some(CredentialKind::Ephemeral) => 2,
    }
}

fn kind_of(code: u8) -> Option<CredentialKind> {
    match code {
        1 => Some(CredentialKind::Permanent),
        2 => Some(CredentialKind::Ephemeral),
        _ => None,
    }
}

fn role_of(code: u8) -> Option<Role> {
    Role::ALL.into_iter().find(|r| r.code() == code)
}

fn histogram_key(which: u8, class: [u8; 3], level: u8, bucket: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(14);
    k.extend_from_slice(&[COUNTS, which]);
    k.extend_from_slice(&class);
    k.push(level);
    k.extend_from_slice(&keys::time_bytes(bucket));
    k
}

fn time_fp_key(which: u8, t: UnixTime, fp: &[u8; 32]) -> Vec<u8> {
    let mut k = Vec::with_capacity(42);
    k.extend_from_slice(&[COUNTS, which]);
    k.extend_from_slice(&keys::time_bytes(t));
    k.extend_from_slice(fp);
    k
}

/// `Ug` + agent (lowercase): the agent's live credentials.
fn agent_live_key(agent_lower: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + agent_lower.len());
    k.extend_from_slice(&[COUNTS, AGENT_LIVE]);
    k.extend_from_slice(agent_lower.as_bytes());
    k
}

const LIVE_AGENTS_KEY: [u8; 2] = [COUNTS, LIVE_AGENTS];
const UNCOVERED_AGENTS_KEY: [u8; 2] = [COUNTS, UNCOVERED_AGENTS];

/// `Uq` + agent (lowercase): the agent's live credentials no registration covers.
fn agent_uncovered_key(agent_lower: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + agent_lower.len());
    k.extend_from_slice(&[COUNTS, AGENT_UNCOVERED]);
    k.extend_from_slice(agent_lower.as_bytes());
    k
}

/// Every `Uq` key and `UQ` (for a recount, see `crate::coverage`).
pub(crate) fn uncovered_keys(tree: &sled::Tree) -> impl Iterator<Item = Result<sled::IVec>> + '_ {
    tree.scan_prefix([COUNTS, AGENT_UNCOVERED])
        .chain(tree.scan_prefix(UNCOVERED_AGENTS_KEY))
        .map(|kv| Ok(kv?.0))
}

/// The `Uq` and `UQ` entries of these per-agent numbers of uncovered live credentials.
pub(crate) fn uncovered_entries(per_agent: &BTreeMap<String, u64>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = per_agent
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(agent, n)| (agent_uncovered_key(agent), n.to_be_bytes().to_vec()))
        .collect();
    if !out.is_empty() {
        out.push((
            UNCOVERED_AGENTS_KEY.to_vec(),
            (out.len() as u64).to_be_bytes().to_vec(),
        ));
    }
    out
}

/// One live agent credential appearing (+1) or going (-1), for the uncovered counts.
#[derive(Debug)]
struct LiveChange {
    agent: String,
    fp: [u8; 32],
    spki: [u8; 32],
    delta: i64,
}

fn present_key(c: &Counted) -> Vec<u8> {
    let mut k = Vec::with_capacity(35);
    k.extend_from_slice(&[COUNTS, PRESENT, u8::from(c.role == Role::Agent.code())]);
    k.extend_from_slice(&c.fp);
    k
}

/// The changes of count keys that a set of record changes makes, to be written with them.
#[derive(Debug, Default)]
pub struct CountChanges {
    /// Counter key → change.
    counters: BTreeMap<Vec<u8>, i64>,
    /// Entry key → new value (`None`: removed).
    entries: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Live agent credentials that appear or go: counted in `Uq` when no registration
    /// covers them, which [`CountChanges::write`] looks up.
    live: Vec<LiveChange>,
}

impl CountChanges {
    pub fn new() -> CountChanges {
        CountChanges::default()
    }

    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.counters.values().all(|d| *d == 0) && self.entries.is_empty()
    }

    /// Takes one record change into account: `before` is the record as stored (`None`
    /// for a new one), `after` as it will be written (`None` when it is removed). Every
    /// writer of a certificate record calls this and writes the result in the same batch
    /// (`crate::Store::apply_counted`).
    pub fn record_change(&mut self, before: Option<&Certificate>, after: Option<&Certificate>) {
        self.change(
            before.map(Counted::of).as_ref(),
            after.map(Counted::of).as_ref(),
        );
    }

    pub(crate) fn change(&mut self, before: Option<&Counted>, after: Option<&Counted>) {
        if before == after {
            return;
        }
        if let Some(b) = before {
            self.count(b, -1);
        }
        if let Some(a) = after {
            self.count(a, 1);
        }
        // Entries: remove what `before` had, then add what `after` has (an entry both have
        // ends up written with `after`'s value).
        if let Some(b) = before {
            for (k, _) in entries(b) {
                self.entries.insert(k, None);
            }
        }
        if let Some(a) = after {
            for (k, v) in entries(a) {
                self.entries.insert(k, Some(v));
            }
        }
    }

    /// Turns the live credentials that appear or go into `Uq` changes: those `covers`
    /// says no registration covers. A credential that appears and goes in the same batch
    /// cancels out without a lookup.
    fn resolve_uncovered(&mut self, covers: &impl crate::coverage::Covers) -> Result<()> {
        let mut net: BTreeMap<(&str, [u8; 32], [u8; 32]), i64> = BTreeMap::new();
        for c in &self.live {
            *net.entry((c.agent.as_str(), c.fp, c.spki)).or_default() += c.delta;
        }
        let mut uncovered: Vec<(Vec<u8>, i64)> = Vec::new();
        for ((agent, fp, spki), delta) in net {
            if delta != 0 && !covers.covers(agent, &fp, &spki)? {
                uncovered.push((agent_uncovered_key(agent), delta));
            }
        }
        self.live.clear();
        for (k, delta) in uncovered {
            *self.counters.entry(k).or_default() += delta;
        }
        Ok(())
    }

    fn count(&mut self, c: &Counted, delta: i64) {
        let mut k = vec![COUNTS, CLASS];
        k.extend_from_slice(&c.class());
        k.push(u8::from(c.revoked));
        k.extend_from_slice(c.key.as_bytes());
        *self.counters.entry(k).or_default() += delta;
        if let Some(agent) = c.live_agent() {
            *self.counters.entry(agent_live_key(agent)).or_default() += delta;
            self.live.push(LiveChange {
                agent: agent.to_string(),
                fp: c.fp,
                spki: c.spki,
                delta,
            });
        }
        if c.revoked {
            return;
        }
        for (which, t) in [(NOT_AFTER, c.not_after), (NOT_BEFORE, c.not_before)] {
            for (level, width) in LEVELS.iter().enumerate() {
                let key = histogram_key(which, c.class(), level as u8, t.div_euclid(*width));
                *self.counters.entry(key).or_default() += delta;
            }
        }
    }

    /// Adds the count keys to `batch`, reading the counters' current values from `tree`.
    /// Returns the bytes written. Callers hold the store's count lock.
    pub(crate) fn write(
        mut self,
        tree: &sled::Tree,
        batch: &mut crate::batch::Batch,
    ) -> Result<u64> {
        let mut bytes = 0u64;
        self.resolve_uncovered(&crate::coverage::Stored(tree))?;
        // An agent's count going from or to zero moves the number of agents counted.
        for (per_agent, total) in [
            (AGENT_LIVE, LIVE_AGENTS_KEY),
            (AGENT_UNCOVERED, UNCOVERED_AGENTS_KEY),
        ] {
            let mut agents = 0i64;
            for (key, delta) in &self.counters {
                if *delta == 0 || !key.starts_with(&[COUNTS, per_agent]) {
                    continue;
                }
                let current = match tree.get(key)? {
                    Some(v) => read_count(&v)?,
                    None => 0,
                };
                let next = i64::try_from(current)
                    .unwrap_or(i64::MAX)
                    .saturating_add(*delta);
                match (current == 0, next > 0) {
                    (true, true) => agents += 1,
                    (false, false) => agents -= 1,
                    _ => {}
                }
            }
            *self.counters.entry(total.to_vec()).or_default() += agents;
        }
        for (key, delta) in self.counters {
            if delta == 0 {
                continue;
            }
            let current = match tree.get(&key)? {
                Some(v) => read_count(&v)?,
                None => 0,
            };
            let next = i64::try_from(current)
                .unwrap_or(i64::MAX)
                .saturating_add(delta);
            if next < 0 {
                return Err(StoreError::Corrupt {
                    what: "count",
                    detail: format!(
                        "{} would drop below zero (run `certctl store verify`)",
                        hex::encode(&key)
                    ),
                });
            }
            bytes += key.len() as u64 + 8;
            if next == 0 {
                batch.remove(key);
            } else {
                batch.insert(key, &(next as u64).to_be_bytes());
            }
        }
        for (key, value) in self.entries {
            bytes += key.len() as u64;
            match value {
                Some(v) => {
                    bytes += v.len() as u64;
                    batch.insert(key, v);
                }
                None => batch.remove(key),
            }
        }
        Ok(bytes)
    }
}

/// The entry keys (and values) a record has.
fn entries(c: &Counted) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::with_capacity(3);
    if c.considered() {
        let mut v = vec![c.role];
        v.extend_from_slice(&c.not_before.to_be_bytes());
        out.push((time_fp_key(CHECK, c.not_after, &c.fp), v));
        out.push((
            time_fp_key(CHECK_NOT_BEFORE, c.not_before, &c.fp),
            vec![c.role],
        ));
    }
    if c.present {
        out.push((present_key(c), vec![c.role]));
    }
    out
}

fn read_count(v: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(v)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt {
            what: "count",
            detail: format!("{} bytes", v.len()),
        })
}

/// Every count key and value a store holding exactly `certs` must have.
pub(crate) fn expected<'c>(
    certs: impl Iterator<Item = Result<Certificate>> + 'c,
    covers: &impl crate::coverage::Covers,
) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut counters: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for cert in certs {
        let mut one = CountChanges::new();
        one.record_change(None, Some(&cert?));
        one.resolve_uncovered(covers)?;
        for (k, d) in one.counters {
            *counters.entry(k).or_default() += d;
        }
        for (k, v) in one.entries {
            if let Some(v) = v {
                out.insert(k, v);
            }
        }
    }
    let live_agents = counters
        .iter()
        .filter(|(k, n)| k.starts_with(&[COUNTS, AGENT_LIVE]) && **n != 0)
        .count() as i64;
    counters.insert(LIVE_AGENTS_KEY.to_vec(), live_agents);
    let uncovered_agents = counters
        .iter()
        .filter(|(k, n)| k.starts_with(&[COUNTS, AGENT_UNCOVERED]) && **n != 0)
        .count() as i64;
    counters.insert(UNCOVERED_AGENTS_KEY.to_vec(), uncovered_agents);
    for (k, n) in counters {
        if n != 0 {
            out.insert(k, (n as u64).to_be_bytes().to_vec());
        }
    }
    Ok(out)
}

/// How many agents have a live credential (`UG`).
pub(crate) fn live_agents(tree: &sled::Tree) -> Result<u64> {
    tree.get(LIVE_AGENTS_KEY)?.map_or(Ok(0), |v| read_count(&v))
}

/// How many agents have a live credential no registration covers (`UQ`).
pub(crate) fn uncovered_agents(tree: &sled::Tree) -> Result<u64> {
    tree.get(UNCOVERED_AGENTS_KEY)?
        .map_or(Ok(0), |v| read_count(&v))
}

/// How many live credentials of an agent (any case) no registration covers (`Uq`).
pub(crate) fn agent_uncovered_credentials(tree: &sled::Tree, agent: &str) -> Result<u64> {
    tree.get(agent_uncovered_key(&agent.to_lowercase()))?
        .map_or(Ok(0), |v| read_count(&v))
}

/// How many live credentials an agent (any case) has (`Ug`).
pub(crate) fn agent_live_credentials(tree: &sled::Tree, agent: &str) -> Result<u64> {
    tree.get(agent_live_key(&agent.to_lowercase()))?
        .map_or(Ok(0), |v| read_count(&v))
}

/// Rewrites every count key from the records (a store written before the counts existed,
/// or one `store verify` found off). Returns how many records were counted.
pub(crate) fn rebuild(tree: &sled::Tree) -> Result<u64> {
    let mut records = 0u64;
    let want = expected(
        tree.scan_prefix([keys::CERT]).map(|kv| {
            records += 1;
            crate::store::decode_record(&kv?.1)
        }),
        &crate::coverage::Stored(tree),
    )?;
    let mut batch = sled::Batch::default();
    for kv in tree.scan_prefix([COUNTS]) {
        batch.remove(kv?.0);
    }
    for (k, v) in want {
        batch.insert(k, v);
    }
    tree.apply_batch(batch)?;
    Ok(records)
}

/// Differences between the stored count keys and a recount (for `store verify`).
pub(crate) fn differences(tree: &sled::Tree) -> Result<Vec<String>> {
    let want = expected(
        tree.scan_prefix([keys::CERT])
            .map(|kv| crate::store::decode_record(&kv?.1)),
        &crate::coverage::Stored(tree),
    )?;
    let mut have = BTreeMap::new();
    for kv in tree.scan_prefix([COUNTS]) {
        let (k, v) = kv?;
        have.insert(k.to_vec(), v.to_vec());
    }
    let mut out = Vec::new();
    for (k, v) in &want {
        match have.get(k) {
            None => out.push(format!("count key {} is missing", hex::encode(k))),
            Some(h) if h != v => out.push(format!(
                "count key {} holds {} instead of {}",
                hex::encode(k),
                hex::encode(h),
                hex::encode(v)
            )),
            Some(_) => {}
        }
    }
    for k in have.keys() {
        if !want.contains_key(k) {
            out.push(format!(
                "count key {} counts nothing that is stored",
                hex::encode(k)
            ));
        }
    }
    Ok(out)
}

// ---- reading ------------------------------------------------------------------------------

/// One class of records: a role, a credential kind (none for CA certificates) and whether a
/// source still holds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CountClass {
    pub role: Role,
    pub kind: Option<CredentialKind>,
    pub present: bool,
}

/// How many records of a class have each status at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusCounts {
    pub valid: u64,
    pub not_yet_valid: u64,
    pub expiring: u64,
    pub expired: u64,
    pub revoked: u64,
}

impl StatusCounts {
    pub fn total(&self) -> u64 {
        self.valid + self.not_yet_valid + self.expiring + self.expired + self.revoked
    }

    /// The count of one status.
    pub fn of(&self, status: crate::Status) -> u64 {
        match status {
            crate::Status::Valid => self.valid,
            crate::Status::NotYetValid => self.not_yet_valid,
            crate::Status::Expiring => self.expiring,
            crate::Status::Expired => self.expired,
            crate::Status::Revoked => self.revoked,
        }
    }
}

/// The store's records counted at one moment ([`crate::Store::counts`]).
#[derive(Clone, Debug, Default)]
pub struct Counts {
    /// Per class: statuses as [`Certificate::status`] gives them.
    pub status: BTreeMap<CountClass, StatusCounts>,
    /// Per class and revoked or not: records by key type (as `KeyAlgorithm` displays).
    pub keys: BTreeMap<(CountClass, bool, String), u64>,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.status.values().map(StatusCounts::total).sum()
    }
}

/// A certificate `check` considers ([`crate::Store::check_entries`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckEntry {
    pub not_after: UnixTime,
    pub not_before: UnixTime,
    pub fingerprint: crate::Fingerprint,
    pub role: Role,
}

fn class_of(bytes: &[u8]) -> Option<CountClass> {
    Some(CountClass {
        role: role_of(*bytes.first()?)?,
        kind: kind_of(*bytes.get(1)?),
        present: *bytes.get(2)? == 1,
    })
}

/// Sum of the counters in `[start, end)`.
fn sum_range(tree: &sled::Tree, start: &[u8], end: &[u8]) -> Result<u64> {
    let mut n = 0u64;
    for kv in tree.range(start.to_vec()..end.to_vec()) {
        n += read_count(&kv?.1)?;
    }
    Ok(n)
}

/// How many unrevoked records of `class` have their `which` time at or before `t`.
fn at_or_before(tree: &sled::Tree, which: u8, class: [u8; 3], t: UnixTime) -> Result<u64> {
    // Whole days before t's day, whole hours of its day before t's hour, ...
    let mut n = 0;
    let top = LEVELS.len() - 1;
    for (level, width) in LEVELS.iter().enumerate().rev() {
        let end = t.div_euclid(*width);
        let start = if level == top {
            i64::MIN
        } else {
            t.div_euclid(LEVELS[level + 1]) * (LEVELS[level + 1] / width)
        };
        let end = if level == 0 { end + 1 } else { end };
        if end > start {
            n += sum_range(
                tree,
                &histogram_key(which, class, level as u8, start),
                &histogram_key(which, class, level as u8, end),
            )?;
        }
    }
    Ok(n)
}

/// The counts at `now`, where "expiring" means within `expiring_within` seconds.
pub(crate) fn counts(store: &crate::Store, now: UnixTime, expiring_within: i64) -> Result<Counts> {
    let tree = store.tree();
    let mut out = Counts::default();
    let mut unrevoked: BTreeMap<[u8; 3], u64> = BTreeMap::new();
    class_counts(tree, &mut out, &mut unrevoked)?;
    let soon = now.saturating_add(expiring_within);
    let mut future_dated = false;
    for (code, total) in &unrevoked {
        let Some(class) = class_of(code) else {
            continue;
        };
        let expired = at_or_before(tree, NOT_AFTER, *code, now)?;
        let by_soon = at_or_before(tree, NOT_AFTER, *code, soon)?;
        let begun = at_or_before(tree, NOT_BEFORE, *code, now)?;
        future_dated |= begun < *total;
        let s = out.status.entry(class).or_default();
        s.expired = expired;
        s.expiring = by_soon.saturating_sub(expired);
        s.valid = total.saturating_sub(by_soon);
    }
    if future_dated {
        // Certificates whose validity has not begun: which of them are also expired or
        // expiring needs their records. Only certificates not yet expired can be, and the
        // expiry index lists those.
        for s in out.status.values_mut() {
            s.valid += s.expiring;
            s.expiring = 0;
        }
        let live = store.expiring_between(now.saturating_add(1), i64::MAX, None)?;
        for cert in live {
            if cert.revocation.is_some() {
                continue;
            }
            let c = Counted::of(&cert);
            let Some(class) = class_of(&c.class()) else {
                continue;
            };
            let s = out.status.entry(class).or_default();
            match cert.status(now, expiring_within) {
                crate::Status::NotYetValid => {
                    s.valid = s.valid.saturating_sub(1);
                    s.not_yet_valid += 1;
                }
                crate::Status::Expiring => {
                    s.valid = s.valid.saturating_sub(1);
                    s.expiring += 1;
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// The time-independent counts only (no status but `revoked` is filled in).
pub(crate) fn class_only(tree: &sled::Tree) -> Result<Counts> {
    let mut out = Counts::default();
    class_counts(tree, &mut out, &mut BTreeMap::new())?;
    Ok(out)
}

/// Reads the class counters into `out.keys` and `out.status[..].revoked`, and the
/// unrevoked total per class code into `unrevoked`.
fn class_counts(
    tree: &sled::Tree,
    out: &mut Counts,
    unrevoked: &mut BTreeMap<[u8; 3], u64>,
) -> Result<()> {
    for kv in tree.scan_prefix([COUNTS, CLASS]) {
        let (k, v) = kv?;
        let n = read_count(&v)?;
        let Some(class) = class_of(&k[2..]) else {
            return Err(StoreError::Corrupt {
                what: "count",
                detail: format!("unknown class in {}", hex::encode(&k)),
            });
        };
        let revoked = k.get(5) == Some(&1);
        let key = String::from_utf8_lossy(k.get(6..).unwrap_or_default()).into_owned();
        *out.keys.entry((class, revoked, key)).or_default() += n;
        let s = out.status.entry(class).or_default();
        if revoked {
            s.revoked += n;
        } else {
            let code = [k[2], k[3], k[4]];
            *unrevoked.entry(code).or_default() += n;
        }
    }
    Ok(())
}

/// The certificates `check` considers with `not_after <= until`, by not_after then
/// fingerprint.
pub(crate) fn check_entries(tree: &sled::Tree, until: UnixTime) -> Result<Vec<CheckEntry>> {
    let start = vec![COUNTS, CHECK];
    let end = keys::prefix_end(&time_fp_key(CHECK, until, &[0xff; 32]));
    let mut out = Vec::new();
    for kv in tree.range(start..end) {
        let (k, v) = kv?;
        let entry = (|| {
            let t = <[u8; 8]>::try_from(k.get(2..10)?).ok()?;
            let fp = <[u8; 32]>::try_from(k.get(10..42)?).ok()?;
            let nb = <[u8; 8]>::try_from(v.get(1..9)?).ok()?;
            Some(CheckEntry {
                not_after: keys::time_from_bytes(t),
                not_before: i64::from_be_bytes(nb),
                fingerprint: crate::Sha256(fp),
                role: role_of(*v.first()?)?,
            })
        })();
        match entry {
            Some(e) => out.push(e),
            None => {
                return Err(StoreError::Corrupt {
                    what: "check entry",
                    detail: hex::encode(&k),
                })
            }
        }
    }
    Ok(out)
}

/// How many certificates `check` considers (of one role) have not begun their validity at
/// `now`.
pub(crate) fn check_not_yet_valid(
    tree: &sled::Tree,
    now: UnixTime,
    role: Option<Role>,
) -> Result<u64> {
    let start = keys::prefix_end(&time_fp_key(CHECK_NOT_BEFORE, now, &[0xff; 32]));
    let end = keys::prefix_end(&[COUNTS, CHECK_NOT_BEFORE]);
    let mut n = 0;
    for kv in tree.range(start..end) {
        let (_, v) = kv?;
        if role.is_none_or(|r| v.first() == Some(&r.code())) {
            n += 1;
        }
    }
    Ok(n)
}

/// The fingerprints of present certificates: those not agents, then (with `agents`) the
/// agents', each group in fingerprint order.
pub(crate) fn present(tree: &sled::Tree, agents: bool) -> Result<Vec<crate::Fingerprint>> {
    let mut out = Vec::new();
    let groups: &[u8] = if agents { &[0, 1] } else { &[0] };
    for group in groups {
        for kv in tree.scan_prefix([COUNTS, PRESENT, *group]) {
            let (k, _) = kv?;
            let fp = <[u8; 32]>::try_from(k.get(3..).unwrap_or_default()).map_err(|_| {
                StoreError::Corrupt {
                    what: "present entry",
                    detail: hex::encode(&k),
                }
            })?;
            out.push(crate::Sha256(fp));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Role, SourceLocation};
    use crate::test_support::facts;
    use crate::Store;

    fn at(path: &str) -> SourceLocation {
        SourceLocation::File {
            path: path.into(),
            index: 0,
        }
    }

    fn filled(dir: &std::path::Path) -> Store {
        let store = Store::open(dir).expect("open");
        let mut ingest = store.ingest();
        for n in 1..=20u8 {
            let role = if n % 2 == 0 {
                Role::Agent
            } else {
                Role::Gateway
            };
            ingest
                .observe(
                    facts(n, &format!("h{n}")),
                    Some(role),
                    at(&format!("/c{n}.pem")),
                    10,
                )
                .expect("observe");
        }
        ingest.commit().expect("commit");
        store
    }

    #[test]
    fn live_agents_are_counted_through_renewals_revocations_and_removals() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = filled(dir.path());
        // The ten agents h2, h4, ..., h20 (one live credential each).
        assert_eq!(store.live_agent_count().expect("count"), 10);
        // h2 renewed at its place (a second certificate of the same name), then the first
        // one gone: one agent throughout.
        let mut ingest = store.ingest();
        ingest
            .observe(facts(102, "H2"), Some(Role::Agent), at("/c2-new.pem"), 20)
            .expect("observe");
        ingest.commit().expect("commit");
        assert_eq!(store.agent_live_credential_count("h2").expect("count"), 2);
        assert_eq!(store.live_agent_count().expect("count"), 10);
        assert!(ingest
            .mark_gone(&crate::Sha256([2; 32]), &at("/c2.pem"), 21)
            .expect("gone"));
        // h4's only credential gone: one agent fewer.
        assert!(ingest
            .mark_gone(&crate::Sha256([4; 32]), &at("/c4.pem"), 21)
            .expect("gone"));
        ingest.commit().expect("commit");
        assert_eq!(store.agent_live_credential_count("H2").expect("count"), 1);
        assert_eq!(store.agent_live_credential_count("h4").expect("count"), 0);
        assert_eq!(store.live_agent_count().expect("count"), 9);
        // h6 revoked: not live.
        let mut six = store
            .get(&crate::Sha256([6; 32]))
            .expect("get")
            .expect("stored");
        six.revocation = Some(crate::Revocation {
            revoked_at: 30,
            reason: crate::RevocationReason::KeyCompromise,
            revoked_by: "me".into(),
        });
        store.put(&six).expect("put");
        assert_eq!(store.live_agent_count().expect("count"), 8);
        // h4's gone credential removed by retention: nothing changes.
        let policy = crate::RetentionPolicy {
            ephemeral_after_expiry: 0,
            gone_after: 0,
        };
        let mut cursor = crate::PruneCursor::default();
        while !cursor.done {
            store
                .prune_batch(&policy, 4_000_000_000, &mut cursor, 100, false)
                .expect("prune");
        }
        assert_eq!(store.live_agent_count().expect("count"), 8);
        let v = store.verify().expect("verify");
        assert!(v.is_ok(), "{:?}", v.problems);
    }

    /// A schema-4 store (no live-agent counts) gets them when it is opened.
    #[test]
    fn a_schema_4_store_gets_its_live_agents_counted_when_opened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = filled(dir.path());
        for prefix in [[COUNTS, AGENT_LIVE], LIVE_AGENTS_KEY] {
            for kv in store.tree().scan_prefix(prefix) {
                store.tree().remove(kv.expect("kv").0).expect("remove");
            }
        }
        store
            .tree()
            .insert([keys::META, b's'], &4u32.to_be_bytes())
            .expect("schema");
        assert!(!store.verify().expect("verify").is_ok(), "counts missing");
        store.flush().expect("flush");
        drop(store);
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(store.live_agent_count().expect("count"), 10);
        let v = store.verify().expect("verify");
        assert!(v.is_ok(), "{:?}", v.problems);
    }

    #[test]
    fn two_writers_of_one_record_leave_exact_counts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = filled(dir.path());
        let fp = crate::Sha256([3; 32]);
        // Both read the record; the first marks it gone, the second moves it elsewhere.
        let mut first = store.ingest();
        let mut second = store.ingest();
        assert!(first.mark_gone(&fp, &at("/c3.pem"), 20).expect("gone"));
        second
            .observe(facts(3, "h3"), Some(Role::Iis), at("/other.pem"), 21)
            .expect("observe");
        first.commit().expect("commit");
        second.commit().expect("commit");
        let v = store.verify().expect("verify");
        assert!(v.is_ok(), "{:?}", v.problems);
    }

    #[test]
    fn a_store_without_counts_gets_them_when_opened_and_verify_finds_wrong_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = filled(dir.path());
        assert_eq!(store.len(), 20);
        // As release 2 left it: no count keys, schema 2.
        for kv in store.tree().scan_prefix([COUNTS]) {
            store.tree().remove(kv.expect("kv").0).expect("remove");
        }
        store
            .tree()
            .insert([keys::META, b's'], &2u32.to_be_bytes())
            .expect("schema");
        store.flush().expect("flush");
        drop(store);
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(store.len(), 20);
        let v = store.verify().expect("verify");
        assert!(v.is_ok(), "{:?}", v.problems);
        let counts = store.counts(10, 0).expect("counts");
        assert_eq!(counts.total(), 20);
        // A wrong counter is reported, and a rebuild mends it.
        let key = store
            .tree()
            .scan_prefix([COUNTS, CLASS])
            .next()
            .expect("a class")
            .expect("kv")
            .0;
        store
            .tree()
            .insert(key, &99u64.to_be_bytes())
            .expect("insert");
        let v = store.verify().expect("verify");
        assert!(
            v.problems.iter().any(|p| p.contains("count key")),
            "{:?}",
            v.problems
        );
        store.rebuild_counts().expect("rebuild");
        assert!(store.verify().expect("verify").is_ok());
    }
}
