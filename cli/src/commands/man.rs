//! `certctl man [--out DIR]`: the manual pages, generated from the clap definitions.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::exit::Exit;
use certctl_daemon::manpages;

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write certctl.1 and one page per subcommand (certctl-scan.1, ...) into this folder
    /// (created if missing) instead of printing certctl.1.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// `certctl man [--out DIR]`.
pub fn exec(command: clap::Command, args: ManArgs) -> Result<Exit> {
    let pages = manpages::section_1(command);
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
