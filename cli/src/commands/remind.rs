//! `certctl remind [--dry-run]`: e-mail the reminders that are due.

use anyhow::{bail, Result};
use certctl_daemon::api::{Request, Response};
use certctl_daemon::remind::{PassMode, PassReport};
use certctl_store::rfc3339;
use clap::Args;

use crate::exit::Exit;
use crate::output::absolute;
use crate::session::{clock, unexpected, Globals};

use super::policy::PoliciesArg;

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("mode").required(true).args(["dry_run", "now"]))]
pub struct RemindArgs {
    /// Print the digests the next pass would send; send and record nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run a pass now (through certd when it runs): send what is due, retry what is pending.
    #[arg(long)]
    pub now: bool,
    #[command(flatten)]
    pub source: PoliciesArg,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn exec(g: &Globals, a: RemindArgs) -> Result<Exit> {
    let config_file = g.config_file();
    if config_file.is_none() && !(a.dry_run && a.source.policies.is_some()) {
        bail!("remind needs certd's configuration (its [smtp] and [reminders]): certctl --config FILE remind ..., or --dry-run --policies DIR to see what would be sent");
    }
    let request = Request::Remind {
        config: config_file.map(absolute).transpose()?,
        policies: a.source.policies.as_deref().map(absolute).transpose()?,
        mode: if a.dry_run {
            PassMode::DryRun
        } else {
            PassMode::Now
        },
        at: Some(clock()?),
    };
    let session = g.existing()?;
    let report: PassReport = match session.call(request)? {
        Response::Remind { report } => report,
        other => return Err(unexpected(&other)),
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&certctl_daemon::view::with_rfc3339_times(&report)?)?
        );
    } else if report.mode == PassMode::DryRun {
        for d in &report.digests {
            println!("To: {}", d.recipient);
            println!("Subject: {}", d.subject());
            println!();
            println!("{}", d.text(report.at));
        }
        println!("{}", report.summary());
    } else {
        for f in &report.failed {
            eprintln!(
                "error: {} reminders for {} stay pending (attempt {}, next after {}): {}",
                f.reminders,
                f.recipient,
                f.attempts,
                rfc3339(f.next_attempt),
                f.error
            );
        }
        println!("{}", report.summary());
    }
    Ok(if report.failed.is_empty() {
        Exit::Success
    } else {
        Exit::Failure
    })
}
