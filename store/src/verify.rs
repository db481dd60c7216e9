//! [`Store::verify`]: a consistency check of the whole store (`certctl store verify`).
//!
//! It reads every value and checks what the rest of the code relies on: every record
//! decodes and sits under its own notAfter and fingerprint, with a locator that finds it
//! and no locator that finds nothing; every record has all of its index
//! postings; no posting leads nowhere (a record is only ever deleted by retention, in the
//! same atomic batch as its postings, so a dangling posting means a half-applied write); the
//! agent index holds exactly the entries the agent records call for; no file location is
//! claimed by two certificates at once; the file states name only certificates that exist;
//! workflows, retention aggregates and other values decode; the counts (`crate::counts`) equal
//! a recount of the records. The crash tests run it after every `kill -9`, the retention
//! tests after every prune.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::files::FileState;
use crate::ingest::{fp_prefix, index_entries, FpPrefix};
use crate::keys;
use crate::migrate::RECORD_FORMAT_2;
use crate::model::{Fingerprint, SourceLocation};
use crate::store::{decode, decode_postings, decode_record, Store};

/// What [`Store::verify`] found.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Verification {
    /// Certificate records read.
    pub records: u64,
    /// Index postings read.
    pub postings: u64,
    /// Scanned files with a remembered state.
    pub files: u64,
    /// Regenerate workflows read.
    pub workflows: u64,
    /// Every inconsistency, in words that name the record or key.
    pub problems: Vec<String>,
}

