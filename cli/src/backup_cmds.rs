//! `certctl store backup` and `certctl store restore` (the work is in
//! [`certctl_daemon::backup`]).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration as StdDuration;

use anyhow::{Context, Result};
use certctl_daemon::api::{Request, Response, StatusReport};
use certctl_daemon::backup::{self, BackupProgress, BackupReport};
use certctl_store::rfc3339;

use crate::args::{BackupArgs, RestoreArgs};
use crate::commands::{unexpected, Session};
use crate::Exit;

/// How long certctl waits for certd to write a backup.
const BACKUP_TIMEOUT: StdDuration = StdDuration::from_secs(6 * 3600);

pub fn backup(session: Session, a: BackupArgs) -> Result<Exit> {
    let out = std::path::absolute(&a.out)
        .with_context(|| format!("cannot resolve {}", a.out.display()))?;
    let progress = BackupProgress::default();
    let done = AtomicBool::new(false);
    let show = std::io::stderr().is_terminal() && !a.json;
    let report: Result<BackupReport> = std::thread::scope(|scope| {
        let ticker = show.then(|| {
            let (progress, done) = (&progress, &done);
            let through_certd = matches!(session, Session::Daemon(_));
            scope.spawn(move || progress_bar(progress, done, through_certd))
        });
        let result = match &session {
            Session::Direct(store) => {
                let t = crate::policy_cmds::clock()?;
                backup::backup(store, &out, t, &progress).map_err(anyhow::Error::from)
            }
            Session::Daemon(_) => {
                match session.call(Request::Backup { out: out.clone() }, BACKUP_TIMEOUT) {
                    Ok(Response::Backup { report }) => Ok(report),
                    Ok(other) => Err(unexpected(&other)),
                    Err(e) => Err(e),
                }
            }
        };
        done.store(true, Relaxed);
        if let Some(t) = ticker {
            let _ = t.join();
        }
        result
    });
    let report = report.with_context(|| format!("no backup written to {}", out.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "backup written to {} ({} bytes, {} members, taken {}): {}",
            report.file.display(),
            report.bytes,
            report.members,
            rfc3339(report.created),
            counts_line(&report.counts)
        );
    }
    Ok(Exit::Success)
}

fn counts_line(counts: &std::collections::BTreeMap<String, u64>) -> String {
    counts
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn progress_bar(progress: &BackupProgress, done: &AtomicBool, through_certd: bool) {
    let bar = indicatif::ProgressBar::new(0);
    let template = if through_certd {
        "{spinner} certd is writing the backup [{elapsed}]"
    } else {
        "{spinner} writing the backup {bytes}/{total_bytes} [{elapsed}]"
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    while !done.load(Relaxed) {
        bar.set_length(progress.total.load(Relaxed));
        bar.set_position(progress.done.load(Relaxed));
        bar.tick();
        std::thread::sleep(StdDuration::from_millis(100));
    }
    bar.finish_and_clear();
}

pub fn restore(store_flag: Option<PathBuf>, a: RestoreArgs) -> Result<Exit> {
    let dir = crate::store_path(store_flag)?;
    let t = crate::policy_cmds::clock()?;
    let report = backup::restore(&a.file, &dir, t)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "restored {} into {} (backup of {}): {}; store verify: consistent ({} certificates, {} index entries, {} workflows)",
            report.backup.display(),
            report.store.display(),
            rfc3339(report.backup_created),
            counts_line(&report.counts),
            report.verification.records,
            report.verification.postings,
            report.verification.workflows
        );
        for ca in &report.newer_crls {
            println!(
                "CA `{ca}` published a CRL after the backup: its next CRL number continues above it; redo the revocations made after {}",
                rfc3339(report.backup_created)
            );
        }
    }
    Ok(Exit::Success)
}

/// `status`: the store was restored from a backup.
pub fn print_restored(status: &StatusReport) {
    let Some(r) = &status.restored else { return };
    println!(
        "restored: from a backup of {} (taken from {}, restored {}): revocations made after {} must be redone",
        rfc3339(r.backup_created),
        r.original_store,
        rfc3339(r.restored_at),
        rfc3339(r.backup_created)
    );
    if !r.newer_crls.is_empty() {
        println!(
            "restored: CAs whose published CRL is newer than the backup: {}",
            r.newer_crls.join(", ")
        );
    }
}
