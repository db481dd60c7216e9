//! `certctl snooze ID --until DATE`: silence one certificate's reminders until a date.

use anyhow::Result;
use certctl_daemon::api::{Request, Response};
use certctl_daemon::artifacts;
use certctl_daemon::remind::Snoozed;
use certctl_store::rfc3339;
use clap::Args;
use serde_json::json;

use crate::exit::Exit;
use crate::output::actor;
use crate::session::{clock, parse_time, unexpected, Globals};

#[derive(Debug, Args)]
pub struct SnoozeArgs {
    /// Fingerprint prefix (≥ 8 hex characters) or exact subject CN / SAN of one certificate.
    pub id: String,
    /// Silence reminders until DATE (`2026-12-31`, i.e. 00:00 UTC, or RFC 3339).
    #[arg(long, value_name = "DATE")]
    pub until: String,
    /// Why (recorded in the audit history).
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn exec(g: &Globals, a: SnoozeArgs) -> Result<Exit> {
    let session = &g.existing()?;
    let until = parse_time(&a.until)?;
    let by = actor();
    let request = Request::Snooze {
        id: artifacts::id_from_client(&a.id),
        until,
        reason: a.reason,
        by,
        at: Some(clock()?),
    };
    let snoozes = match session.call(request)? {
        Response::Snoozed { snoozes } => snoozes,
        other => return Err(unexpected(&other)),
    };
    for s in &snoozes {
        if a.json {
            println!("{}", serde_json::to_string_pretty(&snooze_json(s))?);
        } else {
            println!(
                "snoozed {} ({}) until {}: {}",
                s.name().unwrap_or("?"),
                s.snooze.fingerprint.to_hex(),
                rfc3339(s.snooze.until),
                s.snooze.reason
            );
        }
    }
    Ok(Exit::Success)
}

pub fn snooze_json(s: &Snoozed) -> serde_json::Value {
    json!({
        "fingerprint_sha256": s.snooze.fingerprint.to_hex(),
        "kind": if s.artifact.is_some() { "artifact" } else { "certificate" },
        "name": s.name(),
        "path": s.artifact.as_ref().map(|a| a.path.clone()),
        "until": rfc3339(s.snooze.until),
        "reason": s.snooze.reason,
        "by": s.snooze.by,
        "at": rfc3339(s.snooze.at),
    })
}
