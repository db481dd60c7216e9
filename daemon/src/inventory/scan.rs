//! The inventory of certificate files: `certctl scan`.
//!
//! A scan is a small pipeline:
//!
//! ```text
//!  walker (this thread) ──files to read──▶ parse workers (one per core) ──┐
//!        │                                                                 ▼
//!        └──────────── directory listings, files gone ───────────▶ writer (one thread)
//! ```
//!
//! - The **walker** lists one directory at a time (the tree is streamed, never held whole),
//!   compares each file's size and mtime with what the store remembers, and sends only new
//!   or changed files to be read (all of them with `--full`).
//! - **Parse workers** read and parse files in parallel ([`crate::certs::formats`]).
//! - The single **writer** merges what was found into the store in large atomic batches
//!   (sled's cost is per key written, so batching is what makes a scan fast), marks
//!   certificates that left a file as gone from that source, and records each
//!   directory's file states once all of its files are done.
//!
//! One bad file never stops a scan: it is counted and reported with its path and cause.
//!
//! Hostile trees are safe to scan:
//! - only regular files are opened: a FIFO, socket or device (or a symlink to one, such as
//!   `/dev/zero`) with a certificate-like name is reported as "not a regular file" without
//!   being opened, and files are opened with `O_NONBLOCK` so that one swapped for a FIFO after
//!   the listing cannot block the scan either;
//! - a file larger than [`MAX_FILE_BYTES`] is reported and not read (memory stays bounded
//!   by one such buffer per parse worker); below that, random data is recognised as "not a
//!   certificate" from its content;
//! - symlinked folders are not followed; one that points to a folder containing it (a loop)
//!   is reported as a loop, and so is any symlink that cannot be resolved because it loops;
//! - a damaged certificate in a bundle does not lose the ones before it: those are stored and
//!   the file is reported ([`formats::read_certificates_partial`]).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use certctl_store::{
    CertificateFacts, FileProblem, FileState, Fingerprint, Ingest, Lookup, Observed, Role,
    SourceLocation, Store, StoreError, UnixTime,
};
use crossbeam_channel::{bounded, Receiver, Sender};
use serde::{Deserialize, Serialize};

use crate::certs::formats::{self, FormatError};
use crate::files::read::{io_cause, is_loop};

/// Certificates merged per atomic store batch. sled keeps every tree node a batch replaces
/// until the batch is applied (see the store's `reclaim`): 8,192 held 250 MB of old nodes at
/// the end of each batch of a first import; 2,048 keep certd's scan of 200,000 files under
/// 300 MB.
const BATCH_CERTIFICATES: usize = 2048;

/// Messages (chunks of up to [`JOBS_PER_CHUNK`] files) the parse workers may be ahead of the
/// writer: about one batch, so their lookups are rarely older than the writer's last
/// commits (an older lookup is simply made again).
const OUT_QUEUE: usize = 256;

/// Largest file a scan reads (64 MiB): ample for a bundle of 10,000s of certificates, small
/// enough that one buffer per parse worker cannot exhaust memory. Larger files are reported.
pub(crate) const MAX_FILE_BYTES: u64 = 64 << 20;

/// How to scan.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct ScanOptions {
    /// Role given to the leaves found (`--role`); CA certificates always get `ca`.
    pub role: Option<Role>,
    /// Password for PKCS#12 files.
    pub pfx_password: Option<String>,
    /// Read every file, even those unchanged since the last scan.
    pub full: bool,
    /// Parse threads; 0 = one per core.
    pub threads: usize,
}

impl std::fmt::Debug for ScanOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanOptions")
            .field("role", &self.role)
            .field(
                "pfx_password",
                &self.pfx_password.as_ref().map(|_| "<redacted>"),
            )
            .field("full", &self.full)
            .field("threads", &self.threads)
            .finish()
    }
}

/// What a scan did. Field names are part of the `--json` contract.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScanSummary {
    /// Files read and parsed.
    pub files_read: u64,
    /// Files skipped because they had not changed since the last scan.
    pub files_unchanged: u64,
    /// Files that hold no certificate (e.g. only a private key).
    pub files_skipped: u64,
    /// Files that could not be read or parsed.
    pub files_failed: u64,
    /// Certificates that were not in the store before this scan.
    pub certificates_new: u64,
    /// Certificates already stored that changed beyond `last_seen` (a new source, a role, a
    /// source that came back).
    pub certificates_updated: u64,
    /// Certificates found in the files read (with repeats).
    pub certificates_seen: u64,
    /// (certificate, place) pairs no longer found where they were before.
    pub sources_gone: u64,
    /// Every file counted in `files_failed`, with its error, in the order met.
    pub errors: Vec<FileFailure>,
    /// The scan was stopped early (shutdown); what was read is stored.
    #[serde(default)]
    pub cancelled: bool,
    /// Files read with a warning (validity dates that are not DER but that OpenSSL
    /// accepts, read leniently), one entry per certificate concerned.
    #[serde(default)]
    pub warnings: Vec<FileFailure>,
}

