//! `certctl list`: certificates (and tracked files) soonest expiry first, as a table, JSON
//! or CSV.

use std::io::{IsTerminal, Write};

use anyhow::Result;
use certctl_daemon::api::Request;
use certctl_daemon::artifacts;
use certctl_daemon::query::ListFilter;
use certctl_daemon::view::CertificateView;
use certctl_daemon::Duration;
use certctl_daemon::{FleetRequest, FleetResponse};
use certctl_store::{now, rfc3339, CredentialKind, Role, TrackedArtifact, UnixTime};
use clap::Args;

use crate::exit::Exit;
use crate::output::{
    certificate_table, parse_kind, parse_role, print_certificates, print_json, TableOutputArgs,
};
use crate::session::{unexpected, Globals, Session};
use crate::table::Table;

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only certificates of this role (gateway, iis, site-server, agent, ca, other).
    #[arg(long, value_parser = parse_role)]
    pub role: Option<Role>,
    /// Not yet expired, but expiring within DUR (30d, 12h, 2w).
    #[arg(long, value_name = "DUR")]
    pub expiring_within: Option<Duration>,
    /// Already expired.
    #[arg(long)]
    pub expired: bool,
    /// Issuer DN contains TEXT (case-insensitive).
    #[arg(long, value_name = "TEXT")]
    pub issuer: Option<String>,
    /// Subject CN or a SAN contains TEXT (case-insensitive).
    #[arg(long, value_name = "TEXT")]
    pub name: Option<String>,
    /// Only permanent or only ephemeral (6-hour) credentials, e.g. to keep agents' short-lived
    /// certificates out of the 7-day list. CA certificates have neither kind.
    #[arg(long, value_name = "KIND", value_parser = parse_kind)]
    pub kind: Option<CredentialKind>,
    #[command(flatten)]
    pub output: TableOutputArgs,
}

/// `certctl list`, with tracked artifacts: when none matches, exactly the certificate
/// listing; else JSON/CSV merge both by expiry and the table gets a second part.
pub fn exec(g: &Globals, a: ListArgs) -> Result<Exit> {
    let session = &g.existing()?;
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
    let (tracked, gone) = match session.fleet(FleetRequest::Artifacts {
        filter: filter.clone(),
    }) {
        Ok(FleetResponse::Artifacts { artifacts, gone }) => (artifacts, gone),
        Ok(other) => return Err(unexpected(&other)),
        Err(e) => {
            eprintln!("warning: tracked artifacts are not shown: {e}");
            (Vec::new(), Default::default())
        }
    };
    if tracked.is_empty() {
        return list_certificates(session, a);
    }
    if !a.output.json && !a.output.csv {
        let exit = list_certificates(session, a)?;
        print_artifact_table(&tracked, &gone, t);
        return Ok(exit);
    }
    let certs = session.certificates(Request::List { filter })?;
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

fn print_artifact_table(
    tracked: &[TrackedArtifact],
    gone: &std::collections::BTreeMap<String, UnixTime>,
    t: UnixTime,
) {
    let mut table = Table::new(&["EXPIRES", "DAYS", "STATUS", "KIND", "NAME", "WHERE"]);
    for x in tracked {
        table.row(vec![
            rfc3339(x.expires).chars().take(10).collect(),
            certctl_daemon::duration::days_left(x.expires, t).to_string(),
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

/// The certificates alone (no tracked file matches).
fn list_certificates(session: &Session, a: ListArgs) -> Result<Exit> {
    let filter = ListFilter {
        role: a.role,
        expiring_within: a.expiring_within,
        expired: a.expired,
        issuer: a.issuer,
        name: a.name,
        kind: a.kind,
    };
    let t = now();
    if a.output.json {
        session.list_json(filter, t)?;
        return Ok(Exit::Success);
    }
    if !a.output.csv && std::io::stdout().is_terminal() {
        return list_table_as_read(session, filter, t);
    }
    let mut certs = Vec::new();
    session.list_batches(filter, |batch| {
        certs.extend(batch);
        Ok(())
    })?;
    print_certificates(&certs, t, a.output.json, a.output.csv)?;
    Ok(Exit::Success)
}

/// `list` on a terminal: each batch of rows is printed as it is read (the first screen
/// at once), its columns aligned with the rows above or wider. Elsewhere (a pipe, a file)
/// the table is printed whole, aligned as one.
fn list_table_as_read(session: &Session, filter: ListFilter, t: UnixTime) -> Result<Exit> {
    let stdout = std::io::stdout();
    let mut widths = Vec::new();
    let mut count = 0usize;
    session.list_batches(filter, |batch| {
        let mut out = stdout.lock();
        let block = certificate_table(&batch, t).render_block(&mut widths, count == 0);
        out.write_all(block.as_bytes())?;
        count += batch.len();
        out.flush()
    })?;
    let mut out = stdout.lock();
    if count == 0 {
        write!(out, "{}", certificate_table(&[], t).render())?;
    }
    writeln!(out, "{count} certificates")?;
    out.flush()?;
    Ok(Exit::Success)
}
