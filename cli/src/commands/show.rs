//! `certctl show ID`: the long form of the certificates a fingerprint prefix or a name
//! finds (the current ones; `--all` every renewal).

use anyhow::Result;
use certctl_daemon::api::{Request, Response};
use certctl_daemon::view::{CertificateView, Printable};
use certctl_store::{now, rfc3339, Certificate};
use clap::Args;

use crate::exit::Exit;
use crate::output::{describe, OutputArgs};
use crate::session::Globals;

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Fingerprint prefix (≥ 8 hex characters, colons allowed) or exact subject CN / SAN.
    pub id: String,
    /// Every certificate with that name (every renewal), not only the current ones.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub fn exec(g: &Globals, a: ShowArgs) -> Result<Exit> {
    let session = &g.existing()?;
    let t = now();
    let id = a.id.clone();
    let found = session.certificates(Request::Find { id: a.id })?;
    let (certs, older) = if a.all {
        (found, 0)
    } else {
        current_and_older(found)
    };
    if a.output.json {
        let views: Vec<CertificateView> =
            certs.iter().map(|c| CertificateView::new(c, t)).collect();
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(Exit::Success);
    }
    for (i, c) in certs.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print!("{}", describe(&CertificateView::new(c, t)));
    }
    if older > 0 {
        println!();
        println!(
            "{older} older certificate{} with this name (earlier renewals, no longer in any source): certctl show {} --all",
            if older == 1 { "" } else { "s" },
            Printable(&id)
        );
    }
    // What retention kept of removed renewals (a certd without the request: nothing).
    let named = certs
        .iter()
        .any(|c| c.facts.display_name().eq_ignore_ascii_case(&id));
    if named {
        if let Ok(Response::PrunedRenewals { renewals: Some(p) }) =
            session.call(Request::PrunedRenewals { agent: id })
        {
            let every = p
                .renewal_interval_secs()
                .map(|s| format!(", renewed about every {}", human_interval(s)))
                .unwrap_or_default();
            println!(
                "Pruned renewals:      {} removed by retention (first seen {}, last issued {}, last expiry {}{every})",
                p.count,
                rfc3339(p.first_seen),
                rfc3339(p.last_issued),
                rfc3339(p.last_expiry)
            );
        }
    }
    Ok(Exit::Success)
}

/// The certificates a name currently stands for (present in a source; else the newest),
/// and how many older ones there are besides.
fn current_and_older(mut certs: Vec<Certificate>) -> (Vec<Certificate>, usize) {
    if certs.len() <= 1 {
        return (certs, 0);
    }
    let total = certs.len();
    let present: Vec<Certificate> = certs
        .iter()
        .filter(|c| c.current_sources().next().is_some())
        .cloned()
        .collect();
    let current = if present.is_empty() {
        certs.sort_by_key(|c| (c.facts.not_after, c.facts.fingerprint));
        certs.pop().into_iter().collect()
    } else {
        present
    };
    let older = total - current.len();
    (current, older)
}

/// `6h`, `2d 3h`, `45m`.
fn human_interval(secs: i64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h, m) {
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}
