//! What the store remembers about scanned files, so that a re-scan can skip unchanged files
//! and notice certificates that disappeared from a file or files that disappeared from a
//! folder.

use serde::{Deserialize, Serialize};

use crate::model::{Fingerprint, UnixTime};

/// One scanned file, as of its last scan. Kept per directory (see [`crate::Store::dir_files`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    /// File name within its directory.
    pub name: String,
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub modified_ns: i128,
    /// When a scan last found the file unchanged or read it.
    pub last_seen: UnixTime,
    /// The certificates the file held, in file order.
    pub certificates: Vec<Fingerprint>,
    /// What went wrong with the file, if anything (re-reported while it stays unchanged).
    pub problem: Option<FileProblem>,
}

/// Why a file gave no certificates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileProblem {
    /// Not an error: the file holds no certificate (e.g. a private key only).
    Skipped(String),
    /// The file could not be read or parsed.
    Failed(String),
}

/// When the files of one directory were last confirmed, kept beside their states so that a
/// query can date a directory's file sources without reading every file state (a
/// `list` on a million certificates touches a thousand directories of a thousand files).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirSeen {
    /// The oldest and newest `last_seen` of the directory's files.
    pub oldest: UnixTime,
    pub newest: UnixTime,
}

impl DirSeen {
    /// The summary of `files`, or `None` when there are none.
    pub fn of(files: &[FileState]) -> Option<DirSeen> {
        let oldest = files.iter().map(|f| f.last_seen).min()?;
        let newest = files.iter().map(|f| f.last_seen).max()?;
        Some(DirSeen { oldest, newest })
    }

    /// The one time every file was last confirmed at, when they all share it (a scan of
    /// the directory confirms all its files at once).
    pub fn uniform(&self) -> Option<UnixTime> {
        (self.oldest == self.newest).then_some(self.newest)
    }
}
