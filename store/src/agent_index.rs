//! The index of agents: agent name → its credentials, kept on every commit so that agent
//! decisions (the deny list, the pending queue, `agents block`) cost what changed, not a
//! read of every agent certificate ever stored.
//!
//! Keys (see the layout table in `keys.rs`), for every certificate whose role is `agent`:
//! - `Y` `c` + agent (lowercase) + `\0` + fingerprint (32) → the credential ([`Indexed`]):
//!   every credential of the agent the store holds (present, gone or revoked);
//! - `Y` `e` + not_after (8) + agent (lowercase) + `\0` + fingerprint (32) → the same, only
//!   while the certificate is *live* (present in a source and not revoked), in expiry order:
//!   the expired live credentials a stalled-renewal check looks for are a range, and the
//!   pending queue walks the live credentials without the gone ones.
//!
//! Liveness is the `e` entry alone (schema 6; schema 3–5 also kept a `Y` `l` entry per live
//! credential and the liveness in the `c` value): a renewal that marks the old credential
//! gone removes one entry and rewrites nothing else of the index, so a renewed credential
//! costs its record rewritten and one removal besides the new credential's own keys.
//!
//! The agent of a certificate is its display name (subject CN, else its first SAN, else its
//! subject DN), as `certctl agents` names agents. [`crate::Ingest::commit`] writes the entries
//! that changed in the same atomic batch as the records; a certificate removed by retention
//! takes its entries with it (`retention::remove_certificate`). A store of an older schema
//! gets the index built again when it is opened ([`rebuild`]); `store verify` checks it
//! against the records.

use serde::{Deserialize, Serialize};

use crate::batch::Batch;
use crate::error::Result;
use crate::keys;
use crate::model::{Certificate, Fingerprint, Role, Sha256, UnixTime};
use crate::store::{decode, encode, Store};

/// One credential of an agent, as the agent index holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCredential {
    /// The agent's name as the certificate writes it (its display name).
    pub agent: String,
    pub fingerprint: Fingerprint,
    pub not_after: UnixTime,
    pub first_seen: UnixTime,
    /// SHA-256 of the certificate's public key (registrations may name it).
    pub spki_sha256: Sha256,
    /// Present in a source and not revoked.
    pub live: bool,
}

/// The value of an index entry: the credential without its liveness (which is whether its
/// `e` entry exists), so that a credential going out of use rewrites no value.
#[derive(Serialize, Deserialize)]
struct Indexed {
    agent: String,
    fingerprint: Fingerprint,
    not_after: UnixTime,
    first_seen: UnixTime,
    spki_sha256: Sha256,
}

impl Indexed {
    fn of(c: &AgentCredential) -> Self {
        Indexed {
            agent: c.agent.clone(),
            fingerprint: c.fingerprint,
            not_after: c.not_after,
            first_seen: c.first_seen,
            spki_sha256: c.spki_sha256,
        }
    }

    fn credential(self, live: bool) -> AgentCredential {
        AgentCredential {
            agent: self.agent,
            fingerprint: self.fingerprint,
            not_after: self.not_after,
            first_seen: self.first_seen,
            spki_sha256: self.spki_sha256,
            live,
        }
    }
}

const ALL: u8 = b'c';
const LIVE_BY_EXPIRY: u8 = b'e';

/// `Y` `e` + not_after + agent (lowercase) + `\0` + fingerprint.
fn expiry_key(entry: &AgentCredential) -> Vec<u8> {
    let lower = entry.agent.to_lowercase();
    let mut k = Vec::with_capacity(lower.len() + 43);
    k.extend_from_slice(&[keys::AGENT_INDEX, LIVE_BY_EXPIRY]);
    k.extend_from_slice(&keys::time_bytes(entry.not_after));
    k.extend_from_slice(lower.as_bytes());
    k.push(0);
    k.extend_from_slice(&entry.fingerprint.0);
    k
}

