//! The store's error type. sled's own errors never leave this crate: they are wrapped here
//! with the path of the store and a sentence saying what to do.

use std::path::PathBuf;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the store's lock (sled allows one process per store).
    #[error("the store {} is in use by another process (is certd running on it?)", path.display())]
    Locked { path: PathBuf },

    /// No store at this path (only commands that add to the inventory create one).
    #[error(
        "no store at {}: nothing has been scanned into it yet, or the path is mistyped \
         (`scan`, `probe`, `track`, `issue`, `ca init` and `demo` create a store)",
        path.display()
    )]
    Missing { path: PathBuf },

    /// The store's directory belongs to another user. Opening it anyway (as root can) would
    /// leave files in it that its owner's certd and certctl cannot use.
    #[error(
        "the store {} belongs to uid {owner}, and you are uid {me}: run certctl as its owner \
         (e.g. `sudo -u '#{owner}' certctl ...`), so that the files it writes stay usable",
        path.display()
    )]
    OtherOwner { path: PathBuf, owner: u32, me: u32 },

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

    /// Too little free space left for a write: refused before anything was written, so
    /// the store stays whole and usable (see `Store::ensure_space`).
    #[error(
        "not enough free space for the store {}: {} available, {} needed (this write plus a reserve \
         that keeps the store usable); nothing of this write was stored: free some space and retry",
        path.display(), human_bytes(*available), human_bytes(*needed)
    )]
    DiskFull {
        path: PathBuf,
        available: u64,
        needed: u64,
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

/// `12.3 MiB`.
pub(crate) fn human_bytes(n: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / MIB)
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}
