//! `certctl store backup` / `store restore` and certd's scheduled backups (`[backup]`).
//!
//! **The file** is a tar archive, written 0600 through the atomic writer
//! ([`crate::files::atomic::Options::write_with`]: a `kill -9` mid-way leaves nothing at the
//! target name), holding, in this order:
//!
//! | member                 | holds                                                         |
//! |------------------------|---------------------------------------------------------------|
//! | `manifest.json`        | [`Manifest`]: format version, creation time (RFC 3339), certctl version, the store it came from, counts per record kind, each CA's CRL number, and the size and SHA-256 of every other member |
//! | `manifest.json.sha256` | the SHA-256 of `manifest.json` (so that a damaged manifest is refused too) |
//! | `store/tree.bin`       | every key and value of the store ([`certctl_store::Store::export`]) |
//! | `files/...`            | every other file of the store folder, as stored: `ca/NAME/` (keys stay as they are, encrypted or not: nothing is decrypted), `workflows/ID/` (the new key of a half-way regenerate), ... |
//!
//! sled's own files (`db`, `conf`, `blobs/`, `snap.*`), certd's socket, half-written
//! temporary files and `ca init` staging folders are left out: the tree dump carries what
//! they hold.
//!
//! **Consistency while certd runs.** The copy is taken in two phases: the *snapshot* (tree
//! dump into an unnamed temporary file next to the target, and the store folder's files read
//! into memory) runs while no one writes to the store, the *archive* (hashing, writing the
//! tar, fsync, rename) afterwards, with writers free again. certd holds its writer lock for
//! the snapshot only: every store write in certd (scans, probes, reminder bookkeeping,
//! workflow steps, revocations, CRL upkeep) takes that lock, and a workflow step writes its
//! files before its store record, so the snapshot is the state after one whole step. The
//! lock is held for about the time it takes to copy the store's bytes once to a local file
//! (a second or two per 100 MiB); scans and reminder passes that want it in that time wait
//! and then go on. A scan holds the writer for its whole run, so a backup asked for during
//! a scan is taken when that scan ends. In direct mode (certd stopped) certctl holds sled's
//! exclusive lock on the store, so no one else writes.
//!
//! **Restore** ([`restore`]) goes into an empty or absent folder only. It reads the whole
//! file twice: first to check the manifest and every member's size and hash (nothing is
//! written before that passed), then to unpack into a new folder next to the target
//! (`.NAME.restore-RANDOM`), which is renamed to the target once the store in it opened,
//! was adjusted (below) and passed `store verify`. Any failure removes that folder.
//!
//! **After a restore** the store is older than what its CAs may have published since. For
//! each managed CA, the next CRL number is set above the highest one found in the backup
//! and in the CA's CRL files as they are now (its published `crl_paths`), and
//! `crate::pki::crl::publish_crl` checks the published files again at every CRL, so an old
//! number is never reused. Certificate serials are 128-bit random numbers
//! (`crate::pki::ca::random_serial`): a restored CA does not remember which it drew, and does
//! not need to. The store notes the restore ([`certctl_store::RestoredFrom`]) and `status`
//! says from which date, and which CAs had published a newer CRL: revocations made after
//! the backup must be redone.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use certctl_store::{rfc3339, AuditEvent, RestoredFrom, Store, StoreError, UnixTime};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::files::atomic::{self, FileMode, WriteError};
use crate::history::AuditAction;

/// The archive format this release writes, and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// The first member.
pub const MANIFEST: &str = "manifest.json";
/// The second member: the manifest's SHA-256.
pub(crate) const MANIFEST_HASH: &str = "manifest.json.sha256";
/// The store's tree dump.
pub(crate) const TREE: &str = "store/tree.bin";
/// Prefix of the store folder's files in the archive.
const FILES: &str = "files/";
/// Largest manifest read back (a store with many CAs and workflows has a few KiB).
const MAX_MANIFEST: u64 = 16 << 20;
/// Largest file of the store folder copied (keys, certificates, CRLs).
const MAX_FILE: u64 = 256 << 20;
/// Name of scheduled backups: `certctl-backup-<UTC time>.tar`.
const SCHEDULED_PREFIX: &str = "certctl-backup-";
const SCHEDULED_SUFFIX: &str = ".tar";

