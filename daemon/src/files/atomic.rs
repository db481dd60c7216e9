//! The one way certctl and certd write files: keys, certificates, chains, PFX files, CRLs,
//! deployments, the deny list, exported CA certificates, metrics snapshots.
//!
//! Many of these land in folders that other accounts own (`issue --out`, deploy targets, the
//! deny list, CRL publication paths), and certctl often runs as root. The owner of such a
//! folder can plant any name in it at any time, so nothing here ever opens, changes or
//! inspects a name it did not just create itself, and no name is ever followed:
//!
//! 1. the folder is opened once; every later step is relative to that descriptor (`*at`);
//! 2. the final name is looked at with `AT_SYMLINK_NOFOLLOW`: only a regular file there gives
//!    its owner (and, with [`FileMode::Replaced`], its mode) to the new file and is kept as a
//!    backup; a symlink or any other kind of file is replaced, never followed;
//! 3. the content goes to `.<name>.certctl-tmp-<16 random hex digits>`, created with
//!    `O_CREAT|O_EXCL|O_NOFOLLOW` (a planted name makes the create fail, and another random
//!    name is tried), its mode and owner set with `fchmod`/`fchown` on the descriptor (the
//!    umask plays no part), written and fsynced;
//! 4. with a backup, the replaced file is kept as `TARGET.bak`: a hard link to the very
//!    file opened and checked in step 2 (through `/proc/self/fd`), else a copy of it,
//!    renamed over whatever `TARGET.bak` was;
//! 5. `renameat` puts the new file in place (a symlink at the final name is replaced, not
//!    followed), and the folder is fsynced: readers see the old or the new file, never a
//!    part, and the new one survives a crash.
//!
//! On any error before the rename, the temporary file is removed. [`create_dir_all`] makes
//! output folders with an exact mode whatever the umask (certctl runs with umask 077).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Stat, Uid, CWD};
use rustix::io::Errno;

/// A failed write, naming the path that failed (the target, its temporary file, its
/// backup or its folder).
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct WriteError {
    /// The path that failed: the target, its temporary file, its backup or its folder.
    pub path: PathBuf,
    /// The operating system's error.
    #[source]
    pub source: io::Error,
}

/// The permission bits of a written file, set with `fchmod` whatever the umask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileMode {
    /// 0600: keys, PFX files, anything secret.
    Private,
    /// 0644: certificates, chains, CRLs, the deny list: readable by the services using them.
    Public,
    /// Exactly these bits (`& 0o777`).
    Exact(u32),
    /// The bits of the regular file replaced, limited to `limit` (a key `0o700`: never
    /// group- or world-readable); `fallback` when no regular file is replaced.
    Replaced {
        /// The bits (e.g. `0o600`) when the target is absent or not a regular file.
        fallback: u32,
        /// A mask on the replaced file's bits (`0o700` keeps group and others out).
        limit: u32,
    },
}

impl FileMode {
    fn bits(self, replaced: Option<&Stat>) -> u32 {
        let bits = match self {
            FileMode::Private => 0o600,
            FileMode::Public => 0o644,
            FileMode::Exact(bits) => bits,
            FileMode::Replaced { fallback, limit } => match replaced {
                Some(st) => st.st_mode & limit,
                None => fallback,
            },
        };
        bits & 0o777
    }
}

/// How to write: the mode, whether to keep the replaced file as `TARGET.bak`, whether to
/// fsync. `Options::new(FileMode::Public).backup().write(path, bytes)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    mode: FileMode,
    backup: bool,
    durable: bool,
}

impl Options {
    /// Files of `mode`, durable (fsynced), without backup.
    pub fn new(mode: FileMode) -> Options {
        Options {
            mode,
            backup: false,
            durable: true,
        }
    }

    /// Keeps the regular file replaced as `TARGET.bak` (mode limited to the new file's).
    pub fn backup(mut self) -> Options {
        self.backup = true;
        self
    }

    /// Skips the fsyncs: for generated fixtures (the demo fleet, bench files) that a crash
    /// may lose. Still atomic and symlink-safe.
    pub fn not_durable(mut self) -> Options {
        self.durable = false;
        self
    }

    /// Replaces `path` with `bytes` (see the module documentation).
    pub fn write(&self, path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
        self.write_with(path, |mut file| file.write_all(bytes))
    }

