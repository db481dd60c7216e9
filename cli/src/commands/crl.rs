//! `certctl crl fetch`: CRLs of other CAs, and the certificates they revoke.

use std::path::PathBuf;

use anyhow::Result;
use certctl_daemon::api::{Request, Response};
use certctl_daemon::Duration;
use certctl_store::rfc3339;
use clap::{Args, Subcommand};

use crate::exit::Exit;
use crate::output::print_json;
use crate::secrets::pfx_password;
use crate::session::{unexpected, Globals, Session};

#[derive(Debug, Args)]
pub struct CrlArgs {
    #[command(subcommand)]
    pub command: CrlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CrlCommand {
    /// Fetch the CRLs named in inventoried certificates (http:// distribution points),
    /// check their signatures, cache them until nextUpdate, and mark listed certificates
    /// revoked (only those whose own issuer signed the CRL). The URLs come from scanned
    /// certificates: with --config FILE (or through certd), its `[crl] allow` list limits
    /// the hosts contacted, and `[crl] deadline` the whole pass.
    Fetch(CrlFetchArgs),
}

#[derive(Debug, Args)]
pub struct CrlFetchArgs {
    /// Give up on one URL after DUR.
    #[arg(long, value_name = "DUR", default_value = "10s")]
    pub timeout: Duration,
    /// Fetch even when the cached CRL is still current.
    #[arg(long)]
    pub force: bool,
    /// File holding the password of PFX files holding CA certificates [else
    /// $CERTCTL_PFX_PASSWORD].
    #[arg(long, value_name = "FILE")]
    pub pfx_password_file: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `certctl crl fetch`; with `--config FILE` and no certd, the `[crl]` allow list and
/// deadline of that file apply (through certd, certd's own do).
pub fn exec(g: &Globals, a: CrlArgs) -> Result<Exit> {
    let session = &g.existing()?;
    let CrlCommand::Fetch(a) = a.command;
    let crl_config = match (session, g.config_file()) {
        (Session::Direct(_), Some(file)) => Some(certctl_daemon::config::load(file)?.crl),
        _ => None,
    };
    let options = certctl_daemon::crlfetch::CrlFetchOptions {
        timeout_secs: a.timeout.as_secs().max(1).unsigned_abs(),
        force: a.force,
        pfx_password: pfx_password(a.pfx_password_file.as_deref())?,
        allow: crl_config.as_ref().and_then(|c| c.allow.clone()),
        deadline_secs: crl_config.map(|c| c.deadline.as_secs()),
    };
    let report = match session.call(Request::CrlFetch { options })? {
        Response::CrlFetch { report } => report,
        other => return Err(unexpected(&other)),
    };
    let failed = report.urls.iter().filter(|u| u.state == "failed").count();
    if a.json {
        print_json(&report)?;
    } else {
        for u in &report.urls {
            match &u.error {
                Some(e) => println!("error: {e}"),
                None => println!(
                    "{}: {} ({} certificates checked, {} newly revoked{})",
                    u.url,
                    u.state,
                    u.checked,
                    u.revoked.len(),
                    u.next_update
                        .map(|t| format!(", next update {}", rfc3339(t)))
                        .unwrap_or_default()
                ),
            }
            for fp in &u.revoked {
                println!("  revoked: {fp}");
            }
            for note in &u.not_applied {
                println!("  not applied: {note}");
            }
        }
        println!(
            "{} CRLs, {} failed; {} certificates newly marked revoked",
            report.urls.len(),
            failed,
            report.newly_revoked
        );
    }
    Ok(if failed > 0 {
        Exit::Failure
    } else {
        Exit::Success
    })
}
