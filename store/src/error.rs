//! The store's error type. sled's own errors never leave this crate: they are wrapped here
//! with the path of the store and a sentence saying what to do.

use std::path::PathBuf;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the store's lock (sled allows one process per store).
    #[error("the store {} is in use by another process (is certd running on it?)", path.display())]
    Locked { path: PathBuf },

    /// Creating, opening or securing the store's directory failed.
    #[error("cannot open the store {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The store was written by a newer certctl.
    #[error("the store {} has schema version {found}; this certctl understands up to {supported}: upgrade certctl", path.display())]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },

    /// A read or write failed (I/O error, full disk, corruption).
    #[error("store I/O failed: {0}")]
    Io(String),

    /// A stored record could not be decoded.
    #[error("a stored {what} record is unreadable: {detail}")]
    Corrupt { what: &'static str, detail: String },
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
