//! `certctl completions SHELL` and `certctl man`: shell completion scripts and manual
//! pages, both generated from the clap definitions in `args.rs`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use certctl_daemon::manpages;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::args::Cli;
use crate::Exit;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    #[arg(value_name = "SHELL")]
    pub shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write certctl.1 and one page per subcommand (certctl-scan.1, ...) into this folder
    /// (created if missing) instead of printing certctl.1.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// `certctl completions SHELL`: the completion script on stdout, e.g.
/// `certctl completions bash > /etc/bash_completion.d/certctl`.
pub fn completions(args: CompletionsArgs) -> anyhow::Result<Exit> {
    let mut command = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut command, "certctl", &mut out);
    out.flush().context("writing the completion script")?;
    Ok(Exit::Success)
}

/// `certctl man [--out DIR]`.
pub fn man(args: ManArgs) -> anyhow::Result<Exit> {
    let pages = manpages::section_1(Cli::command());
    match args.out {
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&pages[0].roff)
                .and_then(|()| out.flush())
                .context("writing the manual page")?;
        }
        Some(dir) => {
            for path in manpages::write_all(&dir, &pages)? {
                println!("{}", path.display());
            }
        }
    }
    Ok(Exit::Success)
}
