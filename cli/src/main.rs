//! `certctl`: the command-line interface to the certificate inventory.
//!
//! This file parses the arguments, runs one command and turns its outcome into an exit code.
//! The way a command travels: `args` (clap) → `main::run` → `commands::X::exec` →
//! `session` (certd over the control socket, or the store opened directly) →
//! `certctl_daemon::api::execute` (the engine) → `certctl_store` — and the answer back,
//! printed by the command (`output`, `table`).
#![deny(unsafe_code)]

mod args;
mod commands;
mod exit;
mod output;
mod secrets;
mod session;
mod table;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::args::{Cli, Command};
use crate::commands::*;
use crate::exit::Exit;
use crate::session::Globals;

/// jemalloc rather than glibc's malloc: a scan's writer and parser threads allocate and free
/// millions of small buffers (sled's leaf copies, parsed fields), where glibc's malloc cost
/// about a tenth of a full scan's CPU.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    match run(cli) {
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

/// One subcommand, run: the global options resolved once, then the command's own `exec`.
fn run(cli: Cli) -> anyhow::Result<Exit> {
    let g = &Globals::new(cli.store, cli.config)?;
    match cli.command {
        Command::Scan(a) => scan::exec(g, a),
        Command::List(a) => list::exec(g, a),
        Command::Show(a) => show::exec(g, a),
        Command::Inspect(a) => inspect::exec(a),
        Command::Stats(a) => stats::exec(g, a),
        Command::Check(a) => check::exec(g, a),
        Command::Probe(a) => probe::exec(g, a),
        Command::Status(a) => status::exec(g, a),
        Command::Store(a) => store::exec(g, a),
        Command::Demo(a) => demo::exec(g, a),
        Command::Ca(a) => ca::exec(g, a),
        Command::Issue(a) => issue::exec(g, a),
        Command::Revoke(a) => revoke::exec(g, a),
        Command::Regenerate(a) => regenerate::exec(g, a),
        Command::Renew(a) => renew::exec(g, a),
        Command::Workflows(a) => workflows::exec(g, a),
        Command::History(a) => history::exec(g, a),
        Command::Crl(a) => crl::exec(g, a),
        Command::Agents(a) => agents::exec(g, a),
        Command::Report(a) => report::exec(g, a),
        Command::Track(a) => track::exec(g, a),
        Command::Untrack(a) => untrack::exec(g, a),
        Command::Forget(a) => forget::exec(g, a),
        Command::Metrics(a) => metrics::exec(g, a),
        Command::Policy(a) => policy::exec(g, a),
        Command::Remind(a) => remind::exec(g, a),
        Command::Snooze(a) => snooze::exec(g, a),
        Command::Snoozed(a) => snoozed::exec(g, a),
        Command::Completions(a) => completions::exec(Cli::command(), a),
        Command::Man(a) => man::exec(Cli::command(), a),
    }
}