/// One file that failed, and why.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileFailure {
    /// The file, as the scan walked it (`path` in `scan --json`'s `errors` and `warnings`).
    pub path: String,
    /// Why it failed, or the warning: one sentence naming the cause (`error`).
    pub error: String,
}

/// Live counters for a progress display (read them from another thread).
#[derive(Debug, Default)]
pub struct ScanProgress {
    /// Files found so far by the walker.
    pub files_found: AtomicU64,
    /// Files finished (read, unchanged, skipped or failed).
    pub files_done: AtomicU64,
    /// Certificates merged into the store.
    pub certificates: AtomicU64,
    /// Set to stop the scan early (shutdown): the walker stops listing, what was read is
    /// still stored, and the store stays consistent (every batch is atomic).
    pub cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// A scan that could not run at all (individual bad files are in [`ScanSummary::errors`]).
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A batch could not be committed (e.g. the disk is full): the scan stopped there.
    #[error(
        "{source}\n  the scan stopped: {stored_new} new certificates of earlier batches stay stored; \
         the files of the refused batch are read again by the next scan"
    )]
    Stopped {
        #[source]
        source: StoreError,
        stored_new: u64,
    },
    #[error("a scan thread failed: {0}")]
    Thread(String),
}

/// Scans `paths` (files and folders) into `store`, as of `now`.
pub fn scan(
    store: &Store,
    paths: &[PathBuf],
    options: &ScanOptions,
    now: UnixTime,
    progress: &ScanProgress,
) -> Result<ScanSummary, ScanError> {
    crate::certs::openssl_setup::ensure_legacy_provider();
    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let (job_tx, job_rx) = bounded::<ParseChunk>(256);
    let (out_tx, out_rx) = bounded::<WriterMsg>(OUT_QUEUE);

    let ingest = store.scan_ingest()?;
    // A first import knows its new certificates without looking them up.
    let look_up = !ingest.is_first_import();
    std::thread::scope(|scope| {
        let writer = std::thread::Builder::new()
            .name("scan-writer".into())
            .spawn_scoped(scope, || {
                Writer::new(ingest, options.role, now, progress).run(out_rx)
            })
            .map_err(|e| ScanError::Thread(format!("cannot start the store writer: {e}")))?;
        for _ in 0..threads {
            let (job_rx, out_tx) = (job_rx.clone(), out_tx.clone());
            let password = options.pfx_password.as_deref();
            let cancel = &*progress.cancel;
            std::thread::Builder::new()
                .name("scan-parser".into())
                .spawn_scoped(scope, move || {
                    let store = look_up.then_some(store);
                    parse_worker(store, job_rx, out_tx, password, cancel)
                })
                .map_err(|e| ScanError::Thread(format!("cannot start a parse worker: {e}")))?;
        }
        drop(job_rx);
        let walked = Walker {
            store,
            options,
            now,
            progress,
            jobs: job_tx,
            out: out_tx,
            next_dir: 0,
        }
        .walk(paths);
        // The walker dropped its senders: workers and then the writer drain and finish.
        let summary = writer
            .join()
            .map_err(|_| ScanError::Thread("the store writer panicked".into()))?;
        let mut summary = summary?;
        walked?;
        summary.errors.sort_by(|a, b| a.path.cmp(&b.path));
        summary.cancelled = progress.cancel.load(Ordering::Relaxed);
        // Tracked files deleted since are marked gone, like certificate files.
        crate::inventory::artifacts::refresh_presence(store, now)?;
        store.flush()?;
        Ok(summary)
    })
}

// ---- messages ------------------------------------------------------------------------------

/// Identifies one directory listing (or one explicitly named file) within a scan.
type DirId = u64;

/// Files of one directory listing to read, handed to a parse worker together.
struct ParseChunk {
    dir: DirId,
    jobs: Vec<ParseJob>,
}

/// Files per [`ParseChunk`].
const JOBS_PER_CHUNK: usize = 32;

struct ParseJob {
    path: PathBuf,
    /// The directory the file is in, opened (`O_PATH`) once for all its files.
    dir: Option<Arc<OwnedFd>>,
    path_str: String,
    name: String,
    /// As [`FileRef::file_type`].
    file_type: Option<fs::FileType>,
    /// The certificates the file held at the last scan: a worker looks their records up
    /// ahead of the writer, which marks those no longer there as gone.
    previous: Vec<Fingerprint>,
}

/// A file found by the walker: the directory entry lets its metadata be read without
/// walking the path again.
struct FileRef {
    path: PathBuf,
    /// `None` for files named on the command line and symlinks (whose target counts).
    entry: Option<fs::DirEntry>,
    /// The type of what the path leads to (a symlink's target), when the walker knows it:
    /// anything but a regular file is reported without being opened.
    file_type: Option<fs::FileType>,
}