/// Why a backup or restore failed; each names the file, member or folder.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The store could not be opened, dumped, imported or updated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The atomic writer could not write the backup file or a restored file.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Reading, opening or listing a file or folder failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder that failed.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The backup cannot be read as a whole: its format is newer than this certctl reads.
    #[error("the backup {}: {problem}", file.display())]
    Damaged {
        /// The backup file.
        file: PathBuf,
        /// What is wrong, as a sentence (the format found and the one this certctl reads).
        problem: String,
    },
    /// A member is missing, out of order, unreadable, unsafe, or does not match the size or
    /// SHA-256 the manifest gives; nothing was restored.
    #[error("the backup {}: member `{member}`: {problem}; nothing was restored", file.display())]
    BadMember {
        /// The backup file.
        file: PathBuf,
        /// The member's path in the archive (`manifest.json`, `store/tree.bin`, `files/...`).
        member: String,
        /// What is wrong with it (`missing: the file is cut short`, ...).
        problem: String,
    },
    /// `store restore` was pointed at a file or a folder that is not empty.
    #[error("will not restore into {}: {what}; restore into an empty or absent folder", dir.display())]
    TargetInUse {
        /// The restore target (`--store DIR`).
        dir: PathBuf,
        /// What is there: `it is a file, not a folder`, or how many entries and the first five.
        what: String,
    },
    /// The unpacked store failed `store verify`; the staging folder was removed.
    #[error("the restored store does not verify ({problems} problems, first: {first}); nothing was restored")]
    Inconsistent {
        /// How many problems `store verify` found.
        problems: usize,
        /// The first of them, as `store verify` words it.
        first: String,
    },
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One member of the archive, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its path in the archive: `store/tree.bin`, or `files/` and the path relative to the
    /// store folder.
    pub path: String,
    /// Its length in bytes.
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// A managed CA's CRL number at the time of the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaAtBackup {
    /// The managed CA's name, as `ca init NAME` gave it.
    pub name: String,
    /// The number of the last CRL the CA had published when the backup was taken (0: none yet).
    pub crl_number: u64,
}

/// The first member of a backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// The archive format (`format` in `manifest.json`); [`FORMAT_VERSION`] when written, and a
    /// restore refuses a newer one.
    pub format: u32,
    /// RFC 3339, UTC.
    pub created: String,
    /// The same creation time as `created`, in Unix seconds.
    pub created_unix: UnixTime,
    /// The version of certctl that wrote the backup (`CARGO_PKG_VERSION`).
    pub certctl_version: String,
    /// The store folder backed up (absolute).
    pub store: String,
    /// Keys per record kind (`certificates`, `index-postings`, `audit-events`, ...), plus
    /// `files` (the store folder's other files) and `keys` (every key of the tree).
    pub counts: BTreeMap<String, u64>,
    /// Every managed CA and its CRL number at the time of the backup; a restore keeps the next
    /// CRL number above it.
    pub managed_cas: Vec<CaAtBackup>,
    /// Every member after the manifest and its hash, in archive order.
    pub members: Vec<Member>,
}

/// What `store backup` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupReport {
    /// The backup file written (absolute, as given to `--out`); `file` in `store backup --json`.
    pub file: PathBuf,
    /// When the snapshot was taken, in Unix seconds; `created` in `store backup --json`.
    pub created: UnixTime,
    /// The size of the backup file in bytes; `bytes` in `store backup --json`.
    pub bytes: u64,
    /// The manifest's counts (keys per record kind, plus `keys` and `files`); `counts` in
    /// `store backup --json`.
    pub counts: BTreeMap<String, u64>,
    /// How many members follow the manifest and its hash (the tree dump and the store folder's
    /// files); `members` in `store backup --json`.
    pub members: usize,
    /// How long writers were held off (the snapshot), in milliseconds.
    pub snapshot_ms: u64,
}