impl Verification {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Stop listing problems after this many (the count stays right).
const MAX_LISTED: usize = 1000;

impl Store {
    /// Checks the whole store for consistency. Reads everything: minutes on millions of
    /// records, and memory for one small entry per index posting.
    pub fn verify(&self) -> Result<Verification> {
        let mut v = Verification::default();
        let problem = |v: &mut Verification, text: String| {
            if v.problems.len() < MAX_LISTED {
                v.problems.push(text);
            }
        };

        // Index postings, as (bucket, key, fingerprint prefix) hashes.
        let mut postings: HashSet<u64> = HashSet::new();
        let mut posted: HashSet<FpPrefix> = HashSet::new();
        for kv in self.tree().scan_prefix([keys::POSTING]) {
            let (key, value) = kv?;
            let Some(bucket) = key.len().checked_sub(10).map(|end| &key[..end]) else {
                problem(
                    &mut v,
                    format!("index key {} is too short", hex::encode(&key)),
                );
                continue;
            };
            match decode_postings(&value) {
                Ok(list) => {
                    for p in list {
                        v.postings += 1;
                        postings.insert(entry_hash(bucket, p.key, &p.fp));
                        posted.insert(p.fp);
                    }
                }
                Err(e) => problem(&mut v, format!("index value {}: {e}", hex::encode(&key))),
            }
        }

        // The agent index, to be matched against the records.
        let mut agent_index: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        for kv in self.tree().scan_prefix([keys::AGENT_INDEX]) {
            let (key, value) = kv?;
            agent_index.insert(key.to_vec(), value.to_vec());
        }

        // The records' locators (`H`: fingerprint → not_after), to be matched against them.
        let mut locators: HashMap<[u8; 32], Vec<u8>> = HashMap::new();
        for kv in self.tree().scan_prefix([keys::LOCATOR]) {
            let (key, value) = kv?;
            match <[u8; 32]>::try_from(&key[1..]) {
                Ok(fp) => {
                    locators.insert(fp, value.to_vec());
                }
                Err(_) => problem(
                    &mut v,
                    format!("record locator key {} is malformed", hex::encode(&key)),
                ),
            }
        }

        // Records, and the file locations they are currently seen at.
        let mut prefixes: HashSet<FpPrefix> = HashSet::new();
        let mut fingerprints: HashSet<Fingerprint> = HashSet::new();
        let mut located: HashMap<(String, u32), Fingerprint> = HashMap::new();
        let mut partial_sources: HashSet<Fingerprint> = HashSet::new();
        // Every (path, index) → certificate a record lists, gone or not: a file state may
        // be older than a record (certctl deployed over the file since), never newer.
        let mut sourced: HashSet<(String, u32, Fingerprint)> = HashSet::new();
        for kv in self.tree().scan_prefix([keys::CERT]) {
            let (key, value) = kv?;
            v.records += 1;
            let cert = match decode_record(&value) {
                Ok(c) => c,
                Err(e) => {
                    problem(&mut v, format!("record {}: {e}", hex::encode(&key[1..])));
                    continue;
                }
            };
            let fp = cert.fingerprint();
            let own_key = keys::record_key(cert.facts.not_after, &fp.0);
            if key.as_ref() != own_key.as_slice() {
                let under = keys::fingerprint_of_record_key(&key)
                    .map_or_else(|| hex::encode(&key[1..]), hex::encode);
                problem(&mut v, format!("record under {under} holds {fp}"));
            } else {
                match locators.remove(&fp.0) {
                    Some(at) if at == keys::time_bytes(cert.facts.not_after) => {}
                    Some(_) => problem(&mut v, format!("record {fp}: its locator is out of date")),
                    None => problem(&mut v, format!("record {fp} lacks its locator")),
                }
            }
            if value.first() != Some(&RECORD_FORMAT_2) {
                problem(&mut v, format!("record {fp} is in an old format"));
            }
            prefixes.insert(fp_prefix(&fp));
            fingerprints.insert(fp);
            if cert.more_sources > 0 {
                partial_sources.insert(fp);
            }
            for (bucket, k) in index_entries(&cert) {
                if !postings.contains(&entry_hash(&bucket, k, &fp_prefix(&fp))) {
                    problem(
                        &mut v,
                        format!(
                            "record {fp} ({}) lacks its index entry {}",
                            cert.facts.display_name(),
                            hex::encode(&bucket[1..])
                        ),
                    );
                }
            }
            match crate::agent_index::expected(&cert) {
                Ok(entries) => {
                    for (key, value) in entries {
                        match agent_index.remove(&key) {
                            Some(stored) if stored == value => {}
                            Some(_) => problem(
                                &mut v,
                                format!("record {fp}: its agent index entry is out of date"),
                            ),
                            None => {
                                problem(&mut v, format!("record {fp} lacks its agent index entry"))
                            }
                        }
                    }
                }
                Err(e) => problem(&mut v, format!("record {fp}: {e}")),
            }
            let mut seen = HashSet::new();
            for source in &cert.sources {
                if let SourceLocation::File { path, index } = &source.location {
                    sourced.insert((path.clone(), *index, fp));
                }
                if !seen.insert(&source.location) {
                    problem(
                        &mut v,
                        format!("record {fp} lists the source {} twice", source.location),
                    );
                }
                if let (SourceLocation::File { path, index }, None) =
                    (&source.location, source.gone_since)
                {
                    if let Some(other) = located.insert((path.clone(), *index), fp) {
                        problem(
                            &mut v,
                            format!(
                                "{path}#{index} is claimed by two certificates: {other} and {fp}"
                            ),
                        );
                    }
                }
            }
        }
        for fp in posted.difference(&prefixes) {
            problem(
                &mut v,
                format!(
                    "index postings lead to {}…, which has no record",
                    hex::encode(fp)
                ),
            );
        }

        for fp in locators.keys() {
            problem(
                &mut v,
                format!("record locator {} finds no record", hex::encode(fp)),
            );
        }

        for key in agent_index.keys() {
            problem(
                &mut v,
                format!(
                    "agent index entry {} has no agent record (or a stale liveness)",
                    String::from_utf8_lossy(
                        key.get(2..key.len().saturating_sub(32)).unwrap_or(&[])
                    )
                ),
            );
        }
        for difference in crate::coverage::differences(self.tree())? {
            problem(&mut v, difference);
        }
        for kv in self.tree().scan_prefix([keys::PRUNED]) {
            let (key, value) = kv?;
            if let Err(e) = decode::<crate::PrunedRenewals>(&value, "pruned renewals") {
                problem(
                    &mut v,
                    format!(
                        "pruned renewals of {}: {e}",
                        String::from_utf8_lossy(&key[1..])
                    ),
                );
            }
        }

        // File states: each certificate a file held must exist and know that file.
        let mut dir_times: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
        let mut failed: std::collections::BTreeMap<String, Vec<(String, String)>> =
            Default::default();
        for kv in self.tree().scan_prefix([keys::FILES]) {
            let (key, value) = kv?;
            let dir = keys::dir_of_key(&key).unwrap_or("?").to_string();
            let files: Vec<FileState> = match decode(&value, "file state") {
                Ok(f) => f,
                Err(e) => {
                    problem(&mut v, format!("file states of {dir}: {e}"));
                    continue;
                }
            };
            let failed_here = crate::failed_files::of(&files);
            if !failed_here.is_empty() {
                failed.entry(dir.clone()).or_default().extend(failed_here);
            }
            for file in files {
                v.files += 1;
                let range = dir_times
                    .entry(dir.clone())
                    .or_insert((file.last_seen, file.last_seen));
                range.0 = range.0.min(file.last_seen);
                range.1 = range.1.max(file.last_seen);
                let path = if dir == "/" {
                    format!("/{}", file.name)
                } else {
                    format!("{dir}/{}", file.name)
                };
                for (index, fp) in file.certificates.iter().enumerate() {
                    let index = u32::try_from(index).unwrap_or(u32::MAX);
                    if !fingerprints.contains(fp) {
                        problem(
                            &mut v,
                            format!("{path}#{index} names {fp}, which has no record"),
                        );
                    } else if !sourced.contains(&(path.clone(), index, *fp))
                        && !partial_sources.contains(fp)
                    {
                        problem(
                            &mut v,
                            format!(
                                "{path}#{index} holds {fp}, but that record does not list the file"
                            ),
                        );
                    }
                }
            }
        }

        // Directory summaries agree with the file states they sum up (stores written
        // before summaries existed have none: a query then reads the file states).
        for kv in self.tree().scan_prefix([keys::DIR_SEEN]) {
            let (key, value) = kv?;
            let dir = String::from_utf8_lossy(&key[1..]).into_owned();
            match decode::<crate::files::DirSeen>(&value, "directory summary") {
                Err(e) => problem(&mut v, format!("summary of {dir}: {e}")),
                Ok(seen) => match dir_times.get(&dir) {
                    Some(&(oldest, newest)) if seen.oldest == oldest && seen.newest == newest => {}
                    Some(&(oldest, newest)) => problem(
                        &mut v,
                        format!(
                            "summary of {dir} says files were confirmed from {} to {}, its file states say {oldest} to {newest}",
                            seen.oldest, seen.newest
                        ),
                    ),
                    None => problem(&mut v, format!("summary of {dir}, which has no file states")),
                },
            }
        }

        // The failed files kept per directory are those its file states say failed.
        match crate::failed_files::all(self.tree()) {
            Err(e) => problem(&mut v, format!("failed files: {e}")),
            Ok(kept) => {
                for (dir, files) in &failed {
                    if kept.get(dir) != Some(files) {
                        problem(
                            &mut v,
                            format!(
                                "{dir}: {} files failed by its file states, the failed-files entry lists {}",
                                files.len(),
                                kept.get(dir).map_or(0, Vec::len)
                            ),
                        );
                    }
                }
                for dir in kept.keys().filter(|d| !failed.contains_key(*d)) {
                    problem(
                        &mut v,
                        format!("{dir}: a failed-files entry, but no file there failed"),
                    );
                }
            }
        }

        for kv in self.tree().scan_prefix([keys::WORKFLOW]) {
            let (key, value) = kv?;
            v.workflows += 1;
            if let Err(e) = crate::workflows::decode_workflow(&value) {
                problem(&mut v, format!("workflow {}: {e}", hex::encode(&key[1..])));
            }
        }

        // The counts agree with a recount of the records.
        for text in crate::counts::differences(self.tree())? {
            problem(&mut v, text);
        }
        Ok(v)
    }
}

fn entry_hash(bucket: &[u8], key: i64, fp: &FpPrefix) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bucket.hash(&mut h);
    key.hash(&mut h);
    fp.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use crate::test_support::facts;

