//! `certctl history ID` / `--at DATE`: a certificate's audit trail, or what was valid at a
//! moment.

use anyhow::Result;
use certctl_daemon::api::{Request, Response};
use certctl_daemon::history;
use certctl_store::rfc3339;
use clap::Args;
use serde_json::{json, Value};

use crate::exit::Exit;
use crate::output::{cert_json, print_json};
use crate::session::{unexpected, Globals};
use crate::table::Table;

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The certificate (fingerprint prefix or exact name).
    #[arg(required_unless_present = "at", conflicts_with = "at")]
    pub id: Option<String>,
    /// Which certificates were valid at DATE (2026-11-25, 2026-11-25T17:00:00Z; UTC).
    /// Retention (certd's `[retention]`, `store prune`) removes ephemeral credentials 7 days
    /// after they expired and other leaves 90 days after they expired and were last seen
    /// (by default), unless revoked, CA, a managed CA's, or named by a workflow, an audit
    /// event or a snooze: for a DATE before that, only what was kept is listed (the count of
    /// an agent's removed renewals is in `show NAME`).
    #[arg(long, value_name = "DATE")]
    pub at: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn exec(g: &Globals, a: HistoryArgs) -> Result<Exit> {
    let session = &g.existing()?;
    if let Some(date) = &a.at {
        let at = history::parse_date(date)?;
        let (at, certificates) = match session.call(Request::HistoryAt { at })? {
            Response::ValidAt { report } => (report.at, report.certificates),
            other => return Err(unexpected(&other)),
        };
        if a.json {
            let v: Vec<Value> = certificates
                .iter()
                .map(|v| {
                    json!({
                        "certificate": cert_json(&v.certificate),
                        "deployed_at": v.deployed_at,
                        "known_then": v.known_then,
                    })
                })
                .collect();
            return print_json(&v).map(|()| Exit::Success);
        }
        println!(
            "{} certificates were valid at {} (inside their validity, not yet revoked):",
            certificates.len(),
            rfc3339(at)
        );
        let mut t = Table::new(&[
            "NAME",
            "ROLE",
            "EXPIRES",
            "REVOKED LATER",
            "FINGERPRINT",
            "DEPLOYED THEN",
        ]);
        for v in &certificates {
            let c = &v.certificate;
            t.row(vec![
                c.facts.display_name().to_string(),
                c.role.to_string(),
                rfc3339(c.facts.not_after)[..10].to_string(),
                c.revocation
                    .as_ref()
                    .map(|r| rfc3339(r.revoked_at))
                    .unwrap_or_else(|| "-".into()),
                c.fingerprint().to_hex()[..16].to_string(),
                if v.deployed_at.is_empty() {
                    if v.known_then {
                        "(nowhere known)".into()
                    } else {
                        "(not yet inventoried)".into()
                    }
                } else {
                    v.deployed_at.join(", ")
                },
            ]);
        }
        print!("{}", t.render());
        return Ok(Exit::Success);
    }
    let id = a.id.unwrap_or_default();
    let histories = match session.call(Request::History { id })? {
        Response::History { histories } => histories,
        other => return Err(unexpected(&other)),
    };
    if a.json {
        let v: Vec<Value> = histories
            .iter()
            .map(|h| {
                json!({
                    "certificate": cert_json(&h.certificate),
                    "entries": h.entries.iter().map(|e| json!({
                        "at": rfc3339(e.at),
                        "action": e.action,
                        "actor": e.actor,
                        "detail": e.detail,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        return print_json(&v).map(|()| Exit::Success);
    }
    for (i, h) in histories.iter().enumerate() {
        if i > 0 {
            println!();
        }
        let c = &h.certificate;
        println!(
            "{}  {}  serial {}",
            c.fingerprint(),
            c.facts.display_name(),
            c.facts.serial
        );
        let mut t = Table::new(&["WHEN", "WHAT", "WHO", "DETAIL"]);
        for e in &h.entries {
            t.row(vec![
                rfc3339(e.at),
                e.action.clone(),
                e.actor.clone(),
                e.detail.clone(),
            ]);
        }
        print!("{}", t.render());
    }
    Ok(Exit::Success)
}
