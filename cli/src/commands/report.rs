//! `certctl report NAME`: the fleet reports, as a table, JSON or a standalone HTML page.

use std::path::PathBuf;

use anyhow::{Context, Result};
use certctl_daemon::atomic_file::{self, FileMode};
use certctl_daemon::reports::{self, Report, ReportOptions};
use certctl_daemon::Duration;
use certctl_daemon::{FleetRequest, FleetResponse};
use clap::Args;

use crate::exit::Exit;
use crate::output::print_json;
use crate::session::{unexpected, Globals};
use crate::table::Table;

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

pub fn exec(g: &Globals, a: ReportArgs) -> Result<Exit> {
    let session = &g.existing()?;
    let options = ReportOptions {
        tolerance: a.tolerance,
        ephemeral_lifetime: a.ephemeral_lifetime,
    };
    if let Some(path) = a.html {
        let html = match session.fleet(FleetRequest::ReportHtml {
            name: a.name,
            options,
        })? {
            FleetResponse::Html { html } => html,
            other => return Err(unexpected(&other)),
        };
        atomic_file::Options::new(FileMode::Private)
            .write(&path, html.as_bytes())
            .with_context(|| format!("writing the report to {}", path.display()))?;
        println!("{}", path.display());
        return Ok(Exit::Success);
    }
    let report = match session.fleet(FleetRequest::Report {
        name: a.name,
        options,
    })? {
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
