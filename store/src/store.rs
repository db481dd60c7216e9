//! [`Store`]: opening the sled database, and the queries.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};

use crate::endpoints::Endpoint;
use crate::error::{Result, StoreError};
use crate::files::{DirSeen, FileState};
use crate::ingest::{hash_key, FpPrefix, Ingest, Posting};
use crate::keys::{self, Index};
use crate::migrate;
use crate::model::{Certificate, Fingerprint, Role, Sha256, UnixTime};

/// The on-disk schema this release writes and reads.
///
/// - 1: the first release.
/// - 2: key identifiers stored as bytes (certificate record format 2). A schema-1 store
///   is upgraded when it is opened (see `migrate`).
/// - 3: counts kept on every commit (`U` keys, see `counts`) and the agent index (`Y` keys,
///   see `agent_index`), both built when an older store is opened; retention may remove
///   records (`retention`).
/// - 4: endpoint records in format 2, with the last probe's duration (see `endpoints`),
///   the failed files per directory (`B` keys, see `failed_files`) and the live agent
///   credentials in expiry order (`Y` `e`, see `agent_index`); a schema-3 store's endpoint
///   records are rewritten and the new entries built when it is opened.
/// - 5: the live agents counted (`U` `g` per agent and `U` `G`, see `counts`), so the
///   pending queue's size reads no live credential; an older store's counts are rebuilt
///   when it is opened.
/// - 6: the agent index without `Y` `l` entries, its values without the liveness (the `Y`
///   `e` entry is the liveness), so a renewed credential rewrites no index value; an older
///   store's agent index is built again when it is opened.
/// - 7: certificate records keyed by expiry (`C` + not_after + fingerprint) with a locator
///   per fingerprint (`H`), so an expiry window is one range of the tree; an older store's
///   records are moved when it is opened (see `migrate::key_records_by_expiry`). The live
///   agent credentials no registration covers are counted (`U` `q`, `U` `Q`, with the
///   registrations' lookups `O`, see `coverage`): built when an older store is opened.
pub const SCHEMA_VERSION: u32 = 7;
/// The page cache [`Store::open`] asks for: large, because bulk scans of a few hundred
/// thousand certificates thrash a smaller one.
pub const DEFAULT_CACHE_BYTES: u64 = 1 << 30;
/// How often opening a locked store is tried (50 ms apart) before giving up.
const LOCK_RETRIES: u32 = 20;
/// Version byte that starts every encoded value other than a certificate record
/// (certificate records have their own format byte, see `migrate`).
const RECORD_V1: u8 = 1;

/// One hit of the expiry index: a certificate's notAfter and the first eight bytes of its
/// fingerprint (see [`Store::expiry_hits`]). Ordered by notAfter, then prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExpiryHit {
    pub not_after: UnixTime,
    pub prefix: [u8; 8],
}

