//! `certctl demo`: build a demo fleet, scan it and print what needs attention.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use certctl_daemon::check;
use certctl_daemon::demo;
use certctl_daemon::query::{self, ListFilter};
use certctl_daemon::scan::{ScanOptions, ScanSummary};
use certctl_store::{now, Certificate, CredentialKind, Role, Store};
use clap::Args;

use crate::exit::Exit;
use crate::output::certificate_table;
use crate::session::Globals;

use super::scan::{print_scan_failures, scan_summary_line, scan_with_progress};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to write the fleet [default: a new temporary folder]. Its store goes in
    /// DIR/store unless --store is given.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn exec(g: &Globals, a: DemoArgs) -> Result<Exit> {
    let dir = match a.dir {
        Some(d) => d,
        None => tempfile_dir()?,
    };
    let t = now();
    eprintln!("Writing the demo fleet to {} ...", dir.display());
    let fleet = demo::write_demo_fleet(&dir, t).context("cannot write the demo fleet")?;
    let store_dir = g
        .store_flag()
        .map_or_else(|| dir.join("store"), Path::to_path_buf);
    let store = Store::open(&store_dir)?;
    let password = certctl_daemon::ca::Secret::from_private_file(&fleet.pfx_password_file)
        .context("cannot use the demo fleet's PFX password file")?
        .0;
    let mut total = ScanSummary::default();
    for (folder, role) in &fleet.folders {
        let options = ScanOptions {
            role: Some(*role),
            pfx_password: Some(password.trim_end().to_string()),
            full: false,
            threads: 0,
        };
        let s = scan_with_progress(&store, std::slice::from_ref(folder), &options)?;
        print_scan_failures(&s);
        total.files_read += s.files_read;
        total.files_unchanged += s.files_unchanged;
        total.files_skipped += s.files_skipped;
        total.files_failed += s.files_failed;
        total.certificates_new += s.certificates_new;
        total.certificates_updated += s.certificates_updated;
        total.certificates_seen += s.certificates_seen;
        total.sources_gone += s.sources_gone;
    }
    println!("{}", scan_summary_line(&total));
    println!();

    let attention = query::list(
        &store,
        &ListFilter {
            expiring_within: Some(certctl_daemon::Duration::days(30)),
            expired: true,
            ..Default::default()
        },
        t,
    )?;
    let (ephemeral, mut needs): (Vec<Certificate>, Vec<Certificate>) = attention
        .into_iter()
        .partition(|c| c.credential_kind() == Some(CredentialKind::Ephemeral));
    needs.retain(check::counts_for_check);
    println!(
        "Needs attention: {} certificates expired or expiring within 30 days",
        needs.len()
    );
    // Infrastructure first (gateway, IIS, site servers, CAs), then agents; each by expiry.
    needs.sort_by_key(|c| (c.role == Role::Agent, c.facts.not_after));
    const SHOWN: usize = 25;
    print!(
        "{}",
        certificate_table(&needs[..needs.len().min(SHOWN)], t).render()
    );
    if needs.len() > SHOWN {
        println!(
            "... and {} more agents (`certctl --store {} list --expiring-within 30d --expired`)",
            needs.len() - SHOWN,
            store_dir.display()
        );
    }
    let stalled = ephemeral.iter().filter(|c| c.facts.not_after <= t).count();
    if stalled > 0 {
        println!();
        println!("{stalled} ephemeral agent certificates have expired: check those agents' renewal (`certctl --store {} list --role agent --expired`).", store_dir.display());
    }
    let report = check::check(
        &store,
        certctl_daemon::Duration::days(30),
        certctl_daemon::Duration::days(7),
        None,
        t,
    )?;
    println!();
    println!("{}", report.summary(t));
    println!();
    println!("Try: certctl --store {} stats", store_dir.display());
    println!(
        "     certctl --store {} list --expiring-within 7d",
        store_dir.display()
    );
    println!(
        "     certctl --store {} show gw.contoso.example",
        store_dir.display()
    );
    Ok(Exit::Success)
}

fn tempfile_dir() -> Result<PathBuf> {
    let base = std::env::temp_dir();
    for n in 0..1000u32 {
        let dir = base.join(format!("certctl-demo-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
        }
    }
    anyhow::bail!("cannot create a temporary folder in {}", base.display())
}