/// The agent index entry a record must have, if it is an agent certificate.
pub(crate) fn entry_of(cert: &Certificate) -> Option<AgentCredential> {
    (cert.role == Role::Agent).then(|| AgentCredential {
        agent: cert.facts.display_name().to_string(),
        fingerprint: cert.fingerprint(),
        not_after: cert.facts.not_after,
        first_seen: cert.first_seen,
        spki_sha256: cert.facts.spki_sha256,
        live: cert.revocation.is_none() && cert.current_sources().next().is_some(),
    })
}

fn agent_prefix(kind: u8, agent: &str) -> Vec<u8> {
    let lower = agent.to_lowercase();
    let mut k = Vec::with_capacity(lower.len() + 35);
    k.push(keys::AGENT_INDEX);
    k.push(kind);
    k.extend_from_slice(lower.as_bytes());
    k.push(0);
    k
}

fn entry_key(kind: u8, entry: &AgentCredential) -> Vec<u8> {
    let mut k = agent_prefix(kind, &entry.agent);
    k.extend_from_slice(&entry.fingerprint.0);
    k
}

/// Adds to `batch` what turns the index entries of `before` into those of `after` (for one
/// record): only the keys whose presence or value changes. Returns the bytes written.
pub(crate) fn update(
    batch: &mut Batch,
    before: Option<&AgentCredential>,
    after: Option<&AgentCredential>,
) -> Result<u64> {
    let same_value = |a: &AgentCredential, b: &AgentCredential| {
        (
            &a.agent,
            a.fingerprint,
            a.not_after,
            a.first_seen,
            a.spki_sha256,
        ) == (
            &b.agent,
            b.fingerprint,
            b.not_after,
            b.first_seen,
            b.spki_sha256,
        )
    };
    let kept = match (before, after) {
        (Some(old), Some(new)) => same_value(old, new),
        _ => false,
    };
    if let Some(old) = before {
        if after.is_none_or(|new| entry_key(ALL, new) != entry_key(ALL, old)) {
            batch.remove(entry_key(ALL, old));
        }
        if old.live && !(kept && after.is_some_and(|new| new.live)) {
            batch.remove(expiry_key(old));
        }
    }
    let mut bytes = 0;
    if let Some(new) = after {
        let value = encode(&Indexed::of(new))?;
        if !kept {
            let key = entry_key(ALL, new);
            bytes += (key.len() + value.len()) as u64;
            batch.insert(key, value.clone());
        }
        if new.live && !(kept && before.is_some_and(|old| old.live)) {
            let key = expiry_key(new);
            bytes += (key.len() + value.len()) as u64;
            batch.insert(key, value);
        }
    }
    Ok(bytes)
}

/// Every index key a record must have, with its value (for `verify` and the migration).
pub(crate) fn expected(cert: &Certificate) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let Some(entry) = entry_of(cert) else {
        return Ok(Vec::new());
    };
    let value = encode(&Indexed::of(&entry))?;
    let mut out = vec![(entry_key(ALL, &entry), value.clone())];
    if entry.live {
        out.push((expiry_key(&entry), value));
    }
    Ok(out)
}

/// Builds the index from every certificate record, in atomic batches (a store written
/// before the index existed). Entries that exist are written again, so a build cut short
/// by a crash simply runs again at the next open. Returns the number of agent records.
pub(crate) fn build(tree: &sled::Tree) -> Result<u64> {
    const BATCH: usize = 4096;
    let mut batch = sled::Batch::default();
    let (mut pending, mut indexed) = (0usize, 0u64);
    for kv in tree.scan_prefix([keys::CERT]) {
        let (_, value) = kv?;
        let cert = crate::store::decode_record(&value)?;
        let entries = expected(&cert)?;
        if entries.is_empty() {
            continue;
        }
        for (k, v) in entries {
            batch.insert(k, v);
        }
        indexed += 1;
        pending += 1;
        if pending == BATCH {
            tree.apply_batch(std::mem::take(&mut batch))?;
            pending = 0;
        }
    }
    if pending > 0 {
        tree.apply_batch(batch)?;
    }
    Ok(indexed)
}

