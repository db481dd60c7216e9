//! The index of agents: agent name → its credentials, kept on every commit so that agent
//! decisions (the deny list, the pending queue, `agents block`) cost what changed, not a
//! read of every agent certificate ever stored.
//!
//! Keys (see the layout table in `keys.rs`), for every certificate whose role is `agent`:
//! - `Y` `c` + agent (lowercase) + `\0` + fingerprint (32) → [`AgentCredential`]: every
//!   credential of the agent the store holds (present, gone or revoked);
//! - `Y` `l` + agent (lowercase) + `\0` + fingerprint (32) → the same [`AgentCredential`],
//!   only while the certificate is *live*: present in a source and not revoked (what the
//!   pending queue looks at);
//! - `Y` `e` + not_after (8) + agent (lowercase) + `\0` + fingerprint (32) → the same, for
//!   the same live credentials in expiry order (schema 4): the expired live credentials a
//!   stalled-renewal check looks for are a range, not a read of every live credential.
//!
//! The agent of a certificate is its display name (subject CN, else its first SAN, else its
//! subject DN), as `certctl agents` names agents. [`crate::Ingest::commit`] writes the entries
//! that changed in the same atomic batch as the records; a certificate removed by retention
//! takes its entries with it (`retention::remove_certificate`). A store of schema 2 gets the
//! index built when it is opened (`migrate`); `store verify` checks it against the records.

use serde::{Deserialize, Serialize};

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

const ALL: u8 = b'c';
const LIVE: u8 = b'l';
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

/// Adds to `batch` what turns the index entry `before` into `after` (for one record);
/// nothing when they are equal. Returns the bytes written.
pub(crate) fn update(
    batch: &mut sled::Batch,
    before: Option<&AgentCredential>,
    after: Option<&AgentCredential>,
) -> Result<u64> {
    if before == after {
        return Ok(0);
    }
    if let Some(old) = before {
        let same_key = after.is_some_and(|new| entry_key(ALL, new) == entry_key(ALL, old));
        if !same_key {
            batch.remove(entry_key(ALL, old));
        }
        if old.live && !after.is_some_and(|new| new.live && same_key) {
            batch.remove(entry_key(LIVE, old));
        }
        if old.live && !after.is_some_and(|new| new.live && expiry_key(new) == expiry_key(old)) {
            batch.remove(expiry_key(old));
        }
    }
    let mut bytes = 0;
    if let Some(new) = after {
        let value = encode(new)?;
        let key = entry_key(ALL, new);
        bytes += (key.len() + value.len()) as u64;
        batch.insert(key, value.clone());
        if new.live {
            let key = entry_key(LIVE, new);
            bytes += (key.len() + value.len()) as u64;
            batch.insert(key, value.clone());
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
    let value = encode(&entry)?;
    let mut out = vec![(entry_key(ALL, &entry), value.clone())];
    if entry.live {
        out.push((entry_key(LIVE, &entry), value.clone()));
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

/// One entry of the live credentials' index ([`Store::live_agent_entries`]).
pub struct LiveAgentEntry {
    key: sled::IVec,
    value: sled::IVec,
}

impl LiveAgentEntry {
    /// The agent's name in lowercase, as the key holds it (no decoding).
    pub fn agent_lowercase(&self) -> &[u8] {
        // `Y` `l` + agent + `\0` + fingerprint (32).
        self.key
            .get(2..self.key.len().saturating_sub(33))
            .unwrap_or_default()
    }

    /// The whole credential (decodes the value).
    pub fn credential(&self) -> Result<AgentCredential> {
        decode(&self.value, "agent credential")
    }
}

/// Adds the expiry-ordered entries of the live credentials (schema 3 → 4), from the
/// live entries (no record read). Returns how many were written.
pub(crate) fn build_expiry_order(tree: &sled::Tree) -> Result<u64> {
    const BATCH: usize = 4096;
    let mut batch = sled::Batch::default();
    let (mut pending, mut written) = (0usize, 0u64);
    for kv in tree.scan_prefix([keys::AGENT_INDEX, LIVE]) {
        let (_, value) = kv?;
        let entry: AgentCredential = decode(&value, "agent credential")?;
        batch.insert(expiry_key(&entry), value);
        pending += 1;
        written += 1;
        if pending == BATCH {
            tree.apply_batch(std::mem::take(&mut batch))?;
            pending = 0;
        }
    }
    if pending > 0 {
        tree.apply_batch(batch)?;
    }
    Ok(written)
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
            .map(|kv| decode(&kv?.1, "agent credential"))
            .collect()
    }

    /// Every credential of one agent (name compared case-insensitively) the store holds,
    /// present, gone or revoked, in fingerprint order. Reads only that agent's entries.
    pub fn agent_credentials(&self, agent: &str) -> Result<Vec<AgentCredential>> {
        self.tree()
            .scan_prefix(agent_prefix(ALL, agent))
            .map(|kv| decode(&kv?.1, "agent credential"))
            .collect()
    }

    /// The live credentials (present in a source, not revoked) of every agent, by agent
    /// name then fingerprint: one small entry per live credential, no record read.
    pub fn live_agent_credentials(&self) -> Result<Vec<AgentCredential>> {
        self.tree()
            .scan_prefix([keys::AGENT_INDEX, LIVE])
            .map(|kv| decode(&kv?.1, "agent credential"))
            .collect()
    }

    /// The live credentials' index entries one at a time, decoded only when asked
    /// ([`LiveAgentEntry::credential`]): counting agents reads keys only.
    pub fn live_agent_entries(&self) -> impl Iterator<Item = Result<LiveAgentEntry>> + '_ {
        self.tree()
            .scan_prefix([keys::AGENT_INDEX, LIVE])
            .map(|kv| {
                let (key, value) = kv?;
                self.live_entries_read
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(LiveAgentEntry { key, value })
            })
    }

    /// [`Store::live_agent_credentials`] one entry at a time, without holding them all.
    pub fn live_agent_credentials_iter(
        &self,
    ) -> impl Iterator<Item = Result<AgentCredential>> + '_ {
        self.tree()
            .scan_prefix([keys::AGENT_INDEX, LIVE])
            .map(|kv| decode(&kv?.1, "agent credential"))
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
