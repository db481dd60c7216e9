//! How a request failed, in a word the CLI turns into an exit code.

use serde::{Deserialize, Serialize};

/// Why a request failed; the CLI maps it to an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// `not-found`: the ID, name or address the request names matches nothing in the store
    /// (an unknown certificate ID prefix, endpoint, agent). `certctl` exits 4.
    NotFound,
    /// `ambiguous`: an ID prefix matches more than one certificate; the message lists them.
    /// `certctl` exits 4.
    Ambiguous,
    /// `invalid`: the request itself is wrong (a relative path, an unknown report name, an
    /// unreadable policies folder) or, from certd, could not be read at all — which is how a
    /// certd older than the client refuses a request it does not know (the client then falls
    /// back, e.g. from [`crate::api::Request::ListJson`] to `List`). `certctl` exits 4.
    Invalid,
    /// `failed`: the request was understood but doing it failed (the store, a file, the
    /// network); the message names what and why. `certctl` exits 4.
    Failed,
}