    fn filled_store(dir: &std::path::Path) -> Store {
        let store = Store::open(dir).expect("open");
        let mut batch = store.ingest();
        for n in 1..=3u8 {
            let location = SourceLocation::File {
                path: format!("/certs/{n}.pem"),
                index: 0,
            };
            batch
                .observe(
                    facts(n, &format!("host{n}")),
                    Some(Role::Agent),
                    location,
                    5,
                )
                .expect("observe");
        }
        batch.replace_dir(
            "/certs",
            (1..=3u8)
                .map(|n| FileState {
                    name: format!("{n}.pem"),
                    size: 1,
                    modified_ns: 1,
                    last_seen: 5,
                    certificates: vec![Sha256([n; 32])],
                    problem: None,
                })
                .collect(),
        );
        batch.commit().expect("commit");
        store
    }

    #[test]
    fn a_consistent_store_verifies() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = filled_store(dir.path());
        let v = store.verify().expect("verify");
        assert!(v.is_ok(), "{:?}", v.problems);
        assert_eq!((v.records, v.files), (3, 3));
        // expiry, role+expiry, key, issuer, one name: five entries per record
        assert_eq!(v.postings, 15);
    }

    #[test]
    fn a_lost_index_segment_is_found() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = filled_store(dir.path());
        let spki = keys::index_prefix(keys::Index::Spki);
        let first = store
            .tree()
            .scan_prefix(spki)
            .next()
            .expect("an spki posting");
        store.tree().remove(first.expect("read").0).expect("remove");
        let v = store.verify().expect("verify");
        assert!(
            v.problems
                .iter()
                .any(|p| p.contains("lacks its index entry")),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn a_record_without_its_batch_is_found() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = filled_store(dir.path());
        // A record lost while its postings and file state survived: half a batch.
        let two = store.get(&Sha256([2; 32])).expect("get").expect("record 2");
        store
            .tree()
            .remove(keys::record_key(two.facts.not_after, &[2; 32]))
            .expect("remove");
        // And a record filed under the wrong fingerprint.
        let one = store.get(&Sha256([1; 32])).expect("get").expect("record 1");
        let bytes = store
            .tree()
            .get(keys::record_key(one.facts.not_after, &[1; 32]))
            .expect("get");
        store
            .tree()
            .insert(
                keys::record_key(one.facts.not_after, &[9; 32]),
                bytes.expect("record 1"),
            )
            .expect("insert");
        let v = store.verify().expect("verify");
        let all = v.problems.join("\n");
        assert!(all.contains("which has no record"), "{all}");
        assert!(
            all.contains(&format!(
                "record locator {} finds no record",
                "02".repeat(32)
            )),
            "{all}"
        );
        assert!(
            all.contains(&format!("record under {} holds", "09".repeat(32))),
            "{all}"
        );
        assert!(
            all.contains("/certs/1.pem#0 is claimed by two certificates"),
            "{all}"
        );
    }
}