impl FileRef {
    fn metadata(&self) -> io::Result<fs::Metadata> {
        match &self.entry {
            Some(entry) => entry.metadata(),
            None => fs::metadata(&self.path),
        }
    }
}

fn modified_ns(meta: &fs::Metadata) -> i128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128)
}

enum WriterMsg {
    /// A directory was listed: `unchanged` are kept as they are, `to_read` files follow as
    /// `File` messages.
    Dir(DirListing),
    /// Files were read.
    Files { dir: DirId, files: Vec<ReadFile> },
    /// A path could not be scanned at all (missing root, unreadable directory, ...).
    Failure(FileFailure),
}

struct DirListing {
    id: DirId,
    dir: String,
    /// `true` when this is a whole directory listing (files not listed are gone); `false`
    /// for files named on the command line (the rest of the directory is left alone).
    complete: bool,
    /// Remembered states of the directory before this scan.
    previous: HashMap<String, FileState>,
    /// File states carried over unchanged (last_seen refreshed).
    unchanged: Vec<FileState>,
    /// How many `File` messages will follow.
    to_read: usize,
}

struct ReadFile {
    path: String,
    name: String,
    size: u64,
    modified_ns: i128,
    /// The certificates read, in file order (with a `Failed` problem: those before the
    /// damage).
    certificates: Vec<CertificateFacts>,
    /// Their records as the parse worker found them in the store (`None` when the lookup
    /// failed: the writer then reads the record itself).
    lookups: Vec<Option<Lookup>>,
    /// The records of the certificates the file held at the last scan and no longer holds
    /// at that position, looked up by the parse worker (a renewal replaced the file).
    gone_lookups: Vec<(Fingerprint, Lookup)>,
    problem: Option<FileProblem>,
    /// Read with a warning (validity dates that are not DER, read leniently).
    warnings: Vec<String>,
    /// Its first certificate says `CA:TRUE` and the file holds a private key (PEM): a
    /// self-signed server certificate deployed as a leaf (see `Ingest::observe_deployed`).
    ca_leaf_with_key: bool,
}

// ---- walker --------------------------------------------------------------------------------

struct Walker<'a> {
    store: &'a Store,
    options: &'a ScanOptions,
    now: UnixTime,
    progress: &'a ScanProgress,
    jobs: Sender<ParseChunk>,
    out: Sender<WriterMsg>,
    next_dir: DirId,
}

