//! The fleet commands: `agents import-registrations|pending|approve|block|deny-list`,
//! `report NAME`, `track FILE`, and the tracked artifacts shown by `list`.
//!
//! Arguments are defined here (args.rs only names the subcommands); each command builds a
//! [`FleetRequest`], sends it directly or through certd, and prints the answer: a table on
//! a terminal, `--json` / `--csv` for scripts (see docs/cli-contract.md, "Fleet").

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration as StdDuration;

use anyhow::{anyhow, bail, Context, Result};
use certctl_daemon::agents::{self, DecideRequest, DecisionReport, FleetRequest, FleetResponse};
use certctl_daemon::api::{self, Request, Response};
use certctl_daemon::artifacts;
use certctl_daemon::atomic_file::{self, FileMode};
use certctl_daemon::control::Client;
use certctl_daemon::inventory::{self, ScanProgress};
use certctl_daemon::query::ListFilter;
use certctl_daemon::reports::{self, Report, ReportOptions};
use certctl_daemon::view::CertificateView;
use certctl_daemon::Duration;
use certctl_store::{now, rfc3339, AgentVerdict, Certificate, TrackedArtifact, UnixTime};
use clap::{Args, Subcommand};

use crate::args::ListArgs;
use crate::commands::Session;
use crate::table::Table;
use crate::Exit;

const TIMEOUT: StdDuration = StdDuration::from_secs(600);

// ---- arguments -----------------------------------------------------------------------------

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

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// by-role, by-issuer, by-gateway, agents-by-credential, expiring, weak-keys, revoked,
    /// pending-agents, endpoint-findings, drift, clock-skew.
    #[arg(value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(reports::REPORTS))]
    pub name: String,
    /// Print JSON (`{"report", "generated_at", "rows"}`).
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV (header = column names).
    #[arg(long)]
    pub csv: bool,
    /// Write a standalone HTML page to FILE (mode 0600) instead: the dashboard's expiry
    /// timeline and needs-attention tables, then this report, to attach to a ticket.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["json", "csv"])]
    pub html: Option<PathBuf>,
    /// clock-skew: how far in the future a notBefore may lie.
    #[arg(long, value_name = "DUR", default_value = "5m")]
    pub tolerance: Duration,
    /// clock-skew: the lifetime ephemeral agent certificates are issued with.
    #[arg(long, value_name = "DUR", default_value = "24h")]
    pub ephemeral_lifetime: Duration,
}

#[derive(Debug, Args)]
pub struct UntrackArgs {
    /// The tracked file: its id prefix (≥ 8 hex characters), its path or its name.
    pub id: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

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

fn parse_date(s: &str) -> Result<UnixTime, String> {
    artifacts::parse_date(s).ok_or_else(|| format!("`{s}` is not a date (YYYY-MM-DD or RFC 3339)"))
}

// ---- plumbing ------------------------------------------------------------------------------

fn call(session: &Session, fleet: FleetRequest) -> Result<FleetResponse> {
    call_with(session, fleet, None)
}

/// [`call`] with certd's configured deny list, used in direct mode (certd uses its own).
fn call_with(
    session: &Session,
    fleet: FleetRequest,
    configured_deny_list: Option<&Path>,
) -> Result<FleetResponse> {
    let response = match session {
        Session::Direct(store) => api::execute_fleet(store, fleet, configured_deny_list, now()),
        Session::Daemon(path) => {
            let client = Client::connect(path)
                .with_context(|| format!("certd stopped answering on {}", path.display()))?;
            client.call(&Request::Fleet { fleet }, TIMEOUT)?
        }
    };
    match response {
        Response::Fleet { fleet } => Ok(fleet),
        Response::Error { message, .. } => bail!("{message}"),
        other => Err(anyhow!("unexpected answer: {other:?}")),
    }
}

/// The `[agents] deny_list` of `--config FILE` when certctl opens the store itself; through
/// certd, certd's own configuration applies (and the file is not read).
fn configured_deny_list(session: &Session, config_file: Option<&Path>) -> Result<Option<PathBuf>> {
    match session {
        Session::Direct(_) => Ok(agents::configured_deny_list(config_file)?),
        Session::Daemon(_) => Ok(None),
    }
}

fn unexpected(r: &FleetResponse) -> anyhow::Error {
    anyhow!("unexpected answer: {r:?}")
}

/// Who runs the command (`$USER`, else `$LOGNAME`, else the uid).
fn actor() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| format!("uid {}", rustix::process::getuid().as_raw()))
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.display()))
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // Unix times get RFC 3339 siblings (`last_probe` → `last_probe_at`).
    serde_json::to_writer_pretty(&mut out, &certctl_daemon::view::with_rfc3339_times(v)?)?;
    writeln!(out)?;
    Ok(())
}

// ---- agents --------------------------------------------------------------------------------