    /// Replaces `path` with what `fill` writes to the temporary file (for content too large
    /// to hold in memory, e.g. a store backup), with every guarantee of [`Options::write`]:
    /// the temporary file is created `O_EXCL|O_NOFOLLOW` in the target's folder, fsynced,
    /// then renamed; when `fill` fails (or the process dies), nothing is at `path`.
    pub fn write_with(
        &self,
        path: &Path,
        fill: impl FnOnce(&File) -> io::Result<()>,
    ) -> Result<(), WriteError> {
        let failed = |p: &Path| {
            let path = p.to_path_buf();
            move |e: Errno| WriteError {
                path,
                source: e.into(),
            }
        };
        let (dir_path, name) = split(path)?;
        let dir = open_dir(dir_path)?;
        let replaced = regular_file_at(&dir, name).map_err(failed(path))?;
        let bits = self.mode.bits(replaced.as_ref());
        let (tmp, file) = create_temp(&dir, dir_path, name)?;
        let tmp_path = dir_path.join(&tmp);
        let kept = (|| {
            let fd = file.as_fd();
            if let Some(st) = &replaced {
                keep_owner(fd, st);
            }
            rustix::fs::fchmod(fd, Mode::from_raw_mode(bits)).map_err(failed(&tmp_path))?;
            fill(&file).map_err(|source| WriteError {
                path: tmp_path.clone(),
                source,
            })?;
            if self.durable {
                rustix::fs::fsync(fd).map_err(failed(&tmp_path))?;
            }
            let kept = match (&replaced, self.backup) {
                (Some(st), true) => back_up(&dir, dir_path, name, st, bits, self.durable)?,
                _ => None,
            };
            rustix::fs::renameat(&dir, &tmp, &dir, name).map_err(failed(path))?;
            Ok(kept)
        })();
        let kept = match kept {
            Ok(kept) => kept,
            Err(e) => {
                let _ = rustix::fs::unlinkat(&dir, &tmp, AtFlags::empty());
                return Err(e);
            }
        };
        // A private file's backup stays private: the hard link is the old file itself. Only
        // when the backup is its last name (a file also linked elsewhere is left alone).
        if let Some(Linked {
            old,
            bits: old_bits,
        }) = kept
        {
            let last_name = rustix::fs::fstat(&old).is_ok_and(|st| st.st_nlink == 1);
            if old_bits & !bits != 0 && last_name {
                let bak = backup_path(path);
                rustix::fs::fchmod(&old, Mode::from_raw_mode(old_bits & bits))
                    .map_err(failed(&bak))?;
            }
        }
        if self.durable {
            sync_dir(&dir).map_err(failed(dir_path))?;
        }
        Ok(())
    }
}

/// `TARGET.bak`, where a write with backup keeps the replaced file.
pub(crate) fn backup_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".bak");
    PathBuf::from(s)
}

/// Creates `path` and its missing parents, each folder created getting exactly `mode`
/// (e.g. 0755 for a CRL publication folder) whatever the umask. Folders that exist are left
/// as they are. Each folder is made and opened relative to its parent, never through a
/// symlink planted in its place.
pub(crate) fn create_dir_all(path: &Path, mode: u32) -> Result<(), WriteError> {
    let failed = |p: &Path| {
        let path = p.to_path_buf();
        move |e: Errno| WriteError {
            path,
            source: e.into(),
        }
    };
    let mut missing = Vec::new();
    let mut existing = path;
    loop {
        if existing.as_os_str().is_empty() {
            existing = Path::new(".");
        }
        match std::fs::metadata(existing) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) => {
                return Err(WriteError {
                    path: existing.to_path_buf(),
                    source: io::Error::from(Errno::NOTDIR),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(WriteError {
                    path: existing.to_path_buf(),
                    source,
                })
            }
        }
        let (Some(parent), Some(Component::Normal(name))) =
            (existing.parent(), existing.components().next_back())
        else {
            return Err(WriteError {
                path: existing.to_path_buf(),
                source: io::Error::other("cannot create this folder"),
            });
        };
        missing.push((existing, name));
        existing = parent;
    }
    let mut dir = open_dir(existing)?;
    for (path, name) in missing.into_iter().rev() {
        let created = match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(mode & 0o777)) {
            Ok(()) => true,
            Err(Errno::EXIST) => false,
            Err(e) => return Err(failed(path)(e)),
        };
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let child = rustix::fs::openat(&dir, name, flags, Mode::empty()).map_err(failed(path))?;
        if created {
            rustix::fs::fchmod(&child, Mode::from_raw_mode(mode & 0o777)).map_err(failed(path))?;
        }
        dir = child;
    }
    Ok(())
}

// ---- steps ---------------------------------------------------------------------------------