/// What `store restore` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreReport {
    /// The store folder restored into (the `--store DIR`); `store` in `store restore --json`.
    pub store: PathBuf,
    /// The backup file read; `backup` in `store restore --json`.
    pub backup: PathBuf,
    /// The backup's creation time.
    pub backup_created: UnixTime,
    /// The manifest's counts (keys per record kind, plus `keys` and `files`); `counts` in
    /// `store restore --json`.
    pub counts: BTreeMap<String, u64>,
    /// How many of the store folder's files (`files/...` members) were restored; `files` in
    /// `store restore --json`.
    pub files: u64,
    /// `store verify` of the restored store.
    pub verification: certctl_store::Verification,
    /// Managed CAs whose next CRL number was raised above a CRL published after the backup.
    pub crl_numbers_raised: Vec<String>,
    /// Managed CAs whose published CRL is newer than the backup.
    pub newer_crls: Vec<String>,
}

/// Bytes done and to do, for a progress bar (read from another thread).
#[derive(Debug, Default)]
pub struct BackupProgress {
    /// Bytes of the tree dump written to the archive so far.
    pub done: AtomicU64,
    /// Bytes of the tree dump in all (0 until the archive phase starts).
    pub total: AtomicU64,
}

/// What the snapshot phase took, for the archive phase.
pub struct Snapshot {
    created: UnixTime,
    store: PathBuf,
    tree: File,
    tree_member: Member,
    files: Vec<(Member, Vec<u8>)>,
    counts: BTreeMap<String, u64>,
    managed_cas: Vec<CaAtBackup>,
    snapshot_ms: u64,
}

/// A writer that hashes and counts what goes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Phase 1, while no one writes to the store: dumps the tree into an unnamed temporary
/// file in `spool_dir` (the target's folder: nothing is left behind by a crash) and reads
/// the store folder's files.
pub fn snapshot(store: &Store, spool_dir: &Path, now: UnixTime) -> Result<Snapshot, BackupError> {
    let started = std::time::Instant::now();
    let spool = tempfile::tempfile_in(spool_dir).map_err(io_at(spool_dir))?;
    let (tree_counts, tree_member) = {
        let mut out = Hashing {
            inner: BufWriter::with_capacity(1 << 20, &spool),
            hash: Sha256::new(),
            bytes: 0,
        };
        let counts = store.export(&mut out)?;
        out.flush().map_err(io_at(spool_dir))?;
        let member = Member {
            path: TREE.into(),
            size: out.bytes,
            sha256: hex::encode(out.hash.finalize()),
        };
        (counts, member)
    };
    let files = store_files(store.path())?;
    let managed_cas = store
        .managed_cas()?
        .into_iter()
        .map(|ca| CaAtBackup {
            name: ca.name,
            crl_number: ca.crl_number,
        })
        .collect();
    let mut counts = tree_counts.by_kind.clone();
    counts.insert("keys".into(), tree_counts.keys);
    counts.insert("files".into(), files.len() as u64);
    let mut tree = spool;
    tree.rewind().map_err(io_at(spool_dir))?;
    Ok(Snapshot {
        created: now,
        store: std::path::absolute(store.path()).unwrap_or_else(|_| store.path().to_path_buf()),
        tree,
        tree_member,
        files,
        counts,
        managed_cas,
        snapshot_ms: started.elapsed().as_millis().try_into().unwrap_or(u64::MAX),
    })
}