/// `certctl agents ...`; `config_file` is `--config FILE` (certd's configuration), whose
/// `[agents] deny_list` approve, block and deny-list use in direct mode.
pub fn agents_cmd(session: &Session, config_file: Option<&Path>, a: AgentsArgs) -> Result<Exit> {
    match a.command {
        AgentsCommand::ImportRegistrations { file, merge, json } => {
            // Regular files only, size-capped: a FIFO or /dev/zero is refused at once.
            let (bytes, _) = inventory::read_regular_file(
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
            let report = match call(
                session,
                FleetRequest::ImportRegistrations {
                    source,
                    registrations,
                    merge,
                },
            )? {
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
            let pending = match call(session, FleetRequest::Pending)? {
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
            let mut decisions = match call(session, FleetRequest::Decisions)? {
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
        AgentsCommand::Approve(d) => decide(session, config_file, d, AgentVerdict::Approved),
        AgentsCommand::Block(d) => decide(session, config_file, d, AgentVerdict::Blocked),
        AgentsCommand::DenyList { deny_list, json } => {
            let path = deny_list.as_deref().map(absolute).transpose()?;
            let configured = configured_deny_list(session, config_file)?;
            let request = FleetRequest::DenyList { path };
            let report = match call_with(session, request, configured.as_deref())? {
                FleetResponse::Decided { report } => report,
                other => return Err(unexpected(&other)),
            };
            print_decision(&report, json)
        }
    }
}

fn decide(
    session: &Session,
    config_file: Option<&Path>,
    d: DecideArgs,
    verdict: AgentVerdict,
) -> Result<Exit> {
    let deny_list = d.deny_list.as_deref().map(absolute).transpose()?;
    let configured = configured_deny_list(session, config_file)?;
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
    let report = match call_with(session, request, configured.as_deref())? {
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

// ---- reports -------------------------------------------------------------------------------

pub fn report(session: &Session, a: ReportArgs) -> Result<Exit> {
    let options = ReportOptions {
        tolerance: a.tolerance,
        ephemeral_lifetime: a.ephemeral_lifetime,
    };
    if let Some(path) = a.html {
        let html = match call(
            session,
            FleetRequest::ReportHtml {
                name: a.name,
                options,
            },
        )? {
            FleetResponse::Html { html } => html,
            other => return Err(unexpected(&other)),
        };
        atomic_file::Options::new(FileMode::Private)
            .write(&path, html.as_bytes())
            .with_context(|| format!("writing the report to {}", path.display()))?;
        println!("{}", path.display());
        return Ok(Exit::Success);
    }
    let report = match call(
        session,
        FleetRequest::Report {
            name: a.name,
            options,
        },
    )? {
        FleetResponse::Report { report } => report,
        other => return Err(unexpected(&other)),
    };
    if a.json {
        print_json(&report.to_json())?;
    } else if a.csv {
        let stdout = std::io::stdout();
        let mut w = csv::Writer::from_writer(stdout.lock());
        w.write_record(&report.columns)?;
        for row in &report.rows {
            w.write_record(row.iter().map(reports::cell_text))?;
        }
        w.flush()?;
    } else {
        print_report_table(&report);
    }
    Ok(Exit::Success)
}

fn print_report_table(report: &Report) {
    let header: Vec<String> = report
        .columns
        .iter()
        .map(|c| c.to_uppercase().replace('_', " "))
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut t = Table::new(&header);
    for row in &report.rows {
        t.row(row.iter().map(reports::cell_text).collect());
    }
    print!("{}", t.render());
    println!("{}: {} rows", report.report, report.rows.len());
}

// ---- metrics -------------------------------------------------------------------------------

pub fn metrics(session: &Session, a: MetricsArgs) -> Result<Exit> {
    let mut text = match call(
        session,
        FleetRequest::Metrics {
            per_agent: a.per_agent,
        },
    )? {
        FleetResponse::Metrics { text } => text,
        other => return Err(unexpected(&other)),
    };
    // certd's jobs (only a running certd knows them) and the SMTP state: the same series
    // certd's own /metrics appends.
    let status = match session {
        Session::Direct(store) => api::direct_status(store)?,
        Session::Daemon(path) => {
            let client = Client::connect(path)
                .with_context(|| format!("certd stopped answering on {}", path.display()))?;
            match client.call(&Request::Status, TIMEOUT)? {
                Response::Status { status } => status,
                Response::Error { message, .. } => anyhow::bail!("{message}"),
                _ => anyhow::bail!("certd gave an unexpected answer to status"),
            }
        }
    };
    text.push_str(&certctl_daemon::metrics_http::status_series(&status));
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

// ---- track and list ------------------------------------------------------------------------

/// `certctl untrack ID`: no more reminders for that file; it leaves `list`.
pub fn untrack(session: &Session, a: UntrackArgs) -> Result<Exit> {
    let removed = match call(
        session,
        FleetRequest::Untrack {
            id: artifacts::id_from_client(&a.id),
        },
    )? {
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

pub fn track(session: &Session, a: TrackArgs) -> Result<Exit> {
    let path = absolute(&a.file)?;
    // Regular files only, size-capped: a FIFO or /dev/zero is refused at once.
    let (bytes, meta) =
        inventory::read_regular_file(&path, artifacts::MAX_TRACKED_FILE_BYTES, "a tracked file")
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
    let tracked = match call(session, FleetRequest::Track { artifact })? {
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

/// `certctl list`, with tracked artifacts: when none matches, exactly the certificate
/// listing (`inner`); else JSON/CSV merge both by expiry and the table gets a second part.
pub fn list(
    session: &Session,
    a: ListArgs,
    inner: fn(&Session, ListArgs) -> Result<Exit>,
) -> Result<Exit> {
    let filter = ListFilter {
        role: a.role,
        expiring_within: a.expiring_within,
        expired: a.expired,
        issuer: a.issuer.clone(),
        name: a.name.clone(),
        kind: a.kind,
    };
    let t = now();
    // A certd from before the fleet features does not know this request: list the
    // certificates as before and say why artifacts are missing.
    let (tracked, gone) = match call(
        session,
        FleetRequest::Artifacts {
            filter: filter.clone(),
        },
    ) {
        Ok(FleetResponse::Artifacts { artifacts, gone }) => (artifacts, gone),
        Ok(other) => return Err(unexpected(&other)),
        Err(e) => {
            eprintln!("warning: tracked artifacts are not shown: {e}");
            (Vec::new(), Default::default())
        }
    };
    if tracked.is_empty() {
        return inner(session, a);
    }
    if !a.output.json && !a.output.csv {
        let exit = inner(session, a)?;
        print_artifact_table(&tracked, &gone, t);
        return Ok(exit);
    }
    let certs: Vec<Certificate> = match session_list(session, filter)? {
        Some(c) => c,
        None => bail!("unexpected answer to list"),
    };
    // Merge by expiry (certificates first on ties).
    let mut merged: Vec<(UnixTime, u8, usize)> = certs
        .iter()
        .enumerate()
        .map(|(i, c)| (c.facts.not_after, 0, i))
        .chain(tracked.iter().enumerate().map(|(i, x)| (x.expires, 1, i)))
        .collect();
    merged.sort();
    let stdout = std::io::stdout();
    if a.output.json {
        let mut items = Vec::with_capacity(merged.len());
        for (_, which, i) in merged {
            let v = match which {
                0 => serde_json::to_value(CertificateView::new(&certs[i], t))?,
                _ => artifacts::to_json_gone(
                    &tracked[i],
                    gone.get(&tracked[i].id.to_hex()).copied(),
                    t,
                ),
            };
            items.push(v);
        }
        print_json(&items)?;
    } else {
        let mut w = csv::Writer::from_writer(stdout.lock());
        w.write_record(CertificateView::CSV_HEADER)?;
        for (_, which, i) in merged {
            match which {
                0 => w.write_record(CertificateView::new(&certs[i], t).csv_row())?,
                _ => w.write_record(artifacts::csv_row(&tracked[i], t))?,
            }
        }
        w.flush()?;
    }
    Ok(Exit::Success)
}

fn session_list(session: &Session, filter: ListFilter) -> Result<Option<Vec<Certificate>>> {
    let request = Request::List { filter };
    let response = match session {
        Session::Direct(store) => api::execute(store, request, now(), &ScanProgress::default()),
        Session::Daemon(path) => {
            let client = Client::connect(path)
                .with_context(|| format!("certd stopped answering on {}", path.display()))?;
            client.call(&request, TIMEOUT)?
        }
    };
    match response {
        Response::Certificates { certificates } => Ok(Some(certificates)),
        Response::Error { message, .. } => bail!("{message}"),
        _ => Ok(None),
    }
}

fn print_artifact_table(
    tracked: &[TrackedArtifact],
    gone: &std::collections::BTreeMap<String, UnixTime>,
    t: UnixTime,
) {
    let mut table = Table::new(&["EXPIRES", "DAYS", "STATUS", "KIND", "NAME", "WHERE"]);
    for x in tracked {
        table.row(vec![
            rfc3339(x.expires).chars().take(10).collect(),
            (x.expires - t).div_euclid(86_400).to_string(),
            if gone.contains_key(&x.id.to_hex()) {
                "gone".to_string()
            } else {
                artifacts::status(x, t).to_string()
            },
            x.kind.clone(),
            x.name.clone(),
            x.path.clone(),
        ]);
    }
    println!();
    print!("{}", table.render());
    println!("{} tracked artifacts", tracked.len());
}