/// The folder and the file name of `path`.
fn split(path: &Path) -> Result<(&Path, &OsStr), WriteError> {
    let name = match path.components().next_back() {
        Some(Component::Normal(name)) => name,
        _ => {
            return Err(WriteError {
                path: path.to_path_buf(),
                source: io::Error::other("not a file name"),
            })
        }
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok((dir, name))
}

fn open_dir(path: &Path) -> Result<OwnedFd, WriteError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    rustix::fs::openat(CWD, path, flags, Mode::empty()).map_err(|e| WriteError {
        path: path.to_path_buf(),
        source: e.into(),
    })
}

/// What is at `name`, when it is a regular file (not followed when a symlink).
fn regular_file_at(dir: &OwnedFd, name: &OsStr) -> Result<Option<Stat>, Errno> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => Ok(Some(st)),
        Ok(_) | Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `.<name>.certctl-tmp-<random>`, created exclusively (mode 0600 until `fchmod`).
fn create_temp(
    dir: &OwnedFd,
    dir_path: &Path,
    name: &OsStr,
) -> Result<(OsString, File), WriteError> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut last = Errno::EXIST;
    for _ in 0..16 {
        let tmp = temp_name(name).map_err(|source| WriteError {
            path: dir_path.join(name),
            source,
        })?;
        match rustix::fs::openat(dir, &tmp, flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => return Ok((tmp, File::from(fd))),
            // Taken (planted, or a one in 2^64 collision): draw another name.
            Err(Errno::EXIST) => last = Errno::EXIST,
            Err(e) => {
                return Err(WriteError {
                    path: dir_path.join(&tmp),
                    source: e.into(),
                })
            }
        }
    }
    Err(WriteError {
        path: dir_path.join(name),
        source: io::Error::new(
            io::Error::from(last).kind(),
            "every temporary name tried already exists",
        ),
    })
}

fn temp_name(name: &OsStr) -> io::Result<OsString> {
    let mut random = [0u8; 8];
    openssl::rand::rand_bytes(&mut random).map_err(io::Error::other)?;
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(".certctl-tmp-");
    tmp.push(hex::encode(random));
    Ok(tmp)
}

/// Gives the new file the owner and group of the file it replaces, as far as allowed (an
/// unprivileged certd may still set a group it belongs to).
fn keep_owner(fd: impl AsFd, st: &Stat) {
    let uid = Uid::from_raw(st.st_uid);
    let gid = Gid::from_raw(st.st_gid);
    if uid == rustix::process::geteuid() && gid == rustix::process::getegid() {
        return;
    }
    if rustix::fs::fchown(&fd, Some(uid), Some(gid)).is_err() {
        let _ = rustix::fs::fchown(&fd, None, Some(gid));
    }
}

/// The largest file kept as a backup by copying (certificates and keys are a few KiB).
const BACKUP_COPY_LIMIT: i64 = 64 << 20;

/// The file replaced, kept as the backup by a hard link: opened, with its permission bits,
/// so that its mode can be narrowed to the new file's once that is in place.
struct Linked {
    old: OwnedFd,
    bits: u32,
}

/// Keeps the regular file at `name` (the one `st` describes) as `name.bak`: a hard link to
/// that very file, else a copy of it (whose mode is narrowed to `new_bits` right away).
fn back_up(
    dir: &OwnedFd,
    dir_path: &Path,
    name: &OsStr,
    st: &Stat,
    new_bits: u32,
    durable: bool,
) -> Result<Option<Linked>, WriteError> {
    let mut bak = name.to_owned();
    bak.push(".bak");
    let bak_path = dir_path.join(&bak);
    let old_path = dir_path.join(name);
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let opened = rustix::fs::openat(dir, name, flags, Mode::empty())
        .and_then(|old| Ok((rustix::fs::fstat(&old)?, old)));
    let (now, old) = opened.map_err(|e| WriteError {
        path: old_path.clone(),
        source: e.into(),
    })?;
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino)
        || FileType::from_raw_mode(now.st_mode) != FileType::RegularFile
    {
        return Err(WriteError {
            path: old_path,
            source: io::Error::other("replaced by another file while being backed up"),
        });
    }
    let old_bits = now.st_mode & 0o777;
    let (tmp, linked) = match link_to_temp(dir, &old, &bak, &bak_path)? {
        Some(tmp) => (tmp, true),
        None => {
            let source = Source {
                fd: &old,
                st: &now,
                path: &old_path,
            };
            let tmp = copy_to_temp(dir, dir_path, &bak, source, old_bits & new_bits, durable)?;
            (tmp, false)
        }
    };
    if let Err(e) = rustix::fs::renameat(dir, &tmp, dir, &bak) {
        let _ = rustix::fs::unlinkat(dir, &tmp, AtFlags::empty());
        return Err(WriteError {
            path: bak_path,
            source: e.into(),
        });
    }
    Ok(linked.then_some(Linked {
        old,
        bits: old_bits,
    }))
}