/// The store folder's own files (not sled's, not certd's socket, not temporary ones).
fn store_files(root: &Path) -> Result<Vec<(Member, Vec<u8>)>, BackupError> {
    let mut out = Vec::new();
    let mut walk = walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter();
    while let Some(entry) = walk.next() {
        let entry = entry.map_err(|e| BackupError::Io {
            path: e.path().unwrap_or(root).to_path_buf(),
            source: e.into(),
        })?;
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let name = entry.file_name().to_string_lossy();
        let top = entry.depth() == 1;
        let skip = (top
            && (matches!(name.as_ref(), "db" | "conf" | "blobs" | "certd.sock")
                || name.starts_with("snap.")))
            || name.contains(".certctl-tmp-")
            || name.starts_with(".staging-")
            || name.contains(".restore-");
        if skip {
            if entry.file_type().is_dir() {
                walk.skip_current_dir();
            }
            continue;
        }
        if !entry.file_type().is_file() {
            continue;
        }
        let Some(rel_str) = rel.to_str().filter(|s| safe_member_path(s)) else {
            tracing::warn!(file = %entry.path().display(), "left out of the backup: a name that is not plain UTF-8");
            continue;
        };
        let path = entry.path();
        let file = File::open(path).map_err(io_at(path))?;
        let mut bytes = Vec::new();
        file.take(MAX_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(io_at(path))?;
        if bytes.len() as u64 > MAX_FILE {
            return Err(BackupError::Io {
                path: path.to_path_buf(),
                source: io::Error::other("larger than 256 MiB: not a file certctl wrote"),
            });
        }
        out.push((
            Member {
                path: format!("{FILES}{rel_str}"),
                size: bytes.len() as u64,
                sha256: hex::encode(Sha256::digest(&bytes)),
            },
            bytes,
        ));
    }
    Ok(out)
}

/// Phase 2, with writers free again: the manifest and the archive, written 0600 through the
/// atomic writer. `progress` counts the tree dump's bytes.
pub fn write_archive(
    snapshot: Snapshot,
    out: &Path,
    progress: &BackupProgress,
) -> Result<BackupReport, BackupError> {
    let Snapshot {
        created,
        store,
        mut tree,
        tree_member,
        files,
        counts,
        managed_cas,
        snapshot_ms,
    } = snapshot;
    let mut members = vec![tree_member.clone()];
    members.extend(files.iter().map(|(m, _)| m.clone()));
    let manifest = Manifest {
        format: FORMAT_VERSION,
        created: rfc3339(created),
        created_unix: created,
        certctl_version: env!("CARGO_PKG_VERSION").into(),
        store: store.to_string_lossy().into_owned(),
        counts: counts.clone(),
        managed_cas,
        members,
    };
    let manifest_json = serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Io {
        path: out.to_path_buf(),
        source: io::Error::other(e),
    })?;
    let manifest_hash = format!("{}\n", hex::encode(Sha256::digest(&manifest_json)));
    progress.total.store(tree_member.size, Ordering::Relaxed);
    let member_count = manifest.members.len();
    atomic::Options::new(FileMode::Private).write_with(out, |file| {
        let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, file));
        let mut add = |path: &str, size: u64, data: &mut dyn Read| {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o600);
            header.set_size(size);
            header.set_mtime(created.max(0) as u64);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, path, data)
        };
        add(
            MANIFEST,
            manifest_json.len() as u64,
            &mut &manifest_json[..],
        )?;
        add(
            MANIFEST_HASH,
            manifest_hash.len() as u64,
            &mut manifest_hash.as_bytes(),
        )?;
        let mut counted = Counting {
            inner: &mut tree,
            progress,
            halfway: tree_member.size / 2,
        };
        add(TREE, tree_member.size, &mut counted)?;
        for (m, bytes) in &files {
            add(&m.path, m.size, &mut &bytes[..])?;
        }
        tar.into_inner()?.flush()
    })?;
    let bytes = fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(BackupReport {
        file: out.to_path_buf(),
        created,
        bytes,
        counts,
        members: member_count,
        snapshot_ms,
    })
}

/// Counts the bytes read for the progress bar; the crash test's hook is half-way.
struct Counting<'a, R> {
    inner: R,
    progress: &'a BackupProgress,
    halfway: u64,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let before = self.progress.done.fetch_add(n as u64, Ordering::Relaxed);
        if before <= self.halfway && before + n as u64 > self.halfway {
            crate::crash_point::here("backup:half-written");
        }
        Ok(n)
    }
}