/// The certificate inventory on disk.
///
/// Cloning is cheap; clones share the same database. Only one process can open a store.
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    db: sled::Db,
    tree: sled::Tree,
    /// Bytes written through [`Store::wrote`] (for the free-space test hook).
    written: Arc<AtomicU64>,
    /// Counts the commits that wrote certificate records (see [`crate::Lookup`]).
    record_commits: Arc<AtomicU64>,
    /// Held while a commit reads and writes the counts (see [`crate::counts`]).
    count_lock: Arc<std::sync::Mutex<()>>,
    /// Certificate records decoded by queries (see [`Store::records_read`]).
    records_read: Arc<AtomicU64>,
    /// Live agent index entries read (see [`Store::live_agent_entries_read`]).
    pub(crate) live_entries_read: Arc<AtomicU64>,
    /// sled keys written by commits (see [`Store::keys_written`]).
    keys_written: Arc<AtomicU64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `path` with the default page cache
    /// ([`DEFAULT_CACHE_BYTES`]). The directory is created `0700` and the files in it are
    /// made `0600`.
    pub fn open(path: &Path) -> Result<Store> {
        Store::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// Opens a store that must already exist: for commands that only read, so that a
    /// mistyped `--store` is an error naming the path rather than a new, empty store that
    /// answers "0 certificates".
    pub fn open_existing(path: &Path) -> Result<Store> {
        if !path.join("db").is_file() {
            return Err(StoreError::Missing {
                path: path.to_path_buf(),
            });
        }
        Store::open(path)
    }

    /// Like [`Store::open`], with a page cache of `cache_bytes`. A big cache speeds up
    /// bulk scans; a long-running process with a large store may want a smaller one to
    /// bound its memory.
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Store> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(open_err)?;
        let owner = std::os::unix::fs::MetadataExt::uid(&fs::metadata(path).map_err(open_err)?);
        let me = rustix::process::geteuid().as_raw();
        if owner != me {
            return Err(StoreError::OtherOwner {
                path: path.to_path_buf(),
                owner,
                me,
            });
        }
        fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(open_err)?;
        // sled releases its lock from background threads a moment after the last handle is
        // dropped (a store reopened in the same process, a certd that just stopped): retry
        // briefly before calling the store busy.
        let mut attempts = 0;
        let mut repaired = false;
        let db = loop {
            let opened = sled::Config::new()
                .path(path)
                .cache_capacity(cache_bytes)
                .flush_every_ms(Some(500))
                .open();
            match opened {
                Ok(db) => break db,
                Err(sled::Error::Io(io)) if is_lock_error(&io) => {
                    attempts += 1;
                    if attempts >= LOCK_RETRIES {
                        return Err(StoreError::Locked {
                            path: path.to_path_buf(),
                        });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(sled::Error::Io(io)) => return Err(open_err(io)),
                // A snapshot torn by a full disk or a crash makes sled refuse the whole store;
                // the log still holds everything, so drop the torn file and open again.
                Err(sled::Error::Corruption { .. }) if !repaired => {
                    repaired = true;
                    if discard_torn_snapshots(path).map_err(open_err)? == 0 {
                        return Err(StoreError::Io(format!(
                            "{}: {}",
                            path.display(),
                            "sled reports corrupted data"
                        )));
                    }
                }
                Err(other) => return Err(StoreError::Io(format!("{}: {other}", path.display()))),
            }
        };
        restrict_permissions(path).map_err(open_err)?;
        let tree = db.open_tree("inventory")?;
        let store = Store {
            path: path.to_path_buf(),
            db,
            tree,
            written: Arc::new(AtomicU64::new(0)),
            record_commits: Arc::new(AtomicU64::new(0)),
            count_lock: Arc::new(std::sync::Mutex::new(())),
            records_read: Arc::new(AtomicU64::new(0)),
            live_entries_read: Arc::new(AtomicU64::new(0)),
            keys_written: Arc::new(AtomicU64::new(0)),
        };
        store.check_schema()?;
        Ok(store)
    }

    /// Checks the schema version, upgrading an older store in place.
    fn check_schema(&self) -> Result<()> {
        let key = [keys::META, b's'];
        let found = match self.tree.get(key)? {
            // A new store (no record can exist without the schema key).
            None if self.tree.is_empty() => SCHEMA_VERSION,
            None => 1,
            Some(v) => <[u8; 4]>::try_from(v.as_ref())
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    what: "schema version",
                    detail: format!("{} bytes", v.len()),
                })?,
        };
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: self.path.clone(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found < SCHEMA_VERSION {
            let rewritten = if found < 2 {
                migrate::upgrade(&self.tree)?
            } else {
                0
            };
            let moved = if found < 7 {
                migrate::key_records_by_expiry(&self.tree)?
            } else {
                0
            };
            // Counts exist from schema 3 on, the live agents' counts from schema 5;
            // rebuilding them reads every record.
            let counted = if found < 5 {
                crate::counts::rebuild(&self.tree)?
            } else {
                0
            };
            // Schema 6 changed the agent index's entries: built again from the records.
            let agents = if found < 6 {
                crate::agent_index::rebuild(&self.tree)?
            } else {
                0
            };
            // Schema 7 counts the live agent credentials no registration covers: from the
            // registrations and the live credentials' index.
            if found < 7 {
                let registrations = self
                    .tree
                    .scan_prefix([keys::REGISTRATION])
                    .map(|kv| decode::<crate::Registration>(&kv?.1, "agent registration"))
                    .collect::<Result<Vec<_>>>()?;
                let registered = crate::coverage::Registered::of(&registrations);
                let mut batch = crate::batch::Batch::default();
                crate::coverage::rewrite(&self.tree, &registered, &mut batch)?;
                self.tree.apply_batch(batch.into_sled())?;
            }
            let (endpoints, failed_files) = if found < 4 {
                (
                    migrate::upgrade_endpoints(&self.tree)?,
                    crate::failed_files::build(&self.tree)?,
                )
            } else {
                (0, 0)
            };
            tracing::info!(
                store = %self.path.display(),
                from = found,
                to = SCHEMA_VERSION,
                records = rewritten,
                moved,
                counted,
                agent_credentials = agents,
                endpoints,
                failed_files,
                "upgraded the store"
            );
            self.db.flush()?;
        }
        if found != SCHEMA_VERSION || self.tree.get(key)?.is_none() {
            self.tree.insert(key, &SCHEMA_VERSION.to_be_bytes())?;
            self.db.flush()?;
        }
        Ok(())
    }

    /// Refuses a write of about `incoming` bytes when the store's file system would keep
    /// less than a reserve free afterwards.
    ///
    /// sled 0.34 does not survive running out of space: a write that fails half-way with
    /// ENOSPC can leave a log it later refuses to open, losing even committed data. So
    /// certctl never lets it get there: bulk writes check first, and stop with
    /// [`StoreError::DiskFull`] while there is still room for sled's own housekeeping
    /// (flushes, snapshots, segment rewrites). The reserve is 5% of the file system,
    /// between 4 MiB and 256 MiB, and a write needs four times its size on top (sled's
    /// log, page rewrites and garbage collection).
    ///
    /// `CERTCTL_TEST_STORE_FREE_BYTES=N` (tests) pretends the file system had N bytes free
    /// when the store was opened and is 1 GiB large.
    pub fn ensure_space(&self, incoming: u64) -> Result<()> {
        let (available, total) = match std::env::var("CERTCTL_TEST_STORE_FREE_BYTES")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            Some(free) => (
                free.saturating_sub(self.written.load(Ordering::Relaxed)),
                1 << 30,
            ),
            None => match rustix::fs::statvfs(&self.path) {
                Ok(st) => (
                    st.f_bavail.saturating_mul(st.f_frsize),
                    st.f_blocks.saturating_mul(st.f_frsize),
                ),
                // Cannot tell (an exotic file system): let the write go ahead.
                Err(_) => return Ok(()),
            },
        };
        let reserve = (total / 20).clamp(4 << 20, 256 << 20);
        let needed = reserve.saturating_add(incoming.saturating_mul(4));
        if available < needed {
            return Err(StoreError::DiskFull {
                path: self.path.clone(),
                available,
                needed,
            });
        }
        Ok(())
    }

    /// Counts bytes written (see [`Store::ensure_space`]).
    pub(crate) fn wrote(&self, bytes: u64) {
        self.written.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes everything to disk. Call before exiting.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Starts a batch of writes (see [`Ingest`]).
    pub fn ingest(&self) -> Ingest<'_> {
        Ingest::new(self)
    }

    /// A batch writer for a scan: as [`Store::ingest`], and on an empty store it knows new
    /// certificates without reading the store ([`Ingest::is_first_import`]).
    pub fn scan_ingest(&self) -> Result<Ingest<'_>> {
        Ingest::for_scan(self)
    }

    /// Whether the store holds no certificate record.
    pub(crate) fn holds_no_certificate(&self) -> Result<bool> {
        Ok(self
            .tree
            .scan_prefix([keys::CERT])
            .next()
            .transpose()?
            .is_none())
    }

    // ---- records -------------------------------------------------------------------

    pub(crate) fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    pub(crate) fn next_segment_id(&self) -> Result<u64> {
        Ok(self.db.generate_id()?)
    }

    /// How many commits have written certificate records since the store was opened.
    pub(crate) fn record_commits(&self) -> u64 {
        self.record_commits.load(Ordering::SeqCst)
    }

    /// Counts one more commit of certificate records; returns its number.
    pub(crate) fn count_record_commit(&self) -> u64 {
        self.record_commits.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Looks the certificate up for a later [`crate::Ingest::observe_looked_up`], from any
    /// thread: a scan's parse workers do this so that its single writer does not.
    pub fn look_up(&self, fp: &Fingerprint) -> Result<crate::Lookup> {
        // Read the count first: a commit that lands during the read only makes the
        // lookup look older than it is (so the writer checks it), never newer.
        let after_commit = self.record_commits();
        let record = self.get(fp)?;
        Ok(crate::Lookup {
            after_commit,
            record,
        })
    }

    /// The certificate with this fingerprint.
    pub fn get(&self, fp: &Fingerprint) -> Result<Option<Certificate>> {
        match record_bytes(&self.tree, &fp.0)? {
            Some(bytes) => Ok(Some(self.read_record(&bytes)?)),
            None => Ok(None),
        }
    }

    /// How many certificate records this handle's queries (`get`, `iter`, the index
    /// queries) have decoded since the store was opened: lets tests check that an answer
    /// costs what it should (e.g. the agent decisions read no agent records wholesale).
    pub fn records_read(&self) -> u64 {
        self.records_read.load(Ordering::Relaxed)
    }

    /// How many entries of the live agent credentials' index (`Y` `e`) were read by
    /// [`Store::live_agent_entries`] since the store was opened: lets tests check that an
    /// answer does not walk every live agent.
    pub fn live_agent_entries_read(&self) -> u64 {
        self.live_entries_read.load(Ordering::Relaxed)
    }

    /// How many sled keys (inserts and removals) the commits of records, counts and
    /// indexes ([`Ingest::commit`], retention, [`Store::put`]) wrote through this handle since
    /// the store was opened: sled's cost is per key, so tests check what a change costs
    /// with it and the benchmarks report it.
    pub fn keys_written(&self) -> u64 {
        self.keys_written.load(Ordering::Relaxed)
    }

    fn read_record(&self, bytes: &[u8]) -> Result<Certificate> {
        self.records_read.fetch_add(1, Ordering::Relaxed);
        decode_record(bytes)
    }

    /// Saves a changed certificate (e.g. after revocation). Index entries are added when
    /// the role changed; use [`Store::ingest`] for bulk work.
    pub fn put(&self, cert: &Certificate) -> Result<()> {
        let mut ingest = self.ingest();
        ingest.replace(cert.clone())?;
        ingest.commit()
    }

    /// Number of certificates in the store (from the counts: no record is read).
    pub fn len(&self) -> usize {
        let mut n = 0u64;
        for kv in self
            .tree
            .scan_prefix([crate::counts::COUNTS, b'c'])
            .flatten()
        {
            if let Ok(b) = <[u8; 8]>::try_from(kv.1.as_ref()) {
                n += u64::from_be_bytes(b);
            }
        }
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    /// Writes `batch` with the count changes of the record changes it holds
    /// ([`crate::CountChanges::record_change`]), atomically: `changes` runs under the
    /// store's count lock and may add to the batch. `before_write` runs under the
    /// count lock, just before the batch is applied (free-space checks; it gets the bytes
    /// the counts add); `after_write` right after it, still under the lock. The tree nodes
    /// the batch's writes replaced are freed before this returns (see [`crate::reclaim`]).
    /// Holds the count lock: commits of records wait until the guard is dropped.
    pub(crate) fn count_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.count_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn apply_counted<T>(
        &self,
        mut batch: crate::batch::Batch,
        changes: impl FnOnce(&mut crate::batch::Batch) -> Result<crate::CountChanges>,
        before_write: impl FnOnce(u64) -> Result<()>,
        after_write: impl FnOnce() -> T,
    ) -> Result<T> {
        crate::reclaim::before_write();
        let held = self
            .count_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bytes = changes(&mut batch)?.write(&self.tree, &mut batch)?;
        before_write(bytes)?;
        let writes = batch.writes();
        self.tree.apply_batch(batch.into_sled())?;
        self.keys_written
            .fetch_add(writes as u64, Ordering::Relaxed);
        let out = after_write();
        drop(held);
        crate::reclaim::after_write(writes);
        Ok(out)
    }

    /// The records counted at `now`, where "expiring" means within `expiring_within`
    /// seconds. Reads the counts, not the records (but see `crate::counts` for
    /// certificates whose validity has not begun).
    pub fn counts(&self, now: UnixTime, expiring_within: i64) -> Result<crate::Counts> {
        crate::counts::counts(self, now, expiring_within)
    }

    /// The time-independent counts only: records by class and key type (`status` holds only
    /// the revoked ones). Cheaper than [`Store::counts`].
    pub fn class_counts(&self) -> Result<crate::Counts> {
        crate::counts::class_only(&self.tree)
    }

    /// The certificates `check` considers (present, not revoked, not ephemeral) with
    /// `not_after <= until`, sorted by not_after then fingerprint. Reads no record.
    pub fn check_entries(&self, until: UnixTime) -> Result<Vec<crate::CheckEntry>> {
        crate::counts::check_entries(&self.tree, until)
    }

    /// How many certificates `check` considers (optionally of one role) have
    /// `not_before > now`.
    pub fn check_not_yet_valid(&self, now: UnixTime, role: Option<Role>) -> Result<u64> {
        crate::counts::check_not_yet_valid(&self.tree, now, role)
    }

    /// How many agents have a live credential (present in a source, not revoked): the
    /// distinct agents of the live agent index, from a count kept on every commit.
    pub fn live_agent_count(&self) -> Result<u64> {
        crate::counts::live_agents(&self.tree)
    }

    /// How many agents have a live credential that no registration covers (by its
    /// certificate, its key, or the agent's name alone): the pending queue's size before
    /// decisions, from a count kept on every commit and every import of registrations.
    /// Without registrations, [`Store::live_agent_count`].
    pub fn uncovered_agent_count(&self) -> Result<u64> {
        crate::counts::uncovered_agents(&self.tree)
    }

    /// How many live credentials of the agent (name compared case-insensitively) no
    /// registration covers, from the same counts.
    pub fn agent_uncovered_credential_count(&self, agent: &str) -> Result<u64> {
        crate::counts::agent_uncovered_credentials(&self.tree, agent)
    }

    /// How many live credentials the agent (name compared case-insensitively) has, from
    /// the same counts.
    pub fn agent_live_credential_count(&self, agent: &str) -> Result<u64> {
        crate::counts::agent_live_credentials(&self.tree, agent)
    }

    /// The fingerprints of the certificates a source still holds: those that are not agent
    /// certificates, then (with `agents`) the agents', each group in fingerprint order.
    pub fn present_fingerprints(&self, agents: bool) -> Result<Vec<Fingerprint>> {
        crate::counts::present(&self.tree, agents)
    }

    /// Rebuilds the counts from the records (after `store verify` found them off).
    pub fn rebuild_counts(&self) -> Result<u64> {
        let _held = self
            .count_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = crate::counts::rebuild(&self.tree)?;
        self.db.flush()?;
        Ok(n)
    }

    pub fn is_empty(&self) -> bool {
        self.tree.scan_prefix([keys::CERT]).next().is_none()
    }

    /// Every certificate, in expiry order (then fingerprint order).
    pub fn iter(&self) -> impl Iterator<Item = Result<Certificate>> + '_ {
        self.tree
            .scan_prefix([keys::CERT])
            .map(|kv| self.read_record(&kv?.1))
    }

    /// Certificates whose fingerprint (lowercase hex) starts with `hex_prefix`.
    pub fn find_by_fingerprint_prefix(&self, hex_prefix: &str) -> Result<Vec<Certificate>> {
        let hex_prefix = hex_prefix.to_ascii_lowercase();
        let even = &hex_prefix[..hex_prefix.len() & !1];
        let bytes = hex::decode(even).map_err(|e| StoreError::Io(e.to_string()))?;
        let mut key = vec![keys::LOCATOR];
        key.extend_from_slice(&bytes);
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(key) {
            let (key, at) = kv?;
            let Some(value) = self.tree.get(located(&key, &at)?)? else {
                continue;
            };
            let cert = decode_record(&value)?;
            if cert.fingerprint().to_hex().starts_with(&hex_prefix) {
                out.push(cert);
            }
        }
        out.sort_by_key(|c| c.facts.fingerprint);
        Ok(out)
    }

    // ---- index queries ---------------------------------------------------------------

    /// Certificates with `from <= not_after < before`, optionally of one role, sorted by
    /// not_after. Answered from the expiry index, not by a full scan.
    pub fn expiring_between(
        &self,
        from: UnixTime,
        before: UnixTime,
        role: Option<Role>,
    ) -> Result<Vec<Certificate>> {
        if role.is_some() {
            let hits = self.expiry_hits(from, before, role)?;
            return self.records_of_hits(&hits, role);
        }
        self.records_expiring(from, before)
            .map(|kv| self.read_record(&kv?.1))
            .collect()
    }

    /// The records with `from <= not_after < before`: one range of the tree, in expiry
    /// then fingerprint order, read as they are needed.
    pub(crate) fn records_expiring(&self, from: UnixTime, before: UnixTime) -> sled::Iter {
        if before <= from {
            return self
                .tree
                .range(keys::records_from(from)..keys::records_from(from));
        }
        self.tree
            .range(keys::records_from(from)..keys::records_from(before))
    }

    /// The certificates with `from <= not_after < before`, in expiry then fingerprint
    /// order, in slices as they are read: the first of `first` records, then growing to
    /// `most` (a screenful first, so that a terminal or a streamed answer gets its first
    /// rows at once). The records are one range of the store, read in order; none is held
    /// beyond its slice.
    pub fn expiring_slices(
        &self,
        from: UnixTime,
        before: UnixTime,
        first: usize,
        most: usize,
    ) -> impl Iterator<Item = Result<Vec<Certificate>>> + '_ {
        let mut records = self.records_expiring(from, before);
        let mut size = first.max(1);
        std::iter::from_fn(move || {
            let mut slice = Vec::with_capacity(size.min(most.max(1)));
            for kv in records.by_ref() {
                let read = kv
                    .map_err(StoreError::from)
                    .and_then(|(_, value)| self.read_record(&value));
                match read {
                    Ok(cert) => slice.push(cert),
                    Err(e) => return Some(Err(e)),
                }
                if slice.len() >= size {
                    break;
                }
            }
            size = (size * 8).min(most.max(1));
            (!slice.is_empty()).then_some(Ok(slice))
        })
    }

    /// The expiry index's hits with `from <= not_after < before` (optionally of one role)
    /// as `(not_after, fingerprint prefix)`, sorted and each once: what
    /// [`Store::expiring_between`] reads records for, without reading any. A long list
    /// reads its records a slice at a time ([`Store::records_of_hits`]), in order.
    pub fn expiry_hits(
        &self,
        from: UnixTime,
        before: UnixTime,
        role: Option<Role>,
    ) -> Result<Vec<ExpiryHit>> {
        if before <= from {
            return Ok(Vec::new());
        }
        let (first, last) = (keys::expiry_week(from), keys::expiry_week(before - 1));
        let (start, end) = match role {
            None => (
                keys::bucket_prefix(Index::Expiry, &keys::expiry_bucket(first)),
                keys::prefix_end(&keys::bucket_prefix(
                    Index::Expiry,
                    &keys::expiry_bucket(last),
                )),
            ),
            Some(r) => (
                keys::bucket_prefix(
                    Index::RoleExpiry,
                    &keys::role_expiry_bucket(r.code(), first),
                ),
                keys::prefix_end(&keys::bucket_prefix(
                    Index::RoleExpiry,
                    &keys::role_expiry_bucket(r.code(), last),
                )),
            ),
        };
        let mut hits = Vec::new();
        for kv in self.tree.range(start..end) {
            let (_, v) = kv?;
            for p in decode_postings(&v)? {
                if p.key >= from && p.key < before {
                    hits.push(ExpiryHit {
                        not_after: p.key,
                        prefix: p.fp,
                    });
                }
            }
        }
        hits.sort_unstable();
        hits.dedup();
        Ok(hits)
    }

    /// The certificates of a sorted slice of [`Store::expiry_hits`] (optionally of one
    /// role), sorted by not_after then fingerprint. A certificate is returned only for the
    /// hit it matches (its not_after and prefix), so consecutive slices give every
    /// certificate once and in order.
    pub fn records_of_hits(
        &self,
        hits: &[ExpiryHit],
        role: Option<Role>,
    ) -> Result<Vec<Certificate>> {
        // Records are keyed by notAfter then fingerprint: a hit is the prefix of the keys
        // of the records it may name (one, unless fingerprints share eight bytes).
        let mut out = Vec::with_capacity(hits.len());
        for hit in hits {
            for kv in self
                .tree
                .scan_prefix(keys::record_prefix(hit.not_after, &hit.prefix))
            {
                let cert = self.read_record(&kv?.1)?;
                if role.is_none_or(|r| cert.role == r) {
                    out.push(cert);
                }
            }
        }
        out.sort_by_key(|c| (c.facts.not_after, c.facts.fingerprint));
        out.dedup_by_key(|c| c.facts.fingerprint);
        Ok(out)
    }

    /// The records the posting hits lead to, each once.
    fn records_for(&self, mut hits: Vec<FpPrefix>) -> Result<Vec<Certificate>> {
        hits.sort_unstable();
        hits.dedup();
        let mut out = Vec::with_capacity(hits.len());
        for prefix in hits {
            let mut key = [0u8; 9];
            key[0] = keys::LOCATOR;
            key[1..].copy_from_slice(&prefix);
            for kv in self.tree.scan_prefix(key) {
                let (key, at) = kv?;
                if let Some(value) = self.tree.get(located(&key, &at)?)? {
                    out.push(self.read_record(&value)?);
                }
            }
        }
        Ok(out)
    }

    /// Certificates of one role, sorted by not_after.
    pub fn by_role(&self, role: Role) -> Result<Vec<Certificate>> {
        self.expiring_between(i64::MIN + 1, i64::MAX, Some(role))
    }

    /// Certificates whose subject CN or a SAN equals `name` (case-insensitive).
    pub fn find_by_name(&self, name: &str) -> Result<Vec<Certificate>> {
        let h = keys::name_hash(name);
        let certs = self.lookup_hash(
            Index::Name,
            &keys::hash_bucket(h, keys::NAME_BUCKETS),
            hash_key(h),
        )?;
        Ok(certs
            .into_iter()
            .filter(|c| c.facts.names().any(|n| n.eq_ignore_ascii_case(name)))
            .collect())
    }

    /// Certificates that share the public key with this SPKI SHA-256.
    pub fn find_by_spki(&self, spki: &Sha256) -> Result<Vec<Certificate>> {
        let h = keys::spki_hash(&spki.0);
        let certs = self.lookup_hash(
            Index::Spki,
            &keys::hash_bucket(h, keys::SPKI_BUCKETS),
            hash_key(h),
        )?;
        Ok(certs
            .into_iter()
            .filter(|c| c.facts.spki_sha256 == *spki)
            .collect())
    }

    /// Certificates issued by the issuer with exactly this DN (case-insensitive).
    pub fn find_by_issuer(&self, issuer: &str) -> Result<Vec<Certificate>> {
        let h = keys::name_hash(issuer);
        let certs = self.lookup_hash(
            Index::Issuer,
            &keys::hash_bucket(h, keys::ISSUER_BUCKETS),
            hash_key(h),
        )?;
        Ok(certs
            .into_iter()
            .filter(|c| c.facts.issuer.eq_ignore_ascii_case(issuer))
            .collect())
    }

    /// The distinct issuer DNs with their certificate counts, from the issuer index.
    pub fn issuers(&self) -> Result<BTreeMap<String, usize>> {
        let mut hits = Vec::new();
        for kv in self.tree.scan_prefix(keys::index_prefix(Index::Issuer)) {
            hits.extend(decode_postings(&kv?.1)?.into_iter().map(|p| p.fp));
        }
        let mut out = BTreeMap::new();
        for c in self.records_for(hits)? {
            *out.entry(c.facts.issuer).or_insert(0) += 1;
        }
        Ok(out)
    }

    fn lookup_hash(&self, index: Index, bucket: &[u8], key: i64) -> Result<Vec<Certificate>> {
        let mut hits = Vec::new();
        for kv in self.tree.scan_prefix(keys::bucket_prefix(index, bucket)) {
            hits.extend(
                decode_postings(&kv?.1)?
                    .into_iter()
                    .filter(|p| p.key == key)
                    .map(|p| p.fp),
            );
        }
        let mut out = self.records_for(hits)?;
        out.sort_by_key(|c| (c.facts.not_after, c.facts.fingerprint));
        Ok(out)
    }

    // ---- endpoints -------------------------------------------------------------------

    /// The remembered state of the TLS endpoint `host:port`.
    pub fn endpoint(&self, address: &str) -> Result<Option<Endpoint>> {
        match self.tree.get(keys::endpoint_key(address))? {
            Some(v) => Ok(Some(crate::endpoints::decode_endpoint(&v)?)),
            None => Ok(None),
        }
    }

    /// Every remembered TLS endpoint, by address.
    pub fn endpoints(&self) -> Result<Vec<Endpoint>> {
        self.tree
            .scan_prefix([keys::ENDPOINT])
            .map(|kv| crate::endpoints::decode_endpoint(&kv?.1))
            .collect()
    }

    // ---- file states -----------------------------------------------------------------

    /// The remembered state of every file scanned in `dir` (an absolute path).
    pub fn dir_files(&self, dir: &str) -> Result<Vec<FileState>> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(keys::dir_prefix(dir)) {
            let (_, v) = kv?;
            out.extend(decode::<Vec<FileState>>(&v, "file state")?);
        }
        Ok(out)
    }

    /// When the files of `dir` were last confirmed (see [`DirSeen`]); `None` for a
    /// directory without file states, or in a store written before release 0.3.
    pub fn dir_seen(&self, dir: &str) -> Result<Option<DirSeen>> {
        self.tree
            .get(keys::dir_seen_key(dir))?
            .map(|v| decode(&v, "directory summary"))
            .transpose()
    }

    /// The time each named file of `dir` was last confirmed, for the `names` asked about
    /// (sorted or not). Reads only the directory's summary when its files were all
    /// confirmed at once, else its file states.
    pub fn files_last_seen<'n>(
        &self,
        dir: &str,
        names: impl IntoIterator<Item = &'n str>,
    ) -> Result<Vec<Option<UnixTime>>> {
        if let Some(t) = self.dir_seen(dir)?.and_then(|s| s.uniform()) {
            return Ok(names.into_iter().map(|_| Some(t)).collect());
        }
        let files = self.dir_files(dir)?;
        let times: HashMap<&str, UnixTime> = files
            .iter()
            .map(|f| (f.name.as_str(), f.last_seen))
            .collect();
        Ok(names.into_iter().map(|n| times.get(n).copied()).collect())
    }

    /// Directories at or below `root` that have remembered file states.
    pub fn dirs_under(&self, root: &str) -> Result<Vec<String>> {
        let mut prefix = vec![keys::FILES];
        prefix.extend_from_slice(root.trim_end_matches('/').as_bytes());
        let root_trimmed = root.trim_end_matches('/');
        let mut out: Vec<String> = Vec::new();
        for kv in self.tree.scan_prefix(&prefix) {
            let (k, _) = kv?;
            if let Some(dir) = keys::dir_of_key(&k) {
                let inside = dir == root_trimmed
                    || dir
                        .strip_prefix(root_trimmed)
                        .is_some_and(|rest| rest.starts_with('/'))
                    || root_trimmed.is_empty();
                if inside && out.last().map(String::as_str) != Some(dir) {
                    out.push(dir.to_string());
                }
            }
        }
        Ok(out)
    }
}

