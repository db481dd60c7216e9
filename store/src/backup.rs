//! Copying the whole sled tree out of a store and into a new one, for `certctl store
//! backup` / `store restore` (the archive around it, with the CA folders and the manifest,
//! is `certctl_daemon::backup`'s).
//!
//! **The dump** ([`Store::export`]) is every key and value of the store's one tree (records,
//! index postings, file states, audit events, managed CAs, workflows, reminders, agent
//! decisions, settings, tracked artifacts, ...), in key order, framed as
//!
//! ```text
//! TREE_MAGIC ; { u32 key length, key, u32 value length, value }* ; END_MARK, u64 record count
//! ```
//!
//! (big-endian lengths). [`Store::import`] reads it back into an empty store.
//!
//! **Consistency.** sled 0.34 has no snapshots. `Db::export` is only `Tree::iter` over every
//! tree (and panics on an I/O error), and an iteration reads each key's value at the moment
//! it gets there: a batch applied while it runs may be seen in part (the records of a scan
//! batch without their index postings, which `store verify` reports as a half-applied
//! write). sled's batches are atomic against each other and against a crash, not against a
//! concurrent iteration. So [`Store::export`] is a point-in-time copy exactly when nothing
//! writes to the store while it runs, and its callers make sure of that: certctl in direct
//! mode holds sled's exclusive lock on the store (no other process can write), and certd
//! holds its writer lock, which every store write in certd takes, for the dump only
//! (`certctl_daemon::backup` says how long). The dump then equals the state after the last
//! batch committed, which is exactly what a crash at that moment would have left: a state
//! every part of certctl is built to resume from.

use std::io::{self, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::keys;
use crate::model::UnixTime;
use crate::store::{decode, encode, Store};

/// First bytes of a tree dump.
pub const TREE_MAGIC: &[u8; 14] = b"CERTCTL-TREE1\n";
/// Where a key length would be, after the last record.
const END_MARK: u32 = u32::MAX;
/// Largest key or value a dump may hold (sled values here are far smaller: a record is
/// about 1 KiB, an index segment at most 256 postings, a cached CRL a few MiB).
const MAX_ITEM: u32 = 256 << 20;
/// Bytes of keys and values per sled batch when importing.
const IMPORT_BATCH_BYTES: usize = 4 << 20;
/// The key of the "restored from a backup" note.
const RESTORED_KEY: &[u8] = b"Mrestored";

/// How many keys of each kind a dump holds, by kind name (`certificates`, `index-postings`,
/// `audit-events`, ...), and in all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeCounts {
    pub keys: u64,
    pub bytes: u64,
    pub by_kind: std::collections::BTreeMap<String, u64>,
}

impl TreeCounts {
    fn count(&mut self, key: &[u8], value_len: usize) {
        self.keys += 1;
        self.bytes += (key.len() + value_len) as u64;
        *self.by_kind.entry(kind_of(key).to_string()).or_insert(0) += 1;
    }
}

/// The kind of record a key holds (see `crate::keys`).
pub fn kind_of(key: &[u8]) -> &'static str {
    match key.first().copied() {
        Some(keys::CERT) => "certificates",
        Some(keys::LOCATOR) => "certificate-locators",
        Some(keys::REG_LOOKUP) => "registration-lookups",
        Some(keys::POSTING) => "index-postings",
        Some(keys::FILES) => "file-states",
        Some(keys::DIR_SEEN) => "folder-summaries",
        Some(keys::FAILED_FILES) => "failed-files",
        Some(keys::ENDPOINT) => "endpoints",
        Some(keys::AUDIT) => "audit-events",
        Some(keys::META) => "metadata",
        Some(keys::MANAGED_CA) => "managed-cas",
        Some(keys::WORKFLOW) => "workflows",
        Some(keys::CACHED_CRL) => "cached-crls",
        Some(keys::SENT_REMINDER) => "sent-reminders",
        Some(keys::DELIVERY) => "delivery-states",
        Some(keys::SNOOZE) => "snoozes",
        Some(keys::REGISTRATION) => "agent-registrations",
        Some(keys::AGENT_DECISION) => "agent-decisions-and-settings",
        Some(keys::ARTIFACT) if key.len() == 33 => "tracked-artifacts",
        Some(keys::ARTIFACT) => "artifact-reminders",
        Some(keys::RENEWAL) => "renewals",
        _ => "other",
    }
}

