//! How a command ends: the documented exit codes, and errors on one line.

/// The documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success,
    /// `check`: something expires within the warning window.
    Warning,
    /// `check`: something expired or expires within the critical window.
    Critical,
    /// `scan`: some files failed; the others were scanned.
    PartialFailure,
    /// `check`: the state is unknown (Nagios UNKNOWN): the store cannot be read.
    Unknown,
    /// The command failed.
    Failure,
    /// The command line was wrong.
    Usage,
}

impl Exit {
    /// The process exit code (documented in docs/cli-contract.md).
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Warning => 1,
            Exit::Critical => 2,
            Exit::PartialFailure | Exit::Unknown => 3,
            Exit::Failure => 4,
            Exit::Usage => 64,
        }
    }
}

/// An error and its causes on one line (`error: cause: cause`), for one-line outputs such
/// as `check`'s monitoring answer.
pub fn one_line(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}
