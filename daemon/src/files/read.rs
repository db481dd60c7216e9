//! Reading files someone else may have dropped: an I/O error said the way an admin would say
//! it ([`io_cause`]), and the one way secret files (passphrases, passwords, challenges,
//! header files) are checked and read ([`read_private_file`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A file that could not be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {cause}", path.display())]
pub struct FileError {
    pub path: PathBuf,
    pub cause: String,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
    move |e| FileError {
        path: path.to_path_buf(),
        cause: io_cause(&e),
    }
}

/// An I/O error as an admin would say it.
pub(crate) fn io_cause(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        io::ErrorKind::NotFound => "no such file or directory".into(),
        _ if is_loop(e) => {
            "symbolic link loop: too many levels of symbolic links (not followed)".into()
        }
        _ => e.to_string(),
    }
}

/// Whether an error is `ELOOP` (a symlink that leads back to itself).
pub(crate) fn is_loop(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
}

/// The largest secret file read: a passphrase or a password, not a document.
pub(crate) const MAX_SECRET_FILE: u64 = 64 * 1024;

/// Why a secret file may not be used, judged on its metadata: it must be a regular file
/// (a FIFO or a device is never read) of at most [`MAX_SECRET_FILE`] bytes, readable by
/// its owner only (no group or other bits: `mode & 0o077 == 0`), and owned by the user
/// reading it or by root (anyone else could replace it).
fn private_file_problem(path: &Path, meta: &fs::Metadata) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let p = path.display();
    if !meta.file_type().is_file() {
        return Some(format!(
            "not a regular file: a secret must be a file of at most {} KiB",
            MAX_SECRET_FILE / 1024
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Some(format!(
            "others can read this secret file (mode {:o}): it must be readable by its owner only; run `chmod 600 {p}`",
            meta.mode() & 0o777
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Some(format!(
            "a secret file must belong to the user reading it (uid {me}) or to root, not to uid {}",
            meta.uid()
        ));
    }
    if meta.len() > MAX_SECRET_FILE {
        return Some(format!(
            "{} bytes: a secret file holds at most {} KiB",
            meta.len(),
            MAX_SECRET_FILE / 1024
        ));
    }
    None
}

/// Checks a secret file as [`read_private_file`] would, without reading it (`certd config
/// check`).
pub(crate) fn check_private_file(path: &Path) -> Result<(), FileError> {
    let meta = fs::metadata(path).map_err(io_err(path))?;
    match private_file_problem(path, &meta) {
        Some(cause) => Err(FileError {
            path: path.to_path_buf(),
            cause,
        }),
        None => Ok(()),
    }
}

/// Reads a secret file after checking it (see [`private_file_problem`]): opened without
/// blocking (a FIFO cannot hold the reader), judged on the open file's own metadata, read
/// up to the size cap.
pub(crate) fn read_private_file(path: &Path) -> Result<Vec<u8>, FileError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(io_err(path))?;
    let meta = file.metadata().map_err(io_err(path))?;
    if let Some(cause) = private_file_problem(path, &meta) {
        return Err(FileError {
            path: path.to_path_buf(),
            cause,
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    if bytes.len() as u64 > MAX_SECRET_FILE {
        return Err(FileError {
            path: path.to_path_buf(),
            cause: format!("a secret file holds at most {} KiB", MAX_SECRET_FILE / 1024),
        });
    }
    Ok(bytes)
}
