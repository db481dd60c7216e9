//! `certctl untrack ID`: stop following a tracked file.

use anyhow::Result;
use certctl_daemon::artifacts;
use certctl_daemon::{FleetRequest, FleetResponse};
use certctl_store::now;
use clap::Args;

use crate::exit::Exit;
use crate::output::print_json;
use crate::session::{unexpected, Globals};

#[derive(Debug, Args)]
pub struct UntrackArgs {
    /// The tracked file: its id prefix (≥ 8 hex characters), its path or its name.
    pub id: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `certctl untrack ID`: no more reminders for that file; it leaves `list`.
pub fn exec(g: &Globals, a: UntrackArgs) -> Result<Exit> {
    let session = &g.existing()?;
    let removed = match session.fleet(FleetRequest::Untrack {
        id: artifacts::id_from_client(&a.id),
    })? {
        FleetResponse::Artifacts { artifacts, .. } => artifacts,
        other => return Err(unexpected(&other)),
    };
    let t = now();
    if a.json {
        let v: Vec<serde_json::Value> = removed.iter().map(|x| artifacts::to_json(x, t)).collect();
        print_json(&v)?;
    } else {
        for x in &removed {
            println!(
                "no longer tracking {} {} ({})",
                x.kind,
                certctl_daemon::view::Printable(&x.name),
                certctl_daemon::view::Printable(&x.path)
            );
        }
    }
    Ok(Exit::Success)
}