/// A hard link to the opened file `old` (never to whatever its name points to now) under a
/// fresh temporary name for `bak`; `None` when the system cannot link it (no /proc, a file
/// system without hard links, an unprivileged certd and another user's file).
fn link_to_temp(
    dir: &OwnedFd,
    old: &OwnedFd,
    bak: &OsStr,
    bak_path: &Path,
) -> Result<Option<OsString>, WriteError> {
    let proc_fd = format!("/proc/self/fd/{}", old.as_raw_fd());
    for _ in 0..4 {
        let tmp = temp_name(bak).map_err(|source| WriteError {
            path: bak_path.to_path_buf(),
            source,
        })?;
        match rustix::fs::linkat(CWD, proc_fd.as_str(), dir, &tmp, AtFlags::SYMLINK_FOLLOW) {
            Ok(()) => return Ok(Some(tmp)),
            Err(Errno::EXIST) => continue,
            Err(_) => return Ok(None),
        }
    }
    Ok(None)
}

/// The opened file a backup is copied from.
struct Source<'a> {
    fd: &'a OwnedFd,
    st: &'a Stat,
    path: &'a Path,
}

/// A copy of `source` (its owner kept as far as allowed, mode `bits`, at most
/// [`BACKUP_COPY_LIMIT`] bytes) under a fresh temporary name for `bak`.
fn copy_to_temp(
    dir: &OwnedFd,
    dir_path: &Path,
    bak: &OsStr,
    source: Source<'_>,
    bits: u32,
    durable: bool,
) -> Result<OsString, WriteError> {
    if source.st.st_size > BACKUP_COPY_LIMIT {
        return Err(WriteError {
            path: source.path.to_path_buf(),
            source: io::Error::other(format!(
                "{} bytes: too large to keep a copy as {}",
                source.st.st_size,
                dir_path.join(bak).display()
            )),
        });
    }
    let (tmp, copy) = create_temp(dir, dir_path, bak)?;
    let tmp_path = dir_path.join(&tmp);
    let at = |path: &Path| {
        let path = path.to_path_buf();
        move |source: io::Error| WriteError { path, source }
    };
    let copied = (|| {
        keep_owner(copy.as_fd(), source.st);
        rustix::fs::fchmod(&copy, Mode::from_raw_mode(bits))
            .map_err(|e| at(&tmp_path)(e.into()))?;
        let reader = File::from(source.fd.try_clone().map_err(at(source.path))?);
        let mut reader = io::Read::take(reader, BACKUP_COPY_LIMIT as u64);
        // From its start (the descriptor is ours alone; a dup shares its offset).
        io::Seek::seek(reader.get_mut(), io::SeekFrom::Start(0)).map_err(at(source.path))?;
        io::copy(&mut reader, &mut &copy).map_err(at(&tmp_path))?;
        if durable {
            rustix::fs::fsync(&copy).map_err(|e| at(&tmp_path)(e.into()))?;
        }
        Ok(())
    })();
    match copied {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = rustix::fs::unlinkat(dir, &tmp, AtFlags::empty());
            Err(e)
        }
    }
}