/// What `status` says about a store restored from a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredFrom {
    /// When the backup was taken: what happened in the original store after it is not here.
    pub backup_created: UnixTime,
    pub restored_at: UnixTime,
    /// The store folder the backup was taken from.
    pub original_store: String,
    /// Managed CAs whose published CRL was newer than the backup at restore time (its number
    /// above the backup's): revocations made after the backup must be redone.
    pub newer_crls: Vec<String>,
}

fn io_err(what: &str) -> impl Fn(io::Error) -> StoreError + '_ {
    move |e| StoreError::Io(format!("{what}: {e}"))
}

impl Store {
    /// Writes every key and value of the store to `sink` (see the module documentation for
    /// the format and for why the caller must keep writers away while it runs).
    pub fn export(&self, sink: &mut dyn Write) -> Result<TreeCounts> {
        let failed = io_err("cannot write the store dump");
        let mut counts = TreeCounts::default();
        sink.write_all(TREE_MAGIC).map_err(&failed)?;
        for kv in self.tree().iter() {
            let (k, v) = kv?;
            for part in [&k[..], &v[..]] {
                let len = u32::try_from(part.len())
                    .ok()
                    .filter(|&n| n <= MAX_ITEM)
                    .ok_or_else(|| StoreError::Corrupt {
                        what: kind_of(&k),
                        detail: format!("a key or value of {} bytes", part.len()),
                    })?;
                sink.write_all(&len.to_be_bytes()).map_err(&failed)?;
                sink.write_all(part).map_err(&failed)?;
            }
            counts.count(&k, v.len());
        }
        sink.write_all(&END_MARK.to_be_bytes()).map_err(&failed)?;
        sink.write_all(&counts.keys.to_be_bytes())
            .map_err(&failed)?;
        Ok(counts)
    }

    /// Reads a dump written by [`Store::export`] into this store, which must be new (only
    /// its schema key): the keys of the dump replace it. Refuses a dump that is cut short
    /// or malformed, naming where. The caller reopens the store afterwards so that an older
    /// dump's schema is upgraded as on any open.
    pub fn import(&self, source: &mut dyn Read) -> Result<TreeCounts> {
        let failed = io_err("cannot read the store dump");
        if self.tree().iter().any(|kv| {
            kv.map(|(k, _)| k.as_ref() != [keys::META, b's'])
                .unwrap_or(true)
        }) {
            return Err(StoreError::Io(format!(
                "{}: the store is not empty; a dump is only imported into a new store",
                self.path().display()
            )));
        }
        let mut magic = [0u8; TREE_MAGIC.len()];
        source.read_exact(&mut magic).map_err(&failed)?;
        if &magic != TREE_MAGIC {
            return Err(StoreError::Corrupt {
                what: "store dump",
                detail: "it does not start like a certctl store dump".into(),
            });
        }
        let mut counts = TreeCounts::default();
        let mut batch = sled::Batch::default();
        let mut pending = 0usize;
        while let Some(key) = read_item(source, counts.keys, true)? {
            let Some(value) = read_item(source, counts.keys, false)? else {
                return Err(truncated(counts.keys));
            };
            counts.count(&key, value.len());
            pending += key.len() + value.len();
            batch.insert(key, value);
            if pending >= IMPORT_BATCH_BYTES {
                self.ensure_space(pending as u64)?;
                self.tree().apply_batch(std::mem::take(&mut batch))?;
                pending = 0;
            }
        }
        let mut total = [0u8; 8];
        source
            .read_exact(&mut total)
            .map_err(|_| truncated(counts.keys))?;
        if u64::from_be_bytes(total) != counts.keys {
            return Err(StoreError::Corrupt {
                what: "store dump",
                detail: format!(
                    "it says it holds {} keys, {} were read",
                    u64::from_be_bytes(total),
                    counts.keys
                ),
            });
        }
        self.ensure_space(pending as u64)?;
        self.tree().apply_batch(batch)?;
        self.flush()?;
        Ok(counts)
    }