/// A backup in direct mode (certd stopped: this process holds the store's lock).
pub fn backup(
    store: &Store,
    out: &Path,
    now: UnixTime,
    progress: &BackupProgress,
) -> Result<BackupReport, BackupError> {
    let snap = snapshot(store, &spool_dir(out), now)?;
    write_archive(snap, out, progress)
}

/// The folder the archive goes to (where the spool file is made).
pub fn spool_dir(out: &Path) -> PathBuf {
    out.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// A member path as certctl writes them: relative, plain components only.
fn safe_member_path(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

// ---- restore ---------------------------------------------------------------------------------

/// Checks the whole archive: the manifest and its hash, then every member's size and hash,
/// in order. Returns the manifest. Writes nothing.
pub fn check_archive(file: &Path) -> Result<Manifest, BackupError> {
    read_members(file, |_, expected, data| {
        let (sha256, size) = hash_all(data)?;
        if size != expected.size || sha256 != expected.sha256 {
            return Err(format!(
                "damaged: {size} bytes with SHA-256 {sha256}, the manifest says {} bytes with SHA-256 {}",
                expected.size, expected.sha256
            ));
        }
        Ok(())
    })
}

fn hash_all(data: &mut dyn Read) -> Result<(String, u64), String> {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let got = data
            .read(&mut buf)
            .map_err(|e| format!("cannot be read (cut short?): {e}"))?;
        if got == 0 {
            break;
        }
        hash.update(&buf[..got]);
        n += got as u64;
    }
    Ok((hex::encode(hash.finalize()), n))
}

/// Reads the archive: the manifest (checked against its hash), then each member in the
/// manifest's order, handed to `each` with what the manifest says of it. Any deviation is
/// an error naming the member.
fn read_members(
    file: &Path,
    mut each: impl FnMut(&str, &Member, &mut dyn Read) -> Result<(), String>,
) -> Result<Manifest, BackupError> {
    let opened = File::open(file).map_err(io_at(file))?;
    let mut archive = tar::Archive::new(io::BufReader::with_capacity(1 << 20, opened));
    let bad = |member: &str, problem: String| BackupError::BadMember {
        file: file.to_path_buf(),
        member: member.to_string(),
        problem,
    };
    let mut entries = archive.entries().map_err(io_at(file))?;
    let mut next = |expected: &str| -> Result<tar::Entry<'_, _>, BackupError> {
        match entries.next() {
            Some(Ok(entry)) => {
                let path = entry
                    .path()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if path != expected {
                    return Err(bad(
                        expected,
                        format!("expected here, found `{path}` (damaged or not a certctl backup)"),
                    ));
                }
                Ok(entry)
            }
            Some(Err(e)) => Err(bad(
                expected,
                format!("its header cannot be read (damaged or cut short): {e}"),
            )),
            None => Err(bad(expected, "missing: the file is cut short".into())),
        }
    };
    let mut manifest_bytes = Vec::new();
    next(MANIFEST)?
        .take(MAX_MANIFEST)
        .read_to_end(&mut manifest_bytes)
        .map_err(|e| bad(MANIFEST, format!("cannot be read (cut short?): {e}")))?;
    let mut hash_text = String::new();
    next(MANIFEST_HASH)?
        .take(200)
        .read_to_string(&mut hash_text)
        .map_err(|e| bad(MANIFEST_HASH, format!("cannot be read: {e}")))?;
    if hash_text.trim() != hex::encode(Sha256::digest(&manifest_bytes)) {
        return Err(bad(MANIFEST, "does not match its SHA-256 (damaged)".into()));
    }
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| bad(MANIFEST, format!("not a certctl backup manifest: {e}")))?;
    if manifest.format > FORMAT_VERSION {
        return Err(BackupError::Damaged {
            file: file.to_path_buf(),
            problem: format!(
                "format {} (certctl {}); this certctl reads up to format {FORMAT_VERSION}: upgrade certctl",
                manifest.format, manifest.certctl_version
            ),
        });
    }
    let mut seen = BTreeSet::new();
    for member in &manifest.members {
        if !safe_member_path(&member.path)
            || !(member.path == TREE || member.path.starts_with(FILES))
            || !seen.insert(member.path.clone())
        {
            return Err(bad(&member.path, "not a member certctl writes".into()));
        }
        let mut entry = next(&member.path)?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(bad(&member.path, "not a regular file".into()));
        }
        each(&member.path, member, &mut entry).map_err(|p| bad(&member.path, p))?;
    }
    if let Some(Ok(extra)) = entries.next() {
        let path = extra
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Err(bad(&path, "not listed in the manifest".into()));
    }
    if !seen.contains(TREE) {
        return Err(bad(TREE, "missing from the manifest".into()));
    }
    Ok(manifest)
}