impl Walker<'_> {
    fn walk(mut self, paths: &[PathBuf]) -> Result<(), ScanError> {
        // Files named on the command line, grouped by directory so that each directory's
        // remembered states are merged once.
        let mut named: std::collections::BTreeMap<String, Vec<(PathBuf, fs::FileType)>> =
            Default::default();
        for root in paths {
            let root = match fs::canonicalize(root) {
                Ok(p) => p,
                Err(e) => {
                    self.fail(root, io_cause(&e));
                    continue;
                }
            };
            match fs::metadata(&root) {
                Ok(m) if m.is_dir() => self.walk_tree(&root)?,
                Ok(m) => {
                    let dir = root.parent().and_then(utf8).unwrap_or_else(|| "/".into());
                    named.entry(dir).or_default().push((root, m.file_type()));
                }
                Err(e) => self.fail(&root, io_cause(&e)),
            }
        }
        for (dir, mut files) in named {
            files.sort_by(|a, b| a.0.cmp(&b.0));
            files.dedup_by(|a, b| a.0 == b.0);
            let files = files
                .into_iter()
                .map(|(path, file_type)| FileRef {
                    path,
                    entry: None,
                    file_type: Some(file_type),
                })
                .collect();
            self.listing(&dir, files, false)?;
        }
        Ok(())
    }

    fn fail(&self, path: &Path, error: String) {
        let _ = self.out.send(WriterMsg::Failure(FileFailure {
            path: path.display().to_string(),
            error,
        }));
    }

    /// Walks a directory tree depth-first, one listing at a time.
    fn walk_tree(&mut self, root: &Path) -> Result<(), ScanError> {
        let mut visited: HashSet<String> = HashSet::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            if self.progress.cancel.load(Ordering::Relaxed) {
                return Ok(());
            }
            let Some(dir_str) = utf8(&dir) else {
                self.fail(&dir, "the path is not valid UTF-8".into());
                continue;
            };
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) => {
                    self.fail(&dir, io_cause(&e));
                    continue;
                }
            };
            visited.insert(dir_str.clone());
            let mut files = Vec::new();
            for entry in entries {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        self.fail(&dir, io_cause(&e));
                        continue;
                    }
                };
                let path = entry.path();
                let wanted = formats::looks_like_certificate_file(&path);
                let Ok(entry_type) = entry.file_type() else {
                    // Unknown type: let the reader find out (it never opens a non-file).
                    if wanted {
                        files.push(FileRef {
                            path,
                            entry: None,
                            file_type: None,
                        });
                    }
                    continue;
                };
                if entry_type.is_dir() {
                    stack.push(path);
                } else if entry_type.is_symlink() {
                    match fs::metadata(&path) {
                        // Symlinked directories are not followed (no loops, no surprises);
                        // one that leads back to a folder containing it is reported.
                        Ok(m) if m.is_dir() => {
                            if let Some(target) = loop_target(&path, &dir) {
                                self.fail(
                                    &path,
                                    format!(
                                        "symbolic link loop: it points to {}, a folder that contains it (not followed)",
                                        target.display()
                                    ),
                                );
                            }
                        }
                        Ok(m) => {
                            if wanted {
                                files.push(FileRef {
                                    path,
                                    entry: None,
                                    file_type: Some(m.file_type()),
                                });
                            }
                        }
                        // A loop is reported whatever its name: it may stand for a folder.
                        Err(e) if is_loop(&e) => self.fail(&path, io_cause(&e)),
                        // Dangling: reading it says "no such file or directory".
                        Err(_) if wanted => files.push(FileRef {
                            path,
                            entry: None,
                            file_type: None,
                        }),
                        Err(_) => {}
                    }
                } else if wanted {
                    files.push(FileRef {
                        path,
                        entry: Some(entry),
                        file_type: Some(entry_type),
                    });
                }
            }
            // All in one folder: comparing the paths' bytes orders them by name, as comparing
            // `Path`s would, at a fraction of the cost (a few % of a scan's CPU).
            files.sort_unstable_by(|a, b| {
                a.path
                    .as_os_str()
                    .as_bytes()
                    .cmp(b.path.as_os_str().as_bytes())
            });
            self.listing(&dir_str, files, true)?;
        }
        // Directories remembered under this root that no longer exist: all their files are gone.
        let root_str = utf8(root).unwrap_or_default();
        for dir in self.store.dirs_under(&root_str)? {
            if !visited.contains(&dir) && fs::metadata(&dir).is_err() {
                self.listing(&dir, Vec::new(), true)?;
            }
        }
        Ok(())
    }

    /// Sends one directory's files: unchanged ones are carried over, the others read.
    ///
    /// Only files the store already knows are stat'ed here (to compare size and mtime); the
    /// others go straight to the parse workers, which take size and mtime from the open
    /// file. On a first scan that saves a path lookup per file.
    fn listing(&mut self, dir: &str, files: Vec<FileRef>, complete: bool) -> Result<(), ScanError> {
        let id = self.next_dir;
        self.next_dir += 1;
        let previous: HashMap<String, FileState> = self
            .store
            .dir_files(dir)?
            .into_iter()
            .map(|f| (f.name.clone(), f))
            .collect();
        self.progress
            .files_found
            .fetch_add(files.len() as u64, Ordering::Relaxed);
        let mut unchanged = Vec::new();
        let mut jobs = Vec::new();
        // Files are opened relative to their directory (a failure here only means they are
        // opened by their whole path).
        let dir_fd = rustix::fs::open(
            dir,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .ok()
        .map(Arc::new);
        for file in files {
            let Some(name) = file
                .path
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_owned)
            else {
                self.fail(&file.path, "the file name is not valid UTF-8".into());
                self.progress.files_done.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let known = previous.get(&name).filter(|old| {
                // Files that failed last time are read again: the cause may have been
                // outside the file (a wrong PFX password, permissions). That stays cheap for
                // hostile files: a PKCS#12 with a huge iteration count is refused again by
                // `pkcs12_guard` before any key derivation.
                !self.options.full && !matches!(old.problem, Some(FileProblem::Failed(_)))
            });
            if let Some(old) = known {
                match file.metadata() {
                    Ok(meta) if (meta.len(), modified_ns(&meta)) == (old.size, old.modified_ns) => {
                        let mut state = old.clone();
                        state.last_seen = self.now;
                        unchanged.push(state);
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.fail(&file.path, io_cause(&e));
                        self.progress.files_done.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
            }
            // (Compared as bytes: comparing `Path`s component by component cost the walker
            // more than the rest of its work per file.)
            let in_dir = file.path.parent().is_some_and(|parent| {
                parent.as_os_str().as_bytes() == dir.trim_end_matches('/').as_bytes()
            });
            jobs.push(ParseJob {
                path_str: format!("{}/{}", dir.trim_end_matches('/'), name),
                dir: dir_fd.clone().filter(|_| in_dir),
                path: file.path,
                previous: previous
                    .get(&name)
                    .map(|old| old.certificates.clone())
                    .unwrap_or_default(),
                name,
                file_type: file.file_type,
            });
        }
        let listing = DirListing {
            id,
            dir: dir.to_string(),
            complete,
            previous,
            unchanged,
            to_read: jobs.len(),
        };
        self.send(WriterMsg::Dir(listing))?;
        // Whole chunks per message: far fewer channel hand-offs and thread wake-ups.
        let mut jobs = jobs.into_iter().peekable();
        while jobs.peek().is_some() {
            let chunk = ParseChunk {
                dir: id,
                jobs: jobs.by_ref().take(JOBS_PER_CHUNK).collect(),
            };
            self.jobs
                .send(chunk)
                .map_err(|_| ScanError::Thread("the parse workers stopped".into()))?;
        }
        Ok(())
    }

    fn send(&self, msg: WriterMsg) -> Result<(), ScanError> {
        self.out
            .send(msg)
            .map_err(|_| ScanError::Thread("the store writer stopped".into()))
    }
}

fn utf8(p: &Path) -> Option<String> {
    p.to_str().map(str::to_owned)
}

/// If the symlinked directory `link` (found in `dir`) points to `dir` itself or to a folder
/// above it, that folder: following the link would walk the same tree forever. `dir` is
/// canonical (the walk starts from a canonical root and never follows symlinks).
fn loop_target(link: &Path, dir: &Path) -> Option<PathBuf> {
    let target = fs::canonicalize(link).ok()?;
    dir.starts_with(&target).then_some(target)
}

/// What a file that is not a regular file is, for "not a regular file (…)".
fn describe_file_type(t: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_dir() {
        "a directory"
    } else {
        "something other than a file"
    }
}

fn not_a_regular_file(t: fs::FileType) -> String {
    format!(
        "not a regular file: this is {}, which certctl never reads",
        describe_file_type(t)
    )
}

/// Reads a certificate file the way a scan does, returning its bytes and metadata, or the
/// cause as an administrator would say it: only a regular file is read (it is opened with
/// `O_NONBLOCK`, so a FIFO cannot block, and checked with `fstat` before any read), and only
/// up to `MAX_FILE_BYTES`.
pub fn read_file_bytes(path: &Path) -> Result<(Vec<u8>, fs::Metadata), String> {
    read_file_bytes_in(None, path, MAX_FILE_BYTES, "a certificate file")
}

/// Reads a file named by the user the way a scan reads certificate files (regular files
/// only, opened without blocking, checked with `fstat` before any read), up to `max_bytes`;
/// `what` names the kind of file in the too-large message ("a tracked file"). Used by
/// `track` and `agents import-registrations`, so that `/dev/zero` or a FIFO is refused at
/// once instead of filling memory or hanging.
pub fn read_regular_file(
    path: &Path,
    max_bytes: u64,
    what: &str,
) -> Result<(Vec<u8>, fs::Metadata), String> {
    read_file_bytes_in(None, path, max_bytes, what)
}

/// As [`read_regular_file`]; with `dir` (the open directory `path` is in), the file is
/// opened relative to it, which spares the kernel walking the whole path again for every
/// file.
fn read_file_bytes_in(
    dir: Option<&OwnedFd>,
    path: &Path,
    max_bytes: u64,
    what: &str,
) -> Result<(Vec<u8>, fs::Metadata), String> {
    use rustix::fs::OFlags;
    use std::os::unix::fs::OpenOptionsExt as _;
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let mut file = match (dir, path.file_name()) {
        (Some(dir), Some(name)) => rustix::fs::openat(dir, name, flags, rustix::fs::Mode::empty())
            .map(fs::File::from)
            .map_err(|e| io_cause(&io::Error::from(e)))?,
        _ => fs::OpenOptions::new()
            .read(true)
            .custom_flags(i32::try_from((OFlags::NONBLOCK | OFlags::NOCTTY).bits()).unwrap_or(0))
            .open(path)
            .map_err(|e| io_cause(&e))?,
    };
    let meta = file.metadata().map_err(|e| io_cause(&e))?;
    if !meta.is_file() {
        return Err(not_a_regular_file(meta.file_type()));
    }
    let too_large = |size: u64| {
        format!(
            "the file is {size} bytes, more than the {} MiB {what} may have (not read)",
            max_bytes >> 20
        )
    };
    if meta.len() > max_bytes {
        return Err(too_large(meta.len()));
    }
    let size = usize::try_from(meta.len()).unwrap_or(0);
    let mut bytes = vec![0u8; size + 1];
    // One read usually gets the whole file: exactly the size fstat gave means it is all
    // there. Anything else (a short read, a file that grew) reads on to the end, which
    // also stops at the limit.
    let first = match io::Read::read(&mut file, &mut bytes) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
        Err(e) => return Err(io_cause(&e)),
    };
    bytes.truncate(first);
    if first != size {
        io::Read::read_to_end(
            &mut io::Read::take(&mut file, (max_bytes + 1).saturating_sub(first as u64)),
            &mut bytes,
        )
        .map_err(|e| io_cause(&e))?;
    }
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(bytes.len() as u64));
    }
    Ok((bytes, meta))
}