/// sled reports a held lock as `WouldBlock`, wrapped in a custom error.
fn is_lock_error(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

/// Removes the snapshot files sled left half-written (`snap.<lsn>.generating` that is empty
/// or fails its checksum) and returns how many it removed.
///
/// sled 0.34 writes a snapshot to `snap.<lsn>.generating`, fsyncs it and renames it to
/// `snap.<lsn>`; on open it reads the newest `snap.*` file, `.generating` ones included, and
/// refuses the whole store if that one is torn. A write that ran out of space (ENOSPC) or
/// was killed between the two steps leaves exactly such a file. It carries nothing the log
/// does not: sled recovers from the previous snapshot and the log. A complete `.generating`
/// file (crash after the fsync) is left for sled, which reads it as it always has.
///
/// Only runs while holding the store's lock (the `flock` sled takes on `db`), so a running
/// certd's snapshot in progress is never touched.
fn discard_torn_snapshots(dir: &Path) -> std::io::Result<usize> {
    use rustix::fs::{flock, FlockOperation};
    let Ok(db) = fs::File::open(dir.join("db")) else {
        return Ok(0);
    };
    if flock(&db, FlockOperation::NonBlockingLockExclusive).is_err() {
        return Ok(0);
    }
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with("snap.") && name.ends_with(".generating")) {
            continue;
        }
        let torn = match fs::read(entry.path()) {
            Ok(bytes) => !snapshot_is_whole(&bytes),
            Err(_) => true,
        };
        if torn {
            fs::remove_file(entry.path())?;
            tracing::warn!(
                file = %entry.path().display(),
                "removed a half-written snapshot (left by a full disk or a crash); the store's log still holds everything"
            );
            removed += 1;
        }
    }
    if removed > 0 {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(removed)
}