/// `certctl store restore FILE --store DIR` (see the module documentation).
pub fn restore(file: &Path, dir: &Path, now: UnixTime) -> Result<RestoreReport, BackupError> {
    let dir = std::path::absolute(dir).map_err(io_at(dir))?;
    target_is_free(&dir)?;
    // 1. Everything checked before anything is written.
    let manifest = check_archive(file)?;
    // 2. Unpacked next to the target, renamed into place at the end.
    let parent = spool_dir(&dir);
    atomic::create_dir_all(&parent, 0o700)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "store".into());
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{name}.restore-"))
        .tempdir_in(&parent)
        .map_err(io_at(&parent))?;
    let report = unpack(file, &manifest, staging.path(), &dir, now)?;
    target_is_free(&dir)?;
    let staged = staging.keep();
    if let Err(e) = fs::rename(&staged, &dir) {
        let _ = fs::remove_dir_all(&staged);
        return Err(BackupError::Io {
            path: dir.clone(),
            source: e,
        });
    }
    if let Ok(p) = File::open(&parent) {
        let _ = p.sync_all();
    }
    Ok(RestoreReport {
        store: dir,
        backup: file.to_path_buf(),
        ..report
    })
}

/// The target must be absent or an empty folder; says what is there otherwise.
fn target_is_free(dir: &Path) -> Result<(), BackupError> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_at(dir)(e)),
        Ok(meta) if !meta.is_dir() => Err(BackupError::TargetInUse {
            dir: dir.to_path_buf(),
            what: "it is a file, not a folder".into(),
        }),
        Ok(_) => {
            let mut names: Vec<String> = fs::read_dir(dir)
                .map_err(io_at(dir))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            if names.is_empty() {
                return Ok(());
            }
            names.sort();
            let total = names.len();
            names.truncate(5);
            Err(BackupError::TargetInUse {
                dir: dir.to_path_buf(),
                what: format!(
                    "it holds {total} entries ({}{})",
                    names.join(", "),
                    if total > 5 { ", ..." } else { "" }
                ),
            })
        }
    }
}