// ---- parse workers -------------------------------------------------------------------------

/// Reads and parses chunks of files; with a `store`, also looks up the records of what it
/// parsed, so that the writer does not have to.
fn parse_worker(
    store: Option<&Store>,
    chunks: Receiver<ParseChunk>,
    out: Sender<WriterMsg>,
    password: Option<&str>,
    cancel: &std::sync::atomic::AtomicBool,
) {
    for chunk in chunks {
        // On cancel, drain the queue without reading: the directories whose files were not
        // all read keep their old file states, so the next scan reads those files again.
        if cancel.load(Ordering::Relaxed) {
            continue;
        }
        let files = chunk
            .jobs
            .into_iter()
            .map(|mut job| {
                let previous = std::mem::take(&mut job.previous);
                let mut file = read_file(job, password);
                // The lookups the writer would otherwise make, one thread at a time.
                if let Some(store) = store {
                    file.lookups = file
                        .certificates
                        .iter()
                        .map(|facts| store.look_up(&facts.fingerprint).ok())
                        .collect();
                    // And the records of what the file held before and holds no more.
                    file.gone_lookups = previous
                        .iter()
                        .enumerate()
                        .filter(|(i, fp)| {
                            file.certificates.get(*i).map(|f| f.fingerprint) != Some(**fp)
                        })
                        .filter_map(|(_, fp)| store.look_up(fp).ok().map(|l| (*fp, l)))
                        .collect();
                }
                file
            })
            .collect();
        if out
            .send(WriterMsg::Files {
                dir: chunk.dir,
                files,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Reads and parses one file; size and mtime come from the open file (fstat).
fn read_file(job: ParseJob, password: Option<&str>) -> ReadFile {
    let failed = |cause: String, size: u64, modified_ns: i128| ReadFile {
        path: job.path_str.clone(),
        name: job.name.clone(),
        size,
        modified_ns,
        certificates: Vec::new(),
        lookups: Vec::new(),
        gone_lookups: Vec::new(),
        problem: Some(FileProblem::Failed(cause)),
        warnings: Vec::new(),
        ca_leaf_with_key: false,
    };
    // Known not to be a regular file from the listing: never opened.
    if let Some(t) = job.file_type.filter(|t| !t.is_file()) {
        return failed(not_a_regular_file(t), 0, 0);
    }
    let (bytes, meta) = match read_file_bytes_in(
        job.dir.as_deref(),
        &job.path,
        MAX_FILE_BYTES,
        "a certificate file",
    ) {
        Ok(read) => read,
        Err(cause) => return failed(cause, 0, 0),
    };
    crate::certs::x509::take_lax_date_notes();
    let read = formats::read_certificates_partial(&bytes, &job.path, password);
    let warnings = crate::certs::x509::take_lax_date_notes();
    let problem = match read.error {
        None => None,
        Some(FormatError::NoCertificate) => {
            Some(FileProblem::Skipped(FormatError::NoCertificate.to_string()))
        }
        Some(e) => Some(FileProblem::Failed(e.to_string())),
    };
    // Only looked for when the first certificate is a CA (rare), so a scan of leaves
    // does not search every file for a key.
    let ca_leaf_with_key = read.certificates.first().is_some_and(|c| c.is_ca)
        && bytes
            .windows(PEM_KEY_MARKER.len())
            .any(|w| w == PEM_KEY_MARKER);
    ReadFile {
        path: job.path_str,
        name: job.name,
        size: meta.len(),
        modified_ns: modified_ns(&meta),
        certificates: read.certificates,
        lookups: Vec::new(),
        gone_lookups: Vec::new(),
        problem,
        warnings,
        ca_leaf_with_key,
    }
}

/// The end of a PEM private key's BEGIN line (`PRIVATE KEY`, `RSA PRIVATE KEY`, `EC PRIVATE
/// KEY`, `ENCRYPTED PRIVATE KEY`).
const PEM_KEY_MARKER: &[u8] = b"PRIVATE KEY-----";

// ---- writer --------------------------------------------------------------------------------

struct PendingDir {
    /// The listing; its `unchanged` states have moved into `states`.
    listing: DirListing,
    /// The directory's new file states, carried over or read.
    states: Vec<FileState>,
    /// How many states the directory will have once every file is in.
    expected: usize,
}

struct Writer<'a> {
    ingest: Ingest<'a>,
    role: Option<Role>,
    now: UnixTime,
    progress: &'a ScanProgress,
    summary: ScanSummary,
    dirs: HashMap<DirId, PendingDir>,
    /// New certificates of the batches committed so far.
    stored_new: u64,
}

impl<'a> Writer<'a> {
    fn new(
        ingest: Ingest<'a>,
        role: Option<Role>,
        now: UnixTime,
        progress: &'a ScanProgress,
    ) -> Self {
        Writer {
            ingest,
            role,
            now,
            progress,
            summary: ScanSummary::default(),
            dirs: HashMap::new(),
            stored_new: 0,
        }
    }

    /// Commits the batch; a failure stops the scan, saying what earlier batches stored.
    fn commit(&mut self) -> Result<(), ScanError> {
        match self.ingest.commit() {
            Ok(()) => {
                self.stored_new = self.summary.certificates_new;
                Ok(())
            }
            Err(source) => Err(ScanError::Stopped {
                source,
                stored_new: self.stored_new,
            }),
        }
    }

    fn run(mut self, messages: Receiver<WriterMsg>) -> Result<ScanSummary, ScanError> {
        for msg in messages {
            match msg {
                WriterMsg::Dir(listing) => self.dir(listing)?,
                WriterMsg::Files { dir, files } => {
                    for file in files {
                        self.file(dir, file)?;
                    }
                }
                WriterMsg::Failure(f) => {
                    self.summary.files_failed += 1;
                    self.summary.errors.push(f);
                }
            }
            if self.ingest.len() >= BATCH_CERTIFICATES {
                self.commit()?;
            }
        }
        self.commit()?;
        Ok(self.summary)
    }

    fn dir(&mut self, mut listing: DirListing) -> Result<(), ScanError> {
        // Carried-over files still count. (Files that failed last time are never carried
        // over: the walker always reads them again.)
        for state in &listing.unchanged {
            match &state.problem {
                Some(FileProblem::Skipped(_)) => self.summary.files_skipped += 1,
                _ => self.summary.files_unchanged += 1,
            }
        }
        self.progress
            .files_done
            .fetch_add(listing.unchanged.len() as u64, Ordering::Relaxed);
        let pending = PendingDir {
            expected: listing.unchanged.len() + listing.to_read,
            states: std::mem::take(&mut listing.unchanged),
            listing,
        };
        let id = pending.listing.id;
        self.dirs.insert(id, pending);
        self.maybe_finish(id)
    }

    fn file(&mut self, dir: DirId, file: ReadFile) -> Result<(), ScanError> {
        self.progress.files_done.fetch_add(1, Ordering::Relaxed);
        let Some(pending) = self.dirs.get_mut(&dir) else {
            return Err(ScanError::Thread(
                "a file arrived before its directory".into(),
            ));
        };
        let previous: Vec<Fingerprint> = pending
            .listing
            .previous
            .get(&file.name)
            .map(|s| s.certificates.clone())
            .unwrap_or_default();
        // Every certificate read is stored, even from a file that failed further on.
        let mut certificates = Vec::with_capacity(file.certificates.len());
        let mut lookups = file.lookups.into_iter();
        for (index, facts) in file.certificates.into_iter().enumerate() {
            let fp = facts.fingerprint;
            let location = SourceLocation::File {
                path: file.path.clone(),
                index: index as u32,
            };
            self.summary.certificates_seen += 1;
            let lookup = lookups.next().flatten();
            let deployed_leaf = index == 0 && file.ca_leaf_with_key;
            match self.ingest.observe_deployed(
                facts,
                lookup,
                self.role,
                location,
                self.now,
                deployed_leaf,
            )? {
                Observed::New => self.summary.certificates_new += 1,
                Observed::Updated => self.summary.certificates_updated += 1,
                Observed::Refreshed => {}
            }
            certificates.push(fp);
        }
        self.progress
            .certificates
            .fetch_add(certificates.len() as u64, Ordering::Relaxed);
        for w in &file.warnings {
            self.summary.warnings.push(FileFailure {
                path: file.path.clone(),
                error: w.clone(),
            });
        }
        match &file.problem {
            None => self.summary.files_read += 1,
            Some(FileProblem::Skipped(_)) => self.summary.files_skipped += 1,
            Some(FileProblem::Failed(error)) => {
                self.summary.files_failed += 1;
                self.summary.errors.push(FileFailure {
                    path: file.path.clone(),
                    error: error.clone(),
                });
                // The positions that could not be read keep their certificates' sources as
                // they were: a half-written file must not make certificates look gone.
                certificates.extend(previous.iter().skip(certificates.len()).copied());
            }
        }
        let problem = file.problem;
        // Certificates that were in this file (at that position) and no longer are.
        let mut gone_lookups = file.gone_lookups.into_iter().peekable();
        for (index, fp) in previous.iter().enumerate() {
            if certificates.get(index) != Some(fp) {
                let location = SourceLocation::File {
                    path: file.path.clone(),
                    index: index as u32,
                };
                let lookup = gone_lookups.next_if(|(f, _)| f == fp).map(|(_, l)| l);
                if self
                    .ingest
                    .mark_gone_looked_up(fp, lookup, &location, self.now)?
                {
                    self.summary.sources_gone += 1;
                }
            }
        }
        let state = FileState {
            name: file.name,
            size: file.size,
            modified_ns: file.modified_ns,
            last_seen: self.now,
            certificates,
            problem,
        };
        let pending = self
            .dirs
            .get_mut(&dir)
            .ok_or_else(|| ScanError::Thread("a directory vanished from the writer".into()))?;
        pending.states.push(state);
        self.maybe_finish(dir)
    }

    /// Once every file of a listing is in, records the directory's file states and marks
    /// what vanished from it.
    fn maybe_finish(&mut self, id: DirId) -> Result<(), ScanError> {
        let done = self
            .dirs
            .get(&id)
            .is_some_and(|p| p.states.len() >= p.expected);
        if !done {
            return Ok(());
        }
        let Some(PendingDir {
            listing,
            mut states,
            ..
        }) = self.dirs.remove(&id)
        else {
            return Ok(());
        };
        if listing.complete {
            let present: HashSet<&str> = states.iter().map(|s| s.name.as_str()).collect();
            for old in listing.previous.values() {
                if present.contains(old.name.as_str()) {
                    continue;
                }
                let path = join(&listing.dir, &old.name);
                for (index, fp) in old.certificates.iter().enumerate() {
                    let location = SourceLocation::File {
                        path: path.clone(),
                        index: index as u32,
                    };
                    if self.ingest.mark_gone(fp, &location, self.now)? {
                        self.summary.sources_gone += 1;
                    }
                }
            }
        } else {
            // Named files: keep the directory's other remembered files as they were.
            let named: HashSet<String> = states.iter().map(|s| s.name.clone()).collect();
            states.extend(
                listing
                    .previous
                    .into_values()
                    .filter(|old| !named.contains(&old.name)),
            );
        }
        states.sort_by(|a, b| a.name.cmp(&b.name));
        self.ingest.replace_dir(&listing.dir, states);
        Ok(())
    }
}

fn join(dir: &str, name: &str) -> String {
    format!("{}/{}", dir.trim_end_matches('/'), name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_read_relative_to_their_directory_read_whole() {
        let dir = tempfile::tempdir().expect("tmp");
        let dir_fd = rustix::fs::open(
            dir.path(),
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .expect("open dir");
        for (name, content) in [
            ("empty.pem", Vec::new()),
            ("one.pem", b"-----BEGIN CERTIFICATE-----".to_vec()),
            ("big.der", (0..300_000u32).map(|n| n as u8).collect()),
        ] {
            let path = dir.path().join(name);
            fs::write(&path, &content).expect("write");
            let (bytes, meta) =
                read_file_bytes_in(Some(&dir_fd), &path, MAX_FILE_BYTES, "a file").expect(name);
            assert_eq!((bytes, meta.len()), (content.clone(), content.len() as u64));
        }
        let missing = read_file_bytes_in(
            Some(&dir_fd),
            &dir.path().join("gone.pem"),
            MAX_FILE_BYTES,
            "a file",
        );
        assert_eq!(
            missing.map(|(b, _)| b.len()),
            Err(read_file_bytes(&dir.path().join("gone.pem"))
                .map(|(b, _)| b.len())
                .expect_err("missing"))
        );
    }

    #[test]
    fn only_regular_files_of_bounded_size_are_read() {
        let dir = tempfile::tempdir().expect("tmp");
        let fifo = dir.path().join("pipe.pem");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .expect("mkfifo");
        // A FIFO without a writer: a blocking open would never return.
        let (tx, rx) = std::sync::mpsc::channel();
        let fifo2 = fifo.clone();
        std::thread::spawn(move || {
            let _ = tx.send(read_file_bytes(&fifo2).map(|(b, _)| b.len()));
        });
        let result = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("reading a FIFO must not block");
        assert_eq!(
            result,
            Err(
                "not a regular file: this is a FIFO (named pipe), which certctl never reads".into()
            )
        );
        assert_eq!(
            read_file_bytes(Path::new("/dev/zero")).map(|(b, _)| b.len()),
            Err("not a regular file: this is a character device, which certctl never reads".into())
        );

        let big = dir.path().join("big.der");
        let f = fs::File::create(&big).expect("create");
        f.set_len(MAX_FILE_BYTES + 1).expect("sparse file");
        let err = read_file_bytes(&big).expect_err("too large");
        assert!(
            err.contains(&format!(
                "{} bytes, more than the 64 MiB",
                MAX_FILE_BYTES + 1
            )),
            "{err}"
        );
        f.set_len(MAX_FILE_BYTES).expect("sparse file");
        let (bytes, meta) = read_file_bytes(&big).expect("at the limit");
        assert_eq!(
            (bytes.len() as u64, meta.len()),
            (MAX_FILE_BYTES, MAX_FILE_BYTES)
        );

        let link = dir.path().join("loop.pem");
        std::os::unix::fs::symlink(&link, &link).expect("symlink");
        assert_eq!(
            read_file_bytes(&link).map(|(b, _)| b.len()),
            Err("symbolic link loop: too many levels of symbolic links (not followed)".into())
        );
    }
}
