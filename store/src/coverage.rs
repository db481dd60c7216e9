//! Which agent credentials the registrations cover, kept so that the pending queue's size
//! is a count the store keeps on every commit rather than a walk of the live credentials.
//!
//! A live agent credential is *covered* when a registration names its certificate
//! (fingerprint) or its key (SPKI SHA-256), whoever the registration is for, or when its
//! agent has a registration that names neither (a registration by name covers all of the
//! agent's credentials): the rule of `certctl agents pending` (`unregistered_reason_of` in
//! certd's `fleet::agents`). The registrations themselves are kept by GUID (`G` keys);
//! the lookups a commit needs are `O` keys, rewritten with every import:
//!
//! | key                          | value | what                                      |
//! |------------------------------|-------|-------------------------------------------|
//! | `O` `n` + agent (lowercase)  | empty | the agent has a registration by name only |
//! | `O` `f` + fingerprint (32)   | empty | a registration names this certificate     |
//! | `O` `k` + SPKI SHA-256 (32)  | empty | a registration names this key             |
//!
//! `crate::counts` counts per agent the live credentials no registration covers (`Uq`) and
//! the agents that have one (`UQ`); an import recounts them from the live credentials'
//! index ([`recount_uncovered`]), under the count lock, in the import's atomic batch.

use std::collections::{BTreeMap, HashSet};

use crate::batch::Batch;
use crate::error::Result;
use crate::fleet::Registration;
use crate::keys;

const BY_NAME: u8 = b'n';
const BY_FINGERPRINT: u8 = b'f';
const BY_KEY: u8 = b'k';

fn key(kind: u8, bytes: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + bytes.len());
    k.extend_from_slice(&[keys::REG_LOOKUP, kind]);
    k.extend_from_slice(bytes);
    k
}

/// Whether a live credential is covered by a registration.
pub(crate) trait Covers {
    fn covers(&self, agent_lower: &str, fp: &[u8; 32], spki: &[u8; 32]) -> Result<bool>;
}

/// The registrations as the lookup entries in the store hold them.
pub(crate) struct Stored<'t>(pub(crate) &'t sled::Tree);

impl Covers for Stored<'_> {
    fn covers(&self, agent_lower: &str, fp: &[u8; 32], spki: &[u8; 32]) -> Result<bool> {
        Ok(self.0.contains_key(key(BY_FINGERPRINT, fp))?
            || self.0.contains_key(key(BY_KEY, spki))?
            || self.0.contains_key(key(BY_NAME, agent_lower.as_bytes()))?)
    }
}

/// A set of registrations in memory (an import's).
pub(crate) struct Registered {
    by_name: HashSet<String>,
    fingerprints: HashSet<[u8; 32]>,
    keys: HashSet<[u8; 32]>,
}

impl Registered {
    pub(crate) fn of<'r>(registrations: impl IntoIterator<Item = &'r Registration>) -> Self {
        let mut r = Registered {
            by_name: HashSet::new(),
            fingerprints: HashSet::new(),
            keys: HashSet::new(),
        };
        for reg in registrations {
            match (&reg.fingerprint, &reg.spki_sha256) {
                (None, None) => {
                    r.by_name.insert(reg.agent.to_lowercase());
                }
                (fp, spki) => {
                    r.fingerprints.extend(fp.map(|f| f.0));
                    r.keys.extend(spki.map(|s| s.0));
                }
            }
        }
        r
    }

    /// The lookup entries these registrations call for.
    pub(crate) fn entries(&self) -> Vec<Vec<u8>> {
        let names = self.by_name.iter().map(|n| key(BY_NAME, n.as_bytes()));
        let fps = self.fingerprints.iter().map(|f| key(BY_FINGERPRINT, f));
        let spkis = self.keys.iter().map(|s| key(BY_KEY, s));
        names.chain(fps).chain(spkis).collect()
    }
}

impl Covers for Registered {
    fn covers(&self, agent_lower: &str, fp: &[u8; 32], spki: &[u8; 32]) -> Result<bool> {
        Ok(self.fingerprints.contains(fp)
            || self.keys.contains(spki)
            || self.by_name.contains(agent_lower))
    }
}

/// Replaces the lookup entries and the uncovered counts by those of `registered` (the
/// whole set of registrations after an import), in `batch`. The caller holds the count
/// lock and applies the batch.
pub(crate) fn rewrite(tree: &sled::Tree, registered: &Registered, batch: &mut Batch) -> Result<()> {
    for kv in tree.scan_prefix([keys::REG_LOOKUP]) {
        batch.remove(kv?.0);
    }
    for k in registered.entries() {
        batch.insert(k, &[]);
    }
    recount_uncovered(tree, registered, batch)
}

/// Rewrites the uncovered counts (`Uq` per agent, `UQ`) from the live credentials' index
/// and `covers`, in `batch`.
pub(crate) fn recount_uncovered(
    tree: &sled::Tree,
    covers: &impl Covers,
    batch: &mut Batch,
) -> Result<()> {
    for k in crate::counts::uncovered_keys(tree) {
        batch.remove(k?);
    }
    let mut per_agent: BTreeMap<String, u64> = BTreeMap::new();
    for credential in crate::agent_index::live_credentials(tree) {
        let (agent, fp, spki) = credential?;
        if !covers.covers(&agent, &fp, &spki)? {
            *per_agent.entry(agent).or_default() += 1;
        }
    }
    for (k, v) in crate::counts::uncovered_entries(&per_agent) {
        batch.insert(k, v);
    }
    Ok(())
}

/// The lookup entries the stored registrations call for, against those stored (for
/// `store verify`): the differences in words.
pub(crate) fn differences(tree: &sled::Tree) -> Result<Vec<String>> {
    let registrations = tree
        .scan_prefix([keys::REGISTRATION])
        .map(|kv| crate::store::decode::<Registration>(&kv?.1, "agent registration"))
        .collect::<Result<Vec<_>>>()?;
    let want: HashSet<Vec<u8>> = Registered::of(&registrations)
        .entries()
        .into_iter()
        .collect();
    let mut have = HashSet::new();
    for kv in tree.scan_prefix([keys::REG_LOOKUP]) {
        have.insert(kv?.0.to_vec());
    }
    let mut out = Vec::new();
    if want.difference(&have).next().is_some() {
        out.push(format!(
            "{} registration lookup entries are missing",
            want.difference(&have).count()
        ));
    }
    if have.difference(&want).next().is_some() {
        out.push(format!(
            "{} registration lookup entries name no registration",
            have.difference(&want).count()
        ));
    }
    Ok(out)
}
