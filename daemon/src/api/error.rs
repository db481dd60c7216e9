//! How a request failed, in a word the CLI turns into an exit code.

use serde::{Deserialize, Serialize};

/// Why a request failed; the CLI maps it to an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    NotFound,
    Ambiguous,
    Invalid,
    Failed,
}