/// Pass 2: the files and the tree into `staging`, then the adjustments and `store verify`.
fn unpack(
    file: &Path,
    manifest: &Manifest,
    staging: &Path,
    final_dir: &Path,
    now: UnixTime,
) -> Result<RestoreReport, BackupError> {
    let store = Store::open(staging)?;
    let mut files = 0u64;
    let mut store_error: Option<BackupError> = None;
    read_members(file, |path, expected, data| {
        let mut hashing = HashingReader {
            inner: data,
            hash: Sha256::new(),
            bytes: 0,
        };
        if path == TREE {
            if let Err(e) = store.import(&mut hashing) {
                let text = e.to_string();
                store_error = Some(e.into());
                return Err(text);
            }
        } else if let Some(rel) = path.strip_prefix(FILES) {
            let target = staging.join(rel);
            let written = (|| -> Result<(), BackupError> {
                if let Some(p) = target.parent() {
                    atomic::create_dir_all(p, 0o700)?;
                }
                atomic::Options::new(FileMode::Private)
                    .write_with(&target, |mut f| io::copy(&mut hashing, &mut f).map(|_| ()))?;
                Ok(())
            })();
            if let Err(e) = written {
                let text = e.to_string();
                store_error = Some(e);
                return Err(text);
            }
            files += 1;
        }
        // Whatever the importer left unread counts too.
        io::copy(&mut hashing, &mut io::sink()).map_err(|e| e.to_string())?;
        let got = hex::encode(std::mem::take(&mut hashing.hash).finalize());
        if got != expected.sha256 || hashing.bytes != expected.size {
            return Err("changed since it was checked".into());
        }
        Ok(())
    })
    .map_err(|e| store_error.take().unwrap_or(e))?;
    drop(store);
    // Reopened: an older dump's schema is upgraded as on any open.
    let store = Store::open(staging)?;
    store.relocate(Path::new(&manifest.store), final_dir)?;
    let (raised, newer) = raise_crl_numbers(&store, manifest)?;
    store.set_restored_from(&RestoredFrom {
        backup_created: manifest.created_unix,
        restored_at: now,
        original_store: manifest.store.clone(),
        newer_crls: newer.clone(),
    })?;
    store.record_audit(&AuditEvent {
        at: now,
        fingerprint: None,
        actor: crate::history::actor(),
        action: AuditAction::StoreRestored.into(),
        detail: format!(
            "restored from a backup of {} taken from {}",
            manifest.created, manifest.store
        ),
    })?;
    store.flush()?;
    let verification = store.verify()?;
    if !verification.is_ok() {
        return Err(BackupError::Inconsistent {
            problems: verification.problems.len(),
            first: verification.problems[0].clone(),
        });
    }
    drop(store);
    Ok(RestoreReport {
        store: final_dir.to_path_buf(),
        backup: file.to_path_buf(),
        backup_created: manifest.created_unix,
        counts: manifest.counts.clone(),
        files,
        verification,
        crl_numbers_raised: raised,
        newer_crls: newer,
    })
}

struct HashingReader<'a> {
    inner: &'a mut dyn Read,
    hash: Sha256,
    bytes: u64,
}

impl Read for HashingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Raises each managed CA's CRL number to the highest found in its CRL files (the backup's
/// `crl.pem` and the published `crl_paths` as they are now). Returns the CAs raised and the
/// CAs whose published CRL is newer than the backup.
fn raise_crl_numbers(
    store: &Store,
    manifest: &Manifest,
) -> Result<(Vec<String>, Vec<String>), BackupError> {
    let mut raised = Vec::new();
    let mut newer = Vec::new();
    for ca in store.managed_cas()? {
        let at_backup = manifest
            .managed_cas
            .iter()
            .find(|c| c.name == ca.name)
            .map_or(ca.crl_number, |c| c.crl_number);
        let mut paths = vec![ca.folder(store.path()).join("crl.pem")];
        paths.extend(ca.crl_paths.iter().map(PathBuf::from));
        let highest = crate::pki::crl::highest_crl_number(&paths);
        if highest.is_some_and(|n| n > at_backup) {
            newer.push(ca.name.clone());
        }
        if let Some(n) = highest {
            if store.raise_crl_number(&ca.name, n)? {
                tracing::info!(ca = %ca.name, published = n, "a newer CRL was published after the backup: the next CRL number is above it");
                raised.push(ca.name.clone());
            }
        }
    }
    Ok((raised, newer))
}

// ---- scheduled backups -----------------------------------------------------------------------

/// The file name of a scheduled backup taken at `t`.
pub fn scheduled_name(t: UnixTime) -> String {
    let stamp = time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .ok()
        })
        .unwrap_or_else(|| t.to_string());
    format!("{SCHEDULED_PREFIX}{stamp}{SCHEDULED_SUFFIX}")
}