/// Drops the whole index and builds it again from the records (a store of schema 5 or
/// older: its entries hold the liveness, and schema 3–5 kept `Y` `l` entries). The schema
/// version is written only after this returns, so a rebuild cut short by a crash starts
/// over at the next open. Returns the number of agent records.
pub(crate) fn rebuild(tree: &sled::Tree) -> Result<u64> {
    const BATCH: usize = 16_384;
    loop {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for kv in tree.scan_prefix([keys::AGENT_INDEX]).take(BATCH) {
            batch.remove(kv?.0);
            n += 1;
        }
        if n == 0 {
            break;
        }
        tree.apply_batch(batch)?;
    }
    build(tree)
}

/// One live credential's index entry ([`Store::live_agent_entries`]).
pub struct LiveAgentEntry {
    key: sled::IVec,
    value: sled::IVec,
}

impl LiveAgentEntry {
    /// The agent's name in lowercase, as the key holds it (no decoding).
    pub fn agent_lowercase(&self) -> &[u8] {
        // `Y` `e` + not_after (8) + agent + `\0` + fingerprint (32).
        self.key
            .get(10..self.key.len().saturating_sub(33))
            .unwrap_or_default()
    }

    /// The whole credential (decodes the value).
    pub fn credential(&self) -> Result<AgentCredential> {
        live(&self.value)
    }
}

/// The live credentials as `(agent (lowercase), fingerprint, SPKI hash)`, in expiry order
/// (for recounting what the registrations cover, see `coverage`).
pub(crate) fn live_credentials(
    tree: &sled::Tree,
) -> impl Iterator<Item = Result<(String, [u8; 32], [u8; 32])>> + '_ {
    tree.scan_prefix([keys::AGENT_INDEX, LIVE_BY_EXPIRY])
        .map(|kv| {
            let indexed: Indexed = decode(&kv?.1, "agent credential")?;
            Ok((
                indexed.agent.to_lowercase(),
                indexed.fingerprint.0,
                indexed.spki_sha256.0,
            ))
        })
}

/// A live (`e`) entry's value as the credential.
fn live(value: &[u8]) -> Result<AgentCredential> {
    Ok(decode::<Indexed>(value, "agent credential")?.credential(true))
}

impl Store {
    /// The live credentials (present, not revoked) with `not_after <= until`, in expiry
    /// order: a range of the index, whatever the number of live credentials.
    pub fn live_agent_credentials_expired_by(
        &self,
        until: UnixTime,
    ) -> Result<Vec<AgentCredential>> {
        let start = vec![keys::AGENT_INDEX, LIVE_BY_EXPIRY];
        let mut end = start.clone();
        end.extend_from_slice(&keys::time_bytes(until.saturating_add(1)));
        self.tree()
            .range(start..end)
            .map(|kv| live(&kv?.1))
            .collect()
    }

    /// Every credential of one agent (name compared case-insensitively) the store holds,
    /// present, gone or revoked, in fingerprint order. Reads only that agent's entries (and
    /// for each, whether its live entry exists).
    pub fn agent_credentials(&self, agent: &str) -> Result<Vec<AgentCredential>> {
        self.tree()
            .scan_prefix(agent_prefix(ALL, agent))
            .map(|kv| {
                let indexed: Indexed = decode(&kv?.1, "agent credential")?;
                let unknown = indexed.credential(false);
                let live = self.tree().contains_key(expiry_key(&unknown))?;
                Ok(AgentCredential { live, ..unknown })
            })
            .collect()
    }

    /// The live credentials (present in a source, not revoked) of every agent, by agent
    /// name (lowercase) then fingerprint: one small entry per live credential, no record
    /// read.
    pub fn live_agent_credentials(&self) -> Result<Vec<AgentCredential>> {
        let mut out = self
            .live_agent_entries()
            .map(|entry| entry?.credential())
            .collect::<Result<Vec<_>>>()?;
        out.sort_by_cached_key(|c| (c.agent.to_lowercase(), c.fingerprint));
        Ok(out)
    }

