//! `certctl completions SHELL`: a shell completion script from the clap definitions.

use std::io::Write;

use anyhow::{Context, Result};
use clap::Args;

use crate::exit::Exit;
use clap_complete::Shell;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    #[arg(value_name = "SHELL")]
    pub shell: Shell,
}

/// `certctl completions SHELL`: the completion script on stdout, e.g.
/// `certctl completions bash > /etc/bash_completion.d/certctl`.
pub fn exec(mut command: clap::Command, args: CompletionsArgs) -> Result<Exit> {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut command, "certctl", &mut out);
    out.flush().context("writing the completion script")?;
    Ok(Exit::Success)
}