/// The scheduled backups in `dir` with their times, oldest first.
pub fn scheduled_backups(dir: &Path) -> Vec<(UnixTime, PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(UnixTime, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stamp = name
                .strip_prefix(SCHEDULED_PREFIX)?
                .strip_suffix(SCHEDULED_SUFFIX)?;
            let t = time::PrimitiveDateTime::parse(
                stamp,
                time::macros::format_description!("[year][month][day]T[hour][minute][second]Z"),
            )
            .ok()?
            .assume_utc()
            .unix_timestamp();
            e.file_type().ok()?.is_file().then(|| (t, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// When the newest scheduled backup in `dir` was taken (a file appears there only whole).
pub fn last_success(dir: &Path) -> Option<UnixTime> {
    scheduled_backups(dir).last().map(|(t, _)| *t)
}

/// Removes the oldest scheduled backups of `dir` beyond the `keep` newest; call only after
/// a good new one. Returns the files removed.
pub fn prune(dir: &Path, keep: usize) -> Vec<PathBuf> {
    let all = scheduled_backups(dir);
    let excess = all.len().saturating_sub(keep.max(1));
    let mut removed = Vec::new();
    for (_, path) in all.into_iter().take(excess) {
        match fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot remove an old backup")
            }
        }
    }
    removed
}

/// Removes what a scheduled backup killed mid-way left in `dir` (its temporary
/// `.certctl-backup-*.tar.certctl-tmp-*` file: never at a backup's name). certd runs one
/// scheduled backup at a time, so none of these is being written.
pub fn remove_leftovers(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let leftover = name.starts_with(&format!(".{SCHEDULED_PREFIX}"))
            && name.contains(&format!("{SCHEDULED_SUFFIX}.certctl-tmp-"));
        if leftover && e.file_type().is_ok_and(|t| t.is_file()) && fs::remove_file(e.path()).is_ok()
        {
            tracing::info!(file = %e.path().display(), "removed what an interrupted backup left");
            removed += 1;
        }
    }
    removed
}

/// `check`'s warning when `[backup]` is configured and its newest backup is older than
/// `warn_after` (or there is none).
pub fn stale_warning(dir: &Path, warn_after_secs: i64, now: UnixTime) -> Option<String> {
    match last_success(dir) {
        Some(t) if now - t <= warn_after_secs => None,
        Some(t) => Some(format!(
            "the last good backup in {} is from {} (older than [backup] warn_after)",
            dir.display(),
            rfc3339(t)
        )),
        None => Some(format!(
            "no good backup in {} yet ([backup] is configured)",
            dir.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduled_backups_are_named_by_time_and_the_oldest_pruned() {
        let dir = tempfile::tempdir().unwrap();
        for t in [1_000_000_000, 1_000_000_060, 1_000_000_120] {
            fs::write(dir.path().join(scheduled_name(t)), b"x").unwrap();
        }
        fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
        fs::write(
            dir.path()
                .join(format!(".{}.certctl-tmp-00", scheduled_name(1_000_000_180))),
            b"half",
        )
        .unwrap();
        assert_eq!(last_success(dir.path()), Some(1_000_000_120));
        assert_eq!(prune(dir.path(), 2).len(), 1);
        let left: Vec<UnixTime> = scheduled_backups(dir.path())
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(left, [1_000_000_060, 1_000_000_120]);
        assert!(dir.path().join("notes.txt").exists());
        assert_eq!(remove_leftovers(dir.path()), 1);
        assert_eq!(remove_leftovers(dir.path()), 0);
        assert!(stale_warning(dir.path(), 3600, 1_000_000_200).is_none());
        assert!(stale_warning(dir.path(), 3600, 1_000_010_000)
            .unwrap()
            .contains("older than"));
        assert!(stale_warning(&dir.path().join("none"), 3600, 0)
            .unwrap()
            .contains("no good backup"));
    }

    #[test]
    fn member_paths_are_plain_relative_paths() {
        assert!(safe_member_path("files/ca/root/ca.key"));
        for bad in ["", "/etc/passwd", "files/../../x", "./x"] {
            assert!(!safe_member_path(bad), "{bad}");
        }
    }
}
