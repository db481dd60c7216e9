//! The files whose last read failed, kept per directory beside their file states so that
//! `check`, `status` and `/metrics` answer without reading every file state (a fleet of
//! 200,000 agent files has 200,000 of them).
//!
//! Key `B` + directory → the `(file name, cause)` of that directory's files whose problem
//! is [`FileProblem::Failed`], in file-state order; no key when there are none.
//! [`crate::Ingest::commit`] writes it in the same atomic batch as the directory's file
//! states (the only place file states are written); a store of schema 3 or older gets it
//! built when it is opened ([`build`]); `store verify` checks it against the file states.

use std::collections::BTreeMap;

use crate::error::Result;
use crate::files::{FileProblem, FileState};
use crate::keys;
use crate::store::{decode, encode, Store};

/// `B` + directory.
fn key(dir: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(dir.len() + 1);
    k.push(keys::FAILED_FILES);
    k.extend_from_slice(dir.as_bytes());
    k
}

/// The failed files among `files` (one directory's states): `(name, cause)`.
pub(crate) fn of(files: &[FileState]) -> Vec<(String, String)> {
    files
        .iter()
        .filter_map(|f| match &f.problem {
            Some(FileProblem::Failed(cause)) => Some((f.name.clone(), cause.clone())),
            _ => None,
        })
        .collect()
}

/// Adds to `batch` the entry of directory `dir` whose file states become `files`.
/// Returns the bytes written.
pub(crate) fn update(
    batch: &mut crate::batch::Batch,
    dir: &str,
    files: &[FileState],
) -> Result<u64> {
    let failed = of(files);
    if failed.is_empty() {
        batch.remove(key(dir));
        return Ok(0);
    }
    let value = encode(&failed)?;
    let bytes = (dir.len() + 1 + value.len()) as u64;
    batch.insert(key(dir), value);
    Ok(bytes)
}

/// Every entry: directory → its failed files (for `verify`).
pub(crate) fn all(tree: &sled::Tree) -> Result<BTreeMap<String, Vec<(String, String)>>> {
    let mut out = BTreeMap::new();
    for kv in tree.scan_prefix([keys::FAILED_FILES]) {
        let (k, v) = kv?;
        let dir = String::from_utf8_lossy(&k[1..]).into_owned();
        out.insert(dir, decode(&v, "failed files")?);
    }
    Ok(out)
}

/// Builds the entries from every file state (a store written before they existed), in
/// one batch per directory. Returns the number of failed files found.
pub(crate) fn build(tree: &sled::Tree) -> Result<u64> {
    let mut by_dir: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for kv in tree.scan_prefix([keys::FILES]) {
        let (k, v) = kv?;
        let Some(dir) = keys::dir_of_key(&k) else {
            continue;
        };
        let files: Vec<FileState> = decode(&v, "file state")?;
        let failed = of(&files);
        if !failed.is_empty() {
            by_dir.entry(dir.to_string()).or_default().extend(failed);
        }
    }
    let mut found = 0;
    for (dir, failed) in by_dir {
        found += failed.len() as u64;
        tree.insert(key(&dir), encode(&failed)?)?;
    }
    Ok(found)
}

impl Store {
    /// Every scanned file whose last read failed (unreadable, damaged, a PFX without its
    /// password, ...) and is not gone: `(path, cause)`, sorted by path. Reads only the
    /// directories that have such files, never the file states.
    pub fn failed_files(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for (dir, failed) in all(self.tree())? {
            for (name, cause) in failed {
                out.push((format!("{}/{name}", dir.trim_end_matches('/')), cause));
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(name: &str, problem: Option<FileProblem>) -> FileState {
        FileState {
            name: name.into(),
            size: 1,
            modified_ns: 0,
            last_seen: 10,
            certificates: vec![],
            problem,
        }
    }

    /// The failed files come from their own entries: a fleet's thousands of file states
    /// are not read (here: one is unreadable, and the answer does not care).
    #[test]
    fn failed_files_are_answered_without_reading_the_file_states() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store");
        let store = Store::open(&path).expect("open");
        let mut ingest = store.ingest();
        ingest.replace_dir(
            "/srv/bad",
            vec![
                state("a.pem", None),
                state("b.pem", Some(FileProblem::Failed("bad base64".into()))),
                state(
                    "key.pem",
                    Some(FileProblem::Skipped("a private key".into())),
                ),
            ],
        );
        ingest.replace_dir(
            "/srv/fleet",
            (0..2000)
                .map(|i| state(&format!("{i}.pem"), None))
                .collect(),
        );
        ingest.commit().expect("commit");
        let want = vec![("/srv/bad/b.pem".to_string(), "bad base64".to_string())];
        assert_eq!(store.failed_files().expect("failed"), want);
        let v = store.verify().expect("verify");
        assert!(v.is_ok(), "{:?}", v.problems);

        // The fleet folder's file states become unreadable: the answer stands.
        store
            .tree()
            .insert(
                keys::dir_segment_key("/srv/fleet", 0),
                vec![1u8, 0xff, 0xff],
            )
            .expect("damage");
        assert_eq!(store.failed_files().expect("failed"), want);

        // Fixed: the next write of the folder's states removes its entry.
        let mut ingest = store.ingest();
        ingest.replace_dir("/srv/bad", vec![state("b.pem", None)]);
        ingest.commit().expect("commit");
        assert_eq!(store.failed_files().expect("failed"), vec![]);
    }

    /// A schema-3 store (no entries) gets them built when it is opened.
    #[test]
    fn a_schema_3_store_gets_its_failed_files_indexed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store");
        {
            let store = Store::open(&path).expect("open");
            let mut ingest = store.ingest();
            ingest.replace_dir(
                "/srv/bad",
                vec![state(
                    "b.pem",
                    Some(FileProblem::Failed("truncated".into())),
                )],
            );
            ingest.commit().expect("commit");
            store
                .tree()
                .remove(key("/srv/bad"))
                .expect("as schema 3 wrote it");
            store
                .tree()
                .insert([keys::META, b's'], &3u32.to_be_bytes())
                .expect("schema 3");
            store.flush().expect("flush");
        }
        let store = Store::open(&path).expect("reopen");
        assert_eq!(
            store.failed_files().expect("failed"),
            vec![("/srv/bad/b.pem".to_string(), "truncated".to_string())]
        );
        let v = store.verify().expect("verify");
        assert!(v.is_ok(), "{:?}", v.problems);
    }
}
