//! `certctl track FILE`: follow a file that expires like a certificate.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use certctl_daemon::artifacts;
use certctl_daemon::scan;
use certctl_daemon::Duration;
use certctl_daemon::{FleetRequest, FleetResponse};
use certctl_store::{now, rfc3339, UnixTime};
use clap::Args;

use crate::exit::Exit;
use crate::output::{absolute, actor, print_json};
use crate::session::{unexpected, Globals};

#[derive(Debug, Args)]
pub struct TrackArgs {
    /// The file (enrollment bundle, agent package, gateway configuration backup).
    pub file: PathBuf,
    /// enrollment-bundle (expires 10 days after it is issued), agent-package,
    /// gateway-backup, other.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(artifacts::KINDS))]
    pub kind: String,
    /// When it was issued (YYYY-MM-DD or RFC 3339) [default: what the file says, else its
    /// modification time].
    #[arg(long, value_name = "DATE", value_parser = parse_date)]
    pub issued: Option<UnixTime>,
    /// Valid this long after it was issued [default: 10d for enrollment bundles]; an expiry
    /// written in the file wins.
    #[arg(long, value_name = "DUR")]
    pub lifetime: Option<Duration>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_date(s: &str) -> Result<UnixTime, String> {
    artifacts::parse_date(s).ok_or_else(|| format!("`{s}` is not a date (YYYY-MM-DD or RFC 3339)"))
}

pub fn exec(g: &Globals, a: TrackArgs) -> Result<Exit> {
    let session = &g.open()?;
    let path = absolute(&a.file)?;
    // Regular files only, size-capped: a FIFO or /dev/zero is refused at once.
    let (bytes, meta) =
        scan::read_regular_file(&path, artifacts::MAX_TRACKED_FILE_BYTES, "a tracked file")
            .map_err(|cause| anyhow!("cannot read {}: {cause}", path.display()))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as UnixTime);
    let t = now();
    let artifact = artifacts::prepare(
        &path,
        &bytes,
        modified,
        &a.kind,
        a.issued,
        a.lifetime.map(Duration::as_secs),
        &actor(),
        t,
    )?;
    let tracked = match session.fleet(FleetRequest::Track { artifact })? {
        FleetResponse::Artifacts { artifacts, .. } => artifacts,
        other => return Err(unexpected(&other)),
    };
    if a.json {
        let v: Vec<serde_json::Value> = tracked.iter().map(|x| artifacts::to_json(x, t)).collect();
        print_json(&v)?;
    } else {
        for x in &tracked {
            println!(
                "tracking {} {} ({}): issued {}, expires {} ({})",
                x.kind,
                x.name,
                x.path,
                rfc3339(x.issued),
                rfc3339(x.expires),
                match x.expiry_from.as_str() {
                    "bundle" => "as the file says",
                    "lifetime" => "issued + --lifetime",
                    _ => "issued + 10 days",
                }
            );
        }
    }
    Ok(Exit::Success)
}