    /// After a restore into another folder: points the workflows and managed CAs whose
    /// folders were absolute paths inside `old_root` (the store the backup was taken from)
    /// at the same place inside `new_root` (where this store will live). Returns how many
    /// records changed.
    pub fn relocate(&self, old_root: &Path, new_root: &Path) -> Result<u64> {
        let moved = |dir: &str| -> Option<String> {
            let rest = Path::new(dir).strip_prefix(old_root).ok()?;
            Some(new_root.join(rest).to_string_lossy().into_owned())
        };
        let mut changed = 0;
        for mut wf in self.workflows()? {
            if let Some(dir) = moved(&wf.dir).filter(|d| *d != wf.dir) {
                wf.dir = dir;
                self.put_workflow(&wf)?;
                changed += 1;
            }
        }
        for mut ca in self.managed_cas()? {
            if let Some(rest) = Path::new(&ca.dir)
                .strip_prefix(old_root)
                .ok()
                .filter(|_| Path::new(&ca.dir).is_absolute())
            {
                // Relative to the store, as current releases write it.
                ca.dir = rest.to_string_lossy().into_owned();
                self.put_managed_ca(&ca)?;
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// Raises the CA's last CRL number to `at_least` when it is lower (a CRL with that
    /// number was published, e.g. after the backup this store was restored from), so the
    /// next CRL gets a higher one. Returns whether it changed.
    pub fn raise_crl_number(&self, name: &str, at_least: u64) -> Result<bool> {
        let Some(mut ca) = self.managed_ca(name)? else {
            return Ok(false);
        };
        if ca.crl_number >= at_least {
            return Ok(false);
        }
        ca.crl_number = at_least;
        self.put_managed_ca(&ca)?;
        Ok(true)
    }

    /// Notes that this store was restored from a backup (shown by `status`).
    pub fn set_restored_from(&self, note: &RestoredFrom) -> Result<()> {
        self.tree().insert(RESTORED_KEY, encode(note)?)?;
        self.flush()
    }

    /// Whether (and from what) this store was restored.
    pub fn restored_from(&self) -> Result<Option<RestoredFrom>> {
        self.tree()
            .get(RESTORED_KEY)?
            .map(|v| decode(&v, "restore note"))
            .transpose()
    }
}

fn truncated(read: u64) -> StoreError {
    StoreError::Corrupt {
        what: "store dump",
        detail: format!("it ends after {read} keys, before its end mark (cut short)"),
    }
}

/// One length-prefixed item; `None` at the end mark (only where a key may start).
fn read_item(source: &mut dyn Read, index: u64, key: bool) -> Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    source.read_exact(&mut len).map_err(|_| truncated(index))?;
    let len = u32::from_be_bytes(len);
    if key && len == END_MARK {
        return Ok(None);
    }
    if len > MAX_ITEM {
        return Err(StoreError::Corrupt {
            what: "store dump",
            detail: format!("item {index} claims {len} bytes"),
        });
    }
    let mut item = vec![0u8; len as usize];
    source.read_exact(&mut item).map_err(|_| truncated(index))?;
    Ok(Some(item))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Sha256;
    use crate::workflows::ManagedCa;

    fn ca(name: &str, dir: &str) -> ManagedCa {
        ManagedCa {
            name: name.into(),
            fingerprint: Sha256([7; 32]),
            dir: dir.into(),
            key_kind: "ec-p256".into(),
            encrypted: false,
            crl_number: 4,
            crl_published: None,
            crl_paths: vec![],
            crl_validity_secs: 86_400,
            crl_urls: vec![],
            created: 1,
            created_by: "me".into(),
        }
    }

    #[test]
    fn a_dump_round_trips_and_a_cut_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old");
        let store = Store::open(&old).unwrap();
        store
            .put_managed_ca(&ca("root", &old.join("ca/root").to_string_lossy()))
            .unwrap();
        let mut dump = Vec::new();
        let counts = store.export(&mut dump).unwrap();
        assert_eq!(counts.by_kind.get("managed-cas"), Some(&1));
        assert_eq!(counts.by_kind.get("metadata"), Some(&1));

        let new = Store::open(&dir.path().join("new")).unwrap();
        assert_eq!(new.import(&mut &dump[..]).unwrap(), counts);
        assert_eq!(new.relocate(&old, &dir.path().join("new")).unwrap(), 1);
        assert_eq!(new.managed_ca("root").unwrap().unwrap().dir, "ca/root");
        assert!(new.raise_crl_number("root", 9).unwrap());
        assert!(!new.raise_crl_number("root", 3).unwrap());
        assert_eq!(new.next_crl_number("root", 5).unwrap(), 10);
        assert!(new.import(&mut &dump[..]).is_err(), "only into a new store");

        let cut = Store::open(&dir.path().join("cut")).unwrap();
        let err = cut.import(&mut &dump[..dump.len() - 3]).unwrap_err();
        assert!(err.to_string().contains("cut short"), "{err}");
    }
}
