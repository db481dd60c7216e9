//! `certctl agents ...`: agents locked out after a registration loss: import registrations,
//! the pending queue, approve/block (audit history, deny list).

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use certctl_daemon::agents::{self, DecideRequest, DecisionReport};
use certctl_daemon::scan;
use certctl_daemon::{FleetRequest, FleetResponse};
use certctl_store::{now, rfc3339, AgentVerdict};
use clap::{Args, Subcommand};

use crate::exit::Exit;
use crate::output::{absolute, actor, print_json};
use crate::session::{unexpected, Globals, Session};
use crate::table::Table;

#[derive(Debug, Args)]
pub struct AgentsArgs {
    #[command(subcommand)]
    pub command: AgentsCommand,
}

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Read the management server's registered agents (CSV with a header, or a JSON array:
    /// agent name, resource GUID, optional spki_sha256 / fingerprint). Replaces the stored
    /// registrations unless --merge.
    ImportRegistrations {
        /// The registrations export (CSV with a header, or a JSON array).
        file: PathBuf,
        /// Add to the stored registrations instead of replacing them.
        #[arg(long)]
        merge: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Agents with a certificate in the inventory that no registration covers, awaiting a
    /// decision.
    Pending {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The decisions taken: approved and blocked agents, when and by whom.
    Decisions {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Let agents in (by agent name or resource GUID); recorded in the audit history.
    Approve(DecideArgs),
    /// Lock agents out: recorded in the audit history, their certificates' fingerprints
    /// written to the deny list.
    Block(DecideArgs),
    /// Rewrite the deny list now (e.g. after a scan found new certificates of blocked agents).
    DenyList {
        /// The deny-list file [default: `[agents] deny_list` of certd's configuration
        /// (certd's own, or with certd stopped the one of --config FILE), else the one
        /// remembered in the store].
        #[arg(long, value_name = "FILE")]
        deny_list: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct DecideArgs {
    /// Agent names (as in their certificates' CN) or resource GUIDs.
    #[arg(required = true, value_name = "NAME|GUID")]
    pub ids: Vec<String>,
    /// block: file holding the passphrase of a managed CA's key, to revoke the certificates
    /// it issued to blocked agents [else $CERTCTL_CA_PASSPHRASE].
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// The deny-list file (one fingerprint per line); remembered in the store for later
    /// decisions [default: `[agents] deny_list` of certd's configuration (certd's own, or
    /// with certd stopped the one of --config FILE), else the remembered one].
    #[arg(long, value_name = "FILE")]
    pub deny_list: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `certctl agents ...`; the `[agents] deny_list` of `--config FILE` (certd's
/// configuration) is what approve, block and deny-list use in direct mode.
pub fn exec(g: &Globals, a: AgentsArgs) -> Result<Exit> {
    let session = &match a.command {
        AgentsCommand::ImportRegistrations { .. } => g.open()?,
        _ => g.existing()?,
    };
    match a.command {
        AgentsCommand::ImportRegistrations { file, merge, json } => {
            // Regular files only, size-capped: a FIFO or /dev/zero is refused at once.
            let (bytes, _) = scan::read_regular_file(
                &file,
                agents::MAX_REGISTRATIONS_FILE_BYTES,
                "a registrations file",
            )
            .map_err(|cause| {
                anyhow!(
                    "cannot read the registrations file {}: {cause}",
                    file.display()
                )
            })?;
            let registrations = agents::parse_registrations(&file, &bytes, now())?;
            let source = absolute(&file)?.display().to_string();
            let report = match session.fleet(FleetRequest::ImportRegistrations {
                source,
                registrations,
                merge,
            })? {
                FleetResponse::Imported { report } => report,
                other => return Err(unexpected(&other)),
            };
            if json {
                print_json(&report)?;
            } else {
                println!(
                    "imported {} registrations from {} ({}); {} registered agents, {} pending",
                    report.imported,
                    report.source,
                    if report.replaced {
                        "replacing the previous ones"
                    } else {
                        "merged"
                    },
                    report.registrations,
                    report.pending
                );
            }
            Ok(Exit::Success)
        }
        AgentsCommand::Pending { json } => {
            let pending = match session.fleet(FleetRequest::Pending)? {
                FleetResponse::Pending { agents } => agents,
                other => return Err(unexpected(&other)),
            };
            if json {
                let rows: Vec<serde_json::Value> = pending
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "agent": p.agent,
                            "reason": p.reason,
                            "first_seen": rfc3339(p.first_seen),
                            "sources": p.sources,
                            "certificates": p.certificates,
                            "registered_guids": p.registered_guids,
                        })
                    })
                    .collect();
                print_json(&rows)?;
            } else {
                let mut t = Table::new(&["AGENT", "REASON", "FIRST SEEN", "SOURCE"]);
                for p in &pending {
                    let mut source = p.sources.first().cloned().unwrap_or_default();
                    if p.sources.len() > 1 {
                        source.push_str(&format!(" (+{})", p.sources.len() - 1));
                    }
                    t.row(vec![
                        p.agent.clone(),
                        p.reason.clone(),
                        rfc3339(p.first_seen),
                        source,
                    ]);
                }
                print!("{}", t.render());
                println!(
                    "{} agents pending (`certctl agents approve|block NAME...`)",
                    pending.len()
                );
            }
            Ok(Exit::Success)
        }
        AgentsCommand::Decisions { json } => {
            let mut decisions = match session.fleet(FleetRequest::Decisions)? {
                FleetResponse::Decisions { decisions } => decisions,
                other => return Err(unexpected(&other)),
            };
            decisions.sort_by(|a, b| (a.at, &a.agent).cmp(&(b.at, &b.agent)));
            if json {
                let rows: Vec<serde_json::Value> = decisions
                    .iter()
                    .map(|d| {
                        let certificates: Vec<String> =
                            d.fingerprints.iter().map(|f| f.to_hex()).collect();
                        serde_json::json!({
                            "agent": d.agent,
                            "guid": d.guid,
                            "decision": d.verdict.as_str(),
                            "at": rfc3339(d.at),
                            "actor": d.actor,
                            "certificates": certificates,
                        })
                    })
                    .collect();
                print_json(&rows)?;
            } else {
                let mut t = Table::new(&["AGENT", "DECISION", "GUID", "AT", "BY"]);
                for d in &decisions {
                    t.row(vec![
                        d.agent.clone(),
                        d.verdict.as_str().to_string(),
                        d.guid.clone().unwrap_or_else(|| "-".into()),
                        rfc3339(d.at),
                        d.actor.clone(),
                    ]);
                }
                print!("{}", t.render());
            }
            Ok(Exit::Success)
        }
        AgentsCommand::Approve(d) => decide(session, g, d, AgentVerdict::Approved),
        AgentsCommand::Block(d) => decide(session, g, d, AgentVerdict::Blocked),
        AgentsCommand::DenyList { deny_list, json } => {
            let path = deny_list.as_deref().map(absolute).transpose()?;
            let configured = g.deny_list(session)?;
            let request = FleetRequest::DenyList { path };
            let report = match session.fleet_with(request, configured.as_deref())? {
                FleetResponse::Decided { report } => report,
                other => return Err(unexpected(&other)),
            };
            print_decision(&report, json)
        }
    }
}

fn decide(session: &Session, g: &Globals, d: DecideArgs, verdict: AgentVerdict) -> Result<Exit> {
    let deny_list = d.deny_list.as_deref().map(absolute).transpose()?;
    let configured = g.deny_list(session)?;
    let passphrase = match &d.passphrase_file {
        Some(f) => Some(
            certctl_daemon::ca::Secret::from_private_file(f)
                .context("cannot use the CA passphrase file")?
                .0,
        ),
        None => std::env::var("CERTCTL_CA_PASSPHRASE")
            .ok()
            .filter(|v| !v.is_empty()),
    };
    let request = DecideRequest {
        ids: d.ids,
        verdict,
        actor: actor(),
        deny_list,
        passphrase: passphrase.map(certctl_daemon::ca::Secret),
    };
    let request = FleetRequest::Decide { decide: request };
    let report = match session.fleet_with(request, configured.as_deref())? {
        FleetResponse::Decided { report } => report,
        other => return Err(unexpected(&other)),
    };
    print_decision(&report, d.json)
}

fn print_decision(report: &DecisionReport, json: bool) -> Result<Exit> {
    if json {
        print_json(report)?;
        return Ok(Exit::Success);
    }
    for a in &report.decided {
        println!(
            "{} {}{} ({} certificates)",
            a.decision,
            a.agent,
            a.guid
                .as_deref()
                .map(|g| format!(" [{g}]"))
                .unwrap_or_default(),
            a.certificates.len()
        );
    }
    match &report.deny_list {
        Some(p) => println!("deny list {p}: {} fingerprints", report.deny_list_entries),
        None => println!(
            "no deny list configured (give --deny-list FILE, or set [agents] deny_list in certd's configuration)"
        ),
    }
    if !report.revoked.is_empty() {
        println!(
            "revoked {} certificates issued by managed CAs (CRL published)",
            report.revoked.len()
        );
    }
    if let Some(e) = &report.revoke_error {
        eprintln!("error: the agents are blocked, but revoking their certificates failed: {e}");
        return Ok(Exit::Failure);
    }
    Ok(Exit::Success)
}