/// fsync of a folder; file systems that cannot (EINVAL) are left alone.
fn sync_dir(dir: &OwnedFd) -> Result<(), Errno> {
    match rustix::fs::fsync(dir) {
        Ok(()) | Err(Errno::INVAL) | Err(Errno::NOTSUP) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_keeps_a_backup_and_sets_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.pem");
        let options = Options::new(FileMode::Exact(0o600)).backup();
        options.write(&p, b"one").unwrap();
        options.write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read(backup_path(&p)).unwrap(), b"one");
        assert_eq!(mode(&p), 0o600);
        assert_eq!(
            names(dir.path()),
            ["f.pem", "f.pem.bak"],
            "no temporary file left"
        );
    }

    #[test]
    fn names_the_path_that_failed() {
        let e = Options::new(FileMode::Exact(0o600))
            .write(Path::new("/nonexistent-dir/x.pem"), b"x")
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent-dir"), "{e}");
    }

    #[test]
    fn a_symlink_at_the_final_name_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
        let p = dir.path().join("out.pem");
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        // Also the backup name: a backup is made of regular files only.
        std::os::unix::fs::symlink(&victim, backup_path(&p)).unwrap();
        Options::new(FileMode::Replaced {
            fallback: 0o644,
            limit: 0o777,
        })
        .backup()
        .write(&p, b"new")
        .unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(mode(&victim), 0o600, "the symlink's target gives no mode");
        assert!(fs::symlink_metadata(&p).unwrap().is_file());
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(mode(&p), 0o644);
        assert!(fs::symlink_metadata(backup_path(&p)).unwrap().is_symlink());
    }

    #[test]
    fn a_planted_temporary_name_is_never_written_through() {
        // Whatever the random part, a planted name makes O_EXCL fail and another is drawn;
        // here every name a pid-based writer would use is planted.
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let p = dir.path().join("deny.txt");
        let pid = std::process::id();
        for n in pid..pid + 50 {
            let tmp = dir.path().join(format!(".deny.txt.certctl-tmp-{n}"));
            std::os::unix::fs::symlink(&victim, tmp).unwrap();
        }
        Options::new(FileMode::Public).write(&p, b"x\n").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(fs::read(&p).unwrap(), b"x\n");
    }

    #[test]
    fn the_mode_holds_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("crl.pem");
        let old = rustix::process::umask(Mode::from_raw_mode(0o077));
        let written = Options::new(FileMode::Public).write(&p, b"crl");
        let made = create_dir_all(&dir.path().join("pub/crl"), 0o755);
        rustix::process::umask(old);
        written.unwrap();
        made.unwrap();
        assert_eq!(mode(&p), 0o644);
        assert_eq!(mode(&dir.path().join("pub")), 0o755);
        assert_eq!(mode(&dir.path().join("pub/crl")), 0o755);
    }

    #[test]
    fn temporary_names_differ_between_calls() {
        let a = temp_name(OsStr::new("f.pem")).unwrap();
        let b = temp_name(OsStr::new("f.pem")).unwrap();
        assert_ne!(a, b);
        for t in [&a, &b] {
            let t = t.to_string_lossy();
            assert!(t.starts_with(".f.pem.certctl-tmp-"), "{t}");
            assert_eq!(t.len(), ".f.pem.certctl-tmp-".len() + 16, "{t}");
        }
    }

    #[test]
    fn no_leftovers_on_error() {
        let dir = tempfile::tempdir().unwrap();
        // A folder at the final name: the rename fails after the temporary file was written.
        let p = dir.path().join("taken");
        fs::create_dir(&p).unwrap();
        fs::write(p.join("inside"), b"x").unwrap();
        let e = Options::new(FileMode::Private)
            .write(&p, b"secret")
            .unwrap_err();
        assert!(e.to_string().contains("taken"), "{e}");
        assert_eq!(names(dir.path()), ["taken"]);
    }

    #[test]
    fn a_backup_copy_is_the_opened_file_with_the_narrower_mode() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("server.key");
        fs::write(&old, b"old key").unwrap();
        fs::set_permissions(&old, fs::Permissions::from_mode(0o640)).unwrap();
        let dirfd = open_dir(dir.path()).unwrap();
        let fd = rustix::fs::openat(&dirfd, "server.key", OFlags::RDONLY, Mode::empty()).unwrap();
        let st = rustix::fs::fstat(&fd).unwrap();
        let source = Source {
            fd: &fd,
            st: &st,
            path: &old,
        };
        let bak = OsStr::new("server.key.bak");
        let tmp = copy_to_temp(&dirfd, dir.path(), bak, source, 0o600, true).unwrap();
        let copy = dir.path().join(&tmp);
        assert_eq!(fs::read(&copy).unwrap(), b"old key");
        assert_eq!(mode(&copy), 0o600);
        assert_eq!(
            fs::metadata(&copy).unwrap().nlink(),
            1,
            "a copy, not a link"
        );
    }

    #[test]
    fn a_replaced_file_gives_its_owner_and_mode_and_a_private_backup() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("server.key");
        fs::write(&p, b"old key").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
        }
        let before = fs::metadata(&p).unwrap();
        Options::new(FileMode::Replaced {
            fallback: 0o600,
            limit: 0o700,
        })
        .backup()
        .write(&p, b"new key")
        .unwrap();
        let after = fs::metadata(&p).unwrap();
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
        assert_eq!(mode(&p), 0o600);
        let bak = backup_path(&p);
        assert_eq!(fs::read(&bak).unwrap(), b"old key");
        assert_eq!(mode(&bak), 0o600, "the backup of a key stays private");
        assert_eq!(names(dir.path()), ["server.key", "server.key.bak"]);
    }
}
