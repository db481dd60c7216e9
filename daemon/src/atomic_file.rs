//! Replacing a file so that readers see the old or the new content, never a part of it:
//! a temporary file in the same folder, fsync, rename over the target, fsync of the folder.
//! Used for keys, certificates, CRLs, deployments and the deny list.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A failed atomic write, naming the path that failed (the target, its temporary file or
/// its backup).
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// `TARGET.bak`, where [`write`] keeps the replaced file.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".bak");
    PathBuf::from(s)
}

/// Writes `bytes` to `path` atomically with file `mode`. A replaced file keeps its owner
/// and group when the caller may set them; with `backup`, it is first kept as
/// `TARGET.bak` (a hard link, so the original bytes stay).
pub fn write(path: &Path, bytes: &[u8], mode: u32, backup: bool) -> Result<(), WriteError> {
    let at = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WriteError { path, source }
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| at(path)(io::Error::other("not a file name")))?;
    let tmp = dir.join(format!(".{name}.certctl-tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(at(&tmp))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(at(&tmp))?;
        if let Ok(meta) = fs::metadata(path) {
            use std::os::unix::fs::MetadataExt;
            let _ = std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid()));
        }
        f.write_all(bytes).map_err(at(&tmp))?;
        f.sync_all().map_err(at(&tmp))?;
        if backup && path.exists() {
            let bak = backup_path(path);
            let _ = fs::remove_file(&bak);
            fs::hard_link(path, &bak)
                .or_else(|_| fs::copy(path, &bak).map(|_| ()))
                .map_err(at(&bak))?;
        }
        fs::rename(&tmp, path).map_err(at(path))?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_keeps_a_backup_and_sets_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.pem");
        write(&p, b"one", 0o600, true).unwrap();
        write(&p, b"two", 0o600, true).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read(backup_path(&p)).unwrap(), b"one");
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 2, "no temporary file left behind");
    }

    #[test]
    fn names_the_path_that_failed() {
        let e = write(Path::new("/nonexistent-dir/x.pem"), b"x", 0o600, false).unwrap_err();
        assert!(e.to_string().contains("/nonexistent-dir/"), "{e}");
    }
}
