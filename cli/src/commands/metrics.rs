//! `certctl metrics`: the inventory as Prometheus text, on stdout or a file.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use certctl_daemon::atomic_file::{self, FileMode};
use certctl_daemon::{FleetRequest, FleetResponse};
use clap::Args;

use crate::exit::Exit;
use crate::session::{unexpected, Globals};

#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// One `certctl_certificate_not_after_seconds` series per agent certificate too
    /// (default: agents aggregated by credential kind and status).
    #[arg(long)]
    pub per_agent: bool,
    /// Write to FILE atomically (for node_exporter's textfile collector) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub fn exec(g: &Globals, a: MetricsArgs) -> Result<Exit> {
    let session = &g.existing()?;
    let mut text = match session.fleet(FleetRequest::Metrics {
        per_agent: a.per_agent,
    })? {
        FleetResponse::Metrics { text } => text,
        other => return Err(unexpected(&other)),
    };
    // certd's jobs (only a running certd knows them) and the SMTP state: the same series
    // certd's own /metrics appends.
    let status = session.status()?;
    text.push_str(&certctl_daemon::server::status_series(&status));
    match a.out {
        Some(path) => atomic_file::Options::new(FileMode::Public)
            .write(&path, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            out.write_all(text.as_bytes())?;
        }
    }
    Ok(Exit::Success)
}