/// Whether a sled 0.34 snapshot file is whole: its body, then the body's decompressed length
/// (8 bytes) and the CRC-32 of the body (4 bytes, little-endian), as sled writes it.
fn snapshot_is_whole(bytes: &[u8]) -> bool {
    let Some(body_len) = bytes.len().checked_sub(12) else {
        return false;
    };
    if body_len == 0 {
        return false;
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[bytes.len() - 4..]);
    crc32fast::hash(&bytes[..body_len]) == u32::from_le_bytes(crc)
}

fn restrict_permissions(dir: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        if ty.is_dir() {
            fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o700))?;
            restrict_permissions(&entry.path())?;
        } else if ty.is_file() {
            fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

// ---- encoding ---------------------------------------------------------------------------

pub(crate) fn encode_record(cert: &Certificate) -> Result<Vec<u8>> {
    // Room for a typical record (about 1 KiB) at once: growing the buffer as it is written
    // cost a scan's writer thread a few percent.
    let mut out = Vec::with_capacity(2048);
    out.push(migrate::RECORD_FORMAT_2);
    postcard::to_io(cert, &mut out).map_err(|e| StoreError::Io(e.to_string()))?;
    Ok(out)
}

/// Decodes a certificate record of any format this release knows.
/// The record key a locator entry (`H` + fingerprint → not_after) names.
pub(crate) fn located(locator_key: &[u8], at: &[u8]) -> Result<[u8; 41]> {
    let fp: [u8; 32] = locator_key
        .get(1..)
        .and_then(|fp| fp.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt {
            what: "record locator",
            detail: format!("key of {} bytes", locator_key.len()),
        })?;
    Ok(keys::record_key(locator_time(at)?, &fp))
}

/// The not_after a locator entry holds.
pub(crate) fn locator_time(at: &[u8]) -> Result<UnixTime> {
    <[u8; 8]>::try_from(at)
        .map(keys::time_from_bytes)
        .map_err(|_| StoreError::Corrupt {
            what: "record locator",
            detail: format!("value of {} bytes", at.len()),
        })
}

/// The stored bytes of the record of `fp`, found through its locator.
pub(crate) fn record_bytes(tree: &sled::Tree, fp: &[u8; 32]) -> Result<Option<sled::IVec>> {
    match tree.get(keys::locator_key(fp))? {
        Some(at) => Ok(tree.get(keys::record_key(locator_time(&at)?, fp))?),
        None => Ok(None),
    }
}

pub(crate) fn decode_record(bytes: &[u8]) -> Result<Certificate> {
    match bytes.split_first() {
        Some((&migrate::RECORD_FORMAT_2, body)) => {
            postcard::from_bytes(body).map_err(|e| StoreError::Corrupt {
                what: "certificate",
                detail: e.to_string(),
            })
        }
        Some((&migrate::RECORD_FORMAT_1, body)) => migrate::decode_v1(body),
        Some((v, _)) => Err(StoreError::Corrupt {
            what: "certificate",
            detail: format!("unknown record format {v}"),
        }),
        None => Err(StoreError::Corrupt {
            what: "certificate",
            detail: "empty value".into(),
        }),
    }
}

pub(crate) fn decode_postings(bytes: &[u8]) -> Result<Vec<Posting>> {
    decode(bytes, "index")
}

/// Every value starts with a version byte, so a later release can migrate old stores.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(512);
    out.push(RECORD_V1);
    postcard::to_io(value, &mut out).map_err(|e| StoreError::Io(e.to_string()))?;
    Ok(out)
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T> {
    match bytes.split_first() {
        Some((&RECORD_V1, body)) => postcard::from_bytes(body).map_err(|e| StoreError::Corrupt {
            what,
            detail: e.to_string(),
        }),
        Some((v, _)) => Err(StoreError::Corrupt {
            what,
            detail: format!("unknown record version {v}"),
        }),
        None => Err(StoreError::Corrupt {
            what,
            detail: "empty value".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(body: &[u8]) -> Vec<u8> {
        let mut bytes = body.to_vec();
        bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        bytes
    }

    #[test]
    fn a_whole_snapshot_is_kept_and_torn_ones_are_recognised() {
        let whole = snapshot(b"pages and their places");
        assert!(snapshot_is_whole(&whole));
        assert!(
            !snapshot_is_whole(b""),
            "empty (ENOSPC before the first byte)"
        );
        assert!(!snapshot_is_whole(&whole[..whole.len() - 1]), "cut short");
        let mut flipped = whole.clone();
        flipped[0] ^= 1;
        assert!(!snapshot_is_whole(&flipped), "checksum mismatch");
    }

    #[test]
    fn only_torn_generating_snapshots_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("db"), b"").unwrap();
        fs::write(dir.path().join("snap.00000000000000A0"), b"").unwrap();
        fs::write(dir.path().join("snap.00000000000000B0.generating"), b"").unwrap();
        fs::write(
            dir.path().join("snap.00000000000000C0.generating"),
            snapshot(b"complete"),
        )
        .unwrap();
        assert_eq!(discard_torn_snapshots(dir.path()).unwrap(), 1);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "db",
                "snap.00000000000000A0",
                "snap.00000000000000C0.generating"
            ]
        );
    }
}
