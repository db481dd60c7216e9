//! `certctl`: the command-line interface to the certificate inventory.
//!
//! This file only parses arguments, resolves where the store is, runs one command and
//! turns the outcome into an exit code. The work is in `certctl_daemon` (the engine) and
//! `certctl_store`; `commands` prints what they return.
#![deny(unsafe_code)]

mod args;
mod backup_cmds;
mod ca_args;
mod ca_cmds;
mod commands;
mod docs_cmds;
mod fleet_cmds;
mod policy_cmds;
mod renew_cmds;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::args::Cli;

/// jemalloc rather than glibc's malloc: a scan's writer and parser threads allocate and free
/// millions of small buffers (sled's leaf copies, parsed fields), where glibc's malloc cost
/// about a tenth of a full scan's CPU.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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

fn main() -> ExitCode {
    restore_sigpipe();
    // Everything certctl creates (store files, keys) is private to the user.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));

    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Success
            };
            let _ = e.print();
            return ExitCode::from(code.code());
        }
    };
    match commands::run(cli) {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(Exit::Failure.code())
        }
    }
}

/// `certctl list | head` should end quietly like any Unix filter, not panic on a closed
/// pipe: restore the default SIGPIPE action that Rust's runtime ignores.
#[allow(unsafe_code)]
fn restore_sigpipe() {
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The store folder: `--store`, else `$CERTCTL_STORE`, else the per-user data folder.
pub fn store_path(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p);
    }
    if let Some(p) = std::env::var_os("CERTCTL_STORE").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    dirs::data_dir()
        .map(|d| d.join("certctl").join("store"))
        .ok_or_else(|| anyhow::anyhow!("cannot find a data folder for the store (no $HOME?): give --store DIR or set CERTCTL_STORE"))
}