    /// The live credentials' index entries one at a time, in expiry order, decoded only
    /// when asked ([`LiveAgentEntry::credential`]): counting agents reads keys only.
    pub fn live_agent_entries(&self) -> impl Iterator<Item = Result<LiveAgentEntry>> + '_ {
        self.tree()
            .scan_prefix([keys::AGENT_INDEX, LIVE_BY_EXPIRY])
            .map(|kv| {
                let (key, value) = kv?;
                self.live_entries_read
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(LiveAgentEntry { key, value })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SourceLocation;
    use crate::test_support::facts;

    fn at(path: &str) -> SourceLocation {
        SourceLocation::File {
            path: path.into(),
            index: 0,
        }
    }

    #[test]
    fn the_index_follows_renewals_role_changes_and_revocations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let mut ingest = store.ingest();
        ingest
            .observe(facts(1, "Agent-A"), Some(Role::Agent), at("/a.pem"), 10)
            .expect("observe");
        ingest
            .observe(facts(9, "gw"), Some(Role::Gateway), at("/gw.pem"), 10)
            .expect("observe");
        ingest.commit().expect("commit");
        let live = store.live_agent_credentials().expect("live");
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].agent, "Agent-A");
        assert!(live[0].live);

        // Renewal: the file now holds certificate 2; certificate 1 is gone.
        ingest
            .observe(facts(2, "Agent-A"), Some(Role::Agent), at("/a.pem"), 20)
            .expect("observe");
        ingest
            .mark_gone(&Sha256([1; 32]), &at("/a.pem"), 20)
            .expect("gone");
        ingest.commit().expect("commit");
        let all = store.agent_credentials("agent-a").expect("all");
        assert_eq!(all.len(), 2);
        assert_eq!(
            all.iter().filter(|c| c.live).count(),
            1,
            "only the new one is live"
        );
        let live = store.live_agent_credentials().expect("live");
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].fingerprint, Sha256([2; 32]));

        // Revoked: no longer live. Role changed away from agent: out of the index.
        let mut two = store.get(&Sha256([2; 32])).expect("get").expect("stored");
        two.revocation = Some(crate::Revocation {
            revoked_at: 30,
            reason: crate::RevocationReason::KeyCompromise,
            revoked_by: "me".into(),
        });
        store.put(&two).expect("put");
        assert!(store.live_agent_credentials().expect("live").is_empty());
        let mut one = store.get(&Sha256([1; 32])).expect("get").expect("stored");
        one.role = Role::Other;
        store.put(&one).expect("put");
        assert_eq!(store.agent_credentials("AGENT-A").expect("all").len(), 1);
        let v = store.verify().expect("verify");
        assert!(v.is_ok(), "{:?}", v.problems);
    }

    /// sled's cost is per key written. A renewal round replaces every agent's credential: the
    /// new one costs what a first import's does, and the old one, now gone, must cost no
    /// more than its record rewritten (its source gone) and its live entry removed.
    #[test]
    fn a_renewed_credential_costs_two_keys_more_than_a_new_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        const AGENTS: u32 = 600;
        let credential = |agent: u32, round: u32| {
            let n = round * AGENTS + agent;
            let mut f = facts(0, &format!("agent-{agent}"));
            f.fingerprint = Sha256(core::array::from_fn(|i| {
                (n >> (8 * (i % 4))) as u8 ^ i as u8
            }));
            f.spki_sha256 = Sha256(core::array::from_fn(|i| (n >> (8 * (i % 4))) as u8 ^ 0x55));
            // Ephemeral 6-hour credentials, as agents renew them.
            f.not_before = 1_800_000_000 + i64::from(round) * 21_600;
            f.not_after = f.not_before + 21_600;
            f
        };
        let round = |round: u32| {
            let before = store.keys_written();
            let mut ingest = store.ingest();
            for agent in 0..AGENTS {
                let file = at(&format!("/agents/{agent}.pem"));
                ingest
                    .observe(
                        credential(agent, round),
                        Some(Role::Agent),
                        file.clone(),
                        10,
                    )
                    .expect("observe");
                if round > 0 {
                    let old = credential(agent, round - 1).fingerprint;
                    assert!(ingest.mark_gone(&old, &file, 10).expect("gone"));
                }
            }
            ingest.commit().expect("commit");
            store.keys_written() - before
        };
        let import = round(0);
        let renewal = round(1);
        assert!(
            import >= u64::from(AGENTS),
            "{import} keys for {AGENTS} new credentials"
        );
        let per_old = (renewal as f64 - import as f64) / f64::from(AGENTS);
        assert!(
            per_old <= 2.1,
            "a renewal round wrote {renewal} keys against {import} for the first import: \
             {per_old:.2} keys per replaced credential"
        );
        let v = store.verify().expect("verify");
        assert!(v.is_ok(), "{:?}", v.problems);
    }

    /// agent-1 .. agent-5, one credential each (`facts(n)`), in /n.pem.
    fn five_agents(store: &Store) {
        let mut ingest = store.ingest();
        for n in 1..=5u8 {
            ingest
                .observe(
                    facts(n, &format!("agent-{n}")),
                    Some(Role::Agent),
                    at(&format!("/{n}.pem")),
                    10,
                )
                .expect("observe");
        }
        ingest.commit().expect("commit");
    }

    #[test]
    fn a_lost_index_is_built_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        five_agents(&store);
        for kv in store.tree().scan_prefix([keys::AGENT_INDEX]) {
            store.tree().remove(kv.expect("read").0).expect("remove");
        }
        let v = store.verify().expect("verify");
        assert!(
            v.problems.iter().any(|p| p.contains("agent index")),
            "{:?}",
            v.problems
        );
        assert_eq!(build(store.tree()).expect("build"), 5);
        assert_eq!(store.live_agent_credentials().expect("live").len(), 5);
        assert!(store.verify().expect("verify").is_ok());
    }

    /// The expired live credentials are a range of the expiry-ordered entries: the live
    /// credentials expiring later are not read (here one is unreadable, and the answer does
    /// not care). A schema-3 store gets those entries built when it is opened.
    #[test]
    fn expired_live_credentials_are_a_range_and_built_for_a_schema_3_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store");
        {
            let store = Store::open(&path).expect("open");
            // facts(n) expires at 1_800_000_000 + n days.
            five_agents(&store);
            let by = |t| {
                store
                    .live_agent_credentials_expired_by(t)
                    .expect("range")
                    .iter()
                    .map(|c| c.agent.clone())
                    .collect::<Vec<_>>()
            };
            let day = 86_400;
            assert_eq!(by(1_800_000_000 + 2 * day), ["agent-1", "agent-2"]);
            assert!(by(1_800_000_000).is_empty());
            // agent-5's entry (the latest) becomes unreadable: an earlier range never reads it.
            let late = store
                .get(&facts(5, "agent-5").fingerprint)
                .expect("get")
                .expect("stored");
            let key = expiry_key(&entry_of(&late).expect("an agent"));
            assert!(store.tree().get(&key).expect("get").is_some());
            store.tree().insert(&key, vec![1u8, 0xff]).expect("damage");
            assert_eq!(by(1_800_000_000 + 3 * day).len(), 3);
            store.tree().remove(&key).expect("remove");

            // As schema 3 left it: no expiry-ordered entries.
            for kv in store
                .tree()
                .scan_prefix([keys::AGENT_INDEX, LIVE_BY_EXPIRY])
            {
                store.tree().remove(kv.expect("read").0).expect("remove");
            }
            store
                .tree()
                .insert([keys::META, b's'], &3u32.to_be_bytes())
                .expect("schema 3");
            store.flush().expect("flush");
        }
        let store = Store::open(&path).expect("reopen");
        let v = store.verify().expect("verify");
        assert!(v.is_ok(), "{:?}", v.problems);
        assert_eq!(
            store
                .live_agent_credentials_expired_by(1_800_000_000 + 10 * 86_400)
                .expect("range")
                .len(),
            5
        );
    }
}
